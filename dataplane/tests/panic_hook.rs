//! The footprint's panic hook, in a child process that panics as a release build does
//! (`panic = "abort"`: no destructor runs): every registered change is still undone, newest
//! first, before the process aborts.

use std::{path::PathBuf, process::Command};

use dataplane::footprint::{self, Change};

const CHILD: &str = "XDPCOPY_PANIC_HOOK_CHILD";
const TEST: &str = "panic_hook_undoes_every_change_before_the_abort";

/// The child: registers two changes whose undo appends to the file named by `CHILD`, forgets
/// them (as an abort would), and panics with a hook chain that aborts after the footprint's.
fn child(log: PathBuf) -> ! {
    footprint::install_panic_hook("panic-test");
    let note = |what: &'static str| {
        let log = log.clone();
        move || {
            let mut text = std::fs::read_to_string(&log).unwrap_or_default();
            text += what;
            text += "\n";
            std::fs::write(&log, text).expect("writing the log");
        }
    };
    std::mem::forget(Change::new("the older change", note("older")));
    std::mem::forget(Change::new("the newer change", note("newer")));
    let footprint_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        footprint_hook(info);
        std::process::abort();
    }));
    panic!("deliberate panic");
}

#[test]
fn panic_hook_undoes_every_change_before_the_abort() {
    if let Some(log) = std::env::var_os(CHILD) {
        child(log.into());
    }
    let log = std::env::temp_dir().join(format!("xdpcopy-panic-hook-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, &log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "the child did not abort: {stderr}");
    assert!(stderr.contains("deliberate panic"), "the panic message comes first: {stderr}");
    assert!(stderr.contains("panic-test: after the panic, removed the newer change, the older change"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "newer\nolder\n");
    let _ = std::fs::remove_file(&log);
}
