//! `xdpcopy-intercept`: returns the test server's response headers to the copiers.
//!
//! Two ways to get the responses (a [`Source`]):
//!
//! - **Assist server** (the default, TCPCopy's "new architecture"). The test server routes its
//!   responses to this host. Here the XDP program hands the AF_XDP sockets exactly the TCP
//!   segments *from* the configured test servers (`--target`), which also makes the black hole
//!   explicit: those frames never reach the kernel, so they cannot be forwarded to real clients
//!   whatever `ip_forward` says. Everything else — ssh, the channel itself, any other traffic —
//!   is passed to the kernel untouched.
//! - **`--local`** (the traditional architecture). This runs on the test server itself: an
//!   egress program (tcx, or a clsact filter on older kernels) takes the test application's
//!   answers to copied sessions before they leave IFACE (reported to TCP as sent) and puts their
//!   headers into a BPF ring buffer (see [`local`]); the channel, the application's own outbound
//!   connections and answers to `--pass-to` networks leave untouched.
//!
//! One thread runs the poll loop: take a burst from the source (every queue's RX ring, or the
//! ring buffer), turn each segment into a header message (IP + TCP header, original total
//! length: 64 bytes for IPv4, 84 for IPv6, which only copiers speaking protocol 7 register),
//! hand it to the channel server (routed to the copier connection that registered
//! the session, held in the delay table if it raced ahead of its CLIENT_ADD), flush partial
//! frames at the end of a burst, and drive the channel's sockets.
#![deny(unsafe_code)]

mod local;

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use control::{
    channel::{proto::Framing, route::RouteKey, ChannelServer, Cidr, HeaderMsg, ServerConfig, ServerStats},
    counters::CounterSet,
    latency::{write_summary_json, LatencyExport, MetricsServer, MetricsSnapshot},
};
use dataplane::{
    bpf::{
        egress::{
            EgressAttach, EgressAttachment, EgressCounters, EgressDrop, EgressPass, EgressProgram, HeaderRing,
            LinkLayer,
        },
        Attachment, Entry, Program, XdpCounters, XdpMode,
    },
    cli::{self, exit, heading},
    netdev, wire,
    xsk::{Port, PortConfig},
};

/// Returns the test server's response headers to the copiers (TCPCopy's intercept, protocol 6,
/// and xdpcopy's protocol 7 for IPv6 sessions).
///
/// Runs on the assist server, which the test server routes its responses to the clients
/// through. It captures exactly the TCP segments from the --target test servers (IPv4 or
/// IPv6; everything else passes to the kernel untouched), turns each into a header message and
/// sends it to the xdpcopy (or TCPCopy) copier that registered the session, over the channel
/// (TCP 36524).
///
/// Runs as root (or with CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON; see the systemd unit
/// xdpcopy-intercept.service).
#[derive(Debug, Parser)]
#[command(
    name = "xdpcopy-intercept",
    version = cli::VERSION,
    after_help = "Examples: see `xdpcopy-intercept --help`. Exit status: 0 ok, 1 runtime failure, 2 usage error.",
    after_long_help = EXAMPLES
)]
struct Args {
    /// Capture interface: where the test server's responses arrive (routed to this host); with
    /// --local, the test server's interface towards the clients (its egress is watched).
    #[arg(short = 'i', long, value_name = "IFACE", help_heading = heading::CAPTURE)]
    input: String,

    /// Traditional architecture: run on the test server itself and take its answers to copied
    /// sessions at IFACE's egress (dropped there, headers to the copiers); no assist server.
    #[arg(long, help_heading = heading::CAPTURE)]
    local: bool,

    /// With --local: answers to this network leave normally (people using the test server
    /// directly, health checks); CIDR or address, repeatable.
    #[arg(long = "pass-to", value_name = "CIDR", requires = "local", value_parser = parse_cidr, help_heading = heading::CAPTURE)]
    pass_to: Vec<(IpAddr, u8)>,

    /// With --local: how to attach the egress program (tcx needs kernel 6.6; tc is a clsact
    /// filter, removed at exit, or at the next start after a crash).
    #[arg(long, value_enum, default_value = "auto", requires = "local", help_heading = heading::CAPTURE)]
    egress_attach: AttachArg,

