//! Client tuple allocation for `-n` (replicas), `-c` (client addresses) and `-f` (port slice).
//!
//! TCPCopy derives replica ports by arithmetic and keeps the port under `-c`, so 4-tuples collide
//! (tcpcopy-behaviour.md §3.17, §3.19, §7 #13). Here each (captured client, replica) gets an
//! (address, port) pair that no live mapping of this worker uses, from the pool: the `-c`
//! addresses (or the captured client's own address) × the ports of this worker's slice. Slices
//! are disjoint: a port belongs to worker `(port / F) % workers` when `-f` gives F copiers a
//! residue each (`port % F_SLOTS == f`), so workers and cooperating copiers never hand out the
//! same pair. A mapping lives while it is used and is released after `idle` without packets
//! (longer than the session engine's time-wait). Exhaustion is counted, never a collision.
//!
//! Memory is reserved up front (`capacity` mappings); the tables never grow in steady state.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

/// Number of port residues `-f` can choose from (cooperating copiers: `-f 0` .. `-f 31`).
pub const F_SLOTS: u16 = 32;

/// The allocation policy.
#[derive(Debug, Clone)]
pub struct TupleConfig {
    /// Replicas per captured session (`-n`, ≥ 1).
    pub replicas: u16,
    /// Client addresses to substitute (`-c`); empty = keep the captured address.
    pub addresses: Vec<Ipv4Addr>,
    /// `-f`: this copier's port residue (mod `F_SLOTS`), if several copiers share a test server.
    pub port_slot: Option<u16>,
    /// Release a mapping after this long without packets.
    pub idle: Duration,
    /// Mappings reserved per worker.
    pub capacity: usize,
}

impl TupleConfig {
    /// Whether every session keeps its captured tuple (no work per packet).
    pub fn is_identity(&self) -> bool {
        self.replicas <= 1 && self.addresses.is_empty() && self.port_slot.is_none()
    }
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    to: (Ipv4Addr, u16),
    last: Instant,
}

/// One worker's allocator.
pub struct Tuples {
    cfg: TupleConfig,
    worker: u16,
    workers: u16,
    map: HashMap<(Ipv4Addr, u16, u16), Mapping>,
    used: HashSet<(Ipv4Addr, u16)>,
    cursor: u32,
    /// Allocations refused because the pool had no free pair.
    pub exhausted: u64,
    /// Mappings released after `idle`.
    pub released: u64,
}

impl Tuples {
    /// An allocator for worker `worker` of `workers`.
    pub fn new(cfg: TupleConfig, worker: u16, workers: u16) -> Self {
        // The identity mapping never touches the tables: reserve nothing for it.
        let cap = if cfg.is_identity() { 0 } else { cfg.capacity };
        Self {
            cfg,
            worker,
            workers: workers.max(1),
            map: HashMap::with_capacity(cap),
            used: HashSet::with_capacity(cap),
            cursor: 0,
            exhausted: 0,
            released: 0,
        }
    }

    /// Replicas per captured session.
    pub fn replicas(&self) -> u16 {
        self.cfg.replicas.max(1)
    }

    /// Whether the tuple is ever changed.
    pub fn is_identity(&self) -> bool {
        self.cfg.is_identity()
    }

    fn port_ok(&self, port: u16) -> bool {
        if port < 1024 {
            return false;
        }
        let (slot_ok, rest) = match self.cfg.port_slot {
            Some(f) => (port % F_SLOTS == f, port / F_SLOTS),
            None => (true, port),
        };
        slot_ok && rest % self.workers == self.worker
    }

    /// The pair replica `replica` of the captured client `from` is sent as, allocating one if
    /// needed; `None` when the pool is exhausted (counted).
    pub fn map(&mut self, now: Instant, from: (Ipv4Addr, u16), replica: u16) -> Option<(Ipv4Addr, u16)> {
        let key = (from.0, from.1, replica);
        if let Some(m) = self.map.get_mut(&key) {
            m.last = now;
            return Some(m.to);
        }
        if self.map.len() >= self.cfg.capacity {
            self.exhausted += 1;
            return None;
        }
        // The captured tuple itself when it is ours to use and free (replica 0, no -c).
        let own = self.cfg.addresses.is_empty() && replica == 0 && self.port_ok(from.1) && !self.used.contains(&from);
        let to = if own { Some(from) } else { self.next_free(from.0) };
        let Some(to) = to else {
            self.exhausted += 1;
            return None;
        };
        self.used.insert(to);
        self.map.insert(key, Mapping { to, last: now });
        Some(to)
    }

    /// Walks the pool from the cursor for a free pair.
    fn next_free(&mut self, captured_ip: Ipv4Addr) -> Option<(Ipv4Addr, u16)> {
        let ips: &[Ipv4Addr] =
            if self.cfg.addresses.is_empty() { std::slice::from_ref(&captured_ip) } else { &self.cfg.addresses };
        let n_ips = ips.len() as u32;
        let span = n_ips * 65_536;
        for _ in 0..span {
            let c = self.cursor;
            self.cursor = (self.cursor + 1) % span;
            let ip = ips[(c % n_ips) as usize];
            let port = (c / n_ips) as u16;
            if self.port_ok(port) && !self.used.contains(&(ip, port)) {
                return Some((ip, port));
            }
        }
        None
    }

