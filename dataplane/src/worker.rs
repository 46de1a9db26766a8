//! The pinned poll-mode worker (DPDK l2fwd's loop shape, on AF_XDP).
//!
//! One worker per RX queue owns a UMEM, the RX socket on the capture interface's queue and (when
//! the output interface differs) a TX socket on the output interface sharing that UMEM. Per
//! iteration: recycle completions into the free list, top up the fill ring, take a batch from
//! the RX ring, give each frame a verdict (rewrite and transmit, or drop with a named reason), push
//! the batch to the TX ring and kick the kernel. Frames move as tokens (their UMEM address); no
//! frame is ever copied in userspace.
//!
//! In session mode the worker owns a shard of the sessions (those whose client packets arrive on
//! its queue): each captured frame is copied out and handed to the session engine, which buffers
//! it and builds the frames to send in free UMEM frames; response headers arrive from the control
//! thread through a lock-free queue, and the engine's timers run every iteration.
//!
//! The loop busy-polls while there is work and blocks in `poll()` when the rings stay empty (on
//! the RX socket and, in session mode, on a doorbell the control thread rings when a header
//! arrives), so an idle copier costs ~0 % CPU. It allocates nothing, takes no lock and logs nothing per frame:
//! every outcome is a counter, published to the stats thread a few times per millisecond at most.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use std::net::{IpAddr, SocketAddrV4};

use control::{
    copier::{SessionAdd, WorkerLink},
    latency::{Metric, Recorder, RecorderExchange},
};

use crate::{
    bpf::meta,
    pcap_out::PcapTap,
    production::ProductionTable,
    rewrite::{self, ChecksumMode, Rewrite, RewriteError},
    sample::Sampler,
    session::{self, ResponseHeader},
    stats::{Counters, DropReason, Published},
    tuples::Tuples,
    wire::{self, parse::Parsed},
    xsk::{Consumer, Desc, Doorbell, Kick, Producer, Socket, Umem},
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
    Drop(DropReason),
    /// Drop as malformed, counting the parse error.
    Malformed(wire::Error),
}

/// The stateless per-frame logic: match a transfer, sample, rewrite, pick a verdict. Pure (no
/// I/O, no clock of its own: `now` is the worker's coarse clock), so it is unit-tested with
/// literal frames.
#[derive(Debug, Clone)]
pub struct Stateless {
    routes: Vec<Route>,
    checksum: ChecksumMode,
    max_len: usize,
    sampler: Sampler,
}

impl Stateless {
    /// Creates the logic; `max_len` is the largest frame the output link takes (MTU + 14).
    pub fn new(routes: Vec<Route>, checksum: ChecksumMode, max_len: usize, sampler: Sampler) -> Self {
        Self { routes, checksum, max_len, sampler }
    }

    /// Decides the fate of `frame` (the received bytes, rewritten in place on `Tx`).
    #[inline]
    pub fn handle(&mut self, frame: &mut [u8], now: Instant) -> Verdict {
        let parsed: Parsed = match wire::parse::parse(frame) {
            Ok(Some(p)) => p,
            Ok(None) => return Verdict::Drop(DropReason::NotTcp),
            Err(e) => return Verdict::Malformed(e),
        };
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.online_port == parsed.dst_port && r.online_ip.is_none_or(|ip| ip == parsed.dst_ip))
        else {
            return Verdict::Drop(DropReason::NoTransfer);
        };
        if !self.sampler.keep(now, (parsed.src_ip, parsed.src_port), (parsed.dst_ip, parsed.dst_port)) {
            return Verdict::Drop(DropReason::SampledOut);
        }
        match rewrite::apply(frame, &parsed, &route.rewrite, self.checksum) {
            Ok((_, len)) if len > self.max_len => Verdict::Drop(DropReason::TooBig),
            Ok((start, len)) => Verdict::Tx { start, len },
            Err(RewriteError::FamilyMismatch) => Verdict::Drop(DropReason::FamilyMismatch),
            Err(RewriteError::ParseMismatch) => Verdict::Drop(DropReason::ParseMismatch),
        }
    }
}

