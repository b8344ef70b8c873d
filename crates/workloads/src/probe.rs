//! The client side of [`crate::echo`]: probes a guest every few milliseconds
//! and measures what a user would feel — lost replies and the longest silence.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"FERRYPRB";
const PACKET: usize = 24;

/// How to probe.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The echo responder.
    pub target: SocketAddr,
    /// Time between probes.
    pub interval: Duration,
    /// How long to probe in all.
    pub duration: Duration,
    /// How long to wait for the last replies after the last probe.
    pub linger: Duration,
    /// Stop sending once this file exists.
    pub stop_file: Option<std::path::PathBuf>,
}

/// What the probing saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeReport {
    /// Probes sent.
    pub sent: u64,
    /// Distinct probes answered.
    pub received: u64,
    /// Probes never answered.
    pub lost: u64,
    /// Replies to a probe already answered (should be zero).
    pub duplicates: u64,
    /// Longest time between two consecutive replies, in ms (from the first
    /// probe sent, so a guest that never answers shows the whole run).
    pub max_gap_ms: f64,
    /// Mean round-trip time, in ms.
    pub rtt_avg_ms: f64,
    /// Largest round-trip time, in ms.
    pub rtt_max_ms: f64,
    /// Milliseconds since the start when each reply arrived, with its probe's
    /// sequence number: the timeline for reports.
    pub replies: Vec<(u64, f64)>,
}

/// Sends a probe every `interval` for `duration` and collects the replies.
pub fn run(cfg: &ProbeConfig) -> std::io::Result<ProbeReport> {
    let bind: SocketAddr = if cfg.target.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(cfg.target)?;
    let start = Instant::now();
    let mut end_send = start + cfg.duration;
    let mut next_stop_check = start;
    let mut end_all = end_send + cfg.linger;
    let mut next_send = start;
    let mut seq: u64 = 0;
    let mut seen = std::collections::HashSet::new();
    let mut report = ProbeReport::default();
    let mut last_reply = start;
    let mut rtt_sum = 0.0;
    let mut buf = [0u8; 64];
    loop {
        let now = Instant::now();
        if now >= end_all {
            break;
        }
        if let Some(f) = &cfg.stop_file {
            if now >= next_stop_check && now < end_send {
                next_stop_check = now + Duration::from_millis(100);
                if f.exists() {
                    end_send = now;
                    end_all = now + cfg.linger;
                }
            }
        }
        if now >= next_send && now < end_send {
            let mut pkt = [0u8; PACKET];
            pkt[..8].copy_from_slice(MAGIC);
            pkt[8..16].copy_from_slice(&seq.to_le_bytes());
            let sent_at = now.duration_since(start).as_nanos() as u64;
            pkt[16..24].copy_from_slice(&sent_at.to_le_bytes());
            // ECONNREFUSED from an earlier ICMP error is normal while the guest is away.
            let _ = sock.send(&pkt);
            seq += 1;
            report.sent += 1;
            next_send += cfg.interval;
            continue;
        }
        let wait_until = if now < end_send {
            next_send.min(end_send)
        } else {
            end_all
        };
        let timeout = wait_until
            .saturating_duration_since(now)
            .max(Duration::from_micros(100));
        sock.set_read_timeout(Some(timeout))?;
        let len = match sock.recv(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        if len != PACKET || &buf[..8] != MAGIC {
            continue;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&buf[8..16]);
        let rseq = u64::from_le_bytes(word);
        word.copy_from_slice(&buf[16..24]);
        let sent_ns = u64::from_le_bytes(word);
        if rseq >= seq {
            continue;
        }
        if !seen.insert(rseq) {
            report.duplicates += 1;
            continue;
        }
        let arrived = Instant::now();
        let at_ms = arrived.duration_since(start).as_secs_f64() * 1e3;
        let rtt = at_ms - sent_ns as f64 / 1e6;
        rtt_sum += rtt;
        report.rtt_max_ms = report.rtt_max_ms.max(rtt);
        report.max_gap_ms = report
            .max_gap_ms
            .max(arrived.duration_since(last_reply).as_secs_f64() * 1e3);
        last_reply = arrived;
        report.received += 1;
        report.replies.push((rseq, at_ms));
    }
    // Silence at the end of the run counts too.
    let send_end = end_send.min(Instant::now());
    if send_end > last_reply {
        report.max_gap_ms = report
            .max_gap_ms
            .max(send_end.duration_since(last_reply).as_secs_f64() * 1e3);
    }
    report.lost = report.sent - report.received;
    if report.received > 0 {
        report.rtt_avg_ms = rtt_sum / report.received as f64;
    }
    Ok(report)
}
