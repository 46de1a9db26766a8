//! IPv6 sessions end to end in a dual-stack lab (issue 11): IPv6 clients of the online nginx and
//! redis replayed exactly beside IPv4 ones, the channel itself over IPv6, family translation
//! both ways, an intercept that speaks protocol 6 only, an IPv6 capture replayed offline with
//! `-n 3 -c PREFIX`, and the traditional architecture (`xdpcopy-intercept --local`) with IPv6.
//! Needs root: skipped loudly without it, unless CI is set, where it fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use bench::{
    http::{access_log, get_once, host, settled_access_log, Conn},
    in_netns,
    lab::{addr, iface},
    replay_check::{diff, redis_dump, redis_workload, settle_log, settle_redis_commands},
    Lab, LabSpec, Role, Running, Summary,
};

fn lab(name: &str) -> Lab {
    let tag = format!("v{}-{name}", std::process::id() % 100_000);
    Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: true })
        .expect("lab up")
}

/// A dual-stack lab of the traditional architecture (`bench::lab`'s module docs).
fn traditional_lab(name: &str) -> Lab {
    let tag = format!("v{}-{name}", std::process::id() % 100_000);
    Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: true, dual_stack: true })
        .expect("lab up")
}

fn online4() -> SocketAddr {
    SocketAddr::from((addr::ONLINE, addr::ONLINE_PORT))
}

fn online6() -> SocketAddr {
    SocketAddr::from((addr::ONLINE6, addr::ONLINE_PORT))
}

fn test6(port: u16) -> String {
    format!("[{}]:{port}", addr::TEST6)
}

/// The HTTP transfers of both families: port 80 to the test nginx's address of the same family.
fn http_transfers() -> String {
    format!("80-{}:{},80-{}", addr::TEST, addr::TEST_PORT, test6(addr::TEST_PORT))
}

/// The intercept for both test addresses (`extra`: more options).
fn start_intercept(lab: &Lab, extra: &[&str], log: &str) -> Running {
    let t6 = test6(addr::TEST_PORT);
    let mut args = vec!["--target", &t6];
    args.extend_from_slice(extra);
    bench::start_intercept(lab, &args, log).expect("intercept starts")
}

/// The copier with the channel to `channel` (`-s`), waiting until both connections are up.
fn start_copier(lab: &Lab, channel: &str, args: &[&str], log: &str) -> Running {
    let mut all = vec!["-i", iface::COPIER_IN, "-o", iface::COPIER_OUT, "-s", channel];
    all.extend_from_slice(args);
    let copier = Running::start(lab, Role::Copier, "xdpcopy", &all, log, "capturing on").expect("xdpcopy starts");
    copier.wait_for("channel up 2", Duration::from_secs(10)).expect("both channel connections up");
    copier
}

/// path → the client address of every request with that path prefix in `log`
/// (`$request $status $remote_addr:$remote_port ...`).
fn senders(log: &std::path::Path, prefix: &str) -> BTreeMap<String, Vec<SocketAddr>> {
    let mut out = BTreeMap::<String, Vec<SocketAddr>>::new();
    for l in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 5 && w[1].starts_with(prefix) {
            let (ip, port) = w[4].rsplit_once(':').expect("addr:port");
            let from = SocketAddr::new(ip.parse::<IpAddr>().expect("an address"), port.parse().expect("a port"));
            out.entry(w[1].to_owned()).or_default().push(from);
        }
    }
    out
}

/// For a failure message: whether the copier saw every connection (a loaded machine can lose
/// frames on the mirror veth before XDP sees them: then the missing requests are not the
/// replay's), with the capture veth's own counters.
fn capture_loss(lab: &Lab, c: &Summary, sessions: u64) -> String {
    let seen = c.get("clt_syn") + c.get("fake_syn");
    let cin = lab.run(Role::Copier, &["ip", "-s", "link", "show", iface::COPIER_IN]).unwrap_or_default();
    let mir = lab.run(Role::Online, &["ip", "-s", "link", "show", iface::ONLINE_MIRROR]).unwrap_or_default();
    format!(
        "the copier saw {seen} of {sessions} connections (clt_syn + fake_syn), xdp_seen {}; the mirror veth:\n{mir}{cin}",
        c.get("xdp_seen"),
    )
}

