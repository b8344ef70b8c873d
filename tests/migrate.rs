//! Live migration between two hosts of a lab (network namespaces): the VM
//! moves back and forth with its workloads running and a client probing it,
//! and failures before the switchover leave it running on the source.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::targets::{Kind, Target, TargetAuth};
use common::*;
use ferry_lab::{TwoHosts, HOST1_INTERNAL, HOST2_INTERNAL, VM_BRIDGE};
use ferry_workloads::{counter, cpuid, disktest};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const BLOCKS: u64 = 1024;
const GUEST_IP: &str = "10.30.0.2";

/// A lab with two hosts, each with its own runtime directory, and a hosts file.
struct MigLab {
    lab: TwoHosts,
    h: [TestEnv; 2],
    hosts_file: PathBuf,
    /// Each host's configuration file (may not exist: no mask).
    configs: [PathBuf; 2],
}

impl MigLab {
    fn new(test: &str) -> Self {
        let lab = TwoHosts::create("fym").expect("lab namespaces");
        let h = [
            TestEnv::new(&format!("{test}1")),
            TestEnv::new(&format!("{test}2")),
        ];
        let hosts_file = h[0].root.join("hosts.toml");
        let configs = [h[0].root.join("host.toml"), h[1].root.join("host.toml")];
        let text = format!(
            "[hosts.h1]\nrun_dir = \"{}\"\nmigration_address = \"{HOST1_INTERNAL}\"\nnetns = \"{}\"\nconfig = \"{}\"\n\
             [hosts.h2]\nrun_dir = \"{}\"\nmigration_address = \"{HOST2_INTERNAL}\"\nnetns = \"{}\"\nconfig = \"{}\"\n",
            h[0].run_dir.display(),
            lab.host1.name,
            configs[0].display(),
            h[1].run_dir.display(),
            lab.host2.name,
            configs[1].display(),
        );
        std::fs::write(&hosts_file, text).unwrap();
        MigLab {
            lab,
            h,
            hosts_file,
            configs,
        }
    }

    fn ns(&self, i: usize) -> &ferry_lab::Netns {
        if i == 0 {
            &self.lab.host1
        } else {
            &self.lab.host2
        }
    }

    /// `ferry` on host `i` (0 or 1).
    fn ferry(&self, i: usize) -> std::process::Command {
        let mut c = self.h[i].ferry_in(self.ns(i));
        c.env("FERRY_HOSTS", &self.hosts_file)
            .env("FERRY_HOST_CONFIG", &self.configs[i]);
        c
    }

    fn migrate(&self, from: usize, name: &str, extra: &[&str]) -> std::process::Output {
        let to = if from == 0 { "h2" } else { "h1" };
        let mut c = self.ferry(from);
        let (global, rest): (Vec<&str>, Vec<&str>) = extra.iter().partition(|a| **a == "--json");
        c.args(global)
            .args(["vm", "migrate", name, "--to", to])
            .args(rest);
        c.output().unwrap()
    }

    /// Migrates VM "vm" `times` times, starting from host 0 and alternating;
    /// after each move the source must be stopped and the destination
    /// running. Appends each source's console to `history`.
    fn bounce(&self, times: usize, extra: &[&str], history: &mut String) {
        self.bounce_each(&vec![extra; times], history);
    }

    /// Like [`MigLab::bounce`], with each migration's own arguments.
    fn bounce_each(&self, steps: &[&[&str]], history: &mut String) {
        for (i, extra) in steps.iter().enumerate() {
            let from = i % 2;
            let out = self.migrate(from, "vm", extra);
            assert!(
                out.status.success(),
                "migration {i} {extra:?} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                self.h[from].status("vm")["state"],
                "stopped",
                "source must stop after the switchover"
            );
            assert_eq!(self.h[1 - from].status("vm")["state"], "running");
            history.push_str(&self.h[from].console("vm"));
            // Let the workloads run a little on each host.
            std::thread::sleep(Duration::from_millis(1500));
        }
    }

