//! Wire codec of the header-return channel: TCPCopy protocol version 6.
//!
//! Two message kinds travel over one plain TCP connection (reference §4):
//!
//! ```text
//! copier → intercept, 14 bytes (hello first, then CLIENT_ADD / CLIENT_DEL):
//!   0        4      6      8          12     14
//!   | cli ip | cport| type | target ip| tport|
//!
//! intercept → copier, 64 bytes, in combined frames (default) or bare:
//!   frame = count:u16 (≤ 16) ‖ count × [ IPv4 header 20 | TCP fixed header 20 | options 24 ]
//! ```
//!
//! Every field is in network byte order; there is no padding, checksum or authentication.
//!
//! # Design
//!
//! - Nothing here allocates or does I/O. Messages are fixed-size byte arrays ([`CopierMsg`]
//!   encodes to `[u8; 14]`, [`HeaderMsg`] *is* a `[u8; 64]` with accessors), so a batch of them
//!   lives on the stack or inside a fixed [`FrameBuilder`].
//! - The decoders are incremental: they take arbitrary chunks as the socket hands them over,
//!   keep a partial message in a fixed buffer and call back once per complete message. A
//!   partial frame is simply waited for (the original busy-looped on `EAGAIN`, defect #15).
//! - A combined frame's count is checked before any of its messages is read: a count above
//!   [`MAX_FRAME_MSGS`] is a broken stream and poisons the decoder; the caller must close the
//!   connection (wire compatibility, defect #15/#19).
//! - The hello decoder reports the two failure modes of the original separately: a non-zero
//!   client address in the first 8 bytes is a *too old* copier ([`CopierError::TooOld`]); any
//!   version other than [`PROTOCOL_VERSION`] is reported in [`CopierEvent::Hello`] and left to the
//!   caller's policy (the original only warns).
//!
//! # The IP header inside a [`HeaderMsg`]
//!
//! The original copies the response's first 20 IP bytes verbatim and the TCP header from
//! `ip + IHL*4` to offset 20 of the message. With IP options present (IHL > 5) that message
//! claims a header length it does not carry, so a copier that locates TCP by IHL misparses it.
//! [`HeaderMsg::from_packet`] therefore *normalises* such a header: IHL becomes 5, the total
//! length shrinks by the dropped option bytes (so `payload_len()` stays exact for any reader)
//! and the IP checksum is recomputed. Packets without IP options (all real traffic) are copied
//! byte for byte. Readers still honour IHL ([`HeaderMsg::payload_len`]) so messages from an
//! original intercept decode as the C copier would.
//!
//! # Reading a [`HeaderMsg`]
//!
//! The message's 64 bytes are read through the `wire` views: an IPv4 header view over bytes
//! 0..20, a TCP header view over 20..64, and the option walker ([`wire::tcp::Options`]) over the
//! option bytes it carries. This module is the one place that knows the layout.

use std::net::{Ipv4Addr, SocketAddrV4};

use wire::{ipv4, tcp, IPPROTO_TCP};

/// The protocol version carried in the hello's type field.
pub const PROTOCOL_VERSION: u16 = 6;
/// The intercept's default listening port.
pub const DEFAULT_PORT: u16 = 36524;
/// Size of a copier → intercept message.
pub const COPIER_MSG_LEN: usize = 14;
/// Bytes of the hello the intercept checks before reading the rest ("too old" check).
pub const HELLO_PREFIX_LEN: usize = 8;
/// Size of an intercept → copier header message (builds without response payload).
pub const HEADER_MSG_LEN: usize = 64;
/// Most messages one combined frame may carry.
pub const MAX_FRAME_MSGS: usize = 16;
/// Size of the count prefix of a combined frame.
pub const COUNT_LEN: usize = 2;
/// Largest combined frame on the wire.
pub const MAX_FRAME_LEN: usize = COUNT_LEN + MAX_FRAME_MSGS * HEADER_MSG_LEN;
/// Most TCP option bytes a header message keeps.
pub const MAX_OPTION_LEN: usize = 24;

/// Bytes of the IPv4 header a message carries (0..20).
const IP_LEN: usize = ipv4::MIN_HEADER_LEN;
/// Bytes of the fixed TCP header a message carries (20..40); its options follow.
const TCP_LEN: usize = tcp::MIN_HEADER_LEN;

/// Type field of a copier → intercept message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgKind {
    /// Register a session: route its responses to this connection (1).
    ClientAdd,
    /// Forget a session (2). The original copier never sends it.
    ClientDel,
    /// The version hello, first on every connection (6).
    Hello,
    /// Any other value.
    Other(u16),
}

impl MsgKind {
    /// Decode a type field.
    pub const fn from_wire(v: u16) -> Self {
        match v {
            1 => Self::ClientAdd,
            2 => Self::ClientDel,
            PROTOCOL_VERSION => Self::Hello,
            v => Self::Other(v),
        }
    }

    /// Encode as a type field.
    pub const fn to_wire(self) -> u16 {
        match self {
            Self::ClientAdd => 1,
            Self::ClientDel => 2,
            Self::Hello => PROTOCOL_VERSION,
            Self::Other(v) => v,
        }
    }
}

/// A copier → intercept message (14 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopierMsg {
    /// Source IP of the session as sent to the target.
    pub client_ip: Ipv4Addr,
    /// Source port of the session as sent to the target.
    pub client_port: u16,
    /// Message type.
    pub kind: MsgKind,
    /// Target IP of the session.
    pub target_ip: Ipv4Addr,
    /// Target port of the session.
    pub target_port: u16,
}

impl CopierMsg {
    /// Build the version hello: all zero except type = 6.
    pub const fn hello() -> Self {
        Self {
            client_ip: Ipv4Addr::UNSPECIFIED,
            client_port: 0,
            kind: MsgKind::Hello,
            target_ip: Ipv4Addr::UNSPECIFIED,
            target_port: 0,
        }
    }

