//! A host's CPU profile: what its accelerator can give a guest.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Problems reading a profile or a host's CPU configuration.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// QEMU's answer was not a CPU model expansion.
    #[error("QEMU's CPU model expansion is malformed: {0}")]
    Malformed(String),
    /// The host configuration file could not be read.
    #[error("cannot read host configuration {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host configuration file is not valid.
    #[error("host configuration {path} is not valid: {message}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What a host's CPU offers guests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuProfile {
    /// CPUID vendor string, e.g. `GenuineIntel`, `AuthenticAMD`.
    pub vendor: String,
    /// CPUID family.
    pub family: u64,
    /// CPUID model.
    pub model: u64,
    /// CPUID stepping.
    pub stepping: u64,
    /// The model name string.
    pub model_id: String,
    /// Lowest CPUID level a guest needs for these features.
    pub level: u64,
    /// Lowest extended CPUID level.
    pub xlevel: u64,
    /// Accelerator the profile was read under (`tcg`, `kvm`).
    pub accel: String,
    /// Features a guest can be given, by QEMU's names.
    pub features: BTreeSet<String>,
    /// Features this host withholds by configuration (already removed from
    /// `features`), so the profile says why they are absent.
    #[serde(default)]
    pub withheld: BTreeSet<String>,
}

fn field<'a>(props: &'a Value, key: &str) -> Result<&'a Value, ProfileError> {
    props
        .get(key)
        .ok_or_else(|| ProfileError::Malformed(format!("no {key:?} property")))
}

fn int(props: &Value, key: &str) -> Result<u64, ProfileError> {
    field(props, key)?
        .as_u64()
        .ok_or_else(|| ProfileError::Malformed(format!("{key:?} is not a number")))
}

impl CpuProfile {
    /// Builds a profile from the `return` of QMP
    /// `query-cpu-model-expansion` with `type: static`.
    pub fn from_static_expansion(ret: &Value, accel: &str) -> Result<Self, ProfileError> {
        let props = ret
            .get("model")
            .and_then(|m| m.get("props"))
            .filter(|p| p.is_object())
            .ok_or_else(|| ProfileError::Malformed("no model.props object".into()))?;
        let text = |key: &str| -> Result<String, ProfileError> {
            field(props, key)?
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| ProfileError::Malformed(format!("{key:?} is not a string")))
        };
        let features = props
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(CpuProfile {
            vendor: text("vendor")?,
            family: int(props, "family")?,
            model: int(props, "model")?,
            stepping: int(props, "stepping")?,
            model_id: text("model-id").unwrap_or_default(),
            level: int(props, "min-level")?,
            xlevel: int(props, "min-xlevel")?,
            accel: accel.to_string(),
            features,
            withheld: BTreeSet::new(),
        })
    }

    /// A stable digest of the profile: equal profiles, equal digests.
    pub fn digest(&self) -> String {
        // Struct fields serialise in a fixed order and sets sorted.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let hash = Sha256::digest(&canonical);
        hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// This profile as the host advertises it under `config`.
    pub fn masked(mut self, config: &HostCpuConfig) -> Self {
        for f in &config.withhold {
            if self.features.remove(f) {
                self.withheld.insert(f.clone());
            }
        }
        if let Some(v) = &config.vendor {
            self.vendor = v.clone();
        }
        self
    }
}

/// A host's CPU configuration: `[cpu]` in its host configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCpuConfig {
    /// Features this host must not offer guests (to emulate older hardware,
    /// or to keep a feature out of the cluster's baseline).
    #[serde(default)]
    pub withhold: Vec<String>,
    /// Present this vendor instead of the real one (lab only: a second
    /// vendor on one machine).
    #[serde(default)]
    pub vendor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostConfigFile {
    #[serde(default)]
    cpu: HostCpuConfig,
}

impl HostCpuConfig {
    /// Reads `[cpu]` from a host configuration file; a missing file means no
    /// mask.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ProfileError::ReadConfig {
                    path: path.into(),
                    source,
                })
            }
        };
        let file: HostConfigFile = toml::from_str(&text).map_err(|e| ProfileError::BadConfig {
            path: path.into(),
            message: e.message().to_string(),
        })?;
        Ok(file.cpu)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// QEMU 10.0's static expansion of `max` under TCG, as recorded here.
    pub(crate) fn tcg_max() -> CpuProfile {
        recorded(include_str!("../testdata/tcg-max-static.json"))
    }

    /// A recorded static expansion (QEMU 10.0, TCG) as a profile.
    pub(crate) fn recorded(json: &str) -> CpuProfile {
        let v: Value = serde_json::from_str(json).expect("test data");
        CpuProfile::from_static_expansion(&v, "tcg").expect("profile")
    }

    #[test]
    fn reads_a_recorded_expansion() {
        let p = tcg_max();
        assert_eq!(p.vendor, "AuthenticAMD");
        assert!(p.features.contains("avx2") && p.features.contains("sse4.2"));
        assert!(
            !p.features.contains("avx512f"),
            "false props are not features"
        );
        assert!(!p.features.iter().any(|f| f == "vendor" || f == "family"));
        assert_eq!(p.digest(), tcg_max().digest());
    }

    #[test]
    fn a_mask_withholds_and_changes_the_digest() {
        let cfg: HostConfigFile =
            toml::from_str("[cpu]\nwithhold = [\"avx2\", \"aes\"]\n").expect("toml");
        let p = tcg_max().masked(&cfg.cpu);
        assert!(!p.features.contains("avx2") && !p.features.contains("aes"));
        assert!(p.withheld.contains("avx2"));
        assert_ne!(p.digest(), tcg_max().digest());
    }

    #[test]
    fn malformed_expansions_and_configs_are_named() {
        let err = CpuProfile::from_static_expansion(&serde_json::json!({"model": {}}), "tcg")
            .expect_err("malformed");
        assert!(err.to_string().contains("model.props"), "{err}");
        let err = toml::from_str::<HostConfigFile>("[cpu]\nwithold = []\n").expect_err("typo");
        assert!(err.to_string().contains("withold"), "{err}");
    }
}
