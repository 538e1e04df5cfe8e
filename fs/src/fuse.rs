//! The FUSE adapter: translates fuser requests into [`Volume`] calls and [`FsError`]s into
//! errnos. No filesystem logic lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::Mode;
use crate::error::FsError;
use crate::inode::{Kind, Time};
use crate::placement;
use crate::ring::Rings;
use crate::volume::{Caller, Entry, SeekWhence, SetAttr, Volume, Writer};

/// How long the kernel may cache attributes and names. Every change goes through this
/// daemon, which answers each one with fresh attributes, so caching is safe.
const TTL: Duration = Duration::from_secs(1);

/// The attribute TTL for an inode: files with setuid/setgid bits are not cached, because a
/// write by another user clears those bits in the daemon (as POSIX asks) and nothing tells
/// the kernel's cache about it.
pub(crate) fn ttl(e: &Entry) -> Duration {
    if e.attr.mode & (libc::S_ISUID | libc::S_ISGID) != 0 && e.attr.kind() == Kind::File {
        Duration::ZERO
    } else {
        TTL
    }
}

/// Virtual, read-only xattr of the root directory holding the data-path counters as JSON.
pub const IO_STATS_XATTR: &[u8] = b"trusted.pfnfs.io_stats";

/// The fuser filesystem over a [`Volume`]. Cloned into each FUSE-over-io_uring queue
/// thread, which answer through the same operations (`crate::ring`).
#[derive(Debug, Clone)]
pub struct PfnFuse {
    vol: Arc<Volume>,
    mode: Mode,
    posix_acl: bool,
    rings: Option<Arc<Rings>>,
    /// The kernel accepted FUSE_HANDLE_KILLPRIV_V2: it flags each write whose writer lacks
    /// CAP_FSETID (`FUSE_WRITE_KILL_SUIDGID`) and leaves removing privileges to pfnfs.
    killpriv_v2: bool,
}

impl PfnFuse {
    /// Serves `vol` in `mode`.
    pub fn new(vol: Arc<Volume>, mode: Mode) -> PfnFuse {
        PfnFuse {
            vol,
            mode,
            posix_acl: true,
            rings: None,
            killpriv_v2: false,
        }
    }

    /// Serves requests over FUSE over io_uring when the kernel offers it (Linux 6.14+ with
    /// `/sys/module/fuse/parameters/enable_uring` = Y): one queue per CPU, each with its
    /// own pinned thread, so that a request is answered on the CPU that made it.
    pub(crate) fn with_rings(mut self, rings: Arc<Rings>) -> PfnFuse {
        self.rings = Some(rings);
        self
    }

    pub(crate) fn vol(&self) -> &Volume {
        &self.vol
    }

    /// Whether to offer POSIX ACLs (FUSE_POSIX_ACL, on by default). The kernel then checks
    /// permissions itself against the mode and the ACLs (it turns default_permissions on),
    /// so a mount without default_permissions should say no.
    pub fn posix_acl(mut self, on: bool) -> PfnFuse {
        self.posix_acl = on;
        self
    }

    /// Who a WRITE with these `write_flags` comes from (see [`Writer`]): the page cache, or
    /// `c`, holding CAP_FSETID as the kernel says when it speaks HANDLE_KILLPRIV_V2 and as
    /// its uid suggests when it does not.
    pub(crate) fn writer(&self, c: Caller, write_flags: u32) -> Writer {
        let flags = WriteFlags::from_bits_retain(write_flags);
        if flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
            Writer::PageCache
        } else if self.killpriv_v2 {
            Writer::Process {
                caller: c,
                keeps_suidgid: !flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID),
            }
        } else {
            Writer::process(c)
        }
    }

    pub(crate) fn open_flags(&self) -> FopenFlags {
        match self.mode {
            Mode::Direct => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
            Mode::Buffered => FopenFlags::FOPEN_KEEP_CACHE,
        }
    }
}

