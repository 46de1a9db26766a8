//! Offline replay (`-i FILE`): the capture file straight into the workers. A feed thread reads
//! the file (memory-mapped, Ethernet records parsed where they lie), paces it by the capture
//! timestamps and plays the kernel's RX role for the workers: it takes a chunk from a worker's
//! fill ring, copies the frame into it (one copy, as AF_XDP's copy mode does) and posts the RX
//! descriptor. From there on the frame takes the live path — parse, match, rewrite or session
//! engine, AF_XDP TX on the output interface — with no veth, no AF_PACKET and no XDP program in
//! between.
//!
//! ```text
//!  capture.pcap ─(mmap)─► PcapSource::next_frame ─► select ─► Pacer ─► rss::queue ─► Injector of worker q
//!                         (pcap / pcapng; Ethernet     (what the     (-a, -I, -T,   (symmetric   fill-ring chunk ◄─ copy,
//!                          where it lies, other links   XDP program   --topspeed)    Toeplitz)    metadata (arrival, -T loop)
//!                          built in a scratch buffer)   would pass                                ─► RX ring ─► worker
//!                                                       to a socket)
//! ```
//!
//! - **Which frames.** The ones the XDP program would hand to a socket live: TCP to a `-x` port
//!   (and, with `--production-latency`, from the online servers), plus TCP whose headers are
//!   broken, so the worker counts them. The rest is counted as `filtered` (live, the program
//!   passes it to the kernel).
//! - **Which worker.** Each flow goes to one worker, by the hash a NIC's RSS computes
//!   (symmetric Toeplitz, [`crate::rss`]: both directions of a connection on the same worker).
//!   Broken frames go to worker 0.
//! - **Backpressure.** A worker is never overrun: the feed delivers into its fill-ring chunks
//!   only, and when there are none it waits (counted once per wait as `held`), publishing what
//!   it has posted first. Descriptors are published per worker in batches of [`BATCH`], and
//!   before any wait.
//! - **Pacing.** [`Pacer`] decides when each frame may go; waits longer than [`SPIN`] sleep (the
//!   feed thread's timer slack is 1 µs), the rest spins, so frames leave within a few µs of
//!   their time; every sleep is cut into slices of at most [`SLICE`], so the stop flag (SIGINT)
//!   ends even a one-hour gap at once.
//! - **Oversize frames** (a GRO capture's super-segments): a frame larger than a UMEM chunk
//!   takes ([`Injector::max_frame_len`]) is split into segments that fit in session mode (the
//!   session engine splits to `-M` anyway; counted `split`), and counted `too_big` and not sent
//!   in stateless mode (a live capture could not take it either). The replay goes on.
//! - **Loops** (`-T`): the frame's metadata carries its loop, so that in session mode each loop
//!   replays from fresh client tuples ([`crate::tuples`]).
//!
//! A progress line is redrawn on stderr when it is a terminal. The copier stops once the file is
//! fed and every session has finished (not after the original's fixed 120 s tail).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    bpf::meta,
    offline::{PaceOptions, Pacer, PcapSource, Position, Progress},
    rss,
    wire::{
        self, ipv4, ipv6,
        parse::{Family, Parsed},
        tcp,
    },
    xsk::{sys, Injector},
};

/// Descriptors a worker is given per publication at most.
pub const BATCH: u32 = 32;
/// A wait shorter than this is spun, not slept.
const SPIN: Duration = Duration::from_micros(100);
/// The longest single sleep: the stop flag is seen at least this often.
const SLICE: Duration = Duration::from_millis(50);
/// The feed thread's timer slack (the default 50 µs would make every short sleep late).
const TIMER_SLACK_NS: u64 = 1_000;

/// Which frames the workers see: those the XDP program hands to a socket live.
#[derive(Debug, Clone, Default)]
pub struct Select {
    /// TCP to these destination ports (the `-x` online ports).
    pub dst_ports: Vec<u16>,
    /// IPv4 TCP from these (address, port) pairs, `0.0.0.0` for any address: the online
    /// servers' responses (`--production-latency`).
    pub sources: Vec<SocketAddrV4>,
}

impl Select {
    /// Whether a parsed TCP segment is one the program would redirect.
    pub fn admits(&self, p: &Parsed) -> bool {
        if self.dst_ports.contains(&p.dst_port) {
            return true;
        }
        let IpAddr::V4(src) = p.src_ip else { return false };
        self.sources.iter().any(|s| s.port() == p.src_port && (*s.ip() == src || s.ip().is_unspecified()))
    }
}

