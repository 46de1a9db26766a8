//! The project's own AF_XDP load tools for the benchmark: a TX-only generator (also the "plain
//! AF_XDP transmitter" that measures the copy-mode TX ceiling), an RX-and-drop sink, and an XDP
//! drop counter. They use the dataplane's `xsk` and `bpf` modules, so the numbers compare like
//! with like.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use dataplane::{
    bpf::{self, Counter, Entry, Program, XdpMode},
    xsk::{self, Frame, Kick, Port, PortConfig, TxSide},
};

use crate::frames::{build_frame, FrameKind, FrameSpec};

const FRAME_SIZE: u32 = 4096;
const FRAMES: u32 = 4096;
const RING: u32 = 2048;
const BATCH: u32 = 64;

/// Transmits copies of prebuilt frames of `size` bytes out of `iface` queue `queue` as fast as
/// copy-mode AF_XDP allows, for `duration`. Frames differ in their source port (so receivers
/// spread them over queues). Returns frames the kernel completed.
pub fn generate(iface: &str, queue: u32, spec: &FrameSpec, size: usize, flows: u16, duration: Duration) -> Result<u64> {
    let mut port = Port::open(&PortConfig {
        ifname: iface.to_owned(),
        queue,
        frames: FRAMES,
        frame_size: FRAME_SIZE,
        ring_size: RING,
        rx: false,
        tx: TxSide::SameSocket,
        fill_reserve: 0,
        copy_mode: xsk::CopyMode::Auto,
    })?;
    // Prebuild one frame per chunk; each chunk is sent again and again with its own frame.
    let mut frames: Vec<Frame> = std::iter::from_fn(|| port.take_free()).collect();
    for f in &mut frames {
        let i = f.index();
        let mut s = spec.clone();
        s.src_port = spec.src_port.wrapping_add((i as u16) % flows.max(1));
        let bytes = build_frame(&s, FrameKind::Good, size, i)?;
        port.umem_mut()
            .bytes_mut(f)
            .get_mut(..bytes.len())
            .context("frame larger than a UMEM chunk")?
            .copy_from_slice(&bytes);
    }
    for f in frames.into_iter().rev() {
        port.recycle(f);
    }
    let len = size as u32;
    let deadline = Instant::now() + duration;
    let mut completed = 0u64;
    let mut iter = 0u32;
    loop {
        iter = iter.wrapping_add(1);
        completed += u64::from(port.reclaim(RING));
        if iter.is_multiple_of(64) && Instant::now() >= deadline {
            break;
        }
        let n = port.tx_room(BATCH).min(port.free_frames() as u32);
        for _ in 0..n {
            let frame = port.take_free().expect("counted");
            if port.tx_push(frame, 0, len).is_err() {
                anyhow::bail!("frame of {size} bytes does not fit a UMEM chunk");
            }
        }
        if n > 0 {
            port.tx_submit();
        }
        if let Kick::Failed(e) = port.kick_tx() {
            anyhow::bail!("sendto on {iface}: errno {e}");
        }
    }
    Ok(completed)
}

/// Attaches the counting XDP_DROP program to `iface` and returns the dropped-frame counter after
/// `duration` (counted from when `started` is set), or until `stop`.
pub fn xdp_drop_count(iface: &str, mode: XdpMode, ready: &AtomicBool, stop: &AtomicBool) -> Result<u64> {
    let prog = Program::load()?;
    let _att = prog.attach(Entry::Drop, iface, mode)?;
    ready.store(true, Ordering::SeqCst);
    let start = prog.counter(Counter::Dropped);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(prog.counter(Counter::Dropped) - start)
}

/// Receives frames to `port` on every queue of `iface` through AF_XDP and drops them in
/// userspace (recycling them into the fill ring). Returns frames received.
pub fn afxdp_rx_drop(
    iface: &str,
    queues: u32,
    port: u16,
    mode: XdpMode,
    ready: &AtomicBool,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let prog = Program::load()?;
    prog.select_port(port, bpf::port_flags::DST)?;
    let mut ports = Vec::new();
    for q in 0..queues {
        let port = Port::open(&PortConfig::rx_only(iface, q, FRAMES, RING))?;
        prog.set_socket(q, port.fd())?;
        ports.push(port);
    }
    let _att = prog.attach(Entry::Redirect, iface, mode)?;
    ready.store(true, Ordering::SeqCst);
    let mut received = 0u64;
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for port in &mut ports {
            let n = port.rx_acquire(BATCH);
            if n == 0 {
                continue;
            }
            while let Some(rx) = port.rx_next() {
                match rx {
                    Ok(rx) => port.recycle(rx.frame),
                    Err(bad) => bad.frame.into_iter().for_each(|f| port.recycle(f)),
                }
            }
            port.rx_release();
            let _ = port.refill();
            got += n;
        }
        received += u64::from(got);
        if got == 0 {
            idle += 1;
            if idle > 1024 {
                ports[0].wait_readable(Duration::from_millis(10));
                idle = 0;
            }
        }
    }
    Ok(received)
}
