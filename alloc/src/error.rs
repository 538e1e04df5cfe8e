//! Typed errors of the pool and the allocator. Every pool error names the pool it concerns.

use std::path::PathBuf;

/// Why a pool could not be created, opened or used.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// An I/O error on the pool's backing file or device.
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Neither superblock slot holds the pfnfs magic.
    #[error("{path}: not a pfnfs pool (no pfnfs magic in either superblock slot)")]
    NotAPool { path: PathBuf },
    /// The pool was written by a format this build does not understand.
    #[error(
        "{path}: pool format version {found} is not supported (this pfnfs reads version {supported})"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The pool is of an older format that this build does not mount; `pfnfs upgrade`
    /// converts it (it opens the pool with [`crate::OpenOptions::format1`]).
    #[error(
        "{path} is a pfnfs format {version} pool; this pfnfs reads format {supported}: convert it with `pfnfs upgrade {path}`",
        supported = crate::superblock::FORMAT_VERSION
    )]
    OldFormat { path: PathBuf, version: u32 },
    /// Both superblock slots carry the magic but neither is intact.
    #[error("{path}: both superblock slots are damaged: A: {slot_a}; B: {slot_b}")]
    SuperblockDamaged {
        path: PathBuf,
        slot_a: String,
        slot_b: String,
    },
    /// The superblock describes a pool larger than the file or device holding it.
    #[error(
        "{path}: pool is truncated: superblock says {expected_bytes} bytes, the backing store has {actual_bytes}"
    )]
    Truncated {
        path: PathBuf,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    /// A field of the superblock is out of range.
    #[error("{path}: superblock is inconsistent: {what}")]
    BadSuperblock { path: PathBuf, what: String },
    /// `create` was asked for a size that cannot hold a pool.
    #[error("{path}: invalid pool size {size_bytes} bytes: {why}")]
    BadSize {
        path: PathBuf,
        size_bytes: u64,
        why: String,
    },
    /// `create` refused to overwrite something.
    #[error("{path}: {why} (use --force to overwrite)")]
    WouldOverwrite { path: PathBuf, why: String },
    /// Another process has the pool open for writing (it is mounted).
    #[error("{path}: pool is in use (mounted or opened by another process)")]
    Busy { path: PathBuf },
    /// The path is not a regular file or block/DAX device.
    #[error("{path}: not a regular file or block device")]
    NotAFileOrDevice { path: PathBuf },
    /// A byte range outside the pool was asked for (a bug or a corrupt pointer).
    #[error("{path}: range {offset:#x}+{len:#x} lies outside the pool ({pool_bytes:#x} bytes)")]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        len: u64,
        pool_bytes: u64,
    },
    /// A write, zero or superblock commit on a pool opened read-only.
    #[error("{path}: the pool is open read-only")]
    ReadOnly { path: PathBuf },
    /// A write or zero over the pool header (superblock slots and reserved frames, PFN 0..512),
    /// which only [`crate::Pool::commit_superblock`] and mkfs write.
    #[error(
        "{path}: range {offset:#x}+{len:#x} overlaps the pool header (bytes 0..{header_bytes:#x}), which only superblock commits write"
    )]
    HeaderRange {
        path: PathBuf,
        offset: u64,
        len: u64,
        header_bytes: u64,
    },
    /// The pool's memory faulted (SIGBUS, caught: [`crate::guarded`]): its storage was taken
    /// away (a pool file truncated or its filesystem unable to provide a page) or the medium
    /// failed. The frame is recorded as bad ([`crate::BadFrames`]).
    #[error(
        "{path}: memory error at pool byte {offset:#x} (frame {frame}): the pool's storage is gone there or its medium failed; the frame is recorded as bad",
        frame = offset / crate::FRAME_SIZE
    )]
    Media { path: PathBuf, offset: u64 },
    /// A page of a pool file faulted because its filesystem had no room for it (a sparse
    /// pool, `backing=sparse`, on a full filesystem): the frame is not bad.
    #[error(
        "{path}: the pool file's filesystem has no room for the page at pool byte {offset:#x} (the pool is sparse and its filesystem is full)"
    )]
    NoRoom { path: PathBuf, offset: u64 },
    /// The range overlaps frames recorded as bad: refused without touching them.
    #[error("{path}: frames {range} are recorded as bad (a memory error was met there)")]
    BadFrames {
        path: PathBuf,
        range: crate::PfnRange,
    },
}

/// Why the allocator could not satisfy or accept a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Not enough free frames in the whole pool.
    #[error("no space: {requested} frames requested, {free} free")]
    NoSpace { requested: u64, free: u64 },
    /// A range given to `free`/`reserve`/`from_free_extents` lies outside the data region.
    #[error("range {range} lies outside the data region {data}")]
    OutOfRegion { range: String, data: String },
    /// `reserve` of a range that is not entirely free, or a free-set image with overlaps.
    #[error("range {range} is not free")]
    NotFree { range: String },
    /// `free` of a range that is (partly) free already.
    #[error("range {range} is already free (double free)")]
    DoubleFree { range: String },
    /// An encoded free-set image failed to decode.
    #[error("free-set image is corrupt: {0}")]
    Corrupt(String),
    /// Storage could not be made to exist behind frames (the pool file's filesystem is
    /// full, typically: `errno` ENOSPC).
    #[error("the pool's backing store has no room for frames {range}: {message}")]
    NoBacking {
        range: String,
        errno: i32,
        message: String,
    },
}