    /// Releases mappings idle for longer than the configured time (call about once a second).
    pub fn sweep(&mut self, now: Instant) {
        let idle = self.cfg.idle;
        let used = &mut self.used;
        let mut released = 0;
        self.map.retain(|_, m| {
            let keep = now.saturating_duration_since(m.last) < idle;
            if !keep {
                used.remove(&m.to);
                released += 1;
            }
            keep
        });
        self.released += released;
    }
}

/// Parses `-c`: addresses, ranges `a.b.c.d-a.b.c.e`, CIDRs `a.b.c.d/nn`, comma-separated;
/// for a CIDR the network and broadcast addresses are left out.
pub fn parse_addresses(value: &str) -> Result<Vec<Ipv4Addr>, String> {
    let bad = |p: &str| {
        format!("-c/--client-addresses {p:?}: expected IPv4 addresses, ranges or CIDRs, e.g. 10.1.0.5,10.1.0.10-10.1.0.20,10.2.0.0/24")
    };
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((net, bits)) = part.split_once('/') {
            let net: Ipv4Addr = net.parse().map_err(|_| bad(part))?;
            let bits: u32 = bits.parse().ok().filter(|b| (8..=32).contains(b)).ok_or_else(|| bad(part))?;
            let base = u32::from(net) & (u32::MAX.checked_shl(32 - bits).unwrap_or(0));
            let size = 1u64 << (32 - bits);
            let (first, last) = if size > 2 { (1, size - 2) } else { (0, size - 1) };
            out.extend((first..=last).map(|i| Ipv4Addr::from(base + i as u32)));
        } else if let Some((a, b)) = part.split_once('-') {
            let (a, b): (Ipv4Addr, Ipv4Addr) = (a.parse().map_err(|_| bad(part))?, b.parse().map_err(|_| bad(part))?);
            let (a, b) = (u32::from(a), u32::from(b));
            if a > b {
                return Err(bad(part));
            }
            out.extend((a..=b).map(Ipv4Addr::from));
        } else {
            out.push(part.parse().map_err(|_| bad(part))?);
        }
        if out.len() > 65_536 {
            return Err(format!("-c/--client-addresses: more than 65536 addresses in {value:?}"));
        }
    }
    if out.is_empty() {
        return Err(bad(value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(replicas: u16, addresses: Vec<Ipv4Addr>) -> TupleConfig {
        TupleConfig { replicas, addresses, port_slot: None, idle: Duration::from_secs(60), capacity: 1 << 16 }
    }

    const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn replicas_get_distinct_pairs_and_keep_them() {
        let mut t = Tuples::new(cfg(3, vec![]), 0, 1);
        let now = Instant::now();
        let pairs: Vec<_> = (0..3).map(|r| t.map(now, (C, 40000), r).unwrap()).collect();
        assert_eq!(pairs[0], (C, 40000), "replica 0 keeps its own tuple");
        assert!(pairs[1] != pairs[0] && pairs[2] != pairs[0] && pairs[1] != pairs[2]);
        assert_eq!(t.map(now, (C, 40000), 2), Some(pairs[2]), "stable");
        // Another client whose own port was handed out to a replica gets another pair.
        let clash = pairs[1];
        let other = t.map(now, (clash.0, clash.1), 0).unwrap();
        assert_ne!(other, clash);
    }

    #[test]
    fn client_addresses_workers_and_slots_partition_the_pool() {
        let addrs = parse_addresses("10.9.0.1-10.9.0.3").unwrap();
        let mut w0 = Tuples::new(TupleConfig { port_slot: Some(5), ..cfg(2, addrs.clone()) }, 0, 2);
        let mut w1 = Tuples::new(TupleConfig { port_slot: Some(5), ..cfg(2, addrs.clone()) }, 1, 2);
        let now = Instant::now();
        let mut all = HashSet::new();
        for p in 0..500u16 {
            for r in 0..2 {
                for t in [&mut w0, &mut w1] {
                    let to = t.map(now, (C, 30000 + p), r).unwrap();
                    assert!(addrs.contains(&to.0) && to.1 % F_SLOTS == 5 && to.1 >= 1024);
                    assert!(all.insert(to), "pair {to:?} handed out twice");
                }
            }
        }
    }

    #[test]
    fn exhaustion_is_counted_and_idle_mappings_are_released() {
        let mut t = Tuples::new(TupleConfig { capacity: 2, ..cfg(1, vec![C]) }, 0, 1);
        let now = Instant::now();
        assert!(t.map(now, (C, 1), 0).is_some());
        assert!(t.map(now, (C, 2), 0).is_some());
        assert_eq!(t.map(now, (C, 3), 0), None);
        assert_eq!(t.exhausted, 1);
        t.sweep(now + Duration::from_secs(61));
        assert_eq!(t.released, 2);
        assert!(t.map(now + Duration::from_secs(61), (C, 3), 0).is_some());
    }

    #[test]
    fn address_lists_parse_and_errors_name_the_option() {
        assert_eq!(parse_addresses("10.0.0.1, 10.0.0.3").unwrap().len(), 2);
        assert_eq!(
            parse_addresses("10.0.0.0/30").unwrap(),
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert_eq!(parse_addresses("10.0.0.250-10.0.1.4").unwrap().len(), 11);
        for bad in ["", "x", "10.0.0.5-10.0.0.1", "10.0.0.0/40", "10.0.0.0/0"] {
            assert!(parse_addresses(bad).unwrap_err().contains("-c/--client-addresses"), "{bad}");
        }
    }
}
