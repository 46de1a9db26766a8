//! Offline replay end to end: traffic captured in the lab (tcpdump on the copier's mirror
//! interface) is replayed from the file through xdpcopy-intercept, at capture speed and 10×
//! faster; `-T 2` in stateless mode sends the file twice; bad files are refused with the file and
//! the problem named. Needs root (skipped loudly without it, unless CI).

use std::{net::SocketAddr, path::Path, time::Duration};

use bench::{
    http::{access_log, get_once, settled_access_log, Conn},
    in_netns,
    lab::{addr, iface},
    Lab, LabSpec, PcapSummary, Role, Running,
};

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

    // Stateless, twice over (-T 2), at top speed: every frame of the file out twice.
    let frames = PcapSummary::from_file(&file).unwrap().frames;
    let s = replay(&lab, &file, &["--stateless", "-T", "2", "--topspeed"], "offline-stateless.log");
    assert_eq!(s.get("feed_frames"), 2 * frames);
    assert_eq!(s.get("tx_frames"), 2 * frames);
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
