//! Lab integration tests. They need root (network namespaces, veths, tc, AF_PACKET): without it
//! they are skipped loudly, unless CI is set, where they fail.

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bench::lab::{addr, iface};
use bench::netns::list_namespaces;
use bench::{
    send_frames_in_ns, wait_for_line, FlowKey, FrameKind, FrameSpec, Lab, LabSpec, PcapSummary, Role, SendSpec,
};

/// A tag unique to this test process and test.
fn tag(name: &str) -> String {
    format!("t{}-{name}", std::process::id() % 100_000)
}

/// Removes the lab's output directory (kept by teardown for post-mortems) once a test passed.
fn remove_out_dir(tag: &str) {
    let _ = std::fs::remove_dir_all(format!("/tmp/xdpc-{tag}"));
}

fn spec(tag: &str, nginx: bool) -> LabSpec {
    LabSpec { tag: tag.to_owned(), queues: 2, nginx, mirror_egress: false, traditional: false, dual_stack: false }
}

fn lab_namespaces(tag: &str) -> Vec<String> {
    let prefix = format!("xdpc-{tag}-");
    list_namespaces().unwrap().into_iter().filter(|n| n.starts_with(&prefix)).collect()
}

fn curl(lab: &Lab, role: Role, url: &str) -> String {
    lab.run(role, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "--max-time", "5", url])
        .unwrap()
}

#[test]
fn nginx_servers_answer_and_log() {
    if !bench::root_or_skip("nginx_servers_answer_and_log") {
        return;
    }
    let t = tag("nginx");
    let lab = Lab::up(spec(&t, true)).unwrap();

    assert_eq!(curl(&lab, Role::Client, "http://10.201.1.2/probe-online-1"), "200 3");
    let line =
        wait_for_line(&lab.online_access_log(), "GET /probe-online-1 HTTP/1.1 200 10.201.1.1:", Duration::from_secs(5))
            .unwrap();
    let port: u16 = line.rsplit(':').next().and_then(|p| p.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(port > 1024, "client port in {line:?}");
    assert_eq!(curl(&lab, Role::Client, "http://10.201.1.2/big"), "200 65536");

    assert_eq!(curl(&lab, Role::Test, "http://10.201.2.2:8080/probe-test-1"), "200 3");
    wait_for_line(&lab.test_access_log(), "GET /probe-test-1 HTTP/1.1 200 10.201.2.2:", Duration::from_secs(5))
        .unwrap();

    // Readiness probes log nothing: each log holds exactly the requests made to it.
    let online = bench::read_lines(&lab.online_access_log());
    assert_eq!(online.len(), 2, "{online:?}");
    let test = bench::read_lines(&lab.test_access_log());
    assert_eq!(test.len(), 1, "{test:?}");
    lab.shutdown().unwrap();
    assert!(lab_namespaces(&t).is_empty());
    remove_out_dir(&t);
}

#[test]
fn mirror_carries_burst_to_copier() {
    if !bench::root_or_skip("mirror_carries_burst_to_copier") {
        return;
    }
    let t = tag("mirror");
    let lab = Lab::up(spec(&t, false)).unwrap();
    let c0 = lab.mac(Role::Client, iface::CLIENT).unwrap();
    let o0 = lab.mac(Role::Online, iface::ONLINE).unwrap();
    let before = lab.nstat(Role::Online).unwrap();

    let cap = lab.capture(Role::Copier, iface::COPIER_IN, "mirror.pcap", &["tcp", "and", "dst", "port", "80"]).unwrap();
    let n = 600u32;
    let send = SendSpec {
        iface: iface::CLIENT.into(),
        frame: FrameSpec {
            src_mac: c0,
            dst_mac: o0,
            src_ip: addr::CLIENT,
            dst_ip: addr::ONLINE,
            dst_port: 80,
            ..FrameSpec::default()
        },
        kind: FrameKind::Good,
        sizes: vec![64, 512, 1500],
        count: u64::from(n),
        rate_pps: 5000,
        first_seq: 0,
        flows: 4,
    };
    let report = send_frames_in_ns(&lab.ns(Role::Client), &send).unwrap();
    assert_eq!(report.sent, u64::from(n));
    let res = cap.stop().unwrap();
    assert_eq!(res.dropped_by_kernel, Some(0), "tcpdump dropped frames");

    let s = PcapSummary::from_file(&res.path).unwrap();
    eprintln!("{s}");
    s.check_seqs_exactly(0..n).unwrap();
    s.check_checksums().unwrap();
    assert_eq!(s.frames, u64::from(n));
    assert_eq!(s.src_macs, BTreeSet::from([c0]));
    assert_eq!(s.dst_macs, BTreeSet::from([o0]));
    assert_eq!(s.sizes.get(&64), Some(&200));
    assert_eq!(s.sizes.get(&512), Some(&200));
    assert_eq!(s.sizes.get(&1500), Some(&200));
    let flow = FlowKey { src: addr::CLIENT.into(), dst: addr::ONLINE.into(), dst_port: 80 };
    assert_eq!(s.flows.get(&flow), Some(&u64::from(n)));

    // The online server's own stack received the originals, with good checksums.
    let after = lab.nstat(Role::Online).unwrap();
    assert!(after["TcpInSegs"] - before["TcpInSegs"] >= u64::from(n));
    assert_eq!(after["TcpInCsumErrors"], 0);
    assert_eq!(after["IpInHdrErrors"], 0);
    drop(lab);
    remove_out_dir(&t);
}

#[test]
fn topology_routes_and_sysctls() {
    if !bench::root_or_skip("topology_routes_and_sysctls") {
        return;
    }
    let t = tag("topo");
    let lab = Lab::up(LabSpec { queues: 3, ..spec(&t, false) }).unwrap();
    assert_eq!(lab_namespaces(&t).len(), 5);

    // The assist server is a black hole; the test server answers clients via it.
    assert_eq!(lab.sysctl(Role::Assist, "net.ipv4.ip_forward").unwrap(), "0");
    for key in ["all", "default", "t0", "t1"] {
        assert_eq!(lab.sysctl(Role::Test, &format!("net.ipv4.conf.{key}.rp_filter")).unwrap(), "0");
    }
    let route = lab.run(Role::Test, &["ip", "route", "get", "10.201.1.77"]).unwrap();
    assert!(route.contains("via 10.201.3.2 dev t1"), "{route}");

    // Queues and checksum offload.
    let queues = lab.run(Role::Copier, &["ls", "/sys/class/net/cin/queues"]).unwrap();
    let q: BTreeSet<&str> = queues.split_whitespace().collect();
    assert_eq!(q, BTreeSet::from(["rx-0", "rx-1", "rx-2", "tx-0", "tx-1", "tx-2"]));
    for (role, ifn) in [(Role::Client, "c0"), (Role::Online, "o0"), (Role::Test, "t1"), (Role::Copier, "cch")] {
        let k = lab.run(role, &["ethtool", "-k", ifn]).unwrap();
        assert!(k.contains("tx-checksumming: off"), "{ifn}: {k}");
    }

    // The copier resolves t0's MAC itself (no static neighbour entry): a connection attempt to
    // a closed port on the test server is refused, and leaves a learned entry behind.
    let refused = lab
        .in_ns(Role::Copier, || {
            let a = SocketAddr::V4(SocketAddrV4::new(addr::TEST, 9));
            Ok(TcpStream::connect_timeout(&a, Duration::from_secs(2)))
        })
        .unwrap();
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);
    let t0 = lab.mac(Role::Test, iface::TEST_IN).unwrap();
    let neigh = lab.run(Role::Copier, &["ip", "neigh", "show", "10.201.2.2"]).unwrap();
    assert!(neigh.contains(&t0.to_string()), "{neigh}");
    assert!(!neigh.contains("PERMANENT"), "{neigh}");

    // The header-return channel link is up (refused: nothing listens yet).
    let refused = lab
        .in_ns(Role::Copier, || {
            let a = SocketAddr::V4(SocketAddrV4::new(addr::ASSIST_CHANNEL, addr::CHANNEL_PORT));
            Ok(TcpStream::connect_timeout(&a, Duration::from_secs(2)))
        })
        .unwrap();
    assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::ConnectionRefused);

    // Nothing of the lab appears in the root namespace.
    let root_links = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    let root_links = String::from_utf8_lossy(&root_links.stdout);
    assert!(!root_links.contains(&format!("xdpc-{t}-")), "{root_links}");

    drop(lab);
    assert!(lab_namespaces(&t).is_empty());
    remove_out_dir(&t);
}

