//! `strom topics ...`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};

use super::kafka::{check, error_text, is_code, Client};
use super::{emit, ids, parse_pairs, Common, TopicsCmd};

const TOPIC_RESOURCE: i8 = 2;
const CONFIG_SOURCE_DEFAULT: i8 = 5;
const TIMEOUT_MS: i32 = 30_000;

pub async fn run(cmd: TopicsCmd, common: &Common) -> Result<()> {
    let mut client = Client::connect(&common.bootstrap_server).await?;
    match cmd {
        TopicsCmd::List { exclude_internal } => list(&mut client, common, exclude_internal).await,
        TopicsCmd::Describe { topics } => describe(&mut client, common, topics).await,
        TopicsCmd::Create {
            topic,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let configs = parse_pairs(&configs)?;
            let created = create(
                &mut client,
                &topic,
                partitions.unwrap_or(-1),
                replication_factor.unwrap_or(-1),
                &configs,
            )
            .await;
            match created {
                Ok(()) => done(common, "created", &topic),
                Err(e) if if_not_exists && is_code(&e, 36) => done(common, "exists", &topic),
                Err(e) => Err(e),
            }
        }
        TopicsCmd::Delete { topics, if_exists } => {
            delete(&mut client, common, &topics, if_exists).await
        }
        TopicsCmd::Alter {
            topic,
            partitions,
            configs,
            delete_configs,
        } => {
            if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
                bail!("nothing to change: give --partitions, --config or --delete-config");
            }
            if let Some(n) = partitions {
                add_partitions(&mut client, &topic, n).await?;
            }
            let mut ops: Vec<(String, Option<String>)> = parse_pairs(&configs)?
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect();
            ops.extend(delete_configs.into_iter().map(|k| (k, None)));
            if !ops.is_empty() {
                alter_configs(&mut client, &topic, &ops).await?;
            }
            done(common, "altered", &topic)
        }
        TopicsCmd::Apply { file, dry_run } => apply(&mut client, common, &file, dry_run).await,
    }
}

fn done(common: &Common, what: &str, topic: &str) -> Result<()> {
    #[derive(Serialize)]
    struct Done<'a> {
        topic: &'a str,
        result: &'a str,
    }
    match common.output {
        super::Output::Json => emit(
            common,
            &Done {
                topic,
                result: what,
            },
            &[],
            vec![],
        ),
        super::Output::Table => {
            println!("{what} topic {topic}");
            Ok(())
        }
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

#[derive(Serialize)]
struct Listed {
    name: String,
    partitions: usize,
    replication_factor: usize,
    internal: bool,
}

async fn list(client: &mut Client, common: &Common, exclude_internal: bool) -> Result<()> {
    let md = client.refresh(None).await?;
    let listed: Vec<Listed> = md
        .topics
        .values()
        .filter(|t| !(exclude_internal && t.internal))
        .map(|t| Listed {
            name: t.name.clone(),
            partitions: t.partitions.len(),
            replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len()),
            internal: t.internal,
        })
        .collect();
    let rows = listed
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.replication_factor.to_string(),
            ]
        })
        .collect();
    emit(
        common,
        &listed,
        &["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"],
        rows,
    )
}

#[derive(Serialize)]
struct PartitionView {
    partition: i32,
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

#[derive(Serialize)]
struct Described {
    name: String,
    internal: bool,
    partitions: Vec<PartitionView>,
    configs: BTreeMap<String, String>,
}

async fn describe(client: &mut Client, common: &Common, topics: Vec<String>) -> Result<()> {
    let wanted = (!topics.is_empty()).then_some(topics.as_slice());
    let md = client.refresh(wanted).await?;
    let mut out = Vec::new();
    for t in md.topics.values() {
        check(t.error, None, || format!("topic {}", t.name))?;
        out.push(Described {
            name: t.name.clone(),
            internal: t.internal,
            partitions: t
                .partitions
                .iter()
                .map(|p| PartitionView {
                    partition: p.index,
                    leader: p.leader,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                })
                .collect(),
            configs: BTreeMap::new(),
        });
    }
    for d in &mut out {
        d.configs = topic_configs(client, &d.name, false).await?;
    }
    match common.output {
        super::Output::Json => emit(common, &out, &[], vec![]),
        super::Output::Table => {
            for (i, d) in out.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                let configs = d
                    .configs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                println!(
                    "Topic: {}  PartitionCount: {}  ReplicationFactor: {}  Configs: {}",
                    d.name,
                    d.partitions.len(),
                    d.partitions.first().map_or(0, |p| p.replicas.len()),
                    configs
                );
                let rows = d
                    .partitions
                    .iter()
                    .map(|p| {
                        vec![
                            p.partition.to_string(),
                            p.leader.to_string(),
                            ids(&p.replicas),
                            ids(&p.isr),
                        ]
                    })
                    .collect::<Vec<_>>();
                super::print_table(&["PARTITION", "LEADER", "REPLICAS", "ISR"], &rows);
            }
            Ok(())
        }
    }
}

