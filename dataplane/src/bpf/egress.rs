//! The egress program of `xdpcopy-intercept --local` (`egress.bpf.c`) and its loader.
//!
//! [`EgressProgram::load`] opens the embedded object (sizing its ring buffer),
//! [`EgressProgram::attach`] attaches it to an interface's egress: through a tcx link where the
//! kernel has tcx (≥ 6.6), so it disappears with the process like the XDP link; otherwise as a
//! clsact direct-action filter at a fixed handle and priority ([`TC_HANDLE`], [`TC_PRIORITY`]),
//! removed when the [`EgressAttachment`] is dropped. A filter left behind by a process that died
//! (SIGKILL) is found at the next attach, in either mode, and removed
//! ([`EgressAttachment::stale_removed`] says so). The selected segments' headers come out of
//! the `headers` ring buffer through [`HeaderRing`], whose fd goes into the caller's event loop.
//!
//! # Why a BPF ring buffer
//!
//! The program hands userspace ~140 bytes per segment (headers only), and the intercept runs one
//! thread. A ring buffer is one memory area shared by every CPU, mapped into the process: records
//! are reserved and committed in place by the program and read in place by the consumer, in
//! order across CPUs, with one wakeup per batch (the kernel notifies only when the consumer has
//! caught up) and an fd that epoll can wait on. A perf buffer has one buffer per CPU (one fd and
//! one poll per CPU, records copied in by `bpf_perf_event_output`, no global order, memory ×
//! CPUs). AF_XDP cannot be used at egress at all: it receives from an RX queue only.

use std::{
    cell::RefCell,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    rc::Rc,
};

use libbpf_rs::{
    query::ProgInfoIter, MapCore, MapFlags, MapHandle, Object, ObjectBuilder, RingBuffer, RingBufferBuilder, TcHook,
    TC_EGRESS,
};

use super::Error;
use crate::xsk::sys;

static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/egress.bpf.o"));

/// The program's name (the kernel shows it in `bpftool prog`, `tc filter show`).
pub const PROGRAM_NAME: &str = "xdpcopy_egress";
/// The legacy clsact filter's handle (kernels without tcx).
pub const TC_HANDLE: u32 = 0x7863;
/// The legacy clsact filter's priority: 1, ahead of other egress filters.
pub const TC_PRIORITY: u32 = 1;
/// Largest IP + TCP header a record carries (`HDR_MAX` in the C source).
pub const HDR_MAX: usize = 120;
/// Bytes of one ring buffer record (`struct record` in the C source).
pub const RECORD_LEN: usize = 16 + HDR_MAX;

/// The program's counters (index in the `counters` map); keep in sync with the C source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Counter {
    Seen = 0,
    Captured,
    Gso,
    RingFull,
    HeaderUnreadable,
    PassedAllowlist,
    PassedChannel,
    Passed,
}

control::labels! {
    /// Why the egress program took a segment away: every one is a --target's answer to a copied
    /// session, so it never leaves, whether or not its header reached the intercept. (It is
    /// stolen, not dropped: the sender's TCP takes it as sent; see `steal()` in the C source.)
    pub enum EgressDrop: "reason" {
        /// Its header went into the ring buffer (the normal case).
        Captured = "captured",
        /// The ring buffer was full: no header (the intercept is not keeping up).
        RingFull = "ring_full",
        /// Its headers could not be read: no header (a bug if it ever counts).
        HeaderUnreadable = "header_unreadable",
    }
}

control::labels! {
    /// Why the egress program let a packet go.
    pub enum EgressPass: "reason" {
        /// A --target's segment to a --pass-to address.
        Allowlist = "allowlist",
        /// From the channel port: the intercept's own connections to its copiers.
        Channel = "channel",
        /// Not a --target's TCP segment (other ports, other protocols, outbound connections).
        Other = "other",
    }
}

control::counters! {
    /// The egress program's counters, summed over CPUs.
    #[derive(Copy)]
    pub struct EgressCounters {
        /// Packets the program ran on.
        counter seen,
        /// Segments taken away (they never leave; TCP takes them as sent), by reason.
        counter dropped[EgressDrop],
        /// Captured segments that were GSO super-segments (several wire segments in one).
        counter gso,
        /// Packets passed, by reason.
        counter passed[EgressPass],
    }
}

/// What precedes the IP header on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLayer {
    /// Ethernet (untagged, or one 802.1Q/802.1ad tag in the packet).
    Ethernet,
    /// Nothing: a raw IP device (tun, wireguard).
    RawIp,
}

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressAttach {
    /// tcx if the kernel has it, the clsact filter otherwise.
    Auto,
    /// tcx only (kernel ≥ 6.6).
    Tcx,
    /// The clsact filter only.
    Tc,
}

