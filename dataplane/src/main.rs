//! `xdpcopy`: copies live TCP traffic to a test server over AF_XDP.
//!
//! clap `Args` → validated [`Config`] → [`runtime::run`]. `anyhow` lives only here.

use std::{
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use control::channel::proto::Framing;
use dataplane::{
    bpf::XdpMode,
    cli::{self, exit, heading, UsageError},
    config::{self, Config, Mode, SessionOptions, StatsFormat, Transfer},
    feed::{self, Feed, FeedOptions, Oversize, Select},
    footprint, netdev,
    offline::{PaceOptions, Speed},
    rewrite::ChecksumMode,
    runtime, session,
    xsk::CopyMode,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum XdpModeArg {
    /// Native (driver) XDP if the driver has it, generic otherwise.
    Auto,
    /// Native XDP only.
    Native,
    /// Generic (SKB) XDP only: works everywhere, slower.
    Generic,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ZeroCopyArg {
    /// Zero-copy when the driver supports it.
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FramingArg {
    /// Count-prefixed frames of up to 16 messages (TCPCopy's default).
    Combined,
    /// A plain stream of 64-byte messages.
    Bare,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CatchUpArg {
    /// Catch up when a session falls behind (see --catch-up-kb, --catch-up-lag).
    Auto,
    /// Strict request/response order, whatever the backlog.
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ChecksumArg {
    /// Recompute the TCP checksum over the segment: correct even for captures that carry a
    /// partial (offloaded) checksum.
    Full,
    /// RFC 1624 incremental update: only for captures with complete checksums (switch SPAN).
    Incremental,
}

/// Copies live TCP traffic from a production server to a test server, on AF_XDP.
///
/// xdpcopy reads a mirror of the production traffic (a SPAN port with -i, or a tc mirror of an
/// interface it sets up itself with --mirror), picks the TCP connections to the ports named in
/// -x, and replays them against a test server out of -o, at line rate, with pinned poll-mode
/// workers.
///
/// Session replay (the default) replays each client's TCP session as that client: it needs
/// xdpcopy-intercept (or TCPCopy's intercept) on an assist server that the test server routes
/// its responses to; -s names it. --stateless instead rewrites and forwards every captured
/// frame, with no sessions and no intercept. -i FILE replays a pcap/pcapng capture instead of
/// live traffic.
///
/// Runs as root (or with CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON; see the systemd unit
/// xdpcopy@.service). A stats line every second on stderr, a summary of every counter at
/// SIGINT/SIGTERM.
#[derive(Debug, Parser)]
#[command(
    name = "xdpcopy",
    version = cli::VERSION,
    after_help = "Examples: see `xdpcopy --help`. Exit status: 0 ok, 1 runtime failure, 2 usage error.",
    after_long_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    // ---- Capture ----
    /// Capture interface (a mirror port), or a pcap/pcapng file to replay offline (Ethernet,
    /// VLAN, Linux cooked, raw IP); an interface of that name wins over a file.
    #[arg(short = 'i', long, value_name = "IFACE|FILE", required_unless_present = "mirror", help_heading = heading::CAPTURE)]
    input: Option<String>,

    /// Mirror IFACE's TCP to the -x ports with tc into a veth and capture from that (removed at
    /// exit, or by the next start after a crash), so production traffic is never taken from the
    /// kernel.
    #[arg(long, value_name = "IFACE", conflicts_with = "input", help_heading = heading::CAPTURE)]
    mirror: Option<String>,

    /// Capture with -i on an interface that carries addresses (refused without it: the
    /// matching traffic would no longer reach this host's kernel; see --mirror).
    #[arg(long, conflicts_with = "mirror", help_heading = heading::CAPTURE)]
    force_capture: bool,

    /// Leave the -i interface's promiscuous mode alone (by default it is turned on for an
    /// interface without addresses, a SPAN port, until exit).
    #[arg(long, conflicts_with = "mirror", help_heading = heading::CAPTURE)]
    no_promisc: bool,

    /// Stop after SECS (a clean stop, like SIGINT).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::CAPTURE)]
    duration: Option<u64>,

    // ---- Targets ----
    /// What to copy where: [ONLINE_IP:]PORT-TARGET_IP:TARGET_PORT[@NEXT_HOP_MAC]; repeat or
    /// separate with commas.
    #[arg(short = 'x', long = "transfer", value_name = "TRANSFER", required = true, value_parser = config::parse_transfers, help_heading = heading::TARGETS)]
    transfers: Vec<Vec<Transfer>>,

    /// Output interface towards the test server.
    #[arg(short = 'o', long, value_name = "IFACE", required = true, help_heading = heading::TARGETS)]
    output: Option<String>,

    /// Rewrite and forward every matching frame; no sessions, no intercept.
    #[arg(long, conflicts_with = "intercepts", help_heading = heading::TARGETS)]
    stateless: bool,

    // ---- Session replay ----
    /// Intercepts to register sessions with: IP[:PORT][,...] (session mode; up to 32).
    #[arg(short = 's', long, value_name = "LIST", required_unless_present = "stateless", help_heading = heading::SESSION)]
    intercepts: Option<String>,

    /// Default channel port of the -s entries (TCPCopy's -p).
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = control::channel::proto::DEFAULT_PORT, help_heading = heading::SESSION)]
    intercept_port: u16,

    /// Channel connections per intercept (1..=11).
    #[arg(short = 'C', long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=11), help_heading = heading::SESSION)]
    conns: u8,

    /// Channel framing; must match the intercept's (TCPCopy's --disable-combined = bare).
    #[arg(long, value_enum, default_value = "combined", help_heading = heading::SESSION)]
    framing: FramingArg,

    /// Highest channel protocol offered: 7 (xdpcopy-intercept takes IPv6 sessions; TCPCopy's
    /// intercept ignores the offer and speaks 6), or 6 (the hello of TCPCopy's copier, all zero).
    #[arg(long, value_name = "VERSION", default_value_t = 7, value_parser = clap::value_parser!(u16).range(6..=7), help_heading = heading::SESSION)]
    channel_protocol: u16,

    /// Don't wait for a response before sending the next request (pipelining, streaming).
    #[arg(short = 'W', long, help_heading = heading::SESSION)]
    no_wait: bool,

    /// A session that falls behind its capture sends what is waiting without waiting for each
    /// response until it has caught up (auto), or always keeps strict request/response order and
    /// grows its backlog (off).
    #[arg(long, value_enum, default_value = "auto", help_heading = heading::SESSION)]
    catch_up: CatchUpArg,

    /// Catch-up starts when a session's unsent captured bytes reach KIB...
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576), help_heading = heading::SESSION)]
    catch_up_kb: u64,

    /// ...or when a captured segment has waited MS to be sent.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000), help_heading = heading::SESSION)]
    catch_up_lag: u64,

    /// Skip a hole in a session's captured stream (a frame the capture lost) after MS: the test
    /// server gets the stream without the missing bytes and the session goes on.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000), help_heading = heading::SESSION)]
    hole_wait: u64,

    /// Replay only sessions whose SYN was captured (no synthesized SYNs).
    #[arg(short = 'O', long, help_heading = heading::SESSION)]
    only_syn: bool,

    /// End a session that got no response for SECS.
    #[arg(short = 't', long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::SESSION)]
    session_timeout: u64,

    /// End an idle session after SECS without a response [default: -t + 120].
    #[arg(short = 'k', long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), help_heading = heading::SESSION)]
    keepalive_timeout: Option<u64>,

    /// RTT in ms for every session (pacing and delayed ACKs) [default: measured per session].
    #[arg(short = 'R', long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60000), help_heading = heading::SESSION)]
    rtt: Option<u64>,

    /// Split captured IP packets larger than this (GRO super-segments); capped by the output MTU.
    #[arg(short = 'M', long, value_name = "BYTES", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(576..=9000), help_heading = heading::SESSION)]
    mtu: u16,

    /// MSS option of synthesized SYNs [default: 1460 to IPv4 targets, 1440 to IPv6 ones].
    #[arg(short = 'D', long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(536..=8960), help_heading = heading::SESSION)]
    mss: Option<u16>,

    /// Session table capacity per worker (the least recently active is evicted when full).
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(16..=16_777_216), help_heading = heading::SESSION)]
    max_sessions: u64,

    /// Memory per worker for buffered client segments, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536), help_heading = heading::SESSION)]
    pool_mb: u64,

    /// Cap of buffered client bytes per session, KiB (a session over it ends, counted) [default:
    /// none: sessions share the worker's pool, and a full pool ends the largest backlog first].
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u64).range(16..=1_048_576), help_heading = heading::SESSION)]
    session_buffer_kb: Option<u64>,

    // ---- Shaping ----
    /// Replay this percentage of the sessions (1..=100), chosen by a hash of the 4-tuple.
    #[arg(short = 'r', long = "sample", value_name = "PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100), help_heading = heading::SHAPING)]
    sample: u8,

    /// Ramp the replayed share up by 1 % per second from the first packet (to -r, or 100 %).
    #[arg(short = 'g', long, help_heading = heading::SHAPING)]
    ramp: bool,

    /// Replay each captured session N times as independent sessions, each copy from a client
    /// (address, port) no live session uses.
    #[arg(short = 'n', long = "copies", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = heading::SHAPING)]
    copies: u16,

    /// Client addresses to send from instead of the captured ones: addresses, ranges, prefixes,
    /// IPv4 or IPv6, e.g. 10.1.0.10-10.1.0.50,10.2.0.0/24,2001:db8:1::/64 (route them to the
    /// assist server on the test server); a session takes the addresses of its target's family
    /// (an IPv6 capture replayed to an IPv4 test server, or the reverse, needs them).
    #[arg(short = 'c', long = "client-addresses", value_name = "LIST", value_parser = parse_address_list, help_heading = heading::SHAPING)]
    client_addresses: Option<AddressList>,

    /// Several copiers feeding one test server: give each a different F (0..=31); their client
    /// ports never overlap.
    #[arg(short = 'f', long = "port-slot", value_name = "F", value_parser = clap::value_parser!(u16).range(0..32), help_heading = heading::SHAPING)]
    port_slot: Option<u16>,

    // ---- Offline replay ----
    /// Offline: replay N times faster than captured (e.g. 10, 0.5).
    #[arg(short = 'a', long, value_name = "N", default_value_t = 1.0, value_parser = parse_speed, help_heading = heading::OFFLINE)]
    speed: f64,

    /// Offline: cut every idle gap in the capture longer than MS to MS.
    #[arg(short = 'I', long, value_name = "MS", help_heading = heading::OFFLINE)]
    max_gap: Option<u64>,

    /// Offline: replay the file N times.
    #[arg(short = 'T', long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), help_heading = heading::OFFLINE)]
    loops: u32,

    /// Offline: as fast as the feed can go, ignoring the capture's timing.
    #[arg(long, help_heading = heading::OFFLINE)]
    topspeed: bool,

    /// Offline: after the last packet, wait at most SECS for the sessions to finish.
    #[arg(long, value_name = "SECS", default_value_t = 60, help_heading = heading::OFFLINE)]
    offline_tail: u64,

    // ---- Output and latency ----
    /// Seconds between stats lines.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_stats_interval, help_heading = heading::OUTPUT)]
    stats_interval: f64,

    /// Stats lines as text on stderr, or one JSON object per interval on stdout.
    #[arg(long, value_enum, default_value = "text", help_heading = heading::OUTPUT)]
    stats_format: StatsFormatArg,

    /// No stats lines (the start-up report and the final summary still print).
    #[arg(short, long, help_heading = heading::OUTPUT)]
    quiet: bool,

    /// Serve Prometheus metrics on ADDR:PORT (GET /metrics), e.g. 127.0.0.1:9464 or :9464.
    #[arg(long, value_name = "ADDR:PORT", value_parser = cli::parse_listen_addr, help_heading = heading::OUTPUT)]
    metrics: Option<std::net::SocketAddr>,

    /// Write every counter, the latency summary and the run metadata as JSON at exit.
    #[arg(long, value_name = "FILE", help_heading = heading::OUTPUT)]
    summary_json: Option<std::path::PathBuf>,

    /// Write every frame the copier transmits to this pcap file (for Wireshark).
    #[arg(long, value_name = "FILE", help_heading = heading::OUTPUT)]
    pcap_out: Option<std::path::PathBuf>,

    /// Session mode: write the response headers the intercept returned into --pcap-out too (IP and
    /// TCP headers, no payload), so the file shows both directions of every session.
    #[arg(long, requires = "pcap_out", conflicts_with = "stateless", help_heading = heading::OUTPUT)]
    pcap_out_responses: bool,

    /// Stop writing --pcap-out before the file exceeds MIB (the run goes on).
    #[arg(long, value_name = "MIB", requires = "pcap_out", value_parser = clap::value_parser!(u64).range(1..=1_048_576), help_heading = heading::OUTPUT)]
    pcap_out_max_mb: Option<u64>,

    /// The capture carries the online server's responses too (its egress is mirrored): measure
    /// production latency beside the test server's. With --mirror, egress is mirrored as well.
    #[arg(long, help_heading = heading::OUTPUT)]
    production_latency: bool,

    /// Do not record latency histograms.
    #[arg(long, help_heading = heading::OUTPUT)]
    no_latency: bool,

    /// Write latency exports under PREFIX: PREFIX_<metric>.percentiles.csv / .hgrm / .buckets.csv,
    /// PREFIX_summary.csv (per interval), PREFIX.hlog (HdrHistogram interval log), PREFIX_run_meta.json.
    #[arg(long, value_name = "PREFIX", conflicts_with = "no_latency", help_heading = heading::OUTPUT)]
    latency_csv: Option<std::path::PathBuf>,

    // ---- Dataplane tuning ----
    /// RX queues to capture (one worker each) [default: all RX queues of the capture interface].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64), help_heading = heading::TUNING)]
    queues: Option<u32>,

    /// CPUs to pin workers to, e.g. 0,1 or 2-5 [default: all, round robin].
    #[arg(long, value_name = "LIST", value_parser = parse_core_list, help_heading = heading::TUNING)]
    cores: Option<CoreList>,

    /// Workers spin between rounds instead of sleeping when idle: lowest latency, one full core
    /// per worker (for dedicated, isolated cores; by default a worker sleeps when work is sparse).
    #[arg(long, help_heading = heading::TUNING)]
    busy_poll: bool,

    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto", help_heading = heading::TUNING)]
    xdp_mode: XdpModeArg,

    /// AF_XDP zero-copy.
    #[arg(long, value_enum, default_value = "auto", help_heading = heading::TUNING)]
    zero_copy: ZeroCopyArg,

    /// TCP checksum update.
    #[arg(long, value_enum, default_value = "full", help_heading = heading::TUNING)]
    checksum: ChecksumArg,

    /// UMEM frames of 4 KiB per worker (power of two) [default: 8192 for a live capture (32 MiB
    /// per worker), 4096 offline].
    #[arg(long, value_name = "N", value_parser = power_of_two, help_heading = heading::TUNING)]
    frames: Option<u32>,

    /// Entries per ring (power of two) [default: 8192 for a live capture, 2048 offline].
    #[arg(long, value_name = "N", value_parser = power_of_two, help_heading = heading::TUNING)]
    ring_size: Option<u32>,
}

