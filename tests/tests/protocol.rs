#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! Wire-level conformance tests. A tiny synchronous Kafka client over `std::net::TcpStream`
//! (length-prefixed frames, headers and bodies encoded and decoded with `kafka-protocol`) drives
//! a real `strom` process through every advertised API version, malformed frames, errors that
//! travel inside responses, pipelining, fetch long-polling and random frames.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    alter_configs_request, create_partitions_request, create_topics_request,
    delete_records_request, delete_topics_request, describe_configs_request, fetch_request,
    incremental_alter_configs_request, join_group_request, leave_group_request,
    list_offsets_request, metadata_request, offset_commit_request, offset_delete_request,
    offset_fetch_request, produce_request, sync_group_request,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId,
    ConsumerProtocolSubscription, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, FetchRequest,
    FetchResponse, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetFetchRequest,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use kafka_protocol::ResponseError;
use strom_protocol::codec::Codec;
use strom_protocol::records::build_batch;
use strom_tests::Strom;
use uuid::Uuid;

/// Strom's default `node.id`.
const NODE_ID: i32 = 1;

/// What ApiVersions must advertise: (api, min, max). This mirrors `SUPPORTED` in
/// broker/src/handlers/mod.rs on purpose, so that any change to the advertisement is a conscious
/// change to this test too.
const EXPECTED_APIS: &[(ApiKey, i16, i16)] = &[
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

/// (api, version) cases of `every_advertised_api_and_version_answers` that fail because of a
/// broker bug that has been reported. A listed case must keep failing (the test says so when it
/// starts passing, so the entry gets removed); every other case must pass.
const KNOWN_BROKER_BUGS: &[(ApiKey, i16)] = &[];

/// How long any single response may take before the test gives up on it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A minimal synchronous client
// ---------------------------------------------------------------------------------------------

struct Client {
    stream: TcpStream,
    last_id: i32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to strom");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            last_id: 1000,
        }
    }

    fn next_id(&mut self) -> i32 {
        self.last_id += 1;
        self.last_id
    }

    /// One encoded request frame and its correlation id.
    fn frame<R: Request>(&mut self, version: i16, req: &R) -> (i32, Vec<u8>) {
        let id = self.next_id();
        (id, encode_request(api_of::<R>(), version, id, req))
    }

    fn send<R: Request>(&mut self, version: i16, req: &R) -> i32 {
        let (id, frame) = self.frame(version, req);
        self.write(&frame);
        id
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to strom");
    }

    fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        assert!(
            (4..=64 << 20).contains(&len),
            "response frame announces {len} bytes"
        );
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    fn recv<R: Request>(&mut self, version: i16, id: i32) -> R::Response {
        let api = api_of::<R>();
        let frame = self.read_frame().unwrap_or_else(|e| {
            panic!("no {api:?} v{version} response (correlation id {id}): {e}")
        });
        decode_response(api, version, id, frame)
    }

    fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let id = self.send(version, req);
        self.recv::<R>(version, id)
    }

    /// Asserts that the broker closes the connection without sending anything (more).
    fn expect_closed(&mut self, what: &str) {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut buf = [0u8; 256];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{what}: expected the broker to close the connection, but it sent {n} bytes: {:02x?}", &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe) => {}
            Err(e) => panic!("{what}: expected the broker to close the connection, got {e} (a timeout means it stayed open)"),
        }
    }
}

fn api_of<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("known API key")
}

fn with_length(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

fn header(api: ApiKey, version: i16, id: i32) -> RequestHeader {
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(id)
        .with_client_id(Some(StrBytes::from_static_str("strom-protocol-tests")))
}

/// Request header and body, without the length prefix.
fn encode_unframed<R: Encodable>(api: ApiKey, version: i16, id: i32, req: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    header(api, version, id)
        .encode(&mut buf, api.request_header_version(version))
        .unwrap_or_else(|e| panic!("cannot encode {api:?} v{version} request header: {e}"));
    req.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("cannot encode {api:?} v{version} request: {e}"));
    buf.to_vec()
}

fn encode_request<R: Encodable>(api: ApiKey, version: i16, id: i32, req: &R) -> Vec<u8> {
    with_length(&encode_unframed(api, version, id, req))
}

/// Decodes a response frame (without its length prefix) at exactly `version`, checking the
/// correlation id and that no bytes are left over.
fn decode_response<T: Decodable>(api: ApiKey, version: i16, id: i32, mut frame: Bytes) -> T {
    let header_version = api.response_header_version(version);
    let header = ResponseHeader::decode(&mut frame, header_version).unwrap_or_else(|e| {
        panic!("cannot decode {api:?} v{version} response header (v{header_version}): {e}")
    });
    assert_eq!(
        header.correlation_id, id,
        "{api:?} v{version}: correlation id of the response"
    );
    let body = T::decode(&mut frame, version)
        .unwrap_or_else(|e| panic!("cannot decode {api:?} v{version} response body: {e}"));
    assert!(
        frame.is_empty(),
        "{api:?} v{version} response has {} undecoded trailing bytes",
        frame.len()
    );
    body
}

// ---------------------------------------------------------------------------------------------
// Request builders and small helpers
// ---------------------------------------------------------------------------------------------

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn tn(s: &str) -> TopicName {
    TopicName(sb(s))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// One uncompressed v2 batch holding `values` (no keys).
fn batch(values: &[&str]) -> Bytes {
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
    let recs: Vec<KeyValue<'_>> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    Bytes::from(build_batch(Codec::None, now_ms(), &recs).expect("build batch"))
}

fn produce_req(topic: &str, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(tn(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records)),
            ])])
}

/// The single partition result of a one-topic, one-partition produce.
fn produce_result(resp: &ProduceResponse, topic: &str) -> PartitionProduceResponse {
    assert_eq!(resp.responses.len(), 1, "topics in produce response");
    let t = &resp.responses[0];
    assert_eq!(t.name.as_str(), topic, "topic in produce response");
    assert_eq!(
        t.partition_responses.len(),
        1,
        "partitions in produce response"
    );
    let p = t.partition_responses[0].clone();
    assert_eq!(p.index, 0, "partition index in produce response");
    p
}

/// Produces `values` as one batch with acks=1 (v9) and returns the base offset.
fn produce_ok(c: &mut Client, topic: &str, values: &[&str]) -> i64 {
    let resp = c.call(9, &produce_req(topic, 1, batch(values)));
    let p = produce_result(&resp, topic);
    assert_eq!(
        p.error_code, 0,
        "produce to {topic} failed: {:?}",
        p.error_message
    );
    assert!(p.base_offset >= 0, "base offset {}", p.base_offset);
    p.base_offset
}

fn create_topics_req(name: &str, partitions: i32, configs: &[(&str, &str)]) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(tn(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(sb(k))
                            .with_value(Some(sb(v)))
                    })
                    .collect(),
            )])
}

/// Creates a topic (CreateTopics v7) and returns its id.
fn create_topic(addr: SocketAddr, name: &str, partitions: i32, configs: &[(&str, &str)]) -> Uuid {
    let resp = Client::connect(addr).call(7, &create_topics_req(name, partitions, configs));
    assert_eq!(resp.topics.len(), 1);
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0, "create {name}: {:?}", t.error_message);
    assert!(!t.topic_id.is_nil(), "create {name}: nil topic id");
    t.topic_id
}

fn metadata_req(names: &[&str], auto_create: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_allow_auto_topic_creation(auto_create)
        .with_topics(Some(
            names
                .iter()
                .map(|n| metadata_request::MetadataRequestTopic::default().with_name(Some(tn(n))))
                .collect(),
        ))
}

/// Metadata v12 for one topic without auto-creation.
fn metadata_of(
    addr: SocketAddr,
    name: &str,
) -> kafka_protocol::messages::metadata_response::MetadataResponseTopic {
    let resp: MetadataResponse = Client::connect(addr).call(12, &metadata_req(&[name], false));
    assert_eq!(
        resp.topics.len(),
        1,
        "topics in metadata response for {name}"
    );
    resp.topics[0].clone()
}

fn fetch_req(
    version: i16,
    topic: &str,
    id: Uuid,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    let mut t = fetch_request::FetchTopic::default().with_partitions(vec![
        fetch_request::FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20),
    ]);
    if version >= 13 {
        t = t.with_topic_id(id);
    } else {
        t = t.with_topic(tn(topic));
    }
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(8 << 20)
        .with_topics(vec![t])
}

/// The single partition of a one-topic, one-partition fetch.
fn fetch_partition(
    resp: &FetchResponse,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    assert_eq!(resp.error_code, 0, "fetch top-level error");
    assert_eq!(resp.responses.len(), 1, "topics in fetch response");
    let t = &resp.responses[0];
    assert_eq!(t.partitions.len(), 1, "partitions in fetch response");
    t.partitions[0].clone()
}

fn records_of(data: Option<&Bytes>) -> Vec<Record> {
    let mut buf = data.cloned().unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("fetched records decode")
        .into_iter()
        .flat_map(|set| set.records)
        .collect()
}

fn value_of(r: &Record) -> String {
    String::from_utf8(r.value.clone().expect("record value").to_vec()).expect("utf-8 value")
}

fn list_offsets_req(topic: &str, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(tn(topic))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp),
            ])])
}

fn list_offset(
    c: &mut Client,
    version: i16,
    topic: &str,
    timestamp: i64,
) -> kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse {
    let resp = c.call(version, &list_offsets_req(topic, timestamp));
    assert_eq!(resp.topics.len(), 1, "topics in list offsets response");
    assert_eq!(resp.topics[0].name.as_str(), topic);
    assert_eq!(
        resp.topics[0].partitions.len(),
        1,
        "partitions in list offsets response"
    );
    let p = resp.topics[0].partitions[0].clone();
    assert_eq!(p.partition_index, 0);
    assert_eq!(p.error_code, 0, "list offsets {topic} at {timestamp}");
    p
}

fn describe_configs_req(version: i16, resources: &[(i8, &str)]) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_include_documentation(version >= 3)
        .with_resources(
            resources
                .iter()
                .map(|(ty, name)| {
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(*ty)
                        .with_resource_name(sb(name))
                        .with_configuration_keys(None)
                })
                .collect(),
        )
}

/// A topic's described configs (DescribeConfigs v4): name -> (value, source).
fn topic_configs(addr: SocketAddr, topic: &str) -> BTreeMap<String, (String, i8)> {
    let resp: DescribeConfigsResponse =
        Client::connect(addr).call(4, &describe_configs_req(4, &[(TOPIC, topic)]));
    assert_eq!(resp.results.len(), 1);
    let r = &resp.results[0];
    assert_eq!(r.error_code, 0, "describe {topic}: {:?}", r.error_message);
    r.configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                (
                    c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                    c.config_source,
                ),
            )
        })
        .collect()
}

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

fn api_versions_req(version: i16) -> ApiVersionsRequest {
    let req = ApiVersionsRequest::default();
    if version >= 3 {
        req.with_client_software_name(sb("strom-protocol-tests"))
            .with_client_software_version(sb("0.1.0"))
    } else {
        req
    }
}

/// The advertised table as sorted (key, min, max).
fn advertised(resp: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
    let mut v: Vec<_> = resp
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    v.sort_unstable();
    v
}

fn expected_table() -> Vec<(i16, i16, i16)> {
    let mut v: Vec<_> = EXPECTED_APIS
        .iter()
        .map(|(k, lo, hi)| (*k as i16, *lo, *hi))
        .collect();
    v.sort_unstable();
    v
}

/// The broker process is alive and a fresh connection gets a correct ApiVersions answer.
fn assert_serving(strom: &mut Strom, after: &str) {
    assert!(
        strom.is_alive(),
        "strom died after {after}:\n{}",
        strom.log()
    );
    let mut c = Client::connect(strom.addr());
    let resp = c.call(3, &api_versions_req(3));
    assert_eq!(resp.error_code, 0, "ApiVersions after {after}");
    assert_eq!(
        advertised(&resp),
        expected_table(),
        "ApiVersions table after {after}"
    );
}

/// Lines of the broker log at WARN or ERROR, for failure messages.
fn log_problems(strom: &Strom) -> String {
    strom
        .log()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "non-string panic".to_owned())
}

// ---------------------------------------------------------------------------------------------
// 1. Every advertised (api, version)
// ---------------------------------------------------------------------------------------------

const MAIN: &str = "proto-main";

/// State shared by the per-version checks of test 1.
struct World {
    addr: SocketAddr,
    port: i32,
    main_id: Uuid,
    cluster_id: String,
    leader_epoch: i32,
    /// (offset, value) of every record in MAIN, in order.
    produced: Vec<(i64, String)>,
    /// The batch bytes sent for each entry of `produced`.
    sent: Vec<Bytes>,
}

impl World {
    fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    fn end(&self) -> i64 {
        self.produced.last().map_or(0, |(o, _)| o + 1)
    }
}