    /// Stops the VM on host `on` and checks the whole history: no memory
    /// corruption, no workload died, the counter never skipped or went back,
    /// and every block the guest flushed is on the shared disk.
    fn stop_and_verify(&self, on: usize, mut history: String, img: &std::path::Path) {
        run_ok(self.ferry(on).args(["vm", "stop", "vm", "--force"]));
        history.push_str(&self.h[on].console("vm"));
        assert!(
            !history.contains("FERRY-MEMTEST FAIL"),
            "memory corrupted:\n{history}"
        );
        assert!(
            !history.contains("exited status="),
            "a workload died:\n{history}"
        );
        assert_counter_monotonic(&history);
        let (gen, upto) = disktest::last_flushed(&history).expect("disk flushes");
        disktest::check_durable(img, BLOCKS, gen, upto)
            .unwrap()
            .unwrap();
    }

    /// Starts the client probing the guest every 2 ms until `stop_file`
    /// exists (bounded at 5 minutes), so a slow machine cannot end the probe
    /// before the migrations it is meant to watch.
    fn probe(&self, stop_file: &std::path::Path) -> Child {
        self.lab
            .client
            .command(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "--json",
                "probe",
                &format!("{GUEST_IP}:7777"),
                "--interval-ms",
                "2",
                "--duration",
                "300",
                "--stop-file",
            ])
            .arg(stop_file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn guest(env: &TestEnv, img: PathBuf, extra: &str, memory_mib: u64) -> PathBuf {
    env.guest_spec(
        "vm",
        &GuestOpts {
            memory_mib,
            cmdline: format!(
                "ferry.ip={GUEST_IP}/24 ferry.run=counter:100 ferry.run=echo:7777 {extra}"
            ),
            disks: vec![(img, false)],
            bridge: Some(VM_BRIDGE.into()),
            ..Default::default()
        },
    )
}

/// Starts VM "vm" on host 0 with the memory and disk integrity workloads on
/// a shared image, and waits for the first memory pass; returns the image.
fn start_integrity_guest(m: &MigLab) -> PathBuf {
    let img = image(&m.h[0]);
    let spec = guest(
        &m.h[0],
        img.clone(),
        &format!("ferry.run=memtest:32:16 ferry.run=disktest:/dev/vda:{BLOCKS}:write"),
        192,
    );
    run_ok(m.ferry(0).args(["vm", "start"]).arg(&spec));
    m.h[0].wait_console("vm", "FERRY-MEMTEST ok", Duration::from_secs(60));
    img
}

fn image(env: &TestEnv) -> PathBuf {
    let p = env.root.join("shared.img");
    std::fs::write(&p, vec![0u8; BLOCKS as usize * disktest::BLOCK]).unwrap();
    p
}

fn assert_counter_monotonic(history: &str) {
    let counts: Vec<u64> = history
        .lines()
        .filter_map(counter::parse_line)
        .map(|c| c.n)
        .collect();
    assert!(counts.len() > 10, "too few counter lines: {history}");
    for w in counts.windows(2) {
        assert!(w[1] == w[0] + 1, "counter went from {} to {}", w[0], w[1]);
    }
}

#[test]
fn vm_moves_back_and_forth_with_workloads_and_a_client_probing() {
    let m = MigLab::new("migrt");
    let img = start_integrity_guest(&m);
    m.h[0].wait_console("vm", "FERRY-ECHO listening", Duration::from_secs(60));
    let stop = m.h[0].root.join("probe.stop");
    let probe = m.probe(&stop);
    let mut history = String::new();
    m.bounce(5, &[], &mut history);
    std::fs::write(&stop, b"").unwrap();
    let out = probe.wait_with_output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["received"].as_u64().unwrap() > 1000, "{r}");
    assert!(
        r["max_gap_ms"].as_f64().unwrap() < 2000.0,
        "client saw a gap over 2 s: {r}"
    );
    // After 5 migrations from h1 the VM is on h2.
    m.stop_and_verify(1, history, &img);
}

/// Starts a migration that takes a while (bandwidth capped, memory dirtied).
fn slow_migration(m: &MigLab, extra: &[&str]) -> Child {
    let mut c = m.ferry(0);
    c.args(["vm", "migrate", "vm", "--to", "h2", "--bandwidth", "8"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn wait_destination_started(m: &MigLab) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(m.h[1].run_dir.join("vm/state.json")) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(pid) = v["qemu_pid"].as_i64() {
                if v["state"] == "paused" {
                    return pid;
                }
            }
        }
        assert!(Instant::now() < deadline, "destination never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the migration stream is connected to the destination and
/// memory is moving (TLS set up, QEMU sending), then a little longer.
fn wait_stream_flowing(m: &MigLab) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = m
            .lab
            .host2
            .command("ss")
            .args(["-Htn", "state", "established", "sport", "=", ":49152"])
            .output()
            .unwrap();
        if !out.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "migration stream never connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));
}

/// The source's QEMU and supervisor logs, to explain a VM that died under a test.
fn source_qemu_log(m: &MigLab) -> String {
    let read =
        |f: &str| std::fs::read_to_string(m.h[0].run_dir.join("vm").join(f)).unwrap_or_default();
    format!(
        "qemu.log:\n{}\nsupervisor.log:\n{}",
        read("qemu.log"),
        read("supervisor.log")
    )
}

fn assert_still_on_source(m: &MigLab, out: std::process::Output, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{why}: {}", err.trim());
    assert!(
        !out.status.success(),
        "migration should have failed ({why})"
    );
    assert!(err.contains("stays on the source"), "{err}");
    assert_eq!(
        m.h[0].status("vm")["state"],
        "running",
        "VM must keep running on the source ({why}); its QEMU log:\n{}",
        source_qemu_log(m)
    );
    if m.h[1].run_dir.join("vm/state.json").exists() {
        let dst = m.h[1].status("vm");
        assert_ne!(dst["state"], "running", "{dst}");
    }
    assert!(
        qemu_processes(&format!("{}/", m.h[1].run_dir.join("vm").display())).is_empty(),
        "QEMU left on the destination ({why})"
    );
    // The guest is alive and unharmed: its counter keeps going.
    let before = m.h[0]
        .console("vm")
        .lines()
        .filter_map(counter::parse_line)
        .count();
    std::thread::sleep(Duration::from_millis(800));
    let after = m.h[0].console("vm");
    assert!(
        after.lines().filter_map(counter::parse_line).count() > before,
        "guest stopped counting ({why})"
    );
    assert!(!after.contains("FERRY-MEMTEST FAIL"));
}

#[test]
fn killed_destination_or_cancel_leaves_the_vm_on_the_source() {
    let m = MigLab::new("migfail");
    let img = image(&m.h[0]);
    let spec = guest(&m.h[0], img, "ferry.run=memtest:96:max", 256);
    run_ok(m.ferry(0).args(["vm", "start"]).arg(&spec));
    m.h[0].wait_console("vm", "FERRY-MEMTEST ok", Duration::from_secs(60));

    // 1. The destination's QEMU is killed mid-migration.
    let mig = slow_migration(&m, &["--timeout", "60"]);
    let pid = wait_destination_started(&m);
    wait_stream_flowing(&m);
    run_ok(std::process::Command::new("kill").args(["-9", &pid.to_string()]));
    assert_still_on_source(&m, mig.wait_with_output().unwrap(), "destination killed");

    // 2. The user cancels.
    let mig = slow_migration(&m, &["--timeout", "60"]);
    wait_destination_started(&m);
    wait_stream_flowing(&m);
    run_ok(m.ferry(0).args(["vm", "migrate", "vm", "--cancel"]));
    let out = mig.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cancelled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_still_on_source(&m, out, "cancelled");

    // 2b. The user cancels a quick migration while the state is saved (the
    // save capped at 8 MiB/s so that it lasts): the VM resumes where it was.
    let mut mig = slow_migration(&m, &["--quick", "--json", "--timeout", "60"]);
    let stdout = mig.stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("\"save active\"") {
                let _ = seen_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    seen_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the quick migration's save never showed as active");
    run_ok(m.ferry(0).args(["vm", "migrate", "vm", "--cancel"]));
    let out = mig.wait_with_output().unwrap();
    let progress = reader.join().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cancelled"),
        "{}\n{progress}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_still_on_source(&m, out, "quick migration cancelled");
    assert!(
        !m.h[0].run_dir.join("vm.state").exists(),
        "the cancelled save's file is removed"
    );

    // 3. The internal link goes down mid-migration: the stall is noticed.
    let mig = slow_migration(&m, &["--stall-timeout", "3"]);
    wait_destination_started(&m);
    wait_stream_flowing(&m);
    m.lab.host2.ip(&["link", "set", "int", "down"]).unwrap();
    let out = mig.wait_with_output().unwrap();
    m.lab.host2.ip(&["link", "set", "int", "up"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("stalled"), "{err}");
    // The source's QEMU really finished the cancel (with its blocked
    // multifd sockets aborted) before Ferry reported.
    assert!(!err.contains("still reports the migration"), "{err}");
    assert_still_on_source(&m, out, "link cut");
    // The stuck stream's sockets hear from the destination again once the
    // link is back; the source must shrug that off too.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        m.h[0].status("vm")["state"],
        "running",
        "VM died on the source after the link came back; {}",
        source_qemu_log(&m)
    );

    // 4. The destination is an impostor: its credentials (consistent in
    // themselves) come from another CA. The source refuses it in the TLS
    // handshake and no memory moves.
    let tls = m.h[1].run_dir.join("tls");
    let stamp = std::fs::read(tls.join("issued-for")).unwrap();
    let foreign = ferry_pki::Ca::open_or_create(&m.h[1].root.join("foreign-ca")).unwrap();
    foreign
        .ensure_host("h2", &[HOST2_INTERNAL.parse().unwrap()], &tls)
        .unwrap();
    std::fs::write(tls.join("issued-for"), stamp).unwrap();
    let out = m.migrate(0, "vm", &["--timeout", "20", "--stall-timeout", "5"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS"),
        "{}\nsource QEMU log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        source_qemu_log(&m)
    );
    assert_still_on_source(&m, out, "untrusted peer");
    std::fs::remove_dir_all(&tls).unwrap();

    // 5. The destination cannot run the VM (no bridge there): refused before memory moves.
    m.lab.host2.ip(&["link", "del", VM_BRIDGE]).unwrap();
    let out = m.migrate(0, "vm", &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("preparing the destination failed") && err.contains("bridge br0"),
        "{err}"
    );
    assert_still_on_source(&m, out, "destination refused");
    run_ok(m.ferry(0).args(["vm", "stop", "vm", "--force"]));
}

#[test]
fn guest_dirtying_256_mib_flat_out_still_arrives_alive() {
    let m = MigLab::new("migflat");
    let img = image(&m.h[0]);
    let spec = guest(&m.h[0], img, "ferry.run=memtest:256:max", 512);
    run_ok(m.ferry(0).args(["vm", "start"]).arg(&spec));
    m.h[0].wait_console("vm", "FERRY-MEMTEST ok", Duration::from_secs(90));
    let out = m.migrate(0, "vm", &["--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(report["report"]["total_ms"].as_u64().is_some(), "{report}");
    // Alive on the destination: memtest keeps verifying and the counter counts.
    let log = m.h[1].wait_console("vm", "FERRY-MEMTEST ok", Duration::from_secs(30));
    let before = log.lines().filter_map(counter::parse_line).count();
    std::thread::sleep(Duration::from_millis(1000));
    let log = m.h[1].console("vm");
    assert!(
        log.lines().filter_map(counter::parse_line).count() > before,
        "guest not running after migration"
    );
    assert!(
        !log.contains("FERRY-MEMTEST FAIL") && !m.h[0].console("vm").contains("FERRY-MEMTEST FAIL")
    );
    run_ok(m.ferry(1).args(["vm", "stop", "vm", "--force"]));
}

#[test]
fn quick_migration_round_trip_keeps_memory_counter_and_disk() {
    let m = MigLab::new("migquick");
    let img = start_integrity_guest(&m);
    let mut history = String::new();
    // The last quick migration follows a live one (over TLS): the VM must
    // not carry that migration's settings into the state file.
    m.bounce_each(
        &[&["--quick"], &["--quick"], &[], &["--quick"]],
        &mut history,
    );
    m.stop_and_verify(0, history, &img);
}

#[test]
fn cpu_mismatches_are_refused_before_memory_moves_and_compatible_vms_move() {
    let m = MigLab::new("migcpu");
    std::fs::write(&m.configs[1], "[cpu]\nwithhold = [\"avx2\"]\n").unwrap();
    let img = image(&m.h[0]);

    // 1. A `host` VM on h1 sees avx2; h2 withholds it: refused, named.
    let spec = m.h[0].guest_spec(
        "vm",
        &GuestOpts {
            cpu: "host".into(),
            cmdline: format!("ferry.ip={GUEST_IP}/24 ferry.run=counter:100 ferry.run=cpuid:300"),
            disks: vec![(img.clone(), false)],
            bridge: Some(VM_BRIDGE.into()),
            ..Default::default()
        },
    );
    run_ok(m.ferry(0).args(["vm", "start"]).arg(&spec));
    m.h[0].wait_console("vm", cpuid::TAG, Duration::from_secs(60));
    let out = m.migrate(0, "vm", &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("does not offer avx2"), "{err}");
    assert_still_on_source(&m, out, "destination lacks avx2");
    // Quick migration is refused the same way, before the guest pauses.
    let out = m.migrate(0, "vm", &["--quick"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("does not offer avx2"), "{err}");
    assert_still_on_source(&m, out, "quick: destination lacks avx2");
    run_ok(m.ferry(0).args(["vm", "stop", "vm", "--force"]));

    // 2. The same VM made compatible with both hosts' profiles moves, and
    // its CPUID never changes.
    let mut profiles = Vec::new();
    for i in 0..2 {
        let out = run_ok(m.ferry(i).args(["--json", "host", "cpu"]));
        let p = m.h[0].root.join(format!("profile{i}.json"));
        std::fs::write(&p, &out.stdout).unwrap();
        profiles.push(format!("\"{}\"", p.display()));
    }
    let spec = m.h[0].guest_spec(
        "vm",
        &GuestOpts {
            cpu: "compatible".into(),
            cpu_baseline: Some(format!("[{}]", profiles.join(", "))),
            cmdline: format!("ferry.ip={GUEST_IP}/24 ferry.run=counter:100 ferry.run=cpuid:300"),
            disks: vec![(img, false)],
            bridge: Some(VM_BRIDGE.into()),
            ..Default::default()
        },
    );
    run_ok(m.ferry(0).args(["vm", "start"]).arg(&spec));
    let before = m.h[0].wait_console("vm", cpuid::TAG, Duration::from_secs(60));
    let flags = cpuid::flags_in(&before).unwrap();
    assert!(!flags.contains(&"avx2".to_string()), "{flags:?}");
    let mut history = String::new();
    m.bounce(1, &[], &mut history);
    std::thread::sleep(Duration::from_millis(1000));
    history.push_str(&m.h[1].console("vm"));
    let words = cpuid::distinct_words(&history);
    assert_eq!(words.len(), 1, "CPUID changed under the guest: {words:?}");
    assert!(
        m.h[1].console("vm").matches(cpuid::TAG).count() >= 2,
        "guest not running on h2"
    );

    // 3. h1 now presents another vendor: moving back is refused, naming both.
    std::fs::write(&m.configs[0], "[cpu]\nvendor = \"GenuineIntel\"\n").unwrap();
    let out = m.migrate(1, "vm", &[]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("AuthenticAMD") && err.contains("GenuineIntel"),
        "{err}"
    );
    assert_eq!(m.h[1].status("vm")["state"], "running");
    run_ok(m.ferry(1).args(["vm", "stop", "vm", "--force"]));
}

/// A VM whose disk is an iSCSI LUN on `ferry san` (in host 1's namespace,
/// on the internal network) moves back and forth with `ferry vm migrate`:
/// each host's block service logs in to the LUN itself, the source flushes
/// at switchover, and every block the guest flushed verifies on the LUN.
#[test]
fn vm_on_an_iscsi_lun_moves_back_and_forth_with_its_disk_workload() {
    let m = MigLab::new("miglun");
    let t = Target::start_in(
        &m.h[0],
        Kind::Ferry,
        64,
        TargetAuth {
            chap: Some(("ferryhost".into(), "hostsecret123".into())),
            mutual: None,
        },
        Some(m.lab.host1.name.clone()),
        ferry_lab::HOST1_INTERNAL,
    );
    let spec = guest(
        &m.h[0],
        PathBuf::from(t.url()),
        &format!("ferry.run=memtest:32:16 ferry.run=disktest:/dev/vda:{BLOCKS}:write"),
        192,
    );
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "via = \"ferry\"\n",
        &format!(
            "via = \"ferry\"\nsecrets = \"{}\"\n",
            t.secrets_file(None).display()
        ),
    );
    std::fs::write(&spec, text).unwrap();
    run_ok(m.ferry(0).args(["vm", "start"]).arg(&spec));
    m.h[0].wait_console("vm", "FERRY-MEMTEST ok", Duration::from_secs(60));
    let mut history = String::new();
    m.bounce(2, &[], &mut history);
    m.stop_and_verify(0, history, &t.image);
}
