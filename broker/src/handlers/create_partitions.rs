//! CreatePartitions (key 37): grows a topic's partition count.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{s, Ctx};
use strom_raft::Command;

use crate::admin;
use crate::error::ApiError;

pub fn handle(
    ctx: &Ctx<'_>,
    req: CreatePartitionsRequest,
) -> impl std::future::Future<Output = CreatePartitionsResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    async move {
        let mut results = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let outcome: Result<(), ApiError> = async {
                let topic = broker
                    .catalog
                    .get(t.name.as_str())
                    .ok_or(ResponseError::UnknownTopicOrPartition)?;
                let current = topic.partition_count();
                if t.count <= current {
                    return Err(ApiError::new(
                        ResponseError::InvalidPartitions,
                        format!("topic currently has {current} partitions, {} would not be an increase", t.count),
                    ));
                }
                let image = broker.quorum.image();
                let rf = topic.image().partitions.first().map_or(1, |p| p.replicas.len()) as i16;
                let assignments = match &t.assignments {
                    Some(a) => {
                        let a: Vec<Vec<i32>> = a
                            .iter()
                            .map(|x| x.broker_ids.iter().map(|b| **b).collect())
                            .collect();
                        if a.len() as i32 != t.count - current {
                            return Err(ApiError::new(
                                ResponseError::InvalidReplicaAssignment,
                                format!("expected {} assignments", t.count - current),
                            ));
                        }
                        admin::check_assignments(&image, &a)?;
                        a
                    }
                    None => admin::assign_replicas(&image, &topic.name, current, t.count - current, rf)?,
                };
                if req.validate_only {
                    return Ok(());
                }
                broker
                    .change(Command::CreatePartitions {
                        name: topic.name.clone(),
                        assignments,
                    })
                    .await?;
                tracing::info!(topic = %topic.name, from = current, to = t.count, "added partitions");
                Ok(())
            }
            .await;
            let out = CreatePartitionsTopicResult::default().with_name(t.name);
            results.push(match outcome {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code())
                    .with_error_message(e.message.map(s)),
            });
        }
        CreatePartitionsResponse::default().with_results(results)
    }
}
