//! The state machine: the cluster state in memory, applied from the log, and
//! its snapshots on disk.
//!
//! The state is not written at every apply. A snapshot (one sealed file,
//! `snapshot`, replaced atomically) holds the state up to its last log id;
//! at start the node loads it, and openraft re-applies the committed log
//! after it (the log store keeps the committed id). Openraft purges the log
//! only up to the last snapshot, so nothing acknowledged is ever only in
//! memory.

use crate::codec::{CodecError, SNAPSHOT};
use crate::fsutil::{read_sealed, write_sealed, FileError};
use crate::state::{ClusterState, Response};
use crate::{Member, NodeId, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::RwLock;

const SNAPSHOT_FILE: &str = "snapshot";

/// What the state machine has applied.
#[derive(Debug, Clone, Default)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    state: ClusterState,
}

/// A snapshot as stored on disk.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    state: ClusterState,
}

/// The state machine of one node; clones share it.
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    dir: PathBuf,
    snapshot_seq: Arc<AtomicU64>,
    /// The last log id of the snapshot on disk. Held while one is written:
    /// openraft may build a snapshot while another is being installed, and
    /// the older must never replace the newer (the log is purged up to the
    /// newer one).
    on_disk: Arc<tokio::sync::Mutex<Option<LogId<NodeId>>>>,
}

fn snapshot_err(e: FileError) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

impl StateMachineStore {
    /// Opens the state machine kept in `dir`, starting from its snapshot.
    pub fn open(dir: &Path) -> Result<Self, FileError> {
        std::fs::create_dir_all(dir).map_err(crate::fsutil::io_err("cannot create", dir))?;
        crate::fsutil::remove_leftovers(dir)?;
        let applied = match read_sealed::<StoredSnapshot>(SNAPSHOT, &dir.join(SNAPSHOT_FILE))? {
            Some(s) => Applied {
                last_applied: s.meta.last_log_id,
                membership: s.meta.last_membership,
                state: s.state,
            },
            None => Applied::default(),
        };
        Ok(StateMachineStore {
            on_disk: Arc::new(tokio::sync::Mutex::new(applied.last_applied)),
            applied: Arc::new(RwLock::new(applied)),
            dir: dir.to_path_buf(),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Reads the current state. For a linearizable read call
    /// `Raft::ensure_linearizable` first (the API layer does).
    pub async fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&self.applied.read().await.state)
    }

    /// The last log id applied.
    pub async fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.applied.read().await.last_applied
    }

    /// Writes `snap` as the snapshot on disk unless the one there is newer.
    async fn store(&self, snap: StoredSnapshot) -> Result<StoredSnapshot, StorageError<NodeId>> {
        let mut on_disk = self.on_disk.lock().await;
        if snap.meta.last_log_id < *on_disk {
            tracing::debug!(
                "not replacing the snapshot at {:?} with an older one at {:?}",
                *on_disk,
                snap.meta.last_log_id
            );
            return Ok(snap);
        }
        let last = snap.meta.last_log_id;
        let path = self.dir.join(SNAPSHOT_FILE);
        let written = tokio::task::spawn_blocking(move || {
            write_sealed(SNAPSHOT, &path, &snap).map(|()| snap)
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e))))?
        .map_err(snapshot_err)?;
        *on_disk = last;
        Ok(written)
    }
}

/// The bytes of a snapshot as sent to another node: the sealed state.
fn snapshot_data(state: &ClusterState) -> Result<Box<Cursor<Vec<u8>>>, CodecError> {
    crate::codec::seal(SNAPSHOT, state).map(|b| Box::new(Cursor::new(b)))
}

fn sm_read_err(e: CodecError) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let applied = self.applied.read().await.clone();
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match applied.last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id, l.index),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
            snapshot_id,
        };
        let data = snapshot_data(&applied.state).map_err(sm_read_err)?;
        self.store(StoredSnapshot {
            meta: meta.clone(),
            state: applied.state,
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
    {
        let a = self.applied.read().await;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.applied.write().await;
        let mut out = Vec::new();
        for entry in entries {
            a.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(req) => a.state.apply(&req),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::default()
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let state: ClusterState =
            crate::codec::open(SNAPSHOT, snapshot.get_ref()).map_err(|e| {
                StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
            })?;
        let stored = self
            .store(StoredSnapshot {
                meta: meta.clone(),
                state,
            })
            .await?;
        let mut a = self.applied.write().await;
        *a = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: stored.state,
        };
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let stored =
            tokio::task::spawn_blocking(move || read_sealed::<StoredSnapshot>(SNAPSHOT, &path))
                .await
                .map_err(|e| {
                    StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e)))
                })?
                .map_err(snapshot_err)?;
        match stored {
            Some(s) => Ok(Some(Snapshot {
                snapshot: snapshot_data(&s.state).map_err(sm_read_err)?,
                meta: s.meta,
            })),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Membership};

    fn meta(index: u64) -> SnapshotMeta<NodeId, Member> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 0), index)),
            last_membership: StoredMembership::new(None, Membership::new(vec![], None)),
            snapshot_id: format!("s{index}"),
        }
    }

    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sm = StateMachineStore::open(tmp.path()).expect("open");
        let newer = ClusterState {
            next_event: 9,
            ..Default::default()
        };
        sm.store(StoredSnapshot {
            meta: meta(9),
            state: newer.clone(),
        })
        .await
        .expect("store");
        sm.store(StoredSnapshot {
            meta: meta(5),
            state: ClusterState::default(),
        })
        .await
        .expect("store");
        let reopened = StateMachineStore::open(tmp.path()).expect("reopen");
        assert_eq!(reopened.last_applied().await.map(|l| l.index), Some(9));
        assert_eq!(reopened.read(|s| s.clone()).await, newer);
    }
}
