//! [`Volume::apply`], the one place state changes. At run time a record is applied once it
//! is durable; at mount (and in fsck) replay applies the log's records with the same code,
//! also redoing the mapping changes of data records.

use pfnfs_extent::io as extent_io;

use super::*;

impl Volume {
    pub(super) fn replay(&self, op: &Op) -> FsResult<()> {
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
    pub(super) fn touched(&self, op: &Op) -> FsResult<Vec<u64>> {
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
            | Op::WriteInline { ino, .. }
            | Op::Spill { ino, .. }
            | Op::Reclaim { ino } => {
                self.cell(*ino)?;
                vec![*ino]
            }
        })
    }

    /// Applies `op` to the locked inodes. At run time the op was validated and its record is
    /// durable; at replay (`replay == true`) mapping changes of data ops are redone too.
    ///
    /// One function per record kind: methods for the records that touch the allocator or the
    /// inode table, free functions for those that change only their inode.
    pub(super) fn apply(&self, op: &Op, locked: &mut Locked, replay: bool) -> FsResult<()> {
        match op {
            Op::Create {
                parent,
                name,
                ino,
                attr,
                body,
            } => self.apply_create(locked, *parent, name, *ino, attr, body, &[]),
            Op::CreateWithXattrs {
                parent,
                name,
                ino,
                attr,
                body,
                xattrs,
            } => self.apply_create(locked, *parent, name, *ino, attr, body, xattrs),
            Op::Link {
                parent,
                name,
                ino,
                time,
            } => apply_link(locked, *parent, name, *ino, *time),
            Op::Unlink { parent, name, time } => {
                self.apply_unlink(locked, *parent, name, *time, replay)
            }
            Op::Rename {
                parent,
                name,
                new_parent,
                new_name,
                exchange,
                time,
            } => self.apply_rename(
                locked,
                *parent,
                name,
                *new_parent,
                new_name,
                *exchange,
                *time,
                replay,
            ),
            Op::SetAttr {
                ino,
                mode,
                uid,
                gid,
                atime,
                mtime,
                ctime,
            } => {
                apply_set_attr(locked.get(*ino)?, *mode, *uid, *gid, *atime, *mtime, *ctime);
                Ok(())
            }
            Op::Truncate {
                ino,
                size,
                time,
                mode,
                cow,
            } => self.apply_truncate(locked.get(*ino)?, *size, *time, *mode, cow, replay),
            Op::Write {
                ino,
                allocated,
                converted,
                size,
                times,
                mode,
            } => self.apply_write(
                locked.get(*ino)?,
                allocated,
                converted,
                *size,
                *times,
                *mode,
                replay,
            ),
            Op::Allocate {
                ino,
                extents,
                size,
                times,
                mode,
            } => self.apply_allocate(locked.get(*ino)?, extents, *size, *times, *mode, replay),
            Op::Punch {
                ino,
                offset,
                len,
                times,
                mode,
                cow,
            } => self.apply_punch(locked.get(*ino)?, *offset, *len, *times, *mode, cow, replay),
            Op::ZeroRange {
                ino,
                offset,
                len,
                size,
                times,
                mode,
                cow,
                extents,
            } => self.apply_zero_range(
                locked.get(*ino)?,
                *offset,
                *len,
                *size,
                *times,
                *mode,
                cow,
                extents,
                replay,
            ),
            Op::SetXattr {
                ino,
                name,
                value,
                time,
            } => {
                apply_set_xattr(locked.get(*ino)?, name, value, *time);
                Ok(())
            }
            Op::RemoveXattr { ino, name, time } => {
                apply_remove_xattr(locked.get(*ino)?, name, *time);
                Ok(())
            }
            Op::Reclaim { ino } => self.apply_reclaim(locked.get(*ino)?),
            Op::SetAttrXattrs { ino, .. } => {
                apply_set_attr_xattrs(locked.get(*ino)?, op);
                Ok(())
            }
            Op::WriteInline {
                ino,
                offset,
                data,
                size,
                times,
                mode,
            } => apply_write_inline(locked.get(*ino)?, *offset, data, *size, *times, *mode),
            Op::Spill { ino, extent } => self.apply_spill(locked.get(*ino)?, extent, replay),
        }
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
        if dir.get(name).map_err(dir_err)?.is_some() {
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
        // Changed (so pinned) before it is in the table, where the cache could evict it.
        {
            let mut dirty = self.dirty.lock();
            dirty.inodes.insert(ino);
            dirty.fresh.insert(ino);
        }
        self.insert_cell(inode);
        self.inode_count.fetch_add(1, Ordering::AcqRel);
        self.next_ino.fetch_max(ino + 1, Ordering::AcqRel);
        Ok(())
    }

    /// Applies an `Unlink`: the name goes; an inode left without names is reclaimed unless
    /// the kernel still holds it (then it waits in `unlinked` for its FORGET or last release).
    fn apply_unlink(
        &self,
        locked: &mut Locked,
        parent: u64,
        name: &[u8],
        time: Time,
        replay: bool,
    ) -> FsResult<()> {
        let p = locked.get(parent)?;
        let dir = p
            .dir_mut()
            .ok_or_else(|| not_directory("parent is not a directory"))?;
        let entry = dir
            .remove(name)
            .map_err(dir_err)?
            .ok_or_else(|| not_found("no such entry"))?;
        p.attr.mtime = time;
        p.attr.ctime = time;
        if entry.kind == Kind::Dir {
            p.attr.nlink = p.attr.nlink.saturating_sub(1);
        }
        self.lose_name(locked.get(entry.ino)?, entry.kind, time, replay)
    }

    /// An inode loses one of its names (unlink, rmdir, or a rename over it): a directory
    /// loses its only one. Left without names, it is reclaimed at once unless the kernel still
    /// holds it (at run time), else remembered as unlinked.
    fn lose_name(&self, inode: &mut Inode, kind: Kind, time: Time, replay: bool) -> FsResult<()> {
        if kind == Kind::Dir {
            inode.attr.nlink = 0;
        } else {
            inode.attr.nlink = inode.attr.nlink.saturating_sub(1);
        }
        inode.attr.ctime = time;
        if inode.attr.nlink == 0 {
            if replay || !self.is_referenced(inode.ino) {
                self.reclaim_locked(inode)?;
            } else {
                self.unlinked.touch(inode.ino);
            }
        }
        Ok(())
    }

    /// Applies a `Rename` (or RENAME_EXCHANGE): a replaced target loses that name and, left
    /// without names, goes as an unlinked one does.
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
        let src = match locked.get(parent)?.dir() {
            Some(d) => d.get(name).map_err(dir_err)?.map(|(_, e)| e),
            None => None,
        }
        .ok_or_else(|| not_found("no source"))?;
        let dst = match locked.get(new_parent)?.dir() {
            Some(d) => d.get(new_name).map_err(dir_err)?.map(|(_, e)| e),
            None => None,
        };
        let src_dir = src.kind == Kind::Dir;
        if exchange {
            let dst = dst.ok_or_else(|| not_found("no target to exchange with"))?;
            let cross = parent != new_parent;
            Self::exchange_side(locked, parent, name, &dst, &src, cross, time)?;
            Self::exchange_side(locked, new_parent, new_name, &src, &dst, cross, time)?;
            return Ok(());
        }
        if let Some(dst) = &dst {
            self.lose_name(locked.get(dst.ino)?, dst.kind, time, replay)?;
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
                d.remove(new_name).map_err(dir_err)?;
            }
            d.rename_in_place(name, new_name).map_err(dir_err)?;
            p.attr.mtime = time;
            p.attr.ctime = time;
        } else {
            {
                let p = locked.get(parent)?;
                p.dir_mut()
                    .ok_or_else(|| not_directory("not a directory"))?
                    .remove(name)
                    .map_err(dir_err)?;
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
                if d.replace(new_name, src.ino, src.kind)
                    .map_err(dir_err)?
                    .is_none()
                {
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
            .replace(name, incoming.ino, incoming.kind)
            .map_err(dir_err)?;
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

    /// Applies a `Truncate`: frames past the new size are freed and the copied last frame
    /// (if any) replaces its mapping.
    fn apply_truncate(
        &self,
        i: &mut Inode,
        size: u64,
        time: Time,
        mode: u32,
        cow: &[Extent],
        replay: bool,
    ) -> FsResult<()> {
        match &mut i.body {
            Body::File(map) => {
                for r in map.truncate(size.div_ceil(FRAME_SIZE)) {
                    self.alloc.free(r)?;
                }
                self.apply_cow(map, cow, replay)?;
            }
            // An inline file stays inline (cut, or grown with zeros) up to the inline limit; to
            // go past it, it spills first.
            Body::Inline(bytes) => {
                if size > INLINE_DATA_MAX as u64 || !cow.is_empty() {
                    return Err(corrupt(format!(
                        "truncate of inline inode {} to {size} bytes",
                        i.ino
                    )));
                }
                if size == 0 {
                    i.body = Body::File(ExtentMap::new());
                } else {
                    bytes.resize(size as usize, 0);
                }
            }
            _ => {}
        }
        i.attr.size = size;
        i.attr.mtime = time;
        i.attr.ctime = time;
        i.attr.mode = mode;
        Ok(())
    }

    /// Applies a `Write`: maps the allocated extents and marks the converted ones written (at
    /// run time the record's frames were allocated by the write; replay takes them out of the
    /// free set).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_write(
        &self,
        i: &mut Inode,
        allocated: &[Extent],
        converted: &[Extent],
        size: u64,
        times: DataTimes,
        mode: u32,
        replay: bool,
    ) -> FsResult<()> {
        let Body::File(map) = &mut i.body else {
            return Err(corrupt("write to a non-file"));
        };
        self.map_new(map, allocated, converted, replay)?;
        i.attr.size = size;
        i.attr.mtime = times.mtime;
        i.attr.ctime = times.ctime;
        i.attr.mode = mode;
        Ok(())
    }

    /// Applies an `Allocate` (fallocate): maps the unwritten extents.
    fn apply_allocate(
        &self,
        i: &mut Inode,
        extents: &[Extent],
        size: u64,
        times: DataTimes,
        mode: u32,
        replay: bool,
    ) -> FsResult<()> {
        let Body::File(map) = &mut i.body else {
            return Err(corrupt("fallocate of a non-file"));
        };
        self.map_new(map, extents, &[], replay)?;
        i.attr.size = size;
        i.attr.mtime = times.mtime;
        i.attr.ctime = times.ctime;
        i.attr.mode = mode;
        Ok(())
    }

    /// Applies a `Punch`: whole frames in the range are freed, the copied edge frames replace
    /// their mappings.
    #[allow(clippy::too_many_arguments)]
    fn apply_punch(
        &self,
        i: &mut Inode,
        offset: u64,
        len: u64,
        times: DataTimes,
        mode: u32,
        cow: &[Extent],
        replay: bool,
    ) -> FsResult<()> {
        if let Body::File(map) = &mut i.body {
            let end = offset.saturating_add(len);
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
        i.attr.mode = mode;
        Ok(())
    }

    /// Applies a `ZeroRange`: maps the new unwritten extents; whole frames in the range turn
    /// unwritten and the copied edge frames replace their mappings.
    #[allow(clippy::too_many_arguments)]
    fn apply_zero_range(
        &self,
        i: &mut Inode,
        offset: u64,
        len: u64,
        size: u64,
        times: DataTimes,
        mode: u32,
        cow: &[Extent],
        extents: &[Extent],
        replay: bool,
    ) -> FsResult<()> {
        if let Body::File(map) = &mut i.body {
            self.map_new(map, extents, &[], replay)?;
            let end = offset.saturating_add(len);
            let first_full = offset.saturating_add(FRAME_SIZE - 1) / FRAME_SIZE;
            let last_full = end / FRAME_SIZE;
            if first_full < last_full {
                map.mark_unwritten(first_full, last_full - first_full);
            }
            self.apply_cow(map, cow, replay)?;
        }
        i.attr.size = size;
        i.attr.mtime = times.mtime;
        i.attr.ctime = times.ctime;
        i.attr.mode = mode;
        Ok(())
    }

    /// Applies a `Spill`: the inline bytes are in the frame of `extent` now, which the file
    /// maps from its first frame (replay takes the frame out of the free set).
    pub(super) fn apply_spill(&self, i: &mut Inode, extent: &Extent, replay: bool) -> FsResult<()> {
        if !matches!(i.body, Body::Inline(_)) {
            return Err(corrupt(format!(
                "spill of inode {}, which is not inline",
                i.ino
            )));
        }
        let mut map = ExtentMap::new();
        self.map_new(&mut map, std::slice::from_ref(extent), &[], replay)?;
        i.body = Body::File(map);
        Ok(())
    }

    /// Applies a `Reclaim`: releases the inode if it still has no names.
    fn apply_reclaim(&self, i: &mut Inode) -> FsResult<()> {
        if i.attr.nlink == 0 {
            self.reclaim_locked(i)?;
        }
        Ok(())
    }

    /// Maps the extents a logged op allocated and marks `converted` written
    /// ([`extent_io::apply_outcome`]). At run time the op's frames were allocated before its
    /// record and are held by nothing else now; replay takes them out of the free set first.
    fn map_new(
        &self,
        map: &mut ExtentMap,
        extents: &[Extent],
        converted: &[Extent],
        replay: bool,
    ) -> FsResult<()> {
        if replay {
            for e in extents {
                self.alloc.reserve(e.pfns)?;
            }
        }
        extent_io::apply_outcome(map, extents, converted)?;
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

    /// Releases an inode without names: frees its frames and drops it from the table.
    pub(super) fn reclaim_locked(&self, inode: &mut Inode) -> FsResult<()> {
        if let Body::File(map) = &mut inode.body {
            for e in map.iter().collect::<Vec<_>>() {
                self.alloc.free(e.pfns)?;
            }
            *map = ExtentMap::new();
        }
        self.inodes.remove(&inode.ino);
        self.touch_inode(inode.ino);
        self.inode_count.fetch_sub(1, Ordering::AcqRel);
        self.unlinked.reclaimed(inode.ino);
        Ok(())
    }
}

/// Applies a `WriteInline`: the bytes land in the file's inline data, which a file without
/// extents gets here (its size so far reads as zeros).
pub(super) fn apply_write_inline(
    i: &mut Inode,
    offset: u64,
    data: &[u8],
    size: u64,
    times: DataTimes,
    mode: u32,
) -> FsResult<()> {
    let end = offset + data.len() as u64;
    if size > INLINE_DATA_MAX as u64 || end > size || size < i.attr.size {
        return Err(corrupt(format!(
            "inline write to inode {} of {} bytes at {offset}, size {size}",
            i.ino,
            data.len()
        )));
    }
    if matches!(&i.body, Body::File(map) if map.is_empty()) {
        i.body = Body::Inline(vec![0; i.attr.size as usize]);
    }
    let Body::Inline(bytes) = &mut i.body else {
        return Err(corrupt(format!(
            "inline write to inode {}, which has extents or is not a file",
            i.ino
        )));
    };
    bytes.resize(size as usize, 0);
    bytes[offset as usize..end as usize].copy_from_slice(data);
    i.attr.size = size;
    i.attr.mtime = times.mtime;
    i.attr.ctime = times.ctime;
    i.attr.mode = mode;
    Ok(())
}

/// Applies a `Link`: a new name for an existing inode.
fn apply_link(locked: &mut Locked, parent: u64, name: &[u8], ino: u64, time: Time) -> FsResult<()> {
    let child = locked.get(ino)?;
    child.attr.nlink = child.attr.nlink.saturating_add(1);
    child.attr.ctime = time;
    let kind = child.attr.kind();
    let p = locked.get(parent)?;
    let dir = p
        .dir_mut()
        .ok_or_else(|| not_directory("parent is not a directory"))?;
    if dir.get(name).map_err(dir_err)?.is_some() {
        return Err(exists("entry exists"));
    }
    dir.insert(DirEntry {
        name: name.to_vec(),
        ino,
        kind,
    });
    p.attr.mtime = time;
    p.attr.ctime = time;
    Ok(())
}

/// Applies a `SetAttr`: mode, owner and times.
fn apply_set_attr(
    i: &mut Inode,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Time,
    mtime: Time,
    ctime: Time,
) {
    set_attr_fields(&mut i.attr, mode, uid, gid, atime, mtime, ctime);
}

/// Applies a `SetXattr`.
fn apply_set_xattr(i: &mut Inode, name: &[u8], value: &[u8], time: Time) {
    i.xattrs.insert(name.to_vec(), value.to_vec());
    i.attr.ctime = time;
}

/// Applies a `RemoveXattr`.
fn apply_remove_xattr(i: &mut Inode, name: &[u8], time: Time) {
    i.xattrs.remove(name);
    i.attr.ctime = time;
}

/// Applies an `Op::SetAttrXattrs` to its inode (other ops are ignored): also used for a
/// privilege drop, which holds one inode's lock rather than a [`Locked`] set.
pub(super) fn apply_set_attr_xattrs(i: &mut Inode, op: &Op) {
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

/// The fields a `SetAttr` or `SetAttrXattrs` record sets, in one place for both.
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
