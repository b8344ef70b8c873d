//! The session's command numbering (RFC 7143 3.2.2.1): ExpCmdSN and
//! MaxCmdSN with serial-number arithmetic, and commands held until the gap
//! before them fills.

use std::collections::BTreeMap;

/// Commands the target accepts beyond ExpCmdSN.
pub const QUEUE_DEPTH: u32 = 128;

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

/// ExpCmdSN, MaxCmdSN and the held commands (of type `T`).
#[derive(Debug)]
pub struct Window<T> {
    /// The next CmdSN expected.
    pub exp_cmd_sn: u32,
    held: BTreeMap<u32, T>,
}

impl<T> Window<T> {
    /// A window starting at `cmd_sn` (the login's CmdSN).
    pub fn new(cmd_sn: u32) -> Self {
        Window {
            exp_cmd_sn: cmd_sn,
            held: BTreeMap::new(),
        }
    }

    /// MaxCmdSN to advertise.
    pub fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.wrapping_add(QUEUE_DEPTH - 1)
    }

    /// Decides about a command with `cmd_sn`; a held command is stored.
    pub fn admit(&mut self, cmd_sn: u32, immediate: bool, item: T) -> (Admit, Option<T>) {
        if immediate {
            return (Admit::Now, Some(item));
        }
        if cmd_sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            return (Admit::Now, Some(item));
        }
        if sn_lt(self.exp_cmd_sn, cmd_sn) && !sn_lt(self.max_cmd_sn(), cmd_sn) {
            if self.held.contains_key(&cmd_sn) {
                return (Admit::Drop, None);
            }
            self.held.insert(cmd_sn, item);
            return (Admit::Held, None);
        }
        (Admit::Drop, Some(item))
    }

    /// The held command that is now next, if any (advances ExpCmdSN).
    pub fn next_ready(&mut self) -> Option<T> {
        let item = self.held.remove(&self.exp_cmd_sn)?;
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_held_and_dropped() {
        let mut w = Window::new(u32::MAX);
        assert_eq!(w.admit(u32::MAX, false, 'a').0, Admit::Now);
        assert_eq!(w.exp_cmd_sn, 0);
        assert_eq!(w.admit(1, false, 'c').0, Admit::Held);
        assert_eq!(w.next_ready(), None);
        assert_eq!(w.admit(0, false, 'b').0, Admit::Now);
        assert_eq!(w.next_ready(), Some('c'));
        assert_eq!(w.exp_cmd_sn, 2);
        assert_eq!(w.admit(0, false, 'x').0, Admit::Drop);
        let too_high = w.max_cmd_sn().wrapping_add(1);
        assert_eq!(w.admit(too_high, false, 'y').0, Admit::Drop);
        assert_eq!(w.admit(77, true, 'i').0, Admit::Now);
        assert!(sn_lt(u32::MAX, 0));
    }
}
