//! The local view of the topic metadata: topics with stable ids (from the metadata quorum),
//! and the partition replicas this node hosts with their logs. [`Catalog::reconcile`] brings
//! it in line with each new metadata image: it opens logs for new replicas, applies leader and
//! ISR changes, resolves configs, and removes what was deleted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use parking_lot::RwLock;
use strom_raft::{MetadataImage, TopicImage};
use strom_storage::{DirIo, Log, StorageError};
use uuid::Uuid;

use crate::config::{self, BrokerConfig};
use crate::error::ApiError;
use crate::lease::LeaderLease;
pub use crate::replica::{Partition, Transition};

/// Marker written at clean shutdown; its absence at start means logs need recovery.
const CLEAN_SHUTDOWN: &str = ".strom-clean-shutdown";
const MAX_TOPIC_NAME: usize = 249;

pub struct Topic {
    pub name: String,
    pub id: Uuid,
    image: RwLock<Arc<TopicImage>>,
    /// The replicas hosted here, by partition index.
    local: RwLock<BTreeMap<i32, Arc<Partition>>>,
}

impl Topic {
    /// This node's replica of partition `index`, if it hosts one.
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        self.local.read().get(&index).cloned()
    }

    /// Every replica hosted here.
    pub fn local_partitions(&self) -> Vec<Arc<Partition>> {
        self.local.read().values().cloned().collect()
    }

    pub fn partition_count(&self) -> i32 {
        self.image.read().partitions.len() as i32
    }

    pub fn image(&self) -> Arc<TopicImage> {
        self.image.read().clone()
    }

    /// Topic-level config overrides (only keys that were set).
    pub fn configs(&self) -> BTreeMap<String, String> {
        self.image.read().configs.clone()
    }

    /// Kafka's internal topics: only the broker writes them. Other names starting with `__`
    /// are ordinary topics, as in Kafka.
    pub fn is_internal(&self) -> bool {
        is_internal(&self.name)
    }

    /// A partition index that exists in the metadata (hosted here or not).
    pub fn has_partition(&self, index: i32) -> bool {
        index >= 0 && index < self.partition_count()
    }

    /// This node's replica of `index` when it is the leader; the Kafka error otherwise.
    pub fn leader_partition(&self, index: i32) -> Result<Arc<Partition>, ApiError> {
        match self.partition(index) {
            Some(p) => {
                p.leader_state()?;
                Ok(p)
            }
            None if self.has_partition(index) => Err(ResponseError::NotLeaderOrFollower.into()),
            None => Err(ResponseError::UnknownTopicOrPartition.into()),
        }
    }
}

pub fn is_internal(name: &str) -> bool {
    matches!(name, "__consumer_offsets" | "__transaction_state")
}

pub struct Catalog {
    broker: Arc<BrokerConfig>,
    /// The log directory's writer and flusher threads.
    io: Arc<DirIo>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    by_id: RwLock<HashMap<Uuid, Arc<Topic>>>,
    /// Cluster-wide dynamic broker configs, from the metadata.
    dynamic: RwLock<BTreeMap<String, String>>,
    /// Logs from the previous run were closed cleanly (no recovery scan needed).
    clean: bool,
    /// The cluster id this data directory belongs to (from meta.properties or the metadata).
    cluster_id: RwLock<String>,
    /// Identifies this data directory: a wiped disk behind the same node id is a new incarnation.
    pub incarnation: Uuid,
    /// Whether the controller still counts this broker as alive: its partitions lead only then.
    pub lease: Arc<LeaderLease>,
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { path, source }
}

