//! What the copier learns from, and sets up in, the kernel's network configuration: interface
//! MACs, MTUs and queue counts (sysfs), the next-hop MAC towards a target (`ip route get` +
//! the neighbour table), and the optional tc mirror of a production interface.
//!
//! These run once at start-up and exit, never per packet; shelling out to iproute2 keeps them
//! short and their behaviour identical to what an operator types.

use std::{
    fs,
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::wire::ethernet::MacAddr;

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

fn ip(args: &[&str]) -> Result<String> {
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

fn tc(args: &[&str]) -> Result<String> {
    let out = Command::new("tc").args(args).output().context("running `tc` (install iproute2)")?;
    if !out.status.success() {
        bail!("`tc {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Picks the priority of xdpcopy's mirror filter among the ingress filters already on the
/// device: ahead of all of them (a matching filter ends classification, so one placed after a
/// catch-all would never run), or, when priority 1 is taken, after them with a warning.
/// Our filter's action ends in `continue`, so the filters behind it still run.
fn pick_mirror_prio(existing: &str) -> (u32, bool) {
    let prios: Vec<u32> = existing
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "pref")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    match (prios.iter().min(), prios.iter().max()) {
        (None, _) => (1, true),
        (Some(&min), _) if min > 1 => (min - 1, true),
        (_, Some(&max)) => (max + 1, false),
        _ => unreachable!("min and max exist together"),
    }
}

/// A tc mirror of a production interface's ingress (and, for production latency, egress) into a
/// veth pair the copier captures from.
/// The production traffic itself is untouched: the kernel keeps delivering it. Dropping the
/// value removes the filter (and the clsact qdisc if we added it) and the veth pair.
pub struct Mirror {
    prod: String,
    host: String,
    /// The interface to capture from.
    pub capture: String,
    added_qdisc: bool,
    /// (direction, priority) of each filter we added.
    filters: Vec<(&'static str, String)>,
}

impl Mirror {
    /// Mirrors `prod`'s ingress into a new veth pair with `queues` queues.
    ///
    /// # Errors
    /// When `prod` is missing or a tc/ip command fails (partial setup is undone).
    pub fn setup(prod: &str, queues: u32, egress_too: bool) -> Result<Self> {
        sys_attr(prod, "ifindex")?;
        let tag = std::process::id() % 100_000;
        let host = format!("xdpcm{tag}");
        let capture = format!("xdpcm{tag}c");
        let q = queues.max(1).to_string();
        ip(&[
            "link",
            "add",
            &host,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &capture,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        let mut m = Self { prod: prod.to_owned(), host, capture, added_qdisc: false, filters: Vec::new() };
        ip(&["link", "set", &m.host, "up"])?;
        ip(&["link", "set", &m.capture, "up"])?;
        let qdiscs = tc(&["qdisc", "show", "dev", prod])?;
        if !qdiscs.contains("clsact") {
            tc(&["qdisc", "add", "dev", prod, "clsact"])?;
            m.added_qdisc = true;
        }
        let dirs: &[&'static str] = if egress_too { &["ingress", "egress"] } else { &["ingress"] };
        for dir in dirs {
            let (prio, first) = pick_mirror_prio(&tc(&["filter", "show", "dev", prod, dir])?);
            if !first {
                eprintln!(
                    "xdpcopy: warning: {prod} already has an {dir} filter at priority 1; the mirror goes after the \
                     existing filters (prio {prio}) and sees only what they let through"
                );
            }
            let prio = prio.to_string();
            #[rustfmt::skip]
            tc(&[
                "filter", "add", "dev", prod, dir, "protocol", "all", "prio", &prio,
                "u32", "match", "u32", "0", "0",
                "action", "mirred", "egress", "mirror", "dev", &m.host, "continue",
            ])?;
            m.filters.push((dir, prio));
        }
        Ok(m)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        for (dir, prio) in &self.filters {
            let _ = tc(&["filter", "del", "dev", &self.prod, dir, "prio", prio]);
        }
        if self.added_qdisc {
            let _ = tc(&["qdisc", "del", "dev", &self.prod, "clsact"]);
        }
        let _ = ip(&["link", "del", &self.host]);
    }
}

#[cfg(test)]
mod tests {
    use super::pick_mirror_prio;

    #[test]
    fn mirror_goes_ahead_of_existing_filters() {
        assert_eq!(pick_mirror_prio(""), (1, true));
        let one =
            "filter protocol all pref 10 u32 chain 0\nfilter protocol all pref 10 u32 chain 0 fh 800: ht divisor 1";
        assert_eq!(pick_mirror_prio(one), (9, true));
        let taken = "filter protocol all pref 1 u32 chain 0\nfilter protocol ip pref 5 u32 chain 0";
        assert_eq!(pick_mirror_prio(taken), (6, false));
    }
}
