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
    config::{self, Config, Mode, SessionOptions, Transfer},
    feed::{Feed, FeedOptions},
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
/// Session replay (the default) needs xdpcopy-intercept (or TCPCopy's intercept) on an assist
/// server that the test server routes its responses to: `-s` names it. `--stateless` instead
/// rewrites and forwards every captured frame, with no sessions and no intercept.
#[derive(Debug, Parser)]
#[command(name = "xdpcopy", version, about, long_about = None, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// What to copy where: [ONLINE_IP:]PORT-TARGET_IP:TARGET_PORT[@NEXT_HOP_MAC]; repeat or
    /// separate with commas.
    #[arg(short = 'x', long = "transfer", value_name = "TRANSFER", required = true, value_parser = config::parse_transfers)]
    transfers: Vec<Vec<Transfer>>,

    /// Capture interface (a mirror port), or a pcap/pcapng file to replay offline (Ethernet,
    /// VLAN, Linux cooked, raw IP); offline replay needs the same intercept (-s) as live.
    #[arg(short = 'i', long, value_name = "IFACE|FILE", required_unless_present = "mirror")]
    input: Option<String>,

    /// Replay each captured session N times as independent sessions, each copy from a client
    /// (address, port) no live session uses.
    #[arg(short = 'n', long = "copies", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    copies: u16,

    /// Client addresses to send from instead of the captured ones: addresses, ranges, CIDRs,
    /// e.g. 10.1.0.10-10.1.0.50,10.2.0.0/24 (route them to the assist server on the test server).
    #[arg(short = 'c', long = "client-addresses", value_name = "LIST", value_parser = parse_address_list)]
    client_addresses: Option<AddressList>,

    /// Several copiers feeding one test server: give each a different F (0..=31); their client
    /// ports never overlap.
    #[arg(short = 'f', long = "port-slot", value_name = "F", value_parser = clap::value_parser!(u16).range(0..32))]
    port_slot: Option<u16>,

    /// Replay this percentage of the sessions (1..=100), chosen by a hash of the 4-tuple.
    #[arg(short = 'r', long = "sample", value_name = "PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
    sample: u8,

    /// Ramp the replayed share up by 1 % per second from the first packet (to -r, or 100 %).
    #[arg(short = 'g', long)]
    ramp: bool,

    /// Offline: replay N times faster than captured.
    #[arg(short = 'a', long, value_name = "N", default_value_t = 1.0)]
    speed: f64,

    /// Offline: cut every idle gap in the capture longer than MS to MS.
    #[arg(short = 'I', long, value_name = "MS")]
    max_gap: Option<u64>,

    /// Offline: replay the file N times.
    #[arg(short = 'T', long, value_name = "N", default_value_t = 1)]
    loops: u32,

    /// Offline: as fast as the feed can go, ignoring the capture's timing.
    #[arg(long)]
    topspeed: bool,

    /// Offline: after the last packet, wait at most SECS for the sessions to finish.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    offline_tail: u64,

    /// Output interface towards the test server.
    #[arg(short = 'o', long, value_name = "IFACE", required = true)]
    output: Option<String>,

    /// Mirror IFACE's TCP to the -x ports with tc into a veth and capture from that (removed at
    /// exit, or by the next start after a crash), so production traffic is never taken from the
    /// kernel.
    #[arg(long, value_name = "IFACE", conflicts_with = "input")]
    mirror: Option<String>,

    /// Capture with -i on an interface that carries addresses (refused without it: the
    /// matching traffic would no longer reach this host's kernel; see --mirror).
    #[arg(long, conflicts_with = "mirror")]
    force_capture: bool,

    /// Leave the -i interface's promiscuous mode alone (by default it is turned on for an
    /// interface without addresses, a SPAN port, until exit).
    #[arg(long, conflicts_with = "mirror")]
    no_promisc: bool,

    /// Rewrite and forward every matching frame; no sessions, no intercept.
    #[arg(long, conflicts_with = "intercepts")]
    stateless: bool,

    /// Intercepts to register sessions with: IP[:PORT][,...] (session mode; up to 32).
    #[arg(short = 's', long, value_name = "LIST", required_unless_present = "stateless")]
    intercepts: Option<String>,

    /// Default channel port of the -s entries (TCPCopy's -p).
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = control::channel::proto::DEFAULT_PORT)]
    intercept_port: u16,

    /// Channel connections per intercept (1..=11).
    #[arg(short = 'C', long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=11))]
    conns: u8,

    /// Channel framing; must match the intercept's (TCPCopy's --disable-combined = bare).
    #[arg(long, value_enum, default_value = "combined")]
    framing: FramingArg,

    /// Don't wait for a response before sending the next request (pipelining, streaming).
    #[arg(short = 'W', long)]
    no_wait: bool,

    /// A session that falls behind its capture sends what is waiting without waiting for each
    /// response until it has caught up (auto), or always keeps strict request/response order and
    /// grows its backlog (off).
    #[arg(long, value_enum, default_value = "auto")]
    catch_up: CatchUpArg,

    /// Catch-up starts when a session buffers this many KiB...
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    catch_up_kb: u64,

    /// ...or when a captured segment has waited this many ms to be sent.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    catch_up_lag: u64,

    /// Replay only sessions whose SYN was captured (no synthesized SYNs).
    #[arg(short = 'O', long)]
    only_syn: bool,

    /// End a session that got no response for SECS.
    #[arg(short = 't', long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    session_timeout: u64,

    /// End an idle session after SECS without a response [default: -t + 120].
    #[arg(short = 'k', long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_timeout: Option<u64>,

    /// RTT in ms for every session (pacing and delayed ACKs) [default: measured per session].
    #[arg(short = 'R', long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60000))]
    rtt: Option<u64>,

    /// Split captured IP packets larger than this (GRO super-segments); capped by the output MTU.
    #[arg(short = 'M', long, value_name = "BYTES", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(576..=9000))]
    mtu: u16,

    /// MSS option of synthesized SYNs.
    #[arg(short = 'D', long, value_name = "BYTES", default_value_t = 1460, value_parser = clap::value_parser!(u16).range(536..=8960))]
    mss: u16,

    /// Session table capacity per worker (the least recently active is evicted when full).
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    max_sessions: u64,

    /// Memory per worker for buffered client segments, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pool_mb: u64,

    /// The capture carries the online server's responses too (its egress is mirrored): measure
    /// production latency beside the test server's. With --mirror, egress is mirrored as well.
    #[arg(long)]
    production_latency: bool,

    /// Cap of buffered client bytes per session, KiB (a session over it ends, counted) [default:
    /// none: sessions share the worker's pool, and only a full pool ends sessions, largest
    /// backlog first].
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    session_buffer_kb: Option<u64>,

    /// RX queues to capture (one worker each) [default: all RX queues of the capture interface].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    queues: Option<u32>,

    /// CPUs to pin workers to, e.g. 0,1 or 2-5 [default: all, round robin].
    #[arg(long, value_name = "LIST", value_parser = parse_core_list)]
    cores: Option<CoreList>,

    /// Workers spin between rounds instead of sleeping when idle: lowest latency, one full core
    /// per worker (for dedicated, isolated cores; by default a worker sleeps when work is sparse).
    #[arg(long)]
    busy_poll: bool,

    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpModeArg,

    /// AF_XDP zero-copy.
    #[arg(long, value_enum, default_value = "auto")]
    zero_copy: ZeroCopyArg,

    /// TCP checksum update.
    #[arg(long, value_enum, default_value = "full")]
    checksum: ChecksumArg,

    /// UMEM frames per worker (power of two).
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = power_of_two)]
    frames: u32,

    /// Entries per ring (power of two).
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = power_of_two)]
    ring_size: u32,

    /// Seconds between stats lines.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    stats_interval: f64,

    /// No stats lines (the start-up report and the final summary still print).
    #[arg(short, long)]
    quiet: bool,

    /// Do not record latency histograms.
    #[arg(long)]
    no_latency: bool,

    /// Write latency exports under PREFIX: PREFIX_<metric>.percentiles.csv / .hgrm / .buckets.csv,
    /// PREFIX_summary.csv (per interval), PREFIX.hlog (HdrHistogram interval log), PREFIX_run_meta.json.
    #[arg(long, value_name = "PREFIX", conflicts_with = "no_latency")]
    latency_csv: Option<std::path::PathBuf>,

    /// Serve Prometheus metrics on ADDR:PORT (GET /metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,

    /// Write every counter and the latency summary as JSON at exit.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<std::path::PathBuf>,

    /// Write every frame the copier transmits to this pcap file (for Wireshark).
    #[arg(long, value_name = "FILE")]
    pcap_out: Option<std::path::PathBuf>,
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
struct AddressList(Vec<std::net::Ipv4Addr>);

