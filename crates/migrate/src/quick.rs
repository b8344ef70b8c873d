//! Quick migration: pause, save the state to a file both hosts see, restore
//! it on the destination, resume there.
//!
//! QEMU's `mapped-ram` file format writes each RAM page at a fixed offset,
//! so save and restore run at disk speed and the file is only as large as
//! the guest's memory. The source is paused, not stopped, until the
//! destination runs: any failure resumes the VM where it was.

use crate::destination::Qmp;
use crate::live::{
    qmp_err, switch_over, wait_not_active, CancelSignals, MigrateError, MigrationReport, Policy,
    Progress, QuickTimes, CANCEL_WAIT,
};
use ferry_qemu::QmpClient;
use ferry_vm::RunDir;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The source's side of a quick migration, in progress reports.
const SAVE: &str = "save";

/// Parallel channels for saving and restoring.
const QUICK_CHANNELS: u8 = 4;

/// Waits until the save (or restore) on `q` completes; a cancel stops it
/// there.
async fn wait_completed(
    q: &impl Qmp,
    side: &str,
    started: Instant,
    cancel: &mut CancelSignals,
    on_progress: &mut impl FnMut(&Progress),
) -> Result<serde_json::Value, MigrateError> {
    loop {
        let v = q
            .execute("query-migrate", None)
            .await
            .map_err(qmp_err("watching the state transfer"))?;
        let status = v["status"].as_str().unwrap_or("").to_string();
        on_progress(&Progress {
            status: format!("{side} {status}"),
            elapsed_ms: started.elapsed().as_millis() as u64,
            transferred_mib: v["ram"]["transferred"].as_u64().unwrap_or(0) as f64 / 1048576.0,
            remaining_mib: v["ram"]["remaining"].as_u64().unwrap_or(0) as f64 / 1048576.0,
            ..Progress::default()
        });
        match status.as_str() {
            "completed" => return Ok(v),
            "failed" | "cancelled" => {
                let why = v["error-desc"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string();
                return Err(MigrateError::Failed(format!("{side}: {why}")));
            }
            _ => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    () = cancel.recv() => {
                        tracing::info!("cancel requested during the {side}");
                        if let Err(e) = q.execute("migrate_cancel", None).await {
                            tracing::warn!("cancelling the {side}: {e}");
                        }
                        // The source resumes the VM only once its QEMU has let
                        // go of it; a destination's half is discarded anyway.
                        if side == SAVE {
                            if let Some(status) = wait_not_active(q, CANCEL_WAIT).await {
                                tracing::warn!("the save still reports '{status}' after the cancel");
                            }
                        }
                        return Err(MigrateError::Cancelled);
                    }
                }
            }
        }
    }
}

/// How to save and restore.
pub(crate) struct Plan<'a> {
    /// The file both hosts see.
    pub state_file: &'a Path,
    /// Whose settings.
    pub policy: Policy,
    /// The save's bandwidth cap in MiB/s; `None` for unlimited.
    pub bandwidth_mibps: Option<u64>,
}

/// Saves VM `name` (runtime directory `src_dir`) to the plan's state file, restores it on the
/// destination whose QEMU `d` reaches. A cancel (as for a live migration)
/// stops the save or the restore; the VM resumes on the source.
pub(crate) async fn drive(
    name: &str,
    src_dir: &RunDir,
    d: &impl Qmp,
    plan: &Plan<'_>,
    cancel: &mut CancelSignals,
    on_progress: &mut impl FnMut(&Progress),
) -> Result<MigrationReport, MigrateError> {
    let (state_file, policy) = (plan.state_file, plan.policy);
    let (s, _) = QmpClient::connect(&src_dir.qmp_control())
        .await
        .map_err(qmp_err("connecting to the source QEMU"))?;
    // A VM that arrived by live migration still carries that migration's
    // settings: TLS (which file migration refuses) and multifd.
    crate::tls::configure(None, &s, d).await?;
    // Ferry's: mapped-ram (each page at a fixed offset, the file no larger
    // than RAM) written and read by parallel multifd channels. The
    // reference, as a plain `virsh save` leaves QEMU: one sequential stream.
    let ferry = policy == Policy::Ferry;
    let caps = json!({"capabilities": [
        {"capability": "mapped-ram", "state": ferry},
        {"capability": "multifd", "state": ferry},
    ]});
    if ferry {
        let params = json!({"multifd-channels": QUICK_CHANNELS});
        s.execute("migrate-set-parameters", Some(params.clone()))
            .await
            .map_err(qmp_err("setting the source's save channels"))?;
        d.execute("migrate-set-parameters", Some(params))
            .await
            .map_err(qmp_err("setting the destination's restore channels"))?;
    }
    // QEMU's default cap (128 MiB/s) is meant for a network link; a save
    // to storage runs unlimited unless the user caps it, as libvirt's
    // `virsh save` does too (an idle 1 GiB guest: ~0.17 s instead of ~1.2 s).
    let bandwidth = plan.bandwidth_mibps.map_or(100u64 << 30, |m| m << 20);
    s.execute(
        "migrate-set-parameters",
        Some(json!({"max-bandwidth": bandwidth})),
    )
    .await
    .map_err(qmp_err("setting the save's bandwidth"))?;
    s.execute("migrate-set-capabilities", Some(caps.clone()))
        .await
        .map_err(qmp_err("enabling mapped-ram on the source"))?;
    d.execute("migrate-set-capabilities", Some(caps))
        .await
        .map_err(qmp_err("enabling mapped-ram on the destination"))?;
    let _ = std::fs::remove_file(state_file);
    let uri = format!("file:{}", state_file.display());

    let started = Instant::now();
    s.execute("stop", None)
        .await
        .map_err(qmp_err("pausing the VM"))?;
    let result = async {
        s.execute("migrate", Some(json!({"uri": uri})))
            .await
            .map_err(qmp_err("saving the state"))?;
        let saved = wait_completed(&s, SAVE, started, cancel, on_progress).await?;
        let saved_at = Instant::now();
        d.execute("migrate-incoming", Some(json!({"uri": uri})))
            .await
            .map_err(qmp_err("restoring the state"))?;
        wait_completed(d, "restore", started, cancel, on_progress).await?;
        Ok::<_, MigrateError>((saved, saved_at))
    }
    .await;
    let (saved, saved_at) = match result {
        Ok(v) => v,
        Err(e) => {
            // Not switched over: the VM resumes where it was.
            if let Err(re) = s.execute("cont", None).await {
                tracing::error!("could not resume the VM on the source: {re}");
            }
            let _ = std::fs::remove_file(state_file);
            return Err(e);
        }
    };
    let completed_at = Instant::now();
    let running_at = switch_over(name, src_dir, &s, d).await?;
    let _ = std::fs::remove_file(state_file);
    let total_ms = running_at.duration_since(started).as_millis() as u64;
    Ok(MigrationReport {
        name: name.to_string(),
        total_ms,
        // The guest is paused from the first step to the last.
        downtime_ms: total_ms,
        resume_ms: running_at.duration_since(completed_at).as_millis() as u64,
        transferred_mib: saved["ram"]["transferred"].as_u64().unwrap_or(0) as f64 / 1048576.0,
        rounds: 1,
        final_downtime_limit_ms: 0,
        quick: Some(QuickTimes {
            save_ms: saved_at.duration_since(started).as_millis() as u64,
            restore_ms: completed_at.duration_since(saved_at).as_millis() as u64,
        }),
    })
}
