//! `ferry vm migrate`: live migration with progress.

use anyhow::Context;
use clap::Args;
use ferry_migrate::live::OnTimeout;
use ferry_migrate::{HostsFile, MigrateOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Options of `vm migrate`.
#[derive(Args)]
pub struct MigrateArgs {
    /// VM name.
    pub(super) name: String,
    /// Destination host (a name in the hosts file).
    #[arg(long, required_unless_present = "cancel")]
    pub(super) to: Option<String>,
    /// Source host [default: the host whose run_dir is $FERRY_RUN_DIR].
    #[arg(long)]
    pub(super) from: Option<String>,
    /// Hosts file [default: $FERRY_HOSTS or /etc/ferry/hosts.toml].
    #[arg(long)]
    pub(super) hosts: Option<PathBuf>,
    /// Downtime budget to start with, in ms.
    #[arg(long, default_value_t = 50)]
    pub(super) downtime: u64,
    /// Highest downtime budget Ferry may raise it to if the guest dirties
    /// memory faster than the link carries it, in ms.
    #[arg(long, default_value_t = 1000)]
    pub(super) downtime_max: u64,
    /// Bandwidth cap in MiB/s, for the live stream or a quick migration's
    /// save [default: unlimited].
    #[arg(long)]
    pub(super) bandwidth: Option<u64>,
    /// Give up after this many seconds (the VM stays on the source).
    #[arg(long, default_value_t = 120)]
    pub(super) timeout: u64,
    /// Cancel if no data moves for this many seconds (a cut link or a hung
    /// destination); the VM stays on the source.
    #[arg(long, default_value_t = 10)]
    pub(super) stall_timeout: u64,
    /// At the timeout, stop the guest and finish instead of giving up.
    #[arg(long)]
    pub(super) force_on_timeout: bool,
    /// TCP port the destination listens on for the migration stream.
    #[arg(long, default_value_t = 49152)]
    pub(super) port: u16,
    /// Parallel migration streams (multifd); 1 turns multifd off.
    #[arg(long, default_value_t = 2)]
    pub(super) channels: u8,
    /// Use QEMU's own defaults (as a plain `virsh migrate --live`) instead of
    /// Ferry's policy: for comparisons.
    #[arg(long)]
    pub(super) qemu_defaults: bool,
    /// Quick migration: pause, save the state to a file both hosts see,
    /// restore it on the destination, resume there.
    #[arg(long)]
    pub(super) quick: bool,
    /// State file for --quick [default: NAME.state in the source host's run_dir].
    #[arg(long)]
    pub(super) state_file: Option<PathBuf>,
    /// Send the migration stream unencrypted and unauthenticated (for
    /// benchmarks on a trusted link). By default it runs over TLS with
    /// certificates from Ferry's CA, checked on both ends.
    #[arg(long)]
    pub(super) plain: bool,
    /// Cancel the migration of this VM that is running now (on this host).
    #[arg(long)]
    pub(super) cancel: bool,
}

/// The hosts file: the argument, `$FERRY_HOSTS`, or /etc/ferry/hosts.toml.
pub(super) fn hosts_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("FERRY_HOSTS").map(PathBuf::from))
        .unwrap_or_else(|| "/etc/ferry/hosts.toml".into())
}

/// Runs `vm migrate`.
pub async fn run(args: MigrateArgs, json: bool) -> anyhow::Result<ExitCode> {
    if args.cancel {
        let dir = ferry_vm::RunDir::for_vm(&args.name);
        let name = args.name.clone();
        let vm = name.clone();
        let pid = tokio::task::spawn_blocking(move || {
            ferry_migrate::inflight::cancel(&vm, &dir, Duration::from_secs(30))
        })
        .await??;
        match pid {
            Some(pid) => eprintln!(
                "ferry: cancelled the migration of {name} (process {pid}); it keeps running here"
            ),
            None => anyhow::bail!("no migration of {name} is running on this host"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let path = hosts_path(args.hosts.clone());
    let hosts = HostsFile::load(&path)?;
    let to = args.to.as_deref().context("--to HOST is required")?;
    let dst = hosts.get(to, &path)?;
    let (from, src) = match &args.from {
        Some(name) => (name.clone(), hosts.get(name, &path)?),
        None => {
            let here = ferry_vm::rundir::root();
            let (name, host) = hosts.by_run_dir(&here).with_context(|| {
                format!(
                    "no host in {} has run_dir {}; say --from HOST",
                    path.display(),
                    here.display()
                )
            })?;
            (name.clone(), host)
        }
    };
    anyhow::ensure!(src != dst, "source and destination are the same host");
    let opts = MigrateOptions {
        cancel: None,
        policy: if args.qemu_defaults {
            ferry_migrate::Policy::QemuDefaults
        } else {
            ferry_migrate::Policy::Ferry
        },
        downtime_ms: args.downtime,
        downtime_ceiling_ms: args.downtime_max.max(args.downtime),
        bandwidth_mibps: args.bandwidth,
        timeout: Duration::from_secs(args.timeout),
        on_timeout: if args.force_on_timeout {
            OnTimeout::Force
        } else {
            OnTimeout::Cancel
        },
        stall_timeout: Duration::from_secs(args.stall_timeout.max(1)),
        multifd_channels: args.channels.max(1),
        port: args.port,
        tls: if args.plain {
            None
        } else {
            Some(
                ferry_migrate::TlsPlan::from_ca(&hosts.ca_dir, (&from, src), (to, dst))
                    .context("preparing TLS credentials for the migration stream")?,
            )
        },
        quick: args.quick.then(|| {
            args.state_file
                .clone()
                .unwrap_or_else(|| src.run_dir.join(format!("{}.state", args.name)))
        }),
    };
    let tty = std::io::stderr().is_terminal();
    let mut last_print = std::time::Instant::now() - Duration::from_secs(1);
    let destination = ferry_migrate::HostDestination {
        host: dst,
        ferry_exe: &std::env::current_exe().context("cannot find the ferry binary")?,
    };
    let src_dir = src.vm_dir(&args.name);
    let report = ferry_migrate::migrate(&args.name, &src_dir, &destination, &opts, |p| {
        if json {
            if let Ok(line) = serde_json::to_string(&serde_json::json!({"progress": p})) {
                println!("{line}");
            }
        } else if last_print.elapsed() >= Duration::from_millis(if tty { 200 } else { 1000 }) {
            last_print = std::time::Instant::now();
            let line = p.line(&args.name);
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    })
    .await;
    if tty && !json {
        eprintln!();
    }
    let report = report.with_context(|| format!("VM {} stays on the source", args.name))?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({"report": report}))?
        );
    } else {
        println!("{}", report.line(to));
    }
    Ok(ExitCode::SUCCESS)
}
