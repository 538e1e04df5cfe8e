//! pfnfs-extent: a file is a map from logical frames to PFN ranges.
//!
//! - [`map`]: [`Extent`] and [`ExtentMap`]: lookup, insert, punch, truncate, SEEK_DATA/HOLE.
//!   Memory grows with the number of extents, never with file size.
//! - [`io`]: PFN-range I/O: a byte range of a file resolves to borrowed slices of pool memory
//!   and zero runs (reads, no copy); writes land in place, allocating for holes with a goal
//!   so that sequential files stay contiguous.

#![forbid(unsafe_code)]

pub mod io;
pub mod map;

pub use io::{ExtentIoError, ReadSegment, WriteOutcome};
pub use map::{Extent, ExtentError, ExtentMap, Mapping};
pub use pfnfs_alloc::{FRAME_SIZE, Pfn, PfnRange};
