//! The XDP program (`xdpcopy.bpf.c`, compiled by build.rs) and its loader.
//!
//! [`Program::load`] opens the embedded object, [`Program::attach`] attaches one of its entry
//! points to an interface through a BPF link — native mode preferred, generic as the fallback —
//! so the program disappears when the process exits or crashes. The maps are reached through
//! owned handles: `xsks` (queue → socket), `ports` (TCP port → selection flags) and the per-CPU
//! `counters`.

use std::{
    fmt,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use libbpf_rs::{MapCore, MapFlags, MapHandle, Object, ObjectBuilder};

use crate::xsk::sys;

/// The egress program of `xdpcopy-intercept --local` (tc/tcx, ring buffer).
pub mod egress;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdpcopy.bpf.o"));

/// Entry points of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Redirect selected TCP to the XSK of the queue; pass the rest.
    Redirect,
    /// Count and drop everything (benchmark baseline).
    Drop,
    /// Drop IPv4 TCP with the probability set by [`Program::set_loss`] (test impairment).
    Lossy,
}

impl Entry {
    fn name(self) -> &'static str {
        match self {
            Entry::Redirect => "xdpcopy_redirect",
            Entry::Drop => "xdpcopy_drop",
            Entry::Lossy => "xdpcopy_lossy",
        }
    }
}

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native if the driver supports it, generic otherwise.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode only.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// The metadata the redirect program puts in front of each frame it hands to a socket (and the
/// offline feed in front of each frame it delivers): magic, generation, arrival time.
pub mod meta {
    /// Bytes of metadata right before the frame's data.
    pub const LEN: usize = 16;
    const MAGIC: u32 = 0x7864_7063;

    /// The block for a frame that arrived at `arrival_ns` (CLOCK_MONOTONIC) in replay loop
    /// `generation` (the offline feed's `-T` loop; the XDP program writes 0).
    pub fn stamp(arrival_ns: u64, generation: u32) -> [u8; LEN] {
        let mut m = [0u8; LEN];
        m[..4].copy_from_slice(&MAGIC.to_ne_bytes());
        m[4..8].copy_from_slice(&generation.to_ne_bytes());
        m[8..].copy_from_slice(&arrival_ns.to_ne_bytes());
        m
    }

    /// Returns the frame's arrival time (CLOCK_MONOTONIC ns) from the `LEN` bytes before it, if
    /// the program stamped it.
    pub fn arrival_ns(before: &[u8; LEN]) -> Option<u64> {
        let magic = u32::from_ne_bytes(before[..4].try_into().expect("4 bytes"));
        (magic == MAGIC).then(|| u64::from_ne_bytes(before[8..16].try_into().expect("8 bytes")))
    }

    /// Returns the replay loop the frame belongs to (0 for live capture or no stamp).
    pub fn generation(before: &[u8; LEN]) -> u32 {
        let magic = u32::from_ne_bytes(before[..4].try_into().expect("4 bytes"));
        if magic == MAGIC {
            u32::from_ne_bytes(before[4..8].try_into().expect("4 bytes"))
        } else {
            0
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_stamp_reads_back() {
            let m = stamp(123_456_789, 2);
            assert_eq!((arrival_ns(&m), generation(&m)), (Some(123_456_789), 2));
            assert_eq!((arrival_ns(&[0; LEN]), generation(&[0xff; LEN])), (None, 0));
        }
    }
}

/// Port selection flags (`ports` map values); keep in sync with the C source.
pub mod port_flags {
    /// Redirect TCP whose destination port is this one.
    pub const DST: u32 = 1;
    /// Redirect TCP whose source port is this one.
    pub const SRC: u32 = 2;
}

/// The program's counters (index in the `counters` map); keep in sync with the C source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Frames the program ran on.
    Seen = 0,
    /// Handed to the XSK (selected port).
    Redirected,
    /// Handed to the XSK because its headers are broken.
    Malformed,
    /// Passed to the kernel.
    Passed,
    /// Redirect fell back to XDP_PASS (no socket bound on that queue).
    RedirectFailed,
    /// Dropped by `xdpcopy_drop`.
    Dropped,
    /// IPv6 passed because its extension headers could not be skipped.
    Ipv6Unwalkable,
}

