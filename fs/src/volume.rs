//! [`Volume`]: a mounted pool's metadata in RAM, the journal that makes it durable, and every
//! filesystem operation, independent of FUSE (the adapter in `fuse` only translates).
//!
//! # Locking (outermost first; never acquire against this order)
//! 1. `gate` (RwLock): every mutation holds it shared; a checkpoint holds it exclusive, so
//!    it sees no half-done operation.
//! 2. `ns` (Mutex): namespace mutations (create, link, unlink, rename) hold it, so the names
//!    they validate cannot change before they are applied.
//! 3. Inode locks (RwLock per inode), taken in ascending inode-number order. Reads of file
//!    data hold the file's lock shared; writes hold it exclusive.
//! 4. The journal tail, then allocator groups (inside `Journal::append` / the allocator).
//!
//! # Durability rule
//! Validate, append the [`Op`] (persisted), then apply it in RAM with `Volume::apply`, the
//! same function replay uses. Frames released by an op go back to the allocator only in
//! `apply`, i.e. after the record that stops referencing them is durable. Data written into
//! new frames is persisted before the record that maps them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::lock_api::ArcRwLockWriteGuard;
use parking_lot::{Mutex, RawRwLock, RwLock};
use pfnfs_alloc::{ExtentAllocator, FRAME_SIZE, Pfn, PfnRange, Pool};
use pfnfs_extent::{Extent, ExtentMap};

use crate::error::*;
use crate::inode::*;
use crate::journal::*;

/// Largest file size (and the largest byte offset + 1): `i64::MAX`, the kernel's
/// `MAX_LFS_FILESIZE` (FUSE's `s_maxbytes`), as on ext4, xfs and tmpfs. Every byte and frame
/// computation stays in `u64`: the frame after the last byte, `2^51`, ends at byte `2^63`.
pub const MAX_FILE_BYTES: u64 = i64::MAX as u64;
/// Longest name.
pub const NAME_MAX: usize = 255;
/// Largest extended-attribute value.
pub const XATTR_VALUE_MAX: usize = 65536;
/// Largest total of xattr names and values on one inode.
pub const XATTR_TOTAL_MAX: usize = 1 << 20;
/// Longest symlink target.
pub const SYMLINK_MAX: usize = 4095;

/// An inode and its in-RAM reference counts.
#[derive(Debug)]
pub struct InodeCell {
    /// The inode, behind its lock.
    pub inode: Arc<RwLock<Inode>>,
    /// Kernel lookup count (FUSE lookup/forget).
    pub lookups: AtomicU64,
    /// Open file handles.
    pub opens: AtomicU32,
}

type WriteGuard = ArcRwLockWriteGuard<RawRwLock, Inode>;

/// Write guards of the inodes an operation touches, by inode number.
struct Locked(BTreeMap<u64, WriteGuard>);

impl Locked {
    fn get(&mut self, ino: u64) -> FsResult<&mut Inode> {
        self.0
            .get_mut(&ino)
            .map(|g| &mut **g)
            .ok_or_else(|| corrupt(format!("inode {ino} not locked")))
    }
}

/// Who is asking (from the FUSE request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Who changes a regular file's data or size, and so what the change takes away: Linux's
/// `file_remove_privs` rules, which FUSE's `HANDLE_KILLPRIV_V2` contract leaves to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// A process: write(2) and its kin (O_DIRECT, appends), copy_file_range, fallocate,
    /// truncate. The change removes the file capability (`security.capability`) whoever
    /// makes it, and setuid/setgid unless `keeps_suidgid` (the writer holds CAP_FSETID).
    Process {
        /// The writer.
        caller: Caller,
        /// The writer may leave setuid/setgid in place (CAP_FSETID).
        keeps_suidgid: bool,
    },
    /// The kernel writing back its page cache (`FUSE_WRITE_CACHE`): stores through a shared
    /// mapping, or buffered writes whose privileges the kernel already took away when they
    /// were made. Removes nothing, as stores through a mapping remove nothing on tmpfs or ext4.
    PageCache,
}

impl Writer {
    /// `caller` as a process, for a request where the kernel does not say whether it holds
    /// CAP_FSETID: root is taken to hold it, nobody else.
    pub fn process(caller: Caller) -> Writer {
        Writer::Process {
            caller,
            keeps_suidgid: caller.uid == 0,
        }
    }
}

impl From<Caller> for Writer {
    /// [`Writer::process`].
    fn from(caller: Caller) -> Writer {
        Writer::process(caller)
    }
}

/// The name of the file-capability attribute, which every change of a file's data or size
/// removes.
pub const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// A setattr request: every field optional.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
    pub ctime: Option<Time>,
}

/// What was found or created: the inode number and a snapshot of its attributes.
#[derive(Clone, Debug)]
pub struct Entry {
    pub ino: u64,
    pub attr: Attr,
    /// 512-byte blocks the inode occupies in the pool (mapped frames).
    pub blocks: u64,
}

impl Entry {
    /// The entry for a locked or read inode.
    pub fn of(inode: &Inode) -> Entry {
        let blocks = match &inode.body {
            Body::File(m) => m.mapped_frames() * (FRAME_SIZE / 512),
            _ => 0,
        };
        Entry {
            ino: inode.ino,
            attr: inode.attr.clone(),
            blocks,
        }
    }
}

/// statfs figures.
#[derive(Clone, Copy, Debug)]
pub struct FsStat {
    pub total_frames: u64,
    pub free_frames: u64,
    pub inodes: u64,
    pub free_inodes: u64,
}

/// When reads move atime (the mount's noatime / relatime / strictatime).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum AtimePolicy {
    /// Never.
    Never,
    /// When atime is older than mtime or ctime, or a day old (the default, as on Linux).
    #[default]
    Relative,
    /// On every read.
    Always,
}

/// Counters of the data path (RAM only; read through the root's virtual xattr
/// `trusted.pfnfs.io_stats` by `pfnfs stat MOUNTPOINT`).
#[derive(Debug, Default)]
pub struct IoStats {
    /// Reads answered with one slice of pool memory (no copy in the daemon).
    pub single_extent_reads: AtomicU64,
    /// Reads gathered from several extents or holes into a buffer.
    pub gathered_reads: AtomicU64,
    /// Writes that changed no mapping or size (nothing journaled).
    pub overwrites: AtomicU64,
    /// Writes that allocated, converted or extended (one log record each).
    pub journaled_writes: AtomicU64,
}

impl IoStats {
    /// The counters as JSON.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"single_extent_reads\":{},\"gathered_reads\":{},\"overwrites\":{},\"journaled_writes\":{}}}",
            self.single_extent_reads.load(Ordering::Relaxed),
            self.gathered_reads.load(Ordering::Relaxed),
            self.overwrites.load(Ordering::Relaxed),
            self.journaled_writes.load(Ordering::Relaxed)
        )
    }
}

