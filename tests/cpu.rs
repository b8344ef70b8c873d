//! Processor compatibility on one host: the guest sees exactly the CPU its
//! setting computes, and a host's mask is enforced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ferry_workloads::cpuid;
use std::time::Duration;

fn flags_of(env: &TestEnv, name: &str) -> Vec<String> {
    let log = env.wait_console(name, cpuid::TAG, Duration::from_secs(60));
    cpuid::flags_in(&log).expect("flags line")
}

#[test]
fn a_compatible_vm_sees_only_its_level_and_a_host_vm_only_what_the_host_offers() {
    let env = TestEnv::new("cpucompat");
    // x86-64-v2 has neither avx2 nor aes, which TCG's max has.
    let spec = env.guest_spec(
        "v2",
        &GuestOpts {
            cpu: "compatible".into(),
            cpu_baseline: Some("\"x86-64-v2\"".into()),
            cmdline: "ferry.run=cpuid:500".into(),
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    let flags = flags_of(&env, "v2");
    for f in ["avx2", "aes", "avx", "sha_ni"] {
        assert!(!flags.contains(&f.to_string()), "guest sees {f}: {flags:?}");
    }
    for f in ["sse4_2", "popcnt", "cx16", "ssse3"] {
        assert!(flags.contains(&f.to_string()), "guest lacks {f}: {flags:?}");
    }
    // The computed CPU is kept with the VM.
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.run_dir.join("v2/spec.json")).unwrap())
            .unwrap();
    assert!(
        kept["cpu_model"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "sse4.2"),
        "{kept}"
    );
    run_ok(env.ferry().args(["vm", "stop", "v2", "--force"]));

    // A host withholding avx2: a `host` VM does not get it.
    let config = env.root.join("host.toml");
    std::fs::write(&config, "[cpu]\nwithhold = [\"avx2\"]\n").unwrap();
    let spec = env.guest_spec(
        "hv",
        &GuestOpts {
            cpu: "host".into(),
            cmdline: "ferry.run=cpuid:500".into(),
            ..Default::default()
        },
    );
    run_ok(
        env.ferry()
            .env("FERRY_HOST_CONFIG", &config)
            .args(["vm", "start"])
            .arg(&spec),
    );
    let flags = flags_of(&env, "hv");
    assert!(!flags.contains(&"avx2".to_string()), "{flags:?}");
    assert!(flags.contains(&"aes".to_string()), "{flags:?}");
    run_ok(env.ferry().args(["vm", "stop", "hv", "--force"]));

    // A level this host cannot give is refused before anything starts.
    let spec = env.guest_spec(
        "v4",
        &GuestOpts {
            cpu: "compatible".into(),
            cpu_baseline: Some("\"x86-64-v4\"".into()),
            ..Default::default()
        },
    );
    let err = run_err(env.ferry().args(["vm", "start"]).arg(&spec));
    assert!(
        err.contains("x86-64-v4") && err.contains("avx512f"),
        "{err}"
    );
}
