//! The checks, each run on the hosts it is about.

use crate::report::{Outcome, Report};
use ferry_migrate::Host;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// A host to validate: its name and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name (in the hosts file).
    pub name: String,
    /// How to run commands there.
    pub host: Host,
}

/// Clock skew below which all is well, and above which Raft leases and
/// certificate validity are at risk.
const SKEW_WARN_S: f64 = 0.5;
const SKEW_FAIL_S: f64 = 5.0;

fn output(mut c: Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("cannot run {c:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let out_text = String::from_utf8_lossy(&out.stdout);
        Err(err
            .lines()
            .chain(out_text.lines())
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed")
            .trim()
            .to_string())
    }
}

impl Target {
    pub(crate) fn ferry(&self, exe: &Path, args: &[&str]) -> Result<String, String> {
        let mut c = self.host.ferry(exe);
        c.args(args);
        output(c)
    }

    fn tool(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut c = match &self.host.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        c.args(args);
        output(c)
    }

    fn json(&self, exe: &Path, args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ferry(exe, &all)?;
        serde_json::from_str(&text).map_err(|e| format!("unreadable answer: {e}"))
    }

    /// The host's address on each network (or its migration address alone).
    fn networks(&self) -> Vec<(String, String)> {
        if self.host.networks.is_empty() {
            vec![("migration".into(), self.host.migration_address.clone())]
        } else {
            self.host
                .networks
                .iter()
                .map(|(n, a)| (n.clone(), a.clone()))
                .collect()
        }
    }

