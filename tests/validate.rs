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

/// With the lab's storage host serving two targets — one open to both
/// servers, one whose ACL admits only server001 — validation passes the
/// shared LUN (same identity from both hosts; register, reserve, conflict
/// and preempt between them) and fails the LUN server002 cannot see, with
/// the reason. A LUN holding someone's key is reported in use, not touched.
#[test]
fn validation_checks_shared_luns_and_reservations() {
    let name = format!("fyl{}", std::process::id() % 100_000);
    let _lab = LabGuard(name.clone());
    let up = ferry()
        .args(["lab", "up", "--name", &name])
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    let dir = std::env::temp_dir().join(format!("ferry-validate-luns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (open, only, chap) = (
        "iqn.2026-01.dev.ferry:open",
        "iqn.2026-01.dev.ferry:server001-only",
        "iqn.2026-01.dev.ferry:chap",
    );
    let d = dir.display();
    std::fs::write(
        dir.join("san.toml"),
        format!(
            "portals = [\"10.20.0.1:3260\"]\nstate_dir = \"{d}/state\"\n\
             [[targets]]\nname = \"{open}\"\n[[targets.luns]]\nid = 0\npath = \"{d}/open.img\"\nsize = 16777216\n\
             [[targets]]\nname = \"{only}\"\nallowed_initiators = [\"iqn.2026-01.dev.ferry:server001\"]\n\
             [[targets.luns]]\nid = 0\npath = \"{d}/only.img\"\nsize = 16777216\n\
             [[targets]]\nname = \"{chap}\"\nchap = {{ user = \"ferryhost\", secret = \"hostsecret1234\" }}\n\
             [[targets.luns]]\nid = 0\npath = \"{d}/chap.img\"\nsize = 16777216\n"
        ),
    )
    .unwrap();
    let san = Command::new("ip")
        .args(["netns", "exec", &format!("{name}-dc")])
        .arg(env!("CARGO_BIN_EXE_ferry"))
        .args(["san", "serve", "--config"])
        .arg(dir.join("san.toml"))
        .stderr(std::fs::File::create(dir.join("san.log")).unwrap())
        .spawn()
        .unwrap();
    let _san = common::ChildGuard(san);
    let open_url = format!("iscsi://10.20.0.1/{open}/0");
    let only_url = format!("iscsi://10.20.0.1/{only}/0");
    let in_dc = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &format!("{name}-dc")])
            .arg(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !in_dc(&["host", "lun", "show", &open_url]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the SAN never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let hosts = format!("/run/ferry/lab/{name}/hosts.toml");
    let run = |extra: &[&str]| {
        let out = ferry()
            .args(["--json", "cluster", "validate", "--hosts-file", &hosts])
            .args(extra)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v)
    };

    let (ok, r) = run(&["--lun", &open_url, "--lun", &only_url]);
    assert!(!ok, "a LUN one host cannot see must fail validation: {r}");
    for host in ["server001", "server002"] {
        let t = find(&r, "storage", &format!("{open}/0 seen by {host}"));
        assert_eq!(t["outcome"], "pass", "{t}");
    }
    let t = find(&r, "storage", &format!("{open}/0 is the same disk"));
    assert_eq!(t["outcome"], "pass", "{t}");
    let t = find(&r, "storage", &format!("{open}/0 persistent reservations"));
    assert_eq!(t["outcome"], "pass", "{t}");
    assert_eq!(
        find(&r, "storage", &format!("{only}/0 seen by server001"))["outcome"],
        "pass"
    );
    let t = find(&r, "storage", &format!("{only}/0 seen by server002"));
    assert_eq!(t["outcome"], "fail", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("ACL"), "{t}");
    // The reservation test left no key behind.
    let shown = in_dc(&["--json", "host", "lun", "show", &open_url]);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["reservations"]["keys"], serde_json::json!([]), "{v}");

    // Someone else's key: the LUN is in use and is not touched.
    let reg = in_dc(&[
        "host",
        "lun",
        "pr",
        &open_url,
        "register-ignore",
        "--sa-key",
        "0x99",
    ]);
    assert!(reg.status.success(), "{reg:?}");
    let (ok, r) = run(&["--lun", &open_url]);
    let t = find(&r, "storage", &format!("{open}/0 persistent reservations"));
    assert_eq!(t["outcome"], "warn", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("in use"), "{t}");
    assert!(ok, "a warning alone does not fail validation: {r}");
    let shown = in_dc(&["--json", "host", "lun", "show", &open_url]);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(
        v["reservations"]["keys"],
        serde_json::json!(["0x99"]),
        "{v}"
    );

    // A target behind CHAP: refused without credentials, with the reason;
    // seen and reserved with the hosts' secrets file.
    let chap_url = format!("iscsi://10.20.0.1/{chap}/0");
    let (ok, r) = run(&["--lun", &chap_url]);
    assert!(!ok, "{r}");
    let t = find(&r, "storage", &format!("{chap}/0 seen by server001"));
    assert_eq!(t["outcome"], "fail", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("CHAP"), "{t}");
    let secrets = dir.join("iscsi-secrets.toml");
    std::fs::write(
        &secrets,
        "chap_user = \"ferryhost\"\nchap_secret = \"hostsecret1234\"\n",
    )
    .unwrap();
    let (ok, r) = run(&[
        "--lun",
        &chap_url,
        "--lun-secrets",
        secrets.to_str().unwrap(),
    ]);
    assert!(ok, "{r}");
    let t = find(&r, "storage", &format!("{chap}/0 persistent reservations"));
    assert_eq!(t["outcome"], "pass", "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}
