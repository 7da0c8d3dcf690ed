//! One module per Kafka API, behind one dispatch `match`. Versions are checked once, before the
//! body is decoded; a handler sees a decoded request and returns the response message (or a
//! future of it when it has to wait for a flush or for data).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::broker::Broker;
pub use frame::Frame;

mod alter_configs;
mod api_versions;
mod configs;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod frame;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod partition_reassignments;
mod produce;
mod sync_group;

pub use api_versions::unsupported_version_response;

/// Every API Strom implements, with the exact version range it answers. ApiVersions
/// advertises this table and the dispatcher refuses anything outside it.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

/// The supported range for an API key, if Strom implements it.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, ..)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// An encoded response frame (length prefix included), now or later. `Quiet` is for acks=0
/// produce requests, which Kafka never answers: it resolves once the writes are done, to an
/// error when one failed and the connection must close.
pub enum Reply {
    Now(Frame),
    Later(BoxFuture<'static, Result<Frame, HandlerError>>),
    Quiet(BoxFuture<'static, Result<(), HandlerError>>),
}

/// Failures that end the connection: the request could not be decoded, or (a bug) the
/// response could not be encoded for the version asked.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("cannot decode {api:?} v{version} request: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("{0}")]
    Close(String),
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Encodes `body` with its response header as one length-prefixed frame.
pub fn encode_response<R: Encodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, HandlerError> {
    encode_into(api, version, correlation_id, body, BytesMut::with_capacity).map(BytesMut::freeze)
}

/// Writes the length prefix, the response header and `body` into the buffer `new_buf` makes
/// for the frame's total length.
fn encode_into<R, B>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
    new_buf: impl FnOnce(usize) -> B,
) -> Result<B, HandlerError>
where
    R: Encodable + HeaderVersion,
    B: ByteBufMut,
{
    let err = |e: &dyn std::fmt::Display| HandlerError::Encode {
        api,
        version,
        reason: e.to_string(),
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version).map_err(|e| err(&e))?
        + body.compute_size(version).map_err(|e| err(&e))?;
    let mut buf = new_buf(4 + size);
    buf.put_slice(&(size as i32).to_be_bytes());
    header
        .encode(&mut buf, header_version)
        .map_err(|e| err(&e))?;
    body.encode(&mut buf, version).map_err(|e| err(&e))?;
    Ok(buf)
}

fn decode<T: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<T, HandlerError> {
    T::decode(body, version).map_err(|e| HandlerError::Decode {
        api,
        version,
        reason: e.to_string(),
    })
}

/// Context every handler gets.
pub struct Ctx<'a> {
    pub broker: &'a Arc<Broker>,
    pub version: i16,
    pub header: &'a RequestHeader,
    /// The client's address, as DescribeGroups reports it.
    pub peer: &'a str,
}

fn now<R: Encodable + HeaderVersion>(
    api: ApiKey,
    ctx: &Ctx<'_>,
    body: R,
) -> Result<Reply, HandlerError> {
    encode_response(api, ctx.version, ctx.header.correlation_id, &body)
        .map(|b| Reply::Now(b.into()))
}

