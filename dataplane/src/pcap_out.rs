//! `--pcap-out FILE`: every frame the copier transmits, written to a pcap for Wireshark.
//!
//! Workers copy each transmitted frame (at most `SNAP` bytes) into a preallocated slot taken
//! from a lock-free free list and hand it to a writer thread through a second queue; the writer
//! appends it to the file and returns the slot. Nothing is allocated or locked per frame; when
//! the writer falls behind and no slot is free, the frame is not written and `dropped` counts it
//! (the transmission itself is never held up). With a size cap (`--pcap-out-max-mb`) the writer
//! stops before the file would grow past it and raises a flag the workers read before copying,
//! so a capped capture costs them one relaxed load per frame.
//!
//! With `--pcap-out-responses` (session mode) the file also holds the test server's side: each
//! response header the intercept returned becomes a frame — an Ethernet header (from the next
//! hop to the output interface), the IPv4 header with the response's original total length and
//! the TCP header with the options the message carries (up to 24 bytes), no payload. The record's
//! original length is the response's, so Wireshark reads both directions of every session and
//! marks the responses as cut by the snap length.

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use control::channel::proto::{HEADER_MSG6_LEN, HEADER_MSG_LEN};
use crossbeam_queue::ArrayQueue;
use pcap_file::pcap::{PcapPacket, PcapWriter};

/// Bytes kept of each frame (a jumbo frame is cut; its original length is recorded).
pub const SNAP: usize = 2048;
const SLOTS: usize = 8192;

struct Slot {
    len: u32,
    orig_len: u32,
    ts: Duration,
    data: [u8; SNAP],
}

/// The workers' side: copy a frame in.
pub struct PcapTap {
    /// Set by the writer when the size cap is reached: nothing more is copied.
    capped: AtomicBool,
    /// `--pcap-out-responses`: the Ethernet header the response frames get.
    responses: Option<[u8; 14]>,
    free: ArrayQueue<Box<Slot>>,
    full: ArrayQueue<Box<Slot>>,
    /// Frames not written because the writer was behind.
    pub dropped: AtomicU64,
    written: AtomicU64,
}

impl PcapTap {
    /// Copies `frame` for the writer; never blocks.
    pub fn copy(&self, frame: &[u8]) {
        self.copy_cut(frame, frame.len() as u32);
    }

    /// `--pcap-out-responses`: writes a response header the intercept returned (a channel
    /// message, IPv4 or IPv6) as a frame cut after its TCP header; does nothing without the
    /// option, or for a message of neither layout.
    pub fn copy_response(&self, msg: &[u8]) {
        let Some(eth) = self.responses else { return };
        let mut frame = [0u8; 14 + HEADER_MSG6_LEN];
        if let Some((len, orig_len)) = response_frame(&eth, msg, &mut frame) {
            self.copy_cut(&frame[..len], orig_len);
        }
    }

