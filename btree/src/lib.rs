//! pfnfs-btree: the on-pool copy-on-write B+tree of byte keys to byte values that holds the
//! metadata of a format 2 pool (docs/DESIGN.md, section 3.4).
//!
//! Why a copy-on-write tree: metadata then lives on the pool, authoritative, instead of in
//! RAM with a full image written at every checkpoint. A transaction never overwrites a
//! committed node; it writes new nodes, and the change becomes current with one superblock
//! commit naming the new root (the LMDB/redb scheme). A crash before that commit leaves the
//! old tree intact, a crash after it the new one; torn node writes are caught by each node's
//! CRC32C. The redo log in front of it (the filesystem's) makes single operations durable
//! without a tree commit each.
//!
//! Modules:
//! - [`format`](mod@format): the node frame and overflow run formats, their one encoder and decoder,
//!   the limits ([`MAX_KEY`], [`MAX_VALUE`], [`INLINE_VALUE_MAX`]) and the header tables
//!   ([`format::FIELDS`], [`format::OVERFLOW_FIELDS`]) docs/DESIGN.md mirrors.
//! - [`read`]: lookups, [`Range`] (a lazy cursor), floor, and the full walks behind
//!   [`Tree::frames`] and [`Tree::check`]; every node read is validated. Lookups, floor
//!   and ranges read nodes in place ([`format::NodeView`]) and copy out only what they return.
//! - [`txn`]: [`Txn`], a write transaction: dirty nodes in RAM, written by [`Txn::write`]
//!   with one fence; [`Written`], its result.
//! - [`error`]: the error type, [`TreeError`].
//!
//! Ownership: a [`Tree`] is only a root PFN and a height; it owns nothing in RAM. The frames
//! of a committed tree belong to whoever committed its root (the superblock's owner); a
//! [`Txn`] owns the frames it allocated (in [`pfnfs_alloc::Frames`] guards) until the caller
//! commits the [`Written::frames`] guard, and never frees committed frames itself: it lists
//! them in [`Written::freed`]. Locking: none; a `Tree` may be read by many threads at once
//! (reads only copy from the pool), and nothing writes a committed tree's frames.
//!
//! Pool access is only through the safe `Pool::read_into`/`write`/`flush`/`fence`.

#![forbid(unsafe_code)]

mod cache;
pub mod error;
pub mod format;
pub mod read;
pub mod txn;

use std::sync::Arc;

use pfnfs_alloc::{Pfn, PfnRange, Pool};

pub use cache::{NodeCache, NodeCacheStats};
pub use error::TreeError;
pub use format::{INLINE_VALUE_MAX, MAX_HEIGHT, MAX_KEY, MAX_OVERFLOW_RANGES, MAX_VALUE};
pub use read::{KeyValue, Range, TreeStats};
pub use txn::{Txn, Written};

use read::PoolStore;

/// A committed (or just written) tree: its root node and height. Reading it needs the pool
/// it lives in.
///
/// A tree may carry a [`NodeCache`] ([`Tree::with_cache`]); the trees and transactions made
/// from it share it. Two trees are equal when they have the same root and height.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    root: Option<Pfn>,
    height: u8,
    cache: Option<Arc<NodeCache>>,
}

impl PartialEq for Tree {
    fn eq(&self, other: &Tree) -> bool {
        (self.root, self.height) == (other.root, other.height)
    }
}

impl Eq for Tree {}

impl Tree {
    /// The empty tree (no frame).
    pub fn empty() -> Tree {
        Tree::default()
    }

    pub(crate) fn from_parts(root: Option<Pfn>, height: u8, cache: Option<Arc<NodeCache>>) -> Tree {
        Tree {
            root,
            height,
            cache,
        }
    }

    /// This tree, reading through `cache` (shared with the trees and transactions made from
    /// it).
    pub fn with_cache(mut self, cache: Arc<NodeCache>) -> Tree {
        self.cache = Some(cache);
        self
    }

    /// The cache it reads through, if any.
    pub fn cache(&self) -> Option<&Arc<NodeCache>> {
        self.cache.as_ref()
    }

    /// The tree rooted at `root` with `height` levels, as a superblock names it. Validates
    /// the root node (magic, crc, level == height - 1, keys, children inside the data
    /// region); everything below is validated when read.
    pub fn open(pool: &Pool, root: Pfn, height: u8) -> Result<Tree, TreeError> {
        if height == 0 || height > MAX_HEIGHT {
            return Err(TreeError::corrupt(
                root.0,
                format!("tree height {height} (1..={MAX_HEIGHT})"),
            ));
        }
        let mut frame = [0u8; format::NODE_BYTES];
        read::read_node(
            PoolStore {
                pool,
                data: pool.data_region(),
                cache: None,
            },
            root,
            height - 1,
            None,
            None,
            &mut frame,
        )?;
        Ok(Tree {
            root: Some(root),
            height,
            cache: None,
        })
    }

    /// The root node's frame (`None` for the empty tree).
    pub fn root(&self) -> Option<Pfn> {
        self.root
    }

    /// Levels: 0 for the empty tree, 1 for a single leaf.
    pub fn height(&self) -> u8 {
        self.height
    }

    fn store<'a>(&'a self, pool: &'a Pool) -> PoolStore<'a> {
        PoolStore {
            pool,
            data: pool.data_region(),
            cache: self.cache.as_deref(),
        }
    }

    /// The value of `key`.
    pub fn get(&self, pool: &Pool, key: &[u8]) -> Result<Option<Vec<u8>>, TreeError> {
        read::get(&self.store(pool), self.root, self.height, key)
    }

    /// The entries with `start <= key < end` (`end` `None`: to the last), in key order,
    /// read lazily.
    pub fn range<'a>(&'a self, pool: &'a Pool, start: &[u8], end: Option<&[u8]>) -> Range<'a> {
        Range::on_pool(
            pool,
            self.cache.as_deref(),
            self.root,
            self.height,
            start,
            end,
        )
    }

    /// The last entry with a key `<= key`.
    pub fn floor(&self, pool: &Pool, key: &[u8]) -> Result<Option<KeyValue>, TreeError> {
        read::floor(&self.store(pool), self.root, self.height, key)
    }

    /// Every frame the tree uses (one range per node, the ranges of every overflow run),
    /// sorted by start. Checks every node on the way; `Corrupt` if a frame is used twice.
    pub fn frames(&self, pool: &Pool) -> Result<Vec<PfnRange>, TreeError> {
        read::walk(&self.store(pool), self.root, self.height, false).map(|(_, f)| f)
    }

    /// The full structural check for fsck: every node (order within and across nodes,
    /// separators, uniform leaf depth, children in the region), every overflow run's header
    /// and crc, no frame used twice.
    /// Reads every node from the pool, never from the cache.
    pub fn check(&self, pool: &Pool) -> Result<TreeStats, TreeError> {
        let store = PoolStore {
            pool,
            data: pool.data_region(),
            cache: None,
        };
        read::walk(&store, self.root, self.height, true).map(|(s, _)| s)
    }
}
