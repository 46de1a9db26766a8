//! The pinned poll-mode worker (DPDK l2fwd's loop shape, on AF_XDP).
//!
//! One worker per RX queue owns an [`xsk::Port`](crate::xsk::Port): the UMEM, the RX socket on
//! the capture interface's queue and (when the output interface differs) a TX socket on the
//! output interface sharing that UMEM. Per iteration ([`Worker::round`]): recycle completions
//! into the free list, top up the fill ring, take a batch from the RX ring, give each frame a
//! verdict (rewrite and transmit, or drop with a named reason), push the batch to the TX ring and
//! kick the kernel. Frames move as owned tokens ([`Frame`]); in stateless mode no frame is ever
//! copied in userspace (session mode copies each captured frame once, below). Tests run rounds on a port over in-memory rings (`worker/tests.rs`).
//!
//! In session mode the worker owns a shard of the sessions (those whose client packets arrive on
//! its queue): each captured frame is copied out and handed to the session engine, which buffers
//! it and builds the frames to send in free UMEM frames; response headers arrive from the control
//! thread through a lock-free queue — or, when this is the only worker, from the control loop it
//! runs itself ([`inline`]) — and the engine's timers run every iteration.
//!
//! The loop busy-polls while there is work and blocks in `poll()` when the rings stay empty (on
//! the RX socket and, in session mode, on a doorbell the control thread rings when a header
//! arrives, or on the channel's own event loop with no control thread), so an idle copier costs
//! ~0 % CPU. It allocates nothing, takes no lock and logs nothing per frame:
//! every outcome is a counter, published to the stats thread a few times per millisecond at most.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use std::net::{IpAddr, SocketAddr};

use control::{
    channel::ChannelError,
    copier::{Control, ControlStats, SessionAdd, WorkerLink},
    counters::Published as PublishedSet,
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
    tuples::{TupleError, Tuples},
    wire::{self, parse::Parsed},
    xsk::{Doorbell, Frame, Kick, Port},
};

pub mod idle;
pub mod inline;

use idle::Idle;
use inline::InlineControl;

/// Frames taken from the RX ring per iteration.
pub const BATCH: u32 = 64;
/// The longest a worker blocks, so the stop flag is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// A timer due sooner than this is spun for, not slept for.
const MIN_SLEEP: Duration = Duration::from_micros(5);
/// The timer slack the workers ask for (the default 50 µs would make every short sleep late).
const TIMER_SLACK_NS: u64 = 1_000;
/// How often a worker whose output link is down tries to transmit again.
const TX_DOWN_RETRY: Duration = Duration::from_millis(100);
/// Frames the session engine may build per round (a catch-up burst is spread over rounds).
const TX_BUDGET: u32 = 256;
/// Publish counters at least every this many iterations.
const PUBLISH_EVERY: u32 = 1024;
/// ... and before sleeping, if this long has passed since the last time.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(1);
/// ... and at least this often (the published counters are never older).
pub const PUBLISH_MAX_AGE: Duration = Duration::from_millis(10);

