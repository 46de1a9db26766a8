//! Dead-peer detection on channel sockets: TCP keepalive plus `TCP_USER_TIMEOUT`, set by both ends.
//!
//! Protocol 6 has no ping, and a message the original intercept does not expect would be a
//! protocol error there, so liveness is checked below the protocol, where both original peers
//! are indifferent to it:
//!
//! - an idle connection sends a keepalive probe after [`KEEPALIVE_IDLE`], then one every
//!   [`KEEPALIVE_INTERVAL`]; a peer host that is gone (link down, powered off, partitioned)
//!   answers none, and the kernel resets the connection once [`USER_TIMEOUT`] has passed since
//!   the last segment received: about 11 s after the traffic stopped;
//! - a connection with unacknowledged data (CLIENT_ADDs, header frames) is reset [`USER_TIMEOUT`]
//!   after the oldest of it was sent, instead of after ~15 minutes of retransmissions.
//!
//! The socket layer of a peer whose *process* is stopped (SIGSTOP) but whose kernel is alive
//! keeps acknowledging until its receive buffer is full; such a peer is detected only once that
//! happens (the zero-window probes then count against the user timeout).

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Probes without answer before the kernel gives up (the user timeout decides first on Linux).
pub const KEEPALIVE_PROBES: u32 = 3;
/// Longest time data may stay unacknowledged, or a keepalive unanswered, before a reset.
pub const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Set keepalive and `TCP_USER_TIMEOUT` on a channel socket (connected or connecting).
///
/// # Errors
///
/// A `setsockopt` failure (the socket is not TCP, or the kernel lacks an option).
pub fn watch<S: std::os::fd::AsFd>(socket: &S) -> io::Result<()> {
    let sock = SockRef::from(socket);
    let keepalive =
        TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_PROBES);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn options_are_set_on_both_ends() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        for stream in [&c, &s] {
            watch(stream).unwrap();
            let sock = SockRef::from(stream);
            assert!(sock.keepalive().unwrap());
            assert_eq!(sock.keepalive_time().unwrap(), KEEPALIVE_IDLE);
            assert_eq!(sock.keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
            assert_eq!(sock.keepalive_retries().unwrap(), KEEPALIVE_PROBES);
            assert_eq!(sock.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
        }
        // Detection bound promised in the docs: idle + probes until the user timeout < 15 s.
        assert!(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES < Duration::from_secs(15));
        assert!(USER_TIMEOUT + KEEPALIVE_INTERVAL < Duration::from_secs(15));
    }
}
