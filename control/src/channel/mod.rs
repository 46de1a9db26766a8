//! The header-return channel between the copier and xdpcopy-intercept: TCPCopy protocol 6, and
//! xdpcopy's protocol 7 (IPv6 sessions), negotiated on each connection (see [`proto`]).
//!
//! ```text
//!  copier control thread                                  xdpcopy-intercept
//!  ┌──────────────────┐   hello, CLIENT_ADD (14 B each)   ┌──────────────────────────┐
//!  │ ChannelClient    │ ────────────────────────────────► │ ChannelServer            │
//!  │  -C conns per    │                                   │  RouteTable (4-tuple →   │
//!  │  intercept, RR   │ ◄──────────────────────────────── │  conn), DelayTable,      │
//!  │  FrameDecoder    │   frames: count ≤ 16 × 64 B hdr   │  per-conn FrameBuilder   │
//!  └──────────────────┘                                   └──────────────────────────┘
//! ```
//!
//! Modules in flow order:
//! - [`proto`]: the wire codec, allocation-free, byte-exact with the original; protocol 7's hello
//!   offer, acknowledgement, upgrade, type-first messages and 84-byte IPv6 headers;
//! - [`liveness`]: TCP keepalive and user timeout, set by both ends (protocol 6 has no ping);
//! - [`client`]: the copier side (connect, hello, CLIENT_ADD/DEL, decode headers, reconnect and
//!   re-register every live session);
//! - [`cidr`]: address prefixes for the intercept's copier allowlist;
//! - [`route`]: the intercept's route table and delay table (pure state, time passed in);
//! - [`server`]: the intercept side (admission, hello check, routing, batching).
//!
//! Both endpoints are single-threaded, non-blocking (mio) and owned by one thread each; per
//! message failures are counters, only event-loop failures are errors ([`ChannelError`]).

pub mod cidr;
pub mod client;
mod error;
pub mod liveness;
mod outbuf;
pub mod proto;
pub mod route;
pub mod server;

pub use cidr::Cidr;
pub use client::{ChannelClient, ClientStats};
pub use error::ChannelError;
pub use proto::{
    encode_frame, CopierDecoder, CopierError, CopierEvent, CopierMsg, Decoded, FrameBuilder, FrameDecoder, FrameError,
    Framing, HeaderError, HeaderMsg, MsgKind, DEFAULT_PORT, PROTOCOL_VERSION,
};
pub use route::RouteKey;
pub use server::{ChannelServer, ServerConfig, ServerStats};