#[test]
fn every_advertised_api_and_version_answers() {
    // Without the 3 s initial rebalance delay, so that one-member groups form at once.
    let strom = group_broker();
    let addr = strom.addr();
    let mut c = Client::connect(addr);
    let resp = c.call(3, &api_versions_req(3));
    assert_eq!(resp.error_code, 0);
    let table = advertised(&resp);
    assert_eq!(
        table,
        expected_table(),
        "advertised ApiVersions table (update EXPECTED_APIS only on purpose)"
    );

    // A topic the read-side checks look at, with one override and one record.
    let main_id = create_topic(addr, MAIN, 1, &[("retention.ms", "86400000")]);
    let seed = batch(&["seed-0"]);
    let resp = c.call(9, &produce_req(MAIN, 1, seed.clone()));
    let p = produce_result(&resp, MAIN);
    assert_eq!((p.error_code, p.base_offset), (0, 0), "seed produce");
    let md: MetadataResponse = c.call(12, &metadata_req(&[MAIN], false));
    let cluster_id = md.cluster_id.as_ref().expect("cluster id").to_string();
    assert!(!cluster_id.is_empty());
    let leader_epoch = md.topics[0].partitions[0].leader_epoch;
    assert!(leader_epoch >= 0, "leader epoch {leader_epoch}");
    let mut world = World {
        addr,
        port: i32::from(strom.port),
        main_id,
        cluster_id,
        leader_epoch,
        produced: vec![(0, "seed-0".to_owned())],
        sent: vec![seed],
    };

    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for &(key, lo, hi) in &table {
        let api = ApiKey::try_from(key).expect("advertised key is known");
        for version in lo..=hi {
            match catch_unwind(AssertUnwindSafe(|| check_version(&mut world, api, version))) {
                Ok(()) => passed.push((api, version)),
                Err(p) => failed.push((api, version, panic_message(&*p))),
            }
        }
    }
    let total = passed.len() + failed.len();
    let expected_total: usize = EXPECTED_APIS
        .iter()
        .map(|(_, lo, hi)| (hi - lo + 1) as usize)
        .sum();
    assert_eq!(total, expected_total, "number of (api, version) cases run");

    let unexpected: Vec<_> = failed
        .iter()
        .filter(|(a, v, _)| !KNOWN_BROKER_BUGS.contains(&(*a, *v)))
        .collect();
    let fixed: Vec<_> = KNOWN_BROKER_BUGS
        .iter()
        .filter(|k| passed.contains(k))
        .collect();
    let report = unexpected
        .iter()
        .map(|(a, v, m)| format!("  {a:?} v{v}: {m}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        unexpected.is_empty(),
        "{} of {total} (api, version) cases failed:\n{report}\nbroker warnings/errors:\n{}",
        unexpected.len(),
        log_problems(&strom)
    );
    assert!(
        fixed.is_empty(),
        "these KNOWN_BROKER_BUGS pass now; remove them from the list: {fixed:?}"
    );
    // Everything that ran left MAIN with exactly the records produced, in order.
    let resp: FetchResponse =
        Client::connect(addr).call(12, &fetch_req(12, MAIN, main_id, 0, 0, 1));
    let got: Vec<_> = records_of(fetch_partition(&resp).records.as_ref())
        .iter()
        .map(|r| (r.offset, value_of(r)))
        .collect();
    assert_eq!(got, world.produced);
}

fn check_version(w: &mut World, api: ApiKey, v: i16) {
    match api {
        ApiKey::Produce => check_produce(w, v),
        ApiKey::Fetch => check_fetch(w, v),
        ApiKey::ListOffsets => check_list_offsets(w, v),
        ApiKey::Metadata => check_metadata(w, v),
        ApiKey::ApiVersions => check_api_versions(w, v),
        ApiKey::CreateTopics => check_create_topics(w, v),
        ApiKey::DeleteTopics => check_delete_topics(w, v),
        ApiKey::DeleteRecords => check_delete_records(w, v),
        ApiKey::InitProducerId => check_init_producer_id(w, v),
        ApiKey::DescribeConfigs => check_describe_configs(w, v),
        ApiKey::AlterConfigs => check_alter_configs(w, v),
        ApiKey::CreatePartitions => check_create_partitions(w, v),
        ApiKey::IncrementalAlterConfigs => check_incremental_alter_configs(w, v),
        ApiKey::DescribeCluster => check_describe_cluster(w, v),
        ApiKey::OffsetCommit if v < 2 => check_offset_commit_legacy(w, v),
        ApiKey::FindCoordinator => check_find_coordinator(w, v),
        ApiKey::JoinGroup => check_join_group(w, v),
        ApiKey::SyncGroup => check_sync_group(w, v),
        ApiKey::Heartbeat => check_heartbeat(w, v),
        ApiKey::LeaveGroup => check_leave_group(w, v),
        ApiKey::OffsetCommit => check_offset_commit(w, v),
        ApiKey::OffsetFetch => check_offset_fetch(w, v),
        ApiKey::DescribeGroups => check_describe_groups(w, v),
        ApiKey::ListGroups => check_list_groups(w, v),
        ApiKey::DeleteGroups => check_delete_groups(w, v),
        ApiKey::OffsetDelete => check_offset_delete(w, v),
        ApiKey::OffsetForLeaderEpoch => check_offset_for_leader_epoch(w, v),
        ApiKey::ElectLeaders => check_elect_leaders(w, v),
        ApiKey::AlterPartitionReassignments => check_alter_reassignments(w, v),
        ApiKey::ListPartitionReassignments => check_list_reassignments(w, v),
        other => panic!("no check written for {other:?}; extend check_version"),
    }
}

fn check_produce(w: &mut World, v: i16) {
    let value = format!("produce-v{v}");
    let acks = if v % 2 == 0 { -1 } else { 1 };
    let sent = batch(&[&value]);
    let resp = w.client().call(v, &produce_req(MAIN, acks, sent.clone()));
    assert_eq!(resp.throttle_time_ms, 0);
    let p = produce_result(&resp, MAIN);
    assert_eq!(p.error_code, 0, "produce error: {:?}", p.error_message);
    assert_eq!(p.base_offset, w.end(), "base offset");
    assert_eq!(
        p.log_append_time_ms, -1,
        "CreateTime topic: log_append_time must be -1"
    );
    if v >= 5 {
        assert_eq!(p.log_start_offset, 0, "log start offset");
    }
    w.produced.push((p.base_offset, value));
    w.sent.push(sent);
}

fn check_fetch(w: &mut World, v: i16) {
    let resp = w
        .client()
        .call(v, &fetch_req(v, MAIN, w.main_id, 0, 100, 1));
    let t = &resp.responses[0];
    if v >= 13 {
        assert_eq!(t.topic_id, w.main_id, "topic id in fetch response");
    } else {
        assert_eq!(t.topic.as_str(), MAIN, "topic in fetch response");
    }
    let p = fetch_partition(&resp);
    assert_eq!(p.partition_index, 0);
    assert_eq!(p.error_code, 0, "partition error");
    assert_eq!(p.high_watermark, w.end(), "high watermark");
    assert_eq!(p.last_stable_offset, w.end(), "last stable offset");
    if v >= 5 {
        assert_eq!(p.log_start_offset, 0, "log start offset");
    }
    let got: Vec<_> = records_of(p.records.as_ref())
        .iter()
        .map(|r| (r.offset, value_of(r)))
        .collect();
    assert_eq!(got, w.produced, "fetched records");
    // The stored batches are the producer's bytes: only the base offset and the partition
    // leader epoch (outside the CRC) are the broker's.
    let fetched = split_batches(p.records.as_ref().expect("records"));
    assert_eq!(fetched.len(), w.sent.len(), "batches fetched");
    for ((got, sent), (offset, _)) in fetched.iter().zip(&w.sent).zip(&w.produced) {
        assert_eq!(
            i64::from_be_bytes(got[..8].try_into().unwrap()),
            *offset,
            "base offset of batch"
        );
        assert_eq!(got[8..12], sent[8..12], "batch length at offset {offset}");
        assert_eq!(
            got[16..],
            sent[16..],
            "batch bytes from magic on, at offset {offset}"
        );
    }
}

/// Splits a records field into its batches (each: offset, length, then `length` bytes).
fn split_batches(data: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut rest = data.clone();
    while !rest.is_empty() {
        assert!(
            rest.len() >= 12,
            "partial batch header: {} bytes",
            rest.len()
        );
        let len = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        assert!(
            rest.len() >= 12 + len,
            "partial batch: {} of {} bytes",
            rest.len(),
            12 + len
        );
        out.push(rest.split_to(12 + len));
    }
    out
}

fn check_list_offsets(w: &mut World, v: i16) {
    let mut c = w.client();
    let earliest = list_offset(&mut c, v, MAIN, -2);
    assert_eq!(earliest.offset, 0, "earliest offset");
    let latest = list_offset(&mut c, v, MAIN, -1);
    assert_eq!(latest.offset, w.end(), "latest offset");
    assert_eq!(latest.timestamp, -1, "timestamp of latest");
    if v >= 4 {
        assert_eq!(earliest.leader_epoch, w.leader_epoch, "leader epoch");
        assert_eq!(latest.leader_epoch, w.leader_epoch, "leader epoch");
    }
}

fn check_metadata(w: &mut World, v: i16) {
    // allow_auto_topic_creation cannot be false before v4 (the field does not exist).
    let resp = w.client().call(v, &metadata_req(&[MAIN], v < 4));
    assert_eq!(resp.brokers.len(), 1, "brokers");
    let b = &resp.brokers[0];
    assert_eq!(*b.node_id, NODE_ID);
    assert_eq!(b.host.as_str(), "127.0.0.1");
    assert_eq!(b.port, w.port);
    if v >= 1 {
        assert_eq!(*resp.controller_id, NODE_ID, "controller id");
    }
    if v >= 2 {
        assert_eq!(
            resp.cluster_id.as_deref(),
            Some(w.cluster_id.as_str()),
            "cluster id"
        );
    }
    assert_eq!(resp.topics.len(), 1, "topics");
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0, "topic error");
    assert_eq!(t.name.as_ref().map(|n| n.as_str()), Some(MAIN));
    assert!(!t.is_internal);
    if v >= 10 {
        assert_eq!(t.topic_id, w.main_id, "topic id");
    }
    assert_eq!(t.partitions.len(), 1, "partitions");
    let p = &t.partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.partition_index, 0);
    assert_eq!(*p.leader_id, NODE_ID);
    assert_eq!(p.replica_nodes, vec![BrokerId(NODE_ID)]);
    assert_eq!(p.isr_nodes, vec![BrokerId(NODE_ID)]);
    if v >= 7 {
        assert_eq!(p.leader_epoch, w.leader_epoch, "leader epoch");
    }
}

fn check_api_versions(w: &mut World, v: i16) {
    let resp = w.client().call(v, &api_versions_req(v));
    assert_eq!(resp.error_code, 0);
    assert_eq!(advertised(&resp), expected_table());
}

fn check_create_topics(w: &mut World, v: i16) {
    let name = format!("proto-ct-v{v}");
    let resp = w.client().call(
        v,
        &create_topics_req(&name, 2, &[("retention.ms", "123456")]),
    );
    assert_eq!(resp.topics.len(), 1);
    let t = &resp.topics[0];
    assert_eq!(t.name.as_str(), name);
    assert_eq!(t.error_code, 0, "create error: {:?}", t.error_message);
    if v >= 5 {
        assert_eq!(t.num_partitions, 2);
        assert_eq!(t.replication_factor, 1);
        let configs = t.configs.as_ref().expect("configs in v5+ response");
        let retention = configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .expect("retention.ms in configs");
        assert_eq!(retention.value.as_deref(), Some("123456"));
        assert_eq!(retention.config_source, DYNAMIC_TOPIC_CONFIG);
    }
    let md = metadata_of(w.addr, &name);
    assert_eq!(md.error_code, 0, "created topic in metadata");
    assert_eq!(md.partitions.len(), 2);
    if v >= 7 {
        assert!(!t.topic_id.is_nil());
        assert_eq!(
            md.topic_id, t.topic_id,
            "topic id in CreateTopics and Metadata"
        );
    }
}

fn check_delete_topics(w: &mut World, v: i16) {
    let name = format!("proto-dt-v{v}");
    let id = create_topic(w.addr, &name, 1, &[]);
    let req = DeleteTopicsRequest::default().with_timeout_ms(5000);
    let req = if v >= 6 {
        // By id: the response must name the topic.
        req.with_topics(vec![
            delete_topics_request::DeleteTopicState::default().with_topic_id(id)
        ])
    } else {
        req.with_topic_names(vec![tn(&name)])
    };
    let resp = w.client().call(v, &req);
    assert_eq!(resp.responses.len(), 1);
    let r = &resp.responses[0];
    assert_eq!(r.error_code, 0, "delete error: {:?}", r.error_message);
    assert_eq!(r.name.as_ref().map(|n| n.as_str()), Some(name.as_str()));
    if v >= 6 {
        assert_eq!(r.topic_id, id);
    }
    let md = metadata_of(w.addr, &name);
    assert_eq!(
        md.error_code,
        ResponseError::UnknownTopicOrPartition.code(),
        "deleted topic in metadata"
    );
}

fn check_delete_records(w: &mut World, v: i16) {
    let name = format!("proto-dr-v{v}");
    create_topic(w.addr, &name, 1, &[]);
    let mut c = w.client();
    assert_eq!(produce_ok(&mut c, &name, &["a", "b", "c"]), 0);
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(tn(&name))
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(2),
            ])]);
    let resp = c.call(v, &req);
    assert_eq!(resp.topics.len(), 1);
    assert_eq!(resp.topics[0].name.as_str(), name);
    assert_eq!(resp.topics[0].partitions.len(), 1);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.partition_index, 0);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.low_watermark, 2);
    assert_eq!(
        list_offset(&mut c, 9, &name, -2).offset,
        2,
        "earliest offset after DeleteRecords"
    );
    assert_eq!(
        list_offset(&mut c, 9, &name, -1).offset,
        3,
        "latest offset after DeleteRecords"
    );
}

fn check_init_producer_id(w: &mut World, v: i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let resp = w.client().call(v, &req);
    assert_eq!(resp.error_code, 0);
    assert!(*resp.producer_id >= 0, "producer id {:?}", resp.producer_id);
    assert_eq!(resp.producer_epoch, 0);
}

fn check_describe_configs(w: &mut World, v: i16) {
    let resp = w
        .client()
        .call(v, &describe_configs_req(v, &[(TOPIC, MAIN), (BROKER, "1")]));
    assert_eq!(resp.results.len(), 2);
    let topic = &resp.results[0];
    assert_eq!(topic.error_code, 0, "{:?}", topic.error_message);
    assert_eq!(topic.resource_type, TOPIC);
    assert_eq!(topic.resource_name.as_str(), MAIN);
    let find = |name: &str| {
        topic
            .configs
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("{name} not described"))
    };
    let retention = find("retention.ms");
    assert_eq!(retention.value.as_deref(), Some("86400000"));
    assert_eq!(retention.config_source, DYNAMIC_TOPIC_CONFIG);
    assert!(!retention.read_only);
    let synonyms: Vec<_> = retention
        .synonyms
        .iter()
        .map(|s| {
            (
                s.name.to_string(),
                s.value.as_ref().map(|v| v.to_string()),
                s.source,
            )
        })
        .collect();
    assert_eq!(
        synonyms.first(),
        Some(&(
            "retention.ms".to_owned(),
            Some("86400000".to_owned()),
            DYNAMIC_TOPIC_CONFIG
        )),
        "synonyms {synonyms:?}"
    );
    assert_eq!(
        synonyms.last().map(|s| s.2),
        Some(DEFAULT_CONFIG),
        "synonyms {synonyms:?}"
    );
    let max_message = find("max.message.bytes");
    assert_eq!(max_message.value.as_deref(), Some("1048588"));
    assert_eq!(max_message.config_source, DEFAULT_CONFIG);
    if v >= 3 {
        assert_eq!(retention.config_type, 5, "retention.ms is a LONG");
        assert!(
            retention
                .documentation
                .as_ref()
                .is_some_and(|d| !d.is_empty()),
            "documentation requested"
        );
    }
    let broker = &resp.results[1];
    assert_eq!(broker.error_code, 0, "{:?}", broker.error_message);
    assert_eq!(broker.resource_type, BROKER);
    assert_eq!(broker.resource_name.as_str(), "1");
    let node_id = broker
        .configs
        .iter()
        .find(|c| c.name.as_str() == "node.id")
        .expect("node.id described");
    assert_eq!(node_id.value.as_deref(), Some("1"));
    assert!(node_id.read_only);
}

fn check_alter_configs(w: &mut World, v: i16) {
    let name = format!("proto-ac-v{v}");
    create_topic(w.addr, &name, 1, &[]);
    let value = (3_600_000 + i64::from(v)).to_string();
    let req = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(sb(&name))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(sb("retention.ms"))
                .with_value(Some(sb(&value)))]),
    ]);
    let resp = w.client().call(v, &req);
    assert_eq!(resp.responses.len(), 1);
    let r = &resp.responses[0];
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.resource_type, TOPIC);
    assert_eq!(r.resource_name.as_str(), name);
    let configs = topic_configs(w.addr, &name);
    assert_eq!(
        configs.get("retention.ms"),
        Some(&(value, DYNAMIC_TOPIC_CONFIG))
    );
}

fn check_incremental_alter_configs(w: &mut World, v: i16) {
    let name = format!("proto-iac-v{v}");
    create_topic(w.addr, &name, 1, &[("retention.bytes", "1048576")]);
    let value = (7_200_000 + i64::from(v)).to_string();
    let op = |key: &str, op: i8, value: Option<&str>| {
        incremental_alter_configs_request::AlterableConfig::default()
            .with_name(sb(key))
            .with_config_operation(op)
            .with_value(value.map(sb))
    };
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(sb(&name))
            .with_configs(vec![
                op("retention.ms", 0, Some(&value)),
                op("retention.bytes", 1, None),
            ]),
    ]);
    let resp = w.client().call(v, &req);
    assert_eq!(resp.responses.len(), 1);
    let r = &resp.responses[0];
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!(r.resource_type, TOPIC);
    assert_eq!(r.resource_name.as_str(), name);
    let configs = topic_configs(w.addr, &name);
    assert_eq!(
        configs.get("retention.ms"),
        Some(&(value, DYNAMIC_TOPIC_CONFIG)),
        "SET"
    );
    assert_eq!(
        configs.get("retention.bytes"),
        Some(&("-1".to_owned(), DEFAULT_CONFIG)),
        "DELETE"
    );
}

fn check_create_partitions(w: &mut World, v: i16) {
    let name = format!("proto-cp-v{v}");
    create_topic(w.addr, &name, 1, &[]);
    let req = CreatePartitionsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(tn(&name))
                .with_count(3)
                .with_assignments(None),
        ]);
    let resp = w.client().call(v, &req);
    assert_eq!(resp.results.len(), 1);
    let r = &resp.results[0];
    assert_eq!(r.name.as_str(), name);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let md = metadata_of(w.addr, &name);
    let indexes: Vec<i32> = md.partitions.iter().map(|p| p.partition_index).collect();
    assert_eq!(indexes, vec![0, 1, 2]);
}

fn check_offset_for_leader_epoch(w: &mut World, v: i16) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let req = kafka_protocol::messages::OffsetForLeaderEpochRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(tn(MAIN))
            .with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(w.leader_epoch)
                    .with_leader_epoch(w.leader_epoch),
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(w.leader_epoch + 1)
                    .with_leader_epoch(w.leader_epoch),
            ])]);
    let resp = w.client().call(v, &req);
    let parts = &resp.topics[0].partitions;
    assert_eq!(parts[0].error_code, 0);
    assert_eq!(parts[0].leader_epoch, w.leader_epoch);
    assert_eq!(
        parts[0].end_offset,
        w.end(),
        "the current epoch ends at the log end"
    );
    assert_eq!(
        parts[1].error_code,
        ResponseError::UnknownLeaderEpoch.code(),
        "a newer epoch than the leader's"
    );
}

fn check_elect_leaders(w: &mut World, v: i16) {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let req = |election_type: i8| {
        kafka_protocol::messages::ElectLeadersRequest::default()
            .with_election_type(election_type)
            .with_timeout_ms(5000)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(tn(MAIN))
                .with_partitions(vec![0])]))
    };
    let resp = w.client().call(v, &req(0));
    let r = &resp.replica_election_results[0].partition_result[0];
    assert_eq!(
        r.error_code,
        ResponseError::ElectionNotNeeded.code(),
        "the only replica already leads"
    );
    if v >= 1 {
        let resp = w.client().call(v, &req(1));
        let r = &resp.replica_election_results[0].partition_result[0];
        assert_eq!(
            r.error_code,
            ResponseError::ElectionNotNeeded.code(),
            "a partition with a leader needs no unclean election"
        );
    }
}

