//! Who may call what.
//!
//! - `/raft/v1/...`: members only (a client certificate of the cluster CA).
//! - `/v1/...`: members, or a client without a certificate that presents
//!   the cluster's API token (`Authorization: Bearer <token>`; the cluster
//!   state keeps only its SHA-256).
//! - A certificate of a member that left (its SHA-256 is in the state's
//!   revoked set) opens nothing.
//!
//! A client certificate of another CA never gets this far: the TLS
//! handshake fails.

use super::{ApiError, App};
use crate::server::Caller;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The SHA-256 of some bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of a token, lowercase hex, as the state keeps it.
pub fn token_sha256(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    ApiError {
        status,
        message: message.to_string(),
    }
    .into_response()
}

/// The middleware that enforces the rules above.
pub async fn require(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let cert = req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.cert_sha256.clone());
    if let Some(cert) = cert {
        if app.state.read(|s| s.revoked_certs.contains(&cert)).await {
            return refuse(
                StatusCode::FORBIDDEN,
                "this certificate belongs to a member that left the cluster",
            );
        }
        return next.run(req).await;
    }
    if req.uri().path().starts_with("/raft/") {
        return refuse(StatusCode::FORBIDDEN, "Raft RPCs are for members only");
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a member certificate or the cluster's API token is required",
        );
    };
    let expected = app.state.read(|s| s.api_token_sha256.clone()).await;
    if expected.is_some_and(|h| h == token_sha256(token)) {
        next.run(req).await
    } else {
        refuse(StatusCode::UNAUTHORIZED, "wrong API token")
    }
}
