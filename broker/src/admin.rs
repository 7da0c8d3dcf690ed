//! Metadata changes requested by clients (create/delete topics, partitions, configs): checked
//! against the local image, then proposed to the controller quorum from whichever node
//! received them. Each returns once this node has applied the change, so a Metadata request
//! that follows on the same connection sees it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use strom_raft::{BrokerId, Command, MetadataImage, Outcome, ProposeError, Rejection};
use uuid::Uuid;

use crate::broker::Broker;
use crate::catalog::{validate_topic_name, Topic};
use crate::config;
use crate::error::ApiError;

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        let code = match e {
            ProposeError::NoQuorum(_) | ProposeError::NotLeader => ResponseError::RequestTimedOut,
            ProposeError::Rejected(_) => ResponseError::InvalidRequest,
            ProposeError::Shutdown => ResponseError::UnknownServerError,
        };
        ApiError::new(code, format!("metadata change failed: {e}"))
    }
}

pub fn rejection(r: Rejection) -> ApiError {
    let code = match r {
        Rejection::TopicAlreadyExists => ResponseError::TopicAlreadyExists,
        Rejection::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        Rejection::InvalidPartitions => ResponseError::InvalidPartitions,
        Rejection::InvalidReplicaAssignment | Rejection::UnknownBroker => {
            ResponseError::InvalidReplicaAssignment
        }
        Rejection::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        Rejection::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        Rejection::InvalidUpdateVersion => ResponseError::InvalidUpdateVersion,
        Rejection::IneligibleReplica => ResponseError::IneligibleReplica,
        Rejection::StaleBrokerEpoch => ResponseError::StaleBrokerEpoch,
    };
    ApiError::new(code, format!("the controller refused the change: {r:?}"))
}

impl Broker {
    /// Proposes `cmd` and waits until this node applied it; errors become Kafka errors.
    pub async fn change(&self, cmd: Command) -> Result<Outcome, ApiError> {
        let (offset, outcome) = self.quorum.propose(cmd).await?;
        if let Outcome::Rejected(r) = outcome {
            return Err(rejection(r));
        }
        self.wait_reconciled(offset, Duration::from_secs(10)).await;
        Ok(outcome)
    }
}

/// Spreads `count` partitions starting at index `first` over the live brokers, rack-aware
/// when racks are set (racks alternate in the broker order, as Kafka does).
pub fn assign_replicas(
    image: &MetadataImage,
    name: &str,
    first: i32,
    count: i32,
    replication: i16,
) -> Result<Vec<Vec<BrokerId>>, ApiError> {
    let mut by_rack: BTreeMap<String, Vec<BrokerId>> = BTreeMap::new();
    for b in image.live_brokers() {
        by_rack
            .entry(b.rack.clone().unwrap_or_default())
            .or_default()
            .push(b.id);
    }
    let mut brokers = Vec::new();
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for ids in by_rack.values() {
            if let Some(b) = ids.get(i) {
                brokers.push(*b);
            }
        }
    }
    let n = brokers.len();
    if replication as usize > n || replication <= 0 {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {replication} is larger than the number of available brokers ({n})"),
        ));
    }
    // Start at a name-dependent broker so topics do not all lead on the same node.
    let start = name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    Ok((first..first + count)
        .map(|p| {
            (0..replication as usize)
                .map(|j| brokers[(start + p as usize + j) % n])
                .collect()
        })
        .collect())
}

/// Validates a CreateTopics entry and returns (partitions, replication factor, assignments).
pub fn plan_topic(
    broker: &Broker,
    image: &MetadataImage,
    name: &str,
    partitions: i32,
    replication: i16,
    assignments: Option<Vec<Vec<BrokerId>>>,
    configs: &BTreeMap<String, String>,
) -> Result<(i32, i16, Vec<Vec<BrokerId>>), ApiError> {
    validate_topic_name(name)?;
    for (k, v) in configs {
        config::validate_topic_config(k, v)
            .map_err(|e| ApiError::new(ResponseError::InvalidConfig, e.to_string()))?;
    }
    if image.topics.contains_key(name) {
        return Err(ApiError::new(
            ResponseError::TopicAlreadyExists,
            format!("topic '{name}' already exists"),
        ));
    }
    let collides = |a: &str| a.replace('.', "_");
    if let Some(other) = image.topics.keys().find(|t| collides(t) == collides(name)) {
        return Err(ApiError::new(ResponseError::InvalidTopicException, format!("topic '{name}' collides with existing topic '{other}' ('.' and '_' are interchangeable in metric names)")));
    }
    if let Some(a) = assignments {
        check_assignments(image, &a)?;
        let rf = a.first().map_or(0, Vec::len) as i16;
        return Ok((a.len() as i32, rf, a));
    }
    let partitions = if partitions == -1 {
        broker.config.num_partitions
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
        broker.config.default_replication_factor
    } else {
        replication
    };
    if replication <= 0 {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            "replication factor must be larger than 0",
        ));
    }
    let a = assign_replicas(image, name, 0, partitions, replication)?;
    Ok((partitions, replication, a))
}

pub fn check_assignments(image: &MetadataImage, a: &[Vec<BrokerId>]) -> Result<(), ApiError> {
    let bad = |why: String| Err(ApiError::new(ResponseError::InvalidReplicaAssignment, why));
    let Some(first) = a.first() else {
        return bad("no partitions assigned".into());
    };
    for replicas in a {
        if replicas.is_empty() || replicas.len() != first.len() {
            return bad("every partition needs the same, non-zero number of replicas".into());
        }
        for (i, b) in replicas.iter().enumerate() {
            if !image.brokers.contains_key(b) {
                return bad(format!("broker {b} is not registered"));
            }
            if replicas[..i].contains(b) {
                return bad(format!("broker {b} appears twice in one partition"));
            }
        }
    }
    Ok(())
}

/// Creates a topic (after [`plan_topic`]) and returns it once applied here.
pub async fn create_topic(
    broker: &Arc<Broker>,
    name: &str,
    assignments: Vec<Vec<BrokerId>>,
    configs: BTreeMap<String, String>,
) -> Result<Arc<Topic>, ApiError> {
    let count = assignments.len();
    broker
        .change(Command::CreateTopic {
            name: name.to_owned(),
            id: Uuid::new_v4(),
            assignments,
            configs,
        })
        .await?;
    tracing::info!(topic = name, partitions = count, "created topic");
    broker
        .catalog
        .get(name)
        .ok_or_else(|| ResponseError::UnknownTopicOrPartition.into())
}

/// Returns the topic, creating it with broker defaults when auto-creation is on.
pub async fn get_or_auto_create(broker: &Arc<Broker>, name: &str) -> Result<Arc<Topic>, ApiError> {
    if let Some(t) = broker.catalog.get(name) {
        return Ok(t);
    }
    if !broker.config.auto_create_topics {
        return Err(ResponseError::UnknownTopicOrPartition.into());
    }
    let image = broker.quorum.image();
    let (_, _, a) = plan_topic(broker, &image, name, -1, -1, None, &BTreeMap::new())?;
    match create_topic(broker, name, a, BTreeMap::new()).await {
        Err(e) if e.code == ResponseError::TopicAlreadyExists => broker
            .catalog
            .get(name)
            .ok_or_else(|| ResponseError::UnknownTopicOrPartition.into()),
        other => other,
    }
}
