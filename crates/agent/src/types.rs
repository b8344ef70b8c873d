//! The JSON bodies of the VM-role endpoints (`/v1/roles/...`,
//! `/v1/nodes/...`) and of the agent's own (`/v1/agent/...`).

use ferry_cluster::state::{Migration, Priority, VmDef};
use ferry_vm::StateRecord;
use serde::{Deserialize, Serialize};

/// Define a VM in the cluster (`POST /v1/roles`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The engine's VM spec (as `ferry vm start` reads it, paths absolute).
    pub spec: serde_json::Value,
    /// Its priority.
    #[serde(default)]
    pub priority: Priority,
    /// Preferred owners, in order.
    #[serde(default)]
    pub preferred: Vec<String>,
}

/// Start a VM (`POST /v1/roles/{name}/start`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Start it on this host instead of placing it.
    #[serde(default)]
    pub on: Option<String>,
}

/// Stop a VM (`POST /v1/roles/{name}/stop`, `/v1/agent/vms/{name}/stop`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// End QEMU at once, without asking the guest.
    #[serde(default)]
    pub force: bool,
    /// Seconds the guest may take to power off [default: 30].
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// Migrate a VM (`POST /v1/roles/{name}/migrate`, and to the source's
/// agent, `/v1/agent/vms/{name}/migrate`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The destination host [default: placed, as for a start].
    #[serde(default)]
    pub to: Option<String>,
    /// Quick migration (save, restore) instead of live.
    #[serde(default)]
    pub quick: bool,
    /// Bandwidth cap in MiB/s [default: unlimited].
    #[serde(default)]
    pub bandwidth_mibps: Option<u64>,
}

/// Prepare this host for an incoming migration
/// (`POST /v1/agent/vms/{name}/incoming`, the source's agent to the
/// destination's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingRequest {
    /// The spec the source runs (its `spec.json`, CPU model resolved).
    pub spec: serde_json::Value,
    /// For a quick migration: a file the source just wrote in the state
    /// directory, and what it holds; the destination must read the same,
    /// or the directory is not shared and the VM is not paused.
    #[serde(default)]
    pub probe: Option<SharedProbe>,
}

/// A file one host wrote for another to read back (shared storage check).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedProbe {
    /// The file.
    pub path: std::path::PathBuf,
    /// What it holds.
    pub content: String,
}

/// One QMP command for the QEMU of an incoming migration
/// (`POST /v1/agent/vms/{name}/incoming/qmp`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QmpRequest {
    /// The command.
    pub execute: String,
    /// Its arguments.
    #[serde(default)]
    pub arguments: Option<serde_json::Value>,
}

/// A finished migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Migrated {
    /// The VM.
    pub name: String,
    /// Where it came from.
    pub from: String,
    /// Where it runs now (the owner recorded at the switchover).
    pub to: String,
    /// What it cost.
    pub report: ferry_migrate::MigrationReport,
}

/// Start a VM on this host (`POST /v1/agent/vms/{name}/start`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStart {
    /// Its definition as the database holds it.
    pub def: VmDef,
}

/// A VM as the cluster sees it: its definition, and what its owner's
/// agent says of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleView {
    /// The definition (owner, priority, preferred owners, running).
    pub def: VmDef,
    /// Memory, MiB (from the spec).
    pub memory_mib: u64,
    /// The owner's record of it (state, QEMU pid), if the owner answered.
    pub local: Option<StateRecord>,
    /// Why there is no record, if there is none.
    pub local_error: Option<String>,
    /// The migration in flight, if any.
    pub migration: Option<Migration>,
}

impl RoleView {
    /// The state to show: the owner's record, else what the database says.
    pub fn state(&self) -> String {
        match (&self.local, self.def.running) {
            (Some(r), _) => r.state.to_string(),
            (None, true) => "running (owner silent)".into(),
            (None, false) => "stopped".into(),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainReport {
    /// The host drained (now paused).
    pub host: String,
    /// VMs moved away.
    pub moved: Vec<Migrated>,
    /// VMs that could not be moved, with why.
    pub failed: Vec<(String, String)>,
}
