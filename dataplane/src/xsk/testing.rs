//! AF_XDP without a kernel, for tests (s2n-quic-xdp's `testing` module): ring pairs over
//! anonymous memory, and a [`Port`] over in-memory rings whose other ends a test [`Kernel`] holds
//! (its RX side through the production [`Injector`]); [`fed_port`] hands the injector out
//! instead, as the offline feed gets it.
//!
//! Compiled for the crate's own tests and, with the `testing` feature, for other crates' tests.
//!
//! ```text
//!   Port (the code under test)                    Kernel (the test's hands)
//!   fill ring producer ──────────────────────────► consumer: deliver() takes a chunk, writes it,
//!   RX ring consumer   ◄────────────────────────── producer: ... and posts an RX descriptor
//!   TX ring producer   ──────────────────────────► consumer: transmit() copies the bytes out,
//!   completion consumer ◄───────────────────────── producer: ... and posts the completions
//!   sendto / recvfrom / poll (sys::loop_call) ────► counted in calls(), failed on demand
//! ```
//!
//! The kernel's loop-call handler is installed on the calling thread while the [`Kernel`] lives;
//! use one in-memory port per thread (each test runs on its own thread).

use std::{
    cell::Cell,
    os::fd::{AsRawFd, RawFd},
    rc::Rc,
};

use super::{
    inject::{Injector, RxBell},
    port::Port,
    ring::{self, Consumer, Memory, Producer},
    sys::{self, seam, LoopCall, SyscallError},
    umem::{Geometry, Umem, XDP_PACKET_HEADROOM},
    Desc,
};

/// Returns a producer and a consumer over the same anonymous ring of `size` entries (a power of
/// two), both indices starting at `start` (start near `u32::MAX` to test the wrap-around).
///
/// # Panics
/// If the memory cannot be mapped.
pub fn ring_pair<T: Copy>(size: u32, start: u32) -> (Producer<T>, Consumer<T>) {
    ring::pair(size, start).expect("mapping a test ring")
}

/// The chunk size of in-memory ports (the copier's).
pub const FRAME_SIZE: u32 = 4096;

/// Opens a port over in-memory rings of `ring_size` entries and a UMEM of `frames` chunks,
/// keeping `fill_reserve` frames out of the fill ring, and returns it with the test kernel that
/// holds the rings' other ends. As [`Port::open`] does, the fill ring is primed. The port is in
/// copy mode (every flush kicks).
///
/// # Panics
/// If the memory cannot be mapped.
pub fn port(frames: u32, ring_size: u32, fill_reserve: u32) -> (Port, Kernel) {
    let (port, injector, mut kernel) = build(frames, ring_size, fill_reserve, false);
    kernel.rx = Some(injector);
    (port, kernel)
}

/// As [`port`], but the RX side is the caller's: frames go in through the returned
/// [`Injector`] (from any thread, as the offline feed does), and the port's waits sleep on its
/// bell as a port from [`Port::open_fed`] does (a real `poll` with its timeout). The kernel
/// handles the TX side only.
///
/// # Panics
/// If the memory cannot be mapped.
pub fn fed_port(frames: u32, ring_size: u32, fill_reserve: u32) -> (Port, Injector, Kernel) {
    build(frames, ring_size, fill_reserve, true)
}

fn build(frames: u32, ring_size: u32, fill_reserve: u32, fed: bool) -> (Port, Injector, Kernel) {
    let setup = || -> Result<(Port, Injector, Kernel), SyscallError> {
        let umem = Umem::new(frames, FRAME_SIZE)?;
        let (memory, geometry) = (umem.memory(), umem.geometry());
        let (fill_p, fill_c) = ring::pair::<u64>(ring_size, 0)?;
        let (rx_p, rx_c) = ring::pair::<Desc>(ring_size, 0)?;
        let (tx_p, tx_c) = ring::pair::<Desc>(ring_size, 0)?;
        let (comp_p, comp_c) = ring::pair::<u64>(ring_size, 0)?;
        let fd = sys::eventfd()?;
        let calls = Rc::new(Cell::new(Calls::default()));
        let fail = Rc::new(Cell::new(None));
        let seam = seam::replace(handler(fd.as_raw_fd(), calls.clone(), fail.clone()));
        let bell = RxBell::new()?;
        let injector = Injector::new(&umem, fill_c, rx_p, bell.clone());
        let port = Port::in_memory(umem, (rx_c, fill_p), (tx_p, comp_c), fill_reserve, fd, fed.then_some(bell));
        let kernel = Kernel { memory, geometry, rx: None, tx: tx_c, comp: comp_p, calls, fail, _seam: seam };
        Ok((port, injector, kernel))
    };
    setup().expect("setting up an in-memory port")
}

