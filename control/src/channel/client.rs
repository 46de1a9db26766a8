//! The copier side of the channel: connections to every intercept, CLIENT_ADD out, headers in.
//!
//! Owned by the copier's control thread. Per call of [`ChannelClient::poll`] it starts due
//! reconnects, writes buffered messages, waits for socket events (at most the given timeout) and
//! hands every received header to the callback, in arrival order per connection.
//!
//! # Design
//!
//! - **Connections.** `-C` connections (1..=11) to each intercept, opened non-blocking; each
//!   gets TCP_NODELAY and sends the version hello first. A failed connect or a lost connection
//!   is retried with exponential backoff, 100 ms doubling to 5 s (defect #16: never exit, never
//!   give up); the backoff starts over after a connection that stayed up for 5 s. A connect
//!   that has not completed after 3 s counts as failed. Each
//!   connection's state is its own, so losing one never disturbs another (defect #17).
//! - **CLIENT_ADD** goes to every intercept that has an established connection, round robin
//!   over that intercept's established connections (the intercept returns the session's headers
//!   on the connection that carried it). It is buffered, never written inline: the next
//!   [`poll`](ChannelClient::poll) or [`flush`](ChannelClient::flush) writes it, so a burst of
//!   new sessions costs one `write` per connection. The buffer per connection is bounded; a
//!   message that does not fit is dropped and counted (`write_overflows`).
//! - **Receiving.** A [`FrameDecoder`] per connection buffers partial frames (defect #15: no
//!   busy loop on `EAGAIN`). A count above 16 is a broken stream: the connection is closed and
//!   reconnected, and counted in `protocol_errors`.
//! - **Logging.** One `eprintln!` per transition (connected, lost, first failure of a streak),
//!   never per message. Everything else is a counter in [`ClientStats`].

use std::io::{self, Read};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::error::ChannelError;
use super::outbuf::OutBuf;
use super::proto::{CopierMsg, FrameDecoder, Framing, HeaderMsg};

/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connect still in progress after this long is abandoned (and retried with backoff).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Unsent bytes buffered per connection (4 681 messages of 14 bytes).
pub const WRITE_BUFFER: usize = 64 * 1024;
/// Most connections per intercept (`-C`), as in the original.
pub const MAX_CONNS_PER_INTERCEPT: u8 = 11;
/// Most bytes read from one connection per `poll` before the others get their turn.
const READ_BUDGET: usize = 256 * 1024;

crate::counters! {
    /// Counters of the copier side (monotonic).
    #[derive(Copy)]
    pub struct ClientStats {
        /// Connections established (first connects and reconnects).
        counter connects,
        /// Connects that failed (refused, unreachable, timed out).
        counter connect_failures,
        /// Established connections lost (closed by the intercept, errors, protocol errors).
        counter disconnects,
        /// Connections established again after a loss.
        counter reconnects,
        /// Header messages received.
        counter headers,
        /// Frames received (bare framing: one per message).
        counter frames,
        /// Bytes received.
        counter bytes_received,
        /// Bytes sent (hellos and CLIENT_ADDs).
        counter bytes_sent,
        /// CLIENT_ADDs taken by at least one intercept.
        counter client_adds,
        /// CLIENT_ADDs no intercept could take (none connected, or all buffers full).
        counter client_adds_no_intercept,
        /// Messages dropped because a connection's write buffer was full.
        counter write_overflows,
        /// Connections closed for a broken stream (frame count above 16).
        counter protocol_errors,
    }
}

enum State {
    /// Waiting to (re)connect at `until`.
    Down { until: Instant },
    /// Non-blocking connect in progress, started at `since`.
    Connecting { stream: TcpStream, since: Instant },
    /// Established; the hello is queued or sent.
    Up { stream: TcpStream, since: Instant },
}

struct Conn {
    intercept: usize,
    state: State,
    out: OutBuf,
    decoder: FrameDecoder,
    backoff: Duration,
    /// The connection has been up at least once (for `reconnects`).
    was_up: bool,
    /// The current streak of failures has been logged.
    down_logged: bool,
}

struct Intercept {
    addr: SocketAddr,
    /// Index of the first of this intercept's connections in `conns`.
    first: usize,
    /// Next connection to try for round robin, relative to `first`.
    rr: usize,
}

