//! The response header intercept returns for every test-server packet (reference §4.3).
//!
//! A 64-byte channel message, [`HeaderMsg`]: the response's first 20 IPv4 header bytes with
//! the *original* total length (so the payload length is known without the payload), the fixed
//! 20-byte TCP header, and up to 24 option bytes, zero-filled; or, for an IPv6 session
//! (protocol 7), an 84-byte one: the IPv6 header with the original payload length, then the same
//! TCP part. Its layout and the checks on it live in `control`'s codec; here it becomes the
//! fields the engine uses, its options read by the one option walker
//! ([`HeaderMsg::tcp_options`]). IP options are not carried: a header whose IHL says 6 still has
//! its TCP header at byte 20, and the payload length is `total_len - ihl * 4 - data_offset * 4`.
//! The protocol byte is not checked (intercept sends TCP only).

use std::net::SocketAddr;

use control::channel::proto::{HEADER_MSG6_LEN, HEADER_MSG_LEN};
use control::channel::HeaderMsg;

use crate::wire::tcp::{self, TcpOption};
use crate::wire::{ipv4, ipv6, Result, IPPROTO_TCP};

/// The fields the engine needs from a returned response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The responder: the test server's address and port.
    pub src: SocketAddr,
    /// The response's destination: the client's address and port (the session key).
    pub dst: SocketAddr,
    /// IP length of the original packet: IPv4 total length, or 40 + IPv6 payload length.
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

impl ResponseHeader {
    /// Parse a 64-byte (IPv4) channel message.
    ///
    /// # Errors
    /// Those of [`HeaderMsg::check`]: [`Error::BadVersion`](crate::wire::Error::BadVersion) if
    /// the IP version is not 4, `BadHeaderLen` for an IHL below 5, `BadDataOffset` for a data
    /// offset below 5, `BadTotalLen` if the total length is shorter than both headers. The
    /// option walk stops at `EOL` or a malformed option, keeping what it read before: that is
    /// not an error.
    pub fn parse(msg: &[u8; HEADER_MSG_LEN]) -> Result<ResponseHeader> {
        Self::from_msg(&HeaderMsg::from_bytes(*msg))
    }

    /// Read a channel message; see [`ResponseHeader::parse`].
    ///
    /// # Errors
    /// See [`ResponseHeader::parse`].
    pub fn from_msg(msg: &HeaderMsg) -> Result<ResponseHeader> {
        msg.check()?;
        let mut h = ResponseHeader {
            src: msg.target(),
            dst: msg.client(),
            total_len: msg.total_len(),
            // At most the total length: checked above to cover both headers.
            payload_len: msg.payload_len() as u16,
            seq: msg.seq(),
            ack: msg.ack(),
            flags: msg.flags(),
            window: msg.window(),
            timestamps: None,
            window_scale: None,
            mss: None,
        };
        for option in msg.tcp_options().map_while(core::result::Result::ok) {
            match option {
                TcpOption::Mss(mss) => h.mss = Some(mss),
                TcpOption::WindowScale(shift) => h.window_scale = Some(shift),
                TcpOption::Timestamps { tsval, tsecr } => h.timestamps = Some((tsval, tsecr)),
                _ => {}
            }
        }
        Ok(h)
    }

