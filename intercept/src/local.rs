//! `--local`: the traditional architecture, on the test server itself.
//!
//! The egress program (`dataplane::bpf::egress`) drops the test application's answers to copied
//! sessions at the interface's egress and puts their headers into a ring buffer; here each
//! record becomes the 64-byte header message of the channel, exactly as a frame captured on an
//! assist server would: IP header with the original total length, TCP header, up to 24 option
//! bytes.
//!
//! # GSO
//!
//! At egress a segment may still be a GSO super-segment (TSO, or software GSO before the
//! driver): one skb, one IP header whose total length covers every wire segment it will become.
//! Up to 64 KiB it goes out as *one* message with that total length: the copier's ack translation
//! only needs sequence number + payload length, which come out the same as for the wire
//! segments' last one, and one message per skb is what makes this path cheap. A super-segment
//! longer than a total length can say (IPv4 BIG TCP writes total length 0 and relies on the skb
//! length) is cut into messages of whole segments of at most 64 KiB each, with consecutive
//! sequence numbers; FIN and PSH stay on the last. IPv6 is the same with the payload length
//! (IPv6 BIG TCP writes 0 there, and the intercept cuts by the skb's length). The copier's side
//! of it (a 64 KiB header is a
//! "full" response segment, the delayed ACK covers it whole, and the response is not taken as
//! complete while the test server still has data queued) is tested in the session engine.

use control::channel::{proto::HeaderError, HeaderMsg};
use dataplane::bpf::egress::Record;
use dataplane::wire::{ipv4, ipv6, tcp};

/// Largest IPv4 total length (and IPv6 payload length).
const MAX_TOTAL: u32 = 65_535;

