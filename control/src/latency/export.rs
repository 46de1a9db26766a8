//! The control thread's side: cumulative histograms (ALL and per worker) and the file writers.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::{
    serialization::{
        interval_log::{IntervalLogWriterBuilder, IntervalLogWriterError, Tag},
        V2DeflateSerializer,
    },
    Histogram,
};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{
    file,
    format::{java_fixed, java_mean, java_stddev},
    new_histogram, resolve_prefix, write_hgrm, write_percentiles_csv, Metric, Recorder, HIGHEST_NS, LOWEST_NS,
    SIGNIFICANT_DIGITS,
};

/// The header of `PREFIX_summary.csv` (peers.md §5.6): one row per interval × worker × metric.
pub const SUMMARY_HEADER: &str = "timestamp_s,interval_s,worker,metric,samples,min_us,mean_us,stddev_us,\
p50_us,p75_us,p90_us,p99_us,p99_9_us,p99_99_us,p99_999_us,max_us";

/// The quantiles of the summary CSV and the JSON summary (wrk2's list, without 100 % = max).
const SUMMARY_QUANTILES: [(f64, &str); 7] = [
    (0.5, "p50_us"),
    (0.75, "p75_us"),
    (0.9, "p90_us"),
    (0.99, "p99_us"),
    (0.999, "p99_9_us"),
    (0.9999, "p99_99_us"),
    (0.99999, "p99_999_us"),
];

/// The quantiles of `PREFIX_intervals.csv` (max follows them).
const INTERVAL_QUANTILES: [(f64, &str); 5] =
    [(0.5, "p50_us"), (0.9, "p90_us"), (0.99, "p99_us"), (0.999, "p99_9_us"), (0.9999, "p99_99_us")];

/// The interval log's Interval_Max divisor: histograms hold ns, the max column shows ms.
const HLOG_MAX_DIVISOR: f64 = 1_000_000.0;

/// The percentile ticks per half distance of the exported distributions (HdrHistogram default).
const TICKS_PER_HALF: u32 = 5;

/// The unit ratio of the exported distributions: ns ÷ 1000 = µs.
const NS_PER_US: f64 = 1000.0;

/// The legend line of an HdrHistogram interval log.
const HLOG_LEGEND: &str = "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";

/// Returns the header of `PREFIX_intervals.csv`: traffic totals, then per metric (in
/// [`Metric::ALL`] order) `<metric>_samples,<metric>_p50_us,…,<metric>_p99_99_us,<metric>_max_us`.
pub fn intervals_header() -> String {
    let mut h = String::from(
        "timestamp_s,interval_s,frames_in,frames_out,bytes_in,bytes_out,mbit_per_s_in,mbit_per_s_out,\
sessions_active,sessions_new,requests,responses",
    );
    for m in Metric::ALL {
        h.push_str(&format!(",{m}_samples"));
        for (_, col) in INTERVAL_QUANTILES {
            h.push_str(&format!(",{m}_{col}"));
        }
        h.push_str(&format!(",{m}_max_us"));
    }
    h
}

/// The traffic of one control interval, for `PREFIX_intervals.csv`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IntervalTotals {
    /// Frames received (captured) in the interval.
    pub frames_in: u64,
    /// Frames transmitted in the interval.
    pub frames_out: u64,
    /// Bytes of the received frames (Ethernet header to end of payload, no FCS).
    pub bytes_in: u64,
    /// Bytes of the transmitted frames (Ethernet header to end of payload, no FCS).
    pub bytes_out: u64,
    /// Sessions alive at the end of the interval.
    pub sessions_active: u64,
    /// Sessions started in the interval.
    pub sessions_new: u64,
    /// Requests sent to the test server in the interval.
    pub requests: u64,
    /// Responses received from the test server in the interval.
    pub responses: u64,
}

/// The statistics one CSV/JSON row shows, all in ns.
struct Stats {
    samples: u64,
    min: u64,
    mean: f64,
    stddev: f64,
    max: u64,
}