/// The examples and the exit status at the end of `--help` (and in the man page).
const EXAMPLES: &str = "\
Examples:
  # Session replay: copy the sessions to port 80 seen on the mirror port eth1 to the test
  # server 10.0.0.2:8080 out of eth2, through xdpcopy-intercept on the assist server 10.0.0.3
  xdpcopy -x 80-10.0.0.2:8080 -i eth1 -o eth2 -s 10.0.0.3

  # On the production host itself: mirror eth0's ingress with tc (removed at exit)
  xdpcopy --mirror eth0 -x 80-10.0.0.2:8080 -o eth2 -s 10.0.0.3

  # Twice the traffic, from a pool of client addresses the test server routes to the assist server
  xdpcopy -x 80-10.0.0.2:8080 -i eth1 -o eth2 -s 10.0.0.3 -n 2 -c 10.1.0.0/24

  # Offline: replay a capture file 10x faster than captured
  xdpcopy -i capture.pcap -a 10 -x 80-10.0.0.2:8080 -o eth2 -s 10.0.0.3

  # Stateless: rewrite and forward every frame to port 80, no sessions, no intercept
  xdpcopy --stateless -x 80-10.0.0.2:8080 -i eth1 -o eth2

  # A 10-minute run with Prometheus metrics, latency exports and a JSON summary
  xdpcopy -x 80-10.0.0.2:8080 -i eth1 -o eth2 -s 10.0.0.3 --duration 600 \\
      --metrics :9464 --latency-csv run1 --summary-json run1.json
  xdpcopy report run1            # plot the latency percentiles of that run

