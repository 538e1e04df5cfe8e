//! The crash-consistency harness: workloads, a model of what the contract allows, and the
//! runner that crashes a workload at each persist point and checks what recovery shows.
//!
//! A [`Scenario`] is a prelude (run once on a pool whose first data frames hold garbage, shut
//! down cleanly, and kept as the template every run forks) plus the [`Step`]s under test.
//! [`check_scenario`]:
//!
//! 1. runs the steps on a [`CrashSimBackend`] forked from the template, checking after every
//!    step that the live volume shows exactly what the [`Model`] says, and counts the persist
//!    points (fences) of the steps: `T`; each step's range of points is recorded;
//! 2. for each crash point `k` in `1..=T+1` (all of them, or a seeded sample; see
//!    [`Config`]) and each mode (clean, torn), re-runs the steps with a crash armed before the
//!    `k`-th fence of the steps (`T+1`: a crash right after the last step returned), takes the
//!    durable image, and recovers it on a `MemBackend` (`Pool::open_backend` +
//!    `Volume::load`; an error is a failure). The step in flight is the one whose range holds
//!    the crash in that re-run (record sizes vary with timestamps, so an automatic checkpoint
//!    may move by a step between runs: nothing relies on the counting run's numbering);
//! 3. checks the recovered volume: fsck clean, allocator consistent, every data frame owned
//!    exactly once (free set, file extents, checkpoint), no orphan inode left, the visible tree
//!    equal to the model after the last step that returned or after the step in flight, a
//!    second mount identical (same tree, same free set), zeros past every file's end after
//!    extending it, and, for torn crashes, a crash at a seeded persist point *of the recovery*
//!    followed by another recovery that must show the same tree.
//!
//! **The model of what is allowed.** Metadata: every step is atomic and durable when it
//! returns, so the visible tree (paths, kinds, modes, owners, sizes, link counts, inode
//! numbers, `..`, symlink targets, xattrs, file bytes; no timestamps) must equal the model
//! after step `i-1` or after step `i`, `i` being the step in flight at the crash; a step that
//! changes a file's data or size and takes privileges away with it (the file capability,
//! setuid/setgid) may also leave the state between: privileges gone, data and size as before
//! (`Model::privileges_dropped_by`; never the new data with the old privileges). Data: the
//! contract lets bytes written by a returned `write` reach the medium as late as the next
//! fsync, word by word; pfnfs promises more (DESIGN section 6: every op, data included, is
//! durable when it returns). The default check holds pfnfs to its promise: only the words of
//! the write in flight may show old or new content, each 8-byte word independently. With
//! `PFNFS_CRASH_DATA=contract` the check relaxes to the contract: every word written since
//! the file's last fsync may also show any value it held since (the model keeps these
//! "unsynced" alternatives per file and drops them at fsync, truncation and punching).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pfnfs_alloc::{CrashMode, CrashReport, CrashSimBackend, MemBackend, Pool, PoolBackend};
use pfnfs_alloc::{FRAME_SIZE, PfnRange};
use pfnfs_fs::error::FsError;
use pfnfs_fs::inode::{Kind, ROOT_INO, Time};
use pfnfs_fs::volume::{Caller, SetAttr, Volume};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Size of every test pool: the smallest pfnfs accepts (4 MiB log, 10 MiB data).
pub const POOL_BYTES: u64 = 16 << 20;

pub const FALLOC_KEEP_SIZE: i32 = 0x01;
pub const FALLOC_PUNCH_HOLE: i32 = 0x02;
pub const FALLOC_ZERO_RANGE: i32 = 0x10;

// =============================================================================================
// Data and steps

/// Immutable shared bytes that print as their length and a hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Arc<Vec<u8>>);

