//! The header-return channel under hostile peers and faults, in the lab (issue 12): a stranger
//! under `--allow-copier`, idle connections and a CLIENT_ADD flood from a stranger, the
//! intercept killed and restarted mid-run, an intercept host that drops off the network, and a
//! stopped (SIGSTOP) intercept.
//! Needs root: skipped loudly without it, unless CI is set, where it fails.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use bench::{
    http::{get_once, settled_access_log, Conn},
    in_netns,
    lab::{addr, iface},
    replay_check::{diff, settle_log},
    Lab, LabSpec, Role, Running,
};

fn lab(name: &str) -> Lab {
    let tag = format!("c{}-{name}", std::process::id() % 100_000);
    Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
        .expect("lab up")
}

fn start_copier(lab: &Lab) -> Running {
    let transfer = format!("80-{}:{}", addr::TEST, addr::TEST_PORT);
    bench::start_session_copier(lab, &["-x", &transfer], "xdpcopy.log").expect("xdpcopy starts and connects")
}

fn online() -> SocketAddr {
    SocketAddr::from((addr::ONLINE, addr::ONLINE_PORT))
}

fn channel() -> SocketAddr {
    SocketAddr::from((addr::ASSIST_CHANNEL, addr::CHANNEL_PORT))
}

fn target() -> SocketAddrV4 {
    SocketAddrV4::new(addr::TEST, addr::TEST_PORT)
}

/// The version hello of protocol 6.
const HELLO: [u8; 14] = [0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0];

/// A CLIENT_ADD (type 1) or CLIENT_DEL (type 2) message.
fn copier_msg(kind: u16, client: SocketAddrV4, target: SocketAddrV4) -> [u8; 14] {
    let mut m = [0u8; 14];
    m[0..4].copy_from_slice(&client.ip().octets());
    m[4..6].copy_from_slice(&client.port().to_be_bytes());
    m[6..8].copy_from_slice(&kind.to_be_bytes());
    m[8..12].copy_from_slice(&target.ip().octets());
    m[12..14].copy_from_slice(&target.port().to_be_bytes());
    m
}

/// Whether the peer closed `s` within `within` (EOF or reset); false if it is still open.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

fn count_lines(path: &std::path::Path, needle: &str) -> usize {
    bench::read_lines(path).iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_stranger_is_closed_at_once_under_allow_copier() {
    if !bench::lab_test("allow_copier") {
        return;
    }
    let lab = lab("allow");
    let only_copier = format!("{}/32", addr::COPIER_CHANNEL);
    let intercept = bench::start_intercept(&lab, &["--allow-copier", &only_copier], "intercept.log").unwrap();
    // A stranger (the assist host's own address) says hello and registers a session.
    let waited = lab
        .in_ns(Role::Assist, || {
            let mut s = TcpStream::connect(channel())?;
            let t0 = Instant::now();
            let _ = s.write_all(&HELLO);
            let _ = s.write_all(&copier_msg(1, SocketAddrV4::new(addr::CLIENT, 40_000), target()));
            assert!(closed_within(&mut s, Duration::from_secs(3)), "the stranger's connection stayed open");
            Ok(t0.elapsed())
        })
        .unwrap();
    assert!(waited < Duration::from_millis(500), "closed only after {waited:?}");
    // The copier is allowed and replays.
    let copier = start_copier(&lab);
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..20 {
            assert_eq!(get_once(online(), &format!("/allowed/{i}"))?, 200);
        }
        Ok(())
    })
    .unwrap();
    let expected = settled_access_log(&lab.online_access_log(), "/allowed/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/allowed/", &expected, Duration::from_secs(20));
    copier.stop().unwrap();
    let s = intercept.stop().unwrap();
    assert!(got == expected, "{}", diff(&expected, &got));
    assert_eq!(s.get("copiers_denied"), 1);
    assert_eq!(s.get("client_add"), 20, "the stranger's CLIENT_ADD was never read");
    assert!(bench::read_lines(&lab.out_dir().join("intercept.log"))
        .iter()
        .any(|l| l.contains(&format!("accepting copiers from {only_copier} only"))));
}

