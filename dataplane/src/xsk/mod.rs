//! The AF_XDP layer: UMEM and frame tokens, the four rings, sockets, and [`Port`], the one type
//! the copier, the intercept and the benchmark open their queues with. The only module of the
//! crate with `unsafe`, and every system call goes through [`sys`].
//!
//! - `ring`: producer/consumer ring ends over any memory (the kernel's mapping, or anonymous
//!   memory in tests), one acquire and one release per batch.
//! - `umem`: the UMEM and [`Frame`], the owned token of one chunk; bytes are reached only
//!   through it.
//! - `socket`: creating and binding sockets (private: the port takes their rings).
//! - `port`: [`Port`], the typed rings and the free list the poll loops use.
//! - `inject`: an RX side in memory and its [`Injector`], which plays the kernel's RX role from
//!   another thread (the offline feed; [`Port::open_fed`]).
//! - [`sys`]: the system calls, the loop calls' test seam, the lab's few calls.
//! - `testing` (tests, or the `testing` feature): ring pairs and a port over in-memory rings,
//!   driven by a test kernel.
//!
//! Hand-written on `libc` + `memmap2` because no AF_XDP crate links beside libbpf-rs 0.27 (only
//! one `libbpf-sys` may be in the graph).
#![allow(unsafe_code)]

mod inject;
pub mod port;
pub mod ring;
mod socket;
pub mod sys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod umem;

pub use inject::Injector;
pub use port::{Port, PortConfig, TxSide};
pub use ring::{Consumer, Producer};
pub use socket::{CopyMode, Error, Statistics, StatsHandle};
pub use sys::{Doorbell, Kick, SyscallError};
pub use umem::{BadDescriptor, Frame, Received, Umem};

/// A descriptor on the RX and TX rings: UMEM address, length, options.
pub type Desc = libc::xdp_desc;
