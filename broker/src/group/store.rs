//! Committed offsets in the internal `__consumer_offsets` topic, in Kafka's record layout:
//! key v1 = (group, topic, partition), value v3 = (offset, leader epoch, metadata, commit time),
//! a null value deletes. A group's records go to partition `abs(javaHash(group)) % N`, as in
//! Kafka, and the latest record per key wins when the topic is read back at start-up.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use strom_protocol::codec::Codec;
use strom_protocol::records::{self, KeyValue};
use strom_storage::Log;

use super::{Committed, GroupSnapshot, MemberSnapshot};
use crate::broker::Broker;
use crate::error::ApiError;

pub const TOPIC: &str = "__consumer_offsets";
const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;
/// Kafka's GroupMetadataKey and (non-flexible) GroupMetadataValue versions.
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;
const DECODE_LIMIT: usize = 64 << 20;

/// Java's `String.hashCode`, so groups land on the same partition as in Kafka.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

pub fn partition_for(group: &str, partitions: i32) -> i32 {
    (java_hash(group) & 0x7fff_ffff) % partitions.max(1)
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = usize::try_from(b.get_i16()).ok()?;
    if b.remaining() < n {
        return None;
    }
    String::from_utf8(b.split_to(n).to_vec()).ok()
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(KEY_VERSION);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn encode_value(c: &Committed) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VALUE_VERSION);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_str(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp);
    b.freeze()
}

/// What a record of the offsets topic is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group(String),
}

pub fn decode_key(mut b: Bytes) -> Option<Key> {
    if b.remaining() < 2 {
        return None;
    }
    match b.get_i16() {
        0 | 1 => {
            let group = get_str(&mut b)?;
            let topic = get_str(&mut b)?;
            (b.remaining() >= 4).then(|| Key::Offset {
                group,
                topic,
                partition: b.get_i32(),
            })
        }
        GROUP_KEY_VERSION => get_str(&mut b).map(Key::Group),
        _ => None,
    }
}

pub fn encode_group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_KEY_VERSION);
    put_str(&mut b, group);
    b.freeze()
}

fn put_nullable(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn get_nullable(b: &mut Bytes) -> Option<Option<String>> {
    if b.remaining() < 2 {
        return None;
    }
    if i16::from_be_bytes([b[0], b[1]]) < 0 {
        b.advance(2);
        return Some(None);
    }
    get_str(b).map(Some)
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

fn get_bytes(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let n = usize::try_from(b.get_i32()).ok()?;
    (b.remaining() >= n).then(|| b.split_to(n))
}

/// Kafka's GroupMetadataValue v3.
pub fn encode_group_value(g: &GroupSnapshot) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_VALUE_VERSION);
    put_str(&mut b, &g.protocol_type);
    b.put_i32(g.generation);
    put_nullable(&mut b, g.protocol_name.as_deref());
    put_nullable(&mut b, g.leader.as_deref());
    b.put_i64(super::commit_timestamp());
    b.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut b, &m.member_id);
        put_nullable(&mut b, m.instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

pub fn decode_group_value(mut b: Bytes) -> Option<GroupSnapshot> {
    if b.remaining() < 2 || b.get_i16() != GROUP_VALUE_VERSION {
        return None; // other versions are Kafka's own; nothing Strom wrote
    }
    let protocol_type = get_str(&mut b)?;
    if b.remaining() < 4 {
        return None;
    }
    let generation = b.get_i32();
    let protocol_name = get_nullable(&mut b)?;
    let leader = get_nullable(&mut b)?;
    if b.remaining() < 12 {
        return None;
    }
    b.advance(8); // state timestamp
    let count = usize::try_from(b.get_i32()).ok()?;
    let mut members = Vec::with_capacity(count.min(b.remaining()));
    for _ in 0..count {
        let member_id = get_str(&mut b)?;
        let instance_id = get_nullable(&mut b)?;
        let client_id = get_str(&mut b)?;
        let client_host = get_str(&mut b)?;
        if b.remaining() < 8 {
            return None;
        }
        let rebalance_timeout_ms = b.get_i32();
        let session_timeout_ms = b.get_i32();
        members.push(MemberSnapshot {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: get_bytes(&mut b)?,
            assignment: get_bytes(&mut b)?,
        });
    }
    Some(GroupSnapshot {
        protocol_type,
        generation,
        protocol_name,
        leader,
        members,
    })
}

pub fn decode_value(mut b: Bytes) -> Option<Committed> {
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    if b.remaining() < 8 {
        return None;
    }
    let offset = b.get_i64();
    let leader_epoch = if version >= 3 && b.remaining() >= 4 {
        b.get_i32()
    } else {
        -1
    };
    let metadata = get_str(&mut b)?;
    let commit_timestamp = if b.remaining() >= 8 { b.get_i64() } else { 0 };
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

/// The offsets topic, created on first use with `partitions` partitions and
/// `offsets.topic.segment.bytes` segments.
/// Appends one group's commit or delete records and waits until they are as durable as an
/// acks=all produce.
pub async fn write(
    broker: &Broker,
    group: &str,
    records: &[((String, i32), Option<Committed>)],
) -> Result<(), ApiError> {
    let encoded: Vec<(Bytes, Option<Bytes>)> = records
        .iter()
        .map(|((t, p), v)| (encode_key(group, t, *p), v.as_ref().map(encode_value)))
        .collect();
    append(broker, group, encoded).await
}

/// Stores a group's membership after a rebalance (`None` deletes the group).
pub async fn write_group(
    broker: &Broker,
    group: &str,
    snapshot: Option<&GroupSnapshot>,
) -> Result<(), ApiError> {
    append(
        broker,
        group,
        vec![(encode_group_key(group), snapshot.map(encode_group_value))],
    )
    .await
}

async fn append(
    broker: &Broker,
    group: &str,
    encoded: Vec<(Bytes, Option<Bytes>)>,
) -> Result<(), ApiError> {
    if encoded.is_empty() {
        return Ok(());
    }
    let topic = broker
        .offsets_topic()
        .map_err(|_| ApiError::from(ResponseError::NotCoordinator))?;
    let partition = topic
        .partition(partition_for(group, topic.partition_count()))
        .ok_or(ResponseError::NotCoordinator)?;
    let kvs: Vec<KeyValue<'_>> = encoded
        .iter()
        .map(|(k, v)| (Some(k.as_ref()), v.as_deref()))
        .collect();
    let batch = records::build_batch(Codec::None, super::commit_timestamp(), &kvs)
        .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e.to_string()))?;
    // As durable as an acks=all produce: replicated to the ISR (and flushed when configured).
    partition
        .append(batch.into(), -1, Duration::from_secs(5))
        .await
        .map(|_| ())
        .map_err(coordinator_error)
}

