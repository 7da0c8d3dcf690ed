//! Hot paths of the produce and fetch pipeline, each reported in bytes/s.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strom_benches::sample_batch;
use strom_protocol::{batch, codec::Codec};
use strom_storage::{Flusher, Log, LogConfig};

fn validation(c: &mut Criterion) {
    let b = sample_batch(Codec::None, 64, 1024).expect("batch");
    let mut g = c.benchmark_group("batch_validate");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("crc32c_header_64x1KiB", |bench| {
        bench.iter(|| batch::validate(&b).expect("valid"))
    });
    g.finish();
}

fn append_and_read(c: &mut Criterion) {
    let b = sample_batch(Codec::None, 64, 1024).expect("batch");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(
        dir.path(),
        "bench-0".into(),
        LogConfig::default(),
        Flusher::new(),
        true,
    )
    .expect("log");
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("append_64x1KiB", |bench| {
        bench.iter(|| log.append(BytesMut::from(&b[..]), 0).expect("append"))
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

criterion_group!(benches, validation, append_and_read);
criterion_main!(benches);
