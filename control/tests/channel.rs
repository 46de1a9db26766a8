//! Loopback tests of the header-return channel: ChannelClient ⇄ ChannelServer, and each of them
//! against hand-made peers speaking raw bytes.
//!
//! Both endpoints are driven from the test thread (they are single-threaded by design); fake
//! peers use blocking std sockets, in a helper thread where they must block.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use control::channel::proto::{ack_bytes, encode_frame, hello_bytes, upgrade_bytes, MAX_FRAME_LEN, MAX_FRAME_LEN_V7};
use control::{ChannelClient, ChannelServer, CopierMsg, Framing, HeaderMsg, RouteKey, ServerConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn client_addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 10, 1, 2), port)
}

fn target_addr() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 10, 2, 3), 8080)
}

/// A response header from `target` to `client` as intercept would capture it.
fn response(client: SocketAddrV4, target: SocketAddrV4, seq: u32, flags: u8) -> HeaderMsg {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&140u16.to_be_bytes()); // 100 payload bytes, not captured
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&target.ip().octets());
    p[16..20].copy_from_slice(&client.ip().octets());
    p[20..22].copy_from_slice(&target.port().to_be_bytes());
    p[22..24].copy_from_slice(&client.port().to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 0x50;
    p[33] = flags;
    p[34..36].copy_from_slice(&65160u16.to_be_bytes());
    HeaderMsg::from_packet(&p).unwrap()
}

/// The SYN-ACK observed in the reference run (§4.6), as captured.
fn observed_syn_ack() -> (Vec<u8>, HeaderMsg) {
    let mut p: Vec<u8> = vec![
        0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x23, 0xa4, 0x0a, 0x0a, 0x02, 0x03, 0x0a, 0x0a,
        0x01, 0x02, //
        0x1f, 0x90, 0xc4, 0xfa, 0xd4, 0x05, 0x09, 0xca, 0x97, 0x58, 0xfe, 0xba, 0xa0, 0x12, 0xfe, 0x88, 0x17, 0x47,
        0x00, 0x00, //
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x9a, 0x17, 0x65, 0x6c, 0x80, 0x7d, 0x96, 0x74, 0x01, 0x03,
        0x03, 0x0a,
    ];
    let msg = HeaderMsg::from_packet(&p).unwrap();
    let mut frame = vec![0x00, 0x01];
    frame.append(&mut p);
    frame.extend([0, 0, 0, 0]);
    (frame, msg)
}

/// Run `step` until it returns true; fail after 5 s.
fn wait_for(what: &str, mut step: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !step() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Poll the server and each client once, collecting headers per client.
fn pump(server: &mut ChannelServer, clients: &mut [&mut ChannelClient], got: &mut [Vec<HeaderMsg>]) {
    server.poll(ms(1)).unwrap();
    for (c, g) in clients.iter_mut().zip(got.iter_mut()) {
        c.poll(ms(1), |h| g.push(h)).unwrap();
    }
}

fn connected_pair(conns: u8, framing: Framing) -> (ChannelServer, ChannelClient) {
    let cfg = ServerConfig { framing, ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let mut client = ChannelClient::new(vec![server.local_addr()], conns, framing).unwrap();
    let mut got = [Vec::new()];
    wait_for("the client to connect and say hello", || {
        pump(&mut server, &mut [&mut client], &mut got);
        client.connected() == usize::from(conns) && server.stats().hellos_ok == u64::from(conns)
    });
    (server, client)
}

/// Register a session through `client` and wait until the server has it.
fn register(server: &mut ChannelServer, client: &mut ChannelClient, session: SocketAddrV4) {
    let before = server.stats().client_add;
    assert!(client.client_add(session, target_addr()));
    let mut got = [Vec::new()];
    wait_for("the CLIENT_ADD", || {
        pump(server, &mut [&mut *client], &mut got);
        server.stats().client_add > before
    });
}

#[test]
fn headers_after_client_add_arrive_byte_exact() {
    let (mut server, mut client) = connected_pair(2, Framing::Combined);
    register(&mut server, &mut client, client_addr(50426));
    register(&mut server, &mut client, client_addr(50427));
    assert_eq!(server.stats().routes_active, 2);

    let (_, syn_ack) = observed_syn_ack();
    let other = response(client_addr(50427), target_addr(), 7, 0x18);
    let fin = response(client_addr(50426), target_addr(), 8, 0x19);
    let now = Instant::now();
    server.deliver(now, syn_ack);
    server.deliver(now, other);
    server.deliver(now, fin);
    server.flush();

    let mut got = [Vec::new()];
    wait_for("three headers", || {
        pump(&mut server, &mut [&mut client], &mut got);
        got[0].len() == 3
    });
    // Sessions alternate over the two connections, so order holds per session only.
    let per_session = |port| -> Vec<HeaderMsg> { got[0].iter().copied().filter(|h| h.dst_port() == port).collect() };
    assert_eq!(per_session(50426), vec![syn_ack, fin]);
    assert_eq!(per_session(50427), vec![other]);
    assert_eq!(per_session(50426)[0].as_bytes(), syn_ack.as_bytes());
    let s = server.stats();
    assert_eq!((s.delivered, s.unrouted, s.delayed), (3, 0, 0));
    assert_eq!(client.stats().headers, 3);
    assert_eq!(client.stats().client_adds, 2);
}

#[test]
fn server_wire_bytes_match_the_reference() {
    // A raw copier: hello + CLIENT_ADD of §4.6, then expect the 66-byte SYN-ACK frame.
    let mut server = ChannelServer::bind(loopback()).unwrap();
    let mut raw = TcpStream::connect(server.local_addr()).unwrap();
    raw.write_all(&[0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0]).unwrap();
    raw.write_all(&[10, 10, 1, 2, 0xc4, 0xfa, 0, 1, 10, 10, 2, 3, 0x1f, 0x90]).unwrap();
    wait_for("the CLIENT_ADD", || {
        server.poll(ms(1)).unwrap();
        server.stats().client_add == 1
    });
    let (frame, syn_ack) = observed_syn_ack();
    assert_eq!(frame.len(), 66);
    server.deliver(Instant::now(), syn_ack);
    server.poll(ms(1)).unwrap(); // non-zero timeout: idle, flush
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 66];
    raw.read_exact(&mut buf).unwrap();
    assert_eq!(buf.to_vec(), frame);
}

#[test]
fn client_wire_bytes_match_the_reference() {
    // A raw intercept: the first 14 bytes are the hello, the next the CLIENT_ADD of §4.6.
    let listener = TcpListener::bind(loopback()).unwrap();
    let mut client = ChannelClient::new(vec![listener.local_addr().unwrap()], 1, Framing::Combined).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    wait_for("connect", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.connected() == 1
    });
    assert!(client.client_add(client_addr(50426), target_addr()));
    client.flush();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 28];
    raw.read_exact(&mut buf).unwrap();
    // The hello offers protocol 7 where the original's hello has zeros its intercept ignores
    // (a deliberate change: see proto's module docs); this intercept never acknowledges, so the
    // CLIENT_ADD is the original's, byte for byte.
    assert_eq!(buf[..14], [0, 0, 0, 0, 0, 0, 0, 6, b'X', b'D', b'P', b'C', 0, 7]);
    assert_eq!(buf[14..], [10, 10, 1, 2, 0xc4, 0xfa, 0, 1, 10, 10, 2, 3, 0x1f, 0x90]);

    // And it decodes the reference frame, even dribbled a few bytes at a time.
    let (frame, syn_ack) = observed_syn_ack();
    let mut got = Vec::new();
    for part in frame.chunks(7) {
        raw.write_all(part).unwrap();
        raw.flush().unwrap();
        client.poll(ms(2), |h| got.push(h)).unwrap();
    }
    wait_for("the SYN-ACK", || {
        client.poll(ms(1), |h| got.push(h)).unwrap();
        !got.is_empty()
    });
    assert_eq!(got, vec![syn_ack]);
    assert_eq!(client.stats().frames, 1);
}

