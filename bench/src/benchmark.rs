//! The side-by-side forwarding benchmark (`xdpcopy-lab bench`).
//!
//! Topology, three namespaces joined by two veth pairs, one queue each:
//!
//! ```text
//!  xdpc-bench-gen  g0 ──► d0  xdpc-bench-dut  d1 ──► s0  xdpc-bench-sink
//!  (AF_XDP generator,        (the thing measured)        (XDP drop counter)
//!   core 0)                   core 1
//! ```
//!
//! For each frame size and run, measured one after the other on the same veths:
//! 1. `xdp_drop`: the XDP drop program on d0 (the link's XDP limit for this load);
//! 2. `afxdp_rx`: AF_XDP receive-and-drop on d0 (our XSK RX path);
//! 3. `tx_ceiling`: a plain AF_XDP transmitter on d1 (core 1) into s0 — the copy-mode TX limit
//!    of the output side;
//! 4. `forward`: `xdpcopy --stateless -i d0 -o d1`, counted at s0.
//!
//! Each measurement's rate is the receiver's count divided by the generator's sending time. The
//! ratios that matter are computed inside one run: forward ÷ tx_ceiling and forward ÷ xdp_drop.
//! Every component runs as a separate process (`xdpcopy-lab agent …`) pinned to its core.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    netns::{ip, link_mac, ns_command},
    proc::bin_path,
};

const GEN: &str = "xdpc-bench-gen";
const DUT: &str = "xdpc-bench-dut";
const SINK: &str = "xdpc-bench-sink";

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Frame sizes in bytes.
    pub sizes: Vec<usize>,
    /// Runs per size (the report gives medians).
    pub runs: usize,
    /// Generator sending time per measurement.
    pub seconds: f64,
    /// Core for the generator.
    pub gen_core: usize,
    /// Core for the measured component.
    pub dut_core: usize,
    /// Extra `xdpcopy` arguments (e.g. `--checksum incremental`).
    pub xdpcopy_args: Vec<String>,
}

/// One measurement's outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    /// Frames the generator completed per second.
    pub offered_pps: f64,
    /// Frames the receiver counted per second.
    pub received_pps: f64,
}

/// The four rates of one run at one size.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunResult {
    pub xdp_drop: Rate,
    pub afxdp_rx: Rate,
    pub tx_ceiling: Rate,
    pub forward: Rate,
    /// The same forwarding with `--no-latency` (the cost of recording histograms).
    pub forward_no_latency: Rate,
}

struct Topology;

impl Topology {
    fn up() -> Result<Self> {
        Self::down();
        for ns in [GEN, DUT, SINK] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let _ = ns_command(ns, "sysctl").args(["-qw", "net.ipv6.conf.all.disable_ipv6=1"]).status();
        }
        let t = Topology;
        ip(&["-n", GEN, "link", "add", "g0", "type", "veth", "peer", "name", "d0", "netns", DUT])?;
        ip(&["-n", DUT, "link", "add", "d1", "type", "veth", "peer", "name", "s0", "netns", SINK])?;
        for (ns, i) in [(GEN, "g0"), (DUT, "d0"), (DUT, "d1"), (SINK, "s0")] {
            ip(&["-n", ns, "link", "set", i, "up"])?;
        }
        Ok(t)
    }

    fn down() {
        for ns in [GEN, DUT, SINK] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        Self::down();
    }
}

/// A background agent process whose last stdout line is `RESULT count=N seconds=S`.
struct Agent {
    child: Child,
    what: String,
}

impl Agent {
    fn start(ns: &str, args: &[String]) -> Result<Self> {
        let exe = bin_path("xdpcopy-lab")?;
        let child = ns_command(ns, &exe.to_string_lossy())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting a benchmark agent")?;
        Ok(Self { child, what: args.join(" ") })
    }

    /// Asks the agent to stop now and report (receivers count until then).
    fn interrupt(&self) {
        let _ = crate::netns::signal(self.child.id(), libc::SIGINT);
    }

