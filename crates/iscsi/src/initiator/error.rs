//! What can go wrong between Ferry's initiator and a target. Each variant
//! names the thing that is wrong (the portal, the target, the LUN, the CHAP
//! user) so a log line or a VM start error says what to fix.

use crate::pdu::FrameError;

/// Why an initiator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IscsiError {
    /// The TCP connection to the portal could not be made.
    #[error("cannot connect to iSCSI portal {portal}")]
    Connect {
        /// host:port.
        portal: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A socket error on an established connection.
    #[error("connection to {portal} failed")]
    Io {
        /// host:port.
        portal: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The target sent bytes that are not a valid PDU.
    #[error("bad PDU from {portal}")]
    Frame {
        /// host:port.
        portal: String,
        /// Why.
        #[source]
        source: FrameError,
    },
    /// The target does not know the IQN (login status 0x0203/0x0204).
    #[error(
        "target {target} is unknown at portal {portal}; check the IQN (discovery lists: {known})"
    )]
    UnknownTarget {
        /// The IQN asked for.
        target: String,
        /// host:port.
        portal: String,
        /// What SendTargets discovery lists there, or a note why not.
        known: String,
    },
    /// CHAP failed: the target refused our user name or secret.
    #[error(
        "CHAP authentication as {user:?} to target {target} failed: wrong user name or secret"
    )]
    ChapRefused {
        /// The IQN.
        target: String,
        /// The CHAP user we sent.
        user: String,
    },
    /// The target wants CHAP and no credentials were given.
    #[error("target {target} requires CHAP authentication; give credentials in the secrets file")]
    ChapRequired {
        /// The IQN.
        target: String,
    },
    /// Mutual CHAP: the target's answer to our challenge is wrong.
    #[error("target {target} failed mutual CHAP: its answer does not match the mutual secret for {user:?}")]
    MutualChapFailed {
        /// The IQN.
        target: String,
        /// The mutual user name we expected.
        user: String,
    },
    /// The target refused this initiator (ACL).
    #[error("target {target} does not allow initiator {initiator} (not in its ACL)")]
    NotAuthorized {
        /// The IQN.
        target: String,
        /// Our initiator name.
        initiator: String,
    },
    /// Any other login refusal.
    #[error("login to {target} refused with status {class:#04x}/{detail:#04x}")]
    LoginRefused {
        /// The IQN.
        target: String,
        /// Status class.
        class: u8,
        /// Status detail.
        detail: u8,
    },
    /// The LUN does not exist on the target.
    #[error("LUN {lun} does not exist on target {target}{}", if available.is_empty() { String::new() } else { format!(" (it has LUNs {available})") })]
    NoSuchLun {
        /// The IQN.
        target: String,
        /// The LUN asked for.
        lun: u64,
        /// LUNs REPORT LUNS lists.
        available: String,
    },
    /// The LUN is not a direct-access block device.
    #[error("LUN {lun} of {target} is not a disk (peripheral device type {kind:#04x})")]
    NotADisk {
        /// The IQN.
        target: String,
        /// The LUN.
        lun: u64,
        /// SCSI peripheral device type.
        kind: u8,
    },
    /// The target broke the protocol.
    #[error("protocol error from {portal}: {what}")]
    Protocol {
        /// host:port.
        portal: String,
        /// What was wrong.
        what: String,
    },
    /// Another initiator holds a persistent reservation; never retried.
    #[error("reservation conflict: another initiator holds a persistent reservation on LUN {lun}")]
    ReservationConflict {
        /// The LUN.
        lun: u64,
    },
    /// The command ended with CHECK CONDITION.
    #[error(
        "SCSI command {opcode:#04x} failed: sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}"
    )]
    CheckCondition {
        /// The CDB's opcode.
        opcode: u8,
        /// Sense key.
        key: u8,
        /// Additional sense code.
        asc: u8,
        /// Qualifier.
        ascq: u8,
    },
    /// Any other SCSI status (BUSY, TASK SET FULL after retries, ...).
    #[error("SCSI command {opcode:#04x} ended with status {status:#04x}")]
    Status {
        /// The CDB's opcode.
        opcode: u8,
        /// The status byte.
        status: u8,
    },
    /// The command did not complete within the I/O timeout.
    #[error("SCSI command {opcode:#04x} did not complete within {secs} s (target {target} unreachable or stalled)")]
    Timeout {
        /// The CDB's opcode.
        opcode: u8,
        /// The timeout.
        secs: u64,
        /// The IQN.
        target: String,
    },
    /// The session was closed.
    #[error("the iSCSI session to {target} is closed")]
    Closed {
        /// The IQN.
        target: String,
    },
    /// A caller argument cannot be sent (unaligned range, oversized buffer).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl IscsiError {
    /// True for errors a new login will not fix (wrong name, secret, LUN):
    /// reconnecting stops and the callers get the error.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            IscsiError::UnknownTarget { .. }
                | IscsiError::ChapRefused { .. }
                | IscsiError::ChapRequired { .. }
                | IscsiError::MutualChapFailed { .. }
                | IscsiError::NotAuthorized { .. }
        )
    }
}
