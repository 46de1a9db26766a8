//! Pcap verifier: reads a capture written by `tcpdump -w` and summarises what it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Context, Result};
use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;

use crate::frames::{parse_frame, MacAddr};

/// A TCP flow as the verifier groups frames: (source IP, destination IP, destination port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dst_port: u16,
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}:{}", self.src, self.dst, self.dst_port)
    }
}

/// Summary of a capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcapSummary {
    pub frames: u64,
    pub bytes: u64,
    /// Frames captured shorter than they were on the wire (snaplen).
    pub snapped: u64,
    pub ipv4: u64,
    pub ipv6: u64,
    pub vlan: u64,
    pub tcp: u64,
    /// Frames that are not IPv4/IPv6 (ARP, ...).
    pub non_ip: u64,
    /// Frames with inconsistent L3/L4 headers (bad ihl/doff/lengths).
    pub malformed: u64,
    /// TCP frames per (src ip, dst ip, dst port).
    pub flows: BTreeMap<FlowKey, u64>,
    pub bad_ip_csum: u64,
    pub bad_tcp_csum: u64,
    pub src_macs: BTreeSet<MacAddr>,
    pub dst_macs: BTreeSet<MacAddr>,
    /// Frame size (as captured) -> count.
    pub sizes: BTreeMap<usize, u64>,
    /// Payload sequence marker -> times seen.
    pub seqs: BTreeMap<u32, u64>,
    /// Frames whose marker was found but whose payload pattern was damaged.
    pub bad_pattern: u64,
}

impl PcapSummary {
    /// Reads and summarises a pcap file (Ethernet link type).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut reader =
            PcapReader::new(BufReader::new(file)).with_context(|| format!("read pcap header of {}", path.display()))?;
        let dl = reader.header().datalink;
        if dl != DataLink::ETHERNET {
            bail!("{}: link type {dl:?}, expected Ethernet", path.display());
        }
        let mut s = PcapSummary::default();
        while let Some(pkt) = reader.next_packet() {
            let pkt = pkt.with_context(|| format!("read packet from {}", path.display()))?;
            s.add_frame(&pkt.data, pkt.orig_len);
        }
        Ok(s)
    }

    /// Adds one captured frame (`orig_len` = length on the wire).
    pub fn add_frame(&mut self, data: &[u8], orig_len: u32) {
        self.frames += 1;
        self.bytes += u64::from(orig_len);
        let snapped = (orig_len as usize) > data.len();
        if snapped {
            self.snapped += 1;
        }
        let p = parse_frame(data);
        *self.sizes.entry(data.len()).or_default() += 1;
        self.src_macs.insert(p.src_mac);
        self.dst_macs.insert(p.dst_mac);
        if p.vlan.is_some() {
            self.vlan += 1;
        }
        match p.src_ip {
            Some(IpAddr::V4(_)) => self.ipv4 += 1,
            Some(IpAddr::V6(_)) => self.ipv6 += 1,
            None => {
                if p.len >= 14 {
                    self.non_ip += 1;
                }
            }
        }
        if p.malformed {
            self.malformed += 1;
        }
        if p.ip_csum_ok == Some(false) {
            self.bad_ip_csum += 1;
        }
        if p.is_tcp {
            self.tcp += 1;
            if p.tcp_csum_ok == Some(false) && !snapped {
                self.bad_tcp_csum += 1;
            }
            if let (Some(src), Some(dst), Some(dst_port)) = (p.src_ip, p.dst_ip, p.dst_port) {
                *self.flows.entry(FlowKey { src, dst, dst_port }).or_default() += 1;
            }
        }
        if let Some((seq, ok)) = p.marker {
            *self.seqs.entry(seq).or_default() += 1;
            if !ok && !snapped {
                self.bad_pattern += 1;
            }
        }
    }

    /// Sequence numbers in `expected` that were not seen.
    pub fn missing(&self, expected: Range<u32>) -> Vec<u32> {
        expected.filter(|s| !self.seqs.contains_key(s)).collect()
    }

    /// Sequence numbers seen more than once, with their counts.
    pub fn duplicates(&self) -> Vec<(u32, u64)> {
        self.seqs.iter().filter(|(_, &n)| n > 1).map(|(&s, &n)| (s, n)).collect()
    }

    /// Sequence numbers seen outside `expected`.
    pub fn unexpected(&self, expected: Range<u32>) -> Vec<u32> {
        self.seqs.keys().copied().filter(|s| !expected.contains(s)).collect()
    }

    /// Ok when every sequence number of `expected` was seen exactly once and no other.
    pub fn check_seqs_exactly(&self, expected: Range<u32>) -> Result<()> {
        let missing = self.missing(expected.clone());
        let dups = self.duplicates();
        let extra = self.unexpected(expected.clone());
        if missing.is_empty() && dups.is_empty() && extra.is_empty() {
            return Ok(());
        }
        bail!(
            "sequence check for {expected:?} failed: {} missing (first {:?}), {} duplicated \
             (first {:?}), {} unexpected (first {:?})",
            missing.len(),
            &missing[..missing.len().min(10)],
            dups.len(),
            &dups[..dups.len().min(10)],
            extra.len(),
            &extra[..extra.len().min(10)]
        )
    }

    /// Ok when no IPv4 header or TCP checksum was wrong and no pattern was damaged.
    pub fn check_checksums(&self) -> Result<()> {
        if self.bad_ip_csum == 0 && self.bad_tcp_csum == 0 && self.bad_pattern == 0 {
            return Ok(());
        }
        bail!(
            "{} bad IPv4 checksums, {} bad TCP checksums, {} damaged payloads",
            self.bad_ip_csum,
            self.bad_tcp_csum,
            self.bad_pattern
        )
    }
}

fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Compresses sorted numbers into ranges: `0-99, 101, 103-104`.
fn ranges(nums: impl IntoIterator<Item = u32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut cur: Option<(u32, u32)> = None;
    for n in nums {
        cur = match cur {
            Some((a, b)) if b.checked_add(1) == Some(n) => Some((a, n)),
            Some((a, b)) => {
                out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
                Some((n, n))
            }
            None => Some((n, n)),
        };
    }
    if let Some((a, b)) = cur {
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    out.join(", ")
}

impl fmt::Display for PcapSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "frames:        {} ({} bytes on the wire)", self.frames, self.bytes)?;
        writeln!(
            f,
            "kinds:         ipv4 {}, ipv6 {}, vlan {}, tcp {}, non-ip {}, malformed {}, snapped {}",
            self.ipv4, self.ipv6, self.vlan, self.tcp, self.non_ip, self.malformed, self.snapped
        )?;
        writeln!(
            f,
            "checksums:     bad ipv4 {}, bad tcp {}; damaged payloads {}",
            self.bad_ip_csum, self.bad_tcp_csum, self.bad_pattern
        )?;
        writeln!(f, "src macs:      {}", join(&self.src_macs))?;
        writeln!(f, "dst macs:      {}", join(&self.dst_macs))?;
        writeln!(f, "sizes:         {}", join(self.sizes.iter().map(|(s, n)| format!("{s}x{n}"))))?;
        let dups = self.duplicates();
        writeln!(
            f,
            "seqs:          {} distinct [{}], {} duplicated",
            self.seqs.len(),
            ranges(self.seqs.keys().copied()),
            dups.len()
        )?;
        writeln!(f, "flows:")?;
        for (k, n) in &self.flows {
            writeln!(f, "  {k}: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{build_frame, FrameKind, FrameSpec};

    #[test]
    fn summary_counts() {
        let spec = FrameSpec::default();
        let mut s = PcapSummary::default();
        for i in 0..10u32 {
            let f = build_frame(&spec, FrameKind::Good, 64 + i as usize, i).unwrap();
            s.add_frame(&f, f.len() as u32);
        }
        let mut bad = build_frame(&spec, FrameKind::Good, 100, 3).unwrap();
        bad[60] ^= 0xff; // payload byte: TCP checksum and pattern now wrong
        s.add_frame(&bad, bad.len() as u32);
        assert_eq!(s.frames, 11);
        assert_eq!(s.bad_tcp_csum, 1);
        assert_eq!(s.bad_ip_csum, 0);
        assert_eq!(s.bad_pattern, 1);
        assert_eq!(s.duplicates(), vec![(3, 2)]);
        assert!(s.missing(0..10).is_empty());
        assert_eq!(s.missing(0..12), vec![10, 11]);
        assert!(s.check_seqs_exactly(0..10).is_err());
        assert_eq!(s.flows.values().sum::<u64>(), 11);
        assert_eq!(ranges([0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
    }

    #[test]
    fn roundtrip_through_pcap_file() {
        use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
        let dir = std::env::temp_dir().join(format!("xdpc-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        {
            let file = File::create(&path).unwrap();
            let mut w =
                PcapWriter::with_header(file, PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() })
                    .unwrap();
            let spec = FrameSpec::default();
            for i in 0..5u32 {
                let f = build_frame(&spec, FrameKind::Good, 1514, i).unwrap();
                w.write_packet(&PcapPacket::new(Default::default(), f.len() as u32, &f)).unwrap();
            }
        }
        let s = PcapSummary::from_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.frames, 5);
        s.check_seqs_exactly(0..5).unwrap();
        s.check_checksums().unwrap();
        assert_eq!(s.sizes.get(&1514), Some(&5));
    }
}
