//! OffsetFetch (key 9): committed offsets of one group (v1–v7) or several (v8+); all partitions
//! when the topic list is null.

use std::collections::HashMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{s, Ctx};
use crate::group::Committed;

/// A topic's partitions and their committed offsets, if any.
type TopicOffsets = (String, Vec<(i32, Option<Committed>)>);

/// (topic, [(partition, committed)]) for the requested partitions, or all committed ones.
fn lookup(
    committed: &HashMap<(String, i32), Committed>,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<TopicOffsets> {
    match wanted {
        Some(list) => list
            .into_iter()
            .map(|(t, parts)| {
                let found = parts
                    .into_iter()
                    .map(|p| (p, committed.get(&(t.clone(), p)).cloned()))
                    .collect();
                (t, found)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> =
                Default::default();
            for ((t, p), c) in committed {
                by_topic
                    .entry(t.clone())
                    .or_default()
                    .push((*p, Some(c.clone())));
            }
            by_topic
                .into_iter()
                .map(|(t, mut v)| {
                    v.sort_by_key(|(p, _)| *p);
                    (t, v)
                })
                .collect()
        }
    }
}

pub fn handle(ctx: &Ctx<'_>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let groups = &ctx.broker.groups;
    let version = ctx.version;
    if version >= 8 {
        let out = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.as_str().to_owned(), t.partition_indexes))
                        .collect()
                });
                if let Err(e) = ctx.broker.check_coordinator(g.group_id.as_str()) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(e.code());
                }
                let topics = lookup(&groups.fetch_offsets(g.group_id.as_str()), wanted)
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, c)| {
                                        let c = c.unwrap_or(Committed {
                                            offset: -1,
                                            leader_epoch: -1,
                                            metadata: String::new(),
                                            commit_timestamp: 0,
                                        });
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(c.offset)
                                            .with_committed_leader_epoch(c.leader_epoch)
                                            .with_metadata(Some(s(c.metadata)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(out);
    }
    if let Err(e) = ctx.broker.check_coordinator(req.group_id.as_str()) {
        return OffsetFetchResponse::default().with_error_code(e.code());
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.as_str().to_owned(), t.partition_indexes))
            .collect()
    });
    let topics = lookup(&groups.fetch_offsets(req.group_id.as_str()), wanted)
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, c)| {
                            let (offset, epoch, meta) = c.map_or((-1, -1, String::new()), |c| {
                                (c.offset, c.leader_epoch, c.metadata)
                            });
                            let out = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(s(meta)));
                            if version >= 5 {
                                out.with_committed_leader_epoch(epoch)
                            } else {
                                out
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