/// The INIT capabilities pfnfs asks for in `mode`.
fn wanted_init_flags(mode: Mode, posix_acl: bool, uring: bool) -> InitFlags {
    let mut wanted = InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP
        | InitFlags::FUSE_DO_READDIRPLUS
        | InitFlags::FUSE_READDIRPLUS_AUTO
        | InitFlags::FUSE_PARALLEL_DIROPS
        | InitFlags::FUSE_ATOMIC_O_TRUNC
        | InitFlags::FUSE_EXPORT_SUPPORT
        // pfnfs removes setuid/setgid and the file capability on every change of a file's
        // data or size itself; the kernel flags writers without CAP_FSETID, and its
        // buffered writes then go through to pfnfs when a setuid/setgid bit must go.
        | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
    match mode {
        // Queued (AIO) direct I/O runs in parallel. Direct mode only: with the page cache
        // in use, the kernel invalidates the written range before a queued O_DIRECT write is
        // sent but, unlike for a synchronous one, not after it completes, so a buffered read
        // in between leaves stale pages cached for good (xfstests generic/451).
        Mode::Direct => wanted |= InitFlags::FUSE_ASYNC_DIO,
        Mode::Buffered => wanted |= InitFlags::FUSE_WRITEBACK_CACHE,
    }
    if posix_acl {
        // The kernel reads and caches the ACLs and enforces them; with DONT_MASK it also
        // leaves the umask to the daemon, which must not apply it under a default ACL.
        wanted |= InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
    }
    if uring {
        wanted |= InitFlags::FUSE_OVER_IO_URING;
    }
    wanted
}

pub(crate) fn errno(e: FsError) -> Errno {
    Errno::from_i32(log_error(e))
}

/// Logs a failed operation (EIO as an error, the rest for debugging); returns its errno.
pub(crate) fn log_error(e: FsError) -> i32 {
    let errno = crate::session::errno(&e);
    if errno == libc::EIO {
        tracing::error!("{}", e.context);
    } else {
        tracing::debug!("{}", e.context);
    }
    errno
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

fn file_attr(e: &Entry) -> FileAttr {
    let (ino, a) = (e.ino, &e.attr);
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: e.blocks,
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: a.crtime.to_system(),
        kind: file_type(a.kind()),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_or_now(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::SpecificTime(t) => kernel_time(t),
        TimeOrNow::Now => Time::now(),
    }
}

/// A timestamp from a kernel request. fuser 0.18 turns a pre-1970 `(tv_sec, tv_nsec)` into
/// `EPOCH - (|tv_sec| s + tv_nsec ns)` instead of `EPOCH - |tv_sec| s + tv_nsec ns`; undo
/// that so the stored time is the one the caller asked for.
fn kernel_time(t: SystemTime) -> Time {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(_) => Time::from_system(t),
        Err(e) => {
            let d = e.duration();
            Time {
                secs: -(d.as_secs() as i64),
                nsecs: d.subsec_nanos(),
            }
        }
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<Entry, FsError>) {
    match r {
        Ok(e) => reply.entry(&ttl(&e), &file_attr(&e), Generation(e.attr.generation)),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, r: Result<Vec<u8>, FsError>, size: u32) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e)),
    }
}

