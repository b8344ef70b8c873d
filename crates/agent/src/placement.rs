//! Where a VM goes: a host that is up, not paused, a hypervisor, with
//! enough free memory and a CPU that can run the VM's; the VM's preferred
//! owners first, in their order; otherwise the host with the most free
//! memory (ties by name, so the choice is the same on every member).

use crate::resources::HostResources;
use ferry_cluster::state::{Host, HostRole, HostState};
use ferry_cpu::CpuModel;
use std::collections::BTreeMap;

/// What placement needs to know of a VM.
#[derive(Debug, Clone)]
pub struct VmNeeds<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its memory, MiB.
    pub memory_mib: u64,
    /// Its exact CPU, if computed already (a QEMU model name or a CPU not
    /// yet resolved runs anywhere).
    pub cpu_model: Option<&'a CpuModel>,
    /// Preferred owners, in order.
    pub preferred: &'a [String],
}

/// One host as placement sees it: its record and what its agent reported.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Its record in the cluster database.
    pub host: &'a Host,
    /// Its resources, or why its agent did not report them.
    pub resources: Result<&'a HostResources, String>,
}

/// No host can take the VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no host can run VM {vm}: {}", format_reasons(.reasons))]
pub struct NoHost {
    /// The VM.
    pub vm: String,
    /// Why each host was passed over.
    pub reasons: BTreeMap<String, String>,
}

