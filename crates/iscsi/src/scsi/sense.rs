//! Sense data (SPC-4 4.5): fixed and descriptor formats, and the sense
//! conditions the block commands report.

/// SCSI status bytes used by the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Status {
    Good = 0x00,
    CheckCondition = 0x02,
    ConditionMet = 0x04,
    Busy = 0x08,
    ReservationConflict = 0x18,
    TaskSetFull = 0x28,
    TaskAborted = 0x40,
}

/// Sense keys.
#[allow(missing_docs)]
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

/// A sense condition: key, additional sense code and qualifier, and the
/// optional INFORMATION field and field pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// INFORMATION field (e.g. offset of a miscompare), when valid.
    pub info: Option<u64>,
    /// Sense-key specific field pointer: (in CDB?, byte, bit).
    pub field: Option<(bool, u16, Option<u8>)>,
}

#[allow(missing_docs)]
impl Sense {
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            info: None,
            field: None,
        }
    }
    pub const fn invalid_opcode() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x20, 0x00)
    }
    /// INVALID FIELD IN CDB pointing at byte `byte`.
    pub const fn invalid_field_in_cdb(byte: u16) -> Sense {
        let mut s = Sense::new(key::ILLEGAL_REQUEST, 0x24, 0x00);
        s.field = Some((true, byte, None));
        s
    }
    pub const fn invalid_field_in_param(byte: u16) -> Sense {
        let mut s = Sense::new(key::ILLEGAL_REQUEST, 0x26, 0x00);
        s.field = Some((false, byte, None));
        s
    }
    pub const fn param_list_length() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x1a, 0x00)
    }
    pub const fn lba_out_of_range() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x21, 0x00)
    }
    pub const fn lun_not_supported() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x25, 0x00)
    }
    pub const fn saving_not_supported() -> Sense {
        Sense::new(key::ILLEGAL_REQUEST, 0x39, 0x00)
    }
    pub const fn write_protected() -> Sense {
        Sense::new(key::DATA_PROTECT, 0x27, 0x00)
    }
    pub const fn miscompare(offset: u64) -> Sense {
        let mut s = Sense::new(key::MISCOMPARE, 0x1d, 0x00);
        s.info = Some(offset);
        s
    }
    pub const fn medium_error_read() -> Sense {
        Sense::new(key::MEDIUM_ERROR, 0x11, 0x00)
    }
    pub const fn medium_error_write() -> Sense {
        Sense::new(key::MEDIUM_ERROR, 0x0c, 0x00)
    }
    pub const fn power_on_reset() -> Sense {
        Sense::new(key::UNIT_ATTENTION, 0x29, 0x00)
    }
    pub const fn no_sense() -> Sense {
        Sense::new(key::NO_SENSE, 0, 0)
    }

    /// Fixed-format sense data (18 bytes).
    pub fn fixed(&self) -> Vec<u8> {
        let mut b = vec![0u8; 18];
        b[0] = 0x70;
        b[2] = self.key & 0x0f;
        if let Some(info) = self.info {
            b[0] |= 0x80;
            let v = u32::try_from(info).unwrap_or(u32::MAX);
            b[3..7].copy_from_slice(&v.to_be_bytes());
        }
        b[7] = 10;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some((cd, byte, bit)) = self.field {
            b[15] = 0x80 | if cd { 0x40 } else { 0 } | bit.map_or(0, |v| 0x08 | (v & 7));
            b[16..18].copy_from_slice(&byte.to_be_bytes());
        }
        b
    }

    /// Descriptor-format sense data (with an information descriptor when
    /// the INFORMATION field is valid).
    pub fn descriptor(&self) -> Vec<u8> {
        let mut b = vec![0x72, self.key & 0x0f, self.asc, self.ascq, 0, 0, 0, 0];
        if let Some(info) = self.info {
            b.extend_from_slice(&[0x00, 0x0a, 0x80, 0]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some((cd, byte, bit)) = self.field {
            b.extend_from_slice(&[0x02, 0x06, 0, 0]);
            b.push(0x80 | if cd { 0x40 } else { 0 } | bit.map_or(0, |v| 0x08 | (v & 7)));
            b.extend_from_slice(&byte.to_be_bytes());
            b.push(0);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_layout() {
        let s = Sense::invalid_field_in_cdb(2).fixed();
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], key::ILLEGAL_REQUEST);
        assert_eq!((s[12], s[13]), (0x24, 0));
        assert_eq!(s[15], 0xc0);
        assert_eq!(s[17], 2);
        let m = Sense::miscompare(7).fixed();
        assert_eq!(m[0], 0xf0);
        assert_eq!(&m[3..7], &[0, 0, 0, 7]);
    }

    #[test]
    fn descriptor_format_layout() {
        let d = Sense::miscompare(9).descriptor();
        assert_eq!(d[0], 0x72);
        assert_eq!(usize::from(d[7]), d.len() - 8);
        assert_eq!(d[8], 0);
    }
}
