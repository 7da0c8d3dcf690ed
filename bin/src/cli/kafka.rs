//! The admin tools' view of a cluster, over the Kafka protocol only (so they work against any
//! Kafka-compatible broker): bootstrap, version negotiation, metadata, and routing of requests
//! to partition leaders and group coordinators.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, GroupId, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use strom_broker::client::{list_offsets_request, Conn};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The newest version of each API these tools speak; the broker's range caps it.
fn preferred(api: ApiKey) -> i16 {
    match api {
        ApiKey::Metadata => 12,
        ApiKey::CreateTopics => 5,
        ApiKey::DeleteTopics => 4,
        ApiKey::CreatePartitions => 3,
        ApiKey::DescribeConfigs => 4,
        ApiKey::IncrementalAlterConfigs => 1,
        ApiKey::ListGroups => 4,
        ApiKey::DescribeGroups => 5,
        ApiKey::FindCoordinator => 3,
        ApiKey::OffsetFetch => 7,
        ApiKey::OffsetCommit => 8,
        ApiKey::ListOffsets => 7,
        ApiKey::DeleteGroups => 2,
        ApiKey::Produce => 9,
        ApiKey::Fetch => 12,
        ApiKey::DescribeCluster => 0,
        ApiKey::InitProducerId => 4,
        _ => 0,
    }
}

/// A Kafka error code as a message an operator can act on.
pub fn error_text(code: i16, message: Option<&StrBytes>) -> String {
    let name = ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error code {code}"));
    match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(m) => format!("{m} ({name})"),
        None => name,
    }
}

/// A Kafka error code a response carried, with what was being done.
#[derive(Debug)]
pub struct KafkaError {
    pub code: i16,
    text: String,
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for KafkaError {}

/// `Ok` for error code 0; otherwise the error, as `<context>: <message> (<NAME>)`.
pub fn check(
    code: i16,
    message: Option<&StrBytes>,
    context: impl FnOnce() -> String,
) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let text = format!("{}: {}", context(), error_text(code, message));
    Err(KafkaError { code, text }.into())
}

/// Whether `e` is the Kafka error `code`.
pub fn is_code(e: &anyhow::Error, code: i16) -> bool {
    e.downcast_ref::<KafkaError>()
        .is_some_and(|k| k.code == code)
}

/// A (topic, partition).
pub type Tp = (String, i32);

pub struct Broker {
    pub id: BrokerId,
    pub addr: String,
    pub rack: Option<String>,
}

pub struct Partition {
    pub index: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

pub struct Topic {
    pub name: String,
    pub internal: bool,
    pub error: i16,
    pub partitions: Vec<Partition>,
}

pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller: i32,
    pub brokers: BTreeMap<i32, Broker>,
    pub topics: BTreeMap<String, Topic>,
}

