//! `ferry host lun ...`: a shared LUN as this host sees it — identity,
//! capacity, persistent reservations — and single reservation commands,
//! the way `sg_persist` works on a local disk.

use anyhow::Context;
use clap::Subcommand;
use ferry_iscsi::inspect::{LunSession, LunUrl, PrAction, PrType};
use std::process::ExitCode;

/// LUN verbs.
#[derive(Subcommand)]
pub enum LunCmd {
    /// Log in to a LUN and show its identity (VPD 0x83 designators, which
    /// must be the same from every host), capacity and reservations.
    Show {
        /// iscsi://HOST[:PORT]/TARGET-IQN/LUN
        url: String,
        /// This host's initiator name [default: iqn.2026-01.dev.ferry:<hostname>].
        #[arg(long)]
        initiator: Option<String>,
    },
    /// Run one PERSISTENT RESERVE OUT: register, register-ignore, reserve,
    /// release, clear, preempt, preempt-abort. A reservation conflict is
    /// reported (exit status 2), never retried.
    Pr {
        /// iscsi://HOST[:PORT]/TARGET-IQN/LUN
        url: String,
        /// register, register-ignore, reserve, release, clear, preempt, preempt-abort
        action: PrAction,
        /// This host's registered key (hex with 0x, or decimal).
        #[arg(long, default_value = "0", value_parser = parse_key)]
        key: u64,
        /// The service action key: the new key to register, or the key to preempt.
        #[arg(long, default_value = "0", value_parser = parse_key)]
        sa_key: u64,
        /// write-exclusive, exclusive-access, write-exclusive-registrants,
        /// exclusive-access-registrants.
        #[arg(long, default_value = "write-exclusive")]
        r#type: PrType,
        /// This host's initiator name [default: iqn.2026-01.dev.ferry:<hostname>].
        #[arg(long)]
        initiator: Option<String>,
    },
}

fn parse_key(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a key (decimal, or hex with 0x)"))
}

/// This host's default initiator name.
pub fn default_initiator() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_default();
    format!(
        "iqn.2026-01.dev.ferry:{}",
        if host.is_empty() { "host" } else { &host }
    )
}

fn open(url: &str, initiator: Option<String>) -> anyhow::Result<(LunUrl, LunSession)> {
    let url: LunUrl = url.parse()?;
    let initiator = initiator.unwrap_or_else(default_initiator);
    let s = LunSession::open(&url, &initiator).with_context(|| format!("{url} as {initiator}"))?;
    Ok((url, s))
}

/// Runs a LUN verb.
pub fn run(cmd: LunCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        LunCmd::Show { url, initiator } => {
            let (url, mut s) = open(&url, initiator)?;
            let info = s.identify().with_context(|| url.to_string())?;
            let pr = s.pr_status().with_context(|| url.to_string())?;
            s.close();
            if json {
                let reservation = pr.reservation.map(
                    |(key, kind)| serde_json::json!({"key": format!("{key:#x}"), "type": kind}),
                );
                let keys: Vec<String> = pr.keys.iter().map(|k| format!("{k:#x}")).collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "url": url.to_string(), "lun": info,
                        "reservations": {"generation": pr.generation, "keys": keys, "reservation": reservation},
                    })
                );
            } else {
                println!("lun          {url}");
                println!("device       {} {}", info.vendor, info.product);
                println!("identity     {}", info.device_id.join(" "));
                println!(
                    "capacity     {} bytes ({} MiB, {}-byte blocks)",
                    info.size_bytes,
                    info.size_bytes >> 20,
                    info.block_size
                );
                let keys: Vec<String> = pr.keys.iter().map(|k| format!("{k:#x}")).collect();
                println!(
                    "registered   {}",
                    if keys.is_empty() {
                        "none".into()
                    } else {
                        keys.join(" ")
                    }
                );
                match pr.reservation {
                    Some((key, kind)) => println!("reservation  type {kind} held by key {key:#x}"),
                    None => println!("reservation  none"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LunCmd::Pr {
            url,
            action,
            key,
            sa_key,
            r#type,
            initiator,
        } => {
            let (url, mut s) = open(&url, initiator)?;
            let result = s.pr_out(action, key, sa_key, r#type);
            s.close();
            match result {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e @ ferry_iscsi::inspect::InspectError::Conflict { .. }) => {
                    eprintln!("ferry: {url}: {e}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e).with_context(|| url.to_string()),
            }
        }
    }
}
