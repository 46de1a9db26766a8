//! The stateless L2/L3/L4 rewrite of a copied frame, in place in its buffer.
//!
//! [`apply`] turns a captured client→server frame into one for the test server:
//!
//! - L2: destination and source MAC set to the next hop and our interface; a VLAN tag is
//!   dropped (the output link is untagged), which moves the frame start 4 bytes forward
//!   instead of moving the whole packet; Ethernet padding is trimmed off the end.
//! - L3: destination address (and optionally source address) replaced; TTL / hop limit left
//!   alone; the IPv4 header checksum recomputed (at most 60 bytes).
//! - L4: destination port replaced; the TCP checksum fixed per [`ChecksumMode`].
//!
//! # Why `Full` is the default
//!
//! A frame mirrored from a host with checksum offload (`tc mirred` on the production NIC, a veth)
//! holds only the *partial* checksum the NIC was to finish: the folded pseudo-header sum. An
//! RFC 1624 update of a partial checksum produces another partial checksum, which the test
//! server drops. `Full` sums the whole segment afresh and is right for any input;
//! `Incremental` touches only the changed words and is right only when the captured checksum
//! was complete (a switch mirror port, a pcap of wire traffic).
//!
//! Session replay does not use this rewrite: the session engine builds every frame it sends,
//! complete with full checksums, in a free UMEM frame (`session::build`).

use core::fmt;
use std::net::IpAddr;

use crate::wire::checksum;
use crate::wire::ethernet::{self, MacAddr};
use crate::wire::parse::{Family, Parsed};
use crate::wire::{ipv4, ipv6, tcp};

/// The header values of the output frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// Source MAC: the output interface's.
    pub src_mac: MacAddr,
    /// Destination MAC: the next hop's (the test server or a router).
    pub dst_mac: MacAddr,
    /// Destination address: the test server's.
    pub dst_ip: IpAddr,
    /// Destination port: the test server's.
    pub dst_port: u16,
    /// Source address to put in place of the client's, if any.
    pub src_ip: Option<IpAddr>,
}

/// How [`apply`] fixes the TCP checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChecksumMode {
    /// Recompute over the whole segment: right for any input, partial checksums included.
    #[default]
    Full,
    /// Apply RFC 1624 updates for the changed words: right only if the input checksum was.
    Incremental,
}

/// Why a frame could not be rewritten; small and `Copy` so the hot loop can count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RewriteError {
    /// The packet's IP version differs from the rewrite's address(es).
    FamilyMismatch,
    /// The frame does not have the layout its `Parsed` describes.
    ParseMismatch,
}

impl RewriteError {
    /// Every variant, in declaration order.
    pub const ALL: [RewriteError; 2] = [RewriteError::FamilyMismatch, RewriteError::ParseMismatch];

    /// Return the snake_case name used for this error's drop counter.
    pub fn name(self) -> &'static str {
        match self {
            RewriteError::FamilyMismatch => "family_mismatch",
            RewriteError::ParseMismatch => "parse_mismatch",
        }
    }
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RewriteError::FamilyMismatch => "IP version differs from the rewrite target's",
            RewriteError::ParseMismatch => "frame does not match its parse",
        })
    }
}

impl std::error::Error for RewriteError {}

/// Check that `frame` has the layout `p` describes, so that no accessor below can panic.
fn check_layout(frame: &[u8], p: &Parsed) -> Result<(), RewriteError> {
    let tag = if p.vlan.is_some() { ethernet::VLAN_TAG_LEN } else { 0 };
    let ok_offsets = p.l3_offset == ethernet::HEADER_LEN + tag
        && p.l3_offset <= p.l4_offset
        && p.l4_offset + tcp::MIN_HEADER_LEN <= p.ip_end
        && p.ip_end <= frame.len();
    if !ok_offsets {
        return Err(RewriteError::ParseMismatch);
    }
    let ip = &frame[p.l3_offset..p.ip_end];
    let ip_ok = match p.family {
        Family::V4 => ipv4::Packet::new_checked(ip).is_ok_and(|ip| {
            usize::from(ip.header_len()) == p.l4_offset - p.l3_offset
                && usize::from(ip.total_len()) == p.ip_end - p.l3_offset
        }),
        // Extension headers the parse skipped stay in place (their bytes are not rewritten).
        Family::V6 => ipv6::Packet::new_checked(ip).is_ok_and(|ip| {
            matches!(ip.upper_layer(), Ok(ipv6::Upper::Found { offset, .. }) if offset == p.l4_offset - p.l3_offset)
                && ipv6::HEADER_LEN + usize::from(ip.payload_len()) == p.ip_end - p.l3_offset
        }),
    };
    if !ip_ok || tcp::Packet::new_checked(&frame[p.l4_offset..p.ip_end]).is_err() {
        return Err(RewriteError::ParseMismatch);
    }
    Ok(())
}

