//! The block service process: serves a VM's disks on one unix socket and
//! writes their statistics beside it.

use crate::backend::{BlockBackend, FileBackend};
use crate::iscsi::IscsiBackend;
use crate::nbd::server::{serve_connection, Export, ServerError};
use crate::stats::{DiskCounters, Sampler};
use ferry_spec::{DiskProtocol, IscsiUrl};
use serde::{Deserialize, Serialize};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One disk to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskExport {
    /// Export name QEMU asks for (`disk0`, `disk1`, ...).
    pub name: String,
    /// Raw image file, or an `iscsi://` LUN URL.
    pub path: PathBuf,
    /// For an iSCSI disk: its secrets file (default location if `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<PathBuf>,
    /// Refuse writes.
    #[serde(default)]
    pub readonly: bool,
    /// Serve this disk as a vhost-user-blk device on this socket instead of
    /// as an NBD export (QEMU then shares the guest's memory with the
    /// service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<PathBuf>,
}

/// What a block service serves and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Unix socket QEMU connects to.
    pub socket: PathBuf,
    /// Where to write per-disk statistics every second (JSON).
    pub stats: Option<PathBuf>,
    /// The disks.
    pub disks: Vec<DiskExport>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A disk could not be opened.
    #[error("disk {name}: cannot open {path} {mode}")]
    Open {
        /// Export name.
        name: String,
        /// The image.
        path: PathBuf,
        /// "read-write" or "read-only".
        mode: &'static str,
        /// Why.
        #[source]
        source: crate::BackendError,
    },
    /// An iSCSI disk could not be opened (login, credentials, LUN).
    #[error("disk {name}: cannot open {url}")]
    OpenIscsi {
        /// Export name.
        name: String,
        /// The LUN URL.
        url: String,
        /// Why.
        #[source]
        source: crate::iscsi::IscsiOpenError,
    },
    /// Another live service listens on the socket.
    #[error("socket {0} is in use by another running service")]
    SocketTaken(PathBuf),
    /// The socket could not be created.
    #[error("cannot listen on {path}")]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Two disks share an export name.
    #[error("export name {0:?} is used twice")]
    DuplicateName(String),
}

/// Opens every disk; fails before listening if any cannot be served.
pub fn open_exports(cfg: &ServiceConfig) -> Result<Vec<Export>, ServiceError> {
    let mut out: Vec<Export> = Vec::new();
    for d in &cfg.disks {
        if out.iter().any(|e| e.name == d.name) {
            return Err(ServiceError::DuplicateName(d.name.clone()));
        }
        let backend: Arc<dyn BlockBackend> = match d.path.to_str().filter(|p| IscsiUrl::is_iscsi(p))
        {
            Some(url) => Arc::new(
                IscsiBackend::open(url, d.secrets.as_deref(), d.readonly).map_err(|source| {
                    ServiceError::OpenIscsi {
                        name: d.name.clone(),
                        url: url.to_string(),
                        source,
                    }
                })?,
            ),
            None => Arc::new(FileBackend::open(&d.path, d.readonly).map_err(|source| {
                ServiceError::Open {
                    name: d.name.clone(),
                    path: d.path.clone(),
                    mode: if d.readonly {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    source,
                }
            })?),
        };
        out.push(Export {
            name: d.name.clone(),
            backend,
            counters: Arc::new(DiskCounters::default()),
        });
    }
    Ok(out)
}

/// Binds the socket, replacing a stale file but never a live service's.
pub fn bind(path: &Path) -> Result<UnixListener, ServiceError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServiceError::SocketTaken(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|source| ServiceError::Listen {
        path: path.to_path_buf(),
        source,
    })
}

/// Serves until the process is stopped. `ready` is called once listening.
pub fn run(cfg: ServiceConfig, ready: impl FnOnce()) -> Result<(), ServiceError> {
    let exports = Arc::new(open_exports(&cfg)?);
    let listener = bind(&cfg.socket)?;
    let mut vhost = Vec::new();
    for (d, e) in cfg.disks.iter().zip(exports.iter()) {
        if let Some(path) = &d.vhost_user {
            vhost.push((crate::vhost_user::bind(path)?, e.clone()));
        }
    }
    for (listener, export) in vhost {
        tracing::info!(export = %export.name, "serving as vhost-user-blk");
        std::thread::Builder::new()
            .name(format!("vhost-{}", export.name))
            .spawn(move || {
                crate::vhost_user::serve(listener, &export, DiskProtocol::VHOST_USER_MAX_QUEUES)
            })
            .map_err(|source| ServiceError::Listen {
                path: cfg.socket.clone(),
                source,
            })?;
    }
    for e in exports.iter() {
        tracing::info!(export = %e.name, backend = %e.backend.identity(), size = e.backend.size(), read_only = e.backend.read_only(), "serving");
    }
    ready();
    if let Some(stats) = cfg.stats.clone() {
        let exports = exports.clone();
        std::thread::spawn(move || write_stats_forever(&stats, &exports));
    }
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let exports = exports.clone();
                std::thread::spawn(move || match serve_connection(stream, exports) {
                    Ok(()) => tracing::debug!("NBD client disconnected"),
                    // A client that goes away (QEMU quitting) breaks the pipe: normal.
                    Err(ServerError::Io(e)) => tracing::debug!("NBD client gone: {e}"),
                    Err(e) => tracing::warn!(
                        "NBD connection closed: {e}: {:?}",
                        std::error::Error::source(&e)
                    ),
                });
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

fn write_stats_forever(path: &Path, exports: &[Export]) {
    let mut sampler = Sampler::new(exports.len());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let meta: Vec<_> = exports
            .iter()
            .map(|e| {
                (
                    e.counters.as_ref(),
                    e.name.clone(),
                    e.backend.identity(),
                    e.backend.size(),
                    e.backend.read_only(),
                )
            })
            .collect();
        let stats = sampler.sample(&meta);
        let tmp = path.with_extension("json.tmp");
        if let Ok(json) = serde_json::to_vec_pretty(&stats) {
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}
