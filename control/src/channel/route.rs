//! The intercept's session routes and its delay table: pure state, time passed in.
//!
//! # Design
//!
//! - **Exact keys.** A [`RouteKey`] is the full (client IP, client port, target IP, target port)
//!   4-tuple, so distinct sessions never collide (the original hashed it into 32 bits and
//!   evicted the oldest of 15 per slot, defect #9).
//! - **Expiry.** A route dies when it has been idle (no CLIENT_ADD, no response routed) for the
//!   idle TTL, a short grace after the target's FIN or RST, or at once on CLIENT_DEL from the
//!   connection that owns it. Expiry is checked exactly on lookup and swept by [`RouteTable::expire`]
//!   through a min-heap of check times; each route has one live heap entry (`next_check`), extra
//!   entries are recognised as stale and skipped, and the heap is rebuilt when stale entries
//!   outnumber live routes, so its size stays O(routes).
//! - **The delay table** keeps the original's semantics (defect #10, keep): a SYN or RST response
//!   with no route yet (the SYN-ACK racing its CLIENT_ADD) is held per key, in order, until the
//!   CLIENT_ADD arrives or the list's TTL (counted from the list's creation) runs out. It is
//!   bounded in total messages and per key, so a flood of unregistered responses costs a fixed
//!   amount of memory.
//! - **Ownership.** The first connection to register a session owns its route while the route
//!   lives: a CLIENT_ADD from another connection takes it over only if the caller's policy says
//!   so (the server allows it when the owner has closed or shares the newcomer's peer address: a
//!   copier's own reconnect), otherwise it is refused and the route stays where it was. The
//!   original let the latest CLIENT_ADD win, so anyone who could reach the port and knew a
//!   4-tuple could divert a session's responses.
//! - **Quota.** Routes are counted per owner; an owner at its quota cannot add more (refreshing
//!   its own routes is always fine), so one connection cannot fill the table.
//! - **Keyed hashing.** Both maps use std's `RandomState`: SipHash-1-3 with a key drawn from the
//!   OS at start, different per run (and per table). A peer that chooses 4-tuples cannot make them
//!   collide; lookups stay O(1) whatever it sends.
//! - Both tables are generic over the owner id, have no I/O and no clock of their own, and are
//!   unit-tested step by step.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::proto::{CopierMsg, HeaderMsg};

/// A session as the channel names it: client (response destination) and target (response source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// The session's client address (after the copier's rewrites), IPv4 or IPv6.
    pub client: SocketAddr,
    /// The session's target address (the client's family).
    pub target: SocketAddr,
}

impl RouteKey {
    /// Build a key.
    pub fn new(client: impl Into<SocketAddr>, target: impl Into<SocketAddr>) -> Self {
        Self { client: client.into(), target: target.into() }
    }

    /// Return whether the session is IPv6 (registrable on protocol-7 connections only).
    pub const fn is_ipv6(&self) -> bool {
        self.client.is_ipv6()
    }

    /// Return the key a CLIENT_ADD / CLIENT_DEL registers.
    pub const fn of_copier_msg(msg: &CopierMsg) -> Self {
        Self { client: msg.client, target: msg.target }
    }

    /// Return the key of a response: destination = client, source = target.
    pub fn of_response(msg: &HeaderMsg) -> Self {
        Self::new(msg.client(), msg.target())
    }
}

#[derive(Debug, Clone, Copy)]
struct Route<C> {
    owner: C,
    last_used: Instant,
    fin_deadline: Option<Instant>,
    /// Time of this route's live heap entry.
    next_check: Instant,
}

impl<C> Route<C> {
    fn deadline(&self, idle_ttl: Duration) -> Instant {
        let idle = self.last_used + idle_ttl;
        self.fin_deadline.map_or(idle, |f| f.min(idle))
    }
}

