//! The copier's footprint on a production host, in the lab: what `--mirror` adds (tc filters,
//! the clsact qdisc, a veth pair) is marked with the copier's pid and removed however the copier
//! ends — SIGKILL by the next start, a hung shutdown by a second SIGINT; the mirror copies only
//! TCP to the `-x` ports; `-i` refuses an interface with addresses; promiscuous mode on a bare
//! capture interface is set and restored; the intercept refuses a forwarding capture interface.
//! Needs root: skipped loudly without it, unless CI is set, where it fails.

use std::{
    os::unix::fs::OpenOptionsExt,
    time::{Duration, Instant},
};

use bench::{
    lab::{addr, iface},
    send_frames_in_ns, FrameKind, FrameSpec, Lab, LabSpec, Role, Running, SendSpec,
};

fn lab(name: &str, nginx: bool) -> Lab {
    let tag = format!("f{}-{name}", std::process::id() % 100_000);
    Lab::up(LabSpec { tag, queues: 2, nginx, mirror_egress: false, traditional: false, dual_stack: false })
        .expect("lab up")
}

/// The first four bytes of every xdpcopy tc action cookie ("xdpc").
const COOKIE: &str = "78647063";

/// The priorities of `dev`'s `dir` filters that carry an xdpcopy cookie, sorted.
fn marked_prios(lab: &Lab, role: Role, dev: &str, dir: &str) -> Vec<u32> {
    let text = lab.run(role, &["tc", "filter", "show", "dev", dev, dir]).unwrap_or_default();
    let mut prio = 0;
    let mut out = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first() == Some(&"filter") {
            prio = w.windows(2).find(|p| p[0] == "pref").and_then(|p| p[1].parse().ok()).unwrap_or(0);
        }
        if w.first() == Some(&"cookie") && w.get(1).is_some_and(|c| c.starts_with(COOKIE)) {
            out.push(prio);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The copier's veths in `role`'s namespace (both ends of each pair).
fn copier_veths(lab: &Lab, role: Role) -> Vec<String> {
    let text = lab.run(role, &["ip", "-o", "link", "show"]).unwrap();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("xdpcm") || n.starts_with("xdpcf"))
        .collect();
    out.sort();
    out
}

/// The interface's promiscuity count (`ip -d link`).
fn promiscuity(lab: &Lab, role: Role, dev: &str) -> u32 {
    let text = lab.run(role, &["ip", "-d", "link", "show", "dev", dev]).unwrap();
    let w: Vec<&str> = text.split_whitespace().collect();
    w.windows(2).find(|p| p[0] == "promiscuity").and_then(|p| p[1].parse().ok()).expect("promiscuity")
}

/// Starts a project binary in `role`'s namespace that must refuse to start: its error and log
/// (a binary that starts instead is stopped, and the test fails).
fn refused(lab: &Lab, role: Role, bin: &str, args: &[&str], ready: &str) -> String {
    match Running::start(lab, role, bin, args, "refused.log", ready) {
        Ok(running) => {
            let log = bench::proc::log_text(&running.log);
            drop(running);
            panic!("{bin} {args:?} started; its log:\n{log}");
        }
        Err(e) => format!("{e:#}"),
    }
}

/// The packets xdpcopy's `dir` filters on `dev` mirrored, summed (`tc -s filter show`).
fn mirrored_packets(lab: &Lab, role: Role, dev: &str, dir: &str) -> u64 {
    let ours = marked_prios(lab, role, dev, dir);
    let stats = lab.run(role, &["tc", "-s", "filter", "show", "dev", dev, dir]).unwrap();
    let mut prio = 0;
    let mut sum = 0;
    for line in stats.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["filter", ..] => {
                prio = w.windows(2).find(|p| p[0] == "pref").and_then(|p| p[1].parse().ok()).unwrap_or(0);
            }
            ["Sent", _, "bytes", n, "pkt", ..] if ours.contains(&prio) => sum += n.parse::<u64>().unwrap(),
            _ => {}
        }
    }
    sum
}

/// A stateless copier on the online server mirroring o0 and sending out of mir0 (its peer, cin,
/// is in the copier namespace), with `extra` arguments.
fn mirror_copier(lab: &Lab, extra: &[&str], log: &str) -> Running {
    let cin = lab.mac(Role::Copier, iface::COPIER_IN).unwrap();
    let transfer = format!("80-{}:{}@{cin}", addr::TEST, addr::TEST_PORT);
    let mut args = vec!["--stateless", "--mirror", iface::ONLINE, "-o", iface::ONLINE_MIRROR, "-x", &transfer];
    args.extend_from_slice(&["--queues", "1", "-q"]);
    args.extend_from_slice(extra);
    Running::start(lab, Role::Online, "xdpcopy", &args, log, "capturing on").expect("xdpcopy starts")
}

