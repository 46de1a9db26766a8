//! The network-namespace lab: five namespaces (client, online, copier, test, assist) joined by
//! veth pairs, with nginx on the online and test servers and a tc mirror of the online server's
//! ingress towards the copier.
//!
//! ```text
//!  client c0 10.201.1.1 ── o0 10.201.1.2 online (nginx :80)
//!                         mir0 ── cin  copier (AF_XDP capture; mirror of o0 ingress [+egress])
//!                                 cout 10.201.2.1 ── t0 10.201.2.2 test (nginx :8080)
//!                                                    t1 10.201.3.1 ── a0 10.201.3.2 assist
//!                                 cch 10.201.4.1 ───────────────────── a1 10.201.4.2 assist
//! ```
//!
//! A **traditional** lab ([`LabSpec::traditional`]) is the same network without an assist
//! server in the return path: `xdpcopy-intercept --local` runs on the test server and drops its
//! answers at `t1`'s egress. The assist namespace becomes the *outside*: where real clients would
//! be (the test server still routes the client network there, so a sniffer on `a0` sees any
//! answer that escapes; the client network is a blackhole route there), an allowlisted host
//! (`a0` 10.201.3.2, `--pass-to`; a1's 10.201.4.2 is not allowlisted), a host the test server
//! itself connects to, and a router between the copier (`cch`) and the test server (`t1`), so
//! the channel crosses the egress the intercept watches.
//!
//! A **dual-stack** lab ([`LabSpec::dual_stack`]) has IPv6 addresses beside the IPv4 ones
//! (`fd00:201:N::H/64` where the IPv4 address is `10.201.N.H/24`), nginx (and redis) listening
//! on both, the test server routing the IPv6 client network to the assist server too, and two
//! client pools for `-c` routed there as well: [`addr::POOL4_NET`] and [`addr::POOL6_NET`]. IPv6
//! is enabled only on the interfaces with addresses (no link-local address on the mirror, no
//! router solicitations, no duplicate address detection): the captures see no IPv6 chatter but
//! neighbour discovery. Other labs have no IPv6 at all.
//!
//! Everything lives inside namespaces named `xdpc-TAG-ROLE`; nothing is created in the root
//! namespace. Dropping a [`Lab`] kills what it spawned and deletes its namespaces.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::capture::Capture;
use crate::frames::MacAddr;
use crate::netns::{
    in_netns, ip, kill_ns_processes, link_mac, list_namespaces, ns_command, ns_exists, run_cmd, signal, NS_PREFIX,
};

/// Addresses and ports of the lab.
pub mod addr {
    use std::net::Ipv4Addr;

    /// client `c0`
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 1);
    /// online `o0` (nginx on [`ONLINE_PORT`])
    pub const ONLINE: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);
    /// The client network (the test server routes it to the assist server).
    pub const CLIENT_NET: &str = "10.201.1.0/24";
    /// copier `cout`
    pub const COPIER_OUT: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 1);
    /// test `t0` (nginx on [`TEST_PORT`])
    pub const TEST: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 2);
    /// test `t1`
    pub const TEST_TO_ASSIST: Ipv4Addr = Ipv4Addr::new(10, 201, 3, 1);
    /// assist `a0`
    pub const ASSIST: Ipv4Addr = Ipv4Addr::new(10, 201, 3, 2);
    /// assist `a1` (header-return channel side)
    pub const ASSIST_CHANNEL: Ipv4Addr = Ipv4Addr::new(10, 201, 4, 2);
    /// copier `cch` (header-return channel side)
    pub const COPIER_CHANNEL: Ipv4Addr = Ipv4Addr::new(10, 201, 4, 1);
    pub const ONLINE_PORT: u16 = 80;
    pub const TEST_PORT: u16 = 8080;
    /// TCPCopy's header-return channel port.
    pub const CHANNEL_PORT: u16 = 36524;
    /// redis-server on the online and test servers ([`Lab::start_redis`](super::Lab::start_redis)).
    pub const REDIS_PORT: u16 = 6379;
    /// Traditional lab: a1's address, outside the allowlist.
    pub const OUTSIDE_OTHER: Ipv4Addr = ASSIST_CHANNEL;

    use std::net::Ipv6Addr;

    /// Dual-stack lab: client `c0`.
    pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 1);
    /// Dual-stack lab: online `o0`.
    pub const ONLINE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 2);
    /// Dual-stack lab: the IPv6 client network (routed to the assist server).
    pub const CLIENT_NET6: &str = "fd00:201:1::/64";
    /// Dual-stack lab: copier `cout`.
    pub const COPIER_OUT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 2, 0, 0, 0, 0, 1);
    /// Dual-stack lab: test `t0`.
    pub const TEST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 2, 0, 0, 0, 0, 2);
    /// Dual-stack lab: test `t1`.
    pub const TEST_TO_ASSIST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 3, 0, 0, 0, 0, 1);
    /// Dual-stack lab: assist `a0`.
    pub const ASSIST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 3, 0, 0, 0, 0, 2);
    /// Dual-stack lab: assist `a1` (channel side).
    pub const ASSIST_CHANNEL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 4, 0, 0, 0, 0, 2);
    /// Dual-stack lab: copier `cch` (channel side).
    pub const COPIER_CHANNEL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 4, 0, 0, 0, 0, 1);
    /// Dual-stack lab: an IPv4 `-c` pool outside the client network, routed to the assist server.
    pub const POOL4_NET: &str = "10.201.5.0/24";
    /// Dual-stack lab: an IPv6 `-c` pool, routed to the assist server.
    pub const POOL6_NET: &str = "fd00:201:5::/64";
}

