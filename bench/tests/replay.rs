//! Session replay end to end in the lab: real clients against the online nginx, xdpcopy in the
//! copier namespace, xdpcopy-intercept on the assist server, the test nginx's access log compared
//! request by request with the online one. Needs root: skipped loudly without it, unless CI is
//! set, where it fails.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bench::{
    http::{get_once, settled_access_log, Conn},
    in_netns,
    lab::{addr, iface},
    replay_check::{diff, quiet_log, settle_log},
    Lab, LabSpec, Role, Running, Summary,
};

fn lab(name: &str) -> Lab {
    lab_with_queues(name, 2)
}

/// A lab whose capture interface has `queues` queues: the copier runs one worker per queue and,
/// with one, that worker runs the channel itself (no control thread).
fn lab_with_queues(name: &str, queues: u32) -> Lab {
    let tag = format!("r{}-{name}", std::process::id() % 100_000);
    Lab::up(LabSpec { tag, queues, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
        .expect("lab up")
}

const GREETER_PORT: u16 = 2525;

fn start_intercept(lab: &Lab, log: &str) -> Running {
    let test_greeter = format!("{}:{GREETER_PORT}", addr::TEST);
    bench::start_intercept(lab, &["--target", &test_greeter], log).expect("intercept starts")
}

fn start_copier(lab: &Lab, extra: &[&str]) -> Running {
    let transfers = format!("80-{}:{},{GREETER_PORT}-{}:{GREETER_PORT}", addr::TEST, addr::TEST_PORT, addr::TEST);
    let mut args = vec!["-x", &transfers];
    args.extend_from_slice(extra);
    // Waits for the channel: it connects in the background and sessions need it.
    bench::start_session_copier(lab, &args, "xdpcopy.log").expect("xdpcopy starts and connects to the intercept")
}

fn online() -> SocketAddr {
    SocketAddr::from((addr::ONLINE, addr::ONLINE_PORT))
}

#[test]
fn every_request_reaches_the_test_server_exactly_once() {
    if !bench::lab_test("every_request") {
        return;
    }
    let lab = lab("http");
    let client_ns = lab.ns(Role::Client);
    let host = addr::ONLINE.to_string();

    // Connections opened before the copier starts, used after: replayed mid-stream.
    let mut pre: Vec<Conn> = in_netns(&client_ns, || {
        (0..3)
            .map(|c| {
                let mut k = Conn::open(online())?;
                assert_eq!(k.get(&addr::ONLINE.to_string(), &format!("/pre/{c}/0"), false)?, 200);
                Ok(k)
            })
            .collect()
    })
    .unwrap();

    let intercept = start_intercept(&lab, "intercept.log");
    let copier = start_copier(&lab, &[]);

    for (c, k) in pre.iter_mut().enumerate() {
        for i in 1..=5 {
            assert_eq!(k.get(&host, &format!("/pre/{c}/{i}"), false).unwrap(), 200);
        }
    }
    drop(pre);
    // Keep-alive connections and short ones, from several threads at once.
    std::thread::scope(|s| {
        for t in 0..4 {
            let ns = client_ns.clone();
            let host = host.clone();
            s.spawn(move || {
                in_netns(&ns, || {
                    for c in 0..5 {
                        let mut k = Conn::open(online())?;
                        for i in 0..60 {
                            assert_eq!(k.get(&host, &format!("/ka/{t}/{c}/{i}"), false)?, 200);
                        }
                    }
                    for i in 0..100 {
                        assert_eq!(get_once(online(), &format!("/short/{t}/{i}"))?, 200);
                    }
                    Ok(())
                })
                .unwrap()
            });
        }
    });

    let mut expected = settled_access_log(&lab.online_access_log(), "/", Duration::from_secs(5)).unwrap();
    // The first request of each early connection happened before the copier started.
    for c in 0..3 {
        assert_eq!(expected.remove(&(format!("/pre/{c}/0"), 200)), Some(1));
    }
    assert_eq!(expected.values().sum::<u32>(), 15 + 4 * (5 * 60 + 100));
    let got = settle_log(&lab, "/", &expected, Duration::from_secs(30));
    let copier_summary: Summary = copier.stop().unwrap();
    let intercept_summary = intercept.stop().unwrap();
    assert!(got == expected, "test server's log differs from the online one:\n{}", diff(&expected, &got));
    // Counters add up: one session per connection (3 mid-stream with a synthesized SYN).
    assert_eq!(copier_summary.get("fake_syn"), 3);
    assert_eq!(copier_summary.get("conns"), 3 + 4 * (5 + 100));
    assert_eq!(intercept_summary.get("client_add"), 3 + 4 * (5 + 100));
    assert_eq!(copier_summary.get("channel_unowned"), 0);
}

/// A server that speaks first (SMTP-like): greets, then answers every line with its length, and
/// records the lines it received.
fn greeter(ns: &str, ip: std::net::Ipv4Addr) -> Arc<Mutex<Vec<String>>> {
    let listener = in_netns(ns, || Ok(TcpListener::bind((ip, GREETER_PORT))?)).unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let _ = w.write_all(b"220 greeter ready\r\n");
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let l = line.trim_end().to_owned();
                    line.clear();
                    let _ = w.write_all(format!("250 {}\r\n", l.len()).as_bytes());
                    let quit = l == "QUIT";
                    seen.lock().unwrap().push(format!("{} {}", l.len(), &l[..l.len().min(24)]));
                    if quit {
                        break;
                    }
                }
            });
        }
    });
    lines
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn server_speaks_first_and_requests_larger_than_the_mss() {
    if !bench::lab_test("greeter") {
        return;
    }
    greeter_and_large_requests("greet", &[]);
}

