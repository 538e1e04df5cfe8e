//! The superblock: what a pool is, where its parts are and where its metadata tree is rooted,
//! kept in two slots.
//!
//! A commit writes the new superblock twice: first to the slot not holding the current one
//! (`seq n + 1`, the commit point), then to the other (`seq n + 2`), each persisted
//! ([`crate::Pool::commit_superblock`]). Open takes the intact slot with the highest `seq`. A
//! torn or interrupted write therefore damages at most the slot being written, the other
//! still describes a consistent pool, and after a completed commit both slots name the same
//! metadata root, so damage to either copy loses nothing.
//!
//! Byte layout (little-endian; see docs/DESIGN.md 3.2 for the diagram) is encoded and decoded
//! here and nowhere else: [`FIELDS`] lists every field of format 2 with its offset and size,
//! [`FIELDS_V1`] those of format 1 (still decoded, for `pfnfs upgrade`); a test checks each
//! table is contiguous and covers the 256 bytes, and another (alloc/tests/pool.rs) checks
//! that docs/DESIGN.md shows the same offsets.
//!
//! Invariants:
//! - Slot A (PFN 0) only ever holds even `seq`s, slot B (PFN 1) odd ones: mkfs writes seq 1 to
//!   B, then seq 2 to A; a commit writes `seq + 1` (the other slot), then `seq + 2` (this one).
//! - An encoded superblock is `validate`d before it is written, and decoded superblocks pass
//!   the same checks (pair assertion): a slot that decodes is self-consistent.
//! - Format 2: bytes 144..252 are zero; format 1: bytes 120..252. The CRC32C of bytes 0..252
//!   sits at 252..256 in both.
//! - This build writes format 2 only; format 1 is decoded ([`SuperblockV1::decode`]) so that
//!   the upgrade can read it, and encoded only for tests ([`SuperblockV1::encode`]).

/// The eight magic bytes at offset 0 of each slot.
pub const MAGIC: [u8; 8] = *b"PFNFSPOL";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// The older format this build still decodes (for `pfnfs upgrade` only).
pub const FORMAT_VERSION_V1: u32 = 1;
/// Largest `meta.height` a superblock may name.
pub const META_HEIGHT_MAX: u32 = 16;
/// Smallest `meta.next_ino` (inode 1 is the root directory).
pub const META_NEXT_INO_MIN: u64 = 2;

use crate::layout::{
    LOG_FRAMES_MAX, LOG_FRAMES_MIN, LOG_START_PFN, POOL_BYTES_MIN, SUPERBLOCK_A_OFFSET,
    SUPERBLOCK_B_OFFSET, SUPERBLOCK_BYTES, log_frames_for,
};
use crate::pfn::{FRAME_SIZE, HUGE_FRAMES};

/// One field of the encoded superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name as docs/DESIGN.md writes it (`meta.root_pfn` for nested ones).
    pub name: &'static str,
    /// Byte offset within the slot.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// The fields of the encoded superblock (format 2), one constant each. Fields 0..80 and
/// `flags`, `created_secs` and `crc32c` are common to formats 1 and 2.
pub mod field {
    use super::Field;

    /// `MAGIC`.
    pub const MAGIC: Field = Field {
        name: "magic",
        offset: 0,
        size: 8,
    };
    /// Format version, u32.
    pub const VERSION: Field = Field {
        name: "version",
        offset: 8,
        size: 4,
    };
    /// Frame size in bytes, u32 (4096).
    pub const FRAME_SIZE: Field = Field {
        name: "frame_size",
        offset: 12,
        size: 4,
    };
    /// Pool identity.
    pub const UUID: Field = Field {
        name: "uuid",
        offset: 16,
        size: 16,
    };
    /// Pool size in bytes, u64.
    pub const POOL_BYTES: Field = Field {
        name: "pool_bytes",
        offset: 32,
        size: 8,
    };
    /// Update sequence, u64.
    pub const SEQ: Field = Field {
        name: "seq",
        offset: 40,
        size: 8,
    };
    /// First log frame, u64.
    pub const LOG_START_PFN: Field = Field {
        name: "log_start_pfn",
        offset: 48,
        size: 8,
    };
    /// Log frames, u64.
    pub const LOG_FRAMES: Field = Field {
        name: "log_frames",
        offset: 56,
        size: 8,
    };
    /// First data frame, u64.
    pub const DATA_START_PFN: Field = Field {
        name: "data_start_pfn",
        offset: 64,
        size: 8,
    };
    /// Data frames, u64.
    pub const DATA_FRAMES: Field = Field {
        name: "data_frames",
        offset: 72,
        size: 8,
    };
    /// Root frame of the metadata tree, u64 (0: none yet).
    pub const META_ROOT_PFN: Field = Field {
        name: "meta.root_pfn",
        offset: 80,
        size: 8,
    };
    /// Frames the metadata tree uses, u64.
    pub const META_TREE_FRAMES: Field = Field {
        name: "meta.tree_frames",
        offset: 88,
        size: 8,
    };
    /// Height of the metadata tree, u32 (0 iff no root).
    pub const META_HEIGHT: Field = Field {
        name: "meta.height",
        offset: 96,
        size: 4,
    };
    /// Flags, u32 (bit 0: mounted).
    pub const FLAGS: Field = Field {
        name: "flags",
        offset: 100,
        size: 4,
    };
    /// Log generation that starts after this root, u64.
    pub const META_LOG_GENERATION: Field = Field {
        name: "meta.log_generation",
        offset: 104,
        size: 8,
    };
    /// mkfs time, u64 seconds since the epoch.
    pub const CREATED_SECS: Field = Field {
        name: "created_secs",
        offset: 112,
        size: 8,
    };
    /// Nonce of the log generation, u64 (log records carry it).
    pub const META_LOG_NONCE: Field = Field {
        name: "meta.log_nonce",
        offset: 120,
        size: 8,
    };
    /// Next inode number to hand out, u64.
    pub const META_NEXT_INO: Field = Field {
        name: "meta.next_ino",
        offset: 128,
        size: 8,
    };
    /// Live inodes, u64.
    pub const META_INODES: Field = Field {
        name: "meta.inodes",
        offset: 136,
        size: 8,
    };
    /// Zero.
    pub const RESERVED: Field = Field {
        name: "reserved",
        offset: 144,
        size: 108,
    };
    /// CRC32C of bytes 0..252, u32.
    pub const CRC32C: Field = Field {
        name: "crc32c",
        offset: 252,
        size: 4,
    };
}

