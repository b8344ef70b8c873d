//! The session's command numbering (RFC 7143 3.2.2.1): ExpCmdSN and
//! MaxCmdSN with serial-number arithmetic, shared by every connection of a
//! session ([`Numbering`]), and each connection's commands held until the
//! gap before them fills ([`Window`]).
//!
//! A session runs its numbered commands one after another in CmdSN order,
//! whichever connection they arrive on: a command is taken only when it is
//! next and the one before it has finished, so a read sent on one
//! connection after a write on another always sees the write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Commands the target accepts beyond ExpCmdSN.
pub const QUEUE_DEPTH: u32 = 128;

/// MaxCmdSN to advertise when ExpCmdSN is `exp`.
pub fn max_cmd_sn(exp: u32) -> u32 {
    exp.wrapping_add(QUEUE_DEPTH - 1)
}

/// Serial number comparison (RFC 1982, 32 bits): is `a` before `b`?
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// What to do with an arriving command.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Run it now (it was the next one, or immediate).
    Now,
    /// Held until earlier numbers arrive.
    Held,
    /// Outside the window: drop it silently.
    Drop,
}

/// A session's ExpCmdSN, one for all its connections. Commands are
/// numbered across the session, so a command on one connection may wait
/// for one on another: every advance is published, and a connection
/// holding commands watches for it.
#[derive(Debug)]
pub struct Numbering {
    state: Mutex<Turn>,
    advanced: watch::Sender<u32>,
}

#[derive(Debug)]
struct Turn {
    /// The next CmdSN expected (what replies advertise: a command taken
    /// counts as received while it runs).
    exp_cmd_sn: u32,
    /// The command before ExpCmdSN still runs: ExpCmdSN waits for it.
    running: bool,
}

