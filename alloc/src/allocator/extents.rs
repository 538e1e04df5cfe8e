//! The free extents of one allocation group, indexed twice.
//!
//! Invariants (checked by [`FreeExtents::check`]):
//! - `by_start` maps the first frame of every free extent to its length; `by_len` holds exactly
//!   the same extents as `(len, start)`. Lengths are never zero.
//! - Extents do not overlap and are never adjacent: two free extents that touch are always
//!   merged into one ("coalescing is complete").
//! - `free_frames` is the sum of the lengths.
//! - Every extent lies inside the group's range (the owner guarantees it: it only inserts
//!   ranges it has clipped to the group).
//!
//! Memory is proportional to the number of free extents: one `BTreeMap` entry and one
//! `BTreeSet` entry (16 bytes of payload each) per extent. Nothing is kept per frame.
//!
//! All arithmetic here stays inside the group's range, whose end fits in a `u64` because it is
//! the end of a valid [`PfnRange`](crate::pfn::PfnRange); callers pass only such ranges.

use std::collections::{BTreeMap, BTreeSet};

use crate::pfn::HUGE_FRAMES;

/// A free extent as `(start, len)` in frames.
pub(super) type Extent = (u64, u64);

/// The free extents of one group. Not synchronised: the group's mutex guards it.
#[derive(Debug, Default)]
pub(super) struct FreeExtents {
    /// start -> len.
    by_start: BTreeMap<u64, u64>,
    /// (len, start): the length index; iteration order is best fit, ties lowest start.
    by_len: BTreeSet<(u64, u64)>,
    /// Sum of all lengths.
    free_frames: u64,
}

