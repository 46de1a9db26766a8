//! xdpcopy's dataplane: the copier, from the capture interface to the output interface.
//!
//! Stateless mode (`--stateless`): each captured frame is rewritten in place and transmitted.
//!
//! ```text
//!  capture iface ─XDP (bpf)─► XSK RX ring ─► worker: parse (wire) ─► match -x, sample ─► rewrite ─► XSK TX ring ─► output iface
//!                └─ not ours: XDP_PASS        ▲                                                        │
//!                                             └──── fill ring ◄── free frames ◄── completion ring ◄────┘
//! ```
//!
//! Offline (`-i FILE`) a feed thread plays the capture interface, XDP program and kernel: it
//! copies each frame of the file into a free UMEM frame of the worker its flow hashes to and
//! posts it on that worker's (in-memory) RX ring; the rest of the path is the same.
//!
//! Session replay (the default): each captured frame is copied out of its UMEM frame (which goes
//! straight back to the fill ring) and handed to the worker's session engine, which builds the
//! frames it sends in free UMEM frames; the test server's responses come back as headers from
//! xdpcopy-intercept over the channel, through the control thread.
//!
//! ```text
//!  capture ─XDP─► XSK RX ─► worker: parse ─► match -x, sample, tuples (-n/-c/-f) ─► session::Engine ─► build ─► XSK TX ─► test server
//!                                                                      │   ▲                                            │
//!                                        CLIENT_ADD ◄─ adds queue ◄────┘   └── headers queue ◄── control thread        │ responses,
//!                                             │                                                      ▲                  │ routed to
//!                                             └──────────────► channel (TCP 36524) ◄── xdpcopy-intercept ◄── assist ◄───┘ the assist
//! ```
//!
//! [`runtime`] sets it all up, runs the threads and the stats loop, and shuts down into a
//! summary. Modules in flow order:
#![deny(unsafe_code)]

/// What both programs' command lines share: exit codes, help headings, TCPCopy hints, checks
/// before set-up, man pages and completions (`main.rs` only; the engine never sees clap).
pub mod cli;
/// Validated configuration (the CLI builds it; nothing below sees clap).
pub mod config;
/// Set-up, threads, the stats loop, shutdown.
pub mod runtime;
/// Interfaces, routes, neighbours, the tc mirror (`--mirror`), promiscuous mode.
pub mod netdev;
/// What the copier changes on the host, marked with its pid and taken back however it ends.
pub mod footprint;
/// Offline replay (`-i FILE`): the capture file straight into the workers' RX rings.
pub mod feed;
/// The offline capture source: pcap / pcapng files as Ethernet frames, paced.
pub mod offline;
/// Receive-side scaling in software: which worker the offline feed gives a flow to.
pub mod rss;
/// The XDP program and its loader: selects the frames a worker must see.
pub mod bpf;
/// AF_XDP ports (UMEM and frame tokens, rings, sockets) and every system call: the only module
/// with `unsafe`.
pub mod xsk;
/// The pinned poll-loop worker.
pub mod worker;
/// Zero-copy header views, the TCP option walker and checksums: no I/O, no allocation (the
/// `wire` crate, shared with `control` and `intercept`).
pub use wire;
/// Session sampling (`-r`, `-g`).
pub mod sample;
/// Client tuple allocation (`-n`, `-c`, `-f`).
pub mod tuples;
/// The stateless L2/L3/L4 rewrite with checksums.
pub mod rewrite;
/// The per-session TCP emulation (session replay).
pub mod session;
/// Production latency across workers (`--production-latency`).
pub mod production;
/// `--pcap-out`: the transmitted frames, written to a pcap.
pub mod pcap_out;
/// Worker counters and their publication.
pub mod stats;
