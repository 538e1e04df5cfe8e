//! [`Volume`]: a mounted pool's metadata in RAM, the journal that makes it durable, and every
//! filesystem operation, independent of FUSE (the session in `crate::session` calls it; the
//! transports only translate).
//!
//! # Locking (outermost first; never acquire against this order)
//! 1. `gate` (RwLock): every mutation holds it shared; a checkpoint holds it exclusive, so
//!    it sees no half-done operation.
//! 2. `ns` (Mutex): namespace mutations (create, link, unlink, rename) hold it, so the names
//!    they validate cannot change before they are applied.
//! 3. Inode locks ([`InodeCell::inode`], an RwLock per inode), taken in ascending
//!    inode-number order (`Volume::lock`). Reads of file data hold the file's lock shared;
//!    writes hold it exclusive.
//! 4. Leaf locks, each held only for its own short step and never while taking another:
//!    the journal tail (inside `Journal::append`), the allocator's groups (inside the
//!    allocator), the inode table's shards (`DashMap`: looking a cell up clones its `Arc`
//!    and lets go), `tree`, `dirty`, `in_doubt`, and the unlinked-inode table
//!    (`unlinked`; its condvar is waited on only by `make_room`, before the gate, holding
//!    nothing).
//!
//! Nothing else in the daemon is locked while a volume lock is held: the session keeps only
//! atomics, and the transports' own locks (the io_uring threads' handles, the placement
//! watchdog's worker list) are never taken from inside a volume call.
//!
//! # Durability rule
//! Validate, append the [`Op`] (persisted), then apply it in RAM with `Volume::apply`, the
//! same function replay uses. Frames released by an op go back to the allocator only in
//! `apply`, i.e. after the record that stops referencing them is durable. Data written into
//! new frames is persisted before the record that maps them; until that record is durable the
//! new frames are held by a [`pfnfs_alloc::Frames`] guard (not by any map), which gives them
//! back on every early exit (`Volume::journal_owning` commits it once the record landed).
//!
//! # Where things are
//! This file holds the types and the small helpers every part uses (accessors, locking a set
//! of inodes, name checks). The rest, by what a reader looks for:
//! - `load`: mounting (the checkpoint, log replay, recovery and orphans at mount), and the
//!   one checkpoint decoder, which fsck shares.
//! - `commit`: `commit`, checkpoints, shutdown, and the space accounting (reserves, ENOSPC).
//! - `apply`: `Volume::apply` and replay, one function per record kind.
//! - `namespace`, `attr`, `data`, `xattr`: the operations the FUSE adapter calls.
//! - `unlinked`: unlinked inodes the kernel still holds.
//! - `fsck_support`: what fsck needs of a volume (never used on a mounted one).

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
use crate::schema::INLINE_DATA_MAX;

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

/// An inode and its in-RAM reference counts: one per inode, in the volume's inode table.
///
/// Ownership: the table holds an `Arc` of each cell; an operation clones it (`Volume::cell`)
/// and works on the inode through `inode` without holding the table. Dropping a clone never
/// frees the inode: only reclaiming it (`apply` of `Reclaim` or of the `Unlink` that drops the
/// last name of an unreferenced inode) removes the cell from the table.
///
/// Locking: `inode` is rank 3 of the lock order (module doc); a write guard of it is what
/// entitles an operation to change the inode, its extent map and the pool frames the map
/// owns. The counters are atomics changed without the inode lock; reclaiming checks them
/// (`is_referenced`) under the inode's write lock.
#[derive(Debug)]
pub struct InodeCell {
    /// The inode, behind its lock.
    pub inode: Arc<RwLock<Inode>>,
    /// Kernel lookup count (LOOKUP, READDIRPLUS and create add; FORGET takes away).
    pub lookups: AtomicU64,
    /// Open file handles (OPEN and CREATE add; RELEASE takes away).
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

