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
    incremental_alter_configs_request, list_offsets_request, metadata_request, produce_request,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest,
    FetchResponse, IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
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
    (ApiKey::OffsetCommit, 2, 9),
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
    let strom = Strom::start();
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
