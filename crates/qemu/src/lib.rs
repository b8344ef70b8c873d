//! Ferry's QEMU driver.
//!
//! This crate is the only place that knows QEMU: where its binary is and which
//! version it is ([`binary`]), which accelerator works on this host
//! ([`accel`]), how a [`ferry_spec::VmSpec`] becomes a command line
//! ([`cmdline`]), and how to talk to a running QEMU over QMP ([`qmp`]).
//! The rest of Ferry asks for VMs, not for QEMU options.

pub mod accel;
pub mod binary;
pub mod cmdline;
pub mod cpuexp;
pub mod qmp;

pub use accel::{Accel, AccelChoice};
pub use binary::{QemuBinary, QemuError};
pub use cmdline::{Console, LaunchConfig, NicPlan};
pub use qmp::{QmpClient, QmpError, QmpEvent};