fn format_reasons(reasons: &BTreeMap<String, String>) -> String {
    if reasons.is_empty() {
        return "the cluster has no hosts".into();
    }
    reasons
        .iter()
        .map(|(h, why)| format!("{h}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why `c` cannot run the VM, or its free memory if it can.
fn fit(vm: &VmNeeds<'_>, c: &Candidate<'_>) -> Result<u64, String> {
    match (c.host.role, c.host.state) {
        (HostRole::Witness, _) => return Err("a witness runs no VMs".into()),
        (_, HostState::Up) => {}
        (_, state) => return Err(format!("it is {state}")),
    }
    let r = c.resources.as_ref().map_err(|e| e.clone())?;
    if r.free_mib < vm.memory_mib {
        return Err(format!(
            "{} MiB free, the VM needs {} MiB",
            r.free_mib, vm.memory_mib
        ));
    }
    if let Some(model) = vm.cpu_model {
        let profile = r
            .cpu_profile
            .as_ref()
            .ok_or("its CPU profile is not known yet")?;
        ferry_cpu::check(model, profile).map_err(|e| e.to_string())?;
    }
    Ok(r.free_mib)
}

/// Chooses a host for `vm` among `candidates`.
pub fn place(vm: &VmNeeds<'_>, candidates: &[Candidate<'_>]) -> Result<String, NoHost> {
    let mut reasons = BTreeMap::new();
    let mut fitting = Vec::new();
    for c in candidates {
        match fit(vm, c) {
            Ok(free) => fitting.push((c.host.name.as_str(), free)),
            Err(why) => {
                reasons.insert(c.host.name.clone(), why);
            }
        }
    }
    if let Some(p) = vm
        .preferred
        .iter()
        .find(|p| fitting.iter().any(|(h, _)| h == p))
    {
        return Ok(p.clone());
    }
    fitting
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(h, _)| h.to_string())
        .ok_or_else(|| NoHost {
            vm: vm.name.to_string(),
            reasons,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_cpu::CpuProfile;
    use std::collections::BTreeSet;

    fn host(name: &str, state: HostState, role: HostRole) -> Host {
        Host {
            name: name.into(),
            networks: BTreeMap::new(),
            cpu_profile: serde_json::Value::Null,
            state,
            role,
            cert_sha256: None,
            cert_der_hex: None,
        }
    }

    fn profile(features: &[&str]) -> CpuProfile {
        CpuProfile {
            vendor: "GenuineIntel".into(),
            family: 6,
            model: 85,
            stepping: 4,
            model_id: "test".into(),
            level: 13,
            xlevel: 0x8000_0008,
            accel: "tcg".into(),
            features: features.iter().map(|f| f.to_string()).collect(),
            withheld: BTreeSet::new(),
        }
    }

    fn res(name: &str, free: u64, features: &[&str]) -> HostResources {
        HostResources {
            host: name.into(),
            mem_total_mib: 8192,
            mem_available_mib: 8192,
            vm_memory_mib: 0,
            free_mib: free,
            cpu_profile: Some(profile(features)),
            running: vec![],
            tls_dir: None,
        }
    }

    fn needs<'a>(memory_mib: u64, preferred: &'a [String]) -> VmNeeds<'a> {
        VmNeeds {
            name: "vm",
            memory_mib,
            cpu_model: None,
            preferred,
        }
    }

    /// Candidates whose agents all answered.
    fn reachable<'a>(pairs: &[(&'a Host, &'a HostResources)]) -> Vec<Candidate<'a>> {
        pairs
            .iter()
            .map(|&(host, r)| Candidate {
                host,
                resources: Ok(r),
            })
            .collect()
    }

    #[test]
    fn most_free_memory_wins_and_ties_go_by_name() {
        let (h1, h2, h3) = (
            host("h1", HostState::Up, HostRole::Hypervisor),
            host("h2", HostState::Up, HostRole::Hypervisor),
            host("h3", HostState::Up, HostRole::Hypervisor),
        );
        let (r1, r2, r3) = (
            res("h1", 1000, &[]),
            res("h2", 3000, &[]),
            res("h3", 3000, &[]),
        );
        let cands = reachable(&[(&h1, &r1), (&h2, &r2), (&h3, &r3)]);
        assert_eq!(place(&needs(512, &[]), &cands), Ok("h2".into()));
        assert_eq!(
            place(&needs(2000, &[]), &cands[..1]).map_err(|e| e.reasons["h1"].clone()),
            Err("1000 MiB free, the VM needs 2000 MiB".into())
        );
    }

    #[test]
    fn preferred_owners_come_first_in_order_when_they_fit() {
        let (h1, h2, h3) = (
            host("h1", HostState::Up, HostRole::Hypervisor),
            host("h2", HostState::Paused, HostRole::Hypervisor),
            host("h3", HostState::Up, HostRole::Hypervisor),
        );
        let (r1, r2, r3) = (
            res("h1", 4000, &[]),
            res("h2", 4000, &[]),
            res("h3", 600, &[]),
        );
        let cands = reachable(&[(&h1, &r1), (&h2, &r2), (&h3, &r3)]);
        let pref = vec!["h2".to_string(), "h3".to_string(), "h1".to_string()];
        // h2 is paused: the next preferred that fits.
        assert_eq!(place(&needs(512, &pref), &cands), Ok("h3".into()));
        // h3 lacks the memory: h1, also preferred.
        assert_eq!(place(&needs(1024, &pref), &cands), Ok("h1".into()));
        // A preferred host that is unknown is skipped.
        let pref = vec!["nope".to_string()];
        assert_eq!(place(&needs(512, &pref), &cands), Ok("h1".into()));
    }

    #[test]
    fn down_paused_witness_unreachable_and_cpu_mismatch_are_refused_with_reasons() {
        let hosts = [
            host("down", HostState::Down, HostRole::Hypervisor),
            host("paused", HostState::Paused, HostRole::Hypervisor),
            host("witness", HostState::Up, HostRole::Witness),
            host("silent", HostState::Up, HostRole::Hypervisor),
            host("oldcpu", HostState::Up, HostRole::Hypervisor),
            host("amd", HostState::Up, HostRole::Hypervisor),
        ];
        let old = res("oldcpu", 8000, &["sse2"]);
        let mut amd = res("amd", 8000, &["sse2", "avx2"]);
        if let Some(p) = amd.cpu_profile.as_mut() {
            p.vendor = "AuthenticAMD".into();
        }
        let any = res("x", 8000, &["sse2", "avx2"]);
        let cands = [
            Candidate {
                host: &hosts[0],
                resources: Ok(&any),
            },
            Candidate {
                host: &hosts[1],
                resources: Ok(&any),
            },
            Candidate {
                host: &hosts[2],
                resources: Ok(&any),
            },
            Candidate {
                host: &hosts[3],
                resources: Err("cannot reach its agent".into()),
            },
            Candidate {
                host: &hosts[4],
                resources: Ok(&old),
            },
            Candidate {
                host: &hosts[5],
                resources: Ok(&amd),
            },
        ];
        let model = CpuModel::of_profile(&profile(&["sse2", "avx2"]));
        let vm = VmNeeds {
            cpu_model: Some(&model),
            ..needs(256, &[])
        };
        let err = place(&vm, &cands).expect_err("no host fits");
        assert_eq!(err.reasons["down"], "it is down");
        assert_eq!(err.reasons["paused"], "it is paused");
        assert_eq!(err.reasons["witness"], "a witness runs no VMs");
        assert_eq!(err.reasons["silent"], "cannot reach its agent");
        assert!(err.reasons["oldcpu"].contains("avx2"), "{err}");
        assert!(err.reasons["amd"].contains("AuthenticAMD"), "{err}");
        assert!(
            err.to_string().starts_with("no host can run VM vm: amd: "),
            "{err}"
        );
        // Without a computed CPU, the same hosts with room are fine.
        assert_eq!(place(&needs(256, &[]), &cands), Ok("amd".into()));
    }
}
