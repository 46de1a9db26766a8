//! The fixed-capacity session table of one worker: a slab of session slots, an open-addressing
//! index from the session key to a slot, and an LRU order for eviction.
//!
//! Everything is sized in [`Table::new`]. The index has a power-of-two number of buckets, at
//! least twice the capacity, probed linearly; removal shifts later entries back (no
//! tombstones), so lookups stay short however long the table runs. Keys are hashed with SipHash
//! under a key drawn from the OS per table (std's `RandomState`): client addresses and ports
//! come from the network, and with a fixed public hash a client choosing its source ports could
//! make every probe run the whole table. The LRU is an intrusive
//! doubly linked list over slot numbers: the front is the most recently active session, the
//! back the first to be evicted (sessions entering time-wait are moved there).

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};

use super::pool::NIL;

/// A session's key: the client's address (IPv4 or IPv6) and port, as sent to the target.
pub(crate) type Key = (IpAddr, u16);

/// The key of empty buckets (never compared: an empty bucket's slot is NIL).
const NO_KEY: Key = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Build the key of a client address and port.
pub(crate) fn key(ip: IpAddr, port: u16) -> Key {
    (ip, port)
}

/// Key → slot index, slot free list and LRU order.
pub(crate) struct Table {
    hasher: RandomState,
    buckets: Vec<(Key, u32)>,
    mask: usize,
    free: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
    len: usize,
}

