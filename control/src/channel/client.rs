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
//! - **CLIENT_ADD** goes to every intercept that has an established connection (the intercept
//!   returns the session's headers on the connection that carried it). Each session has a
//!   preferred connection per intercept, chosen by a hash of its 4-tuple; while that one is down
//!   the next established one carries it. So a session's CLIENT_ADD, CLIENT_DEL and a later
//!   CLIENT_ADD of a reused port travel on one connection, in order, and sessions spread evenly.
//!   Messages are buffered, never written inline: the next [`poll`](ChannelClient::poll) or
//!   [`flush`](ChannelClient::flush) writes them, so a burst of new sessions costs one `write`
//!   per connection. The buffer per connection is bounded; a message that does not fit is
//!   dropped and counted (`write_overflows`).
//! - **Live sessions are remembered** (4-tuple → owner tag, bounded by
//!   [`set_session_limits`](ChannelClient::set_session_limits); registrations beyond are refused
//!   and counted in `sessions_full`) until [`client_del`](ChannelClient::client_del), or until
//!   they go unused (no registration, no header) for the session TTL (900 s by default: a lost
//!   CLIENT_DEL cannot leak). When a connection is established, first or again, every remembered
//!   session that prefers it, or whose preferred connection is down, is registered on it anew
//!   (`resynced`): after an intercept restart the live sessions carry on instead of stalling
//!   until their timeout (the original's issue #139). Re-registration is streamed into the
//!   write buffer as it drains, filling at most half of it, so new sessions keep their room.
//! - **Liveness.** Every connection sets TCP keepalive and `TCP_USER_TIMEOUT`
//!   ([`super::liveness`]): an intercept host that vanishes is noticed within about 11 s, and
//!   its connections are reconnected (and re-registered) like any lost connection. This works
//!   with the original intercept too: nothing changes on the wire.
//! - **Protocol 7** (`proto` module docs). Every hello offers it (the xdpcopy marker in bytes
//!   8..14, which an original intercept ignores); a connection whose first received bytes are the
//!   acknowledgement sends the upgrade message and speaks 7 from then on: IPv4 and IPv6
//!   sessions, type-first. Until then (and for good with an intercept that never acknowledges)
//!   it speaks 6: IPv4 sessions go out as always, IPv6 ones wait — registered when the
//!   connection upgrades (they are remembered like any session) — and once the connection is
//!   known to speak 6 (a frame came first, or nothing within [`NEGOTIATE_TIMEOUT`], 2 s) they are
//!   counted in `ipv6_unsupported`, and a copier that expects IPv6 sessions
//!   ([`set_ipv6_expected`](ChannelClient::set_ipv6_expected)) says so once per intercept.
//! - **Receiving.** A [`FrameDecoder`] per connection buffers partial frames (defect #15: no
//!   busy loop on `EAGAIN`). A count above 16 is a broken stream: the connection is closed and
//!   reconnected, and counted in `protocol_errors`.
//! - **Logging.** One `eprintln!` per transition (connected, lost, first failure of a streak),
//!   never per message. Everything else is a counter in [`ClientStats`].

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::error::ChannelError;
use super::liveness;
use super::outbuf::OutBuf;
use super::proto::{
    hello_bytes, upgrade_bytes, CopierMsg, FrameDecoder, Framing, HeaderMsg, COPIER_MSG6_LEN, EXTENDED_VERSION,
    PROTOCOL_VERSION,
};
use super::route::RouteKey;

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
/// Default bound of remembered sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 1 << 20;
/// Default time a remembered session lives without a registration or a header.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(900);
/// A connection that has received nothing this long after its hello speaks protocol 6 for now
/// (an acknowledgement arriving later still upgrades it).
pub const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often sessions past their TTL are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

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
        /// Bytes sent (hellos, CLIENT_ADDs, CLIENT_DELs).
        counter bytes_sent,
        /// CLIENT_ADDs taken by at least one intercept.
        counter client_adds,
        /// CLIENT_ADDs no intercept could take at once (none connected, or all buffers full); the
        /// session is still remembered and registered when an intercept connects.
        counter client_adds_no_intercept,
        /// CLIENT_DELs taken by at least one intercept.
        counter client_dels,
        /// CLIENT_ADDs sent again to an intercept that (re)connected, for sessions still live.
        counter resynced,
        /// Sessions remembered now (to re-register them after a reconnect, and to route headers).
        gauge sessions,
        /// Registrations refused because the session registry was full.
        counter sessions_full,
        /// Sessions forgotten after the TTL without registration or header (their CLIENT_DEL lost).
        counter sessions_expired,
        /// Messages dropped because a connection's write buffer was full.
        counter write_overflows,
        /// Connections closed for a broken stream (frame count above 16, an unknown message).
        counter protocol_errors,
        /// Connections switched to protocol 7 (the intercept acknowledged: IPv6 sessions).
        counter upgrades,
        /// IPv6 registrations an intercept could not take: it speaks protocol 6 only (one per
        /// session and intercept).
        counter ipv6_unsupported,
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

