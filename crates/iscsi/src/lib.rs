//! Ferry's iSCSI target (`ferry san`), in three layers that know nothing of
//! each other's internals:
//!
//! - [`pdu`]: the wire codec (no I/O): basic header segment, AHS, digests,
//!   data segments, text key=value lists.
//! - [`login`] and [`target`]: login negotiation (security and operational
//!   stages), the session/connection state machine (CmdSN window, R2T,
//!   Data-In) and the tokio server.
//! - [`scsi`]: the SCSI command layer (CDB in, data and status or sense out)
//!   over the [`scsi::Lun`] backend trait.
//!
//! [`config`] holds the TOML configuration the server and the CLI share.

pub mod config;
pub mod initiator;
pub mod login;
pub mod pdu;
pub mod scsi;
pub mod target;
