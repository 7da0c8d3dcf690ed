//! One segment: a `.log` file of record batches starting at `base_offset`, with its offset and
//! time indexes. File names are the base offset zero-padded to 20 digits, as in Kafka.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use strom_protocol::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

use crate::config::LogConfig;
use crate::error::{IoContext, StorageError};
use crate::index::{OffsetIndex, TimeIndex};

pub fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
fn index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
fn time_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Opens (or creates) a segment's two indexes; `entries` as in [`OffsetIndex::open`].
fn open_indexes(
    dir: &Path,
    base: i64,
    cfg: &LogConfig,
    entries: Option<usize>,
) -> Result<(OffsetIndex, TimeIndex), StorageError> {
    let offsets = OffsetIndex::open(
        &index_path(dir, base),
        base,
        cfg.segment_index_bytes,
        entries,
    )?;
    let times = TimeIndex::open(
        &time_index_path(dir, base),
        base,
        cfg.segment_index_bytes,
        entries,
    )?;
    Ok((offsets, times))
}

/// Base offsets of the segments in `dir`, from their `.log` file names, sorted.
pub fn list(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let name = entry.at(dir)?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// What a recovery scan found at the end of a segment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryOutcome {
    pub valid_bytes: u64,
    pub truncated_bytes: u64,
}

pub struct Segment {
    pub base_offset: i64,
    path: PathBuf,
    /// Shared so readers can `pread` without holding the partition lock.
    file: Arc<File>,
    /// Bytes of valid batches; the next append goes here.
    size: u64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index: u64,
    /// Largest record timestamp in the segment (-1 when none), for retention and ListOffsets.
    max_timestamp: i64,
    /// Base offset of the batch that carried `max_timestamp`.
    offset_of_max_timestamp: i64,
    /// One past the last offset stored here.
    next_offset: i64,
    /// Max timestamp of the first batch: `segment.ms` counts from it, as in Kafka.
    first_batch_timestamp: Option<i64>,
    /// `index.interval.bytes` at open time.
    index_interval: u32,
}

impl Segment {
    /// A segment over opened files, with bookkeeping not yet derived from its batches.
    fn assemble(
        base: i64,
        path: PathBuf,
        file: File,
        size: u64,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
        cfg: &LogConfig,
    ) -> Self {
        Self {
            base_offset: base,
            file: Arc::new(file),
            size,
            offset_index,
            time_index,
            path,
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            next_offset: base,
            first_batch_timestamp: None,
            index_interval: cfg.index_interval_bytes,
        }
    }

