//! Reservations: SPC-2 RESERVE/RELEASE(6) and SPC-4 persistent
//! reservations (PERSISTENT RESERVE IN and OUT, every reservation type),
//! with Activate Persist Through Power Loss kept in a checksummed file.

use super::cdb::{self, op};
use super::device::UnitState;
use super::sense::key;
use super::{LogicalUnit, Nexus, Request, Response, Sense};
use std::path::Path;
use tracing::warn;

/// Reservation types (SPC-4 table 169).
#[allow(missing_docs)]
pub mod kind {
    pub const WRITE_EXCLUSIVE: u8 = 1;
    pub const EXCLUSIVE_ACCESS: u8 = 3;
    pub const WRITE_EXCLUSIVE_RO: u8 = 5;
    pub const EXCLUSIVE_ACCESS_RO: u8 = 6;
    pub const WRITE_EXCLUSIVE_AR: u8 = 7;
    pub const EXCLUSIVE_ACCESS_AR: u8 = 8;
}

fn valid_kind(t: u8) -> bool {
    matches!(t, 1 | 3 | 5 | 6 | 7 | 8)
}

fn all_registrants(t: u8) -> bool {
    t == kind::WRITE_EXCLUSIVE_AR || t == kind::EXCLUSIVE_ACCESS_AR
}

fn registrants_type(t: u8) -> bool {
    matches!(t, 5..=8)
}

/// One registered I_T nexus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Initiator port name (`iqn...,i,0x<ISID>`).
    pub initiator_port: String,
    /// Relative target port identifier.
    pub rel_port: u16,
    /// The reservation key.
    pub key: u64,
}

impl Registration {
    fn nexus(&self) -> Nexus {
        Nexus {
            initiator_port: self.initiator_port.clone(),
            rel_port: self.rel_port,
        }
    }
    fn is(&self, n: &Nexus) -> bool {
        self.initiator_port == n.initiator_port && self.rel_port == n.rel_port
    }
}

/// The persistent reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Holder (for all-registrants types: the registrant that reserved).
    pub holder: String,
    /// Holder's relative port.
    pub rel_port: u16,
    /// Reservation type.
    pub kind: u8,
}

/// Persistent reservation state of one logical unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrState {
    /// PRgeneration, bumped by every registration change.
    pub generation: u32,
    /// Registered nexuses.
    pub registrations: Vec<Registration>,
    /// The reservation, if any.
    pub reservation: Option<Reservation>,
    /// Activate Persist Through Power Loss.
    pub aptpl: bool,
}

const MAGIC: &str = "ferry-pr v1";
const MAX_FILE: u64 = 1 << 20;

/// Why a persisted reservation file was not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrFileError {
    /// Not our format or version.
    #[error("not a {MAGIC} file")]
    Magic,
    /// The checksum does not match the content.
    #[error("checksum mismatch")]
    Checksum,
    /// A line could not be parsed.
    #[error("malformed line {0}")]
    Line(usize),
    /// Larger than any real state.
    #[error("file larger than {MAX_FILE} bytes")]
    TooLarge,
}

