//! Building blocks of Ferry's lab: network namespaces, bridges and veth links.
//!
//! Everything made here is named by the caller (tests use unique names) and
//! removed when its guard is dropped, even when a test fails, together with
//! every process still running inside a namespace.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A failed `ip` command.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {stderr}")]
pub struct LabError {
    /// The command.
    pub command: String,
    /// What it printed on stderr.
    pub stderr: String,
}

fn ip(args: &[&str]) -> Result<Output, LabError> {
    let shown = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| LabError {
            command: shown.clone(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError {
            command: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A name no other test or process on this machine is using: `prefix-pid-n`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted (with its processes) on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name (as `ip netns` knows it).
    pub name: String,
}

impl Netns {
    /// Creates a namespace with loopback up.
    pub fn create(name: &str) -> Result<Self, LabError> {
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output, LabError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Adds a Linux bridge, up, optionally with an address (`10.0.0.1/24`).
    pub fn add_bridge(&self, bridge: &str, addr: Option<&str>) -> Result<(), LabError> {
        self.ip(&["link", "add", bridge, "type", "bridge"])?;
        // Forward at once instead of waiting out STP's learning delay.
        self.ip(&[
            "link",
            "set",
            bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        self.ip(&["link", "set", bridge, "up"])?;
        if let Some(a) = addr {
            self.ip(&["addr", "add", a, "dev", bridge])?;
        }
        Ok(())
    }

    /// Links this namespace's bridge to another namespace with a veth pair:
    /// `here_if` joins `bridge` here, `there_if` (with `there_addr`) lives in `other`.
    pub fn link_to(
        &self,
        bridge: &str,
        here_if: &str,
        other: &Netns,
        there_if: &str,
        there_addr: &str,
    ) -> Result<(), LabError> {
        self.ip(&[
            "link", "add", here_if, "type", "veth", "peer", "name", there_if,
        ])?;
        self.ip(&["link", "set", there_if, "netns", &other.name])?;
        self.ip(&["link", "set", here_if, "master", bridge])?;
        self.ip(&["link", "set", here_if, "up"])?;
        other.ip(&["addr", "add", there_addr, "dev", there_if])?;
        other.ip(&["link", "set", there_if, "up"])?;
        Ok(())
    }

    /// Pids of processes running in the namespace.
    pub fn pids(&self) -> Vec<i32> {
        ip(&["netns", "pids", &self.name])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}
