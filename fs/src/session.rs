//! The session: one typed method per FUSE operation, between a transport and the
//! [`Volume`], holding every rule that is not wire format.
//!
//! pfnfs speaks FUSE two ways (fuser's `/dev/fuse` loop and its own FUSE-over-io_uring
//! queues, `crate::transport`). Both only decode their wire into the arguments of a
//! [`Session`] method and encode its typed answer back; what an operation *means* lives
//! here once: who may make a request (allow_other), permission checks the kernel leaves to
//! the daemon, cache lifetimes (TTLs), how an inode's attributes are presented, the xattr
//! size negotiation, O_TRUNC at open and create, statfs, and which writer a WRITE comes
//! from. And it is the one place where a failure becomes an errno ([`errno`]), logged once.
//!
//! Every method answers [`Answer<T>`]: the typed result or the [`Errno`] for the kernel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::Mode;
use crate::error::{self, ErrorKind, FsError};
use crate::inode::{Kind, ROOT_INO, Time};
use crate::volume::{Caller, Entry, NAME_MAX, SeekWhence, SetAttr, Volume, Writer};

/// How long the kernel may cache attributes and names. Every change goes through this
/// daemon, which answers each one with fresh attributes, so caching is safe.
pub const TTL: Duration = Duration::from_secs(1);

/// Virtual, read-only xattr of the root directory holding the data-path counters as JSON.
pub const IO_STATS_XATTR: &[u8] = b"trusted.pfnfs.io_stats";

/// Bytes of a block as statfs and stat report them.
const BLOCK_BYTES: u32 = 4096;

/// The kernel's `FOPEN_*` bits a reply to OPEN or CREATE may carry.
pub mod fopen {
    /// Bypass the page cache.
    pub const DIRECT_IO: u32 = 1 << 0;
    /// Keep cached pages across opens.
    pub const KEEP_CACHE: u32 = 1 << 1;
    /// Direct writes to one file may run in parallel.
    pub const PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
}

/// The kernel's `FUSE_WRITE_*` flags of a WRITE request.
pub mod write_flags {
    /// Write-back of the page cache (delayed write).
    pub const CACHE: u32 = 1 << 0;
    /// The writer lacks CAP_FSETID: setuid/setgid must go (HANDLE_KILLPRIV_V2).
    pub const KILL_SUIDGID: u32 = 1 << 2;
}

/// The errno a request fails with (positive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

/// What a session method answers.
pub type Answer<T> = Result<T, Errno>;

impl From<FsError> for Errno {
    /// The errno for `e` ([`errno`]); the failure is logged here, once: EIO as an error
    /// (something is wrong with the pool or pfnfs), the rest for debugging.
    fn from(e: FsError) -> Errno {
        let n = errno(&e);
        if n == libc::EIO {
            tracing::error!("{}", e.context);
        } else {
            tracing::debug!("{}", e.context);
        }
        Errno(n)
    }
}

/// The errno the kernel sees for `e`: the only place a kind of failure is given its errno.
pub fn errno(e: &FsError) -> i32 {
    match e.kind {
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::Exists => libc::EEXIST,
        ErrorKind::NotDirectory => libc::ENOTDIR,
        ErrorKind::IsDirectory => libc::EISDIR,
        ErrorKind::NotEmpty => libc::ENOTEMPTY,
        ErrorKind::Invalid => libc::EINVAL,
        ErrorKind::NotPermitted => libc::EPERM,
        ErrorKind::AccessDenied => libc::EACCES,
        ErrorKind::NoSpace => libc::ENOSPC,
        ErrorKind::FileTooLarge => libc::EFBIG,
        ErrorKind::Corrupt => libc::EIO,
        ErrorKind::OutOfRange => libc::ERANGE,
        ErrorKind::NoAttribute => libc::ENODATA,
        ErrorKind::NameTooLong => libc::ENAMETOOLONG,
        ErrorKind::TooManyLinks => libc::EMLINK,
        ErrorKind::Unsupported => libc::EOPNOTSUPP,
        ErrorKind::NoDevice => libc::ENODEV,
        ErrorKind::ReadOnly => libc::EROFS,
        ErrorKind::CrossDevice => libc::EXDEV,
        ErrorKind::NoSuchOffset => libc::ENXIO,
        ErrorKind::BadHandle => libc::EBADF,
        ErrorKind::RecordTooLarge => libc::E2BIG,
        ErrorKind::Overflow => libc::EOVERFLOW,
        ErrorKind::NotImplemented => libc::ENOSYS,
        ErrorKind::Os(errno) if errno > 0 => errno,
        ErrorKind::Os(_) => libc::EIO,
    }
}

