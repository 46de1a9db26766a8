//! Traffic shaping in the lab: `-r 50` replays half of the sessions — whole sessions, within
//! binomial bounds — and each of those exactly once. Needs root (skipped loudly without it,
//! unless CI).

use std::{net::SocketAddr, time::Duration};

use bench::{
    ensure_built,
    http::{access_log, get_once},
    in_netns,
    lab::{addr, iface},
    Lab, LabSpec, Role, Running,
};

fn root_or_skip(test: &str) -> bool {
    let ok = bench::root_or_skip(test);
    if ok {
        ensure_built().expect("building the workspace binaries");
    }
    ok
}

#[test]
fn sampling_half_of_a_thousand_sessions_lands_within_binomial_bounds() {
    if !root_or_skip("sampling") {
        return;
    }
    let tag = format!("g{}", std::process::id() % 100_000);
    let lab = Lab::up(LabSpec { tag, queues: 2, nginx: true, mirror_egress: false }).unwrap();
    let target = format!("{}:{}", addr::TEST, addr::TEST_PORT);
    let intercept = Running::start(
        &lab,
        Role::Assist,
        "xdpcopy-intercept",
        &["-i", iface::ASSIST_IN, "--target", &target, "-q"],
        "intercept.log",
        "capturing responses",
    )
    .unwrap();
    let transfer = format!("{}-{target}", addr::ONLINE_PORT);
    let channel = addr::ASSIST_CHANNEL.to_string();
    let args = ["-x", &transfer, "-i", iface::COPIER_IN, "-o", iface::COPIER_OUT, "-s", &channel, "-r", "50"];
    let copier = Running::start(&lab, Role::Copier, "xdpcopy", &args, "xdpcopy.log", "capturing on").unwrap();
    copier.wait_for("channel up 2", Duration::from_secs(10)).unwrap();

    let online: SocketAddr = (addr::ONLINE, addr::ONLINE_PORT).into();
    let ns = lab.ns(Role::Client);
    std::thread::scope(|s| {
        for t in 0..4 {
            let ns = ns.clone();
            s.spawn(move || {
                in_netns(&ns, || {
                    for i in 0..250 {
                        assert_eq!(get_once(online, &format!("/samp/{t}/{i}"))?, 200);
                    }
                    Ok(())
                })
                .unwrap()
            });
        }
    });
    // Let the replay settle: the test log stops growing.
    let mut last = usize::MAX;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(300));
        let n = access_log(&lab.test_access_log(), "/samp/").unwrap().len();
        if n == last {
            break;
        }
        last = n;
    }
    let summary = copier.stop().unwrap();
    intercept.stop().unwrap();
    let online_log = access_log(&lab.online_access_log(), "/samp/").unwrap();
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
