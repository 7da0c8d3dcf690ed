//! Memory-mapped sparse indexes of a segment, as Kafka lays them out:
//! - offset index (`.index`): 8-byte entries `relative offset u32 | file position u32`;
//! - time index (`.timeindex`): 12-byte entries `timestamp i64 | relative offset u32`.
//!
//! Both are preallocated to `segment.index.bytes` while their segment is active and trimmed to
//! their entries when it rolls or the log closes, so a clean file's length tells its entry
//! count. Keys grow monotonically, so lookups are binary searches.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{IoContext, StorageError};

/// One mmapped file of fixed-size entries, ordered by a monotonic key.
struct IndexFile {
    path: PathBuf,
    file: File,
    /// `None` while the file has zero length (mapping an empty file fails).
    mmap: Option<MmapMut>,
    entry_size: usize,
    entries: usize,
    max_entries: usize,
}

impl IndexFile {
    /// Opens or creates the file; `entries` is how many leading entries are valid, or `None` to
    /// derive it from the file length (a trimmed, cleanly closed file).
    fn open(
        path: PathBuf,
        entry_size: usize,
        max_bytes: u32,
        entries: Option<usize>,
    ) -> Result<Self, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let len = file.metadata().at(&path)?.len() as usize;
        let max_entries = (max_bytes as usize / entry_size).max(1);
        // A trimmed file is mapped as it is, sealed: growing it here would leave it padded
        // with zeros after a crash, and the next start would have to rebuild it.
        let (entries, max_entries) = match entries {
            Some(n) => (n.min(max_entries), max_entries),
            None => {
                let n = (len / entry_size).min(max_entries);
                (n, n)
            }
        };
        let mut index = Self {
            path,
            file,
            mmap: None,
            entry_size,
            entries,
            max_entries,
        };
        index.remap(max_entries * entry_size)?;
        Ok(index)
    }

    fn remap(&mut self, bytes: usize) -> Result<(), StorageError> {
        self.mmap = None;
        self.file.set_len(bytes as u64).at(&self.path)?;
        if bytes > 0 {
            // SAFETY: the file is private to this segment and only this process writes it;
            // nothing truncates it while the map is alive (we drop the map before set_len).
            let map = unsafe { MmapMut::map_mut(&self.file) }.at(&self.path)?;
            self.mmap = Some(map);
        }
        Ok(())
    }

    fn entry(&self, i: usize) -> &[u8] {
        match &self.mmap {
            Some(m) => &m[i * self.entry_size..(i + 1) * self.entry_size],
            None => &[],
        }
    }

    fn is_full(&self) -> bool {
        self.entries >= self.max_entries
    }

    fn push(&mut self, bytes: &[u8]) -> bool {
        if self.is_full() {
            return false;
        }
        let at = self.entries * self.entry_size;
        if let Some(m) = self.mmap.as_mut() {
            m[at..at + bytes.len()].copy_from_slice(bytes);
            self.entries += 1;
            return true;
        }
        false
    }

    /// Index of the last entry whose key is <= `target`, by binary search.
    fn floor(&self, target: i64, key: impl Fn(&[u8]) -> i64) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if key(self.entry(mid)) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    fn truncate_entries(&mut self, n: usize) {
        self.entries = self.entries.min(n);
    }

    /// Shrinks the file to its entries (segment no longer active); appends are refused after.
    fn trim(&mut self) -> Result<(), StorageError> {
        if let Some(m) = &self.mmap {
            m.flush().at(&self.path)?;
        }
        self.max_entries = self.entries.max(1);
        self.remap(self.entries * self.entry_size)?;
        self.max_entries = self.entries;
        Ok(())
    }

    /// Grows the file back to its preallocated size so the segment can take appends again.
    fn reopen_for_append(&mut self, max_bytes: u32) -> Result<(), StorageError> {
        self.max_entries = (max_bytes as usize / self.entry_size).max(1);
        self.remap(self.max_entries * self.entry_size)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

/// Offset → file position, for the batch that starts at the indexed offset.
pub struct OffsetIndex {
    base_offset: i64,
    inner: IndexFile,
}

impl OffsetIndex {
    pub fn open(
        path: &Path,
        base_offset: i64,
        max_bytes: u32,
        entries: Option<usize>,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            base_offset,
            inner: IndexFile::open(path.to_path_buf(), 8, max_bytes, entries)?,
        })
    }

    pub fn entries(&self) -> usize {
        self.inner.entries
    }

    pub fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    fn decode(&self, e: &[u8]) -> (i64, u32) {
        (self.base_offset + i64::from(be_u32(e)), be_u32(&e[4..]))
    }

    /// Records that the batch starting at `offset` begins at byte `position`.
    pub fn append(&mut self, offset: i64, position: u32) -> bool {
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.inner.push(&e)
    }

    /// The last indexed (offset, position) at or before `target`; the segment start otherwise.
    pub fn lookup(&self, target: i64) -> (i64, u32) {
        let base = self.base_offset;
        match self.inner.floor(target, |e| base + i64::from(be_u32(e))) {
            Some(i) => self.decode(self.inner.entry(i)),
            None => (self.base_offset, 0),
        }
    }

    /// Drops entries for offsets >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) {
        let keep = match self
            .inner
            .floor(offset - 1, |e| self.base_offset + i64::from(be_u32(e)))
        {
            Some(i) => i + 1,
            None => 0,
        };
        self.inner.truncate_entries(keep);
    }

    /// Checks that entries grow strictly and stay inside the log file; a cheap sanity check for
    /// indexes of cleanly closed segments.
    pub fn is_sane(&self, log_len: u64) -> bool {
        let mut prev: Option<(i64, u32)> = None;
        for i in 0..self.inner.entries {
            let (o, p) = self.decode(self.inner.entry(i));
            if u64::from(p) >= log_len.max(1) || prev.is_some_and(|(po, pp)| o <= po || p <= pp) {
                return false;
            }
            prev = Some((o, p));
        }
        true
    }

    pub fn reset(&mut self) {
        self.inner.truncate_entries(0);
    }

    pub fn trim(&mut self) -> Result<(), StorageError> {
        self.inner.trim()
    }

    pub fn reopen_for_append(&mut self, max_bytes: u32) -> Result<(), StorageError> {
        self.inner.reopen_for_append(max_bytes)
    }
}

