//! Worker counters: plain integers in the worker, published to cache-line-aligned atomics a few
//! times per millisecond at most, read and summed by the stats thread. No counter is ever shared
//! between cores with `fetch_add`. The declarations here (and the session engine's, the XDP
//! program's, the control thread's) are the copier's counter model: every name in the stats
//! line, the summary, the JSON and Prometheus comes from them (see [`control::counters`]).

use std::sync::atomic::AtomicBool;

use crate::{wire, xsk};

control::labels! {
    /// Why a worker dropped a frame. Every drop has a named counter.
    pub enum DropReason: "reason" {
        /// Headers broken (details in the `malformed_*` counters).
        Malformed = "malformed",
        /// Not IPv4/IPv6 TCP (the XDP program should not have redirected it).
        NotTcp = "not_tcp",
        /// TCP, but no `-x` entry matches its destination address and port.
        NoTransfer = "no_transfer",
        /// The frame's address family differs from its transfer's target.
        FamilyMismatch = "family_mismatch",
        /// Larger than the output interface's MTU (stateless mode does not split).
        TooBig = "too_big",
        /// The TX ring had no room.
        TxRingFull = "tx_ring_full",
        /// An RX descriptor pointing outside the UMEM (kernel bug or corruption).
        BadDescriptor = "bad_descriptor",
        /// Not in the sampled share of sessions (`-r`, `-g`).
        SampledOut = "sampled_out",
        /// The rewrite found a layout other than the parse described (a bug if it ever counts).
        ParseMismatch = "parse_mismatch",
    }
}

control::counters! {
    /// The worker's private counters (no atomics).
    #[derive(Copy)]
    pub struct Counters {
        /// Frames taken from the RX ring.
        counter rx_frames,
        /// Bytes taken from the RX ring.
        counter rx_bytes,
        /// Frames put on the TX ring.
        counter tx_frames,
        /// Bytes put on the TX ring.
        counter tx_bytes,
        /// Frames the kernel reported sent (completion ring).
        counter tx_completed,
        /// `sendto` kicks that failed with an unexpected errno.
        counter tx_kick_errors,
        /// Fill-ring `recvfrom` kicks that failed with an unexpected errno.
        counter rx_kick_errors,
        /// Transmit attempts that found the output link down (the worker retries every 100 ms).
        counter tx_link_down,
        /// Times the worker blocked in `poll()` for lack of work.
        counter idle_waits,
        /// Response headers from the channel that did not parse.
        counter bad_headers,
        /// Frames the session engine wanted to build while no UMEM frame was free.
        counter no_free_frame,
        /// Session copies not replayed because the client tuple pool had no free pair (-n, -c, -f).
        counter tuple_exhausted,
        /// UMEM frames free now (neither in the fill, RX or TX rings nor in flight).
        gauge frames_free,
        /// Frames on the TX ring or in flight now (submitted, not completed).
        gauge frames_in_flight,
        /// Frames dropped, all reasons.
        counter dropped,
        /// Frames dropped, by reason.
        counter drop[DropReason],
        /// Malformed frames, by parse error.
        counter malformed[wire::Error],
    }
}

impl Counters {
    /// Counts a drop.
    #[inline]
    pub fn drop(&mut self, why: DropReason) {
        self.dropped += 1;
        self.drop[why] += 1;
    }

    /// Counts a malformed frame (a drop with reason `malformed`, and its parse error).
    #[inline]
    pub fn malformed(&mut self, e: wire::Error) {
        self.drop(DropReason::Malformed);
        self.malformed[e] += 1;
    }
}

/// What one worker shares with the stats thread.
#[derive(Default)]
pub struct Published {
    /// The worker's counters, published every few thousand iterations and before it sleeps.
    pub counters: control::counters::Published<Counters>,
    /// The session engine's counters (session mode).
    pub session: control::counters::Published<crate::session::Counters>,
    /// Set once the worker has posted its first frames to the fill ring (the offline feed
    /// starts only then, or its first burst would find the fill ring empty).
    pub ready: AtomicBool,
}

control::counters! {
    /// Kernel statistics of the AF_XDP sockets (`XDP_STATISTICS`), summed over sockets.
    #[derive(Copy)]
    pub struct XskCounters {
        /// Frames the kernel dropped for reasons other than a full RX ring / empty fill ring.
        counter rx_dropped,
        /// Frames dropped because the RX ring was full (the worker fell behind).
        counter rx_ring_full,
        /// Times a frame arrived while the fill ring was empty.
        counter fill_empty,
        /// Invalid descriptors on the fill ring.
        counter rx_invalid,
        /// Invalid descriptors on the TX ring.
        counter tx_invalid,
        /// Times the kernel found the TX ring empty when asked to send.
        counter tx_ring_empty,
    }
}

impl XskCounters {
    /// Adds one socket's statistics.
    pub fn add_socket(&mut self, s: &xsk::Statistics) {
        self.rx_dropped += s.rx_dropped;
        self.rx_ring_full += s.rx_ring_full;
        self.fill_empty += s.rx_fill_ring_empty;
        self.rx_invalid += s.rx_invalid_descs;
        self.tx_invalid += s.tx_invalid_descs;
        self.tx_ring_empty += s.tx_ring_empty;
    }
}

#[cfg(test)]
mod tests {
    use control::counters::CounterSet;

    use super::*;

    #[test]
    fn publish_round_trips_every_field() {
        let mut c = Counters::default();
        let mut n = 0;
        c.visit_mut(&mut |v| {
            n += 1;
            *v = n;
        });
        let p = Published::default();
        p.counters.publish(&c);
        assert_eq!(p.counters.snapshot(), c);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(sum.rx_frames, 2 * c.rx_frames);
        assert_eq!(sum.drop[DropReason::FamilyMismatch], 2 * c.drop[DropReason::FamilyMismatch]);
    }

    #[test]
    fn a_drop_counts_its_reason_and_the_total() {
        let mut c = Counters::default();
        c.drop(DropReason::TxRingFull);
        c.malformed(wire::Error::Truncated);
        assert_eq!((c.dropped, c.drop[DropReason::TxRingFull], c.drop[DropReason::Malformed]), (2, 1, 1));
        assert_eq!(c.malformed[wire::Error::Truncated], 1);
        let names: Vec<String> = c.named().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"drop_tx_ring_full".to_string()));
        assert!(names.contains(&"malformed_truncated".to_string()));
    }
}
