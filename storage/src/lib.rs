//! Strom's log store: per partition, a directory of segments holding record batches exactly as
//! the producer sent them (only base offset and leader epoch are rewritten), with a sparse
//! offset index and a time index that are memory-mapped.
//!
//! This layer owns files: appending, reading ranges of batches back, rolling and deleting
//! segments, coalescing flushes (group commit) and recovering after a crash, all of it on the
//! threads of [`io`], never on an async worker. It knows record
//! batches only through `strom-protocol`'s header view and never decompresses on the hot path.

pub mod checkpoint;
pub mod config;
pub mod epochs;
pub mod error;
pub mod index;
pub mod io;
pub mod log;
pub mod producer_state;
pub mod segment;

pub use checkpoint::write_atomic;
pub use config::{LogConfig, TimestampType};
pub use error::StorageError;
pub use io::DirIo;
pub use log::{AppendResult, Log, ReadResult};
pub use producer_state::SequenceError;
