//! The session-replay benchmark (`xdpcopy-lab bench-replay`): increasing client load against
//! the online nginx, with xdpcopy replaying to the test nginx through xdpcopy-intercept. For each
//! level: the online req/s, the copy ratio (requests in the test log ÷ requests in the online log,
//! counted after the test log stops growing), the copier's CPU during the load and per 1000
//! replayed requests (until the replay finished), the replay round trip and the test server's
//! response time as the copier measured them, the catch-up counters, and — unpaced levels — the
//! footprint: the online server's rate with the copier (and the mirror) ÷ its rate in the same lab
//! without either. The test nginx's own round trip from the copier's namespace is measured once.
//!
//! `--family 6` (or `both`) runs the levels over IPv6 in a dual-stack lab (IPv6 clients, the
//! test nginx's IPv6 address, protocol 7 on the channel), `both` each level over IPv4 and then
//! IPv6 in the same run.
//!
//! Two kinds of load:
//! - **paced**: 8 keep-alive connections, each sending at rate/8 with a distinct URL per request
//!   (the project's own client);
//! - **unpaced**: `wrk -t1 -cN`: each connection sends its next request as soon as the answer
//!   arrives — the load that broke the original (tcpcopy-behaviour.md §10).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    http::{access_log, Conn},
    in_netns,
    lab::addr,
    Lab, LabSpec, Role,
};

/// One load level.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Requests per second over 8 keep-alive connections.
    Paced(u32),
    /// `wrk` with this many connections.
    Unpaced(u32),
}

/// The client and test server family of a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 clients, the test nginx's IPv4 address.
    V4,
    /// IPv6 clients, the test nginx's IPv6 address (a dual-stack lab).
    V6,
}

impl Family {
    fn online(self) -> SocketAddr {
        match self {
            Family::V4 => (addr::ONLINE, addr::ONLINE_PORT).into(),
            Family::V6 => (addr::ONLINE6, addr::ONLINE_PORT).into(),
        }
    }

