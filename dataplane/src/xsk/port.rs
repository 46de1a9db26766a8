//! [`Port`]: one AF_XDP queue as one value — the UMEM, the four rings the loop uses, the free list
//! of [`Frame`]s — and the methods a poll loop needs. The copier's workers, the intercept and the
//! benchmark's load tools all open their queues with [`Port::open`].
//!
//! ```text
//!            reclaim()                refill()                   rx_acquire/next/release
//!  completion ring ──► free list ──► fill ring ──► (kernel) ──► RX ring ──► Received { frame, .. }
//!        ▲                 ▲                                                    │
//!        │                 └──────────────── recycle(frame) ◄── drop ◄──────────┤
//!  (kernel) ◄── TX ring ◄── tx_push(frame, offset, len), tx_submit(), flush_tx() ◄┘
//! ```
//!
//! Rings and frames are typed: the fill and TX pushes take a [`Frame`] by value, the RX ring and
//! the completion ring mint them, so a chunk cannot be given to the kernel twice or touched while
//! the kernel owns it (see `umem.rs`). The hot path is what the hand-written loops did: one
//! acquire (`Acquire` load, only when the cached view runs out) and one release (`Release` store)
//! per batch and ring, no allocation (the free list holds at most every frame and is allocated
//! for that at open).
//!
//! The TX side is either on the same socket (capture and output interface are the same) or on a
//! second socket on the output interface sharing the UMEM (`XDP_SHARED_UMEM`). The RX side is
//! either the kernel's (the socket's RX and fill rings) or in memory, fed by an [`Injector`] on
//! another thread ([`Port::open_fed`]: the offline feed; the worker cannot tell the difference).
//! The kicks and waits go through [`sys`](super::sys)'s loop-call dispatch, so a port over
//! in-memory rings (`xsk::testing`) runs the same code with its kicks counted.

use std::{os::fd::BorrowedFd, time::Duration};

#[cfg(any(test, feature = "testing"))]
use std::os::fd::{AsFd, OwnedFd};

use std::sync::Arc;

use super::{
    inject::{Injector, RxBell},
    ring::{self, Consumer, Producer},
    socket::{self, CopyMode, Error, Socket, StatsHandle},
    sys::{self, Kick},
    umem::{BadDescriptor, Frame, Geometry, Received, Umem},
    Desc,
};

/// Entries of a ring the kernel requires but the port does not use (the fill ring of a TX-only
/// socket, the completion ring of an RX-only one).
const SPARE_RING: u32 = 64;

/// `sendto` calls per flush at most: copy mode transmits a budget per call and says EAGAIN when
/// more is left.
const KICKS_PER_FLUSH: u32 = 8;

/// Where a port transmits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxSide {
    /// It does not (no TX ring).
    Off,
    /// On its own socket: the interface and queue it receives on (or, for a TX-only port, the
    /// one it is opened on).
    SameSocket,
    /// On a second socket on this interface (same queue id) that shares the UMEM.
    SharedUmem(String),
}

/// What to open.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Interface of the socket that owns the UMEM (the capture interface).
    pub ifname: String,
    /// Queue id (on both interfaces when TX is on another one).
    pub queue: u32,
    /// UMEM chunks.
    pub frames: u32,
    /// Chunk size: 2048 or 4096.
    pub frame_size: u32,
    /// Entries of each ring the port uses (a power of two).
    pub ring_size: u32,
    /// Receive (RX and fill ring on the owner socket).
    pub rx: bool,
    /// Transmit (TX and completion ring), and on which socket.
    pub tx: TxSide,
    /// Frames the fill ring is never given, kept free for building frames (session mode keeps
    /// half the UMEM, at most 2048).
    pub fill_reserve: u32,
    /// Zero-copy policy.
    pub copy_mode: CopyMode,
}

impl PortConfig {
    /// A receive-only port (the intercept's capture, the benchmark's sink): every frame on the
    /// fill ring, 4 KiB chunks, zero-copy when the driver has it.
    pub fn rx_only(ifname: &str, queue: u32, frames: u32, ring_size: u32) -> Self {
        PortConfig {
            ifname: ifname.to_owned(),
            queue,
            frames,
            frame_size: 4096,
            ring_size,
            rx: true,
            tx: TxSide::Off,
            fill_reserve: 0,
            copy_mode: CopyMode::Auto,
        }
    }
}

