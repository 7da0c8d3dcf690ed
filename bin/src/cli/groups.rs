//! `strom groups ...`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;

use super::kafka::{error_text, Client};
use super::{emit, Common, GroupsCmd};

#[derive(Args)]
pub struct ResetArgs {
    group: String,
    /// Topic whose offsets move (repeatable); every topic the group committed when omitted.
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// To the log start of each partition.
    #[arg(long, group = "to")]
    to_earliest: bool,
    /// To the log end of each partition.
    #[arg(long, group = "to")]
    to_latest: bool,
    /// To this offset (clamped into each partition's range).
    #[arg(long, group = "to")]
    to_offset: Option<i64>,
    /// By this many records from the committed offset (negative moves back).
    #[arg(long, group = "to", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Commit the new offsets (without it, only show them).
    #[arg(long)]
    execute: bool,
}

pub async fn run(cmd: GroupsCmd, common: &Common) -> Result<()> {
    let mut client = Client::connect(&common.bootstrap_server).await?;
    match cmd {
        GroupsCmd::List => list(&mut client, common).await,
        GroupsCmd::Describe { group } => describe(&mut client, common, &group).await,
        GroupsCmd::Lag { group } => lag(&mut client, common, group).await,
        GroupsCmd::ResetOffsets(args) => reset(&mut client, common, args).await,
        GroupsCmd::Delete { groups } => delete(&mut client, common, &groups).await,
    }
}

#[derive(Serialize, Clone)]
struct Listed {
    group: String,
    state: String,
    protocol_type: String,
}

/// Groups from every broker (each lists the groups it coordinates).
async fn all_groups(client: &mut Client) -> Result<Vec<Listed>> {
    client.refresh(Some(&[])).await?;
    let mut out = BTreeMap::new();
    for addr in client.broker_addrs() {
        let resp = client
            .send_to(Some(&addr), &ListGroupsRequest::default())
            .await?;
        if resp.error_code != 0 {
            bail!(
                "ListGroups on {addr}: {}",
                error_text(resp.error_code, None)
            );
        }
        for g in resp.groups {
            let group = g.group_id.to_string();
            out.insert(
                group.clone(),
                Listed {
                    group,
                    state: g.group_state.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                },
            );
        }
    }
    Ok(out.into_values().collect())
}

async fn list(client: &mut Client, common: &Common) -> Result<()> {
    let groups = all_groups(client).await?;
    let rows = groups
        .iter()
        .map(|g| vec![g.group.clone(), g.state.clone(), g.protocol_type.clone()])
        .collect();
    emit(common, &groups, &["GROUP", "STATE", "PROTOCOL-TYPE"], rows)
}

struct Member {
    member_id: String,
    client_id: String,
    host: String,
    assignment: Vec<(String, i32)>,
}

struct GroupInfo {
    state: String,
    protocol_type: String,
    members: Vec<Member>,
}

async fn describe_group(client: &mut Client, coordinator: &str, group: &str) -> Result<GroupInfo> {
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
    let resp = client.send_to(Some(coordinator), &req).await?;
    let Some(g) = resp.groups.into_iter().next() else {
        bail!("the coordinator did not describe group {group}");
    };
    if g.error_code != 0 {
        bail!(
            "group {group}: {}",
            error_text(g.error_code, g.error_message.as_ref())
        );
    }
    let members = g
        .members
        .into_iter()
        .map(|m| Member {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: decode_assignment(m.member_assignment),
        })
        .collect();
    Ok(GroupInfo {
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        members,
    })
}

