//! What the command lines of `xdpcopy` and `xdpcopy-intercept` share: the exit codes, the help
//! headings, targeted hints for TCPCopy's options, the checks a value gets before anything is
//! touched (output paths, listen addresses), the build identity, and the man pages and shell
//! completions generated from the clap definitions (for the package).
//!
//! Each binary keeps its clap `Args` in its `main.rs` and turns them into a validated
//! configuration; nothing below `main` sees clap. A binary parses with [`parse`], which exits
//! with [`exit::USAGE`] on any command-line error (after adding the TCPCopy hint, if one
//! applies) and handles the hidden `--generate-assets DIR` option the packaging uses.

use std::{
    ffi::OsString,
    fmt, fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::{
    builder::StyledStr,
    error::{ContextKind, ContextValue, ErrorKind},
    Arg, ArgAction, Command, Parser,
};

/// The commit the binaries were built from (`git rev-parse`, or `XDPCOPY_GIT_COMMIT` at build
/// time; `unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("XDPCOPY_GIT_COMMIT");

/// `--version`: the package version and the commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("XDPCOPY_GIT_COMMIT"), ")");

/// The exit status of both programs (docs/cli.md).
pub mod exit {
    /// A clean stop: SIGINT/SIGTERM, `--duration` over, an offline replay finished, `--help`.
    pub const SUCCESS: u8 = 0;
    /// A runtime failure: set-up (XDP attach, sockets, next hop) or a thread that failed.
    pub const FAILURE: u8 = 1;
    /// A usage error: an unknown option, a bad value, a missing interface, file or output
    /// directory; nothing was touched.
    pub const USAGE: u8 = 2;
}

/// The help headings of the options, in the order `--help` shows them. An option goes under one
/// with `help_heading = heading::X` in its `#[arg(...)]`.
pub mod heading {
    /// Where frames come from.
    pub const CAPTURE: &str = "Capture";
    /// What is copied, where to.
    pub const TARGETS: &str = "Targets";
    /// Session replay through intercept.
    pub const SESSION: &str = "Session replay";
    /// Which sessions, how many copies, from which clients.
    pub const SHAPING: &str = "Shaping";
    /// Replaying a capture file.
    pub const OFFLINE: &str = "Offline replay";
    /// Stats, exports, latency.
    pub const OUTPUT: &str = "Output and latency";
    /// Queues, cores, rings, modes.
    pub const TUNING: &str = "Dataplane tuning";
    /// xdpcopy-intercept: the header-return channel.
    pub const CHANNEL: &str = "Channel";
}

/// A command-line value that is wrong: the message names the option, the value and the
/// accepted form. The binaries exit with [`exit::USAGE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// What to use instead of one of TCPCopy's options.
#[derive(Debug, Clone, Copy)]
pub struct Hint {
    /// The option as typed (`-d`).
    pub flag: &'static str,
    /// What it does in TCPCopy.
    pub was: &'static str,
    /// What to do with xdpcopy.
    pub instead: &'static str,
}

/// TCPCopy's tcpcopy options xdpcopy does not take (docs/migrating-from-tcpcopy.md).
pub const TCPCOPY_HINTS: &[Hint] = &[
    Hint {
        flag: "-d",
        was: "daemonize",
        instead: "xdpcopy stays in the foreground: run it as a systemd service (xdpcopy@NAME.service) or with nohup",
    },
    Hint {
        flag: "-l",
        was: "log file",
        instead: "xdpcopy logs to stderr: redirect it (2>>FILE) or read the journal (journalctl -u xdpcopy@NAME)",
    },
    Hint { flag: "-P", was: "pid file", instead: "no pid file: systemd tracks the process (xdpcopy@NAME.service)" },
    Hint {
        flag: "-m",
        was: "memory limit",
        instead: "memory is preallocated and bounded per worker: --max-sessions, --pool-mb, --session-buffer-kb",
    },
    Hint {
        flag: "-L",
        was: "survive intercept loss",
        instead: "the channel always reconnects to the intercepts (with backoff): nothing to enable",
    },
    Hint {
        flag: "-F",
        was: "pcap filter",
        instead: "the XDP program selects the -x ports; narrow to one address with -x ONLINE_IP:PORT-TARGET_IP:PORT",
    },
    Hint { flag: "-v", was: "version", instead: "use -V or --version" },
    Hint {
        flag: "-U",
        was: "per-session pool",
        instead: "--session-buffer-kb KIB (per session) and --pool-mb MIB (per worker)",
    },
    Hint {
        flag: "-H",
        was: "replacement for 127.0.0.1",
        instead: "send from other client addresses with -c/--client-addresses",
    },
    Hint { flag: "-B", was: "pcap buffer", instead: "AF_XDP rings replace the pcap buffer: --ring-size N, --frames N" },
    Hint { flag: "-S", was: "snaplen", instead: "xdpcopy captures whole frames: nothing to set" },
];

/// TCPCopy's intercept options xdpcopy-intercept does not take.
pub const INTERCEPT_HINTS: &[Hint] = &[
    Hint {
        flag: "-F",
        was: "pcap filter",
        instead: "name the test servers with --target IP:PORT (repeatable); everything else passes to the kernel",
    },
    Hint {
        flag: "-d",
        was: "daemonize",
        instead: "xdpcopy-intercept stays in the foreground: run it as a systemd service (xdpcopy-intercept.service)",
    },
    Hint {
        flag: "-l",
        was: "log file",
        instead: "it logs to stderr: redirect it (2>>FILE) or read the journal (journalctl -u xdpcopy-intercept)",
    },
    Hint {
        flag: "-P",
        was: "pid file",
        instead: "no pid file: systemd tracks the process (xdpcopy-intercept.service)",
    },
    Hint { flag: "-v", was: "version", instead: "use -V or --version" },
    Hint {
        flag: "-x",
        was: "NFQUEUE passlist (traditional mode)",
        instead: "there is no traditional mode: only --target responses are captured, everything else passes",
    },
    Hint {
        flag: "-n",
        was: "combined batch size",
        instead: "frames are flushed at the end of each capture burst: nothing to set (--framing bare to disable)",
    },
    Hint {
        flag: "-s",
        was: "delay table size",
        instead: "the delay table grows as needed; --delay-ttl SECS sets how long early SYN-ACKs are held",
    },
    Hint {
        flag: "-t",
        was: "(unhandled in intercept)",
        instead: "a session route's idle lifetime is --route-ttl SECS",
    },
    Hint {
        flag: "-D",
        was: "rewrite response destination",
        instead: "not supported: give the address the responses come from as --target",
    },
    Hint { flag: "-c", was: "protect connections (--single)", instead: "there is no single mode: nothing to set" },
];

/// The hidden option that writes the man pages and completions (see [`generate_assets`]).
const GENERATE: &str = "generate-assets";

/// Parses the command line of `P`: on an error it prints clap's message (with the TCPCopy hint
/// from `hints` for an unknown option) and exits with [`exit::USAGE`]; `--help` and `--version`
/// exit with [`exit::SUCCESS`]. The hidden `--generate-assets DIR` writes the man pages and
/// completions into DIR and exits.
pub fn parse<P: Parser>(hints: &[Hint]) -> P {
    parse_from(std::env::args_os(), hints).unwrap_or_else(|e| {
        let code = e.exit_code();
        let _ = e.print();
        std::process::exit(if code == 0 { 0 } else { i32::from(exit::USAGE) })
    })
}

/// [`parse`] without exiting, for tests: `Err` carries clap's error (hint included).
///
/// # Errors
/// The command-line error, or the error of writing the assets.
pub fn parse_from<P: Parser, I: IntoIterator<Item = T>, T: Into<OsString> + Clone>(
    args: I,
    hints: &[Hint],
) -> Result<P, clap::Error> {
    let mut cmd = P::command().arg(
        Arg::new(GENERATE)
            .long(GENERATE)
            .value_name("DIR")
            .value_parser(clap::value_parser!(PathBuf))
            .action(ArgAction::Set)
            .exclusive(true)
            .hide(true),
    );
    let matches = cmd.try_get_matches_from_mut(args).map_err(|e| with_hint(e, hints, &cmd))?;
    if let Some(dir) = matches.get_one::<PathBuf>(GENERATE) {
        match generate_assets(P::command(), dir) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                std::process::exit(i32::from(exit::SUCCESS));
            }
            Err(e) => {
                eprintln!("{}: error: --generate-assets {}: {e}", cmd.get_name(), dir.display());
                std::process::exit(i32::from(exit::FAILURE));
            }
        }
    }
    P::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// Adds the TCPCopy hint to an "unexpected argument" error when the argument is one of `hints`
