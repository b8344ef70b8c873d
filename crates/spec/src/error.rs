//! Errors found while reading or validating a spec.

use std::path::PathBuf;

/// Why a spec was refused. Each message names the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("cannot read spec {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The document is larger than [`crate::MAX_SPEC_BYTES`].
    #[error("spec is {bytes} bytes; the limit is {} bytes", crate::MAX_SPEC_BYTES)]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The document is not valid TOML/JSON or does not fit the schema.
    #[error("spec is not valid {format}{}: {message}", span.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Syntax {
        /// "TOML" or "JSON".
        format: &'static str,
        /// The parser's message.
        message: String,
        /// The line where it went wrong, when known.
        span: Option<usize>,
    },
    /// A field has a value that cannot work.
    #[error("spec field `{field}`: {problem}")]
    Invalid {
        /// Dotted path of the field, e.g. `nics[0].mac`.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Any of the above, found in a named file.
    #[error("in {path}")]
    InFile {
        /// The spec file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<SpecError>,
    },
}

impl SpecError {
    /// Shorthand for an [`SpecError::Invalid`].
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Attaches the file name, unless the error already names it.
    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            SpecError::Read { .. } | SpecError::InFile { .. } => self,
            other => SpecError::InFile {
                path: path.to_path_buf(),
                source: Box::new(other),
            },
        }
    }
}
