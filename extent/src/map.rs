//! [`ExtentMap`]: logical frame -> PFN range, one entry per extent.
//!
//! A file's data is a sorted map from the first logical frame of each extent to the pool frames
//! that hold it and whether they were ever written:
//!
//! ```text
//! BTreeMap<file_frame, (PfnRange, unwritten)>
//!
//!   file frames   0        16            40      48
//!                 [ A: 16 ][ hole: 24   ][ B: 8 ]  ...
//!   pool frames   0x2000   -             0x9100
//! ```
//!
//! # Invariants
//!
//! [`ExtentMap::check_invariants`] checks all of them; every public mutator keeps them.
//!
//! 1. **No empty extent**: every extent maps at least one frame.
//! 2. **No overflow**: `file_frame + len` and `pfns.start + len` fit in a `u64`, so
//!    [`Extent::file_end`] and [`PfnRange::end`] are exact.
//! 3. **No overlap in the file**: extents are disjoint in logical space (sorted by key, each
//!    one ends at or before the next one starts).
//! 4. **Fully merged**: no two extents are adjacent in the file *and* in the pool with the same
//!    `unwritten` flag; such a pair is always one extent. [`ExtentMap::insert`] and
//!    [`ExtentMap::mark_written`] merge; [`ExtentMap::punch`] and
//!    [`ExtentMap::mark_written`] split at the edges of the range they are given.
//! 5. **No shared frame**: no pool frame is mapped twice by one map. The map cannot know about
//!    other files; that frames are owned by exactly one file or the allocator is the caller's
//!    invariant (the allocator hands each frame out once), and the tests check it globally.
//! 6. **Cached counters agree**: the mapped-frame count kept for `stat` equals the sum of the
//!    extent lengths.
//!
//! # Cost
//!
//! Memory grows with the number of extents, never with the file size: a 100 GiB file in one
//! extent is one B-tree entry, exactly like a 4 KiB file. Lookups are `O(log extents)`.
//!
//! # Ownership and locking
//!
//! An `ExtentMap` is plain data owned by its inode; the filesystem guards it with that inode's
//! lock. Reads borrow it shared, writes, punches and truncation take it exclusively. Dropping a
//! map frees no pool frame: the caller returns punched or truncated ranges to the allocator.

use std::collections::BTreeMap;

use pfnfs_alloc::{HUGE_FRAMES, Pfn, PfnRange};
use serde::{Deserialize, Serialize};

/// One run of a file: `pfns.len` frames starting at logical frame `file_frame` live at `pfns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Logical frame index within the file (byte offset / 4096).
    pub file_frame: u64,
    /// Where the frames are in the pool.
    pub pfns: PfnRange,
    /// Allocated but never written (fallocate): reads as zeros whatever the frames hold.
    pub unwritten: bool,
}

impl Extent {
    /// One past the last logical frame. Saturates at `u64::MAX` for an extent that no map
    /// would accept (extents in an [`ExtentMap`] never overflow).
    pub fn file_end(&self) -> u64 {
        self.file_frame.saturating_add(self.pfns.len)
    }
}

/// A piece of a looked-up logical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Mapped frames (clipped to the range asked for).
    Mapped(Extent),
    /// No frames: reads as zeros.
    Hole { file_frame: u64, frames: u64 },
}

impl Mapping {
    /// First logical frame of the piece.
    pub fn file_frame(&self) -> u64 {
        match *self {
            Mapping::Mapped(e) => e.file_frame,
            Mapping::Hole { file_frame, .. } => file_frame,
        }
    }

    /// Number of logical frames in the piece.
    pub fn frames(&self) -> u64 {
        match *self {
            Mapping::Mapped(e) => e.pfns.len,
            Mapping::Hole { frames, .. } => frames,
        }
    }
}

/// Why an extent-map operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtentError {
    /// The new extent overlaps an existing one.
    #[error("extent at file frame {file_frame} overlaps an existing extent")]
    Overlap { file_frame: u64 },
    /// Logical frame arithmetic would overflow.
    #[error("file frame range overflows")]
    Overflow,
}

