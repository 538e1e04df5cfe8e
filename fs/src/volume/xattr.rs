//! Extended attributes: setxattr, getxattr, listxattr and removexattr. The POSIX ACL
//! attributes are validated, stored in canonical form and kept in step with the mode.

use super::*;
use crate::acl::{self, Acl, DEFAULT_XATTR};

impl Volume {
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
