//! Read-ahead for a disk across the network (an iSCSI LUN).
//!
//! When the guest reads a disk sequentially, one large read at a time, each
//! read is a round trip to the target that the guest waits out before it
//! asks for the next. Once two reads in a row are sequential, the next
//! stretches of the same size are fetched while the guest handles the one
//! it asked for, and its next read is then a copy in memory. Ceph's librbd
//! does the same for its images.
//!
//! Coherent because a VM disk has one user at a time (one block service,
//! on the host the VM runs on): every write, from its start, drops what was
//! read ahead and not yet asked for, and nothing is read ahead while a
//! write is in flight. A stretch the guest already waits on is kept: a
//! write started after that read is concurrent with it, and either
//! contents are a right answer. Data waits at most [`MAX_AGE`] for its
//! read: a guest paused in the middle of a sequence (while its disk might
//! change hands) does not find old data when it goes on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Reads smaller than this are not read ahead (random small I/O would pay
/// for fetches it never uses).
pub const MIN_LEN: u64 = 64 * 1024;
/// Nor larger ones (the memory held is `DEPTH` times the read).
pub const MAX_LEN: u64 = 4 * 1024 * 1024;
/// Stretches kept ahead of the guest.
pub const DEPTH: u64 = 2;
/// Fetched data older than this is not used (a sequential reader takes
/// it within milliseconds).
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// One disk's read-ahead state. `W` is what stands for a read waiting on
/// a stretch still being fetched; the caller gets it back with the data.
pub struct ReadAhead<W> {
    state: Mutex<State<W>>,
    /// Reads served from stretches read ahead.
    served: AtomicU64,
}

impl<W> Default for ReadAhead<W> {
    fn default() -> Self {
        ReadAhead {
            state: Mutex::new(State {
                next: 0,
                streak: 0,
                writes: 0,
                ahead: VecDeque::new(),
                next_id: 0,
            }),
            served: AtomicU64::new(0),
        }
    }
}

struct State<W> {
    /// Where the last read ended, to spot a sequential one.
    next: u64,
    /// Sequential reads in a row.
    streak: u32,
    /// Writes in flight.
    writes: usize,
    /// Stretches being fetched or fetched, in disk order.
    ahead: VecDeque<Stretch<W>>,
    next_id: u64,
}

struct Stretch<W> {
    id: u64,
    offset: u64,
    len: u64,
    got: Got<W>,
}

enum Got<W> {
    /// Being fetched; a read that asked for it meanwhile waits here.
    Fetching(Option<W>),
    Fetched(Vec<Vec<u8>>, Instant),
}

/// A stretch to fetch: pass `id` back to [`ReadAhead::fetched`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    /// Names the stretch.
    pub id: u64,
    /// Start on the disk.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// What became of a read.
pub struct Lookup<W> {
    /// The waiter back with its data: read ahead already.
    pub ready: Option<(W, Vec<Vec<u8>>)>,
    /// The waiter back: not read ahead, the caller reads it itself.
    /// (Neither: it waits on a stretch being fetched; see
    /// [`ReadAhead::fetched`].)
    pub miss: Option<W>,
    /// Stretches the caller should fetch now, after its own read.
    pub fetch: Vec<Fetch>,
}