    /// With --local: size of the ring buffer the headers go through, KiB (a power of two).
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ring_kib, requires = "local", help_heading = heading::CAPTURE)]
    ring_kib: u32,

    /// A test server whose responses to capture, IP:PORT or [IPV6]:PORT; repeatable.
    #[arg(long = "target", value_name = "IP:PORT", required = true, value_parser = parse_target, help_heading = heading::CAPTURE)]
    targets: Vec<SocketAddr>,

    /// Channel port the copiers connect to.
    #[arg(short = 'p', long, default_value_t = control::channel::server::DEFAULT_PORT, help_heading = heading::CHANNEL)]
    port: u16,

    /// Address to listen on (:: for copiers over IPv6 and IPv4 alike).
    #[arg(short = 'b', long, value_name = "ADDR", default_value = "0.0.0.0", help_heading = heading::CHANNEL)]
    bind: IpAddr,

    /// Highest channel protocol to speak: 7 lets xdpcopy copiers register IPv6 sessions; 6
    /// behaves exactly as TCPCopy's intercept (IPv4 only).
    #[arg(long, value_name = "VERSION", default_value_t = 7, value_parser = clap::value_parser!(u16).range(6..=7), help_heading = heading::CHANNEL)]
    protocol: u16,

    /// RX queues to capture [default: all RX queues of the interface].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64), conflicts_with = "local", help_heading = heading::TUNING)]
    queues: Option<u32>,

    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto", conflicts_with = "local", help_heading = heading::TUNING)]
    xdp_mode: ModeArg,

    /// Channel framing; must match the copiers' (TCPCopy's --disable-combined = bare).
    #[arg(long, value_enum, default_value = "combined", help_heading = heading::CHANNEL)]
    framing: FramingArg,

    /// Seconds a session route lives without CLIENT_ADD or response.
    #[arg(long, value_name = "SECS", default_value_t = 120, help_heading = heading::CHANNEL)]
    route_ttl: u64,

    /// Seconds a SYN-ACK/RST that beat its CLIENT_ADD is held.
    #[arg(long, value_name = "SECS", default_value_t = 30, help_heading = heading::CHANNEL)]
    delay_ttl: u64,

    /// Accept copiers only from this prefix (CIDR or a bare address); repeatable. Without it
    /// any peer may connect, as with TCPCopy's intercept.
    #[arg(long = "allow-copier", value_name = "CIDR", help_heading = heading::CHANNEL)]
    allow_copier: Vec<Cidr>,

    /// Most channel connections open at once from one address.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..), help_heading = heading::CHANNEL)]
    max_conns_per_copier: u32,

    /// Most session routes one channel connection may hold.
    #[arg(long, value_name = "N", default_value_t = 32_768, value_parser = clap::value_parser!(u32).range(1..), help_heading = heading::CHANNEL)]
    max_routes_per_conn: u32,

    /// Seconds a copier connection may go without a byte either way before it is closed; 0: never.
    #[arg(long, value_name = "SECS", default_value_t = 300, help_heading = heading::CHANNEL)]
    copier_idle_timeout: u64,

    /// Seconds between stats lines.
    #[arg(long, value_name = "SECS", default_value_t = 5, help_heading = heading::OUTPUT)]
    stats_interval: u64,

    /// No stats lines.
    #[arg(short, long, help_heading = heading::OUTPUT)]
    quiet: bool,

    /// Serve Prometheus metrics on ADDR:PORT (GET /metrics), e.g. 127.0.0.1:9465 or :9465.
    #[arg(long, value_name = "ADDR:PORT", value_parser = cli::parse_listen_addr, help_heading = heading::OUTPUT)]
    metrics: Option<std::net::SocketAddr>,

    /// Write every counter as JSON at exit.
    #[arg(long, value_name = "FILE", help_heading = heading::OUTPUT)]
    summary_json: Option<std::path::PathBuf>,

    /// Start even though the capture interface forwards (IPv4 or IPv6): responses the
    /// intercept does not capture are then routed on to the real clients.
    #[arg(long, help_heading = heading::CAPTURE)]
    allow_forwarding: bool,
}