/// (replacing clap's own suggestion: a similar-looking option is not the answer there).
pub fn with_hint(err: clap::Error, hints: &[Hint], cmd: &Command) -> clap::Error {
    if err.kind() != ErrorKind::UnknownArgument {
        return err;
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else { return err };
    let Some(h) = hints.iter().find(|h| arg == h.flag || (arg.len() > 2 && arg.starts_with(h.flag))) else {
        return err;
    };
    let tip = format!("{} is TCPCopy's {}; {}", h.flag, h.was, h.instead);
    let mut hinted = clap::Error::new(ErrorKind::UnknownArgument).with_cmd(cmd);
    for kind in [ContextKind::InvalidArg, ContextKind::Usage] {
        if let Some(v) = err.get(kind) {
            hinted.insert(kind, v.clone());
        }
    }
    hinted.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![StyledStr::from(tip)]));
    hinted
}

/// Writes the man pages (`man/*.1`, one per command and subcommand) and the bash, zsh and fish
/// completions (`completions/`) of `cmd` under `dir`; returns the files written.
///
/// # Errors
/// The error of creating a directory or writing a file.
pub fn generate_assets(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    use clap_complete::{generate_to, Shell};
    let name = cmd.get_name().to_string();
    let man = dir.join("man");
    let completions = dir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let mut files = Vec::new();
    let mut cmd = cmd;
    cmd.build();
    write_man_pages(&cmd, &man, &mut files)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        files.push(generate_to(shell, &mut cmd, &name, &completions)?);
    }
    Ok(files)
}

