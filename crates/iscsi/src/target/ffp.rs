//! The full feature phase of one connection, without I/O: PDUs in, PDUs
//! out. Orders commands by the session's CmdSN (shared with the session's
//! other connections), collects write data (immediate,
//! unsolicited, then R2T by R2T), runs SCSI commands on the target's LUNs
//! and returns Data-In with status, SCSI Responses, task management,
//! text (SendTargets), NOP and logout replies.

use super::registry::Registry;
use super::session::SessionCore;
use super::window::{Admit, Window};
use crate::login::params::{Answer, Params};
use crate::pdu::bhs::{self, Header};
use crate::pdu::text;
use crate::pdu::Pdu;
use crate::scsi::sense::{key, Sense, Status};
use crate::scsi::{self, LunMap, Request};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use tracing::{debug, info, warn};

/// Largest expected transfer length of one command.
pub const MAX_EDTL: u32 = 64 * 1024 * 1024;

const NO_TAG: u32 = 0xffff_ffff;

/// What the connection does after handling a PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Keep reading.
    Continue,
    /// Send what is queued, then close the connection.
    Close,
}

/// Where [`Ffp`] puts the PDUs it answers with, in sending order.
pub trait Replies {
    /// Queues one PDU.
    fn push(&mut self, pdu: Pdu);
    /// Queues the Data-In PDUs of one read: each header with the range of
    /// `data` it carries. A sender that writes the ranges straight from
    /// `data` (vectored) spares a copy per byte read; this default builds
    /// one PDU per range.
    fn push_data_in(&mut self, mut data: Vec<u8>, pieces: Vec<(bhs::DataIn, Range<usize>)>) {
        // One PDU carries it all (the usual case): hand the buffer over.
        let whole = pieces.len() == 1 && pieces.iter().all(|(_, r)| *r == (0..data.len()));
        for (h, r) in pieces {
            let payload = if whole {
                std::mem::take(&mut data)
            } else {
                data.get(r).map(<[u8]>::to_vec).unwrap_or_default()
            };
            self.push(Pdu::new(Header::DataIn(h), payload));
        }
    }
}

impl Replies for Vec<Pdu> {
    fn push(&mut self, pdu: Pdu) {
        Vec::push(self, pdu);
    }
}

/// Reject reasons (RFC 7143 11.17.1).
#[allow(missing_docs)]
pub mod reject {
    pub const DATA_DIGEST: u8 = 0x02;
    pub const SNACK: u8 = 0x03;
    pub const PROTOCOL: u8 = 0x04;
    pub const NOT_SUPPORTED: u8 = 0x05;
    pub const INVALID_FIELD: u8 = 0x09;
}

struct PendingWrite {
    lun: u64,
    write: bool,
    cdb: Vec<u8>,
    edtl: u32,
    buf: Vec<u8>,
    /// Waiting for the unsolicited Data-Out sequence to end.
    unsolicited: bool,
    /// The outstanding R2T: (TTT, end offset).
    r2t: Option<(u32, usize)>,
    r2t_sn: u32,
    data_sn: u32,
    pdus_sent: u32,
}

/// One connection's full feature phase.
pub struct Ffp {
    params: Params,
    window: Window<Pdu>,
    stat_sn: u32,
    luns: Option<LunMap>,
    session: Arc<SessionCore>,
    cid: u16,
    registry: Arc<Registry>,
    local_addr: String,
    pending: HashMap<u32, PendingWrite>,
    next_ttt: u32,
}

impl Ffp {
    /// Starts the full feature phase of connection `cid` of `session`
    /// after a successful login; `params` are the values this connection
    /// runs with, `stat_sn` its next StatSN.
    pub fn new(
        session: Arc<SessionCore>,
        cid: u16,
        params: Params,
        stat_sn: u32,
        registry: Arc<Registry>,
        local_addr: String,
    ) -> Ffp {
        let luns = session
            .target
            .as_ref()
            .and_then(|t| registry.targets.get(t))
            .map(|t| t.luns.clone());
        Ffp {
            params,
            window: Window::joining(session.numbering.clone()),
            stat_sn,
            luns,
            session,
            cid,
            registry,
            local_addr,
            pending: HashMap::new(),
            next_ttt: 1,
        }
    }

