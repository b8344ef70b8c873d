//! The TCP server: listens on every configured portal and runs one task
//! per connection until shut down.

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
                        tokio::spawn(connection::run(s, reg.clone()));
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
