//! The application layer: commit a command, read the state linearizably.

use super::admin::leader_for;
use super::types::WriteResult;
use super::{ApiError, App};
use crate::state::{ClusterState, Command, Request};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use std::sync::Arc;

/// `POST /v1/commands`: commits a command (through the leader) and returns
/// once it is applied there.
pub async fn write(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(command): Json<Command>,
) -> Result<Json<WriteResult>, ApiError> {
    match app.raft.client_write(Request::now(command.clone())).await {
        Ok(r) => Ok(Json(WriteResult {
            log_index: r.log_id.index,
            response: r.data,
        })),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            let leader = leader_for(&headers, &f)?;
            app.client
                .call(&leader, "/v1/commands", Some(&command), true)
                .await
                .map(Json)
                .map_err(ApiError::upstream)
        }
        Err(e) => Err(ApiError::unavailable(e)),
    }
}

/// `GET /v1/state`: the whole state, read on the leader after it has
/// confirmed its leadership with a quorum and applied everything committed
/// before the read (`ensure_linearizable`).
pub async fn read(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<ClusterState>, ApiError> {
    match app.raft.ensure_linearizable().await {
        Ok(_) => Ok(Json(app.state.read(|s| s.clone()).await)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            let leader = leader_for(&headers, &f)?;
            app.client
                .call::<(), _>(&leader, "/v1/state", None, true)
                .await
                .map(Json)
                .map_err(ApiError::upstream)
        }
        Err(e) => Err(ApiError::unavailable(e)),
    }
}
