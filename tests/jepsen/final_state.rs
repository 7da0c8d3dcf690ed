//! After healing: the final read of every partition through a fresh consumer (`Final`
//! events), and, once every node has shut down cleanly, each replica's files read straight from
//! its data directory (`Replica` events): records, log start and end, a digest of the stored
//! batch bytes and the leader-epoch checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use strom_protocol::batch::BatchIter;
use strom_tests::cluster::text;
use strom_verify::history::{Event, Writer};

use crate::recorder::Recorder;

/// What one final read found, for the summary.
pub struct FinalRead {
    pub partition: i32,
    pub log_start: i64,
    pub high_watermark: i64,
    pub records: usize,
}

/// Reads every partition of `topic` from its log start to its high watermark (each read
/// bounded by `timeout`) and records a `Final` event per partition. A read that cannot
/// complete is a harness failure: an incomplete final read would make the checker report
/// acknowledged writes as lost.
pub fn final_reads(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    rec: &Recorder,
    timeout: Duration,
) -> Result<Vec<FinalRead>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "jepsen-final")
        .set("group.id", "jepsen-final")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "error")
        .create()
        .context("creating the final reader")?;
    let mut out = Vec::new();
    for p in 0..partitions {
        let deadline = Instant::now() + timeout;
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok(w) => break w,
                Err(e) if Instant::now() > deadline => {
                    bail!("final read of {topic}/{p}: no watermarks within {timeout:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        let mut records: Vec<(i64, String)> = Vec::new();
        if high > low {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .context("final read assignment")?;
            consumer.assign(&tpl).context("final read assign")?;
            let mut next = low;
            let mut errors: Vec<String> = Vec::new();
            while next < high {
                if Instant::now() > deadline {
                    bail!(
                        "final read of {topic}/{p} stuck at offset {next} of [{low}, {high}) \
                         after {timeout:?}; last errors {:?}",
                        errors
                    );
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) if m.partition() == p && m.offset() >= next => {
                        next = m.offset() + 1;
                        if m.offset() < high {
                            records.push((m.offset(), text(m.payload())));
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        // The last few, for the message should the read get stuck.
                        errors.push(e.to_string());
                        let excess = errors.len().saturating_sub(5);
                        errors.drain(..excess);
                    }
                    None => {}
                }
            }
        }
        let gaps = records.windows(2).filter(|w| w[1].0 != w[0].0 + 1).count()
            + usize::from(records.first().is_some_and(|r| r.0 != low));
        if gaps > 0 {
            rec.info(format!(
                "final read of {topic}/{p}: {gaps} gaps in the offsets of [{low}, {high})"
            ));
        }
        out.push(FinalRead {
            partition: p,
            log_start: low,
            high_watermark: high,
            records: records.len(),
        });
        rec.emit(Event::Final {
            t_ms: rec.ms(),
            topic: topic.to_owned(),
            partition: p,
            log_start: low,
            high_watermark: high,
            records,
        });
    }
    Ok(out)
}

/// One replica's partition directory, decoded.
struct ReplicaFiles {
    log_start: i64,
    log_end: i64,
    /// Digest of the stored bytes of every batch ending at or after `digest_from`.
    digest: String,
    /// (offset, value) of every data record at or above the log start.
    records: Vec<(i64, String)>,
    writers: Vec<Writer>,
    epochs: Vec<(i32, i64)>,
}

/// The segment files of a partition directory, `<base offset>.log`, in offset order.
fn segments(dir: &Path) -> Result<Vec<(i64, PathBuf)>> {
    let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.strip_suffix(".log")?.parse::<i64>().ok()?;
            Some((base, e.path()))
        })
        .collect();
    segments.sort();
    Ok(segments)
}

/// A replica's log start: `strom.checkpoint` (`v1 <log start> <recovery point>`), or the
/// first segment's base offset when that is higher.
fn log_start(dir: &Path) -> Result<i64> {
    let checkpoint = std::fs::read_to_string(dir.join("strom.checkpoint")).unwrap_or_default();
    let mut words = checkpoint.split_whitespace();
    let cp_start = match (words.next(), words.next()) {
        (Some("v1"), Some(s)) => s.parse::<i64>().unwrap_or(0),
        _ => 0,
    };
    let first_base = segments(dir)?.first().map_or(0, |(b, _)| *b);
    Ok(cp_start.max(first_base))
}

