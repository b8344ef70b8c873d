//! `ferry host ...`: facts about this host.

use anyhow::Context;
use clap::Subcommand;
use ferry_qemu::{Accel, QemuBinary};
use std::path::PathBuf;
use std::process::ExitCode;

/// Host verbs.
#[derive(Subcommand)]
pub enum HostCmd {
    /// Show which accelerator VMs get here and why, and the QEMU in use.
    Accel {
        /// Pretend the user forced this accelerator.
        #[arg(long)]
        accel: Option<Accel>,
    },
    /// This host's CPU profile: vendor, identity and the features its
    /// accelerator gives guests (QEMU's expansion of `max` under TCG, `host`
    /// under KVM), less what the host configuration withholds; with a digest.
    Cpu {
        /// Host configuration file with a `[cpu]` table (`withhold = [...]`,
        /// `vendor = "..."`) [default: $FERRY_HOST_CONFIG or /etc/ferry/host.toml].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A shared LUN as this host sees it, and persistent reservation commands.
    #[command(subcommand)]
    Lun(super::lun::LunCmd),
    /// The CPU every given host can run (intersection of their profiles, as
    /// saved by `ferry --json host cpu`), or a named level on this host.
    Baseline {
        /// A named level instead: x86-64-v2, x86-64-v2-AES, x86-64-v3, x86-64-v4.
        #[arg(long, conflicts_with = "profiles")]
        level: Option<String>,
        /// Host configuration file, for --level [default as for `host cpu`].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Profile files (JSON from `ferry --json host cpu`).
        #[arg(required_unless_present = "level")]
        profiles: Vec<PathBuf>,
    },
}

/// This host's CPU profile as configured.
fn cpu_profile(config: Option<PathBuf>) -> anyhow::Result<ferry_cpu::CpuProfile> {
    let config = config.unwrap_or_else(ferry_vm::cpu::host_config_path);
    let qemu = QemuBinary::find()?;
    let accel = ferry_qemu::accel::choose(&qemu, None).accel;
    Ok(ferry_vm::cpu::host_profile_with(&qemu, accel, &config)?)
}

fn print_model(m: &ferry_cpu::CpuModel, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::json!({"model": m, "qemu_cpu": m.qemu_arg()})
        );
    } else {
        println!("vendor     {}", m.vendor);
        println!(
            "features   {}",
            m.features.iter().cloned().collect::<Vec<_>>().join(" ")
        );
        println!("qemu -cpu  {}", m.qemu_arg());
    }
    Ok(())
}

/// Runs a host verb.
pub fn run(cmd: HostCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        HostCmd::Accel { accel } => {
            let qemu = QemuBinary::find()?;
            let choice = ferry_qemu::accel::choose(&qemu, accel);
            if json {
                let v = serde_json::json!({
                    "accel": choice.accel,
                    "reason": choice.reason,
                    "qemu": qemu.path,
                    "qemu_version": qemu.version_string(),
                });
                println!("{v}");
            } else {
                println!("accelerator  {}", choice.accel);
                println!("why          {}", choice.reason);
                println!(
                    "qemu         {} ({})",
                    qemu.path.display(),
                    qemu.version_string()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        HostCmd::Cpu { config } => {
            let p = cpu_profile(config)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(
                        &serde_json::json!({"profile": p, "digest": p.digest()})
                    )?
                );
            } else {
                println!("vendor     {}", p.vendor);
                println!(
                    "identity   family {} model {} stepping {} ({})",
                    p.family, p.model, p.stepping, p.model_id
                );
                println!("accel      {}", p.accel);
                println!(
                    "features   {} ({})",
                    p.features.len(),
                    p.features.iter().cloned().collect::<Vec<_>>().join(" ")
                );
                if !p.withheld.is_empty() {
                    println!(
                        "withheld   {}",
                        p.withheld.iter().cloned().collect::<Vec<_>>().join(" ")
                    );
                }
                println!("digest     {}", p.digest());
            }
            Ok(ExitCode::SUCCESS)
        }
        HostCmd::Lun(cmd) => super::lun::run(cmd, json),
        HostCmd::Baseline {
            level,
            config,
            profiles,
        } => {
            let model = match level {
                Some(name) => ferry_cpu::level(&name, &cpu_profile(config)?)?,
                None => {
                    let mut ps = Vec::new();
                    for path in &profiles {
                        let text = std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?;
                        let v: serde_json::Value = serde_json::from_str(&text)
                            .with_context(|| format!("{} is not JSON", path.display()))?;
                        let p: ferry_cpu::CpuProfile =
                            serde_json::from_value(v.get("profile").cloned().unwrap_or(v))
                                .with_context(|| {
                                    format!("{} is not a CPU profile", path.display())
                                })?;
                        ps.push(p);
                    }
                    ferry_cpu::baseline(&ps)?
                }
            };
            print_model(&model, json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
