//! `strom-load`: a load generator for Kafka-compatible brokers, built on librdkafka (like
//! `kafka-producer-perf-test` or librdkafka's `rdkafka_performance`).
//!
//! * `produce` — N producer instances send fixed-size records as fast as possible (or at a
//!   capped rate) for a duration or a count; latency is send → delivery report.
//! * `consume` — reads every partition from the beginning (assign mode, no group) up to the end
//!   offsets captured at start, or a count.
//! * `e2e` — produces at a fixed rate while a consumer reads from the end offsets; latency is
//!   consume time minus the send time embedded in the first 8 bytes of each payload.
//!
//! Prints a line per second, a human-readable summary, then one final JSON line.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use serde_json::{json, Value};

const MIB: f64 = 1024.0 * 1024.0;
const MB: f64 = 1_000_000.0;
const META_TIMEOUT: Duration = Duration::from_secs(10);
/// Highest latency the histograms track (one hour, in microseconds).
const MAX_LATENCY_US: u64 = 3_600_000_000;

type Res<T> = Result<T, String>;

#[derive(Parser)]
#[command(
    name = "strom-load",
    version,
    about = "Load generator for Kafka-compatible brokers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce records as fast as possible (or at --rate) and measure throughput and ack latency.
    Produce(ProduceArgs),
    /// Read a topic from the beginning and measure throughput.
    Consume(ConsumeArgs),
    /// Produce at a fixed rate while consuming; measure end-to-end latency.
    E2e(E2eArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// bootstrap.servers
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Topic to use.
    #[arg(long)]
    topic: String,
    /// Extra librdkafka property for every client, KEY=VALUE (repeatable).
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE", value_parser = parse_kv)]
    properties: Vec<(String, String)>,
    /// Exit 0 even if records failed (delivery errors, missing records).
    #[arg(long)]
    allow_errors: bool,
    /// No per-second progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Acks {
    #[value(name = "0")]
    Zero,
    #[value(name = "1")]
    One,
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    fn as_str(self) -> &'static str {
        match self {
            Acks::Zero => "0",
            Acks::One => "1",
            Acks::All => "all",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PayloadKind {
    /// Random uppercase letters A-Z (as kafka-producer-perf-test): ~4.7 bits of entropy a byte.
    Letters,
    /// Uniformly random bytes: incompressible.
    Random,
}

impl PayloadKind {
    fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Letters => "letters",
            PayloadKind::Random => "random",
        }
    }
}

#[derive(Args, Clone)]
struct ProducerOpts {
    /// Bytes per record value (no key).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// acks (librdkafka's default is all).
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// compression.codec
    #[arg(long, value_enum, default_value = "none")]
    compression: Compression,
    /// linger.ms (librdkafka default if unset).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// batch.size in bytes (librdkafka default if unset).
    #[arg(long)]
    batch_size: Option<u64>,
    /// enable.idempotence=true (needs --acks all).
    #[arg(long)]
    idempotence: bool,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long)]
    partitions: Option<i32>,
    /// Replication factor for a topic created with --partitions.
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// min.insync.replicas for a topic created with --partitions.
    #[arg(long)]
    min_insync: Option<u32>,
    /// Number of producer instances, each in its own thread.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Payload content (generated once by a deterministic PRNG).
    #[arg(long, value_enum, default_value = "letters")]
    payload: PayloadKind,
}

#[derive(Args, Clone)]
struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    producer: ProducerOpts,
    /// Records to send in total (split over the producers).
    #[arg(long, conflicts_with = "duration_secs")]
    count: Option<u64>,
    /// Send for this many seconds (default 10 when --count is not given).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Cap on records per second over all producers (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[derive(Args, Clone)]
struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Stop after this many records (default: the end offsets captured at start).
    #[arg(long)]
    count: Option<u64>,
    /// Give up when no record arrives for this long.
    #[arg(long, default_value_t = 10.0)]
    idle_timeout_secs: f64,
}

#[derive(Args, Clone)]
struct E2eArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    producer: ProducerOpts,
    /// Records per second over all producers.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Produce for this many seconds.
    #[arg(long, default_value_t = 15.0)]
    duration_secs: f64,
    /// After producing stops, wait at most this long for the consumer to catch up.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout_secs: f64,
}

