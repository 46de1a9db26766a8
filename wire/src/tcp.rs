//! TCP segments (RFC 9293) and their options.
//!
//! The view's buffer is exactly the segment: the caller slices it to the IP payload, and the
//! checksum functions take the segment length for the pseudo header from the buffer length.
//!
//! # Options
//!
//! [`Options`] is the one TCP option walker of the workspace: [`Packet::options`] walks a
//! segment's options, [`Options::new`] any option bytes (a channel message carries them without
//! the rest of the segment). It yields `Result<TcpOption>`, with the rules of Linux's
//! `tcp_parse_options`:
//!
//! - `EOL` is yielded and ends the walk (what follows is padding);
//! - an option whose framing is broken — no length byte, a length below 2, or a length past the
//!   option bytes — yields one `Err(Error::BadTcpOption)` and ends the walk (nothing after it
//!   can be located);
//! - a known kind with a length that is wrong for it (an MSS of length 3) is well framed: it is
//!   yielded as [`TcpOption::Unknown`] with its bytes and the walk goes on, as Linux ignores it.
//!
//! [`TcpOption::emit`] writes an option, so the options we generate are built from the same
//! definitions.

use core::ops::Range;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::{get_u16, get_u32, put_u16, put_u32, Error, Result, IPPROTO_TCP};

/// Length of the TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// Bits of [`Packet::flags`].
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN-Echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Option kinds (RFC 9293 3.1, RFC 7323, RFC 2018).
pub mod kind {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No-operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks.
    pub const SACK: u8 = 5;
    /// Timestamps.
    pub const TIMESTAMPS: u8 = 8;
}

