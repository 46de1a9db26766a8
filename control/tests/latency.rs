//! Latency export end to end: recorders through the exchange into the export, the files it
//! writes read back, the Prometheus endpoint over real HTTP, the JSON summary and the report.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use control::latency::{
    intervals_header, render_report, write_hgrm, write_percentiles_csv, write_summary_json, IntervalTotals,
    LatencyExport, Metric, MetricsServer, MetricsSnapshot, Recorder, RecorderExchange, ReportError, SUMMARY_HEADER,
};
use hdrhistogram::{
    serialization::{interval_log::IntervalLogIterator, interval_log::LogEntry, Deserializer},
    Histogram,
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("xdpcopy-latency-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)
}

/// Three intervals of two workers: test_response and production everywhere, handshake on
/// worker 1 only. Returns the export (finished) and the number of samples per metric.
fn run_export(prefix: Option<PathBuf>) -> (LatencyExport, BTreeMap<Metric, u64>) {
    let meta = serde_json::json!({ "xdpcopy_version": "0.1.0", "xdp_mode": "native" });
    let mut export = LatencyExport::with_start_time(prefix, meta, t0()).unwrap();
    let mut counts = BTreeMap::new();
    for interval in 0..3_u64 {
        let start = t0() + Duration::from_secs(interval);
        for worker in 0..2_usize {
            let mut rec = Recorder::new();
            for i in 0..500_u64 {
                let base = 20_000 + 1000 * worker as u64 + 10 * interval;
                rec.record(Metric::TestResponse, base + i * 97);
                rec.record(Metric::Production, 2 * base + i * 53);
                *counts.entry(Metric::TestResponse).or_insert(0) += 1;
                *counts.entry(Metric::Production).or_insert(0) += 1;
                if worker == 1 && i % 5 == 0 {
                    rec.record(Metric::Handshake, 10_000 + i);
                    *counts.entry(Metric::Handshake).or_insert(0) += 1;
                }
            }
            export.add_interval(worker, &rec, start, Duration::from_secs(1)).unwrap();
        }
        let totals = IntervalTotals {
            frames_in: 1000,
            frames_out: 990,
            bytes_in: 1_250_000,
            bytes_out: 1_000_000,
            sessions_active: 12,
            sessions_new: 3,
            requests: 1000,
            responses: 999,
        };
        export.close_interval(start, Duration::from_secs(1), &totals).unwrap();
    }
    (export, counts)
}

#[test]
fn percentile_csv_and_hgrm_exact_for_known_histogram() {
    // 1, 2, 3 ns shown in µs; expected text as HdrHistogram (Java 2.1.11) writes it.
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for v in 1..=3 {
        h.record(v).unwrap();
    }
    let mut csv = Vec::new();
    write_percentiles_csv(&h, 1000.0, 5, &mut csv).unwrap();
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"
0.001,0.000000000000,1,1.00
0.001,0.100000000000,1,1.11
0.001,0.200000000000,1,1.25
0.001,0.300000000000,1,1.43
0.002,0.400000000000,2,1.67
0.002,0.500000000000,2,2.00
0.002,0.550000000000,2,2.22
0.002,0.600000000000,2,2.50
0.002,0.650000000000,2,2.86
0.003,0.700000000000,3,3.33
0.003,1.000000000000,3,Infinity
"
    );
    let mut hgrm = Vec::new();
    write_hgrm(&h, 1000.0, 5, &mut hgrm).unwrap();
    let hgrm = String::from_utf8(hgrm).unwrap();
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n       0.001 0.000000000000          1           1.00\n"));
    assert!(hgrm.ends_with(
        "       0.003 1.000000000000          3
#[Mean    =        0.002, StdDeviation   =        0.001]
#[Max     =        0.003, Total count    =            3]
#[Buckets =           26, SubBuckets     =         2048]
"
    ));
}

