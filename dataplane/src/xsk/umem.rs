//! The UMEM: one anonymous mapping cut into equal chunks, registered with the kernel by the
//! socket that owns it and shared by the sockets bound with `XDP_SHARED_UMEM`; and [`Frame`], the
//! token that says who owns a chunk.
//!
//! # Ownership
//!
//! Every chunk is at any time either ours or the kernel's. Ours means: exactly one [`Frame`]
//! exists for it. The token is not `Copy` or `Clone`; it is minted only by this layer (all of
//! them once when the port opens, then one per RX descriptor and per completion) and consumed by
//! the pushes that give the chunk to the kernel (fill ring, TX ring). So the token moves
//!
//! ```text
//!  free list ─► fill ring ─► (kernel writes) ─► RX ring ─► worker ─► TX ring ─► (kernel reads)
//!      ▲                                                                              │
//!      └──────────────────────────────── completion ring ◄────────────────────────────┘
//! ```
//!
//! and [`Umem::bytes`] / [`Umem::bytes_mut`] take the token: holding it proves the kernel is not
//! writing (or, for TX, reading) that chunk, so handing out a slice of it is safe. No reference
//! to the whole area, or to a chunk without its token, is ever made.
//!
//! The layer trusts the kernel to hand back only chunks it was given, each once. RX descriptors
//! are still checked: one pointing outside the UMEM, or whose data runs past its chunk's end,
//! comes out as a [`BadDescriptor`] (counted by the worker), never as a slice.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{
    ring::Memory,
    sys::{self, SyscallError},
};

/// Headroom the kernel keeps in front of received data in copy mode (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// The token for one UMEM chunk we own (see the module docs). Dropping it loses the chunk until
/// the port is closed: give it back with `Port::recycle` or push it to a ring.
#[derive(Debug)]
#[must_use = "a dropped frame is a UMEM chunk lost; recycle it or push it to a ring"]
pub struct Frame {
    umem: u32,
    index: u32,
}

impl Frame {
    /// Returns the chunk's index in its UMEM.
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// A received frame: the chunk's token and where the kernel put the data in it.
#[derive(Debug)]
#[must_use = "a dropped frame is a UMEM chunk lost; recycle it or push it to a ring"]
pub struct Received {
    /// The chunk.
    pub frame: Frame,
    /// Where the data starts in the chunk (after the kernel's headroom and the XDP metadata).
    pub offset: u32,
    /// Data length.
    pub len: u32,
}

impl Received {
    /// The data's byte range in the chunk.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset as usize..self.offset as usize + self.len as usize
    }
}

/// An RX descriptor that does not describe data inside one chunk of our UMEM.
#[derive(Debug)]
#[must_use = "a dropped frame is a UMEM chunk lost; recycle it"]
pub struct BadDescriptor {
    /// The chunk the address falls in, when it falls in the UMEM at all (the data runs past its
    /// end): ours again, to recycle.
    pub frame: Option<Frame>,
    /// The length the descriptor claimed.
    pub len: u32,
}

/// Where a UMEM's chunks are: what a ring end needs to turn kernel addresses into tokens and
/// back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    umem: u32,
    shift: u32,
    frames: u32,
}

impl Geometry {
    /// Returns the UMEM address of `offset` bytes into `frame` (for a ring the kernel reads).
    ///
    /// # Panics
    /// If `frame` belongs to another UMEM: the kernel would be given a chunk we may own.
    #[inline]
    pub(crate) fn addr(&self, frame: &Frame, offset: u32) -> u64 {
        assert_eq!(frame.umem, self.umem, "a frame of another UMEM");
        (u64::from(frame.index) << self.shift) + u64::from(offset)
    }

    /// Returns the frame size.
    #[inline]
    pub(crate) fn frame_size(&self) -> u32 {
        1 << self.shift
    }

    /// Mints the token of the chunk holding `addr` and returns it with the offset of `addr` in
    /// it, or `None` when `addr` is outside the UMEM. Only for addresses the kernel hands back
    /// (RX and completion rings): the chunk is ours again.
    #[inline]
    pub(crate) fn reclaim(&self, addr: u64) -> Option<(Frame, u32)> {
        let index = addr >> self.shift;
        if index >= u64::from(self.frames) {
            return None;
        }
        let offset = (addr & ((1 << self.shift) - 1)) as u32;
        Some((Frame { umem: self.umem, index: index as u32 }, offset))
    }

