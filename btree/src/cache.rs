//! [`NodeCache`]: node frames that passed every check, kept across reads.
//!
//! Reading a node from the pool costs a 4 KiB copy, a CRC32C of the frame and the full
//! structural check of [`NodeView::parse`](crate::format::NodeView::parse) (every slot, every
//! key compared with the one before it). A lookup pays that once per level, and the upper
//! levels are the same few nodes for every lookup; this cache keeps checked frames so that a
//! later read of the same node pays the copy only.
//!
//! Why no invalidation is needed: a committed node is never written in place (copy-on-write),
//! so the bytes at a PFN change only after the node was freed and the frame reused. Every hit
//! compares the frame's header on the pool (magic, level, count, heap, *generation*, *crc*)
//! with the cached one: a reused frame holds a node of a later transaction (each commit has a
//! higher generation than the last) or something that is not a node at all, and misses. The
//! checks that depend on where the node is reached from (its level, its keys against the
//! parent's separators) are still made on every read by the caller.
//!
//! The cache is bounded (a count of frames, fixed when it is made) and is shared by every
//! clone of a [`Tree`](crate::Tree) and by the transactions made from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pfnfs_alloc::{Pfn, Pool};

use crate::error::TreeError;
use crate::format::{HEADER_BYTES, NODE_BYTES};

/// One checked node frame.
type Frame = Arc<[u8; NODE_BYTES]>;

/// Checked node frames by PFN (module docs).
pub struct NodeCache {
    frames: quick_cache::sync::Cache<u64, Frame>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("capacity", &self.capacity)
            .field("cached", &self.frames.len())
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish()
    }
}

/// What a [`NodeCache`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCacheStats {
    /// Frames it may hold.
    pub capacity: usize,
    /// Frames it holds.
    pub cached: usize,
    /// Reads answered from it.
    pub hits: u64,
    /// Reads that went to the pool (including those whose frame had changed).
    pub misses: u64,
}

impl NodeCache {
    /// A cache of up to `bytes` of node frames (at least one frame).
    pub fn with_bytes(bytes: u64) -> NodeCache {
        let capacity = usize::try_from(bytes / NODE_BYTES as u64)
            .unwrap_or(usize::MAX)
            .max(1);
        NodeCache {
            frames: quick_cache::sync::Cache::new(capacity),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// What it holds and how often it answered.
    pub fn stats(&self) -> NodeCacheStats {
        NodeCacheStats {
            capacity: self.capacity,
            cached: self.frames.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Copies the cached frame of the node at `pfn` into `frame` if there is one and the
    /// pool's header at `pfn` is still the cached one; `false` (nothing copied) otherwise.
    pub(crate) fn fetch(&self, pool: &Pool, pfn: Pfn, frame: &mut [u8]) -> Result<bool, TreeError> {
        let Some(cached) = self.frames.get(&pfn.0) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        };
        let mut header = [0u8; HEADER_BYTES];
        pool.read_into(pfn.byte_offset(), &mut header)?;
        if header[..] != cached[..HEADER_BYTES] {
            self.frames.remove(&pfn.0);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        frame.copy_from_slice(&cached[..]);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Keeps `frame`, the node at `pfn` that has just passed every check.
    pub(crate) fn keep(&self, pfn: Pfn, frame: &[u8]) {
        let Ok(bytes) = <[u8; NODE_BYTES]>::try_from(frame) else {
            return;
        };
        self.frames.insert(pfn.0, Arc::new(bytes));
    }
}