/// Value stored per extent, keyed by its first logical frame.
type Entry = (PfnRange, bool);

/// Heap bytes per extent, measured with a counting allocator on maps of 10^5 extents
/// (`tests/memory.rs` keeps this within 25% of the measurement): 63.6 B when extents are
/// inserted in file order (appending writes leave B-tree leaves about 6/11 full), 47.5 B when
/// inserted in scattered order; this is the middle. One entry is an 8-byte key and a 24-byte
/// value; the rest is node overhead and slack. A map with one extent holds one 368-byte leaf.
pub const HEAP_BYTES_PER_EXTENT: u64 = 56;

/// The extent map of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentMap {
    /// file_frame -> (pool frames, unwritten).
    extents: BTreeMap<u64, Entry>,
    /// Sum of all extent lengths (invariant 6).
    mapped_frames: u64,
}

impl ExtentMap {
    /// An empty map (all hole).
    pub fn new() -> ExtentMap {
        ExtentMap {
            extents: BTreeMap::new(),
            mapped_frames: 0,
        }
    }

    /// Builds a map from extents (any order); fails on overlap. Adjacent extents that continue
    /// each other are merged, empty ones are skipped.
    pub fn from_extents(
        extents: impl IntoIterator<Item = Extent>,
    ) -> Result<ExtentMap, ExtentError> {
        let mut map = ExtentMap::new();
        for extent in extents {
            map.insert(extent)?;
        }
        Ok(map)
    }

