//! The offline source against capture files written with pcap-file's writers.

use std::borrow::Cow;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dataplane::offline::{OfflineError, PaceOptions, Packet, PcapSource, SourceStats};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter, RawPcapPacket};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, TsResolution};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xdpcopy-offline-{}-{n}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// An IPv4 + TCP SYN, 40 bytes, with a marker in the IP id.
fn ipv4_syn(id: u16) -> Vec<u8> {
    let mut p = vec![
        0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
        0xc3, 0x50, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0, // TCP
    ];
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p
}

/// An IPv6 + TCP ACK with 4 payload bytes, 64 bytes.
fn ipv6_ack(flow: u8) -> Vec<u8> {
    let mut p = vec![0x60, 0x00, 0x00, flow, 0x00, 0x18, 0x06, 0x40];
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&[0xc3, 0x50, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(b"ping");
    p
}

/// An Ethernet frame around `ip`, ethertype from its version.
fn ethernet(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(if ip[0] >> 4 == 4 { &[0x08, 0x00] } else { &[0x86, 0xdd] });
    f.extend_from_slice(ip);
    f
}

/// An 802.1Q-tagged Ethernet frame (VLAN 10) around an IPv4 packet.
fn ethernet_vlan(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

/// The frame the source must synthesize: zero MACs, the ethertype, then `ip` unchanged.
fn synthesized(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0; 12];
    f.extend_from_slice(if ip[0] >> 4 == 4 { &[0x08, 0x00] } else { &[0x86, 0xdd] });
    f.extend_from_slice(ip);
    f
}

/// A Linux cooked (SLL) record around `ip`.
fn sll(ip: &[u8]) -> Vec<u8> {
    let mut r = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    r.extend_from_slice(if ip[0] >> 4 == 4 { &[0x08, 0x00] } else { &[0x86, 0xdd] });
    r.extend_from_slice(ip);
    r
}

/// A Linux cooked v2 (SLL2) record around `ip`.
fn sll2(ip: &[u8]) -> Vec<u8> {
    let mut r = if ip[0] >> 4 == 4 { vec![0x08, 0x00] } else { vec![0x86, 0xdd] };
    r.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    r.extend_from_slice(ip);
    r
}

fn ts(secs: u64, nanos: u32) -> Duration {
    Duration::new(secs, nanos)
}

/// Write a pcap file of `records` (timestamp, record bytes).
fn write_pcap(
    path: &Path,
    linktype: u32,
    resolution: TsResolution,
    endianness: Endianness,
    records: &[(Duration, Vec<u8>)],
) {
    let header = PcapHeader {
        datalink: DataLink::from(linktype),
        ts_resolution: resolution,
        endianness,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
    for (t, data) in records {
        w.write_packet(&PcapPacket::new(*t, data.len() as u32, data)).unwrap();
    }
}

/// Read every packet; the frames and their metadata.
fn read_all(source: &mut PcapSource) -> Vec<(Packet, Vec<u8>)> {
    let mut frame = Vec::new();
    let mut out = Vec::new();
    while let Some(p) = source.next_into(&mut frame).unwrap() {
        assert_eq!(p.len, frame.len());
        out.push((p, frame.clone()));
    }
    out
}

fn frames(packets: &[(Packet, Vec<u8>)]) -> Vec<Vec<u8>> {
    packets.iter().map(|(_, f)| f.clone()).collect()
}

fn times(packets: &[(Packet, Vec<u8>)]) -> Vec<Duration> {
    packets.iter().map(|(p, _)| p.ts).collect()
}

fn open_err(path: &Path) -> String {
    match PcapSource::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ethernet_microseconds_big_endian() {
    let dir = TempDir::new("eth-us");
    let path = dir.path("eth.pcap");
    let recs = vec![
        (ts(1_764_000_000, 123_456_000), ethernet(&ipv4_syn(1))),
        (ts(1_764_000_000, 123_457_000), ethernet(&ipv6_ack(2))),
        (ts(1_764_000_002, 999_999_000), ethernet(&ipv4_syn(3))),
    ];
    write_pcap(&path, 1, TsResolution::MicroSecond, Endianness::Big, &recs);
    let mut source = PcapSource::open(&path).unwrap();
    let got = read_all(&mut source);
    assert_eq!(frames(&got), recs.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
    assert_eq!(times(&got), recs.iter().map(|r| r.0).collect::<Vec<_>>());
    assert_eq!(got[0].0.orig_len, 54);
    assert_eq!(source.position(), source.file_size());
    assert_eq!(source.stats().packets, 3);
    assert_eq!(source.stats().frame_bytes, 54 + 78 + 54);
    assert_eq!(source.truncation().map(|e| e.to_string()), None);
}

#[test]
fn ethernet_nanoseconds_little_endian_with_vlan() {
    let dir = TempDir::new("eth-ns");
    let path = dir.path("vlan.pcap");
    let recs = vec![
        (ts(1_764_000_000, 1), ethernet_vlan(&ipv4_syn(1))),
        (ts(1_764_000_000, 999_999_999), ethernet(&ipv4_syn(2))),
    ];
    write_pcap(&path, 1, TsResolution::NanoSecond, Endianness::Little, &recs);
    let got = read_all(&mut PcapSource::open(&path).unwrap());
    // The tag is kept as it is.
    assert_eq!(frames(&got), vec![recs[0].1.clone(), recs[1].1.clone()]);
    assert_eq!(times(&got), vec![recs[0].0, recs[1].0]);
}

#[test]
fn linux_cooked_sll_and_sll2() {
    let dir = TempDir::new("sll");
    let ips = [ipv4_syn(7), ipv6_ack(8)];
    for (linktype, wrap) in [(113, sll as fn(&[u8]) -> Vec<u8>), (276, sll2)] {
        let path = dir.path(&format!("sll-{linktype}.pcap"));
        let recs: Vec<_> = ips.iter().enumerate().map(|(i, ip)| (ts(100, i as u32 * 1000), wrap(ip))).collect();
        write_pcap(&path, linktype, TsResolution::MicroSecond, Endianness::Little, &recs);
        let got = read_all(&mut PcapSource::open(&path).unwrap());
        assert_eq!(frames(&got), vec![synthesized(&ips[0]), synthesized(&ips[1])], "link type {linktype}");
        assert_eq!(times(&got), vec![ts(100, 0), ts(100, 1000)]);
        // orig_len is the record's own length (with the cooked header).
        assert_eq!(got[0].0.orig_len as usize, recs[0].1.len());
    }
}

#[test]
fn raw_ip_link_types() {
    let dir = TempDir::new("raw");
    let ips = [ipv4_syn(1), ipv6_ack(2)];
    for linktype in [101, 12, 14] {
        let path = dir.path(&format!("raw-{linktype}.pcap"));
        let recs: Vec<_> = ips.iter().map(|ip| (ts(5, 0), ip.clone())).collect();
        write_pcap(&path, linktype, TsResolution::MicroSecond, Endianness::Big, &recs);
        let got = read_all(&mut PcapSource::open(&path).unwrap());
        assert_eq!(frames(&got), vec![synthesized(&ips[0]), synthesized(&ips[1])], "link type {linktype}");
    }
    for (linktype, ip) in [(228, &ips[0]), (229, &ips[1])] {
        let path = dir.path(&format!("raw-{linktype}.pcap"));
        write_pcap(&path, linktype, TsResolution::MicroSecond, Endianness::Big, &[(ts(5, 0), ip.clone())]);
        let got = read_all(&mut PcapSource::open(&path).unwrap());
        assert_eq!(frames(&got), vec![synthesized(ip)], "link type {linktype}");
    }
}

#[test]
fn raw_ip_that_is_not_ip_is_counted() {
    let dir = TempDir::new("raw-bad");
    let path = dir.path("raw.pcap");
    let recs = vec![(ts(5, 0), vec![0x55; 20]), (ts(6, 0), ipv4_syn(1)), (ts(7, 0), vec![])];
    write_pcap(&path, 101, TsResolution::MicroSecond, Endianness::Big, &recs);
    let mut source = PcapSource::open(&path).unwrap();
    let got = read_all(&mut source);
    assert_eq!(frames(&got), vec![synthesized(&ipv4_syn(1))]);
    assert_eq!((source.stats().not_ip, source.stats().short), (1, 1));
}

#[test]
fn null_loopback() {
    let dir = TempDir::new("null");
    let path = dir.path("lo0.pcap");
    let mut v4 = 2u32.to_le_bytes().to_vec();
    v4.extend_from_slice(&ipv4_syn(1));
    let mut v6 = 30u32.to_le_bytes().to_vec();
    v6.extend_from_slice(&ipv6_ack(1));
    write_pcap(&path, 0, TsResolution::MicroSecond, Endianness::Little, &[(ts(1, 0), v4), (ts(2, 0), v6)]);
    let got = read_all(&mut PcapSource::open(&path).unwrap());
    assert_eq!(frames(&got), vec![synthesized(&ipv4_syn(1)), synthesized(&ipv6_ack(1))]);
}

#[test]
fn caplen_below_len_is_counted_and_skipped() {
    let dir = TempDir::new("snap");
    let path = dir.path("snap.pcap");
    let mut w = PcapWriter::with_header(File::create(&path).unwrap(), PcapHeader::default()).unwrap();
    let full = ethernet(&ipv4_syn(1));
    let cut = ethernet(&ipv4_syn(2));
    let raw = |ts_sec, data: &[u8], orig_len| RawPcapPacket {
        ts_sec,
        ts_frac: 0,
        incl_len: data.len() as u32,
        orig_len,
        data: Cow::Owned(data.to_vec()),
    };
    w.write_raw_packet(&raw(1, &full, full.len() as u32)).unwrap();
    w.write_raw_packet(&raw(2, &cut[..34], cut.len() as u32)).unwrap();
    w.write_raw_packet(&raw(3, &full, full.len() as u32)).unwrap();
    drop(w);
    let mut source = PcapSource::open(&path).unwrap();
    let got = read_all(&mut source);
    assert_eq!(frames(&got), vec![full.clone(), full]);
    assert_eq!(times(&got), vec![ts(1, 0), ts(3, 0)]);
    assert_eq!(*source.stats(), SourceStats { packets: 2, frame_bytes: 108, truncated: 1, ..SourceStats::default() });
}

/// A pcapng file with two interfaces of different link types and resolutions, an
/// unsupported one, and a simple packet block.
#[test]
fn pcapng_interfaces_and_resolutions() {
    let dir = TempDir::new("ng");
    let path = dir.path("two.pcapng");
    let mut w = PcapNgWriter::with_endianness(File::create(&path).unwrap(), Endianness::Little).unwrap();
    // 0: Ethernet, default resolution (µs).
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0)).unwrap();
    // 1: SLL, nanoseconds.
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::LINUX_SLL,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    // 2: IEEE 802.11: its packets are skipped.
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::IEEE802_11, 0)).unwrap();
    // 3: raw IP, 2^-10 s units, and a 1000 s offset.
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(0x8a), InterfaceDescriptionOption::IfTsOffset(1000)],
    })
    .unwrap();
    // pcap-file writes the raw timestamp units as "nanoseconds": give it raw units.
    let epb = |interface_id, raw: u64, data: Vec<u8>| EnhancedPacketBlock {
        interface_id,
        timestamp: Duration::from_nanos(raw),
        original_len: data.len() as u32,
        data: Cow::Owned(data),
        options: vec![],
    };
    let e = ethernet(&ipv4_syn(1));
    w.write_pcapng_block(epb(0, 1_764_000_000_123_456, e.clone())).unwrap();
    w.write_pcapng_block(epb(1, 1_764_000_000_123_456_789, sll(&ipv6_ack(2)))).unwrap();
    w.write_pcapng_block(epb(2, 1_764_000_000_200_000, vec![0x88; 40])).unwrap();
    w.write_pcapng_block(epb(3, 5 * 1024 + 256, ipv4_syn(3))).unwrap();
    w.write_pcapng_block(SimplePacketBlock { original_len: e.len() as u32, data: Cow::Owned(e.clone()) }).unwrap();
    drop(w);

    let mut source = PcapSource::open(&path).unwrap();
    let got = read_all(&mut source);
    assert_eq!(frames(&got), vec![e.clone(), synthesized(&ipv6_ack(2)), synthesized(&ipv4_syn(3)), e]);
    assert_eq!(
        times(&got),
        vec![
            ts(1_764_000_000, 123_456_000),
            ts(1_764_000_000, 123_456_789),
            ts(1005, 250_000_000),
            // A simple packet block has no timestamp: it keeps the previous one.
            ts(1005, 250_000_000),
        ]
    );
    assert_eq!(source.stats().foreign_link, 1);
    assert_eq!(source.position(), source.file_size());
}