impl std::fmt::Display for EgressAttach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EgressAttach::Auto => "auto",
            EgressAttach::Tcx => "tcx",
            EgressAttach::Tc => "tc",
        })
    }
}

/// A loaded egress program with handles on its maps.
pub struct EgressProgram {
    obj: Object,
    config: MapHandle,
    target_ports: MapHandle,
    targets: MapHandle,
    targets6: MapHandle,
    pass_to: MapHandle,
    pass_to6: MapHandle,
    headers: MapHandle,
    counters: MapHandle,
}

enum Hook {
    Tcx(#[allow(dead_code)] OwnedFd),
    Tc(TcHook),
}

/// An attachment; dropping it detaches the program (closes the tcx link, or removes the filter).
pub struct EgressAttachment {
    hook: Hook,
    /// Interface name.
    pub ifname: String,
    /// The program id of a filter of ours a previous process left behind and this attach
    /// removed.
    pub stale_removed: Option<u32>,
}

impl EgressAttachment {
    /// How the program is attached: [`EgressAttach::Tcx`] or [`EgressAttach::Tc`].
    pub fn kind(&self) -> EgressAttach {
        match self.hook {
            Hook::Tcx(_) => EgressAttach::Tcx,
            Hook::Tc(_) => EgressAttach::Tc,
        }
    }
}

impl Drop for EgressAttachment {
    fn drop(&mut self) {
        if let Hook::Tc(hook) = &mut self.hook {
            // Nothing to do on failure: the interface may be gone, taking the filter with it.
            let _ = hook.detach();
        }
    }
}

fn map_err(map: &'static str) -> impl Fn(libbpf_rs::Error) -> Error {
    move |source| Error::Map { map, source }
}

impl EgressProgram {
    /// Opens the embedded object with a ring buffer of `ring_bytes` (a power of two, at least a
    /// page) and loads it into the kernel.
    ///
    /// # Errors
    /// When the kernel rejects the object (verifier, missing BPF support, not root) or the size.
    pub fn load(ring_bytes: u32) -> Result<Self, Error> {
        let mut open = ObjectBuilder::default().name("xdpcopy_egress")?.open_memory(OBJECT)?;
        for mut m in open.maps_mut() {
            if m.name() == "headers" {
                m.set_max_entries(ring_bytes)?;
            }
        }
        let obj = open.load()?;
        let handle = |name: &str| -> Result<MapHandle, Error> {
            let map = obj
                .maps()
                .find(|m| m.name() == name)
                .ok_or_else(|| libbpf_rs::Error::from(std::io::Error::other(format!("map {name} missing"))))?;
            Ok(MapHandle::try_from(&map)?)
        };
        Ok(Self {
            config: handle("config")?,
            target_ports: handle("target_ports")?,
            targets: handle("targets")?,
            targets6: handle("targets6")?,
            pass_to: handle("pass_to")?,
            pass_to6: handle("pass_to6")?,
            headers: handle("headers")?,
            counters: handle("counters")?,
            obj,
        })
    }

    /// Tells the program the channel port (never captured as a source port) and the link layer.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn configure(&self, channel_port: u16, link: LinkLayer) -> Result<(), Error> {
        let mut value = [0u8; 4];
        value[..2].copy_from_slice(&channel_port.to_be_bytes());
        let l2: u16 = match link {
            LinkLayer::Ethernet => 14,
            LinkLayer::RawIp => 0,
        };
        value[2..].copy_from_slice(&l2.to_ne_bytes());
        self.config.update(&0u32.to_ne_bytes(), &value, MapFlags::ANY).map_err(map_err("config"))
    }

    /// Selects TCP segments *from* `target`, IPv4 or IPv6 (the unspecified address: any address
    /// of its family with that port).
    ///
    /// # Errors
    /// When a map update fails.
    pub fn select_target(&self, target: impl Into<SocketAddr>) -> Result<(), Error> {
        let target = target.into();
        match target.ip() {
            IpAddr::V4(ip) => {
                let mut key = [0u8; 8];
                key[..4].copy_from_slice(&ip.octets());
                key[4..6].copy_from_slice(&target.port().to_be_bytes());
                self.targets.update(&key, &[1u8], MapFlags::ANY).map_err(map_err("targets"))?;
            }
            IpAddr::V6(ip) => {
                let mut key = [0u8; 20];
                key[..16].copy_from_slice(&ip.octets());
                key[16..18].copy_from_slice(&target.port().to_be_bytes());
                self.targets6.update(&key, &[1u8], MapFlags::ANY).map_err(map_err("targets6"))?;
            }
        }
        self.target_ports
            .update(&u32::from(target.port()).to_ne_bytes(), &[1u8], MapFlags::ANY)
            .map_err(map_err("target_ports"))
    }

