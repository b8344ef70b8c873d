//! The session's sender thread: sends on behalf of the reader thread
//! (commands the opened window lets out, commands re-queued after a
//! reconnect, NOP-Out answers and pings, the Data-Out that R2Ts ask of
//! commands nobody waits on), so the reader never blocks on a write while
//! the target blocks writing to it. It also times out the commands nobody
//! waits on.

use super::abort::Sent;
use super::session::{lock, Shared};
use super::task::Completion;
use crate::pdu::bhs::{self, Header};
use crate::pdu::Pdu;
use std::sync::Arc;
use std::time::Instant;

/// Work the reader hands to the sender thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chore {
    /// Send whatever unsent commands the window allows.
    Pump,
    /// Serve the R2Ts queued on this task (one nobody waits on).
    Transfers(u32),
    /// Send a NOP-Out on the connection of this generation.
    Nop {
        /// Connection generation; stale chores are dropped.
        generation: u64,
        /// Target transfer tag to echo (0xffffffff for our own ping).
        ttt: u32,
        /// LUN field to echo.
        lun: u64,
        /// Our ITT (0xffffffff when answering the target's ping).
        itt: u32,
    },
}

impl Shared {
    /// Queues a chore for the sender thread.
    pub(super) fn chore(&self, c: Chore) {
        lock(&self.state).chores.push_back(c);
        self.kick.notify_one();
    }
}

/// Runs chores until the session closes.
pub(super) fn sender_loop(sh: &Arc<Shared>) {
    loop {
        let chores = {
            let mut s = lock(&sh.state);
            while s.chores.is_empty() && !s.closing {
                let next = s
                    .tasks
                    .values()
                    .filter_map(|t| t.done.as_ref().map(|(_, deadline)| *deadline))
                    .min();
                let now = Instant::now();
                // Without a deadline to keep, it still looks again after
                // one I/O timeout: a command started meanwhile has a later
                // deadline than that, so nobody needs to wake this thread
                // for each new command (a wake-up per command cost more
                // than the rest of its path).
                let next = next.unwrap_or(now + sh.cfg.io_timeout);
                match next {
                    d if d <= now => break,
                    d => {
                        s = sh
                            .kick
                            .wait_timeout(s, d - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                }
            }
            if s.closing {
                return;
            }
            std::mem::take(&mut s.chores)
        };
        expire(sh);
        let mut pumped = false;
        for c in chores {
            match c {
                Chore::Pump if !pumped => {
                    sh.pump();
                    pumped = true;
                }
                Chore::Pump => {}
                Chore::Transfers(itt) => serve_transfers(sh, itt),
                Chore::Nop {
                    generation,
                    ttt,
                    lun,
                    itt,
                } => send_nop_out(sh, generation, ttt, lun, itt),
            }
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

/// Sends the Data-Out for every R2T queued on the task `itt`.
fn serve_transfers(sh: &Shared, itt: u32) {
    let (data, lun, transfers) = {
        let mut s = lock(&sh.state);
        let Some(t) = s.tasks.get_mut(&itt) else {
            return; // Ended or timed out meanwhile.
        };
        let transfers: Vec<_> = t.transfers.drain(..).collect();
        (t.req.data.clone(), t.req.lun, transfers)
    };
    for x in transfers {
        sh.send_data_out(itt, lun, &data, x);
    }
}

/// Ends the commands nobody waits on whose time is up: each is aborted at
/// the target (so a write reported failed cannot land later) and then its
/// completion hears of the timeout — on a thread of its own, since an
/// abort may wait seconds for its answer and this thread sends the pings.
fn expire(sh: &Arc<Shared>) {
    let now = Instant::now();
    let mut expired: Vec<(Completion, Option<Sent>, u8)> = Vec::new();
    {
        let mut s = lock(&sh.state);
        let due: Vec<u32> = s
            .tasks
            .iter()
            .filter(|(_, t)| t.done.as_ref().is_some_and(|(_, d)| *d <= now))
            .map(|(itt, _)| *itt)
            .collect();
        for itt in due {
            let Some(t) = s.tasks.remove(&itt) else {
                continue;
            };
            s.unsent.remove(&t.seq);
            let sent = t.sent_on.map(|generation| Sent {
                itt,
                lun: t.req.lun,
                cmd_sn: t.cmd_sn,
                generation,
            });
            if let Some((done, _)) = t.done {
                expired.push((done, sent, t.req.opcode()));
            }
        }
        if !expired.is_empty() {
            sh.room.notify_all();
        }
    }
    for (done, sent, opcode) in expired {
        tracing::warn!(opcode, target = %sh.cfg.login.target, "iSCSI command timed out");
        // Shared with the thread so it still runs if the thread cannot start.
        let job = Arc::new(std::sync::Mutex::new(Some(done)));
        let (sh2, job2) = (sh.clone(), job.clone());
        let spawned = std::thread::Builder::new()
            .name("iscsi-abort".into())
            .spawn(move || {
                if let Some(sent) = sent {
                    sh2.abort(sent);
                }
                if let Some(d) = lock(&job2).take() {
                    d.call(Err(sh2.timeout(opcode)));
                }
            });
        if let Err(e) = spawned {
            // No abort then: dropping the connection ends the task at the
            // target instead (error recovery level 0).
            tracing::error!("cannot start a thread to abort a timed-out command: {e}");
            if let Some(wire) = lock(&sh.writer).wire.as_ref() {
                wire.shutdown();
            }
            if let Some(d) = lock(&job).take() {
                d.call(Err(sh.timeout(opcode)));
            }
        }
    }
}
