//! Assembles the test guest from the kernel package, busybox, `/init` and the
//! workload binary, and records what went into it.

use crate::cpio::{write_atomic, CpioWriter};
use crate::kernel;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The guest's `/init`, kept beside this file as a shell script.
const INIT_SCRIPT: &str = include_str!("init.sh");
/// Bumped whenever the initramfs layout changes, so caches are rebuilt.
const LAYOUT_VERSION: u32 = 1;
/// Name of the file that records a finished build.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why the guest could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// A helper program could not be started.
    #[error("cannot run `{command}` (is it installed? scripts/install-deps installs it)")]
    Spawn {
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A helper program failed.
    #[error("`{command}` failed: {stderr}")]
    CommandFailed {
        /// The command.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// apt knows no cloud kernel, even after an update.
    #[error(
        "apt knows no {} package; check /etc/apt/sources.list",
        kernel::META_PACKAGE
    )]
    NoKernelPackage,
    /// The kernel package lacks a file the guest needs.
    #[error("kernel package has no {0}")]
    MissingInPackage(PathBuf),
    /// A module the guest needs is neither a module nor built in.
    #[error("kernel has no module {0}")]
    ModuleNotFound(String),
    /// An input file is missing.
    #[error("{what} not found at {path}{hint}")]
    MissingInput {
        /// What the file is.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl GuestError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        GuestError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What to build and from what.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Output directory (kernel, initramfs, manifest, download cache).
    pub dir: PathBuf,
    /// Static `ferry-workload` binary to put in the guest.
    pub workload_bin: PathBuf,
    /// Static busybox binary.
    pub busybox: PathBuf,
    /// Rebuild even when the manifest says the inputs are unchanged.
    pub force: bool,
}

/// The record of a finished build, saved as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version of the initramfs.
    pub layout: u32,
    /// Debian package the kernel came from.
    pub kernel_package: String,
    /// Kernel release (`uname -r` in the guest).
    pub kernel_release: String,
    /// Path of the kernel image.
    pub kernel: PathBuf,
    /// Path of the initramfs.
    pub initrd: PathBuf,
    /// Modules packed, in load order.
    pub modules: Vec<String>,
    /// SHA-256 over every input; equal digests mean an identical guest.
    pub inputs_sha256: String,
    /// Size of the initramfs in bytes.
    pub initrd_bytes: u64,
}

impl Manifest {
    /// Reads the manifest of a built guest.
    pub fn load(dir: &Path) -> Result<Self, GuestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| GuestError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| GuestError::io(&path, std::io::Error::other(e)))
    }
}

/// Outcome of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The manifest of the guest now in place.
    pub manifest: Manifest,
    /// False when the cached guest was already up to date.
    pub rebuilt: bool,
}

fn read_input(path: &Path, what: &'static str, hint: &'static str) -> Result<Vec<u8>, GuestError> {
    if !path.exists() {
        return Err(GuestError::MissingInput {
            what,
            path: path.to_path_buf(),
            hint,
        });
    }
    std::fs::read(path).map_err(|e| GuestError::io(path, e))
}

/// Builds the guest into `opts.dir`, or does nothing if it is up to date.
pub fn build(opts: &BuildOptions) -> Result<BuildOutcome, GuestError> {
    let cache = opts.dir.join("cache");
    std::fs::create_dir_all(&cache).map_err(|e| GuestError::io(&cache, e))?;

    let busybox = read_input(
        &opts.busybox,
        "busybox",
        " (apt-get install busybox-static)",
    )?;
    let workload = read_input(
        &opts.workload_bin,
        "ferry-workload",
        " (scripts/build builds it statically)",
    )?;

    let pkg = kernel::resolve_package()?;
    let deb = kernel::download(&pkg, &cache)?;
    let unpacked = kernel::unpack(&deb, &pkg, &cache)?;
    let modules = kernel::resolve_modules(&unpacked.modules_dir, kernel::WANTED_MODULES)?;
    let mut module_files = Vec::new();
    for rel in &modules {
        module_files.push((
            rel.clone(),
            kernel::read_module(&unpacked.modules_dir, rel)?,
        ));
    }

    let mut h = Sha256::new();
    h.update(LAYOUT_VERSION.to_le_bytes());
    h.update(pkg.as_bytes());
    for part in [INIT_SCRIPT.as_bytes(), &busybox, &workload] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    for (name, bytes) in &module_files {
        h.update(name.as_bytes());
        h.update(bytes);
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();

    let kernel_out = opts.dir.join("vmlinuz");
    let initrd_out = opts.dir.join("initramfs.img");
    if !opts.force {
        if let Ok(old) = Manifest::load(&opts.dir) {
            if old.inputs_sha256 == digest && kernel_out.exists() && initrd_out.exists() {
                return Ok(BuildOutcome {
                    manifest: old,
                    rebuilt: false,
                });
            }
        }
    }

    let mut w = CpioWriter::new();
    for d in [
        "/bin",
        "/sbin",
        "/dev",
        "/etc",
        "/lib",
        "/lib/modules",
        "/lib/modules/ferry",
        "/proc",
        "/sys",
        "/tmp",
        "/run",
    ] {
        w.dir(d, 0o755);
    }
    w.char_device("/dev/console", 0o600, 5, 1);
    w.file("/bin/busybox", 0o755, &busybox);
    w.symlink("/bin/sh", "busybox");
    w.file("/bin/ferry-workload", 0o755, &workload);
    w.file("/init", 0o755, INIT_SCRIPT.as_bytes());
    let mut load_list = String::new();
    for (i, (rel, bytes)) in module_files.iter().enumerate() {
        let file = rel.rsplit('/').next().unwrap_or(rel);
        let file = file.trim_end_matches(".xz").trim_end_matches(".zst");
        let name = format!("{i:02}-{file}");
        w.file(&format!("/lib/modules/ferry/{name}"), 0o644, bytes);
        load_list.push_str(&name);
        load_list.push('\n');
    }
    w.file("/etc/ferry-modules", 0o644, load_list.as_bytes());
    let archive = w.finish();

    write_atomic(&initrd_out, &archive).map_err(|e| GuestError::io(&initrd_out, e))?;
    let kernel_bytes =
        std::fs::read(&unpacked.vmlinuz).map_err(|e| GuestError::io(&unpacked.vmlinuz, e))?;
    write_atomic(&kernel_out, &kernel_bytes).map_err(|e| GuestError::io(&kernel_out, e))?;

    let manifest = Manifest {
        layout: LAYOUT_VERSION,
        kernel_package: pkg,
        kernel_release: unpacked.release,
        kernel: kernel_out,
        initrd: initrd_out,
        modules,
        inputs_sha256: digest,
        initrd_bytes: archive.len() as u64,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| GuestError::io(&opts.dir, std::io::Error::other(e)))?;
    let mpath = opts.dir.join(MANIFEST_FILE);
    write_atomic(&mpath, &json).map_err(|e| GuestError::io(&mpath, e))?;
    Ok(BuildOutcome {
        manifest,
        rebuilt: true,
    })
}
