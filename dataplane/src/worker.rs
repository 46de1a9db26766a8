//! The pinned poll-mode worker (DPDK l2fwd's loop shape, on AF_XDP).
//!
//! One worker per RX queue owns a UMEM, the RX socket on the capture interface's queue and (when
//! the output interface differs) a TX socket on the output interface sharing that UMEM. Per
//! iteration: recycle completions into the free list, top up the fill ring, take a batch from
//! the RX ring, give each frame a verdict (rewrite and transmit, or drop with a named reason), push
//! the batch to the TX ring and kick the kernel. Frames move as tokens (their UMEM address); no
//! frame is ever copied in userspace.
//!
//! The loop busy-polls while there is work and blocks in `poll()` when the rings stay empty, so an
//! idle copier costs ~0 % CPU. It allocates nothing, takes no lock and logs nothing per frame:
//! every outcome is a counter, published to the stats thread a few times per millisecond at most.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    rewrite::{self, ChecksumMode, Rewrite, RewriteError},
    stats::{Counters, Drop, Published, MALFORMED_SLOTS},
    wire::{self, parse::Parsed},
    xsk::{Desc, Kick, Socket, Umem},
};

/// Frames taken from the RX ring per iteration.
pub const BATCH: u32 = 64;
/// Empty iterations before the worker blocks in `poll()`.
const SPIN_BEFORE_SLEEP: u32 = 256;
/// How long one `poll()` blocks, so the stop flag is seen promptly.
const SLEEP_MS: i32 = 50;
/// Publish counters at least every this many iterations.
const PUBLISH_EVERY: u32 = 1024;

/// One transfer as the worker matches and rewrites it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Destination address to match (`None` = any).
    pub online_ip: Option<std::net::IpAddr>,
    /// Destination port to match.
    pub online_port: u16,
    /// What to write into a matching frame.
    pub rewrite: Rewrite,
}

/// What happens to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit `len` bytes starting `start` bytes into the received frame.
    Tx {
        /// Offset of the new frame start from the received data start.
        start: usize,
        /// New length.
        len: usize,
    },
    /// Drop, counting the reason.
    Drop(Drop),
    /// Drop as malformed, counting the parse error.
    Malformed(wire::Error),
}

/// The stateless per-frame logic: match a transfer, rewrite, pick a verdict. Pure (no I/O, no
/// clock), so it is unit-tested with literal frames.
#[derive(Debug, Clone)]
pub struct Stateless {
    routes: Vec<Route>,
    checksum: ChecksumMode,
    max_len: usize,
}

impl Stateless {
    /// Creates the logic; `max_len` is the largest frame the output link takes (MTU + 14).
    pub fn new(routes: Vec<Route>, checksum: ChecksumMode, max_len: usize) -> Self {
        Self { routes, checksum, max_len }
    }

    /// Decides the fate of `frame` (the received bytes, rewritten in place on `Tx`).
    #[inline]
    pub fn handle(&self, frame: &mut [u8]) -> Verdict {
        let parsed: Parsed = match wire::parse::parse(frame) {
            Ok(Some(p)) => p,
            Ok(None) => return Verdict::Drop(Drop::NotTcp),
            Err(e) => return Verdict::Malformed(e),
        };
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.online_port == parsed.dst_port && r.online_ip.is_none_or(|ip| ip == parsed.dst_ip))
        else {
            return Verdict::Drop(Drop::NoTransfer);
        };
        match rewrite::apply(frame, &parsed, &route.rewrite, self.checksum) {
            Ok((_, len)) if len > self.max_len => Verdict::Drop(Drop::TooBig),
            Ok((start, len)) => Verdict::Tx { start, len },
            Err(RewriteError::FamilyMismatch) => Verdict::Drop(Drop::FamilyMismatch),
            #[allow(unreachable_patterns)]
            Err(_) => Verdict::Drop(Drop::Malformed),
        }
    }
}

/// Everything one worker owns.
pub struct Worker {
    /// Queue index (for names and logs).
    pub queue: u32,
    umem: Umem,
    rx: Socket,
    /// A separate TX socket sharing the UMEM; `None` when RX and TX are the same interface.
    tx: Option<Socket>,
    logic: Stateless,
    free: Vec<u64>,
    in_flight: u32,
    counters: Counters,
    published: Arc<Published>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    /// Assembles a worker. All of the UMEM's frames start in the free list.
    pub fn new(
        queue: u32,
        umem: Umem,
        rx: Socket,
        tx: Option<Socket>,
        logic: Stateless,
        published: Arc<Published>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let mut free = Vec::with_capacity(umem.frames() as usize);
        // Hand out frames highest first so the first ones used are at the start of the area.
        free.extend((0..umem.frames()).rev().map(|i| umem.frame_addr(i)));
        Self { queue, umem, rx, tx, logic, free, in_flight: 0, counters: Counters::default(), published, stop }
    }

