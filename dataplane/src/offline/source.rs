//! [`PcapSource`]: pcap and pcapng files read as Ethernet frames with their capture time.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use memmap2::Mmap;
use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::PcapNgParser;
use pcap_file::{Endianness, PcapError, TsResolution};

use super::link::{Link, Skip};
use super::pace::{PaceOptions, Pacer};
use super::OfflineError;

/// Initial size of the read buffer; it grows only for a larger record.
const READ_BUFFER: usize = 1 << 20;
/// Largest captured length of a pcap record (libpcap's `MAXIMUM_SNAPLEN`).
const MAX_PCAP_RECORD: usize = 262_144;
/// Largest pcapng block (libpcap's limit).
const MAX_PCAPNG_BLOCK: usize = 16 << 20;
/// Length of the pcap file header.
const PCAP_HEADER_LEN: usize = 24;
/// Length of a pcap record header (ts_sec, ts_frac, incl_len, orig_len).
const PCAP_RECORD_LEN: usize = 16;
/// Length of the fixed part of a pcapng block (type, length, …, trailing length).
const BLOCK_OVERHEAD: usize = 12;

/// pcapng block types (pcapng spec §4).
const SHB: u32 = 0x0a0d_0d0a;
const IDB: u32 = 1;
const PB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;

/// What "truncated" names.
const IN_HEADER: &str = "the file header";
const IN_RECORD: &str = "a packet record";
const IN_BLOCK: &str = "a pcapng block";

/// One packet returned by [`PcapSource::next_into`]; its frame is in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Capture time since the Unix epoch (pcapng: after `if_tsresol` and `if_tsoffset`).
    pub ts: Duration,
    /// Length of the Ethernet frame written into the buffer.
    pub len: usize,
    /// Original length on the capture's own link layer (equal to its captured length: records
    /// cut by a snap length are skipped).
    pub orig_len: u32,
}

/// What the source skipped and where it is; cumulative across [`PcapSource::rewind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Packets returned.
    pub packets: u64,
    /// Bytes of the Ethernet frames returned.
    pub frame_bytes: u64,
    /// Records skipped because caplen < len (a snap length cut them).
    pub truncated: u64,
    /// Records skipped because they are shorter than their link-layer header.
    pub short: u64,
    /// Raw-IP / loopback records skipped because they are neither IPv4 nor IPv6.
    pub not_ip: u64,
    /// pcapng packets skipped because their interface's link type is unsupported.
    pub foreign_link: u64,
    /// Where the incomplete last record starts, if the file ends inside one.
    pub truncated_tail: Option<u64>,
}

/// The result of [`PcapSource::scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Capture time of the first packet returned.
    pub first_ts: Option<Duration>,
    /// Capture time of the last packet returned.
    pub last_ts: Option<Duration>,
    /// Length of one loop's paced timeline: the capture time from the first packet to the last,
    /// with the `max_gap` cuts and the clamps of [`Pacer`]; the real replay takes this ÷ speed.
    pub span: Duration,
    /// The counters of the scan (packets, skips, truncation).
    pub stats: SourceStats,
}

/// The timestamp unit of a pcapng interface (`if_tsresol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsScale {
    /// 10^-n seconds, n ≤ 19.
    Decimal(u32),
    /// 2^-n seconds, n ≤ 63.
    Binary(u32),
}

impl TsScale {
    fn from_tsresol(tsresol: u8) -> Option<TsScale> {
        let n = u32::from(tsresol & 0x7f);
        if tsresol & 0x80 == 0 {
            (n <= 19).then_some(TsScale::Decimal(n))
        } else {
            (n <= 63).then_some(TsScale::Binary(n))
        }
    }

    fn to_duration(self, raw: u64) -> Duration {
        match self {
            TsScale::Decimal(n) => {
                let unit = 10u64.pow(n);
                let (secs, frac) = (raw / unit, raw % unit);
                let nanos = if n <= 9 { frac * 10u64.pow(9 - n) } else { frac / 10u64.pow(n - 9) };
                Duration::from_secs(secs) + Duration::from_nanos(nanos)
            }
            TsScale::Binary(n) => {
                let secs = raw >> n;
                let frac = raw & ((1u64 << n) - 1);
                let nanos = (u128::from(frac) * 1_000_000_000) >> n;
                Duration::from_secs(secs) + Duration::from_nanos(nanos as u64)
            }
        }
    }
}

