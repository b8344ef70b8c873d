//! `ferry cluster validate` on a lab of its own: a sound configuration
//! passes (with warnings where this machine has no KVM); a cut network and a
//! host withholding a CPU feature are reported with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::LabGuard;
use std::process::Command;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

fn validate(hosts: &str) -> (bool, serde_json::Value) {
    let out = ferry()
        .args(["--json", "cluster", "validate", "--hosts-file", hosts])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn find<'a>(r: &'a serde_json::Value, category: &str, test_part: &str) -> &'a serde_json::Value {
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["category"] == category && t["test"].as_str().unwrap().contains(test_part))
        .unwrap_or_else(|| panic!("no {category} test on {test_part}: {r}"))
}

#[test]
fn validation_passes_a_sound_lab_and_names_what_is_wrong() {
    let name = format!("fyv{}", std::process::id() % 100_000);
    let _guard = LabGuard(name.clone());
    let up = ferry()
        .args(["lab", "up", "--name", &name])
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    let hosts = format!("/run/ferry/lab/{name}/hosts.toml");

    let (ok, r) = validate(&hosts);
    assert!(ok, "{r}");
    for net in ["internal", "external"] {
        let t = find(&r, "network", &format!("server001 -> server002 on {net}"));
        assert_eq!(t["outcome"], "pass", "{t}");
    }
    assert_eq!(find(&r, "cpu", "baseline")["outcome"], "pass");
    assert_eq!(find(&r, "clock", "server002")["outcome"], "pass");

    // server002 withholds avx2 and loses its internal link.
    std::fs::write(
        format!("/run/ferry/lab/{name}/server002.toml"),
        "[cpu]\nwithhold = [\"avx2\"]\n",
    )
    .unwrap();
    let down = Command::new("ip")
        .args([
            "-n",
            &format!("{name}-server002"),
            "link",
            "set",
            "int",
            "down",
        ])
        .status()
        .unwrap();
    assert!(down.success());
    let (ok, r) = validate(&hosts);
    assert!(!ok, "validation must fail: {r}");
    let t = find(&r, "network", "server001 -> server002 on internal");
    assert_eq!(t["outcome"], "fail", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("unreachable"), "{t}");
    assert_eq!(
        find(&r, "network", "server001 -> server002 on external")["outcome"],
        "pass"
    );
    let b = find(&r, "cpu", "baseline");
    assert!(b["reason"].as_str().unwrap().contains("avx2"), "{b}");
}
