//! What the copier learns from, and sets up in, the kernel's network configuration: interface
//! MACs, MTUs, queue counts and addresses, forwarding (sysfs, procfs, `ip`), the next-hop MAC
//! towards a target (`ip route get` + the neighbour table), the optional tc mirror of a
//! production interface, promiscuous mode on a capture interface. What it changes is marked
//! and taken back as [`crate::footprint`] describes.
//!
//! These run once at start-up and exit, never per packet; shelling out to iproute2 keeps them
//! short and their behaviour identical to what an operator types.

use std::{
    fs,
    net::{IpAddr, SocketAddr, UdpSocket},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    footprint::{self, Change, Changes, Owner, Veth, VethMark},
    wire::ethernet::MacAddr,
    xsk::sys::{self, PacketSocket},
};

fn sys_attr(iface: &str, attr: &str) -> Result<String> {
    let path = format!("/sys/class/net/{iface}/{attr}");
    let s = fs::read_to_string(&path)
        .with_context(|| format!("interface {iface} not found ({path}); list interfaces with `ip link`"))?;
    Ok(s.trim().to_owned())
}

/// Returns the interface's MAC address.
pub fn mac(iface: &str) -> Result<MacAddr> {
    let s = sys_attr(iface, "address")?;
    s.parse().map_err(|e| anyhow::anyhow!("interface {iface} has no usable MAC ({s}): {e}"))
}

/// Returns the interface's MTU.
pub fn mtu(iface: &str) -> Result<u32> {
    sys_attr(iface, "mtu")?.parse().with_context(|| format!("reading the MTU of {iface}"))
}

