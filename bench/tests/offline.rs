//! Offline replay end to end: traffic captured in the lab (tcpdump on the copier's mirror
//! interface) is replayed from the file — fed straight into the copier's workers, transmitted
//! out of `cout` — through xdpcopy-intercept, at capture speed and 10× faster; `-T 3` in session
//! mode replays every request exactly three times; `-T 2` in stateless mode at top speed sends
//! every frame twice, and every one arrives at the test server; thousands of flows fed to two
//! workers arrive complete and in order; a file with a 9000-byte frame and a one-hour gap replays
//! and stops on SIGINT within a second; bad files are refused with the file and the problem
//! named. Needs root (skipped loudly without it, unless CI).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use bench::{
    build_frame,
    http::{access_log, get_once, settled_access_log, Conn},
    in_netns,
    lab::{addr, iface},
    parse_frame, FrameKind, FrameSpec, Lab, LabSpec, PcapSummary, Role, Running,
};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

/// Records 8 short connections and one keep-alive connection with 4 requests, 100 ms apart.
fn record(lab: &Lab) -> std::path::PathBuf {
    let cap = lab.capture(Role::Copier, iface::COPIER_IN, "recorded.pcap", &["tcp", "port", "80"]).unwrap();
    let online: SocketAddr = (addr::ONLINE, addr::ONLINE_PORT).into();
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..8 {
            assert_eq!(get_once(online, &format!("/rec/short/{i}"))?, 200);
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut k = Conn::open(online)?;
        for i in 0..4 {
            assert_eq!(k.get(&addr::ONLINE.to_string(), &format!("/rec/ka/{i}"), false)?, 200);
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let res = cap.stop().unwrap();
    assert_eq!(res.dropped_by_kernel, Some(0));
    res.path
}

fn replay(lab: &Lab, file: &Path, extra: &[&str], log: &str) -> bench::Summary {
    let transfer = format!("{}-{}:{}", addr::ONLINE_PORT, addr::TEST, addr::TEST_PORT);
    let channel = addr::ASSIST_CHANNEL.to_string();
    let file = file.to_string_lossy().into_owned();
    let mut args = vec!["-i", &file, "-o", iface::COPIER_OUT, "-x", &transfer, "-q", "--offline-tail", "20"];
    if !extra.contains(&"--stateless") {
        args.extend(["-s", &channel]);
    }
    args.extend_from_slice(extra);
    let copier = Running::start(lab, Role::Copier, "xdpcopy", &args, log, "replaying").unwrap();
    // It exits by itself once the file is fed and the sessions are over.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut copier = copier;
    while copier.is_running() {
        assert!(std::time::Instant::now() < deadline, "the offline copier did not exit by itself");
        std::thread::sleep(Duration::from_millis(100));
    }
    bench::Summary::parse(&bench::read_lines(&copier.log)).unwrap()
}

#[test]
fn a_recorded_capture_replays_every_request_and_speeds_up() {
    if !bench::lab_test("offline_replay") {
        return;
    }
    let tag = format!("o{}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
            .unwrap();
    let file = record(&lab);
    let online = settled_access_log(&lab.online_access_log(), "/rec/", Duration::from_secs(5)).unwrap();
    assert_eq!(online.values().sum::<u32>(), 12);

    let intercept = bench::start_intercept(&lab, &[], "intercept.log").unwrap();

    // At capture speed: every request, once.
    let s = replay(&lab, &file, &[], "offline-1x.log");
    let test = access_log(&lab.test_access_log(), "/rec/").unwrap();
    assert_eq!(test, online, "the test server's log differs from the online one");
    assert_eq!(s.get("conns"), 9);
    let span_ms = s.get("feed_capture_ms");
    assert!(span_ms >= 1000, "the recording spans {span_ms} ms");
    assert!(s.get("feed_ms") + 50 >= span_ms, "1x took {} ms for {span_ms} ms of capture", s.get("feed_ms"));
    intercept.stop().unwrap();

    // 10x faster: every request again, in about a tenth of the time. On a fresh lab: the test
    // server still holds the first replay's connections in TIME_WAIT (60 s), and a replayed SYN
    // carries the same ISN as then.
    let tag = format!("p{}", std::process::id() % 100_000);
    let lab2 =
        Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
            .unwrap();
    let intercept = bench::start_intercept(&lab2, &[], "intercept.log").unwrap();
    let s = replay(&lab2, &file, &["-a", "10"], "offline-10x.log");
    let test = access_log(&lab2.test_access_log(), "/rec/").unwrap();
    assert_eq!(test, online, "10x: the test server's log differs from the online one");
    let (took, want) = (s.get("feed_ms") as f64, s.get("feed_capture_ms") as f64 / 10.0);
    assert!(
        (want * 0.5..=want * 2.0 + 100.0).contains(&took),
        "-a 10 took {took} ms, a tenth of the capture is {want} ms"
    );
    intercept.stop().unwrap();
    drop(lab2);

    // Stateless, twice over (-T 2), at top speed: every frame of the file out twice, and every
    // one arrives at the test server.
    let frames = PcapSummary::from_file(&file).unwrap().frames;
    let cap =
        lab.capture(Role::Test, iface::TEST_IN, "offline-stateless.pcap", &["tcp", "dst", "port", "8080"]).unwrap();
    let s = replay(&lab, &file, &["--stateless", "-T", "2", "--topspeed"], "offline-stateless.log");
    assert_eq!(s.get("feed_frames"), 2 * frames);
    assert_eq!(s.get("tx_frames"), 2 * frames);
    assert_eq!((s.get("feed_filtered"), s.get("feed_too_big"), s.get("xdp_seen")), (0, 0, 0), "no XDP program offline");
    let res = cap.stop().unwrap();
    assert_eq!(res.dropped_by_kernel, Some(0), "the capture at the test server lost frames (machine overloaded?)");
    assert_eq!(PcapSummary::from_file(&res.path).unwrap().frames, 2 * frames, "every frame arrived");
}

#[test]
fn a_recorded_capture_replayed_three_times_in_session_mode_repeats_every_request_three_times() {
    if !bench::lab_test("offline_three_loops") {
        return;
    }
    let tag = format!("t{}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
            .unwrap();
    let file = record(&lab);
    let online = settled_access_log(&lab.online_access_log(), "/rec/", Duration::from_secs(5)).unwrap();
    assert_eq!(online.values().sum::<u32>(), 12);
    let intercept = bench::start_intercept(&lab, &[], "intercept.log").unwrap();
    // Loop 2 starts right after loop 1's last packet, while its connections close; each loop
    // replays from client ports no earlier loop used, so none of them meets the test server's
    // TIME_WAIT of the one before.
    let out = lab.out_dir().join("t3-out.pcap");
    let out_arg = out.to_string_lossy().into_owned();
    let s =
        replay(&lab, &file, &["-T", "3", "-a", "2", "--pcap-out", &out_arg, "--pcap-out-responses"], "offline-t3.log");
    let test = settled_access_log(&lab.test_access_log(), "/rec/", Duration::from_secs(3)).unwrap();
    let thrice: std::collections::BTreeMap<_, _> = online.iter().map(|(k, v)| (k.clone(), 3 * v)).collect();
    assert_eq!(test, thrice, "every request exactly three times");
    assert_eq!(s.get("conns"), 27);
    assert_eq!((s.get("resp_rst"), s.get("tuple_exhausted")), (0, 0));
    let frames = PcapSummary::from_file(&file).unwrap().frames;
    assert_eq!(s.get("feed_frames"), 3 * frames);
    intercept.stop().unwrap();

    // --pcap-out-responses: the file holds both directions, every frame sent and every header
    // the intercept returned (as a frame cut after its TCP header).
    let (mut to_test, mut from_test) = (0u64, 0u64);
    let mut reader = PcapReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap();
        let p = parse_frame(&pkt.data);
        match (p.src_port, p.dst_port) {
            (_, Some(addr::TEST_PORT)) => to_test += 1,
            (Some(addr::TEST_PORT), _) => {
                from_test += 1;
                assert!(pkt.orig_len as usize >= pkt.data.len(), "a response's original length is kept");
            }
            other => panic!("a frame of neither direction: {other:?}"),
        }
    }
    assert_eq!(to_test + from_test + s.get("pcap_out_dropped"), s.get("tx_frames") + s.get("channel_headers"));
    assert!(to_test > 0 && from_test > 0, "both directions: {to_test} sent, {from_test} returned");
}

/// A pcap of `flows` flows × `per_flow` frames to port 80, round robin over the flows
/// (`gap` apart), each frame's payload marked with (flow × per_flow + its index in the flow).
fn many_flows_pcap(path: &Path, flows: u16, per_flow: u32, gap: Duration) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let spec = FrameSpec { dst_port: addr::ONLINE_PORT, ..FrameSpec::default() };
    let mut t = Duration::from_secs(1_764_000_000);
    for i in 0..per_flow {
        for f in 0..flows {
            let s = FrameSpec { src_port: 20_000 + f, tcp_seq: i, ..spec.clone() };
            let frame = build_frame(&s, FrameKind::Good, 64, u32::from(f) * per_flow + i).unwrap();
            w.write_packet(&PcapPacket::new(t, frame.len() as u32, &frame)).unwrap();
            t += gap;
        }
    }
}

#[test]
fn thousands_of_flows_fed_to_two_workers_arrive_complete_and_in_order() {
    if !bench::lab_test("offline_flows") {
        return;
    }
    let tag = format!("f{}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 2, nginx: false, mirror_egress: false, traditional: false, dual_stack: false })
            .unwrap();
    let (flows, per_flow) = (4000u16, 3u32);
    let file = lab.out_dir().join("flows.pcap");
    // 12,000 frames over 1.2 s: paced, so the capture at the test server keeps up on a busy
    // machine; the feed and both workers still interleave the flows finely.
    many_flows_pcap(&file, flows, per_flow, Duration::from_micros(100));
    let cap = lab.capture(Role::Test, iface::TEST_IN, "flows-t0.pcap", &["tcp", "dst", "port", "8080"]).unwrap();
    let s = replay(&lab, &file, &["--stateless", "--queues", "2"], "offline-flows.log");
    let res = cap.stop().unwrap();
    let total = u64::from(flows) * u64::from(per_flow);
    assert_eq!((s.get("feed_frames"), s.get("tx_frames")), (total, total));
    assert_eq!(res.dropped_by_kernel, Some(0), "the capture lost frames (machine overloaded?)");
    // Per flow, the markers in arrival order.
    let mut seen: HashMap<u16, Vec<u32>> = HashMap::new();
    let mut reader = PcapReader::new(std::fs::File::open(&res.path).unwrap()).unwrap();
    while let Some(pkt) = reader.next_packet() {
        let p = parse_frame(&pkt.unwrap().data);
        let (Some(port), Some((mark, true))) = (p.src_port, p.marker) else { panic!("an unexpected frame: {p:?}") };
        seen.entry(port).or_default().push(mark);
    }
    assert_eq!(seen.len(), usize::from(flows), "every flow arrived");
    for (port, marks) in &seen {
        let f = u32::from(port - 20_000);
        let want: Vec<u32> = (0..per_flow).map(|i| f * per_flow + i).collect();
        assert_eq!(marks, &want, "flow {port}: every frame, once, in order");
    }
}

/// The IPv4 header checksum of `h`.
fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A pcap: a frame, a 9000-byte segment (a GRO capture's), a frame, and one more an hour later.
fn big_frame_and_gap_pcap(path: &Path) {
    let spec = FrameSpec { dst_port: addr::ONLINE_PORT, ..FrameSpec::default() };
    let small = |seqno: u32| {
        build_frame(&FrameSpec { tcp_seq: 1_000_000 + seqno * 1000, ..spec.clone() }, FrameKind::Good, 64, seqno)
            .unwrap()
    };
    let mut big = build_frame(&FrameSpec { tcp_seq: 1_001_000, ..spec.clone() }, FrameKind::Good, 1514, 1).unwrap();
    big.resize(9000, 0xab);
    big[16..18].copy_from_slice(&(9000u16 - 14).to_be_bytes());
    big[24..26].copy_from_slice(&[0, 0]);
    let c = ip_checksum(&big[14..34]);
    big[24..26].copy_from_slice(&c.to_be_bytes());
    let t0 = Duration::from_secs(1_764_000_000);
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (at, f) in [
        (t0, small(0)),
        (t0 + Duration::from_millis(10), big),
        (t0 + Duration::from_millis(20), small(10)),
        (t0 + Duration::from_secs(3600), small(11)),
    ] {
        w.write_packet(&PcapPacket::new(at, f.len() as u32, &f)).unwrap();
    }
}

#[test]
fn a_jumbo_frame_and_a_one_hour_gap_replay_and_stop_on_sigint_within_a_second() {
    if !bench::lab_test("offline_gap") {
        return;
    }
    let tag = format!("g{}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
            .unwrap();
    let file = lab.out_dir().join("gap.pcap");
    big_frame_and_gap_pcap(&file);
    let file = file.to_string_lossy().into_owned();
    let transfer = format!("{}-{}:{}", addr::ONLINE_PORT, addr::TEST, addr::TEST_PORT);
    let channel = addr::ASSIST_CHANNEL.to_string();
    let intercept = bench::start_intercept(&lab, &[], "intercept.log").unwrap();
    for (mode, extra) in [("stateless", vec!["--stateless"]), ("session", vec!["-s", channel.as_str()])] {
        let mut args = vec!["-i", file.as_str(), "-o", iface::COPIER_OUT, "-x", transfer.as_str(), "-q"];
        args.extend(extra);
        let log = format!("offline-gap-{mode}.log");
        let mut copier = Running::start(&lab, Role::Copier, "xdpcopy", &args, &log, "replaying").unwrap();
        // The frames before the gap go within milliseconds; then the feed sleeps for an hour.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(copier.is_running(), "{mode}: the copier is waiting for the frame an hour later");
        copier.signal(libc::SIGINT).unwrap();
        let asked = Instant::now();
        let status = copier.wait_exit(Duration::from_secs(5)).unwrap();
        let took = asked.elapsed();
        assert!(status.is_some_and(|s| s.success()), "{mode}: clean exit, got {status:?}");
        assert!(took < Duration::from_secs(1), "{mode}: SIGINT took {took:?}");
        let s = bench::Summary::parse(&bench::read_lines(&copier.log)).unwrap();
        if mode == "stateless" {
            // Replayed as it is or not at all: the 9000-byte frame fits no UMEM chunk.
            assert_eq!((s.get("feed_too_big"), s.get("feed_split"), s.get("feed_frames")), (1, 0, 2), "{mode}");
            assert_eq!(s.get("tx_frames"), 2, "{mode}");
        } else {
            // The session engine splits to -M anyway: the feed splits it to fit its chunks.
            assert_eq!((s.get("feed_too_big"), s.get("feed_split")), (0, 1), "{mode}");
            assert_eq!(s.get("feed_frames"), 2 + 3, "{mode}: two frames and the three pieces");
        }
    }
    intercept.stop().unwrap();
}

#[test]
fn bad_capture_files_are_refused_with_the_file_and_the_problem_named() {
    if !bench::lab_test("offline_bad_files") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("xdpc-badfiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong = dir.join("wrong.pcap");
    std::fs::write(&wrong, b"this is not a capture file at all").unwrap();
    let wifi = dir.join("wifi.pcap");
    // A valid pcap header (µs, little endian) with link type 105 (IEEE 802.11).
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0u8; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&105u32.to_le_bytes());
    std::fs::write(&wifi, &h).unwrap();
    for (file, want) in [(&wrong, "not a pcap or pcapng file"), (&wifi, "unsupported link type 105")] {
        let out = std::process::Command::new(bench::bin_path("xdpcopy").unwrap())
            .args(["-i"])
            .arg(file)
            .args(["-o", "lo", "-x", "80-127.0.0.1:8080", "--stateless"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&*file.to_string_lossy()) && err.contains(want), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
