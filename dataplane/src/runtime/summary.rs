//! The copier's counter model as a whole ([`Totals`]: one declaration, every output generated
//! from it) and the run's [`Summary`].

use std::time::Duration;

use control::{
    copier::ControlStats,
    counters::CounterSet,
    latency::{LatencyExport, Metric, MetricsSnapshot},
};

use crate::{
    bpf::{self, XdpCounters},
    config::{Config, Mode},
    feed::FeedCounters,
    pcap_out::PcapOutCounters,
    session,
    stats::{Counters, XskCounters},
};

control::counters! {
    /// The runtime's own counters: what the stats thread could not do.
    #[derive(Copy)]
    pub struct RuntimeCounters {
        /// Latency export writes (interval log, summary rows) that failed.
        counter latency_export_errors,
    }
}

control::counters! {
    /// Every counter of a copier run: the stats line, the summary, the JSON and Prometheus are
    /// all generated from this one declaration and read it by field.
    pub struct Totals {
        /// The workers' counters, summed.
        group workers: Counters,
        /// The session engines' counters, summed (session replay).
        group session: Option<session::Counters>,
        /// The XDP program's counters.
        prefixed xdp: XdpCounters,
        /// The AF_XDP sockets' kernel statistics, summed.
        prefixed xsk: XskCounters,
        /// The control thread and the channel (session replay).
        prefixed channel: Option<ControlStats>,
        /// The offline feed.
        prefixed feed: Option<FeedCounters>,
        /// `--pcap-out`.
        prefixed pcap_out: Option<PcapOutCounters>,
        /// The runtime's own.
        group runtime: RuntimeCounters,
    }
}

control::counters! {
    /// One worker's counters as Prometheus shows them: every family labelled `worker`.
    pub struct WorkerTotals {
        /// The worker's own counters.
        group workers: Counters,
        /// Its session engine's (session replay).
        group session: Option<session::Counters>,
    }
}

/// One latency's distribution at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyLine {
    /// The metric.
    pub metric: Metric,
    /// Samples recorded.
    pub samples: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
}

/// The final numbers of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Every counter.
    pub totals: Totals,
    /// Wall time.
    pub elapsed: Duration,
    /// Each latency metric with samples.
    pub latency: Vec<LatencyLine>,
}

impl Summary {
    /// Every value as `(name, value)`: the counters by their model names, then each latency's
    /// samples, p50 and p99 (µs). The final report and the tests read this.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v = self.totals.named();
        for l in &self.latency {
            let name = l.metric.name();
            v.push((format!("latency_{name}_samples"), l.samples));
            v.push((format!("latency_{name}_p50_us"), l.p50_ns / 1000));
            v.push((format!("latency_{name}_p99_us"), l.p99_ns / 1000));
        }
        v
    }
}

/// The distribution lines of every metric that has samples.
pub(super) fn latency_lines(export: &LatencyExport) -> Vec<LatencyLine> {
    Metric::ALL
        .iter()
        .filter_map(|m| {
            let h = export.histogram(*m);
            (!h.is_empty()).then(|| LatencyLine {
                metric: *m,
                samples: h.len(),
                p50_ns: export.p(*m, 0.5).unwrap_or(0),
                p99_ns: export.p(*m, 0.99).unwrap_or(0),
            })
        })
        .collect()
}

/// The Prometheus view: every counter of the model, the worker-owned ones per worker (label
/// `worker`), the others once; the uptime, the build; every latency as a histogram.
pub(super) fn metrics_snapshot(
    totals: &Totals,
    workers: &[WorkerTotals],
    elapsed: Duration,
    export: Option<&LatencyExport>,
) -> MetricsSnapshot {
    let mut snap = MetricsSnapshot::default();
    for (i, w) in workers.iter().enumerate() {
        snap = snap.with_labelled_counters("xdpcopy", w, &[("worker", i.to_string())]);
    }
    snap = snap
        .with_remaining_counters("xdpcopy", totals)
        .with_gauge("xdpcopy_uptime_seconds", "Seconds since start.", Vec::new(), elapsed.as_secs_f64())
        .with_gauge(
            "xdpcopy_build_info",
            "The running build: version and git commit (always 1).",
            vec![("version", env!("CARGO_PKG_VERSION").to_string()), ("commit", crate::cli::GIT_COMMIT.to_string())],
            1.0,
        );
    match export {
        Some(e) => snap.with_latency(e),
        None => snap,
    }
}

