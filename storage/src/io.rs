//! Where a log directory's disk I/O runs: never on an async worker. A slow disk must slow the
//! partitions on it, not the node's heartbeats, controller work or other connections, and on a
//! two-core machine two appends stuck in ext4 writeback would otherwise stop both workers.
//!
//! Each log directory has one writer thread that runs its jobs (appends as leader and follower,
//! truncations, leader-epoch changes, log-start moves) one at a time in submission order, so a
//! produce request's appends keep the order they were submitted in and a role change never
//! lands in the middle of an append. Its flusher thread runs the group-commit fsyncs beside it.
//! Reads go to tokio's blocking pool through [`blocking`].
//!
//! [`assert_blocking_allowed`] is the check: every log method that may touch a file calls it, and
//! in debug builds (the whole test suite) it panics on a thread that is running async tasks.

use std::cell::Cell;
use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::log::Log;

thread_local! {
    /// Set on the threads this module starts and inside [`blocking`] jobs.
    static DISK_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Set on writer threads only.
    static WRITER: Cell<bool> = const { Cell::new(false) };
}

/// Whether a blocking file-system call is acceptable on this thread: any thread outside a tokio
/// runtime (tools, tests, start-up), and the threads set aside for disk work.
pub fn blocking_allowed() -> bool {
    DISK_THREAD.get() || tokio::runtime::Handle::try_current().is_err()
}

/// Debug builds (the whole test suite) abort the process when `what`, a blocking file-system
/// call, is about to run on an async worker thread: a panic would only end the task that made
/// the call, and the tests could pass without noticing.
#[track_caller]
pub fn assert_blocking_allowed(what: &str) {
    if cfg!(debug_assertions) && !blocking_allowed() {
        eprintln!(
            "{what} at {}: blocking file-system call on an async worker thread\n{}",
            std::panic::Location::caller(),
            std::backtrace::Backtrace::force_capture()
        );
        std::process::abort();
    }
}

/// Runs `f` on tokio's blocking pool, marked as a thread where disk I/O is allowed.
pub fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> tokio::task::JoinHandle<R> {
    tokio::task::spawn_blocking(move || {
        DISK_THREAD.set(true);
        f()
    })
}

/// The writer thread went away (the process is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the log directory's writer thread has stopped")]
pub struct Stopped;

type Job = Box<dyn FnOnce() + Send>;

/// A log directory's I/O threads.
pub struct DirIo {
    jobs: Mutex<mpsc::Sender<Job>>,
    flusher: Arc<FlushQueue>,
}

impl DirIo {
    /// Starts the writer and flusher threads for the log directory called `name`.
    pub fn start(name: &str) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("strom-write-{name}"))
            .spawn(move || {
                DISK_THREAD.set(true);
                WRITER.set(true);
                // Ends when the last sender (the DirIo) is dropped.
                while let Ok(job) = rx.recv() {
                    // A bug in one job fails that job (its caller sees `Stopped`), not every
                    // partition on the directory.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                        tracing::error!("a log writer job panicked; its request failed");
                    }
                }
            })?;
        let flusher = Arc::new(FlushQueue::default());
        let queue = flusher.clone();
        std::thread::Builder::new()
            .name(format!("strom-flush-{name}"))
            .spawn(move || {
                DISK_THREAD.set(true);
                queue.run();
            })?;
        Ok(Arc::new(Self {
            jobs: Mutex::new(tx),
            flusher,
        }))
    }

    /// Queues `f` on the writer thread now (jobs run in the order they were queued) and returns
    /// a future of its result. Queue before any await when order matters.
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, Stopped>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .is_ok();
        async move {
            if !sent {
                return Err(Stopped);
            }
            rx.await.map_err(|_| Stopped)
        }
    }

    /// Runs `f` on the writer thread and blocks this (non-async) thread until it is done.
    pub fn run_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Stopped> {
        if WRITER.get() {
            // Already on the writer thread: queueing would wait for ourselves.
            return Ok(f());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .lock()
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| Stopped)?;
        rx.recv().map_err(|_| Stopped)
    }

    /// Asks for `log` to be fsynced in the flusher's next round.
    pub(crate) fn request_flush(&self, log: Arc<Log>) {
        self.flusher.request(log);
    }
}

impl Drop for DirIo {
    fn drop(&mut self) {
        self.flusher.stop();
    }
}

/// Group commit: logs with waiting producers queue here; each round fsyncs every log that asked
/// since the previous one, so one fsync (~4 ms on this class of disk) covers every request that
/// arrived while the previous round ran.
#[derive(Default)]
struct FlushQueue {
    state: Mutex<FlushState>,
    wake: Condvar,
}

#[derive(Default)]
struct FlushState {
    pending: Vec<Arc<Log>>,
    stopped: bool,
}

impl FlushQueue {
    fn request(&self, log: Arc<Log>) {
        self.state.lock().pending.push(log);
        self.wake.notify_one();
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_one();
    }

    fn run(&self) {
        loop {
            let mut logs = {
                let mut st = self.state.lock();
                while st.pending.is_empty() && !st.stopped {
                    self.wake.wait(&mut st);
                }
                if st.stopped {
                    return;
                }
                std::mem::take(&mut st.pending)
            };
            logs.sort_by_key(|l| Arc::as_ptr(l) as usize);
            logs.dedup_by_key(|l| Arc::as_ptr(l) as usize);
            // Errors are recorded on the log itself (it goes offline and wakes its waiters).
            match logs.as_slice() {
                [one] => {
                    let _ = one.flush_now();
                }
                // Several partitions: their fsyncs overlap, as the disk can merge them.
                many => std::thread::scope(|s| {
                    for log in many {
                        s.spawn(|| {
                            DISK_THREAD.set(true);
                            let _ = log.flush_now();
                        });
                    }
                }),
            }
        }
    }
}