/// The copier's channel endpoint. See the module docs.
pub struct ChannelClient {
    poll: Poll,
    events: Events,
    intercepts: Vec<Intercept>,
    per: usize,
    conns: Vec<Conn>,
    /// Connections that still had data when their read budget ran out.
    backlog: Vec<usize>,
    stats: ClientStats,
}

impl std::fmt::Debug for ChannelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelClient")
            .field("intercepts", &self.intercepts.len())
            .field("connected", &self.connected())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ChannelClient {
    /// Start connecting to every intercept, `conns_per_intercept` (1..=11) connections each.
    ///
    /// Connects are non-blocking; an intercept that is down is retried in the background.
    ///
    /// # Errors
    ///
    /// [`ChannelError::NoIntercepts`], [`ChannelError::ConnsPerIntercept`], or
    /// [`ChannelError::Io`] if the event loop cannot be created.
    pub fn new(intercepts: Vec<SocketAddr>, conns_per_intercept: u8, framing: Framing) -> Result<Self, ChannelError> {
        if intercepts.is_empty() {
            return Err(ChannelError::NoIntercepts);
        }
        if !(1..=MAX_CONNS_PER_INTERCEPT).contains(&conns_per_intercept) {
            return Err(ChannelError::ConnsPerIntercept(conns_per_intercept));
        }
        let per = usize::from(conns_per_intercept);
        let poll = Poll::new().map_err(ChannelError::io("epoll_create"))?;
        let now = Instant::now();
        let mut conns = Vec::with_capacity(intercepts.len() * per);
        let intercepts: Vec<Intercept> = intercepts
            .into_iter()
            .enumerate()
            .map(|(i, addr)| {
                for _ in 0..per {
                    conns.push(Conn {
                        intercept: i,
                        state: State::Down { until: now },
                        out: OutBuf::new(WRITE_BUFFER),
                        decoder: FrameDecoder::new(framing),
                        backoff: BACKOFF_MIN,
                        was_up: false,
                        down_logged: false,
                    });
                }
                Intercept { addr, first: i * per, rr: 0 }
            })
            .collect();
        let mut client = Self {
            poll,
            events: Events::with_capacity(64),
            intercepts,
            per,
            conns,
            backlog: Vec::new(),
            stats: ClientStats::default(),
        };
        client.start_due(now);
        Ok(client)
    }

    /// Returns a handle that wakes a [`poll`](Self::poll) in progress from another thread (the
    /// copier's workers use it when they queue a session registration). Its events carry a token
    /// no connection uses, so `poll` just returns.
    ///
    /// # Errors
    /// When the eventfd behind it cannot be created.
    pub fn waker(&self) -> io::Result<std::sync::Arc<mio::Waker>> {
        Ok(std::sync::Arc::new(mio::Waker::new(self.poll.registry(), Token(usize::MAX))?))
    }

    /// Return the counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Return the number of established connections, over all intercepts.
    pub fn connected(&self) -> usize {
        self.conns.iter().filter(|c| matches!(c.state, State::Up { .. })).count()
    }

    /// Return the number of intercepts with at least one established connection.
    pub fn intercepts_connected(&self) -> usize {
        (0..self.intercepts.len())
            .filter(|&i| self.intercept_conns(i).any(|c| matches!(c.state, State::Up { .. })))
            .count()
    }

    fn intercept_conns(&self, i: usize) -> impl Iterator<Item = &Conn> {
        let first = self.intercepts[i].first;
        self.conns[first..first + self.per].iter()
    }

    /// Register a session with every connected intercept; returns whether at least one took it.
    ///
    /// The message is buffered; [`poll`](Self::poll) or [`flush`](Self::flush) sends it.
    pub fn client_add(&mut self, client: SocketAddrV4, target: SocketAddrV4) -> bool {
        self.send_to_all(&CopierMsg::client_add(client, target).encode())
    }

    /// Tell every connected intercept to forget a session (xdpcopy-intercept honours it; the
    /// original only logs it). Returns whether at least one intercept took it.
    pub fn client_del(&mut self, client: SocketAddrV4, target: SocketAddrV4) -> bool {
        self.send_to_all(&CopierMsg::client_del(client, target).encode())
    }

    fn send_to_all(&mut self, bytes: &[u8]) -> bool {
        let mut taken = false;
        for i in 0..self.intercepts.len() {
            let Intercept { first, rr, .. } = self.intercepts[i];
            let pick = (0..self.per)
                .map(|k| (rr + k) % self.per)
                .find(|&k| matches!(self.conns[first + k].state, State::Up { .. }));
            let Some(k) = pick else {
                continue;
            };
            self.intercepts[i].rr = (k + 1) % self.per;
            if self.conns[first + k].out.push(bytes) {
                taken = true;
            } else {
                self.stats.write_overflows += 1;
            }
        }
        if taken {
            self.stats.client_adds += 1;
        } else {
            self.stats.client_adds_no_intercept += 1;
        }
        taken
    }

    /// Write every buffered message that the sockets accept now.
    pub fn flush(&mut self) {
        let now = Instant::now();
        for idx in 0..self.conns.len() {
            self.write(now, idx);
        }
    }

    /// Drive connects, writes and reads, waiting at most `timeout`; returns headers delivered.
    ///
    /// # Errors
    ///
    /// [`ChannelError::Io`] only if the event loop itself fails; connection errors are handled
    /// (reconnect with backoff, counted).
    pub fn poll(&mut self, timeout: Duration, mut on_header: impl FnMut(HeaderMsg)) -> Result<usize, ChannelError> {
        let now = Instant::now();
        self.start_due(now);
        self.flush();
        let timeout = self
            .conns
            .iter()
            .filter_map(|c| match c.state {
                State::Down { until } => Some(until.saturating_duration_since(now)),
                State::Connecting { since, .. } => Some((since + CONNECT_TIMEOUT).saturating_duration_since(now)),
                State::Up { .. } => None,
            })
            .fold(timeout, Duration::min);
        let timeout = if self.backlog.is_empty() { timeout } else { Duration::ZERO };

        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
            self.events = events;
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(ChannelError::Io { call: "epoll_wait", source: e });
        }
        let now = Instant::now();
        let mut headers = 0;
        let backlog = std::mem::take(&mut self.backlog);
        for &idx in &backlog {
            headers += self.read(now, idx, &mut on_header);
        }
        for ev in events.iter() {
            let idx = ev.token().0;
            if idx >= self.conns.len() {
                continue;
            }
            if matches!(self.conns[idx].state, State::Connecting { .. }) {
                self.finish_connect(now, idx);
            }
            if !matches!(self.conns[idx].state, State::Up { .. }) {
                continue;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                headers += self.read(now, idx, &mut on_header);
            }
            if ev.is_writable() {
                self.write(now, idx);
            }
        }
        self.events = events;
        Ok(headers)
    }

    /// Abandon connects that take too long; start the connects whose backoff has run out.
    fn start_due(&mut self, now: Instant) {
        for idx in 0..self.conns.len() {
            if let State::Connecting { since, .. } = self.conns[idx].state {
                if now.duration_since(since) >= CONNECT_TIMEOUT {
                    if let State::Connecting { stream: mut s, .. } =
                        std::mem::replace(&mut self.conns[idx].state, State::Down { until: now })
                    {
                        let _ = self.poll.registry().deregister(&mut s);
                    }
                    self.connect_failed(now, idx, &io::ErrorKind::TimedOut.into());
                }
                continue;
            }
            let State::Down { until } = self.conns[idx].state else {
                continue;
            };
            if until > now {
                continue;
            }
            let addr = self.intercepts[self.conns[idx].intercept].addr;
            let started = TcpStream::connect(addr).and_then(|mut s| {
                s.set_nodelay(true)?;
                self.poll.registry().register(&mut s, Token(idx), Interest::READABLE | Interest::WRITABLE)?;
                Ok(s)
            });
            match started {
                Ok(s) => {
                    let conn = &mut self.conns[idx];
                    conn.state = State::Connecting { stream: s, since: now };
                    conn.out.clear();
                    conn.out.push(&CopierMsg::hello().encode());
                    conn.decoder.reset();
                }
                Err(e) => self.connect_failed(now, idx, &e),
            }
        }
    }

    /// Check a connect in progress after a readiness event (mio's recipe).
    fn finish_connect(&mut self, now: Instant, idx: usize) {
        let State::Connecting { stream: s, .. } = &self.conns[idx].state else {
            return;
        };
        let result = match s.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match s.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(false) => {} // spurious wakeup, still connecting
            Ok(true) => {
                let conn = &mut self.conns[idx];
                let State::Connecting { stream, .. } = std::mem::replace(&mut conn.state, State::Down { until: now })
                else {
                    unreachable!("checked above")
                };
                conn.state = State::Up { stream, since: now };
                self.stats.connects += 1;
                if conn.was_up {
                    self.stats.reconnects += 1;
                }
                conn.was_up = true;
                conn.down_logged = false;
                let addr = self.intercepts[conn.intercept].addr;
                eprintln!("channel: connected to intercept {addr} (connection {} of {})", idx % self.per + 1, self.per);
                self.write(now, idx);
            }
            Err(e) => {
                if let State::Connecting { stream: mut s, .. } =
                    std::mem::replace(&mut self.conns[idx].state, State::Down { until: now })
                {
                    let _ = self.poll.registry().deregister(&mut s);
                }
                self.connect_failed(now, idx, &e);
            }
        }
    }

    fn connect_failed(&mut self, now: Instant, idx: usize, e: &io::Error) {
        self.stats.connect_failures += 1;
        let conn = &mut self.conns[idx];
        let delay = conn.backoff;
        conn.backoff = (conn.backoff * 2).min(BACKOFF_MAX);
        conn.state = State::Down { until: now + delay };
        if !conn.down_logged {
            conn.down_logged = true;
            let addr = self.intercepts[conn.intercept].addr;
            eprintln!(
                "channel: cannot connect to intercept {addr}: {e}; retrying with backoff up to {} s",
                BACKOFF_MAX.as_secs()
            );
        }
    }

    /// Close an established connection and schedule its reconnect.
    fn lose(&mut self, now: Instant, idx: usize, why: &dyn std::fmt::Display) {
        let conn = &mut self.conns[idx];
        let old = std::mem::replace(&mut conn.state, State::Down { until: now });
        let State::Up { mut stream, since } = old else {
            conn.state = old;
            return;
        };
        let _ = self.poll.registry().deregister(&mut stream);
        drop(stream);
        if now.duration_since(since) >= BACKOFF_MAX {
            conn.backoff = BACKOFF_MIN;
        }
        let delay = conn.backoff;
        conn.backoff = (conn.backoff * 2).min(BACKOFF_MAX);
        conn.state = State::Down { until: now + delay };
        conn.out.clear();
        conn.decoder.reset();
        conn.down_logged = true;
        self.stats.disconnects += 1;
        let addr = self.intercepts[conn.intercept].addr;
        eprintln!(
            "channel: lost intercept {addr} (connection {} of {}): {why}; reconnecting in {} ms",
            idx % self.per + 1,
            self.per,
            delay.as_millis()
        );
    }

    /// Read until the socket would block or the budget is spent (then queue for the next poll).
    fn read(&mut self, now: Instant, idx: usize, on_header: &mut impl FnMut(HeaderMsg)) -> usize {
        let mut buf = [0u8; 16 * 1024];
        let mut headers = 0;
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                if !self.backlog.contains(&idx) {
                    self.backlog.push(idx);
                }
                return headers;
            }
            let conn = &mut self.conns[idx];
            let State::Up { stream, .. } = &mut conn.state else {
                return headers;
            };
            let n = match stream.read(&mut buf) {
                Ok(0) => {
                    self.lose(now, idx, &"closed by the intercept");
                    return headers;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return headers,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.lose(now, idx, &e);
                    return headers;
                }
            };
            self.stats.bytes_received += n as u64;
            budget = budget.saturating_sub(n);
            let mut delivered = 0usize;
            let fed = conn.decoder.feed(&buf[..n], |m| {
                delivered += 1;
                on_header(m);
            });
            headers += delivered;
            self.stats.headers += delivered as u64;
            match fed {
                Ok(d) => self.stats.frames += d.frames,
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    self.lose(now, idx, &e);
                    return headers;
                }
            }
        }
    }

    fn write(&mut self, now: Instant, idx: usize) {
        let conn = &mut self.conns[idx];
        let State::Up { stream, .. } = &mut conn.state else {
            return;
        };
        if conn.out.is_empty() {
            return;
        }
        match conn.out.write_to(stream) {
            Ok(n) => self.stats.bytes_sent += n as u64,
            Err(e) => self.lose(now, idx, &e),
        }
    }
}