    /// Extents in logical order.
    pub fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.extents
            .iter()
            .map(|(&file_frame, &(pfns, unwritten))| Extent {
                file_frame,
                pfns,
                unwritten,
            })
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.extents.len()
    }

    /// True if the map has no extents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames mapped (written or unwritten). O(1).
    pub fn mapped_frames(&self) -> u64 {
        self.mapped_frames
    }

    /// Frames mapped by 2 MiB-aligned, 2 MiB-multiple pieces (for `pfnfs stat`): for each
    /// extent, the frames of its pool range that fall in whole 512-frame-aligned blocks.
    pub fn huge_frames(&self) -> u64 {
        self.extents
            .values()
            .map(|(pfns, _)| {
                let Some(first) = pfns.start.0.checked_next_multiple_of(HUGE_FRAMES) else {
                    return 0;
                };
                let last = pfns.end().0 / HUGE_FRAMES * HUGE_FRAMES;
                last.saturating_sub(first)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Estimated heap bytes held by the map: [`HEAP_BYTES_PER_EXTENT`] per extent, whatever
    /// the file size (for the filesystem's metadata RAM figure).
    pub fn heap_bytes(&self) -> u64 {
        (self.len() as u64).saturating_mul(HEAP_BYTES_PER_EXTENT)
    }

    /// The extent containing logical frame `file_frame`, if any.
    pub fn lookup(&self, file_frame: u64) -> Option<Extent> {
        let (&start, &(pfns, unwritten)) = self.extents.range(..=file_frame).next_back()?;
        let extent = Extent {
            file_frame: start,
            pfns,
            unwritten,
        };
        (extent.file_end() > file_frame).then_some(extent)
    }

    /// Covers `[file_frame, file_frame + frames)` exactly with mappings and holes, in order,
    /// appending to `out` (cleared first). A range reaching past `u64::MAX` is clipped there.
    pub fn mappings(&self, file_frame: u64, frames: u64, out: &mut Vec<Mapping>) {
        out.clear();
        out.extend(self.mappings_iter(file_frame, frames));
    }

    /// Like [`mappings`](Self::mappings) but lazily, without allocating: the hot I/O paths
    /// walk the map with this.
    pub fn mappings_iter(&self, file_frame: u64, frames: u64) -> MappingIter<'_> {
        let end = file_frame.saturating_add(frames);
        // Start at the extent containing `file_frame`, if any, else at the first one after it.
        let start_key = match self.extents.range(..=file_frame).next_back() {
            Some((&k, &(pfns, _))) if k.saturating_add(pfns.len) > file_frame => k,
            _ => file_frame,
        };
        MappingIter {
            extents: self.extents.range(start_key..),
            cursor: file_frame,
            end,
        }
    }

    /// Inserts an extent into a hole, merging with neighbours that continue it in both file and
    /// pool space with the same `unwritten` flag. An empty extent is a no-op; an extent whose
    /// end overflows in the file or the pool is refused with [`ExtentError::Overflow`].
    pub fn insert(&mut self, extent: Extent) -> Result<(), ExtentError> {
        let len = extent.pfns.len;
        if len == 0 {
            return Ok(());
        }
        let file_end = extent
            .file_frame
            .checked_add(len)
            .ok_or(ExtentError::Overflow)?;
        let pfn_end = extent
            .pfns
            .start
            .0
            .checked_add(len)
            .ok_or(ExtentError::Overflow)?;
        let mapped_frames = self
            .mapped_frames
            .checked_add(len)
            .ok_or(ExtentError::Overflow)?;

        let prev = self
            .extents
            .range(..extent.file_frame)
            .next_back()
            .map(|(&k, &v)| (k, v));
        if let Some((k, (pfns, _))) = prev
            && k + pfns.len > extent.file_frame
        {
            return Err(ExtentError::Overlap {
                file_frame: extent.file_frame,
            });
        }
        let next = self
            .extents
            .range(extent.file_frame..)
            .next()
            .map(|(&k, &v)| (k, v));
        if let Some((k, _)) = next
            && k < file_end
        {
            return Err(ExtentError::Overlap {
                file_frame: extent.file_frame,
            });
        }

        let mut start = extent.file_frame;
        let mut pfns = PfnRange {
            start: extent.pfns.start,
            len,
        };
        if let Some((k, (p, unwritten))) = prev
            && k + p.len == start
            && p.end().0 == pfns.start.0
            && unwritten == extent.unwritten
        {
            self.extents.remove(&k);
            start = k;
            pfns = PfnRange {
                start: p.start,
                len: p.len + pfns.len,
            };
        }
        if let Some((k, (p, unwritten))) = next
            && k == file_end
            && p.start.0 == pfn_end
            && unwritten == extent.unwritten
        {
            self.extents.remove(&k);
            pfns.len += p.len;
        }
        self.extents.insert(start, (pfns, extent.unwritten));
        self.mapped_frames = mapped_frames;
        Ok(())
    }

    /// Removes every mapping in `[file_frame, file_frame + frames)` (splitting extents at the
    /// edges) and returns the PFN ranges that are no longer referenced, in pool order of the
    /// file, contiguous ones coalesced. A range reaching past `u64::MAX` is clipped there.
    pub fn punch(&mut self, file_frame: u64, frames: u64) -> Vec<PfnRange> {
        let mut freed: Vec<PfnRange> = Vec::new();
        if frames == 0 {
            return freed;
        }
        let end = file_frame.saturating_add(frames);
        // Walk backwards from the last extent starting before `end`; every removal is O(log n)
        // and nothing but the result is allocated.
        while let Some((&k, &(pfns, unwritten))) = self.extents.range(..end).next_back() {
            let ext_end = k + pfns.len;
            if ext_end <= file_frame {
                break;
            }
            self.extents.remove(&k);
            let cut_start = file_frame.max(k);
            let cut_end = end.min(ext_end);
            let (head, rest) = pfns.split_at(cut_start - k);
            let (gone, tail) = match rest {
                Some(rest) => rest.split_at(cut_end - cut_start),
                None => (None, None),
            };
            if let Some(head) = head {
                self.extents.insert(k, (head, unwritten));
            }
            if let Some(tail) = tail {
                self.extents.insert(cut_end, (tail, unwritten));
            }
            if let Some(gone) = gone {
                self.mapped_frames -= gone.len;
                freed.push(gone);
            }
            if k <= file_frame {
                break;
            }
        }
        freed.reverse();
        coalesce(&mut freed);
        freed
    }

    /// Keeps the first `keep_frames` logical frames; returns the PFN ranges released.
    pub fn truncate(&mut self, keep_frames: u64) -> Vec<PfnRange> {
        self.punch(keep_frames, u64::MAX - keep_frames)
    }

    /// Marks `[file_frame, file_frame + frames)` written where it is unwritten (splitting, and
    /// merging the converted pieces with written neighbours they continue); returns the pieces
    /// that changed state, in their new state (`unwritten: false`).
    pub fn mark_written(&mut self, file_frame: u64, frames: u64) -> Vec<Extent> {
        let mut changed = Vec::new();
        self.set_unwritten(file_frame, frames, false, Some(&mut changed));
        changed
    }

    /// [`mark_written`](Self::mark_written) without the list of changed pieces: allocates
    /// nothing (a write's conversions are applied with this once its record is durable).
    pub fn set_written(&mut self, file_frame: u64, frames: u64) {
        self.set_unwritten(file_frame, frames, false, None);
    }

    /// The inverse of [`mark_written`](Self::mark_written): marks `[file_frame, file_frame +
    /// frames)` unwritten where it is written, and returns the pieces that changed (in their
    /// new state, `unwritten: true`). ZERO_RANGE turns the whole frames of its range unwritten
    /// with it.
    pub fn mark_unwritten(&mut self, file_frame: u64, frames: u64) -> Vec<Extent> {
        let mut changed = Vec::new();
        self.set_unwritten(file_frame, frames, true, Some(&mut changed));
        changed
    }

    /// Sets the `unwritten` flag over a range: splits the extents that change at the range
    /// edges and merges each changed piece with the neighbours it now continues. The pieces
    /// that changed (in their new state) are appended to `changed` if given.
    fn set_unwritten(
        &mut self,
        file_frame: u64,
        frames: u64,
        unwritten: bool,
        mut changed: Option<&mut Vec<Extent>>,
    ) {
        let end = file_frame.saturating_add(frames);
        let mut cursor = file_frame;
        while cursor < end {
            // The next piece to change. Changing one merges it only with neighbours of the new
            // state, so the walk resumes correctly right after it.
            let Some(piece) = self
                .mappings_iter(cursor, end - cursor)
                .find_map(|m| match m {
                    Mapping::Mapped(e) if e.unwritten != unwritten => {
                        Some(Extent { unwritten, ..e })
                    }
                    _ => None,
                })
            else {
                break;
            };
            cursor = piece.file_end();
            // The piece lies inside exactly one extent in the old state: split it there.
            let Some(whole) = self.lookup(piece.file_frame) else {
                continue;
            };
            self.extents.remove(&whole.file_frame);
            let skip = piece.file_frame - whole.file_frame;
            let (head, rest) = whole.pfns.split_at(skip);
            let tail = rest.and_then(|r| r.split_at(piece.pfns.len).1);
            if let Some(head) = head {
                self.extents
                    .insert(whole.file_frame, (head, whole.unwritten));
            }
            if let Some(tail) = tail {
                self.extents
                    .insert(piece.file_end(), (tail, whole.unwritten));
            }
            self.mapped_frames -= piece.pfns.len;
            // Re-inserting into the hole just made can neither overlap nor overflow.
            let reinserted = self.insert(piece);
            debug_assert!(reinserted.is_ok(), "set_unwritten reinsert: {reinserted:?}");
            if let Some(changed) = changed.as_mut() {
                changed.push(piece);
            }
        }
    }

    /// The PFN that would continue the file's mapping at `file_frame`: the frame after the end
    /// of the nearest extent before it, extrapolated by the gap. The allocator's goal. `None`
    /// if no extent starts before `file_frame` or the PFN would overflow.
    pub fn goal_for(&self, file_frame: u64) -> Option<Pfn> {
        let (&k, &(pfns, _)) = self.extents.range(..file_frame).next_back()?;
        pfns.start.checked_add(file_frame - k)
    }

    /// First logical frame `>= file_frame` that is mapped (SEEK_DATA; unwritten counts as
    /// data, as on ext4).
    pub fn next_data(&self, file_frame: u64) -> Option<u64> {
        if self.lookup(file_frame).is_some() {
            return Some(file_frame);
        }
        self.extents.range(file_frame..).next().map(|(&k, _)| k)
    }

    /// First logical frame `>= file_frame` that is not mapped (SEEK_HOLE). Frame `u64::MAX`
    /// can never be mapped, so the answer always exists.
    pub fn next_hole(&self, file_frame: u64) -> u64 {
        let mut cursor = file_frame;
        while let Some(extent) = self.lookup(cursor) {
            // Extents never end past u64::MAX, and an extent ending there leaves that frame
            // unmapped.
            cursor = extent.file_end();
        }
        cursor
    }

    /// Checks every invariant listed in the module doc; `Err` names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut prev: Option<Extent> = None;
        let mut total: u64 = 0;
        for extent in self.iter() {
            let len = extent.pfns.len;
            if len == 0 {
                return Err(format!("empty extent at file frame {}", extent.file_frame));
            }
            if extent.file_frame.checked_add(len).is_none()
                || extent.pfns.start.0.checked_add(len).is_none()
            {
                return Err(format!(
                    "extent at file frame {} overflows",
                    extent.file_frame
                ));
            }
            if let Some(p) = prev {
                if p.file_end() > extent.file_frame {
                    return Err(format!(
                        "extents at file frames {} and {} overlap",
                        p.file_frame, extent.file_frame
                    ));
                }
                if p.file_end() == extent.file_frame
                    && p.pfns.end() == extent.pfns.start
                    && p.unwritten == extent.unwritten
                {
                    return Err(format!(
                        "extents at file frames {} and {} continue each other but are not merged",
                        p.file_frame, extent.file_frame
                    ));
                }
            }
            total = total
                .checked_add(len)
                .ok_or_else(|| "mapped frame count overflows".to_string())?;
            prev = Some(extent);
        }
        if total != self.mapped_frames {
            return Err(format!(
                "cached mapped_frames {} != sum of extents {total}",
                self.mapped_frames
            ));
        }
        let mut by_pool: Vec<PfnRange> = self.extents.values().map(|(p, _)| *p).collect();
        by_pool.sort_unstable();
        for pair in by_pool.windows(2) {
            if pair[0].overlaps(&pair[1]) {
                return Err(format!(
                    "pool frames {} and {} are both mapped",
                    pair[0], pair[1]
                ));
            }
        }
        Ok(())
    }
}

