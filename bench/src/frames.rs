//! Frame tools for the lab: a builder of Ethernet/IPv4/TCP test frames (plus malformed, VLAN and
//! IPv6 variants) and a parser/summariser used by the pcap verifier.
//!
//! This is deliberately an independent implementation: it shares no code with the dataplane
//! crate, so tests that compare what the dataplane emits with what this module parses are real
//! cross-checks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};

/// Ethernet header length (no VLAN tag).
pub const ETH_HLEN: usize = 14;
/// 802.1Q tag length.
pub const VLAN_HLEN: usize = 4;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_HLEN: usize = 40;
/// TCP header length without options.
pub const TCP_HLEN: usize = 20;
/// Smallest frame the builder produces (without FCS).
pub const MIN_FRAME: usize = 64;
/// Largest untagged frame the builder produces (MTU 1500 + Ethernet header, without FCS).
pub const MAX_FRAME: usize = 1514;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const IPPROTO_TCP: u8 = 6;

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The payload of every built frame starts with this marker followed by the frame's sequence
/// number (u32, big endian); the rest of the payload is a byte pattern derived from it.
pub const MARKER: [u8; 2] = [0xdc, 0xc0];
/// Marker + sequence number.
pub const MARKER_LEN: usize = MARKER.len() + 4;

/// An Ethernet MAC address. `Display` / `FromStr` use the `aa:bb:cc:dd:ee:ff` form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.trim().split([':', '-']) {
            ensure!(n < 6, "MAC address {s:?} has more than 6 octets");
            ensure!(part.len() == 2, "MAC address {s:?}: octet {part:?} is not two hex digits");
            out[n] = u8::from_str_radix(part, 16).with_context(|| format!("MAC address {s:?}: bad octet {part:?}"))?;
            n += 1;
        }
        ensure!(n == 6, "MAC address {s:?} has {n} octets, expected 6");
        Ok(MacAddr(out))
    }
}

/// Which frame to build. Everything but `Good`, `Vlan` and `Ipv6` is deliberately malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Ethernet + IPv4 + TCP, correct checksums.
    Good,
    /// IPv4 ihl = 3 (12-byte header: below the minimum of 5). Checksums computed over the bytes
    /// as laid out (20-byte IPv4 header, TCP after it).
    BadIhl,
    /// TCP data offset = 2 (8-byte header: below the minimum of 5).
    BadDataOffsetSmall,
    /// TCP data offset = 15 (60-byte header) while the TCP segment the IP header announces holds
    /// at most 40 bytes (the rest of the frame, if any, is Ethernet padding).
    BadDataOffsetBeyond,
    /// IP says TCP, total length 30: only 10 bytes of TCP follow (the rest is padding).
    TruncatedTcp,
    /// IPv4 total length claims 100 bytes more than the frame carries.
    TotalLenTooBig,
    /// 802.1Q tagged (VLAN id) Ethernet + IPv4 + TCP, correct checksums. Up to 1518 bytes.
    Vlan(u16),
    /// Ethernet + IPv6 + TCP, correct checksum.
    Ipv6,
}

impl FrameKind {
    /// Names accepted by `FromStr` (the CLI's `--kind`).
    pub const NAMES: &'static [&'static str] = &[
        "good",
        "bad-ihl",
        "bad-doff-small",
        "bad-doff-beyond",
        "truncated-tcp",
        "total-len-too-big",
        "vlan[:VID]",
        "ipv6",
    ];

    /// Smallest frame size this kind can be built at (headers + sequence marker, at least 64).
    pub fn min_size(self) -> usize {
        let l3 = match self {
            FrameKind::Ipv6 => IPV6_HLEN,
            _ => IPV4_HLEN,
        };
        let l2 = match self {
            FrameKind::Vlan(_) => ETH_HLEN + VLAN_HLEN,
            _ => ETH_HLEN,
        };
        (l2 + l3 + TCP_HLEN + MARKER_LEN).max(MIN_FRAME)
    }

    /// Largest frame size this kind can be built at.
    pub fn max_size(self) -> usize {
        match self {
            FrameKind::Vlan(_) => MAX_FRAME + VLAN_HLEN,
            _ => MAX_FRAME,
        }
    }

    /// Whether frames of this kind are well-formed (a receiver should accept them).
    pub fn is_well_formed(self) -> bool {
        matches!(self, FrameKind::Good | FrameKind::Vlan(_) | FrameKind::Ipv6)
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameKind::Good => f.write_str("good"),
            FrameKind::BadIhl => f.write_str("bad-ihl"),
            FrameKind::BadDataOffsetSmall => f.write_str("bad-doff-small"),
            FrameKind::BadDataOffsetBeyond => f.write_str("bad-doff-beyond"),
            FrameKind::TruncatedTcp => f.write_str("truncated-tcp"),
            FrameKind::TotalLenTooBig => f.write_str("total-len-too-big"),
            FrameKind::Vlan(vid) => write!(f, "vlan:{vid}"),
            FrameKind::Ipv6 => f.write_str("ipv6"),
        }
    }
}

