//! Cluster validation: what the seed's "Validate a Configuration" wizard
//! runs, before and after the cluster is made.
//!
//! Every check runs the `ferry` command (or a standard tool) on the host it
//! is about, the way the orchestration reaches hosts (the hosts file: a
//! namespace in the lab, the host itself otherwise), and ends pass, warn or
//! fail with the reason. [`report::Report`] renders text, JSON and HTML.

pub mod checks;
pub mod report;
pub mod storage;

pub use checks::{validate, Target};
pub use report::{Outcome, Report, TestResult};
