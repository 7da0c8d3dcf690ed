//! Broker and topic configuration: the Kafka keys Strom implements, their types, defaults and
//! validation, parsed from `server.properties`, `STROM_*` environment variables and command-line
//! overrides (in that order of precedence, last wins). Unknown or invalid keys are errors that
//! name the key; nothing is silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strom_protocol::codec::Codec;
use strom_storage::{LogConfig, TimestampType};

/// Kafka's config value types, numbered as DescribeConfigs reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    List = 7,
}

/// One topic-level key and the broker key that supplies its default.
pub struct TopicKey {
    pub name: &'static str,
    pub broker_key: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Topic configs Strom honours; the broker keys double as dynamic broker defaults.
pub const TOPIC_KEYS: &[TopicKey] = &[
    TopicKey { name: "cleanup.policy", broker_key: "log.cleanup.policy", kind: Kind::List, default: "delete", doc: "delete: time/size retention removes old segments. compact: accepted, but compaction is not implemented yet, so nothing is deleted." },
    TopicKey { name: "compression.type", broker_key: "compression.type", kind: Kind::String, default: "producer", doc: "Codec of stored batches: producer keeps the producer's; none, gzip, snappy, lz4, zstd re-compress batches that differ." },
    TopicKey { name: "flush.messages", broker_key: "log.flush.interval.messages", kind: Kind::Long, default: "9223372036854775807", doc: "fsync after this many unflushed messages; producers wait for it." },
    TopicKey { name: "flush.ms", broker_key: "log.flush.interval.ms", kind: Kind::Long, default: "9223372036854775807", doc: "fsync data that has been unflushed for this long." },
    TopicKey { name: "index.interval.bytes", broker_key: "log.index.interval.bytes", kind: Kind::Int, default: "4096", doc: "Bytes of log between offset index entries." },
    TopicKey { name: "max.message.bytes", broker_key: "message.max.bytes", kind: Kind::Int, default: "1048588", doc: "Largest record batch accepted." },
    TopicKey { name: "message.timestamp.type", broker_key: "log.message.timestamp.type", kind: Kind::String, default: "CreateTime", doc: "CreateTime keeps producer timestamps; LogAppendTime stamps batches with the broker clock." },
    TopicKey { name: "min.insync.replicas", broker_key: "min.insync.replicas", kind: Kind::Int, default: "1", doc: "Replicas that must acknowledge an acks=all write." },
    TopicKey { name: "retention.bytes", broker_key: "log.retention.bytes", kind: Kind::Long, default: "-1", doc: "Delete oldest segments while a partition is larger than this; -1 is unbounded." },
    TopicKey { name: "retention.ms", broker_key: "log.retention.ms", kind: Kind::Long, default: "604800000", doc: "Delete segments whose newest record is older than this; -1 keeps forever." },
    TopicKey { name: "segment.bytes", broker_key: "log.segment.bytes", kind: Kind::Int, default: "1073741824", doc: "Roll a new segment when the active one would grow past this." },
    TopicKey { name: "segment.index.bytes", broker_key: "log.index.size.max.bytes", kind: Kind::Int, default: "10485760", doc: "Preallocated size of each index file." },
    TopicKey { name: "segment.ms", broker_key: "log.roll.ms", kind: Kind::Long, default: "604800000", doc: "Roll a new segment when the active one's first record is older than this." },
    TopicKey { name: "unclean.leader.election.enable", broker_key: "unclean.leader.election.enable", kind: Kind::Boolean, default: "false", doc: "Allow an out-of-sync replica to become leader (cluster mode)." },
];

/// Broker-only keys: (name, kind, default, doc).
pub const BROKER_KEYS: &[(&str, Kind, &str, &str)] = &[
    ("node.id", Kind::Int, "1", "This node's id."),
    ("listeners", Kind::List, "PLAINTEXT://0.0.0.0:9092", "Addresses the broker listens on."),
    ("advertised.listeners", Kind::List, "PLAINTEXT://localhost:9092", "Addresses clients are told to connect to."),
    ("log.dirs", Kind::String, "./data", "Directory holding partition logs and metadata."),
    ("admin.listener", Kind::String, "0.0.0.0:9644", "HOST:PORT of the admin HTTP listener (/metrics, /healthz, /readyz, POST /shutdown); empty disables it."),
    ("kubernetes.statefulset.replicas", Kind::Int, "0", "Replicas of the StatefulSet this pod belongs to; above 0, node.id, controller.quorum.voters and advertised.listeners default to values derived from the pod name."),
    ("kubernetes.headless.service", Kind::String, "strom-headless", "Headless Service that gives each pod its DNS name."),
    ("kubernetes.cluster.domain", Kind::String, "cluster.local", "Kubernetes cluster DNS domain."),
    ("kubernetes.pod.name", Kind::String, "", "This pod's name (<statefulset>-<ordinal>); defaults to the POD_NAME environment variable."),
    ("kubernetes.namespace", Kind::String, "default", "This pod's namespace; defaults to the POD_NAMESPACE environment variable."),
    ("num.partitions", Kind::Int, "1", "Partitions of auto-created topics and of CreateTopics with -1."),
    ("default.replication.factor", Kind::Int, "1", "Replication factor of auto-created topics."),
    ("auto.create.topics.enable", Kind::Boolean, "true", "Create unknown topics when a Metadata request allows it."),
    ("delete.topic.enable", Kind::Boolean, "true", "Allow DeleteTopics."),
    ("log.retention.check.interval.ms", Kind::Long, "300000", "How often retention runs."),
    ("log.flush.offset.checkpoint.interval.ms", Kind::Long, "60000", "How often recovery points are checkpointed."),
    ("log.flush.acks.all", Kind::Boolean, "true", "Strom: answer acks=all produce requests only after an fsync that covers them (coalesced across producers)."),
    ("socket.request.max.bytes", Kind::Int, "104857600", "Largest request accepted; larger frames close the connection."),
    ("queued.max.request.bytes", Kind::Long, "268435456", "Bytes of requests buffered across all connections before reading pauses."),
    ("connections.max.idle.ms", Kind::Long, "600000", "Close connections idle for longer than this."),
    ("broker.rack", Kind::String, "", "Rack of this broker."),
    ("group.initial.rebalance.delay.ms", Kind::Int, "3000", "How long the first rebalance of an empty group waits for more members."),
    ("group.min.session.timeout.ms", Kind::Int, "6000", "Smallest session timeout a consumer may ask for."),
    ("group.max.session.timeout.ms", Kind::Int, "1800000", "Largest session timeout a consumer may ask for."),
    ("offsets.topic.num.partitions", Kind::Int, "50", "Partitions of the internal __consumer_offsets topic."),
    ("offsets.topic.replication.factor", Kind::Short, "3", "Replication factor of __consumer_offsets; it is not created (groups get COORDINATOR_NOT_AVAILABLE) until this many brokers are alive. A single node without controller.quorum.voters defaults to 1."),
    ("offsets.topic.segment.bytes", Kind::Int, "104857600", "Segment size of __consumer_offsets; a partition larger than this is compacted."),
    ("offsets.retention.minutes", Kind::Int, "10080", "Committed offsets of an empty group are deleted after this long."),
    ("producer.id.expiration.ms", Kind::Long, "86400000", "Forget an idempotent producer's sequence state after this long without writes."),
    ("process.roles", Kind::List, "broker,controller", "Roles of this node; Strom runs combined nodes (broker,controller)."),
    ("controller.quorum.voters", Kind::List, "", "Controller voters as id@host:port; empty runs a single-node quorum of this node."),
    ("controller.listener.names", Kind::List, "CONTROLLER", "Listener names used by the controller quorum."),
    ("listener.security.protocol.map", Kind::List, "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT", "Security protocol of each listener name (only PLAINTEXT is supported)."),
    ("inter.broker.listener.name", Kind::String, "", "Listener followers use to fetch from leaders (default: the first non-controller listener)."),
    ("controller.quorum.election.timeout.ms", Kind::Int, "1000", "Raft election timeout of the controller quorum."),
    ("broker.heartbeat.interval.ms", Kind::Int, "2000", "How often a broker heartbeats to the active controller."),
    ("broker.session.timeout.ms", Kind::Int, "9000", "A broker without a heartbeat for this long is fenced: it leaves every ISR and loses leadership."),
    ("replica.lag.time.max.ms", Kind::Long, "30000", "A follower that has not caught up for this long leaves the ISR."),
    ("replica.fetch.max.bytes", Kind::Int, "1048576", "Bytes a follower asks for per partition."),
    ("replica.fetch.response.max.bytes", Kind::Int, "10485760", "Bytes a follower asks for per fetch."),
    ("replica.fetch.wait.max.ms", Kind::Int, "500", "How long a follower's fetch waits for data."),
    ("replica.fetch.backoff.ms", Kind::Int, "1000", "Pause after a follower's fetch fails."),
    ("auto.leader.rebalance.enable", Kind::Boolean, "true", "Move leadership back to preferred replicas periodically."),
    ("leader.imbalance.check.interval.seconds", Kind::Long, "300", "How often preferred leaders are checked."),
    ("controlled.shutdown.enable", Kind::Boolean, "true", "Move leadership away before a broker stops."),
    ("metadata.log.snapshot.interval.entries", Kind::Long, "1000", "Strom: snapshot the metadata image after this many new log entries."),
    ("cluster.id", Kind::String, "", "Cluster id for a new cluster (default: generated by the first broker)."),
];

/// Kafka keys accepted for `server.properties` compatibility that have no effect in Strom's
/// architecture (one async runtime, OS-chosen socket buffers); each is logged at start-up.
pub const NO_EFFECT_KEYS: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
];