#[test]
fn pcapng_big_endian() {
    let dir = TempDir::new("ng-be");
    let path = dir.path("be.pcapng");
    let mut w = PcapNgWriter::with_endianness(File::create(&path).unwrap(), Endianness::Big).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0)).unwrap();
    let f = ethernet_vlan(&ipv4_syn(9));
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::from_nanos(7_000_001),
        original_len: f.len() as u32,
        data: Cow::Owned(f.clone()),
        options: vec![],
    })
    .unwrap();
    drop(w);
    let got = read_all(&mut PcapSource::open(&path).unwrap());
    assert_eq!(frames(&got), vec![f]);
    assert_eq!(times(&got), vec![ts(7, 1000)]);
}

#[test]
fn pcapng_with_only_unsupported_interfaces_is_refused() {
    let dir = TempDir::new("ng-wifi");
    let path = dir.path("wifi.pcapng");
    let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::IEEE802_11, 0)).unwrap();
    drop(w);
    assert_eq!(
        open_err(&path),
        format!(
            "{}: unsupported link type 105 (IEEE 802.11); supported: Ethernet, Linux cooked (SLL, SLL2), raw IP, loopback (null)",
            path.display()
        )
    );
}

#[test]
fn unsupported_link_type() {
    let dir = TempDir::new("wifi");
    let path = dir.path("capture.pcap");
    write_pcap(&path, 105, TsResolution::MicroSecond, Endianness::Little, &[(ts(1, 0), vec![0; 30])]);
    assert_eq!(
        open_err(&path),
        format!(
            "{}: unsupported link type 105 (IEEE 802.11); supported: Ethernet, Linux cooked (SLL, SLL2), raw IP, loopback (null)",
            path.display()
        )
    );
    write_pcap(&path, 4242, TsResolution::MicroSecond, Endianness::Little, &[]);
    assert!(open_err(&path).ends_with(
        ": unsupported link type 4242; supported: Ethernet, Linux cooked (SLL, SLL2), raw IP, loopback (null)"
    ));
}