impl FromStr for FrameKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "good" => FrameKind::Good,
            "bad-ihl" => FrameKind::BadIhl,
            "bad-doff-small" | "bad-doff-2" => FrameKind::BadDataOffsetSmall,
            "bad-doff-beyond" | "bad-doff-15" => FrameKind::BadDataOffsetBeyond,
            "truncated-tcp" => FrameKind::TruncatedTcp,
            "total-len-too-big" => FrameKind::TotalLenTooBig,
            "vlan" => FrameKind::Vlan(100),
            "ipv6" => FrameKind::Ipv6,
            other => {
                if let Some(vid) = other.strip_prefix("vlan:") {
                    let vid: u16 = vid.parse().context("VLAN id")?;
                    ensure!(vid < 4095, "VLAN id {vid} out of range");
                    FrameKind::Vlan(vid)
                } else {
                    bail!("unknown frame kind {other:?} (expected one of {})", FrameKind::NAMES.join(", "))
                }
            }
        })
    }
}

/// Addresses and header fields of the frames to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    /// Used by `FrameKind::Ipv6` only.
    pub src_ip6: Ipv6Addr,
    /// Used by `FrameKind::Ipv6` only.
    pub dst_ip6: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP sequence number of frame 0; frame n carries `tcp_seq + n` (wrapping).
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub flags: u8,
    pub window: u16,
    pub ttl: u8,
}

impl Default for FrameSpec {
    fn default() -> Self {
        FrameSpec {
            src_mac: MacAddr([0x02, 0, 0, 0, 0, 0x01]),
            dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0x02]),
            src_ip: Ipv4Addr::new(10, 201, 1, 1),
            dst_ip: Ipv4Addr::new(10, 201, 1, 2),
            src_ip6: Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 1),
            dst_ip6: Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 2),
            src_port: 40000,
            dst_port: 80,
            tcp_seq: 1_000_000,
            tcp_ack: 2_000_000,
            flags: tcp_flags::ACK | tcp_flags::PSH,
            window: 65535,
            ttl: 64,
        }
    }
}

/// One's-complement (RFC 1071) sum accumulator. Odd-length slices are only allowed last.
#[derive(Clone, Copy, Debug, Default)]
struct Csum(u64);

impl Csum {
    fn add(mut self, data: &[u8]) -> Self {
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            self.0 += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        let mut i = 0;
        while i + 1 < rest.len() {
            self.0 += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
            i += 2;
        }
        if i < rest.len() {
            self.0 += u64::from(rest[i]) << 8;
        }
        self
    }

    fn finish(self) -> u16 {
        let mut s = self.0;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
}

fn ipv4_header_csum(hdr: &[u8]) -> u16 {
    Csum::default().add(hdr).finish()
}

/// TCP checksum over an IPv4 pseudo header + `segment` (whose checksum field must be zero, or
/// the result is the verification sum: 0 when valid).
fn tcp4_csum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    Csum::default()
        .add(&src.octets())
        .add(&dst.octets())
        .add(&[0, IPPROTO_TCP])
        .add(&len.to_be_bytes()[2..])
        .add(segment)
        .finish()
}

fn tcp6_csum(src: Ipv6Addr, dst: Ipv6Addr, segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    Csum::default()
        .add(&src.octets())
        .add(&dst.octets())
        .add(&len.to_be_bytes())
        .add(&[0, 0, 0, IPPROTO_TCP])
        .add(segment)
        .finish()
}

/// Payload byte `i` (counted from the start of the payload) of frame `seqno`.
fn pattern_byte(seqno: u32, i: usize) -> u8 {
    (seqno as u8).wrapping_add(i as u8).wrapping_mul(31).wrapping_add(7)
}