Exit status: 0 after a clean stop (SIGINT/SIGTERM, --duration, end of an offline replay),
1 on a runtime failure, 2 on a usage error (bad option or value; nothing was touched).

Coming from TCPCopy: docs/migrating-from-tcpcopy.md. Every option: docs/cli.md, man xdpcopy.";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatsFormatArg {
    /// A text line on stderr.
    Text,
    /// One JSON object per interval on stdout.
    Json,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Render the latency percentile plot (PREFIX_report.png and .svg) from the CSVs a run wrote
    /// with --latency-csv PREFIX; production and test side by side when both exist.
    Report {
        /// The --latency-csv prefix of the run.
        prefix: std::path::PathBuf,
    },
}

/// A parsed `-c` value (a newtype: clap would read a bare `Vec` as repeated values).
#[derive(Debug, Clone)]
struct AddressList(Vec<std::net::IpAddr>);

fn parse_address_list(s: &str) -> Result<AddressList, String> {
    dataplane::tuples::parse_addresses(s).map(AddressList)
}

/// A parsed `--cores` value (a newtype: clap would read a bare `Vec` as repeated values).
#[derive(Debug, Clone)]
struct CoreList(Vec<usize>);

fn parse_core_list(s: &str) -> Result<CoreList, String> {
    config::parse_cores(s).map(CoreList)
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if Speed::new(v).is_ok() => Ok(v),
        _ => Err(format!("{s:?} is not a speed factor > 0; expected e.g. 10 (10x faster) or 0.5 (half speed)")),
    }
}

