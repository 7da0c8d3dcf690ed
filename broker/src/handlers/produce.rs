//! Produce (key 0). Where a produce is validated: [`prepare`] (header and CRC32C, never
//! decompressed; re-compressed only when the topic's `compression.type` names another codec).
//! The appends are queued on the writer thread in request order before this returns, through
//! the replica's one write path ([`crate::replica::Partition::append`]), which also waits for
//! what `acks` asks.

use std::future::Future;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use strom_protocol::batch::{self, BatchError};
use strom_protocol::records;
use strom_storage::{AppendResult, Log};

use super::{s, Ctx};
use crate::error::ApiError;
use crate::observe;

/// Bound on decompressed size when a batch must be re-compressed.
const RECOMPRESS_LIMIT: usize = 256 << 20;

type Appending = BoxFuture<'static, Result<AppendResult, ApiError>>;

/// One partition's write, queued (or refused before it was).
struct Appended {
    index: i32,
    outcome: Result<Appending, ApiError>,
}

fn batch_error(e: &BatchError) -> ApiError {
    let code = match e {
        BatchError::CrcMismatch { .. }
        | BatchError::Truncated { .. }
        | BatchError::InvalidLength(_)
        | BatchError::UnknownCodec(_) => ResponseError::CorruptMessage,
        BatchError::UnsupportedMagic(_) | BatchError::CountMismatch { .. } => {
            ResponseError::InvalidRecord
        }
    };
    ApiError::new(code, e.to_string())
}

/// Validates one partition's records and returns them ready to append.
fn prepare(data: Option<Bytes>, log: &Log) -> Result<Bytes, ApiError> {
    let cfg = log.config();
    let data = data.unwrap_or_default();
    if data.is_empty() {
        return Err(ApiError::new(
            ResponseError::InvalidRecord,
            "produce request carries no record batch",
        ));
    }
    let header = batch::validate(&data).map_err(|e| batch_error(&e))?;
    if header.total_len() != data.len() {
        return Err(ApiError::new(
            ResponseError::InvalidRecord,
            "produce requests v3+ must carry exactly one record batch per partition",
        ));
    }
    if data.len() > cfg.max_message_bytes.max(0) as usize {
        return Err(ApiError::new(
            ResponseError::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes {}",
                data.len(),
                cfg.max_message_bytes
            ),
        ));
    }
    if header.is_control() {
        return Err(ApiError::new(
            ResponseError::InvalidRecord,
            "clients may not write control batches",
        ));
    }
    if header.is_transactional() {
        return Err(ApiError::new(
            ResponseError::InvalidTxnState,
            "transactions are not supported yet",
        ));
    }
    let codec = header.codec().map_err(|e| batch_error(&e))?;
    match cfg.compression {
        Some(target) if target != codec => records::recompress(&data, target, RECOMPRESS_LIMIT)
            .map(Bytes::from)
            .map_err(|e| ApiError::new(ResponseError::CorruptMessage, e.to_string())),
        // No copy: the log writes the request's bytes with its own offsets patched in.
        _ => Ok(data),
    }
}

/// How a produce request is answered.
pub enum Outcome<F, Q> {
    /// acks=1 or all: the response once the writes are done as `acks` asks.
    Respond(F),
    /// acks=0: no response; resolves to why the connection must close if a write failed.
    Silent(Q),
    /// acks=0 and a write was refused before it was queued: the connection must close.
    Close(String),
}

pub fn handle(
    ctx: &Ctx<'_>,
    req: ProduceRequest,
) -> Outcome<
    impl Future<Output = ProduceResponse> + Send + 'static,
    impl Future<Output = Option<String>> + Send + 'static,
