//! Scripted exchanges: literal client frames and response headers in, recorded frames and
//! CLIENT_ADDs out, with `now` advanced by hand. Every recorded frame is decoded and its
//! addresses and IPv4 / TCP checksums are verified by [`Harness::take`].
//!
//! IPv6: a frame is captured over IPv6 with [`C::v6`] (with extension headers: [`C::ext`]); a
//! harness made by [`Harness::v6`] replays to an IPv6 target, and its response headers are the
//! same helpers' ([`r`], [`syn_ack`]) moved to its addresses ([`Harness::resp`]); family
//! translation is a harness whose client is given ([`Harness::translated`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::*;
use crate::wire::ethernet::{self, MacAddr};
use crate::wire::parse::parse;
use crate::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN};
use crate::wire::testdata::XorShift;
use crate::wire::{ipv4, ipv6, tcp};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CPORT: u16 = 40000;
const ONLINE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const ONLINE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const TARGET: Target = Target {
    ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
    port: 8080,
    src_mac: [2, 0, 0, 0, 0, 0xaa],
    dst_mac: [2, 0, 0, 0, 0, 0xbb],
};
/// Options of a captured SYN: MSS 1460, SACK-permitted, TS 1000/0, NOP, WS 7.
const SYN_OPTS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 3, 0xe8, 0, 0, 0, 0, 1, 3, 3, 7];

fn cfg() -> Config {
    Config { max_sessions: 16, pool_bytes: 1 << 20, ..Config::default() }
}

/// The IPv6 target of [`Harness::v6`].
const TARGET6: Target = Target { ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9)), ..TARGET };

/// A captured client→online frame.
#[derive(Clone)]
struct C {
    port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    id: u16,
    opts: Vec<u8>,
    payload: Vec<u8>,
    /// Captured over IPv6 (from [`CLIENT6`] to [`ONLINE6`]).
    v6: bool,
    /// IPv6 extension headers before TCP (hop-by-hop 8, destination options 16 bytes).
    ext: bool,
}

fn c(seq: u32, ack: u32, flags: u8) -> C {
    C { port: CPORT, seq, ack, flags, id: 0x100, opts: Vec::new(), payload: Vec::new(), v6: false, ext: false }
}

impl C {
    fn data(mut self, payload: &[u8]) -> C {
        self.payload = payload.to_vec();
        self
    }
    fn opts(mut self, opts: &[u8]) -> C {
        self.opts = opts.to_vec();
        self
    }
    fn id(mut self, id: u16) -> C {
        self.id = id;
        self
    }
    fn port(mut self, port: u16) -> C {
        self.port = port;
        self
    }
    fn v6(mut self) -> C {
        self.v6 = true;
        self
    }
    fn ext(mut self) -> C {
        self.v6 = true;
        self.ext = true;
        self
    }

    /// Build the frame the way a mirror delivers it: a partial (wrong) TCP checksum.
    fn frame(&self) -> Vec<u8> {
        if self.v6 {
            return self.frame6();
        }
        let thl = 20 + self.opts.len();
        let ip_len = 20 + thl + self.payload.len();
        let mut f = vec![0u8; 14 + ip_len];
        let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
        e.set_dst_addr(MacAddr([2, 0, 0, 0, 0, 2]));
        e.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        e.set_ethertype(ethernet::ETHERTYPE_IPV4);
        let mut ip = ipv4::Packet::new_unchecked(&mut f[14..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(ip_len as u16);
        ip.set_ident(self.id);
        ip.set_dont_frag(true);
        ip.set_ttl(63);
        ip.set_protocol(6);
        ip.set_src_addr(CLIENT);
        ip.set_dst_addr(ONLINE);
        ip.fill_checksum();
        let mut t = tcp::Packet::new_unchecked(&mut f[34..]);
        t.set_src_port(self.port);
        t.set_dst_port(80);
        t.set_seq_number(self.seq);
        t.set_ack_number(self.ack);
        t.set_header_len(thl as u8);
        t.set_flags(self.flags);
        t.set_window(502);
        t.set_checksum(0x1234);
        t.options_bytes_mut().copy_from_slice(&self.opts);
        t.payload_mut().copy_from_slice(&self.payload);
        f
    }

    /// The IPv6 frame: traffic class 0x20, flow label 0xabcde, hop limit 61.
    fn frame6(&self) -> Vec<u8> {
        let ext: &[u8] = if self.ext {
            // Hop-by-hop (PadN) → destination options (PadN) → TCP.
            &[60, 0, 1, 4, 0, 0, 0, 0, 6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        } else {
            &[]
        };
        let thl = 20 + self.opts.len();
        let plen = ext.len() + thl + self.payload.len();
        let mut f = vec![0u8; 14 + 40 + plen];
        let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
        e.set_dst_addr(MacAddr([2, 0, 0, 0, 0, 2]));
        e.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        e.set_ethertype(ethernet::ETHERTYPE_IPV6);
        let mut ip = ipv6::Packet::new_unchecked(&mut f[14..]);
        ip.set_version(6);
        ip.set_traffic_class(0x20);
        ip.set_flow_label(0xabcde);
        ip.set_payload_len(plen as u16);
        ip.set_next_header(if self.ext { 0 } else { 6 });
        ip.set_hop_limit(61);
        ip.set_src_addr(CLIENT6);
        ip.set_dst_addr(ONLINE6);
        f[54..54 + ext.len()].copy_from_slice(ext);
        let mut t = tcp::Packet::new_unchecked(&mut f[54 + ext.len()..]);
        t.set_src_port(self.port);
        t.set_dst_port(80);
        t.set_seq_number(self.seq);
        t.set_ack_number(self.ack);
        t.set_header_len(thl as u8);
        t.set_flags(self.flags);
        t.set_window(502);
        t.set_checksum(0x1234);
        t.options_bytes_mut().copy_from_slice(&self.opts);
        t.payload_mut().copy_from_slice(&self.payload);
        f
    }
}

/// A response header from the target to the client.
fn r(seq: u32, ack: u32, flags: u8, payload: u16) -> ResponseHeader {
    ResponseHeader {
        src: TARGET.addr(),
        dst: SocketAddr::new(IpAddr::V4(CLIENT), CPORT),
        total_len: 40 + payload,
        payload_len: payload,
        seq,
        ack,
        flags,
        window: 29200,
        timestamps: None,
        window_scale: None,
        mss: None,
    }
}

fn syn_ack(seq: u32, ack: u32) -> ResponseHeader {
    ResponseHeader { window: 65535, window_scale: Some(7), mss: Some(1460), ..r(seq, ack, SYN | ACK, 0) }
}

/// A decoded output frame.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    sport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    id: u16,
    ttl: u8,
    total_len: u16,
    opts: Vec<u8>,
    payload: Vec<u8>,
}

impl Sent {
    fn ts(&self) -> Option<(u32, u32)> {
        let mut h = vec![0u8; 20];
        h[12] = (((20 + self.opts.len()) / 4) as u8) << 4;
        h.extend_from_slice(&self.opts);
        tcp::Packet::new_checked(&h[..]).ok()?.find_timestamps().map(|(_, v, e)| (v, e))
    }
}

/// The fake Output: records frames, CLIENT_ADDs and CLIENT_DELs.
struct Rec {
    frames: Vec<Vec<u8>>,
    adds: Vec<(SocketAddr, SocketAddr)>,
    /// Every CLIENT_ADD (true) and CLIENT_DEL (false) request in order, never cleared by helpers.
    registry: Vec<(bool, SocketAddr, SocketAddr)>,
    tx_ok: bool,
    add_ok: bool,
    buf: usize,
    lat: Vec<(Latency, u64)>,
    /// What `ready` answers (TX room).
    ready: bool,
}

impl Output for Rec {
    fn ready(&mut self) -> bool {
        self.ready
    }
    fn transmit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if !self.tx_ok {
            return false;
        }
        let mut b = vec![0x55u8; self.buf];
        let n = build(&mut b);
        if n > 0 {
            b.truncate(n);
            self.frames.push(b);
        }
        true
    }
    fn client_add(&mut self, client: SocketAddr, target: SocketAddr) -> bool {
        self.adds.push((client, target));
        if self.add_ok {
            self.registry.push((true, client, target));
        }
        self.add_ok
    }
    fn client_del(&mut self, client: SocketAddr, target: SocketAddr) {
        self.registry.push((false, client, target));
    }
    fn latency(&mut self, what: Latency, nanos: u64) {
        self.lat.push((what, nanos));
    }
}

struct Harness {
    e: Engine,
    out: Rec,
    t0: Instant,
    /// The target sessions are replayed to.
    target: Target,
    /// The client every session is given (family translation); `None`: the captured one.
    given: Option<IpAddr>,
}

impl Harness {
    fn new(cfg: Config) -> Harness {
        Harness::with(cfg, TARGET, None)
    }

    /// Replays to the IPv6 [`TARGET6`].
    fn v6(cfg: Config) -> Harness {
        Harness::with(cfg, TARGET6, None)
    }

    /// Replays to `target` from `client` (of its family), whatever the capture's family.
    fn translated(cfg: Config, target: Target, client: IpAddr) -> Harness {
        Harness::with(cfg, target, Some(client))
    }

    fn with(cfg: Config, target: Target, given: Option<IpAddr>) -> Harness {
        Harness {
            target,
            given,
            e: Engine::new(cfg, vec![target]),
            out: Rec {
                frames: Vec::new(),
                adds: Vec::new(),
                registry: Vec::new(),
                tx_ok: true,
                add_ok: true,
                buf: 2048,
                lat: Vec::new(),
                ready: true,
            },
            t0: Instant::now(),
        }
    }
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn client(&mut self, ms: u64, c: &C) {
        let f = c.frame();
        let p = parse(&f).unwrap().unwrap();
        let now = self.at(ms);
        match self.given {
            Some(ip) => self.e.on_client_as(now, 0, SocketAddr::new(ip, p.src_port), &p, &f, &mut self.out),
            None => self.e.on_client(now, 0, &p, &f, &mut self.out),
        }
    }
    /// The client address sessions have in this harness.
    fn client_ip(&self) -> IpAddr {
        match (self.given, self.target.ip) {
            (Some(ip), _) => ip,
            (None, IpAddr::V6(_)) => IpAddr::V6(CLIENT6),
            (None, IpAddr::V4(_)) => IpAddr::V4(CLIENT),
        }
    }
    fn resp(&mut self, ms: u64, mut h: ResponseHeader) {
        // The helpers' headers are IPv4's: move them to this harness's addresses.
        if h.src == TARGET.addr() {
            h.src = self.target.addr();
        }
        if h.dst.ip() == IpAddr::V4(CLIENT) {
            h.dst = SocketAddr::new(self.client_ip(), h.dst.port());
        }
        let opts = 4 * u16::from(h.mss.is_some())
            + 4 * u16::from(h.window_scale.is_some())
            + 12 * u16::from(h.timestamps.is_some());
        if h.total_len == 40 + h.payload_len {
            h.total_len += opts;
        }
        if h.dst.is_ipv6() {
            // An IPv6 header is 20 bytes longer.
            h.total_len = h.total_len.saturating_add(20);
        }
        // Through the channel encoding, as the control thread would.
        let h2 = ResponseHeader::from_msg(&h.to_msg()).unwrap();
        assert_eq!(h2, h);
        let now = self.at(ms);
        self.e.on_response(now, &h2, &mut self.out);
    }
    fn tick(&mut self, ms: u64) {
        let now = self.at(ms);
        self.e.on_timers(now, &mut self.out);
    }
    fn n(&self) -> &Counters {
        self.e.counters()
    }
    /// Decode, check and return every frame sent since the last call.
    fn take(&mut self) -> Vec<Sent> {
        let (client, target) = (self.client_ip(), self.target);
        self.out.frames.drain(..).map(|f| decode_for(&f, client, &target)).collect()
    }
    fn take1(&mut self) -> Sent {
        let mut v = self.take();
        assert_eq!(v.len(), 1, "{v:?}");
        v.pop().unwrap()
    }
    fn adds(&mut self) -> usize {
        self.out.adds.drain(..).count()
    }
    /// The usual opening of a captured-SYN session: SYN (seq 1000, online ISN 5000), the
    /// client's 3rd-handshake ACK 10 ms later, then the SYN-ACK (target ISN 9000).
    fn open(&mut self) {
        self.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS[..4]));
        self.client(10, &c(1001, 5001, ACK));
        self.resp(12, syn_ack(9000, 1001));
        let v = self.take();
        assert_eq!(v.len(), 2);
        assert_eq!((v[1].seq, v[1].ack, v[1].flags), (1001, 9001, ACK));
        self.out.adds.clear();
    }
}