/// The run's metadata for the exports (peers.md §5.6).
pub(super) fn run_meta(config: &Config, mode: Option<bpf::XdpMode>, zero_copy: bool) -> serde_json::Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "xdpcopy_version": env!("CARGO_PKG_VERSION"),
        "git_commit": crate::cli::GIT_COMMIT,
        "argv": std::env::args().collect::<Vec<_>>(),
        "kernel": kernel.trim(),
        "input": config.input,
        "output": config.output,
        // Offline, no program is attached: the feed hands the frames to the workers.
        "xdp_mode": mode.map_or_else(|| "none (offline feed)".to_string(), |m| m.to_string()),
        "offline": config.offline.as_ref().map(|p| p.display().to_string()),
        "bind_mode": if zero_copy { "zero-copy" } else { "copy" },
        "need_wakeup": true,
        "queues": config.queues,
        "cores": config.cores,
        "mode": match &config.mode { Mode::Stateless => "stateless", Mode::Session(_) => "session" },
        "intercepts": match &config.mode {
            Mode::Session(o) => o.intercepts.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            Mode::Stateless => Vec::new(),
        },
        "channel_protocol_version": 6,
        "clock": "CLOCK_MONOTONIC (worker), bpf_ktime_get_ns (XDP arrival)",
        "latency_method": "test_response and handshake are measured at the copier: sent -> the returned header handled by the worker, so they include the return path (test server -> assist -> intercept flush, at most 500 us when busy -> channel -> control thread -> worker)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter of the model appears, by the same name, in the summary, the JSON and
    /// Prometheus.
    #[test]
    fn every_counter_appears_in_every_output_by_the_same_name() {
        let mut totals = Totals {
            session: Some(session::Counters::default()),
            channel: Some(ControlStats::default()),
            feed: Some(FeedCounters::default()),
            pcap_out: Some(PcapOutCounters::default()),
            ..Totals::default()
        };
        // Distinct values, so a misplaced value would show.
        let mut n = 0;
        totals.visit_mut(&mut |v| {
            n += 1;
            *v = n;
        });
        let summary = Summary { totals: totals.clone(), ..Summary::default() };
        let named = summary.named();
        // Prometheus: the worker-owned families come per worker (label `worker`), the others once.
        let worker = WorkerTotals { workers: totals.workers, session: totals.session };
        let text = metrics_snapshot(&totals, &[worker], Duration::from_secs(1), None).render();
        let worker_families: std::collections::HashSet<String> = {
            let mut names = std::collections::HashSet::new();
            WorkerTotals { session: Some(session::Counters::default()), ..WorkerTotals::default() }.visit(
                "",
                &mut |f| {
                    names.insert(f.family_name("xdpcopy"));
                },
            );
            names
        };
        let path = std::env::temp_dir().join(format!("xdpcopy-summary-test-{}.json", std::process::id()));
        let empty = LatencyExport::new(None, serde_json::Value::Null).unwrap();
        control::latency::write_summary_json(&path, &named, &empty, serde_json::Value::Null).unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        let json = &json["counters"];
        let mut seen = std::collections::HashSet::new();
        totals.visit("", &mut |f| {
            let flat = f.flat_name();
            assert!(seen.insert(flat.clone()), "{flat} appears twice in the model");
            assert!(named.contains(&(flat.clone(), f.value)), "{flat} missing from the summary");
            assert_eq!(json[&flat], f.value, "{flat} missing from the JSON");
            let worker = if worker_families.contains(&f.family_name("xdpcopy")) { "worker=\"0\"" } else { "" };
            let labels: Vec<String> =
                [worker.to_string(), f.label.map(|(k, l)| format!("{k}=\"{l}\"")).unwrap_or_default()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect();
            let sample = match labels.is_empty() {
                false => format!("{}{{{}}} {}\n", f.prometheus_name("xdpcopy"), labels.join(","), f.value),
                true => format!("{} {}\n", f.prometheus_name("xdpcopy"), f.value),
            };
            assert!(text.contains(&sample), "{flat}: no `{sample}` in the Prometheus text");
        });
        assert_eq!(seen.len(), named.len());
        assert!(text.contains("xdpcopy_build_info{version="), "{text}");
        assert!(text.contains("# TYPE xdpcopy_drop_total counter\n"), "{text}");
        assert!(text.contains("# TYPE xdpcopy_active gauge\n"), "{text}");
        // Names the tests and the docs rely on.
        for name in ["rx_frames", "dropped", "drop_tx_ring_full", "malformed_truncated", "conns", "xdp_passed"] {
            assert!(seen.contains(name), "{name}");
        }
        for name in ["xsk_rx_ring_full", "channel_reconnects", "feed_ms", "pcap_out_written"] {
            assert!(seen.contains(name), "{name}");
        }
    }
}