/// The fields of format 1 that format 2 replaced (the others are in [`field`]).
pub mod field_v1 {
    use super::Field;

    /// Checkpoint head frame, u64.
    pub const CHECKPOINT_HEAD_PFN: Field = Field {
        name: "checkpoint.head_pfn",
        offset: 80,
        size: 8,
    };
    /// Checkpoint length in bytes, u64.
    pub const CHECKPOINT_LEN_BYTES: Field = Field {
        name: "checkpoint.len_bytes",
        offset: 88,
        size: 8,
    };
    /// Checkpoint CRC32C, u32.
    pub const CHECKPOINT_CRC: Field = Field {
        name: "checkpoint.crc",
        offset: 96,
        size: 4,
    };
    /// Log generation after the checkpoint, u64.
    pub const CHECKPOINT_LOG_GENERATION: Field = Field {
        name: "checkpoint.log_generation",
        offset: 104,
        size: 8,
    };
    /// Zero.
    pub const RESERVED: Field = Field {
        name: "reserved",
        offset: 120,
        size: 132,
    };
}

/// Every field of format 2 in byte order: contiguous, covering exactly [`SUPERBLOCK_BYTES`].
pub const FIELDS: [Field; 21] = [
    field::MAGIC,
    field::VERSION,
    field::FRAME_SIZE,
    field::UUID,
    field::POOL_BYTES,
    field::SEQ,
    field::LOG_START_PFN,
    field::LOG_FRAMES,
    field::DATA_START_PFN,
    field::DATA_FRAMES,
    field::META_ROOT_PFN,
    field::META_TREE_FRAMES,
    field::META_HEIGHT,
    field::FLAGS,
    field::META_LOG_GENERATION,
    field::CREATED_SECS,
    field::META_LOG_NONCE,
    field::META_NEXT_INO,
    field::META_INODES,
    field::RESERVED,
    field::CRC32C,
];

/// Every field of format 1 in byte order: contiguous, covering exactly [`SUPERBLOCK_BYTES`].
pub const FIELDS_V1: [Field; 18] = [
    field::MAGIC,
    field::VERSION,
    field::FRAME_SIZE,
    field::UUID,
    field::POOL_BYTES,
    field::SEQ,
    field::LOG_START_PFN,
    field::LOG_FRAMES,
    field::DATA_START_PFN,
    field::DATA_FRAMES,
    field_v1::CHECKPOINT_HEAD_PFN,
    field_v1::CHECKPOINT_LEN_BYTES,
    field_v1::CHECKPOINT_CRC,
    field::FLAGS,
    field_v1::CHECKPOINT_LOG_GENERATION,
    field::CREATED_SECS,
    field_v1::RESERVED,
    field::CRC32C,
];

/// `flags` bit 0: the pool is mounted read-write (cleared by a clean unmount).
pub const FLAG_MOUNTED: u32 = 1;
/// `flags` bit 1 (format 2): the metadata tree holds a bad-frame table (frames whose memory
/// failed, never to be used again). A build that does not know the bit refuses the pool
/// ("unknown flag bits") rather than open it and hand those frames out.
pub const FLAG_BAD_FRAMES: u32 = 1 << 1;
/// `flags` bit 2 (format 2): files of the metadata tree may keep their bytes in their inode
/// record (inline data) and the log may hold the records that write them. Set by mkfs and by
/// `pfnfs upgrade`; once set it stays. A build that does not know the bit refuses the pool
/// ("unknown flag bits") rather than misread those inodes.
pub const FLAG_INLINE_DATA: u32 = 1 << 2;
/// Every flag bit this version knows; others must be zero.
pub const FLAGS_KNOWN: u32 = FLAG_MOUNTED | FLAG_BAD_FRAMES | FLAG_INLINE_DATA;

/// Why a superblock slot did not decode. Checks run in this order: length, magic, version,
/// checksum, then fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    /// Fewer than [`SUPERBLOCK_BYTES`] bytes.
    #[error("too short: {len_bytes} bytes, a superblock has {SUPERBLOCK_BYTES}")]
    TooShort { len_bytes: usize },
    /// The first eight bytes are not [`MAGIC`].
    #[error("no pfnfs magic (found {found:02x?})")]
    BadMagic { found: [u8; 8] },
    /// The magic is there but the version is not the one the decoder reads.
    #[error("format version {found} (this pfnfs reads version {FORMAT_VERSION})")]
    UnsupportedVersion { found: u32 },
    /// The CRC32C of bytes 0..252 does not match the stored one.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
    /// The checksum is right but a field is out of range or inconsistent with another.
    #[error("field {field}: {why}")]
    BadField { field: &'static str, why: String },
    /// The slot's memory faulted when read (storage gone or a media error).
    #[error("unreadable: memory error (SIGBUS) at pool byte {offset:#x}")]
    Unreadable { offset: u64 },
}

