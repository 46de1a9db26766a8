//! An RX side in memory: the RX and fill rings of a [`Port`](super::Port) over anonymous memory,
//! and the [`Injector`] that plays the kernel's RX role on them from another thread. The offline
//! feed (`-i FILE`) puts a capture file straight into the workers this way: no interface, no XDP
//! program, no AF_PACKET; the port's TX side stays a real AF_XDP socket
//! ([`Port::open_fed`](super::Port::open_fed)).
//!
//! ```text
//!   Port (the worker's thread)                 Injector (the feed's thread)
//!   fill ring producer ────────────────────────► consumer: deliver() takes a chunk the port gave up,
//!                                                writes the frame into it (one copy, as copy mode does)
//!   RX ring consumer   ◄──────────────────────── producer: ... and posts its descriptor; submit()
//!                                                publishes a batch
//!   wait_readable: `sleeping` + eventfd ◄─────── submit() writes the eventfd only if the port sleeps
//! ```
//!
//! # Who owns a chunk
//!
//! The port and the injector share the UMEM mapping, never a chunk: the frame-token discipline of
//! `umem.rs` holds across the two threads.
//!
//! - The port puts a chunk's address on the fill ring only by consuming its
//!   [`Frame`](super::Frame). From then on the chunk is the injector's.
//! - The injector writes only chunks it took from the fill ring (each address checked against the
//!   UMEM's geometry: inside the mapping, a chunk start), each once, then posts it on the RX ring
//!   and never touches it again.
//! - The port mints the chunk's token again only when it reads that RX descriptor.
//!
//! The ring indices order the hand-overs: the port's fill `submit` (Release) happens before the
//! injector's fill read that sees the address (Acquire), and the injector's writes into the
//! chunk happen before its RX `submit` (Release), which happens before the port's RX read that
//! sees the descriptor (Acquire). So no byte of a chunk is reachable from both threads at once,
//! and the port never reads a frame before it is written.
//!
//! # Waking a sleeping port
//!
//! A kernel socket becomes readable when its RX ring has entries; here an eventfd stands in for
//! it. A port about to sleep raises `sleeping`, checks the RX ring once more and polls the
//! eventfd; the injector, after publishing descriptors, writes the eventfd only when it sees the
//! flag (one system call per sleep of the worker, none per batch while it is busy). Each side
//! puts a `SeqCst` fence between its store and its load, so either the port sees the new
//! descriptors or the injector sees the flag: no wake-up is lost.