/// A consumer member's assignment (the consumer protocol's bytes); empty for other protocols.
fn decode_assignment(mut bytes: Bytes) -> Vec<(String, i32)> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let _ = bytes::Buf::get_i16(&mut bytes);
    ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3))
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .flat_map(|t| {
                    let topic = t.topic.to_string();
                    t.partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Committed offsets of a group: (topic, partition) -> offset.
async fn committed(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_topics(None);
    let resp = client.send_to(Some(coordinator), &req).await?;
    if resp.error_code != 0 {
        bail!(
            "offsets of group {group}: {}",
            error_text(resp.error_code, None)
        );
    }
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Offsets by timestamp (-1 latest, -2 earliest) for partitions, asked of their leaders.
async fn list_offsets(
    client: &mut Client,
    partitions: &BTreeSet<(String, i32)>,
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), i64>> {
    let topics: Vec<String> = partitions
        .iter()
        .map(|(t, _)| t.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if topics.is_empty() {
        return Ok(BTreeMap::new());
    }
    let md = client.refresh(Some(&topics)).await?;
    let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for (topic, partition) in partitions {
        let leader = md
            .topics
            .get(topic)
            .and_then(|t| t.partitions.iter().find(|p| p.index == *partition))
            .map_or(-1, |p| p.leader);
        if leader < 0 {
            continue; // no leader now: shown without an end offset
        }
        by_leader
            .entry(leader)
            .or_default()
            .entry(topic.clone())
            .or_default()
            .push(*partition);
    }
    let mut out = BTreeMap::new();
    for (leader, topics) in by_leader {
        let addr = client.broker_addr(leader)?;
        let req = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(
                topics
                    .iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.clone())))
                            .with_partitions(
                                ps.iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(*p)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let resp = client.send_to(Some(&addr), &req).await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code == 0 {
                    out.insert((t.name.to_string(), p.partition_index), p.offset);
                }
            }
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct LagRow {
    group: String,
    topic: String,
    partition: i32,
    current_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    consumer_id: Option<String>,
    host: Option<String>,
    client_id: Option<String>,
}

fn opt(v: &Option<impl ToString>) -> String {
    v.as_ref().map_or("-".to_owned(), ToString::to_string)
}

/// Per-partition offsets and lag of a group, including assigned partitions without a commit.
async fn group_rows(client: &mut Client, group: &str) -> Result<(GroupInfo, Vec<LagRow>)> {
    let coordinator = client.coordinator(group).await?;
    let info = describe_group(client, &coordinator, group).await?;
    let committed = committed(client, &coordinator, group).await?;
    let mut owner: BTreeMap<(String, i32), &Member> = BTreeMap::new();
    for m in &info.members {
        for tp in &m.assignment {
            owner.insert(tp.clone(), m);
        }
    }
    let partitions: BTreeSet<(String, i32)> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let ends = list_offsets(client, &partitions, -1).await?;
    let rows = partitions
        .into_iter()
        .map(|tp| {
            let current = committed.get(&tp).copied();
            let end = ends.get(&tp).copied();
            let m = owner.get(&tp);
            LagRow {
                group: group.to_owned(),
                lag: current.zip(end).map(|(c, e)| (e - c).max(0)),
                topic: tp.0,
                partition: tp.1,
                current_offset: current,
                log_end_offset: end,
                consumer_id: m.map(|m| m.member_id.clone()),
                host: m.map(|m| m.host.clone()),
                client_id: m.map(|m| m.client_id.clone()),
            }
        })
        .collect();
    Ok((info, rows))
}

async fn describe(client: &mut Client, common: &Common, group: &str) -> Result<()> {
    let (info, rows) = group_rows(client, group).await?;
    if info.state == "Dead" && rows.is_empty() {
        bail!("group {group} does not exist");
    }
    #[derive(Serialize)]
    struct Described<'a> {
        group: &'a str,
        state: &'a str,
        protocol_type: &'a str,
        members: usize,
        partitions: &'a [LagRow],
    }
    let value = Described {
        group,
        state: &info.state,
        protocol_type: &info.protocol_type,
        members: info.members.len(),
        partitions: &rows,
    };
    if common.output == super::Output::Table {
        println!(
            "Group: {group}  State: {}  Members: {}",
            info.state,
            info.members.len()
        );
    }
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.topic.clone(),
                r.partition.to_string(),
                opt(&r.current_offset),
                opt(&r.log_end_offset),
                opt(&r.lag),
                opt(&r.consumer_id),
                opt(&r.host),
                opt(&r.client_id),
            ]
        })
        .collect();
    emit(
        common,
        &value,
        &[
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        table,
    )
}

async fn lag(client: &mut Client, common: &Common, group: Option<String>) -> Result<()> {
    let groups = match group {
        Some(g) => vec![g],
        None => all_groups(client)
            .await?
            .into_iter()
            .map(|g| g.group)
            .collect(),
    };
    let mut all = Vec::new();
    for g in groups {
        let (_, rows) = group_rows(client, &g).await?;
        all.extend(rows);
    }
    let table = all
        .iter()
        .map(|r| {
            vec![
                r.group.clone(),
                r.topic.clone(),
                r.partition.to_string(),
                opt(&r.current_offset),
                opt(&r.log_end_offset),
                opt(&r.lag),
            ]
        })
        .collect();
    emit(
        common,
        &all,
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
        ],
        table,
    )
}

