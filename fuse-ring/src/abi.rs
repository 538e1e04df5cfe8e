//! The FUSE kernel ABI (`include/uapi/linux/fuse.h`, 7.31+) for requests that arrive over
//! io_uring, where fuser's parser cannot be reached: fixed-layout structs read and written
//! with zerocopy (no `unsafe`), opcodes, and the packing of directory entries.
//!
//! Only what pfnfs answers is here; field names follow the kernel header.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// FUSE opcodes pfnfs serves over the ring (the rest are answered ENOSYS).
#[allow(missing_docs)]
pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
}

/// `FATTR_*`: which fields of [`SetattrIn`] are valid.
#[allow(missing_docs)]
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    pub const CTIME: u32 = 1 << 10;
}

macro_rules! abi {
    ($($(#[$m:meta])* $name:ident { $($f:ident: $t:ty),* $(,)? } = $size:expr;)*) => {$(
        $(#[$m])*
        #[allow(missing_docs)]
        #[repr(C)]
        #[derive(Debug, Default, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name { $(pub $f: $t),* }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
    )*};
}

abi! {
    /// `fuse_in_header`.
    InHeader { len: u32, opcode: u32, unique: u64, nodeid: u64, uid: u32, gid: u32, pid: u32,
        total_extlen: u16, padding: u16 } = 40;
    /// `fuse_attr`.
    Attr { ino: u64, size: u64, blocks: u64, atime: u64, mtime: u64, ctime: u64,
        atimensec: u32, mtimensec: u32, ctimensec: u32, mode: u32, nlink: u32, uid: u32,
        gid: u32, rdev: u32, blksize: u32, flags: u32 } = 88;
    /// `fuse_entry_out`.
    EntryOut { nodeid: u64, generation: u64, entry_valid: u64, attr_valid: u64,
        entry_valid_nsec: u32, attr_valid_nsec: u32, attr: Attr } = 128;
    /// `fuse_attr_out`.
    AttrOut { attr_valid: u64, attr_valid_nsec: u32, dummy: u32, attr: Attr } = 104;
    /// `fuse_open_out`.
    OpenOut { fh: u64, open_flags: u32, backing_id: i32 } = 16;
    /// `fuse_write_out`.
    WriteOut { size: u32, padding: u32 } = 8;
    /// `fuse_kstatfs` (the whole `fuse_statfs_out`).
    StatfsOut { blocks: u64, bfree: u64, bavail: u64, files: u64, ffree: u64, bsize: u32,
        namelen: u32, frsize: u32, padding: u32, spare: [u32; 6] } = 80;
    /// `fuse_getxattr_out`.
    GetxattrOut { size: u32, padding: u32 } = 8;
    /// `fuse_lseek_out`.
    LseekOut { offset: u64 } = 8;
    /// `fuse_getattr_in`.
    GetattrIn { getattr_flags: u32, dummy: u32, fh: u64 } = 16;
    /// `fuse_setattr_in`.
    SetattrIn { valid: u32, padding: u32, fh: u64, size: u64, lock_owner: u64, atime: u64,
        mtime: u64, ctime: u64, atimensec: u32, mtimensec: u32, ctimensec: u32, mode: u32,
        unused4: u32, uid: u32, gid: u32, unused5: u32 } = 88;
    /// `fuse_mknod_in`.
    MknodIn { mode: u32, rdev: u32, umask: u32, padding: u32 } = 16;
    /// `fuse_mkdir_in`.
    MkdirIn { mode: u32, umask: u32 } = 8;
    /// `fuse_rename_in`.
    RenameIn { newdir: u64 } = 8;
    /// `fuse_rename2_in`.
    Rename2In { newdir: u64, flags: u32, padding: u32 } = 16;
    /// `fuse_link_in`.
    LinkIn { oldnodeid: u64 } = 8;
    /// `fuse_open_in`.
    OpenIn { flags: u32, open_flags: u32 } = 8;
    /// `fuse_create_in`.
    CreateIn { flags: u32, mode: u32, umask: u32, open_flags: u32 } = 16;
    /// `fuse_read_in` (also READDIR, READDIRPLUS).
    ReadIn { fh: u64, offset: u64, size: u32, read_flags: u32, lock_owner: u64, flags: u32,
        padding: u32 } = 40;
    /// `fuse_write_in`.
    WriteIn { fh: u64, offset: u64, size: u32, write_flags: u32, lock_owner: u64, flags: u32,
        padding: u32 } = 40;
    /// `fuse_fsync_in`.
    FsyncIn { fh: u64, fsync_flags: u32, padding: u32 } = 16;
    /// `fuse_setxattr_in` without FUSE_SETXATTR_EXT.
    SetxattrIn { size: u32, flags: u32 } = 8;
    /// `fuse_getxattr_in` (also LISTXATTR).
    GetxattrIn { size: u32, padding: u32 } = 8;
    /// `fuse_access_in`.
    AccessIn { mask: u32, padding: u32 } = 8;
    /// `fuse_fallocate_in`.
    FallocateIn { fh: u64, offset: u64, length: u64, mode: u32, padding: u32 } = 32;
    /// `fuse_lseek_in`.
    LseekIn { fh: u64, offset: u64, whence: u32, padding: u32 } = 24;
    /// `fuse_copy_file_range_in`.
    CopyFileRangeIn { fh_in: u64, off_in: u64, nodeid_out: u64, fh_out: u64, off_out: u64,
        len: u64, flags: u64 } = 56;
    /// `fuse_dirent` without the name.
    Dirent { ino: u64, off: u64, namelen: u32, typ: u32 } = 24;
}

/// Reads a `T` from the start of `bytes` (zero-filled when `bytes` is short, as the kernel
/// sends shorter, older versions of some structs).
pub fn read<T: FromBytes + IntoBytes + Default>(bytes: &[u8]) -> T {
    let mut v = T::default();
    let dst = v.as_mut_bytes();
    let n = dst.len().min(bytes.len());
    dst[..n].copy_from_slice(&bytes[..n]);
    v
}

/// Writes `v` at the start of `out`; returns its length (0 if `out` is too small).
pub fn write<T: IntoBytes + Immutable>(out: &mut [u8], v: &T) -> usize {
    let b = v.as_bytes();
    match out.get_mut(..b.len()) {
        Some(dst) => {
            dst.copy_from_slice(b);
            b.len()
        }
        None => 0,
    }
}

/// Splits a NUL-terminated name off the front of `bytes`: `(name, rest)`.
pub fn name(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// Directory-entry packing into a reply buffer of the size the kernel asked for.
#[derive(Debug)]
pub struct DirBuf<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> DirBuf<'a> {
    /// Packs into `out` (already cut to the requested size).
    pub fn new(out: &'a mut [u8]) -> DirBuf<'a> {
        DirBuf { out, len: 0 }
    }

    /// Adds one `fuse_dirent` (inode `ino`, next cookie `off`, `typ` = the S_IFMT bits >> 12),
    /// preceded by `entry` for READDIRPLUS; false when it does not fit (nothing written).
    pub fn add(
        &mut self,
        entry: Option<&EntryOut>,
        ino: u64,
        off: u64,
        typ: u32,
        name: &[u8],
    ) -> bool {
        let dirent = &Dirent {
            ino,
            off,
            namelen: name.len() as u32,
            typ,
        };
        let head = entry.map_or(0, |_| std::mem::size_of::<EntryOut>());
        let raw = head + std::mem::size_of::<Dirent>() + name.len();
        let padded = raw.div_ceil(8) * 8;
        let Some(dst) = self.out.get_mut(self.len..self.len + padded) else {
            return false;
        };
        let mut at = 0;
        if let Some(e) = entry {
            at += write(dst, e);
        }
        at += write(&mut dst[at..], dirent);
        dst[at..at + name.len()].copy_from_slice(name);
        dst[at + name.len()..].fill(0);
        self.len += padded;
        true
    }

    /// Bytes packed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was packed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirents_are_padded_to_eight_bytes_and_stop_when_full() {
        let mut buf = [0xffu8; 80];
        let mut d = DirBuf::new(&mut buf);
        assert!(d.add(None, 5, 1, 8, b"abc"));
        assert_eq!(d.len(), 32);
        assert!(d.add(None, 5, 1, 8, b"abcdefghi"));
        assert_eq!(d.len(), 32 + 40);
        assert!(
            !d.add(None, 5, 1, 8, b"x"),
            "24+1 padded to 32 does not fit in 8"
        );
        assert_eq!(
            u32::from_ne_bytes(buf[16..20].try_into().unwrap()),
            3,
            "namelen"
        );
        assert_eq!(
            u32::from_ne_bytes(buf[48..52].try_into().unwrap()),
            9,
            "namelen"
        );
        assert_eq!(&buf[24..32], b"abc\0\0\0\0\0");
        assert_eq!(u64::from_ne_bytes(buf[0..8].try_into().unwrap()), 5);
    }

    #[test]
    fn short_structs_read_zero_filled() {
        let s: SetxattrIn = read(&[1, 0, 0, 0]);
        assert_eq!((s.size, s.flags), (1, 0));
        assert_eq!(name(b"ab\0cd\0"), Some((&b"ab"[..], &b"cd\0"[..])));
        assert_eq!(name(b"ab"), None);
    }
}
