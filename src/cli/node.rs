//! `ferry node ...`: take a host out of service and back.

use super::cluster::Target;
use clap::Subcommand;
use std::process::ExitCode;

/// Host verbs.
#[derive(Subcommand)]
pub enum NodeCmd {
    /// Pause a host (it takes no new VMs) and live-migrate every VM it runs
    /// to other hosts, highest priority first, one at a time.
    Drain {
        /// The host.
        host: String,
        #[command(flatten)]
        target: Target,
    },
    /// Let a paused (drained) host take VMs again.
    Resume {
        /// The host.
        host: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a host verb.
pub async fn run(cmd: NodeCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeCmd::Drain { host, target } => {
            let report = super::roles::roles(target)?.drain(&host).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("host {host} paused");
                for m in &report.moved {
                    println!("  moved  {} -> {}", m.name, m.to);
                }
                for (vm, why) in &report.failed {
                    println!("  FAILED {vm}: {why}");
                }
            }
            if !report.failed.is_empty() {
                anyhow::bail!("{} VM(s) could not leave {host}", report.failed.len());
            }
        }
        NodeCmd::Resume { host, target } => {
            let v = super::roles::roles(target)?.resume(&host).await?;
            if json {
                println!("{v}");
            } else {
                println!("host {host} takes VMs again");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