/// Why a CLIENT_ADD was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddRefused<C> {
    /// The table is at capacity (after expiring what was due).
    Full,
    /// The owner already holds its quota of routes.
    Quota,
    /// Another owner holds a live route for the key, and the policy did not let it be taken over.
    Owned(C),
}

/// Session → owner map with idle-TTL and FIN/RST-grace expiry, first-owner policy and quotas.
#[derive(Debug)]
pub struct RouteTable<C> {
    map: HashMap<RouteKey, Route<C>, RandomState>,
    heap: BinaryHeap<Reverse<(Instant, RouteKey)>>,
    /// Routes held per owner (owners with none are absent).
    owned: HashMap<C, usize, RandomState>,
    idle_ttl: Duration,
    capacity: usize,
    per_owner: usize,
    expired: u64,
}

impl<C: Copy + Eq + Hash> RouteTable<C> {
    /// Create a table holding at most `capacity` routes, each expiring after `idle_ttl` idle; an
    /// owner may hold them all (see [`with_owner_quota`](Self::with_owner_quota)).
    pub fn new(idle_ttl: Duration, capacity: usize) -> Self {
        Self {
            map: HashMap::with_hasher(RandomState::new()),
            heap: BinaryHeap::new(),
            owned: HashMap::with_hasher(RandomState::new()),
            idle_ttl,
            capacity,
            per_owner: usize::MAX,
            expired: 0,
        }
    }

    /// Let each owner hold at most `quota` routes.
    #[must_use]
    pub fn with_owner_quota(mut self, quota: usize) -> Self {
        self.per_owner = quota;
        self
    }

    /// Return how many routes `owner` holds (expired ones not yet swept included).
    pub fn owned_by(&self, owner: C) -> usize {
        self.owned.get(&owner).copied().unwrap_or(0)
    }

    /// Return how many routes have expired so far (idle TTL or FIN/RST grace).
    pub fn expired_total(&self) -> u64 {
        self.expired
    }

    /// Return the number of live routes (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Return whether no route is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Register or refresh a session for `owner` (a FIN grace is cleared).
    ///
    /// A live route of another owner is taken over only if `take_over(old owner)` returns true.
    ///
    /// # Errors
    ///
    /// [`AddRefused::Owned`] when another owner keeps the route; [`AddRefused::Quota`] when
    /// `owner` would exceed its quota; [`AddRefused::Full`] when the key is new and the table is
    /// at capacity after expiring what is due.
    pub fn add(
        &mut self,
        now: Instant,
        key: RouteKey,
        owner: C,
        take_over: impl FnOnce(C) -> bool,
    ) -> Result<(), AddRefused<C>> {
        if let Some(r) = self.map.get(&key) {
            let old = r.owner;
            if r.deadline(self.idle_ttl) <= now {
                // Dead but not swept yet: as good as absent.
                self.drop_route(&key);
                self.expired += 1;
            } else if old == owner {
                self.refresh(now, &key, owner);
                return Ok(());
            } else if !take_over(old) {
                return Err(AddRefused::Owned(old));
            } else if self.owned_by(owner) >= self.per_owner {
                return Err(AddRefused::Quota);
            } else {
                self.uncount(old);
                *self.owned.entry(owner).or_insert(0) += 1;
                self.refresh(now, &key, owner);
                return Ok(());
            }
        }
        if self.owned_by(owner) >= self.per_owner {
            return Err(AddRefused::Quota);
        }
        if self.map.len() >= self.capacity {
            self.expire(now);
            if self.map.len() >= self.capacity {
                return Err(AddRefused::Full);
            }
        }
        let next_check = now + self.idle_ttl;
        self.map.insert(key, Route { owner, last_used: now, fin_deadline: None, next_check });
        *self.owned.entry(owner).or_insert(0) += 1;
        self.push_check(next_check, key);
        Ok(())
    }

    fn refresh(&mut self, now: Instant, key: &RouteKey, owner: C) {
        if let Some(r) = self.map.get_mut(key) {
            r.owner = owner;
            r.last_used = now;
            r.fin_deadline = None;
        }
    }