#[test]
fn exported_files_read_back() {
    let dir = TempDir::new("files");
    let prefix = dir.0.join("run1");
    let (mut export, counts) = run_export(Some(prefix.clone()));
    let files = export.finish().unwrap();
    for f in &files {
        assert!(f.exists(), "{} listed but missing", f.display());
    }
    let name = |suffix: &str| PathBuf::from(format!("{}{suffix}", prefix.display()));
    assert!(!name("_dataplane.percentiles.csv").exists(), "no file for a metric without samples");

    // Percentile CSVs: exact header, monotone, count = samples, last row Infinity.
    for (m, n) in &counts {
        let text = fs::read_to_string(name(&format!("_{m}.percentiles.csv"))).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), "\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"");
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert!(rows.len() > 10);
        let mut prev = (0.0_f64, -1.0_f64, 0_u64);
        for r in &rows {
            let (v, p, c): (f64, f64, u64) = (r[0].parse().unwrap(), r[1].parse().unwrap(), r[2].parse().unwrap());
            assert!(v >= prev.0 && p > prev.1 && c >= prev.2, "not monotone in {m}: {r:?}");
            assert_eq!(r[1].split('.').nth(1).unwrap().len(), 12);
            assert_eq!(r[0].split('.').nth(1).unwrap().len(), 3);
            prev = (v, p, c);
        }
        let last = rows.last().unwrap();
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2].parse::<u64>().unwrap(), *n);
        assert_eq!(last[3], "Infinity");
        assert_eq!(export.histogram(*m).len(), *n);

        let hgrm = fs::read_to_string(name(&format!("_{m}.hgrm"))).unwrap();
        assert!(hgrm.contains(&format!("Total count    = {n:>12}]")));

        let buckets = fs::read_to_string(name(&format!("_{m}.buckets.csv"))).unwrap();
        let mut lines = buckets.lines();
        assert_eq!(lines.next().unwrap(), "lower_ns,upper_ns,count,cumulative_count,cumulative_fraction");
        let sum: u64 = lines.map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(sum, *n);
    }

    // Summary CSV: exact header; 2 workers × 2–3 metrics + ALL rows per interval.
    let summary = fs::read_to_string(name("_summary.csv")).unwrap();
    let mut lines = summary.lines();
    assert_eq!(
        lines.next().unwrap(),
        "timestamp_s,interval_s,worker,metric,samples,min_us,mean_us,stddev_us,p50_us,p75_us,p90_us,p99_us,p99_9_us,p99_99_us,p99_999_us,max_us"
    );
    assert_eq!(SUMMARY_HEADER, summary.lines().next().unwrap());
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 16));
    assert_eq!(rows.len(), 3 * (2 + 3 + 3));
    assert_eq!(rows[0][0], "1700000000.250");
    assert_eq!(rows[0][1], "1.000");
    let all_samples: u64 =
        rows.iter().filter(|r| r[2] == "ALL" && r[3] == "test_response").map(|r| r[4].parse::<u64>().unwrap()).sum();
    assert_eq!(all_samples, counts[&Metric::TestResponse]);
    for r in &rows {
        let stats: Vec<f64> = r[8..16].iter().map(|v| v.parse().unwrap()).collect();
        assert!(stats.windows(2).all(|w| w[0] <= w[1]), "percentiles not monotone: {r:?}");
    }

    // Intervals CSV: one row per close_interval, same column count as the header.
    let intervals = fs::read_to_string(name("_intervals.csv")).unwrap();
    let mut lines = intervals.lines();
    let header = lines.next().unwrap();
    assert_eq!(header, intervals_header());
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3);
    let cols: Vec<&str> = rows[0].split(',').collect();
    assert_eq!(cols.len(), header.split(',').count());
    assert_eq!(
        &cols[..12],
        ["1700000000.250", "1.000", "1000", "990", "1250000", "1000000", "10.000", "8.000", "12", "3", "1000", "999"]
    );
    // dataplane had no samples: count 0 and empty cells.
    assert_eq!(cols[cols.len() - 7..], ["0", "", "", "", "", "", ""]);

    // run_meta.json: the caller's metadata and the export section.
    let meta: serde_json::Value = serde_json::from_str(&fs::read_to_string(name("_run_meta.json")).unwrap()).unwrap();
    assert_eq!(meta["xdp_mode"], "native");
    assert_eq!(meta["latency_export"]["finished"], true);
    assert_eq!(meta["latency_export"]["units"]["percentiles_csv_value"], "us");
    assert_eq!(meta["latency_export"]["metrics"]["handshake"]["samples"], counts[&Metric::Handshake]);
}