impl Bytes {
    pub fn new(v: Vec<u8>) -> Bytes {
        Bytes(Arc::new(v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes, fnv {:016x}>", self.0.len(), fnv(&self.0))
    }
}

/// FNV-1a, for printing contents compactly.
pub fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// `len` pseudo-random bytes from `seed` (every 8-byte word almost surely non-zero and
/// different from its neighbours, so torn words show).
pub fn pattern(seed: u64, len: usize) -> Bytes {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::new(v)
}

/// Which file a data step acts on: a path (resolved now) or an open descriptor.
#[derive(Clone, Debug)]
pub enum FileRef {
    Path(String),
    Fd(u32),
}

/// One operation of a workload, as an application would issue it.
#[derive(Clone, Debug)]
pub enum Step {
    Create {
        path: String,
        mode: u32,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Mknod {
        path: String,
        mode: u32,
        rdev: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Link {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    SetAttr {
        file: FileRef,
        caller_uid: u32,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        times: bool,
    },
    Fallocate {
        file: FileRef,
        offset: u64,
        len: u64,
        mode: i32,
    },
    SetXattr {
        path: String,
        name: String,
        value: Bytes,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Write {
        file: FileRef,
        offset: u64,
        data: Bytes,
        caller_uid: u32,
    },
    Fsync {
        file: FileRef,
    },
    Open {
        path: String,
        fd: u32,
    },
    Close {
        fd: u32,
    },
    Checkpoint,
    /// Clean unmount (`Volume::shutdown`): only as the last step.
    Shutdown,
}

// Constructors, to keep workload tables short.
pub fn p(path: &str) -> FileRef {
    FileRef::Path(path.to_string())
}
pub fn fd(n: u32) -> FileRef {
    FileRef::Fd(n)
}
pub fn create(path: &str, mode: u32) -> Step {
    Step::Create {
        path: path.into(),
        mode,
    }
}
pub fn mkdir(path: &str, mode: u32) -> Step {
    Step::Mkdir {
        path: path.into(),
        mode,
    }
}
pub fn mknod(path: &str, mode: u32, rdev: u32) -> Step {
    Step::Mknod {
        path: path.into(),
        mode,
        rdev,
    }
}
pub fn symlink(path: &str, target: &str) -> Step {
    Step::Symlink {
        path: path.into(),
        target: target.into(),
    }
}
pub fn link(from: &str, to: &str) -> Step {
    Step::Link {
        from: from.into(),
        to: to.into(),
    }
}
pub fn unlink(path: &str) -> Step {
    Step::Unlink { path: path.into() }
}
pub fn rmdir(path: &str) -> Step {
    Step::Rmdir { path: path.into() }
}
pub fn rename(from: &str, to: &str, flags: u32) -> Step {
    Step::Rename {
        from: from.into(),
        to: to.into(),
        flags,
    }
}
pub fn chmod(path: &str, mode: u32) -> Step {
    Step::SetAttr {
        file: p(path),
        caller_uid: 0,
        mode: Some(mode),
        uid: None,
        gid: None,
        size: None,
        times: false,
    }
}
pub fn chown(path: &str, uid: u32, gid: u32) -> Step {
    Step::SetAttr {
        file: p(path),
        caller_uid: 0,
        mode: None,
        uid: Some(uid),
        gid: Some(gid),
        size: None,
        times: false,
    }
}
pub fn utimes(path: &str) -> Step {
    Step::SetAttr {
        file: p(path),
        caller_uid: 0,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        times: true,
    }
}
pub fn truncate(file: FileRef, size: u64) -> Step {
    truncate_as(file, size, 0)
}
pub fn truncate_as(file: FileRef, size: u64, caller_uid: u32) -> Step {
    Step::SetAttr {
        file,
        caller_uid,
        mode: None,
        uid: None,
        gid: None,
        size: Some(size),
        times: false,
    }
}
pub fn fallocate(file: FileRef, offset: u64, len: u64, mode: i32) -> Step {
    Step::Fallocate {
        file,
        offset,
        len,
        mode,
    }
}
pub fn setxattr(path: &str, name: &str, value: &[u8]) -> Step {
    Step::SetXattr {
        path: path.into(),
        name: name.into(),
        value: Bytes::new(value.to_vec()),
    }
}
pub fn removexattr(path: &str, name: &str) -> Step {
    Step::RemoveXattr {
        path: path.into(),
        name: name.into(),
    }
}
/// Writes `len` pattern bytes (from `seed`) at `offset`, as root.
pub fn write(file: FileRef, offset: u64, len: usize, seed: u64) -> Step {
    write_as(file, offset, len, seed, 0)
}
pub fn write_as(file: FileRef, offset: u64, len: usize, seed: u64, caller_uid: u32) -> Step {
    Step::Write {
        file,
        offset,
        data: pattern(seed, len),
        caller_uid,
    }
}
pub fn fsync(file: FileRef) -> Step {
    Step::Fsync { file }
}
pub fn open(path: &str, n: u32) -> Step {
    Step::Open {
        path: path.into(),
        fd: n,
    }
}
pub fn close(n: u32) -> Step {
    Step::Close { fd: n }
}

fn caller(uid: u32) -> Caller {
    Caller { uid, gid: uid }
}

// =============================================================================================
// The model

/// An inode of the model.
#[derive(Clone, Debug)]
pub struct MInode {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub nlink: u32,
    /// Regular files: the bytes (the size is their length).
    pub content: Bytes,
    /// Symlinks: the target.
    pub target: Vec<u8>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Directories: name -> inode.
    pub entries: BTreeMap<Vec<u8>, u64>,
    /// Directories: the parent.
    pub parent: u64,
}

impl MInode {
    fn new(kind: Kind, mode: u32, uid: u32, gid: u32) -> MInode {
        MInode {
            kind,
            mode,
            uid,
            gid,
            rdev: 0,
            nlink: 1,
            content: Bytes::new(Vec::new()),
            target: Vec::new(),
            xattrs: BTreeMap::new(),
            entries: BTreeMap::new(),
            parent: 0,
        }
    }
    fn size(&self) -> u64 {
        match self.kind {
            Kind::File => self.content.len() as u64,
            Kind::Symlink => self.target.len() as u64,
            _ => 0,
        }
    }
}

/// Word alternatives: per inode, per 8-byte word index, other values the word may show.
pub type Slack = BTreeMap<u64, BTreeMap<u64, Vec<[u8; 8]>>>;

/// What the filesystem should look like: inodes by number (the numbers the volume gave out),
/// open descriptors, and the unsynced writes of the contract.
#[derive(Clone, Debug)]
pub struct Model {
    pub inodes: BTreeMap<u64, MInode>,
    pub fds: BTreeMap<u32, u64>,
    /// Per file, the writes since its last fsync: word-aligned offset and the bytes the
    /// written words held before (zero past the end of the file then).
    pub unsynced: BTreeMap<u64, Vec<(u64, Bytes)>>,
}

/// The mode after a data change by `uid` (whose group is `uid` in these workloads): setuid
/// dropped, setgid too when group-executable or the caller is not in the file's group.
fn kill_suid(mode: u32, uid: u32, file_gid: u32) -> u32 {
    if uid == 0 {
        return mode;
    }
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_ISGID != 0 && (m & libc::S_IXGRP != 0 || uid != file_gid) {
        m &= !libc::S_ISGID;
    }
    m
}

/// The file-capability attribute, which every change of a file's data or size removes.
pub const CAPABILITY_XATTR: &[u8] = b"security.capability";
/// `cap_chown+ep` as the kernel stores it.
pub const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// What a change of `n`'s data or size by `uid` takes away (regular files only): the file
/// capability, and setuid/setgid as [`kill_suid`] says.
fn drop_privileges(n: &mut MInode, uid: u32) {
    if n.kind == Kind::File {
        n.xattrs.remove(CAPABILITY_XATTR);
        n.mode = kill_suid(n.mode, uid, n.gid);
    }
}

fn clear_suid_sgid(mode: u32) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    m
}

/// `old` cut or zero-extended to `len` bytes (without `Vec::resize`, slow in debug builds).
fn resized(old: &[u8], len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let n = old.len().min(len);
    v[..n].copy_from_slice(&old[..n]);
    v
}

/// The 8-byte word `w` of `content`, zero past its end.
pub fn word(content: &[u8], w: u64) -> [u8; 8] {
    let mut out = [0u8; 8];
    let start = (w * 8) as usize;
    if start < content.len() {
        let end = (start + 8).min(content.len());
        out[..end - start].copy_from_slice(&content[start..end]);
    }
    out
}

fn split(path: &str) -> (&str, &[u8]) {
    let i = path.rfind('/').expect("absolute path");
    (
        if i == 0 { "/" } else { &path[..i] },
        &path.as_bytes()[i + 1..],
    )
}

impl Model {
    /// The empty filesystem: a root directory, mode 0755, owned by root.
    pub fn empty() -> Model {
        let mut root = MInode::new(Kind::Dir, libc::S_IFDIR | 0o755, 0, 0);
        root.nlink = 2;
        root.parent = ROOT_INO;
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT_INO, root);
        Model {
            inodes,
            fds: BTreeMap::new(),
            unsynced: BTreeMap::new(),
        }
    }

    /// The inode a path names.
    pub fn resolve(&self, path: &str) -> Option<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|s| !s.is_empty()) {
            ino = *self.inodes.get(&ino)?.entries.get(part.as_bytes())?;
        }
        Some(ino)
    }

    fn resolve_file(&self, f: &FileRef) -> u64 {
        match f {
            FileRef::Path(path) => self
                .resolve(path)
                .unwrap_or_else(|| panic!("workload bug: {path} does not exist")),
            FileRef::Fd(n) => *self
                .fds
                .get(n)
                .unwrap_or_else(|| panic!("workload bug: fd {n} not open")),
        }
    }

    fn parent_and_name(&self, path: &str) -> (u64, Vec<u8>) {
        let (dir, name) = split(path);
        let parent = self
            .resolve(dir)
            .unwrap_or_else(|| panic!("workload bug: parent of {path} does not exist"));
        (parent, name.to_vec())
    }

    fn ino_mut(&mut self, ino: u64) -> &mut MInode {
        self.inodes.get_mut(&ino).expect("model inode")
    }

    /// True if `anc` is `ino` or one of its ancestors.
    pub fn is_ancestor(&self, anc: u64, mut ino: u64) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            ino = self.inodes[&ino].parent;
        }
    }

    /// Drops an inode that lost its last name, unless a descriptor keeps it.
    fn drop_if_unreferenced(&mut self, ino: u64) {
        if self.inodes[&ino].nlink == 0 && !self.fds.values().any(|&i| i == ino) {
            self.inodes.remove(&ino);
            self.unsynced.remove(&ino);
        }
    }

    /// Bytes `[a, b)` of `ino` were zeroed or cut durably: their alternatives are zero too.
    fn zero_unsynced(&mut self, ino: u64, a: u64, b: u64) {
        for (start, old) in self.unsynced.get_mut(&ino).into_iter().flatten() {
            let end = *start + old.len() as u64;
            if end <= a || *start >= b {
                continue;
            }
            let mut v = old.0.as_ref().clone();
            let (za, zb) = (a.max(*start) - *start, b.min(end) - *start);
            v[za as usize..zb as usize].fill(0);
            *old = Bytes::new(v);
        }
    }

    /// The unsynced alternatives as per-word slack.
    pub fn unsynced_slack(&self) -> Slack {
        let mut slack = Slack::new();
        for (&ino, writes) in &self.unsynced {
            let words = slack.entry(ino).or_default();
            for (start, old) in writes {
                for (i, w) in (start / 8..(start + old.len() as u64) / 8).enumerate() {
                    let v = word(&old.0[i * 8..], 0);
                    let alts = words.entry(w).or_default();
                    if !alts.contains(&v) {
                        alts.push(v);
                    }
                }
            }
        }
        slack
    }

    /// Mode and group of a new inode made by root in `parent`: a setgid directory passes on
    /// its group (and, to directories, its setgid bit).
    fn new_inode_attrs(&self, parent: u64, mode: u32) -> (u32, u32) {
        let p = &self.inodes[&parent];
        if p.mode & libc::S_ISGID == 0 {
            return (mode, 0);
        }
        if mode & libc::S_IFMT == libc::S_IFDIR {
            (mode | libc::S_ISGID, p.gid)
        } else {
            (mode, p.gid)
        }
    }

    fn add_entry(&mut self, parent: u64, name: Vec<u8>, ino: u64, node: MInode) {
        let is_dir = node.kind == Kind::Dir;
        self.inodes.insert(ino, node);
        let p = self.ino_mut(parent);
        assert!(
            p.entries.insert(name, ino).is_none(),
            "workload bug: exists"
        );
        if is_dir {
            p.nlink += 1;
        }
    }

