//! The broker: configuration, catalog, metadata quorum and shared services, plus the
//! background housekeeping (retention, time-based flushes, recovery-point checkpoints).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use parking_lot::RwLock;
use strom_raft::{Quorum, QuorumConfig, QuorumError};
use strom_storage::{DirIo, StorageError};
use tokio::sync::watch;

use crate::catalog::{Catalog, Topic};
use crate::config::BrokerConfig;
use crate::error::ApiError;
use crate::fetcher::Fetchers;
use crate::group::{self, Coordinator};
use crate::producer_ids::ProducerIds;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open data directory: {0}")]
    Storage(#[from] StorageError),
    #[error("metadata quorum: {0}")]
    Quorum(#[from] QuorumError),
    #[error("cannot start the control thread: {0}")]
    Control(std::io::Error),
}

/// The runtime of the metadata quorum and this broker's heartbeats: one thread of its own, so
/// client work on the main workers never delays an election or a heartbeat past its timeout.
/// It lives as long as the process.
pub fn control_runtime() -> std::io::Result<tokio::runtime::Handle> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    static INIT: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _once = INIT.lock();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("strom-control")
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    if let Err(rt) = RUNTIME.set(rt) {
        // Cannot happen under INIT; a runtime must not be dropped on an async thread.
        std::mem::forget(rt);
    }
    Ok(handle)
}

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub catalog: Catalog,
    pub quorum: Arc<Quorum>,
    pub producer_ids: ProducerIds,
    pub groups: Arc<Coordinator>,
    pub fetchers: Fetchers,
    /// Commits hold it shared from write to apply; compaction of the offsets topic holds it
    /// exclusively, so that no commit falls between its snapshot and the records it drops.
    pub offsets_gate: tokio::sync::RwLock<()>,
    /// The metadata offset the catalog has been reconciled with.
    pub(crate) reconciled: watch::Sender<u64>,
    /// Whether the controller has this broker fenced (starts fenced, as in Kafka).
    pub(crate) fenced: watch::Sender<bool>,
    /// Metadata offset of this process's registration (0 until it registered).
    pub(crate) registered_at: watch::Sender<u64>,
    pub(crate) shutting_down: AtomicBool,
    /// The Kafka listener is open (for `/readyz`).
    pub(crate) serving: AtomicBool,
    /// Offsets-topic partitions this node leads and has loaded: it coordinates their groups.
    pub(crate) coordinating: RwLock<HashSet<i32>>,
    /// Set when the node must stop: its log directory or metadata store failed.
    fatal: watch::Sender<Option<String>>,
    /// One writer of group membership at a time, so the log keeps the order of the changes.
    group_writer: tokio::sync::Mutex<()>,
}

impl Broker {
    /// Opens the data directory and joins the metadata quorum. Logs are opened (and
    /// recovered after a crash) as the metadata assigns them.
    pub async fn start(config: BrokerConfig) -> Result<Arc<Self>, StartError> {
        let config = Arc::new(config);
        let io = DirIo::start("log").map_err(|e| StorageError::Io {
            path: config.log_dir.clone(),
            source: e,
        })?;
        let catalog = {
            let config = config.clone();
            strom_storage::io::blocking(move || Catalog::open(config, io))
                .await
                .map_err(|e| StorageError::Offline(e.to_string()))??
        };
        let c = &config.cluster;
        let control = control_runtime().map_err(StartError::Control)?;
        let quorum_config = QuorumConfig {
            node_id: config.node_id.max(0) as u64,
            voters: c.voters.clone(),
            dir: config.log_dir.join("strom-raft"),
            listen: c.controller_listener.as_ref().and_then(|l| {
                let host = if l.host.is_empty() {
                    "0.0.0.0"
                } else {
                    &l.host
                };
                format!("{host}:{}", l.port).parse().ok()
            }),
            bind_ip: config.listener.host.parse::<IpAddr>().ok(),
            election_timeout_ms: c.election_timeout_ms,
            heartbeat_ms: (c.election_timeout_ms / 5).max(10),
            session_timeout_ms: c.session_timeout_ms,
            snapshot_every: c.snapshot_every,
            auto_leader_rebalance: c.auto_leader_rebalance,
            imbalance_check_ms: c.imbalance_check_ms,
            propose_timeout_ms: 10_000,
        };
        let quorum = control
            .spawn(Quorum::start(quorum_config))
            .await
            .map_err(|e| StartError::Control(std::io::Error::other(e.to_string())))??;
        let groups = Coordinator::new(config.group);
        let broker = Arc::new(Self {
            config,
            catalog,
            quorum,
            producer_ids: ProducerIds::default(),
            groups,
            fetchers: Fetchers::default(),
            offsets_gate: tokio::sync::RwLock::new(()),
            reconciled: watch::Sender::new(0),
            fenced: watch::Sender::new(true),
            registered_at: watch::Sender::new(0),
            shutting_down: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            coordinating: RwLock::new(HashSet::new()),
            fatal: watch::Sender::new(None),
            group_writer: tokio::sync::Mutex::new(()),
        });
        broker.start_cluster_tasks();
        Ok(broker)
    }

