//! What a host needs to know and do about a shared LUN outside any data
//! path: where it is (`iscsi://` addresses), who it is (INQUIRY, the VPD
//! 0x83 device identity, capacity) and its persistent reservations, one
//! command at a time. Cluster validation and `ferry host lun` use it.

use crate::initiator::{CommandResult, InitiatorError, Session};
use std::fmt;
use std::str::FromStr;

/// The iSCSI port used when an address names none.
pub const DEFAULT_PORT: u16 = 3260;

/// The ISID of these one-shot sessions: the same on every run, so that a
/// host's registrations made by one command are its own in the next.
const TOOL_ISID: [u8; 6] = [0x80, b'F', b'R', b'Y', 0, 1];

/// SCSI status RESERVATION CONFLICT.
const RESERVATION_CONFLICT: u8 = 0x18;

/// A LUN's address: `iscsi://HOST[:PORT]/TARGET-IQN/LUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunUrl {
    /// `host:port` of the portal.
    pub portal: String,
    /// The target's iSCSI name.
    pub target: String,
    /// The logical unit number.
    pub lun: u64,
}

/// Why an `iscsi://` address does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Not `iscsi://`.
    #[error("{0:?} is not an iscsi:// address (iscsi://HOST[:PORT]/TARGET-IQN/LUN)")]
    Scheme(String),
    /// A part is missing or malformed.
    #[error("{url:?}: {what}")]
    Part {
        /// The address.
        url: String,
        /// What is wrong with it.
        what: &'static str,
    },
}

impl FromStr for LunUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let rest = s
            .strip_prefix("iscsi://")
            .ok_or_else(|| UrlError::Scheme(s.into()))?;
        let part = |what| UrlError::Part {
            url: s.into(),
            what,
        };
        let mut parts = rest.split('/');
        let host = parts
            .next()
            .filter(|h| !h.is_empty())
            .ok_or(part("no portal"))?;
        let target = parts
            .next()
            .filter(|t| !t.is_empty())
            .ok_or(part("no target name"))?;
        let lun = parts
            .next()
            .ok_or(part("no LUN number"))?
            .parse()
            .map_err(|_| part("the LUN is not a number"))?;
        if parts.next().is_some() {
            return Err(part("more than HOST/TARGET/LUN"));
        }
        let has_port = match host.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => host.contains(':'),
        };
        let portal = if has_port {
            let port = host.rsplit_once(':').map_or("", |(_, p)| p);
            port.parse::<u16>()
                .map_err(|_| part("the port is not a number"))?;
            host.to_string()
        } else {
            format!("{host}:{DEFAULT_PORT}")
        };
        Ok(LunUrl {
            portal,
            target: target.into(),
            lun,
        })
    }
}

impl fmt::Display for LunUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iscsi://{}/{}/{}", self.portal, self.target, self.lun)
    }
}

/// Why an inspection or reservation command failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Connecting or logging in failed.
    #[error("cannot log in to {target} at {portal}: {cause}")]
    Login {
        /// The portal.
        portal: String,
        /// The target.
        target: String,
        /// Why (in the message itself, so one line says it all).
        cause: InitiatorError,
    },
    /// A command could not be carried out on the wire.
    #[error("{what} failed: {cause}")]
    Transport {
        /// The command.
        what: &'static str,
        /// Why.
        cause: InitiatorError,
    },
    /// Another initiator's reservation refused the command.
    #[error("{what}: reservation conflict")]
    Conflict {
        /// The command.
        what: &'static str,
    },
    /// The target answered with a CHECK CONDITION or another status.
    #[error("{what}: status {status:#04x}, sense {sense}")]
    Status {
        /// The command.
        what: &'static str,
        /// SCSI status.
        status: u8,
        /// Sense key/ASC/ASCQ.
        sense: String,
    },
    /// The answer was too short or malformed.
    #[error("{what}: malformed answer ({detail})")]
    Malformed {
        /// The command.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// A LUN's identity as a host sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LunInfo {
    /// T10 vendor identification.
    pub vendor: String,
    /// Product identification.
    pub product: String,
    /// The VPD page 0x83 designators, each as `type:hex`: what makes two
    /// hosts' views the same disk.
    pub device_id: Vec<String>,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Logical block size.
    pub block_size: u32,
}

