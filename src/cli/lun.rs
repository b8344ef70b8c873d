//! `ferry host lun ...`: a shared LUN as this host sees it — identity,
//! capacity, persistent reservations — and single reservation commands,
//! the way `sg_persist` works on a local disk. Built on Ferry's initiator
//! (one short session per command, with a fixed ISID so that a host's
//! registration made by one command is its own in the next).

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use ferry_block::iscsi::IscsiSecrets;
use ferry_iscsi::initiator::{IscsiError, Lun, ReservationType, SessionConfig};
use ferry_spec::IscsiUrl;
use std::process::ExitCode;
use std::time::Duration;

/// The ISID of these one-shot sessions ("FRY" and 1).
const TOOL_ISID: [u8; 6] = [0x80, b'F', b'R', b'Y', 0, 1];

/// LUN verbs.
#[derive(Subcommand)]
pub enum LunCmd {
    /// Log in to a LUN and show its identity (the VPD 0x83 designator, which
    /// must be the same from every host), capacity and reservations.
    Show {
        /// iscsi://HOST[:PORT]/TARGET-IQN/LUN
        url: String,
        /// This host's initiator name [default: the secrets file's
        /// initiator_name, else iqn.2026-01.dev.ferry:<hostname>].
        #[arg(long)]
        initiator: Option<String>,
        /// CHAP credentials, as for a VM disk on a LUN [default:
        /// /etc/ferry/iscsi-secrets.toml if it exists].
        #[arg(long)]
        secrets: Option<std::path::PathBuf>,
    },
    /// Run one PERSISTENT RESERVE OUT. A reservation conflict is reported
    /// (exit status 2), never retried.
    Pr {
        /// iscsi://HOST[:PORT]/TARGET-IQN/LUN
        url: String,
        /// What to do.
        action: PrAction,
        /// This host's registered key (hex with 0x, or decimal).
        #[arg(long, default_value = "0", value_parser = parse_key)]
        key: u64,
        /// The service action key: the new key to register, or the key to preempt.
        #[arg(long, default_value = "0", value_parser = parse_key)]
        sa_key: u64,
        /// The reservation type.
        #[arg(long, value_enum, default_value_t = PrType::WriteExclusive)]
        r#type: PrType,
        /// This host's initiator name [default: the secrets file's
        /// initiator_name, else iqn.2026-01.dev.ferry:<hostname>].
        #[arg(long)]
        initiator: Option<String>,
        /// CHAP credentials, as for a VM disk on a LUN [default:
        /// /etc/ferry/iscsi-secrets.toml if it exists].
        #[arg(long)]
        secrets: Option<std::path::PathBuf>,
    },
}

/// A PERSISTENT RESERVE OUT service action.
#[derive(Clone, Copy, ValueEnum)]
pub enum PrAction {
    /// Register --sa-key (replacing --key, which must match).
    Register,
    /// Register --sa-key whatever is registered now.
    RegisterIgnore,
    /// Reserve with --key.
    Reserve,
    /// Release the reservation held with --key.
    Release,
    /// Remove every registration and the reservation.
    Clear,
    /// Remove --sa-key's registrations and take over its reservation.
    Preempt,
    /// Preempt, and abort the preempted initiators' tasks.
    PreemptAbort,
}

/// A persistent reservation type.
#[derive(Clone, Copy, ValueEnum)]
pub enum PrType {
    /// Only the holder writes; everyone reads.
    WriteExclusive,
    /// Only the holder reads and writes.
    ExclusiveAccess,
    /// Every registrant writes.
    WriteExclusiveRegistrants,
    /// Every registrant reads and writes.
    ExclusiveAccessRegistrants,
}

impl From<PrType> for ReservationType {
    fn from(t: PrType) -> Self {
        match t {
            PrType::WriteExclusive => ReservationType::WriteExclusive,
            PrType::ExclusiveAccess => ReservationType::ExclusiveAccess,
            PrType::WriteExclusiveRegistrants => ReservationType::WriteExclusiveRegistrantsOnly,
            PrType::ExclusiveAccessRegistrants => ReservationType::ExclusiveAccessRegistrantsOnly,
        }
    }
}