    pub fn create(dir: &Path, base: i64, cfg: &LogConfig) -> Result<Self, StorageError> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .at(&path)?;
        let (offset_index, time_index) = open_indexes(dir, base, cfg, Some(0))?;
        Ok(Self::assemble(
            base,
            path,
            file,
            0,
            offset_index,
            time_index,
            cfg,
        ))
    }

    fn open_files(dir: &Path, base: i64) -> Result<(PathBuf, File, u64), StorageError> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        let size = file.metadata().at(&path)?.len();
        Ok((path, file, size))
    }

    /// Opens a segment that was closed cleanly: its indexes are trusted after a sanity check
    /// (and rebuilt if they fail it); only the tail after the last index entry is read to find
    /// the next offset.
    pub fn open_clean(dir: &Path, base: i64, cfg: &LogConfig) -> Result<Self, StorageError> {
        let (path, file, size) = Self::open_files(dir, base)?;
        let (offset_index, time_index) = open_indexes(dir, base, cfg, None)?;
        let mut seg = Self::assemble(base, path, file, size, offset_index, time_index, cfg);
        if !seg.offset_index.is_sane(size) {
            tracing::warn!(segment = %seg.path.display(), "offset index failed its sanity check; rebuilding");
            return Self::recover(dir, base, cfg).map(|(s, _)| s);
        }
        // Walk from the last indexed batch to the end to learn the next offset.
        let (mut offset, mut pos) = seg.offset_index.lookup(i64::MAX);
        let mut last_max_ts = None;
        while u64::from(pos) < size {
            let h = seg.header_at(u64::from(pos))?;
            offset = h.last_offset() + 1;
            last_max_ts = Some((h.max_timestamp, h.base_offset));
            pos += h.total_len() as u32;
        }
        seg.next_offset = offset;
        if let Some((ts, off)) = seg.time_index.last() {
            seg.max_timestamp = ts;
            seg.offset_of_max_timestamp = off;
        }
        if let Some((ts, off)) = last_max_ts {
            if ts > seg.max_timestamp {
                seg.max_timestamp = ts;
                seg.offset_of_max_timestamp = off;
            }
        }
        if !seg.time_index.is_sane(seg.next_offset) {
            tracing::warn!(segment = %seg.path.display(), "time index failed its sanity check; rebuilding");
            return Self::recover(dir, base, cfg).map(|(s, _)| s);
        }
        if size > 0 {
            seg.first_batch_timestamp = Some(seg.header_at(0)?.max_timestamp);
        }
        Ok(seg)
    }

    /// Opens a segment after an unclean shutdown: every batch is re-read and its CRC checked,
    /// both indexes are rebuilt, and the file is truncated at the first batch that is torn or
    /// corrupt (everything after it was never acknowledged as flushed).
    pub fn recover(
        dir: &Path,
        base: i64,
        cfg: &LogConfig,
    ) -> Result<(Self, RecoveryOutcome), StorageError> {
        Self::recover_after(dir, base, cfg, i64::MIN)
    }

    /// Like [`Segment::recover`], but batches wholly below `flushed` (the recovery point:
    /// fsynced before the crash) are only walked header by header to rebuild the indexes;
    /// their contents are not re-read. Everything from the recovery point on is verified.
    pub fn recover_after(
        dir: &Path,
        base: i64,
        cfg: &LogConfig,
        flushed: i64,
    ) -> Result<(Self, RecoveryOutcome), StorageError> {
        let (path, file, size) = Self::open_files(dir, base)?;
        let (offset_index, time_index) = open_indexes(dir, base, cfg, Some(0))?;
        let mut seg = Self::assemble(base, path, file, 0, offset_index, time_index, cfg);
        let file = seg.file.clone();
        let mut pos = 0u64;
        while pos + HEADER_LEN as u64 <= size {
            // Anything odd is left to the verifying pass below, which truncates if it must.
            let Ok(h) = seg.header_at(pos) else {
                break;
            };
            let total = h.total_len() as u64;
            if h.last_offset() >= flushed
                || pos + total > size
                || h.base_offset < seg.next_offset
                || total < HEADER_LEN as u64
            {
                break;
            }
            seg.index_batch(&h, pos as u32);
            pos += total;
            seg.size = pos;
        }
        let mut reader = BufReader::with_capacity(1 << 20, file.as_ref());
        reader.seek(SeekFrom::Start(pos)).at(&seg.path)?;
        let mut buf = Vec::new();
        let stop_reason: Option<String> = loop {
            if pos == size {
                break None;
            }
            buf.resize(LOG_OVERHEAD, 0);
            if let Err(e) = reader.read_exact(&mut buf) {
                break Some(format!("short batch header: {e}"));
            }
            let total = match batch::peek_offset_and_size(&buf) {
                Ok((_, total)) if pos + total as u64 <= size => total,
                Ok((_, total)) => break Some(format!("batch of {total} bytes runs past the end")),
                Err(e) => break Some(e.to_string()),
            };
            buf.resize(total, 0);
            if let Err(e) = reader.read_exact(&mut buf[LOG_OVERHEAD..]) {
                break Some(format!("short batch: {e}"));
            }
            let h = match batch::verify_stored(&buf) {
                Ok(h) => h,
                Err(e) => break Some(e.to_string()),
            };
            if h.base_offset < seg.next_offset {
                break Some(format!(
                    "batch offset {} goes backwards (expected >= {})",
                    h.base_offset, seg.next_offset
                ));
            }
            seg.index_batch(&h, pos as u32);
            pos += total as u64;
            seg.size = pos;
        };
        let outcome = RecoveryOutcome {
            valid_bytes: pos,
            truncated_bytes: size - pos,
        };
        if let Some(reason) = stop_reason {
            tracing::warn!(
                segment = %seg.path.display(),
                position = pos,
                dropped_bytes = size - pos,
                %reason,
                "truncating torn or corrupt tail during recovery"
            );
            seg.file.set_len(pos).at(&seg.path)?;
            seg.file.sync_all().at(&seg.path)?;
        }
        Ok((seg, outcome))
    }

    /// Updates in-memory bookkeeping and the indexes for a batch now stored at `pos`.
    fn index_batch(&mut self, h: &BatchHeader, pos: u32) {
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(h.max_timestamp);
        }
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.base_offset;
        }
        if self.size == 0 || self.bytes_since_index >= u64::from(self.index_interval) {
            // Index full only means a roll is due; the data itself is already written.
            if self.offset_index.append(h.base_offset, pos) {
                self.time_index
                    .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_len() as u64;
        self.next_offset = h.last_offset() + 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }

    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest timestamp for retention: the largest record timestamp, or the file's
    /// modification time when records carry none.
    pub fn retention_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// Whether appending `len` bytes now would break a roll rule.
    pub fn should_roll(&self, len: usize, first_max_ts: i64, cfg: &LogConfig) -> bool {
        if self.size == 0 {
            return false;
        }
        let too_big = self.size + len as u64 > cfg.segment_bytes;
        // As in Kafka, age is measured in record time: the incoming batch's timestamp against
        // the first batch's, so a replay of old data does not roll on every append.
        let too_old = self
            .first_batch_timestamp
            .is_some_and(|t| first_max_ts - t > cfg.segment_ms);
        // Relative offsets and positions are u32 in the indexes.
        let overflow = self.size + len as u64 > u64::from(u32::MAX)
            || self.next_offset - self.base_offset > i64::from(u32::MAX) - 1_000_000;
        too_big || too_old || overflow || self.offset_index.is_full() || self.time_index.is_full()
    }

    /// Appends already-offset-assigned batches; on a write error the file is cut back to its
    /// previous size so no half batch is ever served.
    pub fn append(
        &mut self,
        data: &[u8],
        headers: &[(BatchHeader, usize)],
    ) -> Result<(), StorageError> {
        self.append_parts(&[data], data.len(), headers)
    }

    /// Like [`Segment::append`], for batches given as consecutive slices (`len` bytes in
    /// all), written with one positional vectored write per round.
    pub fn append_parts(
        &mut self,
        parts: &[&[u8]],
        len: usize,
        headers: &[(BatchHeader, usize)],
    ) -> Result<(), StorageError> {
        if let Err(e) = pwritev_all(&self.file, parts, self.size) {
            if let Err(undo) = self.file.set_len(self.size) {
                tracing::error!(segment = %self.path.display(), error = %undo, "could not undo a failed append");
                return Err(StorageError::Offline(self.path.display().to_string()));
            }
            return Err(StorageError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        let start = self.size;
        for (h, at) in headers {
            let pos = start + *at as u64;
            self.size = pos;
            self.index_batch(h, pos as u32);
        }
        self.size = start + len as u64;
        Ok(())
    }

    /// Reads and parses the batch header at byte `pos`.
    pub fn header_at(&self, pos: u64) -> Result<BatchHeader, StorageError> {
        let mut buf = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut buf, pos).at(&self.path)?;
        BatchHeader::parse(&buf).map_err(|e| StorageError::Corrupt {
            path: self.path.clone(),
            position: pos,
            reason: e.to_string(),
        })
    }

    /// Byte position of the first batch whose last offset is >= `offset`, or `None` when the
    /// segment holds no such batch below `limit` bytes.
    pub fn position_of(
        &self,
        offset: i64,
        limit: u64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let (_, pos) = self.offset_index.lookup(offset);
        let mut pos = u64::from(pos);
        while pos < limit {
            let h = self.header_at(pos)?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Seals the segment: a last time-index entry, and both indexes trimmed to their entries.
    pub fn roll_close(&mut self) -> Result<(), StorageError> {
        self.time_index
            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        self.seal_indexes()
    }

    /// Shrinks both indexes to their entries: the segment takes no more appends.
    pub fn seal_indexes(&mut self) -> Result<(), StorageError> {
        self.offset_index.trim()?;
        self.time_index.trim()
    }

    /// Makes the segment writable again after a clean open left its indexes trimmed.
    pub fn reopen_for_append(&mut self, cfg: &LogConfig) -> Result<(), StorageError> {
        self.offset_index
            .reopen_for_append(cfg.segment_index_bytes)?;
        self.time_index.reopen_for_append(cfg.segment_index_bytes)
    }

    /// Offset (and its batch timestamp scan start) for ListOffsets by time: where to start
    /// scanning for the first record with timestamp >= `ts`.
    pub fn time_lookup_start(&self, ts: i64) -> i64 {
        self.time_index.lookup(ts).unwrap_or(self.base_offset)
    }

    pub fn delete_files(&self, dir: &Path) {
        for p in [
            log_path(dir, self.base_offset),
            index_path(dir, self.base_offset),
            time_index_path(dir, self.base_offset),
        ] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %p.display(), error = %e, "could not delete segment file");
                }
            }
        }
    }
}

