//! InitProducerId (key 22) for idempotent, non-transactional producers: a fresh producer id,
//! or (v3+, KIP-360) the same id with its epoch bumped when the producer presents its current
//! one.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Ctx;

pub fn handle(
    ctx: &Ctx<'_>,
    req: InitProducerIdRequest,
) -> impl std::future::Future<Output = InitProducerIdResponse> + Send + 'static {
    let broker = ctx.broker.clone();
    async move {
        if req.transactional_id.is_some() {
            // No transaction coordinator yet: a transactional producer cannot start.
            return InitProducerIdResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
        let (id, epoch) = match (*req.producer_id, req.producer_epoch) {
            (id, epoch) if id >= 0 && (0..i16::MAX - 1).contains(&epoch) => (Ok(id), epoch + 1),
            _ => (
                broker
                    .producer_ids
                    .allocate(&broker.quorum, broker.node_id())
                    .await,
                0,
            ),
        };
        match id {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(e) => {
                tracing::warn!(error = ?e, "could not allocate a producer id");
                InitProducerIdResponse::default()
                    .with_error_code(e.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        }
    }
}
