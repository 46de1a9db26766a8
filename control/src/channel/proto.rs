//! Wire codec of the header-return channel: TCPCopy protocol version 6, and xdpcopy's extension,
//! protocol 7, which adds IPv6 sessions.
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
//! # Protocol 7: the negotiation
//!
//! Protocol 6 cannot carry IPv6: its addresses are 4 bytes and its header messages start with an
//! IPv4 header. The extension is negotiated so that an original peer pays nothing and sees
//! nothing it does not already accept:
//!
//! ```text
//! copier                                                           intercept
//!   hello: 00000000 0000 0006 "XDPC" 0007   ─────────────►  (the original reads 8 bytes, checks
//!          (a v6 hello; the last 6 bytes carry the marker     them, reads the last 6 and ignores
//!          and the highest version offered)                   them: reference §4.2)
//!   CLIENT_ADDs, v6 layout (IPv4 only)      ─────────────►  xdpcopy-intercept, seeing the marker,
//!                                           ◄─────────────  answers at once: 0x80 0x07 (the ack)
//!   reads 0x80 0x07 as the first bytes:
//!   upgrade: 00000000 0000 0007 00000000 0000 ───────────►  from the next byte on: v7 messages
//!   v7 messages (IPv4 and IPv6)             ─────────────►
//! ```
//!
//! - The **ack** cannot be mistaken for a v6 stream: a combined frame starts with a count ≤ 16
//!   (first byte 0) and a bare message with an IPv4 header (0x45..0x4f). A copier whose first
//!   two received bytes are `80 07` switches the connection to 7; one that receives a frame first
//!   (or nothing) keeps 6 on it. An original intercept never sends the ack, so its connections
//!   stay 6, byte for byte as with TCPCopy's copier.
//! - The **upgrade** message is a v6-layout message (type 7): everything the copier sent before
//!   it, in whatever order relative to the ack, was v6 and is read as v6. An intercept accepts it
//!   only after it acknowledged the offer; otherwise it is an unknown type (the connection is
//!   closed, as for any garbage).
//! - **v7, copier → intercept**: every message is type-first, its length given by its type:
//!
//!   ```text
//!   type 1 CLIENT_ADD, 2 CLIENT_DEL (IPv4), 14 bytes:
//!     | type:2 | cli ip:4 | cport:2 | target ip:4 | tport:2 |
//!   type 8 CLIENT_ADD6, 9 CLIENT_DEL6 (IPv6), 38 bytes:
//!     | type:2 | cli ip:16 | cport:2 | target ip:16 | tport:2 |
//!   ```
//!
//!   An unknown type has no known length: the stream cannot go on, the connection is closed.
//! - **v7, intercept → copier**: frames as in v6 (count prefix in combined framing, ≤ 16
//!   messages), each message's first nibble saying its layout: 4 → the 64-byte v6 message, 6 →
//!   an 84-byte IPv6 message (IPv6 header 40 with the original payload length and next header
//!   TCP, TCP fixed header 20, up to 24 option bytes). IPv6 messages go only to v7 connections
//!   (only they can register IPv6 sessions).
//!
//! # Design
//!
//! - Nothing here allocates or does I/O. Messages are fixed-size byte arrays ([`CopierMsg`]
//!   encodes to at most 38 bytes, [`HeaderMsg`] *is* an 84-byte array with accessors), so a
//!   batch of them lives on the stack or inside a fixed [`FrameBuilder`].
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
//! original intercept decode as the C copier would. IPv6 is normalised the same way: extension
//! headers before TCP are dropped, the payload length shrinks by their size and the next header
//! becomes TCP.
//!
//! # Reading a [`HeaderMsg`]
//!
//! The message's bytes are read through the `wire` views: an IPv4 (IPv6) header view over bytes
//! 0..20 (0..40), a TCP header view over the rest, and the option walker
//! ([`wire::tcp::Options`]) over the option bytes it carries. This module is the one place that
//! knows the layout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use wire::{ipv4, ipv6, tcp, IPPROTO_TCP};

/// The protocol version carried in the hello's type field.
pub const PROTOCOL_VERSION: u16 = 6;
/// xdpcopy's extension (IPv6 sessions), negotiated after a v6 hello (module docs).
pub const EXTENDED_VERSION: u16 = 7;
/// The marker an xdpcopy copier puts in bytes 8..12 of its hello; bytes 12..14 hold the highest
/// version it offers.
pub const HELLO_MARKER: [u8; 4] = *b"XDPC";
/// First byte of the intercept's acknowledgement; the second is the version it accepts.
pub const ACK_PREFIX: u8 = 0x80;
/// Length of the acknowledgement.
pub const ACK_LEN: usize = 2;
/// The intercept's default listening port.
pub const DEFAULT_PORT: u16 = 36524;
/// Size of a copier → intercept message in protocol 6 (and of an IPv4 one in protocol 7).
pub const COPIER_MSG_LEN: usize = 14;
/// Size of an IPv6 copier → intercept message (protocol 7).
pub const COPIER_MSG6_LEN: usize = 38;
/// Bytes of the hello the intercept checks before reading the rest ("too old" check).
pub const HELLO_PREFIX_LEN: usize = 8;
/// Size of an intercept → copier header message carrying IPv4 (builds without response payload).
pub const HEADER_MSG_LEN: usize = 64;
/// Size of an intercept → copier header message carrying IPv6 (protocol 7).
pub const HEADER_MSG6_LEN: usize = 84;
/// Most messages one combined frame may carry.
pub const MAX_FRAME_MSGS: usize = 16;
/// Size of the count prefix of a combined frame.
pub const COUNT_LEN: usize = 2;
/// Largest combined frame on the wire in protocol 6.
pub const MAX_FRAME_LEN: usize = COUNT_LEN + MAX_FRAME_MSGS * HEADER_MSG_LEN;
/// Largest combined frame on the wire in protocol 7 (16 IPv6 messages).
pub const MAX_FRAME_LEN_V7: usize = COUNT_LEN + MAX_FRAME_MSGS * HEADER_MSG6_LEN;
/// Most TCP option bytes a header message keeps.
pub const MAX_OPTION_LEN: usize = 24;
/// The v7 type of an IPv6 CLIENT_ADD.
pub const TYPE_CLIENT_ADD6: u16 = 8;
/// The v7 type of an IPv6 CLIENT_DEL.
pub const TYPE_CLIENT_DEL6: u16 = 9;

/// Bytes of the IPv4 header a message carries (0..20).
const IP_LEN: usize = ipv4::MIN_HEADER_LEN;
/// Bytes of the IPv6 header a message carries (0..40).
const IP6_LEN: usize = ipv6::HEADER_LEN;
/// Bytes of the fixed TCP header a message carries; its options follow.
const TCP_LEN: usize = tcp::MIN_HEADER_LEN;

/// Return the 14-byte hello: all zero but type 6, and with `offer` (a version above 6) the
/// xdpcopy marker and that version in the last 6 bytes, which an original intercept ignores.
pub fn hello_bytes(offer: Option<u16>) -> [u8; COPIER_MSG_LEN] {
    let mut b = [0u8; COPIER_MSG_LEN];
    b[6..8].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    if let Some(v) = offer {
        b[8..12].copy_from_slice(&HELLO_MARKER);
        b[12..14].copy_from_slice(&v.to_be_bytes());
    }
    b
}

