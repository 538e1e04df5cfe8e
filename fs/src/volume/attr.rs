//! Attributes: getattr, stat and setattr (chmod, chown, truncate, utimes; a chmod rewrites
//! the access ACL in the same record), and statfs, the figures of the whole filesystem.

use pfnfs_alloc::{FRAME_SIZE, Frames};

use super::data::mode_without_suidgid;
use super::*;
use crate::acl::{ACCESS_XATTR, Acl};

impl Volume {
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
                Body::File(_) | Body::Inline(_) => {}
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
            if size > INLINE_DATA_MAX as u64 {
                // An inline file stays inline up to the limit; past it, it needs a frame.
                self.spill(inode)?;
            }
            if size != inode.attr.size || req.mtime.is_none() {
                self.zero_past_eof(inode, size)?;
                let mut cow = Vec::new();
                let mut frames = Frames::none(&self.alloc);
                if size < inode.attr.size
                    && size % FRAME_SIZE != 0
                    && let Body::File(map) = &inode.body
                {
                    let tail = (size % FRAME_SIZE) as usize;
                    if let Some((extent, copy)) =
                        self.cow_frame(map, size / FRAME_SIZE, tail, FRAME_SIZE as usize)?
                    {
                        cow.push(extent);
                        frames = copy;
                    }
                }
                let op = Op::Truncate {
                    ino,
                    size,
                    time: now,
                    mode: inode.attr.mode,
                    cow,
                };
                self.commit_cow(op, frames, &mut locked)?;
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

    /// statfs figures.
    pub fn statfs(&self) -> FsStat {
        let s = self.alloc.stats();
        let inodes = self.inode_count.load(Ordering::Relaxed);
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

fn clear_suid_sgid(mode: u32) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    m
}
