//! The `/dev/fuse` transport: fuser's request loop, translated to and from the [`Session`].
//!
//! Each `fuser::Filesystem` method names its [`Operation`], lets the session decide whether
//! the caller may make it, calls the session method with the arguments fuser decoded, and
//! sends the typed answer back through fuser's reply type (the `Reply` trait). Nothing else: what an
//! operation means, and every errno, is the session's. Wire quirks of fuser are handled
//! here (its pre-1970 timestamps).
//!
//! FUSE_INIT also arrives here (fuser answers it): the capabilities come from the session,
//! and the FUSE-over-io_uring queues are started before FUSE_OVER_IO_URING is accepted.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::placement;
use super::ring::Rings;
use crate::inode::{Kind, Time};
use crate::session::{
    Answer, AttrReply, Attributes, EntryReply, Errno, Opened, Operation, Session, StatfsReply,
    XattrReply,
};
use crate::volume::{Caller, SetAttr};

/// fuser's filesystem: the session, and the io_uring queues to start at INIT if wanted.
/// Moved into fuser's session; its methods run on fuser's worker threads.
#[derive(Debug)]
pub struct DevFuse {
    session: Arc<Session>,
    rings: Option<Arc<Rings>>,
}

impl DevFuse {
    /// Serves `session` over `/dev/fuse`.
    pub fn new(session: Arc<Session>) -> DevFuse {
        DevFuse {
            session,
            rings: None,
        }
    }

    /// Also serves over FUSE over io_uring when the kernel offers it (Linux 6.14+ with
    /// `/sys/module/fuse/parameters/enable_uring` = Y): one queue per CPU, each with its
    /// own pinned thread, so that a request is answered on the CPU that made it.
    pub(crate) fn with_rings(mut self, rings: Arc<Rings>) -> DevFuse {
        self.rings = Some(rings);
        self
    }

    /// Answers a request: refused unless the session admits the caller, else `f`'s answer.
    fn answer<T>(
        &self,
        req: &Request,
        op: Operation,
        reply: impl Reply<T>,
        f: impl FnOnce(&Session, Caller) -> Answer<T>,
    ) {
        if !self.session.admits(req.uid(), op) {
            return reply.send(Err(self.session.refused()));
        }
        reply.send(f(&self.session, caller(req)));
    }
}

/// A fuser reply that can carry a session answer of type `T`.
trait Reply<T> {
    fn send(self, answer: Answer<T>);
}

fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

