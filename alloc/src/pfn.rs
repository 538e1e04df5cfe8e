//! Page-frame numbers and ranges of them: the only way pfnfs names pool memory.
//!
//! A [`Pfn`] is the index of a 4 KiB frame counted from the start of the pool (frame 0 holds
//! the first superblock slot). A [`PfnRange`] is a non-empty run of consecutive frames. There is
//! deliberately no per-frame type with state: every structure in pfnfs speaks in ranges.

use serde::{Deserialize, Serialize};

/// Bytes in one frame.
pub const FRAME_SIZE: u64 = 4096;
/// log2 of [`FRAME_SIZE`].
pub const FRAME_SHIFT: u32 = 12;
/// Frames in one 2 MiB huge extent.
pub const HUGE_FRAMES: u64 = 512;

/// A page-frame number: the index of a 4 KiB frame within the pool.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Pfn(pub u64);

impl Pfn {
    /// Byte offset of the frame's first byte within the pool. Saturates instead of wrapping;
    /// callers validate ranges against the pool length before using the result.
    pub fn byte_offset(self) -> u64 {
        self.0.saturating_mul(FRAME_SIZE)
    }

    /// True if the frame starts a 2 MiB-aligned region.
    pub fn is_huge_aligned(self) -> bool {
        self.0.is_multiple_of(HUGE_FRAMES)
    }

    /// The frame `frames` after this one, or `None` on overflow.
    pub fn checked_add(self, frames: u64) -> Option<Pfn> {
        self.0.checked_add(frames).map(Pfn)
    }
}

impl std::fmt::Display for Pfn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A non-empty run of `len` consecutive frames starting at `start`.
///
/// Invariant: `len > 0` and `start + len` does not overflow. Constructors enforce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PfnRange {
    /// First frame of the run.
    pub start: Pfn,
    /// Number of frames; never zero.
    pub len: u64,
}

impl PfnRange {
    /// A range of `len` frames from `start`; `None` if `len` is zero or the end overflows.
    pub fn new(start: Pfn, len: u64) -> Option<PfnRange> {
        if len == 0 || start.0.checked_add(len).is_none() {
            return None;
        }
        Some(PfnRange { start, len })
    }

    /// The range `[start, end)`; `None` if empty or reversed.
    pub fn from_bounds(start: Pfn, end: Pfn) -> Option<PfnRange> {
        if end.0 <= start.0 {
            return None;
        }
        Some(PfnRange {
            start,
            len: end.0 - start.0,
        })
    }

    /// One past the last frame.
    pub fn end(&self) -> Pfn {
        Pfn(self.start.0 + self.len)
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.len * FRAME_SIZE
    }

    /// True if `pfn` lies inside the range.
    pub fn contains(&self, pfn: Pfn) -> bool {
        pfn.0 >= self.start.0 && pfn.0 < self.end().0
    }

    /// True if the two ranges share at least one frame.
    pub fn overlaps(&self, other: &PfnRange) -> bool {
        self.start.0 < other.end().0 && other.start.0 < self.end().0
    }

    /// True if `other` lies entirely inside `self`.
    pub fn covers(&self, other: &PfnRange) -> bool {
        other.start.0 >= self.start.0 && other.end().0 <= self.end().0
    }

    /// Splits after `frames` frames: `(head, tail)`; either side is `None` when empty.
    pub fn split_at(&self, frames: u64) -> (Option<PfnRange>, Option<PfnRange>) {
        let frames = frames.min(self.len);
        (
            PfnRange::new(self.start, frames),
            PfnRange::new(Pfn(self.start.0 + frames), self.len - frames),
        )
    }

    /// The sub-range of `len` frames starting `skip` frames in; `None` if it does not fit.
    pub fn sub(&self, skip: u64, len: u64) -> Option<PfnRange> {
        if skip.checked_add(len)? > self.len {
            return None;
        }
        PfnRange::new(Pfn(self.start.0 + skip), len)
    }

    /// True if the range starts on a 2 MiB boundary and spans a whole number of 2 MiB units.
    pub fn is_huge(&self) -> bool {
        self.start.is_huge_aligned() && self.len.is_multiple_of(HUGE_FRAMES)
    }
}

impl std::fmt::Display for PfnRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:#x}+{}]", self.start.0, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_rejects_empty_and_overflow() {
        assert!(PfnRange::new(Pfn(1), 0).is_none());
        assert!(PfnRange::new(Pfn(u64::MAX), 2).is_none());
        assert!(PfnRange::from_bounds(Pfn(5), Pfn(5)).is_none());
        let r = PfnRange::new(Pfn(10), 5).unwrap();
        assert_eq!(r.end(), Pfn(15));
        assert_eq!(
            r.split_at(2),
            (PfnRange::new(Pfn(10), 2), PfnRange::new(Pfn(12), 3))
        );
        assert_eq!(r.split_at(5).1, None);
        assert_eq!(r.sub(1, 4), PfnRange::new(Pfn(11), 4));
        assert_eq!(r.sub(2, 4), None);
    }
}
