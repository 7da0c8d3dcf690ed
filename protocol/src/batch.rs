//! A zero-copy view of a record batch (magic v2) header, its validation, and the in-place edits
//! the broker makes before storing it (base offset, leader epoch, log-append time).
//!
//! Layout (big-endian), from the Kafka protocol guide:
//! `baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//!  attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//!  producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32 | records…`
//! The CRC32C covers everything from `attributes` to the end, so the broker can rewrite the base
//! offset and leader epoch without recomputing it.

use crate::codec::Codec;

/// Bytes before `partitionLeaderEpoch`: base offset and batch length (Kafka's LOG_OVERHEAD).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header, records excluded.
pub const HEADER_LEN: usize = 61;
/// Bytes at the start of a batch that the CRC does not cover (base offset, length, partition
/// leader epoch, magic, up to the CRC itself): a broker may rewrite them without re-checksumming.
pub const UNCHECKED_PREFIX: usize = 17;

const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// Why a byte range is not a valid record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("invalid batch length {0}")]
    InvalidLength(i32),
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("CRC32C mismatch: header says {expected:#010x}, data has {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("unknown compression codec id {0}")]
    UnknownCodec(i16),
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
}

/// The decoded fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Length in bytes of everything after the length field itself.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    i16::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the base offset and total size (header included) of the batch at the start of `buf`
/// from its first 12 bytes, as a log scan needs before it has the whole batch.
pub fn peek_offset_and_size(buf: &[u8]) -> Result<(i64, usize), BatchError> {
    if buf.len() < LOG_OVERHEAD {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD,
            available: buf.len(),
        });
    }
    let len = be_i32(buf, 8);
    // A v2 batch always carries its 49 header bytes after the length field.
    if len < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::InvalidLength(len));
    }
    Ok((be_i64(buf, 0), LOG_OVERHEAD + len as usize))
}

impl BatchHeader {
    /// Parses the fixed header at the start of `buf` without checking the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        peek_offset_and_size(buf)?;
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(Self {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
            magic,
            crc: be_i32(buf, CRC) as u32,
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, PRODUCER_ID),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH),
            base_sequence: be_i32(buf, BASE_SEQUENCE),
            records_count: be_i32(buf, RECORDS_COUNT),
        })
    }

    /// Size of the whole batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Number of offsets the batch occupies (compaction may leave gaps, so not `records_count`).
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    pub fn codec(&self) -> Result<Codec, BatchError> {
        Codec::from_attributes(self.attributes)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
}

/// Validates the batch at the start of `buf` as a producer sent it: complete, magic v2, a known
/// codec, a record count consistent with its offsets, and a matching CRC32C. Records are not
/// decompressed.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    header.codec()?;
    if header.records_count < 0
        || header.last_offset_delta < 0
        || (header.records_count > 0 && header.last_offset_delta != header.records_count - 1)
    {
        return Err(BatchError::CountMismatch {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    verify_stored(buf)
}

/// Checks only what a log reader needs to trust stored bytes: framing, magic and CRC.
pub fn verify_stored(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let actual = crc32c::crc32c(&buf[ATTRIBUTES..total]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(header)
}

/// Sets the broker-assigned base offset; outside the CRC, so no checksum update.
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[0..8].copy_from_slice(&offset.to_be_bytes());
}

/// Sets the partition leader epoch; outside the CRC, so no checksum update.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `now_ms` as its max timestamp, as Kafka does for topics
/// with `message.timestamp.type=LogAppendTime`; these bytes are inside the CRC, so it is
/// recomputed.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let total = batch.len();
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..total]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterates over complete batches in a buffer of concatenated batches, yielding each header
/// and its byte range. Stops at the first incomplete or unparsable batch; `remainder` tells
/// where that happened.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    error: Option<BatchError>,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            error: None,
        }
    }

    /// Byte position of the first batch not yielded.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Why iteration stopped early, if it did.
    pub fn error(&self) -> Option<&BatchError> {
        self.error.as_ref()
    }
}

impl Iterator for BatchIter<'_> {
    type Item = (BatchHeader, std::ops::Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..)?;
        if rest.is_empty() || self.error.is_some() {
            return None;
        }
        match BatchHeader::parse(rest) {
            Ok(h) if h.total_len() <= rest.len() => {
                let range = self.pos..self.pos + h.total_len();
                self.pos = range.end;
                Some((h, range))
            }
            Ok(h) => {
                self.error = Some(BatchError::Truncated {
                    needed: h.total_len(),
                    available: rest.len(),
                });
                None
            }
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::build_batch;

    #[test]
    fn validate_accepts_a_well_formed_batch_and_edits_keep_the_crc() {
        let mut batch = build_batch(
            Codec::None,
            1_000,
            &[(Some(b"k"), Some(b"v")), (None, Some(b"w"))],
        )
        .expect("encode");
        let h = validate(&batch).expect("valid");
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        set_base_offset(&mut batch, 42);
        set_partition_leader_epoch(&mut batch, 7);
        let h = validate(&batch).expect("still valid");
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 43);
        assert_eq!(h.partition_leader_epoch, 7);
        set_log_append_time(&mut batch, 99);
        let h = validate(&batch).expect("crc recomputed");
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn validate_rejects_a_flipped_bit() {
        let mut batch = build_batch(Codec::None, 1, &[(None, Some(b"hello"))]).expect("encode");
        let last = batch.len() - 1;
        batch[last] ^= 1;
        assert!(matches!(
            validate(&batch),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn iter_stops_at_a_torn_tail() {
        let a = build_batch(Codec::None, 1, &[(None, Some(b"a"))]).expect("encode");
        let b = build_batch(Codec::None, 2, &[(None, Some(b"b"))]).expect("encode");
        let mut buf = a.clone();
        buf.extend_from_slice(&b[..b.len() - 3]);
        let mut it = BatchIter::new(&buf);
        assert_eq!(it.by_ref().count(), 1);
        assert_eq!(it.position(), a.len());
        assert!(matches!(it.error(), Some(BatchError::Truncated { .. })));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = validate(&bytes);
            let _ = verify_stored(&bytes);
            let _ = BatchIter::new(&bytes).count();
            let _ = peek_offset_and_size(&bytes);
        }
    }
}
