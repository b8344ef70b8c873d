//! One logical unit: its backend, identity and shared state, and the
//! dispatch of a CDB to the module that implements it.

use super::cdb::{self, op};
use super::pr::PrState;
use super::sense::Sense;
use super::{inquiry, io, mode, pr, Lun, Nexus, Request, Response};
use md5::{Digest, Md5};
use std::sync::Mutex;

/// Names that make a logical unit's identifiers unique and stable.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The target's IQN.
    pub target: String,
    /// The LUN number.
    pub lun: u64,
    /// Unit serial number (VPD 0x80), printable ASCII.
    pub serial: String,
    /// NAA locally-assigned designator (8 bytes) for VPD 0x83.
    pub naa: [u8; 8],
}

impl Identity {
    /// Derives the serial number and NAA designator from the target name
    /// and LUN number, so they survive restarts and differ between LUNs.
    pub fn derive(target: &str, lun: u64) -> Identity {
        let mut h = Md5::new();
        h.update(target.as_bytes());
        h.update(lun.to_be_bytes());
        let d = h.finalize();
        let mut naa = [0u8; 8];
        naa.copy_from_slice(&d[..8]);
        // NAA 3: locally assigned.
        naa[0] = 0x30 | (naa[0] & 0x0f);
        let serial = d[..8].iter().map(|b| format!("{b:02x}")).collect();
        Identity {
            target: target.to_string(),
            lun,
            serial,
            naa,
        }
    }
}

/// Mutable state shared by every nexus that reaches the unit.
#[derive(Debug, Default)]
pub struct UnitState {
    /// Persistent reservations and registrations.
    pub pr: PrState,
    /// SPC-2 RESERVE(6) holder.
    pub reserved_by: Option<Nexus>,
    /// Pending unit attentions per initiator port.
    pub unit_attention: Vec<(Nexus, Sense)>,
    /// Nexuses seen since start (each gets one POWER ON UA first).
    pub seen: Vec<Nexus>,
    /// Write cache enable, as MODE SELECT left it.
    pub wce: bool,
}

/// A logical unit: backend plus identity and state.
pub struct LogicalUnit {
    /// The storage.
    pub backend: Box<dyn Lun>,
    /// Stable names.
    pub ident: Identity,
    /// Where persistent reservations are kept across restarts (APTPL).
    pub pr_file: Option<std::path::PathBuf>,
    /// Shared mutable state.
    pub state: Mutex<UnitState>,
    /// Serialises COMPARE AND WRITE against other writes of that kind.
    pub caw_lock: Mutex<()>,
}

impl LogicalUnit {
    /// A unit over `backend`; loads persisted reservations from `pr_file`.
    pub fn new(
        backend: Box<dyn Lun>,
        ident: Identity,
        pr_file: Option<std::path::PathBuf>,
    ) -> LogicalUnit {
        let pr = pr_file.as_deref().map(PrState::load).unwrap_or_default();
        LogicalUnit {
            backend,
            ident,
            pr_file,
            state: Mutex::new(UnitState {
                pr,
                wce: true,
                ..Default::default()
            }),
            caw_lock: Mutex::new(()),
        }
    }

    /// Locks the shared state (a poisoned lock still holds valid data).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, UnitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one command.
    pub fn execute(&self, req: &Request<'_>) -> Response {
        let Some(&opcode) = req.cdb.first() else {
            return Response::check(Sense::invalid_opcode());
        };
        if req.cdb.len() < cdb::cdb_len(opcode) {
            return Response::check(Sense::invalid_field_in_cdb(0));
        }
        // Control byte: NACA and LINK are not supported.
        if let Some(ctl) = req.cdb.get(cdb::cdb_len(opcode) - 1) {
            if ctl & 0x05 != 0 && opcode != op::READ_6 && opcode != op::WRITE_6 {
                return Response::check(Sense::invalid_field_in_cdb(
                    cdb::cdb_len(opcode) as u16 - 1,
                ));
            }
        }
        if let Some(r) = self.pending_unit_attention(req) {
            return r;
        }
        if let Some(r) = pr::conflict(self, req) {
            return r;
        }
        let c = req.cdb;
        match opcode {
            op::TEST_UNIT_READY => Response::good(Vec::new()),
            op::REQUEST_SENSE => request_sense(c),
            op::INQUIRY => inquiry::inquiry(self, c),
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => mode::sense(self, c),
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => mode::select(self, c, req.data_out),
            op::START_STOP_UNIT => start_stop(c),
            op::PREVENT_ALLOW => prevent_allow(c),
            op::READ_CAPACITY_10 => self.read_capacity_10(c),
            op::SERVICE_ACTION_IN_16 => match c[1] & 0x1f {
                0x10 => self.read_capacity_16(c),
                0x12 => io::get_lba_status(self, c),
                _ => Response::check(Sense::invalid_field_in_cdb(1)),
            },
            op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16 => io::read(self, c),
            op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => {
                io::write(self, c, req.data_out)
            }
            op::WRITE_VERIFY_10 | op::WRITE_VERIFY_12 | op::WRITE_VERIFY_16 => {
                io::write_verify(self, c, req.data_out)
            }
            op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16 => io::verify(self, c, req.data_out),
            op::COMPARE_AND_WRITE => io::compare_and_write(self, c, req.data_out),
            op::ORWRITE_16 => io::orwrite(self, c, req.data_out),
            op::WRITE_SAME_10 | op::WRITE_SAME_16 => io::write_same(self, c, req.data_out),
            op::UNMAP => io::unmap(self, c, req.data_out),
            op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16 => io::sync_cache(self, c),
            op::PREFETCH_10 | op::PREFETCH_16 => io::prefetch(self, c),
            op::PERSISTENT_RESERVE_IN => pr::reserve_in(self, req),
            op::PERSISTENT_RESERVE_OUT => pr::reserve_out(self, req),
            op::RESERVE_6 => pr::reserve6(self, req),
            op::RELEASE_6 => pr::release6(self, req),
            op::MAINTENANCE_IN if c[1] & 0x1f == 0x0c => super::inquiry::report_opcodes(c),
            _ => Response::check(Sense::invalid_opcode()),
        }
    }

