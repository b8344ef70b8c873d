//! The VM's state as the supervisor records it.

use crate::{RunDir, VmError};
use serde::{Deserialize, Serialize};

/// Lifecycle state of a VM on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// QEMU is being launched.
    Starting,
    /// vCPUs run.
    Running,
    /// vCPUs are stopped (by a user, or while starting held).
    Paused,
    /// A shutdown was requested or the guest is shutting down.
    Stopping,
    /// QEMU exited after a shutdown: a clean stop.
    Stopped,
    /// QEMU died without a shutdown (killed, crashed).
    Crashed,
    /// QEMU could not be started.
    Failed,
}

impl VmState {
    /// True when no QEMU runs any more.
    pub fn is_final(self) -> bool {
        matches!(self, VmState::Stopped | VmState::Crashed | VmState::Failed)
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.write_str(&s)
    }
}

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// VM name.
    pub name: String,
    /// Current state.
    pub state: VmState,
    /// Why the VM is in this state (shutdown reason, signal, QEMU's error).
    pub detail: String,
    /// QEMU's pid, once launched.
    pub qemu_pid: Option<i32>,
    /// The supervisor's pid.
    pub supervisor_pid: i32,
    /// The block service's pid, when the VM has Ferry-served disks.
    #[serde(default)]
    pub block_pid: Option<i32>,
    /// How often the block service was restarted after dying.
    #[serde(default)]
    pub block_restarts: u32,
    /// Accelerator in use.
    pub accel: String,
    /// Why that accelerator was chosen.
    pub accel_reason: String,
    /// QEMU version.
    pub qemu_version: String,
    /// Unix time (seconds) of the last change.
    pub since: f64,
}

/// The detail of a VM whose QEMU waits for an incoming migration's state.
pub const AWAITING_MIGRATION: &str = "waiting for an incoming migration (migrate-incoming)";

impl StateRecord {
    /// True while QEMU waits for an incoming migration's state: the
    /// destination's half, which holds no guest yet.
    pub fn awaits_migration(&self) -> bool {
        self.state == VmState::Paused && self.detail == AWAITING_MIGRATION
    }
}

/// Seconds since the epoch, for records.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl StateRecord {
    /// Writes the record atomically (temp file, then rename).
    pub fn save(&self, dir: &RunDir) -> Result<(), VmError> {
        let path = dir.state();
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| VmError::io(&path, std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(|e| VmError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| VmError::io(&path, e))
    }

    /// Reads the record; `Ok(None)` when the VM has none.
    pub fn load(dir: &RunDir) -> Result<Option<Self>, VmError> {
        let path = dir.state();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                VmError::io(
                    &path,
                    std::io::Error::other(format!("corrupt state record: {e}")),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VmError::io(&path, e)),
        }
    }
}

/// True if a process with this pid exists (and is not a zombie we could reap).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // A zombie still answers kill(0); look at /proc to tell.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}
