//! The per-worker TCP session emulation: TCPCopy's session engine (reference §3) as pure logic.
//!
//! An [`Engine`] owns one worker's sessions. It is fed three kinds of events, each with the
//! current time as an argument, and acts only through an [`Output`]:
//!
//! - [`Engine::on_client`]: a captured client→online-server frame (already parsed by
//!   [`crate::wire::parse::parse`]);
//! - [`Engine::on_response`]: a test-server response header returned by intercept
//!   ([`ResponseHeader`], the 64-byte channel message of reference §4.3);
//! - [`Engine::on_timers`]: time passing (RTO, SYN retransmit, delayed ACK / response complete,
//!   reconstruct, time-wait, timeouts).
//!
//! It has no clock, does no I/O, never logs and never allocates after [`Engine::new`]: tests
//! drive it step by step like a protocol library.
//!
//! # What a session does (reference §3)
//!
//! The replayed connection keeps the client's own sequence numbers; the test server's ISN is
//! learnt from its SYN-ACK header and every ack we send is `target_ack_seq` (§3.4). Captured
//! segments are copied into a preallocated per-worker pool and released to the target in order, by the
//! per-packet rules of §3.7: nothing before the handshake completes; a synthesized SYN (§3.9)
//! for sessions first seen mid-stream; the client's pure ACKs suppressed (we ACK response data
//! ourselves on the rtt-driven delayed-ACK timer, §3.8); a new request held until the previous
//! response is complete; a greeting wait for server-speaks-first protocols; flow control against
//! the target's scaled window (§3.15). Unacked data is retransmitted on a 100 ms RTO and on
//! three duplicate acks (§3.10). FIN and RST are handled from both sides, including
//! reconstructing a session that the target reset while captured data is still unsent (§3.12).
//! A finished session lingers in time-wait (6 s) to absorb late responses (§3.13).
//!
//! # IPv6 and family translation
//!
//! A session is keyed by its client's address (IPv4 or IPv6) and port as sent to the target, and
//! is replayed in its target's family. Captured segments are stored with the IP header they came
//! with (IPv4 with its options, or the fixed IPv6 header: extension headers the parse skipped
//! are dropped); frames are built at send time in the target's family (`build.rs`): the stored
//! header as is in the same family, or one of the other family made from it (family
//! translation: an IPv6 capture replayed to an IPv4 test server, or the reverse, when the
//! caller gives a client address of the target's family — `-c`; see
//! [`Engine::on_client_as`]). Sizes follow the family sent: the MTU split counts the output IP
//! header, a synthesized SYN offers [`Config::mss_v6`] to an IPv6 target, and a captured SYN
//! translated to IPv6 has its MSS option clamped to fit the MTU. IPv6 responses come back as
//! 84-byte channel messages (protocol 7); checksums use the family's pseudo-header.
//!
//! # Fixes relative to the original (reference §7)
//!
//! - #1: `default_rtt` (-R) sets the rtt of every session.
//! - #2: a hole in the captured stream (a segment the capture lost: a full fill ring, a NIC's
//!   drop) that is still unfilled after `hole_wait` (1 s; a client's own retransmission of a
//!   segment lost on the network fills it sooner) is skipped: from then on the session's
//!   captured sequence numbers are moved back by the hole's size, so the target sees one
//!   contiguous stream without the missing bytes (`clt_hole_skipped`, `clt_hole_bytes`) and the
//!   session goes on. The original waits for the missing segment until the session times out,
//!   so one lost frame cost every later request of its connection.
//! - #7: SYNs are retransmitted at `syn_rto` (doubling) until `establish_timeout`.
//! - #8: RTO, delayed ACK, reconstruct, SYN retransmit, time-wait and timeouts are separate
//!   deadlines per session (one heap entry per session), with the original's timing.
//! - #11: a session that falls behind its capture is kept and catches up (reference §10): once
//!   its unsent backlog or the wait of its oldest unsent segment passes a threshold
//!   ([`CatchUp`]), it sends what waits without waiting for each response, within the target's
//!   window, until nothing is left unsent, then waits for responses again. Memory is bounded by
//!   the worker's preallocated pool, not per session: a full pool ends the session with the
//!   largest backlog first (`pool_exhausted`); a per-session cap exists as an option.
//! - #12: captured packets larger than `mtu` are split before anything else.
//!
//! # Deliberate differences from the original
//!
//! - A client SYN with a new sequence number on a live tuple, or a forward jump of more than
//!   2^24 in its stream, ends the old session (passive RST, `port_reuse`) and starts a new one;
//!   the original marks the old session and drops the new connection until the old one dies.
//! - A stray client packet for a session in time-wait is dropped (`clt_time_wait`) and the
//!   session keeps absorbing late responses; the original destroys the session.
//! - The target's FIN completes the response in progress, so a captured client FIN goes out as
//!   a FIN (a clean close) instead of being held until the faked RST.
//! - After the client's FIN, a bare ACK from the target is not answered with a RST; the session
//!   waits `time_wait` for the target's FIN, then ends with the passive RST.
//! - A response of a stale target connection before the SYN-ACK gets the faked RST and our
//!   SYN is retransmitted after rtt (the SYN retransmit timer replaces the rebuild).
//! - SACK blocks in captured packets are overwritten with NOPs (they name the online server's
//!   sequence numbers); the payload of a captured SYN or RST is not replayed.
//! - A fast retransmit re-arms the RTO to max(rtt, `rto`), not rtt.
//! - A response whose last data came without PSH (the target stopped for its window, more is
//!   queued: typically a GSO super-segment from `xdpcopy-intercept --local`) is not complete after
//!   one quiet delayed-ACK period; up to `MORE_WAITS` (16) more. And a bare client FIN is held
//!   while the target has sent less of the last answer than the FIN's ack says the real client
//!   received (again up to 16 quiet periods): a FIN that arrives early makes nginx abort the
//!   answer. The original released both after one quiet rtt, which the channel round trip can
//!   exceed.
//! - A client RST is also held, after the response wait, until the target has acked everything
//!   sent before it and been silent for 50 ms (at most 5 s): a RST makes the target's kernel
//!   discard what its application has not read yet, which after a catch-up (pipelined requests)
//!   can be hundreds of requests.
//! - A registered session asks for CLIENT_DEL when it finally leaves the table
//!   ([`Output::client_del`]; a port reuse's comes before the new session's CLIENT_ADD), so the
//!   copier's session registry and the intercept's routes hold only live sessions. The original
//!   never sends CLIENT_DEL (its intercept only logs one).
//! - The optional per-session buffer cap counts stored bytes (headers + payload), so pure ACKs
//!   and FINs buffered before the handshake count too. Hitting it ends the session (a hole would
//!   stall it anyway) and frees its memory.
//! - A captured segment is sent only when the output is ready ([`Output::ready`]); otherwise the
//!   session waits in a queue and resumes when there is room (the original's raw socket blocks
//!   or fails; here nothing is consumed without leaving).
//! - A timer may run up to [`TIMER_SLACK`] (250 µs) before its deadline when the worker is
//!   awake anyway, as if at its deadline (what it re-arms counts from there; latency stamps are
//!   real time): the worker wakes once for several sessions' timers instead of once for each.
//!   The original's timers have millisecond granularity and run late instead.
//! - An out-of-order segment is walked at most 256 segments to its place; further, it is dropped
//!   and counted (`clt_reorder_dropped`): the session's stall at the hole is bounded by
//!   `hole_wait`, the worker's cost by the walk.
//! - No zero-window probes and no hop-point bookkeeping (§3.11) beyond the 2^24 jump rule;
//!   `hole_wait` bounds both stalls.
//!
//! # Invariants
//!
//! - A session's segment list is ordered by processing: a sent prefix (kept for retransmission
//!   until acked) followed by the unsent segments in sequence order.
//! - A session in time-wait (`over`) holds no segments and has only its time-wait deadline.
//! - Every generated frame is complete: Ethernet, IPv4 with its checksum (or IPv6), TCP with a
//!   full checksum (captured checksums are never trusted: mirrored frames carry partial ones).
//! - A session's client address is of its target's family; every frame of it is of that family.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

