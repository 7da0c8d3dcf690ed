//! Log store tests on real files: append/read, rolling, crash recovery, retention, DeleteRecords
//! and time lookups.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use bytes::BytesMut;
use strom_protocol::batch;
use strom_protocol::codec::Codec;
use strom_protocol::records::build_batch;
use strom_storage::{DirIo, Log, LogConfig, StorageError};

fn batch_of(n: usize, ts: i64, tag: &str) -> BytesMut {
    let values: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let recs: Vec<strom_protocol::records::KeyValue<'_>> =
        values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    BytesMut::from(&build_batch(Codec::None, ts, &recs).expect("build")[..])
}

fn open(dir: &std::path::Path, cfg: LogConfig, clean: bool) -> Arc<Log> {
    Log::open(dir, "t-0".into(), cfg, io(), clean).expect("open")
}

fn io() -> Arc<DirIo> {
    DirIo::start("test").expect("io threads")
}

fn offsets_in(data: &[u8]) -> Vec<i64> {
    batch::BatchIter::new(data)
        .map(|(h, _)| h.base_offset)
        .collect()
}

#[test]
fn append_read_and_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 1,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone(), true);
    for i in 0..20 {
        let r = log.append(batch_of(3, 1000 + i, "v"), 0).expect("append");
        assert_eq!(r.base_offset, i * 3);
        assert_eq!(r.last_offset, i * 3 + 2);
    }
    assert_eq!(log.log_end_offset(), 60);
    assert!(log.segment_count() > 3, "segments: {}", log.segment_count());
    // A read from the middle of a batch starts at that batch.
    let r = log.read(31, 1 << 20, true, i64::MAX).expect("read");
    assert_eq!(offsets_in(&r.data).first(), Some(&30));
    // max_bytes smaller than one batch still returns that batch whole.
    let r = log.read(0, 1, true, i64::MAX).expect("read");
    assert_eq!(offsets_in(&r.data), vec![0]);
    // Reading never passes the upper bound.
    let r = log.read(0, 1 << 20, true, 6).expect("read");
    assert!(offsets_in(&r.data).iter().all(|o| *o < 6));
    assert!(matches!(
        log.read(61, 100, true, i64::MAX),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(log
        .read(60, 100, true, i64::MAX)
        .expect("at end")
        .data
        .is_empty());
    log.close().expect("close");
    drop(log);
    // Clean reopen keeps everything and appends continue.
    let log = open(dir.path(), cfg, true);
    assert_eq!(log.log_end_offset(), 60);
    let mut seen = Vec::new();
    let mut next = 0;
    while next < 60 {
        let r = log.read(next, 1 << 20, true, i64::MAX).expect("read");
        for (h, _) in batch::BatchIter::new(&r.data) {
            seen.push(h.base_offset);
            next = h.last_offset() + 1;
        }
    }
    assert_eq!(seen, (0..20).map(|i| i * 3).collect::<Vec<_>>());
    assert_eq!(
        log.append(batch_of(1, 5, "x"), 0)
            .expect("append")
            .base_offset,
        60
    );
}

#[test]
fn recovery_truncates_only_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig::default();
    let log = open(dir.path(), cfg.clone(), true);
    for i in 0..10 {
        log.append(batch_of(2, i, "r"), 0).expect("append");
    }
    log.flush_now().expect("flush");
    drop(log); // no close: like kill -9
    let path = dir.path().join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&path).expect("meta").len();
    // Tear the last batch in half.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len - 7).expect("truncate");
    let log = open(dir.path(), cfg.clone(), false);
    assert_eq!(log.log_end_offset(), 18);
    // Two more batches that never reach a flush, the last with a corrupt byte (a crash in the
    // middle of writing it): that batch is dropped, everything before it stays.
    for i in 9..11 {
        log.append(batch_of(2, i, "r"), 0).expect("append");
    }
    drop(log);
    let len = std::fs::metadata(&path).expect("meta").len();
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[len as usize - 2] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let log = open(dir.path(), cfg, false);
    assert_eq!(log.log_end_offset(), 20);
    let r = log.read(0, 1 << 20, true, i64::MAX).expect("read");
    assert_eq!(
        offsets_in(&r.data),
        (0..10).map(|i| i * 2).collect::<Vec<_>>()
    );
}

