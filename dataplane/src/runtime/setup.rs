//! Set-up: everything resolved and created before the first frame is captured — the output
//! link and the routes to each target, the channel to the intercepts, the XDP program (live
//! capture only), and one port and worker per queue (offline: a port whose RX side the feed
//! fills, and its injector). Nothing here runs once the copier is copying.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{atomic::AtomicBool, Arc},
};

use anyhow::{bail, Context, Result};
use control::{
    channel::ChannelClient,
    copier::{Control, WorkerLink},
    latency::RecorderExchange,
};

use crate::{
    bpf::{self, Program},
    config::{Config, Mode, SessionOptions},
    netdev,
    pcap_out::PcapOut,
    production::ProductionTable,
    rewrite::Rewrite,
    sample::Sampler,
    session,
    stats::Published,
    tuples::Tuples,
    worker::{self, Route, Stateless, Worker, WorkerLatency},
    xsk::{Doorbell, Injector, Port, PortConfig, StatsHandle, TxSide},
};

/// Frame size of the UMEM chunks.
pub(super) const FRAME_SIZE: u32 = 4096;
/// Frames a session-mode worker keeps out of the fill ring for the frames its engine builds, at
/// most: the TX ring and the kernel hold no more than that in flight (copy mode sends inside
/// `sendto`, at most a few hundred a round). The rest of the UMEM rides out the worker's stalls
/// on the fill ring.
const BUILD_RESERVE: u32 = 2048;

/// The frames of `frames` a session-mode worker keeps for building: half, up to
/// [`BUILD_RESERVE`].
fn build_reserve(frames: u32) -> u32 {
    (frames / 2).min(BUILD_RESERVE)
}

/// Entries of each worker ⇄ control queue.
const LINK_CAPACITY: usize = 16_384;

/// The output link and what each `-x` entry resolves to.
pub(super) struct Links {
    /// The output interface's MTU.
    pub mtu: u32,
    /// Stateless mode: each transfer's match and rewrite.
    pub routes: Vec<Route>,
    /// Session mode: each transfer's target, in `-x` order.
    pub targets: Vec<session::Target>,
    /// `(online address, online port)` of each transfer, in `-x` order.
    pub matches: Vec<(Option<IpAddr>, u16)>,
}

impl Links {
    /// Reads the output interface and resolves every target's next hop.
    ///
    /// # Errors
    /// A missing interface, too few TX queues for the workers, or an unresolvable next hop.
    pub fn resolve(config: &Config) -> Result<Self> {
        let src_mac = netdev::mac(&config.output)?;
        let mtu = netdev::mtu(&config.output)?;
        let tx_queues = netdev::queues(&config.output, "tx")?;
        if (config.offline.is_some() || config.input != config.output) && tx_queues < config.queues {
            bail!(
                "--output {} has {tx_queues} TX queue(s) but {} workers need one each; use --queues {tx_queues} or give \
                 the interface more queues (ethtool -L / veth numtxqueues)",
                config.output,
                config.queues
            );
        }
        let session = matches!(config.mode, Mode::Session(_));
        let mut links = Links { mtu, routes: Vec::new(), targets: Vec::new(), matches: Vec::new() };
        for t in &config.transfers {
            let dst_mac = match t.next_hop_mac {
                Some(m) => m,
                None => netdev::resolve_next_hop(t.target_ip, &config.output)?,
            };
            eprintln!("xdpcopy: transfer {t} -> next hop {dst_mac} via {}", config.output);
            links.routes.push(Route {
                online_ip: t.online_ip,
                online_port: t.online_port,
                rewrite: Rewrite { src_mac, dst_mac, dst_ip: t.target_ip, dst_port: t.target_port, src_ip: None },
            });
            links.matches.push((t.online_ip, t.online_port));
            if session {
                links.targets.push(session::Target {
                    ip: t.target_ip,
                    port: t.target_port,
                    src_mac: src_mac.0,
                    dst_mac: dst_mac.0,
                });
            }
        }
        Ok(links)
    }
}

/// Session mode: the control thread's state and each worker's end of its link.
pub(super) struct Channel {
    /// The control thread (run by [`super::threads`]).
    pub control: Control,
    /// One link per worker.
    pub links: Vec<Arc<WorkerLink>>,
    /// One doorbell per worker: the control thread rings it when a header arrives while the
    /// worker sleeps.
    pub doorbells: Vec<Arc<Doorbell>>,
    /// Wakes the control thread after a worker queued a registration.
    pub wake_control: Arc<dyn Fn() + Send + Sync>,
}

