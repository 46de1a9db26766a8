//! Building complete output frames: Ethernet, IPv4 (checksum) or IPv6, TCP (full checksum with
//! the family's pseudo-header), payload.
//!
//! Two shapes: [`captured`] re-emits a stored client segment from its (already patched) header
//! copies and payload; [`fake`] writes the packets the engine makes up (reference §3.9): IPv4
//! IHL 5, DF, TTL 64, TOS 0 (IPv6: hop limit 64, traffic class 0, flow label 0), window 65535,
//! urgent 0, and an MSS option (SYN) or NOP NOP TS (ACK when timestamps were negotiated). Both
//! return the frame length, or 0 if `buf` is too small.
//!
//! # The IP header of a captured segment
//!
//! A segment is stored with the IP header it was captured with: IPv4 with its options, or the
//! fixed IPv6 header (extension headers are not stored: the engine rewrote its next header to
//! TCP). It is sent in the family of the session's target ([`Endpoints`]):
//!
//! - same family: the stored header, addresses and lengths rewritten (IPv4 options, TOS, TTL,
//!   DF and ident, or IPv6 traffic class, flow label and hop limit, kept as captured);
//! - the other family (family translation, `-c` of the target's family): a header of the
//!   target's family built from the stored one's fields — TOS ⇄ traffic class, TTL ⇄ hop limit;
//!   IPv4 gets DF, no options and the ident the caller gives; IPv6 gets flow label 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::ethernet::{self, MacAddr};
use crate::wire::tcp::{self, TcpOption};
use crate::wire::{ipv4, ipv6, IPPROTO_TCP};

/// Addresses of every frame of one session: the client's (as sent) and the target's, of one
/// family.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Endpoints {
    /// Return whether the frames are IPv6.
    pub fn v6(&self) -> bool {
        self.dst_ip.is_ipv6()
    }

    /// Return the length of the IP header a captured header `stored` is sent with.
    pub fn ip_len(&self, stored: &[u8]) -> usize {
        ip_len_for(self.v6(), stored)
    }
}

/// Return the length of the IP header sent for the stored header `stored` to a target of the
/// family `v6`: the stored one's in the same family, the fixed one's otherwise.
pub(crate) fn ip_len_for(v6: bool, stored: &[u8]) -> usize {
    match (v6, stored_v6(stored)) {
        (false, false) => stored.len(),
        (false, true) => ipv4::MIN_HEADER_LEN,
        (true, _) => ipv6::HEADER_LEN,
    }
}

/// Return whether a stored IP header is IPv6.
pub(crate) fn stored_v6(stored: &[u8]) -> bool {
    stored.first().is_some_and(|b| b >> 4 == 6)
}

/// The variable fields of a made-up packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fake {
    /// IPv4 ident (unused for IPv6).
    pub id: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// MSS option (SYNs).
    pub mss: Option<u16>,
    /// Timestamps option (TSval, TSecr), after two NOPs.
    pub ts: Option<(u32, u32)>,
}

/// The window of every made-up packet and of fake-SYN sessions.
pub(crate) const FAKE_WINDOW: u16 = 65535;

