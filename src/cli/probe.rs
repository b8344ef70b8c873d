//! `ferry probe`: measure what a client of a VM feels (lost replies, gaps).

use clap::Args;
use ferry_workloads::probe::{self, ProbeConfig};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Probe a guest's UDP echo responder at a fixed interval.
#[derive(Args)]
pub struct ProbeArgs {
    /// Address of the guest's echo responder, e.g. 10.0.0.2:7777.
    target: SocketAddr,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 2.0)]
    interval_ms: f64,
    /// Seconds to probe for.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop early once this file exists (checked every 100 ms).
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
    /// With --json: include every reply as [sequence, ms since start] (the
    /// timeline for reports); the start is `started_unix_ms`.
    #[arg(long)]
    timeline: bool,
}

/// Runs the probe and prints the report.
pub fn run(args: ProbeArgs, json: bool) -> anyhow::Result<ExitCode> {
    if !(args.interval_ms > 0.0 && args.duration > 0.0 && args.duration < 86_400.0) {
        anyhow::bail!("--interval-ms and --duration must be positive (duration under a day)");
    }
    let cfg = ProbeConfig {
        target: args.target,
        interval: Duration::from_secs_f64(args.interval_ms / 1e3),
        duration: Duration::from_secs_f64(args.duration),
        linger: Duration::from_millis(500),
        stop_file: args.stop_file.clone(),
    };
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let r = probe::run(&cfg)?;
    if json {
        let mut v = serde_json::json!({
            "target": args.target.to_string(), "sent": r.sent, "received": r.received, "lost": r.lost,
            "duplicates": r.duplicates, "max_gap_ms": r.max_gap_ms, "rtt_avg_ms": r.rtt_avg_ms, "rtt_max_ms": r.rtt_max_ms,
            "interval_ms": args.interval_ms, "started_unix_ms": started_unix_ms,
        });
        if args.timeline {
            v["replies"] = serde_json::json!(r.replies);
        }
        println!("{v}");
    } else {
        println!(
            "{}: sent {} received {} lost {} duplicates {}; largest gap {:.1} ms; rtt avg {:.2} ms max {:.2} ms",
            args.target, r.sent, r.received, r.lost, r.duplicates, r.max_gap_ms, r.rtt_avg_ms, r.rtt_max_ms
        );
    }
    Ok(if r.received > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