/// Decode an output frame, checking its addresses (`client` to `target`) and both checksums.
/// IPv6 frames have no ident (0) and their hop limit in `ttl`.
fn decode_for(f: &[u8], client: IpAddr, target: &Target) -> Sent {
    let p = check(f);
    assert_eq!(p.ip_end, f.len(), "no padding or garbage after the packet");
    let eth = ethernet::Frame::new_checked(f).unwrap();
    assert_eq!(eth.dst_addr(), MacAddr(target.dst_mac));
    assert_eq!(eth.src_addr(), MacAddr(target.src_mac));
    assert_eq!((p.src_ip, p.dst_ip), (client, target.ip));
    assert_eq!(p.l4_offset, if target.ip.is_ipv6() { 54 } else { 34 }, "no IP options or extension headers");
    let (id, ttl, total_len) = match target.ip {
        IpAddr::V4(_) => {
            let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
            (ip.ident(), ip.ttl(), ip.total_len())
        }
        IpAddr::V6(_) => {
            let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
            assert_eq!(ip.next_header(), 6);
            (0, ip.hop_limit(), 40 + ip.payload_len())
        }
    };
    let t = tcp::Packet::new_checked(&f[p.l4_offset..p.ip_end]).unwrap();
    assert_eq!(t.dst_port(), target.port);
    Sent {
        sport: t.src_port(),
        seq: t.seq_number(),
        ack: t.ack_number(),
        flags: t.flags(),
        window: t.window(),
        id,
        ttl,
        total_len,
        opts: t.options_bytes().to_vec(),
        payload: t.payload().to_vec(),
    }
}

/// Check that an output frame parses and that its IP (IPv4: header checksum) and TCP checksums
/// verify, with the family's pseudo-header.
fn check(f: &[u8]) -> crate::wire::parse::Parsed {
    let p = parse(f).unwrap().unwrap();
    let t = tcp::Packet::new_checked(&f[p.l4_offset..p.ip_end]).unwrap();
    match (p.src_ip, p.dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
            assert!(ip.verify_checksum(), "IPv4 checksum");
            assert!(t.verify_checksum_v4(s, d), "TCP checksum");
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => assert!(t.verify_checksum_v6(&s, &d), "TCP checksum (IPv6)"),
        _ => panic!("mixed families"),
    }
    p
}

fn body(n: usize, tag: u8) -> Vec<u8> {
    (0..n).map(|i| tag.wrapping_add(i as u8)).collect()
}

#[test]
fn http_keep_alive_session() {
    let mut h = Harness::new(cfg());
    // SYN: CLIENT_ADD first, then the SYN, unchanged but for the destination.
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS).id(0x10));
    assert_eq!(h.out.adds, vec![(SocketAddr::V4(SocketAddrV4::new(CLIENT, CPORT)), TARGET.addr())]);
    let syn = h.take1();
    assert_eq!((syn.sport, syn.seq, syn.ack, syn.flags), (CPORT, 1000, 0, SYN));
    assert_eq!((syn.window, syn.id, syn.ttl), (502, 0x10, 63));
    assert_eq!(syn.opts, SYN_OPTS);
    // The 3rd-handshake ACK and the first request are held until the SYN-ACK.
    h.client(10, &c(1001, 5001, ACK).id(0x11));
    let req1 = body(100, b'a');
    h.client(11, &c(1001, 5001, PSH | ACK).data(&req1).id(0x12));
    assert!(h.take().is_empty());
    h.resp(12, syn_ack(9000, 1001));
    assert_eq!(h.n().conns, 1);
    let v = h.take();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].seq, v[0].ack, v[0].flags, v[0].id), (1001, 9001, ACK, 0x11));
    assert_eq!((v[1].seq, v[1].ack, v[1].flags), (1001, 9001, PSH | ACK));
    assert_eq!(v[1].payload, req1);

    // Response 1 (500 bytes); the client's pure ACK of it is suppressed.
    h.resp(20, r(9001, 1101, PSH | ACK, 500));
    h.client(21, &c(1101, 5501, ACK));
    assert_eq!(h.n().clt_pure_ack_suppressed, 1);
    // Request 2 is a new request (the client's ack moved): held until response 1 completes.
    let req2 = body(80, b'A');
    h.client(22, &c(1101, 5501, PSH | ACK).data(&req2).id(0x14));
    assert!(h.take().is_empty());
    // rtt = 10 ms (SYN → 3rd ACK): the delayed ACK 10 ms after the response data.
    assert_eq!(h.e.next_deadline(), Some(h.at(30)));
    h.tick(29);
    assert!(h.take().is_empty());
    h.tick(30);
    let ack = h.take1();
    assert_eq!((ack.seq, ack.ack, ack.flags), (1101, 9501, ACK));
    assert_eq!((ack.window, ack.total_len, ack.ttl, ack.id), (65535, 40, 64, 0x13));
    // Not full: rtt/2 later, no new data, the response is complete and request 2 goes out.
    h.tick(34);
    assert!(h.take().is_empty());
    h.tick(35);
    let d2 = h.take1();
    assert_eq!((d2.seq, d2.ack, d2.payload.clone()), (1101, 9501, req2));

    h.resp(40, r(9501, 1181, PSH | ACK, 300));
    h.tick(50);
    assert_eq!(h.take1().ack, 9801);
    h.tick(55);
    assert!(h.take().is_empty());

    // The client closes first: FIN goes out, the target's FIN gets our ACK, no RST.
    h.client(60, &c(1181, 5801, FIN | ACK));
    let fin = h.take1();
    assert_eq!((fin.seq, fin.ack, fin.flags), (1181, 9801, FIN | ACK));
    h.resp(61, r(9801, 1182, FIN | ACK, 0));
    let last = h.take1();
    assert_eq!((last.seq, last.ack, last.flags), (1182, 9802, ACK));
    h.client(62, &c(1182, 5802, ACK));
    assert!(h.take().is_empty());
    let n = *h.n();
    assert_eq!((n.sent_rst, n.sent_fin, n.time_wait, n.released), (0, 1, 1, 0));
    assert_eq!((n.sent_payload, n.resp, n.resp_payload, n.resp_fin), (2, 4, 2, 1));
    assert_eq!((n.clt_packets, n.clt_syn, n.clt_payload), (5, 1, 2));
    // Time-wait, then release. (A cancelled deadline may still wake the engine once.)
    h.tick(200);
    assert_eq!(h.e.next_deadline(), Some(h.at(6061)));
    h.tick(6060);
    assert_eq!(h.e.active_sessions(), 1);
    h.tick(6061);
    assert_eq!(h.e.active_sessions(), 0);
    assert_eq!((h.n().released, h.n().active), (1, 0));
    assert_eq!(h.e.next_deadline(), None);
}

/// A keep-alive session with rtt 10 ms (SYN at 0, 3rd ACK at 10): request 1 answered at 20 ms
/// (500 bytes, not full), request 2 captured at 22 ms and held for the response's end. The
/// delayed ACK is due at 30 ms, the response's end rtt/2 after it.
fn answered_with_one_waiting(cfg: Config) -> (Harness, Vec<u8>) {
    let mut h = Harness::new(cfg);
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS));
    h.client(10, &c(1001, 5001, ACK));
    h.client(11, &c(1001, 5001, PSH | ACK).data(&body(100, b'a')));
    h.resp(12, syn_ack(9000, 1001));
    h.resp(20, r(9001, 1101, PSH | ACK, 500));
    let req2 = body(80, b'A');
    h.client(22, &c(1101, 5501, PSH | ACK).data(&req2));
    h.take();
    assert_eq!(h.e.next_deadline(), Some(h.at(30)));
    (h, req2)
}

#[test]
fn a_timer_runs_within_the_slack_early_as_at_its_deadline_and_the_chain_never_drifts() {
    let us = Duration::from_micros;
    let (mut h, req2) = answered_with_one_waiting(cfg());
    assert_eq!(h.e.config().timer_slack, us(250));
    // 300 µs before the delayed ACK: beyond the slack, nothing.
    h.e.on_timers(h.at(30) - us(300), &mut h.out);
    assert!(h.take().is_empty());
    // 200 µs before (the worker awake for something else): the ACK goes now...
    let early = h.at(30) - us(200);
    h.e.on_timers(early, &mut h.out);
    assert_eq!(h.take1().ack, 9501);
    // ... and the response's end counts from its deadline (30 + 5 ms), not from now.
    assert_eq!(h.e.next_deadline(), Some(h.at(35)));
    // Taken 200 µs early too: request 2 goes out. Its replay round trip is measured from when
    // it really left (34.8 ms), not from the deadline it ran as.
    h.e.on_timers(h.at(35) - us(200), &mut h.out);
    assert_eq!(h.take1().payload, req2);
    h.out.lat.clear();
    h.resp(36, r(9501, 1181, ACK, 0));
    assert_eq!(h.out.lat, vec![(Latency::ReplayRtt, 1_200_000)]);

    // Without slack every timer waits for its deadline.
    let (mut h, _) = answered_with_one_waiting(Config { timer_slack: Duration::ZERO, ..cfg() });
    h.e.on_timers(early, &mut h.out);
    assert!(h.take().is_empty());
    h.tick(30);
    assert_eq!(h.take1().ack, 9501);
}