/// Keys that are spelled differently but mean the same as a canonical key (Kafka aliases and
/// unit variants), with a multiplier to milliseconds where it applies.
const ALIASES: &[(&str, &str, i64)] = &[
    ("broker.id", "node.id", 1),
    ("log.dir", "log.dirs", 1),
    ("log.retention.hours", "log.retention.ms", 3_600_000),
    ("log.retention.minutes", "log.retention.ms", 60_000),
    ("log.roll.hours", "log.roll.ms", 3_600_000),
];

/// A configuration problem, always naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown configuration key `{0}`")]
    Unknown(String),
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Checks a value against its key's type and range.
fn validate_value(key: &str, kind: Kind, value: &str) -> Result<(), ConfigError> {
    let long = || {
        value
            .trim()
            .parse::<i64>()
            .map_err(|_| invalid(key, value, "not a number"))
    };
    match kind {
        Kind::Boolean => {
            if !matches!(value.trim(), "true" | "false") {
                return Err(invalid(key, value, "expected true or false"));
            }
        }
        Kind::Int => {
            value
                .trim()
                .parse::<i32>()
                .map_err(|_| invalid(key, value, "not a 32-bit integer"))?;
        }
        Kind::Long => {
            long()?;
        }
        Kind::Short => {
            value
                .trim()
                .parse::<i16>()
                .map_err(|_| invalid(key, value, "not a 16-bit integer"))?;
        }
        Kind::String | Kind::List => {}
    }
    let min = |m: i64| -> Result<(), ConfigError> {
        if long()? < m {
            return Err(invalid(key, value, format!("must be at least {m}")));
        }
        Ok(())
    };
    match key {
        "compression.type" if value != "producer" && Codec::from_name(value).is_none() => {
            return Err(invalid(
                key,
                value,
                "expected producer, none, gzip, snappy, lz4 or zstd",
            ));
        }
        "cleanup.policy" | "log.cleanup.policy"
            if value.trim().is_empty()
                || value
                    .split(',')
                    .any(|p| !matches!(p.trim(), "delete" | "compact")) =>
        {
            return Err(invalid(key, value, "expected delete, compact or both"));
        }
        "message.timestamp.type" | "log.message.timestamp.type"
            if !matches!(value, "CreateTime" | "LogAppendTime") =>
        {
            return Err(invalid(key, value, "expected CreateTime or LogAppendTime"));
        }
        "segment.bytes" | "log.segment.bytes" => min(14)?,
        "segment.ms"
        | "log.roll.ms"
        | "flush.messages"
        | "flush.ms"
        | "log.flush.interval.messages"
        | "log.flush.interval.ms"
        | "min.insync.replicas"
        | "num.partitions"
        | "default.replication.factor"
        | "socket.request.max.bytes"
        | "queued.max.request.bytes"
        | "log.retention.check.interval.ms"
        | "log.flush.offset.checkpoint.interval.ms"
        | "connections.max.idle.ms"
        | "producer.id.expiration.ms"
        | "offsets.topic.num.partitions"
        | "offsets.retention.minutes"
        | "offsets.topic.segment.bytes"
        | "offsets.topic.replication.factor"
        | "group.min.session.timeout.ms"
        | "group.max.session.timeout.ms" => min(1)?,
        "group.initial.rebalance.delay.ms" => min(0)?,
        "segment.index.bytes" | "log.index.size.max.bytes" => min(12)?,
        "retention.ms" | "log.retention.ms" | "retention.bytes" | "log.retention.bytes" => min(-1)?,
        "index.interval.bytes"
        | "log.index.interval.bytes"
        | "max.message.bytes"
        | "message.max.bytes"
        | "node.id" => min(0)?,
        _ => {}
    }
    Ok(())
}

