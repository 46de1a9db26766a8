//! Link-layer headers of capture files and their conversion to Ethernet frames.

use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, HEADER_LEN};

/// The link types [`Link::from_linktype`] accepts, in words, for error messages.
pub const SUPPORTED_LINK_TYPES: &str = "Ethernet, Linux cooked (SLL, SLL2), raw IP, loopback (null)";

/// Length of the Linux cooked (SLL) header; the protocol is its last two bytes.
const SLL_LEN: usize = 16;
/// Length of the Linux cooked v2 (SLL2) header; the protocol is its first two bytes.
const SLL2_LEN: usize = 20;
/// Length of the BSD loopback header (the address family, in the capturing host's byte order).
const LOOPBACK_LEN: usize = 4;

/// A link type whose packets can become Ethernet frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// LINKTYPE_ETHERNET (1): frames are copied as they are, VLAN tags included.
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113): a 16-byte cooked header, the ethertype in bytes 14..16.
    Sll,
    /// LINKTYPE_LINUX_SLL2 (276): a 20-byte cooked header, the ethertype in bytes 0..2.
    Sll2,
    /// LINKTYPE_RAW (101), 12 and 14 (`DLT_RAW` of some BSDs): IPv4 or IPv6 by the version nibble.
    RawIp,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_NULL (0), LINKTYPE_LOOP (108): a 4-byte address family, then IP by its nibble.
    Loopback,
}

/// Why a record did not become a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Shorter than its link-layer header.
    Short,
    /// A raw-IP or loopback payload that is neither IPv4 nor IPv6.
    NotIp,
}

impl Link {
    /// Map a LINKTYPE_ value to a supported link, `None` if unsupported.
    pub fn from_linktype(linktype: u32) -> Option<Link> {
        Some(match linktype {
            1 => Link::Ethernet,
            113 => Link::Sll,
            276 => Link::Sll2,
            12 | 14 | 101 => Link::RawIp,
            228 => Link::Ipv4,
            229 => Link::Ipv6,
            0 | 108 => Link::Loopback,
            _ => return None,
        })
    }

    /// Write the Ethernet frame of one link-layer record into `out` (cleared first).
    ///
    /// Ethernet is copied byte for byte; every other link gets zero MACs and the ethertype of
    /// its payload, followed by the payload unchanged.
    pub(crate) fn to_ethernet(self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Skip> {
        out.clear();
        let (ethertype, payload) = match self {
            Link::Ethernet => {
                if data.len() < HEADER_LEN {
                    return Err(Skip::Short);
                }
                out.extend_from_slice(data);
                return Ok(());
            }
            Link::Sll => {
                let header = data.get(..SLL_LEN).ok_or(Skip::Short)?;
                ([header[14], header[15]], &data[SLL_LEN..])
            }
            Link::Sll2 => {
                let header = data.get(..SLL2_LEN).ok_or(Skip::Short)?;
                ([header[0], header[1]], &data[SLL2_LEN..])
            }
            Link::RawIp => (ip_ethertype(data)?, data),
            Link::Ipv4 => (ETHERTYPE_IPV4.to_be_bytes(), data),
            Link::Ipv6 => (ETHERTYPE_IPV6.to_be_bytes(), data),
            Link::Loopback => {
                let payload = data.get(LOOPBACK_LEN..).ok_or(Skip::Short)?;
                (ip_ethertype(payload)?, payload)
            }
        };
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&ethertype);
        out.extend_from_slice(payload);
        Ok(())
    }
}

/// The ethertype of an IP packet, from its version nibble.
fn ip_ethertype(ip: &[u8]) -> Result<[u8; 2], Skip> {
    match ip.first().ok_or(Skip::Short)? >> 4 {
        4 => Ok(ETHERTYPE_IPV4.to_be_bytes()),
        6 => Ok(ETHERTYPE_IPV6.to_be_bytes()),
        _ => Err(Skip::NotIp),
    }
}