/// `count` frames of `kind` from the client to the online server's `port`.
fn send(lab: &Lab, kind: FrameKind, port: u16, count: u64, size: usize) {
    let spec = SendSpec {
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
        sizes: vec![size],
        count,
        rate_pps: 4000,
        first_seq: 0,
        flows: 4,
    };
    let report = send_frames_in_ns(&lab.ns(Role::Client), &spec).expect("send");
    assert_eq!(report.sent, count);
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn mirror_killed_then_restarted_leaves_exactly_one_mirror_of_the_ports_and_none_after_a_clean_stop() {
    if !bench::lab_test("mirror_killed_then_restarted") {
        return;
    }
    let lab = lab("kill", false);
    let o0 = iface::ONLINE;
    let first = mirror_copier(&lab, &[], "first.log");
    let pid = first.pid();
    assert_eq!(marked_prios(&lab, Role::Online, o0, "ingress"), [9], "one filter priority, ahead of the lab's 10");
    assert_eq!(copier_veths(&lab, Role::Online), [format!("xdpcm{pid}"), format!("xdpcm{pid}c")]);
    // The marks name the process: the veth's alias and every filter's cookie.
    let alias = lab.run(Role::Online, &["cat", &format!("/sys/class/net/xdpcm{pid}/ifalias")]).unwrap();
    assert!(alias.starts_with(&format!("xdpcopy pid={pid} start=")) && alias.contains("of=o0"), "{alias}");
    let filters = lab.run(Role::Online, &["tc", "filter", "show", "dev", o0, "ingress"]).unwrap();
    assert!(filters.contains(&format!("cookie {COOKIE}{pid:08x}")), "{filters}");

    // A second copier on the same interface is refused while the first lives.
    let args =
        ["--stateless", "--mirror", o0, "-o", iface::ONLINE_MIRROR, "-x", "80-10.201.2.2:8080@02:00:00:00:00:01"];
    let out = refused(&lab, Role::Online, "xdpcopy", &args, "capturing on");
    assert!(out.contains("already mirrors") && out.contains(&format!("pid {pid}")), "{out}");
    assert_eq!(marked_prios(&lab, Role::Online, o0, "ingress"), [9]);

    // SIGKILL: nothing of the copier runs; its filter and veth stay behind...
    drop(first);
    assert_eq!(marked_prios(&lab, Role::Online, o0, "ingress"), [9]);
    assert_eq!(copier_veths(&lab, Role::Online).len(), 2);
    // ...until the next start removes them, says so, and sets up exactly one mirror of its own.
    let second = mirror_copier(&lab, &[], "second.log");
    let log = bench::proc::log_text(&second.log);
    assert!(log.contains(&format!("xdpcopy pid {pid}, which is gone")), "{log}");
    assert_eq!(marked_prios(&lab, Role::Online, o0, "ingress"), [9], "exactly one mirror");
    let me = second.pid();
    assert_eq!(copier_veths(&lab, Role::Online), [format!("xdpcm{me}"), format!("xdpcm{me}c")]);

    // Only TCP to the -x port is mirrored (IPv4 and IPv6): nothing else reaches the copier.
    send(&lab, FrameKind::Good, 80, 200, 600);
    send(&lab, FrameKind::Good, 81, 200, 600);
    send(&lab, FrameKind::Ipv6, 80, 50, 200);
    send(&lab, FrameKind::Ipv6, 81, 50, 200);
    settle();
    let summary = second.stop().unwrap();
    assert_eq!(summary.get("xdp_redirected"), 250, "{summary:?}");
    assert_eq!(summary.get("xdp_passed"), 0, "frames to other ports were mirrored: {summary:?}");
    assert_eq!(summary.get("tx_frames"), 200);
    assert_eq!(summary.get("drop_family_mismatch"), 50);

    // A clean stop leaves nothing of ours; the lab's own mirror is still there.
    assert!(marked_prios(&lab, Role::Online, o0, "ingress").is_empty());
    assert!(copier_veths(&lab, Role::Online).is_empty());
    let filters = lab.run(Role::Online, &["tc", "filter", "show", "dev", o0, "ingress"]).unwrap();
    assert!(filters.contains("pref 10 ") && filters.contains("mirred"), "the lab's mirror was removed: {filters}");
}

#[test]
fn mirror_takes_back_the_qdisc_it_added_even_after_sigkill() {
    if !bench::lab_test("mirror_qdisc") {
        return;
    }
    let lab = lab("qdisc", false);
    let c0 = iface::CLIENT;
    let has_clsact = || lab.run(Role::Client, &["tc", "qdisc", "show", "dev", c0]).unwrap().contains("clsact");
    assert!(!has_clsact());
    let args = ["--stateless", "--mirror", c0, "-o", c0, "-x", "80-10.201.2.2:8080@02:00:00:00:00:01", "-q"];
    let start = |log| Running::start(&lab, Role::Client, "xdpcopy", &args, log, "capturing on").unwrap();
    let first = start("first.log");
    assert!(has_clsact());
    assert_eq!(marked_prios(&lab, Role::Client, c0, "ingress"), [1]);
    let pid = first.pid();
    drop(first);
    assert!(has_clsact(), "SIGKILL leaves the qdisc behind");
    let second = start("second.log");
    let log = bench::proc::log_text(&second.log);
    assert!(log.contains(&format!("the clsact qdisc xdpcopy pid {pid} added on {c0}")), "{log}");
    assert_eq!(marked_prios(&lab, Role::Client, c0, "ingress"), [1]);
    second.stop().unwrap();
    assert!(!has_clsact(), "the qdisc the copier added is gone after a clean stop");
    assert!(copier_veths(&lab, Role::Client).is_empty());
}

#[test]
fn production_latency_mirror_copies_the_responses_by_source_port() {
    if !bench::lab_test("mirror_egress") {
        return;
    }
    let lab = lab("egress", true);
    let o0 = iface::ONLINE;
    let copier = mirror_copier(&lab, &["--production-latency"], "egress.log");
    // Its own priority in each direction (u32 listings mix directions at a shared one).
    assert_eq!(marked_prios(&lab, Role::Online, o0, "ingress"), [9]);
    assert_eq!(marked_prios(&lab, Role::Online, o0, "egress"), [1]);
    // Segments to a closed port: the online server answers each with a RST from port 81,
    // which is no response of the -x port's.
    send(&lab, FrameKind::Good, 81, 200, 100);
    for i in 0..10 {
        let url = format!("http://{}/egress/{i}", addr::ONLINE);
        let out = lab
            .run(Role::Client, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", &url])
            .unwrap();
        assert_eq!(out.trim(), "200");
    }
    settle();
    // The egress filters counted the online server's responses (from port 80): SYN-ACK,
    // response, FIN at least, per request.
    let egress = mirrored_packets(&lab, Role::Online, o0, "egress");
    assert!(egress >= 30, "egress mirror counted {egress} packets");
    let ingress = mirrored_packets(&lab, Role::Online, o0, "ingress");
    let summary = copier.stop().unwrap();
    // Exactly what the filters mirrored reached the copier: requests (to port 80: redirected)
    // and responses (passed: stateless mode selects no source port); neither the segments to
    // port 81 nor the RSTs from it.
    assert_eq!(summary.get("xdp_redirected"), ingress, "{summary:?}");
    assert_eq!(summary.get("xdp_passed"), egress, "{summary:?}");
    assert!(marked_prios(&lab, Role::Online, o0, "egress").is_empty());
}

#[test]
fn a_second_sigint_during_a_hung_shutdown_exits_at_once_and_cleans_up() {
    if !bench::lab_test("second_sigint") {
        return;
    }
    let lab = lab("hang", false);
    // --pcap-out into a FIFO whose reader never reads (a stalled consumer, a stuck disk): the
    // pipe fills, the writer thread blocks in write(2), and the shutdown waits for it forever.
    let fifo = lab.out_dir().join("stuck.pcap");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let mut copier = mirror_copier(&lab, &["--pcap-out", &fifo.to_string_lossy()], "hang.log");
    send(&lab, FrameKind::Good, 80, 300, 1500);
    settle();
    copier.signal(libc::SIGINT).unwrap();
    assert!(copier.wait_exit(Duration::from_secs(2)).unwrap().is_none(), "the shutdown did not hang");
    assert_eq!(marked_prios(&lab, Role::Online, iface::ONLINE, "ingress"), [9]);

    let t = Instant::now();
    copier.signal(libc::SIGINT).unwrap();
    let status = copier.wait_exit(Duration::from_secs(5)).unwrap();
    let log = bench::proc::log_text(&copier.log);
    let status = status.unwrap_or_else(|| panic!("still running 5 s after the second SIGINT; log:\n{log}"));
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{log}");
    assert!(log.contains("second signal: removed"), "{log}");
    assert!(marked_prios(&lab, Role::Online, iface::ONLINE, "ingress").is_empty());
    assert!(copier_veths(&lab, Role::Online).is_empty());
    drop(reader);
}

#[test]
fn capture_on_an_interface_with_addresses_is_refused_unless_forced() {
    if !bench::lab_test("addressed_capture") {
        return;
    }
    let lab = lab("addr", false);
    let out_if = iface::COPIER_OUT;
    let args = ["--stateless", "-x", "80-10.201.2.2:8080", "-i", out_if, "-o", out_if, "--queues", "1", "-q"];
    let out = refused(&lab, Role::Copier, "xdpcopy", &args, "capturing on");
    assert!(out.contains("--mirror") && out.contains("--force-capture") && out.contains("10.201.2.1/24"), "{out}");
    let link = lab.run(Role::Copier, &["ip", "-d", "link", "show", "dev", out_if]).unwrap();
    assert!(!link.contains("prog/xdp"), "an XDP program was attached: {link}");

    let mut forced = args.to_vec();
    forced.push("--force-capture");
    let copier = Running::start(&lab, Role::Copier, "xdpcopy", &forced, "forced.log", "capturing on").unwrap();
    let log = bench::proc::log_text(&copier.log);
    assert!(log.contains("warning: capturing on cout, which carries addresses"), "{log}");
    assert_eq!(promiscuity(&lab, Role::Copier, out_if), 0, "promiscuous mode is only for a bare capture interface");
    copier.stop().unwrap();
}

#[test]
fn promiscuous_mode_on_a_bare_capture_interface_is_set_and_restored_even_after_sigkill() {
    if !bench::lab_test("promisc") {
        return;
    }
    let lab = lab("promisc", false);
    let cin = iface::COPIER_IN;
    let args = ["--stateless", "-x", "80-10.201.2.2:8080", "-i", cin, "-o", iface::COPIER_OUT, "-q"];
    let start = |extra: &[&str], log| {
        let mut all = args.to_vec();
        all.extend_from_slice(extra);
        Running::start(&lab, Role::Copier, "xdpcopy", &all, log, "capturing on").unwrap()
    };
    assert_eq!(promiscuity(&lab, Role::Copier, cin), 0);
    let copier = start(&[], "on.log");
    assert_eq!(promiscuity(&lab, Role::Copier, cin), 1);
    copier.stop().unwrap();
    assert_eq!(promiscuity(&lab, Role::Copier, cin), 0, "restored at exit");

    let copier = start(&[], "killed.log");
    assert_eq!(promiscuity(&lab, Role::Copier, cin), 1);
    drop(copier);
    assert_eq!(promiscuity(&lab, Role::Copier, cin), 0, "restored after SIGKILL");

    let copier = start(&["--no-promisc"], "off.log");
    assert_eq!(promiscuity(&lab, Role::Copier, cin), 0, "--no-promisc");
    copier.stop().unwrap();
}

#[test]
fn intercept_refuses_a_forwarding_capture_interface_unless_allowed() {
    if !bench::lab_test("intercept_forwarding") {
        return;
    }
    let lab = lab("fwd", false);
    lab.run(Role::Assist, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
    let target = format!("{}:{}", addr::TEST, addr::TEST_PORT);
    let args = ["-i", iface::ASSIST_IN, "--target", &target, "-q"];
    let out = refused(&lab, Role::Assist, "xdpcopy-intercept", &args, "capturing responses");
    assert!(out.contains("net.ipv4.conf.a0.forwarding = 1") && out.contains("--allow-forwarding"), "{out}");

    let allowed = bench::start_intercept(&lab, &["--allow-forwarding"], "allowed.log").unwrap();
    assert!(bench::proc::log_text(&allowed.log).contains("warning: a0 forwards"));
    allowed.stop().unwrap();

    lab.run(Role::Assist, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]).unwrap();
    let plain = bench::start_intercept(&lab, &[], "plain.log").unwrap();
    assert!(!bench::proc::log_text(&plain.log).contains("forwards"));
    plain.stop().unwrap();
}