/// Validates a topic-level key and value (CreateTopics, AlterConfigs).
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), ConfigError> {
    let def = TOPIC_KEYS
        .iter()
        .find(|k| k.name == key)
        .ok_or_else(|| ConfigError::Unknown(key.to_owned()))?;
    validate_value(key, def.kind, value)
}

/// Validates a broker key that may be changed at runtime (IncrementalAlterConfigs on a broker).
pub fn validate_dynamic_broker_config(key: &str, value: &str) -> Result<(), ConfigError> {
    let def = TOPIC_KEYS
        .iter()
        .find(|k| k.broker_key == key)
        .ok_or_else(|| ConfigError::Unknown(key.to_owned()))?;
    validate_value(key, def.kind, value)
}

/// The kind and default of a broker key, for DescribeConfigs.
pub fn broker_key_def(key: &str) -> Option<(Kind, &'static str, &'static str)> {
    BROKER_KEYS
        .iter()
        .find(|(n, ..)| *n == key)
        .map(|(_, k, d, doc)| (*k, *d, *doc))
        .or_else(|| {
            TOPIC_KEYS
                .iter()
                .find(|t| t.broker_key == key)
                .map(|t| (t.kind, t.default, t.doc))
        })
}

/// A listener: `NAME://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    fn parse_list(key: &str, value: &str) -> Result<Vec<Self>, ConfigError> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                let (name, addr) = item.split_once("://").unwrap_or(("PLAINTEXT", item));
                let (host, port) = addr
                    .rsplit_once(':')
                    .ok_or_else(|| invalid(key, value, "expected NAME://host:port"))?;
                let port = port
                    .parse::<u16>()
                    .map_err(|_| invalid(key, value, "port is not a number in 0..65535"))?;
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                Ok(Listener {
                    name: name.to_owned(),
                    host,
                    port,
                })
            })
            .collect()
    }
}

