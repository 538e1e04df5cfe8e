//! The superblock: what a pool is and where its parts are, kept in two slots.
//!
//! Updates alternate between slot A and slot B with a rising `seq`; open takes the intact slot
//! with the highest `seq`. A torn or interrupted update therefore damages at most the slot
//! being written, and the other still describes a consistent pool.
//!
//! Byte layout (little-endian; see docs/DESIGN.md for the diagram) is encoded and decoded here
//! and nowhere else: [`FIELDS`] lists every field with its offset and size, a test checks the
//! table is contiguous and covers the 256 bytes, and another (alloc/tests/pool.rs) checks that
//! docs/DESIGN.md shows the same offsets.
//!
//! Invariants:
//! - Slot A (PFN 0) only ever holds even `seq`s, slot B (PFN 1) odd ones: mkfs writes seq 1 to
//!   B, then seq 2 to A; every commit writes `seq + 1`, which lands in the other slot.
//! - An encoded superblock is `validate`d before it is written, and decoded superblocks pass
//!   the same checks (pair assertion): a slot that decodes is self-consistent.
//! - Bytes 120..252 are zero; the CRC32C of bytes 0..252 sits at 252..256.

/// The eight magic bytes at offset 0 of each slot.
pub const MAGIC: [u8; 8] = *b"PFNFSPOL";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

use crate::layout::{
    LOG_FRAMES_MAX, LOG_FRAMES_MIN, LOG_START_PFN, POOL_BYTES_MIN, SUPERBLOCK_A_OFFSET,
    SUPERBLOCK_B_OFFSET, SUPERBLOCK_BYTES, log_frames_for,
};
use crate::pfn::{FRAME_SIZE, HUGE_FRAMES};

/// One field of the encoded superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name as docs/DESIGN.md writes it (`checkpoint.head_pfn` for nested ones).
    pub name: &'static str,
    /// Byte offset within the slot.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// The fields of the encoded superblock, one constant each.
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
    /// Flags, u32 (bit 0: mounted).
    pub const FLAGS: Field = Field {
        name: "flags",
        offset: 100,
        size: 4,
    };
    /// Log generation after the checkpoint, u64.
    pub const CHECKPOINT_LOG_GENERATION: Field = Field {
        name: "checkpoint.log_generation",
        offset: 104,
        size: 8,
    };
    /// mkfs time, u64 seconds since the epoch.
    pub const CREATED_SECS: Field = Field {
        name: "created_secs",
        offset: 112,
        size: 8,
    };
    /// Zero.
    pub const RESERVED: Field = Field {
        name: "reserved",
        offset: 120,
        size: 132,
    };
    /// CRC32C of bytes 0..252, u32.
    pub const CRC32C: Field = Field {
        name: "crc32c",
        offset: 252,
        size: 4,
    };
}

/// Every field in byte order: contiguous, covering exactly [`SUPERBLOCK_BYTES`].
pub const FIELDS: [Field; 18] = [
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
    field::CHECKPOINT_HEAD_PFN,
    field::CHECKPOINT_LEN_BYTES,
    field::CHECKPOINT_CRC,
    field::FLAGS,
    field::CHECKPOINT_LOG_GENERATION,
    field::CREATED_SECS,
    field::RESERVED,
    field::CRC32C,
];