#[test]
fn hlog_rows_parse_back_and_merge_to_cumulative() {
    let dir = TempDir::new("hlog");
    let prefix = dir.0.join("lat");
    let (mut export, _) = run_export(Some(prefix.clone()));
    export.finish().unwrap();
    let bytes = fs::read(format!("{}.hlog", prefix.display())).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap().get(..2), Some("#["));
    assert_eq!(lines.next().unwrap(), "#[Histogram log format version 1.3]");
    assert_eq!(
        lines.next().unwrap(),
        "#[StartTime: 1700000000.250 (seconds since epoch), Tue Nov 14 22:13:20 UTC 2023]"
    );
    assert_eq!(lines.next().unwrap(), "#[BaseTime: 1700000000.250 (seconds since epoch)]");
    assert!(
        text.contains("\n\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n")
    );
    assert!(text.contains("\nTag=test_response.0,0.000,1.000,"));
    assert!(text.contains("\nTag=handshake.1,2.000,1.000,"));

    let mut merged: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut tags = HashSet::new();
    let (mut start_time, mut base_time, mut rows) = (None, None, 0);
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        match entry.unwrap() {
            LogEntry::StartTime(t) => start_time = Some(t),
            LogEntry::BaseTime(t) => base_time = Some(t),
            LogEntry::Interval(ilh) => {
                rows += 1;
                let tag = ilh.tag().expect("every row is tagged").as_str().to_string();
                assert!(ilh.encoded_histogram().starts_with("HISTF"), "V2 deflate encoding");
                let decoded = base64_decode(ilh.encoded_histogram());
                let h: Histogram<u64> = deserializer.deserialize(&mut decoded.as_slice()).unwrap();
                assert!((ilh.max() - h.max() as f64 / 1e6).abs() < 1e-3, "Interval_Max in ms");
                assert_eq!(ilh.duration(), Duration::from_secs(1));
                let metric = tag.split('.').next().unwrap().to_string();
                tags.insert(tag);
                merged
                    .entry(metric)
                    .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap())
                    .add(&h)
                    .unwrap();
            }
        }
    }
    assert_eq!(start_time, Some(Duration::from_millis(1_700_000_000_250)));
    assert_eq!(base_time, start_time);
    assert_eq!(rows, 3 * 5);
    assert!(tags.contains("production.1") && !tags.contains("handshake.0"));
    for m in [Metric::TestResponse, Metric::Production, Metric::Handshake] {
        let cumulative = export.histogram(m);
        let from_log = &merged[m.name()];
        assert_eq!(from_log.len(), cumulative.len());
        assert_eq!(from_log.max(), cumulative.max());
        let a: Vec<(u64, u64)> =
            from_log.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        let b: Vec<(u64, u64)> =
            cumulative.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        assert_eq!(a, b, "{m}: the log does not merge to the cumulative histogram");
    }
}

/// Standard base64 (the interval log's encoding), decoded without another dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0_u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= u32::from(b) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn export_without_prefix_keeps_histograms_only() {
    let (mut export, counts) = run_export(None);
    assert_eq!(export.finish().unwrap(), Vec::<PathBuf>::new());
    assert!(export.prefix().is_none());
    let p50 = export.p(Metric::TestResponse, 0.5).unwrap();
    let p99 = export.p(Metric::TestResponse, 0.99).unwrap();
    assert!(20_000 <= p50 && p50 <= p99 && p99 <= export.histogram(Metric::TestResponse).max());
    assert_eq!(export.p(Metric::Dataplane, 0.5), None);
    assert_eq!(export.worker_histogram(0, Metric::Handshake).map(|h| h.len()), None);
    assert_eq!(export.worker_histogram(1, Metric::Handshake).unwrap().len(), counts[&Metric::Handshake]);
    assert_eq!(export.intervals_added(), 6);
}

