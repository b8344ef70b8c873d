//! Live migration: prepare, tune, drive, converge, switch over, clean up.
//!
//! ```text
//!  source host                                destination host
//!  ferry vm migrate ── ferry vm start --incoming (same spec.json) ──► QEMU -incoming defer
//!        │ QMP: capabilities, parameters, TLS credentials (both sides)
//!        │ QMP dst: migrate-incoming tcp:ADDR:PORT
//!        │ QMP src: migrate tcp:ADDR:PORT ═══ memory over TLS, internal network ══►
//!        │ poll query-migrate: progress, raise downtime budget if not converging
//!        │ completed ─► dst: cont, announce-self ─► src: quit
//!        └ failed/cancelled/timeout ─► src keeps running, dst: stop --force
//! ```

use crate::destination::{Destination, Qmp};
use ferry_qemu::{QmpClient, QmpError};
use ferry_vm::{RunDir, StateRecord, VmState};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Why a migration did not happen. In every case the VM still runs on the
/// source and nothing of it is left on the destination.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The VM is not running on the source.
    #[error("VM {name} is not running on the source ({state})")]
    NotRunning {
        /// The VM.
        name: String,
        /// What the source reports: the state and, if any, its detail.
        state: String,
    },
    /// The destination already runs a VM of that name.
    #[error("VM {name} already runs on the destination (QEMU pid {pid}); refusing to start a second copy")]
    AlreadyOnDestination {
        /// The VM.
        name: String,
        /// The other QEMU.
        pid: i32,
    },
    /// Another process is migrating this VM already.
    #[error("VM {name} is being migrated already (by process {pid}); cancel it with `ferry vm migrate {name} --cancel`")]
    Busy {
        /// The VM.
        name: String,
        /// The process migrating it.
        pid: i32,
    },
    /// The node agent migrates this VM: it is cancelled through the cluster.
    #[error("VM {name} is being migrated by the node agent; cancel it with `ferry cluster vm migrate {name} --cancel`")]
    ByAgent {
        /// The VM.
        name: String,
    },
    /// The destination could not be prepared.
    #[error("preparing the destination failed: {0}")]
    Prepare(String),
    /// QEMU refused or failed a step.
    #[error("{step}")]
    Qmp {
        /// What was being done.
        step: String,
        /// The error.
        #[source]
        source: QmpError,
    },
    /// QEMU reported the migration failed.
    #[error("QEMU reports the migration failed: {0}")]
    Failed(String),
    /// The migration was cancelled.
    #[error("migration cancelled")]
    Cancelled,
    /// No data moved for too long: the link is down or the destination hangs.
    #[error("the migration stream stalled: nothing moved for {secs} s (is the migration network down?); cancelled")]
    Stalled {
        /// How long nothing moved.
        secs: u64,
    },
    /// It did not converge in time.
    #[error("migration did not complete within {secs} s; cancelled (use --force-on-timeout to stop the guest and finish instead)")]
    Timeout {
        /// The limit.
        secs: u64,
    },
    /// TLS credentials could not be made.
    #[error("preparing TLS credentials for the migration stream")]
    Tls(#[from] ferry_pki::PkiError),
    /// Reading the source's records failed.
    #[error(transparent)]
    Vm(#[from] ferry_vm::VmError),
}

/// What to do when the timeout passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// Cancel: the VM keeps running on the source.
    #[default]
    Cancel,
    /// Stop the guest and copy the rest: it arrives, with a long pause.
    Force,
}

