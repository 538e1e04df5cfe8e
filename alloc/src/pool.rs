//! The pool: a superblock, a metadata log and data frames in one mapped region.
//!
//! [`Pool`] validates and owns a [`PoolBackend`]. It checks every byte range it is given
//! against the pool's length (returning [`PoolError::OutOfRange`], never panicking). Reads
//! copy ([`Pool::read_into`], [`Pool::read_vec`]); a slice borrowed from pool memory
//! ([`Pool::borrow`], the zero-copy read path) is `unsafe`, since safe `&self` stores could
//! otherwise change it while it lives.
//!
//! Invariants:
//! - The geometry (size, log and data regions, uuid) is fixed when the pool is opened; only
//!   `seq`, the metadata root ([`MetaRoot`]) and the mounted flag change through
//!   [`Pool::commit_superblock`] (and the format, once, through [`Pool::upgrade_superblock`]).
//! - The current superblock is in slot [`Slot::for_seq`]`(seq)`. A commit writes the other
//!   slot first (`seq + 1`, the commit point), then the current one (`seq + 2`): after a
//!   completed commit both slots hold the same root.
//! - A format 1 pool opens only with [`OpenOptions::format1`]; it cannot be committed to, only
//!   upgraded.
//! - Nothing but `commit_superblock` (and mkfs) writes the header, PFN 0..[`LOG_START_PFN`](crate::layout::LOG_START_PFN):
//!   `write` and `zero` refuse it with [`PoolError::HeaderRange`].
//! - A read-only pool never reaches the backend's `write`/`zero`/`sync`.
//! - `open` writes nothing; in particular it never writes to a pool it refuses.
//!
//! Ownership and locking: a `Pool` is shared by every thread of a mount (`Arc<Pool>`); it owns
//! the backend and the current superblock, not the bytes' meaning: the header belongs to
//! [`Pool::commit_superblock`], the log to the filesystem's journal, data frames to whoever the
//! allocator gave them to (a file's extent map, a checkpoint, a `Frames` guard). Owners
//! serialise their own stores. The superblock mutex is held across a whole commit (both
//! slot writes and persists, then the swap), so commits are serialised; readers of [`Pool::superblock`] see the old or
//! the new one. No other lock is taken inside the pool (the crash simulator's backend has its
//! own).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{
    BackingKind, Durability, FaultCause, MediaError, MmapBackend, PoolBackend, io_err,
};
use crate::bad_frames::BadFrames;
use crate::error::PoolError;
use crate::layout::{HEADER_BYTES, POOL_ALIGN_BYTES, POOL_BYTES_MIN, SUPERBLOCK_BYTES};
use crate::pfn::{FRAME_SIZE, Pfn, PfnRange};
use crate::superblock::{
    AnySuperblock, CheckpointRefV1, FORMAT_VERSION, MAGIC, MetaRoot, Slot, Superblock,
    SuperblockError,
};

/// `create` on a device refuses (without `force`) if any of these first bytes is non-zero.
const DEVICE_PROBE_BYTES: u64 = 1 << 20;

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
    /// Open a format 1 pool too (`pfnfs upgrade`), instead of refusing it with
    /// [`PoolError::OldFormat`]: [`Pool::format1_checkpoint`] then names its checkpoint, and
    /// only [`Pool::upgrade_superblock`] may write its header. A format 2 pool opens as usual.
    pub format1: bool,
}

/// An open pool. Cheap to share behind an `Arc`; all methods take `&self`.
///
/// Ownership: the pool owns its backend (the mapping) and the current superblock; what the
/// bytes mean belongs to their owners (module docs): only [`Pool::commit_superblock`] and mkfs
/// write the header, the filesystem's journal the log, and a data frame is written by whoever
/// the allocator gave it to. Locking: one mutex, the superblock's, held across a whole commit;
/// every other method locks nothing (the backend's safe accesses are guarded copies, its fast
/// paths `unsafe` with their own contracts: [`Pool::borrow`], [`Pool::write_flushed`]).
#[derive(Debug)]
pub struct Pool {
    name: PathBuf,
    backend: Box<dyn PoolBackend>,
    /// The current superblock and what goes with it; held across a whole commit.
    header: Mutex<Header>,
    read_only: bool,
    /// `superblock.pool_bytes`, fixed at open: every range is checked against it.
    pool_bytes: u64,
    /// The data region, fixed at open.
    data: PfnRange,
    /// Byte offset and length of the log, fixed at open.
    log: (u64, u64),
    /// `Msync`: superblock commits also msync (and report its errors). Backends given to
    /// `format_backend`/`open_backend` handle durability themselves: `CacheLines` there.
    durability: Durability,
    /// Storage behind frames is left to chance ([`Pool::set_sparse_backing`]).
    sparse: std::sync::atomic::AtomicBool,
    /// Frames whose memory faulted: never accessed again ([`Pool::bad_frames`]).
    bad: Arc<BadFrames>,
}

/// The pool's view of its header, behind [`Pool`]'s one mutex.
#[derive(Debug)]
struct Header {
    /// The current superblock (for a format 1 pool: its common fields, `version` 1).
    sb: Superblock,
    /// A format 1 pool's checkpoint reference; `None` for format 2.
    format1: Option<CheckpointRefV1>,
    /// A slot that did not decode at open while the other did, and why; cleared once a
    /// commit (or upgrade) has rewritten both slots.
    damaged: Option<(Slot, String)>,
}

/// How a slot decoded.
type SlotResult = Result<AnySuperblock, SuperblockError>;

