//! The feed against in-memory ports: generated capture files go through [`run`] into
//! [`testing::fed_port`]s, read back from the ports' RX rings or through stateless workers.

use std::{
    fs::File,
    net::Ipv4Addr,
    num::NonZeroU32,
    path::PathBuf,
    sync::{mpsc, Arc},
    time::Duration,
};

use pcap_file::pcap::{PcapPacket, PcapWriter};

use super::*;
use crate::{
    offline::Speed,
    rewrite::{ChecksumMode, Rewrite},
    sample::Sampler,
    stats::Published,
    wire::{ethernet::MacAddr, parse::parse},
    worker::{self, Stateless, Worker},
    xsk::testing,
};

/// A temporary capture file, removed on drop.
struct TempPcap(PathBuf);

impl TempPcap {
    /// Writes `frames` (capture time offset, frame) into a fresh pcap (nanosecond stamps).
    fn new(name: &str, frames: &[(Duration, Vec<u8>)]) -> TempPcap {
        let path = std::env::temp_dir().join(format!("xdpcopy-feed-{}-{name}.pcap", std::process::id()));
        let header =
            pcap_file::pcap::PcapHeader { ts_resolution: pcap_file::TsResolution::NanoSecond, ..Default::default() };
        let mut w = PcapWriter::with_header(File::create(&path).unwrap(), header).unwrap();
        let base = Duration::from_secs(1_764_000_000);
        for (t, f) in frames {
            w.write_packet(&PcapPacket::new(base + *t, f.len() as u32, f)).unwrap();
        }
        TempPcap(path)
    }
}

impl Drop for TempPcap {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An Ethernet/IPv4/TCP segment from 10.0.0.1:`sport` to 10.0.0.2:`dport` with `payload`
/// bytes (each the low byte of its offset) and sequence number `seq`.
fn segment(sport: u16, dport: u16, seq: u32, flags: u8, payload: usize) -> Vec<u8> {
    let total = 20 + 20 + payload;
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| i as u8));
    ipv4::Packet::new_unchecked(&mut f[14..34]).fill_checksum();
    f
}

fn options(select_port: u16, oversize: Oversize, pace: PaceOptions) -> FeedOptions {
    FeedOptions {
        path: PathBuf::new(),
        pace,
        tail: Duration::from_secs(1),
        select: Select { dst_ports: vec![select_port], sources: Vec::new() },
        oversize,
    }
}

fn topspeed() -> PaceOptions {
    PaceOptions { topspeed: true, ..PaceOptions::default() }
}

/// Every frame on a port's RX ring, with its metadata block.
fn received(port: &mut crate::xsk::Port) -> Vec<(Vec<u8>, [u8; meta::LEN])> {
    let mut out = Vec::new();
    while port.rx_acquire(64) > 0 {
        while let Some(rx) = port.rx_next() {
            let rx = rx.expect("a good descriptor");
            let m = *port.umem().meta::<{ meta::LEN }>(&rx).expect("metadata room");
            out.push((port.umem().data(&rx).to_vec(), m));
            port.recycle(rx.frame);
        }
        port.rx_release();
    }
    out
}

