//! Fetch (key 1). Reads stored batches as they are (no re-encoding), honouring the response-
//! and partition-level byte limits (the first batch is whole even if larger, per KIP-74), and
//! long-polls: it answers as soon as `min_bytes` are available or `max_wait_ms` has passed.
//! Fetch sessions (KIP-227) are declined with session id 0, which every client handles by
//! sending full fetch requests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use strom_storage::StorageError;
use uuid::Uuid;

use super::Ctx;
use crate::catalog::Partition;
use crate::error::ApiError;

struct Wanted {
    index: i32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    /// A follower whose last fetched epoch ends earlier here (KIP-320): (epoch, end offset).
    diverging: Option<(i32, i64)>,
    partition: Result<Arc<Partition>, ApiError>,
}

struct TopicWanted {
    name: TopicName,
    id: Uuid,
    parts: Vec<Wanted>,
}

/// Checks a client's view of the leader epoch against ours.
pub(super) fn check_epoch(requested: i32, ours: i32) -> Result<(), ApiError> {
    if requested < 0 || requested == ours {
        Ok(())
    } else if requested < ours {
        Err(ResponseError::FencedLeaderEpoch.into())
    } else {
        Err(ResponseError::UnknownLeaderEpoch.into())
    }
}

pub fn handle(
    ctx: &Ctx<'_>,
    req: FetchRequest,
) -> impl Future<Output = FetchResponse> + Send + 'static {
    let version = ctx.version;
    let catalog = &ctx.broker.catalog;
    let session_error = version >= 7 && (req.session_id != 0 || req.session_epoch > 0);
    let mut topics: Vec<TopicWanted> = req
        .topics
        .into_iter()
        .map(|t| {
            let (topic, missing) = if version >= 13 {
                (
                    catalog.get_by_id(&t.topic_id),
                    ResponseError::UnknownTopicId,
                )
            } else {
                (
                    catalog.get(t.topic.as_str()),
                    ResponseError::UnknownTopicOrPartition,
                )
            };
            let parts = t
                .partitions
                .into_iter()
                .map(|p| Wanted {
                    index: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    current_leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: if version >= 12 {
                        p.last_fetched_epoch
                    } else {
                        -1
                    },
                    diverging: None,
                    partition: match &topic {
                        None => Err(missing.into()),
                        Some(tp) => tp.leader_partition(p.partition),
                    },
                })
                .collect();
            TopicWanted {
                name: t.topic,
                id: t.topic_id,
                parts,
            }
        })
        .collect();
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 {
        i32::MAX as usize
    } else {
        req.max_bytes as usize
    };
    let read_committed = req.isolation_level == 1;
    // A follower's fetch (replica id set): it reads up to the log end, and its position is
    // what moves the high watermark and the ISR.
    let replica = if version >= 15 {
        *req.replica_state.replica_id
    } else {
        *req.replica_id
    };
    let broker = ctx.broker.clone();
    async move {
        if session_error {
            return FetchResponse::default()
                .with_error_code(ResponseError::FetchSessionIdNotFound.code());
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        if replica >= 0 {
            for w in topics.iter_mut().flat_map(|t| t.parts.iter_mut()) {
                let Ok(p) = &w.partition else { continue };
                if check_epoch(w.current_leader_epoch, p.leader_epoch()).is_err() {
                    continue;
                }
                if w.last_fetched_epoch >= 0 {
                    let (epoch, end) = p.log.end_offset_for_epoch(w.last_fetched_epoch);
                    if epoch < w.last_fetched_epoch || end < w.offset {
                        // Its log holds history ours does not: its position proves nothing.
                        if epoch >= 0 {
                            w.diverging = Some((epoch, end));
                        }
                        continue;
                    }
                }
                if let Some(isr) = p.follower_fetched(replica, w.offset) {
                    broker.alter_isr(p, isr);
                }
            }
        }
        // Subscribe before the first read so an append between read and wait is not missed.
        let mut watchers: Vec<_> = topics
            .iter()
            .flat_map(|t| t.parts.iter())
            .filter_map(|w| w.partition.as_ref().ok().map(|p| p.log.subscribe_end()))
            .collect();
        loop {
            for w in &mut watchers {
                w.borrow_and_update();
            }
            let (resp, total, any_error) = if needs_disk(&topics, replica >= 0) {
                let read = strom_storage::io::blocking(move || {
                    let r = read_all(
                        &topics,
                        version,
                        max_bytes,
                        read_committed,
                        replica >= 0,
                        true,
                    );
                    (topics, r)
                })
                .await;
                match read {
                    Ok((back, r)) => {
                        topics = back;
                        r
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "fetch read task failed");
                        return FetchResponse::default()
                            .with_error_code(ResponseError::UnknownServerError.code());
                    }
                }
            } else {
                // Watermarks only: a record appended since the check is read next round.
                read_all(
                    &topics,
                    version,
                    max_bytes,
                    read_committed,
                    replica >= 0,
                    false,
                )
            };
            if total >= min_bytes
                || any_error
                || watchers.is_empty()
                || tokio::time::Instant::now() >= deadline
            {
                count_bytes_out(&topics, &resp, replica >= 0);
                return resp;
            }
            let changes =
                futures::future::select_all(watchers.iter_mut().map(|w| w.changed().boxed()));
            tokio::select! {
                _ = changes => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// Where a read stops: followers read up to the log end, consumers never above the high
/// watermark.
fn read_bound(p: &Partition, replica: bool) -> i64 {
    if replica {
        i64::MAX
    } else {
        p.log.high_watermark()
    }
}

/// Whether answering needs the disk: some partition has records to read at the position asked.
/// Long polls that find nothing new are answered on the async worker from the log's marks.
fn needs_disk(topics: &[TopicWanted], replica: bool) -> bool {
    topics.iter().flat_map(|t| t.parts.iter()).any(|w| {
        let Ok(p) = &w.partition else { return false };
        w.diverging.is_none() && p.log.has_data(w.offset, read_bound(p, replica))
    })
}

/// Bytes out per topic, counted once for the response actually sent.
fn count_bytes_out(topics: &[TopicWanted], resp: &FetchResponse, replica: bool) {
    for (t, r) in topics.iter().zip(&resp.responses) {
        let bytes: usize = r
            .partitions
            .iter()
            .filter_map(|p| p.records.as_ref().map(Bytes::len))
            .sum();
        if bytes > 0 {
            crate::observe::fetched(t.name.as_str(), bytes as u64, replica);
        }
    }
}

fn read_all(
    topics: &[TopicWanted],
    version: i16,
    max_bytes: usize,
    read_committed: bool,
    replica: bool,
    disk: bool,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(topics.len());
    for t in topics {
        let mut parts = Vec::with_capacity(t.parts.len());
        for w in &t.parts {
            let mut out = PartitionData::default().with_partition_index(w.index);
            if let (Some((epoch, end)), Ok(p)) = (w.diverging, &w.partition) {
                out.diverging_epoch = EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end);
                parts.push(
                    out.with_high_watermark(p.log.high_watermark())
                        .with_last_stable_offset(p.log.high_watermark())
                        .with_log_start_offset(p.log.log_start_offset())
                        .with_records(Some(Bytes::new())),
                );
                any_error = true;
                continue;
            }
            let result =
                w.partition.as_ref().map_err(Clone::clone).and_then(|p| {
                    check_epoch(w.current_leader_epoch, p.leader_epoch())?;
                    if !replica {
                        p.check_lease()?;
                    }
                    let limit = if disk {
                        w.max_bytes.min(max_bytes.saturating_sub(total))
                    } else {
                        0
                    };
                    let upper = read_bound(p, replica);
                    p.log.read(w.offset, limit, disk && total == 0, upper).map_err(|e| {
                    if !matches!(e, StorageError::OffsetOutOfRange { .. }) {
                        tracing::error!(log = p.log.name(), error = %e, "fetch read failed");
                    }
                    ApiError::from(e)
                })
                });
            match result {
                Ok(r) => {
                    total += r.data.len();
                    out = out
                        .with_high_watermark(r.high_watermark)
                        .with_last_stable_offset(r.high_watermark)
                        .with_log_start_offset(r.log_start_offset)
                        .with_records(Some(r.data));
                }
                Err(e) => {
                    any_error = true;
                    let (hw, start) = w
                        .partition
                        .as_ref()
                        .map(|p| (p.log.high_watermark(), p.log.log_start_offset()))
                        .unwrap_or((-1, -1));
                    out = out
                        .with_error_code(e.code())
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(start)
                        .with_records(Some(Bytes::new()));
                }
            }
            if read_committed {
                out.aborted_transactions = Some(Vec::new());
            }
            parts.push(out);
        }
        let mut topic = FetchableTopicResponse::default().with_partitions(parts);
        if version >= 13 {
            topic.topic_id = t.id;
        } else {
            topic.topic = t.name.clone();
        }
        responses.push(topic);
    }
    (
        FetchResponse::default().with_responses(responses),
        total,
        any_error,
    )
}