async fn reset(client: &mut Client, common: &Common, args: ResetArgs) -> Result<()> {
    let group = args.group.as_str();
    let coordinator = client.coordinator(group).await?;
    let info = describe_group(client, &coordinator, group).await?;
    if !matches!(info.state.as_str(), "Empty" | "Dead") {
        bail!(
            "group {group} is {} with {} member(s): stop its consumers before resetting offsets",
            info.state,
            info.members.len()
        );
    }
    let committed = committed(client, &coordinator, group).await?;
    let partitions: BTreeSet<(String, i32)> = if args.topics.is_empty() {
        committed.keys().cloned().collect()
    } else {
        let md = client.refresh(Some(&args.topics)).await?;
        let mut out = BTreeSet::new();
        for name in &args.topics {
            let t = md
                .topics
                .get(name)
                .filter(|t| t.error == 0)
                .ok_or_else(|| anyhow::anyhow!("topic {name} does not exist"))?;
            out.extend(t.partitions.iter().map(|p| (name.clone(), p.index)));
        }
        out
    };
    if partitions.is_empty() {
        bail!("group {group} has no committed offsets; name the topics with --topic");
    }
    let earliest = list_offsets(client, &partitions, -2).await?;
    let latest = list_offsets(client, &partitions, -1).await?;
    let mut plan = Vec::new();
    for tp in &partitions {
        let (Some(lo), Some(hi)) = (earliest.get(tp).copied(), latest.get(tp).copied()) else {
            bail!("{}-{} has no leader now; try again", tp.0, tp.1);
        };
        let current = committed.get(tp).copied();
        let target = if args.to_earliest {
            lo
        } else if args.to_latest {
            hi
        } else if let Some(o) = args.to_offset {
            o
        } else if let Some(d) = args.shift_by {
            current.unwrap_or(hi) + d
        } else {
            bail!("say where to: --to-earliest, --to-latest, --to-offset N or --shift-by N");
        };
        plan.push(LagRow {
            group: group.to_owned(),
            topic: tp.0.clone(),
            partition: tp.1,
            current_offset: current,
            log_end_offset: Some(target.clamp(lo, hi)),
            lag: None,
            consumer_id: None,
            host: None,
            client_id: None,
        });
    }
    if args.execute {
        let mut topics: BTreeMap<String, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for r in &plan {
            topics.entry(r.topic.clone()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(r.partition)
                    .with_committed_offset(r.log_end_offset.unwrap_or(0)),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = client.send_to(Some(&coordinator), &req).await?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "cannot commit {}-{}: {}",
                        t.name.as_str(),
                        p.partition_index,
                        error_text(p.error_code, None)
                    );
                }
            }
        }
    }
    #[derive(Serialize)]
    struct Planned<'a> {
        topic: &'a str,
        partition: i32,
        current_offset: Option<i64>,
        new_offset: i64,
    }
    let planned: Vec<Planned> = plan
        .iter()
        .map(|r| Planned {
            topic: &r.topic,
            partition: r.partition,
            current_offset: r.current_offset,
            new_offset: r.log_end_offset.unwrap_or(0),
        })
        .collect();
    #[derive(Serialize)]
    struct Reset<'a> {
        group: &'a str,
        executed: bool,
        partitions: Vec<Planned<'a>>,
    }
    let rows = planned
        .iter()
        .map(|p| {
            vec![
                p.topic.to_owned(),
                p.partition.to_string(),
                opt(&p.current_offset),
                p.new_offset.to_string(),
            ]
        })
        .collect();
    let executed = args.execute;
    emit(
        common,
        &Reset {
            group,
            executed,
            partitions: planned,
        },
        &["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"],
        rows,
    )?;
    if !executed && common.output == super::Output::Table {
        println!("(dry run: add --execute to commit these offsets)");
    }
    Ok(())
}

async fn delete(client: &mut Client, common: &Common, groups: &[String]) -> Result<()> {
    let mut failed = Vec::new();
    let mut deleted = Vec::new();
    for g in groups {
        let coordinator = client.coordinator(g).await?;
        let req = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(g.clone()))]);
        let resp = client.send_to(Some(&coordinator), &req).await?;
        for r in resp.results {
            match r.error_code {
                0 => deleted.push(r.group_id.to_string()),
                code => failed.push(format!(
                    "{}: {}",
                    r.group_id.as_str(),
                    error_text(code, None)
                )),
            }
        }
    }
    let rows = deleted
        .iter()
        .map(|g| vec![g.clone(), "deleted".to_owned()])
        .collect();
    emit(common, &deleted, &["GROUP", "RESULT"], rows)?;
    if !failed.is_empty() {
        bail!("cannot delete {}", failed.join("; "));
    }
    Ok(())
}