/// What to do with a frame larger than a UMEM chunk takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Split a TCP segment into segments that fit (session mode: the engine splits to `-M`
    /// anyway).
    Split,
    /// Count it as `too_big` and leave it (stateless mode: frames are replayed as they are).
    Count,
}

/// What to replay, how fast, and what the workers take.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// The pcap or pcapng file.
    pub path: PathBuf,
    /// Speed-up, gap cutting, loops, top speed.
    pub pace: PaceOptions,
    /// How long to wait for sessions to finish after the last packet, at most.
    pub tail: Duration,
    /// The frames the workers see.
    pub select: Select,
    /// Frames larger than a chunk.
    pub oversize: Oversize,
}

/// What the feed did.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedStats {
    /// Frames delivered to the workers (a split frame counts once per segment).
    pub frames: u64,
    /// Times the feed waited for a worker to free a fill-ring chunk (backpressure).
    pub held: u64,
    /// Records skipped (snap-cut, too short, not IP, unsupported interface).
    pub skipped: u64,
    /// Frames no worker takes (not TCP, not to a `-x` port, IP fragments).
    pub filtered: u64,
    /// Frames larger than a UMEM chunk split into segments (session mode).
    pub split: u64,
    /// Frames larger than a UMEM chunk not sent (stateless mode, or not a splittable segment).
    pub too_big: u64,
    /// Wall time from the first frame to the last.
    pub seconds: f64,
    /// Capture time covered (all loops, after gap cutting).
    pub capture_seconds: f64,
}

control::counters! {
    /// What the feed did, as counters (shown with the prefix `feed_`).
    #[derive(Copy)]
    pub struct FeedCounters {
        /// Frames delivered to the workers (a split frame counts once per segment).
        counter frames,
        /// Times the feed waited for a worker to free a fill-ring chunk (backpressure).
        counter held,
        /// Records skipped (snap-cut, too short, not IP, unsupported interface).
        counter skipped,
        /// Frames no worker takes (not TCP, not to a -x port, IP fragments).
        counter filtered,
        /// Frames larger than a UMEM chunk split into segments that fit (session mode).
        counter split,
        /// Frames larger than a UMEM chunk not sent (stateless mode).
        counter too_big,
        /// Wall time from the first frame to the last, in milliseconds.
        gauge ms,
        /// Capture time covered (all loops, after gap cutting), in milliseconds.
        gauge capture_ms,
    }
}

impl From<FeedStats> for FeedCounters {
    fn from(s: FeedStats) -> Self {
        FeedCounters {
            frames: s.frames,
            held: s.held,
            skipped: s.skipped,
            filtered: s.filtered,
            split: s.split,
            too_big: s.too_big,
            ms: (s.seconds * 1000.0) as u64,
            capture_ms: (s.capture_seconds * 1000.0) as u64,
        }
    }
}

/// The file and the feed thread.
pub struct Feed {
    source: Option<PcapSource>,
    opts: FeedOptions,
    thread: Option<JoinHandle<Result<FeedStats>>>,
    done: Arc<AtomicBool>,
}

impl Feed {
    /// Opens the file, so a bad file is refused before anything starts.
    ///
    /// # Errors
    /// The file's problem, named with its path.
    pub fn open(opts: FeedOptions) -> Result<Self> {
        let source = PcapSource::open(&opts.path)?;
        Ok(Self { source: Some(source), opts, thread: None, done: Arc::new(AtomicBool::new(false)) })
    }

    /// Starts feeding the workers through their injectors (worker `i`'s at index `i`), on
    /// `core` if given (away from the workers). Call once the workers have primed their fill
    /// rings.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(&mut self, injectors: Vec<Injector>, stop: Arc<AtomicBool>, core: Option<usize>) -> Result<()> {
        let mut source = self.source.take().expect("started once");
        let opts = self.opts.clone();
        let done = self.done.clone();
        self.thread = Some(thread::Builder::new().name("xdpcopy-feed".into()).spawn(move || {
            if let Some(id) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            sys::set_timer_slack(TIMER_SLACK_NS);
            let mut injectors = injectors;
            let r = run(&mut source, &mut injectors, &opts, &stop, Progress::is_tty());
            done.store(true, Ordering::Release);
            r
        })?);
        Ok(())
    }

    /// Whether the whole file (every loop) has been fed.
    pub fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// How long to wait for sessions after the feed is done.
    pub fn tail(&self) -> Duration {
        self.opts.tail
    }

    /// Waits for the feed thread and returns its numbers.
    ///
    /// # Errors
    /// A read error in the file (after the packets before it were fed).
    pub fn finish(&mut self) -> Result<FeedStats> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("the feed thread panicked"))?,
            None => Ok(FeedStats::default()),
        }
    }
}

