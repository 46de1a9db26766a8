//! `xdpcopy-lab`: bring the network-namespace lab up and down, send test frames, verify pcaps.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bench::lab::{addr, iface};
use bench::netns::link_mac;
use bench::{send_frames_in_ns, FrameKind, FrameSpec, Lab, LabSpec, MacAddr, PcapSummary, Role, SendSpec};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xdpcopy-lab", version, about = "xdpcopy network-namespace lab")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab and leave it running (namespaces xdpc-TAG-*).
    Up {
        #[arg(long, default_value = "demo")]
        tag: String,
        /// TX/RX queues per veth.
        #[arg(long, default_value_t = 2)]
        queues: u32,
        /// Do not start nginx on the online and test servers.
        #[arg(long)]
        no_nginx: bool,
        /// Also mirror the online server's egress (responses) to the copier.
        #[arg(long)]
        mirror_egress: bool,
    },
    /// Remove the lab: kill what runs in its namespaces, delete them. Idempotent.
    Down {
        #[arg(long, default_value = "demo")]
        tag: String,
    },
    /// List the labs present (xdpc-* namespaces) and the processes in them.
    Status,
    /// Send test frames out of an interface inside a lab namespace (AF_PACKET).
    Send {
        /// Lab namespace to send from (must start with xdpc-), e.g. xdpc-demo-client.
        #[arg(long)]
        ns: String,
        /// Interface in that namespace, e.g. c0.
        #[arg(long)]
        iface: String,
        /// Destination MAC, e.g. the online server's o0.
        #[arg(long)]
        dst_mac: MacAddr,
        /// Source MAC (default: the interface's own).
        #[arg(long)]
        src_mac: Option<MacAddr>,
        #[arg(long, default_value_t = addr::CLIENT)]
        src_ip: Ipv4Addr,
        #[arg(long, default_value_t = addr::ONLINE)]
        dst_ip: Ipv4Addr,
        #[arg(long, default_value_t = 40000)]
        src_port: u16,
        #[arg(long, default_value_t = 80)]
        dst_port: u16,
        /// Source ports src_port..src_port+flows are used round-robin.
        #[arg(long, default_value_t = 1)]
        flows: u16,
        /// TCP flags byte (decimal or 0x..), default ACK|PSH.
        #[arg(long, default_value = "0x18", value_parser = parse_u8)]
        flags: u8,
        /// Frame sizes (bytes, without FCS), cycled.
        #[arg(long, value_delimiter = ',', default_value = "64,512,1500")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Frames per second (0 = as fast as possible).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Sequence number carried by the first frame.
        #[arg(long, default_value_t = 0)]
        first_seq: u32,
        /// good | bad-ihl | bad-doff-small | bad-doff-beyond | truncated-tcp |
        /// total-len-too-big | vlan[:VID] | ipv6
        #[arg(long, default_value = "good")]
        kind: FrameKind,
    },
    /// Summarise a pcap written by tcpdump -w.
    Verify {
        pcap: PathBuf,
        /// Fail unless sequence numbers FIRST..FIRST+N were each seen exactly once.
        #[arg(long)]
        expect_seqs: Option<u32>,
        #[arg(long, default_value_t = 0)]
        first_seq: u32,
        /// Fail on any bad IPv4/TCP checksum or damaged payload.
        #[arg(long)]
        strict_checksums: bool,
    },
    // `demo` and `bench` subcommands go here (added by the lead).
}

