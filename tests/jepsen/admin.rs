//! What the harness asks the cluster itself, in raw Kafka requests to one node at a time (the
//! nemesis must know which node answered): metadata (leaders, replicas, ISR), the active
//! controller, a group's coordinator, preferred-leader elections and partition reassignments.
//! Each call uses a fresh connection with short timeouts (`raw_call`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{bail, Result};
use kafka_protocol::messages::{
    alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic},
    elect_leaders_request::TopicPartitions,
    AlterPartitionReassignmentsRequest, BrokerId, DescribeClusterRequest, ElectLeadersRequest,
    FindCoordinatorRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strom_tests::cluster::raw_call;

/// One partition as a node's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl PartitionInfo {
    /// A leader, and every replica in the ISR.
    pub fn healthy(&self) -> bool {
        let mut r = self.replicas.clone();
        let mut i = self.isr.clone();
        r.sort_unstable();
        i.sort_unstable();
        self.leader >= 0 && !r.is_empty() && r == i
    }
}

/// A node's view of every topic's partitions.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// topic -> partition index -> state.
    pub topics: BTreeMap<String, BTreeMap<i32, PartitionInfo>>,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// Metadata v1 of every topic (internal ones included), as `addr` sees it.
pub fn metadata(addr: SocketAddr) -> Result<Metadata> {
    let resp = raw_call(addr, 1, &MetadataRequest::default().with_topics(None))?;
    let mut md = Metadata::default();
    for t in resp.topics {
        let Some(topic) = t.name else { continue };
        if t.error_code != 0 {
            continue;
        }
        let parts = t
            .partitions
            .into_iter()
            .map(|p| {
                (
                    p.partition_index,
                    PartitionInfo {
                        leader: *p.leader_id,
                        replicas: p.replica_nodes.iter().map(|b| **b).collect(),
                        isr: p.isr_nodes.iter().map(|b| **b).collect(),
                    },
                )
            })
            .collect();
        md.topics.insert(topic.to_string(), parts);
    }
    Ok(md)
}

/// The controller id `addr` reports in DescribeCluster (a node without a quorum leader names
/// itself, so callers compare several nodes' answers).
pub fn controller(addr: SocketAddr) -> Result<i32> {
    let resp = raw_call(addr, 0, &DescribeClusterRequest::default())?;
    if resp.error_code != 0 {
        bail!("DescribeCluster error {}", resp.error_code);
    }
    Ok(*resp.controller_id)
}

/// The coordinator of `group` according to `addr` (FindCoordinator v1).
pub fn coordinator(addr: SocketAddr, group: &str) -> Result<i32> {
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_owned()))
        .with_key_type(0);
    let resp = raw_call(addr, 1, &req)?;
    if resp.error_code != 0 || *resp.node_id < 0 {
        bail!("FindCoordinator error {}", resp.error_code);
    }
    Ok(*resp.node_id)
}

/// Preferred-leader election for `partitions` of `topic` (ElectLeaders v1); a summary of the
/// per-partition results, e.g. `elected 0,3; ELECTION_NOT_NEEDED(84) 1,2`.
pub fn elect_preferred(addr: SocketAddr, topic: &str, partitions: &[i32]) -> Result<String> {
    let req = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(5_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(name(topic))
            .with_partitions(partitions.to_vec())]));
    let resp = raw_call(addr, 1, &req)?;
    if resp.error_code != 0 {
        bail!("ElectLeaders error {}", resp.error_code);
    }
    let mut by_code: BTreeMap<i16, Vec<String>> = BTreeMap::new();
    for t in resp.replica_election_results {
        for p in t.partition_result {
            by_code
                .entry(p.error_code)
                .or_default()
                .push(p.partition_id.to_string());
        }
    }
    Ok(by_code
        .into_iter()
        .map(|(code, ps)| {
            let what = if code == 0 {
                "elected".to_owned()
            } else {
                format!("error {code}")
            };
            format!("{what} {}", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join("; "))
}

/// Moves `topic`/`partition` to `replicas` (AlterPartitionReassignments v0).
pub fn reassign(addr: SocketAddr, topic: &str, partition: i32, replicas: &[i32]) -> Result<()> {
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(5_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(Some(
                    replicas.iter().map(|&r| BrokerId(r)).collect(),
                ))])]);
    let resp = raw_call(addr, 0, &req)?;
    if resp.error_code != 0 {
        bail!(
            "AlterPartitionReassignments error {}: {:?}",
            resp.error_code,
            resp.error_message
        );
    }
    for t in resp.responses {
        for p in t.partitions {
            if p.error_code != 0 {
                bail!(
                    "AlterPartitionReassignments {topic}/{partition}: error {} {:?}",
                    p.error_code,
                    p.error_message
                );
            }
        }
    }
    Ok(())
}
