//! The history format: one JSON object per line, one [`Event`] each. Every workload (the
//! Jepsen-style suite's stock clients, `strom verify`'s own producers and readers) writes it,
//! and one checker reads it.
//!
//! Values are unique across a run: `<producer>-<n>` where `producer` names the process that
//! sent it and `n` counts that producer's sends, so every value read traces back to the one
//! operation that sent it.

use serde::{Deserialize, Serialize};

/// Milliseconds since the start of the run (the workload's clock, never a node's).
pub type Millis = u64;

/// The delivery contract a producer was configured with; the checker holds each send to its
/// own contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `acks=all`, `enable.idempotence=true`: no loss, no duplicate, per-partition order.
    IdempotentAll,
    /// `acks=all` without idempotence: no loss; retries may duplicate (and, with more than one
    /// request in flight, reorder).
    All,
    /// `acks=1`: an acknowledged write may be lost when its leader fails before a follower
    /// copied it, but nothing that any reader saw may vanish.
    One,
    /// Transactional producer (exactly-once); reserved for the transactional workload.
    Transactional,
}

/// How a send ended, from the producer's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendOutcome {
    /// Acknowledged, at `offset`.
    Ok,
    /// The client reported an error: the write may or may not have happened (Kafka errors
    /// after a send are indeterminate), so it may be read but need not be.
    Fail,
    /// The run ended before the client reported anything (indeterminate too).
    Unknown,
    /// Definitely not visible: an aborted transaction's write (transactional workload).
    Aborted,
}

/// How a reader chose its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderKind {
    /// `assign()` on fixed partitions, reading forward from where it started: no skips, no
    /// going back.
    Assign,
    /// A consumer-group member (`subscribe()`): may skip or re-read across rebalances, never
    /// within one generation.
    Group,
}

/// Whether a fault window opens or closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    End,
}

/// One record as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// The producer that wrote one stored batch, as its header says (`producer_id` -1: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    pub base_offset: i64,
    pub last_offset: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Writer {
    /// The sequence number of the record at `offset` within this batch.
    pub fn sequence_at(&self, offset: i64) -> i64 {
        i64::from(self.base_sequence) + (offset - self.base_offset)
    }
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A produce, recorded once when it completed (or when the run gave up on it).
    Send {
        /// When the client was asked to send it.
        invoked_ms: Millis,
        /// When its outcome was known.
        t_ms: Millis,
        producer: String,
        mode: Mode,
        topic: String,
        partition: i32,
        value: String,
        outcome: SendOutcome,
        /// The acknowledged offset (`outcome == Ok` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The records one poll returned to one reader, in delivery order.
    Poll {
        t_ms: Millis,
        consumer: String,
        kind: ReaderKind,
        topic: String,
        /// Group members: the member id and generation the records were delivered under.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<i32>,
        records: Vec<Read>,
    },
    /// A reader (re)started or repositioned on purpose (a new process, a seek after an
    /// out-of-range error): its next poll of `partition` may legitimately start anywhere at or
    /// above `offset` without counting as a skip or as going backwards.
    Seek {
        t_ms: Millis,
        consumer: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A group member received an assignment (after SyncGroup).
    Assignment {
        t_ms: Millis,
        consumer: String,
        group: String,
        member: String,
        generation: i32,
        topic: String,
        partitions: Vec<i32>,
    },
    /// An offset commit and its result.
    Commit {
        invoked_ms: Millis,
        t_ms: Millis,
        consumer: String,
        group: String,
        member: String,
        generation: i32,
        topic: String,
        /// (partition, next offset to read).
        offsets: Vec<(i32, i64)>,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A group member began reading `partition` at `offset` (the group's committed offset,
    /// or the reset position when nothing was committed).
    Position {
        t_ms: Millis,
        consumer: String,
        group: String,
        member: String,
        generation: i32,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A partition's log start and high watermark as its leader reported them (ListOffsets
    /// earliest and latest).
    Watermarks {
        t_ms: Millis,
        topic: String,
        partition: i32,
        /// The node that answered.
        node: i32,
        log_start: i64,
        high_watermark: i64,
    },
    /// A fault window opening or closing.
    Nemesis {
        t_ms: Millis,
        fault: String,
        /// What it hit, e.g. `n2`, `n1,n3|n2`.
        target: String,
        phase: Phase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// After healing: everything a partition holds from its log start to its high watermark,
    /// read once more by a fresh reader.
    Final {
        t_ms: Millis,
        topic: String,
        partition: i32,
        log_start: i64,
        high_watermark: i64,
        records: Vec<(i64, String)>,
    },
    /// A replica's files once the cluster healed and caught up (read from disk with the node
    /// stopped or quiescent).
    Replica {
        t_ms: Millis,
        node: i32,
        topic: String,
        partition: i32,
        log_start: i64,
        log_end: i64,
        /// Digest of the record batches from `digest_from` to `log_end` exactly as stored
        /// (leader epochs included).
        digest: String,
        digest_from: i64,
        /// The leader-epoch checkpoint: (epoch, start offset).
        epochs: Vec<(i32, i64)>,
        records: Vec<(i64, String)>,
        /// The producer of every stored data batch with one, in offset order: tells a
        /// duplicate the broker failed to drop (one producer epoch) from a client's re-send
        /// under a new epoch.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        writers: Vec<Writer>,
    },
    /// Free-form note from the harness (start, seed, configuration): ignored by the checker.
    Info { t_ms: Millis, message: String },
}

impl Event {
    /// When the event happened (its completion, for operations).
    pub fn t_ms(&self) -> Millis {
        match self {
            Event::Send { t_ms, .. }
            | Event::Poll { t_ms, .. }
            | Event::Seek { t_ms, .. }
            | Event::Assignment { t_ms, .. }
            | Event::Commit { t_ms, .. }
            | Event::Position { t_ms, .. }
            | Event::Watermarks { t_ms, .. }
            | Event::Nemesis { t_ms, .. }
            | Event::Final { t_ms, .. }
            | Event::Replica { t_ms, .. }
            | Event::Info { t_ms, .. } => *t_ms,
        }
    }
}

/// Parses a JSON-lines history; a line that does not parse is an error naming its number.
pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("history line {}: {e}", i + 1)))
        .collect()
}

/// One event as its history line (no trailing newline).
pub fn line(e: &Event) -> String {
    // Serialising these plain structs cannot fail.
    serde_json::to_string(e).unwrap_or_default()
}