/// The LUN's persistent reservation state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrInfo {
    /// PRgeneration.
    pub generation: u32,
    /// Registered keys.
    pub keys: Vec<u64>,
    /// The reservation: holder's key (0 for all-registrants types) and type.
    pub reservation: Option<(u64, u8)>,
}

/// A PERSISTENT RESERVE OUT service action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrAction {
    /// Register `sa_key` (changing `key`, which must match).
    Register,
    /// Register `sa_key` whatever is registered now.
    RegisterIgnore,
    /// Reserve with `key`.
    Reserve,
    /// Release the reservation held with `key`.
    Release,
    /// Remove every registration and the reservation.
    Clear,
    /// Remove the registrations of `sa_key` and take over its reservation.
    Preempt,
    /// Preempt, and abort the preempted initiators' tasks.
    PreemptAbort,
}

impl FromStr for PrAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "register" => PrAction::Register,
            "register-ignore" => PrAction::RegisterIgnore,
            "reserve" => PrAction::Reserve,
            "release" => PrAction::Release,
            "clear" => PrAction::Clear,
            "preempt" => PrAction::Preempt,
            "preempt-abort" => PrAction::PreemptAbort,
            _ => {
                return Err(format!(
                    "{s:?} is not a reservation action (register, register-ignore, reserve, release, clear, preempt, preempt-abort)"
                ))
            }
        })
    }
}

impl PrAction {
    fn code(self) -> u8 {
        match self {
            PrAction::Register => 0,
            PrAction::Reserve => 1,
            PrAction::Release => 2,
            PrAction::Clear => 3,
            PrAction::Preempt => 4,
            PrAction::PreemptAbort => 5,
            PrAction::RegisterIgnore => 6,
        }
    }
}

/// A persistent reservation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrType {
    /// Only the holder writes; everyone reads.
    WriteExclusive,
    /// Only the holder reads and writes.
    ExclusiveAccess,
    /// Every registrant writes.
    WriteExclusiveRegistrantsOnly,
    /// Every registrant reads and writes.
    ExclusiveAccessRegistrantsOnly,
}

impl FromStr for PrType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "write-exclusive" => PrType::WriteExclusive,
            "exclusive-access" => PrType::ExclusiveAccess,
            "write-exclusive-registrants" => PrType::WriteExclusiveRegistrantsOnly,
            "exclusive-access-registrants" => PrType::ExclusiveAccessRegistrantsOnly,
            _ => {
                return Err(format!(
                    "{s:?} is not a reservation type (write-exclusive, exclusive-access, write-exclusive-registrants, exclusive-access-registrants)"
                ))
            }
        })
    }
}

impl PrType {
    /// The SPC type code.
    pub fn code(self) -> u8 {
        match self {
            PrType::WriteExclusive => 1,
            PrType::ExclusiveAccess => 3,
            PrType::WriteExclusiveRegistrantsOnly => 5,
            PrType::ExclusiveAccessRegistrantsOnly => 6,
        }
    }
}

/// One host's logged-in view of one LUN.
pub struct LunSession {
    session: Session,
    lun: u64,
}

impl LunSession {
    /// Logs in to the LUN's target as `initiator` (the same I_T nexus every
    /// time for the same name).
    pub fn open(url: &LunUrl, initiator: &str) -> Result<LunSession, InspectError> {
        let session = Session::login(&url.portal, initiator, &url.target, TOOL_ISID, None)
            .map_err(|cause| InspectError::Login {
                portal: url.portal.clone(),
                target: url.target.clone(),
                cause,
            })?;
        Ok(LunSession {
            session,
            lun: url.lun,
        })
    }

    fn run(
        &mut self,
        what: &'static str,
        cdb: &[u8],
        data_out: &[u8],
        read_len: u32,
    ) -> Result<CommandResult, InspectError> {
        let r = self
            .session
            .command_past_ua(self.lun, cdb, data_out, read_len)
            .map_err(|cause| InspectError::Transport { what, cause })?;
        match r.status {
            0 => Ok(r),
            RESERVATION_CONFLICT => Err(InspectError::Conflict { what }),
            status => Err(InspectError::Status {
                what,
                status,
                sense: describe_sense(&r.sense),
            }),
        }
    }

