//! How an idle worker waits: spin while work keeps arriving sooner than a sleep would cost,
//! sleep otherwise, so that CPU follows the traffic.
//!
//! A sleep (a `ppoll` that blocks, then a wake-up) costs the worker a few microseconds of system
//! time and adds its wake-up latency; spinning costs all of the time spun. Spinning pays only
//! when the next frame or header comes within about that cost, [`SPIN_WINDOW`]. So after work
//! the worker spins up to its budget; a spin that runs out without work sets the budget to zero
//! (sleep at once from then on), and a sleep that ends with work sooner than the window sets it
//! back to the window (work is coming fast again). Under sparse traffic every event costs one
//! wake-up; under dense traffic the worker never sleeps. `--busy-poll` spins always (dedicated
//! cores, lowest latency).
//!
//! Pure logic: time is an argument, so the policy is unit-tested without a clock.

use std::time::{Duration, Instant};

/// Longest useful spin: about what a sleep and its wake-up cost.
pub const SPIN_WINDOW: Duration = Duration::from_micros(20);

/// What to do after a round without work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Run another round at once.
    Spin,
    /// Block until work arrives or the next timer is due.
    Sleep,
}

/// The spin/sleep policy of one worker.
#[derive(Clone, Debug)]
pub struct Policy {
    busy_poll: bool,
    budget: Duration,
    /// When the current run of idle rounds began (`None` while working or after a sleep).
    idle_since: Option<Instant>,
    /// When the last sleep began, until the round after it.
    slept_at: Option<Instant>,
}

impl Policy {
    /// A policy that adapts, or (`busy_poll`) one that never sleeps.
    pub fn new(busy_poll: bool) -> Self {
        Policy { busy_poll, budget: SPIN_WINDOW, idle_since: None, slept_at: None }
    }

    /// A round found work at `now`.
    pub fn work(&mut self, now: Instant) {
        if let Some(at) = self.slept_at.take() {
            if now.saturating_duration_since(at) < SPIN_WINDOW {
                // Work came sooner than the sleep was worth: spin again.
                self.budget = SPIN_WINDOW;
            }
        }
        self.idle_since = None;
    }

    /// A round found nothing at `now`: spin again, or sleep.
    pub fn idle(&mut self, now: Instant) -> Idle {
        if self.busy_poll {
            return Idle::Spin;
        }
        // Woken without work (a timer, the stop flag): the sleep was right.
        self.slept_at = None;
        let since = *self.idle_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.budget {
            return Idle::Spin;
        }
        if self.budget > Duration::ZERO {
            // The spin ran out: work is not coming fast enough to pay for spinning.
            self.budget = Duration::ZERO;
        }
        self.idle_since = None;
        self.slept_at = Some(now);
        Idle::Sleep
    }

    /// The current spin budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the policy with work arriving every `gap`, rounds taking `round`; returns the
    /// share of idle rounds that slept and the final budget.
    fn drive(gap: Duration, round: Duration, events: u32) -> (f64, Duration) {
        let mut p = Policy::new(false);
        let t0 = Instant::now();
        let mut now = t0;
        let (mut sleeps, mut idles) = (0u32, 0u32);
        for i in 1..=events {
            let next = t0 + gap * i;
            while now < next {
                idles += 1;
                match p.idle(now) {
                    Idle::Spin => now += round,
                    Idle::Sleep => {
                        sleeps += 1;
                        now = next;
                    }
                }
            }
            p.work(now);
            now += round;
        }
        (f64::from(sleeps) / f64::from(idles.max(1)), p.budget())
    }

    #[test]
    fn sparse_work_sleeps_at_once() {
        let (_, budget) = drive(Duration::from_millis(2), Duration::from_nanos(300), 100);
        assert_eq!(budget, Duration::ZERO);
        // After the first miss every idle spell is one round that sleeps.
        let mut p = Policy::new(false);
        let t = Instant::now();
        p.idle(t);
        assert_eq!(p.idle(t + SPIN_WINDOW), Idle::Sleep);
        p.work(t + Duration::from_millis(2));
        assert_eq!(p.idle(t + Duration::from_millis(2)), Idle::Sleep);
    }

    #[test]
    fn dense_work_keeps_spinning() {
        let (sleep_share, budget) = drive(Duration::from_micros(3), Duration::from_nanos(300), 1000);
        assert_eq!(budget, SPIN_WINDOW);
        assert_eq!(sleep_share, 0.0);
    }

    #[test]
    fn work_soon_after_a_sleep_brings_spinning_back() {
        let mut p = Policy::new(false);
        let t = Instant::now();
        assert_eq!(p.idle(t), Idle::Spin);
        assert_eq!(p.idle(t + SPIN_WINDOW), Idle::Sleep);
        assert_eq!(p.budget(), Duration::ZERO);
        p.work(t + SPIN_WINDOW + Duration::from_micros(5));
        assert_eq!(p.budget(), SPIN_WINDOW);
        assert_eq!(p.idle(t + SPIN_WINDOW + Duration::from_micros(6)), Idle::Spin);
    }

    #[test]
    fn busy_poll_never_sleeps() {
        let mut p = Policy::new(true);
        let t = Instant::now();
        assert!((0..1000).all(|i| p.idle(t + Duration::from_millis(i)) == Idle::Spin));
    }
}
