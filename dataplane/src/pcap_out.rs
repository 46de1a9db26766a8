//! `--pcap-out FILE`: every frame the copier transmits, written to a pcap for Wireshark.
//!
//! Workers copy each transmitted frame (at most `SNAP` bytes) into a preallocated slot taken
//! from a lock-free free list and hand it to a writer thread through a second queue; the writer
//! appends it to the file and returns the slot. Nothing is allocated or locked per frame; when
//! the writer falls behind and no slot is free, the frame is not written and `dropped` counts it
//! (the transmission itself is never held up). With a size cap (`--pcap-out-max-mb`) the writer
//! stops before the file would grow past it and raises a flag the workers read before copying,
//! so a capped capture costs them one relaxed load per frame.

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use crossbeam_queue::ArrayQueue;
use pcap_file::pcap::{PcapPacket, PcapWriter};

/// Bytes kept of each frame (a jumbo frame is cut; its original length is recorded).
pub const SNAP: usize = 2048;
const SLOTS: usize = 8192;

struct Slot {
    len: u32,
    orig_len: u32,
    ts: Duration,
    data: [u8; SNAP],
}

/// The workers' side: copy a frame in.
pub struct PcapTap {
    /// Set by the writer when the size cap is reached: nothing more is copied.
    capped: AtomicBool,
    free: ArrayQueue<Box<Slot>>,
    full: ArrayQueue<Box<Slot>>,
    /// Frames not written because the writer was behind.
    pub dropped: AtomicU64,
    written: AtomicU64,
}

impl PcapTap {
    /// Copies `frame` for the writer; never blocks.
    pub fn copy(&self, frame: &[u8]) {
        if self.capped.load(Ordering::Relaxed) {
            return;
        }
        let Some(mut slot) = self.free.pop() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = frame.len().min(SNAP);
        slot.data[..n].copy_from_slice(&frame[..n]);
        slot.len = n as u32;
        slot.orig_len = frame.len() as u32;
        slot.ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        if let Err(s) = self.full.push(slot) {
            let _ = self.free.push(s);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

control::counters! {
    /// What `--pcap-out` did (shown with the prefix `pcap_out_`).
    #[derive(Copy)]
    pub struct PcapOutCounters {
        /// Frames written to the file.
        counter written,
        /// Frames not written because the writer fell behind (transmission never waits).
        counter dropped,
        /// 1 once the file reached --pcap-out-max-mb (later frames are not written).
        gauge capped,
    }
}

/// The writer thread and its tap.
pub struct PcapOut {
    /// Hand this to the workers.
    pub tap: Arc<PcapTap>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    path: PathBuf,
}

impl PcapOut {
    /// Creates `path` (Ethernet link type, µs timestamps) and starts the writer, which stops
    /// before the file would exceed `max_bytes`.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn create(path: &Path, max_bytes: Option<u64>) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("--pcap-out {}: cannot create", path.display()))?;
        let mut writer =
            PcapWriter::new(BufWriter::new(file)).with_context(|| format!("--pcap-out {}", path.display()))?;
        let free = ArrayQueue::new(SLOTS);
        for _ in 0..SLOTS {
            let _ = free.push(Box::new(Slot { len: 0, orig_len: 0, ts: Duration::ZERO, data: [0; SNAP] }));
        }
        let tap = Arc::new(PcapTap {
            capped: AtomicBool::new(false),
            free,
            full: ArrayQueue::new(SLOTS),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (tap.clone(), stop.clone());
        let display = path.display().to_string();
        let thread = thread::Builder::new().name("xdpcopy-pcap".into()).spawn(move || -> Result<()> {
            // The pcap file header, then 16 bytes of record header per frame.
            let mut size = 24u64;
            let limit = max_bytes.unwrap_or(u64::MAX);
            loop {
                let mut wrote = false;
                while let Some(slot) = t.full.pop() {
                    size += 16 + u64::from(slot.len);
                    if size > limit {
                        if !t.capped.swap(true, Ordering::Relaxed) {
                            eprintln!(
                                "xdpcopy: --pcap-out {display} reached --pcap-out-max-mb; no more frames are written"
                            );
                        }
                        let _ = t.free.push(slot);
                        continue;
                    }
                    let pkt = PcapPacket::new(slot.ts, slot.orig_len, &slot.data[..slot.len as usize]);
                    writer.write_packet(&pkt).with_context(|| format!("--pcap-out {display}: write failed"))?;
                    t.written.fetch_add(1, Ordering::Relaxed);
                    let _ = t.free.push(slot);
                    wrote = true;
                }
                if !wrote {
                    if s.load(Ordering::Acquire) && t.full.is_empty() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            }
            use std::io::Write as _;
            writer.into_writer().flush().with_context(|| format!("--pcap-out {display}: flush failed"))?;
            Ok(())
        })?;
        Ok(Self { tap, stop, thread: Some(thread), path: path.to_owned() })
    }

    /// Writes what is queued, closes the file; returns (frames written, frames dropped).
    ///
    /// # Errors
    /// A write error of the writer thread.
    pub fn finish(&mut self) -> Result<PcapOutCounters> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("the --pcap-out writer panicked"))??;
        }
        eprintln!("xdpcopy: wrote {}", self.path.display());
        Ok(PcapOutCounters {
            written: self.tap.written(),
            dropped: self.tap.dropped.load(Ordering::Relaxed),
            capped: u64::from(self.tap.capped.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_cap_stops_writing_and_says_so() {
        let path = std::env::temp_dir().join(format!("xdpcopy-pcap-cap-{}.pcap", std::process::id()));
        // The file header (24) and two 100-byte frames with their record headers (2 × 116).
        let mut out = PcapOut::create(&path, Some(24 + 2 * 116)).unwrap();
        for _ in 0..2 {
            out.tap.copy(&[0xab; 100]);
        }
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..3 {
            out.tap.copy(&[0xcd; 100]);
        }
        let c = out.finish().unwrap();
        assert_eq!((c.written, c.capped, c.dropped), (2, 1, 0));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24 + 2 * 116);
        let _ = std::fs::remove_file(&path);
    }
}