/// A topic's configs: overrides only, or every value when `all`.
async fn topic_configs(
    client: &mut Client,
    topic: &str,
    all: bool,
) -> Result<BTreeMap<String, String>> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configuration_keys(None)]);
    let resp = client.send(&req).await?;
    let mut out = BTreeMap::new();
    for r in resp.results {
        check(r.error_code, r.error_message.as_ref(), || {
            format!("configs of topic {topic}")
        })?;
        for c in r.configs {
            if all || c.config_source != CONFIG_SOURCE_DEFAULT {
                let value = if c.is_sensitive {
                    "(sensitive)".to_owned()
                } else {
                    c.value.map(|v| v.to_string()).unwrap_or_default()
                };
                out.insert(c.name.to_string(), value);
            }
        }
    }
    Ok(out)
}

pub(crate) async fn create(
    client: &mut Client,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<()> {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(TIMEOUT_MS)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            )]);
    let resp = client.send(&req).await?;
    for t in resp.topics {
        check(t.error_code, t.error_message.as_ref(), || {
            format!("cannot create topic {topic}")
        })?;
    }
    Ok(())
}

async fn delete(
    client: &mut Client,
    common: &Common,
    topics: &[String],
    if_exists: bool,
) -> Result<()> {
    let req = delete_request(client, topics)?;
    let resp = client.send(&req).await?;
    let mut failed = Vec::new();
    for r in resp.responses {
        let topic = r.name.map(|n| n.to_string()).unwrap_or_default();
        match r.error_code {
            0 => done(common, "deleted", &topic)?,
            3 if if_exists => done(common, "absent", &topic)?,
            code => failed.push(format!(
                "{topic}: {}",
                error_text(code, r.error_message.as_ref())
            )),
        }
    }
    if !failed.is_empty() {
        bail!("cannot delete {}", failed.join("; "));
    }
    Ok(())
}

/// A DeleteTopics request for `topics`, by name in the form the broker's version expects.
pub(crate) fn delete_request(client: &Client, topics: &[String]) -> Result<DeleteTopicsRequest> {
    let version = client.version::<DeleteTopicsRequest>()?;
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(TIMEOUT_MS);
    if version >= 6 {
        req.topics = topics
            .iter()
            .map(|t| DeleteTopicState::default().with_name(Some(name(t))))
            .collect();
    } else {
        req.topic_names = topics.iter().map(|t| name(t)).collect();
    }
    Ok(req)
}

async fn add_partitions(client: &mut Client, topic: &str, count: i32) -> Result<()> {
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(TIMEOUT_MS)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name(topic))
            .with_count(count)
            .with_assignments(None)]);
    let resp = client.send(&req).await?;
    for r in resp.results {
        check(r.error_code, r.error_message.as_ref(), || {
            format!("cannot raise the partitions of {topic} to {count}")
        })?;
    }
    Ok(())
}

/// Sets (`Some`) or removes (`None`) topic config overrides, leaving the others alone.
async fn alter_configs(
    client: &mut Client,
    topic: &str,
    ops: &[(String, Option<String>)],
) -> Result<()> {
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configs(
                ops.iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_config_operation(if v.is_some() { 0 } else { 1 })
                            .with_value(v.clone().map(StrBytes::from_string))
                    })
                    .collect(),
            ),
    ]);
    let resp = client.send(&req).await?;
    for r in resp.responses {
        check(r.error_code, r.error_message.as_ref(), || {
            format!("cannot change the configs of {topic}")
        })?;
    }
    Ok(())
}

/// One topic of a topics file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Desired {
    name: String,
    partitions: i32,
    #[serde(default = "default_rf")]
    replication_factor: i16,
    #[serde(default)]
    configs: BTreeMap<String, serde_yaml::Value>,
}

fn default_rf() -> i16 {
    -1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsFile {
    topics: Vec<Desired>,
}

#[derive(Serialize, Default)]
struct ApplyReport {
    dry_run: bool,
    created: Vec<String>,
    partitions_raised: Vec<Change>,
    configs_set: Vec<Change>,
    unchanged: Vec<String>,
    /// Differences `apply` cannot fix in place (fewer partitions, another replication factor).
    drift: Vec<Change>,
}

#[derive(Serialize)]
struct Change {
    topic: String,
    key: String,
    from: String,
    to: String,
}

fn scalar(v: &serde_yaml::Value) -> Result<String> {
    Ok(match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        other => bail!("config values must be scalars, got {other:?}"),
    })
}

