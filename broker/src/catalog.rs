//! The topic catalog of a single node: topics with stable ids, their partitions' logs, topic
//! config overrides and dynamic broker configs, persisted as small JSON files under
//! `<log.dirs>/strom-meta/` (the cluster issue moves this state into the Raft quorum).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use strom_storage::{Flusher, Log, StorageError};
use uuid::Uuid;

use crate::config::{self, BrokerConfig};
use crate::error::ApiError;

/// Marker written at clean shutdown; its absence at start means logs need recovery.
const CLEAN_SHUTDOWN: &str = ".strom-clean-shutdown";
const META_DIR: &str = "strom-meta";
const MAX_TOPIC_NAME: usize = 249;

/// One partition on this node (always its leader on a single node).
pub struct Partition {
    pub index: i32,
    pub log: Arc<Log>,
    pub leader_epoch: i32,
}

pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: RwLock<Vec<Arc<Partition>>>,
    /// Topic-level config overrides (only keys that were set).
    pub configs: RwLock<BTreeMap<String, String>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.read().get(i).cloned())
    }

    pub fn partition_count(&self) -> i32 {
        self.partitions.read().len() as i32
    }

    /// Kafka's internal topics: only the broker writes them. Other names starting with `__`
    /// are ordinary topics, as in Kafka.
    pub fn is_internal(&self) -> bool {
        matches!(
            self.name.as_str(),
            "__consumer_offsets" | "__transaction_state"
        )
    }
}

#[derive(Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

