//! Ferry's iSCSI initiator library against real targets: tgt (`tgtd`, a
//! target nobody here wrote) and `ferry san`, each started privately by the
//! test. Pipelined I/O across burst boundaries, digests, CHAP, clear
//! errors, persistent reservations between two initiators, reconnect after
//! a target restart, and the I/O timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::targets::{Kind, Target, TargetAuth};
use common::*;
use ferry_iscsi::initiator::{
    random_isid, Chap, IscsiError, LoginConfig, Lun, ReservationType, SessionConfig,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INITIATOR: &str = "iqn.2026-01.dev.ferry.test:initiator";

fn config(t: &Target, auth: &TargetAuth, digests: bool) -> SessionConfig {
    let chap = |c: &Option<(String, String)>| {
        c.as_ref().map(|(u, s)| Chap {
            user: u.clone(),
            secret: s.clone(),
        })
    };
    let mut c = SessionConfig::new(LoginConfig {
        portal: t.portal(),
        target: t.iqn.clone(),
        initiator: INITIATOR.into(),
        isid: random_isid(),
        chap: chap(&auth.chap),
        mutual: chap(&auth.mutual),
        digests,
        timeout: Duration::from_secs(5),
    });
    c.io_timeout = Duration::from_secs(20);
    c
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn exercise(lun: &Arc<Lun>) {
    assert_eq!(lun.size(), 64 << 20);
    // Sizes across immediate data, first burst, R2T and MaxBurstLength.
    for (i, len) in [4096usize, 65536, 300 * 1024, 1 << 20, 3 << 20]
        .iter()
        .enumerate()
    {
        let data = pattern(i as u64, *len);
        let off = (i as u64) * (4 << 20);
        lun.write_at(&data, off, i % 2 == 0).unwrap();
        let mut back = vec![0u8; *len];
        lun.read_at(&mut back, off).unwrap();
        assert!(back == data, "read back differs for {len} bytes at {off}");
    }
    // A started read whose Data-In goes straight into memory of ours (as
    // for a VM's vhost-user disk), in pieces that cut across PDUs and
    // commands.
    let want = pattern(4, 3 << 20);
    let mut pieces = [
        vec![0u8; 1000],
        vec![0u8; 700_000],
        vec![0u8; (3 << 20) - 701_000],
    ];
    let raw = pieces
        .iter_mut()
        .map(|p| (p.as_mut_ptr(), p.len()))
        .collect();
    // SAFETY: `pieces` outlives the read: the sink is closed below before
    // they are looked at or dropped.
    let sink = unsafe { ferry_iscsi::initiator::Sink::new(raw, Arc::new(())) };
    let (tx, rx) = std::sync::mpsc::channel();
    lun.start_read_into(
        4 * (4 << 20),
        &sink,
        false,
        Box::new(move |r| {
            let _ = tx.send(r.map(|bufs| bufs.len()));
        }),
    );
    let ended = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    sink.close();
    assert!(matches!(ended, Ok(0)), "no buffers when placed: {ended:?}");
    assert!(pieces.concat() == want, "placed Data-In differs");
    // 32 threads at once: the pipeline, ITT matching and the CmdSN window.
    let threads: Vec<_> = (0..32u64)
        .map(|t| {
            let lun = lun.clone();
            std::thread::spawn(move || {
                for round in 0..8u64 {
                    let off = (24 << 20) + t * (256 << 10) + (round % 4) * (64 << 10);
                    let data = pattern(t * 100 + round, 64 << 10);
                    lun.write_at(&data, off, false).unwrap();
                    let mut back = vec![0u8; data.len()];
                    lun.read_at(&mut back, off).unwrap();
                    assert!(back == data, "thread {t} round {round}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    lun.flush().unwrap();
    lun.write_zeroes(4096, 1 << 20, false).unwrap();
    let mut back = vec![1u8; 1 << 20];
    lun.read_at(&mut back, 4096).unwrap();
    assert!(back.iter().all(|b| *b == 0), "write_zeroes left data");
    lun.discard(8 << 20, 1 << 20).unwrap();
    assert!(matches!(
        lun.read_at(&mut [0u8; 512], 64 << 20),
        Err(IscsiError::Invalid(_))
    ));
}

#[test]
fn pipelined_io_with_and_without_digests_on_tgt_and_ferry_san() {
    let env = TestEnv::new("ini-io");
    for kind in [Kind::Tgt, Kind::Ferry] {
        let t = Target::start(&env, kind, 64, TargetAuth::default());
        for digests in [false, true] {
            let lun =
                Arc::new(Lun::open(config(&t, &TargetAuth::default(), digests), t.lun).unwrap());
            let neg = lun.session().negotiated();
            assert_eq!(neg.digests.header, digests, "{kind:?}: {neg:?}");
            assert_eq!(neg.digests.data, digests, "{kind:?}: {neg:?}");
            exercise(&lun);
            assert!(!lun.device_id().is_empty(), "{kind:?}: no VPD 0x83 id");
        }
        // What was written through one session reads back through another.
        let lun = Lun::open(config(&t, &TargetAuth::default(), false), t.lun).unwrap();
        let mut back = vec![0u8; 4096];
        lun.read_at(&mut back, 0).unwrap();
        assert_eq!(back, pattern(0, 4096), "{kind:?}");
        let list =
            ferry_iscsi::initiator::discover(&config(&t, &TargetAuth::default(), false).login)
                .unwrap();
        assert!(list.iter().any(|d| d.name == t.iqn), "{kind:?}: {list:?}");
    }
}

#[test]
fn chap_one_way_and_mutual_and_clear_login_errors() {
    let env = TestEnv::new("ini-chap");
    let auth = TargetAuth {
        chap: Some(("alice".into(), "alicesecret12".into())),
        mutual: Some(("tgtuser".into(), "targetsecret12".into())),
    };
    for kind in [Kind::Tgt, Kind::Ferry] {
        let t = Target::start(&env, kind, 64, auth.clone());
        // Mutual, then one-way only.
        let lun = Lun::open(config(&t, &auth, true), t.lun).unwrap();
        lun.write_at(&[7u8; 4096], 0, true).unwrap();
        drop(lun);
        let one_way = TargetAuth {
            chap: auth.chap.clone(),
            mutual: None,
        };
        Lun::open(config(&t, &one_way, false), t.lun).unwrap();
        // Wrong secret, no credentials, wrong target secret, unknown target, missing LUN.
        let wrong = TargetAuth {
            chap: Some(("alice".into(), "not-the-secret".into())),
            mutual: None,
        };
        let e = Lun::open(config(&t, &wrong, false), t.lun).err().unwrap();
        assert!(matches!(e, IscsiError::ChapRefused { .. }), "{kind:?}: {e}");
        assert!(e.to_string().contains("wrong user name or secret"), "{e}");
        let e = Lun::open(config(&t, &TargetAuth::default(), false), t.lun)
            .err()
            .unwrap();
        assert!(
            matches!(e, IscsiError::ChapRequired { .. }),
            "{kind:?}: {e}"
        );
        let bad_mutual = TargetAuth {
            chap: auth.chap.clone(),
            mutual: Some(("tgtuser".into(), "a-different-secret".into())),
        };
        let e = Lun::open(config(&t, &bad_mutual, false), t.lun)
            .err()
            .unwrap();
        assert!(
            matches!(e, IscsiError::MutualChapFailed { .. }),
            "{kind:?}: {e}"
        );
        let mut c = config(&t, &auth, false);
        c.login.target = format!("{}-nope", t.iqn);
        let e = Lun::open(c, t.lun).err().unwrap();
        assert!(
            matches!(e, IscsiError::UnknownTarget { .. }),
            "{kind:?}: {e}"
        );
        assert!(e.to_string().contains("-nope is unknown"), "{e}");
        let e = Lun::open(config(&t, &auth, false), 7).err().unwrap();
        assert!(
            matches!(e, IscsiError::NoSuchLun { lun: 7, .. }),
            "{kind:?}: {e}"
        );
        assert!(e.to_string().contains("LUN 7 does not exist"), "{e}");
    }
}

#[test]
fn reservations_between_two_initiators_preempt_and_abort() {
    let env = TestEnv::new("ini-pr");
    for kind in [Kind::Tgt, Kind::Ferry] {
        let t = Target::start(&env, kind, 64, TargetAuth::default());
        let a = Lun::open(config(&t, &TargetAuth::default(), false), t.lun).unwrap();
        let b = Lun::open(config(&t, &TargetAuth::default(), false), t.lun).unwrap();
        let (ka, kb) = (0xaaaa_0001u64, 0xbbbb_0002u64);
        a.pr_register(0, ka).unwrap();
        b.pr_register_and_ignore(kb)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let (_, keys) = a.pr_read_keys().unwrap();
        assert!(
            keys.contains(&ka) && keys.contains(&kb),
            "{kind:?}: {keys:?}"
        );
        a.pr_reserve(ka, ReservationType::WriteExclusive).unwrap();
        let r = b.pr_read_reservation().unwrap().unwrap();
        assert_eq!((r.key, r.kind), (ka, ReservationType::WriteExclusive));
        // The holder writes; the other registrant conflicts, and is not retried.
        a.write_at(&[1u8; 4096], 0, false).unwrap();
        let started = Instant::now();
        let e = b.write_at(&[2u8; 4096], 0, false).err().unwrap();
        assert!(
            matches!(e, IscsiError::ReservationConflict { .. }),
            "{kind:?}: {e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "conflict was retried"
        );
        // B takes over with preempt-and-abort: A's writes now conflict.
        // tgt leaves PREEMPT AND ABORT out (usr/spc.c has it commented
        // out) and says so with ILLEGAL REQUEST; there B preempts instead.
        match b.pr_preempt_and_abort(kb, ka, ReservationType::WriteExclusive) {
            Ok(()) => assert_eq!(kind, Kind::Ferry),
            Err(IscsiError::CheckCondition { key: 5, .. }) if kind == Kind::Tgt => b
                .pr_preempt(kb, ka, ReservationType::WriteExclusive)
                .unwrap(),
            Err(e) => panic!("{kind:?}: {e}"),
        }
        let r = a.pr_read_reservation().unwrap().unwrap();
        assert_eq!(r.key, kb, "{kind:?}");
        let (_, keys) = b.pr_read_keys().unwrap();
        assert_eq!(keys, vec![kb], "{kind:?}");
        let e = a.write_at(&[3u8; 4096], 0, false).err().unwrap();
        assert!(
            matches!(e, IscsiError::ReservationConflict { .. }),
            "{kind:?}: preempted initiator wrote: {e}"
        );
        assert!(e.to_string().contains("reservation conflict"), "{e}");
        b.write_at(&[4u8; 4096], 0, false).unwrap();
        b.pr_release(kb, ReservationType::WriteExclusive).unwrap();
        assert_eq!(b.pr_read_reservation().unwrap(), None);
        b.pr_clear(kb).unwrap();
        assert!(b.pr_read_keys().unwrap().1.is_empty());
        a.write_at(&[5u8; 4096], 0, false).unwrap();
    }
}

#[test]
fn reconnects_after_a_target_restart_and_times_out_when_it_stays_down() {
    let env = TestEnv::new("ini-restart");
    for kind in [Kind::Tgt, Kind::Ferry] {
        let mut t = Target::start(&env, kind, 64, TargetAuth::default());
        let mut cfg = config(&t, &TargetAuth::default(), true);
        cfg.io_timeout = Duration::from_secs(15);
        let lun = Arc::new(Lun::open(cfg, t.lun).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..8u64)
            .map(|w| {
                let (lun, stop) = (lun.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let off = w * (1 << 20) + (n % 16) * 65536;
                        lun.write_at(&pattern(w * 1000 + n, 65536), off, false)
                            .unwrap_or_else(|e| panic!("writer {w} write {n}: {e}"));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        t.kill();
        std::thread::sleep(Duration::from_millis(700));
        t.start_server();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let counts: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        assert!(lun.session().reconnects() >= 1, "{kind:?}: no reconnect");
        lun.flush().unwrap();
        // Every slot holds the last pattern its writer wrote there.
        for (w, n) in counts.iter().enumerate() {
            for k in n.saturating_sub(16)..*n {
                let off = w as u64 * (1 << 20) + (k % 16) * 65536;
                let mut back = vec![0u8; 65536];
                lun.read_at(&mut back, off).unwrap();
                assert!(
                    back == pattern(w as u64 * 1000 + k, 65536),
                    "{kind:?}: writer {w} write {k}"
                );
            }
        }
        // Down for good: the caller gets a timeout, not a hang.
        t.kill();
        let started = Instant::now();
        let e = lun.read_at(&mut [0u8; 4096], 0).err().unwrap();
        assert!(matches!(e, IscsiError::Timeout { .. }), "{kind:?}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "{:?}",
            started.elapsed()
        );
    }
}
