//! `ferry daemon`: this host's node agent (for now: its cluster member).

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
    ferry_cluster::daemon::run(&config, stop).await?;
    Ok(ExitCode::SUCCESS)
}