pub struct Catalog {
    broker: Arc<BrokerConfig>,
    meta_dir: PathBuf,
    flusher: Arc<Flusher>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    by_id: RwLock<HashMap<Uuid, Arc<Topic>>>,
    /// Broker-scope configs set at runtime (IncrementalAlterConfigs), persisted.
    dynamic: RwLock<BTreeMap<String, String>>,
    /// Serialises create, delete and repartition so two requests never race on one topic.
    admin: Mutex<()>,
    pub cluster_id: String,
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::new(
            ResponseError::InvalidTopicException,
            format!("topic name `{name}` is invalid: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are reserved");
    }
    if name.len() > MAX_TOPIC_NAME {
        return bad("it is longer than 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<(), StorageError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| StorageError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    strom_storage::write_atomic(path, &text)
}

impl Catalog {
    /// Loads every topic and opens its partition logs, recovering them when the previous run
    /// did not shut down cleanly.
    pub fn open(broker: Arc<BrokerConfig>, flusher: Arc<Flusher>) -> Result<Self, StorageError> {
        let root = broker.log_dir.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Io { path, source }
        };
        let meta_dir = root.join(META_DIR);
        // A brand-new data directory has nothing to recover.
        let fresh = !meta_dir.exists();
        std::fs::create_dir_all(meta_dir.join("topics")).map_err(io(&meta_dir))?;
        let cluster_id = Self::load_cluster_id(&root, broker.node_id)?;
        let marker = root.join(CLEAN_SHUTDOWN);
        let clean = fresh || marker.exists();
        if marker.exists() {
            std::fs::remove_file(&marker).map_err(io(&marker))?;
        }
        if !clean {
            tracing::info!(dir = %root.display(), "no clean-shutdown marker: recovering logs");
        }
        let dynamic: BTreeMap<String, String> = std::fs::read(meta_dir.join("broker-configs.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let catalog = Self {
            broker,
            meta_dir,
            flusher,
            topics: RwLock::new(HashMap::new()),
            by_id: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(dynamic),
            admin: Mutex::new(()),
            cluster_id,
        };
        let topics_dir = catalog.meta_dir.join("topics");
        for entry in std::fs::read_dir(&topics_dir).map_err(io(&topics_dir))? {
            let path = entry.map_err(io(&topics_dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let record: TopicRecord = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "unreadable topic record; topic skipped (fix or remove the file)");
                    continue;
                }
            };
            let topic = catalog.open_topic(
                record.name,
                record.id,
                record.partitions,
                record.configs,
                clean,
            )?;
            catalog.insert(topic);
        }
        Ok(catalog)
    }

    fn load_cluster_id(root: &Path, node_id: i32) -> Result<String, StorageError> {
        let path = root.join("meta.properties");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let props = config::parse_properties(&text);
            if let Some(id) = props.get("cluster.id") {
                return Ok(id.clone());
            }
        }
        // Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding.
        let id = base64_url(Uuid::new_v4().as_bytes());
        let text = format!("version=1\ncluster.id={id}\nnode.id={node_id}\n");
        std::fs::write(&path, text).map_err(|source| StorageError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(id)
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.broker.log_dir.join(format!("{topic}-{index}"))
    }

    fn open_partition(
        &self,
        topic: &str,
        index: i32,
        configs: &BTreeMap<String, String>,
        clean: bool,
    ) -> Result<Arc<Partition>, StorageError> {
        let cfg = config::log_config(&self.broker, &self.dynamic.read(), configs);
        let log = Log::open(
            &self.partition_dir(topic, index),
            format!("{topic}-{index}"),
            cfg,
            self.flusher.clone(),
            clean,
        )?;
        Ok(Arc::new(Partition {
            index,
            log,
            leader_epoch: 0,
        }))
    }

    fn open_topic(
        &self,
        name: String,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        clean: bool,
    ) -> Result<Arc<Topic>, StorageError> {
        let parts = (0..partitions)
            .map(|i| self.open_partition(&name, i, &configs, clean))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Topic {
            name,
            id,
            partitions: RwLock::new(parts),
            configs: RwLock::new(configs),
        }))
    }

    fn insert(&self, topic: Arc<Topic>) {
        self.by_id.write().insert(topic.id, topic.clone());
        self.topics.write().insert(topic.name.clone(), topic);
    }

    fn persist(&self, topic: &Topic) -> Result<(), StorageError> {
        let record = TopicRecord {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partition_count(),
            configs: topic.configs.read().clone(),
        };
        write_json_atomic(
            &self
                .meta_dir
                .join("topics")
                .join(format!("{}.json", topic.name)),
            &record,
        )
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn get_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.by_id.read().get(id).cloned()
    }

    /// All topics, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.topics.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn broker_config(&self) -> &BrokerConfig {
        &self.broker
    }

    pub fn dynamic_configs(&self) -> BTreeMap<String, String> {
        self.dynamic.read().clone()
    }

    /// Validates a creation request without side effects; returns the partition count.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<i32, ApiError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.broker.num_partitions
        } else {
            partitions
        };
        if partitions <= 0 {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("number of partitions must be larger than 0, got {partitions}"),
            ));
        }
        let replication = if replication == -1 {
            self.broker.default_replication_factor
        } else {
            replication
        };
        if replication <= 0 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                "replication factor must be larger than 0",
            ));
        }
        if replication > 1 {
            return Err(ApiError::new(ResponseError::InvalidReplicationFactor, format!("replication factor {replication} is larger than the number of available brokers (1)")));
        }
        for (k, v) in configs {
            config::validate_topic_config(k, v)
                .map_err(|e| ApiError::new(ResponseError::InvalidConfig, e.to_string()))?;
        }
        let topics = self.topics.read();
        if topics.contains_key(name) {
            return Err(ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        let collides = |a: &str| a.replace('.', "_");
        if let Some(other) = topics.keys().find(|t| collides(t) == collides(name)) {
            return Err(ApiError::new(ResponseError::InvalidTopicException, format!("topic '{name}' collides with existing topic '{other}' ('.' and '_' are interchangeable in metric names)")));
        }
        Ok(partitions)
    }

    /// Creates a topic with `partitions` partitions (-1: `num.partitions`).
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, ApiError> {
        let _guard = self.admin.lock();
        let partitions = self.check_create(name, partitions, replication, &configs)?;
        let topic = self
            .open_topic(name.to_owned(), Uuid::new_v4(), partitions, configs, true)
            .and_then(|t| self.persist(&t).map(|()| t))
            .map_err(|e| {
                tracing::error!(topic = name, error = %e, "could not create topic");
                ApiError::from(e)
            })?;
        tracing::info!(topic = name, partitions, id = %topic.id, "created topic");
        self.insert(topic.clone());
        Ok(topic)
    }

    /// Returns the topic, creating it with broker defaults when auto-creation is on.
    pub fn get_or_auto_create(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        if !self.broker.auto_create_topics {
            return Err(ResponseError::UnknownTopicOrPartition.into());
        }
        match self.create(name, -1, -1, BTreeMap::new()) {
            Err(e) if e.code == ResponseError::TopicAlreadyExists => self
                .get(name)
                .ok_or_else(|| ResponseError::UnknownTopicOrPartition.into()),
            other => other,
        }
    }

    /// Deletes a topic: it disappears at once and its directories are removed in the background.
    pub fn delete(&self, topic: &Arc<Topic>) -> Result<(), ApiError> {
        if !self.broker.delete_topic_enable {
            return Err(ApiError::new(
                ResponseError::TopicDeletionDisabled,
                "delete.topic.enable is false",
            ));
        }
        let _guard = self.admin.lock();
        if self.topics.write().remove(&topic.name).is_none() {
            return Err(ResponseError::UnknownTopicOrPartition.into());
        }
        self.by_id.write().remove(&topic.id);
        let record = self
            .meta_dir
            .join("topics")
            .join(format!("{}.json", topic.name));
        if let Err(e) = std::fs::remove_file(&record) {
            tracing::error!(file = %record.display(), error = %e, "could not remove topic record");
        }
        for p in topic.partitions.read().iter() {
            let dir = p.log.dir().to_path_buf();
            let doomed = dir.with_file_name(format!(
                "{}.{}-delete",
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                topic.id.simple()
            ));
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => {
                    std::thread::spawn(move || {
                        if let Err(e) = std::fs::remove_dir_all(&doomed) {
                            tracing::warn!(dir = %doomed.display(), error = %e, "could not remove deleted partition");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not move deleted partition aside")
                }
            }
        }
        tracing::info!(topic = %topic.name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub fn add_partitions(
        &self,
        topic: &Arc<Topic>,
        count: i32,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let _guard = self.admin.lock();
        let current = topic.partition_count();
        if count <= current {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic currently has {current} partitions, {count} would not be an increase"
                ),
            ));
        }
        if validate_only {
            return Ok(());
        }
        let configs = topic.configs.read().clone();
        let mut added = Vec::new();
        for i in current..count {
            added.push(
                self.open_partition(&topic.name, i, &configs, true)
                    .map_err(ApiError::from)?,
            );
        }
        topic.partitions.write().extend(added);
        self.persist(topic).map_err(ApiError::from)?;
        tracing::info!(topic = %topic.name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's overrides and applies the new settings to its logs.
    pub fn set_topic_configs(
        &self,
        topic: &Arc<Topic>,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let _guard = self.admin.lock();
        *topic.configs.write() = configs;
        self.persist(topic).map_err(ApiError::from)?;
        self.refresh_log_configs(topic);
        Ok(())
    }

    fn refresh_log_configs(&self, topic: &Topic) {
        let cfg = config::log_config(&self.broker, &self.dynamic.read(), &topic.configs.read());
        for p in topic.partitions.read().iter() {
            p.log.set_config(cfg.clone());
        }
    }

    /// Replaces the dynamic broker configs and re-resolves every topic's settings.
    pub fn set_dynamic_configs(&self, configs: BTreeMap<String, String>) -> Result<(), ApiError> {
        let _guard = self.admin.lock();
        write_json_atomic(&self.meta_dir.join("broker-configs.json"), &configs)
            .map_err(ApiError::from)?;
        *self.dynamic.write() = configs;
        for t in self.all() {
            self.refresh_log_configs(&t);
        }
        Ok(())
    }

    /// Every partition log, for housekeeping.
    pub fn logs(&self) -> Vec<Arc<Log>> {
        self.all()
            .iter()
            .flat_map(|t| {
                t.partitions
                    .read()
                    .iter()
                    .map(|p| p.log.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Flushes and seals every log, then writes the clean-shutdown marker.
    pub fn close(&self) -> Result<(), StorageError> {
        let mut first_error = None;
        for log in self.logs() {
            if let Err(e) = log.close() {
                tracing::error!(log = log.name(), error = %e, "could not close log cleanly");
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let marker = self.broker.log_dir.join(CLEAN_SHUTDOWN);
        std::fs::write(&marker, b"").map_err(|source| StorageError::Io {
            path: marker,
            source,
        })
    }
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("todo.tasks.created").is_ok());
        assert!(validate_topic_name("a_b-C9").is_ok());
        for bad in ["", ".", "..", "has space", "ümlaut", &"x".repeat(250)] {
            assert_eq!(
                validate_topic_name(bad).map_err(|e| e.code),
                Err(ResponseError::InvalidTopicException),
                "{bad}"
            );
        }
    }

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = base64_url(&[0xff; 16]);
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
