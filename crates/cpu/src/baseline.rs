//! Baselines: the CPU every host of a set can give, or a named x86-64 level.

use crate::model::CpuModel;
use crate::profile::CpuProfile;
use std::collections::BTreeSet;

/// Why no baseline could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaselineError {
    /// No profiles given.
    #[error("a baseline needs at least one host profile")]
    Empty,
    /// Hosts of two vendors.
    #[error("hosts mix CPU vendors ({a} and {b}); a VM cannot move between them")]
    MixedVendors {
        /// One vendor.
        a: String,
        /// The other.
        b: String,
    },
    /// A level nobody defined.
    #[error("unknown CPU level {0:?}; known: x86-64-v2, x86-64-v2-AES, x86-64-v3, x86-64-v4")]
    UnknownLevel(String),
    /// The host cannot offer the level.
    #[error("this host cannot offer {level}: it lacks {}", .missing.iter().cloned().collect::<Vec<_>>().join(", "))]
    LevelMissing {
        /// The level.
        level: String,
        /// Features it lacks.
        missing: BTreeSet<String>,
    },
}

/// The named levels, each with the features it adds to the one before.
pub const LEVELS: &[(&str, &[&str])] = &[
    (
        // Every x86-64 CPU: the platform features a 64-bit kernel needs.
        "x86-64",
        &[
            "fpu", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge",
            "mca", "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2", "syscall",
            "nx", "lm",
        ],
    ),
    (
        "x86-64-v2",
        &[
            "cx16", "lahf-lm", "popcnt", "pni", "sse4.1", "sse4.2", "ssse3",
        ],
    ),
    ("x86-64-v2-AES", &["aes", "pclmulqdq"]),
    (
        "x86-64-v3",
        &[
            "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave",
        ],
    ),
    (
        "x86-64-v4",
        &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"],
    ),
];

/// The features of a named level.
fn level_features(name: &str) -> Result<BTreeSet<String>, BaselineError> {
    let upto = LEVELS
        .iter()
        .position(|(n, _)| *n == name)
        .filter(|&i| i > 0)
        .ok_or_else(|| BaselineError::UnknownLevel(name.to_string()))?;
    // v3 includes v2-AES's features, as the psABI's v3 does.
    Ok(LEVELS[..=upto]
        .iter()
        .flat_map(|(_, f)| f.iter().map(|s| s.to_string()))
        .collect())
}

/// The CPU every host in `hosts` can give: same vendor required; features
/// intersected; the oldest family/model/stepping.
pub fn baseline(hosts: &[CpuProfile]) -> Result<CpuModel, BaselineError> {
    let first = hosts.first().ok_or(BaselineError::Empty)?;
    let mut m = CpuModel::of_profile(first);
    for h in &hosts[1..] {
        if h.vendor != m.vendor {
            return Err(BaselineError::MixedVendors {
                a: m.vendor.clone(),
                b: h.vendor.clone(),
            });
        }
        m.features = m.features.intersection(&h.features).cloned().collect();
        if (h.family, h.model, h.stepping) < (m.family, m.model, m.stepping) {
            (m.family, m.model, m.stepping) = (h.family, h.model, h.stepping);
        }
        m.level = m.level.max(h.level);
        m.xlevel = m.xlevel.max(h.xlevel);
    }
    Ok(m)
}

