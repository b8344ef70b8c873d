//! The runtime directory of one VM: sockets, logs and recorded state.

use crate::VmError;
use std::path::{Path, PathBuf};

/// Where runtime directories live unless `$FERRY_RUN_DIR` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/ferry/vms";

/// Root of all VM runtime directories on this host.
pub fn root() -> PathBuf {
    std::env::var_os("FERRY_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_ROOT.into())
}

/// Paths of one VM's runtime files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The directory.
    pub dir: PathBuf,
}

impl RunDir {
    /// The directory for VM `name` under [`root`].
    pub fn for_vm(name: &str) -> Self {
        RunDir {
            dir: root().join(name),
        }
    }

    /// A directory given explicitly.
    pub fn at(dir: &Path) -> Self {
        RunDir {
            dir: dir.to_path_buf(),
        }
    }

    /// Creates the directory (private to root: it holds control sockets).
    pub fn create(&self) -> Result<(), VmError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| VmError::io(&self.dir, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| VmError::io(&self.dir, e))
    }

    /// The spec the VM was started from (JSON).
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    /// QMP socket for commands from the CLI (and later the agent).
    pub fn qmp_control(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// QMP socket the supervisor holds for events.
    pub fn qmp_monitor(&self) -> PathBuf {
        self.dir.join("qmp-supervisor.sock")
    }
    /// Serial console socket.
    pub fn serial(&self) -> PathBuf {
        self.dir.join("serial.sock")
    }
    /// Everything the guest printed on its serial console.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// QEMU's own stdout/stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// The supervisor's log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    /// The recorded state.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The block service's unix socket (NBD).
    pub fn block_socket(&self) -> PathBuf {
        self.dir.join("block.sock")
    }
    /// The block service's configuration.
    pub fn block_config(&self) -> PathBuf {
        self.dir.join("block.json")
    }
    /// The block service's log.
    pub fn block_log(&self) -> PathBuf {
        self.dir.join("block.log")
    }
    /// Per-disk statistics, rewritten every second by the block service.
    pub fn block_stats(&self) -> PathBuf {
        self.dir.join("block-stats.json")
    }
    /// Every QMP event and state change, one JSON object per line.
    pub fn events(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }
}

/// The last `n` non-empty lines of a log file, trimmed; empty if none. The
/// helpers' logs end with the reason they stopped, which errors quote.
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
