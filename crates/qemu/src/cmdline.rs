//! Turning a VM spec into QEMU's command line.
//!
//! Everything is derived from the [`VmSpec`] plus host-local plumbing
//! (sockets, TAP names), so a second QEMU for the same VM (a migration
//! destination) gets exactly the same machine, devices and CPU.

use crate::Accel;
use ferry_spec::{DiskPath, DiskProtocol, VmSpec};
use std::path::{Path, PathBuf};

/// The host side chosen for one NIC of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    /// TAP device QEMU opens for this NIC.
    pub tap: String,
}

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// A unix socket Ferry (or a user) attaches to; QEMU also logs every byte
    /// to `log`, whether anyone is attached or not.
    Socket {
        /// The socket QEMU listens on.
        path: PathBuf,
        /// The console log file.
        log: PathBuf,
    },
    /// QEMU's stdin/stdout, as a user typing the command by hand would use.
    Stdio,
}

/// Everything needed to launch QEMU for one VM on this host.
#[derive(Debug, Clone)]
pub struct LaunchConfig<'a> {
    /// The VM.
    pub spec: &'a VmSpec,
    /// Accelerator.
    pub accel: Accel,
    /// QMP sockets to create (QEMU serves one client per socket).
    pub qmp_sockets: Vec<PathBuf>,
    /// Serial console.
    pub console: Console,
    /// One entry per NIC of the spec, in order.
    pub nics: Vec<NicPlan>,
    /// Start with vCPUs stopped (`-S`), so the caller can attach first.
    pub start_paused: bool,
    /// The block service socket serving disks with `via = "ferry"`.
    pub block_socket: Option<PathBuf>,
    /// Wait for an incoming migration (`-incoming defer`).
    pub incoming: bool,
}

/// Seconds QEMU keeps a Ferry disk's requests waiting while the block service
/// restarts, before failing them to the guest as I/O errors.
pub const DISK_RECONNECT_SECS: u32 = 30;

/// NBD export name of disk `i`.
pub fn export_name(i: usize) -> String {
    format!("disk{i}")
}

/// The vhost-user socket of disk `i` (a disk with `protocol =
/// "vhost-user"`), beside the block service's NBD socket.
pub fn vhost_user_socket(block_socket: &Path, i: usize) -> PathBuf {
    block_socket.with_file_name(format!("vhost-{}.sock", export_name(i)))
}

/// QOM id of the shared guest memory vhost-user disks need.
const SHARED_RAM: &str = "ferry-ram";

/// QEMU's option syntax doubles a comma to mean a literal comma.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// The kernel command line with `console=ttyS0` added unless one is named.
pub fn kernel_cmdline(spec: &VmSpec) -> String {
    let user = spec.boot.cmdline.trim();
    if user.split_whitespace().any(|w| w.starts_with("console=")) {
        user.to_string()
    } else if user.is_empty() {
        "console=ttyS0".to_string()
    } else {
        format!("console=ttyS0 {user}")
    }
}

/// QOM id of the I/O thread that runs the block-service disks' queues.
const DISK_IOTHREAD: &str = "disk-io";

