//! Names: lookups and the kernel's lookup references (forget), creating inodes (create,
//! mknod, mkdir, symlink), link, unlink and rmdir, rename, readlink and readdir. Namespace
//! mutations hold `ns` (second in the locking order, see [`super`]), so the names they
//! validate are still there when their records are applied.

use std::sync::atomic::Ordering;

use super::*;
use crate::acl::{self, DEFAULT_XATTR};

/// Entries read from a directory at a time by readdir.
const READDIR_BATCH: usize = 128;

/// One readdir entry copied out of a directory: (inode, cookie, kind, name).
pub type DirListing = (u64, u64, Kind, Vec<u8>);

impl Volume {
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
                        .map_err(dir_err)?
                        .map(|(_, e)| e.ino)
                        .ok_or_else(|| not_found("no such entry"))?,
                }
            }
        };
        let cell = self.cell(ino)?;
        let inode = cell.inode.read();
        if name == b"." && inode.attr.nlink == 0 {
            // A file handle to a file that is gone from the namespace, which the daemon still
            // holds (not yet reclaimed), resolves to ESTALE: the kernel turns this ENOENT
            // into it. (While the kernel itself holds the inode it never asks.)
            return Err(not_found("inode has no names left"));
        }
        cell.lookups.fetch_add(1, Ordering::AcqRel);
        Ok(Entry::of(&inode))
    }

    /// Counts a lookup reference for an inode handed to the kernel by create/mkdir/readdirplus.
    pub fn add_lookup(&self, ino: u64) {
        if let Ok(c) = self.cell(ino) {
            c.lookups.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The kernel forgets `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        // Only a cached inode can have anything to do: one the cache dropped is clean, and
        // reading it back for this would turn the kernel's cache drop (a FORGET for every
        // inode it held) into a read of all of them.
        let Some(cell) = self.inodes.get(&ino).map(|c| c.value().clone()) else {
            return;
        };
        let prev = cell.lookups.fetch_sub(
            n.min(cell.lookups.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
        if prev <= n {
            self.reclaim_if_orphan(ino);
        }
    }

    pub(super) fn reclaim_if_orphan(&self, ino: u64) {
        if self.read_only || ino == ROOT_INO {
            return;
        }
        let Ok(cell) = self.cell(ino) else { return };
        if cell.opens.load(Ordering::Acquire) > 0 {
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
            generation: u64::from(self.generation),
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
        if dir.get(name).map_err(dir_err)?.is_some() {
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
        if dir.get(new_name).map_err(dir_err)?.is_some() {
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
        // In batches, so that a large directory is read from the tree only as far as the
        // caller's buffer goes.
        let mut after = offset.max(2);
        loop {
            let batch = dir.entries_after(after, READDIR_BATCH).map_err(dir_err)?;
            let Some(&(last, _)) = batch.last() else {
                return Ok(());
            };
            for (cookie, e) in &batch {
                if add(e.ino, *cookie, e.kind, &e.name) {
                    return Ok(());
                }
            }
            if batch.len() < READDIR_BATCH {
                return Ok(());
            }
            after = last;
        }
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
}