/// A pcapng interface, as the packets of a section refer to it.
#[derive(Clone, Copy, Debug)]
struct Iface {
    /// The link, or the unsupported LINKTYPE_ value.
    link: Result<Link, u32>,
    scale: TsScale,
    /// `if_tsoffset`, seconds added to every timestamp.
    offset: i64,
    /// Snap length (0: none); bounds a simple packet block's data.
    snaplen: u32,
}

impl Iface {
    fn from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Result<Iface, String> {
        let linktype = u32::from(idb.linktype);
        let mut iface = Iface {
            link: Link::from_linktype(linktype).ok_or(linktype),
            scale: TsScale::Decimal(6),
            offset: 0,
            snaplen: idb.snaplen,
        };
        for option in &idb.options {
            match *option {
                InterfaceDescriptionOption::IfTsResol(r) => {
                    iface.scale = TsScale::from_tsresol(r)
                        .ok_or_else(|| format!("unsupported timestamp resolution (if_tsresol 0x{r:02x})"))?;
                }
                // The option is a signed number of seconds; pcap-file reads it unsigned.
                InterfaceDescriptionOption::IfTsOffset(o) => iface.offset = o as i64,
                _ => {}
            }
        }
        Ok(iface)
    }

    fn timestamp(&self, raw: u64) -> Duration {
        let ts = self.scale.to_duration(raw);
        let offset = Duration::from_secs(self.offset.unsigned_abs());
        if self.offset >= 0 {
            ts.saturating_add(offset)
        } else {
            ts.saturating_sub(offset)
        }
    }
}

/// The parser state of the open file.
enum Format {
    /// Before the header is read (or after a failed rewind): no packets.
    Unstarted,
    Pcap {
        parser: PcapParser,
        link: Link,
        nanos: bool,
    },
    PcapNg {
        parser: PcapNgParser,
        ifaces: Vec<Iface>,
        last_ts: Duration,
    },
}

/// A packet record located in the read buffer.
struct Record {
    ts: Duration,
    /// Start of the captured bytes in `PcapSource::buf`.
    start: usize,
    caplen: usize,
    orig_len: u32,
    link: Result<Link, u32>,
}

/// A pcap or pcapng file read as Ethernet frames. See the [module docs](super).
pub struct PcapSource<R = File> {
    path: PathBuf,
    reader: R,
    file_size: u64,
    format: Format,
    /// The whole file, mapped ([`PcapSource::open`]); then `pos`/`end` index it and `buf` is
    /// unused.
    map: Option<Mmap>,
    /// Bytes read from the file; `buf[pos..end]` is not yet consumed.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    /// The reader returned 0.
    eof: bool,
    /// The file ended inside a record: return nothing more until a rewind.
    finished: bool,
    /// What the truncated tail is inside of.
    tail_inside: &'static str,
    stats: SourceStats,
}

impl PcapSource<File> {
    /// Open a capture file and read its header (and a pcapng file's first interfaces).
    ///
    /// # Errors
    ///
    /// The file cannot be opened or read, is empty, is no pcap / pcapng file, is cut inside its
    /// header, or its link type is unsupported (see [`OfflineError`]).
    ///
    /// The file is memory-mapped (read through the page cache, no copy into a buffer; see
    /// [`crate::xsk::sys::map_file`] for why it must not be rewritten while it is replayed); a
    /// file that cannot be mapped is read instead.
    pub fn open(path: impl AsRef<Path>) -> Result<PcapSource<File>, OfflineError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| OfflineError::Open { path: path.to_path_buf(), source })?;
        let map = match file.metadata() {
            Ok(m) if m.is_file() && m.len() > 0 => crate::xsk::sys::map_file(&file).ok(),
            _ => None,
        };
        let Some(map) = map else {
            return PcapSource::from_reader(path, file);
        };
        let len = map.len();
        let mut source = PcapSource {
            path: path.to_path_buf(),
            reader: file,
            file_size: len as u64,
            format: Format::Unstarted,
            map: Some(map),
            buf: Vec::new(),
            pos: 0,
            end: len,
            buf_offset: 0,
            eof: true,
            finished: false,
            tail_inside: IN_RECORD,
            stats: SourceStats::default(),
        };
        source.start()?;
        Ok(source)
    }

    /// Whether the file is read through a memory mapping.
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }
}

