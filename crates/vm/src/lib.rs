//! VM lifecycle on one host.
//!
//! Each running VM has a runtime directory ([`RunDir`]) and a supervisor
//! process ([`supervisor`]) that owns its QEMU child, holds a QMP connection
//! and records the VM's state from QMP events and the child's exit — never by
//! guessing. Commands from the CLI ([`control`]) talk to QEMU through a second
//! QMP socket and read the recorded state. A supervisor that dies leaves QEMU
//! running; a QEMU that dies is reported as crashed with its signal.

pub mod blockservice;
pub mod control;
pub mod cpu;
pub mod error;
pub mod net;
pub mod preflight;
pub mod rundir;
pub mod state;
pub mod supervisor;

pub use error::VmError;
pub use rundir::RunDir;
pub use state::{StateRecord, VmState};