    /// The state between the two durable steps of a step that changes a file's data or
    /// size and takes privileges away with it: the privileges already gone (their record
    /// comes first), the data or size not yet changed. None for other steps, and when there
    /// is nothing to take away.
    pub fn privileges_dropped_by(&self, step: &Step) -> Option<Model> {
        let (file, uid) = match step {
            Step::Write {
                file, caller_uid, ..
            } => (file, *caller_uid),
            Step::SetAttr {
                file,
                caller_uid,
                size: Some(_),
                ..
            } => (file, *caller_uid),
            Step::Fallocate { file, .. } => (file, 0),
            _ => return None,
        };
        let ino = self.resolve_file(file);
        let mut mid = self.clone();
        let n = mid.ino_mut(ino);
        let (mode, caps) = (n.mode, n.xattrs.contains_key(CAPABILITY_XATTR));
        drop_privileges(n, uid);
        (n.mode != mode || caps).then_some(mid)
    }

    /// Applies a step that succeeded; `created` is the inode number the volume gave a new
    /// inode.
    pub fn apply(&mut self, step: &Step, created: Option<u64>) {
        match step {
            Step::Create { path, mode } => {
                let (parent, name) = self.parent_and_name(path);
                let (m, gid) = self.new_inode_attrs(parent, libc::S_IFREG | (mode & 0o7777));
                let node = MInode::new(Kind::File, m, 0, gid);
                self.add_entry(parent, name, created.expect("ino"), node);
            }
            Step::Mkdir { path, mode } => {
                let (parent, name) = self.parent_and_name(path);
                let (m, gid) = self.new_inode_attrs(parent, libc::S_IFDIR | (mode & 0o7777));
                let mut node = MInode::new(Kind::Dir, m, 0, gid);
                node.nlink = 2;
                node.parent = parent;
                self.add_entry(parent, name, created.expect("ino"), node);
            }
            Step::Mknod { path, mode, rdev } => {
                let (parent, name) = self.parent_and_name(path);
                let mode = if mode & libc::S_IFMT == 0 {
                    mode | libc::S_IFREG
                } else {
                    *mode
                };
                let (m, gid) = self.new_inode_attrs(parent, mode);
                let mut node = MInode::new(Kind::from_mode(m).expect("kind"), m, 0, gid);
                node.rdev = *rdev;
                self.add_entry(parent, name, created.expect("ino"), node);
            }
            Step::Symlink { path, target } => {
                let (parent, name) = self.parent_and_name(path);
                let (m, gid) = self.new_inode_attrs(parent, libc::S_IFLNK | 0o777);
                let mut node = MInode::new(Kind::Symlink, m, 0, gid);
                node.target = target.as_bytes().to_vec();
                self.add_entry(parent, name, created.expect("ino"), node);
            }
            Step::Link { from, to } => {
                let ino = self.resolve(from).expect("link source");
                let (parent, name) = self.parent_and_name(to);
                self.ino_mut(ino).nlink += 1;
                let p = self.ino_mut(parent);
                assert!(p.entries.insert(name, ino).is_none());
            }
            Step::Unlink { path } => {
                let (parent, name) = self.parent_and_name(path);
                let ino = self
                    .ino_mut(parent)
                    .entries
                    .remove(&name)
                    .expect("unlink target");
                self.ino_mut(ino).nlink -= 1;
                self.drop_if_unreferenced(ino);
            }
            Step::Rmdir { path } => {
                let (parent, name) = self.parent_and_name(path);
                let ino = self
                    .ino_mut(parent)
                    .entries
                    .remove(&name)
                    .expect("rmdir target");
                self.ino_mut(parent).nlink -= 1;
                self.inodes.remove(&ino);
            }
            Step::Rename { from, to, flags } => self.apply_rename(from, to, *flags),
            Step::SetAttr {
                file,
                caller_uid,
                mode,
                uid,
                gid,
                size,
                times: _,
            } => {
                let ino = self.resolve_file(file);
                if let Some(size) = size {
                    let old = self.inodes[&ino].content.len() as u64;
                    if *size < old {
                        self.zero_unsynced(ino, *size, old.next_multiple_of(8));
                    }
                    let n = self.ino_mut(ino);
                    n.content = Bytes::new(resized(&n.content.0, *size as usize));
                    drop_privileges(n, *caller_uid);
                }
                let n = self.ino_mut(ino);
                if let Some(m) = mode {
                    n.mode = (n.mode & libc::S_IFMT) | (m & 0o7777);
                }
                if let Some(u) = uid {
                    n.uid = *u;
                }
                if let Some(g) = gid {
                    n.gid = *g;
                }
                if (uid.is_some() || gid.is_some()) && mode.is_none() && n.kind != Kind::Dir {
                    n.mode = clear_suid_sgid(n.mode);
                }
            }
            Step::Fallocate {
                file,
                offset,
                len,
                mode,
            } => {
                let ino = self.resolve_file(file);
                let end = offset + len;
                let size = self.inodes[&ino].content.len() as u64;
                let keep = mode & FALLOC_KEEP_SIZE != 0;
                let zero_to = if mode & (FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE) != 0 {
                    end.min(size)
                } else {
                    *offset
                };
                if zero_to > *offset {
                    self.zero_unsynced(ino, *offset, zero_to);
                }
                let n = self.ino_mut(ino);
                let new_len = if !keep && mode & FALLOC_PUNCH_HOLE == 0 && end > size {
                    end
                } else {
                    size
                };
                let mut c = resized(&n.content.0, new_len as usize);
                if zero_to > *offset {
                    c[*offset as usize..zero_to as usize].fill(0);
                }
                n.content = Bytes::new(c);
                drop_privileges(n, 0);
            }
            Step::SetXattr { path, name, value } => {
                let ino = self.resolve(path).expect("xattr target");
                self.ino_mut(ino)
                    .xattrs
                    .insert(name.as_bytes().to_vec(), value.0.as_ref().clone());
            }
            Step::RemoveXattr { path, name } => {
                let ino = self.resolve(path).expect("xattr target");
                self.ino_mut(ino).xattrs.remove(name.as_bytes());
            }
            Step::Write {
                file,
                offset,
                data,
                caller_uid,
            } => {
                let ino = self.resolve_file(file);
                let old = self.inodes[&ino].content.clone();
                let end = *offset as usize + data.len();
                let mut c = resized(&old.0, old.len().max(end));
                c[*offset as usize..end].copy_from_slice(&data.0);
                let (wa, wb) = (offset / 8 * 8, (end as u64).next_multiple_of(8));
                let mut before = vec![0u8; (wb - wa) as usize];
                if let Some(have) = old.0.get(wa as usize..old.0.len().min(wb as usize)) {
                    before[..have.len()].copy_from_slice(have);
                }
                self.unsynced
                    .entry(ino)
                    .or_default()
                    .push((wa, Bytes::new(before)));
                let n = self.ino_mut(ino);
                n.content = Bytes::new(c);
                drop_privileges(n, *caller_uid);
            }
            Step::Fsync { file } => {
                let ino = self.resolve_file(file);
                self.unsynced.remove(&ino);
            }
            Step::Open { path, fd } => {
                let ino = self.resolve(path).expect("open target");
                assert!(self.fds.insert(*fd, ino).is_none(), "fd {fd} reused");
            }
            Step::Close { fd } => {
                let ino = self.fds.remove(fd).expect("close of an unopened fd");
                if self.inodes.contains_key(&ino) {
                    self.drop_if_unreferenced(ino);
                }
            }
            Step::Checkpoint | Step::Shutdown => {}
        }
    }

    fn apply_rename(&mut self, from: &str, to: &str, flags: u32) {
        let (sp, sname) = self.parent_and_name(from);
        let (dp, dname) = self.parent_and_name(to);
        let src = self.inodes[&sp].entries[&sname];
        let dst = self.inodes[&dp].entries.get(&dname).copied();
        if dst == Some(src) {
            return;
        }
        let src_dir = self.inodes[&src].kind == Kind::Dir;
        if flags & libc::RENAME_EXCHANGE != 0 {
            let dst = dst.expect("exchange target");
            let dst_dir = self.inodes[&dst].kind == Kind::Dir;
            self.ino_mut(sp).entries.insert(sname, dst);
            self.ino_mut(dp).entries.insert(dname, src);
            if sp != dp {
                let n = self.ino_mut(sp);
                n.nlink = n.nlink + dst_dir as u32 - src_dir as u32;
                let n = self.ino_mut(dp);
                n.nlink = n.nlink + src_dir as u32 - dst_dir as u32;
            }
            if src_dir {
                self.ino_mut(src).parent = dp;
            }
            if dst_dir {
                self.ino_mut(dst).parent = sp;
            }
            return;
        }
        if let Some(dst) = dst {
            if self.inodes[&dst].kind == Kind::Dir {
                self.inodes.remove(&dst);
                self.ino_mut(dp).nlink -= 1;
            } else {
                self.ino_mut(dst).nlink -= 1;
                self.drop_if_unreferenced(dst);
            }
        }
        self.ino_mut(sp).entries.remove(&sname);
        self.ino_mut(dp).entries.insert(dname, src);
        if src_dir {
            self.ino_mut(sp).nlink -= 1;
            self.ino_mut(dp).nlink += 1;
            self.ino_mut(src).parent = dp;
        }
    }

