//! The engine: event entry points, the session lifecycle, and the per-packet rules.
//!
//! [`Engine`] owns the table, the timer heap and the slab of sessions; `Core` owns everything
//! a session's logic touches besides the session itself (configuration, targets, the segment
//! pool, counters). An event takes the session out of its slot, runs `Core` logic on it, puts
//! it back and then removes it (if it died), reorders the LRU and reschedules its timer. That
//! keeps the borrows simple and makes every removal happen in one place.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::build::{self, Endpoints, Fake, FAKE_WINDOW};
use super::pool::{self, Pool, Seg, NIL};
use super::response::ResponseHeader;
use super::state::{after, before, Phase, Session};
use super::table::{key, Key, Table};
use super::timer::Timers;
use super::{Config, Counters, Latency, Output, Target};
use crate::wire::parse::{Family, Parsed};
use crate::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN};
use crate::wire::{ipv4, ipv6, tcp, IPPROTO_TCP};

/// The smallest rtt used for timers (rtt ≤ 1 ms is LAN mode).
const MS: Duration = Duration::from_millis(1);
/// The smallest timer delay: a timer armed while timers run is never due in the same run.
const MIN_DELAY: Duration = Duration::from_micros(1);
/// How long packets older than the captured SYN are discarded (§3.11).
/// Holes one session skips in one timer run (the rest at its next run: a bounded round).
const MAX_SKIPS_PER_ROUND: u32 = 64;
/// How long the target must have been silent before a held client RST goes (see `rst_early`).
const RST_QUIET: Duration = Duration::from_millis(50);
/// The longest a client RST is held for the target to answer what was sent before it.
const RST_HOLD: Duration = Duration::from_secs(5);
const GUARD: Duration = Duration::from_secs(600);
/// A forward jump this large in the captured stream means the tuple was reused (§3.11).
const HOP: u32 = 1 << 24;
/// Above this many buffered segments the delayed-ACK path halves the rtt (§3.8).
const MANY_SEGS: u32 = 64;
/// How far an out-of-order client segment may be walked to its place in the unsent list.
const MAX_REORDER_WALK: u32 = 256;

/// What [`Core::insert`] did with a captured segment.
enum Insert {
    /// Buffered.
    Stored,
    /// Not buffered (a duplicate, or the session ended); counted.
    Dropped,
    /// The pool has no room: nothing changed.
    PoolFull,
}

/// The worker's pool has no room for a segment.
struct PoolFull;
/// Extra quiet delayed-ACK periods a response whose last data came without PSH gets before it
/// counts as complete (see `delay_timer`).
pub(crate) const MORE_WAITS: u8 = 16;

/// Return `now + d`, at least [`MIN_DELAY`] later.
fn at(now: Instant, d: Duration) -> Instant {
    now + d.max(MIN_DELAY)
}

/// A captured segment (one piece after the MTU split), before it is stored.
#[derive(Clone, Copy)]
struct Incoming<'a> {
    /// The IPv4 header with its options, or the fixed IPv6 header (extension headers skipped).
    ip_hdr: &'a [u8],
    tcp_hdr: &'a [u8],
    payload: &'a [u8],
    /// The client as the session names it: the captured source, or its substitute.
    src: IpAddr,
    sport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    /// The IPv4 ident (0 for IPv6 captures).
    ip_id: u16,
}

impl Incoming<'_> {
    /// Return whether the segment was captured over IPv6.
    fn v6(&self) -> bool {
        build::stored_v6(self.ip_hdr)
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn end(&self) -> u32 {
        self.seq
            .wrapping_add(self.payload.len() as u32)
            .wrapping_add(u32::from(self.has(SYN)))
            .wrapping_add(u32::from(self.has(FIN)))
    }
}

/// Read a client frame afresh from its own bytes (`parsed` only locates the IP header), so a
/// `Parsed` that does not match the frame cannot cause a panic.
fn read_client<'a>(frame: &'a [u8], parsed: &Parsed) -> Option<Incoming<'a>> {
    let l3 = parsed.l3_offset;
    let (ip_hdr, l4, end, src, ip_id) = match parsed.family {
        Family::V4 => {
            let ip = ipv4::Packet::new_checked(frame.get(l3..)?).ok()?;
            if ip.protocol() != IPPROTO_TCP || ip.is_fragment() {
                return None;
            }
            let l4 = l3 + usize::from(ip.header_len());
            (&frame[l3..l4], l4, l3 + usize::from(ip.total_len()), IpAddr::V4(ip.src_addr()), ip.ident())
        }
        Family::V6 => {
            let ip = ipv6::Packet::new_checked(frame.get(l3..)?).ok()?;
            let Ok(ipv6::Upper::Found { next_header: IPPROTO_TCP, offset }) = ip.upper_layer() else {
                return None;
            };
            let end = l3 + ipv6::HEADER_LEN + usize::from(ip.payload_len());
            // Extension headers are not stored: the fixed header is (its next header is fixed up).
            (&frame[l3..l3 + ipv6::HEADER_LEN], l3 + offset, end, IpAddr::V6(ip.src_addr()), 0)
        }
    };
    let t = tcp::Packet::new_checked(frame.get(l4..end)?).ok()?;
    let data = l4 + usize::from(t.header_len());
    let flags = t.flags();
    Some(Incoming {
        ip_hdr,
        tcp_hdr: &frame[l4..data],
        // A SYN's or RST's payload is not replayed (no TCP Fast Open, RST diagnostics).
        payload: if flags & (SYN | RST) != 0 { &[] } else { &frame[data..end] },
        src,
        sport: t.src_port(),
        seq: t.seq_number(),
        ack: t.ack_number(),
        flags,
        ip_id,
    })
}

/// The per-worker session engine; see the module docs of [`crate::session`].
pub struct Engine {
    core: Core,
    sessions: Vec<Option<Session>>,
    table: Table,
    timers: Timers,
    next_gen: u32,
    /// Sessions waiting for TX room, in order: `(slot, generation)`; at most one entry per
    /// session (`tx_queued`), so its capacity never grows past the table's.
    blocked: VecDeque<(u32, u32)>,
}

/// Everything session logic needs besides the session.
struct Core {
    cfg: Config,
    targets: Vec<Target>,
    pool: Pool,
    c: Counters,
    /// Origin of the segments' capture stamps.
    epoch: Instant,
    /// How far ahead of the clock the timer being run is (its deadline − now, within
    /// `timer_slack`; zero outside [`Engine::on_timers`]): what it sends is stamped at the real
    /// time, not the deadline.
    early: Duration,
}

impl Engine {
    /// Create an engine for `targets`, preallocating the session table, the timer heap and the
    /// segment pool. Degenerate sizes are raised to 1.
    pub fn new(config: Config, targets: Vec<Target>) -> Self {
        let cap = config.max_sessions.max(1);
        Engine {
            sessions: (0..cap).map(|_| None).collect(),
            table: Table::new(cap),
            timers: Timers::new(2 * cap + 64),
            next_gen: 0,
            blocked: VecDeque::with_capacity(cap),
            core: Core {
                pool: Pool::new(config.pool_bytes),
                cfg: config,
                targets,
                c: Counters::default(),
                epoch: Instant::now(),
                early: Duration::ZERO,
            },
        }
    }

    /// Return the configuration.
    pub fn config(&self) -> &Config {
        &self.core.cfg
    }

    /// Return the counters.
    pub fn counters(&self) -> &Counters {
        &self.core.c
    }

    /// Update the gauges that are not kept up to date as events happen (before publishing).
    pub fn refresh_gauges(&mut self) {
        self.core.c.tx_waiting = self.blocked.len() as u64;
    }

    /// Return the number of sessions in the table (time-wait included).
    pub fn active_sessions(&self) -> usize {
        self.table.len()
    }

