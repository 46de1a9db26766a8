//! The stats loop (DPDK l2fwd's `print_stats`, apart from the workers): every 100 ms it checks
//! the threads, merges the workers' latency recorders and, offline, whether the replay is over;
//! every second it closes the latency interval and refreshes the Prometheus snapshot; every
//! `--stats-interval` it prints the stats line (or, with `--stats-format json`, a JSON object
//! on stdout); after `--duration` it stops the run. One function per duty; every counter is read
//! by its field in [`Totals`].

use std::{
    fmt::Write as _,
    io::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use control::{
    counters::{sum, CounterSet},
    latency::{IntervalTotals, LatencyExport, Metric, MetricsServer, RecorderExchange},
};

use super::{
    summary::{metrics_snapshot, RuntimeCounters, Totals, WorkerTotals},
    threads::Threads,
};
use crate::{
    bpf::Program,
    config::StatsFormat,
    feed::Feed,
    stats::{Published, XskCounters},
    xsk::StatsHandle,
};

/// How often the loop wakes.
const TICK: Duration = Duration::from_millis(100);
/// The latency interval and the Prometheus refresh period.
const SECOND: Duration = Duration::from_secs(1);
/// Offline: the replay is over when nothing new arrived for this long after the file was fed
/// (and, in session mode, no session is left).
const SETTLE: Duration = Duration::from_millis(500);

/// What the stats loop reads and writes.
pub(super) struct Monitor<'a> {
    /// The attached program (`None` offline).
    program: Option<&'a Program>,
    published: Vec<Arc<Published>>,
    sockets: Vec<StatsHandle>,
    threads: Threads,
    /// Session mode: the session counters are part of the totals.
    session: bool,
    exchange: Option<Arc<RecorderExchange>>,
    export: Option<LatencyExport>,
    metrics: Option<MetricsServer>,
    stats_interval: Option<Duration>,
    stats_format: StatsFormat,
    duration: Option<Duration>,
    started: Instant,
    runtime: RuntimeCounters,
    /// The start of the latency interval being recorded.
    interval_start: SystemTime,
    /// The totals at the last interval close and at the last stats line.
    last_close: Totals,
    last_line: (Totals, Instant),
    /// Offline: frames received so far and when that last changed; when the feed finished.
    last_rx: (u64, Instant),
    feed_done_at: Option<Instant>,
    /// Whether the capture-loss advice was printed (once per run).
    warned_capture_loss: bool,
    /// Session mode: segments going out with no answer coming back.
    silence: super::silence::SilenceWatch,
}

/// What the monitor watches and where it reports.
pub(super) struct Watch<'a> {
    /// The attached program (its counters); `None` offline (no program).
    pub program: Option<&'a Program>,
    /// Each worker's published counters.
    pub published: Vec<Arc<Published>>,
    /// Every socket's statistics handle.
    pub sockets: Vec<StatsHandle>,
    /// The running threads.
    pub threads: Threads,
    /// Session mode: the session counters are part of the totals.
    pub session: bool,
    /// The workers' latency recorders circulate through it.
    pub exchange: Option<Arc<RecorderExchange>>,
    /// The latency export (histograms, CSVs).
    pub export: Option<LatencyExport>,
    /// The Prometheus endpoint.
    pub metrics: Option<MetricsServer>,
    /// `None` with `-q`.
    pub stats_interval: Option<Duration>,
    /// Text lines on stderr or JSON objects on stdout (`--stats-format`).
    pub stats_format: StatsFormat,
    /// Stop after this long (`--duration`).
    pub duration: Option<Duration>,
    /// When the run started.
    pub started: Instant,
}

