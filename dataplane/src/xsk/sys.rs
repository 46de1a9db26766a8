//! Every system call of the AF_XDP layer goes through this file (aya's choke-point pattern): each
//! wrapper turns `-1`/`errno` into a [`SyscallError`] naming the call, and owns the one `unsafe`
//! block that call needs. The lab's few calls (`setns`, `kill`, an `AF_PACKET` sender) live here
//! too, so the `bench` crate has no `unsafe` of its own.
//!
//! The calls the poll loop makes — the TX kick (`sendto`), the fill-ring kick (`recvfrom`) and
//! `poll` — go through one dispatch function, [`loop_call`]. In tests (and with the `testing`
//! feature) a thread-local handler can take them over ([`seam::replace`]): a port over in-memory
//! rings counts its kicks instead of calling the kernel.

use std::{
    ffi::CString,
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    time::Duration,
};

use memmap2::{Mmap, MmapMut, MmapOptions};

/// A failed system call: which one, and the OS error (in the message, not as a separate
/// source, so an error chain prints it once).
#[derive(Debug)]
pub struct SyscallError {
    /// The call and its subject, e.g. `setsockopt(XDP_UMEM_REG)`.
    pub call: &'static str,
    /// The OS error it returned.
    pub source: io::Error,
}

impl std::fmt::Display for SyscallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.call, self.source)
    }
}

impl std::error::Error for SyscallError {}

impl SyscallError {
    fn last(call: &'static str) -> Self {
        Self { call, source: io::Error::last_os_error() }
    }

