//! Raft RPC endpoints: sealed request in, sealed `Result` out.

use super::App;
use crate::codec::{self, RPC};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, codec::CodecError> {
    codec::open(RPC, body)
}

fn refuse(e: codec::CodecError) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

fn encode<T: Serialize>(reply: &T) -> Response {
    match codec::seal(RPC, reply) {
        Ok(bytes) => ([("content-type", "application/octet-stream")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Append entries (and heartbeats) from the leader.
pub async fn append(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => encode(&app.raft.append_entries(req).await),
        Err(e) => refuse(e),
    }
}

/// A vote request from a candidate.
pub async fn vote(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => encode(&app.raft.vote(req).await),
        Err(e) => refuse(e),
    }
}

/// A snapshot chunk from the leader.
pub async fn snapshot(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => encode(&app.raft.install_snapshot(req).await),
        Err(e) => refuse(e),
    }
}
