//! The state of one replayed session.
//!
//! The original keeps a bit set mixing assigned and OR-ed states (reference §3.2); here the
//! same facts are separate fields: `phase` (CLOSED / SYN_SENT / SYN_CONFIRM), `established`
//! (the ESTABLISHED bit), `sent_request` (state ≥ SND_REQ), `awaiting` (a response is awaited;
//! cleared where the original assigns RCV_REP), `server_fin` / `client_fin`, and `over` (the
//! session has ended and lingers in time-wait).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::pool::NIL;
use super::table::Key;

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
    pub key: Key,
    /// Bumped each time the slot gets a new session (stale timer entries are skipped).
    pub gen: u32,
    /// The client as sent to the target (`-c`, `-n`, `-f` applied): the target's family.
    pub client_ip: IpAddr,
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
    /// Stored bytes of the unsent segments (`unsent` to the tail): the backlog.
    pub waiting: usize,
    /// Captured payload bytes of the unsent segments.
    pub waiting_payload: usize,

    pub phase: Phase,
    pub established: bool,
    pub sent_request: bool,
    pub awaiting: bool,
    pub server_fin: bool,
    pub client_fin: bool,
    pub over: bool,
    /// Set when the session must leave the table now (the engine removes it).
    pub dead: bool,
    /// A CLIENT_ADD was queued for it: its removal queues a CLIENT_DEL.
    pub registered: bool,
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
    /// Quiet delayed-ACK periods still to wait before the response counts as complete: the last
    /// response data came without PSH, so the target has more queued (see `delay_timer`).
    pub resp_more: u8,
    /// The target's sequence (our translated ack) when the last client packet went out: the
    /// start of the answer it gets, measured against the client's own ack in its FIN.
    pub resp_start: u32,
    /// Quiet periods a client FIN may still be held while the target has sent less of the last
    /// answer than the real client had received (Rule 4).
    pub fin_hold: u8,
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

    /// Since when the client's RST has been held at the head, waiting for the target to answer
    /// what was sent before it (see `Core::rst_early`).
    pub rst_held: Option<Instant>,

    /// When a hole in the captured stream was first hit.
    pub lost_since: Option<Instant>,
    /// Bytes of the client's stream skipped at unfilled holes (`hole_wait`): captured sequence
    /// numbers are moved back by this much on the way in, so the target sees one contiguous
    /// stream. Kept across a reconstruct (the stored segments are in the moved space).
    pub seq_shift: u32,
    /// A hole skip's shift not yet applied to the unsent segments after the head up to and
    /// including `lazy_until` (NIL: none): each is moved back by `lazy_shift` when it becomes the
    /// head, so a skip costs O(1) however long the backlog behind it (walking the backlog at
    /// every skip took 86 % of a worker's time under lossy catch-up).
    pub lazy_shift: u32,
    /// The last segment `lazy_shift` applies to (NIL: none).
    pub lazy_until: u32,

    /// Sending without waiting for responses until nothing captured is left unsent (the session
    /// fell behind its capture: [`super::CatchUp`]).
    pub catching_up: bool,
    /// Since when captured segments have been waiting unsent (cleared when none is left).
    pub backlog_since: Option<Instant>,
    /// The replay round-trip probe: (end of a request segment sent, when), until the target
    /// acks it; cleared by a retransmission (Karn's rule).
    pub rtt_probe: Option<(u32, Instant)>,
    /// Segments wait for TX room (the output was not ready); the engine resumes the session.
    pub tx_blocked: bool,
    /// The session is in the engine's queue of blocked sessions.
    pub tx_queued: bool,

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
        key: Key,
        gen: u32,
        client_ip: IpAddr,
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
            waiting: 0,
            waiting_payload: 0,
            phase: Phase::Closed,
            established: false,
            sent_request: false,
            awaiting: false,
            server_fin: false,
            client_fin: false,
            over: false,
            dead: false,
            registered: false,
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
            resp_more: 0,
            resp_start: 0,
            fin_hold: 0,
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

            rst_held: None,
            lost_since: None,
            seq_shift: 0,
            lazy_shift: 0,
            lazy_until: NIL,
            catching_up: false,
            backlog_since: None,
            rtt_probe: None,
            tx_blocked: false,
            tx_queued: false,
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

    /// Return the session a reconstruct leaves (§3.12): a new connection to the target, every
    /// field as [`Session::new`] sets it, but for what outlives the connection: the identity,
    /// the buffered segments (all unsent again), the captured SYN, the lifecycle flags, the
    /// pacing and latency clocks, the IP id and the time-wait and heap deadlines.
    pub fn reconstructed(&self) -> Session {
        let fresh =
            Session::new(self.created, self.key, self.gen, self.client_ip, self.client_port, self.target, self.rtt);
        Session {
            // The next fake SYN opens the new connection; everything buffered is replayed on it.
            reconnect: true,
            unsent: self.head,
            head: self.head,
            tail: self.tail,
            segs: self.segs,
            buffered: self.buffered,
            waiting: self.buffered,
            waiting_payload: 0,
            max_end: self.max_end,
            seq_shift: self.seq_shift,
            syn_seen: self.syn_seen,
            syn_seq: self.syn_seq,
            fake: self.fake,
            syn_out_seq: self.syn_out_seq,
            syn_out_id: self.syn_out_id,
            over: self.over,
            dead: self.dead,
            registered: self.registered,
            tw_resp_seen: self.tw_resp_seen,
            resp_full: self.resp_full,
            rtt_start: self.rtt_start,
            ip_id: self.ip_id,
            last_resp_at: self.last_resp_at,
            syn_at: self.syn_at,
            req_at: self.req_at,
            syn_backoff: self.syn_backoff,
            t_time_wait: self.t_time_wait,
            scheduled: self.scheduled,
            backlog_since: self.backlog_since,
            tx_queued: self.tx_queued,
            ..fresh
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
    use std::net::Ipv4Addr;

    /// The reset a reconstruct did field by field before [`Session::reconstructed`].
    fn reconstruct_by_hand(s: &mut Session) {
        s.phase = Phase::Closed;
        s.reconnect = true;
        s.established = false;
        s.sent_request = false;
        s.awaiting = false;
        s.server_fin = false;
        s.client_fin = false;
        s.greeting_received = false;
        s.resp_data = false;
        s.retransmitted = false;
        s.resp_more = 0;
        s.resp_start = 0;
        s.fin_hold = 0;
        s.ts_on = false;
        s.ts_value = 0;
        s.ts_ec_r = 0;
        s.wscale = 0;
        s.peer_window = 65535;
        s.window_full = false;
        s.dup_acks = 0;
        s.last_resp = None;
        s.last_ack_sent = None;
        s.lost_since = None;
        s.nxt = 0;
        s.ack = 0;
        s.rep_ack = 0;
        s.unsent = s.head;
        s.waiting = s.buffered;
        s.waiting_payload = 0;
        s.last_sent = NIL;
        s.catching_up = false;
        s.rtt_probe = None;
        s.tx_blocked = false;
        s.cancel_timers();
    }

    #[test]
    fn reconstructed_equals_the_field_by_field_reset() {
        let t = Instant::now() + Duration::from_secs(1);
        let later = |ms| Some(t + Duration::from_millis(ms));
        let s = Session {
            key: (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 3),
            gen: 2,
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            client_port: 3,
            target: 4,
            head: 5,
            tail: 6,
            unsent: 7,
            last_sent: 8,
            segs: 9,
            buffered: 10,
            waiting: 3,
            waiting_payload: 2,
            phase: Phase::Confirmed,
            established: true,
            sent_request: true,
            awaiting: true,
            server_fin: true,
            client_fin: true,
            over: true,
            dead: true,
            registered: true,
            tw_resp_seen: true,
            syn_seen: true,
            syn_seq: 11,
            fake: true,
            reconnect: false,
            syn_out_seq: 12,
            syn_out_id: 13,
            nxt: 14,
            ack: 15,
            rep_ack: 16,
            max_end: 17,
            last_ack_sent: Some(18),
            greeting_received: true,
            resp_data: true,
            resp_full: true,
            resp_more: 42,
            resp_start: 43,
            fin_hold: 44,
            retransmitted: true,
            rtt: Duration::from_millis(19),
            rtt_start: later(20),
            ts_on: true,
            ts_value: 21,
            ts_ec_r: 22,
            wscale: 23,
            peer_window: 24,
            window_full: true,
            dup_acks: 25,
            last_resp: Some((26, 27)),
            ip_id: 28,
            created: t,
            last_resp_at: t + Duration::from_millis(29),
            syn_at: later(30),
            req_at: later(31),
            lost_since: later(32),
            seq_shift: 44,
            rst_held: None,
            lazy_shift: 0,
            lazy_until: NIL,
            catching_up: true,
            backlog_since: later(42),
            rtt_probe: Some((43, t)),
            tx_blocked: true,
            tx_queued: true,
            t_rto: later(33),
            t_delay: later(34),
            t_reconstruct: later(35),
            t_syn: later(36),
            syn_backoff: Duration::from_millis(37),
            t_establish: later(38),
            t_linger: later(39),
            t_time_wait: later(40),
            scheduled: later(41),
        };
        let mut by_hand = s.clone();
        reconstruct_by_hand(&mut by_hand);
        assert_eq!(format!("{:?}", s.reconstructed()), format!("{by_hand:?}"));
    }

    #[test]
    fn wrapping_order() {
        assert!(before(1, 2) && !before(2, 2) && !before(3, 2));
        assert!(before(u32::MAX, 0) && after(0, u32::MAX));
        assert!(after(5, u32::MAX - 5));
    }
}
