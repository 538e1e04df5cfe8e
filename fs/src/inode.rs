//! Inodes and directories as they live in RAM (and, serialized, in the checkpoint).
//!
//! The whole metadata of a mounted pool is held in RAM: an inode costs its attributes, its
//! name entries and one map entry per extent, never anything per frame. The pool holds the
//! same state as a checkpoint plus the redo log since it (see `journal`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pfnfs_extent::ExtentMap;
use serde::{Deserialize, Serialize};

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;

/// A timestamp with nanoseconds, as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    /// Seconds since the epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds, < 1e9.
    pub nsecs: u32,
}

impl Time {
    /// The current wall-clock time, from the clock the kernel stamps inodes with
    /// (`CLOCK_REALTIME_COARSE`, what `current_time()` reads for FUSE inodes): in buffered
    /// mode the kernel stamps regular files itself, and times the daemon gives other inodes
    /// must not run ahead of it, or a file made after a directory would look older than it
    /// (xfstests generic/423). The resolution is the kernel's tick, as on ext4 before
    /// multigrain timestamps.
    pub fn now() -> Time {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE) {
            Ok(t) => Time {
                secs: t.tv_sec(),
                nsecs: t.tv_nsec().clamp(0, 999_999_999) as u32,
            },
            Err(_) => Time::from_system(SystemTime::now()),
        }
    }

    /// From a `SystemTime` (before-epoch times kept).
    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut nsecs = d.subsec_nanos();
                if nsecs > 0 {
                    secs -= 1;
                    nsecs = 1_000_000_000 - nsecs;
                }
                Time { secs, nsecs }
            }
        }
    }

    /// To a `SystemTime`.
    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nsecs)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(self.nsecs as u64)
        }
    }
}

/// The kind of an inode, from the S_IFMT bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl Kind {
    /// From a mode's S_IFMT bits.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            libc::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }

    /// The S_IFMT bits.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
            Kind::Socket => libc::S_IFSOCK,
        }
    }
}

/// Attributes of an inode. `nlink` is changed only by namespace operations, `size` only by
/// data operations; everything else by setattr-like operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// Type and permission bits (S_IFMT | 07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Size in bytes (directories: 0; symlinks: target length).
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
    /// Device number of device nodes.
    pub rdev: u32,
    /// Generation number (inode numbers are never reused, so this stays 1 unless a format
    /// change says otherwise).
    pub generation: u64,
}

impl Attr {
    /// The inode kind (mode's S_IFMT).
    pub fn kind(&self) -> Kind {
        Kind::from_mode(self.mode).unwrap_or(Kind::File)
    }
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's name (never "." or "..", never empty, no '/').
    pub name: Vec<u8>,
    /// The inode it names.
    pub ino: u64,
    /// The inode's kind, for readdir.
    pub kind: Kind,
}

/// A directory: entries keyed by a cookie that never changes while the entry exists, so that
/// readdir offsets stay valid while entries are added and removed.
///
/// Cookies 1 and 2 are "." and ".."; entries get 3, 4, ... in creation order, never reused
/// within the directory's life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    /// The parent directory (the root is its own parent).
    pub parent: u64,
    entries: BTreeMap<u64, DirEntry>,
    by_name: HashMap<Vec<u8>, u64>,
    next_cookie: u64,
}

/// First cookie handed to a real entry.
pub const FIRST_COOKIE: u64 = 3;

impl Directory {
    /// An empty directory under `parent`.
    pub fn new(parent: u64) -> Directory {
        Directory {
            parent,
            entries: BTreeMap::new(),
            by_name: HashMap::new(),
            next_cookie: FIRST_COOKIE,
        }
    }

    /// Rebuilds from checkpointed parts.
    pub fn from_parts(
        parent: u64,
        next_cookie: u64,
        entries: Vec<(u64, DirEntry)>,
    ) -> Result<Directory, String> {
        let mut d = Directory {
            parent,
            entries: BTreeMap::new(),
            by_name: HashMap::new(),
            next_cookie,
        };
        for (cookie, e) in entries {
            if cookie < FIRST_COOKIE || cookie >= next_cookie {
                return Err(format!("directory cookie {cookie} out of range"));
            }
            if d.by_name.insert(e.name.clone(), cookie).is_some()
                || d.entries.insert(cookie, e).is_some()
            {
                return Err("duplicate directory entry".into());
            }
        }
        Ok(d)
    }