    /// Returns the raw OS error code, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

pub type Result<T> = std::result::Result<T, SyscallError>;

/// Opens an `AF_XDP` socket.
pub fn xdp_socket() -> Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; on success the kernel returns a fresh fd
    // that nobody else owns, so wrapping it in OwnedFd is sound.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(SyscallError::last("socket(AF_XDP)"));
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(fd, SOL_XDP, name, value)`.
pub fn set_xdp_opt<T: Copy>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T, call: &'static str) -> Result<()> {
    // SAFETY: `value` is a valid, initialised `T` for the duration of the call and the length
    // passed is exactly its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(SyscallError::last(call));
    }
    Ok(())
}

/// `getsockopt(fd, SOL_XDP, name)` into a `T` that the kernel fills completely.
pub fn get_xdp_opt<T: Copy>(fd: BorrowedFd<'_>, name: libc::c_int, call: &'static str) -> Result<T> {
    let mut value = MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to `len` writable bytes; the kernel writes at most `len` bytes and
    // reports how many in `len`.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, name, value.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return Err(SyscallError::last(call));
    }
    if len as usize != size_of::<T>() {
        return Err(SyscallError {
            call,
            source: io::Error::other(format!(
                "kernel returned {len} bytes, expected {} (kernel too old?)",
                size_of::<T>()
            )),
        });
    }
    // SAFETY: zero-initialised and then fully written by the kernel (length checked above); all
    // the `T`s used here are plain integer structs for which any bit pattern is valid.
    Ok(unsafe { value.assume_init() })
}

/// Binds an XDP socket to (ifindex, queue) with `flags`; `shared_umem_fd` for `XDP_SHARED_UMEM`.
pub fn bind_xdp(fd: BorrowedFd<'_>, ifindex: u32, queue: u32, flags: u16, shared_umem_fd: Option<RawFd>) -> Result<()> {
    let addr = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: shared_umem_fd.map_or(0, |fd| fd as u32),
    };
    // SAFETY: `addr` is a valid sockaddr_xdp and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(SyscallError::last("bind(AF_XDP)"));
    }
    Ok(())
}

/// Maps `len` bytes of a ring of the socket at the page offset `offset` (shared, populated).
pub fn map_ring(fd: BorrowedFd<'_>, offset: u64, len: usize) -> Result<MmapMut> {
    // SAFETY: the mapping is of kernel ring memory owned by the socket; it stays valid while the
    // mapping exists (the kernel keeps the ring alive until munmap even after close). Only the
    // ring code reads/writes it, through atomics for the shared indices.
    unsafe { MmapOptions::new().offset(offset).len(len).populate().map_mut(fd.as_raw_fd()) }
        .map_err(|source| SyscallError { call: "mmap(XDP ring)", source })
}

/// Allocates anonymous, page-aligned, populated, zeroed memory (the UMEM area; in tests, rings).
pub fn map_anonymous(len: usize, call: &'static str) -> Result<MmapMut> {
    MmapOptions::new().len(len).populate().map_anon().map_err(|source| SyscallError { call, source })
}

/// Maps a whole file read-only (the offline feed reads a capture file through it, parsing it
/// without copying).
///
/// The mapping is only ever read through bounds-checked slices, and every byte value is valid,
/// so our own code is unaffected by what the bytes say. The contract `memmap2` asks for — nobody
/// changes the file while it is mapped — is the caller's: a capture being replayed must not be
/// rewritten or truncated meanwhile (appending is harmless: the mapping has the length at open).
/// A truncated file makes reads past its new end fault (SIGBUS), as with any mapped reader.
///
/// # Errors
/// When `mmap` fails (a file that cannot be mapped: a pipe, a special file).
pub fn map_file(file: &std::fs::File) -> Result<Mmap> {
    // SAFETY: a read-only shared mapping of a regular file opened by the caller; see the contract
    // above: the caller replays a file nobody rewrites while it runs, so the slice does not change
    // under us (and reads of any byte value are sound for the parser, which checks every length).
    let map = unsafe { MmapOptions::new().map(file) }
        .map_err(|source| SyscallError { call: "mmap(capture file)", source })?;
    // Read ahead aggressively: the feed walks the file once, front to back.
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// One system call of the poll loop; every such call goes through [`loop_call`].
#[derive(Debug)]
pub enum LoopCall<'a> {
    /// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: the TX wakeup (copy mode transmits inside it).
    KickTx(BorrowedFd<'a>),
    /// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: the fill-ring wakeup.
    KickRx(BorrowedFd<'a>),
    /// `ppoll(fds, timeout)`, waiting for `POLLIN` (nanosecond timeout: the worker sleeps until
    /// its next timer, which may be microseconds away).
    Poll(&'a mut [libc::pollfd], Duration),
}

/// What a system call returned: its non-negative result, or the errno.
pub type RawResult = std::result::Result<isize, i32>;

/// Makes one loop call, or hands it to the test handler ([`seam`]) when one is installed.
fn loop_call(call: LoopCall<'_>) -> RawResult {
    #[cfg(any(test, feature = "testing"))]
    let mut call = call;
    #[cfg(any(test, feature = "testing"))]
    if let Some(r) = seam::handle(&mut call) {
        return r;
    }
    let rc = match call {
        // SAFETY: a zero-length send with a null buffer and no address: the kernel reads nothing.
        LoopCall::KickTx(fd) => unsafe {
            libc::sendto(fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0)
        },
        // SAFETY: a zero-length receive into a null buffer: the kernel writes nothing.
        LoopCall::KickRx(fd) => unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        },
        LoopCall::Poll(fds, timeout) => {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds; `ts`
            // lives across the call; a null signal mask leaves the mask unchanged.
            unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) as isize }
        }
    };
    if rc < 0 {
        return Err(errno());
    }
    Ok(rc)
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The test seam: a thread-local handler that takes over [`loop_call`] (aya's `TEST_SYSCALL`).
#[cfg(any(test, feature = "testing"))]
pub mod seam {
    use std::cell::RefCell;

    use super::{LoopCall, RawResult};

    type Handler = Box<dyn FnMut(&mut LoopCall<'_>) -> Option<RawResult>>;

    thread_local! {
        static HANDLER: RefCell<Option<Handler>> = const { RefCell::new(None) };
    }

    /// Routes this thread's loop calls to `handler` until the returned guard drops (then the
    /// previous handler, if any, is back). `None` from the handler lets the call through to the
    /// kernel. The handler must not make loop calls itself.
    pub fn replace(handler: impl FnMut(&mut LoopCall<'_>) -> Option<RawResult> + 'static) -> Guard {
        let previous = HANDLER.with(|h| h.borrow_mut().replace(Box::new(handler)));
        Guard { previous }
    }

    /// Puts the previous handler back when dropped.
    #[must_use = "the handler is removed when the guard drops"]
    pub struct Guard {
        previous: Option<Handler>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let previous = self.previous.take();
            HANDLER.with(|h| *h.borrow_mut() = previous);
        }
    }

    pub(super) fn handle(call: &mut LoopCall<'_>) -> Option<RawResult> {
        HANDLER.with(|h| h.borrow_mut().as_mut().and_then(|f| f(call)))
    }
}

/// Outcome of a non-blocking kick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// The kernel took the call (or none was needed).
    Done,
    /// The kernel is busy or out of budget (EAGAIN, EBUSY, ENOBUFS, EINTR): call again later.
    Again,
    /// The interface is down (ENETDOWN, ENXIO): nothing can be sent until it is up again.
    Down,
    /// Another error (errno); the caller counts it.
    Failed(i32),
}

impl Kick {
    fn of(r: RawResult) -> Kick {
        match r {
            Ok(_) => Kick::Done,
            Err(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Kick::Again,
            Err(libc::ENETDOWN | libc::ENXIO) => Kick::Down,
            Err(e) => Kick::Failed(e),
        }
    }
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: the copy-mode transmit engine / TX wakeup.
pub fn kick_tx(fd: BorrowedFd<'_>) -> Kick {
    Kick::of(loop_call(LoopCall::KickTx(fd)))
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: the fill-ring wakeup.
pub fn kick_rx(fd: BorrowedFd<'_>) -> Kick {
    Kick::of(loop_call(LoopCall::KickRx(fd)))
}

/// Blocks until `fd` is readable or `timeout` passes; returns whether it is readable.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pfd = [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    let rc = loop_call(LoopCall::Poll(&mut pfd, timeout));
    matches!(rc, Ok(n) if n > 0) && pfd[0].revents & libc::POLLIN != 0
}

/// Blocks until `a` or `b` is readable or `timeout` passes; returns whether `b` may be
/// readable (it was, or the wait failed and nobody looked).
pub fn poll_readable2(a: BorrowedFd<'_>, b: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pfds = [
        libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    match loop_call(LoopCall::Poll(&mut pfds, timeout)) {
        Ok(_) => pfds[1].revents != 0,
        Err(_) => true,
    }
}

/// Looks up an interface index by name.
pub fn if_nametoindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// `XDP_FLAGS_SKB_MODE`: generic XDP.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native (driver) XDP.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Attaches an XDP program to an interface through a BPF link (`bpf_link_create(BPF_XDP)`).
/// The returned fd *is* the attachment: closing it (or the process dying) detaches the program.
pub fn xdp_link_create(prog_fd: BorrowedFd<'_>, ifindex: u32, flags: u32) -> Result<OwnedFd> {
    use libbpf_rs::libbpf_sys;
    // SAFETY: bpf_link_create_opts is a plain C struct for which all-zero is the documented
    // default; `sz` tells libbpf its size.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    opts.flags = flags;
    // SAFETY: `prog_fd` is a live program fd, `opts` is valid for the call; libbpf returns a new
    // fd or a negative errno.
    let fd = unsafe { libbpf_sys::bpf_link_create(prog_fd.as_raw_fd(), ifindex as i32, libbpf_sys::BPF_XDP, &opts) };
    if fd < 0 {
        return Err(SyscallError { call: "bpf_link_create(BPF_XDP)", source: io::Error::from_raw_os_error(-fd) });
    }
    // SAFETY: a fresh fd returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches a `SCHED_CLS` program to an interface's egress through a tcx link
/// (`bpf_link_create(BPF_TCX_EGRESS)`, kernel ≥ 6.6), ahead of every other tcx program
/// (`BPF_F_BEFORE` with no anchor). The returned fd *is* the attachment: closing it (or the
/// process dying) detaches the program.
pub fn tcx_egress_link_create(prog_fd: BorrowedFd<'_>, ifindex: u32) -> Result<OwnedFd> {
    use libbpf_rs::libbpf_sys;
    // SAFETY: bpf_link_create_opts is a plain C struct for which all-zero is the documented
    // default; `sz` tells libbpf its size.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    opts.flags = libbpf_sys::BPF_F_BEFORE;
    // SAFETY: `prog_fd` is a live program fd, `opts` is valid for the call; libbpf returns a new
    // fd or a negative errno.
    let fd =
        unsafe { libbpf_sys::bpf_link_create(prog_fd.as_raw_fd(), ifindex as i32, libbpf_sys::BPF_TCX_EGRESS, &opts) };
    if fd < 0 {
        return Err(SyscallError {
            call: "bpf_link_create(BPF_TCX_EGRESS)",
            source: io::Error::from_raw_os_error(-fd),
        });
    }
    // SAFETY: a fresh fd returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking eventfd (the doorbell; the stand-in socket of an in-memory port).
pub fn eventfd() -> Result<OwnedFd> {
    // SAFETY: plain syscall; on success the fd is new and owned by nobody else.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(SyscallError::last("eventfd"));
    }
    // SAFETY: fresh fd from eventfd(), owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An eventfd another thread rings to wake a worker blocked in [`poll_readable2`].
#[derive(Debug)]
pub struct Doorbell(OwnedFd);

impl Doorbell {
    /// Creates a non-blocking eventfd.
    ///
    /// # Errors
    /// When `eventfd` fails.
    pub fn new() -> Result<Self> {
        eventfd().map(Self)
    }

    /// Wakes the waiter (any thread).
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, the size eventfd expects. A full counter (EAGAIN)
        // means the waiter is already due to wake: nothing to do.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending rings (the waiter, after waking).
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into `v`; EAGAIN when nothing is pending.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The fd to wait on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`, so it can be compared with
/// the XDP program's arrival stamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the kernel (vDSO) to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sets the calling thread's timer slack (`PR_SET_TIMERSLACK`): how late the kernel may wake a
/// sleep to batch wake-ups (50 µs by default). The workers sleep until timers microseconds away;
/// best effort.
pub fn set_timer_slack(ns: u64) {
    // SAFETY: prctl with an integer argument; no pointers.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
}

/// Puts the calling thread in `SCHED_IDLE`: it runs only when nothing else wants its core (the
/// benchmark's spinners that keep idle cores from halting).
///
/// # Errors
/// When `sched_setscheduler` fails.
pub fn set_idle_priority() -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is valid for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        return Err(SyscallError::last("sched_setscheduler"));
    }
    Ok(())
}

