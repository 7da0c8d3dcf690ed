//! DescribeCluster (key 60): this node as the whole cluster and its controller.

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
    let adv = &broker.config.advertised;
    let node = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.node_id()))
        .with_host(s(adv.host.clone()))
        .with_port(i32::from(adv.port))
        .with_rack(broker.config.rack.clone().map(s));
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(s(broker.catalog.cluster_id.clone()))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_brokers(vec![node]);
    if ctx.version >= 1 {
        resp.endpoint_type = BROKERS;
    }
    resp
}