fn fill_payload(payload: &mut [u8], seqno: u32) {
    let n = payload.len().min(MARKER_LEN);
    let mut marker = [0u8; MARKER_LEN];
    marker[..2].copy_from_slice(&MARKER);
    marker[2..].copy_from_slice(&seqno.to_be_bytes());
    payload[..n].copy_from_slice(&marker[..n]);
    for (i, b) in payload.iter_mut().enumerate().skip(MARKER_LEN) {
        *b = pattern_byte(seqno, i);
    }
}

/// Reads the sequence marker at the start of `payload`; `Some((seqno, pattern_ok))`.
pub fn read_marker(payload: &[u8]) -> Option<(u32, bool)> {
    if payload.len() < MARKER_LEN || payload[..2] != MARKER {
        return None;
    }
    let seqno = u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]);
    let ok = payload.iter().enumerate().skip(MARKER_LEN).all(|(i, &b)| b == pattern_byte(seqno, i));
    Some((seqno, ok))
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn write_tcp_header(seg: &mut [u8], spec: &FrameSpec, seqno: u32, doff: u8) {
    put_u16(seg, 0, spec.src_port);
    put_u16(seg, 2, spec.dst_port);
    seg[4..8].copy_from_slice(&spec.tcp_seq.wrapping_add(seqno).to_be_bytes());
    seg[8..12].copy_from_slice(&spec.tcp_ack.to_be_bytes());
    seg[12] = doff << 4;
    seg[13] = spec.flags;
    put_u16(seg, 14, spec.window);
    put_u16(seg, 16, 0); // checksum, filled in later
    put_u16(seg, 18, 0); // urgent pointer
}

fn write_ipv4_header(hdr: &mut [u8], spec: &FrameSpec, total_len: u16, seqno: u32, ihl: u8) {
    hdr[0] = 0x40 | ihl;
    hdr[1] = 0;
    put_u16(hdr, 2, total_len);
    put_u16(hdr, 4, seqno as u16); // identification
    put_u16(hdr, 6, 0x4000); // DF
    hdr[8] = spec.ttl;
    hdr[9] = IPPROTO_TCP;
    put_u16(hdr, 10, 0);
    hdr[12..16].copy_from_slice(&spec.src_ip.octets());
    hdr[16..20].copy_from_slice(&spec.dst_ip.octets());
    let c = ipv4_header_csum(&hdr[..IPV4_HLEN]);
    put_u16(hdr, 10, c);
}