/// Keep-alive connections and short ones to `online`, paths under `/{tag}/`.
fn http_load(online: SocketAddr, tag: &str, conns: usize, per_conn: usize, short: usize) -> anyhow::Result<()> {
    for c in 0..conns {
        let mut k = Conn::open(online)?;
        for i in 0..per_conn {
            anyhow::ensure!(k.get(&host(online), &format!("/{tag}/ka/{c}/{i}"), false)? == 200);
        }
    }
    for i in 0..short {
        anyhow::ensure!(get_once(online, &format!("/{tag}/short/{i}"))? == 200);
    }
    Ok(())
}

#[test]
fn ipv6_and_ipv4_sessions_replay_exactly_side_by_side_over_an_ipv6_channel() {
    if !bench::lab_test("ipv6_http") {
        return;
    }
    let lab = lab("http");
    let client_ns = lab.ns(Role::Client);
    // IPv6 connections opened before the copier starts, used after: replayed mid-stream (fake
    // SYN to an IPv6 target).
    let mut pre: Vec<Conn> = in_netns(&client_ns, || {
        (0..3)
            .map(|c| {
                let mut k = Conn::open(online6())?;
                assert_eq!(k.get(&host(online6()), &format!("/pre6/{c}/0"), false)?, 200);
                Ok(k)
            })
            .collect()
    })
    .unwrap();

    // The channel over IPv6: the intercept listens on ::, the copier connects to a1's IPv6
    // address.
    let intercept = start_intercept(&lab, &["-b", "::"], "intercept.log");
    let channel = format!("[{}]", addr::ASSIST_CHANNEL6);
    let sent = lab.out_dir().join("sent.pcap").to_string_lossy().into_owned();
    let copier = start_copier(&lab, &channel, &["-x", &http_transfers(), "--pcap-out", &sent], "xdpcopy.log");
    for (c, k) in pre.iter_mut().enumerate() {
        for i in 1..=5 {
            assert_eq!(k.get(&host(online6()), &format!("/pre6/{c}/{i}"), false).unwrap(), 200);
        }
    }
    drop(pre);
    std::thread::scope(|s| {
        for (t, online) in [(0, online6()), (1, online6()), (2, online4()), (3, online4())] {
            let ns = client_ns.clone();
            s.spawn(move || {
                let tag = if online.is_ipv6() { format!("v6/{t}") } else { format!("v4/{t}") };
                in_netns(&ns, || http_load(online, &tag, 3, 30, 40)).unwrap()
            });
        }
    });

    let mut expected = settled_access_log(&lab.online_access_log(), "/", Duration::from_secs(5)).unwrap();
    for c in 0..3 {
        assert_eq!(expected.remove(&(format!("/pre6/{c}/0"), 200)), Some(1));
    }
    assert_eq!(expected.values().sum::<u32>(), 15 + 4 * (3 * 30 + 40));
    let got = settle_log(&lab, "/", &expected, Duration::from_secs(40));
    let c = copier.stop().unwrap();
    let i = intercept.stop().unwrap();
    assert!(
        got == expected,
        "test server's log differs from the online one:\n{}{}",
        diff(&expected, &got),
        capture_loss(&lab, &c, 3 + 4 * (3 + 40))
    );
    // Each family's requests came from its own family's client.
    let from = senders(&lab.test_access_log(), "/");
    for (path, addrs) in &from {
        let want6 = path.starts_with("/v6/") || path.starts_with("/pre6/");
        assert!(addrs.iter().all(|a| a.is_ipv6() == want6), "{path} from {addrs:?}");
    }
    let v6_sessions = 3 + 2 * (3 + 40);
    assert_eq!(c.get("conns"), 3 + 4 * (3 + 40));
    assert_eq!(c.get("ipv6_sessions"), v6_sessions);
    assert_eq!((c.get("fake_syn"), c.get("translated_sessions")), (3, 0));
    assert_eq!(c.get("channel_upgrades"), 2, "both channel connections speak protocol 7");
    assert_eq!(c.get("channel_ipv6_unsupported"), 0);
    assert_eq!(c.get("channel_unowned"), 0);
    assert_eq!((i.get("upgraded"), i.get("client_add")), (2, 3 + 4 * (3 + 40)));
    assert_eq!(i.get("ipv6_on_v6"), 0);
    // --pcap-out holds both families, checked by the lab's own parser: every checksum right
    // (IPv6 pseudo-header), every frame well formed.
    let pcap = bench::PcapSummary::from_file(&sent).unwrap();
    assert!(pcap.ipv6 > 0 && pcap.ipv4 > 0, "{pcap:?}");
    assert_eq!(pcap.frames, c.get("tx_frames"));
    assert_eq!((pcap.malformed, pcap.bad_ip_csum, pcap.bad_tcp_csum), (0, 0, 0));
}

