//! One-pass parse of a received frame, which doubles as the filter.
//!
//! [`parse`] reads Ethernet, at most one 802.1Q / 802.1ad tag, IPv4 or IPv6, and the fixed TCP
//! header, and returns:
//!
//! - `Ok(Some(Parsed))` for a well-formed TCP segment;
//! - `Ok(None)` for frames that are not ours: not IP, not TCP, a second VLAN tag, IPv6 ESP;
//! - `Err` for malformed frames, [`Error::Fragmented`] for IPv4 fragments and IPv6 fragment
//!   headers carrying TCP (the ports of non-first fragments cannot be read, so they cannot be
//!   filtered), and [`Error::Ipv6Extension`] for an IPv6 chain the walk cannot skip (AH, more than
//!   [`ipv6::MAX_EXT_HEADERS`] extension headers).
//!
//! IPv6 hop-by-hop options, routing and destination options headers before TCP are skipped
//! ([`ipv6::Packet::upper_layer`]): `l4_offset - l3_offset` is then more than 40. Whoever
//! re-emits the packet writes a plain 40-byte header (the session engine, the stateless rewrite
//! keeps them in place).
//!
//! It is cheap: no option walk, no checksum verification (mirrored frames from a local stack
//! carry partial checksums), no copies.

use std::net::IpAddr;

use super::ethernet::{self, VlanTag};
use super::{ipv4, ipv6, tcp, Error, Result, IPPROTO_TCP};

/// The IP version of a parsed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Return the family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What [`parse`] learned about a TCP frame: offsets into it and the header fields.
///
/// Offsets are from the start of the frame: `l3_offset <= l4_offset < payload_offset <=
/// ip_end <= frame.len()` (`payload_offset == ip_end` when there is no payload), and
/// `payload_len == ip_end - payload_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The TCI of the VLAN tag, if the frame had one.
    pub vlan: Option<u16>,
    /// The IP version.
    pub family: Family,
    /// Offset of the IP header.
    pub l3_offset: usize,
    /// Offset of the TCP header.
    pub l4_offset: usize,
    /// Offset of the TCP payload.
    pub payload_offset: usize,
    /// Length of the TCP payload.
    pub payload_len: usize,
    /// Offset where the IP packet ends (any Ethernet padding starts here).
    pub ip_end: usize,
    /// IP source address.
    pub src_ip: IpAddr,
    /// IP destination address.
    pub dst_ip: IpAddr,
    /// TCP source port.
    pub src_port: u16,
    /// TCP destination port.
    pub dst_port: u16,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgment number.
    pub ack: u32,
    /// TCP flag byte (see [`tcp::flags`]).
    pub flags: u8,
    /// TCP window field (unscaled).
    pub window: u16,
}

impl Parsed {
    /// Return the TCP header length in bytes.
    pub fn tcp_header_len(&self) -> usize {
        self.payload_offset - self.l4_offset
    }

    /// Return whether every bit of `flags` (see [`tcp::flags`]) is set.
    pub fn has_flags(&self, flags: u8) -> bool {
        self.flags & flags == flags
    }
}