    /// The worker's published counters (read them from any thread).
    pub fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// Runs the poll loop until the stop flag is set; returns the final counters.
    pub fn run(mut self) -> Counters {
        let mut idle = 0u32;
        let mut since_publish = 0u32;
        let mut batch = [Desc { addr: 0, len: 0, options: 0 }; BATCH as usize];
        while !self.stop.load(Ordering::Relaxed) {
            self.reclaim();
            self.refill();
            let got = self.receive(&mut batch);
            let sent = self.transmit(&batch[..got]);
            self.kick(sent);
            since_publish += 1;
            if got == 0 && self.in_flight == 0 {
                idle += 1;
                if idle >= SPIN_BEFORE_SLEEP {
                    self.published.publish(&self.counters);
                    since_publish = 0;
                    self.counters.idle_waits += 1;
                    self.rx.wait_readable(SLEEP_MS);
                    idle = 0;
                }
            } else {
                idle = 0;
            }
            if since_publish >= PUBLISH_EVERY {
                self.published.publish(&self.counters);
                since_publish = 0;
            }
        }
        // Let what is on the TX ring go out before we report.
        let deadline = Instant::now() + Duration::from_millis(200);
        while self.in_flight > 0 && Instant::now() < deadline {
            self.kick(0);
            self.reclaim();
            std::thread::yield_now();
        }
        self.published.publish(&self.counters);
        self.counters
    }

    /// Completion ring → free list.
    fn reclaim(&mut self) {
        let sock = self.tx.as_mut().unwrap_or(&mut self.rx);
        let n = sock.comp.available(4 * BATCH);
        for i in 0..n {
            self.free.push(sock.comp.get(i));
        }
        if n > 0 {
            sock.comp.release(n);
            self.in_flight -= n;
            self.counters.tx_completed += u64::from(n);
        }
    }

    /// Free list → fill ring.
    fn refill(&mut self) {
        let want = self.free.len() as u32;
        if want == 0 {
            return;
        }
        let n = self.rx.fill.free(want).min(want);
        if n == 0 {
            return;
        }
        for _ in 0..n {
            let addr = self.free.pop().expect("counted above");
            self.rx.fill.push(addr);
        }
        self.rx.fill.submit();
        if self.rx.fill.needs_wakeup() {
            let _ = self.rx.kick_rx();
        }
    }

    /// RX ring → `batch` (verdicts applied in place). Returns how many entries of `batch` are
    /// frames to transmit.
    fn receive(&mut self, batch: &mut [Desc; BATCH as usize]) -> usize {
        let rx = self.rx.rx.as_mut().expect("the RX socket has an RX ring");
        let n = rx.available(BATCH);
        let mut out = 0;
        for i in 0..n {
            let desc = rx.get(i);
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += u64::from(desc.len);
            let verdict = match self.umem.from_addr_mut(desc.addr) {
                Some(chunk) if chunk.len() >= desc.len as usize => self.logic.handle(&mut chunk[..desc.len as usize]),
                _ => Verdict::Drop(Drop::BadDescriptor),
            };
            match verdict {
                Verdict::Tx { start, len } => {
                    batch[out] = Desc { addr: desc.addr + start as u64, len: len as u32, options: 0 };
                    out += 1;
                }
                Verdict::Drop(why) => {
                    self.counters.drop(why);
                    self.free.push(desc.addr);
                }
                Verdict::Malformed(e) => {
                    self.counters.drop(Drop::Malformed);
                    self.counters.malformed[(e as usize).min(MALFORMED_SLOTS - 1)] += 1;
                    self.free.push(desc.addr);
                }
            }
        }
        if n > 0 {
            rx.release(n);
        }
        out
    }

    /// `batch` → TX ring; frames that do not fit are dropped and counted. Returns how many went.
    fn transmit(&mut self, batch: &[Desc]) -> u32 {
        if batch.is_empty() {
            return 0;
        }
        let tx = self.tx.as_mut().unwrap_or(&mut self.rx).tx.as_mut().expect("the TX socket has a TX ring");
        let room = tx.free(batch.len() as u32).min(batch.len() as u32) as usize;
        for d in &batch[..room] {
            tx.push(*d);
            self.counters.tx_frames += 1;
            self.counters.tx_bytes += u64::from(d.len);
        }
        tx.submit();
        for d in &batch[room..] {
            self.counters.drop(Drop::TxRingFull);
            self.free.push(d.addr);
        }
        self.in_flight += room as u32;
        room as u32
    }

    /// Makes the kernel transmit what is on the TX ring (copy mode sends inside `sendto`, a
    /// budget at a time: EAGAIN means "call again").
    fn kick(&mut self, sent: u32) {
        let sock = self.tx.as_ref().unwrap_or(&self.rx);
        let Some(tx) = sock.tx.as_ref() else { return };
        if sent == 0 && tx.outstanding() == 0 {
            return;
        }
        if sock.zero_copy() && !tx.needs_wakeup() {
            return;
        }
        for _ in 0..8 {
            if let Kick::Failed(_) = sock.kick_tx() {
                self.counters.tx_kick_errors += 1;
                break;
            }
            if tx.outstanding() == 0 {
                break;
            }
        }
    }
}
