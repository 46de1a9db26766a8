//! Notices a replay whose answers never come back: the copier keeps sending to the test server
//! while the channel, connected, returns no response header at all. The usual causes are a
//! deployment mistake — the test server's route to the client addresses does not go through
//! the assist server, the intercept's `--target` does not match `-x`, `--local` on the wrong
//! interface — or a stopped intercept (SIGSTOP: its kernel still answers the channel's
//! keepalives, so the connection looks alive). Nothing in the counters says which; the copier
//! says once what it sees and where to look.
//!
//! Pure logic (time is an argument), so it is unit-tested without a lab.

use std::time::{Duration, Instant};

/// How long the copier must have been sending with no header back before it says so.
pub const SILENCE: Duration = Duration::from_secs(5);

/// Watches the segments sent to the test server and the headers the channel returned.
#[derive(Debug, Default)]
pub struct SilenceWatch {
    /// Segments sent and headers received at the last look.
    last: (u64, u64),
    /// Since when segments have gone out with no header coming back.
    since: Option<Instant>,
    warned: bool,
}

impl SilenceWatch {
    /// Takes the totals at `now` (segments sent to the test server, channel headers received,
    /// channel connections up); returns the warning, once, when the copier has been sending for
    /// [`SILENCE`] with connected channels and not one header came back.
    pub fn observe(&mut self, now: Instant, sent: u64, headers: u64, connected: u64) -> Option<String> {
        let (last_sent, last_headers) = std::mem::replace(&mut self.last, (sent, headers));
        if headers != last_headers || connected == 0 {
            // Answers flow (or no channel is up: the reconnect messages say that already).
            self.since = None;
            return None;
        }
        if sent == last_sent {
            // Nothing sent since the last look: no question asked, silence is no symptom.
            return None;
        }
        let since = *self.since.get_or_insert(now);
        if self.warned || now.saturating_duration_since(since) < SILENCE {
            return None;
        }
        self.warned = true;
        Some(format!(
            "xdpcopy: {} s of segments sent to the test server and not one response header back over the \
             channel ({connected} connection(s) up): check that the test server routes its answers to the \
             client addresses through the assist server (docs/deployment.md), that xdpcopy-intercept's \
             --target matches -x (with --local: that it watches the test server's output interface), and that \
             the intercept is running, not stopped",
            now.saturating_duration_since(since).as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn sending_without_answers_is_reported_once_after_the_silence() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::default();
        assert_eq!(w.observe(t0, 0, 0, 2), None);
        let mut said = Vec::new();
        for s in 1..=12 {
            if let Some(m) = w.observe(secs(t0, s), 10 * s, 0, 2) {
                said.push((s, m));
            }
        }
        // Sending started between 0 and 1 s; the first look that saw it was at 1 s.
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(said[0].0, 6);
        assert!(said[0].1.contains("routes its answers"), "{}", said[0].1);
    }

    #[test]
    fn answers_or_no_channel_or_nothing_sent_are_no_symptom() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::default();
        for s in 1..=20 {
            // Headers come back: fine.
            assert_eq!(w.observe(secs(t0, s), 10 * s, s, 1), None);
        }
        let mut w = SilenceWatch::default();
        for s in 1..=20 {
            // No channel up: the reconnecting client says so itself.
            assert_eq!(w.observe(secs(t0, s), 10 * s, 0, 0), None);
        }
        let mut w = SilenceWatch::default();
        for s in 1..=20 {
            // Nothing sent (no traffic to copy): nothing to answer.
            assert_eq!(w.observe(secs(t0, s), 5, 0, 2), None);
        }
    }

    #[test]
    fn an_answer_restarts_the_wait() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::default();
        w.observe(t0, 0, 0, 1);
        for s in 1..=4 {
            assert_eq!(w.observe(secs(t0, s), 10 * s, 0, 1), None);
        }
        // One header at 5 s: the silence starts again.
        assert_eq!(w.observe(secs(t0, 5), 50, 1, 1), None);
        for s in 6..=10 {
            assert_eq!(w.observe(secs(t0, s), 10 * s, 1, 1), None, "at {s} s");
        }
        assert!(w.observe(secs(t0, 11), 110, 1, 1).is_some());
    }
}
