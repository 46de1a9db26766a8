//! The per-worker store of captured segments, preallocated once.
//!
//! Bytes live in fixed [`CHUNK`]-byte chunks; a segment is a descriptor ([`Seg`]) plus a chain
//! of chunks holding `[IP header][TCP header][payload]` exactly as captured (after the MTU
//! split). Every segment uses at least one chunk, so there are as many descriptors as chunks
//! and the descriptor free list can never run out before the chunks do. Waste per segment is
//! below one chunk, whatever the mix of small requests and full-size segments.
//!
//! Descriptors double as list nodes: `next` links a session's segment list or the free list.

/// "No index" in every list.
pub(crate) const NIL: u32 = u32::MAX;
/// Bytes per chunk (holds the largest IP + TCP header pair, 120 bytes).
pub(crate) const CHUNK: usize = 256;

/// A buffered captured segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg {
    /// Next segment in the session's list (or in the free list).
    pub next: u32,
    /// First chunk of the stored bytes.
    pub chunk: u32,
    /// Sequence number as captured (for a SYN: the SYN's).
    pub seq: u32,
    /// The client's ack number as captured.
    pub ack: u32,
    /// Payload bytes trimmed off the front because they were already sent.
    pub skip: u32,
    /// Captured payload length.
    pub payload_len: u32,
    /// IPv4 identification as captured.
    pub ip_id: u16,
    /// TCP flags.
    pub flags: u8,
    /// IPv4 header length.
    pub ip_hlen: u8,
    /// TCP header length.
    pub tcp_hlen: u8,
    /// When it was captured, in [`TICK`]s since the engine started (wrapping; see
    /// [`Seg::age`]). Fits the descriptor's padding: it stays 32 bytes.
    pub captured: u16,
}

// The descriptor stays 32 bytes (docs/cli.md's memory figures count on it).
const _: () = assert!(std::mem::size_of::<Seg>() == 32);

/// Unit of [`Seg::captured`]: 8 ms, so the stamp wraps after about 524 s.
pub(crate) const TICK: std::time::Duration = std::time::Duration::from_millis(8);

/// `elapsed` (since the engine started) as a capture stamp.
pub(crate) fn stamp(elapsed: std::time::Duration) -> u16 {
    (elapsed.as_millis() / TICK.as_millis()) as u16
}

impl Seg {
    const EMPTY: Seg = Seg {
        next: NIL,
        chunk: NIL,
        seq: 0,
        ack: 0,
        skip: 0,
        payload_len: 0,
        ip_id: 0,
        flags: 0,
        ip_hlen: 0,
        tcp_hlen: 0,
        captured: 0,
    };

    /// Return whether any bit of `flags` is set.
    pub fn any(&self, flags: u8) -> bool {
        self.flags & flags != 0
    }

    /// How long ago it was captured, given `now` as a stamp: exact to a [`TICK`] for up to
    /// 2^16 ticks (a segment waiting longer reads younger by a multiple of that).
    pub fn age(&self, now: u16) -> std::time::Duration {
        TICK * u32::from(now.wrapping_sub(self.captured))
    }

    /// Return the payload length still to send (after trimming).
    pub fn len(&self) -> u32 {
        self.payload_len - self.skip
    }

    /// Return the first sequence number still to send.
    pub fn start(&self) -> u32 {
        self.seq.wrapping_add(self.skip)
    }

    /// Return the sequence number after the segment (payload, SYN and FIN counted).
    pub fn end(&self) -> u32 {
        use crate::wire::tcp::flags::{FIN, SYN};
        self.seq
            .wrapping_add(self.payload_len)
            .wrapping_add(u32::from(self.any(SYN)))
            .wrapping_add(u32::from(self.any(FIN)))
    }

    /// Return the number of stored bytes (headers and payload).
    pub fn stored(&self) -> usize {
        usize::from(self.ip_hlen) + usize::from(self.tcp_hlen) + self.payload_len as usize
    }
}

/// Chunks and descriptors, with their free lists.
pub(crate) struct Pool {
    bytes: Vec<u8>,
    chunk_next: Vec<u32>,
    free_chunk: u32,
    free_chunks: usize,
    segs: Vec<Seg>,
    free_seg: u32,
}

impl Pool {
    /// Preallocate `bytes` of chunk space (at least one chunk).
    pub fn new(bytes: usize) -> Pool {
        let n = (bytes / CHUNK).clamp(1, NIL as usize - 1);
        let link = |i: usize| if i + 1 < n { i as u32 + 1 } else { NIL };
        let mut segs = vec![Seg::EMPTY; n];
        for (i, s) in segs.iter_mut().enumerate() {
            s.next = link(i);
        }
        Pool {
            bytes: vec![0; n * CHUNK],
            chunk_next: (0..n).map(link).collect(),
            free_chunk: 0,
            free_chunks: n,
            segs,
            free_seg: 0,
        }
    }