/// An inode's attributes as the kernel is shown them (`struct fuse_attr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks in use.
    pub blocks: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
    pub kind: Kind,
    /// Permission bits, setuid/setgid and sticky (`mode & 0o7777`).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

impl Attributes {
    /// The whole mode: file type bits and permissions.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | self.perm
    }
}

/// Attributes and how long the kernel may cache them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrReply {
    pub attr: Attributes,
    pub ttl: Duration,
}

/// A name's inode: its attributes, generation, and how long the kernel may cache both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryReply {
    pub attr: Attributes,
    pub generation: u64,
    pub ttl: Duration,
}

/// An open file or directory: its handle and the kernel's `FOPEN_*` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    pub flags: u32,
}

/// GETXATTR / LISTXATTR: the size the caller asked for with size 0, or the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// STATFS figures (`struct fuse_kstatfs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatfsReply {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// The FUSE operations, as the transports name the request they decoded (for
/// [`Session::admits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Symlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Statfs,
    Release,
    Flush,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
    Lseek,
    CopyFileRange,
    Destroy,
}

impl Operation {
    /// Whether a user other than the mounting one may make this request on a mount
    /// without allow_other: only requests on handles that user already holds (the kernel
    /// let it open them), forgetting, and the end of the connection (the same list as
    /// libfuse and fuser).
    pub fn open_to_anyone(self) -> bool {
        use Operation::*;
        matches!(
            self,
            Read | Write
                | Readdir
                | Readdirplus
                | Fsync
                | Fsyncdir
                | Release
                | Releasedir
                | Forget
                | Destroy
        )
    }
}

/// One mounted volume as FUSE sees it. Shared (`Arc`) by every transport thread; every
/// method takes `&self`.
///
/// State: the volume (which has its own locking, `crate::volume`), settings fixed at mount,
/// and two atomics: whether the kernel accepted HANDLE_KILLPRIV_V2 (written once during
/// FUSE_INIT, before any other request) and a counter of requests served over io_uring.
#[derive(Debug)]
pub struct Session {
    vol: Arc<Volume>,
    mode: Mode,
    posix_acl: bool,
    owner_only: Option<u32>,
    killpriv_v2: AtomicBool,
    ring_requests: AtomicU64,
}

impl Session {
    /// A session serving `vol` in `mode`; `owner_only` is the mounting user's uid when the
    /// mount lacks allow_other (None: everyone may make every request).
    pub fn new(vol: Arc<Volume>, mode: Mode, owner_only: Option<u32>) -> Session {
        Session {
            vol,
            mode,
            posix_acl: true,
            owner_only,
            killpriv_v2: AtomicBool::new(false),
            ring_requests: AtomicU64::new(0),
        }
    }

    /// Whether to offer POSIX ACLs (FUSE_POSIX_ACL, on by default). The kernel then checks
    /// permissions itself against the mode and the ACLs (it turns default_permissions on),
    /// so a mount without default_permissions should say no.
    pub fn posix_acl(mut self, on: bool) -> Session {
        self.posix_acl = on;
        self
    }

    /// The volume served.
    pub fn volume(&self) -> &Arc<Volume> {
        &self.vol
    }

