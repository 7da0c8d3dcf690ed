//! AlterPartitionReassignments (key 45) and ListPartitionReassignments (key 46). A move adds
//! the new replicas first; the controller drops the old ones once every target replica is in
//! the ISR, so a partition never has fewer in-sync copies during the move.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use strom_raft::Command;

use super::{s, Ctx};
use crate::error::ApiError;

pub fn alter(
    ctx: &Ctx<'_>,
    req: AlterPartitionReassignmentsRequest,
) -> impl std::future::Future<Output = AlterPartitionReassignmentsResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    let version = ctx.version;
    async move {
        let mut responses = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in t.partitions {
                let outcome: Result<(), ApiError> = async {
                    let image = broker.quorum.image();
                    let state = image
                        .topic(t.name.as_str())
                        .and_then(|tp| tp.partitions.get(usize::try_from(p.partition_index).ok()?))
                        .ok_or(ResponseError::UnknownTopicOrPartition)?;
                    let replicas: Option<Vec<i32>> =
                        p.replicas.map(|r| r.into_iter().map(|b| *b).collect());
                    match &replicas {
                        None if state.adding.is_empty() && state.removing.is_empty() => {
                            return Err(ApiError::new(
                                ResponseError::NoReassignmentInProgress,
                                "no reassignment of this partition is in progress",
                            ));
                        }
                        None => {}
                        Some(r) => {
                            crate::admin::check_assignments(&image, std::slice::from_ref(r))?;
                            let current = state.replicas.len() - state.adding.len();
                            if version >= 1
                                && !req.allow_replication_factor_change
                                && r.len() != current
                            {
                                return Err(ApiError::new(
                                    ResponseError::InvalidReplicationFactor,
                                    "the request does not allow changing the replication factor",
                                ));
                            }
                        }
                    }
                    broker
                        .change(Command::Reassign {
                            topic: t.name.as_str().to_owned(),
                            partition: p.partition_index,
                            replicas,
                        })
                        .await?;
                    Ok(())
                }
                .await;
                let mut r = ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index);
                if let Err(e) = outcome {
                    r.error_code = e.code();
                    r.error_message = e.message.map(s);
                }
                parts.push(r);
            }
            responses.push(
                ReassignableTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        let mut resp = AlterPartitionReassignmentsResponse::default().with_responses(responses);
        if version >= 1 {
            resp.allow_replication_factor_change = req.allow_replication_factor_change;
        }
        resp
    }
}

pub fn list(
    ctx: &Ctx<'_>,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = ctx.broker.quorum.image();
    let wanted = |topic: &str, p: i32| match &req.topics {
        None => true,
        Some(list) => list
            .iter()
            .any(|t| t.name.as_str() == topic && t.partition_indexes.contains(&p)),
    };
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let topics = image
        .topics
        .values()
        .filter_map(|t| {
            let parts: Vec<_> = t
                .partitions
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    (!p.adding.is_empty() || !p.removing.is_empty()) && wanted(&t.name, *i as i32)
                })
                .map(|(i, p)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i as i32)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            (!parts.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(TopicName(s(t.name.clone())))
                    .with_partitions(parts)
            })
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
