//! The wake-up queue of a worker's sessions: a preallocated min-heap of
//! `(deadline, slot, generation)`.
//!
//! Each session keeps its own deadlines (RTO, delayed ACK, ...) and at most one *scheduled*
//! heap entry, for the earliest of them. When a deadline moves earlier a new entry is pushed
//! (the old one becomes stale); when it moves later nothing is pushed: the old entry fires
//! early, finds nothing due, and the session is rescheduled. Stale entries are skipped on pop
//! by comparing with the session's generation and scheduled deadline, and pruned from the top
//! after every event so that the earliest entry is a live one. If stale entries fill the
//! heap, the owner rebuilds it from the sessions (one entry each), so it never grows.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A heap entry: when, which slot, which occupant of the slot.
pub(crate) type Entry = (Instant, u32, u32);

/// The heap, with a fixed capacity.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    cap: usize,
}

impl Timers {
    /// Preallocate room for `cap` entries.
    pub fn new(cap: usize) -> Timers {
        Timers { heap: BinaryHeap::with_capacity(cap), cap }
    }

    /// Push an entry; false (nothing pushed) if the heap is full.
    pub fn push(&mut self, e: Entry) -> bool {
        if self.heap.len() >= self.cap {
            return false;
        }
        self.heap.push(Reverse(e));
        true
    }

    /// Return the earliest entry.
    pub fn peek(&self) -> Option<Entry> {
        self.heap.peek().map(|r| r.0)
    }

    /// Remove the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.0 <= now => self.heap.pop().map(|r| r.0),
            _ => None,
        }
    }

    /// Remove the earliest entry.
    pub fn pop(&mut self) -> Option<Entry> {
        self.heap.pop().map(|r| r.0)
    }

    /// Drop every entry (the capacity is kept).
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ordered_and_bounded() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::new(3);
        assert!(t.push((t0 + ms(30), 1, 0)));
        assert!(t.push((t0 + ms(10), 2, 0)));
        assert!(t.push((t0 + ms(20), 3, 0)));
        assert!(!t.push((t0, 4, 0)));
        assert_eq!(t.peek(), Some((t0 + ms(10), 2, 0)));
        assert_eq!(t.pop_due(t0 + ms(5)), None);
        assert_eq!(t.pop_due(t0 + ms(25)), Some((t0 + ms(10), 2, 0)));
        assert_eq!(t.pop_due(t0 + ms(25)), Some((t0 + ms(20), 3, 0)));
        assert_eq!(t.pop_due(t0 + ms(25)), None);
        t.clear();
        assert_eq!(t.peek(), None);
    }
}
