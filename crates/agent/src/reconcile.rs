//! Telling the database what really runs here.
//!
//! At start (once the database answers): every VM whose QEMU runs here is
//! re-attached — its supervisor never stopped, so nothing is restarted —
//! and recorded as owned by this host; a VM the database says runs here
//! but whose QEMU is gone is recorded stopped; a migration this host was
//! driving when its agent died is ended (committed if the VM no longer
//! runs here). Then, every few seconds, a VM of this host that stopped by
//! itself (the guest powered off, QEMU crashed) is recorded stopped — only
//! if the database still says this host owns it and no migration of it is
//! under way, checked where the record is applied: a migration that ends
//! between the reading and the writing keeps its VM running; and a
//! destination's half left by a migration that failed while this agent was
//! unreachable is removed.

use crate::local::{record, runs_here};
use crate::Agent;
use ferry_cluster::state::{ClusterState, Command};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How often the running VMs are checked.
const EVERY: Duration = Duration::from_secs(3);

/// Runs until aborted.
pub async fn run(agent: Arc<Agent>) {
    let state = loop {
        match agent.state().await {
            Ok(s) => break s,
            Err(e) => {
                tracing::debug!("database not readable yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    startup(&agent, &state).await;
    let mut suspects = BTreeSet::new();
    loop {
        tokio::time::sleep(EVERY).await;
        if let Ok(state) = agent.state().await {
            agent.forget_incoming(&state);
            stopped_by_themselves(&agent, &state).await;
            suspects = leftover_halves(&agent, &state, &suspects).await;
        }
    }
}

/// Removes the destination halves of migrations that ended without them:
/// a QEMU here still waiting for a VM's state while the database records no
/// migration of it to this host (the source could not reach this agent to
/// discard it). Seen so in two passes, each with a fresh reading of the
/// database, before it is removed: a migration being prepared right now is
/// recorded before its half starts, so it cannot look stale twice. Returns
/// the VMs that look stale this pass.
async fn leftover_halves(
    agent: &Agent,
    state: &ClusterState,
    suspects: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut now = BTreeSet::new();
    let waiting = ferry_vm::control::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.awaits_migration());
    for rec in waiting {
        let coming = state
            .migrations
            .get(&rec.name)
            .is_some_and(|m| m.to == agent.name);
        if coming {
            continue;
        }
        if !suspects.contains(&rec.name) {
            now.insert(rec.name);
            continue;
        }
        let stopped = ferry_vm::control::stop(
            &rec.name,
            ferry_vm::control::StopOptions {
                timeout: Duration::from_secs(1),
                force: true,
            },
        )
        .await;
        let message = match stopped {
            Ok(_) => format!(
                "host {}: removed the half of a migration of VM {} that ended without it",
                agent.name, rec.name
            ),
            Err(e) => {
                tracing::warn!("cannot remove the leftover half of VM {}: {e}", rec.name);
                continue;
            }
        };
        tracing::info!("{message}");
        if let Err(e) = agent.commit_retrying(Command::Note { message }).await {
            tracing::warn!("cannot record it: {e}");
        }
    }
    now
}

async fn startup(agent: &Agent, state: &ClusterState) {
    for (name, m) in state
        .migrations
        .iter()
        .filter(|(_, m)| m.from == agent.name)
    {
        let committed = !runs_here(name);
        tracing::warn!(
            "the migration of VM {name} to {} was cut by an agent restart; {}",
            m.to,
            if committed {
                "it runs there"
            } else {
                "it stays here"
            }
        );
        let end = Command::EndMigration {
            name: name.clone(),
            committed,
        };
        if let Err(e) = agent.commit_retrying(end).await {
            tracing::warn!("cannot end the migration of {name}: {e}");
        }
    }
    let local = ferry_vm::control::list().unwrap_or_default();
    // A half waiting for a migration's state holds no guest: it is not
    // re-attached, and the periodic sweep removes it if its migration is over.
    for rec in local
        .iter()
        .filter(|r| !r.state.is_final() && !r.awaits_migration())
    {
        let Some(def) = state.vms.get(&rec.name) else {
            tracing::info!(
                "VM {} runs here but the cluster does not define it; left alone",
                rec.name
            );
            continue;
        };
        let message = format!(
            "host {}: re-attached VM {} ({}, QEMU pid {})",
            agent.name,
            rec.name,
            rec.state,
            rec.qemu_pid.map_or("-".into(), |p| p.to_string())
        );
        tracing::info!("{message}");
        if let Err(e) = agent.commit_retrying(Command::Note { message }).await {
            tracing::warn!("cannot record re-attaching VM {}: {e}", rec.name);
        }
        if state.migrations.contains_key(&rec.name) {
            continue;
        }
        if !(def.running && def.owner.as_deref() == Some(agent.name.as_str())) {
            let started = Command::VmStarted {
                name: rec.name.clone(),
                owner: agent.name.clone(),
            };
            if let Err(e) = agent.commit_retrying(started).await {
                tracing::warn!("VM {} runs here but is not recorded so: {e}", rec.name);
            }
        }
    }
    stopped_by_themselves(agent, state).await;
}

async fn stopped_by_themselves(agent: &Agent, state: &ClusterState) {
    let mine = state.vms.values().filter(|v| {
        v.running
            && v.owner.as_deref() == Some(agent.name.as_str())
            && !state.migrations.contains_key(&v.name)
    });
    for def in mine {
        let gone = match record(&def.name) {
            Ok(Some(r)) => r.state.is_final(),
            Ok(None) => true,
            Err(_) => false,
        };
        if gone {
            tracing::info!("VM {} no longer runs here; recording it stopped", def.name);
            if let Err(e) = agent
                .commit(Command::VmStopped {
                    name: def.name.clone(),
                    // Read a moment ago; a migration may have moved it since.
                    if_owner: Some(agent.name.clone()),
                })
                .await
            {
                tracing::debug!("cannot record VM {} stopped: {e}", def.name);
            }
        }
    }
}