fn parse_key(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a key (decimal, or hex with 0x)"))
}

fn open(
    url: &str,
    initiator: Option<String>,
    secrets: Option<&std::path::Path>,
) -> anyhow::Result<(IscsiUrl, Lun)> {
    let url = IscsiUrl::parse(url).map_err(anyhow::Error::msg)?;
    // The same secrets file, and the same default, as a VM disk on a LUN.
    let s = IscsiSecrets::load(secrets)?;
    let login = s.login_config(&url, initiator, TOOL_ISID, Duration::from_secs(10));
    let initiator = login.initiator.clone();
    let mut cfg = SessionConfig::new(login);
    cfg.io_timeout = Duration::from_secs(10);
    let lun = Lun::open(cfg, url.lun).with_context(|| format!("LUN {} as {initiator}", url.lun))?;
    Ok((url, lun))
}

fn url_text(u: &IscsiUrl) -> String {
    format!("iscsi://{}/{}/{}", u.portal(), u.target, u.lun)
}

/// Vendor and product from the standard INQUIRY data.
fn vendor_product(lun: &Lun) -> (String, String) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    match lun.exec(ferry_iscsi::initiator::cdb::inquiry(None, 96), &[], 96) {
        Ok(r) if r.data.len() >= 32 => (text(&r.data[8..16]), text(&r.data[16..32])),
        _ => (String::new(), String::new()),
    }
}

/// Runs a LUN verb.
pub fn run(cmd: LunCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        LunCmd::Show {
            url,
            initiator,
            secrets,
        } => {
            let (url, lun) = open(&url, initiator, secrets.as_deref())?;
            let (vendor, product) = vendor_product(&lun);
            let (generation, keys) = lun.pr_read_keys()?;
            let reservation = lun.pr_read_reservation()?;
            let keys: Vec<String> = keys.iter().map(|k| format!("{k:#x}")).collect();
            if json {
                let reservation = reservation.map(
                    |r| serde_json::json!({"key": format!("{:#x}", r.key), "type": r.kind as u8}),
                );
                println!(
                    "{}",
                    serde_json::json!({
                        "url": url_text(&url),
                        "lun": {"vendor": vendor, "product": product, "device_id": [lun.device_id()],
                                "size_bytes": lun.size(), "block_size": lun.block_size()},
                        "reservations": {"generation": generation, "keys": keys, "reservation": reservation},
                    })
                );
            } else {
                println!("lun          {}", url_text(&url));
                println!("device       {vendor} {product}");
                println!("identity     {}", lun.device_id());
                println!(
                    "capacity     {} bytes ({} MiB, {}-byte blocks)",
                    lun.size(),
                    lun.size() >> 20,
                    lun.block_size()
                );
                println!(
                    "registered   {}",
                    if keys.is_empty() {
                        "none".into()
                    } else {
                        keys.join(" ")
                    }
                );
                match reservation {
                    Some(r) => println!("reservation  {:?} held by key {:#x}", r.kind, r.key),
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
            secrets,
        } => {
            let (url, lun) = open(&url, initiator, secrets.as_deref())?;
            let kind = ReservationType::from(r#type);
            let result = match action {
                PrAction::Register => lun.pr_register(key, sa_key),
                PrAction::RegisterIgnore => lun.pr_register_and_ignore(sa_key),
                PrAction::Reserve => lun.pr_reserve(key, kind),
                PrAction::Release => lun.pr_release(key, kind),
                PrAction::Clear => lun.pr_clear(key),
                PrAction::Preempt => lun.pr_preempt(key, sa_key, kind),
                PrAction::PreemptAbort => lun.pr_preempt_and_abort(key, sa_key, kind),
            };
            match result {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e @ IscsiError::ReservationConflict { .. }) => {
                    eprintln!("ferry: {}: {e}", url_text(&url));
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e).with_context(|| url_text(&url)),
            }
        }
    }
}
