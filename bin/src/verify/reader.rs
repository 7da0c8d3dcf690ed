//! What the workload reads back: one `assign()`-style reader per partition (Fetch from the
//! leader, forward from where it started, a `Poll` event per fetch that returned records), a
//! sampler of every partition's log start and high watermark, and after the run a final read
//! of each partition from its log start to its high watermark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom_broker::client::list_offsets_request;
use strom_protocol::batch::BatchIter;
use strom_protocol::records;
use strom_verify::history::{Event, Read, ReaderKind};
use tokio::sync::watch;

use super::recorder::Recorder;
use super::{backoff, leader};
use crate::cli::kafka::{error_text, Client};

/// How long a reader keeps catching up once the producers stopped.
pub const CATCH_UP: Duration = Duration::from_secs(30);
/// How long the final reads of all partitions may take together.
pub const FINAL_READS: Duration = Duration::from_secs(60);
/// How often the sampler asks for watermarks.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// A fetch waits this long for records before answering empty.
const FETCH_WAIT_MS: i32 = 500;
/// The reader's pause after a fetch that returned nothing.
const EMPTY_PAUSE: Duration = Duration::from_millis(20);
/// Largest decompressed batch accepted.
const BATCH_LIMIT: usize = 64 << 20;
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// One partition's watermarks as its leader reported them.
pub struct Marks {
    pub partition: i32,
    /// The leader that answered.
    pub node: i32,
    pub log_start: i64,
    pub high_watermark: i64,
}