/// The loop calls the port made on its stand-in fd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// `sendto` (TX kicks).
    pub kick_tx: u32,
    /// `recvfrom` (fill-ring kicks).
    pub kick_rx: u32,
    /// `poll`s (answered at once: nothing readable).
    pub polls: u32,
}

/// The loop-call handler of an in-memory port: counts the calls on `fd`, fails kicks with the
/// errno in `fail` if set; lets every other call through.
fn handler(
    fd: RawFd,
    calls: Rc<Cell<Calls>>,
    fail: Rc<Cell<Option<i32>>>,
) -> impl FnMut(&mut LoopCall<'_>) -> Option<sys::RawResult> {
    move |call| {
        let mut c = calls.get();
        let kick = match call {
            LoopCall::KickTx(f) if f.as_raw_fd() == fd => {
                c.kick_tx += 1;
                true
            }
            LoopCall::KickRx(f) if f.as_raw_fd() == fd => {
                c.kick_rx += 1;
                true
            }
            LoopCall::Poll(fds, _) if fds.iter().any(|p| p.fd == fd) => {
                c.polls += 1;
                false
            }
            _ => return None,
        };
        calls.set(c);
        Some(match fail.get() {
            Some(errno) if kick => Err(errno),
            _ => Ok(0),
        })
    }
}

/// The kernel's side of an in-memory port: the other end of each ring, and the UMEM.
pub struct Kernel {
    memory: Memory,
    geometry: Geometry,
    /// The RX side (`None` for a [`fed_port`]: the caller holds it).
    rx: Option<Injector>,
    tx: Consumer<Desc>,
    comp: Producer<u64>,
    calls: Rc<Cell<Calls>>,
    fail: Rc<Cell<Option<i32>>>,
    _seam: seam::Guard,
}

impl Kernel {
    /// Receives a frame: takes a chunk from the fill ring, writes `meta` (the XDP program's
    /// metadata) and `data` after the headroom as copy mode does, and posts the RX descriptor.
    /// Returns false, doing nothing, when the fill ring is empty or the RX ring full (the kernel
    /// would count `rx_fill_ring_empty` / `rx_ring_full`).
    ///
    /// # Panics
    /// If the port put an address outside the UMEM on the fill ring, or the frame does not fit.
    pub fn deliver_with_meta(&mut self, meta: &[u8], data: &[u8]) -> bool {
        let rx = self.injector();
        if !rx.deliver(meta, data.len(), |buf| buf.copy_from_slice(data)) {
            return false;
        }
        rx.submit();
        true
    }

    /// Receives a frame without metadata (see [`Kernel::deliver_with_meta`]).
    pub fn deliver(&mut self, data: &[u8]) -> bool {
        self.deliver_with_meta(&[], data)
    }

    /// Posts an RX descriptor whose data runs past the end of its chunk (taken from the fill
    /// ring, so the port gets it back). Returns false when no chunk or no RX slot is free.
    pub fn deliver_overlong(&mut self) -> bool {
        let size = self.geometry.frame_size();
        let rx = self.injector();
        let Some(base) = rx.take_chunk() else { return false };
        rx.post(base + u64::from(XDP_PACKET_HEADROOM), size);
        rx.submit();
        true
    }

    /// Posts an RX descriptor pointing past the end of the UMEM (no chunk involved). Returns
    /// false when the RX ring is full.
    pub fn deliver_outside(&mut self) -> bool {
        let rx = self.injector();
        if !rx.has_room() {
            return false;
        }
        let outside = rx.umem_len() as u64 + u64::from(XDP_PACKET_HEADROOM);
        rx.post(outside, 60);
        rx.submit();
        true
    }

