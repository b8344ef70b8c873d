//! The destination's half of a migration the cluster runs: this host's
//! agent starts QEMU waiting for the VM, relays the source's QMP commands
//! to it, and removes it if the migration fails. The source's agent drives
//! (see [`crate::remote`]); nothing of one host's filesystem is needed on
//! the other.
//!
//! Only a migration the database records as coming here is prepared, and
//! only the commands a migration needs are relayed: a member's certificate
//! does not make this host's QEMUs a general-purpose remote control.

use crate::local::{record, spec_of_value};
use crate::types::{IncomingRequest, QmpRequest, SharedProbe};
use crate::{Agent, AgentError};
use ferry_qemu::QmpClient;
use ferry_vm::control::{self, StopOptions};
use ferry_vm::{RunDir, StateRecord};
use serde_json::Value;
use std::time::Duration;

/// The QMP commands a migration's destination needs, and nothing else.
const RELAYED: &[&str] = &[
    "migrate-set-capabilities",
    "migrate-set-parameters",
    "object-add",
    "object-del",
    "migrate-incoming",
    "migrate_cancel",
    "query-migrate",
    "query-status",
    "cont",
    "announce-self",
];

impl Agent {
    /// Starts QEMU for VM `name` here, waiting for its state from the
    /// source (`-incoming defer`).
    pub async fn prepare_incoming(
        &self,
        name: &str,
        req: IncomingRequest,
    ) -> Result<StateRecord, AgentError> {
        let state = self.state().await?;
        match state.migrations.get(name) {
            Some(m) if m.to == self.name => {}
            _ => {
                return Err(AgentError::Conflict(format!(
                    "the database records no migration of VM {name} to {}",
                    self.name
                )))
            }
        }
        let spec = spec_of_value(name, req.spec)?;
        if spec.name != name {
            return Err(AgentError::BadRequest(format!(
                "the spec is of VM {}, not {name}",
                spec.name
            )));
        }
        if let Some(rec) = record(name)?.filter(|r| !r.state.is_final()) {
            return Err(AgentError::Conflict(format!(
                "VM {name} already runs on {} (QEMU pid {}); refusing to start a second copy",
                self.name,
                rec.qemu_pid.unwrap_or_default()
            )));
        }
        if let Some(probe) = &req.probe {
            self.check_shared(probe)?;
        }
        let rec = self.launch(spec, true).await?;
        if let Ok(mut set) = self.incoming.lock() {
            set.insert(name.to_string());
        }
        tracing::info!(
            "VM {name} waits here for its state (QEMU pid {:?})",
            rec.qemu_pid
        );
        Ok(rec)
    }

    /// Refuses a quick migration whose state directory this host does not
    /// share with the source.
    fn check_shared(&self, probe: &SharedProbe) -> Result<(), AgentError> {
        match std::fs::read_to_string(&probe.path) {
            Ok(c) if c == probe.content => Ok(()),
            Ok(_) => Err(AgentError::Conflict(format!(
                "{} holds something else on {} than on the source: the quick-migration directory is not shared storage (set [agent] quick_dir)",
                probe.path.display(),
                self.name
            ))),
            Err(e) => Err(AgentError::Conflict(format!(
                "{} cannot read {} ({e}): the quick-migration directory is not shared storage (set [agent] quick_dir)",
                self.name,
                probe.path.display()
            ))),
        }
    }

    /// Runs one of the commands a migration needs on the QEMU of the
    /// incoming VM `name`.
    pub async fn relay_qmp(&self, name: &str, req: QmpRequest) -> Result<Value, AgentError> {
        let prepared = self.incoming.lock().is_ok_and(|s| s.contains(name));
        if !prepared {
            return Err(AgentError::Conflict(format!(
                "VM {name} is not being migrated to {}",
                self.name
            )));
        }
        if !RELAYED.contains(&req.execute.as_str()) {
            return Err(AgentError::BadRequest(format!(
                "{} is not a command a migration's destination runs",
                req.execute
            )));
        }
        if req.execute == "object-add" {
            self.check_credentials_object(req.arguments.as_ref())?;
        }
        let (q, _) = QmpClient::connect(&RunDir::for_vm(name).qmp_control()).await?;
        Ok(q.execute(&req.execute, req.arguments).await?)
    }

    /// The one object a migration adds is this host's TLS credentials.
    fn check_credentials_object(&self, args: Option<&Value>) -> Result<(), AgentError> {
        let args = args.unwrap_or(&Value::Null);
        let dir = args.get("dir").and_then(Value::as_str).unwrap_or_default();
        if args.get("qom-type").and_then(Value::as_str) != Some("tls-creds-x509")
            || std::path::Path::new(dir) != self.tls_dir
        {
            return Err(AgentError::BadRequest(format!(
                "a migration's destination loads only its own TLS credentials ({})",
                self.tls_dir.display()
            )));
        }
        Ok(())
    }

    /// Removes the QEMU of an incoming VM whose migration failed. A VM this
    /// host owns and runs is never touched.
    pub async fn discard_incoming(&self, name: &str) -> Result<(), AgentError> {
        let state = self.state().await?;
        let coming = state
            .migrations
            .get(name)
            .is_some_and(|m| m.to == self.name);
        let owned = state
            .vms
            .get(name)
            .is_some_and(|v| v.running && v.owner.as_deref() == Some(&self.name));
        if !coming || owned {
            return Err(AgentError::Conflict(format!(
                "VM {name} is not being migrated to {}; not discarding it",
                self.name
            )));
        }
        if let Ok(mut set) = self.incoming.lock() {
            set.remove(name);
        }
        if record(name)?.is_some_and(|r| !r.state.is_final()) {
            control::stop(
                name,
                StopOptions {
                    timeout: Duration::from_secs(1),
                    force: true,
                },
            )
            .await?;
            tracing::info!("removed the incoming half of VM {name}");
        }
        Ok(())
    }

    /// Forgets incoming VMs whose migration has ended (the reconciler calls
    /// this with the database's migrations). One whose QEMU still waits for
    /// its state is kept: a migration being prepared may not show in a
    /// reading taken a moment before it was recorded.
    pub fn forget_incoming(&self, in_flight: &ferry_cluster::state::ClusterState) {
        if let Ok(mut set) = self.incoming.lock() {
            set.retain(|n| {
                in_flight
                    .migrations
                    .get(n)
                    .is_some_and(|m| m.to == self.name)
                    || record(n)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.awaits_migration())
            });
        }
    }
}
