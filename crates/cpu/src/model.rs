//! The exact CPU a VM sees, and the check that a host can give it.

use crate::profile::CpuProfile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A guest-visible CPU, independent of the host it runs on: computed once
/// for a VM and used unchanged wherever it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuModel {
    /// CPUID vendor string.
    pub vendor: String,
    /// CPUID family.
    pub family: u64,
    /// CPUID model.
    pub model: u64,
    /// CPUID stepping.
    pub stepping: u64,
    /// Lowest CPUID level.
    pub level: u64,
    /// Lowest extended CPUID level.
    pub xlevel: u64,
    /// Every feature the guest sees, by QEMU's names.
    pub features: BTreeSet<String>,
}

/// Why a host cannot run a VM's CPU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    /// The host is another vendor.
    #[error("the VM's CPU is {vm} but the host's is {host}")]
    Vendor {
        /// The VM's vendor.
        vm: String,
        /// The host's vendor.
        host: String,
    },
    /// The host lacks features the VM sees.
    #[error("the host does not offer {}, which the VM's CPU has", .0.iter().cloned().collect::<Vec<_>>().join(", "))]
    Missing(BTreeSet<String>),
}

impl CpuModel {
    /// Everything `host` offers (a VM with `cpu = "host"`).
    pub fn of_profile(host: &CpuProfile) -> Self {
        CpuModel {
            vendor: host.vendor.clone(),
            family: host.family,
            model: host.model,
            stepping: host.stepping,
            level: host.level,
            xlevel: host.xlevel,
            features: host.features.clone(),
        }
    }

    /// QEMU's `-cpu` argument: the featureless `base` model, identity and
    /// every feature spelled out, and `enforce` so that a host lacking one
    /// refuses to start the VM instead of hiding it.
    pub fn qemu_arg(&self) -> String {
        let mut a = format!(
            "base,vendor={},family={},model={},stepping={},min-level={},min-xlevel={}",
            self.vendor, self.family, self.model, self.stepping, self.level, self.xlevel
        );
        for f in &self.features {
            a.push(',');
            a.push_str(f);
            a.push_str("=on");
        }
        a.push_str(",enforce");
        a
    }
}

/// Can `host` run a VM whose CPU is `vm`? Same vendor, and every feature the
/// VM sees offered.
pub fn check(vm: &CpuModel, host: &CpuProfile) -> Result<(), Incompatible> {
    if vm.vendor != host.vendor {
        return Err(Incompatible::Vendor {
            vm: vm.vendor.clone(),
            host: host.vendor.clone(),
        });
    }
    let missing: BTreeSet<String> = vm.features.difference(&host.features).cloned().collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Incompatible::Missing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::tcg_max;
    use crate::profile::HostCpuConfig;

    #[test]
    fn a_host_vm_moves_only_to_hosts_offering_as_much() {
        let full = tcg_max();
        let vm = CpuModel::of_profile(&full);
        assert_eq!(check(&vm, &full), Ok(()));
        let older = tcg_max().masked(&HostCpuConfig {
            withhold: vec!["avx2".into(), "aes".into()],
            vendor: None,
        });
        let err = check(&vm, &older).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "the host does not offer aes, avx2, which the VM's CPU has"
        );
        let intel = tcg_max().masked(&HostCpuConfig {
            withhold: vec![],
            vendor: Some("GenuineIntel".into()),
        });
        let err = check(&vm, &intel).expect_err("vendor");
        assert!(
            err.to_string().contains("AuthenticAMD") && err.to_string().contains("GenuineIntel")
        );
    }

    #[test]
    fn the_qemu_argument_names_every_feature_and_enforces() {
        let arg = CpuModel::of_profile(&tcg_max()).qemu_arg();
        assert!(arg.starts_with("base,vendor=AuthenticAMD,"));
        assert!(arg.contains(",avx2=on,") && arg.ends_with(",enforce"));
    }
}