    /// Check every session's list bookkeeping against a walk of its list: the segment count,
    /// the buffered and waiting bytes, `unsent` reachable from `head` with `last_sent` right
    /// before it, `tail` last.
    ///
    /// For tests and the fuzz targets (feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        for s in self.sessions.iter().flatten() {
            let (mut n, mut stored, mut waiting, mut payload, mut in_unsent) = (0u32, 0usize, 0usize, 0usize, false);
            let (mut prev, mut i) = (NIL, s.head);
            while i != NIL {
                if i == s.unsent {
                    in_unsent = true;
                    assert_eq!(prev, s.last_sent, "last_sent is unsent's predecessor");
                }
                let seg = self.core.pool.seg(i);
                n += 1;
                stored += seg.stored();
                if in_unsent {
                    waiting += seg.stored();
                    payload += seg.payload_len as usize;
                }
                prev = i;
                i = seg.next;
            }
            assert_eq!(prev, s.tail, "tail is the last segment");
            if s.lazy_until != NIL {
                let (mut i, mut found) = (s.unsent, false);
                while i != NIL && !found {
                    i = self.core.pool.seg(i).next;
                    found = i == s.lazy_until;
                }
                assert!(found, "lazy_until comes after the unsent head");
            }
            assert!(in_unsent || s.unsent == NIL, "unsent is in the list");
            assert_eq!(
                (n, stored, waiting, payload),
                (s.segs, s.buffered, s.waiting, s.waiting_payload),
                "list bookkeeping"
            );
        }
    }

    /// Return the free chunks of the segment pool.
    #[cfg(test)]
    pub(crate) fn core_pool_free_chunks(&self) -> usize {
        self.core.pool.free_chunks()
    }

    /// Return when [`Engine::on_timers`] next has something to do: no later than the earliest
    /// deadline (a deadline that moved later can wake the engine once, early).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|e| e.0)
    }

    /// Return `targets[i]`.
    pub fn target(&self, i: usize) -> Option<&Target> {
        self.core.targets.get(i)
    }

    /// Handle a captured client frame (Ethernet) already parsed by `wire::parse`, for
    /// `targets[target]`, as the session of its own client address and port. Frames that are
    /// not IP TCP, or do not match `parsed`, are counted in `clt_malformed`; a client of the
    /// other family than the target's in `clt_family_mismatch`.
    pub fn on_client(&mut self, now: Instant, target: usize, parsed: &Parsed, frame: &[u8], out: &mut dyn Output) {
        self.client_frame(now, target, None, parsed, frame, out);
    }

    /// Handle a captured client frame as [`Engine::on_client`] does, as the session of `client`
    /// (`-n`, `-c`, `-f`: the worker's tuple allocator gave it): every frame of the session is
    /// sent from `client`, registered under it, and built in its family, which must be the
    /// target's — a frame captured in the other family is translated (see the module docs).
    pub fn on_client_as(
        &mut self,
        now: Instant,
        target: usize,
        client: SocketAddr,
        parsed: &Parsed,
        frame: &[u8],
        out: &mut dyn Output,
    ) {
        self.client_frame(now, target, Some(client), parsed, frame, out);
    }

    fn client_frame(
        &mut self,
        now: Instant,
        target: usize,
        client: Option<SocketAddr>,
        parsed: &Parsed,
        frame: &[u8],
        out: &mut dyn Output,
    ) {
        let Some(mut inc) = read_client(frame, parsed).filter(|_| target < self.core.targets.len()) else {
            self.core.c.clt_malformed += 1;
            return;
        };
        if let Some(c) = client {
            inc.src = c.ip();
            inc.sport = c.port();
        }
        if inc.src.is_ipv6() != self.core.targets[target].ip.is_ipv6() {
            self.core.c.clt_family_mismatch += 1;
            return;
        }
        // §3.1 step 7: we make our own ACKs.
        let bare = inc.payload.is_empty() && !inc.has(SYN | FIN | RST);
        if bare {
            let k = key(inc.src, inc.sport);
            if let Some(slot) = self.table.get(k) {
                if self.sessions[slot as usize].as_ref().is_some_and(|s| s.established) {
                    self.core.c.clt_pure_ack_suppressed += 1;
                    return;
                }
            }
        }
        let c = &mut self.core.c;
        c.clt_packets += 1;
        c.clt_syn += u64::from(inc.has(SYN));
        c.clt_payload += u64::from(!inc.payload.is_empty());

        self.split_and_handle(now, target, inc, out);
        self.prune_timers();
    }

    /// §3.16: split anything longer than the MTU, then handle each piece.
    fn split_and_handle(&mut self, now: Instant, target: usize, inc: Incoming, out: &mut dyn Output) {
        // The IP header sent: the captured one's length in the same family, else the target's.
        let ihl = build::ip_len_for(self.core.targets[target].ip.is_ipv6(), inc.ip_hdr);
        let ip_len = ihl + inc.tcp_hdr.len() + inc.payload.len();
        if ip_len <= usize::from(self.core.cfg.mtu) {
            self.on_segment(now, target, inc, out);
            return;
        }
        let max = usize::from(self.core.cfg.mtu).saturating_sub(ihl + inc.tcp_hdr.len());
        if max == 0 {
            self.core.c.clt_malformed += 1;
            return;
        }
        self.core.c.split += 1;
        let pieces = inc.payload.len().div_ceil(max);
        for (i, piece) in inc.payload.chunks(max).enumerate() {
            let last = i + 1 == pieces;
            let piece = Incoming {
                payload: piece,
                seq: inc.seq.wrapping_add((i * max) as u32),
                flags: if last { inc.flags } else { inc.flags & !(FIN | PSH) },
                ip_id: inc.ip_id.wrapping_add(i as u16),
                ..inc
            };
            self.on_segment(now, target, piece, out);
        }
    }

    /// Handle a response header returned by intercept.
    pub fn on_response(&mut self, now: Instant, hdr: &ResponseHeader, out: &mut dyn Output) {
        let c = &mut self.core.c;
        c.resp += 1;
        c.resp_payload += u64::from(hdr.payload_len > 0);
        c.resp_fin += u64::from(hdr.has(FIN));
        c.resp_rst += u64::from(hdr.has(RST));
        let k = key(hdr.dst.ip(), hdr.dst.port());
        let Some(slot) = self.table.get(k) else {
            c.unknown_response += 1;
            return;
        };
        let Some(mut s) = self.sessions[slot as usize].take() else {
            return;
        };
        let t = &self.core.targets[s.target];
        if t.ip == hdr.src.ip() && t.port == hdr.src.port() {
            self.core.response(now, &mut s, hdr, out);
        } else {
            self.core.c.unknown_response += 1;
        }
        self.sessions[slot as usize] = Some(s);
        self.settle(slot, true, out);
        self.prune_timers();
    }

    /// Run every due timer. Cheap when nothing is due.
    pub fn on_timers(&mut self, now: Instant, out: &mut dyn Output) {
        let horizon = now + self.core.cfg.timer_slack;
        while let Some(e @ (when, slot, _)) = self.timers.pop_due(horizon) {
            if !self.live(e) {
                continue;
            }
            let Some(mut s) = self.sessions[slot as usize].take() else {
                continue;
            };
            s.scheduled = None;
            // A deadline taken early (within the slack, while the worker is awake anyway) runs
            // as at its own time: what it re-arms counts from there, so a chain of timers (the
            // delayed ACK, then the response's end) never drifts earlier than its schedule.
            let at = when.max(now);
            self.core.early = at - now;
            self.core.timers(at, &mut s, out);
            self.core.early = Duration::ZERO;
            self.sessions[slot as usize] = Some(s);
            self.settle(slot, false, out);
        }
        self.resume_blocked(now, out);
        self.prune_timers();
    }

    /// Return whether sessions wait for TX room (the worker keeps polling while they do).
    pub fn tx_pending(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Let the sessions that waited for TX room send, in the order they blocked, while the output
    /// is ready.
    fn resume_blocked(&mut self, now: Instant, out: &mut dyn Output) {
        while let Some(&(slot, gen)) = self.blocked.front() {
            if !out.ready() {
                return;
            }
            self.blocked.pop_front();
            let Some(mut s) = self.sessions[slot as usize].take() else { continue };
            if s.gen == gen {
                s.tx_queued = false;
                if s.tx_blocked {
                    s.tx_blocked = false;
                    self.core.drain(now, &mut s, out);
                }
            }
            self.sessions[slot as usize] = Some(s);
            self.settle(slot, false, out);
        }
    }

    /// Return whether a heap entry is the live one of its session.
    fn live(&self, (when, slot, gen): (Instant, u32, u32)) -> bool {
        self.sessions[slot as usize].as_ref().is_some_and(|s| s.gen == gen && s.scheduled == Some(when))
    }

    /// Pop stale entries off the top of the heap, so that its top is the next deadline.
    fn prune_timers(&mut self) {
        while let Some(e) = self.timers.peek() {
            if self.live(e) {
                break;
            }
            self.timers.pop();
        }
    }

    /// Handle one segment (a whole captured packet, or one piece of a split one).
    fn on_segment(&mut self, now: Instant, target: usize, inc: Incoming, out: &mut dyn Output) {
        let k = key(inc.src, inc.sport);
        let mut rtt = self.core.cfg.default_rtt.unwrap_or(MS);
        let mut slot = self.table.get(k);
        let raw = inc;
        let mut inc = inc;
        if let Some(i) = slot {
            let Some(s) = self.sessions[i as usize].as_mut() else {
                return;
            };
            // Past a skipped hole, the session's stream is moved back (a SYN starts a new one).
            if !inc.has(SYN) {
                inc.seq = inc.seq.wrapping_sub(s.seq_shift);
            }
            let new_data = !inc.payload.is_empty() && !before(inc.seq, s.max_end);
            let replace = if s.over {
                if inc.has(SYN) || new_data {
                    Some(false)
                } else {
                    self.core.c.clt_time_wait += 1;
                    return;
                }
            } else if inc.has(SYN) {
                if s.syn_seen && inc.seq == s.syn_seq {
                    self.core.c.clt_retrans += 1;
                    return;
                }
                Some(true)
            } else if new_data && (HOP..1 << 31).contains(&inc.seq.wrapping_sub(s.max_end)) {
                Some(true)
            } else {
                None
            };
            if let Some(port_reuse) = replace {
                rtt = self.core.cfg.default_rtt.unwrap_or(s.rtt);
                if port_reuse {
                    self.core.c.port_reuse += 1;
                }
                self.abort(i, out);
                slot = None;
                inc = raw;
            }
        }
        let slot = match slot {
            Some(i) => i,
            None => {
                if !inc.has(SYN) && inc.payload.is_empty() {
                    self.core.c.clt_no_session += 1;
                    return;
                }
                if !inc.has(SYN) && self.core.cfg.only_syn_sessions {
                    self.core.c.clt_no_syn += 1;
                    return;
                }
                self.create(now, k, target, &inc, rtt, out)
            }
        };
        let Some(mut s) = self.sessions[slot as usize].take() else {
            return;
        };
        while self.core.client_segment(now, &mut s, &inc, out).is_err() {
            // The pool is full: end the session with the largest backlog (this one, if no
            // other has more) and try again.
            self.core.c.pool_exhausted += 1;
            match self.largest_backlog(s.buffered) {
                Some(victim) => {
                    self.abort(victim, out);
                    self.core.c.obsolete += 1;
                }
                None => {
                    self.core.obsolete(now, &mut s, out);
                    break;
                }
            }
        }
        self.sessions[slot as usize] = Some(s);
        self.settle(slot, true, out);
    }

    /// The slot of the session with the most buffered bytes, if it has more than `than` (the
    /// session being handled is out of its slot, so never a candidate). A scan of the table: it
    /// runs only when the pool is full, and frees the most memory per scan.
    fn largest_backlog(&self, than: usize) -> Option<u32> {
        self.sessions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| !s.over && s.buffered > than).map(|s| (s.buffered, i as u32)))
            .max()
            .map(|(_, i)| i)
    }

    /// Create a session for `inc` (evicting the least recently active one if the table is
    /// full) and return its slot.
    fn create(
        &mut self,
        now: Instant,
        k: Key,
        target: usize,
        inc: &Incoming,
        rtt: Duration,
        out: &mut dyn Output,
    ) -> u32 {
        if self.table.len() == self.table.capacity() {
            if let Some(victim) = self.table.lru() {
                self.abort(victim, out);
                self.core.c.evicted += 1;
            }
        }
        let slot = self.table.insert(k).expect("a slot is free after eviction");
        self.next_gen = self.next_gen.wrapping_add(1);
        let mut s = Session::new(now, k, self.next_gen, inc.src, inc.sport, target, rtt);
        s.max_end = inc.end();
        self.core.c.ipv6_sessions += u64::from(inc.src.is_ipv6());
        self.core.c.translated_sessions += u64::from(inc.src.is_ipv6() != inc.v6());
        if inc.has(SYN) {
            s.syn_seen = true;
            s.syn_seq = inc.seq;
            if self.core.cfg.default_rtt.is_none() {
                s.rtt_start = Some(now);
            }
        }
        self.sessions[slot as usize] = Some(s);
        self.core.c.active = self.table.len() as u64;
        slot
    }

    /// Delete the session in `slot` at once, with the passive RST if it had not ended.
    fn abort(&mut self, slot: u32, out: &mut dyn Output) {
        if let Some(mut s) = self.sessions[slot as usize].take() {
            if !s.over && s.phase != Phase::Closed {
                self.core.passive_rst(&mut s, out);
            }
            self.sessions[slot as usize] = Some(s);
        }
        self.remove(slot, out);
    }

    /// Delete the session in `slot` and free its segments; a registered session's intercepts
    /// are told (CLIENT_DEL).
    fn remove(&mut self, slot: u32, out: &mut dyn Output) {
        if let Some(mut s) = self.sessions[slot as usize].take() {
            self.core.free_all(&mut s);
            self.table.remove(s.key, slot);
            self.core.c.released += 1;
            self.core.c.active = self.table.len() as u64;
            if s.registered {
                out.client_del(SocketAddr::new(s.client_ip, s.client_port), self.core.targets[s.target].addr());
            }
        }
    }

    /// After an event: remove a dead session, or update its LRU position and wake-up.
    fn settle(&mut self, slot: u32, active: bool, out: &mut dyn Output) {
        let Some(s) = self.sessions[slot as usize].as_ref() else {
            return;
        };
        if s.dead {
            self.remove(slot, out);
            return;
        }
        if s.tx_blocked && !s.tx_queued {
            let gen = s.gen;
            if let Some(s) = self.sessions[slot as usize].as_mut() {
                s.tx_queued = true;
            }
            self.blocked.push_back((slot, gen));
        }
        let Some(s) = self.sessions[slot as usize].as_ref() else {
            return;
        };
        if s.over {
            self.table.demote(slot);
        } else if active {
            self.table.touch(slot);
        }
        self.reschedule(slot);
    }

    /// Make sure the heap holds an entry no later than the session's next deadline.
    fn reschedule(&mut self, slot: u32) {
        let Some(s) = self.sessions[slot as usize].as_mut() else {
            return;
        };
        let Some(w) = self.core.next_wake(s) else {
            return;
        };
        if s.scheduled.is_some_and(|d| d <= w) {
            return;
        }
        if self.timers.push((w, slot, s.gen)) {
            s.scheduled = Some(w);
        } else {
            self.rebuild_timers();
        }
    }

    /// Rebuild the heap with one entry per session (drops every stale entry).
    fn rebuild_timers(&mut self) {
        self.timers.clear();
        for (slot, s) in self.sessions.iter_mut().enumerate() {
            let Some(s) = s.as_mut() else { continue };
            s.scheduled = None;
            if let Some(w) = self.core.next_wake(s) {
                if self.timers.push((w, slot as u32, s.gen)) {
                    s.scheduled = Some(w);
                }
            }
        }
    }
}