#[test]
fn timestamps_and_window_scale() {
    let mut h = Harness::new(cfg());
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS));
    h.client(10, &c(1001, 5001, ACK).opts(&[1, 1, 8, 10, 0, 0, 3, 0xf2, 0, 0, 0, 77]));
    h.take();
    let mut sa = syn_ack(9000, 1001);
    sa.timestamps = Some((50_000, 1000));
    h.resp(12, sa);
    // TSecr is the target's TSval; TSval (1010) is kept, being ahead.
    assert_eq!(h.take1().ts(), Some((1010, 50_000)));
    // A data packet whose TSval went backwards is raised to the highest seen.
    let ts_opts = [1, 1, 8, 10, 0, 0, 3, 0xf0, 0, 0, 0, 88];
    h.client(13, &c(1001, 5001, PSH | ACK).data(b"hello").opts(&ts_opts));
    assert_eq!(h.take1().ts(), Some((1010, 50_000)));
    let mut resp = r(9001, 1006, PSH | ACK, 10);
    resp.timestamps = Some((50_100, 1010));
    resp.window = 2;
    h.resp(20, resp);
    // The faked ACK carries NOP NOP TS(ts_value, ts_ec_r) and is 52 bytes.
    h.tick(30);
    let a = h.take1();
    assert_eq!((a.total_len, a.opts.len()), (52, 12));
    assert_eq!(a.ts(), Some((1010, 50_100)));
    // Window 2 << 7 = 256: a 300-byte segment waits for the window (in flight is 0 only
    // after the ack), 200 bytes pass.
    h.tick(35);
    h.client(40, &c(1006, 5011, PSH | ACK).data(&body(200, 0)));
    h.client(41, &c(1206, 5011, PSH | ACK).data(&body(100, 0)));
    assert_eq!(h.take().len(), 1, "the second one exceeds the peer window");
    h.resp(45, ResponseHeader { window: 4, ..r(9011, 1206, ACK, 0) });
    assert_eq!(h.take1().seq, 1206);
}

#[test]
fn a_client_clock_in_the_upper_half_keeps_its_timestamps() {
    // Linux offsets each connection's TSval at random: half of them are "before" 0 in sequence
    // arithmetic, and must not be clamped to it.
    let tsopt = |v: u32| {
        let b = v.to_be_bytes();
        [1, 1, 8, 10, b[0], b[1], b[2], b[3], 0, 0, 0, 0]
    };
    let mut h = Harness::new(cfg());
    h.client(0, &c(1000, 0, SYN).opts(&tsopt(0xf000_0000)));
    h.take();
    let mut sa = syn_ack(9000, 1001);
    sa.timestamps = Some((50_000, 0xf000_0000));
    h.resp(2, sa);
    h.client(10, &c(1001, 9001, ACK).opts(&tsopt(0xf000_0010)));
    h.client(11, &c(1001, 9001, PSH | ACK).data(b"hello").opts(&tsopt(0xf000_0011)));
    let sent = h.take();
    assert_eq!(sent.last().and_then(|s| s.ts()), Some((0xf000_0011, 50_000)));
    assert!(sent.iter().all(|s| s.ts().is_some_and(|(v, _)| v >= 0xf000_0000)), "{sent:?}");
}

#[test]
fn mid_stream_session_gets_a_fake_syn() {
    let mut h = Harness::new(Config { mss: 1400, ..cfg() });
    let req = body(50, b'x');
    h.client(0, &c(5000, 777, PSH | ACK).data(&req).id(0x1000));
    assert_eq!((h.adds(), h.n().fake_syn), (1, 1));
    let syn = h.take1();
    assert_eq!(
        syn,
        Sent {
            sport: CPORT,
            seq: 4999,
            ack: 0,
            flags: SYN,
            window: 65535,
            id: 0x0ffe,
            ttl: 64,
            total_len: 44,
            opts: vec![2, 4, 0x05, 0x78],
            payload: vec![],
        }
    );
    h.resp(5, ResponseHeader { window: 64240, ..r(300, 5000, SYN | ACK, 0) });
    let v = h.take();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].seq, v[0].ack, v[0].flags, v[0].id, v[0].total_len), (5000, 301, ACK, 0x0fff, 40));
    assert_eq!((v[1].seq, v[1].ack, v[1].window, v[1].id), (5000, 301, 65535, 0x1000));
    assert_eq!(v[1].payload, req);
    // Later client packets of a fake-SYN session also carry window 65535; pure ACKs are ours.
    h.client(6, &c(5050, 777, ACK));
    assert_eq!(h.n().clt_pure_ack_suppressed, 1);
}

#[test]
fn only_syn_sessions_drops_mid_stream() {
    let mut h = Harness::new(Config { only_syn_sessions: true, ..cfg() });
    h.client(0, &c(5000, 777, PSH | ACK).data(b"x"));
    h.client(1, &c(5001, 777, ACK));
    assert_eq!((h.adds(), h.take().len(), h.e.active_sessions()), (0, 0, 0));
    assert_eq!((h.n().clt_no_syn, h.n().clt_no_session), (1, 1));
}

#[test]
fn server_speaks_first_greeting() {
    let mut h = Harness::new(cfg());
    h.open();
    // The real client received a 20-byte greeting before its request (ack 5021).
    h.client(20, &c(1001, 5021, PSH | ACK).data(b"LOGIN"));
    assert!(h.take().is_empty(), "held until the target's greeting");
    h.resp(30, r(9001, 1001, PSH | ACK, 20));
    h.tick(40);
    assert_eq!(h.take1().ack, 9021);
    h.tick(45);
    let d = h.take1();
    assert_eq!((d.seq, d.ack, d.payload.as_slice()), (1001, 9021, &b"LOGIN"[..]));
}

#[test]
fn multi_segment_request_streams_out() {
    let mut h = Harness::new(cfg());
    h.open();
    // A previous request and part of its response, so the session awaits a response.
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"first"));
    h.take();
    h.resp(22, r(9001, 1006, PSH | ACK, 100));
    // A 3-segment request larger than the MSS: the first segment waits for the response,
    // then all three go out back to back.
    let segs: Vec<Vec<u8>> = (0..3).map(|i| body(1448, i)).collect();
    let mut seq = 1006;
    for s in &segs {
        h.client(23, &c(seq, 5101, ACK).data(s));
        seq += 1448;
    }
    assert!(h.take().is_empty());
    h.tick(32);
    h.take();
    h.tick(37);
    let v = h.take();
    assert_eq!(v.len(), 3);
    for (i, s) in v.iter().enumerate() {
        assert_eq!((s.seq, s.ack), (1006 + 1448 * i as u32, 9101));
        assert_eq!(s.payload, segs[i]);
    }
    // Segments of the same request captured while it is being sent continue at once.
    h.client(38, &c(seq, 5101, PSH | ACK).data(b"tail"));
    assert_eq!(h.take1().seq, seq);
    assert_eq!(h.n().sent_payload, 5);
}

#[test]
fn rto_retransmission() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, ACK).data(&body(100, 1)));
    h.client(20, &c(1101, 5001, PSH | ACK).data(&body(100, 2)));
    assert_eq!(h.take().len(), 2);
    // The target got only the first segment.
    h.resp(25, r(9001, 1101, ACK, 0));
    h.tick(119);
    assert!(h.take().is_empty());
    h.tick(120);
    let re = h.take1();
    assert_eq!((re.seq, re.ack, re.payload), (1101, 9001, body(100, 2)));
    assert_eq!((h.n().retransmit, h.n().sent_payload), (1, 2));
    // No backoff: again 100 ms later, until acked.
    h.tick(220);
    assert_eq!(h.take1().seq, 1101);
    h.resp(225, r(9001, 1201, ACK, 0));
    h.resp(226, r(9001, 1201, PSH | ACK, 10));
    assert_eq!(h.n().retrans_ok, 1);
    h.tick(320);
    assert!(h.take().iter().all(|s| s.payload.is_empty()), "all acked: no retransmission");
    assert_eq!(h.n().retransmit, 2);
}

#[test]
fn fast_retransmit_on_three_dup_acks() {
    let mut h = Harness::new(cfg());
    h.open();
    for i in 0..4u32 {
        h.client(20, &c(1001 + i * 100, 5001, ACK).data(&body(100, i as u8)));
    }
    assert_eq!(h.take().len(), 4);
    h.resp(21, r(9001, 1101, ACK, 0));
    h.resp(22, r(9001, 1101, ACK, 0));
    h.resp(22, r(9001, 1101, ACK, 0));
    assert!(h.take().is_empty());
    h.resp(23, r(9001, 1101, ACK, 0));
    let re = h.take1();
    assert_eq!((re.seq, re.payload), (1101, body(100, 1)));
    assert_eq!(h.n().retransmit, 1);
}

#[test]
fn syn_retransmission_and_establish_timeout() {
    let mut h = Harness::new(cfg());
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS));
    h.take();
    h.tick(999);
    assert!(h.take().is_empty());
    h.tick(1000);
    let s1 = h.take1();
    assert_eq!((s1.seq, s1.flags, s1.opts.clone()), (1000, SYN, SYN_OPTS.to_vec()));
    // Doubling: 2 s later.
    h.tick(2999);
    assert!(h.take().is_empty());
    h.tick(3000);
    assert_eq!(h.take1().flags, SYN);
    assert_eq!((h.n().syn_retransmit, h.n().sent_syn), (2, 3));
    // Given up at 5 s: a passive RST, counted, then time-wait.
    h.tick(5000);
    let rst = h.take1();
    assert_eq!((rst.seq, rst.flags, rst.total_len), (1001, RST | ACK, 40));
    assert_eq!((h.n().establish_timeout, h.n().time_wait), (1, 1));
    assert_eq!(h.adds(), 1, "no CLIENT_ADD for retransmitted SYNs");

    // A late SYN-ACK on time-wait is ignored, the next response gets a RST.
    h.resp(5001, syn_ack(9000, 1001));
    assert!(h.take().is_empty());
    h.resp(5002, syn_ack(9000, 1001));
    let r2 = h.take1();
    assert_eq!((r2.seq, r2.ack, r2.flags), (1001, 9000, RST | ACK));
}

#[test]
fn fake_syn_retransmission_repeats_its_fields() {
    let mut h = Harness::new(cfg());
    h.client(0, &c(5000, 777, PSH | ACK).data(b"x").id(0x1000));
    let syn = h.take1();
    h.tick(1000);
    assert_eq!(h.take1(), syn);
    h.resp(1001, r(300, 5000, SYN | ACK, 0));
    assert_eq!(h.take().len(), 2);
    assert_eq!(h.n().syn_retransmit, 1);
}

#[test]
fn target_reset_with_unsent_data_reconstructs() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req1"));
    h.take();
    h.resp(25, r(9001, 1005, PSH | ACK, 50));
    // Request 2 is held (awaiting response 1) when the target resets the connection.
    h.client(26, &c(1005, 5051, PSH | ACK).data(b"req2").id(0x300));
    assert!(h.take().is_empty());
    h.resp(27, r(9051, 1005, RST | ACK, 0));
    let rst = h.take1();
    assert_eq!((rst.seq, rst.ack, rst.flags), (1005, 9051, RST | ACK));
    // After rtt (10 ms): a new CLIENT_ADD and a fake SYN on the same tuple.
    h.tick(36);
    assert!(h.take().is_empty());
    h.tick(37);
    assert_eq!(h.adds(), 1);
    let syn = h.take1();
    assert_eq!((syn.seq, syn.flags, syn.id, syn.total_len), (1004, SYN, 0x2fe, 44));
    assert_eq!((h.n().reconnect, h.n().fake_syn), (1, 0));
    h.resp(40, r(7000, 1005, SYN | ACK, 0));
    let v = h.take();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].seq, v[0].ack, v[0].flags), (1005, 7001, ACK));
    assert_eq!((v[1].seq, v[1].ack, v[1].payload.as_slice()), (1005, 7001, &b"req2"[..]));
    assert_eq!(h.n().conns, 2);
}