impl FreeExtents {
    /// Builds the indexes in bulk from extents sorted by start, disjoint and non-adjacent
    /// (the caller has validated and coalesced them). Bulk-built B-trees have full nodes:
    /// about half the memory of the same set built by one insert after another.
    pub(super) fn from_sorted(extents: Vec<Extent>) -> FreeExtents {
        debug_assert!(extents.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0));
        let free_frames = extents.iter().map(|&(_, l)| l).sum();
        let by_start: BTreeMap<u64, u64> = extents.iter().copied().collect();
        let mut by_len: Vec<(u64, u64)> = extents.into_iter().map(|(s, l)| (l, s)).collect();
        by_len.sort_unstable();
        let by_len: BTreeSet<(u64, u64)> = by_len.into_iter().collect();
        FreeExtents {
            by_start,
            by_len,
            free_frames,
        }
    }

    /// Number of free extents.
    pub(super) fn extent_count(&self) -> usize {
        self.by_start.len()
    }

    /// Free frames in this group.
    pub(super) fn free_frames(&self) -> u64 {
        self.free_frames
    }

    /// The extents in start order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.by_start.iter().map(|(&s, &l)| (s, l))
    }

    /// The largest extent (ties: highest start), if any.
    pub(super) fn largest(&self) -> Option<Extent> {
        self.by_len.last().map(|&(l, s)| (s, l))
    }

    /// Length of the largest extent, 0 when the group is full.
    pub(super) fn largest_len(&self) -> u64 {
        self.by_len.last().map_or(0, |&(l, _)| l)
    }

    fn insert_raw(&mut self, start: u64, len: u64) {
        debug_assert!(len > 0);
        let old = self.by_start.insert(start, len);
        debug_assert!(old.is_none(), "free extent at {start:#x} inserted twice");
        let fresh = self.by_len.insert((len, start));
        debug_assert!(fresh);
        self.free_frames += len;
    }

    fn remove_raw(&mut self, start: u64, len: u64) {
        let old = self.by_start.remove(&start);
        debug_assert_eq!(old, Some(len));
        let was = self.by_len.remove(&(len, start));
        debug_assert!(was);
        self.free_frames -= len;
    }

    /// The free extent containing frame `pfn`, if `pfn` is free.
    pub(super) fn containing(&self, pfn: u64) -> Option<Extent> {
        let (&s, &l) = self.by_start.range(..=pfn).next_back()?;
        (pfn - s < l).then_some((s, l))
    }

    /// True if any frame of `[start, end)` is free.
    pub(super) fn overlaps(&self, start: u64, end: u64) -> bool {
        if let Some((&s, &l)) = self.by_start.range(..=start).next_back()
            && s + l > start
        {
            return true;
        }
        self.by_start.range(start..end).next().is_some()
    }

    /// The free extent that covers all of `[start, start + len)`, if there is one.
    pub(super) fn covering(&self, start: u64, len: u64) -> Option<Extent> {
        let (s, l) = self.containing(start)?;
        (start + len <= s + l).then_some((s, l))
    }

    /// Adds `[start, start + len)` to the free set, merging it with the extents that end at
    /// `start` and begin at `start + len`. The caller has checked that no frame of it is free.
    pub(super) fn insert_coalesce(&mut self, start: u64, len: u64) {
        debug_assert!(!self.overlaps(start, start + len));
        let mut new_start = start;
        let mut new_end = start + len;
        if let Some((&ps, &pl)) = self.by_start.range(..start).next_back()
            && ps + pl == start
        {
            self.remove_raw(ps, pl);
            new_start = ps;
        }
        if let Some(&nl) = self.by_start.get(&new_end) {
            self.remove_raw(new_end, nl);
            new_end += nl;
        }
        self.insert_raw(new_start, new_end - new_start);
    }

    /// Takes `[at, at + frames)` out of the free extent `extent`, which covers it. The head and
    /// tail left over stay free; they cannot touch another free extent because `extent` was
    /// coalesced.
    pub(super) fn take(&mut self, extent: Extent, at: u64, frames: u64) {
        let (s, l) = extent;
        debug_assert!(frames > 0 && at >= s && at + frames <= s + l);
        self.remove_raw(s, l);
        if at > s {
            self.insert_raw(s, at - s);
        }
        let end = s + l;
        let taken_end = at + frames;
        if end > taken_end {
            self.insert_raw(taken_end, end - taken_end);
        }
    }

    /// Best fit: the smallest extent of at least `frames` frames, ties lowest start.
    pub(super) fn best_fit(&self, frames: u64) -> Option<Extent> {
        self.by_len
            .range((frames, 0)..)
            .next()
            .map(|&(l, s)| (s, l))
    }

    /// An extent that holds `frames` frames from a 2 MiB-aligned start, and that start.
    ///
    /// First the smallest extent of at least `frames + 511` frames (any such extent has an
    /// aligned frame among its first 512, so it always fits); then the extents of length in
    /// `[frames, frames + 511)`, smallest first, checking the alignment of each. That second
    /// scan visits at most `group_len / frames` extents, because they all lie in one group and
    /// are disjoint.
    pub(super) fn aligned_fit(&self, frames: u64) -> Option<(Extent, u64)> {
        let fits = |s: u64, l: u64| -> Option<u64> {
            let at = s.checked_next_multiple_of(HUGE_FRAMES)?;
            let end = at.checked_add(frames)?;
            (end <= s + l).then_some(at)
        };
        let roomy = frames.checked_add(HUGE_FRAMES - 1);
        if let Some(roomy) = roomy
            && let Some(&(l, s)) = self.by_len.range((roomy, 0)..).next()
            && let Some(at) = fits(s, l)
        {
            return Some(((s, l), at));
        }
        let band = match roomy {
            Some(roomy) => self.by_len.range((frames, 0)..(roomy, 0)),
            None => self.by_len.range((frames, 0)..),
        };
        for &(l, s) in band {
            if let Some(at) = fits(s, l) {
                return Some(((s, l), at));
            }
        }
        None
    }

    /// Checks every invariant listed in the module header; `lo..hi` is the group's range.
    pub(super) fn check(&self, lo: u64, hi: u64) -> Result<(), String> {
        if self.by_start.len() != self.by_len.len() {
            return Err(format!(
                "index sizes differ: {} by start, {} by length",
                self.by_start.len(),
                self.by_len.len()
            ));
        }
        let mut sum: u64 = 0;
        let mut prev_end: Option<u64> = None;
        for (&s, &l) in &self.by_start {
            if l == 0 {
                return Err(format!("zero-length free extent at {s:#x}"));
            }
            let end = s
                .checked_add(l)
                .ok_or_else(|| format!("free extent {s:#x}+{l} overflows"))?;
            if s < lo || end > hi {
                return Err(format!(
                    "free extent {s:#x}+{l} lies outside its group [{lo:#x}, {hi:#x})"
                ));
            }
            if !self.by_len.contains(&(l, s)) {
                return Err(format!(
                    "free extent {s:#x}+{l} is missing from the length index"
                ));
            }
            if let Some(pe) = prev_end {
                if s < pe {
                    return Err(format!(
                        "free extent {s:#x}+{l} overlaps the one ending at {pe:#x}"
                    ));
                }
                if s == pe {
                    return Err(format!(
                        "free extent {s:#x}+{l} touches the one ending at {pe:#x} (not coalesced)"
                    ));
                }
            }
            prev_end = Some(end);
            sum = sum
                .checked_add(l)
                .ok_or_else(|| "free frame count overflows".to_string())?;
        }
        if sum != self.free_frames {
            return Err(format!(
                "group counter says {} free frames, its extents hold {sum}",
                self.free_frames
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(extents: &[Extent]) -> FreeExtents {
        let mut f = FreeExtents::default();
        for &(s, l) in extents {
            f.insert_coalesce(s, l);
        }
        f
    }

    #[test]
    fn insert_coalesces_both_sides() {
        let mut f = set(&[(10, 5), (20, 5)]);
        f.insert_coalesce(15, 5);
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![(10, 15)]);
        assert_eq!(f.free_frames(), 15);
        f.check(0, 100).unwrap();
    }

    #[test]
    fn take_leaves_head_and_tail() {
        let mut f = set(&[(10, 20)]);
        f.take((10, 20), 15, 5);
        assert_eq!(f.iter().collect::<Vec<_>>(), vec![(10, 5), (20, 10)]);
        f.check(0, 100).unwrap();
        assert!(f.overlaps(14, 15));
        assert!(!f.overlaps(15, 20));
        assert!(f.overlaps(19, 21));
        assert_eq!(f.covering(21, 9), Some((20, 10)));
        assert_eq!(f.covering(21, 10), None);
    }

    #[test]
    fn aligned_fit_prefers_roomy_then_band() {
        // 600 frames from 100: no aligned run of 512. 1100 frames from 1000: aligned at 1024.
        let f = set(&[(100, 600), (1000, 1100)]);
        assert_eq!(f.aligned_fit(512), Some(((1000, 1100), 1024)));
        // Only band extents: 512 from 1536 is aligned; 520 from 3000 is not.
        let f = set(&[(3000, 520), (1536, 512)]);
        assert_eq!(f.aligned_fit(512), Some(((1536, 512), 1536)));
        let f = set(&[(3000, 520)]);
        assert_eq!(f.aligned_fit(512), None);
        assert_eq!(f.aligned_fit(u64::MAX), None);
    }

    #[test]
    fn check_reports_uncoalesced() {
        let mut f = FreeExtents::default();
        f.insert_raw(0, 5);
        f.insert_raw(5, 5);
        assert!(f.check(0, 100).unwrap_err().contains("not coalesced"));
    }
}
