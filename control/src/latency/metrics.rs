//! The Prometheus endpoint: a tiny HTTP/1.1 server thread serving `GET /metrics`.
//!
//! The owner (the control thread of the copier or of xdpcopy-intercept) renders a
//! [`MetricsSnapshot`] into the text exposition format (version 0.0.4) once per update; the
//! server thread only copies the latest text out. One connection at a time, `Connection: close`,
//! 2 s socket timeouts: scrapes are rare and small, so there is no framework and no pool.

use crate::counters::{CounterSet, Kind};

use std::{
    fmt::Write as _,
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

/// The family name of the latency summaries (label `metric` names the latency).
const LATENCY_FAMILY: &str = "xdpcopy_latency_seconds";

/// One latency summary: `(metric, [(quantile, seconds)], count, sum seconds)`.
pub type LatencySummary = (String, Vec<(f64, f64)>, u64, f64);

/// One metric family generated from a counter set: `(label, value)` samples under one name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name (`xdpcopy_drop_total`).
    pub name: String,
    /// The help text.
    pub help: String,
    /// Counter or gauge.
    pub kind: Kind,
    /// `(label name, label value)` (none for a plain counter) and the value.
    pub samples: Vec<(Option<(&'static str, &'static str)>, u64)>,
}

/// The values to expose; names are used as given (invalid characters become `_`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Families generated from a counter model ([`MetricsSnapshot::with_counters`]).
    pub families: Vec<Family>,
    /// `(name, help, value)` of monotonically increasing counters (name them `..._total`).
    pub counters: Vec<(String, String, u64)>,
    /// `(name, help, value)` of gauges.
    pub gauges: Vec<(String, String, f64)>,
    /// `(metric, [(quantile, seconds)], count, sum seconds)`, exposed as
    /// `xdpcopy_latency_seconds{metric="…",quantile="…"}` (see
    /// [`super::LatencyExport::prometheus_summaries`]).
    pub summaries: Vec<LatencySummary>,
}

impl MetricsSnapshot {
    /// Adds every value of `set` as Prometheus families named `PROGRAM_…` (counters end in
    /// `_total`; a labelled family becomes one family with a label).
    pub fn with_counters(mut self, program: &str, set: &impl CounterSet) -> Self {
        set.visit("", &mut |f| {
            let name = f.prometheus_name(program);
            match self.families.last_mut() {
                Some(last) if last.name == name => last.samples.push((f.label, f.value)),
                _ => self.families.push(Family {
                    name,
                    help: f.help_text(),
                    kind: f.kind,
                    samples: vec![(f.label, f.value)],
                }),
            }
        });
        self
    }

    /// Renders the snapshot in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for fam in &self.families {
            let name = metric_name(&fam.name);
            let kind = match fam.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(s, "# HELP {name} {}\n# TYPE {name} {kind}", escape_help(&fam.help));
            for (label, v) in &fam.samples {
                match label {
                    Some((k, l)) => {
                        let _ = writeln!(s, "{name}{{{}=\"{}\"}} {v}", metric_name(k), escape_label(l));
                    }
                    None => {
                        let _ = writeln!(s, "{name} {v}");
                    }
                }
            }
        }
        for (name, help, v) in &self.counters {
            let name = metric_name(name);
            let _ = writeln!(s, "# HELP {name} {}\n# TYPE {name} counter\n{name} {v}", escape_help(help));
        }
        for (name, help, v) in &self.gauges {
            let name = metric_name(name);
            let _ = writeln!(s, "# HELP {name} {}\n# TYPE {name} gauge\n{name} {}", escape_help(help), float(*v));
        }
        if !self.summaries.is_empty() {
            let _ = writeln!(s, "# HELP {LATENCY_FAMILY} xdpcopy latencies since start, all workers (HdrHistogram).");
            let _ = writeln!(s, "# TYPE {LATENCY_FAMILY} summary");
            for (metric, quantiles, count, sum) in &self.summaries {
                let metric = escape_label(metric);
                for (q, v) in quantiles {
                    let _ =
                        writeln!(s, "{LATENCY_FAMILY}{{metric=\"{metric}\",quantile=\"{}\"}} {}", float(*q), float(*v));
                }
                let _ = writeln!(s, "{LATENCY_FAMILY}_sum{{metric=\"{metric}\"}} {}", float(*sum));
                let _ = writeln!(s, "{LATENCY_FAMILY}_count{{metric=\"{metric}\"}} {count}");
            }
        }
        s
    }
}

