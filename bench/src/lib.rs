//! xdpcopy bench: the network-namespace lab, frame tools (builder, AF_PACKET sender, pcap
//! verifier) and, later, load generators and the benchmark runner.
//!
//! The frame builder and the pcap verifier are independent of the dataplane crate on purpose:
//! what they build and check is a cross-check of what the dataplane does. Only the benchmark's
//! load tools (`afxdp`) use the dataplane's AF_XDP layer, so they measure like with like.
//!
//! No `unsafe` here: the few system calls the lab makes (`setns`, `kill`, the `AF_PACKET` sender)
//! go through the dataplane's `xsk::sys`.
#![forbid(unsafe_code)]

pub mod afxdp;
pub mod benchmark;
pub mod capture;
pub mod frames;
pub mod http;
pub mod intercept_bench;
pub mod lab;
pub mod netns;
pub mod proc;
pub mod replay_bench;
pub mod replay_check;
pub mod sender;
pub mod sessions_bench;
pub mod verify;

pub use capture::{Capture, CaptureResult};
pub use frames::{build_frame, parse_frame, FrameKind, FrameSpec, MacAddr, ParsedFrame};
pub use lab::{addr, iface, ns_name, read_lines, wait_for_line, Lab, LabSpec, Role};
pub use netns::{have_root, in_netns, root_or_skip, NS_PREFIX};
pub use proc::{bin_path, ensure_built, lab_test, start_intercept, start_session_copier, Running, Summary};
pub use sender::{packet_socket, send_frames, send_frames_in_ns, SendReport, SendSpec};
pub use verify::{FlowKey, PcapSummary};
