//! The replicated cluster state and the commands that change it.
//!
//! Applying a command is deterministic: it reads nothing but the state and
//! the command (the proposer stamps the time), so every member that applies
//! the same log holds the same state. A command that makes no sense for the
//! current state (a VM owned by an unknown host) is refused in its
//! [`Response`]; it is still a committed log entry and changes nothing.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

/// How many events the state keeps; older ones are dropped.
pub const MAX_EVENTS: usize = 1000;

/// A host's state in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Member in service.
    Up,
    /// Missed its heartbeats.
    Down,
    /// Drained: a member that takes no VMs.
    Paused,
    /// Being added to the cluster.
    Joining,
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostState::Up => "up",
            HostState::Down => "down",
            HostState::Paused => "paused",
            HostState::Joining => "joining",
        })
    }
}

/// What a host is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    /// Runs VMs.
    #[default]
    Hypervisor,
    /// Votes, so that two hypervisors keep quorum when one dies, but runs
    /// no VMs (the storage host's witness).
    Witness,
}

impl std::fmt::Display for HostRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostRole::Hypervisor => "hypervisor",
            HostRole::Witness => "witness",
        })
    }
}

/// A host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The host's name (also the name in its certificate).
    pub name: String,
    /// Its addresses on each cluster network, by network name.
    pub networks: BTreeMap<String, Vec<IpAddr>>,
    /// Its CPU profile (`ferry --json host cpu`), kept opaque here.
    pub cpu_profile: serde_json::Value,
    /// Its state.
    pub state: HostState,
    /// What it is for.
    #[serde(default)]
    pub role: HostRole,
    /// The SHA-256 (hex) of the certificate it joined with, revoked when it
    /// leaves.
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// That certificate (DER, hex): its key signs the host's heartbeats.
    #[serde(default)]
    pub cert_der_hex: Option<String>,
}

/// How much a VM matters when hosts are short of room (Hyper-V's
/// priorities: high ones are placed and restarted first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Placed last.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Placed first.
    High,
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        })
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Priority::Low),
            "medium" => Ok(Priority::Medium),
            "high" => Ok(Priority::High),
            other => Err(format!("priority {other:?}: high, medium or low")),
        }
    }
}

/// A VM the cluster knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDef {
    /// The VM's name.
    pub name: String,
    /// Its spec (the engine's VM spec), kept opaque here.
    pub spec: serde_json::Value,
    /// The host that runs it (or ran it last), if any.
    pub owner: Option<String>,
    /// Its priority.
    #[serde(default)]
    pub priority: Priority,
    /// Hosts to place it on first, in order of preference.
    #[serde(default)]
    pub preferred: Vec<String>,
    /// True while its owner runs it (set when a start is recorded, cleared
    /// when a stop is).
    #[serde(default)]
    pub running: bool,
}

/// A migration in flight: recorded when it begins, removed when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The host it leaves.
    pub from: String,
    /// The host it goes to.
    pub to: String,
    /// When it began, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// Something that happened, for `ferry cluster events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, counting every event ever recorded.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch (the proposer's clock).
    pub at_ms: u64,
    /// What happened.
    pub message: String,
}

