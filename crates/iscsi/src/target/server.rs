//! The TCP server: listens on every configured portal and runs each
//! connection on a thread of its own until shut down.
//!
//! A thread per connection, as Linux's own target (LIO) runs one per
//! connection: a command's disk I/O then runs inline on the connection's
//! thread. On a shared runtime every command had to hand the worker's
//! queue to another thread first (`block_in_place`) and take it back after,
//! two thread switches and a contended lock per command, a third of the
//! target's cost for 4 KiB reads.

use super::connection;
use super::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A portal could not be bound.
    #[error("cannot listen on {portal}")]
    Bind {
        /// The portal address.
        portal: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds every portal, then serves until `shutdown` completes.
pub async fn serve(
    registry: Arc<Registry>,
    portals: &[String],
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut listeners = Vec::new();
    for p in portals {
        let l = TcpListener::bind(p)
            .await
            .map_err(|source| ServeError::Bind {
                portal: p.clone(),
                source,
            })?;
        info!(portal = %p, "listening");
        listeners.push(l);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let reg = registry.clone();
        tasks.spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, peer)) => {
                        tracing::debug!(%peer, "connection");
                        match s.into_std() {
                            Ok(s) => run_on_own_thread(s, reg.clone()),
                            Err(e) => warn!(%peer, error = %e, "cannot take over a connection"),
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    shutdown.await;
    info!("shutting down");
    tasks.abort_all();
    Ok(())
}

/// Runs one connection to its end on a new thread with a runtime of its
/// own (blocking disk I/O there holds up this connection only).
fn run_on_own_thread(stream: std::net::TcpStream, registry: Arc<Registry>) {
    let started = std::thread::Builder::new()
        .name("iscsi-conn".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return warn!(error = %e, "cannot start a connection's runtime"),
            };
            rt.block_on(async move {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) => connection::run(s, registry).await,
                    Err(e) => warn!(error = %e, "cannot register a connection"),
                }
            });
        });
    if let Err(e) = started {
        warn!(error = %e, "cannot start a connection thread");
    }
}