    fn finish(self) -> Result<(u64, f64)> {
        let out = self.child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("agent `{}` failed: {}{}", self.what, stdout, String::from_utf8_lossy(&out.stderr));
        }
        parse_result(&stdout).with_context(|| format!("agent `{}` printed no RESULT: {stdout}", self.what))
    }
}

fn parse_result(s: &str) -> Option<(u64, f64)> {
    let line = s.lines().rev().find(|l| l.starts_with("RESULT "))?;
    let mut count = None;
    let mut secs = None;
    for kv in line.split_whitespace().skip(1) {
        match kv.split_once('=') {
            Some(("count", v)) => count = v.parse().ok(),
            Some(("seconds", v)) => secs = v.parse().ok(),
            _ => {}
        }
    }
    Some((count?, secs?))
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// Runs the generator on `gen_ns/gen_iface` against a receiver agent that is already running,
/// then collects both.
fn measure(spec: &BenchSpec, gen_ns: &str, gen_iface: &str, gen_core: usize, size: usize, rx: Agent) -> Result<Rate> {
    thread::sleep(Duration::from_millis(700)); // the receiver attaches its program
    let gen = Agent::start(
        gen_ns,
        &[
            s("agent"),
            s("gen"),
            s("--iface"),
            s(gen_iface),
            s("--size"),
            s(size),
            s("--seconds"),
            s(spec.seconds),
            s("--core"),
            s(gen_core),
        ],
    )?;
    let (sent, secs) = gen.finish()?;
    let (received, _) = rx.finish()?;
    Ok(Rate { offered_pps: sent as f64 / secs, received_pps: received as f64 / secs })
}

fn receiver(ns: &str, kind: &str, iface: &str, core: usize, seconds: f64) -> Result<Agent> {
    Agent::start(
        ns,
        &[s("agent"), s(kind), s("--iface"), s(iface), s("--seconds"), s(seconds + 1.5), s("--core"), s(core)],
    )
}

fn run_once(spec: &BenchSpec, size: usize) -> Result<RunResult> {
    let mut r = RunResult::default();
    let (g, d) = (spec.gen_core, spec.dut_core);
    r.xdp_drop = measure(spec, GEN, "g0", g, size, receiver(DUT, "xdp-drop", "d0", d, spec.seconds)?)?;
    r.afxdp_rx = measure(spec, GEN, "g0", g, size, receiver(DUT, "rx-drop", "d0", d, spec.seconds)?)?;
    r.tx_ceiling = measure(spec, DUT, "d1", d, size, receiver(SINK, "xdp-drop", "s0", g, spec.seconds)?)?;

    r.forward = forward(spec, size, &[])?;
    r.forward_no_latency = forward(spec, size, &["--no-latency"])?;
    Ok(r)
}

/// `xdpcopy --stateless -i d0 -o d1` on the DUT core, counted at s0.
fn forward(spec: &BenchSpec, size: usize, extra: &[&str]) -> Result<Rate> {
    let (g, d) = (spec.gen_core, spec.dut_core);
    let s0 = link_mac(SINK, "s0")?;
    let exe = bin_path("xdpcopy")?;
    let transfer = format!("80-10.202.2.2:8080@{s0}");
    let mut copier = ns_command(DUT, &exe.to_string_lossy())
        .args(["--stateless", "-x", &transfer, "-i", "d0", "-o", "d1", "--queues", "1", "-q"])
        .args(["--cores", &d.to_string()])
        .args(&spec.xdpcopy_args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting xdpcopy")?;
    thread::sleep(Duration::from_millis(800));
    if let Some(status) = copier.try_wait()? {
        let out = copier.wait_with_output()?;
        bail!("xdpcopy exited ({status}): {}", String::from_utf8_lossy(&out.stderr));
    }
    let res = measure(spec, GEN, "g0", g, size, receiver(SINK, "xdp-drop", "s0", d, spec.seconds)?);
    crate::netns::signal(copier.id(), libc::SIGINT)?;
    let out = copier.wait_with_output()?;
    res.with_context(|| format!("xdpcopy said: {}", String::from_utf8_lossy(&out.stderr)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[v.len() / 2]
}

/// Runs the whole benchmark and returns the Markdown report.
pub fn run(spec: &BenchSpec) -> Result<String> {
    let started = Instant::now();
    let _topo = Topology::up()?;
    let mut table = Vec::new();
    for &size in &spec.sizes {
        let mut runs = Vec::new();
        for i in 0..spec.runs {
            let r = run_once(spec, size)?;
            eprintln!(
                "bench: {size:>4} B run {}: received/offered Mpps: xdp_drop {:.3}/{:.3}, afxdp_rx {:.3}/{:.3}, \
                 tx_ceiling {:.3}/{:.3}, forward {:.3}/{:.3}, forward --no-latency {:.3}/{:.3}",
                i + 1,
                r.xdp_drop.received_pps / 1e6,
                r.xdp_drop.offered_pps / 1e6,
                r.afxdp_rx.received_pps / 1e6,
                r.afxdp_rx.offered_pps / 1e6,
                r.tx_ceiling.received_pps / 1e6,
                r.tx_ceiling.offered_pps / 1e6,
                r.forward.received_pps / 1e6,
                r.forward.offered_pps / 1e6,
                r.forward_no_latency.received_pps / 1e6,
                r.forward_no_latency.offered_pps / 1e6,
            );
            runs.push(r);
        }
        table.push((size, runs));
    }
    Ok(report(spec, &table, started.elapsed()))
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn report(spec: &BenchSpec, table: &[(usize, Vec<RunResult>)], took: Duration) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "### Stateless forwarding on one veth pair\n");
    let _ = writeln!(
        md,
        "Machine: {}. {} run(s) per size, {:.1} s of load each, medians shown; generator on core {}, \
         measured component on core {}. veth, native XDP, AF_XDP copy mode (veth has no zero-copy). \
         Took {:.0} s. Reproduce: `sudo target/release/xdpcopy-lab bench`.\n",
        machine(),
        spec.runs,
        spec.seconds,
        spec.gen_core,
        spec.dut_core,
        took.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| frame | offered (gen) | XDP_DROP | AF_XDP rx+drop | AF_XDP TX ceiling | xdpcopy --stateless | fwd ÷ TX ceiling | fwd ÷ XDP_DROP | fwd ÷ offered | same, --no-latency | with ÷ without histograms |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (size, runs) in table {
        let m = |f: &dyn Fn(&RunResult) -> f64| median(runs.iter().map(f).collect());
        let offered = m(&|r| r.forward.offered_pps);
        let drop = m(&|r| r.xdp_drop.received_pps);
        let rx = m(&|r| r.afxdp_rx.received_pps);
        let ceil = m(&|r| r.tx_ceiling.received_pps);
        let fwd = m(&|r| r.forward.received_pps);
        // Ratios are medians of the per-run ratios (side by side in one run), not ratios of medians.
        let ratio = |f: &dyn Fn(&RunResult) -> f64| m(&|r| f(r));
        let _ = writeln!(
            md,
            "| {size} B | {:.3} Mpps | {:.3} Mpps | {:.3} Mpps | {:.3} Mpps | {:.3} Mpps ({:.0} Mbit/s) | {:.0} % | {:.0} % | {:.0} % | {:.3} Mpps | {:.0} % |",
            offered / 1e6,
            drop / 1e6,
            rx / 1e6,
            ceil / 1e6,
            fwd / 1e6,
            fwd * *size as f64 * 8.0 / 1e6,
            100.0 * ratio(&|r| r.forward.received_pps / r.tx_ceiling.received_pps.max(1.0)),
            100.0 * ratio(&|r| r.forward.received_pps / r.xdp_drop.received_pps.max(1.0)),
            100.0 * ratio(&|r| r.forward.received_pps / r.forward.offered_pps.max(1.0)),
            m(&|r| r.forward_no_latency.received_pps) / 1e6,
            100.0 * ratio(&|r| r.forward.received_pps / r.forward_no_latency.received_pps.max(1.0)),
        );
    }
    md
}

/// Writes `report` into `path` between the stateless bench markers (creating the file if needed).
pub fn write_report(path: &Path, report: &str) -> Result<()> {
    write_section(path, "stateless", report)
}

/// Writes `report` into `path` between the markers of section `name`.
pub fn write_section(path: &Path, name: &str, report: &str) -> Result<()> {
    let begin = format!("<!-- bench:{name}:begin -->");
    let end = format!("<!-- bench:{name}:end -->");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}\n{report}{end}");
    let new = match (old.find(begin.as_str()), old.find(end.as_str())) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &old[..a], block, &old[b + end.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// The offline replay benchmark (`xdpcopy-lab bench-offline`): per frame size and run, the same
/// generated pcap sent at top speed by `tcpreplay --topspeed` out of d1 and by `xdpcopy -i FILE
/// --topspeed --stateless -o d1` (its feed writes the file straight into the worker's UMEM, the
/// worker rewrites and transmits it with AF_XDP out of d1), both counted by the XDP drop program
/// on s0; then the same run's AF_XDP TX ceiling of d1 (the plain AF_XDP transmitter on the DUT
/// core into s0). Rates: frames counted ÷ the sender's own sending time (tcpreplay's "sent in",
/// xdpcopy's `feed_ms`, the generator's run time).
pub fn run_offline(sizes: &[usize], frames: u32, runs: usize, xdpcopy_args: &[String]) -> Result<String> {
    let _topo = Topology::up()?;
    let dir = std::env::temp_dir().join(format!("xdpc-bench-offline-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let s0 = link_mac(SINK, "s0")?;
    // The TX ceiling: the generator on the DUT core, as xdpcopy's worker.
    let ceiling =
        BenchSpec { sizes: Vec::new(), runs: 1, seconds: 3.0, gen_core: 0, dut_core: 1, xdpcopy_args: Vec::new() };
    let mut rows = Vec::new();
    for &size in sizes {
        let file = dir.join(format!("gen-{size}.pcap"));
        write_pcap(&file, size, frames, s0)?;
        let mut results = Vec::new();
        for run in 0..runs {
            // tcpreplay out of d1 (in the DUT namespace), counted at s0.
            let sink = receiver(SINK, "xdp-drop", "s0", 0, 30.0)?;
            thread::sleep(Duration::from_millis(700));
            let started = Instant::now();
            let out = ns_command(DUT, "tcpreplay").args(["--topspeed", "-i", "d1"]).arg(&file).output()?;
            let wall = started.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!("tcpreplay failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            // tcpreplay's own sending time ("Actual: N packets (B bytes) sent in S seconds"), not
            // its start-up: the same footing as xdpcopy's feed time.
            let text = String::from_utf8_lossy(&out.stdout);
            let secs = text
                .lines()
                .find(|l| l.trim_start().starts_with("Actual:"))
                .and_then(|l| l.split("sent in").nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
                .filter(|s| *s > 0.0)
                .unwrap_or(wall);
            thread::sleep(Duration::from_millis(200));
            sink.interrupt();
            let (counted, _) = sink.finish()?;
            // xdpcopy: the file fed into its worker (core 1; the feed on another core),
            // forwarded out of d1.
            let sink = receiver(SINK, "xdp-drop", "s0", 0, 30.0)?;
            thread::sleep(Duration::from_millis(700));
            let exe = bin_path("xdpcopy")?;
            let transfer = format!("80-10.202.2.2:8080@{s0}");
            let out = ns_command(DUT, &exe.to_string_lossy())
                .args(["--stateless", "--topspeed", "-q", "--queues", "1", "--cores", "1", "-x", &transfer])
                .args(xdpcopy_args)
                .args(["-o", "d1", "-i"])
                .arg(&file)
                .output()?;
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() {
                bail!("xdpcopy offline failed: {log}");
            }
            thread::sleep(Duration::from_millis(200));
            sink.interrupt();
            let (counted_x, _) = sink.finish()?;
            let summary = crate::proc::Summary::parse(&log.lines().map(str::to_owned).collect::<Vec<_>>())?;
            let feed_ms = summary.get("feed_ms");
            // The same run's TX ceiling of d1.
            let ceil = measure(&ceiling, DUT, "d1", 1, size, receiver(SINK, "xdp-drop", "s0", 0, ceiling.seconds)?)?;
            let r = OfflineRun {
                tcpreplay: counted as f64 / secs,
                xdpcopy: counted_x as f64 / (feed_ms.max(1) as f64 / 1000.0),
                ceiling: ceil.received_pps,
                lost: frames.saturating_sub(counted_x as u32),
            };
            eprintln!(
                "bench-offline: {size} B run {}: tcpreplay {counted}/{frames} frames in {secs:.3} s = {:.3} Mpps; \
                 xdpcopy {counted_x}/{frames} in {:.3} s = {:.3} Mpps (feed held {}); TX ceiling {:.3} Mpps",
                run + 1,
                r.tcpreplay / 1e6,
                feed_ms as f64 / 1000.0,
                r.xdpcopy / 1e6,
                summary.get("feed_held"),
                r.ceiling / 1e6,
            );
            results.push(r);
        }
        rows.push((size, results));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut md = String::new();
    let _ = writeln!(md, "### Offline replay at top speed\n");
    let _ = writeln!(
        md,
        "Machine: {}. {frames} frames per file, {runs} run(s), medians (ratios: medians of each run's ratio).{} \
         Reproduce: `sudo target/release/xdpcopy-lab bench-offline`.\n",
        machine(),
        if xdpcopy_args.is_empty() { String::new() } else { format!(" xdpcopy with `{}`.", xdpcopy_args.join(" ")) }
    );
    let _ = writeln!(
        md,
        "| frame | tcpreplay --topspeed (d1 → s0) | xdpcopy -i FILE --topspeed --stateless (file → worker → d1 → s0) | AF_XDP TX ceiling (d1 → s0) | xdpcopy ÷ tcpreplay (goal ≥ 200 %) | xdpcopy ÷ TX ceiling (goal ≥ 90 %) | frames lost |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for (size, runs) in rows {
        let m = |f: &dyn Fn(&OfflineRun) -> f64| median(runs.iter().map(f).collect());
        let _ = writeln!(
            md,
            "| {size} B | {:.3} Mpps | {:.3} Mpps | {:.3} Mpps | {:.0} % | {:.0} % | {} |",
            m(&|r| r.tcpreplay) / 1e6,
            m(&|r| r.xdpcopy) / 1e6,
            m(&|r| r.ceiling) / 1e6,
            100.0 * m(&|r| r.xdpcopy / r.tcpreplay.max(1.0)),
            100.0 * m(&|r| r.xdpcopy / r.ceiling.max(1.0)),
            runs.iter().map(|r| r.lost).max().unwrap_or(0),
        );
    }
    Ok(md)
}

/// One run of the offline benchmark at one size, frames per second.
#[derive(Debug, Clone, Copy)]
struct OfflineRun {
    tcpreplay: f64,
    xdpcopy: f64,
    ceiling: f64,
    /// Frames of the file xdpcopy's run did not deliver to s0.
    lost: u32,
}

/// A pcap of `frames` TCP frames of `size` bytes to port 80 (64 flows), Ethernet to `dst_mac`.
fn write_pcap(path: &Path, size: usize, frames: u32, dst_mac: crate::MacAddr) -> Result<()> {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut w = PcapWriter::new(file)?;
    let spec = crate::FrameSpec { dst_mac, dst_port: 80, ..crate::FrameSpec::default() };
    for i in 0..frames {
        let mut s = spec.clone();
        s.src_port = 40_000 + (i % 64) as u16;
        let f = crate::build_frame(&s, crate::FrameKind::Good, size, i)?;
        w.write_packet(&PcapPacket::new(Duration::from_micros(u64::from(i)), f.len() as u32, &f))?;
    }
    Ok(())
}
