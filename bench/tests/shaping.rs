//! Traffic shaping in the lab: `-r 50` replays half of the sessions — whole sessions, within
//! binomial bounds — and each of those exactly once. Needs root (skipped loudly without it,
//! unless CI).

use std::{net::SocketAddr, time::Duration};

use bench::{
    http::{access_log, get_once, settled_access_log},
    in_netns,
    lab::addr,
    Lab, LabSpec, Role,
};

#[test]
fn sampling_half_of_a_thousand_sessions_lands_within_binomial_bounds() {
    if !bench::lab_test("sampling") {
        return;
    }
    let tag = format!("g{}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
            .unwrap();
    let target = format!("{}:{}", addr::TEST, addr::TEST_PORT);
    let intercept = bench::start_intercept(&lab, &[], "intercept.log").unwrap();
    let transfer = format!("{}-{target}", addr::ONLINE_PORT);
    let copier = bench::start_session_copier(&lab, &["-x", &transfer, "-r", "50"], "xdpcopy.log").unwrap();

    let online: SocketAddr = (addr::ONLINE, addr::ONLINE_PORT).into();
    let ns = lab.ns(Role::Client);
    std::thread::scope(|s| {
        for t in 0..4 {
            let ns = ns.clone();
            s.spawn(move || {
                in_netns(&ns, || {
                    for i in 0..250 {
                        assert_eq!(get_once(online, &format!("/samp/{t}/{i}"))?, 200);
                        // Paced: this test is about which sessions are sampled, not about how
                        // many a debug build on two shared cores can capture at once.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Ok(())
                })
                .unwrap()
            });
        }
    });
    // Let the replay settle: the test log stops growing for 1.5 s (a loaded machine can pause
    // the replay for a few hundred ms).
    let (mut last, mut same) = (usize::MAX, 0);
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(300));
        let n = access_log(&lab.test_access_log(), "/samp/").unwrap().len();
        same = if n == last { same + 1 } else { 0 };
        if same == 5 {
            break;
        }
        last = n;
    }
    let summary = copier.stop().unwrap();
    intercept.stop().unwrap();
    let online_log = settled_access_log(&lab.online_access_log(), "/samp/", Duration::from_secs(5)).unwrap();
    let test_log = access_log(&lab.test_access_log(), "/samp/").unwrap();
    assert_eq!(online_log.len(), 1000);
    // Binomial(1000, 0.5): mean 500, sd 15.8; 5 sd either side.
    let kept = test_log.len();
    assert!((421..=579).contains(&kept), "{kept} of 1000 sessions replayed with -r 50");
    // Whole sessions, each replayed once, only requests the online server got.
    assert!(test_log.values().all(|n| *n == 1), "a sampled request was replayed twice");
    assert!(test_log.keys().all(|k| online_log.contains_key(k)));
    assert_eq!(summary.get("conns") as usize, kept, "one connection per kept session");
    assert!(summary.get("drop_sampled_out") > 0);
}

/// `(path, status)` → the `remote_addr:remote_port` of every request, from the lab's log format.
fn senders(log: &std::path::Path, prefix: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::<String, Vec<String>>::new();
    for l in std::fs::read_to_string(log).unwrap().lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 5 && w[1].starts_with(prefix) {
            out.entry(w[1].to_owned()).or_default().push(w[4].to_owned());
        }
    }
    out
}

#[test]
fn three_copies_of_every_session_from_distinct_client_pairs() {
    if !bench::lab_test("multiplier") {
        return;
    }
    let tag = format!("n{}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
            .unwrap();
    let target = format!("{}:{}", addr::TEST, addr::TEST_PORT);
    let intercept = bench::start_intercept(&lab, &[], "intercept.log").unwrap();
    let transfer = format!("{}-{target}", addr::ONLINE_PORT);
    // The test server routes 10.201.1.0/24 to the assist server: the pool is inside it.
    let args = ["-x", &transfer, "-n", "3", "-c", "10.201.1.100-10.201.1.149"];
    let copier = bench::start_session_copier(&lab, &args, "xdpcopy.log").unwrap();
    let online: SocketAddr = (addr::ONLINE, addr::ONLINE_PORT).into();
    in_netns(&lab.ns(Role::Client), || {
        for i in 0..20 {
            assert_eq!(get_once(online, &format!("/mult/short/{i}"))?, 200);
        }
        let mut k = bench::http::Conn::open(online)?;
        for i in 0..5 {
            assert_eq!(k.get(&addr::ONLINE.to_string(), &format!("/mult/ka/{i}"), false)?, 200);
        }
        Ok(())
    })
    .unwrap();
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(300));
        let n: usize = senders(&lab.test_access_log(), "/mult/").values().map(Vec::len).sum();
        if n >= 75 {
            // Then a little longer, so a copy replayed twice would show.
            std::thread::sleep(Duration::from_millis(500));
            break;
        }
    }
    let summary = copier.stop().unwrap();
    intercept.stop().unwrap();
    let seen = senders(&lab.test_access_log(), "/mult/");
    assert_eq!(seen.len(), 25, "{seen:?}");
    for (path, from) in &seen {
        assert_eq!(from.len(), 3, "{path} replayed {} times: {from:?}", from.len());
        let distinct: std::collections::BTreeSet<&String> = from.iter().collect();
        assert_eq!(distinct.len(), 3, "{path}: the copies must come from distinct pairs: {from:?}");
        for f in from {
            let ip: std::net::Ipv4Addr = f.split(':').next().unwrap().parse().unwrap();
            assert!((100..150).contains(&ip.octets()[3]) && ip.octets()[..3] == [10, 201, 1], "{f} outside -c");
        }
    }
    // No collisions: the test server reset nothing, the pool was never exhausted.
    assert_eq!(summary.get("resp_rst"), 0);
    assert_eq!(summary.get("tuple_exhausted"), 0);
    assert_eq!(summary.get("conns"), 3 * 21);
}
