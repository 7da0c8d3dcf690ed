//! DeleteRecords (key 21): moves a partition's log start offset forward, on the writer thread.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::Ctx;
use crate::error::ApiError;

pub fn handle(
    ctx: &Ctx<'_>,
    req: DeleteRecordsRequest,
) -> impl std::future::Future<Output = DeleteRecordsResponse> + Send + 'static {
    let catalog = &ctx.broker.catalog;
    let topics: Vec<_> = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = catalog.get(t.name.as_str());
            let partitions: Vec<_> = t
                .partitions
                .into_iter()
                .map(|p| {
                    let part = topic
                        .as_ref()
                        .ok_or_else(|| ApiError::from(ResponseError::UnknownTopicOrPartition))
                        .and_then(|t| t.leader_partition(p.partition_index));
                    (p.partition_index, p.offset, part)
                })
                .collect();
            (t.name, partitions)
        })
        .collect();
    async move {
        let mut out = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut results = Vec::with_capacity(partitions.len());
            for (index, offset, part) in partitions {
                let result = match part {
                    Ok(part) => part
                        .on_writer(move |p| p.log.delete_records(offset))
                        .await
                        .map_err(ApiError::from),
                    Err(e) => Err(e),
                };
                let r = DeleteRecordsPartitionResult::default().with_partition_index(index);
                results.push(match result {
                    Ok(low) => r.with_low_watermark(low),
                    Err(e) => r.with_error_code(e.code()).with_low_watermark(-1),
                });
            }
            out.push(
                DeleteRecordsTopicResult::default()
                    .with_name(name)
                    .with_partitions(results),
            );
        }
        DeleteRecordsResponse::default().with_topics(out)
    }
}
