//! `ferry san` against real iSCSI initiators: libiscsi's conformance suite
//! (`iscsi-test-cu`) and tools (`iscsi-inq`, `iscsi-ls`) log in over TCP on
//! loopback, with CHAP and ACLs, and reservations survive a restart.
//! Needs the Debian package libiscsi-bin (scripts/install-deps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::targets::free_port;
use common::*;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const TARGET: &str = "iqn.2026-01.dev.ferry:test";
const INI1: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
const INI2: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2";

/// A configured target with one 64 MiB LUN, and a running server.
struct San {
    env: TestEnv,
    config: PathBuf,
    port: u16,
    server: Option<ChildGuard>,
}

impl San {
    fn new(test: &str, extra_target_args: &[&str]) -> San {
        common::targets::need("iscsi-test-cu", "libiscsi-bin");
        let env = TestEnv::new(test);
        let config = env.root.join("san.toml");
        let port = free_port();
        let c = config.to_str().unwrap().to_string();
        run_ok(env.ferry().args([
            "san",
            "portals",
            "--config",
            &c,
            &format!("127.0.0.1:{port}"),
        ]));
        let mut args = vec!["san", "target", "create", "--config", &c, TARGET];
        args.extend_from_slice(extra_target_args);
        run_ok(env.ferry().args(&args));
        let img = env.root.join("lun0.img");
        run_ok(env.ferry().args([
            "san",
            "lun",
            "create",
            "--config",
            &c,
            "--target",
            TARGET,
            "--id",
            "0",
            "--path",
            img.to_str().unwrap(),
            "--size",
            "64M",
        ]));
        let mut san = San {
            env,
            config,
            port,
            server: None,
        };
        san.start();
        san
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.env.root.join("serve.log")).unwrap();
        let child = self
            .env
            .ferry()
            .args(["san", "serve", "--config", self.config.to_str().unwrap()])
            .stderr(log)
            .spawn()
            .expect("spawn ferry san serve");
        self.server = Some(ChildGuard(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ferry san serve did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9, as a crash would.
    fn crash(&mut self) {
        if let Some(mut g) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-9", &g.0.id().to_string()])
                .status();
            let _ = g.0.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.env.root.join("serve.log")).unwrap_or_default()
    }

    /// What `ferry --json san show` prints.
    fn show(&self) -> serde_json::Value {
        let out = run_ok(self.env.ferry().args([
            "--json",
            "san",
            "show",
            "--config",
            self.config.to_str().unwrap(),
        ]));
        serde_json::from_slice(&out.stdout).expect("show JSON")
    }

    fn url(&self, auth: &str) -> String {
        format!("iscsi://{auth}127.0.0.1:{}/{TARGET}/0", self.port)
    }
}

/// Runs a command with a time limit; returns (success, stdout+stderr).
fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let out_path = std::env::temp_dir().join(ferry_lab::unique_name("san-out"));
    let f = std::fs::File::create(&out_path).unwrap();
    let mut child = ChildGuard(
        cmd.stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn"),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child);
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    match status {
        Some(s) => (s.success(), out),
        None => (false, format!("{out}\n(timed out after {limit:?})")),
    }
}

/// (ran, failed) from CUnit's "tests" summary line.
fn summary(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.trim_start().starts_with("tests "))?;
    let n: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    Some((*n.get(1)?, *n.get(3)?))
}

