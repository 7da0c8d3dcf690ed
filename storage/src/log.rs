//! A partition's log: the ordered segments, the offsets that bound it, and the rules for
//! appending, reading, flushing, retention and recovery.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, MutexGuard, RwLock};
use strom_protocol::batch::{self, BatchHeader};
use tokio::sync::watch;

use crate::checkpoint::{self, Checkpoint};
use crate::config::{LogConfig, TimestampType};
use crate::epochs::EpochCache;
use crate::error::{IoContext, StorageError};
use crate::io::{assert_blocking_allowed, DirIo};
use crate::producer_state::{Check, ProducerState};
use crate::segment::{self, Segment};

/// Decompression bound when records must be read (ListOffsets by time).
const DECODE_LIMIT: usize = 256 << 20;

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    /// `flush.messages` was reached: the producer must wait for a flush before its answer.
    pub flush_required: bool,
    /// The batch was a retry of one already written; nothing was appended and the offsets
    /// are those of the original.
    pub duplicate: bool,
}

/// Batches read from the log.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole record batches, exactly as stored.
    pub data: Bytes,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// Flush progress shared with waiting producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlushState {
    flushed: i64,
    failed: bool,
}

/// The file side of the log. Its lock is taken only off the async workers (the directory's
/// writer thread, the flusher, blocking-pool readers), so a system call made under it can
/// stall nothing but other disk work.
struct Inner {
    segments: BTreeMap<i64, Segment>,
    unflushed_messages: i64,
    /// Files written since the last flush (a roll can leave more than one).
    dirty: Vec<Arc<File>>,
    /// Segments were created or removed since the last flush: the directory needs an fsync.
    dirty_dir: bool,
    /// Idempotent producers' recent batches, for de-duplication and sequence checks.
    producers: ProducerState,
}

/// The offsets and sizes the rest of the broker reads on its async workers. Written by whoever
/// holds `Inner` (and the high watermark by the replica that owns it); never held across a
/// system call.
#[derive(Debug, Clone, Copy)]
struct Marks {
    log_start_offset: i64,
    /// The log end offset: the next offset to be written.
    end: i64,
    /// Offsets below it are committed (replicated to the ISR); consumers read up to it.
    high_watermark: i64,
    /// Bytes on disk over all segments, and how many segments.
    bytes: u64,
    segments: usize,
    /// Something was written since the last flush.
    dirty: bool,
    last_flush_ms: i64,
}