mod build;
mod engine;
mod pool;
mod response;
mod state;
mod table;
mod timer;

#[cfg(test)]
mod tests;

pub use engine::Engine;
pub use response::ResponseHeader;

/// The session engine's settings (one copy per worker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Wait for the previous response before sending a new request; false with -W.
    pub wait_response: bool,
    /// -O: replay only sessions whose SYN was captured.
    pub only_syn_sessions: bool,
    /// -t: end a session that got no response for this long (600 s).
    pub session_timeout: Duration,
    /// -k: end an idle session (request sent, nothing buffered) after this long without a
    /// response (default -t + 120 s).
    pub keepalive_timeout: Duration,
    /// -R: the rtt of every session; `None` measures it from the captured handshake.
    pub default_rtt: Option<Duration>,
    /// -D: the MSS option of synthesized SYNs to an IPv4 target (1460).
    pub mss: u16,
    /// The MSS option of synthesized SYNs to an IPv6 target (1440: its header is 20 bytes
    /// longer; -D sets both).
    pub mss_v6: u16,
    /// -M: split captured IP packets larger than this (1500); also a "full" response size.
    pub mtu: u16,
    /// Retransmission timeout for unacked data (100 ms, no backoff).
    pub rto: Duration,
    /// First SYN retransmission timeout (1 s, doubling).
    pub syn_rto: Duration,
    /// Give up on a handshake after this long without a SYN-ACK (5 s).
    pub establish_timeout: Duration,
    /// How long a finished session lingers (6 s); also how long we wait for the target's FIN
    /// after sending the client's.
    pub time_wait: Duration,
    /// Skip a hole in the captured stream that is still unfilled after this long (1 s): the
    /// target gets the stream without the missing bytes, and the session goes on.
    pub hole_wait: Duration,
    /// Session table capacity; a new session when it is full evicts the least recently active.
    pub max_sessions: usize,
    /// Per-session cap of buffered captured bytes (headers + payload); `usize::MAX` (the
    /// default) leaves a session bounded only by the worker's pool.
    pub max_buffered_bytes: usize,
    /// Catch up instead of falling behind (`--catch-up auto`): `None` keeps strict
    /// request/response order whatever the backlog (`--catch-up off`).
    pub catch_up: Option<CatchUp>,
    /// Per-worker preallocated store for captured segments, in bytes.
    pub pool_bytes: usize,
    /// How early a timer may run when the worker is awake anyway ([`TIMER_SLACK`]; zero runs
    /// every timer at its deadline, which costs a wake-up for nearly each one).
    pub timer_slack: Duration,
}