/// Whether a response of this IP total length is "full" (§3.8).
fn full_size(total_len: u16, mtu: u16) -> bool {
    matches!(total_len, 576 | 1492 | 1500) || total_len == mtu || total_len >= 2048
}

impl Core {
    // ---------------------------------------------------------------- sending

    fn endpoints(&self, s: &Session) -> Endpoints {
        let t = &self.targets[s.target];
        Endpoints {
            src_mac: t.src_mac,
            dst_mac: t.dst_mac,
            src_ip: s.client_ip,
            dst_ip: t.ip,
            src_port: s.client_port,
            dst_port: t.port,
        }
    }

    /// Count a transmit attempt.
    fn account(&mut self, sent: bool, too_small: bool, flags: u8, payload: bool, first: bool) {
        let c = &mut self.c;
        if !sent {
            c.tx_no_buffer += 1;
        } else if too_small {
            c.tx_buffer_too_small += 1;
        } else {
            c.sent += 1;
            c.sent_syn += u64::from(flags & SYN != 0);
            c.sent_fin += u64::from(flags & FIN != 0);
            c.sent_rst += u64::from(flags & RST != 0);
            c.sent_payload += u64::from(payload && first);
        }
    }

    /// The MSS option of a synthesized SYN: the target's family's (IPv6 headers are longer).
    fn fake_mss(&self, s: &Session) -> u16 {
        if self.targets[s.target].ip.is_ipv6() {
            self.cfg.mss_v6
        } else {
            self.cfg.mss
        }
    }

