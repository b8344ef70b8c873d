//! Ferry's iSCSI initiator: VM disks on LUNs of any standard target.
//!
//! - [`login`]: connect, CHAP (one-way and mutual), operational
//!   negotiation, SendTargets discovery.
//! - [`session`]: one connection with many commands in flight, a reader
//!   thread matching answers by ITT, the CmdSN window, R2T and Data-Out,
//!   reconnect with re-issue, I/O timeouts; [`abort`]: a command that
//!   timed out is aborted at the target before its caller hears of it.
//! - [`lun`] and [`pr`]: a LUN as a disk (read, write, FUA, flush, discard,
//!   write-zeroes, size, identity) and persistent reservations.
//! - [`simple`]: the old one-command-at-a-time client tests use to poke a
//!   target with raw CDBs.
//!
//! Calls block the calling thread, except [`Session::start`] and the
//! LUN's `start_read`/`start_write`, which hand a command to the target and
//! return: its [`Completion`] runs on the session's reader thread when the
//! answer comes. The block service starts its reads and writes that way.

mod abort;
pub mod cdb;
mod encode;
mod error;
pub mod login;
pub mod lun;
pub mod pr;
mod reader;
mod sender;
pub mod session;
pub mod simple;
mod sink;
pub mod task;
mod wire;

pub use error::IscsiError;
pub use login::{discover, Chap, DiscoveredTarget, LoginConfig};
pub use lun::{Lun, ReadDone, Unfinished, WriteDone};
pub use pr::{Reservation, ReservationType};
pub use session::{IdleHook, Session, SessionConfig};
pub use simple::{CommandResult, InitiatorError};
pub use sink::Sink;
pub use task::{Completion, Request, ScsiResult};

/// A random ISID of the "random" type (RFC 7143 10.12.5, T=10b): one per
/// session object, kept across its reconnects.
pub fn random_isid() -> [u8; 6] {
    let r = crate::login::chap::random_bytes(6);
    let mut isid = [0u8; 6];
    isid.copy_from_slice(&r);
    isid[0] = 0x80;
    isid
}

#[cfg(test)]
mod tests;