impl<W> ReadAhead<W> {
    /// A guest read of `len` bytes at `offset` on a disk of `size` bytes:
    /// served from a stretch read ahead (now or when it arrives) or handed
    /// back; and what to read ahead next.
    pub fn read(&self, offset: u64, len: u64, size: u64, waiter: W) -> Lookup<W> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.streak = if offset == s.next && len > 0 {
            s.streak.saturating_add(1)
        } else {
            1
        };
        s.next = offset.saturating_add(len);
        let mut ready = None;
        let mut miss = Some(waiter);
        // Those before it were skipped over: never asked for (all of them
        // if the guest went elsewhere).
        let found = s
            .ahead
            .iter()
            .position(|a| a.offset == offset && a.len == len);
        let before = found.unwrap_or(s.ahead.len());
        let kept = s.drop_unclaimed_before(before);
        if found.is_some() {
            let i = kept;
            match &mut s.ahead[i].got {
                Got::Fetching(slot @ None) => {
                    *slot = miss.take();
                    self.served.fetch_add(1, Ordering::Relaxed);
                }
                Got::Fetched(_, at) if at.elapsed() <= MAX_AGE => {
                    if let Some(Stretch {
                        got: Got::Fetched(data, _),
                        ..
                    }) = s.ahead.remove(i)
                    {
                        ready = miss.take().map(|w| (w, data));
                        self.served.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Too old to trust: read it again.
                Got::Fetched(..) => {
                    s.ahead.remove(i);
                }
                // Already claimed (a second read of the same stretch
                // before it arrived): read it the ordinary way.
                Got::Fetching(Some(_)) => {}
            }
        }
        let fetch = s.plan(offset, len, size);
        Lookup { ready, miss, fetch }
    }

    /// A fetch started by [`ReadAhead::read`] ended (`None`: it failed):
    /// the read waiting on it, if any, and the data for it (`None`: it
    /// must read the ordinary way).
    #[allow(clippy::type_complexity)]
    pub fn fetched(
        &self,
        id: u64,
        data: Option<Vec<Vec<u8>>>,
    ) -> Option<(W, Option<Vec<Vec<u8>>>)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Not found: dropped meanwhile (a write, or the guest went elsewhere).
        let i = s.ahead.iter().position(|a| a.id == id)?;
        let claimed = matches!(s.ahead[i].got, Got::Fetching(Some(_)));
        if claimed || data.is_none() {
            match s.ahead.remove(i).map(|a| a.got) {
                Some(Got::Fetching(Some(w))) => Some((w, data)),
                _ => None,
            }
        } else {
            if let Some(data) = data {
                s.ahead[i].got = Got::Fetched(data, Instant::now());
            }
            None
        }
    }

    /// A write starts: what was read ahead and not asked for is dropped,
    /// and nothing is read ahead until [`ReadAhead::write_ended`].
    pub fn write_started(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.writes += 1;
        let all = s.ahead.len();
        let _ = s.drop_unclaimed_before(all);
    }

    /// A write that [`ReadAhead::write_started`] ended.
    pub fn write_ended(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.writes = s.writes.saturating_sub(1);
    }

    /// Reads served (or being served) from stretches read ahead, so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Bytes held in stretches fetched and not yet asked for.
    #[cfg(test)]
    fn held(&self) -> u64 {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.ahead
            .iter()
            .filter(|a| matches!(a.got, Got::Fetched(..)))
            .map(|a| a.len)
            .sum()
    }
}

impl<W> State<W> {
    /// Drops the stretches among the first `n` that no read waits on;
    /// how many of those `n` stay (the new place of the one that was `n`th).
    fn drop_unclaimed_before(&mut self, n: usize) -> usize {
        let (mut i, mut kept) = (0usize, 0usize);
        self.ahead.retain(|a| {
            i += 1;
            let keep = i > n || matches!(a.got, Got::Fetching(Some(_)));
            kept += usize::from(keep && i <= n);
            keep
        });
        kept
    }

