//! The copier's runtime, in the shape of DPDK's l2fwd: set up, start, watch, shut down.
//!
//! ```text
//!  run ─► setup: Links::resolve ─► Channel::new ─► program ─► Taps::new ─► workers (one port per queue)
//!     ─► attach the XDP program (capture starts; offline there is no program: the feed is the RX)
//!     ─► start: Threads::start (pinned workers, control thread) ─► offline feed
//!     ─► watch: Monitor::run (the stats loop) until stopped, a thread ends, or the replay is over
//!     ─► shut down: Monitor::finish (join, last latency intervals) ─► exports ─► Summary
//! ```
//!
//! Set-up does everything that can fail before the program is attached, so a bad interface or
//! an unreachable target fails without touching traffic. The workers and the control thread
//! are described in [`crate::worker`] and [`control::copier`]; the counters every output shows
//! are declared once, in [`Totals`].

mod monitor;
mod setup;
mod silence;
mod summary;
mod threads;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use anyhow::{Context, Result};
use control::latency::{write_summary_json, LatencyExport, MetricsServer};

pub use summary::{LatencyLine, RuntimeCounters, Summary, Totals, WorkerTotals};

use crate::{
    bpf::{self, Entry},
    config::{Config, Mode},
    feed::{Feed, FeedCounters},
    rewrite::ChecksumMode,
};
use monitor::{Monitor, Watch};
use setup::{Channel, Links, Taps};
use threads::Threads;

/// Runs the copier (stateless or session replay) until `stop` is set, a thread ends, or the
/// offline replay is over. Prints the start-up report and (unless `config.stats_interval` is
/// `None`) a stats line per interval on stderr.
///
/// # Errors
/// Start-up failures (missing interface, XDP attach, socket setup, MAC resolution), each naming
/// what to check; a thread that failed.
pub fn run(config: &Config, stop: Arc<AtomicBool>, mut feed: Option<&mut Feed>) -> Result<Summary> {
    let started = Instant::now();
    let links = Links::resolve(config)?;
    let mut channel = match &config.mode {
        Mode::Session(opts) => Some(Channel::new(opts, config.queues)?),
        Mode::Stateless => None,
    };
    // Offline, nothing is captured: no program, the feed fills the workers' RX rings.
    let program = match config.offline {
        Some(_) => None,
        None => Some(setup::program(config)?),
    };
    let mut taps = Taps::new(config, &links)?;
    let mut workers = setup::workers(config, &links, program.as_ref(), channel.as_ref(), &taps, &stop)?;
    // Attach last: from here on frames for the selected ports go to the sockets.
    let attachment = match &program {
        Some(p) => Some(p.attach(Entry::Redirect, &config.input, config.xdp_mode)?),
        None => None,
    };
    let xdp_mode = attachment.as_ref().map(|a| a.mode);
    report_start(config, xdp_mode, workers.zero_copy, links.mtu);
    let run_meta = summary::run_meta(config, xdp_mode, workers.zero_copy);
    let export = match &taps.exchange {
        Some(_) => Some(LatencyExport::new(config.observe.latency_csv.clone(), run_meta.clone())?),
        None => None,
    };
    let metrics = match config.observe.metrics {
        Some(addr) => {
            let m = MetricsServer::start(addr).with_context(|| format!("--metrics {addr}: cannot listen"))?;
            eprintln!("xdpcopy: Prometheus metrics on http://{}/metrics", m.local_addr());
            Some(m)
        }
        None => None,
    };

    let threads = Threads::start(workers.workers, channel.take().map(|c| c.control), config.cores.as_deref(), &stop)?;
    if let Some(f) = feed.as_deref_mut() {
        let published = workers.published.clone();
        let ready = || published.iter().all(|p| p.ready.load(Ordering::Acquire));
        threads.start_feed(f, std::mem::take(&mut workers.injectors), &ready, &stop)?;
        eprintln!("xdpcopy: replaying {}", config.input_label());
    }

    let mut monitor = Monitor::new(Watch {
        program: program.as_ref(),
        published: workers.published,
        sockets: workers.sockets,
        threads,
        session: matches!(config.mode, Mode::Session(_)),
        exchange: taps.exchange.clone(),
        export,
        metrics,
        stats_interval: config.stats_interval,
        stats_format: config.stats_format,
        duration: config.duration,
        started,
    });
    monitor.run(&stop, feed.as_deref());
    let (mut totals, per_worker, mut export, metrics) = monitor.finish()?;
    drop(attachment);

    if let Some(p) = taps.pcap_out.as_mut() {
        totals.pcap_out = Some(p.finish()?);
    }
    if let Some(f) = feed {
        totals.feed = Some(FeedCounters::from(f.finish()?));
    }
    let mut summary = Summary { totals, elapsed: started.elapsed(), latency: Vec::new() };
    if let Some(e) = export.as_mut() {
        for f in e.finish().context("writing the latency exports")? {
            eprintln!("xdpcopy: wrote {}", f.display());
        }
        summary.latency = summary::latency_lines(e);
    }
    if let Some(path) = &config.observe.summary_json {
        let empty = LatencyExport::new(None, run_meta.clone())?;
        write_summary_json(path, &summary.named(), export.as_ref().unwrap_or(&empty), run_meta)
            .with_context(|| format!("--summary-json {}", path.display()))?;
        eprintln!("xdpcopy: wrote {}", path.display());
    }
    if let Some(m) = &metrics {
        m.update(summary::metrics_snapshot(&summary.totals, &per_worker, summary.elapsed, export.as_ref()));
    }
    Ok(summary)
}

/// The start-up line: where it captures (offline: what it replays, with no XDP program), how,
/// and where it sends.
fn report_start(config: &Config, xdp_mode: Option<bpf::XdpMode>, zero_copy: bool, mtu: u32) {
    let from = match (&config.offline, xdp_mode) {
        (Some(file), _) => format!(
            "replaying {} into {} worker(s) directly (no capture interface, no XDP program attached)",
            file.display(),
            config.queues
        ),
        (None, mode) => format!(
            "capturing on {} (queues 0..{}, XDP {} mode)",
            config.input,
            config.queues,
            mode.map_or_else(|| "no".to_string(), |m| m.to_string())
        ),
    };
    eprintln!(
        "xdpcopy: {from}, sending on {} (queues 0..{}, AF_XDP {}, MTU {mtu}), {}, checksums {}, UMEM {} MiB per \
         worker ({} frames, rings of {})",
        config.output,
        config.queues,
        if zero_copy { "zero-copy" } else { "copy mode" },
        match config.mode {
            Mode::Stateless => "stateless",
            Mode::Session(_) => "session replay",
        },
        match config.checksum {
            ChecksumMode::Full => "full",
            ChecksumMode::Incremental => "incremental",
        },
        (u64::from(config.frames) * u64::from(setup::FRAME_SIZE)) >> 20,
        config.frames,
        config.ring_size,
    );
}