/// One of the two superblock slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// PFN 0: even `seq`s.
    A,
    /// PFN 1: odd `seq`s.
    B,
}

impl Slot {
    /// The slot that holds (or will hold) the superblock with sequence `seq`.
    pub fn for_seq(seq: u64) -> Slot {
        if seq.is_multiple_of(2) {
            Slot::A
        } else {
            Slot::B
        }
    }

    /// Byte offset of the slot in the pool.
    pub fn offset(self) -> u64 {
        match self {
            Slot::A => SUPERBLOCK_A_OFFSET,
            Slot::B => SUPERBLOCK_B_OFFSET,
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `'A'` or `'B'`.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'A',
            Slot::B => 'B',
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// Where the metadata lives: the root of the on-pool B+tree and the counters that go with it,
/// committed together by a superblock commit.
///
/// A fresh pool has no tree ([`MetaRoot::EMPTY`], `root_pfn == 0`): the log alone describes
/// the filesystem from an empty state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaRoot {
    /// Root frame of the metadata tree, inside the data region; 0: no tree yet.
    pub root_pfn: u64,
    /// Frames the tree uses (at most the data region).
    pub tree_frames: u64,
    /// Levels of the tree: 0 iff `root_pfn == 0`, at most [`META_HEIGHT_MAX`].
    pub height: u32,
    /// Log generation that starts after this root: records of other generations are ignored.
    pub log_generation: u64,
    /// Random per generation; every log record of the generation carries it, so stale bytes
    /// of an earlier generation cannot pass for records.
    pub log_nonce: u64,
    /// Next inode number to hand out (at least [`META_NEXT_INO_MIN`]).
    pub next_ino: u64,
    /// Live inodes (at least 1 once there is a tree).
    pub inodes: u64,
}

impl MetaRoot {
    /// No tree, generation 0, nonce 0, next inode 2, no inode: what a fresh pool holds (mkfs
    /// sets a random nonce).
    pub const EMPTY: MetaRoot = MetaRoot {
        root_pfn: 0,
        tree_frames: 0,
        height: 0,
        log_generation: 0,
        log_nonce: 0,
        next_ino: META_NEXT_INO_MIN,
        inodes: 0,
    };

    /// True if no tree has been committed yet (a fresh pool).
    pub fn is_empty(&self) -> bool {
        self.root_pfn == 0
    }
}

impl Default for MetaRoot {
    fn default() -> MetaRoot {
        MetaRoot::EMPTY
    }
}

/// A random non-zero log nonce (for a new log generation).
pub fn new_log_nonce() -> u64 {
    loop {
        let nonce: u64 = rand::random();
        if nonce != 0 {
            return nonce;
        }
    }
}

/// The decoded contents of one superblock slot (format 2).
///
/// [`crate::Pool::superblock`] of a format 1 pool opened for the upgrade returns the same
/// struct with `version` 1 and [`MetaRoot::EMPTY`] (its checkpoint reference is
/// [`crate::Pool::format1_checkpoint`]); such a value does not `validate`.
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
    /// The newest durable metadata root.
    pub meta: MetaRoot,
    /// Set while mounted read-write; cleared by a clean unmount.
    pub mounted: bool,
    /// The metadata tree holds a bad-frame table ([`FLAG_BAD_FRAMES`]).
    pub bad_frames: bool,
    /// Files may keep their bytes in their inode record ([`FLAG_INLINE_DATA`]).
    pub inline_data: bool,
    /// mkfs time, seconds since the epoch.
    pub created_secs: u64,
}

fn bad(field: Field, why: impl Into<String>) -> SuperblockError {
    SuperblockError::BadField {
        field: field.name,
        why: why.into(),
    }
}

fn get_bytes<const N: usize>(buf: &[u8; SUPERBLOCK_BYTES], f: Field) -> [u8; N] {
    debug_assert_eq!(f.size, N, "{}", f.name);
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[f.offset..f.offset + N]);
    out
}

fn get_u32(buf: &[u8; SUPERBLOCK_BYTES], f: Field) -> u32 {
    u32::from_le_bytes(get_bytes(buf, f))
}

fn get_u64(buf: &[u8; SUPERBLOCK_BYTES], f: Field) -> u64 {
    u64::from_le_bytes(get_bytes(buf, f))
}

fn put(buf: &mut [u8; SUPERBLOCK_BYTES], f: Field, bytes: &[u8]) {
    debug_assert_eq!(f.size, bytes.len(), "{}", f.name);
    buf[f.offset..f.offset + bytes.len()].copy_from_slice(bytes);
}

/// CRC32C of an encoded slot's bytes 0..252.
fn checksum(buf: &[u8; SUPERBLOCK_BYTES]) -> u32 {
    crc32c::crc32c(&buf[..field::CRC32C.offset])
}

/// The version field of a slot, if it has the length and the magic.
pub fn peek_version(bytes: &[u8]) -> Option<u32> {
    let buf: &[u8; SUPERBLOCK_BYTES] = bytes.get(..SUPERBLOCK_BYTES)?.try_into().ok()?;
    (get_bytes::<8>(buf, field::MAGIC) == MAGIC).then(|| get_u32(buf, field::VERSION))
}