    /// Build a CLIENT_ADD for a session.
    pub const fn client_add(client: SocketAddrV4, target: SocketAddrV4) -> Self {
        Self::session(MsgKind::ClientAdd, client, target)
    }

    /// Build a CLIENT_DEL for a session.
    pub const fn client_del(client: SocketAddrV4, target: SocketAddrV4) -> Self {
        Self::session(MsgKind::ClientDel, client, target)
    }

    const fn session(kind: MsgKind, client: SocketAddrV4, target: SocketAddrV4) -> Self {
        Self {
            client_ip: *client.ip(),
            client_port: client.port(),
            kind,
            target_ip: *target.ip(),
            target_port: target.port(),
        }
    }

    /// Return the client address.
    pub const fn client(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.client_ip, self.client_port)
    }

    /// Return the target address.
    pub const fn target(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.target_ip, self.target_port)
    }

    /// Encode to the 14 wire bytes.
    pub fn encode(&self) -> [u8; COPIER_MSG_LEN] {
        let mut b = [0u8; COPIER_MSG_LEN];
        b[0..4].copy_from_slice(&self.client_ip.octets());
        b[4..6].copy_from_slice(&self.client_port.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_wire().to_be_bytes());
        b[8..12].copy_from_slice(&self.target_ip.octets());
        b[12..14].copy_from_slice(&self.target_port.to_be_bytes());
        b
    }

    /// Decode 14 wire bytes (every bit pattern is a message; the type may be `Other`).
    pub fn decode(b: &[u8; COPIER_MSG_LEN]) -> Self {
        Self {
            client_ip: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            client_port: u16::from_be_bytes([b[4], b[5]]),
            kind: MsgKind::from_wire(u16::from_be_bytes([b[6], b[7]])),
            target_ip: Ipv4Addr::new(b[8], b[9], b[10], b[11]),
            target_port: u16::from_be_bytes([b[12], b[13]]),
        }
    }
}

/// Why a captured packet cannot become a [`HeaderMsg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The bytes end before the IP or TCP header does.
    #[error("packet truncated inside its IP or TCP header")]
    Truncated,
    /// The IP version is not 4.
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// The IP protocol is not TCP.
    #[error("not a TCP packet")]
    NotTcp,
    /// A non-first fragment carries no TCP header.
    #[error("IP fragment without a TCP header")]
    Fragment,
    /// IHL below 5.
    #[error("IP header length below 20 bytes")]
    BadIpHeaderLen,
    /// TCP data offset below 5.
    #[error("TCP data offset below 20 bytes")]
    BadTcpHeaderLen,
    /// The IP total length is smaller than the IP and TCP headers.
    #[error("IP total length smaller than the headers")]
    BadTotalLen,
}

/// An intercept → copier header message: a response's IPv4 + TCP header, 64 bytes.
///
/// Layout: IP header (20) ‖ TCP fixed header (20) ‖ up to 24 option bytes, zero-filled. The
/// IP total length is the original packet's, so the payload length is known without the payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderMsg([u8; HEADER_MSG_LEN]);

impl HeaderMsg {
    /// TCP FIN flag.
    pub const FIN: u8 = tcp::flags::FIN;
    /// TCP SYN flag.
    pub const SYN: u8 = tcp::flags::SYN;
    /// TCP RST flag.
    pub const RST: u8 = tcp::flags::RST;
    /// TCP PSH flag.
    pub const PSH: u8 = tcp::flags::PSH;
    /// TCP ACK flag.
    pub const ACK: u8 = tcp::flags::ACK;
    /// TCP URG flag.
    pub const URG: u8 = tcp::flags::URG;

    /// Wrap 64 received bytes (no validation: every field is read as is; see [`HeaderMsg::check`]).
    pub const fn from_bytes(bytes: [u8; HEADER_MSG_LEN]) -> Self {
        Self(bytes)
    }

    /// Build a message from a captured IPv4 TCP packet (starting at the IP header).
    ///
    /// The payload need not be present (only the headers are read). IP options are dropped and
    /// the header normalised as the module docs explain.
    ///
    /// # Errors
    ///
    /// A [`HeaderError`] when the bytes are not a complete IPv4 + TCP header.
    pub fn from_packet(packet: &[u8]) -> Result<Self, HeaderError> {
        // The payload need not be there: the IP header is checked against the bytes, the total
        // length only against the headers (below).
        let ip = ipv4::Packet::new_checked_header(packet).map_err(|e| match e {
            wire::Error::BadVersion => HeaderError::NotIpv4,
            wire::Error::BadHeaderLen if usize::from(ipv4::Packet::new_unchecked(packet).header_len()) < IP_LEN => {
                HeaderError::BadIpHeaderLen
            }
            _ => HeaderError::Truncated,
        })?;
        if ip.protocol() != IPPROTO_TCP {
            return Err(HeaderError::NotTcp);
        }
        if ip.frag_offset() != 0 {
            return Err(HeaderError::Fragment);
        }
        let ihl = usize::from(ip.header_len());
        let segment = &packet[ihl..];
        let tcp = tcp::Packet::new_checked(segment).map_err(|e| match e {
            wire::Error::BadDataOffset if usize::from(tcp::Packet::new_unchecked(segment).header_len()) < TCP_LEN => {
                HeaderError::BadTcpHeaderLen
            }
            _ => HeaderError::Truncated,
        })?;
        let doff = usize::from(tcp.header_len());
        let total = usize::from(ip.total_len());
        if total < ihl + doff {
            return Err(HeaderError::BadTotalLen);
        }

        let mut b = [0u8; HEADER_MSG_LEN];
        b[..IP_LEN].copy_from_slice(&packet[..IP_LEN]);
        let tcp_copy = doff.min(HEADER_MSG_LEN - IP_LEN);
        b[IP_LEN..IP_LEN + tcp_copy].copy_from_slice(&segment[..tcp_copy]);
        if ihl > IP_LEN {
            // Normalise: the options are gone, so say so (see the module docs).
            let mut out = ipv4::Packet::new_unchecked(&mut b[..IP_LEN]);
            out.set_header_len(IP_LEN as u8);
            // Cannot truncate: total < 2^16 and shrinks.
            out.set_total_len((total - (ihl - IP_LEN)) as u16);
            out.fill_checksum();
        }
        Ok(Self(b))
    }