impl Pool {
    /// Creates (formats) a pool of `size_bytes` at `path`: a new sparse file, an existing file
    /// (refused if it is non-empty unless `force`), or a block/DAX device (size taken from the
    /// device when `size_bytes` is 0). Writes both superblock slots and persists them.
    ///
    /// The size is rounded down to a multiple of 2 MiB and must be at least
    /// [`POOL_BYTES_MIN`]. A file pool is created sparse and only its header frames and first
    /// log frame are written, so formatting takes the same time whatever the size.
    pub fn create(path: &Path, size_bytes: u64, opts: &CreateOptions) -> Result<Pool, PoolError> {
        let bad_size = |size_bytes: u64, why: String| PoolError::BadSize {
            path: path.to_path_buf(),
            size_bytes,
            why,
        };
        let round = |size: u64| -> Result<u64, PoolError> {
            let rounded = size - size % POOL_ALIGN_BYTES;
            if rounded < POOL_BYTES_MIN {
                return Err(bad_size(
                    size,
                    format!(
                        "a pool needs at least {POOL_BYTES_MIN} bytes (after rounding down to 2 MiB)"
                    ),
                ));
            }
            Ok(rounded)
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if size_bytes == 0 {
                    return Err(bad_size(0, "a new file pool needs a size".into()));
                }
                let pool_bytes = round(size_bytes)?;
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(io_err(path, "create"))?;
                // Remove the file again if formatting fails: we created it.
                let mut guard = RemoveOnDrop(Some(path.to_path_buf()));
                let pool = Pool::format_file(path, file, pool_bytes)?;
                sync_parent_dir(path)?;
                guard.0 = None;
                Ok(pool)
            }
            Err(e) => Err(PoolError::Io {
                path: path.to_path_buf(),
                op: "stat",
                source: e,
            }),
            Ok(meta) => {
                let kind = crate::backend::classify(path, &meta)?;
                let target = crate::backend::open_target(path, false)?;
                match kind {
                    BackingKind::File => {
                        if size_bytes == 0 {
                            return Err(bad_size(0, "a file pool needs a size".into()));
                        }
                        let pool_bytes = round(size_bytes)?;
                        if target.len_bytes > 0 && !opts.force {
                            let why = match probe_pool_file(&target.file, target.len_bytes) {
                                Some(()) => "holds a pfnfs pool".to_string(),
                                None => format!("file is not empty ({} bytes)", target.len_bytes),
                            };
                            return Err(PoolError::WouldOverwrite {
                                path: path.to_path_buf(),
                                why,
                            });
                        }
                        // Truncating to zero first drops every old block: the new pool reads
                        // as zeros everywhere and stays sparse.
                        target.file.set_len(0).map_err(io_err(path, "truncate"))?;
                        Pool::format_file(path, target.file, pool_bytes)
                    }
                    BackingKind::BlockDevice | BackingKind::DaxDevice => {
                        let device_bytes = target.len_bytes;
                        if size_bytes > device_bytes {
                            return Err(bad_size(
                                size_bytes,
                                format!("larger than the device ({device_bytes} bytes)"),
                            ));
                        }
                        let pool_bytes = round(if size_bytes == 0 {
                            device_bytes
                        } else {
                            size_bytes
                        })?;
                        let backend = MmapBackend::map(path, target, false, Durability::Msync)?;
                        if !opts.force {
                            check_device_unused(path, &backend)?;
                        }
                        let mut pool = Pool::format_on(
                            path.to_path_buf(),
                            Box::new(backend),
                            pool_bytes,
                            true,
                        )?;
                        pool.durability = Durability::Msync;
                        pool.sync(0, pool.data.start.byte_offset())?;
                        Ok(pool)
                    }
                }
            }
        }
    }

    /// Formats a freshly truncated (all-zero, sparse) file.
    fn format_file(path: &Path, file: std::fs::File, pool_bytes: u64) -> Result<Pool, PoolError> {
        file.set_len(pool_bytes)
            .map_err(io_err(path, "set the file length"))?;
        // The new size is metadata: fsync it now; the superblocks are msynced below (msync
        // also commits the block allocations their pages need).
        file.sync_all().map_err(io_err(path, "fsync"))?;
        let target = crate::backend::Target {
            file,
            kind: BackingKind::File,
            len_bytes: pool_bytes,
        };
        let backend = MmapBackend::map(path, target, false, Durability::CacheLines)?;
        let pool = Pool::format_on(path.to_path_buf(), Box::new(backend), pool_bytes, false)?;
        // The superblocks and the first log frame are all mkfs wrote.
        pool.sync(0, pool.log.0 + FRAME_SIZE)?;
        Ok(pool)
    }

    /// Opens an existing pool, checking magic, version, checksums and sizes. Never writes to a
    /// pool it refuses.
    ///
    /// A format 1 pool is refused with [`PoolError::OldFormat`] unless `opts.format1`.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Pool, PoolError> {
        let target = crate::backend::open_target(path, opts.read_only)?;
        if target.len_bytes < Slot::B.offset() + FRAME_SIZE {
            return Err(refuse_tiny(path, &target.file, target.len_bytes));
        }
        let backend = MmapBackend::map(path, target, opts.read_only, opts.durability)?;
        Pool::open_on(path.to_path_buf(), Box::new(backend), opts)
    }

    /// Formats a pool on an arbitrary backend (tests, crash simulation). `name` is used in
    /// error messages.
    ///
    /// The pool takes the backend's length rounded down to 2 MiB. The header frames and the
    /// whole log are zeroed, so an old image on the backend leaves nothing behind that log
    /// replay could mistake for records.
    pub fn format_backend(name: &str, backend: Box<dyn PoolBackend>) -> Result<Pool, PoolError> {
        let len = backend.len_bytes();
        let pool_bytes = len - len % POOL_ALIGN_BYTES;
        if pool_bytes < POOL_BYTES_MIN {
            return Err(PoolError::BadSize {
                path: PathBuf::from(name),
                size_bytes: len,
                why: format!(
                    "a pool needs at least {POOL_BYTES_MIN} bytes (after rounding down to 2 MiB)"
                ),
            });
        }
        Pool::format_on(PathBuf::from(name), backend, pool_bytes, true)
    }

    /// Writes a new pool of `pool_bytes` onto `backend`: zeroes the header (and the whole log
    /// if `zero_log`, else its first frame), writes slot B with seq 1, persists, writes slot A
    /// with seq 2, persists. A crash in between leaves either no pool or a pool whose slot B is
    /// current: both are valid outcomes of an interrupted mkfs.
    fn format_on(
        name: PathBuf,
        backend: Box<dyn PoolBackend>,
        pool_bytes: u64,
        zero_log: bool,
    ) -> Result<Pool, PoolError> {
        let uuid = new_uuid();
        let created_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut sb = Superblock::for_new_pool(pool_bytes, uuid, created_secs).map_err(|e| {
            PoolError::BadSize {
                path: name.clone(),
                size_bytes: pool_bytes,
                why: e.to_string(),
            }
        })?;
        sb.meta.log_nonce = crate::superblock::new_log_nonce();
        let mut pool = Pool::from_parts(name, backend, sb.clone(), false);
        let (log_off, log_len) = pool.log;
        let be = &pool.backend;
        let persisted = |result: std::io::Result<()>| result.map_err(io_err(&pool.name, "persist"));
        let (header, log) = if zero_log {
            (HEADER_BYTES, log_len)
        } else {
            (2 * FRAME_SIZE, FRAME_SIZE)
        };
        persisted(be.zero(0, header).map_err(Into::into))?;
        persisted(be.zero(log_off, log).map_err(Into::into))?;
        persisted(be.persist(0, header))?;
        persisted(be.persist(log_off, log))?;
        debug_assert_eq!(sb.slot(), Slot::B);
        persisted(write_slot(be.as_ref(), &sb))?;
        let slot_b = sb.clone();
        sb.seq = 2;
        persisted(write_slot(be.as_ref(), &sb))?;
        // Pair assertion: what we wrote reads back as what we meant (the same content in both
        // slots, seq 1 in B and 2 in A).
        for expected in [&slot_b, &sb] {
            let slot = expected.slot();
            match read_slot(be.as_ref(), slot).and_then(|b| Superblock::decode(&b)) {
                Ok(got) if got == *expected => {}
                other => {
                    return Err(PoolError::BadSuperblock {
                        path: pool.name.clone(),
                        what: format!("slot {slot} does not read back after mkfs: {other:?}"),
                    });
                }
            }
        }
        pool.header.get_mut().sb = sb;
        Ok(pool)
    }

    /// Opens a pool on an arbitrary backend with the same checks as [`Pool::open`].
    pub fn open_backend(
        name: &str,
        backend: Box<dyn PoolBackend>,
        read_only: bool,
    ) -> Result<Pool, PoolError> {
        let opts = OpenOptions {
            read_only,
            ..OpenOptions::default()
        };
        Pool::open_backend_with(name, backend, &opts)
    }

    /// [`Pool::open_backend`] with options: `read_only` and `format1` as for [`Pool::open`];
    /// `durability` only decides whether superblock commits also call the backend's `sync`
    /// (the backend's `persist` is its own business).
    pub fn open_backend_with(
        name: &str,
        backend: Box<dyn PoolBackend>,
        opts: &OpenOptions,
    ) -> Result<Pool, PoolError> {
        if backend.len_bytes() < Slot::B.offset() + FRAME_SIZE {
            let len = backend.len_bytes();
            let mut head = vec![0u8; len.min(SUPERBLOCK_BYTES as u64) as usize];
            backend
                .read_into(0, &mut head)
                .map_err(|e| PoolError::Media {
                    path: PathBuf::from(name),
                    offset: e.offset,
                })?;
            return Err(refuse_tiny_bytes(Path::new(name), &head, len));
        }
        Pool::open_on(PathBuf::from(name), backend, opts)
    }

    /// The checks of `open` on a backend at least two frames long.
    fn open_on(
        name: PathBuf,
        backend: Box<dyn PoolBackend>,
        opts: &OpenOptions,
    ) -> Result<Pool, PoolError> {
        let decode = |slot: Slot| -> SlotResult {
            let sb = AnySuperblock::decode(&read_slot(backend.as_ref(), slot)?)?;
            if sb.slot() != slot {
                return Err(SuperblockError::BadField {
                    field: "seq",
                    why: format!(
                        "seq {} does not belong in slot {slot} (A holds even, B odd sequences)",
                        sb.seq()
                    ),
                });
            }
            Ok(sb)
        };
        let a = decode(Slot::A);
        let b = decode(Slot::B);
        let (chosen, damaged) = choose_slot(&name, a, b)?;
        let (sb, format1) = match chosen {
            AnySuperblock::V2(sb) => (sb, None),
            AnySuperblock::V1(v1) if opts.format1 => (v1.common, Some(v1.checkpoint)),
            AnySuperblock::V1(v1) => {
                return Err(PoolError::OldFormat {
                    path: name,
                    version: v1.common.version,
                });
            }
        };
        let actual_bytes = backend.len_bytes();
        if sb.pool_bytes > actual_bytes {
            return Err(PoolError::Truncated {
                path: name,
                expected_bytes: sb.pool_bytes,
                actual_bytes,
            });
        }
        if sb.pool_bytes < actual_bytes {
            tracing::debug!(pool = %name.display(), pool_bytes = sb.pool_bytes, actual_bytes, "backing store is larger than the pool");
        }
        let mut pool = Pool::from_parts(name, backend, sb, opts.read_only);
        pool.durability = opts.durability;
        let header = pool.header.get_mut();
        header.format1 = format1;
        header.damaged = damaged;
        Ok(pool)
    }

    fn from_parts(
        name: PathBuf,
        backend: Box<dyn PoolBackend>,
        sb: Superblock,
        read_only: bool,
    ) -> Pool {
        // `sb` passed `validate`: the regions are non-empty and inside the pool.
        let data = PfnRange {
            start: Pfn(sb.data_start_pfn),
            len: sb.data_frames,
        };
        let log = (sb.log_start_pfn * FRAME_SIZE, sb.log_frames * FRAME_SIZE);
        Pool {
            name,
            backend,
            pool_bytes: sb.pool_bytes,
            data,
            log,
            header: Mutex::new(Header {
                sb,
                format1: None,
                damaged: None,
            }),
            read_only,
            durability: Durability::CacheLines,
            sparse: std::sync::atomic::AtomicBool::new(false),
            bad: Arc::new(BadFrames::new()),
        }
    }

    /// Gives the backend back (tests: reopen the same memory after dropping the pool).
    pub fn into_backend(self) -> Box<dyn PoolBackend> {
        self.backend
    }

    /// The pool's path or name, for messages.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// True if opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The current superblock. For a format 1 pool (opened with [`OpenOptions::format1`]):
    /// its common fields, with `version` 1 and [`MetaRoot::EMPTY`].
    pub fn superblock(&self) -> Superblock {
        self.header.lock().sb.clone()
    }

    /// Format version of the current superblock: [`FORMAT_VERSION`], or 1 for a format 1
    /// pool opened with [`OpenOptions::format1`] and not yet upgraded.
    pub fn version(&self) -> u32 {
        self.header.lock().sb.version
    }

    /// True if files may keep their bytes inline (superblock flag bit 2), read without
    /// copying the superblock: asked on the write path.
    pub fn inline_data(&self) -> bool {
        self.header.lock().sb.inline_data
    }

    /// A format 1 pool's checkpoint reference (`None` for a format 2 pool, also after
    /// [`Pool::upgrade_superblock`]).
    pub fn format1_checkpoint(&self) -> Option<CheckpointRefV1> {
        self.header.lock().format1
    }

    /// The superblock slot found damaged at open (`'A'` or `'B'`) and why, while the other
    /// slot was intact; `None` once a commit has rewritten both slots (which repairs it), and
    /// for a pool whose slots both decoded. fsck reports it ("superblock copy damaged,
    /// repaired by the next commit").
    pub fn damaged_slot(&self) -> Option<(char, String)> {
        self.header
            .lock()
            .damaged
            .as_ref()
            .map(|(slot, why)| (slot.letter(), why.clone()))
    }

    /// Commits `sb`: writes it to the slot not holding the current superblock with `seq =
    /// current + 1` and persists it (the commit point), then to the other slot with `seq =
    /// current + 2` and persists it, and makes it current. After it returns `Ok`, both slots
    /// hold the new root, so damage to either copy loses nothing.
    ///
    /// Only `meta`, `mounted`, `bad_frames`, `inline_data` (which may be turned on, never off)
    /// and `seq` (which is overwritten) may differ from the current superblock; a change to the geometry, uuid or version is refused with
    /// [`PoolError::BadSuperblock`], as is a `meta` breaking the field rules. A format 1 pool
    /// is refused with [`PoolError::OldFormat`]. With [`Durability::Msync`] each slot is also
    /// msynced before the next step.
    ///
    /// An error leaves the commit in doubt: the caller must keep what either the old or the
    /// new superblock names. If the first write failed, the current superblock stays (the next
    /// commit rewrites the same slot); if the second failed, the first is durable and is the
    /// newest intact copy, so it becomes current (seq + 1; [`Pool::superblock`] shows it) and
    /// the next commit writes the slot the failed write left in doubt first.
    pub fn commit_superblock(&self, mut sb: Superblock) -> Result<(), PoolError> {
        if self.read_only {
            return Err(PoolError::ReadOnly {
                path: self.name.clone(),
            });
        }
        let mut header = self.header.lock();
        if header.format1.is_some() {
            return Err(PoolError::OldFormat {
                path: self.name.clone(),
                version: header.sb.version,
            });
        }
        let current = &header.sb;
        let bad = |what: String| PoolError::BadSuperblock {
            path: self.name.clone(),
            what,
        };
        let first_seq = current.seq.checked_add(1);
        let second_seq = current.seq.checked_add(2);
        let (Some(first_seq), Some(second_seq)) = (first_seq, second_seq) else {
            return Err(bad("seq would overflow".into()));
        };
        let mut fixed = sb.clone();
        fixed.meta = current.meta;
        fixed.mounted = current.mounted;
        fixed.bad_frames = current.bad_frames;
        fixed.inline_data = current.inline_data;
        fixed.seq = current.seq;
        if fixed != *current {
            return Err(bad(format!(
                "commit may change only the metadata root and the mounted, bad-frames and inline-data flags: {sb:?} vs current {current:?}"
            )));
        }
        if current.inline_data && !sb.inline_data {
            return Err(bad("inline data cannot be turned off once on".into()));
        }
        sb.seq = first_seq;
        sb.validate().map_err(|e| bad(e.to_string()))?;
        debug_assert_ne!(sb.slot(), current.slot());
        self.write_superblock(&sb)?;
        // `sb` is now the newest intact copy on the pool: current even if the second write
        // fails, so that a later commit never overwrites it first.
        header.sb = sb.clone();
        sb.seq = second_seq;
        self.write_superblock(&sb)?;
        header.sb = sb;
        header.damaged = None;
        Ok(())
    }

    /// Converts a format 1 pool (opened with [`OpenOptions::format1`]) to format 2: writes a
    /// format 2 superblock with the same geometry, uuid and creation time, `meta` and
    /// `mounted = false`, first to the slot not holding the current superblock (`seq + 1`: the
    /// commit point of the upgrade), then to the other (`seq + 2`), each persisted, and makes
    /// it current ([`Pool::version`] is then 2 and [`Pool::format1_checkpoint`] `None`).
    ///
    /// The caller must have persisted everything `meta` names first. Refused with
    /// [`PoolError::BadSuperblock`] on a format 2 pool or for a `meta` breaking the field
    /// rules, [`PoolError::ReadOnly`] on a read-only pool. An error leaves the upgrade in
    /// doubt exactly as [`Pool::commit_superblock`] leaves a commit.
    pub fn upgrade_superblock(&self, meta: MetaRoot) -> Result<(), PoolError> {
        if self.read_only {
            return Err(PoolError::ReadOnly {
                path: self.name.clone(),
            });
        }
        let mut header = self.header.lock();
        let bad = |what: String| PoolError::BadSuperblock {
            path: self.name.clone(),
            what,
        };
        if header.format1.is_none() {
            return Err(bad(format!(
                "already format {}: nothing to upgrade",
                header.sb.version
            )));
        }
        let current = &header.sb;
        let (Some(first_seq), Some(second_seq)) =
            (current.seq.checked_add(1), current.seq.checked_add(2))
        else {
            return Err(bad("seq would overflow".into()));
        };
        let mut sb = Superblock {
            version: FORMAT_VERSION,
            seq: first_seq,
            meta,
            mounted: false,
            inline_data: true,
            ..current.clone()
        };
        sb.validate().map_err(|e| bad(e.to_string()))?;
        self.write_superblock(&sb)?;
        // The pool is format 2 from here on (the commit point of the upgrade).
        header.sb = sb.clone();
        header.format1 = None;
        sb.seq = second_seq;
        self.write_superblock(&sb)?;
        header.sb = sb;
        header.damaged = None;
        Ok(())
    }

    /// Writes `sb` (format 2, validated) into its slot, persists it (and msyncs it with
    /// [`Durability::Msync`]), and reads it back (pair assertion). Called with the header
    /// mutex held.
    fn write_superblock(&self, sb: &Superblock) -> Result<(), PoolError> {
        let slot = sb.slot();
        write_slot(self.backend.as_ref(), sb)
            .map_err(io_err(&self.name, "persist the superblock"))?;
        if self.durability == Durability::Msync {
            self.backend
                .sync(slot.offset(), SUPERBLOCK_BYTES as u64)
                .map_err(io_err(&self.name, "msync the superblock"))?;
        }
        match read_slot(self.backend.as_ref(), slot).and_then(|b| Superblock::decode(&b)) {
            Ok(back) if back == *sb => Ok(()),
            other => Err(PoolError::BadSuperblock {
                path: self.name.clone(),
                what: format!("slot {slot} does not read back after commit: {other:?}"),
            }),
        }
    }

    /// Total bytes in the pool (`pool_bytes` of the superblock; the backing store may be
    /// larger).
    pub fn len_bytes(&self) -> u64 {
        self.pool_bytes
    }

    /// The data region (file frames and checkpoint frames).
    pub fn data_region(&self) -> PfnRange {
        self.data
    }

    /// Byte offset and length of the metadata log region.
    pub fn log_region(&self) -> (u64, u64) {
        self.log
    }

    /// Checks `offset + len <= pool_bytes`.
    fn check(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.pool_bytes => Ok(()),
            _ => Err(PoolError::OutOfRange {
                path: self.name.clone(),
                offset,
                len,
                pool_bytes: self.pool_bytes,
            }),
        }
    }

    /// Checks a range for writing: inside the pool, outside the header, pool writable.
    fn check_write(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        self.check(offset, len)?;
        self.check_bad(offset, len)?;
        if self.read_only {
            return Err(PoolError::ReadOnly {
                path: self.name.clone(),
            });
        }
        if len > 0 && offset < HEADER_BYTES {
            return Err(PoolError::HeaderRange {
                path: self.name.clone(),
                offset,
                len,
                header_bytes: HEADER_BYTES,
            });
        }
        Ok(())
    }

    /// The frames whose memory faulted (shared with the allocator, kept on the pool by the
    /// filesystem). Every access that overlaps one fails with [`PoolError::BadFrames`] before
    /// it touches memory.
    pub fn bad_frames(&self) -> &Arc<BadFrames> {
        &self.bad
    }

    /// Refuses a byte range that overlaps a bad frame (one relaxed load when there is none).
    fn check_bad(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        if self.bad.is_empty() || len == 0 {
            return Ok(());
        }
        let first = offset / FRAME_SIZE;
        let end = offset.saturating_add(len).div_ceil(FRAME_SIZE);
        let frames = PfnRange {
            start: Pfn(first),
            len: end - first,
        };
        match self.bad.first_in(frames) {
            Some(range) => Err(PoolError::BadFrames {
                path: self.name.clone(),
                range,
            }),
            None => Ok(()),
        }
    }

    /// Records the frame of a fault as bad and says what happened; a page the pool file's
    /// filesystem had no room for is no fault of the frame's: not recorded, [`PoolError::NoRoom`].
    fn media(&self, e: MediaError) -> PoolError {
        let e = self.backend.refine_fault(e);
        if e.cause == FaultCause::NoRoom {
            return PoolError::NoRoom {
                path: self.name.clone(),
                offset: e.offset,
            };
        }
        let pfn = Pfn(e.offset / FRAME_SIZE);
        if self.bad.add(PfnRange { start: pfn, len: 1 }) > 0 {
            tracing::error!(pool = %self.name.display(), "memory error at pool byte {:#x}: frame {} is now recorded as bad and will not be used again", e.offset, pfn.0);
        }
        PoolError::Media {
            path: self.name.clone(),
            offset: e.offset,
        }
    }

    /// Copies `buf.len()` bytes at byte `offset` into `buf`. Safe whatever other threads
    /// store meanwhile (a racing store leaves unspecified bytes in `buf`): the metadata
    /// readers' way in (journal, checkpoint, superblock, fsck, stat).
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), PoolError> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.check(offset, len)?;
        self.check_bad(offset, len)?;
        if !buf.is_empty() {
            self.backend
                .read_into(offset, buf)
                .map_err(|e| self.media(e))?;
        }
        Ok(())
    }

    /// A copy of `len` bytes at byte `offset`.
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, PoolError> {
        self.check(offset, u64::try_from(len).unwrap_or(u64::MAX))?;
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// A copy of the bytes of a frame range.
    pub fn read_frames(&self, range: PfnRange) -> Result<Vec<u8>, PoolError> {
        let (offset, len) = self.frame_span(range)?;
        self.read_vec(offset, len)
    }

    /// Borrows `len` bytes at byte `offset`: the zero-copy read path. The range is probed
    /// first (one load per page, [`crate::guarded`]): a page that is gone is an error here,
    /// not a SIGBUS in whoever reads the slice. A page lost after the probe still faults
    /// whoever reads the slice: copy out of it with [`crate::guarded::copy`], or hand it to
    /// the kernel (which turns the fault into EFAULT).
    ///
    /// # Safety
    /// No store may be made to `[offset, offset + len)` (through this pool, by any thread)
    /// while the returned slice is alive. In pfnfs only the extent crate borrows, for frames
    /// of the extent map it holds shared; stores to those frames need that map exclusively.
    pub unsafe fn borrow(&self, offset: u64, len: usize) -> Result<&[u8], PoolError> {
        let len64 = u64::try_from(len).unwrap_or(u64::MAX);
        self.check(offset, len64)?;
        self.check_bad(offset, len64)?;
        if len == 0 {
            return Ok(&[]);
        }
        self.backend
            .probe(offset, len64)
            .map_err(|e| self.media(e))?;
        // SAFETY: the range lies in the pool (checked); the caller's contract is the
        // backend's.
        Ok(unsafe { self.backend.borrow(offset, len) })
    }

    /// Copies a slice borrowed from this pool ([`Pool::borrow`]) into `dst` (equal lengths)
    /// with [`crate::guarded::copy`]: a page lost since the borrow is an error (and recorded
    /// bad), not a SIGBUS.
    pub fn copy_borrowed(&self, dst: &mut [u8], src: &[u8]) -> Result<(), PoolError> {
        crate::guarded::copy(dst, src).map_err(|f| self.borrowed_fault(f))
    }

    /// Appends a slice borrowed from this pool to `dst`, as [`Pool::copy_borrowed`] copies it
    /// (without first zeroing the room it copies into). On a fault `dst` is left as it was.
    pub fn extend_from_borrowed(&self, dst: &mut Vec<u8>, src: &[u8]) -> Result<(), PoolError> {
        dst.reserve(src.len());
        let at = dst.len();
        // SAFETY: `reserve` made room for `src.len()` bytes after `at`, which the spare
        // capacity is valid for writes of; `src` is a valid slice and cannot overlap the
        // spare capacity of a vector borrowed `&mut`.
        let copied =
            unsafe { crate::guarded::copy_raw(dst.as_mut_ptr().add(at), src.as_ptr(), src.len()) };
        copied.map_err(|f| self.borrowed_fault(f))?;
        // SAFETY: the copy initialised the `src.len()` bytes after `at`, within capacity.
        unsafe { dst.set_len(at + src.len()) };
        Ok(())
    }

    /// What a fault in a borrowed slice is: a media error at its pool offset (and the frame
    /// recorded bad) where the backend says where its memory starts; otherwise an I/O error
    /// that records nothing (only the tests' wrapping backends say nothing, and RAM does not
    /// fault).
    fn borrowed_fault(&self, f: crate::guarded::MediaFault) -> PoolError {
        match self.backend.base_addr() {
            Some(base) => self.media(MediaError {
                offset: (f.addr as u64).wrapping_sub(base as u64),
                cause: if f.is_poison() {
                    FaultCause::Poison
                } else {
                    FaultCause::Gone
                },
            }),
            None => PoolError::Io {
                path: self.name.clone(),
                op: "copy out of pool memory",
                source: std::io::Error::other(f),
            },
        }
    }

    /// Borrows the bytes of a frame range.
    ///
    /// # Safety
    /// As [`borrow`](Self::borrow), for the range's bytes.
    pub unsafe fn borrow_frames(&self, range: PfnRange) -> Result<&[u8], PoolError> {
        let (offset, len) = self.frame_span(range)?;
        // SAFETY: the caller's contract, for the same bytes.
        unsafe { self.borrow(offset, len) }
    }

    /// Byte offset and length of a frame range, checked for overflow.
    fn frame_span(&self, range: PfnRange) -> Result<(u64, usize), PoolError> {
        let out_of_range = || PoolError::OutOfRange {
            path: self.name.clone(),
            offset: range.start.byte_offset(),
            len: range.len.saturating_mul(FRAME_SIZE),
            pool_bytes: self.pool_bytes,
        };
        let offset = range
            .start
            .0
            .checked_mul(FRAME_SIZE)
            .ok_or_else(out_of_range)?;
        let len = range.len.checked_mul(FRAME_SIZE).ok_or_else(out_of_range)?;
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        Ok((offset, len))
    }

    /// Stores `data` at byte `offset` (not yet durable).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), PoolError> {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        self.check_write(offset, len)?;
        if !data.is_empty() {
            self.backend
                .write(offset, data)
                .map_err(|e| self.media(e))?;
        }
        Ok(())
    }

    /// Stores `data` at byte `offset` so that it is durable after the next [`Pool::fence`]
    /// (non-temporal stores where the hardware has them; no separate flush needed): the data
    /// path's store.
    ///
    /// # Safety
    /// No other access to `[offset, offset + data.len())` may happen during the call: no load
    /// or store by another thread and no live slice from [`borrow`](Self::borrow). In pfnfs
    /// only the extent crate calls it, for frames of the extent map it holds exclusively or
    /// frames it just allocated.
    pub unsafe fn write_flushed(&self, offset: u64, data: &[u8]) -> Result<(), PoolError> {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        self.check_write(offset, len)?;
        if !data.is_empty() {
            // SAFETY: the range lies in the pool, outside the header (checked); the caller's
            // contract is the backend's.
            unsafe { self.backend.write_flushed(offset, data) }.map_err(|e| self.media(e))?;
        }
        Ok(())
    }

    /// Stores zeros over `len` bytes at `offset` (not yet durable).
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        self.check_write(offset, len)?;
        if len > 0 {
            self.backend.zero(offset, len).map_err(|e| self.media(e))?;
        }
        Ok(())
    }

    /// Starts write-back of the cache lines of a byte range (no fence).
    pub fn flush(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        self.check(offset, len)?;
        self.check_bad(offset, len)?;
        if len > 0 && !self.read_only {
            self.backend.flush(offset, len).map_err(|e| self.media(e))?;
        }
        Ok(())
    }

    /// Completes earlier flushes: a persist point. An error ([`PoolError::Io`], keeping the
    /// OS's errno) means the flushed stores may or may not be durable.
    pub fn fence(&self) -> Result<(), PoolError> {
        self.backend.fence().map_err(io_err(&self.name, "fence"))
    }

    /// Flush + fence of a byte range (plus msync with [`Durability::Msync`]). An error
    /// ([`PoolError::Io`], keeping the OS's errno; [`PoolError::Media`] for a fault) means
    /// the range may or may not be durable: what it holds must not be acknowledged.
    pub fn persist(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        self.check(offset, len)?;
        self.check_bad(offset, len)?;
        if self.read_only {
            return Ok(());
        }
        let result = if len > 0 {
            self.backend.persist(offset, len)
        } else {
            self.backend.fence()
        };
        result.map_err(|e| match media_of(&e) {
            Some(m) => self.media(m),
            None => io_err(&self.name, "persist")(e),
        })
    }

    /// msync-style durability of a byte range on the backing store (fsync path).
    pub fn sync(&self, offset: u64, len: u64) -> Result<(), PoolError> {
        self.check(offset, len)?;
        if len == 0 || self.read_only {
            return Ok(());
        }
        self.backend
            .sync(offset, len)
            .map_err(io_err(&self.name, "msync"))
    }

    /// Byte offset of a frame, checked against the pool.
    pub fn frame_offset(&self, pfn: Pfn) -> Result<u64, PoolError> {
        match pfn.0.checked_mul(FRAME_SIZE) {
            Some(offset) if offset < self.pool_bytes => Ok(offset),
            _ => Err(PoolError::OutOfRange {
                path: self.name.clone(),
                offset: pfn.byte_offset(),
                len: FRAME_SIZE,
                pool_bytes: self.pool_bytes,
            }),
        }
    }
}