    /// Lets a target's segments to `net/prefix` go (the allowlist), IPv4 or IPv6.
    ///
    /// # Errors
    /// When the map update fails (more than 1024 networks of a family).
    pub fn pass_to(&self, net: IpAddr, prefix: u8) -> Result<(), Error> {
        match net {
            IpAddr::V4(net) => {
                let mut key = [0u8; 8];
                key[..4].copy_from_slice(&u32::from(prefix.min(32)).to_ne_bytes());
                key[4..].copy_from_slice(&net.octets());
                self.pass_to.update(&key, &[1u8], MapFlags::ANY).map_err(map_err("pass_to"))
            }
            IpAddr::V6(net) => {
                let mut key = [0u8; 20];
                key[..4].copy_from_slice(&u32::from(prefix.min(128)).to_ne_bytes());
                key[4..].copy_from_slice(&net.octets());
                self.pass_to6.update(&key, &[1u8], MapFlags::ANY).map_err(map_err("pass_to6"))
            }
        }
    }

    /// Attaches the program to `ifname`'s egress (see the module docs), after removing a filter
    /// of ours that a dead process left there.
    ///
    /// # Errors
    /// When the interface is missing, or no allowed way attaches.
    pub fn attach(&self, ifname: &str, how: EgressAttach) -> Result<EgressAttachment, Error> {
        let ifindex = sys::if_nametoindex(ifname).ok_or_else(|| Error::NoSuchInterface(ifname.to_owned()))?;
        let prog =
            self.obj.progs().find(|p| p.name() == PROGRAM_NAME).ok_or_else(|| {
                libbpf_rs::Error::from(std::io::Error::other(format!("program {PROGRAM_NAME} missing")))
            })?;
        let stale_removed = remove_stale_filter(prog.as_fd(), ifindex)?;
        let tcx = || sys::tcx_egress_link_create(prog.as_fd(), ifindex);
        let tc = || -> Result<TcHook, libbpf_rs::Error> {
            let mut hook = tc_hook(prog.as_fd(), ifindex);
            hook.create()?;
            hook.attach()
        };
        let hook = match how {
            EgressAttach::Tcx => Hook::Tcx(
                tcx()
                    .map_err(|e| Error::AttachEgress { ifname: ifname.to_owned(), source: std::io::Error::other(e) })?,
            ),
            EgressAttach::Tc => Hook::Tc(tc().map_err(|e| attach_error(ifname, e))?),
            EgressAttach::Auto => match tcx() {
                Ok(link) => Hook::Tcx(link),
                // EINVAL: the kernel does not know BPF_TCX_EGRESS (< 6.6).
                Err(_) => Hook::Tc(tc().map_err(|e| attach_error(ifname, e))?),
            },
        };
        Ok(EgressAttachment { hook, ifname: ifname.to_owned(), stale_removed })
    }

    /// The ring buffer the program writes headers into (see [`HeaderRing`]).
    pub fn headers(&self) -> &MapHandle {
        &self.headers
    }

    /// Returns every counter, summed over all CPUs.
    pub fn counters(&self) -> EgressCounters {
        let get = |c: Counter| -> u64 {
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
        };
        let mut c = EgressCounters { seen: get(Counter::Seen), gso: get(Counter::Gso), ..Default::default() };
        c.dropped[EgressDrop::Captured] = get(Counter::Captured);
        c.dropped[EgressDrop::RingFull] = get(Counter::RingFull);
        c.dropped[EgressDrop::HeaderUnreadable] = get(Counter::HeaderUnreadable);
        c.passed[EgressPass::Allowlist] = get(Counter::PassedAllowlist);
        c.passed[EgressPass::Channel] = get(Counter::PassedChannel);
        c.passed[EgressPass::Other] = get(Counter::Passed);
        c
    }
}

fn attach_error(ifname: &str, e: libbpf_rs::Error) -> Error {
    Error::AttachEgress { ifname: ifname.to_owned(), source: std::io::Error::other(e.to_string()) }
}

fn tc_hook(prog: BorrowedFd<'_>, ifindex: u32) -> TcHook {
    let mut hook = TcHook::new(prog);
    hook.ifindex(ifindex as i32).attach_point(TC_EGRESS).handle(TC_HANDLE).priority(TC_PRIORITY);
    hook
}

