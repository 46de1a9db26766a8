//! Sessions per second from a file (`xdpcopy-lab bench-sessions`), beside the test server's own
//! ceiling for new connections measured in the same run.
//!
//! In the lab: `sessions` short HTTP sessions (one request each, `Connection: close`) from the
//! client to the online nginx are recorded on the copier's mirror interface. Then, per run:
//!
//! 1. **replay** (every run's, one after the other): `xdpcopy -i FILE --topspeed -T loops` through xdpcopy-intercept; the rate is
//!    the sessions replayed (every request in the test nginx's log) ÷ the time from the start of
//!    the feed until the last one was logged. Each run replays from a client address of its own
//!    (`-c 10.201.1.(100 + RUN)`), so no run meets the TIME_WAIT the previous one left on the
//!    test server;
//! 2. **ceiling** (then every run's): `wrk -H "Connection: close"` from the copier's namespace
//!    straight at the test nginx (no xdpcopy, no intercept): each request a new connection, so
//!    its requests per second are the new connections per second the test server can take on
//!    this machine. The ceilings come after all replays: a replay right after wrk's tens of
//!    thousands of closed connections lost SYNs to the test server's listen queue.
//!
//! The ratio replay ÷ ceiling is what xdpcopy costs: both use the same two cores and the same
//! test nginx, one right after the other.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::{
    http::get_once,
    in_netns,
    lab::{addr, iface},
    proc::{start_intercept, Running},
    Lab, LabSpec, Role,
};

/// What to measure.
#[derive(Debug, Clone)]
pub struct SessionsSpec {
    /// Sessions recorded in the file.
    pub sessions: u32,
    /// `-T`: the file is replayed this many times per run.
    pub loops: u32,
    /// Runs (the report gives each and the medians).
    pub runs: usize,
    /// Seconds of wrk per ceiling measurement.
    pub ceiling_seconds: u64,
    /// wrk connections for the ceiling.
    pub wrk_conns: u32,
}

/// One run's outcome.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// The test nginx's new connections per second (wrk, `Connection: close`).
    ceiling: f64,
    /// Sessions xdpcopy replayed per second from the file.
    replayed: f64,
    /// Sessions replayed (requests in the test log) and expected.
    done: u64,
    expected: u64,
    seconds: f64,
}

/// Records `n` one-request sessions (paths `/sess/TAG/i`) on the copier's mirror interface.
fn record(lab: &Lab, n: u32, tag: &str) -> Result<std::path::PathBuf> {
    let cap = lab.capture(Role::Copier, iface::COPIER_IN, &format!("sessions-{tag}.pcap"), &["tcp", "port", "80"])?;
    let online: SocketAddr = (addr::ONLINE, addr::ONLINE_PORT).into();
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..n {
            ensure!(get_once(online, &format!("/sess/{tag}/{i}"))? == 200, "the online nginx refused /sess/{i}");
        }
        Ok(())
    })?;
    let res = cap.stop()?;
    ensure!(res.dropped_by_kernel == Some(0), "the recording lost frames; run on a quieter machine");
    Ok(res.path)
}

/// `wrk -H "Connection: close"` against the test nginx from the copier's namespace: requests
/// (= new connections) per second.
fn ceiling(lab: &Lab, spec: &SessionsSpec) -> Result<f64> {
    let url = format!("http://{}:{}/ceiling", addr::TEST, addr::TEST_PORT);
    let (c, d) = (spec.wrk_conns.to_string(), format!("{}s", spec.ceiling_seconds));
    let out = lab
        .run(Role::Copier, &["wrk", "-t1", "-c", &c, "-d", &d, "-H", "Connection: close", &url])
        .context("running wrk against the test nginx")?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:").and_then(|v| v.trim().parse().ok()))
        .with_context(|| format!("no Requests/sec in wrk's output: {out}"))
}

