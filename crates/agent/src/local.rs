//! What this host's agent does to its own VMs: start, stop and migrate
//! them with the engine, and record each outcome in the database.

use crate::remote::AgentDestination;
use crate::types::SharedProbe;
use crate::types::{MigrateRequest, Migrated, StopRequest};
use crate::{Agent, AgentError};
use ferry_cluster::state::ClusterState;
use ferry_cluster::state::{Command, VmDef};
use ferry_cluster::Member;
use ferry_migrate::live::OnTimeout;
use ferry_migrate::{MigrateOptions, TlsPlan};
use ferry_spec::VmSpec;
use ferry_vm::control::{self, StartOptions, StopOptions};
use ferry_vm::{RunDir, StateRecord, VmError, VmState};
use std::sync::Arc;
use std::time::Duration;

/// How long a VM may take to come up under a loaded TCG host.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Decodes the spec a definition holds, with the reason if it is bad.
pub fn spec_of(def: &VmDef) -> Result<VmSpec, AgentError> {
    spec_of_value(&def.name, def.spec.clone())
}

/// Decodes VM `name`'s spec from JSON, with the reason if it is bad.
pub fn spec_of_value(name: &str, value: serde_json::Value) -> Result<VmSpec, AgentError> {
    let bad = |e: String| AgentError::BadRequest(format!("the spec of VM {name}: {e}"));
    let spec: VmSpec = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    spec.validate().map_err(|e| bad(e.to_string()))?;
    Ok(spec)
}