/// Return the intercept's acknowledgement of `version` (7): `0x80 ‖ version`.
pub fn ack_bytes(version: u16) -> [u8; ACK_LEN] {
    // Versions fit a byte: 6 and 7 exist.
    [ACK_PREFIX, version as u8]
}

/// Return the copier's upgrade message (v6 layout, type 7, all else zero): what follows it is v7.
pub fn upgrade_bytes() -> [u8; COPIER_MSG_LEN] {
    let mut b = [0u8; COPIER_MSG_LEN];
    b[6..8].copy_from_slice(&EXTENDED_VERSION.to_be_bytes());
    b
}

/// Type field of a copier → intercept message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgKind {
    /// Register a session: route its responses to this connection (1; 8 for IPv6 in v7).
    ClientAdd,
    /// Forget a session (2; 9 for IPv6 in v7). The original copier never sends it.
    ClientDel,
    /// The version hello, first on every connection (6).
    Hello,
    /// The upgrade to protocol 7 (7, v6 layout), after the intercept's acknowledgement.
    Upgrade,
    /// Any other value.
    Other(u16),
}

impl MsgKind {
    /// Decode a type field (v6 layout, or an IPv4 message of v7).
    pub const fn from_wire(v: u16) -> Self {
        match v {
            1 => Self::ClientAdd,
            2 => Self::ClientDel,
            PROTOCOL_VERSION => Self::Hello,
            EXTENDED_VERSION => Self::Upgrade,
            v => Self::Other(v),
        }
    }

    /// Encode as a type field (v6 layout, or an IPv4 message of v7).
    pub const fn to_wire(self) -> u16 {
        match self {
            Self::ClientAdd => 1,
            Self::ClientDel => 2,
            Self::Hello => PROTOCOL_VERSION,
            Self::Upgrade => EXTENDED_VERSION,
            Self::Other(v) => v,
        }
    }
}

/// An encoded copier message: 14 or 38 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    len: u8,
    buf: [u8; COPIER_MSG6_LEN],
}

impl std::ops::Deref for Encoded {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({:02x?})", &**self)
    }
}

/// A copier → intercept message about a session (or the hello), whatever its layout on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopierMsg {
    /// Message type.
    pub kind: MsgKind,
    /// The session's client as sent to the target (IPv4 or IPv6).
    pub client: SocketAddr,
    /// The session's target (the client's family).
    pub target: SocketAddr,
}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl CopierMsg {
    /// Build the protocol-6 version hello: all zero except type = 6 (see [`hello_bytes`] for the
    /// one that offers protocol 7).
    pub const fn hello() -> Self {
        Self { kind: MsgKind::Hello, client: UNSPECIFIED, target: UNSPECIFIED }
    }

    /// Build a CLIENT_ADD for a session.
    pub fn client_add(client: impl Into<SocketAddr>, target: impl Into<SocketAddr>) -> Self {
        Self { kind: MsgKind::ClientAdd, client: client.into(), target: target.into() }
    }

    /// Build a CLIENT_DEL for a session.
    pub fn client_del(client: impl Into<SocketAddr>, target: impl Into<SocketAddr>) -> Self {
        Self { kind: MsgKind::ClientDel, client: client.into(), target: target.into() }
    }

    /// Return the client address.
    pub const fn client(&self) -> SocketAddr {
        self.client
    }

    /// Return the target address.
    pub const fn target(&self) -> SocketAddr {
        self.target
    }

    /// Return whether the session is IPv6 (protocol 7 only).
    pub const fn is_ipv6(&self) -> bool {
        self.client.is_ipv6()
    }

    /// Encode to the 14 bytes of protocol 6; `None` for an IPv6 session (protocol 6 cannot
    /// carry it) or mixed families.
    pub fn encode_v6(&self) -> Option<[u8; COPIER_MSG_LEN]> {
        let (SocketAddr::V4(c), SocketAddr::V4(t)) = (self.client, self.target) else {
            return None;
        };
        let mut b = [0u8; COPIER_MSG_LEN];
        b[0..4].copy_from_slice(&c.ip().octets());
        b[4..6].copy_from_slice(&c.port().to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_wire().to_be_bytes());
        b[8..12].copy_from_slice(&t.ip().octets());
        b[12..14].copy_from_slice(&t.port().to_be_bytes());
        Some(b)
    }

    /// Encode in the type-first layout of protocol 7 (14 bytes for IPv4, 38 for IPv6); `None`
    /// for mixed families or a kind other than CLIENT_ADD / CLIENT_DEL.
    pub fn encode_v7(&self) -> Option<Encoded> {
        let mut e = Encoded { len: 0, buf: [0; COPIER_MSG6_LEN] };
        let b = &mut e.buf;
        match (self.client, self.target) {
            (SocketAddr::V4(c), SocketAddr::V4(t)) => {
                let ty = match self.kind {
                    MsgKind::ClientAdd | MsgKind::ClientDel => self.kind.to_wire(),
                    _ => return None,
                };
                b[0..2].copy_from_slice(&ty.to_be_bytes());
                b[2..6].copy_from_slice(&c.ip().octets());
                b[6..8].copy_from_slice(&c.port().to_be_bytes());
                b[8..12].copy_from_slice(&t.ip().octets());
                b[12..14].copy_from_slice(&t.port().to_be_bytes());
                e.len = COPIER_MSG_LEN as u8;
            }
            (SocketAddr::V6(c), SocketAddr::V6(t)) => {
                let ty = match self.kind {
                    MsgKind::ClientAdd => TYPE_CLIENT_ADD6,
                    MsgKind::ClientDel => TYPE_CLIENT_DEL6,
                    _ => return None,
                };
                b[0..2].copy_from_slice(&ty.to_be_bytes());
                b[2..18].copy_from_slice(&c.ip().octets());
                b[18..20].copy_from_slice(&c.port().to_be_bytes());
                b[20..36].copy_from_slice(&t.ip().octets());
                b[36..38].copy_from_slice(&t.port().to_be_bytes());
                e.len = COPIER_MSG6_LEN as u8;
            }
            _ => return None,
        }
        Some(e)
    }

    /// Encode for a connection speaking `version` (6 or 7); `None` when it cannot be carried.
    pub fn encode(&self, version: u16) -> Option<Encoded> {
        if version >= EXTENDED_VERSION {
            return self.encode_v7();
        }
        let b = self.encode_v6()?;
        let mut e = Encoded { len: COPIER_MSG_LEN as u8, buf: [0; COPIER_MSG6_LEN] };
        e.buf[..COPIER_MSG_LEN].copy_from_slice(&b);
        Some(e)
    }

    /// Decode the 14 bytes of protocol 6 (every bit pattern is a message; the type may be
    /// `Other`).
    pub fn decode(b: &[u8; COPIER_MSG_LEN]) -> Self {
        Self {
            client: SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                u16::from_be_bytes([b[4], b[5]]),
            )),
            kind: MsgKind::from_wire(u16::from_be_bytes([b[6], b[7]])),
            target: SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b[8], b[9], b[10], b[11]),
                u16::from_be_bytes([b[12], b[13]]),
            )),
        }
    }

    /// Decode a protocol-7 message of type `ty` from its body (the bytes after the type):
    /// 12 bytes for types 1 and 2, 36 for 8 and 9.
    fn decode_v7(ty: u16, body: &[u8]) -> Self {
        let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
        match ty {
            TYPE_CLIENT_ADD6 | TYPE_CLIENT_DEL6 => {
                let ip = |at: usize| {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&body[at..at + 16]);
                    Ipv6Addr::from(a)
                };
                Self {
                    kind: if ty == TYPE_CLIENT_ADD6 { MsgKind::ClientAdd } else { MsgKind::ClientDel },
                    client: SocketAddr::new(IpAddr::V6(ip(0)), port(16)),
                    target: SocketAddr::new(IpAddr::V6(ip(18)), port(34)),
                }
            }
            _ => Self {
                kind: MsgKind::from_wire(ty),
                client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(body[0], body[1], body[2], body[3])), port(4)),
                target: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(body[6], body[7], body[8], body[9])), port(10)),
            },
        }
    }
}