#[test]
fn target_fin_closes_and_resets() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req1"));
    h.take();
    // The target answers and closes (HTTP/1.0): ACK of its FIN, then a faked RST.
    h.resp(25, r(9001, 1005, FIN | PSH | ACK, 50));
    let v = h.take();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].seq, v[0].ack, v[0].flags), (1005, 9052, ACK));
    assert_eq!((v[1].seq, v[1].ack, v[1].flags), (1005, 9051, RST | ACK));
    assert_eq!(h.n().time_wait, 1);
}

#[test]
fn target_fin_releases_a_captured_client_fin() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req1"));
    h.take();
    h.resp(25, r(9001, 1005, PSH | ACK, 50));
    // The client's FIN is captured before the target's FIN comes back: FIN/FIN, no RST.
    h.client(26, &c(1005, 5052, FIN | ACK));
    h.resp(27, r(9051, 1005, FIN | ACK, 0));
    let v = h.take();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].flags, v[0].ack), (ACK, 9052));
    assert_eq!((v[1].seq, v[1].ack, v[1].flags), (1005, 9052, FIN | ACK));
    assert_eq!((h.n().sent_rst, h.n().time_wait), (0, 1));
}

#[test]
fn client_rst() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req1"));
    h.take();
    // Held while the response is awaited.
    h.client(21, &c(1005, 5001, RST | ACK));
    assert!(h.take().is_empty());
    h.resp(25, r(9001, 1005, PSH | ACK, 50));
    h.tick(35);
    h.take();
    // ... and until the target has been quiet for 50 ms (RST_QUIET).
    h.tick(70);
    assert!(h.take().is_empty());
    h.tick(75);
    let rst = h.take1();
    assert_eq!((rst.seq, rst.ack, rst.flags), (1005, 9051, RST | ACK));
    assert_eq!((h.n().sent_rst, h.n().time_wait), (1, 1));
    h.tick(6075);
    assert_eq!(h.e.active_sessions(), 0);
}

#[test]
fn a_client_rst_waits_until_the_target_answered_what_was_sent_before_it() {
    let mut h = Harness::new(cfg());
    h.open();
    // Five request segments go out at once (one request's continuation: the same ack), then
    // the client resets.
    for k in 0..5u32 {
        h.client(20 + u64::from(k), &c(1001 + 10 * k, 5001, PSH | ACK).data(b"0123456789"));
    }
    assert_eq!(h.take().len(), 5);
    h.client(26, &c(1051, 5001, RST | ACK));
    // The target answers the first part only: the response looks complete after its delayed-ACK
    // wait, but what it has not acked may still be unread in its socket, where a RST would
    // discard it.
    h.resp(30, r(9001, 1011, PSH | ACK, 50));
    for t in (31..=90).step_by(3) {
        h.tick(t);
    }
    assert!(h.take().iter().all(|s| s.flags & RST == 0), "held while 1011..1051 is unacked");
    // The rest is acked and answered at 95: the RST goes once the target was quiet for 50 ms.
    h.resp(95, r(9051, 1051, PSH | ACK, 50));
    for t in (96..=140).step_by(4) {
        h.tick(t);
    }
    assert!(h.take().iter().all(|s| s.flags & RST == 0), "held while the target may still answer");
    h.tick(146);
    let v = h.take();
    let rst: Vec<_> = v.iter().filter(|s| s.flags & RST != 0).collect();
    assert_eq!(rst.len(), 1, "{v:?}");
    assert_eq!((rst[0].seq, rst[0].ack), (1051, 9101));
}

#[test]
fn a_client_rst_is_held_at_most_5_s() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req1"));
    h.take();
    h.client(21, &c(1005, 5001, RST | ACK));
    // The target never goes quiet for 50 ms (a slice of answer every 40 ms, each looking
    // complete after its delayed-ACK wait): the RST goes 5 s after it was first held.
    let mut sent_at = None;
    'run: for (i, t0) in (25..7000).step_by(40).enumerate() {
        h.resp(t0, r(9001 + 50 * i as u32, 1005, PSH | ACK, 50));
        for t in (t0..t0 + 40).step_by(5) {
            h.tick(t);
            if h.take().iter().any(|s| s.flags & RST != 0) {
                sent_at = Some(t);
                break 'run;
            }
        }
    }
    let t = sent_at.expect("the RST went out");
    assert!((5000..5500).contains(&t), "sent at {t} ms");
}

#[test]
fn zero_window_holds_then_resumes() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req1"));
    h.take();
    // Response data with window 0: an immediate ACK.
    h.resp(25, ResponseHeader { window: 0, ..r(9001, 1005, PSH | ACK, 50) });
    let a = h.take1();
    assert_eq!((a.seq, a.ack, a.flags), (1005, 9051, ACK));
    h.tick(35);
    h.take();
    h.client(36, &c(1005, 5051, PSH | ACK).data(b"req2"));
    h.tick(40);
    assert!(h.take().is_empty(), "held by the zero window");
    h.resp(50, ResponseHeader { window: 100, ..r(9051, 1005, ACK, 0) });
    assert_eq!(h.take1().payload, b"req2");
}

#[test]
fn gro_frame_is_split_to_the_mtu() {
    let mut h = Harness::new(cfg());
    h.open();
    let big = body(65_000, 7);
    h.client(20, &c(1001, 5001, PSH | ACK).data(&big).id(0x4000));
    assert_eq!(h.n().split, 1);
    let v = h.take();
    assert_eq!(v.len(), 65_000usize.div_ceil(1460));
    let mut seq = 1001;
    let mut all = Vec::new();
    for (i, s) in v.iter().enumerate() {
        let last = i + 1 == v.len();
        assert_eq!(s.seq, seq);
        assert_eq!(s.id, 0x4000 + i as u16);
        assert!(s.total_len <= 1500);
        assert_eq!(s.flags, if last { PSH | ACK } else { ACK });
        assert_eq!(s.ack, 9001);
        seq += s.payload.len() as u32;
        all.extend_from_slice(&s.payload);
    }
    assert_eq!(all, big);
    assert_eq!(h.n().sent_payload, 45);

    // A FIN on a split frame goes on the last piece only.
    h.resp(30, r(9001, seq, ACK, 0));
    h.client(40, &c(seq, 5001, FIN | PSH | ACK).data(&body(3000, 1)));
    let v = h.take();
    assert_eq!(v.iter().map(|s| s.flags).collect::<Vec<_>>(), [ACK, ACK, FIN | PSH | ACK]);
}

#[test]
fn no_wait_pipelines_requests() {
    let mut h = Harness::new(Config { wait_response: false, ..cfg() });
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"SET a 1"));
    h.resp(21, r(9001, 1008, PSH | ACK, 5));
    h.client(22, &c(1008, 5006, PSH | ACK).data(b"SET b 2"));
    h.client(22, &c(1015, 5006, PSH | ACK).data(b"SET c 3"));
    let v = h.take();
    assert_eq!(v.len(), 3, "nothing waits for a response");
    assert_eq!((v[1].ack, v[2].seq), (9006, 1015));
}

/// One GSO super-segment's header (xdpcopy-intercept --local: 44 wire segments of 1448 bytes in
/// one 64 KiB message) is acked whole, and — no PSH: the target has more queued — the response
/// is not complete after one quiet rtt: the client's FIN waits for the rest (nginx aborts an
/// answer when the FIN arrives early).
#[test]
fn a_gso_super_segment_is_acked_whole_and_the_client_fin_waits_for_the_rest() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"GET /huge"));
    h.take();
    let big = 44 * 1448;
    h.resp(21, r(9001, 1010, ACK, big));
    // rtt = 10 ms: the delayed ACK covers the whole super-segment.
    h.tick(31);
    let ack = h.take1();
    assert_eq!((ack.seq, ack.ack, ack.flags), (1010, 9001 + u32::from(big), ACK));
    // The real client has its whole answer (and the online server's FIN) and closes; the test
    // server is still sending.
    let answer = u32::from(big) + 20_000;
    h.client(32, &c(1010, 5001 + answer + 1, FIN | ACK));
    for t in [41, 51, 61] {
        h.tick(t);
        assert!(h.take().is_empty(), "at {t} ms: no PSH yet, the response is not complete");
    }
    // The rest arrives (its last segment has PSH): acked, then one quiet rtt, then the FIN.
    let rest = 20_000;
    h.resp(62, r(9001 + u32::from(big), 1010, PSH | ACK, rest));
    h.tick(72);
    assert_eq!(h.take1().ack, 9001 + u32::from(big) + u32::from(rest));
    h.tick(82);
    let fin = h.take1();
    assert_eq!((fin.seq, fin.ack, fin.flags), (1010, 9001 + u32::from(big) + u32::from(rest), FIN | ACK));
    assert_eq!(h.n().sent_rst, 0);
}

/// The client's FIN says how much of the answer the real client got: while the test server has
/// sent less (each burst with PSH: the server waits for its application, not its window), the FIN
/// is held; a shorter answer releases it after `MORE_WAITS` quiet periods.
#[test]
fn a_client_fin_waits_until_the_target_sent_as_much_as_the_client_received() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"GET /x"));
    h.take();
    h.resp(21, r(9001, 1007, PSH | ACK, 10_000));
    h.client(22, &c(1007, 5001 + 30_000 + 1, FIN | ACK));
    h.tick(31);
    assert_eq!(h.take1().ack, 19_001);
    for t in 32..=50 {
        h.tick(t);
        assert!(h.take().is_empty(), "at {t} ms: 10 000 of 30 000 bytes sent, the FIN waits");
    }
    h.resp(51, r(19_001, 1007, PSH | ACK, 20_000));
    h.tick(61);
    assert_eq!(h.take1().ack, 39_001);
    h.tick(71);
    let fin = h.take1();
    assert_eq!((fin.flags, fin.ack), (FIN | ACK, 39_001));

    // A test answer shorter than the online one: the FIN goes after the bounded wait.
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"GET /x"));
    h.take();
    h.resp(21, r(9001, 1007, PSH | ACK, 10_000));
    h.client(22, &c(1007, 5001 + 30_000 + 1, FIN | ACK));
    let mut fin_at = None;
    for t in 23..1000 {
        h.tick(t);
        if h.take().iter().any(|f| f.flags & FIN != 0) {
            fin_at = Some(t);
            break;
        }
    }
    let fin_at = fin_at.expect("the FIN goes out in the end");
    assert!(
        (41 + 10 * u64::from(engine::MORE_WAITS) - 10..=41 + 10 * u64::from(engine::MORE_WAITS) + 10).contains(&fin_at),
        "{fin_at}"
    );
}

