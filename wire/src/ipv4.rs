//! IPv4 packets (RFC 791).
//!
//! The buffer may extend past `total_len` (Ethernet padding); [`Packet::payload`] stops at
//! `total_len`.

use std::net::Ipv4Addr;

use super::checksum;
use super::{get_u16, put_u16, Error, Result};

/// Length of the IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_MASK: u16 = 0x1fff;

view! {
    /// A view of an IPv4 packet.
    Packet, new_checked: "Wrap a buffer, checking the version and every length field against it."
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer that holds the header but possibly not the whole packet (a header
    /// captured without its payload), checking the version and the header length only.
    ///
    /// Every getter and setter of the header is then safe; [`Packet::payload`] is not.
    ///
    /// # Errors
    /// See [`Packet::check_header`].
    pub fn new_checked_header(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header()?;
        Ok(packet)
    }

    /// Check the version and that IHL and total length fit the buffer.
    ///
    /// # Errors
    /// Those of [`Packet::check_header`], and [`Error::BadTotalLen`] if the total length is
    /// below the header or passes the buffer.
    pub fn check(&self) -> Result<()> {
        self.check_header()?;
        let total_len = usize::from(self.total_len());
        if total_len < usize::from(self.header_len()) || total_len > self.buffer.as_ref().len() {
            return Err(Error::BadTotalLen);
        }
        Ok(())
    }

    /// Check the version and that IHL fits the buffer (not the total length).
    ///
    /// # Errors
    /// [`Error::Truncated`] below 20 bytes, [`Error::BadVersion`] unless version 4,
    /// [`Error::BadHeaderLen`] if IHL < 5 or the header passes the buffer.
    pub fn check_header(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = usize::from(self.header_len());
        if header_len < MIN_HEADER_LEN || header_len > len {
            return Err(Error::BadHeaderLen);
        }
        Ok(())
    }

    /// Return the version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Return the header length in bytes (IHL * 4).
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Return the DSCP/ECN byte (formerly TOS).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Return the total length (header + payload) in bytes.
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// Return the identification field.
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Return the don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// Return the more-fragments flag.
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Return the fragment offset in bytes (the field times 8).
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FRAG_MASK) << 3
    }

    /// Return whether the packet is a fragment (more-fragments set or a nonzero offset).
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & (FLAG_MF | FRAG_MASK) != 0
    }

    /// Return the time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Return the protocol number of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Return the header checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Return the source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Return the destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Return the option bytes (between the fixed header and `header_len`).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..usize::from(self.header_len())]
    }

    /// Return the header bytes (`..header_len`).
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.header_len())]
    }

    /// Return the payload (`header_len..total_len`, Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }

    /// Return whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header(), 0)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the version field.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Set the header length in bytes (a multiple of 4, 20..=60).
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }

    /// Set the DSCP/ECN byte.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Set the total length in bytes.
    pub fn set_total_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), field::TOTAL_LEN, len);
    }

    /// Set the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        put_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    fn set_flags_frag_bits(&mut self, mask: u16, bits: u16) {
        let old = get_u16(self.buffer.as_ref(), field::FLAGS_FRAG);
        put_u16(self.buffer.as_mut(), field::FLAGS_FRAG, (old & !mask) | (bits & mask));
    }

    /// Set the don't-fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flags_frag_bits(FLAG_DF, if value { FLAG_DF } else { 0 });
    }

    /// Set the more-fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flags_frag_bits(FLAG_MF, if value { FLAG_MF } else { 0 });
    }

    /// Set the fragment offset in bytes (a multiple of 8).
    pub fn set_frag_offset(&mut self, offset: u16) {
        self.set_flags_frag_bits(FRAG_MASK, offset >> 3);
    }

    /// Set the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Set the protocol number of the payload.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Set the header checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Set the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Set the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Return the option bytes, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..end]
    }

    /// Return the payload (`header_len..total_len`), mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }

    /// Compute and store the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{FRAG_V4, RST_V4_PADDED, SYN_V4};

    fn ip(frame: &[u8]) -> &[u8] {
        &frame[14..]
    }

    #[test]
    fn read_syn() {
        let p = Packet::new_checked(ip(&SYN_V4)).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 60);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.checksum(), 0x0a74);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &SYN_V4[34..]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn padding_is_not_payload() {
        let p = Packet::new_checked(ip(&RST_V4_PADDED)).unwrap();
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.payload().len(), 20);
        assert_eq!(p.payload(), &RST_V4_PADDED[34..54]);
    }

    #[test]
    fn fragment_flags() {
        let p = Packet::new_checked(ip(&FRAG_V4)).unwrap();
        assert!(p.more_frags());
        assert!(!p.dont_frag());
        assert_eq!(p.frag_offset(), 0);
        assert!(p.is_fragment());
        assert!(p.verify_checksum());
    }

    #[test]
    fn malformed() {
        let good = ip(&SYN_V4);
        assert_eq!(Packet::new_checked(&good[..19]).unwrap_err(), Error::Truncated);

        let mut b = [0u8; 60];
        b.copy_from_slice(good);
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadVersion);
        b[0] = 0x44; // IHL 4
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadHeaderLen);
        b[0] = 0x4f; // IHL 15 = 60 bytes: fits this 60-byte buffer, but not 59 bytes.
        assert_eq!(Packet::new_checked(&b[..59]).unwrap_err(), Error::BadHeaderLen);
        b[0] = 0x46; // IHL 6 = 24 bytes, total length below it.
        b[2..4].copy_from_slice(&23u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadTotalLen);
        b[0] = 0x45;
        b[2..4].copy_from_slice(&61u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadTotalLen);
        b[2..4].copy_from_slice(&60u16.to_be_bytes());
        assert!(Packet::new_checked(&b[..]).is_ok());
        assert_eq!(Packet::new_checked(&b[..59]).unwrap_err(), Error::BadTotalLen);
    }

    #[test]
    fn header_without_its_payload() {
        // The SYN's 20-byte header says 60 bytes in all: not a packet, but a readable header.
        let hdr = &ip(&SYN_V4)[..20];
        assert_eq!(Packet::new_checked(hdr).unwrap_err(), Error::BadTotalLen);
        let p = Packet::new_checked_header(hdr).unwrap();
        assert_eq!((p.total_len(), p.header_len(), p.protocol()), (60, 20, 6));
        assert!(p.verify_checksum());
        assert_eq!(Packet::new_checked_header(&hdr[..19]).unwrap_err(), Error::Truncated);
        let mut b = [0u8; 20];
        b.copy_from_slice(hdr);
        b[0] = 0x46; // IHL 6: 24 bytes, past the buffer.
        assert_eq!(Packet::new_checked_header(&b[..]).unwrap_err(), Error::BadHeaderLen);
        b[0] = 0x44;
        assert_eq!(Packet::new_checked_header(&b[..]).unwrap_err(), Error::BadHeaderLen);
        b[0] = 0x65;
        assert_eq!(Packet::new_checked_header(&b[..]).unwrap_err(), Error::BadVersion);
        b[0] = 0x45;
        b[2..4].copy_from_slice(&0u16.to_be_bytes()); // total length is not looked at
        assert!(Packet::new_checked_header(&b[..]).is_ok());
    }

    #[test]
    fn options() {
        // IHL 6 with one 4-byte option (router alert), no payload.
        let mut b = [0u8; 24];
        b[..20].copy_from_slice(&SYN_V4[14..34]);
        b[0] = 0x46;
        b[2..4].copy_from_slice(&24u16.to_be_bytes());
        b[20..].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0, 0]);
        assert!(p.payload().is_empty());
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.options_mut()[3] = 1;
        assert!(!p.verify_checksum());
    }

    #[test]
    fn write_every_field() {
        let mut b = [0u8; 28];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_dscp_ecn(0xb8);
        p.set_total_len(28);
        p.set_ident(0xbeef);
        p.set_dont_frag(false);
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        p.set_ttl(9);
        p.set_protocol(17);
        p.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 51, 100, 7));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            b,
            [
                0x45, 0xb8, 0x00, 0x1c, 0xbe, 0xef, 0x20, 0xb9, 0x09, 0x11, 0xe5, 0x34, 192, 0, 2, 1, 198, 51, 100, 7,
                1, 2, 3, 4, 5, 6, 7, 8
            ]
        );
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.frag_offset(), p.more_frags(), p.dont_frag()), (1480, true, false));
        p.set_more_frags(false);
        p.set_frag_offset(0);
        p.set_dont_frag(true);
        assert_eq!(&b[6..8], &[0x40, 0x00]);
    }
}