/// Return the body length of a protocol-7 message of type `ty` (`None`: unknown type).
const fn v7_body_len(ty: u16) -> Option<usize> {
    match ty {
        1 | 2 => Some(COPIER_MSG_LEN - 2),
        TYPE_CLIENT_ADD6 | TYPE_CLIENT_DEL6 => Some(COPIER_MSG6_LEN - 2),
        _ => None,
    }
}

/// Why a captured packet cannot become a [`HeaderMsg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The bytes end before the IP or TCP header does.
    #[error("packet truncated inside its IP or TCP header")]
    Truncated,
    /// The IP version is neither 4 nor 6.
    #[error("neither an IPv4 nor an IPv6 packet")]
    BadVersion,
    /// The IP protocol is not TCP.
    #[error("not a TCP packet")]
    NotTcp,
    /// A fragment (IPv4 offset or MF, an IPv6 fragment header).
    #[error("IP fragment")]
    Fragment,
    /// An IPv6 extension header that cannot be skipped (AH, ESP, a long chain).
    #[error("IPv6 extension header that cannot be skipped")]
    Extension,
    /// IHL below 5.
    #[error("IP header length below 20 bytes")]
    BadIpHeaderLen,
    /// TCP data offset below 5.
    #[error("TCP data offset below 20 bytes")]
    BadTcpHeaderLen,
    /// The IP total (payload) length is smaller than the IP and TCP headers.
    #[error("IP total length smaller than the headers")]
    BadTotalLen,
}