/// The [`MediaError`] inside an error a backend's `persist` returned, if it is one.
fn media_of(e: &std::io::Error) -> Option<MediaError> {
    e.get_ref()?.downcast_ref::<MediaError>().copied()
}

/// A copy of the superblock bytes of `slot`.
fn read_slot(
    backend: &dyn PoolBackend,
    slot: Slot,
) -> Result<[u8; SUPERBLOCK_BYTES], SuperblockError> {
    let mut bytes = [0u8; SUPERBLOCK_BYTES];
    backend
        .read_into(slot.offset(), &mut bytes)
        .map_err(|e| SuperblockError::Unreadable { offset: e.offset })?;
    Ok(bytes)
}

/// Encodes `sb` (format 2) into its slot and persists it (the rest of the slot's frame stays
/// zero).
fn write_slot(backend: &dyn PoolBackend, sb: &Superblock) -> std::io::Result<()> {
    let offset = sb.slot().offset();
    backend.write(offset, &sb.encode())?;
    backend.persist(offset, SUPERBLOCK_BYTES as u64)
}

/// Picks the superblock to open from the two slot results (see docs/DESIGN.md, 3.2): the
/// intact slot (format 1 or 2) with the highest `seq`, and the damaged slot if one is.
fn choose_slot(
    name: &Path,
    a: SlotResult,
    b: SlotResult,
) -> Result<(AnySuperblock, Option<(Slot, String)>), PoolError> {
    use SuperblockError::{BadField, BadMagic, UnsupportedVersion};
    let path = || name.to_path_buf();
    // A newer format in either slot: a newer pfnfs has written this pool, and the older slot
    // may no longer describe it. Refuse rather than open a stale view.
    for r in [&a, &b] {
        if let Err(UnsupportedVersion { found }) = r
            && *found > FORMAT_VERSION
        {
            return Err(PoolError::UnsupportedVersion {
                path: path(),
                found: *found,
                supported: FORMAT_VERSION,
            });
        }
    }
    match (a, b) {
        (Ok(a), Ok(b)) => {
            // Both intact: after a completed commit they hold the same content (seqs n + 1
            // and n + 2); after an interrupted one (or upgrade) the newer holds the new. Either
            // way there is nothing to warn about.
            let (newer, older) = if a.seq() > b.seq() { (a, b) } else { (b, a) };
            let (n, o) = (newer.common(), older.common());
            if (n.uuid, n.pool_bytes) != (o.uuid, o.pool_bytes) {
                tracing::warn!(pool = %name.display(), "the superblock slots describe different pools; using the newer (seq {})", n.seq);
            }
            Ok((newer, None))
        }
        (Ok(sb), Err(e)) | (Err(e), Ok(sb)) => {
            let bad_slot = sb.slot().other();
            tracing::warn!(pool = %name.display(), "superblock slot {bad_slot} is damaged ({e}); opening from slot {} (seq {}); the next commit repairs it", sb.slot(), sb.seq());
            Ok((sb, Some((bad_slot, e.to_string()))))
        }
        (Err(BadMagic { .. }), Err(BadMagic { .. })) => Err(PoolError::NotAPool { path: path() }),
        (Err(ea), Err(eb)) => {
            // Checksum-valid but inconsistent superblocks are not media damage but a bug or a
            // crafted pool: say what is inconsistent.
            let inconsistent: Vec<String> = [(Slot::A, &ea), (Slot::B, &eb)]
                .into_iter()
                .filter(|(_, e)| matches!(e, BadField { .. }))
                .map(|(slot, e)| format!("slot {slot}: {e}"))
                .collect();
            if !inconsistent.is_empty() {
                return Err(PoolError::BadSuperblock {
                    path: path(),
                    what: inconsistent.join("; "),
                });
            }
            Err(PoolError::SuperblockDamaged {
                path: path(),
                slot_a: ea.to_string(),
                slot_b: eb.to_string(),
            })
        }
    }
}

