//! Positional vectored reads and writes that finish the whole range
//! (`preadv`/`pwritev` may stop short; these carry on where they stopped).

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::unix::io::AsRawFd;

/// iovecs passed per call: Linux's IOV_MAX.
const IOV_MAX: usize = 1024;

/// Fills every buffer of `bufs` from `file` at `offset`; a file that ends
/// first is an `UnexpectedEof` error.
pub fn pread_all(file: &File, mut bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<()> {
    IoSliceMut::advance_slices(&mut bufs, 0);
    let (fd, eof) = (file.as_raw_fd(), io::ErrorKind::UnexpectedEof);
    finish(bufs, offset, eof, IoSliceMut::advance_slices, |b, n, at| {
        // SAFETY: IoSliceMut is ABI-compatible with iovec; the buffers are
        // borrowed mutably for the call and `n` is within the slice.
        unsafe { libc::preadv(fd, b.as_ptr().cast::<libc::iovec>(), n, at) }
    })
}

/// Writes every buffer of `bufs` to `file` at `offset`, in order.
pub fn pwrite_all(file: &File, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
    let mut owned = bufs.to_vec();
    let mut bufs = owned.as_mut_slice();
    IoSlice::advance_slices(&mut bufs, 0);
    let (fd, full) = (file.as_raw_fd(), io::ErrorKind::WriteZero);
    finish(bufs, offset, full, IoSlice::advance_slices, |b, n, at| {
        // SAFETY: IoSlice is ABI-compatible with iovec; the buffers are
        // borrowed for the call and `n` is within the slice.
        unsafe { libc::pwritev(fd, b.as_ptr().cast::<libc::iovec>(), n, at) }
    })
}

/// Calls `io` (preadv or pwritev) until every buffer is done, moving past
/// what each call did; a call that does nothing is the error `stalled`.
fn finish<S>(
    mut bufs: &mut [S],
    mut offset: u64,
    stalled: io::ErrorKind,
    advance: fn(&mut &mut [S], usize),
    io: impl Fn(&[S], libc::c_int, libc::off_t) -> isize,
) -> io::Result<()> {
    while !bufs.is_empty() {
        let n = bufs.len().min(IOV_MAX) as libc::c_int;
        match io(bufs, n, offset as libc::off_t) {
            0 => return Err(stalled.into()),
            done if done < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            done => {
                offset += done as u64;
                advance(&mut bufs, done as usize);
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
