//! The Raft log on disk: segment files of sealed records, fsynced before an
//! append, a truncation or a purge is reported done.
//!
//! A node's log directory holds:
//!
//! ```text
//!  log-<n>.seg   the active segment: sealed LOG_RECORDs, appended in order
//!  vote          the last vote (sealed META), replaced atomically
//!  committed     the last committed log id (sealed META), replaced atomically
//! ```
//!
//! A segment is a sequence of records: an entry, "truncate since index" or
//! "purge up to log id". Opening replays them into memory (the cluster
//! database is small and purging keeps it so). A record cut short at the
//! end of the segment is a write that crashed before it was acknowledged and
//! is cut off; damage anywhere else is an error, never skipped. When a purge
//! leaves a segment mostly dead, the live records are written to segment
//! n+1 (temporary name, fsync, rename, directory fsync) and segment n is
//! deleted; opening keeps only the highest-numbered segment.

use crate::codec::{self, CodecError, HEADER_LEN, LOG_RECORD, META};
use crate::fsutil::{
    io_err, lock_dir, read_sealed, remove_leftovers, sync_dir, tmp_path, write_sealed, FileError,
};
use crate::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A segment is rewritten at a purge once it is larger than this.
const COMPACT_BYTES: u64 = 4 << 20;

/// Problems with the on-disk log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A record in the middle of a segment is damaged.
    #[error("{path}: damaged record at offset {offset}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        #[source]
        source: CodecError,
    },
    /// An earlier operation panicked while holding the log.
    #[error("the log store is unusable after a panic")]
    Poisoned,
    /// The blocking I/O task did not finish.
    #[error("the log I/O task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// One record of a segment.
#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    /// A log entry.
    Entry(Entry<TypeConfig>),
    /// Entries at and after this index are gone.
    Truncate { since: u64 },
    /// Entries up to and including this log id are gone.
    Purge { upto: LogId<NodeId> },
}

/// The vote and committed files.
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";

/// What the log holds, in memory: readers take only this lock, never the
/// files' (held across an fsync). It changes only after the disk has.
#[derive(Default)]
struct Mem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

impl Mem {
    fn apply(&mut self, record: LogRecord) {
        match record {
            LogRecord::Entry(e) => {
                self.entries.insert(e.log_id.index, e);
            }
            LogRecord::Truncate { since } => {
                self.entries.split_off(&since);
            }
            LogRecord::Purge { upto } => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                self.last_purged = Some(upto);
            }
        }
    }

    fn log_state(&self) -> LogState<TypeConfig> {
        let last = self
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(self.last_purged);
        LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: last,
        }
    }
}

type Shared<T> = Arc<RwLock<T>>;

fn read_mem(mem: &Shared<Mem>) -> Result<RwLockReadGuard<'_, Mem>, LogError> {
    mem.read().map_err(|_| LogError::Poisoned)
}

fn write_mem(mem: &Shared<Mem>) -> Result<RwLockWriteGuard<'_, Mem>, LogError> {
    mem.write().map_err(|_| LogError::Poisoned)
}

/// The segment files; one writer at a time.
struct LogFiles {
    /// Held while the log is open.
    _lock: nix::fcntl::Flock<File>,
    dir: PathBuf,
    segment_no: u64,
    segment: File,
    segment_len: u64,
    mem: Shared<Mem>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("log-{n:016}.seg"))
}

fn segment_no(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

/// The records of a segment and the length of its good part.
struct Scanned {
    records: Vec<LogRecord>,
    good_len: usize,
}

/// Reads a segment's records. A record cut short or damaged at the very end
/// (and followed by no valid record) is a torn last write: the good part
/// ends before it. Any other damage is an error with its offset.
fn scan(buf: &[u8]) -> Result<Scanned, (usize, CodecError)> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let err = match codec::open_prefix::<LogRecord>(LOG_RECORD, rest) {
            Ok((record, used)) => {
                records.push(record);
                pos += used;
                continue;
            }
            Err(e) => e,
        };
        let torn = match &err {
            CodecError::Truncated { .. } => true,
            // A damaged record that ends exactly at the end of the file is
            // the last write, cut short by a crash.
            CodecError::BadChecksum { .. } | CodecError::Malformed { .. } => {
                codec::payload_len(LOG_RECORD, rest)
                    .map(|len| HEADER_LEN + len == rest.len())
                    .unwrap_or(false)
            }
            _ => false,
        } && !holds_a_record(&rest[1..]);
        if !torn {
            return Err((pos, err));
        }
        break;
    }
    Ok(Scanned {
        records,
        good_len: pos,
    })
}

