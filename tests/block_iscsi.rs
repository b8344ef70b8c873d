//! VM disks on iSCSI LUNs through Ferry's block service and initiator,
//! with real guests and real targets (tgt and `ferry san`, each private to
//! its test): the disk-integrity workload verifies, a target restart under
//! guest I/O costs no data and no guest error, live migration keeps every
//! block, and bad credentials, targets or LUNs stop `vm start` clearly;
//! unaligned writes that share a block from many threads at once all land.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::targets::{Kind, Target, TargetAuth};
use common::*;
use ferry_block::{BlockBackend, IscsiBackend};
use ferry_workloads::disktest;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BLOCKS: u64 = 1024;

/// A spec for the test guest with one data disk on `url`.
fn lun_spec(env: &TestEnv, vm: &str, url: &str, secrets: &Path, cmdline: String) -> PathBuf {
    lun_spec_via(env, vm, url, secrets, cmdline, None)
}

/// [`lun_spec`] with the disk's `protocol` (`None`: the default, NBD).
fn lun_spec_via(
    env: &TestEnv,
    vm: &str,
    url: &str,
    secrets: &Path,
    cmdline: String,
    protocol: Option<&'static str>,
) -> PathBuf {
    let spec = env.guest_spec(
        vm,
        &GuestOpts {
            cmdline,
            disks: vec![(PathBuf::from(url), false)],
            disk_protocol: protocol,
            ..Default::default()
        },
    );
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "via = \"ferry\"\n",
        &format!("via = \"ferry\"\nsecrets = \"{}\"\n", secrets.display()),
    );
    std::fs::write(&spec, text).unwrap();
    spec
}

fn flush_count(log: &str) -> usize {
    log.lines()
        .filter(|l| disktest::parse_flushed(l).is_some())
        .count()
}