/// Which parts of Kafka's combined node this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// Settings of the metadata quorum and of replication.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub roles: Roles,
    /// `controller.quorum.voters`: id -> host:port (empty: a single-node quorum).
    pub voters: BTreeMap<u64, String>,
    pub controller_listener: Option<Listener>,
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub replica_fetch_max_bytes: i32,
    pub replica_fetch_response_max_bytes: i32,
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_backoff_ms: u64,
    pub auto_leader_rebalance: bool,
    pub imbalance_check_ms: u64,
    pub controlled_shutdown: bool,
    pub snapshot_every: u64,
    pub offsets_replication_factor: i16,
    pub cluster_id: Option<String>,
}

/// Resolved broker configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub listener: Listener,
    pub advertised: Listener,
    pub cluster: ClusterConfig,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub delete_topic_enable: bool,
    pub socket_request_max_bytes: usize,
    pub queued_max_request_bytes: usize,
    pub retention_check_interval_ms: u64,
    pub checkpoint_interval_ms: u64,
    pub connections_max_idle_ms: u64,
    pub producer_id_expiration_ms: i64,
    pub offsets_topic_partitions: i32,
    pub offsets_retention_ms: i64,
    pub offsets_segment_bytes: u64,
    pub group: crate::group::GroupConfig,
    pub rack: Option<String>,
    /// Admin HTTP listener (`admin.listener`); `None` when disabled.
    pub admin_listener: Option<String>,
    /// Every key that was set explicitly (canonical names), for DescribeConfigs and for topic
    /// defaults.
    pub static_props: BTreeMap<String, String>,
}

