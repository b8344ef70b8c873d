//! `ferry daemon`: run this host's member until told to stop.
//!
//! The daemon serves the cluster database (Raft, the `/v1` API); the node
//! agent (crates/agent) adds its own routes and supervises this host's VMs.

use crate::config::MemberConfig;
use crate::node::Node;
use crate::setup::SetupError;
use std::future::Future;
use tokio::net::TcpListener;

/// Refuses to run a member that has no credentials yet, saying how to get
/// them.
pub fn check_credentials(config: &MemberConfig) -> Result<(), SetupError> {
    let tls = config.tls_dir();
    if tls.join("server-key.pem").exists() {
        return Ok(());
    }
    Err(SetupError::Refused(format!(
        "no credentials in {}: run `ferry cluster create` (first host) or `ferry cluster join` first",
        tls.display()
    )))
}

/// Runs the member until `stop` completes, then shuts it down.
pub async fn run(config: &MemberConfig, stop: impl Future<Output = ()>) -> Result<(), SetupError> {
    run_with(config, axum::Router::new(), stop).await
}

/// Runs the member with `extra` routes (the node agent's) until `stop`
/// completes, then shuts it down.
pub async fn run_with(
    config: &MemberConfig,
    extra: axum::Router,
    stop: impl Future<Output = ()>,
) -> Result<(), SetupError> {
    check_credentials(config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| SetupError::Refused(format!("cannot listen on {}: {e}", config.listen)))?;
    let node = Node::start_with(config.node_config(), listener, extra).await?;
    stop.await;
    tracing::info!("stopping member {}", config.name);
    node.shutdown().await;
    Ok(())
}
