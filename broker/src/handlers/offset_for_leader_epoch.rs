//! OffsetForLeaderEpoch (key 23): where a leader epoch ended in this leader's log. Followers
//! use it to truncate divergent history before fetching (KIP-101/279); consumers use it to
//! detect log truncation after a leader change (KIP-320).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::fetch::check_epoch;
use super::Ctx;
use crate::error::ApiError;

pub fn handle(ctx: &Ctx<'_>, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let catalog = &ctx.broker.catalog;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = catalog.get(t.topic.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let out = EpochEndOffset::default().with_partition(p.partition);
                    let found = (|| -> Result<(i32, i64), ApiError> {
                        let part = topic
                            .as_ref()
                            .ok_or(ResponseError::UnknownTopicOrPartition)?
                            .leader_partition(p.partition)?;
                        check_epoch(p.current_leader_epoch, part.leader_epoch())?;
                        Ok(part.log.end_offset_for_epoch(p.leader_epoch))
                    })();
                    match found {
                        Ok((epoch, end)) => out.with_leader_epoch(epoch).with_end_offset(end),
                        Err(e) => out
                            .with_error_code(e.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
