//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A checksum is built in three steps: [`sum`] accumulates 16-bit big-endian words into a
//! `u32` partial sum (callers chain partial sums through `initial`, e.g. starting from
//! [`pseudo_header_v4`]); [`fold`] adds the carries back in; [`finish`] complements the folded
//! sum into the value stored in the header. A received header verifies when the folded sum over
//! it (checksum field included) is `0xffff`.
//!
//! After rewriting a few header words, [`update_u16`], [`update_u32`] and [`update_bytes`] patch
//! the stored checksum without touching the rest of the packet, using RFC 1624 eqn. 3, which
//! gives exactly what a full recomputation gives (never the `0xffff` form of zero).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Add `data` as big-endian 16-bit words to the partial sum `initial`.
///
/// An odd trailing byte is summed as if followed by a zero byte (RFC 1071), so only the last
/// chunk of a chained sum may have an odd length. The result is at most `0x1fffe`; chain it
/// as `initial`, or pass it to [`fold`] / [`finish`].
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // RFC 1071 2(B) "Byte Order Independence": the sum of byte-swapped 16-bit words is the
    // byte-swapped sum, so add native-endian words and swap once at the end.
    // RFC 1071 2(C) "Parallel Summation": on machines with word sizes that are multiples of
    // 16 bits, it is possible to develop even more efficient implementations. Here: 32-bit words
    // into a 64-bit accumulator, which cannot overflow below 16 GiB of data, so the loop has no
    // carry handling (and vectorizes); 2^32 - 1 is a multiple of 2^16 - 1, so folding the
    // 32-bit words down to 16 bits preserves the ones'-complement sum.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            + u64::from(u32::from_ne_bytes([c[4], c[5], c[6], c[7]]))
            + u64::from(u32::from_ne_bytes([c[8], c[9], c[10], c[11]]))
            + u64::from(u32::from_ne_bytes([c[12], c[13], c[14], c[15]]));
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_ne_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        // RFC 1071 4.1: "Add left-over byte, if any" -- as the high byte of a big-endian word.
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    let native = fold64(acc);
    u32::from(u16::from_be(native)) + u32::from(fold(initial))
}

/// Fold a 64-bit ones'-complement accumulator to 16 bits.
#[inline]
fn fold64(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    fold(acc as u32)
}

/// Fold the carries of a partial sum back into its low 16 bits (end-around carry).
#[inline]
pub fn fold(mut sum: u32) -> u16 {
    // RFC 1071 4.1: "Fold 32-bit sum to 16 bits: while (sum>>16) sum = (sum & 0xffff) + (sum >> 16);"
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Return the checksum field value for a partial sum: the complement of its fold.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Return the checksum field value for `data` alone (e.g. an IPv4 header with a zero field).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// Return the partial sum of the IPv4 pseudo header (RFC 793: src, dst, zero, proto, length).
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let (s, d) = (u32::from(src), u32::from(dst));
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(proto) + u32::from(len)
}

/// Return the partial sum of the IPv6 pseudo header (RFC 8200 8.1: src, dst, length, next header).
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let words = src.segments().into_iter().chain(dst.segments());
    words.map(u32::from).sum::<u32>() + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

/// Patch checksum field `csum` after a 16-bit word changed from `old` to `new`.
#[inline]
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// Patch checksum field `csum` after an aligned 32-bit value changed from `old` to `new`.
#[inline]
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    // RFC 1624 eqn. 3 applied to both 16-bit halves at once:
    // HC' = ~(~HC + ~m_hi + ~m_lo + m'_hi + m'_lo)
    let not_old = !old;
    !fold(u32::from(!csum) + (not_old >> 16) + (not_old & 0xffff) + (new >> 16) + (new & 0xffff))
}

