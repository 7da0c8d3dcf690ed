//! `strom cluster info`.

use anyhow::Result;
use serde::Serialize;

use super::kafka::Client;
use super::{emit, ids, ClusterCmd, Common};

#[derive(Serialize)]
struct BrokerView {
    id: i32,
    address: String,
    rack: Option<String>,
    controller: bool,
}

#[derive(Serialize)]
struct PartitionIssue {
    topic: String,
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

#[derive(Serialize)]
struct Info {
    cluster_id: Option<String>,
    controller: i32,
    brokers: Vec<BrokerView>,
    topics: usize,
    partitions: usize,
    under_replicated: Vec<PartitionIssue>,
    offline: Vec<PartitionIssue>,
}

pub async fn run(cmd: ClusterCmd, common: &Common) -> Result<()> {
    let ClusterCmd::Info = cmd;
    let mut client = Client::connect(&common.bootstrap_server).await?;
    let md = client.refresh(None).await?;
    let issue = |t: &super::kafka::Topic, p: &super::kafka::Partition| PartitionIssue {
        topic: t.name.clone(),
        partition: p.index,
        leader: p.leader,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
    };
    let all = || {
        md.topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
    };
    let info = Info {
        cluster_id: md.cluster_id.clone(),
        controller: md.controller,
        brokers: md
            .brokers
            .values()
            .map(|b| BrokerView {
                id: b.id.0,
                address: b.addr.clone(),
                rack: b.rack.clone(),
                controller: b.id.0 == md.controller,
            })
            .collect(),
        topics: md.topics.len(),
        partitions: all().count(),
        under_replicated: all()
            .filter(|(_, p)| p.isr.len() < p.replicas.len())
            .map(|(t, p)| issue(t, p))
            .collect(),
        offline: all()
            .filter(|(_, p)| p.leader < 0)
            .map(|(t, p)| issue(t, p))
            .collect(),
    };
    if common.output == super::Output::Table {
        println!(
            "Cluster: {}  Controller: {}  Brokers: {}  Topics: {}  Partitions: {}  Under-replicated: {}  Offline: {}",
            info.cluster_id.as_deref().unwrap_or("-"),
            info.controller,
            info.brokers.len(),
            info.topics,
            info.partitions,
            info.under_replicated.len(),
            info.offline.len()
        );
        let rows = info
            .brokers
            .iter()
            .map(|b| {
                vec![
                    b.id.to_string(),
                    b.address.clone(),
                    b.rack.clone().unwrap_or_else(|| "-".into()),
                    if b.controller { "yes" } else { "" }.to_owned(),
                ]
            })
            .collect::<Vec<_>>();
        super::print_table(&["BROKER", "ADDRESS", "RACK", "CONTROLLER"], &rows);
        let issues: Vec<Vec<String>> = info
            .under_replicated
            .iter()
            .map(|p| ("under-replicated", p))
            .chain(info.offline.iter().map(|p| ("offline", p)))
            .map(|(kind, p)| {
                vec![
                    kind.to_owned(),
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.leader.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                ]
            })
            .collect();
        if !issues.is_empty() {
            println!();
            super::print_table(
                &["PROBLEM", "TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"],
                &issues,
            );
        }
        return Ok(());
    }
    emit(common, &info, &[], vec![])
}