impl<R: Read + Seek> PcapSource<R> {
    /// Read a capture from any seekable reader; `path` names it in error messages.
    ///
    /// # Errors
    ///
    /// As [`PcapSource::open`].
    pub fn from_reader(path: impl Into<PathBuf>, mut reader: R) -> Result<PcapSource<R>, OfflineError> {
        let path = path.into();
        let file_size = reader
            .seek(SeekFrom::End(0))
            .and_then(|size| reader.seek(SeekFrom::Start(0)).map(|_| size))
            .map_err(|source| OfflineError::Read { path: path.clone(), offset: 0, source })?;
        let mut source = PcapSource {
            path,
            reader,
            file_size,
            format: Format::Unstarted,
            map: None,
            buf: vec![0; READ_BUFFER],
            pos: 0,
            end: 0,
            buf_offset: 0,
            eof: false,
            finished: false,
            tail_inside: IN_RECORD,
            stats: SourceStats::default(),
        };
        source.start()?;
        Ok(source)
    }

    /// Go back to the first packet (for `-T` loops); the counters keep counting.
    ///
    /// # Errors
    ///
    /// Seeking or re-reading the header fails.
    pub fn rewind(&mut self) -> Result<(), OfflineError> {
        if let Some(map) = &self.map {
            self.end = map.len();
        } else {
            self.reader.seek(SeekFrom::Start(0)).map_err(|source| self.read_error(0, source))?;
            self.end = 0;
            self.eof = false;
        }
        self.pos = 0;
        self.buf_offset = 0;
        self.finished = false;
        self.format = Format::Unstarted;
        self.start()
    }

    /// Read the next packet's Ethernet frame into `frame` (cleared first); `None` at the end.
    ///
    /// Skipped records are counted in [`SourceStats`]. Does not allocate once `frame` and the
    /// read buffer hold the largest record.
    ///
    /// # Errors
    ///
    /// A read error or a corrupt record (the packets before it were returned). A file that
    /// ends inside a record is not an error: see [`PcapSource::truncation`].
    pub fn next_into(&mut self, frame: &mut Vec<u8>) -> Result<Option<Packet>, OfflineError> {
        let Some((packet, at)) = self.next_located(frame)? else {
            frame.clear();
            return Ok(None);
        };
        if let Some(range) = at {
            frame.clear();
            frame.extend_from_slice(&bytes(&self.map, &self.buf)[range]);
        }
        Ok(Some(packet))
    }

