//! Worker rounds on a port over in-memory rings: literal frames go in through the test kernel,
//! the worker runs [`Worker::round`], and what it put on the TX ring, its counters and where
//! every UMEM frame is are checked. A frame is always in exactly one place — the port's free
//! list, the fill ring, the RX ring, the TX ring, the completion ring — and `assert_no_leak`
//! checks that none got lost.

use std::net::{Ipv4Addr, SocketAddrV4};

use control::channel::HeaderMsg;
use control::copier::SessionOp;

use super::*;
use crate::{
    rewrite::{ChecksumMode, Rewrite},
    tuples::TupleConfig,
    wire::{
        ethernet::{self, MacAddr},
        ipv4,
        parse::parse,
        tcp::{self, flags},
        testdata::{DATA_V4, FRAG_V4, SYN_V4, SYN_V6, VLAN_V4_PADDED},
        Error,
    },
    xsk::testing::{self, Kernel},
};

const OUT_SRC: MacAddr = MacAddr([0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]);
const OUT_DST: MacAddr = MacAddr([0xfe, 0xed, 0xfa, 0xce, 0x00, 0x01]);
/// The test server (`-x 80-192.168.7.9:8080`).
const TARGET: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 9);
/// The client and online server of the literal frames.
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000);

/// A stateless worker copying port `online_port` to TARGET:8080, on an in-memory port.
fn stateless(online_port: u16, frames: u32, ring: u32) -> (Worker, Kernel) {
    let (port, kernel) = testing::port(frames, ring, 0);
    let route = Route {
        online_ip: None,
        online_port,
        rewrite: Rewrite { src_mac: OUT_SRC, dst_mac: OUT_DST, dst_ip: TARGET.into(), dst_port: 8080, src_ip: None },
    };
    let logic = Stateless::new(vec![route], ChecksumMode::Full, 1514, Sampler::new(100, false));
    (worker(port, Mode::Stateless(logic)), kernel)
}

fn worker(port: Port, mode: Mode) -> Worker {
    Worker::new(0, port, mode, Arc::new(Published::default()), Arc::new(AtomicBool::new(false)), None)
}

