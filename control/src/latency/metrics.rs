//! The Prometheus endpoint: `GET /metrics` served by a tiny HTTP/1.1 thread, the body encoded
//! at scrape time by `prometheus-client` (text exposition format 0.0.4) from the latest
//! [`MetricsSnapshot`].
//!
//! # Design
//!
//! - The owner (the copier's stats loop, xdpcopy-intercept's poll loop) builds a snapshot about
//!   once a second and hands it over with [`MetricsServer::update`]; the server thread keeps the
//!   latest one behind an `Arc` and a `prometheus-client` registry whose one [`Collector`]
//!   encodes it when a scrape comes. Nothing is rendered that nobody asks for.
//! - Every counter family is generated from the counter model ([`crate::counters`]): a
//!   `counter` becomes a Prometheus counter (`_total`), a `gauge` a gauge, a family declared
//!   with a label (`drop[DropReason]`) one metric family with that label
//!   (`xdpcopy_drop_total{reason="tx_ring_full"}`). Sets a worker owns are added with a
//!   `worker` label ([`MetricsSnapshot::with_labelled_counters`]); sum them with
//!   `sum without (worker)`.
//! - Every latency is a real histogram (`xdpcopy_latency_seconds_bucket{metric,worker,le}`) on
//!   one fixed bucket ladder, [`LATENCY_BUCKETS_NS`], the same for every copier, so
//!   `histogram_quantile(0.99, sum by (le, metric) (rate(xdpcopy_latency_seconds_bucket[5m])))`
//!   aggregates a fleet. The bucket counts are derived from the HdrHistograms
//!   ([`latency_buckets`]).
//! - One connection at a time, `Connection: close`, 2 s socket timeouts: scrapes are rare and
//!   small, so there is no HTTP framework and no pool.

use crate::counters::{CounterSet, Kind};

use hdrhistogram::Histogram;
use prometheus_client::{
    collector::Collector,
    encoding::{prometheus_text, DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{LatencyExport, Metric};

/// The family name of the latency histograms (labels `metric` and `worker`).
pub const LATENCY_FAMILY: &str = "xdpcopy_latency_seconds";

/// The upper bounds of the latency histogram buckets, in ns: 1-2-5 steps from 1 µs to 10 s,
/// then 20 s and 60 s (the HdrHistograms' ceiling). Fixed, so that the buckets of every copier
/// line up and can be summed.
pub const LATENCY_BUCKETS_NS: [u64; 24] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
    20_000_000_000,
    60_000_000_000,
];

/// The `Content-Type` of what `GET /metrics` returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Labels of one sample: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// One sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An integer (every counter of the model).
    Int(u64),
    /// A float (uptime, ratios).
    Float(f64),
}

/// One counter or gauge family: samples that differ by their labels, under one name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name without the counter suffix (`xdpcopy_drop`; the text shows
    /// `xdpcopy_drop_total`).
    pub name: String,
    /// The help text.
    pub help: String,
    /// Counter or gauge.
    pub kind: Kind,
    /// The samples.
    pub samples: Vec<(Labels, Value)>,
}

/// One histogram's buckets, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// `(upper bound, samples in this bucket only)` in ladder order; the text shows them
    /// cumulative, with `le="+Inf"` = `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Samples.
    pub count: u64,
    /// Sum of the samples.
    pub sum: f64,
}

/// One histogram family: histograms that differ by their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramFamily {
    /// The family name (`xdpcopy_latency_seconds`).
    pub name: String,
    /// The help text.
    pub help: String,
    /// The histograms.
    pub samples: Vec<(Labels, Buckets)>,
}

/// The values `GET /metrics` shows until the next update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Counter and gauge families, in the order they were added.
    pub families: Vec<Family>,
    /// Histogram families.
    pub histograms: Vec<HistogramFamily>,
}

impl MetricsSnapshot {
    /// Adds every value of `set` as families named `PROGRAM_…` (see the module's design).
    pub fn with_counters(self, program: &str, set: &impl CounterSet) -> Self {
        self.with_labelled_counters(program, set, &[])
    }

