//! The metadata log (a logical redo log) in front of the metadata tree.
//!
//! Every metadata change is one [`Op`] record appended to the log region and persisted
//! (flush + fence) before the change is applied in RAM and before the kernel hears of it.
//! Mount opens the tree the superblock names and replays, in order, the records of its log
//! generation whose header, sequence number, nonce and checksum are intact; the first record
//! that is not ends the log. A record is therefore atomic: present whole or absent.
//!
//! Record layout (format 2; little-endian; offsets from the record start, records 8-byte
//! aligned; docs/DESIGN.md 3.3, pinned by `fs/tests/log_format.rs`):
//!
//! ```text
//! 0   u32  magic  "PLG2" (format 1: "PLOG")
//! 4   u32  payload length in bytes
//! 8   u64  log generation (== superblock.meta.log_generation)
//! 16  u64  sequence number, 0, 1, 2, ... within the generation
//! 24  u32  CRC32C of the nonce (8 bytes), bytes 0..24 and the payload
//! 28  u32  low 32 bits of the generation's nonce (format 1: zero)
//! 32  ...  payload: postcard encoding of `Op`
//! ```
//!
//! A commit (`volume::commit`) is written when the log passes half full, when enough inodes
//! changed, and at unmount: what changed goes into a copy-on-write transaction of the tree,
//! is persisted, and only then does a superblock update (the commit point) name the new root
//! and start a new log generation.
//!
//! A failed persist: if a record's persist fails, the record may or may not have reached the
//! pool (a replay after a crash may find it whole). The append fails ([`AppendError`], *in
//! doubt*), the op is neither applied nor acknowledged, and from then on the journal refuses
//! every append, with the same error, until a checkpoint (which supersedes the whole log by
//! starting a new generation) resets it, or the pool is mounted again. Appending behind the
//! record would let replay apply later ops on top of one RAM never had; writing over it
//! would leave its remains behind the next record. docs/DESIGN.md, section 6.

use std::cell::RefCell;

use parking_lot::Mutex;
use pfnfs_alloc::{FRAME_SIZE, Pfn, PfnRange, Pool};
use pfnfs_extent::Extent;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, FsError, FsResult, corrupt, no_space, record_too_large};
use crate::inode::{Attr, DirEntry, Time};

/// Magic of a log record (format 2).
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PLG2");
/// Magic of a format 1 log record (read only by `pfnfs upgrade`).
pub const RECORD_MAGIC_V1: u32 = u32::from_le_bytes(*b"PLOG");

/// Which records belong to the log being read or written: the generation the superblock
/// names and its nonce, a random number drawn for each generation. A record carries the low
/// half of the nonce in its header and the whole nonce under its checksum, so bytes left in
/// the log by an earlier generation (even one that reused the generation number, as `fsck -y`
/// may after a stale superblock) never pass for a record of this one. `nonce: None` reads
/// format 1 logs (magic `PLOG`, no nonce), for the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogId {
    /// The generation.
    pub generation: u64,
    /// Its nonce; `None` for a format 1 log.
    pub nonce: Option<u64>,
}

impl LogId {
    /// A format 2 log.
    pub fn new(generation: u64, nonce: u64) -> LogId {
        LogId {
            generation,
            nonce: Some(nonce),
        }
    }

    fn magic(&self) -> u32 {
        if self.nonce.is_some() {
            RECORD_MAGIC
        } else {
            RECORD_MAGIC_V1
        }
    }

    /// The word at bytes 28..32 of a record header.
    fn tag(&self) -> u32 {
        self.nonce.map_or(0, |n| n as u32)
    }

    fn crc(&self, header: &[u8], payload: &[u8]) -> u32 {
        let seed = match self.nonce {
            Some(n) => crc32c::crc32c(&n.to_le_bytes()),
            None => 0,
        };
        crc32c::crc32c_append(crc32c::crc32c_append(seed, &header[..24]), payload)
    }
}

/// A fresh random nonce for a new log generation.
pub fn new_nonce() -> u64 {
    rand::random()
}
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: u64 = 32;
/// Largest payload accepted (a record never exceeds this).
pub const RECORD_PAYLOAD_MAX: u64 = 1 << 20;

/// What a newly created inode is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewBody {
    File,
    Dir,
    Symlink(Vec<u8>),
    Special,
}

