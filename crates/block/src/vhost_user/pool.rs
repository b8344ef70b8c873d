//! Threads for the requests that wait on the disk, and a count of the
//! requests not yet answered (QEMU waits for none before migrating).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};

/// Work for a pool thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running jobs in arrival order; they end when the
/// pool is dropped and the queue is empty.
pub struct Pool {
    tx: Mutex<Sender<Job>>,
}

impl Pool {
    /// Starts `threads` threads (at least one) named `name`.
    pub fn new(name: &str, threads: usize) -> Pool {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            if let Err(e) = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || work(&rx))
            {
                tracing::error!("cannot start an I/O thread: {e}");
            }
        }
        Pool { tx: Mutex::new(tx) }
    }

    /// Queues `job`; run here if no thread can take it.
    pub fn run(&self, job: Job) {
        let refused = match self.tx.lock() {
            Ok(tx) => tx.send(job).err().map(|e| e.0),
            Err(_) => Some(job),
        };
        if let Some(job) = refused {
            job();
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Requests taken from the queues and not yet answered.
///
/// Counted with atomics: a request enters and leaves on the hot path of
/// every I/O, and a condition variable's signal is a system call even with
/// nobody waiting, so it is sent only when someone does (migration's drain).
#[derive(Default)]
pub struct Inflight {
    count: AtomicUsize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    none: Condvar,
}

/// One request counted in [`Inflight`] until dropped.
pub struct InflightGuard(Arc<Inflight>);

impl Inflight {
    /// Counts one request until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InflightGuard(self.clone())
    }

    /// Blocks until no request is counted.
    pub fn wait_none(&self) {
        // SeqCst on both sides: either the last guard sees this waiter, or
        // this waiter sees the count at zero.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.count.load(Ordering::SeqCst) > 0 {
            held = self.none.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        drop(held);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let last = self.0.count.fetch_sub(1, Ordering::SeqCst) == 1;
        if last && self.0.waiters.load(Ordering::SeqCst) > 0 {
            // Taken so the signal cannot fall between a waiter's check of
            // the count and its wait.
            let _held = self.0.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.0.none.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_run_and_waiting_for_none_waits() {
        let pool = Pool::new("test-pool", 2);
        let inflight = Arc::new(Inflight::default());
        let (tx, rx) = channel();
        for i in 0..8 {
            let (g, tx) = (inflight.enter(), tx.clone());
            pool.run(Box::new(move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(i).unwrap();
                drop(g);
            }));
        }
        inflight.wait_none();
        let mut got: Vec<i32> = rx.try_iter().collect();
        got.sort();
        assert_eq!(
            got,
            (0..8).collect::<Vec<_>>(),
            "all done before wait_none returned"
        );
    }
}
