//! The intercept side of the channel: accepts copiers, learns their sessions, returns headers.
//!
//! One thread owns a [`ChannelServer`] and drives it with [`deliver`](ChannelServer::deliver)
//! (one captured response header), [`flush`](ChannelServer::flush) (end of an RX burst) and
//! [`poll`](ChannelServer::poll) (socket I/O and timers). The recommended loop:
//!
//! ```text
//! loop {
//!     let n = rx_burst();                       // captured responses
//!     for h in burst { server.deliver(now, h) } // route or delay or drop, batch per copier
//!     server.flush();                           // the burst ended: send partial frames
//!     server.poll(if n == 0 { 1 ms } else { 0 })?;
//! }
//! ```
//!
//! # Design
//!
//! - **Per connection:** a [`CopierDecoder`] (hello, then 14-byte messages; after an upgrade to
//!   protocol 7, type-first messages of 14 or 38 bytes), one frame being
//!   filled ([`FrameBuilder`], ≤ 16 messages) and a bounded write buffer. Memory per connection
//!   is fixed except the write buffer, which is capped ([`ServerConfig::write_buffer`]); a copier
//!   that does not read loses frames (counted in `send_dropped`), it never grows the intercept.
//! - **Batching.** A frame is written as soon as it holds 16 messages, on [`flush`](ChannelServer::flush),
//!   when [`poll`](ChannelServer::poll) is about to block (the caller is idle), and otherwise once
//!   its oldest message is [`ServerConfig::flush_delay`] old (500 µs by default), checked on every
//!   `poll`. With a busy loop calling `poll` a header therefore waits less than 1 ms. The original
//!   waited up to ~2 ms; the round trip through the channel bounds a replayed session's speed.
//! - **Routes** ([`RouteTable`]): exact 4-tuple → connection, refreshed by CLIENT_ADD and by every
//!   response routed, expired after [`ServerConfig::route_idle_ttl`] idle, [`ServerConfig::fin_grace`]
//!   after a FIN or RST from the target, or on CLIENT_DEL from the owning connection. A route
//!   whose connection has closed is dropped when next used (`routes_orphaned`).
//! - **Delay table** ([`DelayTable`]): a SYN or RST with no route (the SYN-ACK that beat its
//!   CLIENT_ADD) is held, bounded, up to [`ServerConfig::delay_ttl`]; the CLIENT_ADD flushes it
//!   to the new route in order, before anything newer. Other unrouted headers are counted and
//!   dropped, as in the original.
//! - **Bad peers are closed, never left dangling** (defect #14): a *too old* stream (a client
//!   address where the hello should be), a message type other than CLIENT_ADD/CLIENT_DEL after
//!   the hello (garbage), no complete hello within [`ServerConfig::hello_timeout`], or a read or
//!   write error. A hello with a version other than 6 only warns and carries on, as the original
//!   does (#14 keeps it), unless [`ServerConfig::strict_version`]; garbage that follows it is then
//!   closed by the message-type rule.
//! - **Protocol 7** (xdpcopy's extension, `proto` module docs): a hello carrying the xdpcopy
//!   marker is acknowledged at once (`0x80 0x07`, before anything else is written on the
//!   connection), unless [`ServerConfig::max_version`] is 6; the copier's upgrade message switches
//!   the connection's decoder to type-first messages, which can register IPv6 sessions. IPv6
//!   headers go only to such connections (only they can own IPv6 routes). An original copier
//!   sends no marker and its connections stay protocol 6.
//! - Errors on one connection never reach the caller: they close that connection and count.
//!   `poll` fails only if the event loop itself fails.
//!
//! # Admission
//!
//! The port faces a network, so every resource a peer can take is bounded, and every refusal
//! is counted (and logged at most once a second):
//!
//! - **Allowlist** ([`ServerConfig::allow`]): a peer outside every prefix is closed at once,
//!   before a byte it sent is read (`copiers_denied`). Empty: any peer, as the original.
//! - **Connections:** at most [`ServerConfig::max_connections`] in all (`copiers_refused`) and
//!   [`ServerConfig::max_conns_per_peer`] per peer address (`copiers_peer_limit`), so idle
//!   sockets of one host cannot lock the copiers out; a connection past its hello with no byte
//!   in either direction for [`ServerConfig::idle_timeout`] is closed (`copiers_idle`; its
//!   routes have expired long before, and a copier simply reconnects and re-registers).
//! - **Liveness:** TCP keepalive and `TCP_USER_TIMEOUT` on every accepted socket
//!   ([`super::liveness`]): a copier host that vanishes is closed within about 11 s.
//! - **Routes:** at most [`ServerConfig::max_routes_per_conn`] per connection (`routes_quota`);
//!   a live route stays with the connection that registered it first: a CLIENT_ADD or CLIENT_DEL
//!   from another peer address is refused (`route_conflicts`). The same peer address may take a
//!   route over (`routes_taken_over`): that is a copier re-registering after it reconnected,
//!   or moving a session between its `-C` connections; so may anyone once the owner's
//!   connection has closed. After an intercept restart the table is empty and the copiers'
//!   re-registrations simply add.
//! - **CPU:** at most [`ServerConfig::read_budget`] bytes are read from one connection per
//!   [`poll`](ChannelServer::poll) and at most [`ACCEPT_BUDGET`] connections accepted; the rest
//!   waits for the next call (`reads_deferred`), so a flooding peer cannot starve the AF_XDP side
//!   or the other copiers.

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