/// State shared with the server thread.
struct Shared {
    body: Mutex<Arc<str>>,
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
            body: Mutex::new(Arc::from("")),
            stop: AtomicBool::new(false),
            scrapes: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread =
            std::thread::Builder::new().name("metrics-http".into()).spawn(move || serve(&listener, &thread_shared))?;
        Ok(Self { addr, shared, thread: Some(thread) })
    }

    /// Returns the bound address (with the actual port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the exposed values.
    pub fn update(&self, snapshot: MetricsSnapshot) {
        let body: Arc<str> = Arc::from(snapshot.render());
        *self.shared.body.lock().unwrap_or_else(|e| e.into_inner()) = body;
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
        let woke = TcpStream::connect_timeout(&SocketAddr::new(ip, self.addr.port()), Duration::from_secs(1)).is_ok();
        if let Some(t) = self.thread.take() {
            // Without the wake-up the thread would block until the next scrape: leave it detached.
            if woke {
                let _ = t.join();
            }
        }
    }
}

fn serve(listener: &TcpListener, shared: &Shared) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        match conn {
            // A failed or malformed request concerns one client only.
            Ok(stream) => drop(handle(stream, shared)),
            // E.g. out of file descriptors: back off instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn handle(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0_u8; 4096];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && !buf[..len].windows(2).any(|w| w == b"\n\n") {
        if len == buf.len() {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"", false);
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            shared.scrapes.fetch_add(1, Ordering::Relaxed);
            let body = Arc::clone(&shared.body.lock().unwrap_or_else(|e| e.into_inner()));
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body.as_bytes(), head_only)
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

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A float as Prometheus parses it (`NaN`, `+Inf`, `-Inf`, else Rust's shortest form).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_text_format() {
        let snap = MetricsSnapshot {
            families: Vec::new(),
            counters: vec![("xdpcopy_frames_in_total".into(), "Frames received.".into(), 42)],
            gauges: vec![("xdpcopy sessions-active".into(), "Sessions\nalive.".into(), 3.5)],
            summaries: vec![("test_response".into(), vec![(0.5, 0.000125), (1.0, f64::NAN)], 7, 0.001)],
        };
        let expected = "# HELP xdpcopy_frames_in_total Frames received.
# TYPE xdpcopy_frames_in_total counter
xdpcopy_frames_in_total 42
# HELP xdpcopy_sessions_active Sessions\\nalive.
# TYPE xdpcopy_sessions_active gauge
xdpcopy_sessions_active 3.5
# HELP xdpcopy_latency_seconds xdpcopy latencies since start, all workers (HdrHistogram).
# TYPE xdpcopy_latency_seconds summary
xdpcopy_latency_seconds{metric=\"test_response\",quantile=\"0.5\"} 0.000125
xdpcopy_latency_seconds{metric=\"test_response\",quantile=\"1\"} NaN
xdpcopy_latency_seconds_sum{metric=\"test_response\"} 0.001
xdpcopy_latency_seconds_count{metric=\"test_response\"} 7
";
        assert_eq!(snap.render(), expected);
    }

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
    fn names_are_sanitized() {
        assert_eq!(metric_name("9lives"), "_9lives");
        assert_eq!(metric_name("a.b-c:d"), "a_b_c:d");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(1e-9), "0.000000001");
    }
}
