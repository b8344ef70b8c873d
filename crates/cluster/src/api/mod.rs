//! The member's HTTPS endpoint, in three layers as in openraft's example:
//!
//! - [`raft`]: Raft RPCs between members (`/raft/v1/...`, sealed bodies);
//! - [`admin`]: cluster membership (`/v1/cluster/...`, JSON);
//! - [`app`]: commands and linearizable reads (`/v1/commands`, `/v1/state`,
//!   `/v1/hosts`, `/v1/vms`, `/v1/vms/{name}`, `/v1/events?since=N`).
//!
//! Every caller has passed mutual TLS with the cluster CA before a handler
//! runs. A member that is not the leader forwards admin and app requests to
//! the leader once (marked with [`crate::client::FORWARDED`]).

pub mod admin;
pub mod app;
pub mod auth;
pub mod raft;
pub mod types;

use crate::client::ApiClient;
use crate::state_machine::StateMachineStore;
use crate::{Member, NodeId, Raft};
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::BTreeMap;
use std::sync::Arc;
use types::ErrorBody;

/// What every handler works with.
pub struct App {
    /// This member's Raft id.
    pub id: NodeId,
    /// This member's name and address.
    pub member: Member,
    /// Its Raft instance.
    pub raft: Raft,
    /// Its state machine, for reads.
    pub state: StateMachineStore,
    /// For forwarding to the leader.
    pub client: ApiClient,
    /// The cluster CA, on the member that holds its key (where the cluster
    /// was created): it issues certificates to joining hosts.
    pub ca_dir: Option<std::path::PathBuf>,
    /// This member's own certificate (DER).
    pub cert_der: Option<Vec<u8>>,
    /// This host's addresses on each cluster network (empty: its endpoint's
    /// address on a network called `cluster`).
    pub networks: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// What this host is for.
    pub role: crate::state::HostRole,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

/// An API error: an HTTP status and a message.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    /// The service cannot answer now (no leader, no quorum, shutting down).
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
        }
    }

    /// The request is wrong.
    pub fn bad_request(e: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
        }
    }

    /// Another member answered with an error or could not be reached.
    pub fn upstream(e: crate::client::ClientError) -> Self {
        let status = match &e {
            crate::client::ClientError::Api { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError {
            status,
            message: format!("{e:#}"),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The routes of a member's endpoint.
pub fn router(app: Arc<App>) -> Router {
    router_with(app, Router::new())
}

/// The member's routes plus `extra` (the node agent's), all behind the
/// same authentication.
pub fn router_with(app: Arc<App>, extra: Router) -> Router {
    let rpc_limit = crate::codec::HEADER_LEN + crate::codec::RPC.max_len as usize;
    let raft_routes = Router::new()
        .route("/raft/v1/append", post(raft::append))
        .route("/raft/v1/vote", post(raft::vote))
        .route("/raft/v1/snapshot", post(raft::snapshot))
        .layer(DefaultBodyLimit::max(rpc_limit));
    let api_routes = Router::new()
        .route("/v1/cluster/init", post(admin::init))
        .route("/v1/cluster/join", post(admin::join))
        .route("/v1/cluster/leave", post(admin::leave))
        .route("/v1/cluster/status", get(admin::status))
        .route("/v1/cluster/certificates", post(admin::certificate))
        .route("/v1/commands", post(app::write))
        .route("/v1/state", get(app::read))
        .route("/v1/hosts", get(app::hosts))
        .route("/v1/vms", get(app::vms))
        .route("/v1/vms/{name}", get(app::vm))
        .route("/v1/events", get(app::events))
        .layer(DefaultBodyLimit::max(types::MAX_REQUEST));
    raft_routes
        .merge(api_routes)
        .with_state(app.clone())
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(app, auth::require))
}
