//! Validated configuration: what the runtime runs on. The CLI (`main.rs`) builds it; the runtime
//! never sees clap. Every parse error names the option and the accepted form.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use control::channel::proto::Framing;

use crate::{bpf::XdpMode, rewrite::ChecksumMode, session, wire::ethernet::MacAddr, xsk::CopyMode};

/// One `-x` entry: `[ONLINE_IP:]PORT-TARGET_IP:TARGET_PORT[@NEXT_HOP_MAC]`; IPv6 addresses in
/// brackets. The online address and the target may be of different families in session mode
/// with `-c` addresses of the target's family (family translation).
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

/// UMEM frames (4 KiB each) per worker of a live capture by default: 32 MiB. While a worker is
/// off its CPU the kernel fills the frames it left on the fill ring; with the session mode's
/// build reserve of 2048 that is 6144 frames, ~75 ms of an 80 k frames/s capture. (4096, the
/// first default, rode out ~25 ms: the 2-core lab lost frames in 8 of 9 unpaced runs.)
pub const LIVE_FRAMES: u32 = 8192;
/// Ring entries (RX, TX, fill, completion) of a live capture by default: the fill ring takes
/// every frame the UMEM can spare.
pub const LIVE_RING: u32 = 8192;
/// UMEM frames per worker offline: the feed waits for the worker, there is no stall to ride out.
pub const OFFLINE_FRAMES: u32 = 4096;
/// Ring entries offline.
pub const OFFLINE_RING: u32 = 2048;

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
        // Online and target of different families: family translation, which needs -c (the
        // command line checks it, seeing -c).
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

/// Parses `-s ADDR[:PORT],...` (the intercepts; IPv6 as `[ADDR]`, `[ADDR]:PORT` or a bare
/// address); a missing port is `default_port`.
pub fn parse_intercepts(value: &str, default_port: u16) -> Result<Vec<SocketAddr>, String> {
    const FORM: &str =
        "expected IP[:PORT][,IP[:PORT]...], e.g. 10.0.0.3, 10.0.0.3:36524, [2001:db8::3] or [2001:db8::3]:36524";
    let bad = |v: &str, why: String| format!("-s/--intercepts {v:?}: {why}; {FORM}");
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr = if let Ok(a) = part.parse::<SocketAddr>() {
            a
        } else if let Ok(ip) = part.parse::<IpAddr>() {
            SocketAddr::new(ip, default_port)
        } else if let Some(ip) = part.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            SocketAddr::new(parse_ip(ip, "address").map_err(|e| bad(part, e))?, default_port)
        } else {
            let (host, port) = split_host_port(part).ok_or_else(|| bad(part, "not an IP address".into()))?;
            let ip = parse_ip(host, "address").map_err(|e| bad(part, e))?;
            SocketAddr::new(ip, parse_port(port, "port").map_err(|e| bad(part, e))?)
        };
        out.push(addr);
    }
    if out.is_empty() || out.len() > 32 {
        return Err(format!("-s/--intercepts: give 1 to 32 intercepts, got {}; {FORM}", out.len()));
    }
    Ok(out)
}

/// Session replay settings.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The intercepts to register sessions with.
    pub intercepts: Vec<SocketAddr>,
    /// Channel connections per intercept (`-C`).
    pub conns_per_intercept: u8,
    /// Channel framing.
    pub framing: Framing,
    /// Offer channel protocol 7 in the hello (`--channel-protocol 7`, the default).
    pub offer_extension: bool,
    /// The TCP emulation's settings.
    pub session: session::Config,
    /// The capture also carries the online server's responses: measure production latency.
    pub production_latency: bool,
    /// Client tuples: replicas, substitute addresses, port slot.
    pub tuples: crate::tuples::TupleConfig,
    /// Some `-x` target is IPv6: its sessions need intercepts that speak protocol 7.
    pub ipv6_targets: bool,
}

/// What the copier does.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Rewrite and forward every matching frame.
    Stateless,
    /// Replay sessions through intercept.
    Session(Box<SessionOptions>),
}

/// Latency recording and the exports.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    /// Record latency histograms at all (off with --no-latency).
    pub latency: bool,
    /// `--latency-csv PREFIX`: the HdrHistogram files, the interval summary and log.
    pub latency_csv: Option<std::path::PathBuf>,
    /// `--metrics ADDR:PORT`: the Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
    /// `--summary-json FILE`: every counter and latency summary at exit.
    pub summary_json: Option<std::path::PathBuf>,
    /// `--pcap-out FILE`: every transmitted frame.
    pub pcap_out: Option<std::path::PathBuf>,
    /// `--pcap-out-max-mb`: stop writing the pcap at this size, bytes.
    pub pcap_out_max_bytes: Option<u64>,
    /// `--pcap-out-responses`: write the response headers the intercept returned too.
    pub pcap_out_responses: bool,
}

