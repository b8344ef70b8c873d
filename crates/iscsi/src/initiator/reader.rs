//! The session's reader thread: every PDU from the target goes through
//! here, is matched to its task by ITT and wakes the caller waiting on it;
//! the CmdSN window and ExpStatSN follow the target's answers. When the
//! connection breaks (or stays silent past three ping intervals) the reader
//! logs in again and re-queues every outstanding command in issue order.

use super::login::login;
use super::sender::Chore;
use super::session::{lock, Shared, State, MAX_BACKOFF, PING_ITT};
use super::task::{sn_lt, Completion, ScsiResult, Task, Violation};
use super::wire::Wire;
use crate::pdu::bhs::Header;
use crate::pdu::Pdu;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

pub(super) fn reader_loop(sh: &Arc<Shared>, mut wire: Wire, mut generation: u64) {
    let ping = sh.cfg.ping_interval;
    let mut last_rx = Instant::now();
    let mut pinged = false;
    let _ = wire.set_read_timeout(Some(ping));
    loop {
        let why = match wire.recv_idle_routed(|itt| sink_of(sh, itt, generation)) {
            Ok(Some((pdu, placed))) => {
                last_rx = Instant::now();
                pinged = false;
                let next = dispatch(sh, pdu, placed, generation);
                if !wire.buffered() {
                    idle(sh);
                }
                match next {
                    Next::Continue => continue,
                    Next::Pong(ttt, lun) => {
                        sh.chore(Chore::Nop {
                            generation,
                            ttt,
                            lun,
                            itt: 0xffff_ffff,
                        });
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
                        sh.chore(Chore::Nop {
                            generation,
                            ttt: 0xffff_ffff,
                            lun: 0,
                            itt: PING_ITT,
                        });
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
        // Completions already run may have deferred work to the hook.
        idle(sh);
        if lock(&sh.state).closing {
            return;
        }
        tracing::warn!(portal = %sh.cfg.login.portal, target = %sh.cfg.login.target, "iSCSI connection lost ({why}); logging in again");
        // Unblocks a caller stuck writing to a dead connection.
        wire.shutdown();
        let back = reconnect(sh, generation);
        // ... as may those it ended while logging in again.
        idle(sh);
        match back {
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

/// Runs the session's idle hook, if it has one.
fn idle(sh: &Shared) {
    if let Some(hook) = &sh.cfg.on_idle {
        (hook.0)();
    }
}

/// The sink of the command `itt` sent on this connection, if it has one.
fn sink_of(sh: &Shared, itt: u32, generation: u64) -> Option<Arc<super::Sink>> {
    let s = lock(&sh.state);
    let t = s.tasks.get(&itt)?;
    (t.sent_on == Some(generation))
        .then(|| t.req.sink.clone())
        .flatten()
}

/// Handles one PDU; `placed` of its Data-In bytes went into the task's sink.
fn dispatch(sh: &Shared, pdu: Pdu, placed: usize, generation: u64) -> Next {
    let mut ended = None;
    let next = dispatch_locked(sh, pdu, placed, generation, &mut ended);
    // Run with no lock held: it may take a while (the block service writes
    // its reply to QEMU) and may submit more commands.
    if let Some((done, result)) = ended {
        done.call(Ok(result));
    }
    next
}

/// A command nobody waits on that just ended, and its result.
type Ended = Option<(Completion, ScsiResult)>;

fn dispatch_locked(
    sh: &Shared,
    pdu: Pdu,
    placed: usize,
    generation: u64,
    ended: &mut Ended,
) -> Next {
    let mut s = lock(&sh.state);
    if let Some((stat_sn, exp_cmd_sn, max_cmd_sn)) = sequence_numbers(&pdu.header) {
        if let Some(sn) = stat_sn {
            s.exp_stat_sn = sn.wrapping_add(1);
        }
        // RFC 7143 4.2.2.1: ignore a MaxCmdSN below ExpCmdSN - 1.
        if !sn_lt(max_cmd_sn, exp_cmd_sn.wrapping_sub(1)) && sn_lt(s.max_cmd_sn, max_cmd_sn) {
            s.max_cmd_sn = max_cmd_sn;
            if !s.unsent.is_empty() {
                // Never send from the reader: a reader blocked writing while
                // the target blocks writing to it would deadlock both.
                s.chores.push_back(Chore::Pump);
                sh.kick.notify_one();
            }
            sh.wake_room(&s);
        }
    }
    let result = match &pdu.header {
        Header::DataIn(h) if placed > 0 => with_task(sh, &mut s, h.itt, generation, ended, |t| {
            t.data_in_placed(h, placed)
        }),
        Header::DataIn(h) => with_task(sh, &mut s, h.itt, generation, ended, |t| {
            t.data_in(h, pdu.data)
        }),
        Header::ScsiResponse(h) => with_task(sh, &mut s, h.itt, generation, ended, |t| {
            t.response(h, &pdu.data)
        }),
        Header::R2t(h) => with_task(sh, &mut s, h.itt, generation, ended, |t| {
            t.r2t(h, generation)
        }),
        Header::NopIn(n) if n.ttt != 0xffff_ffff => return Next::Pong(n.ttt, n.lun),
        Header::TaskMgmtResp(r) => {
            s.tmf_answers.insert(r.itt, r.response);
            sh.wake_room(&s);
            Ok(())
        }
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
        Ok(()) => {
            let completes = match &pdu.header {
                Header::ScsiResponse(_) => true,
                Header::DataIn(d) => d.has_status,
                _ => false,
            };
            if completes {
                // A submitter may be waiting for a free slot.
                sh.wake_room(&s);
            }
            Next::Continue
        }
        Err(v) => Next::Reconnect(v.0),
    }
}

/// Feeds a PDU to its task, then tells whoever is concerned: the caller
/// waiting on it, or for a command nobody waits on, `ended` (its end) or
/// the sender thread (an R2T to serve).
fn with_task(
    sh: &Shared,
    s: &mut State,
    itt: u32,
    generation: u64,
    ended: &mut Ended,
    f: impl FnOnce(&mut Task) -> Result<(), Violation>,
) -> Result<(), Violation> {
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
    if t.done.is_none() {
        t.wake.notify_all();
    } else if t.outcome.is_some() {
        if let Some(Task {
            done: Some((done, _)),
            outcome: Some(result),
            ..
        }) = s.tasks.remove(&itt)
        {
            *ended = Some((done, result));
        }
    } else if !t.transfers.is_empty() {
        s.chores.push_back(Chore::Transfers(itt));
        sh.kick.notify_one();
    }
    Ok(())
}

/// Logs in again until it works or the session closes; re-queues every
/// outstanding command in its original order.
fn reconnect(sh: &Shared, old: u64) -> Option<(Wire, u64)> {
    {
        let mut w = lock(&sh.writer);
        // Without a wire nothing is sent until the new connection is up.
        if let Some(wire) = w.wire.take() {
            wire.shutdown();
        }
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
                let generation = w.generation + 1;
                {
                    let mut s = lock(&sh.state);
                    if s.closing {
                        wire.shutdown();
                        return None;
                    }
                    s.reconnects += 1;
                    s.cmd_sn = neg.cmd_sn;
                    s.exp_stat_sn = neg.exp_stat_sn;
                    s.max_cmd_sn = neg.max_cmd_sn;
                    s.neg = neg;
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
                }
                w.generation = generation;
                w.wire = Some(wire);
                drop(w);
                sh.chore(Chore::Pump);
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
