//! Each guest workload runs and reports; the UDP responder answers a client in
//! another network namespace across a bridge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ferry_lab::{unique_name, Netns};
use ferry_workloads::disktest;
use std::time::Duration;

#[test]
fn memtest_rewrites_and_verifies_memory() {
    let env = TestEnv::new("memtest");
    let spec = env.guest_spec(
        "mem",
        &GuestOpts {
            memory_mib: 192,
            cmdline: "ferry.run=memtest:64:max".into(),
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    let log = env.wait_console("mem", "FERRY-MEMTEST ok", Duration::from_secs(90));
    assert!(!log.contains("FERRY-MEMTEST FAIL"), "{log}");
    let rewritten: f64 = field(&log, "FERRY-MEMTEST ok", "rewritten_mib")
        .unwrap()
        .parse()
        .unwrap();
    assert!(rewritten > 0.0, "{log}");
    run_ok(env.ferry().args(["vm", "stop", "mem", "--force"]));
}

#[test]
fn disktest_blocks_verify_in_the_guest_and_from_the_host() {
    let env = TestEnv::new("disktest");
    let img = env.root.join("data.img");
    let blocks = 512u64;
    std::fs::write(&img, vec![0u8; (blocks as usize) * disktest::BLOCK * 2]).unwrap();
    let spec = env.guest_spec(
        "disk",
        &GuestOpts {
            cmdline: format!("ferry.run=disktest:/dev/vda:{blocks}:write:2"),
            disks: vec![(img.clone(), false)],
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    let log = env.wait_console(
        "disk",
        "FERRY-GUEST workload disktest",
        Duration::from_secs(120),
    );
    assert!(
        log.contains(&format!(
            "disktest:/dev/vda:{blocks}:write:2 exited status=0"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("FERRY-DISKTEST flushed gen=2 upto={blocks}")),
        "{log}"
    );
    run_ok(env.ferry().args(["vm", "stop", "disk", "--force"]));

    let report = disktest::verify(&img, blocks).unwrap();
    assert!(report.all_valid(), "{}", report.summary());
    assert_eq!(
        (report.min_generation, report.max_generation),
        (Some(2), Some(2))
    );

    // The guest verifies the same blocks through its own virtio disk.
    let spec = env.guest_spec(
        "verify",
        &GuestOpts {
            cmdline: format!("ferry.run=disktest:/dev/vda:{blocks}:verify"),
            disks: vec![(img.clone(), true)],
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    let log = env.wait_console("verify", "FERRY-DISKTEST verify", Duration::from_secs(90));
    assert!(
        log.contains(&format!(
            "FERRY-DISKTEST verify ok blocks={blocks} unwritten=0 failed=0"
        )),
        "{log}"
    );
    run_ok(env.ferry().args(["vm", "stop", "verify", "--force"]));

    // A corrupted block is caught from the host.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[7 * disktest::BLOCK + 100] ^= 1;
    std::fs::write(&img, bytes).unwrap();
    let report = disktest::verify(&img, blocks).unwrap();
    assert_eq!(report.failed, 1, "{}", report.summary());
}

#[test]
fn udp_echo_answers_a_client_across_a_bridge() {
    let env = TestEnv::new("echo");
    let host = Netns::create(&unique_name("fyh")).expect("host namespace");
    let client = Netns::create(&unique_name("fyc")).expect("client namespace");
    host.add_bridge("br0", None).unwrap();
    host.link_to("br0", "veth-c", &client, "eth0", "10.99.0.100/24")
        .unwrap();
    let spec = env.guest_spec(
        "echo",
        &GuestOpts {
            cmdline: "ferry.ip=10.99.0.2/24 ferry.run=echo:7777".into(),
            bridge: Some("br0".into()),
            ..Default::default()
        },
    );
    run_ok(env.ferry_in(&host).args(["vm", "start"]).arg(&spec));
    env.wait_console("echo", "FERRY-ECHO listening", Duration::from_secs(60));
    let mut probe = client.command(env!("CARGO_BIN_EXE_ferry"));
    probe.args([
        "--json",
        "probe",
        "10.99.0.2:7777",
        "--interval-ms",
        "2",
        "--duration",
        "2",
    ]);
    let out = run_ok(&mut probe);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = r["sent"].as_u64().unwrap();
    let received = r["received"].as_u64().unwrap();
    assert!(sent >= 500, "{r}");
    // The first probes may race ARP; nearly all must come back.
    assert!(received * 100 >= sent * 80, "too many probes lost: {r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    run_ok(env.ferry_in(&host).args(["vm", "stop", "echo", "--force"]));
    let tap = ferry_vm::net::tap_name("echo", 0);
    let links = host.ip(&["link"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&tap),
        "TAP {tap} left behind"
    );
}
