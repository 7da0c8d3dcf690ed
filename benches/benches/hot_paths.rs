//! Hot paths of the produce and fetch pipeline, each reported in bytes/s: batch validation,
//! segment append, index lookup, fetch reads, Produce/Fetch request and response codecs, and
//! one produce→fetch round trip through an in-process broker over loopback.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strom_benches::sample_batch;
use strom_protocol::{batch, codec::Codec};
use strom_storage::index::OffsetIndex;
use strom_storage::{DirIo, Log, LogConfig};

const BATCH_RECORDS: usize = 64;
const RECORD: usize = 1024;

fn validation(c: &mut Criterion) {
    let b = sample_batch(Codec::None, BATCH_RECORDS, RECORD).expect("batch");
    let mut g = c.benchmark_group("batch_validate");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("crc32c_header_64x1KiB", |bench| {
        bench.iter(|| batch::validate(&b).expect("valid"))
    });
    g.finish();
}

fn append_and_read(c: &mut Criterion) {
    let b = sample_batch(Codec::None, BATCH_RECORDS, RECORD).expect("batch");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(
        dir.path(),
        "bench-0".into(),
        LogConfig::default(),
        DirIo::start("bench").expect("io threads"),
        true,
    )
    .expect("log");
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(b.len() as u64));
    let b = Bytes::from(b);
    g.bench_function("append_64x1KiB", |bench| {
        bench.iter(|| log.append(b.clone(), 0).expect("append"))
    });
    let end = log.log_end_offset();
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("read_1MiB", |bench| {
        let mut offset = 0;
        bench.iter(|| {
            let r = log.read(offset, 1 << 20, true, i64::MAX).expect("read");
            offset = (offset + 64 * 16) % end.max(1);
            r
        })
    });
    g.finish();
}

/// Offset-index lookups in a full 10 MiB index; each entry locates 4 KiB of log
/// (`index.interval.bytes`), so bytes/s here is log bytes located per second.
fn index_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut idx =
        OffsetIndex::open(&dir.path().join("0.index"), 0, 10 << 20, Some(0)).expect("index");
    let mut n = 0i64;
    while idx.append(n * 64, (n * 4096) as u32) {
        n += 1;
    }
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Bytes(4096));
    g.bench_function("lookup_in_1.3M_entries", |bench| {
        let mut x = 12345i64;
        bench.iter(|| {
            // A cheap LCG so lookups land all over the index.
            x = (x.wrapping_mul(6364136223846793005).wrapping_add(1)) & 0x7fff_ffff;
            idx.lookup(x % (n * 64))
        })
    });
    g.finish();
}

fn produce_request(batch: &[u8], partitions: i32) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(
                (0..partitions)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(Bytes::copy_from_slice(batch)))
                    })
                    .collect(),
            )])
}

/// The broker's side of the codec: decoding Produce and Fetch requests, encoding their
/// responses (the Fetch response carries 3 × 1 MiB of stored batches).
fn codecs(c: &mut Criterion) {
    let b = sample_batch(Codec::None, BATCH_RECORDS, RECORD).expect("batch");
    let req = produce_request(&b, 3);
    let mut buf = BytesMut::new();
    req.encode(&mut buf, 9).expect("encode");
    let encoded = buf.freeze();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function("produce_request_decode_v9_3x64KiB", |bench| {
        bench.iter(|| ProduceRequest::decode(&mut encoded.clone(), 9).expect("decode"))
    });
    let resp = ProduceResponse::default();
    g.bench_function("produce_response_encode_v9", |bench| {
        bench.iter(|| {
            let mut out = BytesMut::with_capacity(64);
            resp.encode(&mut out, 9).expect("encode");
            out
        })
    });
    let fetch = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("bench")))
            .with_partitions(
                (0..3)
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(1000)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]);
    let mut fbuf = BytesMut::new();
    fetch.encode(&mut fbuf, 12).expect("encode");
    let fenc = fbuf.freeze();
    g.throughput(Throughput::Bytes(fenc.len() as u64));
    g.bench_function("fetch_request_decode_v12", |bench| {
        bench.iter(|| FetchRequest::decode(&mut fenc.clone(), 12).expect("decode"))
    });
    let mut stored = Vec::new();
    while stored.len() < (1 << 20) {
        stored.extend_from_slice(&b);
    }
    let stored = Bytes::from(stored);
    let fresp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("bench")))
        .with_partitions(
            (0..3)
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p)
                        .with_high_watermark(1 << 20)
                        .with_records(Some(stored.clone()))
                })
                .collect(),
        )]);
    g.throughput(Throughput::Bytes(3 * stored.len() as u64));
    g.bench_function("fetch_response_encode_v12_3x1MiB", |bench| {
        bench.iter(|| {
            let mut out = BytesMut::with_capacity(4 << 20);
            fresp.encode(&mut out, 12).expect("encode");
            out
        })
    });
    g.finish();
}

fn frame<R: Encodable>(api: ApiKey, version: i16, correlation: i32, req: &R) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    req.encode(&mut buf, version).expect("body");
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("length");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("body");
    body
}

/// Produce (acks=1) a 64 KiB batch and fetch it back, through a real broker (in this
/// process, single-node defaults) over a loopback TCP connection.
fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut layer = BTreeMap::new();
    layer.insert("log.dirs".to_owned(), dir.path().display().to_string());
    layer.insert("listeners".to_owned(), "PLAINTEXT://127.0.0.1:0".to_owned());
    layer.insert("log.flush.acks.all".to_owned(), "false".to_owned());
    let config = strom_broker::BrokerConfig::from_layers(&[layer]).expect("config");
    let addr = rt.block_on(async {
        let broker = strom_broker::Broker::start(config).await.expect("broker");
        broker.wait_ready().await;
        tokio::spawn(broker.clone().run_background());
        let server = strom_broker::server::Server::bind(broker)
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(server.run(std::future::pending()));
        addr
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let b = sample_batch(Codec::None, BATCH_RECORDS, RECORD).expect("batch");
    // Create the topic through auto-creation with the first produce's metadata lookup.
    let md = kafka_protocol::messages::MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("bench")))),
        ]))
        .with_allow_auto_topic_creation(true);
    s.write_all(&frame(ApiKey::Metadata, 12, 0, &md))
        .expect("send");
    read_frame(&mut s);
    let produce = frame(ApiKey::Produce, 9, 1, &produce_request(&b, 1));
    let mut g = c.benchmark_group("broker");
    g.throughput(Throughput::Bytes(2 * b.len() as u64));
    let mut offset = 0i64;
    g.bench_function("produce_then_fetch_64KiB_loopback", |bench| {
        bench.iter(|| {
            s.write_all(&produce).expect("produce");
            read_frame(&mut s);
            let fetch = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_min_bytes(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("bench")))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)])]);
            s.write_all(&frame(ApiKey::Fetch, 12, 2, &fetch))
                .expect("fetch");
            let got = read_frame(&mut s);
            assert!(got.len() >= b.len(), "fetch returned {} bytes", got.len());
            offset += BATCH_RECORDS as i64;
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    validation,
    append_and_read,
    index_lookup,
    codecs,
    round_trip
);
criterion_main!(benches);
