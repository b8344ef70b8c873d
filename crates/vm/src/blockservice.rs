//! Starting and restarting a VM's block service process.
//!
//! One `ferry block serve` process per VM serves its Ferry-path disks on the
//! VM's `block.sock` (NBD) and, for `protocol = "vhost-user"` disks, on a
//! vhost-user socket each. It is a child of the VM's supervisor, which
//! restarts it if it dies; QEMU reconnects and re-issues what was in flight
//! (NBD within `reconnect-delay`; vhost-user from the ring), so the guest
//! sees a pause, not an error.

use crate::{RunDir, VmError};
use ferry_block::{DiskExport, ServiceConfig};
use ferry_qemu::cmdline::{export_name, vhost_user_socket};
use ferry_spec::{DiskPath, DiskProtocol, VmSpec};
use std::fs::OpenOptions;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long the service may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The service configuration for a spec's Ferry-path disks; `None` if none.
pub fn config_for(spec: &VmSpec, dir: &RunDir) -> Option<ServiceConfig> {
    let disks: Vec<DiskExport> = spec
        .disks
        .iter()
        .enumerate()
        .filter(|(_, d)| d.via == DiskPath::Ferry)
        .map(|(i, d)| DiskExport {
            name: export_name(i),
            path: d.path.clone(),
            secrets: d.secrets.clone(),
            readonly: d.readonly,
            vhost_user: (d.protocol == DiskProtocol::VhostUser)
                .then(|| vhost_user_socket(&dir.block_socket(), i)),
        })
        .collect();
    (!disks.is_empty()).then(|| ServiceConfig {
        socket: dir.block_socket(),
        stats: Some(dir.block_stats()),
        disks,
    })
}

/// Starts the service and waits until it accepts connections.
pub async fn start(
    name: &str,
    cfg: &ServiceConfig,
    dir: &RunDir,
    exe: &Path,
) -> Result<Child, VmError> {
    let cfg_path = dir.block_config();
    let json = serde_json::to_vec_pretty(cfg)
        .map_err(|e| VmError::io(&cfg_path, std::io::Error::other(e)))?;
    std::fs::write(&cfg_path, json).map_err(|e| VmError::io(&cfg_path, e))?;
    let log_path = dir.block_log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| VmError::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| VmError::io(&log_path, e))?;
    let mut child = Command::new(exe)
        .args(["block", "serve", "--config"])
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| VmError::io(exe, e))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(VmError::BlockService {
                name: name.into(),
                detail: format!(
                    "{} ({status})",
                    crate::rundir::log_tail(&log_path, 1)
                        .pop()
                        .unwrap_or_else(|| "it printed nothing".into())
                ),
            });
        }
        if tokio::net::UnixStream::connect(&cfg.socket).await.is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(VmError::BlockService {
                name: name.into(),
                detail: format!("not listening after {} s", START_TIMEOUT.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
