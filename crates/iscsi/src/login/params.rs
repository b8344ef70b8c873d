//! Operational parameters (RFC 7143 section 13) and how each key is
//! negotiated: list keys pick the first supported value, numeric keys take
//! the minimum or maximum, boolean keys AND or OR.

use crate::pdu::Digests;

/// The values a session and its connection run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Digests on this connection.
    pub digests: Digests,
    /// Largest data segment the initiator accepts (what we may send).
    pub initiator_mrdsl: u32,
    /// Largest data segment the target accepts (what we declared).
    pub target_mrdsl: u32,
    /// MaxBurstLength.
    pub max_burst: u32,
    /// FirstBurstLength.
    pub first_burst: u32,
    /// ImmediateData.
    pub immediate_data: bool,
    /// InitialR2T.
    pub initial_r2t: bool,
    /// MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    /// MaxConnections.
    pub max_connections: u32,
    /// DataPDUInOrder.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel.
    pub error_recovery_level: u32,
    /// DefaultTime2Wait.
    pub time2wait: u32,
    /// DefaultTime2Retain.
    pub time2retain: u32,
}

/// The target's own limits, offered in negotiation.
pub const TARGET_MRDSL: u32 = 262_144;
/// Largest burst the target accepts.
pub const TARGET_MAX_BURST: u32 = 16 * 1024 * 1024 - 1;
/// Largest unsolicited burst.
pub const TARGET_FIRST_BURST: u32 = 262_144;
/// Most connections one session may have.
pub const TARGET_MAX_CONNECTIONS: u32 = 8;

impl Default for Params {
    /// RFC 7143 defaults, except our declared receive limit.
    fn default() -> Params {
        Params {
            digests: Digests::default(),
            initiator_mrdsl: 8192,
            target_mrdsl: TARGET_MRDSL,
            max_burst: 262_144,
            first_burst: 65_536,
            immediate_data: true,
            initial_r2t: true,
            max_outstanding_r2t: 1,
            max_connections: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            time2wait: 2,
            time2retain: 20,
        }
    }
}

/// What to answer to one offered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Reply `key=value`.
    Value(String),
    /// A declaration: nothing to reply.
    Silent,
    /// Reply `key=NotUnderstood`.
    NotUnderstood,
    /// Reply `key=Irrelevant`.
    Irrelevant,
    /// Reply `key=Reject`.
    Reject,
}

/// Why an offered value is invalid (the login fails with an initiator
/// error).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    /// A numeric value is malformed or outside its range.
    #[error("{key}={value} is not a number in {min}..={max}")]
    Range {
        /// The key.
        key: String,
        /// The offered value.
        value: String,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A boolean is neither Yes nor No.
    #[error("{key}={value} is not Yes or No")]
    Bool {
        /// The key.
        key: String,
        /// The offered value.
        value: String,
    },
}

fn num(key: &str, v: &str, min: u64, max: u64) -> Result<u32, ParamError> {
    let parsed = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse::<u64>().ok()
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => Ok(n as u32),
        _ => Err(ParamError::Range {
            key: key.into(),
            value: v.into(),
            min,
            max,
        }),
    }
}

fn boolean(key: &str, v: &str) -> Result<bool, ParamError> {
    match v {
        "Yes" => Ok(true),
        "No" => Ok(false),
        _ => Err(ParamError::Bool {
            key: key.into(),
            value: v.into(),
        }),
    }
}

