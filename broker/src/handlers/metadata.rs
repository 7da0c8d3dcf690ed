//! Metadata (key 3): live brokers, cluster id, controller and topics with their partitions'
//! leaders, replicas and ISR, all from the local metadata image. Unknown topics are created
//! when both the request and `auto.create.topics.enable` allow it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use strom_raft::{MetadataImage, TopicImage};
use uuid::Uuid;

use super::describe_cluster::controller_id;
use super::{s, Ctx};
use crate::admin;
use crate::catalog::is_internal;

fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().map(|b| BrokerId(*b)).collect()
}

fn describe(version: i16, image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| !image.is_live(*r))
                .collect();
            let mut out = MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr));
            if p.leader < 0 {
                out.error_code = ResponseError::LeaderNotAvailable.code();
            }
            if version >= 5 {
                out.offline_replicas = ids(&offline);
            }
            if version >= 7 {
                out.leader_epoch = p.leader_epoch;
            }
            out
        })
        .collect();
    let mut out = MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(topic.name.clone()))))
        .with_is_internal(is_internal(&topic.name))
        .with_partitions(partitions);
    if version >= 10 {
        out.topic_id = topic.id;
    }
    out
}

fn error_topic(
    name: Option<TopicName>,
    id: Uuid,
    code: i16,
    version: i16,
) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default()
        .with_name(name)
        .with_error_code(code);
    if version >= 10 {
        out.topic_id = id;
    }
    out
}

pub fn handle(
    ctx: &Ctx<'_>,
    req: MetadataRequest,
) -> impl std::future::Future<Output = MetadataResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    let version = ctx.version;
    async move {
        // v0 has no null list: an empty list means "all topics".
        let wanted = match req.topics {
            Some(t) if !(version == 0 && t.is_empty()) => Some(t),
            _ => None,
        };
        let mut topics = Vec::new();
        match wanted {
            None => {
                let image = broker.quorum.image();
                topics.extend(image.topics.values().map(|t| describe(version, &image, t)));
            }
            Some(list) => {
                for wanted in list {
                    let out = match wanted.name {
                        Some(name) => {
                            let found = if req.allow_auto_topic_creation {
                                admin::get_or_auto_create(&broker, name.as_str())
                                    .await
                                    .map(|t| t.image())
                            } else {
                                broker
                                    .quorum
                                    .image()
                                    .topic(name.as_str())
                                    .cloned()
                                    .ok_or_else(|| ResponseError::UnknownTopicOrPartition.into())
                            };
                            match found {
                                Ok(t) => describe(version, &broker.quorum.image(), &t),
                                Err(e) => {
                                    let code = match e.code {
                                        // Still being created elsewhere: clients retry.
                                        ResponseError::RequestTimedOut => {
                                            ResponseError::LeaderNotAvailable.code()
                                        }
                                        _ => e.code(),
                                    };
                                    error_topic(Some(name), Uuid::nil(), code, version)
                                }
                            }
                        }
                        None => {
                            let image = broker.quorum.image();
                            match image.topic_by_id(&wanted.topic_id) {
                                Some(t) => describe(version, &image, t),
                                None => error_topic(
                                    None,
                                    wanted.topic_id,
                                    ResponseError::UnknownTopicId.code(),
                                    version,
                                ),
                            }
                        }
                    };
                    topics.push(out);
                }
            }
        }
        let image = broker.quorum.image();
        // Never an empty broker list: clients drop every connection they know on one. While
        // all brokers are fenced (a controller change), list the registered ones.
        let live = image.live_brokers().count() > 0;
        let brokers = image
            .brokers
            .values()
            .filter(|b| !live || !b.fenced)
            .map(|b| {
                let mut out = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(s(b.endpoint.host.clone()))
                    .with_port(i32::from(b.endpoint.port));
                if version >= 1 {
                    out.rack = b.rack.clone().map(s);
                }
                out
            })
            .collect();
        let mut resp = MetadataResponse::default()
            .with_brokers(brokers)
            .with_topics(topics);
        if version >= 1 {
            resp.controller_id = BrokerId(controller_id(&broker));
        }
        if version >= 2 {
            resp.cluster_id = Some(s(broker.cluster_id()));
        }
        resp
    }
}
