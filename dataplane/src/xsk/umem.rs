//! The UMEM: one anonymous mapping cut into equal frames ("chunks"), registered with the kernel
//! by the socket that owns it and shared by the sockets bound with `XDP_SHARED_UMEM`.
//!
//! Ownership of each frame moves as a token (its address): free list → fill ring → (kernel) →
//! RX ring → worker → TX ring → (kernel) → completion ring → free list. The worker reads or writes
//! a frame only while it holds that token, so the kernel never writes a frame we are touching.

use memmap2::MmapMut;

use super::sys::{self, SyscallError};

/// Headroom the kernel keeps in front of received data in copy mode (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// A registered-or-to-be-registered UMEM area.
pub struct Umem {
    area: MmapMut,
    frame_size: u32,
    frames: u32,
}

impl Umem {
    /// Allocates `frames` frames of `frame_size` bytes (a power of two from 2048 to 4096).
    ///
    /// # Errors
    /// When the mapping fails (out of memory / locked-memory limits).
    pub fn new(frames: u32, frame_size: u32) -> Result<Self, SyscallError> {
        assert!(frame_size.is_power_of_two() && (2048..=4096).contains(&frame_size));
        let area = sys::map_umem(frames as usize * frame_size as usize)?;
        Ok(Self { area, frame_size, frames })
    }

    /// Returns the frame size.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Returns the number of frames.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Returns the base address of frame `i`.
    pub fn frame_addr(&self, i: u32) -> u64 {
        u64::from(i) * u64::from(self.frame_size)
    }

    /// Returns the largest frame that fits in a chunk after the kernel's headroom.
    pub fn max_frame_len(&self) -> u32 {
        self.frame_size - XDP_PACKET_HEADROOM
    }

    /// Returns `(start of chunk, end of chunk)` for an address anywhere inside a chunk.
    pub fn chunk_bounds(&self, addr: u64) -> (u64, u64) {
        let start = addr & !(u64::from(self.frame_size) - 1);
        (start, start + u64::from(self.frame_size))
    }

    /// Returns the bytes of the chunk holding `addr`, from `addr` to the chunk's end (for
    /// building or growing a frame in place), or `None` if `addr` is outside the area.
    pub fn from_addr_mut(&mut self, addr: u64) -> Option<&mut [u8]> {
        let (_, end) = self.chunk_bounds(addr);
        self.area.get_mut(addr as usize..end as usize)
    }

    /// Returns `len` bytes at `addr`, or `None` if they do not lie inside one chunk.
    pub fn get(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let (_, end) = self.chunk_bounds(addr);
        let stop = addr.checked_add(u64::from(len))?;
        if stop > end {
            return None;
        }
        self.area.get(addr as usize..stop as usize)
    }

    /// Returns the `N` bytes right before `addr` inside its chunk (the XDP metadata area), or
    /// `None` when `addr` is closer than `N` to the chunk's start.
    pub fn before<const N: usize>(&self, addr: u64) -> Option<&[u8; N]> {
        let (start, _) = self.chunk_bounds(addr);
        let from = addr.checked_sub(N as u64).filter(|f| *f >= start)?;
        self.area.get(from as usize..addr as usize)?.try_into().ok()
    }

    pub(crate) fn registration(&mut self) -> libc::xdp_umem_reg {
        libc::xdp_umem_reg {
            addr: self.area.as_mut_ptr() as u64,
            len: self.area.len() as u64,
            chunk_size: self.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        }
    }
}
