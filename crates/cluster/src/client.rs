//! HTTPS clients for reaching members: one per call target, with the
//! caller's certificate, checking that the server is the member named.
//!
//! [`Peers`] makes the connections (used by the Raft network and by the
//! API's forwarding); [`ApiClient`] speaks the JSON API (`/v1/...`) for the
//! CLI, the tests and the forwarding of commands and reads to the leader.

use crate::api::types::{ErrorBody, JoinRequest, Status, WriteResult};
use crate::state::{ClusterState, Command};
use crate::tls::{Identity, TlsError};
use crate::{Member, NodeId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The largest JSON reply a client accepts.
pub const MAX_REPLY: usize = 64 << 20;
/// The header that marks a request one member forwarded to another.
pub const FORWARDED: &str = "x-ferry-forwarded";

/// Problems calling a member.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The member's address is not `ip:port`.
    #[error("member {member} has no usable address")]
    BadAddress {
        /// The member.
        member: String,
        /// Why.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The TLS configuration could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connecting or talking HTTP failed.
    #[error("cannot reach {member}")]
    Http {
        /// The member.
        member: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The reply was larger than allowed.
    #[error("reply from {member} exceeds {max} bytes")]
    TooLarge {
        /// The member.
        member: String,
        /// The cap.
        max: usize,
    },
    /// The reply was not the JSON expected.
    #[error("malformed reply from {member}")]
    Malformed {
        /// The member.
        member: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The TLS session showed no server certificate.
    #[error("no certificate seen from {0}")]
    NoPeerCertificate(String),
    /// The member answered with an error.
    #[error("{member} answered {status}: {message}")]
    Api {
        /// The member.
        member: String,
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// A client for one member and the base URL to use with it.
type ClientAndBase = (reqwest::Client, String);

/// Clients kept per member (name, address), shared by clones.
type Pool = Arc<Mutex<HashMap<(String, String), ClientAndBase>>>;

/// Makes HTTPS clients that reach members with this member's identity.
/// [`Peers::pooled`] ones keep one client (one connection pool) per member,
/// shared by clones, so calls after the first reuse its TLS connection.
#[derive(Clone)]
pub struct Peers {
    tls: rustls::ClientConfig,
    timeout: Duration,
    pool: Option<Pool>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peers")
    }
}

impl Peers {
    /// Clients that authenticate as `identity`.
    pub fn new(identity: &Identity) -> Result<Self, TlsError> {
        Ok(Peers {
            tls: identity.client_config()?,
            timeout: Duration::from_secs(10),
            pool: None,
        })
    }

    /// Clients with no certificate (the CLI) that trust servers of the CA
    /// whose certificate is in `ca_cert`.
    pub fn anonymous(ca_cert: &std::path::Path) -> Result<Self, TlsError> {
        Ok(Peers {
            tls: crate::tls::anonymous_client_config(ca_cert)?,
            timeout: Duration::from_secs(10),
            pool: None,
        })
    }

    /// The same, keeping one client per member for every later call (for
    /// a long-lived caller that calls the same few members often).
    pub fn pooled(mut self) -> Self {
        self.pool = Some(Arc::default());
        self
    }

    /// How long one call may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        // Clients carry their timeout: this one needs clients of its own.
        if self.pool.is_some() {
            self.pool = Some(Arc::default());
        }
        self
    }

    /// A client that reaches `member` and the base URL to use with it. A
    /// member with a name is dialled by name at its address, and its
    /// certificate must carry the name; one without (the CLI given only an
    /// address) must have the address in its certificate.
    pub fn client_for(&self, member: &Member) -> Result<(reqwest::Client, String), ClientError> {
        let Some(pool) = &self.pool else {
            return self.client_with(member, false);
        };
        let key = (member.name.clone(), member.addr.clone());
        if let Some(hit) = pool.lock().ok().and_then(|p| p.get(&key).cloned()) {
            return Ok(hit);
        }
        let made = self.client_with(member, false)?;
        if let Ok(mut pool) = pool.lock() {
            pool.insert(key, made.clone());
        }
        Ok(made)
    }

    fn client_with(
        &self,
        member: &Member,
        tls_info: bool,
    ) -> Result<(reqwest::Client, String), ClientError> {
        let addr: SocketAddr = member
            .addr
            .parse()
            .map_err(|source| ClientError::BadAddress {
                member: member.to_string(),
                source,
            })?;
        let mut builder = reqwest::Client::builder().use_preconfigured_tls(self.tls.clone());
        let base = if member.name.is_empty() {
            format!("https://{addr}")
        } else {
            builder = builder.resolve(&member.name, addr);
            format!("https://{}:{}", member.name, addr.port())
        };
        let client = builder
            .tls_info(tls_info)
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.timeout)
            .build()
            .map_err(|source| ClientError::Http {
                member: member.to_string(),
                source,
            })?;
        Ok((client, base))
    }
}

/// A member's refusal: its JSON error message, or the raw body.
fn api_error(member: &Member, status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    ClientError::Api {
        member: member.to_string(),
        status: status.as_u16(),
        message,
    }
}

/// Reads a reply body, refusing one larger than `max`.
pub async fn read_capped(
    member: &Member,
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::TooLarge {
        member: member.to_string(),
        max,
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| ClientError::Http {
        member: member.to_string(),
        source,
    })? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A client of the members' JSON API.
#[derive(Clone)]
pub struct ApiClient {
    peers: Peers,
    token: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client that authenticates as `identity`.
    pub fn new(identity: &Identity) -> Result<Self, TlsError> {
        Ok(ApiClient {
            peers: Peers::new(identity)?,
            token: None,
        })
    }

    /// A client over existing [`Peers`].
    pub fn from_peers(peers: Peers) -> Self {
        ApiClient { peers, token: None }
    }

    /// The same client, allowing each call `timeout` (for long operations).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.peers = self.peers.with_timeout(timeout);
        self
    }

    /// The same client, keeping one connection pool per member
    /// ([`Peers::pooled`]).
    pub fn pooled(mut self) -> Self {
        self.peers = self.peers.pooled();
        self
    }

    /// The same client, presenting `token` as a bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Calls `path` on `member`: POST with a JSON body, or GET without one.
    pub async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        member: &Member,
        path: &str,
        body: Option<&B>,
        forwarded: bool,
    ) -> Result<R, ClientError> {
        let (client, base) = self.peers.client_for(member)?;
        let url = format!("{base}{path}");
        let mut req = match body {
            Some(b) => client.post(url).json(b),
            None => client.get(url),
        };
        if forwarded {
            req = req.header(FORWARDED, "1");
        }
        let resp = self.send(member, req).await?;
        let status = resp.status();
        let bytes = read_capped(member, resp, MAX_REPLY).await?;
        if !status.is_success() {
            return Err(api_error(member, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Malformed {
            member: member.to_string(),
            source,
        })
    }

    /// Opens `path` on `member` as an upgraded connection speaking
    /// `protocol` (HTTP/1.1 `Upgrade`), e.g. a VM's serial console.
    pub async fn upgrade(
        &self,
        member: &Member,
        path: &str,
        protocol: &str,
    ) -> Result<reqwest::Upgraded, ClientError> {
        let (client, base) = self.peers.client_for(member)?;
        let req = client
            .get(format!("{base}{path}"))
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, protocol);
        let resp = self.send(member, req).await?;
        let status = resp.status();
        if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let bytes = read_capped(member, resp, MAX_REPLY).await?;
            return Err(api_error(member, status, &bytes));
        }
        resp.upgrade().await.map_err(|source| ClientError::Http {
            member: member.to_string(),
            source,
        })
    }

    /// Sends `req` to `member` with this client's token, if any.
    async fn send(
        &self,
        member: &Member,
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req.send().await.map_err(|source| ClientError::Http {
            member: member.to_string(),
            source,
        })
    }

    /// Makes `member` the first member of a new cluster.
    pub async fn init(&self, member: &Member) -> Result<Status, ClientError> {
        self.call(member, "/v1/cluster/init", Some(&()), false)
            .await
    }

    /// Asks the cluster, through `via`, to take a member in as a voter.
    pub async fn join(&self, via: &Member, req: &JoinRequest) -> Result<Status, ClientError> {
        self.call(via, "/v1/cluster/join", Some(req), false).await
    }

    /// The certificate (DER) `member` serves with (the same it
    /// authenticates with as a client).
    pub async fn peer_certificate(&self, member: &Member) -> Result<Vec<u8>, ClientError> {
        let (client, base) = self.peers.client_with(member, true)?;
        let resp = client
            .get(format!("{base}/v1/cluster/status"))
            .send()
            .await
            .map_err(|source| ClientError::Http {
                member: member.to_string(),
                source,
            })?;
        resp.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec)
            .ok_or_else(|| ClientError::NoPeerCertificate(member.to_string()))
    }

    /// Asks the cluster, through `via`, to remove member `id` (it may be
    /// `via` itself, or the leader).
    pub async fn leave(&self, via: &Member, id: NodeId) -> Result<Status, ClientError> {
        let req = crate::api::types::LeaveRequest { id };
        self.call(via, "/v1/cluster/leave", Some(&req), false).await
    }

    /// The Raft status of `member` as it sees it.
    pub async fn status(&self, member: &Member) -> Result<Status, ClientError> {
        self.call::<(), _>(member, "/v1/cluster/status", None, false)
            .await
    }

    /// Commits `command` through `via` (forwarded to the leader).
    pub async fn write(&self, via: &Member, command: &Command) -> Result<WriteResult, ClientError> {
        self.call(via, "/v1/commands", Some(command), false).await
    }

    /// Asks `via` (the member holding the CA) for a host certificate.
    pub async fn certificate(
        &self,
        via: &Member,
        name: &str,
        addresses: &[std::net::IpAddr],
    ) -> Result<crate::api::types::Credentials, ClientError> {
        let req = crate::api::types::CertificateRequest {
            name: name.to_string(),
            addresses: addresses.to_vec(),
        };
        self.call(via, "/v1/cluster/certificates", Some(&req), false)
            .await
    }

    /// Reads one VM definition linearizably through `via`.
    pub async fn vm(&self, via: &Member, name: &str) -> Result<crate::state::VmDef, ClientError> {
        self.call::<(), _>(via, &format!("/v1/vms/{name}"), None, false)
            .await
    }

    /// Reads the events from sequence number `since` linearizably.
    pub async fn events(
        &self,
        via: &Member,
        since: u64,
    ) -> Result<Vec<crate::state::Event>, ClientError> {
        self.call::<(), _>(via, &format!("/v1/events?since={since}"), None, false)
            .await
    }

    /// Reads the whole state linearizably through `via`.
    pub async fn state(&self, via: &Member) -> Result<ClusterState, ClientError> {
        self.call::<(), _>(via, "/v1/state", None, false).await
    }
}
