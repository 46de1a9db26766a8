//! What the session targets share: a recording output and a builder of captured client frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dataplane::session::{Latency, Output, Target};
use wire::{
    ethernet::{self, MacAddr},
    ipv4, ipv6, tcp,
};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const TARGET: Target = Target {
    ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
    port: 8080,
    src_mac: [2, 0, 0, 0, 0, 0xaa],
    dst_mac: [2, 0, 0, 0, 0, 0xbb],
};
pub const TARGET6: Target = Target {
    ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)),
    port: 8080,
    src_mac: [2, 0, 0, 0, 0, 0xaa],
    dst_mac: [2, 0, 0, 0, 0, 0xbb],
};

/// Records nothing but counts; fails on demand.
#[derive(Default)]
pub struct Out {
    pub sent: u64,
    pub fail: bool,
    pub busy: bool,
}

impl Output for Out {
    fn ready(&mut self) -> bool {
        !self.busy
    }
    fn transmit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if self.fail {
            return false;
        }
        let mut b = [0u8; 2048];
        let n = build(&mut b);
        if n > 0 {
            // Every frame the engine builds is a valid TCP frame to one of the targets.
            let p = wire::parse::parse(&b[..n]).expect("parses").expect("TCP");
            assert_eq!(p.dst_port, TARGET.port);
            assert!(p.dst_ip == TARGET.ip || p.dst_ip == TARGET6.ip, "{:?}", p.dst_ip);
            self.sent += 1;
        }
        true
    }
    fn client_add(&mut self, _client: SocketAddr, _target: SocketAddr) -> bool {
        !self.fail
    }
    fn client_del(&mut self, _client: SocketAddr, _target: SocketAddr) {}
    fn latency(&mut self, _what: Latency, _nanos: u64) {}
}

/// A captured client → online frame, IPv6 (from [`CLIENT6`], fixed header only) or IPv4 (from
/// [`CLIENT`]); mirrored, so the TCP checksum is not checked.
pub fn client_frame_in(v6: bool, port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8], opts: &[u8]) -> Vec<u8> {
    let opts = &opts[..opts.len() / 4 * 4];
    let opts = &opts[..opts.len().min(40)];
    let thl = 20 + opts.len();
    let l3 = if v6 { 40 } else { 20 };
    let mut f = vec![0u8; 14 + l3 + thl + payload.len()];
    let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
    e.set_dst_addr(MacAddr([2, 0, 0, 0, 0, 2]));
    e.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
    if v6 {
        e.set_ethertype(ethernet::ETHERTYPE_IPV6);
        let mut ip = ipv6::Packet::new_unchecked(&mut f[14..]);
        ip.set_version(6);
        ip.set_payload_len((thl + payload.len()) as u16);
        ip.set_next_header(6);
        ip.set_hop_limit(63);
        ip.set_src_addr(CLIENT6);
        ip.set_dst_addr(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    } else {
        e.set_ethertype(ethernet::ETHERTYPE_IPV4);
        let mut ip = ipv4::Packet::new_unchecked(&mut f[14..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len((20 + thl + payload.len()) as u16);
        ip.set_dont_frag(true);
        ip.set_ttl(63);
        ip.set_protocol(6);
        ip.set_src_addr(CLIENT);
        ip.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        ip.fill_checksum();
    }
    let mut t = tcp::Packet::new_unchecked(&mut f[14 + l3..]);
    t.set_src_port(port);
    t.set_dst_port(80);
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_header_len(thl as u8);
    t.set_flags(flags);
    t.set_window(502);
    t.options_bytes_mut().copy_from_slice(opts);
    t.payload_mut().copy_from_slice(payload);
    f
}

/// A captured client → online frame (IPv4).
pub fn client_frame(port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8], opts: &[u8]) -> Vec<u8> {
    client_frame_in(false, port, seq, ack, flags, payload, opts)
}
