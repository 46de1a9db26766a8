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
//!
//! # Replay loops (`-T`)
//!
//! An offline replay in session mode replays the file's sessions once per loop. With
//! `fresh_per_loop`, loop *k* > 0 of a captured client is a mapping of its own, keyed by the
//! loop (the feed writes it into each frame's metadata), so it gets a pair no live mapping uses
//! — in practice one no earlier loop used: the pool is walked from a cursor, and a pair comes
//! back only after its mapping idled out, longer than the test server's TIME_WAIT. On top of
//! that, [`shift_loop`] moves loop *k*'s sequence numbers and TCP timestamps ahead by
//! *k* × 2^30, so that even a pair the test server still remembered (TIME_WAIT: a SYN must be
//! above the old connection's last sequence number; PAWS: its timestamp above the last one)
//! would be accepted. A loop's session therefore never races the previous loop's close of the
//! same tuple: the tuple is not the same.
//!
//! # Families
//!
//! `-c` may list IPv4 and IPv6 addresses. A session takes its pair from the addresses of its
//! *target's* family: an IPv4 client of an IPv6 test server (or the reverse) is replayed from an
//! address of the target's family (family translation, done by the session engine); with no `-c`
//! address of that family, a client of the other family cannot be replayed
//! ([`TupleError::Family`]), one of the same family keeps its own address.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use crate::wire::{parse::Parsed, tcp};

/// Number of port residues `-f` can choose from (cooperating copiers: `-f 0` .. `-f 31`).
pub const F_SLOTS: u16 = 32;

/// The allocation policy.
#[derive(Debug, Clone)]
pub struct TupleConfig {
    /// Replicas per captured session (`-n`, ≥ 1).
    pub replicas: u16,
    /// Client addresses to substitute (`-c`, IPv4 and IPv6); empty = keep the captured address.
    pub addresses: Vec<IpAddr>,
    /// `-f`: this copier's port residue (mod `F_SLOTS`), if several copiers share a test server.
    pub port_slot: Option<u16>,
    /// Release a mapping after this long without packets.
    pub idle: Duration,
    /// Mappings reserved per worker.
    pub capacity: usize,
    /// Offline `-T` in session mode: each replay loop after the first gets pairs of its own.
    pub fresh_per_loop: bool,
}

impl TupleConfig {
    /// Whether every session keeps its captured tuple (no work per packet).
    pub fn is_identity(&self) -> bool {
        self.replicas <= 1 && self.addresses.is_empty() && self.port_slot.is_none() && !self.fresh_per_loop
    }
}

/// How far each replay loop moves sequence numbers and timestamps ahead of the previous one.
pub const LOOP_SHIFT: u32 = 1 << 30;

/// Moves a copy of loop `generation` ahead of the earlier loops: its sequence number and its
/// TCP timestamp value by `generation` × [`LOOP_SHIFT`] (mod 2^32), in `frame` and in `parsed`.
/// Checksums are left as they are: the session engine builds every frame it sends with full
/// checksums. Loops more than 2^31 apart compare the wrong way round, which matters only if a
/// pair came back that soon: it does not (see the module docs).
pub fn shift_loop(frame: &mut [u8], parsed: &mut Parsed, generation: u32) {
    let shift = generation.wrapping_mul(LOOP_SHIFT);
    if shift == 0 {
        return;
    }
    parsed.seq = parsed.seq.wrapping_add(shift);
    let mut t = tcp::Packet::new_unchecked(&mut frame[parsed.l4_offset..parsed.payload_offset]);
    t.set_seq_number(parsed.seq);
    if let Some((at, tsval, tsecr)) = t.find_timestamps() {
        t.set_timestamps(at, tsval.wrapping_add(shift), tsecr);
    }
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    to: (IpAddr, u16),
    last: Instant,
}

/// Why [`Tuples::map`] gave no pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleError {
    /// Every pair of the pool is in use (counted in `exhausted`).
    Exhausted,
    /// The client is of the other family than the target and `-c` has no address of the
    /// target's family.
    Family,
}