/// The checks common to both formats, in order: length, magic, `version == want`, checksum,
/// reserved bytes zero (`reserved`), known flags. Returns the slot's bytes and its flags.
fn open_slot(
    bytes: &[u8],
    want: u32,
    reserved: Field,
) -> Result<(&[u8; SUPERBLOCK_BYTES], u32), SuperblockError> {
    let buf: &[u8; SUPERBLOCK_BYTES] = bytes
        .get(..SUPERBLOCK_BYTES)
        .and_then(|b| b.try_into().ok())
        .ok_or(SuperblockError::TooShort {
            len_bytes: bytes.len(),
        })?;
    let magic: [u8; 8] = get_bytes(buf, field::MAGIC);
    if magic != MAGIC {
        return Err(SuperblockError::BadMagic { found: magic });
    }
    let version = get_u32(buf, field::VERSION);
    if version != want {
        return Err(SuperblockError::UnsupportedVersion { found: version });
    }
    let stored = get_u32(buf, field::CRC32C);
    let computed = checksum(buf);
    if stored != computed {
        return Err(SuperblockError::BadChecksum { stored, computed });
    }
    let zeros = &buf[reserved.offset..reserved.offset + reserved.size];
    if let Some(pos) = zeros.iter().position(|&b| b != 0) {
        return Err(bad(
            reserved,
            format!("byte {} is not zero", reserved.offset + pos),
        ));
    }
    let flags = get_u32(buf, field::FLAGS);
    if flags & !FLAGS_KNOWN != 0 {
        return Err(bad(
            field::FLAGS,
            format!("unknown flag bits {:#x}", flags & !FLAGS_KNOWN),
        ));
    }
    Ok((buf, flags))
}

/// Encodes the fields common to both formats (all but the version-specific ones, the CRC and
/// the reserved bytes, which stay zero).
fn encode_common(sb: &Superblock, version: u32) -> [u8; SUPERBLOCK_BYTES] {
    let mut buf = [0u8; SUPERBLOCK_BYTES];
    put(&mut buf, field::MAGIC, &MAGIC);
    put(&mut buf, field::VERSION, &version.to_le_bytes());
    put(&mut buf, field::FRAME_SIZE, &sb.frame_size.to_le_bytes());
    put(&mut buf, field::UUID, &sb.uuid);
    put(&mut buf, field::POOL_BYTES, &sb.pool_bytes.to_le_bytes());
    put(&mut buf, field::SEQ, &sb.seq.to_le_bytes());
    put(
        &mut buf,
        field::LOG_START_PFN,
        &sb.log_start_pfn.to_le_bytes(),
    );
    put(&mut buf, field::LOG_FRAMES, &sb.log_frames.to_le_bytes());
    put(
        &mut buf,
        field::DATA_START_PFN,
        &sb.data_start_pfn.to_le_bytes(),
    );
    put(&mut buf, field::DATA_FRAMES, &sb.data_frames.to_le_bytes());
    let flags = if sb.mounted { FLAG_MOUNTED } else { 0 }
        | if sb.bad_frames { FLAG_BAD_FRAMES } else { 0 }
        | if sb.inline_data { FLAG_INLINE_DATA } else { 0 };
    put(&mut buf, field::FLAGS, &flags.to_le_bytes());
    put(
        &mut buf,
        field::CREATED_SECS,
        &sb.created_secs.to_le_bytes(),
    );
    buf
}

/// Seals an encoded slot: the CRC32C of bytes 0..252 into 252..256.
fn seal(buf: &mut [u8; SUPERBLOCK_BYTES]) {
    let crc = checksum(buf);
    put(buf, field::CRC32C, &crc.to_le_bytes());
}

/// Decodes the fields common to both formats; `meta` is [`MetaRoot::EMPTY`].
fn decode_common(buf: &[u8; SUPERBLOCK_BYTES], flags: u32) -> Superblock {
    Superblock {
        version: get_u32(buf, field::VERSION),
        uuid: get_bytes(buf, field::UUID),
        frame_size: get_u32(buf, field::FRAME_SIZE),
        pool_bytes: get_u64(buf, field::POOL_BYTES),
        seq: get_u64(buf, field::SEQ),
        log_start_pfn: get_u64(buf, field::LOG_START_PFN),
        log_frames: get_u64(buf, field::LOG_FRAMES),
        data_start_pfn: get_u64(buf, field::DATA_START_PFN),
        data_frames: get_u64(buf, field::DATA_FRAMES),
        meta: MetaRoot::EMPTY,
        mounted: flags & FLAG_MOUNTED != 0,
        bad_frames: flags & FLAG_BAD_FRAMES != 0,
        inline_data: flags & FLAG_INLINE_DATA != 0,
        created_secs: get_u64(buf, field::CREATED_SECS),
    }
}

