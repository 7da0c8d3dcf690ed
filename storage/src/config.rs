//! The per-partition settings the log store honours, already resolved from topic overrides and
//! broker defaults by the broker.

use strom_protocol::codec::Codec;

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Settings of one partition log. Defaults are Kafka's.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is older than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is larger; -1 is unbounded.
    pub retention_bytes: i64,
    /// `segment.index.bytes`: preallocated size of each index file.
    pub segment_index_bytes: u32,
    /// `index.interval.bytes`: bytes of log between two offset-index entries.
    pub index_interval_bytes: u32,
    /// `flush.messages`: fsync once this many messages are unflushed (producers wait for it).
    pub flush_messages: i64,
    /// `flush.ms`: fsync data older than this in the background.
    pub flush_ms: i64,
    /// Strom's `log.flush.acks.all`: acks=all produce requests wait for an fsync that covers
    /// them; flushes are coalesced so that concurrent producers share one.
    pub flush_on_acks_all: bool,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: i32,
    /// `compression.type`: `None` keeps the producer's codec.
    pub compression: Option<Codec>,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `cleanup.policy` contains `delete`: time and size retention apply.
    pub delete_retention: bool,
    /// `min.insync.replicas`: acks=all writes need an ISR at least this large.
    pub min_insync_replicas: i32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            flush_on_acks_all: true,
            max_message_bytes: 1_048_588,
            compression: None,
            timestamp_type: TimestampType::CreateTime,
            delete_retention: true,
            min_insync_replicas: 1,
        }
    }
}
