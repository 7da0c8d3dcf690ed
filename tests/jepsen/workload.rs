//! The workload: stock librdkafka clients (through the `rdkafka` crate, uncompressed) in the
//! root namespace, each on its own thread, recording everything they do and see.
//!
//! - producers `idem` (acks=all, idempotent), `all` (acks=all, one request in flight) and
//!   `one` (acks=1): values `<producer>-<n>`, key = value, partitions round robin, one `Send`
//!   event per delivery report (and `Unknown` for whatever is still outstanding at the end);
//! - `assign()` readers over every partition from the beginning (`Seek`, then `Poll`s);
//! - a consumer group (`subscribe()`, manual synchronous commits after each poll) whose members
//!   record `Assignment`, `Position`, `Poll` and `Commit` events with their member id and
//!   generation, as librdkafka itself knows them;
//! - a sampler recording each partition's watermarks every 500 ms.
//!
//! Client errors are expected while faults are active: they are noted (rate-limited `Info`
//! events) and the clients carry on.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use strom_verify::history::{Event, Mode, Read, ReaderKind, SendOutcome};

use crate::recorder::Recorder;

/// How long librdkafka may try to deliver a record before reporting it failed: the Java
/// client's default `delivery.timeout.ms`, longer than any fault window plus recovery. A
/// shorter one makes librdkafka's idempotent producer time out in-flight records during a
/// crash-all, bump its epoch and re-send records that were written under the old one
/// (librdkafka#4953): duplicates made by the client, which this suite is not about.
const MESSAGE_TIMEOUT_MS: u64 = 120_000;
/// Records one poll event may carry.
const MAX_BATCH: usize = 500;

/// What the workload runs against and how hard.
#[derive(Debug, Clone)]
pub struct Config {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    /// Records per second per producer.
    pub rate: u64,
    pub group: String,
    pub group_members: usize,
    pub readers: usize,
}

/// Locks a mutex, ignoring poisoning (a panicked holder left plain data behind).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// At most one `Info` per interval from one client, with the number of errors in between.
struct ErrorNotes {
    rec: Recorder,
    who: String,
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorNotes {
    fn new(rec: &Recorder, who: &str) -> Self {
        ErrorNotes {
            rec: rec.clone(),
            who: who.to_owned(),
            last: None,
            suppressed: 0,
        }
    }

    fn note(&mut self, what: &str) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            self.suppressed += 1;
            return;
        }
        let more = match std::mem::take(&mut self.suppressed) {
            0 => String::new(),
            n => format!(" (and {n} more errors since the last note)"),
        };
        self.rec.info(format!("{}: {what}{more}", self.who));
        self.last = Some(Instant::now());
    }
}

// ---------------------------------------------------------------------------------------------
// Producers

/// A send handed to librdkafka and not yet reported.
struct Pending {
    value: String,
    partition: i32,
    invoked_ms: u64,
}

type PendingMap = Arc<Mutex<HashMap<usize, Pending>>>;

struct ProducerCtx {
    rec: Recorder,
    name: String,
    mode: Mode,
    topic: String,
    /// Sends without a report, by sequence number. A report for a number no longer here (the
    /// run already recorded it as `Unknown`) is ignored.
    pending: PendingMap,
    acked: Arc<AtomicU64>,
}

/// librdkafka's idempotence debug facilities worth a line in the history: why the producer
/// drained and bumped its epoch, and how it judged the broker's sequence errors. A duplicate
/// written under two producer epochs is explained (or not) by these.
const EOS_FACILITIES: [&str; 9] = [
    "DRAIN",
    "UNKPID",
    "ERRSEQ",
    "ERRPID",
    "DUPSEQ",
    "FATAL",
    "IMPLICITACK",
    "RESETSEQ",
    "NEWPID",
];

