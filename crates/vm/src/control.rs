//! Lifecycle commands: start, stop, pause, resume, status, list.
//!
//! These run in the CLI process. `start` launches a detached supervisor and
//! waits until it records the VM running; the other verbs speak QMP to QEMU's
//! control socket and wait until the supervisor records the resulting state,
//! so what they report is what QEMU said, not what was hoped for.

use crate::state::pid_alive;
use crate::{preflight, RunDir, StateRecord, VmError, VmState};
use ferry_qemu::{accel, Accel, AccelChoice, QemuBinary, QmpClient};
use ferry_spec::VmSpec;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How often recorded state is polled while waiting.
const POLL: Duration = Duration::from_millis(5);

/// Options of [`start`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Accelerator forced by the user; `None` probes.
    pub accel: Option<Accel>,
    /// Leave the vCPUs stopped until `cont` (used to attach a console first).
    pub hold: bool,
    /// Wait for an incoming migration instead of booting.
    pub incoming: bool,
    /// The `ferry` binary, run as `ferry vm supervise ...`.
    pub supervisor_exe: PathBuf,
    /// How long to wait for the VM to be running.
    pub timeout: Duration,
}

/// Everything that decides how a VM starts here, found before anything starts.
pub struct Prepared {
    /// The QEMU to run.
    pub qemu: QemuBinary,
    /// The accelerator and why.
    pub accel: AccelChoice,
}

/// Finds QEMU, picks the accelerator, computes the VM's CPU if it has none
/// yet (`resolve_cpu`; an incoming VM brings the one its source computed)
/// and runs the pre-flight checks.
pub fn prepare(
    spec: &mut VmSpec,
    forced: Option<Accel>,
    resolve_cpu: bool,
) -> Result<Prepared, VmError> {
    let qemu = QemuBinary::find()?;
    let accel = accel::choose(&qemu, forced);
    if resolve_cpu {
        crate::cpu::resolve(spec, &qemu, accel.accel)?;
    }
    preflight::check(spec, &qemu, accel.accel)?;
    Ok(Prepared { qemu, accel })
}