/// Log start (ListOffsets earliest) and high watermark (latest) of `partitions`, from their
/// leaders; partitions without a leader or whose leader refused are left out.
pub async fn watermarks(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<Marks>> {
    let topics = [topic.to_owned()];
    let md = client.refresh(Some(&topics)).await?;
    let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    if let Some(t) = md.topics.get(topic) {
        for p in t
            .partitions
            .iter()
            .filter(|p| partitions.contains(&p.index))
        {
            if p.leader >= 0 {
                by_leader.entry(p.leader).or_default().push(p.index);
            }
        }
    }
    let mut out = Vec::new();
    for (node, parts) in by_leader {
        let addr = client.broker_addr(node)?;
        // Earliest first: the high watermark only grows, so pairing it with a log start read
        // just before is safe for the checker.
        let mut earliest = std::collections::BTreeMap::new();
        for (timestamp, latest) in [(-2, false), (-1, true)] {
            let req = list_offsets_request([(topic.to_owned(), parts.clone())], timestamp);
            let resp = client.send_to(Some(&addr), &req).await?;
            for p in resp.topics.into_iter().flat_map(|t| t.partitions) {
                if p.error_code != 0 {
                    tracing::debug!(topic, partition = p.partition_index, node, error = %error_text(p.error_code, None), "no watermark");
                    continue;
                }
                if !latest {
                    earliest.insert(p.partition_index, p.offset);
                } else if let Some(&log_start) = earliest.get(&p.partition_index) {
                    out.push(Marks {
                        partition: p.partition_index,
                        node,
                        log_start,
                        high_watermark: p.offset,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Records every partition's watermarks every 500 ms until `stop` turns true.
pub async fn sample(
    mut client: Client,
    rec: Arc<Recorder>,
    topic: String,
    partitions: Vec<i32>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let closed = tokio::select! {
            _ = tick.tick() => false,
            changed = stop.changed() => changed.is_err(),
        };
        if closed || *stop.borrow() {
            return;
        }
        // Stamped before asking: a read that completed before this moment was below the
        // high watermark the answer reports.
        let t_ms = rec.ms();
        match watermarks(&mut client, &topic, &partitions).await {
            Ok(marks) => {
                for m in marks {
                    rec.emit(Event::Watermarks {
                        t_ms,
                        topic: topic.clone(),
                        partition: m.partition,
                        node: m.node,
                        log_start: m.log_start,
                        high_watermark: m.high_watermark,
                    });
                }
            }
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "watermark sample failed"),
        }
    }
}

/// One fetch's records at or above `from`, in order, with the position after them; a
/// corrupt batch ends the list and is reported beside it (its offsets are skipped).
fn decode(data: &Bytes, partition: i32, from: i64) -> (Vec<Read>, i64, Option<String>) {
    let mut out = Vec::new();
    let mut position = from;
    // A fetch may end in a partial batch: the iterator stops before it.
    for (header, range) in BatchIter::new(data) {
        let next = header.last_offset() + 1;
        if header.is_control() {
            position = position.max(next);
            continue;
        }
        let Some(bytes) = data.get(range) else {
            break;
        };
        match records::decode(bytes, BATCH_LIMIT) {
            Ok(recs) => {
                for r in recs.into_iter().filter(|r| r.offset >= position) {
                    let value = r
                        .value
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                        .into_owned();
                    out.push(Read {
                        partition,
                        offset: r.offset,
                        value,
                    });
                }
            }
            Err(e) => {
                let why = format!(
                    "undecodable batch at offsets {}..={} of partition {partition}: {e}",
                    header.base_offset,
                    header.last_offset()
                );
                return (out, position.max(next), Some(why));
            }
        }
        position = position.max(next);
    }
    (out, position, None)
}

/// A consumer's fetch of one partition from `offset`.
fn fetch_request(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(8 << 20)
        .with_isolation_level(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// One partition's fetch answer: its error code, high watermark and records.
struct Fetched {
    error_code: i16,
    high_watermark: i64,
    records: Option<Bytes>,
}

/// Fetches one partition from its leader.
async fn fetch(
    client: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    refresh: bool,
) -> Result<Fetched> {
    let (_, addr) = leader(client, topic, partition, refresh).await?;
    let resp = client
        .send_to(Some(&addr), &fetch_request(topic, partition, offset))
        .await?;
    if resp.error_code != 0 {
        bail!("fetch from {addr}: {}", error_text(resp.error_code, None));
    }
    resp.responses
        .into_iter()
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == partition)
        .map(|p| Fetched {
            error_code: p.error_code,
            high_watermark: p.high_watermark,
            records: p.records,
        })
        .ok_or_else(|| anyhow!("{addr} did not answer for partition {partition}"))
}

/// An `assign()`-style reader of one partition.
pub struct Reader {
    /// `reader-<partition>`.
    name: String,
    topic: String,
    partition: i32,
    client: Client,
    rec: Arc<Recorder>,
    /// The next offset to read.
    position: i64,
    /// Where the run began: on a topic that held records before, nothing below is ours.
    floor: i64,
    /// Problems worth the user's attention (corrupt batches), reported with the verdict.
    pub notes: Vec<String>,
}

impl Reader {
    pub fn new(
        topic: String,
        partition: i32,
        start: i64,
        client: Client,
        rec: Arc<Recorder>,
    ) -> Self {
        Self {
            name: format!("reader-{partition}"),
            topic,
            partition,
            client,
            rec,
            position: start,
            floor: start,
            notes: Vec::new(),
        }
    }

    fn seek(&mut self, offset: i64) {
        self.position = offset;
        self.rec.emit(Event::Seek {
            t_ms: self.rec.ms(),
            consumer: self.name.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            offset,
        });
    }

    /// Reads forward until `target` holds an offset and the reader reached it (or the high
    /// watermark a fetch reported after that, if lower), or [`CATCH_UP`] after the target
    /// was set. Returns the reader with its notes.
    pub async fn run(mut self, mut target: watch::Receiver<Option<i64>>) -> Self {
        self.seek(self.position);
        let mut refresh = false;
        let mut failures = 0u32;
        let mut deadline: Option<Instant> = None;
        // The high watermark reported by a fetch sent after the target was set.
        let mut hw_after_stop: Option<i64> = None;
        loop {
            let goal = *target.borrow_and_update();
            if let Some(goal) = goal {
                if self.position >= goal.min(hw_after_stop.unwrap_or(i64::MAX)) {
                    break;
                }
                let d = *deadline.get_or_insert_with(|| Instant::now() + CATCH_UP);
                if Instant::now() >= d {
                    let note = format!(
                        "{} stopped at offset {} short of {goal} after {} s",
                        self.name,
                        self.position,
                        CATCH_UP.as_secs()
                    );
                    tracing::warn!("{note}");
                    self.notes.push(note);
                    break;
                }
            }
            match self.poll(refresh).await {
                Ok((hw, got)) => {
                    refresh = false;
                    failures = 0;
                    if goal.is_some() {
                        hw_after_stop = Some(hw);
                    }
                    if !got {
                        // A broker that answers an empty fetch at once (ignoring
                        // max_wait_ms) must not make this loop spin.
                        tokio::time::sleep(EMPTY_PAUSE).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(reader = %self.name, error = %format!("{e:#}"), "fetch failed; refreshing metadata");
                    refresh = true;
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
        self
    }

    /// One fetch; records a `Poll` for what it returned. Returns the high watermark and
    /// whether the fetch moved the reader forward.
    async fn poll(&mut self, refresh: bool) -> Result<(i64, bool)> {
        let f = fetch(
            &mut self.client,
            &self.topic,
            self.partition,
            self.position,
            refresh,
        )
        .await?;
        match f.error_code {
            0 => {}
            OFFSET_OUT_OF_RANGE => {
                // Retention moved the log start past us, or the log was truncated below us:
                // start over from the log start, as auto.offset.reset=earliest does.
                let marks = watermarks(&mut self.client, &self.topic, &[self.partition]).await?;
                let m = marks
                    .first()
                    .ok_or_else(|| anyhow!("no log start for partition {}", self.partition))?;
                tracing::warn!(reader = %self.name, position = self.position, log_start = m.log_start, high_watermark = m.high_watermark, "offset out of range; seeking to the log start");
                let (hw, to) = (m.high_watermark, m.log_start.max(self.floor));
                if to == self.position {
                    bail!("offset {to} is out of range, and no earlier offset is ours to read");
                }
                self.seek(to);
                return Ok((hw, true));
            }
            code => bail!("partition {}: {}", self.partition, error_text(code, None)),
        }
        let t_ms = self.rec.ms();
        let before = self.position;
        if let Some(data) = &f.records {
            let (reads, position, corrupt) = decode(data, self.partition, self.position);
            if let Some(why) = corrupt {
                tracing::error!(reader = %self.name, "{why}");
                self.rec.info(format!("{}: {why}", self.name));
                self.notes.push(why);
            }
            self.position = position;
            if !reads.is_empty() {
                self.rec.emit(Event::Poll {
                    t_ms,
                    consumer: self.name.clone(),
                    kind: ReaderKind::Assign,
                    topic: self.topic.clone(),
                    member: None,
                    generation: None,
                    records: reads,
                });
            }
        }
        Ok((f.high_watermark, self.position > before))
    }
}

/// After the run: a fresh read of one partition from its log start (or `from`, where the run
/// began on a topic that already held records) to its high watermark, recorded as `Final`
/// once complete (by `deadline`).
pub async fn final_read(
    client: &mut Client,
    rec: &Recorder,
    topic: &str,
    partition: i32,
    from: i64,
    deadline: Instant,
) -> Result<()> {
    let mut failures = 0u32;
    let (t_ms, marks) = loop {
        let t_ms = rec.ms();
        match watermarks(client, topic, &[partition]).await {
            Ok(mut m) if !m.is_empty() => break (t_ms, m.swap_remove(0)),
            Ok(_) => tracing::debug!(partition, "no watermarks yet"),
            Err(e) => tracing::debug!(partition, error = %format!("{e:#}"), "watermarks failed"),
        }
        failures += 1;
        if Instant::now() >= deadline {
            bail!("partition {partition}: no leader answered ListOffsets");
        }
        tokio::time::sleep(backoff(failures)).await;
    };
    let start = marks.log_start.max(from);
    let mut position = start;
    let mut records = Vec::new();
    let mut refresh = false;
    failures = 0;
    while position < marks.high_watermark {
        if Instant::now() >= deadline {
            bail!(
                "partition {partition}: the final read reached offset {position} of {} in time",
                marks.high_watermark,
            );
        }
        let fetched = fetch(client, topic, partition, position, refresh).await;
        let f = match fetched {
            Ok(f) if f.error_code == 0 => f,
            Ok(f) => {
                let e = error_text(f.error_code, None);
                if f.error_code == OFFSET_OUT_OF_RANGE {
                    bail!("partition {partition}: offset {position} is out of range ({e}) during the final read");
                }
                tracing::debug!(partition, error = %e, "final read fetch failed");
                refresh = true;
                failures += 1;
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(partition, error = %format!("{e:#}"), "final read fetch failed");
                refresh = true;
                failures += 1;
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        refresh = false;
        let empty = Bytes::new();
        let data = f.records.as_ref().unwrap_or(&empty);
        let (reads, next, corrupt) = decode(data, partition, position);
        if let Some(why) = corrupt {
            bail!("final read: {why}");
        }
        records.extend(
            reads
                .into_iter()
                .filter(|r| r.offset < marks.high_watermark)
                .map(|r| (r.offset, r.value)),
        );
        if next == position {
            tokio::time::sleep(EMPTY_PAUSE).await;
        }
        position = next;
    }
    rec.emit(Event::Final {
        t_ms,
        topic: topic.to_owned(),
        partition,
        log_start: start,
        high_watermark: marks.high_watermark,
        records,
    });
    Ok(())
}
