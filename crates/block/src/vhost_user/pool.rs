//! Threads for the requests that wait on the disk, and a count of the
//! requests not yet answered (QEMU waits for none before migrating).

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
#[derive(Default)]
pub struct Inflight {
    count: Mutex<usize>,
    none: Condvar,
}

/// One request counted in [`Inflight`] until dropped.
pub struct InflightGuard(Arc<Inflight>);

impl Inflight {
    /// Counts one request until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
        InflightGuard(self.clone())
    }

    /// Blocks until no request is counted.
    pub fn wait_none(&self) {
        let Ok(mut n) = self.count.lock() else { return };
        while *n > 0 {
            n = match self.none.wait(n) {
                Ok(n) => n,
                Err(_) => return,
            };
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.count.lock() {
            *n -= 1;
            if *n == 0 {
                self.0.none.notify_all();
            }
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