pub use super::cidr::Cidr;
use super::error::ChannelError;
use super::liveness;
use super::outbuf::OutBuf;
pub use super::proto::DEFAULT_PORT;
use super::proto::{
    ack_bytes, CopierDecoder, CopierError, CopierEvent, FrameBuilder, Framing, HeaderMsg, MsgKind, EXTENDED_VERSION,
    PROTOCOL_VERSION,
};
use super::route::{AddRefused, DelayTable, RouteKey, RouteTable};

const LISTENER: Token = Token(usize::MAX);
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);
/// Most connections accepted per [`ChannelServer::poll`]; more wait for the next call.
pub const ACCEPT_BUDGET: usize = 64;
/// Refusals are logged at most this often (the counters have them all).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);
/// Longest duration taken from the configuration (keeps `Instant` arithmetic from overflowing).
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// Tunables of the intercept side; `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Framing of header messages; must match the copiers' (default combined).
    pub framing: Framing,
    /// A route with no CLIENT_ADD and no response for this long expires (default 120 s).
    pub route_idle_ttl: Duration,
    /// A route expires this long after a FIN or RST from the target (default 10 s).
    pub fin_grace: Duration,
    /// Held SYN/RST responses are dropped this long after the first was held (default 30 s).
    pub delay_ttl: Duration,
    /// Most responses held in the delay table (default 65 536, the original's `-s`).
    pub max_delayed: usize,
    /// Most routes (default 1 048 576); CLIENT_ADDs beyond are counted in `routes_full`.
    pub max_routes: usize,
    /// Most copier connections at once (default 1024, as the original).
    pub max_connections: usize,
    /// Oldest a partial frame may get before `poll` sends it (default 500 µs).
    pub flush_delay: Duration,
    /// Most unsent bytes buffered per copier connection (default 1 MiB).
    pub write_buffer: usize,
    /// Close a copier whose hello has a version other than 6 (default false: warn only).
    pub strict_version: bool,
    /// Close a connection that has not sent a complete hello after this long (default 10 s).
    pub hello_timeout: Duration,
    /// Peers allowed to connect; a peer outside every prefix is closed at once. Empty (the
    /// default): any peer, as the original intercept.
    pub allow: Vec<Cidr>,
    /// Most connections open at once from one peer address (default 16: a copier uses at most
    /// 11, its `-C`).
    pub max_conns_per_peer: usize,
    /// Most routes one connection may hold (default 32 768; with `max_conns_per_peer`, one
    /// address holds at most half the default table).
    pub max_routes_per_conn: usize,
    /// Close a connection past its hello after this long with nothing received or sent; zero:
    /// never (default 300 s).
    pub idle_timeout: Duration,
    /// Most bytes read from one connection per `poll` (default 64 KiB, 4 681 messages).
    pub read_budget: usize,
    /// Highest protocol version acknowledged: 7 (default) lets xdpcopy copiers register IPv6
    /// sessions; 6 answers nothing, exactly as the original intercept.
    pub max_version: u16,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            framing: Framing::Combined,
            route_idle_ttl: Duration::from_secs(120),
            fin_grace: Duration::from_secs(10),
            delay_ttl: Duration::from_secs(30),
            max_delayed: 65_536,
            max_routes: 1 << 20,
            max_connections: 1024,
            flush_delay: Duration::from_micros(500),
            write_buffer: 1 << 20,
            strict_version: false,
            hello_timeout: Duration::from_secs(10),
            allow: Vec::new(),
            max_conns_per_peer: 16,
            max_routes_per_conn: 32_768,
            idle_timeout: Duration::from_secs(300),
            read_budget: 64 * 1024,
            max_version: EXTENDED_VERSION,
        }
    }
}