/// Data without PSH holds the next request a bounded number of quiet periods only: a target
/// that never sets PSH (none known) still gets its next request.
#[test]
fn response_data_without_psh_completes_after_the_extra_waits() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"GET /1"));
    h.resp(21, r(9001, 1007, ACK, 5000));
    h.client(22, &c(1007, 10001, PSH | ACK).data(b"GET /2"));
    h.take();
    h.tick(31);
    assert_eq!(h.take1().ack, 14001);
    // A request waits: the first check rtt/2 later, then MORE_WAITS extra quiet rtts, then
    // request 2.
    let done = 31 + 5 + 10 * u64::from(engine::MORE_WAITS);
    for t in 32..done {
        h.tick(t);
        assert!(h.take().is_empty(), "at {t} ms");
    }
    h.tick(done);
    assert_eq!(h.take1().payload, b"GET /2");
}

#[test]
fn waiting_holds_the_next_request() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"GET /1"));
    h.resp(21, r(9001, 1007, PSH | ACK, 5));
    h.client(22, &c(1007, 5006, PSH | ACK).data(b"GET /2"));
    assert_eq!(h.take().len(), 1);
}

#[test]
fn session_table_full_evicts_the_least_recent() {
    let mut h = Harness::new(Config { max_sessions: 2, ..cfg() });
    for (i, port) in [1000u16, 1001, 1002].into_iter().enumerate() {
        h.client(i as u64, &c(1, 0, SYN).port(port));
    }
    assert_eq!((h.n().evicted, h.e.active_sessions()), (1, 2));
    let v = h.take();
    // The SYNs, and the evicted session's passive RST before the third SYN.
    assert_eq!(
        v.iter().map(|s| (s.sport, s.flags)).collect::<Vec<_>>(),
        [(1000, SYN), (1001, SYN), (1000, RST | ACK), (1002, SYN)]
    );
}

#[test]
fn pool_exhaustion_is_counted() {
    // 8 chunks of 256 bytes; no SYN-ACK, so everything stays buffered.
    let mut h = Harness::new(Config { pool_bytes: 2048, ..cfg() });
    h.client(0, &c(1000, 0, SYN));
    // The SYN takes 1 chunk, each 540-byte segment 3: the third segment does not fit.
    for i in 0..3u32 {
        h.client(1, &c(1001 + i * 500, 5001, ACK).data(&body(500, 0)));
    }
    assert_eq!(h.n().pool_exhausted, 1);
    assert_eq!(h.n().time_wait, 1, "the session ended (it has a hole now)");
    assert_eq!(h.take().last().map(|s| s.flags), Some(RST | ACK));
    // The memory came back: a new session works.
    h.client(2, &c(1, 0, SYN).port(2));
    assert_eq!(h.e.active_sessions(), 2);
}

#[test]
fn buffer_cap_ends_a_session() {
    let mut h = Harness::new(Config { max_buffered_bytes: 1000, ..cfg() });
    h.client(0, &c(1000, 0, SYN));
    h.client(1, &c(1001, 5001, ACK).data(&body(500, 0)));
    assert_eq!(h.n().buffer_overflow, 0);
    h.client(1, &c(1501, 5001, ACK).data(&body(500, 0)));
    assert_eq!((h.n().buffer_overflow, h.n().obsolete), (1, 1));
    let v = h.take();
    assert_eq!(v.last().map(|s| s.flags), Some(RST | ACK));
}

#[test]
fn client_retransmissions_and_reordering() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, ACK).data(&body(100, 0)));
    assert_eq!(h.take().len(), 1);
    // A retransmission of sent data is skipped; a late segment fills a hole.
    h.client(21, &c(1001, 5001, ACK).data(&body(100, 0)));
    h.client(22, &c(1201, 5001, ACK).data(&body(100, 2)));
    assert!(h.take().is_empty(), "hole at 1101");
    h.client(23, &c(1101, 5001, ACK).data(&body(100, 1)));
    let v = h.take();
    assert_eq!(v.iter().map(|s| s.seq).collect::<Vec<_>>(), [1101, 1201]);
    // A retransmission overlapping sent data is trimmed to its new bytes.
    h.client(24, &c(1251, 5001, ACK).data(&body(100, 9)));
    let t = h.take1();
    assert_eq!((t.seq, t.payload.len()), (1301, 50));
    assert_eq!(t.payload, body(100, 9)[50..]);
    assert_eq!(h.n().clt_retrans, 1);
}

#[test]
fn an_unfilled_hole_is_skipped_after_hole_wait_and_the_session_goes_on() {
    let mut h = Harness::new(cfg());
    h.open();
    // The capture lost the first request (1001..1101): the second waits at the hole.
    h.client(20, &c(1101, 5001, PSH | ACK).data(&body(100, 1)));
    assert!(h.take().is_empty());
    h.tick(1019);
    assert!(h.take().is_empty());
    assert_eq!(h.n().clt_hole_skipped, 0);
    h.tick(1020);
    // Skipped: the second request goes out where the target's stream stands, whole.
    let t = h.take1();
    assert_eq!((t.seq, &t.payload[..]), (1001, &body(100, 1)[..]));
    assert_eq!((h.n().clt_hole_skipped, h.n().clt_hole_bytes, h.n().obsolete), (1, 100, 0));
    // The target answers it; the next request's captured numbers are moved back too.
    h.resp(1021, r(9001, 1101, PSH | ACK, 50));
    h.tick(1100);
    h.tick(1200);
    assert!(h.take().iter().all(|s| s.payload.is_empty()), "the ACK of the answer");
    h.client(1210, &c(1201, 5051, PSH | ACK).data(&body(100, 2)));
    let t = h.take1();
    assert_eq!((t.seq, &t.payload[..]), (1101, &body(100, 2)[..]));
    // A late retransmission of the skipped bytes is old news to the target.
    h.client(5000, &c(1001, 5001, PSH | ACK).data(&body(100, 0)));
    assert!(h.take().is_empty());
    let n = h.n();
    assert_eq!((n.clt_retrans + n.clt_stale, n.obsolete), (1, 0));
}

#[test]
fn a_hole_filled_in_time_is_not_skipped() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1101, 5011, PSH | ACK).data(&body(100, 1)));
    h.tick(900);
    // The client's retransmission of the segment the network lost arrives first.
    h.client(950, &c(1001, 5001, PSH | ACK).data(&body(100, 0)));
    let v = h.take();
    assert_eq!(v.iter().map(|s| s.seq).collect::<Vec<_>>(), [1001]);
    h.resp(960, r(9001, 1101, PSH | ACK, 10));
    h.tick(980);
    h.tick(1100);
    let v = h.take();
    assert!(v.iter().any(|s| s.seq == 1101 && s.payload == body(100, 1)), "{v:?}");
    assert_eq!(h.n().clt_hole_skipped, 0);
}

#[test]
fn session_and_keepalive_timeouts() {
    let t = Duration::from_secs(2);
    let mut h = Harness::new(Config { session_timeout: t, keepalive_timeout: 2 * t, ..cfg() });
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req"));
    h.resp(21, r(9001, 1004, PSH | ACK, 5));
    h.take();
    // Idle after a request, nothing buffered: -k (4 s after the last response) applies.
    h.tick(2100);
    assert_eq!(h.n().obsolete, 0);
    h.tick(4021);
    assert_eq!(h.n().obsolete, 1);
    assert_eq!(h.take().last().map(|s| s.flags), Some(RST | ACK));

    // A session that never sent a request: -t.
    let mut h = Harness::new(Config { session_timeout: t, keepalive_timeout: 2 * t, ..cfg() });
    h.open();
    h.tick(2012);
    assert_eq!(h.n().obsolete, 1);
}

#[test]
fn default_rtt_applies_to_every_session() {
    let mut h = Harness::new(Config { default_rtt: Some(Duration::from_millis(50)), ..cfg() });
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req"));
    h.resp(21, r(9001, 1004, PSH | ACK, 5));
    h.take();
    assert_eq!(h.e.next_deadline(), Some(h.at(71)));
}

#[test]
fn lan_mode_releases_the_next_request_on_response_data() {
    // A mid-stream session has rtt 1 ms: LAN mode.
    let mut h = Harness::new(cfg());
    h.client(0, &c(5000, 777, PSH | ACK).data(b"req1"));
    h.resp(1, r(300, 5000, SYN | ACK, 0));
    h.take();
    h.client(2, &c(5004, 800, PSH | ACK).data(b"req2"));
    assert!(h.take().is_empty());
    h.resp(3, r(301, 5004, PSH | ACK, 23));
    let d = h.take1();
    assert_eq!((d.seq, d.ack), (5004, 324));
}

#[test]
fn client_add_failure_drops_the_session() {
    let mut h = Harness::new(cfg());
    h.out.add_ok = false;
    h.client(0, &c(1000, 0, SYN));
    assert!(h.take().is_empty());
    assert_eq!((h.n().client_add_failed, h.e.active_sessions()), (1, 0));
}

#[test]
fn tx_failures_are_counted_and_recovered_by_retransmission() {
    let mut h = Harness::new(cfg());
    h.open();
    h.out.tx_ok = false;
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"req"));
    assert_eq!(h.n().tx_no_buffer, 1);
    h.out.tx_ok = true;
    h.tick(120);
    assert_eq!(h.take1().payload, b"req");
    // A buffer too small for the frame is counted too.
    h.out.buf = 40;
    h.tick(220);
    assert_eq!(h.n().tx_buffer_too_small, 1);
}

#[test]
fn without_tx_room_a_session_waits_its_turn_and_loses_nothing() {
    let mut h = Harness::new(Config { wait_response: false, ..cfg() });
    h.open();
    h.out.ready = false;
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"one"));
    h.client(20, &c(1004, 5001, PSH | ACK).data(b"two"));
    assert!(h.take().is_empty());
    assert!(h.e.tx_pending());
    assert_eq!((h.n().tx_no_buffer, h.n().retransmit), (0, 0), "nothing was consumed");
    // Room again: the next round resumes the session, in order, no retransmission needed.
    h.out.ready = true;
    h.tick(21);
    let v = h.take();
    assert_eq!(v.iter().map(|s| s.payload.clone()).collect::<Vec<_>>(), [b"one".to_vec(), b"two".to_vec()]);
    assert!(!h.e.tx_pending());
    assert_eq!(h.n().retransmit, 0);
}

#[test]
fn unknown_and_misrouted_responses_are_counted() {
    let mut h = Harness::new(cfg());
    h.resp(0, r(1, 2, ACK, 0));
    h.open();
    let mut other = r(9001, 1001, ACK, 0);
    other.src = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 99), 8080));
    h.resp(20, other);
    assert_eq!(h.n().unknown_response, 2);
}

#[test]
fn new_syn_on_a_live_tuple_replaces_the_session() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1000, 0, SYN));
    assert_eq!(h.n().clt_retrans, 1, "the same SYN again is a retransmission");
    h.client(30, &c(77_000, 0, SYN));
    let v = h.take();
    assert_eq!(v.iter().map(|s| s.flags).collect::<Vec<_>>(), [RST | ACK, SYN]);
    assert_eq!((h.n().port_reuse, h.n().released, h.e.active_sessions()), (1, 1, 1));
}

