//! What the connections of one session share (RFC 7143 multiple
//! connections per session): who logged in, the session-wide parameters the
//! leading connection negotiated, the command numbering, and a stop signal
//! per connection so a logout or a reinstatement can end any of them.

use super::window::Numbering;
use crate::login::params::Params;
use crate::scsi::Nexus;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One session, shared by its connections.
#[derive(Debug)]
pub struct SessionCore {
    /// Target-assigned session handle.
    pub tsih: u16,
    /// InitiatorName.
    pub initiator: String,
    /// The initiator's session ID.
    pub isid: [u8; 6],
    /// TargetName; `None` for a discovery session.
    pub target: Option<String>,
    /// What the leading connection negotiated: the session-wide keys
    /// (bursts, R2T rules, MaxConnections) hold for every connection.
    pub params: Params,
    /// ExpCmdSN, one for all connections.
    pub numbering: Arc<Numbering>,
    /// The I_T nexus every connection of the session acts as.
    pub nexus: Nexus,
    connections: Mutex<BTreeMap<u16, (u64, watch::Sender<bool>)>>,
}

/// A connection's place in its session: its CID, a serial telling it
/// apart from a later connection that reinstates the same CID, and the
/// receiver that says when to close.
#[derive(Debug)]
pub struct Member {
    /// The connection ID the initiator chose.
    pub cid: u16,
    serial: u64,
    /// Turns true when the connection must close (logout of the session or
    /// of this connection elsewhere, reinstatement).
    pub stop: watch::Receiver<bool>,
}

/// Why a connection cannot join a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The session already has as many connections as negotiated.
    #[error("the session has its {0} connection(s) already (MaxConnections)")]
    TooMany(u32),
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

impl SessionCore {
    /// A session as its leading connection's login left it.
    pub fn new(
        tsih: u16,
        initiator: String,
        isid: [u8; 6],
        target: Option<String>,
        params: Params,
        cmd_sn: u32,
        portal_group: u16,
    ) -> SessionCore {
        let isid_hex: String = isid.iter().map(|b| format!("{b:02x}")).collect();
        let nexus = Nexus {
            initiator_port: format!("{initiator},i,0x{isid_hex}"),
            rel_port: portal_group,
        };
        SessionCore {
            tsih,
            initiator,
            isid,
            target,
            params,
            numbering: Numbering::new(cmd_sn),
            nexus,
            connections: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, (u64, watch::Sender<bool>)>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds connection `cid`. A live connection with the same CID is told
    /// to close and replaced (connection reinstatement, RFC 7143 6.3.4).
    pub fn join(&self, cid: u16) -> Result<Member, JoinError> {
        let mut conns = self.lock();
        if let Some((_, old)) = conns.get(&cid) {
            tracing::info!(
                tsih = self.tsih,
                cid,
                "connection reinstated: closing the old one"
            );
            let _ = old.send(true);
        } else if conns.len() >= self.params.max_connections.max(1) as usize {
            return Err(JoinError::TooMany(self.params.max_connections));
        }
        Ok(Self::enter(&mut conns, cid))
    }

    /// The leading connection of a session nobody else has seen yet.
    pub fn first(&self, cid: u16) -> Member {
        Self::enter(&mut self.lock(), cid)
    }

    fn enter(conns: &mut BTreeMap<u16, (u64, watch::Sender<bool>)>, cid: u16) -> Member {
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let (tx, stop) = watch::channel(false);
        conns.insert(cid, (serial, tx));
        Member { cid, serial, stop }
    }

    /// Removes a connection that ended; returns how many remain. A
    /// connection already replaced by its reinstatement removes nothing.
    pub fn leave(&self, member: &Member) -> usize {
        let mut conns = self.lock();
        if conns
            .get(&member.cid)
            .is_some_and(|(s, _)| *s == member.serial)
        {
            conns.remove(&member.cid);
        }
        conns.len()
    }

    /// Tells connection `cid` to close; false if there is none.
    pub fn stop_connection(&self, cid: u16) -> bool {
        match self.lock().get(&cid) {
            Some((_, tx)) => {
                let _ = tx.send(true);
                true
            }
            None => false,
        }
    }

    /// Tells every connection to close (logout of the session, session
    /// reinstatement).
    pub fn stop_all(&self) {
        for (_, tx) in self.lock().values() {
            let _ = tx.send(true);
        }
    }

    /// How many connections the session has.
    pub fn connection_count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(max: u32) -> SessionCore {
        let params = Params {
            max_connections: max,
            ..Params::default()
        };
        SessionCore::new(
            3,
            "iqn.i".into(),
            [1; 6],
            Some("iqn.t".into()),
            params,
            1,
            1,
        )
    }

    #[test]
    fn joins_up_to_max_connections_and_reinstates_a_cid() {
        let s = core(2);
        let a = s.first(0);
        let b = s.join(1).expect("second");
        assert_eq!(s.join(2).unwrap_err(), JoinError::TooMany(2));
        // The same CID again replaces the old connection.
        let b2 = s.join(1).expect("reinstated");
        assert!(*b.stop.borrow());
        assert!(!*b2.stop.borrow());
        // The replaced connection's end removes nothing.
        assert_eq!(s.leave(&b), 2);
        assert!(s.stop_connection(1));
        assert!(*b2.stop.borrow());
        assert!(!s.stop_connection(7));
        assert_eq!(s.leave(&b2), 1);
        s.stop_all();
        assert!(*a.stop.borrow());
        assert_eq!(s.leave(&a), 0);
    }
}