impl Numbering {
    /// Numbering that starts at `cmd_sn` (the leading login's CmdSN).
    pub fn new(cmd_sn: u32) -> Arc<Numbering> {
        Arc::new(Numbering {
            state: Mutex::new(Turn {
                exp_cmd_sn: cmd_sn,
                running: false,
            }),
            advanced: watch::channel(cmd_sn).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Turn> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next CmdSN expected.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.lock().exp_cmd_sn
    }

    /// Takes `cmd_sn` to run if it is next and nothing runs.
    fn take(&self, cmd_sn: u32) -> Place {
        let mut t = self.lock();
        let max = max_cmd_sn(t.exp_cmd_sn);
        if cmd_sn == t.exp_cmd_sn && !t.running {
            t.running = true;
            t.exp_cmd_sn = t.exp_cmd_sn.wrapping_add(1);
            Place::Taken
        } else if cmd_sn == t.exp_cmd_sn || sn_lt(t.exp_cmd_sn, cmd_sn) && !sn_lt(max, cmd_sn) {
            Place::Ahead
        } else {
            // Behind ExpCmdSN (taken already) or past MaxCmdSN.
            Place::Outside
        }
    }

    /// The taken command finished: the next one may run.
    fn finish(&self) {
        let exp = {
            let mut t = self.lock();
            if !t.running {
                return;
            }
            t.running = false;
            t.exp_cmd_sn
        };
        self.advanced.send_replace(exp);
    }

    /// A receiver that wakes whenever ExpCmdSN advances.
    pub fn watch(&self) -> watch::Receiver<u32> {
        self.advanced.subscribe()
    }
}

enum Place {
    Taken,
    Ahead,
    Outside,
}

/// One connection's view of the numbering: the shared ExpCmdSN and the
/// commands (of type `T`) that arrived here ahead of it.
#[derive(Debug)]
pub struct Window<T> {
    numbering: Arc<Numbering>,
    held: BTreeMap<u32, T>,
}

impl<T> Window<T> {
    /// A window starting at `cmd_sn` (a new session's login CmdSN).
    pub fn new(cmd_sn: u32) -> Self {
        Window::joining(Numbering::new(cmd_sn))
    }

    /// A window on a session's existing numbering (an added connection).
    pub fn joining(numbering: Arc<Numbering>) -> Self {
        Window {
            numbering,
            held: BTreeMap::new(),
        }
    }

    /// The numbering this window shares.
    pub fn numbering(&self) -> &Arc<Numbering> {
        &self.numbering
    }

    /// The next CmdSN expected.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.numbering.exp_cmd_sn()
    }

    /// Whether commands wait here for an earlier number.
    pub fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// Decides about a command with `cmd_sn`; a held command is stored.
    /// A numbered command admitted `Now` runs until [`Window::finish`].
    pub fn admit(&mut self, cmd_sn: u32, immediate: bool, item: T) -> (Admit, Option<T>) {
        if immediate {
            return (Admit::Now, Some(item));
        }
        match self.numbering.take(cmd_sn) {
            Place::Taken => (Admit::Now, Some(item)),
            Place::Ahead if self.held.contains_key(&cmd_sn) => (Admit::Drop, None),
            Place::Ahead => {
                self.held.insert(cmd_sn, item);
                (Admit::Held, None)
            }
            Place::Outside => (Admit::Drop, Some(item)),
        }
    }

    /// The held command whose turn it is now, if any; it runs until
    /// [`Window::finish`].
    pub fn next_ready(&mut self) -> Option<T> {
        let (&first, _) = self.held.first_key_value()?;
        match self.numbering.take(first) {
            Place::Taken => self.held.remove(&first),
            Place::Ahead => None,
            Place::Outside => {
                // Numbers that fell behind ExpCmdSN were duplicates.
                let exp = self.numbering.exp_cmd_sn();
                self.held.retain(|&sn, _| !sn_lt(sn, exp));
                None
            }
        }
    }

    /// The numbered command admitted last has finished: ExpCmdSN moves on
    /// and connections holding the next one are woken.
    pub fn finish(&mut self) {
        self.numbering.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_held_and_dropped() {
        let mut w = Window::new(u32::MAX);
        assert_eq!(w.admit(u32::MAX, false, 'a').0, Admit::Now);
        w.finish();
        assert_eq!(w.exp_cmd_sn(), 0);
        assert_eq!(w.admit(1, false, 'c').0, Admit::Held);
        assert_eq!(w.next_ready(), None);
        assert_eq!(w.admit(0, false, 'b').0, Admit::Now);
        // 'b' counts as received while it runs; 'c' waits until it ends.
        assert_eq!(w.exp_cmd_sn(), 1);
        assert_eq!(w.next_ready(), None);
        w.finish();
        assert_eq!(w.next_ready(), Some('c'));
        w.finish();
        assert_eq!(w.exp_cmd_sn(), 2);
        assert_eq!(w.admit(0, false, 'x').0, Admit::Drop);
        let too_high = max_cmd_sn(w.exp_cmd_sn()).wrapping_add(1);
        assert_eq!(w.admit(too_high, false, 'y').0, Admit::Drop);
        assert_eq!(w.admit(77, true, 'i').0, Admit::Now);
        assert!(sn_lt(u32::MAX, 0));
    }

    #[test]
    fn connections_of_one_session_share_the_numbering() {
        let mut a = Window::new(10);
        let mut b = Window::joining(a.numbering().clone());
        let mut advances = a.numbering().watch();
        // 11 arrives on b before 10 on a: b holds it until a's 10 has run.
        assert_eq!(b.admit(11, false, "b11").0, Admit::Held);
        assert!(b.holds_any());
        assert_eq!(b.next_ready(), None);
        assert_eq!(a.admit(10, false, "a10").0, Admit::Now);
        assert_eq!(b.next_ready(), None, "11 ran while 10 was running");
        assert!(!advances.has_changed().unwrap_or(true));
        a.finish();
        assert!(advances.has_changed().unwrap_or(false));
        advances.mark_unchanged();
        assert_eq!(b.next_ready(), Some("b11"));
        // While 11 runs, the same number again is a duplicate.
        assert_eq!(a.exp_cmd_sn(), 12);
        assert_eq!(a.admit(11, false, "a11").0, Admit::Drop);
        b.finish();
        assert_eq!(a.exp_cmd_sn(), 12);
        assert!(advances.has_changed().unwrap_or(false));
        // A number already run elsewhere is a duplicate.
        assert_eq!(b.admit(12, false, "b12").0, Admit::Now);
        b.finish();
        assert_eq!(a.admit(12, false, "a12").0, Admit::Drop);
        // One held here that another connection then ran is dropped.
        assert_eq!(a.admit(14, false, "a14").0, Admit::Held);
        assert_eq!(b.admit(13, false, "b13").0, Admit::Now);
        b.finish();
        assert_eq!(b.admit(14, false, "b14").0, Admit::Now);
        b.finish();
        assert_eq!(a.next_ready(), None);
        assert!(!a.holds_any());
    }
}
