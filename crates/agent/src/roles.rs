//! The cluster-wide verbs, served by whichever member the CLI asks: they
//! read the database, place, and call the agent of the host concerned.

use crate::client::AgentCalls;
use crate::db::Members;
use crate::local::spec_of;
use crate::placement::{self, Candidate, VmNeeds};
use crate::resources::HostResources;
use crate::types::{
    CreateRequest, DrainReport, MigrateRequest, Migrated, RoleView, StartRequest, StopRequest,
};
use crate::{Agent, AgentError};
use ferry_cluster::state::{ClusterState, Command, HostRole, HostState, VmDef};
use ferry_migrate::Progress;
use ferry_spec::VmSpec;
use ferry_vm::StateRecord;

impl Agent {
    /// Defines a VM (or redefines a stopped one, keeping its owner).
    pub async fn create(&self, req: CreateRequest) -> Result<VmDef, AgentError> {
        let spec: VmSpec = serde_json::from_value(req.spec.clone())
            .map_err(|e| AgentError::BadRequest(format!("VM spec: {e}")))?;
        spec.validate()
            .map_err(|e| AgentError::BadRequest(format!("VM spec: {e}")))?;
        let state = self.state().await?;
        for p in &req.preferred {
            match state.hosts.get(p) {
                None => {
                    return Err(AgentError::BadRequest(format!(
                        "preferred owner {p} is no host of the cluster"
                    )))
                }
                Some(h) if h.role == HostRole::Witness => {
                    return Err(AgentError::BadRequest(format!(
                        "preferred owner {p} is a witness: it runs no VMs"
                    )))
                }
                Some(_) => {}
            }
        }
        let old = state.vms.get(&spec.name);
        if old.is_some_and(|v| v.running) {
            return Err(AgentError::Conflict(format!(
                "VM {} runs: stop it before redefining it",
                spec.name
            )));
        }
        let def = VmDef {
            name: spec.name.clone(),
            spec: serde_json::to_value(&spec).map_err(|e| AgentError::Internal(e.to_string()))?,
            owner: old.and_then(|v| v.owner.clone()),
            priority: req.priority,
            preferred: req.preferred,
            running: false,
        };
        self.commit(Command::PutVm { vm: def.clone() }).await?;
        Ok(def)
    }

    /// Removes a stopped VM's definition.
    pub async fn remove(&self, name: &str) -> Result<(), AgentError> {
        self.commit(Command::RemoveVm {
            name: name.to_string(),
        })
        .await
    }

    /// Every VM with what its owner says of it.
    pub async fn list(&self) -> Result<Vec<RoleView>, AgentError> {
        let state = self.state().await?;
        let members = self.members().await;
        let mut out = Vec::new();
        for def in state.vms.values() {
            out.push(self.view(&state, members.as_ref(), def).await);
        }
        Ok(out)
    }

    /// One VM with what its owner says of it.
    pub async fn show(&self, name: &str) -> Result<RoleView, AgentError> {
        let state = self.state().await?;
        let def = def_of(&state, name)?;
        let members = self.members().await;
        Ok(self.view(&state, members.as_ref(), def).await)
    }

    async fn view(
        &self,
        state: &ClusterState,
        members: Result<&Members, &AgentError>,
        def: &VmDef,
    ) -> RoleView {
        let record = async {
            match &def.owner {
                Some(owner) if *owner == self.name => crate::local::record(&def.name),
                Some(owner) => {
                    let member = members.map_err(|e| AgentError::Internal(e.to_string()))?;
                    AgentCalls(&self.client)
                        .record(&member.get(owner)?, &def.name)
                        .await
                }
                None => Ok(None),
            }
        };
        let (local, local_error) = match &def.owner {
            None => (None, None),
            Some(_) => match record.await {
                Ok(r) => (r, None),
                Err(e) => (None, Some(crate::error::chain(&e))),
            },
        };
        RoleView {
            memory_mib: def
                .spec
                .get("memory_mib")
                .and_then(|m| m.as_u64())
                .unwrap_or(0),
            def: def.clone(),
            local,
            local_error,
            migration: state.migrations.get(&def.name).cloned(),
        }
    }

    /// What host `host`'s agent records of VM `name`.
    pub async fn local_record(
        &self,
        host: &str,
        name: &str,
    ) -> Result<Option<StateRecord>, AgentError> {
        if host == self.name {
            return crate::local::record(name);
        }
        let member = self.member_of(host).await?;
        AgentCalls(&self.client).record(&member, name).await
    }

