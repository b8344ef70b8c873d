//! Ferry's block service on the real data path: QEMU's virtio-blk disks go
//! through `ferry block serve` (NBD on a unix socket, or vhost-user-blk) to
//! image files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ferry_workloads::disktest;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BLOCKS: u64 = 1024;

fn image(env: &TestEnv, name: &str) -> PathBuf {
    let p = env.root.join(name);
    std::fs::write(&p, vec![0u8; (BLOCKS as usize) * disktest::BLOCK]).unwrap();
    p
}

/// Waits until the console shows `n` more flush lines than it had at `since`.
fn wait_more_flushes(env: &TestEnv, vm: &str, since: usize, n: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let log = env.console(vm);
        let flushes = log
            .lines()
            .filter(|l| disktest::parse_flushed(l).is_some())
            .count();
        if flushes >= since + n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "guest stopped flushing ({flushes} flushes); console:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn flush_count(log: &str) -> usize {
    log.lines()
        .filter(|l| disktest::parse_flushed(l).is_some())
        .count()
}

fn assert_durable(img: &Path, console: &str) {
    let (gen, upto) = disktest::last_flushed(console).expect("the guest reported flushes");
    match disktest::check_durable(img, BLOCKS, gen, upto).unwrap() {
        Ok(r) => assert!(r.max_generation.is_some(), "{}", r.summary()),
        Err(why) => panic!("{why}"),
    }
    assert!(
        !console.contains("I/O error"),
        "guest saw I/O errors:\n{console}"
    );
}

#[test]
fn two_disks_through_the_block_service_verify_from_the_host() {
    two_disks_verify_from_the_host("blk2", None);
}

#[test]
fn two_vhost_user_disks_verify_from_the_host() {
    two_disks_verify_from_the_host("blk2vu", Some("vhost-user"));
}

