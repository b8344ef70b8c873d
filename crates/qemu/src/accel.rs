//! Choosing the accelerator: KVM only where it really works, TCG elsewhere.
//!
//! A `/dev/kvm` is not proof of hardware virtualization: on our development
//! machines it is a software ("PVM") hypervisor that runs stock kernels far too
//! slowly. So KVM is chosen only when the CPU has vmx/svm, `/dev/kvm` opens,
//! and a tiny probe guest booted under KVM prints its line in time.

use crate::QemuBinary;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An accelerator QEMU can run a guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulator, multi-threaded.
    Tcg,
}

impl Accel {
    /// The `-accel` option value.
    pub fn qemu_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=multi",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!("unknown accelerator {other:?}; use kvm or tcg")),
        }
    }
}

/// The accelerator picked and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// The accelerator.
    pub accel: Accel,
    /// A sentence a user can read.
    pub reason: String,
}

/// How long the KVM probe guest may take to print its line.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// What the probe guest prints on its serial port.
const PROBE_MARKER: &str = "FERRY-ACCEL-OK";

/// Picks the accelerator for this host. `forced` (from `--accel`) wins.
pub fn choose(qemu: &QemuBinary, forced: Option<Accel>) -> AccelChoice {
    if let Some(accel) = forced {
        return AccelChoice {
            accel,
            reason: format!("{accel} requested with --accel"),
        };
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let Some(flag) = hardware_virt_flag(&cpuinfo) else {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: "the CPU has no vmx/svm flag, so any /dev/kvm here is not hardware virtualization; using TCG".into(),
        };
    };
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return AccelChoice {
            accel: Accel::Tcg,
            reason: format!("the CPU has {flag} but /dev/kvm cannot be opened ({e}); using TCG"),
        };
    }
    match boot_probe(qemu, Accel::Kvm) {
        Ok(took) => AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "the CPU has {flag} and a KVM probe guest booted in {} ms",
                took.as_millis()
            ),
        },
        Err(why) => AccelChoice {
            accel: Accel::Tcg,
            reason: format!("the CPU has {flag} but a KVM probe guest failed ({why}); using TCG"),
        },
    }
}

/// Returns "vmx" or "svm" if the CPU flags include one.
fn hardware_virt_flag(cpuinfo: &str) -> Option<&'static str> {
    for line in cpuinfo.lines().filter(|l| l.starts_with("flags")) {
        for flag in line.split_whitespace() {
            match flag {
                "vmx" => return Some("vmx"),
                "svm" => return Some("svm"),
                _ => {}
            }
        }
    }
    None
}

/// A boot sector that prints [`PROBE_MARKER`] on COM1 and halts.
fn probe_boot_sector() -> Vec<u8> {
    let mut code = vec![
        0xFA, // cli
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0xFC, // cld
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xBE, 0x17, 0x7C, // mov si, 0x7c17 (the message below)
        0xAC, // .l: lodsb
        0x84, 0xC0, // test al, al
        0x74, 0x03, // jz .done
        0xEE, // out dx, al
        0xEB, 0xF8, // jmp .l
        0xF4, // .done: hlt
        0xEB, 0xFD, // jmp .done
    ];
    code.extend_from_slice(PROBE_MARKER.as_bytes());
    code.extend_from_slice(b"\r\n\0");
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xAA]);
    code
}

/// Boots the probe guest under `accel` and waits for its line.
pub fn boot_probe(qemu: &QemuBinary, accel: Accel) -> Result<Duration, String> {
    let image = std::env::temp_dir().join(format!("ferry-accel-probe-{}.img", std::process::id()));
    std::fs::write(&image, probe_boot_sector())
        .map_err(|e| format!("writing {}: {e}", image.display()))?;
    let started = Instant::now();
    let child = Command::new(&qemu.path)
        .args([
            "-accel",
            accel.qemu_arg(),
            "-machine",
            "pc",
            "-m",
            "16",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-serial", "stdio"])
        .arg("-drive")
        .arg(format!("format=raw,if=ide,file={}", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&image);
            return Err(format!("cannot start QEMU: {e}"));
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = child.stdout.take();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while let Some(out) = stdout.as_mut() {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&seen).contains(PROBE_MARKER) {
                        let _ = tx.send(());
                        break;
                    }
                }
            }
        }
    });
    let outcome = rx.recv_timeout(PROBE_TIMEOUT);
    let took = started.elapsed();
    let _ = child.kill();
    let status = child.wait();
    let _ = std::fs::remove_file(&image);
    match outcome {
        Ok(()) => Ok(took),
        Err(_) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let last = err.lines().last().unwrap_or("").trim().to_string();
            Err(if last.is_empty() {
                format!(
                    "no output within {} s ({status:?})",
                    PROBE_TIMEOUT.as_secs()
                )
            } else {
                last
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_virtualization_flags() {
        assert_eq!(hardware_virt_flag("flags\t: fpu vme vmx sse"), Some("vmx"));
        assert_eq!(hardware_virt_flag("flags\t: fpu svm"), Some("svm"));
        assert_eq!(hardware_virt_flag("flags\t: fpu sse hypervisor"), None);
    }

    #[test]
    fn boot_sector_is_well_formed() {
        let s = probe_boot_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        // The `mov si` operand must point at the message.
        assert_eq!(&s[0x17..0x17 + PROBE_MARKER.len()], PROBE_MARKER.as_bytes());
    }
}
