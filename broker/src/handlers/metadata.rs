//! Metadata (key 3): brokers, cluster id, controller and topics with their partitions. Unknown
//! topics are created when both the request and `auto.create.topics.enable` allow it.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{s, Ctx};
use crate::catalog::Topic;

fn describe(ctx: &Ctx<'_>, topic: &Arc<Topic>) -> MetadataResponseTopic {
    let node = BrokerId(ctx.broker.node_id());
    let partitions = topic
        .partitions
        .read()
        .iter()
        .map(|p| {
            let mut out = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(node)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node]);
            if ctx.version >= 7 {
                out.leader_epoch = p.leader_epoch;
            }
            out
        })
        .collect();
    let mut out = MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(topic.name.clone()))))
        .with_is_internal(topic.is_internal())
        .with_partitions(partitions);
    if ctx.version >= 10 {
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

pub fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let broker = ctx.broker;
    let catalog = &broker.catalog;
    // v0 has no null list: an empty list means "all topics".
    let wanted = match req.topics {
        Some(t) if !(ctx.version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let topics = match wanted {
        None => catalog.all().iter().map(|t| describe(ctx, t)).collect(),
        Some(list) => list
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => {
                    let lookup = if req.allow_auto_topic_creation {
                        catalog.get_or_auto_create(name.as_str())
                    } else {
                        catalog
                            .get(name.as_str())
                            .ok_or_else(|| ResponseError::UnknownTopicOrPartition.into())
                    };
                    match lookup {
                        Ok(t) => describe(ctx, &t),
                        Err(e) => error_topic(Some(name), Uuid::nil(), e.code(), ctx.version),
                    }
                }
                None => match catalog.get_by_id(&wanted.topic_id) {
                    Some(t) => describe(ctx, &t),
                    None => error_topic(
                        None,
                        wanted.topic_id,
                        ResponseError::UnknownTopicId.code(),
                        ctx.version,
                    ),
                },
            })
            .collect(),
    };
    let adv = &broker.config.advertised;
    let mut self_broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.node_id()))
        .with_host(s(adv.host.clone()))
        .with_port(i32::from(adv.port));
    if ctx.version >= 1 {
        self_broker.rack = broker.config.rack.clone().map(s);
    }
    let mut resp = MetadataResponse::default()
        .with_brokers(vec![self_broker])
        .with_topics(topics);
    if ctx.version >= 1 {
        resp.controller_id = BrokerId(broker.node_id());
    }
    if ctx.version >= 2 {
        resp.cluster_id = Some(s(catalog.cluster_id.clone()));
    }
    resp
}
