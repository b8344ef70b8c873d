//! The accelerator probe: TCG on a host without vmx/svm, with the reason; the
//! probe guest that decides for KVM really boots (checked here under TCG).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ferry_qemu::{accel, Accel, QemuBinary};

#[test]
fn chooses_tcg_here_and_says_why() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let has_hw = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
    let env = TestEnv::new("accel");
    let out = run_ok(env.ferry().args(["--json", "host", "accel"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if has_hw {
        assert!(v["reason"].as_str().unwrap().contains("probe guest"), "{v}");
    } else {
        assert_eq!(v["accel"], "tcg", "{v}");
        assert!(v["reason"].as_str().unwrap().contains("no vmx/svm"), "{v}");
    }
    let out = run_ok(
        env.ferry()
            .args(["--json", "host", "accel", "--accel", "kvm"]),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accel"], "kvm", "--accel must override: {v}");
}

#[test]
fn probe_guest_boots_and_prints_its_line() {
    let qemu = QemuBinary::find().expect("QEMU 10 (scripts/install-deps)");
    let took = accel::boot_probe(&qemu, Accel::Tcg).expect("probe guest boots under TCG");
    assert!(took.as_secs() < 10, "{took:?}");
}
