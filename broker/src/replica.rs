//! The replica manager: one partition replica on this node, the one owner of its state — its
//! log, what the metadata says about it (replicas, ISR, leader and epochs), every follower's
//! progress and the high watermark.
//!
//! Where things happen, each in one place:
//! - a write as leader, for produce and for the internal topics: [`Partition::append`] checks
//!   leadership and `min.insync.replicas`, appends, then waits for what `acks` asks (the ISR in
//!   [`Partition::wait_committed`], the group-commit fsync);
//! - a write as follower: [`Partition::append_as_follower`], and truncations on the same queue;
//! - the high watermark: [`Partition::advance_high_watermark`]; the ISR grows in
//!   [`Partition::follower_fetched`] and shrinks through [`Partition::lagging`] (the broker then
//!   asks the controller, which decides);
//! - segments roll inside the log's append (`strom_storage::Log`).
//!
//! Every write and every role change runs as a job on the log directory's writer thread, in the
//! order it was submitted. A role change therefore never lands between a leadership check and
//! the append it guards, and no lock is held across a system call: the async workers only ever
//! wait for the job's result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use parking_lot::{Mutex, RwLock};
use strom_raft::{BrokerId, PartitionState};
use strom_storage::io::Stopped;
use strom_storage::{AppendResult, Log, StorageError};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::lease::LeaderLease;

/// A follower as the leader sees it (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Its log end offset, from its last fetch (-1 before the first).
    log_end: i64,
    /// The last time it had everything the leader had.
    caught_up_at: Instant,
    /// The leader's log end and the time at its previous fetch.
    prev_leader_end: i64,
    prev_fetch_at: Instant,
}

