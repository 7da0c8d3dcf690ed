//! DescribeConfigs (key 32) for topics and this broker.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::configs::{broker_entries, topic_entries, Entry};
use super::{s, Ctx};
use crate::error::ApiError;

pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

pub fn handle(ctx: &Ctx<'_>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let catalog = &ctx.broker.catalog;
    let node = ctx.broker.node_id().to_string();
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.as_str().to_owned();
            let entries = match r.resource_type {
                TOPIC => catalog
                    .get(&name)
                    .map(|t| topic_entries(catalog, &t.configs()))
                    .ok_or_else(|| {
                        ApiError::new(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic '{name}' does not exist"),
                        )
                    }),
                BROKER if name == node || name.is_empty() => Ok(broker_entries(catalog)),
                BROKER => Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!("this is broker {node}, not {name}"),
                )),
                other => Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            };
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match entries {
                Ok(entries) => {
                    let keys = r
                        .configuration_keys
                        .map(|k| k.iter().map(|k| k.as_str().to_owned()).collect::<Vec<_>>());
                    out.with_configs(
                        entries
                            .into_iter()
                            .filter(|e| keys.as_ref().is_none_or(|k| k.contains(&e.name)))
                            .map(|e| {
                                describe(
                                    e,
                                    ctx.version,
                                    req.include_synonyms,
                                    req.include_documentation,
                                )
                            })
                            .collect(),
                    )
                }
                Err(e) => out
                    .with_error_code(e.code())
                    .with_error_message(e.message.map(s)),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe(e: Entry, version: i16, synonyms: bool, docs: bool) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(s(e.name))
        .with_value(Some(s(e.value)))
        .with_read_only(e.read_only)
        .with_config_source(e.source as i8)
        .with_is_sensitive(false);
    if synonyms {
        out.synonyms = e
            .synonyms
            .into_iter()
            .map(|(n, v, src)| {
                DescribeConfigsSynonym::default()
                    .with_name(s(n))
                    .with_value(Some(s(v)))
                    .with_source(src as i8)
            })
            .collect();
    }
    if version >= 3 {
        out.config_type = e.kind as i8;
        if docs {
            out.documentation = Some(s(e.doc));
        }
    }
    out
}