impl LaunchConfig<'_> {
    /// Whether the block service serves any of the spec's disks over `protocol`.
    fn serves_any(&self, protocol: DiskProtocol) -> bool {
        self.block_socket.is_some()
            && self
                .spec
                .disks
                .iter()
                .any(|d| d.via == DiskPath::Ferry && d.protocol == protocol)
    }

    /// The arguments after the binary name.
    pub fn args(&self) -> Vec<String> {
        let spec = self.spec;
        let mut a: Vec<String> = Vec::new();
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        push(
            "-name",
            format!("guest={},debug-threads=on", escape(&spec.name)),
        );
        // vhost-user disks are served from guest memory itself, so it must
        // be a memfd the block service can map.
        let shared_ram = self.serves_any(DiskProtocol::VhostUser);
        if shared_ram {
            push(
                "-object",
                format!(
                    "memory-backend-memfd,id={SHARED_RAM},size={}M,share=on",
                    spec.memory_mib
                ),
            );
            push(
                "-machine",
                format!("{},memory-backend={SHARED_RAM}", spec.machine),
            );
        } else {
            push("-machine", spec.machine.clone());
        }
        push("-accel", self.accel.qemu_arg().to_string());
        push(
            "-cpu",
            spec.cpu_model
                .as_ref()
                .map_or_else(|| spec.cpu.clone(), |m| m.qemu_arg()),
        );
        push("-smp", spec.vcpus.to_string());
        push("-m", format!("{}M", spec.memory_mib));
        push("-display", "none".to_string());
        for (i, sock) in self.qmp_sockets.iter().enumerate() {
            push(
                "-chardev",
                format!(
                    "socket,id=qmp{i},path={},server=on,wait=off",
                    escape(&sock.to_string_lossy())
                ),
            );
            push("-mon", format!("chardev=qmp{i},mode=control"));
        }
        match &self.console {
            Console::Socket { path, log } => {
                push(
                    "-chardev",
                    format!(
                        "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
                        escape(&path.to_string_lossy()),
                        escape(&log.to_string_lossy())
                    ),
                );
                push("-serial", "chardev:serial0".to_string());
            }
            Console::Stdio => push("-serial", "stdio".to_string()),
        }
        push("-kernel", spec.boot.kernel.to_string_lossy().into_owned());
        if let Some(initrd) = &spec.boot.initrd {
            push("-initrd", initrd.to_string_lossy().into_owned());
        }
        push("-append", kernel_cmdline(spec));
        // Disks served by Ferry's block service over NBD run their virtio
        // queues in a QEMU I/O thread of their own, off the vCPU and
        // main-loop threads: under TCG that raised in-guest sequential writes
        // by a third. (vhost-user disks' queues run in the service.)
        let ferry_disks = self.serves_any(DiskProtocol::Nbd);
        if ferry_disks {
            push("-object", format!("iothread,id={DISK_IOTHREAD}"));
        }
        for (i, disk) in spec.disks.iter().enumerate() {
            if let (DiskPath::Ferry, DiskProtocol::VhostUser, Some(sock)) =
                (disk.via, disk.protocol, &self.block_socket)
            {
                push(
                    "-chardev",
                    format!(
                        "socket,id=vu{i},path={},reconnect-ms=1000",
                        escape(&vhost_user_socket(sock, i).to_string_lossy())
                    ),
                );
                push(
                    "-device",
                    format!(
                        "vhost-user-blk-pci,chardev=vu{i},id=vd{i},num-queues={}",
                        DiskProtocol::vhost_user_queues(spec.vcpus)
                    ),
                );
                continue;
            }
            let node = match (disk.via, &self.block_socket) {
                (DiskPath::Ferry, Some(sock)) => serde_json::json!({
                    "driver": "nbd",
                    "node-name": format!("disk{i}"),
                    "read-only": disk.readonly,
                    "server": {"type": "unix", "path": sock},
                    "export": export_name(i),
                    "reconnect-delay": DISK_RECONNECT_SECS,
                }),
                _ => serde_json::json!({
                    "driver": "raw",
                    "node-name": format!("disk{i}"),
                    "read-only": disk.readonly,
                    "file": {"driver": "file", "filename": disk.path, "read-only": disk.readonly},
                }),
            };
            push("-blockdev", node.to_string());
            let iothread = if disk.via == DiskPath::Ferry && ferry_disks {
                format!(",iothread={DISK_IOTHREAD}")
            } else {
                String::new()
            };
            push(
                "-device",
                format!("virtio-blk-pci,drive=disk{i},id=vd{i},serial=ferry-disk{i}{iothread}"),
            );
        }
        for (i, (nic, plan)) in spec.nics.iter().zip(&self.nics).enumerate() {
            push(
                "-netdev",
                format!("tap,id=net{i},ifname={},script=no,downscript=no", plan.tap),
            );
            push(
                "-device",
                format!("virtio-net-pci,netdev=net{i},mac={},id=nic{i}", nic.mac),
            );
        }
        a.push("-nodefaults".into());
        a.push("-no-user-config".into());
        if self.start_paused {
            a.push("-S".into());
        }
        if self.incoming {
            a.push("-incoming".into());
            a.push("defer".into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec() -> VmSpec {
        VmSpec::from_toml(
            r#"
name = "web"
vcpus = 2
memory_mib = 512
[boot]
kernel = "/k"
initrd = "/i"
cmdline = "quiet"
[[disks]]
path = "/img/a,b.img"
readonly = true
via = "qemu"
[[disks]]
path = "/img/c.img"
[[nics]]
mac = "52:54:00:00:00:01"
bridge = "br0"
"#,
            Path::new("/"),
        )
        .unwrap()
    }

    #[test]
    fn builds_the_expected_command_line() {
        let spec = spec();
        let cfg = LaunchConfig {
            spec: &spec,
            accel: Accel::Tcg,
            qmp_sockets: vec!["/run/x/qmp.sock".into()],
            console: Console::Socket {
                path: "/run/x/serial.sock".into(),
                log: "/run/x/console.log".into(),
            },
            nics: vec![NicPlan {
                tap: "fyabc0".into(),
            }],
            start_paused: true,
            block_socket: Some("/run/x/block.sock".into()),
            incoming: false,
        };
        let line = cfg.args().join(" ");
        for want in [
            "-accel tcg,thread=multi",
            "-cpu max",
            "-smp 2",
            "-m 512M",
            "-append console=ttyS0 quiet",
            "ifname=fyabc0",
            "mac=52:54:00:00:00:01",
            "\"filename\":\"/img/a,b.img\"",
            "\"read-only\":true",
            "logfile=/run/x/console.log",
            "\"driver\":\"nbd\"",
            "\"export\":\"disk1\"",
            "\"path\":\"/run/x/block.sock\"",
            " -S",
        ] {
            assert!(line.contains(want), "missing {want:?} in {line}");
        }
    }

    #[test]
    fn keeps_a_console_the_user_named() {
        let mut s = spec();
        s.boot.cmdline = "console=hvc0".into();
        assert_eq!(kernel_cmdline(&s), "console=hvc0");
        s.boot.cmdline = String::new();
        assert_eq!(kernel_cmdline(&s), "console=ttyS0");
    }
}
