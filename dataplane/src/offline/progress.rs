//! [`Progress`]: a one-line progress bar for an offline replay.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::pace::{PaceOptions, Pacer};
use super::source::PcapSource;

/// Width of the bar between the brackets.
const BAR: usize = 20;
/// The current rate is measured over windows at least this long.
const RATE_WINDOW: Duration = Duration::from_millis(500);

/// Where a replay is, sampled from its source and pacer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Bytes of the file consumed in the current loop.
    pub file_pos: u64,
    /// Packets sent so far, all loops.
    pub packets: u64,
    /// Frame bytes sent so far, all loops.
    pub bytes: u64,
    /// The pacer's timeline: capture time replayed, all loops.
    pub capture_pos: Duration,
    /// The current loop, from 0.
    pub loop_index: u32,
}

impl Position {
    /// Sample a replay in progress.
    pub fn of<R>(source: &PcapSource<R>, pacer: &Pacer) -> Position {
        let stats = source.stats();
        Position {
            file_pos: source.position(),
            packets: stats.packets,
            bytes: stats.frame_bytes,
            capture_pos: pacer.capture_elapsed(),
            loop_index: pacer.loop_index(),
        }
    }
}

/// Progress of an offline replay: fraction done, current rate, ETA, and a one-line bar.
///
/// Pure logic: the caller samples a [`Position`] with the time and redraws [`Progress::line`]
/// (with `\r` when [`Progress::is_tty`], else a line now and then).
#[derive(Clone, Debug)]
pub struct Progress {
    file_size: u64,
    /// One loop's paced capture span, if measured ([`PcapSource::scan`]).
    span: Option<Duration>,
    loops: u32,
    speed: f64,
    topspeed: bool,
    started: Instant,
    now: Instant,
    at: Position,
    window_start: Instant,
    window_at: Position,
    /// Packets and bits per second over the last full window, once there is one.
    rate: Option<(f64, f64)>,
}

impl Progress {
    /// Start tracking a replay of a `file_size`-byte file whose paced span per loop is `span`
    /// (`None`: estimate it from the bytes read).
    pub fn new(file_size: u64, span: Option<Duration>, options: &PaceOptions, start: Instant) -> Progress {
        Progress {
            file_size,
            span,
            loops: options.loops.get(),
            speed: options.speed.get(),
            topspeed: options.topspeed,
            started: start,
            now: start,
            at: Position::default(),
            window_start: start,
            window_at: Position::default(),
            rate: None,
        }
    }

    /// Record where the replay is at `now`.
    pub fn update(&mut self, now: Instant, at: Position) {
        self.now = now;
        self.at = at;
        let dt = now.saturating_duration_since(self.window_start);
        if dt >= RATE_WINDOW {
            self.rate = Some(rates(&self.window_at, &at, dt));
            self.window_start = now;
            self.window_at = at;
        }
    }

    /// Packets and bits per second: over the last window, or since the start before one.
    pub fn rate(&self) -> (f64, f64) {
        self.rate.unwrap_or_else(|| {
            let dt = self.now.saturating_duration_since(self.started);
            if dt.is_zero() {
                (0.0, 0.0)
            } else {
                rates(&Position::default(), &self.at, dt)
            }
        })
    }

    /// Fraction of the file read, all loops, in 0..=1.
    fn byte_fraction(&self) -> f64 {
        if self.file_size == 0 {
            return 0.0;
        }
        let done = f64::from(self.at.loop_index) * self.file_size as f64 + self.at.file_pos as f64;
        (done / (f64::from(self.loops) * self.file_size as f64)).clamp(0.0, 1.0)
    }

    /// Total capture time of all loops: measured, or estimated from the bytes read.
    fn capture_total(&self) -> Option<Duration> {
        match self.span {
            Some(span) => Some(span.saturating_mul(self.loops)),
            None => {
                let f = self.byte_fraction();
                (f > 0.0).then(|| Duration::try_from_secs_f64(self.at.capture_pos.as_secs_f64() / f).ok()).flatten()
            }
        }
    }

    /// Fraction of the replay done, in 0..=1.
    pub fn fraction(&self) -> f64 {
        match (self.span, self.capture_total()) {
            (Some(_), Some(total)) if !total.is_zero() => {
                (self.at.capture_pos.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0)
            }
            _ => self.byte_fraction(),
        }
    }

