//! Response frames as a list of buffers, so that a fetch response references the record bytes
//! read from the log instead of copying them into one contiguous response buffer.

use std::collections::HashMap;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Record slices shorter than this are copied: a separate buffer costs more than the copy.
const BY_REFERENCE_MIN: usize = 4096;

/// An encoded response, length prefix included, in order.
#[derive(Debug, Default)]
pub struct Frame(pub Vec<Bytes>);

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Self {
        Self(vec![b])
    }
}

impl Frame {
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }

    /// The whole frame in one buffer (tests and tools; the server writes the parts).
    pub fn to_bytes(&self) -> Bytes {
        match self.0.as_slice() {
            [one] => one.clone(),
            parts => {
                let mut out = BytesMut::with_capacity(self.len());
                for p in parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }
}

/// A `ByteBufMut` that copies small writes into the current buffer and, when the encoder
/// writes a slice that is exactly one of the registered `Bytes`, ends the current buffer and
/// appends a reference to that `Bytes` instead of copying it.
///
/// Seeking back into a finished buffer is impossible, so this is only for messages whose
/// encoding uses no gaps (Fetch responses use none: every length is computed up front).
pub struct SegmentedBuf {
    done: Vec<Bytes>,
    cur: BytesMut,
    /// Offset of `cur`'s first byte in the whole frame.
    base: usize,
    by_ptr: HashMap<(usize, usize), Bytes>,
}

impl SegmentedBuf {
    /// `capacity` is for the copied part; `refs` are the buffers to reference when written.
    pub fn new(capacity: usize, refs: impl IntoIterator<Item = Bytes>) -> Self {
        let by_ptr = refs
            .into_iter()
            .filter(|b| b.len() >= BY_REFERENCE_MIN)
            .map(|b| ((b.as_ptr() as usize, b.len()), b))
            .collect();
        Self {
            done: Vec::new(),
            cur: BytesMut::with_capacity(capacity),
            base: 0,
            by_ptr,
        }
    }

    /// Bytes the registered buffers will contribute if written.
    pub fn referenced_len(refs: &[Bytes]) -> usize {
        refs.iter()
            .filter(|b| b.len() >= BY_REFERENCE_MIN)
            .map(Bytes::len)
            .sum()
    }

    pub fn finish(mut self) -> Frame {
        if !self.cur.is_empty() {
            self.done.push(self.cur.freeze());
        }
        Frame(self.done)
    }
}

// SAFETY: every method forwards to `cur`, a `BytesMut`, whose implementation upholds the
// contract; `put_slice` only adds whole buffers between the forwarded writes.
unsafe impl BufMut for SegmentedBuf {
    fn remaining_mut(&self) -> usize {
        self.cur.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut()`, which is `cur`'s.
        unsafe { self.cur.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.cur.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= BY_REFERENCE_MIN {
            if let Some(b) = self.by_ptr.get(&(src.as_ptr() as usize, src.len())) {
                self.base += self.cur.len() + b.len();
                let head = self.cur.split().freeze();
                if !head.is_empty() {
                    self.done.push(head);
                }
                self.done.push(b.clone());
                return;
            }
        }
        self.cur.extend_from_slice(src);
    }
}

impl ByteBufMut for SegmentedBuf {
    fn offset(&self) -> usize {
        self.base + self.cur.len()
    }

    fn seek(&mut self, offset: usize) {
        // Forward only (see the type's documentation); backwards would be a bug in its use.
        let within = offset.saturating_sub(self.base);
        if within >= self.cur.len() {
            self.cur.resize(within, 0);
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let start = r.start.saturating_sub(self.base);
        let end = r.end.saturating_sub(self.base).min(self.cur.len());
        &mut self.cur[start.min(end)..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn a_segmented_fetch_response_is_byte_identical_and_references_the_records() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let small = Bytes::from_static(b"tiny");
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                PartitionData::default()
                    .with_partition_index(0)
                    .with_records(Some(big.clone())),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_records(Some(small.clone())),
                PartitionData::default()
                    .with_partition_index(2)
                    .with_records(Some(big.clone())),
            ])]);
        for version in [4, 12, 16] {
            let mut plain = BytesMut::new();
            resp.encode(&mut plain, version).unwrap();
            let mut seg = SegmentedBuf::new(64, [big.clone(), small.clone()]);
            resp.encode(&mut seg, version).unwrap();
            let frame = seg.finish();
            assert_eq!(frame.to_bytes(), plain.freeze(), "v{version}");
            let referenced = frame
                .0
                .iter()
                .filter(|p| p.as_ptr() == big.as_ptr())
                .count();
            assert_eq!(
                referenced, 2,
                "v{version}: both large record sets by reference"
            );
        }
    }
}