fn check_alter_reassignments(w: &mut World, v: i16) {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    let req = |replicas: Option<Vec<i32>>| {
        kafka_protocol::messages::AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(5000)
            .with_allow_replication_factor_change(true)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(tn(MAIN))
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(0)
                    .with_replicas(replicas.map(|r| {
                        r.into_iter()
                            .map(kafka_protocol::messages::BrokerId)
                            .collect()
                    }))])])
    };
    let code = |resp: kafka_protocol::messages::AlterPartitionReassignmentsResponse| {
        resp.responses[0].partitions[0].error_code
    };
    assert_eq!(
        code(w.client().call(v, &req(Some(vec![NODE_ID])))),
        0,
        "moving to the same replica"
    );
    assert_eq!(
        code(w.client().call(v, &req(Some(vec![NODE_ID + 98])))),
        ResponseError::InvalidReplicaAssignment.code(),
        "an unknown broker"
    );
    assert_eq!(
        code(w.client().call(v, &req(None))),
        ResponseError::NoReassignmentInProgress.code(),
        "cancelling nothing"
    );
}

fn check_list_reassignments(w: &mut World, v: i16) {
    let resp = w.client().call(
        v,
        &kafka_protocol::messages::ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(5000),
    );
    assert_eq!(resp.error_code, 0);
    assert!(
        resp.topics.is_empty(),
        "nothing is moving: {:?}",
        resp.topics
    );
}