#[test]
fn every_counter_has_a_unique_name() {
    use control::counters::CounterSet;
    let names: Vec<String> = Counters::default().named().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), Counters::LEN);
    for (i, a) in names.iter().enumerate() {
        assert!(!names[i + 1..].contains(a));
    }
}

/// Random and garbage inputs never panic, the table never exceeds its capacity, every frame
/// checks out, and every pool chunk comes back once all sessions are released.
#[test]
fn random_inputs_never_panic() {
    for seed in [0x5eed_1234_5678_9abc, 0x0dd_ba11, 0xfeed_f00d_dead_beef] {
        random_run(seed, CatchUp::default(), false);
    }
    // Sessions catching up all the time.
    random_run(0xca7c_4000, CatchUp { bytes: 200, lag: Duration::from_millis(5) }, false);
    // IPv6: captures with and without extension headers, IPv6 header messages.
    random_run(0x6666_1234, CatchUp::default(), true);
}

fn random_run(seed: u64, catch_up: CatchUp, v6: bool) {
    let mut rng = XorShift(seed);
    let config = Config { max_sessions: 8, pool_bytes: 64 << 10, catch_up: Some(catch_up), ..cfg() };
    let mut h = if v6 { Harness::v6(config) } else { Harness::new(config) };
    let ports = [1u16, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let mut ms = 0u64;
    for round in 0..60_000 {
        ms += rng.below(40) as u64;
        match rng.below(10) {
            0..=3 => {
                let flags = match rng.below(8) {
                    0 => SYN,
                    1 => FIN | ACK,
                    2 => RST | ACK,
                    3 => rng.next_u16() as u8,
                    4 => ACK,
                    _ => PSH | ACK,
                };
                let len = match rng.below(6) {
                    0 => 3000 + rng.below(3000),
                    1 | 2 => 0,
                    _ => rng.below(300),
                };
                let mut cf = c(rng.below(6000) as u32, rng.next_u32() % 4, flags)
                    .port(ports[rng.below(ports.len())])
                    .data(&body(len, 0));
                if rng.below(4) == 0 {
                    let n = rng.below(11) * 4;
                    let mut o = vec![0u8; n];
                    rng.fill(&mut o);
                    cf = cf.opts(&o);
                }
                if v6 {
                    cf = if rng.below(3) == 0 { cf.ext() } else { cf.v6() };
                }
                let mut f = cf.frame();
                if rng.below(5) == 0 {
                    // Corrupt header bytes; the parse may still accept it.
                    for _ in 0..=rng.below(3) {
                        let i = 14 + rng.below(40.min(f.len() - 14));
                        f[i] = rng.next_u16() as u8;
                    }
                }
                if let Ok(Some(mut p)) = parse(&f) {
                    if rng.below(10) == 0 {
                        // A Parsed that does not match its frame.
                        p.l3_offset = rng.below(f.len() + 4);
                    }
                    let target = if rng.below(50) == 0 { 1 } else { 0 };
                    let now = h.at(ms);
                    h.e.on_client(now, target, &p, &f, &mut h.out);
                }
            }
            4..=7 if v6 => {
                let flags = [SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST][rng.below(5)];
                let mut rh = r(rng.below(4000) as u32, rng.below(6000) as u32, flags, 0);
                rh.src = TARGET6.addr();
                rh.dst = SocketAddr::new(IpAddr::V6(CLIENT6), ports[rng.below(ports.len())]);
                rh.payload_len = [0u16, 1, 100, 1440][rng.below(4)];
                rh.total_len = 60 + rh.payload_len;
                rh.window = [0u16, 1, 29200][rng.below(3)];
                let mut m: [u8; 84] = rh.to_msg().as_bytes().try_into().unwrap();
                if rng.below(4) == 0 {
                    m[rng.below(84)] = rng.next_u16() as u8;
                }
                if let Ok(rh) = ResponseHeader::from_msg(&control::channel::HeaderMsg::from_bytes6(m)) {
                    let now = h.at(ms);
                    h.e.on_response(now, &rh, &mut h.out);
                }
            }
            4..=7 => {
                let mut m = [0u8; 64];
                if rng.below(3) == 0 {
                    rng.fill(&mut m);
                } else {
                    let flags = [SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST][rng.below(5)];
                    let mut rh = r(rng.below(4000) as u32, rng.below(6000) as u32, flags, 0);
                    rh.dst = SocketAddr::V4(SocketAddrV4::new(CLIENT, ports[rng.below(ports.len())]));
                    rh.payload_len = [0u16, 1, 100, 1460][rng.below(4)];
                    rh.total_len = 40 + rh.payload_len;
                    rh.window = [0u16, 1, 29200][rng.below(3)];
                    if rng.below(3) == 0 {
                        rh.timestamps = Some((rng.next_u32(), rng.next_u32()));
                        rh.window_scale = Some(rng.next_u16() as u8);
                    }
                    m = rh.to_bytes();
                    if rng.below(4) == 0 {
                        m[rng.below(64)] = rng.next_u16() as u8;
                    }
                }
                if let Ok(rh) = ResponseHeader::parse(&m) {
                    let now = h.at(ms);
                    h.e.on_response(now, &rh, &mut h.out);
                }
            }
            _ => {
                h.out.tx_ok = rng.below(20) != 0;
                h.out.add_ok = rng.below(20) != 0;
                h.out.ready = rng.below(10) != 0;
                h.tick(ms);
            }
        }
        assert!(h.e.active_sessions() <= 8);
        h.e.check_invariants();
        if round % 1000 == 0 {
            for f in h.out.frames.drain(..) {
                check(&f);
            }
        }
    }
    // Let everything time out and be released.
    let end = ms + 800_000;
    h.tick(end);
    h.tick(end + 10_000);
    assert_eq!(h.e.active_sessions(), 0);
    assert_eq!(h.e.core_pool_free_chunks(), (64 << 10) / 256);
    for f in h.out.frames.drain(..) {
        check(&f);
    }
}

#[test]
fn time_wait_tuple_reuse_starts_a_new_session() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, FIN | ACK));
    h.resp(21, r(9001, 1002, FIN | ACK, 0));
    h.take();
    assert_eq!(h.n().time_wait, 1);
    // A stray retransmission is dropped; the session stays in time-wait.
    h.client(22, &c(1001, 5001, FIN | ACK));
    assert_eq!((h.n().clt_time_wait, h.e.active_sessions()), (1, 1));
    // A new SYN on the tuple replaces it: CLIENT_ADD and SYN again.
    h.client(30, &c(50_000, 0, SYN));
    assert_eq!((h.adds(), h.n().released, h.e.active_sessions()), (1, 1, 1));
    assert_eq!(h.take1().seq, 50_000);
    h.resp(31, syn_ack(3000, 50_001));
    h.take();
    h.client(32, &c(50_001, 5001, FIN | ACK));
    h.resp(33, r(3001, 50_002, FIN | ACK, 0));
    h.take();
    // New data after the old stream's end also starts a new (fake-SYN) session.
    h.client(40, &c(60_000, 9, PSH | ACK).data(b"again"));
    assert_eq!((h.n().fake_syn, h.n().released), (1, 2));
    assert_eq!(h.take1().seq, 59_999);
}

#[test]
fn client_del_when_a_registered_session_is_removed() {
    let session = SocketAddr::V4(SocketAddrV4::new(CLIENT, CPORT));
    let (add, del) = ((true, session, TARGET.addr()), (false, session, TARGET.addr()));
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, FIN | ACK));
    h.resp(21, r(9001, 1002, FIN | ACK, 0));
    assert_eq!(h.out.registry, vec![add], "in time-wait the session is still there");
    // Port reuse: the old session's CLIENT_DEL comes before the new one's CLIENT_ADD, so the
    // intercept ends with the route registered.
    h.client(30, &c(50_000, 0, SYN));
    assert_eq!(h.out.registry, vec![add, del, add]);
    // Timed out and released: CLIENT_DEL once.
    h.tick(2_000_000);
    h.tick(3_000_000);
    assert_eq!(h.e.active_sessions(), 0);
    assert_eq!(h.out.registry, vec![add, del, add, del]);

    // A session never registered (a bare ACK creates none; data whose CLIENT_ADD failed) sends
    // no CLIENT_DEL.
    let mut h = Harness::new(cfg());
    h.out.add_ok = false;
    h.client(0, &c(1000, 0, SYN));
    h.tick(2_000_000);
    assert_eq!((h.n().client_add_failed, h.e.active_sessions()), (1, 0));
    assert!(h.out.registry.is_empty(), "{:?}", h.out.registry);
}

#[test]
fn stale_target_connection_is_reset_before_the_handshake() {
    let mut h = Harness::new(cfg());
    h.client(0, &c(1000, 0, SYN));
    h.client(10, &c(1001, 5001, ACK));
    h.take();
    // The target answers our SYN with an ACK of an old connection: reset it, SYN again
    // after rtt (10 ms) instead of waiting for the SYN timer.
    h.resp(11, r(444, 777, ACK, 0));
    let rst = h.take1();
    assert_eq!((rst.seq, rst.ack, rst.flags), (777, 444, RST | ACK));
    h.tick(21);
    let syn = h.take1();
    assert_eq!((syn.seq, syn.flags), (1000, SYN));
    assert_eq!(h.n().syn_retransmit, 1);
    h.resp(22, syn_ack(9000, 1001));
    assert_eq!(h.take1().flags, ACK);
}

#[test]
fn handshake_and_response_latencies_are_measured() {
    const MS: u64 = 1_000_000;
    let mut h = Harness::new(cfg());
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS[..4]));
    h.client(10, &c(1001, 5001, ACK));
    h.client(11, &c(1001, 5001, PSH | ACK).data(&body(100, b'a')));
    // SYN out at 0, SYN-ACK at 12: the handshake took 12 ms; the held request goes out at 12.
    h.resp(12, syn_ack(9000, 1001));
    assert_eq!(h.out.lat, vec![(Latency::Handshake, 12 * MS)]);
    // A pure ACK from the target is no response yet, but it acks the request: the replay round
    // trip (request sent at 12, acked at 15) is 3 ms. Its data at 20 ms is the response: 8 ms.
    h.resp(15, r(9001, 1101, ACK, 0));
    h.resp(20, r(9001, 1101, PSH | ACK, 500));
    h.resp(21, r(9501, 1101, PSH | ACK, 500));
    assert_eq!(
        h.out.lat,
        vec![(Latency::Handshake, 12 * MS), (Latency::ReplayRtt, 3 * MS), (Latency::Response, 8 * MS)]
    );
}

/// Request `i` (20 bytes at seq 1001 + 20 i) of a keep-alive session opened with `h.open()`,
/// captured at `ms`; the client's ack moves by 10 (a 10-byte response) per request.
fn request(h: &mut Harness, ms: u64, i: u32) {
    h.client(ms, &c(1001 + 20 * i, 5001 + 10 * i, PSH | ACK).data(&body(20, i as u8)));
}