/// The mounted filesystem.
#[derive(Debug)]
pub struct Volume {
    /// Data-path counters.
    pub stats: IoStats,
    pool: Arc<Pool>,
    alloc: ExtentAllocator,
    inodes: DashMap<u64, Arc<InodeCell>>,
    journal: Journal,
    next_ino: AtomicU64,
    gate: RwLock<()>,
    ns: Mutex<()>,
    checkpoint_ranges: Mutex<Vec<PfnRange>>,
    /// True when the kernel's writeback cache owns regular files' mtime/ctime (buffered
    /// mode): data operations then keep the times and the kernel sends them with setattr.
    kernel_file_times: std::sync::atomic::AtomicBool,
    /// How reads move atime.
    atime: std::sync::atomic::AtomicU8,
    /// 64 + the frames of the current checkpoint: the base of [`Volume::metadata_reserve`],
    /// room for the next checkpoint (written before the current one is released), so a full
    /// pool can still checkpoint and unmount cleanly.
    reserve_frames: AtomicU64,
    /// Unlinked inodes the kernel still holds (reclaimed at FORGET or last release).
    unlinked: unlinked::UnlinkedInodes,
    read_only: bool,
}

/// Smallest metadata reserve, in frames.
const RESERVE_FRAMES_MIN: u64 = 64;
/// Free frames (256 KiB) file data leaves to metadata growth beyond the reserve.
const METADATA_HEADROOM_FRAMES: u64 = 64;
/// Upper bound of a record's bytes besides its names and values (header, inode numbers,
/// attributes), for [`Volume::ensure_metadata_room`].
const INODE_RECORD_BYTES: u64 = 256;

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(invalid("invalid name"));
    }
    if name.len() > NAME_MAX {
        return Err(name_too_long(format!(
            "name of {} bytes exceeds {NAME_MAX}",
            name.len()
        )));
    }
    Ok(())
}

/// Sorts ranges and merges touching ones (they must not overlap).
fn coalesce(mut ranges: Vec<PfnRange>) -> Vec<PfnRange> {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<PfnRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.end() == r.start => last.len += r.len,
            _ => out.push(r),
        }
    }
    out
}

fn new_cell(inode: Inode) -> Arc<InodeCell> {
    Arc::new(InodeCell {
        inode: Arc::new(RwLock::new(inode)),
        lookups: AtomicU64::new(0),
        opens: AtomicU32::new(0),
    })
}

impl Volume {
    // -----------------------------------------------------------------------------------
    // Loading, checkpointing, unmounting

    /// Loads the filesystem from `pool`: newest checkpoint, then the log. Read-write pools
    /// then reclaim orphaned inodes and write a fresh checkpoint so recovery is done once.
    pub fn load(pool: Arc<Pool>) -> FsResult<Volume> {
        let read_only = pool.is_read_only();
        let sb = pool.superblock();
        let data = pool.data_region();
        let generation = sb.checkpoint.log_generation;
        let (alloc, inodes, next_ino, ranges, fresh) = if sb.checkpoint.len_bytes == 0 {
            let alloc = ExtentAllocator::new_empty(data);
            let root = Inode::new_root(Time::now());
            let inodes = DashMap::new();
            inodes.insert(ROOT_INO, new_cell(root));
            (alloc, inodes, ROOT_INO + 1, Vec::new(), true)
        } else {
            Self::load_checkpoint(&pool)?
        };
        let (ops, log_end, next_seq) = read_log(&pool, generation)?;
        let journal = Journal::new(&pool, generation, log_end, next_seq);
        // The reserve as `checkpoint` sets it, from the checkpoint just loaded.
        let ckpt_frames: u64 = ranges.iter().map(|r| r.len).sum();
        let vol = Volume {
            pool,
            alloc,
            inodes,
            journal,
            next_ino: AtomicU64::new(next_ino),
            gate: RwLock::new(()),
            ns: Mutex::new(()),
            reserve_frames: AtomicU64::new(RESERVE_FRAMES_MIN.saturating_add(ckpt_frames)),
            kernel_file_times: std::sync::atomic::AtomicBool::new(false),
            atime: std::sync::atomic::AtomicU8::new(AtimePolicy::Relative as u8),
            stats: IoStats::default(),
            checkpoint_ranges: Mutex::new(ranges),
            unlinked: Default::default(),
            read_only,
        };
        let replayed = ops.len();
        for (i, op) in ops.iter().enumerate() {
            vol.replay(op).map_err(|e| {
                corrupt(format!(
                    "{}: log record {i} cannot be replayed: {}",
                    vol.pool_name(),
                    e.context
                ))
            })?;
        }
        if replayed > 0 {
            tracing::info!(records = replayed, "replayed metadata log");
        }
        if !read_only {
            if sb.mounted {
                // Not cleanly unmounted: an extending write whose record was lost may have
                // left bytes past EOF in a file's last frame. Zero them, so that a later
                // extension reads zeros there (idempotent; nothing references those bytes).
                vol.zero_tails_past_eof()?;
            }
            let orphans: Vec<u64> = vol
                .inodes
                .iter()
                .filter(|c| c.value().inode.read().attr.nlink == 0)
                .map(|c| *c.key())
                .collect();
            for ino in &orphans {
                vol.reclaim_now(*ino)?;
            }
            if fresh || replayed > 0 || !orphans.is_empty() {
                match vol.checkpoint() {
                    // Free space too fragmented for a checkpoint (see ensure_log_room): the
                    // state is the old checkpoint plus the replayed log, which keeps being
                    // appended to, so the pool can be mounted and files deleted. Not with
                    // orphans, whose frames were freed above without a record.
                    Err(e) if e.kind == ErrorKind::NoSpace && orphans.is_empty() && !fresh => {
                        tracing::warn!(
                            "{}: mounted without a new checkpoint: {e}",
                            vol.pool_name()
                        );
                    }
                    other => other?,
                }
            }
            let mut sb = vol.pool.superblock();
            sb.mounted = true;
            vol.pool.commit_superblock(sb)?;
        }
        Ok(vol)
    }

    fn pool_name(&self) -> String {
        self.pool.name().display().to_string()
    }