fn check_describe_cluster(w: &mut World, v: i16) {
    let resp = w.client().call(v, &DescribeClusterRequest::default());
    assert_eq!(resp.error_code, 0, "{:?}", resp.error_message);
    assert_eq!(resp.cluster_id.as_str(), w.cluster_id);
    assert_eq!(*resp.controller_id, NODE_ID);
    assert_eq!(resp.brokers.len(), 1);
    let b = &resp.brokers[0];
    assert_eq!(*b.broker_id, NODE_ID);
    assert_eq!(b.host.as_str(), "127.0.0.1");
    assert_eq!(b.port, w.port);
    if v >= 1 {
        assert_eq!(resp.endpoint_type, 1, "endpoint type: brokers");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. ApiVersions of an unknown version
// ---------------------------------------------------------------------------------------------

#[test]
fn api_versions_unknown_version_gets_v0_error_35() {
    let strom = Strom::start();
    let mut c = Client::connect(strom.addr());
    // A future client: header v2, a v4-shaped body, version 99.
    let mut buf = BytesMut::new();
    header(ApiKey::ApiVersions, 99, 4242)
        .encode(&mut buf, 2)
        .expect("header");
    api_versions_req(4).encode(&mut buf, 4).expect("body");
    c.write(&with_length(&buf));
    let frame = c.read_frame().expect("a response to ApiVersions v99");
    let resp: ApiVersionsResponse = decode_response(ApiKey::ApiVersions, 0, 4242, frame);
    assert_eq!(resp.error_code, 35);
    assert_eq!(resp.error_code, ResponseError::UnsupportedVersion.code());
    assert!(
        !resp.api_keys.is_empty(),
        "the v0 error response lists the supported APIs"
    );
    assert_eq!(advertised(&resp), expected_table());
    // The connection stays usable: the client retries with a version it now knows.
    let resp = c.call(3, &api_versions_req(3));
    assert_eq!(resp.error_code, 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Malformed frames close the connection, never the broker
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_frames_close_the_connection_and_the_broker_keeps_serving() {
    let mut strom = Strom::start_with(&[("socket.request.max.bytes", "1048576")]);
    let addr = strom.addr();

    // Garbage after a valid length (api key 0xdead does not exist). A valid request before it
    // on the same connection is still answered.
    let mut c = Client::connect(addr);
    let (id, good) = c.frame(3, &api_versions_req(3));
    let garbage: Vec<u8> = (0u8..32).map(|i| 0xde ^ i.wrapping_mul(37)).collect();
    assert_eq!(&garbage[..2], &[0xde, 0xfb]);
    let mut bytes = good;
    bytes.extend_from_slice(&with_length(&garbage));
    c.write(&bytes);
    let resp = c.recv::<ApiVersionsRequest>(3, id);
    assert_eq!(resp.error_code, 0);
    c.expect_closed("garbage frame");
    assert_serving(&mut strom, "a garbage frame");

    // Garbage body behind a valid Metadata v12 header.
    let mut c = Client::connect(addr);
    let mut body = BytesMut::new();
    header(ApiKey::Metadata, 12, 7)
        .encode(&mut body, 2)
        .expect("header");
    body.extend_from_slice(b"\x05this is not a kafka request at all");
    c.write(&with_length(&body));
    c.expect_closed("garbage Metadata body");
    assert_serving(&mut strom, "a garbage Metadata body");

    // A negative length.
    let mut c = Client::connect(addr);
    c.write(&(-5i32).to_be_bytes());
    c.expect_closed("negative frame length");
    assert_serving(&mut strom, "a negative frame length");

    // A length below the smallest possible request (api key, version, correlation id).
    let mut c = Client::connect(addr);
    c.write(&with_length(&[0, 18, 0]));
    c.expect_closed("3-byte frame");
    assert_serving(&mut strom, "a 3-byte frame");

    // A length above socket.request.max.bytes: closed on the announcement alone.
    let mut c = Client::connect(addr);
    c.write(&(2 * 1024 * 1024i32).to_be_bytes());
    c.write(&[0u8; 1024]);
    c.expect_closed("2 MB frame announced");
    assert_serving(&mut strom, "a 2 MB frame announcement");

    // ...while a request just below the limit is served normally.
    create_topic(addr, "proto-big", 1, &[]);
    let mut c = Client::connect(addr);
    let big = "x".repeat(1_000_000);
    let (id, frame) = c.frame(9, &produce_req("proto-big", 1, batch(&[&big])));
    assert!(frame.len() < 1_048_576, "frame of {} bytes", frame.len());
    c.write(&frame);
    let resp = c.recv::<ProduceRequest>(9, id);
    let p = produce_result(&resp, "proto-big");
    assert_eq!(p.error_code, 0, "{:?}", p.error_message);
    assert_eq!(p.base_offset, 0);

    // An unknown API key.
    let mut c = Client::connect(addr);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(999)
        .with_request_api_version(0)
        .with_correlation_id(9)
        .encode(&mut body, 1)
        .expect("header");
    c.write(&with_length(&body));
    c.expect_closed("api key 999");
    assert_serving(&mut strom, "api key 999");

    // A frame whose length matches, but whose body stops in the middle.
    let mut c = Client::connect(addr);
    let full = encode_unframed(
        ApiKey::Metadata,
        12,
        11,
        &metadata_req(&["proto-aaaaaaaa", "proto-bbbbbbbb"], false),
    );
    let header_len = {
        let mut b = BytesMut::new();
        header(ApiKey::Metadata, 12, 11)
            .encode(&mut b, 2)
            .expect("header");
        b.len()
    };
    let cut = header_len + (full.len() - header_len) / 2;
    c.write(&with_length(&full[..cut]));
    c.expect_closed("truncated Metadata body");
    assert_serving(&mut strom, "a truncated Metadata body");

    // A frame cut off in the middle by the client going away: no response, connection closed.
    let mut c = Client::connect(addr);
    let (_, frame) = c.frame(12, &metadata_req(&["proto-aaaaaaaa"], false));
    c.write(&frame[..frame.len() / 2]);
    c.stream.shutdown(Shutdown::Write).expect("half-close");
    c.expect_closed("frame cut by EOF");
    assert_serving(&mut strom, "a frame cut by EOF");

    // Produce v1 is below the supported range (v3+): closed, not answered.
    let mut c = Client::connect(addr);
    let mut body = BytesMut::new();
    header(ApiKey::Produce, 1, 13)
        .encode(&mut body, 1)
        .expect("header");
    // A v1-shaped body: acks, timeout, [topic [partition, message set]].
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&5000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&9i16.to_be_bytes());
    body.extend_from_slice(b"proto-big");
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    c.write(&with_length(&body));
    c.expect_closed("Produce v1");
    assert_serving(&mut strom, "Produce v1");
    assert!(
        strom.log().contains("Produce v1 is not supported"),
        "the broker logs why it closed:\n{}",
        log_problems(&strom)
    );
}

/// A frame of a few bytes whose body announces an array of billions of elements must be
/// refused as malformed (there are not enough bytes for them), not sized up front.
#[test]
fn huge_array_count_in_a_small_frame_does_not_kill_the_broker() {
    let mut strom = Strom::start();
    let addr = strom.addr();
    // Metadata v0: topics is an INT32-counted array; v12: a varint-counted compact array.
    let cases: [(i16, &[u8]); 2] = [
        (0, &[0x7f, 0xff, 0xff, 0xff]),
        (12, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
    ];
    for (version, count) in cases {
        let mut c = Client::connect(addr);
        let mut body = BytesMut::new();
        header(ApiKey::Metadata, version, 77)
            .encode(&mut body, ApiKey::Metadata.request_header_version(version))
            .expect("header");
        body.extend_from_slice(count);
        c.write(&with_length(&body));
        c.expect_closed(&format!(
            "Metadata v{version} announcing ~2^31 topics in {} bytes",
            body.len()
        ));
        std::thread::sleep(Duration::from_millis(200));
        assert_serving(
            &mut strom,
            &format!("Metadata v{version} announcing ~2^31 topics"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Errors inside produce and metadata responses; acks=0
// ---------------------------------------------------------------------------------------------

#[test]
fn produce_and_metadata_errors_are_reported_in_the_response() {
    let strom = Strom::start();
    let addr = strom.addr();
    let id = create_topic(addr, "proto-errors", 1, &[]);
    create_topic(addr, "proto-small", 1, &[("max.message.bytes", "1000")]);
    let mut c = Client::connect(addr);

    // A corrupted CRC: flip a byte of the last record's value.
    let mut bad = batch(&["hello world"]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x20;
    for v in [3, 7, 11] {
        let resp = c.call(v, &produce_req("proto-errors", 1, Bytes::from(bad.clone())));
        let p = produce_result(&resp, "proto-errors");
        assert_eq!(
            p.error_code,
            ResponseError::CorruptMessage.code(),
            "v{v} corrupted batch"
        );
        assert_eq!(p.error_code, 2);
        assert_eq!(p.base_offset, -1);
        if v >= 8 {
            assert!(p.error_message.is_some(), "v{v}: error message");
            assert_eq!(p.record_errors.len(), 1, "v{v}: record errors");
            assert_eq!(p.record_errors[0].batch_index, 0);
        }
    }

    // Larger than the topic's max.message.bytes (1000)...
    let big = "y".repeat(2000);
    let resp = c.call(11, &produce_req("proto-small", 1, batch(&[&big])));
    let p = produce_result(&resp, "proto-small");
    assert_eq!(p.error_code, ResponseError::MessageTooLarge.code());
    assert_eq!(p.error_code, 10);
    // ...while a small batch fits.
    assert_eq!(produce_ok(&mut c, "proto-small", &["tiny"]), 0);

    // An unknown topic is not created by Produce.
    let resp = c.call(11, &produce_req("proto-no-such-topic", 1, batch(&["lost"])));
    let p = produce_result(&resp, "proto-no-such-topic");
    assert_eq!(p.error_code, ResponseError::UnknownTopicOrPartition.code());
    assert_eq!(p.error_code, 3);
    assert_eq!(
        metadata_of(addr, "proto-no-such-topic").error_code,
        3,
        "the topic still does not exist"
    );

    // An invalid topic name, with auto-creation allowed (v12 explicitly, v0 implicitly).
    for v in [0, 12] {
        let resp: MetadataResponse = c.call(v, &metadata_req(&["bad name!"], true));
        assert_eq!(resp.topics.len(), 1);
        assert_eq!(
            resp.topics[0].name.as_ref().map(|n| n.as_str()),
            Some("bad name!")
        );
        assert_eq!(
            resp.topics[0].error_code,
            ResponseError::InvalidTopicException.code(),
            "v{v}"
        );
        assert_eq!(resp.topics[0].error_code, 17);
    }

    // acks=5 is rejected and nothing is appended.
    let resp = c.call(11, &produce_req("proto-errors", 5, batch(&["never"])));
    let p = produce_result(&resp, "proto-errors");
    assert_eq!(p.error_code, ResponseError::InvalidRequiredAcks.code());
    assert_eq!(p.error_code, 21);
    assert_eq!(
        list_offset(&mut c, 9, "proto-errors", -1).offset,
        0,
        "nothing appended by failed produces"
    );

    // acks=0: no response at all; the next response on the connection is the Metadata one.
    let produce_id = c.send(
        11,
        &produce_req("proto-errors", 0, batch(&["fire-and-forget"])),
    );
    let metadata_id = c.send(12, &metadata_req(&["proto-errors"], false));
    assert_ne!(produce_id, metadata_id);
    let resp: MetadataResponse = c.recv::<MetadataRequest>(12, metadata_id);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].topic_id, id);
    // ...and the data is there.
    let resp: FetchResponse = c.call(12, &fetch_req(12, "proto-errors", id, 0, 1000, 1));
    let p = fetch_partition(&resp);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    let values: Vec<_> = records_of(p.records.as_ref())
        .iter()
        .map(|r| (r.offset, value_of(r)))
        .collect();
    assert_eq!(values, vec![(0, "fire-and-forget".to_owned())]);
}

/// Kafka answers an acks=0 produce that failed by closing the connection (KafkaApis:
/// "the server will close socket server so that the producer client will know that some error
/// has happened and will refresh its metadata"); otherwise an acks=0 producer never learns
/// that its writes are being dropped.
#[test]
fn acks0_produce_error_closes_the_connection() {
    let strom = Strom::start();
    let mut c = Client::connect(strom.addr());
    c.send(
        11,
        &produce_req("proto-acks0-no-such-topic", 0, batch(&["dropped"])),
    );
    c.expect_closed("acks=0 produce to an unknown topic");
}

// ---------------------------------------------------------------------------------------------
// 5. Pipelining
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order() {
    let strom = Strom::start();
    let addr = strom.addr();
    create_topic(addr, "proto-pipe", 1, &[]);
    let mut c = Client::connect(addr);
    let mut sent = Vec::new();
    let mut bytes = Vec::new();
    for i in 0..20 {
        let (api, version, (id, frame)) = match i % 3 {
            0 => (
                ApiKey::Metadata,
                12,
                c.frame(12, &metadata_req(&["proto-pipe"], false)),
            ),
            1 => (ApiKey::ApiVersions, 3, c.frame(3, &api_versions_req(3))),
            _ => (
                ApiKey::Produce,
                9,
                c.frame(
                    9,
                    &produce_req("proto-pipe", 1, batch(&[&format!("pipe-{i}")])),
                ),
            ),
        };
        sent.push((api, version, id));
        bytes.extend_from_slice(&frame);
    }
    c.write(&bytes);
    let mut offsets = Vec::new();
    for &(api, version, id) in &sent {
        let frame = c
            .read_frame()
            .unwrap_or_else(|e| panic!("response to {api:?} correlation {id}: {e}"));
        match api {
            ApiKey::Metadata => {
                let resp: MetadataResponse = decode_response(api, version, id, frame);
                assert_eq!(resp.topics[0].error_code, 0);
            }
            ApiKey::ApiVersions => {
                let resp: ApiVersionsResponse = decode_response(api, version, id, frame);
                assert_eq!(resp.error_code, 0);
            }
            _ => {
                let resp: ProduceResponse = decode_response(api, version, id, frame);
                let p = produce_result(&resp, "proto-pipe");
                assert_eq!(p.error_code, 0);
                offsets.push(p.base_offset);
            }
        }
    }
    let expected: Vec<i64> = (0..offsets.len() as i64).collect();
    assert_eq!(offsets, expected, "produce offsets follow request order");
    assert_eq!(offsets.len(), 6);
}

// ---------------------------------------------------------------------------------------------
// 6. Fetch long-poll
// ---------------------------------------------------------------------------------------------

#[test]
fn fetch_long_poll_wakes_on_produce_and_times_out_when_idle() {
    let strom = Strom::start();
    let addr = strom.addr();
    let id = create_topic(addr, "proto-poll", 1, &[]);

    let mut c = Client::connect(addr);
    let start = Instant::now();
    let fetch_id = c.send(12, &fetch_req(12, "proto-poll", id, 0, 3000, 1));
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut p = Client::connect(addr);
        produce_ok(&mut p, "proto-poll", &["wake-up"])
    });
    let resp: FetchResponse = c.recv::<FetchRequest>(12, fetch_id);
    let waited = start.elapsed();
    assert_eq!(producer.join().expect("producer thread"), 0);
    assert!(
        waited < Duration::from_millis(2500),
        "long-poll answered after {waited:?}, not woken by the produce"
    );
    assert!(
        waited >= Duration::from_millis(250),
        "answered after {waited:?}, before any data existed"
    );
    let p = fetch_partition(&resp);
    assert_eq!(p.error_code, 0);
    let values: Vec<_> = records_of(p.records.as_ref())
        .iter()
        .map(value_of)
        .collect();
    assert_eq!(values, vec!["wake-up".to_owned()]);

    // At the log end with nothing arriving: empty after max_wait.
    let start = Instant::now();
    let resp: FetchResponse = c.call(12, &fetch_req(12, "proto-poll", id, 1, 500, 1));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "idle fetch returned after {waited:?}, before max_wait"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "idle fetch took {waited:?}"
    );
    let p = fetch_partition(&resp);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 1);
    assert!(
        records_of(p.records.as_ref()).is_empty(),
        "no records at the log end"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Random frames
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends one frame on a fresh connection, half-closes it and reads until the broker closes:
/// `Ok(true)` if anything came back, `Ok(false)` if the connection was closed silently.
fn send_and_drain(addr: SocketAddr, frame: &[u8]) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(frame)?;
    s.shutdown(Shutdown::Write)?;
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => Ok(!sink.is_empty()),
        // Still open after 500 ms: a request that decoded and waits (e.g. a long-poll fetch).
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(true),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(!sink.is_empty()),
        Err(e) => Err(e),
    }
}

#[test]
fn fuzz_frames_never_kill_the_broker() {
    let mut strom = Strom::start();
    let addr = strom.addr();
    create_topic(addr, "proto-fuzz", 1, &[]);
    let seed = std::env::var("STROM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_u64);
    let mut rng = Rng(seed);
    let (mut answered, mut closed) = (0, 0);
    let mut previous: Option<String> = None;
    for i in 0..300i32 {
        let (api, lo, hi) = EXPECTED_APIS[rng.below(EXPECTED_APIS.len())];
        let version = lo + rng.below((hi - lo + 1) as usize) as i16;
        let mut frame = BytesMut::new();
        if i % 2 == 0 {
            // Only the fixed prefix (key, version, correlation id) is valid.
            frame.extend_from_slice(&(api as i16).to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&i.to_be_bytes());
        } else {
            // A complete, valid header: the random bytes reach the body decoder.
            header(api, version, i)
                .encode(&mut frame, api.request_header_version(version))
                .expect("header");
        }
        let len = if rng.below(8) == 0 {
            rng.below(1024)
        } else {
            rng.below(48)
        };
        frame.extend_from_slice(&rng.bytes(len));
        let frame = with_length(&frame);
        let this = format!("#{i} ({api:?} v{version}): {frame:02x?}");

        match send_and_drain(addr, &frame) {
            Ok(true) => answered += 1,
            Ok(false) => closed += 1,
            Err(e) => eprintln!("random frame {this}: {e}"),
        }
        if !strom.is_alive() {
            panic!(
                "strom died on random frame {this}\n(or on the one before: {})\nseed {seed:#x}; log:\n{}",
                previous.as_deref().unwrap_or("none"),
                strom.log()
            );
        }
        previous = Some(this);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_serving(&mut strom, "300 random frames");
    assert_eq!(answered + closed, 300);
    assert!(closed > 0, "random frames were all answered?");
    // And it still does real work.
    let mut c = Client::connect(addr);
    produce_ok(&mut c, "proto-fuzz", &["still-here"]);
}

/// A partition whose disk is full answers KAFKA_STORAGE_ERROR (56) and the broker keeps
/// serving its other partitions. `/dev/full` stands in for the segment file.
#[test]
fn a_full_disk_becomes_kafka_storage_error() {
    let mut strom = Strom::start();
    create_topic(strom.addr(), "disk-full", 1, &[]);
    create_topic(strom.addr(), "disk-fine", 1, &[]);
    assert!(strom.terminate().success());
    let seg = strom
        .data_dir()
        .join("disk-full-0")
        .join(format!("{:020}.log", 0));
    std::fs::remove_file(&seg).expect("remove segment");
    std::os::unix::fs::symlink("/dev/full", &seg).expect("symlink /dev/full");
    strom.restart();
    let mut c = Client::connect(strom.addr());
    for _ in 0..2 {
        let resp = c.call(9, &produce_req("disk-full", -1, batch(&["lost?"])));
        let p = produce_result(&resp, "disk-full");
        assert_eq!(
            p.error_code, 56,
            "produce to a full disk: {:?}",
            p.error_message
        );
        assert_eq!(p.base_offset, -1);
    }
    assert_eq!(produce_ok(&mut c, "disk-fine", &["ok"]), 0);
    assert!(strom.is_alive());
    assert!(
        strom.log().contains("append failed"),
        "no log line for the storage error"
    );
}

/// Stamps producer id, epoch and base sequence into a batch and fixes its CRC.
fn idempotent(batch: &Bytes, producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    let mut b = batch.to_vec();
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[test]
fn idempotent_sequences_dedupe_and_fence() {
    let strom = Strom::start();
    create_topic(strom.addr(), "seq", 1, &[]);
    let mut c = Client::connect(strom.addr());
    let init = c.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let pid = *init.producer_id;
    let produce = |c: &mut Client, batch: Bytes| {
        produce_result(&c.call(9, &produce_req("seq", -1, batch)), "seq")
    };

    let first = idempotent(&batch(&["a", "b"]), pid, 0, 0);
    let p = produce(&mut c, first.clone());
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    // The same batch again (a retry): same offset, nothing appended.
    let p = produce(&mut c, first);
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    let p = produce(&mut c, idempotent(&batch(&["c"]), pid, 0, 2));
    assert_eq!((p.error_code, p.base_offset), (0, 2));
    // A gap in the sequence.
    let p = produce(&mut c, idempotent(&batch(&["e"]), pid, 0, 5));
    assert_eq!(p.error_code, 45, "out of order: {:?}", p.error_message);
    // A bumped epoch restarts at 0; the old epoch is then fenced.
    let p = produce(&mut c, idempotent(&batch(&["f"]), pid, 1, 0));
    assert_eq!((p.error_code, p.base_offset), (0, 3));
    let p = produce(&mut c, idempotent(&batch(&["g"]), pid, 0, 3));
    assert_eq!(p.error_code, 47, "stale epoch: {:?}", p.error_message);
    // A producer this partition has never seen, starting mid-sequence.
    let p = produce(&mut c, idempotent(&batch(&["h"]), pid + 1000, 0, 7));
    assert_eq!(p.error_code, 59, "unknown producer: {:?}", p.error_message);
    assert_eq!(list_offset(&mut c, 9, "seq", -1).offset, 4);
}

#[test]
fn producer_state_survives_restarts() {
    let mut strom = Strom::start();
    create_topic(strom.addr(), "seq-restart", 1, &[]);
    let pid = 4242;
    let b0 = idempotent(&batch(&["x"]), pid, 0, 0);
    let send = |strom: &Strom, b: Bytes| {
        produce_result(
            &Client::connect(strom.addr()).call(9, &produce_req("seq-restart", -1, b)),
            "seq-restart",
        )
    };
    assert_eq!(send(&strom, b0.clone()).base_offset, 0);
    // Clean restart (snapshot), then a crash (rebuilt from the log): the retry is still known.
    assert!(strom.terminate().success());
    strom.restart();
    assert_eq!(
        (
            send(&strom, b0.clone()).error_code,
            send(&strom, b0.clone()).base_offset
        ),
        (0, 0)
    );
    strom.kill9();
    strom.restart();
    let p = send(&strom, b0);
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    assert_eq!(
        send(&strom, idempotent(&batch(&["y"]), pid, 0, 1)).base_offset,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Consumer groups (classic protocol): helpers and the per-version checks of test 1
// ---------------------------------------------------------------------------------------------

/// A broker whose first rebalance of a group does not wait `group.initial.rebalance.delay.ms`
/// (3 s by default) for more members.
fn group_broker() -> Strom {
    coordinator_ready(Strom::start_with(&[(
        "group.initial.rebalance.delay.ms",
        "0",
    )]))
}

/// Clients look the coordinator up before any group request, as Kafka requires; that first
/// FindCoordinator also creates the offsets topic. Raw tests that skip straight to JoinGroup
/// start from a broker where this already happened.
fn coordinator_ready(strom: Strom) -> Strom {
    let resp = Client::connect(strom.addr()).call(
        3,
        &FindCoordinatorRequest::default().with_key(sb("strom-protocol-tests")),
    );
    assert_eq!(
        resp.error_code, 0,
        "FindCoordinator: {:?}",
        resp.error_message
    );
    strom
}

/// The client id of every request (see [`header`]); Kafka prefixes new member ids with it.
const CLIENT_ID: &str = "strom-protocol-tests";
const CONSUMER: &str = "consumer";
/// Long enough that no member expires while a test runs, unless the test wants it to.
const SESSION_MS: i32 = 30_000;
/// Kafka's default `group.min.session.timeout.ms`, the shortest session a member may ask for.
const MIN_SESSION_MS: i32 = 6_000;
const REBALANCE_MS: i32 = 10_000;

// Kafka's error codes (checked against kafka-protocol's table in `group_error_codes_are_kafkas`).
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;
const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

#[test]
fn group_error_codes_are_kafkas() {
    let table = [
        (
            UNKNOWN_TOPIC_OR_PARTITION,
            ResponseError::UnknownTopicOrPartition,
        ),
        (ILLEGAL_GENERATION, ResponseError::IllegalGeneration),
        (
            INCONSISTENT_GROUP_PROTOCOL,
            ResponseError::InconsistentGroupProtocol,
        ),
        (INVALID_GROUP_ID, ResponseError::InvalidGroupId),
        (UNKNOWN_MEMBER_ID, ResponseError::UnknownMemberId),
        (
            INVALID_SESSION_TIMEOUT,
            ResponseError::InvalidSessionTimeout,
        ),
        (REBALANCE_IN_PROGRESS, ResponseError::RebalanceInProgress),
        (NON_EMPTY_GROUP, ResponseError::NonEmptyGroup),
        (GROUP_ID_NOT_FOUND, ResponseError::GroupIdNotFound),
        (MEMBER_ID_REQUIRED, ResponseError::MemberIdRequired),
        (FENCED_INSTANCE_ID, ResponseError::FencedInstanceId),
        (
            GROUP_SUBSCRIBED_TO_TOPIC,
            ResponseError::GroupSubscribedToTopic,
        ),
    ];
    for (code, error) in table {
        assert_eq!(code, error.code(), "{error:?}");
    }
}

fn gid(s: &str) -> GroupId {
    GroupId(sb(s))
}

/// A JoinGroup request with just the fields version `v` has; `protocols` are (name, metadata).
fn join_req(
    v: i16,
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    session_ms: i32,
    protocols: &[(&str, Bytes)],
) -> JoinGroupRequest {
    let mut req = JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(session_ms)
        .with_member_id(sb(member_id))
        .with_protocol_type(sb(CONSUMER))
        .with_protocols(
            protocols
                .iter()
                .map(|(name, metadata)| {
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(sb(name))
                        .with_metadata(metadata.clone())
                })
                .collect(),
        );
    if v >= 1 {
        req.rebalance_timeout_ms = REBALANCE_MS;
    }
    if v >= 5 {
        req.group_instance_id = instance.map(sb);
    } else {
        assert!(
            instance.is_none(),
            "JoinGroup v{v} has no group instance id"
        );
    }
    if v >= 8 {
        req.reason = Some(sb("protocol test"));
    }
    req
}

/// The one protocol ("range") the tests' members speak.
fn range(metadata: &Bytes) -> [(&'static str, Bytes); 1] {
    [("range", metadata.clone())]
}

/// Joins `group` as a new member, answering MEMBER_ID_REQUIRED (v4+, dynamic members) with the
/// id it hands out; returns the response to the join that got in.
fn join_new(
    c: &mut Client,
    v: i16,
    group: &str,
    instance: Option<&str>,
    session_ms: i32,
    metadata: &Bytes,
) -> JoinGroupResponse {
    let resp = c.call(
        v,
        &join_req(v, group, "", instance, session_ms, &range(metadata)),
    );
    if resp.error_code != MEMBER_ID_REQUIRED {
        return resp;
    }
    assert!(
        v >= 4 && instance.is_none(),
        "MEMBER_ID_REQUIRED for JoinGroup v{v} with instance id {instance:?}"
    );
    let id = resp.member_id.to_string();
    c.call(
        v,
        &join_req(v, group, &id, instance, session_ms, &range(metadata)),
    )
}

fn sync_req(
    v: i16,
    group: &str,
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
    assignments: &[(&str, Bytes)],
) -> SyncGroupRequest {
    let mut req = SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(sb(member_id))
        .with_assignments(
            assignments
                .iter()
                .map(|(member, assignment)| {
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(sb(member))
                        .with_assignment(assignment.clone())
                })
                .collect(),
        );
    if v >= 3 {
        req.group_instance_id = instance.map(sb);
    }
    if v >= 5 {
        req.protocol_type = Some(sb(CONSUMER));
        req.protocol_name = Some(sb("range"));
    }
    req
}

fn heartbeat_req(
    v: i16,
    group: &str,
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
) -> HeartbeatRequest {
    let req = HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(sb(member_id));
    if v >= 3 {
        req.with_group_instance_id(instance.map(sb))
    } else {
        req
    }
}

/// The error code of a Heartbeat of a dynamic member.
fn heartbeat(c: &mut Client, v: i16, group: &str, generation: i32, member_id: &str) -> i16 {
    c.call(v, &heartbeat_req(v, group, generation, member_id, None))
        .error_code
}

/// LeaveGroup of (member id, instance id) pairs: a batch from v3, a single dynamic member before.
fn leave_req(v: i16, group: &str, members: &[(&str, Option<&str>)]) -> LeaveGroupRequest {
    let req = LeaveGroupRequest::default().with_group_id(gid(group));
    if v < 3 {
        assert!(
            members.len() == 1 && members[0].1.is_none(),
            "LeaveGroup v{v} takes one dynamic member"
        );
        return req.with_member_id(sb(members[0].0));
    }
    req.with_members(
        members
            .iter()
            .map(|(member, instance)| {
                let m = leave_group_request::MemberIdentity::default()
                    .with_member_id(sb(member))
                    .with_group_instance_id(instance.map(sb));
                if v >= 5 {
                    m.with_reason(Some(sb("protocol test")))
                } else {
                    m
                }
            })
            .collect(),
    )
}

/// An OffsetCommit of (partition, offset, metadata) of one topic, with leader epoch `epoch`
/// where the version has it (v6+).
#[allow(clippy::too_many_arguments)]
fn commit_req(
    v: i16,
    group: &str,
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
    topic: &str,
    partitions: &[(i32, i64, &str)],
    epoch: i32,
) -> OffsetCommitRequest {
    let mut req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(sb(member_id))
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(tn(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|(partition, offset, metadata)| {
                            let p = offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(*partition)
                                .with_committed_offset(*offset)
                                .with_committed_metadata(Some(sb(metadata)));
                            if v >= 6 {
                                p.with_committed_leader_epoch(epoch)
                            } else {
                                p
                            }
                        })
                        .collect(),
                ),
        ]);
    if v >= 7 {
        req.group_instance_id = instance.map(sb);
    }
    req
}

/// (topic, partition, error code) of every partition of an OffsetCommit response.
fn commit_codes(resp: &OffsetCommitResponse) -> Vec<(String, i32, i16)> {
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

/// Commits `offset` for partition 0 of `topic` (OffsetCommit v9) and returns the error code.
fn commit_one(
    c: &mut Client,
    group: &str,
    generation: i32,
    member_id: &str,
    topic: &str,
    offset: i64,
    metadata: &str,
) -> i16 {
    let req = commit_req(
        9,
        group,
        generation,
        member_id,
        None,
        topic,
        &[(0, offset, metadata)],
        0,
    );
    let codes = commit_codes(&c.call(9, &req));
    assert_eq!(
        codes.len(),
        1,
        "partitions in OffsetCommit response: {codes:?}"
    );
    assert_eq!((codes[0].0.as_str(), codes[0].1), (topic, 0));
    codes[0].2
}

fn offset_fetch_req(v: i16, group: &str, topics: Option<&[(&str, &[i32])]>) -> OffsetFetchRequest {
    let req = if v >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(gid(group))
                .with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|(t, parts)| {
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(tn(t))
                                .with_partition_indexes(parts.to_vec())
                        })
                        .collect()
                })),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(gid(group))
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|(t, parts)| {
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(tn(t))
                            .with_partition_indexes(parts.to_vec())
                    })
                    .collect()
            }))
    };
    if v >= 7 {
        req.with_require_stable(true)
    } else {
        req
    }
}

