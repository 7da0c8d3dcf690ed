//! Follower replication: one fetcher task per leader broker, pulling every partition this
//! node follows from that leader with the Kafka Fetch protocol (replica id set), as Kafka's
//! ReplicaFetcherThread does. Before fetching at a new leader epoch, a follower asks the
//! leader where its last epoch ended (OffsetForLeaderEpoch) and truncates divergent history.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId as KBrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName,
};
use parking_lot::Mutex;
use strom_raft::BrokerId;
use tokio::sync::Notify;

use crate::broker::Broker;
use crate::client::Conn;
use crate::handlers::s;
use crate::replica::Partition;

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;

struct Followed {
    partition: Arc<Partition>,
    epoch: i32,
    /// Must reconcile with the leader (OffsetForLeaderEpoch) before fetching.
    truncate: bool,
}

struct Fetcher {
    leader: BrokerId,
    partitions: Mutex<BTreeMap<(String, i32), Followed>>,
    wake: Notify,
    stopped: AtomicBool,
}

#[derive(Default)]
pub struct Fetchers {
    by_leader: Mutex<HashMap<BrokerId, Arc<Fetcher>>>,
}

fn key(p: &Partition) -> (String, i32) {
    (p.topic.clone(), p.index)
}

impl Fetchers {
    /// Follows `partition` from `leader` at `epoch` (truncating first).
    pub fn follow(
        &self,
        broker: &Arc<Broker>,
        partition: Arc<Partition>,
        leader: BrokerId,
        epoch: i32,
    ) {
        let k = key(&partition);
        let mut by_leader = self.by_leader.lock();
        for (l, f) in by_leader.iter() {
            if *l != leader {
                f.partitions.lock().remove(&k);
            }
        }
        let fetcher = by_leader.entry(leader).or_insert_with(|| {
            let f = Arc::new(Fetcher {
                leader,
                partitions: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
                stopped: AtomicBool::new(false),
            });
            tokio::spawn(run(Arc::downgrade(broker), f.clone()));
            f
        });
        fetcher.partitions.lock().insert(
            k,
            Followed {
                partition,
                epoch,
                truncate: true,
            },
        );
        fetcher.wake.notify_one();
    }

    /// Stops following `partition` (it became leader, leaderless or was removed).
    pub fn unfollow(&self, partition: &Partition) {
        self.unfollow_key(&partition.topic, partition.index);
    }

    pub fn unfollow_key(&self, topic: &str, index: i32) {
        let k = (topic.to_owned(), index);
        for f in self.by_leader.lock().values() {
            f.partitions.lock().remove(&k);
        }
    }

    pub fn stop_all(&self) {
        for (_, f) in self.by_leader.lock().drain() {
            f.stopped.store(true, Ordering::Release);
            f.wake.notify_one();
        }
    }

    /// Partitions followed, for tests and metrics: (topic, partition, leader).
    pub fn followed(&self) -> Vec<(String, i32, BrokerId)> {
        let mut out = Vec::new();
        for f in self.by_leader.lock().values() {
            for (t, p) in f.partitions.lock().keys() {
                out.push((t.clone(), *p, f.leader));
            }
        }
        out
    }
}