    /// The canonical view of the model.
    pub fn view(&self) -> View {
        let mut v = View::default();
        self.walk(ROOT_INO, b"/".to_vec(), &mut v);
        v
    }

    fn walk(&self, ino: u64, path: Vec<u8>, v: &mut View) {
        let n = &self.inodes[&ino];
        v.entries.insert(
            path.clone(),
            VEntry {
                ino,
                kind: n.kind,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                rdev: n.rdev,
                nlink: n.nlink,
                size: n.size(),
                dotdot: (n.kind == Kind::Dir).then_some(n.parent),
                target: (n.kind == Kind::Symlink).then(|| n.target.clone()),
                xattrs: n
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                content: (n.kind == Kind::File).then(|| n.content.clone()),
            },
        );
        for (name, &child) in &n.entries {
            self.walk(child, join(&path, name), v);
        }
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

// =============================================================================================
// Views: what a user sees, canonically

/// One name as seen through the filesystem (no timestamps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VEntry {
    pub ino: u64,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub nlink: u32,
    pub size: u64,
    /// Directories: the inode `..` names.
    pub dotdot: Option<u64>,
    pub target: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub content: Option<Bytes>,
}

/// Every path of the tree (hard links appear once per name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    pub entries: BTreeMap<Vec<u8>, VEntry>,
}

impl View {
    /// Distinct inodes reachable.
    pub fn inodes(&self) -> BTreeSet<u64> {
        self.entries.values().map(|e| e.ino).collect()
    }
}

/// Reads everything visible through a volume.
pub fn view_of(vol: &Volume) -> Result<View, String> {
    let mut v = View::default();
    walk_volume(vol, ROOT_INO, ROOT_INO, b"/".to_vec(), &mut v, 0)?;
    Ok(v)
}

fn fs_err(what: &str, e: FsError) -> String {
    format!("{what}: {e:?}")
}

fn walk_volume(
    vol: &Volume,
    ino: u64,
    parent: u64,
    path: Vec<u8>,
    v: &mut View,
    depth: usize,
) -> Result<(), String> {
    let show = String::from_utf8_lossy(&path).into_owned();
    if depth > 64 {
        return Err(format!("{show}: directory tree deeper than 64 (a cycle?)"));
    }
    let e = vol.stat(ino).map_err(|e| fs_err(&show, e))?;
    let a = e.attr;
    let kind = a.kind();
    let mut entry = VEntry {
        ino,
        kind,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        nlink: a.nlink,
        size: a.size,
        dotdot: None,
        target: None,
        xattrs: Vec::new(),
        content: None,
    };
    let names = vol.listxattr(ino).map_err(|e| fs_err(&show, e))?;
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let value = vol.getxattr(ino, name).map_err(|e| fs_err(&show, e))?;
        entry.xattrs.push((name.to_vec(), value));
    }
    entry.xattrs.sort();
    let mut children = Vec::new();
    match kind {
        Kind::File => {
            let mut out = Vec::with_capacity(a.size as usize);
            while (out.len() as u64) < a.size {
                let before = out.len();
                vol.read(ino, out.len() as u64, 1 << 20, |b| out.extend_from_slice(b))
                    .map_err(|e| fs_err(&show, e))?;
                if out.len() == before {
                    return Err(format!("{show}: read returned nothing before EOF"));
                }
            }
            entry.content = Some(Bytes::new(out));
        }
        Kind::Symlink => entry.target = Some(vol.readlink(ino).map_err(|e| fs_err(&show, e))?),
        Kind::Dir => {
            let mut err = None;
            vol.readdir(ino, 0, |child, _off, k, name| {
                match name {
                    b"." => {
                        if child != ino {
                            err = Some(format!("{show}: '.' names inode {child}"));
                        }
                    }
                    b".." => entry.dotdot = Some(child),
                    _ => children.push((name.to_vec(), child, k)),
                }
                false
            })
            .map_err(|e| fs_err(&show, e))?;
            if let Some(e) = err {
                return Err(e);
            }
            if ino != ROOT_INO && entry.dotdot != Some(parent) {
                return Err(format!(
                    "{show}: '..' is {:?}, the directory is reached from {parent}",
                    entry.dotdot
                ));
            }
        }
        _ => {}
    }
    v.entries.insert(path.clone(), entry);
    for (name, child, k) in children {
        let child_path = join(&path, &name);
        walk_volume(vol, child, ino, child_path.clone(), v, depth + 1)?;
        let got = v.entries[&child_path].kind;
        if got != k {
            return Err(format!(
                "{}: readdir says {k:?}, the inode is {got:?}",
                String::from_utf8_lossy(&child_path)
            ));
        }
    }
    Ok(())
}

/// Differences between what is visible and what a candidate state allows, with `slack`
/// listing other acceptable values of file words. Empty when they match.
pub fn diff(actual: &View, expected: &View, slack: &Slack) -> Vec<String> {
    let mut out = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (path, e) in &expected.entries {
        let Some(a) = actual.entries.get(path) else {
            out.push(format!("{}: missing (expected {:?})", show(path), e.kind));
            continue;
        };
        let mut fields = Vec::new();
        macro_rules! cmp {
            ($f:ident) => {
                if a.$f != e.$f {
                    fields.push(format!(
                        "{} {:?} != expected {:?}",
                        stringify!($f),
                        a.$f,
                        e.$f
                    ));
                }
            };
        }
        cmp!(ino);
        cmp!(kind);
        if a.mode != e.mode {
            fields.push(format!("mode {:o} != expected {:o}", a.mode, e.mode));
        }
        cmp!(uid);
        cmp!(gid);
        cmp!(rdev);
        cmp!(nlink);
        cmp!(size);
        cmp!(dotdot);
        cmp!(target);
        if a.xattrs != e.xattrs {
            let names = |x: &[(Vec<u8>, Vec<u8>)]| -> Vec<String> {
                x.iter()
                    .map(|(k, v)| format!("{}={}b/{:x}", show(k), v.len(), fnv(v)))
                    .collect()
            };
            fields.push(format!(
                "xattrs {:?} != expected {:?}",
                names(&a.xattrs),
                names(&e.xattrs)
            ));
        }
        if let (Some(ac), Some(ec)) = (&a.content, &e.content)
            && ac.len() == ec.len()
            && ac.0 != ec.0
        {
            let empty = BTreeMap::new();
            let alts = slack.get(&e.ino).unwrap_or(&empty);
            if let Some(msg) = content_mismatch(&ac.0, &ec.0, alts) {
                fields.push(msg);
            }
        }
        if !fields.is_empty() {
            out.push(format!("{}: {}", show(path), fields.join("; ")));
        }
    }
    for (path, a) in &actual.entries {
        if !expected.entries.contains_key(path) {
            out.push(format!(
                "{}: unexpected {:?} (ino {}, {} bytes)",
                show(path),
                a.kind,
                a.ino,
                a.size
            ));
        }
    }
    out
}