/// How a metadata update changed this replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    BecameLeader,
    /// Follow `leader` from now on (also when only the epoch changed).
    BecameFollower {
        leader: BrokerId,
        epoch: i32,
    },
    /// No leader is available.
    Leaderless,
    /// Same leader and epoch, different ISR or replicas.
    Updated,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Arc<Log>,
    node_id: BrokerId,
    /// This broker's standing with the controller: without it, it leads nothing.
    lease: Arc<LeaderLease>,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for longer is out of sync.
    max_lag: Duration,
    state: RwLock<PartitionState>,
    progress: Mutex<HashMap<BrokerId, Progress>>,
    /// Followers an AlterPartition of ours is adding to the ISR. Until the controller answers,
    /// the high watermark waits for them as well (KIP-497's maximal ISR): should the change
    /// commit while its answer is still on the way, they may already be elected.
    joining: Mutex<Vec<BrokerId>>,
    /// An AlterPartition of ours is in flight: do not send another.
    pub(crate) alter_pending: AtomicBool,
    /// Bumped whenever the state changes, so waiting producers re-check leadership and ISR.
    changed: watch::Sender<u64>,
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        log: Arc<Log>,
        node_id: BrokerId,
        lease: Arc<LeaderLease>,
        max_lag: Duration,
    ) -> Self {
        Self {
            topic,
            index,
            log,
            node_id,
            lease,
            max_lag,
            state: RwLock::new(PartitionState {
                replicas: Vec::new(),
                isr: Vec::new(),
                leader: -1,
                leader_epoch: -1,
                partition_epoch: -1,
                adding: Vec::new(),
                removing: Vec::new(),
                emptied: Vec::new(),
            }),
            progress: Mutex::new(HashMap::new()),
            joining: Mutex::new(Vec::new()),
            alter_pending: AtomicBool::new(false),
            changed: watch::Sender::new(0),
        }
    }

    pub fn state(&self) -> PartitionState {
        self.state.read().clone()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.read().leader_epoch
    }

    pub fn is_leader(&self) -> bool {
        self.state.read().leader == self.node_id
    }

    /// The state, if this node leads the partition; NOT_LEADER_OR_FOLLOWER otherwise.
    pub fn leader_state(&self) -> Result<PartitionState, ApiError> {
        let st = self.state.read();
        if st.leader == self.node_id {
            Ok(st.clone())
        } else {
            Err(self.not_leader(&st))
        }
    }

    /// Refuses answers a client takes as current (records up to the high watermark, the
    /// watermarks themselves) once this broker's lease from the controller has lapsed: another
    /// replica may lead by now and have moved them on. Writes need no lease: a leader cut off
    /// from the controller cannot commit them (its followers stopped fetching from it or are
    /// cut off too, and only the controller can shrink the ISR).
    pub fn check_lease(&self) -> Result<(), ApiError> {
        if self.lease.valid() {
            Ok(())
        } else {
            Err(ApiError::new(
                ResponseError::NotLeaderOrFollower,
                "this broker has not reached the active controller within its lease: another \
                 replica may lead by now",
            ))
        }
    }

    /// Installs the state from a new metadata image. Blocks until the writer thread has run it
    /// (call it from a blocking thread): appends queued before it run at the old state, those
    /// queued after at the new one.
    pub fn apply(self: &Arc<Self>, new: &PartitionState) -> Transition {
        if *self.state.read() == *new {
            return Transition::Unchanged;
        }
        let this = self.clone();
        let new = new.clone();
        self.log
            .io()
            .run_blocking(move || this.apply_now(&new))
            .unwrap_or(Transition::Unchanged)
    }

    fn apply_now(&self, new: &PartitionState) -> Transition {
        let old = {
            let mut st = self.state.write();
            if *st == *new {
                return Transition::Unchanged;
            }
            std::mem::replace(&mut *st, new.clone())
        };
        self.changed.send_modify(|v| *v += 1);
        let me = self.node_id;
        let epoch_changed = old.leader_epoch != new.leader_epoch || old.leader != new.leader;
        if new.leader == me {
            if epoch_changed {
                self.become_leader(new);
                return Transition::BecameLeader;
            }
            self.advance_high_watermark();
            return Transition::Updated;
        }
        if new.leader < 0 {
            return Transition::Leaderless;
        }
        if epoch_changed {
            self.progress.lock().clear();
            return Transition::BecameFollower {
                leader: new.leader,
                epoch: new.leader_epoch,
            };
        }
        Transition::Updated
    }

    fn become_leader(&self, st: &PartitionState) {
        if let Err(e) = self.log.begin_epoch(st.leader_epoch) {
            tracing::error!(log = self.log.name(), error = %e, "could not record the leader epoch");
        }
        // Every ISR member gets a full lag window to show up, as in Kafka.
        let now = Instant::now();
        let mut progress = self.progress.lock();
        progress.clear();
        for r in st.replicas.iter().filter(|r| **r != self.node_id) {
            progress.insert(
                *r,
                Progress {
                    log_end: -1,
                    caught_up_at: now,
                    prev_leader_end: -1,
                    prev_fetch_at: now,
                },
            );
        }
        drop(progress);
        tracing::info!(
            topic = %self.topic,
            partition = self.index,
            epoch = st.leader_epoch,
            isr = ?st.isr,
            log_end = self.log.log_end_offset(),
            "became leader"
        );
        self.advance_high_watermark();
    }

    /// The high watermark is the smallest log end over the maximal ISR (the ISR plus members
    /// being added); it never goes backwards.
    pub fn advance_high_watermark(&self) {
        let st = self.state.read();
        if st.leader != self.node_id {
            return;
        }
        let mut hw = self.log.log_end_offset();
        let joining = self.joining.lock().clone();
        let progress = self.progress.lock();
        for r in st
            .isr
            .iter()
            .chain(joining.iter().filter(|j| !st.isr.contains(j)))
            .filter(|r| **r != self.node_id)
        {
            match progress.get(r) {
                Some(p) if p.log_end >= 0 => hw = hw.min(p.log_end),
                _ => return,
            }
        }
        drop(progress);
        drop(st);
        self.log.set_high_watermark(hw);
    }

    /// The one write path as leader (produce, the offsets topic, later transaction markers).
    /// The append is queued on the writer thread at once, so a connection's requests keep their
    /// order; there, leadership and, for `acks=-1`, `min.insync.replicas` are checked against
    /// the state no role change can alter before the append is done. The returned future then
    /// waits for what `acks` asks: nothing (0, 1), the ISR (-1), and the group-commit fsync
    /// when `flush.messages` is reached or `log.flush.acks.all` is set for `acks=-1`.
    pub fn append(
        self: &Arc<Self>,
        data: Bytes,
        acks: i16,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<AppendResult, ApiError>> + Send + 'static {
        let this = self.clone();
        let appended = self.log.io().submit(move || this.append_now(data, acks));
        let this = self.clone();
        async move {
            let r = appended.await.map_err(stopped)??;
            this.wait_for_acks(&r, acks, timeout).await?;
            Ok(r)
        }
    }

    fn append_now(&self, data: Bytes, acks: i16) -> Result<AppendResult, ApiError> {
        let st = self.state.read().clone();
        if st.leader != self.node_id {
            return Err(self.not_leader(&st));
        }
        if acks == -1 {
            let min_isr = self.min_isr();
            if self.in_sync_now(&st) < min_isr {
                return Err(ApiError::new(
                    ResponseError::NotEnoughReplicas,
                    format!(
                        "fewer in-sync replicas than min.insync.replicas={min_isr} (ISR {:?})",
                        st.isr
                    ),
                ));
            }
        }
        let result = self.log.append(data, st.leader_epoch)?;
        self.advance_high_watermark();
        Ok(result)
    }

    fn min_isr(&self) -> usize {
        self.log.config().min_insync_replicas.max(1) as usize
    }

    async fn wait_for_acks(
        &self,
        r: &AppendResult,
        acks: i16,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let end = r.last_offset + 1;
        let flush = r.flush_required || (acks == -1 && self.log.config().flush_on_acks_all);
        let flushed = async {
            if flush {
                self.log.wait_flushed(end).await.map_err(ApiError::from)
            } else {
                Ok(())
            }
        };
        if acks == -1 {
            let (c, f) = tokio::join!(self.wait_committed(end, self.min_isr(), timeout), flushed);
            c?;
            f
        } else {
            flushed.await
        }
    }

    /// Appends what the leader `leader` sent at `epoch` for a fetch at `fetch_offset`, if this
    /// replica still follows that leader at that epoch and its log still ends there; a stale
    /// response (leadership moved, or the log was truncated meanwhile) is dropped (`Ok(None)`).
    pub async fn append_as_follower(
        self: &Arc<Self>,
        leader: BrokerId,
        epoch: i32,
        fetch_offset: i64,
        data: Bytes,
    ) -> Result<Option<i64>, StorageError> {
        self.on_writer(move |p| {
            let st = p.state.read().clone();
            if st.leader != leader
                || st.leader_epoch != epoch
                || p.log.log_end_offset() != fetch_offset
            {
                return Ok(None);
            }
            p.log.append_replicated(&data).map(Some)
        })
        .await
    }

    /// Runs `f` on the log directory's writer thread, after every write queued before it.
    pub async fn on_writer<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Partition) -> Result<R, StorageError> + Send + 'static,
    ) -> Result<R, StorageError> {
        let this = self.clone();
        self.log
            .io()
            .submit(move || f(&this))
            .await
            .map_err(|Stopped| StorageError::Offline(self.log.name().to_owned()))?
    }

    fn not_leader(&self, st: &PartitionState) -> ApiError {
        ApiError::new(
            ResponseError::NotLeaderOrFollower,
            format!(
                "broker {} is not the leader of {}-{} (leader: {})",
                self.node_id, self.topic, self.index, st.leader
            ),
        )
    }

    /// A follower fetched from `fetch_offset`: it has everything below it. Returns the ISR
    /// it should join, when it has caught up but is not in it yet.
    pub fn follower_fetched(&self, follower: BrokerId, fetch_offset: i64) -> Option<Vec<BrokerId>> {
        let now = Instant::now();
        let leader_end = self.log.log_end_offset();
        {
            let mut progress = self.progress.lock();
            let p = progress.entry(follower).or_insert(Progress {
                log_end: -1,
                caught_up_at: now - Duration::from_secs(3600),
                prev_leader_end: -1,
                prev_fetch_at: now,
            });
            if fetch_offset >= leader_end {
                p.caught_up_at = now;
            } else if p.prev_leader_end >= 0 && fetch_offset >= p.prev_leader_end {
                p.caught_up_at = p.caught_up_at.max(p.prev_fetch_at);
            }
            p.prev_leader_end = leader_end;
            p.prev_fetch_at = now;
            p.log_end = fetch_offset;
        }
        self.advance_high_watermark();
        let st = self.state.read();
        if st.leader != self.node_id
            || st.isr.contains(&follower)
            || !st.replicas.contains(&follower)
        {
            return None;
        }
        // Join only with everything committed so far and at least the current epoch's start.
        let epoch_start = self.log.latest_epoch().map_or(0, |(_, o)| o);
        if fetch_offset >= self.log.high_watermark() && fetch_offset >= epoch_start {
            let mut isr = st.isr.clone();
            isr.push(follower);
            return Some(isr);
        }
        None
    }

    /// The ISR without the members (other than the leader) that have not caught up within
    /// `replica.lag.time.max.ms`, when that drops any: the broker asks the controller to shrink.
    pub fn lagging(&self) -> Option<Vec<BrokerId>> {
        let max_lag = self.max_lag;
        let st = self.state.read();
        if st.leader != self.node_id {
            return None;
        }
        let progress = self.progress.lock();
        let keep: Vec<BrokerId> = st
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.node_id
                    || progress
                        .get(r)
                        .is_some_and(|p| p.caught_up_at.elapsed() <= max_lag)
            })
            .collect();
        (keep.len() < st.isr.len()).then_some(keep)
    }

    /// ISR members known to be in sync right now: the leader plus followers that caught up
    /// within `replica.lag.time.max.ms`. Smaller than the ISR when followers died and the controller could not
    /// (yet) shrink it, e.g. without a quorum: acks=all is refused rather than left hanging.
    pub fn in_sync_now(&self, st: &PartitionState) -> usize {
        let progress = self.progress.lock();
        st.isr
            .iter()
            .filter(|r| {
                **r == self.node_id
                    || progress
                        .get(r)
                        .is_some_and(|p| p.caught_up_at.elapsed() <= self.max_lag)
            })
            .count()
    }

    /// Waits until everything below `end` is committed (acks=all). Fails when leadership is
    /// lost, when the ISR falls below `min_isr`, or at the deadline.
    pub async fn wait_committed(
        &self,
        end: i64,
        min_isr: usize,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut data = self.log.subscribe_end();
        let mut changed = self.changed.subscribe();
        loop {
            data.borrow_and_update();
            changed.borrow_and_update();
            let st = self.leader_state()?;
            if self.log.high_watermark() >= end {
                if st.isr.len() < min_isr {
                    return Err(ApiError::new(
                        ResponseError::NotEnoughReplicasAfterAppend,
                        format!(
                            "written, but the ISR {:?} is smaller than min.insync.replicas={min_isr}",
                            st.isr
                        ),
                    ));
                }
                return Ok(());
            }
            tokio::select! {
                r = data.changed() => if r.is_err() { return Err(ResponseError::NotLeaderOrFollower.into()) },
                r = changed.changed() => if r.is_err() { return Err(ResponseError::NotLeaderOrFollower.into()) },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ApiError::new(
                        ResponseError::RequestTimedOut,
                        format!("replicas did not confirm offset {} in time (ISR {:?})", end - 1, st.isr),
                    ));
                }
            }
        }
    }

    /// Our AlterPartition is on its way: members it adds count for the high watermark now.
    pub(crate) fn alter_started(&self, isr: &[BrokerId]) {
        *self.joining.lock() = isr.to_vec();
    }

    /// Our AlterPartition was refused or failed: members it would have added stop holding the
    /// high watermark back at once, but the next attempt waits `backoff`, so a refusal that
    /// persists cannot flood the metadata quorum.
    pub(crate) async fn alter_refused(&self, backoff: Duration) {
        self.joining.lock().clear();
        self.advance_high_watermark();
        tokio::time::sleep(backoff).await;
    }

    pub(crate) fn alter_done(&self) {
        self.joining.lock().clear();
        self.alter_pending.store(false, Ordering::Release);
        // Members that did not join stop holding the high watermark back.
        self.advance_high_watermark();
    }

    pub(crate) fn try_begin_alter(&self) -> bool {
        self.alter_pending
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The writer thread is gone: the node is shutting down.
fn stopped(_: Stopped) -> ApiError {
    ApiError::new(
        ResponseError::NotLeaderOrFollower,
        "the broker is shutting down",
    )
}
