//! Metrics a fleet can aggregate, end to end in the lab: during a session replay both programs'
//! `GET /metrics` pass `promtool check metrics` (Debian's `prometheus` package, installed by
//! scripts/setup.sh), the copier's holds the latency histograms and the drop counters labelled
//! by reason and worker, and `--stats-format json` writes one JSON object per interval. Needs
//! root (skipped loudly without it, unless CI).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use bench::{
    http::get_once,
    in_netns,
    lab::{addr, iface},
    Lab, LabSpec, Role, Running,
};

const COPIER_METRICS: &str = "127.0.0.1:9464";
const INTERCEPT_METRICS: &str = "127.0.0.1:9465";

/// `GET /metrics` from inside `role`'s namespace: (head, body).
fn scrape(lab: &Lab, role: Role, at: &str) -> (String, String) {
    let resp = in_netns(&lab.ns(role), || {
        let mut s = TcpStream::connect(at)?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

/// Runs `promtool check metrics` on `body`; panics with its complaints.
fn promtool_check(what: &str, body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed on {what}:\n{}{}\n--- body ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sum of the samples of `family` whose labels contain `needle`.
fn sum(body: &str, family: &str, needle: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn both_metrics_endpoints_pass_promtool_during_a_replay() {
    if !bench::lab_test("metrics") {
        return;
    }
    let tag = format!("m{}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
            .unwrap();
    let intercept = bench::start_intercept(&lab, &["--metrics", INTERCEPT_METRICS], "intercept.log").unwrap();
    let transfer = format!("{}:{}-{}:{}", addr::ONLINE, addr::ONLINE_PORT, addr::TEST, addr::TEST_PORT);
    let channel = addr::ASSIST_CHANNEL.to_string();
    let args = [
        "-i",
        iface::COPIER_IN,
        "-o",
        iface::COPIER_OUT,
        "-s",
        &channel,
        "-x",
        &transfer,
        "-r",
        "50",
        "--metrics",
        COPIER_METRICS,
        "--stats-format",
        "json",
    ];
    let copier = Running::start(&lab, Role::Copier, "xdpcopy", &args, "xdpcopy.log", "capturing on").unwrap();
    copier.wait_for("\"channel_connected\":2", Duration::from_secs(10)).unwrap();

    let online: SocketAddr = (addr::ONLINE, addr::ONLINE_PORT).into();
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..60 {
            assert_eq!(get_once(online, &format!("/metrics-test/{i}"))?, 200);
        }
        Ok(())
    })
    .unwrap();
    // Workers hand their latency recorders over about once a second and the stats thread
    // collects them on its own 1 s tick: wait (up to 10 s) until the answers' latencies are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (head, body) = loop {
        std::thread::sleep(Duration::from_millis(500));
        let (head, body) = scrape(&lab, Role::Copier, COPIER_METRICS);
        if sum(&body, "xdpcopy_latency_seconds_count", "metric=\"test_response\"") > 0.0
            || std::time::Instant::now() > deadline
        {
            break (head, body);
        }
    };
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/plain; version=0.0.4"), "{head}");
    promtool_check("xdpcopy's /metrics", &body);
    assert!(body.contains("# TYPE xdpcopy_latency_seconds histogram\n"), "{body}");
    assert!(body.contains("xdpcopy_latency_seconds_bucket{metric=\"test_response\",worker=\""), "{body}");
    assert!(sum(&body, "xdpcopy_latency_seconds_count", "metric=\"test_response\"") > 0.0, "{body}");
    assert!(body.contains("# TYPE xdpcopy_drop_total counter\n"), "{body}");
    assert!(body.contains("xdpcopy_drop_total{worker=\"1\",reason=\"tx_ring_full\"} "), "{body}");
    assert!(sum(&body, "xdpcopy_drop_total", "reason=\"sampled_out\"") > 0.0, "-r 50 samples sessions out: {body}");
    assert!(body.contains("xdpcopy_malformed_total{worker=\"0\",error=\"truncated\"} "), "{body}");
    assert!(body.contains("# TYPE xdpcopy_active gauge\n"), "gauges stay gauges: {body}");
    assert!(body.contains("# TYPE xdpcopy_xdp_redirected_total counter\n"), "{body}");

    let (_, ibody) = scrape(&lab, Role::Assist, INTERCEPT_METRICS);
    promtool_check("xdpcopy-intercept's /metrics", &ibody);
    assert!(ibody.contains("# TYPE xdpcopy_intercept_client_add_total counter\n"), "{ibody}");
    assert!(ibody.contains("# TYPE xdpcopy_intercept_copiers_open gauge\n"), "{ibody}");

    let log = copier.log.clone();
    let summary = copier.stop().unwrap();
    intercept.stop().unwrap();
    let lines = bench::read_lines(&log);
    let json: Vec<&String> = lines.iter().filter(|l| l.starts_with("{\"counters\":{")).collect();
    assert!(json.len() >= 2, "one JSON object per interval: {lines:?}");
    assert!(json.iter().all(|l| l.contains("\"type\":\"interval\"") && l.ends_with('}')), "{json:?}");
    let conns = sum(&body, "xdpcopy_conns_total", "worker=");
    assert_eq!(conns, summary.get("conns") as f64, "the per-worker families add up to the summary");
    let out = lab.out_dir().to_path_buf();
    lab.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(out);
}
