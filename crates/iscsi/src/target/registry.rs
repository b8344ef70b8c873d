//! Targets with their open LUNs, and the live sessions: built from the
//! configuration, shared by every connection.

use super::session::{Member, SessionCore};
use crate::config::SanConfig;
use crate::login::{Directory, TargetAuth};
use crate::scsi::{Identity, ImageFile, LogicalUnit, LunError, LunMap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why the registry could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A LUN's image could not be opened or created.
    #[error("target {target} LUN {lun}")]
    Lun {
        /// Target name.
        target: String,
        /// LUN number.
        lun: u64,
        /// What failed.
        #[source]
        source: LunError,
    },
}

/// Idle seconds before a NOP-In ping when the configuration says nothing.
pub const DEFAULT_KEEPALIVE_SECS: u64 = 15;

/// One target: who may log in and its LUNs.
pub struct TargetEntry {
    /// Login rules.
    pub auth: TargetAuth,
    /// The logical units.
    pub luns: LunMap,
}

/// A live session, as `ferry san show` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    /// Target-assigned session handle.
    pub tsih: u16,
    /// InitiatorName.
    pub initiator: String,
    /// ISID in hex.
    pub isid: String,
    /// TargetName, or empty for discovery.
    pub target: String,
    /// Peer address of the leading connection.
    pub peer: String,
    /// Connections the session has (several with MaxConnections > 1).
    #[serde(default)]
    pub connections: usize,
}

struct Live {
    info: SessionInfo,
    core: Arc<SessionCore>,
}

impl Live {
    /// The session as `ferry san show` reports it, connections counted now.
    fn shown(&self) -> SessionInfo {
        SessionInfo {
            connections: self.core.connection_count(),
            ..self.info.clone()
        }
    }
}

/// Everything the connections share.
pub struct Registry {
    /// Targets by name.
    pub targets: BTreeMap<String, TargetEntry>,
    /// Portal group tag of every portal.
    pub portal_group: u16,
    /// Addresses announced by SendTargets.
    pub portals: Vec<String>,
    /// How long an idle connection goes before a NOP-In ping (none: never).
    pub keepalive: Option<std::time::Duration>,
    sessions: Mutex<Vec<Live>>,
    next_tsih: Mutex<u16>,
    status_file: Option<PathBuf>,
}

impl Directory for Registry {
    fn target(&self, name: &str) -> Option<TargetAuth> {
        self.targets.get(name).map(|t| t.auth.clone())
    }
}

impl Registry {
    /// Opens every LUN of the configuration (creating sparse images that
    /// do not exist yet).
    pub fn from_config(cfg: &SanConfig, config_path: &Path) -> Result<Registry, RegistryError> {
        let mut targets = BTreeMap::new();
        for t in &cfg.targets {
            let mut luns = LunMap::default();
            for l in &t.luns {
                let err = |source| RegistryError::Lun {
                    target: t.name.clone(),
                    lun: l.id,
                    source,
                };
                let img = ImageFile::open(&l.path, l.size, l.read_only, 512).map_err(err)?;
                let pr_file = cfg.pr_file(config_path, &t.name, l.id);
                let lu = LogicalUnit::new(
                    Box::new(img),
                    Identity::derive(&t.name, l.id),
                    Some(pr_file),
                );
                luns.luns.insert(l.id, Arc::new(lu));
            }
            let auth = TargetAuth {
                alias: t.alias.clone(),
                allowed_initiators: t.allowed_initiators.clone(),
                chap: t.chap.clone(),
                mutual_chap: t.mutual_chap.clone(),
            };
            targets.insert(t.name.clone(), TargetEntry { auth, luns });
        }
        let mut status = config_path.as_os_str().to_owned();
        status.push(".sessions.json");
        Ok(Registry {
            targets,
            portal_group: 1,
            portals: cfg.portals(),
            keepalive: match cfg.keepalive_secs.unwrap_or(DEFAULT_KEEPALIVE_SECS) {
                0 => None,
                secs => Some(std::time::Duration::from_secs(secs)),
            },
            sessions: Mutex::new(Vec::new()),
            next_tsih: Mutex::new(1),
            status_file: Some(PathBuf::from(status)),
        })
    }

    /// The status file `ferry san show` reads (`<config>.sessions.json`).
    pub fn status_path(config_path: &Path) -> PathBuf {
        let mut status = config_path.as_os_str().to_owned();
        status.push(".sessions.json");
        PathBuf::from(status)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Vec<Live>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the session a leading login just completed, with that
    /// connection as its first member; an older session of the same
    /// initiator port (InitiatorName + ISID + target) is told to stop
    /// (session reinstatement).
    pub fn open_session(
        &self,
        mut info: SessionInfo,
        make: impl FnOnce(u16) -> SessionCore,
        cid: u16,
    ) -> (Arc<SessionCore>, Member) {
        let tsih = {
            let mut n = self.next_tsih.lock().unwrap_or_else(|e| e.into_inner());
            let t = *n;
            *n = if *n == u16::MAX { 1 } else { *n + 1 };
            t
        };
        info.tsih = tsih;
        let core = Arc::new(make(tsih));
        let member = core.first(cid);
        let mut s = self.sessions();
        s.retain(|l| {
            let same = l.info.initiator == info.initiator && l.info.isid == info.isid && l.info.target == info.target;
            if same {
                tracing::info!(initiator = %l.info.initiator, isid = %l.info.isid, "session reinstated: closing the old one");
                l.core.stop_all();
            }
            !same
        });
        s.push(Live {
            info,
            core: core.clone(),
        });
        self.write_status(&s);
        (core, member)
    }

    /// Adds a connection to the live session `tsih` (a login with a
    /// non-zero TSIH). The session must belong to the same initiator port
    /// and target and have room under its MaxConnections.
    pub fn join_session(
        &self,
        tsih: u16,
        initiator: &str,
        isid: [u8; 6],
        target: Option<&str>,
        cid: u16,
    ) -> Result<(Arc<SessionCore>, Member), (u8, u8)> {
        let s = self.sessions();
        let Some(live) = s.iter().find(|l| {
            l.core.tsih == tsih
                && l.core.initiator == initiator
                && l.core.isid == isid
                && l.core.target.as_deref() == target
        }) else {
            return Err(crate::login::status::NO_SESSION);
        };
        if live.core.target.is_none() {
            return Err(crate::login::status::CANNOT_INCLUDE);
        }
        let member = live
            .core
            .join(cid)
            .map_err(|_| crate::login::status::TOO_MANY_CONNECTIONS)?;
        let core = live.core.clone();
        self.write_status(&s);
        Ok((core, member))
    }

    /// A connection of `core` ended; returns whether it was the session's
    /// last (the session is then forgotten: nexus loss).
    pub fn leave_session(&self, core: &Arc<SessionCore>, member: &Member) -> bool {
        let mut s = self.sessions();
        let left = core.leave(member);
        if left == 0 {
            s.retain(|l| !Arc::ptr_eq(&l.core, core));
        }
        self.write_status(&s);
        left == 0
    }

    /// The live sessions.
    pub fn session_list(&self) -> Vec<SessionInfo> {
        self.sessions().iter().map(Live::shown).collect()
    }

    fn write_status(&self, s: &[Live]) {
        let Some(path) = &self.status_file else {
            return;
        };
        let list: Vec<SessionInfo> = s.iter().map(Live::shown).collect();
        if let Ok(text) = serde_json::to_string_pretty(&list) {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, path))
                .is_err()
            {
                tracing::debug!(path = %path.display(), "cannot write session status");
            }
        }
    }
}
