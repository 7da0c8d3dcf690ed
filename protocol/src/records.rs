//! Work on the records inside a batch, for the rare paths that need it: re-compressing a batch
//! to the topic's codec, finding record timestamps for ListOffsets, and building batches for
//! tests and benchmarks. The produce and fetch paths never come here.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::batch::{self, BatchError, BatchHeader, HEADER_LEN};
use crate::codec::{Codec, CodecError};

/// Why records could not be read or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("malformed records: {0}")]
    Malformed(String),
}

fn to_compression(codec: Codec) -> Compression {
    match codec {
        Codec::None => Compression::None,
        Codec::Gzip => Compression::Gzip,
        Codec::Snappy => Compression::Snappy,
        Codec::Lz4 => Compression::Lz4,
        Codec::Zstd => Compression::Zstd,
    }
}

fn from_compression(c: Compression) -> Codec {
    match c {
        Compression::None => Codec::None,
        Compression::Gzip => Codec::Gzip,
        Compression::Snappy => Codec::Snappy,
        Compression::Lz4 => Codec::Lz4,
        Compression::Zstd => Codec::Zstd,
    }
}

/// Rewrites one validated batch so that its records are compressed with `target`; every other
/// header field is kept, and length and CRC are recomputed. The records themselves are not
/// parsed: the decompressed record section is re-compressed as a whole.
pub fn recompress(batch: &[u8], target: Codec, limit: usize) -> Result<Vec<u8>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    let body = batch
        .get(HEADER_LEN..header.total_len())
        .ok_or(BatchError::Truncated {
            needed: header.total_len(),
            available: batch.len(),
        })?;
    let plain = header.codec()?.decompress(body, limit)?;
    let packed = target.compress(&plain)?;
    let mut out = Vec::with_capacity(HEADER_LEN + packed.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&packed);
    let batch_length = (out.len() - batch::LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !0x07) | target as i16;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Decodes every record of one batch (decompressing with Strom's codecs).
pub fn decode(batch: &[u8], limit: usize) -> Result<Vec<Record>, RecordsError> {
    let mut buf = Bytes::copy_from_slice(batch);
    let decompress = |data: &mut Bytes, c: Compression| -> anyhow::Result<Bytes> {
        Ok(Bytes::from(from_compression(c).decompress(data, limit)?))
    };
    RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
        .map(|set| set.records)
        .map_err(|e| RecordsError::Malformed(e.to_string()))
}

/// A record as (key, value), either of which may be null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// An idempotent producer's fields in a batch header: its id, its epoch and the sequence
/// number of the batch's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

/// Builds one batch of v2 records with offsets from 0 and the given codec; for tests, benches
/// and tools that produce.
pub fn build_batch(
    codec: Codec,
    timestamp: i64,
    records: &[KeyValue<'_>],
) -> Result<Vec<u8>, RecordsError> {
    encode(codec, timestamp, None, records)
}

/// Like [`build_batch`], for an idempotent producer: the header carries its id, epoch and
/// base sequence, so the broker can deduplicate a retry of the very same batch.
pub fn build_idempotent_batch(
    codec: Codec,
    timestamp: i64,
    producer: ProducerFields,
    records: &[KeyValue<'_>],
) -> Result<Vec<u8>, RecordsError> {
    encode(codec, timestamp, Some(producer), records)
}

fn encode(
    codec: Codec,
    timestamp: i64,
    producer: Option<ProducerFields>,
    records: &[KeyValue<'_>],
) -> Result<Vec<u8>, RecordsError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer.map_or(-1, |p| p.id),
            producer_epoch: producer.map_or(-1, |p| p.epoch),
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps a batch together while offset - sequence stays constant, and
            // takes the first record's sequence as the base: -1 means "not idempotent".
            sequence: match producer {
                Some(p) => p.base_sequence.wrapping_add(i as i32),
                None => i as i32 - 1,
            },
            timestamp: timestamp + i as i64,
            key: k.map(Bytes::copy_from_slice),
            value: v.map(Bytes::copy_from_slice),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: to_compression(codec),
    };
    let compress =
        |plain: &mut BytesMut, out: &mut BytesMut, c: Compression| -> anyhow::Result<()> {
            out.extend_from_slice(&from_compression(c).compress(plain)?);
            Ok(())
        };
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        &records,
        &options,
        Some(compress),
    )
    .map_err(|e| RecordsError::Malformed(e.to_string()))?;
    Ok(buf.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recompress_keeps_records_and_header() {
        let recs: Vec<KeyValue<'_>> = vec![
            (Some(b"a"), Some(b"1")),
            (Some(b"b"), Some(b"2")),
            (None, None),
        ];
        let original = build_batch(Codec::Snappy, 500, &recs).expect("build");
        for target in [
            Codec::None,
            Codec::Gzip,
            Codec::Lz4,
            Codec::Zstd,
            Codec::Snappy,
        ] {
            let out = recompress(&original, target, 1 << 20).expect("recompress");
            let h = batch::validate(&out).expect("valid batch");
            assert_eq!(h.codec().expect("codec"), target);
            assert_eq!(h.records_count, 3);
            let decoded = decode(&out, 1 << 20).expect("decode");
            assert_eq!(decoded.len(), 3);
            assert_eq!(decoded[1].key.as_deref(), Some(&b"b"[..]));
            assert_eq!(decoded[2].value, None);
            assert_eq!(decoded[2].timestamp, 502);
        }
    }

    #[test]
    fn idempotent_batches_carry_the_producer_in_their_header() {
        let producer = ProducerFields {
            id: 4_000,
            epoch: 3,
            base_sequence: 17,
        };
        let recs: Vec<KeyValue<'_>> = vec![(None, Some(b"a")), (None, Some(b"b"))];
        let out = build_idempotent_batch(Codec::None, 9, producer, &recs).expect("build");
        let h = batch::validate(&out).expect("valid batch");
        assert_eq!(h.producer_id, 4_000);
        assert_eq!(h.producer_epoch, 3);
        assert_eq!(h.base_sequence, 17);
        assert_eq!(h.records_count, 2);
        let plain = batch::validate(&build_batch(Codec::None, 9, &recs).expect("build"))
            .expect("valid batch");
        assert_eq!((plain.producer_id, plain.base_sequence), (-1, -1));
    }
}
