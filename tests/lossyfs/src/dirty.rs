//! The unsynced data of one file: byte ranges written through the mount but not yet made
//! durable by an `fsync`/`fdatasync` of that file. Pure logic, no IO, so it is unit-tested
//! without FUSE.
//!
//! The file a reader sees is the backing file with these ranges laid over it, and its length
//! is the larger of the backing file's length and the end of the last range. A power loss
//! ([`Dirty::discard`]) forgets every range, leaving only what the backing file holds.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included};

/// Unsynced ranges of one file, keyed by start offset. Invariant: ranges are non-empty and
/// neither overlap nor touch (a write that reaches a neighbour is merged into it), so a typical
/// append-only file has a single range that grows in place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    ranges: BTreeMap<u64, Vec<u8>>,
    /// Sum of the ranges' lengths, kept so accounting is O(1).
    bytes: u64,
}

fn end_of(start: u64, data: &[u8]) -> u64 {
    start.saturating_add(data.len() as u64)
}

impl Dirty {
    /// No unsynced data.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Unsynced bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// End of the last unsynced range (0 without any): the file is at least this long.
    pub fn end(&self) -> u64 {
        self.ranges
            .iter()
            .next_back()
            .map_or(0, |(&start, data)| end_of(start, data))
    }

    /// The ranges as (offset, bytes), in offset order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.ranges.iter().map(|(&s, d)| (s, d.as_slice()))
    }

    /// Records `data` written at `offset`, over anything written there before. Returns how
    /// many more bytes are held afterwards (bytes that were not dirty before).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        if data.is_empty() {
            return 0;
        }
        let end = end_of(offset, data);
        // Every range that overlaps or touches [offset, end): at most one starts before
        // `offset` (ranges do not overlap), the rest start inside (offset, end].
        let mut touching: Vec<u64> = Vec::new();
        if let Some((&start, old)) = self.ranges.range(..=offset).next_back() {
            if end_of(start, old) >= offset {
                touching.push(start);
            }
        }
        touching.extend(
            self.ranges
                .range((Excluded(offset), Included(end)))
                .map(|(&s, _)| s),
        );
        let Some(&first) = touching.first() else {
            self.ranges.insert(offset, data.to_vec());
            self.bytes += data.len() as u64;
            return data.len() as u64;
        };
        let new_start = first.min(offset);
        let mut new_end = end;
        let mut old_bytes = 0u64;
        let mut olds: Vec<(u64, Vec<u8>)> = Vec::with_capacity(touching.len());
        for s in touching {
            if let Some(old) = self.ranges.remove(&s) {
                new_end = new_end.max(end_of(s, &old));
                old_bytes += old.len() as u64;
                olds.push((s, old));
            }
        }
        let len = usize::try_from(new_end - new_start).unwrap_or(usize::MAX);
        // Reuse the first range's buffer when it starts the merged range: an append at the
        // end of a range then extends it in place (amortised O(appended bytes)).
        let mut buf = match olds.first_mut() {
            Some((s, old)) if *s == new_start => std::mem::take(old),
            _ => Vec::with_capacity(len),
        };
        buf.resize(len, 0);
        for (s, old) in &olds {
            if !old.is_empty() {
                copy_into(&mut buf, s - new_start, old);
            }
        }
        copy_into(&mut buf, offset - new_start, data);
        let grown = buf.len() as u64 - old_bytes;
        self.bytes = self.bytes - old_bytes + buf.len() as u64;
        self.ranges.insert(new_start, buf);
        grown
    }

    /// Lays the unsynced bytes that fall inside `[offset, offset + buf.len())` over `buf`
    /// (which the caller filled from the backing file, zeros past its end).
    pub fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let end = end_of(offset, buf);
        let from = self
            .ranges
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&s, _)| s);
        for (&s, data) in self.ranges.range(from..end) {
            let lo = s.max(offset);
            let hi = end_of(s, data).min(end);
            if lo >= hi {
                continue;
            }
            let src = data.get(to_usize(lo - s)..to_usize(hi - s));
            let dst = buf.get_mut(to_usize(lo - offset)..to_usize(hi - offset));
            if let (Some(src), Some(dst)) = (src, dst) {
                dst.copy_from_slice(src);
            }
        }
    }

    /// The file was truncated to `size`: forgets unsynced bytes at or after it. Returns how
    /// many bytes were dropped.
    pub fn truncate(&mut self, size: u64) -> u64 {
        let cut = self.ranges.split_off(&size);
        let mut dropped: u64 = cut.values().map(|d| d.len() as u64).sum();
        if let Some((&s, data)) = self.ranges.iter_mut().next_back() {
            if end_of(s, data) > size {
                let keep = to_usize(size - s);
                dropped += (data.len() - keep) as u64;
                data.truncate(keep);
                if data.is_empty() {
                    self.ranges.remove(&s);
                }
            }
        }
        self.bytes -= dropped;
        dropped
    }

    /// Power loss: forgets every unsynced byte. Returns how many were dropped.
    pub fn discard(&mut self) -> u64 {
        self.ranges.clear();
        std::mem::take(&mut self.bytes)
    }

    /// fsync: hands each range, in offset order, to `write` (which stores it in the backing
    /// file) and forgets the ranges it accepted. On the first error the remaining ranges stay
    /// unsynced and the error is returned with the bytes synced before it.
    pub fn sync_to<E>(
        &mut self,
        mut write: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<u64, (u64, E)> {
        let mut synced = 0u64;
        while let Some((&s, data)) = self.ranges.iter().next() {
            if let Err(e) = write(s, data) {
                return Err((synced, e));
            }
            let n = data.len() as u64;
            self.ranges.remove(&s);
            self.bytes -= n;
            synced += n;
        }
        Ok(synced)
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Copies `src` into `buf` at `at`; `buf` is always large enough here (it was sized to the
/// union of the ranges), and a bad bound is ignored rather than panicking.
fn copy_into(buf: &mut [u8], at: u64, src: &[u8]) {
    let at = to_usize(at);
    if let Some(dst) = buf.get_mut(at..at.saturating_add(src.len())) {
        dst.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a reader sees: `backing` with `d` laid over it.
    fn view(backing: &[u8], d: &Dirty) -> Vec<u8> {
        let len = (backing.len() as u64).max(d.end()) as usize;
        let mut out = vec![0u8; len];
        out[..backing.len()].copy_from_slice(backing);
        d.overlay(0, &mut out);
        out
    }

    fn check_invariants(d: &Dirty) {
        let mut prev_end: Option<u64> = None;
        let mut total = 0;
        for (s, data) in d.ranges() {
            assert!(!data.is_empty(), "empty range at {s}");
            if let Some(e) = prev_end {
                assert!(s > e, "ranges overlap or touch at {s} (previous end {e})");
            }
            prev_end = Some(s + data.len() as u64);
            total += data.len() as u64;
        }
        assert_eq!(total, d.bytes(), "byte count");
    }

    #[test]
    fn appends_grow_one_range() {
        let mut d = Dirty::default();
        assert_eq!(d.write(100, b"abc"), 3);
        assert_eq!(d.write(103, b"def"), 3);
        assert_eq!(d.write(106, b"g"), 1);
        assert_eq!(d.ranges().collect::<Vec<_>>(), vec![(100, &b"abcdefg"[..])]);
        assert_eq!(d.end(), 107);
        check_invariants(&d);
    }

    #[test]
    fn overwrite_merges_and_counts_only_new_bytes() {
        let mut d = Dirty::default();
        d.write(0, b"aaaa");
        d.write(10, b"bbbb");
        // Covers the gap and overlaps both neighbours.
        assert_eq!(d.write(2, b"XXXXXXXXXX"), 6);
        assert_eq!(
            d.ranges().collect::<Vec<_>>(),
            vec![(0, &b"aaXXXXXXXXXXbb"[..])]
        );
        // Entirely inside: nothing new.
        assert_eq!(d.write(3, b"yy"), 0);
        assert_eq!(view(b"", &d), b"aaXyyXXXXXXXbb");
        check_invariants(&d);
    }

    #[test]
    fn write_before_a_range_that_it_touches() {
        let mut d = Dirty::default();
        d.write(5, b"world");
        d.write(0, b"hello");
        assert_eq!(
            d.ranges().collect::<Vec<_>>(),
            vec![(0, &b"helloworld"[..])]
        );
        check_invariants(&d);
    }

    #[test]
    fn read_merges_backing_and_dirty() {
        let mut d = Dirty::default();
        d.write(2, b"XY");
        d.write(8, b"tail!"); // past the backing end, with a hole at 6..8
        let backing = b"012345";
        assert_eq!(view(backing, &d), b"01XY45\0\0tail!");
        let mut part = *b"2345";
        d.overlay(2, &mut part);
        assert_eq!(&part, b"XY45");
        let mut part = [0u8; 3];
        d.overlay(9, &mut part);
        assert_eq!(&part, b"ail");
    }

    #[test]
    fn truncate_cuts_ranges() {
        let mut d = Dirty::default();
        d.write(0, b"abcdef");
        d.write(10, b"ghij");
        assert_eq!(d.truncate(12), 2);
        assert_eq!(d.end(), 12);
        assert_eq!(d.truncate(3), 5);
        assert_eq!(d.ranges().collect::<Vec<_>>(), vec![(0, &b"abc"[..])]);
        assert_eq!(d.truncate(0), 3);
        assert!(d.is_empty());
        check_invariants(&d);
    }

    #[test]
    fn discard_forgets_everything() {
        let mut d = Dirty::default();
        d.write(0, b"abc");
        d.write(100, b"def");
        assert_eq!(d.discard(), 6);
        assert!(d.is_empty());
        assert_eq!(d.bytes(), 0);
        assert_eq!(view(b"durable", &d), b"durable");
    }

    #[test]
    fn sync_keeps_what_failed() {
        let mut d = Dirty::default();
        d.write(0, b"abc");
        d.write(100, b"def");
        let mut seen = Vec::new();
        let r = d.sync_to(|off, data| {
            if off == 100 {
                return Err("disk full");
            }
            seen.push((off, data.to_vec()));
            Ok(())
        });
        assert_eq!(r, Err((3, "disk full")));
        assert_eq!(seen, vec![(0, b"abc".to_vec())]);
        assert_eq!(d.ranges().collect::<Vec<_>>(), vec![(100, &b"def"[..])]);
        assert_eq!(d.sync_to(|_, _| Ok::<(), ()>(())), Ok(3));
        assert!(d.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
        Sync,
        Crash,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..200, proptest::collection::vec(any::<u8>(), 1..40))
                .prop_map(|(o, d)| Op::Write(o, d)),
            1 => (0u64..220).prop_map(Op::Truncate),
            1 => Just(Op::Sync),
            1 => Just(Op::Crash),
        ]
    }

    proptest! {
        /// Against a model with two byte vectors: what a reader sees (`cached`) and what is
        /// durable (`disk`). Truncation is applied to both, as the file system does.
        #[test]
        fn matches_a_page_cache_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut d = Dirty::default();
            let mut disk: Vec<u8> = Vec::new();
            let mut cached: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(o, data) => {
                        let o = o as usize;
                        if cached.len() < o + data.len() {
                            cached.resize(o + data.len(), 0);
                        }
                        cached[o..o + data.len()].copy_from_slice(&data);
                        d.write(o as u64, &data);
                    }
                    Op::Truncate(n) => {
                        disk.resize(n as usize, 0);
                        cached.resize(n as usize, 0);
                        d.truncate(n);
                    }
                    Op::Sync => {
                        d.sync_to(|off, data| {
                            let off = off as usize;
                            if disk.len() < off + data.len() {
                                disk.resize(off + data.len(), 0);
                            }
                            disk[off..off + data.len()].copy_from_slice(data);
                            Ok::<(), ()>(())
                        }).map_err(|_| TestCaseError::fail("sync failed"))?;
                        prop_assert!(d.is_empty());
                        prop_assert_eq!(&disk, &cached);
                    }
                    Op::Crash => {
                        d.discard();
                        cached = disk.clone();
                    }
                }
                check_invariants(&d);
                prop_assert_eq!(view(&disk, &d), cached.clone());
            }
        }
    }
}
