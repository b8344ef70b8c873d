//! `ferry vm ...`: define, start, watch, talk to and stop VMs on this host.

use super::console::{self, AttachEnd, AttachOptions};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ferry_qemu::cmdline::Console;
use ferry_qemu::{Accel, AccelChoice, LaunchConfig, QemuBinary};
use ferry_spec::VmSpec;
use ferry_vm::control::{self, StartOptions, StopOptions};
use ferry_vm::{RunDir, StateRecord, VmState};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// VM verbs.
#[derive(Subcommand)]
pub enum VmCmd {
    /// Start a VM and show its serial console in the foreground.
    ///
    /// The VM is launched held, the console attached, then the vCPUs start, so
    /// no output is missed. Ctrl-] detaches and leaves the VM running. With
    /// --until, the VM is stopped as soon as the text appears (for scripts:
    /// `ferry vm run examples/test-guest.toml --until FERRY-GUEST-READY`).
    Run {
        /// VM spec file (TOML, or JSON if it ends in .json).
        spec: PathBuf,
        /// Stop the VM once this text appears on the console, and exit 0.
        #[arg(long)]
        until: Option<String>,
        /// Give up (and stop the VM) after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        #[command(flatten)]
        start: StartArgs,
        /// Seconds the guest may take to power off before it is forced.
        #[arg(long, default_value_t = 10)]
        stop_timeout: u64,
    },
    /// Start a VM in the background and return once it runs.
    Start {
        /// VM spec file (TOML, or JSON if it ends in .json).
        spec: PathBuf,
        #[command(flatten)]
        start: StartArgs,
    },
    /// Stop a VM: ACPI power button, then a forced quit after --timeout.
    Stop {
        /// VM name.
        name: String,
        /// Seconds the guest may take to power off before it is forced.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// End QEMU at once, without asking the guest.
        #[arg(long)]
        force: bool,
    },
    /// Freeze the VM's vCPUs (its memory and devices stay as they are).
    Pause {
        /// VM name.
        name: String,
    },
    /// Let a paused VM run again.
    Resume {
        /// VM name.
        name: String,
    },
    /// Show a VM's state as QEMU reported it.
    Status {
        /// VM name.
        name: String,
    },
    /// List the VMs on this host.
    List,
    /// Attach to a running VM's serial console (Ctrl-] detaches).
    Console {
        /// VM name.
        name: String,
        /// Print the console log so far instead of attaching.
        #[arg(long)]
        log: bool,
    },
    /// Live-migrate a running VM to another host, with progress.
    ///
    /// The destination is prepared from the very spec the source runs
    /// (`ferry vm start --incoming` there), the memory moves over the
    /// destination's migration address, and at the switchover the destination
    /// runs and announces the guest's MAC before the source stops. If anything
    /// fails first, the VM keeps running here and the destination's half is
    /// removed. Hosts come from a hosts file (`[hosts.NAME]` with `run_dir`,
    /// `migration_address` and, in the lab, `netns`).
    Migrate(super::migrate::MigrateArgs),
    /// Show per-disk I/O of a VM's Ferry-served disks (IOPS, MiB/s, latency,
    /// in-flight requests), sampled every second by its block service.
    Disks {
        /// VM name.
        name: String,
    },
    /// Print the QEMU command line Ferry would run for a spec.
    Cmdline {
        /// VM spec file.
        spec: PathBuf,
        /// The equivalent hand-typed command: console on stdio, no QMP, no -S.
        #[arg(long)]
        plain: bool,
        /// Accelerator to use instead of probing.
        #[arg(long)]
        accel: Option<Accel>,
    },
    /// Internal: the per-VM supervisor process (started by `vm start`).
    #[command(hide = true)]
    Supervise {
        /// The VM's runtime directory.
        #[arg(long)]
        dir: PathBuf,
        /// Accelerator chosen by the starter.
        #[arg(long)]
        accel: Accel,
        /// Why it was chosen.
        #[arg(long, default_value = "")]
        accel_reason: String,
        /// Keep vCPUs stopped after launch.
        #[arg(long)]
        hold: bool,
        /// Wait for an incoming migration.
        #[arg(long)]
        incoming: bool,
    },
}

/// Options shared by `run` and `start`.
#[derive(Args)]
pub struct StartArgs {
    /// Accelerator: kvm or tcg. By default Ferry probes: KVM only where the
    /// CPU has vmx/svm and a probe guest really boots, else TCG.
    #[arg(long)]
    accel: Option<Accel>,
    /// Seconds to wait for QEMU to come up.
    #[arg(long, default_value_t = 60)]
    start_timeout: u64,
    /// Start QEMU waiting for an incoming migration (`-incoming defer`), as
    /// the destination of a migration; vCPUs run once it completes and
    /// `cont` is sent.
    #[arg(long)]
    incoming: bool,
}