/// The protocol a connection speaks (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// Protocol 7 offered, nothing received yet: IPv4 sessions in the v6 layout, IPv6 ones wait.
    Offered { since: Instant },
    /// Protocol 6 (until an acknowledgement, if the stream's first bytes are still to come).
    V6,
    /// Protocol 7.
    V7,
}

struct Conn {
    intercept: usize,
    state: State,
    proto: Proto,
    out: OutBuf,
    /// Sessions still to register again on this connection after it came up (newest last).
    resync: Vec<RouteKey>,
    decoder: FrameDecoder,
    backoff: Duration,
    /// The connection has been up at least once (for `reconnects`).
    was_up: bool,
    /// The current streak of failures has been logged.
    down_logged: bool,
    /// Connects have failed since the connection was last up: its sessions ride on another.
    failing: bool,
}

struct Intercept {
    addr: SocketAddr,
    /// Index of the first of this intercept's connections in `conns`.
    first: usize,
    /// The protocol it speaks was logged (7: once; 6 with IPv6 expected: once, the warning).
    logged: Option<u16>,
}

/// A session the copier registered.
#[derive(Debug, Clone, Copy)]
struct Registered {
    /// The caller's tag (the copier: the worker that owns the session).
    owner: u32,
    /// Last registration or header.
    last_used: Instant,
}