    /// The I/O mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    // ---- connection ---------------------------------------------------------------------

    /// The INIT capabilities (the kernel's `FUSE_*` bits, fuser's `InitFlags`) to ask for,
    /// `uring` when FUSE over io_uring is wanted.
    pub fn wanted_capabilities(&self, uring: bool) -> fuser::InitFlags {
        wanted_init_flags(self.mode, self.posix_acl, uring)
    }

    /// Records what the kernel accepted at INIT. Called once, before any other request.
    pub fn accepted(&self, caps: fuser::InitFlags) {
        use fuser::InitFlags as F;
        self.killpriv_v2
            .store(caps.contains(F::FUSE_HANDLE_KILLPRIV_V2), Ordering::Release);
        if caps.contains(F::FUSE_WRITEBACK_CACHE) {
            self.vol.set_kernel_file_times(true);
        }
    }

    /// Whether `uid` may make request `op` (allow_other, or the mounting user, or an
    /// operation [open to anyone](Operation::open_to_anyone)); a refused request is
    /// answered [`Session::refused`].
    pub fn admits(&self, uid: u32, op: Operation) -> bool {
        match self.owner_only {
            None => true,
            Some(owner) => uid == owner || op.open_to_anyone(),
        }
    }

    /// The answer to a request [`Session::admits`] refused.
    pub fn refused(&self) -> Errno {
        Errno(libc::EACCES)
    }

    /// Counts a request served over FUSE over io_uring.
    pub fn count_ring_request(&self) {
        self.ring_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests served over FUSE over io_uring so far.
    pub fn ring_requests(&self) -> u64 {
        self.ring_requests.load(Ordering::Relaxed)
    }

    // ---- names and attributes -----------------------------------------------------------

    /// LOOKUP.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Answer<EntryReply> {
        Ok(entry_reply(&self.vol.lookup(parent, name)?))
    }

    /// FORGET / BATCH_FORGET (one inode).
    pub fn forget(&self, ino: u64, nlookup: u64) {
        self.vol.forget(ino, nlookup);
    }

    /// GETATTR.
    pub fn getattr(&self, ino: u64) -> Answer<AttrReply> {
        Ok(attr_reply(&self.vol.stat(ino)?))
    }

    /// SETATTR (chmod, chown, truncate, utimes); times asked for as "now" come with the
    /// daemon's clock already read.
    pub fn setattr(&self, c: Caller, ino: u64, req: SetAttr) -> Answer<AttrReply> {
        Ok(attr_reply(&self.vol.setattr(c, ino, req)?))
    }

    /// READLINK.
    pub fn readlink(&self, ino: u64) -> Answer<Vec<u8>> {
        Ok(self.vol.readlink(ino)?)
    }

    /// MKNOD.
    pub fn mknod(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Answer<EntryReply> {
        let e = self
            .vol
            .mknod_with_umask(c, parent, name, mode, umask, rdev)?;
        Ok(entry_reply(&e))
    }

    /// MKDIR.
    pub fn mkdir(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Answer<EntryReply> {
        Ok(entry_reply(
            &self.vol.mkdir_with_umask(c, parent, name, mode, umask)?,
        ))
    }

    /// SYMLINK.
    pub fn symlink(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> Answer<EntryReply> {
        Ok(entry_reply(&self.vol.symlink(c, parent, name, target)?))
    }

    /// UNLINK.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Answer<()> {
        Ok(self.vol.remove(parent, name, false)?)
    }

    /// RMDIR.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Answer<()> {
        Ok(self.vol.remove(parent, name, true)?)
    }

    /// RENAME / RENAME2 (`flags`: RENAME_NOREPLACE, RENAME_EXCHANGE).
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> Answer<()> {
        Ok(self.vol.rename(parent, name, new_parent, new_name, flags)?)
    }

    /// LINK.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> Answer<EntryReply> {
        Ok(entry_reply(&self.vol.link(ino, new_parent, new_name)?))
    }