impl Metadata {
    fn from_response(r: MetadataResponse) -> Self {
        let brokers = r
            .brokers
            .into_iter()
            .map(|b| {
                let id = *b.node_id;
                let broker = Broker {
                    id: b.node_id,
                    addr: format!("{}:{}", b.host.as_str(), b.port),
                    rack: b.rack.map(|r| r.to_string()),
                };
                (id, broker)
            })
            .collect();
        let topics = r
            .topics
            .into_iter()
            .filter_map(|t| {
                let name = t.name?.0.to_string();
                let mut partitions: Vec<Partition> = t
                    .partitions
                    .into_iter()
                    .map(|p| Partition {
                        index: p.partition_index,
                        leader: *p.leader_id,
                        replicas: p.replica_nodes.iter().map(|b| **b).collect(),
                        isr: p.isr_nodes.iter().map(|b| **b).collect(),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.index);
                let topic = Topic {
                    name: name.clone(),
                    internal: t.is_internal,
                    error: t.error_code,
                    partitions,
                };
                Some((name, topic))
            })
            .collect();
        Self {
            cluster_id: r.cluster_id.map(|c| c.to_string()),
            controller: *r.controller_id,
            brokers,
            topics,
        }
    }
}

/// Connections to the bootstrap broker and, lazily, to any other broker by id.
pub struct Client {
    bootstrap: String,
    conns: HashMap<String, Conn>,
    /// The bootstrap broker's supported (min, max) version per API key.
    versions: HashMap<i16, (i16, i16)>,
    /// How long one request may take before its connection is dropped.
    timeout: Duration,
    pub metadata: Option<Metadata>,
}

impl Client {
    /// Connects to the first of the comma-separated `bootstrap` brokers that answers
    /// ApiVersions.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        let mut last_error = anyhow!("--bootstrap-server is empty");
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match Self::connect_one(addr).await {
                Ok(client) => return Ok(client),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    async fn connect_one(first: &str) -> Result<Self> {
        let mut client = Self {
            bootstrap: first.to_owned(),
            conns: HashMap::new(),
            versions: HashMap::new(),
            timeout: TIMEOUT,
            metadata: None,
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("strom-cli"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp = client.conn(first).await?.call(3, &req, TIMEOUT).await;
        let resp = match resp {
            Ok(r) if r.error_code == 0 => r,
            // An old broker answers v0 only.
            _ => {
                client.conns.remove(first);
                client
                    .conn(first)
                    .await?
                    .call(0, &ApiVersionsRequest::default(), TIMEOUT)
                    .await
                    .with_context(|| format!("ApiVersions to {first}"))?
            }
        };
        client.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(client)
    }

    /// Changes the per-request timeout (30 s unless set).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn conn(&mut self, addr: &str) -> Result<&mut Conn> {
        if !self.conns.contains_key(addr) {
            let stream = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| anyhow!("cannot connect to {addr}: timed out (is a broker running there? use --bootstrap-server HOST:PORT)"))?
                .map_err(|e| anyhow!("cannot connect to {addr}: {e} (is a broker running there? use --bootstrap-server HOST:PORT)"))?;
            self.conns.insert(
                addr.to_owned(),
                Conn::from_stream(stream, "strom-cli".to_owned()),
            );
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| anyhow!("connection to {addr} lost"))
    }

    /// The version to use for `R`: ours, capped by what the broker supports.
    pub fn version<R: Request>(&self) -> Result<i16> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow!("unknown API key {}", R::KEY))?;
        let (min, max) = self
            .versions
            .get(&R::KEY)
            .copied()
            .ok_or_else(|| anyhow!("the broker does not support {api:?}"))?;
        let v = preferred(api).min(max);
        if v < min {
            bail!("the broker supports {api:?} v{min}-v{max} only; these tools need v{v} or older");
        }
        Ok(v)
    }

    /// Sends `req` to the broker at `addr` (the bootstrap broker when `None`).
    pub async fn send_to<R>(&mut self, addr: Option<&str>, req: &R) -> Result<R::Response>
    where
        R: Request + Encodable + HeaderVersion,
        R::Response: Decodable,
    {
        let version = self.version::<R>()?;
        let addr = addr.unwrap_or(&self.bootstrap).to_owned();
        let timeout = self.timeout;
        let api = ApiKey::try_from(R::KEY)
            .map(|a| format!("{a:?}"))
            .unwrap_or_default();
        let result = match self.conn(&addr).await {
            Ok(conn) => conn
                .call(version, req, timeout)
                .await
                .with_context(|| format!("{api} request to {addr} failed")),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // A broken connection is not reused, and requests for "any broker" go to another
            // broker the metadata names from now on.
            self.conns.remove(&addr);
            if addr == self.bootstrap {
                self.move_bootstrap();
            }
        }
        result
    }

    /// Makes the next broker of the metadata (after the current one) the bootstrap broker.
    fn move_bootstrap(&mut self) {
        let known = self.broker_addrs();
        let next = known
            .iter()
            .skip_while(|a| **a != self.bootstrap)
            .skip(1)
            .chain(known.iter())
            .find(|a| **a != self.bootstrap)
            .cloned();
        if let Some(next) = next {
            tracing::debug!(from = %self.bootstrap, to = %next, "bootstrap broker unreachable; using another");
            self.bootstrap = next;
        }
    }

    pub async fn send<R>(&mut self, req: &R) -> Result<R::Response>
    where
        R: Request + Encodable + HeaderVersion,
        R::Response: Decodable,
    {
        self.send_to(None, req).await
    }