#[test]
fn syn_ack_before_client_add_is_delayed_then_delivered_in_order() {
    let (mut server, mut client) = connected_pair(1, Framing::Combined);
    let session = client_addr(40000);
    let syn_ack = response(session, target_addr(), 1, 0x12);
    let syn_ack_again = response(session, target_addr(), 1, 0x12);
    let ack = response(session, target_addr(), 2, 0x10);
    let now = Instant::now();
    server.deliver(now, syn_ack);
    server.deliver(now, syn_ack_again);
    server.deliver(now, ack); // not SYN/RST: dropped as in the original
    let s = server.stats();
    assert_eq!((s.delayed, s.delay_held, s.unrouted), (2, 2, 1));

    register(&mut server, &mut client, session);
    let data = response(session, target_addr(), 3, 0x18);
    server.deliver(Instant::now(), data);
    server.flush();
    let mut got = [Vec::new()];
    wait_for("the delayed SYN-ACKs", || {
        pump(&mut server, &mut [&mut client], &mut got);
        got[0].len() == 3
    });
    assert_eq!(got[0], vec![syn_ack, syn_ack_again, data]);
    let s = server.stats();
    assert_eq!((s.delay_flushed, s.delay_held, s.delivered), (2, 0, 1));
}

#[test]
fn two_copiers_get_only_their_own_sessions() {
    let mut server = ChannelServer::bind(loopback()).unwrap();
    let addr = server.local_addr();
    let mut a = ChannelClient::new(vec![addr], 2, Framing::Combined).unwrap();
    let mut b = ChannelClient::new(vec![addr], 1, Framing::Combined).unwrap();
    let mut got = [Vec::new(), Vec::new()];
    wait_for("both copiers", || {
        pump(&mut server, &mut [&mut a, &mut b], &mut got);
        a.connected() == 2 && b.connected() == 1 && server.stats().hellos_ok == 3
    });
    let (sa, sb) = (client_addr(1111), client_addr(2222));
    assert!(a.client_add(sa, target_addr()));
    assert!(b.client_add(sb, target_addr()));
    wait_for("both CLIENT_ADDs", || {
        pump(&mut server, &mut [&mut a, &mut b], &mut got);
        server.stats().client_add == 2
    });
    let now = Instant::now();
    for seq in 0..40 {
        let session = if seq % 3 == 0 { sb } else { sa };
        server.deliver(now, response(session, target_addr(), seq, 0x10));
    }
    server.flush();
    wait_for("40 headers", || {
        pump(&mut server, &mut [&mut a, &mut b], &mut got);
        got[0].len() + got[1].len() == 40
    });
    assert!(got[0].iter().all(|h| h.client() == sa.into()));
    assert!(got[1].iter().all(|h| h.client() == sb.into()));
    assert_eq!(got[1].len(), 14);
    let seqs: Vec<u32> = got[0].iter().map(HeaderMsg::seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
}

/// Read from a raw socket until EOF or error (the server closed it); false on timeout.
fn closed_by_peer(raw: &mut TcpStream, server: &mut ChannelServer) -> bool {
    raw.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        server.poll(ms(1)).unwrap();
        match raw.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn garbage_and_bad_hellos_are_closed_while_others_keep_working() {
    let (mut server, mut client) = connected_pair(1, Framing::Combined);
    let session = client_addr(3333);
    register(&mut server, &mut client, session);
    let addr = server.local_addr();

    // HTTP on the channel port: "too old" (non-zero address in the first 8 bytes).
    let mut http = TcpStream::connect(addr).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_by_peer(&mut http, &mut server), "garbage not closed");

    // A pre-hello copier: it starts with a CLIENT_ADD.
    let mut old = TcpStream::connect(addr).unwrap();
    old.write_all(&CopierMsg::client_add(client_addr(1), target_addr()).encode_v6().unwrap()).unwrap();
    assert!(closed_by_peer(&mut old, &mut server), "too old not closed");

    // Version 5 hello is tolerated (original behaviour), but what follows is not a message.
    let mut v5 = TcpStream::connect(addr).unwrap();
    let mut hello = CopierMsg::hello().encode_v6().unwrap();
    hello[7] = 5;
    v5.write_all(&hello).unwrap();
    v5.write_all(&[0x41; 14]).unwrap();
    assert!(closed_by_peer(&mut v5, &mut server), "wrong version + garbage not closed");

    let s = server.stats();
    assert_eq!(s.protocol_errors, 3);
    assert_eq!(s.hellos_bad, 2);
    assert_eq!(s.hellos_incompatible, 1);
    assert_eq!(s.copiers_open, 1);
    assert_eq!(s.routes_active, 1, "garbage added no route");

    // The good copier is unaffected.
    let h = response(session, target_addr(), 9, 0x18);
    server.deliver(Instant::now(), h);
    let mut got = [Vec::new()];
    wait_for("the good copier's header", || {
        pump(&mut server, &mut [&mut client], &mut got);
        !got[0].is_empty()
    });
    assert_eq!(got[0], vec![h]);
    assert_eq!(client.connected(), 1);
}

#[test]
fn wrong_version_hello_warns_by_default_and_closes_when_strict() {
    let mut hello = CopierMsg::hello().encode_v6().unwrap();
    hello[7] = 5;

    // Default: warn and carry on; its CLIENT_ADDs are honoured.
    let mut server = ChannelServer::bind(loopback()).unwrap();
    let mut v5 = TcpStream::connect(server.local_addr()).unwrap();
    v5.write_all(&hello).unwrap();
    v5.write_all(&CopierMsg::client_add(client_addr(5), target_addr()).encode_v6().unwrap()).unwrap();
    wait_for("the CLIENT_ADD", || {
        server.poll(ms(1)).unwrap();
        server.stats().client_add == 1
    });
    assert_eq!(server.stats().hellos_incompatible, 1);
    assert_eq!(server.connections(), 1);

    // Strict: closed on the hello itself.
    let cfg = ServerConfig { strict_version: true, ..ServerConfig::default() };
    let mut strict = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let mut v5 = TcpStream::connect(strict.local_addr()).unwrap();
    v5.write_all(&hello).unwrap();
    assert!(closed_by_peer(&mut v5, &mut strict));
    assert_eq!(strict.stats().protocol_errors, 1);
}

#[test]
fn no_hello_in_time_is_closed() {
    let cfg = ServerConfig { hello_timeout: ms(100), ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let mut silent = TcpStream::connect(server.local_addr()).unwrap();
    silent.write_all(&[0, 0, 0]).unwrap(); // a partial hello, then nothing
    assert!(closed_by_peer(&mut silent, &mut server));
    assert_eq!(server.stats().hellos_bad, 1);
}

#[test]
fn client_reconnects_after_server_restart() {
    let (server, mut client) = connected_pair(2, Framing::Combined);
    let addr = server.local_addr();
    drop(server);
    wait_for("the client to notice", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.connected() == 0
    });
    assert_eq!(client.stats().disconnects, 2);
    // Down: CLIENT_ADD has nowhere to go.
    assert!(!client.client_add(client_addr(7), target_addr()));
    assert_eq!(client.stats().client_adds_no_intercept, 1);
    // Let a few reconnect attempts fail against the closed port.
    let until = Instant::now() + ms(250);
    while Instant::now() < until {
        client.poll(ms(10), |_| {}).unwrap();
    }

    let mut server = ChannelServer::bind(addr).unwrap();
    let mut got = [Vec::new()];
    wait_for("the reconnect", || {
        pump(&mut server, &mut [&mut client], &mut got);
        client.connected() == 2 && server.stats().hellos_ok == 2
    });
    let s = client.stats();
    assert_eq!(s.reconnects, 2);
    assert_eq!(s.connects, 4);
    assert!(s.connect_failures >= 1, "{s:?}");

    register(&mut server, &mut client, client_addr(7));
    let h = response(client_addr(7), target_addr(), 1, 0x12);
    server.deliver(Instant::now(), h);
    wait_for("a header after the restart", || {
        pump(&mut server, &mut [&mut client], &mut got);
        !got[0].is_empty()
    });
    assert_eq!(got[0], vec![h]);
}

#[test]
fn count_over_16_closes_and_reconnects() {
    let listener = TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, good) = observed_syn_ack();
    let fake = thread::spawn(move || {
        let mut hello = [0u8; 14];
        // First connection: a frame claiming 17 messages.
        let (mut s, _) = listener.accept().unwrap();
        s.read_exact(&mut hello).unwrap();
        let mut bad = vec![0x00, 0x11];
        bad.extend_from_slice(good.as_bytes());
        s.write_all(&bad).unwrap();
        // The copier closes and comes back; serve it one good frame.
        let (mut s2, _) = listener.accept().unwrap();
        s2.read_exact(&mut hello).unwrap();
        let mut frame = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(Framing::Combined, &[good], &mut frame).unwrap();
        s2.write_all(&frame[..n]).unwrap();
        // Hold the connection until the copier goes away.
        let mut sink = [0u8; 64];
        while s2.read(&mut sink).is_ok_and(|n| n > 0) {}
        drop(s);
    });

    let mut client = ChannelClient::new(vec![addr], 1, Framing::Combined).unwrap();
    let mut got = Vec::new();
    wait_for("the good frame after a reconnect", || {
        client.poll(ms(5), |h| got.push(h)).unwrap();
        !got.is_empty()
    });
    assert_eq!(got, vec![good], "nothing from the broken frame is delivered");
    let s = client.stats();
    assert_eq!((s.protocol_errors, s.disconnects, s.reconnects, s.headers), (1, 1, 1, 1));
    drop(client);
    fake.join().unwrap();
}