impl BrokerConfig {
    /// Builds the configuration from layered sources; each later layer wins.
    pub fn from_layers(layers: &[BTreeMap<String, String>]) -> Result<Self, ConfigError> {
        let mut props: BTreeMap<String, String> = BTreeMap::new();
        for layer in layers {
            for (k, v) in layer {
                let (key, value) = canonical(k, v)?;
                if NO_EFFECT_KEYS.contains(&key.as_str()) {
                    tracing::info!(key = %key, "config key accepted but has no effect in Strom");
                    continue;
                }
                let kind = broker_key_def(&key)
                    .map(|(kind, ..)| kind)
                    .ok_or_else(|| ConfigError::Unknown(k.clone()))?;
                validate_value(&key, kind, &value)?;
                props.insert(key, value);
            }
        }
        kubernetes_defaults(&mut props)?;
        let get = |key: &str| value_or_default(&props, key);
        let num = |key: &str| -> Result<i64, ConfigError> {
            let v = get(key);
            v.trim()
                .parse::<i64>()
                .map_err(|_| invalid(key, &v, "not a number"))
        };
        let protocols: BTreeMap<String, String> = get("listener.security.protocol.map")
            .split(',')
            .filter_map(|kv| kv.trim().split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let controller_names: Vec<String> = get("controller.listener.names")
            .split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        let listeners = Listener::parse_list("listeners", &get("listeners"))?;
        let advertised_all =
            Listener::parse_list("advertised.listeners", &get("advertised.listeners"))?;
        for l in listeners.iter().chain(&advertised_all) {
            match protocols.get(&l.name).map(String::as_str) {
                Some("PLAINTEXT") => {}
                Some(other) => {
                    return Err(invalid(
                        "listener.security.protocol.map",
                        &get("listener.security.protocol.map"),
                        format!(
                            "listener {} uses {other}; only PLAINTEXT is supported so far",
                            l.name
                        ),
                    ))
                }
                None => {
                    return Err(invalid(
                        "listeners",
                        &get("listeners"),
                        format!(
                            "listener name {} is not in listener.security.protocol.map",
                            l.name
                        ),
                    ))
                }
            }
        }
        let roles_text = get("process.roles");
        let roles = Roles {
            broker: roles_text.split(',').any(|r| r.trim() == "broker"),
            controller: roles_text.split(',').any(|r| r.trim() == "controller"),
        };
        if !(roles.controller && roles.broker)
            || roles_text
                .split(',')
                .any(|r| !matches!(r.trim(), "broker" | "controller"))
        {
            return Err(invalid(
                "process.roles",
                &roles_text,
                "only combined nodes (broker,controller) are supported so far",
            ));
        }
        let inter_broker = get("inter.broker.listener.name");
        let (controller_listeners, client_listeners): (Vec<Listener>, Vec<Listener>) = listeners
            .into_iter()
            .partition(|l| controller_names.contains(&l.name));
        let listener = match inter_broker.trim() {
            "" => client_listeners.first().cloned(),
            name => client_listeners.iter().find(|l| l.name == name).cloned(),
        };
        let controller_listener = controller_listeners.into_iter().next();
        let mut voters = BTreeMap::new();
        for v in get("controller.quorum.voters")
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            let bad = || invalid("controller.quorum.voters", v, "expected id@host:port");
            let (id, addr) = v.split_once('@').ok_or_else(bad)?;
            let id = id.trim().parse::<u64>().map_err(|_| bad())?;
            if !addr.contains(':') {
                return Err(bad());
            }
            voters.insert(id, addr.trim().to_owned());
        }
        let node_id = num("node.id")? as i32;
        if !voters.is_empty() {
            if controller_listener.is_none() {
                return Err(invalid(
                    "listeners",
                    &get("listeners"),
                    "controller.quorum.voters is set, so a listener named in controller.listener.names (e.g. CONTROLLER://:9093) is required",
                ));
            }
            if !voters.contains_key(&(node_id.max(0) as u64)) {
                return Err(invalid(
                    "controller.quorum.voters",
                    &get("controller.quorum.voters"),
                    format!(
                        "node.id {node_id} must be one of the voters (every node is a controller)"
                    ),
                ));
            }
        }
        let (Some(listener), false) = (listener.clone(), roles.broker && listener.is_none()) else {
            return Err(invalid(
                "listeners",
                &get("listeners"),
                "a broker needs at least one listener that is not a controller listener",
            ));
        };
        let advertised = advertised_all
            .iter()
            .find(|l| l.name == listener.name)
            .or(advertised_all.first())
            .cloned()
            .unwrap_or_else(|| listener.clone());
        let dirs = get("log.dirs");
        if dirs.contains(',') {
            return Err(invalid(
                "log.dirs",
                &dirs,
                "Strom uses one data directory per node",
            ));
        }
        let rack = get("broker.rack");
        let cluster_id = get("cluster.id");
        let admin_listener =
            Some(get("admin.listener").trim().to_owned()).filter(|a| !a.is_empty());
        // A lone node (no voters) cannot hold 3 replicas: its embedded default is 1, as Kafka's
        // single-node quick start sets it. A value set explicitly is kept.
        let offsets_replication_factor =
            if voters.is_empty() && !props.contains_key("offsets.topic.replication.factor") {
                1
            } else {
                num("offsets.topic.replication.factor")?.clamp(1, i64::from(i16::MAX)) as i16
            };
        Ok(Self {
            admin_listener,
            node_id,
            listener,
            advertised,
            cluster: ClusterConfig {
                roles,
                voters,
                controller_listener,
                election_timeout_ms: num("controller.quorum.election.timeout.ms")?.max(10) as u64,
                heartbeat_interval_ms: num("broker.heartbeat.interval.ms")?.max(10) as u64,
                session_timeout_ms: num("broker.session.timeout.ms")?.max(50) as u64,
                replica_lag_time_max_ms: num("replica.lag.time.max.ms")?.max(10) as u64,
                replica_fetch_max_bytes: num("replica.fetch.max.bytes")?.max(1) as i32,
                replica_fetch_response_max_bytes: num("replica.fetch.response.max.bytes")?.max(1)
                    as i32,
                replica_fetch_wait_max_ms: num("replica.fetch.wait.max.ms")?.max(0) as i32,
                replica_fetch_backoff_ms: num("replica.fetch.backoff.ms")?.max(0) as u64,
                auto_leader_rebalance: get("auto.leader.rebalance.enable") == "true",
                imbalance_check_ms: num("leader.imbalance.check.interval.seconds")?
                    .saturating_mul(1000)
                    .max(1) as u64,
                controlled_shutdown: get("controlled.shutdown.enable") == "true",
                snapshot_every: num("metadata.log.snapshot.interval.entries")?.max(10) as u64,
                // A lone node (no voters) cannot hold 3 replicas: its embedded default is 1, as
                // Kafka's single-node quick start sets it. A value set explicitly is kept.
                offsets_replication_factor,
                cluster_id: (!cluster_id.is_empty()).then_some(cluster_id),
            },
            log_dir: PathBuf::from(dirs.trim()),
            num_partitions: num("num.partitions")? as i32,
            default_replication_factor: num("default.replication.factor")?
                .clamp(1, i64::from(i16::MAX)) as i16,
            auto_create_topics: get("auto.create.topics.enable") == "true",
            delete_topic_enable: get("delete.topic.enable") == "true",
            socket_request_max_bytes: num("socket.request.max.bytes")? as usize,
            queued_max_request_bytes: num("queued.max.request.bytes")? as usize,
            retention_check_interval_ms: num("log.retention.check.interval.ms")? as u64,
            checkpoint_interval_ms: num("log.flush.offset.checkpoint.interval.ms")? as u64,
            connections_max_idle_ms: num("connections.max.idle.ms")? as u64,
            producer_id_expiration_ms: num("producer.id.expiration.ms")?,
            offsets_topic_partitions: num("offsets.topic.num.partitions")? as i32,
            offsets_retention_ms: num("offsets.retention.minutes")?.saturating_mul(60_000),
            offsets_segment_bytes: num("offsets.topic.segment.bytes")?.max(1) as u64,
            group: crate::group::GroupConfig {
                initial_rebalance_delay: std::time::Duration::from_millis(
                    num("group.initial.rebalance.delay.ms")?.max(0) as u64,
                ),
                min_session_timeout_ms: num("group.min.session.timeout.ms")? as i32,
                max_session_timeout_ms: num("group.max.session.timeout.ms")? as i32,
            },
            rack: (!rack.is_empty()).then_some(rack),
            static_props: props,
        })
    }

