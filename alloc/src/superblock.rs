//! The superblock: what a pool is and where its parts are, kept in two slots.
//!
//! Updates alternate between slot A and slot B with a rising `seq`; open takes the intact slot
//! with the highest `seq`. A torn or interrupted update therefore damages at most the slot
//! being written, and the other still describes a consistent pool.
//!
//! Byte layout (little-endian; see docs/DESIGN.md for the diagram) is encoded and decoded here
//! and nowhere else.

/// The eight magic bytes at offset 0 of each slot.
pub const MAGIC: [u8; 8] = *b"PFNFSPOL";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Where the newest checkpoint lives (zero `len_bytes`: none yet, the log alone describes the
/// filesystem from an empty state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointRef {
    /// First frame of the checkpoint (its header frame).
    pub head_pfn: u64,
    /// Encoded length of the checkpoint in bytes.
    pub len_bytes: u64,
    /// CRC32C of the encoded checkpoint.
    pub crc: u32,
    /// Log generation that starts after this checkpoint: log records of older generations are
    /// ignored on replay.
    pub log_generation: u64,
}

/// The decoded contents of one superblock slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Format version (== FORMAT_VERSION).
    pub version: u32,
    /// Identity of the pool, random at mkfs.
    pub uuid: [u8; 16],
    /// Frame size in bytes (4096).
    pub frame_size: u32,
    /// Pool size in bytes, a multiple of the frame size.
    pub pool_bytes: u64,
    /// Update sequence: the intact slot with the highest seq is current.
    pub seq: u64,
    /// First frame of the metadata log.
    pub log_start_pfn: u64,
    /// Frames in the metadata log.
    pub log_frames: u64,
    /// First frame of the data region.
    pub data_start_pfn: u64,
    /// Frames in the data region (to the end of the pool).
    pub data_frames: u64,
    /// The newest durable checkpoint.
    pub checkpoint: CheckpointRef,
    /// Set while mounted read-write; cleared by a clean unmount.
    pub mounted: bool,
    /// mkfs time, seconds since the epoch.
    pub created_secs: u64,
}

// TODO(helper): encode()/decode() with CRC32C over the encoded bytes; decode errors say which
// check failed.
