//! The guest's CPU on this host: this host's profile, the VM's exact CPU
//! computed once from its spec, and the check that this host can give it.

use crate::VmError;
use ferry_cpu::{CpuModel, CpuProfile, HostCpuConfig};
use ferry_qemu::{cpuexp, Accel, QemuBinary};
use ferry_spec::{CpuBaseline, VmSpec};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// This host's configuration file: `$FERRY_HOST_CONFIG` or
/// `/etc/ferry/host.toml`.
pub fn host_config_path() -> PathBuf {
    std::env::var_os("FERRY_HOST_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/etc/ferry/host.toml".into())
}

/// What this host offers guests under `accel`, masked by its configuration.
pub fn host_profile(qemu: &QemuBinary, accel: Accel) -> Result<CpuProfile, VmError> {
    host_profile_with(qemu, accel, &host_config_path())
}

/// What this host offers guests under `accel`, masked by the `[cpu]` table
/// of the host configuration file `config` (none if it does not exist).
pub fn host_profile_with(
    qemu: &QemuBinary,
    accel: Accel,
    config: &Path,
) -> Result<CpuProfile, VmError> {
    // One start both computes a VM's CPU and checks the host can give it,
    // and a node agent checks every VM it places: what QEMU offers (a QEMU
    // launch) is read once per process and binary; the host configuration's
    // mask is applied afresh each time, so an edit takes effect at once.
    type Cached = Option<(Accel, PathBuf, CpuProfile)>;
    static OFFERED: Mutex<Cached> = Mutex::new(None);
    let hit = OFFERED.lock().ok().and_then(|last| {
        last.as_ref()
            .filter(|(a, bin, _)| *a == accel && *bin == qemu.path)
            .map(|(_, _, p)| p.clone())
    });
    let cpu_err = |detail: String| VmError::Cpu { detail };
    let offered = match hit {
        Some(p) => p,
        None => {
            let expansion = cpuexp::static_expansion(qemu, accel, cpuexp::widest_model(accel))
                .map_err(cpu_err)?;
            let p = CpuProfile::from_static_expansion(&expansion, &accel.to_string())
                .map_err(|e| cpu_err(e.to_string()))?;
            if let Ok(mut last) = OFFERED.lock() {
                *last = Some((accel, qemu.path.clone(), p.clone()));
            }
            p
        }
    };
    let mask = HostCpuConfig::load(config).map_err(|e| cpu_err(e.to_string()))?;
    Ok(offered.masked(&mask))
}

fn read_profile(path: &PathBuf) -> Result<CpuProfile, VmError> {
    let text = std::fs::read_to_string(path).map_err(|e| VmError::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| VmError::Cpu {
        detail: format!("host profile {} is not JSON: {e}", path.display()),
    })?;
    // Accept the whole `ferry --json host cpu` output or the bare profile.
    serde_json::from_value(v.get("profile").cloned().unwrap_or(v)).map_err(|e| VmError::Cpu {
        detail: format!("{} is not a CPU profile: {e}", path.display()),
    })
}

/// Computes the exact CPU of a `host` or `compatible` VM the first time it
/// starts and records it in the spec (which is kept with the VM and given
/// unchanged to every host it moves to). A QEMU model name stays as it is.
pub fn resolve(spec: &mut VmSpec, qemu: &QemuBinary, accel: Accel) -> Result<(), VmError> {
    if spec.cpu_model.is_some() {
        return Ok(());
    }
    let model = match (spec.cpu.as_str(), &spec.cpu_baseline) {
        ("host", _) => CpuModel::of_profile(&host_profile(qemu, accel)?),
        ("compatible", Some(CpuBaseline::Level(name))) => {
            ferry_cpu::level(name, &host_profile(qemu, accel)?).map_err(|e| VmError::Cpu {
                detail: e.to_string(),
            })?
        }
        ("compatible", Some(CpuBaseline::Hosts(files))) => {
            let profiles = files
                .iter()
                .map(read_profile)
                .collect::<Result<Vec<_>, _>>()?;
            ferry_cpu::baseline(&profiles).map_err(|e| VmError::Cpu {
                detail: e.to_string(),
            })?
        }
        _ => return Ok(()),
    };
    spec.cpu_model = Some(model);
    Ok(())
}

/// Refuses to run `model` on this host if it lacks a feature or is another
/// vendor, naming what is missing.
pub fn check_host_can_run(
    name: &str,
    model: &CpuModel,
    qemu: &QemuBinary,
    accel: Accel,
) -> Result<(), VmError> {
    let profile = host_profile(qemu, accel)?;
    ferry_cpu::check(model, &profile).map_err(|why| VmError::CpuIncompatible {
        name: name.to_string(),
        why,
    })
}