    /// Transmit a made-up packet.
    fn fake(&mut self, s: &Session, f: Fake, out: &mut dyn Output) {
        let e = self.endpoints(s);
        let mut too_small = false;
        let sent = out.transmit(&mut |buf| {
            let n = build::fake(buf, &e, &f);
            too_small = n == 0;
            n
        });
        self.account(sent, too_small, f.flags, false, true);
    }

    /// Transmit a made-up ACK (with timestamps if negotiated) of `seq` / `target_ack_seq`.
    fn fake_ack(&mut self, s: &mut Session, seq: u32, out: &mut dyn Output) {
        s.ip_id = s.ip_id.wrapping_add(1);
        let f = Fake {
            id: s.ip_id,
            seq,
            ack: s.ack,
            flags: ACK,
            mss: None,
            ts: s.ts_on.then_some((s.ts_value, s.ts_ec_r)),
        };
        self.fake(s, f, out);
    }

    /// Transmit a made-up RST+ACK.
    fn fake_rst(&mut self, s: &mut Session, seq: u32, ack: u32, out: &mut dyn Output) {
        s.ip_id = s.ip_id.wrapping_add(1);
        let f = Fake { id: s.ip_id, seq, ack, flags: RST | ACK, mss: None, ts: None };
        self.fake(s, f, out);
    }

    /// The passive RST that ends a session (§3.9).
    fn passive_rst(&mut self, s: &mut Session, out: &mut dyn Output) {
        let seq = s.nxt.wrapping_sub(u32::from(s.client_fin));
        self.fake_rst(s, seq, s.ack, out);
    }

    /// Transmit stored segment `d`: at `seq` (default: its first unsent byte), with the ack,
    /// window and timestamps rewritten. `first` is false for retransmissions.
    fn send_seg(&mut self, s: &mut Session, d: u32, seq: Option<u32>, first: bool, out: &mut dyn Output) {
        let seg = *self.pool.seg(d);
        let (ihl, thl) = (usize::from(seg.ip_hlen), usize::from(seg.tcp_hlen));
        let mut ip = [0u8; 60];
        let mut th = [0u8; 60];
        self.pool.read(d, 0, &mut ip[..ihl]);
        self.pool.read(d, ihl, &mut th[..thl]);
        let th = &mut th[..thl];
        // The header was stored from a checked view, so its data offset is `thl`.
        let mut t = tcp::Packet::new_unchecked(&mut *th);
        t.set_seq_number(seq.unwrap_or(seg.start()));
        if seg.any(ACK) {
            t.set_ack_number(s.ack);
        }
        if s.fake {
            t.set_window(FAKE_WINDOW);
        }
        // SACK blocks name sequence numbers of the online server, meaningless to the target.
        t.nop_out_options(tcp::kind::SACK);
        if s.ts_on {
            if let Some((at, tsval, _)) = t.find_timestamps() {
                let tsval = if before(tsval, s.ts_value) {
                    s.ts_value
                } else {
                    s.ts_value = tsval;
                    tsval
                };
                t.set_timestamps(at, tsval, s.ts_ec_r);
            }
        }
        let plen = seg.len() as usize;
        let poff = ihl + thl + seg.skip as usize;
        let e = self.endpoints(s);
        let captured_v6 = build::stored_v6(&ip[..ihl]);
        if e.v6() && !captured_v6 && seg.any(SYN) {
            // Translated to IPv6: the captured MSS (an IPv4 client's) must leave room for the
            // 20 more bytes of header.
            let fit = self.cfg.mtu.saturating_sub((ipv6::HEADER_LEN + tcp::MIN_HEADER_LEN) as u16);
            let t = tcp::Packet::new_unchecked(&*th);
            if let Some(r) = t.find_option(tcp::kind::MSS).filter(|r| r.len() == 4) {
                let mss = u16::from_be_bytes([th[r.start + 2], th[r.start + 3]]);
                th[r.start + 2..r.end].copy_from_slice(&mss.min(fit).to_be_bytes());
            }
        }
        // An IPv4 header made from an IPv6 capture takes the session's next ident.
        let id = if captured_v6 {
            s.ip_id = s.ip_id.wrapping_add(1);
            s.ip_id
        } else {
            seg.ip_id
        };
        let pool = &self.pool;
        let mut too_small = false;
        let sent = out.transmit(&mut |buf| {
            let n = build::captured(buf, &e, &ip[..ihl], id, th, plen, |dst| pool.read(d, poff, dst));
            too_small = n == 0;
            n
        });
        self.account(sent, too_small, seg.flags, plen > 0, first);
        if first {
            s.ip_id = id;
            if seg.any(ACK) {
                s.last_ack_sent = Some(seg.ack);
                s.resp_start = s.ack;
            }
        }
    }

    /// Send the unsent head `d` for the first time and advance past it.
    fn send_next(&mut self, now: Instant, s: &mut Session, d: u32, out: &mut dyn Output) {
        self.send_seg(s, d, None, true, out);
        let seg = *self.pool.seg(d);
        // Latency stamps are real time (a timer run early has `now` at its deadline).
        let sent = now - self.early;
        if seg.len() > 0 && s.req_at.is_none() {
            s.req_at = Some(sent);
        }
        if seg.len() > 0 && s.rtt_probe.is_none() {
            s.rtt_probe = Some((seg.end(), sent));
        }
        if after(seg.end(), s.nxt) {
            s.nxt = seg.end();
        }
        if seg.len() > 0 || seg.any(FIN) {
            s.t_rto = Some(at(now, self.cfg.rto));
        }
        if seg.len() > 0 || seg.any(SYN | FIN) {
            // Kept for retransmission until acked.
            s.last_sent = d;
            s.unsent = seg.next;
            s.waiting -= seg.stored();
            s.waiting_payload -= seg.payload_len as usize;
            self.new_head(s);
        } else {
            self.unlink(s, s.last_sent, d);
        }
    }

    /// Retransmit the first sent segment the target has not fully acked; false if none.
    fn retransmit(&mut self, s: &mut Session, out: &mut dyn Output) -> bool {
        let mut i = s.head;
        while i != NIL && i != s.unsent {
            let seg = *self.pool.seg(i);
            if after(seg.end(), s.rep_ack) && !seg.any(SYN) {
                self.send_seg(s, i, None, false, out);
                self.c.retransmit += 1;
                s.retransmitted = true;
                // Karn's rule: an ack after a retransmission says nothing of the round trip.
                s.rtt_probe = None;
                return true;
            }
            i = seg.next;
        }
        false
    }

    /// Send CLIENT_ADD before a new connection's SYN; on failure the session dies.
    fn open(&mut self, s: &mut Session, out: &mut dyn Output) -> bool {
        let t = self.targets[s.target].addr();
        if out.client_add(SocketAddr::new(s.client_ip, s.client_port), t) {
            s.registered = true;
            true
        } else {
            self.c.client_add_failed += 1;
            s.dead = true;
            false
        }
    }

    fn arm_syn(&mut self, now: Instant, s: &mut Session) {
        s.phase = Phase::SynSent;
        // Measured from the first SYN: a SYN retransmission is part of the handshake's latency.
        s.syn_at = Some(now);
        s.syn_backoff = self.cfg.syn_rto;
        s.t_syn = Some(at(now, self.cfg.syn_rto));
        s.t_establish = Some(at(now, self.cfg.establish_timeout));
    }

    // ---------------------------------------------------------------- the segment list

    /// Unlink segment `d` (whose predecessor is `prev`) and free it.
    fn unlink(&mut self, s: &mut Session, prev: u32, d: u32) {
        let seg = *self.pool.seg(d);
        if prev == NIL {
            s.head = seg.next;
        } else {
            self.pool.seg_mut(prev).next = seg.next;
        }
        if s.tail == d {
            s.tail = prev;
        }
        if s.unsent == d {
            s.unsent = seg.next;
            s.waiting -= seg.stored();
            s.waiting_payload -= seg.payload_len as usize;
            self.new_head(s);
        }
        if s.last_sent == d {
            s.last_sent = prev;
        }
        s.segs -= 1;
        s.buffered -= seg.stored();
        self.pool.free(d);
    }

