//! Production latency across workers: a request and the online server's response usually land
//! on different RX queues (the queue is chosen by a hash of the 4-tuple, which differs by
//! direction), so different workers handle them, in either order — on a keep-alive connection
//! the next request may even be handled before the previous response. So a request is keyed by
//! (client, the sequence number its data ends at) and a response by (client, its ack number):
//! the response to a request acks exactly that request's end. This table is the meeting point:
//! one `AtomicU64` slot per key hash holding a 15-bit tag of the key, a bit saying which side came
//! first, and a 48-bit XDP arrival stamp (ns). Whichever side comes second computes response
//! arrival − request arrival and clears the slot; times are the XDP program's arrival stamps,
//! so the order the workers run in does not matter. A collision loses a sample, never pairs
//! wrong keys (the tag must match). For a request of several segments the time is taken from
//! its last segment (the one whose end the response acks). One atomic per request and per
//! response segment, none per other packet.

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

const TS_BITS: u32 = 48;
const TS_MASK: u64 = (1 << TS_BITS) - 1;
/// Set when the response was seen first.
const RESP: u64 = 1 << TS_BITS;

/// The shared table (one per copier).
pub struct ProductionTable {
    slots: Box<[AtomicU64]>,
}

impl ProductionTable {
    /// Creates a table of `2^bits` slots.
    pub fn new(bits: u32) -> Self {
        Self { slots: (0..1usize << bits).map(|_| AtomicU64::new(0)).collect() }
    }

    fn slot(&self, client: SocketAddr, seq: u32) -> (&AtomicU64, u64) {
        let ip = match client.ip() {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v as u64) ^ ((v >> 64) as u64).rotate_left(17)
            }
        };
        let k = ((ip << 16) | u64::from(client.port())) ^ (u64::from(seq) << 29);
        // Fibonacci hashing: slot from the high bits, tag from 15 others (never 0: empty).
        let h = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let idx = (h >> 32) as usize & (self.slots.len() - 1);
        let tag = ((h >> 8) & 0x7fff).max(1);
        (&self.slots[idx], tag << (TS_BITS + 1))
    }

    /// A request segment from `client` whose data ends at `seq_end` arrived at `arrival_ns`.
    /// Returns the latency if its response had been handled first.
    pub fn request(&self, client: SocketAddr, seq_end: u32, arrival_ns: u64) -> Option<u64> {
        let (slot, tag) = self.slot(client, seq_end);
        let mine = tag | (arrival_ns & TS_MASK);
        loop {
            let cur = slot.load(Ordering::Acquire);
            if cur != 0 && cur & !(RESP | TS_MASK) == tag && cur & RESP != 0 {
                if slot.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return Some(elapsed(mine, cur & TS_MASK)).filter(|d| *d < STALE_NS);
                }
                continue;
            }
            if slot.compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return None;
            }
        }
    }

    /// A response segment (with payload) to `client` acking `ack` arrived at `arrival_ns`.
    /// Returns the latency if the request was handled first and this is the response's first
    /// segment.
    pub fn response(&self, client: SocketAddr, ack: u32, arrival_ns: u64) -> Option<u64> {
        let (slot, tag) = self.slot(client, ack);
        let mine = tag | RESP | (arrival_ns & TS_MASK);
        loop {
            let cur = slot.load(Ordering::Acquire);
            if cur != 0 && cur & !(RESP | TS_MASK) == tag {
                if cur & RESP != 0 {
                    return None; // a later segment of a response already stamped
                }
                if slot.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return Some(elapsed(cur, arrival_ns)).filter(|d| *d < STALE_NS);
                }
                continue;
            }
            if slot.compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return None;
            }
        }
    }
}

/// A stamp older than this is stale (its other half was never captured).
const STALE_NS: u64 = 10_000_000_000;

/// `later - stamp`, both 48-bit arrival times.
fn elapsed(stamp: u64, later_ns: u64) -> u64 {
    (later_ns & TS_MASK).wrapping_sub(stamp & TS_MASK) & TS_MASK
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn requests_meet_their_responses_in_any_order() {
        let t = ProductionTable::new(10);
        let c = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000));
        // Request 1 (ends at 1100) then its response, two segments acking 1100.
        assert_eq!(t.request(c, 1100, MS), None);
        assert_eq!(t.response(c, 1100, 5 * MS), Some(4 * MS));
        assert_eq!(t.response(c, 1100, 6 * MS), None, "a later segment of the same response");
        // Keep-alive reordering: request 2 handled, then request 3 before response 2.
        assert_eq!(t.request(c, 1200, 10 * MS), None);
        assert_eq!(t.request(c, 1300, 14 * MS), None);
        assert_eq!(t.response(c, 1200, 12 * MS), Some(2 * MS));
        // Response 3 handled before request 3 by the other worker... already stamped above;
        // request 4's response handled first:
        assert_eq!(t.response(c, 1300, 15 * MS), Some(MS));
        assert_eq!(t.response(c, 1400, 22 * MS), None);
        assert_eq!(t.request(c, 1400, 20 * MS), Some(2 * MS));
        // Other clients never pair.
        let other = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000));
        assert_eq!(t.request(c, 1500, 30 * MS), None);
        assert_eq!(t.response(other, 1500, 31 * MS), None);
        // IPv6 clients pair the same way.
        let c6: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        assert_eq!(t.request(c6, 2000, 40 * MS), None);
        assert_eq!(t.response(c6, 2000, 47 * MS), Some(7 * MS));
    }
}
