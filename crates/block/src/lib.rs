//! Ferry's block service: the path from a guest's virtio-blk device to its
//! storage.
//!
//! QEMU reaches every Ferry-served disk through a unix socket speaking NBD
//! ([`nbd`], the default) or vhost-user-blk ([`vhost_user`], guest memory
//! shared with the service); the service maps each disk onto a
//! [`BlockBackend`] (a raw image file, an iSCSI LUN through Ferry's
//! initiator ([`iscsi`]); a CSV virtual disk later) and counts what passes
//! ([`stats`]). One service process runs per VM, started and restarted by
//! the VM's supervisor ([`service`]).

pub mod backend;
pub mod iscsi;
pub mod nbd;
pub mod readahead;
pub mod service;
mod splice;
pub mod stats;
mod vectored;
pub mod vhost_user;

pub use backend::{BackendError, BlockBackend, FileBackend};
pub use iscsi::IscsiBackend;
pub use service::{DiskExport, ServiceConfig};