/// How early a session's timer may run: timers due within this of a wake-up (a frame, a
/// header, another timer) run in it instead of waking the worker again. Each runs as at its
/// own deadline (what it re-arms counts from there), so a timer acts at most this much early
/// and a chain of them (the delayed ACK, then the response's end) never drifts: a response is
/// called complete at least `1.5 rtt − 250 µs` after its last data instead of `1.5 rtt`. At
/// paced 4000 requests/s it took the worker from ~1.8 to ~1.3 context switches per request
/// (docs/benchmarks.md); the original's timers have millisecond granularity and fire late.
pub const TIMER_SLACK: Duration = Duration::from_micros(250);

impl Default for Config {
    fn default() -> Self {
        Config {
            wait_response: true,
            only_syn_sessions: false,
            session_timeout: Duration::from_secs(600),
            keepalive_timeout: Duration::from_secs(720),
            default_rtt: None,
            mss: 1460,
            mss_v6: 1440,
            mtu: 1500,
            rto: Duration::from_millis(100),
            syn_rto: Duration::from_secs(1),
            establish_timeout: Duration::from_secs(5),
            time_wait: Duration::from_secs(6),
            hole_wait: Duration::from_secs(1),
            max_sessions: 65_536,
            max_buffered_bytes: usize::MAX,
            catch_up: Some(CatchUp::default()),
            pool_bytes: 256 << 20,
            timer_slack: TIMER_SLACK,
        }
    }
}

