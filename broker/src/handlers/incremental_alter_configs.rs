//! IncrementalAlterConfigs (key 44): SET, DELETE, APPEND and SUBTRACT on single keys of a
//! topic's overrides or this broker's dynamic configs.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::describe_configs::{BROKER, TOPIC};
use super::{alter_configs, s, Ctx};
use crate::broker::Broker;
use crate::config::{Kind, TOPIC_KEYS};
use crate::error::ApiError;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

fn current(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    let catalog = &broker.catalog;
    match resource_type {
        TOPIC => catalog.get(name).map(|t| t.configs()).ok_or_else(|| {
            ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        }),
        BROKER => Ok(catalog.dynamic_configs()),
        other => Err(ApiError::new(
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported"),
        )),
    }
}

fn is_list(key: &str) -> bool {
    TOPIC_KEYS
        .iter()
        .any(|k| (k.name == key || k.broker_key == key) && k.kind == Kind::List)
}

pub fn handle(
    ctx: &Ctx<'_>,
    req: IncrementalAlterConfigsRequest,
) -> impl std::future::Future<Output = IncrementalAlterConfigsResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    async move {
        let mut responses = Vec::with_capacity(req.resources.len());
        for r in req.resources {
            let name = r.resource_name.as_str().to_owned();
            let planned = current(&broker, r.resource_type, &name).and_then(|mut configs| {
                for c in &r.configs {
                    let key = c.name.as_str().to_owned();
                    let value = c.value.as_ref().map(|v| v.as_str().to_owned());
                    match (c.config_operation, value) {
                        (SET, Some(v)) => {
                            configs.insert(key, v);
                        }
                        (DELETE, _) => {
                            configs.remove(&key);
                        }
                        (APPEND | SUBTRACT, Some(v)) if is_list(&key) => {
                            let mut items: Vec<String> = configs
                                .get(&key)
                                .map(|cur| {
                                    cur.split(',')
                                        .map(|x| x.trim().to_owned())
                                        .filter(|x| !x.is_empty())
                                        .collect()
                                })
                                .unwrap_or_default();
                            for item in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                                if c.config_operation == APPEND && !items.iter().any(|i| i == item)
                                {
                                    items.push(item.to_owned());
                                } else if c.config_operation == SUBTRACT {
                                    items.retain(|i| i != item);
                                }
                            }
                            configs.insert(key, items.join(","));
                        }
                        (APPEND | SUBTRACT, _) => {
                            return Err(ApiError::new(
                                ResponseError::InvalidConfig,
                                format!("`{key}` is not a list; APPEND and SUBTRACT need one"),
                            ));
                        }
                        (SET, None) => {
                            return Err(ApiError::new(
                                ResponseError::InvalidRequest,
                                format!("SET of `{key}` has no value"),
                            ))
                        }
                        (op, _) => {
                            return Err(ApiError::new(
                                ResponseError::InvalidRequest,
                                format!("unknown config operation {op}"),
                            ))
                        }
                    }
                }
                Ok(configs)
            });
            let outcome = match planned {
                Ok(configs) => {
                    alter_configs::apply(
                        &broker,
                        r.resource_type,
                        &name,
                        configs,
                        req.validate_only,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let out = AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            responses.push(match outcome {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code())
                    .with_error_message(e.message.map(s)),
            });
        }
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }
}