/// Checks a segment's bytes as opening the log would: the number of
/// records and the length of the good part, or what is damaged where.
/// For tools and fuzzing; never panics.
pub fn check_segment(buf: &[u8]) -> Result<(usize, usize), String> {
    scan(buf)
        .map(|s| (s.records.len(), s.good_len))
        .map_err(|(offset, e)| format!("damaged record at offset {offset}: {e}"))
}

/// Whether a complete, valid record starts anywhere in `buf`: then a
/// damaged record before it is not a torn last write.
fn holds_a_record(buf: &[u8]) -> bool {
    (0..buf.len()).any(|i| {
        buf[i..].starts_with(&LOG_RECORD.magic)
            && codec::open_prefix::<LogRecord>(LOG_RECORD, &buf[i..]).is_ok()
    })
}

impl LogFiles {
    fn open(dir: &Path) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create log directory", dir))?;
        let lock = lock_dir(dir)?;
        // An interrupted compaction or atomic write was never renamed into
        // use.
        remove_leftovers(dir)?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
            let entry = entry.map_err(io_err("cannot list", dir))?;
            if let Some(n) = segment_no(&entry.file_name().to_string_lossy()) {
                segments.push(n);
            }
        }
        segments.sort_unstable();
        let segment_no = segments.last().copied().unwrap_or(1);
        for old in &segments[..segments.len().saturating_sub(1)] {
            // Superseded by a completed compaction.
            let p = segment_path(dir, *old);
            std::fs::remove_file(&p).map_err(io_err("cannot remove old segment", &p))?;
        }
        let path = segment_path(dir, segment_no);
        let mut segment = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err("cannot open segment", &path))?;
        if segments.is_empty() {
            sync_dir(dir)?;
        }
        let mem = Mem {
            vote: read_sealed(META, &dir.join(VOTE))?,
            committed: read_sealed(META, &dir.join(COMMITTED))?,
            ..Mem::default()
        };
        let mut files = LogFiles {
            _lock: lock,
            dir: dir.to_path_buf(),
            segment_no,
            segment_len: 0,
            segment: segment.try_clone().map_err(io_err("cannot open", &path))?,
            mem: Arc::new(RwLock::new(mem)),
        };
        let good = files.replay(&path, &mut segment)?;
        files.segment_len = good;
        Ok(files)
    }

    /// Replays a segment into memory; returns the length of its good part,
    /// having cut off a torn last record.
    fn replay(&mut self, path: &Path, f: &mut File) -> Result<u64, LogError> {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(f, &mut buf).map_err(io_err("cannot read", path))?;
        let scanned = scan(&buf).map_err(|(offset, source)| LogError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            source,
        })?;
        if scanned.good_len < buf.len() {
            tracing::warn!(
                "{}: cutting off an unfinished record at offset {} ({} bytes)",
                path.display(),
                scanned.good_len,
                buf.len() - scanned.good_len
            );
            f.set_len(scanned.good_len as u64)
                .and_then(|()| f.sync_all())
                .map_err(io_err("cannot cut off the unfinished record of", path))?;
        }
        let mut mem = write_mem(&self.mem)?;
        for r in scanned.records {
            mem.apply(r);
        }
        Ok(scanned.good_len as u64)
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.segment_no)
    }

    /// Appends records to the segment and fsyncs, then applies them.
    fn write(&mut self, records: Vec<LogRecord>) -> Result<(), LogError> {
        let path = self.path();
        let mut bytes = Vec::new();
        for r in &records {
            bytes.extend(
                codec::seal(LOG_RECORD, r).map_err(|source| FileError::Codec {
                    path: path.clone(),
                    source,
                })?,
            );
        }
        let written = self
            .segment
            .write_all(&bytes)
            .and_then(|()| self.segment.sync_data());
        if let Err(e) = written {
            // Leave no half record behind for the next append to follow.
            let _ = self.segment.set_len(self.segment_len);
            return Err(io_err("cannot append to", &path)(e).into());
        }
        self.segment_len += bytes.len() as u64;
        let mut mem = write_mem(&self.mem)?;
        for r in records {
            mem.apply(r);
        }
        Ok(())
    }

    /// Writes the live records to a new segment and drops the old one.
    fn compact(&mut self) -> Result<(), LogError> {
        let next = self.segment_no + 1;
        let final_path = segment_path(&self.dir, next);
        let tmp = tmp_path(&final_path);
        let mut bytes = Vec::new();
        let seal = |r: &LogRecord| {
            codec::seal(LOG_RECORD, r).map_err(|source| FileError::Codec {
                path: tmp.clone(),
                source,
            })
        };
        {
            let mem = read_mem(&self.mem)?;
            if let Some(upto) = mem.last_purged {
                bytes.extend(seal(&LogRecord::Purge { upto })?);
            }
            for e in mem.entries.values() {
                bytes.extend(seal(&LogRecord::Entry(e.clone()))?);
            }
        }
        let mut f = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io_err("cannot write", &tmp))?;
        std::fs::rename(&tmp, &final_path).map_err(io_err("cannot rename", &final_path))?;
        sync_dir(&self.dir)?;
        let old = self.path();
        self.segment = std::fs::OpenOptions::new()
            .append(true)
            .open(&final_path)
            .map_err(io_err("cannot open segment", &final_path))?;
        self.segment_no = next;
        self.segment_len = bytes.len() as u64;
        std::fs::remove_file(&old).map_err(io_err("cannot remove old segment", &old))?;
        tracing::debug!("compacted the log into {}", final_path.display());
        Ok(())
    }
}