/// Removes the clsact egress filter at our handle and priority if it runs a program named
/// [`PROGRAM_NAME`] (one of ours whose process died); returns that program's id.
fn remove_stale_filter(prog: BorrowedFd<'_>, ifindex: u32) -> Result<Option<u32>, Error> {
    let mut hook = tc_hook(prog, ifindex);
    // No clsact qdisc, or no filter there: nothing left behind (libbpf would print the netlink
    // error, the normal case, as if it were one).
    let print = libbpf_rs::set_print(None);
    let found = hook.query();
    libbpf_rs::set_print(print);
    let Ok(id) = found else {
        return Ok(None);
    };
    let name = ProgInfoIter::default().find(|p| p.id == id).map(|p| p.name.to_string_lossy().into_owned());
    if name.as_deref() != Some(PROGRAM_NAME) {
        return Ok(None);
    }
    hook.detach().map_err(map_err("tc filter (stale)"))?;
    Ok(Some(id))
}

/// One record of the ring buffer: a selected segment's headers and lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The L3 packet's length in the skb: all segments of a GSO super-segment.
    pub len: u32,
    /// Segments of a GSO super-segment; 0 or 1 otherwise.
    pub gso_segs: u16,
    /// Payload bytes per segment of a GSO super-segment (its MSS); 0 otherwise.
    pub gso_size: u16,
    /// The IP header and the TCP header (truncated at [`HDR_MAX`] bytes).
    pub headers: &'a [u8],
}

impl<'a> Record<'a> {
    /// Reads a record as the program wrote it (`struct record`); `None` if it is too short.
    pub fn parse(b: &'a [u8]) -> Option<Record<'a>> {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        if b.len() < 16 {
            return None;
        }
        let hdr_len = usize::from(u16_at(8));
        let headers = b.get(16..16 + hdr_len.min(HDR_MAX))?;
        Some(Record {
            len: u32::from_ne_bytes(b[..4].try_into().expect("4 bytes")),
            gso_segs: u16_at(4),
            gso_size: u16_at(6),
            headers,
        })
    }

    /// Writes a record as the program does (tests and tools).
    pub fn encode(&self, out: &mut [u8; RECORD_LEN]) {
        out.fill(0);
        out[..4].copy_from_slice(&self.len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_segs.to_ne_bytes());
        out[6..8].copy_from_slice(&self.gso_size.to_ne_bytes());
        let n = self.headers.len().min(HDR_MAX);
        out[8..10].copy_from_slice(&(n as u16).to_ne_bytes());
        out[16..16 + n].copy_from_slice(&self.headers[..n]);
    }
}

/// Records taken from the ring in one [`HeaderRing::consume`], copied out (≤ `RECORD_LEN`
/// bytes each) into slots allocated once.
struct Batch {
    slots: Vec<[u8; RECORD_LEN]>,
    len: usize,
}

/// The consumer side of the `headers` ring buffer: its fd for the caller's epoll, and bursts of
/// records. Nothing is allocated after [`HeaderRing::new`].
pub struct HeaderRing {
    ring: RingBuffer<'static>,
    batch: Rc<RefCell<Batch>>,
    fd: OwnedFd,
}

impl HeaderRing {
    /// Maps `program`'s ring buffer; each [`consume`](Self::consume) takes at most `burst` records.
    ///
    /// # Errors
    /// When libbpf cannot map the ring buffer.
    pub fn new(program: &EgressProgram, burst: usize) -> Result<Self, Error> {
        let batch = Rc::new(RefCell::new(Batch { slots: vec![[0u8; RECORD_LEN]; burst.max(1)], len: 0 }));
        let sink = batch.clone();
        let mut builder = RingBufferBuilder::new();
        builder.add(&program.headers, move |data: &[u8]| {
            let mut b = sink.borrow_mut();
            let i = b.len;
            if let Some(slot) = b.slots.get_mut(i) {
                let n = data.len().min(RECORD_LEN);
                slot[..n].copy_from_slice(&data[..n]);
                slot[n..].fill(0);
                b.len += 1;
            }
            0
        })?;
        let ring = builder.build()?;
        let fd = program.headers.as_fd().try_clone_to_owned().map_err(libbpf_rs::Error::from)?;
        Ok(Self { ring, batch, fd })
    }

    /// The ring buffer map's fd: readable when records are waiting (register it with epoll).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Takes up to `burst` records and calls `f` with each; returns how many.
    pub fn consume(&mut self, mut f: impl FnMut(Record<'_>)) -> usize {
        let cap = self.batch.borrow().slots.len();
        self.batch.borrow_mut().len = 0;
        let n = self.ring.consume_raw_n(cap);
        if n <= 0 {
            return 0;
        }
        let b = self.batch.borrow();
        for slot in &b.slots[..b.len] {
            if let Some(r) = Record::parse(slot) {
                f(r);
            }
        }
        b.len
    }
}
