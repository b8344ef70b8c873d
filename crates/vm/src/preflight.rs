//! Host-side checks run before a VM starts, so that a bad spec or a host that
//! lacks something fails with one clear line instead of a dead QEMU.

use crate::{net, VmError};
use ferry_qemu::{Accel, QemuBinary};
use ferry_spec::{NicAttachment, VmSpec};
use std::fs::OpenOptions;
use std::path::Path;

/// Runs every check; the first failure is returned.
pub fn check(spec: &VmSpec, qemu: &QemuBinary, accel: Accel) -> Result<(), VmError> {
    check_boot_files(spec)?;
    check_disks(spec)?;
    check_cpu(spec, qemu, accel)?;
    if !qemu.machine_types.iter().any(|m| m == &spec.machine) {
        return Err(VmError::UnknownMachine {
            machine: spec.machine.clone(),
        });
    }
    check_memory(spec)?;
    check_nics(spec)
}

fn guest_hint(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "vmlinuz" || name == "initramfs.img" {
        "; build the test guest with `ferry guest build`".into()
    } else {
        String::new()
    }
}

fn check_boot_files(spec: &VmSpec) -> Result<(), VmError> {
    let mut files = vec![("kernel", &spec.boot.kernel)];
    if let Some(initrd) = &spec.boot.initrd {
        files.push(("initrd", initrd));
    }
    for (what, path) in files {
        if !path.is_file() {
            return Err(VmError::MissingFile {
                what: what.into(),
                path: path.clone(),
                hint: guest_hint(path),
            });
        }
        std::fs::File::open(path).map_err(|e| VmError::io(path, e))?;
    }
    Ok(())
}

fn check_disks(spec: &VmSpec) -> Result<(), VmError> {
    for (i, disk) in spec.disks.iter().enumerate() {
        if disk.iscsi_url().is_some() {
            // The block service logs in at start and says what is wrong;
            // here only the secrets file the spec names must exist.
            if let Some(s) = disk.secrets.as_ref().filter(|s| !s.exists()) {
                return Err(VmError::MissingFile {
                    what: format!("iSCSI secrets file (disks[{i}].secrets)"),
                    path: s.clone(),
                    hint: String::new(),
                });
            }
            continue;
        }
        if !disk.path.exists() {
            return Err(VmError::MissingFile {
                what: format!("disk image (disks[{i}])"),
                path: disk.path.clone(),
                hint: "; create one with `qemu-img create -f raw FILE SIZE`".into(),
            });
        }
        let mode = if disk.readonly {
            "read-only"
        } else {
            "read-write"
        };
        let opened = OpenOptions::new()
            .read(true)
            .write(!disk.readonly)
            .open(&disk.path);
        if let Err(e) = opened {
            let reason = if e.kind() == std::io::ErrorKind::PermissionDenied && !disk.readonly {
                format!("{e}; make the file writable or set `readonly = true` for disks[{i}]")
            } else {
                e.to_string()
            };
            return Err(VmError::DiskAccess {
                path: disk.path.clone(),
                mode,
                reason,
            });
        }
        // Root ignores permission bits; a read-only mount or immutable file still refuses.
        if !disk.readonly && is_readonly_file(&disk.path) {
            return Err(VmError::DiskAccess {
                path: disk.path.clone(),
                mode,
                reason: format!("the file is read-only; make it writable or set `readonly = true` for disks[{i}]"),
            });
        }
    }
    Ok(())
}

/// True when the file's mode has no write bit at all (root would bypass it,
/// but a user who chmod-ed an image read-only meant it).
fn is_readonly_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o222 == 0)
}

fn check_cpu(spec: &VmSpec, qemu: &QemuBinary, accel: Accel) -> Result<(), VmError> {
    if let Some(model) = &spec.cpu_model {
        return crate::cpu::check_host_can_run(&spec.name, model, qemu, accel);
    }
    let builtin = ["host", "compatible", "max", "base"];
    if builtin.contains(&spec.cpu.as_str()) || qemu.cpu_models.iter().any(|m| m == &spec.cpu) {
        Ok(())
    } else {
        Err(VmError::UnknownCpuModel {
            model: spec.cpu.clone(),
        })
    }
}

/// MemAvailable from /proc/meminfo, in MiB.
pub fn host_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn check_memory(spec: &VmSpec) -> Result<(), VmError> {
    if let Some(available_mib) = host_available_mib() {
        if spec.memory_mib > available_mib {
            return Err(VmError::NotEnoughMemory {
                name: spec.name.clone(),
                wanted_mib: spec.memory_mib,
                available_mib,
            });
        }
    }
    Ok(())
}

fn check_nics(spec: &VmSpec) -> Result<(), VmError> {
    for (index, nic) in spec.nics.iter().enumerate() {
        match &nic.attachment {
            NicAttachment::Bridge(bridge) if !net::bridge_exists(bridge) => {
                return Err(VmError::BridgeMissing {
                    bridge: bridge.clone(),
                    index,
                })
            }
            NicAttachment::Tap(tap) if !net::link_exists(tap) => {
                return Err(VmError::TapMissing {
                    tap: tap.clone(),
                    index,
                })
            }
            _ => {}
        }
    }
    Ok(())
}
