//! The four single-producer/single-consumer rings shared with the kernel.
//!
//! Each ring is an mmap'd array of `size` (a power of two) entries plus a producer and a consumer
//! index that only grow (mod 2^32). We cache the kernel's index and re-read it (Acquire) only when
//! the cached view says the ring is full/empty, and publish our own index (Release) once per
//! batch. This is the libxdp/s2n-quic-xdp scheme: one atomic load and one store per batch, not per
//! entry.
//!
//! `Producer` is used for the fill ring (u64 addresses) and the TX ring (descriptors);
//! `Consumer` for the RX ring (descriptors) and the completion ring (u64 addresses).

use std::{
    marker::PhantomData,
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU32, Ordering},
};

use memmap2::MmapMut;

use super::sys::{self, SyscallError};

/// The kernel's offsets of one ring inside its mapping.
pub(crate) struct Layout {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

impl From<libc::xdp_ring_offset> for Layout {
    fn from(o: libc::xdp_ring_offset) -> Self {
        Self { producer: o.producer, consumer: o.consumer, desc: o.desc, flags: o.flags }
    }
}

struct Raw<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
    _map: MmapMut,
}

impl<T: Copy> Raw<T> {
    fn map(fd: BorrowedFd<'_>, pgoff: u64, layout: &Layout, size: u32) -> Result<Self, SyscallError> {
        assert!(size.is_power_of_two(), "ring size {size} must be a power of two");
        let len = layout.desc as usize + size as usize * std::mem::size_of::<T>();
        let mut map = sys::map_ring(fd, pgoff, len)?;
        let base = map.as_mut_ptr();
        // SAFETY: the offsets come from the kernel's XDP_MMAP_OFFSETS for this very ring and lie
        // inside `len`; the index words are 4-byte aligned u32s the kernel also accesses
        // atomically. `map` is stored in the struct, so the pointers live as long as it does.
        unsafe {
            Ok(Self {
                producer: base.add(layout.producer as usize).cast(),
                consumer: base.add(layout.consumer as usize).cast(),
                flags: base.add(layout.flags as usize).cast(),
                entries: base.add(layout.desc as usize).cast(),
                mask: size - 1,
                size,
                _map: map,
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { &*self.consumer }
    }

    fn flags(&self) -> u32 {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { &*self.flags }.load(Ordering::Relaxed)
    }
}

/// Our side produces: fill ring and TX ring.
pub struct Producer<T> {
    raw: Raw<T>,
    cached_prod: u32,
    cached_cons: u32,
    _t: PhantomData<T>,
}

// SAFETY: the ring is used by exactly one thread at a time (the worker that owns the socket);
// the raw pointers refer to memory owned by the struct's mapping.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T: Copy> Producer<T> {
    pub(crate) fn map(fd: BorrowedFd<'_>, pgoff: u64, layout: &Layout, size: u32) -> Result<Self, SyscallError> {
        let raw = Raw::map(fd, pgoff, layout, size)?;
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        // The producer's view of the consumer is offset by the ring size so that
        // `cached_cons - cached_prod` is the free space (libxdp does the same).
        let cached_cons = raw.consumer().load(Ordering::Relaxed).wrapping_add(size);
        Ok(Self { raw, cached_prod, cached_cons, _t: PhantomData })
    }

    /// Returns how many entries can be produced now (re-reading the kernel's consumer when the
    /// cached view has fewer than `want`).
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.cached_cons = self.raw.consumer().load(Ordering::Acquire).wrapping_add(self.raw.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Writes one entry at the current producer position. Call only after `free` said so;
    /// nothing is visible to the kernel until `submit`.
    #[inline]
    pub fn push(&mut self, value: T) {
        debug_assert!(self.cached_cons.wrapping_sub(self.cached_prod) > 0, "push on a full ring");
        let idx = (self.cached_prod & self.raw.mask) as usize;
        // SAFETY: idx < size, the entry array holds `size` entries of T inside the mapping, and
        // the kernel does not read this slot until the producer index is published.
        unsafe { self.raw.entries.add(idx).write(value) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publishes everything pushed so far to the kernel.
    #[inline]
    pub fn submit(&mut self) {
        self.raw.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Returns how many published entries the kernel has not consumed yet.
    pub fn outstanding(&self) -> u32 {
        let cons = self.raw.consumer().load(Ordering::Acquire);
        self.raw.producer().load(Ordering::Relaxed).wrapping_sub(cons)
    }

    /// Whether the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags() & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// The ring's capacity.
    pub fn size(&self) -> u32 {
        self.raw.size
    }
}

/// Our side consumes: RX ring and completion ring.
pub struct Consumer<T> {
    raw: Raw<T>,
    cached_prod: u32,
    cached_cons: u32,
    _t: PhantomData<T>,
}

// SAFETY: as for `Producer`: one owning thread; pointers into the owned mapping.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T: Copy> Consumer<T> {
    pub(crate) fn map(fd: BorrowedFd<'_>, pgoff: u64, layout: &Layout, size: u32) -> Result<Self, SyscallError> {
        let raw = Raw::map(fd, pgoff, layout, size)?;
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        let cached_cons = raw.consumer().load(Ordering::Relaxed);
        Ok(Self { raw, cached_prod, cached_cons, _t: PhantomData })
    }

    /// Returns how many entries are ready (re-reading the kernel's producer when the cached view
    /// is empty), at most `max`.
    #[inline]
    pub fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            self.cached_prod = self.raw.producer().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(max)
    }

    /// Reads the `i`-th ready entry (0-based from the consumer position). `i` must be below what
    /// `available` returned.
    #[inline]
    pub fn get(&self, i: u32) -> T {
        debug_assert!(i < self.cached_prod.wrapping_sub(self.cached_cons));
        let idx = (self.cached_cons.wrapping_add(i) & self.raw.mask) as usize;
        // SAFETY: idx < size; the kernel published this slot (producer index read with Acquire)
        // and will not overwrite it until we release it.
        unsafe { self.raw.entries.add(idx).read() }
    }

    /// Gives `n` entries back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.raw.consumer().store(self.cached_cons, Ordering::Release);
    }
}