fn later<R, F>(api: ApiKey, ctx: &Ctx<'_>, fut: F) -> Reply
where
    R: Encodable + HeaderVersion,
    F: std::future::Future<Output = R> + Send + 'static,
{
    let (version, correlation_id) = (ctx.version, ctx.header.correlation_id);
    Reply::Later(Box::pin(async move {
        let body = fut.await;
        encode_response(api, version, correlation_id, &body).map(Frame::from)
    }))
}

/// A fetch answered later, its record bytes referenced by the frame rather than copied.
fn later_fetch<F>(ctx: &Ctx<'_>, fut: F) -> Reply
where
    F: std::future::Future<Output = FetchResponse> + Send + 'static,
{
    let (version, correlation_id) = (ctx.version, ctx.header.correlation_id);
    Reply::Later(Box::pin(async move {
        let body = fut.await;
        let records: Vec<Bytes> = body
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter_map(|p| p.records.clone())
            .collect();
        let referenced = frame::SegmentedBuf::referenced_len(&records);
        let buf = encode_into(ApiKey::Fetch, version, correlation_id, &body, |len| {
            frame::SegmentedBuf::new(len.saturating_sub(referenced), records)
        })?;
        Ok(buf.finish())
    }))
}

/// Decodes and runs one request whose key and version were already checked against
/// [`SUPPORTED`]. Work that must happen in request order (appends) happens before this returns;
/// only waiting is deferred into [`Reply::Later`].
pub fn dispatch(
    broker: &Arc<Broker>,
    api: ApiKey,
    header: &RequestHeader,
    mut body: Bytes,
    peer: &str,
) -> Result<Reply, HandlerError> {
    let version = header.request_api_version;
    let ctx = Ctx {
        broker,
        version,
        header,
        peer,
    };
    let b = &mut body;
    match api {
        ApiKey::ApiVersions => now(
            api,
            &ctx,
            api_versions::handle(&ctx, decode(api, version, b)?),
        ),
        ApiKey::Metadata => Ok(later(
            api,
            &ctx,
            metadata::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::ElectLeaders => Ok(later(
            api,
            &ctx,
            elect_leaders::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::AlterPartitionReassignments => Ok(later(
            api,
            &ctx,
            partition_reassignments::alter(&ctx, decode(api, version, b)?),
        )),
        ApiKey::ListPartitionReassignments => now(
            api,
            &ctx,
            partition_reassignments::list(&ctx, decode(api, version, b)?),
        ),
        ApiKey::OffsetForLeaderEpoch => now(
            api,
            &ctx,
            offset_for_leader_epoch::handle(&ctx, decode(api, version, b)?),
        ),
        ApiKey::Produce => match produce::handle(&ctx, decode(api, version, b)?) {
            produce::Outcome::Respond(fut) => Ok(later(api, &ctx, fut)),
            produce::Outcome::Silent(fut) => Ok(Reply::Quiet(Box::pin(async move {
                match fut.await {
                    Some(reason) => Err(HandlerError::Close(reason)),
                    None => Ok(()),
                }
            }))),
            produce::Outcome::Close(reason) => Err(HandlerError::Close(reason)),
        },
        ApiKey::Fetch => Ok(later_fetch(
            &ctx,
            fetch::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::ListOffsets => Ok(later(
            api,
            &ctx,
            list_offsets::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::CreateTopics => Ok(later(
            api,
            &ctx,
            create_topics::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::DeleteTopics => Ok(later(
            api,
            &ctx,
            delete_topics::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::CreatePartitions => Ok(later(
            api,
            &ctx,
            create_partitions::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::DeleteRecords => Ok(later(
            api,
            &ctx,
            delete_records::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::DescribeConfigs => now(
            api,
            &ctx,
            describe_configs::handle(&ctx, decode(api, version, b)?),
        ),
        ApiKey::AlterConfigs => Ok(later(
            api,
            &ctx,
            alter_configs::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::IncrementalAlterConfigs => Ok(later(
            api,
            &ctx,
            incremental_alter_configs::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::DescribeCluster => now(
            api,
            &ctx,
            describe_cluster::handle(&ctx, decode(api, version, b)?),
        ),
        ApiKey::InitProducerId => Ok(later(
            api,
            &ctx,
            init_producer_id::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::FindCoordinator => Ok(later(
            api,
            &ctx,
            find_coordinator::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::JoinGroup => {
            let host = ctx.peer.to_owned();
            Ok(later(
                api,
                &ctx,
                join_group::handle(&ctx, decode(api, version, b)?, host),
            ))
        }
        ApiKey::SyncGroup => Ok(later(
            api,
            &ctx,
            sync_group::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::Heartbeat => now(api, &ctx, heartbeat::handle(&ctx, decode(api, version, b)?)),
        ApiKey::LeaveGroup => now(
            api,
            &ctx,
            leave_group::handle(&ctx, decode(api, version, b)?),
        ),
        ApiKey::OffsetCommit if version < offset_commit::legacy::AS_VERSION => {
            let req = offset_commit::legacy::decode(version, body).map_err(|reason| {
                HandlerError::Decode {
                    api,
                    version,
                    reason,
                }
            })?;
            let legacy = Ctx {
                version: offset_commit::legacy::AS_VERSION,
                ..ctx
            };
            Ok(later(api, &legacy, offset_commit::handle(&legacy, req)))
        }
        ApiKey::OffsetCommit => Ok(later(
            api,
            &ctx,
            offset_commit::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::OffsetFetch => now(
            api,
            &ctx,
            offset_fetch::handle(&ctx, decode(api, version, b)?),
        ),
        ApiKey::ListGroups => now(
            api,
            &ctx,
            list_groups::handle(&ctx, decode(api, version, b)?),
        ),
        ApiKey::DescribeGroups => now(
            api,
            &ctx,
            describe_groups::handle(&ctx, decode(api, version, b)?),
        ),
        ApiKey::DeleteGroups => Ok(later(
            api,
            &ctx,
            delete_groups::handle(&ctx, decode(api, version, b)?),
        )),
        ApiKey::OffsetDelete => Ok(later(
            api,
            &ctx,
            offset_delete::handle(&ctx, decode(api, version, b)?),
        )),
        other => Err(HandlerError::Decode {
            api: other,
            version,
            reason: "API not implemented".into(),
        }),
    }
}

/// A response string field from a Rust string.
pub fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's "Supported APIs" table must say exactly what ApiVersions advertises.
    #[test]
    fn readme_table_matches_advertised_versions() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Supported APIs")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Supported APIs section");
        let mut documented: Vec<(i16, i16, i16)> = section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let key = cells.get(2)?.parse::<i16>().ok()?;
                let (lo, hi) = cells.get(3)?.split_once('–')?;
                Some((key, lo.parse().ok()?, hi.parse().ok()?))
            })
            .collect();
        let mut advertised: Vec<(i16, i16, i16)> = SUPPORTED
            .iter()
            .map(|(k, lo, hi)| (*k as i16, *lo, *hi))
            .collect();
        documented.sort_unstable();
        advertised.sort_unstable();
        assert_eq!(documented, advertised);
    }
}