/// When a session that fell behind its capture stops waiting for each response.
///
/// A session falls behind when the test server (through the replay round trip) answers more
/// slowly than the client sent: captured requests pile up. Once its buffered bytes reach `bytes`,
/// or a captured segment has waited `lag` to be sent, the session sends what is waiting without
/// waiting for each response (as `-W` does, within the test server's window) until nothing is
/// left unsent, then waits for responses again. The handshake and a server-speaks-first greeting
/// still wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUp {
    /// Buffered bytes (headers and payload) that start a catch-up.
    pub bytes: usize,
    /// How long a captured segment may wait unsent before a catch-up starts.
    pub lag: Duration,
}

impl Default for CatchUp {
    fn default() -> Self {
        CatchUp { bytes: 1 << 20, lag: Duration::from_secs(1) }
    }
}

/// Where the sessions of one `-x` entry are replayed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The test server's address (IPv4 or IPv6: the family every session to it is sent in).
    pub ip: IpAddr,
    /// The test server's port.
    pub port: u16,
    /// Source MAC of generated frames (the output interface's).
    pub src_mac: [u8; 6],
    /// Destination MAC of generated frames (the test server or the next hop).
    pub dst_mac: [u8; 6],
}

impl Target {
    /// Return the target as a socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// What the engine asks its environment to do.
///
/// The worker implements it over UMEM frames and the lock-free queue to the control thread;
/// tests implement it with `Vec`s.
pub trait Output {
    /// Build one frame in a free TX buffer: `build` writes the whole Ethernet frame and returns
    /// its length, or 0 if the buffer is too small (the buffer must then be recycled unsent;
    /// return true, and the engine counts `tx_buffer_too_small`). Return false when no buffer is
    /// free (the engine counts `tx_no_buffer` and relies on its retransmission logic; it never
    /// loops). Frames are at most 14 + `mtu` bytes.
    fn transmit(&mut self, build: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;

    /// Whether a frame can be transmitted now (a TX slot, a free buffer, and the worker's
    /// per-round budget). The engine sends captured segments only when this holds; otherwise the
    /// session waits its turn (see [`Engine::on_timers`]) instead of losing the segment to
    /// retransmission. The default says yes.
    fn ready(&mut self) -> bool {
        true
    }

    /// Ask the control thread to send CLIENT_ADD(client, target) to the intercepts; false if it
    /// could not be queued.
    fn client_add(&mut self, client: SocketAddr, target: SocketAddr) -> bool;

    /// Tell the control thread a registered session is gone (it forgets the session and sends
    /// CLIENT_DEL). Called once, when the engine removes a session whose `client_add` succeeded;
    /// a request that cannot be queued is only counted (the control thread's TTL forgets it).
    fn client_del(&mut self, client: SocketAddr, target: SocketAddr);

    /// Record a latency sample (nanoseconds, measured with the engine's `now`). The default
    /// ignores it.
    fn latency(&mut self, _what: Latency, _nanos: u64) {}
}

/// The latencies the engine measures, with the worker's clock (`now` of each call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// A connection's first SYN (captured or synthesized) sent → the test server's SYN-ACK header
    /// handled.
    Handshake,
    /// A request's first segment sent → the first response header with payload handled. Includes
    /// the return path: test server → assist server → intercept (≤ its flush delay) → channel →
    /// control thread → worker.
    Response,
    /// The replay round trip: a request segment sent → the test server's ack of it handled by
    /// the worker (test server → assist → intercept → channel → control thread → worker).
    ReplayRtt,
}

control::counters! {
    /// The engine's statistics: plain integers, named after the original's keys (§6).
    ///
    /// All are cumulative except `active`, a gauge. Every dropped packet has a counter.
    #[derive(Copy)]
    pub struct Counters {
        /// Sessions in the table, time-wait included (gauge; `active`).
        gauge active,
        /// Sessions deleted from the table (`rel`).
        counter released,
        /// Sessions ended by a timeout or a cap (`obs del`).
        counter obsolete,
        /// Sessions that entered time-wait (`tw`).
        counter time_wait,
        /// SYN-ACKs received: connections the target accepted (`conns`).
        counter conns,
        /// Response headers handled (`resp`).
        counter resp,
        /// Response headers with payload (`c-resp`).
        counter resp_payload,
        /// Responses with FIN (`resp fin`).
        counter resp_fin,
        /// Responses with RST (`resp rst`).
        counter resp_rst,
        /// Frames sent (`send`).
        counter sent,
        /// Frames with payload sent, retransmissions excluded (`send content`).
        counter sent_payload,
        /// SYNs sent, faked and retransmitted ones included (`send syn`).
        counter sent_syn,
        /// FINs sent (`fin`).
        counter sent_fin,
        /// RSTs sent, faked ones included (`reset`).
        counter sent_rst,
        /// Fake SYNs that rebuild a session the target closed (`reconnect`).
        counter reconnect,
        /// Fake SYNs for sessions first seen mid-stream (`for no syn`).
        counter fake_syn,
        /// Data retransmissions (RTO and fast retransmit) (`retransmit`).
        counter retransmit,
        /// Retransmissions followed by response data (`recv packs after retransmission`).
        counter retrans_ok,
        /// SYN retransmissions (new: the original never retransmits a SYN).
        counter syn_retransmit,
        /// Captured client SYNs (`syn cnt`).
        counter clt_syn,
        /// Accepted client packets (`all clt`).
        counter clt_packets,
        /// Accepted client packets with payload (`clt cont`).
        counter clt_payload,
        /// Client retransmissions skipped (`total cont retransmit`).
        counter clt_retrans,
        /// Client pure ACKs dropped because we make our own ACKs (§3.1 step 7).
        counter clt_pure_ack_suppressed,
        /// Captured packets that were split to the MTU.
        counter split,
        /// Sessions evicted because the table was full.
        counter evicted,
        /// Sessions ended because their buffered bytes hit `max_buffered_bytes` (`--session-buffer-kb`).
        counter buffer_overflow,
        /// Sessions ended because the worker's pool was full (the largest backlog first).
        counter pool_exhausted,
        /// Sessions waiting for TX room now (the worker's round budget, TX ring or build frames).
        gauge tx_waiting,
        /// Times a session fell behind its capture and started catching up (`--catch-up`).
        counter catch_up_entered,
        /// Requests sent during a catch-up without waiting for the previous response.
        counter catch_up_requests,
        /// Out-of-order client segments dropped because placing them would walk too far.
        counter clt_reorder_dropped,
        /// Frames not sent because no TX buffer was free.
        counter tx_no_buffer,
        /// Frames not sent because the TX buffer was too small for them.
        counter tx_buffer_too_small,
        /// Sessions dropped because CLIENT_ADD could not be queued.
        counter client_add_failed,
        /// Responses for no session (or from another address than the session's target).
        counter unknown_response,
        /// Handshakes given up after `establish_timeout`.
        counter establish_timeout,
        /// Holes in a session's captured stream skipped because they were not filled within
        /// `hole_wait` (each costs the target the missing bytes: typically one request).
        counter clt_hole_skipped,
        /// Bytes of captured streams skipped at holes.
        counter clt_hole_bytes,
        /// Client frames dropped as unusable: not IP TCP, inconsistent with their parse, bad target.
        counter clt_malformed,
        /// Client frames whose client address is not of the target's family (an IPv6 client of
        /// an IPv4 target needs a substitute address of the target's family: `-c`).
        counter clt_family_mismatch,
        /// Sessions created whose target is IPv6.
        counter ipv6_sessions,
        /// Sessions created in the other family than captured (family translation, `-c`).
        counter translated_sessions,
        /// Client packets without payload or SYN for an unknown session (ignored, §3.9).
        counter clt_no_session,
        /// Client packets of sessions whose SYN was not captured, dropped under -O.
        counter clt_no_syn,
        /// Client packets older than the session's captured SYN (interference guard, §3.11).
        counter clt_stale,
        /// Client packets for a session in time-wait that do not start a new connection.
        counter clt_time_wait,
        /// Buffered client packets the rules discarded (`drop content pack` and bare ones).
        counter clt_discarded,
        /// Sessions replaced because the client reused the tuple (new SYN, or a sequence jump).
        counter port_reuse,
    }
}
