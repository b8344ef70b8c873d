//! A disk on an iSCSI LUN, through Ferry's own initiator: the block
//! service's worker threads call straight into the initiator, whose
//! pipelined session carries many of them at once.
//!
//! Credentials and initiator settings come from a secrets file (TOML),
//! never from a command line or the VM spec:
//!
//! ```toml
//! initiator_name = "iqn.2026-01.dev.ferry:host1"   # default: from the host name
//! chap_user = "alice"                              # one-way CHAP
//! chap_secret = "..."
//! mutual_user = "san"                              # mutual CHAP (optional)
//! mutual_secret = "..."
//! io_timeout_secs = 30                             # a command's limit, reconnects included
//! digests = false                                  # ask for CRC32C header/data digests
//! ```

use crate::backend::{BackendError, BlockBackend, Done, Ended, Op};
use crate::readahead::ReadAhead;
use ferry_iscsi::initiator::{
    random_isid, Chap, IdleHook, IscsiError, LoginConfig, Lun, SessionConfig, Sink, Unfinished,
};
use ferry_spec::IscsiUrl;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The secrets file's contents.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IscsiSecrets {
    /// Our initiator IQN.
    pub initiator_name: Option<String>,
    /// One-way CHAP user.
    pub chap_user: Option<String>,
    /// One-way CHAP secret.
    pub chap_secret: Option<String>,
    /// Mutual CHAP: the target's user.
    pub mutual_user: Option<String>,
    /// Mutual CHAP: the target's secret.
    pub mutual_secret: Option<String>,
    /// I/O timeout in seconds.
    pub io_timeout_secs: Option<u64>,
    /// Ask for CRC32C digests.
    #[serde(default)]
    pub digests: bool,
}

/// Why an iSCSI disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum IscsiOpenError {
    /// The URL is malformed.
    #[error("{0}")]
    Url(String),
    /// The secrets file cannot be read.
    #[error("cannot read iSCSI secrets file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secrets file is not valid.
    #[error("iSCSI secrets file {path} is invalid: {message}")]
    Secrets {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The initiator failed (login, LUN check).
    #[error(transparent)]
    Iscsi(#[from] IscsiError),
}

impl IscsiSecrets {
    /// Reads `path`; a missing file at the default location means "no
    /// credentials", a missing file the spec named is an error.
    pub fn load(path: Option<&Path>) -> Result<IscsiSecrets, IscsiOpenError> {
        let (path, named) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(ferry_spec::DEFAULT_SECRETS), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IscsiSecrets::default())
            }
            Err(source) => return Err(IscsiOpenError::Read { path, source }),
        };
        let s: IscsiSecrets = toml::from_str(&text).map_err(|e| IscsiOpenError::Secrets {
            path: path.clone(),
            message: e.message().to_string(),
        })?;
        let pair = |u: &Option<String>, s: &Option<String>, what: &str| match (u, s) {
            (Some(_), None) | (None, Some(_)) => Err(IscsiOpenError::Secrets {
                path: path.clone(),
                message: format!("{what}_user and {what}_secret go together"),
            }),
            _ => Ok(()),
        };
        pair(&s.chap_user, &s.chap_secret, "chap")?;
        pair(&s.mutual_user, &s.mutual_secret, "mutual")?;
        if s.mutual_user.is_some() && s.chap_user.is_none() {
            return Err(IscsiOpenError::Secrets {
                path,
                message: "mutual CHAP needs chap_user and chap_secret too".into(),
            });
        }
        Ok(s)
    }
}

impl IscsiSecrets {
    /// How to log in to `url` with these credentials: as `initiator`, else
    /// the file's `initiator_name`, else [`default_initiator_name`].
    pub fn login_config(
        &self,
        url: &IscsiUrl,
        initiator: Option<String>,
        isid: [u8; 6],
        timeout: Duration,
    ) -> LoginConfig {
        let chap = |u: &Option<String>, s: &Option<String>| {
            u.clone()
                .zip(s.clone())
                .map(|(user, secret)| Chap { user, secret })
        };
        LoginConfig {
            portal: url.portal(),
            target: url.target.clone(),
            initiator: initiator
                .or_else(|| self.initiator_name.clone())
                .unwrap_or_else(default_initiator_name),
            isid,
            chap: chap(&self.chap_user, &self.chap_secret),
            mutual: chap(&self.mutual_user, &self.mutual_secret),
            digests: self.digests,
            timeout,
        }
    }
}

