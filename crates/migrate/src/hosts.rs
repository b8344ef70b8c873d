//! Where the hosts are and how to run Ferry on them.
//!
//! Until the cluster's agents exist (issue 8), a hosts file names each host:
//! its runtime directory, the address its migration stream listens on, and,
//! for the lab on one machine, the network namespace it lives in. Running a
//! command "on" a host means running `ferry` in that namespace with that
//! runtime directory.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Runtime directory of the host's VMs (its `FERRY_RUN_DIR`).
    pub run_dir: PathBuf,
    /// Address on the migration ("internal") network the host listens on.
    pub migration_address: String,
    /// Network namespace the host's processes run in (lab only).
    #[serde(default)]
    pub netns: Option<String>,
    /// The host's address on each cluster network, by network name (e.g.
    /// `internal`, `external`), for validation and heartbeats.
    #[serde(default)]
    pub networks: BTreeMap<String, String>,
    /// The host's configuration file (its `FERRY_HOST_CONFIG`: CPU mask,
    /// ...) [default: the host's own /etc/ferry/host.toml].
    #[serde(default)]
    pub config: Option<PathBuf>,
}

/// The hosts file: `[hosts.NAME]` tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    /// Directory of Ferry's certificate authority, which signs each host's
    /// migration certificate [default: `ca` beside the hosts file].
    #[serde(default)]
    pub ca_dir: PathBuf,
    /// Hosts by name.
    pub hosts: BTreeMap<String, Host>,
}

/// Problems with the hosts file.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// It could not be read.
    #[error("cannot read hosts file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid.
    #[error("hosts file {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A host it does not name.
    #[error("no host named {name:?} in {path} (known: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The file.
        path: PathBuf,
        /// The names it has.
        known: String,
    },
}

impl HostsFile {
    /// Reads a hosts file.
    pub fn load(path: &Path) -> Result<Self, HostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file: HostsFile = toml::from_str(&text).map_err(|e| HostsError::Invalid {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        for (name, h) in &file.hosts {
            if h.migration_address.parse::<std::net::IpAddr>().is_err() {
                return Err(HostsError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "hosts.{name}.migration_address {:?} is not an IP address",
                        h.migration_address
                    ),
                });
            }
        }
        if file.ca_dir.as_os_str().is_empty() {
            file.ca_dir = path.parent().unwrap_or(Path::new(".")).join("ca");
        }
        Ok(file)
    }

    /// The host called `name`.
    pub fn get(&self, name: &str, path: &Path) -> Result<&Host, HostsError> {
        self.hosts.get(name).ok_or_else(|| HostsError::Unknown {
            name: name.to_string(),
            path: path.to_path_buf(),
            known: self.hosts.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// The host whose runtime directory is `run_dir`, if any.
    pub fn by_run_dir(&self, run_dir: &Path) -> Option<(&String, &Host)> {
        self.hosts.iter().find(|(_, h)| h.run_dir == run_dir)
    }
}

impl Host {
    /// A `ferry` command that runs on this host.
    pub fn ferry(&self, exe: &Path) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        c.env("FERRY_RUN_DIR", &self.run_dir);
        if let Some(config) = &self.config {
            c.env("FERRY_HOST_CONFIG", config);
        }
        c
    }

    /// Where this host's TLS credentials for migration streams live.
    pub fn tls_dir(&self) -> PathBuf {
        self.run_dir.join("tls")
    }

    /// The runtime directory of VM `name` on this host.
    pub fn vm_dir(&self, name: &str) -> ferry_vm::RunDir {
        ferry_vm::RunDir::at(&self.run_dir.join(name))
    }
}
