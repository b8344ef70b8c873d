//! Processor compatibility.
//!
//! A host's [`CpuProfile`] says which CPU features its accelerator can give
//! a guest, read from QEMU's static expansion of `max` (TCG) or `host` (KVM),
//! less whatever the host's configuration withholds ([`HostCpuConfig`]).
//! A [`CpuModel`] is the exact CPU a VM sees: QEMU's featureless `base`
//! model plus every feature named explicitly and `enforce`, so it means the
//! same on every host and QEMU refuses to start it where a feature is
//! missing. [`baseline`] intersects profiles or names a level
//! (x86-64-v2 ...); [`check`] is the precheck before a VM moves.

pub mod baseline;
pub mod model;
pub mod profile;

pub use baseline::{baseline, level, BaselineError, LEVELS};
pub use model::{check, CpuModel, Incompatible};
pub use profile::{CpuProfile, HostCpuConfig, ProfileError};