fn parse_kv(s: &str) -> Res<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Produce(a) => produce(a),
        Cmd::Consume(a) => consume(a),
        Cmd::E2e(a) => e2e(a),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("strom-load: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn new_histogram() -> Res<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| format!("histogram: {e}"))
}

/// Counters shared by the workers and the per-second reporter.
#[derive(Default)]
struct Stats {
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = lock(&self.first_error);
        if first.is_none() {
            eprintln!("strom-load: first error: {msg}");
            *first = Some(msg);
        }
    }
}

/// A thread printing records/s and MiB/s every second until stopped.
struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    fn start(label: &'static str, stats: Arc<Stats>, quiet: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!quiet).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let (mut last_r, mut last_b, mut last_t) = (0u64, 0u64, start);
                let mut next = start + Duration::from_secs(1);
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    next += Duration::from_secs(1);
                    let r = stats.records.load(Ordering::Relaxed);
                    let b = stats.bytes.load(Ordering::Relaxed);
                    let dt = now.duration_since(last_t).as_secs_f64().max(1e-9);
                    println!(
                        "{:7.1}s  {label} {:>10.0} rec/s  {:>8.1} MiB/s  total {:>11} rec  errors {}",
                        now.duration_since(start).as_secs_f64(),
                        (r - last_r) as f64 / dt,
                        (b - last_b) as f64 / MIB / dt,
                        r,
                        stats.errors.load(Ordering::Relaxed),
                    );
                    (last_r, last_b, last_t) = (r, b, now);
                }
            })
        });
        Reporter { stop, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The result fields in insertion order (the final JSON line starts with "tool" and "mode").
#[derive(Default)]
struct Out(Vec<(String, Value)>);

impl Out {
    fn insert(&mut self, key: String, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    fn insert_str(&mut self, key: &str, value: Value) {
        self.insert(key.to_owned(), value);
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn to_json(&self) -> String {
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

/// Latency percentiles in milliseconds (None when nothing was recorded).
fn latency_fields(prefix: &str, h: &Histogram<u64>, out: &mut Out) {
    let ms = |us: u64| us as f64 / 1000.0;
    let v = |q: f64| {
        if h.is_empty() {
            Value::Null
        } else {
            json!(ms(h.value_at_quantile(q)))
        }
    };
    out.insert(format!("{prefix}p50_ms"), v(0.50));
    out.insert(format!("{prefix}p99_ms"), v(0.99));
    out.insert(format!("{prefix}p999_ms"), v(0.999));
    out.insert(
        format!("{prefix}max_ms"),
        if h.is_empty() {
            Value::Null
        } else {
            json!(ms(h.max()))
        },
    );
    out.insert(
        format!("{prefix}mean_ms"),
        if h.is_empty() {
            Value::Null
        } else {
            json!((h.mean() / 1000.0 * 1000.0).round() / 1000.0)
        },
    );
}

fn fmt_ms(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(x) => format!("{x:.3}"),
        None => "-".to_owned(),
    }
}

/// Prints the human-readable summary and the final JSON line.
fn finish(out: Out, latencies: &[(&str, &str)]) {
    let get = |k: &str| out.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    println!("---");
    println!(
        "summary: {} {} records, {:.1} MiB in {:.2} s",
        out.get("mode").and_then(Value::as_str).unwrap_or("?"),
        out.get("records").and_then(Value::as_u64).unwrap_or(0),
        get("bytes") / MIB,
        get("elapsed_s"),
    );
    println!(
        "  throughput: {:.0} records/s, {:.2} MiB/s ({:.2} MB/s)",
        get("records_per_s"),
        get("mib_per_s"),
        get("mb_per_s"),
    );
    for (p, label) in latencies {
        println!(
            "  {label} latency ms: p50 {}  p99 {}  p99.9 {}  max {}",
            fmt_ms(out.get(&format!("{p}p50_ms"))),
            fmt_ms(out.get(&format!("{p}p99_ms"))),
            fmt_ms(out.get(&format!("{p}p999_ms"))),
            fmt_ms(out.get(&format!("{p}max_ms"))),
        );
    }
    println!(
        "  errors: {}{}",
        out.get("errors").and_then(Value::as_u64).unwrap_or(0),
        match out.get("first_error").and_then(Value::as_str) {
            Some(e) => format!(" (first: {e})"),
            None => String::new(),
        }
    );
    println!("{}", out.to_json());
}

fn base_config(common: &Common) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &common.bootstrap);
    c
}

fn apply_properties(c: &mut ClientConfig, common: &Common) {
    for (k, v) in &common.properties {
        c.set(k, v);
    }
}

fn metadata_client(common: &Common) -> Res<BaseConsumer> {
    let mut c = base_config(common);
    apply_properties(&mut c, common);
    c.create().map_err(|e| format!("metadata client: {e}"))
}

/// The topic's partitions with their leaders, or None if it does not exist (yet).
fn topic_partitions(client: &BaseConsumer, topic: &str) -> Res<Option<Vec<(i32, i32)>>> {
    let md = client
        .fetch_metadata(Some(topic), META_TIMEOUT)
        .map_err(|e| format!("metadata for {topic}: {e}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    Ok(Some(
        t.partitions()
            .iter()
            .map(|p| (p.id(), p.leader()))
            .collect(),
    ))
}

/// Creates the topic if it is missing, then waits until every partition has a leader.
fn ensure_topic(common: &Common, opts: &ProducerOpts, partitions: i32) -> Res<Vec<i32>> {
    let client = metadata_client(common)?;
    let existing = topic_partitions(&client, &common.topic)?;
    if existing.is_none() {
        let mut cfg = base_config(common);
        apply_properties(&mut cfg, common);
        let admin: AdminClient<DefaultClientContext> =
            cfg.create().map_err(|e| format!("admin client: {e}"))?;
        let min_isr = opts.min_insync.map(|m| m.to_string());
        let mut new = NewTopic::new(
            &common.topic,
            partitions,
            TopicReplication::Fixed(opts.replication_factor),
        );
        if let Some(m) = &min_isr {
            new = new.set("min.insync.replicas", m);
        }
        let res = futures::executor::block_on(admin.create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .map_err(|e| format!("CreateTopics: {e}"))?;
        for r in res {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(format!("CreateTopics {t}: {code}")),
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(ps) = topic_partitions(&client, &common.topic)? {
            if ps.iter().all(|&(_, leader)| leader >= 0) {
                if existing.is_some() && ps.len() != partitions as usize {
                    eprintln!(
                        "strom-load: topic {} already exists with {} partitions",
                        common.topic,
                        ps.len()
                    );
                }
                return Ok(ps.iter().map(|&(p, _)| p).collect());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "topic {} has no leader for every partition after 30 s",
                common.topic
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deterministic PRNG (splitmix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A pool of payload bytes; record `i` is a window of it at a pseudo-random offset, so
/// consecutive records differ.
struct Payloads {
    pool: Vec<u8>,
    size: usize,
}

impl Payloads {
    fn new(kind: PayloadKind, size: usize) -> Self {
        let len = (4 << 20).max(size * 8) + size;
        let mut rng = SplitMix(0x5354_524F_4D21);
        let pool = (0..len)
            .map(|_| {
                let r = rng.next();
                match kind {
                    PayloadKind::Letters => b'A' + (r % 26) as u8,
                    PayloadKind::Random => r as u8,
                }
            })
            .collect();
        Payloads { pool, size }
    }

    fn get(&self, i: u64) -> &[u8] {
        let span = (self.pool.len() - self.size + 1) as u64;
        let off = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) % span;
        let off = off as usize;
        &self.pool[off..off + self.size]
    }
}

// ---------------------------------------------------------------------------------------------
// Producing
// ---------------------------------------------------------------------------------------------

/// Delivery reports of one producer instance: counts and send → ack latency.
struct DeliveryCtx {
    t0: Instant,
    stats: Arc<Stats>,
    hist: Mutex<Histogram<u64>>,
    /// Nanoseconds since `t0` of the latest delivery report.
    last_ack_ns: AtomicU64,
    client_errors: AtomicU64,
}

impl ClientContext for DeliveryCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        // Transport errors are retried by librdkafka; show only the first few.
        if self.client_errors.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("strom-load: librdkafka: {error}: {reason}");
        }
    }
}

impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.t0.elapsed().as_nanos() as u64;
        self.last_ack_ns.fetch_max(now, Ordering::Relaxed);
        match result {
            Ok(m) => {
                self.stats.records.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes
                    .fetch_add(m.payload_len() as u64, Ordering::Relaxed);
                let us = now.saturating_sub(sent_ns as u64) / 1000;
                let _ = lock(&self.hist).record(us.clamp(1, MAX_LATENCY_US));
            }
            Err((e, _)) => self.stats.error(format!("delivery: {e}")),
        }
    }
}

struct ProduceRun {
    records: u64,
    bytes: u64,
    /// First send to last delivery report.
    elapsed: Duration,
    hist: Histogram<u64>,
    sent: u64,
}

/// Options of one produce run.
struct ProducePlan<'a> {
    common: &'a Common,
    opts: &'a ProducerOpts,
    count: Option<u64>,
    duration: Option<Duration>,
    rate: u64,
    /// Embed the send time (ns since `t0`, little-endian u64) in the first 8 bytes.
    stamp: bool,
}

fn producer_config(common: &Common, opts: &ProducerOpts) -> ClientConfig {
    let mut c = base_config(common);
    c.set("acks", opts.acks.as_str())
        .set("compression.codec", opts.compression.as_str());
    if let Some(l) = opts.linger_ms {
        c.set("linger.ms", l.to_string());
    }
    if let Some(b) = opts.batch_size {
        c.set("batch.size", b.to_string());
    }
    if opts.idempotence {
        c.set("enable.idempotence", "true");
    }
    apply_properties(&mut c, common);
    c
}

fn run_producers(plan: &ProducePlan<'_>, t0: Instant, stats: &Arc<Stats>) -> Res<ProduceRun> {
    let n = plan.opts.producers.max(1);
    let payloads = Arc::new(Payloads::new(plan.opts.payload, plan.opts.record_size));
    let mut producers = Vec::with_capacity(n);
    for _ in 0..n {
        let ctx = DeliveryCtx {
            t0,
            stats: stats.clone(),
            hist: Mutex::new(new_histogram()?),
            last_ack_ns: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
        };
        let p: ThreadedProducer<DeliveryCtx> = producer_config(plan.common, plan.opts)
            .create_with_context(ctx)
            .map_err(|e| format!("producer: {e}"))?;
        producers.push(Arc::new(p));
    }
    let start = Instant::now();
    let start_ns = start.duration_since(t0).as_nanos() as u64;
    let deadline = plan.duration.map(|d| start + d);
    let sent = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::with_capacity(n);
    for (i, producer) in producers.iter().enumerate() {
        let producer = producer.clone();
        let payloads = payloads.clone();
        let stats = stats.clone();
        let sent = sent.clone();
        let topic = plan.common.topic.clone();
        let stamp = plan.stamp;
        let quota = plan
            .count
            .map(|c| c / n as u64 + u64::from((i as u64) < c % n as u64));
        let rate = plan.rate as f64 / n as f64;
        threads.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut k: u64 = 0;
            let seed = (i as u64) << 40;
            while quota.is_none_or(|q| k < q) {
                let mut now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    break;
                }
                if rate > 0.0 {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    if due > now {
                        std::thread::sleep(due - now);
                        now = Instant::now();
                    }
                }
                let sent_ns = now.duration_since(t0).as_nanos() as u64;
                let body = payloads.get(seed + k);
                let payload: &[u8] = if stamp && body.len() >= 8 {
                    buf.clear();
                    buf.extend_from_slice(&sent_ns.to_le_bytes());
                    buf.extend_from_slice(&body[8..]);
                    &buf
                } else {
                    body
                };
                let mut record =
                    BaseRecord::<(), [u8], usize>::with_opaque_to(&topic, sent_ns as usize)
                        .payload(payload);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Err((e, _)) => {
                            stats.error(format!("enqueue: {e}"));
                            break;
                        }
                    }
                }
                k += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| "a producer thread panicked".to_owned())?;
    }
    let mut hist = new_histogram()?;
    let mut last_ack_ns = start_ns;
    for p in &producers {
        if let Err(e) = p.flush(Duration::from_secs(120)) {
            let left = p.in_flight_count().max(0) as u64;
            for _ in 0..left {
                stats.error(format!("not delivered after 120 s flush: {e}"));
            }
        }
        let ctx = p.context();
        last_ack_ns = last_ack_ns.max(ctx.last_ack_ns.load(Ordering::Relaxed));
        hist.add(&*lock(&ctx.hist))
            .map_err(|e| format!("histogram: {e}"))?;
    }
    Ok(ProduceRun {
        records: stats.records.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        elapsed: Duration::from_nanos(last_ack_ns.saturating_sub(start_ns)),
        hist,
        sent: sent.load(Ordering::Relaxed),
    })
}

