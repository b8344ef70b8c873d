//! The `ferry san` configuration: portals, targets, LUNs, ACLs and CHAP
//! credentials, in TOML; validation errors name the offending field.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse into a configuration.
    #[error("{path} is not a valid san configuration")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: toml::de::Error,
    },
    /// A field has an invalid value.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `targets[0].luns[1].size`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// CHAP credentials: a user name and a secret (12 to 16 bytes is what RFC
/// 7143 recommends; at least 1 byte is required).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Chap {
    /// CHAP_N the peer must present (or that the target presents).
    pub user: String,
    /// The shared secret.
    pub secret: String,
}

/// One LUN backed by an image file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LunConfig {
    /// LUN number (0..16383).
    pub id: u64,
    /// Image file; created sparse with `size` when missing.
    pub path: PathBuf,
    /// Size in bytes (a multiple of the 512-byte block), used to create.
    #[serde(default)]
    pub size: Option<u64>,
    /// Refuse writes.
    #[serde(default)]
    pub read_only: bool,
}

/// One target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The target's iSCSI name (iqn.... or eui....).
    pub name: String,
    /// TargetAlias sent at login.
    #[serde(default)]
    pub alias: Option<String>,
    /// Initiator names allowed to log in; empty means everyone.
    #[serde(default)]
    pub allowed_initiators: Vec<String>,
    /// CHAP the initiator must pass (one-way).
    #[serde(default)]
    pub chap: Option<Chap>,
    /// Credentials the target answers with when the initiator asks for
    /// mutual CHAP.
    #[serde(default)]
    pub mutual_chap: Option<Chap>,
    /// The logical units.
    #[serde(default)]
    pub luns: Vec<LunConfig>,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct SanConfig {
    /// Listening addresses, `host:port` (default `0.0.0.0:3260`).
    #[serde(default)]
    pub portals: Vec<String>,
    /// Directory for persistent-reservation state (default: beside the
    /// config file, `<config>.pr/`).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Seconds an idle connection may go without hearing from its
    /// initiator before the target pings it (NOP-In); an initiator that
    /// does not answer within as long again is dropped, so a dead host's
    /// session, tasks and SPC-2 reservation go away. 0 turns pings off.
    /// Default 15.
    #[serde(default)]
    pub keepalive_secs: Option<u64>,
    /// The targets.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

/// Whether `name` looks like an iSCSI name (RFC 3720 3.2.6).
pub fn valid_iscsi_name(name: &str) -> bool {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | ':'));
    ok_chars
        && name.len() <= 223
        && (name.starts_with("iqn.") || name.starts_with("eui.") || name.starts_with("naa."))
}

impl SanConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<SanConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        let cfg: SanConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Validates and writes the configuration atomically (temp file and
    /// rename).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate()?;
        let io = |source| ConfigError::Io {
            path: path.into(),
            source,
        };
        let text =
            toml::to_string_pretty(self).map_err(|e| invalid("(whole file)", e.to_string()))?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The portals to listen on.
    pub fn portals(&self) -> Vec<String> {
        if self.portals.is_empty() {
            vec!["0.0.0.0:3260".to_string()]
        } else {
            self.portals.clone()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, p) in self.portals.iter().enumerate() {
            if p.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    format!("portals[{i}]"),
                    format!("{p:?} is not an address:port"),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (t, target) in self.targets.iter().enumerate() {
            let f = |s: &str| format!("targets[{t}].{s}");
            if !valid_iscsi_name(&target.name) {
                return Err(invalid(
                    f("name"),
                    format!(
                        "{:?} is not an iSCSI name (iqn.YYYY-MM.domain:id, lower case)",
                        target.name
                    ),
                ));
            }
            if !names.insert(target.name.clone()) {
                return Err(invalid(
                    f("name"),
                    format!("{:?} appears twice", target.name),
                ));
            }
            for (a, ini) in target.allowed_initiators.iter().enumerate() {
                if ini.is_empty() {
                    return Err(invalid(
                        f(&format!("allowed_initiators[{a}]")),
                        "empty name",
                    ));
                }
            }
            for (which, chap) in [("chap", &target.chap), ("mutual_chap", &target.mutual_chap)] {
                if let Some(c) = chap {
                    if c.user.is_empty() || c.secret.is_empty() {
                        return Err(invalid(f(which), "user and secret must not be empty"));
                    }
                }
            }
            if target.mutual_chap.is_some() && target.chap.is_none() {
                return Err(invalid(f("mutual_chap"), "needs chap as well"));
            }
            let mut ids = std::collections::HashSet::new();
            for (l, lun) in target.luns.iter().enumerate() {
                let g = |s: &str| f(&format!("luns[{l}].{s}"));
                if lun.id > 16383 {
                    return Err(invalid(g("id"), "must be 0..16383"));
                }
                if !ids.insert(lun.id) {
                    return Err(invalid(g("id"), format!("LUN {} appears twice", lun.id)));
                }
                if lun.path.as_os_str().is_empty() {
                    return Err(invalid(g("path"), "empty"));
                }
                if let Some(s) = lun.size {
                    if s == 0 || s % 512 != 0 {
                        return Err(invalid(
                            g("size"),
                            format!("{s} is not a non-zero multiple of 512"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Where persistent reservations of a LUN are kept.
    pub fn pr_file(&self, config_path: &Path, target: &str, lun: u64) -> PathBuf {
        let dir = self.state_dir.clone().unwrap_or_else(|| {
            let mut p = config_path.as_os_str().to_owned();
            p.push(".pr");
            PathBuf::from(p)
        });
        let safe: String = target
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        dir.join(format!("{safe}-{lun}.pr"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_fields() {
        let ok = r#"
portals = ["127.0.0.1:3260"]
[[targets]]
name = "iqn.2026-01.dev.ferry:disk"
allowed_initiators = ["iqn.1994-05.com.redhat:a"]
chap = { user = "u", secret = "secretsecret" }
[[targets.luns]]
id = 0
path = "/tmp/x.img"
size = 1048576
"#;
        let cfg: SanConfig = toml::from_str(ok).expect("parse");
        cfg.validate().expect("valid");
        let mut bad = cfg.clone();
        bad.targets[0].luns[0].size = Some(1000);
        let e = bad.validate().expect_err("bad size").to_string();
        assert!(e.starts_with("targets[0].luns[0].size"), "{e}");
        let mut bad = cfg.clone();
        bad.targets[0].name = "Disk".into();
        assert!(bad
            .validate()
            .expect_err("bad name")
            .to_string()
            .starts_with("targets[0].name"));
        let mut bad = cfg;
        bad.portals = vec!["nowhere".into()];
        assert!(bad
            .validate()
            .expect_err("bad portal")
            .to_string()
            .starts_with("portals[0]"));
    }
}
