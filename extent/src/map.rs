//! [`ExtentMap`]: logical frame -> PFN range, one entry per extent.
//!
//! TODO(helper): module doc with invariants.

use pfnfs_alloc::{Pfn, PfnRange};
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
    /// One past the last logical frame.
    pub fn file_end(&self) -> u64 {
        self.file_frame + self.pfns.len
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

/// The extent map of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentMap {
    // TODO(helper): BTreeMap<file_frame, (PfnRange, unwritten)>
}

impl ExtentMap {
    /// An empty map (all hole).
    pub fn new() -> ExtentMap {
        todo!()
    }

    /// Builds a map from extents (any order); fails on overlap.
    pub fn from_extents(extents: impl IntoIterator<Item = Extent>) -> Result<ExtentMap, ExtentError> {
        let _ = extents.into_iter();
        todo!()
    }

    /// Extents in logical order.
    pub fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        std::iter::empty()
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        todo!()
    }

    /// True if the map has no extents.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames mapped (written or unwritten).
    pub fn mapped_frames(&self) -> u64 {
        todo!()
    }

    /// Frames mapped by 2 MiB-aligned, 2 MiB-multiple pieces (for `pfnfs stat`).
    pub fn huge_frames(&self) -> u64 {
        todo!()
    }

    /// Covers `[file_frame, file_frame + frames)` exactly with mappings and holes, in order,
    /// appending to `out` (cleared first).
    pub fn mappings(&self, file_frame: u64, frames: u64, out: &mut Vec<Mapping>) {
        let _ = (file_frame, frames, out);
        todo!()
    }

    /// Inserts an extent into a hole, merging with neighbours that continue it in both file and
    /// pool space with the same `unwritten` flag.
    pub fn insert(&mut self, extent: Extent) -> Result<(), ExtentError> {
        let _ = extent;
        todo!()
    }

    /// Removes every mapping in `[file_frame, file_frame + frames)` (splitting extents at the
    /// edges) and returns the PFN ranges that are no longer referenced.
    pub fn punch(&mut self, file_frame: u64, frames: u64) -> Vec<PfnRange> {
        let _ = (file_frame, frames);
        todo!()
    }

    /// Keeps the first `keep_frames` logical frames; returns the PFN ranges released.
    pub fn truncate(&mut self, keep_frames: u64) -> Vec<PfnRange> {
        let _ = keep_frames;
        todo!()
    }

    /// Marks `[file_frame, file_frame + frames)` written where it is unwritten (splitting);
    /// returns the pieces that changed state.
    pub fn mark_written(&mut self, file_frame: u64, frames: u64) -> Vec<Extent> {
        let _ = (file_frame, frames);
        todo!()
    }

    /// The PFN that would continue the file's mapping at `file_frame`: the frame after the end
    /// of the nearest extent before it, extrapolated by the gap. The allocator's goal.
    pub fn goal_for(&self, file_frame: u64) -> Option<Pfn> {
        let _ = file_frame;
        todo!()
    }

    /// First logical frame `>= file_frame` that is mapped (SEEK_DATA; unwritten counts as
    /// data, as on ext4).
    pub fn next_data(&self, file_frame: u64) -> Option<u64> {
        let _ = file_frame;
        todo!()
    }

    /// First logical frame `>= file_frame` that is not mapped (SEEK_HOLE).
    pub fn next_hole(&self, file_frame: u64) -> u64 {
        let _ = file_frame;
        todo!()
    }
}
