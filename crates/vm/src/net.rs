//! TAP devices on Linux bridges, through iproute2.

use crate::VmError;
use std::process::Command;

/// True if `name` is a Linux bridge in this network namespace.
pub fn bridge_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .is_dir()
}

/// True if a network interface `name` exists in this namespace.
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// A stable TAP name for NIC `index` of VM `vm`: `fy` + 8 hex digits + index,
/// short enough for Linux's 15-byte limit and the same on every host.
pub fn tap_name(vm: &str, index: usize) -> String {
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in vm.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("fy{h:08x}n{index}")
}

fn ip(args: &[&str]) -> Result<(), VmError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| VmError::Net {
            command: format!("ip {}", args.join(" ")),
            stderr: format!("{e} (is iproute2 installed?)"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VmError::Net {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The TAP device of each NIC of `spec`, in order: Ferry's own name for a
/// bridged NIC (the same on every host), the user's for a given TAP.
pub fn nic_plans(spec: &ferry_spec::VmSpec) -> Vec<ferry_qemu::NicPlan> {
    spec.nics
        .iter()
        .enumerate()
        .map(|(i, n)| ferry_qemu::NicPlan {
            tap: match &n.attachment {
                ferry_spec::NicAttachment::Bridge(_) => tap_name(&spec.name, i),
                ferry_spec::NicAttachment::Tap(t) => t.clone(),
            },
        })
        .collect()
}

/// Creates a persistent TAP, plugs it into `bridge` and brings it up.
/// A stale TAP of the same name (from a crashed run) is replaced.
pub fn create_tap(tap: &str, bridge: &str) -> Result<(), VmError> {
    if link_exists(tap) {
        delete_link(tap);
    }
    ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
    let plugged = ip(&["link", "set", "dev", tap, "master", bridge])
        .and_then(|()| ip(&["link", "set", "dev", tap, "up"]));
    if let Err(e) = plugged {
        delete_link(tap);
        return Err(e);
    }
    Ok(())
}

/// Removes a link, ignoring one that is already gone.
pub fn delete_link(name: &str) {
    if link_exists(name) {
        if let Err(e) = ip(&["link", "del", "dev", name]) {
            tracing::warn!("could not remove {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_linux_limits_and_are_stable() {
        let t = tap_name("a-rather-long-virtual-machine-name-indeed", 3);
        assert!(t.len() <= 15, "{t}");
        assert_eq!(t, tap_name("a-rather-long-virtual-machine-name-indeed", 3));
        assert_ne!(tap_name("a", 0), tap_name("b", 0));
    }
}
