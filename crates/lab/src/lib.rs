//! Building blocks of Ferry's lab: network namespaces, bridges and veth links.
//!
//! Everything made here is named by the caller (tests use unique names) and
//! removed when its guard is dropped, even when a test fails, together with
//! every process still running inside a namespace.

pub mod demo;
pub mod report;
pub mod seed;

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
        pids_in(&self.name)
    }
}

/// Pids of processes running in namespace `name`.
pub fn pids_in(name: &str) -> Vec<i32> {
    ip(&["netns", "pids", name])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Netns {
    /// A guard for a namespace that already exists (so dropping it removes it).
    pub fn adopt(name: &str) -> Self {
        Netns {
            name: name.to_string(),
        }
    }

    /// Keeps the namespace after this guard is gone; returns its name.
    pub fn keep(self) -> String {
        let name = self.name.clone();
        std::mem::forget(self);
        name
    }

    /// Whether a namespace of this name exists.
    pub fn exists(name: &str) -> bool {
        std::path::Path::new("/run/netns").join(name).exists()
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

/// Connects interface `a_if` in `a` to `b_if` in `b` with a veth pair, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), LabError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let tmp = format!(
        "fyv{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    a.ip(&["link", "add", a_if, "type", "veth", "peer", "name", &tmp])?;
    a.ip(&["link", "set", &tmp, "netns", &b.name])?;
    b.ip(&["link", "set", &tmp, "name", b_if])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Two hypervisor hosts, a switch and a client, as the migration tests and
/// the lab use them:
///
/// ```text
///   client (10.30.0.100) ── switch bridge "ext" ──┬── host1: uplink ⊂ br0 (VM TAPs)
///                                                 └── host2: uplink ⊂ br0 (VM TAPs)
///   host1 "int" 10.20.0.1 ────────────────────────── host2 "int" 10.20.0.2  (migration)
/// ```
pub struct TwoHosts {
    /// First hypervisor host.
    pub host1: Netns,
    /// Second hypervisor host.
    pub host2: Netns,
    /// The external switch.
    pub switch: Netns,
    /// A client on the external network.
    pub client: Netns,
}

/// Address of host1 on the internal (migration) network.
pub const HOST1_INTERNAL: &str = "10.20.0.1";
/// Address of host2 on the internal (migration) network.
pub const HOST2_INTERNAL: &str = "10.20.0.2";
/// The client's address on the external network.
pub const CLIENT_ADDR: &str = "10.30.0.100";
/// Bridge on each host that VM TAPs join.
pub const VM_BRIDGE: &str = "br0";

impl TwoHosts {
    /// Builds the lab with unique namespace names starting with `prefix`.
    pub fn create(prefix: &str) -> Result<Self, LabError> {
        let lab = TwoHosts {
            host1: Netns::create(&unique_name(&format!("{prefix}h1")))?,
            host2: Netns::create(&unique_name(&format!("{prefix}h2")))?,
            switch: Netns::create(&unique_name(&format!("{prefix}sw")))?,
            client: Netns::create(&unique_name(&format!("{prefix}cl")))?,
        };
        lab.switch.add_bridge("ext", None)?;
        for (i, host) in [&lab.host1, &lab.host2].into_iter().enumerate() {
            host.add_bridge(VM_BRIDGE, None)?;
            let port = format!("p-h{}", i + 1);
            veth(&lab.switch, &port, host, "uplink")?;
            lab.switch.ip(&["link", "set", &port, "master", "ext"])?;
            host.ip(&["link", "set", "uplink", "master", VM_BRIDGE])?;
        }
        veth(&lab.switch, "p-cl", &lab.client, "eth0")?;
        lab.switch.ip(&["link", "set", "p-cl", "master", "ext"])?;
        lab.client
            .ip(&["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"])?;
        veth(&lab.host1, "int", &lab.host2, "int")?;
        lab.host1
            .ip(&["addr", "add", &format!("{HOST1_INTERNAL}/24"), "dev", "int"])?;
        lab.host2
            .ip(&["addr", "add", &format!("{HOST2_INTERNAL}/24"), "dev", "int"])?;
        Ok(lab)
    }
}