    #[allow(clippy::type_complexity)]
    fn load_checkpoint(
        pool: &Pool,
    ) -> FsResult<(
        ExtentAllocator,
        DashMap<u64, Arc<InodeCell>>,
        u64,
        Vec<PfnRange>,
        bool,
    )> {
        let name = pool.name().display().to_string();
        let sb = pool.superblock();
        let data = pool.data_region();
        let head = PfnRange::new(Pfn(sb.checkpoint.head_pfn), 1)
            .filter(|r| data.covers(r))
            .ok_or_else(|| {
                corrupt(format!(
                    "{name}: checkpoint pointer lies outside the data region"
                ))
            })?;
        let header = CheckpointHeader::decode(pool.frames(head)?, data)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        if header.generation != sb.checkpoint.log_generation
            || header.body_len != sb.checkpoint.len_bytes
            || header.body_crc != sb.checkpoint.crc
            || header.ranges[0].start != head.start
        {
            return Err(corrupt(format!(
                "{name}: checkpoint header does not match the superblock"
            )));
        }
        let mut body = Vec::with_capacity(header.body_len.min(1 << 30) as usize);
        for (offset, len) in header.body_spans() {
            body.extend_from_slice(pool.read(offset, len as usize)?);
        }
        if crc32c::crc32c(&body) != header.body_crc {
            return Err(corrupt(format!("{name}: checkpoint checksum mismatch")));
        }
        let image: CheckpointImage = postcard::from_bytes(&body)
            .map_err(|e| corrupt(format!("{name}: checkpoint does not decode: {e}")))?;
        let alloc = ExtentAllocator::decode_free_set(data, &image.free_set)
            .map_err(|e| corrupt(format!("{name}: checkpoint free set: {e}")))?;
        let inodes = DashMap::new();
        // Every frame the checkpoint or a file uses, to check against the free set below.
        let mut used: Vec<PfnRange> = header.ranges.clone();
        for img in image.inodes {
            let body = match img.body {
                BodyImage::File(extents) => {
                    // from_extents refuses overlaps in the file; a pool frame mapped twice
                    // (which writes through one offset would show at the other) and frames
                    // outside the data region (which recovery would write to) are caught here.
                    let map = ExtentMap::from_extents(extents)
                        .map_err(|e| e.to_string())
                        .and_then(|m| m.check_invariants().map(|()| m))
                        .and_then(|m| {
                            let outside = m.iter().find(|e| !data.covers(&e.pfns));
                            match outside {
                                Some(e) => Err(format!(
                                    "extent at file frame {} maps frames {} outside the data \
                                     region {data}",
                                    e.file_frame, e.pfns
                                )),
                                None => Ok(m),
                            }
                        })
                        .map_err(|e| corrupt(format!("{name}: inode {}: {e}", img.ino)))?;
                    used.extend(map.iter().map(|e| e.pfns));
                    Body::File(map)
                }
                BodyImage::Dir {
                    parent,
                    next_cookie,
                    entries,
                } => Body::Dir(
                    Directory::from_parts(parent, next_cookie, entries)
                        .map_err(|e| corrupt(format!("{name}: inode {}: {e}", img.ino)))?,
                ),
                BodyImage::Symlink(t) => Body::Symlink(t),
                BodyImage::Special => Body::Special,
            };
            let inode = Inode {
                ino: img.ino,
                attr: img.attr,
                xattrs: img.xattrs.into_iter().collect(),
                body,
            };
            if inodes.insert(img.ino, new_cell(inode)).is_some() {
                return Err(corrupt(format!(
                    "{name}: inode {} appears twice in the checkpoint",
                    img.ino
                )));
            }
        }
        if !inodes.contains_key(&ROOT_INO) {
            return Err(corrupt(format!("{name}: checkpoint has no root directory")));
        }
        // A used frame in the free set would be handed out again (and freeing the checkpoint's
        // frames after the next one would fail once that checkpoint is already committed).
        used.sort_unstable_by_key(|r| r.start);
        let free = alloc.free_extents();
        let (mut u, mut f) = (0, 0);
        while u < used.len() && f < free.len() {
            if used[u].overlaps(&free[f]) {
                return Err(corrupt(format!(
                    "{name}: frames {} are in use but in the checkpoint's free set too",
                    used[u]
                )));
            }
            if used[u].end() <= free[f].start {
                u += 1;
            } else {
                f += 1;
            }
        }
        Ok((alloc, inodes, image.next_ino, header.ranges, false))
    }

