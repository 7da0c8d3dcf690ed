//! SyncGroup (key 14): the leader's assignment, passed to every member untouched.

use std::future::Future;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{s, Ctx};
use crate::group::SyncResult;

pub fn handle(
    ctx: &Ctx<'_>,
    req: SyncGroupRequest,
) -> impl Future<Output = SyncGroupResponse> + Send + 'static {
    let version = ctx.version;
    let check = ctx.broker.check_coordinator(req.group_id.as_str());
    let rx = match check {
        Ok(()) => ctx.broker.groups.sync(
            req.group_id.as_str(),
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|i| i.as_str()),
            req.generation_id,
            (
                req.protocol_type.as_ref().map(|p| p.as_str()),
                req.protocol_name.as_ref().map(|p| p.as_str()),
            ),
            req.assignments
                .into_iter()
                .map(|a| (a.member_id.as_str().to_owned(), a.assignment))
                .collect(),
        ),
        Err(e) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(SyncResult {
                error: Some(e.code),
                ..Default::default()
            });
            rx
        }
    };
    async move {
        let r = rx.await.unwrap_or_else(|_| SyncResult {
            error: Some(ResponseError::CoordinatorNotAvailable),
            ..Default::default()
        });
        let mut resp = SyncGroupResponse::default()
            .with_error_code(r.error.map_or(0, |e| e.code()))
            .with_assignment(r.assignment);
        if version >= 5 {
            resp.protocol_type = r.protocol_type.map(s);
            resp.protocol_name = r.protocol_name.map(s);
        }
        resp
    }
}