/// The common name of a LINKTYPE_ value, "" if unknown.
pub fn linktype_name(linktype: u32) -> &'static str {
    match linktype {
        0 => "BSD loopback (null)",
        1 => "Ethernet",
        6 => "IEEE 802.5 Token Ring",
        8 => "SLIP",
        9 => "PPP",
        10 => "FDDI",
        12 | 14 | 101 => "raw IP",
        50 => "PPP in HDLC framing",
        51 => "PPPoE",
        100 => "ATM RFC 1483",
        104 => "Cisco HDLC",
        105 => "IEEE 802.11",
        107 => "Frame Relay",
        108 => "OpenBSD loopback",
        113 => "Linux cooked (SLL)",
        119 => "IEEE 802.11 with Prism header",
        127 => "IEEE 802.11 with radiotap header",
        147..=162 => "user-defined (DLT_USER)",
        163 => "IEEE 802.11 with AVS header",
        187 | 201 => "Bluetooth HCI",
        189 | 220 => "Linux USB",
        192 => "PPI",
        195 | 215 | 230 => "IEEE 802.15.4",
        197 => "Endace ERF",
        228 => "raw IPv4",
        229 => "raw IPv6",
        239 => "Linux netfilter log (NFLOG)",
        253 => "Linux netlink",
        276 => "Linux cooked v2 (SLL2)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header's first bytes (version 4, IHL 5) followed by a marker.
    const IP4: [u8; 6] = [0x45, 0x00, 0x00, 0x14, 0xab, 0xcd];
    /// An IPv6 header's first bytes (version 6) followed by a marker.
    const IP6: [u8; 6] = [0x60, 0x00, 0x00, 0x00, 0xab, 0xcd];

    fn convert(link: Link, data: &[u8]) -> Result<Vec<u8>, Skip> {
        let mut out = vec![0xee; 3]; // stale content must be cleared
        link.to_ethernet(data, &mut out).map(|()| out)
    }

    fn synthesized(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0; 12];
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn ethernet_is_copied_and_must_hold_a_header() {
        let frame: Vec<u8> = (0..20).collect();
        assert_eq!(convert(Link::Ethernet, &frame), Ok(frame.clone()));
        assert_eq!(convert(Link::Ethernet, &frame[..13]), Err(Skip::Short));
    }

    #[test]
    fn sll_takes_the_protocol_field() {
        let mut rec = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        rec.extend_from_slice(&IP4);
        assert_eq!(convert(Link::Sll, &rec), Ok(synthesized(0x0800, &IP4)));
        assert_eq!(convert(Link::Sll, &rec[..15]), Err(Skip::Short));
        // A VLAN-tagged SLL record: protocol 0x8100, the payload starts with the tag.
        let mut tagged = rec[..14].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x86, 0xdd]);
        tagged.extend_from_slice(&IP6);
        let mut want = vec![0x00, 0x0a, 0x86, 0xdd];
        want.extend_from_slice(&IP6);
        assert_eq!(convert(Link::Sll, &tagged), Ok(synthesized(0x8100, &want)));
    }

    #[test]
    fn sll2_takes_the_leading_protocol() {
        let mut rec = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
        rec.extend_from_slice(&IP6);
        assert_eq!(convert(Link::Sll2, &rec), Ok(synthesized(0x86dd, &IP6)));
        assert_eq!(convert(Link::Sll2, &rec[..19]), Err(Skip::Short));
    }

    #[test]
    fn raw_ip_by_version_nibble() {
        assert_eq!(convert(Link::RawIp, &IP4), Ok(synthesized(0x0800, &IP4)));
        assert_eq!(convert(Link::RawIp, &IP6), Ok(synthesized(0x86dd, &IP6)));
        assert_eq!(convert(Link::RawIp, &[0x55, 0]), Err(Skip::NotIp));
        assert_eq!(convert(Link::RawIp, &[]), Err(Skip::Short));
        assert_eq!(convert(Link::Ipv4, &IP4), Ok(synthesized(0x0800, &IP4)));
        assert_eq!(convert(Link::Ipv6, &IP6), Ok(synthesized(0x86dd, &IP6)));
    }

    #[test]
    fn loopback_strips_the_family() {
        let mut rec = 2u32.to_le_bytes().to_vec();
        rec.extend_from_slice(&IP4);
        assert_eq!(convert(Link::Loopback, &rec), Ok(synthesized(0x0800, &IP4)));
        let mut rec = 30u32.to_be_bytes().to_vec();
        rec.extend_from_slice(&IP6);
        assert_eq!(convert(Link::Loopback, &rec), Ok(synthesized(0x86dd, &IP6)));
        assert_eq!(convert(Link::Loopback, &[2, 0, 0]), Err(Skip::Short));
    }

    #[test]
    fn linktypes() {
        assert_eq!(Link::from_linktype(1), Some(Link::Ethernet));
        assert_eq!(Link::from_linktype(14), Some(Link::RawIp));
        assert_eq!(Link::from_linktype(105), None);
        assert_eq!(linktype_name(105), "IEEE 802.11");
        assert_eq!(linktype_name(4242), "");
    }
}