/// This host's record of VM `name`, if it has one.
pub fn record(name: &str) -> Result<Option<StateRecord>, AgentError> {
    match control::status(name) {
        Ok(r) => Ok(Some(r)),
        Err(VmError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True if VM `name` runs here (QEMU alive, not finished).
pub fn runs_here(name: &str) -> bool {
    matches!(record(name), Ok(Some(r)) if !r.state.is_final())
}

/// Probes this host's QEMU and reads its CPU profile once in the
/// background (QEMU launches), so later reads are cheap.
pub fn read_cpu_profile(agent: Arc<Agent>) {
    tokio::task::spawn_blocking(move || {
        let probe = || -> Result<(ferry_qemu::QemuBinary, ferry_qemu::Accel), VmError> {
            let qemu = ferry_qemu::QemuBinary::find()?;
            let accel = ferry_qemu::accel::choose(&qemu, None).accel;
            Ok((qemu, accel))
        };
        match probe() {
            Ok(found) => {
                let _ = agent.qemu.set(found);
                if let Some(p) = agent.cpu_profile() {
                    tracing::info!(
                        "CPU profile: {} {} ({} features)",
                        p.vendor,
                        p.model_id,
                        p.features.len()
                    );
                }
            }
            Err(e) => tracing::warn!(
                "cannot read this host's CPU profile: {}",
                crate::error::chain(&e)
            ),
        }
    });
}

impl Agent {
    /// This host's CPU profile as guests see it now: what QEMU offers (read
    /// once) masked by the host configuration as it is now, so an edit of
    /// its `[cpu]` table counts at the next placement. `None` until QEMU
    /// has been probed, or if the profile cannot be read.
    pub fn cpu_profile(&self) -> Option<ferry_cpu::CpuProfile> {
        let (qemu, accel) = self.qemu.get()?;
        match ferry_vm::cpu::host_profile(qemu, *accel) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(
                    "cannot read this host's CPU profile: {}",
                    crate::error::chain(&e)
                );
                None
            }
        }
    }
}

impl Agent {
    /// Starts QEMU for `spec` here under a detached supervisor: booting,
    /// or waiting for an incoming migration.
    pub(crate) async fn launch(
        &self,
        spec: VmSpec,
        incoming: bool,
    ) -> Result<StateRecord, AgentError> {
        let opts = StartOptions {
            accel: None,
            hold: false,
            incoming,
            supervisor_exe: self.exe.clone(),
            timeout: START_TIMEOUT,
        };
        tokio::task::spawn_blocking(move || control::start(&spec, &opts))
            .await
            .map_err(|e| AgentError::Internal(format!("start task: {e}")))?
            .map_err(AgentError::from)
    }

    /// Starts VM `def` here and records this host as its owner. A VM
    /// already running here is only recorded.
    pub async fn start_here(&self, def: VmDef) -> Result<StateRecord, AgentError> {
        let name = def.name.clone();
        let state = self.state().await?;
        let current = state
            .vms
            .get(&name)
            .ok_or_else(|| AgentError::NotFound(format!("no VM {name}")))?;
        if let Some(other) = current
            .owner
            .as_ref()
            .filter(|o| current.running && **o != self.name)
        {
            return Err(AgentError::Conflict(format!("VM {name} runs on {other}")));
        }
        if let Some(rec) = record(&name)?.filter(|r| !r.state.is_final()) {
            self.commit(Command::VmStarted {
                name,
                owner: self.name.clone(),
            })
            .await?;
            return Ok(rec);
        }
        let rec = self.launch(spec_of(current)?, false).await?;
        tracing::info!("started VM {name} (QEMU pid {:?})", rec.qemu_pid);
        // The CPU the engine computed at the first start travels with the
        // definition, so every host it moves to gives the same CPU.
        if let Some(resolved) = resolved_spec(&name, current) {
            let def = VmDef {
                spec: resolved,
                ..current.clone()
            };
            if let Err(e) = self.commit(Command::PutVm { vm: def }).await {
                tracing::warn!("cannot record the computed CPU of {name}: {e}");
            }
        }
        if let Err(e) = self
            .commit_retrying(Command::VmStarted {
                name: name.clone(),
                owner: self.name.clone(),
            })
            .await
        {
            // Never two running copies: what cannot be recorded is undone.
            tracing::warn!("VM {name} started but not recorded ({e}); stopping it");
            let _ = control::stop(
                &name,
                StopOptions {
                    timeout: Duration::from_secs(1),
                    force: true,
                },
            )
            .await;
            return Err(e);
        }
        Ok(rec)
    }

    /// Stops VM `name` here and records it stopped.
    pub async fn stop_here(
        &self,
        name: &str,
        req: &StopRequest,
    ) -> Result<Option<StateRecord>, AgentError> {
        let rec = match record(name)? {
            Some(r) if !r.state.is_final() => Some(
                control::stop(
                    name,
                    StopOptions {
                        timeout: Duration::from_secs(req.timeout_secs.unwrap_or(30)),
                        force: req.force,
                    },
                )
                .await?,
            ),
            other => other,
        };
        self.commit_retrying(Command::VmStopped {
            name: name.to_string(),
            if_owner: None,
        })
        .await?;
        tracing::info!("stopped VM {name}");
        Ok(rec)
    }

    /// Migrates VM `name` from here to `req.to` with crates/migrate. The
    /// migration is recorded when it begins (one per host at a time by
    /// default); the destination becomes the owner in the entry that ends
    /// it, committed after QEMU runs there and the source's has quit.
    pub async fn migrate_from_here(
        &self,
        name: &str,
        req: &MigrateRequest,
    ) -> Result<Migrated, AgentError> {
        let to = req
            .to
            .clone()
            .ok_or_else(|| AgentError::BadRequest("a destination host is needed".into()))?;
        match record(name)? {
            Some(r) if r.state == VmState::Running => {}
            Some(r) => {
                return Err(AgentError::Conflict(format!(
                    "VM {name} is {} here, not running",
                    r.state
                )))
            }
            None => {
                return Err(AgentError::Conflict(format!(
                    "VM {name} does not run on {}",
                    self.name
                )))
            }
        }
        let member = self.member_of(&to).await?;
        let state = self.state().await?;
        let address = self.migration_address(&state, &to, &member)?;
        // The stream is secured with the cluster's own host certificates:
        // only a member can send or receive a VM.
        let dst_tls = crate::client::AgentCalls(&self.client)
            .resources(&member)
            .await?
            .tls_dir
            .ok_or_else(|| {
                AgentError::Conflict(format!("host {to}'s agent names no credentials"))
            })?;
        let quick = req
            .quick
            .then(|| SharedFile::write(&self.quick_dir, name))
            .transpose()?;
        let dst = AgentDestination {
            long: self.long.clone(),
            short: self.client.clone(),
            member,
            address,
            probe: quick.as_ref().map(|q| q.probe.clone()),
        };
        self.commit(Command::BeginMigration {
            name: name.to_string(),
            from: self.name.clone(),
            to: to.clone(),
            limit: self.migrations_per_host,
        })
        .await?;
        let cancel = Arc::new(tokio::sync::Notify::new());
        if let Ok(mut map) = self.cancels.lock() {
            map.insert(name.to_string(), cancel.clone());
        }
        let opts = MigrateOptions {
            cancel: Some(cancel),
            bandwidth_mibps: req.bandwidth_mibps,
            timeout: Duration::from_secs(300),
            on_timeout: OnTimeout::Cancel,
            stall_timeout: Duration::from_secs(30),
            tls: Some(TlsPlan {
                destination: to.clone(),
                source_dir: self.tls_dir.clone(),
                destination_dir: dst_tls,
            }),
            quick: quick.as_ref().map(|q| q.state_file.clone()),
            ..MigrateOptions::default()
        };
        tracing::info!(
            "migrating VM {name} to {to}{}",
            if req.quick { " (quick)" } else { "" }
        );
        let result = ferry_migrate::migrate(name, &RunDir::for_vm(name), &dst, &opts, |p| {
            if let Ok(mut map) = self.progress.lock() {
                map.insert(name.to_string(), p.clone());
            }
        })
        .await;
        if let Ok(mut map) = self.progress.lock() {
            map.remove(name);
        }
        if let Ok(mut map) = self.cancels.lock() {
            map.remove(name);
        }
        drop(quick);
        let committed = result.is_ok();
        let ended = self
            .commit_retrying(Command::EndMigration {
                name: name.to_string(),
                committed,
            })
            .await;
        let report = result?;
        ended?;
        tracing::info!("VM {name} migrated to {to} in {} ms", report.total_ms);
        Ok(Migrated {
            name: name.to_string(),
            from: self.name.clone(),
            to,
            report,
        })
    }
}

impl Agent {
    /// Where host `to` receives migration streams: its address on the
    /// migration network, or else its member address.
    fn migration_address(
        &self,
        state: &ClusterState,
        to: &str,
        member: &Member,
    ) -> Result<String, AgentError> {
        let on_network = state
            .hosts
            .get(to)
            .and_then(|h| h.networks.get(&self.migration_network))
            .and_then(|a| a.first());
        if let Some(ip) = on_network {
            return Ok(ip.to_string());
        }
        member
            .addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().to_string())
            .map_err(|e| {
                AgentError::Internal(format!(
                    "host {to} has no {} network address and its member address {} is not one: {e}",
                    self.migration_network, member.addr
                ))
            })
    }

    /// Cancels the live migration of VM `name` this host drives; the VM
    /// stays here.
    pub fn cancel_here(&self, name: &str) -> Result<(), AgentError> {
        let cancel = self
            .cancels
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
            .ok_or_else(|| AgentError::NotFound(format!("{} migrates no VM {name}", self.name)))?;
        cancel.notify_one();
        tracing::info!("cancelling the migration of VM {name}");
        Ok(())
    }
}