async fn run(broker: Weak<Broker>, f: Arc<Fetcher>) {
    let mut conn: Option<Conn> = None;
    loop {
        if f.stopped.load(Ordering::Acquire) {
            return;
        }
        let Some(b) = broker.upgrade() else { return };
        let backoff = Duration::from_millis(b.config.cluster.replica_fetch_backoff_ms.max(50));
        if f.partitions.lock().is_empty() {
            drop(b);
            let _ = tokio::time::timeout(Duration::from_secs(1), f.wake.notified()).await;
            continue;
        }
        if conn.is_none() {
            let image = b.quorum.image();
            let Some(reg) = image.brokers.get(&f.leader) else {
                drop(b);
                tokio::time::sleep(backoff).await;
                continue;
            };
            let addr = format!("{}:{}", reg.endpoint.host, reg.endpoint.port);
            let bind: Option<IpAddr> = b.config.listener.host.parse().ok();
            match Conn::connect(
                &addr,
                bind,
                format!("strom-replica-{}", b.node_id()),
                Duration::from_secs(3),
            )
            .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(leader = f.leader, %addr, error = %e, "cannot reach leader");
                    drop(b);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let result = match truncate_diverged(&b, &f, c).await {
            Ok(()) => fetch_once(&b, &f, c).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(true) => {}
            Ok(false) => {
                drop(b);
                tokio::time::sleep(backoff.min(Duration::from_millis(200))).await;
            }
            Err(e) => {
                tracing::debug!(leader = f.leader, error = %e, "replica fetch failed; reconnecting");
                conn = None;
                drop(b);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// KIP-101/279: for each partition at a new epoch, find where our last epoch ended on the
/// leader and cut everything after it.
async fn truncate_diverged(b: &Arc<Broker>, f: &Fetcher, conn: &mut Conn) -> std::io::Result<()> {
    let wanted: Vec<(String, i32, i32, Arc<Partition>)> = f
        .partitions
        .lock()
        .values()
        .filter(|p| p.truncate)
        .map(|p| {
            (
                p.partition.topic.clone(),
                p.partition.index,
                p.epoch,
                p.partition.clone(),
            )
        })
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut by_topic: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut untouched = Vec::new();
    for (topic, index, epoch, p) in &wanted {
        match p.log.latest_epoch() {
            Some((last, _)) => by_topic.entry(topic.clone()).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(*index)
                    .with_current_leader_epoch(*epoch)
                    .with_leader_epoch(last),
            ),
            // An empty log (or one written before epochs were recorded): nothing to compare,
            // fall back to Kafka's pre-KIP-101 rule of cutting at the high watermark.
            None => untouched.push((topic.clone(), *index, *epoch, p.clone())),
        }
    }
    for (topic, index, epoch, p) in untouched {
        let hw = p.log.high_watermark();
        if p.log.log_end_offset() > hw {
            if let Err(e) = p.on_writer(move |p| p.log.truncate_to(hw)).await {
                tracing::error!(log = p.log.name(), error = %e, "truncation failed");
                continue;
            }
        }
        mark_truncated(f, &topic, index, epoch);
    }
    if by_topic.is_empty() {
        return Ok(());
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(KBrokerId(b.node_id()))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, parts)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(s(t)))
                        .with_partitions(parts)
                })
                .collect(),
        );
    let resp = conn
        .call(EPOCH_VERSION, &req, Duration::from_secs(10))
        .await?;
    for t in resp.topics {
        for r in t.partitions {
            let topic = t.topic.as_str().to_owned();
            let Some((_, _, epoch, p)) = wanted
                .iter()
                .find(|(tn, i, ..)| *tn == topic && *i == r.partition)
            else {
                continue;
            };
            if r.error_code != 0 {
                tracing::debug!(
                    log = p.log.name(),
                    error = r.error_code,
                    "leader epoch lookup refused; retrying"
                );
                continue;
            }
            let end = if r.leader_epoch < 0 || r.end_offset < 0 {
                p.log.high_watermark()
            } else {
                // KIP-279: the leader's answer may name an older epoch than ours; cut at the
                // smaller of its end offset and where that epoch ends locally.
                let (_, local_end) = p.log.end_offset_for_epoch(r.leader_epoch);
                r.end_offset.min(if local_end < 0 {
                    r.end_offset
                } else {
                    local_end
                })
            };
            if end <= p.log.log_end_offset() {
                if end < p.log.log_end_offset() {
                    tracing::info!(
                        log = p.log.name(),
                        from = p.log.log_end_offset(),
                        to = end,
                        leader_epoch = r.leader_epoch,
                        "truncating divergent history"
                    );
                }
                // Also at the log end: epochs begun there that the leader lacks must go.
                if let Err(e) = p.on_writer(move |p| p.log.truncate_to(end)).await {
                    tracing::error!(log = p.log.name(), error = %e, "truncation failed");
                    continue;
                }
            }
            mark_truncated(f, &topic, r.partition, *epoch);
        }
    }
    Ok(())
}

fn mark_truncated(f: &Fetcher, topic: &str, index: i32, epoch: i32) {
    if let Some(p) = f.partitions.lock().get_mut(&(topic.to_owned(), index)) {
        if p.epoch == epoch {
            p.truncate = false;
        }
    }
}