/// Lazily covers a logical range with [`Mapping`]s; see [`ExtentMap::mappings_iter`].
#[derive(Clone, Debug)]
pub struct MappingIter<'a> {
    extents: std::collections::btree_map::Range<'a, u64, Entry>,
    /// First logical frame not yet covered.
    cursor: u64,
    /// One past the last logical frame to cover.
    end: u64,
}

impl Iterator for MappingIter<'_> {
    type Item = Mapping;

    fn next(&mut self) -> Option<Mapping> {
        if self.cursor >= self.end {
            return None;
        }
        // Peek at the next extent without consuming it if a hole comes first.
        let mut peek = self.extents.clone();
        match peek.next() {
            Some((&k, &(pfns, unwritten))) if k < self.end => {
                if k > self.cursor {
                    let hole = Mapping::Hole {
                        file_frame: self.cursor,
                        frames: k - self.cursor,
                    };
                    self.cursor = k;
                    return Some(hole);
                }
                self.extents = peek;
                // The extent starts at or before the cursor and ends after it (the walk starts
                // at the extent containing the range start, and extents do not overlap).
                let skip = self.cursor - k;
                let piece_end = (k + pfns.len).min(self.end);
                let frames = piece_end - self.cursor;
                let piece = Extent {
                    file_frame: self.cursor,
                    pfns: PfnRange {
                        start: Pfn(pfns.start.0 + skip),
                        len: frames,
                    },
                    unwritten,
                };
                self.cursor = piece_end;
                Some(Mapping::Mapped(piece))
            }
            _ => {
                let hole = Mapping::Hole {
                    file_frame: self.cursor,
                    frames: self.end - self.cursor,
                };
                self.cursor = self.end;
                Some(hole)
            }
        }
    }
}