/// The named level `name` on hosts like `host` (its vendor and identity):
/// exactly the level's features, no more.
pub fn level(name: &str, host: &CpuProfile) -> Result<CpuModel, BaselineError> {
    let features = level_features(name)?;
    let missing: BTreeSet<String> = features.difference(&host.features).cloned().collect();
    if !missing.is_empty() {
        return Err(BaselineError::LevelMissing {
            level: name.to_string(),
            missing,
        });
    }
    Ok(CpuModel {
        features,
        ..CpuModel::of_profile(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{check, CpuModel};
    use crate::profile::tests::{recorded, tcg_max};
    use crate::profile::HostCpuConfig;

    fn withholding(f: &[&str]) -> CpuProfile {
        tcg_max().masked(&HostCpuConfig {
            withhold: f.iter().map(|s| s.to_string()).collect(),
            vendor: None,
        })
    }

    #[test]
    fn baseline_is_the_intersection_and_runs_on_every_host() {
        let a = withholding(&["avx2"]);
        let b = withholding(&["aes", "sha-ni"]);
        let m = baseline(&[a.clone(), b.clone()]).expect("baseline");
        for f in ["avx2", "aes", "sha-ni"] {
            assert!(!m.features.contains(f), "{f}");
        }
        assert!(m.features.contains("sse4.2"));
        assert_eq!(check(&m, &a), Ok(()));
        assert_eq!(check(&m, &b), Ok(()));
    }

    #[test]
    fn mixed_vendors_are_refused_naming_both() {
        let intel = tcg_max().masked(&HostCpuConfig {
            withhold: vec![],
            vendor: Some("GenuineIntel".into()),
        });
        let err = baseline(&[tcg_max(), intel]).expect_err("mixed");
        assert!(
            err.to_string().contains("AuthenticAMD and GenuineIntel"),
            "{err}"
        );
        assert_eq!(baseline(&[]), Err(BaselineError::Empty));
    }

    fn skylake() -> CpuProfile {
        recorded(include_str!("../testdata/tcg-Skylake-Client-static.json"))
    }
    fn cascadelake() -> CpuProfile {
        recorded(include_str!(
            "../testdata/tcg-Cascadelake-Server-static.json"
        ))
    }

    #[test]
    fn recorded_intel_generations_meet_at_the_older_one() {
        let (old, new) = (skylake(), cascadelake());
        assert_eq!(old.vendor, "GenuineIntel");
        let m = baseline(&[new.clone(), old.clone()]).expect("baseline");
        assert!(new.features.contains("avx512f") && !m.features.contains("avx512f"));
        assert!(m.features.contains("avx2"));
        assert_eq!(check(&m, &old), Ok(()));
        assert_eq!(check(&m, &new), Ok(()));
        assert!(check(&CpuModel::of_profile(&new), &old).is_err());
        assert_eq!(
            (m.family, m.model),
            (old.family.min(new.family), old.model.min(new.model))
        );
        assert!(level("x86-64-v3", &old).is_ok());
        assert!(level("x86-64-v4", &new).is_ok());
    }

    #[test]
    fn recorded_models_of_two_vendors_do_not_mix_and_old_ones_miss_levels() {
        let epyc = recorded(include_str!("../testdata/tcg-EPYC-static.json"));
        let err = baseline(&[epyc, skylake()]).expect_err("mixed");
        assert!(matches!(err, BaselineError::MixedVendors { .. }), "{err}");
        let qemu64 = recorded(include_str!("../testdata/tcg-qemu64-static.json"));
        let err = level("x86-64-v2", &qemu64).expect_err("qemu64 is below v2");
        assert!(err.to_string().contains("sse4.2"), "{err}");
    }

    #[test]
    fn named_levels_build_on_each_other() {
        let host = tcg_max();
        let v2 = level("x86-64-v2", &host).expect("v2");
        let v3 = level("x86-64-v3", &host).expect("v3");
        assert!(v2.features.contains("sse4.2") && !v2.features.contains("aes"));
        assert!(v3.features.is_superset(&v2.features) && v3.features.contains("aes"));
        assert!(
            !v3.features.contains("sha-ni"),
            "exactly the level, no more"
        );
        // TCG's max has no AVX-512.
        let err = level("x86-64-v4", &host).expect_err("v4");
        assert!(err.to_string().contains("avx512f"), "{err}");
        assert!(level("x86-64-v9", &host).is_err());
        assert!(
            level("x86-64", &host).is_err(),
            "the base set is not a level of its own"
        );
    }
}
