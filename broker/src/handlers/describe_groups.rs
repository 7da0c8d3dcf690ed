//! DescribeGroups (key 15).

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{s, Ctx};

pub fn handle(ctx: &Ctx<'_>, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let out = DescribedGroup::default().with_group_id(id.clone());
            if let Err(e) = ctx.broker.check_coordinator(id.as_str()) {
                return out.with_error_code(e.code());
            }
            match ctx.broker.groups.describe(id.as_str()) {
                // Kafka describes an unknown group as Dead with no members.
                None => out.with_group_state(s("Dead")),
                Some(d) => out
                    .with_group_state(s(d.state.name()))
                    .with_protocol_type(s(d.protocol_type))
                    .with_protocol_data(s(d.protocol_name))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                let out = DescribedGroupMember::default()
                                    .with_member_id(s(m.member_id))
                                    .with_client_id(s(m.client_id))
                                    .with_client_host(s(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if ctx.version >= 4 {
                                    out.with_group_instance_id(m.instance_id.map(s))
                                } else {
                                    out
                                }
                            })
                            .collect(),
                    ),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
