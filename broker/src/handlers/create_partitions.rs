//! CreatePartitions (key 37): grows a topic's partition count.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{s, Ctx};
use crate::error::ApiError;

pub fn handle(ctx: &Ctx<'_>, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let catalog = &ctx.broker.catalog;
    let node = ctx.broker.node_id();
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let outcome = (|| -> Result<(), ApiError> {
                let topic = catalog
                    .get(t.name.as_str())
                    .ok_or(ResponseError::UnknownTopicOrPartition)?;
                if let Some(assignments) = &t.assignments {
                    let new = t.count - topic.partition_count();
                    if assignments.len() as i32 != new
                        || assignments
                            .iter()
                            .any(|a| a.broker_ids.len() != 1 || *a.broker_ids[0] != node)
                    {
                        return Err(ApiError::new(
                            ResponseError::InvalidReplicaAssignment,
                            format!("expected {new} assignments, each to broker {node}"),
                        ));
                    }
                }
                catalog.add_partitions(&topic, t.count, req.validate_only)
            })();
            let out = CreatePartitionsTopicResult::default().with_name(t.name);
            match outcome {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code())
                    .with_error_message(e.message.map(s)),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
