//! The stateless copier in the lab, end to end: real XDP program, real AF_XDP sockets, real
//! veths, frames from an AF_PACKET sender on the client mirrored off the online server's ingress.
//! Needs root: skipped loudly without it, unless CI is set, where it fails.

use std::{collections::BTreeSet, time::Duration};

use bench::{
    lab::{addr, iface},
    send_frames_in_ns, FlowKey, FrameKind, FrameSpec, Lab, LabSpec, PcapSummary, Role, Running, SendSpec, Summary,
};

fn lab(name: &str, nginx: bool) -> Lab {
    let tag = format!("s{}-{name}", std::process::id() % 100_000);
    Lab::up(LabSpec { tag, queues: 2, nginx, mirror_egress: false, traditional: false, dual_stack: false })
        .expect("lab up")
}

const TRANSFER: &str = "80-10.201.2.2:8080";

fn start_copier(lab: &Lab, extra: &[&str]) -> Running {
    let mut args = vec!["--stateless", "-x", TRANSFER, "-i", iface::COPIER_IN, "-o", iface::COPIER_OUT];
    args.extend_from_slice(extra);
    Running::start(lab, Role::Copier, "xdpcopy", &args, "xdpcopy.log", "capturing on").expect("xdpcopy starts")
}

/// Frames from the client to the online server's port, `count` of them from `first_seq`.
fn to_online(lab: &Lab, kind: FrameKind, port: u16, count: u64, first_seq: u32, sizes: Vec<usize>) -> SendSpec {
    SendSpec {
        iface: iface::CLIENT.into(),
        frame: FrameSpec {
            src_mac: lab.mac(Role::Client, iface::CLIENT).unwrap(),
            dst_mac: lab.mac(Role::Online, iface::ONLINE).unwrap(),
            src_ip: addr::CLIENT,
            dst_ip: addr::ONLINE,
            dst_port: port,
            ..FrameSpec::default()
        },
        kind,
        sizes,
        count,
        rate_pps: 4000,
        first_seq,
        flows: 8,
    }
}

fn send(lab: &Lab, spec: &SendSpec) {
    let report = send_frames_in_ns(&lab.ns(Role::Client), spec).expect("send");
    assert_eq!(report.sent, spec.count);
}

/// Gives the last frames time to cross mirror → copier → test before captures stop.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn forwards_every_size_rewritten_with_valid_checksums_and_only_to_the_target() {
    if !bench::lab_test("forwards_every_size") {
        return;
    }
    let lab = lab("fwd", false);
    let t0 = lab.mac(Role::Test, iface::TEST_IN).unwrap();
    let cout = lab.mac(Role::Copier, iface::COPIER_OUT).unwrap();
    let sent = lab.out_dir().join("sent.pcap");
    let copier = start_copier(&lab, &["--pcap-out", &sent.to_string_lossy()]);
    let before = lab.nstat(Role::Test).unwrap();
    // Everything that reaches the test server, unfiltered: the safety check below needs it all.
    let cap = lab.capture(Role::Test, iface::TEST_IN, "t0.pcap", &["-Q", "in"]).unwrap();

    let n = 1000u32;
    let sizes = vec![64, 65, 512, 1000, 1514];
    send(&lab, &to_online(&lab, FrameKind::Good, 80, n.into(), 0, sizes.clone()));
    settle();
    let res = cap.stop().unwrap();
    let summary: Summary = copier.stop().unwrap();
    let s = PcapSummary::from_file(&res.path).unwrap();
    eprintln!("{s}");

    // Every frame arrived once, rewritten, with valid IPv4 and TCP checksums.
    s.check_seqs_exactly(0..n).unwrap();
    s.check_checksums().unwrap();
    for size in &sizes {
        assert_eq!(s.sizes.get(size), Some(&u64::from(n / 5)), "frames of {size} bytes");
    }
    let flow = FlowKey { src: addr::CLIENT.into(), dst: addr::TEST.into(), dst_port: 8080 };
    assert_eq!(s.flows.get(&flow), Some(&u64::from(n)));
    // Safety: nothing but the configured target was addressed (the only other frames on the wire
    // are the copier host's own ARP), and everything came from the copier's output interface.
    assert_eq!(s.flows.len(), 1, "unexpected flows: {:?}", s.flows);
    assert_eq!(s.tcp, u64::from(n));
    assert!(s.dst_macs.contains(&t0));
    assert_eq!(s.src_macs, BTreeSet::from([cout]));

    // The receiving kernel verified the checksums too.
    let after = lab.nstat(Role::Test).unwrap();
    assert_eq!(after["TcpInCsumErrors"], 0);
    assert!(after["TcpInSegs"] - before["TcpInSegs"] >= u64::from(n));

    // The copier's counters add up.
    assert_eq!(summary.get("rx_frames"), u64::from(n));
    assert_eq!(summary.get("tx_frames"), u64::from(n));
    assert_eq!(summary.get("tx_completed"), u64::from(n));
    assert_eq!(summary.get("dropped"), 0);
    assert_eq!(summary.get("xdp_redirected"), u64::from(n));
    assert_eq!(summary.get("xsk_rx_dropped") + summary.get("xsk_rx_ring_full"), 0);

    // --pcap-out recorded exactly what went out: the same frames the test server received.
    let out = PcapSummary::from_file(&sent).unwrap();
    out.check_seqs_exactly(0..n).unwrap();
    out.check_checksums().unwrap();
    assert_eq!(out.flows, s.flows);
    assert_eq!(out.frames, u64::from(n));
    assert_eq!(summary.get("pcap_out_written"), u64::from(n));
    assert_eq!(summary.get("pcap_out_dropped"), 0);
}