/// Returns the number of RX (`rx`) or TX (`tx`) queues of the interface.
pub fn queues(iface: &str, kind: &str) -> Result<u32> {
    let dir = format!("/sys/class/net/{iface}/queues");
    let n = fs::read_dir(&dir)
        .with_context(|| format!("interface {iface} not found ({dir}); list interfaces with `ip link`"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{kind}-")))
        .count();
    Ok(n as u32)
}

/// Runs `ip ARGS...` and returns its output.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("running `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Returns the next hop (gateway or the target itself) and the interface the kernel would use.
pub fn route_to(target: IpAddr) -> Result<(IpAddr, String)> {
    let out = ip(&["route", "get", &target.to_string()])?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |key: &str| words.windows(2).find(|w| w[0] == key).map(|w| w[1]);
    let dev = after("dev").with_context(|| format!("no route to {target}: {out}"))?.to_owned();
    let via = match after("via") {
        Some(v) => v.parse().with_context(|| format!("unexpected gateway {v:?} in `ip route get {target}`"))?,
        None => target,
    };
    Ok((via, dev))
}

fn neigh_lookup(hop: IpAddr, dev: &str) -> Option<MacAddr> {
    let out = ip(&["neigh", "show", "to", &hop.to_string(), "dev", dev]).ok()?;
    let words: Vec<&str> = out.split_whitespace().collect();
    if words.iter().any(|w| *w == "FAILED" || *w == "INCOMPLETE") {
        return None;
    }
    words.windows(2).find(|w| w[0] == "lladdr").and_then(|w| w[1].parse().ok())
}

/// Resolves the MAC of the next hop towards `target` out of `output`.
///
/// When the neighbour table has no entry, one empty UDP datagram is sent to the target's
/// discard port (9) so the kernel resolves the next hop; only the configured target is ever
/// addressed.
pub fn resolve_next_hop(target: IpAddr, output: &str) -> Result<MacAddr> {
    let (hop, dev) = route_to(target)?;
    if dev != output {
        bail!(
            "the kernel routes {target} via {dev}, not the output interface {output}; give the next hop \
             explicitly (-x ...-{target}:PORT@NEXT_HOP_MAC) or fix the route"
        );
    }
    if let Some(mac) = neigh_lookup(hop, &dev) {
        return Ok(mac);
    }
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let sock = UdpSocket::bind(bind).context("opening a UDP socket to trigger neighbour resolution")?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let _ = sock.send_to(&[], SocketAddr::new(target, 9));
        thread::sleep(Duration::from_millis(100));
        if let Some(mac) = neigh_lookup(hop, &dev) {
            return Ok(mac);
        }
    }
    bail!("could not resolve the MAC of next hop {hop} on {dev} (no ARP/ND answer in 3 s); give it with -x ...@NEXT_HOP_MAC")
}

/// Runs `tc ARGS...` and returns its output.
pub(crate) fn tc(args: &[&str]) -> Result<String> {
    let out = Command::new("tc").args(args).output().context("running `tc` (install iproute2)")?;
    if !out.status.success() {
        bail!("`tc {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `lines` as one `tc -batch -` (one process for many filters); stops at the first error.
fn tc_batch(lines: &[String]) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("tc")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `tc` (install iproute2)")?;
    let script = lines.join("\n") + "\n";
    child.stdin.take().expect("piped").write_all(script.as_bytes()).context("writing to `tc -batch`")?;
    let out = child.wait_with_output().context("waiting for `tc -batch`")?;
    if !out.status.success() {
        bail!("`tc -batch` failed: {}\n{script}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The priorities in `tc filter show` output.
fn prios(listing: &str) -> Vec<u32> {
    listing
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "pref")
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

/// Picks the priority of xdpcopy's mirror filters in one direction from the filters already
/// there (`this`) and in the other direction (`other`): ahead of all of this direction's (a
/// matching filter ends classification, so one placed after a catch-all would never run), or,
/// when nothing is free ahead, after them (returns `false`: warn). The priority is used by no
/// filter in either direction: u32 filters at one priority share hash tables across directions
/// (a listing shows both), so a priority of our own is what lets a later sweep delete exactly
/// ours. Our actions end in `continue`, so the filters behind still run.
fn pick_mirror_prio(this: &str, other: &str) -> (u32, bool) {
    let here = prios(this);
    let taken: Vec<u32> = here.iter().copied().chain(prios(other)).collect();
    let free = |p: &u32| !taken.contains(p);
    let ahead = match here.iter().min() {
        Some(&min) => (1..min).rev().find(free),
        None => (1..).find(free),
    };
    match ahead {
        Some(p) => (p, true),
        None => (taken.iter().max().map_or(1, |m| m + 1), false),
    }
}

/// Which TCP port a mirror filter matches: the destination (ingress: requests to the online
/// server) or the source (egress: its responses, `--production-latency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSide {
    /// TCP destination port.
    Dst,
    /// TCP source port.
    Src,
}

/// The `tc -batch` lines of one mirror direction: u32 filters at `prio` that copy IPv4 and IPv6
/// TCP segments to (or from) `ports` into `veth`, each action marked with `cookie`.
///
/// This kernel has u32 but no flower: u32 matches fixed offsets from the network header, so
/// IPv4 takes one filter per header length (IHL 5..=15, the port at 4·IHL (+2 for the
/// destination)) and only first fragments (offset 0: later ones carry no TCP header); IPv6 one
/// filter with TCP as the first next header (the port at 40 (+2)), so segments behind extension
/// headers are not mirrored. A u32 hash table with `link` would need one filter per port,
/// but deleting the priority leaves such a table behind in the qdisc; flat filters go with
/// their priority. `protocol all` with the IP version in the first nibble puts both families
/// at one priority. Actions end in `continue`: the device's own filters behind still run.
pub fn mirror_filters(
    dev: &str,
    dir: &str,
    prio: u32,
    ports: &[u16],
    side: PortSide,
    veth: &str,
    cookie: &str,
) -> Vec<String> {
    let at = |base: u32| match side {
        PortSide::Dst => base + 2,
        PortSide::Src => base,
    };
    let head = format!("filter add dev {dev} {dir} prio {prio} protocol all u32");
    let action = format!("action mirred egress mirror dev {veth} continue cookie {cookie}");
    let mut lines = Vec::new();
    for &port in ports {
        for ihl in 5..=15u32 {
            lines.push(format!(
                "{head} match u8 0x4{ihl:x} 0xff at 0 match u8 6 0xff at 9 match u16 0 0x1fff at 6 \
                 match u16 {port} 0xffff at {} {action}",
                at(4 * ihl)
            ));
        }
        lines.push(format!(
            "{head} match u8 0x60 0xf0 at 0 match u8 6 0xff at 6 match u16 {port} 0xffff at {} {action}",
            at(40)
        ));
    }
    lines
}

/// Deletes the clsact qdisc of `dev` when no filter is left on it (ingress or egress); returns
/// whether it did.
pub(crate) fn remove_clsact_if_empty(dev: &str) -> bool {
    let empty = |dir| tc(&["filter", "show", "dev", dev, dir]).is_ok_and(|t| t.trim().is_empty());
    empty("ingress") && empty("egress") && tc(&["qdisc", "del", "dev", dev, "clsact"]).is_ok()
}

/// A tc mirror of a production interface's TCP to the `-x` ports (ingress; for production
/// latency also its TCP from those ports, egress) into a veth pair the copier captures from.
/// The production traffic itself is untouched: the kernel keeps delivering it. Every filter
/// and the veth carry the copier's mark ([`crate::footprint`]); dropping the value removes the
/// filters, the clsact qdisc if the copier added it (and nothing else uses it), and the veth.
pub struct Mirror {
    /// The interface to capture from.
    pub capture: String,
    /// Filters and qdisc, undone newest first, before the veth they point at.
    _changes: Changes,
    _veth: Veth,
}

impl Mirror {
    /// Mirrors TCP to `ports` on `prod`'s ingress (and from them on its egress when
    /// `egress_too`) into a new veth pair with `queues` queues.
    ///
    /// # Errors
    /// When `prod` is missing, a live copier already mirrors it, or a tc/ip command fails
    /// (what was set up is undone).
    pub fn setup(prod: &str, queues: u32, ports: &[u16], egress_too: bool) -> Result<Self> {
        sys_attr(prod, "ifindex")?;
        if let Some(h) = footprint::live_holder(prod)? {
            bail!(
                "--mirror {prod}: xdpcopy pid {pid} already mirrors {prod} ({}); two mirrors would copy every \
                 packet twice: stop that copier first (kill -INT {pid})",
                h.what,
                pid = h.owner.pid
            );
        }
        let owner = Owner::current();
        let add_qdisc = !tc(&["qdisc", "show", "dev", prod])?.contains("clsact");
        let mark = VethMark { owner, role: "mirror".into(), of: Some(prod.to_owned()), qdisc_added: add_qdisc };
        let veth = Veth::create("xdpcm", queues, &mark)?;
        let mut changes = Changes::default();
        if add_qdisc {
            let dev = prod.to_owned();
            changes.push(Change::new(format!("the clsact qdisc on {prod}"), move || {
                remove_clsact_if_empty(&dev);
            }));
            tc(&["qdisc", "add", "dev", prod, "clsact"])?;
        }
        let dirs: &[(&str, PortSide)] = if egress_too {
            &[("ingress", PortSide::Dst), ("egress", PortSide::Src)]
        } else {
            &[("ingress", PortSide::Dst)]
        };
        for &(dir, side) in dirs {
            let other = if dir == "ingress" { "egress" } else { "ingress" };
            let (prio, first) = pick_mirror_prio(
                &tc(&["filter", "show", "dev", prod, dir])?,
                &tc(&["filter", "show", "dev", prod, other])?,
            );
            if !first {
                eprintln!(
                    "xdpcopy: warning: {prod} already has an {dir} filter at priority 1; the mirror goes after the \
                     existing filters (prio {prio}) and sees only what they let through"
                );
            }
            let (dev, d, p) = (prod.to_owned(), dir.to_owned(), prio.to_string());
            changes.push(Change::new(format!("the tc {dir} filter prio {prio} on {prod}"), move || {
                let _ = tc(&["filter", "del", "dev", &dev, &d, "prio", &p]);
            }));
            tc_batch(&mirror_filters(prod, dir, prio, ports, side, &veth.host, &owner.cookie()))?;
        }
        Ok(Mirror { capture: veth.capture.clone(), _changes: changes, _veth: veth })
    }
}

/// The addresses of `iface` a production service could use: every IPv4 and IPv6 address but
/// link-local and host-scoped ones (`ip -o addr show dev IFACE`).
///
/// # Errors
/// When `ip` fails (no such interface).
pub fn addresses(iface: &str) -> Result<Vec<String>> {
    Ok(parse_addresses(&ip(&["-o", "addr", "show", "dev", iface])?))
}

fn parse_addresses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let addr = words.windows(2).find(|w| w[0] == "inet" || w[0] == "inet6").map(|w| w[1]);
        let scope = words.windows(2).find(|w| w[0] == "scope").map(|w| w[1]);
        if let Some(a) = addr {
            if !matches!(scope, Some("link") | Some("host")) {
                out.push(a.to_owned());
            }
        }
    }
    out
}

/// The forwarding sysctls that are on for `iface` (`net.ipv4.conf.IFACE.forwarding`,
/// `net.ipv6.conf.IFACE.forwarding`): with one on, the kernel routes what it receives there
/// on to its destination.
pub fn forwarding(iface: &str) -> Vec<String> {
    ["ipv4", "ipv6"]
        .into_iter()
        .filter(|fam| {
            fs::read_to_string(format!("/proc/sys/net/{fam}/conf/{iface}/forwarding")).is_ok_and(|v| v.trim() != "0")
        })
        .map(|fam| format!("net.{fam}.conf.{iface}.forwarding"))
        .collect()
}

/// Promiscuous mode on an interface while the value lives: a packet socket's membership
/// (`PACKET_MR_PROMISC`, as tcpdump does), counted by the kernel and dropped when the socket
/// closes. So the interface is restored however the copier ends, SIGKILL included, and an
/// interface that was promiscuous before stays so.
pub struct Promisc {
    _sock: PacketSocket,
}

impl Promisc {
    /// Turns promiscuous mode on for `iface` until the value is dropped.
    ///
    /// # Errors
    /// When the interface is missing or the socket option fails.
    pub fn on(iface: &str) -> Result<Self> {
        let ifindex = sys::if_nametoindex(iface)
            .with_context(|| format!("interface {iface} not found; list interfaces with `ip link`"))?;
        let sock = PacketSocket::promiscuous(ifindex).with_context(|| format!("promiscuous mode on {iface}"))?;
        Ok(Promisc { _sock: sock })
    }
}

#[cfg(test)]
mod tests {
    use super::{mirror_filters, parse_addresses, pick_mirror_prio, PortSide};

    #[test]
    fn mirror_goes_ahead_of_existing_filters_at_a_priority_of_its_own() {
        assert_eq!(pick_mirror_prio("", ""), (1, true));
        let ten =
            "filter protocol all pref 10 u32 chain 0\nfilter protocol all pref 10 u32 chain 0 fh 800: ht divisor 1";
        assert_eq!(pick_mirror_prio(ten, ""), (9, true));
        let taken = "filter protocol all pref 1 u32 chain 0\nfilter protocol ip pref 5 u32 chain 0";
        assert_eq!(pick_mirror_prio(taken, ""), (6, false));
        // The other direction's priorities are avoided (its listing shows ours at a shared one).
        let nine = "filter protocol all pref 9 u32 chain 0";
        assert_eq!(pick_mirror_prio(ten, nine), (8, true));
        assert_eq!(pick_mirror_prio("", "filter protocol all pref 1 u32 chain 0\nfilter pref 2 u32"), (3, true));
        assert_eq!(pick_mirror_prio(taken, "filter protocol all pref 7 u32 chain 0"), (8, false));
    }

    #[test]
    fn mirror_filters_match_tcp_ports_at_every_ipv4_header_length_and_ipv6() {
        let lines = mirror_filters("eth0", "ingress", 9, &[80, 443], PortSide::Dst, "xdpcm7", "78647063");
        assert_eq!(lines.len(), 2 * (11 + 1), "per port: IHL 5..=15 and IPv6");
        assert_eq!(
            lines[0],
            "filter add dev eth0 ingress prio 9 protocol all u32 match u8 0x45 0xff at 0 match u8 6 0xff at 9 \
             match u16 0 0x1fff at 6 match u16 80 0xffff at 22 action mirred egress mirror dev xdpcm7 continue \
             cookie 78647063"
        );
        assert!(lines[10].contains("match u8 0x4f 0xff at 0") && lines[10].contains("match u16 80 0xffff at 62"));
        assert_eq!(
            lines[11],
            "filter add dev eth0 ingress prio 9 protocol all u32 match u8 0x60 0xf0 at 0 match u8 6 0xff at 6 \
             match u16 80 0xffff at 42 action mirred egress mirror dev xdpcm7 continue cookie 78647063"
        );
        assert!(lines[12].contains("match u16 443 0xffff at 22"));
        // Egress (production latency): the online server's responses, by source port.
        let out = mirror_filters("eth0", "egress", 3, &[80], PortSide::Src, "xdpcm7", "78647063");
        assert!(out[0].contains("egress prio 3") && out[0].contains("match u16 80 0xffff at 20 "));
        assert!(out[11].contains("match u16 80 0xffff at 40 "));
        assert!(mirror_filters("eth0", "ingress", 1, &[], PortSide::Dst, "v", "c").is_empty());
    }

    #[test]
    fn addresses_leave_out_link_and_host_scope() {
        let text = "2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever\n\
                    2: eth0    inet6 2001:db8::5/64 scope global \\       valid_lft forever\n\
                    2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever\n\
                    1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n";
        assert_eq!(parse_addresses(text), ["10.0.0.5/24", "2001:db8::5/64"]);
        assert!(parse_addresses("").is_empty());
        assert!(parse_addresses("3: span0    inet6 fe80::2/64 scope link \\ valid_lft forever").is_empty());
    }
}