    /// Check what a reader of the message relies on: IPv4, IHL and data offset of at least 5,
    /// and a total length that covers both headers.
    ///
    /// # Errors
    ///
    /// [`wire::Error::BadVersion`] unless version 4, [`wire::Error::BadHeaderLen`] for an IHL
    /// below 5, [`wire::Error::BadDataOffset`] for a data offset below 5,
    /// [`wire::Error::BadTotalLen`] if the total length is shorter than both headers.
    pub fn check(&self) -> Result<(), wire::Error> {
        if self.ip().version() != 4 {
            return Err(wire::Error::BadVersion);
        }
        if self.ip_header_len() < IP_LEN {
            return Err(wire::Error::BadHeaderLen);
        }
        if self.tcp_header_len() < TCP_LEN {
            return Err(wire::Error::BadDataOffset);
        }
        if usize::from(self.total_len()) < self.ip_header_len() + self.tcp_header_len() {
            return Err(wire::Error::BadTotalLen);
        }
        Ok(())
    }

    /// Return the 64 wire bytes.
    pub const fn as_bytes(&self) -> &[u8; HEADER_MSG_LEN] {
        &self.0
    }

    /// View the IP header (20 bytes: its options are never carried).
    fn ip(&self) -> ipv4::Packet<&[u8]> {
        ipv4::Packet::new_unchecked(&self.0[..IP_LEN])
    }

    /// View the TCP header (its options cut to 24 bytes: use [`HeaderMsg::options`]).
    fn tcp(&self) -> tcp::Packet<&[u8]> {
        tcp::Packet::new_unchecked(&self.0[IP_LEN..])
    }

    /// Return the IP source (the target that answered).
    pub fn src_ip(&self) -> Ipv4Addr {
        self.ip().src_addr()
    }

    /// Return the IP destination (the session's client address).
    pub fn dst_ip(&self) -> Ipv4Addr {
        self.ip().dst_addr()
    }

    /// Return the TCP source port (the target port).
    pub fn src_port(&self) -> u16 {
        self.tcp().src_port()
    }

    /// Return the TCP destination port (the session's client port).
    pub fn dst_port(&self) -> u16 {
        self.tcp().dst_port()
    }

    /// Return the session's client address (response destination).
    pub fn client(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.dst_ip(), self.dst_port())
    }

    /// Return the session's target address (response source).
    pub fn target(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.src_ip(), self.src_port())
    }

    /// Return the TCP sequence number.
    pub fn seq(&self) -> u32 {
        self.tcp().seq_number()
    }

    /// Return the TCP acknowledgement number.
    pub fn ack(&self) -> u32 {
        self.tcp().ack_number()
    }

    /// Return the TCP data offset in 32-bit words.
    pub fn data_offset(&self) -> u8 {
        self.tcp().header_len() / 4
    }

    /// Return the TCP header length in bytes (data offset × 4).
    pub fn tcp_header_len(&self) -> usize {
        usize::from(self.tcp().header_len())
    }

    /// Return the TCP flags byte (CWR..FIN).
    pub fn flags(&self) -> u8 {
        self.tcp().flags()
    }

    /// Return whether SYN is set.
    pub fn is_syn(&self) -> bool {
        self.tcp().syn()
    }

    /// Return whether RST is set.
    pub fn is_rst(&self) -> bool {
        self.tcp().rst()
    }

    /// Return whether FIN is set.
    pub fn is_fin(&self) -> bool {
        self.tcp().fin()
    }

    /// Return the TCP window (unscaled).
    pub fn window(&self) -> u16 {
        self.tcp().window()
    }

    /// Return the IP total length of the original packet.
    pub fn total_len(&self) -> u16 {
        self.ip().total_len()
    }

    /// Return the IP header length in bytes (IHL × 4) as the header claims it.
    pub fn ip_header_len(&self) -> usize {
        usize::from(self.ip().header_len())
    }

    /// Return the TCP option bytes carried (at most 24; fewer when the header is shorter).
    pub fn options(&self) -> &[u8] {
        let len = self.tcp_header_len().saturating_sub(TCP_LEN).min(MAX_OPTION_LEN);
        &self.0[IP_LEN + TCP_LEN..IP_LEN + TCP_LEN + len]
    }

    /// Return the option walker over the TCP option bytes carried.
    pub fn tcp_options(&self) -> tcp::Options<'_> {
        tcp::Options::new(self.options())
    }

    /// Return the original packet's payload length: total − IHL×4 − data offset×4, saturating.
    pub fn payload_len(&self) -> usize {
        usize::from(self.total_len()).saturating_sub(self.ip_header_len()).saturating_sub(self.tcp_header_len())
    }
}

impl std::fmt::Debug for HeaderMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderMsg")
            .field("src", &self.target())
            .field("dst", &self.client())
            .field("seq", &self.seq())
            .field("ack", &self.ack())
            .field("flags", &format_args!("{:#04x}", self.flags()))
            .field("window", &self.window())
            .field("total_len", &self.total_len())
            .finish()
    }
}