/// A change to the cluster state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Adds a host or replaces its record.
    PutHost {
        /// The host.
        host: Host,
    },
    /// Changes a host's state.
    SetHostState {
        /// The host.
        name: String,
        /// Its new state.
        state: HostState,
    },
    /// Removes a host (it left the cluster) and revokes the certificate it
    /// joined with; refused while it runs VMs. Stopped VMs it ran last
    /// lose it as their owner.
    RemoveHost {
        /// The host.
        name: String,
    },
    /// Defines a VM or replaces its definition.
    PutVm {
        /// The VM.
        vm: VmDef,
    },
    /// Moves a VM to another owner (or none).
    SetVmOwner {
        /// The VM.
        name: String,
        /// Its new owner.
        owner: Option<String>,
    },
    /// Records that `owner` runs the VM now; refused while another host
    /// is recorded running it (never two running copies).
    VmStarted {
        /// The VM.
        name: String,
        /// The host that started it.
        owner: String,
    },
    /// Records that the VM no longer runs (its owner stays, as the host
    /// it last ran on).
    VmStopped {
        /// The VM.
        name: String,
        /// Only if this host still owns it and no migration of it is under
        /// way: a host that saw its QEMU go away must not stop the copy a
        /// migration just started elsewhere. None: unconditional (an
        /// operator's stop).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_owner: Option<String>,
    },
    /// Records a migration's start; refused if the VM does not run on
    /// `from`, is being migrated already, or either host already takes
    /// part in `limit` migrations.
    BeginMigration {
        /// The VM.
        name: String,
        /// The host it runs on.
        from: String,
        /// The host it goes to.
        to: String,
        /// Migrations a host may take part in at once.
        limit: u32,
    },
    /// Ends a migration: with `committed`, the switchover happened and the
    /// destination becomes the owner — in the same entry, so the owner
    /// changes exactly once; without, the VM stays where it was.
    EndMigration {
        /// The VM.
        name: String,
        /// Whether the VM now runs on the destination.
        committed: bool,
    },
    /// Removes a VM definition.
    RemoveVm {
        /// The VM.
        name: String,
    },
    /// Sets the SHA-256 (hex) of the token the CLI presents to the API.
    SetApiToken {
        /// The token's SHA-256, lowercase hex.
        sha256: String,
    },
    /// Records an event with no other change.
    Note {
        /// What to record.
        message: String,
    },
}

/// A command as proposed to the log: the command and the proposer's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// When it was proposed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The change.
    pub command: Command,
}

impl Request {
    /// `command`, stamped with the current time.
    pub fn now(command: Command) -> Self {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Request { at_ms, command }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.command)
    }
}

/// The outcome of applying one log entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Why the command was refused, if it was.
    pub refused: Option<String>,
}

/// Everything the cluster database holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Hosts by name.
    pub hosts: BTreeMap<String, Host>,
    /// VM definitions by name.
    pub vms: BTreeMap<String, VmDef>,
    /// The latest events, oldest first, at most [`MAX_EVENTS`].
    pub events: VecDeque<Event>,
    /// The sequence number the next event gets.
    pub next_event: u64,
    /// The SHA-256 (hex) of the API token, once the cluster has one.
    #[serde(default)]
    pub api_token_sha256: Option<String>,
    /// Certificates (SHA-256, hex) of members that left: refused.
    #[serde(default)]
    pub revoked_certs: BTreeSet<String>,
    /// Migrations in flight, by VM name.
    #[serde(default)]
    pub migrations: BTreeMap<String, Migration>,
}