    /// Read the next packet's Ethernet frame without copying it where the link allows: an
    /// Ethernet record is returned where it lies (in the mapping of a mapped file, else in the
    /// read buffer); any other link's frame is built in `scratch` (its header is synthesized).
    /// `None` at the end.
    ///
    /// # Errors
    ///
    /// As [`PcapSource::next_into`].
    pub fn next_frame<'a>(&'a mut self, scratch: &'a mut Vec<u8>) -> Result<Option<(Packet, &'a [u8])>, OfflineError> {
        Ok(self.next_located(scratch)?.map(|(packet, at)| {
            let frame: &[u8] = match at {
                Some(range) => &bytes(&self.map, &self.buf)[range],
                None => scratch,
            };
            (packet, frame)
        }))
    }

    /// The next packet, and where its frame is: `Some(range)` of the file's bytes (an Ethernet
    /// record, as it lies), or `None` for a frame built in `scratch`.
    fn next_located(&mut self, scratch: &mut Vec<u8>) -> Result<Option<(Packet, Located)>, OfflineError> {
        loop {
            let Some(rec) = self.next_record()? else {
                return Ok(None);
            };
            if rec.caplen < rec.orig_len as usize {
                self.stats.truncated += 1;
                continue;
            }
            let Ok(link) = rec.link else {
                self.stats.foreign_link += 1;
                continue;
            };
            let range = rec.start..rec.start + rec.caplen;
            let at = if link == Link::Ethernet {
                if rec.caplen < crate::wire::ethernet::HEADER_LEN {
                    Err(Skip::Short)
                } else {
                    Ok(Some(range))
                }
            } else {
                link.to_ethernet(&bytes(&self.map, &self.buf)[range], scratch).map(|()| None)
            };
            let at = match at {
                Ok(at) => at,
                Err(Skip::Short) => {
                    self.stats.short += 1;
                    continue;
                }
                Err(Skip::NotIp) => {
                    self.stats.not_ip += 1;
                    continue;
                }
            };
            let len = at.as_ref().map_or(scratch.len(), ExactSizeIterator::len);
            self.stats.packets += 1;
            self.stats.frame_bytes += len as u64;
            return Ok(Some((Packet { ts: rec.ts, len, orig_len: rec.orig_len }, at)));
        }
    }

    /// Read the whole file once to measure it, then rewind with the counters cleared.
    ///
    /// The span follows `options` (the `max_gap` cuts), so a progress bar can show the exact
    /// replay length. A file cut inside a record is measured up to the cut.
    ///
    /// # Errors
    ///
    /// As [`PcapSource::next_into`] and [`PcapSource::rewind`].
    pub fn scan(&mut self, options: &PaceOptions) -> Result<Summary, OfflineError> {
        let mut frame = Vec::new();
        let mut pacer: Option<Pacer> = None;
        let (mut first_ts, mut last_ts) = (None, None);
        let now = std::time::Instant::now();
        while let Some(packet) = self.next_into(&mut frame)? {
            first_ts.get_or_insert(packet.ts);
            last_ts = Some(packet.ts);
            pacer.get_or_insert_with(|| Pacer::new(options, packet.ts, now)).due(packet.ts, now);
        }
        let summary = Summary {
            first_ts,
            last_ts,
            span: pacer.map_or(Duration::ZERO, |p| p.capture_elapsed()),
            stats: self.stats,
        };
        self.rewind()?;
        self.stats = SourceStats::default();
        Ok(summary)
    }
}

impl<R> PcapSource<R> {
    /// The file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes (at open).
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes of the file consumed so far in this loop (where the next record starts).
    pub fn position(&self) -> u64 {
        self.buf_offset + self.pos as u64
    }

    /// The counters.
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }

    /// The file ends inside a record: the warning to print (the packets before it were read).
    pub fn truncation(&self) -> Option<OfflineError> {
        self.stats.truncated_tail.map(|start| OfflineError::Truncated {
            path: self.path.clone(),
            start,
            end: self.file_size,
            inside: self.tail_inside,
        })
    }

    fn read_error(&self, offset: u64, source: io::Error) -> OfflineError {
        OfflineError::Read { path: self.path.clone(), offset, source }
    }

    fn corrupt(&self, offset: u64, detail: impl Into<String>) -> OfflineError {
        OfflineError::Corrupt { path: self.path.clone(), offset, detail: detail.into() }
    }
}

impl<R: Read> PcapSource<R> {
    /// The bytes `pos` and `end` index: the mapping, or the read buffer.
    fn bytes(&self) -> &[u8] {
        bytes(&self.map, &self.buf)
    }

