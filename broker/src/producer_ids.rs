//! Producer-id allocation that never hands out the same id twice, across restarts and across
//! brokers: each broker takes blocks of ids from the metadata quorum (Kafka's
//! AllocateProducerIds), so a block is committed before any id in it is used.

use parking_lot::Mutex;
use strom_raft::{Command, Outcome, Quorum};

use crate::error::ApiError;

#[derive(Default)]
pub struct ProducerIds {
    /// (next id to hand out, end of the current block).
    block: Mutex<(i64, i64)>,
    /// Serialises block requests so a burst of InitProducerId asks the quorum once.
    refill: tokio::sync::Mutex<()>,
}

impl ProducerIds {
    /// A fresh producer id.
    pub async fn allocate(&self, quorum: &Quorum, broker: i32) -> Result<i64, ApiError> {
        loop {
            if let Some(id) = self.take() {
                return Ok(id);
            }
            let _refill = self.refill.lock().await;
            if self.take_peek() {
                continue;
            }
            let (_, outcome) = quorum
                .propose(Command::AllocateProducerIds { broker })
                .await?;
            match outcome {
                Outcome::ProducerIds { start, len } => *self.block.lock() = (start, start + len),
                Outcome::Rejected(r) => return Err(crate::admin::rejection(r)),
                other => {
                    return Err(ApiError::new(
                        kafka_protocol::error::ResponseError::UnknownServerError,
                        format!("unexpected producer-id allocation outcome {other:?}"),
                    ))
                }
            }
        }
    }

    fn take(&self) -> Option<i64> {
        let mut b = self.block.lock();
        (b.0 < b.1).then(|| {
            b.0 += 1;
            b.0 - 1
        })
    }

    fn take_peek(&self) -> bool {
        let b = self.block.lock();
        b.0 < b.1
    }
}
