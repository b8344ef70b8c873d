//! Aborting a command that timed out (ABORT TASK, RFC 7143 11.5).
//!
//! A command whose caller gives up may still be queued or running at the
//! target: a write the caller was told failed could land later, over data
//! written since. So before the timeout is reported, the task is aborted:
//! an immediate ABORT TASK names it (ITT and CmdSN), and its answer —
//! "function complete" or "task does not exist" (it had finished) — means
//! the target will not run it any more. A target that does not answer in
//! time, or refuses, loses the connection instead: at error recovery level
//! 0 the target ends every task of a connection it loses, and the session
//! is reinstated by the reader's next login.

use super::session::{lock, Shared};
use crate::pdu::bhs::{self, Header};
use crate::pdu::Pdu;
use std::time::{Duration, Instant};

/// ABORT TASK (the task management function code).
const ABORT_TASK: u8 = 1;
/// Answers that mean the task will not run: function complete, task does
/// not exist.
const DONE: [u8; 2] = [0, 1];
/// The longest wait for the target's answer to an ABORT TASK.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A command that went out and timed out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// Its initiator task tag.
    pub itt: u32,
    /// Its LUN field.
    pub lun: u64,
    /// The CmdSN it was sent with.
    pub cmd_sn: u32,
    /// The connection it went out on.
    pub generation: u64,
}

impl Shared {
    /// Makes sure the target will not run `sent`: aborts it, or drops its
    /// connection. Returns once either has happened.
    pub(super) fn abort(&self, sent: Sent) {
        let tmf_itt = lock(&self.state).take_itt();
        if !self.send_abort(sent, tmf_itt) {
            // Its connection is gone already, and the task with it.
            return;
        }
        let wait = ANSWER_WAIT.min(self.cfg.io_timeout);
        let deadline = Instant::now() + wait;
        let answer = {
            let mut s = lock(&self.state);
            loop {
                if let Some(a) = s.tmf_answers.remove(&tmf_itt) {
                    break Some(a);
                }
                let now = Instant::now();
                if s.closing || now >= deadline {
                    break None;
                }
                s = self.wait_room(s, deadline - now);
            }
        };
        match answer {
            Some(a) if DONE.contains(&a) => {
                tracing::info!(
                    itt = sent.itt,
                    answer = a,
                    "timed-out iSCSI command aborted"
                );
            }
            other => {
                tracing::warn!(
                    itt = sent.itt,
                    answer = ?other,
                    "the target did not abort a timed-out command in {} ms; dropping the connection so it ends with it",
                    wait.as_millis()
                );
                let mut w = lock(&self.writer);
                if w.generation == sent.generation {
                    if let Some(wire) = w.wire.as_mut() {
                        wire.shutdown();
                    }
                }
            }
        }
    }

    /// Sends the ABORT TASK for `sent` on its connection; false if that
    /// connection is no longer the current one.
    fn send_abort(&self, sent: Sent, tmf_itt: u32) -> bool {
        let mut w = lock(&self.writer);
        if w.generation != sent.generation {
            return false;
        }
        let (cmd_sn, exp_stat_sn) = {
            let s = lock(&self.state);
            (s.cmd_sn, s.exp_stat_sn)
        };
        let h = bhs::TaskMgmtReq {
            immediate: true,
            function: ABORT_TASK,
            lun: sent.lun,
            itt: tmf_itt,
            ref_task_tag: sent.itt,
            cmd_sn,
            exp_stat_sn,
            ref_cmd_sn: sent.cmd_sn,
            exp_data_sn: 0,
        };
        match w.wire.as_mut() {
            Some(wire) => {
                if wire
                    .send(&Pdu::new(Header::TaskMgmtReq(h), Vec::new()))
                    .is_err()
                {
                    wire.shutdown();
                    return false;
                }
                true
            }
            None => false,
        }
    }
}
