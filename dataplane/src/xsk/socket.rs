//! An AF_XDP socket bound to one (interface, queue): its rings, its bind mode, its statistics.
//!
//! The socket that registers the UMEM owns it ([`Socket::create`]); a second socket on another
//! interface shares it with `XDP_SHARED_UMEM` ([`Socket::create_shared`]) and then needs its own
//! fill and completion rings, and bind flags of exactly `XDP_SHARED_UMEM` (it inherits copy/zero-
//! copy and need-wakeup from the owner).
//!
//! Sockets are private to the layer: [`Port`](super::Port) takes the rings it uses out of them,
//! so nothing outside can put a raw address on a ring the kernel reads.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::{
    ring::{Consumer, Layout, Producer},
    sys::{self, SyscallError},
    umem::Umem,
};

/// Whether to ask for zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Zero-copy if the driver supports it, copy otherwise.
    Auto,
    /// Copy mode only.
    Copy,
    /// Zero-copy or fail.
    ZeroCopy,
}

/// Ring sizes and bind options for one socket.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Interface name.
    pub ifname: String,
    /// Queue id on that interface.
    pub queue: u32,
    /// RX ring entries (0 = no RX ring).
    pub rx_size: u32,
    /// TX ring entries (0 = no TX ring).
    pub tx_size: u32,
    /// Fill ring entries.
    pub fill_size: u32,
    /// Completion ring entries.
    pub comp_size: u32,
    /// Zero-copy policy (ignored for a shared socket, which inherits the owner's).
    pub copy_mode: CopyMode,
}

/// Errors setting a socket up, with the interface and queue they concern.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface does not exist in this network namespace.
    #[error("interface {0} not found; list interfaces with `ip link`")]
    NoSuchInterface(String),
    /// A system call failed.
    #[error("AF_XDP socket on {ifname} queue {queue}")]
    Syscall {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// The failed call.
        #[source]
        source: SyscallError,
    },
}

/// Kernel statistics of one socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Frames dropped by the kernel for reasons other than an empty fill ring / full RX ring.
    pub rx_dropped: u64,
    /// Invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the TX ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty: u64,
}

/// A second handle on a socket's fd, for reading its statistics from another thread.
pub struct StatsHandle(OwnedFd);

impl StatsHandle {
    /// Reads the socket's kernel statistics.
    ///
    /// # Errors
    /// When `getsockopt(XDP_STATISTICS)` fails.
    pub fn read(&self) -> Result<Statistics, SyscallError> {
        let s: libc::xdp_statistics =
            sys::get_xdp_opt(self.0.as_fd(), libc::XDP_STATISTICS, "getsockopt(XDP_STATISTICS)")?;
        Ok(Statistics {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            tx_ring_empty: s.tx_ring_empty_descs,
        })
    }
}

/// A bound AF_XDP socket and its rings (each `None` once a port has taken it, or when not
/// configured; the rings a port does not use stay here, mapped, until the socket closes).
pub(crate) struct Socket {
    fd: OwnedFd,
    /// RX ring (kernel → us), if configured.
    pub rx: Option<Consumer<libc::xdp_desc>>,
    /// TX ring (us → kernel), if configured.
    pub tx: Option<Producer<libc::xdp_desc>>,
    /// Fill ring (free frames us → kernel).
    pub fill: Option<Producer<u64>>,
    /// Completion ring (sent frames kernel → us).
    pub comp: Option<Consumer<u64>>,
    zero_copy: bool,
}

/// Binds retried on EBUSY (50 ms apart): up to 3 s for the previous owner's release.
const BUSY_RETRIES: u32 = 60;

/// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.x): frames one copy-mode `sendto` may transmit.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