impl Superblock {
    /// The superblock mkfs writes for a pool of `pool_bytes` (layout per [`crate::layout`]),
    /// with `seq` 1, [`MetaRoot::EMPTY`], not mounted, inline data on. Fails if the size cannot hold a pool.
    pub fn for_new_pool(
        pool_bytes: u64,
        uuid: [u8; 16],
        created_secs: u64,
    ) -> Result<Superblock, SuperblockError> {
        let pool_frames = pool_bytes / FRAME_SIZE;
        let log_frames = log_frames_for(pool_frames);
        let data_start_pfn = LOG_START_PFN + log_frames;
        let sb = Superblock {
            version: FORMAT_VERSION,
            uuid,
            frame_size: FRAME_SIZE as u32,
            pool_bytes,
            seq: 1,
            log_start_pfn: LOG_START_PFN,
            log_frames,
            data_start_pfn,
            data_frames: pool_frames.saturating_sub(data_start_pfn),
            meta: MetaRoot::EMPTY,
            mounted: false,
            bad_frames: false,
            inline_data: true,
            created_secs,
        };
        sb.validate()?;
        Ok(sb)
    }

    /// Checks every field against the format's rules and the others (not against the size of
    /// the backing store: that is the pool's job).
    pub fn validate(&self) -> Result<(), SuperblockError> {
        if self.version != FORMAT_VERSION {
            return Err(SuperblockError::UnsupportedVersion {
                found: self.version,
            });
        }
        self.validate_geometry()?;
        let m = &self.meta;
        let pool_frames = self.pool_bytes / FRAME_SIZE;
        if m.root_pfn != 0 && !(self.data_start_pfn..pool_frames).contains(&m.root_pfn) {
            return Err(bad(
                field::META_ROOT_PFN,
                format!(
                    "{} lies outside the data region {}..{pool_frames}",
                    m.root_pfn, self.data_start_pfn
                ),
            ));
        }
        if m.tree_frames > self.data_frames {
            return Err(bad(
                field::META_TREE_FRAMES,
                format!(
                    "{} exceeds the data region's {} frames",
                    m.tree_frames, self.data_frames
                ),
            ));
        }
        if (m.height == 0) != (m.root_pfn == 0) || m.height > META_HEIGHT_MAX {
            return Err(bad(
                field::META_HEIGHT,
                format!(
                    "{} with root frame {} (must be 0 iff there is no root, at most {META_HEIGHT_MAX})",
                    m.height, m.root_pfn
                ),
            ));
        }
        if m.next_ino < META_NEXT_INO_MIN {
            return Err(bad(
                field::META_NEXT_INO,
                format!("{} (at least {META_NEXT_INO_MIN})", m.next_ino),
            ));
        }
        if m.root_pfn != 0 && m.inodes == 0 {
            return Err(bad(
                field::META_INODES,
                "0 with a metadata root (the root directory is live)",
            ));
        }
        Ok(())
    }

    /// The rules of the fields common to formats 1 and 2: frame size, pool size, `seq >= 1`,
    /// log start and length, data region right after the log and running to the end.
    fn validate_geometry(&self) -> Result<(), SuperblockError> {
        if u64::from(self.frame_size) != FRAME_SIZE {
            return Err(bad(
                field::FRAME_SIZE,
                format!("{} (must be {FRAME_SIZE})", self.frame_size),
            ));
        }
        if !self.pool_bytes.is_multiple_of(FRAME_SIZE) {
            return Err(bad(
                field::POOL_BYTES,
                format!("{} is not a multiple of {FRAME_SIZE}", self.pool_bytes),
            ));
        }
        if self.pool_bytes < POOL_BYTES_MIN {
            return Err(bad(
                field::POOL_BYTES,
                format!("{} is below the minimum {POOL_BYTES_MIN}", self.pool_bytes),
            ));
        }
        if self.seq == 0 {
            return Err(bad(field::SEQ, "0 (sequences start at 1)"));
        }
        if self.log_start_pfn != LOG_START_PFN {
            return Err(bad(
                field::LOG_START_PFN,
                format!("{} (must be {LOG_START_PFN})", self.log_start_pfn),
            ));
        }
        let log_max = LOG_FRAMES_MAX.div_ceil(HUGE_FRAMES) * HUGE_FRAMES;
        if self.log_frames < LOG_FRAMES_MIN
            || self.log_frames > log_max
            || !self.log_frames.is_multiple_of(HUGE_FRAMES)
        {
            return Err(bad(
                field::LOG_FRAMES,
                format!(
                    "{} (must be a multiple of {HUGE_FRAMES} in {LOG_FRAMES_MIN}..={log_max})",
                    self.log_frames
                ),
            ));
        }
        let log_end = self.log_start_pfn + self.log_frames; // both bounded above: no overflow
        if self.data_start_pfn != log_end {
            return Err(bad(
                field::DATA_START_PFN,
                format!("{} (the log ends at {log_end})", self.data_start_pfn),
            ));
        }
        let pool_frames = self.pool_bytes / FRAME_SIZE;
        if self.data_frames == 0
            || self.data_start_pfn.checked_add(self.data_frames) != Some(pool_frames)
        {
            return Err(bad(
                field::DATA_FRAMES,
                format!(
                    "{} (data from {} must run to the end of the pool, frame {pool_frames})",
                    self.data_frames, self.data_start_pfn
                ),
            ));
        }
        Ok(())
    }

    /// The slot this superblock's `seq` belongs in.
    pub fn slot(&self) -> Slot {
        Slot::for_seq(self.seq)
    }