fn two_disks_verify_from_the_host(tag: &str, protocol: Option<&'static str>) {
    let env = TestEnv::new(tag);
    let (a, b) = (image(&env, "a.img"), image(&env, "b.img"));
    let spec = env.guest_spec(
        "two",
        &GuestOpts {
            cmdline: format!("ferry.run=disktest:/dev/vda:{BLOCKS}:write:2 ferry.run=disktest:/dev/vdb:{BLOCKS}:write:3"),
            disks: vec![(a.clone(), false), (b.clone(), false)],
            disk_protocol: protocol,
            // Two vCPUs: a vhost-user disk then has a queue per vCPU, and
            // the two workloads send on both.
            vcpus: 2,
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    let st = env.status("two");
    assert!(st["block_pid"].as_i64().is_some(), "no block service: {st}");
    if protocol.is_some() {
        // Served as vhost-user devices, not NBD exports.
        let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", st["qemu_pid"])).unwrap();
        assert_eq!(
            cmdline.matches("vhost-user-blk-pci").count(),
            2,
            "{cmdline}"
        );
        assert_eq!(cmdline.matches("num-queues=2").count(), 2, "{cmdline}");
        assert!(!cmdline.contains("\"nbd\""), "{cmdline}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.console("two").matches("exited status=0").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "workloads did not finish:\n{}",
            env.console("two")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The service samples every second; its totals must show the traffic.
    std::thread::sleep(Duration::from_millis(1200));
    let out = run_ok(env.ferry().args(["--json", "vm", "disks", "two"]));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats.as_array().unwrap().len(), 2, "{stats}");
    for d in stats.as_array().unwrap() {
        assert!(
            d["write_bytes"].as_u64().unwrap() >= 2 * BLOCKS * disktest::BLOCK as u64,
            "{d}"
        );
        assert!(d["flushes"].as_u64().unwrap() > 0, "{d}");
        assert_eq!(d["errors"], 0, "{d}");
    }
    run_ok(env.ferry().args(["vm", "stop", "two", "--force"]));
    let ra = disktest::verify(&a, BLOCKS).unwrap();
    let rb = disktest::verify(&b, BLOCKS).unwrap();
    assert!(
        ra.all_valid() && ra.max_generation == Some(2),
        "{}",
        ra.summary()
    );
    assert!(
        rb.all_valid() && rb.max_generation == Some(3),
        "{}",
        rb.summary()
    );
}

#[test]
fn killed_block_service_is_restarted_and_no_flushed_write_is_lost() {
    kill_block_service_under_load("blkkill", None);
}

#[test]
fn killed_vhost_user_block_service_is_restarted_and_no_flushed_write_is_lost() {
    kill_block_service_under_load("blkkillvu", Some("vhost-user"));
}

fn kill_block_service_under_load(tag: &str, protocol: Option<&'static str>) {
    let env = TestEnv::new(tag);
    let img = image(&env, "k.img");
    let spec = env.guest_spec(
        "kill",
        &GuestOpts {
            cmdline: format!("ferry.run=disktest:/dev/vda:{BLOCKS}:write"),
            disks: vec![(img.clone(), false)],
            disk_protocol: protocol,
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    let log = wait_more_flushes(&env, "kill", 0, 20, Duration::from_secs(120));
    for round in 0..2 {
        let st = env.status("kill");
        let pid = st["block_pid"].as_i64().expect("block service pid");
        run_ok(std::process::Command::new("kill").args(["-9", &pid.to_string()]));
        // The supervisor restarts it and the guest keeps writing through it.
        let before = flush_count(&env.console("kill"));
        wait_more_flushes(&env, "kill", before, 20, Duration::from_secs(60));
        let st = env.status("kill");
        assert_eq!(st["block_restarts"], round + 1, "{st}");
        assert_ne!(st["block_pid"].as_i64(), Some(pid), "{st}");
        assert_eq!(st["state"], "running", "{st}");
    }
    let _ = log;
    run_ok(env.ferry().args(["vm", "stop", "kill", "--force"]));
    assert_durable(&img, &env.console("kill"));
}

#[test]
fn disk_path_survives_live_migration_between_two_block_services() {
    migrate_under_disk_load("blkmig", None);
}

#[test]
fn vhost_user_disk_survives_live_migration_between_two_block_services() {
    migrate_under_disk_load("blkmigvu", Some("vhost-user"));
}

fn migrate_under_disk_load(tag: &str, protocol: Option<&'static str>) {
    // Two "hosts": two runtime directories, each with its own supervisor,
    // block service and QEMU, sharing the image as shared storage would.
    let src = TestEnv::new(&format!("{tag}src"));
    let dst = TestEnv::new(&format!("{tag}dst"));
    let img = image(&src, "m.img");
    let opts = GuestOpts {
        cmdline: format!("ferry.run=disktest:/dev/vda:{BLOCKS}:write ferry.run=counter:200"),
        disks: vec![(img.clone(), false)],
        disk_protocol: protocol,
        // Two vCPUs: a vhost-user disk has two queues to drain.
        vcpus: 2,
        ..Default::default()
    };
    let spec = src.guest_spec("mig", &opts);
    run_ok(src.ferry().args(["vm", "start"]).arg(&spec));
    wait_more_flushes(&src, "mig", 0, 10, Duration::from_secs(120));
    run_ok(dst.ferry().args(["vm", "start", "--incoming"]).arg(&spec));
    assert_eq!(dst.status("mig")["state"], "paused");

    let uri = format!("unix:{}", src.root.join("migrate.sock").display());
    qmp_migrate(&src.run_dir.join("mig"), &dst.run_dir.join("mig"), &uri);
    run_ok(dst.ferry().args(["vm", "resume", "mig"]));
    run_ok(src.ferry().args(["vm", "stop", "mig", "--force"]));
    // The guest keeps writing and flushing on the destination.
    let before = flush_count(&dst.console("mig"));
    let log = wait_more_flushes(&dst, "mig", before, 20, Duration::from_secs(60));
    assert!(log.contains("FERRY-COUNTER"), "{log}");
    run_ok(dst.ferry().args(["vm", "stop", "mig", "--force"]));
    assert_durable(&img, &dst.console("mig"));
}

/// `ferry block serve --socket SOCK ARGS...`, killed when dropped; returns
/// once it listens.
fn serve_until_listening(env: &TestEnv, sock: &Path, args: &[String]) -> ChildGuard {
    let child = ChildGuard(
        env.ferry()
            .args(["block", "serve", "--socket"])
            .arg(sock)
            .args(args)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(Instant::now() < deadline, "service did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn block_service_refuses_bad_configuration_clearly() {
    let env = TestEnv::new("blkbad");
    let sock = env.root.join("b.sock");
    let img = image(&env, "ok.img");
    // A missing image.
    let err = run_err(
        env.ferry()
            .args(["block", "serve", "--socket"])
            .arg(&sock)
            .args(["--disk", "d=/nonexistent/x.img"]),
    );
    assert!(
        err.contains("disk d: cannot open /nonexistent/x.img read-write"),
        "{err}"
    );
    // A socket a live service holds.
    let disk = format!("d={}", img.display());
    let first = serve_until_listening(&env, &sock, &["--disk".into(), disk.clone()]);
    let err = run_err(
        env.ferry()
            .args(["block", "serve", "--socket"])
            .arg(&sock)
            .arg("--disk")
            .arg(format!("d={}", img.display())),
    );
    assert!(
        err.contains("is in use by another running service"),
        "{err}"
    );
    drop(first);
    // A vhost-user socket a live service holds.
    let vsock = env.root.join("d.vhost");
    let vhost = serve_until_listening(
        &env,
        &sock,
        &[
            "--disk".into(),
            disk.clone(),
            "--vhost-user".into(),
            format!("d={}", vsock.display()),
        ],
    );
    let err = run_err(
        env.ferry()
            .args(["block", "serve", "--socket"])
            .arg(env.root.join("other.sock"))
            .arg("--disk")
            .arg(format!("d={}", img.display()))
            .arg("--vhost-user")
            .arg(format!("d={}", vsock.display())),
    );
    assert!(
        err.contains(&format!("socket {} is in use", vsock.display())),
        "{err}"
    );
    drop(vhost);
    let err = run_err(
        env.ferry()
            .args(["block", "serve", "--socket"])
            .arg(&sock)
            .arg("--disk")
            .arg(format!("d={}", img.display()))
            .args(["--vhost-user", "e=/tmp/x.sock"]),
    );
    assert!(err.contains("no --disk is named \"e\""), "{err}");
    // A read-only export refuses writes with EPERM through a real NBD client.
    let ro = serve_until_listening(&env, &sock, &["--disk".into(), format!("{disk}:ro")]);
    let url = format!("nbd+unix:///d?socket={}", sock.display());
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 4096", &url])
        .output()
        .expect("qemu-io (qemu-utils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // QEMU sees the export's read-only flag and refuses to open it writable.
    assert!(text.contains("Permission denied"), "{text}");
    drop(ro);
}
