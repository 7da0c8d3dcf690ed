//! Shared inputs for Strom's criterion benchmarks (`cargo bench -p strom-benches`).

use strom_protocol::codec::Codec;
use strom_protocol::records::{build_batch, KeyValue, RecordsError};

/// A batch of `count` records of `size`-byte values, as a producer would send it.
pub fn sample_batch(codec: Codec, count: usize, size: usize) -> Result<Vec<u8>, RecordsError> {
    let values: Vec<Vec<u8>> = (0..count).map(|i| vec![(i % 251) as u8; size]).collect();
    let records: Vec<KeyValue<'_>> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    build_batch(codec, 1_700_000_000_000, &records)
}