/// Whose migration settings to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Ferry's: multifd, the given downtime budget and bandwidth,
    /// auto-converge, and the budget raised step by step while the guest
    /// dirties memory faster than the link carries it.
    #[default]
    Ferry,
    /// QEMU's own defaults as a plain `virsh migrate --live` leaves them:
    /// 300 ms downtime, 128 MiB/s, one stream, no throttling, no budget
    /// changes; for a quick migration, as `virsh save` does: one stream,
    /// bandwidth unlimited. Only for comparison in benchmarks.
    QemuDefaults,
}

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Whose settings.
    pub policy: Policy,
    /// Downtime budget to start with, ms.
    pub downtime_ms: u64,
    /// Highest downtime budget the convergence policy may raise it to, ms.
    pub downtime_ceiling_ms: u64,
    /// Bandwidth cap in MiB/s; `None` for unlimited.
    pub bandwidth_mibps: Option<u64>,
    /// Give up after this long.
    pub timeout: Duration,
    /// What giving up means.
    pub on_timeout: OnTimeout,
    /// Cancel when no data has moved for this long.
    pub stall_timeout: Duration,
    /// Parallel migration streams.
    pub multifd_channels: u8,
    /// TCP port the destination listens on.
    pub port: u16,
    /// Encrypt and authenticate the stream with these hosts' certificates;
    /// `None` sends it in the clear (benchmarks only).
    pub tls: Option<crate::tls::TlsPlan>,
    /// Quick migration through this state file (on storage both hosts see)
    /// instead of a live one.
    pub quick: Option<PathBuf>,
    /// Cancels a live migration when notified, as SIGINT and SIGTERM do
    /// (for a long-lived process such as the node agent, which must not be
    /// signalled to cancel one migration).
    pub cancel: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            policy: Policy::Ferry,
            downtime_ms: 50,
            downtime_ceiling_ms: 1000,
            bandwidth_mibps: None,
            timeout: Duration::from_secs(120),
            on_timeout: OnTimeout::Cancel,
            stall_timeout: Duration::from_secs(10),
            multifd_channels: 2,
            port: 49152,
            tls: None,
            quick: None,
            cancel: None,
        }
    }
}

/// A progress sample, emitted about ten times a second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// QEMU's status: setup, active, device, completed, ...
    pub status: String,
    /// Milliseconds since the migration started.
    pub elapsed_ms: u64,
    /// Memory sent so far, MiB.
    pub transferred_mib: f64,
    /// Memory still to send, MiB.
    pub remaining_mib: f64,
    /// Link throughput QEMU measured, Mbit/s.
    pub mbps: f64,
    /// Pages the guest dirties per second.
    pub dirty_pages_rate: u64,
    /// Completed passes over memory.
    pub rounds: u64,
    /// QEMU's estimate of the downtime if it stopped now, ms.
    pub expected_downtime_ms: u64,
    /// The current downtime budget, ms.
    pub downtime_limit_ms: u64,
    /// How much auto-converge slows the guest's vCPUs, percent.
    pub throttle_pct: u64,
}

/// What a finished migration cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The VM.
    pub name: String,
    /// From start to the destination running, ms.
    pub total_ms: u64,
    /// Guest stopped time QEMU measured, ms.
    pub downtime_ms: u64,
    /// From QEMU's "completed" to the destination's vCPUs running, ms.
    pub resume_ms: u64,
    /// Memory sent, MiB.
    pub transferred_mib: f64,
    /// Passes over memory.
    pub rounds: u64,
    /// The downtime budget in force at the end, ms.
    pub final_downtime_limit_ms: u64,
    /// A quick migration's phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick: Option<QuickTimes>,
}

/// Where a quick migration's pause went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickTimes {
    /// From pausing the guest to its state saved, ms.
    pub save_ms: u64,
    /// From the state saved to it restored on the destination, ms.
    pub restore_ms: u64,
}

impl Progress {
    /// One line for a terminal: phase, amounts, rates, budget, throttle.
    pub fn line(&self, name: &str) -> String {
        format!(
            "migrating {name}: {:<9} {:>6.0} MiB sent, {:>6.0} MiB left, {:>6.0} Mbit/s, round {}, dirty {} pages/s, expected downtime {} ms (budget {} ms){}",
            self.status,
            self.transferred_mib,
            self.remaining_mib,
            self.mbps,
            self.rounds,
            self.dirty_pages_rate,
            self.expected_downtime_ms,
            self.downtime_limit_ms,
            if self.throttle_pct > 0 {
                format!(", throttled {}%", self.throttle_pct)
            } else {
                String::new()
            }
        )
    }
}