fn write_ethernet(buf: &mut [u8], e: &Endpoints) {
    let mut f = ethernet::Frame::new_unchecked(buf);
    f.set_dst_addr(MacAddr(e.dst_mac));
    f.set_src_addr(MacAddr(e.src_mac));
    f.set_ethertype(if e.v6() { ethernet::ETHERTYPE_IPV6 } else { ethernet::ETHERTYPE_IPV4 });
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        // Not reached: endpoints are of one family (the engine checks client against target).
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Set the lengths and addresses of the IPv4 header at `ip[..ihl]` (the packet is `ip`) and fill
/// its checksum.
fn finish_ipv4(ip: &mut [u8], e: &Endpoints) {
    let total = ip.len() as u16;
    let mut p = ipv4::Packet::new_unchecked(ip);
    p.set_total_len(total);
    p.set_src_addr(v4(e.src_ip));
    p.set_dst_addr(v4(e.dst_ip));
    p.fill_checksum();
}

/// Set the payload length, next header and addresses of the IPv6 header at `ip[..40]` (the
/// packet is `ip`).
fn finish_ipv6(ip: &mut [u8], e: &Endpoints) {
    let payload = (ip.len() - ipv6::HEADER_LEN) as u16;
    let mut p = ipv6::Packet::new_unchecked(ip);
    p.set_payload_len(payload);
    p.set_next_header(IPPROTO_TCP);
    p.set_src_addr(v6(e.src_ip));
    p.set_dst_addr(v6(e.dst_ip));
}

/// Set the ports of the TCP segment `seg` and fill its checksum (the family's pseudo-header).
fn finish_tcp(seg: &mut [u8], e: &Endpoints) {
    let mut t = tcp::Packet::new_unchecked(seg);
    t.set_src_port(e.src_port);
    t.set_dst_port(e.dst_port);
    if e.v6() {
        t.fill_checksum_v6(&v6(e.src_ip), &v6(e.dst_ip));
    } else {
        t.fill_checksum_v4(v4(e.src_ip), v4(e.dst_ip));
    }
}

/// Write a fresh IPv4 header (IHL 5, DF, protocol TCP) into `ip[..20]`.
fn new_ipv4(ip: &mut [u8], id: u16, tos: u8, ttl: u8) {
    ip[..ipv4::MIN_HEADER_LEN].fill(0);
    let mut p = ipv4::Packet::new_unchecked(ip);
    p.set_version(4);
    p.set_header_len(ipv4::MIN_HEADER_LEN as u8);
    p.set_dscp_ecn(tos);
    p.set_ident(id);
    p.set_dont_frag(true);
    p.set_ttl(ttl);
    p.set_protocol(IPPROTO_TCP);
}

/// Write a fresh IPv6 header (flow label 0, next header TCP) into `ip[..40]`.
fn new_ipv6(ip: &mut [u8], traffic_class: u8, hop_limit: u8) {
    ip[..ipv6::HEADER_LEN].fill(0);
    let mut p = ipv6::Packet::new_unchecked(ip);
    p.set_version(6);
    p.set_traffic_class(traffic_class);
    p.set_next_header(IPPROTO_TCP);
    p.set_hop_limit(hop_limit);
}

/// Build a made-up packet.
pub(crate) fn fake(buf: &mut [u8], e: &Endpoints, f: &Fake) -> usize {
    let mut opts = [0u8; 12];
    let opt_len = match (f.mss, f.ts) {
        (Some(mss), _) => TcpOption::Mss(mss).emit(&mut opts),
        (None, Some((tsval, tsecr))) => {
            tcp::emit_options(&[TcpOption::Nop, TcpOption::Nop, TcpOption::Timestamps { tsval, tsecr }], &mut opts)
        }
        (None, None) => 0,
    };
    let ihl = if e.v6() { ipv6::HEADER_LEN } else { ipv4::MIN_HEADER_LEN };
    let ip_len = ihl + tcp::MIN_HEADER_LEN + opt_len;
    let len = ethernet::HEADER_LEN + ip_len;
    if buf.len() < len {
        return 0;
    }
    let frame = &mut buf[..len];
    frame.fill(0);
    write_ethernet(frame, e);
    let (_, ip) = frame.split_at_mut(ethernet::HEADER_LEN);
    if e.v6() {
        new_ipv6(ip, 0, 64);
    } else {
        new_ipv4(ip, f.id, 0, 64);
    }
    let seg = &mut ip[ihl..];
    {
        let mut t = tcp::Packet::new_unchecked(&mut *seg);
        t.set_seq_number(f.seq);
        t.set_ack_number(f.ack);
        t.set_header_len((tcp::MIN_HEADER_LEN + opt_len) as u8);
        t.set_flags(f.flags);
        t.set_window(FAKE_WINDOW);
        t.options_bytes_mut().copy_from_slice(&opts[..opt_len]);
    }
    finish_tcp(seg, e);
    if e.v6() {
        finish_ipv6(ip, e);
    } else {
        finish_ipv4(ip, e);
    }
    len
}

/// Build a stored client segment from its patched headers; `payload` fills the payload bytes.
/// `ip_hdr` is the stored IP header (see the module docs); `id` is the IPv4 ident used when an
/// IPv4 header is built from a stored IPv6 one.
pub(crate) fn captured(
    buf: &mut [u8],
    e: &Endpoints,
    ip_hdr: &[u8],
    id: u16,
    tcp_hdr: &[u8],
    payload_len: usize,
    payload: impl FnOnce(&mut [u8]),
) -> usize {
    let ihl = e.ip_len(ip_hdr);
    let ip_len = ihl + tcp_hdr.len() + payload_len;
    let len = ethernet::HEADER_LEN + ip_len;
    let limit = if e.v6() { ipv6::HEADER_LEN + usize::from(u16::MAX) } else { usize::from(u16::MAX) };
    if buf.len() < len || ip_len > limit || ip_hdr.is_empty() {
        return 0;
    }
    let frame = &mut buf[..len];
    write_ethernet(frame, e);
    let (_, ip) = frame.split_at_mut(ethernet::HEADER_LEN);
    match (e.v6(), stored_v6(ip_hdr)) {
        (false, false) | (true, true) => ip[..ihl].copy_from_slice(ip_hdr),
        (true, false) => {
            let s = ipv4::Packet::new_unchecked(ip_hdr);
            new_ipv6(ip, s.dscp_ecn(), s.ttl());
        }
        (false, true) => {
            let s = ipv6::Packet::new_unchecked(ip_hdr);
            new_ipv4(ip, id, s.traffic_class(), s.hop_limit());
        }
    }
    let seg = &mut ip[ihl..];
    seg[..tcp_hdr.len()].copy_from_slice(tcp_hdr);
    payload(&mut seg[tcp_hdr.len()..]);
    finish_tcp(seg, e);
    if e.v6() {
        finish_ipv6(ip, e);
    } else {
        finish_ipv4(ip, e);
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::{parse, Family};
    use crate::wire::tcp::flags::{ACK, PSH, SYN};

    const E: Endpoints = Endpoints {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        dst_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        src_port: 40000,
        dst_port: 8080,
    };

    fn e6() -> Endpoints {
        Endpoints { src_ip: "2001:db8::1".parse().unwrap(), dst_ip: "2001:db8::9".parse().unwrap(), ..E }
    }

    #[test]
    fn fake_syn_fields() {
        let mut buf = [0xaau8; 128];
        let n = fake(&mut buf, &E, &Fake { id: 7, seq: 99, ack: 0, flags: SYN, mss: Some(1460), ts: None });
        assert_eq!(n, 14 + 44);
        let p = parse(&buf[..n]).unwrap().unwrap();
        assert_eq!((p.seq, p.ack, p.flags, p.window), (99, 0, SYN, 65535));
        assert_eq!(&buf[14 + 40..n], &[2, 4, 0x05, 0xb4]);
        let ip = ipv4::Packet::new_checked(&buf[14..n]).unwrap();
        assert!(ip.verify_checksum() && ip.dont_frag());
        assert_eq!((ip.ttl(), ip.ident(), ip.dscp_ecn()), (64, 7, 0));
        let t = tcp::Packet::new_checked(&buf[34..n]).unwrap();
        assert!(t.verify_checksum_v4(v4(E.src_ip), v4(E.dst_ip)));
        assert_eq!(fake(&mut buf[..53], &E, &Fake { ts: None, ..FAKE_ACK }), 0);
    }

    const FAKE_ACK: Fake = Fake { id: 8, seq: 100, ack: 5000, flags: ACK, mss: None, ts: Some((11, 22)) };

    #[test]
    fn fake_ack_with_timestamps() {
        let mut buf = [0u8; 128];
        let n = fake(&mut buf, &E, &FAKE_ACK);
        assert_eq!(n, 14 + 52);
        let t = tcp::Packet::new_checked(&buf[34..n]).unwrap();
        assert_eq!(t.find_timestamps(), Some((24, 11, 22)));
        assert!(t.verify_checksum_v4(v4(E.src_ip), v4(E.dst_ip)));
    }

    #[test]
    fn fake_syn_over_ipv6() {
        let e = e6();
        let mut buf = [0xaau8; 128];
        let n = fake(&mut buf, &e, &Fake { id: 7, seq: 99, ack: 0, flags: SYN, mss: Some(1440), ts: None });
        assert_eq!(n, 14 + 40 + 24);
        assert_eq!(&buf[12..14], &[0x86, 0xdd]);
        // Version 6, traffic class 0, flow label 0, payload 24, TCP, hop limit 64.
        assert_eq!(&buf[14..22], &[0x60, 0, 0, 0, 0, 24, 6, 64]);
        let p = parse(&buf[..n]).unwrap().unwrap();
        assert_eq!((p.family, p.src_ip, p.dst_ip), (Family::V6, e.src_ip, e.dst_ip));
        assert_eq!((p.seq, p.flags, p.window, p.src_port, p.dst_port), (99, SYN, 65535, 40000, 8080));
        assert_eq!(&buf[14 + 60..n], &[2, 4, 0x05, 0xa0]);
        let t = tcp::Packet::new_checked(&buf[54..n]).unwrap();
        assert!(t.verify_checksum_v6(&v6(e.src_ip), &v6(e.dst_ip)));
        assert_eq!(fake(&mut buf[..77], &e, &FAKE_ACK), 0);
    }

    /// A stored IPv4 header: TOS 0x10, ident 0x1234, DF, TTL 63, and (with `opts`) 4 option bytes.
    fn stored_v4(opts: bool) -> Vec<u8> {
        let mut h = vec![0u8; if opts { 24 } else { 20 }];
        let mut p = ipv4::Packet::new_unchecked(&mut h[..]);
        p.set_version(4);
        p.set_header_len(if opts { 24 } else { 20 });
        p.set_dscp_ecn(0x10);
        p.set_ident(0x1234);
        p.set_dont_frag(true);
        p.set_ttl(63);
        p.set_protocol(6);
        if opts {
            h[20..24].copy_from_slice(&[1, 1, 1, 0]);
        }
        h
    }

    /// A stored IPv6 header: traffic class 0x28, flow label 0x12345, hop limit 55.
    fn stored_v6() -> Vec<u8> {
        let mut h = vec![0u8; 40];
        let mut p = ipv6::Packet::new_unchecked(&mut h[..]);
        p.set_version(6);
        p.set_traffic_class(0x28);
        p.set_flow_label(0x12345);
        p.set_next_header(6);
        p.set_hop_limit(55);
        h
    }

    fn tcp_hdr() -> Vec<u8> {
        let mut t = vec![0u8; 20];
        let mut p = tcp::Packet::new_unchecked(&mut t[..]);
        p.set_seq_number(1000);
        p.set_ack_number(2000);
        p.set_header_len(20);
        p.set_flags(PSH | ACK);
        p.set_window(502);
        t
    }

    fn build(e: &Endpoints, ip_hdr: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let n = captured(&mut buf, e, ip_hdr, 0x4321, &tcp_hdr(), 5, |d| d.copy_from_slice(b"hello"));
        assert!(n > 0);
        buf.truncate(n);
        let p = parse(&buf).unwrap().unwrap();
        assert_eq!((p.src_ip, p.dst_ip, p.src_port, p.dst_port), (e.src_ip, e.dst_ip, e.src_port, e.dst_port));
        assert_eq!((p.seq, p.ack, p.payload_len), (1000, 2000, 5));
        let t = tcp::Packet::new_checked(&buf[p.l4_offset..p.ip_end]).unwrap();
        match (e.src_ip, e.dst_ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                assert!(t.verify_checksum_v4(s, d));
                assert!(ipv4::Packet::new_checked(&buf[14..]).unwrap().verify_checksum());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => assert!(t.verify_checksum_v6(&s, &d)),
            _ => unreachable!(),
        }
        assert_eq!(t.payload(), b"hello");
        buf
    }

    #[test]
    fn captured_keeps_the_header_in_its_family() {
        // IPv4 with options, verbatim but for lengths, addresses and the checksum.
        let f = build(&E, &stored_v4(true));
        let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.header_len(), ip.dscp_ecn(), ip.ident(), ip.ttl()), (24, 0x10, 0x1234, 63));
        assert_eq!(&f[34..38], &[1, 1, 1, 0]);
        // IPv6: traffic class, flow label and hop limit kept.
        let f = build(&e6(), &stored_v6());
        let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.traffic_class(), ip.flow_label(), ip.hop_limit()), (0x28, 0x12345, 55));
        assert_eq!(ip.payload_len(), 25);
    }

    #[test]
    fn captured_translates_the_family() {
        // IPv6 captured, IPv4 target: TOS from the traffic class, TTL from the hop limit, DF, the
        // given ident.
        let f = build(&E, &stored_v6());
        assert_eq!(f.len(), 14 + 20 + 20 + 5);
        let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.header_len(), ip.dscp_ecn(), ip.ident(), ip.ttl()), (20, 0x28, 0x4321, 55));
        assert!(ip.dont_frag());
        // IPv4 captured (options dropped), IPv6 target.
        let f = build(&e6(), &stored_v4(true));
        assert_eq!(f.len(), 14 + 40 + 20 + 5);
        let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!((ip.traffic_class(), ip.flow_label(), ip.hop_limit()), (0x10, 0, 63));
        assert_eq!((ip_len_for(true, &stored_v4(true)), ip_len_for(false, &stored_v6())), (40, 20));
        assert_eq!(ip_len_for(false, &stored_v4(true)), 24);
    }
}