/// A TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// End of option list (kind 0).
    Eol,
    /// No-operation padding (kind 1).
    Nop,
    /// Maximum segment size (kind 2, length 4).
    Mss(u16),
    /// Window scale shift count (kind 3, length 3).
    WindowScale(u8),
    /// SACK permitted (kind 4, length 2).
    SackPermitted,
    /// SACK blocks (kind 5, length 2 + 8 × blocks).
    Sack(SackBlocks<'a>),
    /// Timestamps (kind 8, length 10).
    Timestamps {
        /// The sender's timestamp value.
        tsval: u32,
        /// The echoed timestamp.
        tsecr: u32,
    },
    /// Any other kind, or a known kind whose length is wrong for it.
    Unknown {
        /// The option kind.
        kind: u8,
        /// The bytes after the kind and length bytes.
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// Return the kind byte.
    pub fn kind(&self) -> u8 {
        match *self {
            TcpOption::Eol => kind::EOL,
            TcpOption::Nop => kind::NOP,
            TcpOption::Mss(_) => kind::MSS,
            TcpOption::WindowScale(_) => kind::WINDOW_SCALE,
            TcpOption::SackPermitted => kind::SACK_PERMITTED,
            TcpOption::Sack(_) => kind::SACK,
            TcpOption::Timestamps { .. } => kind::TIMESTAMPS,
            TcpOption::Unknown { kind, .. } => kind,
        }
    }

    /// Return the bytes the option takes in a header, kind and length included.
    pub fn buffer_len(&self) -> usize {
        match *self {
            TcpOption::Eol | TcpOption::Nop => 1,
            TcpOption::Mss(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(blocks) => 2 + blocks.as_bytes().len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Write the option at the start of `buf`; return its length ([`TcpOption::buffer_len`]).
    ///
    /// # Panics
    /// If `buf` is shorter than the option, or an `Unknown` option's data exceeds 253 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.buffer_len();
        let buf = &mut buf[..len];
        buf[0] = self.kind();
        if len > 1 {
            buf[1] = u8::try_from(len).expect("a TCP option is at most 255 bytes");
        }
        let data = &mut buf[len.min(2)..];
        match *self {
            TcpOption::Eol | TcpOption::Nop | TcpOption::SackPermitted => {}
            TcpOption::Mss(mss) => put_u16(data, 0, mss),
            TcpOption::WindowScale(shift) => data[0] = shift,
            TcpOption::Sack(blocks) => data.copy_from_slice(blocks.as_bytes()),
            TcpOption::Timestamps { tsval, tsecr } => {
                put_u32(data, 0, tsval);
                put_u32(data, 4, tsecr);
            }
            TcpOption::Unknown { data: bytes, .. } => data.copy_from_slice(bytes),
        }
        len
    }
}

/// Write `options` one after the other at the start of `buf`; return the bytes written.
///
/// # Panics
/// If `buf` is too short (see [`TcpOption::emit`]).
pub fn emit_options(options: &[TcpOption<'_>], buf: &mut [u8]) -> usize {
    options.iter().fold(0, |at, o| at + o.emit(&mut buf[at..]))
}

/// The blocks of a SACK option: 1 to 4 `(left edge, right edge)` pairs (RFC 2018).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackBlocks<'a>(&'a [u8]);

impl<'a> SackBlocks<'a> {
    /// Return the number of blocks.
    pub fn len(&self) -> usize {
        self.0.len() / 8
    }

    /// Return whether there are no blocks (never, for a parsed option).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Return block `i` as (left edge, right edge).
    pub fn get(&self, i: usize) -> Option<(u32, u32)> {
        let b = self.0.get(i * 8..i * 8 + 8)?;
        Some((get_u32(b, 0), get_u32(b, 4)))
    }

    /// Return an iterator over the blocks.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.0.chunks_exact(8).map(|b| (get_u32(b, 0), get_u32(b, 4)))
    }

    /// Return the option's data bytes (8 per block).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// Read the option at `opts[pos..]` (`pos < opts.len()`); return it and the next position.
fn read_option(opts: &[u8], pos: usize) -> Result<(TcpOption<'_>, usize)> {
    let kind = opts[pos];
    match kind {
        kind::EOL => return Ok((TcpOption::Eol, opts.len())),
        kind::NOP => return Ok((TcpOption::Nop, pos + 1)),
        _ => {}
    }
    let len = usize::from(*opts.get(pos + 1).ok_or(Error::BadTcpOption)?);
    let end = pos + len;
    if len < 2 || end > opts.len() {
        return Err(Error::BadTcpOption);
    }
    let data = &opts[pos + 2..end];
    let option = match (kind, len) {
        (kind::MSS, 4) => TcpOption::Mss(get_u16(data, 0)),
        (kind::WINDOW_SCALE, 3) => TcpOption::WindowScale(data[0]),
        (kind::SACK_PERMITTED, 2) => TcpOption::SackPermitted,
        (kind::SACK, _) if len > 2 && len % 8 == 2 => TcpOption::Sack(SackBlocks(data)),
        (kind::TIMESTAMPS, 10) => TcpOption::Timestamps { tsval: get_u32(data, 0), tsecr: get_u32(data, 4) },
        _ => TcpOption::Unknown { kind, data },
    };
    Ok((option, end))
}

/// The TCP option walker (see the module docs for `EOL` and malformed options).
#[derive(Debug, Clone)]
pub struct Options<'a> {
    opts: &'a [u8],
    pos: usize,
}

impl<'a> Options<'a> {
    /// Walk the option bytes `opts` (what follows the fixed 20-byte header).
    pub const fn new(opts: &'a [u8]) -> Options<'a> {
        Options { opts, pos: 0 }
    }

    /// Return the offset in the option bytes of the option `next` returns (their length once
    /// the walk is over).
    pub fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.opts.len() {
            return None;
        }
        match read_option(self.opts, self.pos) {
            Ok((option, next)) => {
                self.pos = next;
                Some(Ok(option))
            }
            Err(e) => {
                self.pos = self.opts.len();
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for Options<'_> {}

view! {
    /// A view of a TCP segment.
    Packet, new_checked: "Wrap a buffer, checking the data offset against it."
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Check that the buffer holds the fixed header and the header the data offset declares.
    ///
    /// # Errors
    /// [`Error::Truncated`] below 20 bytes, [`Error::BadDataOffset`] if the data offset is
    /// below 5 or passes the buffer.
    pub fn check(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if header_len < MIN_HEADER_LEN || header_len > len {
            return Err(Error::BadDataOffset);
        }
        Ok(())
    }

    /// Return the source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Return the destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Return the sequence number.
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ)
    }

    /// Return the acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK)
    }

    /// Return the header length in bytes (data offset * 4).
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// Return the flag byte (CWR ECE URG ACK PSH RST SYN FIN; see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Return the window field (unscaled).
    pub fn window(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Return the checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Return the urgent pointer.
    pub fn urgent_ptr(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Return the raw option bytes (`20..header_len`).
    pub fn options_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..usize::from(self.header_len())]
    }

    /// Return the option walker over this segment's options.
    pub fn options(&self) -> Options<'_> {
        Options::new(self.options_bytes())
    }

    /// Return the range in the header of the first option of kind `kind` the walk reaches.
    pub fn find_option(&self, kind: u8) -> Option<Range<usize>> {
        let mut walk = self.options();
        loop {
            let at = MIN_HEADER_LEN + walk.offset();
            let option = walk.next()?.ok()?;
            if option.kind() == kind {
                return Some(at..at + option.buffer_len());
            }
        }
    }

    /// Find the timestamps option: the offset of TSval within the header, TSval and TSecr.
    ///
    /// Like every option reader it stops at `EOL` or a malformed option (returning `None`).
    pub fn find_timestamps(&self) -> Option<(usize, u32, u32)> {
        let mut walk = self.options();
        loop {
            let at = MIN_HEADER_LEN + walk.offset();
            if let TcpOption::Timestamps { tsval, tsecr } = walk.next()?.ok()? {
                return Some((at + 2, tsval, tsecr));
            }
        }
    }

    /// Return the payload (after `header_len`).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }

    /// Return the partial sum of the segment with the IPv4 pseudo header.
    fn sum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let b = self.buffer.as_ref();
        // An IPv4 segment is shorter than 64 KiB, so the length fits the 16-bit field.
        checksum::sum(b, checksum::pseudo_header_v4(src, dst, IPPROTO_TCP, b.len() as u16))
    }

    /// Return the partial sum of the segment with the IPv6 pseudo header.
    fn sum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u32 {
        let b = self.buffer.as_ref();
        checksum::sum(b, checksum::pseudo_header_v6(src, dst, IPPROTO_TCP, b.len() as u32))
    }

    /// Return whether the checksum is correct for an IPv4 segment from `src` to `dst`.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::fold(self.sum_v4(src, dst)) == 0xffff
    }

    /// Return whether the checksum is correct for an IPv6 segment from `src` to `dst`.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        checksum::fold(self.sum_v6(src, dst)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source port.
    pub fn set_src_port(&mut self, port: u16) {
        put_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Set the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        put_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Set the sequence number.
    pub fn set_seq_number(&mut self, seq: u32) {
        put_u32(self.buffer.as_mut(), field::SEQ, seq);
    }

    /// Set the acknowledgment number.
    pub fn set_ack_number(&mut self, ack: u32) {
        put_u32(self.buffer.as_mut(), field::ACK, ack);
    }

    /// Set the header length in bytes (a multiple of 4, 20..=60), keeping the reserved bits.
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *b = (*b & 0x0f) | ((len / 4) << 4);
    }

    /// Set the flag byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Set the window field.
    pub fn set_window(&mut self, window: u16) {
        put_u16(self.buffer.as_mut(), field::WINDOW, window);
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, checksum);
    }

    /// Set the urgent pointer.
    pub fn set_urgent_ptr(&mut self, ptr: u16) {
        put_u16(self.buffer.as_mut(), field::URGENT, ptr);
    }

    /// Overwrite TSval and TSecr at `offset`, as returned by [`Packet::find_timestamps`].
    pub fn set_timestamps(&mut self, offset: usize, tsval: u32, tsecr: u32) {
        let b = self.buffer.as_mut();
        put_u32(b, offset, tsval);
        put_u32(b, offset + 4, tsecr);
    }

    /// Overwrite every option of kind `kind` the walk reaches with NOPs (e.g. SACK blocks that
    /// name another connection's sequence numbers). `EOL` and `NOP` themselves are left alone.
    pub fn nop_out_options(&mut self, kind: u8) {
        if kind <= kind::NOP {
            return;
        }
        // Each pass turns the first remaining one into NOPs, which the next pass walks over.
        while let Some(range) = self.find_option(kind) {
            self.buffer.as_mut()[range].fill(kind::NOP);
        }
    }

    /// Return the raw option bytes, mutably.
    pub fn options_bytes_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..end]
    }

    /// Return the payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        &mut self.buffer.as_mut()[start..]
    }

    /// Compute and store the checksum for an IPv4 segment from `src` to `dst`.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::finish(self.sum_v4(src, dst));
        self.set_checksum(c);
    }

    /// Compute and store the checksum for an IPv6 segment from `src` to `dst`.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::finish(self.sum_v6(src, dst));
        self.set_checksum(c);
    }
}