#[test]
fn recorder_exchange_reuses_boxes_and_never_blocks() {
    let exchange = RecorderExchange::new(2, 2);
    assert_eq!(exchange.spares_available(), 2);
    let mut held: Vec<Option<Box<Recorder>>> = (0..2).map(|_| Some(Box::new(Recorder::new()))).collect();
    let addr = |r: &Recorder| r as *const Recorder as usize;
    let mut seen: HashSet<usize> = held.iter().map(|r| addr(r.as_ref().unwrap())).collect();

    // Steady state: N swaps with a draining control side move only the 2 + 2 existing boxes.
    let (mut drained, mut samples) = (0, 0);
    for _ in 0..1000 {
        for (w, slot) in held.iter_mut().enumerate() {
            let mut full = slot.take().unwrap();
            assert!(full.is_empty(), "a handed-out recorder is cleared");
            full.record(Metric::Handshake, 5000 + w as u64);
            let fresh = exchange.swap(w, full);
            seen.insert(addr(&fresh));
            *slot = Some(fresh);
        }
        drained += exchange.drain(|_, r| samples += r.histogram(Metric::Handshake).len());
    }
    assert_eq!(seen.len(), 4, "only the initial recorders and the spares ever circulate");
    assert_eq!((drained, samples), (2000, 2000));
    assert_eq!(exchange.lost_total(), 0);
    assert_eq!(exchange.spares_available(), 2);

    // Control thread stalled: swaps keep returning at once; data beyond the spares is dropped
    // (the recorder comes back cleared) and counted.
    let began = Instant::now();
    for _ in 0..100 {
        let mut full = held[0].take().unwrap();
        full.record(Metric::Handshake, 1);
        let fresh = exchange.swap(0, full);
        assert!(fresh.is_empty());
        seen.insert(addr(&fresh));
        held[0] = Some(fresh);
    }
    assert!(began.elapsed() < Duration::from_secs(1));
    assert_eq!(exchange.lost_intervals(0), 98, "2 spares, then 98 lost");
    assert_eq!(exchange.lost_intervals(1), 0);
    assert_eq!(seen.len(), 4);
    assert_eq!(exchange.drain(|_, _| {}), 2);
    assert_eq!(exchange.worker_count(), 2);
}

#[test]
fn recorder_exchange_across_threads() {
    let exchange = Arc::new(RecorderExchange::new(1, 4));
    let worker_exchange = Arc::clone(&exchange);
    let worker = std::thread::spawn(move || {
        let mut rec = Box::new(Recorder::new());
        for i in 0..10_000_u64 {
            rec.record(Metric::Dataplane, 100 + i % 1000);
            if i % 100 == 99 {
                rec = worker_exchange.swap(0, rec);
            }
        }
    });
    let mut seen = 0;
    while !worker.is_finished() {
        exchange.drain(|w, r| {
            assert_eq!(w, 0);
            seen += r.histogram(Metric::Dataplane).len();
        });
        std::thread::yield_now();
    }
    worker.join().unwrap();
    exchange.drain(|_, r| seen += r.histogram(Metric::Dataplane).len());
    assert_eq!(seen + 100 * exchange.lost_intervals(0), 10_000);
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn prometheus_endpoint_over_http() {
    let (export, _) = run_export(None);
    let server = MetricsServer::start("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let (head, body) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert_eq!(body, "");

    // The prometheus endpoint changed from hand-written summaries to prometheus-client with
    // histograms (issue 14): the same update, checked as histograms.
    server.update(
        MetricsSnapshot::default()
            .with_gauge("xdpcopy_sessions_active", "Sessions alive.", Vec::new(), 7.0)
            .with_latency(&export),
    );
    let (head, body) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert!(body.contains("# TYPE xdpcopy_sessions_active gauge\nxdpcopy_sessions_active 7"), "{body}");
    assert!(body.contains("# TYPE xdpcopy_latency_seconds histogram\n"), "{body}");
    let count = |labels: &str| -> u64 {
        let line = format!("xdpcopy_latency_seconds_count{{{labels}}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("{line}: {body}"))
            .parse()
            .unwrap()
    };
    assert_eq!(count("metric=\"test_response\",worker=\"0\"") + count("metric=\"test_response\",worker=\"1\""), 3000);
    assert!(!body.contains("metric=\"dataplane\""), "a metric without samples shows nothing: {body}");
    // Every worker's buckets end in +Inf = count; the buckets around the true p99 bracket it.
    let p99 = export.p(Metric::TestResponse, 0.99).unwrap() as f64 / 1e9;
    let mut le_le_p99 = 0;
    let mut total = 0;
    for w in ["0", "1"] {
        let prefix = format!("xdpcopy_latency_seconds_bucket{{metric=\"test_response\",worker=\"{w}\",le=\"");
        let buckets: Vec<(f64, u64)> = body
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|l| {
                let (le, n) = l.split_once("\"} ").unwrap();
                (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, n.parse().unwrap())
            })
            .collect();
        assert_eq!(buckets.len(), control::latency::LATENCY_BUCKETS_NS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "cumulative: {buckets:?}");
        total += buckets.last().unwrap().1;
        le_le_p99 += buckets.iter().filter(|(le, _)| *le <= p99).map(|b| b.1).next_back().unwrap_or(0);
    }
    assert_eq!(total, 3000);
    assert!(le_le_p99 <= 2970 + 30, "at most 99 % (+ one HdrHistogram bucket) at or below p99");

    let (head, _) = http_get(addr, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"));
    assert_eq!(server.scrapes(), 2);

    drop(server);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(), "stopped on drop");
}

#[test]
fn summary_json_parses() {
    let dir = TempDir::new("json");
    let (export, counts) = run_export(None);
    let path = dir.0.join("sub").join("summary.json");
    let counters = vec![("frames_in".to_string(), 3000_u64), ("frames_out".to_string(), 2970)];
    write_summary_json(&path, &counters, &export, serde_json::json!({ "program": "xdpcopy" })).unwrap();
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["meta"]["program"], "xdpcopy");
    assert_eq!(v["counters"]["frames_in"], 3000);
    assert_eq!(v["latency_unit"], "us");
    let tr = &v["latency"]["test_response"];
    assert_eq!(tr["samples"], counts[&Metric::TestResponse]);
    let p99 = tr["p99_us"].as_f64().unwrap();
    assert!((p99 - export.p(Metric::TestResponse, 0.99).unwrap() as f64 / 1000.0).abs() < 1e-9);
    assert!(tr["min_us"].as_f64().unwrap() <= tr["p50_us"].as_f64().unwrap());
    assert!(tr["p50_us"].as_f64().unwrap() <= tr["max_us"].as_f64().unwrap());
    assert_eq!(tr["workers"]["1"]["samples"], 1500);
    assert_eq!(v["latency"]["dataplane"]["samples"], 0);
    assert!(v["latency"]["dataplane"]["p50_us"].is_null());
}

#[test]
fn report_renders_png_and_svg() {
    let dir = TempDir::new("report");
    let prefix = dir.0.join("run");
    assert!(matches!(render_report(&prefix), Err(ReportError::NoData { .. })));
    let (mut export, _) = run_export(Some(prefix.clone()));
    export.finish().unwrap();
    let files = render_report(&prefix).unwrap();
    assert_eq!(files, [dir.0.join("run_report.png"), dir.0.join("run_report.svg")]);
    let png = fs::read(&files[0]).unwrap();
    assert!(png.len() > 1000);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = fs::read_to_string(&files[1]).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("test_response") && svg.contains("production") && svg.contains("99.9%"));
    assert!(svg.contains("Latency (ms)"));
}