use std::{
    os::fd::BorrowedFd,
    sync::{
        atomic::{fence, AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{
    ring::{Consumer, Memory, Producer},
    sys::{self, Doorbell, SyscallError},
    umem::{Geometry, Umem, XDP_PACKET_HEADROOM},
    Desc,
};

/// The eventfd a port with an in-memory RX side sleeps on, and the flag that says it does.
#[derive(Debug)]
pub(crate) struct RxBell {
    sleeping: AtomicBool,
    bell: Doorbell,
}

impl RxBell {
    /// A bell nobody sleeps on yet.
    pub(crate) fn new() -> Result<Arc<Self>, SyscallError> {
        Ok(Arc::new(Self { sleeping: AtomicBool::new(false), bell: Doorbell::new()? }))
    }

    /// The port's side: sleeps until the injector rings (or `other` becomes readable, or
    /// `timeout` passes) unless `ready` already says the RX ring has entries. Returns `ready()`
    /// after the wait.
    pub(crate) fn wait(&self, ready: impl Fn() -> bool, other: Option<BorrowedFd<'_>>, timeout: Duration) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        // Pairs with the fence in `wake`: either we see the descriptors it published, or it sees
        // the flag we just raised.
        fence(Ordering::SeqCst);
        if !ready() {
            match other {
                Some(other) => {
                    sys::poll_readable2(self.bell.fd(), other, timeout);
                }
                None => {
                    sys::poll_readable(self.bell.fd(), timeout);
                }
            }
        }
        self.sleeping.store(false, Ordering::Relaxed);
        self.bell.drain();
        ready()
    }

    /// The injector's side, after publishing descriptors: rings if the port sleeps.
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.bell.ring();
        }
    }
}

/// The kernel's RX role for a port whose RX and fill rings are in memory: takes the chunks the
/// port puts on the fill ring, writes frames into them and posts their RX descriptors. Owned by
/// one thread (it is `Send`); see the [module docs](self) for who owns which chunk when.
pub struct Injector {
    memory: Memory,
    geometry: Geometry,
    fill: Consumer<u64>,
    rx: Producer<Desc>,
    bell: Arc<RxBell>,
    /// Descriptors posted since the last submit.
    posted: u32,
}

impl Injector {
    /// The other ends of a port's in-memory RX and fill rings, over `umem`.
    pub(crate) fn new(umem: &Umem, fill: Consumer<u64>, rx: Producer<Desc>, bell: Arc<RxBell>) -> Self {
        Self { memory: umem.memory(), geometry: umem.geometry(), fill, rx, bell, posted: 0 }
    }

    /// Returns the largest frame a chunk takes after the headroom the kernel's copy mode keeps.
    pub fn max_frame_len(&self) -> usize {
        (self.geometry.frame_size() - XDP_PACKET_HEADROOM) as usize
    }

    /// Returns the most bytes of metadata that fit in front of a frame.
    pub fn max_meta_len(&self) -> usize {
        XDP_PACKET_HEADROOM as usize
    }

    /// Whether a frame can be delivered now: a chunk on the fill ring and a free RX slot (the
    /// port's indices are re-read only when the cached views run out).
    #[inline]
    pub fn has_room(&mut self) -> bool {
        self.rx.free(1) > 0 && self.fill.available(1) > 0
    }

    /// Delivers one frame of `len` bytes: takes a chunk from the fill ring, writes `meta` right
    /// before the data (where the XDP program's metadata goes), lets `write` fill the data and
    /// posts the RX descriptor (the port sees it after [`Injector::submit`]). Returns false,
    /// doing nothing, when no chunk or no RX slot is free.
    ///
    /// # Panics
    /// If `len` exceeds [`Injector::max_frame_len`] or `meta` the headroom, or if the port put an
    /// address on the fill ring that is not a chunk of its UMEM (it only ever puts its own
    /// frames there).
    #[inline]
    pub fn deliver(&mut self, meta: &[u8], len: usize, write: impl FnOnce(&mut [u8])) -> bool {
        let headroom = XDP_PACKET_HEADROOM as usize;
        assert!(meta.len() <= headroom && len <= self.max_frame_len(), "frame or metadata too large");
        let Some(base) = self.take_chunk() else { return false };
        let chunk = self.chunk_mut(base);
        chunk[headroom - meta.len()..headroom].copy_from_slice(meta);
        write(&mut chunk[headroom..headroom + len]);
        self.post(base + u64::from(XDP_PACKET_HEADROOM), len as u32);
        true
    }

    /// Returns how many descriptors were posted since the last submit.
    pub fn unsubmitted(&self) -> u32 {
        self.posted
    }

    /// Publishes the posted descriptors (one release store) and wakes the port if it sleeps.
    #[inline]
    pub fn submit(&mut self) {
        if self.posted == 0 {
            return;
        }
        self.rx.submit();
        self.posted = 0;
        self.bell.wake();
    }

    /// Takes one chunk from the fill ring, if there is one and the RX ring has a slot for it;
    /// returns its start address.
    pub(crate) fn take_chunk(&mut self) -> Option<u64> {
        if self.rx.free(1) == 0 || self.fill.available(1) == 0 {
            return None;
        }
        let addr = self.fill.get(0);
        self.fill.release(1);
        let (_, offset) = self.geometry.reclaim(addr).expect("the port puts only its own chunks on the fill ring");
        // The kernel uses the whole chunk whatever the offset (aligned mode); so do we.
        Some(addr - u64::from(offset))
    }

    /// Posts an RX descriptor (visible at the next submit). Call only for a chunk taken with
    /// `take_chunk` (the RX slot was checked there).
    pub(crate) fn post(&mut self, addr: u64, len: u32) {
        self.rx.push(Desc { addr, len, options: 0 });
        self.posted += 1;
    }

    /// Returns how many chunks the port has put on the fill ring that no frame has used yet.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn fill_pending(&mut self) -> u32 {
        self.fill.ready_now()
    }

    /// The fill ring's consumer end (the test kernel sets its need-wakeup flag).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn fill(&self) -> &Consumer<u64> {
        &self.fill
    }

    /// The UMEM's size in bytes.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn umem_len(&self) -> usize {
        self.memory.len()
    }

    /// The chunk starting at `base`, which is ours: taken from the fill ring by `take_chunk` and
    /// not posted yet.
    fn chunk_mut(&mut self, base: u64) -> &mut [u8] {
        let size = self.geometry.frame_size() as usize;
        assert!(base as usize + size <= self.memory.len() && (base as usize).is_multiple_of(size), "not a chunk");
        // SAFETY: the chunk lies inside the live UMEM mapping (checked above; `memory` keeps it
        // alive). The port gave its token up when it pushed the chunk to the fill ring, and mints
        // a new one only when it reads the RX descriptor we post after this access (see the
        // module docs for the ordering), so the port holds no reference to the chunk now; `&mut
        // self` makes this the only one on our side.
        unsafe { std::slice::from_raw_parts_mut(self.memory.base().as_ptr().add(base as usize), size) }
    }
}