/// Session mode's per-worker parts.
pub struct Session {
    /// The TCP emulation of this worker's sessions.
    pub engine: session::Engine,
    /// `(online address, online port)` of each target, in the engine's target order.
    pub matches: Vec<(Option<IpAddr>, u16)>,
    /// Queues to and from the control thread.
    pub link: Arc<WorkerLink>,
    /// Rung by the control thread when a header arrives while we sleep.
    pub doorbell: Arc<Doorbell>,
    /// Wakes the control thread after queueing a session registration.
    pub wake_control: Arc<dyn Fn() + Send + Sync>,
    /// The capture carries the online server's responses too: production latency is measured
    /// through this table shared by the workers.
    pub production: Option<Arc<ProductionTable>>,
    /// The share of sessions replayed (-r, -g).
    pub sampler: Sampler,
    /// Client tuples of the replayed sessions (-n, -c, -f).
    pub tuples: Tuples,
    /// When the tuple pool is next swept for idle mappings.
    pub next_sweep: Instant,
}

/// What the worker does with captured frames.
pub enum Mode {
    /// Rewrite and forward each frame.
    Stateless(Stateless),
    /// Replay sessions.
    Session(Box<Session>),
}

/// One worker's latency recording: an interval recorder handed to the stats thread about once
/// a second through the lock-free exchange (no allocation, no lock).
pub struct WorkerLatency {
    /// Always `Some` outside `maybe_swap`.
    rec: Option<Box<Recorder>>,
    exchange: Arc<RecorderExchange>,
    index: usize,
    next_swap: Instant,
}

/// How often a worker hands its interval recorder over.
const SWAP_EVERY: Duration = Duration::from_secs(1);

impl WorkerLatency {
    /// Records into a fresh recorder, handing it over as worker `index`.
    pub fn new(exchange: Arc<RecorderExchange>, index: usize) -> Self {
        Self { rec: Some(Box::new(Recorder::new())), exchange, index, next_swap: Instant::now() + SWAP_EVERY }
    }

    fn maybe_swap(&mut self, now: Instant) {
        if now >= self.next_swap {
            self.next_swap = now + SWAP_EVERY;
            if let Some(full) = self.rec.take() {
                self.rec = Some(self.exchange.swap(self.index, full));
            }
        }
    }

    fn record(&mut self, m: Metric, ns: u64) {
        if let Some(r) = self.rec.as_mut() {
            r.record(m, ns);
        }
    }

