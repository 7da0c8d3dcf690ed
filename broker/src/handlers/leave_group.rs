//! LeaveGroup (key 13): one member before v3, a batch of members (static ones by instance id)
//! from v3.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::Ctx;

pub fn handle(ctx: &Ctx<'_>, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let groups = &ctx.broker.groups;
    let group = req.group_id.as_str();
    if let Err(e) = ctx.broker.check_coordinator(group) {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    if ctx.version < 3 {
        let result = groups.leave(group, req.member_id.as_str(), None);
        return LeaveGroupResponse::default().with_error_code(result.err().map_or(0, |e| e.code()));
    }
    let members = req
        .members
        .into_iter()
        .map(|m| {
            let result = groups.leave(
                group,
                m.member_id.as_str(),
                m.group_instance_id.as_ref().map(|i| i.as_str()),
            );
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(result.err().map_or(0, |e| e.code()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
