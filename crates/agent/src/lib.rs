//! The node agent of `ferry daemon`: VM roles on top of the cluster
//! database.
//!
//! - [`roles`]: the cluster-wide verbs any member serves (`/v1/roles`,
//!   `/v1/nodes`): define a VM, start it where [`placement`] says, stop,
//!   restart, migrate, drain and resume a host. They read the database and
//!   call the agent of the host concerned.
//! - [`local`]: what this host's agent does to its own VMs with the
//!   engine (crates/vm) and crates/migrate, recording each outcome in the
//!   database: a start, a stop, a migration's switchover.
//! - [`incoming`] and [`remote`]: a migration between two agents: the
//!   destination's agent starts QEMU waiting for the VM and relays the
//!   source's QMP commands to it; the source's agent drives.
//! - [`reconcile`]: at start and every few seconds, the database is told
//!   what really runs here. VMs run under detached supervisors, so a
//!   restarted agent finds them running and re-attaches; it never kills.
//! - [`routes`]: the HTTP endpoints, behind the member's mutual TLS and
//!   token check; [`client`] calls them.

pub mod client;
pub mod console;
pub mod db;
pub mod error;
pub mod incoming;
pub mod local;
pub mod placement;
pub mod reconcile;
pub mod remote;
pub mod resources;
pub mod roles;
pub mod routes;
pub mod types;

pub use error::AgentError;

use ferry_cluster::client::ApiClient;
use ferry_cluster::config::MemberConfig;
use ferry_cluster::setup::SetupError;
use ferry_cluster::tls::Identity;
use ferry_cluster::Member;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a call to another agent that runs a long operation (a start
/// under TCG, a migration, a drain) may take.
pub const LONG_CALL: Duration = Duration::from_secs(1800);

/// What every agent handler works with.
pub struct Agent {
    /// This host's name.
    pub name: String,
    /// This host's member endpoint.
    pub me: Member,
    /// Calls to members and agents with this host's identity (short).
    pub client: ApiClient,
    /// The same, for long operations.
    pub long: ApiClient,
    /// This host's cluster credentials (they also secure migration
    /// streams).
    pub tls_dir: PathBuf,
    /// The cluster network migration streams go over.
    pub migration_network: String,
    /// Where quick migrations save a VM's state (shared storage).
    pub quick_dir: PathBuf,
    /// VMs this host prepared for an incoming migration, whose QEMU takes
    /// relayed QMP commands ([`incoming`]).
    pub incoming: Mutex<std::collections::BTreeSet<String>>,
    /// Migrations a host may take part in at once.
    pub migrations_per_host: u32,
    /// The `ferry` binary (supervisors, migration helpers).
    pub exe: PathBuf,
    /// This host's QEMU and accelerator, once probed: what its CPU profile
    /// is read with (see [`Agent::cpu_profile`]).
    pub qemu: OnceLock<(ferry_qemu::QemuBinary, ferry_qemu::Accel)>,
    /// Progress of the migrations this host drives, by VM.
    pub progress: Mutex<BTreeMap<String, ferry_migrate::Progress>>,
    /// How to cancel each migration this host drives, by VM.
    pub cancels: Mutex<BTreeMap<String, Arc<tokio::sync::Notify>>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// The agent of the member configured by `config`.
    pub fn new(config: &MemberConfig, exe: PathBuf) -> Result<Self, SetupError> {
        let identity = Identity::load(&config.tls_dir())?;
        // The agent calls the same few members again and again (placement,
        // lists, a migration's relayed QMP commands): their connections are
        // kept.
        let client = ApiClient::new(&identity)?.pooled();
        let long = client.clone().with_timeout(LONG_CALL);
        let quick_dir = config
            .agent
            .quick_dir
            .clone()
            .unwrap_or_else(ferry_vm::rundir::root);
        Ok(Agent {
            name: config.name.clone(),
            me: config.member(),
            tls_dir: config.tls_dir(),
            client,
            long,
            migration_network: config.agent.migration_network.clone(),
            quick_dir,
            incoming: Mutex::new(Default::default()),
            migrations_per_host: config.agent.migrations_per_host,
            exe,
            qemu: OnceLock::new(),
            progress: Mutex::new(BTreeMap::new()),
            cancels: Mutex::new(BTreeMap::new()),
        })
    }
}

/// Runs `ferry daemon`: the member with the agent's routes, the agent's
/// reconciliation, until `stop` completes. VMs keep running after it.
pub async fn run(
    config: &MemberConfig,
    exe: PathBuf,
    stop: impl Future<Output = ()>,
) -> Result<(), SetupError> {
    ferry_cluster::daemon::check_credentials(config)?;
    let agent = Arc::new(Agent::new(config, exe)?);
    let router = routes::router(agent.clone());
    let hypervisor = config.role == ferry_cluster::state::HostRole::Hypervisor;
    let background = hypervisor.then(|| {
        local::read_cpu_profile(agent.clone());
        tokio::spawn(reconcile::run(agent.clone()))
    });
    let result = ferry_cluster::daemon::run_with(config, router, stop).await;
    if let Some(task) = background {
        task.abort();
    }
    result
}
