//! The one door to pool memory: the [`PoolBackend`] trait and its implementations.
//!
//! Everything pfnfs stores goes through `read` / `write` / `flush` + `fence` (or `persist`),
//! so the same filesystem code runs on an mmapped file or device ([`MmapBackend`]), on plain
//! RAM for tests ([`MemBackend`]) and on the crash simulator of the crash-consistency suite.
//!
//! Durability model (the one real PMEM gives): a store is durable only once a flush covering
//! it and a later fence have completed. `persist(range)` is `flush(range)` + `fence()`.
//!
//! Concurrency: backends take `&self` for writes. Callers (the filesystem) guarantee that no
//! byte range is written while another thread holds a borrowed slice of it: frames belong to
//! one file at a time and are accessed under that file's lock; metadata regions are owned by
//! the journal. The backend itself only guarantees that disjoint ranges may be used in
//! parallel.

// TODO(helper): implement. Keep the trait's shape; add items as needed.

use std::fmt::Debug;

/// How hard `persist` works for a file-backed pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Flush cache lines and fence (CLWB/CLFLUSHOPT + SFENCE, or CLFLUSH): durable in the
    /// persistence domain of real PMEM. For an emulated file pool the data reaches the page
    /// cache and so survives the daemon's death, not a power cut.
    #[default]
    CacheLines,
    /// Also `msync(MS_SYNC)` the range: durable in the backing file across a power cut.
    Msync,
}

/// Byte-addressed access to the whole pool. Offsets and lengths are in bytes from the start
/// of the pool; callers (the [`crate::Pool`]) check every range against `len_bytes` first,
/// so implementations may assume `offset + len <= len_bytes()`.
pub trait PoolBackend: Send + Sync + Debug {
    /// Total size of the pool in bytes.
    fn len_bytes(&self) -> u64;

    /// Borrows `len` bytes at `offset` for reading: no copy.
    fn read(&self, offset: u64, len: usize) -> &[u8];

    /// Stores `data` at `offset`. Not durable until flushed and fenced.
    fn write(&self, offset: u64, data: &[u8]);

    /// Stores zeros over `len` bytes at `offset`. Not durable until flushed and fenced.
    fn zero(&self, offset: u64, len: u64);

    /// Starts write-back of every cache line overlapping the range (CLWB/CLFLUSHOPT), without
    /// waiting; a later [`fence`](PoolBackend::fence) makes it durable.
    fn flush(&self, offset: u64, len: u64);

    /// Orders and completes all earlier flushes (SFENCE).
    fn fence(&self);

    /// `flush(range)` then `fence()`: the range is durable when this returns.
    fn persist(&self, offset: u64, len: u64) {
        self.flush(offset, len);
        self.fence();
    }

    /// Makes everything persisted so far durable on the backing store as well (msync of the
    /// range for a file mapping). A no-op where the memory itself is the persistence domain.
    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()>;
}
