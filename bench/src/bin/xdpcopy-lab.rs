//! `xdpcopy-lab`: bring the network-namespace lab up and down, send test frames, verify pcaps.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bench::lab::{addr, iface};
use bench::netns::link_mac;
use bench::{send_frames_in_ns, FrameKind, FrameSpec, Lab, LabSpec, MacAddr, PcapSummary, Role, SendSpec};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xdpcopy-lab", version, about = "xdpcopy network-namespace lab")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab and leave it running (namespaces xdpc-TAG-*).
    Up {
        #[arg(long, default_value = "demo")]
        tag: String,
        /// TX/RX queues per veth.
        #[arg(long, default_value_t = 2)]
        queues: u32,
        /// Do not start nginx on the online and test servers.
        #[arg(long)]
        no_nginx: bool,
        /// Also mirror the online server's egress (responses) to the copier.
        #[arg(long)]
        mirror_egress: bool,
        /// IPv6 beside IPv4 (fd00:201:N::H where IPv4 has 10.201.N.H).
        #[arg(long)]
        dual_stack: bool,
    },
    /// Remove the lab: kill what runs in its namespaces, delete them. Idempotent.
    Down {
        #[arg(long, default_value = "demo")]
        tag: String,
    },
    /// List the labs present (xdpc-* namespaces) and the processes in them.
    Status,
    /// Send test frames out of an interface inside a lab namespace (AF_PACKET).
    Send {
        /// Lab namespace to send from (must start with xdpc-), e.g. xdpc-demo-client.
        #[arg(long)]
        ns: String,
        /// Interface in that namespace, e.g. c0.
        #[arg(long)]
        iface: String,
        /// Destination MAC, e.g. the online server's o0.
        #[arg(long)]
        dst_mac: MacAddr,
        /// Source MAC (default: the interface's own).
        #[arg(long)]
        src_mac: Option<MacAddr>,
        #[arg(long, default_value_t = addr::CLIENT)]
        src_ip: Ipv4Addr,
        #[arg(long, default_value_t = addr::ONLINE)]
        dst_ip: Ipv4Addr,
        #[arg(long, default_value_t = 40000)]
        src_port: u16,
        #[arg(long, default_value_t = 80)]
        dst_port: u16,
        /// Source ports src_port..src_port+flows are used round-robin.
        #[arg(long, default_value_t = 1)]
        flows: u16,
        /// TCP flags byte (decimal or 0x..), default ACK|PSH.
        #[arg(long, default_value = "0x18", value_parser = parse_u8)]
        flags: u8,
        /// Frame sizes (bytes, without FCS), cycled.
        #[arg(long, value_delimiter = ',', default_value = "64,512,1500")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Frames per second (0 = as fast as possible).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Sequence number carried by the first frame.
        #[arg(long, default_value_t = 0)]
        first_seq: u32,
        /// good | bad-ihl | bad-doff-small | bad-doff-beyond | truncated-tcp |
        /// total-len-too-big | vlan[:VID] | ipv6
        #[arg(long, default_value = "good")]
        kind: FrameKind,
    },
    /// Summarise a pcap written by tcpdump -w.
    Verify {
        pcap: PathBuf,
        /// Fail unless sequence numbers FIRST..FIRST+N were each seen exactly once.
        #[arg(long)]
        expect_seqs: Option<u32>,
        #[arg(long, default_value_t = 0)]
        first_seq: u32,
        /// Fail on any bad IPv4/TCP checksum or damaged payload.
        #[arg(long)]
        strict_checksums: bool,
    },
    /// The README demo: bring the lab up, run `xdpcopy --stateless` in the copier namespace,
    /// drive real HTTP requests from the client to the online nginx, show the copier's stats
    /// line, then what reached the test server; tear everything down.
    Demo {
        /// How long to send requests.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests per second from the client (curl, keep-alive off).
        #[arg(long, default_value_t = 20)]
        rate: u64,
        #[arg(long, default_value = "demo")]
        tag: String,
    },
    /// The forwarding benchmark: XDP_DROP, AF_XDP rx+drop, AF_XDP TX ceiling and
    /// `xdpcopy --stateless`, side by side on one veth pair; writes the table into a Markdown file.
    Bench {
        /// Frame sizes (bytes).
        #[arg(long, value_delimiter = ',', default_value = "64,512,1500")]
        sizes: Vec<usize>,
        /// Runs per size (medians are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds of load per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 0)]
        gen_core: usize,
        #[arg(long, default_value_t = 1)]
        dut_core: usize,
        /// Extra arguments for xdpcopy (e.g. "--checksum incremental").
        #[arg(long, allow_hyphen_values = true)]
        xdpcopy_args: Option<String>,
        /// Markdown file to update (between the bench markers).
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Print the table only.
        #[arg(long)]
        no_write: bool,
    },
    /// Sessions per second from a file: `xdpcopy -i FILE --topspeed` through xdpcopy-intercept,
    /// beside the test nginx's own ceiling for new connections (wrk, Connection: close) measured
    /// in the same run; writes the table into a Markdown file.
    BenchSessions {
        /// One-request sessions recorded in the file.
        #[arg(long, default_value_t = 1000)]
        sessions: u32,
        /// Replays of the file per run (-T).
        #[arg(long, default_value_t = 10)]
        loops: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds of wrk per ceiling measurement.
        #[arg(long, default_value_t = 3)]
        ceiling_seconds: u64,
        /// wrk connections for the ceiling.
        #[arg(long, default_value_t = 16)]
        wrk_conns: u32,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long)]
        no_write: bool,
    },
    /// Offline replay at top speed: tcpreplay vs xdpcopy -i FILE on the same output veth, and
    /// the same run's AF_XDP TX ceiling.
    BenchOffline {
        #[arg(long, value_delimiter = ',', default_value = "64,1500")]
        sizes: Vec<usize>,
        /// Frames per generated file.
        #[arg(long, default_value_t = 200_000)]
        frames: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Extra arguments for xdpcopy (e.g. "--checksum incremental": a file's checksums are
        /// valid).
        #[arg(long, allow_hyphen_values = true)]
        xdpcopy_args: Option<String>,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long)]
        no_write: bool,
    },
    /// Drop a share of the IPv4 TCP frames arriving on an interface (an XDP program: this lab's
    /// kernel has no netem) until SIGINT; for loss tests. Run it inside the namespace.
    Impair {
        #[arg(long)]
        iface: String,
        /// Loss in percent.
        #[arg(long)]
        loss: f64,
    },
    /// Session replay under increasing load: online req/s, copy ratio, copier CPU (during the
    /// load and per 1000 replayed requests), replay round trip, catch-up, and the online server's
    /// rate with ÷ without the copier; writes the table into a Markdown file.
    BenchReplay {
        /// Paced levels, requests per second over 8 keep-alive connections.
        #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,4000", num_args = 0..)]
        paced: Vec<u32>,
        /// Unpaced levels: wrk connection counts.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,16", num_args = 0..)]
        unpaced: Vec<u32>,
        /// Seconds of load per level.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Extra arguments for xdpcopy (e.g. "-W").
        #[arg(long, allow_hyphen_values = true)]
        xdpcopy_args: Option<String>,
        /// Client and test server family: 4, 6 (a dual-stack lab), or both (each level twice).
        #[arg(long, default_value = "4", value_parser = ["4", "6", "both"])]
        family: String,
        /// Queues of the lab's capture interface: the copier runs one worker per queue (1: the
        /// worker runs the channel itself, as with `--mirror`'s default; 2 and more: a control
        /// thread routes headers between the workers).
        #[arg(long, default_value_t = bench::replay_bench::DEFAULT_QUEUES, value_parser = clap::value_parser!(u32).range(1..=8))]
        queues: u32,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long)]
        no_write: bool,
    },
    /// xdpcopy-intercept on an assist server vs `--local` on the test server, side by side:
    /// headers/s, each BPF program's ns per packet (bpftool, kernel.bpf_stats_enabled), the
    /// intercept's CPU; writes the table into a Markdown file.
    BenchIntercept {
        /// Offered rates in answers per second; 0 = as fast as the sender goes.
        #[arg(long, value_delimiter = ',', default_value = "50000,200000,0")]
        rates: Vec<u64>,
        /// Answers per mode and rate.
        #[arg(long, default_value_t = 500_000)]
        count: u64,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        #[arg(long)]
        no_write: bool,
    },
    /// A benchmark component (run by `bench` inside a namespace; prints `RESULT count=N seconds=S`).
    #[command(hide = true)]
    Agent {
        #[arg(value_enum)]
        kind: AgentKind,
        #[arg(long)]
        iface: String,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        core: Option<usize>,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum AgentKind {
    /// AF_XDP TX-only generator.
    Gen,
    /// XDP drop program with a counter.
    XdpDrop,
    /// AF_XDP receive and drop in userspace.
    RxDrop,
}

fn parse_u8(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpcopy-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Up { tag, queues, no_nginx, mirror_egress, dual_stack } => {
            up(LabSpec { tag, queues, nginx: !no_nginx, mirror_egress, traditional: false, dual_stack })
        }
        Cmd::Down { tag } => {
            Lab::down(&tag)?;
            println!("lab {tag}: down");
            Ok(())
        }
        Cmd::Status => status(),
        Cmd::Send {
            ns,
            iface,
            dst_mac,
            src_mac,
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            flows,
            flags,
            sizes,
            count,
            rate,
            first_seq,
            kind,
        } => {
            anyhow::ensure!(
                ns.starts_with(bench::NS_PREFIX),
                "refusing to send from {ns:?}: not a lab namespace (xdpc-*)"
            );
            let src_mac = match src_mac {
                Some(m) => m,
                None => link_mac(&ns, &iface)?,
            };
            let spec = SendSpec {
                iface,
                frame: FrameSpec {
                    src_mac,
                    dst_mac,
                    src_ip,
                    dst_ip,
                    src_port,
                    dst_port,
                    flags,
                    ..FrameSpec::default()
                },
                kind,
                sizes,
                count,
                rate_pps: rate,
                first_seq,
                flows,
            };
            let r = send_frames_in_ns(&ns, &spec)?;
            println!(
                "sent {} frames ({} bytes) in {:.3} s = {:.0} pps, {} retries (ENOBUFS)",
                r.sent,
                r.bytes,
                r.elapsed.as_secs_f64(),
                r.pps(),
                r.retries
            );
            Ok(())
        }
        Cmd::Demo { seconds, rate, tag } => demo(&tag, seconds, rate),
        Cmd::Bench { sizes, runs, seconds, gen_core, dut_core, xdpcopy_args, out, no_write } => {
            let spec = bench::benchmark::BenchSpec {
                sizes,
                runs,
                seconds,
                gen_core,
                dut_core,
                xdpcopy_args: xdpcopy_args
                    .map(|a| a.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default(),
            };
            let report = bench::benchmark::run(&spec)?;
            println!("{report}");
            if !no_write {
                bench::benchmark::write_report(&out, &report)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        Cmd::Agent { kind, iface, size, seconds, core } => agent(kind, &iface, size, seconds, core),
        Cmd::Impair { iface, loss } => impair(&iface, loss),
        Cmd::BenchSessions { sessions, loops, runs, ceiling_seconds, wrk_conns, out, no_write } => {
            let spec = bench::sessions_bench::SessionsSpec { sessions, loops, runs, ceiling_seconds, wrk_conns };
            let report = bench::sessions_bench::run(&spec)?;
            println!("{report}");
            if !no_write {
                bench::benchmark::write_section(&out, "sessions", &report)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        Cmd::BenchOffline { sizes, frames, runs, xdpcopy_args, out, no_write } => {
            let extra: Vec<String> =
                xdpcopy_args.map(|a| a.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
            let report = bench::benchmark::run_offline(&sizes, frames, runs, &extra)?;
            println!("{report}");
            if !no_write {
                bench::benchmark::write_section(&out, "offline", &report)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        Cmd::BenchReplay { paced, unpaced, seconds, xdpcopy_args, family, queues, out, no_write } => {
            use bench::replay_bench::{Family, Load};
            let families = match family.as_str() {
                "6" => vec![Family::V6],
                "both" => vec![Family::V4, Family::V6],
                _ => vec![Family::V4],
            };
            let levels: Vec<Load> =
                paced.into_iter().map(Load::Paced).chain(unpaced.into_iter().map(Load::Unpaced)).collect();
            let extra: Vec<String> =
                xdpcopy_args.map(|a| a.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
            let report = bench::replay_bench::run(&levels, &families, seconds, &extra, queues)?;
            println!("{report}");
            if !no_write {
                bench::benchmark::write_section(&out, &bench::replay_bench::section(queues), &report)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        Cmd::BenchIntercept { rates, count, out, no_write } => {
            let report = bench::intercept_bench::run(&rates, count)?;
            println!("{report}");
            if !no_write {
                bench::benchmark::write_section(&out, "intercept", &report)?;
                println!("written to {}", out.display());
            }
            Ok(())
        }
        Cmd::Verify { pcap, expect_seqs, first_seq, strict_checksums } => {
            let s = PcapSummary::from_file(&pcap)?;
            print!("{s}");
            if let Some(n) = expect_seqs {
                s.check_seqs_exactly(first_seq..first_seq.saturating_add(n))?;
                println!("sequence check: ok ({n} frames, each once)");
            }
            if strict_checksums {
                s.check_checksums()?;
                println!("checksum check: ok");
            }
            Ok(())
        }
    }
}

fn up(spec: LabSpec) -> Result<()> {
    let lab = Lab::up(spec).context("lab up")?;
    let ns = |r| lab.ns(r);
    println!("lab {} is up (queues {}):", lab.tag(), lab.spec().queues);
    println!("  {:<22} {} {}/24", ns(Role::Client), iface::CLIENT, addr::CLIENT);
    println!(
        "  {:<22} {} {}/24 (nginx :{}), {} -> copier {} (tc mirror of o0 ingress{})",
        ns(Role::Online),
        iface::ONLINE,
        addr::ONLINE,
        addr::ONLINE_PORT,
        iface::ONLINE_MIRROR,
        iface::COPIER_IN,
        if lab.spec().mirror_egress { " + egress" } else { "" }
    );
    println!(
        "  {:<22} {} (capture), {} {}/24, {} {}/24 (channel :{})",
        ns(Role::Copier),
        iface::COPIER_IN,
        iface::COPIER_OUT,
        addr::COPIER_OUT,
        iface::COPIER_CHANNEL,
        addr::COPIER_CHANNEL,
        addr::CHANNEL_PORT
    );
    println!(
        "  {:<22} {} {}/24 (nginx :{}), {} {}/24, route {} via {}",
        ns(Role::Test),
        iface::TEST_IN,
        addr::TEST,
        addr::TEST_PORT,
        iface::TEST_TO_ASSIST,
        addr::TEST_TO_ASSIST,
        addr::CLIENT_NET,
        addr::ASSIST
    );
    println!(
        "  {:<22} {} {}/24 (ip_forward=0), {} {}/24",
        ns(Role::Assist),
        iface::ASSIST_IN,
        addr::ASSIST,
        iface::ASSIST_CHANNEL,
        addr::ASSIST_CHANNEL
    );
    for (r, i) in [(Role::Online, iface::ONLINE), (Role::Test, iface::TEST_IN), (Role::Copier, iface::COPIER_OUT)] {
        println!("  mac {}/{}: {}", r, i, lab.mac(r, i)?);
    }
    if lab.spec().nginx {
        println!("  online access log: {}", lab.online_access_log().display());
        println!("  test access log:   {}", lab.test_access_log().display());
    }
    println!("  out dir: {}", lab.out_dir().display());
    println!(
        "try: ip netns exec {} curl -s http://{}/",
        ns(Role::Client),
        SocketAddrV4::new(addr::ONLINE, addr::ONLINE_PORT)
    );
    println!("remove with: xdpcopy-lab down --tag {}", lab.tag());
    lab.leave_running();
    Ok(())
}

fn status() -> Result<()> {
    let labs = Lab::list()?;
    if labs.is_empty() {
        println!("no labs (no xdpc-* namespaces)");
    }
    for (tag, roles) in labs {
        println!("lab {tag}:");
        for role in roles {
            let ns = bench::ns_name(&tag, role);
            let pids = bench::netns::ns_pids(&ns);
            let names: Vec<String> = pids
                .iter()
                .map(|p| {
                    let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                    format!("{}({p})", comm.trim())
                })
                .collect();
            println!("  {ns:<24} {}", names.join(" "));
        }
    }
    Ok(())
}

fn agent(kind: AgentKind, iface: &str, size: usize, seconds: f64, core: Option<usize>) -> Result<()> {
    use std::sync::{atomic::AtomicBool, Arc};
    use std::time::{Duration, Instant};

    use dataplane::bpf::XdpMode;

    if let Some(id) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    let duration = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let count = match kind {
        AgentKind::Gen => {
            let spec = FrameSpec {
                src_mac: link_mac_here(iface)?,
                dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0x02]),
                src_ip: addr::CLIENT,
                dst_ip: addr::ONLINE,
                dst_port: 80,
                ..FrameSpec::default()
            };
            bench::afxdp::generate(iface, 0, &spec, size, 64, duration)?
        }
        AgentKind::XdpDrop | AgentKind::RxDrop => {
            let ready = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            // SIGINT ends the count early (the offline benchmark stops its sink when the sender is done).
            for sig in [libc::SIGINT, libc::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())?;
            }
            let timer = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(duration);
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                })
            };
            let n = match kind {
                AgentKind::XdpDrop => bench::afxdp::xdp_drop_count(iface, XdpMode::Native, &ready, &stop)?,
                _ => bench::afxdp::afxdp_rx_drop(iface, 1, 80, XdpMode::Native, &ready, stop.clone())?,
            };
            // Not joined: it sleeps out the full duration, and SIGINT may have ended the count early.
            drop(timer);
            n
        }
    };
    println!(
        "RESULT count={count} seconds={:.6}",
        match kind {
            AgentKind::Gen => started.elapsed().as_secs_f64(),
            _ => seconds,
        }
    );
    Ok(())
}

fn link_mac_here(iface: &str) -> Result<MacAddr> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .with_context(|| format!("interface {iface} not found"))?;
    s.trim().parse().map_err(|e| anyhow::anyhow!("MAC of {iface}: {e}"))
}

/// The README demo: session replay of live HTTP requests, access logs compared at the end.
fn demo(tag: &str, seconds: u64, rate: u64) -> Result<()> {
    use std::time::{Duration, Instant};

    bench::ensure_built().ok();
    let xdpcopy = bench::bin_path("xdpcopy")?;
    let intercept = bench::bin_path("xdpcopy-intercept")?;
    println!("== bringing the lab up (namespaces xdpc-{tag}-*) ==");
    let lab = Lab::up(LabSpec {
        tag: tag.to_owned(),
        queues: 2,
        nginx: true,
        mirror_egress: false,
        traditional: false,
        dual_stack: false,
    })?;
    let target = format!("{}:{}", addr::TEST, addr::TEST_PORT);
    println!("== assist server: xdpcopy-intercept -i {} --target {target} ==", iface::ASSIST_IN);
    let mut icpt = lab
        .cmd(Role::Assist, &intercept.to_string_lossy())
        .args(["-i", iface::ASSIST_IN, "--target", &target, "-q"])
        .spawn()
        .context("starting xdpcopy-intercept")?;
    std::thread::sleep(Duration::from_millis(500));
    let transfer = format!("{}-{target}", addr::ONLINE_PORT);
    let channel = addr::ASSIST_CHANNEL.to_string();
    println!(
        "== copier: xdpcopy -x {transfer} -i {} -o {} -s {channel}  (stats every second) ==",
        iface::COPIER_IN,
        iface::COPIER_OUT
    );
    let mut copier = lab
        .cmd(Role::Copier, &xdpcopy.to_string_lossy())
        .args(["-x", &transfer, "-i", iface::COPIER_IN, "-o", iface::COPIER_OUT, "-s", &channel])
        .spawn()
        .context("starting xdpcopy")?;
    std::thread::sleep(Duration::from_millis(1500));
    println!("== {seconds} s of HTTP requests from the client to the online nginx, ~{rate}/s, keep-alive and not ==");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let (mut ok, mut failed) = (0u64, 0u64);
    let online: std::net::SocketAddr = (addr::ONLINE, addr::ONLINE_PORT).into();
    let mut i = 0u64;
    while Instant::now() < deadline {
        // Every 5th round: 5 requests on one keep-alive connection; otherwise one short connection.
        let res = bench::in_netns(&lab.ns(Role::Client), || {
            if i.is_multiple_of(5) {
                let mut k = bench::http::Conn::open(online)?;
                (0..5)
                    .map(|j| k.get(&addr::ONLINE.to_string(), &format!("/demo/{i}/{j}"), false))
                    .collect::<Result<Vec<_>>>()
            } else {
                Ok(vec![bench::http::get_once(online, &format!("/demo/{i}"))?])
            }
        });
        match res {
            Ok(codes) => {
                ok += codes.iter().filter(|c| **c == 200).count() as u64;
                failed += codes.iter().filter(|c| **c != 200).count() as u64;
            }
            Err(_) => failed += 1,
        }
        i += 1;
        std::thread::sleep(gap);
    }
    std::thread::sleep(Duration::from_secs(2));
    bench::netns::signal(copier.id(), libc::SIGINT)?;
    let status = copier.wait()?;
    bench::netns::signal(icpt.id(), libc::SIGINT)?;
    let _ = icpt.wait();
    let online_log = bench::http::access_log(&lab.online_access_log(), "/demo/")?;
    let test_log = bench::http::access_log(&lab.test_access_log(), "/demo/")?;
    let same = online_log.iter().filter(|(k, n)| test_log.get(*k) == Some(*n)).count();
    println!("== result ==");
    println!(
        "online nginx: {ok} requests answered 200, {failed} failed; {} distinct requests in its access log",
        online_log.len()
    );
    println!(
        "test nginx:   {} distinct requests in its access log; {same} of the online ones replayed exactly (same URL, status, count)",
        test_log.len()
    );
    println!("logs: {} and {}", lab.online_access_log().display(), lab.test_access_log().display());
    anyhow::ensure!(status.success(), "xdpcopy exited with {status}");
    lab.shutdown()?;
    println!("== lab down ==");
    Ok(())
}

fn impair(iface: &str, loss: f64) -> Result<()> {
    use dataplane::bpf::{Counter, Entry, Program, XdpMode};
    use std::sync::{atomic::AtomicBool, Arc};

    anyhow::ensure!((0.0..=100.0).contains(&loss), "--loss {loss}: expected a percentage in 0..=100");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let prog = Program::load()?;
    prog.set_loss(loss / 100.0)?;
    let _att = prog.attach(Entry::Lossy, iface, XdpMode::Native)?;
    eprintln!("impairing {iface}: dropping {loss}% of IPv4 TCP frames");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("impair summary:");
    eprintln!("  seen     {}", prog.counter(Counter::Seen));
    eprintln!("  dropped  {}", prog.counter(Counter::Dropped));
    Ok(())
}
