//! The workload's producers: one task each, one record per batch, one request at a time (so
//! at most one in flight per partition), partitions round robin, every value unique
//! (`<producer>-<n>`). Each send ends in one `Send` event: acknowledged at its base offset,
//! failed with the error, or, when the run ends first, unknown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom_protocol::codec::Codec;
use strom_protocol::records::{self, ProducerFields};
use strom_verify::history::{Event, Millis, Mode, SendOutcome};
use tokio::sync::watch;

use super::recorder::Recorder;
use super::{backoff, leader, RETRIABLE};
use crate::cli::kafka::{error_text, Client};

/// How long one send is retried before it is recorded as failed (Kafka's delivery timeout,
/// shortened).
pub const SEND_DEADLINE: Duration = Duration::from_secs(30);
/// The broker-side wait for acks=all replication, below the client's request timeout.
const PRODUCE_TIMEOUT_MS: i32 = 8_000;

const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
/// InitProducerId errors worth retrying (coordinator moving or loading, concurrent
/// transactions).
const INIT_RETRIABLE: [i16; 4] = [14, 15, 16, 51];

/// What a producer promises; the checker holds its sends to that contract.
#[derive(Clone, Copy)]
pub struct Spec {
    /// Short name inside the producer's name: `idem`, `all`, `one`.
    pub kind: &'static str,
    pub mode: Mode,
    pub acks: i16,
    pub idempotent: bool,
}

/// The workload's three producers.
pub const SPECS: [Spec; 3] = [
    Spec {
        kind: "idem",
        mode: Mode::IdempotentAll,
        acks: -1,
        idempotent: true,
    },
    Spec {
        kind: "all",
        mode: Mode::All,
        acks: -1,
        idempotent: false,
    },
    Spec {
        kind: "one",
        mode: Mode::One,
        acks: 1,
        idempotent: false,
    },
];

/// A send under way: if the run has to abort its producer, it is recorded as unknown.
pub struct Pending {
    invoked_ms: Millis,
    partition: i32,
    value: String,
}

/// The send in flight of one producer, shared with the run.
pub type InFlight = Arc<Mutex<Option<Pending>>>;

/// How one send ended.
enum Sent {
    /// Acknowledged; the offset is unknown only for a DUPLICATE_SEQUENCE_NUMBER answer (the
    /// broker had the batch already).
    Acked(Option<i64>),
    Failed(String),
}

/// One produce request's result.
enum Attempt {
    Done(Sent),
    /// Worth sending again (leader moving, replicas catching up, network).
    Retry(String),
}

pub struct Producer {
    /// `<run tag>-<kind>-0`: every value is `<name>-<n>`.
    pub name: String,
    spec: Spec,
    topic: String,
    partitions: i32,
    client: Client,
    rec: Arc<Recorder>,
    /// The idempotent producer's id and epoch (`None` for the others, and before InitProducerId).
    id: Option<(i64, i16)>,
    /// Next sequence number per partition under the current id and epoch.
    sequences: HashMap<i32, i32>,
    /// The send in progress.
    in_flight: InFlight,
}

impl Producer {
    pub fn new(
        name: String,
        spec: Spec,
        topic: String,
        partitions: i32,
        client: Client,
        rec: Arc<Recorder>,
    ) -> Self {
        Self {
            name,
            spec,
            topic,
            partitions,
            client,
            rec,
            id: None,
            sequences: HashMap::new(),
            in_flight: Arc::new(Mutex::new(None)),
        }
    }

    /// The send in flight, for the run to record as unknown should it abort this producer.
    pub fn in_flight(&self) -> InFlight {
        Arc::clone(&self.in_flight)
    }