/// An intercept → copier header message: a response's IPv4 + TCP header (64 bytes), or, in
/// protocol 7, its IPv6 + TCP header (84 bytes).
///
/// Layout: IP header (20; IPv6: 40) ‖ TCP fixed header (20) ‖ up to 24 option bytes,
/// zero-filled. The IP total (payload) length is the original packet's, so the payload length is
/// known without the payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderMsg {
    /// The 84-byte (IPv6) layout; otherwise the first 64 bytes are the message, the rest zero.
    wide: bool,
    bytes: [u8; HEADER_MSG6_LEN],
}

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

    /// Wrap 64 received bytes: the IPv4 layout (no validation: every field is read as is; see
    /// [`HeaderMsg::check`]).
    pub const fn from_bytes(bytes: [u8; HEADER_MSG_LEN]) -> Self {
        let mut b = [0u8; HEADER_MSG6_LEN];
        let mut i = 0;
        while i < HEADER_MSG_LEN {
            b[i] = bytes[i];
            i += 1;
        }
        Self { wide: false, bytes: b }
    }

    /// Wrap 84 received bytes: the IPv6 layout of protocol 7 (no validation).
    pub const fn from_bytes6(bytes: [u8; HEADER_MSG6_LEN]) -> Self {
        Self { wide: true, bytes }
    }

    /// Build a message from a captured IPv4 or IPv6 TCP packet (starting at the IP header).
    ///
    /// The payload need not be present (only the headers are read). IP options and IPv6
    /// extension headers are dropped and the header normalised as the module docs explain.
    ///
    /// # Errors
    ///
    /// A [`HeaderError`] when the bytes are not a complete IPv4 or IPv6 + TCP header.
    pub fn from_packet(packet: &[u8]) -> Result<Self, HeaderError> {
        match packet.first().map(|b| b >> 4) {
            None => Err(HeaderError::Truncated),
            Some(4) => Self::from_packet4(packet),
            Some(6) => Self::from_packet6(packet),
            Some(_) => Err(HeaderError::BadVersion),
        }
    }

    /// The TCP header of `segment` as a message carries it; checked to be complete.
    fn tcp_of(segment: &[u8]) -> Result<tcp::Packet<&[u8]>, HeaderError> {
        tcp::Packet::new_checked(segment).map_err(|e| match e {
            wire::Error::BadDataOffset if usize::from(tcp::Packet::new_unchecked(segment).header_len()) < TCP_LEN => {
                HeaderError::BadTcpHeaderLen
            }
            _ => HeaderError::Truncated,
        })
    }

    fn from_packet4(packet: &[u8]) -> Result<Self, HeaderError> {
        // The payload need not be there: the IP header is checked against the bytes, the total
        // length only against the headers (below).
        let ip = ipv4::Packet::new_checked_header(packet).map_err(|e| match e {
            wire::Error::BadVersion => HeaderError::BadVersion,
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
        let tcp = Self::tcp_of(segment)?;
        let doff = usize::from(tcp.header_len());
        let total = usize::from(ip.total_len());
        if total < ihl + doff {
            return Err(HeaderError::BadTotalLen);
        }

        let mut b = [0u8; HEADER_MSG6_LEN];
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
        Ok(Self { wide: false, bytes: b })
    }

    fn from_packet6(packet: &[u8]) -> Result<Self, HeaderError> {
        if packet.len() < IP6_LEN {
            return Err(HeaderError::Truncated);
        }
        // Not `new_checked`: the payload need not be there. The walk checks each extension
        // header against the bytes and the payload length.
        let ip = ipv6::Packet::new_unchecked(packet);
        let offset = match ip.upper_layer() {
            Ok(ipv6::Upper::Found { next_header: IPPROTO_TCP, offset }) => offset,
            Ok(ipv6::Upper::Found { .. }) => return Err(HeaderError::NotTcp),
            Ok(ipv6::Upper::Fragment { .. }) => return Err(HeaderError::Fragment),
            Ok(ipv6::Upper::Unwalkable { .. }) => return Err(HeaderError::Extension),
            // An extension header past the bytes or past the payload length.
            Err(_) => return Err(HeaderError::Truncated),
        };
        let segment = &packet[offset..];
        let tcp = Self::tcp_of(segment)?;
        let doff = usize::from(tcp.header_len());
        let ext = offset - IP6_LEN;
        let plen = usize::from(ip.payload_len());
        if plen < ext + doff {
            return Err(HeaderError::BadTotalLen);
        }
        let mut b = [0u8; HEADER_MSG6_LEN];
        b[..IP6_LEN].copy_from_slice(&packet[..IP6_LEN]);
        let tcp_copy = doff.min(HEADER_MSG6_LEN - IP6_LEN);
        b[IP6_LEN..IP6_LEN + tcp_copy].copy_from_slice(&segment[..tcp_copy]);
        if ext > 0 {
            // Normalise: the extension headers are gone (see the module docs). No checksum.
            let mut out = ipv6::Packet::new_unchecked(&mut b[..IP6_LEN]);
            out.set_next_header(IPPROTO_TCP);
            // Shrinks: fits.
            out.set_payload_len((plen - ext) as u16);
        }
        Ok(Self { wide: true, bytes: b })
    }

    /// Check what a reader of the message relies on: IPv4 (IPv6 in the 84-byte layout), IHL
    /// and data offset of at least 5, and a total (payload) length that covers the headers.
    ///
    /// # Errors
    ///
    /// [`wire::Error::BadVersion`] unless version 4 (6 in the IPv6 layout),
    /// [`wire::Error::BadHeaderLen`] for an IHL below 5, [`wire::Error::BadDataOffset`] for a
    /// data offset below 5, [`wire::Error::BadTotalLen`] if the length is shorter than the
    /// headers.
    pub fn check(&self) -> Result<(), wire::Error> {
        let want = if self.wide { 6 } else { 4 };
        if self.bytes[0] >> 4 != want {
            return Err(wire::Error::BadVersion);
        }
        if !self.wide && self.ip_header_len() < IP_LEN {
            return Err(wire::Error::BadHeaderLen);
        }
        if self.tcp_header_len() < TCP_LEN {
            return Err(wire::Error::BadDataOffset);
        }
        let covered = if self.wide {
            usize::from(self.ip6().payload_len()) >= self.tcp_header_len()
        } else {
            usize::from(self.total_len()) >= self.ip_header_len() + self.tcp_header_len()
        };
        if !covered {
            return Err(wire::Error::BadTotalLen);
        }
        Ok(())
    }

    /// Return the wire bytes: 64, or 84 for an IPv6 message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }

    /// Return the message's length on the wire (64, or 84 for IPv6).
    pub const fn len(&self) -> usize {
        if self.wide {
            HEADER_MSG6_LEN
        } else {
            HEADER_MSG_LEN
        }
    }

    /// Return whether the message has no bytes (never: for clippy's `len` rule).
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Return whether the message is in the IPv6 layout.
    pub const fn is_ipv6(&self) -> bool {
        self.wide
    }

    /// Where the TCP header starts.
    const fn tcp_at(&self) -> usize {
        if self.wide {
            IP6_LEN
        } else {
            IP_LEN
        }
    }

    /// View the IPv4 header (20 bytes: its options are never carried).
    fn ip(&self) -> ipv4::Packet<&[u8]> {
        ipv4::Packet::new_unchecked(&self.bytes[..IP_LEN])
    }

    /// View the IPv6 header.
    fn ip6(&self) -> ipv6::Packet<&[u8]> {
        ipv6::Packet::new_unchecked(&self.bytes[..IP6_LEN])
    }

    /// View the TCP header (its options cut to 24 bytes: use [`HeaderMsg::options`]).
    fn tcp(&self) -> tcp::Packet<&[u8]> {
        tcp::Packet::new_unchecked(&self.bytes[self.tcp_at()..self.len()])
    }

    /// Return the IP source (the target that answered).
    pub fn src_ip(&self) -> IpAddr {
        if self.wide {
            IpAddr::V6(self.ip6().src_addr())
        } else {
            IpAddr::V4(self.ip().src_addr())
        }
    }

    /// Return the IP destination (the session's client address).
    pub fn dst_ip(&self) -> IpAddr {
        if self.wide {
            IpAddr::V6(self.ip6().dst_addr())
        } else {
            IpAddr::V4(self.ip().dst_addr())
        }
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
    pub fn client(&self) -> SocketAddr {
        SocketAddr::new(self.dst_ip(), self.dst_port())
    }

    /// Return the session's target address (response source).
    pub fn target(&self) -> SocketAddr {
        SocketAddr::new(self.src_ip(), self.src_port())
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

    /// Return the original packet's IP length: the IPv4 total length, or 40 + the IPv6 payload
    /// length (at most 65 535).
    pub fn total_len(&self) -> u16 {
        if self.wide {
            self.ip6().payload_len().saturating_add(IP6_LEN as u16)
        } else {
            self.ip().total_len()
        }
    }

    /// Return the IP header length in bytes as the header claims it (IHL × 4; 40 for IPv6).
    pub fn ip_header_len(&self) -> usize {
        if self.wide {
            IP6_LEN
        } else {
            usize::from(self.ip().header_len())
        }
    }

    /// Return the TCP option bytes carried (at most 24; fewer when the header is shorter).
    pub fn options(&self) -> &[u8] {
        let len = self.tcp_header_len().saturating_sub(TCP_LEN).min(MAX_OPTION_LEN);
        let at = self.tcp_at() + TCP_LEN;
        &self.bytes[at..at + len]
    }

    /// Return the option walker over the TCP option bytes carried.
    pub fn tcp_options(&self) -> tcp::Options<'_> {
        tcp::Options::new(self.options())
    }

    /// Return the original packet's payload length: total − IHL×4 − data offset×4 (IPv6:
    /// payload length − data offset×4), saturating.
    pub fn payload_len(&self) -> usize {
        if self.wide {
            usize::from(self.ip6().payload_len()).saturating_sub(self.tcp_header_len())
        } else {
            usize::from(self.total_len()).saturating_sub(self.ip_header_len()).saturating_sub(self.tcp_header_len())
        }
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
    /// `count:u16 ‖ count × message`, count ≤ 16 (the original's default).
    #[default]
    Combined,
    /// A plain stream of messages (`--disable-combined` on both original sides).
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
    /// A protocol-7 message whose first nibble is neither 4 nor 6: its length is unknown.
    #[error("header message starting with {first:#04x}: neither IPv4 nor IPv6")]
    BadMessage {
        /// The message's first byte.
        first: u8,
    },
    /// An acknowledgement of a version this copier did not offer.
    #[error("the intercept acknowledged protocol version {version}, which was not offered")]
    BadAck {
        /// The version acknowledged.
        version: u8,
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
    let need = prefix + msgs.iter().map(HeaderMsg::len).sum::<usize>();
    if out.len() < need {
        return Err(FrameError::BufferTooSmall { need, have: out.len() });
    }
    if prefix != 0 {
        // msgs.len() ≤ 16.
        out[..COUNT_LEN].copy_from_slice(&(msgs.len() as u16).to_be_bytes());
    }
    let mut at = prefix;
    for msg in msgs {
        out[at..at + msg.len()].copy_from_slice(msg.as_bytes());
        at += msg.len();
    }
    Ok(need)
}

/// A frame being filled, in a fixed buffer: the intercept's per-connection batch.
#[derive(Clone)]
pub struct FrameBuilder {
    framing: Framing,
    count: usize,
    /// End of the last message in `buf` (the count prefix is always reserved).
    end: usize,
    buf: [u8; MAX_FRAME_LEN_V7],
}

impl FrameBuilder {
    /// Create an empty frame.
    pub const fn new(framing: Framing) -> Self {
        Self { framing, count: 0, end: COUNT_LEN, buf: [0; MAX_FRAME_LEN_V7] }
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
        let len = msg.len();
        self.buf[self.end..self.end + len].copy_from_slice(msg.as_bytes());
        self.end += len;
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
        match self.framing {
            Framing::Combined => {
                // count ≤ 16.
                self.buf[..COUNT_LEN].copy_from_slice(&(self.count as u16).to_be_bytes());
                &self.buf[..self.end]
            }
            Framing::Bare => &self.buf[COUNT_LEN..self.end],
        }
    }

    /// Empty the frame.
    pub fn clear(&mut self) {
        self.count = 0;
        self.end = COUNT_LEN;
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
/// Messages are delivered as soon as they are complete; a frame's count is validated before its
/// first message. After an error the decoder stays poisoned until [`reset`](Self::reset).
///
/// A decoder made with [`negotiating`](Self::negotiating) takes `0x80 0x07` as the first bytes
/// of the stream for the intercept's acknowledgement of protocol 7 (module docs): from then on
/// it reads IPv6 messages too ([`version`](Self::version) says 7). Any other first byte settles
/// the stream as protocol 6.
#[derive(Clone)]
pub struct FrameDecoder {
    framing: Framing,
    /// The stream's first bytes may be the acknowledgement.
    await_ack: bool,
    /// The start was negotiable at the last reset.
    negotiable: bool,
    /// 6 or 7.
    version: u16,
    /// Messages still due in the current combined frame; 0 = a count comes next.
    remaining: u16,
    have: usize,
    /// Length of the message being assembled (when `have > 0` inside a message).
    want: usize,
    buf: [u8; HEADER_MSG6_LEN],
    poisoned: Option<FrameError>,
}

impl FrameDecoder {
    /// Create a protocol-6 decoder at a frame boundary (no acknowledgement expected).
    pub const fn new(framing: Framing) -> Self {
        Self {
            framing,
            await_ack: false,
            negotiable: false,
            version: PROTOCOL_VERSION,
            remaining: 0,
            have: 0,
            want: HEADER_MSG_LEN,
            buf: [0; HEADER_MSG6_LEN],
            poisoned: None,
        }
    }

    /// Create a decoder for a connection whose hello offered protocol 7: the first two bytes may
    /// be the acknowledgement.
    pub const fn negotiating(framing: Framing) -> Self {
        let mut d = Self::new(framing);
        d.await_ack = true;
        d.negotiable = true;
        d
    }

    /// Return the framing.
    pub const fn framing(&self) -> Framing {
        self.framing
    }

    /// Return to the start of a stream and clear any error (for a new connection).
    pub fn reset(&mut self) {
        *self = if self.negotiable { Self::negotiating(self.framing) } else { Self::new(self.framing) };
    }

    /// Return whether no partial count or message is buffered.
    pub fn is_idle(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Return the protocol version the stream speaks: 6, or 7 once acknowledged.
    pub const fn version(&self) -> u16 {
        self.version
    }

    /// Return whether the stream's version is settled: a first byte has been read (or no
    /// acknowledgement was expected).
    pub const fn settled(&self) -> bool {
        !self.await_ack
    }

    fn poison(&mut self, e: FrameError) -> Result<Decoded, FrameError> {
        self.poisoned = Some(e);
        Err(e)
    }

    /// Consume `data`, calling `on_msg` for each complete message, in order.
    ///
    /// # Errors
    ///
    /// [`FrameError::CountTooLarge`] when a count above 16 arrives, [`FrameError::BadMessage`]
    /// for a protocol-7 message of no known layout, [`FrameError::BadAck`] for an
    /// acknowledgement of another version (also on every later call).
    pub fn feed(&mut self, mut data: &[u8], mut on_msg: impl FnMut(HeaderMsg)) -> Result<Decoded, FrameError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let mut out = Decoded::default();
        while !data.is_empty() {
            if self.await_ack {
                if self.have == 0 && data[0] != ACK_PREFIX {
                    // A protocol-6 peer: this is the start of a frame.
                    self.await_ack = false;
                    continue;
                }
                let take = (ACK_LEN - self.have).min(data.len());
                self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < ACK_LEN {
                    break;
                }
                self.have = 0;
                self.await_ack = false;
                if u16::from(self.buf[1]) != EXTENDED_VERSION {
                    return self.poison(FrameError::BadAck { version: self.buf[1] });
                }
                self.version = EXTENDED_VERSION;
                continue;
            }
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
                    return self.poison(FrameError::CountTooLarge { count });
                }
                if count == 0 {
                    out.frames += 1;
                } else {
                    self.remaining = count;
                }
                continue;
            }

            if self.have == 0 {
                // A message starts: its first byte says its layout in protocol 7.
                self.want = if self.version >= EXTENDED_VERSION {
                    match data[0] >> 4 {
                        4 => HEADER_MSG_LEN,
                        6 => HEADER_MSG6_LEN,
                        _ => return self.poison(FrameError::BadMessage { first: data[0] }),
                    }
                } else {
                    HEADER_MSG_LEN
                };
            }
            let want = self.want;
            let msg = if self.have == 0 && data.len() >= want {
                let (head, rest) = data.split_at(want);
                data = rest;
                Self::message(head)
            } else {
                let take = (want - self.have).min(data.len());
                self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < want {
                    break;
                }
                self.have = 0;
                Self::message(&self.buf[..want])
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

    /// A message from exactly 64 or 84 bytes.
    fn message(b: &[u8]) -> HeaderMsg {
        let mut bytes = [0u8; HEADER_MSG6_LEN];
        bytes[..b.len()].copy_from_slice(b);
        HeaderMsg { wide: b.len() == HEADER_MSG6_LEN, bytes }
    }
}

/// What the intercept-side decoder found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopierEvent {
    /// The 14-byte hello is complete; `version` is its type field. `ack` is the version to
    /// acknowledge at once (see [`ack_bytes`]) when the copier offered protocol 7 and this
    /// decoder accepts it; `None` otherwise (the connection speaks 6).
    Hello {
        /// Protocol version announced by the copier.
        version: u16,
        /// The version to acknowledge (7), if any.
        ack: Option<u16>,
    },
    /// The copier switched the connection to protocol 7: later messages are type-first.
    Upgraded {
        /// The version now spoken.
        version: u16,
    },
    /// A message after the hello (any type; the caller decides what to do with unknown ones).
    Msg(CopierMsg),
}

impl CopierEvent {
    /// Return whether this is a hello with a version other than 6 ("not compatible").
    pub fn is_incompatible_hello(&self) -> bool {
        matches!(self, Self::Hello { version, .. } if *version != PROTOCOL_VERSION)
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
    /// A protocol-7 message of an unknown type: its length is unknown, the stream cannot go on.
    #[error("protocol 7 message of unknown type {ty}")]
    UnknownType {
        /// The type read.
        ty: u16,
    },
}

/// Incremental intercept-side decoder: the hello (8 + 6 bytes), then 14-byte messages; after an
/// acknowledged upgrade, type-first protocol-7 messages.
#[derive(Clone)]
pub struct CopierDecoder {
    /// Highest version this side accepts (6: behave as the original intercept).
    max_version: u16,
    hello_done: bool,
    /// The hello offered protocol 7 and this side accepts it: a type-7 message upgrades.
    offered: bool,
    /// Type-first messages (protocol 7).
    v7: bool,
    have: usize,
    /// Bytes of the message being assembled (protocol 7: 2 until its type is known).
    want: usize,
    buf: [u8; COPIER_MSG6_LEN],
    poisoned: Option<CopierError>,
}

impl Default for CopierDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CopierDecoder {
    /// Create a decoder expecting the hello, accepting protocol 7.
    pub const fn new() -> Self {
        Self::with_max_version(EXTENDED_VERSION)
    }

    /// Create a decoder expecting the hello, accepting versions up to `max` (6: never
    /// acknowledge an offer, exactly as the original intercept).
    pub const fn with_max_version(max: u16) -> Self {
        Self {
            max_version: max,
            hello_done: false,
            offered: false,
            v7: false,
            have: 0,
            want: COPIER_MSG_LEN,
            buf: [0; COPIER_MSG6_LEN],
            poisoned: None,
        }
    }

    /// Return whether the hello has been received.
    pub const fn hello_done(&self) -> bool {
        self.hello_done
    }

    /// Return the protocol version the stream speaks now (6, or 7 after the upgrade).
    pub const fn version(&self) -> u16 {
        if self.v7 {
            EXTENDED_VERSION
        } else {
            PROTOCOL_VERSION
        }
    }

    /// Consume `data`, calling `on_event` for the hello and each later message, in order.
    ///
    /// # Errors
    ///
    /// [`CopierError::TooOld`] as soon as the first 8 bytes carry a client address,
    /// [`CopierError::UnknownType`] after a protocol-7 message of unknown type (reported to
    /// `on_event` as [`MsgKind::Other`] first); also on every later call: the connection must be
    /// closed.
    pub fn feed(&mut self, mut data: &[u8], mut on_event: impl FnMut(CopierEvent)) -> Result<(), CopierError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        while !data.is_empty() {
            if self.v7 {
                let take = (self.want - self.have).min(data.len());
                self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < self.want {
                    break;
                }
                let ty = u16::from_be_bytes([self.buf[0], self.buf[1]]);
                let Some(body) = v7_body_len(ty) else {
                    on_event(CopierEvent::Msg(CopierMsg { kind: MsgKind::from_wire(ty), ..CopierMsg::hello() }));
                    let e = CopierError::UnknownType { ty };
                    self.poisoned = Some(e);
                    return Err(e);
                };
                if self.want == 2 {
                    self.want = 2 + body;
                    continue;
                }
                self.have = 0;
                self.want = 2;
                on_event(CopierEvent::Msg(CopierMsg::decode_v7(ty, &self.buf[2..2 + body])));
                continue;
            }
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
            let mut b = [0u8; COPIER_MSG_LEN];
            b.copy_from_slice(&self.buf[..COPIER_MSG_LEN]);
            if !self.hello_done {
                self.hello_done = true;
                let version = u16::from_be_bytes([b[6], b[7]]);
                let offer = (b[8..12] == HELLO_MARKER).then(|| u16::from_be_bytes([b[12], b[13]]));
                let ack = offer
                    .filter(|&v| {
                        version == PROTOCOL_VERSION && v >= EXTENDED_VERSION && self.max_version >= EXTENDED_VERSION
                    })
                    .map(|_| EXTENDED_VERSION);
                self.offered = ack.is_some();
                on_event(CopierEvent::Hello { version, ack });
                continue;
            }
            let msg = CopierMsg::decode(&b);
            if msg.kind == MsgKind::Upgrade && self.offered {
                self.v7 = true;
                self.want = 2;
                on_event(CopierEvent::Upgraded { version: EXTENDED_VERSION });
            } else {
                on_event(CopierEvent::Msg(msg));
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

    /// The 64 bytes of an IPv4 message.
    fn v4_bytes(m: &HeaderMsg) -> [u8; HEADER_MSG_LEN] {
        m.as_bytes().try_into().unwrap()
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
    fn hello_v6_bytes() {
        let b = CopierMsg::hello().encode_v6().unwrap();
        assert_eq!(b.to_vec(), hex("00000000 0000 0006 00000000 0000"));
        assert_eq!(CopierMsg::decode(&b), CopierMsg::hello());
    }

    #[test]
    fn client_add_bytes() {
        let m = CopierMsg::client_add(client(), target());
        let b = m.encode_v6().unwrap();
        assert_eq!(b.to_vec(), hex("0a0a0102 c4fa 0001 0a0a0203 1f90"));
        let d = CopierMsg::decode(&b);
        assert_eq!(d, m);
        assert_eq!(d.client(), SocketAddr::V4(client()));
        assert_eq!(d.target(), SocketAddr::V4(target()));
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
        assert_eq!(msg.client(), SocketAddr::V4(client()));
        assert_eq!(msg.target(), SocketAddr::V4(target()));
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
        assert_eq!(bare.bytes(), a.as_bytes());
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
        let mut b = v4_bytes(&a);
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
            let mut b = v4_bytes(&ok);
            b[at] = value;
            assert_eq!(HeaderMsg::from_bytes(b).check(), Err(want), "byte {at} = {value:#x}");
        }
        let mut b = v4_bytes(&ok);
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
        let mut b = v4_bytes(&msg);
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
        q[0] = 0x55;
        assert_eq!(HeaderMsg::from_packet(&q), Err(HeaderError::BadVersion));
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
        let mut stream = CopierMsg::hello().encode_v6().unwrap().to_vec();
        let add = CopierMsg::client_add(client(), target());
        let del = CopierMsg::client_del(client(), target());
        stream.extend(add.encode_v6().unwrap());
        stream.extend(del.encode_v6().unwrap());
        let want = vec![CopierEvent::Hello { version: 6, ack: None }, CopierEvent::Msg(add), CopierEvent::Msg(del)];
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
        let add = CopierMsg::client_add(client(), target()).encode_v6().unwrap();
        let mut dec = CopierDecoder::new();
        assert!(dec.feed(&add[..7], |_| panic!()).is_ok());
        let e = dec.feed(&add[7..8], |_| panic!()).unwrap_err();
        assert_eq!(e, CopierError::TooOld { client_ip: *client().ip(), client_port: client().port() });
        assert!(dec.feed(&add[8..], |_| panic!()).is_err());
    }

    #[test]
    fn copier_decoder_reports_incompatible_version() {
        let mut hello = CopierMsg::hello().encode_v6().unwrap();
        hello[7] = 5;
        let mut dec = CopierDecoder::new();
        let mut got = Vec::new();
        dec.feed(&hello, |e| got.push(e)).unwrap();
        assert_eq!(got, vec![CopierEvent::Hello { version: 5, ack: None }]);
        assert!(got[0].is_incompatible_hello());
        assert!(!CopierEvent::Hello { version: 6, ack: None }.is_incompatible_hello());
    }

    // ------------------------------------------------------------------ protocol 7

    fn client6() -> SocketAddr {
        "[2001:db8::2]:50426".parse().unwrap()
    }

    fn target6() -> SocketAddr {
        "[2001:db8::3]:8080".parse().unwrap()
    }

    const SYN_ACK6_IP: &str = "60 00 00 00 00 28 06 40 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 03 \
                               20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02";
    const SYN_ACK6_TCP: &str = "1f 90 c4 fa d4 05 09 ca 97 58 fe ba a0 12 fd 20 12 34 00 00";
    const SYN_ACK6_OPT: &str = "02 04 05 a0 04 02 08 0a 9a 17 65 6c 80 7d 96 74 01 03 03 0a";

    /// The SYN-ACK of an IPv6 session as captured: IPv6 + TCP with 20 option bytes.
    fn syn_ack6_packet() -> Vec<u8> {
        let mut p = hex(SYN_ACK6_IP);
        p.extend(hex(SYN_ACK6_TCP));
        p.extend(hex(SYN_ACK6_OPT));
        p
    }

    #[test]
    fn negotiation_bytes() {
        assert_eq!(hello_bytes(None).to_vec(), hex("00000000 0000 0006 00000000 0000"));
        assert_eq!(hello_bytes(None), CopierMsg::hello().encode_v6().unwrap());
        // "XDPC" and the highest version offered where the original's hello has zeros it ignores.
        assert_eq!(hello_bytes(Some(7)).to_vec(), hex("00000000 0000 0006 58445043 0007"));
        assert_eq!(ack_bytes(7), [0x80, 0x07]);
        assert_eq!(upgrade_bytes().to_vec(), hex("00000000 0000 0007 00000000 0000"));
        assert_eq!(MsgKind::from_wire(7), MsgKind::Upgrade);
    }

    #[test]
    fn v7_copier_messages_byte_for_byte() {
        let add = CopierMsg::client_add(client(), target());
        assert_eq!(add.encode_v7().unwrap().to_vec(), hex("0001 0a0a0102 c4fa 0a0a0203 1f90"));
        assert_eq!(add.encode(7).unwrap().to_vec(), hex("0001 0a0a0102 c4fa 0a0a0203 1f90"));
        assert_eq!(add.encode(6).unwrap().to_vec(), hex("0a0a0102 c4fa 0001 0a0a0203 1f90"));
        let del = CopierMsg::client_del(client(), target());
        assert_eq!(del.encode_v7().unwrap().to_vec(), hex("0002 0a0a0102 c4fa 0a0a0203 1f90"));

        let add6 = CopierMsg::client_add(client6(), target6());
        assert!(add6.is_ipv6());
        let want = hex("0008 20010db8000000000000000000000002 c4fa 20010db8000000000000000000000003 1f90");
        assert_eq!(add6.encode_v7().unwrap().to_vec(), want);
        assert_eq!(want.len(), COPIER_MSG6_LEN);
        let del6 = CopierMsg::client_del(client6(), target6());
        assert_eq!(del6.encode_v7().unwrap()[..2], [0, 9]);
        // Protocol 6 cannot carry IPv6, nor mixed families, nor anything but ADD/DEL in v7.
        assert_eq!(add6.encode_v6(), None);
        assert_eq!(add6.encode(6), None);
        assert_eq!(CopierMsg::client_add(client6(), target()).encode_v7(), None);
        assert_eq!(CopierMsg::hello().encode_v7(), None);
    }

    /// A copier's stream: the marked hello, an IPv4 CLIENT_ADD in the v6 layout (sent before the
    /// acknowledgement arrived), the upgrade, then v7: an IPv4 CLIENT_ADD, an IPv6 CLIENT_ADD and
    /// CLIENT_DEL.
    fn v7_stream() -> (Vec<u8>, Vec<CopierEvent>) {
        let add = CopierMsg::client_add(client(), target());
        let add2 = CopierMsg::client_add(SocketAddrV4::new(*client().ip(), 1), target());
        let add6 = CopierMsg::client_add(client6(), target6());
        let del6 = CopierMsg::client_del(client6(), target6());
        let mut stream = hello_bytes(Some(7)).to_vec();
        stream.extend(add.encode_v6().unwrap());
        stream.extend(upgrade_bytes());
        for m in [add2, add6, del6] {
            stream.extend(m.encode_v7().unwrap().iter());
        }
        let events = vec![
            CopierEvent::Hello { version: 6, ack: Some(7) },
            CopierEvent::Msg(add),
            CopierEvent::Upgraded { version: 7 },
            CopierEvent::Msg(add2),
            CopierEvent::Msg(add6),
            CopierEvent::Msg(del6),
        ];
        (stream, events)
    }

    #[test]
    fn copier_decoder_upgrades_after_an_acknowledged_offer_any_split() {
        let (stream, want) = v7_stream();
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut dec = CopierDecoder::new();
                let mut got = Vec::new();
                for part in [&stream[..i], &stream[i..j], &stream[j..]] {
                    dec.feed(part, |e| got.push(e)).unwrap();
                }
                assert_eq!(got, want, "split at {i},{j}");
                assert_eq!(dec.version(), 7);
            }
        }
    }

    #[test]
    fn an_intercept_that_stays_6_ignores_the_offer_and_refuses_the_upgrade() {
        // Decoding the marked hello as the original does: 8 bytes checked, 6 ignored.
        let mut dec = CopierDecoder::with_max_version(6);
        let mut got = Vec::new();
        let mut stream = hello_bytes(Some(7)).to_vec();
        stream.extend(CopierMsg::client_add(client(), target()).encode_v6().unwrap());
        dec.feed(&stream, |e| got.push(e)).unwrap();
        assert_eq!(
            got,
            vec![
                CopierEvent::Hello { version: 6, ack: None },
                CopierEvent::Msg(CopierMsg::client_add(client(), target()))
            ]
        );
        // An upgrade it never acknowledged is just an unknown type (the server closes).
        got.clear();
        dec.feed(&upgrade_bytes(), |e| got.push(e)).unwrap();
        assert!(matches!(got[..], [CopierEvent::Msg(CopierMsg { kind: MsgKind::Upgrade, .. })]));
        assert_eq!(dec.version(), 6);
        // No offer (an original copier), or a hello of another version: nothing to acknowledge.
        let mut got = Vec::new();
        CopierDecoder::new().feed(&hello_bytes(None), |e| got.push(e)).unwrap();
        let mut other = hello_bytes(Some(7));
        other[7] = 5;
        CopierDecoder::new().feed(&other, |e| got.push(e)).unwrap();
        assert_eq!(
            got,
            vec![CopierEvent::Hello { version: 6, ack: None }, CopierEvent::Hello { version: 5, ack: None }]
        );
    }

    #[test]
    fn an_unknown_v7_type_poisons_the_stream() {
        let mut stream = hello_bytes(Some(7)).to_vec();
        stream.extend(upgrade_bytes());
        stream.extend([0x00, 0x03, 1, 2, 3]);
        let mut dec = CopierDecoder::new();
        let mut got = Vec::new();
        let e = dec.feed(&stream, |e| got.push(e)).unwrap_err();
        assert_eq!(e, CopierError::UnknownType { ty: 3 });
        assert!(matches!(got.last(), Some(CopierEvent::Msg(CopierMsg { kind: MsgKind::Other(3), .. }))));
        assert!(dec.feed(&[0], |_| panic!()).is_err());
    }

    #[test]
    fn ipv6_header_message_byte_for_byte() {
        let p = syn_ack6_packet();
        let m = HeaderMsg::from_packet(&p).unwrap();
        let mut want = p.clone();
        want.extend([0, 0, 0, 0]);
        assert_eq!(m.as_bytes(), &want[..]);
        assert_eq!((m.len(), m.is_ipv6()), (HEADER_MSG6_LEN, true));
        assert_eq!(m.check(), Ok(()));
        assert_eq!(m.client(), client6());
        assert_eq!(m.target(), target6());
        assert_eq!((m.seq(), m.ack()), (3_557_099_978, 2_539_191_994));
        assert_eq!((m.flags(), m.window(), m.data_offset()), (HeaderMsg::SYN | HeaderMsg::ACK, 64800, 10));
        assert_eq!((m.total_len(), m.ip_header_len(), m.payload_len()), (80, 40, 0));
        assert_eq!(m.options(), &hex(SYN_ACK6_OPT)[..]);
        let opts: Vec<_> = m.tcp_options().collect();
        assert_eq!(opts[0], Ok(wire::tcp::TcpOption::Mss(1440)));
        assert_eq!(HeaderMsg::from_bytes6(want.try_into().unwrap()), m);

        // A data segment: payload length 1000 + 32, the payload itself not carried.
        let mut d = hex(SYN_ACK6_IP);
        d[4..6].copy_from_slice(&1032u16.to_be_bytes());
        d.extend(hex(SYN_ACK6_TCP));
        d[40 + 12] = 0x80;
        d[40 + 13] = 0x18;
        d.extend(hex("01 01 08 0a 9a 17 65 6c 80 7d 96 74"));
        let m = HeaderMsg::from_packet(&d).unwrap();
        assert_eq!((m.payload_len(), m.total_len(), m.tcp_header_len()), (1000, 1072, 32));
        // The checks a reader relies on.
        let mut b: [u8; HEADER_MSG6_LEN] = m.as_bytes().try_into().unwrap();
        b[4..6].copy_from_slice(&31u16.to_be_bytes());
        assert_eq!(HeaderMsg::from_bytes6(b).check(), Err(wire::Error::BadTotalLen));
        b[0] = 0x45;
        assert_eq!(HeaderMsg::from_bytes6(b).check(), Err(wire::Error::BadVersion));
        // An IPv6 first nibble in the 64-byte layout (protocol 6) is not IPv4.
        let mut b = [0u8; HEADER_MSG_LEN];
        b.copy_from_slice(&d[..64]);
        assert_eq!(HeaderMsg::from_bytes(b).check(), Err(wire::Error::BadVersion));
    }

    #[test]
    fn ipv6_extension_headers_are_normalised_away() {
        let base = syn_ack6_packet();
        // Hop-by-hop (8 bytes) and destination options (16 bytes) before TCP.
        let mut p = base[..40].to_vec();
        p[6] = 0;
        p[4..6].copy_from_slice(&(40u16 + 24).to_be_bytes());
        p.extend([60, 0, 1, 4, 0, 0, 0, 0]);
        p.extend([6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend(&base[40..]);
        let m = HeaderMsg::from_packet(&p).unwrap();
        assert_eq!(m, HeaderMsg::from_packet(&base).unwrap(), "as if they had never been there");

        // Fragments, AH, another protocol, truncation.
        let mut f = base[..40].to_vec();
        f[6] = 44;
        f.extend([6, 0, 0, 0, 0, 0, 0, 1]);
        f.extend(&base[40..]);
        assert_eq!(HeaderMsg::from_packet(&f), Err(HeaderError::Fragment));
        f[6] = 51;
        assert_eq!(HeaderMsg::from_packet(&f), Err(HeaderError::Extension));
        let mut u = base.clone();
        u[6] = 17;
        assert_eq!(HeaderMsg::from_packet(&u), Err(HeaderError::NotTcp));
        for len in [0, 39, 40, 59, 79] {
            assert!(HeaderMsg::from_packet(&base[..len]).is_err(), "len {len}");
        }
        let mut short = base.clone();
        short[4..6].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(HeaderMsg::from_packet(&short), Err(HeaderError::BadTotalLen));
    }

    /// A v7 stream from the intercept: the acknowledgement, a frame with an IPv4 and an IPv6
    /// message, an empty frame, a frame with one IPv6 message.
    fn v7_frames() -> (Vec<u8>, Vec<HeaderMsg>) {
        let m4 = HeaderMsg::from_packet(&syn_ack_packet()).unwrap();
        let m6 = HeaderMsg::from_packet(&syn_ack6_packet()).unwrap();
        let mut s = ack_bytes(7).to_vec();
        let mut out = [0u8; MAX_FRAME_LEN_V7];
        let n = encode_frame(Framing::Combined, &[m4, m6], &mut out).unwrap();
        assert_eq!(n, 2 + 64 + 84);
        assert_eq!(out[..2], [0, 2]);
        assert_eq!(out[2], 0x45);
        assert_eq!(out[2 + 64], 0x60);
        s.extend(&out[..n]);
        s.extend([0, 0]);
        let n = encode_frame(Framing::Combined, &[m6], &mut out).unwrap();
        s.extend(&out[..n]);
        (s, vec![m4, m6, m6])
    }

    #[test]
    fn frame_decoder_takes_the_acknowledgement_then_both_layouts_any_split() {
        let (stream, want) = v7_frames();
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut dec = FrameDecoder::negotiating(Framing::Combined);
                assert!(!dec.settled());
                let mut got = Vec::new();
                let mut frames = 0;
                for part in [&stream[..i], &stream[i..j], &stream[j..]] {
                    frames += dec.feed(part, |m| got.push(m)).unwrap().frames;
                }
                assert_eq!(got, want, "split at {i},{j}");
                assert_eq!((frames, dec.version(), dec.settled()), (3, 7, true));
                assert!(dec.is_idle());
            }
        }
    }

    #[test]
    fn frame_decoder_without_acknowledgement_stays_6() {
        // An original intercept's first bytes are a frame: the stream is protocol 6.
        let (frame, [a, b]) = two_msg_frame();
        let mut dec = FrameDecoder::negotiating(Framing::Combined);
        let mut got = Vec::new();
        dec.feed(&frame[..1], |m| got.push(m)).unwrap();
        assert!(dec.settled() && dec.version() == 6);
        dec.feed(&frame[1..], |m| got.push(m)).unwrap();
        assert_eq!(got, vec![a, b]);
        // Bare framing: the first byte is an IPv4 header's.
        let mut dec = FrameDecoder::negotiating(Framing::Bare);
        let mut got = Vec::new();
        dec.feed(a.as_bytes(), |m| got.push(m)).unwrap();
        assert_eq!((got, dec.version()), (vec![a], 6));
        // After the start, 0x80 is just a bad count.
        let mut dec = FrameDecoder::negotiating(Framing::Combined);
        dec.feed(&[0, 0], |_| {}).unwrap();
        assert_eq!(dec.feed(&[0x80, 0x07], |_| {}).unwrap_err(), FrameError::CountTooLarge { count: 0x8007 });
        // A plain protocol-6 decoder never takes an acknowledgement.
        let mut dec = FrameDecoder::new(Framing::Combined);
        assert!(dec.feed(&ack_bytes(7), |_| {}).is_err());
    }

    #[test]
    fn frame_decoder_refuses_a_bad_acknowledgement_and_unknown_layouts() {
        let mut dec = FrameDecoder::negotiating(Framing::Combined);
        assert_eq!(dec.feed(&[0x80, 0x08], |_| {}).unwrap_err(), FrameError::BadAck { version: 8 });
        let mut dec = FrameDecoder::negotiating(Framing::Combined);
        let e = dec.feed(&[0x80, 0x07, 0x00, 0x01, 0x55], |_| {}).unwrap_err();
        assert_eq!(e, FrameError::BadMessage { first: 0x55 });
        // reset() returns to a negotiable start.
        dec.reset();
        let (stream, want) = v7_frames();
        let mut got = Vec::new();
        dec.feed(&stream, |m| got.push(m)).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn frame_builder_mixes_layouts() {
        let m4 = HeaderMsg::from_packet(&syn_ack_packet()).unwrap();
        let m6 = HeaderMsg::from_packet(&syn_ack6_packet()).unwrap();
        let mut fb = FrameBuilder::new(Framing::Combined);
        for i in 0..16 {
            assert!(fb.push(if i % 2 == 0 { &m6 } else { &m4 }));
        }
        assert!(!fb.push(&m6));
        assert_eq!(fb.bytes().len(), 2 + 8 * 84 + 8 * 64);
        let mut fb = FrameBuilder::new(Framing::Bare);
        for _ in 0..16 {
            assert!(fb.push(&m6));
        }
        assert_eq!(fb.bytes().len(), MAX_FRAME_LEN_V7 - 2);
        let mut dec = FrameDecoder::negotiating(Framing::Bare);
        dec.feed(&ack_bytes(7), |_| {}).unwrap();
        let mut n = 0;
        dec.feed(fb.bytes(), |m| {
            assert_eq!(m, m6);
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 16);
    }
}