#[test]
fn wrong_magic_empty_and_compressed() {
    let dir = TempDir::new("magic");
    let path = dir.path("capture.pcap");
    fs::write(&path, [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(open_err(&path), format!("{}: not a pcap or pcapng file (magic 0x12345678)", path.display()));
    fs::write(&path, b"GET / HTTP/1.1\r\n").unwrap();
    assert_eq!(open_err(&path), format!("{}: not a pcap or pcapng file (magic 0x47455420)", path.display()));
    fs::write(&path, [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]).unwrap();
    assert_eq!(
        open_err(&path),
        format!(
            "{}: not a pcap or pcapng file (magic 0x1f8b0800); it is gzip-compressed: decompress it first (`gunzip`)",
            path.display()
        )
    );
    fs::write(&path, []).unwrap();
    assert_eq!(open_err(&path), format!("{}: empty file (0 bytes), not a pcap or pcapng file", path.display()));
    let missing = dir.path("missing.pcap");
    assert!(open_err(&missing).starts_with(&format!("{}: cannot open: ", missing.display())));
    assert!(matches!(PcapSource::open(&missing), Err(OfflineError::Open { .. })));
}

#[test]
fn truncated_header_is_an_error() {
    let dir = TempDir::new("short-header");
    let path = dir.path("capture.pcap");
    fs::write(&path, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0]).unwrap();
    assert_eq!(
        open_err(&path),
        format!(
            "{}: truncated at byte 10 (the file ends inside the file header that starts at byte 0)",
            path.display()
        )
    );
    let ng = dir.path("capture.pcapng");
    fs::write(&ng, [0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0]).unwrap();
    assert!(
        open_err(&ng).ends_with(": truncated at byte 14 (the file ends inside the file header that starts at byte 0)")
    );
}

#[test]
fn truncated_tail_returns_the_good_packets() {
    let dir = TempDir::new("tail");
    let path = dir.path("capture.pcap");
    let recs: Vec<_> = (0..3).map(|i| (ts(10 + i, 0), ethernet(&ipv4_syn(i as u16)))).collect();
    write_pcap(&path, 1, TsResolution::MicroSecond, Endianness::Little, &recs);
    // Cut the third record (it starts at 24 + 2 × (16 + 54) = 164) in its data.
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 24 + 3 * 70);
    fs::write(&path, &bytes[..200]).unwrap();
    let mut source = PcapSource::open(&path).unwrap();
    let got = read_all(&mut source);
    assert_eq!(frames(&got), vec![recs[0].1.clone(), recs[1].1.clone()]);
    assert_eq!(source.stats().truncated_tail, Some(164));
    assert_eq!(
        source.truncation().unwrap().to_string(),
        format!(
            "{}: truncated at byte 200 (the file ends inside a packet record that starts at byte 164)",
            path.display()
        )
    );
    // The end is sticky, and a rewind starts over.
    let mut frame = Vec::new();
    assert_eq!(source.next_into(&mut frame).unwrap(), None);
    source.rewind().unwrap();
    assert_eq!(read_all(&mut source).len(), 2);

    // Cut inside a record header.
    fs::write(&path, &bytes[..164 + 7]).unwrap();
    let mut source = PcapSource::open(&path).unwrap();
    assert_eq!(read_all(&mut source).len(), 2);
    assert_eq!(source.stats().truncated_tail, Some(164));
}