/// An `AF_PACKET` raw socket bound to one interface: the lab's frame sender
/// ([`PacketSocket::sender`]) and the promiscuous-mode holder ([`PacketSocket::promiscuous`]).
#[derive(Debug)]
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    /// Opens a raw packet socket bound to `ifindex` with protocol 0: it sends, and receives
    /// nothing.
    ///
    /// # Errors
    /// When `socket` or `bind` fails (not root, no such interface).
    pub fn sender(ifindex: u32) -> Result<Self> {
        Self::open(ifindex, 0)
    }

    /// Opens a packet socket on `ifindex` that receives nothing and holds the interface in
    /// promiscuous mode (`PACKET_ADD_MEMBERSHIP`, `PACKET_MR_PROMISC`) until it is closed: the
    /// kernel counts memberships and drops this one when the socket closes, however the
    /// process ends.
    ///
    /// # Errors
    /// When `socket`, `bind` or `setsockopt` fails (not root, no such interface).
    pub fn promiscuous(ifindex: u32) -> Result<Self> {
        let sock = Self::open(ifindex, 0)?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        // SAFETY: `mreq` is a valid packet_mreq and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.0.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(SyscallError::last("setsockopt(PACKET_ADD_MEMBERSHIP)"));
        }
        Ok(sock)
    }

    fn open(ifindex: u32, proto: u16) -> Result<Self> {
        // SAFETY: plain syscall; a fresh fd on success.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
        if fd < 0 {
            return Err(SyscallError::last("socket(AF_PACKET)"));
        }
        // SAFETY: fresh fd from socket(), owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll and the length is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(SyscallError::last("bind(AF_PACKET)"));
        }
        Ok(Self(fd))
    }

    /// Sends one frame; `Kick::Again` when the device queue is full (ENOBUFS, EAGAIN) or the
    /// call should be repeated (EBUSY, EINTR), `Kick::Down` while the interface is down.
    pub fn send(&self, frame: &[u8]) -> Kick {
        // SAFETY: `frame` is valid for reads of its length for the duration of the call.
        let rc = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        Kick::of(if rc < 0 { Err(errno()) } else { Ok(rc) })
    }
}

/// Moves the calling thread into the network namespace open at `ns` (`/run/netns/NAME`):
/// `setns(fd, CLONE_NEWNET)`. Only this thread changes namespace.
///
/// # Errors
/// When `setns` fails (not root, not a network namespace file).
pub fn enter_netns(ns: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: plain syscall on a borrowed, open fd; no memory is passed.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(SyscallError::last("setns(CLONE_NEWNET)"));
    }
    Ok(())
}

/// Sends signal `sig` to process `pid` (`kill`). Pid 0 and pids that are not a positive `pid_t`
/// are refused (`kill` would address a process group or every process).
///
/// # Errors
/// `InvalidInput` for such a pid; otherwise when `kill` fails (no such process, not permitted).
pub fn kill(pid: u32, sig: i32) -> Result<()> {
    let Some(pid) = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0) else {
        return Err(SyscallError { call: "kill", source: io::ErrorKind::InvalidInput.into() });
    };
    // SAFETY: kill(2) takes no pointers; `pid` is one specific positive pid.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        return Err(SyscallError::last("kill"));
    }
    Ok(())
}