/// The spec this host's run directory holds for `name`, if the engine
/// computed a CPU the definition lacks.
fn resolved_spec(name: &str, def: &VmDef) -> Option<serde_json::Value> {
    if def.spec.get("cpu_model").is_some_and(|m| !m.is_null()) {
        return None;
    }
    let text = std::fs::read_to_string(RunDir::for_vm(name).spec()).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    spec.get("cpu_model").filter(|m| !m.is_null())?;
    Some(spec)
}

/// A quick migration's state file in the shared directory, with the probe
/// the destination reads back first; both are removed when dropped.
struct SharedFile {
    state_file: std::path::PathBuf,
    probe: SharedProbe,
}

impl SharedFile {
    fn write(dir: &std::path::Path, name: &str) -> Result<Self, AgentError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let content = format!(
            "ferry quick migration of {name}: {}-{nanos}\n",
            std::process::id()
        );
        let path = dir.join(format!(".{name}.probe"));
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, &content))
            .map_err(|e| {
                AgentError::Internal(format!(
                    "cannot write {} for a quick migration: {e}",
                    path.display()
                ))
            })?;
        Ok(SharedFile {
            state_file: dir.join(format!("{name}.state")),
            probe: SharedProbe { path, content },
        })
    }
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.probe.path);
        let _ = std::fs::remove_file(&self.state_file);
    }
}