#[test]
fn truncated_pcapng_tail() {
    let dir = TempDir::new("ng-tail");
    let path = dir.path("capture.pcapng");
    let mut w = PcapNgWriter::with_endianness(File::create(&path).unwrap(), Endianness::Little).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0)).unwrap();
    let f = ethernet(&ipv4_syn(1));
    for i in 0..2 {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(1_000_000 * (i + 1)),
            original_len: f.len() as u32,
            data: Cow::Owned(f.clone()),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let bytes = fs::read(&path).unwrap();
    let cut = bytes.len() - 10;
    fs::write(&path, &bytes[..cut]).unwrap();
    let mut source = PcapSource::open(&path).unwrap();
    let got = read_all(&mut source);
    assert_eq!(times(&got), vec![ts(1, 0)]);
    let epb_len = 32 + 56; // header, trailer and options-free body around 54 bytes padded to 56
    let start = bytes.len() - epb_len;
    assert_eq!(source.stats().truncated_tail, Some(start as u64));
    assert_eq!(
        source.truncation().unwrap().to_string(),
        format!(
            "{}: truncated at byte {cut} (the file ends inside a packet record that starts at byte {start})",
            path.display()
        )
    );
}

#[test]
fn corrupt_record_length_is_an_error_after_the_good_packets() {
    let dir = TempDir::new("corrupt");
    let path = dir.path("capture.pcap");
    let recs: Vec<_> = (0..2).map(|i| (ts(10 + i, 0), ethernet(&ipv4_syn(i as u16)))).collect();
    write_pcap(&path, 1, TsResolution::MicroSecond, Endianness::Little, &recs);
    let mut bytes = fs::read(&path).unwrap();
    // The second record's incl_len (at 24 + 70 + 8) becomes absurd.
    bytes[102..106].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let mut source = PcapSource::open(&path).unwrap();
    let mut frame = Vec::new();
    assert!(source.next_into(&mut frame).unwrap().is_some());
    let err = source.next_into(&mut frame).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: corrupt file at byte 94: a packet record claims 4294967280 captured bytes (the limit is 262144); \
             the file is damaged, or not a pcap file after all",
            path.display()
        )
    );
}

