//! Errors of VM lifecycle operations. Each names the problem and the fix.

use std::path::PathBuf;

/// Why a VM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The spec was refused.
    #[error(transparent)]
    Spec(#[from] ferry_spec::SpecError),
    /// QEMU is missing or too old.
    #[error(transparent)]
    Qemu(#[from] ferry_qemu::QemuError),
    /// A file the VM needs is missing.
    #[error("{what} {path} does not exist{hint}")]
    MissingFile {
        /// What the file is for.
        what: String,
        /// The path.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A disk image cannot be opened the way the spec asks.
    #[error("disk {path} cannot be opened {mode}: {reason}")]
    DiskAccess {
        /// The image.
        path: PathBuf,
        /// "read-write" or "read-only".
        mode: &'static str,
        /// Why, with the fix.
        reason: String,
    },
    /// The CPU model is unknown to this QEMU.
    #[error("unknown CPU model {model:?}; `qemu-system-x86_64 -cpu help` lists the models this QEMU knows (e.g. max, qemu64, Skylake-Server)")]
    UnknownCpuModel {
        /// The model.
        model: String,
    },
    /// The host's CPU profile or the VM's CPU could not be worked out.
    #[error("CPU: {detail}")]
    Cpu {
        /// What went wrong.
        detail: String,
    },
    /// This host cannot give the VM the CPU it sees.
    #[error("this host cannot run VM {name}")]
    CpuIncompatible {
        /// The VM.
        name: String,
        /// What differs.
        #[source]
        why: ferry_cpu::Incompatible,
    },
    /// The machine type is unknown to this QEMU.
    #[error("unknown machine type {machine:?}; use q35 or pc (`qemu-system-x86_64 -machine help` lists them)")]
    UnknownMachine {
        /// The machine type.
        machine: String,
    },
    /// Not enough free memory on this host.
    #[error("VM {name} asks for {wanted_mib} MiB but this host has only {available_mib} MiB available; lower memory_mib or stop other VMs")]
    NotEnoughMemory {
        /// The VM.
        name: String,
        /// What it asks for.
        wanted_mib: u64,
        /// What the host has free.
        available_mib: u64,
    },
    /// A NIC's bridge does not exist.
    #[error("bridge {bridge} (nics[{index}]) does not exist; create it with `ip link add {bridge} type bridge && ip link set {bridge} up`")]
    BridgeMissing {
        /// The bridge.
        bridge: String,
        /// The NIC.
        index: usize,
    },
    /// A NIC's TAP device does not exist.
    #[error("TAP device {tap} (nics[{index}]) does not exist; create it with `ip tuntap add dev {tap} mode tap`, or name a bridge instead")]
    TapMissing {
        /// The TAP.
        tap: String,
        /// The NIC.
        index: usize,
    },
    /// A network command failed.
    #[error("network setup: `{command}` failed: {stderr}")]
    Net {
        /// The command.
        command: String,
        /// Its error output.
        stderr: String,
    },
    /// A VM of this name is already running here.
    #[error(
        "VM {name} is already running (QEMU pid {pid}); stop it first with `ferry vm stop {name}`"
    )]
    AlreadyRunning {
        /// The VM.
        name: String,
        /// QEMU's pid.
        pid: i32,
    },
    /// No VM of this name is known here.
    #[error("no VM named {name} on this host (`ferry vm list` shows them)")]
    NotFound {
        /// The VM.
        name: String,
    },
    /// The VM is not running, so the operation makes no sense.
    #[error("VM {name} is {state}, not running")]
    NotRunning {
        /// The VM.
        name: String,
        /// Its state.
        state: String,
    },
    /// QEMU exited while starting.
    #[error("QEMU exited while starting VM {name}: {detail}")]
    QemuDiedAtStart {
        /// The VM.
        name: String,
        /// QEMU's last error line.
        detail: String,
    },
    /// The block service could not be started.
    #[error("block service for VM {name} failed to start: {detail}")]
    BlockService {
        /// The VM.
        name: String,
        /// Its last log line.
        detail: String,
    },
    /// Waiting for a state change took too long.
    #[error("timed out after {secs} s waiting for VM {name} to {what}")]
    Timeout {
        /// The VM.
        name: String,
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
    /// Talking to QEMU failed.
    #[error("QMP with VM {name}")]
    Qmp {
        /// The VM.
        name: String,
        /// Why.
        #[source]
        source: ferry_qemu::QmpError,
    },
    /// A file operation failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl VmError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VmError::Io {
            path: path.into(),
            source,
        }
    }
}