    /// Drop the unsent head `d` as useless.
    fn discard(&mut self, s: &mut Session, d: u32) {
        self.c.clt_discarded += 1;
        self.unlink(s, s.last_sent, d);
    }

    /// Free every segment of `s`.
    fn free_all(&mut self, s: &mut Session) {
        let mut i = s.head;
        while i != NIL {
            let next = self.pool.seg(i).next;
            self.pool.free(i);
            i = next;
        }
        s.head = NIL;
        s.tail = NIL;
        s.unsent = NIL;
        s.last_sent = NIL;
        s.lazy_until = NIL;
        s.lazy_shift = 0;
        s.segs = 0;
        s.buffered = 0;
        s.waiting = 0;
        s.waiting_payload = 0;
    }

    /// Free the sent segments the target has fully acked (§3.4 rule 7).
    fn remove_acked(&mut self, s: &mut Session) {
        while s.head != NIL && s.head != s.unsent && !after(self.pool.seg(s.head).end(), s.rep_ack) {
            self.unlink(s, NIL, s.head);
        }
    }

    /// Return the payload bytes of the segments from `i` to the tail (a walk: for the rare
    /// reconstruct).
    fn payload_from(&self, mut i: u32) -> usize {
        let mut n = 0;
        while i != NIL {
            let seg = self.pool.seg(i);
            n += seg.payload_len as usize;
            i = seg.next;
        }
        n
    }

    /// Return whether captured payload is still unsent (kept as a count: this is asked on every
    /// response, and a walk of a long backlog each time made catching up quadratic).
    fn has_unsent_payload(&self, s: &Session) -> bool {
        s.waiting_payload > 0
    }

    /// Buffer a captured segment in processing order.
    fn insert(&mut self, now: Instant, s: &mut Session, inc: &Incoming, out: &mut dyn Output) -> Insert {
        let stored = inc.ip_hdr.len() + inc.tcp_hdr.len() + inc.payload.len();
        let plen = inc.payload.len() as u32;
        // The tail's sequence number as it goes out: a skip's shift may still be pending on it.
        let tail_seq = (s.tail != NIL).then(|| {
            let seq = self.pool.seg(s.tail).seq;
            if s.lazy_until == s.tail {
                seq.wrapping_sub(s.lazy_shift)
            } else {
                seq
            }
        });
        if s.lazy_until != NIL && tail_seq.is_some_and(|t| !after(inc.seq, t)) {
            // Not an append: it is compared with the unsent segments, whose shift must be applied.
            self.apply_lazy_shift(s);
        }
        let same = |seg: &Seg| seg.seq == inc.seq && seg.payload_len == plen && seg.flags == inc.flags;
        // Find the insertion point: after the sent prefix, in sequence order, after equals.
        let (prev, next) = if s.unsent == NIL || tail_seq.is_none_or(|t| !before(inc.seq, t)) {
            let dup = |tail: &Seg| tail.payload_len == plen && tail.flags == inc.flags;
            if tail_seq == Some(inc.seq) && dup(self.pool.seg(s.tail)) {
                self.c.clt_retrans += 1;
                return Insert::Dropped;
            }
            (s.tail, NIL)
        } else {
            // Out of order: walk the unsent segments to its place, but never far (a client
            // sending segments in reverse order would otherwise cost a walk of the whole list per
            // segment). A segment dropped here is missing from the replay; a hole stalls the
            // session until `hole_wait`, as lost capture does.
            let (mut prev, mut cur, mut steps) = (s.last_sent, s.unsent, 0);
            while cur != NIL && !before(inc.seq, self.pool.seg(cur).seq) {
                if same(self.pool.seg(cur)) {
                    self.c.clt_retrans += 1;
                    return Insert::Dropped;
                }
                steps += 1;
                if steps > MAX_REORDER_WALK {
                    self.c.clt_reorder_dropped += 1;
                    return Insert::Dropped;
                }
                prev = cur;
                cur = self.pool.seg(cur).next;
            }
            (prev, cur)
        };
        if s.buffered + stored > self.cfg.max_buffered_bytes {
            self.c.buffer_overflow += 1;
            self.c.obsolete += 1;
            self.end(now, s, out, true);
            return Insert::Dropped;
        }
        let mut ip = [0u8; 60];
        let mut th = [0u8; 60];
        let (ip, th) = (&mut ip[..inc.ip_hdr.len()], &mut th[..inc.tcp_hdr.len()]);
        ip.copy_from_slice(inc.ip_hdr);
        th.copy_from_slice(inc.tcp_hdr);
        if inc.v6() {
            // The extension headers the parse skipped are not stored.
            ipv6::Packet::new_unchecked(&mut *ip).set_next_header(IPPROTO_TCP);
        } else {
            ipv4::Packet::new_unchecked(&mut *ip).set_ident(inc.ip_id);
        }
        let mut t = tcp::Packet::new_unchecked(&mut *th);
        t.set_seq_number(inc.seq);
        t.set_flags(inc.flags);
        let meta = Seg {
            next: NIL,
            chunk: NIL,
            seq: inc.seq,
            ack: inc.ack,
            skip: 0,
            payload_len: plen,
            ip_id: inc.ip_id,
            flags: inc.flags,
            ip_hlen: ip.len() as u8,
            tcp_hlen: th.len() as u8,
            captured: pool::stamp(now.saturating_duration_since(self.epoch)),
        };
        let Some(d) = self.pool.alloc(meta, [ip, th, inc.payload]) else {
            return Insert::PoolFull;
        };
        self.pool.seg_mut(d).next = next;
        if prev == NIL {
            s.head = d;
        } else {
            self.pool.seg_mut(prev).next = d;
        }
        if next == NIL {
            s.tail = d;
        }
        if s.unsent == next {
            s.unsent = d;
        }
        s.segs += 1;
        s.buffered += stored;
        // A new segment is always in the unsent part of the list.
        s.waiting += stored;
        s.waiting_payload += plen as usize;
        if after(inc.end(), s.max_end) {
            s.max_end = inc.end();
        }
        Insert::Stored
    }

    // ---------------------------------------------------------------- client side

    /// Buffer a client segment and release what the rules allow. `Err(PoolFull)`: nothing was
    /// changed; the caller frees pool memory and calls again.
    fn client_segment(
        &mut self,
        now: Instant,
        s: &mut Session,
        inc: &Incoming,
        out: &mut dyn Output,
    ) -> Result<(), PoolFull> {
        if let Some(t0) = s.rtt_start {
            if !inc.has(SYN) {
                // §3.8: the clock runs from the SYN to the next client packet.
                s.rtt = now.saturating_duration_since(t0);
                s.rtt_start = None;
            }
        }
        if s.syn_seen && !inc.has(SYN) && now.saturating_duration_since(s.created) < GUARD && before(inc.seq, s.syn_seq)
        {
            self.c.clt_stale += 1;
            return Ok(());
        }
        if s.phase != Phase::Closed
            && !inc.has(SYN | RST)
            && (!inc.payload.is_empty() || inc.has(FIN))
            && !after(inc.end(), s.nxt)
        {
            self.c.clt_retrans += 1;
            return Ok(());
        }
        match self.insert(now, s, inc, out) {
            Insert::Stored => self.drain(now, s, out),
            Insert::Dropped => {}
            Insert::PoolFull => return Err(PoolFull),
        }
        Ok(())
    }

    /// Release buffered segments in order while the rules allow (§3.7).
    fn drain(&mut self, now: Instant, s: &mut Session, out: &mut dyn Output) {
        self.maybe_catch_up(now, s);
        while !s.over && !s.dead && s.unsent != NIL {
            if !self.step(now, s, s.unsent, out) {
                break;
            }
        }
        if s.unsent == NIL {
            // Caught up: wait for each response again.
            s.backlog_since = None;
            s.catching_up = false;
        } else {
            s.backlog_since.get_or_insert(now);
        }
    }

    /// Start a catch-up when the session has fallen behind its capture (see
    /// [`CatchUp`](super::CatchUp)): once a request went out and the handshake is done, unsent
    /// bytes over the byte threshold or a segment waiting longer than the lag threshold.
    fn maybe_catch_up(&mut self, now: Instant, s: &mut Session) {
        let Some(cu) = self.cfg.catch_up else { return };
        if s.catching_up || !s.sent_request || s.phase != Phase::Confirmed || s.unsent == NIL {
            return;
        }
        let waited = s.backlog_since.is_some_and(|t| now.saturating_duration_since(t) >= cu.lag);
        if s.waiting >= cu.bytes || waited {
            s.catching_up = true;
            self.c.catch_up_entered += 1;
        }
    }