/// The on-disk Raft log of one node; clones share it.
#[derive(Clone)]
pub struct LogStore {
    files: Arc<Mutex<LogFiles>>,
    mem: Shared<Mem>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

fn storage_err(e: LogError) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, replaying it into memory.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let files = LogFiles::open(dir)?;
        Ok(LogStore {
            mem: files.mem.clone(),
            files: Arc::new(Mutex::new(files)),
        })
    }

    fn mem(&self) -> Result<RwLockReadGuard<'_, Mem>, LogError> {
        read_mem(&self.mem)
    }

    /// Runs blocking file work off the async runtime's threads.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LogFiles) -> Result<R, LogError> + Send + 'static,
    ) -> Result<R, StorageError<NodeId>> {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = files.lock().map_err(|_| LogError::Poisoned)?;
            f(&mut guard)
        })
        .await
        .map_err(LogError::Task)
        .and_then(|r| r)
        .map_err(storage_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let mem = self.mem().map_err(storage_err)?;
        Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        Ok(self.mem().map_err(storage_err)?.log_state())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.blocking(move |f| {
            write_sealed(META, &f.dir.join(VOTE), &vote)?;
            write_mem(&f.mem)?.vote = Some(vote);
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.mem().map_err(storage_err)?.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |f| {
            write_sealed(META, &f.dir.join(COMMITTED), &committed)?;
            write_mem(&f.mem)?.committed = committed;
            Ok(())
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.mem().map_err(storage_err)?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<LogRecord> = entries.into_iter().map(LogRecord::Entry).collect();
        // Reported done only once the records are on disk.
        match self.blocking(move |f| f.write(records)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |f| {
            f.write(vec![LogRecord::Truncate {
                since: log_id.index,
            }])
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |f| {
            f.write(vec![LogRecord::Purge { upto: log_id }])?;
            if f.segment_len > COMPACT_BYTES {
                f.compact()?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Blank,
        }
    }

    fn keys(f: &LogFiles) -> Vec<u64> {
        f.mem.read().expect("mem").entries.keys().copied().collect()
    }

    fn purged(f: &LogFiles) -> Option<u64> {
        f.mem.read().expect("mem").last_purged.map(|l| l.index)
    }

    fn indexes(dir: &Path) -> Vec<u64> {
        keys(&LogFiles::open(dir).expect("open"))
    }

    #[test]
    fn replays_truncate_and_purge_and_compacts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut f = LogFiles::open(tmp.path()).expect("open");
        f.write((1..=10).map(|i| LogRecord::Entry(entry(i))).collect())
            .expect("append");
        f.write(vec![LogRecord::Truncate { since: 8 }])
            .expect("truncate");
        f.write(vec![LogRecord::Purge {
            upto: *entry(3).get_log_id(),
        }])
        .expect("purge");
        drop(f);
        assert_eq!(indexes(tmp.path()), vec![4, 5, 6, 7]);

        let mut f = LogFiles::open(tmp.path()).expect("open");
        assert_eq!(purged(&f), Some(3));
        f.compact().expect("compact");
        drop(f);
        let f = LogFiles::open(tmp.path()).expect("reopen");
        assert_eq!(f.segment_no, 2);
        assert_eq!(purged(&f), Some(3));
        assert_eq!(keys(&f), vec![4, 5, 6, 7]);
        assert!(!segment_path(tmp.path(), 1).exists());
    }

    #[test]
    fn cuts_a_torn_tail_but_refuses_damage_in_the_middle() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut f = LogFiles::open(tmp.path()).expect("open");
        f.write((1..=3).map(|i| LogRecord::Entry(entry(i))).collect())
            .expect("append");
        let path = f.path();
        drop(f);
        let good = std::fs::read(&path).expect("read");
        // A crash in the middle of writing record 4.
        let rec = codec::seal(LOG_RECORD, &LogRecord::Entry(entry(4))).expect("seal");
        let mut torn = good.clone();
        torn.extend_from_slice(&rec[..rec.len() / 2]);
        std::fs::write(&path, &torn).expect("write");
        assert_eq!(indexes(tmp.path()), vec![1, 2, 3]);
        assert_eq!(std::fs::read(&path).expect("read"), good, "tail cut off");

        // A flipped bit in record 2 of 3 is not a torn write.
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 0x01;
        std::fs::write(&path, &bad).expect("write");
        let err = LogFiles::open(tmp.path()).err().expect("damage refused");
        assert!(err.to_string().contains("damaged record"), "{err}");

        // Nor is a length field in record 2 that points past the end.
        let rec_len = good.len() / 3;
        let mut bad = good.clone();
        bad[rec_len + 6..rec_len + 10].copy_from_slice(&(10_000u32).to_le_bytes());
        std::fs::write(&path, &bad).expect("write");
        let err = LogFiles::open(tmp.path()).err().expect("damage refused");
        assert!(err.to_string().contains("offset"), "{err}");
    }

    #[test]
    fn reads_the_version_1_format() {
        // Three entries, a truncation and a purge, as version 1 writes them
        // (made independently of this code: see fuzz/seeds/cluster_records).
        let seg = include_bytes!("../testdata/segment-v1");
        assert_eq!(check_segment(seg), Ok((5, seg.len())));
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(segment_path(tmp.path(), 1), seg).expect("write");
        let f = LogFiles::open(tmp.path()).expect("open");
        assert_eq!(keys(&f), vec![2]);
        assert_eq!(purged(&f), Some(1));
    }

    #[test]
    fn one_process_at_a_time() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = LogFiles::open(tmp.path()).expect("open");
        let err = LogFiles::open(tmp.path())
            .err()
            .expect("second open refused");
        assert!(err.to_string().contains("another process holds"), "{err}");
        drop(first);
        LogFiles::open(tmp.path()).expect("open after release");
    }
}
