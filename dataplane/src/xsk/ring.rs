//! The four single-producer/single-consumer rings shared with the kernel.
//!
//! Each ring is an array of `size` (a power of two) entries plus a producer and a consumer index
//! that only grow (mod 2^32). We cache the other side's index and re-read it (Acquire) only when
//! the cached view says the ring is full/empty, and publish our own index (Release) once per
//! batch. This is the libxdp/s2n-quic-xdp scheme: one atomic load and one store per batch, not per
//! entry.
//!
//! `Producer` is used for the fill ring (u64 addresses) and the TX ring (descriptors);
//! `Consumer` for the RX ring (descriptors) and the completion ring (u64 addresses).
//!
//! A ring lives in [`Memory`]: the kernel's mapping of the socket's ring, or an anonymous mapping
//! laid out the same way, whose two ends are both ours (`xsk::testing` makes such pairs, so the
//! rings and everything above them are tested without a socket). The ring code cannot tell the
//! two apart.

use std::{
    marker::PhantomData,
    os::fd::BorrowedFd,
    ptr::NonNull,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

use memmap2::MmapMut;

use super::sys::{self, SyscallError};

/// A shared memory area: the kernel's ring or UMEM mapping, or an anonymous one. Clones share
/// the mapping, which lives until the last clone is dropped.
///
/// The base pointer is taken once, when the mapping is wrapped, and no Rust reference to the
/// whole area is ever made afterwards: the rings and the UMEM make references only to the
/// parts they own at the time (see `umem.rs`), since the kernel writes the rest concurrently.
#[derive(Clone)]
pub(crate) struct Memory {
    base: NonNull<u8>,
    len: usize,
    _map: Arc<MmapMut>,
}

// SAFETY: `Memory` is an owner of a mapping plus its address; it gives access to nothing by
// itself. Every access through `base` is made by the ring or UMEM code, whose own rules (one
// owning thread per ring end, frame tokens for the UMEM) make it race-free.
unsafe impl Send for Memory {}
// SAFETY: as above: `&Memory` only exposes the address and the length.
unsafe impl Sync for Memory {}

impl Memory {
    /// Wraps a mapping.
    pub(crate) fn new(mut map: MmapMut) -> Self {
        let len = map.len();
        // `as_mut_ptr` returns the mapping's address without making a reference to its bytes.
        let base = NonNull::new(map.as_mut_ptr()).expect("a mapping is never at address 0");
        Self { base, len, _map: Arc::new(map) }
    }

    /// The first byte.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The offsets of one ring's parts inside its memory.
#[derive(Debug, Clone, Copy)]
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

impl Layout {
    /// The layout of an anonymous ring (each index on its own cache line, as the kernel does).
    pub(crate) const ANONYMOUS: Layout = Layout { producer: 0, consumer: 64, flags: 128, desc: 192 };

    /// Bytes needed for `size` entries of `T`.
    pub(crate) fn len<T>(&self, size: u32) -> usize {
        self.desc as usize + size as usize * std::mem::size_of::<T>()
    }
}

struct Raw<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    size: u32,
    _mem: Memory,
}

impl<T: Copy> Raw<T> {
    /// A ring of `size` entries laid out per `layout` in `mem`.
    ///
    /// # Panics
    /// If `size` is not a power of two, or the layout does not fit `mem` or is misaligned
    /// (checked here, once, so the accessors below need no checks).
    fn new(mem: Memory, layout: &Layout, size: u32) -> Self {
        assert!(size.is_power_of_two(), "ring size {size} must be a power of two");
        assert!(layout.len::<T>(size) <= mem.len(), "ring does not fit its memory");
        for at in [layout.producer, layout.consumer, layout.flags] {
            assert!(at as usize + 4 <= mem.len() && at % 4 == 0, "ring index word out of place");
        }
        assert_eq!(layout.desc as usize % std::mem::align_of::<T>(), 0, "misaligned ring entries");
        let at = |offset: u64| {
            // SAFETY: `offset` was checked above to lie inside the mapping, so the result is in
            // bounds of the same allocation (and not null).
            unsafe { mem.base().add(offset as usize) }
        };
        Self {
            producer: at(layout.producer).cast(),
            consumer: at(layout.consumer).cast(),
            flags: at(layout.flags).cast(),
            entries: at(layout.desc).cast(),
            mask: size - 1,
            size,
            _mem: mem,
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: an aligned u32 inside our live mapping (checked in `new`); the other side
        // accesses it only atomically too.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }
    }

    /// Writes entry `idx`; the caller owns that slot (not yet published to the other side).
    fn write(&self, idx: u32, value: T) {
        debug_assert!(idx < self.size);
        // SAFETY: idx < size (masked by the callers) and the entry array of `size` entries lies
        // inside the mapping (checked in `new`); the other side does not read this slot until
        // the producer index that covers it is published.
        unsafe { self.entries.as_ptr().add(idx as usize).write(value) }
    }

    /// Reads entry `idx`; the other side published it and will not overwrite it before we
    /// release it.
    fn read(&self, idx: u32) -> T {
        debug_assert!(idx < self.size);
        // SAFETY: idx < size as for `write`; the slot was published (producer index read with
        // Acquire) and stays untouched until our consumer index passes it.
        unsafe { self.entries.as_ptr().add(idx as usize).read() }
    }
}

/// Our side produces: fill ring and TX ring (in tests, also the kernel's end of RX and
/// completion rings).
pub struct Producer<T> {
    raw: Raw<T>,
    cached_prod: u32,
    cached_cons: u32,
    _t: PhantomData<T>,
}

// SAFETY: a ring end is used by exactly one thread at a time (its owner); the pointers refer to
// memory kept alive by the struct's `Memory`, and the indices shared with the other end are
// atomics.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T: Copy> Producer<T> {
    /// Maps the producer end of a kernel ring.
    pub(crate) fn map(fd: BorrowedFd<'_>, pgoff: u64, layout: &Layout, size: u32) -> Result<Self, SyscallError> {
        let map = sys::map_ring(fd, pgoff, layout.len::<T>(size))?;
        Ok(Self::over(Memory::new(map), layout, size))
    }

    /// The producer end of the ring laid out per `layout` in `mem`.
    pub(crate) fn over(mem: Memory, layout: &Layout, size: u32) -> Self {
        let raw = Raw::new(mem, layout, size);
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        // The producer's view of the consumer is offset by the ring size so that
        // `cached_cons - cached_prod` is the free space (libxdp does the same).
        let cached_cons = raw.consumer().load(Ordering::Relaxed).wrapping_add(size);
        Self { raw, cached_prod, cached_cons, _t: PhantomData }
    }

    /// Returns how many entries can be produced now (re-reading the consumer index when the
    /// cached view has fewer than `want`).
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.cached_cons = self.raw.consumer().load(Ordering::Acquire).wrapping_add(self.raw.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Writes one entry at the current producer position. Call only after `free` said so;
    /// nothing is visible to the other side until `submit`.
    ///
    /// # Panics
    /// On a full ring (as last seen by `free`): the slot may still be the other side's.
    #[inline]
    pub fn push(&mut self, value: T) {
        assert!(self.cached_cons.wrapping_sub(self.cached_prod) > 0, "push on a full ring");
        self.raw.write(self.cached_prod & self.raw.mask, value);
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publishes everything pushed so far.
    #[inline]
    pub fn submit(&mut self) {
        self.raw.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Returns how many published entries the consumer has not consumed yet.
    pub fn outstanding(&self) -> u32 {
        let cons = self.raw.consumer().load(Ordering::Acquire);
        self.raw.producer().load(Ordering::Relaxed).wrapping_sub(cons)
    }

    /// Whether the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Sets or clears `XDP_RING_NEED_WAKEUP` (the kernel's job; for the test kernel).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_need_wakeup(&self, on: bool) {
        set_flag(self.raw.flags(), on);
    }

    /// The ring's capacity.
    pub fn size(&self) -> u32 {
        self.raw.size
    }
}

/// Our side consumes: RX ring and completion ring (in tests, also the kernel's end of fill and
/// TX rings).
pub struct Consumer<T> {
    raw: Raw<T>,
    cached_prod: u32,
    cached_cons: u32,
    _t: PhantomData<T>,
}

// SAFETY: as for `Producer`: one owning thread; pointers into the owned mapping.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T: Copy> Consumer<T> {
    /// Maps the consumer end of a kernel ring.
    pub(crate) fn map(fd: BorrowedFd<'_>, pgoff: u64, layout: &Layout, size: u32) -> Result<Self, SyscallError> {
        let map = sys::map_ring(fd, pgoff, layout.len::<T>(size))?;
        Ok(Self::over(Memory::new(map), layout, size))
    }

    /// The consumer end of the ring laid out per `layout` in `mem`.
    pub(crate) fn over(mem: Memory, layout: &Layout, size: u32) -> Self {
        let raw = Raw::new(mem, layout, size);
        let cached_prod = raw.producer().load(Ordering::Relaxed);
        let cached_cons = raw.consumer().load(Ordering::Relaxed);
        Self { raw, cached_prod, cached_cons, _t: PhantomData }
    }

    /// Returns how many entries are ready (re-reading the producer index when the cached view
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

    /// Reads the `i`-th ready entry (0-based from the consumer position).
    ///
    /// # Panics
    /// If `i` is not below what `available` returned: that slot may be the other side's.
    #[inline]
    pub fn get(&self, i: u32) -> T {
        assert!(i < self.cached_prod.wrapping_sub(self.cached_cons), "entry {i} is not ready");
        self.raw.read(self.cached_cons.wrapping_add(i) & self.raw.mask)
    }

    /// Whether the producer has published entries not released yet, without moving the cached
    /// view (one `Acquire` load; for a waiter deciding whether to sleep).
    #[inline]
    pub fn has_ready(&self) -> bool {
        self.raw.producer().load(Ordering::Acquire) != self.cached_cons
    }

    /// Gives `n` entries back to the producer.
    #[inline]
    pub fn release(&mut self, n: u32) {
        debug_assert!(n <= self.cached_prod.wrapping_sub(self.cached_cons), "release of entries not ready");
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.raw.consumer().store(self.cached_cons, Ordering::Release);
    }

    /// Returns how many entries are ready, re-reading the producer index whatever the cached
    /// view says (the test kernel's exact count; the loop uses `available`).
    #[cfg(any(test, feature = "testing"))]
    pub fn ready_now(&mut self) -> u32 {
        self.cached_prod = self.raw.producer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Whether `XDP_RING_NEED_WAKEUP` is set (the test kernel's view of its fill and TX rings).
    #[cfg(any(test, feature = "testing"))]
    pub fn needs_wakeup(&self) -> bool {
        self.raw.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Sets or clears `XDP_RING_NEED_WAKEUP` (the kernel's job; for the test kernel).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_need_wakeup(&self, on: bool) {
        set_flag(self.raw.flags(), on);
    }

    /// The ring's capacity.
    pub fn size(&self) -> u32 {
        self.raw.size
    }
}

#[cfg(any(test, feature = "testing"))]
fn set_flag(flags: &AtomicU32, on: bool) {
    if on {
        flags.fetch_or(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
    } else {
        flags.fetch_and(!libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
    }
}

/// A producer and a consumer over the same anonymous memory, both indices starting at `start`
/// (an in-memory RX side, `inject.rs`; the test rings of `xsk::testing`).
pub(crate) fn pair<T: Copy>(size: u32, start: u32) -> Result<(Producer<T>, Consumer<T>), SyscallError> {
    let layout = Layout::ANONYMOUS;
    let mem = Memory::new(sys::map_anonymous(layout.len::<T>(size), "mmap(test ring)")?);
    let raw = Raw::<T>::new(mem.clone(), &layout, size);
    raw.producer().store(start, Ordering::Relaxed);
    raw.consumer().store(start, Ordering::Relaxed);
    Ok((Producer::over(mem.clone(), &layout, size), Consumer::over(mem, &layout, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(size: u32, start: u32) -> (Producer<u64>, Consumer<u64>) {
        pair(size, start).expect("anonymous memory")
    }

    /// Pushes `values` and submits them.
    fn produce(p: &mut Producer<u64>, values: impl IntoIterator<Item = u64>) {
        for v in values {
            assert!(p.free(1) >= 1, "room for {v}");
            p.push(v);
        }
        p.submit();
    }

    /// Takes up to `max` entries and releases them.
    fn consume(c: &mut Consumer<u64>, max: u32) -> Vec<u64> {
        let n = c.available(max);
        let v = (0..n).map(|i| c.get(i)).collect();
        c.release(n);
        v
    }

    #[test]
    fn empty_and_full() {
        let (mut p, mut c) = ring(4, 0);
        assert_eq!(c.available(64), 0);
        assert_eq!(p.free(1), 4);
        produce(&mut p, [1, 2, 3, 4]);
        assert_eq!(p.free(1), 0, "full");
        assert_eq!(p.outstanding(), 4);
        assert_eq!(consume(&mut c, 64), [1, 2, 3, 4]);
        assert_eq!(p.outstanding(), 0);
        assert_eq!(p.free(4), 4, "the consumer's release is seen once the cached view runs short");
        assert_eq!(c.available(64), 0, "empty again");
    }

    #[test]
    fn nothing_is_visible_before_submit() {
        let (mut p, mut c) = ring(8, 0);
        assert_eq!(p.free(2), 8);
        p.push(7);
        p.push(8);
        assert_eq!(c.available(64), 0);
        p.submit();
        assert_eq!(consume(&mut c, 64), [7, 8]);
    }

    #[test]
    fn indices_wrap_around_u32_max() {
        // Start 3 below the wrap point and move 5 ring-fulls through: every index form (below,
        // at and past u32::MAX, and the masked slot) is crossed.
        let (mut p, mut c) = ring(4, u32::MAX - 2);
        let mut next = 0u64;
        let mut seen = Vec::new();
        for round in 0..5 {
            assert_eq!(p.free(4), 4, "round {round}");
            produce(&mut p, next..next + 4);
            next += 4;
            assert_eq!(p.free(1), 0);
            // Consume in two uneven steps so the consumer position also crosses the wrap.
            seen.extend(consume(&mut c, 3));
            seen.extend(consume(&mut c, 64));
        }
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        assert_eq!(c.available(64), 0);
    }

    #[test]
    fn batching_reads_at_most_max_and_releases_partially() {
        let (mut p, mut c) = ring(16, 100);
        produce(&mut p, 0..10);
        assert_eq!(c.available(4), 4, "capped at max");
        assert_eq!((c.get(0), c.get(3)), (0, 3));
        c.release(2);
        // The cached view still holds 8: no new acquire needed, and it resumes at entry 2.
        assert_eq!(c.available(64), 8);
        assert_eq!(c.get(0), 2);
        c.release(8);
        assert_eq!(c.available(64), 0);
        // The producer sees the room only when it asks for more than its cached view has.
        assert_eq!(p.free(6), 6, "cached: 16 - 10");
        assert_eq!(p.free(16), 16, "re-read");
    }

    #[test]
    #[should_panic(expected = "is not ready")]
    fn get_past_available_panics() {
        let (mut p, mut c) = ring(4, 0);
        produce(&mut p, [1]);
        assert_eq!(c.available(4), 1);
        c.get(1);
    }

    #[test]
    #[should_panic(expected = "full ring")]
    fn push_on_a_full_ring_panics() {
        let (mut p, _c) = ring(2, 0);
        produce(&mut p, [1, 2]);
        p.push(3);
    }

    #[test]
    fn need_wakeup_flag() {
        let (p, c) = ring(4, 0);
        assert!(!p.needs_wakeup());
        c.set_need_wakeup(true);
        assert!(p.needs_wakeup() && c.needs_wakeup());
        c.set_need_wakeup(false);
        assert!(!p.needs_wakeup());
        p.set_need_wakeup(true);
        assert!(c.needs_wakeup());
    }

    #[test]
    fn descriptors_round_trip() {
        let (mut p, mut c) = pair::<libc::xdp_desc>(2, 0).expect("anonymous memory");
        assert_eq!(p.free(1), 2);
        p.push(libc::xdp_desc { addr: 4096 + 256, len: 60, options: 0 });
        p.submit();
        assert_eq!(c.available(1), 1);
        let d = c.get(0);
        assert_eq!((d.addr, d.len, d.options), (4352, 60, 0));
        c.release(1);
        assert_eq!((p.size(), c.size()), (2, 2));
    }
}
