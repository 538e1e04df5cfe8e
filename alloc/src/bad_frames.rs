//! [`BadFrames`]: the frames of a pool whose memory failed, so that nothing touches them again.
//!
//! Why a list of ranges and not a mark per frame: the design keeps no per-frame state, and bad
//! frames are rare (a media error poisons a page or a few; a lost stretch of a pool file is
//! one range). The list is sorted and coalesced; an empty list costs every access one relaxed
//! load.
//!
//! The [`crate::Pool`] adds a frame when an access to it faults ([`crate::guarded`]) and
//! refuses every later access that overlaps the list, with EIO at once: on real persistent
//! memory, touching poison again can take the machine down rather than raise SIGBUS. The
//! [`crate::ExtentAllocator`] holds the same list and never takes a bad frame into its free
//! set, so a bad frame freed by its file is never allocated again. The filesystem keeps the
//! list on the pool (the metadata tree's bad-frame table) and gives it back at mount.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::pfn::{Pfn, PfnRange};

/// Frames recorded as bad; shared by a pool and its allocator (see the module docs).
#[derive(Debug, Default)]
pub struct BadFrames {
    /// Sorted, disjoint, not adjacent.
    ranges: RwLock<Vec<PfnRange>>,
    /// Frames in `ranges`, for the empty check without the lock.
    frames: AtomicU64,
    /// Bumped by every change, so that a writer of the list can tell it is behind.
    changes: AtomicU64,
}

impl BadFrames {
    /// An empty list.
    pub fn new() -> BadFrames {
        BadFrames::default()
    }

    /// True if no frame is bad (one relaxed load).
    pub fn is_empty(&self) -> bool {
        self.frames.load(Ordering::Acquire) == 0
    }

    /// Frames in the list.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }

    /// Changes made so far (0 for a list never changed since it was made).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// The list, sorted and coalesced.
    pub fn list(&self) -> Vec<PfnRange> {
        self.ranges.read().clone()
    }

    /// Adds `range`; returns the frames that were not in the list before (0: nothing new).
    pub fn add(&self, range: PfnRange) -> u64 {
        if range.len == 0 {
            return 0;
        }
        let mut ranges = self.ranges.write();
        let before: u64 = ranges.iter().map(|r| r.len).sum();
        ranges.push(range);
        *ranges = coalesce(std::mem::take(&mut *ranges));
        let after: u64 = ranges.iter().map(|r| r.len).sum();
        if after != before {
            self.frames.store(after, Ordering::Release);
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        after - before
    }

    /// Replaces the list (a mount loading it from the pool).
    pub fn set(&self, list: impl IntoIterator<Item = PfnRange>) {
        let mut ranges = self.ranges.write();
        *ranges = coalesce(list.into_iter().filter(|r| r.len > 0).collect());
        self.frames
            .store(ranges.iter().map(|r| r.len).sum(), Ordering::Release);
    }

    /// The first bad piece of `range`, if any.
    pub fn first_in(&self, range: PfnRange) -> Option<PfnRange> {
        if self.is_empty() || range.len == 0 {
            return None;
        }
        let ranges = self.ranges.read();
        // The first range ending after `range.start`, if it starts before `range`'s end.
        let i = ranges.partition_point(|r| r.end() <= range.start);
        let r = ranges.get(i)?;
        let start = r.start.0.max(range.start.0);
        let end = r.end().0.min(range.end().0);
        (start < end).then(|| span(start, end - start))
    }

    /// The pieces of `range` that are not bad, in order.
    pub fn good_parts(&self, range: PfnRange) -> Vec<PfnRange> {
        if self.is_empty() {
            return vec![range];
        }
        let ranges = self.ranges.read();
        let mut out = Vec::new();
        let mut at = range.start.0;
        let end = range.end().0;
        let i = ranges.partition_point(|r| r.end() <= range.start);
        for r in &ranges[i..] {
            if r.start.0 >= end {
                break;
            }
            if r.start.0 > at {
                out.push(span(at, r.start.0 - at));
            }
            at = at.max(r.end().0);
        }
        if at < end {
            out.push(span(at, end - at));
        }
        out
    }
}

fn span(start: u64, len: u64) -> PfnRange {
    PfnRange {
        start: Pfn(start),
        len,
    }
}

/// Sorts and merges overlapping or adjacent ranges.
fn coalesce(mut v: Vec<PfnRange>) -> Vec<PfnRange> {
    v.sort_by_key(|r| r.start);
    let mut out: Vec<PfnRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start.0 <= last.end().0 => {
                let end = last.end().0.max(r.end().0);
                last.len = end - last.start.0;
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, len: u64) -> PfnRange {
        span(start, len)
    }

    #[test]
    fn ranges_merge_and_split_what_they_cover() {
        let b = BadFrames::new();
        assert!(b.is_empty());
        assert_eq!(b.first_in(r(0, 100)), None);
        assert_eq!(b.good_parts(r(10, 5)), vec![r(10, 5)]);
        assert_eq!(b.add(r(20, 2)), 2);
        assert_eq!(b.add(r(21, 1)), 0, "already bad");
        assert_eq!(b.changes(), 1);
        assert_eq!(b.add(r(22, 1)), 1, "adjacent: merged");
        assert_eq!(b.add(r(40, 1)), 1);
        assert_eq!(b.list(), vec![r(20, 3), r(40, 1)]);
        assert_eq!(b.frames(), 4);
        assert_eq!(b.first_in(r(0, 20)), None);
        assert_eq!(b.first_in(r(0, 21)), Some(r(20, 1)));
        assert_eq!(b.first_in(r(22, 30)), Some(r(22, 1)));
        assert_eq!(b.first_in(r(23, 17)), None);
        assert_eq!(b.first_in(r(23, 18)), Some(r(40, 1)));
        assert_eq!(
            b.good_parts(r(10, 40)),
            vec![r(10, 10), r(23, 17), r(41, 9)]
        );
        assert_eq!(b.good_parts(r(20, 3)), vec![]);
        assert_eq!(b.good_parts(r(21, 21)), vec![r(23, 17), r(41, 1)]);
        b.set([r(5, 1), r(6, 1)]);
        assert_eq!(b.list(), vec![r(5, 2)]);
        assert_eq!(b.frames(), 2);
    }
}