#[test]
fn other_ports_never_reach_the_worker_and_online_keeps_serving() {
    if !bench::lab_test("other_ports") {
        return;
    }
    let lab = lab("ports", true);

    // 1. Exact accounting: frames to port 81 are passed to the kernel, port 80 copied.
    let copier = start_copier(&lab, &[]);
    let cap = lab.capture(Role::Test, iface::TEST_IN, "t0.pcap", &["tcp"]).unwrap();
    send(&lab, &to_online(&lab, FrameKind::Good, 81, 300, 10_000, vec![64, 512]));
    send(&lab, &to_online(&lab, FrameKind::Good, 80, 300, 0, vec![64, 512]));
    settle();
    let res = cap.stop().unwrap();
    let summary = copier.stop().unwrap();
    let s = PcapSummary::from_file(&res.path).unwrap();
    s.check_seqs_exactly(0..300).unwrap();
    assert_eq!(summary.get("rx_frames"), 300, "the worker saw frames it did not ask for");
    assert_eq!(summary.get("tx_frames"), 300);
    assert!(summary.get("xdp_passed") >= 300);
    assert_eq!(summary.get("dropped"), 0);

    // 2. Real HTTP through the online server while the copier runs: production is unaffected,
    //    and the copies reach the test server.
    let copier = start_copier(&lab, &[]);
    let before = lab.nstat(Role::Test).unwrap();
    for i in 0..30 {
        let url = format!("http://{}/stateless/{i}", addr::ONLINE);
        let out = lab
            .run(Role::Client, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", &url])
            .unwrap();
        assert_eq!(out.trim(), "200", "request {i} to the online server");
    }
    settle();
    let summary = copier.stop().unwrap();
    let log = std::fs::read_to_string(lab.online_access_log()).unwrap();
    let served: Vec<&str> = log.lines().filter(|l| l.contains("/stateless/")).collect();
    assert_eq!(served.len(), 30, "online access log:\n{log}");
    assert!(served.iter().all(|l| l.contains(" 200 ")), "online access log:\n{log}");
    let after = lab.nstat(Role::Test).unwrap();
    // Each curl sends at least SYN, request and FIN: all of them copied to the test server.
    assert!(after["TcpInSegs"] - before["TcpInSegs"] >= 90, "test server got too few segments");
    assert!(summary.get("tx_frames") >= 90);
    assert_eq!(summary.get("dropped"), 0);
}

#[test]
fn malformed_frames_are_counted_and_the_worker_keeps_running() {
    if !bench::lab_test("malformed") {
        return;
    }
    let lab = lab("bad", false);
    let copier = start_copier(&lab, &[]);
    let cap = lab.capture(Role::Test, iface::TEST_IN, "t0.pcap", &["tcp"]).unwrap();
    let bad = [
        FrameKind::BadIhl,
        FrameKind::BadDataOffsetSmall,
        FrameKind::BadDataOffsetBeyond,
        FrameKind::TruncatedTcp,
        FrameKind::TotalLenTooBig,
    ];
    for (i, kind) in bad.iter().enumerate() {
        send(&lab, &to_online(&lab, *kind, 80, 40, 1000 * (i as u32 + 1), vec![kind.min_size().max(64)]));
    }
    send(&lab, &to_online(&lab, FrameKind::Good, 80, 200, 0, vec![64, 1514]));
    settle();
    let res = cap.stop().unwrap();
    let summary = copier.stop().expect("the copier survives and exits cleanly");
    let s = PcapSummary::from_file(&res.path).unwrap();
    s.check_seqs_exactly(0..200).unwrap();
    s.check_checksums().unwrap();

    assert_eq!(summary.get("drop_malformed"), 200, "{summary:?}");
    assert_eq!(summary.get("malformed_bad_ip_header_len"), 40);
    assert_eq!(summary.get("malformed_bad_tcp_data_offset"), 80);
    assert_eq!(summary.get("malformed_bad_ip_total_len"), 40);
    assert_eq!(summary.get("malformed_truncated"), 40);
    // The XDP program flagged the ones whose port it could not read.
    assert_eq!(summary.get("xdp_malformed"), 80);
    assert_eq!(summary.get("tx_frames"), 200);
    assert_eq!(summary.get("rx_frames"), 400);
}

#[test]
fn mirror_option_copies_without_taking_traffic_and_cleans_up() {
    if !bench::lab_test("mirror_option") {
        return;
    }
    let lab = lab("mirror", true);
    let cin = lab.mac(Role::Copier, iface::COPIER_IN).unwrap();
    // A copier on the production host itself: it mirrors o0 and sends out of mir0 (whose peer is
    // the copier namespace's cin, where we capture), next hop given explicitly.
    let transfer = format!("80-10.201.2.2:8080@{cin}");
    let args = ["--stateless", "--mirror", iface::ONLINE, "-o", iface::ONLINE_MIRROR, "-x", &transfer, "--queues", "1"];
    let copier = Running::start(&lab, Role::Online, "xdpcopy", &args, "mirror.log", "capturing on").unwrap();
    let filters = lab.run(Role::Online, &["tc", "filter", "show", "dev", iface::ONLINE, "ingress"]).unwrap();
    assert!(
        filters.contains("pref 9 ") && filters.contains("xdpcm"),
        "no xdpcopy mirror filter ahead of the lab's: {filters}"
    );
    let cap = lab.capture(Role::Copier, iface::COPIER_IN, "cin.pcap", &["tcp", "dst", "port", "8080"]).unwrap();
    for i in 0..10 {
        let url = format!("http://{}/mirror/{i}", addr::ONLINE);
        let out = lab
            .run(Role::Client, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", &url])
            .unwrap();
        assert_eq!(out.trim(), "200");
    }
    settle();
    let res = cap.stop().unwrap();
    let summary = copier.stop().unwrap();
    let s = PcapSummary::from_file(&res.path).unwrap();
    assert!(s.tcp >= 30, "copies seen on the far side: {s}");
    s.check_checksums().unwrap();
    assert_eq!(summary.get("tx_frames"), s.tcp);
    // Cleaned up: our filter and veth are gone, the lab's own mirror is still there.
    let filters = lab.run(Role::Online, &["tc", "filter", "show", "dev", iface::ONLINE, "ingress"]).unwrap();
    assert!(!filters.contains("pref 9 "), "xdpcopy's filter left behind: {filters}");
    assert!(filters.contains("mirred"), "the lab's own mirror was removed: {filters}");
    let links = lab.run(Role::Online, &["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("xdpcm"), "mirror veth left behind: {links}");
}

#[test]
fn vlan_tagged_frames_are_copied_untagged_and_ipv6_is_accounted() {
    if !bench::lab_test("vlan_ipv6") {
        return;
    }
    let lab = lab("vlan", false);
    let copier = start_copier(&lab, &[]);
    let cap = lab.capture(Role::Test, iface::TEST_IN, "t0.pcap", &["-Q", "in"]).unwrap();
    send(&lab, &to_online(&lab, FrameKind::Vlan(42), 80, 100, 0, vec![68, 1518]));
    // IPv6 TCP to the port: selected by the XDP program, but the transfer's target is IPv4.
    send(&lab, &to_online(&lab, FrameKind::Ipv6, 80, 50, 500, vec![100]));
    settle();
    let res = cap.stop().unwrap();
    let summary = copier.stop().unwrap();
    let s = PcapSummary::from_file(&res.path).unwrap();
    s.check_seqs_exactly(0..100).unwrap();
    s.check_checksums().unwrap();
    assert_eq!(s.vlan, 0, "the tag must be removed on the way out");
    // Untagged: 4 bytes shorter than what was captured.
    assert_eq!(s.sizes.get(&64), Some(&50));
    assert_eq!(s.sizes.get(&1514), Some(&50));
    assert_eq!(summary.get("tx_frames"), 100);
    assert_eq!(summary.get("drop_family_mismatch"), 50);
    assert_eq!(summary.get("rx_frames"), 150);
}