/// Starts a VM under a new supervisor; returns once it runs (or is held).
pub fn start(spec: &VmSpec, opts: &StartOptions) -> Result<StateRecord, VmError> {
    let mut spec = spec.clone();
    let prepared = prepare(&mut spec, opts.accel, !opts.incoming)?;
    let spec = &spec;
    let dir = RunDir::for_vm(&spec.name);
    if let Some(rec) = StateRecord::load(&dir)? {
        if let Some(pid) = live_qemu(&rec) {
            return Err(VmError::AlreadyRunning {
                name: spec.name.clone(),
                pid,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&dir.dir);
    dir.create()?;
    let spec_json = serde_json::to_vec_pretty(spec)
        .map_err(|e| VmError::io(dir.spec(), std::io::Error::other(e)))?;
    std::fs::write(dir.spec(), spec_json).map_err(|e| VmError::io(dir.spec(), e))?;

    let log_path = dir.supervisor_log();
    let log = std::fs::File::create(&log_path).map_err(|e| VmError::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| VmError::io(&log_path, e))?;
    let mut cmd = std::process::Command::new(&opts.supervisor_exe);
    cmd.args(["vm", "supervise", "--dir"])
        .arg(&dir.dir)
        .args([
            "--accel",
            &prepared.accel.accel.to_string(),
            "--accel-reason",
            &prepared.accel.reason,
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    if opts.hold {
        cmd.arg("--hold");
    }
    if opts.incoming {
        cmd.arg("--incoming");
    }
    // SAFETY: setsid() is async-signal-safe and touches no memory of ours; it
    // detaches the supervisor from our terminal so Ctrl-C here cannot kill the VM.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| VmError::io(&opts.supervisor_exe, e))?;

    let want = if opts.hold || opts.incoming {
        VmState::Paused
    } else {
        VmState::Running
    };
    let deadline = Instant::now() + opts.timeout;
    let ours = child.id() as i32;
    loop {
        // Only our supervisor's records count: a previous run's supervisor may
        // still be finishing and write its last record into this directory.
        if let Some(rec) = StateRecord::load(&dir)?.filter(|r| r.supervisor_pid == ours) {
            if rec.state == want {
                // A long-lived starter (the node agent) reaps the supervisor
                // when it ends, instead of keeping a zombie; a CLI that exits
                // first simply leaves it to init.
                std::thread::spawn(move || child.wait());
                return Ok(rec);
            }
            if rec.state.is_final() {
                return Err(VmError::QemuDiedAtStart {
                    name: spec.name.clone(),
                    detail: rec.detail,
                });
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            if !matches!(StateRecord::load(&dir)?, Some(r) if r.state == want && r.supervisor_pid == ours)
            {
                return Err(VmError::QemuDiedAtStart {
                    name: spec.name.clone(),
                    detail: format!(
                        "the supervisor exited ({status}): {}",
                        crate::rundir::log_tail(&log_path, 1)
                            .pop()
                            .unwrap_or_else(|| "no output".into())
                    ),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(VmError::Timeout {
                name: spec.name.clone(),
                what: "start".into(),
                secs: opts.timeout.as_secs(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// QEMU's pid if the record says it runs and it really does.
fn live_qemu(rec: &StateRecord) -> Option<i32> {
    rec.qemu_pid
        .filter(|&p| !rec.state.is_final() && pid_alive(p))
}

/// The VM's state, checked against the processes that should exist.
pub fn status(name: &str) -> Result<StateRecord, VmError> {
    let dir = RunDir::for_vm(name);
    let mut rec =
        StateRecord::load(&dir)?.ok_or_else(|| VmError::NotFound { name: name.into() })?;
    if !rec.state.is_final() && !pid_alive(rec.supervisor_pid) {
        if let Some(pid) = live_qemu(&rec) {
            rec.detail = format!(
                "{} (supervisor gone; QEMU pid {pid} still runs)",
                rec.detail
            );
        } else {
            rec.state = VmState::Crashed;
            rec.detail = "QEMU and its supervisor are gone without recording an exit".into();
        }
    }
    Ok(rec)
}

/// Every VM with a runtime directory on this host.
pub fn list() -> Result<Vec<StateRecord>, VmError> {
    let root = crate::rundir::root();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(VmError::io(&root, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        if let Some(name) = entry.file_name().to_str() {
            if let Ok(rec) = status(name) {
                out.push(rec);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn running_record(name: &str) -> Result<(RunDir, StateRecord), VmError> {
    let rec = status(name)?;
    if rec.state.is_final() {
        return Err(VmError::NotRunning {
            name: name.into(),
            state: rec.state.to_string(),
        });
    }
    Ok((RunDir::for_vm(name), rec))
}

/// Connects to the VM's control QMP socket.
pub async fn control_qmp(name: &str) -> Result<QmpClient, VmError> {
    let (dir, _) = running_record(name)?;
    let (client, _events) = QmpClient::connect(&dir.qmp_control())
        .await
        .map_err(|source| VmError::Qmp {
            name: name.into(),
            source,
        })?;
    Ok(client)
}

/// Waits until the recorded state satisfies `done`.
pub async fn wait_for(
    name: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(VmState) -> bool,
) -> Result<StateRecord, VmError> {
    let deadline = Instant::now() + timeout;
    loop {
        let rec = status(name)?;
        if done(rec.state) {
            return Ok(rec);
        }
        if Instant::now() > deadline {
            return Err(VmError::Timeout {
                name: name.into(),
                what: what.into(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn qmp_then_wait(
    name: &str,
    command: &str,
    what: &str,
    want: VmState,
) -> Result<StateRecord, VmError> {
    let qmp = control_qmp(name).await?;
    qmp.execute(command, None)
        .await
        .map_err(|source| VmError::Qmp {
            name: name.into(),
            source,
        })?;
    wait_for(name, what, Duration::from_secs(10), |s| {
        s == want || s.is_final()
    })
    .await
}

/// Stops the vCPUs.
pub async fn pause(name: &str) -> Result<StateRecord, VmError> {
    qmp_then_wait(name, "stop", "pause", VmState::Paused).await
}

/// Restarts the vCPUs.
pub async fn resume(name: &str) -> Result<StateRecord, VmError> {
    qmp_then_wait(name, "cont", "resume", VmState::Running).await
}

/// Options of [`stop`].
#[derive(Debug, Clone, Copy)]
pub struct StopOptions {
    /// How long the guest may take to power off after the ACPI request.
    pub timeout: Duration,
    /// Skip the graceful request and end QEMU at once.
    pub force: bool,
}

/// Stops a VM: ACPI power-off, then after `timeout` a forced quit; if QEMU
/// does not answer QMP, SIGKILL. Returns the final recorded state.
pub async fn stop(name: &str, opts: StopOptions) -> Result<StateRecord, VmError> {
    let rec = status(name)?;
    if rec.state.is_final() {
        return Ok(rec);
    }
    let dir = RunDir::for_vm(name);
    let qmp = QmpClient::connect(&dir.qmp_control())
        .await
        .ok()
        .map(|(c, _)| c);
    let Some(qmp) = qmp else {
        if let Some(pid) = live_qemu(&rec) {
            tracing::warn!("QEMU of {name} does not answer QMP; sending SIGKILL to pid {pid}");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        return wait_for(name, "stop", Duration::from_secs(10), VmState::is_final).await;
    };
    if !opts.force {
        let graceful = async {
            qmp.execute("system_powerdown", None).await.ok()?;
            wait_for(name, "power off", opts.timeout, VmState::is_final)
                .await
                .ok()
        };
        if let Some(rec) = graceful.await {
            wait_supervisor_gone(&rec).await;
            return Ok(rec);
        }
        tracing::warn!(
            "{name} did not power off within {} s; forcing",
            opts.timeout.as_secs()
        );
    }
    // `quit` makes QEMU emit SHUTDOWN (host-qmp-quit) and exit: a clean stop.
    let _ = qmp.execute("quit", None).await;
    let rec = wait_for(name, "stop", Duration::from_secs(10), VmState::is_final).await?;
    wait_supervisor_gone(&rec).await;
    Ok(rec)
}

/// Waits (briefly) until a finished VM's supervisor has exited, so a new start
/// of the same VM never overlaps with the old supervisor's last writes.
async fn wait_supervisor_gone(rec: &StateRecord) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(rec.supervisor_pid) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}