#[test]
fn conformance_suites_pass() {
    let san = San::new("san-conf", &[]);
    let suites = [
        "SCSI.TestUnitReady",
        "SCSI.Inquiry",
        "SCSI.ReadCapacity10",
        "SCSI.ReadCapacity16",
        "SCSI.Read10",
        "SCSI.Write10",
        "SCSI.Write16",
        "SCSI.Verify10",
        "SCSI.ModeSense6",
        "SCSI.Unmap",
        "SCSI.WriteSame16",
        "SCSI.CompareAndWrite",
        "SCSI.ReportSupportedOpcodes",
        "SCSI.Reserve6",
        "SCSI.ProutReserve",
        "SCSI.ProutPreempt",
        "iSCSI.iSCSIcmdsn",
        "iSCSI.iSCSIResiduals",
        "iSCSI.iSCSITMF",
    ];
    let mut failures = Vec::new();
    for s in suites {
        let (_, out) = run_bounded(
            Command::new("iscsi-test-cu").args([
                "--dataloss",
                "-i",
                INI1,
                "-I",
                INI2,
                "-t",
                s,
                &san.url(""),
            ]),
            Duration::from_secs(120),
        );
        match summary(&out) {
            Some((ran, 0)) if ran > 0 => {}
            other => failures.push(format!(
                "{s}: {other:?} (ran, failed)\n{}",
                out.lines()
                    .filter(|l| l.contains("FAIL"))
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "suites failed:\n{}\nserver log:\n{}",
        failures.join("\n"),
        san.log()
    );
}

#[test]
fn discovery_inquiry_chap_and_acl() {
    common::targets::need("iscsi-inq", "libiscsi-bin");
    let san = San::new(
        "san-auth",
        &[
            "--allow",
            INI1,
            "--chap-user",
            "alice",
            "--chap-secret",
            "alicesecret1",
            "--mutual-user",
            "tgt",
            "--mutual-secret",
            "targetsecret",
        ],
    );
    let portal = format!("iscsi://127.0.0.1:{}", san.port);
    // Discovery lists the target for an allowed initiator only.
    let (ok, out) = run_bounded(
        Command::new("iscsi-ls").args(["-i", INI1, &portal]),
        Duration::from_secs(30),
    );
    assert!(ok && out.contains(TARGET), "iscsi-ls: {out}");
    let (_, out) = run_bounded(
        Command::new("iscsi-ls").args(["-i", "iqn.2026-01.dev.ferry:intruder", &portal]),
        Duration::from_secs(30),
    );
    assert!(
        !out.contains(TARGET),
        "discovery showed the target to a stranger: {out}"
    );
    // Right CHAP (one-way and mutual) works; wrong secret and wrong IQN do not.
    let good = san.url("alice%alicesecret1@");
    let (ok, out) = run_bounded(
        Command::new("iscsi-inq").args(["-i", INI1, &good]),
        Duration::from_secs(30),
    );
    assert!(ok && out.contains("FERRY"), "one-way CHAP: {out}");
    let (ok, out) = run_bounded(
        Command::new("iscsi-inq")
            .args(["-i", INI1, &good])
            .env("LIBISCSI_CHAP_TARGET_USERNAME", "tgt")
            .env("LIBISCSI_CHAP_TARGET_PASSWORD", "targetsecret"),
        Duration::from_secs(30),
    );
    assert!(ok && out.contains("FERRY"), "mutual CHAP: {out}");
    let (ok, _) = run_bounded(
        Command::new("iscsi-inq")
            .args(["-i", INI1, &good])
            .env("LIBISCSI_CHAP_TARGET_USERNAME", "tgt")
            .env("LIBISCSI_CHAP_TARGET_PASSWORD", "wrong-secret"),
        Duration::from_secs(30),
    );
    assert!(
        !ok,
        "mutual CHAP accepted a target secret the target does not know"
    );
    let (ok, _) = run_bounded(
        Command::new("iscsi-inq").args(["-i", INI1, &san.url("alice%wrongsecret@")]),
        Duration::from_secs(30),
    );
    assert!(!ok, "wrong CHAP secret was accepted");
    let (ok, _) = run_bounded(
        Command::new("iscsi-inq").args(["-i", INI1, &san.url("")]),
        Duration::from_secs(30),
    );
    assert!(!ok, "login without CHAP was accepted");
    let (ok, _) = run_bounded(
        Command::new("iscsi-inq").args(["-i", INI2, &good]),
        Duration::from_secs(30),
    );
    assert!(!ok, "an initiator outside the ACL logged in");
    let log = san.log();
    assert!(
        log.contains("CHAP failed") && log.contains("ACL"),
        "no log line for the refusals:\n{log}"
    );
}

fn pr_out(sa: u8, kind: u8, key: u64, sa_key: u64, aptpl: bool) -> (Vec<u8>, Vec<u8>) {
    let cdb = vec![0x5f, sa, kind, 0, 0, 0, 0, 0, 24, 0];
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = u8::from(aptpl);
    (cdb, p)
}

fn write10_fua(lba: u32) -> Vec<u8> {
    let mut c = vec![0x2a, 0x08, 0, 0, 0, 0, 0, 0, 1, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c
}

fn read10(lba: u32) -> Vec<u8> {
    let mut c = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c
}

/// kill -9 during a stream of FUA writes: every acknowledged write is there
/// after a restart, and an APTPL reservation still binds a second initiator.
#[test]
fn fua_writes_and_reservations_survive_kill_9() {
    use ferry_iscsi::initiator::simple::Session;
    let mut san = San::new("san-crash", &[]);
    let addr = format!("127.0.0.1:{}", san.port);
    let mut a = Session::login(&addr, INI1, TARGET, [0x80, 0, 0, 0, 0, 1], None).expect("login A");
    let (c, p) = pr_out(0, 0, 0, 0x1234, true);
    assert_eq!(a.command_past_ua(0, &c, &p, 0).expect("register").status, 0);
    let (c, p) = pr_out(1, 3, 0x1234, 0, false);
    assert_eq!(a.command(0, &c, &p, 0).expect("reserve").status, 0);
    let writer = std::thread::spawn(move || {
        let mut acked = 0u32;
        loop {
            let block = vec![(acked % 251) as u8 ^ 0x5a; 512];
            match a.command(0, &write10_fua(acked), &block, 0) {
                Ok(r) if r.status == 0 => acked += 1,
                _ => return acked,
            }
            if acked == 20_000 {
                return acked;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    san.crash();
    let acked = writer.join().unwrap();
    assert!(acked > 10, "only {acked} writes before the crash");
    san.start();
    // A second initiator is refused by the persisted Exclusive Access
    // reservation, and sees the key and the reservation.
    let mut b = Session::login(&addr, INI2, TARGET, [0x80, 0, 0, 0, 0, 2], None).expect("login B");
    let r = b
        .command_past_ua(0, &read10(0), &[], 512)
        .expect("read from B");
    assert_eq!(r.status, 0x18, "B was not refused: {r:?}");
    let r = b
        .command(0, &[0x5e, 1, 0, 0, 0, 0, 0, 0, 64, 0], &[], 64)
        .expect("PR IN");
    assert_eq!(r.status, 0);
    assert_eq!(
        &r.data[4..8],
        &[0, 0, 0, 16],
        "no reservation after restart: {:?}",
        r.data
    );
    assert_eq!(&r.data[8..16], &0x1234u64.to_be_bytes());
    assert_eq!(r.data[21] & 0x0f, 3);
    // The holder reads back every acknowledged write.
    let mut a =
        Session::login(&addr, INI1, TARGET, [0x80, 0, 0, 0, 0, 1], None).expect("login A again");
    for lba in 0..acked {
        let r = a
            .command_past_ua(0, &read10(lba), &[], 512)
            .expect("read back");
        assert_eq!(r.status, 0);
        assert!(
            r.data.iter().all(|b| *b == (lba % 251) as u8 ^ 0x5a),
            "acknowledged FUA write to LBA {lba} lost"
        );
    }
    // Release everything so the state file goes away with APTPL off.
    let (c, p) = pr_out(3, 0, 0x1234, 0, false);
    assert_eq!(a.command(0, &c, &p, 0).expect("clear").status, 0);
    a.logout().expect("logout");
}

/// REGISTER AND MOVE hands the reservation from one host to another with
/// no moment where nobody holds it: the new holder may write, the old one,
/// unregistered by UNREG, may not even read.
#[test]
fn register_and_move_hands_the_reservation_over() {
    use ferry_iscsi::initiator::simple::Session;
    let san = San::new("san-move", &[]);
    let addr = format!("127.0.0.1:{}", san.port);
    let mut a = Session::login(&addr, INI1, TARGET, [0x80, 0, 0, 0, 0, 1], None).expect("login A");
    let mut b = Session::login(&addr, INI2, TARGET, [0x80, 0, 0, 0, 0, 2], None).expect("login B");
    let (c, p) = pr_out(0, 0, 0, 0xA, false);
    assert_eq!(a.command_past_ua(0, &c, &p, 0).expect("register").status, 0);
    let (c, p) = pr_out(1, 3, 0xA, 0, false);
    assert_eq!(a.command(0, &c, &p, 0).expect("reserve").status, 0);
    let r = b
        .command_past_ua(0, &write10_fua(7), &[1; 512], 0)
        .expect("B writes");
    assert_eq!(r.status, 0x18, "B wrote under A's reservation: {r:?}");

    // A moves its reservation to B's initiator port as Write Exclusive.
    let mut name = format!("{INI2},i,0x800000000002").into_bytes();
    name.push(0);
    while name.len() % 4 != 0 {
        name.push(0);
    }
    let mut tid = vec![0x45, 0];
    tid.extend_from_slice(&(name.len() as u16).to_be_bytes());
    tid.extend_from_slice(&name);
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&0xAu64.to_be_bytes());
    p[8..16].copy_from_slice(&0xBu64.to_be_bytes());
    p[17] = 0x02; // UNREG
    p[18..20].copy_from_slice(&1u16.to_be_bytes());
    p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
    p.extend_from_slice(&tid);
    let mut cdb = vec![0x5f, 7, 1, 0, 0, 0, 0, 0, 0, 0];
    cdb[5..9].copy_from_slice(&(p.len() as u32).to_be_bytes());
    // The relative port is the portal group's; ask the target which it is.
    let r = a
        .command(0, &[0x5e, 3, 0, 0, 0, 0, 0, 1, 0, 0], &[], 256)
        .expect("READ FULL STATUS");
    assert_eq!(r.status, 0, "{r:?}");
    p[18..20].copy_from_slice(&r.data[8 + 18..8 + 20]);
    let r = a.command(0, &cdb, &p, 0).expect("REGISTER AND MOVE");
    assert_eq!(r.status, 0, "REGISTER AND MOVE refused: {r:?}");

    let r = b
        .command(0, &[0x5e, 1, 0, 0, 0, 0, 0, 0, 64, 0], &[], 64)
        .expect("READ RESERVATION");
    assert_eq!(
        &r.data[8..16],
        &0xBu64.to_be_bytes(),
        "holder's key: {:?}",
        r.data
    );
    assert_eq!(r.data[21] & 0x0f, 1, "type: {:?}", r.data);
    let r = b
        .command(0, &[0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0], &[], 64)
        .expect("READ KEYS");
    assert_eq!(
        &r.data[4..8],
        &[0, 0, 0, 8],
        "only B's key remains: {:?}",
        r.data
    );
    let r = b
        .command_past_ua(0, &write10_fua(7), &[2; 512], 0)
        .expect("B writes");
    assert_eq!(r.status, 0, "the new holder cannot write: {r:?}");
    let r = a
        .command_past_ua(0, &write10_fua(8), &[3; 512], 0)
        .expect("A writes");
    assert_eq!(r.status, 0x18, "the old holder still writes: {r:?}");
    // Moving again from A, no longer registered, is a conflict.
    let r = a.command(0, &cdb, &p, 0).expect("second move");
    assert_eq!(r.status, 0x18, "{r:?}");
    let (c, p) = pr_out(3, 0, 0xB, 0, false);
    assert_eq!(b.command(0, &c, &p, 0).expect("clear").status, 0);
    a.logout().expect("logout A");
    b.logout().expect("logout B");
}

/// Keepalive: a live initiator (QEMU's iSCSI driver idling in `qemu-io`)
/// answers the target's NOP-In pings and keeps its connection; a frozen one
/// (logged in, never reading again) is dropped and its session goes away.
#[test]
fn idle_initiators_are_pinged_and_dead_ones_dropped() {
    use ferry_iscsi::initiator::simple::Session;
    let mut san = San::new("san-nop", &[]);
    san.crash();
    let text = std::fs::read_to_string(&san.config).unwrap();
    std::fs::write(&san.config, format!("keepalive_secs = 1\n{text}")).unwrap();
    san.start();
    let drops = |san: &San| san.log().matches("did not answer a NOP-In ping").count();

    // 3.5 s idle: three pings at 1 s intervals, each answered.
    let (ok, out) = run_bounded(
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", "sleep 3500", "-c", "read 0 512"])
            .arg(san.url("")),
        Duration::from_secs(60),
    );
    assert!(ok && out.contains("read 512/512"), "{out}");
    assert_eq!(
        drops(&san),
        0,
        "a live initiator was dropped:\n{}",
        san.log()
    );

    let addr = format!("127.0.0.1:{}", san.port);
    let frozen = Session::login(&addr, INI1, TARGET, [0x80, 0, 0, 0, 0, 7], None).expect("login");
    let deadline = Instant::now() + Duration::from_secs(20);
    while drops(&san) == 0 {
        assert!(
            Instant::now() < deadline,
            "the frozen initiator was never dropped:\n{}",
            san.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = san.show();
    assert_eq!(v["sessions"], serde_json::json!([]), "{v}");
    drop(frozen);
}

#[test]
fn show_lists_config_and_sessions() {
    use ferry_iscsi::initiator::simple::Session;
    let san = San::new("san-show", &[]);
    let addr = format!("127.0.0.1:{}", san.port);
    let s = Session::login(&addr, INI1, TARGET, [0x80, 0, 0, 0, 0, 9], None).expect("login");
    let v = san.show();
    assert_eq!(v["targets"][0]["name"], TARGET);
    assert_eq!(v["targets"][0]["luns"][0]["id"], 0);
    assert_eq!(v["sessions"][0]["initiator"], INI1);
    s.logout().expect("logout");
    // Deleting the LUN and the target edits the file; a bad edit is refused
    // with the field named.
    let c = san.config.to_str().unwrap();
    run_ok(san.env.ferry().args([
        "san", "lun", "delete", "--config", c, "--target", TARGET, "--id", "0",
    ]));
    let err = run_err(san.env.ferry().args([
        "san",
        "lun",
        "create",
        "--config",
        c,
        "--target",
        TARGET,
        "--id",
        "99999",
        "--path",
        "/tmp/x.img",
        "--size",
        "1M",
    ]));
    assert!(err.contains("luns[0].id"), "{err}");
    run_ok(
        san.env
            .ferry()
            .args(["san", "target", "delete", "--config", c, TARGET]),
    );
}

/// QEMU's own iSCSI driver (qemu-block-extra) writes and reads a LUN.
#[test]
fn qemu_img_writes_and_reads_a_lun() {
    common::targets::need("qemu-img", "qemu-utils");
    let san = San::new("san-qemu", &[]);
    let src = san.env.root.join("src.raw");
    let back = san.env.root.join("back.raw");
    let pattern: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&src, &pattern).unwrap();
    let url = san.url("");
    let (ok, out) = run_bounded(
        Command::new("qemu-img").args([
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &url,
        ]),
        Duration::from_secs(60),
    );
    assert!(ok, "qemu-img convert onto the LUN (is qemu-block-extra installed? scripts/install-deps): {out}");
    let (ok, out) = run_bounded(
        Command::new("qemu-img").args([
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &url,
            back.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(ok, "qemu-img convert from the LUN: {out}");
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), 64 << 20);
    assert!(
        got[..pattern.len()] == pattern[..],
        "data read back differs"
    );
    assert!(
        got[pattern.len()..].iter().all(|b| *b == 0),
        "the rest of the sparse LUN is not zero"
    );
}

/// Garbage, an oversized data segment and bad login values each end their
/// own connection with a log line; the server keeps serving others.
#[test]
fn malformed_input_drops_only_that_connection() {
    use ferry_iscsi::initiator::simple::Session;
    use std::io::{Read, Write};
    let san = San::new("san-junk", &[]);
    let addr = format!("127.0.0.1:{}", san.port);
    let mut good = Session::login(&addr, INI1, TARGET, [0x80, 0, 0, 0, 0, 3], None).expect("login");
    let closed = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    // Not iSCSI at all.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n and some more bytes to fill a header")
        .unwrap();
    closed(s);
    // A login header announcing a 16 MiB data segment.
    let mut s = TcpStream::connect(&addr).unwrap();
    let mut bhs = [0u8; 48];
    bhs[0] = 0x43;
    bhs[5] = 0xff;
    bhs[6] = 0xff;
    bhs[7] = 0xff;
    s.write_all(&bhs).unwrap();
    closed(s);
    // Bad login values are refused by status, not by a crash.
    let err = Session::login(
        &addr,
        INI2,
        "iqn.2026-01.dev.ferry:nope",
        [0x80, 0, 0, 0, 0, 4],
        None,
    )
    .err()
    .expect("unknown target refused");
    assert!(err.to_string().contains("0x02/0x03"), "{err}");
    // The first session still works, and a new one logs in.
    let r = good
        .command_past_ua(0, &[0, 0, 0, 0, 0, 0], &[], 0)
        .expect("TUR");
    assert_eq!(r.status, 0);
    Session::login(&addr, INI2, TARGET, [0x80, 0, 0, 0, 0, 5], None).expect("login after junk");
    let log = san.log();
    assert!(
        log.contains("connection dropped") && log.contains("login refused"),
        "no log lines:\n{log}"
    );
}

/// One session over several TCP connections (RFC 7143 MC/S): commands are
/// numbered across the session, so a command that arrives on one
/// connection ahead of its turn waits for the one before it on another;
/// the session is one I_T nexus for reservations; the target keeps the
/// negotiated connection limit, reinstates a reused CID, and a logout
/// closes one connection or all of them.
#[test]
fn multiple_connections_share_one_session() {
    use ferry_iscsi::initiator::simple::{InitiatorError, LoginTo, Session};
    let san = San::new("san-mcs", &[]);
    let addr = format!("127.0.0.1:{}", san.port);
    let isid = [0x80, 0, 0, 0, 0, 0x21];
    let to = LoginTo {
        addr: &addr,
        initiator: INI1,
        target: TARGET,
        isid,
        chap: None,
        max_connections: 2,
        tsih: 0,
        cid: 0,
        cmd_sn: 1,
    };
    let mut a = Session::login_to(to).expect("leading login");
    assert_eq!(a.max_connections(), 2, "MaxConnections=2 not accepted");
    assert_ne!(a.tsih(), 0);
    let mut b = a.join(to, 1, a.cmd_sn()).expect("second connection");
    let sessions = |san: &San| san.show()["sessions"].clone();
    let shown = sessions(&san);
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(shown[0]["connections"], 2, "{shown}");

    // The session's reservation holds on both connections (one nexus):
    // reserved on a, written on b.
    let (c, p) = pr_out(0, 0, 0, 0x77, false);
    assert_eq!(a.command_past_ua(0, &c, &p, 0).expect("register").status, 0);
    b.set_cmd_sn(a.cmd_sn());
    let (c, p) = pr_out(1, 1, 0x77, 0, false);
    assert_eq!(b.command_past_ua(0, &c, &p, 0).expect("reserve").status, 0);
    a.set_cmd_sn(b.cmd_sn());
    let first = vec![0x11u8; 512];
    let r = a
        .command(0, &write10_fua(5), &first, 0)
        .expect("write on a");
    assert_eq!(
        r.status, 0,
        "the session's own reservation refused it: {r:?}"
    );

    // Out of turn: b's read carries the CmdSN after a's write and is sent
    // first; the target must hold it until a's write has run, so the read
    // sees the write's data.
    let n = a.cmd_sn();
    b.set_cmd_sn(n + 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let r = b.command(0, &read10(5), &[], 512);
        let _ = tx.send(());
        (b, r)
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "CmdSN {} ran before CmdSN {n}",
        n + 1
    );
    let second = vec![0x22u8; 512];
    let r = a.command(0, &write10_fua(5), &second, 0).expect("write");
    assert_eq!(r.status, 0);
    let (mut b, r) = reader.join().expect("reader thread");
    let r = r.expect("held read");
    assert_eq!(r.status, 0);
    assert!(
        r.data == second,
        "the held read ran before the write it follows"
    );
    a.set_cmd_sn(b.cmd_sn());

    // No third connection under MaxConnections=2; no joining a session
    // that does not exist.
    match a.join(to, 2, a.cmd_sn()) {
        Err(InitiatorError::Login(2, 6)) => {}
        Err(e) => panic!("a third connection: wrong refusal {e}"),
        Ok(_) => panic!("a third connection was let in under MaxConnections=2"),
    }
    let stranger = LoginTo {
        tsih: a.tsih().wrapping_add(100),
        cid: 3,
        ..to
    };
    match Session::login_to(stranger) {
        Err(InitiatorError::Login(2, 0x0a)) => {}
        Err(e) => panic!("joining no session: wrong refusal {e}"),
        Ok(_) => panic!("joined a session that does not exist"),
    }

    // Logging in with b's CID again replaces b (connection reinstatement).
    let mut c = a.join(to, 1, a.cmd_sn()).expect("reinstate CID 1");
    assert!(
        b.command(0, &read10(5), &[], 512).is_err(),
        "the reinstated connection still answers"
    );
    let r = c.command(0, &read10(5), &[], 512).expect("read on c");
    assert_eq!((r.status, r.data == second), (0, true));
    a.set_cmd_sn(c.cmd_sn());
    // a logs c out (reason 1, c's CID); an unknown CID is answered 1.
    assert_eq!(a.logout_with(1, 9).expect("logout unknown CID"), 1);
    assert_eq!(a.logout_with(1, 1).expect("logout CID 1"), 0);
    assert!(
        c.command(0, &read10(5), &[], 512).is_err(),
        "a logged-out connection still answers"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions(&san)[0]["connections"] != 1 {
        assert!(Instant::now() < deadline, "{}", sessions(&san));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (cdb, p) = pr_out(3, 0, 0x77, 0, false);
    assert_eq!(a.command(0, &cdb, &p, 0).expect("clear").status, 0);
    a.logout().expect("logout");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sessions(&san) != serde_json::json!([]) {
        assert!(Instant::now() < deadline, "{}", sessions(&san));
        std::thread::sleep(Duration::from_millis(50));
    }
}
