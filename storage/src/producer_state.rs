//! Idempotent-producer bookkeeping for one partition, as Kafka keeps it: per producer id, its
//! epoch and the sequence and offset ranges of its last five batches. A retried batch that
//! matches one of them is answered with its original offsets instead of being written twice;
//! a gap, a stale epoch or an unknown producer is rejected.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::Path;

use strom_protocol::batch::BatchHeader;

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`; clients keep at most five
/// in flight).
const RETAINED_BATCHES: usize = 5;
const SNAPSHOT: &str = "producer.snapshot";

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// When this broker last appended one of its batches (its own clock, never the client's
    /// timestamps), for `producer.id.expiration.ms`.
    last_timestamp: i64,
    /// First sequence of a batch that passed the check but could not be written (a storage
    /// error undone): the producer retries it, and batches it sent behind it are refused
    /// with a retriable storage error until then, not OUT_OF_ORDER_SEQUENCE_NUMBER, which
    /// makes librdkafka bump its epoch and re-send possibly persisted batches of other
    /// partitions under new sequences (librdkafka#4953). In memory only.
    failed_seq: Option<i32>,
}

/// Why a batch from an idempotent producer is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} is unknown here (expired or never seen) and its batch starts at sequence {got}")]
    UnknownProducer { producer_id: i64, got: i32 },
    #[error("producer {producer_id}: sequence {expected}, due before {got}, failed to be written here; retry it first")]
    AfterFailedAppend {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
}

/// The verdict on an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not idempotent, or the next batch in sequence: write it.
    Append,
    /// A retry of a batch already written: answer with where it landed.
    Duplicate(BatchMeta),
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap from i32::MAX to 0, as in Kafka.
    ((i64::from(h.base_sequence) + i64::from(h.last_offset_delta)) % (i64::from(i32::MAX) + 1))
        as i32
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, Entry>,
}

impl ProducerState {
    /// Judges a batch (offsets not yet assigned) against what this partition has seen.
    pub fn check(&self, h: &BatchHeader) -> Result<Check, SequenceError> {
        let pid = h.producer_id;
        if pid < 0 || h.base_sequence < 0 {
            return Ok(Check::Append);
        }
        let Some(entry) = self.producers.get(&pid) else {
            return match h.base_sequence {
                0 => Ok(Check::Append),
                got => Err(SequenceError::UnknownProducer {
                    producer_id: pid,
                    got,
                }),
            };
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id: pid,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            return match h.base_sequence {
                0 => Ok(Check::Append),
                got => Err(SequenceError::OutOfOrder {
                    producer_id: pid,
                    expected: 0,
                    got,
                }),
            };
        }
        let last = last_seq(h);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(Check::Duplicate(*dup));
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if h.base_sequence != expected && entry.failed_seq == Some(expected) {
            return Err(SequenceError::AfterFailedAppend {
                producer_id: pid,
                expected,
                got: h.base_sequence,
            });
        }
        if h.base_sequence != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: pid,
                expected,
                got: h.base_sequence,
            });
        }
        Ok(Check::Append)
    }

    /// The entry of an idempotent batch's producer, created if new and reset when the batch
    /// starts a newer epoch (whose sequences begin again at 0). `None` for other batches.
    fn entry_for(&mut self, h: &BatchHeader, now_ms: i64) -> Option<&mut Entry> {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return None;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| Entry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: now_ms,
                failed_seq: None,
            });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        Some(entry)
    }

    /// Records a batch that is now in the log (its header carries the assigned offsets),
    /// appended at `now_ms` by this broker's clock.
    pub fn record(&mut self, h: &BatchHeader, now_ms: i64) {
        let Some(entry) = self.entry_for(h, now_ms) else {
            return;
        };
        entry.failed_seq = None;
        if entry.batches.len() == RETAINED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        entry.last_timestamp = entry.last_timestamp.max(now_ms);
    }

    /// Notes that a batch which passed [`ProducerState::check`] could not be written.
    pub fn failed(&mut self, h: &BatchHeader, now_ms: i64) {
        if let Some(entry) = self.entry_for(h, now_ms) {
            entry.failed_seq = Some(h.base_sequence);
        }
    }

    /// Forgets producers idle for longer than `max_idle_ms` (`producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) <= max_idle_ms);
        before - self.producers.len()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Writes the state as of `next_offset`, so a clean restart need not rescan the log.
    pub fn write_snapshot(&self, dir: &Path, next_offset: i64) -> Result<(), crate::StorageError> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = writeln!(out, "v1 {next_offset} {}", self.producers.len());
        for (pid, e) in &self.producers {
            let _ = write!(
                out,
                "{pid} {} {} {}",
                e.epoch,
                e.last_timestamp,
                e.batches.len()
            );
            for b in &e.batches {
                let _ = write!(
                    out,
                    " {} {} {} {}",
                    b.first_seq, b.last_seq, b.first_offset, b.last_offset
                );
            }
            let _ = writeln!(out);
        }
        crate::checkpoint::write_atomic(&dir.join(SNAPSHOT), &out)
    }

    /// Loads a snapshot taken at exactly `next_offset`; anything else (missing, stale,
    /// unreadable) is `None` and the caller rebuilds from the log.
    pub fn read_snapshot(dir: &Path, next_offset: i64) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(SNAPSHOT)).ok()?;
        let mut lines = text.lines();
        let mut head = lines.next()?.split_whitespace();
        if head.next()? != "v1" || head.next()?.parse::<i64>().ok()? != next_offset {
            return None;
        }
        let count: usize = head.next()?.parse().ok()?;
        let mut producers = HashMap::with_capacity(count.min(1 << 16));
        for line in lines {
            let nums: Vec<i64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let (&pid, rest) = nums.split_first()?;
            let [epoch, last_timestamp, n, batches @ ..] = rest else {
                return None;
            };
            if batches.len() != (*n as usize) * 4 {
                return None;
            }
            let batches = batches
                .chunks_exact(4)
                .map(|b| BatchMeta {
                    first_seq: b[0] as i32,
                    last_seq: b[1] as i32,
                    first_offset: b[2],
                    last_offset: b[3],
                })
                .collect();
            producers.insert(
                pid,
                Entry {
                    epoch: *epoch as i16,
                    batches,
                    last_timestamp: *last_timestamp,
                    failed_seq: None,
                },
            );
        }
        (producers.len() == count).then_some(Self { producers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 1_000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn sequences_dedupe_and_reject_like_kafka() {
        let mut s = ProducerState::default();
        assert_eq!(
            s.check(&header(7, 0, 3, 1, 0)),
            Err(SequenceError::UnknownProducer {
                producer_id: 7,
                got: 3
            })
        );
        assert_eq!(s.check(&header(7, 0, 0, 5, 0)), Ok(Check::Append));
        s.record(&header(7, 0, 0, 5, 0), 1_000);
        s.record(&header(7, 0, 5, 5, 5), 1_000);
        // A retry of either retained batch is answered with its original offsets.
        assert_eq!(
            s.check(&header(7, 0, 0, 5, 99)),
            Ok(Check::Duplicate(BatchMeta {
                first_seq: 0,
                last_seq: 4,
                first_offset: 0,
                last_offset: 4
            }))
        );
        assert!(
            matches!(s.check(&header(7, 0, 5, 5, 99)), Ok(Check::Duplicate(b)) if b.first_offset == 5)
        );
        assert_eq!(s.check(&header(7, 0, 10, 1, 99)), Ok(Check::Append));
        assert_eq!(
            s.check(&header(7, 0, 12, 1, 99)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 10,
                got: 12
            })
        );
        // A new epoch starts again at 0; an old one is fenced.
        assert_eq!(s.check(&header(7, 1, 0, 1, 99)), Ok(Check::Append));
        assert!(matches!(
            s.check(&header(7, 1, 4, 1, 99)),
            Err(SequenceError::OutOfOrder { .. })
        ));
        s.record(&header(7, 1, 0, 1, 10), 1_000);
        assert!(matches!(
            s.check(&header(7, 0, 10, 1, 99)),
            Err(SequenceError::InvalidEpoch { .. })
        ));
        // Non-idempotent batches are never judged.
        assert_eq!(s.check(&header(-1, -1, -1, 3, 0)), Ok(Check::Append));
    }

    #[test]
    fn only_five_batches_are_retained_and_sequences_wrap() {
        let mut s = ProducerState::default();
        for i in 0..7 {
            s.record(&header(1, 0, i, 1, i64::from(i)), 1_000);
        }
        assert_eq!(
            s.check(&header(1, 0, 1, 1, 0)),
            Err(SequenceError::OutOfOrder {
                producer_id: 1,
                expected: 7,
                got: 1
            })
        );
        assert!(matches!(
            s.check(&header(1, 0, 2, 1, 0)),
            Ok(Check::Duplicate(_))
        ));
        let mut w = ProducerState::default();
        w.record(&header(2, 0, i32::MAX - 1, 2, 0), 1_000);
        assert_eq!(w.check(&header(2, 0, 0, 1, 2)), Ok(Check::Append));
    }

    #[test]
    fn snapshot_round_trips_only_at_its_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ProducerState::default();
        s.record(&header(3, 2, 0, 4, 10), 1_000);
        s.record(&header(4, 0, 0, 1, 14), 1_000);
        s.write_snapshot(dir.path(), 15).expect("write");
        assert_eq!(ProducerState::read_snapshot(dir.path(), 15), Some(s));
        assert_eq!(ProducerState::read_snapshot(dir.path(), 16), None);
    }

    #[test]
    fn a_gap_left_by_a_failed_write_is_a_storage_error_not_out_of_order() {
        let mut s = ProducerState::default();
        s.record(&header(7, 0, 0, 5, 0), 1_000);
        // Sequence 5 passed the check but its write failed; 6.. was already on its way.
        s.failed(&header(7, 0, 5, 1, 5), 1_000);
        assert!(matches!(
            s.check(&header(7, 0, 6, 1, 5)),
            Err(SequenceError::AfterFailedAppend {
                expected: 5,
                got: 6,
                ..
            })
        ));
        // The retry of 5 goes in, and from then on a gap is a gap again.
        assert_eq!(s.check(&header(7, 0, 5, 1, 5)), Ok(Check::Append));
        s.record(&header(7, 0, 5, 1, 5), 1_000);
        assert!(matches!(
            s.check(&header(7, 0, 8, 1, 6)),
            Err(SequenceError::OutOfOrder {
                expected: 6,
                got: 8,
                ..
            })
        ));
        // The same for a producer whose very first batch failed.
        s.failed(&header(8, 0, 0, 1, 6), 1_000);
        assert!(matches!(
            s.check(&header(8, 0, 1, 1, 6)),
            Err(SequenceError::AfterFailedAppend {
                expected: 0,
                got: 1,
                ..
            })
        ));
        assert_eq!(s.check(&header(8, 0, 0, 1, 6)), Ok(Check::Append));
    }

    #[test]
    fn idle_producers_expire() {
        let mut s = ProducerState::default();
        s.record(&header(1, 0, 0, 1, 0), 1_000);
        assert_eq!(s.expire(1_000 + 10, 100), 0);
        assert_eq!(s.expire(1_000 + 101, 100), 1);
        assert!(s.is_empty());
        // Idleness is measured by the broker's clock: a client's timestamps, however far in the
        // future or the past, neither keep a producer alive nor expire it early.
        let mut future = header(2, 0, 0, 1, 0);
        future.max_timestamp = i64::MAX / 2;
        s.record(&future, 5_000);
        assert_eq!(s.expire(5_000 + 101, 100), 1);
        let mut past = header(3, 0, 0, 1, 0);
        past.max_timestamp = 0;
        s.record(&past, 5_000);
        assert_eq!(s.expire(5_000 + 10, 100), 0);
    }
}