/// Raises this process's open-file limit to its hard limit (2000 sockets and more are opened).
fn raise_nofile() {
    let me = std::process::id().to_string();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or("unlimited")
        .to_owned();
    let _ = std::process::Command::new("prlimit").args(["--pid", &me, &format!("--nofile={hard}:{hard}")]).status();
}

#[test]
fn idle_connections_and_a_client_add_flood_leave_the_replay_exact() {
    if !bench::lab_test("stranger_flood") {
        return;
    }
    raise_nofile();
    let lab = lab("flood");
    let host = addr::ONLINE.to_string();
    // Any peer may connect (no --allow-copier): the caps must hold on their own.
    let intercept = bench::start_intercept(&lab, &[], "intercept.log").unwrap();

    // 2000 connections from a stranger (the assist host's own address), idle after the hello,
    // before the copier connects: more than the intercept's 1024 connections in all.
    let (mut stranger, failed) = lab
        .in_ns(Role::Assist, || {
            let (mut v, mut failed) = (Vec::new(), Vec::new());
            for _ in 0..2000 {
                match TcpStream::connect(channel()) {
                    Ok(mut s) => {
                        let _ = s.write_all(&HELLO);
                        v.push(s);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            Ok((v, failed))
        })
        .unwrap();
    eprintln!("stranger: {} connections, {} connects failed {:?}", stranger.len(), failed.len(), failed.first());
    std::thread::sleep(Duration::from_millis(500));
    // Keep the ones the intercept kept (the refused ones read EOF at once).
    stranger.retain_mut(|s| !closed_within(s, Duration::from_millis(5)));
    assert!(!stranger.is_empty() && stranger.len() <= 16, "{} stranger connections kept", stranger.len());

    let copier = start_copier(&lab);
    // Keep-alive connections, each registered by the copier and replayed once.
    let mut conns: Vec<Conn> = in_netns(&lab.ns(Role::Client), || {
        (0..8)
            .map(|c| {
                let mut k = Conn::open(online())?;
                assert_eq!(k.get(&host, &format!("/flood/ka/{c}/0"), false)?, 200);
                Ok(k)
            })
            .collect()
    })
    .unwrap();
    let first = settled_access_log(&lab.online_access_log(), "/flood/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/flood/", &first, Duration::from_secs(10));
    assert!(got == first, "before the flood:\n{}", diff(&first, &got));

    // The flood: on every connection it kept, the stranger claims the live sessions' 4-tuples
    // (the original's "latest CLIENT_ADD wins" would divert them), then 70 000 made-up ones each
    // (over 1M in all: the whole route table), then the live ones again.
    let live: Vec<SocketAddrV4> = conns
        .iter()
        .map(|k| match k.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("the lab is IPv4"),
        })
        .collect();
    let mut claim = Vec::new();
    for c in &live {
        claim.extend_from_slice(&copier_msg(1, *c, target()));
    }
    std::thread::scope(|s| {
        for (n, conn) in stranger.iter_mut().enumerate() {
            let claim = &claim;
            s.spawn(move || {
                let mut flood = Vec::with_capacity(70_000 * 14);
                for i in 0..70_000u32 {
                    let fake = SocketAddrV4::new(Ipv4Addr::new(10, 99, n as u8, (i >> 16) as u8), i as u16);
                    flood.extend_from_slice(&copier_msg(1, fake, target()));
                }
                let _ = conn.write_all(claim);
                let _ = conn.write_all(&flood);
                let _ = conn.write_all(claim);
            });
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    // The same keep-alive connections go on, and new short ones come.
    in_netns(&lab.ns(Role::Client), || {
        for (c, k) in conns.iter_mut().enumerate() {
            for i in 1..=20 {
                assert_eq!(k.get(&host, &format!("/flood/ka/{c}/{i}"), false)?, 200);
            }
        }
        for i in 0..40 {
            assert_eq!(get_once(online(), &format!("/flood/short/{i}"))?, 200);
        }
        Ok(())
    })
    .unwrap();
    drop(conns);
    let expected = settled_access_log(&lab.online_access_log(), "/flood/", Duration::from_secs(5)).unwrap();
    assert_eq!(expected.values().sum::<u32>(), 8 * 21 + 40);
    let got = settle_log(&lab, "/flood/", &expected, Duration::from_secs(30));
    let c = copier.stop().unwrap();
    drop(stranger);
    let s = intercept.stop().unwrap();
    assert!(got == expected, "the test server's log differs from the online one:\n{}", diff(&expected, &got));
    assert!(s.get("copiers_peer_limit") >= 1984, "{s:?}");
    assert!(s.get("route_conflicts") >= 8, "the live sessions were not claimed: {s:?}");
    assert!(s.get("routes_quota") > 0, "{s:?}");
    assert_eq!(s.get("routes_full"), 0);
    assert_eq!(c.get("channel_unowned"), 0);
}

#[test]
fn an_intercept_killed_and_restarted_mid_run_loses_almost_nothing() {
    if !bench::lab_test("intercept_sigkill") {
        return;
    }
    let lab = lab("kill");
    let host = addr::ONLINE.to_string();
    let intercept = bench::start_intercept(&lab, &[], "intercept-1.log").unwrap();
    let copier = start_copier(&lab);
    let conns = 10;
    let per_conn = 150;
    let (again, gap) = std::thread::scope(|s| {
        for c in 0..conns {
            let (ns, host) = (lab.ns(Role::Client), host.clone());
            s.spawn(move || {
                in_netns(&ns, || {
                    let mut k = Conn::open(online())?;
                    for i in 0..per_conn {
                        assert_eq!(k.get(&host, &format!("/kill/{c}/{i}"), false)?, 200);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Ok(())
                })
                .unwrap()
            });
        }
        // Mid-run: SIGKILL (no clean-up at all), and a new intercept as fast as it starts.
        std::thread::sleep(Duration::from_millis(600));
        let t0 = Instant::now();
        bench::netns::signal(intercept.pid(), libc::SIGKILL).unwrap();
        drop(intercept);
        let again = bench::start_intercept(&lab, &[], "intercept-2.log").unwrap();
        (again, t0.elapsed()) // the scope joins the clients before returning
    });
    eprintln!("intercept restarted {gap:?} after SIGKILL");
    assert!(gap < Duration::from_secs(2), "the restart took {gap:?}");
    let expected = settled_access_log(&lab.online_access_log(), "/kill/", Duration::from_secs(5)).unwrap();
    assert_eq!(expected.values().sum::<u32>(), conns * per_conn);
    let got = settle_log(&lab, "/kill/", &expected, Duration::from_secs(30));
    let summary = copier.stop().unwrap();
    again.stop().unwrap();
    let twice: Vec<_> = got.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "replayed twice: {twice:?}");
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(extra.is_empty(), "replayed but never sent: {extra:?}");
    let replayed = got.values().sum::<u32>();
    assert!(
        replayed * 100 >= expected.values().sum::<u32>() * 99,
        "only {replayed} of {} requests replayed after the restart:\n{}",
        expected.values().sum::<u32>(),
        diff(&expected, &got)
    );
    assert!(summary.get("channel_resynced") >= u64::from(conns), "{summary:?}");
}

#[test]
fn a_dead_intercept_host_is_detected_within_15_s() {
    if !bench::lab_test("dead_host") {
        return;
    }
    let lab = lab("dead");
    let intercept = bench::start_intercept(&lab, &[], "intercept.log").unwrap();
    let copier = start_copier(&lab);
    let copier_log = copier.log.clone();
    let intercept_log = lab.out_dir().join("intercept.log");
    std::thread::sleep(Duration::from_secs(1));
    // The assist host drops off the channel network; nothing is in flight (an idle channel is
    // the hard case: only keepalive can tell).
    bench::netns::ip(&["-n", &lab.ns(Role::Assist), "link", "set", iface::ASSIST_CHANNEL, "down"]).unwrap();
    let t0 = Instant::now();
    let (mut copier_saw, mut intercept_saw) = (None, None);
    while t0.elapsed() < Duration::from_secs(25) && (copier_saw.is_none() || intercept_saw.is_none()) {
        if copier_saw.is_none() && count_lines(&copier_log, "lost intercept") >= 2 {
            copier_saw = Some(t0.elapsed());
        }
        if intercept_saw.is_none() && count_lines(&intercept_log, "closing copier") >= 2 {
            intercept_saw = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("dead host detected by the copier after {copier_saw:?}, by the intercept after {intercept_saw:?}");
    let limit = Duration::from_secs(15);
    assert!(copier_saw.is_some_and(|t| t <= limit), "the copier noticed after {copier_saw:?}");
    assert!(intercept_saw.is_some_and(|t| t <= limit), "the intercept noticed after {intercept_saw:?}");

    // The host comes back: the copier reconnects by itself and replays again.
    bench::netns::ip(&["-n", &lab.ns(Role::Assist), "link", "set", iface::ASSIST_CHANNEL, "up"]).unwrap();
    let connected = |n| count_lines(&copier_log, "connected to intercept") >= n;
    let t1 = Instant::now();
    while !connected(4) && t1.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(connected(4), "the copier did not reconnect");
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..10 {
            assert_eq!(get_once(online(), &format!("/back/{i}"))?, 200);
        }
        Ok(())
    })
    .unwrap();
    let expected = settled_access_log(&lab.online_access_log(), "/back/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/back/", &expected, Duration::from_secs(20));
    copier.stop().unwrap();
    intercept.stop().unwrap();
    assert!(got == expected, "after the host came back:\n{}", diff(&expected, &got));
}

#[test]
fn a_stopped_intercept_is_reported_and_the_replay_resumes_when_it_continues() {
    if !bench::lab_test("stopped_intercept") {
        return;
    }
    let lab = lab("stop");
    let intercept = bench::start_intercept(&lab, &[], "intercept.log").unwrap();
    let copier = start_copier(&lab);
    let copier_log = copier.log.clone();
    std::thread::sleep(Duration::from_secs(1));
    // SIGSTOP: the intercept's kernel still answers the channel's keepalives, so the connection
    // looks alive; only the missing headers tell.
    bench::netns::signal(intercept.pid(), libc::SIGSTOP).unwrap();
    let warning = "not one response header back";
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(12) && count_lines(&copier_log, warning) == 0 {
        // New sessions keep the copier sending (SYNs, retransmitted) while nothing comes back.
        in_netns(&lab.ns(Role::Client), || get_once(online(), &format!("/stopped/{i}"))).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let said_after = t0.elapsed();
    bench::netns::signal(intercept.pid(), libc::SIGCONT).unwrap();
    assert_eq!(count_lines(&copier_log, warning), 1, "the copier said it once, within 12 s ({said_after:?})");
    // Once it continues, new sessions replay exactly.
    std::thread::sleep(Duration::from_secs(1));
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..10 {
            assert_eq!(get_once(online(), &format!("/continued/{i}"))?, 200);
        }
        Ok(())
    })
    .unwrap();
    let expected = settled_access_log(&lab.online_access_log(), "/continued/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/continued/", &expected, Duration::from_secs(20));
    copier.stop().unwrap();
    intercept.stop().unwrap();
    assert!(got == expected, "after SIGCONT:\n{}", diff(&expected, &got));
}
