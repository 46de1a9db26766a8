//! The intercept benchmark (`xdpcopy-lab bench-intercept`): headers per second through
//! xdpcopy-intercept on an assist server (XDP + AF_XDP) and with `--local` on the test server
//! (egress program + ring buffer), side by side in one run, and each BPF program's cost per
//! packet.
//!
//! The same load for both: the test server's answers (SYN-ACKs from the test nginx's address and
//! port to a client address, one flow) sent out of `t1` by an AF_PACKET socket in the test
//! namespace, at a fixed offered rate or as fast as it goes. AF_PACKET transmits through
//! `dev_queue_xmit`, so `--local`'s egress program runs on them exactly as on the stack's own
//! segments; without it they cross the veth to the assist server's XDP program. No copier is
//! connected: every header takes the intercept's whole path (capture, header message, route
//! lookup, delay table) and ends held or counted as unrouted, the same work in both modes.
//! Headers/s = the intercept's `headers` ÷ the sender's wall time. Cost per packet: `bpftool prog
//! show` with `kernel.bpf_stats_enabled=1`, `run_time_ns ÷ run_cnt`.

use std::{fmt::Write as _, time::Duration};

use anyhow::{Context, Result};

use crate::{
    lab::{addr, iface},
    FrameSpec, Lab, LabSpec, Role, SendSpec,
};

/// One mode's outcome.
#[derive(Debug, Clone)]
pub struct ModeResult {
    /// `assist` or `local`.
    pub mode: &'static str,
    /// Frames sent.
    pub sent: u64,
    /// Sender's wall time, seconds.
    pub seconds: f64,
    /// Headers the intercept produced.
    pub headers: u64,
    /// The BPF program's mean run time per packet, ns.
    pub ns_per_packet: Option<f64>,
    /// The intercept's CPU (user + system) ÷ the sender's wall time.
    pub intercept_cpu: f64,
}

/// `(run_time_ns, run_cnt)` of the loaded program named `name` (bpftool's JSON).
fn prog_stats(name: &str) -> Option<(u64, u64)> {
    let out = std::process::Command::new("bpftool").args(["-j", "prog", "show", "name", name]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> Option<u64> {
        let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
        text[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
    };
    Some((field("run_time_ns")?, field("run_cnt")?))
}

fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .map_or(0.0, |ticks| ticks as f64 / 100.0)
}

fn run_mode(local: bool, count: u64, rate_pps: u64) -> Result<ModeResult> {
    let lab = Lab::up(LabSpec {
        tag: "bench-icpt".into(),
        queues: 1,
        nginx: false,
        mirror_egress: false,
        traditional: local,
        dual_stack: false,
    })?;
    let intercept = crate::proc::start_intercept(&lab, &[], "intercept.log")?;
    let (prog, mode) = if local { ("xdpcopy_egress", "local") } else { ("xdpcopy_redirect", "assist") };
    let before = prog_stats(prog).unwrap_or((0, 0));
    let cpu0 = cpu_seconds(intercept.pid());
    let spec = SendSpec {
        iface: iface::TEST_TO_ASSIST.into(),
        frame: FrameSpec {
            src_mac: lab.mac(Role::Test, iface::TEST_TO_ASSIST)?,
            dst_mac: lab.mac(Role::Assist, iface::ASSIST_IN)?,
            src_ip: addr::TEST,
            dst_ip: addr::CLIENT,
            src_port: addr::TEST_PORT,
            dst_port: 40000,
            flags: 0x12,
            ..FrameSpec::default()
        },
        sizes: vec![64],
        count,
        rate_pps,
        flows: 1,
        ..SendSpec::default()
    };
    let report = crate::send_frames_in_ns(&lab.ns(Role::Test), &spec).context("sending the answers")?;
    // Let the intercept drain what is queued.
    std::thread::sleep(Duration::from_millis(500));
    let after = prog_stats(prog).unwrap_or((0, 0));
    let cpu1 = cpu_seconds(intercept.pid());
    let summary = intercept.stop()?;
    lab.shutdown()?;
    let runs = after.1.saturating_sub(before.1);
    let seconds = report.elapsed.as_secs_f64();
    Ok(ModeResult {
        mode,
        sent: report.sent,
        seconds,
        headers: summary.get("headers"),
        ns_per_packet: (runs > 0).then(|| after.0.saturating_sub(before.0) as f64 / runs as f64),
        intercept_cpu: (cpu1 - cpu0) / seconds.max(1e-9),
    })
}

/// Runs both modes at each rate (0 = as fast as the sender goes) and returns the Markdown report.
/// Turns `kernel.bpf_stats_enabled` on for the run and restores it after.
pub fn run(rates: &[u64], count: u64) -> Result<String> {
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enabling kernel.bpf_stats_enabled")?;
    let result = (|| -> Result<Vec<(u64, ModeResult, ModeResult)>> {
        let mut rows = Vec::new();
        for &rate in rates {
            let assist = run_mode(false, count, rate)?;
            let local = run_mode(true, count, rate)?;
            for r in [&assist, &local] {
                eprintln!(
                    "bench-intercept: {} at {}: {} of {} sent in {:.2} s → {:.0} headers/s, {} ns/packet, intercept CPU {:.0} %",
                    r.mode,
                    if rate == 0 { "max".to_owned() } else { format!("{rate}/s") },
                    r.headers,
                    r.sent,
                    r.seconds,
                    r.headers as f64 / r.seconds,
                    r.ns_per_packet.map_or("?".to_owned(), |n| format!("{n:.0}")),
                    100.0 * r.intercept_cpu,
                );
            }
            rows.push((rate, assist, local));
        }
        Ok(rows)
    })();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());
    let rows = result?;
    let mut md = String::new();
    let _ = writeln!(md, "### Intercept: assist server vs --local\n");
    let _ = writeln!(
        md,
        "{count} answers (64-byte SYN-ACKs) per mode and rate; release build. Reproduce: `sudo target/release/xdpcopy-lab bench-intercept`.\n"
    );
    let _ = writeln!(
        md,
        "| offered | mode | headers/s | headers / sent | program ns/packet | intercept CPU (one core = 100 %) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (rate, a, l) in &rows {
        for r in [a, l] {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.2} % | {} | {:.0} % |",
                if *rate == 0 { "max".to_owned() } else { format!("{rate}/s") },
                if r.mode == "local" { "`--local` (tc egress, ring buffer)" } else { "assist (XDP, AF_XDP)" },
                r.headers as f64 / r.seconds,
                100.0 * r.headers as f64 / r.sent.max(1) as f64,
                r.ns_per_packet.map_or("?".to_owned(), |n| format!("{n:.0}")),
                100.0 * r.intercept_cpu,
            );
        }
    }
    Ok(md)
}
