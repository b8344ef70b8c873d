//! Command-line interface: parsing (clap) apart from the code that acts.

mod block;
mod cluster;
mod console;
mod daemon;
mod guest;
mod host;
mod lab;
mod lun;
mod migrate;
mod node;
mod probe;
mod roles;
mod san;
mod vm;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Ferry: a virtualization cluster for Linux that drives QEMU.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    /// Print results as JSON, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build and inspect the test guest (kernel + initramfs with workloads).
    #[command(subcommand)]
    Guest(guest::GuestCmd),
    /// Run VMs on this host: run, start, stop, pause, resume, status, console.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Facts about this host (accelerator).
    #[command(subcommand)]
    Host(host::HostCmd),
    /// The block service that serves VM disks to QEMU over NBD.
    #[command(subcommand)]
    Block(block::BlockCmd),
    /// Probe a guest's UDP echo responder and report lost replies and gaps.
    Probe(probe::ProbeArgs),
    /// The seed's lab on this machine (dc, server001, server002, client) and
    /// the demo that walks through it.
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// The cluster: create, join, status, and its VMs (`ferry cluster vm`).
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// The cluster's hosts: drain (move every VM away, pause), resume.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Run this host's node agent (the cluster member) in the foreground.
    Daemon(daemon::DaemonArgs),
    /// The iSCSI target (SAN) serving LUNs from image files.
    #[command(subcommand)]
    San(san::SanCmd),
}

/// Runs the CLI and turns errors into a one-line message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Guest(cmd) => guest::run(cmd, cli.json),
        Command::Host(cmd) => host::run(cmd, cli.json),
        Command::Probe(args) => probe::run(args, cli.json),
        Command::Lab(cmd) => lab::run(cmd, cli.json),
        Command::Vm(cmd) => block_on(false, vm::run(cmd, cli.json)),
        Command::Block(cmd) => block::run(cmd),
        Command::Cluster(cmd) => block_on(false, cluster::run(cmd, cli.json)),
        Command::Node(cmd) => block_on(false, node::run(cmd, cli.json)),
        Command::Daemon(args) => block_on(true, daemon::run(args)),
        Command::San(cmd) => san::run(cmd, cli.json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an async command on a fresh runtime: single-threaded for control
/// verbs, multi-threaded for services that carry I/O.
fn block_on(
    multi_thread: bool,
    fut: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    let rt = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }?;
    rt.block_on(fut)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
}
