//! Start-up and the stats loop of the stateless copier: attach the XDP program, open one
//! AF_XDP port per queue, pin one worker per queue, print a stats line every interval and
//! a summary when told to stop.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};

use control::{
    channel::ChannelClient,
    copier::{Control, ControlStats, WorkerLink},
    latency::{
        write_summary_json, IntervalTotals, LatencyExport, Metric, MetricsServer, MetricsSnapshot, RecorderExchange,
    },
};

use crate::{
    bpf::{self, Counter, Entry, Program},
    config::{Config, Mode},
    feed::Feed,
    netdev,
    pcap_out::PcapOut,
    production::ProductionTable,
    rewrite::{ChecksumMode, Rewrite},
    sample::Sampler,
    session,
    stats::{Counters, Drop, Published, PublishedArray},
    tuples::Tuples,
    wire,
    worker::{self, Route, Stateless, Worker, WorkerLatency},
    xsk::{self, Doorbell, Port, PortConfig, StatsHandle, TxSide},
};

/// Frame size of the UMEM chunks.
const FRAME_SIZE: u32 = 4096;
/// Entries of each worker ⇄ control queue.
const LINK_CAPACITY: usize = 16_384;

/// The final numbers of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Worker counters summed over workers.
    pub workers: Counters,
    /// XDP program counters, in `Counter::ALL` order.
    pub xdp: Vec<(Counter, u64)>,
    /// Kernel socket statistics summed over sockets.
    pub xsk: xsk::Statistics,
    /// Wall time.
    pub elapsed: Duration,
    /// Session engine counters summed over workers (session mode).
    pub session: Vec<(String, u64)>,
    /// Control thread and channel counters (session mode).
    pub control: Option<ControlStats>,
    /// Per latency metric with samples: (name, samples, p50 ns, p99 ns).
    pub latency: Vec<(String, u64, u64, u64)>,
    /// Optional parts' counters: the offline feed, --pcap-out.
    pub extra: Vec<(String, u64)>,
}

impl Summary {
    /// Every counter as `(name, value)`, the form the final report and the tests read.
    pub fn named(&self) -> Vec<(String, u64)> {
        let w = &self.workers;
        let mut v: Vec<(String, u64)> = vec![
            ("rx_frames".into(), w.rx_frames),
            ("rx_bytes".into(), w.rx_bytes),
            ("tx_frames".into(), w.tx_frames),
            ("tx_bytes".into(), w.tx_bytes),
            ("tx_completed".into(), w.tx_completed),
            ("tx_kick_errors".into(), w.tx_kick_errors),
            ("rx_kick_errors".into(), w.rx_kick_errors),
            ("dropped".into(), w.dropped()),
        ];
        v.extend(Drop::ALL.iter().map(|d| (format!("drop_{}", d.name()), w.drops[*d as usize])));
        v.extend(wire::Error::ALL.iter().map(|e| (format!("malformed_{}", e.name()), w.malformed[*e as usize])));
        v.extend(self.xdp.iter().map(|(c, n)| (format!("xdp_{}", counter_name(*c)), *n)));
        let x = &self.xsk;
        v.extend(self.session.iter().cloned());
        v.extend(self.extra.iter().cloned());
        for (name, n, p50, p99) in &self.latency {
            v.push((format!("latency_{name}_samples"), *n));
            v.push((format!("latency_{name}_p50_us"), p50 / 1000));
            v.push((format!("latency_{name}_p99_us"), p99 / 1000));
        }
        v.push(("bad_headers".into(), w.bad_headers));
        v.push(("no_free_frame".into(), w.no_free_frame));
        v.push(("tuple_exhausted".into(), w.tuple_exhausted));
        if let Some(c) = &self.control {
            v.extend([
                ("channel_registered".into(), c.registered),
                ("channel_register_failed".into(), c.register_failed),
                ("channel_routed".into(), c.routed),
                ("channel_unowned".into(), c.unowned),
                ("channel_headers_dropped".into(), c.headers_dropped),
                ("channel_adds_dropped".into(), c.adds_dropped),
                ("channel_connects".into(), c.channel.connects),
                ("channel_reconnects".into(), c.channel.reconnects),
                ("channel_disconnects".into(), c.channel.disconnects),
                ("channel_headers".into(), c.channel.headers),
                ("channel_protocol_errors".into(), c.channel.protocol_errors),
            ]);
        }
        v.extend([
            ("xsk_rx_dropped".into(), x.rx_dropped),
            ("xsk_rx_ring_full".into(), x.rx_ring_full),
            ("xsk_fill_empty".into(), x.rx_fill_ring_empty),
            ("xsk_rx_invalid".into(), x.rx_invalid_descs),
            ("xsk_tx_invalid".into(), x.tx_invalid_descs),
            ("xsk_tx_ring_empty".into(), x.tx_ring_empty),
        ]);
        v
    }
}