#[test]
fn recovery_after_a_crash_keeps_sealed_segments_and_their_indexes() {
    // Sealed segments opened after a clean start must not be grown on disk: a crash would
    // leave their indexes zero-padded, and the next start would rebuild every one of them.
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch_of(1, 1, "s").len() as u64;
    let cfg = LogConfig {
        segment_bytes: one * 2,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg.clone(), true);
    for i in 0..6 {
        log.append(batch_of(1, i, "s"), 0).expect("append");
    }
    log.close().expect("close");
    drop(log);
    let log = open(dir.path(), cfg.clone(), true);
    drop(log); // a crash right after a clean start
    let sealed = dir.path().join(format!("{:020}.index", 0));
    assert_eq!(std::fs::metadata(&sealed).expect("meta").len(), 8);
    let log = open(dir.path(), cfg, false);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(std::fs::metadata(&sealed).expect("meta").len(), 8);
    let r = log.read(3, 1 << 20, true, i64::MAX).expect("read");
    assert_eq!(offsets_in(&r.data)[0], 3);
}

#[test]
fn retention_by_size_and_delete_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = batch_of(1, 1, "s").len() as u64;
    let cfg = LogConfig {
        segment_bytes: one * 2,
        retention_bytes: (one * 4) as i64,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg, true);
    for _ in 0..10 {
        log.append(batch_of(1, 1, "s"), 0).expect("append");
    }
    let deleted = log.apply_retention().expect("retention");
    assert!(deleted > 0);
    assert!(log.size_bytes() <= one * 6);
    assert!(log.log_start_offset() > 0);
    let start = log.log_start_offset();
    assert!(matches!(
        log.read(0, 100, true, i64::MAX),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // DeleteRecords stops at the high watermark, which the partition leader raises.
    assert!(log.delete_records(9).is_err());
    log.set_high_watermark(log.log_end_offset());
    assert_eq!(log.delete_records(9).expect("delete"), 9);
    assert!(9 > start);
    assert!(log.read(8, 100, true, i64::MAX).is_err());
    assert_eq!(
        offsets_in(&log.read(9, 1000, true, i64::MAX).expect("read").data),
        vec![9]
    );
    assert!(log.delete_records(11).is_err());
}

#[test]
fn retention_by_time_empties_an_idle_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        retention_ms: 1000,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg, true);
    log.append(batch_of(5, 1, "old"), 0).expect("append"); // timestamps from 1970
    assert_eq!(log.apply_retention().expect("retention"), 1);
    assert_eq!(log.log_start_offset(), 5);
    assert_eq!(log.log_end_offset(), 5);
}

#[test]
fn offsets_by_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default(), true);
    log.append(batch_of(3, 100, "a"), 0).expect("append"); // ts 100,101,102
    log.append(batch_of(3, 200, "b"), 0).expect("append"); // ts 200,201,202
    assert_eq!(log.offset_for_timestamp(0).expect("ts"), Some((0, 100)));
    assert_eq!(log.offset_for_timestamp(101).expect("ts"), Some((1, 101)));
    assert_eq!(log.offset_for_timestamp(150).expect("ts"), Some((3, 200)));
    assert_eq!(log.offset_for_timestamp(202).expect("ts"), Some((5, 202)));
    assert_eq!(log.offset_for_timestamp(203).expect("ts"), None);
    assert_eq!(log.max_timestamp_offset().expect("max"), Some((5, 202)));
}

#[test]
fn group_commit_flushes_waiters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), LogConfig::default(), true);
    let r = log.append(batch_of(2, 1, "f"), 0).expect("append");
    assert!(log.flushed_offset() < r.last_offset + 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(log.wait_flushed(r.last_offset + 1))
        .expect("flushed");
    assert!(log.flushed_offset() > r.last_offset);
}

#[test]
fn writer_jobs_run_in_submission_order_off_the_runtime() {
    let io = io();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let jobs: Vec<_> = (0..50)
        .map(|i| {
            let seen = seen.clone();
            io.submit(move || {
                seen.lock().push(i);
                strom_storage::io::blocking_allowed()
            })
        })
        .collect();
    let allowed = rt.block_on(join_in_order(jobs));
    assert!(allowed.into_iter().all(|a| a == Ok(true)));
    assert_eq!(*seen.lock(), (0..50).collect::<Vec<_>>());
    // Inside the runtime, outside the disk threads, blocking is refused.
    assert!(!rt.block_on(async { strom_storage::io::blocking_allowed() }));
}

async fn join_in_order<T>(jobs: Vec<impl std::future::Future<Output = T>>) -> Vec<T> {
    let mut out = Vec::new();
    for j in jobs {
        out.push(j.await);
    }
    out
}

