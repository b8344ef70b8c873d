//! Host-side throughput of the initiator against a running target:
//! `lunperf PORTAL IQN LUN` (sequential 1 MiB writes then reads, QD 1).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use ferry_iscsi::initiator::{random_isid, LoginConfig, Lun, SessionConfig};
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let cfg = SessionConfig::new(LoginConfig {
        portal: a[1].clone(),
        target: a[2].clone(),
        initiator: "iqn.2026-01.dev.ferry:lunperf".into(),
        isid: random_isid(),
        chap: None,
        mutual: None,
        digests: false,
        timeout: Duration::from_secs(5),
    });
    let lun = Lun::open(cfg, a[3].parse().unwrap()).unwrap();
    let mut buf = vec![7u8; 1 << 20];
    for write in [true, false] {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(2) {
            let off = (n % 200) << 20;
            if write {
                lun.write_at(&buf, off, false).unwrap();
            } else {
                lun.read_at(&mut buf, off).unwrap();
            }
            n += 1;
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        println!("{} {rate:.0} MiB/s", if write { "write" } else { "read" });
    }
}