fn parse_stats_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 3600]; expected e.g. 1 or 0.5")),
    }
}

fn power_of_two(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && (64..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a power of two between 64 and 1048576")),
    }
}

/// Checks that every `-x` whose online address is of the other family than its target can be
/// replayed: in session mode with `-c` addresses of the target's family (family translation).
fn check_families(args: &Args) -> Result<(), UsageError> {
    let addresses = args.client_addresses.as_ref().map(|a| &a.0[..]).unwrap_or_default();
    for t in args.transfers.iter().flatten() {
        let Some(online) = t.online_ip else { continue };
        let target_v6 = t.target_ip.is_ipv6();
        if online.is_ipv6() == target_v6 {
            continue;
        }
        let (from, to) = if target_v6 { ("IPv4", "IPv6") } else { ("IPv6", "IPv4") };
        if args.stateless {
            return Err(UsageError(format!(
                "-x {t}: an {from} service copied to an {to} test server needs session replay (--stateless \
                 rewrites frames in place and cannot change their family)"
            )));
        }
        if !addresses.iter().any(|a| a.is_ipv6() == target_v6) {
            return Err(UsageError(format!(
                "-x {t}: replaying an {from} service to an {to} test server needs {to} client addresses: give -c with \
                 {to} addresses (e.g. {}) and route them to the assist server",
                if target_v6 { "-c 2001:db8:1::/64" } else { "-c 10.1.0.0/24" }
            )));
        }
    }
    Ok(())
}