/// The mtime and ctime a data operation leaves on a file (both "now", or, when the kernel's
/// writeback cache owns file times, the times the file already had).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataTimes {
    pub mtime: Time,
    pub ctime: Time,
}

/// One logged metadata operation. Applying it to the state before it gives the state after
/// it; the same apply code runs at run time and at replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A new inode named `name` in `parent`.
    Create {
        parent: u64,
        name: Vec<u8>,
        ino: u64,
        attr: Attr,
        body: NewBody,
    },
    /// A new name for an existing inode.
    Link {
        parent: u64,
        name: Vec<u8>,
        ino: u64,
        time: Time,
    },
    /// Removes a name (unlink or rmdir); an inode left without names and references is
    /// reclaimed.
    Unlink {
        parent: u64,
        name: Vec<u8>,
        time: Time,
    },
    /// rename / RENAME_EXCHANGE. A replaced target loses that name.
    Rename {
        parent: u64,
        name: Vec<u8>,
        new_parent: u64,
        new_name: Vec<u8>,
        exchange: bool,
        time: Time,
    },
    /// Mode, owner and times (never nlink or size).
    SetAttr {
        ino: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        atime: Time,
        mtime: Time,
        ctime: Time,
    },
    /// New size; frames past it are released, the tail of the last frame zeroed.
    Truncate {
        ino: u64,
        size: u64,
        time: Time,
        /// The mode after the truncate: the mode the file already has, since privileges go
        /// in a record of their own before the change (DESIGN section 9); logs written
        /// before that may drop setuid/setgid here, and replay applies it either way.
        mode: u32,
        /// The last frame, copied with its tail past `size` zeroed (copy-on-write, so the
        /// op never rewrites a frame in place): replaces the mapping of that frame.
        cow: Vec<Extent>,
    },
    /// A data write that changed the mapping or the size (pure overwrites are not logged).
    Write {
        ino: u64,
        allocated: Vec<Extent>,
        converted: Vec<Extent>,
        size: u64,
        times: DataTimes,
        mode: u32,
    },
    /// fallocate: unwritten extents added, size possibly extended.
    Allocate {
        ino: u64,
        extents: Vec<Extent>,
        size: u64,
        times: DataTimes,
        /// The mode after the operation: the mode the file already has, since privileges
        /// go in a record of their own before the change (DESIGN section 9); logs written
        /// before that may drop setuid/setgid here, and replay applies it either way.
        mode: u32,
    },
    /// PUNCH_HOLE: whole frames in the byte range released, the partial frames at its edges
    /// replaced by copies with the punched bytes zeroed (ZERO_RANGE is its own record).
    Punch {
        ino: u64,
        offset: u64,
        len: u64,
        times: DataTimes,
        /// The mode after the operation: the mode the file already has, since privileges
        /// go in a record of their own before the change (DESIGN section 9); logs written
        /// before that may drop setuid/setgid here, and replay applies it either way.
        mode: u32,
        /// The partial frames at the edges, copied with the punched bytes zeroed: they
        /// replace the mappings of those frames.
        cow: Vec<Extent>,
    },
    /// FALLOC_FL_ZERO_RANGE as one step: partial edge frames copied with the range
    /// zeroed (`cow`), whole frames in the range turned unwritten, holes in the range filled
    /// with the new unwritten `extents`, and the size set.
    ZeroRange {
        ino: u64,
        offset: u64,
        len: u64,
        size: u64,
        times: DataTimes,
        /// The mode after the operation: the mode the file already has, since privileges
        /// go in a record of their own before the change (DESIGN section 9); logs written
        /// before that may drop setuid/setgid here, and replay applies it either way.
        mode: u32,
        cow: Vec<Extent>,
        extents: Vec<Extent>,
    },
    /// An extended attribute set.
    SetXattr {
        ino: u64,
        name: Vec<u8>,
        value: Vec<u8>,
        time: Time,
    },
    /// An extended attribute removed.
    RemoveXattr { ino: u64, name: Vec<u8>, time: Time },
    /// An inode with no names lost its last reference: release it.
    Reclaim { ino: u64 },
    /// `Create` of an inode that starts with extended attributes (the ACLs inherited from
    /// the parent's default ACL), so the inode never exists without them.
    CreateWithXattrs {
        parent: u64,
        name: Vec<u8>,
        ino: u64,
        attr: Attr,
        body: NewBody,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// `SetAttr` and extended-attribute changes as one step: setting a POSIX access ACL
    /// (which sets the mode's permission bits) and chmod of an inode with an access ACL
    /// (which rewrites the ACL). `(name, None)` removes the attribute.
    SetAttrXattrs {
        ino: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        atime: Time,
        mtime: Time,
        ctime: Time,
        xattrs: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// A write to a file whose bytes live in its inode record (inline data,
    /// [`crate::schema::INLINE_DATA_MAX`]): `data` lands at `offset`, the file becomes `size`
    /// bytes long (zeros where nothing was written). The record carries the bytes, so no
    /// frame is touched. A file without extents becomes inline by it.
    WriteInline {
        ino: u64,
        offset: u64,
        data: Vec<u8>,
        size: u64,
        times: DataTimes,
        /// The mode after the write: the mode the file already has (section 9).
        mode: u32,
    },
    /// An inline file's bytes moved into the frames of `extent` (written and persisted
    /// before this record): the file maps them from its first frame and is inline no more.
    /// Its size and times do not change.
    Spill { ino: u64, extent: Extent },
}

impl Op {
    /// Every time the op sets.
    fn times(&self) -> Vec<Time> {
        match self {
            Op::Create { attr, .. } | Op::CreateWithXattrs { attr, .. } => {
                vec![attr.atime, attr.mtime, attr.ctime, attr.crtime]
            }
            Op::Link { time, .. }
            | Op::Unlink { time, .. }
            | Op::Rename { time, .. }
            | Op::Truncate { time, .. }
            | Op::SetXattr { time, .. }
            | Op::RemoveXattr { time, .. } => vec![*time],
            Op::SetAttr {
                atime,
                mtime,
                ctime,
                ..
            }
            | Op::SetAttrXattrs {
                atime,
                mtime,
                ctime,
                ..
            } => vec![*atime, *mtime, *ctime],
            Op::Write { times, .. }
            | Op::Allocate { times, .. }
            | Op::Punch { times, .. }
            | Op::ZeroRange { times, .. }
            | Op::WriteInline { times, .. } => vec![times.mtime, times.ctime],
            Op::Reclaim { .. } | Op::Spill { .. } => Vec::new(),
        }
    }

    /// Why the op cannot be applied whatever the state, if it cannot: a record that decodes
    /// but says something no operation writes (forged or a bug), which replay must not turn
    /// into metadata the tree would refuse.
    pub fn invalid(&self) -> Option<String> {
        if let Some(t) = self.times().iter().find(|t| t.nsecs >= 1_000_000_000) {
            return Some(format!("a time with {} nanoseconds", t.nsecs));
        }
        match self {
            Op::WriteInline {
                offset, data, size, ..
            } => {
                let end = offset.checked_add(data.len() as u64);
                let max = crate::schema::INLINE_DATA_MAX as u64;
                (data.is_empty() || end.is_none_or(|e| e > *size) || *size > max).then(|| {
                    format!(
                        "an inline write of {} bytes at {offset} to size {size} (at most {max})",
                        data.len()
                    )
                })
            }
            Op::Spill { extent, .. } => {
                (extent.file_frame != 0 || extent.unwritten || extent.pfns.len != 1)
                    .then(|| format!("a spill to {extent:?}"))
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Tail {
    /// Byte offset of the next record within the log region.
    offset: u64,
    /// Sequence number of the next record.
    seq: u64,
    /// Current generation.
    generation: u64,
    /// Its nonce.
    nonce: u64,
    /// Set when a persist failed and what it stored is in doubt: every append is refused
    /// (with this kind and reason) until [`Journal::reset`].
    refusing: Option<(ErrorKind, String)>,
}

/// Why [`Journal::append`] failed, and whether the record may have reached the pool.
#[derive(Debug)]
pub struct AppendError {
    /// What went wrong (a failed persist keeps the OS's errno: [`ErrorKind::Os`]).
    pub error: FsError,
    /// The record was stored and its persist failed: it may or may not be durable, and a
    /// replay may apply it. What it references (new frames) must not be reused until a
    /// checkpoint supersedes it. `false`: nothing was stored.
    pub in_doubt: bool,
}

impl From<AppendError> for FsError {
    fn from(e: AppendError) -> FsError {
        e.error
    }
}

impl AppendError {
    fn refused(error: FsError) -> AppendError {
        AppendError {
            error,
            in_doubt: false,
        }
    }
}

/// The log region of a pool: appends records and reads them back.
///
/// Locking: `tail` is held while a record is written and persisted, so records reach the
/// pool in sequence order. Callers hold the locks of every inode the op touches while they
/// append, so the log order of ops on one inode is the order they were applied.
///
/// After a failed persist it refuses appends until [`reset`](Journal::reset) (module docs).
#[derive(Debug)]
pub struct Journal {
    region_offset: u64,
    region_bytes: u64,
    tail: Mutex<Tail>,
    /// Storage behind the log region (and the superblocks) has been made to exist: done
    /// before the first append, so that a pool mount refuses is never written, not even by
    /// an fallocate (DESIGN 4, "Room behind the pool").
    backed: std::sync::atomic::AtomicBool,
}

thread_local! {
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The error a refused append reports: the kind of the failure that made the log refuse.
fn refusal(kind: ErrorKind, why: &str) -> FsError {
    FsError::new(
        kind,
        format!("the metadata log takes no record until a checkpoint is written: {why}"),
    )
}

impl Journal {
    /// A journal over the pool's log region, appending after `records_end` with sequence
    /// `next_seq` in `generation` (the values replay found).
    pub fn new(pool: &Pool, log: LogId, records_end: u64, next_seq: u64) -> Journal {
        let (region_offset, region_bytes) = pool.log_region();
        Journal {
            region_offset,
            region_bytes,
            tail: Mutex::new(Tail {
                offset: records_end,
                seq: next_seq,
                generation: log.generation,
                nonce: log.nonce.unwrap_or_else(new_nonce),
                refusing: None,
            }),
            backed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Appends `op` and persists it. Returns once the record is durable; on error the op must
    /// not be applied (see [`AppendError::in_doubt`] for what its new frames need).
    pub fn append(&self, pool: &Pool, op: &Op) -> Result<(), AppendError> {
        ENCODE_BUF.with(|cell| {
            let mut buf = cell.take();
            let result = self.append_with(pool, op, &mut buf);
            cell.replace(buf);
            result
        })
    }

    fn append_with(&self, pool: &Pool, op: &Op, buf: &mut Vec<u8>) -> Result<(), AppendError> {
        buf.clear();
        buf.resize(RECORD_HEADER_BYTES as usize, 0);
        *buf = postcard::to_extend(op, std::mem::take(buf))
            .map_err(|e| AppendError::refused(corrupt(format!("cannot encode log record: {e}"))))?;
        let payload_len = buf.len() as u64 - RECORD_HEADER_BYTES;
        if payload_len > RECORD_PAYLOAD_MAX {
            return Err(AppendError::refused(record_too_large(
                "metadata record too large",
            )));
        }
        let total = (RECORD_HEADER_BYTES + payload_len).next_multiple_of(8);
        let mut tail = self.tail.lock();
        if let Some((kind, why)) = &tail.refusing {
            return Err(AppendError::refused(refusal(*kind, why)));
        }
        if !self.backed.load(std::sync::atomic::Ordering::Acquire) {
            pool.ensure_metadata_backed()
                .map_err(|e| AppendError::refused(e.into()))?;
            self.backed
                .store(true, std::sync::atomic::Ordering::Release);
        }
        if tail.offset + total > self.region_bytes {
            return Err(AppendError::refused(no_space(
                "metadata log is full; a checkpoint is needed",
            )));
        }
        let log = LogId::new(tail.generation, tail.nonce);
        buf[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
        buf[8..16].copy_from_slice(&tail.generation.to_le_bytes());
        buf[16..24].copy_from_slice(&tail.seq.to_le_bytes());
        buf[28..32].copy_from_slice(&log.tag().to_le_bytes());
        let crc = {
            let (header, payload) = buf.split_at(RECORD_HEADER_BYTES as usize);
            log.crc(header, payload)
        };
        buf[24..28].copy_from_slice(&crc.to_le_bytes());
        let at = self.region_offset + tail.offset;
        // `write` checks the range and stores nothing if that fails; a memory error stops
        // it partway, leaving a prefix of the record, which replay takes for a torn record
        // (its CRC does not match) and the tail does not move past.
        pool.write(at, buf)
            .map_err(|e| AppendError::refused(e.into()))?;
        if let Err(e) = pool.persist(at, buf.len() as u64) {
            let error = FsError::from(e);
            tracing::error!(
                seq = tail.seq,
                generation = tail.generation,
                "a log record's persist failed; the log takes no record until a checkpoint: {error}"
            );
            tail.refusing = Some((error.kind, error.context.clone()));
            return Err(AppendError {
                error,
                in_doubt: true,
            });
        }
        tail.offset += total;
        tail.seq += 1;
        Ok(())
    }

    /// Refuses every append with `error`'s kind until [`reset`](Self::reset): after a failed
    /// superblock commit the current log generation may no longer be the pool's.
    pub fn refuse(&self, error: &FsError) {
        self.tail.lock().refusing = Some((error.kind, error.context.clone()));
    }

    /// True while appends are refused (a persist failed; a checkpoint has not succeeded since).
    pub fn is_refusing(&self) -> bool {
        self.tail.lock().refusing.is_some()
    }

    /// The error appends are refused with, while they are.
    pub fn refusal(&self) -> Option<FsError> {
        let tail = self.tail.lock();
        tail.refusing
            .as_ref()
            .map(|(kind, why)| refusal(*kind, why))
    }

    /// Bytes of the log in use.
    pub fn used_bytes(&self) -> u64 {
        self.tail.lock().offset
    }

    /// Size of the log region.
    pub fn capacity_bytes(&self) -> u64 {
        self.region_bytes
    }

    /// True once the log is more than half full, or while it refuses appends: time for a
    /// checkpoint.
    pub fn wants_checkpoint(&self) -> bool {
        let tail = self.tail.lock();
        tail.refusing.is_some() || tail.offset * 2 > self.region_bytes
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.tail.lock().generation
    }

    /// The current generation and its nonce.
    pub fn log_id(&self) -> LogId {
        let tail = self.tail.lock();
        LogId::new(tail.generation, tail.nonce)
    }

    /// Makes the current generation at least `generation`, so that the next checkpoint takes
    /// a higher one (fsck, before it writes a checkpoint over a log holding records of
    /// generations the superblock does not know).
    pub fn raise_generation(&self, generation: u64) {
        let mut tail = self.tail.lock();
        tail.generation = tail.generation.max(generation);
    }

    /// Starts an empty log in `generation` (after a checkpoint naming it is durable), taking
    /// appends again.
    pub fn reset(&self, log: LogId) {
        let mut tail = self.tail.lock();
        tail.offset = 0;
        tail.seq = 0;
        tail.generation = log.generation;
        tail.nonce = log.nonce.unwrap_or_else(new_nonce);
        tail.refusing = None;
    }
}

/// The records of `generation`, in order, up to the first one that is not intact, and where
/// the log ends (byte offset, next sequence number).
///
/// A crash can only tear the *last* record (appends are serialized, each persisted before the
/// next starts), so a later record of the generation behind the first record that is not
/// intact ([`record_after`]) means the log was damaged, not cut short: that is an error (`EIO`,
/// naming both records) rather than a silent loss of every change after the damaged record.
pub fn read_log(pool: &Pool, log: LogId) -> FsResult<(Vec<Op>, u64, u64)> {
    let generation = log.generation;
    let mut ops = Vec::new();
    let mut offset = 0u64;
    let mut seq = 0u64;
    while let Some((payload, total)) = intact_record(pool, offset, log, seq)? {
        let op: Op = postcard::from_bytes(&payload).map_err(|e| {
            corrupt(format!(
                "log record {seq} has a valid checksum but does not decode: {e}"
            ))
        })?;
        if let Some(why) = op.invalid() {
            return Err(corrupt(format!(
                "log record {seq} has a valid checksum but holds {why}; `pfnfs fsck -y` \
                 drops it"
            )));
        }
        ops.push(op);
        offset += total;
        seq += 1;
    }
    if let Some(newer) = newer_generation_in_log(pool, log)? {
        return Err(corrupt(format!(
            "{}: the metadata log holds records of generation {newer}, newer than the \
             superblock's {generation}: the superblock naming them was lost (a damaged slot) and \
             the one left is stale; `pfnfs fsck -y` goes back to the state it names (later \
             changes are lost)",
            pool.name().display()
        )));
    }
    if let Some(LaterRecord {
        offset: at,
        seq: later,
        ..
    }) = record_after(pool, log, offset, seq)?
    {
        return Err(corrupt(format!(
            "{}: metadata log record {seq} (log byte {offset}) is damaged, but record {later} \
             was written after it (log byte {at}): the log is corrupt, not cut short by a \
             crash; `pfnfs fsck -y` skips the damaged record",
            pool.name().display()
        )));
    }
    Ok((ops, offset, seq))
}

/// The generation named by the header at the start of the log, if it has the record magic and
/// sequence number 0 (its checksum is not checked). Every generation writes its records from
/// the start of the log and generations only grow, so no records of a higher generation can be
/// in the log: a new checkpoint takes a generation above both this and the current one.
pub fn log_generation(pool: &Pool, magic: u32) -> FsResult<Option<u64>> {
    let (region_offset, region_bytes) = pool.log_region();
    if region_bytes < RECORD_HEADER_BYTES {
        return Ok(None);
    }
    let h = pool.read_vec(region_offset, RECORD_HEADER_BYTES as usize)?;
    let found = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default());
    let generation = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
    Ok((found == magic && seq == 0 && generation < u64::MAX / 2).then_some(generation))
}

/// The highest generation any record header in the log names (every 8-byte aligned position
/// with the record magic; checksums are not checked), 0 if none. Reads the whole log region:
/// for fsck, not for mounts.
pub fn max_log_generation(pool: &Pool) -> FsResult<u64> {
    let (region_offset, region_bytes) = pool.log_region();
    let log = pool.read_vec(region_offset, region_bytes as usize)?;
    let (magic, magic_v1) = (RECORD_MAGIC.to_le_bytes(), RECORD_MAGIC_V1.to_le_bytes());
    let mut newest = 0;
    for (i, chunk) in log.chunks_exact(8).enumerate() {
        if chunk[0..4] != magic && chunk[0..4] != magic_v1 {
            continue;
        }
        if let Some(generation) = log
            .get(i * 8 + 8..i * 8 + 16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .filter(|g| *g < u64::MAX / 2)
        {
            newest = newest.max(generation);
        }
    }
    Ok(newest)
}

/// A generation above `generation` whose records were written to the log (record 0 is intact,
/// or [`record_after`] finds a later record): the superblock naming it was lost and the one
/// naming `generation` is stale.
pub fn newer_generation_in_log(pool: &Pool, log: LogId) -> FsResult<Option<u64>> {
    let Some(newer) = log_generation(pool, log.magic())?.filter(|g| *g > log.generation) else {
        return Ok(None);
    };
    // The newer generation's nonce was in the superblock that was lost, so its records
    // cannot be checksummed: a well-formed header of record 0 (magic, generation, sequence
    // number 0, a payload length inside the log, the format's tag word set) is the evidence.
    // Records of a generation are written only once both superblock copies name it, so this
    // means both copies of the newest superblock are gone.
    Ok(Some(newer))
}

/// The payload (a copy) and the 8-byte aligned length of record `seq` of `generation` at byte
/// `offset` of the log, if an intact one is there (magic, generation, sequence number, length
/// inside the log, checksum); `None` otherwise.
pub fn intact_record(
    pool: &Pool,
    offset: u64,
    log: LogId,
    seq: u64,
) -> FsResult<Option<(Vec<u8>, u64)>> {
    let generation = log.generation;
    let (region_offset, region_bytes) = pool.log_region();
    if offset
        .checked_add(RECORD_HEADER_BYTES)
        .is_none_or(|end| end > region_bytes)
    {
        return Ok(None);
    }
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    pool.read_into(region_offset + offset, &mut header)?;
    let magic = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
    let len = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default()) as u64;
    let rec_gen = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    let rec_seq = u64::from_le_bytes(header[16..24].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(header[24..28].try_into().unwrap_or_default());
    let tag = u32::from_le_bytes(header[28..32].try_into().unwrap_or_default());
    if magic != log.magic()
        || rec_gen != generation
        || rec_seq != seq
        || tag != log.tag()
        || len > RECORD_PAYLOAD_MAX
    {
        return Ok(None);
    }
    let total = (RECORD_HEADER_BYTES + len).next_multiple_of(8);
    if offset + total > region_bytes {
        return Ok(None);
    }
    let payload = pool.read_vec(region_offset + offset + RECORD_HEADER_BYTES, len as usize)?;
    if log.crc(&header, &payload) != crc {
        return Ok(None);
    }
    Ok(Some((payload, total)))
}

/// A record found after one that is not intact (see [`record_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaterRecord {
    /// Byte offset in the log.
    pub offset: u64,
    /// Its sequence number.
    pub seq: u64,
    /// Found exactly where the damaged record's own header says the next one starts, so it
    /// cannot be bytes inside the damaged record's payload: replaying it is safe. Otherwise it
    /// was found by scanning, and could be data inside the damaged record that looks like a
    /// record (a payload holds names and xattr values).
    pub exact: bool,
}

/// Evidence that record `seq` at byte `offset` of the log, which is not intact, was damaged
/// rather than torn by a crash: a later record of `generation` was written after it.
///
/// - If the header at `offset` still reads as record `seq` (magic, generation, sequence number,
///   the generation's tag word, a length inside the log), record `seq + 1` would start right
///   after it: a header there with the generation, the tag word and either the magic or
///   sequence number `seq + 1` is the evidence
///   (its checksum need not hold: it may be damaged too). `exact` is set.
/// - Otherwise (the header, or its length, is damaged): an intact record of the generation
///   with a higher sequence number starting within the largest record's length.
///
/// A log cut short by a crash has neither (only its last record can be torn, and older
/// generations' records and zeros never match), except that a torn record whose payload holds
/// bytes forming an intact later record is taken for a damaged one: mount then refuses the pool
/// and fsck drops the records from the torn one on, as the crash did.
pub fn record_after(
    pool: &Pool,
    log: LogId,
    offset: u64,
    seq: u64,
) -> FsResult<Option<LaterRecord>> {
    let generation = log.generation;
    let record_magic = log.magic();
    let (region_offset, region_bytes) = pool.log_region();
    // (magic, payload length, generation, sequence number, tag word)
    type Header = (u32, u64, u64, u64, u32);
    let header_at = |at: u64| -> FsResult<Option<Header>> {
        if at
            .checked_add(RECORD_HEADER_BYTES)
            .is_none_or(|end| end > region_bytes)
        {
            return Ok(None);
        }
        let mut h = [0u8; RECORD_HEADER_BYTES as usize];
        pool.read_into(region_offset + at, &mut h)?;
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
        Ok(Some((
            u32::from_le_bytes(h[0..4].try_into().unwrap_or_default()),
            u64::from(u32::from_le_bytes(h[4..8].try_into().unwrap_or_default())),
            u64_at(8),
            u64_at(16),
            u32::from_le_bytes(h[28..32].try_into().unwrap_or_default()),
        )))
    };
    let Some(next_seq) = seq.checked_add(1) else {
        return Ok(None);
    };
    // Both headers must carry this generation's tag word (the low half of its nonce): a
    // header of an earlier life of the log that reused the generation number is not
    // evidence.
    if let Some((magic, len, rec_gen, rec_seq, tag)) = header_at(offset)?
        && magic == record_magic
        && rec_gen == generation
        && rec_seq == seq
        && tag == log.tag()
        && len <= RECORD_PAYLOAD_MAX
    {
        let next = offset + (RECORD_HEADER_BYTES + len).next_multiple_of(8);
        if let Some((magic, _, rec_gen, rec_seq, tag)) = header_at(next)?
            && rec_gen == generation
            && tag == log.tag()
            && (magic == record_magic || rec_seq == next_seq)
        {
            return Ok(Some(LaterRecord {
                offset: next,
                seq: next_seq,
                exact: true,
            }));
        }
    }
    let window_end = offset
        .saturating_add(RECORD_HEADER_BYTES + RECORD_PAYLOAD_MAX)
        .min(region_bytes);
    let Some(first) = offset.checked_add(8) else {
        return Ok(None);
    };
    if first >= window_end {
        return Ok(None);
    }
    let window = pool.read_vec(region_offset + first, (window_end - first) as usize)?;
    let magic = record_magic.to_le_bytes();
    let gen_bytes = generation.to_le_bytes();
    for (i, chunk) in window.chunks_exact(8).enumerate() {
        if chunk[0..4] != magic {
            continue;
        }
        let head = i * 8;
        if window.get(head + 8..head + 16) != Some(&gen_bytes[..]) {
            continue;
        }
        let Some(rec_seq) = window
            .get(head + 16..head + 24)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
        else {
            continue;
        };
        let at = first + 8 * i as u64;
        if rec_seq > seq && intact_record(pool, at, log, rec_seq)?.is_some() {
            return Ok(Some(LaterRecord {
                offset: at,
                seq: rec_seq,
                exact: false,
            }));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// Checkpoint image

/// Magic of a checkpoint header frame.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"PFNCKPT1";
/// Most ranges a checkpoint may occupy (they must fit in its header frame).
pub const CHECKPOINT_RANGES_MAX: usize = ((FRAME_SIZE as usize) - 32) / 16;

/// A serialized inode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InodeImage {
    pub ino: u64,
    pub attr: Attr,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: BodyImage,
}

/// A serialized inode body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BodyImage {
    File(Vec<Extent>),
    Dir {
        parent: u64,
        next_cookie: u64,
        entries: Vec<(u64, DirEntry)>,
    },
    Symlink(Vec<u8>),
    Special,
}

/// The whole metadata state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointImage {
    /// Next inode number to hand out.
    pub next_ino: u64,
    /// Every inode.
    pub inodes: Vec<InodeImage>,
    /// The allocator's free set (`ExtentAllocator::encode_free_set`), with the frames of
    /// the previous checkpoint counted free and those of this one in use.
    pub free_set: Vec<u8>,
}

/// Header of a checkpoint (first 32 bytes of its first frame, then the range list).
///
/// ```text
/// 0   [u8; 8] magic "PFNCKPT1"
/// 8   u64     log generation that starts after this checkpoint
/// 16  u64     body length in bytes
/// 24  u32     CRC32C of the body
/// 28  u32     number of ranges (<= CHECKPOINT_RANGES_MAX)
/// 32  (u64 start pfn, u64 frames) per range
/// ```
/// The body (postcard `CheckpointImage`) starts in the second frame of the first range and
/// continues through the ranges in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointHeader {
    pub generation: u64,
    pub body_len: u64,
    pub body_crc: u32,
    pub ranges: Vec<PfnRange>,
}

impl CheckpointHeader {
    /// Encodes into one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; FRAME_SIZE as usize];
        b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.body_crc.to_le_bytes());
        b[28..32].copy_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        for (i, r) in self.ranges.iter().enumerate() {
            let at = 32 + i * 16;
            b[at..at + 8].copy_from_slice(&r.start.0.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&r.len.to_le_bytes());
        }
        b
    }

    /// Decodes and validates a header frame against the data region.
    pub fn decode(frame: &[u8], data: PfnRange) -> Result<CheckpointHeader, String> {
        if frame.len() < FRAME_SIZE as usize || frame[0..8] != CHECKPOINT_MAGIC {
            return Err("checkpoint header has no checkpoint magic".into());
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(frame[at..at + 8].try_into().unwrap_or_default());
        let generation = u64_at(8);
        let body_len = u64_at(16);
        let body_crc = u32::from_le_bytes(frame[24..28].try_into().unwrap_or_default());
        let count = u32::from_le_bytes(frame[28..32].try_into().unwrap_or_default()) as usize;
        if count == 0 || count > CHECKPOINT_RANGES_MAX {
            return Err(format!("checkpoint header lists {count} ranges"));
        }
        let mut ranges = Vec::with_capacity(count);
        let mut capacity = 0u64;
        for i in 0..count {
            let at = 32 + i * 16;
            let r = PfnRange::new(Pfn(u64_at(at)), u64_at(at + 8))
                .filter(|r| data.covers(r))
                .ok_or_else(|| format!("checkpoint range {i} lies outside the data region"))?;
            capacity = capacity.saturating_add(r.len_bytes());
            ranges.push(r);
        }
        if body_len > capacity.saturating_sub(FRAME_SIZE) {
            return Err(format!(
                "checkpoint body of {body_len} bytes does not fit its {capacity}-byte ranges"
            ));
        }
        Ok(CheckpointHeader {
            generation,
            body_len,
            body_crc,
            ranges,
        })
    }

    /// Byte spans (pool offset, length) that hold the body, in order.
    pub fn body_spans(&self) -> Vec<(u64, u64)> {
        let mut spans = Vec::new();
        let mut left = self.body_len;
        for (i, r) in self.ranges.iter().enumerate() {
            if left == 0 {
                break;
            }
            let (start, bytes) = if i == 0 {
                (
                    r.start.byte_offset() + FRAME_SIZE,
                    r.len_bytes() - FRAME_SIZE,
                )
            } else {
                (r.start.byte_offset(), r.len_bytes())
            };
            let take = bytes.min(left);
            if take > 0 {
                spans.push((start, take));
            }
            left -= take;
        }
        spans
    }
}