/// Interface names.
pub mod iface {
    pub const CLIENT: &str = "c0";
    pub const ONLINE: &str = "o0";
    pub const ONLINE_MIRROR: &str = "mir0";
    pub const COPIER_IN: &str = "cin";
    pub const COPIER_OUT: &str = "cout";
    pub const COPIER_CHANNEL: &str = "cch";
    pub const TEST_IN: &str = "t0";
    pub const TEST_TO_ASSIST: &str = "t1";
    pub const ASSIST_IN: &str = "a0";
    pub const ASSIST_CHANNEL: &str = "a1";
}

/// A namespace of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Client,
    Online,
    Copier,
    Test,
    Assist,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Client, Role::Online, Role::Copier, Role::Test, Role::Assist];

    /// The suffix of the namespace name: `client`, `online`, `copier`, `test`, `assist`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Online => "online",
            Role::Copier => "copier",
            Role::Test => "test",
            Role::Assist => "assist",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One veth pair: (role A, interface A, address A, role B, interface B, address B).
type LinkDef = (Role, &'static str, Option<&'static str>, Role, &'static str, Option<&'static str>);

const LINKS: [LinkDef; 5] = [
    (Role::Client, "c0", Some("10.201.1.1/24"), Role::Online, "o0", Some("10.201.1.2/24")),
    (Role::Online, "mir0", None, Role::Copier, "cin", None),
    (Role::Copier, "cout", Some("10.201.2.1/24"), Role::Test, "t0", Some("10.201.2.2/24")),
    (Role::Test, "t1", Some("10.201.3.1/24"), Role::Assist, "a0", Some("10.201.3.2/24")),
    (Role::Assist, "a1", Some("10.201.4.2/24"), Role::Copier, "cch", Some("10.201.4.1/24")),
];

/// IPv6 addresses of a dual-stack lab, beside the IPv4 ones of [`LINKS`].
const ADDRS6: [(Role, &str, &str); 8] = [
    (Role::Client, "c0", "fd00:201:1::1/64"),
    (Role::Online, "o0", "fd00:201:1::2/64"),
    (Role::Copier, "cout", "fd00:201:2::1/64"),
    (Role::Test, "t0", "fd00:201:2::2/64"),
    (Role::Test, "t1", "fd00:201:3::1/64"),
    (Role::Assist, "a0", "fd00:201:3::2/64"),
    (Role::Assist, "a1", "fd00:201:4::2/64"),
    (Role::Copier, "cch", "fd00:201:4::1/64"),
];

/// Interfaces whose namespace's own TCP/IP stack sends: transmit checksum offload is turned off
/// on them so that frames (and their mirrored copies) carry complete checksums.
const TX_CSUM_OFF: [(Role, &str); 8] = [
    (Role::Client, "c0"),
    (Role::Online, "o0"),
    (Role::Copier, "cout"),
    (Role::Copier, "cch"),
    (Role::Test, "t0"),
    (Role::Test, "t1"),
    (Role::Assist, "a0"),
    (Role::Assist, "a1"),
];

/// What lab to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabSpec {
    /// Namespaces are `xdpc-TAG-ROLE`; `[a-z0-9_-]`, at most 24 characters.
    pub tag: String,
    /// Number of TX and RX queues of every veth.
    pub queues: u32,
    /// Start nginx on the online (:80) and test (:8080) servers.
    pub nginx: bool,
    /// Also mirror o0's egress (the online server's responses) to mir0.
    pub mirror_egress: bool,
    /// The traditional architecture: no assist server in the return path (see the module docs);
    /// the intercept runs on the test server (`bench::start_intercept` does it right).
    pub traditional: bool,
    /// IPv6 beside IPv4 (see the module docs).
    pub dual_stack: bool,
}

impl LabSpec {
    pub fn new(tag: impl Into<String>) -> Self {
        LabSpec { tag: tag.into(), ..Default::default() }
    }
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            tag: "demo".into(),
            queues: 2,
            nginx: true,
            mirror_egress: false,
            traditional: false,
            dual_stack: false,
        }
    }
}