    /// Adds every value of `set` with `labels` on each sample (e.g. `worker="0"`). A family
    /// already in the snapshot (the same set of another worker) takes the samples.
    pub fn with_labelled_counters(
        mut self,
        program: &str,
        set: &impl CounterSet,
        labels: &[(&'static str, String)],
    ) -> Self {
        let mut index: HashMap<String, usize> =
            self.families.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        set.visit("", &mut |f| {
            let mut sample: Labels = labels.to_vec();
            if let Some((k, v)) = f.label {
                sample.push((k, v.to_string()));
            }
            let name = f.family_name(program);
            let i = *index.entry(name.clone()).or_insert_with(|| {
                self.families.push(Family { name, help: f.help_text(), kind: f.kind, samples: Vec::new() });
                self.families.len() - 1
            });
            self.families[i].samples.push((sample, Value::Int(f.value)));
        });
        self
    }

    /// Adds the families of `set` that the snapshot does not have yet: a program's totals after
    /// the per-worker sets were added with their label.
    pub fn with_remaining_counters(mut self, program: &str, set: &impl CounterSet) -> Self {
        let present: std::collections::HashSet<String> = self.families.iter().map(|f| f.name.clone()).collect();
        let rest = MetricsSnapshot::default().with_counters(program, set);
        self.families.extend(rest.families.into_iter().filter(|f| !present.contains(&f.name)));
        self
    }

    /// Adds a gauge sample (its family is created on first use).
    pub fn with_gauge(mut self, name: &str, help: &str, labels: Labels, value: f64) -> Self {
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push((labels, Value::Float(value))),
            None => self.families.push(Family {
                name: name.to_string(),
                help: help.to_string(),
                kind: Kind::Gauge,
                samples: vec![(labels, Value::Float(value))],
            }),
        }
        self
    }

    /// Adds the latency histograms of `export`: one per metric and worker, for every metric that
    /// has samples in any worker (a metric that is not measured in this mode shows nothing).
    pub fn with_latency(mut self, export: &LatencyExport) -> Self {
        let mut fam = HistogramFamily {
            name: LATENCY_FAMILY.to_string(),
            help: "Latencies since start, per worker (HdrHistogram, 3 significant digits), by metric: \
                   test_response, handshake, production, dataplane (see docs/cli.md)."
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            samples: Vec::new(),
        };
        let empty = super::new_histogram();
        for m in Metric::ALL {
            if export.histogram(m).is_empty() {
                continue;
            }
            for w in 0..export.workers() {
                let h = export.worker_histogram(w, m).unwrap_or(&empty);
                fam.samples
                    .push((vec![("metric", m.name().to_string()), ("worker", w.to_string())], latency_buckets(h)));
            }
        }
        if !fam.samples.is_empty() {
            self.histograms.push(fam);
        }
        self
    }

    /// Renders the snapshot in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Latest(Arc::new(Mutex::new(Arc::new(self.clone()))))));
        let mut out = String::new();
        // Writing into a String cannot fail; an encoding error (an invalid name) leaves what
        // was written so far.
        let _ = prometheus_text::encode(&mut out, &registry);
        out
    }