    /// Entry count.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Looks up a name.
    pub fn get(&self, name: &[u8]) -> Option<&DirEntry> {
        self.by_name.get(name).and_then(|c| self.entries.get(c))
    }

    /// Adds an entry; the caller has checked that the name is free.
    pub fn insert(&mut self, entry: DirEntry) {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        if let Some(old) = self.by_name.insert(entry.name.clone(), cookie) {
            self.entries.remove(&old);
        }
        self.entries.insert(cookie, entry);
    }

    /// Replaces the inode a name points to, keeping its cookie. Returns the old entry.
    pub fn replace(&mut self, name: &[u8], ino: u64, kind: super::inode::Kind) -> Option<DirEntry> {
        let cookie = *self.by_name.get(name)?;
        let e = self.entries.get_mut(&cookie)?;
        let old = e.clone();
        e.ino = ino;
        e.kind = kind;
        Some(old)
    }

    /// Renames an entry within the directory, keeping its cookie (its place in readdir), so
    /// that a reader renaming each entry it sees is not shown it again. The new name must be
    /// free. Returns false if `from` does not exist.
    pub fn rename_in_place(&mut self, from: &[u8], to: &[u8]) -> bool {
        let Some(cookie) = self.by_name.remove(from) else {
            return false;
        };
        if let Some(e) = self.entries.get_mut(&cookie) {
            e.name = to.to_vec();
        }
        self.by_name.insert(to.to_vec(), cookie);
        true
    }

    /// Removes a name.
    pub fn remove(&mut self, name: &[u8]) -> Option<DirEntry> {
        let cookie = self.by_name.remove(name)?;
        self.entries.remove(&cookie)
    }

    /// Entries with cookie > `after`, in cookie order.
    pub fn entries_after(&self, after: u64) -> impl Iterator<Item = (u64, &DirEntry)> {
        self.entries
            .range(after.saturating_add(1)..)
            .map(|(c, e)| (*c, e))
    }

    /// All entries with their cookies.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &DirEntry)> {
        self.entries.iter().map(|(c, e)| (*c, e))
    }

    /// The next cookie to be handed out.
    pub fn next_cookie(&self) -> u64 {
        self.next_cookie
    }
}

/// What an inode holds besides its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A regular file's extent map.
    File(ExtentMap),
    /// A directory's entries.
    Dir(Directory),
    /// A symlink's target.
    Symlink(Vec<u8>),
    /// FIFO, socket or device node: attributes only.
    Special,
}

/// An inode in RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    pub attr: Attr,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub body: Body,
}

impl Inode {
    /// The root directory of a new filesystem: owned by root, mode 0755, its own parent.
    pub fn new_root(now: Time) -> Inode {
        Inode::new_dir(ROOT_INO, ROOT_INO, 0o755, now)
    }

    /// An empty directory `ino` under `parent`, owned by root, with permission bits `perm`.
    pub fn new_dir(ino: u64, parent: u64, perm: u32, now: Time) -> Inode {
        Inode {
            ino,
            attr: Attr {
                mode: libc::S_IFDIR | (perm & 0o7777),
                uid: 0,
                gid: 0,
                nlink: 2,
                size: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                rdev: 0,
                generation: 1,
            },
            xattrs: BTreeMap::new(),
            body: Body::Dir(Directory::new(parent)),
        }
    }

    /// The extent map of a regular file.
    pub fn file_map(&self) -> Option<&ExtentMap> {
        match &self.body {
            Body::File(m) => Some(m),
            _ => None,
        }
    }

    /// The directory, if this is one.
    pub fn dir(&self) -> Option<&Directory> {
        match &self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }

    /// Mutable directory access.
    pub fn dir_mut(&mut self) -> Option<&mut Directory> {
        match &mut self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }

    /// Total bytes of xattr names and values.
    pub fn xattr_bytes(&self) -> usize {
        self.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}
