//! Session sampling (`-r PERCENT`, `-g`): whole sessions are kept or dropped together, decided
//! by a hash of the full 4-tuple (client address and port, server address and port), so every
//! packet of a session gets the same answer on whichever worker it lands.
//!
//! Fixes TCPCopy's `-r` (tcpcopy-behaviour.md §3.18, §7 #4): the percentage is validated as
//! 1..=100 instead of a silent 7-bit wrap, and the hash covers the whole 4-tuple and is uniform
//! (TCPCopy's folds 510 values onto 100). `-g` ramps the share up by 1 % per second from the
//! first packet (per worker), to 100 % or the `-r` value when given.

use std::{net::IpAddr, time::Instant};

/// Keeps a share of the sessions.
#[derive(Debug, Clone)]
pub struct Sampler {
    percent: u8,
    ramp: bool,
    start: Option<Instant>,
}

impl Sampler {
    /// Keeps `percent` (1..=100) of the sessions; with `ramp`, starts at 1 % and adds 1 % per
    /// second up to `percent`.
    pub fn new(percent: u8, ramp: bool) -> Self {
        Self { percent: percent.clamp(1, 100), ramp, start: None }
    }

    /// Whether every session is kept (no work per packet).
    pub fn keeps_all(&self) -> bool {
        self.percent == 100 && !self.ramp
    }

    /// The share kept at `now`, in percent.
    pub fn share(&mut self, now: Instant) -> u8 {
        if !self.ramp {
            return self.percent;
        }
        let start = *self.start.get_or_insert(now);
        let secs = now.saturating_duration_since(start).as_secs();
        (secs + 1).min(u64::from(self.percent)) as u8
    }

    /// Whether the session of this 4-tuple is kept at `now`.
    pub fn keep(&mut self, now: Instant, client: (IpAddr, u16), server: (IpAddr, u16)) -> bool {
        if self.keeps_all() {
            return true;
        }
        let share = u64::from(self.share(now));
        bucket(client, server) < share
    }
}

/// The session's bucket, 0..100: a mixing hash of the 4-tuple.
pub fn bucket(client: (IpAddr, u16), server: (IpAddr, u16)) -> u64 {
    let fold = |ip: IpAddr| match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64)
        }
    };
    let mut h = fold(client.0) ^ fold(server.0).rotate_left(32);
    h ^= (u64::from(client.1) << 16) | u64::from(server.1);
    // splitmix64 finaliser: every input bit affects every output bit.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h % 100
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, time::Duration};

    use super::*;

    #[test]
    fn half_of_ten_thousand_sequential_ports_within_binomial_bounds() {
        let mut s = Sampler::new(50, false);
        let now = Instant::now();
        let server = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 80);
        let kept = (0..10_000u16)
            .filter(|p| s.keep(now, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 30_000 + p), server))
            .count();
        // mean 5000, sd 50: within 5 sd.
        assert!((4750..=5250).contains(&kept), "{kept}");
        // A session's packets get the same answer every time.
        let c = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40_000);
        let first = s.keep(now, c, server);
        assert!((0..10).all(|_| s.keep(now, c, server) == first));
    }

    #[test]
    fn ramp_adds_one_percent_per_second_up_to_the_share() {
        let mut s = Sampler::new(100, true);
        let t = Instant::now();
        assert_eq!(s.share(t), 1);
        assert_eq!(s.share(t + Duration::from_millis(2500)), 3);
        assert_eq!(s.share(t + Duration::from_secs(500)), 100);
        let mut capped = Sampler::new(30, true);
        assert_eq!(capped.share(t), 1);
        assert_eq!(capped.share(t + Duration::from_secs(99)), 30);
        assert!(Sampler::new(100, false).keeps_all());
    }
}
