//! The extent allocator: free space as extents, never as per-frame state.
//!
//! TODO(helper): module doc (why groups, why 2 MiB alignment, invariants).

use crate::error::AllocError;
use crate::pfn::{Pfn, PfnRange};

/// Figures the allocator reports (statfs, `pfnfs stat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct AllocStats {
    /// Frames in the data region.
    pub total_frames: u64,
    /// Free frames.
    pub free_frames: u64,
    /// Number of free extents.
    pub free_extents: u64,
    /// Frames in the largest free extent.
    pub largest_free_frames: u64,
    /// 1 - largest_free / free (0 when all free space is one extent, or none is free).
    pub fragmentation: f64,
}

/// Free space of the data region as extents, split into allocation groups so that threads
/// allocating in different groups never contend.
#[derive(Debug)]
pub struct ExtentAllocator {
    // TODO(helper)
}

impl ExtentAllocator {
    /// An allocator over `data` with every frame free.
    pub fn new_empty(data: PfnRange) -> ExtentAllocator {
        let _ = data;
        todo!()
    }

    /// An allocator over `data` whose free set is exactly `free` (any order; adjacent ranges
    /// are coalesced). Fails on overlap or on a range outside `data`.
    pub fn from_free_extents(
        data: PfnRange,
        free: impl IntoIterator<Item = PfnRange>,
    ) -> Result<ExtentAllocator, AllocError> {
        let _ = (data, free.into_iter());
        todo!()
    }

    /// Allocates `frames` frames, preferring one contiguous range starting at `goal` (e.g. just
    /// after a file's last extent), then one contiguous range anywhere (2 MiB-aligned when
    /// `frames >= 512`), then several ranges. All or nothing: on `NoSpace` nothing is taken.
    pub fn allocate(&self, frames: u64, goal: Option<Pfn>) -> Result<Vec<PfnRange>, AllocError> {
        let _ = (frames, goal);
        todo!()
    }

    /// Returns `range` to the free set, coalescing with neighbours.
    pub fn free(&self, range: PfnRange) -> Result<(), AllocError> {
        let _ = range;
        todo!()
    }

    /// Takes a specific range out of the free set (log replay, checkpoint frames).
    pub fn reserve(&self, range: PfnRange) -> Result<(), AllocError> {
        let _ = range;
        todo!()
    }

    /// The free set, sorted by start, fully coalesced.
    pub fn free_extents(&self) -> Vec<PfnRange> {
        todo!()
    }

    /// Current figures.
    pub fn stats(&self) -> AllocStats {
        todo!()
    }

    /// The data region this allocator manages.
    pub fn region(&self) -> PfnRange {
        todo!()
    }

    /// Checks every invariant (indexes agree, no overlap, coalescing complete, counters right).
    pub fn check_consistency(&self) -> Result<(), String> {
        todo!()
    }

    /// Encodes the free set as a self-checking image (for the checkpoint).
    pub fn encode_free_set(&self) -> Vec<u8> {
        todo!()
    }

    /// Rebuilds an allocator from an image made by [`encode_free_set`](Self::encode_free_set).
    pub fn decode_free_set(data: PfnRange, image: &[u8]) -> Result<ExtentAllocator, AllocError> {
        let _ = (data, image);
        todo!()
    }
}
