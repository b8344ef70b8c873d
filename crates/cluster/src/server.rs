//! The HTTPS accept loop: TLS handshake (client certificate required), then
//! HTTP/1.1 served by the axum router.
//!
//! Dropping the [`Server`] stops it: the accept loop is aborted and with it
//! every connection it spawned.

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Who is calling, as the TLS handshake established; every request of a
/// connection carries it as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The SHA-256 (hex) of the client's certificate, if it presented one
    /// (then the cluster CA signed it: certificates of the cluster CA go to
    /// members only).
    pub cert_sha256: Option<String>,
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running endpoint.
#[derive(Debug)]
pub struct Server {
    task: JoinHandle<()>,
    addr: SocketAddr,
}

impl Server {
    /// Serves `router` on `listener` with `tls`.
    pub fn spawn(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        router: Router,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), router));
        Ok(Server { task, addr })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Server {
    /// Stops serving and waits until the listener and every connection are
    /// closed.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    conns.spawn(serve(acceptor.clone(), tcp, peer, router.clone()));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr, router: Router) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!("refused a TLS connection from {peer}: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("TLS handshake from {peer} timed out");
            return;
        }
    };
    let caller = Caller {
        cert_sha256: stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| crate::api::auth::sha256_hex(c.as_ref())),
    };
    let service = TowerToHyperService::new(router.layer(axum::Extension(caller)));
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        // The node agent relays a VM's serial console over an upgraded
        // connection.
        .with_upgrades()
        .await
    {
        tracing::debug!("connection from {peer} ended: {e}");
    }
}
