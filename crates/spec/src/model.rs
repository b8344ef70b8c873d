//! The spec's data model, as users write it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// QEMU machine type used when a spec names none.
pub const DEFAULT_MACHINE: &str = "q35";
/// CPU model used when a spec names none: everything the accelerator offers
/// under TCG. Processor compatibility (a later issue) replaces this with a
/// computed baseline.
pub const DEFAULT_CPU_MODEL: &str = "max";

/// A VM as a user defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Unique name; also names the VM's runtime directory and TAP devices.
    pub name: String,
    /// Number of virtual CPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// QEMU CPU model (`max`, `qemu64`, `Skylake-Server`, ...).
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// QEMU machine type (`q35`, `pc`).
    #[serde(default = "default_machine")]
    pub machine: String,
    /// How the guest boots.
    pub boot: Boot,
    /// Virtual disks, in the order the guest sees them (vda, vdb, ...).
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Network interfaces, in the order the guest sees them (eth0, ...).
    #[serde(default)]
    pub nics: Vec<Nic>,
}

/// Direct kernel boot: the guest starts from a kernel and initrd on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// Kernel image (bzImage).
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line. Ferry adds `console=ttyS0` if no console is named.
    #[serde(default)]
    pub cmdline: String,
}

/// A virtual disk backed by an image file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Raw image file.
    pub path: PathBuf,
    /// Guest may only read.
    #[serde(default)]
    pub readonly: bool,
    /// Who opens the image.
    #[serde(default)]
    pub via: DiskPath,
}

/// The path between the guest's virtio-blk device and the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskPath {
    /// Ferry's block service (NBD on a unix socket): Ferry can map, fence,
    /// redirect and measure the disk. The default.
    #[default]
    Ferry,
    /// QEMU opens the image file itself (the reference for benchmarks).
    Qemu,
}

/// A virtual network interface (virtio-net).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// MAC address, `52:54:00:xx:xx:xx` style. Must be unicast.
    pub mac: String,
    /// Where the NIC's host side is plugged.
    #[serde(flatten)]
    pub attachment: NicAttachment,
}

/// The host side of a NIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicAttachment {
    /// Ferry creates a TAP device, plugs it into this Linux bridge, and
    /// removes it when the VM stops.
    Bridge(String),
    /// An existing TAP device that the user manages.
    Tap(String),
}

fn default_vcpus() -> u32 {
    1
}
fn default_cpu() -> String {
    DEFAULT_CPU_MODEL.to_string()
}
fn default_machine() -> String {
    DEFAULT_MACHINE.to_string()
}

impl VmSpec {
    /// Makes relative file paths absolute against `base`.
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.boot.kernel);
        if let Some(initrd) = self.boot.initrd.as_mut() {
            fix(initrd);
        }
        for disk in &mut self.disks {
            fix(&mut disk.path);
        }
    }
}
