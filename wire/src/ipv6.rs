//! IPv6 packets (RFC 8200), fixed header only.
//!
//! Extension headers are not walked: a caller that needs TCP checks `next_header` directly.
//! The buffer may extend past `40 + payload_len` (Ethernet padding).

use std::net::Ipv6Addr;

use super::{get_u16, get_u32, put_u16, put_u32, Error, Result};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

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
