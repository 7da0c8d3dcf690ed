//! DeleteGroups (key 42): empty groups only; their committed offsets are deleted too.

use std::future::Future;
use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::Ctx;
use crate::group::store;

pub fn handle(
    ctx: &Ctx<'_>,
    req: DeleteGroupsRequest,
) -> impl Future<Output = DeleteGroupsResponse> + Send + 'static {
    let broker = Arc::clone(ctx.broker);
    async move {
        let mut results = Vec::new();
        for id in req.groups_names {
            let code = match broker
                .check_coordinator(id.as_str())
                .map_err(|e| e.code)
                .and_then(|()| broker.groups.delete(id.as_str()))
            {
                Ok(keys) => {
                    let tombstones: Vec<_> = keys.into_iter().map(|k| (k, None)).collect();
                    match store::write(&broker, id.as_str(), &tombstones).await {
                        Ok(()) => 0,
                        Err(e) => e.code(),
                    }
                }
                Err(e) => e.code(),
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(code),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }
}