    // ---- files ----------------------------------------------------------------------------

    /// The `FOPEN_*` bits of every open file in this mode.
    fn open_flags(&self) -> u32 {
        match self.mode {
            Mode::Direct => fopen::DIRECT_IO | fopen::PARALLEL_DIRECT_WRITES,
            Mode::Buffered => fopen::KEEP_CACHE,
        }
    }

    /// OPEN: counts the open and applies O_TRUNC.
    pub fn open(&self, c: Caller, ino: u64, flags: i32) -> Answer<Opened> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        self.vol.open(ino, write)?;
        if flags & libc::O_TRUNC != 0 && write {
            let r = SetAttr {
                size: Some(0),
                ..Default::default()
            };
            if let Err(e) = self.vol.setattr(c, ino, r) {
                self.vol.release(ino);
                return Err(e.into());
            }
        }
        Ok(Opened {
            fh: 0,
            flags: self.open_flags(),
        })
    }

    /// CREATE: create (or open, without O_EXCL), count the open, apply O_TRUNC to a file
    /// that existed (even an empty one, which takes its privileges away; a new file keeps
    /// the mode it was made with, as on Linux).
    pub fn create(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Answer<(EntryReply, Opened)> {
        let exclusive = flags & libc::O_EXCL != 0;
        let (mut entry, created) = self
            .vol
            .create_or_open(c, parent, name, mode, umask, exclusive)?;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        self.vol.open(entry.ino, write)?;
        if flags & libc::O_TRUNC != 0 && !created {
            let trunc = SetAttr {
                size: Some(0),
                ..Default::default()
            };
            entry = self.vol.setattr(c, entry.ino, trunc).inspect_err(|_| {
                self.vol.release(entry.ino);
            })?;
        }
        let opened = Opened {
            fh: 0,
            flags: self.open_flags(),
        };
        Ok((entry_reply(&entry), opened))
    }

    /// READ: hands `reply` the bytes (straight from pool memory when they lie in one
    /// extent) and returns what it returns.
    pub fn read<R>(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> Answer<R> {
        Ok(self.vol.read(ino, offset, size, reply)?)
    }

    /// Who a WRITE with these `FUSE_WRITE_*` flags comes from (see [`Writer`]): the page
    /// cache, or `c`, holding CAP_FSETID as the kernel says when it speaks
    /// HANDLE_KILLPRIV_V2 and as its uid suggests when it does not.
    pub fn writer(&self, c: Caller, flags: u32) -> Writer {
        if flags & write_flags::CACHE != 0 {
            Writer::PageCache
        } else if self.killpriv_v2.load(Ordering::Acquire) {
            Writer::Process {
                caller: c,
                keeps_suidgid: flags & write_flags::KILL_SUIDGID == 0,
            }
        } else {
            Writer::process(c)
        }
    }

    /// WRITE (`flags`: the request's `FUSE_WRITE_*` flags).
    pub fn write(&self, c: Caller, ino: u64, offset: u64, data: &[u8], flags: u32) -> Answer<u32> {
        Ok(self.vol.write(self.writer(c, flags), ino, offset, data)?)
    }

    /// FLUSH: nothing to do (every write is in the pool when it returns, and POSIX locks are
    /// the kernel's), so ENOSYS: the kernel then stops sending FLUSH for this mount
    /// (`fc->no_flush`), which takes a round trip off every close(2). It still writes back
    /// a file's dirty pages at close in buffered mode, and reports their errors, before it
    /// would have sent the FLUSH.
    pub fn flush(&self) -> Answer<()> {
        Err(Errno(libc::ENOSYS))
    }

    /// RELEASE.
    pub fn release(&self, ino: u64) -> Answer<()> {
        self.vol.release(ino);
        Ok(())
    }

    /// FSYNC and FSYNCDIR.
    pub fn fsync(&self, ino: u64) -> Answer<()> {
        Ok(self.vol.fsync(ino)?)
    }

    /// FALLOCATE.
    pub fn fallocate(&self, c: Caller, ino: u64, offset: u64, len: u64, mode: i32) -> Answer<()> {
        Ok(self.vol.fallocate_as(c, ino, offset, len, mode)?)
    }

    /// LSEEK for SEEK_DATA / SEEK_HOLE (the kernel answers the others itself).
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> Answer<i64> {
        if self.mode == Mode::Buffered {
            // With the writeback cache the kernel asks before writing back dirty pages, so
            // the daemon's view of data and holes can be stale. ENOSYS makes the kernel stop
            // asking and answer from its own size (all data, hole at EOF): always correct.
            return Err(error::not_implemented("lseek is left to the kernel").into());
        }
        let whence = match whence {
            libc::SEEK_DATA => SeekWhence::Data,
            libc::SEEK_HOLE => SeekWhence::Hole,
            _ => return Err(error::invalid("bad whence").into()),
        };
        let offset = u64::try_from(offset).map_err(|_| error::no_such_offset("negative offset"))?;
        let at = self.vol.seek(ino, offset, whence)?;
        Ok(i64::try_from(at).map_err(|_| error::overflow("offset past i64"))?)
    }

    /// COPY_FILE_RANGE: at most 2 GiB per request (the reply's count is 32 bits).
    pub fn copy_file_range(
        &self,
        c: Caller,
        ino_in: u64,
        offset_in: u64,
        ino_out: u64,
        offset_out: u64,
        len: u64,
    ) -> Answer<u32> {
        let len = len.min(u32::MAX as u64 / 2);
        let n = self
            .vol
            .copy_range(c, ino_in, offset_in, ino_out, offset_out, len)?;
        Ok(n as u32)
    }

    // ---- directories ----------------------------------------------------------------------

    /// OPENDIR: only directories.
    pub fn opendir(&self, ino: u64) -> Answer<Opened> {
        match self.vol.getattr(ino)?.kind() {
            Kind::Dir => {
                // An open directory, like an open file, outlives its last name: a directory
                // renamed over or removed while open still answers fstat until RELEASEDIR.
                self.vol.open(ino, false)?;
                Ok(Opened { fh: 0, flags: 0 })
            }
            _ => Err(error::not_directory("not a directory").into()),
        }
    }

    /// RELEASEDIR: the handle OPENDIR counted goes.
    pub fn releasedir(&self, ino: u64) -> Answer<()> {
        self.vol.release(ino);
        Ok(())
    }

    /// READDIR: entries from cookie `offset`, handed to `add(ino, next cookie, kind, name)`
    /// until it says the reply is full.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        add: impl FnMut(u64, u64, Kind, &[u8]) -> bool,
    ) -> Answer<()> {
        Ok(self.vol.readdir(ino, offset, add)?)
    }

    /// READDIRPLUS: entries from `offset` with their attributes, handed to
    /// `add(next cookie, name, entry)` until it says the reply is full. Each entry handed to
    /// the kernel (but "." and "..") counts as a lookup.
    pub fn readdirplus(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, &[u8], &EntryReply) -> bool,
    ) -> Answer<()> {
        // A reply holds at most a few hundred entries; a batch of 256 fills most of one.
        let batch = self.vol.readdir_batch(ino, offset, 256)?;
        // The children's inodes, read from the tree in one scan where they are neighbours.
        let children: Vec<u64> = batch.iter().map(|(child, ..)| *child).collect();
        self.vol.preload(&children);
        let mut added = 0usize;
        for (child, next, _kind, name) in batch {
            let is_dot = name == b"." || name == b"..";
            let entry = match self.vol.stat(child) {
                Ok(entry) => entry,
                // An entry removed since the batch was taken is skipped, as if listed later.
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                // Any other failure (damaged metadata, EIO) is never skipped silently: the
                // reply ends before the entry, and the kernel's next request, which starts
                // at it, gets the error.
                Err(e) if added == 0 => return Err(Errno::from(e)),
                Err(_) => break,
            };
            if add(next, &name, &entry_reply(&entry)) {
                break;
            }
            added += 1;
            if !is_dot {
                self.vol.add_lookup(child);
            }
        }
        Ok(())
    }

    /// STATFS.
    pub fn statfs(&self) -> StatfsReply {
        let s = self.vol.statfs();
        StatfsReply {
            blocks: s.total_frames,
            bfree: s.free_frames,
            bavail: s.free_frames,
            files: s.inodes + s.free_inodes,
            ffree: s.free_inodes,
            bsize: BLOCK_BYTES,
            namelen: NAME_MAX as u32,
            frsize: BLOCK_BYTES,
        }
    }

    // ---- extended attributes and access ---------------------------------------------------

    /// SETXATTR.
    pub fn setxattr(
        &self,
        c: Caller,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Answer<()> {
        Ok(self.vol.setxattr_as(c, ino, name, value, flags)?)
    }

    /// GETXATTR, with the root's virtual statistics attribute. `size` 0 asks for the size.
    pub fn getxattr(&self, ino: u64, name: &[u8], size: u32) -> Answer<XattrReply> {
        let value = if ino == ROOT_INO && name == IO_STATS_XATTR {
            self.io_stats().into_bytes()
        } else {
            self.vol.getxattr(ino, name)?
        };
        sized(value, size)
    }

    /// LISTXATTR. `size` 0 asks for the size.
    pub fn listxattr(&self, c: Caller, ino: u64, size: u32) -> Answer<XattrReply> {
        sized(self.vol.listxattr_as(c, ino)?, size)
    }

    /// REMOVEXATTR.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Answer<()> {
        Ok(self.vol.removexattr(ino, name)?)
    }

    /// ACCESS (asked only without default_permissions): the mode bits, root passing all
    /// but execute on files with no x bit at all.
    pub fn access(&self, c: Caller, ino: u64, mask: i32) -> Answer<()> {
        let a = self.vol.getattr(ino)?;
        let want = mask & 7;
        let denied = || Errno::from(error::access_denied("access denied by the mode bits"));
        if c.uid == 0 {
            if want & libc::X_OK != 0 && a.kind() != Kind::Dir && a.mode & 0o111 == 0 {
                return Err(denied());
            }
            return Ok(());
        }
        let bits = if c.uid == a.uid {
            (a.mode >> 6) & 7
        } else if c.gid == a.gid {
            (a.mode >> 3) & 7
        } else {
            a.mode & 7
        } as i32;
        if want & !bits != 0 {
            Err(denied())
        } else {
            Ok(())
        }
    }

    /// The data-path counters as JSON, with the io_uring request count.
    fn io_stats(&self) -> String {
        let mut json = self.vol.stats.to_json();
        // `{...}` -> `{...,"ring_requests":N}`
        json.pop();
        json.push_str(&format!(",\"ring_requests\":{}}}", self.ring_requests()));
        json
    }
}