fn parse_u8(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpcopy-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Up { tag, queues, no_nginx, mirror_egress } => {
            up(LabSpec { tag, queues, nginx: !no_nginx, mirror_egress })
        }
        Cmd::Down { tag } => {
            Lab::down(&tag)?;
            println!("lab {tag}: down");
            Ok(())
        }
        Cmd::Status => status(),
        Cmd::Send {
            ns,
            iface,
            dst_mac,
            src_mac,
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            flows,
            flags,
            sizes,
            count,
            rate,
            first_seq,
            kind,
        } => {
            anyhow::ensure!(
                ns.starts_with(bench::NS_PREFIX),
                "refusing to send from {ns:?}: not a lab namespace (xdpc-*)"
            );
            let src_mac = match src_mac {
                Some(m) => m,
                None => link_mac(&ns, &iface)?,
            };
            let spec = SendSpec {
                iface,
                frame: FrameSpec {
                    src_mac,
                    dst_mac,
                    src_ip,
                    dst_ip,
                    src_port,
                    dst_port,
                    flags,
                    ..FrameSpec::default()
                },
                kind,
                sizes,
                count,
                rate_pps: rate,
                first_seq,
                flows,
            };
            let r = send_frames_in_ns(&ns, &spec)?;
            println!(
                "sent {} frames ({} bytes) in {:.3} s = {:.0} pps, {} retries (ENOBUFS)",
                r.sent,
                r.bytes,
                r.elapsed.as_secs_f64(),
                r.pps(),
                r.retries
            );
            Ok(())
        }
        Cmd::Verify { pcap, expect_seqs, first_seq, strict_checksums } => {
            let s = PcapSummary::from_file(&pcap)?;
            print!("{s}");
            if let Some(n) = expect_seqs {
                s.check_seqs_exactly(first_seq..first_seq.saturating_add(n))?;
                println!("sequence check: ok ({n} frames, each once)");
            }
            if strict_checksums {
                s.check_checksums()?;
                println!("checksum check: ok");
            }
            Ok(())
        }
    }
}

fn up(spec: LabSpec) -> Result<()> {
    let lab = Lab::up(spec).context("lab up")?;
    let ns = |r| lab.ns(r);
    println!("lab {} is up (queues {}):", lab.tag(), lab.spec().queues);
    println!("  {:<22} {} {}/24", ns(Role::Client), iface::CLIENT, addr::CLIENT);
    println!(
        "  {:<22} {} {}/24 (nginx :{}), {} -> copier {} (tc mirror of o0 ingress{})",
        ns(Role::Online),
        iface::ONLINE,
        addr::ONLINE,
        addr::ONLINE_PORT,
        iface::ONLINE_MIRROR,
        iface::COPIER_IN,
        if lab.spec().mirror_egress { " + egress" } else { "" }
    );
    println!(
        "  {:<22} {} (capture), {} {}/24, {} {}/24 (channel :{})",
        ns(Role::Copier),
        iface::COPIER_IN,
        iface::COPIER_OUT,
        addr::COPIER_OUT,
        iface::COPIER_CHANNEL,
        addr::COPIER_CHANNEL,
        addr::CHANNEL_PORT
    );
    println!(
        "  {:<22} {} {}/24 (nginx :{}), {} {}/24, route {} via {}",
        ns(Role::Test),
        iface::TEST_IN,
        addr::TEST,
        addr::TEST_PORT,
        iface::TEST_TO_ASSIST,
        addr::TEST_TO_ASSIST,
        addr::CLIENT_NET,
        addr::ASSIST
    );
    println!(
        "  {:<22} {} {}/24 (ip_forward=0), {} {}/24",
        ns(Role::Assist),
        iface::ASSIST_IN,
        addr::ASSIST,
        iface::ASSIST_CHANNEL,
        addr::ASSIST_CHANNEL
    );
    for (r, i) in [(Role::Online, iface::ONLINE), (Role::Test, iface::TEST_IN), (Role::Copier, iface::COPIER_OUT)] {
        println!("  mac {}/{}: {}", r, i, lab.mac(r, i)?);
    }
    if lab.spec().nginx {
        println!("  online access log: {}", lab.online_access_log().display());
        println!("  test access log:   {}", lab.test_access_log().display());
    }
    println!("  out dir: {}", lab.out_dir().display());
    println!(
        "try: ip netns exec {} curl -s http://{}/",
        ns(Role::Client),
        SocketAddrV4::new(addr::ONLINE, addr::ONLINE_PORT)
    );
    println!("remove with: xdpcopy-lab down --tag {}", lab.tag());
    lab.leave_running();
    Ok(())
}

fn status() -> Result<()> {
    let labs = Lab::list()?;
    if labs.is_empty() {
        println!("no labs (no xdpc-* namespaces)");
    }
    for (tag, roles) in labs {
        println!("lab {tag}:");
        for role in roles {
            let ns = bench::ns_name(&tag, role);
            let pids = bench::netns::ns_pids(&ns);
            let names: Vec<String> = pids
                .iter()
                .map(|p| {
                    let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                    format!("{}({p})", comm.trim())
                })
                .collect();
            println!("  {ns:<24} {}", names.join(" "));
        }
    }
    Ok(())
}
