//! Per-disk counters: operations, bytes, latency, in-flight requests.
//!
//! The service samples them every second into a JSON file beside the VM's
//! other runtime files, with rates computed over the last interval, so the
//! CLI can show them without talking to the service.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// Live counters of one disk, updated by the server.
#[derive(Debug, Default)]
pub struct DiskCounters {
    /// Completed reads.
    pub reads: AtomicU64,
    /// Completed writes (including write-zeroes).
    pub writes: AtomicU64,
    /// Completed flushes.
    pub flushes: AtomicU64,
    /// Completed discards.
    pub discards: AtomicU64,
    /// Bytes read.
    pub read_bytes: AtomicU64,
    /// Bytes written.
    pub write_bytes: AtomicU64,
    /// Requests that failed.
    pub errors: AtomicU64,
    /// Sum of request latencies in microseconds.
    pub latency_us_total: AtomicU64,
    /// Largest latency seen in the current interval, microseconds.
    pub latency_us_max: AtomicU64,
    /// Requests being served now.
    pub in_flight: AtomicI64,
}

/// What kind of request finished.
#[derive(Debug, Clone, Copy)]
pub enum OpKind {
    /// A read of n bytes.
    Read(u64),
    /// A write of n bytes.
    Write(u64),
    /// A flush.
    Flush,
    /// A discard.
    Discard,
}

impl DiskCounters {
    /// Marks a request started; returns when it started.
    pub fn begin(&self) -> Instant {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    /// Forgets a started request without counting it: it is handed on to
    /// run again, and counted then.
    pub fn handed_on(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Marks a request finished.
    pub fn end(&self, started: Instant, op: OpKind, ok: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let us = started.elapsed().as_micros() as u64;
        self.latency_us_total.fetch_add(us, Ordering::Relaxed);
        self.latency_us_max.fetch_max(us, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match op {
            OpKind::Read(n) => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                self.read_bytes.fetch_add(n, Ordering::Relaxed);
            }
            OpKind::Write(n) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                self.write_bytes.fetch_add(n, Ordering::Relaxed);
            }
            OpKind::Flush => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
            }
            OpKind::Discard => {
                self.discards.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn totals(&self) -> [u64; 8] {
        [
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.flushes.load(Ordering::Relaxed),
            self.discards.load(Ordering::Relaxed),
            self.read_bytes.load(Ordering::Relaxed),
            self.write_bytes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.latency_us_total.load(Ordering::Relaxed),
        ]
    }
}

/// A sample of one disk's counters with rates over the last interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskStats {
    /// Export name.
    pub name: String,
    /// Backend identity (image path).
    pub backend: String,
    /// Size in bytes.
    pub size: u64,
    /// Read-only export.
    pub read_only: bool,
    /// Totals since the service started.
    pub reads: u64,
    /// Total writes.
    pub writes: u64,
    /// Total flushes.
    pub flushes: u64,
    /// Total discards.
    pub discards: u64,
    /// Total bytes read.
    pub read_bytes: u64,
    /// Total bytes written.
    pub write_bytes: u64,
    /// Total failed requests.
    pub errors: u64,
    /// Requests in flight at the sample.
    pub in_flight: i64,
    /// Read operations per second over the last interval.
    pub read_iops: f64,
    /// Write operations per second over the last interval.
    pub write_iops: f64,
    /// Read MiB/s over the last interval.
    pub read_mibps: f64,
    /// Write MiB/s over the last interval.
    pub write_mibps: f64,
    /// Mean request latency over the last interval, microseconds.
    pub latency_us_avg: f64,
    /// Largest request latency over the last interval, microseconds.
    pub latency_us_max: u64,
}

/// Turns counters into [`DiskStats`] samples with rates.
pub struct Sampler {
    last: Vec<[u64; 8]>,
    at: Instant,
}

impl Sampler {
    /// A sampler for `n` disks.
    pub fn new(n: usize) -> Self {
        Sampler {
            last: vec![[0; 8]; n],
            at: Instant::now(),
        }
    }

    /// Samples every disk; `meta` gives (name, backend, size, read_only).
    pub fn sample(
        &mut self,
        disks: &[(&DiskCounters, String, String, u64, bool)],
    ) -> Vec<DiskStats> {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        self.at = Instant::now();
        let mut out = Vec::new();
        for (i, (c, name, backend, size, ro)) in disks.iter().enumerate() {
            let now = c.totals();
            let prev = self.last.get(i).copied().unwrap_or([0; 8]);
            let d = |k: usize| now[k].saturating_sub(prev[k]) as f64;
            let ops = d(0) + d(1) + d(2) + d(3);
            out.push(DiskStats {
                name: name.clone(),
                backend: backend.clone(),
                size: *size,
                read_only: *ro,
                reads: now[0],
                writes: now[1],
                flushes: now[2],
                discards: now[3],
                read_bytes: now[4],
                write_bytes: now[5],
                errors: now[6],
                in_flight: c.in_flight.load(Ordering::Relaxed),
                read_iops: d(0) / secs,
                write_iops: d(1) / secs,
                read_mibps: d(4) / secs / 1048576.0,
                write_mibps: d(5) / secs / 1048576.0,
                latency_us_avg: if ops > 0.0 { d(7) / ops } else { 0.0 },
                latency_us_max: c.latency_us_max.swap(0, Ordering::Relaxed),
            });
            if let Some(slot) = self.last.get_mut(i) {
                *slot = now;
            }
        }
        out
    }
}