    /// Every hypervisor's resources, or why its agent did not answer.
    async fn resources(
        &self,
        state: &ClusterState,
    ) -> Vec<(String, Result<HostResources, String>)> {
        let mut out = Vec::new();
        let members = self.members().await;
        for h in state
            .hosts
            .values()
            .filter(|h| h.role == HostRole::Hypervisor)
        {
            let member = match &members {
                Ok(m) => m.get(&h.name),
                Err(e) => Err(AgentError::Internal(e.to_string())),
            };
            let r = match member {
                Ok(m) => AgentCalls(&self.client)
                    .resources(&m)
                    .await
                    .map_err(|e| format!("its agent does not answer: {}", crate::error::chain(&e))),
                Err(e) => Err(e.to_string()),
            };
            out.push((h.name.clone(), r));
        }
        out
    }

    /// Places VM `def` on a host other than `except`.
    async fn place(
        &self,
        state: &ClusterState,
        def: &VmDef,
        except: Option<&str>,
    ) -> Result<String, AgentError> {
        let spec = spec_of(def)?;
        let resources = self.resources(state).await;
        let candidates: Vec<Candidate<'_>> = resources
            .iter()
            .filter(|(h, _)| Some(h.as_str()) != except)
            .filter_map(|(h, r)| {
                Some(Candidate {
                    host: state.hosts.get(h)?,
                    resources: r.as_ref().map_err(|e| e.clone()),
                })
            })
            .collect();
        let needs = VmNeeds {
            name: &def.name,
            memory_mib: spec.memory_mib,
            cpu_model: spec.cpu_model.as_ref(),
            preferred: &def.preferred,
        };
        Ok(placement::place(&needs, &candidates)?)
    }

    /// Starts a VM where placement (or `req.on`) says.
    pub async fn start(
        &self,
        name: &str,
        req: &StartRequest,
    ) -> Result<(String, StateRecord), AgentError> {
        let state = self.state().await?;
        let def = def_of(&state, name)?;
        if let (true, Some(owner)) = (def.running, &def.owner) {
            if let Ok(Some(r)) = self.local_record(owner, name).await {
                if !r.state.is_final() {
                    return Err(AgentError::Conflict(format!(
                        "VM {name} runs on {owner} already"
                    )));
                }
            }
        }
        let host = match &req.on {
            Some(h) => host_taking_vms(&state, h)?,
            None => self.place(&state, def, None).await?,
        };
        tracing::info!("starting VM {name} on {host}");
        let rec = if host == self.name {
            self.start_here(def.clone()).await?
        } else {
            let member = self.member_of(&host).await?;
            AgentCalls(&self.long).start(&member, def).await?
        };
        Ok((host, rec))
    }

    /// Stops a VM on its owner.
    pub async fn stop(
        &self,
        name: &str,
        req: &StopRequest,
    ) -> Result<Option<StateRecord>, AgentError> {
        let state = self.state().await?;
        let def = def_of(&state, name)?;
        let Some(owner) = def.owner.clone() else {
            return Err(AgentError::Conflict(format!("VM {name} has never run")));
        };
        if owner == self.name {
            self.stop_here(name, req).await
        } else {
            let member = self.member_of(&owner).await?;
            AgentCalls(&self.long).stop(&member, name, req).await
        }
    }

    /// Stops a VM, then starts it again (placed anew; preferred owners
    /// first).
    pub async fn restart(&self, name: &str) -> Result<(String, StateRecord), AgentError> {
        self.stop(name, &StopRequest::default()).await?;
        self.start(name, &StartRequest::default()).await
    }

    /// Migrates a VM from its owner to `req.to` (or a placed host).
    pub async fn migrate(&self, name: &str, req: &MigrateRequest) -> Result<Migrated, AgentError> {
        let state = self.state().await?;
        let def = def_of(&state, name)?;
        let owner = match (&def.owner, def.running) {
            (Some(o), true) => o.clone(),
            _ => return Err(AgentError::Conflict(format!("VM {name} is not running"))),
        };
        let to = match &req.to {
            Some(to) => host_taking_vms(&state, to)?,
            None => self.place(&state, def, Some(&owner)).await?,
        };
        let req = MigrateRequest {
            to: Some(to),
            ..req.clone()
        };
        if owner == self.name {
            self.migrate_from_here(name, &req).await
        } else {
            let member = self.member_of(&owner).await?;
            AgentCalls(&self.long).migrate(&member, name, &req).await
        }
    }

    /// Cancels VM `name`'s migration through its source's agent.
    pub async fn cancel_migration(&self, name: &str) -> Result<(), AgentError> {
        let state = self.state().await?;
        let m = state
            .migrations
            .get(name)
            .ok_or_else(|| AgentError::NotFound(format!("no migration of VM {name} is running")))?;
        if m.from == self.name {
            return self.cancel_here(name);
        }
        let member = self.member_of(&m.from).await?;
        AgentCalls(&self.client).cancel(&member, name).await
    }

