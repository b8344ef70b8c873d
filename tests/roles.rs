//! VM roles through the cluster: two hypervisor hosts and a witness in
//! network namespaces, each with `ferry daemon` (the node agent). A VM is
//! defined, started, migrated and drained through the API; the Raft
//! leader's agent is killed (a new leader, the API answers, the VM runs
//! on); every agent is restarted (definitions and owners intact, the VM
//! re-attached with the same QEMU, not restarted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ferry_lab::{TwoHosts, HOST1_INTERNAL, HOST2_INTERNAL};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Host names, as the cluster and the hosts file know them.
const NAMES: [&str; 3] = ["h1", "h2", "w"];

/// Dropped in field order: agents first (so none acts on a VM being
/// removed), then the VMs and files, then the namespaces.
struct Lab {
    /// The agents, killed when dropped.
    daemons: [Option<ChildGuard>; 3],
    /// Runtime directories of h1, h2 (and files of the test).
    h: [TestEnv; 2],
    lab: TwoHosts,
    /// Member configurations of h1, h2, w.
    configs: [PathBuf; 3],
    /// How many times each agent was started (for log names).
    starts: [u32; 3],
}

impl Lab {
    fn new() -> Self {
        let lab = TwoHosts::create("fyr").expect("lab namespaces");
        let h = [TestEnv::new("roles1"), TestEnv::new("roles2")];
        let root = h[0].root.clone();
        // Quick migrations' state: the one directory the hosts share.
        let quick_dir = root.join("quick");
        std::fs::create_dir_all(&quick_dir).unwrap();
        // The witness shares host1's namespace, on its own port.
        let listen = [
            format!("{HOST1_INTERNAL}:7441"),
            format!("{HOST2_INTERNAL}:7441"),
            format!("{HOST1_INTERNAL}:7442"),
        ];
        let configs = [0, 1, 2].map(|i| {
            let path = root.join(format!("{}.toml", NAMES[i]));
            let ip = listen[i].split(':').next().unwrap();
            let peers = if i == 0 {
                String::new()
            } else {
                format!("\"{}\"", listen[0])
            };
            let role = if i == 2 { "witness" } else { "hypervisor" };
            std::fs::write(
                &path,
                format!(
                    "id = {}\nname = \"{}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\npeers = [{peers}]\nrole = \"{role}\"\n\
                     [raft]\nheartbeat_ms = 150\nelection_timeout_ms = [1000, 2000]\n\
                     [networks]\ninternal = \"{ip}\"\n[heartbeat]\ndelay_ms = 500\nthreshold = 6\n\
                     [agent]\nquick_dir = \"{}\"\n",
                    i + 1,
                    NAMES[i],
                    listen[i],
                    root.join(format!("data-{}", NAMES[i])).display(),
                    quick_dir.display()
                ),
            )
            .unwrap();
            path
        });
        Lab {
            lab,
            h,
            configs,
            daemons: [None, None, None],
            starts: [0; 3],
        }
    }

    fn ns(&self, i: usize) -> &ferry_lab::Netns {
        if i == 1 {
            &self.lab.host2
        } else {
            &self.lab.host1
        }
    }

    fn run_dir(&self, i: usize) -> PathBuf {
        if i == 2 {
            self.h[0].root.join("run-w")
        } else {
            self.h[i].run_dir.clone()
        }
    }

    /// `ferry ARGS` on host `i`, as its operator runs it.
    fn ferry(&self, i: usize) -> Command {
        let mut c = self.ns(i).command(env!("CARGO_BIN_EXE_ferry"));
        c.env("FERRY_RUN_DIR", self.run_dir(i))
            .env("FERRY_LOG", "warn")
            .env_remove("FERRY_TOKEN");
        c
    }