/// The same with every session catching up as soon as anything waits (`--catch-up` forced
/// with the lowest thresholds): the greeting and the handshake still wait, large requests and
/// pipelined commands still arrive whole and in order.
#[test]
fn server_speaks_first_and_requests_larger_than_the_mss_while_catching_up() {
    if !bench::lab_test("greeter_catch_up") {
        return;
    }
    let summary = greeter_and_large_requests("greetcu", &["--catch-up-kb", "1", "--catch-up-lag", "1"]);
    assert!(summary.get("catch_up_entered") > 0, "the catch-up was forced");
}

fn greeter_and_large_requests(name: &str, copier_args: &[&str]) -> Summary {
    let lab = lab(name);
    let online_lines = greeter(&lab.ns(Role::Online), addr::ONLINE);
    let test_lines = greeter(&lab.ns(Role::Test), addr::TEST);
    let intercept = start_intercept(&lab, "intercept.log");
    let copier = start_copier(&lab, copier_args);

    in_netns(&lab.ns(Role::Client), || {
        for s in 0..5 {
            let stream = TcpStream::connect((addr::ONLINE, GREETER_PORT))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut w = stream.try_clone()?;
            let mut r = BufReader::new(stream);
            assert!(read_line(&mut r).starts_with("220"));
            w.write_all(format!("HELO client-{s}\r\n").as_bytes())?;
            read_line(&mut r);
            // One command of 6000 bytes: several segments.
            let big = format!("DATA-{s}-{}\r\n", "x".repeat(6000));
            w.write_all(big.as_bytes())?;
            assert_eq!(read_line(&mut r).trim(), format!("250 {}", big.len() - 2));
            // Two commands in one write (pipelined).
            w.write_all(format!("NOOP a{s}\r\nNOOP b{s}\r\n").as_bytes())?;
            read_line(&mut r);
            read_line(&mut r);
            w.write_all(b"QUIT\r\n")?;
            read_line(&mut r);
        }
        // And HTTP: POSTs with 20 KB bodies on one keep-alive connection.
        let mut k = Conn::open(online())?;
        for i in 0..5 {
            let body = "y".repeat(20_000);
            let req = format!(
                "POST /post/{i} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                addr::ONLINE,
                body.len()
            );
            k.send_raw(req.as_bytes())?;
            assert_eq!(k.read_response()?, 200);
        }
        Ok(())
    })
    .unwrap();

    let want = online_lines.lock().unwrap().clone();
    assert_eq!(want.len(), 5 * 5);
    let deadline = Instant::now() + Duration::from_secs(20);
    while test_lines.lock().unwrap().len() < want.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut got = test_lines.lock().unwrap().clone();
    let mut want_sorted = want.clone();
    got.sort();
    want_sorted.sort();
    let expected_posts = settled_access_log(&lab.online_access_log(), "/post/", Duration::from_secs(5)).unwrap();
    let posts = settle_log(&lab, "/post/", &expected_posts, Duration::from_secs(10));
    let summary = copier.stop().unwrap();
    intercept.stop().unwrap();
    assert_eq!(got, want_sorted, "the test greeter received different commands");
    assert_eq!(posts, expected_posts, "large POSTs");
    assert_eq!(expected_posts.len(), 5);
    assert_eq!(summary.get("conns"), 6);
    summary
}