/// The RX ring and the fill ring, with the current RX burst.
struct RxRings {
    ring: Consumer<Desc>,
    fill: Producer<u64>,
    /// Entries acquired in this burst.
    ready: u32,
    /// Of which handed out (and so to release).
    taken: u32,
}

/// The TX ring and the completion ring.
struct TxRings {
    ring: Producer<Desc>,
    comp: Consumer<u64>,
    /// Frames pushed and not completed yet.
    in_flight: u32,
    /// Whether the TX socket is bound in zero-copy mode (then a kick is needed only when the
    /// kernel asks for one).
    zero_copy: bool,
}

/// The file descriptors the port kicks and waits on.
// The small variant exists in tests only; boxing the real one would cost a load per kick.
#[allow(clippy::large_enum_variant)]
enum Fds {
    /// Real sockets: the UMEM owner, and the TX socket on another interface if any.
    Kernel { owner: Socket, shared: Option<Socket> },
    /// An in-memory port: an inert eventfd stands in for the socket, so the loop calls have an
    /// fd to name (the test handler takes them over).
    #[cfg(any(test, feature = "testing"))]
    Memory(OwnedFd),
}

/// One AF_XDP queue: UMEM, rings, free frames.
pub struct Port {
    umem: Umem,
    geometry: Geometry,
    /// Frames we own and nobody uses; capacity for every frame, so pushing never allocates.
    free: Vec<Frame>,
    fill_reserve: usize,
    rx: Option<RxRings>,
    tx: Option<TxRings>,
    fds: Fds,
    /// An in-memory RX side ([`Port::open_fed`]): waits for received frames sleep on this bell,
    /// which the [`Injector`] rings, instead of polling a socket.
    bell: Option<Arc<RxBell>>,
}

impl Port {
    /// Opens the queue: allocates the UMEM, creates and binds the socket(s) (zero-copy first per
    /// `copy_mode`, copy mode as the fallback, need-wakeup on), and primes the fill ring with
    /// every free frame but the reserve.
    ///
    /// # Errors
    /// When an interface is missing or a setup call fails (the error names the interface, the
    /// queue and the call).
    pub fn open(cfg: &PortConfig) -> Result<Self, Error> {
        assert!(cfg.rx || cfg.tx != TxSide::Off, "a port that neither receives nor transmits");
        let umem = Umem::new(cfg.frames, cfg.frame_size).map_err(|source| Error::Syscall {
            ifname: cfg.ifname.clone(),
            queue: cfg.queue,
            source,
        })?;
        let own_tx = cfg.tx == TxSide::SameSocket;
        let size = |used: bool| if used { cfg.ring_size } else { SPARE_RING };
        let mut owner = Socket::create(
            &umem,
            &socket::Config {
                ifname: cfg.ifname.clone(),
                queue: cfg.queue,
                rx_size: if cfg.rx { cfg.ring_size } else { 0 },
                tx_size: if own_tx { cfg.ring_size } else { 0 },
                fill_size: size(cfg.rx),
                comp_size: size(own_tx),
                copy_mode: cfg.copy_mode,
            },
        )?;
        let mut shared = match &cfg.tx {
            TxSide::SharedUmem(ifname) => Some(Socket::create_shared(
                &owner,
                &socket::Config {
                    ifname: ifname.clone(),
                    queue: cfg.queue,
                    rx_size: 0,
                    tx_size: cfg.ring_size,
                    fill_size: SPARE_RING,
                    comp_size: cfg.ring_size,
                    copy_mode: cfg.copy_mode,
                },
            )?),
            _ => None,
        };
        let rx = cfg.rx.then(|| {
            (owner.rx.take().expect("configured an RX ring"), owner.fill.take().expect("every socket has a fill ring"))
        });
        let tx_sock = match (&mut shared, own_tx) {
            (Some(s), _) => Some(s),
            (None, true) => Some(&mut owner),
            (None, false) => None,
        };
        let tx = tx_sock.map(|s| {
            let zero_copy = s.zero_copy();
            (
                s.tx.take().expect("configured a TX ring"),
                s.comp.take().expect("every socket has a completion ring"),
                zero_copy,
            )
        });
        Ok(Self::assemble(umem, rx, tx, cfg.fill_reserve, Fds::Kernel { owner, shared }, None))
    }