/// Turns one ring record into header messages (one, unless the super-segment is longer than 64
/// KiB: see the module docs), handing each to `emit`; returns how many.
///
/// # Errors
/// [`HeaderError`] when the record's headers are not a complete IPv4 + TCP header.
pub fn headers_of(rec: &Record<'_>, mut emit: impl FnMut(HeaderMsg)) -> Result<usize, HeaderError> {
    let hdr = rec.headers;
    let v6 = hdr.first().is_some_and(|b| b >> 4 == 6);
    // The IP header's length and its length field (IPv4: total length; IPv6, whose egress
    // records have TCP right after the fixed header: payload length), 0 meaning "take the
    // skb's" (BIG TCP).
    let (l3, declared) = if v6 {
        if hdr.len() < ipv6::HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        let ip = ipv6::Packet::new_unchecked(hdr);
        (ipv6::HEADER_LEN as u32, u32::from(ip.payload_len()))
    } else {
        let ip = ipv4::Packet::new_checked_header(hdr).map_err(|_| HeaderError::Truncated)?;
        (u32::from(ip.header_len()), u32::from(ip.total_len()))
    };
    // Writes the length field for `tcp_len` bytes of TCP header and payload after the IP header.
    let set_len = |b: &mut [u8], tcp_len: u32, checksum: bool| {
        if v6 {
            ipv6::Packet::new_unchecked(b).set_payload_len(tcp_len as u16);
        } else {
            let mut ip = ipv4::Packet::new_unchecked(b);
            ip.set_total_len((l3 + tcp_len) as u16);
            if checksum {
                ip.fill_checksum();
            }
        }
    };
    // IPv4's length field counts its header, IPv6's does not.
    let room = if v6 { MAX_TOTAL } else { MAX_TOTAL - l3 };
    let tcp_and_payload = rec.len.checked_sub(l3);
    if v6 && tcp_and_payload.is_none() {
        return Err(HeaderError::BadTotalLen);
    }
    if declared != 0 || tcp_and_payload.is_none_or(|n| n <= room) {
        if declared != 0 {
            emit(HeaderMsg::from_packet(hdr)?);
            return Ok(1);
        }
        // Length 0 under 64 KiB: take the skb's.
        let mut buf = [0u8; dataplane::bpf::egress::HDR_MAX];
        let b = &mut buf[..hdr.len()];
        b.copy_from_slice(hdr);
        set_len(b, rec.len.wrapping_sub(l3), false);
        emit(HeaderMsg::from_packet(b)?);
        return Ok(1);
    }
    let tcp_and_payload = tcp_and_payload.ok_or(HeaderError::BadTotalLen)?;
    let seg = hdr.get(l3 as usize..).ok_or(HeaderError::Truncated)?;
    let t = tcp::Packet::new_checked(seg).map_err(|_| HeaderError::Truncated)?;
    let doff = u32::from(t.header_len());
    let (seq, flags) = (t.seq_number(), t.flags());
    let payload = tcp_and_payload.checked_sub(doff).ok_or(HeaderError::BadTotalLen)?;
    let room = room - doff;
    let mss = u32::from(rec.gso_size);
    let chunk = if mss > 0 && mss <= room { room / mss * mss } else { room };
    let mut buf = [0u8; dataplane::bpf::egress::HDR_MAX];
    let b = &mut buf[..hdr.len()];
    let (mut done, mut n) = (0u32, 0);
    while done < payload {
        let len = chunk.min(payload - done);
        let last = done + len == payload;
        b.copy_from_slice(hdr);
        set_len(b, doff + len, true);
        let mut t = tcp::Packet::new_unchecked(&mut b[l3 as usize..]);
        t.set_seq_number(seq.wrapping_add(done));
        if !last {
            t.set_flags(flags & !(tcp::flags::FIN | tcp::flags::PSH));
        }
        emit(HeaderMsg::from_packet(b)?);
        done += len;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::wire::tcp::flags::{ACK, FIN, PSH};

    /// IPv4 (20 bytes, total length `total`) + TCP with timestamps (32 bytes), from
    /// 10.0.0.2:8080 to 10.0.0.1:40000.
    fn headers(total: u16, seq: u32, flags: u8) -> Vec<u8> {
        let mut b = vec![0u8; 52];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&total.to_be_bytes());
        b[6] = 0x40;
        b[8] = 64;
        b[9] = 6;
        b[12..16].copy_from_slice(&[10, 0, 0, 2]);
        b[16..20].copy_from_slice(&[10, 0, 0, 1]);
        let t = &mut b[20..];
        t[..2].copy_from_slice(&8080u16.to_be_bytes());
        t[2..4].copy_from_slice(&40000u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&7u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&502u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 5]);
        b
    }

    fn all(rec: &Record<'_>) -> Vec<HeaderMsg> {
        let mut v = Vec::new();
        headers_of(rec, |m| v.push(m)).unwrap();
        v
    }

    #[test]
    fn a_plain_segment_is_one_message_with_its_total_length() {
        let h = headers(52 + 100, 1000, ACK | PSH);
        let m = all(&Record { len: 152, gso_segs: 1, gso_size: 0, headers: &h });
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].total_len(), m[0].payload_len(), m[0].seq()), (152, 100, 1000));
        assert_eq!(m[0].as_bytes()[..52], h[..]);
    }

    #[test]
    fn a_gso_super_segment_up_to_64k_is_one_message_covering_it_all() {
        // 44 segments of 1448 bytes: what TSO hands the driver in one skb.
        let len = 52 + 44 * 1448;
        let h = headers(len as u16, 5, ACK);
        let m = all(&Record { len, gso_segs: 44, gso_size: 1448, headers: &h });
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].payload_len(), 44 * 1448);
    }

    #[test]
    fn big_tcp_is_cut_into_whole_segments_with_fin_and_psh_on_the_last() {
        // 150 segments of 1448 bytes and a short tail, total length 0 (BIG TCP), FIN set.
        let payload = 150 * 1448 + 300;
        let len = 52 + payload;
        let h = headers(0, u32::MAX - 10, ACK | PSH | FIN);
        let m = all(&Record { len, gso_segs: 151, gso_size: 1448, headers: &h });
        let per = (65_535 - 52) / 1448 * 1448;
        assert_eq!(m.len(), payload.div_ceil(per) as usize);
        let mut seq = u32::MAX - 10;
        let mut sum = 0;
        for (i, msg) in m.iter().enumerate() {
            let last = i == m.len() - 1;
            assert_eq!(msg.seq(), seq, "message {i}: consecutive sequence numbers (wrapping)");
            assert!(last || msg.payload_len() as u32 == per, "whole segments but the last");
            assert_eq!(msg.flags() & (FIN | PSH) != 0, last, "FIN and PSH on the last only");
            assert_eq!(msg.flags() & ACK, ACK);
            assert_eq!(msg.options()[..12], h[40..52], "options kept");
            let ip = ipv4::Packet::new_checked_header(&msg.as_bytes()[..20]).unwrap();
            assert!(ip.verify_checksum(), "IP checksum refreshed");
            seq = seq.wrapping_add(msg.payload_len() as u32);
            sum += msg.payload_len();
        }
        assert_eq!(sum as u32, payload);
    }

    #[test]
    fn a_zero_total_length_under_64k_takes_the_skb_length() {
        let h = headers(0, 1, ACK);
        let m = all(&Record { len: 52 + 10, gso_segs: 1, gso_size: 0, headers: &h });
        assert_eq!((m.len(), m[0].payload_len()), (1, 10));
    }

    #[test]
    fn broken_headers_are_errors() {
        let mut h = headers(152, 1, ACK);
        h[0] = 0x65;
        assert!(headers_of(&Record { len: 152, gso_segs: 1, gso_size: 0, headers: &h }, |_| {}).is_err());
        let h = headers(152, 1, ACK);
        assert!(headers_of(&Record { len: 152, gso_segs: 1, gso_size: 0, headers: &h[..30] }, |_| {}).is_err());
    }

    #[test]
    fn records_round_trip_through_their_encoding() {
        let h = headers(152, 1, ACK);
        let r = Record { len: 152, gso_segs: 3, gso_size: 1448, headers: &h };
        let mut b = [0u8; dataplane::bpf::egress::RECORD_LEN];
        r.encode(&mut b);
        assert_eq!(Record::parse(&b), Some(r));
        assert_eq!(Record::parse(&b[..10]), None);
    }

    /// IPv6 (40 bytes, payload length `plen`) + TCP with timestamps (32 bytes), from
    /// [2001:db8::2]:8080 to [2001:db8::1]:40000.
    fn headers6(plen: u16, seq: u32, flags: u8) -> Vec<u8> {
        let v4 = headers(0, seq, flags);
        let mut b = vec![0u8; 40];
        b[0] = 0x60;
        b[4..6].copy_from_slice(&plen.to_be_bytes());
        b[6] = 6;
        b[7] = 64;
        b[8..24].copy_from_slice(&"2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        b[24..40].copy_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        b.extend(&v4[20..]);
        b
    }

    #[test]
    fn ipv6_records_become_ipv6_messages() {
        let h = headers6(32 + 100, 1000, ACK | PSH);
        let m = all(&Record { len: 40 + 132, gso_segs: 1, gso_size: 0, headers: &h });
        assert_eq!(m.len(), 1);
        assert!(m[0].is_ipv6());
        assert_eq!(
            (m[0].payload_len(), m[0].seq(), m[0].client().to_string()),
            (100, 1000, "[2001:db8::1]:40000".into())
        );
        assert_eq!(m[0].as_bytes()[..72], h[..]);
        // Payload length 0 under 64 KiB: the skb's length.
        let h = headers6(0, 1, ACK);
        let m = all(&Record { len: 40 + 32 + 10, gso_segs: 1, gso_size: 0, headers: &h });
        assert_eq!((m.len(), m[0].payload_len()), (1, 10));
    }

    #[test]
    fn ipv6_big_tcp_is_cut_into_whole_segments() {
        let payload = 120 * 1428 + 7;
        let h = headers6(0, 5, ACK | PSH | FIN);
        let m = all(&Record { len: 40 + 32 + payload, gso_segs: 121, gso_size: 1428, headers: &h });
        let per = (65_535 - 32) / 1428 * 1428;
        assert_eq!(m.len(), payload.div_ceil(per) as usize);
        let mut seq = 5;
        for (i, msg) in m.iter().enumerate() {
            let last = i == m.len() - 1;
            assert!(msg.is_ipv6());
            assert_eq!(msg.seq(), seq);
            assert_eq!(msg.flags() & (FIN | PSH) != 0, last);
            seq = seq.wrapping_add(msg.payload_len() as u32);
        }
        assert_eq!(seq - 5, payload);
    }
}
