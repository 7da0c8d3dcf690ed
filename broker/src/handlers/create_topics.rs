//! CreateTopics (key 19), including validate-only requests.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::configs::topic_entries;
use super::{s, Ctx};
use crate::error::ApiError;

pub fn handle(ctx: &Ctx<'_>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let catalog = &ctx.broker.catalog;
    let node = ctx.broker.node_id();
    let mut seen = std::collections::HashSet::new();
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.as_str().to_owned();
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned()))
                })
                .collect();
            let outcome = (|| -> Result<(i32, i16, uuid::Uuid), ApiError> {
                if !seen.insert(name.clone()) {
                    return Err(ApiError::new(
                        ResponseError::InvalidRequest,
                        format!("topic '{name}' appears more than once in the request"),
                    ));
                }
                let (mut partitions, mut replication) = (t.num_partitions, t.replication_factor);
                if !t.assignments.is_empty() {
                    if partitions != -1 || replication != -1 {
                        return Err(ApiError::new(
                            ResponseError::InvalidRequest,
                            "give either assignments or partitions and replication factor",
                        ));
                    }
                    if t.assignments
                        .iter()
                        .any(|a| a.broker_ids.len() != 1 || *a.broker_ids[0] != node)
                    {
                        return Err(ApiError::new(
                            ResponseError::InvalidReplicaAssignment,
                            format!("this cluster has one broker, id {node}"),
                        ));
                    }
                    partitions = t.assignments.len() as i32;
                    replication = 1;
                }
                let replication_out = if replication == -1 {
                    catalog.broker_config().default_replication_factor
                } else {
                    replication
                };
                if req.validate_only {
                    let partitions =
                        catalog.check_create(&name, partitions, replication, &configs)?;
                    return Ok((partitions, replication_out, uuid::Uuid::nil()));
                }
                let topic = catalog.create(&name, partitions, replication, configs.clone())?;
                Ok((topic.partition_count(), replication_out, topic.id))
            })();
            let mut result = CreatableTopicResult::default().with_name(t.name);
            match outcome {
                Ok((partitions, replication, id)) => {
                    if ctx.version >= 5 {
                        result.num_partitions = partitions;
                        result.replication_factor = replication;
                        result.configs = Some(
                            topic_entries(catalog, &configs)
                                .into_iter()
                                .map(|e| {
                                    CreatableTopicConfigs::default()
                                        .with_name(s(e.name))
                                        .with_value(Some(s(e.value)))
                                        .with_read_only(e.read_only)
                                        .with_config_source(e.source as i8)
                                })
                                .collect(),
                        );
                    }
                    if ctx.version >= 7 {
                        result.topic_id = id;
                    }
                }
                Err(e) => {
                    result.error_code = e.code();
                    if ctx.version >= 1 {
                        result.error_message = e.message.map(s);
                    }
                    if ctx.version >= 5 {
                        result.num_partitions = -1;
                        result.replication_factor = -1;
                    }
                }
            }
            result
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}