#[test]
fn a_redis_workload_from_ipv6_clients_replays_exactly() {
    if !bench::lab_test("ipv6_redis") {
        return;
    }
    let lab = lab("redis");
    lab.start_redis(Role::Online).unwrap();
    lab.start_redis(Role::Test).unwrap();
    let redis6 = test6(addr::REDIS_PORT);
    let intercept = start_intercept(&lab, &["--target", &redis6], "intercept.log");
    let transfer = format!("[{}]:{}-{redis6}", addr::ONLINE6, addr::REDIS_PORT);
    let copier = bench::start_session_copier(&lab, &["-x", &transfer], "xdpcopy.log").unwrap();

    std::thread::scope(|s| {
        for c in 0..3 {
            let ns = lab.ns(Role::Client);
            s.spawn(move || {
                let online = SocketAddr::from((addr::ONLINE6, addr::REDIS_PORT));
                in_netns(&ns, || redis_workload(online, c, 80, 15)).unwrap()
            });
        }
    });

    let (want, got) = settle_redis_commands(&lab, addr::ONLINE6.into(), addr::TEST6.into(), Duration::from_secs(30));
    assert_eq!(want.get("set"), Some(&(3 * 95)));
    let c = copier.stop().unwrap();
    intercept.stop().unwrap();
    assert_eq!(got, want, "commands executed on the test redis differ from the online one's");
    let (online_data, test_data) =
        (redis_dump(&lab, Role::Online, addr::ONLINE6.into()), redis_dump(&lab, Role::Test, addr::TEST6.into()));
    assert_eq!(online_data.len(), 3 * (80 + 3 + 1 + 15));
    assert!(online_data == test_data, "the test redis holds different data");
    assert_eq!((c.get("conns"), c.get("ipv6_sessions")), (3 * 17, 3 * 17));
}

#[test]
fn family_translation_both_ways() {
    if !bench::lab_test("ipv6_translation") {
        return;
    }
    let lab = lab("xlat");
    let intercept = start_intercept(&lab, &[], "intercept.log");
    let channel = addr::ASSIST_CHANNEL.to_string();

    // An IPv6 production service replayed to the IPv4-only test nginx, from -c 10.201.5.0/24.
    let transfer = format!("[{}]:80-{}:{}", addr::ONLINE6, addr::TEST, addr::TEST_PORT);
    let copier = start_copier(&lab, &channel, &["-x", &transfer, "-c", addr::POOL4_NET], "xdpcopy-6to4.log");
    in_netns(&lab.ns(Role::Client), || http_load(online6(), "x64", 3, 20, 40)).unwrap();
    let expected = settled_access_log(&lab.online_access_log(), "/x64/", Duration::from_secs(5)).unwrap();
    assert_eq!(expected.values().sum::<u32>(), 3 * 20 + 40);
    let got = settle_log(&lab, "/x64/", &expected, Duration::from_secs(30));
    let c = copier.stop().unwrap();
    assert!(got == expected, "IPv6 -> IPv4:\n{}", diff(&expected, &got));
    for (path, from) in senders(&lab.test_access_log(), "/x64/") {
        for a in from {
            let IpAddr::V4(ip) = a.ip() else { panic!("{path} from {a}: not IPv4") };
            assert_eq!(ip.octets()[..3], [10, 201, 5], "{path} from {a}: outside -c");
        }
    }
    assert_eq!((c.get("translated_sessions"), c.get("conns")), (43, 43));
    assert_eq!(c.get("ipv6_sessions"), 0);

    // And the reverse: an IPv4 service replayed to the test nginx's IPv6 address.
    let transfer = format!("{}:80-{}", addr::ONLINE, test6(addr::TEST_PORT));
    let copier = start_copier(&lab, &channel, &["-x", &transfer, "-c", addr::POOL6_NET], "xdpcopy-4to6.log");
    in_netns(&lab.ns(Role::Client), || http_load(online4(), "x46", 2, 20, 30)).unwrap();
    let expected = settled_access_log(&lab.online_access_log(), "/x46/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/x46/", &expected, Duration::from_secs(30));
    let c = copier.stop().unwrap();
    intercept.stop().unwrap();
    assert!(got == expected, "IPv4 -> IPv6:\n{}", diff(&expected, &got));
    for (path, from) in senders(&lab.test_access_log(), "/x46/") {
        for a in from {
            let IpAddr::V6(ip) = a.ip() else { panic!("{path} from {a}: not IPv6") };
            assert_eq!(ip.segments()[..4], [0xfd00, 0x201, 5, 0], "{path} from {a}: outside -c");
        }
    }
    assert_eq!((c.get("translated_sessions"), c.get("ipv6_sessions")), (32, 32));

    // Without -c the command line refuses it, saying what is needed.
    let out = std::process::Command::new(bench::bin_path("xdpcopy").unwrap())
        .args(["-i", "lo", "-o", "lo", "-s", "127.0.0.1", "-x"])
        .arg(format!("[{}]:80-{}:{}", addr::ONLINE6, addr::TEST, addr::TEST_PORT))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs IPv4 client addresses: give -c"), "{err}");
}