/// The error for a backing store too small to hold both superblock slots, from its first bytes.
fn refuse_tiny_bytes(path: &Path, head: &[u8], actual_bytes: u64) -> PoolError {
    if head.len() >= MAGIC.len() && head[..MAGIC.len()] == MAGIC {
        let off = crate::superblock::field::POOL_BYTES.offset;
        let expected_bytes = head
            .get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(POOL_BYTES_MIN);
        PoolError::Truncated {
            path: path.to_path_buf(),
            expected_bytes,
            actual_bytes,
        }
    } else {
        PoolError::NotAPool {
            path: path.to_path_buf(),
        }
    }
}

/// As [`refuse_tiny_bytes`], reading the head of a file too small to map usefully.
fn refuse_tiny(path: &Path, file: &std::fs::File, len_bytes: u64) -> PoolError {
    use std::os::unix::fs::FileExt;
    let mut head = vec![0u8; len_bytes.min(SUPERBLOCK_BYTES as u64) as usize];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => refuse_tiny_bytes(path, &head, len_bytes),
        Err(e) => PoolError::Io {
            path: path.to_path_buf(),
            op: "read",
            source: e,
        },
    }
}

/// `Some(())` if either superblock slot of the file starts with the pfnfs magic.
fn probe_pool_file(file: &std::fs::File, len_bytes: u64) -> Option<()> {
    use std::os::unix::fs::FileExt;
    [Slot::A, Slot::B].into_iter().find_map(|slot| {
        if slot.offset() + MAGIC.len() as u64 > len_bytes {
            return None;
        }
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, slot.offset()).ok()?;
        (magic == MAGIC).then_some(())
    })
}

