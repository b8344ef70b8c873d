//! What a disk is to the block service: a byte range that can be read,
//! written, flushed and discarded. Protocols sit on top, storage underneath.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Failures of a backend operation, mapped to NBD errors by the server.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The disk is read-only.
    #[error("disk is read-only")]
    ReadOnly,
    /// The range is outside the disk.
    #[error("range {offset}+{len} is beyond the disk's {size} bytes")]
    OutOfRange {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// Disk size.
        size: u64,
    },
    /// The backend cannot do this operation.
    #[error("operation not supported by this backend")]
    Unsupported,
    /// A remote disk (an iSCSI LUN) failed the operation.
    #[error("I/O error on {disk}")]
    Remote {
        /// The disk's identity (URL).
        disk: String,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The storage failed.
    #[error("I/O error on {path}")]
    Io {
        /// The backing file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A read or write handed to [`BlockBackend::start`].
#[derive(Debug)]
pub enum Op {
    /// Read `len` bytes at `offset`.
    Read {
        /// Start.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Read `sink.len()` bytes at `offset` straight into `sink` (memory of
    /// the caller's, e.g. a VM's): the end is [`Ended::Read`] with no
    /// buffers. The caller closes the sink when the operation ends.
    ReadInto {
        /// Start.
        offset: u64,
        /// Where the data goes.
        sink: std::sync::Arc<ferry_iscsi::initiator::Sink>,
    },
    /// Write `data` at `offset`, durable before it ends if `fua`.
    Write {
        /// Start.
        offset: u64,
        /// The bytes (shared, so a backend can send slices without copying).
        data: bytes::Bytes,
        /// Force unit access.
        fua: bool,
    },
}

/// How a started operation ended.
#[derive(Debug)]
pub enum Ended {
    /// A read's data, in order, in one or more buffers.
    Read(Vec<Vec<u8>>),
    /// A write is done.
    Written,
    /// It failed.
    Failed(BackendError),
    /// The backend did not finish it (it cannot start this kind of request,
    /// or the storage asked for a retry): run it with the blocking call.
    Again,
}

/// Runs when a started operation ends, on a thread of the backend's.
pub type Done = Box<dyn FnOnce(Ended) + Send>;

/// A disk's storage, safe to use from many threads at once.
pub trait BlockBackend: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// True when writes are refused.
    fn read_only(&self) -> bool;
    /// A stable identity for logs and metrics (e.g. the image path).
    fn identity(&self) -> String;
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError>;
    /// Writes `buf` at `offset`; with `fua` it is durable before returning.
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), BackendError>;
    /// Drops the range's data (reads may return anything; zeroes for files).
    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError>;
    /// Makes the range read as zeroes.
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), BackendError>;
    /// Whether [`BlockBackend::write_from_fd`] and
    /// [`BlockBackend::read_to_fd`] move data inside the kernel (a file can,
    /// with splice and sendfile). Servers use them only when this is true.
    fn fd_transfer(&self) -> bool {
        false
    }
    /// Whether [`BlockBackend::start`] hands reads and writes to the
    /// storage without waiting for them (an iSCSI LUN can: many commands
    /// fly on one session). The server then starts them from the thread
    /// that reads requests, and the backend's thread that learns of the end
    /// sends the reply: no thread is woken just to wait.
    fn starts(&self) -> bool {
        false
    }
    /// Starts `op` (its range already checked); `done` runs when it ends.
    /// With `hold`, more requests follow at once: the backend may keep this
    /// one until a later start without `hold` or [`BlockBackend::send_held`],
    /// and send them together. Backends that cannot answer [`Ended::Again`].
    fn start(&self, _op: Op, _hold: bool, done: Done) {
        done(Ended::Again)
    }
    /// Sends what [`BlockBackend::start`] held back.
    fn send_held(&self) {}
    /// Whether every request waits on the network (an iSCSI LUN): the
    /// server then runs all of them on worker threads, never inline.
    fn remote(&self) -> bool {
        false
    }
    /// The disk's logical block size: the smallest unit it reads and
    /// writes whole. The NBD server advertises it as the minimum block
    /// size, so a client that honours it (QEMU does) never sends a request
    /// the backend would have to widen into a read-modify-write.
    fn block_size(&self) -> u32 {
        512
    }
    /// How many requests of one connection the server runs at once.
    fn workers(&self) -> usize {
        crate::nbd::server::WORKERS
    }
    /// Fills `bufs`, in order, from `offset` on (one read for a file; the
    /// vhost-user server reads straight into guest memory with it). The
    /// default reads into one buffer and scatters it.
    fn read_vectored_at(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        offset: u64,
    ) -> Result<(), BackendError> {
        let mut all = vec![0u8; bufs.iter().map(|b| b.len()).sum()];
        self.read_at(&mut all, offset)?;
        let mut rest = all.as_slice();
        for b in bufs.iter_mut() {
            let (head, tail) = rest.split_at(b.len());
            b.copy_from_slice(head);
            rest = tail;
        }
        Ok(())
    }
    /// Writes `bufs`, in order, at `offset` on; with `fua` durable before
    /// returning. The default gathers them into one buffer.
    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        fua: bool,
    ) -> Result<(), BackendError> {
        if let [one] = bufs {
            return self.write_at(one, offset, fua);
        }
        let mut all = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
        for b in bufs {
            all.extend_from_slice(b);
        }
        self.write_at(&all, offset, fua)
    }
    /// Whether a read (or, with `write`, a write) of the range would be accepted.
    fn check_range(&self, offset: u64, len: u64, write: bool) -> Result<(), BackendError>;
    /// Writes `len` bytes read from the stream `src` at `offset`, the range
    /// already checked. On error part of the payload may have been consumed.
    fn write_from_fd(
        &self,
        _src: std::os::fd::RawFd,
        _offset: u64,
        _len: u64,
    ) -> Result<(), BackendError> {
        Err(BackendError::Unsupported)
    }
    /// Sends `len` bytes at `offset` into the stream `dst`, the range already
    /// checked. On error part of the data may have been sent.
    fn read_to_fd(
        &self,
        _dst: std::os::fd::RawFd,
        _offset: u64,
        _len: u64,
    ) -> Result<(), BackendError> {
        Err(BackendError::Unsupported)
    }
}