fn producer_params(out: &mut Out, common: &Common, o: &ProducerOpts) {
    out.insert_str("bootstrap", json!(common.bootstrap));
    out.insert_str("topic", json!(common.topic));
    out.insert_str("record_size", json!(o.record_size));
    out.insert_str("acks", json!(o.acks.as_str()));
    out.insert_str("compression", json!(o.compression.as_str()));
    out.insert_str("linger_ms", json!(o.linger_ms));
    out.insert_str("batch_size", json!(o.batch_size));
    out.insert_str("idempotence", json!(o.idempotence));
    out.insert_str("partitions", json!(o.partitions));
    out.insert_str("replication_factor", json!(o.replication_factor));
    out.insert_str("min_insync", json!(o.min_insync));
    out.insert_str("producers", json!(o.producers));
    out.insert_str("payload", json!(o.payload.as_str()));
    let props: HashMap<&str, &str> = common
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    out.insert_str("properties", json!(props));
}

fn throughput_fields(out: &mut Out, records: u64, bytes: u64, elapsed: Duration) {
    let s = elapsed.as_secs_f64().max(1e-9);
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    out.insert_str("records", json!(records));
    out.insert_str("bytes", json!(bytes));
    out.insert_str("elapsed_s", json!((s * 1000.0).round() / 1000.0));
    out.insert_str("records_per_s", json!(r2(records as f64 / s)));
    out.insert_str("mib_per_s", json!(r2(bytes as f64 / MIB / s)));
    out.insert_str("mb_per_s", json!(r2(bytes as f64 / MB / s)));
}