    /// Return the descriptor of segment `i`.
    pub fn seg(&self, i: u32) -> &Seg {
        &self.segs[i as usize]
    }

    /// Return the descriptor of segment `i`, mutably.
    pub fn seg_mut(&mut self, i: u32) -> &mut Seg {
        &mut self.segs[i as usize]
    }

    /// Return the number of free chunks.
    #[cfg(test)]
    pub fn free_chunks(&self) -> usize {
        self.free_chunks
    }

    /// Store `parts` (concatenated) with descriptor `meta`; return its index, or `None` if the
    /// pool has too few free chunks.
    pub fn alloc(&mut self, meta: Seg, parts: [&[u8]; 3]) -> Option<u32> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let need = len.div_ceil(CHUNK).max(1);
        if need > self.free_chunks || self.free_seg == NIL {
            return None;
        }
        let first = self.free_chunk;
        let mut c = first;
        let mut at = 0;
        for part in parts {
            let mut part = part;
            while !part.is_empty() {
                if at == CHUNK {
                    c = self.chunk_next[c as usize];
                    at = 0;
                }
                let n = part.len().min(CHUNK - at);
                let base = c as usize * CHUNK + at;
                self.bytes[base..base + n].copy_from_slice(&part[..n]);
                part = &part[n..];
                at += n;
            }
        }
        // `c` is the last chunk used; cut the chain after it.
        self.free_chunk = self.chunk_next[c as usize];
        self.chunk_next[c as usize] = NIL;
        self.free_chunks -= need;

        let i = self.free_seg;
        self.free_seg = self.segs[i as usize].next;
        self.segs[i as usize] = Seg { next: NIL, chunk: first, ..meta };
        Some(i)
    }

    /// Return segment `i` and its chunks to the free lists.
    pub fn free(&mut self, i: u32) {
        let mut c = self.segs[i as usize].chunk;
        while c != NIL {
            let next = self.chunk_next[c as usize];
            self.chunk_next[c as usize] = self.free_chunk;
            self.free_chunk = c;
            self.free_chunks += 1;
            c = next;
        }
        self.segs[i as usize] = Seg { next: self.free_seg, ..Seg::EMPTY };
        self.free_seg = i;
    }

    /// Copy `dst.len()` stored bytes of segment `i`, starting at byte `off`, into `dst`.
    ///
    /// The range must lie within the stored bytes.
    pub fn read(&self, i: u32, off: usize, dst: &mut [u8]) {
        let mut c = self.segs[i as usize].chunk;
        for _ in 0..off / CHUNK {
            c = self.chunk_next[c as usize];
        }
        let mut at = off % CHUNK;
        let mut done = 0;
        while done < dst.len() {
            if at == CHUNK {
                c = self.chunk_next[c as usize];
                at = 0;
            }
            let n = (dst.len() - done).min(CHUNK - at);
            let base = c as usize * CHUNK + at;
            dst[done..done + n].copy_from_slice(&self.bytes[base..base + n]);
            done += n;
            at += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_read_free() {
        let mut p = Pool::new(4 * CHUNK);
        let hdr = [1u8; 40];
        let payload: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        let meta = Seg { payload_len: 600, ip_hlen: 20, tcp_hlen: 20, ..Seg::EMPTY };
        let a = p.alloc(meta, [&hdr[..20], &hdr[20..], &payload]).unwrap();
        assert_eq!(p.free_chunks(), 1);
        assert_eq!(p.seg(a).stored(), 640);
        let mut out = [0u8; 640];
        p.read(a, 0, &mut out);
        assert_eq!(&out[..40], &hdr);
        assert_eq!(&out[40..], &payload[..]);
        let mut mid = [0u8; 300];
        p.read(a, 250, &mut mid);
        assert_eq!(&mid[..], &payload[210..510]);
        // Too big for the one free chunk.
        assert!(p.alloc(meta, [&hdr, &payload[..300], &[]]).is_none());
        let b = p.alloc(Seg::EMPTY, [&hdr, &[], &[]]).unwrap();
        assert_eq!(p.free_chunks(), 0);
        assert!(p.alloc(Seg::EMPTY, [&[], &[], &[]]).is_none());
        p.free(a);
        p.free(b);
        assert_eq!(p.free_chunks(), 4);
        let c = p.alloc(meta, [&payload[..200], &payload[..200], &payload[..200]]);
        assert!(c.is_some());
    }
}