impl Stats {
    fn of(h: &Histogram<u64>) -> Self {
        Self { samples: h.len(), min: h.min(), mean: java_mean(h), stddev: java_stddev(h), max: h.max() }
    }
}

/// The open output files of a run with `--latency-csv`.
struct Outputs {
    prefix: PathBuf,
    summary: BufWriter<File>,
    intervals: BufWriter<File>,
    hlog: BufWriter<File>,
    serializer: V2DeflateSerializer,
    /// What the crate's log writer emits before the first row with our settings (stripped per row).
    hlog_prologue: Vec<u8>,
    hlog_row: Vec<u8>,
    base_time: SystemTime,
}

/// The control thread's side: cumulative per-metric histograms (ALL and per worker), plus writers.
///
/// Feed it every drained [`Recorder`] with [`LatencyExport::add_interval`], end each control
/// interval with [`LatencyExport::close_interval`], and call [`LatencyExport::finish`] at exit.
/// Without a prefix it only keeps the histograms (for `--metrics` and `--summary-json`).
pub struct LatencyExport {
    out: Option<Outputs>,
    run_meta: Value,
    start: SystemTime,
    all: [Histogram<u64>; Metric::COUNT],
    workers: Vec<[Option<Histogram<u64>>; Metric::COUNT]>,
    /// This control interval, all workers (for the `worker=ALL` rows and the intervals CSV).
    pending: [Histogram<u64>; Metric::COUNT],
    pending_span: Option<(SystemTime, SystemTime)>,
    intervals_added: u64,
    clamped: u64,
}

impl LatencyExport {
    /// Creates the export; with `prefix` (`--latency-csv`) it creates the summary CSV, the
    /// intervals CSV, the interval log and `PREFIX_run_meta.json` right away.
    ///
    /// # Errors
    /// Returns the error of creating the directory or a file.
    pub fn new(prefix: Option<PathBuf>, run_meta: Value) -> io::Result<Self> {
        Self::with_start_time(prefix, run_meta, SystemTime::now())
    }

    /// Like [`LatencyExport::new`] with an explicit run start (the interval log's StartTime and
    /// BaseTime, truncated to ms).
    ///
    /// # Errors
    /// Returns the error of creating the directory or a file.
    pub fn with_start_time(prefix: Option<PathBuf>, run_meta: Value, start: SystemTime) -> io::Result<Self> {
        let start_ms = start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let start = UNIX_EPOCH + Duration::from_millis(start_ms);
        let out = prefix.map(|p| Outputs::create(resolve_prefix(&p), start)).transpose()?;
        let export = Self {
            out,
            run_meta,
            start,
            all: std::array::from_fn(|_| new_histogram()),
            workers: Vec::new(),
            pending: std::array::from_fn(|_| new_histogram()),
            pending_span: None,
            intervals_added: 0,
            clamped: 0,
        };
        if let Some(out) = &export.out {
            export.write_run_meta(&out.prefix, &[], false)?;
        }
        Ok(export)
    }

    /// Merges one worker's interval recorder (recorded from `start` for `len`) and appends its
    /// interval log rows (`Tag=<metric>.<worker>`) and summary rows, one per metric with samples.
    ///
    /// # Errors
    /// Returns a write error; the histograms are merged even then.
    pub fn add_interval(&mut self, worker: usize, rec: &Recorder, start: SystemTime, len: Duration) -> io::Result<()> {
        if self.workers.len() <= worker {
            self.workers.resize_with(worker + 1, || std::array::from_fn(|_| None));
        }
        for m in Metric::ALL {
            let h = rec.histogram(m);
            if h.is_empty() {
                continue;
            }
            let i = m.index();
            // Same bounds everywhere, so adding cannot fail.
            let merged = self.all[i].add(h).is_ok()
                & self.workers[worker][i].get_or_insert_with(new_histogram).add(h).is_ok()
                & self.pending[i].add(h).is_ok();
            debug_assert!(merged, "latency histograms share one configuration");
        }
        self.clamped += rec.clamped();
        self.intervals_added += 1;
        let end = start + len;
        self.pending_span = Some(match self.pending_span {
            Some((s, e)) => (s.min(start), e.max(end)),
            None => (start, end),
        });

        let Some(out) = &mut self.out else { return Ok(()) };
        let worker_label = worker.to_string();
        for m in Metric::ALL {
            let h = rec.histogram(m);
            if h.is_empty() {
                continue;
            }
            out.write_hlog_row(h, start, len, &format!("{m}.{worker}"))?;
            write_summary_row(&mut out.summary, start, len, &worker_label, m, h)?;
        }
        Ok(())
    }