/// (topic, partition, committed offset, leader epoch, metadata, error code).
type Fetched = (String, i32, i64, i32, Option<String>, i16);

/// Every partition of a one-group OffsetFetch response, sorted. Before v5 there is no leader
/// epoch on the wire and it decodes as -1.
fn fetched(c: &mut Client, v: i16, group: &str, topics: Option<&[(&str, &[i32])]>) -> Vec<Fetched> {
    let resp = c.call(v, &offset_fetch_req(v, group, topics));
    if v >= 3 {
        assert_eq!(resp.throttle_time_ms, 0);
    }
    let mut out: Vec<Fetched> = if v >= 8 {
        assert_eq!(resp.groups.len(), 1, "groups in OffsetFetch response");
        let g = &resp.groups[0];
        assert_eq!(g.group_id.as_str(), group);
        assert_eq!(g.error_code, 0, "group error in OffsetFetch response");
        g.topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref().map(|m| m.to_string()),
                        p.error_code,
                    )
                })
            })
            .collect()
    } else {
        if v >= 2 {
            assert_eq!(
                resp.error_code, 0,
                "top-level error in OffsetFetch response"
            );
        }
        resp.topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref().map(|m| m.to_string()),
                        p.error_code,
                    )
                })
            })
            .collect()
    };
    out.sort();
    out
}

/// The committed offset of one partition (OffsetFetch v8), -1 if there is none.
fn fetched_offset(c: &mut Client, group: &str, topic: &str, partition: i32) -> i64 {
    let got = fetched(c, 8, group, Some(&[(topic, &[partition])]));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].5, 0, "OffsetFetch error: {got:?}");
    got[0].2
}

/// A committed entry as OffsetFetch reports it.
fn committed_entry(
    topic: &str,
    partition: i32,
    offset: i64,
    epoch: i32,
    metadata: &str,
) -> Fetched {
    (
        topic.to_owned(),
        partition,
        offset,
        epoch,
        Some(metadata.to_owned()),
        0,
    )
}

/// A partition without a committed offset as OffsetFetch reports it (Kafka: -1 and "").
fn no_commit(topic: &str, partition: i32) -> Fetched {
    committed_entry(topic, partition, -1, -1, "")
}

/// DescribeGroups v5 of one group.
fn describe_group(
    addr: SocketAddr,
    group: &str,
) -> kafka_protocol::messages::describe_groups_response::DescribedGroup {
    let resp = Client::connect(addr).call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
    );
    assert_eq!(resp.groups.len(), 1, "groups in DescribeGroups response");
    let g = resp.groups[0].clone();
    assert_eq!(g.error_code, 0, "describe {group}");
    assert_eq!(g.group_id.as_str(), group);
    g
}

fn state_of(addr: SocketAddr, group: &str) -> String {
    describe_group(addr, group).group_state.to_string()
}

/// Forms a one-member group (JoinGroup v9, SyncGroup v5 with `assignment` for the member) over
/// `c`, and returns the member's join response.
fn stable_group(
    c: &mut Client,
    group: &str,
    instance: Option<&str>,
    metadata: &Bytes,
    assignment: &Bytes,
) -> JoinGroupResponse {
    let j = join_new(c, 9, group, instance, SESSION_MS, metadata);
    assert_eq!(j.error_code, 0, "join {group}");
    assert_eq!(j.leader, j.member_id, "the only member of {group} leads it");
    let id = j.member_id.to_string();
    let s = c.call(
        5,
        &sync_req(
            5,
            group,
            j.generation_id,
            &id,
            instance,
            &[(&id, assignment.clone())],
        ),
    );
    assert_eq!(s.error_code, 0, "sync {group}");
    assert_eq!(&s.assignment, assignment, "assignment in {group}");
    j
}

/// Consumer-protocol subscription metadata (v3, with its version prefix) for `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&3i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| sb(t)).collect())
        .encode(&mut buf, 3)
        .expect("encode subscription");
    buf.freeze()
}

/// Calls `f` every 20 ms while it returns `from`, for at most `within`; returns the last value.
fn poll_while<T: PartialEq>(within: Duration, from: T, mut f: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + within;
    loop {
        let now = f();
        if now != from || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that no response arrives on `c` within 300 ms (it is waiting for something).
fn nothing_arrives(c: &mut Client, what: &str) {
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    match c.stream.peek(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected no response yet, got {other:?}"),
    }
    c.stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
}

fn check_find_coordinator(w: &mut World, v: i16) {
    let group = format!("proto-fc-v{v}");
    let keys = [group.as_str(), "proto-fc-other"];
    // key_type 0 (a group) is the default, and the only kind before v1.
    let req = if v >= 4 {
        FindCoordinatorRequest::default()
            .with_coordinator_keys(keys.iter().map(|k| sb(k)).collect())
    } else {
        FindCoordinatorRequest::default().with_key(sb(&group))
    };
    let resp = w.client().call(v, &req);
    assert_eq!(resp.throttle_time_ms, 0);
    if v >= 4 {
        let got: Vec<_> = resp
            .coordinators
            .iter()
            .map(|c| {
                (
                    c.key.to_string(),
                    c.error_code,
                    *c.node_id,
                    c.host.to_string(),
                    c.port,
                )
            })
            .collect();
        let want: Vec<_> = keys
            .iter()
            .map(|k| ((*k).to_owned(), 0, NODE_ID, "127.0.0.1".to_owned(), w.port))
            .collect();
        assert_eq!(got, want, "one coordinator per key");
    } else {
        assert_eq!(resp.error_code, 0, "{:?}", resp.error_message);
        assert_eq!(*resp.node_id, NODE_ID);
        assert_eq!(resp.host.as_str(), "127.0.0.1");
        assert_eq!(resp.port, w.port);
    }
}

fn check_join_group(w: &mut World, v: i16) {
    let group = format!("proto-jg-v{v}");
    let metadata = Bytes::from(format!("jg-meta-v{v}"));
    let protocols = [
        ("range", metadata.clone()),
        ("roundrobin", Bytes::from_static(b"rr")),
    ];
    let mut c = w.client();
    let first = c.call(v, &join_req(v, &group, "", None, SESSION_MS, &protocols));
    let joined = if v >= 4 {
        assert_eq!(
            first.error_code, MEMBER_ID_REQUIRED,
            "first join of a dynamic member (KIP-394)"
        );
        assert_eq!(first.generation_id, -1);
        assert!(first.members.is_empty());
        let id = first.member_id.to_string();
        assert!(id.starts_with(&format!("{CLIENT_ID}-")), "member id {id:?}");
        let joined = c.call(v, &join_req(v, &group, &id, None, SESSION_MS, &protocols));
        assert_eq!(joined.member_id.as_str(), id, "the rejoin keeps the id");
        joined
    } else {
        first
    };
    assert_eq!(joined.error_code, 0, "join");
    if v >= 2 {
        assert_eq!(joined.throttle_time_ms, 0);
    }
    assert_eq!(joined.generation_id, 1, "first generation");
    let id = joined.member_id.to_string();
    assert!(id.starts_with(&format!("{CLIENT_ID}-")), "member id {id:?}");
    assert_eq!(joined.leader.as_str(), id, "the only member leads");
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    if v >= 7 {
        assert_eq!(joined.protocol_type.as_deref(), Some(CONSUMER));
    }
    if v >= 9 {
        assert!(!joined.skip_assignment);
    }
    let members: Vec<_> = joined
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.clone(),
                m.metadata.clone(),
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![(id, None, metadata)],
        "the leader gets the members with the chosen protocol's metadata"
    );
    assert_eq!(state_of(w.addr, &group), "CompletingRebalance");
}

fn check_sync_group(w: &mut World, v: i16) {
    let group = format!("proto-sg-v{v}");
    let mut c = w.client();
    let j = join_new(
        &mut c,
        9,
        &group,
        None,
        SESSION_MS,
        &Bytes::from_static(b"sg"),
    );
    assert_eq!(j.error_code, 0, "join");
    let id = j.member_id.to_string();
    // Not UTF-8: the broker passes the bytes on without looking inside.
    let assignment = Bytes::from(vec![0xff, 0x00, 0xfe, b's', b'g', v as u8]);
    let resp = c.call(
        v,
        &sync_req(
            v,
            &group,
            j.generation_id,
            &id,
            None,
            &[(&id, assignment.clone())],
        ),
    );
    assert_eq!(resp.error_code, 0, "sync");
    if v >= 1 {
        assert_eq!(resp.throttle_time_ms, 0);
    }
    assert_eq!(
        resp.assignment, assignment,
        "the leader's assignment, untouched"
    );
    if v >= 5 {
        assert_eq!(resp.protocol_type.as_deref(), Some(CONSUMER));
        assert_eq!(resp.protocol_name.as_deref(), Some("range"));
    }
    let d = describe_group(w.addr, &group);
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.members[0].member_assignment, assignment);
    // A retry in the Stable group gets the same assignment; a wrong generation gets nothing.
    let again = c.call(v, &sync_req(v, &group, j.generation_id, &id, None, &[]));
    assert_eq!((again.error_code, again.assignment), (0, assignment));
    let stale = c.call(v, &sync_req(v, &group, j.generation_id + 1, &id, None, &[]));
    assert_eq!(stale.error_code, ILLEGAL_GENERATION);
}

fn check_heartbeat(w: &mut World, v: i16) {
    let group = format!("proto-hb-v{v}");
    let mut c = w.client();
    let j = stable_group(
        &mut c,
        &group,
        None,
        &Bytes::from_static(b"hb"),
        &Bytes::from_static(b"hb-assignment"),
    );
    let id = j.member_id.to_string();
    let resp = c.call(v, &heartbeat_req(v, &group, j.generation_id, &id, None));
    assert_eq!(resp.error_code, 0);
    if v >= 1 {
        assert_eq!(resp.throttle_time_ms, 0);
    }
    assert_eq!(
        heartbeat(&mut c, v, &group, j.generation_id + 1, &id),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&mut c, v, &group, j.generation_id, "proto-nobody"),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        heartbeat(&mut c, v, "proto-hb-no-such-group", 1, &id),
        UNKNOWN_MEMBER_ID
    );
}

fn check_leave_group(w: &mut World, v: i16) {
    let group = format!("proto-lv-v{v}");
    let mut c = w.client();
    let j = stable_group(
        &mut c,
        &group,
        None,
        &Bytes::from_static(b"lv"),
        &Bytes::from_static(b"lv-assignment"),
    );
    let id = j.member_id.to_string();
    let resp = if v >= 3 {
        let resp = c.call(
            v,
            &leave_req(v, &group, &[(&id, None), ("proto-nobody", None)]),
        );
        assert_eq!(resp.error_code, 0);
        let got: Vec<_> = resp
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.clone(),
                    m.error_code,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (id.clone(), None, 0),
                ("proto-nobody".to_owned(), None, UNKNOWN_MEMBER_ID)
            ],
            "per-member results"
        );
        resp
    } else {
        let resp = c.call(v, &leave_req(v, &group, &[(&id, None)]));
        assert_eq!(resp.error_code, 0);
        let again = c.call(v, &leave_req(v, &group, &[(&id, None)]));
        assert_eq!(again.error_code, UNKNOWN_MEMBER_ID, "leaving twice");
        resp
    };
    if v >= 1 {
        assert_eq!(resp.throttle_time_ms, 0);
    }
    let d = describe_group(w.addr, &group);
    assert_eq!(d.group_state.as_str(), "Empty");
    assert!(
        d.members.is_empty(),
        "members after leaving: {:?}",
        d.members
    );
    assert_eq!(
        heartbeat(&mut c, 4, &group, j.generation_id, &id),
        UNKNOWN_MEMBER_ID
    );
}

fn check_offset_commit(w: &mut World, v: i16) {
    let group = format!("proto-oc-v{v}");
    let mut c = w.client();
    let j = stable_group(
        &mut c,
        &group,
        None,
        &Bytes::from_static(b"oc"),
        &Bytes::from_static(b"oc-assignment"),
    );
    let id = j.member_id.to_string();
    let generation = j.generation_id;
    let offset = 100 + i64::from(v);
    let metadata = format!("oc-v{v}");
    let req = commit_req(
        v,
        &group,
        generation,
        &id,
        None,
        MAIN,
        &[(0, offset, &metadata), (7, 1, "no such partition")],
        w.leader_epoch,
    );
    let resp = c.call(v, &req);
    if v >= 3 {
        assert_eq!(resp.throttle_time_ms, 0);
    }
    assert_eq!(
        commit_codes(&resp),
        vec![
            (MAIN.to_owned(), 0, 0),
            (MAIN.to_owned(), 7, UNKNOWN_TOPIC_OR_PARTITION)
        ]
    );
    let epoch = if v >= 6 { w.leader_epoch } else { -1 };
    let stored = vec![committed_entry(MAIN, 0, offset, epoch, &metadata)];
    assert_eq!(fetched(&mut c, 8, &group, Some(&[(MAIN, &[0])])), stored);
    // A stale generation and an unknown member are refused at this version too.
    for (generation, member, code) in [
        (generation + 1, id.as_str(), ILLEGAL_GENERATION),
        (generation, "proto-nobody", UNKNOWN_MEMBER_ID),
    ] {
        let req = commit_req(v, &group, generation, member, None, MAIN, &[(0, 1, "x")], 0);
        assert_eq!(
            commit_codes(&c.call(v, &req)),
            vec![(MAIN.to_owned(), 0, code)],
            "commit of member {member:?} in generation {generation}"
        );
    }
    assert_eq!(fetched(&mut c, 8, &group, Some(&[(MAIN, &[0])])), stored);
}

fn check_offset_fetch(w: &mut World, v: i16) {
    let group = format!("proto-of-v{v}");
    let topic = format!("proto-of-v{v}");
    create_topic(w.addr, &topic, 2, &[]);
    let mut c = w.client();
    let offset = 200 + i64::from(v);
    let metadata = format!("of-v{v}");
    // A simple commit (no member, generation -1), as from a consumer that uses assign().
    let req = commit_req(
        9,
        &group,
        -1,
        "",
        None,
        &topic,
        &[(0, offset, &metadata)],
        w.leader_epoch,
    );
    assert_eq!(commit_codes(&c.call(9, &req)), vec![(topic.clone(), 0, 0)]);
    let epoch = if v >= 5 { w.leader_epoch } else { -1 };
    let committed = committed_entry(&topic, 0, offset, epoch, &metadata);
    assert_eq!(
        fetched(&mut c, v, &group, Some(&[(&topic, &[0, 1])])),
        vec![committed.clone(), no_commit(&topic, 1)]
    );
    if v >= 2 {
        // Null topics: every committed offset of the group.
        assert_eq!(fetched(&mut c, v, &group, None), vec![committed.clone()]);
    }
    assert_eq!(
        fetched(&mut c, v, "proto-of-nobody", Some(&[(&topic, &[0])])),
        vec![no_commit(&topic, 0)],
        "a group without commits"
    );
    if v >= 8 {
        // Several groups in one request.
        let req = OffsetFetchRequest::default()
            .with_require_stable(true)
            .with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(gid(&group))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(tn(&topic))
                            .with_partition_indexes(vec![0]),
                    ])),
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(gid("proto-of-nobody"))
                    .with_topics(None),
            ]);
        let resp = c.call(v, &req);
        let got: Vec<_> = resp
            .groups
            .iter()
            .map(|g| {
                let offsets: Vec<_> = g
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(move |p| {
                            (t.name.to_string(), p.partition_index, p.committed_offset)
                        })
                    })
                    .collect();
                (g.group_id.to_string(), g.error_code, offsets)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (group.clone(), 0, vec![(topic.clone(), 0, offset)]),
                ("proto-of-nobody".to_owned(), 0, vec![]),
            ]
        );
    }
}

