//! The `xdpcopy` binary's command line as a user meets it: exit codes, hints, and the checks
//! that run before anything is touched. No root needed: every case fails (or stops) before
//! set-up.

use std::process::{Command, Output};

fn xdpcopy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdpcopy")).args(args).output().expect("running xdpcopy")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version_exit_0() {
    let o = xdpcopy(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("Session replay:") && help.contains("Examples:"), "{help}");
    let o = xdpcopy(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("xdpcopy 0."));
}

#[test]
fn usage_errors_exit_2_with_the_hint() {
    let o = xdpcopy(&["-x", "80-10.0.0.2:80", "-i", "a", "-o", "b", "-s", "10.0.0.3", "-L"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("-L is TCPCopy's survive intercept loss; the channel always reconnects"),
        "{}",
        stderr(&o)
    );
    let o = xdpcopy(&["-x", "80-10.0.0.2:80", "-o", "b"]);
    assert_eq!(o.status.code(), Some(2), "a missing required option: {}", stderr(&o));
}

#[test]
fn an_unwritable_output_path_fails_before_any_interface_is_touched() {
    // Neither interface exists: the output path is reported first, so it was checked first.
    for (opt, path) in [
        ("--summary-json", "/proc/xdpcopy-test/summary.json"),
        ("--pcap-out", "/proc/xdpcopy-test/out.pcap"),
        ("--latency-csv", "/proc/xdpcopy-test/run1"),
    ] {
        let o = xdpcopy(&["--stateless", "-x", "80-10.0.0.2:80", "-i", "xdpc-none0", "-o", "xdpc-none1", opt, path]);
        assert_eq!(o.status.code(), Some(2), "{opt}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(&format!("error: {opt} {path}: cannot create the directory")), "{opt}: {e}");
        assert!(!e.contains("xdpc-none"), "{opt}: an interface was looked at first: {e}");
    }
}

#[test]
fn missing_interfaces_and_files_are_named() {
    let o = xdpcopy(&["--stateless", "-x", "80-10.0.0.2:80", "-i", "/tmp/xdpcopy-missing.pcap", "-o", "lo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-i/--input /tmp/xdpcopy-missing.pcap: no such file"), "{}", stderr(&o));
    let o = xdpcopy(&["--stateless", "-x", "80-10.0.0.2:80", "-i", "lo", "-o", "xdpc-none1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-o/--output xdpc-none1: no interface of that name"), "{}", stderr(&o));
    let o = xdpcopy(&["-x", "80-10.0.0.2:80", "-i", "lo", "-o", "lo", "-s", "10.0.0.3:99999"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a port in 1..=65535"), "{}", stderr(&o));
}

#[test]
fn assets_are_generated_from_the_cli() {
    let dir = std::env::temp_dir().join(format!("xdpcopy-cli-assets-{}", std::process::id()));
    let o = xdpcopy(&["--generate-assets", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for f in [
        "man/xdpcopy.1",
        "man/xdpcopy-report.1",
        "completions/xdpcopy.bash",
        "completions/_xdpcopy",
        "completions/xdpcopy.fish",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let man = std::fs::read_to_string(dir.join("man/xdpcopy.1")).unwrap();
    assert!(
        man.contains("Exit status") && man.contains("\\-\\-stateless"),
        "the man page has the options and examples"
    );
    let bash = std::fs::read_to_string(dir.join("completions/xdpcopy.bash")).unwrap();
    assert!(bash.contains("--transfer") && !bash.contains("generate-assets"), "the hidden option is not completed");
    let _ = std::fs::remove_dir_all(&dir);
}
