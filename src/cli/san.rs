//! `ferry san ...`: the iSCSI target and the verbs that edit its
//! configuration file (targets, LUNs, portals) and show its state.

use anyhow::Context;
use clap::Subcommand;
use ferry_iscsi::config::{Chap, LunConfig, SanConfig, TargetConfig};
use ferry_iscsi::target::{registry::SessionInfo, Registry};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const DEFAULT_CONFIG: &str = "/etc/ferry/san.toml";

/// SAN verbs.
#[derive(Subcommand)]
pub enum SanCmd {
    /// Serve the configured targets over iSCSI until stopped (SIGINT/SIGTERM).
    Serve {
        /// The configuration file (TOML).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Create or delete targets.
    #[command(subcommand)]
    Target(TargetCmd),
    /// Create or delete LUNs.
    #[command(subcommand)]
    Lun(LunCmd),
    /// Set the listening portals (address:port, repeatable).
    Portals {
        /// The configuration file (TOML).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Portal addresses, e.g. 0.0.0.0:3260.
        #[arg(required = true)]
        portal: Vec<String>,
    },
    /// Show targets, LUNs and live sessions.
    Show {
        /// The configuration file (TOML).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Target verbs.
#[derive(Subcommand)]
pub enum TargetCmd {
    /// Add a target.
    Create {
        /// The configuration file (TOML); created when missing.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The target's IQN, e.g. iqn.2026-01.dev.ferry:disks.
        name: String,
        /// TargetAlias.
        #[arg(long)]
        alias: Option<String>,
        /// An initiator IQN allowed to log in (repeatable; none = all).
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// CHAP user the initiator must present.
        #[arg(long, requires = "chap_secret")]
        chap_user: Option<String>,
        /// CHAP secret the initiator must know.
        #[arg(long, requires = "chap_user")]
        chap_secret: Option<String>,
        /// User the target presents for mutual CHAP.
        #[arg(long, requires_all = ["mutual_secret", "chap_user"])]
        mutual_user: Option<String>,
        /// Secret the target proves for mutual CHAP.
        #[arg(long, requires = "mutual_user")]
        mutual_secret: Option<String>,
    },
    /// Remove a target (its image files stay).
    Delete {
        /// The configuration file (TOML).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The target's IQN.
        name: String,
    },
}

/// LUN verbs.
#[derive(Subcommand)]
pub enum LunCmd {
    /// Add a LUN backed by an image file (created sparse with --size).
    Create {
        /// The configuration file (TOML).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The target's IQN.
        #[arg(long)]
        target: String,
        /// LUN number.
        #[arg(long)]
        id: u64,
        /// Image file.
        #[arg(long)]
        path: PathBuf,
        /// Size, e.g. 1G, 512M, 1048576 (needed when the image does not exist).
        #[arg(long)]
        size: Option<String>,
        /// Refuse writes.
        #[arg(long)]
        read_only: bool,
    },
    /// Remove a LUN (its image file stays).
    Delete {
        /// The configuration file (TOML).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The target's IQN.
        #[arg(long)]
        target: String,
        /// LUN number.
        #[arg(long)]
        id: u64,
    },
}

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let m = match s[i..]
                .to_ascii_uppercase()
                .trim_end_matches("IB")
                .trim_end_matches('B')
            {
                "K" => 1u64 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                "" => 1,
                other => anyhow::bail!("size {s:?}: unknown unit {other:?} (use K, M, G or T)"),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("size {s:?} is not a number"))?;
    n.checked_mul(mult)
        .with_context(|| format!("size {s:?} is too large"))
}

fn load_or_new(path: &Path) -> anyhow::Result<SanConfig> {
    if path.exists() {
        Ok(SanConfig::load(path)?)
    } else {
        Ok(SanConfig::default())
    }
}

fn save(cfg: &SanConfig, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(cfg.save(path)?)
}

/// Runs a SAN verb.
pub fn run(cmd: SanCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        SanCmd::Serve { config } => super::block_on(true, serve(config)),
        SanCmd::Target(TargetCmd::Create {
            config,
            name,
            alias,
            allow,
            chap_user,
            chap_secret,
            mutual_user,
            mutual_secret,
        }) => {
            let mut cfg = load_or_new(&config)?;
            anyhow::ensure!(
                !cfg.targets.iter().any(|t| t.name == name),
                "target {name} already exists in {}",
                config.display()
            );
            let chap = chap_user
                .zip(chap_secret)
                .map(|(user, secret)| Chap { user, secret });
            let mutual_chap = mutual_user
                .zip(mutual_secret)
                .map(|(user, secret)| Chap { user, secret });
            cfg.targets.push(TargetConfig {
                name: name.clone(),
                alias,
                allowed_initiators: allow,
                chap,
                mutual_chap,
                luns: Vec::new(),
            });
            save(&cfg, &config)?;
            println!("target {name} created");
            Ok(ExitCode::SUCCESS)
        }
        SanCmd::Target(TargetCmd::Delete { config, name }) => {
            let mut cfg = SanConfig::load(&config)?;
            let before = cfg.targets.len();
            cfg.targets.retain(|t| t.name != name);
            anyhow::ensure!(
                cfg.targets.len() < before,
                "no target {name} in {}",
                config.display()
            );
            save(&cfg, &config)?;
            println!("target {name} deleted");
            Ok(ExitCode::SUCCESS)
        }
        SanCmd::Lun(LunCmd::Create {
            config,
            target,
            id,
            path,
            size,
            read_only,
        }) => {
            let mut cfg = SanConfig::load(&config)?;
            let size = size.as_deref().map(parse_size).transpose()?;
            anyhow::ensure!(
                size.is_some() || path.exists(),
                "{} does not exist: give --size to create it",
                path.display()
            );
            let t = cfg
                .targets
                .iter_mut()
                .find(|t| t.name == target)
                .with_context(|| format!("no target {target} in {}", config.display()))?;
            anyhow::ensure!(
                !t.luns.iter().any(|l| l.id == id),
                "target {target} already has LUN {id}"
            );
            let path = std::path::absolute(&path).unwrap_or(path);
            t.luns.push(LunConfig {
                id,
                path: path.clone(),
                size,
                read_only,
            });
            cfg.validate()?;
            ferry_iscsi::scsi::ImageFile::open(&path, size, read_only, 512)
                .with_context(|| format!("LUN {id} image"))?;
            save(&cfg, &config)?;
            println!("LUN {id} of {target} created ({})", path.display());
            Ok(ExitCode::SUCCESS)
        }
        SanCmd::Lun(LunCmd::Delete { config, target, id }) => {
            let mut cfg = SanConfig::load(&config)?;
            let t = cfg
                .targets
                .iter_mut()
                .find(|t| t.name == target)
                .with_context(|| format!("no target {target} in {}", config.display()))?;
            let before = t.luns.len();
            t.luns.retain(|l| l.id != id);
            anyhow::ensure!(t.luns.len() < before, "target {target} has no LUN {id}");
            save(&cfg, &config)?;
            println!("LUN {id} of {target} deleted");
            Ok(ExitCode::SUCCESS)
        }
        SanCmd::Portals { config, portal } => {
            let mut cfg = load_or_new(&config)?;
            cfg.portals = portal;
            save(&cfg, &config)?;
            println!("portals: {}", cfg.portals.join(" "));
            Ok(ExitCode::SUCCESS)
        }
        SanCmd::Show { config } => show(&config, json),
    }
}

fn show(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = SanConfig::load(config)?;
    let sessions: Vec<SessionInfo> = std::fs::read_to_string(Registry::status_path(config))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    if json {
        // Secrets stay in the file.
        let mut targets = cfg.targets.clone();
        for t in &mut targets {
            for c in [&mut t.chap, &mut t.mutual_chap].into_iter().flatten() {
                c.secret = "(hidden)".to_string();
            }
        }
        let v = serde_json::json!({ "portals": cfg.portals(), "targets": targets, "sessions": sessions });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("portals: {}", cfg.portals().join(" "));
    for t in &cfg.targets {
        let auth = match (&t.chap, &t.mutual_chap) {
            (Some(_), Some(_)) => "mutual CHAP",
            (Some(_), None) => "CHAP",
            _ => "none",
        };
        let acl = if t.allowed_initiators.is_empty() {
            "all initiators".to_string()
        } else {
            t.allowed_initiators.join(", ")
        };
        println!("target {} (auth: {auth}; access: {acl})", t.name);
        for l in &t.luns {
            let size = std::fs::metadata(&l.path)
                .map(|m| m.len())
                .ok()
                .or(l.size)
                .unwrap_or(0);
            println!(
                "  LUN {}: {} ({} MiB{})",
                l.id,
                l.path.display(),
                size >> 20,
                if l.read_only { ", read-only" } else { "" }
            );
        }
    }
    println!("sessions: {}", sessions.len());
    for s in &sessions {
        println!(
            "  tsih {} {} isid {} -> {} from {}{}",
            s.tsih,
            s.initiator,
            s.isid,
            if s.target.is_empty() {
                "(discovery)"
            } else {
                &s.target
            },
            s.peer,
            if s.connections > 1 {
                format!(" ({} connections)", s.connections)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: PathBuf) -> anyhow::Result<ExitCode> {
    let cfg = SanConfig::load(&config)?;
    let registry = Arc::new(Registry::from_config(&cfg, &config)?);
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
    };
    ferry_iscsi::target::serve(registry, &cfg.portals(), shutdown).await?;
    let _ = std::fs::remove_file(Registry::status_path(&config));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G").ok(), Some(1 << 30));
        assert_eq!(parse_size("512MiB").ok(), Some(512 << 20));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert!(parse_size("3X").is_err());
    }
}
