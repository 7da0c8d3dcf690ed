//! `strom produce` and `strom consume`: records from stdin lines and to stdout lines.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom_protocol::batch::BatchIter;
use strom_protocol::codec::Codec;
use strom_protocol::records;
use tokio::io::AsyncBufReadExt;

use super::kafka::{check, error_text, Client, Tp};
use super::Common;

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    #[arg(long, short = 't')]
    topic: String,
    /// Split each line into key and value at the first occurrence of this string.
    #[arg(long)]
    key_separator: Option<String>,
    /// Write every record to this partition (else by key hash, as the Java client does, or
    /// round-robin for records without a key).
    #[arg(long)]
    partition: Option<i32>,
    /// 1 or all (-1); acks=0 is refused, it could not report failures.
    #[arg(long, default_value = "all")]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
}

#[derive(Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long, short = 't')]
    topic: String,
    /// Start from the group's committed offsets and commit what was printed.
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Start at the log start of partitions without a committed offset (else the log end).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop when no record arrived for this long.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Print `key<TAB>value`.
    #[arg(long)]
    print_key: bool,
    /// Print `partition<TAB>offset<TAB>` before each record.
    #[arg(long)]
    print_offset: bool,
}

/// Java's `Utils.murmur2`, so keyed records land where the Java client would put them.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn key_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

type Record = (Option<Vec<u8>>, Vec<u8>);

struct Producer<'a> {
    client: &'a mut Client,
    topic: String,
    acks: i16,
    codec: Codec,
    sent: u64,
}

impl Producer<'_> {
    /// Leaders and partition count of the topic, refreshed from metadata.
    async fn leaders(&mut self) -> Result<Vec<i32>> {
        let topics = [self.topic.clone()];
        let md = self.client.refresh(Some(&topics)).await?;
        let t = md
            .topics
            .get(&self.topic)
            .ok_or_else(|| anyhow!("topic {} does not exist", self.topic))?;
        check(t.error, None, || format!("topic {}", self.topic))?;
        Ok(t.partitions.iter().map(|p| p.leader).collect())
    }

    /// Sends one batch per partition, retrying leader changes like a client does.
    async fn send(&mut self, batches: BTreeMap<i32, Vec<Record>>) -> Result<()> {
        let mut pending = batches;
        for attempt in 0..10 {
            if pending.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            let leaders = self.leaders().await?;
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for p in pending.keys() {
                let leader = leaders.get(*p as usize).copied().unwrap_or(-1);
                by_leader.entry(leader).or_default().push(*p);
            }
            let mut retry = BTreeMap::new();
            for (leader, parts) in by_leader {
                if leader < 0 {
                    for p in parts {
                        if let Some(b) = pending.remove(&p) {
                            retry.insert(p, b);
                        }
                    }
                    continue;
                }
                let mut data = Vec::new();
                for p in &parts {
                    let recs = &pending[p];
                    let kv: Vec<records::KeyValue<'_>> = recs
                        .iter()
                        .map(|(k, v)| (k.as_deref(), Some(v.as_slice())))
                        .collect();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let batch = records::build_batch(self.codec, now, &kv)?;
                    data.push(
                        PartitionProduceData::default()
                            .with_index(*p)
                            .with_records(Some(Bytes::from(batch))),
                    );
                }
                let req = ProduceRequest::default()
                    .with_acks(self.acks)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                        .with_partition_data(data)]);
                let addr = self.client.broker_addr(leader)?;
                let resp = self.client.send_to(Some(&addr), &req).await;
                let resp = match resp {
                    Ok(r) => r,
                    Err(e) if attempt < 9 => {
                        eprintln!("strom produce: {e:#}; retrying");
                        for p in parts {
                            if let Some(b) = pending.remove(&p) {
                                retry.insert(p, b);
                            }
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for t in resp.responses {
                    for r in t.partition_responses {
                        let Some(batch) = pending.remove(&r.index) else {
                            continue;
                        };
                        match r.error_code {
                            0 => self.sent += batch.len() as u64,
                            // Leadership moved or is moving, or replicas are catching up:
                            // retriable in Kafka's terms.
                            5 | 6 | 7 | 19 | 20 | 74 | 75 => {
                                retry.insert(r.index, batch);
                            }
                            code => bail!(
                                "produce to {}-{} failed: {}",
                                self.topic,
                                r.index,
                                error_text(code, r.error_message.as_ref())
                            ),
                        }
                    }
                }
            }
            pending = retry;
        }
        bail!("produce to {} kept failing after 10 attempts", self.topic)
    }
}

