//! The VM spec: the one document that says what a VM is.
//!
//! A spec is written by a user as TOML (or JSON), parsed here, and validated
//! before anything starts. Every later stage (the QEMU command line, the
//! destination of a migration, the cluster's stored definition) derives from
//! the same [`VmSpec`], so two QEMU processes for one VM can never disagree.

mod error;
mod iscsi;
mod model;
mod validate;

pub use error::SpecError;
pub use iscsi::{initiator_name_for, IscsiUrl, DEFAULT_SECRETS};
pub use model::{
    Boot, CpuBaseline, Disk, DiskPath, DiskProtocol, Nic, NicAttachment, VmSpec, DEFAULT_CPU_MODEL,
    DEFAULT_MACHINE,
};

use std::path::Path;

/// Largest spec document accepted, so a stray huge file is refused early.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

impl VmSpec {
    /// Parses a spec from TOML text and validates it.
    ///
    /// Relative paths inside the spec are resolved against `base_dir`
    /// (the directory of the spec file), so specs can travel with their images.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, SpecError> {
        if text.len() > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge { bytes: text.len() });
        }
        let mut spec: VmSpec = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let source_line = line
                .and_then(|l| text.lines().nth(l - 1))
                .map(|l| format!(" in `{}`", l.trim()))
                .unwrap_or_default();
            SpecError::Syntax {
                format: "TOML",
                message: format!("{}{source_line}", e.message()),
                span: line,
            }
        })?;
        spec.resolve_paths(base_dir);
        spec.validate()?;
        Ok(spec)
    }

    /// Parses a spec from JSON text and validates it.
    pub fn from_json(text: &str, base_dir: &Path) -> Result<Self, SpecError> {
        if text.len() > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge { bytes: text.len() });
        }
        let mut spec: VmSpec = serde_json::from_str(text).map_err(|e| SpecError::Syntax {
            format: "JSON",
            message: e.to_string(),
            span: Some(e.line()),
        })?;
        spec.resolve_paths(base_dir);
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a spec file; `.json` files are JSON, everything else TOML.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            Self::from_json(&text, base)
        } else {
            Self::from_toml(&text, base)
        };
        parsed.map_err(|e| e.in_file(path))
    }
}

/// 1-based line number of a byte offset, for error messages.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