/// The examples and the exit status at the end of `--help` (and in the man page).
const EXAMPLES: &str = "\
Examples:
  # Assist server: capture the responses of the test server 10.0.0.2:8080 arriving on eth0
  # (the test server routes the client network to this host; keep ip_forward=0 here)
  xdpcopy-intercept -i eth0 --target 10.0.0.2:8080

  # An IPv6 test server too, the channel on IPv6 and IPv4 (xdpcopy copiers register IPv6
  # sessions over the channel's protocol 7)
  xdpcopy-intercept -i eth0 --target 10.0.0.2:8080 --target '[2001:db8::2]:8080' -b ::

  # Two test servers, metrics for Prometheus, a JSON summary at exit
  xdpcopy-intercept -i eth0 --target 10.0.0.2:8080 --target 10.0.0.4:8080 \\
      --metrics :9465 --summary-json /var/lib/xdpcopy-intercept/summary.json

Exit status: 0 after a clean stop (SIGINT/SIGTERM), 1 on a runtime failure, 2 on a usage
error (bad option or value; nothing was touched).

Coming from TCPCopy's intercept: docs/migrating-from-tcpcopy.md. Every option: docs/cli.md.";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Native (driver) XDP if the driver has it, generic otherwise.
    Auto,
    /// Native XDP only.
    Native,
    /// Generic (SKB) XDP only: works everywhere, slower.
    Generic,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AttachArg {
    /// tcx if the kernel has it, a clsact filter otherwise.
    Auto,
    /// A tcx link only.
    Tcx,
    /// A clsact direct-action filter only.
    Tc,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FramingArg {
    /// Count-prefixed frames of up to 16 messages (TCPCopy's default).
    Combined,
    /// A plain stream of 64-byte messages.
    Bare,
}

fn parse_target(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not IP:PORT (e.g. 10.0.0.2:8080, or [2001:db8::2]:8080 for IPv6)"))
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("{s:?} is not a network (e.g. 192.0.2.0/24, 2001:db8::/32) or an address");
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len.parse::<u8>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(bad());
    }
    Ok((ip, len))
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(k) if k.is_power_of_two() && (4..=1 << 20).contains(&k) => Ok(k),
        _ => Err(format!("{s:?}: the ring size is a power of two from 4 to 1048576 KiB")),
    }
}

/// UMEM frames per queue, equal to the fill ring's size: every frame is always either in the fill
/// ring, in the RX ring, or in our hands for one burst, so recycling never finds the fill ring full.
const FRAMES: u32 = 2048;
const RING: u32 = 2048;
const BATCH: u32 = 64;

control::counters! {
    /// Counters of the capture side.
    #[derive(Copy)]
    struct Capture {
        /// Frames taken from the RX rings.
        counter captured,
        /// Response headers handed to the channel server.
        counter headers,
        /// Frames that are not a --target's TCP (a port the XDP map selected for another address).
        counter not_target,
        /// Frames whose headers are broken (dropped).
        counter malformed,
        /// --local: extra header messages made by cutting a GSO super-segment longer than 64 KiB
        /// (BIG TCP) into whole segments.
        counter gso_split,
    }
}

control::counters! {
    /// Every counter of xdpcopy-intercept: the stats line, the summary, the JSON and Prometheus
    /// are all generated from this declaration.
    struct Totals {
        /// The capture side.
        group capture: Capture,
        /// The channel server: copiers, routes, the delay table.
        group server: ServerStats,
        /// The XDP program (assist server).
        prefixed xdp: Option<XdpCounters>,
        /// The egress program (--local).
        prefixed egress: Option<EgressCounters>,
    }
}

struct Queue {
    port: Port,
}

impl Queue {
    fn open(ifname: &str, queue: u32) -> Result<Self> {
        let port = Port::open(&PortConfig::rx_only(ifname, queue, FRAMES, RING))?;
        Ok(Self { port })
    }