    /// Checks an RX descriptor and mints the token of its chunk.
    #[inline]
    pub(crate) fn received(&self, desc: super::Desc) -> Result<Received, BadDescriptor> {
        let Some((frame, offset)) = self.reclaim(desc.addr) else {
            return Err(BadDescriptor { frame: None, len: desc.len });
        };
        if u64::from(offset) + u64::from(desc.len) > u64::from(self.frame_size()) {
            return Err(BadDescriptor { frame: Some(frame), len: desc.len });
        }
        Ok(Received { frame, offset, len: desc.len })
    }
}

/// Distinguishes UMEMs, so a frame of one can never open a chunk of another.
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// A registered-or-to-be-registered UMEM area.
pub struct Umem {
    mem: Memory,
    geometry: Geometry,
    minted: bool,
}

impl Umem {
    /// Allocates `frames` frames of `frame_size` bytes (a power of two from 2048 to 4096).
    ///
    /// # Errors
    /// When the mapping fails (out of memory / locked-memory limits).
    pub(crate) fn new(frames: u32, frame_size: u32) -> Result<Self, SyscallError> {
        assert!(frame_size.is_power_of_two() && (2048..=4096).contains(&frame_size));
        assert!(frames > 0, "a UMEM of no frames");
        let mem = Memory::new(sys::map_anonymous(frames as usize * frame_size as usize, "mmap(UMEM)")?);
        let umem = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Self { mem, geometry: Geometry { umem, shift: frame_size.trailing_zeros(), frames }, minted: false })
    }

    /// Returns the frame size.
    pub fn frame_size(&self) -> u32 {
        self.geometry.frame_size()
    }

    /// Returns the number of frames.
    pub fn frames(&self) -> u32 {
        self.geometry.frames
    }

    /// Returns the largest frame that fits in a chunk after the kernel's headroom.
    pub fn max_frame_len(&self) -> u32 {
        self.frame_size() - XDP_PACKET_HEADROOM
    }

    /// Returns the whole chunk of `frame`.
    ///
    /// # Panics
    /// If `frame` belongs to another UMEM.
    #[inline]
    pub fn bytes(&self, frame: &Frame) -> &[u8] {
        let chunk = self.chunk(frame);
        // SAFETY: `chunk` checked that the frame is one of ours, so the chunk lies inside the
        // live mapping. Holding the token means the kernel does not own the chunk (it is on no
        // ring), and the only other access to it goes through the same token, which we borrow
        // for as long as the slice lives.
        unsafe { std::slice::from_raw_parts(chunk, self.frame_size() as usize) }
    }

    /// Returns the whole chunk of `frame`, writable.
    ///
    /// # Panics
    /// If `frame` belongs to another UMEM.
    #[inline]
    pub fn bytes_mut(&mut self, frame: &mut Frame) -> &mut [u8] {
        let chunk = self.chunk(frame);
        // SAFETY: as in `bytes`; the token is borrowed mutably and tokens are unique, so no other
        // reference to this chunk exists while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(chunk, self.frame_size() as usize) }
    }

    /// Returns the received data.
    #[inline]
    pub fn data(&self, rx: &Received) -> &[u8] {
        &self.bytes(&rx.frame)[rx.range()]
    }

    /// Returns the received data, writable (to rewrite it in place).
    #[inline]
    pub fn data_mut(&mut self, rx: &mut Received) -> &mut [u8] {
        let range = rx.range();
        &mut self.bytes_mut(&mut rx.frame)[range]
    }

    /// Returns the `N` bytes right before the received data (the XDP metadata area), or `None`
    /// when the data starts closer than `N` to its chunk's start.
    #[inline]
    pub fn meta<const N: usize>(&self, rx: &Received) -> Option<&[u8; N]> {
        let from = (rx.offset as usize).checked_sub(N)?;
        self.bytes(&rx.frame)[from..rx.offset as usize].try_into().ok()
    }

    /// The address of `frame`'s chunk, after checking that it is one of ours.
    #[inline]
    fn chunk(&self, frame: &Frame) -> *mut u8 {
        assert_eq!(frame.umem, self.geometry.umem, "a frame of another UMEM");
        // Minted frames have index < frames, so the offset stays inside the mapping.
        self.mem.base().as_ptr().wrapping_add((frame.index as usize) << self.geometry.shift)
    }

    /// Mints the token of every chunk, once (the port's initial free list). Lowest index last, so
    /// a free list popped from the end hands out the start of the area first.
    pub(crate) fn mint_all(&mut self) -> impl Iterator<Item = Frame> {
        assert!(!self.minted, "the frames of a UMEM are minted once");
        self.minted = true;
        let umem = self.geometry.umem;
        (0..self.geometry.frames).rev().map(move |index| Frame { umem, index })
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The mapping (an [`Injector`](super::Injector) or the test kernel keeps it alive and plays
    /// the kernel's RX part on it).
    pub(crate) fn memory(&self) -> Memory {
        self.mem.clone()
    }

    pub(crate) fn registration(&self) -> libc::xdp_umem_reg {
        libc::xdp_umem_reg {
            addr: self.mem.base().as_ptr() as u64,
            len: self.mem.len() as u64,
            chunk_size: self.frame_size(),
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xsk::Desc;

    #[test]
    fn tokens_open_their_own_chunk_only() {
        let mut umem = Umem::new(4, 2048).unwrap();
        let mut frames: Vec<Frame> = umem.mint_all().collect();
        assert_eq!(frames.iter().map(Frame::index).collect::<Vec<_>>(), [3, 2, 1, 0]);
        for f in &mut frames {
            let i = f.index() as u8;
            umem.bytes_mut(f).fill(i);
        }
        for f in &frames {
            assert!(umem.bytes(f).iter().all(|b| *b == f.index() as u8));
            assert_eq!(umem.bytes(f).len(), 2048);
        }
    }

    #[test]
    #[should_panic(expected = "minted once")]
    fn frames_are_minted_once() {
        let mut umem = Umem::new(2, 2048).unwrap();
        let _ = umem.mint_all().count();
        let _ = umem.mint_all().count();
    }

    #[test]
    #[should_panic(expected = "another UMEM")]
    fn a_frame_of_another_umem_is_refused() {
        let mut a = Umem::new(2, 2048).unwrap();
        let b = Umem::new(2, 2048).unwrap();
        let f = a.mint_all().next().unwrap();
        let _ = b.bytes(&f);
    }

    #[test]
    fn descriptors_are_checked() {
        let umem = Umem::new(4, 4096).unwrap();
        let g = umem.geometry();
        let desc = |addr, len| Desc { addr, len, options: 0 };
        let rx = g.received(desc(2 * 4096 + 256, 100)).unwrap();
        assert_eq!((rx.frame.index(), rx.offset, rx.len, rx.range()), (2, 256, 100, 256..356));
        assert_eq!(g.addr(&rx.frame, rx.offset), 2 * 4096 + 256);
        // Runs past its chunk: the chunk comes back, flagged.
        let bad = g.received(desc(3 * 4096 + 4000, 200)).unwrap_err();
        assert_eq!((bad.frame.map(|f| f.index()), bad.len), (Some(3), 200));
        // Outside the UMEM: nothing to give back.
        let bad = g.received(desc(4 * 4096, 60)).unwrap_err();
        assert!(bad.frame.is_none());
        assert!(g.received(desc(u64::MAX, 60)).is_err());
        assert!(g.reclaim(4 * 4096 - 1).is_some());
    }

    #[test]
    fn metadata_sits_before_the_data() {
        let mut umem = Umem::new(1, 4096).unwrap();
        let mut f = umem.mint_all().next().unwrap();
        umem.bytes_mut(&mut f)[240..256].copy_from_slice(&[7; 16]);
        let rx = Received { frame: f, offset: 256, len: 10 };
        assert_eq!(umem.meta::<16>(&rx), Some(&[7u8; 16]));
        let rx = Received { frame: rx.frame, offset: 8, len: 10 };
        assert_eq!(umem.meta::<16>(&rx), None);
    }
}