    /// The negotiated parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    fn next_stat_sn(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        s
    }

    fn exp_max(&self) -> (u32, u32) {
        let exp = self.window.exp_cmd_sn();
        (exp, super::window::max_cmd_sn(exp))
    }

    /// The session's command numbering (to watch for its advances).
    pub fn numbering(&self) -> &Arc<super::window::Numbering> {
        self.window.numbering()
    }

    /// Whether commands here wait for a CmdSN another connection of the
    /// session has not sent yet (see [`Ffp::run_released`]).
    pub fn holds_commands(&self) -> bool {
        self.window.holds_any()
    }

    /// Runs the held commands whose turn has come (after another
    /// connection of the session took the CmdSN before them).
    pub fn run_released(&mut self, out: &mut dyn Replies) -> Event {
        while let Some(p) = self.window.next_ready() {
            let event = self.dispatch(p, out);
            self.window.finish();
            if event == Event::Close {
                return Event::Close;
            }
        }
        Event::Continue
    }

    /// A NOP-In ping the initiator must answer (TTT `ttt`, never the
    /// reserved value); it takes no StatSN of its own.
    pub fn ping(&self, ttt: u32) -> Pdu {
        let (exp, max) = self.exp_max();
        let h = bhs::NopIn {
            lun: 0,
            itt: NO_TAG,
            ttt: if ttt == NO_TAG { 1 } else { ttt },
            stat_sn: self.stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
        };
        Pdu::new(Header::NopIn(h), Vec::new())
    }

    /// A Reject carrying the offending header.
    pub fn reject(&mut self, reason: u8, bad: &Header) -> Pdu {
        let (exp, max) = self.exp_max();
        let h = bhs::Reject {
            reason,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            data_sn: 0,
        };
        Pdu::new(Header::Reject(h), bad.encode().to_vec())
    }

    /// Handles one PDU from the initiator, appending replies to `out`.
    pub fn handle(&mut self, pdu: Pdu, out: &mut dyn Replies) -> Event {
        let (cmd_sn, immediate) = match &pdu.header {
            Header::NopOut(h) => (h.cmd_sn, h.immediate),
            Header::ScsiCommand(h) => (h.cmd_sn, h.immediate),
            Header::TaskMgmtReq(h) => (h.cmd_sn, h.immediate),
            Header::TextReq(h) => (h.cmd_sn, h.immediate),
            Header::LogoutReq(h) => (h.cmd_sn, h.immediate),
            Header::DataOut(_) => return self.data_out(pdu, out),
            Header::Snack(_) => {
                let r = self.reject(reject::SNACK, &pdu.header);
                out.push(r);
                return Event::Continue;
            }
            other => {
                info!(opcode = ?other.opcode(), "unexpected opcode in full feature phase");
                let r = self.reject(reject::PROTOCOL, other);
                out.push(r);
                return Event::Continue;
            }
        };
        let (admit, item) = self.window.admit(cmd_sn, immediate, pdu);
        match admit {
            Admit::Now => {
                if let Some(p) = item {
                    let event = self.dispatch(p, out);
                    if !immediate {
                        self.window.finish();
                    }
                    if event == Event::Close {
                        return Event::Close;
                    }
                }
            }
            Admit::Held => debug!(cmd_sn, "command held until the CmdSN gap fills"),
            Admit::Drop => {
                let (exp, max) = self.exp_max();
                info!(cmd_sn, exp, max, "CmdSN outside the window: ignored");
                return Event::Continue;
            }
        }
        self.run_released(out)
    }

    fn dispatch(&mut self, pdu: Pdu, out: &mut dyn Replies) -> Event {
        match &pdu.header {
            Header::NopOut(h) => {
                if h.itt != NO_TAG {
                    let (exp, max) = self.exp_max();
                    let r = bhs::NopIn {
                        lun: h.lun,
                        itt: h.itt,
                        ttt: NO_TAG,
                        stat_sn: self.next_stat_sn(),
                        exp_cmd_sn: exp,
                        max_cmd_sn: max,
                    };
                    let mut data = pdu.data.clone();
                    data.truncate(self.params.initiator_mrdsl as usize);
                    out.push(Pdu::new(Header::NopIn(r), data));
                }
                Event::Continue
            }
            Header::ScsiCommand(_) => {
                self.command(pdu, out);
                Event::Continue
            }
            Header::TaskMgmtReq(h) => {
                let h = h.clone();
                self.task_mgmt(&h, out)
            }
            Header::TextReq(h) => {
                let h = h.clone();
                self.text(&h, &pdu.data, out);
                Event::Continue
            }
            Header::LogoutReq(h) => {
                let (response, event) = self.logout(h);
                let (exp, max) = self.exp_max();
                let r = bhs::LogoutResp {
                    response,
                    itt: h.itt,
                    stat_sn: self.next_stat_sn(),
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                    time2wait: self.params.time2wait as u16,
                    time2retain: self.params.time2retain as u16,
                };
                out.push(Pdu::new(Header::LogoutResp(r), Vec::new()));
                event
            }
            _ => Event::Continue,
        }
    }

    /// What a Logout Request does (RFC 7143 11.14.1): the response code
    /// and whether this connection closes.
    fn logout(&self, h: &bhs::LogoutReq) -> (u8, Event) {
        match h.reason {
            // Close the session: every connection of it.
            0 => {
                info!(tsih = self.session.tsih, "logout: closing the session");
                self.session.stop_all();
                (0, Event::Close)
            }
            1 if h.cid == self.cid => (0, Event::Close),
            // Close another connection of the session.
            1 if self.session.stop_connection(h.cid) => {
                info!(
                    tsih = self.session.tsih,
                    cid = h.cid,
                    "logout of another connection"
                );
                (0, Event::Continue)
            }
            1 => (1, Event::Continue),
            // Removing a connection for recovery needs ERL 2.
            _ => (2, Event::Continue),
        }
    }

    fn command(&mut self, mut pdu: Pdu, out: &mut dyn Replies) {
        let Header::ScsiCommand(h) = &pdu.header else {
            return;
        };
        if self.luns.is_none() {
            let r = self.reject(reject::PROTOCOL, &pdu.header);
            out.push(r);
            return;
        }
        let mut cdb = h.cdb.to_vec();
        if let Some(ext) = pdu.extended_cdb() {
            cdb.extend_from_slice(ext);
        } else {
            cdb.truncate(scsi::cdb::cdb_len(cdb[0]).max(6));
        }
        if h.write && h.edtl > 0 {
            if h.edtl > MAX_EDTL {
                self.respond(
                    h.itt,
                    h.lun,
                    h.edtl,
                    h.read,
                    true,
                    crate::scsi::Response::check(Sense::invalid_field_in_cdb(0)),
                    out,
                );
                return;
            }
            // The command is ours: its immediate data moves, not copies.
            let mut buf = std::mem::take(&mut pdu.data);
            buf.truncate(h.edtl as usize);
            let unsolicited = !self.params.initial_r2t
                && !h.final_
                && buf.len() < self.params.first_burst as usize;
            let mut p = PendingWrite {
                lun: h.lun,
                write: true,
                cdb,
                edtl: h.edtl,
                buf,
                unsolicited,
                r2t: None,
                r2t_sn: 0,
                data_sn: 0,
                pdus_sent: 0,
            };
            if p.buf.len() >= h.edtl as usize {
                self.run(h.itt, h.read, p, out);
                return;
            }
            if !p.unsolicited {
                self.send_r2t(h.itt, &mut p, out);
            }
            self.pending.insert(h.itt, p);
            return;
        }
        let p = PendingWrite {
            lun: h.lun,
            write: h.write,
            cdb,
            edtl: h.edtl,
            buf: Vec::new(),
            unsolicited: false,
            r2t: None,
            r2t_sn: 0,
            data_sn: 0,
            pdus_sent: 0,
        };
        self.run(h.itt, h.read, p, out);
    }

    fn send_r2t(&mut self, itt: u32, p: &mut PendingWrite, out: &mut dyn Replies) {
        let offset = p.buf.len();
        let len = (p.edtl as usize - offset).min(self.params.max_burst as usize);
        let ttt = self.next_ttt;
        self.next_ttt = if self.next_ttt >= 0xffff_fffe {
            1
        } else {
            self.next_ttt + 1
        };
        let (exp, max) = self.exp_max();
        let r = bhs::R2t {
            lun: p.lun,
            itt,
            ttt,
            stat_sn: self.stat_sn,
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            r2t_sn: p.r2t_sn,
            buffer_offset: offset as u32,
            desired_len: len as u32,
        };
        p.r2t_sn += 1;
        p.pdus_sent += 1;
        p.r2t = Some((ttt, offset + len));
        p.data_sn = 0;
        out.push(Pdu::new(Header::R2t(r), Vec::new()));
    }

    fn data_out(&mut self, pdu: Pdu, out: &mut dyn Replies) -> Event {
        let Header::DataOut(h) = &pdu.header else {
            return Event::Continue;
        };
        let Some(mut p) = self.pending.remove(&h.itt) else {
            debug!(itt = h.itt, "Data-Out for no pending command: ignored");
            return Event::Continue;
        };
        let (expected_ttt, limit) = if p.unsolicited {
            (
                NO_TAG,
                (self.params.first_burst as usize).min(p.edtl as usize),
            )
        } else {
            match p.r2t {
                Some((ttt, end)) => (ttt, end),
                None => (NO_TAG, 0),
            }
        };
        let end = p.buf.len() + pdu.data.len();
        let fault = if h.ttt != expected_ttt {
            Some("target transfer tag")
        } else if h.data_sn != p.data_sn {
            Some("DataSN")
        } else if h.buffer_offset as usize != p.buf.len() {
            Some("buffer offset")
        } else if end > limit {
            Some("length beyond the burst")
        } else {
            None
        };
        if let Some(what) = fault {
            info!(itt = h.itt, what, "bad Data-Out: command fails");
            let resp = crate::scsi::Response::check(Sense::new(key::ABORTED_COMMAND, 0x4b, 0x00));
            self.respond(h.itt, p.lun, p.edtl, false, true, resp, out);
            return Event::Continue;
        }
        p.buf.extend_from_slice(&pdu.data);
        p.data_sn = p.data_sn.wrapping_add(1);
        let sequence_done = h.final_ || p.buf.len() == limit;
        if p.buf.len() >= p.edtl as usize {
            self.run(h.itt, false, p, out);
            return Event::Continue;
        }
        if sequence_done {
            p.unsolicited = false;
            p.r2t = None;
            p.data_sn = 0;
            self.send_r2t(h.itt, &mut p, out);
        }
        self.pending.insert(h.itt, p);
        Event::Continue
    }

    fn run(&mut self, itt: u32, read: bool, p: PendingWrite, out: &mut dyn Replies) {
        let Some(luns) = &self.luns else { return };
        let req = Request {
            cdb: &p.cdb,
            data_out: &p.buf,
            nexus: &self.session.nexus,
        };
        let resp = luns.execute(p.lun, &req);
        self.respond(itt, p.lun, p.edtl, read, p.write, resp, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        itt: u32,
        lun: u64,
        edtl: u32,
        read: bool,
        write: bool,
        resp: crate::scsi::Response,
        out: &mut dyn Replies,
    ) {
        let edtl = edtl as usize;
        let (mut underflow, mut overflow, mut residual) = (false, false, 0usize);
        let mut data = resp.data;
        if !data.is_empty() || (read && !write) {
            if data.len() > edtl || !read {
                overflow = data.len() > edtl;
                residual = data.len().saturating_sub(edtl);
                data.truncate(if read { edtl } else { 0 });
            } else if data.len() < edtl {
                underflow = true;
                residual = edtl - data.len();
            }
        } else if write {
            let want = resp.data_out_len.unwrap_or(0);
            if want < edtl {
                underflow = true;
                residual = edtl - want;
            } else if want > edtl {
                overflow = true;
                residual = want - edtl;
            }
        } else if edtl > 0 {
            underflow = true;
            residual = edtl;
        }
        let good = resp.status == Status::Good && resp.sense.is_none();
        let mut data_sn = 0u32;
        if !data.is_empty() {
            let mrdsl = self.params.initiator_mrdsl.max(512) as usize;
            let burst = self.params.max_burst.max(512) as usize;
            let total = data.len();
            let mut pieces = Vec::with_capacity(total.div_ceil(mrdsl));
            let mut off = 0;
            while off < total {
                let burst_end = ((off / burst) + 1) * burst;
                let n = mrdsl.min(total - off).min(burst_end - off);
                let last = off + n == total;
                let (exp, max) = self.exp_max();
                let with_status = last && good;
                let h = bhs::DataIn {
                    final_: last || off + n == burst_end,
                    ack: false,
                    overflow: with_status && overflow,
                    underflow: with_status && underflow,
                    has_status: with_status,
                    status: 0,
                    lun,
                    itt,
                    ttt: NO_TAG,
                    stat_sn: if with_status { self.next_stat_sn() } else { 0 },
                    exp_cmd_sn: exp,
                    max_cmd_sn: max,
                    data_sn,
                    buffer_offset: off as u32,
                    residual: if with_status { residual as u32 } else { 0 },
                };
                pieces.push((h, off..off + n));
                data_sn += 1;
                off += n;
            }
            // The PDUs share the one read buffer: no copy per PDU here.
            out.push_data_in(data, pieces);
            if good {
                return;
            }
        }
        let mut seg = Vec::new();
        if let Some(sense) = &resp.sense {
            seg.extend_from_slice(&(sense.len() as u16).to_be_bytes());
            seg.extend_from_slice(sense);
        }
        let (exp, max) = self.exp_max();
        let h = bhs::ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow,
            underflow,
            response: 0,
            status: resp.status as u8,
            itt,
            snack_tag: 0,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: exp,
            max_cmd_sn: max,
            exp_data_sn: data_sn,
            bidi_residual: 0,
            residual: residual as u32,
        };
        out.push(Pdu::new(Header::ScsiResponse(h), seg));
    }

    fn task_mgmt(&mut self, h: &bhs::TaskMgmtReq, out: &mut dyn Replies) -> Event {
        let lun_no = scsi::decode_lun(h.lun);
        let lu = lun_no.and_then(|n| self.luns.as_ref().and_then(|m| m.luns.get(&n).cloned()));
        let mut close = false;
        let response = match h.function {
            1 => {
                if self.pending.remove(&h.ref_task_tag).is_some() {
                    0
                } else {
                    1
                }
            }
            2 | 4 => {
                self.pending.retain(|_, p| p.lun != h.lun);
                0
            }
            5 => match lu {
                Some(lu) => {
                    self.pending.retain(|_, p| p.lun != h.lun);
                    let mut st = lu.lock();
                    st.reserved_by = None;
                    crate::scsi::LogicalUnit::raise_unit_attention(
                        &mut st,
                        Sense::new(key::UNIT_ATTENTION, 0x29, 0x03),
                        None,
                    );
                    0
                }
                None => 2,
            },
            6 | 7 => {
                self.pending.clear();
                if let Some(m) = &self.luns {
                    for lu in m.luns.values() {
                        let mut st = lu.lock();
                        st.reserved_by = None;
                        crate::scsi::LogicalUnit::raise_unit_attention(
                            &mut st,
                            Sense::new(key::UNIT_ATTENTION, 0x29, 0x02),
                            None,
                        );
                    }
                }
                close = h.function == 7;
                0
            }
            8 => 4,
            _ => 5,
        };
        let (exp, max) = self.exp_max();
        let r = bhs::TaskMgmtResp {
            response,
            itt: h.itt,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: exp,
            max_cmd_sn: max,
        };
        out.push(Pdu::new(Header::TaskMgmtResp(r), Vec::new()));
        if close {
            Event::Close
        } else {
            Event::Continue
        }
    }

    fn text(&mut self, h: &bhs::TextReq, data: &[u8], out: &mut dyn Replies) {
        let pairs = match text::parse(data) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "bad text request");
                let r = self.reject(reject::INVALID_FIELD, &Header::TextReq(h.clone()));
                out.push(r);
                return;
            }
        };
        let mut reply: text::Pairs = Vec::new();
        for (k, v) in &pairs {
            if k == "SendTargets" {
                self.send_targets(v, &mut reply);
                continue;
            }
            if k == "HeaderDigest" || k == "DataDigest" {
                reply.push((k.clone(), "Reject".into()));
                continue;
            }
            let discovery = self.luns.is_none();
            match self.params.offer(k, v, discovery) {
                Ok(Answer::Value(a)) => reply.push((k.clone(), a)),
                Ok(Answer::Silent) => {}
                Ok(Answer::NotUnderstood) => reply.push((k.clone(), "NotUnderstood".into())),
                Ok(Answer::Irrelevant) => reply.push((k.clone(), "Irrelevant".into())),
                Ok(Answer::Reject) | Err(_) => reply.push((k.clone(), "Reject".into())),
            }
        }
        let (exp, max) = self.exp_max();
        let r = bhs::TextResp {
            final_: true,
            cont: false,
            lun: h.lun,
            itt: h.itt,
            ttt: NO_TAG,
            stat_sn: self.next_stat_sn(),
            exp_cmd_sn: exp,
            max_cmd_sn: max,
        };
        let mut body = text::encode(&reply);
        body.truncate(self.params.initiator_mrdsl as usize);
        out.push(Pdu::new(Header::TextResp(r), body));
    }

    fn send_targets(&self, which: &str, reply: &mut text::Pairs) {
        let visible = |name: &str, allowed: &[String]| {
            (allowed.is_empty() || allowed.iter().any(|a| a == &self.session.initiator))
                && match which {
                    "All" => true,
                    "" => Some(name) == self.session.target.as_deref(),
                    other => other == name,
                }
        };
        for (name, t) in &self.registry.targets {
            if !visible(name, &t.auth.allowed_initiators) {
                continue;
            }
            reply.push(("TargetName".into(), name.clone()));
            for portal in &self.registry.portals {
                let addr = if portal.starts_with("0.0.0.0:") || portal.starts_with("[::]:") {
                    self.local_addr.clone()
                } else {
                    portal.clone()
                };
                reply.push((
                    "TargetAddress".into(),
                    format!("{addr},{}", self.registry.portal_group),
                ));
            }
        }
    }

    /// Drops the connection's pending commands; when it was the session's
    /// last connection (`nexus_lost`), also the RESERVE(6) reservations
    /// of the session's I_T nexus.
    pub fn end(&mut self, nexus_lost: bool) {
        self.pending.clear();
        if !nexus_lost {
            return;
        }
        if let Some(m) = &self.luns {
            for lu in m.luns.values() {
                let mut st = lu.lock();
                if st.reserved_by.as_ref() == Some(&self.session.nexus) {
                    st.reserved_by = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::{LunConfig, SanConfig, TargetConfig};

    const T: &str = "iqn.2026-01.dev.ferry:unit";

    fn ffp(name: &str) -> (Ffp, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ferry-ffp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = SanConfig {
            targets: vec![TargetConfig {
                name: T.into(),
                alias: None,
                allowed_initiators: vec![],
                chap: None,
                mutual_chap: None,
                luns: vec![LunConfig {
                    id: 0,
                    path: dir.join("lun.img"),
                    size: Some(1 << 20),
                    read_only: false,
                }],
            }],
            ..Default::default()
        };
        let reg = Arc::new(Registry::from_config(&cfg, &dir.join("san.toml")).unwrap());
        let params = Params {
            max_burst: 8192,
            initiator_mrdsl: 4096,
            ..Params::default()
        };
        let session = SessionCore::new(
            1,
            "iqn.i".into(),
            [0x80, 0, 0, 0, 0, 1],
            Some(T.into()),
            params.clone(),
            10,
            reg.portal_group,
        );
        let f = Ffp::new(
            Arc::new(session),
            0,
            params,
            100,
            reg,
            "127.0.0.1:3260".into(),
        );
        (f, dir)
    }

    fn cmd(cmd_sn: u32, itt: u32, cdb: &[u8], write: bool, edtl: u32, data: Vec<u8>) -> Pdu {
        let mut c = [0u8; 16];
        c[..cdb.len()].copy_from_slice(cdb);
        let h = bhs::ScsiCommand {
            final_: true,
            read: !write,
            write,
            attr: 1,
            itt,
            edtl,
            cmd_sn,
            cdb: c,
            ..Default::default()
        };
        Pdu::new(Header::ScsiCommand(h), data)
    }

    fn tur(f: &mut Ffp, cmd_sn: u32, itt: u32) -> Vec<Pdu> {
        let mut out = Vec::new();
        f.handle(cmd(cmd_sn, itt, &[0; 6], false, 0, vec![]), &mut out);
        out
    }

    #[test]
    fn write_by_r2t_then_read_back_in_split_data_in() {
        let (mut f, dir) = ffp("rw");
        // The first command sees the power-on unit attention.
        let out = tur(&mut f, 10, 1);
        assert!(matches!(&out[0].header, Header::ScsiResponse(r) if r.status == 2));
        let payload: Vec<u8> = (0..16384u32).map(|i| (i % 253) as u8).collect();
        let mut out = Vec::new();
        let wr = [0x2a, 0, 0, 0, 0, 0, 0, 0, 32, 0];
        f.handle(
            cmd(11, 2, &wr, true, 16384, payload[..4096].to_vec()),
            &mut out,
        );
        let Header::R2t(r) = &out[0].header else {
            panic!("no R2T: {out:?}")
        };
        assert_eq!((r.buffer_offset, r.desired_len, r.r2t_sn), (4096, 8192, 0));
        let ttt = r.ttt;
        let mut out = Vec::new();
        for (sn, off) in [(0u32, 4096usize), (1, 8192)] {
            let d = bhs::DataOut {
                final_: off == 8192,
                itt: 2,
                ttt,
                data_sn: sn,
                buffer_offset: off as u32,
                ..Default::default()
            };
            f.handle(
                Pdu::new(Header::DataOut(d), payload[off..off + 4096].to_vec()),
                &mut out,
            );
        }
        let Header::R2t(r) = &out[0].header else {
            panic!("no second R2T: {out:?}")
        };
        assert_eq!((r.buffer_offset, r.desired_len, r.r2t_sn), (12288, 4096, 1));
        let d = bhs::DataOut {
            final_: true,
            itt: 2,
            ttt: r.ttt,
            data_sn: 0,
            buffer_offset: 12288,
            ..Default::default()
        };
        let mut out = Vec::new();
        f.handle(
            Pdu::new(Header::DataOut(d), payload[12288..].to_vec()),
            &mut out,
        );
        assert!(
            matches!(&out[0].header, Header::ScsiResponse(r) if r.status == 0 && !r.underflow && !r.overflow),
            "{out:?}"
        );
        // Read it back: 4 Data-In PDUs of 4096, status in the last.
        let mut out = Vec::new();
        f.handle(
            cmd(
                12,
                3,
                &[0x28, 0, 0, 0, 0, 0, 0, 0, 32, 0],
                false,
                16384,
                vec![],
            ),
            &mut out,
        );
        assert_eq!(out.len(), 4);
        let mut back = Vec::new();
        for (i, p) in out.iter().enumerate() {
            let Header::DataIn(d) = &p.header else {
                panic!("not Data-In")
            };
            assert_eq!(d.data_sn, i as u32);
            assert_eq!(d.has_status, i == 3);
            assert_eq!(
                d.final_,
                i == 1 || i == 3,
                "F at the end of each 8 KiB burst"
            );
            back.extend_from_slice(&p.data);
        }
        assert_eq!(back, payload);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn commands_run_in_cmdsn_order_and_outside_the_window_are_dropped() {
        let (mut f, dir) = ffp("order");
        tur(&mut f, 10, 1);
        assert!(tur(&mut f, 12, 3).is_empty(), "CmdSN 12 must wait for 11");
        let out = tur(&mut f, 11, 2);
        let itts: Vec<u32> = out
            .iter()
            .filter_map(|p| {
                if let Header::ScsiResponse(r) = &p.header {
                    Some(r.itt)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(itts, vec![2, 3]);
        assert!(tur(&mut f, 5, 4).is_empty(), "an old CmdSN is ignored");
        assert!(
            tur(&mut f, 13 + super::super::window::QUEUE_DEPTH, 5).is_empty(),
            "beyond MaxCmdSN is ignored"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_data_sn_fails_the_command() {
        let (mut f, dir) = ffp("datasn");
        tur(&mut f, 10, 1);
        let mut out = Vec::new();
        f.handle(
            cmd(
                11,
                2,
                &[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0],
                true,
                4096,
                vec![],
            ),
            &mut out,
        );
        let Header::R2t(r) = &out[0].header else {
            panic!("no R2T")
        };
        let d = bhs::DataOut {
            final_: true,
            itt: 2,
            ttt: r.ttt,
            data_sn: 27,
            buffer_offset: 0,
            ..Default::default()
        };
        let mut out = Vec::new();
        f.handle(Pdu::new(Header::DataOut(d), vec![0; 4096]), &mut out);
        let Header::ScsiResponse(r) = &out[0].header else {
            panic!("no response")
        };
        assert_eq!(r.status, 2);
        assert_eq!(out[0].data[2 + 2] & 0x0f, key::ABORTED_COMMAND);
        let _ = std::fs::remove_dir_all(dir);
    }
}