fn counter_name(c: Counter) -> &'static str {
    match c {
        Counter::Seen => "seen",
        Counter::Redirected => "redirected",
        Counter::Malformed => "malformed",
        Counter::Passed => "passed",
        Counter::RedirectFailed => "redirect_failed",
        Counter::Dropped => "dropped",
    }
}

fn add_stats(a: &mut xsk::Statistics, b: xsk::Statistics) {
    a.rx_dropped += b.rx_dropped;
    a.rx_invalid_descs += b.rx_invalid_descs;
    a.tx_invalid_descs += b.tx_invalid_descs;
    a.rx_ring_full += b.rx_ring_full;
    a.rx_fill_ring_empty += b.rx_fill_ring_empty;
    a.tx_ring_empty += b.tx_ring_empty;
}

fn rate(n: u64, secs: f64) -> String {
    let r = n as f64 / secs.max(1e-9);
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// Runs the copier (stateless or session replay) until `stop` is set. Prints the start-up report and (unless
/// `config.stats_interval` is `None`) a stats line per interval on stderr.
///
/// # Errors
/// Start-up failures (missing interface, XDP attach, socket setup, MAC resolution), each naming
/// what to check.
pub fn run(config: &Config, stop: Arc<AtomicBool>, mut feed: Option<&mut Feed>) -> Result<Summary> {
    let started = Instant::now();
    let src_mac = netdev::mac(&config.output)?;
    let mtu = netdev::mtu(&config.output)?;
    let tx_queues = netdev::queues(&config.output, "tx")?;
    if config.input != config.output && tx_queues < config.queues {
        bail!(
            "--output {} has {tx_queues} TX queue(s) but {} workers need one each; use --queues {tx_queues} or give the \
             interface more queues (ethtool -L / veth numtxqueues)",
            config.output,
            config.queues
        );
    }
    let mut routes = Vec::with_capacity(config.transfers.len());
    let mut targets = Vec::with_capacity(config.transfers.len());
    for t in &config.transfers {
        let dst_mac = match t.next_hop_mac {
            Some(m) => m,
            None => netdev::resolve_next_hop(t.target_ip, &config.output)?,
        };
        routes.push(Route {
            online_ip: t.online_ip,
            online_port: t.online_port,
            rewrite: Rewrite { src_mac, dst_mac, dst_ip: t.target_ip, dst_port: t.target_port, src_ip: None },
        });
        eprintln!("xdpcopy: transfer {t} -> next hop {dst_mac} via {}", config.output);
        if let (Mode::Session(_), IpAddr::V4(ip)) = (&config.mode, t.target_ip) {
            targets.push(session::Target { ip, port: t.target_port, src_mac: src_mac.0, dst_mac: dst_mac.0 });
        } else if let Mode::Session(_) = &config.mode {
            bail!("-x {t}: session replay is IPv4-only (the channel protocol carries IPv4 headers); use --stateless for IPv6");
        }
    }
    let matches: Vec<(Option<IpAddr>, u16)> = config.transfers.iter().map(|t| (t.online_ip, t.online_port)).collect();

    // Session mode: the channel client and one link per worker, run by the control thread.
    let mut control = None;
    let mut links = Vec::new();
    let mut doorbells = Vec::new();
    let mut wake_control: Option<Arc<dyn Fn() + Send + Sync>> = None;
    if let Mode::Session(opts) = &config.mode {
        let client = ChannelClient::new(opts.intercepts.clone(), opts.conns_per_intercept, opts.framing)?;
        let waker = client.waker().context("creating the control thread's waker")?;
        wake_control = Some(Arc::new(move || {
            let _ = waker.wake();
        }));
        for _ in 0..config.queues {
            let bell = Arc::new(Doorbell::new()?);
            let ring = bell.clone();
            links.push(Arc::new(WorkerLink::new(LINK_CAPACITY, move || ring.ring())));
            doorbells.push(bell);
        }
        control = Some(Control::new(client, links.clone()));
        let list: Vec<String> = opts.intercepts.iter().map(|a| a.to_string()).collect();
        eprintln!(
            "xdpcopy: session replay through intercept(s) {} ({} connection(s) each, {:?} framing)",
            list.join(", "),
            opts.conns_per_intercept,
            opts.framing
        );
    }

    let program = Program::load().context("loading the XDP program (run as root; kernel with BPF and AF_XDP)")?;
    for t in &config.transfers {
        program.select_port(t.online_port, bpf::port_flags::DST)?;
    }
    if matches!(&config.mode, Mode::Session(o) if o.production_latency) {
        // The online server's responses (its egress mirrored too) reach the workers as well.
        for t in &config.transfers {
            let ip = match t.online_ip {
                Some(IpAddr::V4(ip)) => ip,
                _ => std::net::Ipv4Addr::UNSPECIFIED,
            };
            program.select_source(std::net::SocketAddrV4::new(ip, t.online_port))?;
        }
    }

    let sampler = Sampler::new(config.sample_percent, config.ramp);
    let logic = Stateless::new(routes, config.checksum, mtu as usize + 14, sampler.clone());
    let exchange = config
        .observe
        .latency
        .then(|| Arc::new(RecorderExchange::new(config.queues as usize, 2 * config.queues as usize)));
    let mut session_published = Vec::new();
    let mut pcap_out = config.observe.pcap_out.as_deref().map(PcapOut::create).transpose()?;
    let production = match &config.mode {
        Mode::Session(o) if o.production_latency => Some(Arc::new(ProductionTable::new(16))),
        _ => None,
    };
    let mut workers = Vec::new();
    let mut handles: Vec<StatsHandle> = Vec::new();
    let mut zero_copy = false;
    for q in 0..config.queues {
        let port = Port::open(&PortConfig {
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
            // Session mode keeps half the UMEM out of the fill ring for the frames it builds.
            fill_reserve: if matches!(config.mode, Mode::Session(_)) { config.frames / 2 } else { 0 },
            copy_mode: config.copy_mode,
        })?;
        zero_copy |= port.zero_copy();
        program.set_socket(q, port.fd())?;
        handles.extend(port.stats_handles()?);
        let mode = match &config.mode {
            Mode::Stateless => worker::Mode::Stateless(logic.clone()),
            Mode::Session(opts) => {
                let mut engine_cfg = opts.engine.clone();
                engine_cfg.mtu = engine_cfg.mtu.min(mtu as u16);
                let published = Arc::new(PublishedArray::new(session::Counters::NAMES.len()));
                session_published.push(published.clone());
                worker::Mode::Session(Box::new(worker::Session {
                    engine: session::Engine::new(engine_cfg, targets.clone()),
                    matches: matches.clone(),
                    link: links[q as usize].clone(),
                    doorbell: doorbells[q as usize].clone(),
                    wake_control: wake_control.clone().expect("session mode has a control waker"),
                    published,
                    production: production.clone(),
                    sampler: sampler.clone(),
                    tuples: Tuples::new(opts.tuples.clone(), q as u16, config.queues as u16),
                    next_sweep: Instant::now(),
                }))
            }
        };
        let latency = exchange.as_ref().map(|x| WorkerLatency::new(x.clone(), q as usize));
        let worker = Worker::new(q, port, mode, Arc::new(Published::default()), stop.clone(), latency);
        workers.push(worker.with_pcap(pcap_out.as_ref().map(|p| p.tap.clone())));
    }
    // Attach last: from here on frames for the selected ports go to the sockets.
    let attachment = program.attach(Entry::Redirect, &config.input, config.xdp_mode)?;
    eprintln!(
        "xdpcopy: capturing on {} (queues 0..{}, XDP {} mode, AF_XDP {}), sending on {} (MTU {mtu}), {}, checksums {}",
        config.input,
        config.queues,
        attachment.mode,
        if zero_copy { "zero-copy" } else { "copy mode" },
        config.output,
        match config.mode {
            Mode::Stateless => "stateless",
            Mode::Session(_) => "session replay",
        },
        match config.checksum {
            ChecksumMode::Full => "full",
            ChecksumMode::Incremental => "incremental",
        },
    );

    let cores = config
        .cores
        .clone()
        .unwrap_or_else(|| core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect());
    let mut published = Vec::new();
    let mut joins = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        published.push(w.published());
        let core = cores.get(i % cores.len().max(1)).copied();
        let name = format!("xdpcopy-q{}", w.queue);
        joins.push(thread::Builder::new().name(name).spawn(move || {
            if let Some(id) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            w.run()
        })?);
    }

    let mut feed_done_at: Option<Instant> = None;
    let mut last_rx = (0u64, Instant::now());
    let control_stats = Arc::new(Mutex::new(ControlStats::default()));
    let control_join = match control {
        Some(mut c) => {
            let stop = stop.clone();
            let shared = control_stats.clone();
            Some(thread::Builder::new().name("xdpcopy-control".into()).spawn(move || -> Result<ControlStats> {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    c.run_once(Duration::from_millis(50))?;
                    if last.elapsed() >= Duration::from_millis(100) {
                        last = Instant::now();
                        *shared.lock().expect("stats lock") = c.stats();
                    }
                }
                Ok(c.stats())
            })?)
        }
        None => None,
    };
    // Offline: start writing the file into the capture veth now that the workers run — in
    // session mode once the channel is up, or the first sessions could not be registered.
    if let Some(f) = feed.as_deref_mut() {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !published.iter().all(|p| p.ready.load(Ordering::Acquire)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if control_join.is_some() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while control_stats.lock().expect("stats lock").connected == 0 && Instant::now() < deadline {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if control_stats.lock().expect("stats lock").connected == 0 {
                eprintln!("xdpcopy: warning: no intercept connected after 10 s; replaying anyway (sessions will fail)");
            }
        }
        let counters: Vec<Arc<Published>> = published.clone();
        let received = Box::new(move || counters.iter().map(|p| p.rx_live.load(Ordering::Relaxed)).sum::<u64>());
        // The feed thread runs on a core no worker is pinned to, when there is one.
        let used: Vec<usize> =
            (0..config.queues as usize).filter_map(|i| cores.get(i % cores.len().max(1)).copied()).collect();
        let spare =
            core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).find(|c| !used.contains(c));
        f.start(stop.clone(), received, spare)?;
        eprintln!("xdpcopy: replaying {}", config.input_label());
    }
    let session_sum = |published: &[Arc<PublishedArray>]| {
        let mut sum = vec![0u64; session::Counters::NAMES.len()];
        for p in published {
            p.add_into(&mut sum);
        }
        sum
    };

    let read_xsk = |handles: &[StatsHandle]| {
        let mut s = xsk::Statistics::default();
        for h in handles {
            if let Ok(x) = h.read() {
                add_stats(&mut s, x);
            }
        }
        s
    };
    // Latency: the interval recorders of the workers are merged here, the exports written, the
    // Prometheus snapshot refreshed — once a second, whatever the stats-line interval.
    let run_meta = run_meta(config, attachment.mode, zero_copy);
    let mut export = match &exchange {
        Some(_) => Some(LatencyExport::new(config.observe.latency_csv.clone(), run_meta.clone())?),
        None => None,
    };
    let metrics = match config.observe.metrics {
        Some(addr) => {
            let m = MetricsServer::start(addr).with_context(|| format!("--metrics {addr}: cannot listen"))?;
            eprintln!("xdpcopy: Prometheus metrics on http://{}/metrics", m.local_addr());
            Some(m)
        }
        None => None,
    };
    let mut last = Counters::default();
    let mut last_at = Instant::now();
    let tick = Duration::from_millis(100);
    let mut next = Instant::now() + config.stats_interval.unwrap_or(Duration::MAX / 4);
    let mut interval_start = SystemTime::now();
    let mut next_close = Instant::now() + Duration::from_secs(1);
    let mut last_close = Counters::default();
    let mut last_session = vec![0u64; session::Counters::NAMES.len()];
    let drain = |export: &mut Option<LatencyExport>, start: SystemTime| {
        if let (Some(x), Some(e)) = (&exchange, export.as_mut()) {
            let len = SystemTime::now().duration_since(start).unwrap_or_default();
            x.drain(|w, rec| {
                let _ = e.add_interval(w, rec, start, len);
            });
        }
    };
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(tick);
        if joins.iter().any(|j| j.is_finished()) {
            stop.store(true, Ordering::Relaxed);
            break;
        }
        drain(&mut export, interval_start);
        if let Some(f) = feed.as_deref() {
            // Offline: once the file is fed, stop when the replay has finished — every session
            // ended (session mode) or nothing new arrived for 500 ms (stateless) — or the tail
            // is over.
            let rx: u64 = published.iter().map(|p| p.snapshot().rx_frames).sum();
            if rx != last_rx.0 {
                last_rx = (rx, Instant::now());
            }
            if f.done() {
                let since = *feed_done_at.get_or_insert_with(Instant::now);
                let settled = last_rx.1.elapsed() > Duration::from_millis(500);
                let finished = if session_published.is_empty() {
                    settled
                } else {
                    let sum = session_sum(&session_published);
                    let active = session::Counters::NAMES.iter().position(|n| *n == "active").map_or(0, |i| sum[i]);
                    settled && active == 0
                };
                if finished || since.elapsed() > f.tail() {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        if Instant::now() >= next_close {
            next_close += Duration::from_secs(1);
            let mut now = Counters::default();
            for p in &published {
                now.add(&p.snapshot());
            }
            let sess = session_sum(&session_published);
            let get =
                |v: &[u64], name: &str| session::Counters::NAMES.iter().position(|n| *n == name).map_or(0, |i| v[i]);
            let end = SystemTime::now();
            if let Some(e) = export.as_mut() {
                let totals = IntervalTotals {
                    frames_in: now.rx_frames - last_close.rx_frames,
                    frames_out: now.tx_frames - last_close.tx_frames,
                    bytes_in: now.rx_bytes - last_close.rx_bytes,
                    bytes_out: now.tx_bytes - last_close.tx_bytes,
                    sessions_active: get(&sess, "active"),
                    sessions_new: get(&sess, "conns").saturating_sub(get(&last_session, "conns")),
                    requests: get(&sess, "sent_payload").saturating_sub(get(&last_session, "sent_payload")),
                    responses: get(&sess, "resp_payload").saturating_sub(get(&last_session, "resp_payload")),
                };
                let _ =
                    e.close_interval(interval_start, end.duration_since(interval_start).unwrap_or_default(), &totals);
            }
            interval_start = end;
            last_close = now;
            last_session = sess;
            if let Some(m) = &metrics {
                let partial = Summary {
                    workers: now,
                    xdp: Counter::ALL.iter().map(|c| (*c, program.counter(*c))).collect(),
                    xsk: read_xsk(&handles),
                    session: session::Counters::NAMES
                        .iter()
                        .map(|n| n.to_string())
                        .zip(last_session.iter().copied())
                        .collect(),
                    control: control_join.as_ref().map(|_| *control_stats.lock().expect("stats lock")),
                    elapsed: started.elapsed(),
                    latency: Vec::new(),
                    extra: Vec::new(),
                };
                m.update(metrics_snapshot(&partial, export.as_ref()));
            }
        }
        if let Some(interval) = config.stats_interval {
            if Instant::now() >= next {
                next += interval;
                let mut now = Counters::default();
                for p in &published {
                    now.add(&p.snapshot());
                }
                let secs = last_at.elapsed().as_secs_f64();
                last_at = Instant::now();
                let x = read_xsk(&handles);
                let mut line = format!(
                    "xdpcopy: rx {} ({} pps) tx {} ({} pps, {:.1} Mbit/s) dropped {}",
                    now.rx_frames,
                    rate(now.rx_frames - last.rx_frames, secs),
                    now.tx_frames,
                    rate(now.tx_frames - last.tx_frames, secs),
                    (now.tx_bytes - last.tx_bytes) as f64 * 8.0 / secs / 1e6,
                    now.dropped(),
                );
                let reasons: Vec<String> = Drop::ALL
                    .iter()
                    .filter(|d| now.drops[**d as usize] > 0)
                    .map(|d| format!("{} {}", d.name(), now.drops[*d as usize]))
                    .collect();
                if !reasons.is_empty() {
                    let _ = write!(line, " ({})", reasons.join(", "));
                }
                let _ = write!(
                    line,
                    " | xdp passed {} | xsk rx_dropped {} ring_full {} fill_empty {}",
                    program.counter(Counter::Passed),
                    x.rx_dropped,
                    x.rx_ring_full,
                    x.rx_fill_ring_empty
                );
                if let Some(e) = &export {
                    let p99: Vec<String> = Metric::ALL
                        .iter()
                        .filter_map(|m| e.p(*m, 0.99).map(|v| format!("{} {}", m.name(), human_ns(v))))
                        .collect();
                    if !p99.is_empty() {
                        let _ = write!(line, " | p99 {}", p99.join(", "));
                    }
                }
                if !session_published.is_empty() {
                    let sum = session_sum(&session_published);
                    let get =
                        |name: &str| session::Counters::NAMES.iter().position(|n| *n == name).map_or(0, |i| sum[i]);
                    let c = *control_stats.lock().expect("stats lock");
                    let _ = write!(
                        line,
                        "\nxdpcopy: sessions active {} released {} | conns {} resp {} | sent {} payload {} syn {} \
                         | retransmit {} fake_syn {} | channel up {} headers {} unowned {}",
                        get("active"),
                        get("released"),
                        get("conns"),
                        get("resp"),
                        get("sent"),
                        get("sent_payload"),
                        get("sent_syn"),
                        get("retransmit"),
                        get("fake_syn"),
                        c.connected,
                        c.channel.headers,
                        c.unowned,
                    );
                }
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{line}");
                last = now;
            }
        }
    }
    let mut summary = Summary::default();
    for j in joins {
        match j.join() {
            Ok(c) => summary.workers.add(&c),
            Err(_) => bail!("a worker thread panicked (see the message above)"),
        }
    }
    if let Some(p) = pcap_out.as_mut() {
        let (written, dropped) = p.finish()?;
        summary.extra.push(("pcap_out_written".into(), written));
        summary.extra.push(("pcap_out_dropped".into(), dropped));
    }
    if let Some(f) = feed {
        let st = f.finish()?;
        summary.extra.extend([
            ("feed_frames".into(), st.frames),
            ("feed_retries".into(), st.retries),
            ("feed_held".into(), st.held),
            ("feed_skipped".into(), st.skipped),
            ("feed_ms".into(), (st.seconds * 1000.0) as u64),
            ("feed_capture_ms".into(), (st.capture_seconds * 1000.0) as u64),
        ]);
    }
    if let Some(j) = control_join {
        match j.join() {
            Ok(Ok(c)) => summary.control = Some(c),
            Ok(Err(e)) => return Err(e.context("the control thread failed")),
            Err(_) => bail!("the control thread panicked (see the message above)"),
        }
    }
    if !session_published.is_empty() {
        let sum = session_sum(&session_published);
        summary.session = session::Counters::NAMES.iter().map(|n| n.to_string()).zip(sum).collect();
    }
    summary.xsk = read_xsk(&handles);
    summary.xdp = Counter::ALL.iter().map(|c| (*c, program.counter(*c))).collect();
    summary.elapsed = started.elapsed();
    drop(attachment);
    // The workers handed their last partial interval over when they stopped.
    drain(&mut export, interval_start);
    if let Some(e) = export.as_mut() {
        for f in e.finish().context("writing the latency exports")? {
            eprintln!("xdpcopy: wrote {}", f.display());
        }
        summary.latency = Metric::ALL
            .iter()
            .filter_map(|m| {
                let h = e.histogram(*m);
                (!h.is_empty())
                    .then(|| (m.name().to_owned(), h.len(), e.p(*m, 0.5).unwrap_or(0), e.p(*m, 0.99).unwrap_or(0)))
            })
            .collect();
    }
    if let Some(path) = &config.observe.summary_json {
        let empty = LatencyExport::new(None, run_meta.clone())?;
        write_summary_json(path, &summary.named(), export.as_ref().unwrap_or(&empty), run_meta)
            .with_context(|| format!("--summary-json {}", path.display()))?;
        eprintln!("xdpcopy: wrote {}", path.display());
    }
    if let Some(m) = &metrics {
        m.update(metrics_snapshot(&summary, export.as_ref()));
    }
    Ok(summary)
}

/// Formats nanoseconds for the stats line.
fn human_ns(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

/// The run's metadata for the exports (peers.md §5.6).
fn run_meta(config: &Config, mode: bpf::XdpMode, zero_copy: bool) -> serde_json::Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "xdpcopy_version": env!("CARGO_PKG_VERSION"),
        "kernel": kernel.trim(),
        "input": config.input,
        "output": config.output,
        "xdp_mode": mode.to_string(),
        "bind_mode": if zero_copy { "zero-copy" } else { "copy" },
        "need_wakeup": true,
        "queues": config.queues,
        "cores": config.cores,
        "mode": match &config.mode { Mode::Stateless => "stateless", Mode::Session(_) => "session" },
        "intercepts": match &config.mode {
            Mode::Session(o) => o.intercepts.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            Mode::Stateless => Vec::new(),
        },
        "channel_protocol_version": 6,
        "clock": "CLOCK_MONOTONIC (worker), bpf_ktime_get_ns (XDP arrival)",
        "latency_method": "test_response and handshake are measured at the copier: sent -> the returned header handled by the worker, so they include the return path (test server -> assist -> intercept flush, at most 500 us when busy -> channel -> control thread -> worker)",
    })
}

/// The Prometheus view of a summary.
fn metrics_snapshot(summary: &Summary, export: Option<&LatencyExport>) -> MetricsSnapshot {
    let gauges = ["active", "time_wait"];
    let mut counters = Vec::new();
    let mut g = Vec::new();
    for (name, v) in summary.named() {
        if gauges.contains(&name.as_str()) {
            g.push((format!("xdpcopy_{name}"), format!("xdpcopy {name} (gauge)"), v as f64));
        } else {
            counters.push((format!("xdpcopy_{name}_total"), format!("xdpcopy counter {name}"), v));
        }
    }
    g.push(("xdpcopy_uptime_seconds".into(), "seconds since start".into(), summary.elapsed.as_secs_f64()));
    MetricsSnapshot {
        counters,
        gauges: g,
        summaries: export.map(LatencyExport::prometheus_summaries).unwrap_or_default(),
    }
}