#[test]
fn only_what_the_xdp_program_would_redirect_goes_to_a_worker() {
    let select = Select { dst_ports: vec![80], sources: vec![SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 8080)] };
    let to_80 = segment(40_000, 80, 1, tcp::flags::ACK, 10);
    assert!(matches!(route(&to_80, &select, 4), (Route::Worker(_), Some(_))));
    assert_eq!(route(&segment(40_000, 81, 1, tcp::flags::ACK, 10), &select, 4).0, Route::Filtered);
    // A response of a selected online server (--production-latency).
    assert!(matches!(route(&segment(8080, 40_000, 1, tcp::flags::ACK, 10), &select, 4).0, Route::Worker(_)));
    // UDP, an IPv4 fragment: the program passes them to the kernel.
    let mut udp = to_80.clone();
    udp[23] = 17;
    assert_eq!(route(&udp, &select, 4).0, Route::Filtered);
    assert_eq!(route(&wire::testdata::FRAG_V4, &select, 4).0, Route::Filtered);
    // Broken TCP goes to a worker, which counts it.
    let mut broken = to_80.clone();
    broken[14 + 20 + 12] = 0x20; // data offset 2 words
    assert_eq!(route(&broken, &select, 4), (Route::Worker(0), None));
    // Both directions of a connection go to the same worker.
    let reply = segment(80, 40_000, 1, tcp::flags::ACK, 0);
    let mut reply = reply;
    reply[26..30].copy_from_slice(&[10, 0, 0, 2]);
    reply[30..34].copy_from_slice(&[10, 0, 0, 1]);
    let all = Select { dst_ports: vec![80, 40_000], sources: Vec::new() };
    assert_eq!(route(&to_80, &all, 4).0, route(&reply, &all, 4).0);
}

#[test]
fn frames_arrive_once_with_their_metadata_and_the_rest_is_counted() {
    let frames = vec![
        (Duration::ZERO, segment(40_000, 80, 100, tcp::flags::SYN, 0)),
        (Duration::from_micros(10), segment(40_000, 81, 7, tcp::flags::ACK, 5)),
        (Duration::from_micros(20), segment(40_000, 80, 101, tcp::flags::ACK | tcp::flags::PSH, 30)),
    ];
    let pcap = TempPcap::new("basic", &frames);
    let (mut port, injector, _kernel) = testing::fed_port(64, 64, 0);
    let mut source = PcapSource::open(&pcap.0).unwrap();
    assert!(source.is_mapped());
    let stop = AtomicBool::new(false);
    let before = sys::monotonic_ns();
    let loops = PaceOptions { loops: NonZeroU32::new(2).unwrap(), ..topspeed() };
    let stats = run(&mut source, &mut [injector], &options(80, Oversize::Count, loops), &stop, false).unwrap();
    assert_eq!((stats.frames, stats.filtered, stats.held, stats.skipped), (4, 2, 0, 0));
    let got = received(&mut port);
    let want = [&frames[0].1, &frames[2].1, &frames[0].1, &frames[2].1];
    assert_eq!(got.iter().map(|(f, _)| f).collect::<Vec<_>>(), want);
    for (i, (_, m)) in got.iter().enumerate() {
        assert!(meta::arrival_ns(m).is_some_and(|t| t >= before), "frame {i} is stamped");
        assert_eq!(meta::generation(m), i as u32 / 2, "frame {i}: its loop");
    }
}