    /// Opens a port whose RX side is in memory and fed by the returned [`Injector`] from another
    /// thread (the offline feed), and whose TX side is a real socket on `cfg.ifname`, queue
    /// `cfg.queue`, which registers the UMEM. `cfg.tx` must be [`TxSide::SameSocket`]; `cfg.rx`
    /// is not looked at (the RX side is the injector's). As with [`Port::open`], every free
    /// frame but the reserve is put on the fill ring, where the injector takes them.
    ///
    /// The port is used exactly like one from [`Port::open`] ([`Port::fd`] is the TX socket's:
    /// never put it in an XSKMAP). See `inject.rs` for who owns a chunk when.
    ///
    /// # Errors
    /// When the interface is missing or a setup call fails (the error names the interface, the
    /// queue and the call).
    ///
    /// # Panics
    /// If `cfg.tx` is not [`TxSide::SameSocket`].
    pub fn open_fed(cfg: &PortConfig) -> Result<(Self, Injector), Error> {
        assert_eq!(cfg.tx, TxSide::SameSocket, "a fed port transmits on its own socket");
        let err = |source| Error::Syscall { ifname: cfg.ifname.clone(), queue: cfg.queue, source };
        let umem = Umem::new(cfg.frames, cfg.frame_size).map_err(err)?;
        let mut owner = Socket::create(
            &umem,
            &socket::Config {
                ifname: cfg.ifname.clone(),
                queue: cfg.queue,
                rx_size: 0,
                tx_size: cfg.ring_size,
                fill_size: SPARE_RING,
                comp_size: cfg.ring_size,
                copy_mode: cfg.copy_mode,
            },
        )?;
        let (fill_p, fill_c) = ring::pair::<u64>(cfg.ring_size, 0).map_err(err)?;
        let (rx_p, rx_c) = ring::pair::<Desc>(cfg.ring_size, 0).map_err(err)?;
        let bell = RxBell::new().map_err(err)?;
        let injector = Injector::new(&umem, fill_c, rx_p, bell.clone());
        let zero_copy = owner.zero_copy();
        let tx = (
            owner.tx.take().expect("configured a TX ring"),
            owner.comp.take().expect("every socket has a completion ring"),
            zero_copy,
        );
        let fds = Fds::Kernel { owner, shared: None };
        Ok((Self::assemble(umem, Some((rx_c, fill_p)), Some(tx), cfg.fill_reserve, fds, Some(bell)), injector))
    }

    /// Puts a port together (real or in-memory), mints every frame into the free list and primes
    /// the fill ring.
    fn assemble(
        mut umem: Umem,
        rx: Option<(Consumer<Desc>, Producer<u64>)>,
        tx: Option<(Producer<Desc>, Consumer<u64>, bool)>,
        fill_reserve: u32,
        fds: Fds,
        bell: Option<Arc<RxBell>>,
    ) -> Self {
        let mut free = Vec::with_capacity(umem.frames() as usize);
        free.extend(umem.mint_all());
        let mut port = Self {
            geometry: umem.geometry(),
            umem,
            free,
            fill_reserve: fill_reserve as usize,
            rx: rx.map(|(ring, fill)| RxRings { ring, fill, ready: 0, taken: 0 }),
            tx: tx.map(|(ring, comp, zero_copy)| TxRings { ring, comp, in_flight: 0, zero_copy }),
            fds,
            bell,
        };
        // A failed wakeup here is retried by the loop's first refill.
        let _ = port.refill();
        port
    }