impl ClusterState {
    fn event(&mut self, at_ms: u64, message: String) {
        self.events.push_back(Event {
            seq: self.next_event,
            at_ms,
            message,
        });
        self.next_event += 1;
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    /// Applies one request; every accepted change records an event.
    pub fn apply(&mut self, req: &Request) -> Response {
        match self.change(&req.command, req.at_ms) {
            Ok(message) => {
                self.event(req.at_ms, message);
                Response::default()
            }
            Err(why) => Response { refused: Some(why) },
        }
    }

    fn change(&mut self, command: &Command, at_ms: u64) -> Result<String, String> {
        match command {
            Command::PutHost { host } => {
                let verb = if self.hosts.contains_key(&host.name) {
                    "updated"
                } else {
                    "added"
                };
                self.hosts.insert(host.name.clone(), host.clone());
                Ok(format!("host {} {verb} ({})", host.name, host.state))
            }
            Command::SetHostState { name, state } => {
                let host = self
                    .hosts
                    .get_mut(name)
                    .ok_or_else(|| format!("no host {name}"))?;
                let old = std::mem::replace(&mut host.state, *state);
                Ok(format!("host {name}: {old} -> {state}"))
            }
            Command::RemoveHost { name } => {
                let owned = |v: &VmDef| v.owner.as_ref() == Some(name);
                if let Some(vm) = self.vms.values().find(|v| owned(v) && v.running) {
                    return Err(format!("host {name} still runs VM {}", vm.name));
                }
                if !self.hosts.contains_key(name) {
                    return Err(format!("no host {name}"));
                }
                for vm in self.vms.values_mut().filter(|v| owned(v)) {
                    vm.owner = None;
                }
                let host = self
                    .hosts
                    .remove(name)
                    .ok_or_else(|| format!("no host {name}"))?;
                if let Some(cert) = host.cert_sha256 {
                    self.revoked_certs.insert(cert);
                }
                Ok(format!("host {name} removed"))
            }
            Command::PutVm { vm } => {
                self.check_owner(&vm.owner)?;
                let verb = if self.vms.contains_key(&vm.name) {
                    "redefined"
                } else {
                    "defined"
                };
                self.vms.insert(vm.name.clone(), vm.clone());
                Ok(format!("VM {} {verb}", vm.name))
            }
            Command::SetVmOwner { name, owner } => {
                self.check_owner(owner)?;
                let vm = self
                    .vms
                    .get_mut(name)
                    .ok_or_else(|| format!("no VM {name}"))?;
                let old = std::mem::replace(&mut vm.owner, owner.clone());
                Ok(format!(
                    "VM {name} owner {} -> {}",
                    old.as_deref().unwrap_or("none"),
                    owner.as_deref().unwrap_or("none")
                ))
            }
            Command::VmStarted { name, owner } => {
                self.check_owner(&Some(owner.clone()))?;
                let vm = self
                    .vms
                    .get_mut(name)
                    .ok_or_else(|| format!("no VM {name}"))?;
                if let Some(other) = vm.owner.as_ref().filter(|o| vm.running && *o != owner) {
                    return Err(format!("VM {name} already runs on {other}"));
                }
                vm.owner = Some(owner.clone());
                vm.running = true;
                Ok(format!("VM {name} started on {owner}"))
            }
            Command::VmStopped { name, if_owner } => {
                let migrating = self.migrations.contains_key(name);
                let vm = self
                    .vms
                    .get_mut(name)
                    .ok_or_else(|| format!("no VM {name}"))?;
                if let Some(host) = if_owner {
                    if vm.owner.as_deref() != Some(host.as_str()) || migrating {
                        return Err(format!(
                            "VM {name} is not {host}'s to record stopped (owner {}, {})",
                            vm.owner.as_deref().unwrap_or("none"),
                            if migrating {
                                "migrating"
                            } else {
                                "not migrating"
                            }
                        ));
                    }
                }
                vm.running = false;
                Ok(format!(
                    "VM {name} stopped on {}",
                    vm.owner.as_deref().unwrap_or("none")
                ))
            }
            Command::BeginMigration {
                name,
                from,
                to,
                limit,
            } => {
                self.check_owner(&Some(to.clone()))?;
                let vm = self.vms.get(name).ok_or_else(|| format!("no VM {name}"))?;
                if !vm.running || vm.owner.as_ref() != Some(from) {
                    return Err(format!("VM {name} does not run on {from}"));
                }
                if from == to {
                    return Err(format!("VM {name} already runs on {to}"));
                }
                if let Some(m) = self.migrations.get(name) {
                    return Err(format!(
                        "VM {name} is being migrated already ({} -> {})",
                        m.from, m.to
                    ));
                }
                for host in [from, to] {
                    let busy = self
                        .migrations
                        .values()
                        .filter(|m| m.from == *host || m.to == *host)
                        .count();
                    if busy >= *limit as usize {
                        return Err(format!(
                            "host {host} takes part in {busy} migration(s) already (limit {limit})"
                        ));
                    }
                }
                self.migrations.insert(
                    name.clone(),
                    Migration {
                        from: from.clone(),
                        to: to.clone(),
                        since_ms: at_ms,
                    },
                );
                Ok(format!("VM {name}: migration {from} -> {to} began"))
            }
            Command::EndMigration { name, committed } => {
                let m = self
                    .migrations
                    .remove(name)
                    .ok_or_else(|| format!("no migration of VM {name}"))?;
                if !committed {
                    return Ok(format!(
                        "VM {name}: migration {} -> {} failed; it stays on {}",
                        m.from, m.to, m.from
                    ));
                }
                if let Some(vm) = self.vms.get_mut(name) {
                    vm.owner = Some(m.to.clone());
                    vm.running = true;
                }
                Ok(format!("VM {name} owner {} -> {} (migrated)", m.from, m.to))
            }
            Command::RemoveVm { name } => {
                if self.vms.get(name).is_some_and(|v| v.running) {
                    return Err(format!("VM {name} runs: stop it first"));
                }
                self.vms
                    .remove(name)
                    .ok_or_else(|| format!("no VM {name}"))?;
                Ok(format!("VM {name} removed"))
            }
            Command::SetApiToken { sha256 } => {
                if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("an API token hash is 64 hex digits".into());
                }
                self.api_token_sha256 = Some(sha256.to_ascii_lowercase());
                Ok("API token set".into())
            }
            Command::Note { message } => Ok(message.clone()),
        }
    }

