//! The AF_XDP layer: UMEM, the four rings, sockets. The only module of the crate with `unsafe`,
//! and every system call goes through [`sys`].
//!
//! Hand-written on `libc` + `memmap2` because no AF_XDP crate links beside libbpf-rs 0.27 (only
//! one `libbpf-sys` may be in the graph).
#![allow(unsafe_code)]

pub mod ring;
pub mod socket;
pub mod sys;
pub mod umem;

pub use ring::{Consumer, Producer};
pub use socket::{Config, CopyMode, Error, Socket, Statistics, StatsHandle};
pub use sys::{Doorbell, Kick, SyscallError};
pub use umem::Umem;

/// A descriptor on the RX and TX rings: UMEM address, length, options.
pub type Desc = libc::xdp_desc;
