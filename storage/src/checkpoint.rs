//! The small per-partition checkpoint file: where the log starts (moved by DeleteRecords and
//! retention) and up to which offset data is known to be flushed (the recovery point: after a
//! crash, only segments from there on are scanned).

use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, StorageError};

pub const FILE_NAME: &str = "strom.checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub log_start_offset: i64,
    pub recovery_point: i64,
}

/// Reads the checkpoint; a missing or unreadable file means "start of log, recover all".
pub fn read(dir: &Path) -> Checkpoint {
    let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap_or_default();
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(a), Some(b)) => Checkpoint {
            log_start_offset: a.parse().unwrap_or(0),
            recovery_point: b.parse().unwrap_or(0),
        },
        _ => Checkpoint::default(),
    }
}

/// Writes the checkpoint atomically.
pub fn write(dir: &Path, cp: Checkpoint) -> Result<(), StorageError> {
    let text = format!("v1 {} {}\n", cp.log_start_offset, cp.recovery_point);
    write_atomic(&dir.join(FILE_NAME), text.as_bytes())
}

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file:
/// write a temporary file, fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StorageError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::File::create(&tmp).at(&tmp)?;
    f.write_all(contents).at(&tmp)?;
    f.sync_data().at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), Checkpoint::default());
        let cp = Checkpoint {
            log_start_offset: 5,
            recovery_point: 77,
        };
        write(dir.path(), cp).expect("write");
        assert_eq!(read(dir.path()), cp);
    }
}