#[test]
fn rewind_and_scan() {
    let dir = TempDir::new("scan");
    let path = dir.path("capture.pcap");
    let recs: Vec<_> = [0u64, 500_000, 30_500_000, 31_000_000]
        .iter()
        .map(|&us| (Duration::from_secs(1_764_000_000) + Duration::from_micros(us), ethernet(&ipv4_syn(1))))
        .collect();
    write_pcap(&path, 1, TsResolution::MicroSecond, Endianness::Little, &recs);
    let mut source = PcapSource::open(&path).unwrap();
    let opts = PaceOptions { max_gap: Some(Duration::from_secs(1)), ..PaceOptions::default() };
    let summary = source.scan(&opts).unwrap();
    assert_eq!(summary.stats.packets, 4);
    assert_eq!(summary.first_ts, Some(recs[0].0));
    assert_eq!(summary.last_ts, Some(recs[3].0));
    // 0.5 s + 30 s cut to 1 s + 0.5 s.
    assert_eq!(summary.span, Duration::from_secs(2));
    // The scan rewound and cleared the counters.
    assert_eq!(source.position(), 24);
    assert_eq!(*source.stats(), SourceStats::default());
    assert_eq!(read_all(&mut source).len(), 4);
    source.rewind().unwrap();
    assert_eq!(times(&read_all(&mut source)), recs.iter().map(|r| r.0).collect::<Vec<_>>());
    assert_eq!(source.stats().packets, 8);
}

