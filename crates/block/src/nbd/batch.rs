//! Replies gathered on a backend's thread and sent once per batch.
//!
//! The iSCSI initiator's reader thread ends many requests from one read of
//! its socket; writing each NBD reply on its own costs a system call and a
//! wake-up of QEMU per request. On a thread that has joined batching (the
//! reader's idle hook calls [`send_batched`], which also joins), replies are
//! appended to a per-thread buffer and sent when that thread is about to
//! wait. Anywhere else they are written at once. Large replies go at once
//! too, after what was gathered for the same client: copying them would
//! cost more than the system call saves.

use std::cell::RefCell;
use std::io::IoSlice;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// Replies at least this large are not copied into a batch.
const BATCH_MAX: usize = 64 * 1024;

/// A client's reply stream, shared by every thread that answers it.
pub(super) type Writer = Arc<Mutex<UnixStream>>;

/// Replies waiting to be sent, by client.
type Gathered = Vec<(Writer, Vec<u8>)>;

thread_local! {
    /// `None` until this thread joins batching.
    static GATHERED: RefCell<Option<Gathered>> = const { RefCell::new(None) };
}

/// Sends one whole reply made of `parts` to `writer`: into this thread's
/// batch when it batches and the reply is small, else at once (after this
/// thread's batched replies to the same client, keeping them whole).
pub(super) fn reply(writer: &Writer, parts: &[&[u8]]) -> std::io::Result<()> {
    /// What this thread's batch made of the reply.
    enum Taken {
        /// Appended to the batch.
        Gathered,
        /// To send now, after these earlier replies to the same client.
        SendAfter(Vec<u8>),
        /// To send now.
        Send,
    }
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let taken = GATHERED.with(|g| {
        let mut g = g.borrow_mut();
        let Some(gathered) = g.as_mut() else {
            return Taken::Send;
        };
        let at = gathered.iter().position(|(w, _)| Arc::ptr_eq(w, writer));
        if len >= BATCH_MAX {
            return match at {
                Some(i) => Taken::SendAfter(gathered.swap_remove(i).1),
                None => Taken::Send,
            };
        }
        let i = at.unwrap_or_else(|| {
            gathered.push((writer.clone(), Vec::new()));
            gathered.len() - 1
        });
        parts
            .iter()
            .for_each(|p| gathered[i].1.extend_from_slice(p));
        Taken::Gathered
    });
    match taken {
        Taken::Gathered => Ok(()),
        Taken::SendAfter(before) => {
            let mut all = vec![before.as_slice()];
            all.extend_from_slice(parts);
            write_all(writer, &all)
        }
        Taken::Send => write_all(writer, parts),
    }
}

/// Sends every reply this thread gathered, and from now on gathers the
/// replies this thread makes (the initiator's reader calls it whenever it
/// is about to wait for the target).
pub fn send_batched() {
    let gathered = GATHERED.with(|g| g.borrow_mut().replace(Vec::new()));
    for (writer, bytes) in gathered.unwrap_or_default() {
        if let Err(e) = write_all(&writer, &[&bytes]) {
            tracing::debug!("replies not sent, client gone: {e}");
        }
    }
}

/// `write_all` of several buffers as one reply, under the stream's lock, in
/// as few system calls as the socket takes.
fn write_all(writer: &Writer, parts: &[&[u8]]) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = writer
        .lock()
        .map_err(|_| std::io::Error::other("reply writer poisoned"))?;
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    fn pending(c: &mut UnixStream) -> Vec<u8> {
        c.set_nonblocking(true).unwrap();
        let mut got = vec![0u8; 1 << 20];
        let n = c.read(&mut got).unwrap_or(0);
        c.set_nonblocking(false).unwrap();
        got.truncate(n);
        got
    }

    #[test]
    fn replies_wait_for_the_batch_end_only_on_a_thread_that_batches() {
        std::thread::spawn(|| {
            let (mut c, s) = UnixStream::pair().unwrap();
            let w: Writer = Arc::new(Mutex::new(s));
            // Not batching yet: at once.
            reply(&w, &[b"ab", b"c"]).unwrap();
            assert_eq!(pending(&mut c), b"abc");
            send_batched();
            reply(&w, &[b"1"]).unwrap();
            reply(&w, &[b"2", b"3"]).unwrap();
            assert!(pending(&mut c).is_empty(), "held until the batch ends");
            // A large reply goes at once, after the small ones before it.
            let big = vec![7u8; BATCH_MAX];
            reply(&w, &[b"4", &big]).unwrap();
            let got = pending(&mut c);
            assert_eq!(&got[..4], b"1234");
            assert_eq!(got.len(), 4 + BATCH_MAX);
            // A large reply with nothing gathered before it: at once.
            reply(&w, &[&big]).unwrap();
            assert_eq!(pending(&mut c).len(), BATCH_MAX);
            reply(&w, &[b"5"]).unwrap();
            send_batched();
            assert_eq!(pending(&mut c), b"5");
            // Another thread does not batch.
            let w2 = w.clone();
            std::thread::spawn(move || reply(&w2, &[b"6"]).unwrap())
                .join()
                .unwrap();
            assert_eq!(pending(&mut c), b"6");
        })
        .join()
        .unwrap();
    }
}
