//! The response header intercept returns for every test-server packet (reference §4.3).
//!
//! A 64-byte channel message: the response's first 20 IPv4 header bytes with the *original*
//! total length (so the payload length is known without the payload), the fixed 20-byte TCP
//! header, and up to 24 option bytes, zero-filled. IP options are not carried: a header whose
//! IHL says 6 still has its TCP header at byte 20, and the payload length is
//! `total_len - ihl * 4 - data_offset * 4`. The protocol byte is not checked (intercept sends
//! TCP only).

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::wire::{tcp, Error, Result};

/// Length of a channel message.
pub const MESSAGE_LEN: usize = 64;
/// Offset of the TCP header in a message.
const TCP_AT: usize = 20;
/// Offset of the TCP options in a message.
const OPTS_AT: usize = 40;
/// Option bytes a message can carry.
const MAX_OPTS: usize = 24;

/// The fields the engine needs from a returned response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The responder: the test server's address and port.
    pub src: SocketAddrV4,
    /// The response's destination: the client's address and port (the session key).
    pub dst: SocketAddrV4,
    /// IPv4 total length of the original packet.
    pub total_len: u16,
    /// TCP payload length derived from the lengths.
    pub payload_len: u16,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgment number.
    pub ack: u32,
    /// TCP flags (see [`tcp::flags`]).
    pub flags: u8,
    /// TCP window field (unscaled).
    pub window: u16,
    /// Timestamps option (TSval, TSecr), if carried.
    pub timestamps: Option<(u32, u32)>,
    /// Window-scale option, if carried.
    pub window_scale: Option<u8>,
    /// MSS option, if carried.
    pub mss: Option<u16>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl ResponseHeader {
    /// Parse a channel message.
    ///
    /// # Errors
    /// [`Error::BadVersion`] if the IP version is not 4, [`Error::BadHeaderLen`] for an IHL
    /// below 5, [`Error::BadDataOffset`] for a data offset below 5, [`Error::BadTotalLen`] if
    /// the total length is shorter than both headers. Malformed or truncated options are
    /// skipped, not errors.
    pub fn parse(msg: &[u8; MESSAGE_LEN]) -> Result<ResponseHeader> {
        if msg[0] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let ihl = usize::from(msg[0] & 0x0f) * 4;
        if ihl < 20 {
            return Err(Error::BadHeaderLen);
        }
        let t = &msg[TCP_AT..];
        let doff = usize::from(t[12] >> 4) * 4;
        if doff < tcp::MIN_HEADER_LEN {
            return Err(Error::BadDataOffset);
        }
        let total_len = be16(msg, 2);
        let payload_len = usize::from(total_len).checked_sub(ihl + doff).ok_or(Error::BadTotalLen)?;
        let mut h = ResponseHeader {
            src: SocketAddrV4::new(ip_at(msg, 12), be16(t, 0)),
            dst: SocketAddrV4::new(ip_at(msg, 16), be16(t, 2)),
            total_len,
            payload_len: payload_len as u16,
            seq: be32(t, 4),
            ack: be32(t, 8),
            flags: t[13],
            window: be16(t, 14),
            timestamps: None,
            window_scale: None,
            mss: None,
        };
        let opts = &msg[OPTS_AT..OPTS_AT + (doff - tcp::MIN_HEADER_LEN).min(MAX_OPTS)];
        h.read_options(opts);
        Ok(h)
    }

    /// Walk the options, keeping the ones we use; stop at EOL or anything malformed.
    fn read_options(&mut self, opts: &[u8]) {
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => return,
                1 => i += 1,
                kind => {
                    let Some(&len) = opts.get(i + 1) else { return };
                    let len = usize::from(len);
                    if len < 2 || i + len > opts.len() {
                        return;
                    }
                    let d = &opts[i + 2..i + len];
                    match (kind, len) {
                        (2, 4) => self.mss = Some(be16(d, 0)),
                        (3, 3) => self.window_scale = Some(d[0]),
                        (8, 10) => self.timestamps = Some((be32(d, 0), be32(d, 4))),
                        _ => {}
                    }
                    i += len;
                }
            }
        }
    }

    /// Return whether every bit of `flags` is set.
    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags == flags
    }

    /// Return the sequence space the response occupies: payload, plus one for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        u32::from(self.payload_len) + u32::from(self.has(tcp::flags::SYN)) + u32::from(self.has(tcp::flags::FIN))
    }

    /// Encode the header as intercept would: IHL 5, the original total length, the options
    /// we know (MSS, window scale, timestamps) and zero padding.
    pub fn to_bytes(&self) -> [u8; MESSAGE_LEN] {
        let mut opts = [0u8; MAX_OPTS];
        let mut n = 0;
        if let Some(mss) = self.mss {
            opts[n..n + 4].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
            n += 4;
        }
        if let Some(ws) = self.window_scale {
            opts[n..n + 4].copy_from_slice(&[1, 3, 3, ws]);
            n += 4;
        }
        if let Some((val, ecr)) = self.timestamps {
            opts[n..n + 4].copy_from_slice(&[1, 1, 8, 10]);
            opts[n + 4..n + 8].copy_from_slice(&val.to_be_bytes());
            opts[n + 8..n + 12].copy_from_slice(&ecr.to_be_bytes());
            n += 12;
        }
        let doff = 20 + n;
        let mut m = [0u8; MESSAGE_LEN];
        m[0] = 0x45;
        m[2..4].copy_from_slice(&self.total_len.to_be_bytes());
        m[6] = 0x40;
        m[8] = 64;
        m[9] = 6;
        m[12..16].copy_from_slice(&self.src.ip().octets());
        m[16..20].copy_from_slice(&self.dst.ip().octets());
        let t = &mut m[TCP_AT..];
        t[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        t[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = ((doff / 4) as u8) << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&self.window.to_be_bytes());
        m[OPTS_AT..].copy_from_slice(&opts);
        m
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::flags::{ACK, FIN, PSH, SYN};

    /// The SYN-ACK message observed in the e2e run (reference §4.6).
    #[rustfmt::skip]
    const SYN_ACK: [u8; 64] = [
        0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x23, 0xa4,
        0x0a, 0x0a, 0x02, 0x03, 0x0a, 0x0a, 0x01, 0x02,
        0x1f, 0x90, 0xc4, 0xfa, 0xd4, 0x05, 0x09, 0xca, 0x97, 0x58, 0xfe, 0xba,
        0xa0, 0x12, 0xfe, 0x88, 0x17, 0x47, 0x00, 0x00,
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x9a, 0x17, 0x65, 0x6c,
        0x80, 0x7d, 0x96, 0x74, 0x01, 0x03, 0x03, 0x0a, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn observed_syn_ack() {
        let h = ResponseHeader::parse(&SYN_ACK).unwrap();
        assert_eq!(h.src, "10.10.2.3:8080".parse().unwrap());
        assert_eq!(h.dst, "10.10.1.2:50426".parse().unwrap());
        assert_eq!((h.seq, h.ack), (3_557_099_978, 2_539_191_994));
        assert_eq!((h.flags, h.window), (SYN | ACK, 65160));
        assert_eq!((h.total_len, h.payload_len), (60, 0));
        assert_eq!(h.mss, Some(1460));
        assert_eq!(h.timestamps, Some((0x9a17_656c, 0x807d_9674)));
        assert_eq!(h.window_scale, Some(10));
        assert_eq!(h.seq_len(), 1);
    }

    #[test]
    fn payload_length_from_original_total_length() {
        // 237 = 20 + 32 + 185 (§4.6): the payload itself is not in the message.
        let mut m = SYN_ACK;
        m[2..4].copy_from_slice(&237u16.to_be_bytes());
        m[32] = 0x80;
        m[33] = PSH | ACK | FIN;
        let h = ResponseHeader::parse(&m).unwrap();
        assert_eq!(h.payload_len, 185);
        assert_eq!(h.seq_len(), 186);
        // Only the 12 declared option bytes are read: the timestamps are cut off.
        assert_eq!(h.mss, Some(1460));
        assert_eq!((h.timestamps, h.window_scale), (None, None));
    }

    #[test]
    fn malformed() {
        let mut m = SYN_ACK;
        m[0] = 0x65;
        assert_eq!(ResponseHeader::parse(&m), Err(Error::BadVersion));
        m[0] = 0x44;
        assert_eq!(ResponseHeader::parse(&m), Err(Error::BadHeaderLen));
        let mut m = SYN_ACK;
        m[32] = 0x40;
        assert_eq!(ResponseHeader::parse(&m), Err(Error::BadDataOffset));
        let mut m = SYN_ACK;
        m[2..4].copy_from_slice(&59u16.to_be_bytes());
        assert_eq!(ResponseHeader::parse(&m), Err(Error::BadTotalLen));
        // IHL 6: the TCP header is still at 20, the payload length accounts for 24 bytes.
        let mut m = SYN_ACK;
        m[0] = 0x46;
        m[2..4].copy_from_slice(&70u16.to_be_bytes());
        assert_eq!(ResponseHeader::parse(&m).unwrap().payload_len, 6);
        // A data offset of 15 reads only the 24 option bytes carried.
        let mut m = SYN_ACK;
        m[32] = 0xf0;
        m[2..4].copy_from_slice(&80u16.to_be_bytes());
        let h = ResponseHeader::parse(&m).unwrap();
        assert_eq!((h.payload_len, h.window_scale), (0, Some(10)));
        // A bad option length stops the walk.
        let mut m = SYN_ACK;
        m[41] = 1;
        let h = ResponseHeader::parse(&m).unwrap();
        assert_eq!((h.mss, h.timestamps), (None, None));
    }

    #[test]
    fn encode_round_trips() {
        let h = ResponseHeader::parse(&SYN_ACK).unwrap();
        assert_eq!(ResponseHeader::parse(&h.to_bytes()), Ok(h));
        let h = ResponseHeader { timestamps: None, window_scale: None, mss: None, total_len: 40, ..h };
        assert_eq!(ResponseHeader::parse(&h.to_bytes()), Ok(h));
    }
}
