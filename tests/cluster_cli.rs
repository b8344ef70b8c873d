//! `ferry cluster create|join|status` and `ferry daemon` as an operator
//! runs them: two members on 127.0.0.1, each with its own configuration
//! and data directory; the daemons are child processes, killed at the end
//! (or on failure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(ferry_lab::unique_name("ferry-cluster-cli"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon that is stopped when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env("FERRY_LOG", "warn").env_remove("FERRY_TOKEN");
    c
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run ferry");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn config(root: &Path, id: u64, port: u16, peers: &[u16]) -> PathBuf {
    let path = root.join(format!("node{id}.toml"));
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    std::fs::write(
        &path,
        format!(
            "id = {id}\nname = \"node{id}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\npeers = [{}]\n[raft]\nheartbeat_ms = 100\nelection_timeout_ms = [400, 800]\n",
            root.join(format!("data{id}")).display(),
            peers.join(", ")
        ),
    )
    .expect("write config");
    path
}

fn daemon(config: &Path) -> Daemon {
    Daemon(
        ferry()
            .args(["daemon", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn daemon"),
    )
}

/// Runs `ferry --json cluster status` until it answers.
fn status(config: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ferry()
            .args(["--json", "cluster", "status", "--config"])
            .arg(config)
            .output()
            .expect("run");
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).expect("json");
        }
        assert!(
            Instant::now() < deadline,
            "no status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn create_join_status_and_restart_through_the_cli() {
    let tmp = TempDir::new();
    let (p1, p2) = (free_port(), free_port());
    let c1 = config(tmp.path(), 1, p1, &[]);
    let c2 = config(tmp.path(), 2, p2, &[p1]);

    let out = ok(ferry()
        .args(["--json", "cluster", "create", "--config"])
        .arg(&c1));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let token = made["token"].as_str().expect("token").to_string();
    let ca_cert = PathBuf::from(made["ca_cert"].as_str().expect("ca_cert"));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("data1/api-token"))
            .expect("token file")
            .trim(),
        token
    );
    let again = ferry()
        .args(["cluster", "create", "--config"])
        .arg(&c1)
        .output()
        .expect("run");
    assert!(!again.status.success(), "a second create is refused");

    let mut d1 = Some(daemon(&c1));
    assert_eq!(status(&c1)["status"]["leader"], 1);

    // Without the token, no certificate.
    let out = ferry()
        .args(["cluster", "join", "--token", "wrong", "--ca-cert"])
        .arg(&ca_cert)
        .arg("--config")
        .arg(&c2)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{out:?}"
    );

    // First pass: the certificate; second pass, daemon running: membership.
    let join = |c: &Path| {
        let out = ok(ferry()
            .args(["--json", "cluster", "join", "--token", &token, "--ca-cert"])
            .arg(&ca_cert)
            .arg("--config")
            .arg(c));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    assert_eq!(join(&c2)["joined"], false);
    let mut d2 = Some(daemon(&c2));
    let joined = join(&c2);
    assert_eq!(joined["joined"], true, "{joined}");

    let s = status(&c2);
    assert_eq!(
        s["status"]["voters"].as_object().expect("voters").len(),
        2,
        "{s}"
    );
    assert_eq!(s["state"]["hosts"]["node2"]["state"], "up", "{s}");

    // The CLI away from the members: address, CA certificate and token.
    let out = ok(ferry()
        .args([
            "cluster",
            "status",
            "--server",
            &format!("127.0.0.1:{p2}"),
            "--ca-cert",
        ])
        .arg(&ca_cert)
        .env("FERRY_TOKEN", &token));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("node1") && text.contains("node2"), "{text}");

    let out = ok(ferry()
        .args(["--json", "cluster", "events", "--since", "1", "--config"])
        .arg(&c1));
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let messages: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages.contains(&"host node2 added (joining)"),
        "{messages:?}"
    );
    assert!(
        !messages.contains(&"host node1 added (up)"),
        "since 1: {messages:?}"
    );

    // A new token; the old one is refused.
    let out = ok(ferry()
        .args(["--json", "cluster", "rotate-token", "--config"])
        .arg(&c1));
    let new_token = serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
        ["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_ne!(new_token, token);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("data1/api-token"))
            .expect("token file")
            .trim(),
        new_token
    );
    let by_token = |t: &str| {
        ferry()
            .args([
                "cluster",
                "status",
                "--server",
                &format!("127.0.0.1:{p1}"),
                "--ca-cert",
            ])
            .arg(&ca_cert)
            .env("FERRY_TOKEN", t)
            .output()
            .expect("run")
    };
    let old = by_token(&token);
    assert!(
        !old.status.success() && String::from_utf8_lossy(&old.stderr).contains("401"),
        "{old:?}"
    );
    assert!(by_token(&new_token).status.success());

    // Both daemons are killed and start again from their directories.
    let applied = s["status"]["last_applied"].as_u64().expect("applied");
    drop(d1.take());
    drop(d2.take());
    let _d1 = daemon(&c1);
    let _d2 = daemon(&c2);
    let s = status(&c1);
    assert_eq!(
        s["status"]["voters"].as_object().expect("voters").len(),
        2,
        "{s}"
    );
    assert!(s["state"]["api_token_sha256"].is_string(), "{s}");
    assert_eq!(s["state"]["hosts"]["node2"]["state"], "up", "{s}");
    assert!(
        s["status"]["last_applied"].as_u64().expect("applied") >= applied,
        "the log goes on: {s}"
    );

    // Node 2 leaves; node 1 goes on alone, and node 2's certificate is
    // refused from then on.
    let out = ok(ferry()
        .args(["--json", "cluster", "leave", "--config"])
        .arg(&c2));
    let left: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(left["left"], 2, "{left}");
    let s = status(&c1);
    assert_eq!(
        s["status"]["voters"].as_object().expect("voters").len(),
        1,
        "{s}"
    );
    assert!(s["state"]["hosts"].get("node2").is_none(), "{s}");
    let out = ferry()
        .args(["cluster", "status", "--config"])
        .arg(&c2)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );
}
