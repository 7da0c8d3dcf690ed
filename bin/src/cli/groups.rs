//! `strom groups ...`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;

use super::kafka::{check, error_text, Client, Tp};
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
        check(resp.error_code, None, || format!("ListGroups on {addr}"))?;
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
    check(g.error_code, g.error_message.as_ref(), || {
        format!("group {group}")
    })?;
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
    let committed = client.committed(&coordinator, group).await?;
    let mut owner: BTreeMap<(String, i32), &Member> = BTreeMap::new();
    for m in &info.members {
        for tp in &m.assignment {
            owner.insert(tp.clone(), m);
        }
    }
    let partitions: BTreeSet<(String, i32)> =
        committed.keys().chain(owner.keys()).cloned().collect();
    let ends = client.list_offsets(&partitions, -1).await?;
    let rows = partitions
        .into_iter()
        .map(|tp| {
            let current = committed.get(&tp).copied();
            // Partitions without a leader now are shown without an end offset.
            let end = ends.get(&tp).and_then(|e| e.as_ref().ok()).copied();
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
    let committed = client.committed(&coordinator, group).await?;
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
    let earliest = client.list_offsets(&partitions, -2).await?;
    let latest = client.list_offsets(&partitions, -1).await?;
    #[derive(Serialize)]
    struct Planned<'a> {
        topic: &'a str,
        partition: i32,
        current_offset: Option<i64>,
        new_offset: i64,
    }
    let mut planned = Vec::new();
    for tp in &partitions {
        let range = |found: &BTreeMap<Tp, Result<i64>>| match found.get(tp) {
            Some(Ok(o)) => Ok(*o),
            Some(Err(e)) => Err(anyhow::anyhow!("{e:#}")),
            None => Err(anyhow::anyhow!("no offsets for {}-{}", tp.0, tp.1)),
        };
        let (lo, hi) = (range(&earliest)?, range(&latest)?);
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
        planned.push(Planned {
            topic: &tp.0,
            partition: tp.1,
            current_offset: current,
            new_offset: target.clamp(lo, hi),
        });
    }
    if args.execute {
        let offsets = planned
            .iter()
            .map(|p| ((p.topic.to_owned(), p.partition), p.new_offset))
            .collect();
        client.commit(&coordinator, group, &offsets).await?;
    }
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
