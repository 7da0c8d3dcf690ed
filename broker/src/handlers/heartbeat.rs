//! Heartbeat (key 12).

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::Ctx;

pub fn handle(ctx: &Ctx<'_>, req: HeartbeatRequest) -> HeartbeatResponse {
    if let Err(e) = ctx.broker.check_coordinator(req.group_id.as_str()) {
        return HeartbeatResponse::default().with_error_code(e.code());
    }
    let result = ctx.broker.groups.heartbeat(
        req.group_id.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_ref().map(|i| i.as_str()),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
