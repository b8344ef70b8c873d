//! The demo's report: machine-readable JSON, Markdown for people, and an
//! SVG timeline of the client's probes with each migration marked.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Done.
    Ok,
    /// Its capability has not landed yet.
    Skipped,
    /// It failed; the demo stopped there.
    Failed,
}

/// One step of the walkthrough.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// What it does.
    pub title: String,
    /// How it ended.
    pub status: StepStatus,
    /// What it found, or why it was skipped or failed.
    pub detail: String,
    /// How long it took.
    pub ms: u64,
}

/// One migration on the timeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrationMark {
    /// `live` or `quick`.
    pub kind: String,
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// When the command started.
    pub start_unix_ms: f64,
    /// When the guest stopped on the source (start + total - downtime).
    pub switchover_unix_ms: f64,
    /// When the command returned (source gone).
    pub end_unix_ms: f64,
    /// Start to destination running, as Ferry reports it.
    pub total_ms: f64,
    /// Guest stopped, as QEMU reports it.
    pub downtime_ms: f64,
}

/// What the client saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeSummary {
    /// Probes sent.
    pub sent: u64,
    /// Probes answered.
    pub received: u64,
    /// Probes lost.
    pub lost: u64,
    /// Largest gap between replies, ms: the client-observed blackout.
    pub max_gap_ms: f64,
    /// Milliseconds between probes.
    pub interval_ms: f64,
    /// When probing started.
    pub started_unix_ms: f64,
    /// Each reply: (probe sequence number, ms since start).
    #[serde(default)]
    pub replies: Vec<(u64, f64)>,
}

/// Verdicts of the integrity workloads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Integrity {
    /// No memory word ever read back wrong.
    pub memory_ok: bool,
    /// The counter never went back or skipped.
    pub counter_ok: bool,
    /// Every disk block the guest saw flushed is on the disk.
    pub disk_ok: bool,
    /// In words.
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DemoReport {
    /// The lab's name.
    pub lab: String,
    /// The VM.
    pub vm: String,
    /// Where the VM ran last.
    pub vm_host: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The migrations.
    pub migrations: Vec<MigrationMark>,
    /// The client's view (once the probe stopped).
    pub probe: Option<ProbeSummary>,
    /// Integrity verdicts.
    pub integrity: Integrity,
    /// When the demo started and finished.
    pub started_unix_ms: f64,
    /// When it finished.
    pub finished_unix_ms: f64,
    /// Where the report files are.
    pub report_dir: String,
    /// The cluster's API token file, once the cluster exists.
    #[serde(default)]
    pub cluster_token_file: String,
}