fn error_fields(out: &mut Out, stats: &Stats) -> u64 {
    let errors = stats.errors.load(Ordering::Relaxed);
    out.insert_str("errors", json!(errors));
    out.insert_str("first_error", json!(*lock(&stats.first_error)));
    errors
}

fn produce(a: ProduceArgs) -> Res<bool> {
    if let Some(p) = a.producer.partitions {
        ensure_topic(&a.common, &a.producer, p)?;
    }
    let duration = match (a.count, a.duration_secs) {
        (Some(_), _) => None,
        (None, d) => Some(Duration::from_secs_f64(d.unwrap_or(10.0))),
    };
    let plan = ProducePlan {
        common: &a.common,
        opts: &a.producer,
        count: a.count,
        duration,
        rate: a.rate,
        stamp: false,
    };
    let stats = Arc::new(Stats::default());
    let reporter = Reporter::start("produced", stats.clone(), a.common.quiet);
    let run = run_producers(&plan, Instant::now(), &stats);
    reporter.stop();
    let run = run?;

    let mut out = Out::default();
    out.insert_str("tool", json!("strom-load"));
    out.insert_str("mode", json!("produce"));
    producer_params(&mut out, &a.common, &a.producer);
    out.insert_str("count", json!(a.count));
    out.insert_str("duration_secs", json!(duration.map(|d| d.as_secs_f64())));
    out.insert_str("rate", json!(a.rate));
    throughput_fields(&mut out, run.records, run.bytes, run.elapsed);
    out.insert_str("sent", json!(run.sent));
    latency_fields("latency_", &run.hist, &mut out);
    let errors = error_fields(&mut out, &stats);
    finish(out, &[("latency_", "send→ack")]);
    Ok(errors == 0 || a.common.allow_errors)
}

