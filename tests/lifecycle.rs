//! Pause, resume, stop, and a QEMU killed behind Ferry's back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ferry_workloads::counter;
use std::time::Duration;

fn counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(counter::parse_line)
        .map(|c| c.n)
        .collect()
}

#[test]
fn pause_stops_the_counter_and_resume_restarts_it() {
    let env = TestEnv::new("pause");
    let spec = env.guest_spec(
        "pause",
        &GuestOpts {
            cmdline: "ferry.run=counter:100".into(),
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    env.wait_console("pause", "FERRY-COUNTER n=5 ", Duration::from_secs(60));

    let out = run_ok(env.ferry().args(["--json", "vm", "pause", "pause"]));
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["state"], "paused", "{rec}");
    std::thread::sleep(Duration::from_millis(300));
    let before = counts(&env.console("pause"));
    std::thread::sleep(Duration::from_millis(1500));
    let during = counts(&env.console("pause"));
    assert_eq!(before, during, "the counter advanced while paused");

    let out = run_ok(env.ferry().args(["--json", "vm", "resume", "pause"]));
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["state"], "running", "{rec}");
    let last = *during.last().expect("counted before pausing");
    env.wait_console(
        "pause",
        &format!("FERRY-COUNTER n={} ", last + 5),
        Duration::from_secs(30),
    );
    let all = counts(&env.console("pause"));
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "count not monotonic: {all:?}"
    );

    let out = run_ok(
        env.ferry()
            .args(["--json", "vm", "stop", "pause", "--timeout", "20"]),
    );
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["state"], "stopped", "{rec}");
    assert!(
        rec["detail"].as_str().unwrap().contains("guest-shutdown"),
        "graceful stop expected: {rec}"
    );
    assert!(
        qemu_processes(&env.run_dir.to_string_lossy()).is_empty(),
        "QEMU left behind"
    );
}

#[test]
fn forced_stop_is_clean() {
    let env = TestEnv::new("force");
    let spec = env.guest_spec("force", &GuestOpts::default());
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    let out = run_ok(
        env.ferry()
            .args(["--json", "vm", "stop", "force", "--force"]),
    );
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["state"], "stopped", "{rec}");
    assert!(
        rec["detail"].as_str().unwrap().contains("host-qmp-quit"),
        "{rec}"
    );
    assert!(
        qemu_processes(&env.run_dir.to_string_lossy()).is_empty(),
        "QEMU left behind"
    );
    // Stopping again is not an error; a VM that never existed is.
    run_ok(env.ferry().args(["vm", "stop", "force"]));
    let err = run_err(env.ferry().args(["vm", "stop", "nosuchvm"]));
    assert!(err.contains("no VM named nosuchvm"), "{err}");
}

#[test]
fn kill_9_of_qemu_is_reported_as_a_crash() {
    let env = TestEnv::new("kill9");
    let spec = env.guest_spec(
        "kill9",
        &GuestOpts {
            cmdline: "ferry.run=counter:200".into(),
            ..Default::default()
        },
    );
    run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
    env.wait_console("kill9", "FERRY-GUEST-READY", Duration::from_secs(60));
    let st = env.status("kill9");
    let pid = st["qemu_pid"].as_i64().expect("qemu pid");
    run_ok(std::process::Command::new("kill").args(["-9", &pid.to_string()]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = env.status("kill9");
        if st["state"] != "running" || std::time::Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st["state"], "crashed", "{st}");
    assert!(st["detail"].as_str().unwrap().contains("signal 9"), "{st}");
    let err = run_err(env.ferry().args(["vm", "pause", "kill9"]));
    assert!(err.contains("crashed, not running"), "{err}");
}