/// First words where `actual` is neither `expected` nor an allowed alternative.
fn content_mismatch(
    actual: &[u8],
    expected: &[u8],
    alts: &BTreeMap<u64, Vec<[u8; 8]>>,
) -> Option<String> {
    let len = actual.len();
    let mut bad = Vec::new();
    let mut count = 0u64;
    for w in 0..(len as u64).div_ceil(8) {
        let valid = (len - (w * 8) as usize).min(8);
        let a = word(actual, w);
        let e = word(expected, w);
        if a[..valid] == e[..valid] {
            continue;
        }
        let ok = alts
            .get(&w)
            .is_some_and(|v| v.iter().any(|alt| alt[..valid] == a[..valid]));
        if !ok {
            count += 1;
            if bad.len() < 4 {
                bad.push(format!(
                    "@{}: {:02x?} expected {:02x?}{}",
                    w * 8,
                    &a[..valid],
                    &e[..valid],
                    if alts.contains_key(&w) {
                        " (or an unsynced value)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    (count > 0).then(|| format!("content differs in {count} words: {}", bad.join(", ")))
}

// =============================================================================================
// Running steps on a volume

/// Runs one step on the volume. Returns the inode a creating step made.
pub fn exec(vol: &Volume, model: &Model, step: &Step) -> Result<Option<u64>, FsError> {
    let root = caller(0);
    let res = match step {
        Step::Create { path, mode } => {
            let (parent, name) = model.parent_and_name(path);
            Some(vol.create(root, parent, &name, *mode, true)?.ino)
        }
        Step::Mkdir { path, mode } => {
            let (parent, name) = model.parent_and_name(path);
            Some(vol.mkdir(root, parent, &name, *mode)?.ino)
        }
        Step::Mknod { path, mode, rdev } => {
            let (parent, name) = model.parent_and_name(path);
            Some(vol.mknod(root, parent, &name, *mode, *rdev)?.ino)
        }
        Step::Symlink { path, target } => {
            let (parent, name) = model.parent_and_name(path);
            Some(vol.symlink(root, parent, &name, target.as_bytes())?.ino)
        }
        Step::Link { from, to } => {
            let ino = model.resolve(from).expect("link source");
            let (parent, name) = model.parent_and_name(to);
            vol.link(ino, parent, &name)?;
            Some(ino)
        }
        Step::Unlink { path } => {
            let (parent, name) = model.parent_and_name(path);
            vol.remove(parent, &name, false)?;
            None
        }
        Step::Rmdir { path } => {
            let (parent, name) = model.parent_and_name(path);
            vol.remove(parent, &name, true)?;
            None
        }
        Step::Rename { from, to, flags } => {
            let (sp, sname) = model.parent_and_name(from);
            let (dp, dname) = model.parent_and_name(to);
            vol.rename(sp, &sname, dp, &dname, *flags)?;
            None
        }
        Step::SetAttr {
            file,
            caller_uid,
            mode,
            uid,
            gid,
            size,
            times,
        } => {
            let ino = model.resolve_file(file);
            let t = Time {
                secs: 1_000_000,
                nsecs: 5,
            };
            let req = SetAttr {
                mode: *mode,
                uid: *uid,
                gid: *gid,
                size: *size,
                atime: times.then_some(t),
                mtime: times.then_some(t),
                ctime: None,
            };
            vol.setattr(caller(*caller_uid), ino, req)?;
            None
        }
        Step::Fallocate {
            file,
            offset,
            len,
            mode,
        } => {
            vol.fallocate(model.resolve_file(file), *offset, *len, *mode)?;
            None
        }
        Step::SetXattr { path, name, value } => {
            let ino = model.resolve(path).expect("xattr target");
            vol.setxattr(ino, name.as_bytes(), &value.0, 0)?;
            None
        }
        Step::RemoveXattr { path, name } => {
            let ino = model.resolve(path).expect("xattr target");
            vol.removexattr(ino, name.as_bytes())?;
            None
        }
        Step::Write {
            file,
            offset,
            data,
            caller_uid,
        } => {
            let ino = model.resolve_file(file);
            let n = vol.write(caller(*caller_uid), ino, *offset, &data.0)?;
            assert_eq!(n as usize, data.len(), "short write");
            None
        }
        Step::Fsync { file } => {
            vol.fsync(model.resolve_file(file))?;
            None
        }
        Step::Open { path, .. } => {
            vol.open(model.resolve(path).expect("open target"), true)?;
            None
        }
        Step::Close { fd } => {
            vol.release(model.fds[fd]);
            None
        }
        Step::Checkpoint => {
            vol.checkpoint()?;
            None
        }
        Step::Shutdown => {
            vol.shutdown()?;
            None
        }
    };
    // The kernel's lookup reference from create/mkdir/mknod/symlink/link is dropped at once,
    // as if the dentry were evicted: unlinking then releases the inode in the same op.
    if let Some(ino) = res {
        vol.forget(ino, 1);
    }
    Ok(res)
}

// =============================================================================================
// Scenarios, templates and configuration

/// The state a scenario starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prelude {
    /// A freshly made filesystem.
    Empty,
    /// The standard tree ([`standard_prelude`]).
    Standard,
}

/// A named workload.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub prelude: Prelude,
    pub steps: Vec<Step>,
    /// A smaller sample for this (expensive) scenario when sampling.
    pub max_points: Option<usize>,
    /// When sampling, keep every persist point of steps that wrote a checkpoint.
    pub keep_checkpoint_points: bool,
}

impl Scenario {
    pub fn new(name: &str, prelude: Prelude, steps: Vec<Step>) -> Scenario {
        Scenario {
            name: name.into(),
            prelude,
            steps,
            max_points: None,
            keep_checkpoint_points: false,
        }
    }

    /// When sampling, keep every persist point of the steps that write a checkpoint.
    pub fn keep_checkpoint_points(mut self) -> Scenario {
        self.keep_checkpoint_points = true;
        self
    }

    /// Caps the sample of this scenario (not an exhaustive run) at `n` crash points.
    pub fn sample_at_most(mut self, n: usize) -> Scenario {
        self.max_points = Some(n);
        self
    }
}

/// The standard starting tree: files with data (multi-frame, partial last frame, a hole, an
/// unwritten fallocated range), a hard link, an empty and a non-empty directory, a setgid
/// directory, a setuid file owned by uid 1000, a symlink, a FIFO and an xattr.
pub fn standard_prelude() -> Vec<Step> {
    vec![
        mkdir("/d1", 0o755),
        create("/d1/f1", 0o644),
        write(p("/d1/f1"), 0, 12000, 1),
        setxattr("/d1/f1", "user.a", b"one"),
        mkdir("/d1/sub", 0o755),
        mkdir("/d2", 0o755),
        create("/d2/f2", 0o644),
        write(p("/d2/f2"), 0, 5000, 2),
        mkdir("/d2/full", 0o755),
        create("/d2/full/inner", 0o600),
        write(p("/d2/full/inner"), 0, 100, 3),
        mkdir("/d2/empty", 0o755),
        create("/f3", 0o644),
        write(p("/f3"), 0, 100_000, 4),
        create("/h1", 0o644),
        write(p("/h1"), 0, 100, 5),
        write(p("/h1"), 40_000, 100, 6),
        symlink("/lnk", "d1/f1"),
        mknod("/fifo", libc::S_IFIFO | 0o644, 0),
        create("/falloc", 0o644),
        fallocate(p("/falloc"), 0, 8192, 0),
        fallocate(p("/falloc"), 8192, 8192, FALLOC_KEEP_SIZE),
        create("/suid", 0o755),
        chown("/suid", 1000, 1000),
        chmod("/suid", 0o6775),
        write(p("/suid"), 0, 3000, 7),
        setxattr("/suid", "security.capability", &CAPABILITY),
        link("/d1/f1", "/d2/f1hard"),
        mkdir("/gdir", 0o2775),
        chown("/gdir", 0, 1000),
    ]
}

/// A pool to start runs from (forked for each run), and the model of what it holds.
pub struct Template {
    pub sim: CrashSimBackend,
    pub model: Model,
}

/// Bytes of the data region (from its start) filled with garbage in templates: where these
/// small workloads allocate (best fit packs allocations at the start of the region).
pub const GARBAGE_BYTES: u64 = 2 << 20;

/// Recognisable garbage for never-used frames, so that a frame handed out without being
/// zeroed shows.
fn garbage(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| 0xA0 | ((i / 8) as u8 & 0x0F) | ((i % 8) as u8) << 4)
        .collect()
}

/// The template of a prelude, built once per process: a garbage-filled pool, formatted,
/// mounted, the prelude run (and checked against the model), then shut down cleanly.
pub fn template(prelude: Prelude) -> Arc<Template> {
    static CACHE: OnceLock<Mutex<HashMap<Prelude, Arc<Template>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().unwrap();
    if let Some(t) = guard.get(&prelude) {
        return t.clone();
    }
    let backend = Arc::new(CrashSimBackend::new(POOL_BYTES));
    let pool = Pool::format_backend("template", Box::new(backend.clone())).expect("format");
    let data_start = pool.data_region().start.byte_offset();
    pool.write(data_start, &garbage(GARBAGE_BYTES as usize))
        .expect("garbage");
    pool.persist(data_start, GARBAGE_BYTES).expect("persist");
    let vol = Volume::load(Arc::new(pool)).expect("first mount");
    let mut model = Model::empty();
    let steps = match prelude {
        Prelude::Empty => Vec::new(),
        Prelude::Standard => standard_prelude(),
    };
    for (i, step) in steps.iter().enumerate() {
        let created = exec(&vol, &model, step)
            .unwrap_or_else(|e| panic!("prelude step {i} {step:?} failed: {e:?}"));
        model.apply(step, created);
    }
    let live = view_of(&vol).expect("view");
    let d = diff(&live, &model.view(), &Slack::new());
    assert!(
        d.is_empty(),
        "prelude: live volume != model:\n{}",
        d.join("\n")
    );
    model.unsynced.clear();
    vol.shutdown().expect("shutdown");
    drop(vol);
    let t = Arc::new(Template {
        sim: backend.fork(),
        model,
    });
    guard.insert(prelude, t.clone());
    t
}

/// How the data of returned writes is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataRule {
    /// DESIGN section 6: durable when write() returns (default).
    OnReturn,
    /// The contract: durable at the latest at the next fsync.
    OnFsync,
}

/// Run configuration, from the environment.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Crash points checked per scenario and mode; `None`: all.
    pub max_points: Option<usize>,
    /// Seed of the sampling, the torn crashes and the random workloads.
    pub seed: u64,
    pub data: DataRule,
}

/// Default sample size per scenario and mode (keeps a debug run of the suite short).
pub const DEFAULT_POINTS: usize = 12;
/// Default seed: fixed, so CI runs are reproducible; `PFNFS_CRASH_SEED=random` draws one.
pub const DEFAULT_SEED: u64 = 0x00C0_FFEE_5EED;

impl Config {
    /// `PFNFS_CRASH_POINTS=all|<count>`, `PFNFS_CRASH_SEED=<u64, 0x.. or random>`,
    /// `PFNFS_CRASH_DATA=return|contract`.
    pub fn from_env() -> Config {
        let max_points = match std::env::var("PFNFS_CRASH_POINTS").ok().as_deref() {
            None | Some("") => Some(DEFAULT_POINTS),
            Some("all") => None,
            Some(n) => Some(n.parse().expect("PFNFS_CRASH_POINTS: all or a count")),
        };
        let seed = match std::env::var("PFNFS_CRASH_SEED").ok().as_deref() {
            None | Some("") => DEFAULT_SEED,
            Some("random") => {
                let s = rand::random();
                eprintln!("PFNFS_CRASH_SEED={s:#x}");
                s
            }
            Some(s) => parse_u64(s).expect("PFNFS_CRASH_SEED: a number"),
        };
        let data = match std::env::var("PFNFS_CRASH_DATA").ok().as_deref() {
            None | Some("") | Some("return") => DataRule::OnReturn,
            Some("contract") => DataRule::OnFsync,
            Some(x) => panic!("PFNFS_CRASH_DATA={x}: expected return or contract"),
        };
        Config {
            max_points,
            seed,
            data,
        }
    }
}

pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A seed for one purpose, derived from the run seed.
pub fn derive_seed(seed: u64, what: &str, n: u64) -> u64 {
    let mut h = fnv(what.as_bytes()) ^ seed.rotate_left(17) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

// =============================================================================================
// The runner

/// One run of a scenario's steps, crashed or not.
pub struct Run {
    /// Persist points of the steps (fences after mounting the template).
    pub points: u64,
    /// The crash, if one was armed and hit.
    pub crash: Option<CrashReport>,
    /// The step in flight at the crash (`None`: the crash came after the last step).
    pub in_flight: Option<usize>,
    /// Model after the last step that returned before the crash.
    pub before: Model,
    /// Model after the step in flight (equal to `before` when none was).
    pub after: Model,
    /// The backend, crashed: its durable image is what recovery sees.
    pub backend: Arc<CrashSimBackend>,
    /// Persist-point range `(first, last]` of each step that ran.
    pub step_points: Vec<(u64, u64)>,
    /// Checkpoints written while the steps ran (log generations started).
    pub checkpoints: u64,
    /// Steps during which a checkpoint was written.
    pub checkpoint_steps: Vec<usize>,
}

/// Runs the steps on the scenario's template. With `arm`, crashes before the `k`-th persist
/// point of the steps (`k = points + 1`: right after the last step). With `check_live`, checks
/// the live volume against the model after every step.
pub fn run(scn: &Scenario, arm: Option<(u64, CrashMode)>, check_live: bool) -> Result<Run, String> {
    run_with(scn, arm, check_live, None)
}

/// Puts something between the pool and the simulator (the harness's own tests use it to
/// inject a durability bug and check that the suite sees it).
pub type Wrap = fn(Arc<CrashSimBackend>) -> Box<dyn PoolBackend>;

/// [`run`], with the pool's backend wrapped by `wrap`.
pub fn run_with(
    scn: &Scenario,
    arm: Option<(u64, CrashMode)>,
    check_live: bool,
    wrap: Option<Wrap>,
) -> Result<Run, String> {
    let tpl = template(scn.prelude);
    let backend = Arc::new(tpl.sim.fork());
    let boxed: Box<dyn PoolBackend> = match wrap {
        Some(wrap) => wrap(backend.clone()),
        None => Box::new(backend.clone()),
    };
    let pool =
        Pool::open_backend("sim", boxed, false).map_err(|e| format!("open template: {e}"))?;
    let vol = Volume::load(Arc::new(pool)).map_err(|e| format!("mount template: {e:?}"))?;
    let base = backend.persist_points();
    let generation = vol.journal().generation();
    if let Some((k, mode)) = arm {
        backend.arm_crash(base + k, mode);
    }
    let mut model = tpl.model.clone();
    let mut step_points = Vec::new();
    let mut checkpoint_steps = Vec::new();
    for (i, step) in scn.steps.iter().enumerate() {
        let before_model = model.clone();
        let p0 = backend.persist_points() - base;
        let created = exec(&vol, &model, step)
            .map_err(|e| format!("step {i} {step:?} failed on the live volume: {e:?}"))?;
        model.apply(step, created);
        let p1 = backend.persist_points() - base;
        step_points.push((p0, p1));
        if vol.journal().generation() != generation + checkpoint_steps.len() as u64 {
            checkpoint_steps.push(i);
        }
        if let Some(crash) = backend.crashed() {
            let checkpoints = vol.journal().generation() - generation;
            return Ok(Run {
                checkpoints,
                checkpoint_steps,
                points: p1,
                crash: Some(crash),
                in_flight: Some(i),
                before: before_model,
                after: model,
                backend,
                step_points,
            });
        }
        if check_live {
            let live = view_of(&vol).map_err(|e| format!("after step {i}: {e}"))?;
            let d = diff(&live, &model.view(), &Slack::new());
            if !d.is_empty() {
                return Err(format!(
                    "after step {i} {step:?} the LIVE volume differs from the model:\n  {}",
                    d.join("\n  ")
                ));
            }
        }
    }
    let points = backend.persist_points() - base;
    let checkpoints = vol.journal().generation() - generation;
    let mode = arm.map(|(_, m)| m).unwrap_or(CrashMode::Clean);
    backend.crash_now(mode);
    let crash = backend.crashed();
    Ok(Run {
        points,
        crash,
        checkpoints,
        checkpoint_steps,
        in_flight: None,
        before: model.clone(),
        after: model,
        backend,
        step_points,
    })
}

/// The slack a candidate state gets: the contract's unsynced alternatives (with
/// [`DataRule::OnFsync`]) plus, for the state before a write in flight, the new values of the
/// words it writes (the write may have reached the medium word by word).
fn slack_for(
    cand: &Model,
    rule: DataRule,
    in_flight_write: Option<(u64, u64, u64, &Model)>,
) -> Slack {
    let mut s = match rule {
        DataRule::OnReturn => Slack::new(),
        DataRule::OnFsync => cand.unsynced_slack(),
    };
    if let Some((ino, offset, len, after)) = in_flight_write
        && let Some(n) = after.inodes.get(&ino)
    {
        let words = s.entry(ino).or_default();
        for w in offset / 8..(offset + len).div_ceil(8) {
            let v = word(&n.content.0, w);
            let alts = words.entry(w).or_default();
            if !alts.contains(&v) {
                alts.push(v);
            }
        }
    }
    s
}

/// Checks a frame-ownership partition: free set, file extents and checkpoint frames tile the
/// data region exactly.
pub fn check_ownership(vol: &Volume) -> Result<(), String> {
    let data = vol.pool().data_region();
    let mut all: Vec<(PfnRange, String)> = Vec::new();
    for r in vol.allocator().free_extents() {
        all.push((r, "free".into()));
    }
    for r in vol.tree_frames().unwrap() {
        all.push((r, "checkpoint".into()));
    }
    for r in vol.frames_in_doubt() {
        all.push((r, "in doubt".into()));
    }
    for cell in vol.all_cells().unwrap() {
        let inode = cell.inode.read();
        if let Some(map) = inode.file_map() {
            for e in map.iter() {
                all.push((
                    e.pfns,
                    format!("inode {} frame {}", inode.ino, e.file_frame),
                ));
            }
        }
    }
    all.sort_by_key(|(r, _)| r.start);
    let mut cursor = data.start;
    for (r, what) in &all {
        if r.start < cursor {
            return Err(format!("{what} {r} overlaps frames owned before {cursor}"));
        }
        if r.start > cursor {
            return Err(format!(
                "frames {cursor}..{} owned by nobody (leaked)",
                r.start
            ));
        }
        cursor = r.end();
    }
    if cursor != data.end() {
        return Err(format!(
            "frames {cursor}..{} owned by nobody (leaked)",
            data.end()
        ));
    }
    Ok(())
}

/// Mounts a crash image (recovery) and checks everything but the model comparison. Returns
/// the volume and its view.
/// Also returns the persist points the recovery made.
fn recover(crashed: &CrashSimBackend) -> Result<(Volume, View, u64), String> {
    // MemBackend::from_bytes(crash image), copying only the pages that may be non-zero.
    let mut mem = MemBackend::new(crashed.len_bytes());
    crashed.for_each_durable_page(|offset, page| mem.write_mut(offset, page));
    let counter = Arc::new(FenceCounter {
        inner: mem,
        fences: AtomicU64::new(0),
    });
    let (vol, view) = recover_on(Box::new(counter.clone()))?;
    Ok((vol, view, counter.fences.load(Ordering::Relaxed)))
}

/// A RAM backend that counts fences (the persist points of a recovery).
#[derive(Debug)]
struct FenceCounter {
    inner: MemBackend,
    fences: AtomicU64,
}

impl PoolBackend for FenceCounter {
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), pfnfs_alloc::MediaError> {
        self.inner.read_into(offset, buf)
    }
    unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
        // SAFETY: the same contract, passed on.
        unsafe { self.inner.borrow(offset, len) }
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), pfnfs_alloc::MediaError> {
        self.inner.write(offset, data)
    }
    fn zero(&self, offset: u64, len: u64) -> Result<(), pfnfs_alloc::MediaError> {
        self.inner.zero(offset, len)
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), pfnfs_alloc::MediaError> {
        self.inner.flush(offset, len)
    }
    fn fence(&self) -> std::io::Result<()> {
        self.fences.fetch_add(1, Ordering::Relaxed);
        self.inner.fence()
    }
    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.sync(offset, len)
    }
}