    /// The MTU of the interface that carries `addr` on this host.
    fn mtu_of(&self, addr: &str) -> Option<u32> {
        let addrs = self.tool("ip", &["-o", "addr", "show"]).ok()?;
        let dev = addrs
            .lines()
            .find(|l| l.contains(&format!("inet {addr}/")))?
            .split_whitespace()
            .nth(1)?
            .to_string();
        let link = self.tool("ip", &["-o", "link", "show", "dev", &dev]).ok()?;
        let mut words = link.split_whitespace();
        words.find(|w| *w == "mtu")?;
        words.next()?.parse().ok()
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Average round-trip time from `ping -q` output, in ms.
fn ping_avg_ms(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains("min/avg/max"))?;
    line.split('=')
        .nth(1)?
        .trim()
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// Runs every check on `targets`, with `exe` as the `ferry` they run.
pub fn validate(
    targets: &[Target],
    exe: &Path,
    luns: &[String],
    lun_secrets: Option<&Path>,
) -> Report {
    let mut r = Report {
        hosts: targets.iter().map(|t| t.name.clone()).collect(),
        ..Report::default()
    };
    versions(&mut r, targets, exe);
    virtualization(&mut r, targets, exe);
    cpus(&mut r, targets, exe);
    networks(&mut r, targets);
    clocks(&mut r, targets);
    let ctx = crate::storage::LunCtx {
        exe,
        secrets: lun_secrets,
    };
    crate::storage::storage(&mut r, targets, &ctx, luns);
    r
}

fn versions(r: &mut Report, targets: &[Target], exe: &Path) {
    let mut seen: Vec<(String, String)> = Vec::new();
    for t in targets {
        match t.ferry(exe, &["--version"]) {
            Ok(v) => seen.push((t.name.clone(), v.trim().to_string())),
            Err(e) => r.add(
                "version",
                &t.name,
                Outcome::Fail,
                format!("cannot run ferry there: {e}"),
            ),
        }
    }
    let mut distinct: Vec<&String> = seen.iter().map(|(_, v)| v).collect();
    distinct.sort();
    distinct.dedup();
    match distinct.len() {
        0 => {}
        1 => r.add(
            "version",
            "all hosts",
            Outcome::Pass,
            format!("every host runs {}", distinct[0]),
        ),
        _ => r.add(
            "version",
            "all hosts",
            Outcome::Warn,
            format!(
                "hosts run different versions: {}",
                seen.iter()
                    .map(|(h, v)| format!("{h} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

fn virtualization(r: &mut Report, targets: &[Target], exe: &Path) {
    for t in targets {
        match t.json(exe, &["host", "accel"]) {
            Ok(v) => {
                let accel = v["accel"].as_str().unwrap_or("?");
                let why = v["reason"].as_str().unwrap_or("");
                let qemu = v["qemu_version"].as_str().unwrap_or("?");
                if accel == "kvm" {
                    r.add(
                        "virtualization",
                        &t.name,
                        Outcome::Pass,
                        format!("KVM ({why}); QEMU {qemu}"),
                    );
                } else {
                    r.add(
                        "virtualization",
                        &t.name,
                        Outcome::Warn,
                        format!("VMs run under {accel}, much slower than KVM: {why}; QEMU {qemu}"),
                    );
                }
            }
            Err(e) => r.add("virtualization", &t.name, Outcome::Fail, e),
        }
    }
}

fn cpus(r: &mut Report, targets: &[Target], exe: &Path) {
    let mut profiles = Vec::new();
    for t in targets {
        let got = t.json(exe, &["host", "cpu"]).and_then(|v| {
            serde_json::from_value::<ferry_cpu::CpuProfile>(v["profile"].clone())
                .map_err(|e| format!("unreadable CPU profile: {e}"))
        });
        match got {
            Ok(p) => {
                r.add(
                    "cpu",
                    &t.name,
                    Outcome::Pass,
                    format!(
                        "{} family {} model {}, {} features for guests{}, digest {}",
                        p.vendor,
                        p.family,
                        p.model,
                        p.features.len(),
                        if p.withheld.is_empty() {
                            String::new()
                        } else {
                            format!(" ({} withheld by configuration)", p.withheld.len())
                        },
                        p.digest()
                    ),
                );
                profiles.push(p);
            }
            Err(e) => r.add("cpu", &t.name, Outcome::Fail, e),
        }
    }
    if profiles.len() < 2 {
        return;
    }
    match ferry_cpu::baseline(&profiles) {
        Ok(m) => {
            let all: std::collections::BTreeSet<&String> =
                profiles.iter().flat_map(|p| p.features.iter()).collect();
            let differ: Vec<&str> = all
                .into_iter()
                .filter(|f| !m.features.contains(*f))
                .map(String::as_str)
                .collect();
            let reason = if differ.is_empty() {
                format!("every host offers the same {} features", m.features.len())
            } else {
                format!(
                    "compatible baseline: {} features; VMs with cpu = \"compatible\" do not see {} (not on every host); VMs with cpu = \"host\" may not move to every host",
                    m.features.len(),
                    differ.join(" ")
                )
            };
            r.add("cpu", "compatible baseline", Outcome::Pass, reason);
        }
        Err(e) => r.add("cpu", "compatible baseline", Outcome::Fail, e.to_string()),
    }
}

fn networks(r: &mut Report, targets: &[Target]) {
    for a in targets {
        for b in targets {
            if a.name == b.name {
                continue;
            }
            let a_nets = a.networks();
            for (net, addr) in b.networks() {
                let Some((_, from_addr)) = a_nets.iter().find(|(n, _)| *n == net) else {
                    continue;
                };
                let test = format!("{} -> {} on {net} ({addr})", a.name, b.name);
                match a.tool("ping", &["-c", "3", "-i", "0.2", "-W", "1", "-q", &addr]) {
                    Err(e) => r.add("network", test, Outcome::Fail, format!("unreachable: {e}")),
                    Ok(out) => {
                        let avg = ping_avg_ms(&out).unwrap_or(0.0);
                        let (ma, mb) = (a.mtu_of(from_addr), b.mtu_of(&addr));
                        match (ma, mb) {
                            (Some(x), Some(y)) if x != y => r.add(
                                "network",
                                test,
                                Outcome::Warn,
                                format!(
                                    "reachable, {avg:.2} ms; MTU differs: {x} on {} and {y} on {}",
                                    a.name, b.name
                                ),
                            ),
                            (Some(m), Some(_)) => {
                                // The full MTU must cross unfragmented.
                                let size = (m.saturating_sub(28)).to_string();
                                let df = a.tool(
                                    "ping",
                                    &["-c", "1", "-W", "1", "-M", "do", "-s", &size, &addr],
                                );
                                if df.is_ok() {
                                    r.add(
                                        "network",
                                        test,
                                        Outcome::Pass,
                                        format!(
                                            "reachable, {avg:.2} ms round trip, MTU {m} end to end"
                                        ),
                                    );
                                } else {
                                    r.add("network", test, Outcome::Warn, format!("reachable, {avg:.2} ms, but {m}-byte packets do not cross unfragmented"));
                                }
                            }
                            _ => r.add(
                                "network",
                                test,
                                Outcome::Pass,
                                format!("reachable, {avg:.2} ms round trip (MTU unknown)"),
                            ),
                        }
                    }
                }
            }
        }
    }
}

fn clocks(r: &mut Report, targets: &[Target]) {
    for t in targets {
        let before = now_s();
        let got = t.tool("date", &["+%s.%N"]);
        let mid = (before + now_s()) / 2.0;
        match got.map(|s| s.trim().parse::<f64>()) {
            Ok(Ok(there)) => {
                let skew = (there - mid).abs();
                let outcome = if skew < SKEW_WARN_S {
                    Outcome::Pass
                } else if skew < SKEW_FAIL_S {
                    Outcome::Warn
                } else {
                    Outcome::Fail
                };
                r.add(
                    "clock",
                    &t.name,
                    outcome,
                    format!("{skew:.3} s from this host's clock"),
                );
            }
            Ok(Err(e)) => r.add(
                "clock",
                &t.name,
                Outcome::Fail,
                format!("unreadable time: {e}"),
            ),
            Err(e) => r.add("clock", &t.name, Outcome::Fail, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ping_summaries() {
        let text = "--- 10.0.0.2 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 401ms\nrtt min/avg/max/mdev = 0.041/0.052/0.066/0.010 ms\n";
        assert_eq!(ping_avg_ms(text), Some(0.052));
        assert_eq!(ping_avg_ms("garbage"), None);
    }
}