    /// Time left: capture time remaining ÷ speed (at top speed: bytes left ÷ the read rate).
    pub fn eta(&self) -> Option<Duration> {
        if self.topspeed {
            let f = self.byte_fraction();
            let elapsed = self.now.saturating_duration_since(self.started).as_secs_f64();
            return (f > 0.0).then(|| Duration::try_from_secs_f64(elapsed * (1.0 - f) / f).ok()).flatten();
        }
        let left = self.capture_total()?.saturating_sub(self.at.capture_pos);
        Duration::try_from_secs_f64(left.as_secs_f64() / self.speed).ok()
    }

    /// One line, e.g. `[=========>          ] 52% 1.2 s/2.5 s capture, 8.1 kpps, 65 Mbit/s, ETA 0.1 s`.
    pub fn line(&self) -> String {
        let fraction = self.fraction();
        let mut line = String::with_capacity(96);
        line.push('[');
        let filled = (fraction * BAR as f64).round() as usize;
        for i in 1..=BAR {
            line.push(if i < filled || i == BAR && filled == BAR {
                '='
            } else if i == filled {
                '>'
            } else {
                ' '
            });
        }
        // Floor, so 100% means done; the epsilon keeps 0.52 from showing as 51%.
        let _ = write!(line, "] {:.0}% ", (fraction * 100.0 + 1e-9).floor());
        if self.loops > 1 {
            let _ = write!(line, "loop {}/{}, ", self.at.loop_index + 1, self.loops);
        }
        line.push_str(&secs(self.at.capture_pos));
        if let (Some(_), Some(total)) = (self.span, self.capture_total()) {
            let _ = write!(line, "/{}", secs(total));
        }
        let (pps, bps) = self.rate();
        let _ = write!(line, " capture, {}, {}, ETA ", packet_rate(pps), bit_rate(bps));
        line.push_str(&self.eta().map_or_else(|| "?".to_string(), secs));
        line
    }

    /// Whether stderr is a terminal (redraw the line with `\r` then).
    pub fn is_tty() -> bool {
        std::io::stderr().is_terminal()
    }
}

/// Packets and bits per second between two positions `dt` apart.
fn rates(from: &Position, to: &Position, dt: Duration) -> (f64, f64) {
    let dt = dt.as_secs_f64();
    let packets = to.packets.saturating_sub(from.packets) as f64;
    let bits = to.bytes.saturating_sub(from.bytes) as f64 * 8.0;
    (packets / dt, bits / dt)
}

/// `1.2 s`, `2m05s`, `1h02m`.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        let s = s.round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = (s / 60.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// `812 pps`, `8.1 kpps`, `1.25 Mpps`.
fn packet_rate(pps: f64) -> String {
    if pps < 1e3 {
        format!("{pps:.0} pps")
    } else if pps < 1e6 {
        format!("{:.1} kpps", pps / 1e3)
    } else {
        format!("{:.2} Mpps", pps / 1e6)
    }
}