/// The INIT capabilities pfnfs asks for in `mode`.
fn wanted_init_flags(mode: Mode, posix_acl: bool, uring: bool) -> fuser::InitFlags {
    use fuser::InitFlags as F;
    let mut wanted = F::FUSE_DIRECT_IO_ALLOW_MMAP
        | F::FUSE_DO_READDIRPLUS
        | F::FUSE_READDIRPLUS_AUTO
        | F::FUSE_PARALLEL_DIROPS
        | F::FUSE_ATOMIC_O_TRUNC
        | F::FUSE_EXPORT_SUPPORT
        // pfnfs removes setuid/setgid and the file capability on every change of a file's
        // data or size itself; the kernel flags writers without CAP_FSETID, and its
        // buffered writes then go through to pfnfs when a setuid/setgid bit must go.
        | F::FUSE_HANDLE_KILLPRIV_V2;
    match mode {
        // Queued (AIO) direct I/O runs in parallel. Direct mode only: with the page cache
        // in use, the kernel invalidates the written range before a queued O_DIRECT write is
        // sent but, unlike for a synchronous one, not after it completes, so a buffered read
        // in between leaves stale pages cached for good (xfstests generic/451).
        Mode::Direct => wanted |= F::FUSE_ASYNC_DIO,
        Mode::Buffered => wanted |= F::FUSE_WRITEBACK_CACHE,
    }
    if posix_acl {
        // The kernel reads and caches the ACLs and enforces them; with DONT_MASK it also
        // leaves the umask to the daemon, which must not apply it under a default ACL.
        wanted |= F::FUSE_POSIX_ACL | F::FUSE_DONT_MASK;
    }
    if uring {
        wanted |= F::FUSE_OVER_IO_URING;
    }
    wanted
}