#[test]
fn a_full_disk_is_an_error_not_a_panic_and_takes_the_log_offline() {
    // /dev/full answers every write with ENOSPC: stand it in for the segment file.
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("/dev/full", dir.path().join(format!("{:020}.log", 0)))
        .expect("symlink");
    let log = open(dir.path(), LogConfig::default(), true);
    let err = log
        .append(batch_of(3, 1, "full"), 0)
        .expect_err("write to a full disk");
    assert!(
        matches!(err, StorageError::Io { .. } | StorageError::Offline(_)),
        "{err:?}"
    );
    // Nothing was published: the end offset did not move and reads see no data.
    assert_eq!(log.log_end_offset(), 0);
    assert!(log
        .read(0, 1 << 20, true, i64::MAX)
        .expect("read")
        .data
        .is_empty());
    // The failed write could not be undone on this "disk", so the log refuses further writes.
    assert!(matches!(
        log.append(batch_of(1, 1, "again"), 0),
        Err(StorageError::Offline(_))
    ));
}

#[test]
fn follower_append_truncate_and_epochs() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 300,
        ..LogConfig::default()
    };
    let leader = open(leader_dir.path(), cfg.clone(), true);
    let follower = open(follower_dir.path(), cfg.clone(), true);
    for i in 0..6 {
        let epoch = if i < 3 { 1 } else { 2 };
        leader.append(batch_of(2, i, "r"), epoch).expect("append");
    }
    leader.set_high_watermark(leader.log_end_offset());
    let mut at = 0;
    while at < leader.log_end_offset() {
        let r = leader.read(at, 150, true, i64::MAX).expect("read");
        at = follower.append_replicated(&r.data).expect("replicate");
    }
    assert_eq!(follower.log_end_offset(), 12);
    assert_eq!(follower.end_offset_for_epoch(1), (1, 6));
    assert_eq!(follower.end_offset_for_epoch(2), (2, 12));
    // A gap is refused.
    let r = leader.read(2, 1000, true, i64::MAX).expect("read");
    assert!(follower.append_replicated(&r.data).is_err());
    // Truncating drops later batches, their epochs and nothing before.
    assert_eq!(follower.truncate_to(6).expect("truncate"), 6);
    assert_eq!(follower.latest_epoch(), Some((1, 0)));
    let kept = follower.read(0, 10_000, true, i64::MAX).expect("read");
    assert!(offsets_in(&kept.data).iter().all(|o| *o < 6));
    // An epoch begun at the log end without a record (a leadership that appended nothing)
    // goes when the leader says our history ends there: truncating at the end drops it.
    follower.begin_epoch(3).expect("begin epoch");
    assert_eq!(follower.latest_epoch(), Some((3, 6)));
    assert_eq!(follower.truncate_to(6).expect("truncate"), 6);
    assert_eq!(follower.latest_epoch(), Some((1, 0)));
    drop(follower);
    let reopened = open(follower_dir.path(), cfg, false);
    assert_eq!(reopened.log_end_offset(), 6);
    assert_eq!(reopened.end_offset_for_epoch(2), (1, 6));
    assert_eq!(reopened.latest_epoch(), Some((1, 0)));
}

#[test]
fn a_failed_epoch_checkpoint_write_takes_the_log_offline_after_the_batch_counts() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let leader = open(leader_dir.path(), LogConfig::default(), true);
    let follower = open(follower_dir.path(), LogConfig::default(), true);
    leader.append(batch_of(2, 1, "a"), 1).expect("append");
    leader.append(batch_of(2, 2, "b"), 2).expect("append");
    let first = leader.read(0, 1 << 20, true, i64::MAX).expect("read");
    // A directory where the checkpoint's temporary file goes: its next write fails.
    std::fs::create_dir(follower_dir.path().join("leader-epoch-checkpoint.tmp")).expect("mkdir");
    assert!(follower.append_replicated(&first.data).is_err());
    // The batches reached the file, so the log end moved past them (a retried fetch from the
    // old end would write them twice), and the log takes no more writes.
    assert_eq!(follower.log_end_offset(), 4);
    assert!(matches!(
        follower.append_replicated(&first.data),
        Err(StorageError::Offline(_))
    ));
    // A leader whose new epoch cannot be recorded stops too.
    std::fs::create_dir(leader_dir.path().join("leader-epoch-checkpoint.tmp")).expect("mkdir");
    assert!(leader.append(batch_of(1, 3, "c"), 3).is_err());
    assert_eq!(leader.log_end_offset(), 5);
    assert!(matches!(
        leader.append(batch_of(1, 4, "d"), 3),
        Err(StorageError::Offline(_))
    ));
}
