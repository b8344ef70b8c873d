//! The destination's side of a migration, as the source drives it.
//!
//! The source's driver needs four things from the destination: start QEMU
//! waiting for the VM (from the very spec the source runs), run QMP
//! commands on that QEMU, the address its migration stream listens on, and
//! removing its half when the migration fails. [`Destination`] names them;
//! a hosts-file [`Host`] provides them by running `ferry` on it and opening
//! its QMP socket (one machine, or hosts sharing a filesystem), and the
//! cluster's node agent provides them over its API, so hosts share nothing
//! but the SAN.

use crate::hosts::Host;
use crate::live::MigrateError;
use ferry_qemu::{QmpClient, QmpError};
use ferry_vm::StateRecord;
use serde_json::Value;
use std::future::Future;
use std::path::Path;

/// Runs QMP commands on one QEMU, here or on another host.
pub trait Qmp: Sync {
    /// Runs `command` with `arguments`; QEMU's `return` value.
    fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> impl Future<Output = Result<Value, QmpError>> + Send;
}

impl Qmp for QmpClient {
    fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> impl Future<Output = Result<Value, QmpError>> + Send {
        QmpClient::execute(self, command, arguments)
    }
}

/// Where a VM migrates to.
pub trait Destination: Sync {
    /// How the destination's QEMU is reached once prepared.
    type Qmp: Qmp + Send;

    /// The address on the migration network the stream goes to.
    fn migration_address(&self) -> &str;

    /// Starts QEMU for VM `name` waiting for its state (`-incoming defer`),
    /// from the spec the source runs (`spec`, its `spec.json`). Refuses if
    /// the VM already runs there.
    fn prepare(
        &self,
        name: &str,
        spec: &Path,
    ) -> impl Future<Output = Result<(), MigrateError>> + Send;

    /// A QMP connection to the prepared QEMU of VM `name`.
    fn connect(&self, name: &str) -> impl Future<Output = Result<Self::Qmp, MigrateError>> + Send;

    /// Removes the destination's half of a migration that failed; returns
    /// why it could not.
    fn discard(&self, name: &str) -> impl Future<Output = Result<(), String>> + Send;

    /// Waits (briefly) until the destination's own record of the VM says it
    /// runs, so a status read right after the migration returns agrees with
    /// it: QEMU is seen running first, the supervisor records it when it
    /// handles QEMU's RESUME event, a moment later.
    fn recorded_running(&self, _name: &str) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs a `ferry` command on a host; returns the last line of its stderr on
/// failure.
async fn on_host(host: &Host, exe: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd: tokio::process::Command = host.ferry(exe).into();
    let out = cmd
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run ferry: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .lines()
            .last()
            .unwrap_or("failed")
            .to_string())
    }
}

/// A host of a hosts file, with the `ferry` binary to run on it.
#[derive(Debug, Clone, Copy)]
pub struct HostDestination<'a> {
    /// The host.
    pub host: &'a Host,
    /// The `ferry` binary.
    pub ferry_exe: &'a Path,
}

impl Destination for HostDestination<'_> {
    type Qmp = QmpClient;

    fn migration_address(&self) -> &str {
        &self.host.migration_address
    }

    async fn prepare(&self, name: &str, spec: &Path) -> Result<(), MigrateError> {
        if let Some(other) = StateRecord::load(&self.host.vm_dir(name))? {
            if let Some(pid) = other
                .qemu_pid
                .filter(|&p| !other.state.is_final() && ferry_vm::state::pid_alive(p))
            {
                return Err(MigrateError::AlreadyOnDestination {
                    name: name.into(),
                    pid,
                });
            }
        }
        let spec = spec.to_string_lossy();
        on_host(
            self.host,
            self.ferry_exe,
            &["vm", "start", "--incoming", &spec],
        )
        .await
        .map_err(MigrateError::Prepare)
    }

    async fn connect(&self, name: &str) -> Result<QmpClient, MigrateError> {
        let (d, _) = QmpClient::connect(&self.host.vm_dir(name).qmp_control())
            .await
            .map_err(crate::live::qmp_err("connecting to the destination QEMU"))?;
        Ok(d)
    }

    async fn discard(&self, name: &str) -> Result<(), String> {
        on_host(self.host, self.ferry_exe, &["vm", "stop", name, "--force"]).await
    }

    async fn recorded_running(&self, name: &str) {
        let deadline = std::time::Instant::now() + RECORD_WAIT;
        while std::time::Instant::now() < deadline {
            match StateRecord::load(&self.host.vm_dir(name)) {
                Ok(Some(r)) if r.state != ferry_vm::state::VmState::Paused => return,
                _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        tracing::warn!("{name} runs on the destination, but its record still says paused");
    }
}

/// How long a migration waits for the destination's record to catch up
/// with its running QEMU.
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
