//! The application layer: commit a command, read the state linearizably.

use super::admin::leader_for;
use super::types::WriteResult;
use super::{ApiError, App};
use crate::state::{ClusterState, Command, Event, Host, Request, VmDef};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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

/// Answers a read on the leader, after it has confirmed its leadership
/// with a quorum and applied everything committed before the read
/// (`ensure_linearizable`); a follower forwards the same request.
async fn linearizable<R>(
    app: &App,
    headers: &HeaderMap,
    uri: &Uri,
    f: impl FnOnce(&ClusterState) -> R,
) -> Result<Json<R>, ApiError>
where
    R: Serialize + DeserializeOwned,
{
    match app.raft.ensure_linearizable().await {
        Ok(_) => Ok(Json(app.state.read(f).await)),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(fwd))) => {
            let leader = leader_for(headers, &fwd)?;
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            app.client
                .call::<(), R>(&leader, path, None, true)
                .await
                .map(Json)
                .map_err(ApiError::upstream)
        }
        Err(e) => Err(ApiError::unavailable(e)),
    }
}

/// `GET /v1/state`: the whole state.
pub async fn read(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<ClusterState>, ApiError> {
    linearizable(&app, &headers, &uri, |s| s.clone()).await
}

/// `GET /v1/hosts`: every host.
pub async fn hosts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Vec<Host>>, ApiError> {
    linearizable(&app, &headers, &uri, |s| {
        s.hosts.values().cloned().collect()
    })
    .await
}

/// `GET /v1/vms`: every VM definition.
pub async fn vms(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Vec<VmDef>>, ApiError> {
    linearizable(&app, &headers, &uri, |s| s.vms.values().cloned().collect()).await
}

/// `GET /v1/vms/{name}`: one VM definition.
pub async fn vm(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
) -> Result<Json<VmDef>, ApiError> {
    let found = linearizable(&app, &headers, &uri, |s| s.vms.get(&name).cloned()).await?;
    found.0.map(Json).ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no VM {name}"),
    })
}

/// Which events to list.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Only events with a sequence number at least this.
    #[serde(default)]
    pub since: u64,
}

/// `GET /v1/events?since=N`: the events kept, oldest first.
pub async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    linearizable(&app, &headers, &uri, |s| {
        s.events
            .iter()
            .filter(|e| e.seq >= q.since)
            .cloned()
            .collect()
    })
    .await
}