/// Name of namespace `role` of lab `tag`.
pub fn ns_name(tag: &str, role: Role) -> String {
    format!("{NS_PREFIX}{tag}-{}", role.name())
}

fn validate_tag(tag: &str) -> Result<()> {
    ensure!(
        !tag.is_empty()
            && tag.len() <= 24
            && !tag.starts_with('-')
            && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'),
        "bad lab tag {tag:?}: use 1-24 characters of [a-z0-9_-], not starting with '-'"
    );
    Ok(())
}

#[derive(Debug)]
struct Spawned {
    what: String,
    child: Child,
}

/// A running lab. Dropping it tears it down (see [`Lab::shutdown`]) unless
/// [`Lab::leave_running`] was called.
#[derive(Debug)]
pub struct Lab {
    spec: LabSpec,
    out_dir: PathBuf,
    children: Mutex<Vec<Spawned>>,
    spawned_total: AtomicUsize,
    torn_down: bool,
}

impl Lab {
    /// Builds the lab, after removing leftovers of a previous lab with the same tag. On error
    /// everything created so far is removed again.
    pub fn up(spec: LabSpec) -> Result<Lab> {
        validate_tag(&spec.tag)?;
        ensure!((1..=64).contains(&spec.queues), "queues must be in 1..=64, not {}", spec.queues);
        Lab::down(&spec.tag)?;
        let out_dir = PathBuf::from(format!("/tmp/{NS_PREFIX}{}", spec.tag));
        if out_dir.exists() {
            std::fs::remove_dir_all(&out_dir).with_context(|| format!("remove old {}", out_dir.display()))?;
        }
        std::fs::create_dir_all(out_dir.join("logs")).with_context(|| format!("create {}", out_dir.display()))?;
        let lab = Lab {
            spec,
            out_dir,
            children: Mutex::new(Vec::new()),
            spawned_total: AtomicUsize::new(0),
            torn_down: false,
        };
        // From here on, an early return drops `lab`, which tears down what exists.
        lab.build_network().with_context(|| format!("building lab {}", lab.spec.tag))?;
        if lab.spec.nginx {
            lab.start_nginx(Role::Online)?;
            lab.start_nginx(Role::Test)?;
        }
        Ok(lab)
    }

