//! FindCoordinator (key 10): this node coordinates every group (batched keys from v4).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{s, Ctx};

const GROUP: i8 = 0;

pub fn handle(ctx: &Ctx<'_>, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let broker = ctx.broker;
    let adv = &broker.config.advertised;
    // The offsets topic must exist before a group can be coordinated.
    let ready = req.key_type != GROUP || broker.offsets_topic().is_ok();
    let error = match (req.key_type, ready) {
        (GROUP, true) => None,
        (GROUP, false) => Some(ResponseError::CoordinatorNotAvailable),
        // Transactions are not implemented: no transaction coordinator exists.
        _ => Some(ResponseError::CoordinatorNotAvailable),
    };
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key);
                match error {
                    None => c
                        .with_node_id(BrokerId(broker.node_id()))
                        .with_host(s(adv.host.clone()))
                        .with_port(i32::from(adv.port)),
                    Some(e) => c
                        .with_error_code(e.code())
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match error {
        None => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(broker.node_id()))
            .with_host(s(adv.host.clone()))
            .with_port(i32::from(adv.port)),
        Some(e) => FindCoordinatorResponse::default()
            .with_error_code(e.code())
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