fn session_options(args: &Args) -> Result<Mode, UsageError> {
    check_families(args)?;
    if args.stateless {
        return Ok(Mode::Stateless);
    }
    if let Some(t) = args.transfers.iter().flatten().find(|t| t.target_ip.is_ipv6()) {
        if args.channel_protocol < 7 {
            return Err(UsageError(format!(
                "-x {t}: IPv6 sessions need channel protocol 7 (xdpcopy-intercept); --channel-protocol 6 offers only \
                 TCPCopy's protocol, which carries IPv4"
            )));
        }
    }
    let list = args.intercepts.as_deref().unwrap_or_default();
    let intercepts = config::parse_intercepts(list, args.intercept_port).map_err(UsageError)?;
    let t = Duration::from_secs(args.session_timeout);
    let session = session::Config {
        wait_response: !args.no_wait,
        only_syn_sessions: args.only_syn,
        session_timeout: t,
        keepalive_timeout: args.keepalive_timeout.map_or(t + Duration::from_secs(120), Duration::from_secs),
        default_rtt: args.rtt.map(Duration::from_millis),
        mss: args.mss.unwrap_or(1460),
        mss_v6: args.mss.unwrap_or(1440),
        mtu: args.mtu,
        max_sessions: args.max_sessions as usize,
        max_buffered_bytes: args.session_buffer_kb.map_or(usize::MAX, |kb| kb as usize * 1024),
        catch_up: match args.catch_up {
            CatchUpArg::Auto => Some(session::CatchUp {
                bytes: args.catch_up_kb as usize * 1024,
                lag: Duration::from_millis(args.catch_up_lag),
            }),
            CatchUpArg::Off => None,
        },
        pool_bytes: args.pool_mb as usize * 1024 * 1024,
        hole_wait: Duration::from_millis(args.hole_wait),
        ..session::Config::default()
    };
    Ok(Mode::Session(Box::new(SessionOptions {
        intercepts,
        conns_per_intercept: args.conns,
        framing: match args.framing {
            FramingArg::Combined => Framing::Combined,
            FramingArg::Bare => Framing::Bare,
        },
        offer_extension: args.channel_protocol >= 7,
        session,
        production_latency: args.production_latency,
        tuples: dataplane::tuples::TupleConfig {
            replicas: args.copies,
            addresses: args.client_addresses.clone().map(|a| a.0).unwrap_or_default(),
            port_slot: args.port_slot,
            // Longer than the engine's time-wait, so a pair is never reused while the test
            // server may still hold the old connection.
            idle: Duration::from_secs(90),
            capacity: (args.max_sessions as usize)
                .saturating_mul(usize::from(args.copies))
                .saturating_mul(args.loops.clamp(1, 16) as usize)
                .min(1 << 20),
            // -T in session mode: each loop replays from client pairs no earlier loop used.
            fresh_per_loop: args.loops > 1,
        },
        ipv6_targets: args.transfers.iter().flatten().any(|t| t.target_ip.is_ipv6()),
    })))
}

fn feed_options(args: &Args, path: &str) -> Result<FeedOptions, UsageError> {
    let speed = Speed::new(args.speed)
        .map_err(|_| UsageError(format!("-a/--speed {}: expected a factor > 0, e.g. 10", args.speed)))?;
    let loops =
        std::num::NonZeroU32::new(args.loops).ok_or_else(|| UsageError("-T/--loops 0: expected 1 or more".into()))?;
    // The frames the XDP program would hand to a worker live: TCP to the -x ports, and with
    // --production-latency the online servers' responses.
    let transfers: Vec<&Transfer> = args.transfers.iter().flatten().collect();
    let mut select = Select { dst_ports: transfers.iter().map(|t| t.online_port).collect(), sources: Vec::new() };
    if args.production_latency && !args.stateless {
        select.sources = transfers
            .iter()
            .map(|t| match t.online_ip {
                Some(std::net::IpAddr::V4(ip)) => std::net::SocketAddrV4::new(ip, t.online_port),
                _ => feed::any_source(t.online_port),
            })
            .collect();
    }
    Ok(FeedOptions {
        path: path.into(),
        pace: PaceOptions { speed, max_gap: args.max_gap.map(Duration::from_millis), topspeed: args.topspeed, loops },
        tail: Duration::from_secs(args.offline_tail),
        select,
        // Session mode splits GRO super-segments to -M anyway; stateless replays frames as they are.
        oversize: if args.stateless { Oversize::Count } else { Oversize::Split },
    })
}

fn config(args: Args, input: String, offline: bool, mode: Mode) -> Result<Config> {
    let queues = match args.queues {
        Some(q) => q,
        // Offline: one worker unless told otherwise (--queues N: N workers share the file).
        None if offline => 1,
        None => netdev::queues(&input, "rx")?.max(1),
    };
    Ok(Config {
        sample_percent: args.sample,
        ramp: args.ramp,
        offline: None,
        observe: config::Observe {
            latency: !args.no_latency,
            latency_csv: args.latency_csv,
            metrics: args.metrics,
            summary_json: args.summary_json,
            pcap_out: args.pcap_out,
            pcap_out_max_bytes: args.pcap_out_max_mb.map(|m| m * 1024 * 1024),
            pcap_out_responses: args.pcap_out_responses,
        },
        mode,
        transfers: args.transfers.into_iter().flatten().collect(),
        input,
        output: args.output.expect("clap requires --output"),
        queues,
        cores: args.cores.map(|c| c.0),
        busy_poll: args.busy_poll,
        xdp_mode: match args.xdp_mode {
            XdpModeArg::Auto => XdpMode::Auto,
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        },
        copy_mode: match args.zero_copy {
            ZeroCopyArg::Auto => CopyMode::Auto,
            ZeroCopyArg::On => CopyMode::ZeroCopy,
            ZeroCopyArg::Off => CopyMode::Copy,
        },
        checksum: match args.checksum {
            ChecksumArg::Full => ChecksumMode::Full,
            ChecksumArg::Incremental => ChecksumMode::Incremental,
        },
        frames: args.frames.unwrap_or(if offline { config::OFFLINE_FRAMES } else { config::LIVE_FRAMES }),
        ring_size: args.ring_size.unwrap_or(if offline { config::OFFLINE_RING } else { config::LIVE_RING }),
        stats_interval: (!args.quiet).then(|| Duration::from_secs_f64(args.stats_interval)),
        stats_format: match args.stats_format {
            StatsFormatArg::Text => StatsFormat::Text,
            StatsFormatArg::Json => StatsFormat::Json,
        },
        duration: args.duration.map(Duration::from_secs),
    })
}