> {
    let acks = req.acks;
    let version = ctx.version;
    let valid_acks = matches!(acks, -1..=1);
    let catalog = &ctx.broker.catalog;
    let timeout = std::time::Duration::from_millis(req.timeout_ms.clamp(1, 300_000) as u64);
    let mut topics: Vec<(kafka_protocol::messages::TopicName, Vec<Appended>)> = Vec::new();
    for t in req.topic_data {
        let topic = catalog.get(t.name.as_str());
        let parts = t
            .partition_data
            .into_iter()
            .map(|p| {
                let index = p.index;
                let outcome = (|| -> Result<Appending, ApiError> {
                    if !valid_acks {
                        return Err(ApiError::new(ResponseError::InvalidRequiredAcks, format!("acks must be -1, 0 or 1, got {acks}")));
                    }
                    if topic.as_ref().is_some_and(|t| t.is_internal()) {
                        // Only the broker writes its internal topics (committed offsets).
                        return Err(ApiError::new(ResponseError::InvalidTopicException, "clients may not write to internal topics"));
                    }
                    let partition = topic
                        .as_ref()
                        .ok_or(ResponseError::UnknownTopicOrPartition)?
                        .leader_partition(index)?;
                    let data = prepare(p.records, &partition.log)?;
                    let bytes = data.len() as u64;
                    let appending = partition.append(data, acks, timeout);
                    let topic = partition.topic.clone();
                    Ok(async move {
                        let result = appending.await;
                        if let Ok(r) = &result {
                            if !r.duplicate {
                                let records = (r.last_offset - r.base_offset + 1).max(0) as u64;
                                observe::produced(&topic, records, bytes);
                            }
                        }
                        result
                    }
                    .boxed())
                })();
                if let Err(e) = &outcome {
                    tracing::debug!(topic = %t.name.as_str(), partition = index, error = ?e, "produce rejected");
                }
                Appended { index, outcome }
            })
            .collect();
        topics.push((t.name, parts));
    }
    if acks == 0 {
        // There is no response to carry an error: like Kafka, close the connection so the
        // producer notices and refreshes its metadata.
        let refused = topics
            .iter()
            .flat_map(|(name, parts)| parts.iter().map(move |p| (name, p)))
            .find_map(|(name, p)| {
                p.outcome
                    .as_ref()
                    .err()
                    .map(|e| acks0_failure(name, p.index, e))
            });
        if let Some(reason) = refused {
            return Outcome::Close(reason);
        }
        return Outcome::Silent(async move {
            for (name, parts) in topics {
                for p in parts {
                    if let Ok(appending) = p.outcome {
                        if let Err(e) = appending.await {
                            return Some(acks0_failure(&name, p.index, &e));
                        }
                    }
                }
            }
            None
        });
    }
    Outcome::Respond(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, parts) in topics {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                let outcome = match p.outcome {
                    Ok(appending) => appending.await,
                    Err(e) => Err(e),
                };
                out.push(partition_response(p.index, outcome, version));
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(out),
            );
        }
        ProduceResponse::default().with_responses(responses)
    })
}

/// Why an acks=0 connection closes.
fn acks0_failure(topic: &kafka_protocol::messages::TopicName, index: i32, e: &ApiError) -> String {
    format!("acks=0 produce to {}-{index} failed: {e:?}", topic.as_str())
}

fn partition_response(
    index: i32,
    outcome: Result<AppendResult, ApiError>,
    version: i16,
) -> PartitionProduceResponse {
    let resp = PartitionProduceResponse::default().with_index(index);
    match outcome {
        Ok(r) => resp
            .with_base_offset(r.base_offset)
            .with_log_append_time_ms(r.log_append_time)
            .with_log_start_offset(r.log_start_offset),
        Err(e) => {
            let mut resp = resp
                .with_error_code(e.code())
                .with_base_offset(-1)
                .with_log_start_offset(-1);
            if version >= 8 {
                resp.error_message = e.message.clone().map(s);
                if matches!(
                    e.code,
                    ResponseError::InvalidRecord | ResponseError::CorruptMessage
                ) {
                    resp.record_errors = vec![BatchIndexAndErrorMessage::default()
                        .with_batch_index(0)
                        .with_batch_index_error_message(e.message.map(s))];
                }
            }
            resp
        }
    }
}
