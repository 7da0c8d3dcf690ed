//! Storage errors. The broker maps each to a Kafka error code in one place.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk failed us (EIO, ENOSPC, …); surfaces as KAFKA_STORAGE_ERROR.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A previous write failed and could not be undone; the log refuses writes until restart.
    #[error("log {0} is offline after an earlier storage error")]
    Offline(String),
    /// The requested offset is outside `[log_start_offset, high_watermark]`.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// Stored bytes failed their checks while being read.
    #[error("corrupt data in {path} at position {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// An idempotent producer's batch is out of sequence, fenced or unknown.
    #[error(transparent)]
    Sequence(#[from] crate::producer_state::SequenceError),
    /// The batches handed to `append` are not well-formed; the broker validates first, so
    /// this is a bug upstream, reported rather than written.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
}

/// Attaches the file path to an io::Error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