impl Socket {
    /// Creates the socket that owns `umem`, preferring zero-copy per `cfg.copy_mode`.
    ///
    /// # Errors
    /// When the interface is missing or a setup call fails (the error names it).
    pub fn create(umem: &Umem, cfg: &Config) -> Result<Self, Error> {
        let ifindex = ifindex(&cfg.ifname)?;
        let attempts: &[u16] = match cfg.copy_mode {
            CopyMode::Auto => &[libc::XDP_ZEROCOPY, libc::XDP_COPY],
            CopyMode::Copy => &[libc::XDP_COPY],
            CopyMode::ZeroCopy => &[libc::XDP_ZEROCOPY],
        };
        let mut last = None;
        for &mode in attempts {
            let attempt = retry_busy(|| {
                let fd = sys::xdp_socket()?;
                let reg = umem.registration();
                sys::set_xdp_opt(fd.as_fd(), libc::XDP_UMEM_REG, &reg, "setsockopt(XDP_UMEM_REG)")?;
                let sock = Self::rings(fd, cfg)?;
                sys::bind_xdp(sock.fd.as_fd(), ifindex, cfg.queue, mode | libc::XDP_USE_NEED_WAKEUP, None)?;
                Ok(sock)
            });
            match attempt {
                Ok(mut sock) => {
                    sock.zero_copy = sock.query_zero_copy();
                    sock.raise_tx_budget();
                    return Ok(sock);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Syscall { ifname: cfg.ifname.clone(), queue: cfg.queue, source: last.expect("one attempt ran") })
    }

    /// Creates a socket on another (interface, queue) that shares `owner`'s UMEM.
    ///
    /// # Errors
    /// As for [`Socket::create`].
    pub fn create_shared(owner: &Socket, cfg: &Config) -> Result<Self, Error> {
        let ifindex = ifindex(&cfg.ifname)?;
        let wrap = |source| Error::Syscall { ifname: cfg.ifname.clone(), queue: cfg.queue, source };
        let mut sock = retry_busy(|| {
            let sock = Self::rings(sys::xdp_socket()?, cfg)?;
            sys::bind_xdp(sock.fd.as_fd(), ifindex, cfg.queue, libc::XDP_SHARED_UMEM, Some(owner.fd.as_raw_fd()))?;
            Ok(sock)
        })
        .map_err(wrap)?;
        sock.zero_copy = sock.query_zero_copy();
        sock.raise_tx_budget();
        Ok(sock)
    }

    fn rings(fd: OwnedFd, cfg: &Config) -> Result<Self, SyscallError> {
        let b = fd.as_fd();
        sys::set_xdp_opt(b, libc::XDP_UMEM_FILL_RING, &cfg.fill_size, "setsockopt(XDP_UMEM_FILL_RING)")?;
        sys::set_xdp_opt(b, libc::XDP_UMEM_COMPLETION_RING, &cfg.comp_size, "setsockopt(XDP_UMEM_COMPLETION_RING)")?;
        if cfg.rx_size > 0 {
            sys::set_xdp_opt(b, libc::XDP_RX_RING, &cfg.rx_size, "setsockopt(XDP_RX_RING)")?;
        }
        if cfg.tx_size > 0 {
            sys::set_xdp_opt(b, libc::XDP_TX_RING, &cfg.tx_size, "setsockopt(XDP_TX_RING)")?;
        }
        let off: libc::xdp_mmap_offsets = sys::get_xdp_opt(b, libc::XDP_MMAP_OFFSETS, "getsockopt(XDP_MMAP_OFFSETS)")?;
        let fill = Producer::map(b, libc::XDP_UMEM_PGOFF_FILL_RING, &Layout::from(off.fr), cfg.fill_size)?;
        let comp = Consumer::map(b, libc::XDP_UMEM_PGOFF_COMPLETION_RING, &Layout::from(off.cr), cfg.comp_size)?;
        let rx = (cfg.rx_size > 0)
            .then(|| Consumer::map(b, libc::XDP_PGOFF_RX_RING as u64, &Layout::from(off.rx), cfg.rx_size))
            .transpose()?;
        let tx = (cfg.tx_size > 0)
            .then(|| Producer::map(b, libc::XDP_PGOFF_TX_RING as u64, &Layout::from(off.tx), cfg.tx_size))
            .transpose()?;
        Ok(Self { fd, rx, tx, fill: Some(fill), comp: Some(comp), zero_copy: false })
    }

    fn query_zero_copy(&self) -> bool {
        sys::get_xdp_opt::<libc::xdp_options>(self.fd.as_fd(), libc::XDP_OPTIONS, "getsockopt(XDP_OPTIONS)")
            .map(|o| o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
            .unwrap_or(false)
    }

    /// Lets one copy-mode `sendto` move up to 256 frames instead of 32; best effort (older
    /// kernels reject the option, which only costs more kicks).
    fn raise_tx_budget(&self) {
        if self.tx.is_some() {
            let _ =
                sys::set_xdp_opt(self.fd.as_fd(), XDP_MAX_TX_SKB_BUDGET, &256u32, "setsockopt(XDP_MAX_TX_SKB_BUDGET)");
        }
    }

    /// Whether the kernel bound this socket in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The socket's fd (for the XSKMAP and for `poll`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Returns a handle that reads this socket's statistics from another thread.
    ///
    /// # Errors
    /// When the fd cannot be duplicated.
    pub fn stats_handle(&self) -> std::io::Result<StatsHandle> {
        Ok(StatsHandle(self.fd.try_clone()?))
    }
}

/// Runs a socket setup again while it fails with EBUSY: a socket another process just closed on
/// the same queue is released asynchronously by the kernel (seen when intercept restarts, and
/// between the benchmark's measurements).
fn retry_busy(mut setup: impl FnMut() -> Result<Socket, SyscallError>) -> Result<Socket, SyscallError> {
    let mut retries = 0;
    loop {
        match setup() {
            Err(e) if e.errno() == Some(libc::EBUSY) && retries < BUSY_RETRIES => {
                retries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn ifindex(name: &str) -> Result<u32, Error> {
    sys::if_nametoindex(name).ok_or_else(|| Error::NoSuchInterface(name.to_owned()))
}
