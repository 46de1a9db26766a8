//! Offline replay (`-i FILE`): the capture file is fed into a veth pair the copier captures from,
//! so a file goes through exactly the path live traffic takes (XDP program, AF_XDP, workers,
//! session engine) — offline is "a mirror whose source is a file".
//!
//! ```text
//!  capture.pcap ─► PcapSource ─► Pacer (-a, -I, -T, --topspeed) ─► AF_PACKET ─► xdpcfN ══ xdpcfNc ─► XDP ─► workers
//! ```
//!
//! A reader thread paces the frames by their capture timestamps and writes them into the veth;
//! a progress line is redrawn on stderr when it is a terminal. The engine stops the copier once
//! the feed is done and every session has finished (not after the original's fixed 120 s tail).

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    footprint::{Owner, Veth, VethMark},
    offline::{PaceOptions, Pacer, PcapSource, Position, Progress},
    xsk::{sys::PacketSocket, Kick},
};

/// What to replay and how fast.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// The pcap or pcapng file.
    pub path: PathBuf,
    /// Speed-up, gap cutting, loops, top speed.
    pub pace: PaceOptions,
    /// How long to wait for sessions to finish after the last packet, at most.
    pub tail: Duration,
}

/// What the feed did.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedStats {
    /// Frames written into the veth.
    pub frames: u64,
    /// Sends retried because the veth queue was full.
    pub retries: u64,
    /// Records skipped (snap-cut, too short, not IP, unsupported interface).
    pub skipped: u64,
    /// Times the feed waited for the workers to catch up (backpressure).
    pub held: u64,
    /// Wall time from the first frame to the last.
    pub seconds: f64,
    /// Capture time covered (all loops, after gap cutting).
    pub capture_seconds: f64,
}

control::counters! {
    /// What the feed did, as counters (shown with the prefix `feed_`).
    #[derive(Copy)]
    pub struct FeedCounters {
        /// Frames written into the veth.
        counter frames,
        /// Sends retried because the veth queue was full.
        counter retries,
        /// Times the feed waited for the workers to catch up (backpressure).
        counter held,
        /// Records skipped (snap-cut, too short, not IP, unsupported interface).
        counter skipped,
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
            retries: s.retries,
            held: s.held,
            skipped: s.skipped,
            ms: (s.seconds * 1000.0) as u64,
            capture_ms: (s.capture_seconds * 1000.0) as u64,
        }
    }
}

/// The veth pair and the reader thread.
pub struct Feed {
    host: String,
    /// The interface the copier captures from.
    pub capture: String,
    /// The pair, marked; deleted on drop.
    _veth: Veth,
    source: Option<PcapSource>,
    opts: FeedOptions,
    thread: Option<JoinHandle<Result<FeedStats>>>,
    done: Arc<AtomicBool>,
}

impl Feed {
    /// Opens the file (so a bad file is refused before anything starts) and creates the veth
    /// pair with `queues` queues, marked as the copier's ([`crate::footprint`]).
    ///
    /// # Errors
    /// The file's problem (named with its path), or a failed `ip link` command.
    pub fn setup(opts: FeedOptions, queues: u32) -> Result<Self> {
        let source = PcapSource::open(&opts.path)?;
        let mark = VethMark { owner: Owner::current(), role: "feed".into(), of: None, qdisc_added: false };
        let veth = Veth::create("xdpcf", queues, &mark)?;
        let (host, capture) = (veth.host.clone(), veth.capture.clone());
        Ok(Self {
            host,
            capture,
            _veth: veth,
            source: Some(source),
            opts,
            thread: None,
            done: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts feeding (call once the copier captures from [`Feed::capture`]).
    ///
    /// # Errors
    /// When the packet socket cannot be opened.
    /// `received` returns how many frames the workers have taken from their RX rings; the feed
    /// keeps at most [`WINDOW`] frames ahead of it, so a burst never overruns the rings (at top
    /// speed this is the pace). `core`, if given, is where the feed thread runs (away from the
    /// workers).
    ///
    /// # Errors
    /// When the packet socket cannot be opened.
    pub fn start(
        &mut self,
        stop: Arc<AtomicBool>,
        received: Box<dyn Fn() -> u64 + Send>,
        core: Option<usize>,
    ) -> Result<()> {
        let ifindex = crate::xsk::sys::if_nametoindex(&self.host).context("the feed veth vanished")?;
        let sock = PacketSocket::bind(ifindex)?;
        let mut source = self.source.take().expect("started once");
        let opts = self.opts.clone();
        let done = self.done.clone();
        self.thread = Some(thread::Builder::new().name("xdpcopy-feed".into()).spawn(move || {
            if let Some(id) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            let r = run(&mut source, &sock, &opts, &stop, &*received);
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

    /// Waits for the reader and returns its numbers.
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

/// Frames the feed may be ahead of the workers (half the default fill ring).
pub const WINDOW: u64 = 1024;

fn run(
    source: &mut PcapSource,
    sock: &PacketSocket,
    opts: &FeedOptions,
    stop: &AtomicBool,
    received: &dyn Fn() -> u64,
) -> Result<FeedStats> {
    let mut frame = Vec::with_capacity(65_536);
    let mut stats = FeedStats::default();
    let tty = Progress::is_tty();
    let span = source.scan(&opts.pace).ok().map(|s| s.span);
    let start = Instant::now();
    let mut progress = Progress::new(source.file_size(), span, &opts.pace, start);
    let mut pacer: Option<Pacer> = None;
    let mut next_draw = start;
    'loops: loop {
        while let Some(pkt) = source.next_into(&mut frame)? {
            if stop.load(Ordering::Relaxed) {
                break 'loops;
            }
            let p = pacer.get_or_insert_with(|| Pacer::new(&opts.pace, pkt.ts, Instant::now()));
            if let Some(wait) = p.due(pkt.ts, Instant::now()) {
                thread::sleep(wait);
            }
            // Backpressure: never more than WINDOW frames ahead of the workers. Frames the kernel
            // dropped never arrive, so a wait without progress gives up after 100 ms.
            let mut seen = received();
            let mut progress_at = Instant::now();
            while stats.frames.saturating_sub(seen) >= WINDOW && !stop.load(Ordering::Relaxed) {
                stats.held += 1;
                thread::yield_now();
                let now_seen = received();
                if now_seen != seen {
                    seen = now_seen;
                    progress_at = Instant::now();
                } else if progress_at.elapsed() > Duration::from_millis(100) {
                    break;
                }
            }
            loop {
                match sock.send(&frame[..pkt.len]) {
                    Kick::Again | Kick::Down => {
                        stats.retries += 1;
                        thread::sleep(Duration::from_micros(50));
                    }
                    Kick::Done => break,
                    Kick::Failed(e) => bail!("writing into the feed veth: errno {e}"),
                }
            }
            stats.frames += 1;
            if tty && Instant::now() >= next_draw {
                next_draw = Instant::now() + Duration::from_millis(200);
                progress.update(Instant::now(), Position::of(source, p));
                eprint!("\r{}  ", progress.line());
            }
        }
        if pacer.as_mut().is_some_and(Pacer::new_loop) {
            source.rewind()?;
        } else {
            break;
        }
    }
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