impl MigrationReport {
    /// One line for a terminal: how long, the downtime, how much.
    pub fn line(&self, to: &str) -> String {
        match self.quick {
            Some(q) => format!(
                "migrated {} to {to} in {} ms (quick): paused {} ms, saved {:.0} MiB in {} ms, restored in {} ms, destination running {} ms later",
                self.name, self.total_ms, self.downtime_ms, self.transferred_mib, q.save_ms, q.restore_ms, self.resume_ms
            ),
            None => format!(
                "migrated {} to {to} in {} ms: downtime {} ms, {:.0} MiB in {} rounds, destination running {} ms after completion",
                self.name, self.total_ms, self.downtime_ms, self.transferred_mib, self.rounds, self.resume_ms
            ),
        }
    }
}

pub(crate) fn qmp_err(step: &str) -> impl FnOnce(QmpError) -> MigrateError + '_ {
    move |source| MigrateError::Qmp {
        step: step.to_string(),
        source,
    }
}

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or(0)
}

fn progress_of(v: &Value, elapsed: Duration, limit: u64) -> Progress {
    let mib = |b: u64| b as f64 / 1048576.0;
    Progress {
        status: v["status"].as_str().unwrap_or("unknown").to_string(),
        elapsed_ms: elapsed.as_millis() as u64,
        transferred_mib: mib(num(v, &["ram", "transferred"])),
        remaining_mib: mib(num(v, &["ram", "remaining"])),
        mbps: v["ram"]["mbps"].as_f64().unwrap_or(0.0),
        dirty_pages_rate: num(v, &["ram", "dirty-pages-rate"]),
        rounds: num(v, &["ram", "dirty-sync-count"]),
        expected_downtime_ms: num(v, &["expected-downtime"]),
        downtime_limit_ms: limit,
        throttle_pct: num(v, &["cpu-throttle-percentage"]),
    }
}

/// Migrates VM `name`, whose runtime directory on this host is `src_dir`,
/// to `dst`, calling `on_progress` as it goes.
pub async fn migrate<D: Destination>(
    name: &str,
    src_dir: &RunDir,
    dst: &D,
    opts: &MigrateOptions,
    mut on_progress: impl FnMut(&Progress),
) -> Result<MigrationReport, MigrateError> {
    let rec = StateRecord::load(src_dir)?.ok_or_else(|| MigrateError::NotRunning {
        name: name.into(),
        state: "unknown here".into(),
    })?;
    if rec.state != VmState::Running {
        return Err(MigrateError::NotRunning {
            name: name.into(),
            state: format!("{}: {}", rec.state, rec.detail),
        });
    }
    let _inflight = crate::inflight::InFlight::begin(
        name,
        src_dir,
        dst.migration_address(),
        opts.cancel.is_some(),
    )?;
    // From here on, Ctrl-C or `--cancel` (SIGTERM) cancels cleanly instead of
    // killing this process with the destination half-built.
    let mut cancel = CancelSignals::new(opts.cancel.clone())?;

    // The destination runs exactly the spec the source runs.
    dst.prepare(name, &src_dir.spec()).await?;
    let result = async {
        let d = dst.connect(name).await?;
        match &opts.quick {
            Some(file) => {
                let plan = crate::quick::Plan {
                    state_file: file,
                    policy: opts.policy,
                    bandwidth_mibps: opts.bandwidth_mibps,
                };
                crate::quick::drive(name, src_dir, &d, &plan, &mut cancel, &mut on_progress).await
            }
            None => {
                drive(
                    name,
                    src_dir,
                    dst.migration_address(),
                    &d,
                    opts,
                    &mut cancel,
                    &mut on_progress,
                )
                .await
            }
        }
    }
    .await;
    match &result {
        Ok(_) => dst.recorded_running(name).await,
        Err(_) => {
            // Whatever happened, the destination's half goes away; the source runs on.
            if let Err(e) = dst.discard(name).await {
                tracing::warn!("could not remove the destination's QEMU: {e}");
            }
        }
    }
    result
}