#[test]
fn an_intercept_speaking_protocol_6_only_is_named_and_ipv4_keeps_flowing() {
    if !bench::lab_test("ipv6_v6_only_intercept") {
        return;
    }
    let lab = lab("p6");
    let intercept = start_intercept(&lab, &["--protocol", "6"], "intercept.log");
    let copier = bench::start_session_copier(&lab, &["-x", &http_transfers()], "xdpcopy.log").unwrap();
    copier
        .wait_for("speaks TCPCopy protocol 6 only; IPv6 sessions need xdpcopy-intercept", Duration::from_secs(5))
        .expect("the copier names the intercept that cannot take IPv6 sessions");
    std::thread::scope(|s| {
        let ns = lab.ns(Role::Client);
        let ns2 = ns.clone();
        s.spawn(move || in_netns(&ns, || http_load(online4(), "p4", 2, 20, 30)).unwrap());
        s.spawn(move || in_netns(&ns2, || http_load(online6(), "p6", 1, 5, 5)).unwrap());
    });
    let expected = settled_access_log(&lab.online_access_log(), "/p4/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/p4/", &expected, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let log_path = copier.log.clone();
    let c = copier.stop().unwrap();
    let i = intercept.stop().unwrap();
    assert!(got == expected, "IPv4 beside a protocol-6 intercept:\n{}", diff(&expected, &got));
    assert!(access_log(&lab.test_access_log(), "/p6/").unwrap().is_empty(), "no IPv6 session can be replayed");
    assert!(c.get("channel_ipv6_unsupported") >= 6, "{}", c.get("channel_ipv6_unsupported"));
    assert_eq!(c.get("channel_upgrades"), 0);
    assert_eq!((i.get("hellos_ok"), i.get("hellos_extended"), i.get("upgraded")), (2, 0, 0));
    let log = bench::proc::log_text(&log_path);
    assert_eq!(log.matches("speaks TCPCopy protocol 6 only").count(), 1, "said once, for the one intercept");
}

#[test]
fn an_ipv6_capture_replays_offline_three_times_from_distinct_pairs() {
    if !bench::lab_test("ipv6_offline") {
        return;
    }
    let lab = lab("off");
    // Record IPv6 traffic as the mirror carries it (the copier is not running).
    let cap = lab.capture(Role::Copier, iface::COPIER_IN, "recorded6.pcap", &["tcp", "port", "80"]).unwrap();
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..6 {
            assert_eq!(get_once(online6(), &format!("/rec6/short/{i}"))?, 200);
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut k = Conn::open(online6())?;
        for i in 0..4 {
            assert_eq!(k.get(&host(online6()), &format!("/rec6/ka/{i}"), false)?, 200);
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rec = cap.stop().unwrap();
    assert_eq!(rec.dropped_by_kernel, Some(0));
    let online = settled_access_log(&lab.online_access_log(), "/rec6/", Duration::from_secs(5)).unwrap();
    assert_eq!(online.values().sum::<u32>(), 10);

    let intercept = start_intercept(&lab, &[], "intercept.log");
    let file = rec.path.to_string_lossy().into_owned();
    let transfer = format!("80-{}", test6(addr::TEST_PORT));
    let channel = addr::ASSIST_CHANNEL.to_string();
    let args = [
        "-i",
        &file,
        "-o",
        iface::COPIER_OUT,
        "-x",
        &transfer,
        "-s",
        &channel,
        "-n",
        "3",
        "-c",
        addr::POOL6_NET,
        "-q",
        "--offline-tail",
        "20",
    ];
    let mut copier = Running::start(&lab, Role::Copier, "xdpcopy", &args, "offline6.log", "replaying").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while copier.is_running() {
        assert!(Instant::now() < deadline, "the offline copier did not exit by itself");
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = Summary::parse(&bench::read_lines(&copier.log)).unwrap();
    intercept.stop().unwrap();
    let test = access_log(&lab.test_access_log(), "/rec6/").unwrap();
    let tripled: BTreeMap<_, _> = online.iter().map(|(k, n)| (k.clone(), 3 * n)).collect();
    assert_eq!(test, tripled, "every recorded request, three times");
    for (path, from) in senders(&lab.test_access_log(), "/rec6/") {
        let distinct: BTreeSet<_> = from.iter().collect();
        assert_eq!(distinct.len(), 3, "{path}: three distinct pairs: {from:?}");
        for a in from {
            let IpAddr::V6(ip) = a.ip() else { panic!("{path} from {a}") };
            assert_eq!(ip.segments()[..4], [0xfd00, 0x201, 5, 0], "{path} from {a}: outside -c");
        }
    }
    assert_eq!(c.get("conns"), 3 * 7);
    assert_eq!((c.get("ipv6_sessions"), c.get("tuple_exhausted")), (3 * 7, 0));
}

#[test]
fn local_ipv6_sessions_replay_exactly_and_no_answer_leaves_the_test_server() {
    if !bench::lab_test("ipv6_local") {
        return;
    }
    let lab = traditional_lab("local");
    // Where real clients would be: an IPv6 answer of the test nginx to the client network that
    // escapes the intercept shows up here; answers to the allowlisted host are the control.
    let leak_filter = format!(
        "ip6 and tcp and src host {} and src port {} and dst net {}",
        addr::TEST6,
        addr::TEST_PORT,
        addr::CLIENT_NET6
    );
    let leaks = lab.capture(Role::Assist, iface::ASSIST_IN, "leaks6.pcap", &[&leak_filter]).unwrap();
    let allowed6 = format!("{}/128", addr::ASSIST6);
    let intercept = start_intercept(&lab, &["--pass-to", &allowed6, "-b", "::"], "intercept.log");
    // The channel over IPv6 too, across t1's egress (the egress program lets it go).
    let channel = format!("[{}]", lab.intercept_addr6());
    let copier = start_copier(&lab, &channel, &["-x", &http_transfers()], "xdpcopy.log");
    std::thread::scope(|s| {
        for (t, online) in [(0, online6()), (1, online6()), (2, online4())] {
            let ns = lab.ns(Role::Client);
            s.spawn(move || {
                let tag = if online.is_ipv6() { format!("l6/{t}") } else { format!("l4/{t}") };
                in_netns(&ns, || {
                    http_load(online, &tag, 2, 20, 30)?;
                    // 64 KiB answers: GSO super-segments at the test server's egress.
                    let mut k = Conn::open(online)?;
                    anyhow::ensure!(k.get(&host(online), "/big", false)? == 200);
                    Ok(())
                })
                .unwrap()
            });
        }
    });
    // The allowlisted outside host reaches the test nginx over IPv6 and gets its answers.
    let direct = lab
        .run(
            Role::Assist,
            &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "http://[fd00:201:2::2]:8080/direct6"],
        )
        .unwrap();
    assert_eq!(direct, "200");

    let expected = settled_access_log(&lab.online_access_log(), "/l", Duration::from_secs(5)).unwrap();
    assert_eq!(expected.values().sum::<u32>(), 3 * (2 * 20 + 30));
    let got = settle_log(&lab, "/l", &expected, Duration::from_secs(40));
    let big = settle_log(&lab, "/big", &BTreeMap::from([(("/big".to_owned(), 200), 3)]), Duration::from_secs(10));
    let c = copier.stop().unwrap();
    let i = intercept.stop().unwrap();
    let leaks = leaks.stop().unwrap();
    assert!(got == expected, "test server's log differs from the online one:\n{}", diff(&expected, &got));
    assert_eq!(big.get(&("/big".to_owned(), 200)), Some(&3), "64 KiB answers");
    assert_eq!(leaks.captured, Some(0), "IPv6 answers of copied sessions left the test server (see {:?})", leaks.path);
    assert_eq!(c.get("ipv6_sessions"), 2 * (2 + 30 + 1));
    assert!(i.get("egress_dropped_captured") > 0);
    assert!(i.get("egress_passed_allowlist") > 0, "the direct request's answer: {i:?}");
    assert_eq!((i.get("upgraded"), i.get("malformed"), i.get("egress_dropped_ring_full")), (2, 0, 0));
}