    /// Encodes the superblock in format 2 (little-endian, CRC32C at the end). The `version`
    /// field written is always [`FORMAT_VERSION`].
    pub fn encode(&self) -> [u8; SUPERBLOCK_BYTES] {
        let mut buf = encode_common(self, FORMAT_VERSION);
        let m = &self.meta;
        put(&mut buf, field::META_ROOT_PFN, &m.root_pfn.to_le_bytes());
        put(
            &mut buf,
            field::META_TREE_FRAMES,
            &m.tree_frames.to_le_bytes(),
        );
        put(&mut buf, field::META_HEIGHT, &m.height.to_le_bytes());
        put(
            &mut buf,
            field::META_LOG_GENERATION,
            &m.log_generation.to_le_bytes(),
        );
        put(&mut buf, field::META_LOG_NONCE, &m.log_nonce.to_le_bytes());
        put(&mut buf, field::META_NEXT_INO, &m.next_ino.to_le_bytes());
        put(&mut buf, field::META_INODES, &m.inodes.to_le_bytes());
        seal(&mut buf);
        buf
    }

    /// Decodes and checks one format 2 slot (at least [`SUPERBLOCK_BYTES`] bytes; the rest is
    /// ignored). Checks, in order: length, magic, version (before the checksum, so that a pool
    /// of another format says so: a format 1 slot is `UnsupportedVersion { found: 1 }`, see
    /// [`SuperblockV1::decode`]), checksum, reserved bytes and flags, then
    /// [`Superblock::validate`].
    pub fn decode(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
        let (buf, flags) = open_slot(bytes, FORMAT_VERSION, field::RESERVED)?;
        let mut sb = decode_common(buf, flags);
        sb.meta = MetaRoot {
            root_pfn: get_u64(buf, field::META_ROOT_PFN),
            tree_frames: get_u64(buf, field::META_TREE_FRAMES),
            height: get_u32(buf, field::META_HEIGHT),
            log_generation: get_u64(buf, field::META_LOG_GENERATION),
            log_nonce: get_u64(buf, field::META_LOG_NONCE),
            next_ino: get_u64(buf, field::META_NEXT_INO),
            inodes: get_u64(buf, field::META_INODES),
        };
        sb.validate()?;
        Ok(sb)
    }
}

// ----- format 1 -------------------------------------------------------------------------------

/// Where the newest checkpoint of a format 1 pool lives (zero `len_bytes`: none yet, the log
/// alone describes the filesystem from an empty state). Read only by `pfnfs upgrade`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointRefV1 {
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

/// A decoded format 1 slot: the common fields (as a [`Superblock`] with `version` 1 and
/// [`MetaRoot::EMPTY`]) and the checkpoint reference format 2 replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperblockV1 {
    /// The fields common to both formats (`version` 1, `meta` empty).
    pub common: Superblock,
    /// The checkpoint reference.
    pub checkpoint: CheckpointRefV1,
}

