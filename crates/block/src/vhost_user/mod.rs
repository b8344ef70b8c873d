//! Serving a disk to QEMU as a vhost-user-blk device: QEMU shares the
//! guest's memory (`memory-backend-memfd,share=on`) and the disk's
//! virtqueues over a unix socket, and the service reads and writes guest
//! memory itself, with no socket copy between QEMU and the disk.
//!
//! The vhost-user protocol is rust-vmm's (`vhost-user-backend`); this
//! module is the virtio-blk device on top: request layout ([`layout`]),
//! configuration space ([`config`]), request execution ([`device`]) and
//! the socket's accept loop ([`server`]).

pub mod config;
pub mod device;
pub mod layout;
mod pool;
pub mod server;

pub use device::{signal_deferred, BlkDevice};
pub use server::{bind, serve};
