//! Storage checks: every host sees each shared LUN as the same device (the
//! VPD 0x83 identity), and SCSI-3 persistent reservations — what the
//! cluster fences with — work between two hosts. Each step runs
//! `ferry host lun ...` on the host concerned.

use crate::checks::Target;
use crate::report::{Outcome, Report};
use serde_json::Value;
use std::path::Path;

/// Keys the reservation test registers ("Ferry" and the host's place);
/// removed again at the end.
const KEY_A: &str = "0x4665727279000001";
const KEY_B: &str = "0x4665727279000002";

/// The initiator name a host uses towards shared storage.
pub fn initiator_of(t: &Target) -> String {
    ferry_spec::initiator_name_for(&t.name)
}

impl Target {
    /// `ferry [--json] host lun VERB URL ARGS... --initiator <this host's>
    /// [--secrets FILE]`.
    fn lun(
        &self,
        ctx: &LunCtx<'_>,
        json: bool,
        verb: &str,
        url: &str,
        args: &[&str],
    ) -> Result<String, String> {
        let ini = initiator_of(self);
        let mut argv = if json { vec!["--json"] } else { Vec::new() };
        argv.extend_from_slice(&["host", "lun", verb, url]);
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--initiator", &ini]);
        let secrets = ctx.secrets.map(|p| p.display().to_string());
        if let Some(file) = &secrets {
            argv.extend_from_slice(&["--secrets", file]);
        }
        self.ferry(ctx.exe, &argv)
    }

    fn lun_show(&self, ctx: &LunCtx<'_>, url: &str) -> Result<Value, String> {
        let text = self.lun(ctx, true, "show", url, &[])?;
        serde_json::from_str(&text).map_err(|e| format!("unreadable answer: {e}"))
    }

    fn pr(&self, ctx: &LunCtx<'_>, url: &str, args: &[&str]) -> Result<String, String> {
        self.lun(ctx, false, "pr", url, args)
    }
}

/// How the hosts reach the LUNs: the ferry binary and, if the targets want
/// CHAP, the secrets file (the same path on every host).
pub struct LunCtx<'a> {
    /// The ferry binary.
    pub exe: &'a Path,
    /// CHAP credentials for `ferry host lun --secrets`.
    pub secrets: Option<&'a Path>,
}

/// Checks every LUN in `luns` from every host.
pub fn storage(r: &mut Report, targets: &[Target], ctx: &LunCtx<'_>, luns: &[String]) {
    if luns.is_empty() {
        r.add(
            "storage",
            "shared LUNs, persistent reservations",
            Outcome::Warn,
            "not checked: no shared LUN given (--lun iscsi://PORTAL/TARGET/LUN)",
        );
        return;
    }
    for url in luns {
        let mut seen = Vec::new();
        for t in targets {
            let test = format!("{url} seen by {}", t.name);
            match t.lun_show(ctx, url) {
                Ok(v) => {
                    let ids = v["lun"]["device_id"].clone();
                    r.add(
                        "storage",
                        test,
                        Outcome::Pass,
                        format!(
                            "{} {}, {} MiB, identity {}",
                            v["lun"]["vendor"].as_str().unwrap_or("?"),
                            v["lun"]["product"].as_str().unwrap_or("?"),
                            v["lun"]["size_bytes"].as_u64().unwrap_or(0) >> 20,
                            ids.as_array()
                                .and_then(|a| a.first())
                                .and_then(Value::as_str)
                                .unwrap_or("?")
                        ),
                    );
                    seen.push((t, ids, v["reservations"].clone()));
                }
                Err(e) => r.add(
                    "storage",
                    test,
                    Outcome::Fail,
                    format!("{} cannot see it: {e}", t.name),
                ),
            }
        }
        if seen.len() < 2 {
            continue;
        }
        let same = seen.iter().all(|(_, ids, _)| *ids == seen[0].1);
        let test = format!("{url} is the same disk from every host");
        if same {
            r.add(
                "storage",
                test,
                Outcome::Pass,
                format!("the same VPD 0x83 identity from {} hosts", seen.len()),
            );
        } else {
            let views: Vec<String> = seen
                .iter()
                .map(|(t, ids, _)| format!("{}: {ids}", t.name))
                .collect();
            r.add(
                "storage",
                test,
                Outcome::Fail,
                format!(
                    "hosts see different devices at this address: {}",
                    views.join("; ")
                ),
            );
        }
        let (a, b) = (seen[0].0, seen[1].0);
        let test = format!(
            "{url} persistent reservations between {} and {}",
            a.name, b.name
        );
        let pr = &seen[0].2;
        let in_use =
            !pr["reservation"].is_null() || pr["keys"].as_array().is_some_and(|k| !k.is_empty());
        if in_use {
            r.add(
                "storage",
                test,
                Outcome::Warn,
                format!(
                    "not tested: the LUN is in use (keys {}, reservation {}); the test would take it from its holder",
                    pr["keys"], pr["reservation"]
                ),
            );
            continue;
        }
        let result = reservation_dance(a, b, ctx, url);
        // Whatever happened, leave no key behind.
        if b.pr(ctx, url, &["clear", "--key", KEY_B]).is_err() {
            let _ = a.pr(ctx, url, &["clear", "--key", KEY_A]);
        }
        match result {
            Ok(()) => r.add(
                "storage",
                test,
                Outcome::Pass,
                format!(
                    "{a} registered and reserved (write exclusive); {b}'s reserve got a reservation conflict; {b} preempted {a} and holds the disk; keys cleared",
                    a = a.name,
                    b = b.name
                ),
            ),
            Err(e) => r.add("storage", test, Outcome::Fail, e),
        }
    }
}

/// Register, reserve, conflict, preempt: what failover does to a disk.
fn reservation_dance(a: &Target, b: &Target, ctx: &LunCtx<'_>, url: &str) -> Result<(), String> {
    let step = |who: &Target, what: &str, args: &[&str]| {
        who.pr(ctx, url, args)
            .map(|_| ())
            .map_err(|e| format!("{} could not {what}: {e}", who.name))
    };
    step(a, "register", &["register-ignore", "--sa-key", KEY_A])?;
    step(a, "reserve", &["reserve", "--key", KEY_A])?;
    step(b, "register", &["register-ignore", "--sa-key", KEY_B])?;
    match b.pr(ctx, url, &["reserve", "--key", KEY_B]) {
        Err(e) if e.contains("reservation conflict") => {}
        Err(e) => return Err(format!("{}'s reserve failed oddly: {e}", b.name)),
        Ok(_) => {
            return Err(format!(
                "{} reserved a disk {} holds: reservations do not exclude",
                b.name, a.name
            ))
        }
    }
    step(
        b,
        "preempt",
        &["preempt", "--key", KEY_B, "--sa-key", KEY_A],
    )?;
    let after = a.lun_show(ctx, url)?;
    let holder = after["reservations"]["reservation"]["key"]
        .as_str()
        .unwrap_or("none");
    let keys = after["reservations"]["keys"].to_string();
    if holder != KEY_B || keys.contains(KEY_A) {
        return Err(format!(
            "after {b} preempted {a}, {a} sees reservation {holder} and keys {keys}",
            a = a.name,
            b = b.name
        ));
    }
    Ok(())
}