/// Parse a frame; see the module docs for what is `Ok(None)` and what is `Err`.
///
/// # Errors
/// Any [`Error`] but [`Error::BadTcpOption`] (options are not read).
pub fn parse(frame: &[u8]) -> Result<Option<Parsed>> {
    let eth = ethernet::Frame::new_checked(frame)?;
    let (vlan, ethertype, l3_offset) = match eth.ethertype() {
        ethernet::ETHERTYPE_VLAN | ethernet::ETHERTYPE_QINQ => {
            let tag = VlanTag::new_checked(eth.payload())?;
            let l3 = ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN;
            (Some(tag.tci()), tag.inner_ethertype(), l3)
        }
        ethertype => (None, ethertype, ethernet::HEADER_LEN),
    };
    let l3 = &frame[l3_offset..];

    let (family, src_ip, dst_ip, l4_offset, ip_end) = match ethertype {
        ethernet::ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::new_checked(l3)?;
            if ip.protocol() != IPPROTO_TCP {
                return Ok(None);
            }
            if ip.is_fragment() {
                return Err(Error::Fragmented);
            }
            let l4 = l3_offset + usize::from(ip.header_len());
            let end = l3_offset + usize::from(ip.total_len());
            (Family::V4, IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), l4, end)
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = ipv6::Packet::new_checked(l3)?;
            let offset = match ip.upper_layer()? {
                ipv6::Upper::Found { next_header: IPPROTO_TCP, offset } => offset,
                ipv6::Upper::Found { .. } => return Ok(None),
                ipv6::Upper::Fragment { next_header: IPPROTO_TCP } => return Err(Error::Fragmented),
                ipv6::Upper::Fragment { .. } | ipv6::Upper::Unwalkable { next_header: ipv6::NH_ESP } => {
                    return Ok(None)
                }
                ipv6::Upper::Unwalkable { .. } => return Err(Error::Ipv6Extension),
            };
            let l4 = l3_offset + offset;
            let end = l3_offset + ipv6::HEADER_LEN + usize::from(ip.payload_len());
            (Family::V6, IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), l4, end)
        }
        _ => return Ok(None),
    };

    let tcp = tcp::Packet::new_checked(&frame[l4_offset..ip_end])?;
    let payload_offset = l4_offset + usize::from(tcp.header_len());
    Ok(Some(Parsed {
        vlan,
        family,
        l3_offset,
        l4_offset,
        payload_offset,
        payload_len: ip_end - payload_offset,
        ip_end,
        src_ip,
        dst_ip,
        src_port: tcp.src_port(),
        dst_port: tcp.dst_port(),
        seq: tcp.seq_number(),
        ack: tcp.ack_number(),
        flags: tcp.flags(),
        window: tcp.window(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::flags::{ACK, FIN, PSH, RST, SYN};
    use crate::testdata::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn ok(frame: &[u8]) -> Parsed {
        parse(frame).unwrap().unwrap()
    }

    #[test]
    fn syn_v4() {
        let p = ok(&SYN_V4);
        assert_eq!(
            p,
            Parsed {
                vlan: None,
                family: Family::V4,
                l3_offset: 14,
                l4_offset: 34,
                payload_offset: 74,
                payload_len: 0,
                ip_end: 74,
                src_ip: CLIENT,
                dst_ip: SERVER,
                src_port: 40000,
                dst_port: 80,
                seq: 0x1234_5678,
                ack: 0,
                flags: SYN,
                window: 64240,
            }
        );
        assert_eq!(p.tcp_header_len(), 40);
        assert!(p.has_flags(SYN) && !p.has_flags(SYN | ACK));
    }

    #[test]
    fn data_fin_rst() {
        let p = ok(&DATA_V4);
        assert_eq!((p.payload_offset, p.payload_len, p.ip_end), (66, 27, 93));
        assert_eq!(&DATA_V4[p.payload_offset..p.ip_end], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((p.flags, p.seq, p.ack, p.window), (PSH | ACK, 0x1234_5679, 0x9abc_def1, 502));

        let p = ok(&FIN_V4);
        assert_eq!((p.flags, p.payload_len, p.ip_end), (FIN | ACK, 0, 54));

        let p = ok(&RST_V4_PADDED);
        assert_eq!((p.flags, p.payload_len, p.ip_end), (RST | ACK, 0, 54), "padding excluded");
        assert_eq!(p.window, 0);
    }

    #[test]
    fn vlan_v4() {
        let p = ok(&VLAN_V4_PADDED);
        assert_eq!(p.vlan, Some(0x2064));
        assert_eq!((p.l3_offset, p.l4_offset, p.payload_offset, p.ip_end), (18, 38, 58, 58));
        assert_eq!((p.src_ip, p.dst_ip, p.src_port, p.dst_port), (CLIENT, SERVER, 40000, 80));
        assert_eq!(p.flags, ACK);

        // 802.1ad outer TPID is accepted the same way.
        let mut f = VLAN_V4_PADDED;
        f[12..14].copy_from_slice(&[0x88, 0xa8]);
        assert_eq!(ok(&f), p);
        // A second tag is not ours.
        f[16..18].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(parse(&f), Ok(None));
        // Truncated inside the tag.
        assert_eq!(parse(&VLAN_V4_PADDED[..17]), Err(Error::Truncated));
    }

    #[test]
    fn syn_v6() {
        let p = ok(&SYN_V6);
        assert_eq!(p.family, Family::V6);
        assert_eq!((p.l3_offset, p.l4_offset, p.payload_offset, p.ip_end), (14, 54, 94, 94));
        assert_eq!(p.src_ip, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_ip, "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!((p.src_port, p.dst_port, p.flags, p.window), (40000, 80, SYN, 64800));

        let mut f = SYN_V6;
        f[20] = 17;
        assert_eq!(parse(&f), Ok(None));
        assert_eq!(parse(&SYN_V6[..53]), Err(Error::Truncated));
        assert_eq!(parse(&SYN_V6[..93]), Err(Error::BadTotalLen));
    }

    /// SYN_V6 with an extension header of kind `kind` (8 bytes, next header TCP) after the fixed
    /// header.
    fn syn_v6_with(kind: u8) -> Vec<u8> {
        let mut f = SYN_V6[..54].to_vec();
        f[20] = kind;
        f[18..20].copy_from_slice(&48u16.to_be_bytes());
        f.extend([6, 0, 1, 4, 0, 0, 0, 0]); // next header TCP, PadN
        f.extend(&SYN_V6[54..]);
        f
    }

    #[test]
    fn ipv6_extension_headers_are_skipped_or_refused() {
        for kind in [ipv6::NH_HOP_BY_HOP, ipv6::NH_ROUTING, ipv6::NH_DEST_OPTS] {
            let f = syn_v6_with(kind);
            let p = ok(&f);
            assert_eq!((p.l3_offset, p.l4_offset, p.payload_offset, p.ip_end), (14, 62, 102, 102), "kind {kind}");
            assert_eq!((p.src_port, p.dst_port, p.flags), (40000, 80, SYN));
        }
        // A fragment of a TCP segment is refused as IPv4 fragments are; of UDP it is not ours.
        let f = syn_v6_with(ipv6::NH_FRAGMENT);
        assert_eq!(parse(&f), Err(Error::Fragmented));
        let mut f = syn_v6_with(ipv6::NH_FRAGMENT);
        f[54] = 17;
        assert_eq!(parse(&f), Ok(None));
        // AH could hide TCP: counted; ESP is opaque: not ours.
        assert_eq!(parse(&syn_v6_with(ipv6::NH_AH)), Err(Error::Ipv6Extension));
        assert_eq!(parse(&syn_v6_with(ipv6::NH_ESP)), Ok(None));
        // An extension header longer than the packet.
        let mut f = syn_v6_with(ipv6::NH_DEST_OPTS);
        f[55] = 200;
        assert_eq!(parse(&f), Err(Error::BadTotalLen));
        // Every prefix fails without a panic.
        let f = syn_v6_with(ipv6::NH_ROUTING);
        for len in 0..f.len() {
            assert!(parse(&f[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn not_ours() {
        let mut f = SYN_V4;
        f[12..14].copy_from_slice(&[0x08, 0x06]); // ARP
        assert_eq!(parse(&f), Ok(None));
        let mut f = SYN_V4;
        f[23] = 17; // UDP
        assert_eq!(parse(&f), Ok(None));
        let mut f = FRAG_V4;
        f[23] = 17; // a UDP fragment is filtered, not malformed
        assert_eq!(parse(&f), Ok(None));
    }

    #[test]
    fn fragments() {
        assert_eq!(parse(&FRAG_V4), Err(Error::Fragmented));
        let mut f = FRAG_V4;
        f[20..22].copy_from_slice(&[0x00, 0xb9]); // last fragment at offset 1480
        assert_eq!(parse(&f), Err(Error::Fragmented));
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(&[]), Err(Error::Truncated));
        assert_eq!(parse(&SYN_V4[..13]), Err(Error::Truncated));
        assert_eq!(parse(&SYN_V4[..33]), Err(Error::Truncated));
        assert_eq!(parse(&SYN_V4[..73]), Err(Error::BadTotalLen), "snapped short of total_len");

        let mut f = SYN_V4;
        f[14] = 0x44;
        assert_eq!(parse(&f), Err(Error::BadHeaderLen));
        f[14] = 0x65;
        assert_eq!(parse(&f), Err(Error::BadVersion));

        let mut f = SYN_V4;
        f[16..18].copy_from_slice(&61u16.to_be_bytes());
        assert_eq!(parse(&f), Err(Error::BadTotalLen));
        f[16..18].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse(&f), Err(Error::BadTotalLen));
        f[16..18].copy_from_slice(&39u16.to_be_bytes()); // room for only 19 TCP bytes
        assert_eq!(parse(&f), Err(Error::Truncated));

        let mut f = SYN_V4;
        f[46] = 0x40;
        assert_eq!(parse(&f), Err(Error::BadDataOffset));
        f[46] = 0xb0; // 44 bytes > 40 available
        assert_eq!(parse(&f), Err(Error::BadDataOffset));
        // The data offset is checked against total_len, not against the padded frame.
        let mut f = RST_V4_PADDED;
        f[46] = 0x60;
        assert_eq!(parse(&f), Err(Error::BadDataOffset));
    }

    #[test]
    fn every_prefix_is_rejected_without_panic() {
        for frame in ALL_TCP {
            let p = ok(frame);
            for len in 0..p.ip_end {
                assert!(parse(&frame[..len]).is_err(), "len {len}");
            }
            for len in p.ip_end..=frame.len() {
                assert_eq!(parse(&frame[..len]), Ok(Some(p)));
            }
        }
    }

    #[test]
    fn random_corruption_never_panics() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let mut buf = [0u8; 128];
        for _ in 0..50_000 {
            let frame = ALL_TCP[rng.below(ALL_TCP.len())];
            let len = frame.len();
            buf[..len].copy_from_slice(frame);
            for _ in 0..=rng.below(4) {
                // Bias toward header bytes, where the length fields are.
                let at = rng.below(60.min(len));
                buf[at] = rng.next_u16() as u8;
            }
            let cut = len - rng.below(8).min(len);
            if let Ok(Some(p)) = parse(&buf[..cut]) {
                assert!(p.l3_offset <= p.l4_offset && p.l4_offset + 20 <= p.payload_offset);
                assert!(p.payload_offset + p.payload_len == p.ip_end && p.ip_end <= cut);
            }
        }
    }
}
