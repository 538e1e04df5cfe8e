//! Inodes and directories as they live in RAM while they are in use.
//!
//! The metadata tree on the pool is authoritative (`schema`, `volume::store`); the daemon
//! holds the inodes it reads in a bounded cache (`volume::cache`), plus a directory's
//! changes since the last commit. An inode costs its attributes, its xattrs and one map entry
//! per extent (or its inline bytes), never anything per frame.

use std::collections::BTreeMap;
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

/// Where a directory's committed entries are read from: the metadata tree as of the last
/// commit (`crate::volume`'s view of it). Errors are damage or I/O, as text.
pub trait DirStore: std::fmt::Debug + Send + Sync {
    /// The entry `name` of directory `dir`, with its cookie.
    fn lookup(&self, dir: u64, name: &[u8]) -> Result<Option<(u64, DirEntry)>, String>;
    /// Up to `limit` entries of `dir` with cookies above `after`, in cookie order.
    fn after(&self, dir: u64, after: u64, limit: usize) -> Result<Vec<(u64, DirEntry)>, String>;
}

/// A directory: entries keyed by a cookie that never changes while the entry exists, so that
/// readdir offsets stay valid while entries are added and removed.
///
/// Cookies 1 and 2 are "." and ".."; entries get 3, 4, ... in creation order, never reused
/// within the directory's life.
///
/// Its entries live in the metadata tree; RAM holds only what changed since the last commit
/// (`names`, `cookies`: an entry added, removed or renamed), which shadows the tree, so a
/// directory of millions of entries costs RAM only for its recent changes. A directory with
/// no `store` (made since the last commit, or built whole by fsck or an upgrade) holds every
/// entry in RAM.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// The parent directory (the root is its own parent).
    pub parent: u64,
    ino: u64,
    next_cookie: u64,
    count: u64,
    store: Option<std::sync::Arc<dyn DirStore>>,
    /// Names changed since the last commit: the cookie of the entry, or None if removed.
    names: BTreeMap<Vec<u8>, Option<u64>>,
    /// Cookies changed since the last commit: the entry, or None if removed.
    cookies: BTreeMap<u64, Option<DirEntry>>,
}

impl PartialEq for Directory {
    /// Same parent, cookies and entries held in RAM (the store is not compared).
    fn eq(&self, other: &Directory) -> bool {
        self.parent == other.parent
            && self.next_cookie == other.next_cookie
            && self.count == other.count
            && self.names == other.names
            && self.cookies == other.cookies
    }
}

impl Eq for Directory {}

/// First cookie handed to a real entry.
pub const FIRST_COOKIE: u64 = 3;

impl Directory {
    /// An empty directory under `parent`, all in RAM.
    pub fn new(parent: u64) -> Directory {
        Directory {
            parent,
            next_cookie: FIRST_COOKIE,
            ..Default::default()
        }
    }

    /// Directory `ino` as committed: `count` entries in `store`, none changed since.
    pub fn committed(
        ino: u64,
        parent: u64,
        next_cookie: u64,
        count: u64,
        store: std::sync::Arc<dyn DirStore>,
    ) -> Directory {
        Directory {
            parent,
            ino,
            next_cookie,
            count,
            store: Some(store),
            names: BTreeMap::new(),
            cookies: BTreeMap::new(),
        }
    }

    /// A directory with every entry in RAM, from its parts (fsck, upgrade).
    pub fn from_parts(
        parent: u64,
        next_cookie: u64,
        entries: Vec<(u64, DirEntry)>,
    ) -> Result<Directory, String> {
        let mut d = Directory {
            parent,
            next_cookie,
            ..Default::default()
        };
        for (cookie, e) in entries {
            if cookie < FIRST_COOKIE || cookie >= next_cookie {
                return Err(format!("directory cookie {cookie} out of range"));
            }
            if d.names.insert(e.name.clone(), Some(cookie)).is_some()
                || d.cookies.insert(cookie, Some(e)).is_some()
            {
                return Err("duplicate directory entry".into());
            }
            d.count += 1;
        }
        Ok(d)
    }

    /// Entry count.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Looks up a name, with its readdir cookie.
    pub fn get(&self, name: &[u8]) -> Result<Option<(u64, DirEntry)>, String> {
        match self.names.get(name) {
            Some(Some(cookie)) => Ok(self
                .cookies
                .get(cookie)
                .and_then(|e| e.clone())
                .map(|e| (*cookie, e))),
            Some(None) => Ok(None),
            None => match &self.store {
                Some(store) => store.lookup(self.ino, name),
                None => Ok(None),
            },
        }
    }

    /// Adds an entry; the caller has checked that the name is free.
    pub fn insert(&mut self, entry: DirEntry) {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        if let Some(Some(old)) = self.names.insert(entry.name.clone(), Some(cookie)) {
            self.cookies.insert(old, None);
            self.count = self.count.saturating_sub(1);
        }
        self.cookies.insert(cookie, Some(entry));
        self.count += 1;
    }

