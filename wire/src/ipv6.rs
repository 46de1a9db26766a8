//! IPv6 packets (RFC 8200): the fixed header, and the walk over the extension headers that may
//! stand between it and TCP.
//!
//! # Extension headers
//!
//! [`Packet::upper_layer`] skips hop-by-hop options, routing and destination options headers
//! (RFC 8200 §4.3–4.6: each is `next header ‖ length in 8-byte units − 1 ‖ ...`), at most
//! [`MAX_EXT_HEADERS`] of them, and says where the upper-layer header starts. It stops at a
//! fragment header ([`Upper::Fragment`]: the ports of non-first fragments are unknowable, as with
//! IPv4), and at what it cannot skip ([`Upper::Unwalkable`]: AH, ESP, a longer chain). The XDP
//! program walks the same headers with the same limit (`xdpcopy.bpf.c`), so a frame the worker
//! receives always parses.
//!
//! The buffer may extend past `40 + payload_len` (Ethernet padding).

use std::net::Ipv6Addr;

use super::{get_u16, get_u32, put_u16, put_u32, Error, Result};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Next-header number of the hop-by-hop options header.
pub const NH_HOP_BY_HOP: u8 = 0;
/// Next-header number of the routing header.
pub const NH_ROUTING: u8 = 43;
/// Next-header number of the fragment header.
pub const NH_FRAGMENT: u8 = 44;
/// Next-header number of ESP (encrypted: what follows is unknowable).
pub const NH_ESP: u8 = 50;
/// Next-header number of the authentication header.
pub const NH_AH: u8 = 51;
/// Next-header number of the destination options header.
pub const NH_DEST_OPTS: u8 = 60;
/// Most extension headers [`Packet::upper_layer`] skips (the XDP program's limit too).
pub const MAX_EXT_HEADERS: usize = 4;

/// Where [`Packet::upper_layer`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upper {
    /// The upper-layer header (`next_header`: TCP, UDP, ICMPv6, ...) starts `offset` bytes after
    /// the start of the IPv6 header (40 without extension headers).
    Found {
        /// The upper-layer protocol.
        next_header: u8,
        /// Offset of its header from the start of the packet.
        offset: usize,
    },
    /// A fragment header; `next_header` is the one it names (TCP for a fragment of a segment).
    Fragment {
        /// The next header the fragment header names.
        next_header: u8,
    },
    /// A header the walk does not skip: AH, ESP, or an extension header past [`MAX_EXT_HEADERS`].
    Unwalkable {
        /// The header's number.
        next_header: u8,
    },
}

