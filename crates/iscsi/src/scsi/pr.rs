//! Reservations: SPC-2 RESERVE/RELEASE(6) and SPC-4 persistent
//! reservations (filled in by a later change).

use super::{LogicalUnit, Request, Response, Sense};
use std::path::Path;

/// Persistent reservation state of one logical unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrState {
    /// Generation, bumped by every registration change.
    pub generation: u32,
}

impl PrState {
    /// Loads persisted state; a missing or unreadable file means none.
    pub fn load(_path: &Path) -> PrState {
        PrState::default()
    }
}

/// RESERVATION CONFLICT when another nexus holds a reservation that
/// forbids this command.
pub fn conflict(lu: &LogicalUnit, req: &Request<'_>) -> Option<Response> {
    let st = lu.lock();
    let holder = st.reserved_by.as_ref()?;
    if holder == req.nexus {
        return None;
    }
    use super::cdb::op;
    match req.cdb[0] {
        op::INQUIRY
        | op::REPORT_LUNS
        | op::REQUEST_SENSE
        | op::RELEASE_6
        | op::PERSISTENT_RESERVE_IN
        | op::PERSISTENT_RESERVE_OUT => None,
        op::MAINTENANCE_IN => None,
        _ => Some(Response::conflict()),
    }
}

/// PERSISTENT RESERVE IN.
pub fn reserve_in(_lu: &LogicalUnit, _req: &Request<'_>) -> Response {
    Response::check(Sense::invalid_opcode())
}

/// PERSISTENT RESERVE OUT.
pub fn reserve_out(_lu: &LogicalUnit, _req: &Request<'_>) -> Response {
    Response::check(Sense::invalid_opcode())
}

/// RESERVE(6): the whole unit for this nexus.
pub fn reserve6(lu: &LogicalUnit, req: &Request<'_>) -> Response {
    let mut st = lu.lock();
    match &st.reserved_by {
        Some(h) if h != req.nexus => Response::conflict(),
        _ => {
            st.reserved_by = Some(req.nexus.clone());
            Response::good(Vec::new())
        }
    }
}

/// RELEASE(6): drops this nexus's reservation (a no-op otherwise).
pub fn release6(lu: &LogicalUnit, req: &Request<'_>) -> Response {
    let mut st = lu.lock();
    if st.reserved_by.as_ref() == Some(req.nexus) {
        st.reserved_by = None;
    }
    Response::good(Vec::new())
}