    /// Ends the current control interval: writes the `worker=ALL` summary rows of the metrics
    /// that had samples since the last close, and one `PREFIX_intervals.csv` row with `totals`.
    ///
    /// # Errors
    /// Returns a write error.
    pub fn close_interval(&mut self, start: SystemTime, len: Duration, totals: &IntervalTotals) -> io::Result<()> {
        let result = match &mut self.out {
            Some(out) => write_all_rows(&mut out.summary, start, len, &self.pending)
                .and_then(|()| write_intervals_row(&mut out.intervals, start, len, totals, &self.pending)),
            None => Ok(()),
        };
        for h in &mut self.pending {
            h.reset();
        }
        self.pending_span = None;
        result
    }

    /// Returns the value at quantile `q` (0.0..=1.0, e.g. 0.99) of metric `m` over the whole run
    /// and all workers, in ns; `None` without samples.
    pub fn p(&self, m: Metric, q: f64) -> Option<u64> {
        let h = &self.all[m.index()];
        (!h.is_empty()).then(|| h.value_at_quantile(q))
    }

    /// Returns the cumulative histogram of metric `m` over all workers (ns).
    pub fn histogram(&self, m: Metric) -> &Histogram<u64> {
        &self.all[m.index()]
    }

    /// Returns the cumulative histogram of metric `m` of one worker, if it recorded any sample.
    pub fn worker_histogram(&self, worker: usize, m: Metric) -> Option<&Histogram<u64>> {
        self.workers.get(worker).and_then(|w| w[m.index()].as_ref())
    }

    /// Returns the number of worker intervals merged so far.
    pub fn intervals_added(&self) -> u64 {
        self.intervals_added
    }

    /// Returns the number of samples above 60 s, recorded as 60 s.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// Returns the resolved file prefix, if files are written.
    pub fn prefix(&self) -> Option<&Path> {
        self.out.as_ref().map(|o| o.prefix.as_path())
    }

    /// Returns the number of workers that handed over at least one interval.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Writes the final files and flushes the others; returns every file of the run.
    ///
    /// Writes `PREFIX_<metric>.percentiles.csv`, `.hgrm` and `.buckets.csv` for each metric with
    /// samples, the `worker=ALL` rows of an interval that was not closed, and
    /// `PREFIX_run_meta.json` (with the file list). Without a prefix it writes nothing.
    ///
    /// # Errors
    /// Returns the first write error.
    pub fn finish(&mut self) -> io::Result<Vec<PathBuf>> {
        if let (Some(out), Some((s, e))) = (&mut self.out, self.pending_span.take()) {
            let len = e.duration_since(s).unwrap_or_default();
            write_all_rows(&mut out.summary, s, len, &self.pending)?;
            for h in &mut self.pending {
                h.reset();
            }
        }
        let Some(out) = &mut self.out else { return Ok(Vec::new()) };
        out.summary.flush()?;
        out.intervals.flush()?;
        out.hlog.flush()?;
        let prefix = out.prefix.clone();
        let mut files = vec![file(&prefix, "_summary.csv"), file(&prefix, "_intervals.csv"), file(&prefix, ".hlog")];
        for m in Metric::ALL {
            let h = &self.all[m.index()];
            if h.is_empty() {
                continue;
            }
            let csv = file(&prefix, &format!("_{m}.percentiles.csv"));
            write_file(&csv, |w| write_percentiles_csv(h, NS_PER_US, TICKS_PER_HALF, w))?;
            let hgrm = file(&prefix, &format!("_{m}.hgrm"));
            write_file(&hgrm, |w| write_hgrm(h, NS_PER_US, TICKS_PER_HALF, w))?;
            let buckets = file(&prefix, &format!("_{m}.buckets.csv"));
            write_file(&buckets, |w| write_buckets_csv(h, w))?;
            files.extend([csv, hgrm, buckets]);
        }
        let meta = file(&prefix, "_run_meta.json");
        files.push(meta);
        self.write_run_meta(&prefix, &files, true)?;
        Ok(files)
    }

