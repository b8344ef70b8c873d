//! The session's sender thread: sends on behalf of the reader thread
//! (commands the opened window lets out, commands re-queued after a
//! reconnect, NOP-Out answers and pings), so the reader never blocks on a
//! write while the target blocks writing to it.

use super::session::{lock, Shared};
use crate::pdu::bhs::{self, Header};
use crate::pdu::Pdu;

/// Work the reader hands to the sender thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chore {
    /// Send whatever unsent commands the window allows.
    Pump,
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
pub(super) fn sender_loop(sh: &Shared) {
    loop {
        let chores = {
            let mut s = lock(&sh.state);
            while s.chores.is_empty() && !s.closing {
                s = sh.kick.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.closing {
                return;
            }
            std::mem::take(&mut s.chores)
        };
        let mut pumped = false;
        for c in chores {
            match c {
                Chore::Pump if !pumped => {
                    sh.pump();
                    pumped = true;
                }
                Chore::Pump => {}
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