impl Channel {
    /// Creates the channel client (it connects from the control thread) and the links.
    ///
    /// # Errors
    /// When the client's event loop or an eventfd cannot be created.
    pub fn new(opts: &SessionOptions, queues: u32) -> Result<Self> {
        let mut client = ChannelClient::new(opts.intercepts.clone(), opts.conns_per_intercept, opts.framing)?;
        client.set_offer_extension(opts.offer_extension);
        // The registry holds the live sessions of every worker's table; twice that leaves room
        // for CLIENT_DELs still queued. A session lost track of (its CLIENT_DEL dropped) is
        // forgotten after the longest a session can live idle, and then some.
        let s = &opts.session;
        let max = s.max_sessions.saturating_mul(queues as usize).saturating_mul(2);
        let ttl = (s.session_timeout.max(s.keepalive_timeout) + std::time::Duration::from_secs(120))
            .max(control::channel::client::DEFAULT_SESSION_TTL);
        client.set_session_limits(max, ttl);
        // IPv6 sessions need protocol 7: an intercept that speaks 6 only is named once.
        client.set_ipv6_expected(opts.ipv6_targets);
        let waker = client.waker().context("creating the control thread's waker")?;
        let wake_control: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            // A failed wake-up only delays the registration to the control thread's next round.
            let _ = waker.wake();
        });
        let mut links = Vec::new();
        let mut doorbells = Vec::new();
        for _ in 0..queues {
            let bell = Arc::new(Doorbell::new()?);
            let ring = bell.clone();
            links.push(Arc::new(WorkerLink::new(LINK_CAPACITY, move || ring.ring())));
            doorbells.push(bell);
        }
        let list: Vec<String> = opts.intercepts.iter().map(|a| a.to_string()).collect();
        eprintln!(
            "xdpcopy: session replay through intercept(s) {} ({} connection(s) each, {:?} framing)",
            list.join(", "),
            opts.conns_per_intercept,
            opts.framing
        );
        Ok(Channel { control: Control::new(client, links.clone()), links, doorbells, wake_control })
    }
}

/// Loads the XDP program and selects the online ports (and, for production latency, the online
/// servers' responses).
///
/// # Errors
/// Loading fails (not root, no BPF) or a map update fails.
pub(super) fn program(config: &Config) -> Result<Program> {
    let program = Program::load().context("loading the XDP program (run as root; kernel with BPF and AF_XDP)")?;
    for t in &config.transfers {
        program.select_port(t.online_port, bpf::port_flags::DST)?;
    }
    if matches!(&config.mode, Mode::Session(o) if o.production_latency) {
        // The online server's responses (its egress mirrored too) reach the workers as well.
        for t in &config.transfers {
            match t.online_ip {
                Some(ip) => program.select_source(SocketAddr::new(ip, t.online_port))?,
                // Any online address of either family with that port.
                None => {
                    program.select_source(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), t.online_port))?;
                    program.select_source(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), t.online_port))?;
                }
            }
        }
    }
    Ok(program)
}

/// What the workers feed besides the TX ring: latency recorders, `--pcap-out`, the production
/// latency table.
pub(super) struct Taps {
    /// The workers' interval recorders circulate through it (latency on).
    pub exchange: Option<Arc<RecorderExchange>>,
    /// `--pcap-out`.
    pub pcap_out: Option<PcapOut>,
    /// `--production-latency`: requests and the online server's responses, paired across workers.
    pub production: Option<Arc<ProductionTable>>,
}

impl Taps {
    /// Creates what the configuration asks for (`--pcap-out-responses` frames get the first
    /// target's link addresses).
    ///
    /// # Errors
    /// When the `--pcap-out` file cannot be created.
    pub fn new(config: &Config, links: &Links) -> Result<Self> {
        let queues = config.queues as usize;
        let responses = match (&config.mode, links.targets.first()) {
            (Mode::Session(_), Some(t)) if config.observe.pcap_out_responses => Some((t.src_mac, t.dst_mac)),
            _ => None,
        };
        Ok(Taps {
            exchange: config.observe.latency.then(|| Arc::new(RecorderExchange::new(queues, 2 * queues))),
            pcap_out: config
                .observe
                .pcap_out
                .as_deref()
                .map(|p| PcapOut::create(p, config.observe.pcap_out_max_bytes, responses))
                .transpose()?,
            production: match &config.mode {
                Mode::Session(o) if o.production_latency => Some(Arc::new(ProductionTable::new(16))),
                _ => None,
            },
        })
    }
}