/// Patch checksum field `csum` after the bytes `old` (at an even offset) were replaced by `new`.
///
/// # Panics
/// If `old` and `new` differ in length or have an odd length.
#[inline]
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    assert!(old.len() == new.len() && old.len().is_multiple_of(2), "update_bytes needs equal even lengths");
    // RFC 1624 eqn. 3 with m the ones'-complement sum of the old words, m' of the new:
    // HC' = ~(~HC + ~m + m')
    !fold(u32::from(!csum) + u32::from(!fold(sum(old, 0))) + sum(new, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::XorShift;

    /// RFC 1071 4.1, word by word: the plain reference the fast sum is tested against.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            s += hi | lo;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_lengths_and_edges() {
        assert_eq!(fold(sum(&[], 0)), 0);
        assert_eq!(fold(sum(&[0xab], 0)), 0xab00);
        assert_eq!(fold(sum(&[0xab, 0xcd, 0xef], 0)), 0x9ace); // 0xabcd + 0xef00 = 0x1_9acd
        assert_eq!(fold(sum(&[0xff; 4000], 0)), 0xffff);
        assert_eq!(fold(sum(&[], 0xffff_ffff)), 0xffff);
        assert_eq!(fold(0x1fffe), 0xffff);
        assert_eq!(fold(0x10000), 1);
    }

    #[test]
    fn fast_sum_matches_reference() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 2000];
        for len in 0..2000 {
            rng.fill(&mut buf[..len]);
            let initial = rng.next_u32();
            let expected = fold(u32::from(reference_sum(&buf[..len])) + u32::from(fold(initial)));
            assert_eq!(fold(sum(&buf[..len], initial)), expected, "len {len}");
            // Unaligned start.
            if len > 1 {
                assert_eq!(fold(sum(&buf[1..len], 0)), reference_sum(&buf[1..len]));
            }
        }
        // All-ones data stresses the accumulator's carries.
        let ones = [0xffu8; 1999];
        assert_eq!(fold(sum(&ones, 0)), reference_sum(&ones));
    }

    #[test]
    fn chained_sums_equal_one_sum() {
        let mut rng = XorShift(7);
        let mut buf = [0u8; 301];
        rng.fill(&mut buf);
        let whole = fold(sum(&buf, 0));
        for split in (0..buf.len()).step_by(2) {
            assert_eq!(fold(sum(&buf[split..], sum(&buf[..split], 0))), whole);
        }
    }

    #[test]
    fn pseudo_headers() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let bytes = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 40];
        assert_eq!(fold(pseudo_header_v4(s, d, 6, 40)), fold(sum(&bytes, 0)));

        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d6: Ipv6Addr = "fe80::ffff:ffff:ffff:ffff".parse().unwrap();
        let mut b6 = [0u8; 40];
        b6[..16].copy_from_slice(&s6.octets());
        b6[16..32].copy_from_slice(&d6.octets());
        b6[32..36].copy_from_slice(&70_000u32.to_be_bytes());
        b6[39] = 6;
        assert_eq!(fold(pseudo_header_v6(&s6, &d6, 6, 70_000)), fold(sum(&b6, 0)));
    }

    #[test]
    fn incremental_corner_cases() {
        // No change keeps a full-computation checksum as it is, including 0x0000.
        for c in [0x0000, 0x1234, 0xfffe] {
            assert_eq!(update_u16(c, 0xabcd, 0xabcd), c);
        }
        // A word of data 0x0000 (sum 0xffff -> checksum 0x0000) becoming 0x0001 and back.
        let data = [0xff, 0xff, 0x00, 0x00];
        let c0 = checksum(&data);
        assert_eq!(c0, 0x0000);
        let c1 = update_u16(c0, 0x0000, 0x0001);
        assert_eq!(c1, checksum(&[0xff, 0xff, 0x00, 0x01]));
        assert_eq!(update_u16(c1, 0x0001, 0x0000), 0x0000, "eqn. 3 never yields -0 (0xffff)");
        // 0xffff <-> 0x0000 is no change in ones'-complement arithmetic.
        assert_eq!(update_u16(0x1234, 0xffff, 0x0000), 0x1234);
        assert_eq!(update_u32(0x1234, 0xffff_0000, 0x0000_ffff), 0x1234);
    }

    /// Build a random IPv4 + TCP header pair with valid checksums; return (ip, tcp) bytes.
    fn random_headers(rng: &mut XorShift) -> ([u8; 20], [u8; 60]) {
        let mut ip = [0u8; 20];
        let mut tcp = [0u8; 60];
        rng.fill(&mut ip);
        rng.fill(&mut tcp);
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&80u16.to_be_bytes());
        ip[9] = 6;
        ip[10..12].fill(0);
        let c = checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        tcp[12] = 0x50;
        tcp_fill(&ip, &mut tcp);
        (ip, tcp)
    }

    fn tcp_fill(ip: &[u8; 20], tcp: &mut [u8; 60]) {
        let src = Ipv4Addr::from([ip[12], ip[13], ip[14], ip[15]]);
        let dst = Ipv4Addr::from([ip[16], ip[17], ip[18], ip[19]]);
        tcp[16..18].fill(0);
        let c = finish(sum(tcp, pseudo_header_v4(src, dst, 6, 60)));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
    }

    fn ip_fill(ip: &mut [u8; 20]) {
        ip[10..12].fill(0);
        let c = checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }

    fn csum_at(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    #[test]
    fn incremental_equals_full_on_random_headers() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let mut zero_results = 0;
        for round in 0..20_000 {
            let (mut ip, mut tcp) = random_headers(&mut rng);
            let (ip_c, tcp_c) = (csum_at(&ip, 10), csum_at(&tcp, 16));

            // New dst IP: touches the IP checksum and the TCP pseudo header.
            let old_dst = [ip[16], ip[17], ip[18], ip[19]];
            let new_dst = rng.next_u32().to_be_bytes();
            // New dst port, ack number, TTL.
            let old_port = u16::from_be_bytes([tcp[2], tcp[3]]);
            let mut new_port = rng.next_u16();
            let old_ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
            let new_ack = rng.next_u32();
            let old_ttl_proto = u16::from_be_bytes([ip[8], ip[9]]);
            let new_ttl_proto = (old_ttl_proto & 0x00ff) | ((rng.next_u16() & 0xff) << 8);

            // Every 4th round, pick the port so the full TCP checksum becomes 0x0000 exactly.
            if round % 4 == 0 {
                let mut probe = tcp;
                probe[2..4].fill(0);
                probe[8..12].copy_from_slice(&new_ack.to_be_bytes());
                probe[16..18].fill(0);
                let mut ip2 = ip;
                ip2[16..20].copy_from_slice(&new_dst);
                let src = Ipv4Addr::from([ip[12], ip[13], ip[14], ip[15]]);
                let s = fold(sum(&probe, pseudo_header_v4(src, Ipv4Addr::from(new_dst), 6, 60)));
                // Want s + port == 0xffff (ones'-complement) so the checksum is !0xffff == 0.
                new_port = !s;
            }

            ip[16..20].copy_from_slice(&new_dst);
            ip[8..10].copy_from_slice(&new_ttl_proto.to_be_bytes());
            tcp[2..4].copy_from_slice(&new_port.to_be_bytes());
            tcp[8..12].copy_from_slice(&new_ack.to_be_bytes());

            let ip_inc = update_u16(update_bytes(ip_c, &old_dst, &new_dst), old_ttl_proto, new_ttl_proto);
            let tcp_inc =
                update_u32(update_u16(update_bytes(tcp_c, &old_dst, &new_dst), old_port, new_port), old_ack, new_ack);

            ip_fill(&mut ip);
            tcp_fill(&ip, &mut tcp);
            assert_eq!(ip_inc, csum_at(&ip, 10), "ip, round {round}");
            assert_eq!(tcp_inc, csum_at(&tcp, 16), "tcp, round {round}");
            zero_results += usize::from(tcp_inc == 0);
        }
        assert!(zero_results >= 4000, "the 0x0000 corner case was exercised");
    }

    #[test]
    #[should_panic(expected = "equal even lengths")]
    fn update_bytes_rejects_odd() {
        update_bytes(0, &[1, 2, 3], &[4, 5, 6]);
    }
}
