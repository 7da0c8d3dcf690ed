//! The leader-epoch cache of a partition (Kafka's `leader-epoch-checkpoint`): for each leader
//! epoch, the first offset written in it. A returning follower asks the leader where its last
//! epoch ended and truncates anything after that (KIP-101, KIP-279).

use std::path::Path;

use crate::checkpoint::write_atomic;
use crate::error::StorageError;

pub const FILE_NAME: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// Reads Kafka's format: a version line (0), a count line, then `epoch offset` lines.
    pub fn read(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap_or_default();
        let mut lines = text.lines().skip(2);
        let mut entries: Vec<(i32, i64)> = Vec::new();
        for line in lines.by_ref() {
            let mut parts = line.split_whitespace();
            let (Some(Ok(e)), Some(Ok(o))) = (
                parts.next().map(str::parse::<i32>),
                parts.next().map(str::parse::<i64>),
            ) else {
                break;
            };
            if entries.last().is_some_and(|(le, lo)| e <= *le || o < *lo) {
                break;
            }
            entries.push((e, o));
        }
        Self { entries }
    }

    pub fn write(&self, dir: &Path) -> Result<(), StorageError> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            text.push_str(&format!("{e} {o}\n"));
        }
        write_atomic(&dir.join(FILE_NAME), text.as_bytes())
    }

    pub fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `offset`; returns whether anything changed. Older
    /// epochs are ignored; a newer epoch starting at the same offset replaces an empty one.
    pub fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some((e, _)) if *e >= epoch => false,
            _ => {
                self.entries.retain(|(_, o)| *o < offset);
                self.entries.push((epoch, offset));
                true
            }
        }
    }

    /// For OffsetForLeaderEpoch: the largest epoch <= `epoch` and the offset where it ended
    /// (the start of the next epoch, or `log_end` for the latest). `(-1, -1)` when `epoch`
    /// precedes everything known.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let Some(i) = self.entries.iter().rposition(|(e, _)| *e <= epoch) else {
            return (-1, -1);
        };
        let found = self.entries[i].0;
        let end = self.entries.get(i + 1).map_or(log_end, |(_, o)| *o);
        (found, end)
    }

    /// Forgets epochs that start at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, o)| *o < offset);
        before != self.entries.len()
    }

    /// The epoch of the record at `offset`, if known.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|(_, o)| *o <= offset)
            .map(|(e, _)| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kip_101() {
        let mut c = EpochCache::default();
        assert!(c.assign(0, 0));
        assert!(c.assign(2, 100));
        assert!(!c.assign(1, 150));
        assert_eq!(c.end_offset_for(0, 300), (0, 100));
        assert_eq!(c.end_offset_for(1, 300), (0, 100));
        assert_eq!(c.end_offset_for(2, 300), (2, 300));
        assert_eq!(c.end_offset_for(7, 300), (2, 300));
        assert_eq!(c.epoch_at(99), Some(0));
        assert!(c.truncate_from(100));
        assert_eq!(c.latest(), Some((0, 0)));
    }

    #[test]
    fn survives_a_round_trip_and_ignores_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::default();
        c.assign(3, 10);
        c.assign(5, 20);
        c.write(dir.path()).unwrap();
        assert_eq!(EpochCache::read(dir.path()), c);
        std::fs::write(dir.path().join(FILE_NAME), "0\n2\n3 10\nbogus\n").unwrap();
        assert_eq!(EpochCache::read(dir.path()).latest(), Some((3, 10)));
    }
}
