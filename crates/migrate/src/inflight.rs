//! The record of a migration in flight, kept in the VM's runtime directory
//! on the source: it stops a second migration of the same VM from starting,
//! and it is how `ferry vm migrate --cancel` finds the process to ask.
//!
//! The migrating process owns the VM's QMP control connection for as long
//! as it runs (QEMU serves one client per QMP socket), so a cancel cannot go
//! to QEMU directly: it is a SIGTERM to that process, which cancels through
//! its own connection and cleans up the destination like any other failure.
//! A migration a node agent drives is marked so: signalling the agent would
//! stop it, so such a cancel is refused with the cluster verb to use.

use crate::live::MigrateError;
use ferry_vm::RunDir;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;

/// Held while a migration runs; removes its record when dropped.
#[derive(Debug)]
pub struct InFlight {
    path: PathBuf,
}

fn record_path(dir: &RunDir) -> PathBuf {
    dir.state().with_file_name("migration.pid")
}

/// The marker of a migration driven by a node agent.
const BY_AGENT: &str = "agent";

/// The process migrating the VM in `dir`, if one is alive, and whether it
/// is a node agent.
fn running(dir: &RunDir) -> Option<(i32, bool)> {
    let text = std::fs::read_to_string(record_path(dir)).ok()?;
    let mut fields = text.split_whitespace();
    let pid: i32 = fields.next()?.parse().ok()?;
    let by_agent = fields.nth(1) == Some(BY_AGENT);
    ferry_vm::state::pid_alive(pid).then_some((pid, by_agent))
}

impl InFlight {
    /// Records that this process (a node agent if `by_agent`) migrates the
    /// VM in `dir` to `to`; fails if another live process already does.
    pub fn begin(name: &str, dir: &RunDir, to: &str, by_agent: bool) -> Result<Self, MigrateError> {
        if let Some((pid, _)) = running(dir) {
            return Err(MigrateError::Busy {
                name: name.into(),
                pid,
            });
        }
        let path = record_path(dir);
        let kind = if by_agent { BY_AGENT } else { "cli" };
        std::fs::write(&path, format!("{} {to} {kind}\n", std::process::id()))
            .map_err(|e| MigrateError::Prepare(format!("cannot write {}: {e}", path.display())))?;
        Ok(InFlight { path })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Asks the process migrating the VM in `dir` to cancel, and waits up to
/// `wait` for it to finish. Returns its pid, or `None` if no migration of
/// that VM is running; refuses a migration a node agent drives.
pub fn cancel(
    name: &str,
    dir: &RunDir,
    wait: std::time::Duration,
) -> Result<Option<i32>, MigrateError> {
    let Some((pid, by_agent)) = running(dir) else {
        return Ok(None);
    };
    if by_agent {
        return Err(MigrateError::ByAgent { name: name.into() });
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = std::time::Instant::now() + wait;
    while ferry_vm::state::pid_alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(Some(pid))
}
