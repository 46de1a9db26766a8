//! The worker side: per-interval histograms and the lock-free exchange with the control thread.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;

use super::Metric;

/// The lowest discernible value of every latency histogram, in ns.
pub const LOWEST_NS: u64 = 1;
/// The highest trackable value of every latency histogram, in ns (60 s); larger values clamp.
pub const HIGHEST_NS: u64 = 60_000_000_000;
/// The significant value digits of every latency histogram.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Creates an empty latency histogram in ns (1 ns ..= 60 s, 3 significant digits, no auto-resize).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS).expect("constant histogram bounds are valid")
}

/// One worker's histograms for the current interval.
///
/// Recording is allocation-free and lock-free: the histograms are allocated once, in
/// [`Recorder::new`], and never resized.
#[derive(Debug, Clone)]
pub struct Recorder {
    histograms: [Histogram<u64>; Metric::COUNT],
    clamped: u64,
}

impl Recorder {
    /// Creates a recorder with one empty histogram per metric (about 220 KiB each).
    pub fn new() -> Self {
        Self { histograms: std::array::from_fn(|_| new_histogram()), clamped: 0 }
    }

    /// Records one latency sample of `ns` nanoseconds; values above [`HIGHEST_NS`] are recorded
    /// as [`HIGHEST_NS`] and counted in [`Recorder::clamped`].
    #[inline]
    pub fn record(&mut self, m: Metric, ns: u64) {
        if ns > HIGHEST_NS {
            self.clamped += 1;
        }
        self.histograms[m.index()].saturating_record(ns);
    }

    /// Clears every histogram and the clamp counter, keeping the allocations.
    pub fn reset(&mut self) {
        for h in &mut self.histograms {
            h.reset();
        }
        self.clamped = 0;
    }

    /// Returns true if no sample was recorded since the last reset.
    pub fn is_empty(&self) -> bool {
        self.histograms.iter().all(Histogram::is_empty)
    }

    /// Returns the histogram of metric `m` (values in ns).
    pub fn histogram(&self, m: Metric) -> &Histogram<u64> {
        &self.histograms[m.index()]
    }

    /// Returns the number of samples above [`HIGHEST_NS`] recorded since the last reset.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Workers hand full interval recorders to the control thread and get cleared ones back.
///
/// Two bounded lock-free queues: `full` (worker → control, tagged with the worker index) and
/// `spares` (control → workers). Both hold every recorder that exists (one per worker plus the
/// spares), so a push never fails while recorders are only moved around, and steady state
/// allocates nothing. Neither side ever blocks: a worker that finds no spare keeps its own
/// recorder, cleared, and the interval is counted as lost.
#[derive(Debug)]
pub struct RecorderExchange {
    full: ArrayQueue<(usize, Box<Recorder>)>,
    spares: ArrayQueue<Box<Recorder>>,
    lost: Box<[AtomicU64]>,
}

impl RecorderExchange {
    /// Creates the exchange for `worker_count` workers with `spares` cleared recorders ready
    /// (use at least `worker_count` so every worker can swap once per control tick).
    ///
    /// Each worker creates its own first recorder (`Box::new(Recorder::new())`) at start.
    pub fn new(worker_count: usize, spares: usize) -> Self {
        let capacity = (worker_count + spares).max(1);
        let spare_queue = ArrayQueue::new(capacity);
        for _ in 0..spares {
            // Cannot fail: capacity >= spares.
            let _ = spare_queue.push(Box::new(Recorder::new()));
        }
        Self {
            full: ArrayQueue::new(capacity),
            spares: spare_queue,
            lost: (0..worker_count).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Worker side: hands over `full` and returns a cleared recorder to record into.
    ///
    /// Never blocks and never allocates: if no spare is available (the control thread is
    /// behind), `full` comes back cleared and the interval is counted as lost for `worker`.
    pub fn swap(&self, worker: usize, mut full: Box<Recorder>) -> Box<Recorder> {
        let Some(spare) = self.spares.pop() else {
            full.reset();
            self.count_lost(worker);
            return full;
        };
        match self.full.push((worker, full)) {
            Ok(()) => spare,
            Err((_, mut full)) => {
                // Only reachable if recorders were added from outside; recycle, never block.
                full.reset();
                self.count_lost(worker);
                let _ = self.spares.push(spare);
                full
            }
        }
    }

    /// Control side: calls `f(worker, recorder)` for every handed-over recorder, then clears it
    /// and returns it as a spare; returns how many were drained.
    pub fn drain(&self, mut f: impl FnMut(usize, &Recorder)) -> usize {
        let mut n = 0;
        while let Some((worker, mut rec)) = self.full.pop() {
            f(worker, &rec);
            rec.reset();
            let _ = self.spares.push(rec);
            n += 1;
        }
        n
    }

    /// Returns the number of workers the exchange was created for.
    pub fn worker_count(&self) -> usize {
        self.lost.len()
    }

    /// Returns the number of cleared recorders waiting for a worker.
    pub fn spares_available(&self) -> usize {
        self.spares.len()
    }

    /// Returns the number of intervals lost by `worker` (0 for an unknown worker).
    pub fn lost_intervals(&self, worker: usize) -> u64 {
        self.lost.get(worker).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Returns the number of intervals lost by all workers.
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn count_lost(&self, worker: usize) {
        // Rare (the control thread is behind), so one shared atomic add per event is fine.
        if let Some(c) = self.lost.get(worker) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_reset() {
        let mut r = Recorder::new();
        assert!(r.is_empty());
        r.record(Metric::Handshake, 1500);
        r.record(Metric::Handshake, 0);
        r.record(Metric::Dataplane, HIGHEST_NS + 1);
        assert!(!r.is_empty());
        assert_eq!(r.histogram(Metric::Handshake).len(), 2);
        assert_eq!(r.histogram(Metric::TestResponse).len(), 0);
        assert_eq!(r.clamped(), 1);
        assert!(r.histogram(Metric::Dataplane).max() >= HIGHEST_NS);
        r.reset();
        assert!(r.is_empty());
        assert_eq!(r.clamped(), 0);
    }

    #[test]
    fn histogram_shape_matches_java_defaults() {
        let h = new_histogram();
        assert_eq!(h.buckets(), 26);
        assert_eq!(h.distinct_values(), 27 * 1024);
        assert!(!h.is_auto_resize());
    }
}