/// Replays the file once (`-T loops`) and times it until the test log has every session.
fn replay(lab: &Lab, file: &std::path::Path, spec: &SessionsSpec, run: usize) -> Result<Run> {
    let expected = u64::from(spec.sessions) * u64::from(spec.loops);
    let mut log = crate::http::LogCounter::from_end(&lab.test_access_log(), "/sess/");
    let transfer = format!("{}-{}:{}", addr::ONLINE_PORT, addr::TEST, addr::TEST_PORT);
    let (channel, file_arg) = (addr::ASSIST_CHANNEL.to_string(), file.to_string_lossy().into_owned());
    // Each run from a client address of its own in the client network (the test server routes
    // it to the assist server): no run meets the TIME_WAIT the one before left.
    let (loops, client) = (spec.loops.to_string(), format!("10.201.1.{}", 100 + run % 100));
    let args = [
        "-i",
        &file_arg,
        "--topspeed",
        "-T",
        &loops,
        "-c",
        &client,
        "-o",
        iface::COPIER_OUT,
        "-x",
        &transfer,
        "-s",
        &channel,
        "-q",
        "--offline-tail",
        "30",
    ];
    let mut copier = Running::start(lab, Role::Copier, "xdpcopy", &args, &format!("sessions-{run}.log"), "replaying")?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let mut done = 0;
    while Instant::now() < deadline {
        done = log.count()?;
        if done >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let seconds = start.elapsed().as_secs_f64();
    if copier.wait_exit(Duration::from_secs(60))?.is_none() {
        bail!("the replaying copier did not exit by itself; its log: {}", copier.log.display());
    }
    Ok(Run { ceiling: 0.0, replayed: done as f64 / seconds, done, expected, seconds })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark and returns the Markdown report.
pub fn run(spec: &SessionsSpec) -> Result<String> {
    let started = Instant::now();
    let lab = Lab::up(LabSpec {
        tag: "bsess".into(),
        queues: 2,
        nginx: true,
        mirror_egress: false,
        traditional: false,
        dual_stack: false,
    })?;
    // tcpdump can lose frames on a busy machine: try the recording up to three times.
    let mut file = record(&lab, spec.sessions, "rec1");
    for attempt in ["rec2", "rec3"] {
        if file.is_ok() {
            break;
        }
        file = record(&lab, spec.sessions, attempt);
    }
    let file = file?;
    let intercept = start_intercept(&lab, &[], "intercept.log")?;
    // Every replay first, then every ceiling: a replay right after wrk's tens of thousands of
    // closed connections lost SYNs at the test server (its listen queue), whatever the pause.
    let mut runs = Vec::new();
    for i in 0..spec.runs {
        runs.push(replay(&lab, &file, spec, i + 1)?);
        std::thread::sleep(Duration::from_secs(1));
    }
    for r in &mut runs {
        r.ceiling = ceiling(&lab, spec)?;
        std::thread::sleep(Duration::from_secs(1));
    }
    for (i, r) in runs.iter().enumerate() {
        eprintln!(
            "bench-sessions: run {}: test nginx ceiling {:.0} new conns/s; xdpcopy replayed {}/{} sessions in \
             {:.3} s = {:.0} sessions/s ({:.0} %)",
            i + 1,
            r.ceiling,
            r.done,
            r.expected,
            r.seconds,
            r.replayed,
            100.0 * r.replayed / r.ceiling.max(1.0)
        );
    }
    intercept.stop()?;
    drop(lab);
    let mut md = String::new();
    let _ = writeln!(md, "### Sessions per second from a file\n");
    let _ = writeln!(
        md,
        "Machine: {}. {} recorded one-request sessions (`Connection: close`) replayed {} times per run \
         (`--topspeed -T {}`) through xdpcopy-intercept; ceiling: `wrk -t1 -c{} -d{}s -H \"Connection: close\"` \
         from the copier's namespace at the test nginx, after the replays (one per run). Took {:.0} s. \
         Reproduce: `sudo target/release/xdpcopy-lab bench-sessions`.\n",
        crate::benchmark::machine(),
        spec.sessions,
        spec.loops,
        spec.loops,
        spec.wrk_conns,
        spec.ceiling_seconds,
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| run | test nginx alone: new connections/s | xdpcopy -i FILE: sessions/s | replayed | xdpcopy ÷ ceiling (goal ≥ 80 %) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {}/{} in {:.2} s | {:.0} % |",
            i + 1,
            r.ceiling,
            r.replayed,
            r.done,
            r.expected,
            r.seconds,
            100.0 * r.replayed / r.ceiling.max(1.0)
        );
    }
    let _ = writeln!(
        md,
        "| median | {:.0} | {:.0} | | {:.0} % |",
        median(runs.iter().map(|r| r.ceiling).collect()),
        median(runs.iter().map(|r| r.replayed).collect()),
        100.0 * median(runs.iter().map(|r| r.replayed / r.ceiling.max(1.0)).collect())
    );
    Ok(md)
}