/// Merges ranges of a list that continue each other (in list order).
fn coalesce(ranges: &mut Vec<PfnRange>) {
    ranges.dedup_by(|next, prev| {
        if prev.end() == next.start {
            prev.len += next.len;
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(file_frame: u64, pfn: u64, len: u64, unwritten: bool) -> Extent {
        Extent {
            file_frame,
            pfns: PfnRange::new(Pfn(pfn), len).unwrap(),
            unwritten,
        }
    }

    fn extents(map: &ExtentMap) -> Vec<Extent> {
        map.iter().collect()
    }

    #[test]
    fn insert_merges_with_both_neighbours() {
        let mut map = ExtentMap::new();
        map.insert(ext(0, 100, 4, false)).unwrap();
        map.insert(ext(8, 108, 4, false)).unwrap();
        assert_eq!(map.len(), 2);
        map.insert(ext(4, 104, 4, false)).unwrap();
        assert_eq!(extents(&map), vec![ext(0, 100, 12, false)]);
        assert_eq!(map.mapped_frames(), 12);
        map.check_invariants().unwrap();
    }

    #[test]
    fn insert_does_not_merge_across_flag_or_pool_gap() {
        let mut map = ExtentMap::new();
        map.insert(ext(0, 100, 4, false)).unwrap();
        map.insert(ext(4, 104, 4, true)).unwrap();
        map.insert(ext(8, 200, 4, true)).unwrap();
        assert_eq!(map.len(), 3);
        map.check_invariants().unwrap();
    }

    #[test]
    fn insert_refuses_overlap_and_overflow() {
        let mut map = ExtentMap::new();
        map.insert(ext(10, 100, 10, false)).unwrap();
        assert_eq!(
            map.insert(ext(5, 0, 6, false)),
            Err(ExtentError::Overlap { file_frame: 5 })
        );
        assert_eq!(
            map.insert(ext(19, 0, 1, false)),
            Err(ExtentError::Overlap { file_frame: 19 })
        );
        assert_eq!(
            map.insert(ext(12, 0, 1, false)),
            Err(ExtentError::Overlap { file_frame: 12 })
        );
        assert_eq!(
            map.insert(ext(0, 0, 100, false)),
            Err(ExtentError::Overlap { file_frame: 0 })
        );
        let bad = Extent {
            file_frame: u64::MAX - 1,
            pfns: PfnRange {
                start: Pfn(0),
                len: 2,
            },
            unwritten: false,
        };
        assert_eq!(map.insert(bad), Err(ExtentError::Overflow));
        let bad_pool = Extent {
            file_frame: 0,
            pfns: PfnRange {
                start: Pfn(u64::MAX),
                len: 2,
            },
            unwritten: false,
        };
        assert_eq!(map.insert(bad_pool), Err(ExtentError::Overflow));
        let empty = Extent {
            file_frame: 0,
            pfns: PfnRange {
                start: Pfn(0),
                len: 0,
            },
            unwritten: false,
        };
        map.insert(empty).unwrap();
        assert_eq!(extents(&map), vec![ext(10, 100, 10, false)]);
        // The very last representable frames.
        map.insert(ext(u64::MAX - 1, 5000, 1, false)).unwrap();
        assert_eq!(map.next_hole(u64::MAX - 1), u64::MAX);
        map.check_invariants().unwrap();
    }

    #[test]
    fn from_extents_any_order() {
        let map = ExtentMap::from_extents([
            ext(4, 104, 4, false),
            ext(0, 100, 4, false),
            ext(20, 7, 1, true),
        ])
        .unwrap();
        assert_eq!(
            extents(&map),
            vec![ext(0, 100, 8, false), ext(20, 7, 1, true)]
        );
        assert!(ExtentMap::from_extents([ext(0, 100, 4, false), ext(3, 0, 1, false)]).is_err());
    }

    #[test]
    fn mappings_cover_exactly() {
        let map = ExtentMap::from_extents([
            ext(2, 100, 3, false),
            ext(5, 300, 2, true),
            ext(10, 50, 5, false),
        ])
        .unwrap();
        let mut out = Vec::new();
        map.mappings(3, 10, &mut out);
        assert_eq!(
            out,
            vec![
                Mapping::Mapped(ext(3, 101, 2, false)),
                Mapping::Mapped(ext(5, 300, 2, true)),
                Mapping::Hole {
                    file_frame: 7,
                    frames: 3
                },
                Mapping::Mapped(ext(10, 50, 3, false)),
            ]
        );
        map.mappings(0, 2, &mut out);
        assert_eq!(
            out,
            vec![Mapping::Hole {
                file_frame: 0,
                frames: 2
            }]
        );
        map.mappings(12, 10, &mut out);
        assert_eq!(
            out,
            vec![
                Mapping::Mapped(ext(12, 52, 3, false)),
                Mapping::Hole {
                    file_frame: 15,
                    frames: 7
                }
            ]
        );
        map.mappings(3, 0, &mut out);
        assert!(out.is_empty());
        map.mappings(u64::MAX - 1, 10, &mut out);
        assert_eq!(
            out,
            vec![Mapping::Hole {
                file_frame: u64::MAX - 1,
                frames: 1
            }]
        );
    }

    #[test]
    fn punch_splits_and_returns_freed() {
        let mut map =
            ExtentMap::from_extents([ext(0, 100, 10, false), ext(10, 500, 10, true)]).unwrap();
        let freed = map.punch(5, 10);
        assert_eq!(
            freed,
            vec![
                PfnRange::new(Pfn(105), 5).unwrap(),
                PfnRange::new(Pfn(500), 5).unwrap()
            ]
        );
        assert_eq!(
            extents(&map),
            vec![ext(0, 100, 5, false), ext(15, 505, 5, true)]
        );
        assert_eq!(map.mapped_frames(), 10);
        map.check_invariants().unwrap();
        // Punch strictly inside one extent.
        let freed = map.punch(1, 2);
        assert_eq!(freed, vec![PfnRange::new(Pfn(101), 2).unwrap()]);
        assert_eq!(map.len(), 3);
        // Punch a hole: nothing.
        assert!(map.punch(6, 8).is_empty());
        // Overflowing punch clips.
        let freed = map.punch(16, u64::MAX);
        assert_eq!(freed, vec![PfnRange::new(Pfn(506), 4).unwrap()]);
        map.check_invariants().unwrap();
    }

    #[test]
    fn punch_coalesces_freed_across_flag_boundary() {
        let mut map =
            ExtentMap::from_extents([ext(0, 100, 4, false), ext(4, 104, 4, true)]).unwrap();
        assert_eq!(map.punch(0, 8), vec![PfnRange::new(Pfn(100), 8).unwrap()]);
        assert!(map.is_empty());
        assert_eq!(map.mapped_frames(), 0);
    }

    #[test]
    fn truncate_keeps_prefix() {
        let mut map =
            ExtentMap::from_extents([ext(0, 100, 10, false), ext(20, 500, 10, false)]).unwrap();
        assert_eq!(
            map.truncate(5),
            vec![
                PfnRange::new(Pfn(105), 5).unwrap(),
                PfnRange::new(Pfn(500), 10).unwrap()
            ]
        );
        assert_eq!(extents(&map), vec![ext(0, 100, 5, false)]);
        assert!(map.truncate(5).is_empty());
        assert_eq!(map.truncate(0).len(), 1);
        assert!(map.is_empty());
    }

    #[test]
    fn mark_written_splits_and_merges() {
        let mut map =
            ExtentMap::from_extents([ext(0, 100, 4, false), ext(4, 104, 8, true)]).unwrap();
        // Converting the head of the unwritten extent merges it into the written one.
        let changed = map.mark_written(2, 4);
        assert_eq!(changed, vec![ext(4, 104, 2, false)]);
        assert_eq!(
            extents(&map),
            vec![ext(0, 100, 6, false), ext(6, 106, 6, true)]
        );
        map.check_invariants().unwrap();
        // Converting the middle splits.
        let changed = map.mark_written(8, 2);
        assert_eq!(changed, vec![ext(8, 108, 2, false)]);
        assert_eq!(
            extents(&map),
            vec![
                ext(0, 100, 6, false),
                ext(6, 106, 2, true),
                ext(8, 108, 2, false),
                ext(10, 110, 2, true)
            ]
        );
        map.check_invariants().unwrap();
        // Converting everything merges back into one extent.
        let changed = map.mark_written(0, 100);
        assert_eq!(changed, vec![ext(6, 106, 2, false), ext(10, 110, 2, false)]);
        assert_eq!(extents(&map), vec![ext(0, 100, 12, false)]);
        assert_eq!(map.mapped_frames(), 12);
        assert!(map.mark_written(0, 100).is_empty());
        map.check_invariants().unwrap();
    }

    #[test]
    fn mark_unwritten_undoes_mark_written() {
        let before = ExtentMap::from_extents([
            ext(0, 100, 4, false),
            ext(4, 104, 8, true),
            ext(12, 112, 2, false),
        ])
        .unwrap();
        let mut map = before.clone();
        let changed = map.mark_written(0, 100);
        assert_eq!(extents(&map), vec![ext(0, 100, 14, false)]);
        for piece in &changed {
            map.mark_unwritten(piece.file_frame, piece.pfns.len);
        }
        assert_eq!(map, before);
        map.check_invariants().unwrap();
        assert_eq!(map.mark_unwritten(1, 1), vec![ext(1, 101, 1, true)]);
        map.check_invariants().unwrap();
    }

    #[test]
    fn goal_extrapolates_across_gap() {
        let map = ExtentMap::from_extents([ext(10, 100, 5, false)]).unwrap();
        assert_eq!(map.goal_for(10), None);
        assert_eq!(map.goal_for(5), None);
        assert_eq!(map.goal_for(15), Some(Pfn(105)));
        assert_eq!(map.goal_for(20), Some(Pfn(110)));
        let far = ExtentMap::from_extents([ext(0, u64::MAX - 10, 5, false)]).unwrap();
        assert_eq!(far.goal_for(100), None);
    }

    #[test]
    fn seek_data_and_hole() {
        let map = ExtentMap::from_extents([
            ext(2, 100, 3, false),
            ext(5, 300, 2, true),
            ext(10, 50, 5, false),
        ])
        .unwrap();
        assert_eq!(map.next_data(0), Some(2));
        assert_eq!(map.next_data(3), Some(3));
        assert_eq!(map.next_data(7), Some(10));
        assert_eq!(map.next_data(15), None);
        assert_eq!(map.next_hole(0), 0);
        assert_eq!(map.next_hole(2), 7);
        assert_eq!(map.next_hole(11), 15);
        assert_eq!(ExtentMap::new().next_data(0), None);
    }

    #[test]
    fn huge_frames_counts_aligned_blocks() {
        let map = ExtentMap::from_extents([
            ext(0, 512, 1024, false),    // two whole blocks
            ext(5000, 1000, 600, false), // [1000, 1600): block [1024, 1536)
            ext(9000, 2048, 100, false), // none
        ])
        .unwrap();
        assert_eq!(map.huge_frames(), 1024 + 512);
        let edge = ExtentMap::from_extents([ext(0, u64::MAX - 3, 2, false)]).unwrap();
        assert_eq!(edge.huge_frames(), 0);
    }

    #[test]
    fn memory_is_per_extent_not_per_byte() {
        let small = ExtentMap::from_extents([ext(0, 1000, 1, false)]).unwrap();
        // 100 GiB in one extent.
        let big = ExtentMap::from_extents([ext(0, 1000, 100 << 18, false)]).unwrap();
        assert_eq!(small.len(), big.len());
        assert_eq!(small.heap_bytes(), big.heap_bytes());
        assert_eq!(big.mapped_frames(), 100 << 18);
    }
}