#[test]
fn directory_prefix_means_dir_latency() {
    // The report reads exactly what the export writes, directory prefixes included.
    let dir = TempDir::new("dirprefix");
    let mut as_dir = dir.0.clone().into_os_string();
    as_dir.push("/");
    let (mut export, _) = run_export(Some(PathBuf::from(as_dir)));
    let files = export.finish().unwrap();
    assert!(files.contains(&dir.0.join("latency_test_response.percentiles.csv")));
    assert_eq!(render_report(&dir.0).unwrap()[0], dir.0.join("latency_report.png"));
    assert!(render_report(Path::new(&dir.0.join("latency"))).is_ok());
}

#[test]
fn control_side_types_move_between_threads() {
    fn send<T: Send>() {}
    fn sync<T: Send + Sync>() {}
    send::<LatencyExport>();
    send::<Box<Recorder>>();
    sync::<RecorderExchange>();
    sync::<MetricsServer>();
}

/// A client that trickles its request holds the metrics server for at most its request deadline
/// (2 s), after which the next scrape is served; and dropping the server (the program's exit)
/// does not wait for such a client.
#[test]
fn a_slow_metrics_client_neither_blocks_scrapes_for_long_nor_delays_exit() {
    let server = MetricsServer::start("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        // One byte every 300 ms: without a request deadline this holds the server forever.
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n".iter().take(20) {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (head, _) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(t.elapsed() < Duration::from_secs(3), "the scrape waited {:?}", t.elapsed());

    // Another slow client, then the exit.
    let _slow = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    drop(server);
    assert!(t.elapsed() < Duration::from_millis(600), "exit waited {:?}", t.elapsed());
    trickle.join().unwrap();
}
