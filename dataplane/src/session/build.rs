//! Building complete output frames: Ethernet, IPv4 (checksum), TCP (full checksum), payload.
//!
//! Two shapes: [`captured`] re-emits a stored client segment from its (already patched) header
//! copies and payload; [`fake`] writes the packets the engine makes up (reference §3.9): IHL 5,
//! DF, TTL 64, TOS 0, window 65535, urgent 0, and an MSS option (SYN) or NOP NOP TS (ACK when
//! timestamps were negotiated). Both return the frame length, or 0 if `buf` is too small.

use std::net::Ipv4Addr;

use crate::wire::ethernet::{self, MacAddr};
use crate::wire::tcp::{self, TcpOption};
use crate::wire::{ipv4, IPPROTO_TCP};

/// Addresses of every frame of one session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoints {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// The variable fields of a made-up packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fake {
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
    f.set_ethertype(ethernet::ETHERTYPE_IPV4);
}

/// Set the lengths and addresses of the IPv4 header at `ip[..ihl]` and fill its checksum.
fn finish_ipv4(ip: &mut [u8], e: &Endpoints) {
    let total = ip.len() as u16;
    let mut p = ipv4::Packet::new_unchecked(ip);
    p.set_total_len(total);
    p.set_src_addr(e.src_ip);
    p.set_dst_addr(e.dst_ip);
    p.fill_checksum();
}

/// Set the ports of the TCP segment `seg` and fill its checksum.
fn finish_tcp(seg: &mut [u8], e: &Endpoints) {
    let mut t = tcp::Packet::new_unchecked(seg);
    t.set_src_port(e.src_port);
    t.set_dst_port(e.dst_port);
    t.fill_checksum_v4(e.src_ip, e.dst_ip);
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
    let ip_len = ipv4::MIN_HEADER_LEN + tcp::MIN_HEADER_LEN + opt_len;
    let len = ethernet::HEADER_LEN + ip_len;
    if buf.len() < len {
        return 0;
    }
    let frame = &mut buf[..len];
    frame.fill(0);
    write_ethernet(frame, e);
    let (_, ip) = frame.split_at_mut(ethernet::HEADER_LEN);
    {
        let mut p = ipv4::Packet::new_unchecked(&mut *ip);
        p.set_version(4);
        p.set_header_len(20);
        p.set_ident(f.id);
        p.set_dont_frag(true);
        p.set_ttl(64);
        p.set_protocol(IPPROTO_TCP);
    }
    let seg = &mut ip[ipv4::MIN_HEADER_LEN..];
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
    finish_ipv4(ip, e);
    len
}

/// Build a stored client segment from its patched headers; `payload` fills the payload bytes.
pub(crate) fn captured(
    buf: &mut [u8],
    e: &Endpoints,
    ip_hdr: &[u8],
    tcp_hdr: &[u8],
    payload_len: usize,
    payload: impl FnOnce(&mut [u8]),
) -> usize {
    let ip_len = ip_hdr.len() + tcp_hdr.len() + payload_len;
    let len = ethernet::HEADER_LEN + ip_len;
    if buf.len() < len || ip_len > usize::from(u16::MAX) {
        return 0;
    }
    let frame = &mut buf[..len];
    write_ethernet(frame, e);
    let (_, ip) = frame.split_at_mut(ethernet::HEADER_LEN);
    ip[..ip_hdr.len()].copy_from_slice(ip_hdr);
    let seg = &mut ip[ip_hdr.len()..];
    seg[..tcp_hdr.len()].copy_from_slice(tcp_hdr);
    payload(&mut seg[tcp_hdr.len()..]);
    finish_tcp(seg, e);
    finish_ipv4(ip, e);
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::parse;
    use crate::wire::tcp::flags::{ACK, SYN};

    const E: Endpoints = Endpoints {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_ip: Ipv4Addr::new(10, 0, 0, 1),
        dst_ip: Ipv4Addr::new(10, 0, 0, 9),
        src_port: 40000,
        dst_port: 8080,
    };

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
        assert!(t.verify_checksum_v4(E.src_ip, E.dst_ip));
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
        assert!(t.verify_checksum_v4(E.src_ip, E.dst_ip));
    }
}