#[test]
fn partial_frames_leave_within_the_flush_bound() {
    let (mut server, mut client) = connected_pair(1, Framing::Combined);
    let session = client_addr(4444);
    register(&mut server, &mut client, session);

    // A lone header, the caller busy-polling (timeout 0) and never calling flush().
    let h = response(session, target_addr(), 1, 0x10);
    let t0 = Instant::now();
    server.deliver(t0, h);
    let mut got = Vec::new();
    while got.is_empty() {
        server.poll(Duration::ZERO).unwrap();
        client.poll(Duration::ZERO, |m| got.push(m)).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    let latency = t0.elapsed();
    assert!(latency < ms(50), "lone header took {latency:?}");

    // A full batch leaves on the 16th deliver, before any poll or flush.
    let t1 = Instant::now();
    for seq in 0..16 {
        server.deliver(t1, response(session, target_addr(), seq, 0x10));
    }
    let mut got = Vec::new();
    wait_for("16 headers", || {
        client.poll(ms(1), |m| got.push(m)).unwrap();
        got.len() == 16
    });
    assert_eq!(client.stats().frames, 2);
    assert!(server.stats().frames_sent >= 2);
}

#[test]
fn client_del_removes_the_route() {
    let (mut server, mut client) = connected_pair(1, Framing::Combined);
    let session = client_addr(5555);
    register(&mut server, &mut client, session);
    assert!(client.client_del(session, target_addr()));
    let mut got = [Vec::new()];
    wait_for("the CLIENT_DEL", || {
        pump(&mut server, &mut [&mut client], &mut got);
        server.stats().client_del == 1
    });
    assert_eq!(server.stats().routes_active, 0);
    server.deliver(Instant::now(), response(session, target_addr(), 1, 0x10));
    assert_eq!(server.stats().unrouted, 1);
}

#[test]
fn fin_from_target_expires_the_route_after_the_grace() {
    let cfg = ServerConfig { fin_grace: ms(50), ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let mut client = ChannelClient::new(vec![server.local_addr()], 1, Framing::Combined).unwrap();
    let mut got = [Vec::new()];
    wait_for("connect", || {
        pump(&mut server, &mut [&mut client], &mut got);
        server.stats().hellos_ok == 1
    });
    let session = client_addr(6666);
    register(&mut server, &mut client, session);
    server.deliver(Instant::now(), response(session, target_addr(), 1, 0x11));
    // A retransmission within the grace still goes through.
    server.deliver(Instant::now(), response(session, target_addr(), 1, 0x11));
    assert_eq!(server.stats().delivered, 2);
    thread::sleep(ms(60));
    server.poll(ms(1)).unwrap();
    let s = server.stats();
    assert_eq!((s.routes_active, s.routes_expired), (0, 1));
    // Explicit expiry through the caller's hook works the same.
    register(&mut server, &mut client, session);
    server.route_fin_rst(Instant::now(), RouteKey::new(session, target_addr()));
    thread::sleep(ms(60));
    server.deliver(Instant::now(), response(session, target_addr(), 2, 0x10));
    assert_eq!(server.stats().unrouted, 1);
}

#[test]
fn bare_framing_end_to_end() {
    let (mut server, mut client) = connected_pair(1, Framing::Bare);
    let session = client_addr(7777);
    register(&mut server, &mut client, session);
    let now = Instant::now();
    let sent: Vec<HeaderMsg> = (0..20).map(|seq| response(session, target_addr(), seq, 0x10)).collect();
    for h in &sent {
        server.deliver(now, *h);
    }
    server.flush();
    let mut got = [Vec::new()];
    wait_for("20 bare headers", || {
        pump(&mut server, &mut [&mut client], &mut got);
        got[0].len() == 20
    });
    assert_eq!(got[0], sent);
    assert_eq!(client.stats().frames, 20);
}

#[test]
fn unregistered_floods_stay_bounded() {
    let cfg = ServerConfig { max_delayed: 100, ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let now = Instant::now();
    for port in 0..10_000u16 {
        server.deliver(now, response(client_addr(port), target_addr(), 1, 0x12));
        server.deliver(now, response(client_addr(port), target_addr(), 2, 0x10));
    }
    let s = server.stats();
    assert_eq!((s.delayed, s.delay_dropped, s.delay_held), (100, 9_900, 100));
    assert_eq!(s.unrouted, 10_000);

    // A garbage stream of 1 MB is closed at its first bytes, not buffered.
    let mut raw = TcpStream::connect(server.local_addr()).unwrap();
    let _ = raw.write_all(&[0xff; 64 * 1024]);
    assert!(closed_by_peer(&mut raw, &mut server));
}

#[test]
fn constructor_validates_arguments() {
    let addr = loopback();
    assert!(ChannelClient::new(vec![], 2, Framing::Combined).is_err());
    assert!(ChannelClient::new(vec![addr], 0, Framing::Combined).is_err());
    assert!(ChannelClient::new(vec![addr], 12, Framing::Combined).is_err());
    let s = ChannelServer::bind(loopback()).unwrap();
    let e = ChannelServer::bind(s.local_addr()).unwrap_err();
    assert!(e.to_string().contains("cannot listen"), "{e}");
}

#[test]
fn bulk_headers_arrive_complete_and_in_order() {
    let (mut server, mut client) = connected_pair(1, Framing::Combined);
    let session = client_addr(8888);
    register(&mut server, &mut client, session);
    let mut got = [Vec::new()];
    let total = 12_000u32; // 750 KB of headers, sent at once: more than one read budget
    let now = Instant::now();
    for seq in 0..total {
        server.deliver(now, response(session, target_addr(), seq, 0x10));
    }
    server.flush();
    wait_for("all headers", || {
        pump(&mut server, &mut [&mut client], &mut got);
        got[0].len() == total as usize
    });
    assert!(got[0].iter().map(HeaderMsg::seq).eq(0..total));
    let s = server.stats();
    assert_eq!((s.delivered, s.send_dropped), (u64::from(total), 0));
    assert_eq!(client.stats().frames, s.frames_sent);
}

// ------------------------------------------------------------------ admission (issue 12)

/// A blocking connection to `to` from the local address `src` (127.0.0.2 is a different peer
/// address than 127.0.0.1 on loopback).
fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(src.parse().unwrap(), 0).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

/// A raw copier from `src` that has said hello.
fn raw_copier(src: &str, to: SocketAddr) -> TcpStream {
    let mut s = connect_from(src, to);
    s.write_all(&CopierMsg::hello().encode_v6().unwrap()).unwrap();
    s
}

fn cidr(s: &str) -> control::channel::Cidr {
    s.parse().unwrap()
}

#[test]
fn a_peer_outside_the_allowlist_is_closed_at_once() {
    let cfg = ServerConfig { allow: vec![cidr("10.0.0.0/8"), cidr("127.0.0.2")], ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let addr = server.local_addr();
    let t0 = Instant::now();
    let mut stranger = TcpStream::connect(addr).unwrap(); // from 127.0.0.1
    stranger.write_all(&CopierMsg::hello().encode_v6().unwrap()).unwrap();
    stranger.write_all(&CopierMsg::client_add(client_addr(1), target_addr()).encode_v6().unwrap()).unwrap();
    assert!(closed_by_peer(&mut stranger, &mut server), "a stranger stays connected");
    assert!(t0.elapsed() < ms(1000), "closed only after {:?}", t0.elapsed());
    let s = server.stats();
    assert_eq!((s.copiers_denied, s.copiers_accepted, s.client_add, s.bytes_received), (1, 0, 0, 0));

    // An allowed address gets in and is served.
    let mut friend = raw_copier("127.0.0.2", addr);
    friend.write_all(&CopierMsg::client_add(client_addr(2), target_addr()).encode_v6().unwrap()).unwrap();
    wait_for("the allowed copier's CLIENT_ADD", || {
        server.poll(ms(1)).unwrap();
        server.stats().client_add == 1
    });
    assert_eq!((server.stats().copiers_accepted, server.stats().routes_active), (1, 1));
}

#[test]
fn idle_connections_of_one_address_cannot_lock_copiers_out() {
    let cfg = ServerConfig { max_connections: 16, max_conns_per_peer: 4, ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let addr = server.local_addr();
    // 40 idle connections from one address, more than the server's whole table.
    let mut idle: Vec<TcpStream> = (0..40).map(|_| raw_copier("127.0.0.2", addr)).collect();
    wait_for("the flood to be sorted out", || {
        server.poll(ms(1)).unwrap();
        let s = server.stats();
        s.copiers_accepted + s.copiers_peer_limit == 40
    });
    let s = server.stats();
    assert_eq!((s.copiers_accepted, s.copiers_peer_limit, s.copiers_open), (4, 36, 4));
    // A copier from another address still connects, registers and gets its headers.
    let mut client = ChannelClient::new(vec![addr], 2, Framing::Combined).unwrap();
    let mut got = [Vec::new()];
    wait_for("the copier", || {
        pump(&mut server, &mut [&mut client], &mut got);
        client.connected() == 2 && server.stats().hellos_ok == 6
    });
    register(&mut server, &mut client, client_addr(9));
    let h = response(client_addr(9), target_addr(), 1, 0x12);
    server.deliver(Instant::now(), h);
    wait_for("the header", || {
        pump(&mut server, &mut [&mut client], &mut got);
        !got[0].is_empty()
    });
    assert_eq!(got[0], vec![h]);
    idle.clear();
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout_and_a_copier_comes_back() {
    let cfg = ServerConfig { idle_timeout: ms(1000), ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let addr = server.local_addr();
    let mut silent = raw_copier("127.0.0.2", addr);
    let mut client = ChannelClient::new(vec![addr], 1, Framing::Combined).unwrap();
    let mut got = [Vec::new()];
    wait_for("both", || {
        pump(&mut server, &mut [&mut client], &mut got);
        server.stats().hellos_ok == 2
    });
    register(&mut server, &mut client, client_addr(11));
    let t0 = Instant::now();
    assert!(closed_by_peer(&mut silent, &mut server), "the silent connection stays open");
    let waited = t0.elapsed();
    assert!(waited >= ms(900) && waited < ms(3500), "closed after {waited:?}");
    // The copier was idle too: closed, it reconnects at once and registers its session again.
    wait_for("the copier to come back", || {
        pump(&mut server, &mut [&mut client], &mut got);
        client.connected() == 1 && server.stats().routes_taken_over >= 1
    });
    assert!(server.stats().copiers_idle >= 2, "{:?}", server.stats());
    assert!(client.stats().resynced >= 1);
    // The route moved to the new connection (same address): headers flow.
    let h = response(client_addr(11), target_addr(), 1, 0x10);
    server.deliver(Instant::now(), h);
    wait_for("the header", || {
        pump(&mut server, &mut [&mut client], &mut got);
        !got[0].is_empty()
    });
    assert_eq!(got[0], vec![h]);
}

#[test]
fn a_client_add_flood_is_bounded_by_the_route_quota() {
    let cfg = ServerConfig { max_routes_per_conn: 100, ..ServerConfig::default() };
    let (mut server, mut client) = {
        let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
        let client = ChannelClient::new(vec![server.local_addr()], 1, Framing::Combined).unwrap();
        server.poll(ms(1)).unwrap();
        (server, client)
    };
    let mut flood = raw_copier("127.0.0.2", server.local_addr());
    let mut bytes = Vec::new();
    for port in 0..1000u16 {
        bytes.extend_from_slice(
            &CopierMsg::client_add(SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), port), target_addr())
                .encode_v6()
                .unwrap(),
        );
    }
    flood.write_all(&bytes).unwrap();
    let mut got = [Vec::new()];
    wait_for("the flood", || {
        pump(&mut server, &mut [&mut client], &mut got);
        server.stats().client_add == 1000 && client.connected() == 1
    });
    let s = server.stats();
    assert_eq!((s.routes_active, s.routes_quota), (100, 900));
    // The copier has its own quota.
    register(&mut server, &mut client, client_addr(12));
    assert_eq!(server.stats().routes_active, 101);
}

#[test]
fn first_owner_keeps_a_live_route() {
    let (mut server, mut client) = connected_pair(1, Framing::Combined);
    let addr = server.local_addr();
    let session = client_addr(13);
    register(&mut server, &mut client, session);

    // A stranger (another address) who knows the 4-tuple cannot divert it, nor delete it.
    let mut stranger = raw_copier("127.0.0.2", addr);
    stranger.write_all(&CopierMsg::client_add(session, target_addr()).encode_v6().unwrap()).unwrap();
    stranger.write_all(&CopierMsg::client_del(session, target_addr()).encode_v6().unwrap()).unwrap();
    wait_for("the stranger's messages", || {
        server.poll(ms(1)).unwrap();
        server.stats().client_del == 1
    });
    assert_eq!(server.stats().route_conflicts, 2);
    let h = response(session, target_addr(), 1, 0x18);
    server.deliver(Instant::now(), h);
    let mut got = [Vec::new()];
    wait_for("the header at its owner", || {
        pump(&mut server, &mut [&mut client], &mut got);
        !got[0].is_empty()
    });
    assert_eq!(got[0], vec![h]);
    stranger.set_read_timeout(Some(ms(100))).unwrap();
    let mut buf = [0u8; 128];
    assert!(matches!(stranger.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock), "the stranger got data");

    // The same address may move it (a copier's reconnect).
    let mut again = raw_copier("127.0.0.1", addr);
    again.write_all(&CopierMsg::client_add(session, target_addr()).encode_v6().unwrap()).unwrap();
    wait_for("the takeover", || {
        server.poll(ms(1)).unwrap();
        server.stats().routes_taken_over == 1
    });
    // Once the owner is gone, anyone may register the 4-tuple.
    drop(again);
    wait_for("the owner to close", || {
        server.poll(ms(1)).unwrap();
        server.connections() == 2
    });
    stranger.write_all(&CopierMsg::client_add(session, target_addr()).encode_v6().unwrap()).unwrap();
    wait_for("the new owner", || {
        server.poll(ms(1)).unwrap();
        server.stats().routes_taken_over == 2
    });
    assert_eq!(server.stats().route_conflicts, 2);
}

#[test]
fn the_read_budget_bounds_one_peers_share_of_a_poll() {
    let cfg = ServerConfig { read_budget: 16 * 1024, ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let mut flood = raw_copier("127.0.0.2", server.local_addr());
    wait_for("the flooder", || {
        server.poll(ms(1)).unwrap();
        server.stats().hellos_ok == 1
    });
    let total = 50_000usize;
    let mut bytes = Vec::with_capacity(total * 14);
    for i in 0..total {
        let client = SocketAddrV4::new(Ipv4Addr::from(0x0a63_0000 + (i as u32 >> 16)), i as u16);
        bytes.extend_from_slice(&CopierMsg::client_add(client, target_addr()).encode_v6().unwrap());
    }
    let writer = thread::spawn(move || flood.write_all(&bytes).map(|()| flood));
    thread::sleep(ms(200)); // let the kernel buffer a good part of it
    let before = server.stats().bytes_received;
    server.poll(Duration::ZERO).unwrap();
    let read = server.stats().bytes_received - before;
    assert!(read > 0 && read <= 16 * 1024, "one poll read {read} bytes from one peer");
    assert!(server.stats().reads_deferred >= 1);
    // The rest follows on later polls, none lost.
    let _flood = writer.join().unwrap().unwrap();
    wait_for("every message", || {
        server.poll(Duration::ZERO).unwrap();
        server.stats().client_add == total as u64
    });
}

// ------------------------------------------------------------------ copier faults (issue 12)

#[test]
fn live_sessions_are_registered_again_after_an_intercept_restart() {
    let (server, mut client) = connected_pair(2, Framing::Combined);
    let addr = server.local_addr();
    let mut server = server;
    for port in 0..50 {
        register(&mut server, &mut client, client_addr(20_000 + port));
    }
    for port in 0..10 {
        assert!(client.client_del(client_addr(20_000 + port), target_addr()));
    }
    let mut got = [Vec::new()];
    wait_for("the CLIENT_DELs", || {
        pump(&mut server, &mut [&mut client], &mut got);
        server.stats().client_del == 10
    });
    assert_eq!((server.stats().routes_active, client.sessions()), (40, 40));
    drop(server);
    wait_for("the client to notice", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.connected() == 0
    });
    let mut server = ChannelServer::bind(addr).unwrap();
    wait_for("the re-registration", || {
        pump(&mut server, &mut [&mut client], &mut got);
        client.connected() == 2 && server.stats().routes_active == 40
    });
    assert_eq!(client.stats().resynced, 40, "each live session once, on its own connection");
    assert_eq!(server.stats().client_add, 40);
    // Headers of live sessions flow again without a new CLIENT_ADD; deleted ones stay unrouted.
    let live = response(client_addr(20_042), target_addr(), 1, 0x18);
    server.deliver(Instant::now(), live);
    server.deliver(Instant::now(), response(client_addr(20_003), target_addr(), 1, 0x18));
    wait_for("the live session's header", || {
        pump(&mut server, &mut [&mut client], &mut got);
        !got[0].is_empty()
    });
    assert_eq!(got[0], vec![live]);
    assert_eq!(server.stats().unrouted, 1);
}

#[test]
fn re_registration_of_many_sessions_streams_through_the_bounded_buffer() {
    let (mut server, mut client) = connected_pair(1, Framing::Combined);
    let addr = server.local_addr();
    let n = 20_000u32; // 280 KB of CLIENT_ADDs: several times the write buffer
    for i in 0..n {
        let c = SocketAddrV4::new(Ipv4Addr::from(0x0a0a_0000 + (i >> 16)), i as u16);
        client.client_add(c, target_addr());
        if i % 1000 == 999 {
            let mut got = [Vec::new()];
            pump(&mut server, &mut [&mut client], &mut got);
        }
    }
    drop(server);
    wait_for("the client to notice", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.connected() == 0
    });
    let cfg = ServerConfig { max_routes_per_conn: 1 << 20, ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(addr, cfg).unwrap();
    let mut got = [Vec::new()];
    wait_for("every session registered again", || {
        pump(&mut server, &mut [&mut client], &mut got);
        server.stats().routes_active == u64::from(n)
    });
    let s = client.stats();
    assert_eq!((s.resynced, s.write_overflows), (u64::from(n), 0));
    // New registrations still have room meanwhile.
    assert!(client.client_add(client_addr(1), target_addr()));
}

#[test]
fn the_session_registry_is_bounded_and_forgets_unused_sessions() {
    let (mut server, mut client) = connected_pair(1, Framing::Combined);
    client.set_session_limits(3, ms(100));
    for port in 1..=3 {
        assert!(client.register(client_addr(port), target_addr(), u32::from(port)));
    }
    assert!(!client.register(client_addr(4), target_addr(), 4), "full");
    assert!(client.register(client_addr(2), target_addr(), 7), "a refresh always fits");
    assert_eq!((client.stats().sessions_full, client.sessions()), (1, 3));

    // Headers come with their owner tag; unknown sessions with none.
    let mut got = Vec::new();
    wait_for("the CLIENT_ADDs", || {
        server.poll(ms(1)).unwrap();
        client.poll(ms(1), |_| {}).unwrap();
        server.stats().routes_active == 3
    });
    server.deliver(Instant::now(), response(client_addr(2), target_addr(), 1, 0x10));
    server.flush();
    wait_for("a header", || {
        server.poll(ms(1)).unwrap();
        client.poll_owned(ms(1), |h, owner| got.push((h.client(), owner))).unwrap();
        !got.is_empty()
    });
    assert_eq!(got, vec![(client_addr(2).into(), Some(7))]);

    // Past the TTL the unused ones are forgotten when room is needed (the used one too, later).
    thread::sleep(ms(120));
    assert!(client.register(client_addr(4), target_addr(), 4));
    assert_eq!((client.stats().sessions_expired, client.sessions()), (3, 1));
}

#[test]
fn control_thread_sends_client_del_in_order_with_client_add() {
    use control::copier::{Control, SessionAdd, WorkerLink};
    use std::sync::Arc;

    let (mut server, client) = connected_pair(1, Framing::Combined);
    let links: Vec<Arc<WorkerLink>> = (0..2).map(|_| Arc::new(WorkerLink::new(64, || {}))).collect();
    let mut control = Control::new(client, links.clone());
    let a = SessionAdd { client: client_addr(30).into(), target: target_addr().into() };
    let b = SessionAdd { client: client_addr(31).into(), target: target_addr().into() };
    assert!(links[0].push_add(a) && links[1].push_add(b));
    // Worker 0 ends session a; port reuse starts it again on worker 1 — as the engine queues it,
    // the old session's CLIENT_DEL before the new one's CLIENT_ADD.
    assert!(links[0].push_del(a));
    assert!(links[1].push_add(a));
    assert!(links[1].push_del(b));
    let drive = |server: &mut ChannelServer, control: &mut Control| {
        server.poll(ms(1)).unwrap();
        control.run_once(ms(1)).unwrap();
    };
    wait_for("two CLIENT_DELs", || {
        drive(&mut server, &mut control);
        server.stats().client_del == 2
    });
    assert_eq!(server.stats().routes_active, 1, "a is registered, b is gone");
    let s = control.stats();
    assert_eq!((s.registered, s.deregistered, s.channel.sessions), (3, 2, 1));
    // a's header now goes to worker 1, b's to nobody.
    server.deliver(Instant::now(), response(client_addr(30), target_addr(), 1, 0x10));
    server.deliver(Instant::now(), response(client_addr(31), target_addr(), 1, 0x10));
    wait_for("a's header", || {
        drive(&mut server, &mut control);
        !links[1].headers.is_empty()
    });
    assert_eq!(links[1].headers.pop().map(|h| h.client()), Some(client_addr(30).into()));
    assert!(links[0].headers.is_empty());
    assert_eq!(server.stats().unrouted, 1);
}

// ---------------------------------------------------------------------- protocol 7 (IPv6)

fn client6(port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new("2001:db8:1::2".parse().unwrap(), port, 0, 0))
}

fn target6() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new("2001:db8:2::3".parse().unwrap(), 8080, 0, 0))
}

/// An IPv6 response header from `target` to `client` as the intercept would capture it.
fn response6(client: SocketAddr, target: SocketAddr, seq: u32, flags: u8) -> HeaderMsg {
    let (SocketAddr::V6(c), SocketAddr::V6(t)) = (client, target) else { panic!("IPv6 only") };
    let mut p = [0u8; 60];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&120u16.to_be_bytes()); // 100 payload bytes, not captured
    p[6] = 6;
    p[7] = 64;
    p[8..24].copy_from_slice(&t.ip().octets());
    p[24..40].copy_from_slice(&c.ip().octets());
    p[40..42].copy_from_slice(&t.port().to_be_bytes());
    p[42..44].copy_from_slice(&c.port().to_be_bytes());
    p[44..48].copy_from_slice(&seq.to_be_bytes());
    p[52] = 0x50;
    p[53] = flags;
    HeaderMsg::from_packet(&p).unwrap()
}

#[test]
fn ipv6_sessions_over_protocol_7_end_to_end() {
    let (mut server, mut client) = connected_pair(2, Framing::Combined);
    let mut got = [Vec::new()];
    wait_for("both connections to upgrade", || {
        pump(&mut server, &mut [&mut client], &mut got);
        client.versions() == [7, 7] && server.stats().upgraded == 2
    });
    assert_eq!(server.stats().hellos_extended, 2);
    assert!(client.client_add(client6(40000), target6()));
    assert!(client.client_add(client_addr(40001), target_addr()), "IPv4 in the v7 layout");
    wait_for("both CLIENT_ADDs", || {
        pump(&mut server, &mut [&mut client], &mut got);
        server.stats().client_add == 2
    });
    let now = Instant::now();
    let h6 = response6(client6(40000), target6(), 9, 0x12);
    let h4 = response(client_addr(40001), target_addr(), 10, 0x12);
    server.deliver(now, h6);
    server.deliver(now, h4);
    server.flush();
    wait_for("both headers", || {
        pump(&mut server, &mut [&mut client], &mut got);
        got[0].len() == 2
    });
    assert!(got[0].contains(&h6) && got[0].contains(&h4));
    assert_eq!(got[0].iter().find(|h| h.is_ipv6()).unwrap().as_bytes(), h6.as_bytes());
    // CLIENT_DEL6 removes the route.
    assert!(client.client_del(client6(40000), target6()));
    wait_for("the CLIENT_DEL", || {
        pump(&mut server, &mut [&mut client], &mut got);
        server.stats().client_del == 1
    });
    server.deliver(Instant::now(), response6(client6(40000), target6(), 11, 0x10));
    assert_eq!(server.stats().unrouted, 1);
    assert_eq!((client.stats().upgrades, client.stats().ipv6_unsupported), (2, 0));
}

#[test]
fn an_intercept_that_speaks_6_only_takes_ipv4_and_is_named_for_ipv6() {
    let cfg = ServerConfig { max_version: 6, ..ServerConfig::default() };
    let mut server = ChannelServer::bind_with(loopback(), cfg).unwrap();
    let mut client = ChannelClient::new(vec![server.local_addr()], 1, Framing::Combined).unwrap();
    client.set_ipv6_expected(true);
    let mut got = [Vec::new()];
    wait_for("the hello", || {
        pump(&mut server, &mut [&mut client], &mut got);
        client.connected() == 1 && server.stats().hellos_ok == 1
    });
    assert_eq!(server.stats().hellos_extended, 0, "no acknowledgement");
    // Before the connection is known to speak 6, an IPv6 session waits; IPv4 goes out at once.
    assert!(!client.client_add(client6(40000), target6()));
    assert!(client.client_add(client_addr(40001), target_addr()));
    let started = Instant::now();
    wait_for("the connection to settle on protocol 6", || {
        pump(&mut server, &mut [&mut client], &mut got);
        client.stats().ipv6_unsupported == 1
    });
    assert!(started.elapsed() >= ms(800), "after the negotiation timeout");
    assert_eq!(client.versions(), [6]);
    assert!(!client.client_add(client6(40002), target6()));
    assert_eq!(client.stats().ipv6_unsupported, 2);
    // IPv4 keeps flowing.
    server.deliver(Instant::now(), response(client_addr(40001), target_addr(), 1, 0x12));
    server.flush();
    wait_for("the IPv4 header", || {
        pump(&mut server, &mut [&mut client], &mut got);
        !got[0].is_empty()
    });
    let s = server.stats();
    assert_eq!((s.client_add, s.upgraded, s.protocol_errors), (1, 0, 0));
}

/// A raw intercept's side: read exactly `n` bytes.
fn read_n(raw: &mut TcpStream, n: usize) -> Vec<u8> {
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; n];
    raw.read_exact(&mut buf).unwrap();
    buf
}