/// How header messages are framed on the stream; both sides must agree (the wire has no marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// `count:u16 ‖ count × 64 bytes`, count ≤ 16 (the original's default).
    #[default]
    Combined,
    /// A plain stream of 64-byte messages (`--disable-combined` on both original sides).
    Bare,
}

/// A broken header-message stream or an impossible frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A received count above 16: the stream is broken and the connection must be closed.
    #[error("frame count {count} exceeds the protocol limit of 16 messages")]
    CountTooLarge {
        /// The count read from the wire.
        count: u16,
    },
    /// More than 16 messages were given to one frame.
    #[error("{count} messages do not fit one frame (16 at most)")]
    TooManyMessages {
        /// The number of messages given.
        count: usize,
    },
    /// The output buffer is too small for the frame.
    #[error("frame needs {need} bytes, buffer has {have}")]
    BufferTooSmall {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
}

/// Encode `msgs` as one frame at the start of `out`; returns the bytes written.
///
/// # Errors
///
/// [`FrameError::TooManyMessages`] for more than 16 messages, [`FrameError::BufferTooSmall`]
/// when `out` cannot hold the frame.
pub fn encode_frame(framing: Framing, msgs: &[HeaderMsg], out: &mut [u8]) -> Result<usize, FrameError> {
    if msgs.len() > MAX_FRAME_MSGS {
        return Err(FrameError::TooManyMessages { count: msgs.len() });
    }
    let prefix = match framing {
        Framing::Combined => COUNT_LEN,
        Framing::Bare => 0,
    };
    let need = prefix + msgs.len() * HEADER_MSG_LEN;
    if out.len() < need {
        return Err(FrameError::BufferTooSmall { need, have: out.len() });
    }
    if prefix != 0 {
        // msgs.len() ≤ 16.
        out[..COUNT_LEN].copy_from_slice(&(msgs.len() as u16).to_be_bytes());
    }
    for (chunk, msg) in out[prefix..need].chunks_exact_mut(HEADER_MSG_LEN).zip(msgs) {
        chunk.copy_from_slice(msg.as_bytes());
    }
    Ok(need)
}

/// A frame being filled, in a fixed buffer: the intercept's per-connection batch.
#[derive(Clone)]
pub struct FrameBuilder {
    framing: Framing,
    count: usize,
    buf: [u8; MAX_FRAME_LEN],
}

impl FrameBuilder {
    /// Create an empty frame.
    pub const fn new(framing: Framing) -> Self {
        Self { framing, count: 0, buf: [0; MAX_FRAME_LEN] }
    }

    /// Return the framing.
    pub const fn framing(&self) -> Framing {
        self.framing
    }

    /// Append a message; returns false (and leaves the frame unchanged) when it is full.
    pub fn push(&mut self, msg: &HeaderMsg) -> bool {
        if self.count == MAX_FRAME_MSGS {
            return false;
        }
        let at = COUNT_LEN + self.count * HEADER_MSG_LEN;
        self.buf[at..at + HEADER_MSG_LEN].copy_from_slice(msg.as_bytes());
        self.count += 1;
        true
    }

    /// Return the number of messages held.
    pub const fn len(&self) -> usize {
        self.count
    }

    /// Return whether no message is held.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Return whether the frame holds 16 messages.
    pub const fn is_full(&self) -> bool {
        self.count == MAX_FRAME_MSGS
    }

    /// Return the wire bytes of the frame (count prefix included in combined framing).
    pub fn bytes(&mut self) -> &[u8] {
        let end = COUNT_LEN + self.count * HEADER_MSG_LEN;
        match self.framing {
            Framing::Combined => {
                // count ≤ 16.
                self.buf[..COUNT_LEN].copy_from_slice(&(self.count as u16).to_be_bytes());
                &self.buf[..end]
            }
            Framing::Bare => &self.buf[COUNT_LEN..end],
        }
    }

    /// Empty the frame.
    pub fn clear(&mut self) {
        self.count = 0;
    }
}

/// What one [`FrameDecoder::feed`] call completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decoded {
    /// Frames completed (in bare framing every message is a frame).
    pub frames: u64,
    /// Header messages delivered.
    pub messages: u64,
}

/// Incremental copier-side decoder of header messages from arbitrary byte chunks.
///
/// Messages are delivered as soon as their 64 bytes are complete; a frame's count is validated
/// before its first message. After an error the decoder stays poisoned until [`reset`](Self::reset).
#[derive(Clone)]
pub struct FrameDecoder {
    framing: Framing,
    /// Messages still due in the current combined frame; 0 = a count comes next.
    remaining: u16,
    have: usize,
    buf: [u8; HEADER_MSG_LEN],
    poisoned: Option<FrameError>,
}

impl FrameDecoder {
    /// Create a decoder at a frame boundary.
    pub const fn new(framing: Framing) -> Self {
        Self { framing, remaining: 0, have: 0, buf: [0; HEADER_MSG_LEN], poisoned: None }
    }

    /// Return to a frame boundary and clear any error (for a new connection).
    pub fn reset(&mut self) {
        *self = Self::new(self.framing);
    }