/// The default initiator name: Ferry's prefix and the host name.
pub fn default_initiator_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    ferry_spec::initiator_name_for(&host)
}

/// A disk on an iSCSI LUN.
pub struct IscsiBackend {
    lun: Lun,
    /// For error messages; shared, so a started request's completion
    /// holds it without copying.
    url: Arc<str>,
    read_only: bool,
    /// Block ranges of read-modify-writes in progress.
    rmw: RangeLocks,
    /// Stretches read ahead of a guest reading sequentially.
    ahead: Arc<ReadAhead<Reader>>,
}

/// A guest read, waiting on a stretch read ahead or about to be read.
struct Reader {
    /// Where its data goes (else it is handed over in buffers).
    sink: Option<Arc<Sink>>,
    done: Done,
}

impl Reader {
    /// Ends it with data read ahead (`None`: the fetch failed; it is read
    /// again the ordinary way).
    fn deliver(self, data: Option<Vec<Vec<u8>>>) {
        (self.done)(match (data, &self.sink) {
            (Some(parts), None) => Ended::Read(parts),
            (Some(parts), Some(sink)) if sink.copy_in(&parts) => Ended::Read(Vec::new()),
            _ => Ended::Again,
        })
    }
}

/// Counts a write from its start to its end (see [`ReadAhead::write_started`]).
struct Writing(Arc<ReadAhead<Reader>>);

impl Writing {
    fn start(ahead: &Arc<ReadAhead<Reader>>) -> Writing {
        ahead.write_started();
        Writing(ahead.clone())
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.write_ended();
    }
}

/// Exclusive locks on block ranges, for read-modify-writes.
///
/// The NBD server advertises the LUN's block size as its minimum, and QEMU
/// then only sends whole blocks; but a client may ignore that. Two of its
/// unaligned writes to different bytes of one block would then each read
/// the block, patch their bytes in and write it back from separate worker
/// threads, and the later write-back would undo the earlier one. Holding
/// the widened range for the whole read-modify-write makes them take turns.
/// Aligned writes do not take it: one that shares a block with a
/// read-modify-write overlaps its bytes, and the client gave no order
/// between two overlapping writes in flight at once.
#[derive(Default)]
struct RangeLocks {
    held: Mutex<Vec<(u64, u64)>>,
    freed: Condvar,
}

/// A held range; dropping it lets overlapping waiters in.
struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    range: (u64, u64),
}

impl RangeLocks {
    /// Waits until no held range overlaps `start..end`, then holds it.
    fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        // A panicking holder leaves only its entry behind, which its guard's
        // drop removes: the list stays valid, so poisoning is ignored.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.iter().any(|&(s, e)| s < end && start < e) {
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.push((start, end));
        RangeGuard {
            locks: self,
            range: (start, end),
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|r| *r == self.range) {
            held.swap_remove(i);
        }
        self.locks.freed.notify_all();
    }
}

impl IscsiBackend {
    /// Logs in to the URL's target and checks its LUN.
    pub fn open(
        url: &str,
        secrets: Option<&Path>,
        read_only: bool,
    ) -> Result<IscsiBackend, IscsiOpenError> {
        let u = IscsiUrl::parse(url).map_err(IscsiOpenError::Url)?;
        let s = IscsiSecrets::load(secrets)?;
        let mut cfg =
            SessionConfig::new(s.login_config(&u, None, random_isid(), Duration::from_secs(5)));
        if let Some(t) = s.io_timeout_secs {
            cfg.io_timeout = Duration::from_secs(t.max(1));
        }
        // Replies to the requests one read of the socket ends go to QEMU
        // together (NBD), and their queues' interrupts once (vhost-user),
        // when the initiator's reader is about to wait.
        cfg.on_idle = Some(IdleHook(Arc::new(|| {
            crate::nbd::batch::send_batched();
            crate::vhost_user::signal_deferred();
        })));
        let lun = Lun::open(cfg, u.lun)?;
        Ok(IscsiBackend {
            lun,
            url: Arc::from(url),
            read_only,
            rmw: RangeLocks::default(),
            ahead: Arc::default(),
        })
    }

