//! Asking QEMU which CPU features an accelerator can give a guest:
//! `query-cpu-model-expansion` on a machine-less QEMU.

use crate::{Accel, QemuBinary};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long QEMU may take to answer.
const EXPANSION_TIMEOUT: Duration = Duration::from_secs(20);

/// The model whose expansion is "everything this accelerator can give":
/// `host` under KVM; under TCG `host` expands but cannot start, so `max`.
pub fn widest_model(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    }
}

/// QEMU's static expansion (`base` plus explicit properties) of CPU model
/// `model` under `accel`: the `return` object of the QMP command.
pub fn static_expansion(qemu: &QemuBinary, accel: Accel, model: &str) -> Result<Value, String> {
    let mut child = Command::new(&qemu.path)
        .args(["-machine", "none", "-accel", accel.qemu_arg()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.path.display()))?;
    let request = serde_json::json!({
        "execute": "query-cpu-model-expansion",
        "arguments": {"type": "static", "model": {"name": model}},
    });
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{{\"execute\":\"qmp_capabilities\"}}\n{request}");
        // stdin stays open until the answer is in: closing it quits QEMU.
        let _ = stdin.flush();
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Some(out) = stdout else { return };
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v.get("error").is_some()
                    || v.get("return").and_then(|r| r.get("model")).is_some()
                {
                    let _ = tx.send(v);
                    break;
                }
            }
        });
        let answer = rx.recv_timeout(EXPANSION_TIMEOUT);
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        return match answer {
            Ok(v) => match v.get("return") {
                Some(r) => Ok(r.clone()),
                None => Err(format!(
                    "QEMU refused to expand CPU model {model:?}: {}",
                    v["error"]["desc"].as_str().unwrap_or("no reason given")
                )),
            },
            Err(_) => Err(format!(
                "QEMU did not expand CPU model {model:?} within {} s",
                EXPANSION_TIMEOUT.as_secs()
            )),
        };
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("cannot talk to QEMU".into())
}