    /// Make `buf[pos..end]` hold at least `need` bytes; `false` if the file ends first. A mapped
    /// file holds every byte already (`eof` is set from the start).
    fn fill(&mut self, need: usize) -> Result<bool, OfflineError> {
        if self.end - self.pos >= need {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.buf_offset += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if need > self.buf.len() {
            if self.buf_offset + need as u64 > self.file_size {
                // The file is too short for it: read what is there, but do not grow the buffer
                // for a record that is cut anyway (or a corrupt length).
                let capacity = self.buf.len();
                self.read_until(capacity)?;
                return Ok(false);
            }
            self.buf.resize(need.next_power_of_two(), 0);
        }
        self.read_until(need)
    }

    /// Read until `end` reaches `target` (≤ the buffer's length); `false` at the end of the file.
    fn read_until(&mut self, target: usize) -> Result<bool, OfflineError> {
        while self.end < target {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(self.buf_offset + self.end as u64, e)),
            }
        }
        Ok(true)
    }

    /// The file ended with `buf[pos..end]` unconsumed: fine if empty, else a truncated tail
    /// inside `inside`.
    fn mark_tail(&mut self, inside: &'static str) {
        if self.end > self.pos {
            self.stats.truncated_tail = Some(self.position());
            self.tail_inside = inside;
            self.finished = true;
        }
    }

    /// Read the file header (and a pcapng file's interfaces before its first packet).
    fn start(&mut self) -> Result<(), OfflineError> {
        if !self.fill(4)? {
            return Err(if self.end == 0 {
                OfflineError::Empty { path: self.path.clone() }
            } else {
                self.truncated_header()
            });
        }
        let b = self.bytes();
        let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        match magic {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => self.start_pcap(),
            SHB => self.start_pcapng(),
            _ => Err(OfflineError::NotPcap { path: self.path.clone(), magic, hint: magic_hint(magic) }),
        }
    }

    /// The byte order of the current pcapng section (big-endian before one is read).
    fn section_is_big(&self) -> bool {
        match &self.format {
            Format::PcapNg { parser, .. } => parser.section().endianness == Endianness::Big,
            _ => true,
        }
    }

    fn truncated_header(&self) -> OfflineError {
        OfflineError::Truncated { path: self.path.clone(), start: 0, end: self.file_size, inside: IN_HEADER }
    }

    fn start_pcap(&mut self) -> Result<(), OfflineError> {
        if !self.fill(PCAP_HEADER_LEN)? {
            return Err(self.truncated_header());
        }
        let (rem, parser) = PcapParser::new(&self.bytes()[..self.end]).map_err(|e| self.corrupt(0, pcap_error(&e)))?;
        self.pos = self.end - rem.len();
        let header = parser.header();
        let linktype = u32::from(header.datalink);
        let link = Link::from_linktype(linktype)
            .ok_or_else(|| OfflineError::UnsupportedLinkType { path: self.path.clone(), linktype })?;
        let nanos = header.ts_resolution == TsResolution::NanoSecond;
        self.format = Format::Pcap { parser, link, nanos };
        Ok(())
    }

    fn start_pcapng(&mut self) -> Result<(), OfflineError> {
        let Some((_, len)) = self.block_header(true)? else {
            return Err(self.truncated_header());
        };
        if !self.fill(len)? {
            return Err(self.truncated_header());
        }
        let (rem, parser) = PcapNgParser::new(&self.bytes()[..len]).map_err(|e| self.corrupt(0, pcap_error(&e)))?;
        debug_assert!(rem.is_empty());
        self.pos = len;
        self.format = Format::PcapNg { parser, ifaces: Vec::new(), last_ts: Duration::ZERO };
        // Read the interface descriptions before the first packet, to reject a file with no
        // supported interface now rather than after a silent replay of nothing.
        while let Some((block_type, _)) = self.block_header(false)? {
            if is_packet_block(block_type) || self.next_block()?.is_none() {
                break;
            }
        }
        if let Format::PcapNg { ifaces, .. } = &self.format {
            if let Some(Err(linktype)) = ifaces.first().map(|i| i.link) {
                if ifaces.iter().all(|i| i.link.is_err()) {
                    return Err(OfflineError::UnsupportedLinkType { path: self.path.clone(), linktype });
                }
            }
        }
        Ok(())
    }

    /// The next packet record, whatever its link or length; `None` at the end.
    fn next_record(&mut self) -> Result<Option<Record>, OfflineError> {
        if self.finished {
            return Ok(None);
        }
        match self.format {
            Format::Unstarted => Ok(None),
            Format::Pcap { .. } => self.next_pcap_record(),
            Format::PcapNg { .. } => self.next_pcapng_record(),
        }
    }

    fn next_pcap_record(&mut self) -> Result<Option<Record>, OfflineError> {
        let Format::Pcap { parser, .. } = &self.format else { unreachable!("a pcap file") };
        let big = parser.header().endianness == Endianness::Big;
        if !self.fill(PCAP_RECORD_LEN)? {
            self.mark_tail(IN_RECORD);
            return Ok(None);
        }
        let caplen = read_u32(&self.bytes()[self.pos + 8..], big) as usize;
        if caplen > MAX_PCAP_RECORD {
            let detail = format!(
                "a packet record claims {caplen} captured bytes (the limit is {MAX_PCAP_RECORD}); \
                 the file is damaged, or not a pcap file after all"
            );
            return Err(self.corrupt(self.position(), detail));
        }
        if !self.fill(PCAP_RECORD_LEN + caplen)? {
            self.mark_tail(IN_RECORD);
            return Ok(None);
        }
        let Format::Pcap { parser, link, nanos } = &self.format else { unreachable!("a pcap file") };
        let slice = &bytes(&self.map, &self.buf)[self.pos..self.end];
        let (rem, raw) = parser.next_raw_packet(slice).map_err(|e| self.corrupt(self.position(), pcap_error(&e)))?;
        let frac_nanos = if *nanos { u64::from(raw.ts_frac) } else { u64::from(raw.ts_frac) * 1000 };
        let record = Record {
            ts: Duration::from_secs(u64::from(raw.ts_sec)) + Duration::from_nanos(frac_nanos),
            start: self.pos + PCAP_RECORD_LEN,
            caplen,
            orig_len: raw.orig_len,
            link: Ok(*link),
        };
        self.pos += slice.len() - rem.len();
        Ok(Some(record))
    }

    /// Type and total length of the pcapng block at `pos`, checked; `None` at the end of the
    /// file (a truncated tail is recorded unless `header` says it is the file header).
    fn block_header(&mut self, header: bool) -> Result<Option<(u32, usize)>, OfflineError> {
        if !self.fill(BLOCK_OVERHEAD)? {
            if !header {
                let rest = &self.bytes()[self.pos..self.end];
                let packet = rest.len() >= 4 && is_packet_block(read_u32(rest, self.section_is_big()));
                self.mark_tail(if packet { IN_RECORD } else { IN_BLOCK });
            }
            return Ok(None);
        }
        let head = &self.bytes()[self.pos..self.pos + BLOCK_OVERHEAD];
        let big = header || self.section_is_big();
        let block_type = read_u32(head, big);
        let big = if block_type == SHB {
            // A section header says its own byte order, in the byte-order magic after its length.
            match read_u32(&head[8..], true) {
                0x1a2b_3c4d => true,
                0x4d3c_2b1a => false,
                magic => {
                    let detail = format!("a pcapng section header with a bad byte-order magic 0x{magic:08x}");
                    return Err(self.corrupt(self.position(), detail));
                }
            }
        } else {
            big
        };
        let len = read_u32(&head[4..], big) as usize;
        if len & 3 != 0 || !(BLOCK_OVERHEAD..=MAX_PCAPNG_BLOCK).contains(&len) {
            let detail = format!(
                "a pcapng block (type 0x{block_type:08x}) claims a length of {len} bytes \
                 (a multiple of 4 between {BLOCK_OVERHEAD} and {MAX_PCAPNG_BLOCK} expected)"
            );
            return Err(self.corrupt(self.position(), detail));
        }
        Ok(Some((block_type, len)))
    }

    /// Consume the next pcapng block; `Some((type, body start, body length))`.
    fn next_block(&mut self) -> Result<Option<(u32, usize, usize)>, OfflineError> {
        let Some((block_type, len)) = self.block_header(false)? else {
            return Ok(None);
        };
        if !self.fill(len)? {
            self.mark_tail(if is_packet_block(block_type) { IN_RECORD } else { IN_BLOCK });
            return Ok(None);
        }
        let offset = self.position();
        let Format::PcapNg { parser, ifaces, .. } = &mut self.format else { unreachable!("a pcapng file") };
        let block = &bytes(&self.map, &self.buf)[self.pos..self.pos + len];
        if let Err(e) = parser.next_raw_block(block) {
            let detail = format!("a pcapng block (type 0x{block_type:08x}): {}", pcap_error(&e));
            return Err(OfflineError::Corrupt { path: self.path.clone(), offset, detail });
        }
        match block_type {
            SHB => ifaces.clear(),
            IDB => {
                let idb = parser.interfaces().last().expect("the parser keeps the block it just read");
                let iface = Iface::from_idb(idb).map_err(|problem| OfflineError::Corrupt {
                    path: self.path.clone(),
                    offset,
                    detail: format!("interface {}: {problem}", ifaces.len()),
                })?;
                ifaces.push(iface);
            }
            _ => {}
        }
        self.pos += len;
        Ok(Some((block_type, self.pos - len + 8, len - BLOCK_OVERHEAD)))
    }

    fn next_pcapng_record(&mut self) -> Result<Option<Record>, OfflineError> {
        loop {
            let offset = self.position();
            let Some((block_type, body, body_len)) = self.next_block()? else {
                return Ok(None);
            };
            if !is_packet_block(block_type) {
                continue;
            }
            let Format::PcapNg { parser, ifaces, last_ts } = &mut self.format else { unreachable!("a pcapng file") };
            let big = parser.section().endianness == Endianness::Big;
            let b = &bytes(&self.map, &self.buf)[body..body + body_len];
            let corrupt = |detail: String| OfflineError::Corrupt { path: self.path.clone(), offset, detail };
            let (id, ts, caplen, orig_len, data) = if block_type == SPB {
                // A simple packet block: interface 0, no timestamp (we keep the previous one).
                if b.len() < 4 {
                    return Err(corrupt("a simple packet block shorter than its header".into()));
                }
                let orig_len = read_u32(b, big);
                let snap = ifaces.first().map_or(0, |i| i.snaplen);
                let mut caplen = (b.len() - 4).min(orig_len as usize);
                if snap != 0 {
                    caplen = caplen.min(snap as usize);
                }
                (0, None, caplen, orig_len, body + 4)
            } else {
                // Enhanced (6) and obsolete (2) packet blocks share this layout; the obsolete one
                // has a 16-bit interface id followed by a drop count.
                if b.len() < 20 {
                    return Err(corrupt("a packet block shorter than its header".into()));
                }
                let id = if block_type == EPB { read_u32(b, big) } else { u32::from(read_u16(b, big)) };
                let raw_ts = (u64::from(read_u32(&b[4..], big)) << 32) | u64::from(read_u32(&b[8..], big));
                let caplen = read_u32(&b[12..], big) as usize;
                if caplen > b.len() - 20 {
                    let detail = format!("a packet block claims {caplen} captured bytes but holds {}", b.len() - 20);
                    return Err(corrupt(detail));
                }
                (id, Some(raw_ts), caplen, read_u32(&b[16..], big), body + 20)
            };
            let Some(iface) = ifaces.get(id as usize) else {
                let detail = format!(
                    "a packet of interface {id}, but the section describes {} interface(s) before it",
                    ifaces.len()
                );
                return Err(corrupt(detail));
            };
            let ts = ts.map_or(*last_ts, |raw| iface.timestamp(raw));
            *last_ts = ts;
            return Ok(Some(Record { ts, start: data, caplen, orig_len, link: iface.link }));
        }
    }
}