pub async fn produce(args: ProduceArgs, common: &Common) -> Result<()> {
    let acks = match args.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => bail!("acks=0 is not supported by strom produce (it cannot report failures)"),
        other => bail!("--acks must be 1 or all, not {other}"),
    };
    let codec = match args.compression.as_str() {
        "none" => Codec::None,
        "gzip" => Codec::Gzip,
        "snappy" => Codec::Snappy,
        "lz4" => Codec::Lz4,
        "zstd" => Codec::Zstd,
        other => bail!("--compression must be none, gzip, snappy, lz4 or zstd, not {other}"),
    };
    let mut client = Client::connect(&common.bootstrap_server).await?;
    let mut producer = Producer {
        client: &mut client,
        topic: args.topic.clone(),
        acks,
        codec,
        sent: 0,
    };
    let partitions = producer.leaders().await?.len() as i32;
    if let Some(p) = args.partition {
        if !(0..partitions).contains(&p) {
            bail!("topic {} has partitions 0..{}", args.topic, partitions - 1);
        }
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut pending: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut buffered = 0usize;
    let mut round_robin = 0i32;
    let mut eof = false;
    let mut last_report = std::time::Instant::now();
    while !eof {
        // Lines arriving together go out together; a pause of 10 ms flushes (interactive use).
        let next = tokio::time::timeout(Duration::from_millis(10), lines.next_line()).await;
        let line = match next {
            Ok(Ok(Some(line))) => Some(line),
            Ok(Ok(None)) => {
                eof = true;
                None
            }
            Ok(Err(e)) => return Err(e).context("reading stdin"),
            Err(_) => None,
        };
        if let Some(line) = line {
            let (key, value) = match &args.key_separator {
                Some(sep) => {
                    let (k, v) = line
                        .split_once(sep.as_str())
                        .ok_or_else(|| anyhow!("no key separator {sep:?} in line {line:?}"))?;
                    (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec())
                }
                None => (None, line.into_bytes()),
            };
            let partition = match (args.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => key_partition(k, partitions),
                (None, None) => round_robin,
            };
            buffered += value.len() + key.as_ref().map_or(0, Vec::len);
            pending.entry(partition).or_default().push((key, value));
            if buffered < 1 << 20 && pending.values().map(Vec::len).sum::<usize>() < 1000 {
                continue;
            }
        }
        if !pending.is_empty() {
            producer.send(std::mem::take(&mut pending)).await?;
            buffered = 0;
            round_robin = (round_robin + 1) % partitions.max(1);
            if last_report.elapsed() > Duration::from_secs(2) {
                eprintln!("strom produce: {} records so far", producer.sent);
                last_report = std::time::Instant::now();
            }
        }
    }
    eprintln!(
        "strom produce: {} records written to {}",
        producer.sent, args.topic
    );
    Ok(())
}

