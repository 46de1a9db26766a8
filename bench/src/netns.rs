//! Small helpers around network namespaces: run a closure inside a lab namespace on a dedicated
//! thread, run commands there, signal processes.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use dataplane::xsk::sys;

use crate::frames::MacAddr;

/// Every namespace the lab creates (and the only ones it will enter or delete) starts with this.
pub const NS_PREFIX: &str = "xdpc-";

/// Whether the process runs with effective uid 0 (the owner of `/proc/self` is the euid).
/// The lab tests' guard: true when the test can run (root). Without root it prints a loud
/// SKIPPED banner straight to stderr (the harness captures `eprintln!`) and returns false —
/// unless `CI` is set, where a lab test that cannot run is a failure, not a skip.
pub fn root_or_skip(test: &str) -> bool {
    if have_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: the lab tests need root, and CI is set");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPED {test}: the lab tests need root (network namespaces) !!!!!\n");
    false
}

pub fn have_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Runs `f` on a fresh thread that has joined network namespace `ns` (one of the lab's: the
/// name must start with [`NS_PREFIX`]). Sockets created inside `f` live in that namespace.
/// A panic in `f` is propagated to the caller.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    ensure!(
        ns.starts_with(NS_PREFIX),
        "refusing to enter namespace {ns:?}: not a lab namespace (prefix {NS_PREFIX:?})"
    );
    let path = Path::new("/run/netns").join(ns);
    let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    std::thread::scope(|s| {
        let handle = s.spawn(move || -> Result<T> {
            // Only this (dedicated, short-lived) thread changes namespace.
            sys::enter_netns(file.as_fd()).with_context(|| format!("setns into {ns}"))?;
            drop(file);
            f()
        });
        handle.join().unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    })
}

/// Runs a command to completion; on a non-zero exit the error carries its stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out: Output = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!("{:?} failed ({}): {}", cmd, out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS...`
pub fn ip(args: &[&str]) -> Result<String> {
    run_cmd(Command::new("ip").args(args))
}

/// `ip netns exec NS ARGS...` as a `Command` (not yet run).
pub fn ns_command(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Names of all network namespaces (`ip netns list`, first column).
pub fn list_namespaces() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect())
}

/// Whether namespace `ns` exists (has a name under /run/netns).
pub fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// The MAC address of interface `iface` inside namespace `ns`.
pub fn link_mac(ns: &str, iface: &str) -> Result<MacAddr> {
    let out = ip(&["-n", ns, "-o", "link", "show", "dev", iface])?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "link/ether" {
            let mac = words.next().ok_or_else(|| anyhow!("no MAC after link/ether"))?;
            return mac.parse();
        }
    }
    bail!("no link/ether address for {iface} in {ns}: {out}")
}

/// Sends `sig` to process `pid`. Errors (e.g. no such process) are returned, not panicked on.
/// Pid 0 and pids above `i32::MAX` (which `kill` would take as process groups or "every process")
/// are refused with `InvalidInput`.
pub fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    sys::kill(pid, sig).map_err(|e| e.source)
}

/// Pids of the processes whose network namespace is `ns` (`ip netns pids`), except this process.
pub fn ns_pids(ns: &str) -> Vec<u32> {
    let me = std::process::id();
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != me)
        .collect()
}

/// Terminates every process inside lab namespace `ns`: SIGTERM, up to `grace` to exit, then
/// SIGKILL. Only lab namespaces (prefix [`NS_PREFIX`]) are touched.
pub fn kill_ns_processes(ns: &str, grace: Duration) {
    if !ns.starts_with(NS_PREFIX) || !ns_exists(ns) {
        return;
    }
    let pids = ns_pids(ns);
    if pids.is_empty() {
        return;
    }
    for &p in &pids {
        let _ = signal(p, libc::SIGTERM);
    }
    if wait_until(grace, Duration::from_millis(20), || ns_pids(ns).is_empty()) {
        return;
    }
    for p in ns_pids(ns) {
        let _ = signal(p, libc::SIGKILL);
    }
    wait_until(Duration::from_secs(2), Duration::from_millis(20), || ns_pids(ns).is_empty());
}

/// Polls `cond` every `step` until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}