async fn drive(
    name: &str,
    src_dir: &RunDir,
    dst_address: &str,
    d: &impl Qmp,
    opts: &MigrateOptions,
    cancel: &mut CancelSignals,
    on_progress: &mut impl FnMut(&Progress),
) -> Result<MigrationReport, MigrateError> {
    let (s, mut s_events) = QmpClient::connect(&src_dir.qmp_control())
        .await
        .map_err(qmp_err("connecting to the source QEMU"))?;

    let ferry = opts.policy == Policy::Ferry;
    let caps = |list: &[(&str, bool)]| json!({"capabilities": list.iter().map(|(c, on)| json!({"capability": c, "state": on})).collect::<Vec<_>>()});
    let multifd = ferry && opts.multifd_channels > 1;
    // Every capability either side may still carry from an earlier
    // migration is set explicitly (a VM that arrived by quick migration has
    // mapped-ram on, which a socket stream refuses).
    d.execute(
        "migrate-set-capabilities",
        Some(caps(&[("multifd", multifd), ("mapped-ram", false)])),
    )
    .await
    .map_err(qmp_err("setting destination capabilities"))?;
    s.execute(
        "migrate-set-capabilities",
        Some(caps(&[
            ("multifd", multifd),
            ("mapped-ram", false),
            ("auto-converge", ferry),
            ("events", true),
        ])),
    )
    .await
    .map_err(qmp_err("setting source capabilities"))?;
    if multifd {
        let p = json!({"multifd-channels": opts.multifd_channels});
        d.execute("migrate-set-parameters", Some(p.clone()))
            .await
            .map_err(qmp_err("setting destination parameters"))?;
        s.execute("migrate-set-parameters", Some(p))
            .await
            .map_err(qmp_err("setting source parameters"))?;
    }
    let (downtime, bandwidth) = if ferry {
        (
            opts.downtime_ms,
            opts.bandwidth_mibps.map_or(100u64 << 30, |m| m << 20),
        )
    } else {
        (300, 128 << 20)
    };
    s.execute(
        "migrate-set-parameters",
        Some(json!({"downtime-limit": downtime, "max-bandwidth": bandwidth})),
    )
    .await
    .map_err(qmp_err("setting the downtime budget and bandwidth"))?;

    crate::tls::configure(opts.tls.as_ref(), &s, d).await?;

    let uri = format!("tcp:{dst_address}:{}", opts.port);
    let peer = StreamPeer {
        address: dst_address.to_string(),
        port: opts.port,
    };
    d.execute("migrate-incoming", Some(json!({"uri": uri})))
        .await
        .map_err(qmp_err("starting the destination's listener"))?;
    let started = Instant::now();
    s.execute("migrate", Some(json!({"uri": uri})))
        .await
        .map_err(qmp_err("starting the migration"))?;

    let mut limit = downtime;
    let mut last_raise = Instant::now();
    let mut best_remaining = u64::MAX;
    let mut forced = false;
    let (mut last_moved, mut moved_at) = (0u64, Instant::now());
    let final_state = loop {
        // Sample progress every 100 ms, but wake at once when QEMU reports a
        // status change: the switchover must not wait for the next sample.
        let tick = tokio::time::sleep(Duration::from_millis(100));
        tokio::select! {
            () = tick => {}
            () = cancel.recv() => {
                tracing::info!("cancel requested");
                return Err(cancel_on(&s, &peer, MigrateError::Cancelled).await);
            }
            ev = s_events.recv() => {
                if ev.is_none() {
                    return Err(MigrateError::Failed("the source QEMU went away".into()));
                }
            }
        }
        let v = s
            .execute("query-migrate", None)
            .await
            .map_err(qmp_err("watching the migration"))?;
        let p = progress_of(&v, started.elapsed(), limit);
        on_progress(&p);
        match p.status.as_str() {
            "completed" => break v,
            "failed" => {
                let why = v["error-desc"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string();
                if opts.tls.is_some() && why.to_lowercase().contains("certificate") {
                    return Err(MigrateError::Failed(format!(
                        "TLS handshake refused: {why} (the destination is not a host Ferry's CA vouches for)"
                    )));
                }
                return Err(MigrateError::Failed(why));
            }
            "cancelled" | "cancelling" => return Err(MigrateError::Cancelled),
            _ => {}
        }
        let moved = num(&v, &["ram", "transferred"]);
        if moved != last_moved {
            (last_moved, moved_at) = (moved, Instant::now());
        } else if moved_at.elapsed() > opts.stall_timeout {
            let stalled = MigrateError::Stalled {
                secs: opts.stall_timeout.as_secs(),
            };
            return Err(cancel_on(&s, &peer, stalled).await);
        }
        // Convergence: once a few passes are done and the remainder stops
        // shrinking, raise the downtime budget step by step to the ceiling.
        let remaining = num(&v, &["ram", "remaining"]);
        if remaining < best_remaining {
            best_remaining = remaining;
        } else if ferry
            && p.rounds >= 3
            && limit < opts.downtime_ceiling_ms
            && last_raise.elapsed() > Duration::from_secs(1)
        {
            limit = (limit * 2).min(opts.downtime_ceiling_ms);
            last_raise = Instant::now();
            tracing::info!(
                "not converging ({} MiB left); downtime budget now {limit} ms",
                remaining >> 20
            );
            s.execute(
                "migrate-set-parameters",
                Some(json!({"downtime-limit": limit})),
            )
            .await
            .map_err(qmp_err("raising the downtime budget"))?;
        }
        if started.elapsed() > opts.timeout && !forced {
            match opts.on_timeout {
                OnTimeout::Cancel => {
                    let timeout = MigrateError::Timeout {
                        secs: opts.timeout.as_secs(),
                    };
                    return Err(cancel_on(&s, &peer, timeout).await);
                }
                OnTimeout::Force => {
                    // A budget larger than what is left stops the guest and finishes.
                    forced = true;
                    limit = 600_000;
                    s.execute(
                        "migrate-set-parameters",
                        Some(json!({"downtime-limit": limit})),
                    )
                    .await
                    .map_err(qmp_err("forcing the switchover"))?;
                }
            }
        }
    };

    let completed_at = Instant::now();
    let running_at = switch_over(name, src_dir, &s, d).await?;
    let resume_ms = running_at.duration_since(completed_at).as_millis() as u64;
    let report = MigrationReport {
        name: name.to_string(),
        total_ms: running_at.duration_since(started).as_millis() as u64,
        downtime_ms: num(&final_state, &["downtime"]),
        resume_ms,
        transferred_mib: num(&final_state, &["ram", "transferred"]) as f64 / 1048576.0,
        rounds: num(&final_state, &["ram", "dirty-sync-count"]),
        final_downtime_limit_ms: limit,
        quick: None,
    };
    Ok(report)
}

/// Switchover: the destination runs (QEMU resumed it by itself; only one
/// left paused gets `cont`) and announces the guest's MAC so the bridges learn
/// its new port; then the source's QEMU goes away for good. Returns once the
/// source is gone (never two running copies), with the moment the
/// destination was seen running.
pub(crate) async fn switch_over(
    name: &str,
    src_dir: &RunDir,
    s: &QmpClient,
    d: &impl Qmp,
) -> Result<Instant, MigrateError> {
    loop {
        let v = d
            .execute("query-status", None)
            .await
            .map_err(qmp_err("checking the destination"))?;
        match v.get("status").and_then(Value::as_str).unwrap_or("unknown") {
            "running" => break,
            "inmigrate" | "finish-migrate" => tokio::time::sleep(Duration::from_millis(2)).await,
            _ => {
                d.execute("cont", None)
                    .await
                    .map_err(qmp_err("starting the destination"))?;
                break;
            }
        }
    }
    let running_at = Instant::now();
    let announce = json!({"initial": 50, "max": 550, "rounds": 5, "step": 100});
    if let Err(e) = d.execute("announce-self", Some(announce)).await {
        tracing::warn!("announce-self failed: {e}");
    }
    let _ = s.execute("quit", None).await;
    let deadline = Instant::now() + SOURCE_QUIT;
    loop {
        match StateRecord::load(src_dir) {
            Ok(Some(r)) if r.state.is_final() => break,
            Ok(Some(r)) if Instant::now() >= deadline => {
                // Never two running copies: a source QEMU that ignores
                // `quit` is killed.
                tracing::warn!(
                    "the source QEMU of {name} has not quit {} s after the switchover; killing it",
                    SOURCE_QUIT.as_secs()
                );
                if let Some(pid) = r.qemu_pid.filter(|&p| ferry_vm::state::pid_alive(p)) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                break;
            }
            _ if Instant::now() >= deadline => break,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    Ok(running_at)
}

/// How long the source's QEMU may take to quit after the switchover (a
/// loaded host's QEMU tears down 1 GiB and more of guest memory).
const SOURCE_QUIT: Duration = Duration::from_secs(30);

/// SIGINT (Ctrl-C) and SIGTERM (`ferry vm migrate --cancel`), or the
/// caller's notification, any of which cancels the migration.
pub(crate) struct CancelSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    notify: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl CancelSignals {
    fn new(notify: Option<std::sync::Arc<tokio::sync::Notify>>) -> Result<Self, MigrateError> {
        use tokio::signal::unix::{signal, SignalKind};
        let err =
            |e: std::io::Error| MigrateError::Prepare(format!("cannot watch for signals: {e}"));
        Ok(CancelSignals {
            int: signal(SignalKind::interrupt()).map_err(err)?,
            term: signal(SignalKind::terminate()).map_err(err)?,
            notify,
        })
    }

    /// Waits for a cancel request.
    pub(crate) async fn recv(&mut self) {
        let notified = async {
            match &self.notify {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            () = notified => {}
        }
    }
}

/// Cancels the migration on the source and waits until it has really
/// stopped; returns `why`, the reason to report.
///
/// QEMU 10.0's cancel shuts down only the main channel: a multifd channel
/// blocked sending into a dead link keeps the migration "cancelling" until
/// TCP gives up, minutes later, and the stream's late errors have crashed
/// the source once the link came back. So when the cancel does not finish
/// promptly, Ferry aborts the stream's sockets itself (`ss -K`), which wakes
/// the blocked senders with an error and lets QEMU finish the cancel.
async fn cancel_on(s: &QmpClient, stream: &StreamPeer, why: MigrateError) -> MigrateError {
    let _ = s.execute("migrate_cancel", None).await;
    if let Some(status) = wait_not_active(s, CANCEL_GRACE).await {
        tracing::info!(
            "the source QEMU still reports '{status}' {} s after the cancel; aborting its migration sockets to {}:{}",
            CANCEL_GRACE.as_secs(),
            stream.address,
            stream.port
        );
        if let Err(e) = abort_sockets(stream).await {
            tracing::warn!("could not abort the migration sockets: {e}");
        }
        if let Some(status) = wait_not_active(s, CANCEL_WAIT).await {
            tracing::warn!(
                "the source QEMU still reports the migration as '{status}' after its sockets were aborted"
            );
        }
    }
    why
}

/// Where the migration stream goes: the destination's migration address and port.
struct StreamPeer {
    address: String,
    port: u16,
}

/// Aborts this host's TCP connections to the stream's peer (SOCK_DESTROY
/// through `ss -K`): blocked sends and receives on them fail at once.
async fn abort_sockets(stream: &StreamPeer) -> Result<(), String> {
    let port = stream.port.to_string();
    let out = tokio::process::Command::new("ss")
        .args(["-K", "-tn", "dst", &stream.address, "dport", "=", &port])
        .output()
        .await
        .map_err(|e| format!("cannot run ss: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// How long a cancel may take on its own before the stream's sockets are aborted.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// How long a cancelled migration may take to wind down once its sockets
/// are gone.
pub(crate) const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// Waits until a cancelled migration has really stopped; returns the status
/// QEMU still reports if it has not within `limit`.
pub(crate) async fn wait_not_active(s: &impl Qmp, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match s.execute("query-migrate", None).await {
            Ok(v) => {
                let status = v["status"].as_str().unwrap_or("none");
                if matches!(status, "cancelled" | "failed" | "completed" | "none") {
                    return None;
                }
                last = status.to_string();
            }
            Err(e) => return Some(format!("unknown: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(last)
}