#[test]
fn a_session_behind_its_capture_catches_up_then_waits_again() {
    // Each request is stored as 60 bytes (IP, TCP, 20 bytes of payload).
    let catch_up = Some(CatchUp { bytes: 240, lag: Duration::from_secs(60) });
    let mut h = Harness::new(Config { catch_up, ..cfg() });
    h.open();
    // Request 0 goes out; 1.. wait for its response while they pile up.
    for i in 0..4 {
        request(&mut h, 20, i);
    }
    assert_eq!(h.take().len(), 1);
    assert_eq!(h.n().catch_up_entered, 0);
    // The fifth makes 240 bytes wait: everything waiting goes out, no response awaited
    // between them, each with the ack translated.
    request(&mut h, 21, 4);
    let v = h.take();
    assert_eq!(v.iter().map(|s| s.seq).collect::<Vec<_>>(), [1021, 1041, 1061, 1081]);
    assert!(v.iter().all(|s| s.ack == 9001 && s.flags == PSH | ACK));
    assert_eq!((h.n().catch_up_entered, h.n().catch_up_requests), (1, 4));
    // Caught up: the next request waits for the response again.
    request(&mut h, 22, 5);
    assert!(h.take().is_empty(), "caught up: strict order again");
    assert_eq!(h.n().catch_up_requests, 4);
}

#[test]
fn a_request_waiting_longer_than_the_lag_starts_a_catch_up() {
    let catch_up = Some(CatchUp { bytes: usize::MAX, lag: Duration::from_millis(100) });
    let mut h = Harness::new(Config { catch_up, ..cfg() });
    h.open();
    request(&mut h, 20, 0);
    request(&mut h, 20, 1);
    assert_eq!(h.take().len(), 1, "request 1 waits for response 0");
    // A slow test server: nothing for 150 ms. The next capture finds request 2 waited too long.
    h.client(170, &c(1041, 5021, PSH | ACK).data(&body(20, 3)));
    let v = h.take();
    assert_eq!(v.iter().map(|s| s.seq).collect::<Vec<_>>(), [1021, 1041]);
    assert_eq!(h.n().catch_up_entered, 1);
}

#[test]
fn catch_up_off_keeps_strict_order() {
    let mut h = Harness::new(Config { catch_up: None, ..cfg() });
    h.open();
    for i in 0..50 {
        request(&mut h, 20, i);
    }
    assert_eq!(h.take().len(), 1);
    assert_eq!(h.n().catch_up_entered, 0);
}

#[test]
fn catch_up_still_waits_for_the_greeting_and_the_handshake() {
    let catch_up = Some(CatchUp { bytes: 1, lag: Duration::ZERO });
    let mut h = Harness::new(Config { catch_up, ..cfg() });
    // Before the SYN-ACK nothing goes, however much is buffered.
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS[..4]));
    h.client(10, &c(1001, 5001, ACK));
    h.take();
    h.client(10, &c(1001, 5021, PSH | ACK).data(b"LOGIN"));
    h.client(11, &c(1006, 5031, PSH | ACK).data(b"QUERY"));
    assert!(h.take().is_empty());
    // A server-speaks-first session: the client had a 20-byte greeting before LOGIN.
    h.resp(12, syn_ack(9000, 1001));
    assert!(h.take().iter().all(|s| s.payload.is_empty()), "held until the target's greeting");
    h.resp(30, r(9001, 1001, PSH | ACK, 20));
    h.tick(40);
    h.tick(45);
    let data: Vec<Sent> = h.take().into_iter().filter(|s| !s.payload.is_empty()).collect();
    assert_eq!(data.first().map(|s| (s.seq, s.payload.clone())), Some((1001, b"LOGIN".to_vec())));
}

#[test]
fn a_full_pool_ends_the_session_with_the_largest_backlog() {
    // 16 chunks of 256 bytes; no SYN-ACKs, so everything stays buffered.
    let mut h = Harness::new(Config { pool_bytes: 4096, ..cfg() });
    h.client(0, &c(1000, 0, SYN).port(1));
    h.client(0, &c(2000, 0, SYN).port(2));
    // Port 1 buffers 3 segments of 3 chunks, port 2 one.
    for i in 0..3u32 {
        h.client(1, &c(1001 + i * 500, 5001, ACK).data(&body(500, 0)).port(1));
    }
    h.client(1, &c(2001, 5001, ACK).data(&body(500, 0)).port(2));
    assert_eq!(h.n().pool_exhausted, 0);
    h.take();
    // Port 2's next segments need room: port 1, the largest backlog, is ended, not port 2.
    h.client(2, &c(2501, 5001, ACK).data(&body(500, 0)).port(2));
    h.client(2, &c(3001, 5001, ACK).data(&body(500, 0)).port(2));
    assert_eq!(h.n().pool_exhausted, 1);
    let v = h.take();
    assert_eq!(v.iter().map(|s| (s.sport, s.flags)).collect::<Vec<_>>(), [(1, RST | ACK)]);
    assert_eq!(h.e.active_sessions(), 1, "port 2 lives on");
}

#[test]
fn the_replay_round_trip_is_measured_and_not_after_a_retransmission() {
    const MS: u64 = 1_000_000;
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"GET /1"));
    h.resp(24, r(9001, 1007, ACK, 0));
    assert_eq!(h.out.lat.iter().filter(|l| l.0 == Latency::ReplayRtt).count(), 1);
    assert!(h.out.lat.contains(&(Latency::ReplayRtt, 4 * MS)));
    // The next request is lost: retransmitted on the RTO, then acked. No sample (Karn).
    h.resp(25, r(9001, 1007, PSH | ACK, 5));
    h.tick(35);
    h.tick(40);
    h.client(41, &c(1007, 5006, PSH | ACK).data(b"GET /2"));
    h.tick(141);
    assert_eq!(h.n().retransmit, 1);
    h.resp(142, r(9006, 1013, ACK, 0));
    assert_eq!(h.out.lat.iter().filter(|l| l.0 == Latency::ReplayRtt).count(), 1);
}

#[test]
fn out_of_order_segments_cost_a_bounded_walk() {
    let mut h = Harness::new(Config { pool_bytes: 64 << 20, ..cfg() });
    h.open();
    // A hole at 1001 and a segment far ahead, then 20,000 one-byte segments in order: each
    // belongs before the far one, after all the others — a walk of the whole list per segment.
    h.client(20, &c(1_000_000, 5001, PSH | ACK).data(b"x"));
    let start = std::time::Instant::now();
    for i in 1..=20_000u32 {
        h.client(20, &c(1001 + i, 5001, PSH | ACK).data(b"x"));
    }
    let took = start.elapsed();
    // Segment i walks past the i - 1 before it: from the 258th on, more than 256 steps.
    assert_eq!(h.n().clt_reorder_dropped, 20_000 - 257);
    // Debug build: the unbounded walk took seconds here.
    assert!(took < Duration::from_secs(2), "{took:?}");
    h.e.check_invariants();
}

// ------------------------------------------------------------------------------------ IPv6

impl Harness {
    /// [`Harness::open`] with the capture over IPv6 (with extension headers when `ext`).
    fn open6(&mut self, ext: bool) {
        let v6 = |c: C| if ext { c.ext() } else { c.v6() };
        self.client(0, &v6(c(1000, 0, SYN).opts(&SYN_OPTS[..4])));
        self.client(10, &v6(c(1001, 5001, ACK)));
        self.resp(12, syn_ack(9000, 1001));
        let v = self.take();
        assert_eq!(v.len(), 2);
        assert_eq!((v[1].seq, v[1].ack, v[1].flags), (1001, 9001, ACK));
        self.out.adds.clear();
    }
}

#[test]
fn ipv6_keep_alive_session() {
    let mut h = Harness::v6(cfg());
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS).v6());
    assert_eq!(h.out.adds, vec![(SocketAddr::new(IpAddr::V6(CLIENT6), CPORT), TARGET6.addr())]);
    let syn = h.take1();
    assert_eq!((syn.sport, syn.seq, syn.flags, syn.window, syn.ttl), (CPORT, 1000, SYN, 502, 61));
    assert_eq!(syn.opts, SYN_OPTS, "the captured options, MSS 1460 as an IPv6 client sent it");
    assert_eq!(syn.total_len, 40 + 40);
    h.client(10, &c(1001, 5001, ACK).v6());
    let req = body(100, b'a');
    h.client(11, &c(1001, 5001, PSH | ACK).data(&req).v6());
    assert!(h.take().is_empty());
    h.resp(12, syn_ack(9000, 1001));
    let v = h.take();
    assert_eq!((v[0].flags, v[1].payload.clone()), (ACK, req));
    // The response (IPv6 header message: 84 bytes on the channel) is acked after rtt.
    h.resp(20, r(9001, 1101, PSH | ACK, 500));
    h.tick(30);
    let ack = h.take1();
    assert_eq!((ack.seq, ack.ack, ack.flags, ack.ttl, ack.total_len), (1101, 9501, ACK, 64, 60));
    // The client's FIN, the target's FIN: a clean close, over IPv6.
    h.tick(35);
    h.client(60, &c(1101, 5501, FIN | ACK).v6());
    assert_eq!(h.take1().flags, FIN | ACK);
    h.resp(61, r(9501, 1102, FIN | ACK, 0));
    assert_eq!(h.take1().ack, 9502);
    let n = *h.n();
    assert_eq!((n.conns, n.ipv6_sessions, n.translated_sessions, n.sent_rst), (1, 1, 0, 0));
    h.tick(10_000);
    assert_eq!(h.e.active_sessions(), 0);
    assert_eq!(h.out.registry.last(), Some(&(false, SocketAddr::new(IpAddr::V6(CLIENT6), CPORT), TARGET6.addr())));
}

#[test]
fn ipv6_mid_stream_session_gets_a_fake_syn_with_the_ipv6_mss() {
    let mut h = Harness::v6(cfg());
    h.client(0, &c(5000, 777, PSH | ACK).data(&body(50, b'x')).v6());
    let syn = h.take1();
    assert_eq!((syn.seq, syn.flags, syn.window, syn.ttl), (4999, SYN, 65535, 64));
    assert_eq!(syn.opts, [2, 4, 0x05, 0xa0], "MSS 1440: the IPv6 header is 20 bytes longer");
    h.resp(5, syn_ack(20_000, 5000));
    let v = h.take();
    assert_eq!((v[0].seq, v[0].ack, v[0].flags), (5000, 20_001, ACK));
    assert_eq!(v[1].payload, body(50, b'x'));
    // -D sets both.
    let mut h = Harness::v6(Config { mss: 1300, mss_v6: 1300, ..cfg() });
    h.client(0, &c(5000, 777, PSH | ACK).data(b"x").v6());
    assert_eq!(h.take1().opts, [2, 4, 0x05, 0x14]);
}

