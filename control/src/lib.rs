//! xdpcopy control plane: the header-return channel, statistics, histograms (issue 3/4).
//!
//! - [`channel`]: the TCP link between the copier and xdpcopy-intercept that carries CLIENT_ADDs
//!   one way and the test server's response headers the other (TCPCopy protocol version 6).
#![deny(unsafe_code)]

pub mod channel;

pub use channel::{
    ChannelClient, ChannelError, ChannelServer, ClientStats, CopierMsg, Framing, HeaderMsg, MsgKind, RouteKey,
    ServerConfig, ServerStats, DEFAULT_PORT,
};