/// What `-i` names.
enum Input {
    /// A capture interface (or the --mirror veth, decided later).
    Interface,
    /// A capture file to replay.
    File,
}

/// Checks everything the command line names before anything is set up, so that a typo fails
/// with [`exit::USAGE`] and touches nothing: the output paths can be written, the interfaces
/// exist, `-i` is an interface or a file, the intercept list parses.
fn validate(args: &Args) -> Result<(Input, Mode), UsageError> {
    if let Some(p) = &args.summary_json {
        cli::check_output_file("--summary-json", p)?;
    }
    if let Some(p) = &args.pcap_out {
        cli::check_output_file("--pcap-out", p)?;
    }
    if let Some(p) = &args.latency_csv {
        cli::check_output_prefix("--latency-csv", p)?;
    }
    let mode = session_options(args)?;
    let exists = |iface: &str| netdev::mtu(iface).is_ok();
    let output = args.output.as_deref().unwrap_or_default();
    if !exists(output) {
        return Err(UsageError(format!(
            "-o/--output {output}: no interface of that name; expected the interface towards the test server (list \
             them with `ip link`)"
        )));
    }
    if let Some(m) = &args.mirror {
        if !exists(m) {
            return Err(UsageError(format!(
                "--mirror {m}: no interface of that name; expected the production interface whose ingress to mirror \
                 (list them with `ip link`)"
            )));
        }
        return Ok((Input::Interface, mode));
    }
    let input = args.input.as_deref().unwrap_or_default();
    let path = std::path::Path::new(input);
    if exists(input) {
        Ok((Input::Interface, mode))
    } else if path.is_file() {
        feed_options(args, input)?;
        Ok((Input::File, mode))
    } else if path.is_dir() {
        Err(UsageError(format!(
            "-i/--input {input}: is a directory; expected a capture interface or a pcap/pcapng file"
        )))
    } else if input.contains('/') || input.ends_with(".pcap") || input.ends_with(".pcapng") {
        Err(UsageError(format!(
            "-i/--input {input}: no such file (and no interface of that name); expected a pcap/pcapng file to replay \
             or a capture interface"
        )))
    } else {
        Err(UsageError(format!(
            "-i/--input {input}: no interface or file of that name; expected a capture interface (list them with `ip \
             link`) or a pcap/pcapng file"
        )))
    }
}

/// `-i IFACE` (a live interface): refuses one that carries addresses unless `--force-capture`;
/// turns promiscuous mode on for one without (a SPAN port on a real NIC drops mirrored frames
/// not addressed to it before XDP sees them) unless `--no-promisc`.
fn capture_interface(iface: &str, args: &Args) -> Result<Option<netdev::Promisc>> {
    let addrs = netdev::addresses(iface)?;
    if !addrs.is_empty() {
        if !args.force_capture {
            bail!(
                "-i {iface} carries addresses ({}): capturing there takes its TCP to the -x ports away from this \
                 host's kernel, i.e. from the service running here. To copy a production host's traffic use \
                 --mirror {iface} (a tc mirror: the kernel keeps every packet); if {iface} really is a capture \
                 port, pass --force-capture",
                addrs.join(", ")
            );
        }
        eprintln!(
            "xdpcopy: warning: capturing on {iface}, which carries addresses (--force-capture): its TCP to the -x \
             ports no longer reaches this host's kernel"
        );
        return Ok(None);
    }
    if args.no_promisc {
        return Ok(None);
    }
    let promisc = netdev::Promisc::on(iface)?;
    eprintln!("xdpcopy: promiscuous mode on {iface} until exit (--no-promisc leaves it alone)");
    Ok(Some(promisc))
}