/// `flags` bit 0: the pool is mounted read-write (cleared by a clean unmount).
pub const FLAG_MOUNTED: u32 = 1;
/// Every flag bit this version knows; others must be zero.
pub const FLAGS_KNOWN: u32 = FLAG_MOUNTED;

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
    /// The magic is there but the version is not [`FORMAT_VERSION`].
    #[error("format version {found} (this pfnfs reads version {FORMAT_VERSION})")]
    UnsupportedVersion { found: u32 },
    /// The CRC32C of bytes 0..252 does not match the stored one.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
    /// The checksum is right but a field is out of range or inconsistent with another.
    #[error("field {field}: {why}")]
    BadField { field: &'static str, why: String },
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
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

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

impl Superblock {
    /// The superblock mkfs writes for a pool of `pool_bytes` (layout per [`crate::layout`]),
    /// with `seq` 1, no checkpoint, not mounted. Fails if the size cannot hold a pool.
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
            checkpoint: CheckpointRef::default(),
            mounted: false,
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
        let cp = &self.checkpoint;
        if cp.len_bytes > 0 {
            let cp_frames = cp.len_bytes.div_ceil(FRAME_SIZE);
            let inside = cp.head_pfn >= self.data_start_pfn
                && cp
                    .head_pfn
                    .checked_add(cp_frames)
                    .is_some_and(|end| end <= pool_frames);
            if !inside {
                return Err(bad(
                    field::CHECKPOINT_HEAD_PFN,
                    format!(
                        "checkpoint of {} bytes at frame {} lies outside the data region {}..{pool_frames}",
                        cp.len_bytes, cp.head_pfn, self.data_start_pfn
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The slot this superblock's `seq` belongs in.
    pub fn slot(&self) -> Slot {
        Slot::for_seq(self.seq)
    }

    /// Encodes the superblock (little-endian, CRC32C at the end).
    pub fn encode(&self) -> [u8; SUPERBLOCK_BYTES] {
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        let cp = &self.checkpoint;
        put(&mut buf, field::MAGIC, &MAGIC);
        put(&mut buf, field::VERSION, &self.version.to_le_bytes());
        put(&mut buf, field::FRAME_SIZE, &self.frame_size.to_le_bytes());
        put(&mut buf, field::UUID, &self.uuid);
        put(&mut buf, field::POOL_BYTES, &self.pool_bytes.to_le_bytes());
        put(&mut buf, field::SEQ, &self.seq.to_le_bytes());
        put(
            &mut buf,
            field::LOG_START_PFN,
            &self.log_start_pfn.to_le_bytes(),
        );
        put(&mut buf, field::LOG_FRAMES, &self.log_frames.to_le_bytes());
        put(
            &mut buf,
            field::DATA_START_PFN,
            &self.data_start_pfn.to_le_bytes(),
        );
        put(
            &mut buf,
            field::DATA_FRAMES,
            &self.data_frames.to_le_bytes(),
        );
        put(
            &mut buf,
            field::CHECKPOINT_HEAD_PFN,
            &cp.head_pfn.to_le_bytes(),
        );
        put(
            &mut buf,
            field::CHECKPOINT_LEN_BYTES,
            &cp.len_bytes.to_le_bytes(),
        );
        put(&mut buf, field::CHECKPOINT_CRC, &cp.crc.to_le_bytes());
        let flags = if self.mounted { FLAG_MOUNTED } else { 0 };
        put(&mut buf, field::FLAGS, &flags.to_le_bytes());
        put(
            &mut buf,
            field::CHECKPOINT_LOG_GENERATION,
            &cp.log_generation.to_le_bytes(),
        );
        put(
            &mut buf,
            field::CREATED_SECS,
            &self.created_secs.to_le_bytes(),
        );
        let crc = checksum(&buf);
        put(&mut buf, field::CRC32C, &crc.to_le_bytes());
        buf
    }

    /// Decodes and checks one slot (at least [`SUPERBLOCK_BYTES`] bytes; the rest is ignored).
    /// Checks, in order: length, magic, version (before the checksum, so that a pool of a newer
    /// format says so), checksum, reserved bytes and flags, then [`Superblock::validate`].
    pub fn decode(bytes: &[u8]) -> Result<Superblock, SuperblockError> {
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
        if version != FORMAT_VERSION {
            return Err(SuperblockError::UnsupportedVersion { found: version });
        }
        let stored = get_u32(buf, field::CRC32C);
        let computed = checksum(buf);
        if stored != computed {
            return Err(SuperblockError::BadChecksum { stored, computed });
        }
        let reserved = &buf[field::RESERVED.offset..field::RESERVED.offset + field::RESERVED.size];
        if let Some(pos) = reserved.iter().position(|&b| b != 0) {
            return Err(bad(
                field::RESERVED,
                format!("byte {} is not zero", field::RESERVED.offset + pos),
            ));
        }
        let flags = get_u32(buf, field::FLAGS);
        if flags & !FLAGS_KNOWN != 0 {
            return Err(bad(
                field::FLAGS,
                format!("unknown flag bits {:#x}", flags & !FLAGS_KNOWN),
            ));
        }
        let sb = Superblock {
            version,
            uuid: get_bytes(buf, field::UUID),
            frame_size: get_u32(buf, field::FRAME_SIZE),
            pool_bytes: get_u64(buf, field::POOL_BYTES),
            seq: get_u64(buf, field::SEQ),
            log_start_pfn: get_u64(buf, field::LOG_START_PFN),
            log_frames: get_u64(buf, field::LOG_FRAMES),
            data_start_pfn: get_u64(buf, field::DATA_START_PFN),
            data_frames: get_u64(buf, field::DATA_FRAMES),
            checkpoint: CheckpointRef {
                head_pfn: get_u64(buf, field::CHECKPOINT_HEAD_PFN),
                len_bytes: get_u64(buf, field::CHECKPOINT_LEN_BYTES),
                crc: get_u32(buf, field::CHECKPOINT_CRC),
                log_generation: get_u64(buf, field::CHECKPOINT_LOG_GENERATION),
            },
            mounted: flags & FLAG_MOUNTED != 0,
            created_secs: get_u64(buf, field::CREATED_SECS),
        };
        sb.validate()?;
        Ok(sb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        let mut sb = Superblock::for_new_pool(64 << 20, [7; 16], 1_700_000_000).unwrap();
        sb.seq = 42;
        sb.mounted = true;
        sb.checkpoint = CheckpointRef {
            head_pfn: sb.data_start_pfn + 3,
            len_bytes: 10_000,
            crc: 0xdead_beef,
            log_generation: 9,
        };
        sb
    }

    #[test]
    fn fields_are_contiguous_and_cover_the_slot() {
        let mut next = 0;
        for f in FIELDS {
            assert_eq!(
                f.offset, next,
                "{} starts where the previous field ends",
                f.name
            );
            assert!(f.size > 0);
            next = f.offset + f.size;
        }
        assert_eq!(next, SUPERBLOCK_BYTES);
        assert_eq!(field::CRC32C.offset, SUPERBLOCK_BYTES - 4);
    }

    #[test]
    fn encode_decode_round_trip() {
        let sb = sample();
        let buf = sb.encode();
        assert_eq!(&buf[..8], &MAGIC);
        assert_eq!(Superblock::decode(&buf), Ok(sb.clone()));
        // Trailing bytes (the rest of the frame) are ignored.
        let mut frame = vec![0u8; 4096];
        frame[..SUPERBLOCK_BYTES].copy_from_slice(&buf);
        assert_eq!(Superblock::decode(&frame), Ok(sb));
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
        b[field::VERSION.offset] = 2; // checksum now wrong too: version is reported first
        assert_eq!(
            Superblock::decode(&b),
            Err(SuperblockError::UnsupportedVersion { found: 2 })
        );

        let mut b = buf;
        b[field::SEQ.offset] ^= 0x10;
        assert!(matches!(
            Superblock::decode(&b),
            Err(SuperblockError::BadChecksum { .. })
        ));

        let reseal = |b: &mut [u8; SUPERBLOCK_BYTES]| {
            let crc = checksum(b);
            put(b, field::CRC32C, &crc.to_le_bytes());
        };
        let mut b = buf;
        b[200] = 1;
        reseal(&mut b);
        assert!(matches!(
            Superblock::decode(&b),
            Err(SuperblockError::BadField {
                field: "reserved",
                ..
            })
        ));

        let mut b = buf;
        put(&mut b, field::FLAGS, &3u32.to_le_bytes());
        reseal(&mut b);
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
            (
                "checkpoint.head_pfn",
                Box::new(|s| s.checkpoint.head_pfn = 3),
            ),
            (
                "checkpoint.head_pfn",
                Box::new(|s| s.checkpoint.head_pfn = u64::MAX),
            ),
            (
                "checkpoint.head_pfn",
                Box::new(|s| s.checkpoint.len_bytes = s.pool_bytes),
            ),
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
        let mut empty_cp = ok.clone();
        empty_cp.checkpoint = CheckpointRef {
            head_pfn: 0,
            len_bytes: 0,
            crc: 0,
            log_generation: 3,
        };
        assert_eq!(empty_cp.validate(), Ok(()));
    }

    #[test]
    fn slots_alternate_by_seq_parity() {
        assert_eq!(Slot::for_seq(1), Slot::B);
        assert_eq!(Slot::for_seq(2), Slot::A);
        assert_eq!(Slot::for_seq(2).other(), Slot::B);
        assert_eq!(Slot::A.offset(), 0);
        assert_eq!(Slot::B.offset(), 4096);
    }

    #[test]
    fn new_pool_layouts_are_valid_across_sizes() {
        for pool_bytes in [POOL_BYTES_MIN, 64 << 20, 1 << 30, 400 << 30, 1 << 50] {
            let sb = Superblock::for_new_pool(pool_bytes, [0; 16], 0).unwrap();
            assert_eq!(sb.data_start_pfn + sb.data_frames, pool_bytes / FRAME_SIZE);
            assert!(sb.data_start_pfn.is_multiple_of(HUGE_FRAMES));
        }
        assert!(Superblock::for_new_pool(POOL_BYTES_MIN - 4096, [0; 16], 0).is_err());
    }
}
