//! `ferry block ...`: the block service that serves VM disks to QEMU.

use anyhow::Context;
use clap::Subcommand;
use ferry_block::{DiskExport, ServiceConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// Block service verbs.
#[derive(Subcommand)]
pub enum BlockCmd {
    /// Serve disks over NBD on a unix socket (or as vhost-user-blk devices)
    /// until stopped.
    ///
    /// VM supervisors start one service per VM by themselves; run it by hand
    /// to export an image to any NBD client, e.g.
    /// `ferry block serve --socket /tmp/d.sock --disk data=/srv/data.img`
    /// then `qemu-img info nbd+unix:///data?socket=/tmp/d.sock`; add
    /// `--vhost-user data=/tmp/data.vhost` to give it to a QEMU as
    /// `-device vhost-user-blk-pci` instead (guest memory must be a shared
    /// memfd).
    Serve {
        /// A JSON service configuration (socket, stats file, disks).
        #[arg(long, conflicts_with_all = ["socket", "disk"])]
        config: Option<PathBuf>,
        /// Unix socket to listen on.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// A disk as NAME=IMAGE or NAME=IMAGE:ro (repeatable); IMAGE may be an
        /// iscsi://PORTAL[:PORT]/IQN/LUN URL (credentials from
        /// /etc/ferry/iscsi-secrets.toml).
        #[arg(long)]
        disk: Vec<String>,
        /// Serve disk NAME as a vhost-user-blk device on SOCKET: NAME=SOCKET
        /// (repeatable).
        #[arg(long, conflicts_with = "config")]
        vhost_user: Vec<String>,
        /// Write per-disk statistics to this JSON file every second.
        #[arg(long)]
        stats: Option<PathBuf>,
    },
}

fn parse_disk(arg: &str) -> anyhow::Result<DiskExport> {
    let (name, rest) = arg
        .split_once('=')
        .with_context(|| format!("--disk {arg:?}: expected NAME=IMAGE or NAME=IMAGE:ro"))?;
    let (path, readonly) = match rest.strip_suffix(":ro") {
        Some(p) => (p, true),
        None => (rest, false),
    };
    anyhow::ensure!(
        !name.is_empty() && !path.is_empty(),
        "--disk {arg:?}: empty name or image"
    );
    Ok(DiskExport {
        name: name.to_string(),
        path: path.into(),
        secrets: None,
        readonly,
        vhost_user: None,
    })
}

/// Applies `--vhost-user NAME=SOCKET` to the disk named NAME.
fn set_vhost_user(disks: &mut [DiskExport], arg: &str) -> anyhow::Result<()> {
    let (name, socket) = arg
        .split_once('=')
        .filter(|(n, s)| !n.is_empty() && !s.is_empty())
        .with_context(|| format!("--vhost-user {arg:?}: expected NAME=SOCKET"))?;
    let disk = disks
        .iter_mut()
        .find(|d| d.name == name)
        .with_context(|| format!("--vhost-user {arg:?}: no --disk is named {name:?}"))?;
    disk.vhost_user = Some(socket.into());
    Ok(())
}

/// Runs a block verb.
pub fn run(cmd: BlockCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BlockCmd::Serve {
            config,
            socket,
            disk,
            vhost_user,
            stats,
        } => {
            let cfg = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str::<ServiceConfig>(&text).with_context(|| {
                        format!(
                            "{} is not a valid block service configuration",
                            path.display()
                        )
                    })?
                }
                None => ServiceConfig {
                    socket: socket.context("give --socket (or --config)")?,
                    stats,
                    disks: disk
                        .iter()
                        .map(|d| parse_disk(d))
                        .collect::<anyhow::Result<_>>()?,
                },
            };
            let mut cfg = cfg;
            for v in &vhost_user {
                set_vhost_user(&mut cfg.disks, v)?;
            }
            anyhow::ensure!(
                !cfg.disks.is_empty(),
                "no disks to serve (--disk NAME=IMAGE)"
            );
            let socket = cfg.socket.clone();
            ferry_block::service::run(cfg, || tracing::info!("listening on {}", socket.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