/// Kafka's mapping of a failed offsets-topic write (GroupMetadataManager): the coordinator
/// moved, or it cannot replicate right now.
fn coordinator_error(e: ApiError) -> ApiError {
    match e.code {
        ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => {
            ResponseError::NotCoordinator.into()
        }
        ResponseError::NotEnoughReplicas | ResponseError::NotEnoughReplicasAfterAppend => {
            ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                e.message.unwrap_or_default(),
            )
        }
        ResponseError::RequestTimedOut => ApiError::new(
            ResponseError::RequestTimedOut,
            e.message.unwrap_or_default(),
        ),
        _ => e,
    }
}

/// Everything stored for the groups: committed offsets and membership.
#[derive(Default)]
pub struct Loaded {
    pub offsets: HashMap<String, HashMap<(String, i32), Committed>>,
    pub groups: HashMap<String, GroupSnapshot>,
}

/// Reads the committed offsets and group membership stored in one offsets-topic partition.
pub fn load_partition(log: &Log) -> Loaded {
    let mut out: HashMap<String, HashMap<(String, i32), Committed>> = HashMap::new();
    let mut groups: HashMap<String, GroupSnapshot> = HashMap::new();
    {
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let data = match log.read(offset, 1 << 20, true, end) {
                Ok(r) if !r.data.is_empty() => r.data,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(log = log.name(), error = %e, "cannot read committed offsets");
                    break;
                }
            };
            for (h, range) in strom_protocol::batch::BatchIter::new(&data) {
                offset = h.last_offset() + 1;
                let Some(bytes) = data.get(range) else { break };
                let Ok(recs) = records::decode(bytes, DECODE_LIMIT) else {
                    tracing::warn!(
                        log = log.name(),
                        offset = h.base_offset,
                        "skipping undecodable offsets batch"
                    );
                    continue;
                };
                for r in recs {
                    match r.key.and_then(decode_key) {
                        Some(Key::Offset {
                            group,
                            topic,
                            partition,
                        }) => {
                            let offsets = out.entry(group).or_default();
                            match r.value.and_then(decode_value) {
                                Some(c) => {
                                    offsets.insert((topic, partition), c);
                                }
                                None => {
                                    offsets.remove(&(topic, partition));
                                }
                            }
                        }
                        Some(Key::Group(group)) => match r.value.and_then(decode_group_value) {
                            Some(g) => {
                                groups.insert(group, g);
                            }
                            None => {
                                groups.remove(&group);
                            }
                        },
                        None => {}
                    }
                }
            }
        }
    }
    out.retain(|_, o| !o.is_empty());
    Loaded {
        offsets: out,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_partitioning_matches_java() {
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(
            decode_key(encode_key("g", "t", 7)),
            Some(Key::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7
            })
        );
        assert_eq!(
            decode_key(encode_group_key("g")),
            Some(Key::Group("g".into()))
        );
        let snap = GroupSnapshot {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol_name: Some("range".into()),
            leader: Some("m1".into()),
            members: vec![MemberSnapshot {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group_value(encode_group_value(&snap)), Some(snap));
        assert_eq!(decode_value(encode_value(&c)), Some(c));
        // Values computed with Java's String.hashCode.
        assert_eq!(java_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("my-group", 50), 36);
        assert_eq!(partition_for("console-consumer-12345", 50), 6);
        assert_eq!(partition_for("", 50), 0);
    }
}
