//! A session that falls behind its capture (issue 9): one unpaced keep-alive connection (wrk)
//! sends its next request as soon as the online server answers, faster than one replay round
//! trip per request. With the default `--catch-up auto` it catches up and every request reaches
//! the test server exactly once; with `--catch-up off` it keeps strict order and falls behind,
//! and whatever it cannot replay is counted. Needs root: skipped loudly without it, unless CI is
//! set, where it fails.

use std::time::Duration;

use bench::{
    http::{access_log, settled_access_log},
    lab::addr,
    Lab, LabSpec, Role, Summary,
};

/// Runs `wrk -t1 -c1 -d SECS` against the online nginx with the copier replaying (extra
/// arguments `copier_args`); returns (online requests, test requests, the copier's summary).
fn one_unpaced_connection(name: &str, secs: u32, copier_args: &[&str]) -> (u64, u64, Summary) {
    let tag = format!("cu{}-{name}", std::process::id() % 100_000);
    let lab =
        Lab::up(LabSpec { tag, queues: 1, nginx: true, mirror_egress: false, traditional: false, dual_stack: false })
            .expect("lab up");
    let intercept = bench::start_intercept(&lab, &[], "intercept.log").expect("intercept starts");
    let transfer = format!("{}-{}:{}", addr::ONLINE_PORT, addr::TEST, addr::TEST_PORT);
    let mut args = vec!["-x", transfer.as_str()];
    args.extend_from_slice(copier_args);
    let copier = bench::start_session_copier(&lab, &args, "xdpcopy.log").expect("copier starts");
    let url = format!("http://{}/cu/wrk", addr::ONLINE);
    let d = format!("{secs}s");
    lab.run(Role::Client, &["wrk", "-t1", "-c1", "-d", &d, &url]).expect("wrk runs");
    let count = |m: &std::collections::BTreeMap<(String, u16), u32>| m.values().map(|v| u64::from(*v)).sum::<u64>();
    let online = count(&settled_access_log(&lab.online_access_log(), "/cu/", Duration::from_secs(5)).unwrap());
    // The replay may finish after the load: wait until the test log stops growing for 2 s.
    let (mut last, mut same) = (u64::MAX, 0);
    for _ in 0..300 {
        std::thread::sleep(Duration::from_millis(200));
        let n = count(&access_log(&lab.test_access_log(), "/cu/").unwrap());
        same = if n == last { same + 1 } else { 0 };
        if same == 10 || n == online {
            break;
        }
        last = n;
    }
    std::thread::sleep(Duration::from_millis(500));
    let test = count(&access_log(&lab.test_access_log(), "/cu/").unwrap());
    let summary = copier.stop().expect("copier stops cleanly");
    intercept.stop().expect("intercept stops cleanly");
    (online, test, summary)
}

#[test]
fn one_unpaced_connection_replays_every_request_exactly_once() {
    if !bench::lab_test("catch_up_default") {
        return;
    }
    let (online, test, s) = one_unpaced_connection("auto", 5, &[]);
    assert!(online > 10_000, "wrk made only {online} requests");
    assert_eq!(test, online, "every request exactly once (summary: catch_up_entered {})", s.get("catch_up_entered"));
    assert!(s.get("catch_up_entered") > 0, "one unpaced connection outruns the replay round trip");
    assert_eq!(s.get("pool_exhausted") + s.get("buffer_overflow") + s.get("obsolete"), 0);
}

#[test]
fn strict_order_falls_behind_and_counts_what_it_ends() {
    if !bench::lab_test("catch_up_off") {
        return;
    }
    // Strict order, and a small pool so that the backlog outgrows it within the run.
    let (online, test, s) = one_unpaced_connection("off", 3, &["--catch-up", "off", "--pool-mb", "1"]);
    assert_eq!(s.get("catch_up_entered"), 0);
    // Every request sent reached the test server, once.
    assert_eq!(s.get("sent_payload"), test, "requests sent = requests the test server logged");
    assert!(test <= online);
    if test < online {
        // What was not replayed is accounted for: sessions ended for lack of memory.
        assert!(s.get("pool_exhausted") > 0, "{} of {online} requests missing, but no ending counted", online - test);
        assert!(s.get("obsolete") >= s.get("pool_exhausted"));
    }
}