/// How the per-interval statistics are printed (`--stats-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatsFormat {
    /// A text line (two in session mode) on stderr.
    #[default]
    Text,
    /// One JSON object per interval on stdout: every counter by its model name, rates, p99s.
    Json,
}

/// Everything the runtime needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Offline: the capture file being replayed (the feed itself is passed to `runtime::run`).
    /// Then there is no capture interface: `input` names the file too, no XDP program is
    /// loaded, and each worker's port transmits on `output`'s queue of the same number.
    pub offline: Option<std::path::PathBuf>,
    /// Latency recording and exports.
    pub observe: Observe,
    /// Percentage of sessions replayed (`-r`, 1..=100).
    pub sample_percent: u8,
    /// Ramp the percentage up 1 %/s (`-g`).
    pub ramp: bool,
    /// Stateless or session replay.
    pub mode: Mode,
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
    /// Workers never sleep (`--busy-poll`).
    pub busy_poll: bool,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Zero-copy policy.
    pub copy_mode: CopyMode,
    /// TCP checksum policy.
    pub checksum: ChecksumMode,
    /// UMEM frames per worker ([`LIVE_FRAMES`], [`OFFLINE_FRAMES`] by default).
    pub frames: u32,
    /// Ring entries (RX, TX, fill, completion).
    pub ring_size: u32,
    /// Statistics line interval (`None` = quiet).
    pub stats_interval: Option<Duration>,
    /// Text lines or JSON objects.
    pub stats_format: StatsFormat,
    /// Stop after this long (`--duration`; `None` = until SIGINT/SIGTERM or the replay's end).
    pub duration: Option<Duration>,
}

impl Config {
    /// What is being copied, for messages: the file offline, else the capture interface.
    pub fn input_label(&self) -> String {
        match &self.offline {
            Some(p) => p.display().to_string(),
            None => self.input.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_parse_in_every_documented_form() {
        let t: Transfer = "80-10.0.0.2:8080".parse().unwrap();
        assert_eq!((t.online_ip, t.online_port, t.target_port, t.next_hop_mac), (None, 80, 8080, None));
        let t: Transfer = "10.0.0.1:80-10.0.0.2:80@02:00:00:00:00:02".parse().unwrap();
        assert_eq!(t.online_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(t.next_hop_mac.unwrap().to_string(), "02:00:00:00:00:02");
        let t: Transfer = "[2001:db8::1]:80-[2001:db8::2]:81".parse().unwrap();
        assert_eq!(t.target_ip, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(t.to_string(), "[2001:db8::1]:80-[2001:db8::2]:81");
        assert_eq!(parse_transfers("80-10.0.0.2:80, 81-10.0.0.2:81").unwrap().len(), 2);
        // Families may differ (family translation; the command line requires -c for it).
        let t: Transfer = "[2001:db8::1]:80-10.0.0.2:8080".parse().unwrap();
        assert!(t.online_ip.unwrap().is_ipv6() && t.target_ip.is_ipv4());
    }

    #[test]
    fn transfer_errors_name_the_option_and_the_form() {
        for bad in ["80", "80-10.0.0.2", "0-10.0.0.2:80", "80-10.0.0.2:99999", "80-nothere:80", "80-10.0.0.2:80@zz"] {
            let e = bad.parse::<Transfer>().unwrap_err().to_string();
            assert!(e.contains("-x/--transfer") && e.contains("TARGET_IP:TARGET_PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn cores_and_intercepts_parse() {
        assert_eq!(parse_cores("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cores("3-1").unwrap_err().contains("--cores"));
        let i = parse_intercepts("10.0.0.3,10.0.0.4:4000", 36524).unwrap();
        assert_eq!(i[0].port(), 36524);
        assert_eq!(i[1].port(), 4000);
        assert!(parse_intercepts("nope", 1).unwrap_err().contains("--intercepts"));
        let e = parse_intercepts("10.0.0.3:99999", 1).unwrap_err();
        assert!(e.contains("-s/--intercepts") && e.contains("port \"99999\" is not a port in 1..=65535"), "{e}");
        assert!(e.contains("IP[:PORT]"), "{e}");
        let v6 = parse_intercepts("[2001:db8::3],2001:db8::4,[2001:db8::5]:4000", 36524).unwrap();
        assert_eq!(
            v6.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["[2001:db8::3]:36524", "[2001:db8::4]:36524", "[2001:db8::5]:4000"]
        );
        assert!(parse_intercepts("[2001:db8::zz]", 1).unwrap_err().contains("is not an IPv4 or IPv6 address"));
        let e = parse_intercepts("10.0.0:80", 1).unwrap_err();
        assert!(e.contains("address \"10.0.0\" is not an IPv4 or IPv6 address"), "{e}");
    }
}