    /// Reads served from data read ahead so far (sequential reads fetch
    /// the next stretches before the guest asks: see [`crate::readahead`]).
    pub fn read_ahead_served(&self) -> u64 {
        self.ahead.served()
    }

    /// The LUN underneath (for reservations).
    pub fn lun(&self) -> &Lun {
        &self.lun
    }

    fn err(&self, e: IscsiError) -> BackendError {
        remote_error(&self.url, e)
    }

    /// Starts an aligned read of `len` bytes at `offset` (into `sink` if
    /// given), served from what was read ahead when it can be; then reads
    /// ahead what the pattern asks for.
    fn start_read(&self, offset: u64, len: u64, sink: Option<Arc<Sink>>, hold: bool, done: Done) {
        let look = self
            .ahead
            .read(offset, len, self.lun.size(), Reader { sink, done });
        if let Some((reader, data)) = look.ready {
            reader.deliver(Some(data));
        }
        if let Some(Reader { sink, done }) = look.miss {
            let url = self.url.clone();
            let end = Box::new(move |r: Result<Vec<Vec<u8>>, Unfinished>| {
                done(match r {
                    Ok(parts) => Ended::Read(parts),
                    Err(u) => unfinished(&url, u),
                })
            });
            match sink {
                Some(sink) => self.lun.start_read_into(offset, &sink, hold, end),
                None => self.lun.start_read(offset, len, hold, end),
            }
        }
        for f in look.fetch {
            let ahead = self.ahead.clone();
            self.lun.start_read(
                f.offset,
                f.len,
                false,
                Box::new(move |r| {
                    if let Some((reader, data)) = ahead.fetched(f.id, r.ok()) {
                        reader.deliver(data);
                    }
                }),
            );
        }
    }

    /// Whether the range is whole LUN blocks (else a read-modify-write).
    fn aligned(&self, offset: u64, len: u64) -> bool {
        let bs = u64::from(self.lun.block_size());
        offset.is_multiple_of(bs) && len.is_multiple_of(bs)
    }
}

impl BlockBackend for IscsiBackend {
    fn size(&self) -> u64 {
        self.lun.size()
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn remote(&self) -> bool {
        true
    }
    fn block_size(&self) -> u32 {
        self.lun.block_size()
    }
    fn workers(&self) -> usize {
        // Reads and writes are started, not run on workers: these serve
        // flushes, discards and the rare retry.
        8
    }
    fn starts(&self) -> bool {
        true
    }
    fn send_held(&self) {
        self.lun.send_held();
    }
    fn start(&self, op: Op, hold: bool, done: Done) {
        match op {
            // Partial blocks need a read-modify-write: the blocking path.
            Op::Read { offset, len } if !self.aligned(offset, len) => done(Ended::Again),
            Op::ReadInto { offset, ref sink } if !self.aligned(offset, sink.len() as u64) => {
                done(Ended::Again)
            }
            Op::Write {
                offset, ref data, ..
            } if !self.aligned(offset, data.len() as u64) => done(Ended::Again),
            Op::Read { offset, len } => self.start_read(offset, len, None, hold, done),
            Op::ReadInto { offset, sink } => {
                self.start_read(offset, sink.len() as u64, Some(sink), hold, done)
            }
            Op::Write { offset, data, fua } => {
                let (url, writing) = (self.url.clone(), Writing::start(&self.ahead));
                self.lun.start_write(
                    data,
                    offset,
                    fua,
                    hold,
                    Box::new(move |r| {
                        drop(writing);
                        done(match r {
                            Ok(()) => Ended::Written,
                            Err(u) => unfinished(&url, u),
                        })
                    }),
                )
            }
        }
    }
    fn identity(&self) -> String {
        match self.lun.device_id() {
            "" => self.url.to_string(),
            id => format!("{} ({id})", self.url),
        }
    }
    fn check_range(&self, offset: u64, len: u64, write: bool) -> Result<(), BackendError> {
        if write && self.read_only {
            return Err(BackendError::ReadOnly);
        }
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(BackendError::OutOfRange { offset, len, size });
        }
        Ok(())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.check_range(offset, buf.len() as u64, false)?;
        let bs = u64::from(self.lun.block_size());
        if self.aligned(offset, buf.len() as u64) {
            return self.lun.read_at(buf, offset).map_err(|e| self.err(e));
        }
        let (start, end) = widen(offset, buf.len() as u64, bs);
        let mut tmp = vec![0u8; (end - start) as usize];
        self.lun.read_at(&mut tmp, start).map_err(|e| self.err(e))?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&tmp[at..at + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        self.check_range(offset, buf.len() as u64, true)?;
        let _writing = Writing::start(&self.ahead);
        let bs = u64::from(self.lun.block_size());
        if self.aligned(offset, buf.len() as u64) {
            return self.lun.write_at(buf, offset, fua).map_err(|e| self.err(e));
        }
        // Read-modify-write of the partial blocks at the edges, holding the
        // blocks so a concurrent one cannot write back stale bytes over
        // ours (see RangeLocks).
        let (start, end) = widen(offset, buf.len() as u64, bs);
        let _held = self.rmw.lock(start, end);
        let mut tmp = vec![0u8; (end - start) as usize];
        self.lun.read_at(&mut tmp, start).map_err(|e| self.err(e))?;
        let at = (offset - start) as usize;
        tmp[at..at + buf.len()].copy_from_slice(buf);
        self.lun.write_at(&tmp, start, fua).map_err(|e| self.err(e))
    }
    fn flush(&self) -> Result<(), BackendError> {
        if self.read_only {
            return Ok(());
        }
        self.lun.flush().map_err(|e| self.err(e))
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.check_range(offset, len, true)?;
        let _writing = Writing::start(&self.ahead);
        let bs = u64::from(self.lun.block_size());
        // Only whole blocks inside the range can go.
        let start = offset.div_ceil(bs) * bs;
        let end = (offset + len) / bs * bs;
        if end <= start {
            return Ok(());
        }
        self.lun
            .discard(start, end - start)
            .map_err(|e| self.err(e))
    }
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), BackendError> {
        self.check_range(offset, len, true)?;
        let _writing = Writing::start(&self.ahead);
        if self.aligned(offset, len) {
            return self
                .lun
                .write_zeroes(offset, len, fua)
                .map_err(|e| self.err(e));
        }
        let zeroes = vec![0u8; len as usize];
        self.write_at(&zeroes, offset, fua)
    }
}

