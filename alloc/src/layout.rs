//! The on-pool layout in one place. `docs/DESIGN.md` documents the same numbers; a test in
//! this crate checks that the two agree.
//!
//! ```text
//! PFN 0            superblock slot A (one frame)
//! PFN 1            superblock slot B (one frame)
//! PFN 2 .. 511     reserved (zero)
//! PFN 512 ..       metadata log (log_frames, a multiple of 512)
//! after the log    data region: file frames and checkpoint frames, to the end of the pool
//! ```
//!
//! The byte layout of a superblock slot is [`crate::superblock::FIELDS`].

use crate::pfn::{FRAME_SIZE, HUGE_FRAMES};

/// Byte offset of superblock slot A.
pub const SUPERBLOCK_A_OFFSET: u64 = 0;
/// Byte offset of superblock slot B.
pub const SUPERBLOCK_B_OFFSET: u64 = FRAME_SIZE;
/// Encoded size of a superblock in bytes (the rest of its frame is zero).
pub const SUPERBLOCK_BYTES: usize = 256;
/// First frame of the metadata log.
pub const LOG_START_PFN: u64 = HUGE_FRAMES;
/// Smallest log: 4 MiB.
pub const LOG_FRAMES_MIN: u64 = 1024;
/// Largest log: 64 MiB.
pub const LOG_FRAMES_MAX: u64 = 16384;
/// The log gets 1/LOG_SHARE_DIVISOR of the pool, clamped to the bounds above.
pub const LOG_SHARE_DIVISOR: u64 = 256;
/// Smallest pool `mkfs` accepts: 16 MiB.
pub const POOL_BYTES_MIN: u64 = 16 << 20;
/// Bytes of the pool header (superblock slots and reserved frames, PFN 0..LOG_START_PFN),
/// which only superblock commits and mkfs write.
pub const HEADER_BYTES: u64 = LOG_START_PFN * FRAME_SIZE;
/// mkfs sizes pools in whole 2 MiB units (rounding down).
pub const POOL_ALIGN_BYTES: u64 = HUGE_FRAMES * FRAME_SIZE;

/// Frames given to the metadata log of a pool of `pool_frames` frames: a multiple of 512.
pub fn log_frames_for(pool_frames: u64) -> u64 {
    let want = (pool_frames / LOG_SHARE_DIVISOR).clamp(LOG_FRAMES_MIN, LOG_FRAMES_MAX);
    want.div_ceil(HUGE_FRAMES) * HUGE_FRAMES
}
