//! Worker counters: plain integers in the worker, published to cache-line-aligned atomics a few
//! times per millisecond at most, read and diffed by the stats thread. No counter is ever shared
//! between cores with `fetch_add`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a worker dropped a frame. Every drop has a named counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// Headers broken (details in the `malformed_*` counters).
    Malformed = 0,
    /// Not IPv4/IPv6 TCP (the XDP program should not have redirected it).
    NotTcp,
    /// TCP, but no `-x` entry matches its destination address and port.
    NoTransfer,
    /// The frame's address family differs from its transfer's target.
    FamilyMismatch,
    /// Larger than the output interface's MTU (splitting arrives with session mode).
    TooBig,
    /// The TX ring had no room.
    TxRingFull,
    /// An RX descriptor pointing outside the UMEM (kernel bug or corruption).
    BadDescriptor,
    /// Not in the sampled share of sessions (`-r`, `-g`).
    SampledOut,
}

impl Drop {
    /// Number of reasons.
    pub const COUNT: usize = 8;
    /// All reasons, in index order.
    pub const ALL: [Drop; Self::COUNT] = [
        Drop::Malformed,
        Drop::NotTcp,
        Drop::NoTransfer,
        Drop::FamilyMismatch,
        Drop::TooBig,
        Drop::TxRingFull,
        Drop::BadDescriptor,
        Drop::SampledOut,
    ];

    /// Counter name.
    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::NotTcp => "not_tcp",
            Drop::NoTransfer => "no_transfer",
            Drop::FamilyMismatch => "family_mismatch",
            Drop::TooBig => "too_big",
            Drop::TxRingFull => "tx_ring_full",
            Drop::BadDescriptor => "bad_descriptor",
            Drop::SampledOut => "sampled_out",
        }
    }
}

/// Slots for the per-reason malformed counters (indexed by `wire::Error as usize`).
pub const MALFORMED_SLOTS: usize = 16;

/// The worker's private counters (no atomics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames taken from the RX ring.
    pub rx_frames: u64,
    /// Bytes taken from the RX ring.
    pub rx_bytes: u64,
    /// Frames put on the TX ring.
    pub tx_frames: u64,
    /// Bytes put on the TX ring.
    pub tx_bytes: u64,
    /// Frames the kernel reported sent (completion ring).
    pub tx_completed: u64,
    /// `sendto` kicks that failed with an unexpected errno.
    pub tx_kick_errors: u64,
    /// Fill-ring `recvfrom` kicks that failed with an unexpected errno.
    pub rx_kick_errors: u64,
    /// Times the worker blocked in `poll()` for lack of work.
    pub idle_waits: u64,
    /// Response headers from the channel that did not parse.
    pub bad_headers: u64,
    /// Frames the session engine wanted to build while no UMEM frame was free.
    pub no_free_frame: u64,
    /// Session copies not replayed because the client tuple pool had no free pair (-n, -c, -f).
    pub tuple_exhausted: u64,
    /// Drops by reason.
    pub drops: [u64; Drop::COUNT],
    /// Malformed frames by parse error.
    pub malformed: [u64; MALFORMED_SLOTS],
}

impl Counters {
    /// Counts a drop.
    #[inline]
    pub fn drop(&mut self, why: Drop) {
        self.drops[why as usize] += 1;
    }

    /// Sum of all drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds `other` into `self` (aggregation over workers).
    pub fn add(&mut self, other: &Counters) {
        self.rx_frames += other.rx_frames;
        self.rx_bytes += other.rx_bytes;
        self.tx_frames += other.tx_frames;
        self.tx_bytes += other.tx_bytes;
        self.tx_completed += other.tx_completed;
        self.tx_kick_errors += other.tx_kick_errors;
        self.rx_kick_errors += other.rx_kick_errors;
        self.idle_waits += other.idle_waits;
        self.bad_headers += other.bad_headers;
        self.no_free_frame += other.no_free_frame;
        self.tuple_exhausted += other.tuple_exhausted;
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a += b;
        }
        for (a, b) in self.malformed.iter_mut().zip(other.malformed) {
            *a += b;
        }
    }
}