#[test]
fn loss_on_the_test_link_and_an_intercept_restart() {
    if !bench::lab_test("loss_restart") {
        return;
    }
    // One capture queue: the only worker drives the channel, reconnect included (the control
    // thread's reconnect is channel.rs's intercept restart).
    let lab = lab_with_queues("loss", 1);
    let host = addr::ONLINE.to_string();
    let intercept = start_intercept(&lab, "intercept-1.log");
    let copier = start_copier(&lab, &[]);
    copier.wait_for("runs the channel itself", Duration::from_secs(1)).unwrap();
    // 2 % of the TCP frames reaching the test server are dropped (XDP on t0: no netem here).
    let impair = Running::start(
        &lab,
        Role::Test,
        "xdpcopy-lab",
        &["impair", "--iface", iface::TEST_IN, "--loss", "2"],
        "impair.log",
        "impairing",
    )
    .unwrap();
    let run = |phase: &str, n: usize| {
        in_netns(&lab.ns(Role::Client), || {
            let mut k = Conn::open(online())?;
            for i in 0..n {
                assert_eq!(k.get(&host, &format!("/{phase}/ka/{i}"), false)?, 200);
                if i % 10 == 0 {
                    assert_eq!(get_once(online(), &format!("/{phase}/short/{i}"))?, 200);
                }
            }
            Ok(())
        })
        .unwrap()
    };
    run("lossy", 200);
    let expected = settled_access_log(&lab.online_access_log(), "/lossy/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/lossy/", &expected, Duration::from_secs(30));
    let impaired = impair.stop().unwrap();
    assert!(got == expected, "under loss:\n{}", diff(&expected, &got));
    assert!(impaired.get("dropped") > 0, "the impairment dropped nothing");

    // Kill the intercept, start a new one: the copier reconnects; new sessions replay again.
    intercept.stop().unwrap();
    let intercept = start_intercept(&lab, "intercept-2.log");
    copier.wait_for("channel up 2", Duration::from_secs(15)).unwrap();
    let reconnected = Instant::now() + Duration::from_secs(15);
    while Instant::now() < reconnected {
        let log = std::fs::read_to_string(&copier.log).unwrap_or_default();
        if log.lines().rev().take(2).any(|l| l.contains("channel up 2")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    run("after", 50);
    let expected = settled_access_log(&lab.online_access_log(), "/after/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/after/", &expected, Duration::from_secs(20));
    let summary = copier.stop().unwrap();
    intercept.stop().unwrap();
    assert!(got == expected, "after the intercept restart:\n{}", diff(&expected, &got));
    assert!(summary.get("retransmit") > 0, "loss should have caused retransmissions");
    assert!(summary.get("channel_reconnects") + summary.get("channel_connects") >= 4);
}

#[test]
fn garbage_on_the_channel_and_an_unregistered_flood_are_survived() {
    if !bench::lab_test("garbage") {
        return;
    }
    let lab = lab("garbage");
    let intercept = start_intercept(&lab, "intercept.log");
    // Garbage and a pre-hello (too old) stream on the channel port, from the copier's side.
    in_netns(&lab.ns(Role::Copier), || {
        let chan = SocketAddr::from((addr::ASSIST_CHANNEL, addr::CHANNEL_PORT));
        for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0xffu8; 4096][..], &[1u8, 2, 3, 4, 5, 6, 7, 8, 9][..]]
        {
            let mut s = TcpStream::connect(chan)?;
            let _ = s.write_all(junk);
        }
        Ok(())
    })
    .unwrap();
    // A flood of responses nobody registered: SYN-ACKs from the test server's address.
    let a0 = lab.mac(Role::Assist, iface::ASSIST_IN).unwrap();
    let t1 = lab.mac(Role::Test, iface::TEST_TO_ASSIST).unwrap();
    let flood = bench::SendSpec {
        iface: iface::TEST_TO_ASSIST.into(),
        frame: bench::FrameSpec {
            src_mac: t1,
            dst_mac: a0,
            src_ip: addr::TEST,
            dst_ip: addr::CLIENT,
            src_port: addr::TEST_PORT,
            dst_port: 40000,
            flags: 0x12,
            ..bench::FrameSpec::default()
        },
        kind: bench::FrameKind::Good,
        sizes: vec![64],
        count: 5000,
        rate_pps: 20_000,
        first_seq: 0,
        // One flow: the source must stay the test server's port (the sender varies source ports).
        flows: 1,
    };
    bench::send_frames_in_ns(&lab.ns(Role::Test), &flood).unwrap();
    // A real session still replays.
    let copier = start_copier(&lab, &[]);
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..20 {
            assert_eq!(get_once(online(), &format!("/alive/{i}"))?, 200);
        }
        Ok(())
    })
    .unwrap();
    let expected = settled_access_log(&lab.online_access_log(), "/alive/", Duration::from_secs(5)).unwrap();
    let got = settle_log(&lab, "/alive/", &expected, Duration::from_secs(20));
    copier.stop().unwrap();
    let s = intercept.stop().expect("the intercept survives and exits cleanly");
    assert!(got == expected, "{}", diff(&expected, &got));
    assert!(s.get("hellos_bad") >= 2, "garbage connections must be refused");
    assert!(s.get("headers") >= 5000, "every flood frame became a header: {s:?}");
    assert!(s.get("delayed") + s.get("delay_dropped") + s.get("unrouted") >= 5000, "{s:?}");
    assert!(s.get("delay_held") <= 16, "the delay table must stay bounded per session: {s:?}");
}