pub struct Log {
    /// `topic-partition`, for log lines and errors.
    name: String,
    dir: PathBuf,
    config: RwLock<Arc<LogConfig>>,
    inner: Mutex<Inner>,
    marks: Mutex<Marks>,
    /// The leader-epoch cache; its file is written outside this lock.
    epochs: Mutex<EpochCache>,
    /// Set after a write or fsync failed in a way that leaves the file state unknown.
    offline: AtomicBool,
    /// Log end offset, published after every append so long-polling fetches wake up.
    end_tx: watch::Sender<i64>,
    flushed_tx: watch::Sender<FlushState>,
    io: Arc<DirIo>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Log {
    /// Opens (or creates) the log in `dir`. After an unclean shutdown (`clean == false`) every
    /// segment from the recovery point on is re-validated, torn tails are truncated and the
    /// recovered data is fsynced before the log serves anything.
    pub fn open(
        dir: &Path,
        name: String,
        cfg: LogConfig,
        io: Arc<DirIo>,
        clean: bool,
    ) -> Result<Arc<Self>, StorageError> {
        assert_blocking_allowed("Log::open");
        std::fs::create_dir_all(dir).at(dir)?;
        let cp = checkpoint::read(dir);
        let bases = segment::list(dir)?;
        let mut segments = BTreeMap::new();
        let recover_from = if clean {
            i64::MAX
        } else {
            // The segment holding the recovery point is the first one that may be torn.
            bases
                .iter()
                .rev()
                .find(|b| **b <= cp.recovery_point)
                .copied()
                .unwrap_or(i64::MIN)
        };
        let mut truncated_at: Option<i64> = None;
        for &base in &bases {
            if let Some(cut) = truncated_at {
                tracing::warn!(log = %name, segment = base, after = cut, "deleting segment that follows a truncated one");
                for ext in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(dir.join(format!("{base:020}.{ext}")));
                }
                continue;
            }
            let seg = if base >= recover_from {
                let (seg, outcome) = Segment::recover_after(dir, base, &cfg, cp.recovery_point)?;
                if outcome.truncated_bytes > 0 {
                    truncated_at = Some(seg.next_offset());
                }
                seg
            } else {
                Segment::open_clean(dir, base, &cfg)?
            };
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let base = cp.log_start_offset.max(0);
            segments.insert(base, Segment::create(dir, base, &cfg)?);
        }
        let (next_offset, first_base) =
            match (segments.values().next_back(), segments.keys().next()) {
                (Some(last), Some(first)) => (last.next_offset(), *first),
                _ => (0, 0),
            };
        let last = segments.keys().next_back().copied();
        for (base, seg) in segments.iter_mut() {
            if Some(*base) == last {
                seg.reopen_for_append(&cfg)?;
            } else if *base >= recover_from {
                // Rebuilt indexes of sealed segments are trimmed like any sealed segment's.
                seg.seal_indexes()?;
            }
        }
        if !clean {
            for seg in segments.values().filter(|s| s.base_offset >= recover_from) {
                seg.file().sync_data().at(seg.path())?;
            }
            checkpoint::sync_dir(dir)?;
        }
        let log_start_offset = cp.log_start_offset.clamp(first_base, next_offset);
        let snapshot = if clean {
            ProducerState::read_snapshot(dir, next_offset)
        } else {
            None
        };
        let producers = match snapshot {
            Some(p) => p,
            None => rebuild_producers(&segments)?,
        };
        let mut epochs = EpochCache::read(dir);
        if epochs.truncate_from(next_offset + 1) {
            epochs.write(dir)?;
        }
        let marks = Marks {
            log_start_offset,
            end: next_offset,
            // The leader raises it as replicas confirm; a single replica raises it at once.
            high_watermark: log_start_offset,
            bytes: segments.values().map(Segment::size).sum(),
            segments: segments.len(),
            dirty: false,
            last_flush_ms: now_ms(),
        };
        let log = Arc::new(Self {
            name,
            dir: dir.to_path_buf(),
            config: RwLock::new(Arc::new(cfg)),
            inner: Mutex::new(Inner {
                segments,
                unflushed_messages: 0,
                dirty: Vec::new(),
                dirty_dir: false,
                producers,
            }),
            marks: Mutex::new(marks),
            epochs: Mutex::new(epochs),
            offline: AtomicBool::new(false),
            end_tx: watch::Sender::new(next_offset),
            flushed_tx: watch::Sender::new(FlushState {
                flushed: next_offset,
                failed: false,
            }),
            io,
        });
        log.write_checkpoint()?;
        Ok(log)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The I/O threads of this log's directory.
    pub fn io(&self) -> &Arc<DirIo> {
        &self.io
    }

    pub fn config(&self) -> Arc<LogConfig> {
        self.config.read().clone()
    }

    pub fn set_config(&self, cfg: LogConfig) {
        *self.config.write() = Arc::new(cfg);
    }

    fn marks(&self) -> MutexGuard<'_, Marks> {
        self.marks.lock()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.marks().log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.marks().end
    }

    /// The high watermark: offsets below it are committed.
    pub fn high_watermark(&self) -> i64 {
        self.marks().high_watermark
    }

    /// Raises the high watermark (never past the log end, never backwards); wakes fetches.
    pub fn set_high_watermark(&self, hw: i64) -> bool {
        let mut marks = self.marks();
        let hw = hw.min(marks.end);
        if hw <= marks.high_watermark {
            return false;
        }
        marks.high_watermark = hw;
        drop(marks);
        self.end_tx.send_modify(|_| {});
        true
    }

    /// Whether a read from `offset` below `upper` would find records (or fail): when not, a
    /// fetch can answer without touching the disk.
    pub fn has_data(&self, offset: i64, upper: i64) -> bool {
        let m = self.marks();
        offset < m.log_start_offset || offset > m.end || offset < upper.min(m.end)
    }

    /// The latest leader epoch and the offset where it started.
    pub fn latest_epoch(&self) -> Option<(i32, i64)> {
        self.epochs.lock().latest()
    }

    /// A new leader records that its epoch starts at the current log end.
    pub fn begin_epoch(&self, epoch: i32) -> Result<(), StorageError> {
        assert_blocking_allowed("Log::begin_epoch");
        let _inner = self.inner.lock();
        let end = self.log_end_offset();
        let changed = self.epochs.lock().assign(epoch, end);
        if changed {
            self.persist_epochs()?;
        }
        Ok(())
    }