    /// Rule 6: the client had received server data first; wait for the target's greeting.
    fn greeting_wait(&self, s: &Session, seg: &Seg) -> bool {
        !s.sent_request
            && !s.greeting_received
            && seg.any(ACK)
            && seg.start() == s.nxt
            && s.last_ack_sent.is_some_and(|a| after(seg.ack, a))
    }

    /// Apply the rules to the unsent head `d`; true to go on with the next segment.
    fn step(&mut self, now: Instant, s: &mut Session, d: u32, out: &mut dyn Output) -> bool {
        let seg = *self.pool.seg(d);
        // Rule 1: handshake pending, zero window, or rebuilding.
        if s.phase == Phase::SynSent || s.window_full || s.t_reconstruct.is_some() {
            return false;
        }
        // No TX room this round: wait for it (the engine resumes the session), so a captured
        // segment is never consumed without leaving.
        if !out.ready() {
            s.tx_blocked = true;
            return false;
        }
        // Rule 2: RST, held while a response is awaited.
        if seg.any(RST) {
            if s.phase == Phase::Closed {
                self.discard(s, d);
                return true;
            }
            if s.awaiting || self.rst_early(now, s) {
                return false;
            }
            let seq = if before(seg.seq, s.nxt) { s.nxt } else { seg.seq };
            self.send_seg(s, d, Some(seq), true, out);
            self.end(now, s, out, false);
            return false;
        }
        // Rule 3: the captured SYN.
        if seg.any(SYN) {
            if s.phase != Phase::Closed {
                self.discard(s, d);
                return true;
            }
            if !self.open(s, out) {
                return false;
            }
            s.fake = false;
            s.syn_out_seq = seg.seq;
            s.nxt = seg.seq.wrapping_add(1);
            self.send_next(now, s, d, out);
            self.arm_syn(now, s);
            return false;
        }
        // Rule 5: first seen mid-stream (or rebuilding): a fake SYN.
        if s.phase == Phase::Closed {
            if seg.len() == 0 {
                self.discard(s, d);
                return true;
            }
            if !self.open(s, out) {
                return false;
            }
            if s.reconnect {
                self.c.reconnect += 1;
            } else {
                self.c.fake_syn += 1;
            }
            s.reconnect = false;
            s.fake = true;
            let f = Fake {
                id: seg.ip_id.wrapping_sub(2),
                seq: seg.start().wrapping_sub(1),
                ack: 0,
                flags: SYN,
                mss: Some(self.fake_mss(s)),
                ts: None,
            };
            s.ip_id = f.id;
            s.syn_out_seq = f.seq;
            s.syn_out_id = f.id;
            s.nxt = seg.start();
            self.fake(s, f, out);
            self.arm_syn(now, s);
            return false;
        }
        // Rule 4: a bare FIN.
        if seg.any(FIN) && seg.len() == 0 {
            if before(seg.seq, s.nxt) {
                self.c.clt_retrans += 1;
                self.unlink(s, s.last_sent, d);
                return true;
            }
            if self.greeting_wait(s, &seg) {
                return false;
            }
            if s.awaiting {
                if s.last_ack_sent == Some(seg.ack) {
                    // The client saw no more response: the response may be complete.
                    if s.t_delay.is_none() {
                        s.t_delay = Some(at(now, s.rtt.max(MS)));
                    }
                }
                return false;
            }
            if after(seg.seq, s.nxt) {
                s.lost_since.get_or_insert_with(|| self.captured_at(now, &seg));
                return false;
            }
            if s.rep_ack != seg.seq {
                return false;
            }
            if self.fin_early(now, s, &seg) {
                return false;
            }
            self.send_next(now, s, d, out);
            s.client_fin = true;
            if s.server_fin {
                self.end(now, s, out, false);
                return false;
            }
            s.t_linger = Some(at(now, self.cfg.time_wait));
            return true;
        }
        // Rule 6: greeting wait.
        if self.greeting_wait(s, &seg) {
            return false;
        }
        if seg.len() > 0 {
            // Rule 7d: ordering.
            if after(seg.start(), s.nxt) {
                s.lost_since.get_or_insert_with(|| self.captured_at(now, &seg));
                return false;
            }
            if before(seg.start(), s.nxt) {
                let data_end = seg.seq.wrapping_add(seg.payload_len);
                if !after(data_end, s.nxt) {
                    self.c.clt_retrans += 1;
                    self.unlink(s, s.last_sent, d);
                    return true;
                }
                self.pool.seg_mut(d).skip = s.nxt.wrapping_sub(seg.seq);
            }
            let seg = *self.pool.seg(d);
            s.lost_since = None;
            // Rule 7a.
            s.established = true;
            // Rule 7b: flow control against the target's window.
            let in_flight = s.nxt.wrapping_sub(s.rep_ack);
            if in_flight > 0 && u64::from(in_flight) + u64::from(seg.len()) > u64::from(s.peer_window) {
                return false;
            }
            // Rule 7c: pacing; 7e: continuation of the current request.
            if s.awaiting {
                if !self.cfg.wait_response {
                    s.awaiting = false;
                } else if s.last_ack_sent != Some(seg.ack) {
                    // A new request while the previous response is awaited: it waits, unless
                    // the session is catching up.
                    if !s.catching_up {
                        return false;
                    }
                    self.c.catch_up_requests += 1;
                    s.awaiting = false;
                }
            }
            if !s.awaiting {
                // Rule 8: a new request. Its ack covers the previous response.
                s.awaiting = true;
                s.resp_data = false;
                s.t_delay = None;
            }
            s.sent_request = true;
            self.send_next(now, s, d, out);
            return true;
        }
        // Rule 8: the client's 3rd-handshake ACK; anything else bare is dropped.
        if !s.established && seg.start() == s.nxt {
            s.established = true;
            self.send_next(now, s, d, out);
            return true;
        }
        self.discard(s, d);
        true
    }

    // ---------------------------------------------------------------- response side