    /// INQUIRY, the device identification page and READ CAPACITY(16).
    pub fn identify(&mut self) -> Result<LunInfo, InspectError> {
        let std = self.run("INQUIRY", &[0x12, 0, 0, 0, 96, 0], &[], 96)?.data;
        if std.len() < 36 {
            return Err(malformed("INQUIRY", "shorter than 36 bytes"));
        }
        if std[0] & 0xe0 != 0 {
            return Err(InspectError::Malformed {
                what: "INQUIRY",
                detail: format!(
                    "no logical unit here (peripheral qualifier {})",
                    std[0] >> 5
                ),
            });
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        let vpd = self
            .run("INQUIRY VPD 0x83", &[0x12, 1, 0x83, 0x04, 0, 0], &[], 1024)?
            .data;
        let device_id = designators(&vpd)?;
        let cap = self
            .run(
                "READ CAPACITY(16)",
                &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                &[],
                32,
            )?
            .data;
        let Some(last) = cap.get(..8).map(be64) else {
            return Err(malformed("READ CAPACITY(16)", "shorter than 12 bytes"));
        };
        let block_size = cap
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| malformed("READ CAPACITY(16)", "shorter than 12 bytes"))?;
        Ok(LunInfo {
            vendor: text(&std[8..16]),
            product: text(&std[16..32]),
            device_id,
            size_bytes: last.saturating_add(1).saturating_mul(u64::from(block_size)),
            block_size,
        })
    }

    /// READ KEYS and READ RESERVATION.
    pub fn pr_status(&mut self) -> Result<PrInfo, InspectError> {
        let keys = self
            .run("PERSISTENT RESERVE IN (READ KEYS)", &pr_in(0), &[], 4096)?
            .data;
        if keys.len() < 8 {
            return Err(malformed("READ KEYS", "shorter than 8 bytes"));
        }
        let listed = (be32(&keys[4..8]) as usize).min(keys.len() - 8);
        let list = keys[8..8 + listed].chunks_exact(8).map(be64).collect();
        let resv = self
            .run(
                "PERSISTENT RESERVE IN (READ RESERVATION)",
                &pr_in(1),
                &[],
                64,
            )?
            .data;
        if resv.len() < 8 {
            return Err(malformed("READ RESERVATION", "shorter than 8 bytes"));
        }
        let reservation = if be32(&resv[4..8]) >= 16 && resv.len() >= 24 {
            Some((be64(&resv[8..16]), resv[21] & 0x0f))
        } else {
            None
        };
        Ok(PrInfo {
            generation: be32(&keys[..4]),
            keys: list,
            reservation,
        })
    }

    /// One PERSISTENT RESERVE OUT; a reservation conflict is
    /// [`InspectError::Conflict`], never retried.
    pub fn pr_out(
        &mut self,
        action: PrAction,
        key: u64,
        sa_key: u64,
        kind: PrType,
    ) -> Result<(), InspectError> {
        let cdb = [0x5f, action.code(), kind.code(), 0, 0, 0, 0, 0, 24, 0];
        let mut p = vec![0u8; 24];
        p[..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sa_key.to_be_bytes());
        self.run("PERSISTENT RESERVE OUT", &cdb, &p, 0).map(|_| ())
    }

    /// Logs out.
    pub fn close(self) {
        let _ = self.session.logout();
    }
}

fn pr_in(service_action: u8) -> [u8; 10] {
    [0x5e, service_action, 0, 0, 0, 0, 0, 0x10, 0, 0]
}