/// `8.5 Mbit/s`, `65 Mbit/s`, `1.2 Gbit/s`.
fn bit_rate(bps: f64) -> String {
    let mbit = bps / 1e6;
    if mbit < 10.0 {
        format!("{mbit:.1} Mbit/s")
    } else if mbit < 1e3 {
        format!("{mbit:.0} Mbit/s")
    } else {
        format!("{:.1} Gbit/s", mbit / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::offline::Speed;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_documented_line() {
        let start = Instant::now();
        let opts = PaceOptions::default();
        let mut p = Progress::new(1000, Some(ms(2500)), &opts, start);
        // 1.3 s in: 10 530 packets, 8.45 MB, 52 % of the capture.
        let at = Position { file_pos: 520, packets: 10_530, bytes: 8_450_000, capture_pos: ms(1300), loop_index: 0 };
        p.update(start + ms(1300), at);
        assert_eq!(p.line(), "[=========>          ] 52% 1.3 s/2.5 s capture, 8.1 kpps, 52 Mbit/s, ETA 1.2 s");
    }

    #[test]
    fn speed_divides_the_eta() {
        let start = Instant::now();
        let opts = PaceOptions { speed: Speed::new(10.0).unwrap(), ..PaceOptions::default() };
        let mut p = Progress::new(1000, Some(ms(2500)), &opts, start);
        p.update(start + ms(130), Position { capture_pos: ms(1300), file_pos: 500, ..Position::default() });
        let eta = p.eta().unwrap();
        assert!(eta.abs_diff(ms(120)) < Duration::from_nanos(2), "{eta:?}");
        assert!(p.line().ends_with("ETA 0.1 s"), "{}", p.line());
    }

    #[test]
    fn unknown_span_is_estimated_from_bytes() {
        let start = Instant::now();
        let mut p = Progress::new(1000, None, &PaceOptions::default(), start);
        assert_eq!(p.eta(), None);
        assert!(
            p.line().starts_with("[                    ] 0% 0.0 s capture, 0 pps, 0.0 Mbit/s, ETA ?"),
            "{}",
            p.line()
        );
        p.update(start + ms(1000), Position { capture_pos: ms(1000), file_pos: 250, ..Position::default() });
        assert_eq!(p.fraction(), 0.25);
        assert_eq!(p.eta(), Some(ms(3000)));
        assert!(p.line().starts_with("[====>               ] 25% 1.0 s capture,"), "{}", p.line());
    }

    #[test]
    fn loops_count_in_the_fraction() {
        let start = Instant::now();
        let opts = PaceOptions { loops: NonZeroU32::new(2).unwrap(), ..PaceOptions::default() };
        let mut p = Progress::new(1000, Some(ms(1000)), &opts, start);
        p.update(
            start + ms(1500),
            Position { capture_pos: ms(1500), file_pos: 500, loop_index: 1, ..Position::default() },
        );
        assert_eq!(p.fraction(), 0.75);
        assert_eq!(p.eta(), Some(ms(500)));
        assert!(p.line().contains("] 75% loop 2/2, 1.5 s/2.0 s capture"), "{}", p.line());
    }

    #[test]
    fn topspeed_eta_from_the_read_rate() {
        let start = Instant::now();
        let opts = PaceOptions { topspeed: true, ..PaceOptions::default() };
        let mut p = Progress::new(1000, Some(ms(60_000)), &opts, start);
        p.update(start + ms(200), Position { capture_pos: ms(15_000), file_pos: 250, ..Position::default() });
        let eta = p.eta().unwrap();
        assert!(eta.abs_diff(ms(600)) < Duration::from_nanos(2), "{eta:?}");
    }

    #[test]
    fn done_is_full() {
        let start = Instant::now();
        let mut p = Progress::new(1000, Some(ms(2500)), &PaceOptions::default(), start);
        p.update(start + ms(2500), Position { capture_pos: ms(2500), file_pos: 1000, ..Position::default() });
        assert!(p.line().starts_with("[====================] 100% 2.5 s/2.5 s capture"), "{}", p.line());
        assert_eq!(p.eta(), Some(Duration::ZERO));
    }

    #[test]
    fn rate_uses_the_last_window() {
        let start = Instant::now();
        let mut p = Progress::new(1000, None, &PaceOptions::default(), start);
        p.update(start + ms(500), Position { packets: 500, bytes: 62_500, ..Position::default() });
        p.update(start + ms(1000), Position { packets: 2500, bytes: 312_500, ..Position::default() });
        let (pps, bps) = p.rate();
        assert!((pps - 4000.0).abs() < 1e-6 && (bps - 4e6).abs() < 1e-3, "{pps} {bps}");
        // Inside a window the last full window's rate stays.
        p.update(start + ms(1200), Position { packets: 2600, bytes: 325_000, ..Position::default() });
        assert_eq!(p.rate().0, pps);
    }

    #[test]
    fn units() {
        assert_eq!(secs(ms(1234)), "1.2 s");
        assert_eq!(secs(ms(125_000)), "2m05s");
        assert_eq!(secs(Duration::from_secs(3720)), "1h02m");
        assert_eq!(packet_rate(812.0), "812 pps");
        assert_eq!(packet_rate(8100.0), "8.1 kpps");
        assert_eq!(packet_rate(1_250_000.0), "1.25 Mpps");
        assert_eq!(bit_rate(8.5e6), "8.5 Mbit/s");
        assert_eq!(bit_rate(65e6), "65 Mbit/s");
        assert_eq!(bit_rate(1.2e9), "1.2 Gbit/s");
    }
}