impl PrState {
    /// Loads persisted state; a missing file means none, a damaged one is
    /// logged and ignored.
    pub fn load(path: &Path) -> PrState {
        match std::fs::metadata(path) {
            Err(_) => return PrState::default(),
            Ok(m) if m.len() > MAX_FILE => {
                warn!(path = %path.display(), error = %PrFileError::TooLarge, "ignoring reservation file");
                return PrState::default();
            }
            Ok(_) => {}
        }
        match std::fs::read_to_string(path).map(|t| PrState::decode(&t)) {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(path = %path.display(), error = %e, "ignoring reservation file");
                PrState::default()
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read reservation file");
                PrState::default()
            }
        }
    }

    /// The file form: a versioned list of lines closed by a CRC32C.
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC}\ngeneration {}\n", self.generation);
        for r in &self.registrations {
            s.push_str(&format!(
                "reg {:016x} {} {}\n",
                r.key, r.rel_port, r.initiator_port
            ));
        }
        if let Some(r) = &self.reservation {
            s.push_str(&format!("resv {} {} {}\n", r.kind, r.rel_port, r.holder));
        }
        let crc = crate::pdu::digest::crc32c(s.as_bytes());
        s.push_str(&format!("crc {crc:08x}\n"));
        s
    }

    /// Parses [`PrState::encode`]'s output.
    pub fn decode(text: &str) -> Result<PrState, PrFileError> {
        let body_end = text.rfind("crc ").ok_or(PrFileError::Checksum)?;
        let (body, tail) = text.split_at(body_end);
        let crc = u32::from_str_radix(tail.trim_start_matches("crc ").trim(), 16)
            .map_err(|_| PrFileError::Checksum)?;
        if crc != crate::pdu::digest::crc32c(body.as_bytes()) {
            return Err(PrFileError::Checksum);
        }
        let mut lines = body.lines().enumerate();
        if lines.next().map(|(_, l)| l) != Some(MAGIC) {
            return Err(PrFileError::Magic);
        }
        let mut st = PrState {
            aptpl: true,
            ..Default::default()
        };
        for (i, line) in lines {
            let mut f = line.splitn(4, ' ');
            let bad = || PrFileError::Line(i + 1);
            match f.next() {
                Some("generation") => {
                    st.generation = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?
                }
                Some("reg") => {
                    let key = f
                        .next()
                        .and_then(|v| u64::from_str_radix(v, 16).ok())
                        .ok_or_else(bad)?;
                    let rel_port = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                    let initiator_port = f.next().ok_or_else(bad)?.to_string();
                    st.registrations.push(Registration {
                        initiator_port,
                        rel_port,
                        key,
                    });
                }
                Some("resv") => {
                    let kind = f
                        .next()
                        .and_then(|v| v.parse().ok())
                        .filter(|k| valid_kind(*k))
                        .ok_or_else(bad)?;
                    let rel_port = f.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                    let holder = f.next().ok_or_else(bad)?.to_string();
                    st.reservation = Some(Reservation {
                        holder,
                        rel_port,
                        kind,
                    });
                }
                _ => return Err(bad()),
            }
        }
        Ok(st)
    }

    fn reg(&self, n: &Nexus) -> Option<&Registration> {
        self.registrations.iter().find(|r| r.is(n))
    }

    /// Whether `n` holds the reservation.
    fn holds(&self, n: &Nexus) -> bool {
        match &self.reservation {
            Some(r) if all_registrants(r.kind) => self.reg(n).is_some(),
            Some(r) => r.holder == n.initiator_port && r.rel_port == n.rel_port,
            None => false,
        }
    }

    fn holder_key(&self) -> Option<u64> {
        let r = self.reservation.as_ref()?;
        self.registrations
            .iter()
            .find(|g| g.initiator_port == r.holder && g.rel_port == r.rel_port)
            .map(|g| g.key)
    }
}

fn persist(lu: &LogicalUnit, st: &PrState) {
    let Some(path) = &lu.pr_file else { return };
    if !st.aptpl {
        let _ = std::fs::remove_file(path);
        return;
    }
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(st.encode().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        warn!(path = %path.display(), error = %e, "cannot persist reservations");
    }
}

/// Whether a command only reads (allowed under Write Exclusive).
fn reads_only(opcode: u8, c: &[u8]) -> bool {
    matches!(
        opcode,
        op::READ_6
            | op::READ_10
            | op::READ_12
            | op::READ_16
            | op::VERIFY_10
            | op::VERIFY_12
            | op::VERIFY_16
            | op::MODE_SENSE_6
            | op::MODE_SENSE_10
            | op::PREFETCH_10
            | op::PREFETCH_16
    ) || (opcode == op::SERVICE_ACTION_IN_16 && c.get(1).is_some_and(|b| b & 0x1f == 0x12))
}

/// Commands no reservation blocks.
fn always_allowed(opcode: u8, c: &[u8]) -> bool {
    matches!(
        opcode,
        op::INQUIRY
            | op::REPORT_LUNS
            | op::REQUEST_SENSE
            | op::TEST_UNIT_READY
            | op::READ_CAPACITY_10
            | op::MAINTENANCE_IN
            | op::PERSISTENT_RESERVE_IN
            | op::PERSISTENT_RESERVE_OUT
    ) || (opcode == op::SERVICE_ACTION_IN_16 && c.get(1).is_some_and(|b| b & 0x1f == 0x10))
}