fn check_describe_groups(w: &mut World, v: i16) {
    let group = format!("proto-dg-v{v}");
    let metadata = Bytes::from(format!("dg-meta-v{v}"));
    let assignment = Bytes::from(format!("dg-assignment-v{v}"));
    let mut c = w.client();
    let j = stable_group(&mut c, &group, None, &metadata, &assignment);
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![gid(&group), gid("proto-dg-no-such-group")]);
    let resp = c.call(v, &req);
    if v >= 1 {
        assert_eq!(resp.throttle_time_ms, 0);
    }
    assert_eq!(resp.groups.len(), 2);
    let g = &resp.groups[0];
    assert_eq!(g.error_code, 0);
    assert_eq!(g.group_id.as_str(), group);
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.protocol_type.as_str(), CONSUMER);
    assert_eq!(g.protocol_data.as_str(), "range");
    if v >= 3 {
        assert_eq!(g.authorized_operations, i32::MIN, "not asked for");
    }
    assert_eq!(g.members.len(), 1);
    let m = &g.members[0];
    assert_eq!(m.member_id, j.member_id);
    assert_eq!(m.client_id.as_str(), CLIENT_ID);
    assert!(
        m.client_host.ends_with("127.0.0.1"),
        "client host {:?}",
        m.client_host
    );
    assert_eq!(m.member_metadata, metadata);
    assert_eq!(m.member_assignment, assignment);
    if v >= 4 {
        assert_eq!(m.group_instance_id, None);
    }
    // Kafka describes a group it does not know as Dead, without an error (before v6).
    let unknown = &resp.groups[1];
    assert_eq!(unknown.error_code, 0);
    assert_eq!(unknown.group_id.as_str(), "proto-dg-no-such-group");
    assert_eq!(unknown.group_state.as_str(), "Dead");
    assert_eq!(unknown.protocol_type.as_str(), "");
    assert!(unknown.members.is_empty());
}

fn check_list_groups(w: &mut World, v: i16) {
    let group = format!("proto-lg-v{v}");
    let mut c = w.client();
    stable_group(
        &mut c,
        &group,
        None,
        &Bytes::from_static(b"lg"),
        &Bytes::from_static(b"lg-assignment"),
    );
    let resp = c.call(v, &ListGroupsRequest::default());
    assert_eq!(resp.error_code, 0);
    if v >= 1 {
        assert_eq!(resp.throttle_time_ms, 0);
    }
    let ours: Vec<_> = resp
        .groups
        .iter()
        .filter(|g| g.group_id.as_str() == group)
        .collect();
    assert_eq!(ours.len(), 1, "{group} listed once");
    assert_eq!(ours[0].protocol_type.as_str(), CONSUMER);
    if v >= 4 {
        assert_eq!(ours[0].group_state.as_str(), "Stable");
    }
    if v >= 5 {
        assert_eq!(ours[0].group_type.as_str(), "classic");
    }
    let lists = |c: &mut Client, req: ListGroupsRequest| {
        let resp = c.call(v, &req);
        assert_eq!(resp.error_code, 0);
        resp.groups.iter().any(|g| g.group_id.as_str() == group)
    };
    let strs = |xs: &[&str]| xs.iter().map(|x| sb(x)).collect::<Vec<_>>();
    if v >= 4 {
        let states = |xs: &[&str]| ListGroupsRequest::default().with_states_filter(strs(xs));
        assert!(lists(&mut c, states(&["Stable"])), "state filter Stable");
        assert!(
            !lists(&mut c, states(&["Empty", "Dead"])),
            "state filter Empty, Dead"
        );
    }
    if v >= 5 {
        let types = |xs: &[&str]| ListGroupsRequest::default().with_types_filter(strs(xs));
        assert!(lists(&mut c, types(&["classic"])), "type filter classic");
        assert!(!lists(&mut c, types(&["consumer"])), "type filter consumer");
    }
}

fn check_delete_groups(w: &mut World, v: i16) {
    let group = format!("proto-dlg-v{v}");
    let unknown = format!("proto-dlg-unknown-v{v}");
    let mut c = w.client();
    let j = stable_group(
        &mut c,
        &group,
        None,
        &Bytes::from_static(b"dlg"),
        &Bytes::from_static(b"dlg-assignment"),
    );
    let id = j.member_id.to_string();
    assert_eq!(
        commit_one(&mut c, &group, j.generation_id, &id, MAIN, 5, "dlg"),
        0
    );
    let delete = |c: &mut Client, names: &[&str]| {
        let req = DeleteGroupsRequest::default()
            .with_groups_names(names.iter().map(|n| gid(n)).collect());
        let resp = c.call(v, &req);
        assert_eq!(resp.throttle_time_ms, 0);
        resp.results
            .iter()
            .map(|r| (r.group_id.to_string(), r.error_code))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        delete(&mut c, &[&group]),
        vec![(group.clone(), NON_EMPTY_GROUP)]
    );
    assert_eq!(state_of(w.addr, &group), "Stable");
    assert_eq!(fetched_offset(&mut c, &group, MAIN, 0), 5);
    let left = c.call(5, &leave_req(5, &group, &[(&id, None)]));
    assert_eq!(left.members[0].error_code, 0, "leave");
    assert_eq!(
        delete(&mut c, &[&group, &unknown]),
        vec![(group.clone(), 0), (unknown.clone(), GROUP_ID_NOT_FOUND)]
    );
    assert_eq!(
        fetched_offset(&mut c, &group, MAIN, 0),
        -1,
        "offsets go with the group"
    );
    assert_eq!(state_of(w.addr, &group), "Dead");
    assert_eq!(
        delete(&mut c, &[&group]),
        vec![(group.clone(), GROUP_ID_NOT_FOUND)],
        "deleting twice"
    );
}

fn check_offset_delete(w: &mut World, v: i16) {
    let group = format!("proto-od-v{v}");
    let other = format!("proto-od-other-v{v}");
    create_topic(w.addr, &other, 1, &[]);
    let mut c = w.client();
    // A consumer subscribed to MAIN only.
    let j = stable_group(&mut c, &group, None, &subscription(&[MAIN]), &Bytes::new());
    let id = j.member_id.to_string();
    assert_eq!(
        commit_one(&mut c, &group, j.generation_id, &id, MAIN, 3, "main"),
        0
    );
    assert_eq!(
        commit_one(&mut c, &group, j.generation_id, &id, &other, 4, "other"),
        0
    );
    let delete = |c: &mut Client, group: &str, topic: &str| {
        let req = OffsetDeleteRequest::default()
            .with_group_id(gid(group))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(tn(topic))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
            ]);
        let resp = c.call(v, &req);
        assert_eq!(resp.throttle_time_ms, 0);
        let partitions: Vec<_> = resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.to_string(), p.partition_index, p.error_code))
            })
            .collect();
        (resp.error_code, partitions)
    };
    assert_eq!(
        delete(&mut c, &group, &other),
        (0, vec![(other.clone(), 0, 0)]),
        "a topic the group does not subscribe to"
    );
    assert_eq!(fetched_offset(&mut c, &group, &other, 0), -1);
    assert_eq!(
        delete(&mut c, &group, MAIN),
        (0, vec![(MAIN.to_owned(), 0, GROUP_SUBSCRIBED_TO_TOPIC)]),
        "a topic the group subscribes to"
    );
    assert_eq!(fetched_offset(&mut c, &group, MAIN, 0), 3);
    assert_eq!(
        delete(&mut c, "proto-od-no-such-group", MAIN).0,
        GROUP_ID_NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------------------
// 9. The group state machine over the wire
// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_member_triggers_a_rebalance_and_followers_sync_after_the_leader() {
    let strom = group_broker();
    let addr = strom.addr();
    let group = "proto-rebalance";
    let (meta1, meta2) = (Bytes::from_static(b"meta-1"), Bytes::from_static(b"meta-2"));
    let mut c1 = Client::connect(addr);
    let j = stable_group(&mut c1, group, None, &meta1, &Bytes::from_static(b"alone"));
    let m1 = j.member_id.to_string();
    assert_eq!(j.generation_id, 1);
    assert_eq!(heartbeat(&mut c1, 4, group, 1, &m1), 0);

    // A second member. Being handed a member id does not disturb the group...
    let mut c2 = Client::connect(addr);
    let first = c2.call(9, &join_req(9, group, "", None, SESSION_MS, &range(&meta2)));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let m2 = first.member_id.to_string();
    assert_ne!(m1, m2);
    assert_eq!(
        heartbeat(&mut c1, 4, group, 1, &m1),
        0,
        "a member id handed out does not start a rebalance"
    );
    assert_eq!(state_of(addr, group), "Stable");

    // ...its join does, and waits until the first member has rejoined.
    let join2 = c2.send(
        9,
        &join_req(9, group, &m2, None, SESSION_MS, &range(&meta2)),
    );
    let code = poll_while(Duration::from_secs(5), 0, || {
        heartbeat(&mut c1, 4, group, 1, &m1)
    });
    assert_eq!(
        code, REBALANCE_IN_PROGRESS,
        "the first member's heartbeat during the rebalance"
    );
    assert_eq!(state_of(addr, group), "PreparingRebalance");
    nothing_arrives(
        &mut c2,
        "JoinGroup of the new member before the old one rejoined",
    );
    let j1 = c1.call(
        9,
        &join_req(9, group, &m1, None, SESSION_MS, &range(&meta1)),
    );
    let j2: JoinGroupResponse = c2.recv::<JoinGroupRequest>(9, join2);
    assert_eq!((j1.error_code, j2.error_code), (0, 0), "joins");
    assert_eq!(
        (j1.member_id.as_str(), j2.member_id.as_str()),
        (m1.as_str(), m2.as_str())
    );
    assert_eq!(
        (j1.generation_id, j2.generation_id),
        (2, 2),
        "one new generation for both"
    );
    assert_eq!(j1.leader, j2.leader, "one leader");
    assert_eq!(j1.leader.as_str(), m1, "the leader stays the leader");
    let mut members: Vec<_> = j1
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.metadata.clone()))
        .collect();
    members.sort();
    let mut want = vec![(m1.clone(), meta1.clone()), (m2.clone(), meta2.clone())];
    want.sort();
    assert_eq!(members, want, "the leader gets every member's metadata");
    assert!(j2.members.is_empty(), "a follower gets no member list");
    assert_eq!(state_of(addr, group), "CompletingRebalance");

    // The follower's SyncGroup waits for the leader's, which hands out the assignments.
    let sync2 = c2.send(5, &sync_req(5, group, 2, &m2, None, &[]));
    nothing_arrives(&mut c2, "the follower's SyncGroup before the leader's");
    assert_eq!(
        heartbeat(&mut c1, 4, group, 2, &m1),
        0,
        "heartbeat while completing"
    );
    let (a1, a2) = (
        Bytes::from_static(b"\x00\x01part-0"),
        Bytes::from_static(b"\x00\x01part-1"),
    );
    let s1 = c1.call(
        5,
        &sync_req(
            5,
            group,
            2,
            &m1,
            None,
            &[(&m1, a1.clone()), (&m2, a2.clone())],
        ),
    );
    let s2 = c2.recv::<SyncGroupRequest>(5, sync2);
    assert_eq!((s1.error_code, s1.assignment.clone()), (0, a1.clone()));
    assert_eq!((s2.error_code, s2.assignment.clone()), (0, a2.clone()));
    let d = describe_group(addr, group);
    assert_eq!(d.group_state.as_str(), "Stable");
    let mut assignments: Vec<_> = d
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.member_assignment.clone()))
        .collect();
    assignments.sort();
    let mut want = vec![(m1.clone(), a1), (m2.clone(), a2)];
    want.sort();
    assert_eq!(assignments, want);
    for (c, m) in [(&mut c1, &m1), (&mut c2, &m2)] {
        assert_eq!(heartbeat(c, 4, group, 2, m), 0, "{m} in generation 2");
        assert_eq!(
            heartbeat(c, 4, group, 1, m),
            ILLEGAL_GENERATION,
            "{m} in generation 1"
        );
    }

    // The follower leaves: the leader is told to rejoin and forms generation 3 alone.
    let left = c2.call(5, &leave_req(5, group, &[(&m2, None)]));
    assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
    assert_eq!(heartbeat(&mut c1, 4, group, 2, &m1), REBALANCE_IN_PROGRESS);
    let j1 = c1.call(
        9,
        &join_req(9, group, &m1, None, SESSION_MS, &range(&meta1)),
    );
    assert_eq!((j1.error_code, j1.generation_id), (0, 3));
    assert_eq!(j1.leader.as_str(), m1);
    let members: Vec<_> = j1.members.iter().map(|m| m.member_id.to_string()).collect();
    assert_eq!(members, vec![m1.clone()]);
}

