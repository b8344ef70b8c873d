//! Helpers shared by the end-to-end tests: a private runtime directory, the
//! `ferry` binary, the built test guest, spec files and console waits.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod targets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The guest directory, or a failure that says how to build it.
pub fn guest_dir() -> PathBuf {
    let dir = ferry_guest::default_dir();
    for f in ["vmlinuz", "initramfs.img"] {
        assert!(
            dir.join(f).is_file(),
            "the test guest is missing ({}); build it with scripts/build (or `ferry guest build`)",
            dir.join(f).display()
        );
    }
    dir
}

/// One test's private world: its own runtime directory and temp files.
/// VMs still running when it is dropped are killed.
pub struct TestEnv {
    /// Root of this test's files.
    pub root: PathBuf,
    /// `FERRY_RUN_DIR` for every command of this test.
    pub run_dir: PathBuf,
}

impl TestEnv {
    /// A fresh environment named after the test.
    pub fn new(test: &str) -> Self {
        let root = std::env::temp_dir().join(ferry_lab::unique_name(&format!("ferry-{test}")));
        let run_dir = root.join("run");
        std::fs::create_dir_all(&run_dir).expect("create test dir");
        TestEnv { root, run_dir }
    }

    /// `ferry ARGS` with this environment.
    pub fn ferry(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.env("FERRY_RUN_DIR", &self.run_dir);
        c
    }

    /// `ferry ARGS` inside a network namespace.
    pub fn ferry_in(&self, ns: &ferry_lab::Netns) -> Command {
        let mut c = ns.command(env!("CARGO_BIN_EXE_ferry"));
        c.env("FERRY_RUN_DIR", &self.run_dir);
        c
    }

    /// Writes a spec for the test guest and returns its path.
    pub fn guest_spec(&self, name: &str, opts: &GuestOpts) -> PathBuf {
        let g = guest_dir();
        let mut text = format!(
            "name = \"{name}\"\nvcpus = {}\nmemory_mib = {}\ncpu = \"{}\"\n[boot]\nkernel = \"{}\"\ninitrd = \"{}\"\ncmdline = \"quiet {}\"\n",
            opts.vcpus,
            opts.memory_mib,
            opts.cpu,
            g.join("vmlinuz").display(),
            g.join("initramfs.img").display(),
            opts.cmdline
        );
        if let Some(b) = &opts.cpu_baseline {
            // Top-level keys must come before the first table.
            text = text.replacen("[boot]", &format!("cpu_baseline = {b}\n[boot]"), 1);
        }
        let via = if opts.qemu_disks { "qemu" } else { "ferry" };
        for (path, readonly) in &opts.disks {
            text.push_str(&format!(
                "[[disks]]\npath = \"{}\"\nreadonly = {readonly}\nvia = \"{via}\"\n",
                path.display()
            ));
            if let Some(p) = opts.disk_protocol {
                text.push_str(&format!("protocol = \"{p}\"\n"));
            }
        }
        if let Some(bridge) = &opts.bridge {
            text.push_str(&format!(
                "[[nics]]\nmac = \"52:54:00:aa:00:02\"\nbridge = \"{bridge}\"\n"
            ));
        }
        let path = self.root.join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write spec");
        path
    }

    /// The console log of VM `name`.
    pub fn console(&self, name: &str) -> String {
        std::fs::read_to_string(self.run_dir.join(name).join("console.log")).unwrap_or_default()
    }

    /// Waits until the console shows `pattern`, failing with the log if not.
    pub fn wait_console(&self, name: &str, pattern: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.console(name);
            if log.contains(pattern) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{pattern:?} did not appear on {name}'s console within {timeout:?}; console:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The recorded state of VM `name` as `ferry vm status --json` reports it.
    pub fn status(&self, name: &str) -> serde_json::Value {
        let out = run_ok(self.ferry().args(["--json", "vm", "status", name]));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Kill any QEMU this test left, so a failed test does not leak VMs.
        if let Ok(entries) = std::fs::read_dir(&self.run_dir) {
            for e in entries.flatten() {
                let state =
                    std::fs::read_to_string(e.path().join("state.json")).unwrap_or_default();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&state) {
                    for key in ["qemu_pid", "supervisor_pid", "block_pid"] {
                        if let Some(pid) = v.get(key).and_then(serde_json::Value::as_i64) {
                            if pid > 0 && cmdline_mentions(pid, &self.run_dir) {
                                let _ =
                                    Command::new("kill").args(["-9", &pid.to_string()]).status();
                            }
                        }
                    }
                }
            }
        }
        // FERRY_KEEP_TEST_DIRS=1 keeps the logs of every test for a look.
        if std::env::var_os("FERRY_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// True if process `pid` is still one of ours (its command line names `dir`).
pub fn cmdline_mentions(pid: i64, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
        .unwrap_or(false)
}

/// QEMU processes whose command line mentions `needle`.
pub fn qemu_processes(needle: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if (cmd.starts_with("qemu-system") || cmd.contains("/qemu-system")) && cmd.contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// What the test guest should run.
pub struct GuestOpts {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory.
    pub memory_mib: u64,
    /// CPU model.
    pub cpu: String,
    /// `cpu_baseline`, as a TOML value (for `cpu = "compatible"`).
    pub cpu_baseline: Option<String>,
    /// Extra kernel command line (workloads, address).
    pub cmdline: String,
    /// Disk images and whether each is read-only.
    pub disks: Vec<(PathBuf, bool)>,
    /// Bridge for one NIC.
    pub bridge: Option<String>,
    /// Let QEMU open the images itself instead of Ferry's block service.
    pub qemu_disks: bool,
    /// The disks' `protocol` (`"vhost-user"`); the default (NBD) if `None`.
    pub disk_protocol: Option<&'static str>,
}

impl Default for GuestOpts {
    fn default() -> Self {
        GuestOpts {
            vcpus: 1,
            memory_mib: 128,
            cpu: "max".into(),
            cpu_baseline: None,
            cmdline: String::new(),
            disks: Vec::new(),
            bridge: None,
            qemu_disks: false,
            disk_protocol: None,
        }
    }
}

/// Runs a command and fails the test, with its output, if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must fail; returns its stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses `key=value` from the first console line containing `tag`.
pub fn field(log: &str, tag: &str, key: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(tag))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
}

/// A child process killed when dropped, so a failing test leaks nothing.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a `ferry lab` lab when dropped, even if the test failed midway.
pub struct LabGuard(pub String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["lab", "down", "--name", &self.0])
            .output();
    }
}

/// Moves a paused VM between two run directories by raw QMP (the
/// destination already started with `--incoming`): migrate over `uri`,
/// wait up to 2 minutes for completion. Tests of the disk path use it to
/// migrate without Ferry's orchestration.
pub fn qmp_migrate(src_vm_dir: &Path, dst_vm_dir: &Path, uri: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (d, _) = ferry_qemu::QmpClient::connect(&dst_vm_dir.join("qmp.sock"))
            .await
            .unwrap();
        d.execute("migrate-incoming", Some(serde_json::json!({ "uri": uri })))
            .await
            .unwrap();
        let (s, _) = ferry_qemu::QmpClient::connect(&src_vm_dir.join("qmp.sock"))
            .await
            .unwrap();
        s.execute("migrate", Some(serde_json::json!({ "uri": uri })))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = s.execute("query-migrate", None).await.unwrap();
            match v["status"].as_str() {
                Some("completed") => break,
                Some("failed") | Some("cancelled") => panic!("migration failed: {v}"),
                _ => assert!(Instant::now() < deadline, "migration did not finish: {v}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
