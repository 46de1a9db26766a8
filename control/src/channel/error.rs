//! The channel's error at the crate boundary: setup and poll failures, never per-message ones
//! (those are counters).

use std::io;
use std::net::SocketAddr;

/// A channel client or server could not be set up or polled.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The listening socket could not be bound.
    #[error("cannot listen for copiers on {addr}: {source} (is another intercept running? pick another port with -p)")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// An OS call of the event loop failed.
    #[error("channel {call} failed: {source}")]
    Io {
        /// The call that failed.
        call: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The client was given no intercept to connect to.
    #[error("no intercept address given; pass at least one with -s")]
    NoIntercepts,
    /// Connections per intercept outside 1..=11.
    #[error("{0} connections per intercept is out of range; use 1 to 11 (-C)")]
    ConnsPerIntercept(u8),
}

impl ChannelError {
    pub(crate) fn io(call: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { call, source }
    }
}