#[test]
fn stale_generations_and_unknown_members_are_fenced() {
    let strom = group_broker();
    let addr = strom.addr();
    let group = "proto-fencing";
    let meta = Bytes::from_static(b"fencing");
    let mut c = Client::connect(addr);
    let j = stable_group(&mut c, group, None, &meta, &Bytes::from_static(b"a1"));
    let m = j.member_id.to_string();
    assert_eq!(j.generation_id, 1);
    // A valid member's commit to a topic that does not exist is refused for that partition.
    assert_eq!(
        commit_one(&mut c, group, 1, &m, MAIN_FENCING, 1, "g1"),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    create_topic(addr, MAIN_FENCING, 1, &[]);
    assert_eq!(commit_one(&mut c, group, 1, &m, MAIN_FENCING, 1, "g1"), 0);

    // The leader's JoinGroup in a Stable group starts generation 2.
    let j2 = c.call(9, &join_req(9, group, &m, None, SESSION_MS, &range(&meta)));
    assert_eq!((j2.error_code, j2.generation_id), (0, 2));
    assert_eq!(state_of(addr, group), "CompletingRebalance");
    assert_eq!(
        commit_one(&mut c, group, 2, &m, MAIN_FENCING, 2, "g2"),
        REBALANCE_IN_PROGRESS,
        "a commit before the new generation is synced"
    );
    assert_eq!(heartbeat(&mut c, 4, group, 2, &m), 0);
    assert_eq!(heartbeat(&mut c, 4, group, 1, &m), ILLEGAL_GENERATION);
    let stale = c.call(5, &sync_req(5, group, 1, &m, None, &[(&m, Bytes::new())]));
    assert_eq!(
        stale.error_code, ILLEGAL_GENERATION,
        "SyncGroup of generation 1"
    );
    let s = c.call(
        3,
        &sync_req(3, group, 2, &m, None, &[(&m, Bytes::from_static(b"a2"))]),
    );
    assert_eq!((s.error_code, s.assignment), (0, Bytes::from_static(b"a2")));

    // Generation 1 is over for every API and version.
    for v in [2, 5, 9] {
        let req = commit_req(v, group, 1, &m, None, MAIN_FENCING, &[(0, 10, "stale")], 0);
        assert_eq!(
            commit_codes(&c.call(v, &req)),
            vec![(MAIN_FENCING.to_owned(), 0, ILLEGAL_GENERATION)],
            "OffsetCommit v{v} in generation 1"
        );
    }
    for v in [0, 4] {
        assert_eq!(
            heartbeat(&mut c, v, group, 1, &m),
            ILLEGAL_GENERATION,
            "v{v}"
        );
        assert_eq!(
            heartbeat(&mut c, v, group, 3, &m),
            ILLEGAL_GENERATION,
            "v{v}"
        );
    }
    assert_eq!(commit_one(&mut c, group, 2, &m, MAIN_FENCING, 20, "g2"), 0);

    // A member id the group does not know.
    let nobody = "proto-nobody";
    assert_eq!(
        commit_one(&mut c, group, 2, nobody, MAIN_FENCING, 30, "x"),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(heartbeat(&mut c, 4, group, 2, nobody), UNKNOWN_MEMBER_ID);
    let s = c.call(5, &sync_req(5, group, 2, nobody, None, &[]));
    assert_eq!(s.error_code, UNKNOWN_MEMBER_ID, "SyncGroup");
    let j = c.call(
        9,
        &join_req(9, group, nobody, None, SESSION_MS, &range(&meta)),
    );
    assert_eq!(
        j.error_code, UNKNOWN_MEMBER_ID,
        "JoinGroup with an unknown member id"
    );
    let l = c.call(0, &leave_req(0, group, &[(nobody, None)]));
    assert_eq!(l.error_code, UNKNOWN_MEMBER_ID, "LeaveGroup");

    // Only the accepted commits count, and the group is untouched.
    assert_eq!(fetched_offset(&mut c, group, MAIN_FENCING, 0), 20);
    assert_eq!(state_of(addr, group), "Stable");
    assert_eq!(heartbeat(&mut c, 4, group, 2, &m), 0);
}

const MAIN_FENCING: &str = "proto-fencing";

/// Kafka validates the member and its generation before it looks at the group's state, so a
/// zombie hears ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID even in the middle of a rebalance
/// (GroupCoordinator.handleHeartbeat and doCommitOffsets; ClassicGroup.validateOffsetCommit in
/// the new coordinator). A commit with generation -1 to an Empty group is accepted whatever its
/// member id, and a member commit (generation >= 0) to a group that does not exist is refused
/// with ILLEGAL_GENERATION (GROUP_ID_NOT_FOUND from OffsetCommit v9 in the new coordinator,
/// OffsetMetadataManager.validateOffsetCommit) without creating the group.
#[test]
fn group_errors_follow_kafkas_validation_order() {
    let strom = group_broker();
    let addr = strom.addr();
    let group = "proto-precedence";
    create_topic(addr, group, 1, &[]);
    let meta = Bytes::from_static(b"p");
    let mut c1 = Client::connect(addr);
    let j = stable_group(&mut c1, group, None, &meta, &Bytes::new());
    let m1 = j.member_id.to_string();
    // A second member's join puts the group in PreparingRebalance until m1 rejoins.
    let mut c2 = Client::connect(addr);
    let first = c2.call(9, &join_req(9, group, "", None, SESSION_MS, &range(&meta)));
    let m2 = first.member_id.to_string();
    let join2 = c2.send(9, &join_req(9, group, &m2, None, SESSION_MS, &range(&meta)));
    assert_eq!(
        poll_while(Duration::from_secs(5), "Stable".to_owned(), || state_of(
            addr, group
        )),
        "PreparingRebalance"
    );
    // (what, acceptable codes, got)
    let mut results = vec![(
        "Heartbeat v4 of generation 0 during PreparingRebalance",
        vec![ILLEGAL_GENERATION],
        heartbeat(&mut c1, 4, group, 0, &m1),
    )];
    let j1 = c1.call(9, &join_req(9, group, &m1, None, SESSION_MS, &range(&meta)));
    let j2 = c2.recv::<JoinGroupRequest>(9, join2);
    assert_eq!((j1.generation_id, j2.generation_id), (2, 2));
    assert_eq!(state_of(addr, group), "CompletingRebalance");
    results.extend([
        (
            "OffsetCommit v9 of generation 1 during CompletingRebalance",
            vec![ILLEGAL_GENERATION],
            commit_one(&mut c1, group, 1, &m1, group, 1, "stale"),
        ),
        (
            "OffsetCommit v9 of an unknown member during CompletingRebalance",
            vec![UNKNOWN_MEMBER_ID],
            commit_one(&mut c1, group, 2, "proto-nobody", group, 1, "unknown"),
        ),
        (
            "OffsetCommit v9 of the current generation during CompletingRebalance",
            vec![REBALANCE_IN_PROGRESS],
            commit_one(&mut c1, group, 2, &m1, group, 1, "current"),
        ),
        (
            "OffsetCommit v9, generation -1, member id \"someone\", to a group nobody joined",
            vec![0],
            commit_one(
                &mut c1,
                "proto-precedence-simple",
                -1,
                "someone",
                group,
                1,
                "simple",
            ),
        ),
    ]);
    for (v, codes) in [
        (8, vec![ILLEGAL_GENERATION]),
        (9, vec![ILLEGAL_GENERATION, GROUP_ID_NOT_FOUND]),
    ] {
        let name = format!("proto-precedence-missing-v{v}");
        let req = commit_req(v, &name, 3, "proto-nobody", None, group, &[(0, 1, "x")], 0);
        let got = commit_codes(&c1.call(v, &req))[0].2;
        let what = if v == 8 {
            "OffsetCommit v8 of generation 3 to a group that does not exist"
        } else {
            "OffsetCommit v9 of generation 3 to a group that does not exist"
        };
        results.push((what, codes, got));
    }
    let listed = c1.call(4, &ListGroupsRequest::default());
    let phantoms = listed
        .groups
        .iter()
        .filter(|g| g.group_id.starts_with("proto-precedence-missing"))
        .count();
    results.push((
        "groups listed after refused commits to groups that do not exist",
        vec![0],
        phantoms as i16,
    ));
    let wrong: Vec<_> = results
        .iter()
        .filter(|(_, want, got)| !want.contains(got))
        .map(|(what, want, got)| format!("  {what}: expected {want:?}, got {got}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "deviations from Kafka:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_static_member_rejoins_without_a_rebalance_and_fences_its_old_id() {
    let strom = group_broker();
    let addr = strom.addr();
    let group = "proto-static";
    let instance = "proto-static-instance";
    let meta = Bytes::from_static(b"static");
    let assignment = Bytes::from_static(b"static-assignment");
    let mut c1 = Client::connect(addr);
    // Static members skip MEMBER_ID_REQUIRED.
    let j = c1.call(
        9,
        &join_req(9, group, "", Some(instance), SESSION_MS, &range(&meta)),
    );
    assert_eq!((j.error_code, j.generation_id), (0, 1), "static first join");
    let old = j.member_id.to_string();
    assert!(!old.is_empty());
    let members: Vec<_> = j
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_deref().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(members, vec![(old.clone(), Some(instance.to_owned()))]);
    let s = c1.call(
        5,
        &sync_req(
            5,
            group,
            1,
            &old,
            Some(instance),
            &[(&old, assignment.clone())],
        ),
    );
    assert_eq!((s.error_code, s.assignment), (0, assignment.clone()));
    let hb = c1.call(4, &heartbeat_req(4, group, 1, &old, Some(instance)));
    assert_eq!(hb.error_code, 0);
    assert_eq!(
        commit_one(&mut c1, group, 1, &old, MAIN_STATIC, 1, "old"),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    create_topic(addr, MAIN_STATIC, 1, &[]);

    // The instance restarts: an empty member id, the same instance id and metadata.
    let mut c2 = Client::connect(addr);
    let again = c2.call(
        9,
        &join_req(9, group, "", Some(instance), SESSION_MS, &range(&meta)),
    );
    assert_eq!(again.error_code, 0, "static rejoin");
    let new = again.member_id.to_string();
    assert!(!new.is_empty());
    assert_ne!(new, old, "a new member id");
    assert_eq!(again.generation_id, 1, "the same generation: no rebalance");
    let d = describe_group(addr, group);
    assert_eq!(d.group_state.as_str(), "Stable");
    let members: Vec<_> = d
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_deref().map(str::to_owned),
                m.member_assignment.clone(),
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![(new.clone(), Some(instance.to_owned()), assignment.clone())],
        "the instance keeps its assignment under its new id"
    );
    let hb = c2.call(4, &heartbeat_req(4, group, 1, &new, Some(instance)));
    assert_eq!(hb.error_code, 0, "heartbeat with the new id");
    let s = c2.call(5, &sync_req(5, group, 1, &new, Some(instance), &[]));
    assert_eq!((s.error_code, s.assignment), (0, assignment.clone()));
    assert_eq!(
        commit_one(&mut c2, group, 1, &new, MAIN_STATIC, 5, "new"),
        0
    );

    // The old id is fenced everywhere.
    let fenced = [UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID];
    let hb = c1.call(4, &heartbeat_req(4, group, 1, &old, Some(instance)));
    assert!(
        fenced.contains(&hb.error_code),
        "Heartbeat v4 of the old id: {}",
        hb.error_code
    );
    let hb = c1.call(2, &heartbeat_req(2, group, 1, &old, None));
    assert_eq!(
        hb.error_code, UNKNOWN_MEMBER_ID,
        "Heartbeat v2 of the old id"
    );
    let req = commit_req(
        9,
        group,
        1,
        &old,
        Some(instance),
        MAIN_STATIC,
        &[(0, 9, "old")],
        0,
    );
    let code = commit_codes(&c1.call(9, &req))[0].2;
    assert!(fenced.contains(&code), "OffsetCommit of the old id: {code}");
    let s = c1.call(5, &sync_req(5, group, 1, &old, Some(instance), &[]));
    assert!(
        fenced.contains(&s.error_code),
        "SyncGroup of the old id: {}",
        s.error_code
    );
    let j = c1.call(
        9,
        &join_req(9, group, &old, Some(instance), SESSION_MS, &range(&meta)),
    );
    assert!(
        fenced.contains(&j.error_code),
        "JoinGroup of the old id: {}",
        j.error_code
    );
    assert_eq!(fetched_offset(&mut c2, group, MAIN_STATIC, 0), 5);
    assert_eq!(state_of(addr, group), "Stable");

    // A static member leaves by its instance id alone.
    let left = c2.call(4, &leave_req(4, group, &[("", Some(instance))]));
    assert_eq!(
        (left.error_code, left.members[0].error_code),
        (0, 0),
        "leave by instance id"
    );
    assert_eq!(state_of(addr, group), "Empty");
}

const MAIN_STATIC: &str = "proto-static";

/// KIP-814 (JoinGroup v9): a static leader that rejoins a Stable group unchanged gets the member
/// list with skip_assignment=true. Before v9 Kafka answers with no members and the old leader id,
/// so that the rejoined leader does not compute an assignment the Stable group never hands out
/// (GroupCoordinatorTest.staticMemberRejoinWithLeaderIdAndUnknownMemberId).
#[test]
fn a_rejoining_static_leader_is_not_asked_to_assign() {
    let strom = group_broker();
    let addr = strom.addr();
    let meta = Bytes::from_static(b"static");
    let mut wrong = Vec::new();
    for v in [5, 9] {
        let group = format!("proto-static-leader-v{v}");
        let instance = format!("proto-static-leader-v{v}-instance");
        let mut c = Client::connect(addr);
        let j = stable_group(
            &mut c,
            &group,
            Some(&instance),
            &meta,
            &Bytes::from_static(b"a"),
        );
        let old = j.member_id.to_string();
        let again = c.call(
            v,
            &join_req(v, &group, "", Some(&instance), SESSION_MS, &range(&meta)),
        );
        assert_eq!((again.error_code, again.generation_id), (0, 1), "v{v}");
        let new = again.member_id.to_string();
        assert_ne!(new, old, "v{v}");
        let members: Vec<_> = again
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect();
        let (want_leader, want_members, want_skip) = if v >= 9 {
            (new.clone(), vec![new.clone()], true)
        } else {
            (old.clone(), vec![], false)
        };
        let got = (again.leader.to_string(), members, again.skip_assignment);
        if got != (want_leader.clone(), want_members.clone(), want_skip) {
            wrong.push(format!(
                "  JoinGroup v{v} (old id {old}, new id {new}): expected (leader, members, \
                 skip_assignment) = {:?}, got {got:?}",
                (want_leader, want_members, want_skip)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "static leader rejoins:\n{}",
        wrong.join("\n")
    );
}

/// KIP-345: a rebalance removes the dynamic members that did not rejoin in time, but a static
/// member stays (with its assignment in the leader's member list) until its session times out
/// (GroupCoordinator.onCompleteJoin: `notYetRejoinedMembers.filterNot(_.isStaticMember)`).
#[test]
fn a_static_member_that_misses_a_rebalance_stays_in_the_group() {
    let strom = group_broker();
    let addr = strom.addr();
    let group = "proto-static-absent";
    let meta = Bytes::from_static(b"s");
    // Every member allows 1 s for a rebalance, so one that does not rejoin is waited for 1 s.
    let join = |v: i16, member: &str, instance: Option<&str>| {
        let mut req = join_req(v, group, member, instance, SESSION_MS, &range(&meta));
        req.rebalance_timeout_ms = 1_000;
        req
    };
    let (mut ca, mut cb, mut cc) = (
        Client::connect(addr),
        Client::connect(addr),
        Client::connect(addr),
    );
    let ja = ca.call(9, &join(9, "", Some("proto-a")));
    assert_eq!((ja.error_code, ja.generation_id), (0, 1));
    let a = ja.member_id.to_string();
    let sa = ca.call(5, &sync_req(5, group, 1, &a, Some("proto-a"), &[]));
    assert_eq!(sa.error_code, 0);
    // Static B joins: generation 2 with A and B.
    let jb = cb.send(9, &join(9, "", Some("proto-b")));
    assert_eq!(
        poll_while(Duration::from_secs(5), 0, || heartbeat(
            &mut ca, 4, group, 1, &a
        )),
        REBALANCE_IN_PROGRESS
    );
    let ja = ca.call(9, &join(9, &a, Some("proto-a")));
    let jb: JoinGroupResponse = cb.recv::<JoinGroupRequest>(9, jb);
    assert_eq!((ja.generation_id, jb.generation_id), (2, 2));
    let b = jb.member_id.to_string();
    let assignments = [
        (a.as_str(), Bytes::from_static(b"A")),
        (b.as_str(), Bytes::from_static(b"B")),
    ];
    let sa = ca.call(5, &sync_req(5, group, 2, &a, Some("proto-a"), &assignments));
    let sb_ = cb.call(5, &sync_req(5, group, 2, &b, Some("proto-b"), &[]));
    assert_eq!((sa.error_code, sb_.error_code), (0, 0));
    assert_eq!(sb_.assignment, Bytes::from_static(b"B"));

    // Dynamic C joins while B is away (it does not rejoin): A rejoins, B is waited for 1 s.
    let first = cc.call(9, &join(9, "", None));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let c = first.member_id.to_string();
    let jc = cc.send(9, &join(9, &c, None));
    assert_eq!(
        poll_while(Duration::from_secs(5), 0, || heartbeat(
            &mut ca, 4, group, 2, &a
        )),
        REBALANCE_IN_PROGRESS
    );
    let ja = ca.call(9, &join(9, &a, Some("proto-a")));
    let jc: JoinGroupResponse = cc.recv::<JoinGroupRequest>(9, jc);
    assert_eq!((ja.error_code, jc.error_code), (0, 0));
    assert_eq!((ja.generation_id, jc.generation_id), (3, 3));
    let mut members: Vec<_> = ja.members.iter().map(|m| m.member_id.to_string()).collect();
    members.sort();
    let mut want = vec![a.clone(), b.clone(), c.clone()];
    want.sort();
    assert_eq!(
        members, want,
        "the static member B is still in generation 3"
    );
    let described = describe_group(addr, group).members.len();
    assert_eq!(described, 3, "members described");
}

#[test]
fn a_silent_member_is_removed_after_its_session_timeout() {
    let strom = group_broker();
    let addr = strom.addr();
    let (silent, alive) = ("proto-session-silent", "proto-session-alive");
    let mut c = Client::connect(addr);
    let meta = Bytes::from_static(b"s");
    let j = join_new(&mut c, 9, silent, None, MIN_SESSION_MS, &meta);
    assert_eq!(j.error_code, 0);
    let m = j.member_id.to_string();
    let k = join_new(&mut c, 9, alive, None, MIN_SESSION_MS, &meta);
    assert_eq!(k.error_code, 0);
    let n = k.member_id.to_string();
    let synced = Instant::now();
    for (group, id, generation) in [(silent, &m, j.generation_id), (alive, &n, k.generation_id)] {
        let s = c.call(
            5,
            &sync_req(5, group, generation, id, None, &[(id, Bytes::new())]),
        );
        assert_eq!(s.error_code, 0);
    }
    // One member goes quiet; the other heartbeats every second.
    let mut last_beat = Instant::now();
    let state = poll_while(Duration::from_millis(9_000), "Stable".to_owned(), || {
        if last_beat.elapsed() >= Duration::from_secs(1) {
            assert_eq!(heartbeat(&mut c, 4, alive, k.generation_id, &n), 0);
            last_beat = Instant::now();
        }
        state_of(addr, silent)
    });
    let gone = synced.elapsed();
    assert_eq!(state, "Empty", "after {gone:?}");
    assert!(
        gone >= Duration::from_millis(MIN_SESSION_MS as u64 - 100),
        "removed after {gone:?}, before its session timeout"
    );
    assert!(describe_group(addr, silent).members.is_empty());
    assert_eq!(
        heartbeat(&mut c, 4, silent, j.generation_id, &m),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        state_of(addr, alive),
        "Stable",
        "the member that heartbeats stays"
    );
    assert_eq!(heartbeat(&mut c, 4, alive, k.generation_id, &n), 0);
}

/// Kafka forgets a member id handed out with MEMBER_ID_REQUIRED when that member does not join
/// within its session timeout (GroupCoordinator.addPendingMemberExpiration), so a client that
/// dies between the two JoinGroups cannot hold up later rebalances.
#[test]
fn an_abandoned_member_id_does_not_hold_up_later_rebalances() {
    let strom = group_broker();
    let addr = strom.addr();
    let group = "proto-pending";
    let meta = Bytes::from_static(b"p");
    let mut c1 = Client::connect(addr);
    let j = stable_group(&mut c1, group, None, &meta, &Bytes::new());
    let m1 = j.member_id.to_string();
    let mut c2 = Client::connect(addr);
    let first = c2.call(
        9,
        &join_req(9, group, "", None, MIN_SESSION_MS, &range(&meta)),
    );
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    drop(c2);
    let deadline = Instant::now() + Duration::from_millis(MIN_SESSION_MS as u64 + 700);
    while Instant::now() < deadline {
        assert_eq!(heartbeat(&mut c1, 4, group, 1, &m1), 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    // The leader rejoins (a rebalance); nobody else is coming.
    c1.stream
        .set_read_timeout(Some(Duration::from_millis(REBALANCE_MS as u64 + 5_000)))
        .expect("read timeout");
    let start = Instant::now();
    let j = c1.call(9, &join_req(9, group, &m1, None, SESSION_MS, &range(&meta)));
    let took = start.elapsed();
    assert_eq!((j.error_code, j.generation_id), (0, 2));
    assert!(
        took < Duration::from_secs(2),
        "the rebalance took {took:?}: it waited for the abandoned member id"
    );
}

#[test]
fn committed_offsets_survive_restarts() {
    let mut strom = group_broker();
    let addr = strom.addr();
    let topic = "proto-durable";
    create_topic(addr, topic, 3, &[]);
    let (members, simple, deleted) = (
        "proto-durable-members",
        "proto-durable-simple",
        "proto-durable-deleted",
    );
    let mut c = Client::connect(addr);
    let j = stable_group(
        &mut c,
        members,
        None,
        &Bytes::from_static(b"d"),
        &Bytes::new(),
    );
    let id = j.member_id.to_string();
    let req = commit_req(
        9,
        members,
        1,
        &id,
        None,
        topic,
        &[(0, 10, "m0"), (1, 11, "m1")],
        4,
    );
    assert_eq!(
        commit_codes(&c.call(9, &req)),
        vec![(topic.to_owned(), 0, 0), (topic.to_owned(), 1, 0)]
    );
    // The latest commit of a partition wins when the offsets topic is read back.
    for (offset, metadata) in [(42, "first"), (43, "second")] {
        let req = commit_req(9, simple, -1, "", None, topic, &[(2, offset, metadata)], 6);
        assert_eq!(
            commit_codes(&c.call(9, &req)),
            vec![(topic.to_owned(), 2, 0)]
        );
    }
    assert_eq!(commit_one(&mut c, deleted, -1, "", topic, 7, "gone"), 0);
    let resp = c.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![gid(deleted)]),
    );
    assert_eq!(resp.results[0].error_code, 0, "delete {deleted}");

    // `also`: further committed offsets of `simple`.
    let check = |addr: SocketAddr, also: &[Fetched], when: &str| {
        let mut c = Client::connect(addr);
        assert_eq!(
            fetched(&mut c, 9, members, None),
            vec![
                committed_entry(topic, 0, 10, 4, "m0"),
                committed_entry(topic, 1, 11, 4, "m1"),
            ],
            "{members} {when}"
        );
        let mut want = vec![committed_entry(topic, 2, 43, 6, "second")];
        want.extend_from_slice(also);
        want.sort();
        assert_eq!(fetched(&mut c, 5, simple, None), want, "{simple} {when}");
        assert_eq!(
            fetched(&mut c, 9, deleted, None),
            vec![],
            "{deleted} {when}"
        );
    };
    check(addr, &[], "before the restart");
    assert!(strom.terminate().success(), "clean shutdown");
    strom.restart();
    check(addr, &[], "after a clean restart");

    // A commit after the restart, then a crash.
    let mut c = Client::connect(addr);
    let req = commit_req(9, simple, -1, "", None, topic, &[(0, 12, "after")], 7);
    assert_eq!(
        commit_codes(&c.call(9, &req)),
        vec![(topic.to_owned(), 0, 0)]
    );
    strom.kill9();
    strom.restart();
    check(
        addr,
        &[committed_entry(topic, 0, 12, 7, "after")],
        "after SIGKILL",
    );
}

#[test]
fn simple_commits_need_a_group_without_members() {
    let strom = group_broker();
    let addr = strom.addr();
    let group = "proto-simple";
    create_topic(addr, group, 1, &[]);
    let mut c = Client::connect(addr);
    // A group nobody has joined.
    for (v, offset) in [(2, 1), (5, 2), (9, 3)] {
        let req = commit_req(v, group, -1, "", None, group, &[(0, offset, "simple")], 0);
        assert_eq!(
            commit_codes(&c.call(v, &req)),
            vec![(group.to_owned(), 0, 0)],
            "simple commit v{v}"
        );
    }
    assert_eq!(fetched_offset(&mut c, group, group, 0), 3);
    let listed = c.call(4, &ListGroupsRequest::default());
    let ours: Vec<_> = listed
        .groups
        .iter()
        .filter(|g| g.group_id.as_str() == group)
        .map(|g| (g.protocol_type.to_string(), g.group_state.to_string()))
        .collect();
    assert_eq!(ours, vec![(String::new(), "Empty".to_owned())], "listed");

    // Once the group has a member, a commit must come from a member of the current generation.
    let j = stable_group(
        &mut c,
        group,
        None,
        &Bytes::from_static(b"s"),
        &Bytes::new(),
    );
    let id = j.member_id.to_string();
    for v in [2, 9] {
        let req = commit_req(v, group, -1, "", None, group, &[(0, 100, "simple")], 0);
        assert_eq!(
            commit_codes(&c.call(v, &req)),
            vec![(group.to_owned(), 0, UNKNOWN_MEMBER_ID)],
            "simple commit v{v} to a Stable group"
        );
    }
    assert_eq!(fetched_offset(&mut c, group, group, 0), 3);
    assert_eq!(
        commit_one(&mut c, group, j.generation_id, &id, group, 4, "member"),
        0
    );

    // When the last member has left, simple commits work again.
    let left = c.call(5, &leave_req(5, group, &[(&id, None)]));
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(state_of(addr, group), "Empty");
    assert_eq!(
        commit_one(&mut c, group, -1, "", group, 5, "simple again"),
        0
    );
    assert_eq!(fetched_offset(&mut c, group, group, 0), 5);
}

#[test]
fn delete_groups_deletes_only_empty_groups() {
    let strom = group_broker();
    let addr = strom.addr();
    let (busy, empty, never) = ("proto-del-busy", "proto-del-empty", "proto-del-never");
    create_topic(addr, busy, 1, &[]);
    let mut c = Client::connect(addr);
    let j = stable_group(&mut c, busy, None, &Bytes::from_static(b"b"), &Bytes::new());
    assert_eq!(
        commit_one(&mut c, busy, 1, j.member_id.as_str(), busy, 8, "busy"),
        0
    );
    assert_eq!(commit_one(&mut c, empty, -1, "", busy, 9, "empty"), 0);
    let resp = c.call(
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![gid(busy), gid(never), gid(empty)]),
    );
    let got: Vec<_> = resp
        .results
        .iter()
        .map(|r| (r.group_id.to_string(), r.error_code))
        .collect();
    assert_eq!(
        got,
        vec![
            (busy.to_owned(), NON_EMPTY_GROUP),
            (never.to_owned(), GROUP_ID_NOT_FOUND),
            (empty.to_owned(), 0)
        ]
    );
    assert_eq!(state_of(addr, busy), "Stable");
    assert_eq!(fetched_offset(&mut c, busy, busy, 0), 8);
    assert_eq!(fetched_offset(&mut c, empty, busy, 0), -1);
    assert_eq!(state_of(addr, empty), "Dead");
    let listed = c.call(4, &ListGroupsRequest::default());
    let names: Vec<_> = listed
        .groups
        .iter()
        .map(|g| g.group_id.to_string())
        .collect();
    assert_eq!(names, vec![busy.to_owned()], "listed groups");
    // The name can be used again.
    assert_eq!(commit_one(&mut c, empty, -1, "", busy, 10, "again"), 0);
    assert_eq!(fetched_offset(&mut c, empty, busy, 0), 10);
}

#[test]
fn join_group_rejects_bad_requests() {
    let strom = group_broker();
    let addr = strom.addr();
    let mut c = Client::connect(addr);
    let meta = Bytes::from_static(b"x");
    for v in [0, 4, 9] {
        for session in [MIN_SESSION_MS - 1, 1_800_001] {
            let j = c.call(
                v,
                &join_req(v, "proto-bad", "", None, session, &range(&meta)),
            );
            assert_eq!(
                j.error_code, INVALID_SESSION_TIMEOUT,
                "v{v}, session timeout {session}"
            );
        }
        let j = c.call(v, &join_req(v, "", "", None, SESSION_MS, &range(&meta)));
        assert_eq!(j.error_code, INVALID_GROUP_ID, "v{v}, empty group id");
        let j = c.call(v, &join_req(v, "proto-bad-none", "", None, SESSION_MS, &[]));
        assert_eq!(
            j.error_code, INCONSISTENT_GROUP_PROTOCOL,
            "v{v}, no protocols"
        );
    }
    // Against a group of consumers speaking "range": another protocol type, another protocol.
    let group = "proto-bad-mix";
    stable_group(&mut c, group, None, &meta, &Bytes::new());
    let mut other_type = join_req(9, group, "", None, SESSION_MS, &range(&meta));
    other_type.protocol_type = sb("connect");
    assert_eq!(
        c.call(9, &other_type).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    let sticky = join_req(9, group, "", None, SESSION_MS, &[("sticky", meta.clone())]);
    assert_eq!(c.call(9, &sticky).error_code, INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(state_of(addr, group), "Stable");
}

/// OffsetCommit v0/v1 request frame, encoded by hand: kafka-protocol no longer models them.
#[allow(clippy::too_many_arguments)]
fn legacy_commit_frame(
    v: i16,
    id: i32,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    parts: &[(i32, i64, &str)],
) -> Vec<u8> {
    fn put_str(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as i16).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    let mut b = Vec::new();
    b.extend_from_slice(&8i16.to_be_bytes());
    b.extend_from_slice(&v.to_be_bytes());
    b.extend_from_slice(&id.to_be_bytes());
    put_str(&mut b, "strom-tests");
    put_str(&mut b, group);
    if v >= 1 {
        b.extend_from_slice(&generation.to_be_bytes());
        put_str(&mut b, member);
    }
    b.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut b, topic);
    b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
    for (p, o, m) in parts {
        b.extend_from_slice(&p.to_be_bytes());
        b.extend_from_slice(&o.to_be_bytes());
        if v >= 1 {
            b.extend_from_slice(&(-1i64).to_be_bytes()); // commit timestamp
        }
        put_str(&mut b, m);
    }
    with_length(&b)
}

/// v0 and v1 (sarama's default) are answered in the v2 layout, which is byte-identical.
fn check_offset_commit_legacy(w: &mut World, v: i16) {
    let group = format!("proto-oc-v{v}");
    let mut c = w.client();
    let (generation, member) = if v == 0 {
        (-1, String::new()) // v0 has no membership: a simple commit
    } else {
        let j = stable_group(
            &mut c,
            &group,
            None,
            &Bytes::from_static(b"oc"),
            &Bytes::from_static(b"oc-assignment"),
        );
        (j.generation_id, j.member_id.to_string())
    };
    let offset = 100 + i64::from(v);
    let metadata = format!("oc-v{v}");
    let id = c.next_id();
    c.write(&legacy_commit_frame(
        v,
        id,
        &group,
        generation,
        &member,
        MAIN,
        &[(0, offset, &metadata), (7, 1, "no such partition")],
    ));
    let frame = c.read_frame().expect("legacy OffsetCommit response");
    let resp: OffsetCommitResponse = decode_response(ApiKey::OffsetCommit, 2, id, frame);
    assert_eq!(
        commit_codes(&resp),
        vec![
            (MAIN.to_owned(), 0, 0),
            (MAIN.to_owned(), 7, UNKNOWN_TOPIC_OR_PARTITION)
        ]
    );
    let stored = vec![committed_entry(MAIN, 0, offset, -1, &metadata)];
    assert_eq!(fetched(&mut c, 8, &group, Some(&[(MAIN, &[0])])), stored);
    if v >= 1 {
        let id = c.next_id();
        c.write(&legacy_commit_frame(
            v,
            id,
            &group,
            generation + 1,
            &member,
            MAIN,
            &[(0, 1, "x")],
        ));
        let resp: OffsetCommitResponse = decode_response(
            ApiKey::OffsetCommit,
            2,
            id,
            c.read_frame().expect("response"),
        );
        assert_eq!(
            commit_codes(&resp),
            vec![(MAIN.to_owned(), 0, ILLEGAL_GENERATION)]
        );
        assert_eq!(fetched(&mut c, 8, &group, Some(&[(MAIN, &[0])])), stored);
    }
}

/// A restarted broker resumes its groups (membership, generation, assignment) from the offsets
/// topic, so live members carry on without a rebalance — after SIGTERM and after kill -9.
#[test]
fn group_membership_survives_restarts() {
    let mut strom = coordinator_ready(Strom::start_with(&[(
        "group.initial.rebalance.delay.ms",
        "0",
    )]));
    let assignment = Bytes::from_static(b"kept-assignment");
    let j = stable_group(
        &mut Client::connect(strom.addr()),
        "proto-resume",
        None,
        &Bytes::from_static(b"meta"),
        &assignment,
    );
    let (member, generation) = (j.member_id.to_string(), j.generation_id);
    // Let the background tick store the membership before the crash.
    std::thread::sleep(Duration::from_millis(500));
    for crash in [false, true] {
        if crash {
            strom.kill9();
        } else {
            assert!(strom.terminate().success());
        }
        strom.restart();
        let mut c = Client::connect(strom.addr());
        assert_eq!(
            heartbeat(&mut c, 4, "proto-resume", generation, &member),
            0,
            "member lost after restart (crash: {crash})"
        );
        let g = describe_group(strom.addr(), "proto-resume");
        assert_eq!(g.group_state.as_str(), "Stable");
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.members[0].member_assignment, assignment);
        let s = c.call(
            5,
            &sync_req(5, "proto-resume", generation, &member, None, &[]),
        );
        assert_eq!(
            (s.error_code, s.assignment.clone()),
            (0, assignment.clone())
        );
    }
}

/// `__consumer_offsets` does not grow without bound: past `offsets.topic.segment.bytes` a
/// partition is rewritten from the coordinator's state and its old segments are dropped, and
/// the latest offsets and memberships survive a crash afterwards.
#[test]
fn the_offsets_topic_is_compacted() {
    let mut strom = coordinator_ready(Strom::start_with(&[
        ("group.initial.rebalance.delay.ms", "0"),
        ("offsets.topic.num.partitions", "1"),
        ("offsets.topic.segment.bytes", "4096"),
        ("log.retention.check.interval.ms", "200"),
    ]));
    create_topic(strom.addr(), "compacted-src", 1, &[]);
    let mut c = Client::connect(strom.addr());
    let j = stable_group(
        &mut c,
        "proto-compact",
        None,
        &Bytes::from_static(b"m"),
        &Bytes::from_static(b"a"),
    );
    let member = j.member_id.to_string();
    for i in 0..300i64 {
        let req = commit_req(
            8,
            "proto-compact",
            j.generation_id,
            &member,
            None,
            "compacted-src",
            &[(0, i, "meta")],
            -1,
        );
        assert_eq!(
            commit_codes(&c.call(8, &req)),
            vec![("compacted-src".to_owned(), 0, 0)]
        );
    }
    // Simple commits of another group hashed to the same (only) partition.
    for i in 0..50i64 {
        let req = commit_req(
            8,
            "proto-compact-simple",
            -1,
            "",
            None,
            "compacted-src",
            &[(0, 1000 + i, "")],
            -1,
        );
        assert_eq!(
            commit_codes(&c.call(8, &req)),
            vec![("compacted-src".to_owned(), 0, 0)]
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let low = loop {
        let low = list_offset(&mut c, 9, "__consumer_offsets", -2).offset;
        // Compaction may first run while commits are still arriving; wait for one after them.
        if low > 100 {
            break low;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "__consumer_offsets was never compacted"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(low > 100, "only {low} records dropped");
    strom.kill9();
    strom.restart();
    let mut c = Client::connect(strom.addr());
    assert_eq!(
        fetched_offset(&mut c, "proto-compact", "compacted-src", 0),
        299
    );
    assert_eq!(
        fetched_offset(&mut c, "proto-compact-simple", "compacted-src", 0),
        1049
    );
    assert_eq!(
        heartbeat(&mut c, 4, "proto-compact", j.generation_id, &member),
        0
    );
}

/// Clients may not write Kafka's internal topics; other `__` names are ordinary topics.
#[test]
fn internal_topics_refuse_client_writes() {
    let strom = Strom::start();
    let mut c = Client::connect(strom.addr());
    // FindCoordinator creates __consumer_offsets.
    let resp = c.call(
        3,
        &FindCoordinatorRequest::default()
            .with_key(sb("g"))
            .with_key_type(0),
    );
    assert_eq!(resp.error_code, 0);
    let p = produce_result(
        &c.call(9, &produce_req("__consumer_offsets", 1, batch(&["forged"]))),
        "__consumer_offsets",
    );
    assert_eq!(p.error_code, 17, "{:?}", p.error_message);
    create_topic(strom.addr(), "__mine", 1, &[]);
    assert_eq!(produce_ok(&mut c, "__mine", &["fine"]), 0);
}
