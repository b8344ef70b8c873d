//! A VM's serial console through the API: the owner's agent relays an
//! upgraded HTTP connection (`Upgrade: ferry-console`, after the member's
//! mutual TLS or token check) to the VM's console socket, byte for byte;
//! and serves the tail of the console log.

use crate::{local, AgentError};
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{header, StatusCode};
use axum::response::Response;
use ferry_vm::RunDir;
use hyper_util::rt::TokioIo;
use std::io::{Read, Seek, SeekFrom};

/// The protocol name of the upgrade.
pub const PROTOCOL: &str = "ferry-console";

/// The most of a console log served at once (its tail).
pub const MAX_LOG: u64 = 256 << 10;

/// `GET /v1/agent/vms/{name}/console` with `Upgrade: ferry-console`.
pub async fn relay(Path(name): Path<String>, mut req: Request) -> Result<Response, AgentError> {
    let wanted = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !wanted {
        return Err(AgentError::BadRequest(format!(
            "the console is an upgrade to {PROTOCOL}"
        )));
    }
    if !local::runs_here(&name) {
        return Err(AgentError::NotFound(format!(
            "VM {name} does not run on this host"
        )));
    }
    let path = RunDir::for_vm(&name).serial();
    let mut serial = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        AgentError::Conflict(format!(
            "cannot attach to the console of {name} (is another console attached?): {e}"
        ))
    })?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                tracing::info!("console of VM {name} attached");
                let mut remote = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut remote, &mut serial).await;
                tracing::info!("console of VM {name} detached");
            }
            Err(e) => tracing::warn!("console upgrade for VM {name} failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Body::empty())
        .map_err(|e| AgentError::Internal(e.to_string()))
}

/// The last [`MAX_LOG`] bytes of VM `name`'s console log on this host.
pub fn log_tail(name: &str) -> Result<String, AgentError> {
    let path = RunDir::for_vm(name).console_log();
    let mut f = std::fs::File::open(&path)
        .map_err(|e| AgentError::NotFound(format!("no console log of VM {name} here: {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| AgentError::Internal(format!("{}: {e}", path.display())))?
        .len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX_LOG)))
        .map_err(|e| AgentError::Internal(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| AgentError::Internal(format!("{}: {e}", path.display())))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
