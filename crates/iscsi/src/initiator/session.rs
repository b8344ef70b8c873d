//! The pipelined session: many commands in flight on one connection.
//!
//! Threads: callers submit commands and block on their own task; one reader
//! thread per session reads every PDU, matches it to its task by ITT and
//! wakes that caller. Whoever holds the writer lock sends: commands go out
//! in submission order, CmdSN by CmdSN, while the target's window
//! (MaxCmdSN) allows; a caller sends the Data-Out its own R2Ts ask for.
//! Lock order is writer, then state.
//!
//! Connection loss: the reader thread logs in again (same ISID, so the
//! target reinstates the session and persistent-reservation registrations
//! stay bound to us) and re-sends every outstanding command in its original
//! order. A caller whose command does not complete within the I/O timeout
//! gets [`IscsiError::Timeout`]; it never hangs.

use super::login::{login, LoginConfig, Negotiated};
use super::task::{sn_le, sn_lt, Request, ScsiResult, Task, Transfer};
use super::wire::Wire;
use super::IscsiError;
use crate::pdu::bhs::{self, Header};
use crate::pdu::{Digests, Pdu};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a session behaves beyond login.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where and who.
    pub login: LoginConfig,
    /// How long a command may take, reconnects included, before its caller
    /// gets an error.
    pub io_timeout: Duration,
    /// Most commands in flight at once.
    pub queue_depth: usize,
    /// A silent connection is pinged after this long and dropped after
    /// three times this long.
    pub ping_interval: Duration,
}

impl SessionConfig {
    /// Defaults: 30 s I/O timeout, queue depth 64, 5 s pings.
    pub fn new(login: LoginConfig) -> SessionConfig {
        SessionConfig {
            login,
            io_timeout: Duration::from_secs(30),
            queue_depth: 64,
            ping_interval: Duration::from_secs(5),
        }
    }
}

/// ITTs at or above this are the session's own (NOP-Out pings).
const PING_ITT: u32 = 0xffff_ff00;
/// Longest reconnect back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

struct Writer {
    wire: Option<Wire>,
    generation: u64,
}

struct State {
    neg: Negotiated,
    cmd_sn: u32,
    exp_stat_sn: u32,
    max_cmd_sn: u32,
    next_itt: u32,
    next_seq: u64,
    tasks: HashMap<u32, Task>,
    /// Tasks not yet sent on the current connection, by issue order.
    unsent: BTreeMap<u64, u32>,
    generation: u64,
    connected: bool,
    closing: bool,
    reconnects: u64,
}

struct Shared {
    cfg: SessionConfig,
    writer: Mutex<Writer>,
    state: Mutex<State>,
    /// Signalled when a slot frees, the window opens or the connection changes.
    room: Condvar,
}

/// A logged-in session with pipelined commands; cheap to share by `Arc`.
pub struct Session {
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

/// A submitted command; [`Session::wait`] returns its result.
pub struct Ticket {
    itt: u32,
    opcode: u8,
    deadline: Instant,
    wake: Arc<Condvar>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread cannot leave these structures half-updated in a
    // way later code trusts; keep going rather than poison everyone.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    /// Logs in and starts the reader thread.
    pub fn open(cfg: SessionConfig) -> Result<Session, IscsiError> {
        let (wire, neg) = login(&cfg.login, 1)?;
        tracing::info!(
            portal = %cfg.login.portal,
            target = %cfg.login.target,
            header_digest = neg.digests.header,
            data_digest = neg.digests.data,
            max_burst = neg.max_burst,
            first_burst = neg.first_burst,
            max_send = neg.max_send,
            immediate_data = neg.immediate_data,
            initial_r2t = neg.initial_r2t,
            "iSCSI session logged in"
        );
        let reader_wire = wire.try_clone()?;
        let state = State {
            cmd_sn: neg.cmd_sn,
            exp_stat_sn: neg.exp_stat_sn,
            max_cmd_sn: neg.max_cmd_sn,
            neg,
            next_itt: 1,
            next_seq: 0,
            tasks: HashMap::new(),
            unsent: BTreeMap::new(),
            generation: 1,
            connected: true,
            closing: false,
            reconnects: 0,
        };
        let shared = Arc::new(Shared {
            cfg,
            writer: Mutex::new(Writer {
                wire: Some(wire),
                generation: 1,
            }),
            state: Mutex::new(state),
            room: Condvar::new(),
        });
        let s2 = shared.clone();
        let reader = std::thread::Builder::new()
            .name("iscsi-reader".into())
            .spawn(move || reader_loop(&s2, reader_wire, 1))
            .map_err(|source| IscsiError::Io {
                portal: shared.cfg.login.portal.clone(),
                source,
            })?;
        Ok(Session {
            shared,
            reader: Some(reader),
        })
    }

