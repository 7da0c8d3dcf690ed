//! OffsetCommit (key 8): member commits (generation-checked) and simple commits from
//! consumers that use `assign`, written to the offsets topic before they are acknowledged.

use std::future::Future;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::Ctx;
use crate::group::{commit_timestamp, store, Committed};

/// A topic's partitions with the record to write or the error to report.
type TopicPlan = (
    kafka_protocol::messages::TopicName,
    Vec<(i32, Result<Committed, ResponseError>)>,
);

/// Kafka's `offset.metadata.max.bytes`.
const MAX_METADATA: usize = 4096;

pub fn handle(
    ctx: &Ctx<'_>,
    req: OffsetCommitRequest,
) -> impl Future<Output = OffsetCommitResponse> + Send + 'static {
    let broker = Arc::clone(ctx.broker);
    let group = req.group_id.as_str().to_owned();
    let allowed = broker.groups.check_commit(
        &group,
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|i| i.as_str()),
        req.generation_id_or_member_epoch,
        ctx.version,
    );
    let now = commit_timestamp();
    // Per partition: Ok(record to write) or the error to report.
    let plan: Vec<TopicPlan> = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.catalog.get(t.name.as_str());
            let parts = t
                .partitions
                .into_iter()
                .map(|p| {
                    let verdict = allowed.and_then(|()| {
                        if topic
                            .as_ref()
                            .and_then(|tp| tp.partition(p.partition_index))
                            .is_none()
                        {
                            return Err(ResponseError::UnknownTopicOrPartition);
                        }
                        let metadata = p
                            .committed_metadata
                            .map(|m| m.as_str().to_owned())
                            .unwrap_or_default();
                        if metadata.len() > MAX_METADATA {
                            return Err(ResponseError::OffsetMetadataTooLarge);
                        }
                        Ok(Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_timestamp: now,
                        })
                    });
                    (p.partition_index, verdict)
                })
                .collect();
            (t.name, parts)
        })
        .collect();
    async move {
        let records: Vec<((String, i32), Option<Committed>)> = plan
            .iter()
            .flat_map(|(name, parts)| {
                parts.iter().filter_map(move |(p, v)| {
                    v.as_ref()
                        .ok()
                        .map(|c| ((name.as_str().to_owned(), *p), Some(c.clone())))
                })
            })
            .collect();
        let written = store::write(
            &broker.catalog,
            broker.config.offsets_topic_partitions,
            &group,
            &records,
        )
        .await;
        match &written {
            Ok(()) => broker.groups.apply_commits(&group, &records),
            Err(e) => {
                tracing::error!(group = %group, error = ?e, "offset commit could not be written")
            }
        }
        let topics = plan
            .into_iter()
            .map(|(name, parts)| {
                let partitions = parts
                    .into_iter()
                    .map(|(p, v)| {
                        let code = match (&v, &written) {
                            (Err(e), _) => e.code(),
                            (Ok(_), Err(e)) => e.code(),
                            (Ok(_), Ok(())) => 0,
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }
}