    /// Writes `PREFIX_run_meta.json`: the caller's metadata plus a `latency_export` section.
    fn write_run_meta(&self, prefix: &Path, files: &[PathBuf], finished: bool) -> io::Result<()> {
        let metrics: Map<String, Value> = Metric::ALL
            .into_iter()
            .map(|m| {
                let v = json!({ "description": m.description(), "samples": self.all[m.index()].len() });
                (m.name().to_string(), v)
            })
            .collect();
        let section = json!({
            "finished": finished,
            "start_time_s": epoch_seconds(self.start).parse::<f64>().unwrap_or(0.0),
            "histogram": {
                "value_unit": "ns",
                "lowest_ns": LOWEST_NS,
                "highest_ns": HIGHEST_NS,
                "significant_digits": SIGNIFICANT_DIGITS,
                "clamped_samples": self.clamped,
            },
            "units": {
                "percentiles_csv_value": "us",
                "hgrm_value": "us",
                "buckets_csv": "ns",
                "hlog_histogram": "ns",
                "hlog_interval_max": "ms",
                "summary_csv": "us (column suffix _us), seconds (_s)",
                "intervals_csv": "us (_us), seconds (_s), Mbit/s (mbit_per_s_*), counts otherwise",
            },
            "percentile_ticks_per_half_distance": TICKS_PER_HALF,
            "hlog_tags": "<metric>.<worker>",
            "intervals_added": self.intervals_added,
            "metrics": metrics,
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        });
        let mut doc = match &self.run_meta {
            Value::Object(o) => o.clone(),
            Value::Null => Map::new(),
            other => Map::from_iter([("run".to_string(), other.clone())]),
        };
        doc.insert("latency_export".into(), section);
        write_json_atomic(&file(prefix, "_run_meta.json"), &Value::Object(doc))
    }
}

impl Outputs {
    fn create(prefix: PathBuf, base_time: SystemTime) -> io::Result<Self> {
        if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut summary = BufWriter::new(File::create(file(&prefix, "_summary.csv"))?);
        writeln!(summary, "{SUMMARY_HEADER}")?;
        let mut intervals = BufWriter::new(File::create(file(&prefix, "_intervals.csv"))?);
        writeln!(intervals, "{}", intervals_header())?;

        let mut serializer = V2DeflateSerializer::new();
        let mut hlog_prologue = Vec::new();
        hlog_builder().begin_log_with(&mut hlog_prologue, &mut serializer)?;
        let mut hlog = BufWriter::new(File::create(file(&prefix, ".hlog"))?);
        let base = epoch_seconds(base_time);
        writeln!(hlog, "#[xdpcopy latency interval log: histograms in ns, Interval_Max in ms, Tag=<metric>.<worker>]")?;
        writeln!(hlog, "#[Histogram log format version 1.3]")?;
        writeln!(hlog, "#[StartTime: {base} (seconds since epoch), {}]", java_date_utc(base_time))?;
        writeln!(hlog, "#[BaseTime: {base} (seconds since epoch)]")?;
        hlog.write_all(&hlog_prologue)?;
        writeln!(hlog, "{HLOG_LEGEND}")?;
        Ok(Self { prefix, summary, intervals, hlog, serializer, hlog_prologue, hlog_row: Vec::new(), base_time })
    }