#[test]
fn the_frame_buffer_is_reused() {
    let dir = TempDir::new("reuse");
    let path = dir.path("capture.pcap");
    let big = ethernet(&[ipv6_ack(1), vec![0; 1400]].concat());
    let recs: Vec<_> =
        (0..200).map(|i| (ts(i, 0), if i == 0 { big.clone() } else { ethernet(&ipv4_syn(i as u16)) })).collect();
    write_pcap(&path, 1, TsResolution::MicroSecond, Endianness::Little, &recs);
    let mut source = PcapSource::open(&path).unwrap();
    let mut frame = Vec::new();
    source.next_into(&mut frame).unwrap().unwrap();
    let (ptr, cap) = (frame.as_ptr(), frame.capacity());
    while source.next_into(&mut frame).unwrap().is_some() {
        assert_eq!((frame.as_ptr(), frame.capacity()), (ptr, cap));
    }
    assert_eq!(source.stats().packets, 200);
}

#[test]
fn records_larger_than_the_read_buffer() {
    // A pcapng block larger than the 1 MiB read buffer (the limit for pcap records is 256 KiB).
    let dir = TempDir::new("huge");
    let path = dir.path("huge.pcapng");
    let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0)).unwrap();
    let huge = ethernet(&[ipv4_syn(1), vec![0xab; 1_100_000]].concat());
    let small = ethernet(&ipv4_syn(2));
    for (i, f) in [&small, &huge, &small].into_iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(i as u64),
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let got = read_all(&mut PcapSource::open(&path).unwrap());
    assert_eq!(frames(&got), vec![small.clone(), huge, small]);
}