#[test]
fn an_oversize_segment_is_split_in_session_mode_and_counted_in_stateless_mode() {
    let big = segment(40_000, 80, 1000, tcp::flags::ACK | tcp::flags::PSH | tcp::flags::FIN, 8946);
    assert_eq!(big.len(), 9000);
    let frames =
        vec![(Duration::ZERO, big.clone()), (Duration::from_millis(1), segment(40_000, 80, 9946, tcp::flags::ACK, 0))];
    let pcap = TempPcap::new("oversize", &frames);

    let (mut port, injector, _kernel) = testing::fed_port(64, 64, 0);
    let max = injector.max_frame_len();
    let stop = AtomicBool::new(false);
    let mut source = PcapSource::open(&pcap.0).unwrap();
    let stats = run(&mut source, &mut [injector], &options(80, Oversize::Split, topspeed()), &stop, false).unwrap();
    assert_eq!((stats.split, stats.too_big, stats.frames), (1, 0, 4));
    let got = received(&mut port);
    let mut payload = Vec::new();
    let mut next_seq = 1000u32;
    for (i, (f, _)) in got[..3].iter().enumerate() {
        assert!(f.len() <= max, "piece {i} fits a chunk");
        let p = parse(f).unwrap().unwrap();
        assert_eq!(p.seq, next_seq, "piece {i} continues the previous one");
        next_seq += p.payload_len as u32;
        let last = i == 2;
        assert_eq!(p.has_flags(tcp::flags::FIN), last, "FIN on the last piece only");
        assert_eq!(p.has_flags(tcp::flags::PSH), last, "PSH on the last piece only");
        let ip = ipv4::Packet::new_checked(&f[p.l3_offset..]).unwrap();
        assert!(ip.verify_checksum());
        assert!(tcp::Packet::new_checked(&f[p.l4_offset..p.ip_end])
            .unwrap()
            .verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
        payload.extend_from_slice(&f[p.payload_offset..p.ip_end]);
    }
    assert_eq!(payload, big[54..], "the pieces carry the payload, in order");
    assert_eq!(got[3].0, frames[1].1, "the replay goes on after it");

    let (mut port, injector, _kernel) = testing::fed_port(64, 64, 0);
    let mut source = PcapSource::open(&pcap.0).unwrap();
    let stats = run(&mut source, &mut [injector], &options(80, Oversize::Count, topspeed()), &stop, false).unwrap();
    assert_eq!((stats.split, stats.too_big, stats.frames), (0, 1, 1));
    assert_eq!(received(&mut port).len(), 1);
}

#[test]
fn pacing_follows_the_capture_within_a_millisecond_and_never_early() {
    let gaps = [0u64, 5, 7, 20, 21, 40];
    let frames: Vec<_> = gaps
        .iter()
        .map(|ms| (Duration::from_millis(*ms), segment(40_000, 80, *ms as u32, tcp::flags::ACK, 0)))
        .collect();
    let pcap = TempPcap::new("pacing", &frames);
    let (mut port, injector, _kernel) = testing::fed_port(64, 64, 0);
    let mut source = PcapSource::open(&pcap.0).unwrap();
    let stop = AtomicBool::new(false);
    let pace = PaceOptions { speed: Speed::new(0.5).unwrap(), ..PaceOptions::default() };
    run(&mut source, &mut [injector], &options(80, Oversize::Count, pace), &stop, false).unwrap();
    let got = received(&mut port);
    let first = meta::arrival_ns(&got[0].1).unwrap();
    let mut late: Vec<i64> = got
        .iter()
        .zip(gaps)
        .map(|((_, m), ms)| {
            let at = (meta::arrival_ns(m).unwrap() - first) as i64;
            // Half speed: twice the capture's spacing.
            at - (2 * ms * 1_000_000) as i64
        })
        .collect();
    assert!(late.iter().all(|l| *l >= -20_000), "a frame went early: {late:?} ns");
    late.sort_unstable();
    assert!(late[late.len() / 2] < 1_000_000, "median lateness {} ns: {late:?}", late[late.len() / 2]);
}

#[test]
fn a_one_hour_gap_ends_at_once_on_stop() {
    let frames = vec![
        (Duration::ZERO, segment(40_000, 80, 1, tcp::flags::ACK, 0)),
        (Duration::from_secs(3600), segment(40_000, 80, 2, tcp::flags::ACK, 0)),
    ];
    let pcap = TempPcap::new("gap", &frames);
    let (mut port, injector, _kernel) = testing::fed_port(64, 64, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let path = pcap.0.clone();
    let feed = thread::spawn(move || {
        let mut source = PcapSource::open(&path).unwrap();
        run(&mut source, &mut [injector], &options(80, Oversize::Count, PaceOptions::default()), &flag, false)
    });
    thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let stats = feed.join().unwrap().unwrap();
    assert!(asked.elapsed() < Duration::from_millis(500), "stopped after {:?}", asked.elapsed());
    assert_eq!(stats.frames, 1);
    assert_eq!(received(&mut port).len(), 1, "the frame before the gap was published");
}

/// Runs a stateless worker over a fed port on its own thread (the test kernel's seam is per
/// thread) until `done` is set and it has nothing left; returns what it transmitted.
fn worker_thread(
    q: u32,
    frames: u32,
    ring: u32,
    injectors: mpsc::Sender<(u32, Injector)>,
    done: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<Vec<u8>>> {
    thread::spawn(move || {
        let (port, injector, mut kernel) = testing::fed_port(frames, ring, 0);
        injectors.send((q, injector)).unwrap();
        let route = worker::Route {
            online_ip: None,
            online_port: 80,
            rewrite: Rewrite {
                src_mac: MacAddr([2, 0, 0, 0, 0, 9]),
                dst_mac: MacAddr([2, 0, 0, 0, 0, 8]),
                dst_ip: Ipv4Addr::new(192, 168, 7, 9).into(),
                dst_port: 8080,
                src_ip: None,
            },
        };
        let logic = Stateless::new(vec![route], ChecksumMode::Full, 1514, Sampler::new(100, false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Worker::new(q, port, worker::Mode::Stateless(logic), Arc::new(Published::default()), stop, None);
        let mut out = Vec::new();
        let mut quiet = 0;
        loop {
            let busy = w.round();
            let sent = kernel.transmit();
            if busy || !sent.is_empty() {
                quiet = 0;
            } else if done.load(Ordering::Acquire) {
                quiet += 1;
                if quiet > 1000 {
                    break;
                }
            } else {
                thread::yield_now();
            }
            out.extend(sent);
        }
        out
    })
}

#[test]
fn thousands_of_flows_over_two_workers_arrive_complete_and_in_order() {
    const FLOWS: u16 = 4000;
    const PER_FLOW: u32 = 3;
    // Round-robin over the flows, so each flow's frames are far apart in the file.
    let mut frames = Vec::new();
    for i in 0..PER_FLOW {
        for f in 0..FLOWS {
            let at = Duration::from_micros(u64::from(i) * u64::from(FLOWS) + u64::from(f));
            frames.push((at, segment(20_000 + f, 80, i, tcp::flags::ACK | tcp::flags::PSH, 8)));
        }
    }
    let pcap = TempPcap::new("flows", &frames);
    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    // Small UMEMs: the feed must wait for the workers (backpressure) many times.
    let workers: Vec<_> = (0..2).map(|q| worker_thread(q, 64, 32, tx.clone(), done.clone())).collect();
    let mut injectors: Vec<(u32, Injector)> = (0..2).map(|_| rx.recv().unwrap()).collect();
    injectors.sort_by_key(|(q, _)| *q);
    let mut injectors: Vec<Injector> = injectors.into_iter().map(|(_, i)| i).collect();
    let mut source = PcapSource::open(&pcap.0).unwrap();
    let stop = AtomicBool::new(false);
    let stats = run(&mut source, &mut injectors, &options(80, Oversize::Count, topspeed()), &stop, false).unwrap();
    done.store(true, Ordering::Release);
    let outputs: Vec<Vec<Vec<u8>>> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    assert_eq!(stats.frames, u64::from(FLOWS) * u64::from(PER_FLOW));
    assert!(stats.held > 0, "the feed was held back by the workers");
    let mut seen: std::collections::HashMap<u16, (usize, Vec<u32>)> = std::collections::HashMap::new();
    for (q, out) in outputs.iter().enumerate() {
        assert!(out.len() > usize::from(FLOWS) / 2, "worker {q} had its share: {}", out.len());
        for f in out {
            let p = parse(f).unwrap().unwrap();
            assert_eq!(p.dst_port, 8080);
            let e = seen.entry(p.src_port).or_insert((q, Vec::new()));
            assert_eq!(e.0, q, "flow {} went to two workers", p.src_port);
            e.1.push(p.seq);
        }
    }
    assert_eq!(seen.len(), usize::from(FLOWS));
    for (port, (_, seqs)) in &seen {
        assert_eq!(seqs, &(0..PER_FLOW).collect::<Vec<_>>(), "flow {port}: every frame, in order");
    }
}
