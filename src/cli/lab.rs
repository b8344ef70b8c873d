//! `ferry lab ...`: the seed's four machines on this host, and the demo.

use anyhow::Context;
use clap::Subcommand;
use ferry_lab::demo::{self, DemoOptions};
use ferry_lab::report::StepStatus;
use ferry_lab::seed::SeedLab;
use std::process::ExitCode;

/// Lab verbs.
#[derive(Subcommand)]
pub enum LabCmd {
    /// Make the lab: namespaces dc, server001, server002 and client joined by
    /// an external and an internal network, a VM bridge on each server, a
    /// hosts file. Idempotent.
    Up {
        /// Lab name: the prefix of its namespaces.
        #[arg(long, default_value = "ferrylab")]
        name: String,
    },
    /// Remove everything `lab up` made (namespaces with their processes, the
    /// lab's files) and nothing else.
    Down {
        /// Lab name.
        #[arg(long, default_value = "ferrylab")]
        name: String,
    },
    /// Show the lab's machines.
    Status {
        /// Lab name.
        #[arg(long, default_value = "ferrylab")]
        name: String,
    },
    /// Run the seed's walkthrough on the lab (made if needed): a VM with
    /// processor compatibility, started on server002, live-migrated to
    /// server001 and quick-migrated back while the client probes it every
    /// 2 ms; then a report (Markdown, JSON, SVG timeline).
    Demo {
        /// Lab name.
        #[arg(long, default_value = "ferrylab")]
        name: String,
        /// A quicker variant (smaller VM, shorter pauses), as CI runs it.
        #[arg(long)]
        short: bool,
        /// Remove the lab afterwards (also after a failure).
        #[arg(long)]
        down: bool,
    },
}

/// Runs a lab verb.
pub fn run(cmd: LabCmd, json: bool) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the lab needs root (network namespaces, bridges, TAP devices); try sudo"
    );
    match cmd {
        LabCmd::Up { name } => {
            let lab = SeedLab::new(&name);
            lab.up()?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"lab": name, "dir": lab.dir(), "machines": lab.status()})
                );
            } else {
                println!(
                    "lab {name} is up; hosts file {}",
                    lab.hosts_file().display()
                );
                print_status(&lab);
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Down { name } => {
            SeedLab::new(&name).down();
            if !json {
                println!("lab {name} removed");
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Status { name } => {
            let lab = SeedLab::new(&name);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"lab": name, "up": lab.is_up(), "machines": lab.status()})
                );
            } else {
                print_status(&lab);
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCmd::Demo { name, short, down } => {
            let lab = SeedLab::new(&name);
            let opts = DemoOptions {
                ferry: std::env::current_exe().context("cannot find the ferry binary")?,
                guest_dir: ferry_guest::default_dir(),
                short,
            };
            let result = demo::run(&lab, &opts, |line| {
                if !json {
                    println!("{line}");
                }
            });
            let keep_dir = std::env::temp_dir().join(format!("ferry-lab-{name}-report"));
            let outcome = match &result {
                Ok(report) => {
                    if down {
                        // Keep the report where it can still be read.
                        let _ = std::fs::remove_dir_all(&keep_dir);
                        let _ = copy_dir(&lab.dir().join("report"), &keep_dir);
                        lab.down();
                    }
                    let dir = if down {
                        keep_dir.clone()
                    } else {
                        report.report_dir.clone().into()
                    };
                    if json {
                        let mut v = serde_json::to_value(report)?;
                        v["report_dir"] = serde_json::json!(dir);
                        println!("{v}");
                    } else {
                        summary(report, &dir);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    if down {
                        lab.down();
                    }
                    eprintln!("ferry: demo stopped: {e}");
                    if !down {
                        eprintln!("ferry: clean up with: ferry lab down --name {name}");
                    }
                    ExitCode::FAILURE
                }
            };
            Ok(outcome)
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

fn print_status(lab: &SeedLab) {
    for m in lab.status() {
        println!(
            "{:<10} {:<24} {:<5} {} processes",
            m.machine,
            m.netns,
            if m.up { "up" } else { "down" },
            m.processes
        );
    }
}

fn summary(r: &ferry_lab::report::DemoReport, dir: &std::path::Path) {
    let count = |s: StepStatus| r.steps.iter().filter(|x| x.status == s).count();
    println!(
        "\nSummary: {} steps done, {} skipped (capabilities not landed yet); VM {} ended on {}",
        count(StepStatus::Ok),
        count(StepStatus::Skipped),
        r.vm,
        r.vm_host
    );
    for (m, b) in r.migrations.iter().zip(r.blackouts()) {
        println!(
            "  {} migration {} -> {}: total {:.0} ms, QEMU downtime {:.0} ms, client blackout {:.1} ms",
            m.kind, m.from, m.to, m.total_ms, m.downtime_ms, b
        );
    }
    if let Some(p) = &r.probe {
        println!(
            "  client: {} probes, {} lost, largest gap {:.1} ms",
            p.sent, p.lost, p.max_gap_ms
        );
    }
    println!("  integrity: {}", r.integrity.detail);
    println!(
        "  report: {}/report.md (timeline.svg, report.json)",
        dir.display()
    );
}