/// How a started operation that did not finish ends for the block service.
fn unfinished(disk: &str, u: Unfinished) -> Ended {
    match u {
        Unfinished::Again => Ended::Again,
        Unfinished::Failed(e) => Ended::Failed(remote_error(disk, e)),
    }
}

/// A failure of the LUN `disk` as the block service reports it.
fn remote_error(disk: &str, e: IscsiError) -> BackendError {
    BackendError::Remote {
        disk: disk.to_string(),
        source: Box::new(e),
    }
}

/// The block-aligned range covering `offset..offset+len`.
fn widen(offset: u64, len: u64, bs: u64) -> (u64, u64) {
    (offset / bs * bs, (offset + len).div_ceil(bs) * bs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widen_to_blocks() {
        assert_eq!(widen(0, 512, 512), (0, 512));
        assert_eq!(widen(100, 10, 512), (0, 512));
        assert_eq!(widen(500, 30, 512), (0, 1024));
    }

    #[test]
    fn overlapping_ranges_take_turns_and_disjoint_ones_do_not() {
        let locks = std::sync::Arc::new(RangeLocks::default());
        let a = locks.lock(0, 4096);
        // Disjoint: granted at once.
        let b = locks.lock(4096, 8192);
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = locks.clone();
        let t = std::thread::spawn(move || {
            let _c = l2.lock(2048, 6144);
            let _ = tx.send(());
        });
        // Overlapping both: waits for both.
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        drop(a);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        drop(b);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        let _ = t.join();
        assert!(locks.held.lock().map(|h| h.is_empty()).unwrap_or(false));
    }

    #[test]
    fn secrets_file_rules() {
        let dir = std::env::temp_dir().join(format!("ferry-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap_or_default();
            p
        };
        let ok = write(
            "ok.toml",
            "chap_user = \"a\"\nchap_secret = \"b\"\nio_timeout_secs = 5\n",
        );
        let s = IscsiSecrets::load(Some(&ok)).ok();
        assert_eq!(s.and_then(|s| s.io_timeout_secs), Some(5));
        let half = write("half.toml", "chap_user = \"a\"\n");
        let e = IscsiSecrets::load(Some(&half)).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("go together"));
        let e = IscsiSecrets::load(Some(&dir.join("missing.toml")))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("cannot read"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