/// What becomes of one frame of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// To this worker.
    Worker(usize),
    /// To no worker (live, the XDP program would pass it to the kernel).
    Filtered,
}

/// Where `frame` goes among `workers`, with its parse (`None` for a broken frame the worker
/// is to count).
fn route(frame: &[u8], select: &Select, workers: usize) -> (Route, Option<Parsed>) {
    match wire::parse::parse(frame) {
        Ok(Some(p)) if select.admits(&p) => {
            let q = rss::queue(p.src_ip, p.dst_ip, p.src_port, p.dst_port, workers as u32);
            (Route::Worker(q as usize), Some(p))
        }
        Ok(_) | Err(wire::Error::Fragmented) => (Route::Filtered, None),
        Err(_) => (Route::Worker(0), None),
    }
}

/// The feed loop: every frame of every loop of `source`, paced, into the workers' injectors,
/// until the end or `stop`.
fn run(
    source: &mut PcapSource,
    injectors: &mut [Injector],
    opts: &FeedOptions,
    stop: &AtomicBool,
    tty: bool,
) -> Result<FeedStats> {
    let mut scratch = Vec::with_capacity(65_536);
    let mut stats = FeedStats::default();
    let span = source.scan(&opts.pace).ok().map(|s| s.span);
    let start = Instant::now();
    let mut progress = Progress::new(source.file_size(), span, &opts.pace, start);
    let mut pacer: Option<Pacer> = None;
    let mut next_draw = start;
    let workers = injectors.len();
    let max_len = injectors.first().map_or(0, Injector::max_frame_len);
    'loops: loop {
        while let Some((pkt, frame)) = source.next_frame(&mut scratch)? {
            if stop.load(Ordering::Relaxed) {
                break 'loops;
            }
            let p = pacer.get_or_insert_with(|| Pacer::new(&opts.pace, pkt.ts, Instant::now()));
            let wait = p.due(pkt.ts, Instant::now());
            let generation = p.loop_index();
            let (route, parsed) = route(frame, &opts.select, workers);
            let Route::Worker(w) = route else {
                stats.filtered += 1;
                continue;
            };
            if let Some(wait) = wait {
                // Whatever is posted goes now; then the frame waits for its time.
                submit_all(injectors);
                if !sleep_until(Instant::now() + wait, stop) {
                    break 'loops;
                }
            }
            let delivered = if frame.len() <= max_len {
                deliver(&mut injectors[w], frame, generation, &mut stats, stop)
            } else {
                match (opts.oversize, parsed) {
                    (Oversize::Split, Some(p)) if p.payload_offset < max_len => {
                        stats.split += 1;
                        split(injectors, w, frame, &p, max_len, generation, &mut stats, stop)
                    }
                    _ => {
                        stats.too_big += 1;
                        true
                    }
                }
            };
            if !delivered {
                break 'loops;
            }
            if tty && Instant::now() >= next_draw {
                next_draw = Instant::now() + Duration::from_millis(200);
                if let Some(p) = &pacer {
                    progress.update(Instant::now(), Position::of(source, p));
                }
                eprint!("\r{}  ", progress.line());
            }
        }
        if pacer.as_mut().is_some_and(Pacer::new_loop) {
            source.rewind()?;
        } else {
            break;
        }
    }
    submit_all(injectors);
    if tty {
        if let Some(p) = &pacer {
            progress.update(Instant::now(), Position::of(source, p));
            eprintln!("\r{}  ", progress.line());
        }
    }
    if let Some(w) = source.truncation() {
        eprintln!("xdpcopy: warning: {w}");
    }
    let s = source.stats();
    stats.skipped = s.truncated + s.short + s.not_ip + s.foreign_link;
    stats.seconds = start.elapsed().as_secs_f64();
    stats.capture_seconds = pacer.map_or(0.0, |p| p.capture_elapsed().as_secs_f64());
    Ok(stats)
}

/// Publishes what every worker has been given.
fn submit_all(injectors: &mut [Injector]) {
    for inj in injectors {
        inj.submit();
    }
}