impl ClientContext for ProducerCtx {
    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        if EOS_FACILITIES.contains(&fac) {
            self.rec.info(format!(
                "producer {}: librdkafka {fac}: {message}",
                self.name
            ));
        }
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, n: usize) {
        let Some(p) = lock(&self.pending).remove(&n) else {
            return;
        };
        let (outcome, offset, error) = match result {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                // An idempotent producer acknowledges a timed-out request's records implicitly
                // once a later sequence is acknowledged (librdkafka's IMPLICITACK): written,
                // but at an offset it never learnt (-1001).
                let offset = Some(m.offset()).filter(|&o| o >= 0);
                (SendOutcome::Ok, offset, None)
            }
            Err((e, _)) => (SendOutcome::Fail, None, Some(e.to_string())),
        };
        self.rec.emit(Event::Send {
            invoked_ms: p.invoked_ms,
            t_ms: self.rec.ms(),
            producer: self.name.clone(),
            mode: self.mode,
            topic: self.topic.clone(),
            partition: p.partition,
            value: p.value,
            outcome,
            offset,
            error,
        });
    }
}

/// One producer: its name (the prefix of its values), its contract and the librdkafka
/// settings that give it that contract.
struct ProducerSpec {
    name: &'static str,
    mode: Mode,
    settings: &'static [(&'static str, &'static str)],
}

const PRODUCERS: [ProducerSpec; 3] = [
    ProducerSpec {
        name: "idem",
        mode: Mode::IdempotentAll,
        settings: &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("debug", "eos"),
        ],
    },
    ProducerSpec {
        name: "all",
        mode: Mode::All,
        settings: &[
            ("acks", "all"),
            ("enable.idempotence", "false"),
            ("max.in.flight.requests.per.connection", "1"),
        ],
    },
    ProducerSpec {
        name: "one",
        mode: Mode::One,
        settings: &[("acks", "1"), ("enable.idempotence", "false")],
    },
];

fn run_producer(
    cfg: Arc<Config>,
    rec: Recorder,
    spec: &'static ProducerSpec,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) {
    let (name, mode) = (spec.name, spec.mode);
    let pending: PendingMap = Arc::default();
    let mut notes = ErrorNotes::new(&rec, &format!("producer {name}"));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &cfg.bootstrap)
        .set("client.id", format!("jepsen-{name}"))
        .set("compression.type", "none")
        .set("linger.ms", "5")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("request.timeout.ms", "5000")
        .set("socket.timeout.ms", "10000")
        .set("retry.backoff.ms", "100")
        .set("retry.backoff.max.ms", "1000");
    for (k, v) in spec.settings {
        config.set(*k, *v);
    }
    let ctx = ProducerCtx {
        rec: rec.clone(),
        name: name.to_owned(),
        mode,
        topic: cfg.topic.clone(),
        pending: pending.clone(),
        acked,
    };
    // The idempotence facilities (`debug=eos`) log at debug level.
    config.set_log_level(RDKafkaLogLevel::Debug);
    let producer: ThreadedProducer<ProducerCtx> = match config.create_with_context(ctx) {
        Ok(p) => p,
        Err(e) => {
            rec.info(format!("producer {name}: cannot create the client: {e}"));
            return;
        }
    };
    let start = Instant::now();
    let mut n: usize = 0;
    while !stop.load(Ordering::Relaxed) {
        let partition = (n % cfg.partitions.max(1) as usize) as i32;
        let value = format!("{name}-{n}");
        lock(&pending).insert(
            n,
            Pending {
                value: value.clone(),
                partition,
                invoked_ms: rec.ms(),
            },
        );
        let mut record = BaseRecord::with_opaque_to(&cfg.topic, n)
            .partition(partition)
            .key(&value)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    if stop.load(Ordering::Relaxed) {
                        // Never handed over: not a send at all.
                        lock(&pending).remove(&n);
                        break;
                    }
                    record = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    if let Some(p) = lock(&pending).remove(&n) {
                        rec.emit(Event::Send {
                            invoked_ms: p.invoked_ms,
                            t_ms: rec.ms(),
                            producer: name.to_owned(),
                            mode,
                            topic: cfg.topic.clone(),
                            partition,
                            value: p.value,
                            outcome: SendOutcome::Fail,
                            offset: None,
                            error: Some(format!("enqueue: {e}")),
                        });
                    }
                    notes.note(&format!("enqueue failed: {e}"));
                    break;
                }
            }
        }
        n += 1;
        let due = start + Duration::from_micros(n as u64 * 1_000_000 / cfg.rate.max(1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Outcomes resolve within the message timeout; give them a little longer.
    let _ = producer.flush(Duration::from_millis(MESSAGE_TIMEOUT_MS + 5_000));
    let left: Vec<Pending> = {
        let mut p = lock(&pending);
        let mut v: Vec<(usize, Pending)> = p.drain().collect();
        v.sort_by_key(|(n, _)| *n);
        v.into_iter().map(|(_, p)| p).collect()
    };
    let t_ms = rec.ms();
    if !left.is_empty() {
        rec.info(format!(
            "producer {name}: {} sends still without a delivery report after the flush are recorded as unknown",
            left.len()
        ));
    }
    for p in left {
        rec.emit(Event::Send {
            invoked_ms: p.invoked_ms,
            t_ms,
            producer: name.to_owned(),
            mode,
            topic: cfg.topic.clone(),
            partition: p.partition,
            value: p.value,
            outcome: SendOutcome::Unknown,
            offset: None,
            error: None,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Readers

fn text(b: Option<&[u8]>) -> String {
    b.map_or_else(
        || "<null>".to_owned(),
        |b| String::from_utf8_lossy(b).into_owned(),
    )
}

/// One poll call as the history sees it: the first message waits up to `wait`, then whatever
/// is already buffered (up to [`MAX_BATCH`]) joins it. Stops at the first error.
fn poll_batch<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    wait: Duration,
) -> (Vec<Read>, Option<String>) {
    let mut records = Vec::new();
    let mut timeout = wait;
    while records.len() < MAX_BATCH {
        match c.poll(timeout) {
            Some(Ok(m)) => {
                records.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    value: text(m.payload()),
                });
                timeout = Duration::ZERO;
            }
            Some(Err(e)) => return (records, Some(e.to_string())),
            None => break,
        }
    }
    (records, None)
}

fn consumer_config(cfg: &Config, client_id: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap)
        .set("client.id", client_id)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "200")
        .set("socket.timeout.ms", "10000");
    c
}

