//! JoinGroup (key 11): membership and the join phase of a rebalance.

use std::future::Future;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{s, Ctx};
use crate::group::{JoinRequest, JoinResult};

pub fn handle(
    ctx: &Ctx<'_>,
    req: JoinGroupRequest,
    client_host: String,
) -> impl Future<Output = JoinGroupResponse> + Send + 'static {
    let version = ctx.version;
    let join = JoinRequest {
        group_id: req.group_id.as_str().to_owned(),
        member_id: req.member_id.as_str().to_owned(),
        instance_id: req.group_instance_id.map(|i| i.as_str().to_owned()),
        client_id: ctx
            .header
            .client_id
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        client_host,
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.as_str().to_owned(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let rx = match ctx.broker.check_coordinator(&join.group_id) {
        Ok(()) => ctx.broker.groups.join(join),
        Err(e) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = tx.send(JoinResult {
                error: Some(e.code),
                generation: -1,
                member_id: join.member_id,
                ..Default::default()
            });
            rx
        }
    };
    async move {
        let r = rx.await.unwrap_or_else(|_| JoinResult {
            error: Some(ResponseError::CoordinatorNotAvailable),
            generation: -1,
            ..Default::default()
        });
        let mut resp = JoinGroupResponse::default()
            .with_error_code(r.error.map_or(0, |e| e.code()))
            .with_generation_id(r.generation)
            .with_leader(s(r.leader))
            .with_member_id(s(r.member_id))
            .with_members(
                r.members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        let m = JoinGroupResponseMember::default()
                            .with_member_id(s(id))
                            .with_metadata(metadata);
                        if version >= 5 {
                            m.with_group_instance_id(instance.map(s))
                        } else {
                            m
                        }
                    })
                    .collect(),
            );
        // Before v7 the protocol name is a non-nullable string.
        resp.protocol_name = Some(s(r.protocol_name.unwrap_or_default()));
        if version >= 7 {
            resp.protocol_type = r.protocol_type.map(s);
        }
        if version >= 9 {
            resp.skip_assignment = r.skip_assignment;
        }
        resp
    }
}
