//! SCSI-3 persistent reservations (SPC-4 6.15, 6.16) as calls on a [`Lun`]:
//! the commands a cluster fences shared disks with. A RESERVATION
//! CONFLICT comes back as [`IscsiError::ReservationConflict`], never retried.

use super::cdb;
use super::lun::Lun;
use super::IscsiError;

/// Reservation types (SPC-4 table 171).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationType {
    /// Only the holder writes; all read.
    WriteExclusive = 1,
    /// Only the holder reads or writes.
    ExclusiveAccess = 3,
    /// Registered initiators write.
    WriteExclusiveRegistrantsOnly = 5,
    /// Registered initiators read and write.
    ExclusiveAccessRegistrantsOnly = 6,
    /// Every registrant is a holder (writes).
    WriteExclusiveAllRegistrants = 7,
    /// Every registrant is a holder (all access).
    ExclusiveAccessAllRegistrants = 8,
}

impl ReservationType {
    /// The type from its code.
    pub fn from_code(code: u8) -> Option<ReservationType> {
        use ReservationType::*;
        Some(match code {
            1 => WriteExclusive,
            3 => ExclusiveAccess,
            5 => WriteExclusiveRegistrantsOnly,
            6 => ExclusiveAccessRegistrantsOnly,
            7 => WriteExclusiveAllRegistrants,
            8 => ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }
}

/// The current reservation, as READ RESERVATION reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The holder's key.
    pub key: u64,
    /// Its type.
    pub kind: ReservationType,
}

mod action {
    pub const REGISTER: u8 = 0;
    pub const RESERVE: u8 = 1;
    pub const RELEASE: u8 = 2;
    pub const CLEAR: u8 = 3;
    pub const PREEMPT: u8 = 4;
    pub const PREEMPT_AND_ABORT: u8 = 5;
    pub const REGISTER_AND_IGNORE: u8 = 6;
    pub const READ_KEYS: u8 = 0;
    pub const READ_RESERVATION: u8 = 1;
}

impl Lun {
    fn pr_out(&self, sa: u8, kind: u8, key: u64, sa_key: u64) -> Result<(), IscsiError> {
        let (c, p) = cdb::pr_out(sa, kind, key, sa_key);
        self.exec(c, &p, 0).map(|_| ())
    }

    /// REGISTER: replaces our key `old` (0 when unregistered) by `new`
    /// (0 unregisters).
    pub fn pr_register(&self, old: u64, new: u64) -> Result<(), IscsiError> {
        self.pr_out(action::REGISTER, 0, old, new)
    }

    /// REGISTER AND IGNORE EXISTING KEY: sets our key to `new` whatever it was.
    pub fn pr_register_and_ignore(&self, new: u64) -> Result<(), IscsiError> {
        self.pr_out(action::REGISTER_AND_IGNORE, 0, 0, new)
    }

    /// RESERVE with our registered `key`.
    pub fn pr_reserve(&self, key: u64, kind: ReservationType) -> Result<(), IscsiError> {
        self.pr_out(action::RESERVE, kind as u8, key, 0)
    }

    /// RELEASE our reservation.
    pub fn pr_release(&self, key: u64, kind: ReservationType) -> Result<(), IscsiError> {
        self.pr_out(action::RELEASE, kind as u8, key, 0)
    }

    /// CLEAR every registration and the reservation.
    pub fn pr_clear(&self, key: u64) -> Result<(), IscsiError> {
        self.pr_out(action::CLEAR, 0, key, 0)
    }

    /// PREEMPT: removes `victim`'s registrations (and takes its reservation).
    pub fn pr_preempt(
        &self,
        key: u64,
        victim: u64,
        kind: ReservationType,
    ) -> Result<(), IscsiError> {
        self.pr_out(action::PREEMPT, kind as u8, key, victim)
    }

    /// PREEMPT AND ABORT: as preempt, and the target aborts the victim's
    /// outstanding commands.
    pub fn pr_preempt_and_abort(
        &self,
        key: u64,
        victim: u64,
        kind: ReservationType,
    ) -> Result<(), IscsiError> {
        self.pr_out(action::PREEMPT_AND_ABORT, kind as u8, key, victim)
    }

    /// READ KEYS: (PR generation, registered keys).
    pub fn pr_read_keys(&self) -> Result<(u32, Vec<u64>), IscsiError> {
        let r = self.exec(cdb::pr_in(action::READ_KEYS, 4096), &[], 4096)?;
        Ok(parse_keys(&r.data))
    }

    /// READ RESERVATION: the reservation, if any.
    pub fn pr_read_reservation(&self) -> Result<Option<Reservation>, IscsiError> {
        let r = self.exec(cdb::pr_in(action::READ_RESERVATION, 64), &[], 64)?;
        Ok(parse_reservation(&r.data))
    }
}

fn parse_keys(d: &[u8]) -> (u32, Vec<u64>) {
    let word = |at: usize| {
        d.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    };
    let len = word(4) as usize;
    let keys = d
        .get(8..(8 + len).min(d.len()))
        .unwrap_or(&[])
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
        .collect();
    (word(0), keys)
}

fn parse_reservation(d: &[u8]) -> Option<Reservation> {
    let len = u32::from_be_bytes(d.get(4..8)?.try_into().ok()?);
    if len < 16 {
        return None;
    }
    let key = u64::from_be_bytes(d.get(8..16)?.try_into().ok()?);
    let kind = ReservationType::from_code(d.get(21)? & 0x0f)?;
    Some(Reservation { key, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_reservation_parse() {
        let mut d = vec![0, 0, 0, 7, 0, 0, 0, 16];
        d.extend_from_slice(&1u64.to_be_bytes());
        d.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(parse_keys(&d), (7, vec![1, 2]));
        assert_eq!(parse_reservation(&[0, 0, 0, 1, 0, 0, 0, 0]), None);
        let mut r = vec![0, 0, 0, 1, 0, 0, 0, 16];
        r.extend_from_slice(&9u64.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 0]);
        assert_eq!(
            parse_reservation(&r),
            Some(Reservation {
                key: 9,
                kind: ReservationType::ExclusiveAccess
            })
        );
    }
}