/// Declare a getter and a setter for each flag bit (`fin()` and `set_fin(bool)` for [`flags::FIN`], ...).
macro_rules! flag_accessors {
    ($($get:ident, $set:ident: $bit:ident;)*) => {
        impl<T: AsRef<[u8]>> Packet<T> {
            $(
                #[doc = concat!("Return the ", stringify!($bit), " flag.")]
                pub fn $get(&self) -> bool {
                    self.flags() & flags::$bit != 0
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
            $(
                #[doc = concat!("Set the ", stringify!($bit), " flag.")]
                pub fn $set(&mut self, value: bool) {
                    let f = self.flags();
                    self.set_flags(if value { f | flags::$bit } else { f & !flags::$bit });
                }
            )*
        }
    };
}

flag_accessors! {
    fin, set_fin: FIN;
    syn, set_syn: SYN;
    rst, set_rst: RST;
    psh, set_psh: PSH;
    ack, set_ack: ACK;
    urg, set_urg: URG;
    ece, set_ece: ECE;
    cwr, set_cwr: CWR;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{DATA_V4, FIN_V4, RST_V4_PADDED, SYN_V4, SYN_V6};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn collect<'a>(p: &'a Packet<&[u8]>) -> ([Option<Result<TcpOption<'a>>>; 8], usize) {
        let mut out = [None; 8];
        let mut n = 0;
        for (slot, o) in out.iter_mut().zip(p.options()) {
            *slot = Some(o);
            n += 1;
        }
        (out, n)
    }

    #[test]
    fn read_syn_with_options() {
        let p = Packet::new_checked(&SYN_V4[34..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x1234_5678);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), flags::SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst() && !p.psh());
        assert!(!p.urg() && !p.ece() && !p.cwr());
        assert_eq!(p.window(), 64240);
        assert_eq!(p.checksum(), 0x518e);
        assert_eq!(p.urgent_ptr(), 0);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum_v4(CLIENT, SERVER));
        assert!(!p.verify_checksum_v4(SERVER, SERVER));

        let (opts, n) = collect(&p);
        assert_eq!(n, 5);
        assert_eq!(
            opts[..5],
            [
                Some(Ok(TcpOption::Mss(1460))),
                Some(Ok(TcpOption::SackPermitted)),
                Some(Ok(TcpOption::Timestamps { tsval: 123_456, tsecr: 0 })),
                Some(Ok(TcpOption::Nop)),
                Some(Ok(TcpOption::WindowScale(7))),
            ]
        );
        assert_eq!(p.find_timestamps(), Some((28, 123_456, 0)));
    }

    #[test]
    fn read_data_segment() {
        let p = Packet::new_checked(&DATA_V4[34..]).unwrap();
        assert_eq!(p.flags(), flags::PSH | flags::ACK);
        assert!(p.psh() && p.ack());
        assert_eq!(p.ack_number(), 0x9abc_def1);
        assert_eq!(p.header_len(), 32);
        assert_eq!(p.window(), 502);
        assert_eq!(p.payload(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(p.verify_checksum_v4(CLIENT, SERVER));
        let (opts, n) = collect(&p);
        assert_eq!(n, 3);
        assert_eq!(opts[2], Some(Ok(TcpOption::Timestamps { tsval: 123_556, tsecr: 0x89ab_cdef })));
        assert_eq!(p.find_timestamps(), Some((24, 123_556, 0x89ab_cdef)));
    }

    #[test]
    fn read_fin_and_rst() {
        let p = Packet::new_checked(&FIN_V4[34..]).unwrap();
        assert!(p.fin() && p.ack() && !p.syn());
        assert_eq!(p.options().count(), 0);
        assert_eq!(p.find_timestamps(), None);
        assert!(p.verify_checksum_v4(CLIENT, SERVER));

        let p = Packet::new_checked(&RST_V4_PADDED[34..54]).unwrap();
        assert_eq!(p.flags(), flags::RST | flags::ACK);
        assert_eq!(p.window(), 0);
        assert!(p.verify_checksum_v4(CLIENT, SERVER));
    }

    #[test]
    fn read_ipv6_syn() {
        let p = Packet::new_checked(&SYN_V6[54..]).unwrap();
        let (src, dst) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        assert!(p.syn());
        assert_eq!(p.checksum(), 0x0800);
        assert!(p.verify_checksum_v6(&src, &dst));
        assert!(!p.verify_checksum_v6(&dst, &dst));
        assert_eq!(p.options().next(), Some(Ok(TcpOption::Mss(1440))));
    }

    #[test]
    fn malformed_headers() {
        let seg = &SYN_V4[34..];
        assert_eq!(Packet::new_checked(&seg[..19]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&seg[..39]).unwrap_err(), Error::BadDataOffset);
        assert!(Packet::new_checked(&seg[..40]).is_ok());
        let mut b = [0u8; 40];
        b.copy_from_slice(seg);
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadDataOffset);
        b[12] = 0xf0;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadDataOffset);
    }

    /// Return a segment whose 20 option bytes are `opts` (padded with EOL).
    fn with_options(opts: &[u8]) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..20].copy_from_slice(&FIN_V4[34..]);
        b[12] = 0xa0;
        b[20..20 + opts.len()].copy_from_slice(opts);
        b
    }

    /// Walk `opts` as option bytes; return the items and the offset before each.
    fn walk(opts: &[u8]) -> Vec<(usize, Result<TcpOption<'_>>)> {
        let mut w = Options::new(opts);
        let mut out = Vec::new();
        loop {
            let at = w.offset();
            match w.next() {
                Some(o) => out.push((at, o)),
                None => break,
            }
        }
        assert_eq!(w.offset(), opts.len(), "the walk ends at the end of the bytes");
        assert_eq!(w.next(), None, "fused");
        out
    }

    #[test]
    fn walker_reads_every_kind() {
        #[rustfmt::skip]
        let opts = [
            2, 4, 0x05, 0xb4,                               // MSS 1460
            1,                                              // NOP
            3, 3, 14,                                       // WS 14
            4, 2,                                           // SACK-permitted
            8, 10, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe,      // TS 1 / 0xfffffffe
            5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, // SACK 1-2, 3-4
            30, 4, 0xab, 0xcd,                              // unknown kind 30
            254, 2,                                         // experimental kind, no data
            0, 0, 0,                                        // EOL, padding
        ];
        let items = walk(&opts);
        let sack = SackBlocks(&opts[22..38]);
        assert_eq!(
            items,
            vec![
                (0, Ok(TcpOption::Mss(1460))),
                (4, Ok(TcpOption::Nop)),
                (5, Ok(TcpOption::WindowScale(14))),
                (8, Ok(TcpOption::SackPermitted)),
                (10, Ok(TcpOption::Timestamps { tsval: 1, tsecr: 0xffff_fffe })),
                (20, Ok(TcpOption::Sack(sack))),
                (38, Ok(TcpOption::Unknown { kind: 30, data: &[0xab, 0xcd] })),
                (42, Ok(TcpOption::Unknown { kind: 254, data: &[] })),
                (44, Ok(TcpOption::Eol)),
            ]
        );
        assert_eq!((sack.len(), sack.is_empty()), (2, false));
        assert_eq!(sack.iter().collect::<Vec<_>>(), vec![(1, 2), (3, 4)]);
        assert_eq!((sack.get(1), sack.get(2)), (Some((3, 4)), None));
        // Kind, length and emit agree with what was read, byte for byte.
        let mut out = [0u8; 47];
        let mut at = 0;
        for (offset, o) in &items {
            let o = o.unwrap();
            assert_eq!(*offset, at);
            assert_eq!(o.kind(), opts[at]);
            at += o.emit(&mut out[at..]);
            assert_eq!(at - offset, o.buffer_len());
        }
        assert_eq!(out[..45], opts[..45]);
    }

    #[test]
    fn walker_stops_at_eol() {
        // EOL ends the walk: the timestamps after it are padding, never read.
        let opts = [1, 0, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(walk(&opts), vec![(0, Ok(TcpOption::Nop)), (1, Ok(TcpOption::Eol))]);
        assert_eq!(walk(&[0; 4]), vec![(0, Ok(TcpOption::Eol))]);
        assert_eq!(walk(&[]), vec![]);
        let b = with_options(&[0, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().find_timestamps(), None);
    }

    #[test]
    fn walker_ends_on_broken_framing() {
        for (bad, good_before) in [
            (&[0x02, 0x00][..], 0),                      // length 0
            (&[0x01, 0x13, 0x01][..], 1),                // NOP, then length 1
            (&[0x08, 0x0a, 0, 0, 0, 1][..], 0),          // TS cut short (truncated)
            (&[0x01, 0x01, 0x02][..], 2),                // a kind with no length byte
            (&[0x05, 0x0a, 0, 0, 0, 1, 0, 0, 0][..], 0), // SACK past the end
            (&[0x03, 0x03, 0x07, 0x1e, 0xff, 0][..], 1), // WS, then length 255
        ] {
            let items = walk(bad);
            assert_eq!(items.len(), good_before + 1, "{bad:?}");
            assert!(items[..good_before].iter().all(|(_, o)| o.is_ok()), "{bad:?}");
            assert_eq!(items[good_before].1, Err(Error::BadTcpOption), "{bad:?}");
        }
    }

    #[test]
    fn wrong_length_for_its_kind_is_unknown_and_the_walk_goes_on() {
        for (bad, kind) in [
            (&[0x02, 0x03, 0x05][..], 2),             // MSS of length 3
            (&[0x03, 0x02][..], 3),                   // WS of length 2
            (&[0x04, 0x03, 0x00][..], 4),             // SACK-permitted of length 3
            (&[0x05, 0x02][..], 5),                   // SACK without blocks
            (&[0x05, 0x06, 0, 0, 0, 1][..], 5),       // SACK with half a block
            (&[0x08, 0x08, 0, 0, 0, 0, 0, 0][..], 8), // TS of length 8
        ] {
            let mut opts = [0u8; 16];
            opts[..bad.len()].copy_from_slice(bad);
            opts[bad.len()..bad.len() + 4].copy_from_slice(&[2, 4, 0x05, 0xb4]);
            let items = walk(&opts[..bad.len() + 4]);
            assert_eq!(items[0].1, Ok(TcpOption::Unknown { kind, data: &bad[2..] }), "{bad:?}");
            assert_eq!(items[1], (bad.len(), Ok(TcpOption::Mss(1460))), "{bad:?}");
        }
        // A segment's timestamps are found past such an option.
        let b = with_options(&[2, 3, 5, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().find_timestamps(), Some((26, 7, 9)));
    }

    #[test]
    fn malformed_options_in_a_segment() {
        // A kind byte as the very last option byte has no length byte.
        let mut b = with_options(&[1; 20]);
        b[39] = 0x02;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options().last(), Some(Err(Error::BadTcpOption)));
        // Timestamps after a broken option are not found.
        let b = with_options(&[2, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options().next(), Some(Err(Error::BadTcpOption)));
        assert_eq!(p.find_timestamps(), None);
        assert_eq!(p.find_option(kind::TIMESTAMPS), None);
    }

    #[test]
    fn find_and_nop_out_options() {
        // Two SACK options around the timestamps, then EOL and a SACK-shaped padding.
        let mut b = with_options(&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 1, 0, 5, 2, 0, 0]);
        b[12] = 0xa0;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.find_option(kind::SACK), Some(22..32));
        assert_eq!(p.find_option(kind::TIMESTAMPS), None);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.nop_out_options(kind::SACK);
        assert_eq!(&b[20..32], &[1; 12]);
        assert_eq!(&b[32..40], &[1, 1, 1, 0, 5, 2, 0, 0], "nothing after EOL is touched");

        // Every SACK option goes, whatever its length; the others stay.
        let opts = [5, 2, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 3, 3, 7, 2, 4, 5, 0xb4];
        let mut b = with_options(&opts);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.nop_out_options(kind::SACK);
        p.nop_out_options(kind::NOP);
        p.nop_out_options(kind::EOL);
        assert_eq!(&b[20..33], &[1; 13]);
        assert_eq!(&b[33..], &opts[13..]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.find_option(kind::SACK), None);
        assert_eq!(p.find_option(kind::MSS), Some(36..40));
    }

    #[test]
    fn emit_options_in_order() {
        let mut buf = [0xee; 16];
        let n =
            emit_options(&[TcpOption::Nop, TcpOption::Nop, TcpOption::Timestamps { tsval: 11, tsecr: 22 }], &mut buf);
        assert_eq!(n, 12);
        assert_eq!(buf[..12], [1, 1, 8, 10, 0, 0, 0, 11, 0, 0, 0, 22]);
        assert_eq!(buf[12..], [0xee; 4]);
        assert_eq!(TcpOption::Mss(1460).emit(&mut buf), 4);
        assert_eq!(buf[..4], [2, 4, 0x05, 0xb4]);
        assert_eq!(emit_options(&[TcpOption::Nop, TcpOption::WindowScale(7)], &mut buf), 4);
        assert_eq!(buf[..4], [1, 3, 3, 7]);
        assert_eq!(emit_options(&[], &mut buf), 0);
    }

    #[test]
    #[should_panic]
    fn emit_panics_on_a_short_buffer() {
        TcpOption::Timestamps { tsval: 1, tsecr: 2 }.emit(&mut [0; 9]);
    }

    #[test]
    fn write_every_field() {
        let mut b = [0u8; 36];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(0x1234);
        p.set_dst_port(443);
        p.set_seq_number(0xdead_beef);
        p.set_ack_number(0x0102_0304);
        p.set_header_len(32);
        p.set_flags(0);
        p.set_syn(true);
        p.set_ack(true);
        p.set_cwr(true);
        p.set_ece(true);
        p.set_urg(true);
        p.set_psh(true);
        p.set_rst(true);
        p.set_fin(true);
        p.set_urg(false);
        p.set_window(0xfffe);
        p.set_urgent_ptr(7);
        p.options_bytes_mut().copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
        let (off, _, _) = p.find_timestamps().unwrap();
        p.set_timestamps(off, 0x0a0b_0c0d, 0x1112_1314);
        p.payload_mut().copy_from_slice(b"data");
        p.fill_checksum_v4(CLIENT, SERVER);
        assert!(p.verify_checksum_v4(CLIENT, SERVER));
        let c = p.checksum();
        assert_eq!(
            b,
            [
                0x12,
                0x34,
                0x01,
                0xbb,
                0xde,
                0xad,
                0xbe,
                0xef,
                0x01,
                0x02,
                0x03,
                0x04,
                0x80,
                0xdf,
                0xff,
                0xfe,
                (c >> 8) as u8,
                c as u8,
                0x00,
                0x07,
                1,
                1,
                8,
                10,
                0x0a,
                0x0b,
                0x0c,
                0x0d,
                0x11,
                0x12,
                0x13,
                0x14,
                b'd',
                b'a',
                b't',
                b'a'
            ]
        );
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        // (Not v4-mapped addresses: their pseudo-header sum equals the IPv4 one.)
        let (src, dst): (Ipv6Addr, Ipv6Addr) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        p.fill_checksum_v6(&src, &dst);
        assert!(p.verify_checksum_v6(&src, &dst));
        assert!(!p.verify_checksum_v4(CLIENT, SERVER));
    }

    #[test]
    fn fill_reproduces_fixture_checksums() {
        for (frame, end) in [(&SYN_V4[..], 74), (&DATA_V4[..], 93), (&RST_V4_PADDED[..], 54)] {
            let mut seg = [0u8; 64];
            let seg = &mut seg[..end - 34];
            seg.copy_from_slice(&frame[34..end]);
            let mut p = Packet::new_checked(&mut seg[..]).unwrap();
            let want = p.checksum();
            p.set_checksum(0x5555);
            p.fill_checksum_v4(CLIENT, SERVER);
            assert_eq!(p.checksum(), want);
        }
    }
}
