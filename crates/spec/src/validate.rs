//! Checks a parsed spec for values that cannot work, before anything starts.
//!
//! Only checks that need no host state live here; whether the kernel file
//! exists, the bridge is there or the host has the memory is the engine's
//! pre-flight check, since the answer depends on the host that runs the VM.

use crate::{NicAttachment, SpecError, VmSpec};

/// Most vCPUs a spec may ask for (QEMU's q35 limit is higher; this guards typos).
pub const MAX_VCPUS: u32 = 256;
/// Smallest useful guest memory.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Longest VM name: it becomes part of interface names and socket paths.
pub const MAX_NAME_LEN: usize = 48;
/// Linux interface names are at most 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

impl VmSpec {
    /// Validates every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(SpecError::invalid(
                "vcpus",
                format!("{} is out of range; use 1 to {MAX_VCPUS}", self.vcpus),
            ));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(SpecError::invalid(
                "memory_mib",
                format!(
                    "{} MiB is too small; use at least {MIN_MEMORY_MIB}",
                    self.memory_mib
                ),
            ));
        }
        validate_word("cpu", &self.cpu)?;
        match (self.cpu.as_str(), &self.cpu_baseline) {
            ("compatible", None) => {
                return Err(SpecError::invalid(
                    "cpu_baseline",
                    "is required with cpu = \"compatible\": name a level (x86-64-v2, x86-64-v2-AES, x86-64-v3, x86-64-v4) or host profile files",
                ))
            }
            ("compatible", Some(crate::CpuBaseline::Hosts(files))) if files.is_empty() => {
                return Err(SpecError::invalid("cpu_baseline", "lists no host profiles"))
            }
            ("compatible", _) => {}
            (_, Some(_)) => {
                return Err(SpecError::invalid(
                    "cpu_baseline",
                    "only applies with cpu = \"compatible\"",
                ))
            }
            _ => {}
        }
        validate_word("machine", &self.machine)?;
        if self.boot.kernel.as_os_str().is_empty() {
            return Err(SpecError::invalid(
                "boot.kernel",
                "is empty; name a kernel image",
            ));
        }
        if self.boot.cmdline.contains('\n') {
            return Err(SpecError::invalid("boot.cmdline", "must be one line"));
        }
        for (i, nic) in self.nics.iter().enumerate() {
            parse_mac(&nic.mac).map_err(|p| SpecError::invalid(format!("nics[{i}].mac"), p))?;
            let (kind, ifname) = match &nic.attachment {
                NicAttachment::Bridge(b) => ("bridge", b),
                NicAttachment::Tap(t) => ("tap", t),
            };
            validate_ifname(ifname)
                .map_err(|p| SpecError::invalid(format!("nics[{i}].{kind}"), p))?;
            if self.nics[..i]
                .iter()
                .any(|n| n.mac.eq_ignore_ascii_case(&nic.mac))
            {
                return Err(SpecError::invalid(
                    format!("nics[{i}].mac"),
                    format!("{} is used by an earlier NIC", nic.mac),
                ));
            }
        }
        for (i, disk) in self.disks.iter().enumerate() {
            if disk.path.as_os_str().is_empty() {
                return Err(SpecError::invalid(format!("disks[{i}].path"), "is empty"));
            }
            if disk.via == crate::DiskPath::Qemu && disk.protocol != crate::DiskProtocol::Nbd {
                return Err(SpecError::invalid(
                    format!("disks[{i}].protocol"),
                    "applies to disks served by Ferry's block service, not `via = \"qemu\"`",
                ));
            }
            match disk.iscsi_url() {
                Some(url) => {
                    crate::IscsiUrl::parse(url)
                        .map_err(|p| SpecError::invalid(format!("disks[{i}].path"), p))?;
                    if disk.via == crate::DiskPath::Qemu {
                        return Err(SpecError::invalid(
                            format!("disks[{i}].via"),
                            "an iSCSI disk goes through Ferry's block service; remove `via = \"qemu\"`",
                        ));
                    }
                }
                None if disk.secrets.is_some() => {
                    return Err(SpecError::invalid(
                        format!("disks[{i}].secrets"),
                        "only applies to iscsi:// disks",
                    ))
                }
                None => {}
            }
        }
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name.starts_with('-') {
        return Err(SpecError::invalid(
            "name",
            format!(
                "{name:?} is not a valid VM name; use 1 to {MAX_NAME_LEN} letters, digits, '-' or '_', not starting with '-'"
            ),
        ));
    }
    Ok(())
}

