//! The offline capture source: `-i FILE`, replaying a pcap or pcapng file (reference §2,
//! "capture: offline file", and §3.20) instead of capturing live; the feed
//! ([`crate::feed`]) puts its frames into the workers' RX rings.
//!
//! ```text
//!  capture.pcap ─► PcapSource::next_frame ─► Ethernet frame + capture time ─► Pacer::due ─► feed ─► worker
//!   (mmap)         (pcap / pcapng, any       (Ethernet: where it lies;        (-a, -I, -T,       (same path as
//!                   supported link type)      SLL, SLL2, raw IP, loopback:     topspeed)          an RX frame)
//!                                             a synthesized header)
//!                                                         └──► Progress::line (stderr, `\r` on a tty)
//! ```
//!
//! # The source
//!
//! [`PcapSource`] reads both file formats (told apart by their magic) and returns every packet
//! as an **Ethernet frame**, so the worker's parser ([`crate::wire::parse`]) needs no other link
//! layer. Ethernet frames are copied as they are, VLAN tags included. Linux cooked (SLL, SLL2),
//! raw IP (101, and 12/14, the `DLT_RAW` values of some BSDs; 228/229) and BSD loopback (0, 108)
//! packets get a 14-byte header with zero MACs and the ethertype of their payload. The original
//! C tcpcopy rejects raw-IP pcaps (its L2 header must be ≥ 14 bytes); we accept them.
//!
//! The API does not allocate per packet. [`PcapSource::open`] maps the file
//! ([`crate::xsk::sys::map_file`]: it must not be rewritten while it is replayed), and
//! [`PcapSource::next_frame`] returns an Ethernet record as a slice of the mapping — parsed
//! where it lies, copied once, by the feed, into a UMEM frame — and builds other links' frames
//! in a scratch buffer the caller reuses. A file that cannot be mapped, and any reader given to
//! [`PcapSource::from_reader`], is read through one 1 MiB buffer (it grows only for a record
//! larger than that). [`PcapSource::next_into`] copies every frame into the caller's buffer. We use `pcap-file`'s parsers ([`pcap_file::pcap::PcapParser`],
//! [`pcap_file::pcapng::PcapNgParser`]) for headers, record framing and interface descriptions,
//! but not its readers: those cannot say at which byte a file is cut, their pcapng packet
//! block allocates its options per packet, and they take the raw timestamp of a pcapng packet
//! as nanoseconds whatever its interface's `if_tsresol` says. We apply `if_tsresol` (decimal or
//! binary) and `if_tsoffset` per interface.
//!
//! # What is skipped, what is an error
//!
//! Skipped and counted in [`SourceStats`] (the replay goes on):
//!
//! - `truncated`: a record with caplen < len (a snap length cut it). The original does the same:
//!   half a segment cannot be replayed.
//! - `short`: a record shorter than its link-layer header; `not_ip`: a raw-IP or loopback record
//!   whose version nibble is neither 4 nor 6.
//! - `foreign_link`: a pcapng packet of an interface whose link type we do not support (a file
//!   may mix interfaces; a file whose interfaces are *all* unsupported is an error at open).
//! - **A file that ends inside a record** (tcpdump killed, the disk full, a file copied while
//!   being written): the packets before it are returned, then the source ends as at a normal
//!   end of file, with [`SourceStats::truncated_tail`] set. [`PcapSource::truncation`] gives the
//!   [`OfflineError::Truncated`] to print as a warning, like `tcpdump -r` printing the packets
//!   and then "truncated dump file". Replaying the good packets is what the user wants.
//!
//! Errors ([`OfflineError`], every message starting with the file's path): the file cannot be
//! opened or read; it is empty, not a capture (wrong magic: the message names the magic, and
//! says so when the file is gzip or zstd compressed); it is cut inside its file header; its
//! link type is unsupported; a record is impossible (a pcap record over 256 KiB, a pcapng block
//! over 16 MiB or with mismatched lengths, a packet of an undescribed interface). Nothing after
//! a corrupt record can be trusted, so the error ends the replay; the packets before it have
//! been returned.
//!
//! # Pacing
//!
//! [`Pacer`] is pure logic with time as an argument (reference §3.20): packet *i* may go at
//! `start + E(i) / speed`, where the capture timeline `E` runs from the first packet, each gap
//! longer than `max_gap` (-I) cut to it, time going backwards clamped (never a negative wait,
//! never a reorder), and later loops (-T) appended right after the previous loop's last packet.
//! Cut time is taken out of `E` itself, so the packets after an idle gap keep their spacing
//! instead of bursting to catch up. See [`Pacer`] for the exact rules.
//!
//! # Progress
//!
//! [`Progress`] turns [`Position`] samples into a one-line bar with the position in the file,
//! the capture time replayed, the current rate and an ETA (capture time remaining ÷ speed).
//! [`PcapSource::scan`] measures the capture's paced span beforehand, if the caller wants an
//! exact total; without it, the total is estimated from the bytes read.

