//! Group commit. Producers that need durability register their log here and wait; one flusher
//! task takes every log that asked since its last round and fdatasyncs them concurrently, so one
//! fsync (~4 ms on this class of disk) covers every request that arrived while the previous one
//! ran, instead of one fsync per request.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::log::Log;

#[derive(Default)]
pub struct Flusher {
    /// Logs with waiters since the last round; deduplicated when the round starts.
    pending: Mutex<Vec<Arc<Log>>>,
    wake: Notify,
}

impl Flusher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Asks for `log` to be flushed in the next round.
    pub fn request(&self, log: Arc<Log>) {
        self.pending.lock().push(log);
        self.wake.notify_one();
    }

    /// Runs flush rounds until the returned future is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let mut logs = std::mem::take(&mut *self.pending.lock());
            logs.sort_by_key(|l| Arc::as_ptr(l) as usize);
            logs.dedup_by_key(|l| Arc::as_ptr(l) as usize);
            let jobs: Vec<_> = logs
                .into_iter()
                .map(|log| tokio::task::spawn_blocking(move || log.flush_now()))
                .collect();
            for job in jobs {
                // Errors are recorded on the log itself (it goes offline and wakes its waiters).
                let _ = job.await;
            }
        }
    }
}