fn malformed(what: &'static str, detail: &str) -> InspectError {
    InspectError::Malformed {
        what,
        detail: detail.into(),
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The designators of a VPD page 0x83 as `type:hex`, LU-associated ones
/// only (port and target designators differ between paths by design).
fn designators(page: &[u8]) -> Result<Vec<String>, InspectError> {
    const WHAT: &str = "INQUIRY VPD 0x83";
    if page.len() < 4 || page[1] != 0x83 {
        return Err(malformed(WHAT, "not a device identification page"));
    }
    let end = (4 + usize::from(u16::from_be_bytes([page[2], page[3]]))).min(page.len());
    let mut at = 4;
    let mut out = Vec::new();
    while at + 4 <= end {
        let len = usize::from(page[at + 3]);
        let body = page
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| malformed(WHAT, "a designator runs past the page"))?;
        let association = (page[at + 1] >> 4) & 0x03;
        let kind = match page[at + 1] & 0x0f {
            1 => "t10",
            2 => "eui64",
            3 => "naa",
            8 => "scsi-name",
            _ => "other",
        };
        if association == 0 {
            let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
            out.push(format!("{kind}:{hex}"));
        }
        at += 4 + len;
    }
    if out.is_empty() {
        return Err(malformed(WHAT, "no designator of the logical unit"));
    }
    Ok(out)
}

fn describe_sense(sense: &[u8]) -> String {
    // Fixed format (0x70/0x71) or descriptor format (0x72/0x73).
    match sense.first().map(|b| b & 0x7f) {
        Some(0x70 | 0x71) if sense.len() >= 14 => {
            format!("{:x}/{:02x}/{:02x}", sense[2] & 0x0f, sense[12], sense[13])
        }
        Some(0x72 | 0x73) if sense.len() >= 4 => {
            format!("{:x}/{:02x}/{:02x}", sense[1] & 0x0f, sense[2], sense[3])
        }
        _ => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_default_port_and_name_what_is_wrong() {
        let u: LunUrl = "iscsi://10.20.0.1/iqn.2026-11.dev.ferry:disks/1"
            .parse()
            .unwrap();
        assert_eq!(u.portal, "10.20.0.1:3260");
        assert_eq!(u.lun, 1);
        assert_eq!(
            u.to_string(),
            "iscsi://10.20.0.1:3260/iqn.2026-11.dev.ferry:disks/1"
        );
        let u: LunUrl = "iscsi://san:3261/iqn.x/0".parse().unwrap();
        assert_eq!(u.portal, "san:3261");
        let u: LunUrl = "iscsi://[fd00::1]:3262/iqn.x/0".parse().unwrap();
        assert_eq!(u.portal, "[fd00::1]:3262");
        let u: LunUrl = "iscsi://[fd00::1]/iqn.x/0".parse().unwrap();
        assert_eq!(u.portal, "[fd00::1]:3260");
        let bad = |s: &str| s.parse::<LunUrl>().unwrap_err().to_string();
        assert!(bad("http://x/iqn/0").contains("not an iscsi://"));
        assert!(bad("iscsi://x/iqn").contains("no LUN number"));
        assert!(bad("iscsi://x/iqn/zero").contains("not a number"));
        assert!(bad("iscsi:///iqn/0").contains("no portal"));
        assert!(bad("iscsi://x:port/iqn/0").contains("port"));
        assert!(bad("iscsi://x/iqn/0/1").contains("more than"));
    }

    #[test]
    fn designators_keep_the_logical_unit_ones_and_reject_overruns() {
        // An NAA designator of the LU, and a target port one that is left out.
        let mut page = vec![0, 0x83, 0, 0];
        page.extend_from_slice(&[0x01, 0x03, 0, 8, 0x60, 1, 2, 3, 4, 5, 6, 7]);
        page.extend_from_slice(&[0x01, 0x14, 0, 4, 0, 0, 0, 1]);
        page[3] = (page.len() - 4) as u8;
        assert_eq!(designators(&page).unwrap(), vec!["naa:6001020304050607"]);
        let mut short = page.clone();
        short[7] = 200;
        assert!(designators(&short).is_err());
        assert!(designators(&[0, 0x80, 0, 0]).is_err());
        assert!(designators(&[0, 0x83, 0, 0]).is_err());
    }

    #[test]
    fn sense_is_described_in_both_formats() {
        let mut fixed = vec![0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x05;
        fixed[12] = 0x25;
        assert_eq!(describe_sense(&fixed), "5/25/00");
        assert_eq!(describe_sense(&[0x72, 0x06, 0x29, 0x00]), "6/29/00");
        assert_eq!(describe_sense(&[]), "none");
    }
}