    /// The value of a broker key from static config or its default.
    pub fn static_value(&self, key: &str) -> Option<String> {
        self.static_props
            .get(key)
            .cloned()
            .or_else(|| broker_key_def(key).map(|(_, d, _)| d.to_owned()))
    }
}

/// Maps aliases and unit variants to the canonical key, converting the value.
fn canonical(key: &str, value: &str) -> Result<(String, String), ConfigError> {
    let value = value.trim();
    for (alias, target, factor) in ALIASES {
        if key == *alias {
            if *factor == 1 {
                return Ok(((*target).to_owned(), value.to_owned()));
            }
            let n = value
                .parse::<i64>()
                .map_err(|_| invalid(key, value, "not a number"))?;
            return Ok(((*target).to_owned(), n.saturating_mul(*factor).to_string()));
        }
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Reads a Java-style `.properties` file: `key=value`, `key: value` or `key value`, `#`/`!`
/// comments, and trailing-backslash continuation lines.
pub fn read_properties(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(parse_properties(&text))
}

pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry.find(['=', ':', ' ', '\t']).unwrap_or(entry.len());
        let (k, v) = entry.split_at(split);
        let v = v
            .trim_start()
            .strip_prefix(['=', ':'])
            .unwrap_or(v.trim_start());
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    out
}

/// The downward-API variables a StatefulSet pod gets (`POD_NAME`, `POD_NAMESPACE`), as the
/// lowest config layer.
pub fn pod_layer(vars: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.filter_map(|(name, value)| match name.as_str() {
        "POD_NAME" => Some(("kubernetes.pod.name".to_owned(), value)),
        "POD_NAMESPACE" => Some(("kubernetes.namespace".to_owned(), value)),
        _ => None,
    })
    .collect()
}

/// A key's value as set, else its default.
fn value_or_default(props: &BTreeMap<String, String>, key: &str) -> String {
    props
        .get(key)
        .cloned()
        .or_else(|| broker_key_def(key).map(|(_, d, _)| d.to_owned()))
        .unwrap_or_default()
}

/// In a StatefulSet (`kubernetes.statefulset.replicas` > 0) a pod's identity follows from its
/// name `<set>-<ordinal>`: node id = ordinal, one controller voter per replica at its stable
/// DNS name, and that name advertised to clients. Keys set explicitly are left alone.
fn kubernetes_defaults(props: &mut BTreeMap<String, String>) -> Result<(), ConfigError> {
    let get = value_or_default;
    let replicas_text = get(props, "kubernetes.statefulset.replicas");
    let replicas: u32 = replicas_text.trim().parse().map_err(|_| {
        invalid(
            "kubernetes.statefulset.replicas",
            &replicas_text,
            "not a number",
        )
    })?;
    if replicas == 0 {
        return Ok(());
    }
    let pod = get(props, "kubernetes.pod.name");
    let bad_pod = |why: &str| {
        invalid(
            "kubernetes.pod.name",
            &pod,
            format!("{why}; set POD_NAME from the downward API (metadata.name)"),
        )
    };
    let (set, ordinal) = pod
        .rsplit_once('-')
        .ok_or_else(|| bad_pod("a StatefulSet pod name ends in -<ordinal>"))?;
    let ordinal: u32 = ordinal
        .parse()
        .map_err(|_| bad_pod("a StatefulSet pod name ends in -<ordinal>"))?;
    if ordinal >= replicas {
        return Err(bad_pod(&format!(
            "ordinal {ordinal} is outside kubernetes.statefulset.replicas={replicas}"
        )));
    }
    let suffix = format!(
        "{}.{}.svc.{}",
        get(props, "kubernetes.headless.service"),
        get(props, "kubernetes.namespace"),
        get(props, "kubernetes.cluster.domain")
    );
    let listeners = Listener::parse_list("listeners", &get(props, "listeners"))?;
    let controller_names = get(props, "controller.listener.names");
    let is_controller = |l: &&Listener| controller_names.split(',').any(|n| n.trim() == l.name);
    let controller_port = listeners
        .iter()
        .find(is_controller)
        .map(|l| l.port)
        .ok_or_else(|| {
            invalid(
                "listeners",
                &get(props, "listeners"),
                "a StatefulSet node needs a controller listener, e.g. PLAINTEXT://:9092,CONTROLLER://:9093",
            )
        })?;
    props
        .entry("node.id".to_owned())
        .or_insert_with(|| ordinal.to_string());
    props
        .entry("controller.quorum.voters".to_owned())
        .or_insert_with(|| {
            (0..replicas)
                .map(|i| format!("{i}@{set}-{i}.{suffix}:{controller_port}"))
                .collect::<Vec<_>>()
                .join(",")
        });
    if !props.contains_key("advertised.listeners") {
        let advertised: Vec<String> = listeners
            .iter()
            .filter(|l| !is_controller(l))
            .map(|l| format!("{}://{pod}.{suffix}:{}", l.name, l.port))
            .collect();
        props.insert("advertised.listeners".to_owned(), advertised.join(","));
    }
    Ok(())
}

/// Keys from `STROM_*` environment variables: `STROM_LOG_DIRS=/x` is `log.dirs=/x`. Variables
/// that name no known key are reported but not fatal, because Kubernetes injects
/// `<SERVICE>_PORT`-style variables for a service called `strom`.
pub fn env_layer(vars: impl Iterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("STROM_") else {
            continue;
        };
        if rest == "LOG" || rest == "LOG_FORMAT" {
            continue; // tracing settings, read by the binary
        }
        let key = rest.to_ascii_lowercase().replace('_', ".");
        let (canon, _) = canonical(&key, &value).unwrap_or((key.clone(), value.clone()));
        if broker_key_def(&canon).is_some() || NO_EFFECT_KEYS.contains(&canon.as_str()) {
            out.insert(key, value);
        } else {
            tracing::warn!(variable = %name, "environment variable names no Strom config key; ignored");
        }
    }
    out
}