/// An `assign()` reader: next offset per partition (-1 before the first read) and a switch
/// that makes it start over with a fresh client at those offsets.
pub struct ReaderState {
    pub name: String,
    pub next: Mutex<Vec<i64>>,
    pub restart: AtomicBool,
}

fn run_reader(cfg: Arc<Config>, rec: Recorder, state: Arc<ReaderState>, stop: Arc<AtomicBool>) {
    let name = state.name.clone();
    let mut notes = ErrorNotes::new(&rec, &name);
    while !stop.load(Ordering::Relaxed) {
        let consumer: BaseConsumer =
            match consumer_config(&cfg, &name, &format!("jepsen-{name}")).create() {
                Ok(c) => c,
                Err(e) => {
                    notes.note(&format!("cannot create the client: {e}"));
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
        let next = lock(&state.next).clone();
        let mut tpl = TopicPartitionList::new();
        let mut seeks = Vec::new();
        for p in 0..cfg.partitions {
            let at = next.get(p as usize).copied().unwrap_or(-1);
            let offset = if at >= 0 {
                Offset::Offset(at)
            } else {
                Offset::Beginning
            };
            if let Err(e) = tpl.add_partition_offset(&cfg.topic, p, offset) {
                notes.note(&format!("assignment list: {e}"));
            }
            seeks.push((p, at.max(0)));
        }
        if let Err(e) = consumer.assign(&tpl) {
            notes.note(&format!("assign failed: {e}"));
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        for (partition, offset) in seeks {
            rec.emit(Event::Seek {
                t_ms: rec.ms(),
                consumer: name.clone(),
                topic: cfg.topic.clone(),
                partition,
                offset,
            });
        }
        while !stop.load(Ordering::Relaxed) {
            if state.restart.swap(false, Ordering::Relaxed) {
                rec.info(format!("{name}: starting over with a new client"));
                break;
            }
            let (records, err) = poll_batch(&consumer, Duration::from_millis(100));
            if let Some(e) = err {
                notes.note(&e);
            }
            if records.is_empty() {
                continue;
            }
            {
                let mut next = lock(&state.next);
                for r in &records {
                    if let Some(n) = next.get_mut(r.partition as usize) {
                        *n = (*n).max(r.offset + 1);
                    }
                }
            }
            rec.emit(Event::Poll {
                t_ms: rec.ms(),
                consumer: name.clone(),
                kind: ReaderKind::Assign,
                topic: cfg.topic.clone(),
                member: None,
                generation: None,
                records,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The consumer group

/// The member id and generation librdkafka's group handler holds right now (`None` outside a
/// group).
fn group_identity<C: ConsumerContext>(c: &BaseConsumer<C>) -> Option<(String, i32)> {
    let rk = c.client().native_ptr();
    // SAFETY: `rk` is the live handle of `c`, which outlives this call. The metadata object
    // is a copy librdkafka allocates for us; its member id is a NUL-terminated string owned
    // by it, copied out before the object is destroyed exactly once.
    unsafe {
        let md = rdkafka::bindings::rd_kafka_consumer_group_metadata(rk);
        if md.is_null() {
            return None;
        }
        let generation = rdkafka::bindings::rd_kafka_consumer_group_metadata_generation_id(md);
        let id = rdkafka::bindings::rd_kafka_consumer_group_metadata_member_id(md);
        let member = if id.is_null() {
            String::new()
        } else {
            CStr::from_ptr(id).to_string_lossy().into_owned()
        };
        rdkafka::bindings::rd_kafka_consumer_group_metadata_destroy(md);
        Some((member, generation))
    }
}

struct GroupCtx {
    rec: Recorder,
    name: String,
    group: String,
    topic: String,
    notes: Mutex<ErrorNotes>,
}

impl ClientContext for GroupCtx {}

impl ConsumerContext for GroupCtx {
    fn post_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.assigned(c, tpl),
            Rebalance::Revoke(tpl) => {
                let ps: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.rec
                    .info(format!("{}: partitions {ps:?} revoked", self.name));
            }
            Rebalance::Error(e) => lock(&self.notes).note(&format!("rebalance error: {e}")),
        }
    }
}

impl GroupCtx {
    /// Records the assignment, then where the member starts each partition: the group's
    /// committed offset as the coordinator reports it now (librdkafka starts from the same
    /// OffsetFetch answer), or the log start when nothing was committed.
    fn assigned(&self, c: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let Some((member, generation)) = group_identity(c) else {
            lock(&self.notes).note("assignment outside a group?");
            return;
        };
        let mut partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        partitions.sort_unstable();
        self.rec.emit(Event::Assignment {
            t_ms: self.rec.ms(),
            consumer: self.name.clone(),
            group: self.group.clone(),
            member: member.clone(),
            generation,
            topic: self.topic.clone(),
            partitions,
        });
        let committed = match c.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => {
                self.rec.info(format!(
                    "{}: generation {generation}: cannot read the committed offsets ({e}); no \
                     positions recorded",
                    self.name
                ));
                return;
            }
        };
        for e in committed.elements_for_topic(&self.topic) {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                // Nothing committed: auto.offset.reset=earliest, the log start.
                Offset::Invalid => c
                    .fetch_watermarks(&self.topic, e.partition(), Duration::from_secs(2))
                    .ok()
                    .map(|(low, _)| low),
                _ => None,
            };
            let Some(offset) = offset else {
                self.rec.info(format!(
                    "{}: generation {generation}: no start position known for partition {} ({:?})",
                    self.name,
                    e.partition(),
                    e.offset()
                ));
                continue;
            };
            self.rec.emit(Event::Position {
                t_ms: self.rec.ms(),
                consumer: self.name.clone(),
                group: self.group.clone(),
                member: member.clone(),
                generation,
                topic: self.topic.clone(),
                partition: e.partition(),
                offset,
            });
        }
    }
}

fn run_member(
    cfg: Arc<Config>,
    rec: Recorder,
    name: String,
    stop: Arc<AtomicBool>,
    committed: Arc<Mutex<BTreeMap<i32, i64>>>,
) {
    let ctx = GroupCtx {
        rec: rec.clone(),
        name: name.clone(),
        group: cfg.group.clone(),
        topic: cfg.topic.clone(),
        notes: Mutex::new(ErrorNotes::new(&rec, &name)),
    };
    let mut config = consumer_config(&cfg, &name, &cfg.group);
    config
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "60000");
    let consumer: BaseConsumer<GroupCtx> = match config.create_with_context(ctx) {
        Ok(c) => c,
        Err(e) => {
            rec.info(format!("{name}: cannot create the client: {e}"));
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&cfg.topic]) {
        rec.info(format!("{name}: subscribe failed: {e}"));
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let (records, err) = poll_batch(&consumer, Duration::from_millis(100));
        if let Some(e) = err {
            lock(&consumer.context().notes).note(&e);
        }
        if records.is_empty() {
            continue;
        }
        let (member, generation) = group_identity(&consumer).unwrap_or_default();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for r in &records {
            let n = next.entry(r.partition).or_insert(r.offset + 1);
            *n = (*n).max(r.offset + 1);
        }
        rec.emit(Event::Poll {
            t_ms: rec.ms(),
            consumer: name.clone(),
            kind: ReaderKind::Group,
            topic: cfg.topic.clone(),
            member: Some(member),
            generation: Some(generation),
            records,
        });
        commit(&consumer, &cfg, &rec, &name, next, &committed);
    }
    consumer.unsubscribe();
}

/// Commits `next` (partition -> next offset to read) synchronously and records the outcome.
fn commit(
    consumer: &BaseConsumer<GroupCtx>,
    cfg: &Config,
    rec: &Recorder,
    name: &str,
    next: BTreeMap<i32, i64>,
    committed: &Mutex<BTreeMap<i32, i64>>,
) {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in &next {
        let _ = tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(o));
    }
    // librdkafka sends the generation it holds when the request goes out; read it just before.
    let (member, generation) = group_identity(consumer).unwrap_or_default();
    let invoked_ms = rec.ms();
    let result = consumer.commit(&tpl, CommitMode::Sync);
    let t_ms = rec.ms();
    let after = group_identity(consumer).map(|(_, g)| g);
    if after.is_some_and(|g| g != generation) {
        rec.info(format!(
            "{name}: generation changed from {generation} to {after:?} during a commit"
        ));
    }
    if result.is_ok() {
        let mut c = lock(committed);
        for (&p, &o) in &next {
            let e = c.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
    }
    rec.emit(Event::Commit {
        invoked_ms,
        t_ms,
        consumer: name.to_owned(),
        group: cfg.group.clone(),
        member,
        generation,
        topic: cfg.topic.clone(),
        offsets: next.into_iter().collect(),
        ok: result.is_ok(),
        error: result.err().map(|e| e.to_string()),
    });
}

// ---------------------------------------------------------------------------------------------
// Watermarks

fn run_sampler(cfg: Arc<Config>, rec: Recorder, stop: Arc<AtomicBool>, hw: Arc<Mutex<Vec<i64>>>) {
    let mut notes = ErrorNotes::new(&rec, "watermark sampler");
    let client: BaseConsumer =
        match consumer_config(&cfg, "jepsen-sampler", "jepsen-sampler").create() {
            Ok(c) => c,
            Err(e) => {
                rec.info(format!("watermark sampler: cannot create the client: {e}"));
                return;
            }
        };
    let timeout = Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        let leaders: HashMap<i32, i32> = match client.fetch_metadata(Some(&cfg.topic), timeout) {
            Ok(md) => md
                .topics()
                .iter()
                .filter(|t| t.name() == cfg.topic)
                .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
                .collect(),
            Err(e) => {
                notes.note(&format!("metadata: {e}"));
                HashMap::new()
            }
        };
        for p in 0..cfg.partitions {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // Stamped with the time of the request: the answer may reflect any moment until
            // the response, and only the earliest one keeps "a watermark below an offset read
            // before it" a real anomaly rather than a race with the read.
            let asked = rec.ms();
            match client.fetch_watermarks(&cfg.topic, p, timeout) {
                Ok((low, high)) => {
                    rec.emit(Event::Watermarks {
                        t_ms: asked,
                        topic: cfg.topic.clone(),
                        partition: p,
                        node: leaders.get(&p).copied().unwrap_or(-1),
                        log_start: low,
                        high_watermark: high,
                    });
                    if let Some(h) = lock(&hw).get_mut(p as usize) {
                        *h = high;
                    }
                }
                Err(e) => notes.note(&format!("watermarks of partition {p}: {e}")),
            }
        }
        if let Some(wait) =
            (round + Duration::from_millis(500)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The whole workload

/// Every client thread and what the harness needs to know about their progress.
pub struct Workload {
    threads: Vec<(String, JoinHandle<()>, Role)>,
    stop_producers: Arc<AtomicBool>,
    stop_readers: Arc<AtomicBool>,
    /// Acknowledged sends so far (all producers).
    pub acked: Arc<AtomicU64>,
    pub readers: Vec<Arc<ReaderState>>,
    /// The group's highest accepted commit per partition.
    pub committed: Arc<Mutex<BTreeMap<i32, i64>>>,
    /// The sampler's latest high watermark per partition.
    pub hw: Arc<Mutex<Vec<i64>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Reader,
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))
}

impl Workload {
    /// Starts the sampler, the readers, the group members and the producers.
    pub fn start(cfg: Config, rec: &Recorder) -> Result<Self> {
        let cfg = Arc::new(cfg);
        let mut w = Workload {
            threads: Vec::new(),
            stop_producers: Arc::default(),
            stop_readers: Arc::default(),
            acked: Arc::default(),
            readers: Vec::new(),
            committed: Arc::default(),
            hw: Arc::new(Mutex::new(vec![0; cfg.partitions.max(0) as usize])),
        };
        {
            let (cfg, rec, stop, hw) = (
                cfg.clone(),
                rec.clone(),
                w.stop_readers.clone(),
                w.hw.clone(),
            );
            let t = spawn("sampler", move || run_sampler(cfg, rec, stop, hw))?;
            w.threads.push(("sampler".into(), t, Role::Reader));
        }
        for i in 1..=cfg.readers {
            let state = Arc::new(ReaderState {
                name: format!("reader-{i}"),
                next: Mutex::new(vec![-1; cfg.partitions.max(0) as usize]),
                restart: AtomicBool::new(false),
            });
            w.readers.push(state.clone());
            let (cfg, rec, stop) = (cfg.clone(), rec.clone(), w.stop_readers.clone());
            let t = spawn(&state.name.clone(), move || {
                run_reader(cfg, rec, state, stop)
            })?;
            w.threads.push((format!("reader-{i}"), t, Role::Reader));
        }
        for i in 1..=cfg.group_members {
            let name = format!("member-{i}");
            let (cfg, rec, stop, committed) = (
                cfg.clone(),
                rec.clone(),
                w.stop_readers.clone(),
                w.committed.clone(),
            );
            let n = name.clone();
            let t = spawn(&name, move || run_member(cfg, rec, n, stop, committed))?;
            w.threads.push((name, t, Role::Reader));
        }
        for spec in &PRODUCERS {
            let (cfg, rec, stop, acked) = (
                cfg.clone(),
                rec.clone(),
                w.stop_producers.clone(),
                w.acked.clone(),
            );
            let t = spawn(spec.name, move || run_producer(cfg, rec, spec, stop, acked))?;
            w.threads.push((spec.name.to_owned(), t, Role::Producer));
        }
        Ok(w)
    }

    /// Stops the producers and waits (until `deadline`) for their outstanding deliveries;
    /// names the threads that did not finish.
    pub fn stop_producers(&mut self, deadline: Instant) -> Vec<String> {
        self.stop_producers.store(true, Ordering::Relaxed);
        self.join(Role::Producer, deadline)
    }

    /// Stops the readers, the group members and the sampler.
    pub fn stop_readers(&mut self, deadline: Instant) -> Vec<String> {
        self.stop_readers.store(true, Ordering::Relaxed);
        self.join(Role::Reader, deadline)
    }

    /// Makes every `assign()` reader start over with a fresh client at its next offsets.
    pub fn restart_readers(&self) {
        for r in &self.readers {
            r.restart.store(true, Ordering::Relaxed);
        }
    }

    fn join(&mut self, role: Role, deadline: Instant) -> Vec<String> {
        let mut problems = Vec::new();
        while Instant::now() < deadline
            && self
                .threads
                .iter()
                .any(|(_, t, r)| *r == role && !t.is_finished())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition(|(_, _, r)| *r == role);
        self.threads = rest;
        for (name, t, _) in mine {
            if !t.is_finished() {
                problems.push(format!("client thread {name} did not stop in time"));
                continue;
            }
            if t.join().is_err() {
                problems.push(format!("client thread {name} panicked"));
            }
        }
        problems
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop_producers.store(true, Ordering::Relaxed);
        self.stop_readers.store(true, Ordering::Relaxed);
    }
}
