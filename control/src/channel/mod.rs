//! The header-return channel between the copier and xdpcopy-intercept (TCPCopy protocol 6).
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
//! - [`proto`]: the wire codec, allocation-free, byte-exact with the original;
//! - [`client`]: the copier side (connect, hello, CLIENT_ADD, decode headers, reconnect);
//! - [`route`]: the intercept's route table and delay table (pure state, time passed in);
//! - [`server`]: the intercept side (accept, hello check, routing, batching).
//!
//! Both endpoints are single-threaded, non-blocking (mio) and owned by one thread each; per
//! message failures are counters, only event-loop failures are errors ([`ChannelError`]).

pub mod client;
mod error;
mod outbuf;
pub mod proto;
pub mod route;
pub mod server;

pub use client::{ChannelClient, ClientStats};
pub use error::ChannelError;
pub use proto::{
    encode_frame, CopierDecoder, CopierError, CopierEvent, CopierMsg, Decoded, FrameBuilder, FrameDecoder, FrameError,
    Framing, HeaderError, HeaderMsg, MsgKind, DEFAULT_PORT, PROTOCOL_VERSION,
};
pub use route::RouteKey;
pub use server::{ChannelServer, ServerConfig, ServerStats};