    /// Copies `frame`, which was `orig_len` bytes long before it was cut.
    fn copy_cut(&self, frame: &[u8], orig_len: u32) {
        if self.capped.load(Ordering::Relaxed) {
            return;
        }
        let Some(mut slot) = self.free.pop() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = frame.len().min(SNAP);
        slot.data[..n].copy_from_slice(&frame[..n]);
        slot.len = n as u32;
        slot.orig_len = orig_len.max(n as u32);
        slot.ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if let Err(s) = self.full.push(slot) {
            let _ = self.free.push(s);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Builds the frame of a response header in `out` (see the module docs): returns its length and
/// the response's original frame length, or `None` for a message of neither layout. An IPv4
/// message's IP header is 20 bytes (IP options are not carried): a header that said more is
/// rewritten to say 20, its lengths and checksum too. An IPv6 message carries the fixed header
/// (the intercept leaves extension headers out) with the original payload length.
fn response_frame(eth: &[u8; 14], msg: &[u8], out: &mut [u8; 14 + HEADER_MSG6_LEN]) -> Option<(usize, u32)> {
    use crate::wire::{ethernet, ipv4};
    out[..14].copy_from_slice(eth);
    let tcp_len = |ip_len: usize, msg_len: usize| {
        let doff = usize::from(msg[ip_len + 12] >> 4) * 4;
        doff.clamp(20, msg_len - ip_len)
    };
    match msg.first().map(|b| b >> 4) {
        Some(4) if msg.len() >= HEADER_MSG_LEN => {
            const IP_LEN: usize = 20;
            out[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
            let ihl = usize::from(msg[0] & 0x0f) * 4;
            let tcp_len = tcp_len(IP_LEN, HEADER_MSG_LEN);
            out[14..14 + IP_LEN + tcp_len].copy_from_slice(&msg[..IP_LEN + tcp_len]);
            let mut ip = ipv4::Packet::new_unchecked(&mut out[14..14 + IP_LEN]);
            let mut total = ip.total_len();
            if ihl > IP_LEN {
                total = total.saturating_sub((ihl - IP_LEN) as u16);
                ip.set_header_len(IP_LEN as u8);
                ip.set_total_len(total);
                ip.fill_checksum();
            }
            Some((14 + IP_LEN + tcp_len, 14 + u32::from(total).max((IP_LEN + tcp_len) as u32)))
        }
        Some(6) if msg.len() >= HEADER_MSG6_LEN => {
            const IP_LEN: usize = 40;
            out[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
            let tcp_len = tcp_len(IP_LEN, HEADER_MSG6_LEN);
            out[14..14 + IP_LEN + tcp_len].copy_from_slice(&msg[..IP_LEN + tcp_len]);
            let payload = u32::from(u16::from_be_bytes([msg[4], msg[5]]));
            Some((14 + IP_LEN + tcp_len, 14 + IP_LEN as u32 + payload.max(tcp_len as u32)))
        }
        _ => None,
    }
}

control::counters! {
    /// What `--pcap-out` did (shown with the prefix `pcap_out_`).
    #[derive(Copy)]
    pub struct PcapOutCounters {
        /// Frames written to the file.
        counter written,
        /// Frames not written because the writer fell behind (transmission never waits).
        counter dropped,
        /// 1 once the file reached --pcap-out-max-mb (later frames are not written).
        gauge capped,
    }
}

/// The writer thread and its tap.
pub struct PcapOut {
    /// Hand this to the workers.
    pub tap: Arc<PcapTap>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    path: PathBuf,
}

impl PcapOut {
    /// Creates `path` (Ethernet link type, µs timestamps) and starts the writer, which stops
    /// before the file would exceed `max_bytes`. With `responses` — (the output interface's
    /// MAC, the next hop's) — response headers are written too ([`PcapTap::copy_response`]).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn create(path: &Path, max_bytes: Option<u64>, responses: Option<([u8; 6], [u8; 6])>) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("--pcap-out {}: cannot create", path.display()))?;
        let mut writer =
            PcapWriter::new(BufWriter::new(file)).with_context(|| format!("--pcap-out {}", path.display()))?;
        let free = ArrayQueue::new(SLOTS);
        for _ in 0..SLOTS {
            let _ = free.push(Box::new(Slot { len: 0, orig_len: 0, ts: Duration::ZERO, data: [0; SNAP] }));
        }
        let responses = responses.map(|(ours, next_hop)| {
            let mut eth = [0u8; 14];
            eth[..6].copy_from_slice(&ours);
            eth[6..12].copy_from_slice(&next_hop);
            eth[12..].copy_from_slice(&crate::wire::ethernet::ETHERTYPE_IPV4.to_be_bytes());
            eth
        });
        let tap = Arc::new(PcapTap {
            capped: AtomicBool::new(false),
            responses,
            free,
            full: ArrayQueue::new(SLOTS),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (tap.clone(), stop.clone());
        let display = path.display().to_string();
        let thread = thread::Builder::new().name("xdpcopy-pcap".into()).spawn(move || -> Result<()> {
            // The pcap file header, then 16 bytes of record header per frame.
            let mut size = 24u64;
            let limit = max_bytes.unwrap_or(u64::MAX);
            loop {
                let mut wrote = false;
                while let Some(slot) = t.full.pop() {
                    size += 16 + u64::from(slot.len);
                    if size > limit {
                        if !t.capped.swap(true, Ordering::Relaxed) {
                            eprintln!(
                                "xdpcopy: --pcap-out {display} reached --pcap-out-max-mb; no more frames are written"
                            );
                        }
                        let _ = t.free.push(slot);
                        continue;
                    }
                    let pkt = PcapPacket::new(slot.ts, slot.orig_len, &slot.data[..slot.len as usize]);
                    writer.write_packet(&pkt).with_context(|| format!("--pcap-out {display}: write failed"))?;
                    t.written.fetch_add(1, Ordering::Relaxed);
                    let _ = t.free.push(slot);
                    wrote = true;
                }
                if !wrote {
                    if s.load(Ordering::Acquire) && t.full.is_empty() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
            use std::io::Write as _;
            writer.into_writer().flush().with_context(|| format!("--pcap-out {display}: flush failed"))?;
            Ok(())
        })?;
        Ok(Self { tap, stop, thread: Some(thread), path: path.to_owned() })
    }

    /// Writes what is queued, closes the file; returns (frames written, frames dropped).
    ///
    /// # Errors
    /// A write error of the writer thread.
    pub fn finish(&mut self) -> Result<PcapOutCounters> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("the --pcap-out writer panicked"))??;
        }
        eprintln!("xdpcopy: wrote {}", self.path.display());
        Ok(PcapOutCounters {
            written: self.tap.written(),
            dropped: self.tap.dropped.load(Ordering::Relaxed),
            capped: u64::from(self.tap.capped.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_cap_stops_writing_and_says_so() {
        let path = std::env::temp_dir().join(format!("xdpcopy-pcap-cap-{}.pcap", std::process::id()));
        // The file header (24) and two 100-byte frames with their record headers (2 × 116).
        let mut out = PcapOut::create(&path, Some(24 + 2 * 116), None).unwrap();
        for _ in 0..2 {
            out.tap.copy(&[0xab; 100]);
        }
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..3 {
            out.tap.copy(&[0xcd; 100]);
        }
        let c = out.finish().unwrap();
        assert_eq!((c.written, c.capped, c.dropped), (2, 1, 0));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24 + 2 * 116);
        let _ = std::fs::remove_file(&path);
    }

    /// A SYN-ACK header message as the intercept sends it: IP (total length 60), TCP with MSS,
    /// SACK-permitted, timestamps, NOP, window scale (data offset 10 words).
    fn syn_ack_msg(ihl: u8) -> [u8; HEADER_MSG_LEN] {
        let mut m = [0u8; HEADER_MSG_LEN];
        m[..20].copy_from_slice(&[0x40 | ihl, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1]);
        m[20..40].copy_from_slice(&[
            0x1f, 0x90, 0x9c, 0x40, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x79, 0xa0, 0x12, 0xfe, 0x88, 0, 0, 0, 0,
        ]);
        m[40..60].copy_from_slice(&[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 9, 0, 1, 0xe2, 0x40, 1, 3, 3, 7]);
        m
    }

    #[test]
    fn a_response_header_becomes_a_cut_frame() {
        let eth = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00];
        let mut out = [0u8; 14 + HEADER_MSG6_LEN];
        let msg = syn_ack_msg(5);
        let (len, orig) = response_frame(&eth, &msg, &mut out).unwrap();
        // Ethernet, IP, the 40-byte TCP header: all of the original headers; no payload.
        assert_eq!((len, orig), (14 + 60, 14 + 60));
        assert_eq!(&out[..14], &eth);
        assert_eq!(&out[14..74], &msg[..60]);
        let p = crate::wire::parse::parse(&out[..len]).unwrap().unwrap();
        assert_eq!((p.src_port, p.dst_port, p.payload_len), (8080, 40000, 0));

        // A data segment: the frame is cut, its original length says how long it was.
        let mut msg = syn_ack_msg(5);
        msg[2..4].copy_from_slice(&1500u16.to_be_bytes());
        let (len, orig) = response_frame(&eth, &msg, &mut out).unwrap();
        assert_eq!((len, orig), (74, 1514));

        // IP options are not carried: the header is made a 20-byte one.
        let mut msg = syn_ack_msg(6);
        msg[2..4].copy_from_slice(&64u16.to_be_bytes());
        let (len, orig) = response_frame(&eth, &msg, &mut out).unwrap();
        assert_eq!((len, orig), (74, 74));
        assert!(crate::wire::ipv4::Packet::new_checked(&out[14..74]).unwrap().verify_checksum());
    }

    #[test]
    fn an_ipv6_response_header_becomes_a_cut_ipv6_frame() {
        let eth = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00];
        let mut out = [0u8; 14 + HEADER_MSG6_LEN];
        let v4 = syn_ack_msg(5);
        // The IPv6 message: fixed header (payload length 1000 + 40 TCP, next header TCP, hop
        // limit 64, fd00::2 -> fd00::1), then the same TCP header.
        let mut msg = [0u8; HEADER_MSG6_LEN];
        msg[..8].copy_from_slice(&[0x60, 0, 0, 0, 0x04, 0x10, 6, 64]);
        msg[8..10].copy_from_slice(&[0xfd, 0]);
        msg[23] = 2;
        msg[24..26].copy_from_slice(&[0xfd, 0]);
        msg[39] = 1;
        msg[40..84].copy_from_slice(&v4[20..64]);
        let (len, orig) = response_frame(&eth, &msg, &mut out).unwrap();
        assert_eq!((len, orig), (14 + 40 + 40, 14 + 40 + 1040));
        assert_eq!(&out[12..14], &[0x86, 0xdd]);
        assert_eq!(&out[14..94], &msg[..80]);
        // A message of neither layout is not written.
        assert!(response_frame(&eth, &[0u8; HEADER_MSG6_LEN], &mut out).is_none());
        assert!(response_frame(&eth, &msg[..HEADER_MSG_LEN], &mut out).is_none());
    }
}
