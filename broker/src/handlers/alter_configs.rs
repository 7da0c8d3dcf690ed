//! AlterConfigs (key 33): the legacy, whole-set form. A topic's overrides, or this broker's
//! dynamic configs, are replaced by exactly the entries given.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::describe_configs::{BROKER, TOPIC};
use std::sync::Arc;

use strom_raft::Command;

use super::{s, Ctx};
use crate::broker::Broker;
use crate::config;
use crate::error::ApiError;

/// Validates and stores a complete set of configs for one resource. Broker configs are
/// cluster-wide dynamic defaults (any broker id or the empty default name address them).
pub(super) async fn apply(
    broker: &Arc<Broker>,
    resource_type: i8,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), ApiError> {
    let catalog = &broker.catalog;
    let invalid =
        |e: config::ConfigError| ApiError::new(ResponseError::InvalidConfig, e.to_string());
    match resource_type {
        TOPIC => {
            let topic = catalog.get(name).ok_or_else(|| {
                ApiError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                )
            })?;
            for (k, v) in &configs {
                config::validate_topic_config(k, v).map_err(invalid)?;
            }
            if !validate_only {
                broker
                    .change(Command::SetTopicConfigs {
                        name: topic.name.clone(),
                        configs,
                    })
                    .await?;
            }
            Ok(())
        }
        BROKER => {
            let known = name.is_empty()
                || name
                    .parse::<i32>()
                    .is_ok_and(|id| broker.quorum.image().brokers.contains_key(&id));
            if !known {
                return Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!("broker {name} is not registered"),
                ));
            }
            for (k, v) in &configs {
                config::validate_dynamic_broker_config(k, v).map_err(|e| match e {
                    config::ConfigError::Unknown(k) => ApiError::new(
                        ResponseError::InvalidRequest,
                        format!("cannot update `{k}` dynamically"),
                    ),
                    other => invalid(other),
                })?;
            }
            if !validate_only {
                broker.change(Command::SetBrokerConfigs { configs }).await?;
            }
            Ok(())
        }
        other => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported"),
        )),
    }
}

pub fn handle(
    ctx: &Ctx<'_>,
    req: AlterConfigsRequest,
) -> impl std::future::Future<Output = AlterConfigsResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    async move {
        let mut responses = Vec::with_capacity(req.resources.len());
        for r in req.resources {
            let configs = r
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_owned(), v.as_str().to_owned()))
                })
                .collect();
            let out = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            responses.push(
                match apply(
                    &broker,
                    r.resource_type,
                    r.resource_name.as_str(),
                    configs,
                    req.validate_only,
                )
                .await
                {
                    Ok(()) => out,
                    Err(e) => out
                        .with_error_code(e.code())
                        .with_error_message(e.message.map(s)),
                },
            );
        }
        AlterConfigsResponse::default().with_responses(responses)
    }
}