impl Counter {
    /// All counters, in map order.
    pub const ALL: [Counter; 7] = [
        Counter::Seen,
        Counter::Redirected,
        Counter::Malformed,
        Counter::Passed,
        Counter::RedirectFailed,
        Counter::Dropped,
        Counter::Ipv6Unwalkable,
    ];
}

control::counters! {
    /// The program's counters, summed over CPUs; fields in map order (as [`Counter::ALL`]).
    #[derive(Copy)]
    pub struct XdpCounters {
        /// Frames the program ran on.
        counter seen,
        /// Frames handed to an AF_XDP socket (selected).
        counter redirected,
        /// Frames handed to an AF_XDP socket because their headers are broken.
        counter malformed,
        /// Frames passed to the kernel.
        counter passed,
        /// Redirects that fell back to XDP_PASS (no socket bound on that queue).
        counter redirect_failed,
        /// Frames dropped by the drop entry point (benchmarks).
        counter dropped,
        /// IPv6 frames passed (counted in `passed` too) because an extension header before the
        /// transport header cannot be skipped: a fragment of TCP, AH, more than 4 headers. Had
        /// they been TCP to a selected port, they were not replayed.
        counter ipv6_unwalkable,
    }
}

/// Errors loading or attaching the program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libbpf could not open/load the object or find a map/program.
    #[error("loading the XDP program")]
    Load(#[from] libbpf_rs::Error),
    /// Attaching failed in every allowed mode.
    #[error("attaching XDP ({mode}) to {ifname} failed (try --xdp-mode generic, or check `ip link show {ifname}` for another XDP program)")]
    Attach {
        /// Interface.
        ifname: String,
        /// Requested mode.
        mode: XdpMode,
        /// Last failure.
        #[source]
        source: sys::SyscallError,
    },
    /// Attaching the egress program (tcx or the clsact filter) failed.
    #[error("attaching the egress program to {ifname} failed (check `tc filter show dev {ifname} egress` and `bpftool net show dev {ifname}` for another program)")]
    AttachEgress {
        /// Interface.
        ifname: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No such interface.
    #[error("interface {0} not found; list interfaces with `ip link`")]
    NoSuchInterface(String),
    /// Updating a map failed.
    #[error("updating BPF map {map}")]
    Map {
        /// Map name.
        map: &'static str,
        /// Cause.
        #[source]
        source: libbpf_rs::Error,
    },
}

/// A loaded program object with handles on its maps.
pub struct Program {
    obj: Object,
    xsks: MapHandle,
    ports: MapHandle,
    sources: MapHandle,
    sources6: MapHandle,
    loss: MapHandle,
    counters: MapHandle,
}

/// An attachment; dropping it detaches the program.
pub struct Attachment {
    _link: OwnedFd,
    /// The mode the kernel accepted.
    pub mode: XdpMode,
    /// Interface name.
    pub ifname: String,
}

impl Program {
    /// Opens and loads the embedded object into the kernel.
    ///
    /// # Errors
    /// When the kernel rejects the object (verifier, missing BPF support, not root).
    pub fn load() -> Result<Self, Error> {
        let open = ObjectBuilder::default().name("xdpcopy")?.open_memory(OBJECT)?;
        let obj = open.load()?;
        let handle = |name: &str| -> Result<MapHandle, Error> {
            let map = obj
                .maps()
                .find(|m| m.name() == name)
                .ok_or_else(|| libbpf_rs::Error::from(std::io::Error::other(format!("map {name} missing"))))?;
            Ok(MapHandle::try_from(&map)?)
        };
        let xsks = handle("xsks")?;
        let ports = handle("ports")?;
        let counters = handle("counters")?;
        let sources = handle("sources")?;
        let sources6 = handle("sources6")?;
        let loss = handle("loss")?;
        Ok(Self { obj, xsks, ports, sources, sources6, loss, counters })
    }

    /// Attaches `entry` to `ifname` in `mode` (auto: native, then generic).
    ///
    /// # Errors
    /// When the interface is missing or no allowed mode attaches.
    pub fn attach(&self, entry: Entry, ifname: &str, mode: XdpMode) -> Result<Attachment, Error> {
        let ifindex = sys::if_nametoindex(ifname).ok_or_else(|| Error::NoSuchInterface(ifname.to_owned()))?;
        let prog = self.obj.progs().find(|p| p.name() == entry.name()).ok_or_else(|| {
            libbpf_rs::Error::from(std::io::Error::other(format!("program {} missing", entry.name())))
        })?;
        let tries: &[(XdpMode, u32)] = match mode {
            XdpMode::Auto => &[(XdpMode::Native, sys::XDP_FLAGS_DRV_MODE), (XdpMode::Generic, sys::XDP_FLAGS_SKB_MODE)],
            XdpMode::Native => &[(XdpMode::Native, sys::XDP_FLAGS_DRV_MODE)],
            XdpMode::Generic => &[(XdpMode::Generic, sys::XDP_FLAGS_SKB_MODE)],
        };
        let mut last = None;
        for &(m, flags) in tries {
            match sys::xdp_link_create(prog.as_fd(), ifindex, flags) {
                Ok(link) => return Ok(Attachment { _link: link, mode: m, ifname: ifname.to_owned() }),
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Attach { ifname: ifname.to_owned(), mode, source: last.expect("one mode was tried") })
    }

    /// Binds queue `queue`'s frames to the socket `fd`.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn set_socket(&self, queue: u32, fd: impl AsRawFd) -> Result<(), Error> {
        let value = (fd.as_raw_fd() as u32).to_ne_bytes();
        self.xsks
            .update(&queue.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|source| Error::Map { map: "xsks", source })
    }

    /// Selects TCP `port` with `flags` (see [`port_flags`]).
    ///
    /// # Errors
    /// When the map update fails.
    pub fn select_port(&self, port: u16, flags: u32) -> Result<(), Error> {
        self.ports
            .update(&u32::from(port).to_ne_bytes(), &flags.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| Error::Map { map: "ports", source })
    }

    /// Selects TCP segments *from* `addr` (the intercept's test servers, or the online server's
    /// responses for production latency): their source address (IPv4 or IPv6) and port must
    /// match exactly; the unspecified address (0.0.0.0, ::) matches any address of its family
    /// with that port.
    ///
    /// # Errors
    /// When a map update fails.
    pub fn select_source(&self, addr: impl Into<std::net::SocketAddr>) -> Result<(), Error> {
        let addr = addr.into();
        match addr.ip() {
            std::net::IpAddr::V4(ip) => {
                let mut key = [0u8; 8];
                key[..4].copy_from_slice(&ip.octets());
                key[4..6].copy_from_slice(&addr.port().to_be_bytes());
                self.sources
                    .update(&key, &[1u8], MapFlags::ANY)
                    .map_err(|source| Error::Map { map: "sources", source })?;
            }
            std::net::IpAddr::V6(ip) => {
                let mut key = [0u8; 20];
                key[..16].copy_from_slice(&ip.octets());
                key[16..18].copy_from_slice(&addr.port().to_be_bytes());
                self.sources6
                    .update(&key, &[1u8], MapFlags::ANY)
                    .map_err(|source| Error::Map { map: "sources6", source })?;
            }
        }
        let port = u32::from(addr.port()).to_ne_bytes();
        let old = self
            .ports
            .lookup(&port, MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| v.get(..4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes"))))
            .unwrap_or(0);
        self.select_port(addr.port(), old | port_flags::SRC)
    }

    /// Sets the drop probability (0.0..=1.0) of the [`Entry::Lossy`] program.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn set_loss(&self, probability: f64) -> Result<(), Error> {
        let threshold = (probability.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u32;
        self.loss
            .update(&0u32.to_ne_bytes(), &threshold.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| Error::Map { map: "loss", source })
    }

    /// Returns every counter, summed over all CPUs.
    pub fn counters(&self) -> XdpCounters {
        let mut all = XdpCounters::default();
        let mut at = Counter::ALL.iter();
        control::counters::CounterSet::visit_mut(&mut all, &mut |v| {
            *v = at.next().map_or(0, |c| self.counter(*c));
        });
        all
    }

    /// Returns a counter summed over all CPUs.
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters
            .lookup_percpu(&(c as u32).to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .map(|per_cpu| {
                per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8))
                    .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
                    .sum()
            })
            .unwrap_or(0)
    }
}
