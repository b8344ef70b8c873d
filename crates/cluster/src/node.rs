//! One member of the cluster database: its Raft instance over its on-disk
//! stores, and its HTTPS endpoint.

use crate::api::{self, App};
use crate::client::{ApiClient, Peers};
use crate::heartbeat::{self, HeartbeatConfig, Heartbeats};
use crate::log_store::{LogError, LogStore};
use crate::network::Network;
use crate::server::Server;
use crate::state::HostRole;
use crate::state::{Command, Request, Response};
use crate::state_machine::StateMachineStore;
use crate::tls::{Identity, TlsError};
use crate::{Member, NodeId, Raft};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Problems starting a member.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Its TLS credentials are unusable.
    #[error("TLS credentials")]
    Tls(#[from] TlsError),
    /// Its log cannot be opened.
    #[error("Raft log")]
    Log(#[from] LogError),
    /// Its snapshot cannot be read.
    #[error("state machine")]
    StateMachine(#[from] crate::fsutil::FileError),
    /// The Raft timings are inconsistent.
    #[error("Raft configuration")]
    Config(#[from] openraft::ConfigError),
    /// Raft could not start.
    #[error("Raft start: {0}")]
    Raft(String),
    /// Heartbeats cannot be signed with this member's key.
    #[error(transparent)]
    Heartbeat(#[from] heartbeat::HeartbeatError),
    /// The listener is unusable.
    #[error("listener")]
    Io(#[from] std::io::Error),
}

/// How to run one member.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Its Raft id, unique in the cluster.
    pub id: NodeId,
    /// Its host name (the name in its certificate).
    pub name: String,
    /// Where its log and snapshot live (`<dir>/log`, `<dir>/state`).
    pub data_dir: PathBuf,
    /// Its TLS credentials (a host directory of `ferry_pki`).
    pub tls_dir: PathBuf,
    /// The cluster CA's directory; used to issue certificates to joining
    /// hosts if it holds the CA (`ca-cert.pem` and `ca-key.pem`).
    pub ca_dir: Option<PathBuf>,
    /// Raft timings.
    pub raft: openraft::Config,
    /// Heartbeats on the cluster networks (none if `None`); they also name
    /// the networks this host's record lists.
    pub heartbeat: Option<HeartbeatConfig>,
    /// What this host is for.
    pub role: HostRole,
}

impl NodeConfig {
    /// Raft timings for hosts on one LAN: heartbeat every 250 ms, election
    /// after 1–2 s without one.
    pub fn default_raft() -> openraft::Config {
        openraft::Config {
            cluster_name: "ferry".into(),
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            ..Default::default()
        }
    }
}

/// A running member.
#[derive(Debug)]
pub struct Node {
    app: Arc<App>,
    server: Server,
    heartbeats: Option<Heartbeats>,
}

impl Node {
    /// Starts a member from its directory, serving on `listener`.
    pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Node, NodeError> {
        Self::start_with(config, listener, axum::Router::new()).await
    }

    /// Starts a member that also serves `extra` routes (the node agent's)
    /// behind the same authentication.
    pub async fn start_with(
        config: NodeConfig,
        listener: TcpListener,
        extra: axum::Router,
    ) -> Result<Node, NodeError> {
        let identity = Identity::load(&config.tls_dir)?;
        let peers = Peers::new(&identity)?;
        let log = LogStore::open(&config.data_dir.join("log"))?;
        let state = StateMachineStore::open(&config.data_dir.join("state"))?;
        let raft_config = Arc::new(config.raft.validate()?);
        let raft = Raft::new(
            config.id,
            raft_config,
            Network::new(peers.clone()),
            log,
            state.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let member = Member {
            name: config.name.clone(),
            addr: listener.local_addr()?.to_string(),
        };
        let app = Arc::new(App {
            id: config.id,
            member,
            raft,
            state,
            client: ApiClient::from_peers(peers),
            cert_der: identity.cert_der().map(<[u8]>::to_vec),
            networks: config
                .heartbeat
                .as_ref()
                .map(|h| {
                    h.networks
                        .iter()
                        .map(|(n, ip)| (n.clone(), vec![*ip]))
                        .collect()
                })
                .unwrap_or_default(),
            role: config.role,
            ca_dir: config
                .ca_dir
                .filter(|d| d.join("ca-cert.pem").exists() && d.join("ca-key.pem").exists()),
        });
        let port = listener.local_addr()?.port();
        let server = Server::spawn(
            listener,
            identity.server_config()?,
            api::router_with(app.clone(), extra),
        )?;
        let heartbeats = match config.heartbeat.clone() {
            Some(h) => {
                let signer = heartbeat::Signer::new(&identity)?;
                Some(heartbeat::spawn(app.clone(), h, port, signer).await?)
            }
            None => None,
        };
        tracing::info!(
            "member {} ({}) serving on {}",
            config.id,
            config.name,
            server.addr()
        );
        Ok(Node {
            app,
            server,
            heartbeats,
        })
    }

    /// Its id.
    pub fn id(&self) -> NodeId {
        self.app.id
    }

    /// Its name and address.
    pub fn member(&self) -> &Member {
        &self.app.member
    }

    /// Its Raft instance.
    pub fn raft(&self) -> &Raft {
        &self.app.raft
    }

    /// Its state machine (local, not linearizable: see `/v1/state`).
    pub fn state(&self) -> &StateMachineStore {
        &self.app.state
    }

    /// Makes this member the first of a new cluster.
    pub async fn init_cluster(&self) -> Result<crate::api::types::Status, NodeError> {
        crate::api::admin::create(&self.app)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// Commits a command; this member must be the leader.
    pub async fn commit(&self, command: Command) -> Result<Response, NodeError> {
        self.app
            .raft
            .client_write(Request::now(command))
            .await
            .map(|r| r.data)
            .map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// Stops serving and stops Raft; the directory keeps everything.
    pub async fn shutdown(self) {
        if let Some(h) = self.heartbeats {
            h.stop().await;
        }
        self.server.stop().await;
        if let Err(e) = self.app.raft.shutdown().await {
            tracing::warn!("Raft shutdown of member {}: {e}", self.app.id);
        }
    }
}