    /// Hands the last, partial interval over (at exit).
    fn flush(&mut self) {
        if let Some(full) = self.rec.take() {
            self.rec = Some(self.exchange.swap(self.index, full));
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
    mode: Mode,
    free: Vec<u64>,
    /// Frames kept out of the fill ring for building frames (session mode).
    tx_reserve: usize,
    in_flight: u32,
    counters: Counters,
    published: Arc<Published>,
    stop: Arc<AtomicBool>,
    /// Copy of a captured frame for the session engine (allocated once).
    scratch: Box<[u8]>,
    /// Latency recording (`None` with --no-latency).
    latency: Option<WorkerLatency>,
    /// XDP arrival stamps of the frames in the current stateless TX batch.
    arrivals: [u64; BATCH as usize],
    /// A clock read at most every publish (for the stateless sampler's ramp).
    coarse_now: Instant,
    /// `--pcap-out`: a copy of every transmitted frame.
    pcap: Option<Arc<PcapTap>>,
}

/// The largest frame the engine may build in one UMEM chunk.
const MAX_BUILD: usize = 4096;

impl Worker {
    /// Assembles a worker. All of the UMEM's frames start in the free list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        queue: u32,
        umem: Umem,
        rx: Socket,
        tx: Option<Socket>,
        mode: Mode,
        published: Arc<Published>,
        stop: Arc<AtomicBool>,
        latency: Option<WorkerLatency>,
    ) -> Self {
        let mut free = Vec::with_capacity(umem.frames() as usize);
        // Hand out frames highest first so the first ones used are at the start of the area.
        free.extend((0..umem.frames()).rev().map(|i| umem.frame_addr(i)));
        let tx_reserve = match mode {
            Mode::Stateless(_) => 0,
            Mode::Session(_) => umem.frames() as usize / 2,
        };
        // Twice a frame: the captured copy, and the per-replica rewrite of it (-n, -c).
        let scratch = vec![0u8; 2 * umem.frame_size() as usize].into_boxed_slice();
        Self {
            queue,
            umem,
            rx,
            tx,
            mode,
            free,
            tx_reserve,
            in_flight: 0,
            counters: Counters::default(),
            published,
            stop,
            scratch,
            latency,
            arrivals: [0; BATCH as usize],
            coarse_now: Instant::now(),
            pcap: None,
        }
    }

    /// Copies every transmitted frame to `tap` (`--pcap-out`).
    pub fn with_pcap(mut self, tap: Option<Arc<PcapTap>>) -> Self {
        self.pcap = tap;
        self
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
        self.refill();
        self.published.ready.store(true, Ordering::Release);
        while !self.stop.load(Ordering::Relaxed) {
            self.reclaim();
            self.refill();
            let (busy, sent) = if matches!(self.mode, Mode::Stateless(_)) {
                let (received, to_send) = self.receive(&mut batch);
                if received > 0 {
                    self.published.rx_live.store(self.counters.rx_frames, Ordering::Relaxed);
                }
                let sent = self.transmit(&batch[..to_send]);
                (received > 0, sent)
            } else {
                let r = self.session_round();
                self.published.rx_live.store(self.counters.rx_frames, Ordering::Relaxed);
                r
            };
            self.kick(sent);
            since_publish += 1;
            if !busy && self.in_flight == 0 {
                idle += 1;
                if idle >= SPIN_BEFORE_SLEEP {
                    self.publish();
                    since_publish = 0;
                    self.counters.idle_waits += 1;
                    self.sleep();
                    idle = 0;
                }
            } else {
                idle = 0;
            }
            if since_publish >= PUBLISH_EVERY {
                self.publish();
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
        self.publish();
        if let Some(l) = self.latency.as_mut() {
            l.flush();
        }
        self.counters
    }

    fn publish(&mut self) {
        self.published.counters.publish(&self.counters);
        if let Mode::Session(s) = &self.mode {
            self.published.session.publish(s.engine.counters());
        }
        // Publishing is rare (every 1024 iterations or before sleeping): the clock read for the
        // recorder hand-over and the sampler's ramp rides on it.
        self.coarse_now = Instant::now();
        if let Some(l) = self.latency.as_mut() {
            l.maybe_swap(self.coarse_now);
        }
        if let Mode::Session(s) = &mut self.mode {
            if !s.tuples.is_identity() && self.coarse_now >= s.next_sweep {
                s.next_sweep = self.coarse_now + Duration::from_secs(1);
                s.tuples.sweep(self.coarse_now);
            }
        }
    }

    /// Blocks until a frame or (session mode) a header arrives, a timer is due, or 50 ms pass.
    fn sleep(&mut self) {
        match &self.mode {
            Mode::Stateless(_) => {
                self.rx.wait_readable(SLEEP_MS);
            }
            Mode::Session(s) => {
                let timeout = s
                    .engine
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()).as_millis().min(SLEEP_MS as u128) as i32)
                    .unwrap_or(SLEEP_MS);
                if timeout == 0 {
                    return;
                }
                s.link.sleeping.store(true, Ordering::SeqCst);
                // Re-check after announcing we sleep: a header queued before the flag was set
                // would otherwise wait for the timeout.
                if s.link.headers.is_empty() {
                    crate::xsk::sys::poll_readable2(self.rx.fd(), s.doorbell.fd(), timeout);
                }
                s.link.sleeping.store(false, Ordering::SeqCst);
                s.doorbell.drain();
            }
        }
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

    /// Free list → fill ring (keeping `tx_reserve` frames for building).
    fn refill(&mut self) {
        let want = self.free.len().saturating_sub(self.tx_reserve) as u32;
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

    /// Stateless: RX ring → `batch` (verdicts applied in place). Returns (frames received,
    /// entries of `batch` to transmit).
    fn receive(&mut self, batch: &mut [Desc; BATCH as usize]) -> (u32, usize) {
        let now = self.coarse_now;
        let Mode::Stateless(logic) = &mut self.mode else { unreachable!("stateless only") };
        let rx = self.rx.rx.as_mut().expect("the RX socket has an RX ring");
        let n = rx.available(BATCH);
        let mut out = 0;
        for i in 0..n {
            let desc = rx.get(i);
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += u64::from(desc.len);
            let verdict = match self.umem.from_addr_mut(desc.addr) {
                Some(chunk) if chunk.len() >= desc.len as usize => logic.handle(&mut chunk[..desc.len as usize], now),
                _ => Verdict::Drop(DropReason::BadDescriptor),
            };
            match verdict {
                Verdict::Tx { start, len } => {
                    batch[out] = Desc { addr: desc.addr + start as u64, len: len as u32, options: 0 };
                    if self.latency.is_some() {
                        self.arrivals[out] =
                            self.umem.before::<{ meta::LEN }>(desc.addr).and_then(meta::arrival_ns).unwrap_or(0);
                    }
                    out += 1;
                }
                Verdict::Drop(why) => {
                    self.counters.drop(why);
                    self.free.push(desc.addr);
                }
                Verdict::Malformed(e) => {
                    self.counters.malformed(e);
                    self.free.push(desc.addr);
                }
            }
        }
        if n > 0 {
            rx.release(n);
        }
        (n, out)
    }

    /// Stateless: `batch` → TX ring; frames that do not fit are dropped and counted. Returns how
    /// many went.
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
            if let (Some(tap), Some(bytes)) = (&self.pcap, self.umem.get(d.addr, d.len)) {
                tap.copy(bytes);
            }
        }
        tx.submit();
        if let Some(l) = self.latency.as_mut() {
            // One clock read per batch: XDP arrival -> TX submission of each frame.
            let now = crate::xsk::sys::monotonic_ns();
            for &arrival in self.arrivals[..room].iter().filter(|a| **a != 0) {
                l.record(Metric::Dataplane, now.saturating_sub(arrival));
            }
        }
        for d in &batch[room..] {
            self.counters.drop(DropReason::TxRingFull);
            self.free.push(d.addr);
        }
        self.in_flight += room as u32;
        room as u32
    }

    /// Session mode: headers from the control thread, a burst of captured frames, due timers.
    /// Returns (did anything, frames put on the TX ring).
    fn session_round(&mut self) -> (bool, u32) {
        let now = Instant::now();
        let Worker { umem, rx, tx, mode, free, counters, scratch, in_flight, latency, arrivals, pcap, .. } = self;
        let Mode::Session(s) = mode else { unreachable!("session only") };
        // The RX ring and the TX ring are separate fields even when one socket does both.
        let rx_ring = rx.rx.as_mut().expect("the RX socket has an RX ring");
        let tx_ring = match tx {
            Some(t) => t.tx.as_mut(),
            None => rx.tx.as_mut(),
        }
        .expect("the TX socket has a TX ring");
        let mut sent = 0u32;
        let mut out = UmemOut {
            umem,
            free,
            tx: tx_ring,
            link: &s.link,
            wake_control: &*s.wake_control,
            counters,
            sent: &mut sent,
            latency: latency.as_mut(),
            pcap: pcap.as_deref(),
        };
        let mut headers = 0;
        while headers < BATCH {
            let Some(h) = s.link.headers.pop() else { break };
            headers += 1;
            match ResponseHeader::parse(h.as_bytes()) {
                Ok(hdr) => s.engine.on_response(now, &hdr, &mut out),
                Err(_) => out.counters.bad_headers += 1,
            }
        }
        let got = session_rx(
            rx_ring,
            &mut s.engine,
            &s.matches,
            s.production.as_deref(),
            &mut s.sampler,
            &mut s.tuples,
            scratch,
            arrivals,
            now,
            &mut out,
        );
        s.engine.on_timers(now, &mut out);
        out.tx.submit();
        *in_flight += sent;
        (headers > 0 || got > 0 || sent > 0, sent)
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

/// Session mode's RX burst: each frame is copied to `scratch`, its UMEM frame goes straight back
/// to the free list, and the engine gets the copy (or, with `production`, a response of the
/// online server its egress mirror carried).
#[allow(clippy::too_many_arguments)]
fn session_rx(
    ring: &mut Consumer<Desc>,
    engine: &mut session::Engine,
    matches: &[(Option<IpAddr>, u16)],
    production: Option<&ProductionTable>,
    sampler: &mut Sampler,
    tuples: &mut Tuples,
    scratch: &mut [u8],
    arrivals: &mut [u64; BATCH as usize],
    now: Instant,
    out: &mut UmemOut<'_>,
) -> u32 {
    let n = ring.available(BATCH);
    let stamp = out.latency.is_some() || production.is_some();
    for i in 0..n {
        let d = ring.get(i);
        if stamp {
            arrivals[i as usize] = out.umem.before::<{ meta::LEN }>(d.addr).and_then(meta::arrival_ns).unwrap_or(0);
        }
        out.counters.rx_frames += 1;
        out.counters.rx_bytes += u64::from(d.len);
        let len = d.len as usize;
        let copied = match out.umem.get(d.addr, d.len) {
            Some(bytes) if 2 * len <= scratch.len() => {
                scratch[..len].copy_from_slice(bytes);
                true
            }
            _ => false,
        };
        out.free.push(d.addr);
        if !copied {
            out.counters.drop(DropReason::BadDescriptor);
            continue;
        }
        let parsed = match wire::parse::parse(&scratch[..len]) {
            Ok(Some(p)) => p,
            Ok(None) => {
                out.counters.drop(DropReason::NotTcp);
                continue;
            }
            Err(e) => {
                out.counters.malformed(e);
                continue;
            }
        };
        let from = |ip: IpAddr, port: u16| matches.iter().position(|(i, p)| *p == port && i.is_none_or(|i| i == ip));
        if let (Some(table), IpAddr::V4(dst), IpAddr::V4(src)) = (production, parsed.dst_ip, parsed.src_ip) {
            // XDP arrival stamps order the two directions whatever order the workers run in.
            let arrival =
                if arrivals[i as usize] != 0 { arrivals[i as usize] } else { crate::xsk::sys::monotonic_ns() };
            let sample = if from(parsed.src_ip, parsed.src_port).is_some() {
                // The online server's response, seen because its egress is mirrored too.
                let sample = (parsed.payload_len > 0)
                    .then(|| table.response(SocketAddrV4::new(dst, parsed.dst_port), parsed.ack, arrival))
                    .flatten();
                if let (Some(ns), Some(l)) = (sample, out.latency.as_mut()) {
                    l.record(Metric::Production, ns);
                }
                continue;
            } else if parsed.payload_len > 0 && from(parsed.dst_ip, parsed.dst_port).is_some() {
                let end = parsed.seq.wrapping_add(parsed.payload_len as u32);
                table.request(SocketAddrV4::new(src, parsed.src_port), end, arrival)
            } else {
                None
            };
            if let (Some(ns), Some(l)) = (sample, out.latency.as_mut()) {
                l.record(Metric::Production, ns);
            }
        }
        let Some(target) = from(parsed.dst_ip, parsed.dst_port) else {
            out.counters.drop(DropReason::NoTransfer);
            continue;
        };
        if !parsed.dst_ip.is_ipv4() {
            out.counters.drop(DropReason::FamilyMismatch);
            continue;
        }
        if !sampler.keep(now, (parsed.src_ip, parsed.src_port), (parsed.dst_ip, parsed.dst_port)) {
            out.counters.drop(DropReason::SampledOut);
            continue;
        }
        let IpAddr::V4(client_ip) = parsed.src_ip else { unreachable!("destination checked IPv4 above") };
        if tuples.is_identity() {
            engine.on_client(now, target, &parsed, &scratch[..len], out);
            continue;
        }
        // -n / -c / -f: each copy goes to the engine as the client its allocated pair makes it.
        let (head, copy) = scratch.split_at_mut(len);
        let copy = &mut copy[..len];
        for r in 0..tuples.replicas() {
            let Some((ip, port)) = tuples.map(now, (client_ip, parsed.src_port), r) else {
                out.counters.tuple_exhausted += 1;
                continue;
            };
            copy.copy_from_slice(head);
            wire::ipv4::Packet::new_unchecked(&mut copy[parsed.l3_offset..]).set_src_addr(ip);
            wire::tcp::Packet::new_unchecked(&mut copy[parsed.l4_offset..]).set_src_port(port);
            let mut p = parsed;
            p.src_ip = IpAddr::V4(ip);
            p.src_port = port;
            engine.on_client(now, target, &p, copy, out);
        }
    }
    if n > 0 {
        ring.release(n);
    }
    if let Some(l) = out.latency.as_mut() {
        // XDP arrival -> handled by the engine, one clock read per burst.
        let t = crate::xsk::sys::monotonic_ns();
        for &a in arrivals[..n as usize].iter().filter(|a| **a != 0) {
            l.record(Metric::Dataplane, t.saturating_sub(a));
        }
    }
    n
}

/// The engine's [`session::Output`] over this worker's UMEM, TX ring and control link.
struct UmemOut<'a> {
    umem: &'a mut Umem,
    free: &'a mut Vec<u64>,
    tx: &'a mut Producer<Desc>,
    link: &'a WorkerLink,
    wake_control: &'a (dyn Fn() + Send + Sync),
    counters: &'a mut Counters,
    sent: &'a mut u32,
    latency: Option<&'a mut WorkerLatency>,
    pcap: Option<&'a PcapTap>,
}

impl session::Output for UmemOut<'_> {
    fn transmit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if self.tx.free(1) == 0 {
            self.counters.drop(DropReason::TxRingFull);
            return false;
        }
        let Some(addr) = self.free.pop() else {
            self.counters.no_free_frame += 1;
            return false;
        };
        let (base, _) = self.umem.chunk_bounds(addr);
        let Some(chunk) = self.umem.from_addr_mut(base) else {
            self.free.push(addr);
            return false;
        };
        let room = chunk.len().min(MAX_BUILD);
        let len = build(&mut chunk[..room]);
        if len == 0 || len > room {
            // Too small a buffer: recycled unsent; the engine counts it (tx_buffer_too_small).
            self.free.push(base);
            return true;
        }
        if let Some(tap) = self.pcap {
            tap.copy(&chunk[..len]);
        }
        self.tx.push(Desc { addr: base, len: len as u32, options: 0 });
        *self.sent += 1;
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        true
    }

    fn client_add(&mut self, client: SocketAddrV4, target: SocketAddrV4) -> bool {
        let ok = self.link.push_add(SessionAdd { client, target });
        (self.wake_control)();
        ok
    }

    fn latency(&mut self, what: session::Latency, nanos: u64) {
        if let Some(l) = self.latency.as_mut() {
            let m = match what {
                session::Latency::Handshake => Metric::Handshake,
                session::Latency::Response => Metric::TestResponse,
            };
            l.record(m, nanos);
        }
    }
}
