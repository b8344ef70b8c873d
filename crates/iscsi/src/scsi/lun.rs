//! The LUN backend trait and its image-file implementation.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LunError {
    /// Opening or creating the image failed.
    #[error("cannot open image {path}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The image size is not a whole number of blocks or is zero.
    #[error("image {path} has size {size}, not a non-zero multiple of {block_size}")]
    BadSize {
        /// The image path.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The block size.
        block_size: u32,
    },
    /// An I/O operation failed.
    #[error("I/O on the image failed")]
    Io(#[from] std::io::Error),
}

/// Block storage behind one logical unit. Offsets and lengths are bytes,
/// always whole blocks; implementations must be safe to call from several
/// threads at once.
pub trait Lun: Send + Sync {
    /// Logical block size in bytes.
    fn block_size(&self) -> u32;
    /// Number of logical blocks.
    fn num_blocks(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), LunError>;
    /// Reads `len` bytes at `offset` into a new buffer. This default
    /// zero-fills the buffer first; a backend that can read into
    /// uninitialised memory spares that pass over every byte read.
    fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, LunError> {
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf)?;
        Ok(buf)
    }
    /// Writes `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), LunError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), LunError>;
    /// Deallocates a byte range; it then reads back as zeros.
    fn unmap(&self, offset: u64, len: u64) -> Result<(), LunError>;
    /// Whether the byte range starting at `offset` is mapped, and how long
    /// the run of that state is (at most `len`).
    fn mapping(&self, offset: u64, len: u64) -> Result<(bool, u64), LunError>;
}

/// A LUN stored in a (normally sparse) image file.
pub struct ImageFile {
    file: File,
    blocks: u64,
    block_size: u32,
    read_only: bool,
}

impl ImageFile {
    /// Opens an existing image, or creates a sparse one of `create_size`
    /// bytes when it does not exist and a size is given.
    pub fn open(
        path: &Path,
        create_size: Option<u64>,
        read_only: bool,
        block_size: u32,
    ) -> Result<ImageFile, LunError> {
        let open_err = |source| LunError::Open {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            if let Some(size) = create_size {
                let f = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(path)
                    .map_err(open_err)?;
                f.set_len(size).map_err(open_err)?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        if size == 0 || size % u64::from(block_size) != 0 {
            return Err(LunError::BadSize {
                path: path.to_path_buf(),
                size,
                block_size,
            });
        }
        Ok(ImageFile {
            file,
            blocks: size / u64::from(block_size),
            block_size,
            read_only,
        })
    }
}

impl Lun for ImageFile {
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn num_blocks(&self) -> u64 {
        self.blocks
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), LunError> {
        Ok(self.file.read_exact_at(buf, offset)?)
    }
    fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, LunError> {
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        while buf.len() < len {
            let at = offset
                .checked_add(buf.len() as u64)
                .and_then(|a| i64::try_from(a).ok())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            let want = len - buf.len();
            let spare = buf.spare_capacity_mut();
            // SAFETY: pread writes at most `want` bytes, no more than the
            // spare capacity of a buffer we own, through an fd we own.
            let n =
                unsafe { libc::pread(self.file.as_raw_fd(), spare.as_mut_ptr().cast(), want, at) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let n = n as usize;
            if n == 0 || n > want {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            // SAFETY: the kernel initialised these n bytes just past the
            // old length, within the capacity.
            unsafe { buf.set_len(buf.len() + n) };
        }
        Ok(buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), LunError> {
        Ok(self.file.write_all_at(data, offset)?)
    }
    fn flush(&self) -> Result<(), LunError> {
        Ok(self.file.sync_data()?)
    }
    fn unmap(&self, offset: u64, len: u64) -> Result<(), LunError> {
        let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(LunError::Io(std::io::Error::from(
                std::io::ErrorKind::InvalidInput,
            )));
        };
        // SAFETY: fallocate on an fd we own, with plain integer arguments.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                l,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // No hole punching on this filesystem: write zeros instead.
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], offset + at)?;
            at += n as u64;
        }
        Ok(())
    }
    fn mapping(&self, offset: u64, len: u64) -> Result<(bool, u64), LunError> {
        let fd = self.file.as_raw_fd();
        let Ok(off) = i64::try_from(offset) else {
            return Ok((true, len));
        };
        // SAFETY: lseek on an fd we own.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data past offset: all a hole.
            return Ok((false, len));
        }
        let data = data as u64;
        if data > offset {
            return Ok((false, (data - offset).min(len)));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        let hole = if hole < 0 { offset + len } else { hole as u64 };
        Ok((true, (hole.saturating_sub(offset)).clamp(1, len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_vec_reads_what_read_at_reads_and_fails_past_the_end() {
        let dir = std::env::temp_dir().join(format!("ferry-lun-read-vec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("img");
        let img = ImageFile::open(&path, Some(1 << 20), false, 512).expect("open");
        let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 13) as u8).collect();
        img.write_at(4096, &pattern).expect("write");
        for (off, len) in [
            (0u64, 512usize),
            (4096, 8192),
            (3584, 9216),
            ((1 << 20) - 512, 512),
        ] {
            let mut want = vec![0xaa; len];
            img.read_at(off, &mut want).expect("read_at");
            assert_eq!(
                img.read_vec(off, len).expect("read_vec"),
                want,
                "at {off}+{len}"
            );
        }
        assert!(img.read_vec((1 << 20) - 512, 1024).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
