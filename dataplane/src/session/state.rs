//! The state of one replayed session.
//!
//! The original keeps a bit set mixing assigned and OR-ed states (reference §3.2); here the
//! same facts are separate fields: `phase` (CLOSED / SYN_SENT / SYN_CONFIRM), `established`
//! (the ESTABLISHED bit), `sent_request` (state ≥ SND_REQ), `awaiting` (a response is awaited;
//! cleared where the original assigns RCV_REP), `server_fin` / `client_fin`, and `over` (the
//! session has ended and lingers in time-wait).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::pool::NIL;

/// Where the handshake of the replayed connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No SYN sent (new session, or rebuilding after the target closed).
    Closed,
    /// SYN sent, no SYN-ACK yet.
    SynSent,
    /// SYN-ACK received: the target's ISN is known.
    Confirmed,
}

/// One session: its buffered segments, sequence state, pacing state and deadlines.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The table key (client address and port).
    pub key: u64,
    /// Bumped each time the slot gets a new session (stale timer entries are skipped).
    pub gen: u32,
    pub client_ip: Ipv4Addr,
    pub client_port: u16,
    /// Index into the engine's targets.
    pub target: usize,

    // The segment list: a sent prefix, then the unsent segments.
    pub head: u32,
    pub tail: u32,
    /// First unsent segment.
    pub unsent: u32,
    /// Last sent segment (the one before `unsent`), or NIL.
    pub last_sent: u32,
    /// Segments in the list.
    pub segs: u32,
    /// Stored bytes of the segments in the list.
    pub buffered: usize,

    pub phase: Phase,
    pub established: bool,
    pub sent_request: bool,
    pub awaiting: bool,
    pub server_fin: bool,
    pub client_fin: bool,
    pub over: bool,
    /// Set when the session must leave the table now (the engine removes it).
    pub dead: bool,
    /// In time-wait: the first late response was seen (the next ones get a RST).
    pub tw_resp_seen: bool,

    /// The client's SYN was captured (the session is not a fake-SYN one).
    pub syn_seen: bool,
    /// Sequence number of the captured SYN.
    pub syn_seq: u32,
    /// The connection to the target was opened with a fake SYN.
    pub fake: bool,
    /// The next fake SYN rebuilds a connection the target closed.
    pub reconnect: bool,
    /// Sequence number and IP id of the SYN we sent (to retransmit a fake one).
    pub syn_out_seq: u32,
    pub syn_out_id: u16,

    /// `target_nxt_seq`: the next client sequence number the target expects.
    pub nxt: u32,
    /// `target_ack_seq`: the ack we send (the target's next sequence number).
    pub ack: u32,
    /// The target's last ack of our data.
    pub rep_ack: u32,
    /// End of the highest captured segment.
    pub max_end: u32,
    /// The client's ack of the last client packet sent (`req_last_ack_sent`): a payload packet
    /// with another ack starts a new request.
    pub last_ack_sent: Option<u32>,

    /// A request is held until the target's greeting arrives (§3.7 rule 6).
    pub greeting_received: bool,
    /// Response data arrived since the last delayed ACK.
    pub resp_data: bool,
    /// The last response segment with data was "full" (§3.8).
    pub resp_full: bool,
    /// A retransmission was sent and no response data followed yet.
    pub retransmitted: bool,

    pub rtt: Duration,
    /// When the captured SYN was seen (the rtt clock runs until the next client packet).
    pub rtt_start: Option<Instant>,

    pub ts_on: bool,
    pub ts_value: u32,
    pub ts_ec_r: u32,
    pub wscale: u8,
    /// The target's window, scaled.
    pub peer_window: u32,
    pub window_full: bool,

    pub dup_acks: u8,
    pub last_resp: Option<(u32, u32)>,
    /// IP id of the last packet sent (made-up packets use the next one).
    pub ip_id: u16,

    pub created: Instant,
    /// Time of the last response (or of creation).
    pub last_resp_at: Instant,
    /// When this connection's first SYN went out (handshake latency), until the SYN-ACK.
    pub syn_at: Option<Instant>,
    /// When the current request's first segment went out, until the first response payload.
    pub req_at: Option<Instant>,

    /// When a hole in the captured stream was first hit.
    pub lost_since: Option<Instant>,

    // Deadlines.
    pub t_rto: Option<Instant>,
    pub t_delay: Option<Instant>,
    pub t_reconstruct: Option<Instant>,
    pub t_syn: Option<Instant>,
    pub syn_backoff: Duration,
    pub t_establish: Option<Instant>,
    /// Waiting for the target's FIN after sending the client's.
    pub t_linger: Option<Instant>,
    pub t_time_wait: Option<Instant>,
    /// The deadline of this session's live heap entry.
    pub scheduled: Option<Instant>,
}

impl Session {
    /// A new session with nothing buffered.
    pub fn new(
        now: Instant,
        key: u64,
        gen: u32,
        client_ip: Ipv4Addr,
        client_port: u16,
        target: usize,
        rtt: Duration,
    ) -> Session {
        Session {
            key,
            gen,
            client_ip,
            client_port,
            target,
            head: NIL,
            tail: NIL,
            unsent: NIL,
            last_sent: NIL,
            segs: 0,
            buffered: 0,
            phase: Phase::Closed,
            established: false,
            sent_request: false,
            awaiting: false,
            server_fin: false,
            client_fin: false,
            over: false,
            dead: false,
            tw_resp_seen: false,
            syn_seen: false,
            syn_seq: 0,
            fake: false,
            reconnect: false,
            syn_out_seq: 0,
            syn_out_id: 0,
            nxt: 0,
            ack: 0,
            rep_ack: 0,
            max_end: 0,
            last_ack_sent: None,
            greeting_received: false,
            resp_data: false,
            resp_full: false,
            retransmitted: false,
            rtt,
            rtt_start: None,
            ts_on: false,
            ts_value: 0,
            ts_ec_r: 0,
            wscale: 0,
            peer_window: 65535,
            window_full: false,
            dup_acks: 0,
            last_resp: None,
            ip_id: 0,
            created: now,
            last_resp_at: now,
            syn_at: None,
            req_at: None,

            lost_since: None,
            t_rto: None,
            t_delay: None,
            t_reconstruct: None,
            t_syn: None,
            syn_backoff: Duration::ZERO,
            t_establish: None,
            t_linger: None,
            t_time_wait: None,
            scheduled: None,
        }
    }

    /// Return whether the rtt is short enough for LAN mode (no artificial delays).
    pub fn lan(&self) -> bool {
        self.rtt <= Duration::from_millis(1)
    }

    /// Cancel every deadline but time-wait.
    pub fn cancel_timers(&mut self) {
        self.t_rto = None;
        self.t_delay = None;
        self.t_reconstruct = None;
        self.t_syn = None;
        self.t_establish = None;
        self.t_linger = None;
    }

    /// Return the earliest of the explicit deadlines.
    pub fn earliest_timer(&self) -> Option<Instant> {
        [self.t_rto, self.t_delay, self.t_reconstruct, self.t_syn, self.t_establish, self.t_linger, self.t_time_wait]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Return whether sequence number `a` is before `b` (mod 2^32).
#[inline]
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Return whether sequence number `a` is after `b` (mod 2^32).
#[inline]
pub(crate) fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_order() {
        assert!(before(1, 2) && !before(2, 2) && !before(3, 2));
        assert!(before(u32::MAX, 0) && after(0, u32::MAX));
        assert!(after(5, u32::MAX - 5));
    }
}