    /// Handle a response header for session `s`.
    fn response(&mut self, now: Instant, s: &mut Session, h: &ResponseHeader, out: &mut dyn Output) {
        s.last_resp_at = now;
        let plen = u32::from(h.payload_len);
        if s.over {
            // §3.12: the first late response is ignored, later ones get a RST.
            if !s.tw_resp_seen {
                s.tw_resp_seen = true;
            } else if !h.has(RST) {
                self.fake_rst(s, h.ack, h.seq.wrapping_add(plen), out);
            }
            return;
        }
        if h.has(RST) {
            if s.phase == Phase::Confirmed && self.has_unsent_payload(s) {
                self.reconstruct(now, s, out);
            } else {
                // The target reset the connection (or refused it): nothing to reset back.
                s.phase = Phase::Closed;
                self.end(now, s, out, false);
            }
            return;
        }
        if h.has(SYN) {
            if !h.has(ACK) {
                return;
            }
            match s.phase {
                Phase::SynSent if h.ack == s.syn_out_seq.wrapping_add(1) => self.handshake(now, s, h, out),
                // A SYN-ACK for another SYN: a stale connection on the target.
                Phase::SynSent => self.fake_rst(s, h.ack, h.seq.wrapping_add(1), out),
                // Our ACK was lost: the target repeats its SYN-ACK.
                Phase::Confirmed => self.fake_ack(s, s.nxt, out),
                Phase::Closed => {}
            }
            return;
        }
        if plen > 0 && s.phase == Phase::Confirmed {
            if let Some(t) = s.req_at.take() {
                out.latency(Latency::Response, now.saturating_duration_since(t).as_nanos() as u64);
            }
        }
        match s.phase {
            Phase::Closed => return,
            Phase::SynSent => {
                // §3.12: a response of a stale connection before our handshake: reset it and
                // send our SYN again after rtt.
                self.fake_rst(s, h.ack, h.seq.wrapping_add(plen), out);
                s.t_syn = Some(at(now, s.rtt.max(MS)));
                return;
            }
            Phase::Confirmed => {}
        }
        let fin = h.has(FIN);
        // §3.4: target_ack_seq.
        if plen > 0 || fin {
            let end = h.seq.wrapping_add(plen).wrapping_add(u32::from(fin));
            if after(end, s.ack) {
                s.ack = end;
            } else if plen > 0 && !s.lan() {
                // A server retransmission: our ACKs come too late.
                s.rtt = (s.rtt / 2).max(MS);
            }
        } else if after(h.seq, s.ack) {
            s.ack = h.seq;
        }
        // §3.5.
        if s.ts_on {
            if let Some((val, ecr)) = h.timestamps {
                s.ts_ec_r = val;
                if after(ecr, s.ts_value) {
                    s.ts_value = ecr;
                }
            }
        }
        s.peer_window = u32::from(h.window) << s.wscale;
        if h.has(ACK) {
            if let Some((end, sent)) = s.rtt_probe.filter(|(end, _)| !before(h.ack, *end)) {
                let _ = end;
                s.rtt_probe = None;
                out.latency(Latency::ReplayRtt, now.saturating_duration_since(sent).as_nanos() as u64);
            }
            if after(h.ack, s.rep_ack) {
                s.rep_ack = h.ack;
                self.remove_acked(s);
            }
            if after(h.ack, s.nxt) {
                s.nxt = h.ack;
            }
            if !before(s.rep_ack, s.nxt) {
                s.t_rto = None;
            }
        }
        // §3.10: fast retransmit on three duplicate acks.
        let same = s.last_resp == Some((h.seq, h.ack));
        s.last_resp = Some((h.seq, h.ack));
        if same && plen == 0 && !fin && h.has(ACK) && before(h.ack, s.nxt) {
            s.dup_acks += 1;
            if s.dup_acks >= 3 {
                s.dup_acks = 0;
                if self.retransmit(s, out) {
                    s.t_rto = Some(at(now, s.rtt.max(self.cfg.rto)));
                }
            }
        } else if !same {
            s.dup_acks = 0;
        }
        if plen > 0 {
            if s.retransmitted {
                s.retransmitted = false;
                self.c.retrans_ok += 1;
            }
            s.greeting_received = true;
        }
        // §3.15: zero window.
        if h.window == 0 {
            s.window_full = true;
            if plen > 0 {
                self.fake_ack(s, s.nxt, out);
            }
        } else if s.window_full {
            s.window_full = false;
            s.dup_acks = 0;
        }
        if fin {
            self.server_fin(now, s, h, out);
            return;
        }
        if s.client_fin {
            // §3.12: after the client closed, data gets an ACK; we wait for the FIN.
            if plen > 0 {
                self.fake_ack(s, s.nxt, out);
            }
            return;
        }
        if plen > 0 {
            // §3.8: a response is in progress; ACK it after rtt.
            s.awaiting = true;
            s.resp_data = true;
            s.resp_full = full_size(h.total_len, self.cfg.mtu);
            s.resp_more = if h.has(PSH) { 0 } else { MORE_WAITS };
            s.fin_hold = MORE_WAITS;
            s.t_delay = Some(at(now, s.rtt.max(MS)));
            if s.lan() && self.has_unsent_payload(s) {
                // LAN mode: release the next request at once.
                s.awaiting = false;
            }
        }
        self.drain(now, s, out);
    }

    /// The target's SYN-ACK for our SYN: learn its ISN, options and window.
    fn handshake(&mut self, now: Instant, s: &mut Session, h: &ResponseHeader, out: &mut dyn Output) {
        self.c.conns += 1;
        if let Some(t) = s.syn_at.take() {
            out.latency(Latency::Handshake, now.saturating_duration_since(t).as_nanos() as u64);
        }
        s.phase = Phase::Confirmed;
        s.t_syn = None;
        s.t_establish = None;
        s.ack = h.seq.wrapping_add(1);
        s.rep_ack = h.ack;
        s.nxt = h.ack;
        if let Some((val, ecr)) = h.timestamps {
            s.ts_on = true;
            s.ts_ec_r = val;
            // The echo of our SYN's TSval: where the client's clock stands. Not compared with the
            // initial 0: half of all clocks are "before" 0 in sequence arithmetic, and a TSval
            // clamped to 0 would be dropped by the target's PAWS check.
            s.ts_value = ecr;
        }
        s.wscale = h.window_scale.unwrap_or(0).min(14);
        // The window of a SYN-ACK is never scaled.
        s.peer_window = u32::from(h.window);
        s.last_resp = Some((h.seq, h.ack));
        self.remove_acked(s);
        if s.fake {
            // The 3rd-handshake ACK the capture does not have.
            self.fake_ack(s, h.ack, out);
            s.established = true;
        }
        self.drain(now, s, out);
    }

    /// The target closed (§3.12).
    fn server_fin(&mut self, now: Instant, s: &mut Session, h: &ResponseHeader, out: &mut dyn Output) {
        s.server_fin = true;
        if s.client_fin {
            self.fake_ack(s, s.nxt, out);
            self.end(now, s, out, false);
            return;
        }
        self.fake_ack(s, h.ack, out);
        if self.has_unsent_payload(s) {
            self.reconstruct(now, s, out);
            return;
        }
        // No more response data will come: the response is complete.
        s.awaiting = false;
        s.t_delay = None;
        self.drain(now, s, out);
        if !s.over && !s.dead {
            self.fake_rst(s, h.ack, h.seq.wrapping_add(u32::from(h.payload_len)), out);
            self.end(now, s, out, false);
        }
    }

    /// The target closed while captured data is unsent: reset, and replay the rest on a new
    /// connection with the same tuple after rtt (§3.12).
    fn reconstruct(&mut self, now: Instant, s: &mut Session, out: &mut dyn Output) {
        self.passive_rst(s, out);
        self.apply_lazy_shift(s);
        *s = s.reconstructed();
        // Everything buffered is unsent again.
        s.waiting_payload = self.payload_from(s.head);
        s.t_reconstruct = Some(at(now, s.rtt.max(MS)));
    }

    // ---------------------------------------------------------------- ending

    /// End the session: optionally the passive RST, then time-wait (§3.13).
    fn end(&mut self, now: Instant, s: &mut Session, out: &mut dyn Output, rst: bool) {
        if s.over {
            return;
        }
        if rst && s.phase != Phase::Closed {
            self.passive_rst(s, out);
        }
        s.over = true;
        s.cancel_timers();
        self.free_all(s);
        s.t_time_wait = Some(at(now, self.cfg.time_wait));
        self.c.time_wait += 1;
    }

    fn obsolete(&mut self, now: Instant, s: &mut Session, out: &mut dyn Output) {
        self.c.obsolete += 1;
        self.end(now, s, out, true);
    }

    // ---------------------------------------------------------------- timers

    /// When `s` lacks a response for too long (§3.14): -k for an idle session that sent a
    /// request, -t otherwise.
    fn idle_deadline(&self, s: &Session) -> Instant {
        let limit = if s.segs == 0 && s.sent_request { self.cfg.keepalive_timeout } else { self.cfg.session_timeout };
        at(s.last_resp_at, limit)
    }

    /// Return the session's next deadline.
    fn next_wake(&self, s: &Session) -> Option<Instant> {
        if s.over {
            return s.t_time_wait;
        }
        let mut w = self.idle_deadline(s);
        if let Some(t) = s.earliest_timer() {
            w = w.min(t);
        }
        if let Some(l) = s.lost_since {
            w = w.min(at(l, self.cfg.hole_wait));
        }
        Some(w)
    }

