//! Running the project's own binaries (`xdpcopy`, later `xdpcopy-intercept`) inside a lab
//! namespace: find the binary, start it with its stderr in a log file, wait for its start-up
//! line, stop it with SIGINT and read the final summary it prints.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::{
    lab::{read_lines, wait_for_line, Lab, Role},
    netns::signal,
};

/// Returns the path of a workspace binary built in the same profile as the running executable
/// (tests live in `target/<profile>/deps/`, binaries in `target/<profile>/`).
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    for cand in [dir.join(name), dir.join("..").join(name)] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    bail!("binary {name} not found next to {}; build it first: cargo build --workspace --bins", exe.display())
}

/// Builds the workspace binaries once per test process (a no-op when they are up to date), so
/// tests never run a stale `xdpcopy`. Uses the cargo that runs the tests.
pub fn ensure_built() -> Result<()> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "--workspace", "--bins", "--quiet"]);
            if cfg!(not(debug_assertions)) {
                cmd.arg("--release");
            }
            match cmd.status() {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("cargo build --workspace --bins failed: {s}")),
                Err(e) => Err(format!("running cargo: {e}")),
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A project binary running in a lab namespace. Dropping it kills it.
pub struct Running {
    child: Option<Child>,
    /// Its stderr (and stdout).
    pub log: PathBuf,
    name: String,
}

impl Running {
    /// Starts `bin args...` in `role`'s namespace, logging to `lab.out_dir()/<log_name>`, and
    /// waits until its log has a line containing `ready` (or it exits).
    pub fn start(lab: &Lab, role: Role, bin: &str, args: &[&str], log_name: &str, ready: &str) -> Result<Self> {
        let path = bin_path(bin)?;
        let log = lab.out_dir().join(log_name);
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = lab
            .cmd(role, &path.to_string_lossy())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let mut me = Self { child: Some(child), log, name: bin.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if read_lines(&me.log).iter().any(|l| l.contains(ready)) {
                return Ok(me);
            }
            if let Some(status) = me.child.as_mut().expect("running").try_wait()? {
                bail!("{bin} exited ({status}) before it was ready; its log:\n{}", read_lines(&me.log).join("\n"));
            }
            ensure!(
                Instant::now() < deadline,
                "{bin} not ready within 20 s; its log:\n{}",
                read_lines(&me.log).join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `sig` (it keeps running: see [`Running::wait_exit`]). Dropping the value sends
    /// SIGKILL.
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let child = self.child.as_ref().context("already stopped")?;
        signal(child.id(), sig).with_context(|| format!("signal {sig} to {}", self.name))
    }

    /// Waits up to `timeout` for it to exit; its exit status, or `None` while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let child = self.child.as_mut().context("already stopped")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        wait_for_line(&self.log, needle, timeout)
    }

    /// Sends SIGINT, waits for a clean exit and returns the summary counters it printed
    /// (`  name   value` lines after the "summary" line).
    pub fn stop(mut self) -> Result<Summary> {
        let mut child = self.child.take().expect("running");
        // `ip netns exec` execs the program, so the child pid is the program's.
        if let Err(e) = signal(child.id(), libc::SIGINT) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("SIGINT to {}: {e}", self.name);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within 10 s of SIGINT", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines = read_lines(&self.log);
        ensure!(status.success(), "{} exited with {status}; its log:\n{}", self.name, lines.join("\n"));
        Summary::parse(&lines).with_context(|| format!("{}'s log:\n{}", self.name, lines.join("\n")))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The final counters a binary printed.
#[derive(Debug, Clone, Default)]
pub struct Summary(pub HashMap<String, u64>);

impl Summary {
    /// Parses the `  name   value` lines following the line that contains "summary".
    pub fn parse(lines: &[String]) -> Result<Self> {
        let start = lines.iter().rposition(|l| l.contains("summary")).context("no summary in the log")?;
        let mut map = HashMap::new();
        for l in &lines[start + 1..] {
            let mut it = l.split_whitespace();
            if let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) {
                if let Ok(v) = v.parse() {
                    map.insert(k.to_owned(), v);
                }
            }
        }
        ensure!(!map.is_empty(), "empty summary");
        Ok(Self(map))
    }

    /// A counter (panics with the available names if absent: tests want to know).
    pub fn get(&self, name: &str) -> u64 {
        match self.0.get(name) {
            Some(v) => *v,
            None => panic!("no counter {name} in the summary; have {:?}", self.0.keys().collect::<Vec<_>>()),
        }
    }
}

/// The log file of a running binary, for messages.
pub fn log_text(path: &Path) -> String {
    read_lines(path).join("\n")
}

/// The lab tests' guard: root (or a loud skip, a failure under CI) and the workspace binaries
/// freshly built.
pub fn lab_test(test: &str) -> bool {
    let ok = crate::netns::root_or_skip(test);
    if ok {
        ensure_built().expect("building the workspace binaries");
    }
    ok
}

/// Starts `xdpcopy-intercept` for the lab's test nginx, plus `extra` arguments (more
/// `--target`s, `--metrics` …); logs to `log`. On the assist server's `a0`; in a traditional lab
/// on the test server with `--local` at `t1`'s egress, the outside's `a0` allowlisted.
pub fn start_intercept(lab: &Lab, extra: &[&str], log: &str) -> Result<Running> {
    use crate::lab::{addr, iface};
    let target = format!("{}:{}", addr::TEST, addr::TEST_PORT);
    let allow = format!("{}/32", addr::ASSIST);
    let (role, mut args) = if lab.spec().traditional {
        (Role::Test, vec!["--local", "-i", iface::TEST_TO_ASSIST, "--pass-to", &allow])
    } else {
        (Role::Assist, vec!["-i", iface::ASSIST_IN])
    };
    args.extend_from_slice(&["--target", &target, "-q"]);
    args.extend_from_slice(extra);
    Running::start(lab, role, "xdpcopy-intercept", &args, log, "capturing responses")
}

/// Starts `xdpcopy` in session mode on the copier (capture `cin`, output `cout`, the lab's
/// intercept at [`Lab::intercept_addr`]) with `args` (at least `-x`), and waits until both channel connections are up.
pub fn start_session_copier(lab: &Lab, args: &[&str], log: &str) -> Result<Running> {
    use crate::lab::iface;
    let channel = lab.intercept_addr().to_string();
    let mut all = vec!["-i", iface::COPIER_IN, "-o", iface::COPIER_OUT, "-s", &channel];
    all.extend_from_slice(args);
    let copier = Running::start(lab, Role::Copier, "xdpcopy", &all, log, "capturing on")?;
    copier.wait_for("channel up 2", Duration::from_secs(10))?;
    Ok(copier)
}
