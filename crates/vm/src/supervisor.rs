//! The per-VM supervisor: owns the QEMU child and records its state.
//!
//! It runs as its own process (`ferry vm supervise`), detached from the
//! terminal that started the VM, so closing that terminal or killing the CLI
//! never touches the VM. The state it records comes from QMP events (`STOP`,
//! `RESUME`, `SHUTDOWN`) and from the child's exit status: a QEMU killed by a
//! signal without a `SHUTDOWN` first is recorded as crashed, with the signal.
//! It also starts the VM's block service before QEMU and restarts it if it
//! dies while QEMU runs.

use crate::state::now_unix;
use crate::{blockservice, net, RunDir, StateRecord, VmError, VmState};
use ferry_qemu::cmdline::Console;
use ferry_qemu::{AccelChoice, LaunchConfig, QemuBinary, QmpClient, QmpEvent};
use ferry_spec::{NicAttachment, VmSpec};
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long an exited QEMU's last QMP events may take to arrive.
const EXIT_EVENTS_GRACE: Duration = Duration::from_millis(500);
/// How long QEMU may take to open its QMP socket.
pub const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the supervisor needs to run one VM.
pub struct SuperviseOptions {
    /// The VM's runtime directory (holds `spec.json`).
    pub dir: RunDir,
    /// The QEMU to run.
    pub qemu: QemuBinary,
    /// The accelerator and why.
    pub accel: AccelChoice,
    /// Keep the vCPUs stopped after launch until someone sends `cont`.
    pub hold: bool,
    /// Start QEMU waiting for an incoming migration (`-incoming defer`).
    pub incoming: bool,
    /// The `ferry` binary, run as `ferry block serve` for Ferry-path disks.
    pub ferry_exe: PathBuf,
}

/// The VM's helper processes and devices, cleaned up whatever happens.
#[derive(Default)]
struct Owned {
    taps: Vec<String>,
    block: Option<tokio::process::Child>,
}

/// Records state changes to `state.json` and `events.jsonl`.
struct Recorder {
    dir: RunDir,
    rec: StateRecord,
    events: Option<File>,
}

impl Recorder {
    fn log(&mut self, value: serde_json::Value) {
        if let Some(f) = self.events.as_mut() {
            let _ = writeln!(f, "{value}");
        }
    }

    fn save(&self) {
        if let Err(e) = self.rec.save(&self.dir) {
            tracing::error!("cannot record state: {e}");
        }
    }

    fn set(&mut self, state: VmState, detail: impl Into<String>) {
        self.rec.state = state;
        self.rec.detail = detail.into();
        self.rec.since = now_unix();
        tracing::info!(vm = %self.rec.name, state = %state, detail = %self.rec.detail, "state");
        self.log(json!({"t": self.rec.since, "state": state, "detail": self.rec.detail}));
        self.save();
    }
}

/// Runs the VM until QEMU exits; returns the final record.
pub async fn run(opts: SuperviseOptions) -> Result<StateRecord, VmError> {
    let dir = opts.dir.clone();
    let spec_path = dir.spec();
    let text = std::fs::read_to_string(&spec_path).map_err(|e| VmError::io(&spec_path, e))?;
    let spec = VmSpec::from_json(&text, &dir.dir)?;
    let events = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.events())
        .ok();
    let mut r = Recorder {
        rec: StateRecord {
            name: spec.name.clone(),
            state: VmState::Starting,
            detail: String::new(),
            qemu_pid: None,
            supervisor_pid: std::process::id() as i32,
            block_pid: None,
            block_restarts: 0,
            accel: opts.accel.accel.to_string(),
            accel_reason: opts.accel.reason.clone(),
            qemu_version: opts.qemu.version_string(),
            since: now_unix(),
        },
        dir: dir.clone(),
        events,
    };
    r.set(VmState::Starting, "launching QEMU");

    let mut owned = Owned::default();
    let outcome = launch_and_watch(&spec, &opts, &mut r, &mut owned).await;
    for tap in &owned.taps {
        net::delete_link(tap);
    }
    if let Some(mut block) = owned.block.take() {
        let _ = block.kill().await;
        r.rec.block_pid = None;
    }
    for sock in [
        dir.qmp_control(),
        dir.qmp_monitor(),
        dir.serial(),
        dir.block_socket(),
    ] {
        let _ = std::fs::remove_file(sock);
    }
    match outcome {
        Ok(()) => {
            r.save();
            Ok(r.rec)
        }
        Err(e) => {
            let detail = match &e {
                VmError::QemuDiedAtStart { detail, .. } => detail.clone(),
                other => other.to_string(),
            };
            r.set(VmState::Failed, detail);
            Err(e)
        }
    }
}

