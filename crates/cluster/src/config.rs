//! The member's configuration file (`ferry daemon --config FILE`), TOML:
//!
//! ```toml
//! id = 1                      # Raft id, unique in the cluster
//! name = "node1"              # host name, as in its certificate
//! listen = "10.0.0.1:7441"    # the cluster endpoint (a specific address)
//! data_dir = "/var/lib/ferry/cluster"
//! peers = ["10.0.0.2:7441"]   # members to ask when joining (optional)
//! role = "hypervisor"         # or "witness": votes, runs no VMs
//!
//! [raft]                      # optional
//! heartbeat_ms = 250
//! election_timeout_ms = [1000, 2000]
//!
//! [networks]                  # optional: this host on each cluster network
//! internal = "10.0.0.1"       # [default: cluster = the listen address]
//! external = "10.1.0.1"
//!
//! [heartbeat]                 # optional, on every network above
//! delay_ms = 1000             # Hyper-V's defaults: 1 s,
//! threshold = 10              # 10 missed
//!
//! [agent]                     # optional: the node agent's VM roles
//! migration_network = "internal"  # the network migration streams go over
//! quick_dir = "/srv/ferry/quick"  # shared storage for quick migrations' state
//! migrations_per_host = 1     # migrations a host takes part in at once
//! ```
//!
//! The data directory holds `raft/` (log and snapshot), `tls/` (this
//! member's credentials), and on the member where the cluster was created
//! `ca/` (the cluster CA) and `api-token` (the CLI's token, mode 0600).

use crate::heartbeat::HeartbeatConfig;
use crate::node::NodeConfig;
use crate::state::HostRole;
use crate::{Member, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest configuration file read.
const MAX_CONFIG: u64 = 1 << 20;

/// Problems reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any sane configuration.
    #[error("{0} is larger than {MAX_CONFIG} bytes")]
    TooLarge(PathBuf),
    /// The TOML is malformed or has unknown keys.
    #[error("{path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: toml::de::Error,
    },
    /// A value is unusable.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Raft timings, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftTimings {
    /// The leader's heartbeat interval.
    pub heartbeat_ms: u64,
    /// A follower starts an election after a random time in this range
    /// without a heartbeat.
    pub election_timeout_ms: [u64; 2],
}

impl Default for RaftTimings {
    fn default() -> Self {
        let d = NodeConfig::default_raft();
        RaftTimings {
            heartbeat_ms: d.heartbeat_interval,
            election_timeout_ms: [d.election_timeout_min, d.election_timeout_max],
        }
    }
}

/// Heartbeat settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    /// Time between two heartbeats.
    pub delay_ms: u64,
    /// Heartbeats missed before a network, or a host, is lost.
    pub threshold: u32,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        HeartbeatSettings {
            delay_ms: 1000,
            threshold: 10,
        }
    }
}

/// The node agent's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// The cluster network migration streams go over: a destination is
    /// reached at its address on it [default: `internal`; a host with no
    /// address there is reached at its member address].
    #[serde(default = "internal")]
    pub migration_network: String,
    /// Where quick migrations save a VM's state: a directory on storage
    /// every hypervisor host mounts at the same path (the source writes the
    /// file, the destination reads it) [default: the runtime directory,
    /// which only hosts on one machine share]. Checked before the VM pauses.
    #[serde(default)]
    pub quick_dir: Option<PathBuf>,
    /// Migrations a host may take part in at once (as source or
    /// destination).
    #[serde(default = "one")]
    pub migrations_per_host: u32,
}

fn one() -> u32 {
    1
}

fn internal() -> String {
    "internal".into()
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            migration_network: internal(),
            quick_dir: None,
            migrations_per_host: 1,
        }
    }
}

/// A member's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Raft id, unique in the cluster.
    pub id: NodeId,
    /// Host name, as in its certificate.
    pub name: String,
    /// The address the cluster endpoint listens on and is reached at.
    pub listen: SocketAddr,
    /// Where the member keeps its state.
    pub data_dir: PathBuf,
    /// Members to ask when joining.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// Raft timings.
    #[serde(default)]
    pub raft: RaftTimings,
    /// This host's address on each cluster network.
    #[serde(default)]
    pub networks: BTreeMap<String, IpAddr>,
    /// Heartbeat settings.
    #[serde(default)]
    pub heartbeat: HeartbeatSettings,
    /// What this host is for.
    #[serde(default)]
    pub role: HostRole,
    /// The node agent's settings.
    #[serde(default)]
    pub agent: AgentSettings,
}