impl Catalog {
    /// Reads the data directory's identity and whether the last run shut down cleanly. Topics
    /// arrive with the first metadata image.
    pub fn open(broker: Arc<BrokerConfig>, dir_io: Arc<DirIo>) -> Result<Self, StorageError> {
        let root = broker.log_dir.clone();
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        let props_path = root.join("meta.properties");
        let fresh = !props_path.exists();
        let mut props = std::fs::read_to_string(&props_path)
            .map(|t| config::parse_properties(&t))
            .unwrap_or_default();
        let cluster_id = props
            .get("cluster.id")
            .cloned()
            .or_else(|| broker.cluster.cluster_id.clone())
            .unwrap_or_else(|| base64_url(Uuid::new_v4().as_bytes()));
        let incarnation = props
            .get("directory.id")
            .and_then(|d| Uuid::parse_str(d).ok())
            .unwrap_or_else(Uuid::new_v4);
        if let Some(id) = props.get("node.id") {
            if id.parse::<i32>().ok() != Some(broker.node_id) {
                return Err(StorageError::Io {
                    path: props_path,
                    source: std::io::Error::other(format!(
                        "this data directory belongs to node.id {id}, not {}; point log.dirs elsewhere or fix node.id",
                        broker.node_id
                    )),
                });
            }
        }
        props.insert("cluster.id".into(), cluster_id.clone());
        props.insert("directory.id".into(), incarnation.to_string());
        write_props(&props_path, broker.node_id, &props)?;
        let marker = root.join(CLEAN_SHUTDOWN);
        let clean = fresh || marker.exists();
        if marker.exists() {
            std::fs::remove_file(&marker).map_err(io(&marker))?;
        }
        if !clean {
            tracing::info!(dir = %root.display(), "no clean-shutdown marker: recovering logs");
        }
        let session = Duration::from_millis(broker.cluster.session_timeout_ms);
        let lease = Arc::new(LeaderLease::new(session));
        Ok(Self {
            broker,
            io: dir_io,
            topics: RwLock::new(HashMap::new()),
            by_id: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(BTreeMap::new()),
            clean,
            cluster_id: RwLock::new(cluster_id),
            incarnation,
            lease,
        })
    }

    pub fn cluster_id(&self) -> String {
        self.cluster_id.read().clone()
    }

