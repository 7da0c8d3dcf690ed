//! DescribeCluster (key 60): the live brokers and the active controller, from the local
//! metadata image.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{s, Ctx};

/// DescribeCluster's endpoint type for brokers.
const BROKERS: i8 = 1;

pub fn handle(ctx: &Ctx<'_>, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = ctx.broker;
    if ctx.version >= 1 && req.endpoint_type != BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::MismatchedEndpointType.code())
            .with_error_message(Some(s("this listener serves broker endpoints")))
            .with_endpoint_type(BROKERS);
    }
    let image = broker.quorum.image();
    let nodes = image
        .live_brokers()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(s(b.endpoint.host.clone()))
                .with_port(i32::from(b.endpoint.port))
                .with_rack(b.rack.clone().map(s))
        })
        .collect();
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(s(broker.cluster_id()))
        .with_controller_id(BrokerId(controller_id(broker)))
        .with_brokers(nodes);
    if ctx.version >= 1 {
        resp.endpoint_type = BROKERS;
    }
    resp
}

/// The active controller when it is a live broker (every node is both here), else this node:
/// clients send controller-bound requests there and any node forwards them.
pub(super) fn controller_id(broker: &crate::broker::Broker) -> i32 {
    let image = broker.quorum.image();
    broker
        .quorum
        .leader()
        .and_then(|l| i32::try_from(l).ok())
        .filter(|l| image.is_live(*l))
        .unwrap_or_else(|| broker.node_id())
}
