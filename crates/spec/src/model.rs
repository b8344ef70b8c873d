//! The spec's data model, as users write it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// QEMU machine type used when a spec names none.
pub const DEFAULT_MACHINE: &str = "q35";
/// CPU model used when a spec names none: QEMU's `max`, everything the
/// accelerator offers, passed to QEMU as is. `host` and `compatible` are
/// Ferry's processor-compatibility settings.
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
    /// The CPU the guest sees: `host` (everything this host offers; the VM
    /// may then move only to hosts offering at least as much), `compatible`
    /// (the baseline named by `cpu_baseline`, so it can move between hosts
    /// whose CPUs differ), or a QEMU model name (`max`, `qemu64`, ...).
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// For `cpu = "compatible"`: a named level (`x86-64-v2`, `x86-64-v2-AES`,
    /// `x86-64-v3`, `x86-64-v4`) or a list of host profile files (JSON from
    /// `ferry --json host cpu`) whose common features the VM gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_baseline: Option<CpuBaseline>,
    /// The exact CPU, computed by Ferry from `cpu` when the VM first starts
    /// and kept with it, so it is the same on every host it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<ferry_cpu::CpuModel>,
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

/// What a `compatible` CPU is the baseline of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CpuBaseline {
    /// A named x86-64 level.
    Level(String),
    /// Host profile files.
    Hosts(Vec<PathBuf>),
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

/// A virtual disk backed by an image file or an iSCSI LUN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Raw image file, or `iscsi://PORTAL[:PORT]/IQN/LUN` for a LUN served
    /// through Ferry's block service and initiator.
    pub path: PathBuf,
    /// For an iSCSI disk: the secrets file with its CHAP credentials and
    /// initiator settings (default [`crate::DEFAULT_SECRETS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<PathBuf>,
    /// Guest may only read.
    #[serde(default)]
    pub readonly: bool,
    /// Who opens the image.
    #[serde(default)]
    pub via: DiskPath,
    /// How QEMU reaches Ferry's block service for this disk.
    #[serde(default)]
    pub protocol: DiskProtocol,
}

/// How QEMU talks to Ferry's block service about one disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskProtocol {
    /// NBD on a unix socket. The default: the guest's memory stays private
    /// to QEMU (live migration is fastest), and QEMU re-sends what was in
    /// flight if the block service restarts.
    #[default]
    Nbd,
    /// vhost-user-blk: the service reads and writes guest memory itself (no
    /// socket copy; fastest disk). The guest's memory becomes a shared
    /// memfd, which makes live migration slower, and requests in flight
    /// when the service dies are lost to the guest.
    VhostUser,
}

impl DiskProtocol {
    /// Most virtqueues a vhost-user disk offers.
    pub const VHOST_USER_MAX_QUEUES: u16 = 8;

    /// Virtqueues a VM with `vcpus` gets on a vhost-user disk: one per
    /// vCPU (up to [`DiskProtocol::VHOST_USER_MAX_QUEUES`]), as QEMU's
    /// own virtio-blk has, so the guest completes a request on the vCPU
    /// that sent it. With one queue every completion interrupted one vCPU,
    /// which then had to wake the waiting thread on the other: in-guest
    /// 1 MiB reads one at a time on a LUN were 0.87–0.94x QEMU's iSCSI
    /// driver with one queue and 1.03–1.08x with two.
    pub fn vhost_user_queues(vcpus: u32) -> u16 {
        let max = u32::from(Self::VHOST_USER_MAX_QUEUES);
        // Within 1..=max, so the narrowing cannot truncate.
        vcpus.clamp(1, max) as u16
    }
}

/// The path between the guest's virtio-blk device and the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskPath {
    /// Ferry's block service (see [`DiskProtocol`]): Ferry can map, fence,
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

impl Disk {
    /// The disk's `iscsi://` URL, when its path is one (valid or not).
    pub fn iscsi_url(&self) -> Option<&str> {
        self.path.to_str().filter(|p| crate::IscsiUrl::is_iscsi(p))
    }
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
            if disk.iscsi_url().is_none() {
                fix(&mut disk.path);
            }
            if let Some(s) = disk.secrets.as_mut() {
                fix(s);
            }
        }
        if let Some(CpuBaseline::Hosts(files)) = self.cpu_baseline.as_mut() {
            files.iter_mut().for_each(fix);
        }
    }
}