    /// Writes the whole metadata state as a new checkpoint and starts a new log generation.
    pub fn checkpoint(&self) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        let _gate = self.gate.write();
        let mut images = Vec::with_capacity(self.inodes.len());
        for cell in self.inodes.iter() {
            let inode = cell.value().inode.read();
            let body = match &inode.body {
                Body::File(m) => BodyImage::File(m.iter().collect()),
                Body::Dir(d) => BodyImage::Dir {
                    parent: d.parent,
                    next_cookie: d.next_cookie(),
                    entries: d.iter().map(|(c, e)| (c, e.clone())).collect(),
                },
                Body::Symlink(t) => BodyImage::Symlink(t.clone()),
                Body::Special => BodyImage::Special,
            };
            images.push(InodeImage {
                ino: inode.ino,
                attr: inode.attr.clone(),
                xattrs: inode
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body,
            });
        }
        images.sort_by_key(|i| i.ino);
        let mut image = CheckpointImage {
            next_ino: self.next_ino.load(Ordering::Relaxed),
            inodes: images,
            free_set: Vec::new(),
        };
        let base = postcard::to_stdvec(&image)
            .map_err(|e| corrupt(format!("checkpoint encode: {e}")))?
            .len() as u64;
        let mut ckpt = self.checkpoint_ranges.lock();
        let old = ckpt.clone();
        let mut slack = 0u64;
        for _attempt in 0..4 {
            let free_est = 64
                + 16 * (self.alloc.stats().free_extents
                    + old.len() as u64
                    + 2 * CHECKPOINT_RANGES_MAX as u64);
            let want = 1 + (base + free_est + 64 + slack).div_ceil(FRAME_SIZE);
            let ranges = self.alloc.allocate(want, None)?;
            if ranges.len() > CHECKPOINT_RANGES_MAX {
                for r in ranges {
                    let _ = self.alloc.free(r);
                }
                return Err(no_space("pool too fragmented for a checkpoint"));
            }
            let mut free: Vec<PfnRange> = self.alloc.free_extents();
            free.extend(old.iter().copied());
            image.free_set =
                pfnfs_alloc::allocator::image::encode(self.pool.data_region(), &coalesce(free));
            let body = postcard::to_stdvec(&image)
                .map_err(|e| corrupt(format!("checkpoint encode: {e}")))?;
            let capacity = ranges.iter().map(|r| r.len_bytes()).sum::<u64>() - FRAME_SIZE;
            if body.len() as u64 > capacity {
                for r in ranges {
                    let _ = self.alloc.free(r);
                }
                slack += body.len() as u64 - capacity + FRAME_SIZE;
                continue;
            }
            // Never reuse a generation whose records may still be in the log (after a stale
            // superblock was accepted by fsck -y): replay would take them for this one's.
            let generation = self
                .journal
                .generation()
                .max(crate::journal::log_generation(&self.pool)?.unwrap_or(0))
                + 1;
            let header = CheckpointHeader {
                generation,
                body_len: body.len() as u64,
                body_crc: crc32c::crc32c(&body),
                ranges: ranges.clone(),
            };
            let result = self.write_checkpoint(&header, &body);
            if let Err(e) = result {
                for r in ranges {
                    let _ = self.alloc.free(r);
                }
                return Err(e);
            }
            self.journal.reset(generation);
            for r in old {
                self.alloc.free(r)?;
            }
            let frames: u64 = ranges.iter().map(|r| r.len).sum();
            self.reserve_frames
                .store(RESERVE_FRAMES_MIN + frames, Ordering::Relaxed);
            *ckpt = ranges;
            tracing::debug!(bytes = body.len(), generation, "checkpoint written");
            return Ok(());
        }
        Err(corrupt("checkpoint did not fit after several attempts"))
    }

    fn write_checkpoint(&self, header: &CheckpointHeader, body: &[u8]) -> FsResult<()> {
        let head = header.ranges[0].start.byte_offset();
        let hdr = header.encode();
        self.pool.write(head, &hdr)?;
        self.pool.flush(head, hdr.len() as u64)?;
        let mut done = 0usize;
        for (offset, len) in header.body_spans() {
            let piece = &body[done..done + len as usize];
            self.pool.write(offset, piece)?;
            self.pool.flush(offset, len)?;
            done += len as usize;
        }
        self.pool.fence();
        for (offset, len) in std::iter::once((head, hdr.len() as u64)).chain(header.body_spans()) {
            self.pool.persist(offset, len)?;
        }
        let mut sb = self.pool.superblock();
        sb.checkpoint = pfnfs_alloc::CheckpointRef {
            head_pfn: header.ranges[0].start.0,
            len_bytes: header.body_len,
            crc: header.body_crc,
            log_generation: header.generation,
        };
        self.pool.commit_superblock(sb)?;
        Ok(())
    }

    /// Clean unmount: checkpoint, clear the mounted flag, sync the pool.
    pub fn shutdown(&self) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.checkpoint()?;
        let mut sb = self.pool.superblock();
        sb.mounted = false;
        self.pool.commit_superblock(sb)?;
        self.pool.sync(0, self.pool.len_bytes())?;
        Ok(())
    }

    fn maybe_checkpoint(&self) {
        if self.journal.wants_checkpoint()
            && let Err(e) = self.checkpoint()
        {
            tracing::error!("checkpoint failed: {e}");
        }
    }

    /// Before an operation adding about `meta_bytes` of metadata or up to `data_frames` of
    /// file data (outside the gate, like [`Self::maybe_checkpoint`]): if the reserves leave
    /// no room for it but the log holds records, checkpoint now. The reserve counts every
    /// log record as growth until a checkpoint measures the real image, so this is what
    /// makes the room freed by unlinks and removexattrs usable at once on a full pool.
    ///
    /// Before that it waits (briefly, see [`unlinked`]) for inodes unlinked a moment ago whose
    /// FORGET is still on its way: without it, `rm big; touch new` on a full pool could fail.
    fn make_room(&self, meta_bytes: u64, data_frames: u64) {
        if self.read_only {
            return;
        }
        let short = || {
            let free = self.alloc.free_frames();
            let short_of_meta =
                meta_bytes > 0 && free < self.metadata_reserve() + meta_bytes.div_ceil(FRAME_SIZE);
            let short_of_data = data_frames > 0 && free < self.data_reserve() + data_frames;
            short_of_meta || short_of_data
        };
        if !short() {
            return;
        }
        let awaits_forget = |ino: u64| {
            self.inodes
                .get(&ino)
                .is_some_and(|c| c.opens.load(Ordering::Acquire) == 0)
        };
        if self.unlinked.await_reclaims(awaits_forget) && !short() {
            return;
        }
        if self.journal.used_bytes() > 0
            && let Err(e) = self.checkpoint()
        {
            tracing::warn!("checkpoint to make room failed: {e}");
        }
    }

    // -----------------------------------------------------------------------------------
    // Accessors

    /// The pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The allocator.
    pub fn allocator(&self) -> &ExtentAllocator {
        &self.alloc
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Frames held by the current checkpoint.
    pub fn checkpoint_ranges(&self) -> Vec<PfnRange> {
        self.checkpoint_ranges.lock().clone()
    }

    /// Every inode cell (for reports and fsck).
    pub fn cells(&self) -> Vec<Arc<InodeCell>> {
        self.inodes.iter().map(|c| c.value().clone()).collect()
    }

    /// The cell of `ino`.
    pub fn cell(&self, ino: u64) -> FsResult<Arc<InodeCell>> {
        self.inodes
            .get(&ino)
            .map(|c| c.value().clone())
            .ok_or_else(|| not_found(format!("no inode {ino}")))
    }

    fn lock(&self, inos: &[u64]) -> FsResult<Locked> {
        let mut sorted: Vec<u64> = inos.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut map = BTreeMap::new();
        for ino in sorted {
            let cell = self.cell(ino)?;
            map.insert(ino, cell.inode.write_arc());
        }
        Ok(Locked(map))
    }

    /// Sets how reads move atime.
    pub fn set_atime_policy(&self, policy: AtimePolicy) {
        self.atime.store(policy as u8, Ordering::Relaxed);
    }

    /// How reads move atime.
    pub fn atime_policy(&self) -> AtimePolicy {
        match self.atime.load(Ordering::Relaxed) {
            x if x == AtimePolicy::Never as u8 => AtimePolicy::Never,
            x if x == AtimePolicy::Always as u8 => AtimePolicy::Always,
            _ => AtimePolicy::Relative,
        }
    }

    /// Says whether the kernel's writeback cache owns regular files' mtime and ctime.
    pub fn set_kernel_file_times(&self, on: bool) {
        self.kernel_file_times.store(on, Ordering::Relaxed);
    }

    /// The times a data operation leaves on a file with attributes `attr`.
    fn data_times(&self, attr: &Attr) -> DataTimes {
        if self.kernel_file_times.load(Ordering::Relaxed) {
            DataTimes {
                mtime: attr.mtime,
                ctime: attr.ctime,
            }
        } else {
            let now = Time::now();
            DataTimes {
                mtime: now,
                ctime: now,
            }
        }
    }

    /// Free frames new metadata may not take. The next checkpoint is at most the current one
    /// (c frames) plus what the log records since it add to the image (no record adds more
    /// than its own size: L frames), and is written before the current one (still held, not
    /// free) is released. So it fits while free >= 64 + c + L; for the one after it to fit
    /// too (at unmount, say) with no growth in between, free >= 64 + c' must hold once it is
    /// written (c' <= c + L), which free >= 64 + c + 2L before it guarantees. 64 frames of
    /// margin cover the checkpoint's header and estimate. `reserve_frames` is 64 + c.
    pub(crate) fn metadata_reserve(&self) -> u64 {
        let log_frames = self.journal.used_bytes().div_ceil(FRAME_SIZE);
        self.reserve_frames
            .load(Ordering::Relaxed)
            .saturating_add(2 * log_frames)
    }

    /// Free frames file data may not take: the metadata reserve plus headroom, so that names
    /// and attributes can still be added to a pool full of data.
    pub(crate) fn data_reserve(&self) -> u64 {
        self.metadata_reserve()
            .saturating_add(METADATA_HEADROOM_FRAMES)
    }

    /// ENOSPC unless an operation adding about `bytes` of metadata (a name, an xattr) leaves
    /// room for the next checkpoint. Without this check a pool whose metadata outgrew its
    /// free space could not checkpoint, filled its log and then refused even unlink.
    pub(crate) fn ensure_metadata_room(&self, bytes: u64) -> FsResult<()> {
        self.ensure_log_room()?;
        let need = self
            .metadata_reserve()
            .saturating_add(bytes.div_ceil(FRAME_SIZE));
        let free = self.alloc.free_frames();
        if free < need {
            return Err(no_space(format!(
                "no room for more metadata: the next checkpoint needs up to {need} frames, \
                 {free} free"
            )));
        }
        Ok(())
    }

    /// ENOSPC once the log is three quarters full. Checkpoints start at half; the log only
    /// gets here when they fail (a pool whose free space is too fragmented for one), and
    /// then the last quarter is kept for what frees space (unlink, truncate, punch), so
    /// that deleting files lets the next checkpoint succeed instead of the log filling up
    /// and every operation, unlink included, failing.
    fn ensure_log_room(&self) -> FsResult<()> {
        if self.journal.used_bytes() > self.journal.capacity_bytes() / 4 * 3 {
            return Err(no_space(
                "no checkpoint could be written and the metadata log is nearly full: \
                 delete files to make room",
            ));
        }
        Ok(())
    }

    /// ENOSPC unless the holes of `frames` logical frames from `first` can be filled without
    /// eating into the metadata reserve.
    fn ensure_space(&self, map: &ExtentMap, first: u64, frames: u64) -> FsResult<()> {
        let holes: u64 = map
            .mappings_iter(first, frames)
            .map(|m| match m {
                pfnfs_extent::Mapping::Hole { frames, .. } => frames,
                _ => 0,
            })
            .sum();
        if holes == 0 {
            return Ok(());
        }
        self.ensure_log_room()?;
        let free = self.alloc.free_frames();
        let reserve = self.data_reserve();
        if free < holes.saturating_add(reserve) {
            return Err(no_space(format!(
                "pool full: {holes} frames needed, {} available",
                free.saturating_sub(reserve)
            )));
        }
        Ok(())
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.read_only {
            Err(read_only("read-only mount"))
        } else {
            Ok(())
        }
    }

    // -----------------------------------------------------------------------------------
    // Apply: the one place state changes

    fn replay(&self, op: &Op) -> FsResult<()> {
        let inos = match self.touched(op) {
            Ok(i) => i,
            Err(e) if Self::tolerates_missing(op) => {
                tracing::debug!("replay skips {op:?}: {}", e.context);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut locked = match self.lock(&inos) {
            Ok(l) => l,
            Err(_) if Self::tolerates_missing(op) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.apply(op, &mut locked, true)
    }

    /// Ops on one inode whose inode may have been reclaimed earlier in replay than at run
    /// time (an unlinked file still open when it was written to).
    fn tolerates_missing(op: &Op) -> bool {
        !matches!(
            op,
            Op::Create { .. }
                | Op::CreateWithXattrs { .. }
                | Op::Link { .. }
                | Op::Unlink { .. }
                | Op::Rename { .. }
        )
    }

    /// Inodes an op touches (namespace ops resolve names; call under `ns`).
    fn touched(&self, op: &Op) -> FsResult<Vec<u64>> {
        Ok(match op {
            Op::Create { parent, .. } | Op::CreateWithXattrs { parent, .. } => vec![*parent],
            Op::Link { parent, ino, .. } => vec![*parent, *ino],
            Op::Unlink { parent, name, .. } => vec![*parent, self.child(*parent, name)?],
            Op::Rename {
                parent,
                name,
                new_parent,
                new_name,
                ..
            } => {
                let mut v = vec![*parent, *new_parent, self.child(*parent, name)?];
                if let Ok(t) = self.child(*new_parent, new_name) {
                    v.push(t);
                }
                v
            }
            Op::SetAttr { ino, .. }
            | Op::Truncate { ino, .. }
            | Op::Write { ino, .. }
            | Op::Allocate { ino, .. }
            | Op::Punch { ino, .. }
            | Op::ZeroRange { ino, .. }
            | Op::SetXattr { ino, .. }
            | Op::RemoveXattr { ino, .. }
            | Op::SetAttrXattrs { ino, .. }
            | Op::Reclaim { ino } => {
                if !self.inodes.contains_key(ino) {
                    return Err(not_found(format!("no inode {ino}")));
                }
                vec![*ino]
            }
        })
    }

    fn child(&self, parent: u64, name: &[u8]) -> FsResult<u64> {
        let cell = self.cell(parent)?;
        let inode = cell.inode.read();
        let dir = inode
            .dir()
            .ok_or_else(|| not_directory("not a directory"))?;
        dir.get(name)
            .map(|e| e.ino)
            .ok_or_else(|| not_found("no such entry"))
    }

    fn is_referenced(&self, ino: u64) -> bool {
        self.inodes
            .get(&ino)
            .map(|c| c.lookups.load(Ordering::Acquire) > 0 || c.opens.load(Ordering::Acquire) > 0)
            .unwrap_or(false)
    }

    /// Applies `op` to the locked inodes. At run time the op was validated and its record is
    /// durable; at replay (`replay == true`) mapping changes of data ops are redone too.
    fn apply(&self, op: &Op, locked: &mut Locked, replay: bool) -> FsResult<()> {
        match op {
            Op::Create {
                parent,
                name,
                ino,
                attr,
                body,
            } => self.apply_create(locked, *parent, name, *ino, attr, body, &[])?,
            Op::CreateWithXattrs {
                parent,
                name,
                ino,
                attr,
                body,
                xattrs,
            } => self.apply_create(locked, *parent, name, *ino, attr, body, xattrs)?,
            Op::Link {
                parent,
                name,
                ino,
                time,
            } => {
                let child = locked.get(*ino)?;
                child.attr.nlink = child.attr.nlink.saturating_add(1);
                child.attr.ctime = *time;
                let kind = child.attr.kind();
                let p = locked.get(*parent)?;
                let dir = p
                    .dir_mut()
                    .ok_or_else(|| not_directory("parent is not a directory"))?;
                if dir.get(name).is_some() {
                    return Err(exists("entry exists"));
                }
                dir.insert(DirEntry {
                    name: name.clone(),
                    ino: *ino,
                    kind,
                });
                p.attr.mtime = *time;
                p.attr.ctime = *time;
            }
            Op::Unlink { parent, name, time } => {
                let p = locked.get(*parent)?;
                let dir = p
                    .dir_mut()
                    .ok_or_else(|| not_directory("parent is not a directory"))?;
                let entry = dir.remove(name).ok_or_else(|| not_found("no such entry"))?;
                p.attr.mtime = *time;
                p.attr.ctime = *time;
                if entry.kind == Kind::Dir {
                    p.attr.nlink = p.attr.nlink.saturating_sub(1);
                }
                let child = locked.get(entry.ino)?;
                if entry.kind == Kind::Dir {
                    child.attr.nlink = 0;
                } else {
                    child.attr.nlink = child.attr.nlink.saturating_sub(1);
                }
                child.attr.ctime = *time;
                if child.attr.nlink == 0 {
                    if replay || !self.is_referenced(entry.ino) {
                        self.reclaim_locked(child)?;
                    } else {
                        self.unlinked.touch(entry.ino);
                    }
                }
            }
            Op::Rename {
                parent,
                name,
                new_parent,
                new_name,
                exchange,
                time,
            } => {
                self.apply_rename(
                    locked,
                    *parent,
                    name,
                    *new_parent,
                    new_name,
                    *exchange,
                    *time,
                    replay,
                )?;
            }
            Op::SetAttr {
                ino,
                mode,
                uid,
                gid,
                atime,
                mtime,
                ctime,
            } => {
                let i = locked.get(*ino)?;
                set_attr_fields(&mut i.attr, *mode, *uid, *gid, *atime, *mtime, *ctime);
            }
            Op::Truncate {
                ino,
                size,
                time,
                mode,
                cow,
            } => {
                let i = locked.get(*ino)?;
                if let Body::File(map) = &mut i.body {
                    for r in map.truncate(size.div_ceil(FRAME_SIZE)) {
                        self.alloc.free(r)?;
                    }
                    self.apply_cow(map, cow, replay)?;
                }
                i.attr.size = *size;
                i.attr.mtime = *time;
                i.attr.ctime = *time;
                i.attr.mode = *mode;
            }
            Op::Write {
                ino,
                allocated,
                converted,
                size,
                times,
                mode,
            } => {
                let i = locked.get(*ino)?;
                if replay {
                    let Body::File(map) = &mut i.body else {
                        return Err(corrupt("write to a non-file"));
                    };
                    self.replay_insert(map, allocated)?;
                    for c in converted {
                        map.mark_written(c.file_frame, c.pfns.len);
                    }
                }
                i.attr.size = *size;
                i.attr.mtime = times.mtime;
                i.attr.ctime = times.ctime;
                i.attr.mode = *mode;
            }
            Op::Allocate {
                ino,
                extents,
                size,
                times,
                mode,
            } => {
                let i = locked.get(*ino)?;
                if replay {
                    let Body::File(map) = &mut i.body else {
                        return Err(corrupt("fallocate of a non-file"));
                    };
                    self.replay_insert(map, extents)?;
                }
                i.attr.size = *size;
                i.attr.mtime = times.mtime;
                i.attr.ctime = times.ctime;
                i.attr.mode = *mode;
            }
            Op::Punch {
                ino,
                offset,
                len,
                times,
                mode,
                cow,
            } => {
                let i = locked.get(*ino)?;
                if let Body::File(map) = &mut i.body {
                    let end = offset.saturating_add(*len);
                    let first_full = offset.saturating_add(FRAME_SIZE - 1) / FRAME_SIZE;
                    let last_full = end / FRAME_SIZE;
                    if first_full < last_full {
                        for r in map.punch(first_full, last_full - first_full) {
                            self.alloc.free(r)?;
                        }
                    }
                    self.apply_cow(map, cow, replay)?;
                }
                i.attr.mtime = times.mtime;
                i.attr.ctime = times.ctime;
                i.attr.mode = *mode;
            }
            Op::ZeroRange {
                ino,
                offset,
                len,
                size,
                times,
                mode,
                cow,
                extents,
            } => {
                let i = locked.get(*ino)?;
                if let Body::File(map) = &mut i.body {
                    if replay {
                        self.replay_insert(map, extents)?;
                    }
                    let end = offset.saturating_add(*len);
                    let first_full = offset.saturating_add(FRAME_SIZE - 1) / FRAME_SIZE;
                    let last_full = end / FRAME_SIZE;
                    if first_full < last_full {
                        map.mark_unwritten(first_full, last_full - first_full);
                    }
                    self.apply_cow(map, cow, replay)?;
                }
                i.attr.size = *size;
                i.attr.mtime = times.mtime;
                i.attr.ctime = times.ctime;
                i.attr.mode = *mode;
            }
            Op::SetXattr {
                ino,
                name,
                value,
                time,
            } => {
                let i = locked.get(*ino)?;
                i.xattrs.insert(name.clone(), value.clone());
                i.attr.ctime = *time;
            }
            Op::RemoveXattr { ino, name, time } => {
                let i = locked.get(*ino)?;
                i.xattrs.remove(name);
                i.attr.ctime = *time;
            }
            Op::Reclaim { ino } => {
                let i = locked.get(*ino)?;
                if i.attr.nlink == 0 {
                    self.reclaim_locked(i)?;
                }
            }
            Op::SetAttrXattrs { ino, .. } => apply_set_attr_xattrs(locked.get(*ino)?, op),
        }
        Ok(())
    }

    /// Applies a `Create` (with the inode's first extended attributes, if any).
    #[allow(clippy::too_many_arguments)]
    fn apply_create(
        &self,
        locked: &mut Locked,
        parent: u64,
        name: &[u8],
        ino: u64,
        attr: &Attr,
        body: &NewBody,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> FsResult<()> {
        let kind = attr.kind();
        let inode = Inode {
            ino,
            attr: attr.clone(),
            xattrs: xattrs.iter().cloned().collect(),
            body: match body {
                NewBody::File => Body::File(ExtentMap::new()),
                NewBody::Dir => Body::Dir(Directory::new(parent)),
                NewBody::Symlink(t) => Body::Symlink(t.clone()),
                NewBody::Special => Body::Special,
            },
        };
        let p = locked.get(parent)?;
        let dir = p
            .dir_mut()
            .ok_or_else(|| not_directory("parent is not a directory"))?;
        if dir.get(name).is_some() {
            return Err(exists("entry exists"));
        }
        dir.insert(DirEntry {
            name: name.to_vec(),
            ino,
            kind,
        });
        p.attr.mtime = attr.ctime;
        p.attr.ctime = attr.ctime;
        if kind == Kind::Dir {
            p.attr.nlink = p.attr.nlink.saturating_add(1);
        }
        self.inodes.insert(ino, new_cell(inode));
        self.next_ino.fetch_max(ino + 1, Ordering::AcqRel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_rename(
        &self,
        locked: &mut Locked,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        exchange: bool,
        time: Time,
        replay: bool,
    ) -> FsResult<()> {
        let src = locked
            .get(parent)?
            .dir()
            .and_then(|d| d.get(name))
            .cloned()
            .ok_or_else(|| not_found("no source"))?;
        let dst = locked
            .get(new_parent)?
            .dir()
            .and_then(|d| d.get(new_name))
            .cloned();
        let src_dir = src.kind == Kind::Dir;
        if exchange {
            let dst = dst.ok_or_else(|| not_found("no target to exchange with"))?;
            let cross = parent != new_parent;
            Self::exchange_side(locked, parent, name, &dst, &src, cross, time)?;
            Self::exchange_side(locked, new_parent, new_name, &src, &dst, cross, time)?;
            return Ok(());
        }
        if let Some(dst) = &dst {
            let t = locked.get(dst.ino)?;
            if dst.kind == Kind::Dir {
                t.attr.nlink = 0;
            } else {
                t.attr.nlink = t.attr.nlink.saturating_sub(1);
            }
            t.attr.ctime = time;
            if t.attr.nlink == 0 {
                if replay || !self.is_referenced(dst.ino) {
                    self.reclaim_locked(t)?;
                } else {
                    self.unlinked.touch(dst.ino);
                }
            }
            if dst.kind == Kind::Dir {
                let np = locked.get(new_parent)?;
                np.attr.nlink = np.attr.nlink.saturating_sub(1);
            }
        }
        if parent == new_parent {
            // Within one directory the entry keeps its readdir position.
            let p = locked.get(parent)?;
            let d = p
                .dir_mut()
                .ok_or_else(|| not_directory("not a directory"))?;
            if dst.is_some() {
                d.remove(new_name);
            }
            d.rename_in_place(name, new_name);
            p.attr.mtime = time;
            p.attr.ctime = time;
        } else {
            {
                let p = locked.get(parent)?;
                p.dir_mut()
                    .ok_or_else(|| not_directory("not a directory"))?
                    .remove(name);
                p.attr.mtime = time;
                p.attr.ctime = time;
                if src_dir {
                    p.attr.nlink = p.attr.nlink.saturating_sub(1);
                }
            }
            {
                let np = locked.get(new_parent)?;
                let d = np
                    .dir_mut()
                    .ok_or_else(|| not_directory("not a directory"))?;
                if d.replace(new_name, src.ino, src.kind).is_none() {
                    d.insert(DirEntry {
                        name: new_name.to_vec(),
                        ino: src.ino,
                        kind: src.kind,
                    });
                }
                np.attr.mtime = time;
                np.attr.ctime = time;
                if src_dir {
                    np.attr.nlink = np.attr.nlink.saturating_add(1);
                }
            }
        }
        let s = locked.get(src.ino)?;
        s.attr.ctime = time;
        if let Some(d) = s.dir_mut() {
            d.parent = new_parent;
        }
        Ok(())
    }

    /// One side of RENAME_EXCHANGE: `name` in directory `dir` names `incoming` instead of
    /// `outgoing`; across directories a subdirectory's `..` link moves with it.
    fn exchange_side(
        locked: &mut Locked,
        dir: u64,
        name: &[u8],
        incoming: &DirEntry,
        outgoing: &DirEntry,
        cross: bool,
        time: Time,
    ) -> FsResult<()> {
        let d = locked.get(dir)?;
        d.dir_mut()
            .ok_or_else(|| not_directory("not a directory"))?
            .replace(name, incoming.ino, incoming.kind);
        d.attr.mtime = time;
        d.attr.ctime = time;
        if cross {
            d.attr.nlink = d
                .attr
                .nlink
                .saturating_add((incoming.kind == Kind::Dir) as u32)
                .saturating_sub((outgoing.kind == Kind::Dir) as u32);
        }
        let moved = locked.get(incoming.ino)?;
        moved.attr.ctime = time;
        if let Some(md) = moved.dir_mut() {
            md.parent = dir;
        }
        Ok(())
    }

    /// Zeroes, in every file's last frame, the bytes past the file's size (recovery).
    fn zero_tails_past_eof(&self) -> FsResult<()> {
        for cell in self.cells() {
            let inode = cell.inode.read();
            let Body::File(map) = &inode.body else {
                continue;
            };
            let size = inode.attr.size;
            let tail = size % FRAME_SIZE;
            if tail == 0 {
                continue;
            }
            let Some(e) = map.lookup(size / FRAME_SIZE) else {
                continue;
            };
            if e.unwritten {
                continue;
            }
            let pfn = e.pfns.start.0 + (size / FRAME_SIZE - e.file_frame);
            let at = pfn * FRAME_SIZE + tail;
            self.pool.zero(at, FRAME_SIZE - tail)?;
            self.pool.flush(at, FRAME_SIZE - tail)?;
        }
        self.pool.fence();
        Ok(())
    }

    /// Replay of extents a logged op allocated: takes their frames out of the free set and
    /// maps them.
    fn replay_insert(&self, map: &mut ExtentMap, extents: &[Extent]) -> FsResult<()> {
        for e in extents {
            self.alloc.reserve(e.pfns)?;
            map.insert(*e)?;
        }
        Ok(())
    }

    /// Installs copy-on-write frames: each replaces the mapping of its logical frame (the
    /// old frame is freed). At run time the new frames are already allocated; replay takes
    /// them out of the free set.
    fn apply_cow(&self, map: &mut ExtentMap, cow: &[Extent], replay: bool) -> FsResult<()> {
        for e in cow {
            for r in map.punch(e.file_frame, e.pfns.len) {
                self.alloc.free(r)?;
            }
            if replay {
                self.alloc.reserve(e.pfns)?;
            }
            map.insert(*e)?;
        }
        Ok(())
    }

    /// Copy-on-write of one logical frame whose bytes `[from, to)` (offsets within the
    /// frame) must read as zeros: a new frame gets the old contents with that range zeroed
    /// and is persisted. None if the frame is a hole or unwritten (it reads as zeros
    /// already). The caller journals the returned extent; until then nothing references it.
    pub(crate) fn cow_frame(
        &self,
        map: &ExtentMap,
        file_frame: u64,
        from: usize,
        to: usize,
    ) -> FsResult<Option<Extent>> {
        let Some(old) = map.lookup(file_frame) else {
            return Ok(None);
        };
        if old.unwritten {
            return Ok(None);
        }
        let old_pfn = Pfn(old.pfns.start.0 + (file_frame - old.file_frame));
        let new = self.alloc.allocate(1, old_pfn.checked_add(1))?;
        let Some(range) = new.first().copied().filter(|_| new.len() == 1) else {
            for r in new {
                let _ = self.alloc.free(r);
            }
            return Err(corrupt("allocator returned a split single frame"));
        };
        let mut frame = [0u8; FRAME_SIZE as usize];
        let src = self.pool.frames(PfnRange {
            start: old_pfn,
            len: 1,
        })?;
        frame.copy_from_slice(src);
        let n = frame.len();
        frame[from.min(n)..to.min(n).max(from.min(n))].fill(0);
        let at = range.start.byte_offset();
        if let Err(e) = self.pool.write_flushed(at, &frame) {
            let _ = self.alloc.free(range);
            return Err(e.into());
        }
        self.pool.fence();
        Ok(Some(Extent {
            file_frame,
            pfns: range,
            unwritten: false,
        }))
    }

    /// Releases an inode without names: frees its frames and drops it from the table.
    fn reclaim_locked(&self, inode: &mut Inode) -> FsResult<()> {
        if let Body::File(map) = &mut inode.body {
            for e in map.iter().collect::<Vec<_>>() {
                self.alloc.free(e.pfns)?;
            }
            *map = ExtentMap::new();
        }
        self.inodes.remove(&inode.ino);
        self.unlinked.reclaimed(inode.ino);
        Ok(())
    }

    fn reclaim_now(&self, ino: u64) -> FsResult<()> {
        let mut locked = self.lock(&[ino])?;
        let i = locked.get(ino)?;
        self.reclaim_locked(i)
    }

    /// Logs and applies `op` on already-locked inodes.
    fn commit(&self, op: Op, locked: &mut Locked) -> FsResult<()> {
        self.journal.append(&self.pool, &op)?;
        self.apply(&op, locked, false)
    }

    // ---- fsck support ----
    // Used only by `crate::fsck`, which decodes a damaged pool itself (tolerating what `load`
    // refuses), replays its log record by record, checks the result and installs a repaired
    // state. Nothing here runs on a mounted volume.

    /// A volume from parts fsck decoded. Read-only iff the pool is; writes nothing.
    pub(crate) fn fsck_assemble(
        pool: Arc<Pool>,
        alloc: ExtentAllocator,
        inodes: Vec<Inode>,
        next_ino: u64,
        checkpoint_ranges: Vec<PfnRange>,
        journal: Journal,
    ) -> Volume {
        let table = DashMap::new();
        for inode in inodes {
            table.insert(inode.ino, new_cell(inode));
        }
        Volume {
            read_only: pool.is_read_only(),
            pool,
            alloc,
            inodes: table,
            journal,
            next_ino: AtomicU64::new(next_ino),
            gate: RwLock::new(()),
            ns: Mutex::new(()),
            checkpoint_ranges: Mutex::new(checkpoint_ranges),
            reserve_frames: AtomicU64::new(RESERVE_FRAMES_MIN),
            unlinked: Default::default(),
            kernel_file_times: std::sync::atomic::AtomicBool::new(false),
            atime: std::sync::atomic::AtomicU8::new(AtimePolicy::Relative as u8),
            stats: IoStats::default(),
        }
    }

    /// Replays one log record as `load` does. If that fails, the inodes the record touches
    /// are put back as they were (the allocator may keep a partial change; fsck compares it
    /// with the references and rebuilds it on repair).
    pub(crate) fn fsck_replay(&self, op: &Op) -> FsResult<()> {
        let saved: Vec<Inode> = self
            .touched(op)
            .unwrap_or_default()
            .iter()
            .filter_map(|ino| self.cell(*ino).ok())
            .map(|cell| cell.inode.read().clone())
            .collect();
        // Replay never stores to the pool (partial frames are copied on write at run time),
        // so it runs the same on a read-only pool.
        let result = self.replay(op);
        if result.is_err() {
            for inode in saved {
                match self.cell(inode.ino) {
                    Ok(cell) => *cell.inode.write() = inode,
                    Err(_) => {
                        self.inodes.insert(inode.ino, new_cell(inode));
                    }
                }
            }
        }
        result
    }

    /// The next inode number `create` would hand out.
    pub(crate) fn fsck_next_ino(&self) -> u64 {
        self.next_ino.load(Ordering::Relaxed)
    }

    /// Replaces the inode table, the allocator and the next inode number with fsck's
    /// repaired state (fsck then writes a checkpoint).
    pub(crate) fn fsck_install(
        &mut self,
        inodes: Vec<Inode>,
        alloc: ExtentAllocator,
        next_ino: u64,
    ) {
        self.inodes.clear();
        for inode in inodes {
            self.inodes.insert(inode.ino, new_cell(inode));
        }
        self.alloc = alloc;
        *self.next_ino.get_mut() = next_ino;
    }
}

mod attr;
mod data;
mod namespace;
mod unlinked;
mod xattr;
pub use data::SeekWhence;

/// The fields a `SetAttr` or `SetAttrXattrs` record sets, in one place for both.
/// Applies an `Op::SetAttrXattrs` to its inode (other ops are ignored): also used for a
/// privilege drop, which holds one inode's lock rather than a [`Locked`] set.
fn apply_set_attr_xattrs(i: &mut Inode, op: &Op) {
    if let Op::SetAttrXattrs {
        mode,
        uid,
        gid,
        atime,
        mtime,
        ctime,
        xattrs,
        ..
    } = op
    {
        set_attr_fields(&mut i.attr, *mode, *uid, *gid, *atime, *mtime, *ctime);
        for (name, value) in xattrs {
            match value {
                Some(v) => i.xattrs.insert(name.clone(), v.clone()),
                None => i.xattrs.remove(name),
            };
        }
    }
}

fn set_attr_fields(
    attr: &mut Attr,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Time,
    mtime: Time,
    ctime: Time,
) {
    attr.mode = mode;
    attr.uid = uid;
    attr.gid = gid;
    attr.atime = atime;
    attr.mtime = mtime;
    attr.ctime = ctime;
}