const SCALARS: usize = 11;
const FIELDS: usize = SCALARS + Drop::COUNT + MALFORMED_SLOTS;

/// The published copy of one worker's counters, on its own cache lines.
#[repr(align(128))]
pub struct Published {
    words: [AtomicU64; FIELDS],
    /// Frames taken from the RX ring, stored after every batch (not only at publish): the
    /// offline feed's backpressure reads it.
    pub rx_live: AtomicU64,
    /// Set once the worker has posted its first frames to the fill ring (the offline feed
    /// starts only then, or its first burst would find the fill ring empty).
    pub ready: std::sync::atomic::AtomicBool,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            words: std::array::from_fn(|_| AtomicU64::new(0)),
            rx_live: AtomicU64::new(0),
            ready: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Published {
    /// Stores the worker's counters (called by the owning worker only).
    pub fn publish(&self, c: &Counters) {
        let scalars: [u64; SCALARS] = [
            c.rx_frames,
            c.rx_bytes,
            c.tx_frames,
            c.tx_bytes,
            c.tx_completed,
            c.tx_kick_errors,
            c.idle_waits,
            c.bad_headers,
            c.no_free_frame,
            c.tuple_exhausted,
            c.rx_kick_errors,
        ];
        let values = scalars.iter().chain(c.drops.iter()).chain(c.malformed.iter());
        for (w, v) in self.words.iter().zip(values) {
            w.store(*v, Ordering::Relaxed);
        }
    }

    /// Reads a snapshot (any thread).
    pub fn snapshot(&self) -> Counters {
        let v: [u64; FIELDS] = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
        Counters {
            rx_frames: v[0],
            rx_bytes: v[1],
            tx_frames: v[2],
            tx_bytes: v[3],
            tx_completed: v[4],
            tx_kick_errors: v[5],
            idle_waits: v[6],
            bad_headers: v[7],
            no_free_frame: v[8],
            tuple_exhausted: v[9],
            rx_kick_errors: v[10],
            drops: std::array::from_fn(|i| v[SCALARS + i]),
            malformed: std::array::from_fn(|i| v[SCALARS + Drop::COUNT + i]),
        }
    }
}

/// A published array of counters whose names the owner knows (the session engine's).
pub struct PublishedArray {
    words: Box<[AtomicU64]>,
}

impl PublishedArray {
    /// Creates `n` zeroed counters.
    pub fn new(n: usize) -> Self {
        Self { words: (0..n).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Stores values in order (owning worker only); extra values are ignored.
    pub fn publish(&self, values: impl Iterator<Item = u64>) {
        for (w, v) in self.words.iter().zip(values) {
            w.store(v, Ordering::Relaxed);
        }
    }

    /// Adds this array's values into `sum` (any thread).
    pub fn add_into(&self, sum: &mut [u64]) {
        for (s, w) in sum.iter_mut().zip(self.words.iter()) {
            *s += w.load(Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_every_field() {
        let mut c = Counters {
            rx_frames: 1,
            rx_bytes: 2,
            tx_frames: 3,
            tx_bytes: 4,
            tx_completed: 5,
            tx_kick_errors: 6,
            idle_waits: 7,
            bad_headers: 8,
            no_free_frame: 9,
            tuple_exhausted: 10,
            rx_kick_errors: 11,
            ..Default::default()
        };
        c.drops = std::array::from_fn(|i| 100 + i as u64);
        c.malformed = std::array::from_fn(|i| 200 + i as u64);
        let p = Published::default();
        p.publish(&c);
        assert_eq!(p.snapshot(), c);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(sum.rx_frames, 2);
        assert_eq!(sum.drops[3], 206);
        assert_eq!(sum.dropped(), 2 * c.dropped());
    }
}