use std::io;
use std::path::PathBuf;

mod link;
mod pace;
mod progress;
mod source;

pub use link::{linktype_name, Link, SUPPORTED_LINK_TYPES};
pub use pace::{InvalidSpeed, PaceOptions, Pacer, Speed, CLOCK_STEP};
pub use progress::{Position, Progress};
pub use source::{Packet, PcapSource, SourceStats, Summary};

/// Why a capture file cannot be replayed; every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The file cannot be opened.
    #[error("{}: cannot open: {source}", path.display())]
    Open {
        /// The capture file.
        path: PathBuf,
        /// What `open(2)` said.
        source: io::Error,
    },
    /// Reading or seeking the file failed.
    #[error("{}: read failed at byte {offset}: {source}", path.display())]
    Read {
        /// The capture file.
        path: PathBuf,
        /// Where in the file.
        offset: u64,
        /// What the kernel said.
        source: io::Error,
    },
    /// The file has no bytes at all.
    #[error("{}: empty file (0 bytes), not a pcap or pcapng file", path.display())]
    Empty {
        /// The capture file.
        path: PathBuf,
    },
    /// The first four bytes are no pcap or pcapng magic.
    #[error("{}: not a pcap or pcapng file (magic 0x{magic:08x}){hint}", path.display())]
    NotPcap {
        /// The capture file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        magic: u32,
        /// What the file seems to be instead, with what to do ("" when unknown).
        hint: &'static str,
    },
    /// The file's link type (or, in pcapng, every interface's) cannot become Ethernet frames.
    #[error("{}: unsupported link type {linktype}{}; supported: {SUPPORTED_LINK_TYPES}", path.display(), name_in_parens(*linktype))]
    UnsupportedLinkType {
        /// The capture file.
        path: PathBuf,
        /// The LINKTYPE_ value.
        linktype: u32,
    },
    /// The file ends inside a header, record or block. At the start of the file this is an
    /// error; after the first record it ends the replay normally (see [`PcapSource::truncation`]).
    #[error("{}: truncated at byte {end} (the file ends inside {inside} that starts at byte {start})", path.display())]
    Truncated {
        /// The capture file.
        path: PathBuf,
        /// Where the incomplete piece starts.
        start: u64,
        /// Where the file ends.
        end: u64,
        /// What is incomplete: "the file header", "a packet record", "a pcapng block".
        inside: &'static str,
    },
    /// A header, record or block is impossible; nothing after it can be trusted.
    #[error("{}: corrupt file at byte {offset}: {detail}", path.display())]
    Corrupt {
        /// The capture file.
        path: PathBuf,
        /// Where the bad piece starts.
        offset: u64,
        /// What is wrong with it.
        detail: String,
    },
}

/// " (IEEE 802.11)" for a known link type, "" otherwise.
fn name_in_parens(linktype: u32) -> String {
    match linktype_name(linktype) {
        "" => String::new(),
        name => format!(" ({name})"),
    }
}