/// Nothing more arrives within `wait`.
fn nothing_more(raw: &mut TcpStream, wait: Duration) {
    raw.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    match raw.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("unexpected bytes or close: {other:?} {b:?}"),
    }
}

#[test]
fn registrations_racing_the_acknowledgement() {
    // A raw intercept that acknowledges late: what the copier sent before the acknowledgement
    // is v6 (IPv4 only), the upgrade is the boundary, the IPv6 session that waited follows.
    let listener = TcpListener::bind(loopback()).unwrap();
    let mut client = ChannelClient::new(vec![listener.local_addr().unwrap()], 1, Framing::Combined).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    wait_for("connect", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.connected() == 1
    });
    assert!(client.client_add(client_addr(50426), target_addr()));
    assert!(!client.client_add(client6(50427), target6()), "waits for the upgrade");
    client.flush();
    let first = read_n(&mut raw, 28);
    assert_eq!(first[..14], hello_bytes(Some(7)));
    assert_eq!(first[14..], CopierMsg::client_add(client_addr(50426), target_addr()).encode_v6().unwrap());
    nothing_more(&mut raw, ms(100));

    raw.write_all(&ack_bytes(7)).unwrap();
    wait_for("the upgrade", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.versions() == [7]
    });
    assert!(client.client_add(client_addr(50428), target_addr()));
    client.flush();
    let mut want = upgrade_bytes().to_vec();
    want.extend(CopierMsg::client_add(client6(50427), target6()).encode_v7().unwrap().iter());
    want.extend(CopierMsg::client_add(client_addr(50428), target_addr()).encode_v7().unwrap().iter());
    assert_eq!(read_n(&mut raw, want.len()), want);
    assert_eq!(client.stats().resynced, 1);

    // Headers of both families come back on it.
    let (_, syn_ack) = observed_syn_ack();
    let h6 = response6(client6(50427), target6(), 1, 0x12);
    let mut frame = [0u8; MAX_FRAME_LEN_V7];
    let n = encode_frame(Framing::Combined, &[syn_ack, h6], &mut frame).unwrap();
    raw.write_all(&frame[..n]).unwrap();
    let mut got = Vec::new();
    wait_for("two headers", || {
        client.poll(ms(1), |h| got.push(h)).unwrap();
        got.len() == 2
    });
    assert_eq!(got, vec![syn_ack, h6]);
}