impl SuperblockV1 {
    /// The rules of format 1: those common to both formats, and a checkpoint (when
    /// `len_bytes > 0`) inside the data region.
    pub fn validate(&self) -> Result<(), SuperblockError> {
        let sb = &self.common;
        if sb.version != FORMAT_VERSION_V1 {
            return Err(SuperblockError::UnsupportedVersion { found: sb.version });
        }
        sb.validate_geometry()?;
        let cp = &self.checkpoint;
        let pool_frames = sb.pool_bytes / FRAME_SIZE;
        if cp.len_bytes > 0 {
            let cp_frames = cp.len_bytes.div_ceil(FRAME_SIZE);
            let inside = cp.head_pfn >= sb.data_start_pfn
                && cp
                    .head_pfn
                    .checked_add(cp_frames)
                    .is_some_and(|end| end <= pool_frames);
            if !inside {
                return Err(bad(
                    field_v1::CHECKPOINT_HEAD_PFN,
                    format!(
                        "checkpoint of {} bytes at frame {} lies outside the data region {}..{pool_frames}",
                        cp.len_bytes, cp.head_pfn, sb.data_start_pfn
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Encodes in format 1. pfnfs no longer writes format 1: this is for tests (and tools)
    /// that make a format 1 pool to upgrade.
    pub fn encode(&self) -> [u8; SUPERBLOCK_BYTES] {
        let mut buf = encode_common(&self.common, FORMAT_VERSION_V1);
        let cp = &self.checkpoint;
        put(
            &mut buf,
            field_v1::CHECKPOINT_HEAD_PFN,
            &cp.head_pfn.to_le_bytes(),
        );
        put(
            &mut buf,
            field_v1::CHECKPOINT_LEN_BYTES,
            &cp.len_bytes.to_le_bytes(),
        );
        put(&mut buf, field_v1::CHECKPOINT_CRC, &cp.crc.to_le_bytes());
        put(
            &mut buf,
            field_v1::CHECKPOINT_LOG_GENERATION,
            &cp.log_generation.to_le_bytes(),
        );
        seal(&mut buf);
        buf
    }

    /// Decodes and checks one format 1 slot, with the checks of [`Superblock::decode`] in the
    /// same order (a slot of another version is `UnsupportedVersion`).
    pub fn decode(bytes: &[u8]) -> Result<SuperblockV1, SuperblockError> {
        let (buf, flags) = open_slot(bytes, FORMAT_VERSION_V1, field_v1::RESERVED)?;
        let sb = SuperblockV1 {
            common: decode_common(buf, flags),
            checkpoint: CheckpointRefV1 {
                head_pfn: get_u64(buf, field_v1::CHECKPOINT_HEAD_PFN),
                len_bytes: get_u64(buf, field_v1::CHECKPOINT_LEN_BYTES),
                crc: get_u32(buf, field_v1::CHECKPOINT_CRC),
                log_generation: get_u64(buf, field_v1::CHECKPOINT_LOG_GENERATION),
            },
        };
        sb.validate()?;
        Ok(sb)
    }
}

/// A slot of either format this build decodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnySuperblock {
    /// Format 1 (upgrade only).
    V1(SuperblockV1),
    /// Format 2.
    V2(Superblock),
}

impl AnySuperblock {
    /// Decodes a slot of format 1 or 2 (by its version field); any other version is
    /// `UnsupportedVersion`.
    pub fn decode(bytes: &[u8]) -> Result<AnySuperblock, SuperblockError> {
        if peek_version(bytes) == Some(FORMAT_VERSION_V1) {
            SuperblockV1::decode(bytes).map(AnySuperblock::V1)
        } else {
            Superblock::decode(bytes).map(AnySuperblock::V2)
        }
    }

    /// The fields common to both formats (for format 1: `version` 1, `meta` empty).
    pub fn common(&self) -> &Superblock {
        match self {
            AnySuperblock::V1(v1) => &v1.common,
            AnySuperblock::V2(sb) => sb,
        }
    }

    /// Update sequence.
    pub fn seq(&self) -> u64 {
        self.common().seq
    }

    /// The slot this superblock's `seq` belongs in.
    pub fn slot(&self) -> Slot {
        self.common().slot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        let mut sb = Superblock::for_new_pool(64 << 20, [7; 16], 1_700_000_000).unwrap();
        sb.seq = 42;
        sb.mounted = true;
        sb.meta = MetaRoot {
            root_pfn: sb.data_start_pfn + 3,
            tree_frames: 10,
            height: 2,
            log_generation: 9,
            log_nonce: 0x0123_4567_89ab_cdef,
            next_ino: 100,
            inodes: 57,
        };
        sb
    }

    fn sample_v1() -> SuperblockV1 {
        let mut common = sample();
        common.version = FORMAT_VERSION_V1;
        common.meta = MetaRoot::EMPTY;
        SuperblockV1 {
            checkpoint: CheckpointRefV1 {
                head_pfn: common.data_start_pfn + 3,
                len_bytes: 10_000,
                crc: 0xdead_beef,
                log_generation: 9,
            },
            common,
        }
    }

    fn check_tiling(fields: &[Field]) {
        let mut next = 0;
        for f in fields {
            assert_eq!(
                f.offset, next,
                "{} starts where the previous field ends",
                f.name
            );
            assert!(f.size > 0);
            next = f.offset + f.size;
        }
        assert_eq!(next, SUPERBLOCK_BYTES);
        assert_eq!(fields.last().map(|f| f.offset), Some(SUPERBLOCK_BYTES - 4));
    }

    #[test]
    fn fields_are_contiguous_and_cover_the_slot() {
        check_tiling(&FIELDS);
        check_tiling(&FIELDS_V1);
        // The fields common to both formats keep their offsets.
        for f in FIELDS_V1 {
            if let Some(same) = FIELDS
                .iter()
                .find(|g| g.name == f.name && f.name != "reserved")
            {
                assert_eq!(*same, f);
            }
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let sb = sample();
        let buf = sb.encode();
        assert_eq!(&buf[..8], &MAGIC);
        assert_eq!(Superblock::decode(&buf), Ok(sb.clone()));
        assert_eq!(
            AnySuperblock::decode(&buf),
            Ok(AnySuperblock::V2(sb.clone()))
        );
        // Trailing bytes (the rest of the frame) are ignored.
        let mut frame = vec![0u8; 4096];
        frame[..SUPERBLOCK_BYTES].copy_from_slice(&buf);
        assert_eq!(Superblock::decode(&frame), Ok(sb));
    }

    #[test]
    fn format1_round_trip_and_cross_decoding() {
        let v1 = sample_v1();
        let buf = v1.encode();
        assert_eq!(peek_version(&buf), Some(1));
        assert_eq!(SuperblockV1::decode(&buf), Ok(v1.clone()));
        assert_eq!(
            AnySuperblock::decode(&buf),
            Ok(AnySuperblock::V1(v1.clone()))
        );
        assert_eq!(
            Superblock::decode(&buf),
            Err(SuperblockError::UnsupportedVersion { found: 1 })
        );
        assert_eq!(
            SuperblockV1::decode(&sample().encode()),
            Err(SuperblockError::UnsupportedVersion { found: 2 })
        );
        // A format 1 checkpoint outside the data region is refused as before.
        let mut bad_cp = v1.clone();
        bad_cp.checkpoint.head_pfn = 3;
        assert!(matches!(
            SuperblockV1::decode(&bad_cp.encode()),
            Err(SuperblockError::BadField {
                field: "checkpoint.head_pfn",
                ..
            })
        ));
        // Format 1 reserved bytes start at 120.
        let mut b = buf;
        b[130] = 1;
        seal(&mut b);
        assert!(matches!(
            SuperblockV1::decode(&b),
            Err(SuperblockError::BadField {
                field: "reserved",
                ..
            })
        ));
    }

    #[test]
    fn decode_says_which_check_failed() {
        let buf = sample().encode();
        assert_eq!(
            Superblock::decode(&buf[..100]),
            Err(SuperblockError::TooShort { len_bytes: 100 })
        );

        let mut b = buf;
        b[0] ^= 1;
        assert!(matches!(
            Superblock::decode(&b),
            Err(SuperblockError::BadMagic { .. })
        ));

        let mut b = buf;
        b[field::VERSION.offset] = 3; // checksum now wrong too: version is reported first
        assert_eq!(
            Superblock::decode(&b),
            Err(SuperblockError::UnsupportedVersion { found: 3 })
        );
        assert_eq!(
            AnySuperblock::decode(&b),
            Err(SuperblockError::UnsupportedVersion { found: 3 })
        );

        let mut b = buf;
        b[field::SEQ.offset] ^= 0x10;
        assert!(matches!(
            Superblock::decode(&b),
            Err(SuperblockError::BadChecksum { .. })
        ));

        let mut b = buf;
        b[200] = 1;
        seal(&mut b);
        assert!(matches!(
            Superblock::decode(&b),
            Err(SuperblockError::BadField {
                field: "reserved",
                ..
            })
        ));

        let mut b = buf;
        put(&mut b, field::FLAGS, &(FLAG_MOUNTED | 1 << 3).to_le_bytes());
        seal(&mut b);
        assert!(matches!(
            Superblock::decode(&b),
            Err(SuperblockError::BadField { field: "flags", .. })
        ));
    }

    #[test]
    fn validate_rejects_inconsistent_layouts() {
        let ok = sample();
        type Mutate = Box<dyn Fn(&mut Superblock)>;
        let cases: Vec<(&str, Mutate)> = vec![
            ("frame_size", Box::new(|s| s.frame_size = 8192)),
            ("pool_bytes", Box::new(|s| s.pool_bytes += 1)),
            ("pool_bytes", Box::new(|s| s.pool_bytes = 4096 * 100)),
            ("seq", Box::new(|s| s.seq = 0)),
            ("log_start_pfn", Box::new(|s| s.log_start_pfn = 511)),
            ("log_frames", Box::new(|s| s.log_frames = 1000)),
            ("log_frames", Box::new(|s| s.log_frames = u64::MAX - 511)),
            ("data_start_pfn", Box::new(|s| s.data_start_pfn += 512)),
            ("data_frames", Box::new(|s| s.data_frames += 1)),
            ("data_frames", Box::new(|s| s.data_frames = u64::MAX)),
            ("meta.root_pfn", Box::new(|s| s.meta.root_pfn = 3)),
            (
                "meta.root_pfn",
                Box::new(|s| s.meta.root_pfn = s.data_start_pfn - 1),
            ),
            (
                "meta.root_pfn",
                Box::new(|s| s.meta.root_pfn = s.pool_bytes / FRAME_SIZE),
            ),
            ("meta.root_pfn", Box::new(|s| s.meta.root_pfn = u64::MAX)),
            (
                "meta.tree_frames",
                Box::new(|s| s.meta.tree_frames = s.data_frames + 1),
            ),
            ("meta.height", Box::new(|s| s.meta.height = 0)),
            (
                "meta.height",
                Box::new(|s| s.meta.height = META_HEIGHT_MAX + 1),
            ),
            (
                "meta.height",
                Box::new(|s| {
                    s.meta.root_pfn = 0;
                    s.meta.height = 1;
                }),
            ),
            ("meta.next_ino", Box::new(|s| s.meta.next_ino = 1)),
            ("meta.next_ino", Box::new(|s| s.meta.next_ino = 0)),
            ("meta.inodes", Box::new(|s| s.meta.inodes = 0)),
        ];
        for (name, mutate) in cases {
            let mut sb = ok.clone();
            mutate(&mut sb);
            match sb.validate() {
                Err(SuperblockError::BadField { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: expected BadField, got {other:?}"),
            }
            // A checksum-valid encoding of it fails to decode the same way.
            assert!(matches!(
                Superblock::decode(&sb.encode()),
                Err(SuperblockError::BadField { .. })
            ));
        }
        // The edges that are allowed.
        let allowed: [fn(&mut Superblock); 5] = [
            |s| s.meta = MetaRoot::EMPTY,
            |s| s.meta.root_pfn = s.data_start_pfn,
            |s| s.meta.root_pfn = s.pool_bytes / FRAME_SIZE - 1,
            |s| s.meta.tree_frames = s.data_frames,
            |s| s.meta.height = META_HEIGHT_MAX,
        ];
        for change in allowed {
            let mut sb = ok.clone();
            change(&mut sb);
            assert_eq!(sb.validate(), Ok(()), "{:?}", sb.meta);
            assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
        }
    }

    #[test]
    fn slots_alternate_by_seq_parity() {
        assert_eq!(Slot::for_seq(1), Slot::B);
        assert_eq!(Slot::for_seq(2), Slot::A);
        assert_eq!(Slot::for_seq(2).other(), Slot::B);
        assert_eq!(Slot::A.offset(), 0);
        assert_eq!(Slot::B.offset(), 4096);
        assert_eq!((Slot::A.letter(), Slot::B.to_string()), ('A', "B".into()));
    }

    #[test]
    fn new_pool_layouts_are_valid_across_sizes() {
        for pool_bytes in [POOL_BYTES_MIN, 64 << 20, 1 << 30, 400 << 30, 1 << 50] {
            let sb = Superblock::for_new_pool(pool_bytes, [0; 16], 0).unwrap();
            assert_eq!(sb.data_start_pfn + sb.data_frames, pool_bytes / FRAME_SIZE);
            assert!(sb.data_start_pfn.is_multiple_of(HUGE_FRAMES));
            assert_eq!(sb.meta, MetaRoot::EMPTY);
        }
        assert!(Superblock::for_new_pool(POOL_BYTES_MIN - 4096, [0; 16], 0).is_err());
        assert_ne!(new_log_nonce(), 0);
    }
}
