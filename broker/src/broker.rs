//! The broker: configuration, catalog and shared services, plus the background housekeeping
//! (retention, time-based flushes, recovery-point checkpoints).

use std::sync::Arc;
use std::time::Duration;

use strom_storage::{Flusher, StorageError};

use crate::catalog::{Catalog, Topic};
use crate::config::BrokerConfig;
use crate::error::ApiError;
use crate::group::{self, Coordinator};
use crate::producer_ids::ProducerIds;

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub catalog: Catalog,
    pub producer_ids: ProducerIds,
    pub flusher: Arc<Flusher>,
    pub groups: Arc<Coordinator>,
    /// Commits hold it shared from write to apply; compaction of the offsets topic holds it
    /// exclusively, so that no commit falls between its snapshot and the records it drops.
    pub offsets_gate: tokio::sync::RwLock<()>,
}

impl Broker {
    /// Opens the data directory (recovering logs if the last run crashed).
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, StorageError> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.log_dir).map_err(|source| StorageError::Io {
            path: config.log_dir.clone(),
            source,
        })?;
        let flusher = Flusher::new();
        let catalog = Catalog::open(config.clone(), flusher.clone())?;
        let producer_ids =
            ProducerIds::open(config.log_dir.join("strom-meta").join("producer-ids"))?;
        let groups = Coordinator::new(config.group);
        groups.load(group::store::load(&catalog));
        Ok(Arc::new(Self {
            config,
            catalog,
            producer_ids,
            flusher,
            groups,
            offsets_gate: tokio::sync::RwLock::new(()),
        }))
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The internal offsets topic, created on first use.
    pub fn offsets_topic(&self) -> Result<Arc<Topic>, ApiError> {
        group::store::topic(
            &self.catalog,
            self.config.offsets_topic_partitions,
            self.config.offsets_segment_bytes,
        )
    }

    /// Runs the flusher and the periodic tasks until the future is dropped.
    pub async fn run_background(self: Arc<Self>) {
        let flusher = tokio::spawn(self.flusher.clone().run());
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
        let _abort_flusher = AbortOnDrop(flusher);
        loop {
            tokio::select! {
                _ = retention_tick.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.apply_retention()).await;
                    self.expire_offsets().await;
                    self.compact_offsets().await;
                }
                _ = checkpoint_tick.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.write_checkpoints()).await;
                }
                _ = flush_tick.tick() => {
                    for log in self.catalog.logs() {
                        log.flush_if_due();
                    }
                }
                _ = group_tick.tick() => {
                    self.groups.tick();
                    self.persist_groups().await;
                }
            }
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
        let partitions = topic.partitions.read().clone();
        for p in partitions {
            if p.log.size_bytes() < threshold {
                continue;
            }
            let _gate = self.offsets_gate.write().await;
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
            if ok && p.log.wait_flushed(end).await.is_ok() {
                match p.log.delete_records(start) {
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

    /// Writes membership changes of the last tick to the offsets topic.
    pub async fn persist_groups(&self) {
        for (group, snapshot) in self.groups.take_dirty() {
            if let Err(e) = group::store::write_group(self, &group, snapshot.as_ref()).await {
                tracing::warn!(group = %group, error = ?e, "could not store group metadata");
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
        self.catalog.close()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
