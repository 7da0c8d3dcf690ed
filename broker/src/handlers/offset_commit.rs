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
    let allowed = broker
        .check_coordinator(&group)
        .map_err(|e| e.code)
        .and_then(|()| {
            broker.groups.check_commit(
                &group,
                req.member_id.as_str(),
                req.group_instance_id.as_ref().map(|i| i.as_str()),
                req.generation_id_or_member_epoch,
                ctx.version,
            )
        });
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
                        if !topic
                            .as_ref()
                            .is_some_and(|tp| tp.has_partition(p.partition_index))
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
        let written = {
            let _gate = broker.offsets_gate.read().await;
            let written = store::write(&broker, &group, &records).await;
            match &written {
                Ok(()) => broker.groups.apply_commits(&group, &records),
                Err(e) => {
                    tracing::error!(group = %group, error = ?e, "offset commit could not be written")
                }
            }
            written
        };
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

/// OffsetCommit v0 and v1, which kafka-protocol no longer models but Kafka 3.9 still accepts
/// and sarama sends by default (v1 whenever `Consumer.Offsets.Retention` is 0). Their fields
/// are a subset of v2's, so they decode into the v2 struct and are answered in the v2 layout,
/// which is byte-identical to v0 and v1 responses.
pub mod legacy {
    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    /// The version whose request and response layouts stand in for v0 and v1.
    pub const AS_VERSION: i16 = 2;

    struct Reader(Bytes);

    impl Reader {
        fn need(&self, n: usize) -> Result<(), String> {
            if self.0.remaining() < n {
                return Err(format!(
                    "truncated: need {n} more bytes, have {}",
                    self.0.remaining()
                ));
            }
            Ok(())
        }
        fn i16(&mut self) -> Result<i16, String> {
            self.need(2)?;
            Ok(self.0.get_i16())
        }
        fn i32(&mut self) -> Result<i32, String> {
            self.need(4)?;
            Ok(self.0.get_i32())
        }
        fn i64(&mut self) -> Result<i64, String> {
            self.need(8)?;
            Ok(self.0.get_i64())
        }
        fn string(&mut self) -> Result<Option<StrBytes>, String> {
            let len = self.i16()?;
            if len < 0 {
                return Ok(None);
            }
            self.need(len as usize)?;
            StrBytes::from_utf8(self.0.split_to(len as usize))
                .map(Some)
                .map_err(|e| e.to_string())
        }
        fn required(&mut self) -> Result<StrBytes, String> {
            self.string()?
                .ok_or_else(|| "null where a string is required".to_owned())
        }
        /// An array length, bounded by the bytes left (every element takes at least one).
        fn count(&mut self) -> Result<usize, String> {
            let n = self.i32()?;
            let n = usize::try_from(n).map_err(|_| format!("negative array length {n}"))?;
            self.need(n)?;
            Ok(n)
        }
    }

    pub fn decode(version: i16, body: Bytes) -> Result<OffsetCommitRequest, String> {
        let mut r = Reader(body);
        let group = r.required()?;
        let (generation, member) = if version >= 1 {
            (r.i32()?, r.required()?)
        } else {
            (-1, StrBytes::default())
        };
        let mut topics = Vec::new();
        for _ in 0..r.count()? {
            let name = r.required()?;
            let mut partitions = Vec::new();
            for _ in 0..r.count()? {
                let index = r.i32()?;
                let offset = r.i64()?;
                if version >= 1 {
                    r.i64()?; // commit timestamp: Kafka stamps commits itself
                }
                let metadata = r.string()?;
                partitions.push(
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_committed_metadata(metadata),
                );
            }
            topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(name))
                    .with_partitions(partitions),
            );
        }
        Ok(OffsetCommitRequest::default()
            .with_group_id(GroupId(group))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(member)
            .with_retention_time_ms(-1)
            .with_topics(topics))
    }
}
