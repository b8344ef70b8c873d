//! Validation results and their renderings.

use serde::Serialize;
use std::fmt::Write as _;

/// How a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fine.
    Pass,
    /// Works, but worth a look (or could not be checked yet).
    Warn,
    /// The cluster would not work as expected.
    Fail,
}

/// One test's result.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// Category: virtualization, cpu, network, clock, version, storage.
    pub category: String,
    /// What was tested (hosts, network).
    pub test: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, in words.
    pub reason: String,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The hosts validated.
    pub hosts: Vec<String>,
    /// Every test, in the order run.
    pub results: Vec<TestResult>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Report {
    /// Adds a result.
    pub fn add(
        &mut self,
        category: &str,
        test: impl Into<String>,
        outcome: Outcome,
        reason: impl Into<String>,
    ) {
        self.results.push(TestResult {
            category: category.to_string(),
            test: test.into(),
            outcome,
            reason: reason.into(),
        });
    }

    /// The worst outcome (pass when there are no tests).
    pub fn verdict(&self) -> Outcome {
        self.results
            .iter()
            .map(|r| r.outcome)
            .max()
            .unwrap_or(Outcome::Pass)
    }

    /// How many tests ended `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    /// A plain-text table.
    pub fn text(&self) -> String {
        let mut s = format!("Validation of {}\n\n", self.hosts.join(", "));
        for r in &self.results {
            let tag = match r.outcome {
                Outcome::Pass => "pass",
                Outcome::Warn => "WARN",
                Outcome::Fail => "FAIL",
            };
            let _ = writeln!(s, "{tag:<5} {:<15} {:<40} {}", r.category, r.test, r.reason);
        }
        let _ = write!(
            s,
            "\n{} passed, {} warnings, {} failed: {}\n",
            self.count(Outcome::Pass),
            self.count(Outcome::Warn),
            self.count(Outcome::Fail),
            match self.verdict() {
                Outcome::Pass => "the configuration is suitable for a cluster",
                Outcome::Warn => "suitable, with warnings",
                Outcome::Fail => "NOT suitable for a cluster until the failures are fixed",
            }
        );
        s
    }

    /// A self-contained HTML page.
    pub fn html(&self) -> String {
        let mut s = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Ferry cluster validation</title>\n<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.pass{{background:#dfd}}.warn{{background:#ffd}}.fail{{background:#fdd}}</style></head><body>\n<h1>Ferry cluster validation</h1>\n<p>Hosts: {}</p>\n<table><tr><th>result</th><th>category</th><th>test</th><th>reason</th></tr>\n",
            escape(&self.hosts.join(", "))
        );
        for r in &self.results {
            let class = match r.outcome {
                Outcome::Pass => "pass",
                Outcome::Warn => "warn",
                Outcome::Fail => "fail",
            };
            let _ = writeln!(
                s,
                "<tr class=\"{class}\"><td>{class}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.category),
                escape(&r.test),
                escape(&r.reason)
            );
        }
        let _ = write!(
            s,
            "</table>\n<p>{} passed, {} warnings, {} failed.</p>\n</body></html>\n",
            self.count(Outcome::Pass),
            self.count(Outcome::Warn),
            self.count(Outcome::Fail)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_the_worst_outcome_and_html_is_escaped() {
        let mut r = Report {
            hosts: vec!["a".into(), "b<".into()],
            ..Report::default()
        };
        assert_eq!(r.verdict(), Outcome::Pass);
        r.add("network", "a -> b", Outcome::Pass, "0.1 ms");
        r.add("clock", "b", Outcome::Warn, "skew 0.6 s");
        assert_eq!(r.verdict(), Outcome::Warn);
        r.add(
            "network",
            "a -> b internal",
            Outcome::Fail,
            "unreachable <x>",
        );
        assert_eq!(r.verdict(), Outcome::Fail);
        assert!(r.text().contains("FAIL  network"));
        let html = r.html();
        assert!(html.contains("unreachable &lt;x&gt;") && html.contains("b&lt;"));
    }
}