impl ServerConfig {
    /// Return whether `peer` may connect (always, with an empty allowlist).
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(peer))
    }
}

crate::counters! {
    /// Counters of the channel server (the intercept side of the channel).
    #[derive(Copy)]
    pub struct ServerStats {
        /// Copier connections open now.
        gauge copiers_open,
        /// Copier connections accepted.
        counter copiers_accepted,
        /// Connections refused because `max_connections` were open.
        counter copiers_refused,
        /// Connections closed at once: the peer is outside the allowlist (`--allow-copier`).
        counter copiers_denied,
        /// Connections refused because their peer address had `max_conns_per_peer` open.
        counter copiers_peer_limit,
        /// Connections closed after the idle timeout (nothing received or sent).
        counter copiers_idle,
        /// Copier connections closed, for any reason.
        counter copiers_closed,
        /// Hellos with version 6.
        counter hellos_ok,
        /// Hellos with another version (warned, or closed under `strict_version`).
        counter hellos_incompatible,
        /// Hellos offering protocol 7 that were acknowledged.
        counter hellos_extended,
        /// Connections the copier switched to protocol 7 (IPv6 sessions possible).
        counter upgraded,
        /// Streams closed as "too old" or for sending no hello in time.
        counter hellos_bad,
        /// CLIENT_ADD messages received.
        counter client_add,
        /// CLIENT_DEL messages received.
        counter client_del,
        /// Routes held now.
        gauge routes_active,
        /// Routes expired (idle TTL or FIN/RST grace).
        counter routes_expired,
        /// CLIENT_ADDs not recorded because the route table was full.
        counter routes_full,
        /// CLIENT_ADDs not recorded because the connection held its route quota.
        counter routes_quota,
        /// CLIENT_ADDs and CLIENT_DELs refused: another peer's live connection owns the route.
        counter route_conflicts,
        /// Routes moved to another connection of the same peer (a copier's reconnect) or taken
        /// from a closed one.
        counter routes_taken_over,
        /// Routes dropped because their connection had closed.
        counter routes_orphaned,
        /// Headers routed to a copier on arrival.
        counter delivered,
        /// Headers held in the delay table (SYN/RST before their CLIENT_ADD).
        counter delayed,
        /// Headers held in the delay table now.
        gauge delay_held,
        /// Held headers sent when their CLIENT_ADD arrived.
        counter delay_flushed,
        /// Held headers dropped after the delay TTL.
        counter delay_expired,
        /// Headers not held because the delay table (or the session's list) was full.
        counter delay_dropped,
        /// Headers dropped for having no route (not SYN/RST).
        counter unrouted,
        /// Frames queued for sending.
        counter frames_sent,
        /// Bytes written to copiers.
        counter bytes_sent,
        /// Bytes read from copiers.
        counter bytes_received,
        /// Routed headers dropped: the copier's write buffer was full or its connection closed.
        counter send_dropped,
        /// IPv6 headers routed to a connection that speaks protocol 6 (cannot happen: such a
        /// connection cannot register IPv6 sessions) and dropped.
        counter ipv6_on_v6,
        /// Connections closed for a protocol violation (too old, bad type, strict version).
        counter protocol_errors,
        /// Reads stopped by the per-connection read budget (the rest is read on the next poll).
        counter reads_deferred,
    }
}