    /// Takes one burst; each response becomes a header message for the server. Frames go back to
    /// the fill ring at once (the header is copied out).
    fn burst(&mut self, now: Instant, targets: &[SocketAddr], server: &mut ChannelServer, c: &mut Capture) -> u32 {
        let port = &mut self.port;
        let n = port.rx_acquire(BATCH);
        if n == 0 {
            return 0;
        }
        while let Some(rx) = port.rx_next() {
            c.captured += 1;
            match rx {
                Ok(rx) => {
                    capture(port.umem().data(&rx), now, targets, server, c);
                    port.recycle(rx.frame);
                }
                Err(bad) => {
                    c.malformed += 1;
                    if let Some(frame) = bad.frame {
                        port.recycle(frame);
                    }
                }
            }
        }
        port.rx_release();
        // The headers are copied out: every chunk of the burst goes straight back to the kernel
        // (FRAMES == fill ring size, so it always has room).
        let _ = port.refill();
        n
    }
}

/// Turns one captured frame into a header message for the server, or counts why not.
fn capture(frame: &[u8], now: Instant, targets: &[SocketAddr], server: &mut ChannelServer, c: &mut Capture) {
    match wire::parse::parse(frame) {
        Ok(Some(p)) => {
            let from = SocketAddr::new(p.src_ip, p.src_port);
            let any = SocketAddr::new(
                if p.src_ip.is_ipv4() { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u8; 16]) },
                p.src_port,
            );
            if !targets.contains(&from) && !targets.contains(&any) {
                c.not_target += 1;
                return;
            }
            // IPv4 or IPv6 (its extension headers dropped): 64 or 84 bytes.
            match HeaderMsg::from_packet(&frame[p.l3_offset..p.ip_end]) {
                Ok(msg) => deliver(now, msg, server, c),
                Err(_) => c.malformed += 1,
            }
        }
        Ok(None) => c.not_target += 1,
        Err(_) => c.malformed += 1,
    }
}

/// Refuses a capture interface that forwards, unless `--allow-forwarding`: the test server's
/// responses are addressed to real clients, and whatever the XDP program does not take (while
/// the intercept is not running, from a test server not in `--target`) would be routed to them.
fn check_forwarding(args: &Args) -> Result<()> {
    let on = netdev::forwarding(&args.input);
    if on.is_empty() {
        return Ok(());
    }
    let settings = on.iter().map(|k| format!("{k} = 1")).collect::<Vec<_>>().join(", ");
    if !args.allow_forwarding {
        anyhow::bail!(
            "{} forwards ({settings}): test responses it does not capture (any, once the intercept stops) would be \
             routed on to the real clients. Turn forwarding off on this assist server (sysctl -w \
             net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0), or pass --allow-forwarding if it must route",
            args.input
        );
    }
    eprintln!(
        "xdpcopy-intercept: warning: {} forwards ({settings}) and --allow-forwarding is given: test responses \
         the intercept does not capture are routed on to the real clients",
        args.input
    );
    Ok(())
}

/// Hands one header message to the channel server.
fn deliver(now: Instant, msg: HeaderMsg, server: &mut ChannelServer, c: &mut Capture) {
    c.headers += 1;
    if msg.is_fin() || msg.is_rst() {
        server.route_fin_rst(now, RouteKey::of_response(&msg));
    }
    server.deliver(now, msg);
}

/// Where the test server's responses come from.
enum Source {
    /// Assist server: routed here, redirected into AF_XDP sockets by the XDP program.
    Xsk { program: Program, queues: Vec<Queue>, attachment: Option<Attachment> },
    /// `--local`: dropped at the test server's egress, their headers through a ring buffer.
    Egress { program: EgressProgram, ring: HeaderRing, attachment: Option<EgressAttachment> },
}

impl Source {
    /// Loads the XDP program, opens a socket per queue (watched by the server's epoll), attaches.
    fn assist(args: &Args, server: &mut ChannelServer) -> Result<(Self, String)> {
        let queues = match args.queues {
            Some(q) => q,
            None => netdev::queues(&args.input, "rx")?.max(1),
        };
        let program = Program::load().context("loading the XDP program (run as root)")?;
        for t in &args.targets {
            program.select_source(*t)?;
        }
        let mut qs = Vec::new();
        for q in 0..queues {
            let queue = Queue::open(&args.input, q)?;
            program.set_socket(q, queue.port.fd())?;
            server.watch_readable(queue.port.fd().as_raw_fd()).context("watching the AF_XDP socket")?;
            qs.push(queue);
        }
        let mode = match args.xdp_mode {
            ModeArg::Auto => XdpMode::Auto,
            ModeArg::Native => XdpMode::Native,
            ModeArg::Generic => XdpMode::Generic,
        };
        let attachment = program.attach(Entry::Redirect, &args.input, mode)?;
        let what = format!("on {} (queues 0..{queues}, XDP {} mode)", args.input, attachment.mode);
        Ok((Self::Xsk { program, queues: qs, attachment: Some(attachment) }, what))
    }