/// Writes `cmd`'s man page and its subcommands' (`xdpcopy-report.1`), skipping hidden ones.
fn write_man_pages(cmd: &Command, dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    let path = dir.join(format!("{}.1", cmd.get_name()));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    fs::write(&path, out)?;
    files.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let sub = sub.clone().name(format!("{}-{}", cmd.get_name(), sub.get_name()));
        write_man_pages(&sub, dir, files)?;
    }
    Ok(())
}

/// Parses a listen address for `--metrics`: `ADDR:PORT`, `[V6]:PORT`, or `:PORT` for every
/// address.
///
/// # Errors
/// A message with the value and the accepted form (clap adds the option's name).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    const FORM: &str = "expected ADDR:PORT, e.g. 127.0.0.1:9464, [::1]:9464, or :9464 for every address";
    if let Some(port) = s.strip_prefix(':') {
        return match port.parse::<u16>() {
            Ok(p) => Ok(SocketAddr::from(([0, 0, 0, 0], p))),
            Err(_) => Err(format!("port {port:?} is not a number in 0..=65535; {FORM}")),
        };
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if s.parse::<u16>().is_ok() {
        return Err(format!("{s} is a port without an address; {FORM}"));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_err() => {
            Err(format!("port {port:?} of {host} is not a number in 0..=65535; {FORM}"))
        }
        Some((host, _)) => Err(format!("{host:?} is not an IP address; {FORM}")),
        None => Err(format!("no port; {FORM}")),
    }
}

/// Checks that `option`'s file `path` can be written, before anything is set up: its directory
/// exists or can be created, a file can be created in it, and `path` is not a directory.
///
/// # Errors
/// A [`UsageError`] naming the option, the path and what is wrong.
pub fn check_output_file(option: &str, path: &Path) -> Result<(), UsageError> {
    if path.is_dir() {
        return Err(UsageError(format!("{option} {}: is a directory; expected a file name", path.display())));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    check_output_dir(option, path, dir)?;
    if path.exists() {
        fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| UsageError(format!("{option} {}: cannot write the file: {e}", path.display())))?;
    }
    Ok(())
}

/// Checks that files named `PREFIX…` can be written (`--latency-csv PREFIX`: a directory, or a
/// name ending in `/`, means files inside it).
///
/// # Errors
/// A [`UsageError`] naming the option, the prefix and what is wrong.
pub fn check_output_prefix(option: &str, prefix: &Path) -> Result<(), UsageError> {
    let ends_in_slash = prefix.as_os_str().as_encoded_bytes().last() == Some(&b'/');
    let dir = if ends_in_slash || prefix.is_dir() {
        prefix
    } else {
        prefix.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
    };
    check_output_dir(option, prefix, dir)
}