fn yn(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

fn digest(v: &str) -> Option<(bool, &'static str)> {
    v.split(',').find_map(|c| match c {
        "CRC32C" => Some((true, "CRC32C")),
        "None" => Some((false, "None")),
        _ => None,
    })
}

/// Keys only a normal session negotiates.
const SESSION_ONLY: &[&str] = &[
    "MaxBurstLength",
    "FirstBurstLength",
    "ImmediateData",
    "InitialR2T",
    "MaxOutstandingR2T",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "MaxConnections",
];

impl Params {
    /// The values a connection of this session runs with: its own
    /// connection-only keys (digests, receive limits), the session's
    /// values for the rest, which only the leading login negotiates.
    pub fn for_connection(&self, conn: &Params) -> Params {
        Params {
            digests: conn.digests,
            initiator_mrdsl: conn.initiator_mrdsl,
            target_mrdsl: conn.target_mrdsl,
            ..self.clone()
        }
    }

    /// Negotiates one operational key offered by the initiator.
    pub fn offer(&mut self, key: &str, v: &str, discovery: bool) -> Result<Answer, ParamError> {
        if discovery && SESSION_ONLY.contains(&key) {
            return Ok(Answer::Irrelevant);
        }
        Ok(match key {
            "HeaderDigest" => match digest(v) {
                Some((on, name)) => {
                    self.digests.header = on;
                    Answer::Value(name.into())
                }
                None => Answer::Reject,
            },
            "DataDigest" => match digest(v) {
                Some((on, name)) => {
                    self.digests.data = on;
                    Answer::Value(name.into())
                }
                None => Answer::Reject,
            },
            "MaxRecvDataSegmentLength" => {
                self.initiator_mrdsl = num(key, v, 512, 16_777_215)?;
                Answer::Silent
            }
            "MaxBurstLength" => {
                self.max_burst = num(key, v, 512, 16_777_215)?.min(TARGET_MAX_BURST);
                self.first_burst = self.first_burst.min(self.max_burst);
                Answer::Value(self.max_burst.to_string())
            }
            "FirstBurstLength" => {
                self.first_burst = num(key, v, 512, 16_777_215)?
                    .min(TARGET_FIRST_BURST)
                    .min(self.max_burst);
                Answer::Value(self.first_burst.to_string())
            }
            "ImmediateData" => {
                self.immediate_data = boolean(key, v)?;
                Answer::Value(yn(self.immediate_data))
            }
            "InitialR2T" => {
                self.initial_r2t = boolean(key, v)?;
                Answer::Value(yn(self.initial_r2t))
            }
            "MaxOutstandingR2T" => {
                num(key, v, 1, 65535)?;
                self.max_outstanding_r2t = 1;
                Answer::Value("1".into())
            }
            "MaxConnections" => {
                self.max_connections = num(key, v, 1, 65535)?.min(TARGET_MAX_CONNECTIONS);
                Answer::Value(self.max_connections.to_string())
            }
            "DataPDUInOrder" => {
                boolean(key, v)?;
                Answer::Value(yn(true))
            }
            "DataSequenceInOrder" => {
                boolean(key, v)?;
                Answer::Value(yn(true))
            }
            "ErrorRecoveryLevel" => {
                num(key, v, 0, 2)?;
                self.error_recovery_level = 0;
                Answer::Value("0".into())
            }
            "DefaultTime2Wait" => {
                self.time2wait = num(key, v, 0, 3600)?.max(2);
                Answer::Value(self.time2wait.to_string())
            }
            "DefaultTime2Retain" => {
                self.time2retain = num(key, v, 0, 3600)?.min(20);
                Answer::Value(self.time2retain.to_string())
            }
            "IFMarker" | "OFMarker" => {
                boolean(key, v)?;
                Answer::Value("No".into())
            }
            "OFMarkInt" | "IFMarkInt" => Answer::Reject,
            "InitiatorAlias" | "InitiatorName" | "TargetName" | "SessionType" => Answer::Silent,
            "TaskReporting" => Answer::Value("RFC3720".into()),
            "iSCSIProtocolLevel" => Answer::Value("0".into()),
            _ => Answer::NotUnderstood,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_rules() {
        let mut p = Params::default();
        assert_eq!(
            p.offer("HeaderDigest", "CRC32C,None", false),
            Ok(Answer::Value("CRC32C".into()))
        );
        assert!(p.digests.header);
        assert_eq!(
            p.offer("DataDigest", "None", false),
            Ok(Answer::Value("None".into()))
        );
        assert_eq!(
            p.offer("MaxBurstLength", "262144", false),
            Ok(Answer::Value("262144".into()))
        );
        assert_eq!(
            p.offer("FirstBurstLength", "999999", false),
            Ok(Answer::Value("262144".into()))
        );
        assert_eq!(
            p.offer("InitialR2T", "No", false),
            Ok(Answer::Value("No".into()))
        );
        assert_eq!(
            p.offer("MaxRecvDataSegmentLength", "65536", false),
            Ok(Answer::Silent)
        );
        assert_eq!(p.initiator_mrdsl, 65536);
        assert_eq!(
            p.offer("ErrorRecoveryLevel", "2", false),
            Ok(Answer::Value("0".into()))
        );
        assert_eq!(
            p.offer("X-com.example", "1", false),
            Ok(Answer::NotUnderstood)
        );
        assert_eq!(
            p.offer("MaxBurstLength", "1", false)
                .map_err(|e| e.to_string()),
            Err("MaxBurstLength=1 is not a number in 512..=16777215".into())
        );
        assert!(p.offer("ImmediateData", "maybe", false).is_err());
        assert_eq!(
            p.offer("MaxBurstLength", "512", true),
            Ok(Answer::Irrelevant)
        );
    }
}