fn parse_address_list(s: &str) -> Result<AddressList, String> {
    dataplane::tuples::parse_addresses(s).map(AddressList)
}

/// A parsed `--cores` value (a newtype: clap would read a bare `Vec` as repeated values).
#[derive(Debug, Clone)]
struct CoreList(Vec<usize>);

fn parse_core_list(s: &str) -> Result<CoreList, String> {
    config::parse_cores(s).map(CoreList)
}

fn power_of_two(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && (64..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a power of two between 64 and 1048576")),
    }
}

fn session_options(args: &Args) -> Result<Mode> {
    if args.stateless {
        return Ok(Mode::Stateless);
    }
    let list = args.intercepts.as_deref().unwrap_or_default();
    let intercepts = config::parse_intercepts(list, args.intercept_port).map_err(anyhow::Error::msg)?;
    let t = Duration::from_secs(args.session_timeout);
    let session = session::Config {
        wait_response: !args.no_wait,
        only_syn_sessions: args.only_syn,
        session_timeout: t,
        keepalive_timeout: args.keepalive_timeout.map_or(t + Duration::from_secs(120), Duration::from_secs),
        default_rtt: args.rtt.map(Duration::from_millis),
        mss: args.mss,
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
        ..session::Config::default()
    };
    Ok(Mode::Session(Box::new(SessionOptions {
        intercepts,
        conns_per_intercept: args.conns,
        framing: match args.framing {
            FramingArg::Combined => Framing::Combined,
            FramingArg::Bare => Framing::Bare,
        },
        session,
        production_latency: args.production_latency,
        tuples: dataplane::tuples::TupleConfig {
            replicas: args.copies,
            addresses: args.client_addresses.clone().map(|a| a.0).unwrap_or_default(),
            port_slot: args.port_slot,
            // Longer than the engine's time-wait, so a pair is never reused while the test
            // server may still hold the old connection.
            idle: Duration::from_secs(90),
            capacity: (args.max_sessions as usize).saturating_mul(usize::from(args.copies)).min(1 << 20),
        },
    })))
}