    /// Reports (and clears) one pending unit attention for this nexus,
    /// except to the commands SPC-4 lets through.
    fn pending_unit_attention(&self, req: &Request<'_>) -> Option<Response> {
        let opcode = req.cdb[0];
        let mut st = self.lock();
        if !st.seen.contains(req.nexus) {
            st.seen.push(req.nexus.clone());
            st.unit_attention
                .push((req.nexus.clone(), Sense::power_on_reset()));
        }
        if matches!(opcode, op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE) {
            return None;
        }
        let i = st.unit_attention.iter().position(|(n, _)| n == req.nexus)?;
        let (_, sense) = st.unit_attention.remove(i);
        Some(Response::check(sense))
    }

    /// Queues a unit attention for every nexus but `except`.
    pub fn raise_unit_attention(st: &mut UnitState, sense: Sense, except: Option<&Nexus>) {
        let targets: Vec<Nexus> = st
            .seen
            .iter()
            .filter(|n| Some(*n) != except)
            .cloned()
            .collect();
        for n in targets {
            st.unit_attention.push((n, sense));
        }
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        u64::from(self.backend.block_size())
    }

    fn read_capacity_10(&self, c: &[u8]) -> Response {
        let pmi = c[8] & 1 != 0;
        if !pmi && cdb::be32(&c[2..]) != 0 {
            return Response::check(Sense::invalid_field_in_cdb(2));
        }
        let last = self.backend.num_blocks().saturating_sub(1);
        let mut out = Vec::with_capacity(8);
        out.extend_from_slice(&u32::try_from(last).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&self.backend.block_size().to_be_bytes());
        Response::good(out)
    }

    fn read_capacity_16(&self, c: &[u8]) -> Response {
        let alloc = cdb::be32(&c[10..]) as usize;
        let mut out = vec![0u8; 32];
        out[..8].copy_from_slice(&self.backend.num_blocks().saturating_sub(1).to_be_bytes());
        out[8..12].copy_from_slice(&self.backend.block_size().to_be_bytes());
        // 4 KiB physical blocks (what a page-cached image file has).
        out[13] = 3;
        // LBPME and LBPRZ: thin provisioned, unmapped blocks read as zeros.
        out[14] = 0xc0;
        Response::good(super::truncate(out, alloc))
    }
}

fn request_sense(c: &[u8]) -> Response {
    let desc = c[1] & 1 != 0;
    let alloc = usize::from(c[4]);
    let s = Sense::no_sense();
    let data = if desc { s.descriptor() } else { s.fixed() };
    Response::good(super::truncate(data, alloc))
}

fn start_stop(c: &[u8]) -> Response {
    // Power conditions and LOEJ are accepted and have no effect on an image.
    if c[4] & 0xf0 > 0x30 && c[4] >> 4 != 0x0a && c[4] >> 4 != 0x0b {
        return Response::check(Sense::invalid_field_in_cdb(4));
    }
    Response::good(Vec::new())
}

fn prevent_allow(c: &[u8]) -> Response {
    if c[4] & 0x03 > 1 {
        return Response::check(Sense::invalid_field_in_cdb(4));
    }
    Response::good(Vec::new())
}