    /// Sends `rate` records a second (fewer when acknowledgements are slower) until `stop`
    /// turns true; the send under way then completes (within [`SEND_DEADLINE`]). Returns
    /// why it stopped early, if it did.
    pub async fn run(mut self, rate: u32, mut stop: watch::Receiver<bool>) -> Option<String> {
        if self.spec.idempotent {
            if let Err(e) = self.init_id(false).await {
                let why = format!("producer {} could not start: {e:#}", self.name);
                self.rec.info(why.clone());
                return Some(why);
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            let closed = tokio::select! {
                _ = tick.tick() => false,
                changed = stop.changed() => changed.is_err(),
            };
            if closed || *stop.borrow() {
                return None;
            }
            let partition = (n % self.partitions.max(1) as u64) as i32;
            let value = format!("{}-{n}", self.name);
            n += 1;
            let invoked_ms = self.rec.ms();
            self.set_in_flight(Some(Pending {
                invoked_ms,
                partition,
                value: value.clone(),
            }));
            let sent = self.send(partition, &value).await;
            let (outcome, offset, error) = match &sent {
                Sent::Acked(offset) => (SendOutcome::Ok, *offset, None),
                Sent::Failed(e) => (SendOutcome::Fail, None, Some(e.clone())),
            };
            if let Sent::Failed(e) = &sent {
                tracing::warn!(producer = %self.name, %value, partition, error = %e, "send failed");
            }
            self.rec.emit(Event::Send {
                invoked_ms,
                t_ms: self.rec.ms(),
                producer: self.name.clone(),
                mode: self.spec.mode,
                topic: self.topic.clone(),
                partition,
                value,
                outcome,
                offset,
                error,
            });
            self.set_in_flight(None);
            match sent {
                Sent::Acked(_) => {
                    if let Some(s) = self.sequences.get_mut(&partition) {
                        // Sequence numbers wrap around to 0 after i32::MAX, as in Kafka.
                        *s = s.checked_add(1).unwrap_or(0);
                    }
                }
                // After a failure the broker's idea of the next sequence may differ from
                // ours: a new epoch starts every partition over at 0 (KIP-360).
                Sent::Failed(_) if self.spec.idempotent => {
                    if *stop.borrow() {
                        return None;
                    }
                    if let Err(e) = self.init_id(true).await {
                        let why = format!(
                            "producer {} stopped: no new producer epoch after a failed send: {e:#}",
                            self.name
                        );
                        self.rec.info(why.clone());
                        return Some(why);
                    }
                }
                Sent::Failed(_) => {}
            }
        }
    }

    fn set_in_flight(&self, p: Option<Pending>) {
        *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// One send, retried with the very same batch (same sequence number) until it is
    /// answered for good or [`SEND_DEADLINE`] passes.
    async fn send(&mut self, partition: i32, value: &str) -> Sent {
        let deadline = Instant::now() + SEND_DEADLINE;
        let batch = match self.batch(partition, value) {
            Ok(b) => b,
            Err(e) => return Sent::Failed(format!("cannot build the batch: {e:#}")),
        };
        let mut last_error = String::new();
        for attempt in 0u32.. {
            if attempt > 0 {
                let pause = backoff(attempt);
                if Instant::now() + pause >= deadline {
                    return Sent::Failed(format!(
                        "gave up after {attempt} attempts in {} s: {last_error}",
                        SEND_DEADLINE.as_secs()
                    ));
                }
                tokio::time::sleep(pause).await;
            }
            match self.attempt(partition, &batch, attempt > 0).await {
                Attempt::Done(sent) => return sent,
                Attempt::Retry(e) => {
                    tracing::debug!(producer = %self.name, %value, partition, attempt, error = %e, "retrying");
                    last_error = e;
                }
            }
        }
        Sent::Failed(last_error)
    }

    /// The batch of one record, stamped with the producer id, epoch and sequence when
    /// idempotent.
    fn batch(&mut self, partition: i32, value: &str) -> Result<Bytes> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let recs: [records::KeyValue<'_>; 1] = [(None, Some(value.as_bytes()))];
        let bytes = match (self.spec.idempotent, self.id) {
            (false, _) => records::build_batch(Codec::None, now, &recs)?,
            (true, Some((id, epoch))) => {
                let base_sequence = *self.sequences.entry(partition).or_insert(0);
                let producer = ProducerFields {
                    id,
                    epoch,
                    base_sequence,
                };
                records::build_idempotent_batch(Codec::None, now, producer, &recs)?
            }
            (true, None) => bail!("no producer id"),
        };
        Ok(Bytes::from(bytes))
    }

    /// One produce request to the partition's leader.
    async fn attempt(&mut self, partition: i32, batch: &Bytes, refresh: bool) -> Attempt {
        let addr = match leader(&mut self.client, &self.topic, partition, refresh).await {
            Ok((_, addr)) => addr,
            Err(e) => return Attempt::Retry(format!("{e:#}")),
        };
        let req = ProduceRequest::default()
            .with_acks(self.spec.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch.clone()))])]);
        let resp = match self.client.send_to(Some(&addr), &req).await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(format!("{e:#}")),
        };
        let answer = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partition_responses)
            .find(|p| p.index == partition);
        let Some(p) = answer else {
            return Attempt::Retry(format!("{addr} did not answer for partition {partition}"));
        };
        let error = || error_text(p.error_code, p.error_message.as_ref());
        match p.error_code {
            0 => Attempt::Done(Sent::Acked(Some(p.base_offset))),
            DUPLICATE_SEQUENCE_NUMBER if self.spec.idempotent => Attempt::Done(Sent::Acked(None)),
            code if RETRIABLE.contains(&code) => Attempt::Retry(error()),
            // Everything else fails the send. For the idempotent producer that includes
            // OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH and UNKNOWN_PRODUCER_ID:
            // `run` then bumps the epoch before the next send.
            _ => Attempt::Done(Sent::Failed(error())),
        }
    }

    /// Gets a producer id, or with `bump` a new epoch of the current one (KIP-360, v3+;
    /// a fresh id where the broker cannot bump). Every partition's sequence starts over.
    async fn init_id(&mut self, bump: bool) -> Result<()> {
        let deadline = Instant::now() + SEND_DEADLINE;
        let can_bump = self.client.version::<InitProducerIdRequest>()? >= 3;
        let mut current = self.id.filter(|_| bump && can_bump);
        let mut last_error = String::new();
        for attempt in 0u32.. {
            if attempt > 0 {
                let pause = backoff(attempt);
                if Instant::now() + pause >= deadline {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            let (id, epoch) = current.unwrap_or((-1, -1));
            let req = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch);
            let resp = match self.client.send(&req).await {
                Ok(r) => r,
                Err(e) => {
                    last_error = format!("{e:#}");
                    continue;
                }
            };
            match resp.error_code {
                0 => {
                    tracing::info!(producer = %self.name, id = *resp.producer_id, epoch = resp.producer_epoch, "producer id");
                    self.id = Some((*resp.producer_id, resp.producer_epoch));
                    self.sequences.clear();
                    self.rec.info(format!(
                        "producer {} has producer id {} epoch {}",
                        self.name, *resp.producer_id, resp.producer_epoch
                    ));
                    return Ok(());
                }
                code if INIT_RETRIABLE.contains(&code) || RETRIABLE.contains(&code) => {
                    last_error = error_text(code, None);
                }
                code if current.is_some() => {
                    // The broker would not bump this id: start over with a fresh one.
                    tracing::info!(producer = %self.name, error = %error_text(code, None), "epoch bump refused; asking for a new producer id");
                    current = None;
                }
                code => bail!("InitProducerId: {}", error_text(code, None)),
            }
        }
        Err(anyhow!("InitProducerId kept failing: {last_error}"))
    }
}

/// The `Send` event of a send its producer never finished (the run aborted it).
pub fn unknown(
    p: Pending,
    producer: &str,
    spec: Spec,
    topic: &str,
    t_ms: Millis,
) -> strom_verify::history::Event {
    Event::Send {
        invoked_ms: p.invoked_ms,
        t_ms,
        producer: producer.to_owned(),
        mode: spec.mode,
        topic: topic.to_owned(),
        partition: p.partition,
        value: p.value,
        outcome: SendOutcome::Unknown,
        offset: None,
        error: Some("still outstanding when the run ended".into()),
    }
}