/// Timestamp → offset: each entry is the largest timestamp seen so far and the offset of the
/// batch that carried it.
pub struct TimeIndex {
    base_offset: i64,
    inner: IndexFile,
}

impl TimeIndex {
    pub fn open(
        path: &Path,
        base_offset: i64,
        max_bytes: u32,
        entries: Option<usize>,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            base_offset,
            inner: IndexFile::open(path.to_path_buf(), 12, max_bytes, entries)?,
        })
    }

    fn decode(&self, e: &[u8]) -> (i64, i64) {
        (be_i64(e), self.base_offset + i64::from(be_u32(&e[8..])))
    }

    pub fn last(&self) -> Option<(i64, i64)> {
        self.inner
            .entries
            .checked_sub(1)
            .map(|i| self.decode(self.inner.entry(i)))
    }

    pub fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    /// Appends (timestamp, offset) if the timestamp grows the index.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> bool {
        if self.last().is_some_and(|(ts, _)| ts >= timestamp) {
            return false;
        }
        let mut e = [0u8; 12];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        self.inner.push(&e)
    }

    /// The offset of the last entry whose timestamp is <= `target`: scanning for `target` may
    /// start there. `None` means "from the segment start".
    pub fn lookup(&self, target: i64) -> Option<i64> {
        self.inner
            .floor(target, be_i64)
            .map(|i| self.decode(self.inner.entry(i)).1)
    }

    pub fn truncate_to(&mut self, offset: i64) {
        let mut keep = self.inner.entries;
        while keep > 0 && self.decode(self.inner.entry(keep - 1)).1 >= offset {
            keep -= 1;
        }
        self.inner.truncate_entries(keep);
    }

    pub fn is_sane(&self, next_offset: i64) -> bool {
        let mut prev: Option<(i64, i64)> = None;
        for i in 0..self.inner.entries {
            let (t, o) = self.decode(self.inner.entry(i));
            if o >= next_offset.max(self.base_offset + 1)
                || prev.is_some_and(|(pt, po)| t <= pt || o < po)
            {
                return false;
            }
            prev = Some((t, o));
        }
        true
    }

    pub fn reset(&mut self) {
        self.inner.truncate_entries(0);
    }

    pub fn trim(&mut self) -> Result<(), StorageError> {
        self.inner.trim()
    }

    pub fn reopen_for_append(&mut self, max_bytes: u32) -> Result<(), StorageError> {
        self.inner.reopen_for_append(max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_truncate_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::open(&path, 100, 80, Some(0)).expect("open");
        assert_eq!(idx.lookup(150), (100, 0));
        for i in 0..10 {
            assert!(idx.append(100 + i * 10, (i * 1000) as u32 + 1));
        }
        assert!(idx.is_full());
        assert!(!idx.append(300, 99_999));
        assert_eq!(idx.lookup(99), (100, 0));
        assert_eq!(idx.lookup(135), (130, 3001));
        assert_eq!(idx.lookup(10_000), (190, 9001));
        idx.truncate_to(150);
        assert_eq!(idx.entries(), 5);
        assert_eq!(idx.lookup(10_000), (140, 4001));
        idx.trim().expect("trim");
        drop(idx);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 40);
        let mut idx = OffsetIndex::open(&path, 100, 80, None).expect("reopen");
        assert_eq!(idx.entries(), 5);
        assert!(idx.is_sane(10_000));
        assert!(!idx.is_sane(10));
        // A trimmed index opens sealed, at its length (a crash cannot leave it zero-padded),
        // until the segment takes appends again.
        assert!(!idx.append(200, 50_000));
        drop(idx);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 40);
        let mut idx = OffsetIndex::open(&path, 100, 80, None).expect("reopen");
        idx.reopen_for_append(80).expect("grow");
        assert!(idx.append(200, 50_000));
        assert_eq!(idx.lookup(10_000), (200, 50_000));
    }

    #[test]
    fn time_index_is_monotonic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx =
            TimeIndex::open(&dir.path().join("0.timeindex"), 0, 1200, Some(0)).expect("open");
        assert!(idx.maybe_append(10, 0));
        assert!(!idx.maybe_append(5, 3));
        assert!(idx.maybe_append(20, 5));
        assert_eq!(idx.lookup(9), None);
        assert_eq!(idx.lookup(15), Some(0));
        assert_eq!(idx.lookup(25), Some(5));
        assert_eq!(idx.last(), Some((20, 5)));
        idx.truncate_to(5);
        assert_eq!(idx.last(), Some((10, 0)));
    }
}
