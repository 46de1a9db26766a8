//! xdpcopy control plane: the header-return channel, statistics, histograms (issue 3/4).
//!
//! - [`channel`]: the TCP link between the copier and xdpcopy-intercept that carries CLIENT_ADDs
//!   one way and the test server's response headers the other (TCPCopy protocol version 6).
//! - [`copier`]: the copier's control thread, which owns the channel client and links it to the
//!   workers through bounded lock-free queues.
#![deny(unsafe_code)]

pub mod channel;
pub mod copier;
pub mod counters;
pub mod latency;

pub use channel::{
    ChannelClient, ChannelError, ChannelServer, ClientStats, CopierMsg, Framing, HeaderMsg, MsgKind, RouteKey,
    ServerConfig, ServerStats, DEFAULT_PORT,
};
