//! Every start-up error is one clear line, a non-zero exit, no panic and no
//! process left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Runs `ferry vm start SPEC` expecting failure; checks the error's shape.
fn start_fails(env: &TestEnv, spec: &std::path::Path, extra_env: &[(&str, &str)]) -> String {
    let name = spec.file_stem().unwrap().to_string_lossy().to_string();
    let mut cmd = env.ferry();
    cmd.args(["vm", "start"]).arg(spec);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let err = run_err(&mut cmd);
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("ferry: error: "),
        "error is not one clear line: {err}"
    );
    // Wait briefly for a failed supervisor to exit, then check nothing is left.
    std::thread::sleep(Duration::from_millis(200));
    let dir = env.run_dir.join(&name).to_string_lossy().to_string();
    assert!(
        qemu_processes(&format!("{dir}/")).is_empty(),
        "QEMU left behind after: {err}"
    );
    last.to_string()
}

fn spec_with(env: &TestEnv, name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let path = env.guest_spec(name, &GuestOpts::default());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(text)).unwrap();
    path
}

#[test]
fn qemu_missing_or_too_old() {
    let env = TestEnv::new("qemuver");
    let spec = env.guest_spec("q", &GuestOpts::default());
    let e = start_fails(
        &env,
        &spec,
        &[("FERRY_QEMU", "/nonexistent/qemu-system-x86_64")],
    );
    assert!(e.contains("not found") && e.contains("install-deps"), "{e}");

    let fake = env.root.join("qemu-system-x86_64");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7)'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = start_fails(&env, &spec, &[("FERRY_QEMU", fake.to_str().unwrap())]);
    assert!(
        e.contains("QEMU 7.2.15, too old") && e.contains("10"),
        "{e}"
    );
}

#[test]
fn kernel_or_initrd_missing() {
    let env = TestEnv::new("bootfiles");
    let spec = spec_with(&env, "k", |t| t.replace("vmlinuz", "no-such-vmlinuz"));
    let e = start_fails(&env, &spec, &[]);
    assert!(
        e.contains("kernel") && e.contains("no-such-vmlinuz") && e.contains("does not exist"),
        "{e}"
    );
    let spec = spec_with(&env, "i", |t| t.replace("initramfs.img", "gone.img"));
    let e = start_fails(&env, &spec, &[]);
    assert!(e.contains("initrd") && e.contains("gone.img"), "{e}");
}

#[test]
fn unknown_cpu_model_and_machine() {
    let env = TestEnv::new("cpumodel");
    let spec = spec_with(&env, "c", |t| {
        t.replace("cpu = \"max\"", "cpu = \"Pentium9000\"")
    });
    let e = start_fails(&env, &spec, &[]);
    assert!(
        e.contains("unknown CPU model \"Pentium9000\"") && e.contains("-cpu help"),
        "{e}"
    );
    let spec = spec_with(&env, "m", |t| {
        t.replace("cpu = \"max\"", "cpu = \"max\"\nmachine = \"vax\"")
    });
    let e = start_fails(&env, &spec, &[]);
    assert!(e.contains("unknown machine type \"vax\""), "{e}");
}

#[test]
fn memory_larger_than_the_host() {
    let env = TestEnv::new("bigmem");
    let spec = spec_with(&env, "big", |t| {
        t.replace("memory_mib = 128", "memory_mib = 50000000")
    });
    let e = start_fails(&env, &spec, &[]);
    assert!(
        e.contains("asks for 50000000 MiB") && e.contains("available"),
        "{e}"
    );
}

#[test]
fn bridge_missing() {
    let env = TestEnv::new("nobridge");
    let path = env.guest_spec(
        "nb",
        &GuestOpts {
            bridge: Some("fynosuchbr".into()),
            ..Default::default()
        },
    );
    let e = start_fails(&env, &path, &[]);
    assert!(
        e.contains("bridge fynosuchbr") && e.contains("ip link add fynosuchbr type bridge"),
        "{e}"
    );
}

#[test]
fn bad_spec_and_bad_disks() {
    let env = TestEnv::new("badspec");
    let spec = spec_with(&env, "s", |t| t.replace("vcpus = 1", "vcpus = \"one\""));
    let e = start_fails(&env, &spec, &[]);
    assert!(
        e.contains("not valid TOML") && e.contains("line 2") && e.contains("vcpus = \"one\""),
        "{e}"
    );

    let missing = env.root.join("missing.img");
    let spec = env.guest_spec(
        "d1",
        &GuestOpts {
            disks: vec![(missing, false)],
            ..Default::default()
        },
    );
    let e = start_fails(&env, &spec, &[]);
    assert!(
        e.contains("disk image (disks[0])") && e.contains("qemu-img create"),
        "{e}"
    );

    let ro = env.root.join("ro.img");
    std::fs::write(&ro, vec![0u8; 1 << 20]).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
    let spec = env.guest_spec(
        "d2",
        &GuestOpts {
            disks: vec![(ro, false)],
            ..Default::default()
        },
    );
    let e = start_fails(&env, &spec, &[]);
    assert!(
        e.contains("read-only") && e.contains("readonly = true"),
        "{e}"
    );
}

#[test]
fn qemu_that_dies_at_start_is_reported_with_its_reason() {
    // Two VMs writing one image: QEMU's image locking makes the second QEMU
    // exit at start-up. Ferry must say why and leave nothing behind.
    let env = TestEnv::new("diesatstart");
    let img = env.root.join("shared.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let opts = GuestOpts {
        disks: vec![(img, false)],
        qemu_disks: true,
        ..Default::default()
    };
    let first = env.guest_spec("first", &opts);
    let second = env.guest_spec("second", &opts);
    run_ok(env.ferry().args(["vm", "start"]).arg(&first));
    let e = start_fails(&env, &second, &[]);
    assert!(
        e.contains("QEMU exited while starting VM second") && e.contains("\"write\" lock"),
        "{e}"
    );
    assert_eq!(e.matches("QEMU exited while starting").count(), 1, "{e}");
    let st = env.status("second");
    assert_eq!(st["state"], "failed", "{st}");
    // The first VM is untouched.
    assert_eq!(env.status("first")["state"], "running");
    run_ok(env.ferry().args(["vm", "stop", "first", "--force"]));
    let dir = env.run_dir.to_string_lossy().to_string();
    assert!(qemu_processes(&dir).is_empty());
}

#[test]
fn starting_a_running_vm_twice_is_refused() {
    let env = TestEnv::new("twice");
    let spec = env.guest_spec("twice", &GuestOpts::default());
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    let err = run_err(env.ferry().args(["vm", "start"]).arg(&spec));
    assert!(err.contains("already running"), "{err}");
    assert_eq!(env.status("twice")["state"], "running");
    run_ok(env.ferry().args(["vm", "stop", "twice", "--force"]));
}