/// Refuses a device that holds a pfnfs pool or any non-zero byte in its first MiB (a
/// partition table, another filesystem's superblock).
fn check_device_unused(path: &Path, backend: &MmapBackend) -> Result<(), PoolError> {
    let len = backend.len_bytes();
    let mut probe = vec![0u8; len.min(DEVICE_PROBE_BYTES) as usize];
    backend
        .read_into(0, &mut probe)
        .map_err(|e| PoolError::Media {
            path: path.to_path_buf(),
            offset: e.offset,
        })?;
    for slot in [Slot::A, Slot::B] {
        let off = slot.offset() as usize;
        if probe.get(off..off + MAGIC.len()) == Some(&MAGIC[..]) {
            return Err(PoolError::WouldOverwrite {
                path: path.to_path_buf(),
                why: "device holds a pfnfs pool".into(),
            });
        }
    }
    if let Some(pos) = probe.iter().position(|&b| b != 0) {
        return Err(PoolError::WouldOverwrite {
            path: path.to_path_buf(),
            why: format!("device holds data (non-zero byte at offset {pos})"),
        });
    }
    Ok(())
}

/// A random (version 4) UUID.
fn new_uuid() -> [u8; 16] {
    let mut uuid: [u8; 16] = rand::random();
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// fsyncs the directory holding `path`, so that a new file's name survives a power cut.
fn sync_parent_dir(path: &Path) -> Result<(), PoolError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::File::open(parent).map_err(io_err(path, "open the parent directory"))?;
    dir.sync_all()
        .map_err(io_err(path, "fsync the parent directory"))
}