async fn launch_and_watch(
    spec: &VmSpec,
    opts: &SuperviseOptions,
    r: &mut Recorder,
    owned: &mut Owned,
) -> Result<(), VmError> {
    let (qemu, accel) = (&opts.qemu, &opts.accel);
    let dir = r.dir.clone();
    let plans = net::nic_plans(spec);
    for (nic, plan) in spec.nics.iter().zip(&plans) {
        if let NicAttachment::Bridge(bridge) = &nic.attachment {
            net::create_tap(&plan.tap, bridge)?;
            owned.taps.push(plan.tap.clone());
        }
    }
    for sock in [dir.qmp_control(), dir.qmp_monitor(), dir.serial()] {
        let _ = std::fs::remove_file(sock);
    }
    let block_cfg = blockservice::config_for(spec, &dir);
    if let Some(cfg) = &block_cfg {
        let child = blockservice::start(&spec.name, cfg, &dir, &opts.ferry_exe).await?;
        r.rec.block_pid = child.id().map(|p| p as i32);
        owned.block = Some(child);
    }
    let cfg = LaunchConfig {
        spec,
        accel: accel.accel,
        qmp_sockets: vec![dir.qmp_monitor(), dir.qmp_control()],
        console: Console::Socket {
            path: dir.serial(),
            log: dir.console_log(),
        },
        nics: plans,
        // A migration destination resumes by itself the moment the migration
        // completes (QEMU's autostart), which keeps the switchover short.
        start_paused: !opts.incoming,
        block_socket: block_cfg.as_ref().map(|c| c.socket.clone()),
        incoming: opts.incoming,
    };
    let log_path = dir.qemu_log();
    let log = File::create(&log_path).map_err(|e| VmError::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| VmError::io(&log_path, e))?;
    let mut child = tokio::process::Command::new(&qemu.path)
        .args(cfg.args())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| VmError::io(&qemu.path, e))?;
    r.rec.qemu_pid = child.id().map(|p| p as i32);
    r.log(json!({"t": now_unix(), "qemu_args": cfg.args()}));

    let deadline = Instant::now() + QMP_CONNECT_TIMEOUT;
    let (qmp, mut events) = loop {
        if let Some(status) = child.try_wait().map_err(|e| VmError::io(&qemu.path, e))? {
            return Err(VmError::QemuDiedAtStart {
                name: spec.name.clone(),
                detail: format!("{} ({})", last_log_line(&dir), describe_exit(status)),
            });
        }
        if dir.qmp_monitor().exists() {
            if let Ok(c) = QmpClient::connect(&dir.qmp_monitor()).await {
                break c;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(VmError::Timeout {
                name: spec.name.clone(),
                what: "open its QMP socket".into(),
                secs: QMP_CONNECT_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    if opts.incoming {
        r.set(VmState::Paused, crate::state::AWAITING_MIGRATION);
    } else if opts.hold {
        r.set(
            VmState::Paused,
            "held before its first instruction; `cont` over QMP starts it",
        );
    } else {
        qmp.execute("cont", None)
            .await
            .map_err(|source| VmError::Qmp {
                name: spec.name.clone(),
                source,
            })?;
        r.set(VmState::Running, "running");
    }

    let mut shutdown: Option<String> = None;
    let mut events_open = true;
    let status = loop {
        let block_exit = async {
            match owned.block.as_mut() {
                Some(b) => b.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.recv(), if events_open => match ev {
                Some(ev) => on_event(r, &ev, &mut shutdown),
                None => events_open = false,
            },
            st = child.wait() => break st.map_err(|e| VmError::io(&qemu.path, e))?,
            st = block_exit => {
                owned.block = None;
                r.rec.block_pid = None;
                let why = st.map_or_else(|e| e.to_string(), describe_block_exit);
                tracing::warn!("block service of {} died ({why}); restarting it", spec.name);
                r.log(json!({"t": now_unix(), "block_service": "exited", "detail": why}));
                if let Some(cfg) = &block_cfg {
                    restart_block_service(spec, cfg, opts, r, owned).await;
                }
            }
        }
    };
    // Drain events QEMU sent just before it exited: the exit can be seen
    // before the QMP reader has passed them on (a SHUTDOWN missed here
    // reads as a crash). Its socket closes with it, so the channel ends
    // soon; the wait is bounded all the same.
    let drain_until = tokio::time::Instant::now() + EXIT_EVENTS_GRACE;
    while let (true, Ok(Some(ev))) = (
        events_open,
        tokio::time::timeout_at(drain_until, events.recv()).await,
    ) {
        on_event(r, &ev, &mut shutdown);
    }
    drop(qmp);
    match shutdown {
        Some(reason) => r.set(
            VmState::Stopped,
            format!("shut down ({reason}); {}", describe_exit(status)),
        ),
        None => r.set(
            VmState::Crashed,
            format!(
                "{} without a shutdown; {}",
                describe_exit(status),
                last_log_line(&dir)
            ),
        ),
    }
    Ok(())
}

/// Restarts a dead block service, retrying for as long as QEMU keeps the
/// disk's requests waiting; records each restart.
async fn restart_block_service(
    spec: &VmSpec,
    cfg: &ferry_block::ServiceConfig,
    opts: &SuperviseOptions,
    r: &mut Recorder,
    owned: &mut Owned,
) {
    let deadline =
        Instant::now() + Duration::from_secs(u64::from(ferry_qemu::cmdline::DISK_RECONNECT_SECS));
    while Instant::now() < deadline {
        match blockservice::start(&spec.name, cfg, &r.dir, &opts.ferry_exe).await {
            Ok(child) => {
                r.rec.block_pid = child.id().map(|p| p as i32);
                r.rec.block_restarts += 1;
                owned.block = Some(child);
                r.log(
                    json!({"t": now_unix(), "block_service": "restarted", "pid": r.rec.block_pid}),
                );
                r.save();
                return;
            }
            Err(e) => {
                tracing::error!("{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    r.log(json!({"t": now_unix(), "block_service": "gave up restarting"}));
}

fn describe_block_exit(status: ExitStatus) -> String {
    describe_exit(status).replacen("QEMU", "the block service", 1)
}

fn on_event(r: &mut Recorder, ev: &QmpEvent, shutdown: &mut Option<String>) {
    r.log(json!({"t": ev.timestamp, "event": ev.name, "data": ev.data}));
    match ev.name.as_str() {
        "STOP" if shutdown.is_none() => r.set(VmState::Paused, "paused"),
        "RESUME" => r.set(VmState::Running, "running"),
        "SHUTDOWN" => {
            let reason = ev
                .data
                .get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
                .to_string();
            r.set(VmState::Stopping, format!("shutting down ({reason})"));
            *shutdown = Some(reason);
        }
        _ => {}
    }
}

/// "QEMU exited with code 1" / "QEMU was killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str())
            .unwrap_or("?");
        format!("QEMU was killed by signal {sig} ({name})")
    } else {
        format!("QEMU exited with code {}", status.code().unwrap_or(-1))
    }
}

/// The last lines QEMU printed, for error messages: its error and the hint
/// it often adds on the next line, without the long option it quotes.
pub fn last_log_line(dir: &RunDir) -> String {
    let lines = crate::rundir::log_tail(&dir.qemu_log(), 2);
    if lines.is_empty() {
        return "QEMU printed nothing".into();
    }
    lines
        .iter()
        .map(|l| shorten_qemu_error(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `qemu-system-x86_64: -device virtio-blk-pci,...: Failed to get "write" lock`
/// becomes `Failed to get "write" lock (-device)`.
fn shorten_qemu_error(line: &str) -> String {
    let rest = line.strip_prefix("qemu-system-x86_64: ").unwrap_or(line);
    if let Some(opt) = rest.strip_prefix('-') {
        let (name, tail) = opt.split_once(' ').unwrap_or((opt, ""));
        // The option's value may contain ": " (JSON); the message follows the last one.
        if let Some((_, msg)) = tail.rsplit_once(": ") {
            return format!("{msg} (-{name})");
        }
    }
    rest.to_string()
}