impl MemberConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        if std::fs::metadata(path).map_err(io)?.len() > MAX_CONFIG {
            return Err(ConfigError::TooLarge(path.to_path_buf()));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let config: MemberConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.listen.ip().is_unspecified() {
            return Err(format!(
                "listen = {}: give the address other members reach this one at",
                self.listen
            ));
        }
        if self.name.is_empty() {
            return Err("name is empty".into());
        }
        if self.agent.migrations_per_host == 0 {
            return Err("agent.migrations_per_host must be positive".into());
        }
        if self.heartbeat.delay_ms == 0 || self.heartbeat.threshold == 0 {
            return Err("heartbeat: delay_ms and threshold must be positive".into());
        }
        if let Some((n, ip)) = self.networks.iter().find(|(_, ip)| ip.is_unspecified()) {
            return Err(format!(
                "networks.{n} = {ip}: give this host's address on it"
            ));
        }
        let [lo, hi] = self.raft.election_timeout_ms;
        if self.raft.heartbeat_ms == 0 || lo <= self.raft.heartbeat_ms || hi <= lo {
            return Err(
                "raft: need 0 < heartbeat_ms < election_timeout_ms[0] < election_timeout_ms[1]"
                    .into(),
            );
        }
        Ok(())
    }

    /// This member as other members know it.
    pub fn member(&self) -> Member {
        Member {
            name: self.name.clone(),
            addr: self.listen.to_string(),
        }
    }

    /// The directory of this member's TLS credentials.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// The directory of the cluster CA (present where the cluster was made).
    pub fn ca_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }

    /// The file of the CLI's API token (present where the cluster was made).
    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join("api-token")
    }

    /// This host's address on each cluster network (by default the listen
    /// address, on a network called `cluster`).
    pub fn network_addresses(&self) -> BTreeMap<String, IpAddr> {
        if self.networks.is_empty() {
            BTreeMap::from([("cluster".to_string(), self.listen.ip())])
        } else {
            self.networks.clone()
        }
    }

    /// How to run the node.
    pub fn node_config(&self) -> NodeConfig {
        let [lo, hi] = self.raft.election_timeout_ms;
        NodeConfig {
            id: self.id,
            name: self.name.clone(),
            data_dir: self.data_dir.join("raft"),
            tls_dir: self.tls_dir(),
            ca_dir: Some(self.ca_dir()),
            raft: openraft::Config {
                heartbeat_interval: self.raft.heartbeat_ms,
                election_timeout_min: lo,
                election_timeout_max: hi,
                ..NodeConfig::default_raft()
            },
            heartbeat: Some(HeartbeatConfig {
                delay: Duration::from_millis(self.heartbeat.delay_ms),
                threshold: self.heartbeat.threshold,
                networks: self.network_addresses(),
            }),
            role: self.role,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/member.toml");
        let c = MemberConfig::load(&path).expect("examples/member.toml");
        assert_eq!(c.network_addresses().len(), 2);
    }

    #[test]
    fn reads_a_config_and_refuses_bad_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("c.toml");
        std::fs::write(
            &path,
            "id = 2\nname = \"node2\"\nlisten = \"127.0.0.1:7442\"\ndata_dir = \"/tmp/x\"\npeers = [\"127.0.0.1:7441\"]\n",
        )
        .expect("write");
        let c = MemberConfig::load(&path).expect("load");
        assert_eq!(c.member().addr, "127.0.0.1:7442");
        assert_eq!(c.raft, RaftTimings::default());
        assert_eq!(c.node_config().data_dir, PathBuf::from("/tmp/x/raft"));

        std::fs::write(
            &path,
            "id = 2\nname = \"n\"\nlisten = \"0.0.0.0:1\"\ndata_dir = \"/x\"\n",
        )
        .expect("write");
        let err = MemberConfig::load(&path).expect_err("unspecified");
        assert!(err.to_string().contains("listen"), "{err}");
        std::fs::write(
            &path,
            "id = 1\nname = \"n\"\nlisten = \"10.0.0.1:7441\"\ndata_dir = \"/x\"\n[networks]\ninternal = \"10.0.0.1\"\nexternal = \"10.1.0.1\"\n[heartbeat]\ndelay_ms = 500\nthreshold = 4\n",
        )
        .expect("write");
        let c = MemberConfig::load(&path).expect("load");
        let hb = c.node_config().heartbeat.expect("heartbeat");
        assert_eq!(hb.delay, Duration::from_millis(500));
        assert_eq!(hb.threshold, 4);
        assert_eq!(c.role, HostRole::Hypervisor);
        assert_eq!(
            hb.networks.keys().collect::<Vec<_>>(),
            ["external", "internal"]
        );
        let c = MemberConfig {
            networks: BTreeMap::new(),
            ..c
        };
        assert_eq!(
            c.network_addresses(),
            BTreeMap::from([("cluster".to_string(), c.listen.ip())]),
            "by default, one network: the listen address"
        );
        std::fs::write(&path, "id = 2\nnmae = \"n\"\n").expect("write");
        let err = MemberConfig::load(&path).expect_err("typo");
        assert!(format!("{err:?}").contains("nmae"), "{err:?}");
    }
}