    /// Replaces the inode a name points to, keeping its cookie. Returns the old entry.
    pub fn replace(
        &mut self,
        name: &[u8],
        ino: u64,
        kind: super::inode::Kind,
    ) -> Result<Option<DirEntry>, String> {
        let Some((cookie, old)) = self.get(name)? else {
            return Ok(None);
        };
        let mut e = old.clone();
        e.ino = ino;
        e.kind = kind;
        self.names.insert(name.to_vec(), Some(cookie));
        self.cookies.insert(cookie, Some(e));
        Ok(Some(old))
    }

    /// Renames an entry within the directory, keeping its cookie (its place in readdir), so
    /// that a reader renaming each entry it sees is not shown it again. The new name must be
    /// free. Returns false if `from` does not exist.
    pub fn rename_in_place(&mut self, from: &[u8], to: &[u8]) -> Result<bool, String> {
        let Some((cookie, mut e)) = self.get(from)? else {
            return Ok(false);
        };
        self.names.insert(from.to_vec(), None);
        e.name = to.to_vec();
        self.names.insert(to.to_vec(), Some(cookie));
        self.cookies.insert(cookie, Some(e));
        Ok(true)
    }

    /// Removes a name.
    pub fn remove(&mut self, name: &[u8]) -> Result<Option<DirEntry>, String> {
        let Some((cookie, e)) = self.get(name)? else {
            return Ok(None);
        };
        self.names.insert(name.to_vec(), None);
        self.cookies.insert(cookie, None);
        self.count = self.count.saturating_sub(1);
        Ok(Some(e))
    }

    /// Up to `limit` entries with cookie > `after`, in cookie order.
    pub fn entries_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, DirEntry)>, String> {
        let limit = limit.max(1);
        let mut out: Vec<(u64, DirEntry)> = Vec::new();
        let mut cursor = after;
        loop {
            let (committed, full) = match &self.store {
                Some(store) => {
                    let b = store.after(self.ino, cursor, limit)?;
                    let full = b.len() >= limit;
                    (b, full)
                }
                None => (Vec::new(), false),
            };
            // Cookies up to `hi` are settled by this round; past it the tree may hold more.
            let hi = if full {
                committed.last().map_or(u64::MAX, |(c, _)| *c)
            } else {
                u64::MAX
            };
            let mut merged: Vec<(u64, DirEntry)> = committed
                .into_iter()
                .filter(|(c, _)| !self.cookies.contains_key(c))
                .collect();
            merged.extend(
                self.cookies
                    .range(cursor.saturating_add(1)..)
                    .take_while(|(c, _)| **c <= hi)
                    .filter_map(|(c, e)| e.clone().map(|e| (*c, e))),
            );
            merged.sort_unstable_by_key(|(c, _)| *c);
            out.extend(merged);
            if out.len() >= limit || !full {
                out.truncate(limit);
                return Ok(out);
            }
            cursor = hi;
        }
    }

    /// Every entry, in cookie order (reads the whole directory: for fsck and reports).
    pub fn all_entries(&self) -> Result<Vec<(u64, DirEntry)>, String> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let batch = self.entries_after(after, 1024)?;
            let Some((last, _)) = batch.last() else {
                return Ok(out);
            };
            after = *last;
            out.extend(batch);
        }
    }

    /// The entries held in RAM, in cookie order: every entry of a directory without a store,
    /// only the changed ones (removals left out) otherwise.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &DirEntry)> {
        self.cookies
            .iter()
            .filter_map(|(c, e)| e.as_ref().map(|e| (*c, e)))
    }

    /// The same directory with every entry in RAM and no store (for fsck's model of a
    /// mounted volume).
    pub fn to_complete(&self) -> Result<Directory, String> {
        if self.store.is_none() {
            return Ok(self.clone());
        }
        let mut d = Directory::from_parts(self.parent, self.next_cookie, self.all_entries()?)?;
        d.ino = self.ino;
        Ok(d)
    }

    /// The next cookie to be handed out.
    pub fn next_cookie(&self) -> u64 {
        self.next_cookie
    }

    /// True if every entry is in RAM (no store).
    pub fn is_complete(&self) -> bool {
        self.store.is_none()
    }

    /// What changed since the last commit: names (with their cookie, or None if removed) and
    /// cookies (with their entry, or None if removed).
    #[allow(clippy::type_complexity)]
    pub fn changes(
        &self,
    ) -> (
        &BTreeMap<Vec<u8>, Option<u64>>,
        &BTreeMap<u64, Option<DirEntry>>,
    ) {
        (&self.names, &self.cookies)
    }

    /// The changes are committed to `store` (the tree now holds every entry): forget them.
    pub fn committed_to(&mut self, ino: u64, store: std::sync::Arc<dyn DirStore>) {
        self.ino = ino;
        self.store = Some(store);
        self.names.clear();
        self.cookies.clear();
    }
}

/// What an inode holds besides its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A regular file's extent map.
    File(ExtentMap),
    /// A regular file's bytes, kept in its inode record (inline data): 1 to
    /// [`crate::schema::INLINE_DATA_MAX`] of them, exactly its size.
    Inline(Vec<u8>),
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
