//! Latency histograms and their export: recording in the workers, merging and writing in the
//! control thread, a Prometheus endpoint, a JSON summary and the percentile plot.
//!
//! ```text
//!  worker i: Recorder ──swap()──► RecorderExchange ──drain()──► LatencyExport (control thread)
//!   record(m, ns)      ◄── cleared spare ──┘    (two ArrayQueues)     │ cumulative ALL + per worker
//!                                                                     ├─► PREFIX.hlog (interval log 1.3)
//!                                                                     ├─► PREFIX_summary.csv
//!                                                                     ├─► PREFIX_intervals.csv
//!                                      finish() ──────────────────────├─► PREFIX_<metric>.percentiles.csv
//!                                                                     ├─► PREFIX_<metric>.hgrm / .buckets.csv
//!                                                                     └─► PREFIX_run_meta.json
//!  MetricsServer (GET /metrics) ◄── update(MetricsSnapshot: counters, histograms)     write_summary_json(FILE)
//!  `xdpcopy report PREFIX` ── render_report() ──► PREFIX_report.png, PREFIX_report.svg
//! ```
//!
//! # Design
//!
//! - One [`Recorder`] per worker holds one plain `Histogram<u64>` per [`Metric`] in ns
//!   (1 ns ..= 60 s, 3 significant digits), allocated once. Recording is an index computation
//!   and an add: no allocation, no lock, no atomic. Values above 60 s are clamped and counted.
//! - At each interval tick a worker hands its full recorder to the control thread and gets a
//!   cleared spare back ([`RecorderExchange::swap`]); the control thread merges it
//!   ([`LatencyExport::add_interval`]), clears it and returns it as a spare. Steady state moves
//!   the same boxes around and allocates nothing; if no spare is there the worker keeps its own
//!   recorder, cleared, and the interval is counted as lost (never a block).
//! - Per-worker histograms merge losslessly into the "ALL" view, so every statistic (CSV, hgrm,
//!   Prometheus, JSON) is derived from the same HdrHistogram data.
//! - The percentile CSV and `.hgrm` writers reproduce HdrHistogram's
//!   `outputPercentileDistribution` byte for byte (Java's iterator arithmetic and its half-up
//!   decimal rounding); `testdata/` holds the Java reference output the unit tests compare to.
//!
//! # Files written with `--latency-csv PREFIX`
//!
//! A PREFIX that is a directory (exists as one or ends in `/`) means `PREFIX/latency`.
//! Every CSV has one header line, no comment lines, `\n` line ends, units in the column names.
//!
//! | file | content |
//! |---|---|
//! | `PREFIX_<metric>.percentiles.csv` | HdrHistogram percentile CSV, values in µs (ns ÷ 1000), 3 decimals, 5 ticks per half distance |
//! | `PREFIX_<metric>.hgrm` | the same distribution as HdrHistogram text, with the Mean/Max/Buckets footer |
//! | `PREFIX_<metric>.buckets.csv` | `lower_ns,upper_ns,count,cumulative_count,cumulative_fraction` per recorded bucket |
//! | `PREFIX.hlog` | HdrHistogram interval log 1.3, `Tag=<metric>.<worker>`, V2 deflate histograms in ns, Interval_Max in ms |
//! | `PREFIX_summary.csv` | one row per interval × worker × metric with samples, plus `worker=ALL` ([`SUMMARY_HEADER`]) |
//! | `PREFIX_intervals.csv` | one row per interval: traffic totals, sessions, requests, per-metric percentiles ([`intervals_header`]) |
//! | `PREFIX_run_meta.json` | the run metadata, the units and the list of files |

mod export;
mod format;
mod metrics;
mod recorder;
mod report;

pub use export::{intervals_header, write_summary_json, IntervalTotals, LatencyExport, SUMMARY_HEADER};
pub use format::{write_hgrm, write_percentiles_csv};
pub use metrics::{
    latency_buckets, Buckets, Family, HistogramFamily, Labels, MetricsServer, MetricsSnapshot, Value, CONTENT_TYPE,
    LATENCY_BUCKETS_NS, LATENCY_FAMILY,
};
pub use recorder::{new_histogram, Recorder, RecorderExchange, HIGHEST_NS, LOWEST_NS, SIGNIFICANT_DIGITS};
pub use report::{render_report, ReportError};

/// The latencies xdpcopy measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// `test_response`: a request's first segment sent to the test server → its first response
    /// segment (the returned header) received.
    TestResponse,
    /// `handshake`: SYN (or fake SYN) sent → SYN-ACK received.
    Handshake,
    /// `production`: the online server, first request segment → first response segment, both
    /// seen on the mirror.
    Production,
    /// `dataplane`: XDP arrival → TX submission, per frame (sampled).
    Dataplane,
    /// `replay_rtt`: a request segment sent to the test server → its ack back in the worker
    /// (test server → assist → intercept → channel → control thread → worker).
    ReplayRtt,
}

impl Metric {
    /// Every metric, in index order.
    pub const ALL: [Metric; 5] =
        [Metric::TestResponse, Metric::Handshake, Metric::Production, Metric::Dataplane, Metric::ReplayRtt];
    /// The number of metrics.
    pub const COUNT: usize = Self::ALL.len();

    /// Returns the metric's name as used in file names, tags, CSV and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::TestResponse => "test_response",
            Metric::Handshake => "handshake",
            Metric::Production => "production",
            Metric::Dataplane => "dataplane",
            Metric::ReplayRtt => "replay_rtt",
        }
    }

    /// Returns a one-line description (Prometheus HELP, run metadata).
    pub fn description(self) -> &'static str {
        match self {
            Metric::TestResponse => "test server: request's first segment sent -> first response segment received",
            Metric::Handshake => "test server: SYN sent -> SYN-ACK received",
            Metric::Production => "online server: first request segment -> first response segment, seen on the mirror",
            Metric::Dataplane => "xdpcopy: XDP arrival -> TX submission per frame (sampled)",
            Metric::ReplayRtt => {
                "replay round trip: request segment sent -> the test server's ack of it back in the worker"
            }
        }
    }

    /// Returns the metric's position in [`Metric::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses a metric name as returned by [`Metric::name`].
    pub fn from_name(name: &str) -> Option<Metric> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A prefix naming a directory (existing, or ending in `/`) means `<dir>/latency`.
pub(crate) fn resolve_prefix(p: &std::path::Path) -> std::path::PathBuf {
    let ends_in_slash = p.as_os_str().as_encoded_bytes().last() == Some(&b'/');
    if ends_in_slash || p.is_dir() {
        p.join("latency")
    } else {
        p.to_path_buf()
    }
}

/// Returns `prefix` with `suffix` appended to its last component (`run1` + `.hlog`).
pub(crate) fn file(prefix: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    std::path::PathBuf::from(s)
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip() {
        for (i, m) in Metric::ALL.into_iter().enumerate() {
            assert_eq!(m.index(), i);
            assert_eq!(Metric::from_name(m.name()), Some(m));
        }
        assert_eq!(Metric::from_name("syn"), None);
    }

    #[test]
    fn prefix_resolution() {
        use std::path::{Path, PathBuf};
        assert_eq!(resolve_prefix(Path::new("out/")), PathBuf::from("out/latency"));
        assert_eq!(resolve_prefix(Path::new("/nonexistent/run1")), PathBuf::from("/nonexistent/run1"));
        assert_eq!(file(Path::new("a/run1"), "_summary.csv"), PathBuf::from("a/run1_summary.csv"));
    }
}