    /// Appends one interval histogram to the log through the crate's interval log writer.
    fn write_hlog_row(&mut self, h: &Histogram<u64>, start: SystemTime, len: Duration, tag: &str) -> io::Result<()> {
        let offset = start.duration_since(self.base_time).unwrap_or_default();
        self.hlog_row.clear();
        {
            let mut w = hlog_builder().begin_log_with(&mut self.hlog_row, &mut self.serializer)?;
            w.write_histogram(h, offset, len, Tag::new(tag)).map_err(|e| match e {
                IntervalLogWriterError::IoError(e) => e,
                IntervalLogWriterError::SerializeError(e) => {
                    io::Error::other(format!("cannot serialize the {tag} histogram: {e:?}"))
                }
            })?;
        }
        let row = self.hlog_row.strip_prefix(self.hlog_prologue.as_slice()).unwrap_or(&self.hlog_row);
        self.hlog.write_all(row)
    }
}

/// The crate's interval log writer settings; with them it emits only a MaxValueDivisor comment
/// before the rows, which [`Outputs`] writes once.
fn hlog_builder() -> IntervalLogWriterBuilder {
    let mut b = IntervalLogWriterBuilder::new();
    b.with_max_value_divisor(HLOG_MAX_DIVISOR);
    b
}

fn write_file(path: &Path, f: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    f(&mut w)?;
    w.flush()
}

/// Writes pretty JSON to `path` through a temporary file and a rename.
fn write_json_atomic(path: &Path, v: &Value) -> io::Result<()> {
    let tmp = file(path, ".tmp");
    write_file(&tmp, |w| {
        serde_json::to_writer_pretty(&mut *w, v).map_err(io::Error::other)?;
        w.write_all(b"\n")
    })?;
    fs::rename(&tmp, path)
}

/// `ns` as µs with 3 decimals, exactly.
fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// Seconds since the epoch with 3 decimals (truncated to ms).
fn epoch_seconds(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    seconds(d)
}

