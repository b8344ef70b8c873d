//! `ferry host ...`: facts about this host.

use clap::Subcommand;
use ferry_qemu::{Accel, QemuBinary};
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
    }
}