/// RESERVATION CONFLICT when a reservation held by another nexus forbids
/// this command.
pub fn conflict(lu: &LogicalUnit, req: &Request<'_>) -> Option<Response> {
    let st = lu.lock();
    let opcode = req.cdb[0];
    if let Some(holder) = &st.reserved_by {
        if holder != req.nexus
            && !matches!(
                opcode,
                op::INQUIRY
                    | op::REPORT_LUNS
                    | op::REQUEST_SENSE
                    | op::RELEASE_6
                    | op::MAINTENANCE_IN
            )
        {
            return Some(Response::conflict());
        }
    }
    let pr = &st.pr;
    let resv = pr.reservation.as_ref()?;
    if matches!(opcode, op::RESERVE_6 | op::RELEASE_6) {
        return Some(Response::conflict());
    }
    if always_allowed(opcode, req.cdb) || pr.holds(req.nexus) {
        return None;
    }
    let registered = pr.reg(req.nexus).is_some();
    let allowed = match resv.kind {
        kind::WRITE_EXCLUSIVE => reads_only(opcode, req.cdb),
        kind::EXCLUSIVE_ACCESS => false,
        kind::WRITE_EXCLUSIVE_RO | kind::WRITE_EXCLUSIVE_AR => {
            registered || reads_only(opcode, req.cdb)
        }
        _ => registered,
    };
    (!allowed).then(Response::conflict)
}