/// One fetch round. Ok(false) when there was nothing to fetch, every partition errored, or an
/// append failed (the caller backs off).
async fn fetch_once(b: &Arc<Broker>, f: &Fetcher, conn: &mut Conn) -> std::io::Result<bool> {
    let cfg = &b.config.cluster;
    // (partition, epoch, fetch offset): a response is applied only where all three still hold.
    let parts: Vec<(Arc<Partition>, i32, i64)> = f
        .partitions
        .lock()
        .values()
        .filter(|p| !p.truncate)
        .map(|p| {
            (
                p.partition.clone(),
                p.epoch,
                p.partition.log.log_end_offset(),
            )
        })
        .collect();
    if parts.is_empty() {
        return Ok(false);
    }
    let mut by_topic: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
    for (p, epoch, offset) in &parts {
        by_topic.entry(p.topic.clone()).or_default().push(
            FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(*epoch)
                .with_fetch_offset(*offset)
                .with_last_fetched_epoch(p.log.latest_epoch().map_or(-1, |(e, _)| e))
                .with_log_start_offset(p.log.log_start_offset())
                .with_partition_max_bytes(cfg.replica_fetch_max_bytes),
        );
    }
    let req = FetchRequest::default()
        .with_replica_id(KBrokerId(b.node_id()))
        .with_max_wait_ms(cfg.replica_fetch_wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(cfg.replica_fetch_response_max_bytes)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(s(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let wait = Duration::from_millis(cfg.replica_fetch_wait_max_ms.max(0) as u64)
        + Duration::from_secs(10);
    let resp = conn.call(FETCH_VERSION, &req, wait).await?;
    if resp.error_code != 0 {
        return Ok(false);
    }
    let mut progressed = false;
    // A failing disk (ENOSPC) fails every round the same way: back off instead of spinning.
    let mut append_failed = false;
    let mut appended = Vec::new();
    for t in resp.responses {
        for r in t.partitions {
            let Some((p, epoch, offset)) = parts
                .iter()
                .find(|(p, ..)| p.topic == t.topic.as_str() && p.index == r.partition_index)
            else {
                continue;
            };
            if !still_follows(f, p, *epoch) {
                continue;
            }
            match ResponseError::try_from_code(r.error_code) {
                None if r.diverging_epoch.epoch >= 0 => {
                    // KIP-320: our last epoch ends earlier on the leader; cut there (KIP-279:
                    // or where that epoch ends locally, if sooner) and fetch again.
                    let (_, local_end) = p.log.end_offset_for_epoch(r.diverging_epoch.epoch);
                    let end = if local_end < 0 {
                        r.diverging_epoch.end_offset
                    } else {
                        r.diverging_epoch.end_offset.min(local_end)
                    };
                    tracing::info!(
                        log = p.log.name(),
                        from = p.log.log_end_offset(),
                        to = end,
                        leader_epoch = r.diverging_epoch.epoch,
                        "leader reports diverging history: truncating"
                    );
                    if let Err(e) = p.on_writer(move |p| p.log.truncate_to(end)).await {
                        tracing::error!(log = p.log.name(), error = %e, "truncation failed");
                        set_truncate(f, p, *epoch);
                    }
                    progressed = true;
                }
                None => {
                    let data = r.records.unwrap_or_default();
                    if !data.is_empty() {
                        match p.append_as_follower(f.leader, *epoch, *offset, data).await {
                            Ok(Some(end)) => {
                                progressed = true;
                                appended.push((p.log.clone(), end));
                            }
                            // Leadership or the log moved while the fetch was out: drop it.
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!(log = p.log.name(), error = %e, "could not append replicated data; re-checking with the leader");
                                set_truncate(f, p, *epoch);
                                append_failed = true;
                                continue;
                            }
                        }
                    } else {
                        progressed = true;
                    }
                    p.log
                        .set_high_watermark(r.high_watermark.min(p.log.log_end_offset()));
                    let start = r.log_start_offset;
                    if start > p.log.log_start_offset() && start <= p.log.high_watermark() {
                        let _ = p.on_writer(move |p| p.log.delete_records(start)).await;
                    }
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    let ours = p.log.log_end_offset();
                    if ours < r.log_start_offset {
                        // The leader no longer has what comes next for us: start over at its
                        // log start.
                        tracing::warn!(
                            log = p.log.name(),
                            ours,
                            leader_start = r.log_start_offset,
                            "follower is behind the leader's log start; resetting"
                        );
                        let start = r.log_start_offset;
                        if let Err(e) = p.on_writer(move |p| p.log.reset_to(start)).await {
                            tracing::error!(log = p.log.name(), error = %e, "reset failed");
                        }
                    } else {
                        set_truncate(f, p, *epoch);
                    }
                }
                Some(e) => {
                    tracing::debug!(log = p.log.name(), error = ?e, "leader refused the fetch; waiting for metadata");
                }
            }
        }
    }
    // The next fetch reports our log end as our position, and the leader counts it toward the
    // high watermark: with `log.flush.acks.all` that position must be on disk here too, or an
    // acknowledged write could be lost when every replica loses power at once.
    let flushes = appended
        .into_iter()
        .filter(|(log, _)| log.config().flush_on_acks_all)
        .map(|(log, end)| async move {
            if let Err(e) = log.wait_flushed(end).await {
                tracing::error!(log = log.name(), error = %e, "replica flush failed");
            }
        });
    futures::future::join_all(flushes).await;
    Ok(progressed && !append_failed)
}

/// Whether this fetcher still follows `p` at `epoch` with no truncation pending (metadata may
/// have moved while the fetch was out).
fn still_follows(f: &Fetcher, p: &Partition, epoch: i32) -> bool {
    f.partitions
        .lock()
        .get(&key(p))
        .is_some_and(|x| x.epoch == epoch && !x.truncate && Arc::ptr_eq(&x.partition.log, &p.log))
}

fn set_truncate(f: &Fetcher, p: &Partition, epoch: i32) {
    if let Some(x) = f.partitions.lock().get_mut(&key(p)) {
        if x.epoch == epoch {
            x.truncate = true;
        }
    }
}
