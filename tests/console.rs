//! The serial console: attach from a terminal, type into the guest's shell,
//! detach with Ctrl-]; without a terminal the console is streamed read-only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Reads from `src` until `pattern` appears or the time runs out.
fn read_until(src: &mut std::fs::File, pattern: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let fd = src.as_raw_fd();
    while Instant::now() < deadline {
        let mut fds = [nix::poll::PollFd::new(
            // SAFETY: `fd` belongs to `src`, which outlives this borrow.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap_or(0) == 0 {
            continue;
        }
        match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&seen).contains(pattern) {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn interactive_console_reaches_the_guest_shell_and_detaches() {
    let env = TestEnv::new("console");
    let spec = env.guest_spec("con", &GuestOpts::default());
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    env.wait_console("con", "FERRY-GUEST-READY", Duration::from_secs(60));

    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = || -> Stdio { Stdio::from(pty.slave.try_clone().unwrap()) };
    let mut child = env
        .ferry()
        .args(["vm", "console", "con"])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    let banner = read_until(&mut master, "Ctrl-] detaches", Duration::from_secs(10));
    assert!(banner.contains("attached to con"), "{banner}");
    // The shell echoes our input; the arithmetic proves the guest ran it.
    master.write_all(b"\recho FERRY-$((6*7))\r").unwrap();
    let out = read_until(&mut master, "FERRY-42", Duration::from_secs(20));
    assert!(
        out.contains("FERRY-42"),
        "guest shell did not answer: {out:?}"
    );
    master.write_all(&[0x1d]).unwrap();
    let out = read_until(&mut master, "detached", Duration::from_secs(10));
    assert!(out.contains("detached"), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "console did not exit after Ctrl-]"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    drop::<OwnedFd>(pty.master);
    drop(master);
    assert_eq!(
        env.status("con")["state"],
        "running",
        "detaching must leave the VM running"
    );
    run_ok(env.ferry().args(["vm", "stop", "con", "--force"]));
}

#[test]
fn console_without_a_terminal_streams_until_the_vm_stops() {
    let env = TestEnv::new("constream");
    let spec = env.guest_spec(
        "cs",
        &GuestOpts {
            cmdline: "ferry.run=counter:100".into(),
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    env.wait_console("cs", "FERRY-GUEST-READY", Duration::from_secs(60));
    let child = env
        .ferry()
        .args(["vm", "console", "cs"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    run_ok(env.ferry().args(["vm", "stop", "cs"]));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FERRY-COUNTER"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("console closed"));
    let log = run_ok(env.ferry().args(["vm", "console", "cs", "--log"]));
    assert!(String::from_utf8_lossy(&log.stdout).contains("FERRY-GUEST-READY"));
}