/// Where a packet's frame is: `Some(range)` of the file's bytes, `None` in the scratch buffer.
type Located = Option<std::ops::Range<usize>>;

/// The bytes a source's `pos` and `end` index: the mapping of a mapped file, else the read
/// buffer (a free function, so it borrows those two fields only).
fn bytes<'a>(map: &'a Option<Mmap>, buf: &'a [u8]) -> &'a [u8] {
    match map {
        Some(m) => m,
        None => buf,
    }
}

/// Whether a pcapng block carries a packet.
fn is_packet_block(block_type: u32) -> bool {
    matches!(block_type, PB | SPB | EPB)
}

/// What a wrong magic suggests.
fn magic_hint(magic: u32) -> &'static str {
    match magic {
        0xa1b2_cd34 | 0x34cd_b2a1 => {
            "; it is a modified (Kuznetzov) pcap: convert it with `editcap -F pcap IN OUT` or `tcpdump -r IN -w OUT`"
        }
        0x28b5_2ffd => "; it is zstd-compressed: decompress it first (`zstd -d`)",
        m if m >> 16 == 0x1f8b => "; it is gzip-compressed: decompress it first (`gunzip`)",
        m if m >> 8 == 0x425a68 => "; it is bzip2-compressed: decompress it first (`bunzip2`)",
        0xfd37_7a58 => "; it is xz-compressed: decompress it first (`unxz`)",
        _ => "",
    }
}

