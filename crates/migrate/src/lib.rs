//! Live migration of a VM between two hosts.
//!
//! QEMU moves the memory; Ferry decides how. [`hosts`] says how to reach each
//! host's VMs until the cluster agents exist; [`live`] prepares the
//! destination from the very spec the source runs, tunes and drives QEMU's
//! migration, steps the downtime budget up while the guest dirties faster
//! than the link, and switches over: destination runs, announces the guest's
//! MAC, source stops. Any failure before the switchover leaves the VM
//! running on the source and removes the destination's half.

pub mod destination;
pub mod hosts;
pub mod inflight;
pub mod live;
pub mod quick;
pub mod tls;

pub use destination::{Destination, HostDestination, Qmp};
pub use hosts::{Host, HostsFile};
pub use live::{migrate, MigrateError, MigrateOptions, MigrationReport, Policy, Progress};
pub use tls::TlsPlan;