/// Crashes a recovery of `crashed` before its persist point `k` (of `points`), recovers the
/// result again and checks that it shows `view`: recovery must itself be crash-safe.
fn check_crashed_recovery(
    crashed: &CrashSimBackend,
    k: u64,
    mode: CrashMode,
    view: &View,
) -> Result<(), String> {
    let sim = Arc::new(crashed.fork());
    sim.arm_crash(k, mode);
    let pool = Pool::open_backend("crash", Box::new(sim.clone()), false)
        .map_err(|e| format!("the pool does not open: {e}"))?;
    let vol = Volume::load(Arc::new(pool)).map_err(|e| format!("recovery failed: {e:?}"))?;
    drop(vol);
    sim.crash_now(mode);
    let (_vol, view2, _) = recover(&sim).map_err(|e| format!("after it: {e}"))?;
    let d = diff(&view2, view, &Slack::new());
    if !d.is_empty() {
        return Err(format!(
            "recovering again shows another state:\n    {}",
            d.join("\n    ")
        ));
    }
    Ok(())
}

/// Opens a pool on `backend` and recovers it, with every check but the model comparison.
fn recover_on(backend: Box<dyn PoolBackend>) -> Result<(Volume, View), String> {
    let pool = Pool::open_backend("crash", backend, false)
        .map_err(|e| format!("recovery: the pool does not open: {e}"))?;
    let vol = Volume::load(Arc::new(pool)).map_err(|e| format!("recovery failed: {e:?}"))?;
    let report = pfnfs_fs::fsck::check_volume(&vol);
    if !report.problems.is_empty() {
        return Err(format!("fsck after recovery: {:?}", report.problems));
    }
    vol.allocator()
        .check_consistency()
        .map_err(|e| format!("allocator after recovery: {e}"))?;
    check_ownership(&vol).map_err(|e| format!("frame ownership after recovery: {e}"))?;
    let view = view_of(&vol).map_err(|e| format!("reading the recovered tree: {e}"))?;
    let reachable = view.inodes();
    let cells: BTreeSet<u64> = vol
        .all_cells()
        .unwrap()
        .iter()
        .map(|c| c.inode.read().ino)
        .collect();
    if cells != reachable {
        let extra: Vec<_> = cells.difference(&reachable).collect();
        let lost: Vec<_> = reachable.difference(&cells).collect();
        return Err(format!(
            "inodes after recovery: unreachable (orphans) {extra:?}, reachable but absent {lost:?}"
        ));
    }
    Ok((vol, view))
}