    /// Return whether no partial count or message is buffered.
    pub fn is_idle(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Consume `data`, calling `on_msg` for each complete message, in order.
    ///
    /// # Errors
    ///
    /// [`FrameError::CountTooLarge`] when a count above 16 arrives (also on every later call).
    pub fn feed(&mut self, mut data: &[u8], mut on_msg: impl FnMut(HeaderMsg)) -> Result<Decoded, FrameError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let mut out = Decoded::default();
        while !data.is_empty() {
            if self.framing == Framing::Combined && self.remaining == 0 {
                let take = (COUNT_LEN - self.have).min(data.len());
                self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < COUNT_LEN {
                    break;
                }
                self.have = 0;
                let count = u16::from_be_bytes([self.buf[0], self.buf[1]]);
                if usize::from(count) > MAX_FRAME_MSGS {
                    let e = FrameError::CountTooLarge { count };
                    self.poisoned = Some(e);
                    return Err(e);
                }
                if count == 0 {
                    out.frames += 1;
                } else {
                    self.remaining = count;
                }
                continue;
            }

            let msg = if self.have == 0 && data.len() >= HEADER_MSG_LEN {
                let (head, rest) = data.split_at(HEADER_MSG_LEN);
                data = rest;
                let mut b = [0u8; HEADER_MSG_LEN];
                b.copy_from_slice(head);
                HeaderMsg(b)
            } else {
                let take = (HEADER_MSG_LEN - self.have).min(data.len());
                self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < HEADER_MSG_LEN {
                    break;
                }
                self.have = 0;
                HeaderMsg(self.buf)
            };
            on_msg(msg);
            out.messages += 1;
            match self.framing {
                Framing::Bare => out.frames += 1,
                Framing::Combined => {
                    self.remaining -= 1;
                    if self.remaining == 0 {
                        out.frames += 1;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What the intercept-side decoder found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopierEvent {
    /// The 14-byte hello is complete; `version` is its type field.
    Hello {
        /// Protocol version announced by the copier.
        version: u16,
    },
    /// A message after the hello (any type; the caller decides what to do with unknown ones).
    Msg(CopierMsg),
}

impl CopierEvent {
    /// Return whether this is a hello with a version other than 6 ("not compatible").
    pub fn is_incompatible_hello(&self) -> bool {
        matches!(self, Self::Hello { version } if *version != PROTOCOL_VERSION)
    }
}

/// A copier stream the intercept cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CopierError {
    /// The first 8 bytes carry a client address: a pre-hello copier ("client too old").
    #[error("the stream starts with client {client_ip}:{client_port} where the version hello belongs: a copier too old for this intercept, or not a copier")]
    TooOld {
        /// IP found in the first 4 bytes.
        client_ip: Ipv4Addr,
        /// Port found in bytes 4..6.
        client_port: u16,
    },
}

/// Incremental intercept-side decoder: the hello (8 + 6 bytes), then 14-byte messages.
#[derive(Clone)]
pub struct CopierDecoder {
    hello_done: bool,
    have: usize,
    buf: [u8; COPIER_MSG_LEN],
    poisoned: Option<CopierError>,
}

impl Default for CopierDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CopierDecoder {
    /// Create a decoder expecting the hello.
    pub const fn new() -> Self {
        Self { hello_done: false, have: 0, buf: [0; COPIER_MSG_LEN], poisoned: None }
    }

    /// Return whether the hello has been received.
    pub const fn hello_done(&self) -> bool {
        self.hello_done
    }

    /// Consume `data`, calling `on_event` for the hello and each later message, in order.
    ///
    /// # Errors
    ///
    /// [`CopierError::TooOld`] as soon as the first 8 bytes carry a client address (also on every
    /// later call): the connection must be closed.
    pub fn feed(&mut self, mut data: &[u8], mut on_event: impl FnMut(CopierEvent)) -> Result<(), CopierError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        while !data.is_empty() {
            let want = if !self.hello_done && self.have < HELLO_PREFIX_LEN { HELLO_PREFIX_LEN } else { COPIER_MSG_LEN };
            let take = (want - self.have).min(data.len());
            self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have < want {
                break;
            }
            if want == HELLO_PREFIX_LEN {
                if self.buf[..6] != [0; 6] {
                    let e = CopierError::TooOld {
                        client_ip: Ipv4Addr::new(self.buf[0], self.buf[1], self.buf[2], self.buf[3]),
                        client_port: u16::from_be_bytes([self.buf[4], self.buf[5]]),
                    };
                    self.poisoned = Some(e);
                    return Err(e);
                }
                continue;
            }
            self.have = 0;
            let msg = CopierMsg::decode(&self.buf);
            if self.hello_done {
                on_event(CopierEvent::Msg(msg));
            } else {
                self.hello_done = true;
                on_event(CopierEvent::Hello { version: msg.kind.to_wire() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    const SYN_ACK_IP: &str = "45 00 00 3c 00 00 40 00 40 06 23 a4 0a 0a 02 03 0a 0a 01 02";
    const SYN_ACK_TCP: &str = "1f 90 c4 fa d4 05 09 ca 97 58 fe ba a0 12 fe 88 17 47 00 00";
    const SYN_ACK_OPT: &str = "02 04 05 b4 04 02 08 0a 9a 17 65 6c 80 7d 96 74 01 03 03 0a 00 00 00 00";

    /// The observed SYN-ACK (§4.6) as captured: IP + TCP with its 20 option bytes.
    fn syn_ack_packet() -> Vec<u8> {
        let mut p = hex(SYN_ACK_IP);
        p.extend(hex(SYN_ACK_TCP));
        p.extend(&hex(SYN_ACK_OPT)[..20]);
        p
    }

    fn client() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 10, 1, 2), 50426)
    }

    fn target() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 10, 2, 3), 8080)
    }

    /// A header message with given total length and flags, else like the SYN-ACK's fields.
    fn data_msg(total_len: u16, flags: u8) -> HeaderMsg {
        let mut b = [0u8; HEADER_MSG_LEN];
        b[..20].copy_from_slice(&hex(SYN_ACK_IP));
        b[20..40].copy_from_slice(&hex(SYN_ACK_TCP));
        b[2..4].copy_from_slice(&total_len.to_be_bytes());
        b[32] = 0x80; // data offset 8: 12 option bytes (NOP NOP TS)
        b[33] = flags;
        b[40..52].copy_from_slice(&hex("01 01 08 0a 9a 17 65 6c 80 7d 96 74"));
        HeaderMsg::from_bytes(b)
    }

    #[test]
    fn hello_bytes() {
        let b = CopierMsg::hello().encode();
        assert_eq!(b.to_vec(), hex("00000000 0000 0006 00000000 0000"));
        assert_eq!(CopierMsg::decode(&b), CopierMsg::hello());
    }

    #[test]
    fn client_add_bytes() {
        let m = CopierMsg::client_add(client(), target());
        let b = m.encode();
        assert_eq!(b.to_vec(), hex("0a0a0102 c4fa 0001 0a0a0203 1f90"));
        let d = CopierMsg::decode(&b);
        assert_eq!(d, m);
        assert_eq!(d.client(), client());
        assert_eq!(d.target(), target());
        assert_eq!(d.kind, MsgKind::ClientAdd);
    }

    #[test]
    fn msg_kinds_round_trip() {
        for v in [0u16, 1, 2, 3, 5, 6, 7, 0xffff] {
            assert_eq!(MsgKind::from_wire(v).to_wire(), v);
        }
        assert_eq!(MsgKind::from_wire(2), MsgKind::ClientDel);
        assert_eq!(MsgKind::from_wire(9), MsgKind::Other(9));
    }

    #[test]
    fn syn_ack_frame_66_bytes() {
        let msg = HeaderMsg::from_packet(&syn_ack_packet()).unwrap();
        let mut out = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(Framing::Combined, &[msg], &mut out).unwrap();
        let mut want = hex("00 01");
        want.extend(hex(SYN_ACK_IP));
        want.extend(hex(SYN_ACK_TCP));
        want.extend(hex(SYN_ACK_OPT));
        assert_eq!(n, 66);
        assert_eq!(out[..n].to_vec(), want);

        assert_eq!(msg.total_len(), 60);
        assert_eq!(msg.seq(), 3_557_099_978);
        assert_eq!(msg.ack(), 2_539_191_994);
        assert_eq!(msg.data_offset(), 10);
        assert_eq!(msg.tcp_header_len(), 40);
        assert_eq!(msg.flags(), HeaderMsg::SYN | HeaderMsg::ACK);
        assert!(msg.is_syn() && !msg.is_rst() && !msg.is_fin());
        assert_eq!(msg.window(), 65160);
        assert_eq!(msg.client(), client());
        assert_eq!(msg.target(), target());
        assert_eq!(msg.options(), &hex(SYN_ACK_OPT)[..20]);
        assert_eq!(msg.payload_len(), 0);

        let mut dec = FrameDecoder::new(Framing::Combined);
        let mut got = Vec::new();
        let d = dec.feed(&want, |m| got.push(m)).unwrap();
        assert_eq!(d, Decoded { frames: 1, messages: 1 });
        assert_eq!(got, vec![msg]);
    }

    fn two_msg_frame() -> (Vec<u8>, [HeaderMsg; 2]) {
        let a = data_msg(0x00ed, 0x18);
        let b = data_msg(70, 0x19);
        let mut out = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(Framing::Combined, &[a, b], &mut out).unwrap();
        (out[..n].to_vec(), [a, b])
    }

    #[test]
    fn two_message_frame_130_bytes() {
        let (frame, [a, b]) = two_msg_frame();
        assert_eq!(frame.len(), 130);
        assert_eq!(frame[..2], [0x00, 0x02]);
        assert_eq!(frame[2 + 2..2 + 4], [0x00, 0xed]);
        assert_eq!(frame[2 + 33], 0x18);
        assert_eq!(frame[66 + 2..66 + 4], [0x00, 70]);
        assert_eq!(frame[66 + 33], 0x19);
        assert_eq!(a.payload_len(), 185);
        assert_eq!(b.payload_len(), 70 - 20 - 32);
        assert!(b.is_fin());

        let mut dec = FrameDecoder::new(Framing::Combined);
        let mut got = Vec::new();
        let d = dec.feed(&frame, |m| got.push(m)).unwrap();
        assert_eq!(d, Decoded { frames: 1, messages: 2 });
        assert_eq!(got, vec![a, b]);
        assert!(dec.is_idle());
    }

    #[test]
    fn count_zero_is_an_empty_frame() {
        let mut dec = FrameDecoder::new(Framing::Combined);
        let d = dec.feed(&[0, 0, 0, 0], |_| panic!("no message")).unwrap();
        assert_eq!(d, Decoded { frames: 2, messages: 0 });
        let mut out = [0u8; 2];
        assert_eq!(encode_frame(Framing::Combined, &[], &mut out), Ok(2));
        assert_eq!(out, [0, 0]);
    }

    #[test]
    fn count_16_accepted_17_rejected() {
        let msg = HeaderMsg::from_packet(&syn_ack_packet()).unwrap();
        let mut out = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(Framing::Combined, &[msg; 16], &mut out).unwrap();
        assert_eq!(n, MAX_FRAME_LEN);
        let mut dec = FrameDecoder::new(Framing::Combined);
        let d = dec.feed(&out[..n], |_| {}).unwrap();
        assert_eq!(d.messages, 16);

        let mut dec = FrameDecoder::new(Framing::Combined);
        let mut calls = 0;
        let mut bad = vec![0x00, 0x11];
        bad.extend_from_slice(msg.as_bytes());
        let e = dec.feed(&bad, |_| calls += 1).unwrap_err();
        assert_eq!(e, FrameError::CountTooLarge { count: 17 });
        assert_eq!(calls, 0, "no message of a bad frame is delivered");
        // Poisoned: even valid bytes are refused until reset.
        assert!(dec.feed(&out[..n], |_| {}).is_err());
        dec.reset();
        assert_eq!(dec.feed(&out[..n], |_| {}).unwrap().messages, 16);

        let e = encode_frame(Framing::Combined, &[msg; 17], &mut out).unwrap_err();
        assert_eq!(e, FrameError::TooManyMessages { count: 17 });
        let e = encode_frame(Framing::Combined, &[msg; 2], &mut out[..100]).unwrap_err();
        assert_eq!(e, FrameError::BufferTooSmall { need: 130, have: 100 });
    }

    #[test]
    fn frames_split_at_every_boundary() {
        let (mut stream, [a, b]) = two_msg_frame();
        let syn_ack = HeaderMsg::from_packet(&syn_ack_packet()).unwrap();
        let mut out = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(Framing::Combined, &[syn_ack], &mut out).unwrap();
        stream.extend_from_slice(&out[..n]);
        stream.extend_from_slice(&[0, 0]);
        let want = vec![a, b, syn_ack];
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut dec = FrameDecoder::new(Framing::Combined);
                let mut got = Vec::new();
                let mut total = Decoded::default();
                for part in [&stream[..i], &stream[i..j], &stream[j..]] {
                    let d = dec.feed(part, |m| got.push(m)).unwrap();
                    total.frames += d.frames;
                    total.messages += d.messages;
                }
                assert_eq!(got, want, "split at {i},{j}");
                assert_eq!(total, Decoded { frames: 3, messages: 3 });
                assert!(dec.is_idle());
            }
        }
    }

    #[test]
    fn bytewise_feed_and_bare_framing() {
        let (frame, [a, b]) = two_msg_frame();
        let mut dec = FrameDecoder::new(Framing::Combined);
        let mut got = Vec::new();
        for byte in &frame {
            dec.feed(std::slice::from_ref(byte), |m| got.push(m)).unwrap();
        }
        assert_eq!(got, vec![a, b]);

        let mut out = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(Framing::Bare, &[a, b], &mut out).unwrap();
        assert_eq!(n, 128);
        assert_eq!(out[..64], a.as_bytes()[..]);
        let mut dec = FrameDecoder::new(Framing::Bare);
        let mut got = Vec::new();
        let mut frames = 0;
        for part in out[..n].chunks(5) {
            frames += dec.feed(part, |m| got.push(m)).unwrap().frames;
        }
        assert_eq!(got, vec![a, b]);
        assert_eq!(frames, 2);
    }

    #[test]
    fn frame_builder_matches_encode_frame() {
        let (frame, [a, b]) = two_msg_frame();
        let mut fb = FrameBuilder::new(Framing::Combined);
        assert!(fb.is_empty());
        assert_eq!(fb.bytes(), &[0, 0]);
        assert!(fb.push(&a) && fb.push(&b));
        assert_eq!(fb.len(), 2);
        assert_eq!(fb.bytes(), &frame[..]);
        for _ in 2..16 {
            assert!(fb.push(&a));
        }
        assert!(fb.is_full());
        assert!(!fb.push(&a));
        assert_eq!(fb.bytes().len(), MAX_FRAME_LEN);
        fb.clear();
        assert!(fb.is_empty());

        let mut bare = FrameBuilder::new(Framing::Bare);
        bare.push(&a);
        assert_eq!(bare.bytes(), &a.as_bytes()[..]);
    }

    #[test]
    fn from_packet_keeps_header_verbatim_without_ip_options() {
        let p = syn_ack_packet();
        let msg = HeaderMsg::from_packet(&p).unwrap();
        assert_eq!(msg.as_bytes()[..60], p[..60]);
        assert_eq!(msg.as_bytes()[60..], [0, 0, 0, 0]);

        // Payload bytes after the header are ignored; total length is kept.
        let (_, [a, _]) = two_msg_frame();
        let mut pkt = a.as_bytes()[..52].to_vec();
        pkt.extend(std::iter::repeat_n(b'x', 185));
        let m = HeaderMsg::from_packet(&pkt).unwrap();
        assert_eq!(m, a);
        assert_eq!(m.payload_len(), 185);
    }

    #[test]
    fn from_packet_truncates_long_tcp_options_to_24() {
        // Data offset 15: 40 option bytes, only 24 kept.
        let mut p = hex(SYN_ACK_IP);
        p[2..4].copy_from_slice(&80u16.to_be_bytes());
        p.extend(hex(SYN_ACK_TCP));
        p[20 + 12] = 0xf0;
        p.extend((0..40).map(|i| i as u8));
        let m = HeaderMsg::from_packet(&p).unwrap();
        assert_eq!(m.options(), &p[40..64]);
        assert_eq!(m.tcp_header_len(), 60);
        assert_eq!(m.payload_len(), 0);
    }

    #[test]
    fn from_packet_normalises_ip_options() {
        // The SYN-ACK with a 4-byte IP option (NOP ×3 + EOL): IHL 6, total 64.
        let base = syn_ack_packet();
        let mut p = base[..20].to_vec();
        p[0] = 0x46;
        p[2..4].copy_from_slice(&64u16.to_be_bytes());
        p.extend([1, 1, 1, 0]);
        p.extend(&base[20..]);
        let m = HeaderMsg::from_packet(&p).unwrap();
        // Equivalent to the option-less packet, checksum included.
        assert_eq!(m, HeaderMsg::from_packet(&base).unwrap());
        assert_eq!(wire::checksum::checksum(&m.as_bytes()[..20]), 0);
        assert_eq!(m.ip_header_len(), 20);
        assert_eq!(m.seq(), 3_557_099_978);
    }

    #[test]
    fn payload_len_honours_ihl_of_foreign_messages() {
        // An original intercept keeps IHL 6 and the full total length.
        let (_, [a, _]) = two_msg_frame();
        let mut b = *a.as_bytes();
        b[0] = 0x46;
        b[2..4].copy_from_slice(&(0x00ed + 4u16).to_be_bytes());
        assert_eq!(HeaderMsg::from_bytes(b).payload_len(), 185);
        // Nonsense lengths saturate.
        b[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(HeaderMsg::from_bytes(b).payload_len(), 0);
    }

    #[test]
    fn check_names_the_bad_length_field() {
        let ok = HeaderMsg::from_packet(&syn_ack_packet()).unwrap();
        assert_eq!(ok.check(), Ok(()));
        for (at, value, want) in [
            (0, 0x65, wire::Error::BadVersion),
            (0, 0x44, wire::Error::BadHeaderLen),
            (32, 0x40, wire::Error::BadDataOffset),
            (3, 59, wire::Error::BadTotalLen),
            (0, 0x46, wire::Error::BadTotalLen), // 24 + 40 > 60
        ] {
            let mut b = *ok.as_bytes();
            b[at] = value;
            assert_eq!(HeaderMsg::from_bytes(b).check(), Err(want), "byte {at} = {value:#x}");
        }
        let mut b = *ok.as_bytes();
        b[0] = 0x46;
        b[3] = 64;
        assert_eq!(HeaderMsg::from_bytes(b).check(), Ok(()), "an original intercept's IHL 6");
    }

    #[test]
    fn options_are_walked_as_carried() {
        use wire::tcp::TcpOption;
        let msg = HeaderMsg::from_packet(&syn_ack_packet()).unwrap();
        let opts: Vec<_> = msg.tcp_options().collect();
        assert_eq!(
            opts,
            vec![
                Ok(TcpOption::Mss(1460)),
                Ok(TcpOption::SackPermitted),
                Ok(TcpOption::Timestamps { tsval: 0x9a17_656c, tsecr: 0x807d_9674 }),
                Ok(TcpOption::Nop),
                Ok(TcpOption::WindowScale(10)),
            ]
        );
        // Data offset 8: only 12 option bytes are carried, the walk ends inside the timestamps.
        let mut b = *msg.as_bytes();
        b[32] = 0x80;
        let msg = HeaderMsg::from_bytes(b);
        assert_eq!(msg.options().len(), 12);
        let opts: Vec<_> = msg.tcp_options().collect();
        assert_eq!(opts, vec![Ok(TcpOption::Mss(1460)), Ok(TcpOption::SackPermitted), Err(wire::Error::BadTcpOption)]);
    }

    #[test]
    fn from_packet_rejects_malformed() {
        let p = syn_ack_packet();
        assert_eq!(HeaderMsg::from_packet(&p[..19]), Err(HeaderError::Truncated));
        assert_eq!(HeaderMsg::from_packet(&p[..39]), Err(HeaderError::Truncated));
        assert_eq!(HeaderMsg::from_packet(&p[..50]), Err(HeaderError::Truncated));
        let mut q = p.clone();
        q[0] = 0x65;
        assert_eq!(HeaderMsg::from_packet(&q), Err(HeaderError::NotIpv4));
        let mut q = p.clone();
        q[0] = 0x44;
        assert_eq!(HeaderMsg::from_packet(&q), Err(HeaderError::BadIpHeaderLen));
        let mut q = p.clone();
        q[9] = 17;
        assert_eq!(HeaderMsg::from_packet(&q), Err(HeaderError::NotTcp));
        let mut q = p.clone();
        q[7] = 1;
        assert_eq!(HeaderMsg::from_packet(&q), Err(HeaderError::Fragment));
        let mut q = p.clone();
        q[32] = 0x40;
        assert_eq!(HeaderMsg::from_packet(&q), Err(HeaderError::BadTcpHeaderLen));
        let mut q = p.clone();
        q[2..4].copy_from_slice(&59u16.to_be_bytes());
        assert_eq!(HeaderMsg::from_packet(&q), Err(HeaderError::BadTotalLen));
    }

    #[test]
    fn copier_decoder_hello_then_messages_any_split() {
        let mut stream = CopierMsg::hello().encode().to_vec();
        let add = CopierMsg::client_add(client(), target());
        let del = CopierMsg::client_del(client(), target());
        stream.extend(add.encode());
        stream.extend(del.encode());
        let want = vec![CopierEvent::Hello { version: 6 }, CopierEvent::Msg(add), CopierEvent::Msg(del)];
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut dec = CopierDecoder::new();
                let mut got = Vec::new();
                for part in [&stream[..i], &stream[i..j], &stream[j..]] {
                    dec.feed(part, |e| got.push(e)).unwrap();
                }
                assert_eq!(got, want, "split at {i},{j}");
                assert!(dec.hello_done());
            }
        }
    }

    #[test]
    fn copier_decoder_too_old_after_8_bytes() {
        // An old copier starts with CLIENT_ADD directly.
        let add = CopierMsg::client_add(client(), target()).encode();
        let mut dec = CopierDecoder::new();
        assert!(dec.feed(&add[..7], |_| panic!()).is_ok());
        let e = dec.feed(&add[7..8], |_| panic!()).unwrap_err();
        assert_eq!(e, CopierError::TooOld { client_ip: *client().ip(), client_port: client().port() });
        assert!(dec.feed(&add[8..], |_| panic!()).is_err());
    }

    #[test]
    fn copier_decoder_reports_incompatible_version() {
        let mut hello = CopierMsg::hello().encode();
        hello[7] = 5;
        let mut dec = CopierDecoder::new();
        let mut got = Vec::new();
        dec.feed(&hello, |e| got.push(e)).unwrap();
        assert_eq!(got, vec![CopierEvent::Hello { version: 5 }]);
        assert!(got[0].is_incompatible_hello());
        assert!(!CopierEvent::Hello { version: 6 }.is_incompatible_hello());
    }
}
