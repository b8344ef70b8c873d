//! Command-line interface: parsing (clap) apart from the code that acts.

mod guest;

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
}

/// Runs the CLI and turns errors into a one-line message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Guest(cmd) => guest::run(cmd, cli.json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
