//! Validated configuration: what the engine runs on. The CLI (`main.rs`) builds it; the engine
//! never sees clap. Every parse error names the option and the accepted form.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use crate::{bpf::XdpMode, rewrite::ChecksumMode, wire::ethernet::MacAddr, xsk::CopyMode};

/// One `-x` entry: `[ONLINE_IP:]PORT-TARGET_IP:TARGET_PORT[@NEXT_HOP_MAC]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Only frames to this address are copied (any address when `None`).
    pub online_ip: Option<IpAddr>,
    /// Frames to this TCP port are copied.
    pub online_port: u16,
    /// The test server's address.
    pub target_ip: IpAddr,
    /// The test server's port.
    pub target_port: u16,
    /// The next hop towards the target; resolved from the neighbour table when `None`.
    pub next_hop_mac: Option<MacAddr>,
}

/// The accepted form of `-x`, quoted in every error.
pub const TRANSFER_FORM: &str = "[ONLINE_IP:]PORT-TARGET_IP:TARGET_PORT[@NEXT_HOP_MAC], e.g. 80-10.0.0.2:8080 or \
     10.0.0.1:80-10.0.0.2:80@02:00:00:00:00:02 (IPv6 in brackets: [2001:db8::1]:80-[2001:db8::2]:80)";

/// A `-x` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferError {
    value: String,
    why: String,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-x/--transfer {:?}: {}; expected {}", self.value, self.why, TRANSFER_FORM)
    }
}

impl std::error::Error for TransferError {}

/// Splits `HOST:PORT` where HOST may be `[v6]`; returns (host, port).
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = tail.strip_prefix(':')?;
        Some((host, port))
    } else {
        s.rsplit_once(':')
    }
}

fn parse_port(s: &str, what: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{what} {s:?} is not a port in 1..=65535")),
        Ok(p) => Ok(p),
    }
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>().map_err(|_| format!("{what} {s:?} is not an IPv4 or IPv6 address"))
}

impl FromStr for Transfer {
    type Err = TransferError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |why: String| TransferError { value: value.to_owned(), why };
        let (spec, mac) = match value.split_once('@') {
            Some((spec, mac)) => (spec, Some(mac.parse::<MacAddr>().map_err(|e| err(format!("next-hop MAC: {e}")))?)),
            None => (value, None),
        };
        // The online part never contains '-', and an IPv6 address never does either.
        let (online, target) =
            spec.split_once('-').ok_or_else(|| err("missing '-' between online and target".into()))?;
        let (online_ip, online_port) = match split_host_port(online) {
            Some((host, port)) => {
                (Some(parse_ip(host, "online IP").map_err(err)?), parse_port(port, "online port").map_err(err)?)
            }
            None => (None, parse_port(online, "online port").map_err(err)?),
        };
        let (host, port) = split_host_port(target).ok_or_else(|| err("target must be TARGET_IP:TARGET_PORT".into()))?;
        let target_ip = parse_ip(host, "target IP").map_err(err)?;
        let target_port = parse_port(port, "target port").map_err(err)?;
        if let Some(ip) = online_ip {
            if ip.is_ipv4() != target_ip.is_ipv4() {
                return Err(err("online and target addresses must be of the same family".into()));
            }
        }
        Ok(Transfer { online_ip, online_port, target_ip, target_port, next_hop_mac: mac })
    }
}

impl fmt::Display for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = |ip: IpAddr| match ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        if let Some(ip) = self.online_ip {
            write!(f, "{}:", host(ip))?;
        }
        write!(f, "{}-{}:{}", self.online_port, host(self.target_ip), self.target_port)?;
        if let Some(mac) = self.next_hop_mac {
            write!(f, "@{mac}")?;
        }
        Ok(())
    }
}

/// Parses a comma-separated list of transfers (`-x` may also be repeated).
pub fn parse_transfers(value: &str) -> Result<Vec<Transfer>, TransferError> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect()
}

/// Parses a core list such as `0,1` or `0-3`.
pub fn parse_cores(value: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("--cores {value:?}: expected a list of CPU numbers such as 0,1 or 0-3");
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Everything the stateless engine needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to copy where.
    pub transfers: Vec<Transfer>,
    /// Capture interface.
    pub input: String,
    /// Output interface (towards the test server).
    pub output: String,
    /// RX queues to capture (0..queues); one worker per queue.
    pub queues: u32,
    /// CPUs to pin workers to (worker i on cores[i % len]); `None` = round robin over all.
    pub cores: Option<Vec<usize>>,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Zero-copy policy.
    pub copy_mode: CopyMode,
    /// TCP checksum policy.
    pub checksum: ChecksumMode,
    /// UMEM frames per worker.
    pub frames: u32,
    /// Ring entries (RX, TX, fill, completion).
    pub ring_size: u32,
    /// Statistics line interval (`None` = quiet).
    pub stats_interval: Option<Duration>,
}
