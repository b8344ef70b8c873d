//! The cluster database's decoders: any bytes as a log segment, a Raft RPC
//! body, a snapshot, a heartbeat or a command become records or an error, never a panic;
//! a command that decodes applies to a state without panicking.
#![no_main]
use ferry_cluster::codec::{self, RPC, SNAPSHOT};
use ferry_cluster::state::{ClusterState, Request};
use ferry_cluster::TypeConfig;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferry_cluster::log_store::check_segment(data);
    let _ = codec::open::<AppendEntriesRequest<TypeConfig>>(RPC, data);
    let _ = codec::open::<InstallSnapshotRequest<TypeConfig>>(RPC, data);
    let _ = codec::open::<ClusterState>(SNAPSHOT, data);
    let _ = ferry_cluster::heartbeat::open(data, |_| Some(data.to_vec()), 0, |_| None);
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        let mut state = ClusterState::default();
        let _ = state.apply(&req);
        let _ = state.apply(&req);
    }
});
