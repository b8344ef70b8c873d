//! The agent's errors and how they answer over HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_cluster::api::types::ErrorBody;

/// Why a VM-role operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// No such VM or host.
    #[error("{0}")]
    NotFound(String),
    /// It conflicts with the current state (running elsewhere, busy).
    #[error("{0}")]
    Conflict(String),
    /// No host can take the VM.
    #[error(transparent)]
    NoHost(#[from] crate::placement::NoHost),
    /// The cluster database or another agent could not be reached.
    #[error(transparent)]
    Cluster(#[from] ferry_cluster::client::ClientError),
    /// The VM engine failed.
    #[error(transparent)]
    Vm(#[from] ferry_vm::VmError),
    /// The migration failed (the VM stays on the source).
    #[error("migration failed; the VM stays on the source")]
    Migrate(#[from] ferry_migrate::MigrateError),
    /// A QEMU of this host refused or failed a command relayed to it.
    #[error(transparent)]
    Qmp(#[from] ferry_qemu::QmpError),
    /// Something else went wrong here.
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    fn status(&self) -> StatusCode {
        match self {
            AgentError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AgentError::NotFound(_) => StatusCode::NOT_FOUND,
            AgentError::Conflict(_) | AgentError::NoHost(_) => StatusCode::CONFLICT,
            AgentError::Cluster(ferry_cluster::client::ClientError::Api { status, .. }) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            AgentError::Cluster(_) => StatusCode::BAD_GATEWAY,
            AgentError::Vm(ferry_vm::VmError::NotFound { .. }) => StatusCode::NOT_FOUND,
            AgentError::Vm(ferry_vm::VmError::AlreadyRunning { .. }) => StatusCode::CONFLICT,
            AgentError::Migrate(ferry_migrate::MigrateError::Busy { .. }) => StatusCode::CONFLICT,
            AgentError::Qmp(ferry_qemu::QmpError::Command { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The whole chain of causes, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("{}", chain(&self));
        }
        (
            status,
            Json(ErrorBody {
                error: chain(&self),
            }),
        )
            .into_response()
    }
}
