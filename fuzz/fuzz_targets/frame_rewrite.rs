//! Frame parsing plus the stateless rewrite: any bytes, parsed as a captured frame (Ethernet, one
//! VLAN tag, IPv4/IPv6, TCP) and, when they parse, rewritten towards a test server in both
//! checksum modes. Never a panic; a rewritten frame parses again, to the rewritten addresses,
//! and with `--checksum full` both checksums verify.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::rewrite::{apply, ChecksumMode, Rewrite};
use libfuzzer_sys::fuzz_target;
use wire::{ethernet::MacAddr, ipv4, ipv6, parse::parse, parse::Family, tcp};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(parsed)) = parse(data) else { return };
    let dst_ip = match parsed.family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
    };
    let rw = Rewrite {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        dst_ip,
        dst_port: 8080,
        src_ip: None,
    };
    for mode in [ChecksumMode::Full, ChecksumMode::Incremental] {
        let mut frame = data.to_vec();
        let Ok((start, len)) = apply(&mut frame, &parsed, &rw, mode) else { continue };
        let out = &frame[start..start + len];
        let again = parse(out).expect("a rewritten frame parses").expect("and is still TCP");
        assert_eq!((again.dst_ip, again.dst_port), (dst_ip, 8080));
        assert_eq!(again.vlan, None, "the tag is removed");
        if mode == ChecksumMode::Full {
            let l3 = &out[again.l3_offset..again.ip_end];
            let seg = &out[again.l4_offset..again.ip_end];
            let t = tcp::Packet::new_checked(seg).expect("TCP");
            match (again.src_ip, again.dst_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    assert!(ipv4::Packet::new_checked(l3).unwrap().verify_checksum());
                    assert!(t.verify_checksum_v4(s, d));
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let _ = ipv6::Packet::new_checked(l3).unwrap();
                    assert!(t.verify_checksum_v6(&s, &d));
                }
                _ => unreachable!("one family"),
            }
        }
    }
});
