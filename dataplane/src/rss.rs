//! Receive-side scaling in software: which worker a flow goes to when the offline feed, not a
//! NIC, spreads a capture file over the workers.
//!
//! A NIC hashes each TCP segment's (source address, destination address, source port,
//! destination port) with the Toeplitz function and a 40-byte key, and looks the hash up in an
//! indirection table (128 entries by default, filled `i % queues`): [`queue`] does exactly
//! that, so a file is spread the way a NIC configured with the same key would spread the live
//! traffic.
//!
//! The key is the **symmetric** one ([`SYMMETRIC_KEY`], `0x6d5a` repeated: Woo and Park, "Scalable
//! TCP Session Monitoring with Symmetric Receive-side Scaling"), with which the hash of a segment
//! and of its reply are equal. Both directions of a connection then land on the same worker:
//! a capture that holds the responses too (`--production-latency`) keeps each connection's
//! packets on one worker, in file order, as the kernel's own flow hash (symmetric, used to pick a
//! veth queue) did when the file was written into a veth. `ethtool -X IFACE hkey 6d:5a:...`
//! gives a NIC the same key. Not IP or not TCP: the addresses alone (IP), or queue 0.

use std::net::IpAddr;

/// The symmetric Toeplitz key: `0x6d5a` twenty times.
pub const SYMMETRIC_KEY: [u8; 40] = {
    let mut k = [0u8; 40];
    let mut i = 0;
    while i < 40 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// Entries of the default indirection table of common NICs (and of `ethtool -x`'s listing).
pub const INDIRECTION_ENTRIES: u32 = 128;

/// The Toeplitz hash of `input` under `key` (Microsoft's "RSS hashing functions"): for each
/// input bit from the most significant of `input[0]`, if it is set, XOR in the key's leftmost
/// 32 bits, then shift the key left by one. `input` is at most 36 bytes (IPv6 with ports).
pub fn toeplitz(key: &[u8; 40], input: &[u8]) -> u32 {
    debug_assert!(input.len() <= 36, "the key covers 36 input bytes");
    let mut result = 0u32;
    // The key's leftmost 32 bits, and the bits still to shift in, one byte at a time.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, byte) in input.iter().enumerate() {
        let next = key.get(i + 4).copied().unwrap_or(0);
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                result ^= window;
            }
            window = (window << 1) | u32::from((next >> (7 - bit)) & 1);
        }
    }
    result
}

/// The hash input of a TCP segment: source and destination address, source and destination
/// port, in packet order; returns the buffer and its used length.
fn tuple(src: IpAddr, dst: IpAddr, ports: Option<(u16, u16)>) -> ([u8; 36], usize) {
    let mut b = [0u8; 36];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        b[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            put(&s.octets());
            put(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            put(&s.octets());
            put(&d.octets());
        }
        // Not a packet; hash what there is.
        (s, d) => {
            put(&to_v6(s));
            put(&to_v6(d));
        }
    }
    if let Some((sp, dp)) = ports {
        put(&sp.to_be_bytes());
        put(&dp.to_be_bytes());
    }
    (b, n)
}

fn to_v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The symmetric Toeplitz hash of a TCP segment's 4-tuple.
pub fn hash(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> u32 {
    let (b, n) = tuple(src, dst, Some((src_port, dst_port)));
    toeplitz(&SYMMETRIC_KEY, &b[..n])
}

/// The queue (worker) of `queues` a segment with this 4-tuple goes to: its hash through the
/// default indirection table.
pub fn queue(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, queues: u32) -> u32 {
    (hash(src, dst, src_port, dst_port) % INDIRECTION_ENTRIES) % queues.max(1)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// The key of Microsoft's verification suite.
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca,
        0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b,
        0xbe, 0xac, 0x01, 0xfa,
    ];

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn microsoft_verification_vectors() {
        // "Verifying the RSS Hash Calculation": (destination, source) -> (IPv4 only, IPv4 + TCP).
        for (dst, dport, src, sport, ip_only, with_tcp) in [
            ("161.142.100.80", 1766, "66.9.149.187", 2794, 0x323e_8fc2, 0x51cc_c178),
            ("65.69.140.83", 4739, "199.92.111.2", 14230, 0xd718_262a, 0xc626_b0ea),
            ("12.22.207.184", 38024, "24.19.198.95", 12898, 0xd2d0_a5de, 0x5c2b_394a),
            ("209.142.163.6", 2217, "38.27.205.30", 48228, 0x8298_9176, 0xafc7_327f),
            ("202.188.127.2", 1303, "153.39.163.191", 44251, 0x5d18_09c5, 0x10e8_28a2),
        ] {
            let (b, n) = tuple(v4(src), v4(dst), None);
            assert_eq!(toeplitz(&MS_KEY, &b[..n]), ip_only, "{src} -> {dst}");
            let (b, n) = tuple(v4(src), v4(dst), Some((sport, dport)));
            assert_eq!(toeplitz(&MS_KEY, &b[..n]), with_tcp, "{src}:{sport} -> {dst}:{dport}");
        }
    }

    #[test]
    fn both_directions_hash_alike() {
        let (c, s) = (v4("10.201.1.1"), v4("10.201.1.2"));
        for port in [1024, 40_000, 65_535] {
            assert_eq!(hash(c, s, port, 80), hash(s, c, 80, port));
        }
        let (c6, s6): (IpAddr, IpAddr) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        assert_eq!(hash(c6, s6, 40_000, 443), hash(s6, c6, 443, 40_000));
    }

    #[test]
    fn flows_spread_over_the_queues() {
        let mut per = [0u32; 4];
        for port in 0..4000u16 {
            per[queue(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), v4("10.0.0.2"), 30_000 + port, 80, 4) as usize] += 1;
        }
        assert!(per.iter().all(|n| (700..1300).contains(n)), "{per:?}");
        assert_eq!(queue(v4("10.0.0.1"), v4("10.0.0.2"), 1, 2, 1), 0);
    }
}