/// Reads `[start, end)` of a segment file into memory, keeping whole batches only. `max_bytes`
/// caps the result, except that the first batch is always returned whole when `min_one` is set
/// (KIP-74: a consumer must be able to make progress past a batch larger than its limit).
pub fn read_range(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    max_bytes: usize,
    min_one: bool,
) -> Result<Bytes, StorageError> {
    if end <= start {
        return Ok(Bytes::new());
    }
    let want = ((end - start) as usize).min(max_bytes.max(HEADER_LEN));
    let mut buf = pread_exact(file, want, start).at(path)?;
    let mut keep = 0usize;
    let mut iter = batch::BatchIter::new(&buf);
    for (_, range) in iter.by_ref() {
        keep = range.end;
    }
    if keep == 0 && min_one {
        // The first batch alone is larger than max_bytes: read exactly that batch.
        let h = BatchHeader::parse(&buf).map_err(|e| StorageError::Corrupt {
            path: path.to_path_buf(),
            position: start,
            reason: e.to_string(),
        })?;
        let total = (h.total_len() as u64).min(end - start) as usize;
        return Ok(Bytes::from(pread_exact(file, total, start).at(path)?));
    }
    buf.truncate(keep);
    Ok(Bytes::from(buf))
}

/// Reads exactly `len` bytes at `offset` into a new buffer that is not zero-filled first:
/// fetches read megabytes per request, and zeroing would be one more pass over them.
fn pread_exact(file: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let spare = &mut buf.spare_capacity_mut()[..len - done];
        // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf`, and the
        // descriptor belongs to `file`.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
                (offset + done as u64) as libc::off_t,
            )
        };
        let Some(n) = transferred(n)? else {
            continue;
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: pread initialised the next `n` bytes.
        unsafe { buf.set_len(done + n) };
    }
    Ok(buf)
}

