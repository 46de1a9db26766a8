//! A frame sender over an AF_PACKET raw socket bound to one interface, paced to a target rate.
//! Use [`send_frames_in_ns`] to send from inside a lab namespace (the socket is created on a
//! thread that has joined it).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::frames::{build_frame, FrameKind, FrameSpec};
use crate::netns::in_netns;

/// An AF_PACKET (SOCK_RAW) socket bound to one interface, for sending whole Ethernet frames.
/// It is bound with protocol 0, so it receives nothing.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens the socket on `iface` in the calling thread's network namespace.
    pub fn bind(iface: &str) -> Result<Self> {
        let cname = CString::new(iface).context("interface name")?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("no interface {iface}"));
        }
        // SAFETY: socket(2) with constant arguments; no pointers involved.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_PACKET, SOCK_RAW)");
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: 0,
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `sll` is a properly initialised sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("bind AF_PACKET to {iface}"));
        }
        Ok(PacketSocket { fd, ifindex })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends one frame. `ENOBUFS`/`EAGAIN` (the frame was not queued) come back as errors for
    /// the caller to retry.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the pointer/length pair describes the live `frame` slice; send(2) only reads it.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast::<libc::c_void>(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other(format!("short send: {n} of {}", frame.len())));
        }
        Ok(())
    }
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
    /// Sends that failed with ENOBUFS/EAGAIN and were retried (frame dropped by the device).
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
    let sock = PacketSocket::bind(&spec.iface)?;
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
                Ok(()) => break,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::EAGAIN))
                        && Instant::now() < give_up =>
                {
                    report.retries += 1;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                }
                Err(e) => bail!("send frame {i} (seq {seq}) on {}: {e}", spec.iface),
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