fn run(args: Args, input: Input, mode: Mode) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    footprint::handle_signals(stop.clone(), "xdpcopy")?;
    footprint::install_panic_hook("xdpcopy");
    footprint::sweep("xdpcopy");
    let promisc = match (&args.input, &input) {
        (Some(i), Input::Interface) if args.mirror.is_none() => capture_interface(i, &args)?,
        _ => None,
    };
    let mirror = match &args.mirror {
        Some(prod) => {
            let mut ports: Vec<u16> = args.transfers.iter().flatten().map(|t| t.online_port).collect();
            ports.sort_unstable();
            ports.dedup();
            let m = netdev::Mirror::setup(prod, args.queues.unwrap_or(1), &ports, args.production_latency)?;
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            eprintln!(
                "xdpcopy: mirroring {prod}'s TCP to port(s) {}{} into {} (removed at exit)",
                list.join(","),
                if args.production_latency { " and its responses from them" } else { "" },
                m.capture
            );
            Some(m)
        }
        None => None,
    };
    // `-i FILE`: offline replay, the file fed straight into the workers.
    let mut feed = match (&args.input, input) {
        // An interface of that name wins; otherwise an existing file is replayed.
        (Some(i), Input::File) => Some(Feed::open(feed_options(&args, i)?)?),
        _ => None,
    };
    let input = match (&mirror, &args.input) {
        (Some(m), _) => m.capture.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => unreachable!("clap requires --input unless --mirror"),
    };
    let offline = feed.as_ref().and(args.input.clone()).map(std::path::PathBuf::from);
    let mut cfg = config(args, input, offline.is_some(), mode)?;
    cfg.offline = offline;
    let summary = runtime::run(&cfg, stop, feed.as_mut())?;
    drop(feed);
    drop(mirror);
    drop(promisc);
    eprintln!("xdpcopy: summary after {:.1} s (xdpcopy {}):", summary.elapsed.as_secs_f64(), cli::VERSION);
    for (name, value) in summary.named() {
        eprintln!("  {name:<28} {value}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Args = cli::parse(cli::TCPCOPY_HINTS);
    if let Some(Cmd::Report { prefix }) = &args.cmd {
        return match control::latency::render_report(prefix) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xdpcopy report: error: {e}");
                ExitCode::from(exit::FAILURE)
            }
        };
    }
    let (input, mode) = match validate(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("xdpcopy: error: {e}\n\nFor more information, try '--help'.");
            return ExitCode::from(exit::USAGE);
        }
    };
    match run(args, input, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpcopy: error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn cli_parses_every_option() {
        let a = Args::try_parse_from([
            "xdpcopy",
            "--stateless",
            "-x",
            "80-10.0.0.2:8080,10.0.0.1:443-10.0.0.2:443@02:00:00:00:00:01",
            "-x",
            "81-10.0.0.3:81",
            "-i",
            "eth1",
            "-o",
            "eth2",
            "--queues",
            "2",
            "--cores",
            "0-1",
            "--xdp-mode",
            "generic",
            "--zero-copy",
            "off",
            "--checksum",
            "incremental",
            "--frames",
            "8192",
            "--ring-size",
            "1024",
            "-q",
            "-r",
            "50",
            "-g",
            "-n",
            "3",
            "-c",
            "10.0.0.0/30,10.0.1.1",
            "-f",
            "7",
            "-a",
            "2.5",
            "-T",
            "2",
            "-I",
            "100",
        ])
        .unwrap();
        assert_eq!(a.transfers.iter().flatten().count(), 3);
        assert_eq!(a.cores.unwrap().0, vec![0, 1]);
        assert!(a.quiet && a.stateless);
        assert_eq!((a.sample, a.ramp, a.copies, a.port_slot, a.loops, a.max_gap), (50, true, 3, Some(7), 2, Some(100)));
        assert_eq!(a.client_addresses.unwrap().0.len(), 3);
    }

    #[test]
    fn pcap_out_responses_needs_a_pcap_and_session_mode() {
        let base = ["xdpcopy", "-x", "80-10.0.0.2:80", "-i", "a", "-o", "b"];
        let with = |extra: &[&str]| Args::try_parse_from(base.iter().chain(extra)).map(|a| a.pcap_out_responses);
        assert_eq!(with(&["-s", "10.0.0.3", "--pcap-out", "x.pcap", "--pcap-out-responses"]).ok(), Some(true));
        assert!(with(&["-s", "10.0.0.3", "--pcap-out-responses"]).is_err(), "without --pcap-out");
        assert!(with(&["--stateless", "--pcap-out", "x.pcap", "--pcap-out-responses"]).is_err(), "stateless");
    }

    #[test]
    fn bad_values_name_the_option_and_the_form() {
        let err = Args::try_parse_from(["xdpcopy", "--stateless", "-x", "80-10.0.0.2", "-i", "a", "-o", "b"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--transfer") && err.contains("TARGET_IP:TARGET_PORT"), "{err}");
        let err = Args::try_parse_from(["xdpcopy", "-x", "80-10.0.0.2:80", "-i", "a", "-o", "b", "--frames", "1000"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--frames") && err.contains("power of two"), "{err}");
        let err = Args::try_parse_from(["xdpcopy", "-x", "80-10.0.0.2:80", "-i", "a", "-o", "b", "--cores", "x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cores"), "{err}");
    }

    /// The headings `--help` shows, in order; every option (but help and version) is under one.
    const HEADINGS: [&str; 7] = [
        heading::CAPTURE,
        heading::TARGETS,
        heading::SESSION,
        heading::SHAPING,
        heading::OFFLINE,
        heading::OUTPUT,
        heading::TUNING,
    ];

    #[test]
    fn help_has_every_heading_in_order_then_the_examples() {
        let cmd = Args::command();
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let h = a.get_help_heading().unwrap_or_else(|| panic!("--{id} has no help heading"));
            assert!(HEADINGS.contains(&h), "--{id}: unknown heading {h:?}");
        }
        let help = Args::command().render_long_help().to_string();
        assert!(help.starts_with("Copies live TCP traffic"), "the description comes first: {help}");
        let mut at = 0;
        for h in HEADINGS.iter().map(|h| format!("\n{h}:\n")).chain(["\nExamples:\n".to_string()]) {
            let pos = help[at..].find(&h).unwrap_or_else(|| panic!("{h:?} missing or out of order"));
            at += pos + h.len();
        }
        assert!(help[at..].contains("xdpcopy --stateless") && help.contains("Exit status: 0"), "{help}");
        let short = Args::command().render_help().to_string();
        assert!(short.contains("Exit status: 0 ok, 1 runtime failure, 2 usage error"), "{short}");
    }

    #[test]
    fn every_tcpcopy_letter_gets_its_hint() {
        for h in cli::TCPCOPY_HINTS {
            let args = ["xdpcopy", "-x", "80-10.0.0.2:80", "-i", "a", "-o", "b", "-s", "10.0.0.3", h.flag, "1"];
            let err = cli::parse_from::<Args, _, _>(args, cli::TCPCOPY_HINTS).unwrap_err();
            assert_eq!(err.exit_code(), i32::from(exit::USAGE));
            let text = err.to_string();
            assert!(text.contains(&format!("tip: {} is TCPCopy's {}; ", h.flag, h.was)), "{}: {text}", h.flag);
        }
    }

    #[test]
    fn more_bad_values_name_the_option_and_the_form() {
        let base = ["xdpcopy", "-x", "80-10.0.0.2:80", "-i", "a", "-o", "b", "-s", "10.0.0.3"];
        for (extra, needles) in [
            (["--metrics", "9100"], ["--metrics", "ADDR:PORT"]),
            (["-a", "0"], ["--speed", "speed factor > 0"]),
            (["--stats-interval", "0"], ["--stats-interval", "(0, 3600]"]),
            (["-T", "0"], ["--loops", "1.."]),
            (["--duration", "0"], ["--duration", "1.."]),
        ] {
            let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
            let err = cli::parse_from::<Args, _, _>(args, cli::TCPCOPY_HINTS).unwrap_err();
            assert_eq!(err.exit_code(), i32::from(exit::USAGE));
            let text = err.to_string();
            for n in needles {
                assert!(text.contains(n), "{extra:?}: no {n:?} in {text}");
            }
        }
    }

    fn session_args(extra: &[&str]) -> Args {
        let mut argv = vec!["xdpcopy", "-i", "eth1", "-o", "eth2", "-s", "10.0.0.3"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn ipv6_and_family_translation_options() {
        // Dual stack, IPv6 -c, -D for both families.
        let Mode::Session(o) =
            session_options(&session_args(&["-x", "80-10.0.0.2:80,80-[2001:db8::2]:80", "-c", "2001:db8:5::/120"]))
                .unwrap()
        else {
            panic!("session mode")
        };
        assert!(o.ipv6_targets && o.offer_extension);
        assert_eq!((o.session.mss, o.session.mss_v6), (1460, 1440));
        assert_eq!(o.tuples.addresses.len(), 255);
        let Mode::Session(o) = session_options(&session_args(&["-x", "80-[2001:db8::2]:80", "-D", "1300"])).unwrap()
        else {
            panic!("session mode")
        };
        assert_eq!((o.session.mss, o.session.mss_v6), (1300, 1300));
        // Family translation needs -c of the target's family, and session mode.
        let xlat = ["-x", "[2001:db8::1]:80-10.0.0.2:80"];
        let e = session_options(&session_args(&xlat)).unwrap_err().0;
        assert!(e.contains("needs IPv4 client addresses: give -c"), "{e}");
        let e = session_options(&session_args(&[&xlat[..], &["-c", "2001:db8:5::/120"]].concat())).unwrap_err().0;
        assert!(e.contains("needs IPv4 client addresses"), "{e}");
        assert!(session_options(&session_args(&[&xlat[..], &["-c", "10.9.0.0/24"]].concat())).is_ok());
        let e = session_options(
            &Args::try_parse_from(["xdpcopy", "--stateless", "-i", "a", "-o", "b", "-x", "10.0.0.1:80-[::1]:80"])
                .unwrap(),
        )
        .unwrap_err()
        .0;
        assert!(e.contains("--stateless"), "{e}");
        // IPv6 targets need protocol 7.
        let e =
            session_options(&session_args(&["-x", "80-[2001:db8::2]:80", "--channel-protocol", "6"])).unwrap_err().0;
        assert!(e.contains("need channel protocol 7"), "{e}");
        let Mode::Session(o) =
            session_options(&session_args(&["-x", "80-10.0.0.2:80", "--channel-protocol", "6"])).unwrap()
        else {
            panic!("session mode")
        };
        assert!(!o.offer_extension);
    }
}