/// A raw image file.
pub struct FileBackend {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl FileBackend {
    /// Opens an image; `read_only` opens it without write access.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BackendError> {
        let io = |source| BackendError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Ok(FileBackend {
            file,
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }

    fn io(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn check(&self, offset: u64, len: u64, write: bool) -> Result<(), BackendError> {
        if write && self.read_only {
            return Err(BackendError::ReadOnly);
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(BackendError::OutOfRange {
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    fn punch(&self, offset: u64, len: u64, mode: i32) -> std::io::Result<()> {
        // SAFETY: fallocate only reads its integer arguments; the fd is ours and open.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl BlockBackend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn identity(&self) -> String {
        self.path.display().to_string()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64, false)?;
        self.file.read_exact_at(buf, offset).map_err(|e| self.io(e))
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<(), BackendError> {
        self.check(offset, buf.len() as u64, true)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io(e))?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }
    fn read_vectored_at(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        offset: u64,
    ) -> Result<(), BackendError> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.check(offset, len as u64, false)?;
        crate::vectored::pread_all(&self.file, bufs, offset).map_err(|e| self.io(e))
    }
    fn write_vectored_at(
        &self,
        bufs: &[IoSlice<'_>],
        offset: u64,
        fua: bool,
    ) -> Result<(), BackendError> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.check(offset, len as u64, true)?;
        crate::vectored::pwrite_all(&self.file, bufs, offset).map_err(|e| self.io(e))?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), BackendError> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| self.io(e))
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.check(offset, len, true)?;
        // Best effort: a filesystem without hole punching keeps the data.
        let _ = self.punch(
            offset,
            len,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        );
        Ok(())
    }
    fn fd_transfer(&self) -> bool {
        true
    }
    fn check_range(&self, offset: u64, len: u64, write: bool) -> Result<(), BackendError> {
        self.check(offset, len, write)
    }
    fn read_to_fd(
        &self,
        dst: std::os::fd::RawFd,
        offset: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        crate::splice::file_to_socket(self.file.as_raw_fd(), dst, offset, len)
            .map_err(|e| self.io(e))
    }
    fn write_from_fd(
        &self,
        src: std::os::fd::RawFd,
        offset: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        crate::splice::socket_to_file(src, self.file.as_raw_fd(), offset, len)
            .map_err(|e| self.io(e))
    }
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), BackendError> {
        self.check(offset, len, true)?;
        if self
            .punch(
                offset,
                len,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            )
            .is_err()
        {
            let zeroes = vec![0u8; 1 << 20];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeroes.len() as u64) as usize;
                self.file
                    .write_all_at(&zeroes[..n], offset + done)
                    .map_err(|e| self.io(e))?;
                done += n as u64;
            }
        }
        if fua {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, size: usize) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("ferry-backend-{name}-{}.img", std::process::id()));
        std::fs::write(&p, vec![0xAAu8; size]).unwrap();
        p
    }

    #[test]
    fn reads_writes_zeroes_and_bounds() {
        let p = image("rw", 64 * 1024);
        let b = FileBackend::open(&p, false).unwrap();
        b.write_at(&[1, 2, 3], 4096, true).unwrap();
        let mut buf = [0u8; 3];
        b.read_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, [1, 2, 3]);
        b.write_zeroes(4096, 8192, false).unwrap();
        b.read_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, [0, 0, 0]);
        assert!(matches!(
            b.read_at(&mut buf, 64 * 1024 - 1),
            Err(BackendError::OutOfRange { .. })
        ));
        assert!(matches!(
            b.write_at(&[0], u64::MAX, false),
            Err(BackendError::OutOfRange { .. })
        ));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn read_only_refuses_writes() {
        let p = image("ro", 4096);
        let b = FileBackend::open(&p, true).unwrap();
        assert!(matches!(
            b.write_at(&[1], 0, false),
            Err(BackendError::ReadOnly)
        ));
        assert!(matches!(b.discard(0, 512), Err(BackendError::ReadOnly)));
        std::fs::remove_file(&p).unwrap();
    }
}