impl Reply<EntryReply> for ReplyEntry {
    fn send(self, a: Answer<EntryReply>) {
        match a {
            Ok(e) => self.entry(&e.ttl, &file_attr(&e.attr), Generation(e.generation)),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<AttrReply> for ReplyAttr {
    fn send(self, a: Answer<AttrReply>) {
        match a {
            Ok(r) => self.attr(&r.ttl, &file_attr(&r.attr)),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<()> for ReplyEmpty {
    fn send(self, a: Answer<()>) {
        match a {
            Ok(()) => self.ok(),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<Vec<u8>> for ReplyData {
    fn send(self, a: Answer<Vec<u8>>) {
        match a {
            Ok(bytes) => self.data(&bytes),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<Opened> for ReplyOpen {
    fn send(self, a: Answer<Opened>) {
        match a {
            Ok(o) => self.opened(FileHandle(o.fh), FopenFlags::from_bits_retain(o.flags)),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<(EntryReply, Opened)> for ReplyCreate {
    fn send(self, a: Answer<(EntryReply, Opened)>) {
        match a {
            Ok((e, o)) => self.created(
                &e.ttl,
                &file_attr(&e.attr),
                Generation(e.generation),
                FileHandle(o.fh),
                FopenFlags::from_bits_retain(o.flags),
            ),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<u32> for ReplyWrite {
    fn send(self, a: Answer<u32>) {
        match a {
            Ok(n) => self.written(n),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<XattrReply> for ReplyXattr {
    fn send(self, a: Answer<XattrReply>) {
        match a {
            Ok(XattrReply::Size(n)) => self.size(n),
            Ok(XattrReply::Data(v)) => self.data(&v),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<StatfsReply> for ReplyStatfs {
    fn send(self, a: Answer<StatfsReply>) {
        match a {
            Ok(s) => self.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => self.error(errno(e)),
        }
    }
}

impl Reply<i64> for ReplyLseek {
    fn send(self, a: Answer<i64>) {
        match a {
            Ok(o) => self.offset(o),
            Err(e) => self.error(errno(e)),
        }
    }
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

fn file_attr(a: &Attributes) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: a.crtime.to_system(),
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
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

impl Filesystem for DevFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let offered = config.capabilities();
        let wanted = self.session.wanted_capabilities(self.rings.is_some());
        let mut accepted = InitFlags::empty();
        for flag in wanted.iter() {
            if !offered.contains(flag) {
                tracing::info!("kernel does not offer {flag:?}");
                continue;
            }
            accepted |= flag;
        }
        // Known before the io_uring queues start below: they may answer at once.
        self.session.accepted(accepted);
        if accepted.contains(InitFlags::FUSE_OVER_IO_URING) {
            // Start the queues first: once this is accepted, the kernel holds every
            // request until each queue has registered (after our INIT reply).
            let started = match &self.rings {
                Some(rings) => rings
                    .start(&self.session)
                    .inspect_err(|e| tracing::warn!("FUSE over io_uring not used: {e}"))
                    .is_ok(),
                None => false,
            };
            if started {
                tracing::info!("serving over FUSE over io_uring");
            } else {
                accepted.remove(InitFlags::FUSE_OVER_IO_URING);
            }
        }
        let _ = config.add_capabilities(accepted);
        Ok(())
    }

    fn destroy(&mut self) {}

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.answer(req, Operation::Lookup, reply, |s, _| {
            s.lookup(parent.0, name.as_bytes())
        });
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        if self.session.admits(req.uid(), Operation::Forget) {
            self.session.forget(ino.0, nlookup);
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.answer(req, Operation::Getattr, reply, |s, _| s.getattr(ino.0));
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
        let args = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
            ctime: ctime.map(kernel_time),
        };
        self.answer(req, Operation::Setattr, reply, |s, c| {
            s.setattr(c, ino.0, args)
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.answer(req, Operation::Readlink, reply, |s, _| s.readlink(ino.0));
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
        self.answer(req, Operation::Mknod, reply, |s, c| {
            s.mknod(c, parent.0, name.as_bytes(), mode, umask, rdev)
        });
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
        self.answer(req, Operation::Mkdir, reply, |s, c| {
            s.mkdir(c, parent.0, name.as_bytes(), mode, umask)
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.answer(req, Operation::Unlink, reply, |s, _| {
            s.unlink(parent.0, name.as_bytes())
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.answer(req, Operation::Rmdir, reply, |s, _| {
            s.rmdir(parent.0, name.as_bytes())
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.answer(req, Operation::Symlink, reply, |s, c| {
            s.symlink(
                c,
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
            )
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.answer(req, Operation::Rename, reply, |s, _| {
            s.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                flags.bits(),
            )
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.answer(req, Operation::Link, reply, |s, _| {
            s.link(ino.0, newparent.0, newname.as_bytes())
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.answer(req, Operation::Open, reply, |s, c| {
            s.open(c, ino.0, flags.0)
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        placement::become_worker(None);
        if !self.session.admits(req.uid(), Operation::Read) {
            return reply.error(errno(self.session.refused()));
        }
        // The reply is sent from inside the session's read, straight from pool memory.
        let mut reply = Some(reply);
        let r = self.session.read(ino.0, offset, size, |bytes| {
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
        self.answer(req, Operation::Write, reply, |s, c| {
            s.write(c, ino.0, offset, data, write_flags.bits())
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.answer(req, Operation::Flush, reply, |s, _| s.flush());
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.answer(req, Operation::Release, reply, |s, _| s.release(ino.0));
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.answer(req, Operation::Fsync, reply, |s, _| s.fsync(ino.0));
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.answer(req, Operation::Opendir, reply, |s, _| s.opendir(ino.0));
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if !self.session.admits(req.uid(), Operation::Readdir) {
            return reply.error(errno(self.session.refused()));
        }
        let r = self
            .session
            .readdir(ino.0, offset, |child, next, kind, name| {
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
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        if !self.session.admits(req.uid(), Operation::Readdirplus) {
            return reply.error(errno(self.session.refused()));
        }
        let r = self.session.readdirplus(ino.0, offset, |next, name, e| {
            reply.add(
                INodeNo(e.attr.ino),
                next,
                OsStr::from_bytes(name),
                &e.ttl,
                &file_attr(&e.attr),
                Generation(e.generation),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.answer(req, Operation::Releasedir, reply, |s, _| {
            s.releasedir(ino.0)
        });
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.answer(req, Operation::Fsyncdir, reply, |s, _| s.fsync(ino.0));
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.answer(req, Operation::Statfs, reply, |s, _| Ok(s.statfs()));
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
        self.answer(req, Operation::Setxattr, reply, |s, c| {
            s.setxattr(c, ino.0, name.as_bytes(), value, flags)
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.answer(req, Operation::Getxattr, reply, |s, _| {
            s.getxattr(ino.0, name.as_bytes(), size)
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.answer(req, Operation::Listxattr, reply, |s, c| {
            s.listxattr(c, ino.0, size)
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.answer(req, Operation::Removexattr, reply, |s, _| {
            s.removexattr(ino.0, name.as_bytes())
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.answer(req, Operation::Access, reply, |s, c| {
            s.access(c, ino.0, mask.bits())
        });
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
        self.answer(req, Operation::Create, reply, |s, c| {
            s.create(c, parent.0, name.as_bytes(), mode, umask, flags)
        });
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
        self.answer(req, Operation::Fallocate, reply, |s, c| {
            s.fallocate(c, ino.0, offset, length, mode)
        });
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.answer(req, Operation::Lseek, reply, |s, _| {
            s.lseek(ino.0, offset, whence)
        });
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
        self.answer(req, Operation::CopyFileRange, reply, |s, c| {
            s.copy_file_range(c, ino_in.0, offset_in, ino_out.0, offset_out, len)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_1970_times_from_fuser_come_back_as_asked() {
        // fuser hands (-2 s, 3 ns) over as EPOCH - 2.000000003 s.
        let t = std::time::UNIX_EPOCH - std::time::Duration::new(2, 3);
        assert_eq!(kernel_time(t), Time { secs: -2, nsecs: 3 });
        let later = std::time::UNIX_EPOCH + std::time::Duration::new(5, 7);
        assert_eq!(kernel_time(later), Time { secs: 5, nsecs: 7 });
    }
}