    /// Return whether every bit of `flags` is set.
    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags == flags
    }

    /// Return the sequence space the response occupies: payload, plus one for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        u32::from(self.payload_len) + u32::from(self.has(tcp::flags::SYN)) + u32::from(self.has(tcp::flags::FIN))
    }

    /// Encode the header as intercept would for a packet without IP options or extension headers
    /// (whose message is its first 64, or 84, bytes): see [`ResponseHeader::to_bytes`]; IPv6 with
    /// traffic class and flow label 0, hop limit 64.
    pub fn to_msg(&self) -> HeaderMsg {
        match (self.src, self.dst) {
            (SocketAddr::V6(src), SocketAddr::V6(dst)) => {
                let mut m = [0u8; HEADER_MSG6_LEN];
                let (ip, seg) = m.split_at_mut(ipv6::HEADER_LEN);
                self.tcp_part(seg);
                let mut ip = ipv6::Packet::new_unchecked(ip);
                ip.set_version(6);
                ip.set_payload_len(self.total_len.saturating_sub(ipv6::HEADER_LEN as u16));
                ip.set_next_header(IPPROTO_TCP);
                ip.set_hop_limit(64);
                ip.set_src_addr(*src.ip());
                ip.set_dst_addr(*dst.ip());
                HeaderMsg::from_bytes6(m)
            }
            _ => HeaderMsg::from_bytes(self.to_bytes()),
        }
    }

    /// Encode the header as intercept would for an IPv4 packet without IP options (whose message
    /// is its first 64 bytes): IHL 5, DF, TTL 64, the original total length, the options we know
    /// (MSS; NOP, window scale; NOP, NOP, timestamps), zero padding, checksums left zero. The
    /// addresses are zero unless IPv4 (use [`ResponseHeader::to_msg`] for IPv6).
    pub fn to_bytes(&self) -> [u8; HEADER_MSG_LEN] {
        let mut m = [0u8; HEADER_MSG_LEN];
        let (ip, seg) = m.split_at_mut(ipv4::MIN_HEADER_LEN);
        self.tcp_part(seg);
        let mut ip = ipv4::Packet::new_unchecked(ip);
        ip.set_version(4);
        ip.set_header_len(ipv4::MIN_HEADER_LEN as u8);
        ip.set_total_len(self.total_len);
        ip.set_dont_frag(true);
        ip.set_ttl(64);
        ip.set_protocol(IPPROTO_TCP);
        if let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (self.src, self.dst) {
            ip.set_src_addr(*src.ip());
            ip.set_dst_addr(*dst.ip());
        }
        m
    }

    /// Write the TCP header and its options into `seg` (44 bytes).
    fn tcp_part(&self, seg: &mut [u8]) {
        let opts = &mut seg[tcp::MIN_HEADER_LEN..];
        let mut opt_len = 0;
        if let Some(mss) = self.mss {
            opt_len += TcpOption::Mss(mss).emit(opts);
        }
        if let Some(shift) = self.window_scale {
            opt_len += tcp::emit_options(&[TcpOption::Nop, TcpOption::WindowScale(shift)], &mut opts[opt_len..]);
        }
        if let Some((tsval, tsecr)) = self.timestamps {
            let ts = [TcpOption::Nop, TcpOption::Nop, TcpOption::Timestamps { tsval, tsecr }];
            opt_len += tcp::emit_options(&ts, &mut opts[opt_len..]);
        }
        let mut t = tcp::Packet::new_unchecked(seg);
        t.set_src_port(self.src.port());
        t.set_dst_port(self.dst.port());
        t.set_seq_number(self.seq);
        t.set_ack_number(self.ack);
        t.set_header_len((tcp::MIN_HEADER_LEN + opt_len) as u8);
        t.set_flags(self.flags);
        t.set_window(self.window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::flags::{ACK, FIN, PSH, SYN};
    use crate::wire::testdata::XorShift;
    use crate::wire::Error;
    use control::channel::proto::MAX_OPTION_LEN;

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
    fn ipv6_messages_parse_and_round_trip() {
        // The IPv6 SYN-ACK of an IPv6 session: 84 bytes, payload length 40 (TCP header only).
        let v4 = ResponseHeader::parse(&SYN_ACK).unwrap();
        let h = ResponseHeader {
            src: "[2001:db8::3]:8080".parse().unwrap(),
            dst: "[2001:db8::2]:50426".parse().unwrap(),
            total_len: 80,
            ..v4
        };
        let m = h.to_msg();
        assert!(m.is_ipv6());
        assert_eq!(m.as_bytes().len(), 84);
        assert_eq!(&m.as_bytes()[..8], &[0x60, 0, 0, 0, 0, 40, 6, 64]);
        assert_eq!(ResponseHeader::from_msg(&m), Ok(h));
        assert_eq!((h.payload_len, h.seq_len()), (0, 1));
        // 1000 bytes of payload: the IPv6 payload length counts the TCP header (40 with MSS,
        // window scale and timestamps) and the data.
        let d = ResponseHeader { total_len: 40 + 40 + 1000, payload_len: 1000, flags: ACK | PSH, ..h };
        let m = d.to_msg();
        assert_eq!(u16::from_be_bytes([m.as_bytes()[4], m.as_bytes()[5]]), 40 + 1000);
        assert_eq!(ResponseHeader::from_msg(&m).map(|x| x.payload_len), Ok(1000));
        assert_eq!(m.as_bytes()[40..42], 8080u16.to_be_bytes());
    }

    #[test]
    fn encode_round_trips() {
        let h = ResponseHeader::parse(&SYN_ACK).unwrap();
        assert_eq!(ResponseHeader::parse(&h.to_bytes()), Ok(h));
        let h = ResponseHeader { timestamps: None, window_scale: None, mss: None, total_len: 40, ..h };
        assert_eq!(ResponseHeader::parse(&h.to_bytes()), Ok(h));
    }

    /// Options a response may carry: (bytes, what the parser keeps of them).
    #[allow(clippy::type_complexity)]
    const MENU: [(&[u8], Option<u16>, Option<u8>, Option<(u32, u32)>); 7] = [
        (&[2, 4, 0x05, 0xb4], Some(1460), None, None),
        (&[1, 3, 3, 9], None, Some(9), None),
        (&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6], None, None, Some((5, 6))),
        (&[4, 2], None, None, None),
        (&[5, 10, 0, 0, 0, 1, 0, 0, 0, 2], None, None, None),
        (&[2, 3, 7], None, None, None), // an MSS of length 3: skipped, the walk goes on
        (&[1], None, None, None),
    ];

    #[test]
    fn codec_and_parser_agree_on_random_headers() {
        let mut rng = XorShift(0x0bad_5eed_1234_5678);
        for round in 0..20_000 {
            // A captured response: random fields, IP options sometimes, TCP options from the
            // menu (the expected values noted as long as they fit the 24 carried bytes), an
            // EOL, random padding, no payload.
            let mut p = [0u8; 60 + 60];
            rng.fill(&mut p);
            let ihl = 20 + 4 * rng.below(3);
            let mut opts = [0u8; 40];
            rng.fill(&mut opts);
            let (mut n, mut want) = (0, (None, None, None));
            while rng.below(4) != 0 {
                let (bytes, mss, ws, ts) = MENU[rng.below(MENU.len())];
                if n + bytes.len() > 39 {
                    break;
                }
                opts[n..n + bytes.len()].copy_from_slice(bytes);
                n += bytes.len();
                if n <= MAX_OPTION_LEN {
                    want = (mss.or(want.0), ws.or(want.1), ts.or(want.2));
                }
            }
            opts[n] = 0;
            let doff = 20 + (n + 1).next_multiple_of(4);
            p[ihl + 20..ihl + doff].copy_from_slice(&opts[..doff - 20]);
            let payload = rng.below(1500);
            {
                let mut ip = ipv4::Packet::new_unchecked(&mut p[..ihl]);
                ip.set_version(4);
                ip.set_header_len(ihl as u8);
                ip.set_total_len((ihl + doff + payload) as u16);
                ip.set_frag_offset(0);
                ip.set_protocol(IPPROTO_TCP);
                tcp::Packet::new_unchecked(&mut p[ihl..ihl + doff]).set_header_len(doff as u8);
            }
            let packet = &p[..ihl + doff];
            let msg = HeaderMsg::from_packet(packet).unwrap();
            let h = ResponseHeader::from_msg(&msg).unwrap();
            assert_eq!(ResponseHeader::parse(msg.as_bytes().try_into().unwrap()), Ok(h));

            // The codec's getters and the parser's fields, and both against the packet.
            let ip = ipv4::Packet::new_checked_header(packet).unwrap();
            let t = tcp::Packet::new_checked(&packet[ihl..]).unwrap();
            assert_eq!(h.src, msg.target());
            assert_eq!(h.src, SocketAddr::from((ip.src_addr(), t.src_port())));
            assert_eq!(h.dst, msg.client());
            assert_eq!(h.dst, SocketAddr::from((ip.dst_addr(), t.dst_port())));
            assert_eq!((h.seq, h.ack, h.flags, h.window), (msg.seq(), msg.ack(), msg.flags(), msg.window()));
            assert_eq!((h.seq, h.ack, h.flags, h.window), (t.seq_number(), t.ack_number(), t.flags(), t.window()));
            // IP options are dropped from the message and from its total length.
            let total_len = ip.total_len() - (ihl as u16 - 20);
            assert_eq!((h.total_len, msg.total_len()), (total_len, total_len));
            assert_eq!((usize::from(h.payload_len), msg.payload_len()), (payload, payload), "round {round}");
            assert_eq!((h.mss, h.window_scale, h.timestamps), want, "round {round}: {:?}", msg.options());
        }
    }

    #[test]
    fn codec_and_parser_agree_on_random_bytes() {
        let mut rng = XorShift(0xfeed_f00d);
        let mut ok = 0;
        for _ in 0..50_000 {
            let mut m = [0u8; 64];
            rng.fill(&mut m);
            // Mostly plausible first bytes, so that both outcomes are common.
            if rng.below(4) != 0 {
                m[0] = 0x45 + rng.below(2) as u8;
                m[32] = (5 + rng.below(11) as u8) << 4;
                m[2] = 0;
            }
            let msg = HeaderMsg::from_bytes(m);
            match ResponseHeader::parse(&m) {
                Ok(h) => {
                    ok += 1;
                    assert_eq!(msg.check(), Ok(()));
                    assert_eq!((h.src, h.dst, h.total_len), (msg.target(), msg.client(), msg.total_len()));
                    assert_eq!((h.seq, h.ack, h.flags, h.window), (msg.seq(), msg.ack(), msg.flags(), msg.window()));
                    assert_eq!(usize::from(h.payload_len), msg.payload_len());
                    let ihl = usize::from(m[0] & 0x0f) * 4;
                    let doff = usize::from(m[32] >> 4) * 4;
                    assert_eq!(usize::from(h.payload_len), usize::from(u16::from_be_bytes([m[2], m[3]])) - ihl - doff);
                }
                Err(e) => assert_eq!(msg.check(), Err(e)),
            }
        }
        assert!(ok > 10_000, "{ok} parsed");
    }
}