/// Builds one frame of exactly `size` bytes (no FCS). The payload starts with the marker and
/// `seqno`, so a receiver can tell frames apart (see [`read_marker`]).
pub fn build_frame(spec: &FrameSpec, kind: FrameKind, size: usize, seqno: u32) -> Result<Vec<u8>> {
    ensure!(
        (kind.min_size()..=kind.max_size()).contains(&size),
        "frame size {size} out of range {}..={} for kind {kind}",
        kind.min_size(),
        kind.max_size()
    );
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&spec.dst_mac.0);
    f[6..12].copy_from_slice(&spec.src_mac.0);
    let l3 = match kind {
        FrameKind::Vlan(vid) => {
            put_u16(&mut f, 12, ETHERTYPE_VLAN);
            put_u16(&mut f, 14, vid & 0x0fff);
            put_u16(&mut f, 16, ETHERTYPE_IPV4);
            ETH_HLEN + VLAN_HLEN
        }
        FrameKind::Ipv6 => {
            put_u16(&mut f, 12, ETHERTYPE_IPV6);
            ETH_HLEN
        }
        _ => {
            put_u16(&mut f, 12, ETHERTYPE_IPV4);
            ETH_HLEN
        }
    };

    if kind == FrameKind::Ipv6 {
        let l4 = l3 + IPV6_HLEN;
        let seg_len = size - l4;
        let ip = &mut f[l3..l4];
        ip[0..4].copy_from_slice(&(0x6000_0000u32 | (seqno & 0xfffff)).to_be_bytes());
        put_u16(ip, 4, seg_len as u16);
        ip[6] = IPPROTO_TCP;
        ip[7] = spec.ttl;
        ip[8..24].copy_from_slice(&spec.src_ip6.octets());
        ip[24..40].copy_from_slice(&spec.dst_ip6.octets());
        write_tcp_header(&mut f[l4..], spec, seqno, 5);
        fill_payload(&mut f[l4 + TCP_HLEN..], seqno);
        let c = tcp6_csum(spec.src_ip6, spec.dst_ip6, &f[l4..]);
        put_u16(&mut f, l4 + 16, c);
        return Ok(f);
    }

    let l4 = l3 + IPV4_HLEN;
    // (IPv4 total length, TCP data offset, IPv4 ihl)
    let (total_len, doff, ihl) = match kind {
        FrameKind::BadIhl => (size - l3, 5, 3),
        FrameKind::BadDataOffsetSmall => (size - l3, 2, 5),
        FrameKind::BadDataOffsetBeyond => ((size - l3).min(IPV4_HLEN + 40), 15, 5),
        FrameKind::TruncatedTcp => (IPV4_HLEN + 10, 5, 5),
        FrameKind::TotalLenTooBig => (size - l3 + 100, 5, 5),
        FrameKind::Good | FrameKind::Vlan(_) | FrameKind::Ipv6 => (size - l3, 5, 5),
    };
    // The TCP segment as the IP header announces it, limited to the bytes present.
    let seg_end = (l3 + total_len).min(size);
    write_tcp_header(&mut f[l4..], spec, seqno, doff);
    if seg_end > l4 + TCP_HLEN {
        fill_payload(&mut f[l4 + TCP_HLEN..seg_end], seqno);
    }
    // Whatever lies beyond the announced segment is Ethernet padding (zeros); for
    // `TruncatedTcp` that cuts into the TCP header itself.
    f[seg_end..].fill(0);
    if seg_end >= l4 + TCP_HLEN {
        let c = tcp4_csum(spec.src_ip, spec.dst_ip, &f[l4..seg_end]);
        put_u16(&mut f, l4 + 16, c);
    }
    write_ipv4_header(&mut f[l3..l4], spec, total_len as u16, seqno, ihl);
    Ok(f)
}

/// What [`parse_frame`] found in one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedFrame {
    pub len: usize,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<u16>,
    pub ethertype: u16,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    /// IPv4 header checksum verified (`None` when not IPv4 or the header is unreadable).
    pub ip_csum_ok: Option<bool>,
    pub is_tcp: bool,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub tcp_flags: Option<u8>,
    pub tcp_seq: Option<u32>,
    /// TCP checksum verified over the segment the IP header announces (`None` when no complete
    /// TCP header could be read).
    pub tcp_csum_ok: Option<bool>,
    /// Sequence marker found at the start of the TCP payload, and whether the payload pattern
    /// after it was intact.
    pub marker: Option<(u32, bool)>,
    /// Something in L3/L4 is inconsistent (bad ihl/doff/lengths).
    pub malformed: bool,
}

/// Parses an Ethernet frame. Never fails: problems are reported in the result.
pub fn parse_frame(f: &[u8]) -> ParsedFrame {
    let mut p = ParsedFrame { len: f.len(), ..Default::default() };
    if f.len() < ETH_HLEN {
        p.malformed = true;
        return p;
    }
    p.dst_mac = MacAddr(f[0..6].try_into().expect("6 bytes"));
    p.src_mac = MacAddr(f[6..12].try_into().expect("6 bytes"));
    let mut et = u16::from_be_bytes([f[12], f[13]]);
    let mut l3 = ETH_HLEN;
    if et == ETHERTYPE_VLAN {
        if f.len() < ETH_HLEN + VLAN_HLEN {
            p.malformed = true;
            return p;
        }
        p.vlan = Some(u16::from_be_bytes([f[14], f[15]]) & 0x0fff);
        et = u16::from_be_bytes([f[16], f[17]]);
        l3 += VLAN_HLEN;
    }
    p.ethertype = et;
    let ip = &f[l3..];
    match et {
        ETHERTYPE_IPV4 => {
            if ip.len() < IPV4_HLEN {
                p.malformed = true;
                return p;
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            p.src_ip = Some(src.into());
            p.dst_ip = Some(dst.into());
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ip[0] >> 4 != 4 || ihl < IPV4_HLEN || ip.len() < ihl {
                p.malformed = true;
                return p;
            }
            p.ip_csum_ok = Some(ipv4_header_csum(&ip[..ihl]) == 0);
            if total < ihl || total > ip.len() {
                p.malformed = true;
            }
            if ip[9] != IPPROTO_TCP {
                return p;
            }
            p.is_tcp = true;
            let seg = &ip[ihl..total.clamp(ihl, ip.len())];
            parse_tcp(&mut p, seg, |s| tcp4_csum(src, dst, s));
        }
        ETHERTYPE_IPV6 => {
            if ip.len() < IPV6_HLEN {
                p.malformed = true;
                return p;
            }
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).expect("16 bytes"));
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).expect("16 bytes"));
            p.src_ip = Some(src.into());
            p.dst_ip = Some(dst.into());
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if IPV6_HLEN + plen > ip.len() {
                p.malformed = true;
            }
            if ip[6] != IPPROTO_TCP {
                return p;
            }
            p.is_tcp = true;
            let seg = &ip[IPV6_HLEN..(IPV6_HLEN + plen).min(ip.len())];
            parse_tcp(&mut p, seg, |s| tcp6_csum(src, dst, s));
        }
        _ => {}
    }
    p
}