    /// Encodes every family through `prometheus-client`.
    fn encode(&self, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        for fam in &self.families {
            let name = metric_name(&fam.name);
            let ty = match fam.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut m = enc.encode_descriptor(&name, &fam.help, None, ty)?;
            for (labels, v) in &fam.samples {
                if labels.is_empty() {
                    encode_value(&mut m, fam.kind, *v)?;
                } else {
                    encode_value(&mut m.encode_family(labels)?, fam.kind, *v)?;
                }
            }
        }
        for fam in &self.histograms {
            let name = metric_name(&fam.name);
            let mut m = enc.encode_descriptor(&name, &fam.help, None, MetricType::Histogram)?;
            for (labels, b) in &fam.samples {
                if labels.is_empty() {
                    m.encode_histogram::<NoLabelSet>(b.sum, b.count, &b.buckets, None)?;
                } else {
                    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(b.sum, b.count, &b.buckets, None)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(m: &mut MetricEncoder<'_>, kind: Kind, v: Value) -> std::fmt::Result {
    match (kind, v) {
        (Kind::Counter, Value::Int(n)) => m.encode_counter::<NoLabelSet, _, u64>(&n, None),
        (Kind::Counter, Value::Float(x)) => m.encode_counter::<NoLabelSet, _, f64>(&x, None),
        (Kind::Gauge, Value::Int(n)) => m.encode_gauge(&n),
        (Kind::Gauge, Value::Float(x)) => m.encode_gauge(&x),
    }
}

/// Returns the buckets of `h` (ns) on [`LATENCY_BUCKETS_NS`], in seconds.
///
/// A sample counts in the first bucket whose bound is at or above the bottom of its HdrHistogram
/// bucket (at most 0.1 % wide at 3 significant digits): a value recorded exactly on a bound
/// counts below it, one up to 0.1 % above a bound may too. Samples above 60 s were clamped to
/// 60 s when recorded. The sum is
/// count × HdrHistogram's mean (bucket medians).
pub fn latency_buckets(h: &Histogram<u64>) -> Buckets {
    let mut counts = [0u64; LATENCY_BUCKETS_NS.len()];
    for v in h.iter_recorded() {
        let bottom = h.lowest_equivalent(v.value_iterated_to());
        let i = LATENCY_BUCKETS_NS.iter().position(|&le| bottom <= le).unwrap_or(LATENCY_BUCKETS_NS.len() - 1);
        counts[i] += v.count_at_value();
    }
    Buckets {
        buckets: LATENCY_BUCKETS_NS.iter().zip(counts).map(|(&le, n)| (le as f64 / 1e9, n)).collect(),
        count: h.len(),
        sum: if h.is_empty() { 0.0 } else { h.mean() * h.len() as f64 / 1e9 },
    }
}

/// The collector: encodes the latest snapshot at scrape time.
#[derive(Debug)]
struct Latest(Arc<Mutex<Arc<MetricsSnapshot>>>);

impl Collector for Latest {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snapshot = Arc::clone(&self.0.lock().unwrap_or_else(|e| e.into_inner()));
        snapshot.encode(&mut encoder)
    }
}

/// State shared with the server thread.
struct Shared {
    snapshot: Arc<Mutex<Arc<MetricsSnapshot>>>,
    stop: AtomicBool,
    scrapes: AtomicU64,
}

/// A Prometheus text endpoint on a background thread; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (`--metrics ADDR:PORT`; port 0 picks a free one) and starts serving an empty
    /// snapshot.
    ///
    /// # Errors
    /// Returns the error of binding the address or of spawning the thread.
    pub fn start(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            snapshot: Arc::new(Mutex::new(Arc::new(MetricsSnapshot::default()))),
            stop: AtomicBool::new(false),
            scrapes: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("metrics-http".into()).spawn(move || {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(Latest(Arc::clone(&thread_shared.snapshot))));
            serve(&listener, &thread_shared, &registry)
        })?;
        Ok(Self { addr, shared, thread: Some(thread) })
    }

    /// Returns the bound address (with the actual port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the exposed values.
    pub fn update(&self, snapshot: MetricsSnapshot) {
        *self.shared.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// Returns the number of `/metrics` requests served.
    pub fn scrapes(&self) -> u64 {
        self.shared.scrapes.load(Ordering::Relaxed)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the blocking accept() with a connection of our own.
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let woke =
            TcpStream::connect_timeout(&SocketAddr::new(ip, self.addr.port()), Duration::from_millis(100)).is_ok();
        if let Some(t) = self.thread.take() {
            // Wait briefly for the thread; a scrape in progress (at most REQUEST_DEADLINE) or a
            // failed wake-up must not delay the program's exit: then it is left detached.
            let until = std::time::Instant::now() + EXIT_WAIT;
            while woke && !t.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// The most one request may take, reading and writing together: a client that trickles its
/// request (or reads the answer slowly) holds the single serving thread no longer than this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// How long dropping the server waits for its thread.
const EXIT_WAIT: Duration = Duration::from_millis(200);

fn serve(listener: &TcpListener, shared: &Shared, registry: &Registry) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        match conn {
            // A failed or malformed request concerns one client only.
            Ok(stream) => drop(handle(stream, shared, registry)),
            // E.g. out of file descriptors: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn handle(mut stream: TcpStream, shared: &Shared, registry: &Registry) -> io::Result<()> {
    let deadline = std::time::Instant::now() + REQUEST_DEADLINE;
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "request deadline"))
    };
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let mut buf = [0_u8; 4096];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && !buf[..len].windows(2).any(|w| w == b"\n\n") {
        if len == buf.len() {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"", false);
        }
        if shared.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        // Each read waits only for what is left of the request's deadline.
        stream.set_read_timeout(Some(left()?))?;
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    stream.set_write_timeout(Some(left()?))?;
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            shared.scrapes.fetch_add(1, Ordering::Relaxed);
            let mut body = String::new();
            if prometheus_text::encode(&mut body, registry).is_err() {
                return respond(&mut stream, "500 Internal Server Error", "text/plain", b"encoding failed\n", false);
            }
            respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes(), head_only)
        }
        ("GET" | "HEAD", "/") => respond(
            &mut stream,
            "200 OK",
            "text/plain; charset=utf-8",
            b"xdpcopy metrics: GET /metrics (Prometheus text format)\n",
            head_only,
        ),
        ("GET" | "HEAD", _) => {
            respond(&mut stream, "404 Not Found", "text/plain", b"not found; try /metrics\n", head_only)
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"use GET /metrics\n", false),
    }
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8], head_only: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

