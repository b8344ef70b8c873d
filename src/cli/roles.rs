//! `ferry cluster vm ...`: VMs the cluster defines, places, starts, stops
//! and migrates, through any member's API.

use super::cluster::Target;
use anyhow::Context;
use clap::Subcommand;
use ferry_agent::client::Roles;
use ferry_agent::types::{CreateRequest, MigrateRequest, RoleView, StartRequest, StopRequest};
use ferry_cluster::state::Priority;
use ferry_spec::VmSpec;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Cluster VM verbs.
#[derive(Subcommand)]
pub enum RoleCmd {
    /// Define a VM in the cluster from a spec file (stored in the cluster
    /// database, replicated to every member).
    Create {
        /// VM spec file (TOML, or JSON if it ends in .json).
        spec: PathBuf,
        /// Its priority: high, medium or low.
        #[arg(long, default_value = "medium")]
        priority: Priority,
        /// Preferred owners, in order (comma-separated host names).
        #[arg(long, value_delimiter = ',')]
        preferred: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Start a VM on the host placement chooses (or --on HOST).
    Start {
        /// VM name.
        name: String,
        /// Start it on this host.
        #[arg(long)]
        on: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Stop a VM (ACPI power button, forced after --timeout).
    Stop {
        /// VM name.
        name: String,
        /// End QEMU at once.
        #[arg(long)]
        force: bool,
        /// Seconds the guest may take to power off.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Stop a VM, then start it again where placement says.
    Restart {
        /// VM name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a stopped VM's definition.
    Remove {
        /// VM name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Move a running VM to another host (live by default), with progress.
    Migrate {
        /// VM name.
        name: String,
        /// Destination host [default: placed as for a start].
        #[arg(long)]
        to: Option<String>,
        /// Quick migration: save the state, restore it on the destination.
        #[arg(long)]
        quick: bool,
        /// Bandwidth cap in MiB/s [default: unlimited].
        #[arg(long)]
        bandwidth: Option<u64>,
        /// Cancel the VM's live migration that is running now (it stays
        /// where it was).
        #[arg(long, conflicts_with_all = ["to", "quick", "bandwidth"])]
        cancel: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Attach to a VM's serial console on whichever host runs it, through
    /// that host's agent (Ctrl-] detaches).
    Console {
        /// VM name.
        name: String,
        /// Print the console log so far instead of attaching.
        #[arg(long)]
        log: bool,
        /// Detach once this text appears (for scripts), exit 0.
        #[arg(long)]
        until: Option<String>,
        /// Give up after this many seconds (exit 1 with --until).
        #[arg(long)]
        timeout: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Every VM of the cluster: owner, state, priority.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// One VM: owner, state, priority, preferred owners, QEMU pid.
    Status {
        /// VM name.
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// A client for the verbs that act: long operations (a TCG start, a
/// migration, a drain) get a long timeout.
pub(super) fn roles(target: Target) -> anyhow::Result<Roles> {
    roles_within(target, ferry_agent::LONG_CALL)
}

/// A client whose calls may each take `timeout`.
fn roles_within(target: Target, timeout: Duration) -> anyhow::Result<Roles> {
    let (client, via) = target.client()?;
    Ok(Roles {
        client: client.with_timeout(timeout),
        via,
    })
}

/// Reads and definitions: answered at once, or the member is in trouble.
const QUICK_CALL: Duration = Duration::from_secs(60);

fn print_view(v: &RoleView) {
    println!(
        "{:<16} {:<12} {:<24} {:<7} {:>6} MiB{}",
        v.def.name,
        v.def.owner.as_deref().unwrap_or("-"),
        v.state(),
        v.def.priority.to_string(),
        v.memory_mib,
        v.migration
            .as_ref()
            .map(|m| format!("  migrating {} -> {}", m.from, m.to))
            .unwrap_or_default()
    );
}

/// Runs a cluster VM verb.
pub async fn run(cmd: RoleCmd, json: bool) -> anyhow::Result<ExitCode> {
    let print = |v: serde_json::Value| println!("{v}");
    match cmd {
        RoleCmd::Create {
            spec,
            priority,
            preferred,
            target,
        } => {
            let spec = VmSpec::load(&spec)?;
            let req = CreateRequest {
                spec: serde_json::to_value(&spec)?,
                priority,
                preferred,
            };
            let def = roles_within(target, QUICK_CALL)?.create(&req).await?;
            if json {
                print(serde_json::to_value(&def)?);
            } else {
                println!("VM {} defined (priority {})", def.name, def.priority);
            }
        }
        RoleCmd::Start { name, on, target } => {
            let (host, rec) = roles(target)?.start(&name, &StartRequest { on }).await?;
            if json {
                print(serde_json::json!({"host": host, "record": rec}));
            } else {
                println!(
                    "VM {name} runs on {host} (QEMU pid {}, {})",
                    rec.qemu_pid.map_or("-".into(), |p| p.to_string()),
                    rec.accel
                );
            }
        }
        RoleCmd::Stop {
            name,
            force,
            timeout,
            target,
        } => {
            let req = StopRequest {
                force,
                timeout_secs: Some(timeout),
            };
            let rec = roles(target)?.stop(&name, &req).await?;
            if json {
                print(serde_json::json!({ "record": rec }));
            } else {
                println!(
                    "VM {name} {}",
                    rec.map_or("stopped".into(), |r| format!("{} ({})", r.state, r.detail))
                );
            }
        }
        RoleCmd::Restart { name, target } => {
            let (host, rec) = roles(target)?.restart(&name).await?;
            if json {
                print(serde_json::json!({"host": host, "record": rec}));
            } else {
                println!("VM {name} restarted on {host}");
            }
        }
        RoleCmd::Remove { name, target } => {
            let v = roles_within(target, QUICK_CALL)?.remove(&name).await?;
            if json {
                print(v);
            } else {
                println!("VM {name} removed");
            }
        }
        RoleCmd::Console {
            name,
            log,
            until,
            timeout,
            target,
        } => return console(target, name, log, until, timeout).await,
        RoleCmd::Migrate {
            name,
            to,
            quick,
            bandwidth,
            cancel,
            target,
        } => {
            let roles = roles(target)?;
            if cancel {
                let v = roles.cancel(&name).await?;
                if json {
                    print(v);
                } else {
                    println!("cancelled the migration of {name}; it stays where it was");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let req = MigrateRequest {
                to,
                quick,
                bandwidth_mibps: bandwidth,
            };
            return migrate(roles, name, req, json).await;
        }
        RoleCmd::List { target } => {
            let all = roles_within(target, QUICK_CALL)?.list().await?;
            if json {
                print(serde_json::to_value(&all)?);
            } else if all.is_empty() {
                println!("the cluster defines no VMs");
            } else {
                println!(
                    "{:<16} {:<12} {:<24} {:<7} {:>10}",
                    "VM", "owner", "state", "priority", "memory"
                );
                all.iter().for_each(print_view);
            }
        }
        RoleCmd::Status { name, target } => {
            let v = roles_within(target, QUICK_CALL)?.show(&name).await?;
            if json {
                print(serde_json::to_value(&v)?);
            } else {
                println!("name         {}", v.def.name);
                println!("owner        {}", v.def.owner.as_deref().unwrap_or("none"));
                println!("state        {}", v.state());
                println!("priority     {}", v.def.priority);
                println!(
                    "preferred    {}",
                    if v.def.preferred.is_empty() {
                        "-".into()
                    } else {
                        v.def.preferred.join(", ")
                    }
                );
                println!("memory       {} MiB", v.memory_mib);
                if let Some(r) = &v.local {
                    println!(
                        "qemu pid     {}",
                        r.qemu_pid.map_or("-".into(), |p| p.to_string())
                    );
                }
                if let Some(e) = &v.local_error {
                    println!("owner says   {e}");
                }
                if let Some(m) = &v.migration {
                    println!("migrating    {} -> {}", m.from, m.to);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a VM's console log, or attaches to its console through its
/// owner's agent.
async fn console(
    target: Target,
    name: String,
    log: bool,
    until: Option<String>,
    timeout: Option<u64>,
) -> anyhow::Result<ExitCode> {
    use super::console::{attach, AttachEnd, AttachOptions};
    let roles = roles(target)?;
    if log {
        let text = roles.console_log(&name).await?;
        use std::io::Write;
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let view = roles.show(&name).await?;
    let owner = match (&view.def.owner, view.def.running) {
        (Some(o), true) => o.clone(),
        _ => anyhow::bail!("VM {name} is not running; `--log` shows what it printed"),
    };
    let status = roles.client.status(&roles.via).await?;
    let member = status
        .member(&owner)
        .cloned()
        .with_context(|| format!("no member {owner} in the cluster"))?;
    let stream = roles
        .client
        .upgrade(
            &member,
            &format!("/v1/agent/vms/{name}/console"),
            ferry_agent::console::PROTOCOL,
        )
        .await?;
    eprintln!("ferry: attached to {name}'s console on {owner}; Ctrl-] detaches");
    let end = attach(stream, AttachOptions::waiting_for(until.clone(), timeout)).await?;
    match end {
        AttachEnd::TimedOut if until.is_some() => {
            anyhow::bail!(
                "{:?} did not appear within {} s",
                until.unwrap_or_default(),
                timeout.unwrap_or(0)
            )
        }
        AttachEnd::Detached => eprintln!("\r\nferry: detached"),
        AttachEnd::Closed => eprintln!("\r\nferry: console closed"),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a migration through the cluster, printing the source's progress
/// samples while it runs.
async fn migrate(
    roles: Roles,
    name: String,
    req: MigrateRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let poller = Roles {
        client: roles.client.clone().with_timeout(Duration::from_secs(5)),
        via: roles.via.clone(),
    };
    let call = roles.migrate(&name, &req);
    tokio::pin!(call);
    let result = loop {
        tokio::select! {
            r = &mut call => break r,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Ok(Some(p)) = poller.progress(&name).await {
                    if json {
                        println!("{}", serde_json::json!({ "progress": p }));
                    } else {
                        eprintln!("{}", p.line(&name));
                    }
                }
            }
        }
    };
    let m = result.with_context(|| format!("VM {name} was not migrated"))?;
    if json {
        println!("{}", serde_json::json!({ "migrated": m }));
    } else {
        println!(
            "{} (from {}; owner now {})",
            m.report.line(&m.to),
            m.from,
            m.to
        );
    }
    Ok(ExitCode::SUCCESS)
}
