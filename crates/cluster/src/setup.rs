//! Making a cluster and joining one: the steps behind `ferry cluster
//! create` and `ferry cluster join`.
//!
//! Create (on the first host, daemon not running): the cluster CA, this
//! host's certificate, the CLI's API token, and a one-member Raft log with
//! this host's record and the token's hash. The daemon then starts from
//! that directory as the leader.
//!
//! Join (on a new host), in two passes of the same verb: first, with the
//! API token and a copy of the CA certificate, fetch a host certificate
//! from the member that holds the CA; once the daemon runs with it, ask the
//! cluster to take this member in (learner, then voter).

use crate::api::auth::token_sha256;
use crate::api::types::{JoinRequest, Status};
use crate::client::{ApiClient, ClientError, Peers};
use crate::config::MemberConfig;
use crate::node::{Node, NodeError};
use crate::state::Command;
use crate::tls::{Identity, TlsError};
use crate::Member;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;

/// How long `join` waits for this host's daemon to answer.
const DAEMON_WAIT: Duration = Duration::from_secs(10);

/// Problems making or joining a cluster.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The CA or a certificate could not be made.
    #[error(transparent)]
    Pki(#[from] ferry_pki::PkiError),
    /// Credentials could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The member could not run.
    #[error(transparent)]
    Node(Box<NodeError>),
    /// Another member could not be reached or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A file could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// This host already has a cluster database.
    #[error("{0} already holds a cluster database")]
    AlreadyMember(PathBuf),
    /// The create step was refused.
    #[error("{0}")]
    Refused(String),
}

impl From<NodeError> for SetupError {
    fn from(e: NodeError) -> Self {
        SetupError::Node(Box::new(e))
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetupError {
    let path = path.to_path_buf();
    move |source| SetupError::Io { what, path, source }
}

/// Writes a private file (mode 0600), atomically and durably.
fn write_private(path: &Path, text: &str) -> Result<(), SetupError> {
    crate::fsutil::write_file(path, text.as_bytes(), 0o600).map_err(|e| match e {
        crate::fsutil::FileError::Io { what, path, source } => {
            SetupError::Io { what, path, source }
        }
        other => SetupError::Io {
            what: "cannot write",
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// A new random API token: 32 bytes from the kernel, hex.
fn new_token() -> Result<String, SetupError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("cannot read", path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What `create` made.
#[derive(Debug, Clone)]
pub struct Created {
    /// The CLI's API token (also in the member's `api-token` file).
    pub token: String,
    /// The CA certificate a joining host needs a copy of.
    pub ca_cert: PathBuf,
}

/// Makes a new cluster with this host as its only member.
pub async fn create(config: &MemberConfig) -> Result<Created, SetupError> {
    let node_config = config.node_config();
    if node_config.data_dir.join("log").join("vote").exists() {
        return Err(SetupError::AlreadyMember(node_config.data_dir));
    }
    let ca = ferry_pki::Ca::open_or_create(&config.ca_dir())?;
    ca.ensure_host(&config.name, &[config.listen.ip()], &config.tls_dir())?;
    let token = new_token()?;
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        SetupError::Refused(format!(
            "cannot listen on {} ({e}): is `ferry daemon` already running?",
            config.listen
        ))
    })?;
    let node = Node::start(node_config, listener).await?;
    let made = async {
        node.init_cluster().await?;
        let r = node
            .commit(Command::SetApiToken {
                sha256: token_sha256(&token),
            })
            .await?;
        match r.refused {
            Some(why) => Err(SetupError::Refused(why)),
            None => Ok(()),
        }
    }
    .await;
    node.shutdown().await;
    made?;
    write_private(&config.token_path(), &format!("{token}\n"))?;
    Ok(Created {
        token,
        ca_cert: config.tls_dir().join("ca-cert.pem"),
    })
}

/// How far `join` got.
#[derive(Debug, Clone)]
pub enum Joined {
    /// The host has its certificate; start the daemon and join again.
    CertificateInstalled(PathBuf),
    /// The member is in the cluster.
    Member(Status),
}

/// Joins the cluster that `via` is a member of (see the module docs).
pub async fn join(
    config: &MemberConfig,
    via: SocketAddr,
    token: &str,
    ca_cert: &Path,
) -> Result<Joined, SetupError> {
    let via = Member {
        name: String::new(),
        addr: via.to_string(),
    };
    let tls = config.tls_dir();
    if !tls.join("server-key.pem").exists() {
        let cli = ApiClient::from_peers(Peers::anonymous(ca_cert)?).with_token(token);
        let creds = cli
            .certificate(&via, &config.name, &[config.listen.ip()])
            .await?;
        std::fs::create_dir_all(&tls).map_err(io("cannot create", &tls))?;
        for role in ["server", "client"] {
            write_private(&tls.join(format!("{role}-key.pem")), &creds.key)?;
            write_private(&tls.join(format!("{role}-cert.pem")), &creds.cert)?;
        }
        write_private(&tls.join("ca-cert.pem"), &creds.ca_cert)?;
        return Ok(Joined::CertificateInstalled(tls));
    }
    let me = ApiClient::new(&Identity::load(&tls)?)?;
    let local = Member {
        name: String::new(),
        addr: config.listen.to_string(),
    };
    // The daemon may have just been started: give it a moment to listen.
    let deadline = tokio::time::Instant::now() + DAEMON_WAIT;
    while let Err(e) = me.status(&local).await {
        if tokio::time::Instant::now() >= deadline {
            return Err(SetupError::Refused(format!(
                "this host's daemon does not answer at {} ({e}): start `ferry daemon` first",
                config.listen
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let networks = config
        .network_addresses()
        .into_iter()
        .map(|(n, ip)| (n, vec![ip]))
        .collect();
    Ok(Joined::Member(
        me.join(
            &via,
            &JoinRequest {
                id: config.id,
                member: config.member(),
                networks,
                role: config.role,
            },
        )
        .await?,
    ))
}

/// Replaces the cluster's API token with a new one, through `via`, and
/// returns it; the old one stops working once the change is applied.
pub async fn rotate_token(client: &ApiClient, via: &Member) -> Result<String, SetupError> {
    let token = new_token()?;
    let r = client
        .write(
            via,
            &Command::SetApiToken {
                sha256: token_sha256(&token),
            },
        )
        .await?;
    match r.response.refused {
        Some(why) => Err(SetupError::Refused(why)),
        None => Ok(token),
    }
}

/// Keeps `token` in a member's `api-token` file (if it has one: the member
/// where the cluster was created).
pub fn save_token(config: &MemberConfig, token: &str) -> Result<bool, SetupError> {
    if !config.token_path().exists() {
        return Ok(false);
    }
    write_private(&config.token_path(), &format!("{token}\n"))?;
    Ok(true)
}

/// A client for the CLI on a member host: the member's own identity.
pub fn member_client(config: &MemberConfig) -> Result<ApiClient, SetupError> {
    Ok(ApiClient::new(&Identity::load(&config.tls_dir())?)?)
}