#[test]
fn teardown_on_panic_leftovers_and_idempotent_down() {
    if !bench::root_or_skip("teardown_on_panic_leftovers_and_idempotent_down") {
        return;
    }
    let t = tag("teardown");

    // A panicking test still tears its lab down (nginx included).
    let tc = t.clone();
    let pids = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::up(spec(&tc, true)).unwrap();
        pids.lock().unwrap().extend(bench::netns::ns_pids(&lab.ns(Role::Online)));
        assert_eq!(lab_namespaces(&tc).len(), 5);
        panic!("deliberate panic with a lab up");
    }));
    assert!(r.is_err());
    assert!(lab_namespaces(&t).is_empty());
    let pids = pids.into_inner().unwrap();
    assert!(!pids.is_empty());
    for p in pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
        assert!(matches!(state, None | Some("Z") | Some("X")), "nginx {p} still running: {stat}");
    }

    // `down` is idempotent.
    Lab::down(&t).unwrap();
    Lab::down(&t).unwrap();

    // Leftovers of a crashed run (a namespace with a process in it) are cleaned by `up`.
    let ns = format!("xdpc-{t}-client");
    assert!(Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
    let mut sleeper =
        Command::new("ip").args(["netns", "exec", &ns, "sleep", "60"]).stdin(Stdio::null()).spawn().unwrap();
    assert!(bench::netns::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        !bench::netns::ns_pids(&ns).is_empty()
    }));
    let lab = Lab::up(spec(&t, false)).unwrap();
    assert!(
        sleeper.try_wait().unwrap().is_some() || {
            std::thread::sleep(Duration::from_millis(200));
            sleeper.try_wait().unwrap().is_some()
        }
    );
    assert_eq!(lab_namespaces(&t).len(), 5);
    lab.shutdown().unwrap();
    assert!(lab_namespaces(&t).is_empty());
    remove_out_dir(&t);
}
