//! PFN-range I/O: byte ranges of a file resolved to pool memory.
//!
//! TODO(helper): module doc.

use pfnfs_alloc::{AllocError, ExtentAllocator, Pool, PoolError};

use crate::map::{Extent, ExtentError, ExtentMap};

/// A piece of a read: borrowed pool bytes or a run of zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSegment<'a> {
    /// Bytes straight from pool memory.
    Pool(&'a [u8]),
    /// A hole or unwritten run of this many bytes.
    Zeros(usize),
}

/// What a write changed in the extent map: the fs journals exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Extents newly allocated and inserted (written).
    pub allocated: Vec<Extent>,
    /// Previously unwritten pieces now written.
    pub converted: Vec<Extent>,
}

impl WriteOutcome {
    /// True if the write changed no mapping (pure overwrite).
    pub fn is_empty(&self) -> bool {
        self.allocated.is_empty() && self.converted.is_empty()
    }
}

/// Why PFN-range I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtentIoError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error(transparent)]
    Map(#[from] ExtentError),
    /// offset + len overflows the largest file offset.
    #[error("byte range overflows")]
    Overflow,
}

/// Resolves `[offset, offset + len)` of a file to segments (appended to `out`, cleared first).
/// The caller clips `len` to the file size. No copy, no allocation beyond `out`'s growth.
pub fn read_segments<'a>(
    pool: &'a Pool,
    map: &ExtentMap,
    offset: u64,
    len: u64,
    out: &mut Vec<ReadSegment<'a>>,
) -> Result<(), ExtentIoError> {
    let _ = (pool, map, offset, len, out);
    todo!()
}

/// Copies `[offset, offset + buf.len())` of a file into `buf` (holes as zeros).
pub fn read_into(pool: &Pool, map: &ExtentMap, offset: u64, buf: &mut [u8]) -> Result<(), ExtentIoError> {
    let _ = (pool, map, offset, buf);
    todo!()
}

/// Writes `data` at byte `offset`: allocates frames for holes (goal-directed, 2 MiB-aligned
/// for large runs), zeroes the parts of new or unwritten frames that `data` does not cover,
/// copies `data` into the pool, then flushes every written line and fences once. On return the
/// data is durable; the caller journals the returned outcome. On error nothing is allocated.
pub fn write(
    pool: &Pool,
    alloc: &ExtentAllocator,
    map: &mut ExtentMap,
    offset: u64,
    data: &[u8],
) -> Result<WriteOutcome, ExtentIoError> {
    let _ = (pool, alloc, map, offset, data);
    todo!()
}

/// Maps every hole in `[file_frame, file_frame + frames)` with unwritten extents (fallocate)
/// and returns them. Touches no data frame. All or nothing.
pub fn allocate_unwritten(
    alloc: &ExtentAllocator,
    map: &mut ExtentMap,
    file_frame: u64,
    frames: u64,
) -> Result<Vec<Extent>, ExtentIoError> {
    let _ = (alloc, map, file_frame, frames);
    todo!()
}

/// Stores zeros over the written, mapped bytes of `[offset, offset + len)` (holes and
/// unwritten pieces already read as zeros) and persists them. Used for the partial frames at
/// the edges of PUNCH_HOLE and ZERO_RANGE and for truncation inside a frame.
pub fn zero_mapped(pool: &Pool, map: &ExtentMap, offset: u64, len: u64) -> Result<(), ExtentIoError> {
    let _ = (pool, map, offset, len);
    todo!()
}