    /// `ferry --json ARGS --config <host i's>`, which must succeed; its JSON.
    fn json(&self, i: usize, args: &[&str]) -> Value {
        let out = run_ok(
            self.ferry(i)
                .arg("--json")
                .args(args)
                .arg("--config")
                .arg(&self.configs[i]),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    fn log(&self, i: usize) -> PathBuf {
        self.h[0]
            .root
            .join(format!("{}-{}.log", NAMES[i], self.starts[i]))
    }

    /// Starts agent `i`. Like an agent on a machine of its own, it cannot
    /// see the other hypervisor's runtime directory (an empty tmpfs is
    /// mounted over it in the agent's own mount namespace), nor `hide`.
    fn start_daemon(&mut self, i: usize) {
        self.start_daemon_hiding(i, &[]);
    }

    fn start_daemon_hiding(&mut self, i: usize, hide: &[PathBuf]) {
        self.starts[i] += 1;
        let log = std::fs::File::create(self.log(i)).unwrap();
        let mut hidden: Vec<PathBuf> = hide.to_vec();
        if i < 2 {
            hidden.push(self.h[1 - i].run_dir.clone());
        }
        // unshare and sh exec in turn: the pid is the agent's, for kills.
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("for d in $HIDE; do mount -t tmpfs ferry-hidden \"$d\" || exit 1; done; exec \"$@\"")
            .arg("sh")
            .args(["ip", "netns", "exec", &self.ns(i).name])
            .arg(env!("CARGO_BIN_EXE_ferry"))
            .env(
                "HIDE",
                hidden
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .env("FERRY_RUN_DIR", self.run_dir(i))
            .env_remove("FERRY_TOKEN");
        let child = c
            .env("FERRY_LOG", "info,openraft=warn")
            .args(["daemon", "--config"])
            .arg(&self.configs[i])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemons[i] = Some(ChildGuard(child));
    }

    /// SIGKILL to agent `i`, as a crash.
    fn kill_daemon(&mut self, i: usize) {
        drop(self.daemons[i].take());
    }

    /// Waits until member `i` answers `cluster status` with a leader.
    fn status(&self, i: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .ferry(i)
                .args(["--json", "cluster", "status", "--config"])
                .arg(&self.configs[i])
                .output()
                .unwrap();
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                if !v["status"]["leader"].is_null() {
                    return v;
                }
            }
            assert!(
                Instant::now() < deadline,
                "member {} gives no status: {}",
                NAMES[i],
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The cluster's view of VM `name`, asked through member `i`.
    fn vm(&self, i: usize, name: &str) -> Value {
        self.json(i, &["cluster", "vm", "status", name])
    }

    /// Polls the VM's view through member `i` until `ok` holds.
    fn wait_vm(&self, i: usize, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .ferry(i)
                .args(["--json", "cluster", "vm", "status", name, "--config"])
                .arg(&self.configs[i])
                .output()
                .unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if out.status.success() && ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {v} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn create_cluster(&mut self) {
        let made = self.json(0, &["cluster", "create"]);
        let token = made["token"].as_str().expect("token").to_string();
        let ca = made["ca_cert"].as_str().expect("ca_cert").to_string();
        self.start_daemon(0);
        self.status(0);
        for i in [1, 2] {
            let join =
                |lab: &Lab| lab.json(i, &["cluster", "join", "--token", &token, "--ca-cert", &ca]);
            assert_eq!(join(self)["joined"], false);
            self.start_daemon(i);
            assert_eq!(join(self)["joined"], true);
        }
        let s = self.status(0);
        assert_eq!(s["status"]["voters"].as_object().unwrap().len(), 3, "{s}");
    }
}

/// The Raft id's index (0-based) of the leader as member `i` sees it.
fn leader(lab: &Lab, i: usize) -> usize {
    lab.status(i)["status"]["leader"].as_u64().expect("leader") as usize - 1
}

/// Waits until member h1 sees `host` up and its agent answers.
fn wait_host_up(lab: &Lab, host: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = lab.status(0);
        let i = NAMES.iter().position(|n| *n == host).unwrap();
        let answers = lab
            .ferry(i)
            .args(["cluster", "status", "--config"])
            .arg(&lab.configs[i])
            .output()
            .unwrap()
            .status
            .success();
        if s["state"]["hosts"][host]["state"] == "up" && answers {
            return;
        }
        assert!(Instant::now() < deadline, "{host} is not up: {s}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn qemu_pid(v: &Value) -> i64 {
    v["local"]["qemu_pid"].as_i64().unwrap_or(0)
}

fn alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn vm_roles_are_created_started_migrated_drained_and_survive_agent_crashes() {
    let mut lab = Lab::new();
    lab.create_cluster();

    // A VM defined through h1's member, started through h2's: placed on
    // its preferred owner.
    let spec = lab.h[0].guest_spec(
        "rvm",
        &GuestOpts {
            memory_mib: 192,
            // 64 MiB rewritten at 2 MiB/s: a migration capped below that
            // lasts long enough to be cancelled.
            cmdline: "ferry.run=counter:200 ferry.run=memtest:64:2".into(),
            ..Default::default()
        },
    );
    let spec_arg = spec.display().to_string();
    let def = lab.json(
        0,
        &[
            "cluster",
            "vm",
            "create",
            &spec_arg,
            "--preferred",
            "h1",
            "--priority",
            "high",
        ],
    );
    assert_eq!(def["priority"], "high", "{def}");
    let witness_pref = lab
        .ferry(0)
        .args([
            "cluster",
            "vm",
            "create",
            &spec_arg,
            "--preferred",
            "w",
            "--config",
        ])
        .arg(&lab.configs[0])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&witness_pref.stderr).contains("witness"),
        "a witness is refused as an owner: {witness_pref:?}"
    );
    // No host has room for a VM as large as the machine.
    let big = lab.h[0].guest_spec(
        "big",
        &GuestOpts {
            memory_mib: 64 << 20,
            ..Default::default()
        },
    );
    lab.json(0, &["cluster", "vm", "create", &big.display().to_string()]);
    let refused = lab
        .ferry(1)
        .args(["cluster", "vm", "start", "big", "--config"])
        .arg(&lab.configs[1])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && why.contains("no host can run VM big")
            && why.contains("h1: ")
            && why.contains("MiB free"),
        "{why}"
    );
    lab.json(0, &["cluster", "vm", "remove", "big"]);

    let started = lab.json(1, &["cluster", "vm", "start", "rvm"]);
    assert_eq!(started["host"], "h1", "{started}");
    lab.h[0].wait_console("rvm", "FERRY-COUNTER", Duration::from_secs(180));
    let v = lab.vm(1, "rvm");
    assert_eq!(v["def"]["owner"], "h1", "{v}");
    assert_eq!(v["local"]["state"], "running", "{v}");
    let again = lab
        .ferry(0)
        .args(["cluster", "vm", "start", "rvm", "--config"])
        .arg(&lab.configs[0])
        .output()
        .unwrap();
    assert!(!again.status.success(), "a running VM is not started twice");

    // Migrated through the API: the owner changes at the switchover.
    let moved = lab.json(0, &["cluster", "vm", "migrate", "rvm", "--to", "h2"]);
    assert_eq!(moved["migrated"]["to"], "h2", "{moved}");
    let v = lab.vm(2, "rvm");
    assert_eq!(v["def"]["owner"], "h2", "{v}");
    assert_eq!(v["local"]["state"], "running", "{v}");
    assert!(v["migration"].is_null(), "{v}");
    assert_eq!(lab.h[0].status("rvm")["state"], "stopped");

    // Its serial console through the API, relayed by h2's agent.
    let out = run_ok(
        lab.ferry(0)
            .args([
                "cluster",
                "vm",
                "console",
                "rvm",
                "--until",
                "FERRY-COUNTER",
            ])
            .args(["--timeout", "60", "--config"])
            .arg(&lab.configs[0]),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FERRY-COUNTER"),
        "{out:?}"
    );
    let out = run_ok(
        lab.ferry(2)
            .args(["cluster", "vm", "console", "rvm", "--log", "--config"])
            .arg(&lab.configs[2]),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FERRY-COUNTER"),
        "{out:?}"
    );

    // A slow migration back (1 MiB/s) is cancelled through
    // another member: the VM stays on h2, nothing is left on h1.
    let slow = lab
        .ferry(1)
        .args([
            "cluster",
            "vm",
            "migrate",
            "rvm",
            "--to",
            "h1",
            "--bandwidth",
            "1",
        ])
        .arg("--config")
        .arg(&lab.configs[1])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut slow = ChildGuard(slow);
    // Its progress lines, read as they come.
    let progress = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let progress = progress.clone();
        let stderr = slow.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut p = progress.lock().unwrap();
                p.push_str(&line);
                p.push('\n');
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !progress.lock().unwrap().contains("migrating rvm: active") {
        assert!(
            Instant::now() < deadline,
            "no progress from the source: {}",
            progress.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = lab.vm(2, "rvm");
    assert_eq!(v["migration"]["to"], "h1", "recorded while it runs: {v}");
    // The host-local cancel would signal the agent itself: refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let err = run_err(lab.ferry(1).args(["vm", "migrate", "rvm", "--cancel"]));
        if err.contains("ferry cluster vm migrate rvm --cancel") {
            break;
        }
        assert!(Instant::now() < deadline, "{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    run_ok(
        lab.ferry(2)
            .args(["cluster", "vm", "migrate", "rvm", "--cancel", "--config"])
            .arg(&lab.configs[2]),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = slow.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the cancelled migration goes on");
        std::thread::sleep(Duration::from_millis(200));
    };
    reader.join().unwrap();
    let err = progress.lock().unwrap().clone();
    assert!(!status.success() && err.contains("cancelled"), "{err}");
    let v = lab.vm(0, "rvm");
    assert_eq!(v["def"]["owner"], "h2", "{v}");
    assert!(v["migration"].is_null(), "{v}");
    assert_eq!(v["local"]["state"], "running", "{v}");
    assert_eq!(
        qemu_processes(&lab.h[0].run_dir.display().to_string()),
        Vec::<i64>::new(),
        "the destination's half is gone"
    );

    // Drain h2: the VM goes back to h1 and h2 is paused until resumed.
    let drained = lab.json(0, &["node", "drain", "h2"]);
    assert_eq!(drained["moved"][0]["to"], "h1", "{drained}");
    let s = lab.status(0);
    assert_eq!(s["state"]["hosts"]["h2"]["state"], "paused", "{s}");
    let v = lab.vm(0, "rvm");
    assert_eq!(v["def"]["owner"], "h1", "{v}");
    assert_eq!(lab.h[1].status("rvm")["state"], "stopped");
    let placed = lab
        .ferry(0)
        .args(["cluster", "vm", "migrate", "rvm", "--config"])
        .arg(&lab.configs[0])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&placed.stderr).contains("h2: it is paused"),
        "a paused host takes no VM: {placed:?}"
    );
    lab.json(0, &["node", "resume", "h2"]);
    assert_eq!(lab.status(1)["state"]["hosts"]["h2"]["state"], "up");

    // A quick migration needs a state directory both hosts share: while h2
    // cannot see it, the VM is not even paused and stays on h1.
    let quick_dir = lab.h[0].root.join("quick");
    lab.kill_daemon(1);
    lab.start_daemon_hiding(1, &[quick_dir]);
    wait_host_up(&lab, "h2");
    let refused = lab
        .ferry(0)
        .args(["cluster", "vm", "migrate", "rvm", "--to", "h2", "--quick"])
        .arg("--config")
        .arg(&lab.configs[0])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("not shared storage"),
        "{why}"
    );
    let v = lab.vm(1, "rvm");
    assert_eq!(v["def"]["owner"], "h1", "{v}");
    assert!(v["migration"].is_null(), "{v}");
    assert_eq!(v["local"]["state"], "running", "{v}");
    lab.kill_daemon(1);
    lab.start_daemon(1);
    wait_host_up(&lab, "h2");

    // A quick migration there, and a placed one back (the only other host).
    let moved = lab.json(
        1,
        &["cluster", "vm", "migrate", "rvm", "--to", "h2", "--quick"],
    );
    assert_eq!(moved["migrated"]["to"], "h2", "{moved}");
    let moved = lab.json(1, &["cluster", "vm", "migrate", "rvm"]);
    assert_eq!(moved["migrated"]["to"], "h1", "{moved}");
    let v = lab.vm(0, "rvm");
    assert_eq!(v["def"]["owner"], "h1", "{v}");
    let pid = qemu_pid(&v);
    assert!(pid > 0 && alive(pid), "{v}");

    // The owner changed once per migration, in the entry that ended it.
    let events = lab.json(0, &["cluster", "events"]);
    let messages: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("VM rvm"))
        .collect();
    let owner_changes: Vec<&&str> = messages.iter().filter(|m| m.contains(" owner ")).collect();
    assert_eq!(
        owner_changes,
        [
            &"VM rvm owner h1 -> h2 (migrated)",
            &"VM rvm owner h2 -> h1 (migrated)",
            &"VM rvm owner h1 -> h2 (migrated)",
            &"VM rvm owner h2 -> h1 (migrated)",
        ],
        "{messages:#?}"
    );
    assert_eq!(
        messages.iter().filter(|m| m.contains("started on")).count(),
        1,
        "{messages:#?}"
    );

    // The leader's agent dies: another member leads, the API answers, the
    // VM runs on.
    let old = leader(&lab, 0);
    lab.kill_daemon(old);
    let other = if old == 0 { 1 } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader(&lab, other) == old {
        assert!(Instant::now() < deadline, "no new leader");
        std::thread::sleep(Duration::from_millis(300));
    }
    let v = lab.vm(other, "rvm");
    assert_eq!(v["def"]["owner"], "h1", "{v}");
    assert!(alive(pid), "the VM runs on while its agent is dead");
    lab.start_daemon(old);
    lab.status(old);

    // Every agent restarts: definitions and owners intact, the VM
    // re-attached with the same QEMU.
    for i in 0..3 {
        lab.kill_daemon(i);
    }
    assert!(alive(pid), "agents gone, the VM runs on");
    // Meanwhile a migration to h2 failed where h2's agent could not hear
    // the source: its half, a QEMU waiting for the VM's state, is left.
    run_ok(lab.ferry(1).args(["vm", "start", "--incoming"]).arg(&spec));
    assert_eq!(lab.h[1].status("rvm")["state"], "paused");
    for i in 0..3 {
        lab.start_daemon(i);
    }
    lab.status(0);
    let v = lab.wait_vm(1, "rvm", "the VM is seen again", |v| {
        v["local"]["state"] == "running"
    });
    assert_eq!(v["def"]["owner"], "h1", "{v}");
    assert_eq!(v["def"]["priority"], "high", "{v}");
    assert_eq!(qemu_pid(&v), pid, "re-attached, not restarted: {v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reattached = format!("host h1: re-attached VM rvm (running, QEMU pid {pid})");
    while !lab
        .json(2, &["cluster", "events"])
        .to_string()
        .contains(&reattached)
    {
        assert!(
            Instant::now() < deadline,
            "no event {reattached:?}; h1's agent log:\n{}",
            std::fs::read_to_string(lab.log(0)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let before = lab.h[0].console("rvm").len();
    lab.h[0].wait_console("rvm", "FERRY-COUNTER", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.h[0].console("rvm").len() == before {
        assert!(Instant::now() < deadline, "the guest stopped printing");
        std::thread::sleep(Duration::from_millis(200));
    }

    // h2's agent neither takes the leftover half for the VM nor keeps it:
    // it is removed, the VM runs on on h1.
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.h[1].status("rvm")["state"] != "stopped" {
        assert!(
            Instant::now() < deadline,
            "the leftover half stays on h2: {}",
            lab.h[1].status("rvm")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let events = lab.json(0, &["cluster", "events"]).to_string();
    assert!(
        events.contains("host h2: removed the half of a migration of VM rvm"),
        "{events}"
    );
    let v = lab.vm(0, "rvm");
    assert_eq!(v["def"]["owner"], "h1", "{v}");
    assert_eq!(qemu_pid(&v), pid, "{v}");

    // A restart is a new QEMU on the preferred owner.
    let restarted = lab.json(1, &["cluster", "vm", "restart", "rvm"]);
    assert_eq!(restarted["host"], "h1", "{restarted}");
    assert!(!alive(pid), "the old QEMU is gone");
    let pid = restarted["record"]["qemu_pid"].as_i64().expect("pid");
    assert!(alive(pid));

    let out = run_ok(
        lab.ferry(1)
            .args(["cluster", "vm", "list", "--config"])
            .arg(&lab.configs[1]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("rvm"))
        .unwrap_or_default();
    for word in ["h1", "running", "high", "192 MiB"] {
        assert!(line.contains(word), "{word:?} in {text}");
    }

    // Stopped through the cluster; the list says so.
    lab.json(0, &["cluster", "vm", "stop", "rvm", "--force"]);
    let all = lab.json(2, &["cluster", "vm", "list"]);
    assert_eq!(all[0]["def"]["running"], false, "{all}");
    assert_eq!(all[0]["def"]["owner"], "h1", "{all}");
    assert!(!alive(pid));

    // Its QEMU dies while h1's agent is down: the agent, back, records it
    // stopped rather than leaving it "running" in the database.
    let started = lab.json(2, &["cluster", "vm", "start", "rvm"]);
    let pid = started["record"]["qemu_pid"].as_i64().expect("pid");
    lab.kill_daemon(0);
    run_ok(Command::new("kill").args(["-9", &pid.to_string()]));
    lab.start_daemon(0);
    let v = lab.wait_vm(1, "rvm", "recorded stopped", |v| {
        v["def"]["running"] == false
    });
    assert_eq!(v["def"]["owner"], "h1", "{v}");
    assert_eq!(v["local"]["state"], "crashed", "{v}");
    lab.json(0, &["cluster", "vm", "remove", "rvm"]);
    assert_eq!(
        lab.json(1, &["cluster", "vm", "list"]),
        Value::Array(vec![])
    );
}
