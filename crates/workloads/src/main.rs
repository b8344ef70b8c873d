//! `ferry-workload`: the test guest's workloads in one static binary.
//!
//! The guest's `/init` turns each `ferry.run=NAME:ARG:ARG` on the kernel
//! command line into `ferry-workload NAME ARG ARG`.

use ferry_workloads::{blkbench, counter, cpuid, disktest, echo, memtest, system};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: ferry-workload WORKLOAD [ARGS]
  memtest MIB [RATE]            rewrite MIB MiB continuously at RATE MiB/s or 'max' (default max)
  counter [INTERVAL_MS]         print a monotonic count with uptime (default 1000 ms)
  disktest DEV BLOCKS write [PASSES]   write numbered blocks with flushes (no PASSES: forever)
  disktest DEV BLOCKS verify    verify blocks written by 'write'
  echo [PORT]                   UDP echo responder (default 7777)
  blkbench DEV [SECS]           sequential 1 MiB and random 4 KiB read/write, SECS each (default 3)
  cpuid [INTERVAL_MS]           print /proc/cpuinfo flags, then CPUID feature words (default 1000 ms)
  sysinfo                       print 'cpus=N ram_mib=M' (used by /init)
  powerbutton                   power off when the ACPI power button is pressed";

fn arg<T: std::str::FromStr>(
    args: &[String],
    i: usize,
    what: &str,
    default: Option<T>,
) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match args.get(i) {
        Some(v) => v.parse().map_err(|e| format!("{what} {v:?}: {e}")),
        None => default.ok_or_else(|| format!("missing {what}")),
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let name = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or(&[]);
    match name {
        "memtest" => {
            let mib: usize = arg(rest, 0, "MiB", None)?;
            let rate: memtest::Rate = arg(rest, 1, "rate", Some(memtest::Rate::Max))?;
            memtest::run(mib, rate);
            Ok(ExitCode::FAILURE)
        }
        "counter" => {
            let ms: u64 = arg(rest, 0, "interval", Some(1000))?;
            counter::run(Duration::from_millis(ms.max(1)))
        }
        "disktest" => {
            let dev: String = arg(rest, 0, "device", None)?;
            let blocks: u64 = arg(rest, 1, "block count", None)?;
            let mode: String = arg(rest, 2, "mode", Some("write".to_string()))?;
            match mode.as_str() {
                "write" => {
                    let passes: Option<u64> = rest
                        .get(3)
                        .map(|_| arg(rest, 3, "passes", None))
                        .transpose()?;
                    disktest::write(Path::new(&dev), blocks, 1, passes)
                        .map_err(|e| format!("{} write {dev}: {e}", disktest::TAG))?;
                    Ok(ExitCode::SUCCESS)
                }
                "verify" => {
                    let report = disktest::verify_device(Path::new(&dev), blocks)
                        .map_err(|e| format!("{} verify {dev}: {e}", disktest::TAG))?;
                    println!("{}", report.summary());
                    Ok(if report.all_valid() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
                other => Err(format!("unknown disktest mode {other:?}")),
            }
        }
        "echo" => {
            let port: u16 = arg(rest, 0, "port", Some(7777))?;
            echo::run(port).map_err(|e| format!("{} port {port}: {e}", echo::TAG))?;
            Ok(ExitCode::FAILURE)
        }
        "blkbench" => {
            let dev: String = arg(rest, 0, "device", None)?;
            let secs: f64 = arg(rest, 1, "seconds per test", Some(3.0))?;
            blkbench::run(Path::new(&dev), secs)
                .map_err(|e| format!("{} {dev}: {e}", blkbench::TAG))?;
            Ok(ExitCode::SUCCESS)
        }
        "cpuid" => {
            let ms: u64 = arg(rest, 0, "interval in ms", Some(1000))?;
            cpuid::run(Duration::from_millis(ms.max(10)))
        }
        "sysinfo" => {
            println!("{}", system::sysinfo_line());
            Ok(ExitCode::SUCCESS)
        }
        "powerbutton" => {
            system::watch_power_button().map_err(|e| format!("powerbutton: {e}"))?;
            Ok(ExitCode::FAILURE)
        }
        _ => Err(format!("unknown workload {name:?}\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("ferry-workload: {msg}");
            ExitCode::from(2)
        }
    }
}