pub async fn consume(args: ConsumeArgs, common: &Common) -> Result<()> {
    let mut client = Client::connect(&common.bootstrap_server).await?;
    let topics = [args.topic.clone()];
    let md = client.refresh(Some(&topics)).await?;
    let t = md
        .topics
        .get(&args.topic)
        .filter(|t| t.error == 0)
        .ok_or_else(|| anyhow!("topic {} does not exist", args.topic))?;
    let partitions: Vec<i32> = t.partitions.iter().map(|p| p.index).collect();
    let coordinator = match &args.group {
        Some(g) => Some(client.coordinator(g).await?),
        None => None,
    };
    // Start positions: committed offsets, else the log start or end.
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    if let (Some(g), Some(c)) = (&args.group, &coordinator) {
        for ((topic, p), offset) in client.committed(c, g).await? {
            if topic == args.topic {
                positions.insert(p, offset);
            }
        }
    }
    let start = if args.from_beginning { -2 } else { -1 };
    let missing: BTreeSet<Tp> = partitions
        .iter()
        .filter(|p| !positions.contains_key(p))
        .map(|p| (args.topic.clone(), *p))
        .collect();
    for ((_, p), offset) in client.list_offsets(&missing, start).await? {
        positions.insert(p, offset?);
    }
    let mut printed = 0u64;
    let mut last_record = std::time::Instant::now();
    let stdout = std::io::stdout();
    'outer: loop {
        let md = client.refresh(Some(&topics)).await?;
        let leaders: BTreeMap<i32, i32> = md
            .topics
            .get(&args.topic)
            .map(|t| t.partitions.iter().map(|p| (p.index, p.leader)).collect())
            .unwrap_or_default();
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &partitions {
            by_leader
                .entry(leaders.get(p).copied().unwrap_or(-1))
                .or_default()
                .push(*p);
        }
        let mut got_any = false;
        for (leader, parts) in by_leader {
            if leader < 0 {
                continue;
            }
            let addr = client.broker_addr(leader)?;
            let req = FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(16 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(args.topic.clone())))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_fetch_offset(positions[p])
                                    .with_partition_max_bytes(4 << 20)
                            })
                            .collect(),
                    )]);
            let resp = client.send_to(Some(&addr), &req).await?;
            for t in resp.responses {
                for p in t.partitions {
                    let index = p.partition_index;
                    match p.error_code {
                        0 => {}
                        1 => {
                            // Out of range (retention moved the start): restart as configured.
                            let o = offset_at(&mut client, &args.topic, index, start).await?;
                            eprintln!("strom consume: offset out of range on partition {index}; moving to {o}");
                            positions.insert(index, o);
                            continue;
                        }
                        6 | 74 | 75 | 5 => continue, // leadership moving: metadata refresh next round
                        code => bail!(
                            "fetch from {}-{index}: {}",
                            args.topic,
                            error_text(code, None)
                        ),
                    }
                    let Some(data) = p.records else { continue };
                    let mut out = stdout.lock();
                    // A fetch may end in a partial batch: the iterator stops before it.
                    for (header, range) in BatchIter::new(&data) {
                        let bytes = &data[range];
                        if header.is_control() {
                            positions.insert(index, header.last_offset() + 1);
                            continue;
                        }
                        let recs = records::decode(bytes, 64 << 20)
                            .map_err(|e| anyhow!("corrupt batch in {}-{index}: {e}", args.topic))?;
                        for r in recs {
                            if r.offset < positions[&index] {
                                continue;
                            }
                            if args.print_offset {
                                write!(out, "{index}\t{}\t", r.offset)?;
                            }
                            if args.print_key {
                                let key = r
                                    .key
                                    .as_deref()
                                    .map(String::from_utf8_lossy)
                                    .unwrap_or_default();
                                write!(out, "{key}\t")?;
                            }
                            let value = r
                                .value
                                .as_deref()
                                .map(String::from_utf8_lossy)
                                .unwrap_or_default();
                            writeln!(out, "{value}")?;
                            printed += 1;
                            got_any = true;
                            positions.insert(index, r.offset + 1);
                            if args.max_messages.is_some_and(|m| printed >= m) {
                                out.flush()?;
                                break 'outer;
                            }
                        }
                        positions.insert(index, header.last_offset() + 1);
                    }
                    out.flush()?;
                }
            }
        }
        if got_any {
            last_record = std::time::Instant::now();
        } else if args
            .timeout_ms
            .is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t))
        {
            break;
        }
    }
    if let (Some(g), Some(c)) = (&args.group, &coordinator) {
        let offsets = positions
            .iter()
            .map(|(p, o)| ((args.topic.clone(), *p), *o))
            .collect();
        client.commit(c, g, &offsets).await?;
    }
    eprintln!("strom consume: {printed} records");
    Ok(())
}

/// The offset at `timestamp` (-1 log end, -2 log start) of one partition, from its leader.
async fn offset_at(
    client: &mut Client,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<i64> {
    let tp = (topic.to_owned(), partition);
    client
        .list_offsets(&BTreeSet::from([tp.clone()]), timestamp)
        .await?
        .remove(&tp)
        .unwrap_or_else(|| Err(anyhow!("no offsets for {topic}-{partition}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_where_the_java_client_puts_them() {
        // Values from Kafka's own UtilsTest / DefaultPartitioner for these keys.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
