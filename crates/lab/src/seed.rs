//! The seed's lab on one machine: a domain controller that also serves the
//! SAN (`dc`), two hypervisor hosts (`server001`, `server002`) and a
//! `client`, joined by an "external" and an "internal" network.
//!
//! ```text
//!              switch: bridge "ext" (10.30.0.0/24)      bridge "int" (10.20.0.0/24)
//!   dc         eth0 10.30.0.1                           int 10.20.0.1
//!   server001  uplink ⊂ br0 10.30.0.11 (VM TAPs)        int 10.20.0.11 (migration)
//!   server002  uplink ⊂ br0 10.30.0.12 (VM TAPs)        int 10.20.0.12 (migration)
//!   client     eth0 10.30.0.100
//! ```
//!
//! Namespaces are named `LAB-MACHINE`; the lab's files (hosts file, each
//! server's runtime directory and configuration, reports) live in
//! `/run/ferry/lab/LAB`. `up` is idempotent and `down` removes exactly what
//! `up` made.

use crate::{veth, LabError, Netns};
use std::path::PathBuf;

/// The machines, in the order they are made.
pub const MACHINES: [&str; 5] = ["switch", "dc", "server001", "server002", "client"];
/// The hypervisor hosts.
pub const SERVERS: [&str; 2] = ["server001", "server002"];
/// Bridge on each server that VM TAPs join.
pub const VM_BRIDGE: &str = "br0";
/// The client's address on the external network.
pub const CLIENT_ADDR: &str = "10.30.0.100";
/// The address the demo's VM takes on the external network.
pub const VM_ADDR: &str = "10.30.0.50";

/// A server's (external, internal) addresses.
pub fn server_addrs(server: &str) -> (&'static str, &'static str) {
    if server == "server001" {
        ("10.30.0.11", "10.20.0.11")
    } else {
        ("10.30.0.12", "10.20.0.12")
    }
}

/// One lab, by name.
#[derive(Debug, Clone)]
pub struct SeedLab {
    /// The lab's name: the prefix of its namespaces.
    pub name: String,
}

/// What `status` reports about one machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MachineStatus {
    /// The machine.
    pub machine: String,
    /// Its namespace.
    pub netns: String,
    /// Whether the namespace exists.
    pub up: bool,
    /// Processes running in it.
    pub processes: usize,
}

impl SeedLab {
    /// The lab called `name` (nothing is made until [`SeedLab::up`]).
    pub fn new(name: &str) -> Self {
        SeedLab {
            name: name.to_string(),
        }
    }

    /// The namespace of `machine`.
    pub fn netns(&self, machine: &str) -> String {
        format!("{}-{machine}", self.name)
    }

    /// The lab's directory.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from("/run/ferry/lab").join(&self.name)
    }

    /// A server's runtime directory.
    pub fn run_dir(&self, server: &str) -> PathBuf {
        self.dir().join(server)
    }

    /// A server's host configuration file.
    pub fn host_config(&self, server: &str) -> PathBuf {
        self.dir().join(format!("{server}.toml"))
    }

    /// The hosts file naming both servers.
    pub fn hosts_file(&self) -> PathBuf {
        self.dir().join("hosts.toml")
    }

    /// Whether every machine of the lab exists.
    pub fn is_up(&self) -> bool {
        MACHINES.iter().all(|m| Netns::exists(&self.netns(m)))
    }

    /// Makes the lab, or keeps it if it is already complete (a partial one
    /// is removed and made again).
    pub fn up(&self) -> Result<(), LabError> {
        if self.is_up() {
            return Ok(());
        }
        self.down();
        let guards = self.build()?;
        for g in guards {
            g.keep();
        }
        self.write_files().map_err(|e| LabError {
            command: format!("writing {}", self.dir().display()),
            stderr: e.to_string(),
        })
    }

    fn build(&self) -> Result<Vec<Netns>, LabError> {
        // Guards: a failure part-way removes what was made.
        let mut made = Vec::new();
        for m in MACHINES {
            made.push(Netns::create(&self.netns(m))?);
        }
        let [sw, dc, s1, s2, client] = [0, 1, 2, 3, 4].map(|i| &made[i]);
        sw.add_bridge("ext", None)?;
        sw.add_bridge("int", None)?;
        let port = |machine: &Netns, net: &str, here: &str, there: &str, addr: Option<&str>| {
            veth(sw, here, machine, there)?;
            sw.ip(&["link", "set", here, "master", net])?;
            if let Some(a) = addr {
                machine.ip(&["addr", "add", a, "dev", there])?;
            }
            Ok::<(), LabError>(())
        };
        port(dc, "ext", "e-dc", "eth0", Some("10.30.0.1/24"))?;
        port(dc, "int", "i-dc", "int", Some("10.20.0.1/24"))?;
        for (server, ns, tag) in [("server001", s1, "s1"), ("server002", s2, "s2")] {
            let (ext, int) = server_addrs(server);
            ns.add_bridge(VM_BRIDGE, Some(&format!("{ext}/24")))?;
            port(ns, "ext", &format!("e-{tag}"), "uplink", None)?;
            ns.ip(&["link", "set", "uplink", "master", VM_BRIDGE])?;
            port(
                ns,
                "int",
                &format!("i-{tag}"),
                "int",
                Some(&format!("{int}/24")),
            )?;
        }
        port(
            client,
            "ext",
            "e-cl",
            "eth0",
            Some(&format!("{CLIENT_ADDR}/24")),
        )?;
        Ok(made)
    }

    fn write_files(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.dir())?;
        let mut hosts = String::new();
        for server in SERVERS {
            std::fs::create_dir_all(self.run_dir(server))?;
            let config = self.host_config(server);
            if !config.exists() {
                std::fs::write(
                    &config,
                    "# Host configuration of this lab server.\n# [cpu]\n# withhold = [\"avx2\"]   # emulate an older CPU\n",
                )?;
            }
            let (ext, int) = server_addrs(server);
            hosts.push_str(&format!(
                "[hosts.{server}]\nrun_dir = \"{}\"\nmigration_address = \"{int}\"\nnetns = \"{}\"\nconfig = \"{}\"\n\
                 networks = {{ internal = \"{int}\", external = \"{ext}\" }}\n",
                self.run_dir(server).display(),
                self.netns(server),
                config.display()
            ));
        }
        std::fs::write(self.hosts_file(), hosts)
    }

    /// Removes the lab's namespaces (with every process in them) and files.
    pub fn down(&self) {
        for m in MACHINES.iter().rev() {
            let ns = self.netns(m);
            if Netns::exists(&ns) {
                drop(Netns::adopt(&ns));
            }
        }
        let _ = std::fs::remove_dir_all(self.dir());
    }

    /// Each machine's namespace and whether it is there.
    pub fn status(&self) -> Vec<MachineStatus> {
        MACHINES
            .iter()
            .map(|m| {
                let netns = self.netns(m);
                let up = Netns::exists(&netns);
                let processes = if up { crate::pids_in(&netns).len() } else { 0 };
                MachineStatus {
                    machine: m.to_string(),
                    netns,
                    up,
                    processes,
                }
            })
            .collect()
    }
}