fn start_options(args: &StartArgs, hold: bool) -> anyhow::Result<StartOptions> {
    Ok(StartOptions {
        accel: args.accel,
        hold,
        incoming: args.incoming,
        supervisor_exe: std::env::current_exe().context("cannot find the ferry binary")?,
        timeout: Duration::from_secs(args.start_timeout),
    })
}

fn print_record(rec: &StateRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(rec)?);
    } else {
        println!(
            "{:<20} {:<9} {}{}",
            rec.name,
            rec.state.to_string(),
            rec.detail,
            rec.qemu_pid
                .map(|p| format!(" [qemu pid {p}]"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs a VM verb.
pub async fn run(cmd: VmCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCmd::Run {
            spec,
            until,
            timeout,
            start,
            stop_timeout,
        } => run_foreground(&spec, until, timeout, &start, stop_timeout, json).await,
        VmCmd::Start { spec, start } => {
            let spec = VmSpec::load(&spec)?;
            let opts = start_options(&start, false)?;
            let rec = tokio::task::spawn_blocking(move || control::start(&spec, &opts)).await??;
            if !json {
                eprintln!("accelerator: {} ({})", rec.accel, rec.accel_reason);
            }
            print_record(&rec, json)?;
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Stop {
            name,
            timeout,
            force,
        } => {
            let rec = control::stop(
                &name,
                StopOptions {
                    timeout: Duration::from_secs(timeout),
                    force,
                },
            )
            .await?;
            print_record(&rec, json)?;
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Pause { name } => {
            print_record(&control::pause(&name).await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Resume { name } => {
            print_record(&control::resume(&name).await?, json)?;
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Status { name } => {
            let rec = control::status(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rec)?);
            } else {
                println!("name         {}", rec.name);
                println!("state        {} ({})", rec.state, rec.detail);
                println!(
                    "qemu         {} pid {}",
                    rec.qemu_version,
                    rec.qemu_pid.map_or("-".into(), |p| p.to_string())
                );
                println!("accelerator  {} ({})", rec.accel, rec.accel_reason);
                println!(
                    "console log  {}",
                    RunDir::for_vm(&name).console_log().display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::List => {
            let all = control::list()?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else if all.is_empty() {
                println!("no VMs on this host");
            } else {
                for rec in &all {
                    print_record(rec, false)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Console { name, log } => {
            let dir = RunDir::for_vm(&name);
            if log {
                let path = dir.console_log();
                let text = std::fs::read(&path)
                    .with_context(|| format!("no console log for {name} at {}", path.display()))?;
                use std::io::Write;
                std::io::stdout().write_all(&text)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rec = control::status(&name)?;
            if rec.state.is_final() {
                bail!(
                    "VM {name} is {}; `ferry vm console {name} --log` shows what it printed",
                    rec.state
                );
            }
            let stream = console::connect(&dir.serial()).await.with_context(|| {
                format!("cannot attach to the console of {name} (is another console attached?)")
            })?;
            eprintln!("ferry: attached to {name}'s console; Ctrl-] detaches");
            let end = console::attach(
                stream,
                AttachOptions {
                    interactive: true,
                    until: None,
                    timeout: None,
                },
            )
            .await?;
            eprintln!(
                "\r\nferry: {}",
                if end == AttachEnd::Detached {
                    "detached"
                } else {
                    "console closed"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Migrate(args) => super::migrate::run(args, json).await,
        VmCmd::Disks { name } => {
            control::status(&name)?;
            let path = RunDir::for_vm(&name).block_stats();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("VM {name} has no disk statistics (no disk with via = \"ferry\", or its block service has not sampled yet)"))?;
            let stats: Vec<ferry_block::stats::DiskStats> = serde_json::from_str(&text)
                .with_context(|| format!("corrupt statistics in {}", path.display()))?;
            if json {
                println!("{}", serde_json::to_string(&stats)?);
            } else {
                println!(
                    "{:<6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8} {:>6}  backend",
                    "disk",
                    "read/s",
                    "write/s",
                    "rd MiB/s",
                    "wr MiB/s",
                    "lat avg",
                    "lat max",
                    "inflight",
                    "errors"
                );
                for d in &stats {
                    println!(
                        "{:<6} {:>9.0} {:>9.0} {:>8.1} {:>8.1} {:>7.0}us {:>7}us {:>8} {:>6}  {}{}",
                        d.name,
                        d.read_iops,
                        d.write_iops,
                        d.read_mibps,
                        d.write_mibps,
                        d.latency_us_avg,
                        d.latency_us_max,
                        d.in_flight,
                        d.errors,
                        d.backend,
                        if d.read_only { " (read-only)" } else { "" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Cmdline { spec, plain, accel } => {
            let mut spec = VmSpec::load(&spec)?;
            let qemu = QemuBinary::find()?;
            let choice = ferry_qemu::accel::choose(&qemu, accel);
            ferry_vm::cpu::resolve(&mut spec, &qemu, choice.accel)?;
            let dir = RunDir::for_vm(&spec.name);
            let nics = ferry_vm::net::nic_plans(&spec);
            let cfg = LaunchConfig {
                spec: &spec,
                accel: choice.accel,
                qmp_sockets: if plain {
                    vec![]
                } else {
                    vec![dir.qmp_monitor(), dir.qmp_control()]
                },
                console: if plain {
                    Console::Stdio
                } else {
                    Console::Socket {
                        path: dir.serial(),
                        log: dir.console_log(),
                    }
                },
                nics,
                start_paused: !plain,
                // By hand there is no block service: QEMU opens every image.
                block_socket: (!plain).then(|| dir.block_socket()),
                incoming: false,
            };
            let args = cfg.args();
            if json {
                let mut all = vec![qemu.path.display().to_string()];
                all.extend(args);
                println!("{}", serde_json::to_string(&all)?);
            } else {
                let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
                println!("{} {}", qemu.path.display(), quoted.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Supervise {
            dir,
            accel,
            accel_reason,
            hold,
            incoming,
        } => {
            let qemu = QemuBinary::find()?;
            let opts = ferry_vm::supervisor::SuperviseOptions {
                dir: RunDir::at(&dir),
                qemu,
                accel: AccelChoice {
                    accel,
                    reason: accel_reason,
                },
                hold,
                incoming,
                ferry_exe: std::env::current_exe().context("cannot find the ferry binary")?,
            };
            let rec = ferry_vm::supervisor::run(opts).await?;
            tracing::info!("VM {} ended: {} ({})", rec.name, rec.state, rec.detail);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=,./:+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

async fn run_foreground(
    spec_path: &std::path::Path,
    until: Option<String>,
    timeout: Option<u64>,
    start: &StartArgs,
    stop_timeout: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let spec = VmSpec::load(spec_path)?;
    let name = spec.name.clone();
    let opts = start_options(start, true)?;
    let began = std::time::Instant::now();
    let rec = tokio::task::spawn_blocking(move || control::start(&spec, &opts)).await??;
    eprintln!(
        "ferry: VM {name} started on {} ({}); Ctrl-] detaches",
        rec.accel, rec.accel_reason
    );
    let dir = RunDir::for_vm(&name);
    let stream = console::connect(&dir.serial())
        .await
        .context("cannot attach to the console")?;
    control::resume(&name).await?;
    let end = console::attach(stream, AttachOptions::waiting_for(until.clone(), timeout)).await?;
    let stop = |force| StopOptions {
        timeout: Duration::from_secs(stop_timeout),
        force,
    };
    let (rec, code) = match end {
        AttachEnd::Detached => {
            eprintln!("\r\nferry: detached; {name} keeps running (`ferry vm console {name}`, `ferry vm stop {name}`)");
            (control::status(&name)?, ExitCode::SUCCESS)
        }
        AttachEnd::Seen => {
            eprintln!(
                "\nferry: saw {:?} {:.2} s after start; stopping {name}",
                until.unwrap_or_default(),
                began.elapsed().as_secs_f64()
            );
            (control::stop(&name, stop(false)).await?, ExitCode::SUCCESS)
        }
        AttachEnd::TimedOut => {
            let rec = control::stop(&name, stop(true)).await?;
            eprintln!("\nferry: timed out; {name} stopped");
            if until.is_some() {
                print_record(&rec, json)?;
                bail!(
                    "{:?} did not appear within {} s",
                    until.unwrap_or_default(),
                    timeout.unwrap_or(0)
                );
            }
            (rec, ExitCode::SUCCESS)
        }
        AttachEnd::Closed => {
            let rec = control::wait_for(&name, "exit", Duration::from_secs(10), VmState::is_final)
                .await?;
            let code = if rec.state == VmState::Stopped {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
            (rec, code)
        }
    };
    print_record(&rec, json)?;
    Ok(code)
}
