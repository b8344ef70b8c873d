//! Memory a started read's Data-In goes straight into as it comes off the
//! socket (a VM's memory, for the block service's vhost-user disks), instead
//! of into buffers of the session's that the caller then copies out of.

use std::io::IoSliceMut;
use std::sync::{Arc, Mutex};

/// The destination of one read: host memory in pieces, seen as one range.
///
/// The reader thread writes Data-In into it while the command runs. Its
/// owner calls [`Sink::close`] before it reuses the memory: from then on
/// nothing is written into it (a late Data-In, after a timeout, goes to a
/// buffer of its own).
pub struct Sink {
    pieces: Arc<Vec<(usize, usize)>>,
    /// This window's start within the pieces, and its length.
    base: usize,
    len: usize,
    /// False once closed; held while Data-In is being written in.
    open: Arc<Mutex<bool>>,
    /// Keeps the memory mapped.
    _keep: Arc<dyn Send + Sync>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sink({}+{})", self.base, self.len)
    }
}

impl Sink {
    /// A sink over `pieces` (address, length), in order.
    ///
    /// # Safety
    /// Every piece must stay valid for writes while `keep` lives, and no
    /// one may rely on its contents until [`Sink::close`] has returned.
    pub unsafe fn new(pieces: Vec<(*mut u8, usize)>, keep: Arc<dyn Send + Sync>) -> Arc<Sink> {
        let len = pieces.iter().map(|p| p.1).sum();
        Arc::new(Sink {
            pieces: Arc::new(pieces.into_iter().map(|(p, n)| (p as usize, n)).collect()),
            base: 0,
            len,
            open: Arc::new(Mutex::new(true)),
            _keep: keep,
        })
    }

    /// Bytes it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The part `offset..offset + len` as a sink of its own (one per
    /// command of a read split into several); `None` past the end.
    pub fn window(&self, offset: usize, len: usize) -> Option<Arc<Sink>> {
        (offset.checked_add(len)? <= self.len).then(|| {
            Arc::new(Sink {
                pieces: self.pieces.clone(),
                base: self.base + offset,
                len,
                open: self.open.clone(),
                _keep: self._keep.clone(),
            })
        })
    }

    /// Stops all writes into it (every window's), waiting for one under
    /// way to end.
    pub fn close(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }

    /// Copies `parts`, in order, into the start of the sink (data read
    /// before the sink existed, e.g. read ahead). False, and nothing
    /// written, if closed or if the parts are longer than the sink.
    pub fn copy_in(&self, parts: &[Vec<u8>]) -> bool {
        let total: usize = parts.iter().map(Vec::len).sum();
        let mut from = parts.iter().map(Vec::as_slice).peekable();
        let mut skip = 0usize;
        self.fill(0, total, |slices| {
            for slice in slices.iter_mut() {
                let mut at = 0usize;
                while at < slice.len() {
                    let Some(src) = from.peek() else {
                        return Err(std::io::Error::other("parts shorter than they add up to"));
                    };
                    let n = (src.len() - skip).min(slice.len() - at);
                    slice[at..at + n].copy_from_slice(&src[skip..skip + n]);
                    at += n;
                    skip += n;
                    if skip == src.len() {
                        from.next();
                        skip = 0;
                    }
                }
            }
            Ok(())
        })
        .unwrap_or(false)
    }

    /// Hands `fill` the memory of `offset..offset + len`, its pieces in
    /// order (one vectored read can fill them all), unless closed or out
    /// of range (then `Ok(false)`, nothing touched).
    pub(crate) fn fill(
        &self,
        offset: usize,
        len: usize,
        fill: impl FnOnce(&mut [IoSliceMut<'_>]) -> std::io::Result<()>,
    ) -> std::io::Result<bool> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !*open || offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Ok(false);
        }
        let (mut at, end) = (self.base + offset, self.base + offset + len);
        let mut start = 0usize;
        let mut slices = Vec::new();
        for &(addr, n) in self.pieces.iter() {
            let (lo, hi) = (start.max(at), (start + n).min(end));
            if lo < hi {
                // SAFETY: within a piece the creator vouched for (see
                // `Sink::new`), written only while the sink is open, which
                // the lock held here keeps it.
                let piece = unsafe {
                    std::slice::from_raw_parts_mut((addr as *mut u8).add(lo - start), hi - lo)
                };
                slices.push(IoSliceMut::new(piece));
                at = hi;
            }
            start += n;
            if at >= end {
                break;
            }
        }
        fill(&mut slices)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink over `a` then `b`; the caller keeps both alive while it is
    /// used.
    fn over(a: &mut [u8], b: &mut [u8]) -> Arc<Sink> {
        let keep: Arc<dyn Send + Sync> = Arc::new(());
        // SAFETY: see above.
        unsafe {
            Sink::new(
                vec![(a.as_mut_ptr(), a.len()), (b.as_mut_ptr(), b.len())],
                keep,
            )
        }
    }

    #[test]
    fn windows_fill_across_pieces_until_closed() {
        let (mut a, mut b) = (vec![0u8; 3], vec![0u8; 5]);
        let s = over(&mut a, &mut b);
        assert_eq!(s.len(), 8);
        let w = s.window(2, 4).unwrap();
        let mut next = 1u8;
        assert!(w
            .fill(0, 4, |pieces| {
                assert_eq!(pieces.len(), 2, "the window spans both pieces");
                for x in pieces.iter_mut().flat_map(|p| p.iter_mut()) {
                    *x = next;
                    next += 1;
                }
                Ok(())
            })
            .unwrap());
        assert!(s.window(5, 4).is_none());
        assert!(!w.fill(2, 3, |_| Ok(())).unwrap(), "past the window");
        s.close();
        assert!(!w
            .fill(0, 1, |p| {
                p[0][0] = 99;
                Ok(())
            })
            .unwrap());
        assert_eq!(a, [0, 0, 1]);
        assert_eq!(b, [2, 3, 4, 0, 0]);
    }

    #[test]
    fn copy_in_spreads_parts_across_pieces() {
        let (mut a, mut b) = (vec![0u8; 3], vec![0u8; 5]);
        let s = over(&mut a, &mut b);
        assert!(s.copy_in(&[vec![1, 2], vec![], vec![3, 4, 5, 6]]));
        assert!(!s.copy_in(&[vec![9; 9]]), "longer than the sink");
        s.close();
        assert!(!s.copy_in(&[vec![9]]), "closed");
        assert_eq!(a, [1, 2, 3]);
        assert_eq!(b, [4, 5, 6, 0, 0]);
    }
}