/// Mounts the recovered pool again: a second recovery must find the same state and free set.
fn remount(vol: Volume, view: &View) -> Result<Volume, String> {
    let free = vol.allocator().free_extents();
    let pool = Arc::try_unwrap(vol_into_pool(vol)).map_err(|_| "pool still shared".to_string())?;
    let backend = pool.into_backend();
    let pool = Pool::open_backend("crash-again", backend, false)
        .map_err(|e| format!("second mount: the pool does not open: {e}"))?;
    let vol = Volume::load(Arc::new(pool)).map_err(|e| format!("second mount failed: {e:?}"))?;
    let view2 = view_of(&vol)?;
    let d = diff(&view2, view, &Slack::new());
    if !d.is_empty() {
        return Err(format!(
            "a second mount shows another state:\n  {}",
            d.join("\n  ")
        ));
    }
    if vol.allocator().free_extents() != free {
        return Err("a second mount has another free set".into());
    }
    Ok(vol)
}

/// Non-zero bytes found past a file's end.
struct PastEof {
    msg: String,
    /// File offset of the first and every later byte of the tail read.
    offset: u64,
    tail: Vec<u8>,
}

/// Extends every file by a frame past the end of its last frame and checks that what lies
/// past the old end reads zero: bytes beyond EOF must never reappear (POSIX: an extended
/// range reads as zeros).
fn probe_past_eof(vol: &Volume, view: &View) -> Result<(), PastEof> {
    let other = |msg: String| PastEof {
        msg,
        offset: 0,
        tail: Vec::new(),
    };
    for (path, e) in &view.entries {
        if e.kind != Kind::File {
            continue;
        }
        let new_size = e.size.next_multiple_of(FRAME_SIZE) + FRAME_SIZE;
        vol.setattr(
            caller(0),
            e.ino,
            SetAttr {
                size: Some(new_size),
                ..Default::default()
            },
        )
        .map_err(|err| other(fs_err("extend", err)))?;
        let mut tail = Vec::new();
        vol.read(e.ino, e.size, (new_size - e.size) as u32, |b| {
            tail.extend_from_slice(b)
        })
        .map_err(|err| other(fs_err("read", err)))?;
        if let Some(i) = tail.iter().position(|&b| b != 0) {
            let msg = format!(
                "{}: after extending the recovered file from {} to {new_size} bytes, byte {} \
                 reads {:#04x}, not zero (data past EOF survived the crash)",
                String::from_utf8_lossy(path),
                e.size,
                e.size + i as u64,
                tail[i]
            );
            return Err(PastEof {
                msg,
                offset: e.size,
                tail,
            });
        }
    }
    Ok(())
}

fn vol_into_pool(vol: Volume) -> Arc<Pool> {
    let pool = vol.pool().clone();
    drop(vol);
    pool
}

/// Where a failure happened, enough to replay it.
#[derive(Clone, Debug)]
pub struct CrashCase {
    pub scenario: String,
    pub point: u64,
    pub mode: CrashMode,
}

impl fmt::Display for CrashCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            CrashMode::Clean => "clean".to_string(),
            CrashMode::Torn { seed } => format!("torn:{seed:#x}"),
        };
        write!(f, "{}:{}:{}", self.scenario, self.point, mode)
    }
}