// ---------------------------------------------------------------------------------------------
// Consuming
// ---------------------------------------------------------------------------------------------

fn consumer_config(common: &Common) -> ClientConfig {
    let mut c = base_config(common);
    // assign() never joins the group; the id only satisfies librdkafka.
    c.set("group.id", format!("strom-load-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    apply_properties(&mut c, common);
    c
}

fn existing_partitions(common: &Common, client: &BaseConsumer) -> Res<Vec<i32>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(ps) = topic_partitions(client, &common.topic)? {
            return Ok(ps.iter().map(|&(p, _)| p).collect());
        }
        if Instant::now() > deadline {
            return Err(format!("topic {} not found", common.topic));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn consume(a: ConsumeArgs) -> Res<bool> {
    let consumer: BaseConsumer = consumer_config(&a.common)
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let topic = a.common.topic.clone();
    let partitions = existing_partitions(&a.common, &consumer)?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut available: u64 = 0;
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p, META_TIMEOUT)
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        available += (high - low).max(0) as u64;
        if high > low {
            ends.insert(p, high);
        }
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .map_err(|e| format!("assign: {e}"))?;
    }
    let target = a.count.unwrap_or(available);
    println!(
        "consuming {target} records from {} partitions of {topic} ({available} available)",
        partitions.len()
    );
    let stats = Arc::new(Stats::default());
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    let reporter = Reporter::start("consumed", stats.clone(), a.common.quiet);
    let start = Instant::now();
    let idle = Duration::from_secs_f64(a.idle_timeout_secs);
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut last = start;
    let mut first_ms = None;
    let mut done_partitions = 0usize;
    let wanted_partitions = ends.len();
    let mut timed_out = false;
    loop {
        if records >= target || (a.count.is_none() && done_partitions >= wanted_partitions) {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let now = Instant::now();
                first_ms.get_or_insert_with(|| now.duration_since(start).as_secs_f64() * 1000.0);
                last = now;
                records += 1;
                let n = (m.payload_len() + m.key_len()) as u64;
                bytes += n;
                stats.records.store(records, Ordering::Relaxed);
                stats.bytes.store(bytes, Ordering::Relaxed);
                if let Some(&end) = ends.get(&m.partition()) {
                    if m.offset() + 1 == end {
                        done_partitions += 1;
                    }
                }
            }
            Some(Err(e)) => stats.error(format!("consume: {e}")),
            None => {
                if last.elapsed() > idle {
                    timed_out = true;
                    break;
                }
            }
        }
    }
    reporter.stop();
    if timed_out && records < target {
        stats.error(format!(
            "no record for {:.0} s; got {records} of {target}",
            idle.as_secs_f64()
        ));
    }
    let mut out = Out::default();
    out.insert_str("tool", json!("strom-load"));
    out.insert_str("mode", json!("consume"));
    out.insert_str("bootstrap", json!(a.common.bootstrap));
    out.insert_str("topic", json!(topic));
    out.insert_str("partitions", json!(partitions.len()));
    out.insert_str("count", json!(a.count));
    out.insert_str("available", json!(available));
    throughput_fields(&mut out, records, bytes, last.duration_since(start));
    out.insert(
        "first_record_ms".into(),
        json!(first_ms.map(|x| (x * 1000.0).round() / 1000.0)),
    );
    latency_fields("latency_", &new_histogram()?, &mut out);
    let errors = error_fields(&mut out, &stats);
    finish(out, &[]);
    Ok(errors == 0 || a.common.allow_errors)
}