    /// Loads the egress program (targets, allowlist, channel port), maps its ring buffer (watched
    /// by the server's epoll), attaches it to the interface's egress.
    fn local(args: &Args, server: &mut ChannelServer) -> Result<(Self, String)> {
        let channel_port = server.local_addr().port();
        if let Some(t) = args.targets.iter().find(|t| t.port() == channel_port) {
            anyhow::bail!(
                "--target {t} uses the channel port {channel_port}: the intercept's own connections could not be told from the answers (choose another -p)"
            );
        }
        let link = link_layer(&args.input)?;
        let program = EgressProgram::load(args.ring_kib * 1024)
            .context("loading the egress program (run as root; kernel ≥ 5.8)")?;
        program.configure(channel_port, link)?;
        for t in &args.targets {
            program.select_target(*t)?;
        }
        for &(net, len) in &args.pass_to {
            program.pass_to(net, len)?;
        }
        let ring = HeaderRing::new(&program, BATCH as usize).context("mapping the ring buffer")?;
        server.watch_readable(ring.fd().as_raw_fd()).context("watching the ring buffer")?;
        let how = match args.egress_attach {
            AttachArg::Auto => EgressAttach::Auto,
            AttachArg::Tcx => EgressAttach::Tcx,
            AttachArg::Tc => EgressAttach::Tc,
        };
        let attachment = program.attach(&args.input, how)?;
        if let Some(id) = attachment.stale_removed {
            eprintln!(
                "xdpcopy-intercept: removed a stale egress filter on {} (program id {id}) left by an intercept that did not exit cleanly",
                args.input
            );
        }
        let allow: Vec<String> = args.pass_to.iter().map(|(n, l)| format!("{n}/{l}")).collect();
        let what = format!(
            "at {} egress ({}), passing answers to {}",
            args.input,
            attachment.kind(),
            if allow.is_empty() { "nobody".to_owned() } else { allow.join(", ") }
        );
        Ok((Self::Egress { program, ring, attachment: Some(attachment) }, what))
    }

    /// Takes one burst of responses and hands their headers to the server; returns how many
    /// frames or records it took.
    fn burst(&mut self, now: Instant, targets: &[SocketAddr], server: &mut ChannelServer, c: &mut Capture) -> u32 {
        match self {
            Self::Xsk { queues, .. } => queues.iter_mut().map(|q| q.burst(now, targets, server, c)).sum(),
            Self::Egress { ring, .. } => {
                let n = ring.consume(|rec| {
                    c.captured += 1;
                    let mut made = 0u64;
                    match local::headers_of(&rec, |msg| {
                        made += 1;
                        deliver(now, msg, server, c);
                    }) {
                        Ok(_) => c.gso_split += made.saturating_sub(1),
                        Err(_) => c.malformed += 1,
                    }
                });
                n as u32
            }
        }
    }

    /// Detaches the program: captured traffic flows normally again.
    fn detach(&mut self) {
        match self {
            Self::Xsk { attachment, .. } => drop(attachment.take()),
            Self::Egress { attachment, .. } => drop(attachment.take()),
        }
    }

    fn counters(&self) -> (Option<XdpCounters>, Option<EgressCounters>) {
        match self {
            Self::Xsk { program, .. } => (Some(program.counters()), None),
            Self::Egress { program, .. } => (None, Some(program.counters())),
        }
    }
}

