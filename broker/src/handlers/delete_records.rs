//! DeleteRecords (key 21): moves a partition's log start offset forward.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::Ctx;
use crate::error::ApiError;

pub fn handle(ctx: &Ctx<'_>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let catalog = &ctx.broker.catalog;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = catalog.get(t.name.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let out = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    let result = topic
                        .as_ref()
                        .ok_or_else(|| ApiError::from(ResponseError::UnknownTopicOrPartition))
                        .and_then(|t| t.leader_partition(p.partition_index))
                        .and_then(|part| part.log.delete_records(p.offset).map_err(ApiError::from));
                    match result {
                        Ok(low) => out.with_low_watermark(low),
                        Err(e) => out.with_error_code(e.code()).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