/// Runs one crash case and checks it. `Err` describes the failure.
pub fn check_case(scn: &Scenario, case: &CrashCase, cfg: &Config) -> Result<(), String> {
    check_case_with(scn, case, cfg, None)
}

/// [`check_case`] with the live run's backend wrapped by `wrap`.
pub fn check_case_with(
    scn: &Scenario,
    case: &CrashCase,
    cfg: &Config,
    wrap: Option<Wrap>,
) -> Result<(), String> {
    let r = run_with(scn, Some((case.point, case.mode)), false, wrap)?;
    let step_desc = |i: Option<usize>| match i {
        Some(i) => format!("step {i} {:?}", scn.steps[i]),
        None => "none (crash after the last step)".into(),
    };
    let span = r
        .in_flight
        .map(|i| {
            let (a, b) = r.step_points[i];
            format!(" (its persist points: {}..={b})", a + 1)
        })
        .unwrap_or_default();
    let ctx = format!(
        "crash {:?}, in flight: {}{span}",
        r.crash,
        step_desc(r.in_flight)
    );
    let (vol, view, recovery_points) = recover(&r.backend).map_err(|e| format!("{e}\n  {ctx}"))?;
    let write = r.in_flight.and_then(|i| match &scn.steps[i] {
        Step::Write {
            file, offset, data, ..
        } => Some((r.before.resolve_file(file), *offset, data.len() as u64)),
        _ => None,
    });
    let in_flight_words = write.map(|(i, o, l)| (i, o, l, &r.after));
    // A step that takes privileges away commits that first, so the state between is allowed
    // too; and then only that state may show words of a write in flight: new bytes never
    // appear while the old privileges are still there.
    let mid = r
        .in_flight
        .and_then(|i| r.before.privileges_dropped_by(&scn.steps[i]));
    let slack_before = match mid {
        Some(_) => slack_for(&r.before, cfg.data, None),
        None => slack_for(&r.before, cfg.data, in_flight_words),
    };
    let slack_after = slack_for(&r.after, cfg.data, None);
    let d_before = diff(&view, &r.before.view(), &slack_before);
    let d_after = diff(&view, &r.after.view(), &slack_after);
    let mid_matches = mid.as_ref().is_some_and(|m| {
        let slack = slack_for(m, cfg.data, in_flight_words);
        diff(&view, &m.view(), &slack).is_empty()
    });
    let neither = !d_before.is_empty() && !d_after.is_empty() && !mid_matches;
    if neither {
        let mut msg = format!("the recovered state is neither allowed state\n  {ctx}");
        if r.in_flight.is_some() {
            msg += &format!(
                "\n  vs. the state before the step in flight:\n    {}",
                d_before.join("\n    ")
            );
        }
        msg += &format!(
            "\n  vs. the state after {}:\n    {}",
            if r.in_flight.is_some() {
                "the step in flight"
            } else {
                "the last step"
            },
            d_after.join("\n    ")
        );
        if cfg.data == DataRule::OnReturn {
            let c_before = slack_for(
                &r.before,
                DataRule::OnFsync,
                write.map(|(i, o, l)| (i, o, l, &r.after)),
            );
            let c_after = slack_for(&r.after, DataRule::OnFsync, None);
            if diff(&view, &r.before.view(), &c_before).is_empty()
                || diff(&view, &r.after.view(), &c_after).is_empty()
            {
                msg += "\n  (within the POSIX contract -- data durable at fsync -- but not \
                        DESIGN section 6's 'durable when it returns')";
            }
        }
        return Err(msg);
    }
    let vol = remount(vol, &view).map_err(|e| format!("{e}\n  {ctx}"))?;
    // A crash during recovery (torn cases only, to bound the cost): at a seeded point of it.
    if let CrashMode::Torn { seed } = case.mode
        && recovery_points > 0
    {
        let k = 1 + derive_seed(seed, "recovery", 0) % recovery_points;
        let mode = CrashMode::Torn {
            seed: derive_seed(seed, "recovery", 1),
        };
        check_crashed_recovery(&r.backend, k, mode, &view).map_err(|e| {
            format!("crash during recovery (its persist point {k} of {recovery_points}, {mode}): {e}\n  {ctx}")
        })?;
    }
    if let Err(past) = probe_past_eof(&vol, &view) {
        return Err(format!("{}\n  {ctx}", past.msg));
    }
    Ok(())
}

/// Totals of a scenario check.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Persist points of the scenario's steps.
    pub points: u64,
    /// Crash states recovered and checked (points x modes sampled).
    pub states: u64,
    /// Checkpoints the steps wrote (explicit and automatic).
    pub checkpoints: u64,
}

/// Which crash points to check: all of `1..=points+1`, or a seeded sample of `max` of them
/// that always includes the first, the last and the `must` points.
pub fn choose_points(points: u64, max: Option<usize>, seed: u64, must: &[u64]) -> Vec<u64> {
    let all: Vec<u64> = (1..=points + 1).collect();
    match max {
        Some(max) if all.len() > max.max(2) => {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut chosen = BTreeSet::from([1, points + 1]);
            chosen.extend(must.iter().copied().filter(|&k| k >= 1 && k <= points + 1));
            while chosen.len() < max.max(2) {
                chosen.insert(rng.random_range(1..=points + 1));
            }
            chosen.into_iter().collect()
        }
        _ => all,
    }
}

/// The replay command of a case.
pub fn replay_command(case: &CrashCase, cfg: &Config, test_file: &str) -> String {
    format!(
        "PFNFS_CRASH_SEED={:#x} PFNFS_REPLAY={case} cargo test -p pfnfs-fs --test {test_file} \
         replay -- --ignored --nocapture",
        cfg.seed
    )
}

/// Checks a scenario: counts its persist points (checking the live volume against the model
/// after every step), then crashes at the chosen points in both modes. Panics with every
/// failure (scenario, point, mode, seed, diff and the replay command).
pub fn check_scenario(scn: &Scenario, cfg: &Config, test_file: &str) -> Totals {
    let counted = run(scn, None, true).unwrap_or_else(|e| panic!("scenario {}: {e}", scn.name));
    let points = counted.points;
    let must: Vec<u64> = counted
        .checkpoint_steps
        .iter()
        .filter(|_| scn.keep_checkpoint_points)
        .flat_map(|&i| {
            let (a, b) = counted.step_points[i];
            a + 1..=b
        })
        .collect();
    let max = match (cfg.max_points, scn.max_points) {
        (Some(c), Some(s)) => Some(c.min(s)),
        (c, _) => c,
    };
    let chosen = choose_points(points, max, derive_seed(cfg.seed, &scn.name, 0), &must);
    let mut failures = Vec::new();
    let mut states = 0;
    for &k in &chosen {
        let torn = CrashMode::Torn {
            seed: derive_seed(cfg.seed, &scn.name, k),
        };
        for mode in [CrashMode::Clean, torn] {
            let case = CrashCase {
                scenario: scn.name.clone(),
                point: k,
                mode,
            };
            states += 1;
            match check_case(scn, &case, cfg) {
                Ok(()) => {}
                Err(e) => failures.push(format!(
                    "{case} (seed {:#x}): {e}\n  replay: {}",
                    cfg.seed,
                    replay_command(&case, cfg, test_file)
                )),
            }
        }
    }
    eprintln!(
        "crash scenario {}: {} steps, {} checkpoints, {points} persist points, {} crash points x 2 modes = \
         {states} states checked, {} failures",
        scn.name,
        scn.steps.len(),
        counted.checkpoints,
        chosen.len(),
        failures.len(),
    );
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(3).collect();
        panic!(
            "scenario {}: {} of {states} crash states fail. First ones:\n\n{}",
            scn.name,
            failures.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        );
    }
    Totals {
        points,
        states,
        checkpoints: counted.checkpoints,
    }
}

/// Parses `scenario:point:clean` or `scenario:point:torn:SEED`.
pub fn parse_case(s: &str) -> CrashCase {
    let parts: Vec<&str> = s.split(':').collect();
    let mode = match parts.get(2).copied() {
        Some("clean") => CrashMode::Clean,
        Some("torn") => CrashMode::Torn {
            seed: parse_u64(parts.get(3).expect("torn:SEED")).expect("seed"),
        },
        other => panic!("mode {other:?}: expected clean or torn:SEED"),
    };
    CrashCase {
        scenario: parts[0].to_string(),
        point: parts
            .get(1)
            .and_then(|p| p.parse().ok())
            .expect("scenario:POINT:mode"),
        mode,
    }
}
