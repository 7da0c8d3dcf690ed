//! OffsetDelete (key 47): removes committed offsets of topics the group no longer consumes.

use std::future::Future;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::Ctx;
use crate::group::store;

pub fn handle(
    ctx: &Ctx<'_>,
    req: OffsetDeleteRequest,
) -> impl Future<Output = OffsetDeleteResponse> + Send + 'static {
    let broker = Arc::clone(ctx.broker);
    async move {
        let group = req.group_id.as_str().to_owned();
        if let Err(e) = broker.check_coordinator(&group) {
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
        let subscribed = match broker.groups.subscribed_topics(&group) {
            Ok(t) => t,
            Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
        };
        let mut tombstones = Vec::new();
        let mut topics = Vec::new();
        for t in req.topics {
            let busy = subscribed.contains(t.name.as_str());
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    if !busy {
                        tombstones.push(((t.name.as_str().to_owned(), p.partition_index), None));
                    }
                    let code = if busy {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else {
                        0
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            topics.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        if let Err(e) = store::write(&broker, &group, &tombstones).await {
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
        broker.groups.apply_commits(&group, &tombstones);
        OffsetDeleteResponse::default().with_topics(topics)
    }
}
