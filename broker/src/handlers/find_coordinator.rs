//! FindCoordinator (key 10): a group's coordinator is the leader of its `__consumer_offsets`
//! partition (batched keys from v4). The offsets topic is created on first use.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{s, Ctx};
use crate::admin;
use crate::broker::Broker;
use crate::catalog::Topic;
use crate::error::ApiError;
use crate::group::store;

const GROUP: i8 = 0;

/// The offsets topic, created with `offsets.topic.*` settings when it does not exist yet. As
/// in Kafka, never with fewer replicas than `offsets.topic.replication.factor`: until that many
/// brokers are alive, groups get COORDINATOR_NOT_AVAILABLE (a silently smaller replica set
/// would stay that small forever).
pub async fn offsets_topic(broker: &Arc<Broker>) -> Result<Arc<Topic>, ApiError> {
    if let Ok(t) = broker.offsets_topic() {
        return Ok(t);
    }
    let image = broker.quorum.image();
    let live = image.live_brokers().count();
    let rf = broker.config.cluster.offsets_replication_factor;
    if live < rf as usize {
        return Err(ApiError::new(
            ResponseError::CoordinatorNotAvailable,
            format!(
                "{live} live brokers do not meet offsets.topic.replication.factor={rf} for {}",
                store::TOPIC
            ),
        ));
    }
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_owned(), "compact".to_owned());
    configs.insert(
        "segment.bytes".to_owned(),
        broker.config.offsets_segment_bytes.to_string(),
    );
    let (_, _, assignments) = admin::plan_topic(
        broker,
        &image,
        store::TOPIC,
        broker.config.offsets_topic_partitions,
        rf,
        None,
        &BTreeMap::new(),
    )?;
    match admin::create_topic(broker, store::TOPIC, assignments, configs).await {
        Err(e) if e.code == ResponseError::TopicAlreadyExists => broker.offsets_topic(),
        other => other,
    }
}

/// (node, host, port) of the group's coordinator.
async fn locate(broker: &Arc<Broker>, group: &str) -> Result<(i32, String, i32), ApiError> {
    let topic = offsets_topic(broker)
        .await
        .map_err(|_| ApiError::from(ResponseError::CoordinatorNotAvailable))?;
    let image = topic.image();
    let index = store::partition_for(group, image.partitions.len() as i32);
    let leader = image
        .partitions
        .get(index as usize)
        .map_or(-1, |p| p.leader);
    let reg = broker
        .quorum
        .image()
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .cloned()
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((leader, reg.endpoint.host, i32::from(reg.endpoint.port)))
}

pub fn handle(
    ctx: &Ctx<'_>,
    req: FindCoordinatorRequest,
) -> impl std::future::Future<Output = FindCoordinatorResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    let version = ctx.version;
    async move {
        let keys: Vec<String> = if version >= 4 {
            req.coordinator_keys.iter().map(|k| k.to_string()).collect()
        } else {
            vec![req.key.to_string()]
        };
        let mut found = Vec::with_capacity(keys.len());
        for key in &keys {
            found.push(if req.key_type == GROUP {
                locate(&broker, key).await
            } else {
                // Transactions are not implemented: no transaction coordinator exists.
                Err(ResponseError::CoordinatorNotAvailable.into())
            });
        }
        if version >= 4 {
            let coordinators = keys
                .into_iter()
                .zip(found)
                .map(|(key, f)| {
                    let c = Coordinator::default().with_key(s(key));
                    match f {
                        Ok((node, host, port)) => c
                            .with_node_id(BrokerId(node))
                            .with_host(s(host))
                            .with_port(port),
                        Err(e) => c
                            .with_error_code(e.code())
                            .with_node_id(BrokerId(-1))
                            .with_port(-1),
                    }
                })
                .collect();
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        match found.into_iter().next() {
            Some(Ok((node, host, port))) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(node))
                .with_host(s(host))
                .with_port(port),
            Some(Err(e)) => FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
            None => FindCoordinatorResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        }
    }
}