/// The operations with more to them than one [`Volume`] call, shared by fuser's dispatch
/// (below) and the io_uring queues (`crate::ring`).
impl PfnFuse {
    /// OPEN: counts the open and applies O_TRUNC.
    pub(crate) fn open_file(&self, c: Caller, ino: u64, flags: i32) -> Result<(), FsError> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        self.vol.open(ino, write)?;
        if flags & libc::O_TRUNC != 0 && write {
            let r = SetAttr {
                size: Some(0),
                ..Default::default()
            };
            if let Err(e) = self.vol.setattr(c, ino, r) {
                self.vol.release(ino);
                return Err(e);
            }
        }
        Ok(())
    }

    /// OPENDIR: only directories.
    pub(crate) fn open_dir(&self, ino: u64) -> Result<(), FsError> {
        match self.vol.getattr(ino)?.kind() {
            Kind::Dir => Ok(()),
            _ => Err(crate::error::not_directory("not a directory")),
        }
    }

    /// CREATE: create (or open, without O_EXCL), count the open, apply O_TRUNC.
    pub(crate) fn create_file(
        &self,
        c: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<Entry, FsError> {
        let exclusive = flags & libc::O_EXCL != 0;
        let (entry, created) = self
            .vol
            .create_or_open(c, parent, name, mode, umask, exclusive)?;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        self.vol.open(entry.ino, write)?;
        // O_TRUNC of a file that existed truncates it, even an empty one, which takes its
        // privileges away (a new file keeps the mode it was created with, as on Linux).
        if flags & libc::O_TRUNC != 0 && !created {
            let trunc = SetAttr {
                size: Some(0),
                ..Default::default()
            };
            return self.vol.setattr(c, entry.ino, trunc).inspect_err(|_| {
                self.vol.release(entry.ino);
            });
        }
        Ok(entry)
    }

    /// ACCESS (asked only without default_permissions): the mode bits, root passing all
    /// but execute on files with no x bit at all.
    pub(crate) fn check_access(&self, c: Caller, ino: u64, mask: i32) -> Result<(), FsError> {
        let a = self.vol.getattr(ino)?;
        let want = mask & 7;
        let denied = || crate::error::access_denied("access denied by the mode bits");
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

    /// READDIRPLUS: entries from `offset` with their attributes, until `add` says the reply
    /// is full. Each entry handed to the kernel (but "." and "..") counts as a lookup.
    pub(crate) fn readdir_plus(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, &[u8], &Entry) -> bool,
    ) -> Result<(), FsError> {
        // A reply holds at most a few hundred entries; a batch of 256 fills most of one.
        let batch = self.vol.readdir_batch(ino, offset, 256)?;
        for (child, next, _kind, name) in batch {
            let is_dot = name == b"." || name == b"..";
            // An entry removed since the batch was taken is skipped, as if listed later.
            let Ok(entry) = self.vol.stat(child) else {
                continue;
            };
            if add(child, next, &name, &entry) {
                break;
            }
            if !is_dot {
                self.vol.add_lookup(child);
            }
        }
        Ok(())
    }

    /// GETXATTR, with the root's virtual statistics attribute.
    pub(crate) fn get_xattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, FsError> {
        if ino == crate::inode::ROOT_INO && name == IO_STATS_XATTR {
            let mut json = self.vol.stats.to_json();
            if let Some(r) = &self.rings {
                // `{...}` -> `{...,"ring_requests":N}`
                json.pop();
                json.push_str(&format!(",\"ring_requests\":{}}}", r.requests()));
            }
            return Ok(json.into_bytes());
        }
        self.vol.getxattr(ino, name)
    }

    /// LSEEK for SEEK_DATA / SEEK_HOLE (the kernel answers the others itself).
    pub(crate) fn seek(&self, ino: u64, offset: i64, whence: i32) -> Result<u64, FsError> {
        if self.mode == Mode::Buffered {
            // With the writeback cache the kernel asks before writing back dirty pages, so
            // the daemon's view of data and holes can be stale. ENOSYS makes the kernel stop
            // asking and answer from its own size (all data, hole at EOF): always correct.
            return Err(crate::error::not_implemented("lseek is left to the kernel"));
        }
        let whence = match whence {
            libc::SEEK_DATA => SeekWhence::Data,
            libc::SEEK_HOLE => SeekWhence::Hole,
            _ => return Err(crate::error::invalid("bad whence")),
        };
        if offset < 0 {
            return Err(crate::error::no_such_offset("negative offset"));
        }
        self.vol.seek(ino, offset as u64, whence)
    }

    /// COPY_FILE_RANGE: at most 2 GiB per request (the reply's count is 32 bits).
    pub(crate) fn copy_range(
        &self,
        c: Caller,
        ino_in: u64,
        offset_in: u64,
        ino_out: u64,
        offset_out: u64,
        len: u64,
    ) -> Result<u32, FsError> {
        let len = len.min(u32::MAX as u64 / 2);
        let n = self
            .vol
            .copy_range(c, ino_in, offset_in, ino_out, offset_out, len)?;
        Ok(n as u32)
    }
}

