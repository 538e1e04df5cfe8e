//! pfnfs-fsx: exercisers for a mounted filesystem (pfnfs, or any other: running them on
//! tmpfs checks the exercisers themselves).
//!
//! - [`fsx`]: seeded random read/write/truncate/fallocate (every mode)/mmap/copy_file_range/
//!   reopen/fsync/SEEK_DATA-SEEK_HOLE operations on a few files, each result compared with an
//!   in-memory model; a mismatch reports the seed, the operation index, the last operations
//!   and the differing bytes.
//! - [`stress`]: worker processes changing shared directories at the same time, then the tree
//!   checked against what they report as surviving.

pub mod fsx;
pub mod stress;