/// Every prefix of a file, and a few thousand random corruptions, end in packets, a clean end
/// or an error: never a panic or a hang.
#[test]
fn damaged_files_never_panic() {
    let dir = TempDir::new("damage");
    let ng = dir.path("good.pcapng");
    let mut w = PcapNgWriter::with_endianness(File::create(&ng).unwrap(), Endianness::Little).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::LINUX_SLL,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 0)).unwrap();
    for i in 0..4u32 {
        let data = if i % 2 == 0 { sll(&ipv4_syn(i as u16)) } else { ipv6_ack(i as u8) };
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: i % 2,
            timestamp: Duration::from_nanos(u64::from(i) * 1000),
            original_len: data.len() as u32,
            data: Cow::Owned(data),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let pcap = dir.path("good.pcap");
    let recs: Vec<_> = (0..4).map(|i| (ts(i, 0), ethernet(&ipv4_syn(i as u16)))).collect();
    write_pcap(&pcap, 1, TsResolution::NanoSecond, Endianness::Little, &recs);

    let mut frame = Vec::new();
    let mut check = |bytes: &[u8]| {
        let Ok(mut source) = PcapSource::from_reader("bad.pcap", std::io::Cursor::new(bytes)) else { return };
        for _ in 0..100 {
            match source.next_into(&mut frame) {
                Ok(Some(p)) => assert_eq!(p.len, frame.len()),
                Ok(None) | Err(_) => return,
            }
        }
        panic!("more packets than the file can hold");
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for good in [fs::read(&ng).unwrap(), fs::read(&pcap).unwrap()] {
        for cut in 0..good.len() {
            check(&good[..cut]);
        }
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed >> 8) as usize % bytes.len();
                bytes[at] = (seed >> 40) as u8;
            }
            check(&bytes);
        }
    }
}

/// Every packet with `next_frame`: the frame where it lies (or its synthesized copy).
fn read_all_frames(source: &mut PcapSource) -> Vec<(Packet, Vec<u8>)> {
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    while let Some((p, frame)) = source.next_frame(&mut scratch).unwrap() {
        assert_eq!(p.len, frame.len());
        out.push((p, frame.to_vec()));
    }
    out
}

/// `open` maps a file, `from_reader` reads it through the buffer: both return the same packets,
/// counters and truncation, and `next_frame` (no copy where the link allows) the same frames as
/// `next_into`, in every loop.
#[test]
fn mapped_and_read_files_agree() {
    let dir = TempDir::new("mapped");
    let eth = dir.path("eth.pcap");
    let recs = vec![
        (ts(1, 0), ethernet(&ipv4_syn(1))),
        (ts(1, 5), ethernet_vlan(&ipv4_syn(2))),
        (ts(2, 0), ethernet(&ipv6_ack(3))),
    ];
    write_pcap(&eth, 1, TsResolution::NanoSecond, Endianness::Little, &recs);
    let cooked = dir.path("sll.pcap");
    let recs: Vec<_> = [ipv4_syn(4), ipv6_ack(5)].iter().map(|ip| (ts(3, 0), sll(ip))).collect();
    write_pcap(&cooked, 113, TsResolution::MicroSecond, Endianness::Big, &recs);
    let huge = dir.path("huge.pcapng");
    let mut w = PcapNgWriter::new(File::create(&huge).unwrap()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0)).unwrap();
    for (i, f) in [ethernet(&ipv4_syn(6)), ethernet(&[ipv4_syn(7), vec![0xab; 1_100_000]].concat())].iter().enumerate()
    {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(i as u64),
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    // A file cut inside its last record.
    let cut = dir.path("cut.pcap");
    let bytes = fs::read(&eth).unwrap();
    fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();

    for path in [&eth, &cooked, &huge, &cut] {
        let mut mapped = PcapSource::open(path).unwrap();
        let mut read = PcapSource::from_reader(path.clone(), File::open(path).unwrap()).unwrap();
        let mut borrowed = PcapSource::open(path).unwrap();
        assert!(mapped.is_mapped() && !read.is_mapped());
        for _loop in 0..2 {
            let (m, r) = (read_all(&mut mapped), read_all(&mut read));
            assert_eq!(m, r, "{}", path.display());
            assert_eq!(mapped.stats(), read.stats(), "{}", path.display());
            assert_eq!(mapped.position(), read.position(), "{}", path.display());
            assert_eq!(read_all_frames(&mut borrowed), m, "{}: next_frame", path.display());
            assert_eq!(borrowed.stats(), mapped.stats(), "{}: next_frame", path.display());
            for s in [&mut mapped, &mut read, &mut borrowed] {
                s.rewind().unwrap();
            }
        }
        assert_eq!(
            mapped.truncation().map(|e| e.to_string()),
            read.truncation().map(|e| e.to_string()),
            "{}",
            path.display()
        );
    }
}
