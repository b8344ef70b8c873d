//! What a host has room for: memory from /proc/meminfo minus what its
//! running VMs were given, and its CPU profile.

use ferry_cpu::CpuProfile;
use serde::{Deserialize, Serialize};

/// A host's resources as its agent reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResources {
    /// The host.
    pub host: String,
    /// MemTotal, MiB.
    pub mem_total_mib: u64,
    /// MemAvailable, MiB.
    pub mem_available_mib: u64,
    /// Memory of the VMs running here, MiB.
    pub vm_memory_mib: u64,
    /// What a new VM may have, MiB: MemTotal minus the running VMs'
    /// memory, and never more than MemAvailable.
    pub free_mib: u64,
    /// Its CPU profile, once known (reading it takes a QEMU launch).
    pub cpu_profile: Option<CpuProfile>,
    /// The VMs running here.
    pub running: Vec<String>,
    /// Where this host's cluster credentials are: its QEMU loads them to
    /// secure migration streams (a path on this host, which a source
    /// reaches as it reaches the rest of the destination today: the hosts
    /// share a filesystem).
    #[serde(default)]
    pub tls_dir: Option<std::path::PathBuf>,
}

/// `MemTotal` and `MemAvailable` from the text of /proc/meminfo, in MiB.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some(kib / 1024)
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// Free memory for a new VM, MiB.
pub fn free_mib(total: u64, available: u64, vm_memory: u64) -> u64 {
    total.saturating_sub(vm_memory).min(available)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_and_counts_running_vms() {
        let text = "MemTotal:        8048576 kB\nMemFree:  100 kB\nMemAvailable:    4024288 kB\n";
        assert_eq!(parse_meminfo(text), Some((7859, 3929)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n"), None);
        assert_eq!(free_mib(8000, 6000, 1000), 6000, "bounded by MemAvailable");
        assert_eq!(free_mib(8000, 7900, 3000), 5000, "VMs' memory is reserved");
        assert_eq!(free_mib(1000, 900, 3000), 0);
    }
}
