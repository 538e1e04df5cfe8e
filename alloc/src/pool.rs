//! The pool: a superblock, a metadata log and data frames in one mapped region.
//!
//! [`Pool`] validates and owns a [`PoolBackend`]. It checks every byte range it is given
//! against the pool's length (returning [`PoolError::OutOfRange`], never panicking) and hands
//! out borrowed slices of frames for reads.

use std::path::{Path, PathBuf};

use crate::backend::{Durability, PoolBackend};
use crate::error::PoolError;
use crate::pfn::{Pfn, PfnRange};
use crate::superblock::Superblock;

/// Options for [`Pool::create`].
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Overwrite an existing pool or non-empty file.
    pub force: bool,
}

/// Options for [`Pool::open`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Map read-only and refuse every write (fsck -n, stat).
    pub read_only: bool,
    /// What `persist` guarantees for a file-backed pool.
    pub durability: Durability,
}

/// An open pool. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Pool {
    name: PathBuf,
    backend: Box<dyn PoolBackend>,
    superblock: parking_lot::Mutex<Superblock>,
    read_only: bool,
}

impl Pool {
    /// Creates (formats) a pool of `size_bytes` at `path`: a new sparse file, an existing file
    /// (refused if it is non-empty unless `force`), or a block/DAX device (size taken from the
    /// device when `size_bytes` is 0). Writes both superblock slots and persists them.
    pub fn create(path: &Path, size_bytes: u64, opts: &CreateOptions) -> Result<Pool, PoolError> {
        let _ = (path, size_bytes, opts);
        todo!()
    }

    /// Opens an existing pool, checking magic, version, checksums and sizes. Never writes to a
    /// pool it refuses.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Pool, PoolError> {
        let _ = (path, opts);
        todo!()
    }

    /// Formats a pool on an arbitrary backend (tests, crash simulation). `name` is used in
    /// error messages.
    pub fn format_backend(name: &str, backend: Box<dyn PoolBackend>) -> Result<Pool, PoolError> {
        let _ = (name, backend);
        todo!()
    }

    /// Opens a pool on an arbitrary backend with the same checks as [`Pool::open`].
    pub fn open_backend(name: &str, backend: Box<dyn PoolBackend>, read_only: bool) -> Result<Pool, PoolError> {
        let _ = (name, backend, read_only);
        todo!()
    }

    /// The pool's path or name, for messages.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// True if opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The current superblock.
    pub fn superblock(&self) -> Superblock {
        self.superblock.lock().clone()
    }

    /// Writes `sb` (with `seq` set to current + 1) into the slot that does not hold the
    /// current superblock, persists it, and makes it current.
    pub fn commit_superblock(&self, sb: Superblock) -> Result<(), PoolError> {
        let _ = sb;
        todo!()
    }

    /// Total bytes in the pool.
    pub fn len_bytes(&self) -> u64 {
        self.backend.len_bytes()
    }

    /// The data region (file frames and checkpoint frames).
    pub fn data_region(&self) -> PfnRange {
        todo!()
    }

    /// Byte offset and length of the metadata log region.
    pub fn log_region(&self) -> (u64, u64) {
        todo!()
    }

    /// Borrows `len` bytes at byte `offset`.
    pub fn read(&self, offset: u64, len: usize) -> Result<&[u8], PoolError> {
        let _ = (offset, len);
        todo!()
    }

    /// Borrows the bytes of a frame range.
    pub fn frames(&self, range: PfnRange) -> Result<&[u8], PoolError> {
        let _ = range;
        todo!()
    }

    /// Stores `data` at byte `offset` (not yet durable).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), PoolError> {
        let _ = (offset, data);
        todo!()
    }

    /// Stores zeros over `len` bytes at `offset` (not yet durable).
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        let _ = (offset, len);
        todo!()
    }

    /// Starts write-back of the cache lines of a byte range (no fence).
    pub fn flush(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        let _ = (offset, len);
        todo!()
    }

    /// Completes earlier flushes.
    pub fn fence(&self) {
        todo!()
    }

    /// Flush + fence of a byte range.
    pub fn persist(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        let _ = (offset, len);
        todo!()
    }

    /// msync-style durability of a byte range on the backing store (fsync path).
    pub fn sync(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        let _ = (offset, len);
        todo!()
    }

    /// Byte offset of a frame, checked against the pool.
    pub fn frame_offset(&self, pfn: Pfn) -> Result<u64, PoolError> {
        let _ = pfn;
        todo!()
    }
}
