//! pfnfs-extent: a file is a map from logical frames to PFN ranges.
//!
//! - [`map`]: [`Extent`] and [`ExtentMap`]: lookup, insert, punch, truncate, written/unwritten
//!   conversion, SEEK_DATA/HOLE, the allocation goal. The module doc lists the invariants that
//!   [`ExtentMap::check_invariants`] checks. Memory grows with the number of extents, never
//!   with file size ([`map::HEAP_BYTES_PER_EXTENT`], measured).
//! - [`io`]: PFN-range I/O: a byte range of a file resolves to borrowed slices of pool memory
//!   and zero runs (reads, no copy); writes land in place, allocating for holes with a goal
//!   so that sequential files stay contiguous; data is flushed and fenced once per request
//!   before the caller journals the returned [`WriteOutcome`].
//!
//! `docs/DESIGN.md` section 5 describes the algorithms, persist points and measured costs.

#![deny(unsafe_code)]

pub mod io;
pub mod map;

pub use io::{ExtentIoError, ReadSegment, Staged, WriteOutcome};
pub use map::{Extent, ExtentError, ExtentMap, Mapping, MappingIter};
pub use pfnfs_alloc::{FRAME_SIZE, Pfn, PfnRange};