impl Table {
    /// Create a table of `capacity` slots (at least 1).
    pub fn new(capacity: usize) -> Table {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        let buckets = (capacity * 2).next_power_of_two();
        Table {
            hasher: RandomState::new(),
            buckets: vec![(NO_KEY, NIL); buckets],
            mask: buckets - 1,
            free: (0..capacity as u32).rev().collect(),
            prev: vec![NIL; capacity],
            next: vec![NIL; capacity],
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    /// Return the number of slots.
    pub fn capacity(&self) -> usize {
        self.prev.len()
    }

    /// Return the number of sessions.
    pub fn len(&self) -> usize {
        self.len
    }

    fn home(&self, key: Key) -> usize {
        self.hasher.hash_one(key) as usize & self.mask
    }

    /// Return the slot of `key`.
    pub fn get(&self, key: Key) -> Option<u32> {
        let mut i = self.home(key);
        loop {
            let (k, slot) = self.buckets[i];
            if slot == NIL {
                return None;
            }
            if k == key {
                return Some(slot);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Insert `key` (absent) into a free slot at the LRU front; `None` if the table is full.
    pub fn insert(&mut self, key: Key) -> Option<u32> {
        let slot = self.free.pop()?;
        let mut i = self.home(key);
        while self.buckets[i].1 != NIL {
            i = (i + 1) & self.mask;
        }
        self.buckets[i] = (key, slot);
        self.len += 1;
        self.link_front(slot);
        Some(slot)
    }

    /// Remove `key`, which is in `slot`.
    pub fn remove(&mut self, key: Key, slot: u32) {
        let mut i = self.home(key);
        while self.buckets[i] != (key, slot) {
            if self.buckets[i].1 == NIL {
                return;
            }
            i = (i + 1) & self.mask;
        }
        // Backward-shift deletion: move later entries of the probe run into the hole when
        // their home does not lie cyclically in (hole, position].
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let (k, s) = self.buckets[j];
            if s == NIL {
                break;
            }
            let home = self.home(k);
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.buckets[hole] = self.buckets[j];
                hole = j;
            }
        }
        self.buckets[hole] = (NO_KEY, NIL);
        self.unlink(slot);
        self.free.push(slot);
        self.len -= 1;
    }

    fn unlink(&mut self, slot: u32) {
        let (p, n) = (self.prev[slot as usize], self.next[slot as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[slot as usize] = NIL;
        self.next[slot as usize] = NIL;
    }

    fn link_front(&mut self, slot: u32) {
        self.prev[slot as usize] = NIL;
        self.next[slot as usize] = self.head;
        if self.head != NIL {
            self.prev[self.head as usize] = slot;
        } else {
            self.tail = slot;
        }
        self.head = slot;
    }

    /// Mark `slot` most recently active.
    pub fn touch(&mut self, slot: u32) {
        if self.head != slot {
            self.unlink(slot);
            self.link_front(slot);
        }
    }

    /// Mark `slot` first in line for eviction.
    pub fn demote(&mut self, slot: u32) {
        if self.tail != slot {
            self.unlink(slot);
            self.prev[slot as usize] = self.tail;
            self.next[slot as usize] = NIL;
            if self.tail != NIL {
                self.next[self.tail as usize] = slot;
            } else {
                self.head = slot;
            }
            self.tail = slot;
        }
    }

    /// Return the least recently active slot.
    pub fn lru(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testdata::XorShift;
    use std::collections::HashMap;

    /// A key from a number: its high bits an IPv4 address, its low 16 the port (the old layout).
    fn k(n: u64) -> Key {
        (IpAddr::V4(Ipv4Addr::from((n >> 16) as u32)), n as u16)
    }

    #[test]
    fn matches_a_hash_map_under_churn() {
        let mut t = Table::new(64);
        let mut m: HashMap<Key, u32> = HashMap::new();
        let mut rng = XorShift(7);
        for _ in 0..20_000 {
            // Few distinct keys and a small table: long probe runs and wrap-around.
            let k = k(rng.below(200) as u64 * 0x1_0000_0001);
            match m.get(&k).copied() {
                Some(slot) if rng.below(2) == 0 => {
                    t.remove(k, slot);
                    m.remove(&k);
                }
                Some(slot) => assert_eq!(t.get(k), Some(slot)),
                None => {
                    let r = t.insert(k);
                    if m.len() == 64 {
                        assert_eq!(r, None);
                    } else {
                        m.insert(k, r.unwrap());
                    }
                }
            }
            assert_eq!(t.len(), m.len());
        }
        for (k, slot) in &m {
            assert_eq!(t.get(*k), Some(*slot));
        }
    }

    #[test]
    fn the_hash_is_keyed_per_table() {
        // With a fixed hash, keys a client can choose (its source ports) could be picked to
        // collide in every copier; keyed per table, the same keys land elsewhere each time.
        let (a, b) = (Table::new(65_536), Table::new(65_536));
        let keys = (0..1000u64).map(|p| k((0x0a00_0001 << 16) | p));
        let same = keys.filter(|k| a.home(*k) == b.home(*k)).count();
        assert!(same < 50, "{same} of 1000 keys have the same home in two tables");
    }

    #[test]
    fn every_port_of_one_client_is_cheap() {
        let mut t = Table::new(65_536);
        let start = std::time::Instant::now();
        for p in 0..65_536u64 {
            t.insert(k((0x0a00_0001 << 16) | p)).unwrap();
        }
        for p in 0..65_536u64 {
            assert!(t.get(k((0x0a00_0001 << 16) | p)).is_some());
        }
        // A debug build takes a few tens of milliseconds; colliding probe runs would take seconds.
        assert!(start.elapsed() < std::time::Duration::from_secs(1), "{:?}", start.elapsed());
    }

    #[test]
    fn ipv4_and_ipv6_keys_do_not_collide() {
        let mut t = Table::new(8);
        let v4 = key(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000);
        let mapped = key(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()), 40000);
        let v6 = key("2001:db8::1".parse().unwrap(), 40000);
        let (a, b, c) = (t.insert(v4).unwrap(), t.insert(mapped).unwrap(), t.insert(v6).unwrap());
        assert_eq!((t.get(v4), t.get(mapped), t.get(v6)), (Some(a), Some(b), Some(c)));
        t.remove(mapped, b);
        assert_eq!((t.get(v4), t.get(mapped), t.get(v6)), (Some(a), None, Some(c)));
    }

    #[test]
    fn lru_order() {
        let mut t = Table::new(3);
        let a = t.insert(k(1)).unwrap();
        let b = t.insert(k(2)).unwrap();
        let c = t.insert(k(3)).unwrap();
        assert_eq!(t.lru(), Some(a));
        t.touch(a);
        assert_eq!(t.lru(), Some(b));
        t.demote(c);
        assert_eq!(t.lru(), Some(c));
        t.remove(k(3), c);
        assert_eq!(t.lru(), Some(b));
        t.remove(k(2), b);
        t.remove(k(1), a);
        assert_eq!(t.lru(), None);
        assert_eq!(t.capacity(), 3);
    }
}