    /// Remove a route from the map and its owner's count.
    fn drop_route(&mut self, key: &RouteKey) -> Option<Route<C>> {
        let r = self.map.remove(key)?;
        self.uncount(r.owner);
        Some(r)
    }

    fn uncount(&mut self, owner: C) {
        if let Some(n) = self.owned.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.owned.remove(&owner);
            }
        }
    }

    /// Return the owner of a live route and mark it used; an expired route is removed.
    pub fn lookup(&mut self, now: Instant, key: &RouteKey) -> Option<C> {
        let r = self.map.get_mut(key)?;
        if r.deadline(self.idle_ttl) <= now {
            self.drop_route(key);
            self.expired += 1;
            return None;
        }
        r.last_used = now;
        Some(r.owner)
    }

    /// Remove a route.
    pub fn remove(&mut self, key: &RouteKey) -> Option<C> {
        self.drop_route(key).map(|r| r.owner)
    }

    /// Remove a route only if `owner` holds it (CLIENT_DEL); returns whether it was removed.
    pub fn remove_if_owned(&mut self, key: &RouteKey, owner: C) -> bool {
        self.remove_if(key, |o| o == owner)
    }

    /// Remove a route if `allowed(its owner)`; returns whether it was removed.
    pub fn remove_if(&mut self, key: &RouteKey, allowed: impl FnOnce(C) -> bool) -> bool {
        if self.map.get(key).is_some_and(|r| allowed(r.owner)) {
            self.drop_route(key);
            true
        } else {
            false
        }
    }

    /// Let a route expire `grace` after now (a FIN or RST was seen); a later CLIENT_ADD revives it.
    pub fn fin_rst(&mut self, now: Instant, key: &RouteKey, grace: Duration) {
        let Some(r) = self.map.get_mut(key) else {
            return;
        };
        let at = now + grace;
        if r.fin_deadline.is_some_and(|f| f <= at) {
            return;
        }
        r.fin_deadline = Some(at);
        if at < r.next_check {
            r.next_check = at;
            self.push_check(at, *key);
        }
    }

    /// Remove every route whose deadline has passed; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(r) = self.map.get_mut(&key) else {
                continue;
            };
            if r.next_check != at {
                continue; // stale entry
            }
            let deadline = r.deadline(self.idle_ttl);
            if deadline <= now {
                self.drop_route(&key);
                expired += 1;
                self.expired += 1;
            } else {
                r.next_check = deadline;
                self.heap.push(Reverse((deadline, key)));
            }
        }
        self.compact();
        expired
    }

    fn push_check(&mut self, at: Instant, key: RouteKey) {
        self.heap.push(Reverse((at, key)));
        self.compact();
    }

    /// Rebuild the heap from the live routes once stale entries dominate it.
    fn compact(&mut self) {
        if self.heap.len() <= 2 * self.map.len() + 1024 {
            return;
        }
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(self.map.iter().map(|(k, r)| Reverse((r.next_check, *k))));
        self.heap = BinaryHeap::from(entries);
    }
}

/// Why a response was not held in the delay table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayRefused {
    /// The table holds its maximum number of messages.
    TableFull,
    /// This session already has the per-session maximum held.
    SessionFull,
}

#[derive(Debug)]
struct DelayList {
    created: Instant,
    msgs: Vec<HeaderMsg>,
}

/// Responses (SYN/RST) held until their session's CLIENT_ADD arrives; bounded, TTL from creation.
#[derive(Debug)]
pub struct DelayTable {
    map: HashMap<RouteKey, DelayList>,
    /// Lists in creation order (TTL is constant, so also expiry order); stale entries skipped.
    order: VecDeque<(Instant, RouteKey)>,
    ttl: Duration,
    max_msgs: usize,
    per_key: usize,
    held: usize,
    expired: u64,
}

impl DelayTable {
    /// Most messages held for one session (a SYN-ACK and its retransmissions fit easily).
    pub const PER_SESSION: usize = 16;