    /// Marks the Kafka listener open; `/readyz` reports ready from then on.
    pub fn set_serving(&self) {
        self.serving
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn cluster_id(&self) -> String {
        self.catalog.cluster_id()
    }

    /// The internal offsets topic, if it exists yet.
    pub fn offsets_topic(&self) -> Result<Arc<Topic>, ApiError> {
        self.catalog
            .get(group::store::TOPIC)
            .ok_or_else(|| kafka_protocol::error::ResponseError::CoordinatorNotAvailable.into())
    }

    /// Waits until the catalog reflects metadata offset `offset` (or the timeout passes).
    pub async fn wait_reconciled(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.reconciled.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|o| *o >= offset))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs the periodic tasks until the future is dropped.
    pub async fn run_background(self: Arc<Self>) {
        let retention = Duration::from_millis(self.config.retention_check_interval_ms.max(1));
        let checkpoint = Duration::from_millis(self.config.checkpoint_interval_ms.max(1));
        let mut retention_tick = tokio::time::interval(retention);
        let mut checkpoint_tick = tokio::time::interval(checkpoint);
        // flush.ms is per topic; checking every 100 ms bounds its lateness.
        let mut flush_tick = tokio::time::interval(Duration::from_millis(100));
        let mut group_tick = tokio::time::interval(group::TICK);
        for tick in [
            &mut retention_tick,
            &mut checkpoint_tick,
            &mut flush_tick,
            &mut group_tick,
        ] {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        // Group writes wait for replication; on their own task they never hold up the ISR
        // shrink that such a wait may depend on.
        let writer = {
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    let _ = tokio::time::timeout(group::TICK, this.groups.wake.notified()).await;
                    this.persist_groups().await;
                }
            })
        };
        let _abort_writer = AbortOnDrop(writer);
        loop {
            tokio::select! {
                _ = retention_tick.tick() => {
                    let this = self.clone();
                    let _ = strom_storage::io::blocking(move || this.apply_retention()).await;
                    self.expire_offsets().await;
                    self.compact_offsets().await;
                }
                _ = checkpoint_tick.tick() => {
                    let this = self.clone();
                    let _ = strom_storage::io::blocking(move || this.write_checkpoints()).await;
                }
                _ = flush_tick.tick() => {
                    for log in self.catalog.logs() {
                        log.flush_if_due();
                    }
                    self.shrink_lagging_isrs();
                    self.check_fatal();
                }
                _ = group_tick.tick() => self.groups.tick(),
            }
        }
    }

    /// A failed log directory or metadata store stops the node, as Kafka halts a broker whose
    /// only log directory failed: its replicas' files are in an unknown state (the kernel may
    /// have dropped unflushed pages), so its partitions must be led elsewhere and it must
    /// recover from disk before serving again. Serving on would keep leading partitions it
    /// cannot write, or act on metadata that no longer advances.
    fn check_fatal(&self) {
        if self.fatal.borrow().is_some() {
            return;
        }
        let reason = if let Some(log) = self.catalog.logs().into_iter().find(|l| l.is_offline()) {
            format!(
                "a write or fsync failed in {} (partition {}); check the disk, then restart the node: it recovers its logs from the last flush and rejoins",
                self.config.log_dir.display(),
                log.name()
            )
        } else if let Some(e) = self.quorum.fatal() {
            format!(
                "the metadata store in {} failed ({e}); check the disk, then restart the node",
                self.config.log_dir.join("strom-raft").display()
            )
        } else {
            return;
        };
        tracing::error!(reason = %reason, "stopping the node");
        self.fatal.send_replace(Some(reason));
    }

    /// Resolves with the reason once the node must stop (see [`Broker::check_fatal`]).
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone(),
            Err(_) => None,
        };
        match reason {
            Some(r) => r,
            // The sender lives as long as the broker: never dropped while awaited.
            None => std::future::pending().await,
        }
    }

    fn apply_retention(&self) {
        for log in self.catalog.logs() {
            let expired = log.expire_producers(self.config.producer_id_expiration_ms);
            if expired > 0 {
                tracing::debug!(log = log.name(), expired, "expired idle producer ids");
            }
            if let Err(e) = log.apply_retention() {
                tracing::error!(log = log.name(), error = %e, "retention failed");
            }
        }
    }

    /// Compaction of `__consumer_offsets` by snapshot: when a partition has grown past
    /// `offsets.topic.segment.bytes`, the current state of its groups (which the coordinator
    /// holds in full) is appended and made durable, then the log start moves to it, so whole
    /// old segments are deleted and start-up reads only live records.
    async fn compact_offsets(&self) {
        let Some(topic) = self.catalog.get(group::store::TOPIC) else {
            return;
        };
        let count = topic.partition_count();
        let threshold = self.config.offsets_segment_bytes;
        for p in topic.local_partitions() {
            // Only the loaded coordinator knows every live group of the partition: compacting
            // before the load (or after losing it) would rewrite nothing and drop everything.
            let coordinating = || p.is_leader() && self.coordinating.read().contains(&p.index);
            if p.log.size_bytes() < threshold || !coordinating() {
                continue;
            }
            let _gate = self.offsets_gate.write().await;
            if !coordinating() {
                continue;
            }
            let start = p.log.log_end_offset();
            let mut ok = true;
            for (group, offsets, membership) in self.groups.state_of_partition(p.index, count) {
                let written = match group::store::write(self, &group, &offsets).await {
                    Ok(()) => match &membership {
                        Some(m) => group::store::write_group(self, &group, Some(m)).await,
                        None => Ok(()),
                    },
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    tracing::warn!(group = %group, error = ?e, "offsets compaction stopped");
                    ok = false;
                    break;
                }
            }
            let end = p.log.log_end_offset();
            if ok
                && p.log.wait_flushed(end).await.is_ok()
                && p.log.high_watermark() >= end
                && coordinating()
            {
                match p.on_writer(move |p| p.log.delete_records(start)).await {
                    Ok(low) => {
                        tracing::info!(log = p.log.name(), low, "compacted committed offsets")
                    }
                    Err(e) => {
                        tracing::warn!(log = p.log.name(), error = %e, "offsets compaction could not move the log start")
                    }
                }
            }
        }
    }

    /// Writes membership changes to the offsets topic in the order they happened, and tells
    /// the coordinator when an assignment that SyncGroup answers wait for is durable.
    pub async fn persist_groups(&self) {
        let _one_writer = self.group_writer.lock().await;
        for w in self.groups.take_dirty() {
            let result = group::store::write_group(self, &w.group, w.snapshot.as_ref()).await;
            if let Err(e) = &result {
                tracing::warn!(group = %w.group, error = ?e, "could not store group metadata");
            }
            if let Some(generation) = w.completes {
                let result = result.map_err(|e| match e.code {
                    ResponseError::NotCoordinator => e.code,
                    _ => ResponseError::CoordinatorNotAvailable,
                });
                self.groups.stored(&w.group, generation, result);
            }
        }
    }

    /// Deletes committed offsets of empty groups past `offsets.retention.minutes`.
    async fn expire_offsets(&self) {
        for (group, keys) in self
            .groups
            .expired_offsets(self.config.offsets_retention_ms)
        {
            let tombstones: Vec<_> = keys.into_iter().map(|k| (k, None)).collect();
            match group::store::write(self, &group, &tombstones).await {
                Ok(()) => {
                    tracing::info!(group = %group, offsets = tombstones.len(), "expired committed offsets");
                    self.groups.apply_commits(&group, &tombstones);
                }
                Err(e) => tracing::warn!(group = %group, error = ?e, "could not expire offsets"),
            }
        }
    }

    fn write_checkpoints(&self) {
        for log in self.catalog.logs() {
            if let Err(e) = log.write_checkpoint() {
                tracing::error!(log = log.name(), error = %e, "checkpoint failed");
            }
        }
    }

    /// Flushes and closes every log and marks the shutdown clean.
    pub fn close(&self) -> Result<(), StorageError> {
        self.fetchers.stop_all();
        self.catalog.close()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
