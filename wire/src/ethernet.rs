//! Ethernet II frames, 802.1Q / 802.1ad tags and MAC addresses.
//!
//! [`Frame`] views the 14-byte untagged header; a tagged frame's outer ethertype is
//! [`ETHERTYPE_VLAN`] or [`ETHERTYPE_QINQ`] and its payload starts with a [`VlanTag`].

use core::fmt;
use core::str::FromStr;

use super::{get_u16, put_u16, Error, Result};

/// Length of the untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of one 802.1Q / 802.1ad tag (TCI + inner ethertype).
pub const VLAN_TAG_LEN: usize = 4;
/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Ethertype (TPID) of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethertype (TPID) of an 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

mod field {
    use core::ops::Range;

    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;

    pub const TCI: usize = 0;
    pub const INNER_ETHERTYPE: usize = 2;
}

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Return the address bytes.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The error of parsing a [`MacAddr`] from text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseMacAddrError;

impl fmt::Display for ParseMacAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid MAC address: expected six hex bytes like aa:bb:cc:dd:ee:ff")
    }
}

impl std::error::Error for ParseMacAddrError {}

impl FromStr for MacAddr {
    type Err = ParseMacAddrError;

    /// Parse `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (two hex digits per byte, any case).
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let sep = match s.as_bytes().get(2) {
            Some(b':') => ':',
            Some(b'-') => '-',
            _ => return Err(ParseMacAddrError),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or(ParseMacAddrError)?;
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(ParseMacAddrError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacAddrError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacAddrError);
        }
        Ok(MacAddr(out))
    }
}

view! {
    /// A view of an Ethernet II frame.
    Frame, new_checked: "Wrap a buffer, checking that it holds the 14-byte header."
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Check that the buffer holds the header.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    pub fn check(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Return the destination MAC address.
    pub fn dst_addr(&self) -> MacAddr {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        MacAddr(a)
    }

    /// Return the source MAC address.
    pub fn src_addr(&self) -> MacAddr {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        MacAddr(a)
    }

    /// Return the ethertype (the TPID if the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Return the bytes after the 14-byte header (a VLAN tag, if any, included).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    /// Set the source MAC address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    /// Set the ethertype.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        put_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    /// Return the bytes after the 14-byte header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

view! {
    /// A view of an 802.1Q / 802.1ad tag: the 4 bytes after the TPID (TCI, inner ethertype).
    VlanTag, new_checked: "Wrap a buffer, checking that it holds the 4-byte tag."
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Check that the buffer holds the tag.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than [`VLAN_TAG_LEN`].
    pub fn check(&self) -> Result<()> {
        if self.buffer.as_ref().len() < VLAN_TAG_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Return the tag control information (PCP, DEI, VID).
    pub fn tci(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::TCI)
    }

    /// Return the 12-bit VLAN identifier.
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// Return the ethertype of what follows the tag.
    pub fn inner_ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::INNER_ETHERTYPE)
    }

    /// Return the bytes after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[VLAN_TAG_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Set the tag control information.
    pub fn set_tci(&mut self, tci: u16) {
        put_u16(self.buffer.as_mut(), field::TCI, tci);
    }

    /// Set the ethertype of what follows the tag.
    pub fn set_inner_ethertype(&mut self, ethertype: u16) {
        put_u16(self.buffer.as_mut(), field::INNER_ETHERTYPE, ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{SYN_V4, VLAN_V4_PADDED};

    const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const SERVER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

    #[test]
    fn read_untagged() {
        let f = Frame::new_checked(&SYN_V4[..]).unwrap();
        assert_eq!(f.dst_addr(), SERVER);
        assert_eq!(f.src_addr(), CLIENT);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.payload().len(), SYN_V4.len() - HEADER_LEN);
        assert_eq!(f.payload()[0], 0x45);
    }

    #[test]
    fn read_tagged() {
        let f = Frame::new_checked(&VLAN_V4_PADDED[..]).unwrap();
        assert_eq!(f.ethertype(), ETHERTYPE_VLAN);
        let tag = VlanTag::new_checked(f.payload()).unwrap();
        assert_eq!(tag.tci(), 0x2064);
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.inner_ethertype(), ETHERTYPE_IPV4);
        assert_eq!(tag.payload()[0], 0x45);
    }

    #[test]
    fn truncated() {
        assert_eq!(Frame::new_checked(&SYN_V4[..13]).unwrap_err(), Error::Truncated);
        assert!(Frame::new_checked(&SYN_V4[..14]).is_ok());
        assert_eq!(VlanTag::new_checked(&[0x20, 0x64, 0x08][..]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn write() {
        let mut bytes = SYN_V4;
        let mut f = Frame::new_unchecked(&mut bytes[..]);
        f.set_dst_addr(CLIENT);
        f.set_src_addr(SERVER);
        f.set_ethertype(ETHERTYPE_IPV6);
        assert_eq!(&bytes[..14], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd]);
        assert_eq!(&bytes[14..], &SYN_V4[14..]);

        let mut tag = [0u8; 4];
        let mut t = VlanTag::new_unchecked(&mut tag[..]);
        t.set_tci(0xe00a);
        t.set_inner_ethertype(ETHERTYPE_IPV4);
        assert_eq!(tag, [0xe0, 0x0a, 0x08, 0x00]);
    }

    #[test]
    fn mac_display_and_parse() {
        let m = MacAddr([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]);
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:0f");
        assert_eq!(format!("{m:?}"), "aa:bb:0c:dd:ee:0f");
        assert_eq!("aa:bb:0c:dd:ee:0f".parse::<MacAddr>(), Ok(m));
        assert_eq!("AA-BB-0C-DD-EE-0F".parse::<MacAddr>(), Ok(m));
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:",
            "aa-bb:cc:dd:ee:ff",
            "a:bb:cc:dd:ee:ff0",
            "aa:bb:cc:dd:ee:gg",
            "aa:bb:cc:dd:ee:+f",
            "aabb.ccdd.eeff",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacAddrError), "{bad:?}");
        }
        assert!(ParseMacAddrError.to_string().contains("aa:bb:cc:dd:ee:ff"));
    }
}
