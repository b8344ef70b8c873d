//! CDB field helpers and operation codes.

/// Operation codes the target knows.
#[allow(missing_docs)]
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const RESERVE_6: u8 = 0x16;
    pub const RELEASE_6: u8 = 0x17;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PREFETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
    pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
    pub const READ_16: u8 = 0x88;
    pub const COMPARE_AND_WRITE: u8 = 0x89;
    pub const WRITE_16: u8 = 0x8a;
    pub const ORWRITE_16: u8 = 0x8b;
    pub const WRITE_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PREFETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;
}

/// Big-endian u16 from the first two bytes.
pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Big-endian u32 from the first four bytes.
pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Big-endian u64 from the first eight bytes.
pub fn be64(b: &[u8]) -> u64 {
    (u64::from(be32(b)) << 32) | u64::from(be32(&b[4..]))
}

/// The length in bytes of the CDB for an operation code's group.
pub fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 16,
    }
}

/// LBA, block count and the flags byte (byte 1) of a READ/WRITE-family CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rw {
    /// First logical block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// Byte 1 (RDPROTECT/WRPROTECT, DPO, FUA, BYTCHK...).
    pub flags: u8,
}

impl Rw {
    /// FUA bit.
    pub fn fua(&self) -> bool {
        self.flags & 0x08 != 0
    }
    /// The protection field (top three bits of byte 1).
    pub fn protect(&self) -> u8 {
        self.flags >> 5
    }
}

/// Decodes the LBA and transfer length of the 6/10/12/16-byte READ, WRITE,
/// VERIFY, WRITE SAME, PRE-FETCH and similar CDBs.
pub fn rw(c: &[u8]) -> Option<Rw> {
    if c.len() < cdb_len(*c.first()?) {
        return None;
    }
    Some(match c[0] >> 5 {
        0 => {
            let lba = (u64::from(c[1] & 0x1f) << 16) | (u64::from(c[2]) << 8) | u64::from(c[3]);
            let n = if c[4] == 0 { 256 } else { u64::from(c[4]) };
            Rw {
                lba,
                blocks: n,
                flags: 0,
            }
        }
        1 | 2 => Rw {
            lba: u64::from(be32(&c[2..])),
            blocks: u64::from(be16(&c[7..])),
            flags: c[1],
        },
        5 => Rw {
            lba: u64::from(be32(&c[2..])),
            blocks: u64::from(be32(&c[6..])),
            flags: c[1],
        },
        _ => Rw {
            lba: be64(&c[2..]),
            blocks: u64::from(be32(&c[10..])),
            flags: c[1],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rw_cdbs() {
        assert_eq!(
            rw(&[0x08, 0x01, 0x02, 0x03, 0, 0]),
            Some(Rw {
                lba: 0x10203,
                blocks: 256,
                flags: 0
            })
        );
        assert_eq!(
            rw(&[0x28, 0x08, 0, 0, 0, 9, 0, 0, 2, 0]).map(|r| (r.lba, r.blocks, r.fua())),
            Some((9, 2, true))
        );
        assert_eq!(rw(&[0x28, 0]), None);
        let mut c16 = [0u8; 16];
        c16[0] = 0x88;
        c16[9] = 5;
        c16[13] = 1;
        assert_eq!(rw(&c16).map(|r| (r.lba, r.blocks)), Some((5, 1)));
    }
}
