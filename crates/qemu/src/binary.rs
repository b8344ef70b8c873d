//! Finding the QEMU binary and checking that it is new enough.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Oldest QEMU Ferry drives: 7.2 lacks the migration features Ferry uses and
/// crashed guests migrated under heavy dirtying.
pub const MIN_MAJOR: u32 = 10;
/// Name of the system emulator Ferry runs.
pub const BINARY_NAME: &str = "qemu-system-x86_64";

/// Problems with the QEMU installation.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// No QEMU binary on PATH (or at $FERRY_QEMU).
    #[error("{BINARY_NAME} not found (looked at {looked}); install QEMU {MIN_MAJOR} with scripts/install-deps")]
    NotFound {
        /// Where it looked.
        looked: String,
    },
    /// QEMU is older than [`MIN_MAJOR`].
    #[error("{path} is QEMU {version}, too old; Ferry needs QEMU {MIN_MAJOR} or newer (bookworm-backports): run scripts/install-deps")]
    TooOld {
        /// The binary.
        path: PathBuf,
        /// Its version.
        version: String,
    },
    /// QEMU ran but its output made no sense.
    #[error("cannot tell the version of {path}: {detail}")]
    Unrecognised {
        /// The binary.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// A QEMU system emulator that is new enough, with what it supports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QemuBinary {
    /// Path of the binary.
    pub path: PathBuf,
    /// (major, minor, micro).
    pub version: (u32, u32, u32),
    /// CPU models (`-cpu help`).
    pub cpu_models: Vec<String>,
    /// Machine types (`-machine help`).
    pub machine_types: Vec<String>,
}

/// What the capability cache is keyed on: the binary's identity on disk.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    binary: QemuBinary,
}

fn cache_file() -> PathBuf {
    std::env::temp_dir().join("ferry-qemu-capabilities.json")
}

fn identity(path: &Path) -> Option<(u64, i128)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.size(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    ))
}

impl QemuBinary {
    /// Finds QEMU at `$FERRY_QEMU` or on `PATH` and checks its version.
    pub fn find() -> Result<Self, QemuError> {
        let path = match std::env::var_os("FERRY_QEMU") {
            Some(p) => PathBuf::from(p),
            None => search_path(BINARY_NAME).ok_or_else(|| QemuError::NotFound {
                looked: "PATH".into(),
            })?,
        };
        Self::at(&path)
    }

    /// Checks the QEMU at `path`, using the capability cache when the binary
    /// is unchanged (asking QEMU costs ~150 ms, a tenth of a boot budget).
    pub fn at(path: &Path) -> Result<Self, QemuError> {
        let id = identity(path);
        if let (Some((size, mtime_ns)), Ok(text)) = (id, std::fs::read_to_string(cache_file())) {
            if let Ok(entry) = serde_json::from_str::<CacheEntry>(&text) {
                if entry.path == path && entry.size == size && entry.mtime_ns == mtime_ns {
                    return Ok(entry.binary);
                }
            }
        }
        let binary = Self::probe(path)?;
        if let Some((size, mtime_ns)) = id {
            let entry = CacheEntry {
                path: path.to_path_buf(),
                size,
                mtime_ns,
                binary: binary.clone(),
            };
            let tmp = cache_file().with_extension(format!("{}.tmp", std::process::id()));
            if let Ok(json) = serde_json::to_vec(&entry) {
                if std::fs::write(&tmp, json).is_ok() {
                    let _ = std::fs::rename(&tmp, cache_file());
                }
            }
        }
        Ok(binary)
    }

    /// Asks QEMU for its version and capabilities, bypassing the cache.
    pub fn probe(path: &Path) -> Result<Self, QemuError> {
        let out =
            Command::new(path)
                .arg("--version")
                .output()
                .map_err(|_| QemuError::NotFound {
                    looked: path.display().to_string(),
                })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).ok_or_else(|| QemuError::Unrecognised {
            path: path.to_path_buf(),
            detail: format!("--version printed {:?}", text.lines().next().unwrap_or("")),
        })?;
        if version.0 < MIN_MAJOR {
            return Err(QemuError::TooOld {
                path: path.to_path_buf(),
                version: format!("{}.{}.{}", version.0, version.1, version.2),
            });
        }
        let list = |flag: &str, parse: fn(&str) -> Vec<String>| -> Result<Vec<String>, QemuError> {
            let out = Command::new(path)
                .args([flag, "help"])
                .output()
                .map_err(|e| QemuError::Unrecognised {
                    path: path.to_path_buf(),
                    detail: format!("{flag} help: {e}"),
                })?;
            Ok(parse(&String::from_utf8_lossy(&out.stdout)))
        };
        Ok(QemuBinary {
            path: path.to_path_buf(),
            version,
            cpu_models: list("-cpu", parse_cpu_models)?,
            machine_types: list("-machine", parse_machine_types)?,
        })
    }

    /// The version as `major.minor.micro`.
    pub fn version_string(&self) -> String {
        format!("{}.{}.{}", self.version.0, self.version.1, self.version.2)
    }
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Parses `QEMU emulator version 10.0.2 (Debian ...)`.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.lines().next()?.split("version ").nth(1)?;
    let ver = rest.split_whitespace().next()?;
    let mut parts = ver.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let micro = parts.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

/// `-cpu help` lines look like `x86 Skylake-Server   Intel Xeon ...`.
fn parse_cpu_models(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("x86 "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `-machine help` lines look like `q35   Standard PC (Q35 + ICH9, 2009) (alias of ...)`.
fn parse_machine_types(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\nCopyright"),
            Some((10, 0, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15"),
            Some((7, 2, 15))
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn parses_cpu_and_machine_lists() {
        let cpus = parse_cpu_models("Available CPUs:\nx86 486   (alias)\nx86 max   Enables all\n\nRecognized CPUID flags:\n  fpu\n");
        assert_eq!(cpus, ["486", "max"]);
        let machines =
            parse_machine_types("Supported machines are:\nq35   Standard PC\npc    Standard PC\n");
        assert_eq!(machines, ["q35", "pc"]);
    }
}
