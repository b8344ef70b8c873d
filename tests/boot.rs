//! The test guest boots under Ferry and reports the CPUs and memory asked for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

fn boot_and_check(test: &str, vcpus: u32, memory_mib: u64) {
    let env = TestEnv::new(test);
    let spec = env.guest_spec(
        "boot",
        &GuestOpts {
            vcpus,
            memory_mib,
            ..Default::default()
        },
    );
    let out = run_ok(env.ferry().args(["vm", "run"]).arg(&spec).args([
        "--until",
        "FERRY-GUEST-READY",
        "--timeout",
        "120",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FERRY-GUEST-READY"),
        "no ready line in: {stdout}"
    );
    let cpus: u32 = field(&stdout, "FERRY-GUEST-READY", "cpus")
        .expect("cpus=")
        .parse()
        .expect("number");
    let ram: u64 = field(&stdout, "FERRY-GUEST-READY", "ram_mib")
        .expect("ram_mib=")
        .parse()
        .expect("number");
    assert_eq!(cpus, vcpus, "guest sees {cpus} CPUs, spec asked {vcpus}");
    assert!(
        ram <= memory_mib && ram + 2 >= memory_mib,
        "guest sees {ram} MiB of RAM, spec asked {memory_mib}"
    );
    // `run --until` stops the VM gracefully afterwards.
    let st = env.status("boot");
    assert_eq!(st["state"], "stopped", "{st}");
    assert!(
        st["detail"]
            .as_str()
            .unwrap_or("")
            .contains("guest-shutdown"),
        "{st}"
    );
    assert_eq!(st["accel"], "tcg", "this machine must choose TCG: {st}");
    assert!(
        qemu_processes(&env.run_dir.to_string_lossy()).is_empty(),
        "QEMU left behind"
    );
}

#[test]
fn boots_with_one_vcpu() {
    boot_and_check("boot1", 1, 128);
}

#[test]
fn boots_with_two_vcpus() {
    boot_and_check("boot2", 2, 256);
}