/// Removes a file on drop unless forgotten: undoes a half-made pool file.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl crate::allocator::Backing for Pool {
    fn ensure_backed(&self, range: PfnRange) -> std::io::Result<()> {
        if self.read_only || self.sparse.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        self.backend
            .ensure_backed(range.start.byte_offset(), range.len_bytes())
    }

    fn release(&self, range: PfnRange) -> std::io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.backend
            .release_backing(range.start.byte_offset(), range.len_bytes())
    }
}

impl Pool {
    /// Makes storage exist behind the whole pool now (fallocate of a pool file), so that no
    /// allocation can later find its backing store full. ENOSPC (named) when it is too small.
    pub fn preallocate(&self) -> Result<(), PoolError> {
        if self.read_only {
            return Ok(());
        }
        self.backend
            .ensure_backed(0, self.pool_bytes)
            .map_err(io_err(&self.name, "fallocate the whole pool"))
    }

    /// Leaves storage behind the pool's frames to chance from now on (`-o backing=sparse`):
    /// nothing is reserved, and a store into a frame the backing store has no room for
    /// faults. For a pool far larger than its filesystem whose use is known to stay within
    /// the room.
    pub fn set_sparse_backing(&self) {
        self.sparse
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes storage exist behind the superblocks and the metadata log (everything before
    /// the data region), which are written from the first operation on.
    pub fn ensure_metadata_backed(&self) -> Result<(), PoolError> {
        if self.read_only || self.sparse.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        self.backend
            .ensure_backed(0, self.data.start.byte_offset())
            .map_err(io_err(
                &self.name,
                "fallocate the superblocks and metadata log",
            ))
    }
}
