//! The SCSI command layer: a CDB and its Data-Out bytes in, Data-In bytes
//! and status (with sense) out. It knows nothing of iSCSI; the only thing it
//! learns about the transport is the I_T nexus a command arrived on.

pub mod cdb;
pub mod device;
pub mod inquiry;
pub mod io;
pub mod lun;
pub mod mode;
pub mod pr;
pub mod sense;

pub use device::{Identity, LogicalUnit};
pub use lun::{ImageFile, Lun, LunError};
pub use sense::{Sense, Status};

use std::collections::BTreeMap;
use std::sync::Arc;

/// The I_T nexus a command arrived on: who sent it, through which port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// The initiator port name (`iqn...,i,0x<ISID>`).
    pub initiator_port: String,
    /// The target port's relative identifier (the portal group tag).
    pub rel_port: u16,
}

/// A command for one logical unit.
#[derive(Debug)]
pub struct Request<'a> {
    /// The CDB (6 to 16 bytes, or longer with an extended CDB).
    pub cdb: &'a [u8],
    /// Data-Out bytes the initiator sent.
    pub data_out: &'a [u8],
    /// Where the command came from.
    pub nexus: &'a Nexus,
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status byte.
    pub status: Status,
    /// Data-In bytes (already cut to the CDB's allocation length).
    pub data: Vec<u8>,
    /// Sense data encoded for the wire, with CHECK CONDITION.
    pub sense: Option<Vec<u8>>,
    /// Bytes of Data-Out the command's CDB asked for (for residuals).
    pub data_out_len: Option<usize>,
}

impl Response {
    /// GOOD with `data`.
    pub fn good(data: Vec<u8>) -> Response {
        Response {
            status: Status::Good,
            data,
            sense: None,
            data_out_len: None,
        }
    }
    /// CHECK CONDITION with fixed-format sense.
    pub fn check(sense: Sense) -> Response {
        Response {
            status: Status::CheckCondition,
            data: Vec::new(),
            sense: Some(sense.fixed()),
            data_out_len: None,
        }
    }
    /// RESERVATION CONFLICT.
    pub fn conflict() -> Response {
        Response {
            status: Status::ReservationConflict,
            data: Vec::new(),
            sense: None,
            data_out_len: None,
        }
    }
    /// The same response, recording how much Data-Out the CDB asked for.
    pub fn with_data_out_len(mut self, n: usize) -> Response {
        self.data_out_len = Some(n);
        self
    }
}

/// Cuts `data` to an allocation length.
pub fn truncate(mut data: Vec<u8>, alloc: usize) -> Vec<u8> {
    data.truncate(alloc);
    data
}

/// The LUNs of one target, and the commands that belong to the target as a
/// whole (REPORT LUNS, commands to a LUN that does not exist).
#[derive(Default, Clone)]
pub struct LunMap {
    /// Logical units by LUN number.
    pub luns: BTreeMap<u64, Arc<LogicalUnit>>,
}

/// Decodes the 8-byte LUN field (peripheral or flat addressing).
pub fn decode_lun(raw: u64) -> Option<u64> {
    let b = raw.to_be_bytes();
    if b[2..].iter().any(|x| *x != 0) {
        return None;
    }
    match b[0] >> 6 {
        0 if b[0] == 0 => Some(u64::from(b[1])),
        1 => Some((u64::from(b[0] & 0x3f) << 8) | u64::from(b[1])),
        _ => None,
    }
}

/// Encodes a LUN number as REPORT LUNS and iSCSI carry it.
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else {
        b[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
        b[1] = lun as u8;
    }
    b
}

impl LunMap {
    /// Runs one command addressed to the raw LUN field `raw_lun`.
    pub fn execute(&self, raw_lun: u64, req: &Request<'_>) -> Response {
        let op = req.cdb.first().copied().unwrap_or(0xff);
        if op == cdb::op::REPORT_LUNS {
            return self.report_luns(req.cdb);
        }
        match decode_lun(raw_lun).and_then(|n| self.luns.get(&n)) {
            Some(lu) => lu.execute(req),
            None => match op {
                cdb::op::INQUIRY => inquiry::no_lun(req.cdb),
                cdb::op::REQUEST_SENSE => Response::good(Vec::new()),
                _ => Response::check(Sense::lun_not_supported()),
            },
        }
    }

    fn report_luns(&self, c: &[u8]) -> Response {
        if c.len() < 12 {
            return Response::check(Sense::invalid_field_in_cdb(0));
        }
        let select = c[2];
        let alloc = cdb::be32(&c[6..10]) as usize;
        if alloc < 16 {
            return Response::check(Sense::invalid_field_in_cdb(6));
        }
        if select > 2 {
            return Response::check(Sense::invalid_field_in_cdb(2));
        }
        let mut out = vec![0u8; 8];
        if select != 1 {
            for n in self.luns.keys() {
                out.extend_from_slice(&encode_lun(*n));
            }
        }
        let len = (out.len() - 8) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Response::good(truncate(out, alloc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_addressing_round_trips() {
        for n in [0u64, 1, 255, 256, 16383] {
            let raw = u64::from_be_bytes(encode_lun(n));
            assert_eq!(decode_lun(raw), Some(n));
        }
        assert_eq!(decode_lun(0x0000_0000_0000_0001), None);
    }
}
