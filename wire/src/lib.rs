//! Zero-copy views of the packet headers xdpcopy reads and rewrites: the one wire layer of
//! the workspace.
//!
//! Every header is a view over a byte buffer, `Packet<T: AsRef<[u8]>>` (smoltcp style): getters
//! need `T: AsRef<[u8]>`, setters `T: AsMut<[u8]>`, so the same type reads a received UMEM frame
//! (`&[u8]`) and rewrites it in place (`&mut [u8]`). Nothing here allocates, does I/O or uses
//! `unsafe`; there are no casts of bytes to packed structs.
//!
//! # Who uses it
//!
//! A crate of its own so that every user shares it: `dataplane` (parse, rewrite, the session
//! engine; it re-exports this crate as `dataplane::wire`), `control` (the channel codec's
//! 64-byte header message is an IPv4 + TCP header read through these views) and `intercept`.
//! `dataplane` depends on `control`, so the views could not live in `dataplane`. It depends on
//! nothing but `std`.
//!
//! # Checked and unchecked views
//!
//! `new_checked` validates every length field against the buffer, after which no getter or
//! setter can panic. `new_unchecked` is for buffers we build ourselves; on a buffer that is too
//! short, accessors panic. The error rule is:
//!
//! - [`Error::Truncated`]: the buffer is shorter than the fixed part of a header;
//! - a field error ([`Error::BadHeaderLen`], [`Error::BadTotalLen`], [`Error::BadDataOffset`]):
//!   a length field is impossible or points past the buffer.
//!
//! A buffer may be longer than its header says (Ethernet padding after an IP packet): that is
//! fine, and `payload()` stops where the length field says.
//!
//! # Parse is the filter
//!
//! [`parse::parse`] walks Ethernet, one optional VLAN tag, IPv4 or IPv6 and TCP in one pass and
//! returns `Ok(None)` for frames that are not ours (not IP, not TCP: counted as filtered) and
//! `Err` for malformed ones (counted per [`Error::name`]). It never verifies checksums: mirrored
//! frames from a local stack carry partial checksums.
//!
//! # TCP options
//!
//! [`tcp::Options`] is the only TCP option walker: every reader of options (the session engine's
//! timestamp rewrite and SACK stripping, the returned response headers) goes through it.
//!
//! # Checksums
//!
//! [`checksum`] has the RFC 1071 sum (fast, differential-tested against a plain one) and the
//! RFC 1624 incremental updates used after a header rewrite; it is the only checksum code.
#![deny(unsafe_code)]

use core::fmt;

