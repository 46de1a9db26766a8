//! Latency measurement and exports end to end in the lab: the test nginx answers `/slow/...`
//! 20 ms late (its stand-in for a slower build: this kernel has no netem), the online nginx at
//! once; the copier mirrors both directions of the online server and exports HdrHistogram CSVs,
//! a Prometheus endpoint and a JSON summary. Needs root (skipped loudly without it, unless CI).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::Duration,
};

use bench::{
    http::{access_log, get_once, Conn},
    in_netns,
    lab::addr,
    Lab, LabSpec, Role, Running,
};

const METRICS: &str = "127.0.0.1:9464";

fn start(lab: &Lab, prefix: &Path) -> (Running, Running) {
    let target = format!("{}:{}", addr::TEST, addr::TEST_PORT);
    let intercept = bench::start_intercept(lab, &["--metrics", METRICS], "intercept.log").unwrap();
    let transfer = format!("{}:{}-{target}", addr::ONLINE, addr::ONLINE_PORT);
    let prefix = prefix.to_string_lossy().into_owned();
    let summary = format!("{prefix}_summary.json");
    let args = [
        "-x",
        &transfer,
        "--production-latency",
        "--latency-csv",
        &prefix,
        "--metrics",
        METRICS,
        "--summary-json",
        &summary,
    ];
    let copier = bench::start_session_copier(lab, &args, "xdpcopy.log").unwrap();
    (intercept, copier)
}

/// Requests `/PREFIX/i` over 4 keep-alive connections and some short ones; returns how many.
fn traffic(lab: &Lab, path: &str, n: usize) -> usize {
    let online: SocketAddr = (addr::ONLINE, addr::ONLINE_PORT).into();
    in_netns(&lab.ns(Role::Client), || {
        for c in 0..4 {
            let mut k = Conn::open(online)?;
            for i in 0..n / 5 {
                assert_eq!(k.get(&addr::ONLINE.to_string(), &format!("/{path}/{c}/{i}"), false)?, 200);
            }
        }
        for i in 0..n / 5 {
            assert_eq!(get_once(online, &format!("/{path}/short/{i}"))?, 200);
        }
        Ok(n / 5 * 5)
    })
    .unwrap()
}

/// Parses an HdrHistogram percentile CSV; checks the exact header, monotone percentiles and
/// counts, the `Infinity` last row; returns (value µs, percentile, count) rows.
fn percentiles(path: &Path) -> Vec<(f64, f64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(r#""Value","Percentile","TotalCount","1/(1-Percentile)""#));
    let rows: Vec<(f64, f64, u64, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 4, "{l}");
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].to_owned())
        })
        .collect();
    assert!(rows.len() >= 2);
    assert_eq!(rows.last().unwrap().3, "Infinity");
    assert_eq!(rows.last().unwrap().1, 1.0);
    for w in rows.windows(2) {
        assert!(w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2, "not monotone: {w:?}");
    }
    rows.into_iter().map(|(v, p, c, _)| (v, p, c)).collect()
}

fn p(rows: &[(f64, f64, u64)], q: f64) -> f64 {
    rows.iter().find(|r| r.1 >= q).map(|r| r.0).unwrap()
}

fn scrape(lab: &Lab, role: Role) -> String {
    in_netns(&lab.ns(role), || {
        let mut s = TcpStream::connect(METRICS)?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap()
}

/// The value of `name`, summed over its labels (the copier's worker-owned families carry a
/// `worker` label since issue 14); `None` when absent.
fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[test]
fn test_latency_production_latency_and_the_exports() {
    if !bench::lab_test("latency") {
        return;
    }
    let tag = format!("l{}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: true, traditional: false, dual_stack: false })
            .unwrap();

    // 1. A fast test server: the replayed requests come back within a few ms.
    let fast: PathBuf = lab.out_dir().join("fast");
    let (intercept, copier) = start(&lab, &fast);
    let n = traffic(&lab, "fast", 200);
    std::thread::sleep(Duration::from_secs(2));
    copier.stop().unwrap();
    intercept.stop().unwrap();
    let rows = percentiles(&fast.with_file_name("fast_test_response.percentiles.csv"));
    assert_eq!(rows.last().unwrap().2 as usize, n, "one test_response sample per replayed request");
    // "Under a few ms": debug build, and the copier, intercept, both nginx and the client share
    // two cores, so the tail gets a generous bound; the median must be near the path's cost.
    assert!(p(&rows, 0.5) < 2_000.0, "fast test server: p50 {} µs", p(&rows, 0.5));
    assert!(p(&rows, 0.99) < 10_000.0, "fast test server: p99 {} µs", p(&rows, 0.99));

    // 2. The test server answers /slow/ 20 ms late; the online one does not.
    let slow: PathBuf = lab.out_dir().join("slow");
    let (intercept, copier) = start(&lab, &slow);
    let n = traffic(&lab, "slow", 100);
    std::thread::sleep(Duration::from_secs(2));
    let scraped = scrape(&lab, Role::Copier);
    let scraped_intercept = scrape(&lab, Role::Assist);
    let summary = copier.stop().unwrap();
    let intercept_summary = intercept.stop().unwrap();
    assert_eq!(
        metric(&scraped_intercept, "xdpcopy_intercept_client_add_total"),
        Some(intercept_summary.get("client_add") as f64),
        "{scraped_intercept}"
    );
    let replayed = access_log(&lab.test_access_log(), "/slow/").unwrap().values().sum::<u32>() as usize;
    assert_eq!(replayed, n);

    let test = percentiles(&slow.with_file_name("slow_test_response.percentiles.csv"));
    let prod = percentiles(&slow.with_file_name("slow_production.percentiles.csv"));
    let hs = percentiles(&slow.with_file_name("slow_handshake.percentiles.csv"));
    assert_eq!(test.last().unwrap().2 as usize, n);
    assert_eq!(prod.last().unwrap().2 as usize, n, "one production sample per request");
    assert_eq!(hs.last().unwrap().2, summary.get("conns"), "one handshake sample per accepted connection");
    let (t50, p50) = (p(&test, 0.5), p(&prod, 0.5));
    assert!((20_000.0..=25_000.0).contains(&t50), "test p50 {t50} µs not in [20 ms, 25 ms]");
    assert!(p50 < 2_000.0, "production p50 {p50} µs is not near zero");
    // The dataplane's own latency was recorded too.
    let _ = percentiles(&slow.with_file_name("slow_dataplane.percentiles.csv"));

    // The exports exist and parse.
    let hlog = std::fs::read_to_string(slow.with_extension("hlog")).unwrap();
    assert!(hlog.contains("Tag=test_response"), "interval log has the tagged rows");
    let json: String = std::fs::read_to_string(slow.with_file_name("slow_summary.json")).unwrap();
    assert!(json.contains("\"test_response\""));
    // The Prometheus endpoint, scraped over HTTP after the traffic: its counters match the summary.
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert_eq!(metric(&scraped, "xdpcopy_conns_total"), Some(summary.get("conns") as f64), "{scraped}");
    assert_eq!(metric(&scraped, "xdpcopy_sent_payload_total"), Some(summary.get("sent_payload") as f64));

    // `xdpcopy report` renders the percentile plot from the CSVs.
    let out =
        std::process::Command::new(bench::bin_path("xdpcopy").unwrap()).arg("report").arg(&slow).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(slow.with_file_name("slow_report.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(slow.with_file_name("slow_report.svg")).unwrap();
    assert!(svg.contains("<svg"));
}