/// The workers, ready to run, and what the stats thread reads of their sockets.
pub(super) struct Workers {
    /// One per queue.
    pub workers: Vec<Worker>,
    /// Each worker's published counters, in queue order.
    pub published: Vec<Arc<Published>>,
    /// Handles on every socket's kernel statistics.
    pub sockets: Vec<StatsHandle>,
    /// Whether the kernel bound the sockets in zero-copy mode.
    pub zero_copy: bool,
    /// Offline: each worker's RX side, for the feed (worker `i`'s at index `i`).
    pub injectors: Vec<Injector>,
}

/// Opens one port per queue and creates its worker. Live: the UMEM, an RX socket on the capture
/// interface's queue (registered with the program; nothing is captured until it is attached)
/// and TX on the same socket or on the output interface sharing the UMEM. Offline (`program` is
/// `None`): an in-memory RX side whose injector goes to the feed, and a TX socket on the output
/// interface's queue.
///
/// # Errors
/// Socket set-up failures, naming the interface and queue.
pub(super) fn workers(
    config: &Config,
    links: &Links,
    program: Option<&Program>,
    channel: Option<&Channel>,
    taps: &Taps,
    stop: &Arc<AtomicBool>,
) -> Result<Workers> {
    let sampler = Sampler::new(config.sample_percent, config.ramp);
    let stateless = Stateless::new(links.routes.clone(), config.checksum, links.mtu as usize + 14, sampler.clone());
    let mut out = Workers {
        workers: Vec::new(),
        published: Vec::new(),
        sockets: Vec::new(),
        zero_copy: false,
        injectors: Vec::new(),
    };
    for q in 0..config.queues {
        let mut cfg = PortConfig {
            ifname: config.input.clone(),
            queue: q,
            frames: config.frames,
            frame_size: FRAME_SIZE,
            ring_size: config.ring_size,
            rx: true,
            tx: if config.input == config.output {
                TxSide::SameSocket
            } else {
                TxSide::SharedUmem(config.output.clone())
            },
            fill_reserve: if channel.is_some() { build_reserve(config.frames) } else { 0 },
            copy_mode: config.copy_mode,
        };
        let port = match program {
            Some(program) => {
                let port = Port::open(&cfg)?;
                program.set_socket(q, port.fd())?;
                port
            }
            None => {
                cfg.ifname = config.output.clone();
                cfg.tx = TxSide::SameSocket;
                let (port, injector) = Port::open_fed(&cfg)?;
                out.injectors.push(injector);
                port
            }
        };
        out.zero_copy |= port.zero_copy();
        out.sockets.extend(port.stats_handles()?);
        let mode = match (&config.mode, channel) {
            (Mode::Session(opts), Some(ch)) => {
                let mut engine = opts.session.clone();
                engine.mtu = engine.mtu.min(links.mtu as u16);
                worker::Mode::Session(Box::new(worker::Session {
                    engine: session::Engine::new(engine, links.targets.clone()),
                    matches: links.matches.clone(),
                    link: ch.links[q as usize].clone(),
                    doorbell: ch.doorbells[q as usize].clone(),
                    wake_control: ch.wake_control.clone(),
                    inline: None,
                    production: taps.production.clone(),
                    sampler: sampler.clone(),
                    tuples: Tuples::new(opts.tuples.clone(), q as u16, config.queues as u16),
                    next_sweep: std::time::Instant::now(),
                }))
            }
            _ => worker::Mode::Stateless(stateless.clone()),
        };
        let latency = taps.exchange.as_ref().map(|x| WorkerLatency::new(x.clone(), q as usize));
        let published = Arc::new(Published::default());
        out.published.push(published.clone());
        let worker = Worker::new(q, port, mode, published, stop.clone(), latency);
        out.workers
            .push(worker.with_pcap(taps.pcap_out.as_ref().map(|p| p.tap.clone())).with_busy_poll(config.busy_poll));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LIVE_FRAMES, LIVE_RING};

    #[test]
    fn the_build_reserve_leaves_the_rest_of_the_umem_to_the_fill_ring() {
        // Live defaults: 6144 frames ride out a stall (three times the first defaults' 2048).
        assert_eq!(LIVE_FRAMES - build_reserve(LIVE_FRAMES), 6144);
        assert!(LIVE_RING >= LIVE_FRAMES - build_reserve(LIVE_FRAMES), "the fill ring takes them all");
        // More frames all go to the fill ring; few frames keep half for building, as before.
        assert_eq!(build_reserve(65_536), BUILD_RESERVE);
        assert_eq!(build_reserve(1024), 512);
    }
}
