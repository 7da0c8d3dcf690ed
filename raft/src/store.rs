//! Durable Raft storage under `<data dir>/strom-raft/`: the log (CRC-framed JSON entries,
//! fdatasync before an append is acknowledged), the vote (atomic file), the committed id, and
//! the snapshot of the metadata image that bounds the log.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::image::{MetadataImage, Outcome};
use crate::TypeConfig;

type NodeId = u64;
type Node = openraft::BasicNode;
type SErr = StorageError<NodeId>;

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const PURGED_FILE: &str = "purged.json";
const SNAPSHOT_FILE: &str = "snapshot.json";
/// Bound on one entry when reading the log back (a metadata command is tiny).
const MAX_ENTRY: usize = 64 << 20;

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    strom_storage::write_atomic(path, &bytes).map_err(std::io::Error::other)
}

fn read_json<T: for<'a> Deserialize<'a>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The committed id is only a hint (written without an fsync, see `save_committed`): after a
/// power loss the file can be empty or torn, and then Raft learns the commit from the leader.
fn read_committed_hint(path: &Path) -> Option<LogId<NodeId>> {
    read_json(path).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring an unreadable committed-index hint");
        None
    })
}

fn frame(entry: &Entry<TypeConfig>, out: &mut Vec<u8>) -> std::io::Result<()> {
    let body = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Reads framed entries, stopping at the first torn or corrupt one; returns them and the
/// length of the valid prefix.
fn read_frames(bytes: &[u8]) -> (Vec<Entry<TypeConfig>>, usize) {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while let Some(head) = bytes.get(pos..pos + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_ENTRY {
            break;
        }
        let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        match serde_json::from_slice(body) {
            Ok(e) => entries.push(e),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    (entries, pos)
}

#[derive(Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    purged: Option<LogId<NodeId>>,
}

/// Work for the log writer thread, which keeps appends and rewrites in order.
enum WriteOp {
    Append(Vec<u8>, LogFlushed<TypeConfig>),
    Rewrite(Vec<u8>, std::sync::mpsc::SyncSender<std::io::Result<()>>),
}

fn run_writer(path: PathBuf, mut file: File, ops: std::sync::mpsc::Receiver<WriteOp>) {
    while let Ok(op) = ops.recv() {
        match op {
            WriteOp::Append(buf, callback) => {
                let result = file.write_all(&buf).and_then(|()| file.sync_data());
                callback.log_io_completed(result);
            }
            WriteOp::Rewrite(buf, reply) => {
                let result = strom_storage::write_atomic(&path, &buf)
                    .map_err(std::io::Error::other)
                    .and_then(|()| OpenOptions::new().append(true).open(&path))
                    .map(|f| file = f);
                let _ = reply.send(result);
            }
        }
    }
}

/// The Raft log. Reads share the in-memory copy; the file is the durable one.
#[derive(Clone)]
pub struct LogStore {
    dir: PathBuf,
    inner: Arc<Mutex<LogInner>>,
    writer: std::sync::mpsc::Sender<WriteOp>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

impl LogStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            f.read_to_end(&mut bytes)?;
        }
        let (entries, valid) = read_frames(&bytes);
        if valid < bytes.len() {
            tracing::warn!(file = %path.display(), valid, len = bytes.len(), "truncating a torn tail of the metadata log");
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(valid as u64)?;
            f.sync_all()?;
        }
        let purged: Option<LogId<NodeId>> = read_json(&dir.join(PURGED_FILE))?;
        let mut inner = LogInner {
            entries: BTreeMap::new(),
            purged,
        };
        for e in entries {
            if purged.is_none_or(|p| e.log_id.index > p.index) {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        strom_storage::checkpoint::sync_dir(dir).map_err(std::io::Error::other)?;
        let (writer, ops) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("strom-raft-log".into())
            .spawn(move || run_writer(path, file, ops))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(inner)),
            writer,
            vote: read_json(&dir.join(VOTE_FILE))?,
            committed: read_committed_hint(&dir.join(COMMITTED_FILE)),
        })
    }

    /// Whether this node has ever taken part in a quorum (a vote or any log).
    pub fn is_blank(&self) -> bool {
        let inner = self.inner.lock();
        self.vote.is_none() && inner.entries.is_empty() && inner.purged.is_none()
    }

    /// Rewrites the log file with the entries kept in memory (after truncate or purge).
    async fn rewrite(&self) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for e in self.inner.lock().entries.values() {
            frame(e, &mut buf)?;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.writer
            .send(WriteOp::Rewrite(buf, tx))
            .map_err(|_| std::io::Error::other("raft log writer stopped"))?;
        tokio::task::spawn_blocking(move || rx.recv())
            .await
            .map_err(std::io::Error::other)?
            .map_err(|_| std::io::Error::other("raft log writer stopped"))?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        Ok(self
            .inner
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let path = self.dir.join(VOTE_FILE);
        let v = *vote;
        tokio::task::spawn_blocking(move || write_json(&path, &v))
            .await
            .map_err(io_err)
            .and_then(|r| r.map_err(io_err))
            .map_err(StorageIOError::write_vote)?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        // A hint for applying sooner after a restart; the entries themselves are durable, so
        // this file is written without an fsync of its own.
        self.committed = committed;
        let path = self.dir.join(COMMITTED_FILE);
        let bytes = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(io_err(e)))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| StorageIOError::write(io_err(e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut buf = Vec::new();
        let mut batch = Vec::new();
        for e in entries {
            frame(&e, &mut buf).map_err(|e| StorageIOError::write_logs(io_err(e)))?;
            batch.push(e);
        }
        {
            let mut inner = self.inner.lock();
            for e in batch {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        // Acknowledged only once on disk: the writer calls back after fdatasync.
        self.writer
            .send(WriteOp::Append(buf, callback))
            .map_err(|_| StorageIOError::write_logs(io_err("raft log writer stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.inner.lock().entries.split_off(&log_id.index);
        self.rewrite()
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        write_json(&self.dir.join(PURGED_FILE), &log_id)
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        {
            let mut inner = self.inner.lock();
            inner.purged = Some(log_id);
            let keep = inner.entries.split_off(&(log_id.index + 1));
            inner.entries = keep;
        }
        self.rewrite()
            .await
            .map_err(|e| StorageIOError::write_logs(io_err(e)))?;
        Ok(())
    }
}

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, Node>,
    image: MetadataImage,
}

struct SmInner {
    image: MetadataImage,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    snapshot: Option<(SnapshotMeta<NodeId, Node>, Vec<u8>)>,
}

/// The metadata state machine: the image in memory, published to watchers after every apply.
#[derive(Clone)]
pub struct StateMachine {
    dir: PathBuf,
    inner: Arc<Mutex<SmInner>>,
    tx: Arc<watch::Sender<Arc<MetadataImage>>>,
}

impl StateMachine {
    /// Starts from the last snapshot, if any; Raft re-applies the committed log after it.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let snap: Option<SnapshotFile> = read_json(&dir.join(SNAPSHOT_FILE))?;
        let (image, last_applied, membership, snapshot) = match snap {
            Some(s) => {
                let bytes = serde_json::to_vec(&s.image).map_err(std::io::Error::other)?;
                (
                    s.image,
                    s.meta.last_log_id,
                    s.meta.last_membership.clone(),
                    Some((s.meta, bytes)),
                )
            }
            None => (
                MetadataImage::default(),
                None,
                StoredMembership::default(),
                None,
            ),
        };
        let tx = watch::Sender::new(Arc::new(image.clone()));
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(SmInner {
                image,
                last_applied,
                membership,
                snapshot,
            })),
            tx: Arc::new(tx),
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.tx.subscribe()
    }

    fn publish(&self) {
        let image = Arc::new(self.inner.lock().image.clone());
        self.tx.send_replace(image);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (meta, bytes, file) = {
            let inner = self.inner.lock();
            let id = inner.last_applied.map_or_else(
                || "empty".to_string(),
                |l| format!("{}-{}", l.leader_id, l.index),
            );
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id: id,
            };
            let bytes = serde_json::to_vec(&inner.image)
                .map_err(|e| StorageIOError::write_snapshot(None, io_err(e)))?;
            let file = SnapshotFile {
                meta: meta.clone(),
                image: inner.image.clone(),
            };
            (meta, bytes, file)
        };
        let path = self.dir.join(SNAPSHOT_FILE);
        tokio::task::spawn_blocking(move || write_json(&path, &file))
            .await
            .map_err(io_err)
            .and_then(|r| r.map_err(io_err))
            .map_err(|e| StorageIOError::write_snapshot(None, e))?;
        self.inner.lock().snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), SErr> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        {
            let mut inner = self.inner.lock();
            for e in entries {
                inner.last_applied = Some(e.log_id);
                let outcome = match &e.payload {
                    EntryPayload::Blank => {
                        inner.image.offset = e.log_id.index;
                        Outcome::None
                    }
                    EntryPayload::Normal(cmd) => inner.image.apply(e.log_id.index, cmd),
                    EntryPayload::Membership(m) => {
                        inner.image.offset = e.log_id.index;
                        inner.membership = StoredMembership::new(Some(e.log_id), m.clone());
                        Outcome::None
                    }
                };
                out.push(outcome);
            }
        }
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let bytes = snapshot.into_inner();
        let image: MetadataImage = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), io_err(e)))?;
        let file = SnapshotFile {
            meta: meta.clone(),
            image: image.clone(),
        };
        write_json(&self.dir.join(SNAPSHOT_FILE), &file)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), io_err(e)))?;
        {
            let mut inner = self.inner.lock();
            inner.image = image;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta.clone(), bytes));
        }
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        Ok(self
            .inner
            .lock()
            .snapshot
            .clone()
            .map(|(meta, bytes)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, RaftLogReader};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn torn_tail_is_dropped_and_good_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        for i in 1..=3 {
            frame(&entry(i), &mut buf).unwrap();
        }
        let good = buf.len();
        frame(&entry(4), &mut buf).unwrap();
        buf.truncate(buf.len() - 3);
        std::fs::write(dir.path().join(LOG_FILE), &buf).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(store.try_get_log_entries(0..)).unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len() as usize,
            good
        );
    }

    #[test]
    fn corrupt_byte_ends_the_log_there() {
        let mut buf = Vec::new();
        for i in 1..=3 {
            frame(&entry(i), &mut buf).unwrap();
        }
        let n = buf.len();
        buf[n - 2] ^= 0xff;
        let (entries, valid) = read_frames(&buf);
        assert_eq!(entries.len(), 2);
        assert!(valid < n);
    }
}