/// The link layer of `ifname` (`/sys/class/net/IFACE/type`: an ARPHRD_* number).
fn link_layer(ifname: &str) -> Result<LinkLayer> {
    let path = format!("/sys/class/net/{ifname}/type");
    let ty = std::fs::read_to_string(&path)
        .with_context(|| format!("interface {ifname} not found ({path}); list interfaces with `ip link`"))?;
    match ty.trim() {
        // ARPHRD_ETHER, ARPHRD_LOOPBACK (an all-zero Ethernet header).
        "1" | "772" => Ok(LinkLayer::Ethernet),
        // ARPHRD_NONE: tun, wireguard.
        "65534" => Ok(LinkLayer::RawIp),
        other => anyhow::bail!("--local on {ifname}: link type {other} is neither Ethernet nor raw IP"),
    }
}

fn run(args: Args) -> Result<()> {
    check_forwarding(&args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let framing = match args.framing {
        FramingArg::Combined => Framing::Combined,
        FramingArg::Bare => Framing::Bare,
    };
    let cfg = server_config(&args, framing);
    let listen = SocketAddr::new(args.bind, args.port);
    let mut server = ChannelServer::bind_with(listen, cfg).with_context(|| format!("listening on {listen}"))?;
    if args.allow_copier.is_empty() {
        eprintln!(
            "xdpcopy-intercept: accepting copiers from any address on {} (restrict with --allow-copier CIDR)",
            server.local_addr()
        );
    } else {
        let allowed: Vec<String> = args.allow_copier.iter().map(Cidr::to_string).collect();
        eprintln!("xdpcopy-intercept: accepting copiers from {} only", allowed.join(", "));
    }

    let (mut source, what) =
        if args.local { Source::local(&args, &mut server)? } else { Source::assist(&args, &mut server)? };
    let targets: Vec<String> = args.targets.iter().map(|t| t.to_string()).collect();
    let protocols = if args.protocol >= 7 { "protocol 6, and 7 for xdpcopy copiers" } else { "protocol 6 only" };
    eprintln!(
        "xdpcopy-intercept: capturing responses from {} {what}, channel on {} ({protocols}, {:?} framing)",
        targets.join(", "),
        server.local_addr(),
        framing,
    );

    let metrics = match args.metrics {
        Some(addr) => {
            let m = MetricsServer::start(addr).with_context(|| format!("--metrics {addr}: cannot listen"))?;
            eprintln!("xdpcopy-intercept: Prometheus metrics on http://{}/metrics", m.local_addr());
            Some(m)
        }
        None => None,
    };
    let mut next_metrics = Instant::now();
    let started = Instant::now();
    let mut cap = Capture::default();
    let mut idle = 0u32;
    let interval = (!args.quiet).then(|| Duration::from_secs(args.stats_interval.max(1)));
    let mut next_stats = Instant::now() + interval.unwrap_or(Duration::from_secs(3600));
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let got = source.burst(now, &args.targets, &mut server, &mut cap);
        if got > 0 {
            server.flush();
            server.poll(Duration::ZERO)?;
            idle = 0;
        } else {
            idle += 1;
            // Spin briefly, then block: the AF_XDP sockets (or the ring buffer) are registered
            // with the channel's epoll, so a captured response wakes the wait as a channel
            // socket does.
            let wait = if idle < 64 { Duration::ZERO } else { Duration::from_millis(100) };
            server.poll(wait)?;
        }
        if let Some(m) = &metrics {
            if now >= next_metrics {
                next_metrics = now + Duration::from_secs(1);
                m.update(
                    MetricsSnapshot::default().with_counters("xdpcopy_intercept", &totals(&cap, &server, &source)),
                );
            }
        }
        if let Some(iv) = interval {
            if now >= next_stats {
                next_stats += iv;
                print_stats(&totals(&cap, &server, &source));
            }
        }
    }
    source.detach();
    let all = totals(&cap, &server, &source);
    let counters = all.named();
    eprintln!(
        "xdpcopy-intercept: summary after {:.1} s (xdpcopy-intercept {}):",
        started.elapsed().as_secs_f64(),
        cli::VERSION
    );
    for (k, v) in &counters {
        eprintln!("  {k:<24} {v}");
    }
    if let Some(m) = &metrics {
        m.update(MetricsSnapshot::default().with_counters("xdpcopy_intercept", &all));
    }
    if let Some(path) = &args.summary_json {
        let meta = serde_json::json!({
            "program": "xdpcopy-intercept",
            "version": env!("CARGO_PKG_VERSION"),
            "git_commit": cli::GIT_COMMIT,
            "argv": std::env::args().collect::<Vec<_>>(),
            "input": args.input,
            "mode": if args.local { "local" } else { "assist" },
            "targets": targets,
            "channel": server.local_addr().to_string(),
        });
        let empty = LatencyExport::new(None, meta.clone())?;
        write_summary_json(path, &counters, &empty, meta)
            .with_context(|| format!("--summary-json {}", path.display()))?;
    }
    Ok(())
}