/// Checks that a frame is `original` copied to the target: MACs, destination, both checksums.
fn assert_copied(out: &[u8], original: &[u8]) {
    let before = parse(original).unwrap().unwrap();
    let after = parse(out).unwrap().unwrap();
    let eth = ethernet::Frame::new_checked(out).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (OUT_DST, OUT_SRC));
    assert_eq!((after.dst_ip, after.dst_port), (IpAddr::V4(TARGET), 8080));
    assert_eq!((after.src_ip, after.src_port), (before.src_ip, before.src_port));
    assert_eq!((after.seq, after.ack, after.flags), (before.seq, before.ack, before.flags));
    assert_eq!(
        &out[after.l4_offset + after.tcp_header_len()..],
        &original[before.l4_offset + before.tcp_header_len()..before.ip_end]
    );
    let ip = ipv4::Packet::new_checked(&out[after.l3_offset..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    let seg = tcp::Packet::new_checked(&out[after.l4_offset..]).unwrap();
    assert!(seg.verify_checksum_v4(ip.src_addr(), ip.dst_addr()), "TCP checksum");
}

/// Every frame of the UMEM is in the free list, the fill ring or the TX ring.
fn assert_no_leak(w: &Worker, k: &mut Kernel, frames: u32) {
    let held = w.port.free_frames() as u32 + k.fill_pending() + k.tx_pending();
    assert_eq!(held, frames, "free {} + fill {} + TX {}", w.port.free_frames(), k.fill_pending(), k.tx_pending());
}

#[test]
fn stateless_copies_a_syn_and_a_data_frame_to_the_target() {
    let (mut w, mut k) = stateless(80, 8, 8);
    assert!(k.deliver(&SYN_V4) && k.deliver(&DATA_V4));
    assert!(w.round());
    let sent = k.transmit();
    assert_eq!(sent.len(), 2);
    assert_copied(&sent[0], &SYN_V4);
    assert_copied(&sent[1], &DATA_V4);
    assert_eq!(&sent[1][66..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let c = w.counters();
    assert_eq!((c.rx_frames, c.rx_bytes), (2, 74 + 93));
    assert_eq!((c.tx_frames, c.tx_bytes, c.dropped), (2, 74 + 93, 0));
    assert!(k.calls().kick_tx >= 1, "copy mode: sendto after a TX batch");
}

#[test]
fn a_frame_to_another_port_is_dropped_as_no_transfer() {
    let (mut w, mut k) = stateless(443, 4, 4);
    assert!(k.deliver(&SYN_V4));
    assert!(w.round());
    assert_eq!(w.counters().drop[DropReason::NoTransfer], 1);
    assert_eq!((w.counters().tx_frames, k.tx_pending()), (0, 0));
    assert_eq!(k.calls().kick_tx, 0, "nothing to send, no kick");
    assert_eq!(w.port.free_frames(), 1, "the frame is free again");
    assert_no_leak(&w, &mut k, 4);
}

#[test]
fn malformed_frames_are_counted_by_reason() {
    let (mut w, mut k) = stateless(80, 4, 4);
    assert!(k.deliver(&FRAG_V4) && k.deliver(&SYN_V4[..20]));
    w.round();
    let c = w.counters();
    assert_eq!(c.drop[DropReason::Malformed], 2);
    assert_eq!((c.malformed[Error::Fragmented], c.malformed[Error::Truncated]), (1, 1));
    assert_eq!(c.tx_frames, 0);
    assert_no_leak(&w, &mut k, 4);
}

#[test]
fn one_full_round() {
    let (mut w, mut k) = stateless(80, 16, 8);
    let arp = {
        let mut f = [0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f
    };
    for f in [&SYN_V4[..], &DATA_V4, &VLAN_V4_PADDED, &SYN_V6, &FRAG_V4, &arp] {
        assert!(k.deliver(f));
    }
    assert!(k.deliver_outside());
    assert!(k.deliver_overlong());
    assert!(w.round());
    let c = *w.counters();
    assert_eq!(c.rx_frames, 8);
    assert_eq!(c.tx_frames, 3);
    for (why, n) in [
        (DropReason::FamilyMismatch, 1),
        (DropReason::Malformed, 1),
        (DropReason::NotTcp, 1),
        (DropReason::BadDescriptor, 2),
        (DropReason::TxRingFull, 0),
    ] {
        assert_eq!(c.drop[why], n, "{}", why.name());
    }
    assert_eq!(c.dropped, 5);
    // The VLAN frame goes out untagged, from 4 bytes into its chunk, without its padding.
    let sent = k.transmit();
    assert_eq!(sent.iter().map(Vec::len).collect::<Vec<_>>(), [74, 93, 54]);
    assert_copied(&sent[2], &VLAN_V4_PADDED);
    assert_eq!(&sent[2][12..14], &[0x08, 0x00]);
    // The next round takes the completions; then the worker is idle.
    assert!(!w.round());
    assert_eq!((w.counters().tx_completed, w.port.in_flight()), (3, 0));
    assert!(!w.round());
    assert_no_leak(&w, &mut k, 16);
}

#[test]
fn completions_recycle_frames() {
    let (mut w, mut k) = stateless(80, 4, 4);
    assert!(k.deliver(&SYN_V4));
    w.round();
    assert_eq!((w.port.in_flight(), k.tx_pending(), k.fill_pending()), (1, 1, 3));
    assert_eq!(k.transmit().len(), 1);
    w.round();
    assert_eq!((w.counters().tx_completed, w.port.in_flight()), (1, 0));
    assert_eq!((w.port.free_frames(), k.fill_pending()), (0, 4), "completed, refilled");
}

#[test]
fn frames_that_do_not_fit_the_tx_ring_are_dropped_and_recycled() {
    let (mut w, mut k) = stateless(80, 16, 4);
    assert!(k.deliver(&SYN_V4) && k.deliver(&SYN_V4));
    w.round();
    assert_eq!(k.tx_pending(), 2, "the kernel has not sent them yet");
    for _ in 0..4 {
        assert!(k.deliver(&DATA_V4));
    }
    w.round();
    let c = *w.counters();
    assert_eq!((c.rx_frames, c.tx_frames, c.drop[DropReason::TxRingFull]), (6, 4, 2));
    assert_eq!(k.tx_pending(), 4);
    assert_no_leak(&w, &mut k, 16);
    let sent = k.transmit();
    assert_eq!(sent.iter().map(Vec::len).collect::<Vec<_>>(), [74, 74, 93, 93]);
    w.round();
    assert_eq!(w.counters().tx_completed, 4);
    assert_no_leak(&w, &mut k, 16);
}

#[test]
fn fill_wakeups_and_kick_failures_are_counted() {
    let (mut w, mut k) = stateless(443, 4, 4);
    k.set_fill_need_wakeup(true);
    assert!(k.deliver(&SYN_V4));
    w.round();
    assert_eq!(k.calls().kick_rx, 0, "the dropped frame went to the free list");
    w.round();
    assert_eq!(k.calls().kick_rx, 1, "then to the fill ring, with the wakeup the kernel asked for");
    assert_eq!(w.counters().rx_kick_errors, 0);
    k.fail_kicks(Some(libc::EINVAL));
    assert!(k.deliver(&SYN_V4));
    w.round();
    w.round();
    assert_eq!((k.calls().kick_rx, w.counters().rx_kick_errors), (2, 1));
    // EAGAIN is "call again", not an error.
    k.fail_kicks(Some(libc::EAGAIN));
    assert!(k.deliver(&SYN_V4));
    w.round();
    w.round();
    assert_eq!((k.calls().kick_rx, w.counters().rx_kick_errors), (3, 1));
    assert_no_leak(&w, &mut k, 4);
}

#[test]
fn tx_kick_failures_are_counted() {
    let (mut w, mut k) = stateless(80, 4, 4);
    k.fail_kicks(Some(libc::EINVAL));
    assert!(k.deliver(&SYN_V4));
    w.round();
    assert_eq!((k.calls().kick_tx, w.counters().tx_kick_errors), (1, 1), "one failure ends the flush");
}

#[test]
fn a_down_output_link_is_counted_and_retried_only_every_100_ms() {
    let (mut w, mut k) = stateless(80, 8, 8);
    k.fail_kicks(Some(libc::ENETDOWN));
    assert!(k.deliver(&SYN_V4));
    w.round();
    assert_eq!((k.calls().kick_tx, w.counters().tx_link_down, w.counters().tx_kick_errors), (1, 1, 0));
    // More frames while it is down: queued on the TX ring, no kick until the retry time.
    assert!(k.deliver(&DATA_V4));
    w.round();
    w.round();
    assert_eq!(k.calls().kick_tx, 1, "no kick while waiting to retry");
    // Up again: the next retry sends everything.
    k.fail_kicks(None);
    std::thread::sleep(TX_DOWN_RETRY + Duration::from_millis(10));
    w.round();
    assert!(k.calls().kick_tx > 1, "kicked again after the retry time");
    assert_eq!(k.transmit().len(), 2);
    assert_eq!(w.counters().tx_link_down, 1);
}

/// A session-mode worker replaying port 80 to TARGET:8080 on an in-memory port, and its link to
/// the control thread.
fn session_worker(frames: u32, ring: u32, fill_reserve: u32) -> (Worker, Kernel, Arc<WorkerLink>) {
    session_worker_to(frames, ring, fill_reserve, &[TARGET.into()], Vec::new(), 1)
}

/// A session-mode worker replaying port 80 to each of `targets` (port 8080; a frame goes to the
/// first of its family), with `-c addresses` and `-n replicas`.
fn session_worker_to(
    frames: u32,
    ring: u32,
    fill_reserve: u32,
    targets: &[IpAddr],
    addresses: Vec<IpAddr>,
    replicas: u16,
) -> (Worker, Kernel, Arc<WorkerLink>) {
    let tuples = TupleConfig {
        replicas,
        addresses,
        port_slot: None,
        idle: Duration::from_secs(90),
        capacity: 64,
        fresh_per_loop: false,
    };
    session_worker_with(frames, ring, fill_reserve, targets, tuples)
}

/// As [`session_worker_to`], with these client tuples.
fn session_worker_with(
    frames: u32,
    ring: u32,
    fill_reserve: u32,
    targets: &[IpAddr],
    tuples: TupleConfig,
) -> (Worker, Kernel, Arc<WorkerLink>) {
    let (port, kernel) = testing::port(frames, ring, fill_reserve);
    let link = Arc::new(WorkerLink::new(16, || {}));
    let targets: Vec<_> =
        targets.iter().map(|&ip| session::Target { ip, port: 8080, src_mac: OUT_SRC.0, dst_mac: OUT_DST.0 }).collect();
    let matches = vec![(None, 80); targets.len()];
    let s = Session {
        engine: session::Engine::new(
            session::Config { max_sessions: 16, pool_bytes: 1 << 20, ..session::Config::default() },
            targets,
        ),
        matches,
        link: link.clone(),
        doorbell: Arc::new(Doorbell::new().unwrap()),
        wake_control: Arc::new(|| {}),
        inline: None,
        production: None,
        sampler: Sampler::new(100, false),
        tuples: Tuples::new(tuples, 0, 1),
        next_sweep: Instant::now(),
    };
    (worker(port, Mode::Session(Box::new(s))), kernel, link)
}

/// The test server's SYN-ACK (ISN 9000) to the SYN of `SYN_V4`, as the channel returns it.
fn syn_ack_of_syn_v4() -> HeaderMsg {
    let h = ResponseHeader {
        src: SocketAddrV4::new(TARGET, 8080).into(),
        dst: CLIENT.into(),
        total_len: 40,
        payload_len: 0,
        seq: 9000,
        ack: 0x1234_5679,
        flags: flags::SYN | flags::ACK,
        window: 65535,
        timestamps: None,
        window_scale: None,
        mss: None,
    };
    HeaderMsg::from_bytes(h.to_bytes())
}

#[test]
fn session_mode_builds_in_free_frames_and_waits_for_one() {
    // Two frames, no reserve: both start in the fill ring.
    let (mut w, mut k, link) = session_worker(2, 2, 0);
    assert!(k.deliver(&SYN_V4) && k.deliver(&DATA_V4));
    // The SYN's frame is recycled at once and the engine builds its SYN to the target in it; the
    // request is held until the handshake completes, its frame recycled.
    assert!(w.round());
    assert_eq!(
        link.ops.pop(),
        Some(SessionOp::Add(SessionAdd { client: CLIENT.into(), target: SocketAddrV4::new(TARGET, 8080).into() }))
    );
    assert_eq!((w.counters().tx_frames, k.tx_pending()), (1, 1));
    // The test server's SYN-ACK arrives. Its handling wants to send the held request, but the
    // only other frame went back to the fill ring at the start of the round: the request waits
    // for a free frame (it is not consumed and left to retransmission).
    assert!(link.headers.push(syn_ack_of_syn_v4()).is_ok());
    assert!(w.round());
    assert_eq!(w.counters().no_free_frame, 0);
    assert_eq!(w.counters().tx_frames, 1);
    let Mode::Session(s) = &w.mode else { unreachable!() };
    assert!(s.engine.tx_pending(), "the request waits its turn");
    assert_no_leak(&w, &mut k, 2);
    // What went out is a SYN to the target, with valid checksums.
    let sent = k.transmit();
    assert_eq!(sent.len(), 1);
    let p = parse(&sent[0]).unwrap().unwrap();
    assert_eq!((p.dst_ip, p.dst_port, p.src_port, p.flags & flags::SYN), (IpAddr::V4(TARGET), 8080, 40000, flags::SYN));
    let ip = ipv4::Packet::new_checked(&sent[0][14..]).unwrap();
    assert!(ip.verify_checksum());
    assert!(tcp::Packet::new_checked(&sent[0][34..]).unwrap().verify_checksum_v4(ip.src_addr(), TARGET));
    // Its completion frees the frame again.
    w.round();
    assert_eq!(w.counters().tx_completed, 1);
    assert_no_leak(&w, &mut k, 2);
}

#[test]
fn a_later_replay_loop_is_a_new_client_ahead_in_sequence_and_time() {
    let tuples = TupleConfig {
        replicas: 1,
        addresses: Vec::new(),
        port_slot: None,
        idle: Duration::from_secs(90),
        capacity: 64,
        fresh_per_loop: true,
    };
    let (mut w, mut k, link) = session_worker_with(8, 8, 4, &[TARGET.into()], tuples);
    // Loop 0 of the file: the captured client.
    assert!(k.deliver_with_meta(&meta::stamp(1, 0), &SYN_V4));
    w.round();
    let add = |link: &WorkerLink| match link.ops.pop() {
        Some(SessionOp::Add(a)) => a,
        other => panic!("expected a CLIENT_ADD, got {other:?}"),
    };
    assert_eq!(add(&link).client, SocketAddr::V4(CLIENT));
    // The same SYN in loop 2: another client port, its sequence number and timestamp 2 × 2^30
    // ahead, so neither TIME_WAIT nor PAWS on the test server could refuse it.
    assert!(k.deliver_with_meta(&meta::stamp(2, 2), &SYN_V4));
    w.round();
    let add = add(&link);
    assert_eq!(add.client.ip(), IpAddr::V4(*CLIENT.ip()));
    assert_ne!(add.client.port(), CLIENT.port());
    let sent = k.transmit();
    assert_eq!(sent.len(), 2);
    let (first, again) = (parse(&sent[0]).unwrap().unwrap(), parse(&sent[1]).unwrap().unwrap());
    assert_eq!((first.src_port, first.seq), (40000, 0x1234_5678));
    assert_eq!((again.src_port, again.seq), (add.client.port(), 0x1234_5678u32.wrapping_add(2 << 30)));
    let ts = |f: &[u8], p: &Parsed| tcp::Packet::new_checked(&f[p.l4_offset..]).unwrap().find_timestamps().map(|t| t.1);
    assert_eq!(ts(&sent[0], &first), Some(123_456));
    assert_eq!(ts(&sent[1], &again), Some(123_456u32.wrapping_add(2 << 30)));
    assert_eq!(w.counters().tuple_exhausted, 0);
}

/// Runs `step` until it returns true; fails after 5 s.
fn wait_for(what: &str, mut step: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !step() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

#[test]
fn the_only_worker_runs_the_channel_itself_registrations_out_and_headers_in_within_its_rounds() {
    use control::channel::{ChannelClient, ChannelServer, Framing};
    // A real intercept's channel server on loopback, and no control thread: only the worker's
    // rounds (and the server's polls, standing for the intercept) move anything.
    let mut server = ChannelServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = ChannelClient::new(vec![server.local_addr()], 1, Framing::Combined).unwrap();
    let (mut w, mut k, link) = session_worker(8, 8, 4);
    let published = Arc::new(PublishedSet::<ControlStats>::default());
    assert!(w.run_control(Control::new(client, vec![link.clone()]), published.clone()).is_none());
    wait_for("the worker to connect and say hello", || {
        server.poll(Duration::from_millis(1)).unwrap();
        w.round();
        server.stats().hellos_ok == 1
    });
    // A SYN and a request: the session's CLIENT_ADD leaves in the round that queued it.
    assert!(k.deliver(&SYN_V4) && k.deliver(&DATA_V4));
    w.round();
    assert!(link.ops.is_empty(), "the registration went out in the same round");
    wait_for("the CLIENT_ADD at the intercept", || {
        server.poll(Duration::from_millis(1)).unwrap();
        server.stats().client_add == 1
    });
    assert_eq!(k.transmit().len(), 1, "the SYN");
    // The test server's SYN-ACK comes back over the channel: the worker reads it itself and the
    // held request goes out.
    server.deliver(Instant::now(), syn_ack_of_syn_v4());
    server.flush();
    let mut sent = Vec::new();
    wait_for("the request after the SYN-ACK", || {
        server.poll(Duration::ZERO).unwrap();
        w.round();
        sent.extend(k.transmit());
        sent.iter().any(|f| parse(f).unwrap().unwrap().payload_len > 0)
    });
    let req = sent.iter().map(|f| parse(f).unwrap().unwrap()).find(|p| p.payload_len > 0).unwrap();
    assert_eq!((req.dst_ip, req.dst_port, req.ack), (IpAddr::V4(TARGET), 8080, 9001));
    // Its counters are published as the control thread's were (every 100 ms).
    std::thread::sleep(inline::PUBLISH_EVERY);
    w.round();
    let c = published.snapshot();
    assert_eq!((c.registered, c.routed, c.unowned, c.connected), (1, 1, 0, 1));
}

#[test]
fn session_mode_keeps_the_reserve_for_building() {
    let (mut w, mut k, _link) = session_worker(8, 8, 4);
    assert_eq!((w.port.free_frames(), k.fill_pending()), (4, 4));
    assert!(k.deliver(&SYN_V4));
    w.round();
    // The captured frame came back and the SYN was built in a free frame of the reserve of 4.
    assert_eq!((k.tx_pending(), k.fill_pending(), w.port.free_frames()), (1, 3, 4));
    // The frame in flight counts against the reserve, so the next refill gives the fill ring its
    // 4 back (a slow output must not drain the fill ring), and 3 stay free for building.
    w.round();
    assert_eq!((k.fill_pending(), w.port.free_frames(), w.port.build_room()), (4, 3, 3));
    assert_no_leak(&w, &mut k, 8);
}

#[test]
fn session_mode_replays_ipv6_and_translates_with_client_addresses() {
    let target6: IpAddr = "fd00::9".parse().unwrap();
    // An IPv6 SYN to port 80: the dual-stack transfers pick the IPv6 target.
    let (mut w, mut k, link) = session_worker_to(8, 8, 4, &[TARGET.into(), target6], Vec::new(), 1);
    assert!(k.deliver(&SYN_V6));
    assert!(w.round());
    let client6: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
    assert_eq!(
        link.ops.pop(),
        Some(SessionOp::Add(SessionAdd { client: client6, target: SocketAddr::new(target6, 8080) }))
    );
    let sent = k.transmit();
    let p = parse(&sent[0]).unwrap().unwrap();
    assert_eq!((p.src_ip, p.dst_ip, p.dst_port, p.flags), (client6.ip(), target6, 8080, flags::SYN));
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (p.src_ip, p.dst_ip) else { unreachable!() };
    assert!(tcp::Packet::new_checked(&sent[0][p.l4_offset..]).unwrap().verify_checksum_v6(&src, &dst));
    w.round();
    assert_no_leak(&w, &mut k, 8);

    // To the IPv4 target only: without -c the IPv6 client cannot be replayed (counted)...
    let (mut w, mut k, link) = session_worker_to(8, 8, 4, &[TARGET.into()], Vec::new(), 1);
    assert!(k.deliver(&SYN_V6));
    w.round();
    assert_eq!(w.counters().drop[DropReason::FamilyMismatch], 1);
    assert!(link.ops.pop().is_none() && k.transmit().is_empty());
    // ... with -c 10.9.0.1 and -n 2, two IPv4 sessions from distinct pairs.
    let pool: IpAddr = Ipv4Addr::new(10, 9, 0, 1).into();
    let (mut w, mut k, link) = session_worker_to(8, 8, 4, &[TARGET.into()], vec![pool], 2);
    assert!(k.deliver(&SYN_V6));
    w.round();
    let mut froms = Vec::new();
    while let Some(SessionOp::Add(a)) = link.ops.pop() {
        assert_eq!((a.client.ip(), a.target), (pool, SocketAddr::new(TARGET.into(), 8080)));
        froms.push(a.client);
    }
    assert_eq!(froms.len(), 2);
    assert_ne!(froms[0], froms[1]);
    for f in k.transmit() {
        let p = parse(&f).unwrap().unwrap();
        assert_eq!((p.src_ip, p.dst_ip, p.flags), (pool, IpAddr::V4(TARGET), flags::SYN));
        assert!(ipv4::Packet::new_checked(&f[14..]).unwrap().verify_checksum());
    }
}

#[test]
fn a_busy_worker_publishes_by_age_too_so_the_monitor_never_reads_counters_older_than_10_ms() {
    // A few long rounds (a catch-up burst with hundreds of headers each): not 1024 of them, but
    // 10 ms without publishing is the limit. The offline monitor took stale counters (no frames
    // moving, no session active) for the end of a replay.
    assert!(!publish_due(10, Duration::from_millis(9)));
    assert!(publish_due(10, PUBLISH_MAX_AGE));
    assert!(publish_due(PUBLISH_EVERY, Duration::ZERO));
}