/// Bytes a read or write system call moved, `None` when a signal interrupted it (retry).
fn transferred(n: isize) -> std::io::Result<Option<usize>> {
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::Interrupted {
        Ok(None)
    } else {
        Err(e)
    }
}

/// `pwritev` until every slice is written at `offset` onwards.
fn pwritev_all(file: &File, parts: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // IOV_MAX is 1024 on Linux; a produce request rarely has more than a few batches.
    let mut iov: Vec<libc::iovec> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    let mut start = 0usize;
    while start < iov.len() {
        let batch = &iov[start..iov.len().min(start + 1024)];
        // SAFETY: every iovec points into a live slice of `parts` for the duration of the
        // call, and the descriptor belongs to `file`.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                batch.as_ptr(),
                batch.len() as libc::c_int,
                offset as libc::off_t,
            )
        };
        let Some(n) = transferred(n)? else {
            continue;
        };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        offset += n as u64;
        let mut left = n;
        while left > 0 && start < iov.len() {
            let v = &mut iov[start];
            if left >= v.iov_len {
                left -= v.iov_len;
                start += 1;
            } else {
                // SAFETY: advancing within the same slice, `left` < its remaining length.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(left) } as *mut libc::c_void;
                v.iov_len -= left;
                left = 0;
            }
        }
    }
    Ok(())
}