/// Largest gap between replies within `[from, to]` (ms since probe start).
fn largest_gap(replies: &[(u64, f64)], from: f64, to: f64) -> f64 {
    let times: Vec<f64> = replies
        .iter()
        .map(|r| r.1)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

impl DemoReport {
    /// The client's blackout around each migration (largest reply gap from
    /// its start to 1 s after its end).
    pub fn blackouts(&self) -> Vec<f64> {
        let Some(p) = &self.probe else {
            return vec![];
        };
        self.migrations
            .iter()
            .map(|m| {
                largest_gap(
                    &p.replies,
                    m.start_unix_ms - p.started_unix_ms,
                    m.end_unix_ms - p.started_unix_ms + 1000.0,
                )
            })
            .collect()
    }

    /// The report in Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# Ferry lab demo — lab `{}`\n\nVM `{}` ended on **{}**.\n\n## Steps\n\n| # | step | result | ms | detail |\n|---|---|---|---|---|\n",
            self.lab, self.vm, self.vm_host
        );
        for (i, st) in self.steps.iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {:?} | {} | {} |",
                i + 1,
                st.title,
                st.status,
                st.ms,
                st.detail.replace('|', "/")
            );
        }
        s.push_str("\n## Migrations\n\n| kind | from | to | total ms | QEMU downtime ms | client blackout ms |\n|---|---|---|---|---|---|\n");
        for (m, b) in self.migrations.iter().zip(self.blackouts()) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {:.0} | {:.1} |",
                m.kind, m.from, m.to, m.total_ms, m.downtime_ms, b
            );
        }
        if let Some(p) = &self.probe {
            let _ = writeln!(
                s,
                "\nClient: {} probes every {} ms, {} answered, {} lost, largest gap {:.1} ms.\n",
                p.sent, p.interval_ms, p.received, p.lost, p.max_gap_ms
            );
        }
        let _ = writeln!(
            s,
            "Integrity: {}\n\n![timeline](timeline.svg)",
            self.integrity.detail
        );
        s
    }

    /// An SVG timeline: each reply's round-trip time over time, gaps shaded,
    /// each migration's start, switchover and end marked.
    pub fn svg(&self) -> String {
        let (w, h, left, top, bottom) = (960.0, 320.0, 60.0, 30.0, 40.0);
        let plot_h = h - top - bottom;
        let Some(p) = &self.probe else {
            return format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\"><text x=\"20\" y=\"40\">no probe data</text></svg>");
        };
        let span = p.replies.last().map_or(1.0, |r| r.1).max(1.0);
        let x = |ms: f64| left + (ms / span).clamp(0.0, 1.0) * (w - left - 20.0);
        let rtts: Vec<(f64, f64)> = p
            .replies
            .iter()
            .map(|(seq, at)| (*at, (at - *seq as f64 * p.interval_ms).max(0.01)))
            .collect();
        let max_rtt = rtts.iter().map(|r| r.1).fold(1.0, f64::max);
        // Log scale: 0.01 ms .. max.
        let y = |rtt: f64| {
            let (lo, hi) = (0.01f64.ln(), max_rtt.ln());
            top + plot_h - (rtt.ln() - lo) / (hi - lo).max(1e-9) * plot_h
        };
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"13\">Client probes of {} every {} ms: round-trip time (log scale) over {:.1} s; shaded: gaps over 20 ms</text>\n",
            self.vm,
            p.interval_ms,
            span / 1000.0
        );
        for win in p.replies.windows(2) {
            if win[1].1 - win[0].1 > 20.0 {
                let _ = writeln!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"#f4b4b4\"/>",
                    x(win[0].1),
                    (x(win[1].1) - x(win[0].1)).max(1.0)
                );
            }
        }
        let mut path = String::new();
        for (i, (at, rtt)) in rtts.iter().enumerate() {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                x(*at),
                y(*rtt)
            );
        }
        let _ = writeln!(
            s,
            "<path d=\"{path}\" fill=\"none\" stroke=\"#2060c0\" stroke-width=\"0.6\"/>"
        );
        for (m, b) in self.migrations.iter().zip(self.blackouts()) {
            for (t, label, color) in [
                (m.start_unix_ms, format!("{} start", m.kind), "#888"),
                (
                    m.switchover_unix_ms,
                    format!("switchover ({:.0} ms blackout)", b),
                    "#c02020",
                ),
                (m.end_unix_ms, format!("{} -> {}", m.from, m.to), "#208020"),
            ] {
                let px = x(t - p.started_unix_ms);
                let _ = writeln!(
                    s,
                    "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"3,2\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" transform=\"rotate(-90 {:.1} {:.1})\">{label}</text>",
                    top + plot_h,
                    px + 3.0,
                    top + plot_h - 4.0,
                    px + 3.0,
                    top + plot_h - 4.0
                );
            }
        }
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n<text x=\"{left}\" y=\"{:.1}\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.1} s</text>\n<text x=\"4\" y=\"{top}\">{max_rtt:.0} ms</text><text x=\"4\" y=\"{:.1}\">0.01 ms</text>\n</svg>",
            top + plot_h,
            w - 20.0,
            top + plot_h,
            top + plot_h + 16.0,
            w - 20.0,
            top + plot_h + 16.0,
            span / 1000.0,
            top + plot_h
        );
        s
    }
}

/// Writes `report.json`, `report.md` and `timeline.svg` into `dir`.
pub fn write(dir: &Path, report: &DemoReport) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut with_dir = report.clone();
    with_dir.report_dir = dir.display().to_string();
    let json = serde_json::to_vec_pretty(&with_dir).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.md"), report.markdown())?;
    std::fs::write(dir.join("timeline.svg"), report.svg())?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blackout_is_the_largest_gap_around_each_migration() {
        let replies: Vec<(u64, f64)> = (0..1000u64)
            .filter(|i| !(400..450).contains(i))
            .map(|i| (i, i as f64 * 2.0 + 0.3))
            .collect();
        let r = DemoReport {
            probe: Some(ProbeSummary {
                interval_ms: 2.0,
                started_unix_ms: 1000.0,
                replies,
                ..Default::default()
            }),
            migrations: vec![MigrationMark {
                start_unix_ms: 1000.0 + 700.0,
                switchover_unix_ms: 1000.0 + 800.0,
                end_unix_ms: 1000.0 + 900.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        let b = r.blackouts();
        assert!((b[0] - 102.0).abs() < 1e-6, "{b:?}");
        let svg = r.svg();
        assert!(svg.starts_with("<svg") && svg.contains("switchover (102 ms blackout)"));
        assert!(r.markdown().contains("| 102.0 |"));
    }
}