    /// Writes the leader-epoch checkpoint after the cache changed (the caller holds `inner`).
    /// If that fails, the file no longer describes the log (and divergence checks would answer
    /// from a cache the next start does not have), so the log goes offline, as Kafka takes its
    /// directory offline.
    fn persist_epochs(&self) -> Result<(), StorageError> {
        let epochs = self.epochs.lock().clone();
        epochs.write(&self.dir).inspect_err(|e| {
            self.offline.store(true, Ordering::Release);
            tracing::error!(log = %self.name, error = %e, "cannot write the leader-epoch checkpoint: log offline");
        })
    }

    /// OffsetForLeaderEpoch: the largest epoch <= `epoch` this log knows and where it ended.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        // Both under one look, so a truncation is seen whole or not at all.
        let marks = self.marks();
        self.epochs.lock().end_offset_for(epoch, marks.end)
    }

    /// Bytes on disk over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.marks().bytes
    }

    pub fn segment_count(&self) -> usize {
        self.marks().segments
    }

    /// A receiver that changes whenever the log end offset moves.
    pub fn subscribe_end(&self) -> watch::Receiver<i64> {
        self.end_tx.subscribe()
    }

    /// Publishes a new log end after an append of `added` bytes (the caller holds `inner`);
    /// returns the log start offset.
    fn advance_end(&self, inner: &Inner, next: i64, added: usize) -> i64 {
        let mut m = self.marks();
        m.end = next;
        m.dirty = true;
        m.bytes += added as u64;
        m.segments = inner.segments.len();
        m.log_start_offset
    }

    /// Publishes the segment count and size after segments were written, added or removed.
    fn publish_sizes(&self, inner: &Inner) {
        let mut m = self.marks();
        m.bytes = inner.segments.values().map(Segment::size).sum();
        m.segments = inner.segments.len();
    }

    /// Appends validated batches (one or more, back to back), assigning offsets from the log
    /// end and stamping `leader_epoch`. Returns where they landed.
    ///
    /// The bytes are written as received: the fields outside the CRC (base offset, leader
    /// epoch) go out from a small patched copy of each header, the rest straight from the
    /// request buffer (one `pwritev`, no copy in user space). Only LogAppendTime topics, whose
    /// stamp is covered by the CRC, copy the batch to rewrite it.
    pub fn append(
        &self,
        data: impl Into<Bytes>,
        leader_epoch: i32,
    ) -> Result<AppendResult, StorageError> {
        assert_blocking_allowed("Log::append");
        let data: Bytes = data.into();
        let cfg = self.config();
        let now = now_ms();
        let mut inner = self.inner.lock();
        if self.is_offline() {
            return Err(StorageError::Offline(self.name.clone()));
        }
        for (h, _) in batch::BatchIter::new(&data) {
            if let Check::Duplicate(dup) = inner.producers.check(&h)? {
                tracing::debug!(log = %self.name, producer = h.producer_id, sequence = h.base_sequence, "duplicate batch answered with its original offsets");
                return Ok(AppendResult {
                    base_offset: dup.first_offset,
                    last_offset: dup.last_offset,
                    log_append_time: -1,
                    log_start_offset: self.log_start_offset(),
                    flush_required: false,
                    duplicate: true,
                });
            }
        }
        let base_offset = self.log_end_offset();
        let mut next = base_offset;
        let mut headers: Vec<(BatchHeader, usize)> = Vec::new();
        let mut messages = 0i64;
        let log_append_time = cfg.timestamp_type == TimestampType::LogAppendTime;
        // LogAppendTime: a rewritten copy. Otherwise: patched header prefixes + the original.
        let mut rewritten: Option<BytesMut> = log_append_time.then(|| BytesMut::from(&data[..]));
        let mut prefixes: Vec<[u8; batch::UNCHECKED_PREFIX]> = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let (_, total) = batch::peek_offset_and_size(&data[pos..])
                .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
            let one = data
                .get(pos..pos + total)
                .ok_or_else(|| StorageError::InvalidBatch("batch runs past the buffer".into()))?;
            let mut h =
                BatchHeader::parse(one).map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
            h.base_offset = next;
            h.partition_leader_epoch = leader_epoch;
            match rewritten.as_mut() {
                Some(buf) => {
                    let one = &mut buf[pos..pos + total];
                    batch::set_base_offset(one, next);
                    batch::set_partition_leader_epoch(one, leader_epoch);
                    batch::set_log_append_time(one, now);
                    h.max_timestamp = now;
                }
                None => {
                    let mut prefix = [0u8; batch::UNCHECKED_PREFIX];
                    prefix.copy_from_slice(&one[..batch::UNCHECKED_PREFIX]);
                    batch::set_base_offset(&mut prefix, next);
                    batch::set_partition_leader_epoch(&mut prefix, leader_epoch);
                    prefixes.push(prefix);
                }
            }
            next = h.last_offset() + 1;
            messages += i64::from(h.records_count);
            headers.push((h, pos));
            pos += total;
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(headers.len() * 2);
        match &rewritten {
            Some(buf) => parts.push(buf),
            None => {
                for ((h, at), prefix) in headers.iter().zip(&prefixes) {
                    parts.push(prefix);
                    parts.push(&data[at + batch::UNCHECKED_PREFIX..at + h.total_len()]);
                }
            }
        }
        if let Err(e) = self.write_active(&mut inner, &cfg, &parts, data.len(), &headers, now) {
            for (h, _) in &headers {
                inner.producers.failed(h, now);
            }
            return Err(e);
        }
        // The batches are in the file: the log end and producer state move with them before
        // anything else can fail, or a retry would be written a second time.
        for (h, _) in &headers {
            inner.producers.record(h, now_ms());
        }
        inner.unflushed_messages += messages;
        let log_start_offset = self.advance_end(&inner, next, data.len());
        if self.epochs.lock().assign(leader_epoch, base_offset) {
            self.persist_epochs()?;
        }
        let flush_required = inner.unflushed_messages >= cfg.flush_messages;
        let result = AppendResult {
            base_offset,
            last_offset: next - 1,
            log_append_time: if log_append_time { now } else { -1 },
            log_start_offset,
            flush_required,
            duplicate: false,
        };
        drop(inner);
        self.end_tx.send_replace(next);
        Ok(result)
    }

    /// Writes `len` bytes of batches (given as consecutive slices) to the active segment,
    /// rolling first when a roll rule says so, and marks the file for the next flush. A
    /// failure that leaves the file state unknown takes the log offline.
    fn write_active(
        &self,
        inner: &mut Inner,
        cfg: &LogConfig,
        parts: &[&[u8]],
        len: usize,
        headers: &[(BatchHeader, usize)],
        default_ts: i64,
    ) -> Result<(), StorageError> {
        let first_ts = headers.first().map_or(default_ts, |(h, _)| h.max_timestamp);
        let needs_roll = inner
            .segments
            .values()
            .next_back()
            .is_some_and(|s| s.should_roll(len, first_ts, cfg));
        if needs_roll {
            if let Err(e) = self.roll(inner, cfg) {
                // Half a roll (old indexes sealed, new files partly created) is no state to
                // keep appending in.
                self.offline.store(true, Ordering::Release);
                tracing::error!(log = %self.name, error = %e, "segment roll failed: log offline");
                return Err(e);
            }
        }
        let Some(active) = inner.segments.values_mut().next_back() else {
            return Err(StorageError::Offline(self.name.clone()));
        };
        if let Err(e) = active.append_parts(parts, len, headers) {
            if matches!(e, StorageError::Offline(_)) {
                self.offline.store(true, Ordering::Release);
            }
            tracing::error!(log = %self.name, error = %e, "append failed");
            return Err(e);
        }
        let file = active.file();
        if !inner.dirty.iter().any(|f| Arc::ptr_eq(f, &file)) {
            inner.dirty.push(file);
        }
        Ok(())
    }

    /// A follower appends batches exactly as the leader stored them (offsets and epochs
    /// included); they must continue the log without a gap. Returns the new log end.
    pub fn append_replicated(&self, data: &[u8]) -> Result<i64, StorageError> {
        assert_blocking_allowed("Log::append_replicated");
        let cfg = self.config();
        let mut inner = self.inner.lock();
        if self.is_offline() {
            return Err(StorageError::Offline(self.name.clone()));
        }
        let mut headers: Vec<(BatchHeader, usize)> = Vec::new();
        let mut next = self.log_end_offset();
        let mut pos = 0usize;
        while pos < data.len() {
            let rest = &data[pos..];
            let Ok((_, total)) = batch::peek_offset_and_size(rest) else {
                break;
            };
            // A fetch response may end with a partial batch: keep the whole ones.
            let Some(one) = rest.get(..total) else {
                break;
            };
            let h =
                batch::verify_stored(one).map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
            if h.base_offset != next {
                return Err(StorageError::InvalidBatch(format!(
                    "replicated batch at offset {} does not continue the log at {next}",
                    h.base_offset
                )));
            }
            next = h.last_offset() + 1;
            headers.push((h, pos));
            pos += total;
        }
        if headers.is_empty() {
            return Ok(next);
        }
        self.write_active(&mut inner, &cfg, &[&data[..pos]], pos, &headers, 0)?;
        let mut epochs_changed = false;
        {
            let mut epochs = self.epochs.lock();
            for (h, _) in &headers {
                inner.producers.record(h, now_ms());
                inner.unflushed_messages += i64::from(h.records_count);
                epochs_changed |= epochs.assign(h.partition_leader_epoch, h.base_offset);
            }
        }
        // As for a leader's append: the log end moves with the bytes written, whatever follows.
        self.advance_end(&inner, next, pos);
        if epochs_changed {
            self.persist_epochs()?;
        }
        drop(inner);
        self.end_tx.send_replace(next);
        Ok(next)
    }

    /// Removes everything from `offset` on (a follower dropping history the leader does not
    /// have). A batch that straddles `offset` goes too; the follower fetches it again.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, StorageError> {
        assert_blocking_allowed("Log::truncate_to");
        let cfg = self.config();
        let mut inner = self.inner.lock();
        let (start, end) = {
            let m = self.marks();
            (m.log_start_offset, m.end)
        };
        if offset >= end {
            // No record goes, but epochs begun at or after the cut (e.g. a leadership this
            // replica held without appending anything) are history the leader does not have:
            // left in place, the next fetch would report them as the last fetched epoch again.
            if self.epochs.lock().truncate_from(offset) {
                self.persist_epochs()?;
            }
            return Ok(end);
        }
        let offset = offset.max(start);
        // Data below the cut that was written but not yet synced stays in the log: sync it now,
        // since the dirty list is reset below and nothing else would.
        for f in std::mem::take(&mut inner.dirty) {
            if let Err(e) = f.sync_data().at(&self.dir) {
                self.offline.store(true, Ordering::Release);
                drop(inner);
                self.flushed_tx.send_modify(|s| s.failed = true);
                return Err(e);
            }
        }
        let doomed: Vec<i64> = inner
            .segments
            .keys()
            .copied()
            .filter(|b| *b >= offset && *b > start)
            .collect();
        for base in doomed {
            if let Some(seg) = inner.segments.remove(&base) {
                seg.delete_files(&self.dir);
            }
        }
        if let Some((&base, seg)) = inner.segments.iter().next_back() {
            if seg.next_offset() > offset {
                let cut = seg
                    .position_of(offset, seg.size())?
                    .map_or(seg.size(), |(p, _)| p);
                let file = seg.file();
                file.set_len(cut).at(seg.path())?;
                file.sync_all().at(seg.path())?;
                let (mut seg, _) = Segment::recover(&self.dir, base, &cfg)?;
                seg.reopen_for_append(&cfg)?;
                inner.segments.insert(base, seg);
            }
        }
        if inner.segments.is_empty() {
            inner
                .segments
                .insert(start, Segment::create(&self.dir, start, &cfg)?);
        }
        let next = inner
            .segments
            .values()
            .next_back()
            .map_or(offset, Segment::next_offset);
        inner.dirty.clear();
        inner.dirty_dir = true;
        inner.producers = rebuild_producers(&inner.segments)?;
        let epochs_changed = {
            let mut m = self.marks();
            m.end = next;
            m.high_watermark = m.high_watermark.min(next);
            self.epochs.lock().truncate_from(next)
        };
        self.publish_sizes(&inner);
        if epochs_changed {
            self.persist_epochs()?;
        }
        tracing::info!(log = %self.name, offset = next, "truncated log");
        drop(inner);
        self.flushed_tx
            .send_modify(|s| s.flushed = s.flushed.min(next));
        self.end_tx.send_replace(next);
        // The recovery point on disk may lie beyond the cut: lower it before anything is
        // written there again, or recovery would skip validating the new data after a crash.
        self.write_checkpoint()?;
        Ok(next)
    }

    /// Drops the whole log and starts it empty at `offset` (a follower whose position fell
    /// below the leader's log start).
    pub fn reset_to(&self, offset: i64) -> Result<(), StorageError> {
        assert_blocking_allowed("Log::reset_to");
        let cfg = self.config();
        {
            let mut inner = self.inner.lock();
            let bases: Vec<i64> = inner.segments.keys().copied().collect();
            for base in bases {
                if let Some(seg) = inner.segments.remove(&base) {
                    seg.delete_files(&self.dir);
                }
            }
            inner
                .segments
                .insert(offset, Segment::create(&self.dir, offset, &cfg)?);
            inner.dirty.clear();
            inner.dirty_dir = true;
            inner.producers = ProducerState::default();
            {
                let mut m = self.marks();
                m.log_start_offset = offset;
                m.end = offset;
                m.high_watermark = offset;
                *self.epochs.lock() = EpochCache::default();
            }
            self.publish_sizes(&inner);
            self.persist_epochs()?;
        }
        self.flushed_tx.send_modify(|s| s.flushed = offset);
        self.end_tx.send_replace(offset);
        self.write_checkpoint()
    }

    fn roll(&self, inner: &mut Inner, cfg: &LogConfig) -> Result<(), StorageError> {
        let base = self.log_end_offset();
        if let Some(active) = inner.segments.values_mut().next_back() {
            active.roll_close()?;
        }
        let seg = Segment::create(&self.dir, base, cfg)?;
        tracing::debug!(log = %self.name, base, "rolled new segment");
        inner.segments.insert(base, seg);
        inner.dirty_dir = true;
        self.marks().segments = inner.segments.len();
        Ok(())
    }

    /// Waits until everything up to `offset` (exclusive) is on stable storage, asking the
    /// flusher for a round if needed.
    pub async fn wait_flushed(self: &Arc<Self>, offset: i64) -> Result<(), StorageError> {
        let mut rx = self.flushed_tx.subscribe();
        if rx.borrow().flushed >= offset {
            return Ok(());
        }
        self.io.request_flush(self.clone());
        let state = rx
            .wait_for(|s| s.flushed >= offset || s.failed)
            .await
            .map(|s| *s)
            .map_err(|_| StorageError::Offline(self.name.clone()))?;
        if state.failed && state.flushed < offset {
            return Err(StorageError::Offline(self.name.clone()));
        }
        Ok(())
    }

    /// Asks for a background flush when `flush.ms` has passed since the last one.
    pub fn flush_if_due(self: &Arc<Self>) {
        let cfg = self.config();
        let due = {
            let m = self.marks();
            m.dirty && now_ms() - m.last_flush_ms >= cfg.flush_ms
        };
        if due {
            self.io.request_flush(self.clone());
        }
    }

    /// fdatasyncs every file written since the last flush (blocking), then publishes the new
    /// flushed offset. A failed fsync takes the log offline: after one, the kernel may have
    /// dropped the dirty pages, so retrying cannot prove durability.
    pub fn flush_now(&self) -> Result<(), StorageError> {
        assert_blocking_allowed("Log::flush_now");
        let (files, dirty_dir, target) = {
            let mut inner = self.inner.lock();
            if self.is_offline() {
                return Err(StorageError::Offline(self.name.clone()));
            }
            let files = std::mem::take(&mut inner.dirty);
            let dirty_dir = std::mem::take(&mut inner.dirty_dir);
            inner.unflushed_messages = 0;
            let mut m = self.marks();
            m.dirty = false;
            m.last_flush_ms = now_ms();
            (files, dirty_dir, m.end)
        };
        let mut result = files.iter().try_for_each(|f| f.sync_data().at(&self.dir));
        if result.is_ok() && dirty_dir {
            result = checkpoint::sync_dir(&self.dir);
        }
        if let Err(e) = &result {
            tracing::error!(log = %self.name, error = %e, "fsync failed; taking the partition offline");
            self.offline.store(true, Ordering::Release);
            self.flushed_tx.send_modify(|s| s.failed = true);
            return result;
        }
        self.flushed_tx
            .send_modify(|s| s.flushed = s.flushed.max(target));
        Ok(())
    }

    /// A write or fsync failed: the log's file state is unknown until a restart recovers it.
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// Offset up to which data is known to be on stable storage.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_tx.borrow().flushed
    }

    /// Persists log start offset and recovery point.
    pub fn write_checkpoint(&self) -> Result<(), StorageError> {
        assert_blocking_allowed("Log::write_checkpoint");
        let cp = Checkpoint {
            log_start_offset: self.log_start_offset(),
            recovery_point: self.flushed_offset(),
        };
        checkpoint::write(&self.dir, cp)
    }

    /// Reads whole batches starting with the one that contains `offset`, from one segment, up
    /// to `max_bytes` (the first batch is whole even if larger when `min_one`), never past
    /// `upper` (exclusive; the high watermark or a transaction bound).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        upper: i64,
    ) -> Result<ReadResult, StorageError> {
        let m = *self.marks();
        let hw = upper.min(m.end);
        let start = m.log_start_offset;
        if offset < start || offset > m.end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start,
                end: m.end,
            });
        }
        let empty = ReadResult {
            data: Bytes::new(),
            log_start_offset: start,
            high_watermark: m.high_watermark,
        };
        // Nothing to read is answered from the marks alone, on any thread.
        if offset >= hw || max_bytes == 0 && !min_one {
            return Ok(empty);
        }
        assert_blocking_allowed("Log::read");
        let inner = self.inner.lock();
        let from = inner
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        for seg in inner.segments.range(from..).map(|(_, s)| s) {
            let Some((pos, _)) = seg.position_of(offset, seg.size())? else {
                continue;
            };
            let end = if hw >= seg.next_offset() {
                seg.size()
            } else {
                seg.position_of(hw, seg.size())?
                    .map_or(seg.size(), |(p, _)| p)
            };
            let file = seg.file();
            let path = seg.path().to_path_buf();
            drop(inner);
            let data = segment::read_range(&file, &path, pos, end, max_bytes, min_one)?;
            return Ok(ReadResult { data, ..empty });
        }
        Ok(empty)
    }

    /// ListOffsets by time: the first record whose timestamp is >= `ts`, as (offset, timestamp).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        assert_blocking_allowed("Log::offset_for_timestamp");
        let inner = self.inner.lock();
        let start = self.log_start_offset();
        for seg in inner.segments.values().filter(|s| s.max_timestamp() >= ts) {
            let from = seg.time_lookup_start(ts).max(start);
            let Some((mut pos, _)) = seg.position_of(from, seg.size())? else {
                continue;
            };
            while pos < seg.size() {
                let h = seg.header_at(pos)?;
                if h.max_timestamp >= ts && h.last_offset() >= start {
                    if let Some(found) = self.first_record_at_or_after(seg, pos, &h, ts, start)? {
                        return Ok(Some(found));
                    }
                }
                pos += h.total_len() as u64;
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: the record with the largest timestamp, as (offset, timestamp).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, StorageError> {
        assert_blocking_allowed("Log::max_timestamp_offset");
        let inner = self.inner.lock();
        let Some(seg) = inner
            .segments
            .values()
            .filter(|s| s.max_timestamp() >= 0)
            .max_by_key(|s| s.max_timestamp())
        else {
            return Ok(None);
        };
        let ts = seg.max_timestamp();
        let Some((pos, h)) = seg.position_of(seg.offset_of_max_timestamp(), seg.size())? else {
            return Ok(None);
        };
        self.first_record_at_or_after(seg, pos, &h, ts, self.log_start_offset())
    }

    fn first_record_at_or_after(
        &self,
        seg: &Segment,
        pos: u64,
        h: &BatchHeader,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        if h.is_log_append_time() {
            return Ok(Some((h.base_offset.max(min_offset), h.max_timestamp)));
        }
        let mut buf = vec![0u8; h.total_len()];
        std::os::unix::fs::FileExt::read_exact_at(seg.file().as_ref(), &mut buf, pos)
            .at(seg.path())?;
        let records = strom_protocol::records::decode(&buf, DECODE_LIMIT).map_err(|e| {
            StorageError::Corrupt {
                path: seg.path().to_path_buf(),
                position: pos,
                reason: e.to_string(),
            }
        })?;
        Ok(records
            .iter()
            .find(|r| r.timestamp >= ts && r.offset >= min_offset)
            .map(|r| (r.offset, r.timestamp)))
    }

    /// DeleteRecords: moves the log start offset up to `offset` (`-1` means the high
    /// watermark) and drops segments entirely below it. Returns the new low watermark.
    pub fn delete_records(&self, offset: i64) -> Result<i64, StorageError> {
        assert_blocking_allowed("Log::delete_records");
        {
            let mut inner = self.inner.lock();
            let m = *self.marks();
            let target = if offset == -1 {
                m.high_watermark
            } else {
                offset
            };
            if target < 0 || target > m.high_watermark {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    start: m.log_start_offset,
                    end: m.high_watermark,
                });
            }
            if target > m.log_start_offset {
                self.marks().log_start_offset = target;
                self.drop_segments_below_start(&mut inner);
            }
        }
        self.write_checkpoint()?;
        Ok(self.log_start_offset())
    }

    fn drop_segments_below_start(&self, inner: &mut Inner) {
        loop {
            let mut it = inner.segments.values();
            let (Some(first), Some(_second)) = (it.next(), it.next()) else {
                return;
            };
            if first.next_offset() > self.log_start_offset() {
                return;
            }
            let base = first.base_offset;
            self.remove_segment(inner, base);
        }
    }

    fn remove_segment(&self, inner: &mut Inner, base: i64) {
        if let Some(seg) = inner.segments.remove(&base) {
            seg.delete_files(&self.dir);
            inner.dirty_dir = true;
            if let Some(next) = inner.segments.keys().next() {
                let mut m = self.marks();
                m.log_start_offset = m.log_start_offset.max(*next);
            }
            self.publish_sizes(inner);
        }
    }

    /// Deletes segments past `retention.ms` or beyond `retention.bytes`, oldest first. The
    /// active segment is rolled first when it has expired too, so an idle topic still empties.
    /// Returns how many segments were deleted.
    pub fn apply_retention(&self) -> Result<usize, StorageError> {
        assert_blocking_allowed("Log::apply_retention");
        let cfg = self.config();
        if !cfg.delete_retention {
            return Ok(0);
        }
        let now = now_ms();
        let mut deleted = 0;
        {
            let mut inner = self.inner.lock();
            if self.is_offline() {
                return Ok(0);
            }
            let expired = |s: &Segment| {
                cfg.retention_ms >= 0 && now - s.retention_timestamp() > cfg.retention_ms
            };
            let active_expired = inner
                .segments
                .values()
                .next_back()
                .is_some_and(|s| s.size() > 0 && expired(s));
            if active_expired && inner.segments.values().rev().skip(1).all(expired) {
                self.roll(&mut inner, &cfg)?;
            }
            while inner.segments.len() > 1 {
                let Some((&base, first)) = inner.segments.iter().next() else {
                    break;
                };
                let total: u64 = inner.segments.values().map(Segment::size).sum();
                let over_size =
                    cfg.retention_bytes >= 0 && total - first.size() >= cfg.retention_bytes as u64;
                if !(expired(first) || over_size) {
                    break;
                }
                tracing::info!(log = %self.name, segment = base, "deleting segment past retention");
                self.remove_segment(&mut inner, base);
                deleted += 1;
            }
        }
        if deleted > 0 {
            self.write_checkpoint()?;
        }
        Ok(deleted)
    }

    /// Forgets idempotent producers idle for longer than `max_idle_ms`.
    pub fn expire_producers(&self, max_idle_ms: i64) -> usize {
        assert_blocking_allowed("Log::expire_producers");
        self.inner.lock().producers.expire(now_ms(), max_idle_ms)
    }

    /// Flushes and seals the log for a clean shutdown.
    pub fn close(&self) -> Result<(), StorageError> {
        self.flush_now()?;
        {
            let mut inner = self.inner.lock();
            if let Some(active) = inner.segments.values_mut().next_back() {
                active.roll_close()?;
            }
            inner
                .producers
                .write_snapshot(&self.dir, self.log_end_offset())?;
        }
        self.write_checkpoint()
    }
}

/// Rebuilds idempotent-producer state by reading every batch header in the log.
fn rebuild_producers(segments: &BTreeMap<i64, Segment>) -> Result<ProducerState, StorageError> {
    let mut state = ProducerState::default();
    for seg in segments.values() {
        let mut pos = 0u64;
        while pos < seg.size() {
            let h = seg.header_at(pos)?;
            state.record(&h, now_ms());
            pos += h.total_len() as u64;
        }
    }
    Ok(state)
}