    /// A port over in-memory rings (see `xsk::testing`); with `bell`, its waits sleep on it as a
    /// fed port's do.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn in_memory(
        umem: Umem,
        rx: (Consumer<Desc>, Producer<u64>),
        tx: (Producer<Desc>, Consumer<u64>),
        fill_reserve: u32,
        fd: OwnedFd,
        bell: Option<Arc<RxBell>>,
    ) -> Self {
        Self::assemble(umem, Some(rx), Some((tx.0, tx.1, false)), fill_reserve, Fds::Memory(fd), bell)
    }

    /// The UMEM (to read frames by their tokens).
    pub fn umem(&self) -> &Umem {
        &self.umem
    }

    /// The UMEM, writable (to build or rewrite frames by their tokens).
    pub fn umem_mut(&mut self) -> &mut Umem {
        &mut self.umem
    }

    /// Returns how many frames are free.
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// How many more frames may be built for TX now: free frames within the reserve, less what
    /// is in flight (the rest of the UMEM belongs to the fill ring).
    pub fn build_room(&self) -> usize {
        // A port without a reserve still builds one frame at a time.
        self.free.len().min(self.fill_reserve.max(1).saturating_sub(self.in_flight() as usize))
    }

    /// Takes a free frame (to build one to transmit).
    #[inline]
    pub fn take_free(&mut self) -> Option<Frame> {
        self.free.pop()
    }

    /// Gives a frame back to the free list.
    #[inline]
    pub fn recycle(&mut self, frame: Frame) {
        debug_assert!(self.free.len() < self.free.capacity(), "more frames than the UMEM has");
        self.free.push(frame);
    }

    /// Returns how many frames are on the TX ring or in the kernel, not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.tx.as_ref().map_or(0, |t| t.in_flight)
    }

    /// Completion ring → free list: takes up to `max` completed frames. Returns how many.
    pub fn reclaim(&mut self, max: u32) -> u32 {
        let Some(tx) = self.tx.as_mut() else { return 0 };
        let n = tx.comp.available(max);
        for i in 0..n {
            // The kernel completes only addresses we put on the TX ring, all inside the UMEM.
            if let Some((frame, _)) = self.geometry.reclaim(tx.comp.get(i)) {
                self.free.push(frame);
            }
        }
        if n > 0 {
            tx.comp.release(n);
            tx.in_flight = tx.in_flight.saturating_sub(n);
        }
        n
    }

    /// Free list → fill ring, keeping what is left of the reserve (the reserve less the frames
    /// built and still in flight: those came out of it, and holding back RX-returned frames to
    /// make up for them would drain the fill ring while the output is slow); wakes the kernel if
    /// it asked for it. Returns the wakeup's outcome (`Done` when none was needed).
    pub fn refill(&mut self) -> Kick {
        let keep = self.fill_reserve.saturating_sub(self.in_flight() as usize);
        let Some(rx) = self.rx.as_mut() else { return Kick::Done };
        let want = self.free.len().saturating_sub(keep) as u32;
        if want == 0 {
            return Kick::Done;
        }
        let n = rx.fill.free(want).min(want);
        if n == 0 {
            return Kick::Done;
        }
        for _ in 0..n {
            let frame = self.free.pop().expect("counted above");
            rx.fill.push(self.geometry.addr(&frame, 0));
        }
        rx.fill.submit();
        if rx.fill.needs_wakeup() {
            return sys::kick_rx(self.fds.rx());
        }
        Kick::Done
    }

    /// Starts an RX burst of at most `max` frames; returns how many are ready. Take them with
    /// [`Port::rx_next`], then give the ring entries back with [`Port::rx_release`] (one store
    /// for the burst). Entries not taken stay for the next burst.
    #[inline]
    pub fn rx_acquire(&mut self, max: u32) -> u32 {
        let Some(rx) = self.rx.as_mut() else { return 0 };
        if rx.taken > 0 {
            rx.ring.release(rx.taken);
        }
        rx.taken = 0;
        rx.ready = rx.ring.available(max);
        rx.ready
    }

    /// Takes the next frame of the burst: its token and where its data is, or the bad
    /// descriptor (outside the UMEM, or running past its chunk) to count.
    #[inline]
    pub fn rx_next(&mut self) -> Option<Result<Received, BadDescriptor>> {
        let rx = self.rx.as_mut()?;
        if rx.taken == rx.ready {
            return None;
        }
        let desc = rx.ring.get(rx.taken);
        rx.taken += 1;
        Some(self.geometry.received(desc))
    }

    /// Ends the RX burst: releases the entries taken.
    #[inline]
    pub fn rx_release(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        if rx.taken > 0 {
            rx.ring.release(rx.taken);
        }
        rx.taken = 0;
        rx.ready = 0;
    }

    /// Returns how many frames the TX ring takes now, at most `want` (the kernel's consumer
    /// index is re-read only when the cached view has fewer).
    #[inline]
    pub fn tx_room(&mut self, want: u32) -> u32 {
        self.tx.as_mut().map_or(0, |t| t.ring.free(want).min(want))
    }

    /// Puts `len` bytes of `frame` starting at `offset` on the TX ring (visible to the kernel
    /// at [`Port::tx_submit`]). Gives the frame back when the ring is full, the port does not
    /// transmit, or the bytes do not lie inside the chunk.
    #[inline]
    pub fn tx_push(&mut self, frame: Frame, offset: u32, len: u32) -> Result<(), Frame> {
        let Some(tx) = self.tx.as_mut() else { return Err(frame) };
        if u64::from(offset) + u64::from(len) > u64::from(self.geometry.frame_size()) || tx.ring.free(1) == 0 {
            return Err(frame);
        }
        tx.ring.push(Desc { addr: self.geometry.addr(&frame, offset), len, options: 0 });
        tx.in_flight += 1;
        Ok(())
    }

    /// Publishes the frames pushed to the TX ring.
    #[inline]
    pub fn tx_submit(&mut self) {
        if let Some(tx) = self.tx.as_mut() {
            tx.ring.submit();
        }
    }

    /// One `sendto` on the TX socket (copy mode transmits inside it, a budget at a time).
    pub fn kick_tx(&self) -> Kick {
        sys::kick_tx(self.fds.tx())
    }

    /// Makes the kernel transmit what is on the TX ring, if anything (`sent` frames were just
    /// submitted, or earlier ones are outstanding): in zero-copy mode only when the kernel asked
    /// for a wakeup; in copy mode up to 8 `sendto`s while frames remain (EAGAIN means "call
    /// again"). Returns the first failure, else the last call's outcome (`Done` when no call was
    /// needed).
    pub fn flush_tx(&self, sent: u32) -> Kick {
        let Some(tx) = self.tx.as_ref() else { return Kick::Done };
        if sent == 0 && tx.ring.outstanding() == 0 {
            return Kick::Done;
        }
        if tx.zero_copy && !tx.ring.needs_wakeup() {
            return Kick::Done;
        }
        let mut last = Kick::Done;
        for _ in 0..KICKS_PER_FLUSH {
            last = self.kick_tx();
            if matches!(last, Kick::Failed(_) | Kick::Down) || tx.ring.outstanding() == 0 {
                break;
            }
        }
        last
    }

    /// Waits up to `timeout` for received frames; returns whether some arrived.
    pub fn wait_readable(&self, timeout: Duration) -> bool {
        match &self.bell {
            Some(bell) => bell.wait(|| self.rx_has_ready(), None, timeout),
            None => sys::poll_readable(self.fds.rx(), timeout),
        }
    }

    /// Waits up to `timeout` for received frames or for `other` to become readable; returns
    /// whether `other` may be readable (false only when the wait saw that it was not).
    pub fn wait_readable_or(&self, other: BorrowedFd<'_>, timeout: Duration) -> bool {
        match &self.bell {
            Some(bell) => {
                bell.wait(|| self.rx_has_ready(), Some(other), timeout);
                true
            }
            None => sys::poll_readable2(self.fds.rx(), other, timeout),
        }
    }

    /// Whether the RX ring holds entries not released yet (a fed port's wait checks it).
    fn rx_has_ready(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| rx.ring.has_ready())
    }

    /// The socket that owns the UMEM (for the XSKMAP and for epoll).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fds.rx()
    }

    /// Whether the owner socket was bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        match &self.fds {
            Fds::Kernel { owner, .. } => owner.zero_copy(),
            #[cfg(any(test, feature = "testing"))]
            Fds::Memory(_) => false,
        }
    }

    /// Handles that read the kernel statistics of the port's sockets from another thread.
    ///
    /// # Errors
    /// When a socket's fd cannot be duplicated.
    pub fn stats_handles(&self) -> std::io::Result<Vec<StatsHandle>> {
        match &self.fds {
            Fds::Kernel { owner, shared } => {
                std::iter::once(owner).chain(shared.as_ref()).map(Socket::stats_handle).collect()
            }
            #[cfg(any(test, feature = "testing"))]
            Fds::Memory(_) => Ok(Vec::new()),
        }
    }
}

impl Fds {
    /// The socket with the RX and fill rings (the UMEM owner).
    fn rx(&self) -> BorrowedFd<'_> {
        match self {
            Fds::Kernel { owner, .. } => owner.fd(),
            #[cfg(any(test, feature = "testing"))]
            Fds::Memory(fd) => fd.as_fd(),
        }
    }

    /// The socket with the TX and completion rings.
    fn tx(&self) -> BorrowedFd<'_> {
        match self {
            Fds::Kernel { owner, shared } => shared.as_ref().unwrap_or(owner).fd(),
            #[cfg(any(test, feature = "testing"))]
            Fds::Memory(fd) => fd.as_fd(),
        }
    }
}