fn feed_options(args: &Args, path: &str) -> Result<FeedOptions> {
    let speed = Speed::new(args.speed)
        .map_err(|_| anyhow::anyhow!("-a/--speed {}: expected a factor > 0, e.g. 10", args.speed))?;
    let loops =
        std::num::NonZeroU32::new(args.loops).ok_or_else(|| anyhow::anyhow!("-T/--loops 0: expected 1 or more"))?;
    Ok(FeedOptions {
        path: path.into(),
        pace: PaceOptions { speed, max_gap: args.max_gap.map(Duration::from_millis), topspeed: args.topspeed, loops },
        tail: Duration::from_secs(args.offline_tail),
    })
}

fn config(args: Args, input: String) -> Result<Config> {
    let mode = session_options(&args)?;
    if !(args.stats_interval > 0.0 && args.stats_interval <= 3600.0) {
        bail!("--stats-interval {}: expected seconds in (0, 3600]", args.stats_interval);
    }
    let queues = match args.queues {
        Some(q) => q,
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
        frames: args.frames,
        ring_size: args.ring_size,
        stats_interval: (!args.quiet).then(|| Duration::from_secs_f64(args.stats_interval)),
    })
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

fn run(args: Args) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    footprint::handle_signals(stop.clone(), "xdpcopy")?;
    footprint::install_panic_hook("xdpcopy");
    footprint::sweep("xdpcopy");
    // An interface of that name wins over a file of that name.
    let live_input = args.input.as_deref().filter(|i| netdev::mtu(i).is_ok());
    let promisc = match live_input {
        Some(i) => capture_interface(i, &args)?,
        None => None,
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
    // `-i FILE`: offline replay, the file fed into a veth the copier captures from.
    let mut feed = match &args.input {
        Some(i) if live_input.is_none() && std::path::Path::new(i).is_file() => {
            let opts = feed_options(&args, i)?;
            let queues = args.queues.unwrap_or(1);
            Some(Feed::setup(opts, queues)?)
        }
        _ => None,
    };
    let input = match (&mirror, &feed, &args.input) {
        (Some(m), _, _) => m.capture.clone(),
        (None, Some(f), _) => f.capture.clone(),
        (None, None, Some(i)) => i.clone(),
        (None, None, None) => unreachable!("clap requires --input unless --mirror"),
    };
    let offline = feed.as_ref().and(args.input.clone()).map(std::path::PathBuf::from);
    let mut cfg = config(args, input)?;
    cfg.offline = offline;
    let summary = runtime::run(&cfg, stop, feed.as_mut())?;
    drop(feed);
    drop(mirror);
    drop(promisc);
    eprintln!("xdpcopy: summary after {:.1} s:", summary.elapsed.as_secs_f64());
    for (name, value) in summary.named() {
        eprintln!("  {name:<28} {value}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
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
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpcopy: error: {e:#}");
            ExitCode::FAILURE
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
}
