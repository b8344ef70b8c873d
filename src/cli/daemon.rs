//! `ferry daemon`: this host's node agent: its cluster member and its VM
//! roles.

use anyhow::Context;
use clap::Args;
use ferry_cluster::config::MemberConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run the node agent in the foreground until SIGINT or SIGTERM.
#[derive(Args)]
pub struct DaemonArgs {
    /// Member configuration (TOML: id, name, listen, data_dir, peers).
    #[arg(long)]
    config: PathBuf,
}

/// Runs the daemon.
pub async fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let config = MemberConfig::load(&args.config)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot catch SIGTERM")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let exe = std::env::current_exe().context("cannot find the ferry binary")?;
    ferry_agent::run(&config, exe, stop).await?;
    Ok(ExitCode::SUCCESS)
}