// ---------------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------------

fn e2e(a: E2eArgs) -> Res<bool> {
    if a.producer.record_size < 8 {
        return Err("e2e needs --record-size of at least 8 (the embedded timestamp)".into());
    }
    let partitions = ensure_topic(&a.common, &a.producer, a.producer.partitions.unwrap_or(1))?;
    let topic = a.common.topic.clone();
    let consumer: BaseConsumer = consumer_config(&a.common)
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(&topic, p, META_TIMEOUT)
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        tpl.add_partition_offset(&topic, p, Offset::Offset(high))
            .map_err(|e| format!("assign: {e}"))?;
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    // Let the consumer connect and start fetching before the clock starts.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
            return Err(format!("topic {topic} received records from someone else"));
        }
    }

    let t0 = Instant::now();
    let produced = Arc::new(Stats::default());
    let producing_done = Arc::new(AtomicBool::new(false));
    let delivered_total = Arc::new(AtomicU64::new(u64::MAX));
    let consumed = Arc::new(Stats::default());
    let consumer_thread = {
        let consumed = consumed.clone();
        let producing_done = producing_done.clone();
        let delivered_total = delivered_total.clone();
        let drain = Duration::from_secs_f64(a.drain_timeout_secs);
        std::thread::spawn(move || -> Res<(Histogram<u64>, Option<Instant>)> {
            let mut hist = new_histogram()?;
            let mut records = 0u64;
            let mut bytes = 0u64;
            let mut drain_start: Option<Instant> = None;
            let mut last = None;
            loop {
                if producing_done.load(Ordering::Acquire) {
                    let total = delivered_total.load(Ordering::Acquire);
                    if records >= total {
                        break;
                    }
                    let since = *drain_start.get_or_insert_with(Instant::now);
                    if since.elapsed() > drain {
                        consumed.error(format!(
                            "consumer got {records} of {total} delivered records within {:.0} s",
                            drain.as_secs_f64()
                        ));
                        break;
                    }
                }
                match consumer.poll(Duration::from_millis(20)) {
                    Some(Ok(m)) => {
                        let now_ns = t0.elapsed().as_nanos() as u64;
                        let Some(p) = m.payload() else {
                            consumed.error("record without a value".into());
                            continue;
                        };
                        let Some(stamp) = p.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok())
                        else {
                            consumed.error("value shorter than 8 bytes".into());
                            continue;
                        };
                        let sent_ns = u64::from_le_bytes(stamp);
                        let us = now_ns.saturating_sub(sent_ns) / 1000;
                        let _ = hist.record(us.clamp(1, MAX_LATENCY_US));
                        records += 1;
                        bytes += p.len() as u64;
                        consumed.records.store(records, Ordering::Relaxed);
                        consumed.bytes.store(bytes, Ordering::Relaxed);
                        last = Some(Instant::now());
                    }
                    Some(Err(e)) => consumed.error(format!("consume: {e}")),
                    None => {}
                }
            }
            Ok((hist, last))
        })
    };

    let plan = ProducePlan {
        common: &a.common,
        opts: &a.producer,
        count: None,
        duration: Some(Duration::from_secs_f64(a.duration_secs)),
        rate: a.rate,
        stamp: true,
    };
    let reporter = Reporter::start("consumed", consumed.clone(), a.common.quiet);
    let run = run_producers(&plan, t0, &produced);
    let delivered = run.as_ref().map(|r| r.records).unwrap_or(0);
    delivered_total.store(delivered, Ordering::Release);
    producing_done.store(true, Ordering::Release);
    let joined = consumer_thread.join();
    reporter.stop();
    let run = run?;
    let (e2e_hist, _last) = joined.map_err(|_| "the consumer thread panicked".to_owned())??;

    let mut out = Out::default();
    out.insert_str("tool", json!("strom-load"));
    out.insert_str("mode", json!("e2e"));
    producer_params(&mut out, &a.common, &a.producer);
    out.insert_str("partitions", json!(partitions.len()));
    out.insert_str("rate", json!(a.rate));
    out.insert_str("duration_secs", json!(a.duration_secs));
    let records = consumed.records.load(Ordering::Relaxed);
    let bytes = consumed.bytes.load(Ordering::Relaxed);
    throughput_fields(&mut out, records, bytes, run.elapsed);
    out.insert_str("sent", json!(run.sent));
    out.insert_str("delivered", json!(run.records));
    latency_fields("latency_", &e2e_hist, &mut out);
    latency_fields("ack_latency_", &run.hist, &mut out);
    let errors = produced.errors.load(Ordering::Relaxed) + consumed.errors.load(Ordering::Relaxed);
    let first_error = lock(&produced.first_error)
        .clone()
        .or_else(|| lock(&consumed.first_error).clone());
    out.insert_str("errors", json!(errors));
    out.insert_str("first_error", json!(first_error));
    finish(
        out,
        &[("latency_", "end-to-end"), ("ack_latency_", "send→ack")],
    );
    Ok(errors == 0 || a.common.allow_errors)
}