/// The attribute TTL for an inode: files with setuid/setgid bits are not cached, because a
/// write by another user clears those bits in the daemon (as POSIX asks) and nothing tells
/// the kernel's cache about it.
fn ttl(e: &Entry) -> Duration {
    if e.attr.mode & (libc::S_ISUID | libc::S_ISGID) != 0 && e.attr.kind() == Kind::File {
        Duration::ZERO
    } else {
        TTL
    }
}

fn attributes(e: &Entry) -> Attributes {
    let a = &e.attr;
    Attributes {
        ino: e.ino,
        size: a.size,
        blocks: e.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.crtime,
        kind: a.kind(),
        perm: a.mode & 0o7777,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLOCK_BYTES,
    }
}

fn attr_reply(e: &Entry) -> AttrReply {
    AttrReply {
        attr: attributes(e),
        ttl: ttl(e),
    }
}

fn entry_reply(e: &Entry) -> EntryReply {
    EntryReply {
        attr: attributes(e),
        generation: e.attr.generation,
        ttl: ttl(e),
    }
}

/// An xattr value or list: its size when the caller asked with size 0, ERANGE when it does
/// not fit, else the bytes.
fn sized(v: Vec<u8>, size: u32) -> Answer<XattrReply> {
    if size == 0 {
        let n = u32::try_from(v.len()).map_err(|_| error::out_of_range("xattr too large"))?;
        Ok(XattrReply::Size(n))
    } else if v.len() > size as usize {
        Err(error::out_of_range(format!("{} bytes do not fit in {size}", v.len())).into())
    } else {
        Ok(XattrReply::Data(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuser::InitFlags;

    fn session(mode: Mode) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pool");
        pfnfs_alloc::Pool::create(&p, 32 << 20, &Default::default()).unwrap();
        let pool = pfnfs_alloc::Pool::open(&p, &Default::default()).unwrap();
        Session::new(Arc::new(Volume::load(Arc::new(pool)).unwrap()), mode, None)
    }

    #[test]
    fn async_dio_only_without_the_page_cache() {
        // Regression (xfstests generic/451, buffered mode): queued O_DIRECT writes with the
        // page cache in use leave stale pages behind.
        let direct = wanted_init_flags(Mode::Direct, true, false);
        let buffered = wanted_init_flags(Mode::Buffered, true, false);
        assert!(direct.contains(InitFlags::FUSE_ASYNC_DIO));
        assert!(!buffered.contains(InitFlags::FUSE_ASYNC_DIO));
        assert!(buffered.contains(InitFlags::FUSE_WRITEBACK_CACHE));
        assert!(!direct.contains(InitFlags::FUSE_WRITEBACK_CACHE));
        let acl = InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        assert!(direct.contains(acl));
        assert!(!wanted_init_flags(Mode::Direct, false, false).intersects(acl));
        for mode in [Mode::Direct, Mode::Buffered] {
            assert!(
                wanted_init_flags(mode, true, false).contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            );
        }
        assert!(
            wanted_init_flags(Mode::Direct, true, true).contains(InitFlags::FUSE_OVER_IO_URING)
        );
    }

    #[test]
    fn write_flags_name_the_writer() {
        let c = Caller {
            uid: 1000,
            gid: 100,
        };
        let root = Caller::default();
        let (cache, kill) = (write_flags::CACHE, write_flags::KILL_SUIDGID);
        let s = session(Mode::Direct);
        // Page-cache write-back takes nothing away, whatever else is set.
        assert_eq!(s.writer(c, cache | kill), Writer::PageCache);
        // Without HANDLE_KILLPRIV_V2 the uid decides.
        assert_eq!(s.writer(c, 0), Writer::process(c));
        assert_eq!(s.writer(root, kill), Writer::process(root));
        // With it, the kernel's flag does (CAP_FSETID is not the uid).
        s.accepted(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        let w = |caller, keeps_suidgid| Writer::Process {
            caller,
            keeps_suidgid,
        };
        assert_eq!(s.writer(c, kill), w(c, false));
        assert_eq!(s.writer(c, 0), w(c, true));
        assert_eq!(s.writer(root, kill), w(root, false));
        assert_eq!(s.writer(root, cache), Writer::PageCache);
    }

    #[test]
    fn only_requests_on_held_handles_come_from_other_users_without_allow_other() {
        let s = session(Mode::Direct);
        assert!(s.admits(1234, Operation::Lookup), "allow_other: everyone");
        let owner_only = Session::new(s.vol.clone(), Mode::Direct, Some(1000));
        assert!(owner_only.admits(1000, Operation::Lookup));
        for op in [
            Operation::Lookup,
            Operation::Open,
            Operation::Create,
            Operation::Setattr,
        ] {
            assert!(!owner_only.admits(1001, op), "{op:?}");
        }
        for op in [
            Operation::Read,
            Operation::Write,
            Operation::Release,
            Operation::Forget,
        ] {
            assert!(owner_only.admits(1001, op), "{op:?}");
        }
    }

    #[test]
    fn xattr_sizes_are_negotiated_here() {
        assert_eq!(sized(b"abc".to_vec(), 0), Ok(XattrReply::Size(3)));
        assert_eq!(
            sized(b"abc".to_vec(), 3),
            Ok(XattrReply::Data(b"abc".to_vec()))
        );
        assert_eq!(sized(b"abc".to_vec(), 2), Err(Errno(libc::ERANGE)));
    }

    #[test]
    fn every_kind_has_a_distinct_errno_and_os_errors_keep_theirs() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::Exists,
            ErrorKind::NotDirectory,
            ErrorKind::IsDirectory,
            ErrorKind::NotEmpty,
            ErrorKind::Invalid,
            ErrorKind::NotPermitted,
            ErrorKind::AccessDenied,
            ErrorKind::NoSpace,
            ErrorKind::FileTooLarge,
            ErrorKind::Corrupt,
            ErrorKind::OutOfRange,
            ErrorKind::NoAttribute,
            ErrorKind::NameTooLong,
            ErrorKind::TooManyLinks,
            ErrorKind::Unsupported,
            ErrorKind::NoDevice,
            ErrorKind::ReadOnly,
            ErrorKind::CrossDevice,
            ErrorKind::NoSuchOffset,
            ErrorKind::BadHandle,
            ErrorKind::RecordTooLarge,
            ErrorKind::Overflow,
            ErrorKind::NotImplemented,
        ];
        let errnos: std::collections::BTreeSet<i32> = kinds
            .iter()
            .map(|k| errno(&FsError::new(*k, "x")))
            .collect();
        assert_eq!(errnos.len(), kinds.len());
        let io = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert_eq!(errno(&FsError::os(&io, "msync")), libc::EDQUOT);
        assert_eq!(errno(&FsError::new(ErrorKind::Os(0), "x")), libc::EIO);
    }
}
