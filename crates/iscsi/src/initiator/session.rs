//! The pipelined session: many commands in flight on one connection.
//!
//! Threads: callers submit commands and block on their own task, or start
//! them with a completion and go on; one reader thread per session reads
//! every PDU, matches it to its task by ITT and wakes that caller or runs
//! that completion. Whoever holds the writer lock sends: commands go out
//! in submission order, CmdSN by CmdSN, while the target's window
//! (MaxCmdSN) allows; a caller sends the Data-Out its own R2Ts ask for.
//! A sender thread sends on the reader's behalf (see [`super::sender`]).
//! Lock order is writer, then state.
//!
//! Connection loss: the reader thread logs in again (same ISID, so the
//! target reinstates the session and persistent-reservation registrations
//! stay bound to us) and re-sends every outstanding command in its original
//! order. A caller whose command does not complete within the I/O timeout
//! gets [`IscsiError::Timeout`]; it never hangs.

use super::encode::{encode_command, encode_data_out, DataOutRun, Frames};
use super::login::{login, LoginConfig, Negotiated};
use super::sender::Chore;
use super::task::{sn_le, Completion, Request, ScsiResult, Task, Transfer};
use super::wire::Wire;
use super::IscsiError;
use crate::pdu::bhs::{self, Header};
use crate::pdu::Pdu;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
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
    /// Most commands in flight (sent or queued, not yet answered) at once.
    pub queue_depth: usize,
    /// A silent connection is pinged after this long and dropped after
    /// three times this long.
    pub ping_interval: Duration,
    /// Runs on the reader thread each time it has handled every answer it
    /// has read and is about to wait for more: completions can gather
    /// their work (the block service's replies) and finish it here, once
    /// per batch of answers. It also runs before the reader logs in again
    /// or ends, so no work deferred to it is left behind.
    pub on_idle: Option<IdleHook>,
}

/// See [`SessionConfig::on_idle`].
#[derive(Clone)]
pub struct IdleHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for IdleHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleHook")
    }
}

impl SessionConfig {
    /// Defaults: 30 s I/O timeout, queue depth 64, 5 s pings.
    pub fn new(login: LoginConfig) -> SessionConfig {
        SessionConfig {
            login,
            io_timeout: Duration::from_secs(30),
            queue_depth: 64,
            ping_interval: Duration::from_secs(5),
            on_idle: None,
        }
    }
}

/// ITTs at or above this are the session's own (NOP-Out pings).
pub(super) const PING_ITT: u32 = 0xffff_ff00;
/// Longest reconnect back-off.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(super) struct Writer {
    /// The connection commands go out on; `None` while the reader logs in
    /// again.
    pub(super) wire: Option<Wire>,
    /// Which connection `wire` is: bumped by every reconnect, so a chore,
    /// an R2T or a sent command from an older connection is recognised as
    /// stale. Only read and changed under the writer lock.
    pub(super) generation: u64,
    /// Frames are encoded here, reused so a busy session allocates once.
    pub(super) frames: Frames,
}

impl State {
    /// A fresh initiator task tag (below the session's own).
    pub(super) fn take_itt(&mut self) -> u32 {
        let itt = self.next_itt;
        self.next_itt = if self.next_itt + 1 >= PING_ITT {
            1
        } else {
            self.next_itt + 1
        };
        itt
    }
}

impl Writer {
    /// Sends what `frames` holds and empties it.
    fn send_frames(&mut self) {
        if !self.frames.is_empty() {
            if let Some(wire) = self.wire.as_mut() {
                let mut slices = self.frames.slices();
                if let Err(e) = wire.send_vectored(&mut slices) {
                    // The reader notices too and reconnects; the commands
                    // are still in the table and will be sent again.
                    tracing::debug!("send failed: {e}");
                    wire.shutdown();
                }
            }
        }
        self.frames.clear();
    }
}

pub(super) struct State {
    pub(super) neg: Negotiated,
    pub(super) cmd_sn: u32,
    pub(super) exp_stat_sn: u32,
    pub(super) max_cmd_sn: u32,
    pub(super) next_itt: u32,
    pub(super) next_seq: u64,
    pub(super) tasks: HashMap<u32, Task>,
    /// Tasks not yet sent on the current connection, by issue order.
    pub(super) unsent: BTreeMap<u64, u32>,
    pub(super) closing: bool,
    pub(super) reconnects: u64,
    /// Work for the sender thread.
    pub(super) chores: VecDeque<Chore>,
    /// Answers to task management requests, by their ITT.
    pub(super) tmf_answers: HashMap<u32, u8>,
    /// Threads waiting on `room`: the reader signals it only when there
    /// are any (a signal is a system call, even with nobody waiting).
    pub(super) room_waiters: usize,
}