impl Filesystem for PfnFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Known before the io_uring queues (which clone `self`) start below.
        self.killpriv_v2 = config
            .capabilities()
            .contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        for flag in wanted_init_flags(self.mode, self.posix_acl, self.rings.is_some()).iter() {
            if !config.capabilities().contains(flag) {
                tracing::info!("kernel does not offer {flag:?}");
                continue;
            }
            if flag == InitFlags::FUSE_OVER_IO_URING {
                // Start the queues first: once this is accepted, the kernel holds every
                // request until each queue has registered (after our INIT reply).
                let Some(rings) = &self.rings else { continue };
                if let Err(e) = rings.start(self) {
                    tracing::warn!("FUSE over io_uring not used: {e}");
                    continue;
                }
                tracing::info!("serving over FUSE over io_uring");
            }
            let _ = config.add_capabilities(flag);
            if flag == InitFlags::FUSE_WRITEBACK_CACHE {
                self.vol.set_kernel_file_times(true);
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {}

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.vol.lookup(parent.0, name.as_bytes()));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.vol.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vol.stat(ino.0) {
            Ok(e) => reply.attr(&ttl(&e), &file_attr(&e)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
            ctime: ctime.map(kernel_time),
        };
        match self.vol.setattr(caller(req), ino.0, r) {
            Ok(e) => reply.attr(&ttl(&e), &file_attr(&e)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vol.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.vol
                .mknod_with_umask(caller(req), parent.0, name.as_bytes(), mode, umask, rdev),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.vol
                .mkdir_with_umask(caller(req), parent.0, name.as_bytes(), mode, umask),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.vol.remove(parent.0, name.as_bytes(), false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.vol.remove(parent.0, name.as_bytes(), true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.vol.symlink(
                caller(req),
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
            ),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.vol.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                flags.bits(),
            ),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.vol.link(ino.0, newparent.0, newname.as_bytes()));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_file(caller(req), ino.0, flags.0) {
            Ok(()) => reply.opened(FileHandle(0), self.open_flags()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        placement::become_worker(None);
        let mut reply = Some(reply);
        let r = self.vol.read(ino.0, offset, size, |bytes| {
            if let Some(rep) = reply.take() {
                rep.data(bytes)
            }
        });
        if let (Err(e), Some(rep)) = (r, reply) {
            rep.error(errno(e));
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        placement::become_worker(None);
        let writer = self.writer(caller(req), write_flags.bits());
        match self.vol.write(writer, ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.vol.release(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.vol.fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.open_dir(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.vol.readdir(ino.0, offset, |child, next, kind, name| {
            reply.add(
                INodeNo(child),
                next,
                file_type(kind),
                OsStr::from_bytes(name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.readdir_plus(ino.0, offset, |child, next, name, entry| {
            reply.add(
                INodeNo(child),
                next,
                OsStr::from_bytes(name),
                &ttl(entry),
                &file_attr(entry),
                Generation(entry.attr.generation),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.vol.fsync(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.vol.statfs();
        reply.statfs(
            s.total_frames,
            s.free_frames,
            s.free_frames,
            s.inodes + s.free_inodes,
            s.free_inodes,
            4096,
            crate::volume::NAME_MAX as u32,
            4096,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.vol
                .setxattr_as(caller(req), ino.0, name.as_bytes(), value, flags),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.get_xattr(ino.0, name.as_bytes()), size);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.vol.listxattr_as(caller(req), ino.0), size);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.vol.removexattr(ino.0, name.as_bytes()));
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.check_access(caller(req), ino.0, mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_file(caller(req), parent.0, name.as_bytes(), mode, umask, flags) {
            Ok(entry) => reply.created(
                &ttl(&entry),
                &file_attr(&entry),
                Generation(entry.attr.generation),
                FileHandle(0),
                self.open_flags(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.vol
                .fallocate_as(caller(req), ino.0, offset, length, mode),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.seek(ino.0, offset, whence) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.copy_range(caller(req), ino_in.0, offset_in, ino_out.0, offset_out, len) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn write_flags_name_the_writer() {
        let c = Caller {
            uid: 1000,
            gid: 100,
        };
        let root = Caller::default();
        let cache = WriteFlags::FUSE_WRITE_CACHE.bits();
        let kill = WriteFlags::FUSE_WRITE_KILL_SUIDGID.bits();
        let vol = || -> Arc<Volume> {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("pool");
            pfnfs_alloc::Pool::create(&p, 32 << 20, &Default::default()).unwrap();
            let pool = pfnfs_alloc::Pool::open(&p, &Default::default()).unwrap();
            Arc::new(Volume::load(Arc::new(pool)).unwrap())
        };
        let mut fs = PfnFuse::new(vol(), Mode::Direct);
        // Page-cache write-back takes nothing away, whatever else is set.
        assert_eq!(fs.writer(c, cache | kill), Writer::PageCache);
        // Without HANDLE_KILLPRIV_V2 the uid decides.
        assert_eq!(fs.writer(c, 0), Writer::process(c));
        assert_eq!(fs.writer(root, kill), Writer::process(root));
        // With it, the kernel's flag does (CAP_FSETID is not the uid).
        fs.killpriv_v2 = true;
        let w = |caller, keeps_suidgid| Writer::Process {
            caller,
            keeps_suidgid,
        };
        assert_eq!(fs.writer(c, kill), w(c, false));
        assert_eq!(fs.writer(c, 0), w(c, true));
        assert_eq!(fs.writer(root, kill), w(root, false));
        assert_eq!(fs.writer(root, cache), Writer::PageCache);
    }
}