/// QEMU option values must not smuggle in extra options through commas.
fn validate_word(field: &str, value: &str) -> Result<(), SpecError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            field,
            format!("{value:?} is not a valid name (letters, digits, '-', '_', '.')"),
        ))
    }
}

fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > IFNAMSIZ_MAX {
        return Err(format!(
            "interface name {name:?} must be 1 to {IFNAMSIZ_MAX} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "interface name {name:?} has characters Linux refuses"
        ));
    }
    Ok(())
}

/// Parses `aa:bb:cc:dd:ee:ff` into bytes, refusing multicast addresses.
pub fn parse_mac(mac: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = mac.split(':').collect();
    let mut out = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!(
            "{mac:?} is not a MAC address like 52:54:00:12:34:56"
        ));
    }
    for (slot, part) in out.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(format!(
                "{mac:?} is not a MAC address like 52:54:00:12:34:56"
            ));
        }
        *slot = u8::from_str_radix(part, 16)
            .map_err(|_| format!("{mac:?} is not a MAC address like 52:54:00:12:34:56"))?;
    }
    if out[0] & 1 == 1 {
        return Err(format!(
            "{mac} is a multicast address; a NIC needs a unicast one (e.g. 52:54:00:...)"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::VmSpec;
    use std::path::Path;

    const GOOD: &str = r#"
name = "t1"
vcpus = 2
memory_mib = 256
[boot]
kernel = "vmlinuz"
initrd = "/abs/initrd"
cmdline = "quiet"
[[disks]]
path = "disk.img"
[[nics]]
mac = "52:54:00:12:34:56"
bridge = "br0"
"#;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let spec = VmSpec::from_toml(GOOD, Path::new("/specs")).unwrap();
        assert_eq!(spec.boot.kernel, Path::new("/specs/vmlinuz"));
        assert_eq!(spec.boot.initrd.as_deref(), Some(Path::new("/abs/initrd")));
        assert_eq!(spec.disks[0].path, Path::new("/specs/disk.img"));
        assert_eq!(spec.cpu, "max");
        assert_eq!(spec.machine, "q35");
    }

    #[test]
    fn json_round_trip() {
        let spec = VmSpec::from_toml(GOOD, Path::new("/s")).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(VmSpec::from_json(&json, Path::new("/s")).unwrap(), spec);
    }

    fn err_of(text: &str) -> String {
        VmSpec::from_toml(text, Path::new("/"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn compatible_cpus_need_a_baseline_and_only_they_take_one() {
        let with = |extra: &str| GOOD.replace("vcpus = 2", &format!("vcpus = 2\n{extra}"));
        assert!(err_of(&with("cpu = \"compatible\"")).contains("`cpu_baseline`"));
        assert!(err_of(&with("cpu_baseline = \"x86-64-v2\"")).contains("only applies"));
        assert!(
            err_of(&with("cpu = \"compatible\"\ncpu_baseline = []")).contains("no host profiles")
        );
        let spec = VmSpec::from_toml(
            &with("cpu = \"compatible\"\ncpu_baseline = [\"h1.json\", \"/p/h2.json\"]"),
            Path::new("/s"),
        )
        .unwrap();
        assert_eq!(
            spec.cpu_baseline,
            Some(crate::CpuBaseline::Hosts(vec![
                "/s/h1.json".into(),
                "/p/h2.json".into()
            ]))
        );
        let spec = VmSpec::from_toml(
            &with("cpu = \"compatible\"\ncpu_baseline = \"x86-64-v3\""),
            Path::new("/s"),
        )
        .unwrap();
        assert_eq!(
            spec.cpu_baseline,
            Some(crate::CpuBaseline::Level("x86-64-v3".into()))
        );
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        assert!(err_of(&GOOD.replace("vcpus = 2", "vcpus = 0")).contains("`vcpus`"));
        assert!(
            err_of(&GOOD.replace("memory_mib = 256", "memory_mib = 1")).contains("`memory_mib`")
        );
        assert!(
            err_of(&GOOD.replace("52:54:00:12:34:56", "01:54:00:12:34:56")).contains("multicast")
        );
        assert!(
            err_of(&GOOD.replace("52:54:00:12:34:56", "52:54:00:12:34")).contains("nics[0].mac")
        );
        assert!(err_of(&GOOD.replace("name = \"t1\"", "name = \"a b\"")).contains("`name`"));
        assert!(
            err_of(&GOOD.replace("vcpus = 2", "vcpus = 2\ncpu = \"max,+avx\"")).contains("`cpu`")
        );
        assert!(
            err_of(&GOOD.replace("bridge = \"br0\"", "bridge = \"a-very-long-bridge-name\""))
                .contains("nics[0].bridge")
        );
    }

    #[test]
    fn iscsi_disks_keep_their_url_and_are_checked() {
        let with = |disk: &str| GOOD.replace("path = \"disk.img\"", disk);
        let spec = VmSpec::from_toml(
            &with("path = \"iscsi://10.0.0.5/iqn.2026-01.dev.ferry:d/1\"\nsecrets = \"s.toml\""),
            Path::new("/specs"),
        )
        .unwrap();
        assert_eq!(
            spec.disks[0].iscsi_url(),
            Some("iscsi://10.0.0.5/iqn.2026-01.dev.ferry:d/1")
        );
        assert_eq!(
            spec.disks[0].secrets.as_deref(),
            Some(Path::new("/specs/s.toml"))
        );
        assert!(err_of(&with("path = \"iscsi://10.0.0.5/iqn.x:d\"")).contains("disks[0].path"));
        assert!(err_of(&with(
            "path = \"iscsi://10.0.0.5/iqn.x:d/0\"\nvia = \"qemu\""
        ))
        .contains("disks[0].via"));
        assert!(err_of(&with("path = \"d.img\"\nsecrets = \"s\"")).contains("only applies"));
    }

    #[test]
    fn disk_protocol_defaults_to_nbd_and_vhost_user_needs_ferry() {
        let with = |disk: &str| GOOD.replace("path = \"disk.img\"", disk);
        let spec = VmSpec::from_toml(&with("path = \"d.img\""), Path::new("/s")).unwrap();
        assert_eq!(spec.disks[0].protocol, crate::DiskProtocol::Nbd);
        let spec = VmSpec::from_toml(
            &with("path = \"d.img\"\nprotocol = \"vhost-user\""),
            Path::new("/s"),
        )
        .unwrap();
        assert_eq!(spec.disks[0].protocol, crate::DiskProtocol::VhostUser);
        assert!(err_of(&with(
            "path = \"d.img\"\nprotocol = \"vhost-user\"\nvia = \"qemu\""
        ))
        .contains("disks[0].protocol"));
        assert!(err_of(&with("path = \"d.img\"\nprotocol = \"virtiofs\"")).contains("protocol"));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_syntax() {
        assert!(err_of(&GOOD.replace("vcpus = 2", "vcpu = 2")).contains("unknown field"));
        let e = err_of("name = ");
        assert!(e.contains("not valid TOML"), "{e}");
        assert!(err_of("").contains("missing field"));
    }
}