pub(super) struct Shared {
    pub(super) cfg: SessionConfig,
    pub(super) writer: Mutex<Writer>,
    pub(super) state: Mutex<State>,
    /// Signalled when a slot frees, the window opens or the connection changes.
    pub(super) room: Condvar,
    /// Wakes the sender thread.
    pub(super) kick: Condvar,
}

/// A logged-in session with pipelined commands; cheap to share by `Arc`.
pub struct Session {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// A submitted command; [`Session::wait`] returns its result.
pub struct Ticket {
    itt: u32,
    opcode: u8,
    deadline: Instant,
    wake: Arc<Condvar>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
            closing: false,
            reconnects: 0,
            chores: VecDeque::new(),
            tmf_answers: HashMap::new(),
            room_waiters: 0,
        };
        let shared = Arc::new(Shared {
            cfg,
            writer: Mutex::new(Writer {
                wire: Some(wire),
                generation: 1,
                frames: Frames::default(),
            }),
            state: Mutex::new(state),
            room: Condvar::new(),
            kick: Condvar::new(),
        });
        let spawn_err = |source| IscsiError::Io {
            portal: shared.cfg.login.portal.clone(),
            source,
        };
        let s2 = shared.clone();
        let sender = std::thread::Builder::new()
            .name("iscsi-sender".into())
            .spawn(move || super::sender::sender_loop(&s2))
            .map_err(spawn_err)?;
        // From here on, dropping the session stops the sender thread.
        let mut session = Session {
            shared: shared.clone(),
            threads: vec![sender],
        };
        let s2 = shared.clone();
        let reader = std::thread::Builder::new()
            .name("iscsi-reader".into())
            .spawn(move || super::reader::reader_loop(&s2, reader_wire, 1))
            .map_err(spawn_err)?;
        session.threads.push(reader);
        Ok(session)
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
        let opcode = req.opcode();
        let deadline = Instant::now() + self.shared.cfg.io_timeout;
        let (itt, wake) = self.enqueue(req, deadline, &mut None, true)?;
        Ok(Ticket {
            itt,
            opcode,
            deadline,
            wake,
        })
    }

    /// Queues a command nobody waits for: `done` runs when it ends (see
    /// [`Completion`] for on which thread), with the same retries of the
    /// connection and the same timeout and abort as [`Session::wait`]
    /// gives. The calling thread waits only for room in the queue, so a
    /// thread that reads requests can hand each to the target itself and
    /// go on reading. Its R2Ts are served by the session's sender thread.
    ///
    /// With `hold`, the command waits in the queue until a later `start`
    /// without it, or [`Session::send_held`]: a caller that has several
    /// commands at hand sends them in one write (one system call, one
    /// wake-up of the target) instead of one each.
    pub fn start(&self, req: Request, done: Completion, hold: bool) {
        let deadline = Instant::now() + self.shared.cfg.io_timeout;
        let mut done = Some(done);
        if let Err(e) = self.enqueue(req, deadline, &mut done, !hold) {
            if let Some(d) = done {
                d.call(Err(e));
            }
        }
    }

    /// Sends the commands [`Session::start`] held back (those the window
    /// allows; the rest follow as it opens).
    pub fn send_held(&self) {
        self.shared.pump();
    }

    /// Waits for room, then records the command (taking `done`, if any)
    /// and, with `send`, sends what the window allows.
    fn enqueue(
        &self,
        req: Request,
        deadline: Instant,
        done: &mut Option<Completion>,
        send: bool,
    ) -> Result<(u32, Arc<Condvar>), IscsiError> {
        let sh = &self.shared;
        let opcode = req.opcode();
        if req.cdb.len() > 16 {
            return Err(IscsiError::Invalid(format!(
                "CDB of {} bytes (at most 16)",
                req.cdb.len()
            )));
        }
        let mut s = lock(&sh.state);
        // Only commands without an answer count: answered ones wait for
        // their callers, who may be right here waiting for room.
        let mut pumped = false;
        while s.tasks.values().filter(|t| t.outcome.is_none()).count() >= sh.cfg.queue_depth
            && !s.closing
        {
            if !pumped && !s.unsent.is_empty() {
                // Held commands free no room until they go out (if the
                // window keeps them, its opening sends them).
                drop(s);
                sh.pump();
                s = lock(&sh.state);
                pumped = true;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(sh.timeout(opcode));
            }
            s = sh.wait_room(s, deadline - now);
        }
        if s.closing {
            return Err(sh.closed());
        }
        let itt = s.take_itt();
        let seq = s.next_seq;
        s.next_seq += 1;
        let mut task = Task::new(seq, req);
        task.done = done.take().map(|d| (d, deadline));
        let wake = task.wake.clone();
        s.tasks.insert(itt, task);
        s.unsent.insert(seq, itt);
        drop(s);
        if send {
            sh.pump();
        }
        Ok((itt, wake))
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
            let sent = task.sent_on.map(|generation| super::abort::Sent {
                itt: t.itt,
                lun: task.req.lun,
                cmd_sn: task.cmd_sn,
                generation,
            });
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
                drop(s);
                // The target may still run it: a write the caller is told
                // failed must not land later.
                if let Some(sent) = sent {
                    sh.abort(sent);
                }
                return Err(sh.timeout(t.opcode));
            }
            s = t
                .wake
                .wait_timeout(s, t.deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// True when no command is in the session's table (tests).
    #[cfg(test)]
    pub(super) fn shared_tasks_empty(&self) -> bool {
        lock(&self.shared.state).tasks.is_empty()
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
            sh.kick.notify_all();
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
        // Commands nobody waits on hear of the close here; the waiters
        // find their tasks gone.
        let pending: Vec<Completion> = lock(&sh.state)
            .tasks
            .drain()
            .filter_map(|(_, t)| t.done.map(|(d, _)| d))
            .collect();
        for d in pending {
            d.call(Err(sh.closed()));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Shared {
    /// Waits on `room` for at most `d`, counted in `room_waiters`.
    pub(super) fn wait_room<'a>(
        &self,
        mut s: MutexGuard<'a, State>,
        d: Duration,
    ) -> MutexGuard<'a, State> {
        s.room_waiters += 1;
        let mut s = self
            .room
            .wait_timeout(s, d)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        s.room_waiters -= 1;
        s
    }

    /// Signals `room` if anyone waits on it.
    pub(super) fn wake_room(&self, s: &State) {
        if s.room_waiters > 0 {
            self.room.notify_all();
        }
    }

    pub(super) fn timeout(&self, opcode: u8) -> IscsiError {
        IscsiError::Timeout {
            opcode,
            secs: self.cfg.io_timeout.as_secs(),
            target: self.cfg.login.target.clone(),
        }
    }

    pub(super) fn closed(&self) -> IscsiError {
        IscsiError::Closed {
            target: self.cfg.login.target.clone(),
        }
    }

    /// Sends every unsent command the window allows, in issue order.
    pub(super) fn pump(&self) {
        let mut w = lock(&self.writer);
        self.pump_locked(&mut w);
    }

    /// Sends every unsent command the window allows, the writer lock held.
    ///
    /// The state lock is held only to pick the commands and number them:
    /// the reader thread needs that lock for every answer, so the encoding
    /// (data digests included) and the socket write happen after it is
    /// released. CmdSNs are only handed out under the writer lock, which
    /// stays held until the frames are written, so they reach the wire in
    /// CmdSN order.
    pub(super) fn pump_locked(&self, w: &mut Writer) {
        let mut batch: Vec<(u32, u32, Request)> = Vec::new();
        let (neg, exp_stat_sn) = {
            let mut s = lock(&self.state);
            // No wire: the reader is logging in again and re-queues every
            // command once it is back.
            if w.wire.is_none() {
                return;
            }
            while let Some((&seq, &itt)) = s.unsent.first_key_value() {
                if !sn_le(s.cmd_sn, s.max_cmd_sn) {
                    break;
                }
                s.unsent.remove(&seq);
                let (cmd_sn, generation) = (s.cmd_sn, w.generation);
                let Some(task) = s.tasks.get_mut(&itt) else {
                    continue;
                };
                task.sent_on = Some(generation);
                task.cmd_sn = cmd_sn;
                // A cheap clone: the write data is shared, not copied.
                batch.push((itt, cmd_sn, task.req.clone()));
                s.cmd_sn = s.cmd_sn.wrapping_add(1);
            }
            if batch.is_empty() {
                return;
            }
            (s.neg.clone(), s.exp_stat_sn)
        };
        for (itt, cmd_sn, req) in &batch {
            encode_command(&mut w.frames, &neg, *itt, *cmd_sn, exp_stat_sn, req);
        }
        w.send_frames();
    }

    pub(super) fn send_data_out(&self, itt: u32, lun: u64, data: &Bytes, x: Transfer) {
        let mut w = lock(&self.writer);
        if w.generation != x.generation {
            return; // The command was sent again on a new connection.
        }
        let (exp_stat_sn, max_send, digests) = {
            let s = lock(&self.state);
            (s.exp_stat_sn, s.neg.max_send as usize, s.neg.digests)
        };
        let start = x.offset as usize;
        let end = (start + x.len as usize).min(data.len());
        encode_data_out(
            &mut w.frames,
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
        w.send_frames();
    }
}