impl<'a> Monitor<'a> {
    pub fn new(w: Watch<'a>) -> Self {
        let now = Instant::now();
        Monitor {
            program: w.program,
            published: w.published,
            sockets: w.sockets,
            threads: w.threads,
            session: w.session,
            exchange: w.exchange,
            export: w.export,
            metrics: w.metrics,
            stats_interval: w.stats_interval,
            stats_format: w.stats_format,
            duration: w.duration,
            started: w.started,
            runtime: RuntimeCounters::default(),
            interval_start: SystemTime::now(),
            last_close: Totals::default(),
            last_line: (Totals::default(), now),
            last_rx: (0, now),
            feed_done_at: None,
            warned_capture_loss: false,
            silence: super::silence::SilenceWatch::default(),
        }
    }

    /// Runs until `stop` is set, a thread ends, or (offline) the replay is over; sets `stop`.
    pub fn run(&mut self, stop: &AtomicBool, feed: Option<&Feed>) {
        let mut next_second = Instant::now() + SECOND;
        let mut next_line = Instant::now() + self.stats_interval.unwrap_or(Duration::MAX / 4);
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(TICK);
            if self.threads.one_ended() {
                break;
            }
            self.drain_latency();
            if feed.is_some_and(|f| self.offline_finished(f)) {
                break;
            }
            if let Some(d) = self.duration.filter(|d| self.started.elapsed() >= *d) {
                eprintln!("xdpcopy: --duration {} s is over, stopping", d.as_secs());
                break;
            }
            let now = Instant::now();
            if now >= next_second {
                next_second += SECOND;
                let totals = self.totals();
                self.close_interval(&totals);
                self.refresh_metrics(&totals);
                self.warn_capture_loss(&totals);
                self.warn_silence(now, &totals);
            }
            if let Some(interval) = self.stats_interval.filter(|_| now >= next_line) {
                next_line += interval;
                match self.stats_format {
                    StatsFormat::Text => self.print_line(&self.totals()),
                    StatsFormat::Json => self.print_json(&self.totals()),
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    }

    /// Says once, when the kernel first reports frames lost before a worker saw them, what that
    /// costs and what helps (the counters keep the count).
    fn warn_capture_loss(&mut self, totals: &Totals) {
        let x = &totals.xsk;
        if self.warned_capture_loss || x.rx_dropped == 0 {
            return;
        }
        self.warned_capture_loss = true;
        let cost = if self.session {
            "in session mode each is a hole its session skips after --hole-wait (clt_hole_skipped)"
        } else {
            "they are not copied"
        };
        eprintln!(
            "xdpcopy: the capture is losing frames (xsk rx_dropped {}, fill_empty {}, ring_full {}): a worker \
             fell behind the kernel; {cost}. Give each worker a core of its own (--cores), away from the \
             NIC's interrupts and busy processes, or more frames to ride out its stalls (--frames 16384 \
             --ring-size 16384: 64 MiB per worker)",
            x.rx_dropped, x.fill_empty, x.rx_ring_full
        );
    }

    /// Says once when segments have gone to the test server for a while and no response header
    /// came back (see [`super::silence`]).
    fn warn_silence(&mut self, now: Instant, totals: &Totals) {
        let (Some(session), Some(channel)) = (&totals.session, &totals.channel) else { return };
        if let Some(msg) = self.silence.observe(now, session.sent, channel.channel.headers, channel.connected) {
            eprintln!("{msg}");
        }
    }

    /// Every counter now (the control thread's as last published).
    pub fn totals(&self) -> Totals {
        let mut xsk = XskCounters::default();
        for h in &self.sockets {
            // A socket whose statistics cannot be read adds nothing (it is being torn down).
            if let Ok(s) = h.read() {
                xsk.add_socket(&s);
            }
        }
        Totals {
            workers: sum(self.published.iter().map(|p| &p.counters)),
            session: self.session.then(|| sum(self.published.iter().map(|p| &p.session))),
            xdp: self.program.map(Program::counters).unwrap_or_default(),
            xsk,
            channel: self.threads.control_stats(),
            feed: None,
            pcap_out: None,
            runtime: self.runtime,
        }
    }

    /// Each worker's counters now (as last published), for the per-worker Prometheus families.
    pub fn per_worker(&self) -> Vec<WorkerTotals> {
        self.published
            .iter()
            .map(|p| WorkerTotals {
                workers: p.counters.snapshot(),
                session: self.session.then(|| p.session.snapshot()),
            })
            .collect()
    }

    /// Merges the workers' finished latency intervals into the export.
    pub fn drain_latency(&mut self) {
        let (Some(x), Some(e)) = (&self.exchange, self.export.as_mut()) else { return };
        let start = self.interval_start;
        let len = SystemTime::now().duration_since(start).unwrap_or_default();
        let errors = &mut self.runtime.latency_export_errors;
        x.drain(|w, rec| {
            if e.add_interval(w, rec, start, len).is_err() {
                *errors += 1;
            }
        });
    }

    /// Offline: whether the file is fed and the replay has finished — nothing new arrived for
    /// [`SETTLE`] and (session mode) every session ended — or the tail is over.
    fn offline_finished(&mut self, feed: &Feed) -> bool {
        let rx: u64 = self.published.iter().map(|p| p.counters.snapshot().rx_frames).sum();
        if rx != self.last_rx.0 {
            self.last_rx = (rx, Instant::now());
        }
        if !feed.done() {
            return false;
        }
        let since = *self.feed_done_at.get_or_insert_with(Instant::now);
        let settled = self.last_rx.1.elapsed() > SETTLE;
        let sessions_left = self.session && sum(self.published.iter().map(|p| &p.session)).active > 0;
        (settled && !sessions_left) || since.elapsed() > feed.tail()
    }

    /// Closes the latency interval: its summary row, with the traffic it saw.
    fn close_interval(&mut self, totals: &Totals) {
        let end = SystemTime::now();
        if let Some(e) = self.export.as_mut() {
            let (now, last) = (totals, &self.last_close);
            let session = now.session.unwrap_or_default();
            let before = last.session.unwrap_or_default();
            let interval = IntervalTotals {
                frames_in: now.workers.rx_frames - last.workers.rx_frames,
                frames_out: now.workers.tx_frames - last.workers.tx_frames,
                bytes_in: now.workers.rx_bytes - last.workers.rx_bytes,
                bytes_out: now.workers.tx_bytes - last.workers.tx_bytes,
                sessions_active: session.active,
                sessions_new: session.conns.saturating_sub(before.conns),
                requests: session.sent_payload.saturating_sub(before.sent_payload),
                responses: session.resp_payload.saturating_sub(before.resp_payload),
            };
            let len = end.duration_since(self.interval_start).unwrap_or_default();
            if e.close_interval(self.interval_start, len, &interval).is_err() {
                self.runtime.latency_export_errors += 1;
            }
        }
        self.interval_start = end;
        self.last_close = totals.clone();
    }

    /// Refreshes what `GET /metrics` serves.
    pub fn refresh_metrics(&self, totals: &Totals) {
        if let Some(m) = &self.metrics {
            m.update(metrics_snapshot(totals, &self.per_worker(), self.started.elapsed(), self.export.as_ref()));
        }
    }

    /// Prints the stats line (and, in session mode, the sessions line) on stderr.
    fn print_line(&mut self, now: &Totals) {
        let (last, at) = &self.last_line;
        let secs = at.elapsed().as_secs_f64();
        let (w, lw) = (&now.workers, &last.workers);
        let mut line = format!(
            "xdpcopy: rx {} ({} pps) tx {} ({} pps, {:.1} Mbit/s) dropped {}",
            w.rx_frames,
            rate(w.rx_frames - lw.rx_frames, secs),
            w.tx_frames,
            rate(w.tx_frames - lw.tx_frames, secs),
            (w.tx_bytes - lw.tx_bytes) as f64 * 8.0 / secs.max(1e-9) / 1e6,
            w.dropped,
        );
        let reasons: Vec<String> =
            w.drop.iter().filter(|(_, n)| *n > 0).map(|(why, n)| format!("{} {n}", why.name())).collect();
        if !reasons.is_empty() {
            let _ = write!(line, " ({})", reasons.join(", "));
        }
        let x = &now.xsk;
        let _ = write!(
            line,
            " | xdp passed {} | xsk rx_dropped {} ring_full {} fill_empty {}",
            now.xdp.passed, x.rx_dropped, x.rx_ring_full, x.fill_empty
        );
        if let Some(e) = &self.export {
            let p99: Vec<String> = Metric::ALL
                .iter()
                .filter_map(|m| e.p(*m, 0.99).map(|v| format!("{} {}", m.name(), human_ns(v))))
                .collect();
            if !p99.is_empty() {
                let _ = write!(line, " | p99 {}", p99.join(", "));
            }
        }
        if let Some(s) = &now.session {
            let c = now.channel.unwrap_or_default();
            let _ = write!(
                line,
                "\nxdpcopy: sessions active {} released {} | conns {} resp {} | sent {} payload {} syn {} \
                 | retransmit {} fake_syn {} | channel up {} headers {} unowned {}",
                s.active,
                s.released,
                s.conns,
                s.resp,
                s.sent,
                s.sent_payload,
                s.sent_syn,
                s.retransmit,
                s.fake_syn,
                c.connected,
                c.channel.headers,
                c.unowned,
            );
        }
        // A stats line that cannot be written (stderr closed) is not worth stopping for.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
        self.last_line = (now.clone(), Instant::now());
    }

    /// Prints the interval as one JSON object on stdout (`--stats-format json`): every counter
    /// by its model name, the rates since the last line, each latency's p99 so far.
    fn print_json(&mut self, now: &Totals) {
        let (last, at) = &self.last_line;
        let secs = at.elapsed().as_secs_f64().max(1e-9);
        let (w, lw) = (&now.workers, &last.workers);
        let counters: serde_json::Map<String, serde_json::Value> =
            now.named().into_iter().map(|(k, v)| (k, serde_json::Value::from(v))).collect();
        let p99: serde_json::Map<String, serde_json::Value> = self
            .export
            .iter()
            .flat_map(|e| {
                Metric::ALL
                    .iter()
                    .filter_map(|m| e.p(*m, 0.99).map(|v| (m.name().to_string(), (v as f64 / 1e3).into())))
            })
            .collect();
        let time = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let line = serde_json::json!({
            "type": "interval",
            "time_s": time.as_secs_f64(),
            "elapsed_s": self.started.elapsed().as_secs_f64(),
            "interval_s": secs,
            "rx_pps": (w.rx_frames - lw.rx_frames) as f64 / secs,
            "tx_pps": (w.tx_frames - lw.tx_frames) as f64 / secs,
            "tx_mbit_per_s": (w.tx_bytes - lw.tx_bytes) as f64 * 8.0 / secs / 1e6,
            "latency_p99_us": p99,
            "counters": counters,
        });
        // A line that cannot be written (stdout closed) is not worth stopping for.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
        self.last_line = (now.clone(), Instant::now());
    }

    /// Shuts down (the stop flag is set): joins the threads, takes the last latency intervals
    /// the workers handed over as they stopped, and returns the final totals (all workers and
    /// each one), the export and the metrics endpoint.
    ///
    /// # Errors
    /// A thread that panicked or failed.
    #[allow(clippy::type_complexity)]
    pub fn finish(
        mut self,
    ) -> anyhow::Result<(Totals, Vec<WorkerTotals>, Option<LatencyExport>, Option<MetricsServer>)> {
        let threads = std::mem::replace(&mut self.threads, Threads::none());
        let (workers, channel) = threads.join()?;
        let mut totals = self.totals();
        totals.workers = workers;
        totals.channel = channel;
        self.drain_latency();
        totals.runtime = self.runtime;
        // The workers published their last counters before they returned.
        let workers = self.per_worker();
        Ok((totals, workers, self.export, self.metrics))
    }
}

/// A rate for the stats line: 12, 3.4k, 1.23M.
fn rate(n: u64, secs: f64) -> String {
    let r = n as f64 / secs.max(1e-9);
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// Formats nanoseconds for the stats line.
fn human_ns(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}