    /// Adopts the cluster id the metadata carries, recording it in meta.properties.
    pub fn set_cluster_id(&self, id: &str) {
        if id.is_empty() || *self.cluster_id.read() == id {
            return;
        }
        *self.cluster_id.write() = id.to_owned();
        let path = self.broker.log_dir.join("meta.properties");
        let mut props = std::fs::read_to_string(&path)
            .map(|t| config::parse_properties(&t))
            .unwrap_or_default();
        props.insert("cluster.id".into(), id.to_owned());
        if let Err(e) = write_props(&path, self.broker.node_id, &props) {
            tracing::warn!(error = %e, "could not record the cluster id");
        }
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.broker.log_dir.join(format!("{topic}-{index}"))
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

    /// Brings the local state in line with `image`; returns the replicas whose role or ISR
    /// changed. Runs on a blocking thread (it opens and deletes logs).
    pub fn reconcile(&self, image: &MetadataImage) -> Vec<(Arc<Partition>, Transition)> {
        let me = self.broker.node_id;
        let active = image
            .brokers
            .get(&me)
            .is_some_and(|b| b.incarnation == self.incarnation && !b.fenced);
        let mut changes = Vec::new();
        let dynamic_changed = *self.dynamic.read() != image.broker_configs;
        if dynamic_changed {
            *self.dynamic.write() = image.broker_configs.clone();
        }
        for t in image.topics.values() {
            let topic = match self.get(&t.name) {
                Some(existing) if existing.id == t.id => existing,
                other => {
                    if let Some(stale) = other {
                        // Deleted and re-created while this node was away.
                        self.remove_topic(&stale);
                    }
                    let topic = Arc::new(Topic {
                        name: t.name.clone(),
                        id: t.id,
                        image: RwLock::new(t.clone()),
                        local: RwLock::new(BTreeMap::new()),
                    });
                    self.by_id.write().insert(t.id, topic.clone());
                    self.topics.write().insert(t.name.clone(), topic.clone());
                    tracing::info!(topic = %t.name, id = %t.id, partitions = t.partitions.len(), "topic added");
                    topic
                }
            };
            let configs_changed = topic.image.read().configs != t.configs;
            *topic.image.write() = t.clone();
            let cfg = config::log_config(&self.broker, &image.broker_configs, &t.configs);
            for (i, state) in t.partitions.iter().enumerate() {
                let index = i as i32;
                let hosted = topic.partition(index);
                if !state.replicas.contains(&me) {
                    if let Some(p) = hosted {
                        topic.local.write().remove(&index);
                        self.remove_partition_dir(&p, t.id);
                    }
                    continue;
                }
                let partition = match hosted {
                    Some(p) => {
                        if configs_changed || dynamic_changed {
                            p.log.set_config(cfg.clone());
                        }
                        p
                    }
                    None => {
                        let dir = self.partition_dir(&t.name, index);
                        let clean = self.clean || !dir.exists();
                        match Log::open(
                            &dir,
                            format!("{}-{index}", t.name),
                            cfg.clone(),
                            self.io.clone(),
                            clean,
                        ) {
                            Ok(log) => {
                                let p = Arc::new(Partition::new(
                                    t.name.clone(),
                                    index,
                                    log,
                                    me,
                                    self.lease.clone(),
                                    Duration::from_millis(
                                        self.broker.cluster.replica_lag_time_max_ms,
                                    ),
                                ));
                                topic.local.write().insert(index, p.clone());
                                p
                            }
                            Err(e) => {
                                tracing::error!(topic = %t.name, partition = index, error = %e, "cannot open partition log; the replica stays offline");
                                continue;
                            }
                        }
                    }
                };
                // Lead only as this process's own, unfenced registration: a restarted (or
                // wiped) node that reads an older image naming it leader must not serve as
                // leader until the controller has re-registered it and re-elected.
                let transition = if state.leader == me && !active {
                    let mut waiting = state.clone();
                    waiting.leader = -1;
                    partition.apply(&waiting)
                } else {
                    partition.apply(state)
                };
                if transition != Transition::Unchanged {
                    changes.push((partition, transition));
                }
            }
        }
        let gone: Vec<Arc<Topic>> = self
            .topics
            .read()
            .values()
            .filter(|t| image.topics.get(&t.name).is_none_or(|i| i.id != t.id))
            .cloned()
            .collect();
        for t in gone {
            if !image.topics.contains_key(&t.name) {
                self.remove_topic(&t);
            }
        }
        changes
    }

    fn remove_topic(&self, topic: &Arc<Topic>) {
        {
            let mut topics = self.topics.write();
            if topics.get(&topic.name).is_some_and(|t| t.id == topic.id) {
                topics.remove(&topic.name);
            }
        }
        self.by_id.write().remove(&topic.id);
        let parts = std::mem::take(&mut *topic.local.write());
        for p in parts.values() {
            self.remove_partition_dir(p, topic.id);
        }
        tracing::info!(topic = %topic.name, "deleted topic");
    }

    /// Moves a partition directory aside and deletes it in the background.
    fn remove_partition_dir(&self, p: &Partition, id: Uuid) {
        let dir = p.log.dir().to_path_buf();
        let doomed = dir.with_file_name(format!(
            "{}.{}-delete",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            id.simple()
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

    /// Every hosted partition.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.all()
            .iter()
            .flat_map(|t| t.local_partitions())
            .collect()
    }

    /// Every partition log, for housekeeping.
    pub fn logs(&self) -> Vec<Arc<Log>> {
        self.partitions()
            .into_iter()
            .map(|p| p.log.clone())
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

fn write_props(
    path: &Path,
    node_id: i32,
    props: &BTreeMap<String, String>,
) -> Result<(), StorageError> {
    let mut text = format!("version=1\nnode.id={node_id}\n");
    for (k, v) in props {
        if k != "version" && k != "node.id" {
            text.push_str(&format!("{k}={v}\n"));
        }
    }
    strom_storage::write_atomic(path, text.as_bytes())
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