    /// The configuration the session runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.cfg
    }

    /// The parameters the current connection negotiated.
    pub fn negotiated(&self) -> Negotiated {
        lock(&self.shared.state).neg.clone()
    }

    /// How many times the connection was re-established.
    pub fn reconnects(&self) -> u64 {
        lock(&self.shared.state).reconnects
    }

    /// Queues a command; it is sent as soon as the window allows.
    pub fn submit(&self, req: Request) -> Result<Ticket, IscsiError> {
        let sh = &self.shared;
        let opcode = req.opcode();
        if req.cdb.len() > 16 {
            return Err(IscsiError::Invalid(format!(
                "CDB of {} bytes (at most 16)",
                req.cdb.len()
            )));
        }
        let deadline = Instant::now() + sh.cfg.io_timeout;
        let mut s = lock(&sh.state);
        while s.tasks.len() >= sh.cfg.queue_depth && !s.closing {
            let now = Instant::now();
            if now >= deadline {
                return Err(sh.timeout(opcode));
            }
            s = sh
                .room
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if s.closing {
            return Err(sh.closed());
        }
        let itt = s.next_itt;
        s.next_itt = if s.next_itt + 1 >= PING_ITT {
            1
        } else {
            s.next_itt + 1
        };
        let seq = s.next_seq;
        s.next_seq += 1;
        let task = Task::new(seq, req);
        let wake = task.wake.clone();
        s.tasks.insert(itt, task);
        s.unsent.insert(seq, itt);
        drop(s);
        sh.pump();
        Ok(Ticket {
            itt,
            opcode,
            deadline,
            wake,
        })
    }

    /// Waits for a submitted command, serving its R2Ts meanwhile.
    pub fn wait(&self, t: Ticket) -> Result<ScsiResult, IscsiError> {
        let sh = &self.shared;
        let mut s = lock(&sh.state);
        loop {
            let Some(task) = s.tasks.get_mut(&t.itt) else {
                return Err(sh.closed());
            };
            if let Some(r) = task.outcome.take() {
                s.tasks.remove(&t.itt);
                sh.room.notify_all();
                return Ok(r);
            }
            if let Some(x) = task.transfers.pop_front() {
                let data = task.req.data.clone();
                let lun = task.req.lun;
                drop(s);
                sh.send_data_out(t.itt, lun, &data, x);
                s = lock(&sh.state);
                continue;
            }
            let seq = task.seq;
            if s.closing {
                s.tasks.remove(&t.itt);
                return Err(sh.closed());
            }
            let now = Instant::now();
            if now >= t.deadline {
                s.tasks.remove(&t.itt);
                s.unsent.remove(&seq);
                sh.room.notify_all();
                tracing::warn!(opcode = t.opcode, target = %sh.cfg.login.target, "iSCSI command timed out");
                return Err(sh.timeout(t.opcode));
            }
            s = t
                .wake
                .wait_timeout(s, t.deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Submits and waits.
    pub fn command(&self, req: Request) -> Result<ScsiResult, IscsiError> {
        let t = self.submit(req)?;
        self.wait(t)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let sh = &self.shared;
        {
            let mut w = lock(&sh.writer);
            let mut s = lock(&sh.state);
            s.closing = true;
            for t in s.tasks.values() {
                t.wake.notify_all();
            }
            sh.room.notify_all();
            let (cmd_sn, exp_stat_sn) = (s.cmd_sn, s.exp_stat_sn);
            drop(s);
            if let Some(wire) = w.wire.as_mut() {
                let logout = bhs::LogoutReq {
                    immediate: true,
                    reason: 0,
                    itt: PING_ITT + 1,
                    cid: 0,
                    cmd_sn,
                    exp_stat_sn,
                };
                let _ = wire.send(&Pdu::new(Header::LogoutReq(logout), Vec::new()));
                wire.shutdown();
            }
            w.wire = None;
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Shared {
    fn timeout(&self, opcode: u8) -> IscsiError {
        IscsiError::Timeout {
            opcode,
            secs: self.cfg.io_timeout.as_secs(),
            target: self.cfg.login.target.clone(),
        }
    }

    fn closed(&self) -> IscsiError {
        IscsiError::Closed {
            target: self.cfg.login.target.clone(),
        }
    }

    /// Sends every unsent command the window allows, in issue order.
    fn pump(&self) {
        let mut w = lock(&self.writer);
        self.pump_locked(&mut w);
    }

    fn pump_locked(&self, w: &mut Writer) {
        let mut frames = Vec::new();
        {
            let mut s = lock(&self.state);
            if !s.connected || w.wire.is_none() || s.generation != w.generation {
                return;
            }
            let digests = s.neg.digests;
            while let Some((&seq, &itt)) = s.unsent.first_key_value() {
                if !sn_le(s.cmd_sn, s.max_cmd_sn) {
                    break;
                }
                s.unsent.remove(&seq);
                let (cmd_sn, exp_stat_sn, generation) = (s.cmd_sn, s.exp_stat_sn, s.generation);
                let neg = s.neg.clone();
                let Some(task) = s.tasks.get_mut(&itt) else {
                    continue;
                };
                task.sent_on = Some(generation);
                encode_command(
                    &mut frames,
                    digests,
                    &neg,
                    itt,
                    cmd_sn,
                    exp_stat_sn,
                    &task.req,
                );
                s.cmd_sn = s.cmd_sn.wrapping_add(1);
            }
        }
        if frames.is_empty() {
            return;
        }
        if let Some(wire) = w.wire.as_mut() {
            if let Err(e) = wire.send_raw(&frames) {
                // The reader notices too and reconnects; the commands are
                // still in the table and will be sent again.
                tracing::debug!("send failed: {e}");
                wire.shutdown();
            }
        }
    }

    fn send_data_out(&self, itt: u32, lun: u64, data: &[u8], x: Transfer) {
        let mut w = lock(&self.writer);
        if w.generation != x.generation {
            return; // The command was sent again on a new connection.
        }
        let (exp_stat_sn, max_send, digests) = {
            let s = lock(&self.state);
            (s.exp_stat_sn, s.neg.max_send as usize, s.neg.digests)
        };
        let mut frames = Vec::new();
        let start = x.offset as usize;
        let end = (start + x.len as usize).min(data.len());
        encode_data_out(
            &mut frames,
            digests,
            DataOutRun {
                itt,
                lun,
                ttt: x.ttt,
                exp_stat_sn,
                max_send,
            },
            data,
            start,
            end,
        );
        if let Some(wire) = w.wire.as_mut() {
            if let Err(e) = wire.send_raw(&frames) {
                tracing::debug!("Data-Out send failed: {e}");
                wire.shutdown();
            }
        }
    }
}

struct DataOutRun {
    itt: u32,
    lun: u64,
    ttt: u32,
    exp_stat_sn: u32,
    max_send: usize,
}

/// Data-Out PDUs for `data[start..end]`, each at most MaxRecvDataSegmentLength.
fn encode_data_out(
    out: &mut Vec<u8>,
    digests: Digests,
    r: DataOutRun,
    data: &[u8],
    start: usize,
    end: usize,
) {
    let mut off = start;
    let mut data_sn = 0;
    while off < end {
        let n = (end - off).min(r.max_send.max(512));
        let h = bhs::DataOut {
            final_: off + n == end,
            lun: r.lun,
            itt: r.itt,
            ttt: r.ttt,
            exp_stat_sn: r.exp_stat_sn,
            data_sn,
            buffer_offset: off as u32,
        };
        Pdu::new(Header::DataOut(h), data[off..off + n].to_vec()).encode_into(digests, out);
        data_sn += 1;
        off += n;
    }
}

/// The SCSI Command PDU, its immediate data and any unsolicited Data-Out.
fn encode_command(
    out: &mut Vec<u8>,
    digests: Digests,
    neg: &Negotiated,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
    req: &Request,
) {
    let mut cdb = [0u8; 16];
    let n = req.cdb.len().min(16);
    cdb[..n].copy_from_slice(&req.cdb[..n]);
    let lun = u64::from_be_bytes(crate::scsi::encode_lun(req.lun));
    let len = req.data.len();
    let first_burst = (neg.first_burst as usize).min(len);
    let immediate = if neg.immediate_data {
        first_burst.min(neg.max_send as usize)
    } else {
        0
    };
    let unsolicited_end = if neg.initial_r2t {
        immediate
    } else {
        first_burst
    };
    let h = bhs::ScsiCommand {
        immediate: false,
        final_: unsolicited_end == immediate,
        read: req.read_len > 0,
        write: len > 0,
        attr: 1,
        lun,
        itt,
        edtl: if len > 0 { len as u32 } else { req.read_len },
        cmd_sn,
        exp_stat_sn,
        cdb,
    };
    Pdu::new(Header::ScsiCommand(h), req.data[..immediate].to_vec()).encode_into(digests, out);
    if unsolicited_end > immediate {
        encode_data_out(
            out,
            digests,
            DataOutRun {
                itt,
                lun,
                ttt: 0xffff_ffff,
                exp_stat_sn,
                max_send: neg.max_send as usize,
            },
            &req.data,
            immediate,
            unsolicited_end,
        );
    }
}

/// What one PDU carries for the window: (StatSN if it acknowledges status,
/// ExpCmdSN, MaxCmdSN).
fn sequence_numbers(h: &Header) -> Option<(Option<u32>, u32, u32)> {
    Some(match h {
        Header::DataIn(d) => (
            d.has_status.then_some(d.stat_sn),
            d.exp_cmd_sn,
            d.max_cmd_sn,
        ),
        Header::ScsiResponse(r) => (Some(r.stat_sn), r.exp_cmd_sn, r.max_cmd_sn),
        Header::R2t(r) => (None, r.exp_cmd_sn, r.max_cmd_sn),
        Header::NopIn(n) => (
            (n.itt != 0xffff_ffff).then_some(n.stat_sn),
            n.exp_cmd_sn,
            n.max_cmd_sn,
        ),
        Header::AsyncMsg(a) => (Some(a.stat_sn), a.exp_cmd_sn, a.max_cmd_sn),
        Header::Reject(r) => (Some(r.stat_sn), r.exp_cmd_sn, r.max_cmd_sn),
        Header::TaskMgmtResp(r) => (Some(r.stat_sn), r.exp_cmd_sn, r.max_cmd_sn),
        Header::LogoutResp(r) => (Some(r.stat_sn), r.exp_cmd_sn, r.max_cmd_sn),
        Header::TextResp(r) => (Some(r.stat_sn), r.exp_cmd_sn, r.max_cmd_sn),
        _ => return None,
    })
}

/// What the reader must do after a PDU.
enum Next {
    Continue,
    /// Answer a target's ping with this TTT.
    Pong(u32, u64),
    /// Drop the connection and log in again.
    Reconnect(String),
}

fn reader_loop(sh: &Arc<Shared>, mut wire: Wire, mut generation: u64) {
    let ping = sh.cfg.ping_interval;
    let mut last_rx = Instant::now();
    let mut pinged = false;
    let _ = wire.set_read_timeout(Some(ping));
    loop {
        let why = match wire.recv_idle() {
            Ok(Some(pdu)) => {
                last_rx = Instant::now();
                pinged = false;
                match dispatch(sh, pdu, generation) {
                    Next::Continue => continue,
                    Next::Pong(ttt, lun) => {
                        send_nop_out(sh, generation, ttt, lun, 0xffff_ffff);
                        continue;
                    }
                    Next::Reconnect(why) => why,
                }
            }
            Ok(None) => {
                if last_rx.elapsed() >= ping * 3 {
                    format!("no answer for {} s", last_rx.elapsed().as_secs())
                } else {
                    if !pinged {
                        send_nop_out(sh, generation, 0xffff_ffff, 0, PING_ITT);
                        pinged = true;
                    }
                    continue;
                }
            }
            Err(e) => format!(
                "{e}: {:?}",
                std::error::Error::source(&e).map(|s| s.to_string())
            ),
        };
        if lock(&sh.state).closing {
            return;
        }
        tracing::warn!(portal = %sh.cfg.login.portal, target = %sh.cfg.login.target, "iSCSI connection lost ({why}); logging in again");
        // Unblocks a caller stuck writing to a dead connection.
        wire.shutdown();
        match reconnect(sh, generation) {
            Some((w, g)) => {
                wire = w;
                generation = g;
                last_rx = Instant::now();
                pinged = false;
                let _ = wire.set_read_timeout(Some(ping));
            }
            None => return,
        }
    }
}

fn send_nop_out(sh: &Shared, generation: u64, ttt: u32, lun: u64, itt: u32) {
    let mut w = lock(&sh.writer);
    if w.generation != generation {
        return;
    }
    let (cmd_sn, exp_stat_sn) = {
        let s = lock(&sh.state);
        (s.cmd_sn, s.exp_stat_sn)
    };
    let h = bhs::NopOut {
        immediate: true,
        lun,
        itt,
        ttt,
        cmd_sn,
        exp_stat_sn,
    };
    if let Some(wire) = w.wire.as_mut() {
        if wire.send(&Pdu::new(Header::NopOut(h), Vec::new())).is_err() {
            wire.shutdown();
        }
    }
}

fn dispatch(sh: &Shared, pdu: Pdu, generation: u64) -> Next {
    let mut s = lock(&sh.state);
    if let Some((stat_sn, exp_cmd_sn, max_cmd_sn)) = sequence_numbers(&pdu.header) {
        if let Some(sn) = stat_sn {
            s.exp_stat_sn = sn.wrapping_add(1);
        }
        // RFC 7143 4.2.2.1: ignore a MaxCmdSN below ExpCmdSN - 1.
        if !sn_lt(max_cmd_sn, exp_cmd_sn.wrapping_sub(1)) && sn_lt(s.max_cmd_sn, max_cmd_sn) {
            s.max_cmd_sn = max_cmd_sn;
            if !s.unsent.is_empty() {
                drop(s);
                sh.pump();
                s = lock(&sh.state);
            }
            sh.room.notify_all();
        }
    }
    let result = match &pdu.header {
        Header::DataIn(h) => with_task(&mut s, h.itt, generation, |t| t.data_in(h, &pdu.data)),
        Header::ScsiResponse(h) => {
            with_task(&mut s, h.itt, generation, |t| t.response(h, &pdu.data))
        }
        Header::R2t(h) => with_task(&mut s, h.itt, generation, |t| t.r2t(h, generation)),
        Header::NopIn(n) if n.ttt != 0xffff_ffff => return Next::Pong(n.ttt, n.lun),
        Header::AsyncMsg(a) if matches!(a.event, 1..=3) => {
            return Next::Reconnect(format!("target asked us to log out (event {})", a.event))
        }
        Header::Reject(r) => {
            let itt = pdu
                .data
                .get(16..20)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            return Next::Reconnect(format!(
                "target rejected a PDU (reason {:#04x}, ITT {itt:?})",
                r.reason
            ));
        }
        _ => Ok(()),
    };
    match result {
        Ok(()) => Next::Continue,
        Err(v) => Next::Reconnect(v.0),
    }
}

fn with_task(
    s: &mut State,
    itt: u32,
    generation: u64,
    f: impl FnOnce(&mut Task) -> Result<(), super::task::Violation>,
) -> Result<(), super::task::Violation> {
    // An answer to a command that timed out or belongs to a dead
    // connection is dropped.
    let Some(t) = s
        .tasks
        .get_mut(&itt)
        .filter(|t| t.sent_on == Some(generation))
    else {
        return Ok(());
    };
    f(t)?;
    t.wake.notify_all();
    Ok(())
}

/// Logs in again until it works or the session closes; re-queues every
/// outstanding command in its original order.
fn reconnect(sh: &Shared, old: u64) -> Option<(Wire, u64)> {
    {
        let mut w = lock(&sh.writer);
        if let Some(wire) = w.wire.take() {
            wire.shutdown();
        }
        let mut s = lock(&sh.state);
        s.connected = false;
        debug_assert_eq!(w.generation, old);
    }
    let mut backoff = Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        if lock(&sh.state).closing {
            return None;
        }
        let cmd_sn = lock(&sh.state).cmd_sn;
        match login(&sh.cfg.login, cmd_sn) {
            Ok((wire, neg)) => {
                let reader = match wire.try_clone() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("reconnect: {e}");
                        continue;
                    }
                };
                let mut w = lock(&sh.writer);
                let generation = {
                    let mut s = lock(&sh.state);
                    if s.closing {
                        wire.shutdown();
                        return None;
                    }
                    s.generation += 1;
                    s.reconnects += 1;
                    s.cmd_sn = neg.cmd_sn;
                    s.exp_stat_sn = neg.exp_stat_sn;
                    s.max_cmd_sn = neg.max_cmd_sn;
                    s.neg = neg;
                    s.connected = true;
                    let mut again: Vec<(u64, u32)> = Vec::new();
                    for (itt, t) in s.tasks.iter_mut() {
                        if t.outcome.is_none() {
                            t.reset();
                            again.push((t.seq, *itt));
                        }
                    }
                    s.unsent = again.into_iter().collect();
                    tracing::info!(
                    target = %sh.cfg.login.target,
                        resent = s.unsent.len(),
                        "iSCSI session re-established"
                    );
                    s.generation
                };
                w.generation = generation;
                w.wire = Some(wire);
                sh.pump_locked(&mut w);
                drop(w);
                sh.room.notify_all();
                return Some((reader, generation));
            }
            Err(e) => {
                attempts += 1;
                if attempts == 1 || attempts.is_multiple_of(20) {
                    tracing::warn!(attempts, "iSCSI login failed: {e}");
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