/// Rewrites `frame[..]` described by `parsed`; returns (start, len): the frame's new start
/// offset within the buffer and its new length.
///
/// `start` is 4 if a VLAN tag was removed, else 0; `len` ends at the end of the IP packet.
///
/// # Errors
/// [`RewriteError::FamilyMismatch`] if `rw.dst_ip` or `rw.src_ip` is of the other IP version;
/// [`RewriteError::ParseMismatch`] if `parsed` does not describe `frame`. The frame is not
/// modified in either case.
pub fn apply(
    frame: &mut [u8],
    parsed: &Parsed,
    rw: &Rewrite,
    mode: ChecksumMode,
) -> Result<(usize, usize), RewriteError> {
    let src_family_ok = rw.src_ip.is_none_or(|ip| Family::of(ip) == parsed.family);
    if Family::of(rw.dst_ip) != parsed.family || !src_family_ok {
        return Err(RewriteError::FamilyMismatch);
    }
    check_layout(frame, parsed)?;

    let (l3, l4, end) = (parsed.l3_offset, parsed.l4_offset, parsed.ip_end);
    let (ip_bytes, tcp_bytes) = frame[l3..end].split_at_mut(l4 - l3);
    let mut tcp = tcp::Packet::new_unchecked(tcp_bytes);
    let old_port = tcp.dst_port();
    tcp.set_dst_port(rw.dst_port);

    match (rw.dst_ip, rw.src_ip) {
        (IpAddr::V4(dst), src) => {
            let mut ip = ipv4::Packet::new_unchecked(ip_bytes);
            let (old_src, old_dst) = (ip.src_addr(), ip.dst_addr());
            let src = match src {
                Some(IpAddr::V4(src)) => src,
                _ => old_src,
            };
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
            match mode {
                ChecksumMode::Full => tcp.fill_checksum_v4(src, dst),
                ChecksumMode::Incremental => {
                    let mut c = tcp.checksum();
                    c = checksum::update_u32(c, u32::from(old_src), u32::from(src));
                    c = checksum::update_u32(c, u32::from(old_dst), u32::from(dst));
                    c = checksum::update_u16(c, old_port, rw.dst_port);
                    tcp.set_checksum(c);
                }
            }
        }
        (IpAddr::V6(dst), src) => {
            let mut ip = ipv6::Packet::new_unchecked(ip_bytes);
            let (old_src, old_dst) = (ip.src_addr(), ip.dst_addr());
            let src = match src {
                Some(IpAddr::V6(src)) => src,
                _ => old_src,
            };
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            match mode {
                ChecksumMode::Full => tcp.fill_checksum_v6(&src, &dst),
                ChecksumMode::Incremental => {
                    let mut c = tcp.checksum();
                    c = checksum::update_bytes(c, &old_src.octets(), &src.octets());
                    c = checksum::update_bytes(c, &old_dst.octets(), &dst.octets());
                    c = checksum::update_u16(c, old_port, rw.dst_port);
                    tcp.set_checksum(c);
                }
            }
        }
    }

    // The untagged header ends where the tagged one did: its ethertype is the tag's inner
    // ethertype, already in place, so only the MACs are written, 4 bytes further on.
    let start = l3 - ethernet::HEADER_LEN;
    let mut eth = ethernet::Frame::new_unchecked(&mut frame[start..l3]);
    eth.set_dst_addr(rw.dst_mac);
    eth.set_src_addr(rw.src_mac);
    Ok((start, end - start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::parse;
    use crate::wire::testdata::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const OUT_SRC: MacAddr = MacAddr([0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]);
    const OUT_DST: MacAddr = MacAddr([0xfe, 0xed, 0xfa, 0xce, 0x00, 0x01]);
    const TEST_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 9);
    const FAKE_V4: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 99);

    fn rw_v4(src_ip: Option<Ipv4Addr>) -> Rewrite {
        Rewrite {
            src_mac: OUT_SRC,
            dst_mac: OUT_DST,
            dst_ip: TEST_V4.into(),
            dst_port: 8080,
            src_ip: src_ip.map(IpAddr::V4),
        }
    }

    fn test_v6() -> Ipv6Addr {
        "fd00:7e57::9".parse().unwrap()
    }

    fn rw_v6(src_ip: Option<Ipv6Addr>) -> Rewrite {
        Rewrite {
            src_mac: OUT_SRC,
            dst_mac: OUT_DST,
            dst_ip: test_v6().into(),
            dst_port: 8443,
            src_ip: src_ip.map(IpAddr::V6),
        }
    }

    /// Rewrite a copy of `frame`; return the buffer, the parse before, and (start, len).
    fn run<const N: usize>(frame: &[u8; N], rw: &Rewrite, mode: ChecksumMode) -> ([u8; N], Parsed, (usize, usize)) {
        let mut buf = *frame;
        let before = parse(&buf).unwrap().unwrap();
        let out = apply(&mut buf, &before, rw, mode).unwrap();
        (buf, before, out)
    }

    /// Check every field of the rewritten frame `out` against the original parse `before`.
    fn check_output(out: &[u8], before: &Parsed, rw: &Rewrite) {
        let after = parse(out).unwrap().unwrap();
        let eth = ethernet::Frame::new_checked(out).unwrap();
        assert_eq!(eth.dst_addr(), rw.dst_mac);
        assert_eq!(eth.src_addr(), rw.src_mac);
        assert_eq!(after.vlan, None);
        assert_eq!(after.ip_end, out.len(), "padding trimmed");
        assert_eq!(after.dst_ip, rw.dst_ip);
        assert_eq!(after.src_ip, rw.src_ip.unwrap_or(before.src_ip));
        assert_eq!(after.dst_port, rw.dst_port);
        // Everything else is unchanged.
        assert_eq!(after.src_port, before.src_port);
        assert_eq!(
            (after.seq, after.ack, after.flags, after.window),
            (before.seq, before.ack, before.flags, before.window)
        );
        assert_eq!(after.payload_len, before.payload_len);
        assert_eq!(after.tcp_header_len(), before.tcp_header_len());
        let tcp = tcp::Packet::new_checked(&out[after.l4_offset..]).unwrap();
        match (after.src_ip, after.dst_ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ip = ipv4::Packet::new_checked(&out[14..]).unwrap();
                assert!(ip.verify_checksum());
                assert!(tcp.verify_checksum_v4(s, d));
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => assert!(tcp.verify_checksum_v6(&s, &d)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn syn_v4_every_field() {
        let rw = rw_v4(None);
        let (buf, before, (start, len)) = run(&SYN_V4, &rw, ChecksumMode::Full);
        assert_eq!((start, len), (0, 74));
        check_output(&buf, &before, &rw);
        assert_eq!(&buf[..12], &[0xfe, 0xed, 0xfa, 0xce, 0, 1, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]);
        assert_eq!(&buf[12..14], &[0x08, 0x00]);
        let ip = ipv4::Packet::new_checked(&buf[14..]).unwrap();
        assert_eq!(ip.ttl(), 64, "TTL unchanged");
        assert_eq!(ip.ident(), 0x1c46);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&buf[26..30], &[10, 0, 0, 1]);
        assert_eq!(&buf[30..34], &[192, 168, 7, 9]);
        assert_eq!(&buf[34..38], &[0x9c, 0x40, 0x1f, 0x90]);
        assert_eq!(&buf[38..50], &SYN_V4[38..50], "seq, ack, offset, flags, window");
        assert_eq!(&buf[52..], &SYN_V4[52..], "urgent pointer and options");
    }

    #[test]
    fn data_v4_with_source_address() {
        let rw = rw_v4(Some(FAKE_V4));
        let (buf, before, out) = run(&DATA_V4, &rw, ChecksumMode::Full);
        assert_eq!(out, (0, 93));
        check_output(&buf, &before, &rw);
        assert_eq!(&buf[26..30], &FAKE_V4.octets());
        assert_eq!(&buf[66..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[test]
    fn vlan_is_stripped_and_padding_trimmed() {
        let rw = rw_v4(None);
        let (buf, before, (start, len)) = run(&VLAN_V4_PADDED, &rw, ChecksumMode::Full);
        assert_eq!((start, len), (4, 54));
        let out = &buf[start..start + len];
        check_output(out, &before, &rw);
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(ipv4::Packet::new_checked(&out[14..]).unwrap().ttl(), 63);
        assert_eq!(&out[14..24], &VLAN_V4_PADDED[18..28], "IP header up to the checksum");
        assert_eq!(&out[34..36], &VLAN_V4_PADDED[38..40], "source port");
        assert_eq!(&out[38..50], &VLAN_V4_PADDED[42..54], "seq, ack, offset, flags, window");
        assert_eq!(&out[52..], &VLAN_V4_PADDED[56..58], "urgent pointer");
    }

    #[test]
    fn rst_padding_trimmed() {
        let rw = rw_v4(None);
        let (buf, before, out) = run(&RST_V4_PADDED, &rw, ChecksumMode::Incremental);
        assert_eq!(out, (0, 54));
        check_output(&buf[..54], &before, &rw);
    }

    #[test]
    fn syn_v6_every_field() {
        let fake: Ipv6Addr = "fd00::c1:1".parse().unwrap();
        for src in [None, Some(fake)] {
            let rw = rw_v6(src);
            let (buf, before, out) = run(&SYN_V6, &rw, ChecksumMode::Full);
            assert_eq!(out, (0, 94));
            check_output(&buf, &before, &rw);
            let ip = ipv6::Packet::new_checked(&buf[14..]).unwrap();
            assert_eq!((ip.hop_limit(), ip.flow_label()), (64, 0x12345));
            assert_eq!(&buf[72..], &SYN_V6[72..], "urgent pointer and options unchanged");
            let (inc, _, _) = run(&SYN_V6, &rw, ChecksumMode::Incremental);
            assert_eq!(inc, buf);
        }
    }

    #[test]
    fn full_fixes_a_partial_checksum() {
        // What a sender with TX checksum offload puts in the field (Linux CHECKSUM_PARTIAL):
        // the folded pseudo-header sum, not complemented, to be finished by the NIC.
        let mut frame = DATA_V4;
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let partial = checksum::fold(checksum::pseudo_header_v4(src, dst, 6, 59));
        frame[50..52].copy_from_slice(&partial.to_be_bytes());
        let rw = rw_v4(Some(FAKE_V4));

        let (buf, before, _) = run(&frame, &rw, ChecksumMode::Full);
        check_output(&buf, &before, &rw);

        let (buf, _, _) = run(&frame, &rw, ChecksumMode::Incremental);
        let tcp = tcp::Packet::new_checked(&buf[34..]).unwrap();
        assert!(!tcp.verify_checksum_v4(FAKE_V4, TEST_V4), "why Incremental is not the default");
    }

    #[test]
    fn incremental_equals_full_on_fixtures() {
        for frame in ALL_TCP {
            let p = parse(frame).unwrap().unwrap();
            let rws = match p.family {
                Family::V4 => [rw_v4(None), rw_v4(Some(FAKE_V4))],
                Family::V6 => [rw_v6(None), rw_v6(Some("fd00::1".parse().unwrap()))],
            };
            for rw in rws {
                let (mut a, mut b) = ([0u8; 128], [0u8; 128]);
                a[..frame.len()].copy_from_slice(frame);
                b[..frame.len()].copy_from_slice(frame);
                let ra = apply(&mut a[..frame.len()], &p, &rw, ChecksumMode::Full).unwrap();
                let rb = apply(&mut b[..frame.len()], &p, &rw, ChecksumMode::Incremental).unwrap();
                assert_eq!(ra, rb);
                assert_eq!(a, b);
                check_output(&a[ra.0..ra.0 + ra.1], &p, &rw);
            }
        }
    }

    #[test]
    fn family_mismatch_leaves_frame_alone() {
        let p = parse(&SYN_V4).unwrap().unwrap();
        let mut buf = SYN_V4;
        let mut rw = rw_v4(None);
        rw.src_ip = Some(test_v6().into());
        assert_eq!(apply(&mut buf, &p, &rw, ChecksumMode::Full), Err(RewriteError::FamilyMismatch));
        assert_eq!(apply(&mut buf, &p, &rw_v6(None), ChecksumMode::Full), Err(RewriteError::FamilyMismatch));
        assert_eq!(buf, SYN_V4);

        let p = parse(&SYN_V6).unwrap().unwrap();
        let mut buf = SYN_V6;
        assert_eq!(apply(&mut buf, &p, &rw_v4(None), ChecksumMode::Full), Err(RewriteError::FamilyMismatch));
        let mut rw = rw_v6(None);
        rw.src_ip = Some(FAKE_V4.into());
        assert_eq!(apply(&mut buf, &p, &rw, ChecksumMode::Incremental), Err(RewriteError::FamilyMismatch));
        assert_eq!(buf, SYN_V6);

        assert_eq!(RewriteError::FamilyMismatch.name(), "family_mismatch");
        assert!(!RewriteError::ParseMismatch.to_string().is_empty());
    }

    #[test]
    fn stale_parse_is_rejected_without_panic() {
        let syn = parse(&SYN_V4).unwrap().unwrap();
        let rw = rw_v4(None);
        // A parse of another frame.
        let mut buf = FIN_V4;
        assert_eq!(apply(&mut buf, &syn, &rw, ChecksumMode::Full), Err(RewriteError::ParseMismatch));
        let mut buf = DATA_V4;
        assert_eq!(apply(&mut buf, &syn, &rw, ChecksumMode::Full), Err(RewriteError::ParseMismatch));
        // Field-by-field corruption of a parse.
        let mut buf = SYN_V4;
        let mut rng = XorShift(99);
        for _ in 0..10_000 {
            let mut p = syn;
            match rng.below(5) {
                0 => p.l3_offset = rng.below(100),
                1 => p.l4_offset = rng.below(100),
                2 => p.ip_end = rng.below(100),
                3 => p.vlan = Some(1),
                _ => p.family = Family::V6,
            }
            if p == syn {
                continue;
            }
            let rw = if p.family == Family::V6 { rw_v6(None) } else { rw };
            assert_eq!(apply(&mut buf, &p, &rw, ChecksumMode::Full), Err(RewriteError::ParseMismatch), "{p:?}");
            assert_eq!(buf, SYN_V4);
        }
    }

    /// Build a random valid TCP frame into `buf`; return its length.
    fn random_frame(rng: &mut XorShift, buf: &mut [u8; 256]) -> usize {
        rng.fill(buf);
        let v6 = rng.below(2) == 0;
        let vlan = rng.below(3) == 0;
        let l3 = if vlan { 18 } else { 14 };
        let (ethertype, ip_hdr) =
            if v6 { (ethernet::ETHERTYPE_IPV6, 40) } else { (ethernet::ETHERTYPE_IPV4, 20 + 4 * rng.below(3)) };
        let tcp_hdr = 20 + 4 * rng.below(11);
        let payload = rng.below(60);
        let end = l3 + ip_hdr + tcp_hdr + payload;
        let padding = rng.below(8);
        if vlan {
            buf[12..14].copy_from_slice(&ethernet::ETHERTYPE_VLAN.to_be_bytes());
            buf[16..18].copy_from_slice(&ethertype.to_be_bytes());
        } else {
            buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
        }
        let mut t = tcp::Packet::new_unchecked(&mut buf[l3 + ip_hdr..end]);
        t.set_header_len(tcp_hdr as u8);
        t.options_bytes_mut().fill(1); // NOPs
        if v6 {
            let mut ip = ipv6::Packet::new_unchecked(&mut buf[l3..end]);
            ip.set_version(6);
            ip.set_payload_len((tcp_hdr + payload) as u16);
            ip.set_next_header(6);
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            tcp::Packet::new_unchecked(&mut buf[l3 + 40..end]).fill_checksum_v6(&s, &d);
        } else {
            let mut ip = ipv4::Packet::new_unchecked(&mut buf[l3..end]);
            ip.set_version(4);
            ip.set_header_len(ip_hdr as u8);
            ip.set_total_len((end - l3) as u16);
            ip.set_more_frags(false);
            ip.set_frag_offset(0);
            ip.set_protocol(6);
            ip.fill_checksum();
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            tcp::Packet::new_unchecked(&mut buf[l3 + ip_hdr..end]).fill_checksum_v4(s, d);
        }
        end + padding
    }

    #[test]
    fn random_frames_incremental_equals_full() {
        let mut rng = XorShift(0x5eed_c0ff_ee00);
        let mut frame = [0u8; 256];
        for round in 0..5_000 {
            let len = random_frame(&mut rng, &mut frame);
            let p = parse(&frame[..len]).unwrap().unwrap();
            let dst_port = rng.next_u16();
            let rw = match p.family {
                Family::V4 => Rewrite {
                    dst_ip: Ipv4Addr::from(rng.next_u32()).into(),
                    dst_port,
                    src_ip: (rng.below(2) == 0).then(|| Ipv4Addr::from(rng.next_u32()).into()),
                    ..rw_v4(None)
                },
                Family::V6 => Rewrite {
                    dst_ip: Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())).into(),
                    dst_port,
                    src_ip: (rng.below(2) == 0).then(|| Ipv6Addr::from(u128::from(rng.next_u64())).into()),
                    ..rw_v6(None)
                },
            };
            let (mut a, mut b) = (frame, frame);
            let ra = apply(&mut a[..len], &p, &rw, ChecksumMode::Full).unwrap();
            let rb = apply(&mut b[..len], &p, &rw, ChecksumMode::Incremental).unwrap();
            assert_eq!(ra, rb, "round {round}");
            assert_eq!(a, b, "round {round}");
            let (start, out_len) = ra;
            assert_eq!(start, if p.vlan.is_some() { 4 } else { 0 });
            check_output(&a[start..start + out_len], &p, &rw);
        }
    }
}
