//! Finding, downloading and unpacking Debian's cloud kernel package.

use crate::GuestError;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The meta-package whose dependency names the current versioned kernel.
pub const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Modules the guest loads, before their dependencies are added.
pub const WANTED_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "button", "evdev"];

pub(crate) fn run(cmd: &mut Command) -> Result<String, GuestError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| GuestError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(GuestError::CommandFailed {
            command: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The versioned package (`linux-image-6.1.0-NN-cloud-amd64`) the meta-package
/// depends on now. Refreshes apt's lists once if apt knows no such package.
pub fn resolve_package() -> Result<String, GuestError> {
    let find = || -> Result<Option<String>, GuestError> {
        let text =
            run(Command::new("apt-cache").args(["depends", META_PACKAGE])).unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_string))
    };
    if let Some(pkg) = find()? {
        return Ok(pkg);
    }
    tracing::info!("apt knows no {META_PACKAGE}; running apt-get update");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    find()?.ok_or(GuestError::NoKernelPackage)
}

/// Downloads `pkg` into `cache` unless a `.deb` of it is already there.
pub fn download(pkg: &str, cache: &Path) -> Result<PathBuf, GuestError> {
    let existing = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
    };
    if let Some(deb) = existing(cache) {
        return Ok(deb);
    }
    tracing::info!("downloading {pkg} with apt-get download");
    run(Command::new("apt-get")
        .arg("download")
        .arg(pkg)
        .current_dir(cache))?;
    existing(cache).ok_or_else(|| GuestError::CommandFailed {
        command: format!("apt-get download {pkg}"),
        stderr: "no .deb appeared".into(),
    })
}

/// An unpacked kernel package.
pub struct UnpackedKernel {
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` inside the unpacked tree.
    pub modules_dir: PathBuf,
}

/// Unpacks the `.deb` (once) and generates `modules.dep` with depmod.
pub fn unpack(deb: &Path, pkg: &str, cache: &Path) -> Result<UnpackedKernel, GuestError> {
    let release = pkg.trim_start_matches("linux-image-").to_string();
    let root = cache.join(pkg);
    let modules_dir = root.join("lib/modules").join(&release);
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.exists() {
        let tmp = cache.join(format!("{pkg}.unpacking"));
        let _ = std::fs::remove_dir_all(&tmp);
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root).map_err(|e| GuestError::io(&root, e))?;
    }
    if !modules_dir.join("modules.dep").exists() {
        run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    }
    if !vmlinuz.exists() {
        return Err(GuestError::MissingInPackage(vmlinuz));
    }
    Ok(UnpackedKernel {
        release,
        vmlinuz,
        modules_dir,
    })
}

/// Module files to load, dependencies first, skipping built-in ones.
/// Paths are relative to the modules directory.
pub fn resolve_modules(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<String>, GuestError> {
    let dep_path = modules_dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_path).map_err(|e| GuestError::io(&dep_path, e))?;
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in text.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let list = rest.split_whitespace().map(str::to_string).collect();
        deps.insert(module_name(path), (path.to_string(), list));
    }
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for name in wanted {
        let Some((path, list)) = deps.get(*name) else {
            if builtin.lines().any(|l| module_name(l) == *name) {
                continue;
            }
            return Err(GuestError::ModuleNotFound(name.to_string()));
        };
        // modules.dep lists the full transitive closure, deepest last.
        for dep in list.iter().rev().chain(std::iter::once(path)) {
            if seen.insert(dep.clone()) {
                order.push(dep.clone());
            }
        }
    }
    Ok(order)
}

/// `kernel/drivers/net/virtio_net.ko[.xz]` → `virtio_net`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let base = file.split(".ko").next().unwrap_or(file);
    base.replace('-', "_")
}

/// Reads a module file, decompressing `.ko.xz`/`.ko.zst` since busybox's
/// insmod cannot.
pub fn read_module(modules_dir: &Path, rel: &str) -> Result<Vec<u8>, GuestError> {
    let path = modules_dir.join(rel);
    let decompress = |tool: &str| -> Result<Vec<u8>, GuestError> {
        let out = Command::new(tool)
            .arg("-dc")
            .arg(&path)
            .output()
            .map_err(|source| GuestError::Spawn {
                command: format!("{tool} -dc {}", path.display()),
                source,
            })?;
        if !out.status.success() {
            return Err(GuestError::CommandFailed {
                command: format!("{tool} -dc {}", path.display()),
                stderr: String::from_utf8_lossy(&out.stderr).into(),
            });
        }
        Ok(out.stdout)
    };
    if rel.ends_with(".xz") {
        decompress("xz")
    } else if rel.ends_with(".zst") {
        decompress("zstd")
    } else {
        std::fs::read(&path).map_err(|e| GuestError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_dependencies_first_and_skips_builtins() {
        let dir = std::env::temp_dir().join(format!("ferry-moddep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/virtio.ko: kernel/virtio_ring.ko\nkernel/virtio_ring.ko:\n\
             kernel/virtio_net.ko.xz: kernel/net_failover.ko kernel/failover.ko kernel/virtio.ko kernel/virtio_ring.ko\n\
             kernel/net_failover.ko: kernel/failover.ko\nkernel/failover.ko:\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/button.ko\n").unwrap();
        let order = resolve_modules(&dir, &["virtio_net", "button", "virtio"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/virtio_ring.ko",
                "kernel/virtio.ko",
                "kernel/failover.ko",
                "kernel/net_failover.ko",
                "kernel/virtio_net.ko.xz"
            ]
        );
        assert!(matches!(
            resolve_modules(&dir, &["nope"]),
            Err(GuestError::ModuleNotFound(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