    /// Removes lab `tag`: kills every process inside its namespaces and deletes them.
    /// Idempotent; touches nothing but `xdpc-TAG-{client,online,copier,test,assist}`.
    pub fn down(tag: &str) -> Result<()> {
        validate_tag(tag)?;
        let mut errors = Vec::new();
        let present: Vec<String> = Role::ALL.iter().map(|&r| ns_name(tag, r)).filter(|ns| ns_exists(ns)).collect();
        for ns in &present {
            kill_ns_processes(ns, Duration::from_secs(3));
        }
        for ns in &present {
            if let Err(e) = ip(&["netns", "del", ns]) {
                if ns_exists(ns) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if !errors.is_empty() {
            bail!("lab {tag} teardown: {}", errors.join("; "));
        }
        Ok(())
    }

    /// Tags of the labs present on the machine, with the namespaces each has.
    pub fn list() -> Result<BTreeMap<String, Vec<Role>>> {
        let mut out: BTreeMap<String, Vec<Role>> = BTreeMap::new();
        for ns in list_namespaces()? {
            let Some(rest) = ns.strip_prefix(NS_PREFIX) else {
                continue;
            };
            for role in Role::ALL {
                if let Some(tag) = rest.strip_suffix(&format!("-{}", role.name())) {
                    out.entry(tag.to_owned()).or_default().push(role);
                }
            }
        }
        for roles in out.values_mut() {
            roles.sort();
        }
        Ok(out)
    }

    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    pub fn tag(&self) -> &str {
        &self.spec.tag
    }

    /// Namespace name of `role`: `xdpc-TAG-ROLE`.
    pub fn ns(&self, role: Role) -> String {
        ns_name(&self.spec.tag, role)
    }

    /// `ip netns exec NS program` (add arguments, then run it).
    pub fn cmd(&self, role: Role, program: &str) -> Command {
        ns_command(&self.ns(role), program)
    }

    /// Runs `args` (program first) inside `role`'s namespace; returns stdout, or an error
    /// carrying stderr when it exits non-zero.
    pub fn run(&self, role: Role, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("run: empty command")?;
        run_cmd(self.cmd(role, program).args(rest))
    }

    /// Spawns `args` (program first) inside `role`'s namespace, stdout and stderr to a log file
    /// in `out_dir()/logs`. The child belongs to the lab: it is stopped at teardown.
    pub fn spawn(&self, role: Role, args: &[&str]) -> Result<u32> {
        let (program, rest) = args.split_first().context("spawn: empty command")?;
        let n = self.spawned_total.fetch_add(1, Ordering::Relaxed) + 1;
        let base =
            Path::new(program).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "proc".into());
        let log_path = self.out_dir.join("logs").join(format!("{n:02}-{}-{base}.log", role.name()));
        let log = File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
        let mut cmd = self.cmd(role, program);
        cmd.args(rest).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let pid = child.id();
        self.children
            .lock()
            .expect("lock")
            .push(Spawned { what: format!("{} in {}", args.join(" "), self.ns(role)), child });
        Ok(pid)
    }

    /// Whether a process spawned by [`Lab::spawn`] is still running (false once it exited or
    /// when `pid` is not one of the lab's).
    pub fn is_running(&self, pid: u32) -> bool {
        let mut children = self.children.lock().expect("lock");
        children.iter_mut().find(|s| s.child.id() == pid).is_some_and(|s| matches!(s.child.try_wait(), Ok(None)))
    }

    /// Stops one spawned process (SIGTERM, SIGKILL after `grace`) and reaps it.
    pub fn stop(&self, pid: u32, grace: Duration) -> Result<()> {
        let spawned = {
            let mut children = self.children.lock().expect("lock");
            let idx = children
                .iter()
                .position(|s| s.child.id() == pid)
                .with_context(|| format!("pid {pid} is not a process of lab {}", self.tag()))?;
            children.remove(idx)
        };
        stop_children(vec![spawned], grace);
        Ok(())
    }

    /// MAC address of `iface` in `role`'s namespace.
    pub fn mac(&self, role: Role, iface: &str) -> Result<MacAddr> {
        link_mac(&self.ns(role), iface)
    }

    /// SNMP counters inside `role`'s namespace, named like nstat does: `/proc/net/snmp` and
    /// `/proc/net/netstat` as `<Group><Field>` (`TcpInSegs`, `TcpInCsumErrors`, `IpInReceives`,
    /// `TcpExtListenDrops`, ...) plus `/proc/net/snmp6` (`Ip6InReceives`, ...).
    pub fn nstat(&self, role: Role) -> Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        parse_snmp_pairs(&self.run(role, &["cat", "/proc/net/snmp", "/proc/net/netstat"])?, &mut out);
        if let Ok(text) = self.run(role, &["cat", "/proc/net/snmp6"]) {
            for line in text.lines() {
                let mut w = line.split_whitespace();
                if let (Some(k), Some(v)) = (w.next(), w.next()) {
                    if let Ok(v) = v.parse() {
                        out.insert(k.to_owned(), v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Value of one sysctl (e.g. `net.ipv4.ip_forward`) inside `role`'s namespace.
    pub fn sysctl(&self, role: Role, key: &str) -> Result<String> {
        Ok(self.run(role, &["sysctl", "-n", key])?.trim().to_owned())
    }

    pub fn online_access_log(&self) -> PathBuf {
        self.out_dir.join("online-access.log")
    }

    pub fn test_access_log(&self) -> PathBuf {
        self.out_dir.join("test-access.log")
    }

    /// Per-lab directory for logs, configs and captures: `/tmp/xdpc-TAG/`.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Starts tcpdump on `iface` in `role`'s namespace writing `out_dir()/file_name`, and
    /// returns once it is capturing. Stop it with [`Capture::stop`].
    pub fn capture(&self, role: Role, iface: &str, file_name: &str, filter: &[&str]) -> Result<Capture> {
        Capture::start(&self.ns(role), iface, &self.out_dir.join(file_name), filter)
    }

    /// Runs `f` on a thread inside `role`'s namespace (sockets it opens live there).
    pub fn in_ns<T: Send>(&self, role: Role, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        in_netns(&self.ns(role), f)
    }

    /// Waits until a TCP connection from inside `role`'s namespace to `addr` succeeds. Sends
    /// no request (so nginx logs nothing). If `watch_pid` (a lab child) exits meanwhile, fails
    /// at once.
    pub fn wait_tcp(&self, role: Role, addr: SocketAddrV4, timeout: Duration, watch_pid: Option<u32>) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.in_ns(role, || {
                Ok(TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_millis(200)).is_ok())
            })?;
            if ok {
                return Ok(());
            }
            if let Some(pid) = watch_pid {
                ensure!(self.is_running(pid), "process {pid} exited while waiting for {addr}");
            }
            ensure!(Instant::now() < deadline, "nothing accepted on {addr} from {} within {timeout:?}", self.ns(role));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Tears the lab down now, reporting errors (dropping does the same, printing them).
    pub fn shutdown(mut self) -> Result<()> {
        self.teardown()
    }

    /// Leaves the lab (namespaces and spawned processes) running after this value is gone;
    /// remove it later with [`Lab::down`].
    pub fn leave_running(mut self) {
        self.torn_down = true;
        // Dropping the `Child` handles neither kills nor waits for the processes.
    }

    fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let children = std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        stop_children(children, Duration::from_secs(3));
        Lab::down(&self.spec.tag)
    }

    fn build_network(&self) -> Result<()> {
        let q = self.spec.queues.to_string();
        for role in Role::ALL {
            let ns = self.ns(role);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // No IPv6 in the lab: keeps router solicitations and MLD out of the captures.
            self.run(role, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            self.run(role, &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        }
        for (ra, ia, aa, rb, ib, ab) in LINKS {
            let (na, nb) = (self.ns(ra), self.ns(rb));
            ip(&[
                "-n",
                &na,
                "link",
                "add",
                ia,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                ib,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                &nb,
            ])?;
            for (ns, ifn, a) in [(&na, ia, aa), (&nb, ib, ab)] {
                if let Some(a) = a {
                    ip(&["-n", ns, "addr", "add", a, "dev", ifn])?;
                }
            }
        }
        for (role, ifn) in TX_CSUM_OFF {
            self.run(role, &["ethtool", "-K", ifn, "tx", "off"])?;
        }
        if self.spec.dual_stack {
            self.add_ipv6()?;
        }
        // No GRO/GSO on the online server's interface: the mirror then carries wire-sized
        // frames, never super-packets larger than an AF_XDP frame.
        self.run(Role::Online, &["ethtool", "-K", "o0", "gro", "off", "gso", "off"])?;
        // Spread the mirror over the capture's queues by flow, as a NIC's RSS would. A veth
        // hands its peer the skb with its TX queue still in `queue_mapping`; at o0's ingress
        // that reads as a recorded RX queue, and `mirred`'s transmit on mir0 then picks queue
        // (c0's TX queue − 1) — queue 0 for every flow, so one worker got everything and the
        // others idled (perf stat --per-thread). With one TX queue on c0 nothing is recorded
        // and mir0 picks its queue by the flow's hash.
        if self.spec.queues > 1 {
            self.run(Role::Client, &["ethtool", "-L", iface::CLIENT, "tx", "1"])?;
        }
        // The mirror's copies of o0's *egress* are taken at tc egress, before the stack's
        // software checksum completion: they carry partial TCP checksums. Transmitting them
        // through mir0 with checksum offload off makes mir0's xmit path complete them.
        self.run(Role::Online, &["ethtool", "-K", "mir0", "tx", "off"])?;
        for (ra, ia, _, rb, ib, _) in LINKS {
            ip(&["-n", &self.ns(ra), "link", "set", ia, "up"])?;
            ip(&["-n", &self.ns(rb), "link", "set", ib, "up"])?;
        }

        // Online: copy o0's ingress (and optionally egress) to mir0.
        self.run(Role::Online, &["tc", "qdisc", "add", "dev", "o0", "clsact"])?;
        let mut dirs = vec!["ingress"];
        if self.spec.mirror_egress {
            dirs.push("egress");
        }
        for dir in dirs {
            self.run(
                Role::Online,
                &[
                    "tc", "filter", "add", "dev", "o0", dir, "protocol", "all", "prio", "10", "u32", "match", "u32",
                    "0", "0", "action", "mirred", "egress", "mirror", "dev", "mir0",
                ],
            )?;
        }

        // Test server: responses to clients go to the assist server; it receives
        // client-sourced packets on t0 and answers via t1, so no reverse-path filtering.
        ip(&["-n", &self.ns(Role::Test), "route", "add", addr::CLIENT_NET, "via", "10.201.3.2"])?;
        for key in ["all", "default", "t0", "t1"] {
            self.run(Role::Test, &["sysctl", "-qw", &format!("net.ipv4.conf.{key}.rp_filter=0")])?;
        }
        // Assist and copier forward nothing (the assist server is the black hole).
        for role in [Role::Assist, Role::Copier] {
            self.run(role, &["sysctl", "-qw", "net.ipv4.ip_forward=0"])?;
        }
        if self.spec.traditional {
            self.build_outside()?;
        }
        if self.spec.dual_stack {
            // The IPv6 client network and both -c pools go to the assist server as well.
            let test = self.ns(Role::Test);
            ip(&["-n", &test, "-6", "route", "add", addr::CLIENT_NET6, "via", "fd00:201:3::2"])?;
            ip(&["-n", &test, "-6", "route", "add", addr::POOL6_NET, "via", "fd00:201:3::2"])?;
            ip(&["-n", &test, "route", "add", addr::POOL4_NET, "via", "10.201.3.2"])?;
        }
        Ok(())
    }

    /// Dual-stack: IPv6 on the interfaces that have IPv4 addresses, and only there (the
    /// namespaces' defaults keep it off everywhere else: the mirror and the capture side stay
    /// silent); no router solicitations, no duplicate address detection (addresses usable at
    /// once).
    fn add_ipv6(&self) -> Result<()> {
        for (role, ifn, a) in ADDRS6 {
            for (key, value) in
                [("accept_ra", "0"), ("router_solicitations", "0"), ("accept_dad", "0"), ("dad_transmits", "0")]
            {
                self.run(role, &["sysctl", "-qw", &format!("net.ipv6.conf.{ifn}.{key}={value}")])?;
            }
            self.run(role, &["sysctl", "-qw", &format!("net.ipv6.conf.{ifn}.disable_ipv6=0")])?;
            ip(&["-n", &self.ns(role), "-6", "addr", "add", a, "dev", ifn, "nodad"])?;
        }
        for role in Role::ALL {
            self.run(role, &["sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0"])?;
        }
        // The assist server and the copier forward nothing over IPv6 either.
        for role in [Role::Assist, Role::Copier] {
            self.run(role, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"])?;
        }
        Ok(())
    }

    /// Removes (`false`) or restores (`true`) the lab's mirror of o0's ingress (the benchmark's
    /// baseline runs the online server with no mirror at all).
    pub fn set_mirror(&self, on: bool) -> Result<()> {
        if on {
            self.run(
                Role::Online,
                &[
                    "tc", "filter", "add", "dev", "o0", "ingress", "protocol", "all", "prio", "10", "u32", "match",
                    "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "mir0",
                ],
            )?;
        } else {
            self.run(Role::Online, &["tc", "filter", "del", "dev", "o0", "ingress", "prio", "10"])?;
        }
        Ok(())
    }

    /// Frames the mirror veth dropped before the copier's XDP program saw them (`mir0`'s
    /// `tx_dropped`: its peer's ring was full): capture loss that no xdpcopy counter sees.
    pub fn mirror_dropped(&self) -> Result<u64> {
        let path = format!("/sys/class/net/{}/statistics/tx_dropped", iface::ONLINE_MIRROR);
        let out = self.run(Role::Online, &["cat", &path])?;
        out.trim().parse().with_context(|| format!("{path}: {out:?}"))
    }

    /// Sends the mirror of o0's ingress through one more hop before the copier sees it: a veth
    /// pair `lsy0` → `lsy1` inside the online namespace, whose `lsy1` ingress copies on to
    /// `mir0`. Returns `lsy1`: an XDP program there (`xdpcopy-lab impair`) drops frames the
    /// online server got and the copier never sees — lost capture, as a full fill ring or a
    /// NIC's drop loses it.
    pub fn lossy_mirror(&self) -> Result<&'static str> {
        let online = self.ns(Role::Online);
        ip(&["-n", &online, "link", "add", "lsy0", "type", "veth", "peer", "name", "lsy1"])?;
        for ifn in ["lsy0", "lsy1"] {
            self.run(Role::Online, &["ethtool", "-K", ifn, "gro", "off", "gso", "off", "tso", "off"])?;
            ip(&["-n", &online, "link", "set", ifn, "up"])?;
        }
        self.run(Role::Online, &["tc", "qdisc", "add", "dev", "lsy1", "clsact"])?;
        self.run(
            Role::Online,
            &[
                "tc", "filter", "add", "dev", "lsy1", "ingress", "protocol", "all", "prio", "10", "u32", "match",
                "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "mir0",
            ],
        )?;
        self.run(Role::Online, &["tc", "filter", "del", "dev", "o0", "ingress", "prio", "10"])?;
        self.run(
            Role::Online,
            &[
                "tc", "filter", "add", "dev", "o0", "ingress", "protocol", "all", "prio", "10", "u32", "match", "u32",
                "0", "0", "action", "mirred", "egress", "mirror", "dev", "lsy0",
            ],
        )?;
        Ok("lsy1")
    }

    /// Traditional lab: the assist namespace becomes the outside (module docs). It routes
    /// between the copier's channel side and the test server, drops what is sent to the client
    /// network (after the sniffer saw it), and reaches the test nginx as an ordinary client.
    fn build_outside(&self) -> Result<()> {
        let (assist, test, copier) = (self.ns(Role::Assist), self.ns(Role::Test), self.ns(Role::Copier));
        self.run(Role::Assist, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for key in ["all", "default", "a0", "a1"] {
            self.run(Role::Assist, &["sysctl", "-qw", &format!("net.ipv4.conf.{key}.rp_filter=0")])?;
        }
        ip(&["-n", &assist, "route", "add", "blackhole", addr::CLIENT_NET])?;
        ip(&["-n", &assist, "route", "add", "10.201.2.0/24", "via", "10.201.3.1"])?;
        ip(&["-n", &test, "route", "add", "10.201.4.0/24", "via", "10.201.3.2"])?;
        ip(&["-n", &copier, "route", "add", "10.201.3.0/24", "via", "10.201.4.2"])?;
        if self.spec.dual_stack {
            self.run(Role::Assist, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
            ip(&["-n", &assist, "-6", "route", "add", "blackhole", addr::CLIENT_NET6])?;
            ip(&["-n", &assist, "-6", "route", "add", "blackhole", addr::POOL6_NET])?;
            ip(&["-n", &assist, "route", "add", "blackhole", addr::POOL4_NET])?;
            ip(&["-n", &assist, "-6", "route", "add", "fd00:201:2::/64", "via", "fd00:201:3::1"])?;
            ip(&["-n", &test, "-6", "route", "add", "fd00:201:4::/64", "via", "fd00:201:3::2"])?;
            ip(&["-n", &copier, "-6", "route", "add", "fd00:201:3::/64", "via", "fd00:201:4::2"])?;
        }
        Ok(())
    }

    /// Where the copiers reach the intercept over IPv6 in a dual-stack lab (see
    /// [`Lab::intercept_addr`]).
    pub fn intercept_addr6(&self) -> std::net::Ipv6Addr {
        if self.spec.traditional {
            addr::TEST_TO_ASSIST6
        } else {
            addr::ASSIST_CHANNEL6
        }
    }

    /// Where the copiers reach the intercept: the assist server's channel side, or in a
    /// traditional lab the test server's `t1` (through the outside router, across `t1`'s egress).
    pub fn intercept_addr(&self) -> std::net::Ipv4Addr {
        if self.spec.traditional {
            addr::TEST_TO_ASSIST
        } else {
            addr::ASSIST_CHANNEL
        }
    }

    /// Starts `redis-server` on the online or test server (port [`addr::REDIS_PORT`], no
    /// persistence), stopped at teardown; returns its pid once it accepts connections.
    pub fn start_redis(&self, role: Role) -> Result<u32> {
        let ip = match role {
            Role::Online => addr::ONLINE,
            Role::Test => addr::TEST,
            _ => bail!("redis runs on the online and test servers only"),
        };
        let dir = self.out_dir.join(format!("redis-{role}"));
        std::fs::create_dir_all(&dir)?;
        let (ip_s, port_s, dir_s) = (ip.to_string(), addr::REDIS_PORT.to_string(), dir.to_string_lossy().into_owned());
        // Dual-stack: on the IPv6 address too (`--bind` takes several).
        let ip6_s = match role {
            Role::Online => addr::ONLINE6.to_string(),
            _ => addr::TEST6.to_string(),
        };
        let mut bind = vec![ip_s.as_str()];
        if self.spec.dual_stack {
            bind.push(&ip6_s);
        }
        let bind = bind.join(" ");
        let pid = self.spawn(
            role,
            &[
                "redis-server",
                "--bind",
                &bind,
                "--port",
                &port_s,
                "--dir",
                &dir_s,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ],
        )?;
        self.wait_tcp(role, SocketAddrV4::new(ip, addr::REDIS_PORT), Duration::from_secs(10), Some(pid))
            .context("redis-server did not come up (is it installed? scripts/setup.sh installs it)")?;
        Ok(pid)
    }

    fn start_nginx(&self, role: Role) -> Result<u32> {
        let (name, listen) = match role {
            Role::Online => ("online", SocketAddrV4::new(addr::ONLINE, addr::ONLINE_PORT)),
            Role::Test => ("test", SocketAddrV4::new(addr::TEST, addr::TEST_PORT)),
            _ => bail!("nginx runs on the online and test servers only"),
        };
        let dir = self.out_dir.join(format!("nginx-{name}"));
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("big"), big_body())?;
        std::fs::write(www.join("huge"), huge_body())?;
        let conf = dir.join("nginx.conf");
        let access_log = self.out_dir.join(format!("{name}-access.log"));
        let listen6 = self.spec.dual_stack.then(|| match role {
            Role::Online => SocketAddr::new(IpAddr::V6(addr::ONLINE6), addr::ONLINE_PORT),
            _ => SocketAddr::new(IpAddr::V6(addr::TEST6), addr::TEST_PORT),
        });
        std::fs::write(&conf, nginx_conf(&dir, listen, listen6, &access_log, role == Role::Test))?;
        let errlog = dir.join("error.log");
        let (conf_s, err_s) = (conf.to_string_lossy(), errlog.to_string_lossy());
        let pid = self.spawn(role, &["nginx", "-c", &conf_s, "-e", &err_s])?;
        self.wait_tcp(role, listen, Duration::from_secs(10), Some(pid)).with_context(|| {
            format!(
                "nginx ({name}) did not come up; error log: {}",
                std::fs::read_to_string(&errlog).unwrap_or_default().trim()
            )
        })?;
        Ok(pid)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("xdpcopy lab {}: teardown failed: {e:#}", self.spec.tag);
        }
    }
}

/// SIGTERM to all, then wait up to `grace` for each, SIGKILL what is left; always reaps.
fn stop_children(mut children: Vec<Spawned>, grace: Duration) {
    for s in &mut children {
        if matches!(s.child.try_wait(), Ok(None)) {
            let _ = signal(s.child.id(), libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    for s in &mut children {
        loop {
            match s.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("xdpcopy lab: killing {} (no exit on SIGTERM)", s.what);
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

/// Parses `/proc/net/snmp`-style text: pairs of `Group: names...` / `Group: values...` lines.
fn parse_snmp_pairs(text: &str, out: &mut HashMap<String, u64>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i + 1 < lines.len() {
        match (lines[i].split_once(':'), lines[i + 1].split_once(':')) {
            (Some((g1, names)), Some((g2, values))) if g1 == g2 => {
                for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                    if let Ok(v) = v.parse::<u64>() {
                        out.insert(format!("{g1}{n}"), v);
                    }
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
}

/// Body of `/big`: 64 KiB of printable text.
fn big_body() -> Vec<u8> {
    (0..64 * 1024).map(|i| if i % 64 == 63 { b'\n' } else { b'a' + (i % 26) as u8 }).collect()
}

/// Body of `/huge`: 1 MiB of printable text (a response many GSO super-segments long).
pub fn huge_body() -> Vec<u8> {
    (0..1 << 20).map(|i| if i % 100 == 99 { b'\n' } else { b'A' + (i % 26) as u8 }).collect()
}

/// The lab's nginx configuration. On the test server (`slow`), `/slow/...` answers after 20 ms
/// (the echo module's `echo_sleep`): the latency tests' stand-in for a slower build — this lab's
/// kernel has no netem to delay the link. Elsewhere `/slow/...` answers at once like every path.
/// The listen queue takes a burst of thousands of new connections (an offline `--topspeed`
/// replay's SYNs; nginx's default backlog of 511 drops the rest, which then wait for a 1 s SYN
/// retransmission); `net.core.somaxconn` is 4096 in a fresh namespace.
fn nginx_conf(dir: &Path, listen: SocketAddrV4, listen6: Option<SocketAddr>, access_log: &Path, slow: bool) -> String {
    let listen6 = listen6.map(|a| format!("listen {a} backlog=4096;")).unwrap_or_default();
    let d = dir.display();
    let (load, slow_location) = if slow {
        (
            "load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;",
            "location /slow/ { echo_sleep 0.020; echo ok; }",
        )
    } else {
        ("", "")
    };
    format!(
        r#"# generated by the xdpcopy lab
{load}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 4096; }}
http {{
    default_type text/plain;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    log_format xdpc '$request $status $remote_addr:$remote_port $body_bytes_sent';
    access_log {log} xdpc;
    server {{
        listen {listen} backlog=4096;
        {listen6}
        location = /big {{ root {d}/www; default_type application/octet-stream; }}
        location = /huge {{ root {d}/www; default_type application/octet-stream; }}
        location / {{ return 200 "ok\n"; }}
        {slow_location}
    }}
}}
"#,
        log = access_log.display()
    )
}

/// Reads an access log into lines (empty if it does not exist yet).
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|t| t.lines().map(str::to_owned).collect()).unwrap_or_default()
}

/// Waits until a line of the file at `path` contains `needle`; returns that line.
pub fn wait_for_line(path: &Path, needle: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = read_lines(path).into_iter().find(|l| l.contains(needle)) {
            return Ok(l);
        }
        ensure!(Instant::now() < deadline, "no line containing {needle:?} in {} within {timeout:?}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_parsing() {
        let text = "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 17\nTcp: RtoMin MaxConn InCsumErrors\nTcp: 200 -1 3\nTcpExt: ListenDrops\nTcpExt: 4\n";
        let mut m = HashMap::new();
        parse_snmp_pairs(text, &mut m);
        assert_eq!(m["IpInReceives"], 17);
        assert_eq!(m["TcpInCsumErrors"], 3);
        assert_eq!(m["TcpExtListenDrops"], 4);
        assert!(!m.contains_key("TcpMaxConn"));
    }

    #[test]
    fn tags_and_names() {
        assert!(validate_tag("demo").is_ok());
        assert!(validate_tag("t-1_x").is_ok());
        assert!(validate_tag("").is_err());
        assert!(validate_tag("Demo").is_err());
        assert!(validate_tag("a/b").is_err());
        assert!(validate_tag("-x").is_err());
        assert_eq!(ns_name("demo", Role::Copier), "xdpc-demo-copier");
    }

    #[test]
    fn nginx_config_mentions_everything() {
        let c = nginx_conf(
            Path::new("/tmp/x"),
            SocketAddrV4::new(addr::TEST, addr::TEST_PORT),
            Some("[fd00:201:2::2]:8080".parse().unwrap()),
            Path::new("/tmp/x/a.log"),
            true,
        );
        assert!(c.contains("listen 10.201.2.2:8080 backlog=4096;"));
        assert!(c.contains("listen [fd00:201:2::2]:8080 backlog=4096;"));
        assert!(c.contains("access_log /tmp/x/a.log xdpc;"));
        assert!(c.contains("$request $status $remote_addr:$remote_port $body_bytes_sent"));
        assert_eq!(big_body().len(), 65536);
    }
}