async fn apply(
    client: &mut Client,
    common: &Common,
    file: &std::path::Path,
    dry_run: bool,
) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let desired: TopicsFile = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a valid topics file", file.display()))?;
    let mut seen = std::collections::HashSet::new();
    for d in &desired.topics {
        if !seen.insert(d.name.as_str()) {
            bail!("{}: topic {} is listed twice", file.display(), d.name);
        }
        if d.partitions < 1 {
            bail!("{}: topic {} needs partitions >= 1", file.display(), d.name);
        }
    }
    let mut report = ApplyReport {
        dry_run,
        ..Default::default()
    };
    let progress = |msg: String| {
        if common.output == super::Output::Table {
            println!("{msg}");
        }
    };
    let total = desired.topics.len();
    for (i, d) in desired.topics.iter().enumerate() {
        let configs: Vec<(String, String)> = d
            .configs
            .iter()
            .map(|(k, v)| Ok((k.clone(), scalar(v)?)))
            .collect::<Result<_>>()?;
        let md = client.refresh(Some(std::slice::from_ref(&d.name))).await?;
        let existing = md.topics.get(&d.name).filter(|t| t.error == 0).map(|t| {
            (
                t.partitions.len() as i32,
                t.partitions.first().map_or(0, |p| p.replicas.len() as i16),
            )
        });
        let step = format!("[{}/{total}]", i + 1);
        let Some((partitions, rf)) = existing else {
            if !dry_run {
                create(
                    client,
                    &d.name,
                    d.partitions,
                    d.replication_factor,
                    &configs,
                )
                .await?;
            }
            progress(format!(
                "{step} created {} ({} partitions)",
                d.name, d.partitions
            ));
            report.created.push(d.name.clone());
            continue;
        };
        let mut changed = false;
        if d.replication_factor > 0 && d.replication_factor != rf {
            report.drift.push(Change {
                topic: d.name.clone(),
                key: "replicationFactor".into(),
                from: rf.to_string(),
                to: d.replication_factor.to_string(),
            });
            progress(format!(
                "{step} drift: {} has replication factor {rf}, the file says {} (reassign partitions to change it)",
                d.name, d.replication_factor
            ));
        }
        if d.partitions > partitions {
            if !dry_run {
                add_partitions(client, &d.name, d.partitions).await?;
            }
            progress(format!(
                "{step} raised {} partitions {partitions} -> {}",
                d.name, d.partitions
            ));
            report.partitions_raised.push(Change {
                topic: d.name.clone(),
                key: "partitions".into(),
                from: partitions.to_string(),
                to: d.partitions.to_string(),
            });
            changed = true;
        } else if d.partitions < partitions {
            report.drift.push(Change {
                topic: d.name.clone(),
                key: "partitions".into(),
                from: partitions.to_string(),
                to: d.partitions.to_string(),
            });
            progress(format!(
                "{step} drift: {} has {partitions} partitions, the file says {} (partitions cannot be removed)",
                d.name, d.partitions
            ));
        }
        let current = topic_configs(client, &d.name, true).await?;
        let mut set = Vec::new();
        for (k, v) in &configs {
            let now = current.get(k).cloned().unwrap_or_default();
            if &now != v {
                report.configs_set.push(Change {
                    topic: d.name.clone(),
                    key: k.clone(),
                    from: now.clone(),
                    to: v.clone(),
                });
                progress(format!("{step} set {} {k}: {now} -> {v}", d.name));
                set.push((k.clone(), Some(v.clone())));
            }
        }
        if !set.is_empty() {
            if !dry_run {
                alter_configs(client, &d.name, &set).await?;
            }
            changed = true;
        }
        if !changed {
            progress(format!("{step} {} is up to date", d.name));
            report.unchanged.push(d.name.clone());
        }
    }
    match common.output {
        super::Output::Json => emit(common, &report, &[], vec![]),
        super::Output::Table => {
            println!(
                "{}{} created, {} with more partitions, {} configs set, {} unchanged, {} drift",
                if dry_run { "dry run: " } else { "" },
                report.created.len(),
                report.partitions_raised.len(),
                report.configs_set.len(),
                report.unchanged.len(),
                report.drift.len()
            );
            Ok(())
        }
    }
    .map_err(|e| anyhow!(e))
}
