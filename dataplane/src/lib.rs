//! xdpcopy's dataplane.
//!
//! ```text
//!  capture iface ──XDP (bpf)──► XSK RX ring ─► worker: parse (wire) ─► rewrite ─► XSK TX ring ─► output iface
//!                  └─ not ours: XDP_PASS        ▲                                   │
//!                                               └──── fill ring ◄── completion ring ◄┘   (frames move as tokens)
//! ```
//!
//! Modules in flow order:
#![deny(unsafe_code)]

/// The XDP program and its loader: selects the frames a worker must see.
pub mod bpf;
/// Validated configuration.
pub mod config;
/// Start-up, workers, the stats loop.
pub mod engine;
/// Offline replay: a capture file fed into a veth the copier captures from.
pub mod feed;
/// Interfaces, routes, neighbours, the tc mirror.
pub mod netdev;
/// The offline capture source: pcap / pcapng files as Ethernet frames, paced (`--offline`).
pub mod offline;
/// --pcap-out: the transmitted frames, written to a pcap.
pub mod pcap_out;
/// Production latency across workers.
pub mod production;
/// The stateless L2/L3/L4 rewrite with checksums.
pub mod rewrite;
/// Session sampling (-r, -g).
pub mod sample;
/// The per-session TCP emulation (session replay).
pub mod session;
/// Worker counters and their publication.
pub mod stats;
/// Client tuple allocation (-n, -c, -f).
pub mod tuples;
/// Zero-copy header views and checksums: no I/O, no allocation.
pub mod wire;
/// The pinned poll-loop worker.
pub mod worker;
/// AF_XDP ports (UMEM and frame tokens, rings, sockets) and every system call: the only module
/// with `unsafe`.
pub mod xsk;