/// Declare a header view: `pub struct $name<T: AsRef<[u8]>>` over a buffer, with
/// `new_unchecked`, `new_checked` (wrap, then the type's own `check`) and `into_inner`.
///
/// The doc line of `new_checked` says what `check` checks; the type implements `check` and its
/// accessors itself.
macro_rules! view {
    ($(#[$attr:meta])* $name:ident, new_checked: $checked:literal) => {
        $(#[$attr])*
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wrap a buffer without checking it.
            pub const fn new_unchecked(buffer: T) -> $name<T> {
                $name { buffer }
            }

            #[doc = $checked]
            ///
            /// # Errors
            #[doc = concat!("See [`", stringify!($name), "::check`].")]
            pub fn new_checked(buffer: T) -> Result<$name<T>> {
                let view = Self::new_unchecked(buffer);
                view.check()?;
                Ok(view)
            }

            /// Consume the view and return the buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod tcp;

/// IP protocol number (IPv4 `protocol`, IPv6 `next_header`) of TCP.
pub const IPPROTO_TCP: u8 = 6;

/// Why a frame could not be read; small and `Copy` so the hot loop can count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the fixed part of a header.
    Truncated,
    /// The IP version nibble disagrees with the ethertype.
    BadVersion,
    /// The IPv4 IHL is below 5 or points past the buffer.
    BadHeaderLen,
    /// The IPv4 total length / IPv6 payload length is below the header or past the buffer.
    BadTotalLen,
    /// The packet is an IP fragment of a TCP segment (ports of non-first fragments are
    /// unknowable): IPv4 with MF or an offset, IPv6 with a fragment header.
    Fragmented,
    /// The TCP data offset is below 5 or points past the segment.
    BadDataOffset,
    /// A TCP option has a bad length.
    BadTcpOption,
    /// An IPv6 extension header the walk cannot skip (AH, or more than
    /// [`ipv6::MAX_EXT_HEADERS`] of them) stands before the transport header.
    Ipv6Extension,
}

impl Error {
    /// Every variant, in declaration order (index with [`Error::index`]).
    pub const ALL: [Error; 8] = [
        Error::Truncated,
        Error::BadVersion,
        Error::BadHeaderLen,
        Error::BadTotalLen,
        Error::Fragmented,
        Error::BadDataOffset,
        Error::BadTcpOption,
        Error::Ipv6Extension,
    ];

    /// Return the snake_case name used for this error's drop counter.
    pub fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadVersion => "bad_ip_version",
            Error::BadHeaderLen => "bad_ip_header_len",
            Error::BadTotalLen => "bad_ip_total_len",
            Error::Fragmented => "fragmented",
            Error::BadDataOffset => "bad_tcp_data_offset",
            Error::BadTcpOption => "bad_tcp_option",
            Error::Ipv6Extension => "unskippable_extension",
        }
    }

    /// Return the position of this variant in [`Error::ALL`] (for counter arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated frame",
            Error::BadVersion => "bad IP version",
            Error::BadHeaderLen => "bad IPv4 header length",
            Error::BadTotalLen => "bad IP length",
            Error::Fragmented => "IP fragment",
            Error::BadDataOffset => "bad TCP data offset",
            Error::BadTcpOption => "malformed TCP option",
            Error::Ipv6Extension => "IPv6 extension header that cannot be skipped",
        })
    }
}

impl std::error::Error for Error {}

/// The result of reading a header.
pub type Result<T> = core::result::Result<T, Error>;