    /// Fetches metadata for `topics` (every topic when `None`) and remembers it.
    pub async fn refresh(&mut self, topics: Option<&[String]>) -> Result<&Metadata> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let asked = self.bootstrap.clone();
        let resp = match self.send(&req).await {
            Ok(r) => r,
            // The bootstrap broker is down: ask the others the last metadata named.
            Err(e) => {
                let mut answer = None;
                for addr in self.broker_addrs() {
                    if addr == asked {
                        continue;
                    }
                    if let Ok(r) = self.send_to(Some(&addr), &req).await {
                        answer = Some(r);
                        break;
                    }
                }
                answer.ok_or(e)?
            }
        };
        Ok(self.metadata.insert(Metadata::from_response(resp)))
    }

    pub fn broker_addr(&self, id: i32) -> Result<String> {
        self.metadata
            .as_ref()
            .and_then(|m| m.brokers.get(&id))
            .map(|b| b.addr.clone())
            .ok_or_else(|| anyhow!("broker {id} is not in the cluster metadata"))
    }

    /// Addresses of every broker in the metadata.
    pub fn broker_addrs(&self) -> Vec<String> {
        self.metadata
            .as_ref()
            .map(|m| m.brokers.values().map(|b| b.addr.clone()).collect())
            .unwrap_or_default()
    }

    /// The address of a group's coordinator.
    pub async fn coordinator(&mut self, group: &str) -> Result<String> {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_owned()))
            .with_key_type(0);
        for attempt in 0..20 {
            let resp = self.send(&req).await?;
            match resp.error_code {
                0 => return Ok(format!("{}:{}", resp.host.as_str(), resp.port)),
                // The coordinator is still loading or being elected: Kafka says retry.
                14 | 15 if attempt < 19 => tokio::time::sleep(Duration::from_millis(250)).await,
                code => bail!(
                    "no coordinator for group {group}: {}",
                    error_text(code, resp.error_message.as_ref())
                ),
            }
        }
        bail!("no coordinator for group {group}")
    }

    /// A group's committed offsets, from its coordinator.
    pub async fn committed(&mut self, coordinator: &str, group: &str) -> Result<BTreeMap<Tp, i64>> {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_topics(None);
        let resp = self.send_to(Some(coordinator), &req).await?;
        check(resp.error_code, None, || {
            format!("offsets of group {group}")
        })?;
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

    /// Commits offsets for a group as a standalone consumer (no generation, no member id),
    /// as Kafka's tools do for a group without active members.
    pub async fn commit(
        &mut self,
        coordinator: &str,
        group: &str,
        offsets: &BTreeMap<Tp, i64>,
    ) -> Result<()> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), offset) in offsets {
            topics.entry(topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset),
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
                            .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = self.send_to(Some(coordinator), &req).await?;
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, None, || {
                    format!(
                        "cannot commit {}-{} for group {group}",
                        t.name.as_str(),
                        p.partition_index
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Offsets at `timestamp` (-1 log end, -2 log start) of partitions, asked of their
    /// leaders. A partition without a leader now, or whose leader refused, maps to its error.
    pub async fn list_offsets(
        &mut self,
        partitions: &BTreeSet<Tp>,
        timestamp: i64,
    ) -> Result<BTreeMap<Tp, Result<i64>>> {
        let topics: Vec<String> = partitions
            .iter()
            .map(|(t, _)| t.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = BTreeMap::new();
        if topics.is_empty() {
            return Ok(out);
        }
        let md = self.refresh(Some(&topics)).await?;
        let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
        for (topic, partition) in partitions {
            let leader = md
                .topics
                .get(topic)
                .and_then(|t| t.partitions.iter().find(|p| p.index == *partition))
                .map_or(-1, |p| p.leader);
            if leader < 0 {
                let e = anyhow!("{topic}-{partition} has no leader now; try again");
                out.insert((topic.clone(), *partition), Err(e));
                continue;
            }
            by_leader
                .entry(leader)
                .or_default()
                .entry(topic.clone())
                .or_default()
                .push(*partition);
        }
        for (leader, topics) in by_leader {
            let addr = self.broker_addr(leader)?;
            let req = list_offsets_request(topics, timestamp);
            let resp = self.send_to(Some(&addr), &req).await?;
            for t in resp.topics {
                let topic = t.name.to_string();
                for p in t.partitions {
                    let tp = (topic.clone(), p.partition_index);
                    let offset = check(p.error_code, None, || {
                        format!("offsets of {topic}-{}", p.partition_index)
                    })
                    .map(|()| p.offset);
                    out.insert(tp, offset);
                }
            }
        }
        Ok(out)
    }
}
