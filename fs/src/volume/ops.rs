//! The filesystem operations the FUSE adapter calls: validate, journal, apply.

use std::sync::atomic::Ordering;

use pfnfs_alloc::FRAME_SIZE;
use pfnfs_extent::{Extent, ExtentMap, ReadSegment, io as extent_io};

use super::*;
use crate::acl::{self, ACCESS_XATTR, Acl, DEFAULT_XATTR};

/// One readdir entry copied out of a directory: (inode, cookie, kind, name).
pub type DirListing = (u64, u64, Kind, Vec<u8>);

/// SEEK_DATA or SEEK_HOLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekWhence {
    Data,
    Hole,
}

/// Zeros for copying holes over mapped destination bytes.
static ZEROS: [u8; 65536] = [0; 65536];

thread_local! {
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Upper bound of a record's bytes besides its names and values (header, inode numbers,
/// attributes), for [`Volume::ensure_metadata_room`].
const INODE_RECORD_BYTES: u64 = 256;

/// Above this many extents, `fsync` of a file msyncs the whole pool in one call instead of
/// one call per extent.
pub const FSYNC_EXTENTS_MAX: usize = 64;

const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

impl Volume {
    // ---- lookups and attributes ------------------------------------------------------

    /// Looks `name` up in `parent`; counts a kernel lookup reference on success.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Entry> {
        if name.len() > NAME_MAX {
            return Err(name_too_long("name too long"));
        }
        let pcell = self.cell(parent)?;
        let ino = {
            let p = pcell.inode.read();
            if name == b"." {
                // Also how the kernel resolves an NFS-style file handle (FUSE export support):
                // LOOKUP(nodeid, "."), for any kind of inode.
                parent
            } else {
                let dir = p.dir().ok_or_else(|| not_directory("not a directory"))?;
                match name {
                    b".." => dir.parent,
                    _ => dir
                        .get(name)
                        .map(|e| e.ino)
                        .ok_or_else(|| not_found("no such entry"))?,
                }
            }
        };
        let cell = self.cell(ino)?;
        cell.lookups.fetch_add(1, Ordering::AcqRel);
        let entry = Entry::of(&cell.inode.read());
        Ok(entry)
    }

    /// Counts a lookup reference for an inode handed to the kernel by create/mkdir/readdirplus.
    pub fn add_lookup(&self, ino: u64) {
        if let Ok(c) = self.cell(ino) {
            c.lookups.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The kernel forgets `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let Ok(cell) = self.cell(ino) else { return };
        let prev = cell.lookups.fetch_sub(
            n.min(cell.lookups.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
        if prev <= n {
            self.reclaim_if_orphan(ino);
        }
    }

    fn reclaim_if_orphan(&self, ino: u64) {
        if self.read_only || ino == ROOT_INO {
            return;
        }
        let Ok(cell) = self.cell(ino) else { return };
        if cell.lookups.load(Ordering::Acquire) > 0 || cell.opens.load(Ordering::Acquire) > 0 {
            return;
        }
        if cell.inode.read().attr.nlink != 0 {
            return;
        }
        let _gate = self.gate.read();
        let Ok(mut locked) = self.lock(&[ino]) else {
            return;
        };
        let still = locked.get(ino).map(|i| i.attr.nlink == 0).unwrap_or(false);
        if still
            && !self.is_referenced(ino)
            && let Err(e) = self.commit(Op::Reclaim { ino }, &mut locked)
        {
            tracing::warn!("reclaim of inode {ino} failed: {e}");
        }
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        Ok(self.cell(ino)?.inode.read().attr.clone())
    }

    /// Attributes and block count of `ino`.
    pub fn stat(&self, ino: u64) -> FsResult<Entry> {
        Ok(Entry::of(&self.cell(ino)?.inode.read()))
    }

    /// chmod / chown / truncate / utimes.
    pub fn setattr(&self, caller: Caller, ino: u64, req: SetAttr) -> FsResult<Entry> {
        self.check_writable()?;
        self.maybe_checkpoint();
        let _gate = self.gate.read();
        let mut locked = self.lock(&[ino])?;
        let now = Time::now();
        if let Some(size) = req.size {
            let inode = locked.get(ino)?;
            match inode.body {
                Body::File(_) => {}
                Body::Dir(_) => return Err(is_directory("cannot truncate a directory")),
                _ => return Err(invalid("cannot truncate this file type")),
            }
            if size > MAX_FILE_BYTES {
                return Err(file_too_large(format!(
                    "size {size} exceeds the largest file size"
                )));
            }
            // A truncate, even to the same size, takes privileges away like a write does,
            // before the size changes (a mode asked for in the same request is set below).
            self.drop_privileges(inode, Writer::process(caller))?;
            if size != inode.attr.size || req.mtime.is_none() {
                let mut cow = Vec::new();
                if size < inode.attr.size
                    && size % FRAME_SIZE != 0
                    && let Body::File(map) = &inode.body
                {
                    let tail = (size % FRAME_SIZE) as usize;
                    cow.extend(self.cow_frame(
                        map,
                        size / FRAME_SIZE,
                        tail,
                        FRAME_SIZE as usize,
                    )?);
                }
                let op = Op::Truncate {
                    ino,
                    size,
                    time: now,
                    mode: inode.attr.mode,
                    cow,
                };
                self.commit_cow(op, &mut locked)?;
            }
        }
        let inode = locked.get(ino)?;
        let a = inode.attr.clone();
        let mut mode = a.mode;
        let mut uid = a.uid;
        let mut gid = a.gid;
        let mut changed = false;
        if let Some(m) = req.mode {
            mode = (a.mode & libc::S_IFMT) | (m & 0o7777);
            changed = true;
            if caller.uid != 0 && caller.uid != a.uid {
                // Only the kernel changes the mode of someone else's file for an
                // unprivileged caller: dropping privileges after that caller's write
                // (buffered mode). FUSE keeps setgid on a file that is not group-executable;
                // Linux (tmpfs, ext4) also drops it when the writer is outside the group.
                mode = mode_without_suidgid(mode, a.gid, caller);
            }
        }
        if let Some(u) = req.uid {
            changed |= u != uid;
            uid = u;
        }
        if let Some(g) = req.gid {
            changed |= g != gid;
            gid = g;
        }
        if (req.uid.is_some() || req.gid.is_some()) && req.mode.is_none() && a.kind() != Kind::Dir {
            // chown clears setuid, and setgid when group-executable, even when the owner
            // stays the same (Linux's chown_common; with HANDLE_KILLPRIV_V2 the kernel
            // leaves this to the daemon).
            mode = clear_suid_sgid(mode);
        }
        let atime = req.atime.unwrap_or(a.atime);
        let mtime = req.mtime.unwrap_or(a.mtime);
        changed |=
            req.atime.is_some() || req.mtime.is_some() || req.uid.is_some() || req.gid.is_some();
        let ctime = req.ctime.unwrap_or(if changed { now } else { a.ctime });
        if let Some(old_acl) = inode.xattrs.get(ACCESS_XATTR)
            && req.mode.is_some()
        {
            // chmod of an inode with an access ACL: the ACL follows the mode, atomically.
            let mut new_acl = Acl::decode(old_acl)
                .map_err(|e| corrupt(format!("inode {ino}: stored access ACL is invalid: {e}")))?;
            new_acl.chmod(mode);
            let op = Op::SetAttrXattrs {
                ino,
                mode,
                uid,
                gid,
                atime,
                mtime,
                ctime,
                xattrs: vec![(ACCESS_XATTR.to_vec(), Some(new_acl.encode()))],
            };
            self.commit(op, &mut locked)?;
            return Ok(Entry::of(locked.get(ino)?));
        }
        if changed || req.ctime.is_some() {
            self.commit(
                Op::SetAttr {
                    ino,
                    mode,
                    uid,
                    gid,
                    atime,
                    mtime,
                    ctime,
                },
                &mut locked,
            )?;
        }
        Ok(Entry::of(locked.get(ino)?))
    }

    // ---- namespace ------------------------------------------------------------------

    fn new_attr(&self, caller: Caller, parent: &Attr, mode: u32, rdev: u32, size: u64) -> Attr {
        let now = Time::now();
        let mut mode = mode;
        let mut gid = caller.gid;
        if parent.mode & libc::S_ISGID != 0 {
            gid = parent.gid;
            if mode & libc::S_IFMT == libc::S_IFDIR {
                mode |= libc::S_ISGID;
            }
        }
        let nlink = if mode & libc::S_IFMT == libc::S_IFDIR {
            2
        } else {
            1
        };
        Attr {
            mode,
            uid: caller.uid,
            gid,
            nlink,
            size,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            rdev,
            generation: 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_inode(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
        body: NewBody,
    ) -> FsResult<Entry> {
        self.check_writable()?;
        check_name(name)?;
        self.maybe_checkpoint();
        self.make_room(INODE_RECORD_BYTES + name.len() as u64, 0);
        let _gate = self.gate.read();
        let _ns = self.ns.lock();
        let mut locked = self.lock(&[parent])?;
        let p = locked.get(parent)?;
        let dir = p
            .dir()
            .ok_or_else(|| not_directory("parent is not a directory"))?;
        if p.attr.nlink == 0 {
            return Err(not_found("parent directory was removed"));
        }
        if dir.get(name).is_some() {
            return Err(exists("entry exists"));
        }
        let size = match &body {
            NewBody::Symlink(t) => t.len() as u64,
            _ => 0,
        };
        self.ensure_metadata_room(INODE_RECORD_BYTES + name.len() as u64 + size)?;
        // The parent's default ACL, or else the umask, limits the new inode's mode.
        let default_acl = p.xattrs.get(DEFAULT_XATTR).map(Vec::as_slice);
        let (mode, xattrs) = acl::inherit(default_acl, mode, umask)
            .map_err(|e| corrupt(format!("directory {parent}: invalid default ACL: {e}")))?;
        let attr = self.new_attr(caller, &p.attr, mode, rdev, size);
        let ino = self.next_ino.fetch_add(1, Ordering::AcqRel);
        let (name, attr_out) = (name.to_vec(), attr.clone());
        let op = if xattrs.is_empty() {
            Op::Create {
                parent,
                name,
                ino,
                attr,
                body,
            }
        } else {
            Op::CreateWithXattrs {
                parent,
                name,
                ino,
                attr,
                body,
                xattrs,
            }
        };
        self.commit(op, &mut locked)?;
        let attr = attr_out;
        self.add_lookup(ino);
        Ok(Entry {
            ino,
            attr,
            blocks: 0,
        })
    }

    /// mknod: regular files, FIFOs, sockets, device nodes. `mode` is used as given (no
    /// umask), limited only by the parent's default ACL.
    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> FsResult<Entry> {
        self.mknod_with_umask(caller, parent, name, mode, 0, rdev)
    }

    /// mknod with the caller's umask, which applies unless the parent has a default ACL.
    pub fn mknod_with_umask(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> FsResult<Entry> {
        let body = match Kind::from_mode(mode) {
            Some(Kind::File) => NewBody::File,
            Some(Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev) => NewBody::Special,
            Some(Kind::Dir) => return self.mkdir_with_umask(caller, parent, name, mode, umask),
            _ => return Err(invalid("mknod of an unknown file type")),
        };
        let mode = if mode & libc::S_IFMT == 0 {
            mode | libc::S_IFREG
        } else {
            mode
        };
        self.create_inode(caller, parent, name, mode, umask, rdev, body)
    }

    /// mkdir (`mode` as given, limited only by the parent's default ACL).
    pub fn mkdir(&self, caller: Caller, parent: u64, name: &[u8], mode: u32) -> FsResult<Entry> {
        self.mkdir_with_umask(caller, parent, name, mode, 0)
    }

    /// mkdir with the caller's umask, which applies unless the parent has a default ACL.
    pub fn mkdir_with_umask(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> FsResult<Entry> {
        self.create_inode(
            caller,
            parent,
            name,
            libc::S_IFDIR | (mode & 0o7777),
            umask,
            0,
            NewBody::Dir,
        )
    }

    /// symlink.
    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> FsResult<Entry> {
        if target.is_empty() {
            return Err(not_found("empty symlink target"));
        }
        if target.len() > SYMLINK_MAX {
            return Err(name_too_long("symlink target too long"));
        }
        self.create_inode(
            caller,
            parent,
            name,
            libc::S_IFLNK | 0o777,
            0,
            0,
            NewBody::Symlink(target.to_vec()),
        )
    }

    /// create (O_CREAT). With `exclusive`, an existing name is EEXIST; otherwise the existing
    /// file is returned (a race with another creator). `mode` as given, limited only by the
    /// parent's default ACL.
    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        exclusive: bool,
    ) -> FsResult<Entry> {
        self.create_with_umask(caller, parent, name, mode, 0, exclusive)
    }

    /// create with the caller's umask, which applies unless the parent has a default ACL.
    pub fn create_with_umask(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        exclusive: bool,
    ) -> FsResult<Entry> {
        self.create_or_open(caller, parent, name, mode, umask, exclusive)
            .map(|(entry, _)| entry)
    }

    /// [`Volume::create_with_umask`], also saying whether the file is new (false: the name
    /// existed and `exclusive` was not asked for).
    pub fn create_or_open(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        exclusive: bool,
    ) -> FsResult<(Entry, bool)> {
        match self.create_inode(
            caller,
            parent,
            name,
            libc::S_IFREG | (mode & 0o7777),
            umask,
            0,
            NewBody::File,
        ) {
            Err(e) if e.kind == ErrorKind::Exists && !exclusive => {
                let entry = self.lookup(parent, name)?;
                if entry.attr.kind() == Kind::Dir {
                    self.forget(entry.ino, 1);
                    return Err(is_directory("is a directory"));
                }
                Ok((entry, false))
            }
            other => other.map(|entry| (entry, true)),
        }
    }

    /// readlink.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        match &self.cell(ino)?.inode.read().body {
            Body::Symlink(t) => Ok(t.clone()),
            _ => Err(invalid("not a symlink")),
        }
    }

    /// link.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> FsResult<Entry> {
        self.check_writable()?;
        check_name(new_name)?;
        self.maybe_checkpoint();
        self.make_room(INODE_RECORD_BYTES + new_name.len() as u64, 0);
        let _gate = self.gate.read();
        let _ns = self.ns.lock();
        let mut locked = self.lock(&[ino, new_parent])?;
        let i = locked.get(ino)?;
        if i.attr.kind() == Kind::Dir {
            return Err(not_permitted("hard links to directories are not allowed"));
        }
        if i.attr.nlink == 0 {
            return Err(not_found("file was removed"));
        }
        if i.attr.nlink >= u32::MAX - 1 {
            return Err(too_many_links("too many links"));
        }
        let p = locked.get(new_parent)?;
        let dir = p.dir().ok_or_else(|| not_directory("not a directory"))?;
        if p.attr.nlink == 0 {
            return Err(not_found("directory was removed"));
        }
        if dir.get(new_name).is_some() {
            return Err(exists("entry exists"));
        }
        self.ensure_metadata_room(INODE_RECORD_BYTES + new_name.len() as u64)?;
        self.commit(
            Op::Link {
                parent: new_parent,
                name: new_name.to_vec(),
                ino,
                time: Time::now(),
            },
            &mut locked,
        )?;
        self.add_lookup(ino);
        Ok(Entry::of(locked.get(ino)?))
    }

    /// unlink (`dir == false`) or rmdir (`dir == true`).
    pub fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        self.check_writable()?;
        if name.len() > NAME_MAX {
            return Err(name_too_long("name too long"));
        }
        if dir && name == b"." {
            return Err(invalid("cannot remove ."));
        }
        if dir && name == b".." {
            return Err(not_empty("cannot remove .."));
        }
        self.maybe_checkpoint();
        let _gate = self.gate.read();
        let _ns = self.ns.lock();
        let child = self.child(parent, name)?;
        let mut locked = self.lock(&[parent, child])?;
        let c = locked.get(child)?;
        match (dir, c.dir()) {
            (true, None) => return Err(not_directory("not a directory")),
            (false, Some(_)) => return Err(is_directory("is a directory")),
            (true, Some(d)) if !d.is_empty() => return Err(not_empty("directory not empty")),
            _ => {}
        }
        self.commit(
            Op::Unlink {
                parent,
                name: name.to_vec(),
                time: Time::now(),
            },
            &mut locked,
        )
    }

    /// rename with RENAME_NOREPLACE / RENAME_EXCHANGE.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        check_name(new_name)?;
        if name.len() > NAME_MAX {
            return Err(name_too_long("name too long"));
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange)
        {
            return Err(invalid("unsupported rename flags"));
        }
        self.maybe_checkpoint();
        let _gate = self.gate.read();
        let _ns = self.ns.lock();
        let src = self.child(parent, name)?;
        let dst = match self.child(new_parent, new_name) {
            Ok(d) => Some(d),
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if exchange && dst.is_none() {
            return Err(not_found("exchange target does not exist"));
        }
        if noreplace && dst.is_some() {
            return Err(exists("target exists"));
        }
        if dst == Some(src) {
            return Ok(());
        }
        // A directory may not move into itself or its own subtree (checked before locking:
        // parent pointers only change under `ns`, which we hold).
        if parent != new_parent
            && (self.is_ancestor(src, new_parent)?
                || (exchange && self.is_ancestor(dst.unwrap_or(0), parent)?))
        {
            return Err(invalid("cannot move a directory into itself"));
        }
        let mut inos = vec![parent, new_parent, src];
        inos.extend(dst);
        let mut locked = self.lock(&inos)?;
        let src_is_dir = locked.get(src)?.attr.kind() == Kind::Dir;
        let dst_is_dir = match dst {
            Some(d) => Some(locked.get(d)?.attr.kind() == Kind::Dir),
            None => None,
        };
        if locked.get(new_parent)?.dir().is_none() {
            return Err(not_directory("target parent is not a directory"));
        }
        if !exchange && let (Some(d), Some(d_is_dir)) = (dst, dst_is_dir) {
            if src_is_dir && !d_is_dir {
                return Err(not_directory(
                    "cannot replace a non-directory with a directory",
                ));
            }
            if !src_is_dir && d_is_dir {
                return Err(is_directory(
                    "cannot replace a directory with a non-directory",
                ));
            }
            if d_is_dir && locked.get(d)?.dir().is_some_and(|dd| !dd.is_empty()) {
                return Err(not_empty("target directory not empty"));
            }
        }
        let op = Op::Rename {
            parent,
            name: name.to_vec(),
            new_parent,
            new_name: new_name.to_vec(),
            exchange,
            time: Time::now(),
        };
        self.commit(op, &mut locked)
    }

    /// True if `ancestor` is `ino` or lies on the path from `ino` up to the root. Called
    /// under `ns`, so parent pointers are stable; reads each directory briefly.
    fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> FsResult<bool> {
        for _ in 0..1_000_000 {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INO {
                return Ok(false);
            }
            let cell = self.cell(ino)?;
            let next = cell.inode.read().dir().map(|d| d.parent);
            ino = match next {
                Some(p) => p,
                None => return Ok(false),
            };
        }
        Err(corrupt("directory tree too deep or cyclic"))
    }

    /// Directory entries after cookie `offset`: calls `add(ino, next_offset, kind, name)`
    /// until it returns true (buffer full). Includes "." and "..".
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &[u8]) -> bool,
    ) -> FsResult<()> {
        let cell = self.cell(ino)?;
        let inode = cell.inode.read();
        let dir = inode
            .dir()
            .ok_or_else(|| not_directory("not a directory"))?;
        if offset < 1 && add(ino, 1, Kind::Dir, b".") {
            return Ok(());
        }
        if offset < 2 && add(dir.parent, 2, Kind::Dir, b"..") {
            return Ok(());
        }
        for (cookie, e) in dir.entries_after(offset.max(2)) {
            if add(e.ino, cookie, e.kind, &e.name) {
                break;
            }
        }
        Ok(())
    }

    /// Up to `max` entries after cookie `offset` (with "." and ".."), as (ino, cookie, kind,
    /// name), copied out so that the directory's lock is not held while the caller looks at
    /// the children (readdirplus): holding it would invert the ascending-inode lock order.
    pub fn readdir_batch(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirListing>> {
        let mut out = Vec::with_capacity(max.min(1024));
        self.readdir(ino, offset, |child, cookie, kind, name| {
            out.push((child, cookie, kind, name.to_vec()));
            out.len() >= max
        })?;
        Ok(out)
    }

    // ---- files ----------------------------------------------------------------------

    /// Counts an open handle.
    pub fn open(&self, ino: u64, write: bool) -> FsResult<()> {
        if write {
            self.check_writable()?;
        }
        let cell = self.cell(ino)?;
        cell.opens.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Drops an open handle; reclaims an unlinked inode on its last close.
    pub fn release(&self, ino: u64) {
        if let Ok(cell) = self.cell(ino) {
            // Never below zero: a release without an open must not wrap the count and keep
            // an unlinked file's frames forever.
            let prev = cell
                .opens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if prev == Ok(1) {
                self.reclaim_if_orphan(ino);
                // Still here and nameless: the kernel's FORGET will free it.
                if self.cell(ino).is_ok_and(|c| c.inode.read().attr.nlink == 0) {
                    self.unlinked.touch(ino);
                }
            }
        }
    }

    /// Reads up to `size` bytes at `offset` and hands them to `reply` as one slice: straight
    /// from pool memory when the range lies in one extent, else gathered once.
    pub fn read<R>(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let cell = self.cell(ino)?;
        // relatime: atime moves when it is older than mtime/ctime or a day old, before the
        // data goes out (the kernel refetches attributes after a read). It is kept in RAM
        // and reaches the pool with the inode's next record or checkpoint.
        let stale = match self.atime_policy() {
            AtimePolicy::Never => false,
            AtimePolicy::Relative => relatime_stale(&cell.inode.read().attr),
            AtimePolicy::Always => true,
        };
        if !self.read_only && stale {
            cell.inode.write().attr.atime = Time::now();
        }
        let inode = cell.inode.read();
        self.read_locked(&inode, offset, size, reply)
    }

    fn read_locked<R>(
        &self,
        inode: &Inode,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let map = match &inode.body {
            Body::File(m) => m,
            Body::Dir(_) => return Err(is_directory("is a directory")),
            _ => return Err(invalid("not a regular file")),
        };
        let file_size = inode.attr.size;
        if offset >= file_size || size == 0 {
            return Ok(reply(&[]));
        }
        let len = (size as u64).min(file_size - offset);
        // One walk to see whether the range is a single pool slice (the common case for
        // files kept contiguous): then the reply is written straight from pool memory.
        let mut first: Option<&[u8]> = None;
        let mut pieces = 0usize;
        extent_io::for_each_segment(&self.pool, map, offset, len, |s| {
            pieces += 1;
            if let ReadSegment::Pool(b) = s {
                first.get_or_insert(b);
            }
            Ok(())
        })?;
        if pieces == 1
            && let Some(bytes) = first
        {
            self.stats
                .single_extent_reads
                .fetch_add(1, Ordering::Relaxed);
            return Ok(reply(bytes));
        }
        self.stats.gathered_reads.fetch_add(1, Ordering::Relaxed);
        GATHER.with(|g| {
            let mut buf = g.borrow_mut();
            buf.clear();
            extent_io::for_each_segment(&self.pool, map, offset, len, |s| {
                match s {
                    ReadSegment::Pool(b) => buf.extend_from_slice(b),
                    ReadSegment::Zeros(n) => {
                        let at = buf.len();
                        buf.resize(at + n, 0)
                    }
                }
                Ok(())
            })?;
            Ok(reply(&buf))
        })
    }

    /// Writes `data` at `offset` for `writer`; returns bytes written.
    pub fn write(
        &self,
        writer: impl Into<Writer>,
        ino: u64,
        offset: u64,
        data: &[u8],
    ) -> FsResult<u32> {
        let writer = writer.into();
        self.check_writable()?;
        if data.is_empty() {
            return Ok(0);
        }
        self.maybe_checkpoint();
        self.make_room(0, (data.len() as u64).div_ceil(FRAME_SIZE) + 1);
        let _gate = self.gate.read();
        let cell = self.cell(ino)?;
        let mut inode = cell.inode.write();
        self.write_locked(writer, &mut inode, offset, data)?;
        Ok(data.len() as u32)
    }

    /// A write into an inode the caller holds exclusively (and under the gate): copies
    /// `data` into the pool once, then journals the mapping/size change if there is one.
    fn write_locked(
        &self,
        writer: Writer,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
    ) -> FsResult<()> {
        let ino = inode.ino;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_BYTES)
            .ok_or_else(|| file_too_large("write past the largest file size"))?;
        let Body::File(map) = &mut inode.body else {
            return Err(invalid("not a regular file"));
        };
        let first = offset / FRAME_SIZE;
        self.ensure_space(map, first, end.div_ceil(FRAME_SIZE) - first)?;
        self.drop_privileges(inode, writer)?;
        let Body::File(map) = &mut inode.body else {
            return Err(invalid("not a regular file"));
        };
        let outcome = extent_io::write(&self.pool, &self.alloc, map, offset, data)?;
        let mode = inode.attr.mode;
        let size = inode.attr.size.max(end);
        let times = self.data_times(&inode.attr);
        if outcome.is_empty() && size == inode.attr.size {
            // A pure overwrite is not journaled; its times become durable with the next
            // record or checkpoint of this inode.
            inode.attr.mtime = times.mtime;
            inode.attr.ctime = times.ctime;
            self.stats.overwrites.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let op = Op::Write {
            ino,
            allocated: outcome.allocated,
            converted: outcome.converted,
            size,
            times,
            mode,
        };
        if let Err(e) = self.journal.append(&self.pool, &op) {
            // The record did not land: undo the mapping change so RAM matches the pool.
            if let (
                Op::Write {
                    allocated,
                    converted,
                    ..
                },
                Body::File(map),
            ) = (&op, &mut inode.body)
            {
                for a in allocated {
                    for r in map.punch(a.file_frame, a.pfns.len) {
                        let _ = self.alloc.free(r);
                    }
                }
                for c in converted {
                    map.mark_unwritten(c.file_frame, c.pfns.len);
                }
            }
            return Err(e);
        }
        inode.attr.size = size;
        inode.attr.mtime = times.mtime;
        inode.attr.ctime = times.ctime;
        self.stats.journaled_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// fsync / fdatasync / fsyncdir: everything is persisted (flushed and fenced) as it
    /// happens; this makes the inode durable on the pool's backing store as well, for a pool
    /// kept in a file on a disk (a no-op on device DAX). It msyncs what the inode's state
    /// depends on: the superblocks and the log, the current checkpoint, and a file's own
    /// extents, so one file's fsync does not write back every dirty page of the pool. A file
    /// of more than `FSYNC_EXTENTS_MAX` extents, or an unknown inode, syncs the whole pool.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let whole = match self.cell(ino) {
            Ok(cell) => match &cell.inode.read().body {
                Body::File(map) if map.len() > FSYNC_EXTENTS_MAX => true,
                Body::File(map) => {
                    ranges.extend(
                        map.iter()
                            .map(|e| (e.pfns.start.byte_offset(), e.pfns.len_bytes())),
                    );
                    false
                }
                _ => false,
            },
            Err(_) => true,
        };
        if whole {
            self.pool.sync(0, self.pool.len_bytes())?;
            return Ok(());
        }
        // The log ends where the data region starts: one range from the superblocks on.
        let (log_offset, log_len) = self.pool.log_region();
        ranges.push((0, log_offset + log_len));
        ranges.extend(
            self.checkpoint_ranges()
                .iter()
                .map(|r| (r.start.byte_offset(), r.len_bytes())),
        );
        for (offset, len) in ranges {
            self.pool.sync(offset, len)?;
        }
        Ok(())
    }

    /// fallocate with modes 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE[|KEEP_SIZE].
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        self.fallocate_as(Caller::default(), ino, offset, len, mode)
    }

    /// fallocate on behalf of `caller`. Every mode takes privileges away, as on Linux, before
    /// the file changes.
    pub fn fallocate_as(
        &self,
        caller: Caller,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> FsResult<()> {
        self.check_writable()?;
        if len == 0 {
            return Err(invalid("fallocate of zero length"));
        }
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= MAX_FILE_BYTES)
            .ok_or_else(|| file_too_large("range past the largest file size"))?;
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & FALLOC_FL_PUNCH_HOLE != 0;
        let zero = mode & FALLOC_FL_ZERO_RANGE != 0;
        if mode & !(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0
            || (punch && (zero || !keep))
        {
            return Err(unsupported("unsupported fallocate mode"));
        }
        self.maybe_checkpoint();
        self.make_room(0, len.div_ceil(FRAME_SIZE).saturating_add(1));
        let _gate = self.gate.read();
        let mut locked = self.lock(&[ino])?;
        let inode = locked.get(ino)?;
        match inode.body {
            Body::File(_) => {}
            Body::Dir(_) => return Err(is_directory("is a directory")),
            _ => return Err(enodev_like()),
        }
        self.drop_privileges(inode, Writer::process(caller))?;
        let times = self.data_times(&inode.attr);
        let mode = inode.attr.mode;
        let size = inode.attr.size;
        if punch {
            let punch_end = end.min(size);
            if punch_end > offset {
                let cow = match &locked.get(ino)?.body {
                    Body::File(map) => self.punch_edges_cow(map, offset, punch_end)?,
                    _ => Vec::new(),
                };
                let op = Op::Punch {
                    ino,
                    offset,
                    len: punch_end - offset,
                    times,
                    mode,
                    cow,
                };
                self.commit_cow(op, &mut locked)?;
            }
            return Ok(());
        }
        // Mode 0 / KEEP_SIZE / ZERO_RANGE: make sure every frame of the range is mapped;
        // ZERO_RANGE also turns it unwritten (and copies partial edge frames), all in one
        // record.
        let first = offset / FRAME_SIZE;
        let frames = end.div_ceil(FRAME_SIZE) - first;
        let inode = locked.get(ino)?;
        let Body::File(map) = &mut inode.body else {
            return Err(corrupt("not a file"));
        };
        self.ensure_space(map, first, frames)?;
        let cow = if zero {
            self.punch_edges_cow(map, offset, end)?
        } else {
            Vec::new()
        };
        let extents = match extent_io::allocate_unwritten(&self.alloc, map, first, frames) {
            Ok(e) => e,
            Err(e) => {
                for x in cow {
                    let _ = self.alloc.free(x.pfns);
                }
                return Err(e.into());
            }
        };
        let new_size = if keep { size } else { size.max(end) };
        let op = if zero {
            Op::ZeroRange {
                ino,
                offset,
                len,
                size: new_size,
                times,
                mode,
                cow,
                extents: extents.clone(),
            }
        } else if extents.is_empty() && new_size == size {
            return Ok(());
        } else {
            Op::Allocate {
                ino,
                extents: extents.clone(),
                size: new_size,
                times,
                mode,
            }
        };
        if let Err(e) = self.journal.append(&self.pool, &op) {
            for x in &extents {
                for r in map.punch(x.file_frame, x.pfns.len) {
                    let _ = self.alloc.free(r);
                }
            }
            if let Op::ZeroRange { cow, .. } = &op {
                for x in cow {
                    let _ = self.alloc.free(x.pfns);
                }
            }
            return Err(e);
        }
        self.apply(&op, &mut locked, false)
    }

    /// Copy-on-write frames for the partial frames at the edges of `[offset, end)`.
    fn punch_edges_cow(&self, map: &ExtentMap, offset: u64, end: u64) -> FsResult<Vec<Extent>> {
        let frame = FRAME_SIZE;
        let (first, first_off) = (offset / frame, (offset % frame) as usize);
        let (last, last_off) = (end / frame, (end % frame) as usize);
        let mut cow = Vec::new();
        if first == last {
            // Inside one frame.
            cow.extend(self.cow_frame(map, first, first_off, last_off)?);
            return Ok(cow);
        }
        if first_off != 0 {
            cow.extend(self.cow_frame(map, first, first_off, frame as usize)?);
        }
        if last_off != 0 {
            match self.cow_frame(map, last, 0, last_off) {
                Ok(e) => cow.extend(e),
                Err(err) => {
                    for e in cow {
                        let _ = self.alloc.free(e.pfns);
                    }
                    return Err(err);
                }
            }
        }
        Ok(cow)
    }

    /// Journals and applies a Truncate or Punch; if the record does not land, the frames
    /// copied for it go back to the allocator.
    fn commit_cow(&self, op: Op, locked: &mut Locked) -> FsResult<()> {
        let cow = match &op {
            Op::Truncate { cow, .. } | Op::Punch { cow, .. } => cow.clone(),
            _ => Vec::new(),
        };
        if let Err(e) = self.journal.append(&self.pool, &op) {
            for x in cow {
                let _ = self.alloc.free(x.pfns);
            }
            return Err(e);
        }
        self.apply(&op, locked, false)
    }

    /// Takes away what a change of `inode`'s data or size by `writer` removes (see
    /// [`privilege_drop`]), journaled before the change: a crash leaves either the old data
    /// with the old privileges, the old data without them, or the new data without them,
    /// never new data with the old privileges (a pure overwrite lands in place before any
    /// record, so no record after the data could give that). Costs nothing when there is
    /// nothing to take.
    fn drop_privileges(&self, inode: &mut Inode, writer: Writer) -> FsResult<()> {
        if let Some(op) = privilege_drop(inode, writer, Time::now()) {
            self.journal.append(&self.pool, &op)?;
            apply_set_attr_xattrs(inode, &op);
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE.
    pub fn seek(&self, ino: u64, offset: u64, whence: SeekWhence) -> FsResult<u64> {
        let cell = self.cell(ino)?;
        let inode = cell.inode.read();
        let map = inode
            .file_map()
            .ok_or_else(|| invalid("not a regular file"))?;
        let size = inode.attr.size;
        if offset >= size {
            return Err(no_such_offset("offset at or past end of file"));
        }
        let frame = offset / FRAME_SIZE;
        match whence {
            SeekWhence::Data => match map.next_data(frame) {
                Some(f) => {
                    let at = (f * FRAME_SIZE).max(offset);
                    if at >= size {
                        Err(no_such_offset("no data past offset"))
                    } else {
                        Ok(at)
                    }
                }
                None => Err(no_such_offset("no data past offset")),
            },
            SeekWhence::Hole => {
                let f = map.next_hole(frame);
                Ok(f.saturating_mul(FRAME_SIZE).max(offset).min(size))
            }
        }
    }

    /// copy_file_range: copies through the pool extent by extent.
    pub fn copy_range(
        &self,
        caller: Caller,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        self.check_writable()?;
        if len == 0 {
            return Ok(0);
        }
        self.maybe_checkpoint();
        self.make_room(0, len.div_ceil(FRAME_SIZE).saturating_add(1));
        let _gate = self.gate.read();
        let mut locked = self.lock(&[ino_in, ino_out])?;
        for ino in [ino_in, ino_out] {
            match locked.get(ino)?.attr.kind() {
                Kind::File => {}
                Kind::Dir => return Err(is_directory("copy_file_range on a directory")),
                _ => return Err(invalid("copy_file_range on a non-regular file")),
            }
        }
        let size_in = locked.get(ino_in)?.attr.size;
        if off_in >= size_in {
            return Ok(0);
        }
        let len = len.min(size_in - off_in);
        if ino_in == ino_out && off_in < off_out.saturating_add(len) && off_out < off_in + len {
            return Err(invalid("overlapping copy within one file"));
        }
        off_out
            .checked_add(len)
            .filter(|e| *e <= MAX_FILE_BYTES)
            .ok_or_else(|| file_too_large("copy past the largest file size"))?;
        let writer = Writer::process(caller);
        self.drop_privileges(locked.get(ino_out)?, writer)?;
        let src = locked.get(ino_in)?;
        let Body::File(src_map) = &src.body else {
            return Err(invalid("copy from a non-regular file"));
        };
        // The source as runs: (pool byte offset, length) for written extents, (None,
        // length) for holes and unwritten extents. One run per extent.
        let mut runs: Vec<(Option<u64>, u64)> = Vec::new();
        let end_in = off_in + len;
        let first = off_in / FRAME_SIZE;
        for m in src_map.mappings_iter(first, end_in.div_ceil(FRAME_SIZE) - first) {
            let from = (m.file_frame() * FRAME_SIZE).max(off_in);
            let to = ((m.file_frame() + m.frames()) * FRAME_SIZE).min(end_in);
            if from >= to {
                continue;
            }
            runs.push(match m {
                pfnfs_extent::Mapping::Mapped(e) if !e.unwritten => (
                    Some(e.pfns.start.byte_offset() + (from - e.file_frame * FRAME_SIZE)),
                    to - from,
                ),
                _ => (None, to - from),
            });
        }
        // One bulk copy per run, straight from the source frames into the destination
        // (different logical ranges never share frames, so the ranges are disjoint).
        let mut at = off_out;
        for (pool_offset, n) in runs {
            match pool_offset {
                Some(p) => {
                    let data = self.pool.read(p, n as usize)?;
                    self.write_locked(writer, locked.get(ino_out)?, at, data)?;
                }
                None => {
                    // Holes stay holes where the destination has none; mapped bytes are
                    // overwritten with zeros.
                    let dst = locked.get(ino_out)?;
                    let mapped = match &dst.body {
                        Body::File(m) => m
                            .mappings_iter(
                                at / FRAME_SIZE,
                                (at + n).div_ceil(FRAME_SIZE) - at / FRAME_SIZE,
                            )
                            .any(|m| matches!(m, pfnfs_extent::Mapping::Mapped(_))),
                        _ => false,
                    };
                    let (size, mode) = (dst.attr.size, dst.attr.mode);
                    let mut pos = at;
                    while mapped && pos < at + n {
                        let k = (at + n - pos).min(ZEROS.len() as u64);
                        self.write_locked(writer, locked.get(ino_out)?, pos, &ZEROS[..k as usize])?;
                        pos += k;
                    }
                    if !mapped && at + n > size {
                        // Extend the size over the hole, as a write of zeros would.
                        let op = Op::Truncate {
                            ino: ino_out,
                            size: at + n,
                            time: Time::now(),
                            mode,
                            cow: Vec::new(),
                        };
                        self.commit(op, &mut locked)?;
                    }
                }
            }
            at += n;
        }
        Ok(len)
    }

    // ---- xattrs ---------------------------------------------------------------------

    /// setxattr with XATTR_CREATE / XATTR_REPLACE, as root.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.setxattr_as(Caller::default(), ino, name, value, flags)
    }

    /// setxattr on behalf of `caller`. The POSIX ACL attributes are validated (EINVAL) and
    /// stored in canonical form; setting the access ACL also sets the mode's permission bits
    /// (and drops setgid for a caller outside the file's group), in the same record.
    pub fn setxattr_as(
        &self,
        caller: Caller,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        self.check_writable()?;
        check_xattr_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(record_too_large("xattr value too large"));
        }
        self.maybe_checkpoint();
        self.make_room(INODE_RECORD_BYTES + (name.len() + value.len()) as u64, 0);
        let _gate = self.gate.read();
        let mut locked = self.lock(&[ino])?;
        let inode = locked.get(ino)?;
        let present = inode.xattrs.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && present {
            return Err(exists("xattr exists"));
        }
        if flags & libc::XATTR_REPLACE != 0 && !present {
            return Err(no_attribute("no such xattr"));
        }
        let old = inode
            .xattrs
            .get(name)
            .map(|v| name.len() + v.len())
            .unwrap_or(0);
        if inode.xattr_bytes() - old + name.len() + value.len() > XATTR_TOTAL_MAX {
            return Err(no_space(
                "no room for more extended attributes on this inode",
            ));
        }
        self.ensure_metadata_room(INODE_RECORD_BYTES + (name.len() + value.len()) as u64)?;
        if acl::is_acl_name(name) {
            let op = acl_xattr_op(caller, inode, name, value)?;
            return self.commit(op, &mut locked);
        }
        self.commit(
            Op::SetXattr {
                ino,
                name: name.to_vec(),
                value: value.to_vec(),
                time: Time::now(),
            },
            &mut locked,
        )
    }

    /// getxattr.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        check_xattr_name(name)?;
        let cell = self.cell(ino)?;
        let inode = cell.inode.read();
        inode
            .xattrs
            .get(name)
            .cloned()
            .ok_or_else(|| no_attribute("no such xattr"))
    }

    /// listxattr: NUL-terminated names.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.listxattr_as(Caller::default(), ino)
    }

    /// listxattr on behalf of `caller`: `trusted.*` names are listed to root only, as
    /// Linux filesystems do (the kernel already refuses others reading or setting them).
    pub fn listxattr_as(&self, caller: Caller, ino: u64) -> FsResult<Vec<u8>> {
        let cell = self.cell(ino)?;
        let inode = cell.inode.read();
        let mut out = Vec::new();
        for k in inode.xattrs.keys() {
            if caller.uid != 0 && k.starts_with(b"trusted.") {
                continue;
            }
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    /// removexattr.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        check_xattr_name(name)?;
        self.maybe_checkpoint();
        let _gate = self.gate.read();
        let mut locked = self.lock(&[ino])?;
        if !locked.get(ino)?.xattrs.contains_key(name) {
            if acl::is_acl_name(name) {
                // Removing an ACL the inode does not have is not an error (ext4, xfs).
                return Ok(());
            }
            return Err(no_attribute("no such xattr"));
        }
        self.commit(
            Op::RemoveXattr {
                ino,
                name: name.to_vec(),
                time: Time::now(),
            },
            &mut locked,
        )
    }

    // ---- figures --------------------------------------------------------------------

    /// statfs figures.
    pub fn statfs(&self) -> FsStat {
        let s = self.alloc.stats();
        let inodes = self.inodes.len() as u64;
        let free = s.free_frames.saturating_sub(self.data_reserve());
        // The format has no inode table to run out of: what limits new inodes is the room
        // for metadata, at most INODE_RECORD_BYTES each.
        let meta_free = s.free_frames.saturating_sub(self.metadata_reserve());
        FsStat {
            total_frames: s.total_frames,
            free_frames: free,
            inodes,
            free_inodes: meta_free.saturating_mul(FRAME_SIZE / INODE_RECORD_BYTES),
        }
    }
}

/// True if a read should move atime under relatime rules.
fn relatime_stale(a: &Attr) -> bool {
    if a.atime <= a.mtime || a.atime <= a.ctime {
        return true;
    }
    Time::now().secs.saturating_sub(a.atime.secs) >= 24 * 3600
}

fn enodev_like() -> FsError {
    no_device("fallocate on a special file")
}

fn check_xattr_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(out_of_range("xattr name length out of range"));
    }
    let known = [b"user.".as_slice(), b"trusted.", b"security.", b"system."];
    if !known.iter().any(|p| name.starts_with(p)) {
        return Err(unsupported("unknown xattr namespace"));
    }
    if name.starts_with(b"system.") && !acl::is_acl_name(name) {
        return Err(unsupported(
            "system.* attributes other than the POSIX ACLs are not supported",
        ));
    }
    Ok(())
}

/// The record that takes away what a change of `inode`'s data or size by `writer` removes
/// (Linux's `file_remove_privs`), or None when there is nothing to take: the file capability
/// whoever writes, and unless the writer keeps them (CAP_FSETID) setuid, and setgid when the
/// file is group-executable or the writer is not in the file's group (the daemon sees only
/// the writer's primary group). Regular files only; page-cache write-back takes nothing.
pub(crate) fn privilege_drop(inode: &Inode, writer: Writer, now: Time) -> Option<Op> {
    let Writer::Process {
        caller,
        keeps_suidgid,
    } = writer
    else {
        return None;
    };
    let a = &inode.attr;
    if a.kind() != Kind::File {
        return None;
    }
    let mode = if keeps_suidgid {
        a.mode
    } else {
        mode_without_suidgid(a.mode, a.gid, caller)
    };
    let capability = inode.xattrs.contains_key(CAPABILITY_XATTR);
    if mode == a.mode && !capability {
        return None;
    }
    let xattrs = if capability {
        vec![(CAPABILITY_XATTR.to_vec(), None)]
    } else {
        Vec::new()
    };
    Some(Op::SetAttrXattrs {
        ino: inode.ino,
        mode,
        uid: a.uid,
        gid: a.gid,
        atime: a.atime,
        mtime: a.mtime,
        ctime: now,
        xattrs,
    })
}

/// `mode` of a file in group `gid` once a writer without CAP_FSETID changed it: setuid
/// cleared, and setgid when the file is group-executable or `caller` is not in its group.
fn mode_without_suidgid(mode: u32, gid: u32, caller: Caller) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_ISGID != 0 && (m & libc::S_IXGRP != 0 || caller.gid != gid) {
        m &= !libc::S_ISGID;
    }
    m
}

fn clear_suid_sgid(mode: u32) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    m
}

/// The record for setting a POSIX ACL attribute on `inode`. A default ACL is stored as given
/// (directories only, EACCES otherwise, as Linux). An access ACL sets the mode's permission
/// bits; one that the mode alone expresses is not stored (an old one is removed), as ext4 and
/// xfs do. Setgid is dropped when the caller is neither root nor in the file's group (the
/// daemon sees only the caller's primary group).
fn acl_xattr_op(caller: Caller, inode: &Inode, name: &[u8], value: &[u8]) -> FsResult<Op> {
    let a = &inode.attr;
    if a.kind() == Kind::Symlink {
        return Err(unsupported("symlinks have no ACLs"));
    }
    let acl = Acl::decode(value)?;
    let mut mode = a.mode;
    let mut xattrs = Vec::new();
    if name == DEFAULT_XATTR {
        if a.kind() != Kind::Dir {
            return Err(access_denied("only directories have a default ACL"));
        }
        xattrs.push((name.to_vec(), Some(acl.encode())));
    } else {
        let (new_mode, equiv) = acl.equiv_mode(a.mode);
        mode = new_mode;
        if caller.uid != 0 && caller.gid != a.gid {
            mode &= !libc::S_ISGID;
        }
        if !equiv {
            xattrs.push((name.to_vec(), Some(acl.encode())));
        } else if inode.xattrs.contains_key(name) {
            xattrs.push((name.to_vec(), None));
        }
    }
    Ok(Op::SetAttrXattrs {
        ino: inode.ino,
        mode,
        uid: a.uid,
        gid: a.gid,
        atime: a.atime,
        mtime: a.mtime,
        ctime: Time::now(),
        xattrs,
    })
}