/// One worker's allocator.
pub struct Tuples {
    cfg: TupleConfig,
    worker: u16,
    workers: u16,
    /// (captured address, captured port, loop, replica) → pair.
    map: HashMap<(IpAddr, u16, u32, u16), Mapping>,
    used: HashSet<(IpAddr, u16)>,
    /// The `-c` addresses by family: IPv4, IPv6.
    pools: [Vec<IpAddr>; 2],
    /// Where the walk of each family's pool goes on (addresses × 65 536 ports: up to 2^32).
    cursors: [u64; 2],
    /// Allocations refused because the pool had no free pair.
    pub exhausted: u64,
    /// Mappings released after `idle`.
    pub released: u64,
    /// Walks of a pool for a free pair (each up to 65 536 × addresses probes).
    pub walks: u64,
    /// The last walk that found no free pair: (family, the captured address walked when the
    /// family has no `-c` pool, `released` then). Until a sweep releases a pair the same walk
    /// finds none again, so it is not repeated: with the pool full, a walk for every frame of
    /// every session that could not be mapped took the worker's whole core (a 100-loop replay
    /// of 1000 sessions from one address: 41 % of the worker in the used-set lookups).
    no_free: Option<(usize, Option<IpAddr>, u64)>,
}

impl Tuples {
    /// An allocator for worker `worker` of `workers`.
    pub fn new(cfg: TupleConfig, worker: u16, workers: u16) -> Self {
        let cap = if cfg.is_identity() { 0 } else { cfg.capacity };
        let pools = [
            cfg.addresses.iter().copied().filter(IpAddr::is_ipv4).collect(),
            cfg.addresses.iter().copied().filter(IpAddr::is_ipv6).collect(),
        ];
        Self {
            cfg,
            worker,
            workers: workers.max(1),
            map: HashMap::with_capacity(cap),
            used: HashSet::with_capacity(cap),
            pools,
            cursors: [0; 2],
            exhausted: 0,
            released: 0,
            walks: 0,
            no_free: None,
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

    /// The pair replica `replica` of the captured client `from` is sent as in replay loop
    /// `generation` (0 live) to a target of the family `v6`, allocating one if needed.
    ///
    /// # Errors
    /// [`TupleError::Exhausted`] when the pool has no free pair (counted), [`TupleError::Family`]
    /// when no pair of the target's family can be had (see the module docs).
    pub fn map(
        &mut self,
        now: Instant,
        from: (IpAddr, u16),
        generation: u32,
        replica: u16,
        v6: bool,
    ) -> Result<(IpAddr, u16), TupleError> {
        let key = (from.0, from.1, generation, replica);
        if let Some(m) = self.map.get_mut(&key) {
            m.last = now;
            return Ok(m.to);
        }
        let family = usize::from(v6);
        let pool_empty = self.pools[family].is_empty();
        if from.0.is_ipv6() != v6 && pool_empty {
            return Err(TupleError::Family);
        }
        if self.map.len() >= self.cfg.capacity {
            self.exhausted += 1;
            return Err(TupleError::Exhausted);
        }
        // The captured tuple itself when it is ours to use and free (replica 0 of the first
        // loop, no -c address of the family).
        let own = pool_empty && replica == 0 && generation == 0 && self.port_ok(from.1) && !self.used.contains(&from);
        let walk = (family, pool_empty.then_some(from.0), self.released);
        let to = if own {
            Some(from)
        } else if self.no_free == Some(walk) {
            None
        } else {
            self.walks += 1;
            let found = self.next_free(from.0, family);
            if found.is_none() {
                self.no_free = Some(walk);
            }
            found
        };
        let Some(to) = to else {
            self.exhausted += 1;
            return Err(TupleError::Exhausted);
        };
        self.used.insert(to);
        self.map.insert(key, Mapping { to, last: now });
        Ok(to)
    }

    /// Walks the pool of `family` (the captured address alone when `-c` has none of it) from its
    /// cursor for a free pair.
    fn next_free(&mut self, captured_ip: IpAddr, family: usize) -> Option<(IpAddr, u16)> {
        let ips: &[IpAddr] =
            if self.pools[family].is_empty() { std::slice::from_ref(&captured_ip) } else { &self.pools[family] };
        let n_ips = ips.len() as u64;
        let span = n_ips * 65_536;
        for _ in 0..span {
            let c = self.cursors[family];
            self.cursors[family] = (c + 1) % span;
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

/// Most addresses of one family `-c` may give (each has the whole port space: 64 512 ports).
pub const MAX_ADDRESSES: usize = 65_536;

/// Parses `-c`: IPv4 or IPv6 addresses, ranges `a.b.c.d-a.b.c.e` (`2001:db8::10-2001:db8::20`),
/// prefixes `a.b.c.d/nn` (`2001:db8::/64`), comma-separated. An IPv4 prefix leaves out its
/// network and broadcast addresses, an IPv6 prefix its subnet-router anycast address (host part
/// zero) and gives at most its first [`MAX_ADDRESSES`] addresses (a /64 has 2^64).
pub fn parse_addresses(value: &str) -> Result<Vec<IpAddr>, String> {
    let bad = |p: &str| {
        format!(
            "-c/--client-addresses {p:?}: expected IPv4 or IPv6 addresses, ranges or prefixes, e.g. \
             10.1.0.5,10.1.0.10-10.1.0.20,10.2.0.0/24 or 2001:db8:1::/64"
        )
    };
    let mut out = Vec::new();
    let mut counts = [0usize; 2];
    for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let before = out.len();
        if let Some((net, bits)) = part.split_once('/') {
            match net.parse::<IpAddr>().map_err(|_| bad(part))? {
                IpAddr::V4(net) => {
                    let bits: u32 = bits.parse().ok().filter(|b| (8..=32).contains(b)).ok_or_else(|| bad(part))?;
                    let base = u32::from(net) & (u32::MAX.checked_shl(32 - bits).unwrap_or(0));
                    let size = 1u64 << (32 - bits);
                    let (first, last) = if size > 2 { (1, size - 2) } else { (0, size - 1) };
                    out.extend((first..=last).map(|i| IpAddr::V4(Ipv4Addr::from(base + i as u32))));
                }
                IpAddr::V6(net) => {
                    let bits: u32 = bits.parse().ok().filter(|b| (1..=128).contains(b)).ok_or_else(|| bad(part))?;
                    let base = u128::from(net) & u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    // 0 when the prefix holds 2^128 addresses.
                    let size = 1u128.checked_shl(128 - bits).unwrap_or(0);
                    let first = u128::from(size == 0 || size > 2);
                    let n = if size == 0 { MAX_ADDRESSES as u128 } else { (size - first).min(MAX_ADDRESSES as u128) };
                    out.extend((0..n).map(|i| IpAddr::V6(Ipv6Addr::from(base + first + i))));
                }
            }
        } else if let Some((a, b)) = part.split_once('-') {
            match (a.parse::<IpAddr>().map_err(|_| bad(part))?, b.parse::<IpAddr>().map_err(|_| bad(part))?) {
                (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => {
                    out.extend((u32::from(a)..=u32::from(b)).take(MAX_ADDRESSES + 1).map(|i| IpAddr::V4(i.into())));
                }
                (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => {
                    out.extend((u128::from(a)..=u128::from(b)).take(MAX_ADDRESSES + 1).map(|i| IpAddr::V6(i.into())));
                }
                _ => return Err(bad(part)),
            }
        } else {
            out.push(part.parse::<IpAddr>().map_err(|_| bad(part))?);
        }
        for a in &out[before..] {
            counts[usize::from(a.is_ipv6())] += 1;
        }
        if counts.iter().any(|&n| n > MAX_ADDRESSES) {
            return Err(format!(
                "-c/--client-addresses: more than {MAX_ADDRESSES} addresses of one family in {value:?}"
            ));
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

    fn cfg(replicas: u16, addresses: Vec<IpAddr>) -> TupleConfig {
        TupleConfig {
            replicas,
            addresses,
            port_slot: None,
            idle: Duration::from_secs(60),
            capacity: 1 << 16,
            fresh_per_loop: false,
        }
    }

    const C: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn replicas_get_distinct_pairs_and_keep_them() {
        let mut t = Tuples::new(cfg(3, vec![]), 0, 1);
        let now = Instant::now();
        let pairs: Vec<_> = (0..3).map(|r| t.map(now, (C, 40000), 0, r, false).unwrap()).collect();
        assert_eq!(pairs[0], (C, 40000), "replica 0 keeps its own tuple");
        assert!(pairs[1] != pairs[0] && pairs[2] != pairs[0] && pairs[1] != pairs[2]);
        assert_eq!(t.map(now, (C, 40000), 0, 2, false), Ok(pairs[2]), "stable");
        // Another client whose own port was handed out to a replica gets another pair.
        let clash = pairs[1];
        let other = t.map(now, (clash.0, clash.1), 0, 0, false).unwrap();
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
                    let to = t.map(now, (C, 30000 + p), 0, r, false).unwrap();
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
        assert!(t.map(now, (C, 1), 0, 0, false).is_ok());
        assert!(t.map(now, (C, 2), 0, 0, false).is_ok());
        assert_eq!(t.map(now, (C, 3), 0, 0, false), Err(TupleError::Exhausted));
        assert_eq!(t.exhausted, 1);
        t.sweep(now + Duration::from_secs(61));
        assert_eq!(t.released, 2);
        assert!(t.map(now + Duration::from_secs(61), (C, 3), 0, 0, false).is_ok());
    }

    #[test]
    fn a_full_pool_is_walked_once_until_a_sweep_releases_a_pair() {
        // Worker 0 of 64 with port slot 0: ports 2048 k, k = 1..=31, of one address.
        let mut t = Tuples::new(TupleConfig { port_slot: Some(0), ..cfg(1, vec![C]) }, 0, 64);
        let now = Instant::now();
        for p in 0..31 {
            assert!(t.map(now, (C, 40_000 + p), 0, 0, false).is_ok());
        }
        let walks = t.walks;
        for p in 31..100 {
            assert_eq!(t.map(now, (C, 40_000 + p), 0, 0, false), Err(TupleError::Exhausted));
        }
        assert_eq!((t.walks, t.exhausted), (walks + 1, 69), "one walk found the pool full, the rest trusted it");
        // A released pair is found again.
        t.map(now + Duration::from_secs(30), (C, 40_000), 0, 0, false).unwrap();
        t.sweep(now + Duration::from_secs(61));
        assert_eq!(t.released, 30);
        assert!(t.map(now + Duration::from_secs(61), (C, 40_100), 0, 0, false).is_ok());
        // Another captured address, with no -c pool, has a port space of its own.
        let mut t = Tuples::new(TupleConfig { port_slot: Some(0), fresh_per_loop: true, ..cfg(1, vec![]) }, 0, 64);
        let other: IpAddr = Ipv4Addr::new(10, 0, 0, 77).into();
        for g in 0..31 {
            assert!(t.map(now, (C, 40_000), g, 0, false).is_ok());
        }
        assert_eq!(t.map(now, (C, 40_000), 31, 0, false), Err(TupleError::Exhausted));
        assert!(t.map(now, (other, 40_000), 1, 0, false).is_ok());
    }

    #[test]
    fn each_loop_gets_pairs_no_earlier_loop_used() {
        let mut t = Tuples::new(TupleConfig { fresh_per_loop: true, ..cfg(2, vec![]) }, 0, 1);
        assert!(!t.is_identity());
        let now = Instant::now();
        let mut seen = HashSet::new();
        for generation in 0..3 {
            for port in [40_000u16, 40_001, 50_000] {
                for r in 0..2 {
                    let to = t.map(now, (C, port), generation, r, false).unwrap();
                    assert!(seen.insert(to), "loop {generation} reuses {to:?}");
                    assert_eq!(t.map(now, (C, port), generation, r, false), Ok(to), "stable within a loop");
                }
            }
        }
        // Loop 0, replica 0 keeps the captured tuple; no later loop gets it.
        assert_eq!(t.map(now, (C, 40_000), 0, 0, false), Ok((C, 40_000)));
        // Idle mappings go back to the pool only after `idle`; the cursor moves on meanwhile.
        t.sweep(now + Duration::from_secs(61));
        assert_eq!(t.released, 18);
        let later = t.map(now + Duration::from_secs(61), (C, 40_000), 3, 0, false).unwrap();
        assert!(!seen.contains(&later), "a fresh pair after the sweep too: {later:?}");
    }

    #[test]
    fn a_loop_is_shifted_ahead_in_sequence_and_time() {
        use crate::wire::testdata;
        let mut frame = testdata::DATA_V4.to_vec();
        let mut p = crate::wire::parse::parse(&frame).unwrap().unwrap();
        let (seq, (_, tsval, tsecr)) =
            (p.seq, tcp::Packet::new_checked(&frame[p.l4_offset..]).unwrap().find_timestamps().unwrap());
        shift_loop(&mut frame, &mut p, 0);
        assert_eq!(p.seq, seq, "loop 0 is the capture");
        shift_loop(&mut frame, &mut p, 2);
        let t = tcp::Packet::new_checked(&frame[p.l4_offset..]).unwrap();
        assert_eq!((p.seq, t.seq_number()), (seq.wrapping_add(2 << 30), seq.wrapping_add(2 << 30)));
        let (_, v, e) = t.find_timestamps().unwrap();
        assert_eq!((v, e), (tsval.wrapping_add(2 << 30), tsecr));
    }

    #[test]
    fn address_lists_parse_and_errors_name_the_option() {
        assert_eq!(parse_addresses("10.0.0.1, 10.0.0.3").unwrap().len(), 2);
        assert_eq!(
            parse_addresses("10.0.0.0/30").unwrap(),
            vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))]
        );
        assert_eq!(parse_addresses("10.0.0.250-10.0.1.4").unwrap().len(), 11);
        for bad in ["", "x", "10.0.0.5-10.0.0.1", "10.0.0.0/40", "10.0.0.0/0", "10.0.0.1-2001:db8::1", "::/0x"] {
            assert!(parse_addresses(bad).unwrap_err().contains("-c/--client-addresses"), "{bad}");
        }
        assert!(parse_addresses("10.0.0.0/8").unwrap_err().contains("more than 65536"));
    }

    #[test]
    fn ipv6_lists_ranges_and_prefixes() {
        let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
        assert_eq!(parse_addresses("2001:db8::5").unwrap(), vec![v6("2001:db8::5")]);
        assert_eq!(
            parse_addresses("2001:db8::fffe-2001:db8::1:1").unwrap(),
            vec![v6("2001:db8::fffe"), v6("2001:db8::ffff"), v6("2001:db8::1:0"), v6("2001:db8::1:1")]
        );
        // A prefix leaves out its subnet-router anycast address; a /64 gives its first 65 536.
        assert_eq!(
            parse_addresses("2001:db8::/126").unwrap(),
            [v6("2001:db8::1"), v6("2001:db8::2"), v6("2001:db8::3")]
        );
        let big = parse_addresses("2001:db8:1:2::/64").unwrap();
        assert_eq!(big.len(), MAX_ADDRESSES);
        assert_eq!((big[0], big[MAX_ADDRESSES - 1]), (v6("2001:db8:1:2::1"), v6("2001:db8:1:2::1:0")));
        // Both families in one list, each within its own bound.
        let both = parse_addresses("10.9.0.0/16,2001:db8::/64").unwrap();
        assert_eq!(both.len(), 65_534 + MAX_ADDRESSES);
        assert_eq!(parse_addresses("2001:db8::/128").unwrap(), [v6("2001:db8::")]);
    }

    #[test]
    fn pairs_come_from_the_targets_family() {
        let list = parse_addresses("10.9.0.1,2001:db8::/126").unwrap();
        let mut t = Tuples::new(cfg(3, list.clone()), 0, 1);
        let now = Instant::now();
        let client6 = IpAddr::V6("2001:db8:ffff::7".parse().unwrap());
        // An IPv6 client of an IPv4 target gets IPv4 pairs; of an IPv6 target, IPv6 pairs of -c.
        let to4: Vec<_> = (0..3).map(|r| t.map(now, (client6, 5000), 0, r, false).unwrap()).collect();
        assert!(to4.iter().all(|(ip, _)| *ip == list[0]));
        let to6: Vec<_> = (0..3).map(|r| t.map(now, (client6, 5001), 0, r, true).unwrap()).collect();
        assert!(to6.iter().all(|(ip, _)| ip.is_ipv6() && list.contains(ip)));
        let mut all: Vec<_> = to4.iter().chain(&to6).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6, "distinct pairs");
        // No -c address of the target's family: the other family cannot be replayed, the same
        // keeps its own.
        let mut t = Tuples::new(cfg(1, vec![IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1))]), 0, 1);
        assert_eq!(t.map(now, (C, 5000), 0, 0, true), Err(TupleError::Family));
        assert_eq!(t.map(now, (client6, 5000), 0, 0, true), Ok((client6, 5000)));
        assert_eq!(t.exhausted, 0);
        // A whole /64's worth of addresses (65 536 × 65 536 pairs: the walk's span is 2^32).
        let mut t = Tuples::new(cfg(3, parse_addresses("2001:db8:5::/64").unwrap()), 1, 2);
        let pairs: Vec<_> = (0..3).map(|r| t.map(now, (client6, 80), 0, r, true).unwrap()).collect();
        assert!(pairs[0] != pairs[1] && pairs[1] != pairs[2] && pairs[0] != pairs[2]);
    }
}