#[test]
fn a_late_acknowledgement_still_upgrades_and_a_frame_first_means_6() {
    let listener = TcpListener::bind(loopback()).unwrap();
    let mut client = ChannelClient::new(vec![listener.local_addr().unwrap()], 1, Framing::Combined).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    assert!(!client.client_add(client6(1), target6()));
    wait_for("the negotiation timeout", || {
        client.poll(ms(5), |_| {}).unwrap();
        client.stats().ipv6_unsupported == 1
    });
    assert_eq!(read_n(&mut raw, 14), hello_bytes(Some(7)));
    raw.write_all(&ack_bytes(7)).unwrap();
    wait_for("the upgrade", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.versions() == [7]
    });
    let mut want = upgrade_bytes().to_vec();
    want.extend(CopierMsg::client_add(client6(1), target6()).encode_v7().unwrap().iter());
    assert_eq!(read_n(&mut raw, want.len()), want);

    // An original intercept answers with a frame first: protocol 6 at once, no timeout.
    let listener = TcpListener::bind(loopback()).unwrap();
    let mut client = ChannelClient::new(vec![listener.local_addr().unwrap()], 1, Framing::Combined).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    wait_for("connect", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.connected() == 1
    });
    let (frame, syn_ack) = observed_syn_ack();
    raw.write_all(&frame).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    wait_for("the frame", || {
        client.poll(ms(1), |h| got.push(h)).unwrap();
        !got.is_empty()
    });
    assert_eq!(got, vec![syn_ack]);
    assert!(!client.client_add(client6(2), target6()));
    assert_eq!(client.stats().ipv6_unsupported, 1);
    assert!(started.elapsed() < ms(900));
    // Without the offer, the hello is the original's.
    let listener = TcpListener::bind(loopback()).unwrap();
    let mut client = ChannelClient::new(vec![listener.local_addr().unwrap()], 1, Framing::Combined).unwrap();
    client.set_offer_extension(false);
    let (mut raw, _) = listener.accept().unwrap();
    wait_for("connect", || {
        client.poll(ms(1), |_| {}).unwrap();
        client.connected() == 1
    });
    assert_eq!(read_n(&mut raw, 14), hello_bytes(None));
}

