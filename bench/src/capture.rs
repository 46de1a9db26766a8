//! tcpdump inside a lab namespace, started so that it is capturing before the caller sends, and
//! stopped so that everything is flushed to the file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::netns::{ns_command, signal, NS_PREFIX};

/// A running `tcpdump -U -w FILE` inside a namespace. Dropping it without [`Capture::stop`]
/// still stops it (SIGINT, then SIGKILL).
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    log: PathBuf,
}

/// What tcpdump reported when it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureResult {
    pub path: PathBuf,
    pub captured: Option<u64>,
    pub dropped_by_kernel: Option<u64>,
}

impl Capture {
    /// Starts `tcpdump -i IFACE -U -n -w PATH FILTER...` in `ns` and waits (up to 10 s) until
    /// it reports that it is listening.
    pub fn start(ns: &str, iface: &str, path: &Path, filter: &[&str]) -> Result<Capture> {
        ensure!(ns.starts_with(NS_PREFIX), "not a lab namespace: {ns}");
        let log = path.with_extension("tcpdump.log");
        let log_file = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let _ = std::fs::remove_file(path);
        let mut cmd = ns_command(ns, "tcpdump");
        cmd.args(["-i", iface, "--immediate-mode", "-B", "16384", "-U", "-n", "-Z", "root", "-s", "0", "-w"])
            .arg(path)
            .args(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let mut cap = Capture { child: Some(child), path: path.to_owned(), log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&cap.log).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(cap);
            }
            if let Some(status) = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                cap.child = None;
                bail!("tcpdump on {ns}/{iface} exited ({status}): {}", text.trim());
            }
            if Instant::now() > deadline {
                bail!("tcpdump on {ns}/{iface} did not start listening: {}", text.trim());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until the capture file has stopped growing (no new frame for `quiet`, at most
    /// `timeout`): frames still in flight when the sender returns get written first.
    pub fn settle(&self, quiet: Duration, timeout: Duration) {
        let size = || std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + timeout;
        let mut last = size();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let now = size();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
        }
    }

    /// Lets the file settle (200 ms without growth, at most 5 s), then stops tcpdump with
    /// SIGINT and waits for it to flush and exit (SIGKILL after 5 s).
    pub fn stop(mut self) -> Result<CaptureResult> {
        self.settle(Duration::from_millis(200), Duration::from_secs(5));
        self.stop_inner()?;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let stat = |what: &str| {
            text.lines()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        };
        Ok(CaptureResult {
            path: self.path.clone(),
            captured: stat("packets captured"),
            dropped_by_kernel: stat("dropped by kernel"),
        })
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = signal(child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait()? {
                // tcpdump exits 0 on SIGINT.
                ensure!(
                    status.success(),
                    "tcpdump exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default().trim()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("tcpdump did not stop on SIGINT; killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