    fn check_owner(&self, owner: &Option<String>) -> Result<(), String> {
        let Some(name) = owner else {
            return Ok(());
        };
        match self.hosts.get(name) {
            None => Err(format!("no host {name} to own the VM")),
            Some(h) if h.role == HostRole::Witness => {
                Err(format!("host {name} is a witness: it runs no VMs"))
            }
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Host {
        Host {
            name: name.into(),
            networks: BTreeMap::new(),
            cpu_profile: serde_json::Value::Null,
            state: HostState::Joining,
            role: HostRole::Hypervisor,
            cert_sha256: Some(format!("cert-of-{name}")),
            cert_der_hex: None,
        }
    }

    #[test]
    fn commands_change_state_and_record_events() {
        let mut s = ClusterState::default();
        let r = |command| Request { at_ms: 5, command };
        assert_eq!(
            s.apply(&r(Command::PutHost { host: host("h1") })),
            Response::default()
        );
        let vm = VmDef {
            name: "web".into(),
            spec: serde_json::json!({"memory_mib": 256}),
            owner: Some("h2".into()),
            ..VmDef::default()
        };
        let refused = s.apply(&r(Command::PutVm { vm: vm.clone() }));
        assert!(refused.refused.expect("refused").contains("no host h2"));
        s.apply(&r(Command::PutVm {
            vm: VmDef {
                owner: Some("h1".into()),
                running: true,
                ..vm
            },
        }));
        let refused = s.apply(&r(Command::RemoveHost { name: "h1".into() }));
        assert!(refused.refused.expect("refused").contains("runs VM web"));
        s.apply(&r(Command::SetHostState {
            name: "h1".into(),
            state: HostState::Up,
        }));
        assert_eq!(s.hosts["h1"].state, HostState::Up);
        assert_eq!(s.events.len(), 3);
        assert_eq!(s.events[2].message, "host h1: joining -> up");
        s.apply(&r(Command::VmStopped {
            name: "web".into(),
            if_owner: None,
        }));
        s.apply(&r(Command::RemoveHost { name: "h1".into() }));
        assert!(s.hosts.is_empty());
        assert_eq!(s.vms["web"].owner, None, "a stopped VM's last host left");
        s.apply(&r(Command::RemoveVm { name: "web".into() }));
        assert!(s.vms.is_empty());
        assert!(s.revoked_certs.contains("cert-of-h1"));

        let witness = Host {
            role: HostRole::Witness,
            ..host("w")
        };
        s.apply(&r(Command::PutHost { host: witness }));
        let refused = s.apply(&r(Command::PutVm {
            vm: VmDef {
                name: "db".into(),
                spec: serde_json::Value::Null,
                owner: Some("w".into()),
                ..VmDef::default()
            },
        }));
        assert!(refused.refused.expect("refused").contains("witness"));
    }

    #[test]
    fn starts_and_migrations_keep_one_owner() {
        let mut s = ClusterState::default();
        let r = |command| Request { at_ms: 7, command };
        for h in ["h1", "h2", "h3"] {
            s.apply(&r(Command::PutHost { host: host(h) }));
        }
        let def = |name: &str| VmDef {
            name: name.into(),
            ..VmDef::default()
        };
        s.apply(&r(Command::PutVm { vm: def("a") }));
        s.apply(&r(Command::PutVm { vm: def("b") }));
        let started = |s: &mut ClusterState, name: &str, owner: &str| {
            s.apply(&r(Command::VmStarted {
                name: name.into(),
                owner: owner.into(),
            }))
        };
        assert_eq!(started(&mut s, "a", "h1"), Response::default());
        let twice = started(&mut s, "a", "h2");
        assert!(twice
            .refused
            .expect("refused")
            .contains("already runs on h1"));
        started(&mut s, "b", "h1");
        let begin = |from: &str, to: &str, name: &str| Command::BeginMigration {
            name: name.into(),
            from: from.into(),
            to: to.into(),
            limit: 1,
        };
        let wrong = s.apply(&r(begin("h2", "h3", "a")));
        assert!(wrong
            .refused
            .expect("refused")
            .contains("does not run on h2"));
        assert_eq!(s.apply(&r(begin("h1", "h2", "a"))), Response::default());
        assert_eq!(s.migrations["a"].since_ms, 7);
        // One migration per host at a time: h1 is busy.
        let busy = s.apply(&r(begin("h1", "h3", "b")));
        assert!(busy.refused.expect("refused").contains("host h1"), "limit");
        assert_eq!(
            s.vms["a"].owner.as_deref(),
            Some("h1"),
            "not before the switchover"
        );
        s.apply(&r(Command::EndMigration {
            name: "a".into(),
            committed: true,
        }));
        assert_eq!(s.vms["a"].owner.as_deref(), Some("h2"));
        assert!(s.migrations.is_empty());
        // h1 noticed its copy gone a moment too late: it may not stop the
        // VM that now runs on h2.
        let late = s.apply(&r(Command::VmStopped {
            name: "a".into(),
            if_owner: Some("h1".into()),
        }));
        assert!(late.refused.expect("refused").contains("owner h2"));
        assert!(s.vms["a"].running);
        s.apply(&r(begin("h1", "h3", "b")));
        s.apply(&r(Command::EndMigration {
            name: "b".into(),
            committed: false,
        }));
        assert_eq!(
            s.vms["b"].owner.as_deref(),
            Some("h1"),
            "a failed move keeps the owner"
        );
        let running = s.apply(&r(Command::RemoveVm { name: "b".into() }));
        assert!(running.refused.is_some(), "a running VM is not removed");
        s.apply(&r(Command::VmStopped {
            name: "b".into(),
            if_owner: None,
        }));
        assert!(!s.vms["b"].running);
        assert_eq!(s.vms["b"].owner.as_deref(), Some("h1"));
        assert_eq!(
            s.apply(&r(Command::RemoveVm { name: "b".into() })),
            Response::default()
        );
    }

    #[test]
    fn events_are_bounded() {
        let mut s = ClusterState::default();
        for i in 0..MAX_EVENTS + 10 {
            s.apply(&Request {
                at_ms: 0,
                command: Command::Note {
                    message: i.to_string(),
                },
            });
        }
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert_eq!(s.events[0].seq, 10);
        assert_eq!(s.next_event, (MAX_EVENTS + 10) as u64);
    }
}
