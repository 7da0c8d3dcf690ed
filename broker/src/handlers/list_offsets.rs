//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3), earliest local (-4),
//! and the first offset at or after a timestamp, found through the time index.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::fetch::check_epoch;
use super::Ctx;
use crate::broker::Broker;
use crate::error::ApiError;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// Lookups by time read the log: the answer is computed on the blocking pool.
pub fn handle(
    ctx: &Ctx<'_>,
    req: ListOffsetsRequest,
) -> impl std::future::Future<Output = ListOffsetsResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    let version = ctx.version;
    async move {
        match strom_storage::io::blocking(move || answer(&broker, version, req)).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(error = %e, "ListOffsets task failed");
                ListOffsetsResponse::default()
            }
        }
    }
}

fn answer(broker: &Broker, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let catalog = &broker.catalog;
    let replica = *req.replica_id >= 0;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = catalog.get(t.name.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let out = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let found = (|| -> Result<(i64, i64, i32), ApiError> {
                        let part = topic
                            .as_ref()
                            .ok_or(ResponseError::UnknownTopicOrPartition)?
                            .leader_partition(p.partition_index)?;
                        if !replica {
                            part.check_lease()?;
                        }
                        let epoch = part.leader_epoch();
                        check_epoch(p.current_leader_epoch, epoch)?;
                        let log = &part.log;
                        let hw = log.high_watermark();
                        // A new leader's high watermark can lag the one its predecessor
                        // reported until the followers fetch again (KAFKA-2334): answer
                        // retriably rather than let a client see it go backwards.
                        if !replica && log.latest_epoch().is_some_and(|(_, start)| hw < start) {
                            return Err(ApiError::new(
                                ResponseError::OffsetNotAvailable,
                                "the new leader's high watermark has not caught up yet",
                            ));
                        }
                        // Clients never learn of records above the high watermark.
                        let visible = |found: Option<(i64, i64)>| match found {
                            Some((offset, ts)) if replica || offset < hw => (offset, ts, epoch),
                            _ => (-1, -1, -1),
                        };
                        Ok(match p.timestamp {
                            // Followers may ask for the log end; clients see the high watermark.
                            LATEST if replica => (log.log_end_offset(), -1, epoch),
                            LATEST => (hw, -1, epoch),
                            EARLIEST | EARLIEST_LOCAL => (log.log_start_offset(), -1, epoch),
                            MAX_TIMESTAMP => visible(log.max_timestamp_offset()?),
                            LATEST_TIERED => (-1, -1, -1),
                            ts if ts < 0 => {
                                return Err(ApiError::new(
                                    ResponseError::InvalidRequest,
                                    format!("unknown special timestamp {ts}"),
                                ))
                            }
                            ts => visible(log.offset_for_timestamp(ts)?),
                        })
                    })();
                    match found {
                        Ok((offset, timestamp, epoch)) => {
                            let out = out.with_offset(offset).with_timestamp(timestamp);
                            if version >= 4 {
                                out.with_leader_epoch(epoch)
                            } else {
                                out
                            }
                        }
                        Err(e) => out
                            .with_error_code(e.code())
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