    /// Create a table holding at most `max_msgs` messages, each list living `ttl` from creation.
    pub fn new(ttl: Duration, max_msgs: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            max_msgs,
            per_key: Self::PER_SESSION,
            held: 0,
            expired: 0,
        }
    }

    /// Return how many held messages have expired so far.
    pub fn expired_total(&self) -> u64 {
        self.expired
    }

    /// Return the number of messages held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Return whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Hold a response for a session that has no route yet.
    ///
    /// # Errors
    ///
    /// [`DelayRefused`] when a bound is reached; the message is not held.
    pub fn hold(&mut self, now: Instant, key: RouteKey, msg: HeaderMsg) -> Result<(), DelayRefused> {
        if self.held >= self.max_msgs {
            self.expire(now);
            if self.held >= self.max_msgs {
                return Err(DelayRefused::TableFull);
            }
        }
        let ttl = self.ttl;
        if let Some(list) = self.map.get_mut(&key) {
            if list.created + ttl > now {
                if list.msgs.len() >= self.per_key {
                    return Err(DelayRefused::SessionFull);
                }
                list.msgs.push(msg);
                self.held += 1;
                return Ok(());
            }
            // Expired but not swept yet: start a fresh list.
            self.held -= list.msgs.len();
            self.expired += list.msgs.len() as u64;
            self.map.remove(&key);
        }
        self.map.insert(key, DelayList { created: now, msgs: vec![msg] });
        self.order.push_back((now, key));
        self.held += 1;
        self.compact();
        Ok(())
    }

    /// Remove and return a session's held responses, oldest first (empty if none or expired).
    pub fn take(&mut self, now: Instant, key: &RouteKey) -> Vec<HeaderMsg> {
        match self.map.remove(key) {
            Some(list) => {
                self.held -= list.msgs.len();
                if list.created + self.ttl > now {
                    list.msgs
                } else {
                    self.expired += list.msgs.len() as u64;
                    Vec::new()
                }
            }
            None => Vec::new(),
        }
    }

    /// Drop every list older than the TTL; returns how many messages were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&(created, key)) = self.order.front() {
            if created + self.ttl > now {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|l| l.created == created) {
                if let Some(list) = self.map.remove(&key) {
                    dropped += list.msgs.len();
                    self.held -= list.msgs.len();
                    self.expired += list.msgs.len() as u64;
                }
            }
        }
        dropped
    }

    /// Drop stale order entries (lists taken early) once they dominate the queue.
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.map.len() + 1024 {
            return;
        }
        let map = &self.map;
        self.order.retain(|(created, key)| map.get(key).is_some_and(|l| l.created == *created));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn key(port: u16) -> RouteKey {
        RouteKey::new(
            SocketAddrV4::new(Ipv4Addr::new(10, 10, 1, 2), port),
            SocketAddrV4::new(Ipv4Addr::new(10, 10, 2, 3), 8080),
        )
    }

    fn msg(flags: u8, seq: u8) -> HeaderMsg {
        let mut b = [0u8; 64];
        b[0] = 0x45;
        b[27] = seq;
        b[33] = flags;
        HeaderMsg::from_bytes(b)
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn route_key_of_response_and_copier_msg_agree() {
        let k = key(50426);
        let add = CopierMsg::client_add(k.client, k.target);
        assert_eq!(RouteKey::of_copier_msg(&add), k);
        let mut b = [0u8; 64];
        b[0] = 0x45;
        b[12..16].copy_from_slice(&[10, 10, 2, 3]);
        b[16..20].copy_from_slice(&[10, 10, 1, 2]);
        b[20..22].copy_from_slice(&8080u16.to_be_bytes());
        b[22..24].copy_from_slice(&50426u16.to_be_bytes());
        assert_eq!(RouteKey::of_response(&HeaderMsg::from_bytes(b)), k);

        // IPv6: the 84-byte layout names the same session a CLIENT_ADD6 does.
        let k6 = RouteKey::new(
            "[2001:db8::2]:50426".parse::<SocketAddr>().unwrap(),
            "[2001:db8::3]:8080".parse::<SocketAddr>().unwrap(),
        );
        assert!(k6.is_ipv6() && !k.is_ipv6());
        assert_eq!(RouteKey::of_copier_msg(&CopierMsg::client_add(k6.client, k6.target)), k6);
        let mut b = [0u8; 84];
        b[0] = 0x60;
        b[8..24].copy_from_slice(&"2001:db8::3".parse::<std::net::Ipv6Addr>().unwrap().octets());
        b[24..40].copy_from_slice(&"2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        b[40..42].copy_from_slice(&8080u16.to_be_bytes());
        b[42..44].copy_from_slice(&50426u16.to_be_bytes());
        assert_eq!(RouteKey::of_response(&HeaderMsg::from_bytes6(b)), k6);
    }

    #[test]
    fn idle_ttl_is_refreshed_by_use() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(10 * S, 100);
        rt.add(t0, key(1), 7u32, |_| true).unwrap();
        rt.add(t0, key(2), 8u32, |_| true).unwrap();
        assert_eq!(rt.lookup(t0 + 9 * S, &key(1)), Some(7));
        assert_eq!(rt.expire(t0 + 10 * S), 1, "key 2 idle for 10 s");
        assert_eq!(rt.lookup(t0 + 10 * S, &key(2)), None);
        assert_eq!(rt.expire(t0 + 18 * S), 0, "key 1 used at 9 s");
        assert_eq!(rt.len(), 1);
        assert_eq!(rt.expire(t0 + 19 * S), 1);
        assert!(rt.is_empty());
    }

    #[test]
    fn lookup_sees_expiry_before_the_sweep() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(10 * S, 100);
        rt.add(t0, key(1), 1u32, |_| true).unwrap();
        assert_eq!(rt.lookup(t0 + 10 * S, &key(1)), None);
        assert!(rt.is_empty());
    }

    #[test]
    fn fin_grace_shortens_and_client_add_revives() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(120 * S, 100);
        rt.add(t0, key(1), 1u32, |_| true).unwrap();
        rt.fin_rst(t0, &key(1), 10 * S);
        rt.fin_rst(t0 + 5 * S, &key(1), 10 * S); // a retransmitted FIN does not extend it
        assert_eq!(rt.lookup(t0 + 9 * S, &key(1)), Some(1));
        assert_eq!(rt.expire(t0 + 10 * S), 1);

        rt.add(t0, key(2), 2u32, |_| true).unwrap();
        rt.fin_rst(t0, &key(2), 10 * S);
        rt.add(t0 + 5 * S, key(2), 3u32, |_| true).unwrap(); // port reuse: a new session
        assert_eq!(rt.expire(t0 + 30 * S), 0);
        assert_eq!(rt.lookup(t0 + 30 * S, &key(2)), Some(3));
        rt.fin_rst(t0, &key(99), S); // unknown: no-op
    }

    #[test]
    fn client_del_only_by_owner() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(10 * S, 100);
        rt.add(t0, key(1), 1u32, |_| true).unwrap();
        assert!(!rt.remove_if_owned(&key(1), 2));
        assert!(rt.remove_if_owned(&key(1), 1));
        assert_eq!(rt.lookup(t0, &key(1)), None);
        assert_eq!(rt.expire(t0 + 100 * S), 0, "stale heap entry skipped");
    }

    #[test]
    fn capacity_bounds_routes() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(10 * S, 2);
        rt.add(t0, key(1), 1u32, |_| true).unwrap();
        rt.add(t0 + S, key(2), 1u32, |_| true).unwrap();
        assert_eq!(rt.add(t0 + S, key(3), 1u32, |_| true), Err(AddRefused::Full));
        rt.add(t0 + S, key(2), 2u32, |_| true).unwrap(); // refresh is always fine
        rt.add(t0 + 10 * S, key(3), 1u32, |_| true).unwrap(); // key 1 expired to make room
        assert_eq!(rt.len(), 2);
    }

    #[test]
    fn heap_stays_bounded_under_add_del_churn() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(120 * S, 10);
        for i in 0..100_000u32 {
            rt.add(t0, key(1), i, |_| true).unwrap();
            rt.remove(&key(1));
        }
        assert!(rt.heap.len() <= 1024 + 2);
    }

    #[test]
    fn first_owner_keeps_a_live_route() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(10 * S, 100);
        rt.add(t0, key(1), 1u32, |_| true).unwrap();
        // Another owner the policy refuses: the route stays with the first.
        assert_eq!(rt.add(t0 + S, key(1), 2u32, |old| old != 1), Err(AddRefused::Owned(1)));
        assert_eq!(rt.lookup(t0 + S, &key(1)), Some(1));
        assert_eq!((rt.owned_by(1), rt.owned_by(2)), (1, 0));
        // The policy allows it (the owner closed, or the same peer): taken over, counts move.
        rt.add(t0 + S, key(1), 3u32, |old| old == 1).unwrap();
        assert_eq!(rt.lookup(t0 + S, &key(1)), Some(3));
        assert_eq!((rt.owned_by(1), rt.owned_by(3)), (0, 1));
        // Its own refresh never asks the policy.
        rt.add(t0 + 2 * S, key(1), 3u32, |_| panic!("not asked")).unwrap();
        // An expired route is free for anyone, swept or not.
        rt.add(t0 + 12 * S, key(1), 2u32, |_| false).unwrap();
        assert_eq!(rt.lookup(t0 + 12 * S, &key(1)), Some(2));
        assert_eq!((rt.owned_by(3), rt.owned_by(2), rt.expired_total()), (0, 1, 1));
    }

    #[test]
    fn quota_per_owner() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(10 * S, 100).with_owner_quota(2);
        rt.add(t0, key(1), 1u32, |_| true).unwrap();
        rt.add(t0, key(2), 1u32, |_| true).unwrap();
        assert_eq!(rt.add(t0, key(3), 1u32, |_| true), Err(AddRefused::Quota));
        rt.add(t0, key(2), 1u32, |_| true).unwrap(); // refreshing is not adding
        rt.add(t0, key(3), 2u32, |_| true).unwrap(); // others have their own quota
        assert_eq!(rt.add(t0, key(3), 1u32, |_| true), Err(AddRefused::Quota), "no takeover beyond the quota");
        // Every way out of the table gives quota back.
        assert!(rt.remove_if_owned(&key(1), 1));
        rt.add(t0, key(4), 1u32, |_| true).unwrap();
        assert_eq!(rt.remove(&key(4)), Some(1));
        assert_eq!(rt.owned_by(1), 1);
        assert_eq!(rt.expire(t0 + 10 * S), 2);
        assert_eq!((rt.owned_by(1), rt.owned_by(2), rt.len()), (0, 0, 0));
        rt.add(t0 + 10 * S, key(5), 1u32, |_| true).unwrap();
        assert_eq!(rt.lookup(t0 + 20 * S, &key(5)), None);
        assert_eq!(rt.owned_by(1), 0);
        assert!(rt.owned.is_empty(), "owners with no route are forgotten");
    }

    #[test]
    fn remove_if_asks_the_policy() {
        let t0 = Instant::now();
        let mut rt = RouteTable::new(10 * S, 100);
        rt.add(t0, key(1), 1u32, |_| true).unwrap();
        assert!(!rt.remove_if(&key(1), |o| o == 2));
        assert!(rt.remove_if(&key(1), |o| o % 2 == 1));
        assert!(rt.is_empty());
    }

    #[test]
    fn tables_hash_with_a_key_drawn_per_run() {
        use std::hash::BuildHasher;
        // The type says it: std's RandomState (SipHash-1-3, key from the OS).
        let rt: RouteTable<u32> = RouteTable::new(S, 1);
        let _: &HashMap<RouteKey, Route<u32>, RandomState> = &rt.map;
        let dt = DelayTable::new(S, 1);
        let _: &HashMap<RouteKey, DelayList, RandomState> = &dt.map;
        // Two tables never share a key: the same 4-tuple lands differently.
        let (a, b) = (RandomState::new(), RandomState::new());
        assert!((1..=8).any(|p| a.hash_one(key(p)) != b.hash_one(key(p))));
    }

    #[test]
    fn delay_table_holds_in_order_and_flushes() {
        let t0 = Instant::now();
        let mut dt = DelayTable::new(30 * S, 100);
        dt.hold(t0, key(1), msg(0x12, 1)).unwrap();
        dt.hold(t0 + S, key(1), msg(0x12, 2)).unwrap();
        dt.hold(t0 + S, key(2), msg(0x04, 3)).unwrap();
        assert_eq!(dt.len(), 3);
        assert_eq!(dt.take(t0 + 2 * S, &key(1)), vec![msg(0x12, 1), msg(0x12, 2)]);
        assert_eq!(dt.take(t0 + 2 * S, &key(1)), vec![]);
        assert_eq!(dt.len(), 1);
    }

    #[test]
    fn delay_table_ttl_counts_from_list_creation() {
        let t0 = Instant::now();
        let mut dt = DelayTable::new(30 * S, 100);
        dt.hold(t0, key(1), msg(0x12, 1)).unwrap();
        dt.hold(t0 + 29 * S, key(1), msg(0x12, 2)).unwrap();
        assert_eq!(dt.expire(t0 + 29 * S), 0);
        assert_eq!(dt.expire(t0 + 30 * S), 2);
        assert!(dt.is_empty());
        // take() after the TTL but before a sweep returns nothing.
        dt.hold(t0, key(2), msg(0x12, 1)).unwrap();
        assert_eq!(dt.take(t0 + 31 * S, &key(2)), vec![]);
        assert!(dt.is_empty());
        // A list past its TTL is replaced by a fresh one on hold().
        dt.hold(t0, key(3), msg(0x12, 1)).unwrap();
        dt.hold(t0 + 40 * S, key(3), msg(0x12, 2)).unwrap();
        assert_eq!(dt.len(), 1);
        assert_eq!(dt.expire(t0 + 40 * S), 0, "old order entry is stale");
        assert_eq!(dt.take(t0 + 41 * S, &key(3)), vec![msg(0x12, 2)]);
    }

    #[test]
    fn delay_table_is_bounded() {
        let t0 = Instant::now();
        let mut dt = DelayTable::new(30 * S, 20);
        for i in 0..DelayTable::PER_SESSION {
            dt.hold(t0, key(1), msg(0x12, i as u8)).unwrap();
        }
        assert_eq!(dt.hold(t0, key(1), msg(0x12, 99)), Err(DelayRefused::SessionFull));
        for p in 2..6 {
            dt.hold(t0, key(p), msg(0x04, 0)).unwrap();
        }
        assert_eq!(dt.hold(t0, key(9), msg(0x04, 0)), Err(DelayRefused::TableFull));
        assert_eq!(dt.len(), 20);
        // Expiry makes room again.
        dt.hold(t0 + 30 * S, key(9), msg(0x04, 0)).unwrap();
        assert_eq!(dt.len(), 1);
    }

    #[test]
    fn delay_order_queue_bounded_under_take_churn() {
        let t0 = Instant::now();
        let mut dt = DelayTable::new(30 * S, 100);
        for i in 0..100_000u32 {
            dt.hold(t0 + Duration::from_nanos(u64::from(i)), key(1), msg(0x12, 0)).unwrap();
            dt.take(t0, &key(1));
        }
        assert!(dt.order.len() <= 1024 + 2);
    }
}