#[test]
fn server_acknowledges_at_once_and_takes_ipv6_only_after_the_upgrade() {
    let mut server = ChannelServer::bind(loopback()).unwrap();
    let mut raw = TcpStream::connect(server.local_addr()).unwrap();
    raw.write_all(&hello_bytes(Some(7))).unwrap();
    let add4 = CopierMsg::client_add(client_addr(1), target_addr());
    raw.write_all(&add4.encode_v6().unwrap()).unwrap();
    wait_for("the hello", || {
        server.poll(ms(1)).unwrap();
        server.stats().client_add == 1
    });
    assert_eq!(read_n(&mut raw, 2), ack_bytes(7));
    raw.write_all(&upgrade_bytes()).unwrap();
    let add6 = CopierMsg::client_add(client6(2), target6());
    raw.write_all(&add6.encode_v7().unwrap()).unwrap();
    wait_for("the CLIENT_ADD6", || {
        server.poll(ms(1)).unwrap();
        server.stats().client_add == 2
    });
    assert_eq!(server.stats().upgraded, 1);
    let h6 = response6(client6(2), target6(), 5, 0x12);
    server.deliver(Instant::now(), h6);
    server.poll(ms(1)).unwrap();
    let mut want = vec![0, 1];
    want.extend(h6.as_bytes());
    assert_eq!(read_n(&mut raw, want.len()), want);

    // A copier that skips the upgrade and sends a type-first IPv6 message is garbage: closed.
    let mut bad = TcpStream::connect(server.local_addr()).unwrap();
    bad.write_all(&hello_bytes(Some(7))).unwrap();
    bad.write_all(&add6.encode_v7().unwrap()).unwrap();
    wait_for("the close", || closed_by_peer(&mut bad, &mut server));
    // The good one is untouched.
    assert_eq!(server.connections(), 1);
}