#[test]
fn ipv6_extension_headers_of_the_capture_are_not_replayed() {
    let mut h = Harness::v6(cfg());
    h.open6(true);
    h.client(20, &c(1001, 5001, PSH | ACK).data(b"GET / HTTP/1.1\r\n\r\n").ext());
    // `decode_for` checks TCP right after the fixed header, next header TCP.
    let d = h.take1();
    assert_eq!((d.payload.len(), d.total_len, d.ttl), (18, 40 + 20 + 18, 61));
}

#[test]
fn ipv6_gro_frame_is_split_counting_the_longer_header() {
    let mut h = Harness::v6(cfg());
    h.open6(false);
    let big = body(10_000, 3);
    h.client(20, &c(1001, 5001, PSH | ACK).data(&big).v6());
    let v = h.take();
    // 1500 - 40 - 20 = 1440 bytes per piece.
    assert_eq!(v.len(), 10_000usize.div_ceil(1440));
    assert!(v.iter().all(|s| s.total_len <= 1500));
    assert_eq!(v[0].payload.len(), 1440);
    assert_eq!(v.iter().flat_map(|s| s.payload.clone()).collect::<Vec<_>>(), big);
}

#[test]
fn an_ipv6_capture_replayed_to_an_ipv4_target() {
    let client = IpAddr::V4(Ipv4Addr::new(10, 7, 0, 5));
    let mut h = Harness::translated(cfg(), TARGET, client);
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS).v6());
    assert_eq!(h.out.adds, vec![(SocketAddr::new(client, CPORT), TARGET.addr())]);
    let syn = h.take1();
    // An IPv4 header made from the IPv6 one: TTL from the hop limit, TOS from the traffic class.
    assert_eq!((syn.seq, syn.flags, syn.ttl, syn.total_len, syn.opts.clone()), (1000, SYN, 61, 60, SYN_OPTS.to_vec()));
    h.client(10, &c(1001, 5001, ACK).v6());
    h.client(11, &c(1001, 5001, PSH | ACK).data(b"hello").v6());
    h.resp(12, syn_ack(9000, 1001));
    let v = h.take();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].payload, b"hello");
    // Idents count up per packet sent (the capture had none).
    assert!(v[0].id == syn.id.wrapping_add(1) && v[1].id == syn.id.wrapping_add(2), "{:?}", [syn.id, v[0].id, v[1].id]);
    h.resp(20, r(9001, 1006, PSH | ACK, 300));
    h.tick(30);
    assert_eq!(h.take1().id, syn.id.wrapping_add(3));
    let n = *h.n();
    assert_eq!((n.ipv6_sessions, n.translated_sessions, n.clt_family_mismatch), (0, 1, 0));
    // The wire frame's TOS.
    h.out.buf = 2048;
    h.client(40, &c(1006, 5301, PSH | ACK).data(b"more").v6());
    h.tick(50);
    let f = h.out.frames.pop().expect("the request went out");
    assert_eq!(ipv4::Packet::new_checked(&f[14..]).unwrap().dscp_ecn(), 0x20);
}

#[test]
fn an_ipv4_capture_replayed_to_an_ipv6_target_has_its_mss_clamped() {
    let client = IpAddr::V6("2001:db8:77::5".parse().unwrap());
    let mut h = Harness::translated(cfg(), TARGET6, client);
    h.client(0, &c(1000, 0, SYN).opts(&SYN_OPTS));
    let syn = h.take1();
    let mut want = SYN_OPTS;
    want[2..4].copy_from_slice(&1440u16.to_be_bytes());
    assert_eq!((syn.opts, syn.ttl, syn.total_len), (want.to_vec(), 63, 80));
    h.client(10, &c(1001, 5001, ACK));
    h.resp(12, syn_ack(9000, 1001));
    assert_eq!(h.take().len(), 1);
    // A full-size IPv4 segment does not fit the MTU with an IPv6 header: split in two.
    h.client(20, &c(1001, 5001, PSH | ACK).data(&body(1460, 9)));
    let v = h.take();
    assert_eq!(v.iter().map(|s| s.payload.len()).collect::<Vec<_>>(), [1440, 20]);
    assert!(v.iter().all(|s| s.total_len <= 1500));
    assert_eq!((h.n().translated_sessions, h.n().ipv6_sessions), (1, 1));
}

#[test]
fn a_client_of_the_other_family_needs_a_given_address() {
    let mut h = Harness::new(cfg());
    h.client(0, &c(1000, 0, SYN).v6());
    assert_eq!((h.n().clt_family_mismatch, h.e.active_sessions()), (1, 0));
    assert!(h.take().is_empty() && h.out.adds.is_empty());
    // A given client of the wrong family is refused the same way.
    let mut h = Harness::translated(cfg(), TARGET, IpAddr::V6(CLIENT6));
    h.client(0, &c(1000, 0, SYN));
    assert_eq!(h.n().clt_family_mismatch, 1);
}

#[test]
fn ipv4_and_ipv6_sessions_of_one_engine_keep_apart() {
    // Two targets, one per family; the same port number on both clients.
    let mut e = Engine::new(cfg(), vec![TARGET, TARGET6]);
    let mut out = Rec {
        frames: Vec::new(),
        adds: Vec::new(),
        registry: Vec::new(),
        tx_ok: true,
        add_ok: true,
        buf: 2048,
        lat: Vec::new(),
        ready: true,
    };
    let now = Instant::now();
    for (target, frame) in [(0, c(1000, 0, SYN).frame()), (1, c(7000, 0, SYN).v6().frame())] {
        let p = parse(&frame).unwrap().unwrap();
        e.on_client(now, target, &p, &frame, &mut out);
    }
    assert_eq!(e.active_sessions(), 2);
    assert_eq!(out.adds.len(), 2);
    // Each SYN-ACK reaches its own session.
    let mut sa4 = syn_ack(9000, 1001);
    sa4.total_len = 48;
    let mut sa6 = ResponseHeader { src: TARGET6.addr(), dst: SocketAddr::new(IpAddr::V6(CLIENT6), CPORT), ..sa4 };
    sa6.ack = 7001;
    sa6.total_len = 68;
    e.on_response(now, &ResponseHeader::from_msg(&sa6.to_msg()).unwrap(), &mut out);
    e.on_response(now, &ResponseHeader::from_msg(&sa4.to_msg()).unwrap(), &mut out);
    assert_eq!((e.counters().conns, e.counters().unknown_response), (2, 0));
}

#[test]
fn a_hole_after_an_answered_request_is_skipped() {
    let mut h = Harness::new(cfg());
    h.open();
    h.client(20, &c(1001, 5001, PSH | ACK).data(&body(100, 0)));
    assert_eq!(h.take1().seq, 1001);
    h.resp(22, r(9001, 1101, PSH | ACK, 50));
    for t in (30..200).step_by(10) {
        h.tick(t);
    }
    h.take();
    // Request 2 (1101..1201) is lost; request 3 arrives.
    h.client(300, &c(1201, 5101, PSH | ACK).data(&body(100, 2)));
    assert!(h.take().is_empty());
    for t in (310..1400).step_by(10) {
        h.tick(t);
    }
    let v = h.take();
    assert!(v.iter().any(|s| s.seq == 1101 && s.payload == body(100, 2)), "{v:?} {:?}", h.n());
}

#[test]
fn holes_found_after_a_skip_are_not_waited_for_again() {
    let mut h = Harness::new(cfg());
    h.open();
    // Requests 1 and 3 are lost; 2 and 4 were captured at 20 and 21 ms.
    h.client(20, &c(1101, 5011, PSH | ACK).data(&body(100, 2)));
    h.client(21, &c(1301, 5031, PSH | ACK).data(&body(100, 4)));
    assert!(h.take().is_empty());
    h.tick(1019);
    assert!(h.take().is_empty());
    // At 1 s both holes are skipped in one go (the second's data waited as long as the first's),
    // and both requests go out (the backlog is also a second old: catch-up).
    h.tick(1030);
    let v = h.take();
    assert_eq!(
        v.iter().map(|s| (s.seq, s.payload.clone())).collect::<Vec<_>>(),
        [(1001, body(100, 2)), (1101, body(100, 4))]
    );
    assert_eq!((h.n().clt_hole_skipped, h.n().clt_hole_bytes), (2, 200));
}

/// Drives `h` from `from` to `to` ms in 10 ms steps, answering every request sent (50 bytes
/// each); returns the (seq, payload) of every first transmission, in order.
fn answer_all(h: &mut Harness, from: u64, to: u64, server_seq: &mut u32) -> Vec<(u32, Vec<u8>)> {
    let mut sent = Vec::new();
    for t in (from..to).step_by(10) {
        h.tick(t);
        for s in h.take() {
            if s.payload.is_empty() || sent.iter().any(|(q, _)| *q == s.seq) {
                continue;
            }
            let end = s.seq.wrapping_add(s.payload.len() as u32);
            sent.push((s.seq, s.payload));
            h.resp(t + 1, r(*server_seq, end, PSH | ACK, 50));
            *server_seq += 50;
        }
        h.e.check_invariants();
    }
    sent
}

#[test]
fn a_backlog_behind_holes_skipped_one_after_another_goes_out_as_one_stream() {
    // Strict request/response order (no catch-up), so the backlog waits behind each answer.
    let mut h = Harness::new(Config { catch_up: None, ..cfg() });
    h.open();
    let req = |h: &mut Harness, ms: u64, k: u32| {
        h.client(ms, &c(1001 + 100 * k, 5001 + 50 * k, PSH | ACK).data(&body(100, k as u8)));
    };
    // Requests 0, 3 and 7 are lost. 1, 2, 4, 5 are captured at once and wait behind the first
    // hole; when it is skipped (at 1 s) the session sends 1 and waits for its answer, the
    // shift for the segments behind it pending.
    for k in [1, 2, 4, 5] {
        req(&mut h, 20, k);
    }
    for t in (30..=1020).step_by(10) {
        h.tick(t);
    }
    let first = h.take1();
    let mut sent = vec![(first.seq, first.payload)];
    assert_eq!(sent[0].0, 1001);
    // More arrive while that shift is pending (6, 8: appended), then 1 is answered: 2 goes out
    // and the second skip (3) finds segments with and without the first shift behind it.
    req(&mut h, 1022, 6);
    req(&mut h, 1023, 8);
    h.resp(1024, r(9001, 1101, PSH | ACK, 50));
    let mut server = 9051;
    sent.extend(answer_all(&mut h, 1030, 1100, &mut server));
    // A retransmission of 5 (out of order: any pending shift is applied before it is compared).
    req(&mut h, 1100, 5);
    req(&mut h, 1101, 9);
    sent.extend(answer_all(&mut h, 1110, 3500, &mut server));
    let expect: Vec<(u32, Vec<u8>)> = [1u32, 2, 4, 5, 6, 8, 9]
        .iter()
        .enumerate()
        .map(|(i, &k)| (1001 + 100 * i as u32, body(100, k as u8)))
        .collect();
    let brief = |v: &[(u32, Vec<u8>)]| v.iter().map(|(q, p)| (*q, p[0])).collect::<Vec<_>>();
    assert_eq!(brief(&sent), brief(&expect));
    assert_eq!(sent, expect);
    assert_eq!((h.n().clt_hole_skipped, h.n().clt_hole_bytes), (3, 300));
}
