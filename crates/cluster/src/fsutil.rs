//! Small durable-file helpers shared by the log store and the state machine.

use crate::codec::{self, CodecError, Kind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a durable file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file system refused.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's contents are not a valid record.
    #[error("{path}")]
    Codec {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: CodecError,
    },
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError::Io { what, path, source }
}

/// A temporary name beside `path`, unique in this process, ending in
/// `.tmp` (leftovers of a crash are removed when the directory is opened).
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Removes the `.tmp` leftovers of interrupted writes in `dir`.
pub(crate) fn remove_leftovers(dir: &Path) -> Result<(), FileError> {
    for entry in std::fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(io_err("cannot remove", &p))?;
        }
    }
    Ok(())
}

/// Takes an exclusive lock on `dir` for as long as the returned file is
/// open, so two processes never run on one member's files.
pub(crate) fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, FileError> {
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("cannot open", &path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        FileError::Io {
            what: "another process holds",
            path,
            source: std::io::Error::from(errno),
        }
    })
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))
}

/// Writes one sealed record to `path` atomically and durably: a temporary
/// file, fsync, rename, fsync of the directory.
pub(crate) fn write_sealed<T: Serialize>(
    kind: Kind,
    path: &Path,
    value: &T,
) -> Result<(), FileError> {
    let bytes = codec::seal(kind, value).map_err(|source| FileError::Codec {
        path: path.to_path_buf(),
        source,
    })?;
    write_file(path, &bytes, 0o644)
}

/// Writes `bytes` to `path` atomically and durably with permissions `mode`:
/// a temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tmp_path(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("cannot create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("cannot write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("cannot rename into place", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads the sealed record in `path`, or `None` if there is no such file.
pub(crate) fn read_sealed<T: DeserializeOwned>(
    kind: Kind,
    path: &Path,
) -> Result<Option<T>, FileError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot stat", path)(e)),
    };
    // The cap is checked before the file is read into memory.
    let cap = codec::HEADER_LEN as u64 + u64::from(kind.max_len);
    if meta.len() > cap {
        return Err(FileError::Codec {
            path: path.to_path_buf(),
            source: CodecError::TooLarge {
                kind: kind.name,
                len: meta.len(),
                max: kind.max_len,
            },
        });
    }
    let bytes = std::fs::read(path).map_err(io_err("cannot read", path))?;
    codec::open(kind, &bytes)
        .map(Some)
        .map_err(|source| FileError::Codec {
            path: path.to_path_buf(),
            source,
        })
}
