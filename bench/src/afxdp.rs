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
    xsk::{self, Desc, Kick, Socket, Umem},
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
    let mut umem = Umem::new(FRAMES, FRAME_SIZE)?;
    let cfg = xsk::Config {
        ifname: iface.to_owned(),
        queue,
        rx_size: 0,
        tx_size: RING,
        fill_size: 64,
        comp_size: RING,
        copy_mode: xsk::CopyMode::Auto,
    };
    // Prebuild one frame per chunk.
    for i in 0..FRAMES {
        let mut s = spec.clone();
        s.src_port = spec.src_port.wrapping_add((i as u16) % flows.max(1));
        let bytes = build_frame(&s, FrameKind::Good, size, i)?;
        let addr = umem.frame_addr(i);
        let chunk = umem.from_addr_mut(addr).context("UMEM chunk")?;
        chunk[..bytes.len()].copy_from_slice(&bytes);
    }
    let mut sock = Socket::create(&mut umem, &cfg)?;
    let mut free: Vec<u64> = (0..FRAMES).map(|i| umem.frame_addr(i)).collect();
    let len = size as u32;
    let deadline = Instant::now() + duration;
    let mut completed = 0u64;
    let mut iter = 0u32;
    loop {
        iter = iter.wrapping_add(1);
        let comp_n = sock.comp.available(RING);
        for i in 0..comp_n {
            free.push(sock.comp.get(i));
        }
        if comp_n > 0 {
            sock.comp.release(comp_n);
            completed += u64::from(comp_n);
        }
        if iter % 64 == 0 && Instant::now() >= deadline {
            break;
        }
        let tx = sock.tx.as_mut().expect("TX ring");
        let n = tx.free(BATCH).min(BATCH).min(free.len() as u32);
        for _ in 0..n {
            let addr = free.pop().expect("counted");
            tx.push(Desc { addr, len, options: 0 });
        }
        if n > 0 {
            tx.submit();
        }
        if let Kick::Failed(e) = sock.kick_tx() {
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
/// userspace (recycling straight into the fill ring). Returns frames received.
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
    let mut socks = Vec::new();
    for q in 0..queues {
        let mut umem = Umem::new(FRAMES, FRAME_SIZE)?;
        let cfg = xsk::Config {
            ifname: iface.to_owned(),
            queue: q,
            rx_size: RING,
            tx_size: 0,
            fill_size: RING,
            comp_size: 64,
            copy_mode: xsk::CopyMode::Auto,
        };
        let mut sock = Socket::create(&mut umem, &cfg)?;
        let n = sock.fill.free(RING);
        for i in 0..n.min(FRAMES) {
            sock.fill.push(umem.frame_addr(i));
        }
        sock.fill.submit();
        prog.set_socket(q, sock.fd())?;
        socks.push((umem, sock));
    }
    let _att = prog.attach(Entry::Redirect, iface, mode)?;
    ready.store(true, Ordering::SeqCst);
    let mut received = 0u64;
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for (_, sock) in &mut socks {
            let rx = sock.rx.as_mut().expect("RX ring");
            let n = rx.available(BATCH);
            if n == 0 {
                continue;
            }
            let room = sock.fill.free(n);
            debug_assert!(room >= n, "fill ring holds every frame we own");
            for i in 0..n {
                sock.fill.push(rx.get(i).addr);
            }
            rx.release(n);
            sock.fill.submit();
            got += n;
        }
        received += u64::from(got);
        if got == 0 {
            idle += 1;
            if idle > 1024 {
                socks[0].1.wait_readable(10);
                idle = 0;
            }
        }
    }
    Ok(received)
}