/// A connection's slab index and generation: stale ids never reach a newer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnId {
    index: u32,
    gen: u32,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// The peer's address, IPv4-mapped addresses as IPv4 (the per-peer accounting key).
    peer_ip: IpAddr,
    /// Last byte received or sent (for the idle timeout).
    last_active: Instant,
    decoder: CopierDecoder,
    /// The copier upgraded the connection to protocol 7.
    v7: bool,
    batch: FrameBuilder,
    batch_since: Instant,
    out: OutBuf,
    accepted_at: Instant,
}

struct Slot {
    gen: u32,
    conn: Option<Box<Conn>>,
}

/// Why a connection is closed (for the log line).
enum Close {
    Peer,
    Io(io::Error),
    TooOld(super::proto::CopierError),
    Garbage(super::proto::CopierError),
    Version(u16),
    BadType(u16),
    NoHello,
    Idle(Duration),
}

impl Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Peer => write!(f, "closed by the copier"),
            Self::Io(e) => write!(f, "{e}"),
            Self::TooOld(e) => write!(f, "{e} (a copier must speak protocol version 6)"),
            Self::Garbage(e) => write!(f, "{e}"),
            Self::Version(v) => write!(
                f,
                "protocol version {v} is not compatible with version {PROTOCOL_VERSION} (strict version check)"
            ),
            Self::BadType(t) => write!(
                f,
                "message type {t} is neither CLIENT_ADD (1, 8) nor CLIENT_DEL (2, 9): not a copier, or a framing \
                 mismatch"
            ),
            Self::NoHello => write!(f, "no version hello received in time"),
            Self::Idle(d) => write!(f, "idle for {:.1} s (nothing received or sent)", d.as_secs_f64()),
        }
    }
}

/// The intercept's channel endpoint. See the module docs.
pub struct ChannelServer {
    poll: Poll,
    events: Events,
    /// File descriptors registered with `watch_readable`.
    watched: usize,
    listener: TcpListener,
    local_addr: SocketAddr,
    cfg: ServerConfig,
    slots: Vec<Slot>,
    free: Vec<u32>,
    open: usize,
    routes: RouteTable<ConnId>,
    delay: DelayTable,
    /// Connections with a partial frame, oldest first; stale entries skipped.
    pending: VecDeque<(ConnId, Instant)>,
    /// Open connections per peer address.
    peers: HashMap<IpAddr, usize>,
    /// Connections whose read budget ran out with data left, to read first on the next poll.
    backlog: Vec<ConnId>,
    /// The accept budget ran out with connections possibly left in the listen queue.
    accept_pending: bool,
    stats: ServerStats,
    next_housekeeping: Instant,
    refusals: RefusalLog,
}

/// Logs refusals at most once per [`REFUSAL_LOG_EVERY`], with the count of those left out.
struct RefusalLog {
    next: Instant,
    suppressed: u64,
}

impl RefusalLog {
    fn note(&mut self, now: Instant, line: impl FnOnce() -> String) {
        if now < self.next {
            self.suppressed += 1;
            return;
        }
        let more = std::mem::take(&mut self.suppressed);
        if more > 0 {
            eprintln!("channel: {} ({more} more refusals not logged, see the counters)", line());
        } else {
            eprintln!("channel: {}", line());
        }
        self.next = now + REFUSAL_LOG_EVERY;
    }
}

impl std::fmt::Debug for ChannelServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelServer")
            .field("local_addr", &self.local_addr)
            .field("open", &self.open)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn conn_in(slots: &mut [Slot], id: ConnId) -> Option<&mut Conn> {
    let slot = slots.get_mut(id.index as usize)?;
    if slot.gen != id.gen {
        return None;
    }
    slot.conn.as_deref_mut()
}

fn conn_ref(slots: &[Slot], id: ConnId) -> Option<&Conn> {
    let slot = slots.get(id.index as usize)?;
    if slot.gen != id.gen {
        return None;
    }
    slot.conn.as_deref()
}

/// Close a refused connection with a reset, so that a flood of refused connections leaves no
/// TIME_WAIT sockets behind here.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
}

/// The first-owner rule: a connection from `peer` may take over or delete a route of `owner`
/// only if `owner`'s connection has closed or comes from the same peer address.
fn may_take_over(slots: &[Slot], owner: ConnId, peer: IpAddr) -> bool {
    conn_ref(slots, owner).is_none_or(|c| c.peer_ip == peer)
}

