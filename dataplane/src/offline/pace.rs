//! [`Pacer`]: when each packet of an offline replay may go (reference §3.20).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// A backwards jump in capture time longer than this is a clock step, not reordering.
///
/// Up to it, a packet stamped earlier than its predecessor is sent right after it and the
/// timeline keeps the later stamp (multi-queue captures reorder by µs…ms; the packets after keep
/// their original spacing). Beyond it, the capture clock was stepped back (NTP, a merged
/// file): the timeline follows the new clock from that packet on, instead of holding every
/// later packet until the old clock is reached again and then bursting.
pub const CLOCK_STEP: Duration = Duration::from_secs(1);

/// Replay speed (`-a N`): N times faster than captured; finite and > 0.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Speed(f64);

/// A speed that is not a finite number > 0.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("the replay speed must be a finite number greater than 0 (got {0})")]
pub struct InvalidSpeed(pub f64);

impl Speed {
    /// Real time (1×).
    pub const REAL_TIME: Speed = Speed(1.0);

    /// Check a speed factor.
    ///
    /// # Errors
    ///
    /// `factor` is not finite or not greater than 0.
    pub fn new(factor: f64) -> Result<Speed, InvalidSpeed> {
        if factor.is_finite() && factor > 0.0 {
            Ok(Speed(factor))
        } else {
            Err(InvalidSpeed(factor))
        }
    }

    /// The factor.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for Speed {
    fn default() -> Speed {
        Speed::REAL_TIME
    }
}

/// How to pace an offline replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaceOptions {
    /// `-a`: N× faster than captured.
    pub speed: Speed,
    /// `-I`: every gap between consecutive packets longer than this is cut to it.
    pub max_gap: Option<Duration>,
    /// No waiting at all: as fast as the worker can send.
    pub topspeed: bool,
    /// `-T`: how many times to replay the file.
    pub loops: NonZeroU32,
}

impl Default for PaceOptions {
    fn default() -> PaceOptions {
        PaceOptions { speed: Speed::REAL_TIME, max_gap: None, topspeed: false, loops: NonZeroU32::MIN }
    }
}

/// Decides when each packet of an offline replay may go. Pure logic: time is an argument.
///
/// The *timeline* `E` is capture time since the first packet, built gap by gap:
///
/// - the gap to the previous packet, `ts - previous ts`, is cut to `max_gap` when longer (the
///   cut is added to [`Pacer::skipped`]); the packets after it keep their spacing;
/// - a packet stamped earlier than its predecessor adds no gap (never a negative wait, never a
///   reorder); see [`CLOCK_STEP`] for what "predecessor" means after a long backwards jump;
/// - the first packet of a new loop ([`Pacer::new_loop`]) adds no gap: loop *k+1* starts right
///   after the last packet of loop *k*, and `E` keeps growing.
///
/// A packet may go at `anchor + (E - E_anchor) / speed`, the anchor being the start instant
/// until [`Pacer::rebase`] moves it. A sender that falls a little behind catches up (packets go
/// at once until it is on time again, as in the original); after a long stall, or the pause
/// between loops, call [`Pacer::rebase`] to continue from "now" instead of bursting.
#[derive(Clone, Debug)]
pub struct Pacer {
    speed: f64,
    max_gap: Option<Duration>,
    topspeed: bool,
    loops: u32,
    loop_index: u32,
    /// The next packet starts a loop.
    loop_start: bool,
    /// Capture time the next gap is measured from.
    last_ts: Duration,
    /// The timeline `E` of the last admitted packet.
    elapsed: Duration,
    skipped: Duration,
    backwards: u64,
    anchor: Instant,
    anchor_elapsed: Duration,
}

impl Pacer {
    /// Start a replay whose first packet has capture time `first_ts` and may go at `start`.
    pub fn new(options: &PaceOptions, first_ts: Duration, start: Instant) -> Pacer {
        Pacer {
            speed: options.speed.get(),
            max_gap: options.max_gap,
            topspeed: options.topspeed,
            loops: options.loops.get(),
            loop_index: 0,
            loop_start: false,
            last_ts: first_ts,
            elapsed: Duration::ZERO,
            skipped: Duration::ZERO,
            backwards: 0,
            anchor: start,
            anchor_elapsed: Duration::ZERO,
        }
    }