/// A duration in seconds with 3 decimals (truncated to ms).
fn seconds(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

fn write_summary_row(
    w: &mut impl Write,
    start: SystemTime,
    len: Duration,
    worker: &str,
    m: Metric,
    h: &Histogram<u64>,
) -> io::Result<()> {
    let s = Stats::of(h);
    write!(
        w,
        "{},{},{worker},{m},{},{},{:.3},{:.3}",
        epoch_seconds(start),
        seconds(len),
        s.samples,
        us(s.min),
        s.mean / NS_PER_US,
        s.stddev / NS_PER_US
    )?;
    for (q, _) in SUMMARY_QUANTILES {
        write!(w, ",{}", us(h.value_at_quantile(q)))?;
    }
    writeln!(w, ",{}", us(s.max))
}

fn write_all_rows(
    w: &mut impl Write,
    start: SystemTime,
    len: Duration,
    pending: &[Histogram<u64>; Metric::COUNT],
) -> io::Result<()> {
    for m in Metric::ALL {
        let h = &pending[m.index()];
        if !h.is_empty() {
            write_summary_row(w, start, len, "ALL", m, h)?;
        }
    }
    Ok(())
}

fn write_intervals_row(
    w: &mut impl Write,
    start: SystemTime,
    len: Duration,
    t: &IntervalTotals,
    pending: &[Histogram<u64>; Metric::COUNT],
) -> io::Result<()> {
    let secs = len.as_secs_f64();
    let mbit = |bytes: u64| if secs > 0.0 { bytes as f64 * 8.0 / 1e6 / secs } else { 0.0 };
    write!(
        w,
        "{},{},{},{},{},{},{:.3},{:.3},{},{},{},{}",
        epoch_seconds(start),
        seconds(len),
        t.frames_in,
        t.frames_out,
        t.bytes_in,
        t.bytes_out,
        mbit(t.bytes_in),
        mbit(t.bytes_out),
        t.sessions_active,
        t.sessions_new,
        t.requests,
        t.responses
    )?;
    for m in Metric::ALL {
        let h = &pending[m.index()];
        write!(w, ",{}", h.len())?;
        if h.is_empty() {
            // No samples: empty cells (NaN for CSV readers), never a made-up 0.
            write!(w, "{}", ",".repeat(INTERVAL_QUANTILES.len() + 1))?;
        } else {
            for (q, _) in INTERVAL_QUANTILES {
                write!(w, ",{}", us(h.value_at_quantile(q)))?;
            }
            write!(w, ",{}", us(h.max()))?;
        }
    }
    writeln!(w)
}

/// `lower_ns,upper_ns,count,cumulative_count,cumulative_fraction`, one row per recorded bucket.
fn write_buckets_csv(h: &Histogram<u64>, w: &mut impl Write) -> io::Result<()> {
    writeln!(w, "lower_ns,upper_ns,count,cumulative_count,cumulative_fraction")?;
    let total = h.len();
    let mut cumulative = 0;
    for v in h.iter_recorded() {
        cumulative += v.count_at_value();
        let upper = v.value_iterated_to();
        let fraction = java_fixed(cumulative as f64 / total as f64, 12);
        writeln!(w, "{},{upper},{},{cumulative},{fraction}", h.lowest_equivalent(upper), v.count_at_value())?;
    }
    Ok(())
}

/// The JSON statistics of one histogram (µs), `null`s without samples.
fn stats_json(h: &Histogram<u64>) -> Value {
    let mut o = Map::new();
    o.insert("samples".into(), json!(h.len()));
    let s = Stats::of(h);
    let num = |ns: f64| if h.is_empty() { Value::Null } else { json!(ns / NS_PER_US) };
    o.insert("min_us".into(), num(s.min as f64));
    o.insert("mean_us".into(), num(s.mean));
    o.insert("stddev_us".into(), num(s.stddev));
    for (q, name) in SUMMARY_QUANTILES {
        o.insert(name.into(), num(h.value_at_quantile(q) as f64));
    }
    o.insert("max_us".into(), num(s.max as f64));
    Value::Object(o)
}

/// Writes the JSON summary at exit (`--summary-json FILE`): `meta`, the `counters` and per
/// metric the run's latency statistics in µs (all workers, and per worker under `workers`).
///
/// # Errors
/// Returns the error of writing `path`.
pub fn write_summary_json(
    path: &Path,
    counters: &[(String, u64)],
    latency: &LatencyExport,
    meta: Value,
) -> io::Result<()> {
    let counters: Map<String, Value> = counters.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let latency_json: Map<String, Value> = Metric::ALL
        .into_iter()
        .map(|m| {
            let mut v = stats_json(latency.histogram(m));
            let workers: Map<String, Value> = (0..latency.workers.len())
                .filter_map(|w| latency.worker_histogram(w, m).map(|h| (w.to_string(), stats_json(h))))
                .collect();
            if let Value::Object(o) = &mut v {
                o.insert("workers".into(), Value::Object(workers));
            }
            (m.name().to_string(), v)
        })
        .collect();
    let doc = json!({
        "meta": meta,
        "counters": counters,
        "latency_unit": "us",
        "latency": latency_json,
        "latency_clamped_samples": latency.clamped(),
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    write_json_atomic(path, &doc)
}

/// Formats `t` like Java's `Date.toString()` in UTC: `Thu Jan 01 00:00:00 UTC 1970`.
fn java_date_utc(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_date() {
        assert_eq!(java_date_utc(UNIX_EPOCH), "Thu Jan 01 00:00:00 UTC 1970");
        let t = UNIX_EPOCH + Duration::from_secs(1_441_812_279);
        assert_eq!(java_date_utc(t), "Wed Sep 09 15:24:39 UTC 2015");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(java_date_utc(leap), "Tue Feb 29 00:00:00 UTC 2000");
    }

    #[test]
    fn us_and_seconds_are_exact() {
        assert_eq!(us(0), "0.000");
        assert_eq!(us(1), "0.001");
        assert_eq!(us(10_002_431), "10002.431");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500");
        assert_eq!(epoch_seconds(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_999)), "1700000000.123");
    }

    #[test]
    fn intervals_header_has_every_metric() {
        let h = intervals_header();
        assert!(h.starts_with("timestamp_s,interval_s,frames_in,frames_out,"));
        assert!(h.ends_with(",replay_rtt_p99_99_us,replay_rtt_max_us"));
        assert_eq!(h.split(',').count(), 12 + Metric::COUNT * 7);
    }
}