/// pcap-file's error in words.
fn pcap_error(e: &PcapError) -> String {
    match e {
        PcapError::InvalidField(what) => (*what).to_string(),
        PcapError::IncompleteBuffer => "a header or block is incomplete".to_string(),
        other => other.to_string(),
    }
}

fn read_u32(b: &[u8], big: bool) -> u32 {
    let bytes = [b[0], b[1], b[2], b[3]];
    if big {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    }
}

fn read_u16(b: &[u8], big: bool) -> u16 {
    let bytes = [b[0], b[1]];
    if big {
        u16::from_be_bytes(bytes)
    } else {
        u16::from_le_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_resolutions() {
        assert_eq!(
            TsScale::from_tsresol(6).unwrap().to_duration(1_500_000_123_456),
            Duration::new(1_500_000, 123_456_000)
        );
        assert_eq!(TsScale::from_tsresol(9).unwrap().to_duration(1_000_000_001), Duration::new(1, 1));
        assert_eq!(TsScale::from_tsresol(0).unwrap().to_duration(7), Duration::from_secs(7));
        assert_eq!(TsScale::from_tsresol(12).unwrap().to_duration(2_000_000_000_999), Duration::new(2, 0));
        assert_eq!(TsScale::from_tsresol(12).unwrap().to_duration(2_000_000_001_999), Duration::new(2, 1));
        assert_eq!(TsScale::from_tsresol(20), None);
    }

    #[test]
    fn binary_resolutions() {
        // 2^-10 s units: 1024 units = 1 s, 512 = 0.5 s.
        assert_eq!(TsScale::from_tsresol(0x8a).unwrap().to_duration(1024 + 512), Duration::from_millis(1500));
        assert_eq!(TsScale::from_tsresol(0x80).unwrap().to_duration(3), Duration::from_secs(3));
        // 2^-30: one unit ≈ 0.93 ns, truncated to 0.
        assert_eq!(TsScale::from_tsresol(0x9e).unwrap().to_duration(1), Duration::ZERO);
        assert_eq!(TsScale::from_tsresol(0xc0), None);
    }

    #[test]
    fn ts_offset_is_signed() {
        let mut iface = Iface { link: Ok(Link::Ethernet), scale: TsScale::Decimal(0), offset: -5, snaplen: 0 };
        assert_eq!(iface.timestamp(100), Duration::from_secs(95));
        assert_eq!(iface.timestamp(3), Duration::ZERO);
        iface.offset = 5;
        assert_eq!(iface.timestamp(100), Duration::from_secs(105));
    }

    #[test]
    fn hints() {
        assert!(magic_hint(0x1f8b_0800).contains("gunzip"));
        assert!(magic_hint(0x28b5_2ffd).contains("zstd"));
        assert!(magic_hint(0xa1b2_cd34).contains("editcap"));
        assert_eq!(magic_hint(0x1234_5678), "");
    }
}