    /// Takes `ino`'s guard out of the set (still held: the lock goes when the guard drops), so
    /// that it can be borrowed while the rest of the set is borrowed mutably.
    fn take(&mut self, ino: u64) -> FsResult<WriteGuard> {
        self.0
            .remove(&ino)
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
    /// 512-byte blocks the inode occupies in the pool (mapped frames, or its inline bytes).
    pub blocks: u64,
}

impl Entry {
    /// The entry for a locked or read inode.
    pub fn of(inode: &Inode) -> Entry {
        let blocks = match &inode.body {
            Body::File(m) => m.mapped_frames() * (FRAME_SIZE / 512),
            // What the bytes take in the tree, so that no tool takes the file for a sparse one.
            Body::Inline(b) => (b.len() as u64).div_ceil(512),
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
    /// Writes to files that keep their bytes inline (one log record each, carrying them).
    pub inline_writes: AtomicU64,
    /// Inline files whose bytes moved into a frame (a write, truncate or fallocate past the
    /// inline limit).
    pub spills: AtomicU64,
}

impl IoStats {
    /// The counters as JSON.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"single_extent_reads\":{},\"gathered_reads\":{},\"overwrites\":{},\"journaled_writes\":{},\"inline_writes\":{},\"spills\":{}}}",
            self.single_extent_reads.load(Ordering::Relaxed),
            self.gathered_reads.load(Ordering::Relaxed),
            self.overwrites.load(Ordering::Relaxed),
            self.journaled_writes.load(Ordering::Relaxed),
            self.inline_writes.load(Ordering::Relaxed),
            self.spills.load(Ordering::Relaxed)
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
    /// The generation of every inode created by this mount: random, drawn when the volume is
    /// assembled. Inode numbers are never reused (the next-inode counter only grows and is
    /// kept above every inode a load finds), so a generation is only a second guard: a pool
    /// rolled back to an older copy of itself hands numbers out again, and a file handle an
    /// NFS server kept for the lost file then names a different generation and resolves to
    /// ESTALE, not to the new file (DESIGN 10, "File handles and NFS export").
    generation: u32,
    gate: RwLock<()>,
    ns: Mutex<()>,
    /// The metadata tree as of the last commit (format 2): the durable state the log's
    /// records apply to; directories read their committed entries through it too.
    view: Arc<cache::TreeView>,
    /// Which cells may be evicted, and when.
    cache: cache::Cache,
    /// Inodes in the filesystem (statfs), kept as they are created and reclaimed.
    inode_count: AtomicU64,
    /// The orphan list as last committed (inodes without names still open then): few.
    orphans: Mutex<std::collections::BTreeSet<u64>>,
    /// What changed since the last commit: written into the tree by the next one.
    dirty: Mutex<store::Dirty>,
    /// Frames in doubt: referenced by a log record whose persist failed, or by a checkpoint
    /// whose superblock commit failed, so a replay may still find them in use; owned by
    /// nothing in RAM. Neither free nor reusable until the next checkpoint, which counts them
    /// free in its image and gives them back once it is committed.
    in_doubt: Mutex<Vec<PfnRange>>,
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

/// A directory's entries could not be read from the metadata tree (damage or I/O).
fn dir_err(why: String) -> FsError {
    corrupt(format!("directory entries: {why}"))
}

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

/// A random inode generation for a mount: nonzero (generation 0 is the kernel's own root
/// inode's) and within 32 bits, the width the kernel keeps (`i_generation`) and puts in a
/// file handle.
fn new_generation() -> u32 {
    rand::random_range(1..=u32::MAX)
}

/// What a volume is built from (mount, fsck, upgrade).
struct Parts {
    pool: Arc<Pool>,
    alloc: ExtentAllocator,
    inodes: DashMap<u64, Arc<InodeCell>>,
    next_ino: u64,
    inode_count: u64,
    orphans: std::collections::BTreeSet<u64>,
    tree: pfnfs_btree::Tree,
    journal: Journal,
    dirty: store::Dirty,
    cache: cache::Cache,
    reserve_frames: u64,
    read_only: bool,
}

impl Volume {
    fn assemble(p: Parts) -> Volume {
        if !p.read_only {
            // Storage is made to exist behind every frame before anything is stored into it,
            // so a full backing store is ENOSPC, not a fault (DESIGN 4, "Room behind the
            // pool"), unless the pool was opened for sparse backing.
            p.alloc.set_backing(p.pool.clone());
        }
        // A frame whose memory failed is never freed into the free set (DESIGN 2, "When
        // pool memory fails").
        p.alloc.set_bad_frames(p.pool.bad_frames().clone());
        Volume {
            view: Arc::new(cache::TreeView {
                pool: p.pool.clone(),
                tree: RwLock::new(p.tree),
            }),
            pool: p.pool,
            alloc: p.alloc,
            inodes: p.inodes,
            journal: p.journal,
            next_ino: AtomicU64::new(p.next_ino),
            generation: new_generation(),
            inode_count: AtomicU64::new(p.inode_count),
            orphans: Mutex::new(p.orphans),
            gate: RwLock::new(()),
            ns: Mutex::new(()),
            cache: p.cache,
            dirty: Mutex::new(p.dirty),
            in_doubt: Mutex::new(Vec::new()),
            reserve_frames: AtomicU64::new(p.reserve_frames),
            kernel_file_times: std::sync::atomic::AtomicBool::new(false),
            atime: std::sync::atomic::AtomicU8::new(AtimePolicy::Relative as u8),
            stats: IoStats::default(),
            unlinked: Default::default(),
            read_only: p.read_only,
        }
    }
}

fn new_cell(inode: Inode) -> Arc<InodeCell> {
    Arc::new(InodeCell {
        inode: Arc::new(RwLock::new(inode)),
        lookups: AtomicU64::new(0),
        opens: AtomicU32::new(0),
    })
}

impl Volume {
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

    /// Frames held by the metadata tree as of the last commit (walks the whole tree: for
    /// fsck, `pfnfs stat` and tests, not for the operations).
    pub fn tree_frames(&self) -> FsResult<Vec<PfnRange>> {
        let tree = self.view.tree.read();
        Ok(tree.frames(&self.pool)?)
    }

    /// The metadata tree as of the last commit.
    pub fn tree(&self) -> pfnfs_btree::Tree {
        self.view.tree.read().clone()
    }

    /// Records that inode `ino` changed (its record, extents, xattrs, or existence): the next
    /// commit writes it.
    fn touch_inode(&self, ino: u64) {
        self.dirty.lock().inodes.insert(ino);
    }

    /// Frames in doubt since a failed persist (a record's or a superblock's): not free, owned
    /// by nothing in RAM, given back by the next checkpoint. Empty unless a persist failed.
    pub fn frames_in_doubt(&self) -> Vec<PfnRange> {
        self.in_doubt.lock().clone()
    }

    /// Every inode cell in RAM (for fsck, which holds every inode; on a mounted volume only
    /// the cached ones).
    pub fn cells(&self) -> Vec<Arc<InodeCell>> {
        self.inodes.iter().map(|c| c.value().clone()).collect()
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
        // Whatever an operation changes in these inodes, the next commit writes them.
        let mut dirty = self.dirty.lock();
        dirty.inodes.extend(map.keys().copied());
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

    fn check_writable(&self) -> FsResult<()> {
        if self.read_only {
            Err(read_only("read-only mount"))
        } else {
            Ok(())
        }
    }

    fn child(&self, parent: u64, name: &[u8]) -> FsResult<u64> {
        let cell = self.cell(parent)?;
        let inode = cell.inode.read();
        let dir = inode
            .dir()
            .ok_or_else(|| not_directory("not a directory"))?;
        dir.get(name)
            .map_err(dir_err)?
            .map(|(_, e)| e.ino)
            .ok_or_else(|| not_found("no such entry"))
    }

    /// True while a file handle holds `ino`. Kernel lookup references do not count: the
    /// kernel names an inode by its number, which never names another inode, so one that lost
    /// its last name is reclaimed once no handle holds it, and a later request for it gets
    /// ENOENT (see `cache`).
    fn is_referenced(&self, ino: u64) -> bool {
        self.inodes
            .get(&ino)
            .map(|c| c.opens.load(Ordering::Acquire) > 0)
            .unwrap_or(false)
    }
}

mod apply;
mod attr;
pub mod cache;
mod commit;
mod data;
mod format1;
mod fsck_support;
mod load;
mod namespace;
pub(crate) mod store;
mod unlinked;
mod xattr;
pub use data::SeekWhence;
pub use format1::{Upgrade, Upgraded, upgrade_pool};
pub(crate) use load::{MetadataDamage, MetadataFault, decode_metadata};
