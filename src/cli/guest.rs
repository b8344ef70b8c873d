//! `ferry guest ...`: the test guest.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// Test guest verbs.
#[derive(Subcommand)]
pub enum GuestCmd {
    /// Download Debian's cloud kernel and build the initramfs (cached).
    ///
    /// The kernel comes from the versioned package that linux-image-cloud-amd64
    /// depends on (`apt-get download`); the initramfs holds busybox-static, the
    /// virtio modules, Ferry's /init and the ferry-workload binary.
    Build {
        /// Output directory [default: $FERRY_GUEST_DIR or /var/lib/ferry/guest].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Static ferry-workload binary [default: next to this ferry binary].
        #[arg(long)]
        workload_bin: Option<PathBuf>,
        /// Static busybox binary.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// Rebuild even if the inputs are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Show what the built guest contains (kernel version, modules, paths).
    Info {
        /// Guest directory [default: $FERRY_GUEST_DIR or /var/lib/ferry/guest].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn default_workload_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_WORKLOAD_BIN") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("ferry-workload-static")))
        .unwrap_or_else(|| "ferry-workload-static".into())
}

/// Runs a guest verb.
pub fn run(cmd: GuestCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        GuestCmd::Build {
            dir,
            workload_bin,
            busybox,
            force,
        } => {
            let opts = ferry_guest::BuildOptions {
                dir: dir.unwrap_or_else(ferry_guest::default_dir),
                workload_bin: workload_bin.unwrap_or_else(default_workload_bin),
                busybox,
                force,
            };
            let out = ferry_guest::build(&opts).context("building the test guest")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out.manifest)?);
            } else {
                let m = &out.manifest;
                let verb = if out.rebuilt { "built" } else { "up to date" };
                println!(
                    "guest {verb}: kernel {} ({})",
                    m.kernel_release, m.kernel_package
                );
                println!("  kernel  {}", m.kernel.display());
                println!(
                    "  initrd  {} ({} KiB, {} modules)",
                    m.initrd.display(),
                    m.initrd_bytes / 1024,
                    m.modules.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        GuestCmd::Info { dir } => {
            let dir = dir.unwrap_or_else(ferry_guest::default_dir);
            let m = ferry_guest::Manifest::load(&dir).with_context(|| {
                format!(
                    "no guest built in {} (run `ferry guest build`)",
                    dir.display()
                )
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!("kernel {} from {}", m.kernel_release, m.kernel_package);
                println!("kernel file  {}", m.kernel.display());
                println!("initrd file  {}", m.initrd.display());
                println!("modules      {}", m.modules.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
