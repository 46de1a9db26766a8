//! The `xdpcopy-intercept` binary's command line: exit codes, TCPCopy hints, checks before
//! anything is touched. No root needed.

use std::process::{Command, Output};

fn intercept(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdpcopy-intercept")).args(args).output().expect("running xdpcopy-intercept")
}

#[test]
fn help_has_headings_and_examples() {
    let o = intercept(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.starts_with("Returns the test server's response headers"), "{help}");
    for h in ["Capture:", "Channel:", "Output and latency:", "Dataplane tuning:", "Examples:", "Exit status: 0"] {
        assert!(help.contains(h), "{h}: {help}");
    }
}

#[test]
fn intercept_letters_get_their_hint() {
    for h in dataplane::cli::INTERCEPT_HINTS {
        let o = intercept(&["-i", "lo", "--target", "10.0.0.2:80", h.flag, "x"]);
        assert_eq!(o.status.code(), Some(2), "{}", h.flag);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(&format!("tip: {} is TCPCopy's {}; ", h.flag, h.was)), "{}: {e}", h.flag);
    }
}

#[test]
fn bad_values_exit_2_before_anything_is_touched() {
    let o = intercept(&["-i", "xdpc-none0", "--target", "10.0.0.2:80", "--metrics", "9465"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ADDR:PORT"));
    let o = intercept(&["-i", "xdpc-none0", "--target", "10.0.0.2:80", "--summary-json", "/proc/xdpc/s.json"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--summary-json /proc/xdpc/s.json: cannot create the directory") && !e.contains("xdpc-none0"),
        "{e}"
    );
}