    /// Run the session's due deadlines.
    fn timers(&mut self, now: Instant, s: &mut Session, out: &mut dyn Output) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if s.over {
            if due(s.t_time_wait) {
                s.dead = true;
            }
            return;
        }
        if due(s.t_establish) {
            s.t_establish = None;
            if s.phase == Phase::SynSent {
                self.c.establish_timeout += 1;
                s.rtt = MS;
                self.end(now, s, out, true);
                return;
            }
        }
        if due(s.t_syn) {
            s.t_syn = None;
            if s.phase == Phase::SynSent {
                self.resend_syn(s, out);
                s.syn_backoff = s.syn_backoff.saturating_mul(2);
                s.t_syn = Some(at(now, s.syn_backoff));
            }
        }
        if due(s.t_reconstruct) {
            s.t_reconstruct = None;
            self.drain(now, s, out);
        }
        if due(s.t_rto) {
            s.t_rto = None;
            if s.phase == Phase::Confirmed && before(s.rep_ack, s.nxt) && self.retransmit(s, out) {
                s.t_rto = Some(at(now, self.cfg.rto));
            }
        }
        if due(s.t_delay) {
            s.t_delay = None;
            self.delay_timer(now, s, out);
        }
        if due(s.t_linger) {
            // The target never sent its FIN after ours.
            s.t_linger = None;
            self.obsolete(now, s, out);
        }
        if s.over || s.dead {
            return;
        }
        if now >= self.idle_deadline(s) {
            self.obsolete(now, s, out);
        } else {
            // Skipping one hole may bring the next, captured as long ago: skip it too.
            let mut skips = 0;
            while s.lost_since.is_some_and(|l| at(l, self.cfg.hole_wait) <= now) && skips < MAX_SKIPS_PER_ROUND {
                self.skip_hole(now, s, out);
                skips += 1;
            }
        }
    }

    /// When `seg` was captured (to a stamp's tick): the start of the wait at a hole before it,
    /// so a hole found late — after the previous one was skipped — is not waited for again.
    fn captured_at(&self, now: Instant, seg: &Seg) -> Instant {
        let age = seg.age(pool::stamp(now.saturating_duration_since(self.epoch)));
        now.checked_sub(age).unwrap_or(now)
    }

    /// The unsent head moved to the next segment: apply the pending skip shift to it.
    fn new_head(&mut self, s: &mut Session) {
        if s.lazy_until == NIL || s.unsent == NIL {
            return;
        }
        let head = self.pool.seg_mut(s.unsent);
        head.seq = head.seq.wrapping_sub(s.lazy_shift);
        if s.unsent == s.lazy_until {
            s.lazy_until = NIL;
            s.lazy_shift = 0;
        }
    }

    /// Apply the pending skip shift to every unsent segment it is pending for (before the list
    /// is walked by sequence number, or replayed from its head).
    fn apply_lazy_shift(&mut self, s: &mut Session) {
        if s.lazy_until == NIL {
            return;
        }
        let mut i = self.pool.seg(s.unsent).next;
        loop {
            let seg = self.pool.seg_mut(i);
            seg.seq = seg.seq.wrapping_sub(s.lazy_shift);
            if i == s.lazy_until {
                break;
            }
            i = seg.next;
        }
        s.lazy_until = NIL;
        s.lazy_shift = 0;
    }

    /// The hole before the unsent head was not filled in time: move the unsent segments (and
    /// every later capture of the session) back by its size, so the stream goes on at `nxt`.
    fn skip_hole(&mut self, now: Instant, s: &mut Session, out: &mut dyn Output) {
        s.lost_since = None;
        if s.unsent == NIL {
            return;
        }
        let hole = self.pool.seg(s.unsent).seq.wrapping_sub(s.nxt);
        if hole == 0 || hole >= 1 << 31 {
            // Filled meanwhile (or behind us): nothing to skip.
            self.drain(now, s, out);
            return;
        }
        // The head moves now; the segments after it when they become the head (new_head). Those
        // captured since the last skip carry its shift already: add back what lazy_shift
        // will take from them beyond this hole.
        let head = self.pool.seg_mut(s.unsent);
        head.seq = head.seq.wrapping_sub(hole);
        let mut i = if s.lazy_until == NIL { NIL } else { self.pool.seg(s.lazy_until).next };
        while i != NIL {
            let seg = self.pool.seg_mut(i);
            seg.seq = seg.seq.wrapping_add(s.lazy_shift);
            i = seg.next;
        }
        if s.tail == s.unsent {
            s.lazy_until = NIL;
            s.lazy_shift = 0;
        } else {
            s.lazy_until = s.tail;
            s.lazy_shift = s.lazy_shift.wrapping_add(hole);
        }
        s.max_end = s.max_end.wrapping_sub(hole);
        s.seq_shift = s.seq_shift.wrapping_add(hole);
        // The skipped bytes were the client's: it spoke first, whatever the acks of what
        // follows say (no greeting wait, rule 6).
        s.sent_request = true;
        self.c.clt_hole_skipped += 1;
        self.c.clt_hole_bytes += u64::from(hole);
        self.drain(now, s, out);
    }

    /// Retransmit the SYN (captured, or the fake one with its original fields).
    fn resend_syn(&mut self, s: &mut Session, out: &mut dyn Output) {
        self.c.syn_retransmit += 1;
        if s.fake {
            let f = Fake {
                id: s.syn_out_id,
                seq: s.syn_out_seq,
                ack: 0,
                flags: SYN,
                mss: Some(self.fake_mss(s)),
                ts: None,
            };
            self.fake(s, f, out);
        } else if s.head != NIL && self.pool.seg(s.head).any(SYN) {
            self.send_seg(s, s.head, None, false, out);
        }
    }

    /// Whether to hold the client's bare FIN (not a TCPCopy rule): its ack says how much of the
    /// last answer the real client had received from the online server; while the test server
    /// has sent less of its answer (and has not closed), a FIN now would cut it short — nginx
    /// aborts an answer when the FIN arrives. Held for up to `MORE_WAITS` quiet delayed-ACK
    /// periods (each answer segment starts the count again), since the two answers may differ.
    /// This is what keeps a short connection's large answer whole when the test server's next
    /// burst (a GSO super-segment under `--local`) comes back later than the "response complete"
    /// rule expects.
    fn fin_early(&self, now: Instant, s: &mut Session, seg: &Seg) -> bool {
        let Some(start) = s.last_ack_sent else {
            return false;
        };
        let online = seg.ack.wrapping_sub(start);
        let test = s.ack.wrapping_sub(s.resp_start);
        // `online` counts the online server's FIN when it closed first; a wrapped (huge) value
        // is a session whose acks we cannot relate.
        if s.server_fin || s.fin_hold == 0 || online >= 1 << 30 || test.wrapping_add(1) >= online {
            return false;
        }
        s.fin_hold -= 1;
        if s.t_delay.is_none() {
            s.t_delay = Some(at(now, s.rtt.max(MS)));
        }
        true
    }

    /// Whether to hold the client's RST (not a TCPCopy rule): a RST makes the target's kernel
    /// discard what its application has not read yet, and a session that caught up has sent many
    /// requests without waiting for their answers — the "response complete" rule can fire in a
    /// pause between two of them while the rest still sit in the target's socket (wrk's RST at
    /// the end of a run cost each connection ~840 requests in the lab). So the RST waits until
    /// the target has acked everything sent and been silent for [`RST_QUIET`], for at most
    /// [`RST_HOLD`].
    fn rst_early(&self, now: Instant, s: &mut Session) -> bool {
        let held = *s.rst_held.get_or_insert(now);
        if now.saturating_duration_since(held) >= RST_HOLD {
            return false;
        }
        let quiet_at = at(s.last_resp_at, RST_QUIET);
        if s.rep_ack == s.nxt && quiet_at <= now {
            return false;
        }
        // Look again when the target has been quiet long enough (a response or its ack sooner
        // drains the session anyway).
        let again = if quiet_at > now { quiet_at } else { at(now, RST_QUIET) };
        if s.t_delay.is_none_or(|t| t > again) {
            s.t_delay = Some(again);
        }
        true
    }

    /// The delayed-ACK timer (§3.8): ACK new response data, or declare the response complete.
    fn delay_timer(&mut self, now: Instant, s: &mut Session, out: &mut dyn Output) {
        if s.resp_data {
            s.resp_data = false;
            self.fake_ack(s, s.rep_ack, out);
            if !s.lan() && s.segs > MANY_SEGS {
                s.rtt = (s.rtt / 2).max(MS);
            }
            let rtt = s.rtt.max(MS);
            let next = if !s.resp_full || self.has_unsent_payload(s) { rtt / 2 } else { rtt };
            s.t_delay = Some(at(now, next));
        } else if s.resp_more > 0 {
            // The last response data had no PSH: the target stopped for its congestion window,
            // not for lack of data, and waits for our ACK (sent on the previous tick). The answer
            // crosses the channel, which can take longer than a LAN rtt; a GSO super-segment
            // (one 64 KiB header where the wire has 45 segments) makes every such wait a whole
            // round trip. Calling the response complete now would release the next request, or
            // the client's FIN — which makes a server like nginx abort the rest of the answer.
            s.resp_more -= 1;
            s.t_delay = Some(at(now, s.rtt.max(MS)));
        } else {
            s.awaiting = false;
            self.drain(now, s, out);
        }
    }
}
