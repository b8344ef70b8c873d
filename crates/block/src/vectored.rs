//! Positional vectored reads and writes that finish the whole range
//! (`preadv`/`pwritev` may stop short; these carry on where they stopped).

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::unix::io::AsRawFd;

/// iovecs passed per call: Linux's IOV_MAX.
const IOV_MAX: usize = 1024;

/// Fills every buffer of `bufs` from `file` at `offset`; a file that ends
/// first is an `UnexpectedEof` error.
pub fn pread_all(file: &File, mut bufs: &mut [IoSliceMut<'_>], mut offset: u64) -> io::Result<()> {
    IoSliceMut::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = bufs.len().min(IOV_MAX);
        // SAFETY: IoSliceMut is ABI-compatible with iovec; the buffers are
        // borrowed mutably for the call and the count is within the slice.
        let got = unsafe {
            libc::preadv(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                n as libc::c_int,
                offset as libc::off_t,
            )
        };
        match got {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => {
                offset += n as u64;
                IoSliceMut::advance_slices(&mut bufs, n as usize);
            }
        }
    }
    Ok(())
}

/// Writes every buffer of `bufs` to `file` at `offset`, in order.
pub fn pwrite_all(file: &File, bufs: &[IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    let mut owned = bufs.to_vec();
    let mut bufs = owned.as_mut_slice();
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = bufs.len().min(IOV_MAX);
        // SAFETY: IoSlice is ABI-compatible with iovec; the buffers are
        // borrowed for the call and the count is within the slice.
        let put = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                n as libc::c_int,
                offset as libc::off_t,
            )
        };
        match put {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => {
                offset += n as u64;
                IoSlice::advance_slices(&mut bufs, n as usize);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_ranges_across_many_buffers_and_eof() {
        let p = std::env::temp_dir().join(format!("ferry-vectored-{}.img", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        // More buffers than one call takes, of uneven sizes.
        let chunks: Vec<Vec<u8>> = (0..1500)
            .map(|i| vec![(i % 251) as u8; 1 + i % 7])
            .collect();
        let out: Vec<IoSlice> = chunks.iter().map(|c| IoSlice::new(c)).collect();
        pwrite_all(&f, &out, 100).unwrap();
        let total: usize = chunks.iter().map(Vec::len).sum();
        let mut back: Vec<Vec<u8>> = chunks.iter().map(|c| vec![0u8; c.len()]).collect();
        let mut inb: Vec<IoSliceMut> = back.iter_mut().map(|c| IoSliceMut::new(c)).collect();
        pread_all(&f, &mut inb, 100).unwrap();
        assert_eq!(back, chunks);
        let mut past = [0u8; 8];
        let err = pread_all(
            &f,
            &mut [IoSliceMut::new(&mut past)],
            100 + total as u64 - 4,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        std::fs::remove_file(&p).unwrap();
    }
}