/// Resolves the effective log settings of a topic: topic override, then dynamic broker
/// default, then static broker config, then Kafka's default.
pub fn log_config(
    broker: &BrokerConfig,
    dynamic: &BTreeMap<String, String>,
    topic: &BTreeMap<String, String>,
) -> LogConfig {
    let value = |name: &str| -> String {
        let def = TOPIC_KEYS.iter().find(|k| k.name == name);
        topic
            .get(name)
            .cloned()
            .or_else(|| def.and_then(|d| dynamic.get(d.broker_key).cloned()))
            .or_else(|| def.and_then(|d| broker.static_props.get(d.broker_key).cloned()))
            .or_else(|| def.map(|d| d.default.to_owned()))
            .unwrap_or_default()
    };
    let long = |name: &str, fallback: i64| value(name).trim().parse::<i64>().unwrap_or(fallback);
    let d = LogConfig::default();
    let policy = value("cleanup.policy");
    LogConfig {
        segment_bytes: long("segment.bytes", d.segment_bytes as i64).max(14) as u64,
        segment_ms: long("segment.ms", d.segment_ms),
        retention_ms: long("retention.ms", d.retention_ms),
        retention_bytes: long("retention.bytes", d.retention_bytes),
        segment_index_bytes: long("segment.index.bytes", i64::from(d.segment_index_bytes))
            .clamp(12, i64::from(i32::MAX)) as u32,
        index_interval_bytes: long("index.interval.bytes", i64::from(d.index_interval_bytes))
            .clamp(0, i64::from(i32::MAX)) as u32,
        flush_messages: long("flush.messages", d.flush_messages),
        flush_ms: long("flush.ms", d.flush_ms),
        flush_on_acks_all: broker.static_value("log.flush.acks.all").as_deref() != Some("false"),
        max_message_bytes: long("max.message.bytes", i64::from(d.max_message_bytes))
            .clamp(0, i64::from(i32::MAX)) as i32,
        compression: Codec::from_name(&value("compression.type")),
        timestamp_type: if value("message.timestamp.type") == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        },
        delete_retention: policy.split(',').any(|p| p.trim() == "delete"),
        min_insync_replicas: long("min.insync.replicas", 1).clamp(1, i64::from(i32::MAX)) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_statefulset_pod_derives_its_identity_from_its_name() {
        let pod = layer(&[
            ("kubernetes.pod.name", "strom-2"),
            ("kubernetes.namespace", "kafka"),
        ]);
        let env = layer(&[
            ("kubernetes.statefulset.replicas", "3"),
            ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
        ]);
        let c = BrokerConfig::from_layers(&[pod.clone(), env.clone()]).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(
            c.advertised.host,
            "strom-2.strom-headless.kafka.svc.cluster.local"
        );
        assert_eq!(c.advertised.port, 9092);
        let voters: Vec<_> = c.cluster.voters.iter().collect();
        assert_eq!(voters.len(), 3);
        assert_eq!(
            voters[0],
            (
                &0,
                &"strom-0.strom-headless.kafka.svc.cluster.local:9093".to_owned()
            )
        );
        // Explicit keys win over the derivation.
        let explicit = layer(&[
            ("node.id", "1"),
            ("advertised.listeners", "PLAINTEXT://x:1"),
        ]);
        let c = BrokerConfig::from_layers(&[pod.clone(), env.clone(), explicit]).unwrap();
        assert_eq!((c.node_id, c.advertised.host.as_str()), (1, "x"));
        // A pod name without an ordinal, or one beyond the replicas, is a clear error.
        for name in ["strom", "strom-3"] {
            let bad = layer(&[("kubernetes.pod.name", name)]);
            let e = BrokerConfig::from_layers(&[bad, env.clone()]).unwrap_err();
            assert!(e.to_string().contains("POD_NAME"), "{e}");
        }
        assert_eq!(
            pod_layer([("POD_NAME".to_owned(), "s-0".to_owned())].into_iter()),
            layer(&[("kubernetes.pod.name", "s-0")])
        );
    }

    #[test]
    fn defaults_are_a_single_node_on_9092() {
        let c = BrokerConfig::from_layers(&[]).expect("defaults");
        assert_eq!(c.listener.port, 9092);
        assert_eq!(c.advertised.host, "localhost");
        assert_eq!(c.log_dir, PathBuf::from("./data"));
        assert!(c.auto_create_topics);
        assert_eq!(c.num_partitions, 1);
    }

    #[test]
    fn properties_layers_aliases_and_errors() {
        let file = parse_properties("# comment\nbroker.id=3\nlog.retention.hours = 2\nlisteners: PLAINTEXT://127.0.0.1:19092\nnum.partitions \\\n  4\n");
        let c = BrokerConfig::from_layers(&[file.clone(), layer(&[("num.partitions", "5")])])
            .expect("ok");
        assert_eq!(c.node_id, 3);
        assert_eq!(c.num_partitions, 5);
        assert_eq!(c.listener.port, 19092);
        assert_eq!(
            c.static_props.get("log.retention.ms").map(String::as_str),
            Some("7200000")
        );
        let lc = log_config(&c, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(lc.retention_ms, 7_200_000);
        assert_eq!(
            BrokerConfig::from_layers(&[layer(&[("log.retention.bogus", "1")])]).err(),
            Some(ConfigError::Unknown("log.retention.bogus".into()))
        );
        assert!(matches!(
            BrokerConfig::from_layers(&[layer(&[("num.partitions", "many")])]),
            Err(ConfigError::Invalid { key, .. }) if key == "num.partitions"
        ));
    }

    #[test]
    fn topic_overrides_beat_broker_defaults() {
        let c = BrokerConfig::from_layers(&[layer(&[("compression.type", "gzip")])]).expect("ok");
        let topic = layer(&[("retention.ms", "1000")]);
        let lc = log_config(&c, &layer(&[("log.segment.bytes", "5000")]), &topic);
        assert_eq!(lc.retention_ms, 1000);
        assert_eq!(lc.segment_bytes, 5000);
        assert_eq!(lc.compression, Some(Codec::Gzip));
        assert!(validate_topic_config("compression.type", "brotli").is_err());
        assert!(validate_topic_config("nope", "1").is_err());
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
    }

    #[test]
    fn env_vars_map_to_keys() {
        let env = env_layer(
            vec![
                ("STROM_LOG_DIRS".to_owned(), "/x".to_owned()),
                ("STROM_SERVICE_HOST".to_owned(), "10.0.0.1".to_owned()),
                ("HOME".to_owned(), "/root".to_owned()),
            ]
            .into_iter(),
        );
        assert_eq!(env, layer(&[("log.dirs", "/x")]));
    }
}