/// Read a big-endian `u16` at `at`.
#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Read a big-endian `u32` at `at`.
#[inline]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Write a big-endian `u16` at `at`.
#[inline]
pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Write a big-endian `u32` at `at`.
#[inline]
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Literal frames and a PRNG shared by the unit tests of `wire` and of the crates built on it
/// (`dataplane`'s rewrite and session tests).
///
/// Compiled for this crate's own tests and behind the `testdata` feature, which `dataplane`
/// enables from its `[dev-dependencies]` only: the fixtures never reach a normal build.
///
/// Frames were built and checksummed by an independent script; all are client 10.0.0.1:40000 /
/// 2001:db8::1 (MAC 02:..:01) to server 10.0.0.2:80 / 2001:db8::2 (MAC 02:..:02).
#[cfg(any(test, feature = "testdata"))]
#[rustfmt::skip]
pub mod testdata {
    /// SYN, options MSS 1460, SACK-permitted, TS 123456/0, NOP, WS 7; seq 0x12345678, win 64240.
    pub const SYN_V4: [u8; 74] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x00, 0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06,
        0x0a, 0x74, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x9c, 0x40,
        0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02,
        0xfa, 0xf0, 0x51, 0x8e, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02,
        0x08, 0x0a, 0x00, 0x01, 0xe2, 0x40, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03,
        0x03, 0x07,
    ];
    /// PSH|ACK, options NOP NOP TS 123556/0x89abcdef, 27 bytes of HTTP request.
    pub const DATA_V4: [u8; 93] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x00, 0x45, 0x00, 0x00, 0x4f, 0x1c, 0x47, 0x40, 0x00, 0x40, 0x06,
        0x0a, 0x60, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x9c, 0x40,
        0x00, 0x50, 0x12, 0x34, 0x56, 0x79, 0x9a, 0xbc, 0xde, 0xf1, 0x80, 0x18,
        0x01, 0xf6, 0x53, 0xbf, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x01,
        0xe2, 0xa4, 0x89, 0xab, 0xcd, 0xef, 0x47, 0x45, 0x54, 0x20, 0x2f, 0x20,
        0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31, 0x0d, 0x0a, 0x48, 0x6f,
        0x73, 0x74, 0x3a, 0x20, 0x78, 0x0d, 0x0a, 0x0d, 0x0a,
    ];
    /// FIN|ACK, no options, no payload.
    pub const FIN_V4: [u8; 54] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x1c, 0x48, 0x40, 0x00, 0x40, 0x06,
        0x0a, 0x86, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x9c, 0x40,
        0x00, 0x50, 0x12, 0x34, 0x56, 0x94, 0x9a, 0xbc, 0xde, 0xf1, 0x50, 0x11,
        0x01, 0xf6, 0x1a, 0xd4, 0x00, 0x00,
    ];
    /// RST|ACK, window 0, IP ident 0, followed by 6 bytes of Ethernet padding.
    pub const RST_V4_PADDED: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06,
        0x26, 0xce, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x9c, 0x40,
        0x00, 0x50, 0x12, 0x34, 0x56, 0x95, 0x9a, 0xbc, 0xde, 0xf1, 0x50, 0x14,
        0x00, 0x00, 0x1c, 0xc6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    /// 802.1Q tag TCI 0x2064 (PCP 1, VID 100), pure ACK, TTL 63, 2 bytes of padding.
    pub const VLAN_V4_PADDED: [u8; 60] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x81, 0x00, 0x20, 0x64, 0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x1c, 0x49,
        0x40, 0x00, 0x3f, 0x06, 0x0b, 0x85, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00,
        0x00, 0x02, 0x9c, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x79, 0x9a, 0xbc,
        0xde, 0xf1, 0x50, 0x10, 0x01, 0xf6, 0x1a, 0xf0, 0x00, 0x00, 0x00, 0x00,
    ];
    /// IPv6 SYN, flow label 0x12345, options MSS 1440, SACK-permitted, TS 123456/0, NOP, WS 7.
    pub const SYN_V6: [u8; 94] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x86, 0xdd, 0x60, 0x01, 0x23, 0x45, 0x00, 0x28, 0x06, 0x40, 0x20, 0x01,
        0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x00, 0x50, 0x12, 0x34,
        0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfd, 0x20, 0x08, 0x00,
        0x00, 0x00, 0x02, 0x04, 0x05, 0xa0, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01,
        0xe2, 0x40, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];
    /// First IPv4 fragment (MF set, offset 0) of a PSH|ACK segment with 16 bytes of payload.
    pub const FRAG_V4: [u8; 70] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x00, 0x45, 0x00, 0x00, 0x38, 0x1c, 0x4a, 0x20, 0x00, 0x40, 0x06,
        0x2a, 0x74, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x9c, 0x40,
        0x00, 0x50, 0x12, 0x34, 0x56, 0x79, 0x9a, 0xbc, 0xde, 0xf1, 0x50, 0x18,
        0x01, 0xf6, 0x57, 0x14, 0x00, 0x00, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78,
        0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78, 0x78,
    ];

    /// Every valid TCP fixture above (not the fragment).
    pub const ALL_TCP: [&[u8]; 6] =
        [&SYN_V4, &DATA_V4, &FIN_V4, &RST_V4_PADDED, &VLAN_V4_PADDED, &SYN_V6];

    /// A xorshift64* PRNG: deterministic random data without dependencies.
    pub struct XorShift(pub u64);

    impl XorShift {
        /// Return the next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Return a random `u32`.
        pub fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        /// Return a random `u16`.
        pub fn next_u16(&mut self) -> u16 {
            (self.next_u64() >> 48) as u16
        }
        /// Return a random number below `n` (`n > 0`).
        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
        /// Fill `buf` with random bytes.
        pub fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = (self.next_u64() >> 56) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_unique_snake_case_and_indexed() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!(e.name().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!e.to_string().is_empty());
            for other in &Error::ALL[i + 1..] {
                assert_ne!(e.name(), other.name());
            }
        }
        assert_eq!(Error::Truncated.to_string(), "truncated frame");
        assert_eq!(Error::BadHeaderLen.name(), "bad_ip_header_len");
    }
}