/// Return the connection (`0..per`) a session prefers: a fixed hash of its 4-tuple.
fn preferred(key: &RouteKey, per: usize) -> usize {
    // FNV-1a: stable and cheap; the copier chooses among its own connections, nothing to defend.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for a in [&key.client, &key.target] {
        match a.ip() {
            std::net::IpAddr::V4(ip) => eat(&ip.octets()),
            std::net::IpAddr::V6(ip) => eat(&ip.octets()),
        }
    }
    eat(&key.client.port().to_be_bytes());
    eat(&key.target.port().to_be_bytes());
    (h % per as u64) as usize
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
    /// The live sessions: re-registered after a reconnect, and the owner of their headers.
    sessions: HashMap<RouteKey, Registered>,
    max_sessions: usize,
    session_ttl: Duration,
    /// The copier will register IPv6 sessions: warn about intercepts that cannot take them.
    ipv6_expected: bool,
    /// The version every hello offers (7; 6: none, the original copier's hello).
    offer: u16,
    next_sweep: Instant,
    /// Earliest next sweep forced by a full registry (a sweep walks every session).
    next_full_sweep: Instant,
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
                        proto: Proto::V6,
                        out: OutBuf::new(WRITE_BUFFER),
                        resync: Vec::new(),
                        decoder: FrameDecoder::negotiating(framing),
                        backoff: BACKOFF_MIN,
                        was_up: false,
                        down_logged: false,
                        failing: false,
                    });
                }
                Intercept { addr, first: i * per, logged: None }
            })
            .collect();
        let mut client = Self {
            poll,
            events: Events::with_capacity(64),
            intercepts,
            per,
            conns,
            backlog: Vec::new(),
            sessions: HashMap::new(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_ttl: DEFAULT_SESSION_TTL,
            ipv6_expected: false,
            offer: EXTENDED_VERSION,
            next_sweep: now + SWEEP_EVERY,
            next_full_sweep: now,
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

    /// The event loop's descriptor (an epoll instance): it polls readable when a connection has
    /// something for [`poll`](Self::poll) (data, a finished connect, room to write, a wake-up),
    /// so an owner that waits on other descriptors too can add it to its own `poll()`.
    #[allow(unsafe_code)]
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is `self.poll`'s (mio offers it only as a raw number); the
        // borrow lives no longer than `&self`, and the poll closes it only when dropped.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.poll.as_raw_fd()) }
    }

    /// Whether a connection still has bytes to read that its read budget left for the next
    /// [`poll`](Self::poll): the event loop does not say so again (edge-triggered).
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Bound the session registry to `max` sessions, each forgotten after `ttl` without a
    /// registration or a header (defaults: [`DEFAULT_MAX_SESSIONS`], [`DEFAULT_SESSION_TTL`]).
    pub fn set_session_limits(&mut self, max: usize, ttl: Duration) {
        self.max_sessions = max;
        self.session_ttl = ttl;
    }

    /// Say that the copier will register IPv6 sessions (an `-x` target is IPv6): an intercept
    /// that speaks protocol 6 only is then named in a warning, once.
    pub fn set_ipv6_expected(&mut self, on: bool) {
        self.ipv6_expected = on;
    }

    /// Offer protocol 7 in every hello (the default), or not (`false`: the hello of TCPCopy's
    /// copier, all zero; every connection speaks 6). Call it right after [`new`](Self::new):
    /// it applies to connections not yet established.
    pub fn set_offer_extension(&mut self, on: bool) {
        self.offer = if on { EXTENDED_VERSION } else { PROTOCOL_VERSION };
        let offer = on.then_some(EXTENDED_VERSION);
        for c in &mut self.conns {
            let framing = c.decoder.framing();
            c.decoder = if on { FrameDecoder::negotiating(framing) } else { FrameDecoder::new(framing) };
            if matches!(c.state, State::Connecting { .. }) {
                // Only the hello is queued before a connection is up.
                c.out.clear();
                c.out.push(&hello_bytes(offer));
            }
        }
    }

    /// Return the protocol versions of the established connections (6 until acknowledged, 7).
    pub fn versions(&self) -> Vec<u16> {
        self.conns
            .iter()
            .filter(|c| matches!(c.state, State::Up { .. }))
            .map(|c| if c.proto == Proto::V7 { EXTENDED_VERSION } else { PROTOCOL_VERSION })
            .collect()
    }

    /// Return the number of sessions remembered.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Return the counters.
    pub fn stats(&self) -> ClientStats {
        let mut s = self.stats;
        s.sessions = self.sessions.len() as u64;
        s
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

    /// Register a session with every connected intercept (owner tag 0); returns whether at least
    /// one took it. See [`register`](Self::register).
    pub fn client_add(&mut self, client: impl Into<SocketAddr>, target: impl Into<SocketAddr>) -> bool {
        self.register(client, target, 0)
    }

    /// Remember a session as `owner`'s and send CLIENT_ADD to every connected intercept; returns
    /// whether at least one took it now. A session no intercept took is still remembered, and
    /// registered when one connects. False, and nothing sent, when the registry is full.
    ///
    /// The message is buffered; [`poll`](Self::poll) or [`flush`](Self::flush) sends it.
    pub fn register(&mut self, client: impl Into<SocketAddr>, target: impl Into<SocketAddr>, owner: u32) -> bool {
        let key = RouteKey::new(client, target);
        let now = Instant::now();
        if !self.sessions.contains_key(&key) && self.sessions.len() >= self.max_sessions {
            if now >= self.next_full_sweep {
                // At most a few times per TTL and once a second: a full registry stays cheap.
                self.next_full_sweep = now + (self.session_ttl / 4).min(Duration::from_secs(1));
                self.sweep(now);
            }
            if self.sessions.len() >= self.max_sessions {
                self.stats.sessions_full += 1;
                return false;
            }
        }
        self.sessions.insert(key, Registered { owner, last_used: now });
        let taken = self.send_to_all(&CopierMsg::client_add(key.client, key.target));
        if taken {
            self.stats.client_adds += 1;
        } else {
            self.stats.client_adds_no_intercept += 1;
        }
        taken
    }

    /// Forget a session and tell every connected intercept (xdpcopy-intercept drops the route; the
    /// original only logs it). Returns whether at least one intercept took the CLIENT_DEL.
    pub fn client_del(&mut self, client: impl Into<SocketAddr>, target: impl Into<SocketAddr>) -> bool {
        let key = RouteKey::new(client, target);
        self.sessions.remove(&key);
        let taken = self.send_to_all(&CopierMsg::client_del(key.client, key.target));
        self.stats.client_dels += u64::from(taken);
        taken
    }

    /// Return the connection of intercept `i` that carries `key` now: its preferred one, else the
    /// next established one (for an IPv6 session: the next one speaking protocol 7, if any).
    fn pick(&self, i: usize, key: &RouteKey) -> Option<usize> {
        let first = self.intercepts[i].first;
        let p = preferred(key, self.per);
        let up = |c: &usize| matches!(self.conns[*c].state, State::Up { .. });
        let mut order = (0..self.per).map(|k| first + (p + k) % self.per);
        if key.is_ipv6() {
            let v7 = order.clone().filter(up).find(|&c| self.conns[c].proto == Proto::V7);
            return v7.or_else(|| order.find(up));
        }
        order.find(up)
    }

    /// Encode `msg` for connection `c`; `None` when that connection cannot carry it (an IPv6
    /// session on protocol 6: counted once known, else it waits for the upgrade).
    fn encode_for(&mut self, c: usize, msg: &CopierMsg) -> Option<super::proto::Encoded> {
        let conn = &self.conns[c];
        let version = if conn.proto == Proto::V7 { EXTENDED_VERSION } else { PROTOCOL_VERSION };
        let encoded = msg.encode(version);
        if encoded.is_none() && conn.proto == Proto::V6 && msg.kind == super::proto::MsgKind::ClientAdd {
            self.stats.ipv6_unsupported += 1;
        }
        encoded
    }

    fn send_to_all(&mut self, msg: &CopierMsg) -> bool {
        let key = RouteKey::of_copier_msg(msg);
        let mut taken = false;
        for i in 0..self.intercepts.len() {
            let Some(c) = self.pick(i, &key) else {
                continue;
            };
            let Some(bytes) = self.encode_for(c, msg) else {
                continue;
            };
            if self.conns[c].out.push(&bytes) {
                taken = true;
            } else {
                self.stats.write_overflows += 1;
            }
        }
        taken
    }

    /// Forget the sessions unused for the TTL.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + SWEEP_EVERY;
        let ttl = self.session_ttl;
        let before = self.sessions.len();
        self.sessions.retain(|_, r| now.saturating_duration_since(r.last_used) < ttl);
        self.stats.sessions_expired += (before - self.sessions.len()) as u64;
    }

    /// Queue, on connection `idx` that just came up, every live session it should carry: those
    /// that prefer it, and those whose preferred connection is failing to connect. (Sessions of
    /// a connection that is merely reconnecting wait for it: after an intercept restart each
    /// connection re-registers its own share, once.)
    fn start_resync(&mut self, idx: usize) {
        let i = self.conns[idx].intercept;
        let first = self.intercepts[i].first;
        let k = idx - first;
        let conns = &self.conns;
        let per = self.per;
        let keys = self
            .sessions
            .keys()
            .filter(|key| {
                let p = preferred(key, per);
                p == k || conns[first + p].failing
            })
            .copied()
            .collect();
        self.conns[idx].resync = keys;
    }

    /// Connection `idx` started failing: move the sessions that prefer it to the connections
    /// that carry them meanwhile (none if its intercept has no connection up).
    fn resync_elsewhere(&mut self, idx: usize) {
        let i = self.conns[idx].intercept;
        let k = idx - self.intercepts[i].first;
        let orphans: Vec<(usize, RouteKey)> = self
            .sessions
            .keys()
            .filter(|key| preferred(key, self.per) == k)
            .filter_map(|key| Some((self.pick(i, key)?, *key)))
            .collect();
        for (c, key) in orphans {
            self.conns[c].resync.push(key);
        }
    }

    /// Move pending re-registrations into the write buffer, up to half of it.
    fn refill(&mut self, idx: usize) {
        while self.conns[idx].out.len() + COPIER_MSG6_LEN <= WRITE_BUFFER / 2 {
            let Some(key) = self.conns[idx].resync.pop() else {
                break;
            };
            // Deleted meanwhile: its CLIENT_DEL went out already, an ADD now would resurrect it.
            if self.sessions.contains_key(&key) {
                // An IPv6 session on a connection still negotiating is queued again at the upgrade.
                if let Some(bytes) = self.encode_for(idx, &CopierMsg::client_add(key.client, key.target)) {
                    self.conns[idx].out.push(&bytes);
                    self.stats.resynced += 1;
                }
            }
        }
        let conn = &mut self.conns[idx];
        if conn.resync.is_empty() && conn.resync.capacity() > 0 {
            conn.resync = Vec::new();
        }
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
        self.poll_owned(timeout, |h, _| on_header(h))
    }

    /// As [`poll`](Self::poll), and hands each header with the owner tag of its session (`None`:
    /// a session not registered here, or forgotten).
    ///
    /// # Errors
    ///
    /// As [`poll`](Self::poll).
    pub fn poll_owned(
        &mut self,
        timeout: Duration,
        mut on_header: impl FnMut(HeaderMsg, Option<u32>),
    ) -> Result<usize, ChannelError> {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.sweep(now);
        }
        self.start_due(now);
        for idx in 0..self.conns.len() {
            if matches!(self.conns[idx].proto, Proto::Offered { since } if now >= since + NEGOTIATE_TIMEOUT)
                && matches!(self.conns[idx].state, State::Up { .. })
            {
                self.speaks_v6(idx);
            }
        }
        self.flush();
        let timeout = self
            .conns
            .iter()
            .filter_map(|c| match (&c.state, c.proto) {
                (State::Down { until }, _) => Some(until.saturating_duration_since(now)),
                (State::Connecting { since, .. }, _) => Some((*since + CONNECT_TIMEOUT).saturating_duration_since(now)),
                (State::Up { .. }, Proto::Offered { since }) => {
                    Some((since + NEGOTIATE_TIMEOUT).saturating_duration_since(now))
                }
                (State::Up { .. }, _) => None,
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
                liveness::watch(&s)?;
                self.poll.registry().register(&mut s, Token(idx), Interest::READABLE | Interest::WRITABLE)?;
                Ok(s)
            });
            match started {
                Ok(s) => {
                    let conn = &mut self.conns[idx];
                    conn.state = State::Connecting { stream: s, since: now };
                    conn.out.clear();
                    let offer = (self.offer >= EXTENDED_VERSION).then_some(self.offer);
                    conn.out.push(&hello_bytes(offer));
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
                conn.proto = if self.offer >= EXTENDED_VERSION { Proto::Offered { since: now } } else { Proto::V6 };
                self.stats.connects += 1;
                if conn.was_up {
                    self.stats.reconnects += 1;
                }
                conn.was_up = true;
                conn.down_logged = false;
                conn.failing = false;
                let addr = self.intercepts[conn.intercept].addr;
                eprintln!("channel: connected to intercept {addr} (connection {} of {})", idx % self.per + 1, self.per);
                self.start_resync(idx);
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
        if !std::mem::replace(&mut self.conns[idx].failing, true) {
            self.resync_elsewhere(idx);
        }
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
        conn.resync = Vec::new();
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
    fn read(&mut self, now: Instant, idx: usize, on_header: &mut impl FnMut(HeaderMsg, Option<u32>)) -> usize {
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
            let sessions = &mut self.sessions;
            let fed = conn.decoder.feed(&buf[..n], |m| {
                delivered += 1;
                let owner = sessions.get_mut(&RouteKey::of_response(&m)).map(|r| {
                    r.last_used = now;
                    r.owner
                });
                on_header(m, owner);
            });
            headers += delivered;
            self.stats.headers += delivered as u64;
            // A short read took all the socket had: the next arrival is a new edge (mio's epoll
            // is edge-triggered), so the read that would only say EAGAIN is skipped.
            let drained = n < buf.len();
            match fed {
                Ok(d) => self.stats.frames += d.frames,
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    self.lose(now, idx, &e);
                    return headers;
                }
            }
            self.negotiated(idx);
            if drained {
                return headers;
            }
        }
    }

    /// After bytes arrived on connection `idx`: act on what its stream's start said (the
    /// acknowledgement: upgrade; anything else: protocol 6).
    fn negotiated(&mut self, idx: usize) {
        let conn = &self.conns[idx];
        if conn.decoder.version() >= EXTENDED_VERSION && conn.proto != Proto::V7 {
            self.upgrade(idx);
        } else if conn.decoder.settled() && matches!(conn.proto, Proto::Offered { .. }) {
            self.speaks_v6(idx);
        }
    }

    /// The intercept acknowledged protocol 7 on connection `idx`: send the upgrade message (the
    /// boundary: everything before it was v6), then register the IPv6 sessions it carries.
    fn upgrade(&mut self, idx: usize) {
        let i = self.conns[idx].intercept;
        let conn = &mut self.conns[idx];
        conn.out.push_over(&upgrade_bytes());
        conn.proto = Proto::V7;
        self.stats.upgrades += 1;
        let k = idx - self.intercepts[i].first;
        let (first, per, conns) = (self.intercepts[i].first, self.per, &self.conns);
        let waiting: Vec<RouteKey> = self
            .sessions
            .keys()
            .filter(|key| key.is_ipv6())
            .filter(|key| {
                let p = preferred(key, per);
                p == k || conns[first + p].proto != Proto::V7 || conns[first + p].failing
            })
            .copied()
            .collect();
        self.conns[idx].resync.extend(waiting);
        let intercept = &mut self.intercepts[i];
        if intercept.logged != Some(EXTENDED_VERSION) {
            intercept.logged = Some(EXTENDED_VERSION);
            eprintln!(
                "channel: intercept {} speaks protocol {EXTENDED_VERSION} (xdpcopy's extension): IPv6 sessions can be \
                 registered",
                intercept.addr
            );
        }
        let now = Instant::now();
        self.write(now, idx);
    }

    /// Connection `idx` speaks protocol 6 (a frame came first, or nothing in time): its IPv6
    /// sessions cannot be registered; say so once per intercept if IPv6 sessions are expected.
    fn speaks_v6(&mut self, idx: usize) {
        self.conns[idx].proto = Proto::V6;
        let i = self.conns[idx].intercept;
        let k = idx - self.intercepts[i].first;
        let waiting = self.sessions.keys().filter(|key| key.is_ipv6() && preferred(key, self.per) == k).count();
        self.stats.ipv6_unsupported += waiting as u64;
        // A sibling connection that upgraded proves the intercept speaks 7 (this one's
        // acknowledgement is late): no warning.
        let first = self.intercepts[i].first;
        let sibling_v7 = self.conns[first..first + self.per].iter().any(|c| c.proto == Proto::V7);
        let intercept = &mut self.intercepts[i];
        if self.ipv6_expected && !sibling_v7 && intercept.logged != Some(PROTOCOL_VERSION) {
            intercept.logged = Some(PROTOCOL_VERSION);
            eprintln!(
                "channel: intercept {} speaks TCPCopy protocol 6 only; IPv6 sessions need xdpcopy-intercept (they are \
                 not registered with it, counted in channel_ipv6_unsupported; IPv4 sessions are not affected)",
                intercept.addr
            );
        }
    }

    /// Write what the socket takes, topping the buffer up with re-registrations as it drains.
    fn write(&mut self, now: Instant, idx: usize) {
        loop {
            if !matches!(self.conns[idx].state, State::Up { .. }) {
                return;
            }
            self.refill(idx);
            let conn = &mut self.conns[idx];
            let State::Up { stream, .. } = &mut conn.state else {
                return;
            };
            if conn.out.is_empty() {
                return;
            }
            match conn.out.write_to(stream) {
                Ok(n) => {
                    self.stats.bytes_sent += n as u64;
                    if !conn.out.is_empty() || conn.resync.is_empty() {
                        return; // the socket is full (a writable event follows), or all is sent
                    }
                }
                Err(e) => return self.lose(now, idx, &e),
            }
        }
    }
}