    fn test(self) -> SocketAddr {
        match self {
            Family::V4 => (addr::TEST, addr::TEST_PORT).into(),
            Family::V6 => (addr::TEST6, addr::TEST_PORT).into(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One level's outcome.
#[derive(Debug, Clone)]
pub struct LevelResult {
    pub load: Load,
    pub family: Family,
    pub online_requests: u64,
    pub test_requests: u64,
    pub seconds: f64,
    /// Copier CPU during the load, in cores.
    pub copier_cpu: f64,
    /// Copier CPU seconds from the start of the load until the replay finished.
    pub copier_cpu_seconds: f64,
    pub settle_seconds: f64,
    /// Unpaced levels: online req/s in the same lab with no copier and no mirror.
    pub baseline_rps: Option<f64>,
    /// Frames the lab's mirror veth dropped during the copier's run (before XDP saw them).
    pub mirror_dropped: u64,
    pub summary: crate::proc::Summary,
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Clock ticks per second of /proc/PID/stat.
const TICKS_PER_S: f64 = 100.0;

fn count(log: &std::path::Path, prefix: &str) -> u64 {
    access_log(log, prefix).map(|m| m.values().map(|v| u64::from(*v)).sum()).unwrap_or(0)
}

/// Drives `load` against the online nginx for `seconds` (paths under `/PREFIX/`).
fn drive(lab: &Lab, load: Load, family: Family, seconds: u64, prefix: &str) -> Result<()> {
    let online = family.online();
    let host = crate::http::host(online);
    match load {
        Load::Paced(rate) => {
            let conns = 8u32;
            let gap = Duration::from_secs_f64(f64::from(conns) / f64::from(rate.max(1)));
            let ns = lab.ns(Role::Client);
            std::thread::scope(|s| {
                for c in 0..conns {
                    let (ns, host) = (ns.clone(), host.clone());
                    s.spawn(move || {
                        let r = in_netns(&ns, || {
                            let mut k = Conn::open(online)?;
                            let end = Instant::now() + Duration::from_secs(seconds);
                            let mut next = Instant::now();
                            let mut i = 0u64;
                            while Instant::now() < end {
                                k.get(&host, &format!("/{prefix}/{c}/{i}"), false)?;
                                i += 1;
                                next += gap;
                                if let Some(d) = next.checked_duration_since(Instant::now()) {
                                    std::thread::sleep(d);
                                }
                            }
                            Ok(())
                        });
                        if let Err(e) = r {
                            eprintln!("bench-replay: client connection {c} stopped early: {e:#}");
                        }
                    });
                }
            });
        }
        Load::Unpaced(conns) => {
            let c = conns.to_string();
            let d = format!("{seconds}s");
            let url = format!("http://{host}/{prefix}/wrk");
            lab.run(Role::Client, &["wrk", "-t1", "-c", &c, "-d", &d, &url]).context("running wrk")?;
        }
    }
    Ok(())
}

/// The test nginx's own round trip from the copier's namespace: `n` requests on one keep-alive
/// connection; returns (p50, p99) in µs.
fn direct_round_trip(lab: &Lab, family: Family, n: usize) -> Result<(f64, f64)> {
    let test = family.test();
    let mut samples = in_netns(&lab.ns(Role::Copier), || {
        let mut k = Conn::open(test)?;
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            k.get(&crate::http::host(test), &format!("/direct/{i}"), false)?;
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(v)
    })?;
    samples.sort_by(f64::total_cmp);
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    Ok((q(0.5), q(0.99)))
}

/// Keeps every core busy at the lowest priority (`SCHED_IDLE`: it runs only when nothing else
/// wants the core) while it lives. On a virtual machine a halted vCPU takes tens of µs to wake,
/// which slowed the unpaced ping-pong between wrk and the online nginx about 3× whenever nothing
/// else kept the cores awake — so the online rate without the copier came out far below the rate
/// with it (a footprint of 300 %). With the cores kept awake in both runs the footprint measures
/// what the copier takes, not the wake-ups it saves.
struct IdleSpinners {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl IdleSpinners {
    fn start() -> IdleSpinners {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|core| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    core_affinity::set_for_current(core);
                    // Without SCHED_IDLE it would take its share from the lab: stop at once.
                    if dataplane::xsk::sys::set_idle_priority().is_err() {
                        return;
                    }
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        IdleSpinners { stop, threads }
    }
}

impl Drop for IdleSpinners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A fresh lab of this benchmark: `queues` capture queues (one copier worker each), nginx on both
/// servers, dual stack for IPv6.
fn lab(family: Family, queues: u32) -> Result<Lab> {
    Lab::up(LabSpec {
        tag: "bench-replay".into(),
        queues,
        nginx: true,
        mirror_egress: false,
        traditional: false,
        dual_stack: family == Family::V6,
    })
}

fn run_level(load: Load, family: Family, seconds: u64, extra: &[String], queues: u32) -> Result<LevelResult> {
    let lab = lab(family, queues)?;
    // Unpaced: the cores kept awake for the whole level (see IdleSpinners), and the online
    // server's own rate in this lab, with no mirror and no copier, first.
    let _spinners = matches!(load, Load::Unpaced(_)).then(IdleSpinners::start);
    let baseline_rps = match load {
        Load::Unpaced(_) => {
            lab.set_mirror(false)?;
            drive(&lab, load, family, seconds, "base")?;
            lab.set_mirror(true)?;
            Some(count(&lab.online_access_log(), "/base/") as f64 / seconds as f64)
        }
        Load::Paced(_) => None,
    };
    let test = family.test().to_string();
    let intercept_args: &[&str] = if family == Family::V6 { &["--target", &test] } else { &[] };
    let intercept = crate::proc::start_intercept(&lab, intercept_args, "intercept.log")?;
    let transfer = format!("{}-{test}", addr::ONLINE_PORT);
    let mut args: Vec<&str> = vec!["-x", &transfer];
    args.extend(extra.iter().map(String::as_str));
    let copier = crate::proc::start_session_copier(&lab, &args, "xdpcopy.log")?;
    let pid = copier.pid();
    let mirror_dropped0 = lab.mirror_dropped()?;
    let cpu0 = cpu_ticks(pid);
    let started = Instant::now();
    drive(&lab, load, family, seconds, "bench")?;
    let seconds_run = started.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks(pid);
    let online_requests = count(&lab.online_access_log(), "/bench/");
    // Let the replay finish: the test log stops growing for 3 s (or 60 s pass).
    let settle_start = Instant::now();
    let mut last = (count(&lab.test_access_log(), "/bench/"), Instant::now());
    while settle_start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(250));
        let now = count(&lab.test_access_log(), "/bench/");
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) || now >= online_requests {
            break;
        }
    }
    let cpu2 = cpu_ticks(pid);
    let test_requests = count(&lab.test_access_log(), "/bench/");
    let mirror_dropped = lab.mirror_dropped()? - mirror_dropped0;
    let summary = copier.stop()?;
    intercept.stop()?;
    lab.shutdown()?;
    Ok(LevelResult {
        load,
        family,
        online_requests,
        test_requests,
        seconds: seconds_run,
        copier_cpu: (cpu1 - cpu0) as f64 / TICKS_PER_S / seconds_run,
        copier_cpu_seconds: (cpu2 - cpu0) as f64 / TICKS_PER_S,
        settle_seconds: last.1.duration_since(settle_start).as_secs_f64().max(0.0),
        baseline_rps,
        mirror_dropped,
        summary,
    })
}

/// Runs every level (each in every one of `families`, in that order) in a lab whose capture
/// interface has `queues` queues, and returns the Markdown report.
pub fn run(levels: &[Load], families: &[Family], seconds: u64, extra: &[String], queues: u32) -> Result<String> {
    let mut direct = Vec::new();
    for &family in families {
        let lab = lab(family, queues)?;
        let d = direct_round_trip(&lab, family, 2000)?;
        lab.shutdown()?;
        eprintln!(
            "bench-replay: the test nginx from the copier's namespace over {}: p50 {:.0} µs, p99 {:.0} µs",
            family.name(),
            d.0,
            d.1
        );
        direct.push((family, d));
    }
    let mut rows = Vec::new();
    for &load in levels {
        for &family in families {
            rows.push(level(load, family, seconds, extra, queues)?);
        }
    }
    Ok(report(&rows, &direct, seconds, extra, queues))
}

/// Runs one level and logs its outcome.
fn level(load: Load, family: Family, seconds: u64, extra: &[String], queues: u32) -> Result<LevelResult> {
    {
        let r = run_level(load, family, seconds, extra, queues)?;
        let g = |k: &str| r.summary.0.get(k).copied().unwrap_or(0);
        eprintln!(
            "bench-replay: {:?} {}: online {} req ({:.0}/s), test {} ({:.1} %), copier CPU {:.0} % ({:.2} ms per 1000 \
             replayed), replay_rtt p50 {} µs, catch-up {}/{}, pool_exhausted {}",
            r.load,
            r.family.name(),
            r.online_requests,
            r.online_requests as f64 / r.seconds,
            r.test_requests,
            100.0 * r.test_requests as f64 / r.online_requests.max(1) as f64,
            100.0 * r.copier_cpu,
            1e6 * r.copier_cpu_seconds / r.test_requests.max(1) as f64,
            g("latency_replay_rtt_p50_us"),
            g("catch_up_entered"),
            g("catch_up_requests"),
            g("pool_exhausted"),
        );
        if std::env::var_os("XDPCOPY_BENCH_COUNTERS").is_some() {
            let mut all: Vec<_> = r.summary.0.iter().filter(|(_, v)| **v != 0).collect();
            all.sort();
            for (k, v) in all {
                eprintln!("    {k} {v}");
            }
        }
        Ok(r)
    }
}

/// Capture queues of the benchmark's lab unless `--queues` says otherwise: its report goes to
/// the section `replay`; other counts write sections of their own.
pub const DEFAULT_QUEUES: u32 = 2;

/// The docs/benchmarks.md section of a run with `queues` capture queues.
pub fn section(queues: u32) -> String {
    if queues == DEFAULT_QUEUES {
        "replay".to_string()
    } else {
        format!("replay-q{queues}")
    }
}

/// The Markdown report of `rows`.
fn report(
    rows: &[LevelResult],
    direct: &[(Family, (f64, f64))],
    seconds: u64,
    extra: &[String],
    queues: u32,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Session replay under increasing load{}\n",
        match queues {
            DEFAULT_QUEUES => String::new(),
            1 => ", one capture queue".to_string(),
            n => format!(", {n} capture queues"),
        }
    );
    let _ = writeln!(
        md,
        "{seconds} s of load per level; release build; lab of `xdpcopy-lab` with {queues} capture queue(s) (one \
         copier worker each{}); copier with default options{}. Reproduce: `sudo target/release/xdpcopy-lab \
         bench-replay{}`.\n",
        if queues == 1 { ", which runs the channel itself" } else { ", and the control thread" },
        if extra.is_empty() { String::new() } else { format!(" plus `{}`", extra.join(" ")) },
        if queues == DEFAULT_QUEUES { String::new() } else { format!(" --queues {queues}") }
    );
    for (family, d) in direct {
        let _ = writeln!(
            md,
            "The test nginx answered a request from the copier's namespace over {} in p50 {:.0} µs, p99 {:.0} µs \
             (2000 requests on one keep-alive connection): compare with replay_rtt, the same request's round trip \
             through the replay path (copier → test → assist → intercept → channel → copier).\n",
            family.name(),
            d.0,
            d.1
        );
    }
    let _ = writeln!(
        md,
        "| load | family | online req/s | footprint: online req/s with ÷ without copier | copy ratio | copier CPU during load (one core = 100 %) | copier CPU per 1000 replayed | replay_rtt p50 / p99 | test_response p50 / p99 | catch-up entered / requests | frames the capture lost (AF_XDP + lab mirror veth) / holes skipped | retransmit | pool_exhausted |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let load = match r.load {
            Load::Paced(rate) => format!("paced {rate}/s, 8 conns"),
            Load::Unpaced(c) => format!("wrk, {c} conns"),
        };
        let g = |k: &str| r.summary.0.get(k).copied().unwrap_or(0);
        let online_rps = r.online_requests as f64 / r.seconds;
        let footprint = match r.baseline_rps {
            Some(b) => format!("{:.0} %", 100.0 * online_rps / b.max(1.0)),
            None => "(paced)".into(),
        };
        let _ = writeln!(
            md,
            "| {load} | {} | {online_rps:.0} | {footprint} | {:.2} % | {:.0} % | {:.1} ms | {} / {} µs | {} / {} µs | {} / {} | {} + {} / {} | {} | {} |",
            r.family.name(),
            100.0 * r.test_requests as f64 / r.online_requests.max(1) as f64,
            100.0 * r.copier_cpu,
            1e3 * r.copier_cpu_seconds / (r.test_requests.max(1) as f64 / 1000.0),
            g("latency_replay_rtt_p50_us"),
            g("latency_replay_rtt_p99_us"),
            g("latency_test_response_p50_us"),
            g("latency_test_response_p99_us"),
            g("catch_up_entered"),
            g("catch_up_requests"),
            g("xsk_rx_dropped"),
            r.mirror_dropped,
            g("clt_hole_skipped"),
            g("retransmit"),
            g("pool_exhausted"),
        );
    }
    md
}
