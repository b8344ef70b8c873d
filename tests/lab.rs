//! The README's main job in its short variant: `ferry lab demo` on a lab of
//! its own, checked through its machine-readable report, and the lab fully
//! removed afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[test]
fn the_demo_walks_through_and_leaves_nothing_behind() {
    guest_dir();
    let name = format!("fyl{}", std::process::id() % 100_000);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "--json", "lab", "demo", "--short", "--down", "--name", &name,
        ])
        .output()
        .unwrap();
    let _cleanup = LabGuard(name.clone());
    assert!(
        out.status.success(),
        "demo failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["vm_host"], "server002", "{r}");
    let kinds: Vec<&str> = r["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["live", "quick"]);
    let cluster = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["title"]
                .as_str()
                .unwrap()
                .starts_with("Create the cluster")
        })
        .expect("cluster step");
    assert_eq!(cluster["status"], "ok", "{cluster}");
    let i = &r["integrity"];
    assert!(
        i["memory_ok"] == true && i["counter_ok"] == true && i["disk_ok"] == true,
        "{i}"
    );
    // The live migration's blackout, from the probe timeline: generous bound.
    let p = &r["probe"];
    let start = p["started_unix_ms"].as_f64().unwrap();
    let live = &r["migrations"][0];
    let (from, to) = (
        live["start_unix_ms"].as_f64().unwrap() - start,
        live["end_unix_ms"].as_f64().unwrap() - start + 1000.0,
    );
    let times: Vec<f64> = p["replies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_f64().unwrap())
        .filter(|t| *t >= from && *t <= to)
        .collect();
    assert!(
        times.len() > 100,
        "too few replies around the live migration"
    );
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gap < 2000.0, "live migration blackout {gap} ms");
    // Reports exist where the summary says.
    let dir = std::path::PathBuf::from(r["report_dir"].as_str().unwrap());
    for f in ["report.md", "report.json", "timeline.svg"] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    // Nothing of the lab is left.
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("{name}-"))),
        "namespaces left: {left}"
    );
    assert!(!std::path::Path::new("/run/ferry/lab").join(&name).exists());
    let _ = std::fs::remove_dir_all(dir);
}