    /// The progress of VM `name`'s migration, from its source's agent.
    pub async fn progress(&self, name: &str) -> Result<Option<Progress>, AgentError> {
        let state = self.state().await?;
        let Some(m) = state.migrations.get(name) else {
            return Ok(None);
        };
        if m.from == self.name {
            return Ok(self.progress.lock().ok().and_then(|p| p.get(name).cloned()));
        }
        let member = self.member_of(&m.from).await?;
        AgentCalls(&self.client).progress(&member, name).await
    }

    /// The tail of VM `name`'s console log, from its owner.
    pub async fn console_log(&self, name: &str) -> Result<String, AgentError> {
        let state = self.state().await?;
        let def = def_of(&state, name)?;
        let owner = def
            .owner
            .as_ref()
            .ok_or_else(|| AgentError::Conflict(format!("VM {name} has never run")))?;
        if *owner == self.name {
            return crate::console::log_tail(name);
        }
        let member = self.member_of(owner).await?;
        AgentCalls(&self.client).console_log(&member, name).await
    }

    /// Pauses host `host` (it takes no new VMs) and live-migrates every VM
    /// it runs elsewhere, highest priority first, one at a time.
    pub async fn drain(&self, host: &str) -> Result<DrainReport, AgentError> {
        let state = self.state().await?;
        match state.hosts.get(host) {
            None => return Err(AgentError::NotFound(format!("no host {host}"))),
            Some(h) if h.role == HostRole::Witness => {
                return Err(AgentError::BadRequest(format!(
                    "{host} is a witness: it runs no VMs"
                )))
            }
            Some(h) if h.state != HostState::Paused => {
                self.commit(Command::SetHostState {
                    name: host.to_string(),
                    state: HostState::Paused,
                })
                .await?;
            }
            Some(_) => {}
        }
        let state = self.state().await?;
        let vms = drain_order(&state, host);
        let mut report = DrainReport {
            host: host.to_string(),
            ..DrainReport::default()
        };
        for vm in vms {
            tracing::info!("draining {host}: moving VM {}", vm.name);
            match self.migrate(&vm.name, &MigrateRequest::default()).await {
                Ok(m) => report.moved.push(m),
                Err(e) => report
                    .failed
                    .push((vm.name.clone(), crate::error::chain(&e))),
            }
        }
        Ok(report)
    }

    /// Lets a paused host take VMs again.
    pub async fn resume_host(&self, host: &str) -> Result<(), AgentError> {
        let state = self.state().await?;
        match state.hosts.get(host) {
            None => Err(AgentError::NotFound(format!("no host {host}"))),
            Some(h) if h.state == HostState::Paused => {
                self.commit(Command::SetHostState {
                    name: host.to_string(),
                    state: HostState::Up,
                })
                .await
            }
            Some(h) => Err(AgentError::Conflict(format!(
                "host {host} is {}, not paused",
                h.state
            ))),
        }
    }
}

/// The VMs `host` runs, in the order a drain moves them: highest priority
/// first, then by name.
pub fn drain_order<'a>(state: &'a ClusterState, host: &str) -> Vec<&'a VmDef> {
    let mut vms: Vec<&VmDef> = state
        .vms
        .values()
        .filter(|v| v.running && v.owner.as_deref() == Some(host))
        .collect();
    vms.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    vms
}

fn def_of<'a>(state: &'a ClusterState, name: &str) -> Result<&'a VmDef, AgentError> {
    state
        .vms
        .get(name)
        .ok_or_else(|| AgentError::NotFound(format!("no VM {name}")))
}

/// Host `name`, named by the user, if it can take VMs now: an up hypervisor.
fn host_taking_vms(state: &ClusterState, name: &str) -> Result<String, AgentError> {
    let host = state
        .hosts
        .get(name)
        .ok_or_else(|| AgentError::NotFound(format!("no host {name}")))?;
    if host.role == HostRole::Witness || host.state != HostState::Up {
        return Err(AgentError::Conflict(format!(
            "host {name} cannot take VMs: it is {} ({})",
            host.state, host.role
        )));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_cluster::state::Priority;

    #[test]
    fn a_drain_moves_running_vms_highest_priority_first() {
        let mut state = ClusterState::default();
        for (name, priority, owner, running) in [
            ("b-low", Priority::Low, "h1", true),
            ("a-medium", Priority::Medium, "h1", true),
            ("c-high", Priority::High, "h1", true),
            ("a-high", Priority::High, "h1", true),
            ("stopped", Priority::High, "h1", false),
            ("elsewhere", Priority::High, "h2", true),
        ] {
            state.vms.insert(
                name.into(),
                VmDef {
                    name: name.into(),
                    priority,
                    owner: Some(owner.into()),
                    running,
                    ..VmDef::default()
                },
            );
        }
        let order: Vec<&str> = drain_order(&state, "h1")
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(order, ["a-high", "c-high", "a-medium", "b-low"]);
    }
}