/// A valid Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, other characters become `_`.
fn metric_name(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::fixtures::{Reason, Set};

    #[test]
    fn counter_sets_become_typed_labelled_families() {
        let mut set = Set { seen: 3, now: 2, ..Set::default() };
        set.drop[Reason::Two] = 5;
        let text = MetricsSnapshot::default().with_counters("p", &set).render();
        assert_eq!(
            text,
            "# HELP p_seen_total Things seen.\n# TYPE p_seen_total counter\np_seen_total 3\n\
             # HELP p_now Things now.\n# TYPE p_now gauge\np_now 2\n\
             # HELP p_drop_total Dropped, by reason.\n# TYPE p_drop_total counter\n\
             p_drop_total{reason=\"one\"} 0\np_drop_total{reason=\"two\"} 5\n"
        );
    }

    #[test]
    fn worker_sets_share_one_family_per_name_and_the_rest_is_added_once() {
        let a = Set { seen: 1, ..Set::default() };
        let b = Set { seen: 2, ..Set::default() };
        let total = Set { seen: 3, ..Set::default() };
        let snap = MetricsSnapshot::default()
            .with_labelled_counters("p", &a, &[("worker", "0".into())])
            .with_labelled_counters("p", &b, &[("worker", "1".into())])
            .with_remaining_counters("p", &total)
            .with_gauge("p_uptime_seconds", "Seconds since start.", Vec::new(), 1.5);
        let text = snap.render();
        assert_eq!(text.matches("# TYPE p_seen_total counter").count(), 1, "{text}");
        assert!(text.contains("p_seen_total{worker=\"0\"} 1\np_seen_total{worker=\"1\"} 2\n"), "{text}");
        assert!(text.contains("p_drop_total{worker=\"1\",reason=\"two\"} 0\n"), "{text}");
        assert!(!text.contains("p_seen_total 3"), "the per-worker family is not added again: {text}");
        assert!(text.contains("# TYPE p_uptime_seconds gauge\np_uptime_seconds 1.5\n"), "{text}");
    }

    #[test]
    fn latency_buckets_are_cumulative_on_the_fixed_ladder() {
        let mut h = crate::latency::new_histogram();
        h.record(1_500).unwrap(); // 1.5 µs -> le 2e-6
        h.record(1_000_000).unwrap(); // 1 ms -> le 0.001
        h.record(30_000_000_000).unwrap(); // 30 s -> le 60
        let b = latency_buckets(&h);
        assert_eq!(b.count, 3);
        assert_eq!(b.buckets.len(), LATENCY_BUCKETS_NS.len());
        assert_eq!(b.buckets.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert_eq!(b.buckets[1], (2e-6, 1));
        assert_eq!(b.buckets[9], (1e-3, 1));
        assert_eq!(b.buckets.last().unwrap().1, 1);
        let snap = MetricsSnapshot {
            histograms: vec![HistogramFamily {
                name: LATENCY_FAMILY.into(),
                help: "Latencies.".into(),
                samples: vec![(vec![("metric", "handshake".into())], b)],
            }],
            ..MetricsSnapshot::default()
        };
        let text = snap.render();
        assert!(text.contains("# TYPE xdpcopy_latency_seconds histogram\n"), "{text}");
        assert!(text.contains("xdpcopy_latency_seconds_bucket{metric=\"handshake\",le=\"1e-06\"} 0\n"), "{text}");
        assert!(text.contains("xdpcopy_latency_seconds_bucket{metric=\"handshake\",le=\"2e-06\"} 1\n"), "{text}");
        assert!(text.contains("xdpcopy_latency_seconds_bucket{metric=\"handshake\",le=\"60\"} 3\n"), "{text}");
        assert!(text.contains("xdpcopy_latency_seconds_bucket{metric=\"handshake\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("xdpcopy_latency_seconds_count{metric=\"handshake\"} 3\n"), "{text}");
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(metric_name("9lives"), "_9lives");
        assert_eq!(metric_name("a.b-c:d"), "a_b_c:d");
    }
}