#[test]
fn frames_the_capture_loses_cost_their_requests_only() {
    if !bench::lab_test("capture_loss") {
        return;
    }
    let lab = lab("hole");
    let hop = lab.lossy_mirror().unwrap();
    // 4 % of the TCP frames the online server receives never reach the copier.
    let impair = Running::start(
        &lab,
        Role::Online,
        "xdpcopy-lab",
        &["impair", "--iface", hop, "--loss", "4"],
        "impair.log",
        "impairing",
    )
    .unwrap();
    let intercept = start_intercept(&lab, "intercept.log");
    let copier = start_copier(&lab, &[]);
    let host = addr::ONLINE.to_string();
    in_netns(&lab.ns(Role::Client), || {
        let mut conns = [Conn::open(online())?, Conn::open(online())?, Conn::open(online())?];
        for i in 0..300 {
            assert_eq!(conns[i % 3].get(&host, &format!("/hole/{i}"), false)?, 200);
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })
    .unwrap();
    let expected = settled_access_log(&lab.online_access_log(), "/hole/", Duration::from_secs(3)).unwrap();
    // Each hole is waited for 1 s (--hole-wait), then skipped; a lost last request is found when
    // the connection's FIN arrives. Quiet for 4 s: done.
    let got = quiet_log(&lab, "/hole/", Duration::from_secs(4), Duration::from_secs(60));
    let impaired = impair.stop().unwrap();
    let summary = copier.stop().unwrap();
    intercept.stop().unwrap();
    assert_eq!(expected.values().sum::<u32>(), 300);
    // Nothing the online server did not get, nothing twice.
    assert!(got.iter().all(|(k, n)| *n == 1 && expected.contains_key(k)), "{}", diff(&expected, &got));
    let missing = 300 - got.values().sum::<u32>();
    let (dropped, skipped) = (impaired.get("dropped"), summary.get("clt_hole_skipped"));
    eprintln!(
        "capture loss: {dropped} frames dropped, {skipped} holes skipped ({} bytes), {missing} requests missing",
        summary.get("clt_hole_bytes")
    );
    assert!(dropped > 0, "the impairment dropped nothing");
    // A lost frame costs at most its own request: the sessions go on past every hole (TCPCopy's
    // sessions stall at the first one, and every later request of the connection is lost).
    assert!(
        u64::from(missing) <= dropped,
        "{missing} requests missing for {dropped} lost frames:\n{}",
        diff(&expected, &got)
    );
    assert!(skipped >= 1 && u64::from(missing) >= skipped, "holes skipped {skipped}, requests missing {missing}");
    assert_eq!(summary.get("obsolete"), 0, "no session was ended early");
}
