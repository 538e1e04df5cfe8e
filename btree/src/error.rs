//! [`TreeError`]: everything a tree operation can fail with. Damage on the pool is always
//! [`TreeError::Corrupt`] naming the frame, never a panic.

use pfnfs_alloc::{AllocError, PoolError};

/// Why a tree operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The allocator could not give the frames a node or an overflow run needs.
    #[error("btree: no space: {0}")]
    NoSpace(#[source] AllocError),
    /// A value's overflow run would need more than [`MAX_OVERFLOW_RANGES`](crate::MAX_OVERFLOW_RANGES)
    /// separate ranges: free space is too fragmented for it (the frames were given back).
    #[error("btree: free space too fragmented: a {len_bytes}-byte value needs {ranges} ranges")]
    Fragmented {
        /// Length of the value.
        len_bytes: usize,
        /// Ranges the allocator returned.
        ranges: usize,
    },
    /// Reading or writing the pool failed.
    #[error("btree: {0}")]
    Pool(#[from] PoolError),
    /// A node or an overflow run on the pool fails a check: the tree is damaged (or the
    /// reference to it is wrong).
    #[error("btree: frame {pfn:#x} is corrupt: {what}")]
    Corrupt {
        /// The frame (node, or first frame of an overflow run) that failed.
        pfn: u64,
        /// Which check failed.
        what: String,
    },
    /// A key is empty (keys are 1..=[`MAX_KEY`](crate::MAX_KEY) bytes).
    #[error("btree: empty key")]
    KeyEmpty,
    /// A key is longer than [`MAX_KEY`](crate::MAX_KEY).
    #[error("btree: key of {len} bytes is longer than {max}", max = crate::MAX_KEY)]
    KeyTooLong {
        /// Length of the key.
        len: usize,
    },
    /// A value is longer than [`MAX_VALUE`](crate::MAX_VALUE).
    #[error("btree: value of {len} bytes is longer than {max}", max = crate::MAX_VALUE)]
    ValueTooLong {
        /// Length of the value.
        len: usize,
    },
    /// The tree would grow past [`MAX_HEIGHT`](crate::MAX_HEIGHT) levels.
    #[error("btree: tree would be taller than {max} levels", max = crate::MAX_HEIGHT)]
    TooTall,
    /// An earlier `put`/`delete` of this transaction failed half way; the transaction must be
    /// dropped (which gives its frames back).
    #[error("btree: an earlier operation of this transaction failed; drop it")]
    Poisoned,
}

impl TreeError {
    /// A [`TreeError::Corrupt`] for frame `pfn`.
    pub(crate) fn corrupt(pfn: u64, what: impl Into<String>) -> TreeError {
        TreeError::Corrupt {
            pfn,
            what: what.into(),
        }
    }
}