    /// The stretches to start so that `DEPTH` follow the read just made.
    fn plan(&mut self, offset: u64, len: u64, size: u64) -> Vec<Fetch> {
        let mut out = Vec::new();
        if self.streak < 2 || self.writes > 0 || !(MIN_LEN..=MAX_LEN).contains(&len) {
            return out;
        }
        for k in 1..=DEPTH {
            let Some(at) = offset.checked_add(len * k) else {
                break;
            };
            if at.saturating_add(len) > size {
                break;
            }
            if self.ahead.iter().any(|a| a.offset == at) {
                continue;
            }
            self.next_id += 1;
            let id = self.next_id;
            self.ahead.push_back(Stretch {
                id,
                offset: at,
                len,
                got: Got::Fetching(None),
            });
            out.push(Fetch {
                id,
                offset: at,
                len,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1024 * 1024;
    const SIZE: u64 = 64 * M;

    /// Reads 1 MiB at `at` MiB (the waiter is `at`): (served now with the
    /// first byte, missed, offsets in MiB to fetch, their ids).
    fn read(ra: &ReadAhead<u64>, at: u64) -> (Option<u8>, bool, Vec<u64>, Vec<u64>) {
        let l = ra.read(at * M, M, SIZE, at);
        if let Some((w, _)) = &l.ready {
            assert_eq!(*w, at, "its own waiter back");
        }
        (
            l.ready.map(|(_, d)| d[0][0]),
            l.miss.is_some(),
            l.fetch.iter().map(|f| f.offset / M).collect(),
            l.fetch.iter().map(|f| f.id).collect(),
        )
    }

    fn data(b: u8) -> Option<Vec<Vec<u8>>> {
        Some(vec![vec![b; 8]])
    }

    /// Reads at 0 and 1 MiB: the ids of the stretches at 2 and 3 fetched.
    fn sequence(ra: &ReadAhead<u64>) -> Vec<u64> {
        read(ra, 0);
        read(ra, 1).3
    }

    #[test]
    fn a_second_sequential_read_starts_fetching_and_the_next_is_served_from_them() {
        let ra = ReadAhead::default();
        let (_, miss, fetch, _) = read(&ra, 0);
        assert!(miss && fetch.is_empty(), "one read is no pattern");
        let (_, miss, fetch, ids) = read(&ra, 1);
        assert!(miss);
        assert_eq!(fetch, [2, 3]);
        assert!(ra.fetched(ids[0], data(7)).is_none(), "nobody waits yet");
        assert_eq!(ra.held(), M);
        assert_eq!(ra.served(), 0);
        let (ready, miss, more, _) = read(&ra, 2);
        assert_eq!((ready, miss), (Some(7), false), "served from the stretch");
        assert_eq!(ra.served(), 1);
        assert_eq!(more, [4]);
        // Asked for before it arrived: handed over when it does.
        let (ready, miss, _, _) = read(&ra, 3);
        assert_eq!((ready, miss), (None, false));
        let (w, d) = ra.fetched(ids[1], data(8)).unwrap();
        assert_eq!((w, d.unwrap()[0][0]), (3, 8));
    }

    #[test]
    fn a_write_drops_what_nobody_asked_for_and_holds_off_fetching() {
        let ra = ReadAhead::default();
        let ids = sequence(&ra);
        ra.fetched(ids[0], data(1));
        let (ready, _, _, more) = read(&ra, 2);
        assert_eq!(ready, Some(1));
        // The guest waits on the stretch at 3; then a write starts.
        let (_, miss, _, _) = read(&ra, 3);
        assert!(!miss);
        ra.write_started();
        assert_eq!(ra.held(), 0);
        assert!(ra.fetched(more[0], data(4)).is_none(), "4 was dropped");
        let (_, miss, fetch, _) = read(&ra, 4);
        assert!(miss, "the stretch at 4 was dropped by the write");
        assert!(fetch.is_empty(), "nothing fetched during a write");
        ra.write_ended();
        // The claimed stretch still reaches its reader.
        let (w, d) = ra.fetched(ids[1], data(3)).unwrap();
        assert_eq!((w, d.unwrap()[0][0]), (3, 3));
        let (_, _, fetch, _) = read(&ra, 5);
        assert_eq!(fetch, [6, 7], "fetching again after the write");
    }

    #[test]
    fn a_failed_fetch_sends_its_reader_the_ordinary_way_and_late_data_is_dropped() {
        let ra = ReadAhead::default();
        let ids = sequence(&ra);
        let (_, miss, _, _) = read(&ra, 2);
        assert!(!miss);
        assert_eq!(ra.fetched(ids[0], None), Some((2, None)));
        // The guest jumps elsewhere: the stretch at 3 is dropped, and its
        // data, when it comes, is not kept.
        let (_, miss, _, _) = read(&ra, 40);
        assert!(miss);
        assert!(ra.fetched(ids[1], data(0)).is_none());
        assert_eq!(ra.held(), 0);
    }

    #[test]
    fn old_data_is_not_used() {
        let ra = ReadAhead::default();
        let ids = sequence(&ra);
        ra.fetched(ids[0], data(1));
        if let Some(a) = ra.state.lock().unwrap().ahead.front_mut() {
            a.got = Got::Fetched(vec![vec![1]], Instant::now() - MAX_AGE * 2);
        }
        let (ready, miss, _, _) = read(&ra, 2);
        assert_eq!((ready, miss), (None, true), "too old: read again");
        assert_eq!(ra.served(), 0);
    }

    #[test]
    fn small_reads_and_the_disk_end_are_not_read_ahead() {
        let ra = ReadAhead::default();
        ra.read(0, 4096, SIZE, 0);
        assert!(ra.read(4096, 4096, SIZE, 0).fetch.is_empty());
        ra.read(SIZE - 2 * M, M, SIZE, 0);
        assert!(
            ra.read(SIZE - M, M, SIZE, 0).fetch.is_empty(),
            "past the end"
        );
    }
}