/// Delivers `frame` to one worker, waiting for a fill-ring chunk if it has none (publishing
/// its posted descriptors first, so it can make progress). Returns false when `stop` was set
/// during the wait.
fn deliver(inj: &mut Injector, frame: &[u8], generation: u32, stats: &mut FeedStats, stop: &AtomicBool) -> bool {
    if !wait_room(inj, stats, stop) {
        return false;
    }
    let m = meta::stamp(sys::monotonic_ns(), generation);
    let ok = inj.deliver(&m, frame.len(), |buf| buf.copy_from_slice(frame));
    debug_assert!(ok, "room was checked");
    stats.frames += 1;
    if inj.unsubmitted() >= BATCH {
        inj.submit();
    }
    true
}

/// Waits until `inj` can take a frame; false if `stop` was set first.
fn wait_room(inj: &mut Injector, stats: &mut FeedStats, stop: &AtomicBool) -> bool {
    if inj.has_room() {
        return true;
    }
    // The worker may be waiting for exactly what we posted: publish it.
    inj.submit();
    stats.held += 1;
    let mut spins = 0u32;
    while !inj.has_room() {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        spins += 1;
        if spins < 64 {
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_micros(20));
        }
    }
    true
}

/// Splits an oversize TCP segment into segments that fit a chunk and delivers them in order to
/// worker `w`: each carries the original headers with its own sequence number, IP length and
/// checksums; FIN and PSH stay on the last one. Returns false when `stop` was set.
#[allow(clippy::too_many_arguments)]
fn split(
    injectors: &mut [Injector],
    w: usize,
    frame: &[u8],
    p: &Parsed,
    max_len: usize,
    generation: u32,
    stats: &mut FeedStats,
    stop: &AtomicBool,
) -> bool {
    let headers = &frame[..p.payload_offset];
    let payload = &frame[p.payload_offset..p.payload_offset + p.payload_len];
    let room = max_len - p.payload_offset;
    let pieces = payload.len().div_ceil(room).max(1);
    for (i, piece) in payload.chunks(room).enumerate() {
        let inj = &mut injectors[w];
        if !wait_room(inj, stats, stop) {
            return false;
        }
        let last = i + 1 == pieces;
        let m = meta::stamp(sys::monotonic_ns(), generation);
        let len = headers.len() + piece.len();
        let ok = inj.deliver(&m, len, |buf| {
            buf[..headers.len()].copy_from_slice(headers);
            buf[headers.len()..].copy_from_slice(piece);
            fix_segment(buf, p, (i * room) as u32, last);
        });
        debug_assert!(ok, "room was checked");
        stats.frames += 1;
        if inj.unsubmitted() >= BATCH {
            inj.submit();
        }
    }
    true
}

/// Makes `seg` (the original headers followed by one piece of the payload, starting `offset`
/// bytes into it) a segment of its own: IP length, sequence number, flags (FIN and PSH only on
/// the `last` piece), checksums.
fn fix_segment(seg: &mut [u8], p: &Parsed, offset: u32, last: bool) {
    let (l3, l4) = (p.l3_offset, p.l4_offset);
    let tcp_len = seg.len() - l4;
    let flags = if last { p.flags } else { p.flags & !(tcp::flags::FIN | tcp::flags::PSH) };
    {
        let mut t = tcp::Packet::new_unchecked(&mut seg[l4..]);
        t.set_seq_number(p.seq.wrapping_add(offset));
        t.set_flags(flags);
    }
    match p.family {
        Family::V4 => {
            let (ip_part, _) = seg.split_at_mut(l4);
            let mut ip = ipv4::Packet::new_unchecked(&mut ip_part[l3..]);
            ip.set_total_len((l4 - l3 + tcp_len) as u16);
            ip.fill_checksum();
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            tcp::Packet::new_unchecked(&mut seg[l4..]).fill_checksum_v4(src, dst);
        }
        Family::V6 => {
            let mut ip = ipv6::Packet::new_unchecked(&mut seg[l3..]);
            ip.set_payload_len(tcp_len as u16);
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            tcp::Packet::new_unchecked(&mut seg[l4..]).fill_checksum_v6(&src, &dst);
        }
    }
}

/// Sleeps until `deadline` (long waits in slices, the last [`SPIN`] spun); false if `stop` was
/// set first.
fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        let Some(left) = deadline.checked_duration_since(now).filter(|d| !d.is_zero()) else {
            return true;
        };
        if left > SPIN {
            thread::sleep((left - SPIN / 2).min(SLICE));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The any-address source pair for `--production-latency` on an online port without address.
pub fn any_source(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

#[cfg(test)]
mod tests;