mod field {
    use core::ops::Range;

    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

view! {
    /// A view of an IPv6 packet.
    Packet, new_checked: "Wrap a buffer, checking the version and the payload length against it."
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Check the version and that the payload length fits the buffer.
    ///
    /// # Errors
    /// [`Error::Truncated`] below 40 bytes, [`Error::BadVersion`] unless version 6,
    /// [`Error::BadTotalLen`] if the payload passes the buffer.
    pub fn check(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::BadVersion);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::BadTotalLen);
        }
        Ok(())
    }

    fn ver_tc_flow(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    /// Return the version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Return the traffic class (DSCP/ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// Return the 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// Return the payload length in bytes (extension headers included).
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Return the next header (protocol) number.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Return the hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Return the source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    /// Return the destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// Return the payload (`40..40 + payload_len`, Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walk the extension headers to the upper-layer header (see the module docs). Only the
    /// fixed header must be checked: every extension header is checked against the payload
    /// length and the buffer.
    ///
    /// # Errors
    /// [`Error::Truncated`] below 40 bytes; [`Error::BadTotalLen`] if an extension header runs
    /// past the payload length or the buffer.
    pub fn upper_layer(&self) -> Result<Upper> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(b.len());
        let mut next = self.next_header();
        let mut offset = HEADER_LEN;
        for _ in 0..MAX_EXT_HEADERS {
            match next {
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                    // next header ‖ length in 8-octet units, not counting the first 8.
                    if offset + 8 > end {
                        return Err(Error::BadTotalLen);
                    }
                    let len = (usize::from(b[offset + 1]) + 1) * 8;
                    if offset + len > end {
                        return Err(Error::BadTotalLen);
                    }
                    next = b[offset];
                    offset += len;
                }
                NH_FRAGMENT => {
                    if offset + 8 > end {
                        return Err(Error::BadTotalLen);
                    }
                    return Ok(Upper::Fragment { next_header: b[offset] });
                }
                NH_AH | NH_ESP => return Ok(Upper::Unwalkable { next_header: next }),
                _ => return Ok(Upper::Found { next_header: next, offset }),
            }
        }
        match next {
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_FRAGMENT | NH_AH | NH_ESP => {
                Ok(Upper::Unwalkable { next_header: next })
            }
            _ => Ok(Upper::Found { next_header: next, offset }),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_tc_flow(&mut self, mask: u32, bits: u32) {
        let old = self.ver_tc_flow();
        put_u32(self.buffer.as_mut(), field::VER_TC_FLOW, (old & !mask) | (bits & mask));
    }

    /// Set the version field.
    pub fn set_version(&mut self, version: u8) {
        self.set_ver_tc_flow(0xf000_0000, u32::from(version) << 28);
    }

    /// Set the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        self.set_ver_tc_flow(0x0ff0_0000, u32::from(tc) << 20);
    }

    /// Set the flow label (the low 20 bits of `label`).
    pub fn set_flow_label(&mut self, label: u32) {
        self.set_ver_tc_flow(0x000f_ffff, label);
    }

    /// Set the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }

    /// Set the next header number.
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header;
    }

    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Return the payload (`40..40 + payload_len`), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::SYN_V6;

    #[test]
    fn read_syn() {
        let p = Packet::new_checked(&SYN_V6[14..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 40);
        assert_eq!(p.next_header(), 6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &SYN_V6[54..]);
    }

    #[test]
    fn malformed() {
        let good = &SYN_V6[14..];
        assert_eq!(Packet::new_checked(&good[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&good[..79]).unwrap_err(), Error::BadTotalLen);
        let mut b = [0u8; 80];
        b.copy_from_slice(good);
        b[0] = 0x45;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadVersion);
    }

    #[test]
    fn padding_is_not_payload() {
        let mut b = [0u8; 86];
        b[..80].copy_from_slice(&SYN_V6[14..]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 40);
    }

    /// The SYN_V6 packet with `ext` (each a complete extension header, its next-header byte
    /// patched here) between the fixed header and TCP.
    fn with_ext(ext: &[&[u8]]) -> Vec<u8> {
        let base = &SYN_V6[14..];
        let mut p = base[..40].to_vec();
        let kinds: Vec<u8> = ext.iter().map(|h| h[0]).collect();
        p[6] = kinds.first().copied().unwrap_or(6);
        for (i, h) in ext.iter().enumerate() {
            let mut h = h.to_vec();
            h[0] = kinds.get(i + 1).copied().unwrap_or(6);
            p.extend(h);
        }
        p.extend(&base[40..]);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    }

    // Extension headers as (their own number, then the body); `with_ext` chains them.
    const HBH: [u8; 8] = [NH_HOP_BY_HOP, 0, 5, 2, 0, 0, 1, 0]; // router alert, PadN
    const DST: [u8; 16] = [NH_DEST_OPTS, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // PadN
    const RT: [u8; 24] = [NH_ROUTING, 2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const FRAG: [u8; 8] = [NH_FRAGMENT, 0, 0, 1, 0, 0, 0, 7];

    #[test]
    fn the_walk_skips_hop_by_hop_routing_and_destination_options() {
        let p = Packet::new_checked(&SYN_V6[14..]).unwrap();
        assert_eq!(p.upper_layer(), Ok(Upper::Found { next_header: 6, offset: 40 }));
        let b = with_ext(&[&HBH, &RT, &DST]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer(), Ok(Upper::Found { next_header: 6, offset: 40 + 8 + 24 + 16 }));
        assert_eq!(&b[88..90], &SYN_V6[54..56], "TCP source port where the walk says");
        // Four skippable headers are the limit; a fifth is not walked.
        let b = with_ext(&[&HBH, &DST, &RT, &DST]);
        assert!(matches!(Packet::new_checked(&b[..]).unwrap().upper_layer(), Ok(Upper::Found { next_header: 6, .. })));
        let b = with_ext(&[&HBH, &DST, &RT, &DST, &DST]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Ok(Upper::Unwalkable { next_header: NH_DEST_OPTS })
        );
    }

    #[test]
    fn the_walk_stops_at_fragments_ah_esp_and_broken_lengths() {
        let b = with_ext(&[&HBH, &FRAG]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper_layer(), Ok(Upper::Fragment { next_header: 6 }));
        let mut ah = [0u8; 16];
        ah[0] = NH_AH;
        ah[1] = 2;
        let b = with_ext(&[&ah]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper_layer(), Ok(Upper::Unwalkable { next_header: NH_AH }));
        // A length past the payload.
        let mut b = with_ext(&[&DST]);
        b[41] = 9;
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper_layer(), Err(Error::BadTotalLen));
        // An extension header cut short by the payload length.
        let mut b = with_ext(&[&HBH]);
        b[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper_layer(), Err(Error::BadTotalLen));
        // UDP right after the fixed header.
        let mut b = SYN_V6[14..].to_vec();
        b[6] = 17;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Ok(Upper::Found { next_header: 17, offset: 40 })
        );
    }

    #[test]
    fn write_every_field() {
        let mut b = [0u8; 44];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version(6);
        p.set_traffic_class(0xb8);
        p.set_flow_label(0xfffff);
        p.set_flow_label(0xabcde);
        p.set_payload_len(4);
        p.set_next_header(59);
        p.set_hop_limit(255);
        p.set_src_addr(Ipv6Addr::LOCALHOST);
        p.set_dst_addr("ff02::1".parse().unwrap());
        p.payload_mut().copy_from_slice(&[9, 8, 7, 6]);
        assert_eq!(&b[..8], &[0x6b, 0x8a, 0xbc, 0xde, 0x00, 0x04, 59, 255]);
        assert_eq!(b[23], 1);
        assert_eq!(&b[24..26], &[0xff, 0x02]);
        assert_eq!(&b[40..], &[9, 8, 7, 6]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.traffic_class(), p.flow_label()), (0xb8, 0xabcde));
    }
}
