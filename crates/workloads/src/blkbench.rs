//! In-guest block benchmark: sequential and 4 KiB random throughput on a
//! virtio disk with O_DIRECT, the same program on every disk path compared.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Tag that starts every line this workload prints.
pub const TAG: &str = "FERRY-BLKBENCH";
const SEQ_BLOCK: usize = 1 << 20;
const RAND_BLOCK: usize = 4096;
/// Threads issuing random I/O at once (the queue depth the guest offers).
pub const RAND_THREADS: usize = 4;

/// A buffer aligned for O_DIRECT, carved from a larger allocation.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let raw = vec![0x5au8; len + 4096];
    let skip = raw.as_ptr().align_offset(4096).min(4096);
    (raw, skip)
}

fn open(dev: &Path) -> std::io::Result<(File, u64)> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)?;
    let size = f.seek(SeekFrom::End(0))?;
    Ok((f, size))
}

/// A test: device, write (else read), seconds.
type TestFn = fn(&Path, bool, f64) -> std::io::Result<Figure>;

/// One measured figure.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Operations per second.
    pub iops: f64,
    /// MiB per second.
    pub mibps: f64,
}

fn sequential(dev: &Path, write: bool, secs: f64) -> std::io::Result<Figure> {
    let (f, size) = open(dev)?;
    let (mut raw, skip) = aligned(SEQ_BLOCK);
    let buf = &mut raw[skip..skip + SEQ_BLOCK];
    let blocks = (size / SEQ_BLOCK as u64).max(1);
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let off = (ops % blocks) * SEQ_BLOCK as u64;
        if write {
            f.write_all_at(buf, off)?;
        } else {
            f.read_exact_at(buf, off)?;
        }
        ops += 1;
    }
    if write {
        f.sync_data()?;
    }
    let t = start.elapsed().as_secs_f64();
    Ok(Figure {
        iops: ops as f64 / t,
        mibps: ops as f64 / t,
    })
}

fn random(dev: &Path, write: bool, secs: f64) -> std::io::Result<Figure> {
    let (_, size) = open(dev)?;
    let blocks = (size / RAND_BLOCK as u64).max(1);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..RAND_THREADS {
        let dev = dev.to_path_buf();
        handles.push(std::thread::spawn(move || -> std::io::Result<u64> {
            let (f, _) = open(&dev)?;
            let (mut raw, skip) = aligned(RAND_BLOCK);
            let buf = &mut raw[skip..skip + RAND_BLOCK];
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1);
            let mut ops = 0;
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x % blocks) * RAND_BLOCK as u64;
                if write {
                    f.write_all_at(buf, off)?;
                } else {
                    f.read_exact_at(buf, off)?;
                }
                ops += 1;
            }
            Ok(ops)
        }));
    }
    let mut ops = 0;
    for h in handles {
        ops += h
            .join()
            .map_err(|_| std::io::Error::other("benchmark thread panicked"))??;
    }
    let t = start.elapsed().as_secs_f64();
    Ok(Figure {
        iops: ops as f64 / t,
        mibps: ops as f64 * RAND_BLOCK as f64 / t / 1048576.0,
    })
}

/// Runs all four tests for `secs` each and prints one line per test, then
/// `FERRY-BLKBENCH done`.
pub fn run(dev: &Path, secs: f64) -> std::io::Result<()> {
    let tests: [(&str, TestFn, bool); 4] = [
        ("seqwrite", sequential, true),
        ("seqread", sequential, false),
        ("randwrite", random, true),
        ("randread", random, false),
    ];
    for (name, f, write) in tests {
        let fig = f(dev, write, secs)?;
        println!(
            "{TAG} test={name} iops={:.0} mibps={:.1}",
            fig.iops, fig.mibps
        );
    }
    println!("{TAG} done");
    Ok(())
}
