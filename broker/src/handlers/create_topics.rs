//! CreateTopics (key 19), including validate-only requests.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::configs::topic_entries;
use super::{s, Ctx};
use crate::admin;
use crate::error::ApiError;

pub fn handle(
    ctx: &Ctx<'_>,
    req: CreateTopicsRequest,
) -> impl std::future::Future<Output = CreateTopicsResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    let version = ctx.version;
    async move {
        let mut seen = std::collections::HashSet::new();
        let mut results = Vec::with_capacity(req.topics.len());
        for t in req.topics {
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
            let outcome: Result<(i32, i16, uuid::Uuid), ApiError> = async {
                if !seen.insert(name.clone()) {
                    return Err(ApiError::new(
                        ResponseError::InvalidRequest,
                        format!("topic '{name}' appears more than once in the request"),
                    ));
                }
                let assignments = if t.assignments.is_empty() {
                    None
                } else {
                    if t.num_partitions != -1 || t.replication_factor != -1 {
                        return Err(ApiError::new(
                            ResponseError::InvalidRequest,
                            "give either assignments or partitions and replication factor",
                        ));
                    }
                    let mut sorted: Vec<_> = t.assignments.iter().collect();
                    sorted.sort_by_key(|a| a.partition_index);
                    if sorted
                        .iter()
                        .enumerate()
                        .any(|(i, a)| a.partition_index != i as i32)
                    {
                        return Err(ApiError::new(
                            ResponseError::InvalidReplicaAssignment,
                            "assignments must cover partitions 0..n exactly once",
                        ));
                    }
                    Some(
                        sorted
                            .iter()
                            .map(|a| a.broker_ids.iter().map(|b| **b).collect())
                            .collect(),
                    )
                };
                let image = broker.quorum.image();
                let (partitions, replication, assignments) = admin::plan_topic(
                    &broker,
                    &image,
                    &name,
                    t.num_partitions,
                    t.replication_factor,
                    assignments,
                    &configs,
                )?;
                if req.validate_only {
                    return Ok((partitions, replication, uuid::Uuid::nil()));
                }
                let topic =
                    admin::create_topic(&broker, &name, assignments, configs.clone()).await?;
                Ok((topic.partition_count(), replication, topic.id))
            }
            .await;
            let mut result = CreatableTopicResult::default().with_name(t.name);
            match outcome {
                Ok((partitions, replication, id)) => {
                    if version >= 5 {
                        result.num_partitions = partitions;
                        result.replication_factor = replication;
                        result.configs = Some(
                            topic_entries(&broker.catalog, &configs)
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
                    if version >= 7 {
                        result.topic_id = id;
                    }
                }
                Err(e) => {
                    result.error_code = e.code();
                    if version >= 1 {
                        result.error_message = e.message.map(s);
                    }
                    if version >= 5 {
                        result.num_partitions = -1;
                        result.replication_factor = -1;
                    }
                }
            }
            results.push(result);
        }
        CreateTopicsResponse::default().with_topics(results)
    }
}