/// Whether a worker that did `rounds` rounds since it last published, `age` ago, publishes now.
fn publish_due(rounds: u32, age: Duration) -> bool {
    rounds >= PUBLISH_EVERY || age >= PUBLISH_MAX_AGE
}

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
        // Of the routes matching the destination, one of the frame's family (the rewrite cannot
        // change it) first: dual stack is 80-v4 and 80-[v6] side by side.
        let hit = |r: &&Route| r.online_port == parsed.dst_port && r.online_ip.is_none_or(|ip| ip == parsed.dst_ip);
        let same = |r: &&Route| r.rewrite.dst_ip.is_ipv6() == parsed.dst_ip.is_ipv6();
        let Some(route) = self.routes.iter().filter(hit).find(same).or_else(|| self.routes.iter().find(hit)) else {
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
    /// The control loop, when this worker runs it itself (the only worker): no control thread.
    pub inline: Option<InlineControl>,
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

/// A frame the stateless path rewrote, waiting for the TX ring.
struct Pending {
    frame: Frame,
    /// Start of the bytes to send in the chunk.
    offset: u32,
    len: u32,
}

/// Everything one worker owns.
pub struct Worker {
    /// Queue index (for names and logs).
    pub queue: u32,
    /// The AF_XDP queue: UMEM, rings, free frames (the session engine's reserve included).
    port: Port,
    mode: Mode,
    /// Stateless: this round's frames for the TX ring (capacity `BATCH`, allocated once).
    pending: Vec<Pending>,
    counters: Counters,
    published: Arc<Published>,
    stop: Arc<AtomicBool>,
    /// Copy of a captured frame for the session engine (allocated once).
    scratch: Box<[u8]>,
    /// Latency recording (`None` with --no-latency).
    latency: Option<WorkerLatency>,
    /// XDP arrival stamps of the frames in the current batch (stateless: in `pending` order).
    arrivals: [u64; BATCH as usize],
    /// A clock read at most every publish (for the stateless sampler's ramp).
    coarse_now: Instant,
    /// `--pcap-out`: a copy of every transmitted frame.
    pcap: Option<Arc<PcapTap>>,
    /// When to spin and when to sleep between rounds without work.
    idle: idle::Policy,
    /// The output link is down: when to try transmitting again.
    tx_down: Option<Instant>,
    /// The inline control loop failed (its event loop): the worker stops.
    control_error: Option<ChannelError>,
}

/// The largest frame the engine may build in one UMEM chunk.
const MAX_BUILD: usize = 4096;

impl Worker {
    /// Assembles a worker around an open port (its fill ring primed, the frames the session
    /// engine builds in kept back by the port's `fill_reserve`).
    pub fn new(
        queue: u32,
        port: Port,
        mode: Mode,
        published: Arc<Published>,
        stop: Arc<AtomicBool>,
        latency: Option<WorkerLatency>,
    ) -> Self {
        // A frame: the captured copy (every replica of it goes to the engine from there, -n, -c).
        let scratch = vec![0u8; port.umem().frame_size() as usize].into_boxed_slice();
        Self {
            queue,
            port,
            mode,
            pending: Vec::with_capacity(BATCH as usize),
            counters: Counters::default(),
            published,
            stop,
            scratch,
            latency,
            arrivals: [0; BATCH as usize],
            coarse_now: Instant::now(),
            pcap: None,
            idle: idle::Policy::new(false),
            tx_down: None,
            control_error: None,
        }
    }

    /// Spins between rounds instead of ever sleeping (`--busy-poll`, for dedicated cores).
    pub fn with_busy_poll(mut self, busy_poll: bool) -> Self {
        self.idle = idle::Policy::new(busy_poll);
        self
    }

    /// Session mode: this worker runs the control loop itself ([`inline`]), publishing its
    /// counters to `published`; the session registrations need no wake-up then. Returns the
    /// control back in stateless mode (nothing to run it for).
    pub fn run_control(&mut self, control: Control, published: Arc<PublishedSet<ControlStats>>) -> Option<Control> {
        match &mut self.mode {
            Mode::Session(s) => {
                s.inline = Some(InlineControl::new(control, published));
                s.wake_control = Arc::new(|| {});
                None
            }
            Mode::Stateless(_) => Some(control),
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

    /// The worker's counters so far (the published copy lags behind).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Runs the poll loop until the stop flag is set; returns the final counters. Between rounds
    /// without work it spins or sleeps as [`idle::Policy`] says.
    ///
    /// # Errors
    /// When the control loop it runs itself ([`Worker::run_control`]) fails: its event loop.
    pub fn run(mut self) -> Result<Counters, ChannelError> {
        crate::xsk::sys::set_timer_slack(TIMER_SLACK_NS);
        let mut since_publish = 0u32;
        let mut last_publish = Instant::now();
        self.refill();
        self.published.ready.store(true, Ordering::Release);
        while !self.stop.load(Ordering::Relaxed) && self.control_error.is_none() {
            let busy = self.round();
            since_publish += 1;
            let now = Instant::now();
            // Frames in flight keep the worker polling for their completions, unless the link
            // is down: then nothing completes until it is up again.
            if busy || (self.port.in_flight() > 0 && self.tx_down.is_none()) {
                self.idle.work(now);
            } else if self.idle.idle(now) == Idle::Sleep {
                // Publish before a sleep (the stats thread then sees what happened before it),
                // but not before every one: sparse traffic sleeps thousands of times a second.
                if now.saturating_duration_since(last_publish) >= PUBLISH_INTERVAL {
                    self.publish();
                    since_publish = 0;
                    last_publish = now;
                }
                self.counters.idle_waits += 1;
                self.sleep(now);
            }
            // A worker that never sleeps publishes by count — and by age: the monitor decides an
            // offline replay is over when the published counters stop moving, and a few hundred
            // long rounds (a catch-up burst, hundreds of headers each) once took longer than
            // that wait, so it stopped replays with hundreds of sessions still to go.
            if publish_due(since_publish, now.saturating_duration_since(last_publish)) {
                self.publish();
                since_publish = 0;
                last_publish = now;
            }
        }
        // Let what is on the TX ring go out before we report.
        let deadline = Instant::now() + Duration::from_millis(200);
        while self.port.in_flight() > 0 && Instant::now() < deadline {
            self.kick(0);
            self.reclaim();
            std::thread::yield_now();
        }
        self.publish();
        if let Some(l) = self.latency.as_mut() {
            l.flush();
        }
        if let Mode::Session(s) = &mut self.mode {
            if let Some(c) = s.inline.as_mut() {
                c.publish(Instant::now());
            }
        }
        match self.control_error.take() {
            Some(e) => Err(e),
            None => Ok(self.counters),
        }
    }

    /// One iteration of the loop: completions → free list, free list → fill ring, a burst from
    /// the RX ring handled (stateless: verdicts → TX ring; session mode: headers, captured
    /// frames, timers), then the TX kick. Returns whether there was work (frames received or
    /// sent, headers handled).
    pub fn round(&mut self) -> bool {
        self.reclaim();
        self.refill();
        let (busy, sent) = if matches!(self.mode, Mode::Stateless(_)) {
            let received = self.receive();
            let sent = self.transmit();
            (received > 0, sent)
        } else {
            self.session_round()
        };
        self.kick(sent);
        busy
    }

    fn publish(&mut self) {
        self.counters.frames_free = self.port.free_frames() as u64;
        self.counters.frames_in_flight = u64::from(self.port.in_flight());
        self.published.counters.publish(&self.counters);
        if let Mode::Session(s) = &mut self.mode {
            s.engine.refresh_gauges();
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

    /// Blocks until a frame or (session mode) a header arrives, a timer is due, or
    /// [`MAX_SLEEP`] passes.
    fn sleep(&mut self, now: Instant) {
        match &mut self.mode {
            Mode::Stateless(_) => {
                self.port.wait_readable(MAX_SLEEP);
            }
            Mode::Session(s) => {
                let timeout =
                    s.engine.next_deadline().map_or(MAX_SLEEP, |d| d.saturating_duration_since(now).min(MAX_SLEEP));
                if timeout < MIN_SLEEP {
                    return;
                }
                if let Some(c) = s.inline.as_mut() {
                    // The channel's own event loop beside the socket: its readiness is the
                    // header (or connect, or room to write) itself, nothing rings.
                    if self.port.wait_readable_or(c.fd(), timeout) {
                        c.mark_ready();
                    }
                    return;
                }
                s.link.sleeping.store(true, Ordering::Relaxed);
                // Re-check after announcing we sleep: a header queued before the flag was set
                // would otherwise wait for the timeout. The fence pairs with the control
                // thread's between queueing a header and reading the flag.
                std::sync::atomic::fence(Ordering::SeqCst);
                // The doorbell is read only when it may have rung (a read of a silent eventfd is
                // a wasted system call on every wake-up by a frame or a timer).
                let rung = !s.link.headers.is_empty() || self.port.wait_readable_or(s.doorbell.fd(), timeout);
                s.link.sleeping.store(false, Ordering::SeqCst);
                if rung {
                    s.doorbell.drain();
                }
            }
        }
    }

    /// Completion ring → free list.
    fn reclaim(&mut self) {
        let n = self.port.reclaim(4 * BATCH);
        self.counters.tx_completed += u64::from(n);
    }

    /// Free list → fill ring (keeping the port's reserve for building), with the fill-ring
    /// wakeup if the kernel asked for one.
    fn refill(&mut self) {
        if let Kick::Failed(_) = self.port.refill() {
            self.counters.rx_kick_errors += 1;
        }
    }

    /// Stateless: RX ring → verdicts applied in place → `pending`. Returns frames received.
    fn receive(&mut self) -> u32 {
        let now = self.coarse_now;
        let Worker { port, mode, pending, counters, latency, arrivals, .. } = self;
        let Mode::Stateless(logic) = mode else { unreachable!("stateless only") };
        let n = port.rx_acquire(BATCH);
        while let Some(rx) = port.rx_next() {
            counters.rx_frames += 1;
            let mut rx = match rx {
                Ok(rx) => rx,
                Err(bad) => {
                    counters.rx_bytes += u64::from(bad.len);
                    counters.drop(DropReason::BadDescriptor);
                    if let Some(frame) = bad.frame {
                        port.recycle(frame);
                    }
                    continue;
                }
            };
            counters.rx_bytes += u64::from(rx.len);
            match logic.handle(port.umem_mut().data_mut(&mut rx), now) {
                Verdict::Tx { start, len } => {
                    if latency.is_some() {
                        arrivals[pending.len()] =
                            port.umem().meta::<{ meta::LEN }>(&rx).and_then(meta::arrival_ns).unwrap_or(0);
                    }
                    pending.push(Pending { offset: rx.offset + start as u32, len: len as u32, frame: rx.frame });
                }
                Verdict::Drop(why) => {
                    counters.drop(why);
                    port.recycle(rx.frame);
                }
                Verdict::Malformed(e) => {
                    counters.malformed(e);
                    port.recycle(rx.frame);
                }
            }
        }
        port.rx_release();
        n
    }

    /// Stateless: `pending` → TX ring; frames that do not fit are dropped, counted and
    /// recycled. Returns how many went.
    fn transmit(&mut self) -> u32 {
        if self.pending.is_empty() {
            return 0;
        }
        let Worker { port, pending, counters, latency, arrivals, pcap, .. } = self;
        let room = port.tx_room(pending.len() as u32) as usize;
        let mut sent = 0u32;
        for (i, p) in pending.drain(..).enumerate() {
            if i >= room {
                counters.drop(DropReason::TxRingFull);
                port.recycle(p.frame);
                continue;
            }
            if let Some(tap) = pcap {
                tap.copy(&port.umem().bytes(&p.frame)[p.offset as usize..][..p.len as usize]);
            }
            match port.tx_push(p.frame, p.offset, p.len) {
                Ok(()) => {
                    sent += 1;
                    counters.tx_frames += 1;
                    counters.tx_bytes += u64::from(p.len);
                }
                // Not reached: the room was checked and the rewrite keeps the bytes in the chunk.
                Err(frame) => {
                    counters.drop(DropReason::TxRingFull);
                    port.recycle(frame);
                }
            }
        }
        port.tx_submit();
        if let Some(l) = latency.as_mut() {
            // One clock read per batch: XDP arrival -> TX submission of each frame.
            let now = crate::xsk::sys::monotonic_ns();
            for &arrival in arrivals[..sent as usize].iter().filter(|a| **a != 0) {
                l.record(Metric::Dataplane, now.saturating_sub(arrival));
            }
        }
        sent
    }

    /// Session mode: headers from the control thread, a burst of captured frames, due timers.
    /// Returns (did anything, frames put on the TX ring).
    fn session_round(&mut self) -> (bool, u32) {
        let now = Instant::now();
        let Worker { port, mode, counters, scratch, latency, arrivals, pcap, tx_down, control_error, .. } = self;
        let Mode::Session(s) = mode else { unreachable!("session only") };
        // The inline control loop first: the headers it reads are handled in this round.
        drive_inline(&mut s.inline, &s.link, now, control_error);
        let mut sent = 0u32;
        let mut out = UmemOut {
            port,
            budget: TX_BUDGET,
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
            if let Some(tap) = out.pcap {
                tap.copy_response(h.as_bytes());
            }
            match ResponseHeader::from_msg(&h) {
                Ok(hdr) => s.engine.on_response(now, &hdr, &mut out),
                Err(_) => out.counters.bad_headers += 1,
            }
        }
        let got = session_rx(
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
        // Registrations queued this round go out before the frames that need them are kicked.
        if !s.link.ops.is_empty() {
            drive_inline(&mut s.inline, &s.link, now, control_error);
        }
        out.port.tx_submit();
        // Sessions waiting for TX room keep the worker polling, unless the link is down; so do
        // channel bytes the inline control loop left to read.
        let channel_pending = s.inline.as_ref().is_some_and(InlineControl::pending);
        (headers > 0 || got > 0 || sent > 0 || channel_pending || (s.engine.tx_pending() && tx_down.is_none()), sent)
    }

    /// Makes the kernel transmit what is on the TX ring (copy mode sends inside `sendto`, a
    /// budget at a time: EAGAIN means "call again").
    fn kick(&mut self, sent: u32) {
        if let Some(retry) = self.tx_down {
            // The output link is down: try again only every TX_DOWN_RETRY (frames wait on the
            // TX ring, sessions in the engine's queue; the worker sleeps meanwhile).
            if Instant::now() < retry {
                return;
            }
        }
        match self.port.flush_tx(sent) {
            Kick::Down => {
                self.counters.tx_link_down += 1;
                self.tx_down = Some(Instant::now() + TX_DOWN_RETRY);
            }
            Kick::Failed(_) => {
                self.counters.tx_kick_errors += 1;
                self.tx_down = None;
            }
            Kick::Done | Kick::Again => self.tx_down = None,
        }
    }
}

/// Runs the worker's own control loop, if it has one, when [`InlineControl::drive`] says it is
/// due; keeps its error for the run loop to stop on.
fn drive_inline(inline: &mut Option<InlineControl>, link: &WorkerLink, now: Instant, error: &mut Option<ChannelError>) {
    if let Some(c) = inline.as_mut() {
        if let Err(e) = c.drive(now, !link.ops.is_empty()) {
            *error = Some(e);
        }
    }
}

/// Session mode's RX burst: each frame is copied to `scratch`, its UMEM frame goes straight back
/// to the free list, and the engine gets the copy (or, with `production`, a response of the
/// online server its egress mirror carried).
#[allow(clippy::too_many_arguments)]
fn session_rx(
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
    let n = out.port.rx_acquire(BATCH);
    let stamp = out.latency.is_some() || production.is_some();
    let mut i = 0;
    while let Some(rx) = out.port.rx_next() {
        let idx = i;
        i += 1;
        out.counters.rx_frames += 1;
        let rx = match rx {
            Ok(rx) => rx,
            Err(bad) => {
                arrivals[idx] = 0;
                out.counters.rx_bytes += u64::from(bad.len);
                out.counters.drop(DropReason::BadDescriptor);
                if let Some(frame) = bad.frame {
                    out.port.recycle(frame);
                }
                continue;
            }
        };
        if stamp {
            arrivals[idx] = out.port.umem().meta::<{ meta::LEN }>(&rx).and_then(meta::arrival_ns).unwrap_or(0);
        }
        // The replay loop of an offline frame (-T); 0 live. Read only when tuples are mapped.
        let generation = if tuples.is_identity() {
            0
        } else {
            out.port.umem().meta::<{ meta::LEN }>(&rx).map_or(0, meta::generation)
        };
        out.counters.rx_bytes += u64::from(rx.len);
        let len = rx.len as usize;
        let copied = len <= scratch.len();
        if copied {
            scratch[..len].copy_from_slice(out.port.umem().data(&rx));
        }
        out.port.recycle(rx.frame);
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
        // A transfer without an online address matches both families: one whose target is of
        // the frame's family first (dual stack: 80-v4 and 80-[v6] side by side), else the first
        // (family translation, given -c).
        let from = |ip: IpAddr, port: u16| {
            let hit = |(i, p): &(Option<IpAddr>, u16)| *p == port && i.is_none_or(|i| i == ip);
            let same = |t: &usize| engine.target(*t).is_some_and(|t| t.ip.is_ipv6() == ip.is_ipv6());
            let mut all = matches.iter().enumerate().filter(|(_, m)| hit(m)).map(|(t, _)| t);
            all.clone().find(same).or_else(|| all.next())
        };
        if let Some(table) = production {
            // XDP arrival stamps order the two directions whatever order the workers run in.
            let arrival = if arrivals[idx] != 0 { arrivals[idx] } else { crate::xsk::sys::monotonic_ns() };
            let sample = if from(parsed.src_ip, parsed.src_port).is_some() {
                // The online server's response, seen because its egress is mirrored too.
                let client = SocketAddr::new(parsed.dst_ip, parsed.dst_port);
                let sample = (parsed.payload_len > 0).then(|| table.response(client, parsed.ack, arrival)).flatten();
                if let (Some(ns), Some(l)) = (sample, out.latency.as_mut()) {
                    l.record(Metric::Production, ns);
                }
                continue;
            } else if parsed.payload_len > 0 && from(parsed.dst_ip, parsed.dst_port).is_some() {
                let end = parsed.seq.wrapping_add(parsed.payload_len as u32);
                table.request(SocketAddr::new(parsed.src_ip, parsed.src_port), end, arrival)
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
        if !sampler.keep(now, (parsed.src_ip, parsed.src_port), (parsed.dst_ip, parsed.dst_port)) {
            out.counters.drop(DropReason::SampledOut);
            continue;
        }
        // Sessions are replayed in their target's family (the engine translates a capture of
        // the other family when -c gives an address of the target's).
        let target_v6 = engine.target(target).is_some_and(|t| t.ip.is_ipv6());
        if tuples.is_identity() {
            if parsed.src_ip.is_ipv6() != target_v6 {
                out.counters.drop(DropReason::FamilyMismatch);
                continue;
            }
            engine.on_client(now, target, &parsed, &scratch[..len], out);
            continue;
        }
        // -T offline: a later replay loop's copy moves ahead in sequence and time (the frame is
        // the worker's own copy in `scratch`).
        let mut parsed = parsed;
        crate::tuples::shift_loop(&mut scratch[..len], &mut parsed, generation);
        // -n / -c / -f, -T: each copy goes to the engine as the client its allocated pair makes
        // it (the engine sends every frame of the session from that pair).
        for r in 0..tuples.replicas() {
            match tuples.map(now, (parsed.src_ip, parsed.src_port), generation, r, target_v6) {
                Ok((ip, port)) => {
                    engine.on_client_as(now, target, SocketAddr::new(ip, port), &parsed, &scratch[..len], out);
                }
                Err(TupleError::Exhausted) => out.counters.tuple_exhausted += 1,
                Err(TupleError::Family) => {
                    out.counters.drop(DropReason::FamilyMismatch);
                    break;
                }
            }
        }
    }
    out.port.rx_release();
    if let Some(l) = out.latency.as_mut() {
        // XDP arrival -> handled by the engine, one clock read per burst.
        let t = crate::xsk::sys::monotonic_ns();
        for &a in arrivals[..n as usize].iter().filter(|a| **a != 0) {
            l.record(Metric::Dataplane, t.saturating_sub(a));
        }
    }
    n
}

/// The engine's [`session::Output`] over this worker's port (free frames, UMEM, TX ring) and
/// control link.
struct UmemOut<'a> {
    port: &'a mut Port,
    /// Frames the engine may still send this round (so a catch-up burst leaves room for the
    /// RX ring; the rest goes out next round).
    budget: u32,
    link: &'a WorkerLink,
    wake_control: &'a (dyn Fn() + Send + Sync),
    counters: &'a mut Counters,
    sent: &'a mut u32,
    latency: Option<&'a mut WorkerLatency>,
    pcap: Option<&'a PcapTap>,
}

impl session::Output for UmemOut<'_> {
    fn ready(&mut self) -> bool {
        self.budget > 0 && self.port.build_room() > 0 && self.port.tx_room(1) > 0
    }

    fn transmit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        self.budget = self.budget.saturating_sub(1);
        if self.port.tx_room(1) == 0 {
            self.counters.drop(DropReason::TxRingFull);
            return false;
        }
        let Some(mut frame) = self.port.take_free() else {
            self.counters.no_free_frame += 1;
            return false;
        };
        let chunk = self.port.umem_mut().bytes_mut(&mut frame);
        let room = chunk.len().min(MAX_BUILD);
        let len = build(&mut chunk[..room]);
        if len == 0 || len > room {
            // Too small a buffer: recycled unsent; the engine counts it (tx_buffer_too_small).
            self.port.recycle(frame);
            return true;
        }
        if let Some(tap) = self.pcap {
            tap.copy(&chunk[..len]);
        }
        if let Err(frame) = self.port.tx_push(frame, 0, len as u32) {
            // Not reached: the room was checked above and `len` fits the chunk.
            self.port.recycle(frame);
            self.counters.drop(DropReason::TxRingFull);
            return false;
        }
        *self.sent += 1;
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        true
    }

    fn client_add(&mut self, client: SocketAddr, target: SocketAddr) -> bool {
        let ok = self.link.push_add(SessionAdd { client, target });
        (self.wake_control)();
        ok
    }

    fn client_del(&mut self, client: SocketAddr, target: SocketAddr) {
        self.link.push_del(SessionAdd { client, target });
    }

    fn latency(&mut self, what: session::Latency, nanos: u64) {
        if let Some(l) = self.latency.as_mut() {
            let m = match what {
                session::Latency::Handshake => Metric::Handshake,
                session::Latency::Response => Metric::TestResponse,
                session::Latency::ReplayRtt => Metric::ReplayRtt,
            };
            l.record(m, nanos);
        }
    }
}

#[cfg(test)]
mod tests;