impl ChannelServer {
    /// Listen on `addr` with the default configuration.
    ///
    /// # Errors
    ///
    /// [`ChannelError::Bind`] if the address cannot be bound, [`ChannelError::Io`] if the event
    /// loop cannot be created.
    pub fn bind(addr: SocketAddr) -> Result<Self, ChannelError> {
        Self::bind_with(addr, ServerConfig::default())
    }

    /// Listen on `addr` with `cfg` (durations above one year are taken as one year).
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind).
    pub fn bind_with(addr: SocketAddr, mut cfg: ServerConfig) -> Result<Self, ChannelError> {
        for d in [
            &mut cfg.route_idle_ttl,
            &mut cfg.fin_grace,
            &mut cfg.delay_ttl,
            &mut cfg.flush_delay,
            &mut cfg.hello_timeout,
            &mut cfg.idle_timeout,
        ] {
            *d = (*d).min(LONGEST);
        }
        let mut listener = TcpListener::bind(addr).map_err(|source| ChannelError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(ChannelError::io("getsockname"))?;
        let poll = Poll::new().map_err(ChannelError::io("epoll_create"))?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(ChannelError::io("epoll_ctl"))?;
        let now = Instant::now();
        Ok(Self {
            poll,
            events: Events::with_capacity(256),
            watched: 0,
            listener,
            local_addr,
            routes: RouteTable::new(cfg.route_idle_ttl, cfg.max_routes).with_owner_quota(cfg.max_routes_per_conn),
            delay: DelayTable::new(cfg.delay_ttl, cfg.max_delayed),
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            pending: VecDeque::new(),
            peers: HashMap::new(),
            backlog: Vec::new(),
            accept_pending: false,
            stats: ServerStats::default(),
            next_housekeeping: now + HOUSEKEEPING_EVERY,
            refusals: RefusalLog { next: now, suppressed: 0 },
        })
    }

    /// Return the address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Return the configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// Return the number of open copier connections.
    pub fn connections(&self) -> usize {
        self.open
    }

    /// Return the counters, gauges filled in.
    pub fn stats(&self) -> ServerStats {
        let mut s = self.stats;
        s.copiers_open = self.open as u64;
        s.routes_active = self.routes.len() as u64;
        s.routes_expired = self.routes.expired_total();
        s.delay_held = self.delay.len() as u64;
        s.delay_expired = self.delay.expired_total();
        s
    }

    /// Route one captured response header: to its copier's batch, into the delay table, or drop.
    pub fn deliver(&mut self, now: Instant, msg: HeaderMsg) {
        let key = RouteKey::of_response(&msg);
        if let Some(owner) = self.routes.lookup(now, &key) {
            if conn_in(&mut self.slots, owner).is_some() {
                if msg.is_fin() || msg.is_rst() {
                    self.routes.fin_rst(now, &key, self.cfg.fin_grace);
                }
                self.stats.delivered += 1;
                self.enqueue(now, owner, &msg);
                return;
            }
            self.routes.remove(&key);
            self.stats.routes_orphaned += 1;
        }
        if msg.is_syn() || msg.is_rst() {
            match self.delay.hold(now, key, msg) {
                Ok(()) => self.stats.delayed += 1,
                Err(_) => self.stats.delay_dropped += 1,
            }
        } else {
            self.stats.unrouted += 1;
        }
    }

    /// Let a session's route expire after the FIN grace (the caller saw its FIN or RST).
    ///
    /// [`deliver`](Self::deliver) already does this for FIN/RST headers it routes.
    pub fn route_fin_rst(&mut self, now: Instant, key: RouteKey) {
        self.routes.fin_rst(now, &key, self.cfg.fin_grace);
    }

    /// Makes [`poll`](Self::poll) also return when `fd` becomes readable (intercept registers
    /// its AF_XDP sockets, so one wait covers captured responses and channel sockets). Each
    /// call uses a token below the listener's, which no connection slot ever reaches.
    ///
    /// # Errors
    /// When epoll refuses the fd.
    pub fn watch_readable(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.watched += 1;
        let token = Token(usize::MAX - self.watched);
        self.poll.registry().register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE)
    }

    /// Send every partial frame now (call at the end of an RX burst).
    pub fn flush(&mut self) {
        while let Some((id, since)) = self.pending.pop_front() {
            self.flush_if_current(id, since);
        }
    }

    /// Drive the sockets and timers, waiting at most `timeout` for socket events.
    ///
    /// A non-zero `timeout` means the caller is idle: partial frames are sent before waiting.
    ///
    /// # Errors
    ///
    /// [`ChannelError::Io`] only if the event loop itself fails; connection errors are handled
    /// (the connection is closed and counted).
    pub fn poll(&mut self, timeout: Duration) -> Result<(), ChannelError> {
        let now = Instant::now();
        if timeout.is_zero() {
            self.flush_due(now);
        } else {
            self.flush();
        }
        // Work left over by the last call's budgets: do not wait for an event that, epoll being
        // edge-triggered, will not come.
        let timeout = if self.backlog.is_empty() && !self.accept_pending { timeout } else { Duration::ZERO };

        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let polled = self.poll.poll(&mut events, Some(timeout));
        if let Err(e) = polled {
            self.events = events;
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(ChannelError::Io { call: "epoll_wait", source: e });
        }
        let now = Instant::now();
        for id in std::mem::take(&mut self.backlog) {
            self.read(now, id);
        }
        if std::mem::take(&mut self.accept_pending) {
            self.accept(now);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                self.accept(now);
                continue;
            }
            let index = ev.token().0;
            let Some(gen) = self.slots.get(index).map(|s| s.gen) else {
                continue;
            };
            let id = ConnId { index: index as u32, gen };
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.read(now, id);
            }
            if ev.is_writable() {
                self.write(id);
            }
        }
        self.events = events;

        self.routes.expire(now);
        self.delay.expire(now);
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_EVERY;
            self.close_stale(now);
        }
        self.flush_due(now);
        Ok(())
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: try again on the next readiness event.
                    eprintln!("channel: accept on {} failed: {e}", self.local_addr);
                    return;
                }
            };
            // Every refusal below resets the connection at once, unread.
            let peer_ip = peer.ip().to_canonical();
            if !self.cfg.allows(peer_ip) {
                reset(stream);
                self.stats.copiers_denied += 1;
                self.refusals.note(now, || format!("refusing {peer}: not in --allow-copier"));
                continue;
            }
            if self.open >= self.cfg.max_connections {
                reset(stream);
                self.stats.copiers_refused += 1;
                let open = self.open;
                self.refusals.note(now, || format!("refusing copier {peer}: {open} connections open (the maximum)"));
                continue;
            }
            let from_peer = self.peers.get(&peer_ip).copied().unwrap_or(0);
            if from_peer >= self.cfg.max_conns_per_peer {
                reset(stream);
                self.stats.copiers_peer_limit += 1;
                self.refusals.note(now, || {
                    format!(
                        "refusing copier {peer}: {from_peer} connections open from {peer_ip} (the maximum per address)"
                    )
                });
                continue;
            }
            if let Err(e) = stream.set_nodelay(true) {
                eprintln!("channel: refusing copier {peer}: TCP_NODELAY failed: {e}");
                continue;
            }
            if let Err(e) = liveness::watch(&stream) {
                // Still usable; only a vanished copier host would go unnoticed for longer.
                eprintln!("channel: copier {peer}: keepalive not set: {e}");
            }
            let index = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.slots.push(Slot { gen: 0, conn: None });
                    (self.slots.len() - 1) as u32
                }
            };
            let slot = &mut self.slots[index as usize];
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(index as usize),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                eprintln!("channel: refusing copier {peer}: epoll_ctl failed: {e}");
                self.free.push(index);
                continue;
            }
            slot.conn = Some(Box::new(Conn {
                stream,
                peer,
                peer_ip,
                last_active: now,
                decoder: CopierDecoder::with_max_version(self.cfg.max_version),
                v7: false,
                batch: FrameBuilder::new(self.cfg.framing),
                batch_since: now,
                out: OutBuf::new(self.cfg.write_buffer),
                accepted_at: now,
            }));
            self.open += 1;
            *self.peers.entry(peer_ip).or_insert(0) += 1;
            self.stats.copiers_accepted += 1;
            eprintln!("channel: copier {peer} connected");
        }
        self.accept_pending = true;
    }

    fn read(&mut self, now: Instant, id: ConnId) {
        let mut buf = [0u8; 8192];
        let mut budget = self.cfg.read_budget.max(1);
        loop {
            if budget == 0 {
                self.stats.reads_deferred += 1;
                if !self.backlog.contains(&id) {
                    self.backlog.push(id);
                }
                return;
            }
            let Some(conn) = conn_in(&mut self.slots, id) else {
                return;
            };
            let want = budget.min(buf.len());
            let n = match conn.stream.read(&mut buf[..want]) {
                Ok(0) => return self.close(id, &Close::Peer),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.close(id, &Close::Io(e)),
            };
            self.stats.bytes_received += n as u64;
            budget -= n;
            conn.last_active = now;
            let mut decoder = conn.decoder.clone();
            let mut verdict = None;
            let fed = decoder.feed(&buf[..n], |ev| {
                if verdict.is_none() {
                    verdict = self.on_event(now, id, ev);
                }
            });
            if let Some(conn) = conn_in(&mut self.slots, id) {
                conn.decoder = decoder;
            }
            let verdict = match (verdict, fed) {
                (Some(v), _) => Some(v),
                (None, Err(e @ CopierError::TooOld { .. })) => {
                    self.stats.hellos_bad += 1;
                    Some(Close::TooOld(e))
                }
                (None, Err(e)) => Some(Close::Garbage(e)),
                (None, Ok(())) => None,
            };
            if let Some(why) = verdict {
                self.stats.protocol_errors += 1;
                return self.close(id, &why);
            }
        }
    }

    /// Apply one decoded copier event; `Some` asks for the connection to be closed.
    fn on_event(&mut self, now: Instant, id: ConnId, ev: CopierEvent) -> Option<Close> {
        match ev {
            CopierEvent::Hello { version, ack } if version == PROTOCOL_VERSION => {
                self.stats.hellos_ok += 1;
                if let Some(v) = ack {
                    // At once, before anything else is written here: the copier reads these two
                    // bytes as the first of the stream (no frame can be queued yet: routes come
                    // from CLIENT_ADDs, which follow the hello).
                    let conn = conn_in(&mut self.slots, id)?;
                    if !conn.out.push(&ack_bytes(v)) {
                        return Some(Close::Io(io::ErrorKind::OutOfMemory.into()));
                    }
                    self.stats.hellos_extended += 1;
                    self.write(id);
                }
                None
            }
            CopierEvent::Upgraded { version } => {
                self.stats.upgraded += 1;
                let conn = conn_in(&mut self.slots, id)?;
                conn.v7 = true;
                eprintln!("channel: copier {} switched to protocol {version} (IPv6 sessions)", conn.peer);
                None
            }
            CopierEvent::Hello { version, .. } => {
                self.stats.hellos_incompatible += 1;
                if self.cfg.strict_version {
                    return Some(Close::Version(version));
                }
                let peer = conn_in(&mut self.slots, id).map(|c| c.peer);
                if let Some(peer) = peer {
                    eprintln!(
                        "channel: copier {peer} speaks protocol version {version}, this intercept \
                         {PROTOCOL_VERSION}: not compatible, continuing as the original intercept does"
                    );
                }
                None
            }
            CopierEvent::Msg(m) => {
                let key = RouteKey::of_copier_msg(&m);
                let peer = conn_ref(&self.slots, id)?.peer_ip;
                match m.kind {
                    MsgKind::ClientAdd => {
                        self.stats.client_add += 1;
                        let slots = &self.slots;
                        let mut taken_over = false;
                        let added = self.routes.add(now, key, id, |owner| {
                            taken_over = may_take_over(slots, owner, peer);
                            taken_over
                        });
                        match added {
                            Ok(()) => self.stats.routes_taken_over += u64::from(taken_over),
                            Err(AddRefused::Full) => {
                                self.stats.routes_full += 1;
                                return None;
                            }
                            Err(AddRefused::Quota) => {
                                self.stats.routes_quota += 1;
                                return None;
                            }
                            Err(AddRefused::Owned(_)) => {
                                self.stats.route_conflicts += 1;
                                return None;
                            }
                        }
                        for held in self.delay.take(now, &key) {
                            if held.is_fin() || held.is_rst() {
                                self.routes.fin_rst(now, &key, self.cfg.fin_grace);
                            }
                            self.stats.delay_flushed += 1;
                            self.enqueue(now, id, &held);
                        }
                        None
                    }
                    MsgKind::ClientDel => {
                        self.stats.client_del += 1;
                        let slots = &self.slots;
                        let mut conflict = false;
                        self.routes.remove_if(&key, |owner| {
                            let ok = owner == id || may_take_over(slots, owner, peer);
                            conflict = !ok;
                            ok
                        });
                        self.stats.route_conflicts += u64::from(conflict);
                        None
                    }
                    MsgKind::Hello | MsgKind::Upgrade | MsgKind::Other(_) => Some(Close::BadType(m.kind.to_wire())),
                }
            }
        }
    }

    fn enqueue(&mut self, now: Instant, id: ConnId, msg: &HeaderMsg) {
        let Some(conn) = conn_in(&mut self.slots, id) else {
            self.stats.send_dropped += 1;
            return;
        };
        if msg.is_ipv6() && !conn.v7 {
            self.stats.ipv6_on_v6 += 1;
            return;
        }
        if conn.batch.is_empty() {
            conn.batch_since = now;
            self.pending.push_back((id, now));
        }
        conn.batch.push(msg);
        if conn.batch.is_full() {
            self.flush_conn(id);
        }
    }

    /// Send the batch `pending` recorded as started at `since`, unless it was sent already.
    fn flush_if_current(&mut self, id: ConnId, since: Instant) {
        if let Some(conn) = conn_in(&mut self.slots, id) {
            if !conn.batch.is_empty() && conn.batch_since == since {
                self.flush_conn(id);
            }
        }
    }

    fn flush_due(&mut self, now: Instant) {
        while let Some(&(id, since)) = self.pending.front() {
            if since + self.cfg.flush_delay > now {
                break;
            }
            self.pending.pop_front();
            self.flush_if_current(id, since);
        }
    }

    fn flush_conn(&mut self, id: ConnId) {
        let Some(conn) = conn_in(&mut self.slots, id) else {
            return;
        };
        if conn.batch.is_empty() {
            return;
        }
        let n = conn.batch.len() as u64;
        if conn.out.push(conn.batch.bytes()) {
            self.stats.frames_sent += 1;
        } else {
            self.stats.send_dropped += n;
        }
        conn.batch.clear();
        self.write(id);
    }

    fn write(&mut self, id: ConnId) {
        let Some(conn) = conn_in(&mut self.slots, id) else {
            return;
        };
        if conn.out.is_empty() {
            return;
        }
        match conn.out.write_to(&mut conn.stream) {
            Ok(n) => {
                if n > 0 {
                    conn.last_active = Instant::now();
                }
                self.stats.bytes_sent += n as u64;
            }
            Err(e) => self.close(id, &Close::Io(e)),
        }
    }

    /// Close connections without a hello in time, and idle ones past it.
    fn close_stale(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            let Some(conn) = slot.conn.as_deref() else {
                continue;
            };
            let id = ConnId { index: index as u32, gen: slot.gen };
            if !conn.decoder.hello_done() {
                if now >= conn.accepted_at + self.cfg.hello_timeout {
                    self.stats.hellos_bad += 1;
                    self.close(id, &Close::NoHello);
                }
            } else if !idle.is_zero() && now >= conn.last_active + idle && conn.batch.is_empty() {
                self.stats.copiers_idle += 1;
                self.close(id, &Close::Idle(idle));
            }
        }
    }

    fn close(&mut self, id: ConnId, why: &Close) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.gen != id.gen {
            return;
        }
        let Some(mut conn) = slot.conn.take() else {
            return;
        };
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(id.index);
        self.open -= 1;
        if let Some(n) = self.peers.get_mut(&conn.peer_ip) {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(&conn.peer_ip);
            }
        }
        self.stats.copiers_closed += 1;
        self.stats.send_dropped += conn.batch.len() as u64;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        eprintln!("channel: closing copier {}: {why}", conn.peer);
    }
}
