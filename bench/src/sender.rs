//! A frame sender over an AF_PACKET raw socket bound to one interface, paced to a target rate.
//! Use [`send_frames_in_ns`] to send from inside a lab namespace (the socket is created on a
//! thread that has joined it).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use dataplane::xsk::{
    sys::{if_nametoindex, PacketSocket},
    Kick,
};

use crate::frames::{build_frame, FrameKind, FrameSpec};
use crate::netns::in_netns;

/// Opens an AF_PACKET socket that sends whole Ethernet frames out of `iface` (in the calling
/// thread's network namespace) and receives nothing.
pub fn packet_socket(iface: &str) -> Result<PacketSocket> {
    let ifindex = if_nametoindex(iface).with_context(|| format!("no interface {iface}"))?;
    PacketSocket::sender(ifindex).with_context(|| format!("AF_PACKET socket on {iface}"))
}

/// What to send.
#[derive(Clone, Debug)]
pub struct SendSpec {
    /// Interface to send out of (in the namespace the sender runs in).
    pub iface: String,
    /// Addresses and header fields; `src_port` is the first of `flows` ports.
    pub frame: FrameSpec,
    pub kind: FrameKind,
    /// Frame sizes, cycled through frame by frame.
    pub sizes: Vec<usize>,
    pub count: u64,
    /// Target rate in frames per second; 0 = as fast as possible.
    pub rate_pps: u64,
    /// Sequence number (payload marker) of the first frame; frame i carries `first_seq + i`.
    pub first_seq: u32,
    /// Number of flows: frame i uses source port `frame.src_port + i % flows`.
    pub flows: u16,
}

impl Default for SendSpec {
    fn default() -> Self {
        SendSpec {
            iface: String::new(),
            frame: FrameSpec::default(),
            kind: FrameKind::Good,
            sizes: vec![64, 512, 1500],
            count: 100,
            rate_pps: 1000,
            first_seq: 0,
            flows: 1,
        }
    }
}

/// What was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    pub sent: u64,
    pub bytes: u64,
    /// Sends the device refused for now (ENOBUFS/EAGAIN, EBUSY, EINTR, ENETDOWN) and that were
    /// retried.
    pub retries: u64,
    pub elapsed: Duration,
}

impl SendReport {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Frames sent between two looks at the clock at a given rate (about one look per ms).
fn burst_len(rate_pps: u64) -> u64 {
    (rate_pps / 1000).clamp(1, 64)
}

/// Sends `spec.count` frames from the calling thread's network namespace.
pub fn send_frames(spec: &SendSpec) -> Result<SendReport> {
    ensure!(!spec.sizes.is_empty(), "no frame sizes given");
    ensure!(spec.flows >= 1, "flows must be at least 1");
    for &s in &spec.sizes {
        ensure!(
            (spec.kind.min_size()..=spec.kind.max_size()).contains(&s),
            "frame size {s} out of range {}..={} for {}",
            spec.kind.min_size(),
            spec.kind.max_size(),
            spec.kind
        );
    }
    let sock = packet_socket(&spec.iface)?;
    let mut report = SendReport::default();
    let mut frame_spec = spec.frame.clone();
    let burst = burst_len(spec.rate_pps);
    let start = Instant::now();
    for i in 0..spec.count {
        if spec.rate_pps > 0 && i % burst == 0 {
            let due = start + Duration::from_secs_f64(i as f64 / spec.rate_pps as f64);
            pace_until(due);
        }
        let seq = spec.first_seq.wrapping_add(i as u32);
        frame_spec.src_port = spec.frame.src_port.wrapping_add((i % u64::from(spec.flows)) as u16);
        let size = spec.sizes[(i % spec.sizes.len() as u64) as usize];
        let frame = build_frame(&frame_spec, spec.kind, size, seq)?;
        let mut backoff = Duration::from_micros(20);
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            match sock.send(&frame) {
                Kick::Done => break,
                Kick::Again | Kick::Down if Instant::now() < give_up => {
                    report.retries += 1;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                }
                Kick::Again | Kick::Down => bail!("send frame {i} (seq {seq}) on {}: device busy for 5 s", spec.iface),
                Kick::Failed(e) => {
                    bail!("send frame {i} (seq {seq}) on {}: {}", spec.iface, std::io::Error::from_raw_os_error(e))
                }
            }
        }
        report.sent += 1;
        report.bytes += size as u64;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Sleeps for most of the time until `due`, then yields until it has passed.
fn pace_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > Duration::from_micros(300) {
            std::thread::sleep(left - Duration::from_micros(200));
        } else {
            std::thread::yield_now();
        }
    }
}

/// Sends from inside lab namespace `ns` (see [`crate::netns::in_netns`]).
pub fn send_frames_in_ns(ns: &str, spec: &SendSpec) -> Result<SendReport> {
    in_netns(ns, || send_frames(spec))
}