fn parse_tcp(p: &mut ParsedFrame, seg: &[u8], csum: impl Fn(&[u8]) -> u16) {
    if seg.len() < TCP_HLEN {
        p.malformed = true;
        return;
    }
    p.src_port = Some(u16::from_be_bytes([seg[0], seg[1]]));
    p.dst_port = Some(u16::from_be_bytes([seg[2], seg[3]]));
    p.tcp_seq = Some(u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]));
    p.tcp_flags = Some(seg[13]);
    p.tcp_csum_ok = Some(csum(seg) == 0);
    let doff = usize::from(seg[12] >> 4) * 4;
    if doff < TCP_HLEN || doff > seg.len() {
        p.malformed = true;
        return;
    }
    p.marker = read_marker(&seg[doff..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain RFC 1071: sum 16-bit big-endian words (odd byte padded with zero), fold carries,
    /// complement. Written independently of `Csum`.
    fn rfc1071(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = u32::from(*pair.get(1).unwrap_or(&0));
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn verify_ipv4_tcp(f: &[u8], l3: usize) {
        let ip = &f[l3..l3 + 20];
        assert_eq!(rfc1071(&[ip]), 0, "IPv4 header checksum");
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let seg = &f[l3 + 20..l3 + total];
        let len = (seg.len() as u16).to_be_bytes();
        let pseudo = [&ip[12..20], &[0u8, 6][..], &len[..], seg];
        assert_eq!(rfc1071(&pseudo), 0, "TCP checksum");
    }

    fn sizes() -> impl Iterator<Item = usize> {
        (64..=1514).step_by(7).chain([64, 65, 66, 67, 1513, 1514])
    }

    #[test]
    fn good_frames_exact_size_and_checksums() {
        let spec = FrameSpec::default();
        for (n, size) in sizes().enumerate() {
            let f = build_frame(&spec, FrameKind::Good, size, n as u32).unwrap();
            assert_eq!(f.len(), size);
            verify_ipv4_tcp(&f, ETH_HLEN);
            let p = parse_frame(&f);
            assert!(!p.malformed);
            assert_eq!(p.ip_csum_ok, Some(true));
            assert_eq!(p.tcp_csum_ok, Some(true));
            assert_eq!(p.marker, Some((n as u32, true)));
            assert_eq!(p.src_mac, spec.src_mac);
            assert_eq!(p.dst_mac, spec.dst_mac);
            assert_eq!(p.dst_port, Some(80));
            assert_eq!(p.src_ip, Some(IpAddr::V4(spec.src_ip)));
        }
    }

    #[test]
    fn checksums_with_odd_payload_and_varied_fields() {
        let spec = FrameSpec {
            src_ip: Ipv4Addr::new(255, 254, 253, 252),
            dst_ip: Ipv4Addr::new(1, 2, 3, 4),
            src_port: 65535,
            dst_port: 1,
            tcp_seq: u32::MAX,
            flags: 0xff,
            ttl: 255,
            ..Default::default()
        };
        for size in [64, 65, 99, 1001, 1514] {
            for seqno in [0, 1, 0xffff, u32::MAX] {
                let f = build_frame(&spec, FrameKind::Good, size, seqno).unwrap();
                verify_ipv4_tcp(&f, ETH_HLEN);
                assert_eq!(read_marker(&f[54..]), Some((seqno, true)));
            }
        }
    }

    #[test]
    fn vlan_and_ipv6() {
        let spec = FrameSpec::default();
        for size in [64, 200, 1518] {
            let f = build_frame(&spec, FrameKind::Vlan(42), size, 7).unwrap();
            assert_eq!(f.len(), size);
            verify_ipv4_tcp(&f, ETH_HLEN + VLAN_HLEN);
            let p = parse_frame(&f);
            assert_eq!(p.vlan, Some(42));
            assert_eq!(p.marker, Some((7, true)));
            assert!(!p.malformed);
        }
        for size in [86, 87, 1514] {
            let f = build_frame(&spec, FrameKind::Ipv6, size, 9).unwrap();
            assert_eq!(f.len(), size);
            let ip = &f[14..54];
            let seg = &f[54..];
            let len = (seg.len() as u32).to_be_bytes();
            assert_eq!(rfc1071(&[&ip[8..40], &len[..], &[0, 0, 0, 6][..], seg]), 0);
            let p = parse_frame(&f);
            assert_eq!(p.tcp_csum_ok, Some(true));
            assert_eq!(p.marker, Some((9, true)));
            assert_eq!(p.src_ip, Some(IpAddr::V6(spec.src_ip6)));
        }
        assert!(build_frame(&spec, FrameKind::Ipv6, 64, 0).is_err());
    }

    #[test]
    fn malformed_variants() {
        let spec = FrameSpec::default();
        for size in [64, 100, 1514] {
            let f = build_frame(&spec, FrameKind::BadIhl, size, 1).unwrap();
            assert_eq!(f.len(), size);
            assert_eq!(f[14] & 0x0f, 3);
            assert!(parse_frame(&f).malformed);

            let f = build_frame(&spec, FrameKind::BadDataOffsetSmall, size, 1).unwrap();
            assert_eq!(f.len(), size);
            assert_eq!(f[46] >> 4, 2);
            verify_ipv4_tcp(&f, ETH_HLEN);
            assert!(parse_frame(&f).malformed);

            let f = build_frame(&spec, FrameKind::BadDataOffsetBeyond, size, 1).unwrap();
            assert_eq!(f.len(), size);
            assert_eq!(f[46] >> 4, 15);
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            assert!(total - 20 < 60, "segment must be shorter than doff says");
            verify_ipv4_tcp(&f, ETH_HLEN);
            assert!(parse_frame(&f).malformed);

            let f = build_frame(&spec, FrameKind::TruncatedTcp, size, 1).unwrap();
            assert_eq!(f.len(), size);
            assert_eq!(u16::from_be_bytes([f[16], f[17]]), 30);
            assert_eq!(f[23], 6);
            assert!(f[44..].iter().all(|&b| b == 0));
            let p = parse_frame(&f);
            assert!(p.malformed);
            assert_eq!(p.ip_csum_ok, Some(true));

            let f = build_frame(&spec, FrameKind::TotalLenTooBig, size, 1).unwrap();
            assert_eq!(f.len(), size);
            assert_eq!(usize::from(u16::from_be_bytes([f[16], f[17]])), size - 14 + 100);
            let p = parse_frame(&f);
            assert!(p.malformed);
            assert_eq!(p.ip_csum_ok, Some(true));
        }
    }

    #[test]
    fn size_limits() {
        let spec = FrameSpec::default();
        assert!(build_frame(&spec, FrameKind::Good, 63, 0).is_err());
        assert!(build_frame(&spec, FrameKind::Good, 1515, 0).is_err());
        assert!(build_frame(&spec, FrameKind::Vlan(1), 1518, 0).is_ok());
        assert!(build_frame(&spec, FrameKind::Vlan(1), 1519, 0).is_err());
    }

    #[test]
    fn parse_names() {
        assert_eq!("aa:bb:cc:dd:ee:0f".parse::<MacAddr>().unwrap().to_string(), "aa:bb:cc:dd:ee:0f");
        assert!("aa:bb:cc:dd:ee".parse::<MacAddr>().is_err());
        for k in [
            FrameKind::Good,
            FrameKind::BadIhl,
            FrameKind::BadDataOffsetSmall,
            FrameKind::BadDataOffsetBeyond,
            FrameKind::TruncatedTcp,
            FrameKind::TotalLenTooBig,
            FrameKind::Vlan(5),
            FrameKind::Ipv6,
        ] {
            assert_eq!(k.to_string().parse::<FrameKind>().unwrap(), k);
        }
    }
}
