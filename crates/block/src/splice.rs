//! Moving bytes between a socket and a file without a user-space copy:
//! splice(2) through a pipe for writes, sendfile(2) for reads. The NBD
//! server's path for large requests.

use std::os::fd::RawFd;

thread_local! {
    /// One pipe per thread, reused: (read end, write end).
    static PIPE: std::cell::RefCell<Option<(RawFd, RawFd)>> = const { std::cell::RefCell::new(None) };
}

const PIPE_SIZE: i32 = 1 << 20;

fn pipe() -> std::io::Result<(RawFd, RawFd)> {
    PIPE.with(|p| {
        if let Some(fds) = *p.borrow() {
            return Ok(fds);
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fcntl on a pipe fd we just created; failure only keeps the default size.
        unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIPE_SIZE) };
        *p.borrow_mut() = Some((fds[0], fds[1]));
        Ok((fds[0], fds[1]))
    })
}

/// Drops this thread's pipe (after an error it may still hold data).
fn discard_pipe() {
    PIPE.with(|p| {
        if let Some((r, w)) = p.borrow_mut().take() {
            // SAFETY: closing fds this thread created and no longer uses.
            unsafe {
                libc::close(r);
                libc::close(w);
            }
        }
    });
}

/// Runs a byte-moving syscall until it moves something: retries on EINTR,
/// turns 0 into UnexpectedEof (the peer closed), negative into the OS error.
fn moved(mut call: impl FnMut() -> isize) -> std::io::Result<usize> {
    loop {
        let n = call();
        if n > 0 {
            return Ok(n as usize);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Moves exactly `len` bytes from `sock` to `file` at `offset`.
pub fn socket_to_file(sock: RawFd, file: RawFd, offset: u64, len: u64) -> std::io::Result<()> {
    let (pr, pw) = pipe()?;
    let mut left = len;
    let mut off = offset as libc::loff_t;
    while left > 0 {
        let want = left.min(PIPE_SIZE as u64) as usize;
        // SAFETY: splice between fds we hold; null offsets mean "current
        // position" for the socket and the pipe.
        let n = moved(|| unsafe {
            libc::splice(
                sock,
                std::ptr::null_mut(),
                pw,
                std::ptr::null_mut(),
                want,
                libc::SPLICE_F_MOVE,
            )
        })?;
        let mut in_pipe = n;
        while in_pipe > 0 {
            // SAFETY: as above; `off` is ours and advanced by the kernel.
            let m = moved(|| unsafe {
                libc::splice(
                    pr,
                    std::ptr::null_mut(),
                    file,
                    &mut off,
                    in_pipe,
                    libc::SPLICE_F_MOVE,
                )
            });
            match m {
                Ok(m) => in_pipe -= m,
                Err(e) => {
                    discard_pipe();
                    return Err(e);
                }
            }
        }
        left -= n as u64;
    }
    Ok(())
}

/// Sends exactly `len` bytes of `file` at `offset` into `sock`.
pub fn file_to_socket(file: RawFd, sock: RawFd, offset: u64, len: u64) -> std::io::Result<()> {
    let mut off = offset as libc::off_t;
    let mut left = len as usize;
    while left > 0 {
        // SAFETY: sendfile between fds we hold; `off` is ours and advanced by the kernel.
        left -= moved(|| unsafe { libc::sendfile(sock, file, &mut off, left) })?;
    }
    Ok(())
}
