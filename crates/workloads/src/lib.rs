//! Workloads that run inside the test guest, and the host-side tools that
//! check them.
//!
//! Later issues prove "nothing lost" across migration, failover and storage
//! faults with these programs. Each prints lines starting with a fixed
//! `FERRY-<NAME>` tag on the serial console so tests can parse them:
//!
//! - [`memtest`]: fills memory with a verifiable pattern and keeps rewriting
//!   it, verifying every word before it is overwritten.
//! - [`counter`]: a monotonic count with the guest's uptime.
//! - [`disktest`]: numbered, checksummed blocks on a virtio disk, with flushes,
//!   verifiable from inside the guest or from the host image.
//! - [`cpuid`]: the CPU features the guest sees, for processor
//!   compatibility.
//! - [`echo`]: a UDP echo responder; [`probe`] is the client that measures it.

pub mod blkbench;
pub mod counter;
pub mod cpuid;
pub mod disktest;
pub mod echo;
pub mod memtest;
pub mod probe;
pub mod system;

/// Seconds since the guest (or host) booted, from `/proc/uptime`.
pub fn uptime_secs() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}