fn wait_more_flushes(env: &TestEnv, vm: &str, since: usize, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let log = env.console(vm);
        if flush_count(&log) >= since + n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "guest stopped flushing ({} flushes); console:\n{log}",
            flush_count(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_durable(img: &Path, console: &str) {
    assert!(
        !console.contains("I/O error") && !console.contains("exited status=1"),
        "guest saw I/O errors:\n{console}"
    );
    let (gen, upto) = disktest::last_flushed(console).expect("the guest reported flushes");
    match disktest::check_durable(img, BLOCKS, gen, upto).unwrap() {
        Ok(r) => assert!(r.max_generation.is_some(), "{}", r.summary()),
        Err(why) => panic!("{why}"),
    }
}

fn chap_auth() -> TargetAuth {
    TargetAuth {
        chap: Some(("ferryhost".into(), "hostsecret123".into())),
        mutual: Some(("ferrysan".into(), "sansecret1234".into())),
    }
}

#[test]
fn guest_disk_on_a_lun_verifies_on_tgt_and_ferry_san() {
    let env = TestEnv::new("lun-int");
    for (i, kind) in [Kind::Tgt, Kind::Ferry].into_iter().enumerate() {
        let t = Target::start(&env, kind, 64, chap_auth());
        let vm = format!("lun{i}");
        let spec = lun_spec(
            &env,
            &vm,
            &t.url(),
            &t.secrets_file(None),
            format!("ferry.run=disktest:/dev/vda:{BLOCKS}:write:2"),
        );
        run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
        let deadline = Instant::now() + Duration::from_secs(180);
        while !env.console(&vm).contains("exited status=0") {
            assert!(
                Instant::now() < deadline && !env.console(&vm).contains("exited status=1"),
                "{kind:?}: workload did not finish:\n{}",
                env.console(&vm)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        run_ok(env.ferry().args(["vm", "stop", &vm, "--force"]));
        let r = disktest::verify(&t.image, BLOCKS).unwrap();
        assert!(
            r.all_valid() && r.max_generation == Some(2),
            "{kind:?}: {}",
            r.summary()
        );
    }
}

#[test]
fn target_restart_during_guest_io_loses_nothing_and_the_guest_sees_no_error() {
    let env = TestEnv::new("lun-restart");
    for (i, kind) in [Kind::Tgt, Kind::Ferry].into_iter().enumerate() {
        let mut t = Target::start(&env, kind, 64, TargetAuth::default());
        let vm = format!("rst{i}");
        let spec = lun_spec(
            &env,
            &vm,
            &t.url(),
            &t.secrets_file(None),
            format!("ferry.run=disktest:/dev/vda:{BLOCKS}:write"),
        );
        run_ok(env.ferry().args(["vm", "start"]).arg(&spec));
        wait_more_flushes(&env, &vm, 0, 10, Duration::from_secs(180));
        for _ in 0..2 {
            t.kill();
            std::thread::sleep(Duration::from_secs(2));
            t.start_server();
            let before = flush_count(&env.console(&vm));
            // The initiator's I/O timeout is 30 s: the guest must go on well within it.
            wait_more_flushes(&env, &vm, before, 10, Duration::from_secs(30));
        }
        let block_log =
            std::fs::read_to_string(env.run_dir.join(&vm).join("block.log")).unwrap_or_default();
        assert!(
            block_log.contains("re-established"),
            "{kind:?}: no reconnect in the block service log:\n{block_log}"
        );
        run_ok(env.ferry().args(["vm", "stop", &vm, "--force"]));
        assert_durable(&t.image, &env.console(&vm));
    }
}

#[test]
fn wrong_chap_unknown_target_and_missing_lun_fail_vm_start_clearly() {
    let env = TestEnv::new("lun-err");
    let t = Target::start(&env, Kind::Ferry, 64, chap_auth());
    let cases = [
        (
            t.url(),
            t.secrets_file(Some("not-the-secret")),
            "CHAP authentication as \"ferryhost\"",
        ),
        (
            t.url().replace(&t.iqn, &format!("{}-gone", t.iqn)),
            t.secrets_file(None),
            "-gone is unknown at portal",
        ),
        (
            t.url().replace("/0", "/5"),
            t.secrets_file(None),
            "LUN 5 does not exist",
        ),
    ];
    for (i, (url, secrets, want)) in cases.iter().enumerate() {
        let vm = format!("bad{i}");
        let spec = lun_spec(&env, &vm, url, secrets, String::new());
        let err = run_err(env.ferry().args(["vm", "start"]).arg(&spec));
        assert!(err.contains(want), "expected {want:?} in:\n{err}");
        assert!(qemu_processes(&env.run_dir.to_string_lossy()).is_empty());
    }
    // tgt: an unknown target too, from a target nobody here wrote.
    let tgt = Target::start(&env, Kind::Tgt, 64, TargetAuth::default());
    let spec = lun_spec(
        &env,
        "bad3",
        &tgt.url()
            .replace(&tgt.iqn, "iqn.2026-01.dev.ferry.test:absent"),
        &tgt.secrets_file(None),
        String::new(),
    );
    let err = run_err(env.ferry().args(["vm", "start"]).arg(&spec));
    assert!(err.contains("absent is unknown at portal"), "{err}");
    // A URL with credentials in it is refused before anything starts.
    let spec = lun_spec(
        &env,
        "bad4",
        &tgt.url().replace("iscsi://", "iscsi://u%p@"),
        &tgt.secrets_file(None),
        String::new(),
    );
    let err = run_err(env.ferry().args(["vm", "start"]).arg(&spec));
    assert!(err.contains("never in the URL"), "{err}");
}

#[test]
fn live_migration_of_a_vm_on_a_lun_keeps_every_block() {
    migrate_a_vm_on_a_lun("lun-mig", &[Kind::Ferry, Kind::Tgt], None);
}

/// The LUN as a vhost-user-blk device: its reads and writes are started on
/// the initiator from the virtqueue and completed into guest memory by the
/// initiator's thread; before the switchover the service answers every
/// request it took from the ring.
#[test]
fn live_migration_of_a_vm_on_a_vhost_user_lun_keeps_every_block() {
    migrate_a_vm_on_a_lun("lun-migvu", &[Kind::Ferry], Some("vhost-user"));
}

fn migrate_a_vm_on_a_lun(tag: &str, kinds: &[Kind], protocol: Option<&'static str>) {
    // Two "hosts": two runtime directories, each with its own supervisor,
    // block service (and so its own iSCSI session) and QEMU.
    let src = TestEnv::new(&format!("{tag}src"));
    let dst = TestEnv::new(&format!("{tag}dst"));
    for (i, kind) in kinds.iter().copied().enumerate() {
        let t = Target::start(&src, kind, 64, chap_auth());
        let vm = format!("mig{i}");
        let spec = lun_spec_via(
            &src,
            &vm,
            &t.url(),
            &t.secrets_file(None),
            format!("ferry.run=disktest:/dev/vda:{BLOCKS}:write ferry.run=counter:200"),
            protocol,
        );
        run_ok(src.ferry().args(["vm", "start"]).arg(&spec));
        wait_more_flushes(&src, &vm, 0, 10, Duration::from_secs(180));
        run_ok(dst.ferry().args(["vm", "start", "--incoming"]).arg(&spec));
        assert_eq!(dst.status(&vm)["state"], "paused");
        let uri = format!("unix:{}", src.root.join(format!("{vm}.sock")).display());
        qmp_migrate(&src.run_dir.join(&vm), &dst.run_dir.join(&vm), &uri);
        run_ok(dst.ferry().args(["vm", "resume", &vm]));
        run_ok(src.ferry().args(["vm", "stop", &vm, "--force"]));
        // The guest keeps writing and flushing on the destination's session.
        let before = flush_count(&dst.console(&vm));
        wait_more_flushes(&dst, &vm, before, 20, Duration::from_secs(60));
        assert!(dst.console(&vm).contains("FERRY-COUNTER"));
        run_ok(dst.ferry().args(["vm", "stop", &vm, "--force"]));
        assert_durable(&t.image, &dst.console(&vm));
    }
}

/// The block service's read-modify-write of unaligned writes, from many
/// worker threads at once: each thread owns a few bytes of the same blocks
/// and writes them round after round. Without the backend holding the block
/// for the whole read-modify-write, the threads' write-backs undo each
/// other (a lost update every round or so); with it every byte lands.
/// `ferry san`'s blocks are 512 bytes, so 64-byte slots make the case a
/// 4 KiB-block LUN makes of 512-byte sectors.
#[test]
fn concurrent_unaligned_writes_to_one_block_lose_nothing() {
    const THREADS: usize = 8;
    const SLOT: usize = 64;
    const ROUNDS: u8 = 60;
    let env = TestEnv::new("lun-rmw");
    let t = Target::start(&env, Kind::Ferry, 16, chap_auth());
    let disk = std::sync::Arc::new(
        IscsiBackend::open(&t.url(), Some(&t.secrets_file(None)), false).unwrap(),
    );
    let bs = disk.block_size() as usize;
    assert!(THREADS * SLOT <= bs, "slots must share one block");
    // Two blocks, so each thread's slot straddles nothing but still shares
    // its block with the others; the second block is written at its end.
    let offsets: Vec<[u64; 2]> = (0..THREADS)
        .map(|i| [(i * SLOT) as u64, (2 * bs - (i + 1) * SLOT) as u64])
        .collect();
    let start = std::sync::Arc::new(std::sync::Barrier::new(THREADS + 1));
    let end = std::sync::Arc::new(std::sync::Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let (disk, start, end, offs) = (disk.clone(), start.clone(), end.clone(), offsets[i]);
            std::thread::spawn(move || {
                for round in 1..=ROUNDS {
                    start.wait();
                    let mut slot = [round; SLOT];
                    slot[0] = i as u8;
                    for off in offs {
                        disk.write_at(&slot, off, false).unwrap();
                    }
                    end.wait();
                }
            })
        })
        .collect();
    let mut buf = vec![0u8; 2 * bs];
    for round in 1..=ROUNDS {
        start.wait();
        end.wait();
        disk.read_at(&mut buf, 0).unwrap();
        for (i, offs) in offsets.iter().enumerate() {
            for &off in offs {
                let got = &buf[off as usize..off as usize + SLOT];
                let mut want = [round; SLOT];
                want[0] = i as u8;
                assert_eq!(
                    got, want,
                    "round {round}: thread {i}'s write at {off} was lost"
                );
            }
        }
    }
    for w in workers {
        w.join().unwrap();
    }
}

/// Reads `len` bytes at `offset` with a started read (as the block service
/// does for a guest), into `sink`'s memory if `into`.
fn started_read(disk: &IscsiBackend, offset: u64, len: usize, into: bool) -> Vec<u8> {
    use ferry_block::backend::{Ended, Op};
    let (tx, rx) = std::sync::mpsc::channel();
    let mut mem = vec![0u8; len];
    let op = if into {
        let keep: std::sync::Arc<dyn Send + Sync> = std::sync::Arc::new(());
        // Two pieces, so data lands across a seam; `mem` outlives the read
        // (waited for below) and the sink is closed before it is looked at.
        let half = len / 2;
        let ptr = mem.as_mut_ptr();
        // SAFETY: see above.
        let sink = unsafe {
            ferry_iscsi::initiator::Sink::new(vec![(ptr, half), (ptr.add(half), len - half)], keep)
        };
        Op::ReadInto { offset, sink }
    } else {
        Op::Read {
            offset,
            len: len as u64,
        }
    };
    let sink = match &op {
        Op::ReadInto { sink, .. } => Some(sink.clone()),
        _ => None,
    };
    disk.start(
        op,
        false,
        Box::new(move |e| {
            let _ = tx.send(e);
        }),
    );
    let ended = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("read ended");
    if let Some(s) = sink {
        s.close();
    }
    match ended {
        Ended::Read(parts) if into => {
            assert!(
                parts.iter().all(|p| p.is_empty()),
                "placed reads hand back no buffers"
            );
            mem
        }
        Ended::Read(parts) => parts.concat(),
        other => panic!("read at {offset}: {other:?}"),
    }
}

#[test]
fn sequential_reads_are_read_ahead_and_writes_between_them_are_seen() {
    const MIB: usize = 1024 * 1024;
    let env = TestEnv::new("lun-readahead");
    let t = Target::start(&env, Kind::Ferry, 16, chap_auth());
    let disk = IscsiBackend::open(&t.url(), Some(&t.secrets_file(None)), false).unwrap();
    let stamp = |chunk: usize, v: u8| -> Vec<u8> {
        (0..MIB).map(|i| (i as u8) ^ (chunk as u8) ^ v).collect()
    };
    for chunk in 0..16 {
        disk.write_at(&stamp(chunk, 0), (chunk * MIB) as u64, false)
            .unwrap();
    }
    for into in [false, true] {
        // Apart: the first pass writes into its chunks 4 and 6.
        let base = if into { 8 } else { 0 };
        let at = |c: usize| ((base + c) * MIB) as u64;
        let served = disk.read_ahead_served();
        // Two sequential reads start fetching the next two chunks.
        for c in 0..3 {
            let got = started_read(&disk, at(c), MIB, into);
            assert!(
                got == stamp(base + c, 0),
                "chunk {} (into guest memory: {into})",
                base + c
            );
        }
        assert!(
            disk.read_ahead_served() > served,
            "the third sequential read was served from data read ahead"
        );
        // Chunks 3 and 4 are being read ahead now; a write to chunk 4 (a
        // started one, as a guest's) must not be hidden by them.
        let (tx, rx) = std::sync::mpsc::channel();
        disk.start(
            ferry_block::backend::Op::Write {
                offset: at(4),
                data: stamp(base + 4, 0x5a).into(),
                fua: false,
            },
            false,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        let ended = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(
            matches!(ended, ferry_block::backend::Ended::Written),
            "{ended:?}"
        );
        assert!(started_read(&disk, at(3), MIB, into) == stamp(base + 3, 0));
        assert!(
            started_read(&disk, at(4), MIB, into) == stamp(base + 4, 0x5a),
            "the write between two sequential reads is seen (into guest memory: {into})"
        );
        // And a blocking write (the unaligned path's) too.
        assert_eq!(started_read(&disk, at(5), MIB, into).len(), MIB);
        disk.write_at(&[0xee; 100], at(6) + 10, false).unwrap();
        let got = started_read(&disk, at(6), MIB, into);
        assert_eq!(&got[10..110], &[0xee; 100][..]);
    }
}