/// Creates `dir` if needed and proves a file can be created in it (a probe file, removed).
fn check_output_dir(option: &str, value: &Path, dir: &Path) -> Result<(), UsageError> {
    let bad = |what: String| UsageError(format!("{option} {}: {what}", value.display()));
    fs::create_dir_all(dir).map_err(|e| bad(format!("cannot create the directory {}: {e}", dir.display())))?;
    let probe = dir.join(format!(".xdpcopy-write-test-{}", std::process::id()));
    fs::File::create(&probe).map_err(|e| bad(format!("cannot write in {}: {e}", dir.display())))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    #[command(name = "demo")]
    struct Demo {
        /// An option.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// A required input.
        #[arg(short = 'i', long, required = true)]
        input: String,
    }

    #[test]
    fn tcpcopy_letters_get_their_hint_and_usage_exit_code() {
        let err = parse_from::<Demo, _, _>(["demo", "-i", "x", "-d"], TCPCOPY_HINTS).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unexpected argument '-d'"), "{text}");
        assert!(text.contains("tip: -d is TCPCopy's daemonize; ") && text.contains("systemd"), "{text}");
        assert_eq!(text.matches("tip:").count(), 1, "{text}");
        assert_eq!(err.exit_code(), 2);
        let text =
            parse_from::<Demo, _, _>(["demo", "-i", "x", "-l/var/log/x"], TCPCOPY_HINTS).unwrap_err().to_string();
        assert!(text.contains("stderr"), "{text}");
        let text = parse_from::<Demo, _, _>(["demo", "-i", "x", "-Z"], TCPCOPY_HINTS).unwrap_err().to_string();
        assert!(!text.contains("TCPCopy"), "no hint for an unknown letter: {text}");
    }

    #[test]
    fn the_asset_option_does_not_disturb_parsing() {
        let d: Demo = parse_from(["demo", "-i", "eth0", "-q"], &[]).unwrap();
        assert!(d.quiet && d.input == "eth0");
        let err = parse_from::<Demo, _, _>(["demo", "-q"], &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn assets_are_man_pages_and_completions() {
        let dir = std::env::temp_dir().join(format!("xdpcopy-assets-test-{}", std::process::id()));
        let files = generate_assets(<Demo as clap::CommandFactory>::command(), &dir).unwrap();
        let names: Vec<String> = files.iter().map(|f| f.strip_prefix(&dir).unwrap().display().to_string()).collect();
        assert_eq!(names, ["man/demo.1", "completions/demo.bash", "completions/_demo", "completions/demo.fish"]);
        let man = fs::read_to_string(dir.join("man/demo.1")).unwrap();
        assert!(man.contains(".TH demo 1") && man.contains("A required input"), "{man}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn listen_addresses_name_the_form() {
        assert_eq!(parse_listen_addr("127.0.0.1:9464").unwrap().port(), 9464);
        assert_eq!(parse_listen_addr(":9100").unwrap(), "0.0.0.0:9100".parse().unwrap());
        assert!(parse_listen_addr("[::1]:9").is_ok());
        for (bad, why) in [
            ("9100", "port without an address"),
            ("10.0.0.1:99999", "not a number in 0..=65535"),
            ("host:80", "not an IP address"),
        ] {
            let e = parse_listen_addr(bad).unwrap_err();
            assert!(e.contains(why) && e.contains("ADDR:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn output_paths_are_checked_before_use() {
        let e = check_output_file("--summary-json", Path::new("/proc/xdpcopy-nope/s.json")).unwrap_err();
        assert!(e.0.starts_with("--summary-json /proc/xdpcopy-nope/s.json: cannot create the directory"), "{e}");
        let e = check_output_file("--pcap-out", Path::new("/etc/hostname/x.pcap")).unwrap_err();
        assert!(e.0.contains("--pcap-out"), "{e}");
        let e = check_output_file("--pcap-out", &std::env::temp_dir()).unwrap_err();
        assert!(e.0.contains("is a directory"), "{e}");
        let e = check_output_prefix("--latency-csv", Path::new("/proc/xdpcopy-nope/run1")).unwrap_err();
        assert!(e.0.contains("--latency-csv"), "{e}");
        check_output_file("--summary-json", &std::env::temp_dir().join("xdpcopy-ok.json")).unwrap();
        check_output_prefix("--latency-csv", &std::env::temp_dir().join("run1")).unwrap();
    }
}