/// PERSISTENT RESERVE IN: READ KEYS, READ RESERVATION, REPORT
/// CAPABILITIES, READ FULL STATUS.
pub fn reserve_in(lu: &LogicalUnit, req: &Request<'_>) -> Response {
    let c = req.cdb;
    let alloc = usize::from(cdb::be16(&c[7..]));
    let st = lu.lock();
    let pr = &st.pr;
    let mut out = Vec::new();
    out.extend_from_slice(&pr.generation.to_be_bytes());
    match c[1] & 0x1f {
        0 => {
            out.extend_from_slice(&((pr.registrations.len() * 8) as u32).to_be_bytes());
            for r in &pr.registrations {
                out.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        1 => match &pr.reservation {
            Some(r) => {
                out.extend_from_slice(&16u32.to_be_bytes());
                let key = if all_registrants(r.kind) {
                    0
                } else {
                    pr.holder_key().unwrap_or(0)
                };
                out.extend_from_slice(&key.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0, 0, r.kind & 0x0f, 0, 0]);
            }
            None => out.extend_from_slice(&0u32.to_be_bytes()),
        },
        2 => {
            out.clear();
            out.extend_from_slice(&[0, 8]);
            // CRH, PTPL_C; TMV with "allow commands" 0, PTPL_A.
            out.push(0x10 | 0x01);
            out.push(0x80 | u8::from(pr.aptpl));
            out.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
            out.push(0x01);
            out.extend_from_slice(&[0, 0]);
        }
        3 => {
            let mut body = Vec::new();
            for r in &pr.registrations {
                let holder = pr.holds(&r.nexus());
                body.extend_from_slice(&r.key.to_be_bytes());
                body.extend_from_slice(&[0; 4]);
                body.push(u8::from(holder));
                body.push(if holder {
                    pr.reservation.as_ref().map_or(0, |v| v.kind)
                } else {
                    0
                });
                body.extend_from_slice(&[0; 4]);
                body.extend_from_slice(&r.rel_port.to_be_bytes());
                let tid = transport_id(&r.initiator_port);
                body.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                body.extend_from_slice(&tid);
            }
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
        }
        _ => return Response::check(Sense::invalid_field_in_cdb(1)),
    }
    Response::good(super::truncate(out, alloc))
}

/// An iSCSI TransportID for an initiator port (format 01: name,i,0xISID).
fn transport_id(port: &str) -> Vec<u8> {
    let mut name = port.as_bytes().to_vec();
    name.push(0);
    while !name.len().is_multiple_of(4) {
        name.push(0);
    }
    let mut t = vec![0x45, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

fn ua_to(st: &mut UnitState, who: &[Nexus], asc: u8, ascq: u8) {
    for n in who {
        st.unit_attention
            .push((n.clone(), Sense::new(key::UNIT_ATTENTION, asc, ascq)));
    }
}

/// PERSISTENT RESERVE OUT: every service action.
pub fn reserve_out(lu: &LogicalUnit, req: &Request<'_>) -> Response {
    let c = req.cdb;
    let len = cdb::be32(&c[5..]) as usize;
    let sa = c[1] & 0x1f;
    let scope = c[2] >> 4;
    let rtype = c[2] & 0x0f;
    let r = |resp: Response| resp.with_data_out_len(len);
    if sa > 7 {
        return r(Response::check(Sense::invalid_field_in_cdb(1)));
    }
    if sa == 7 {
        return r(register_and_move(lu, req, len, scope, rtype));
    }
    if len != 24 {
        return r(Response::check(Sense::param_list_length()));
    }
    let Some(p) = req.data_out.get(..24) else {
        return r(Response::check(Sense::param_list_length()));
    };
    let key = cdb::be64(p);
    let sa_key = cdb::be64(&p[8..]);
    let flags = p[20];
    if flags & 0x0c != 0 {
        // SPEC_I_PT and ALL_TG_PT are not supported.
        return r(Response::check(Sense::invalid_field_in_param(20)));
    }
    let aptpl = flags & 0x01 != 0;
    let me = req.nexus;
    let mut guard = lu.lock();
    let st = &mut *guard;
    let registered_key = st.pr.reg(me).map(|g| g.key);
    let resp = match sa {
        0 | 6 => {
            match registered_key {
                None => {
                    if sa == 0 && key != 0 {
                        return r(Response::conflict());
                    }
                    if sa_key != 0 {
                        st.pr.registrations.push(Registration {
                            initiator_port: me.initiator_port.clone(),
                            rel_port: me.rel_port,
                            key: sa_key,
                        });
                    }
                }
                Some(k) => {
                    if sa == 0 && k != key {
                        return r(Response::conflict());
                    }
                    if sa_key == 0 {
                        unregister(st, me);
                    } else if let Some(g) = st.pr.registrations.iter_mut().find(|g| g.is(me)) {
                        g.key = sa_key;
                    }
                }
            }
            st.pr.generation = st.pr.generation.wrapping_add(1);
            st.pr.aptpl = aptpl;
            Response::good(Vec::new())
        }
        1..=5 => {
            if registered_key != Some(key) {
                return r(Response::conflict());
            }
            match sa {
                1 => {
                    if scope != 0 {
                        return r(Response::check(Sense::invalid_field_in_cdb(2)));
                    }
                    if !valid_kind(rtype) {
                        return r(Response::check(Sense::invalid_field_in_cdb(2)));
                    }
                    match &st.pr.reservation {
                        Some(v) if st.pr.holds(me) && v.kind == rtype => Response::good(Vec::new()),
                        Some(_) => Response::conflict(),
                        None => {
                            st.pr.reservation = Some(Reservation {
                                holder: me.initiator_port.clone(),
                                rel_port: me.rel_port,
                                kind: rtype,
                            });
                            Response::good(Vec::new())
                        }
                    }
                }
                2 => match st.pr.reservation.clone() {
                    Some(v) if st.pr.holds(me) => {
                        if v.kind != rtype || scope != 0 {
                            return r(Response::check(Sense::new(
                                key::ILLEGAL_REQUEST,
                                0x26,
                                0x04,
                            )));
                        }
                        release(st, me, v.kind);
                        Response::good(Vec::new())
                    }
                    _ => Response::good(Vec::new()),
                },
                3 => {
                    let others = registrants_but(st, me);
                    st.pr.registrations.clear();
                    st.pr.reservation = None;
                    st.pr.generation = st.pr.generation.wrapping_add(1);
                    ua_to(st, &others, 0x2a, 0x03);
                    Response::good(Vec::new())
                }
                _ => preempt(st, me, sa_key, scope, rtype),
            }
        }
        _ => Response::check(Sense::invalid_field_in_cdb(1)),
    };
    let pr = st.pr.clone();
    drop(guard);
    if resp.status == super::Status::Good {
        persist(lu, &pr);
    }
    r(resp)
}

/// REGISTER AND MOVE: the reservation holder registers another initiator
/// port (named by a TransportID) with the service action key and hands it
/// the reservation, with the CDB's type; with UNREG it drops its own
/// registration too. How a cluster hands a disk's reservation to the host
/// that takes over without a window where nobody holds it.
fn register_and_move(
    lu: &LogicalUnit,
    req: &Request<'_>,
    len: usize,
    scope: u8,
    rtype: u8,
) -> Response {
    if len < 24 {
        return Response::check(Sense::param_list_length());
    }
    let Some(p) = req.data_out.get(..len) else {
        return Response::check(Sense::param_list_length());
    };
    let key = cdb::be64(p);
    let sa_key = cdb::be64(&p[8..]);
    let unreg = p[17] & 0x02 != 0;
    let aptpl = p[17] & 0x01 != 0;
    let dest_rel_port = cdb::be16(&p[18..]);
    let tid_len = cdb::be32(&p[20..]) as usize;
    let Some(tid) = p.get(24..24 + tid_len) else {
        return Response::check(Sense::param_list_length());
    };
    let me = req.nexus;
    let mut guard = lu.lock();
    let st = &mut *guard;
    if st.pr.reg(me).map(|g| g.key) != Some(key) {
        return Response::conflict();
    }
    match &st.pr.reservation {
        Some(v) if st.pr.holds(me) && !all_registrants(v.kind) => {}
        _ => return Response::conflict(),
    }
    if scope != 0 || !valid_kind(rtype) {
        return Response::check(Sense::invalid_field_in_cdb(2));
    }
    if sa_key == 0 {
        return Response::check(Sense::invalid_field_in_param(8));
    }
    if dest_rel_port != me.rel_port {
        return Response::check(Sense::invalid_field_in_param(18));
    }
    let dest = match parse_transport_id(tid) {
        Ok(port) => Nexus {
            initiator_port: port,
            rel_port: dest_rel_port,
        },
        Err(at) => return Response::check(Sense::invalid_field_in_param(24 + at)),
    };
    if dest.initiator_port.eq_ignore_ascii_case(&me.initiator_port) {
        return Response::check(Sense::invalid_field_in_param(24));
    }
    let same = |g: &Registration| {
        g.rel_port == dest.rel_port && g.initiator_port.eq_ignore_ascii_case(&dest.initiator_port)
    };
    let holder = match st.pr.registrations.iter_mut().find(|g| same(g)) {
        Some(g) => {
            g.key = sa_key;
            g.nexus()
        }
        None => {
            st.pr.registrations.push(Registration {
                initiator_port: dest.initiator_port.clone(),
                rel_port: dest.rel_port,
                key: sa_key,
            });
            dest
        }
    };
    st.pr.reservation = Some(Reservation {
        holder: holder.initiator_port,
        rel_port: holder.rel_port,
        kind: rtype,
    });
    if unreg {
        st.pr.registrations.retain(|g| !g.is(me));
    }
    st.pr.generation = st.pr.generation.wrapping_add(1);
    st.pr.aptpl = aptpl;
    let pr = st.pr.clone();
    drop(guard);
    persist(lu, &pr);
    Response::good(Vec::new())
}

/// The initiator port an iSCSI TransportID names (format 01:
/// `name,i,0xISID`, the ISID in lower case), or the offset of the byte
/// that is wrong.
fn parse_transport_id(t: &[u8]) -> Result<String, u16> {
    if t.len() < 4 {
        return Err(0);
    }
    if t[0] != 0x45 {
        // Another protocol, or format 00 (a name without an ISID), which
        // names no single initiator port.
        return Err(0);
    }
    let add = usize::from(cdb::be16(&t[2..]));
    let body = t.get(4..4 + add).ok_or(2u16)?;
    let end = body.iter().position(|&b| b == 0).ok_or(2u16)?;
    let text = std::str::from_utf8(&body[..end]).map_err(|_| 4u16)?;
    let split = text.to_ascii_lowercase().find(",i,0x").ok_or(4u16)?;
    let (name, isid) = (&text[..split], &text[split + 5..]);
    if name.is_empty() || isid.len() != 12 || !isid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(4);
    }
    Ok(format!("{name},i,0x{}", isid.to_ascii_lowercase()))
}

/// Removes `me`'s registration; a reservation it held goes too (for the
/// all-registrants types only with the last registrant).
fn unregister(st: &mut UnitState, me: &Nexus) {
    let held = st.pr.holds(me);
    st.pr.registrations.retain(|g| !g.is(me));
    if let Some(v) = st.pr.reservation.clone() {
        if all_registrants(v.kind) {
            if st.pr.registrations.is_empty() {
                st.pr.reservation = None;
            }
        } else if held {
            release(st, me, v.kind);
        }
    }
}

/// Every registered nexus but `me`: who hears of what `me` did.
fn registrants_but(st: &UnitState, me: &Nexus) -> Vec<Nexus> {
    st.pr
        .registrations
        .iter()
        .filter(|g| !g.is(me))
        .map(Registration::nexus)
        .collect()
}

fn release(st: &mut UnitState, me: &Nexus, kind: u8) {
    st.pr.reservation = None;
    if registrants_type(kind) {
        let others = registrants_but(st, me);
        ua_to(st, &others, 0x2a, 0x04);
    }
}

fn preempt(st: &mut UnitState, me: &Nexus, sa_key: u64, scope: u8, rtype: u8) -> Response {
    let resv = st.pr.reservation.clone();
    let remove_matching = |st: &mut UnitState, k: u64, keep_me: bool| -> Vec<Nexus> {
        let gone: Vec<Nexus> = st
            .pr
            .registrations
            .iter()
            .filter(|g| g.key == k && !(keep_me && g.is(me)))
            .map(Registration::nexus)
            .collect();
        st.pr
            .registrations
            .retain(|g| !(g.key == k && !(keep_me && g.is(me))));
        gone
    };
    let gone = match resv {
        Some(v) if all_registrants(v.kind) && sa_key == 0 => {
            if scope != 0 || !valid_kind(rtype) {
                return Response::check(Sense::invalid_field_in_cdb(2));
            }
            let gone = registrants_but(st, me);
            st.pr.registrations.retain(|g| g.is(me));
            st.pr.reservation = Some(Reservation {
                holder: me.initiator_port.clone(),
                rel_port: me.rel_port,
                kind: rtype,
            });
            gone
        }
        Some(v) if !all_registrants(v.kind) && st.pr.holder_key() == Some(sa_key) => {
            if scope != 0 || !valid_kind(rtype) {
                return Response::check(Sense::invalid_field_in_cdb(2));
            }
            let gone = remove_matching(st, sa_key, true);
            st.pr.reservation = Some(Reservation {
                holder: me.initiator_port.clone(),
                rel_port: me.rel_port,
                kind: rtype,
            });
            gone
        }
        _ => {
            if sa_key == 0 {
                return Response::check(Sense::invalid_field_in_param(8));
            }
            let gone = remove_matching(st, sa_key, false);
            if gone.is_empty() {
                return Response::conflict();
            }
            if let Some(v) = &st.pr.reservation {
                if all_registrants(v.kind) && st.pr.registrations.is_empty() {
                    st.pr.reservation = None;
                }
            }
            gone
        }
    };
    st.pr.generation = st.pr.generation.wrapping_add(1);
    let others: Vec<Nexus> = gone.into_iter().filter(|n| n != me).collect();
    ua_to(st, &others, 0x2a, 0x05);
    Response::good(Vec::new())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_ids_name_one_initiator_port_or_the_bad_byte() {
        let port = "iqn.2026-01.dev.ferry:h2,i,0x80000000000A";
        assert_eq!(
            parse_transport_id(&transport_id(port)),
            Ok("iqn.2026-01.dev.ferry:h2,i,0x80000000000a".into())
        );
        let mut name_only = transport_id("iqn.x");
        name_only[0] = 0x05;
        assert_eq!(parse_transport_id(&name_only), Err(0));
        assert_eq!(parse_transport_id(&transport_id("iqn.x,i,0x12")), Err(4));
        assert_eq!(parse_transport_id(&transport_id("iqn.x")), Err(4));
        let mut truncated = transport_id(port);
        truncated.truncate(10);
        assert_eq!(parse_transport_id(&truncated), Err(2));
        assert_eq!(parse_transport_id(&[0x45]), Err(0));
    }

    #[test]
    fn file_round_trip_and_corruption() {
        let st = PrState {
            generation: 7,
            registrations: vec![Registration {
                initiator_port: "iqn.a,i,0x1".into(),
                rel_port: 1,
                key: 0xabc,
            }],
            reservation: Some(Reservation {
                holder: "iqn.a,i,0x1".into(),
                rel_port: 1,
                kind: 5,
            }),
            aptpl: true,
        };
        let text = st.encode();
        assert_eq!(PrState::decode(&text), Ok(st));
        let bad = text.replace("generation 7", "generation 8");
        assert_eq!(PrState::decode(&bad), Err(PrFileError::Checksum));
        assert_eq!(PrState::decode("junk"), Err(PrFileError::Checksum));
    }
}