/// The channel server's configuration from the options.
fn server_config(args: &Args, framing: Framing) -> ServerConfig {
    ServerConfig {
        framing,
        route_idle_ttl: Duration::from_secs(args.route_ttl),
        delay_ttl: Duration::from_secs(args.delay_ttl),
        allow: args.allow_copier.clone(),
        max_conns_per_peer: args.max_conns_per_copier as usize,
        max_routes_per_conn: args.max_routes_per_conn as usize,
        idle_timeout: Duration::from_secs(args.copier_idle_timeout),
        max_version: args.protocol,
        ..ServerConfig::default()
    }
}

fn totals(c: &Capture, server: &ChannelServer, source: &Source) -> Totals {
    let (xdp, egress) = source.counters();
    Totals { capture: *c, server: server.stats(), xdp, egress }
}

fn print_stats(t: &Totals) {
    let (c, s) = (&t.capture, &t.server);
    let passed = match (&t.xdp, &t.egress) {
        (Some(x), _) => format!("xdp passed {}", x.passed),
        (None, Some(e)) => format!(
            "egress passed {} (allowlist {}) ring_full {}",
            e.passed.total(),
            e.passed[EgressPass::Allowlist],
            e.dropped[EgressDrop::RingFull]
        ),
        (None, None) => String::new(),
    };
    eprintln!(
        "xdpcopy-intercept: captured {} headers {} | copiers {} client_add {} routes {} | delivered {} delayed {} unrouted {} | {passed}",
        c.captured, c.headers, s.copiers_open, s.client_add, s.routes_active, s.delivered, s.delayed, s.unrouted
    );
}

fn main() -> ExitCode {
    let args: Args = cli::parse(cli::INTERCEPT_HINTS);
    // Checked before anything is touched (a usage error).
    let checked = match &args.summary_json {
        Some(p) => cli::check_output_file("--summary-json", p),
        None => Ok(()),
    };
    if let Err(e) = checked {
        eprintln!("xdpcopy-intercept: error: {e}\n\nFor more information, try '--help'.");
        return ExitCode::from(exit::USAGE);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpcopy-intercept: error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["xdpcopy-intercept", "-i", "a0", "--target", "10.0.0.2:8080"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn admission_defaults_are_the_servers() {
        let got = server_config(&parse(&[]).unwrap(), Framing::Combined);
        assert_eq!(got, ServerConfig::default(), "the option defaults must match ServerConfig::default()");
    }

    #[test]
    fn admission_options_reach_the_server() {
        let args = parse(&[
            "--allow-copier",
            "10.201.4.0/24",
            "--allow-copier",
            "192.0.2.7",
            "--max-conns-per-copier",
            "4",
            "--max-routes-per-conn",
            "100",
            "--copier-idle-timeout",
            "0",
        ])
        .unwrap();
        let cfg = server_config(&args, Framing::Combined);
        let allow: Vec<String> = cfg.allow.iter().map(Cidr::to_string).collect();
        assert_eq!(allow, ["10.201.4.0/24", "192.0.2.7/32"]);
        assert_eq!((cfg.max_conns_per_peer, cfg.max_routes_per_conn), (4, 100));
        assert!(cfg.idle_timeout.is_zero());
        assert!(cfg.allows("10.201.4.1".parse().unwrap()) && !cfg.allows("10.201.5.1".parse().unwrap()));

        let e = parse(&["--allow-copier", "10.0.0.0/40"]).unwrap_err().to_string();
        assert!(e.contains("ADDR/LEN"), "{e}");
        assert!(parse(&["--max-conns-per-copier", "0"]).is_err());
    }
}