    /// Admit the next packet (call once per packet, in file order): how long to wait before it
    /// may go, `None` for now.
    pub fn due(&mut self, pkt_ts: Duration, now: Instant) -> Option<Duration> {
        let gap = if self.loop_start {
            self.loop_start = false;
            self.last_ts = pkt_ts;
            Duration::ZERO
        } else if let Some(gap) = pkt_ts.checked_sub(self.last_ts) {
            self.last_ts = pkt_ts;
            gap
        } else {
            self.backwards += 1;
            if self.last_ts - pkt_ts > CLOCK_STEP {
                self.last_ts = pkt_ts;
            }
            Duration::ZERO
        };
        let gap = match self.max_gap {
            Some(max) if gap > max => {
                self.skipped += gap - max;
                max
            }
            _ => gap,
        };
        self.elapsed = self.elapsed.saturating_add(gap);
        self.remaining(now)
    }

    /// How long the last admitted packet must still wait, `None` if it may go now.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        if self.topspeed {
            return None;
        }
        let wall = self.wall(self.elapsed - self.anchor_elapsed);
        wall.checked_sub(now.saturating_duration_since(self.anchor)).filter(|d| !d.is_zero())
    }

    /// Start the next loop (`-T`); `false` when all loops are done.
    pub fn new_loop(&mut self) -> bool {
        if self.loop_index + 1 >= self.loops {
            return false;
        }
        self.loop_index += 1;
        self.loop_start = true;
        true
    }

    /// Re-anchor the timeline: the last admitted packet (and a new loop's first) is due `now`,
    /// and the rest keep their spacing from it. For after a stall or a pause between loops.
    pub fn rebase(&mut self, now: Instant) {
        self.anchor = now;
        self.anchor_elapsed = self.elapsed;
    }

    /// The timeline `E`: capture time replayed so far, cuts taken out, across loops.
    pub fn capture_elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Capture time cut out by `max_gap`.
    pub fn skipped(&self) -> Duration {
        self.skipped
    }

    /// Packets stamped earlier than their predecessor.
    pub fn backwards(&self) -> u64 {
        self.backwards
    }

    /// The current loop, from 0.
    pub fn loop_index(&self) -> u32 {
        self.loop_index
    }

    /// How many loops the replay has.
    pub fn loops(&self) -> u32 {
        self.loops
    }

    /// Wall time for capture time `d` at this speed.
    fn wall(&self, d: Duration) -> Duration {
        if self.speed == 1.0 {
            d
        } else {
            Duration::try_from_secs_f64(d.as_secs_f64() / self.speed).unwrap_or(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn options(speed: f64) -> PaceOptions {
        PaceOptions { speed: Speed::new(speed).unwrap(), ..PaceOptions::default() }
    }

    /// Replay `timeline` (capture times) with a sender that is always exactly on time: the
    /// offsets from the start at which each packet goes.
    fn schedule(options: &PaceOptions, timeline: &[Duration]) -> Vec<Duration> {
        let start = Instant::now();
        let mut pacer = Pacer::new(options, timeline[0], start);
        let mut now = start;
        timeline
            .iter()
            .map(|&ts| {
                if let Some(wait) = pacer.due(ts, now) {
                    now += wait;
                }
                assert_eq!(pacer.remaining(now), None);
                now - start
            })
            .collect()
    }

    /// A capture starting at a realistic epoch time.
    fn capture(offsets_ms: &[u64]) -> Vec<Duration> {
        offsets_ms.iter().map(|&o| Duration::from_secs(1_764_000_000) + ms(o)).collect()
    }

    fn assert_close(got: &[Duration], want_ms: &[f64]) {
        assert_eq!(got.len(), want_ms.len());
        for (g, w) in got.iter().zip(want_ms) {
            assert!((g.as_secs_f64() * 1e3 - w).abs() < 1e-6, "got {got:?}, want {want_ms:?} ms");
        }
    }

    #[test]
    fn real_time_keeps_the_spacing() {
        let got = schedule(&PaceOptions::default(), &capture(&[0, 10, 10, 250, 2500]));
        assert_eq!(got, vec![ms(0), ms(10), ms(10), ms(250), ms(2500)]);
    }

    #[test]
    fn ten_times_faster() {
        // A 2.5 s capture takes 0.25 s.
        let got = schedule(&options(10.0), &capture(&[0, 100, 1000, 2500]));
        assert_close(&got, &[0.0, 10.0, 100.0, 250.0]);
    }

    #[test]
    fn half_speed() {
        let got = schedule(&options(0.5), &capture(&[0, 100, 1000]));
        assert_close(&got, &[0.0, 200.0, 2000.0]);
    }

    #[test]
    fn idle_gap_is_cut_and_later_packets_keep_their_spacing() {
        let opts = PaceOptions { max_gap: Some(ms(100)), ..PaceOptions::default() };
        // 30 s of silence between 20 ms and 30.020 s; 50 ms gaps around it stay.
        let timeline = capture(&[0, 20, 30_020, 30_070, 30_120]);
        let start = Instant::now();
        let mut pacer = Pacer::new(&opts, timeline[0], start);
        assert_eq!(pacer.due(timeline[0], start), None);
        assert_eq!(pacer.due(timeline[1], start), Some(ms(20)));
        // After the gap: 20 ms + 100 ms, not 30.02 s.
        assert_eq!(pacer.due(timeline[2], start + ms(20)), Some(ms(100)));
        // The packets after the cut are not late: they keep 50 ms spacing instead of bursting.
        let now = start + ms(120);
        assert_eq!(pacer.due(timeline[3], now), Some(ms(50)));
        assert_eq!(pacer.due(timeline[4], now + ms(50)), Some(ms(50)));
        assert_eq!(pacer.skipped(), ms(29_900));
        assert_eq!(pacer.capture_elapsed(), ms(220));
    }

    #[test]
    fn gap_cut_combines_with_speed() {
        let opts = PaceOptions { max_gap: Some(ms(100)), ..options(10.0) };
        let got = schedule(&opts, &capture(&[0, 50, 30_050, 30_100]));
        assert_close(&got, &[0.0, 5.0, 15.0, 20.0]);
    }

    #[test]
    fn topspeed_never_waits_but_tracks_the_timeline() {
        let opts = PaceOptions { topspeed: true, ..PaceOptions::default() };
        let timeline = capture(&[0, 500, 2500]);
        let start = Instant::now();
        let mut pacer = Pacer::new(&opts, timeline[0], start);
        for &ts in &timeline {
            assert_eq!(pacer.due(ts, start), None);
        }
        assert_eq!(pacer.capture_elapsed(), ms(2500));
    }

    #[test]
    fn two_loops_continue_the_timeline() {
        let opts = PaceOptions { loops: NonZeroU32::new(2).unwrap(), ..PaceOptions::default() };
        let timeline = capture(&[0, 500, 1000]);
        let start = Instant::now();
        let mut pacer = Pacer::new(&opts, timeline[0], start);
        let mut now = start;
        let mut sent = Vec::new();
        loop {
            for &ts in &timeline {
                if let Some(wait) = pacer.due(ts, now) {
                    now += wait;
                }
                sent.push(now - start);
            }
            if !pacer.new_loop() {
                break;
            }
            assert_eq!(pacer.loop_index(), 1);
        }
        // Loop 2 starts right after loop 1's last packet: no jump back, no 1 s pause.
        assert_eq!(sent, vec![ms(0), ms(500), ms(1000), ms(1000), ms(1500), ms(2000)]);
        assert_eq!(pacer.capture_elapsed(), ms(2000));
        assert!(!pacer.new_loop());
    }

    #[test]
    fn rebase_after_a_pause_between_loops() {
        let opts = PaceOptions { loops: NonZeroU32::new(2).unwrap(), ..PaceOptions::default() };
        let timeline = capture(&[0, 100]);
        let start = Instant::now();
        let mut pacer = Pacer::new(&opts, timeline[0], start);
        pacer.due(timeline[0], start);
        pacer.due(timeline[1], start);
        assert!(pacer.new_loop());
        // The integration waited 120 s for the sessions to finish, then goes on.
        let later = start + Duration::from_secs(120);
        pacer.rebase(later);
        assert_eq!(pacer.due(timeline[0], later), None);
        // Without the rebase the second packet would be 120 s late and go at once.
        assert_eq!(pacer.due(timeline[1], later), Some(ms(100)));
    }

    #[test]
    fn a_late_sender_catches_up() {
        let timeline = capture(&[0, 10, 20, 30]);
        let start = Instant::now();
        let mut pacer = Pacer::new(&PaceOptions::default(), timeline[0], start);
        pacer.due(timeline[0], start);
        // The worker was busy for 25 ms: packets 1 and 2 are due, 3 waits 5 ms.
        let now = start + ms(25);
        assert_eq!(pacer.due(timeline[1], now), None);
        assert_eq!(pacer.due(timeline[2], now), None);
        assert_eq!(pacer.due(timeline[3], now), Some(ms(5)));
        assert_eq!(pacer.remaining(now + ms(2)), Some(ms(3)));
        assert_eq!(pacer.remaining(now + ms(5)), None);
    }

    #[test]
    fn backwards_timestamps_are_clamped() {
        // 300 ms jumps back by 100 ms (reordered by capture): it goes right after 400 ms, and
        // the 500 ms packet keeps its distance from 400 ms, not from 300 ms.
        let got = schedule(&PaceOptions::default(), &capture(&[0, 400, 300, 500]));
        assert_eq!(got, vec![ms(0), ms(400), ms(400), ms(500)]);
    }

    #[test]
    fn a_clock_step_back_is_followed() {
        // The capture clock is stepped back by 1 h after 200 ms; the packets after it keep their
        // 100 ms spacing instead of waiting an hour.
        let t = capture(&[3_600_000, 3_600_200]);
        let after = capture(&[0, 100]);
        let start = Instant::now();
        let mut pacer = Pacer::new(&PaceOptions::default(), t[0], start);
        let mut now = start;
        let mut sent = Vec::new();
        for ts in [t[0], t[1], after[0], after[1]] {
            if let Some(wait) = pacer.due(ts, now) {
                now += wait;
            }
            sent.push(now - start);
        }
        assert_eq!(sent, vec![ms(0), ms(200), ms(200), ms(300)]);
        assert_eq!(pacer.backwards(), 1);
    }

    #[test]
    fn never_a_negative_wait_with_a_first_packet_stamped_late() {
        // The pacer was created with an earlier first_ts than the packet it then sees.
        let start = Instant::now();
        let mut pacer = Pacer::new(&PaceOptions::default(), Duration::from_secs(10), start);
        assert_eq!(pacer.due(Duration::from_secs(9), start), None);
        assert_eq!(pacer.due(Duration::from_secs(10), start + ms(5)), None);
    }

    #[test]
    fn speed_is_validated() {
        assert!(Speed::new(0.0).is_err());
        assert!(Speed::new(-1.0).is_err());
        assert!(Speed::new(f64::NAN).is_err());
        assert!(Speed::new(f64::INFINITY).is_err());
        assert_eq!(Speed::new(2.0).map(Speed::get), Ok(2.0));
        assert_eq!(InvalidSpeed(0.0).to_string(), "the replay speed must be a finite number greater than 0 (got 0)");
    }

    #[test]
    fn tiny_speed_does_not_overflow() {
        let opts = options(1e-300);
        let start = Instant::now();
        let mut pacer = Pacer::new(&opts, Duration::ZERO, start);
        assert_eq!(pacer.due(Duration::from_secs(1), start), Some(Duration::MAX));
    }
}