    /// Transmits: takes every frame on the TX ring that the completion ring has room for,
    /// returns their bytes in ring order and posts their completions.
    ///
    /// # Panics
    /// If a descriptor does not lie inside one chunk of the UMEM.
    pub fn transmit(&mut self) -> Vec<Vec<u8>> {
        let room = self.comp.free(self.tx.size());
        let n = self.tx.ready_now().min(room);
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let d = self.tx.get(i);
            let (_, offset) = self.geometry.reclaim(d.addr).expect("TX descriptor inside the UMEM");
            assert!(offset + d.len <= self.geometry.frame_size(), "TX descriptor runs past its chunk");
            let base = d.addr - u64::from(offset);
            out.push(self.chunk_mut(base)[offset as usize..(offset + d.len) as usize].to_vec());
            self.comp.push(d.addr);
        }
        self.tx.release(n);
        self.comp.submit();
        out
    }

    /// Returns how many frames are on the TX ring, not taken yet.
    pub fn tx_pending(&mut self) -> u32 {
        self.tx.ready_now()
    }

    /// Returns how many chunks the port has put on the fill ring that no frame has used yet.
    pub fn fill_pending(&mut self) -> u32 {
        self.injector().fill_pending()
    }

    /// Sets or clears the fill ring's `XDP_RING_NEED_WAKEUP`.
    pub fn set_fill_need_wakeup(&mut self, on: bool) {
        self.injector().fill().set_need_wakeup(on);
    }

    /// Sets or clears the TX ring's `XDP_RING_NEED_WAKEUP`.
    pub fn set_tx_need_wakeup(&self, on: bool) {
        self.tx.set_need_wakeup(on);
    }

    /// Returns the loop calls made so far.
    pub fn calls(&self) -> Calls {
        self.calls.get()
    }

    /// Makes every later kick fail with `errno` (`None`: succeed again).
    pub fn fail_kicks(&self, errno: Option<i32>) {
        self.fail.set(errno);
    }

    /// The RX side.
    ///
    /// # Panics
    /// For a [`fed_port`]'s kernel (the caller holds the injector).
    fn injector(&mut self) -> &mut Injector {
        self.rx.as_mut().expect("a fed port's kernel has no RX side: deliver through the injector")
    }

    /// The chunk starting at `base`, which the kernel owns: on the TX ring and not yet
    /// completed.
    fn chunk_mut(&mut self, base: u64) -> &mut [u8] {
        let size = self.geometry.frame_size() as usize;
        assert!(base as usize + size <= self.memory.len() && (base as usize).is_multiple_of(size), "not a chunk");
        // SAFETY: here the test plays the kernel. The chunk lies inside the live UMEM mapping
        // (checked above; `memory` keeps it alive). The port gave its token up when it pushed the
        // chunk to the TX ring and mints a new one only when it reads the completion descriptor
        // posted after this access, so the port holds no reference to the chunk now; `&mut self`
        // makes this the only one on the kernel's side.
        unsafe { std::slice::from_raw_parts_mut(self.memory.base().as_ptr().add(base as usize), size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xsk::Kick;

    #[test]
    fn a_frame_goes_round() {
        let (mut port, mut kernel) = port(4, 4, 0);
        assert_eq!((port.free_frames(), kernel.fill_pending()), (0, 4), "primed at open");
        assert!(kernel.deliver_with_meta(&[9; 16], b"hello"));
        assert_eq!(kernel.fill_pending(), 3);

        assert_eq!(port.rx_acquire(64), 1);
        let mut rx = port.rx_next().unwrap().unwrap();
        assert!(port.rx_next().is_none());
        port.rx_release();
        assert_eq!((rx.offset, rx.len), (XDP_PACKET_HEADROOM, 5));
        assert_eq!(port.umem().data(&rx), b"hello");
        assert_eq!(port.umem().meta::<16>(&rx), Some(&[9; 16]));
        port.umem_mut().data_mut(&mut rx)[0] = b'j';

        // Transmit from one byte in: the descriptor carries the offset.
        assert_eq!(port.tx_room(64), 4);
        port.tx_push(rx.frame, rx.offset + 1, 4).unwrap();
        port.tx_submit();
        assert_eq!(port.in_flight(), 1);
        assert_eq!(port.flush_tx(1), Kick::Done);
        // Copy mode kicks while frames remain on the ring, 8 times at most; this kernel takes
        // them only when told to.
        assert_eq!(kernel.calls().kick_tx, 8);
        assert_eq!(kernel.transmit(), vec![b"ello".to_vec()]);

        assert_eq!(port.reclaim(64), 1);
        assert_eq!((port.in_flight(), port.free_frames()), (0, 1));
        assert_eq!(port.refill(), Kick::Done);
        assert_eq!((port.free_frames(), kernel.fill_pending()), (0, 4));
        assert_eq!(kernel.calls().kick_rx, 0, "no wakeup asked for");
    }

    #[test]
    fn the_reserve_stays_out_of_the_fill_ring() {
        let (mut port, mut kernel) = port(8, 8, 3);
        assert_eq!((port.free_frames(), kernel.fill_pending()), (3, 5));
        let f = port.take_free().unwrap();
        assert_eq!(port.refill(), Kick::Done);
        assert_eq!(kernel.fill_pending(), 5, "2 free frames are below the reserve");
        port.recycle(f);
    }

    #[test]
    fn fill_wakeups_are_made_and_failures_reported() {
        let (mut port, mut kernel) = port(4, 4, 0);
        assert!(kernel.deliver(b"x"));
        assert_eq!(port.rx_acquire(64), 1);
        let rx = port.rx_next().unwrap().unwrap();
        port.rx_release();
        port.recycle(rx.frame);
        kernel.set_fill_need_wakeup(true);
        kernel.fail_kicks(Some(libc::EINVAL));
        assert_eq!(port.refill(), Kick::Failed(libc::EINVAL));
        assert_eq!(kernel.calls().kick_rx, 1);
        kernel.fail_kicks(Some(libc::EAGAIN));
        assert_eq!(port.flush_tx(0), Kick::Done, "nothing to send: no kick");
        assert!(!port.wait_readable(std::time::Duration::from_millis(50)), "the poll is answered at once");
        assert_eq!(kernel.calls(), Calls { kick_tx: 0, kick_rx: 1, polls: 1 });
    }

    #[test]
    fn bad_descriptors_are_reported_and_their_chunks_come_back() {
        let (mut port, mut kernel) = port(4, 4, 0);
        assert!(kernel.deliver_outside());
        assert!(kernel.deliver_overlong());
        assert_eq!(port.rx_acquire(64), 2);
        let outside = port.rx_next().unwrap().unwrap_err();
        assert!(outside.frame.is_none());
        let overlong = port.rx_next().unwrap().unwrap_err();
        assert_eq!(overlong.len, FRAME_SIZE);
        port.recycle(overlong.frame.expect("a chunk of the UMEM"));
        port.rx_release();
        assert_eq!(port.free_frames() as u32 + kernel.fill_pending(), 4, "no chunk lost");
    }

    #[test]
    fn a_fed_port_sleeps_until_the_injector_posts() {
        let (port, mut injector, _kernel) = fed_port(8, 8, 0);
        // Posted but not submitted: the port does not see it, and a wait times out.
        assert!(injector.deliver(&[], 3, |b| b.copy_from_slice(b"abc")));
        assert!(!port.wait_readable(std::time::Duration::from_millis(20)));
        injector.submit();
        // Submitted before the wait: it returns at once.
        let t = std::time::Instant::now();
        assert!(port.wait_readable(std::time::Duration::from_secs(5)));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));

        // Submitted from another thread while the port sleeps: it wakes.
        let (mut port, mut injector, _kernel) = fed_port(8, 8, 0);
        let feeder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(injector.deliver(&[7; 16], 5, |b| b.copy_from_slice(b"hello")));
            injector.submit();
            injector
        });
        let t = std::time::Instant::now();
        assert!(port.wait_readable(std::time::Duration::from_secs(5)), "woken by the injector");
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "not by the timeout");
        let _injector = feeder.join().unwrap();
        assert_eq!(port.rx_acquire(64), 1);
        let rx = port.rx_next().unwrap().unwrap();
        assert_eq!((port.umem().data(&rx), port.umem().meta::<16>(&rx)), (&b"hello"[..], Some(&[7u8; 16])));
        port.recycle(rx.frame);
        port.rx_release();
    }

    #[test]
    fn a_full_tx_ring_gives_the_frame_back() {
        let (mut port, mut kernel) = port(4, 2, 2);
        let frames: Vec<_> = std::iter::from_fn(|| port.take_free()).collect();
        assert_eq!(frames.len(), 2);
        let mut rest = Vec::new();
        for f in frames {
            if let Err(f) = port.tx_push(f, 0, 60) {
                rest.push(f);
            }
        }
        assert!(rest.is_empty(), "a ring of 2 takes 2");
        port.tx_submit();
        let mut f = None;
        // Fill the ring from a received frame too: now it is full.
        assert!(kernel.deliver(b"y"));
        assert_eq!(port.rx_acquire(1), 1);
        if let Some(Ok(rx)) = port.rx_next() {
            f = Some(port.tx_push(rx.frame, 0, 60).unwrap_err());
        }
        port.rx_release();
        let f = f.expect("a frame back");
        // Nor does a range outside the chunk go.
        let f = port.tx_push(f, FRAME_SIZE - 10, 11).unwrap_err();
        port.recycle(f);
        assert_eq!(kernel.transmit().len(), 2);
        assert_eq!(port.reclaim(64), 2);
        assert_eq!(port.free_frames() as u32 + kernel.fill_pending(), 4);
    }
}