/// Reads a partition directory: its segments in order (records, log end, and a CRC32C over
/// the stored bytes of every batch that ends at or after `digest_from`) and its
/// `leader-epoch-checkpoint` (a version line, a count line, then `epoch offset` lines).
fn read_replica(dir: &Path, digest_from: i64) -> Result<ReplicaFiles> {
    let segments = segments(dir)?;
    let log_start = log_start(dir)?;
    let mut records = Vec::new();
    let mut writers = Vec::new();
    let (mut crc, mut digested) = (0u32, 0usize);
    let mut last_offset: Option<i64> = None;
    for (_, path) in &segments {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut it = BatchIter::new(&bytes);
        for (h, range) in &mut it {
            let raw = bytes.get(range.clone()).unwrap_or_default();
            if !h.is_control() && h.last_offset() >= log_start && h.producer_id >= 0 {
                writers.push(Writer {
                    base_offset: h.base_offset,
                    last_offset: h.last_offset(),
                    producer_id: h.producer_id,
                    producer_epoch: h.producer_epoch,
                    base_sequence: h.base_sequence,
                });
            }
            if !h.is_control() {
                let recs = strom_protocol::records::decode(raw, 64 << 20).map_err(|e| {
                    anyhow::anyhow!("{}: batch at {}: {e}", path.display(), h.base_offset)
                })?;
                for r in recs {
                    if r.offset >= log_start {
                        records.push((r.offset, text(r.value.as_deref())));
                    }
                }
            }
            if h.last_offset() >= digest_from {
                crc = crc32c::crc32c_append(crc, raw);
                digested += raw.len();
            }
            last_offset = Some(h.last_offset());
        }
        if let Some(e) = it.error() {
            bail!(
                "{}: unreadable at byte {} of {}: {e}",
                path.display(),
                it.position(),
                bytes.len()
            );
        }
    }
    let last_base = segments.last().map_or(log_start, |(b, _)| *b);
    let log_end = last_offset.map_or(last_base.max(log_start), |last| last + 1);
    let epochs_text =
        std::fs::read_to_string(dir.join("leader-epoch-checkpoint")).unwrap_or_default();
    let epochs = epochs_text
        .lines()
        .skip(2)
        .map_while(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect();
    Ok(ReplicaFiles {
        log_start,
        log_end,
        digest: format!("crc32c:{crc:08x}/{digested}B"),
        records,
        writers,
        epochs,
    })
}

/// Records a `Replica` event for every (node, partition) in `replicas` (partition -> the
/// nodes meant to hold it, with their data directories). `digest_from` is the highest log
/// start among a partition's replicas, so their digests cover the same offsets. Returns the
/// problems met (a directory that cannot be read is one).
pub fn replica_events(
    topic: &str,
    replicas: &BTreeMap<i32, Vec<(usize, PathBuf)>>,
    rec: &Recorder,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (&p, nodes) in replicas {
        let dirs: Vec<(usize, PathBuf)> = nodes
            .iter()
            .map(|(n, data)| (*n, data.join(format!("{topic}-{p}"))))
            .collect();
        let digest_from = dirs
            .iter()
            .filter_map(|(_, d)| log_start(d).ok())
            .max()
            .unwrap_or(0);
        for (n, dir) in dirs {
            let f = match read_replica(&dir, digest_from) {
                Ok(f) => f,
                Err(e) => {
                    let why = format!("replica of {topic}/{p} on n{n}: {e:#}");
                    rec.info(why.clone());
                    problems.push(why);
                    continue;
                }
            };
            rec.emit(Event::Replica {
                t_ms: rec.ms(),
                node: n as i32,
                topic: topic.to_owned(),
                partition: p,
                log_start: f.log_start,
                log_end: f.log_end,
                digest: f.digest,
                digest_from,
                epochs: f.epochs,
                records: f.records,
                writers: f.writers,
            });
        }
    }
    problems
}
