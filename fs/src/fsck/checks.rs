//! The checks: a model (a copy of the volume's metadata) and every check run on it. Each
//! problem found is fixed in the model at once, so later checks see the consequences of
//! earlier repairs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use pfnfs_alloc::{FRAME_SIZE, PfnRange};
use pfnfs_extent::{Extent, ExtentMap};

use super::load::valid_name;
use super::repair::{attach, dir_insert, free_name, get_lost_found};
use super::{
    Finding, LIST_MAX, PROGRESS_EVERY, Progress, clip, complement, frames_of, intersect,
    list_ranges, name_str, union,
};
use crate::acl;
use crate::inode::{Body, DirEntry, Inode, Kind, ROOT_INO, Time};
use crate::volume::Volume;

/// A copy of a volume's metadata that the checks read and repair.
pub(super) struct Model {
    pub(super) data: PfnRange,
    pub(super) inodes: BTreeMap<u64, Inode>,
    pub(super) next_ino: u64,
    /// Frames of the current checkpoint (sorted, disjoint).
    ckpt: Vec<(u64, u64)>,
    /// The allocator's free set as loaded (sorted, disjoint).
    free: Vec<(u64, u64)>,
    alloc_consistency: Result<(), String>,
    /// File ranges `(ino, file_frame, frames)` that must get fresh frames.
    pub(super) relocations: Vec<(u64, u64, u64)>,
    /// Orphans to reclaim on repair.
    pub(super) orphans: Vec<u64>,
    /// Frames recorded as bad (sorted, disjoint): neither free nor leaked.
    pub(super) bad: Vec<(u64, u64)>,
    pub(super) now: Time,
}

impl Model {
    pub(super) fn of(vol: &Volume) -> Model {
        // Every inode, directories whole in RAM (a mounted volume caches only some, and
        // reads directories' entries from its tree); a tree that cannot be read leaves what
        // is cached, and the checks then report what is missing.
        let cells = vol.all_cells().unwrap_or_else(|_| vol.cells());
        let inodes: BTreeMap<u64, Inode> = cells
            .into_iter()
            .map(|cell| {
                let mut inode = cell.inode.read().clone();
                if let Body::Dir(d) = &inode.body
                    && let Ok(whole) = d.to_complete()
                {
                    inode.body = Body::Dir(whole);
                }
                (inode.ino, inode)
            })
            .collect();
        let alloc = vol.allocator();
        Model {
            data: alloc.region(),
            inodes,
            next_ino: vol.fsck_next_ino(),
            // Frames in doubt after a failed persist (only ever on a mounted volume) are
            // held for the next checkpoint like the current one's.
            // The tree was walked whole when it was decoded, so this cannot fail here.
            ckpt: union(
                vol.tree_frames()
                    .unwrap_or_default()
                    .iter()
                    .chain(&vol.frames_in_doubt())
                    .map(|r| (r.start.0, r.end().0))
                    .collect(),
            ),
            free: union(
                alloc
                    .free_extents()
                    .iter()
                    .map(|r| (r.start.0, r.end().0))
                    .collect(),
            ),
            alloc_consistency: alloc.check_consistency(),
            relocations: Vec::new(),
            orphans: Vec::new(),
            bad: vol
                .pool()
                .bad_frames()
                .list()
                .iter()
                .map(|r| (r.start.0, r.end().0))
                .collect(),
            now: Time::now(),
        }
    }

    /// Every frame referenced by a file or the checkpoint (sorted, disjoint; may reach
    /// outside the data region).
    pub(super) fn referenced(&self) -> Vec<(u64, u64)> {
        let mut refs = self.ckpt.clone();
        for inode in self.inodes.values() {
            if let Body::File(map) = &inode.body {
                refs.extend(map.iter().map(|e| (e.pfns.start.0, e.pfns.end().0)));
            }
        }
        union(refs)
    }
}

/// The kind an inode's body says it is (`None`: a special body with a non-special mode).
pub(super) fn body_kind(inode: &Inode) -> Option<Kind> {
    match &inode.body {
        Body::File(_) | Body::Inline(_) => Some(Kind::File),
        Body::Dir(_) => Some(Kind::Dir),
        Body::Symlink(_) => Some(Kind::Symlink),
        Body::Special => match Kind::from_mode(inode.attr.mode) {
            Some(k @ (Kind::Fifo | Kind::CharDev | Kind::BlockDev | Kind::Socket)) => Some(k),
            _ => None,
        },
    }
}

pub(super) fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "directory",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::CharDev => "character device",
        Kind::BlockDev => "block device",
        Kind::Socket => "socket",
    }
}

/// Runs every check on `m`, fixing each problem in the model. Returns (inodes, extents)
/// checked.
pub(super) fn analyze(
    m: &mut Model,
    findings: &mut Vec<Finding>,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> (u64, u64) {
    // The allocator is compared with the references as loaded, before any repair changes
    // them.
    let loaded_refs = m.referenced();
    let extents = check_inodes(m, findings, progress);
    check_frames(m, findings, progress);
    check_bad_frames(m, findings);
    check_allocator(m, &loaded_refs, findings);
    check_namespace(m, findings, notes, progress);
    check_next_ino(m, findings);
    (m.inodes.len() as u64, extents)
}

fn check_next_ino(m: &mut Model, findings: &mut Vec<Finding>) {
    let max = m.inodes.keys().next_back().copied().unwrap_or(ROOT_INO);
    if m.next_ino <= max {
        findings.push(
            Finding::new(
                "next-inode",
                format!(
                    "the next inode number to hand out is {}, but inode {max} exists",
                    m.next_ino
                ),
                format!("set it to {}", max + 1),
            )
            .safe(),
        );
        m.next_ino = max + 1;
    }
}

/// Per-inode checks: kind, sizes, extent maps, extents inside the data region, written
/// frames past EOF. Returns the number of extents.
fn check_inodes(m: &mut Model, findings: &mut Vec<Finding>, progress: Progress<'_>) -> u64 {
    let data = m.data;
    let total = m.inodes.len() as u64;
    progress("checking inodes", 0, total);
    let mut extents = 0u64;
    for (n, inode) in m.inodes.values_mut().enumerate() {
        if (n as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
            progress("checking inodes", n as u64 + 1, total);
        }
        let ino = inode.ino;
        let mode_kind = Kind::from_mode(inode.attr.mode);
        match body_kind(inode) {
            Some(k) if mode_kind == Some(k) => {}
            Some(k) => {
                findings.push(Finding::new(
                    "inode-type",
                    format!(
                        "inode {ino}: its mode {:o} does not say {} like its contents",
                        inode.attr.mode,
                        kind_name(k)
                    ),
                    format!("set the type bits of its mode to {}", kind_name(k)),
                ));
                inode.attr.mode = (inode.attr.mode & !libc::S_IFMT) | k.mode_bits();
            }
            None => {
                findings.push(Finding::new(
                    "inode-type",
                    format!(
                        "inode {ino}: a device, fifo or socket whose mode {:o} is not one",
                        inode.attr.mode
                    ),
                    "make it a fifo",
                ));
                inode.attr.mode = (inode.attr.mode & !libc::S_IFMT) | libc::S_IFIFO;
            }
        }
        let want_size = match &inode.body {
            Body::Dir(_) => Some(0),
            Body::Symlink(t) | Body::Inline(t) => Some(t.len() as u64),
            _ => None,
        };
        if let Some(want) = want_size
            && inode.attr.size != want
        {
            findings.push(
                Finding::new(
                    "size",
                    format!(
                        "inode {ino} ({}) has size {}, should be {want}",
                        match inode.body {
                            Body::Dir(_) => "directory",
                            Body::Symlink(_) => "symlink",
                            _ => "file with inline data",
                        },
                        inode.attr.size
                    ),
                    format!("set it to {want}"),
                )
                .safe(),
            );
            inode.attr.size = want;
        }
        check_acls(inode, findings);
        let size = inode.attr.size;
        let Body::File(map) = &mut inode.body else {
            continue;
        };
        extents += map.len() as u64;
        // Pool frames mapped twice within the map are left to the frame-ownership check;
        // anything else rebuilding the map (canonical inserts) fixes.
        if let Err(why) = map.check_invariants() {
            let mut fresh = ExtentMap::new();
            for e in map.iter() {
                let _ = fresh.insert(e);
            }
            if fresh != *map {
                findings.push(Finding::new(
                    "extent-map",
                    format!("inode {ino}: extent map invariant broken: {why}"),
                    "rebuild the map from its extents",
                ));
                *map = fresh;
            }
        }
        let outside: Vec<Extent> = map.iter().filter(|e| !data.covers(&e.pfns)).collect();
        for e in &outside {
            findings.push(Finding::new(
                "extent-outside-data",
                format!(
                    "inode {ino}: file frames {}..{} map pool frames {}..{}, outside the data \
                     region {data}",
                    e.file_frame,
                    e.file_end(),
                    e.pfns.start.0,
                    e.pfns.end().0
                ),
                "punch them (that file range becomes a hole)",
            ));
            map.punch(e.file_frame, e.pfns.len);
        }
        let eof_frame = size.div_ceil(FRAME_SIZE);
        let past: Vec<(u64, u64)> = map
            .iter()
            .filter(|e| !e.unwritten && e.file_end() > eof_frame)
            .map(|e| (e.file_frame.max(eof_frame), e.file_end()))
            .collect();
        if !past.is_empty() {
            findings.push(Finding::new(
                "mapped-past-eof",
                format!(
                    "inode {ino} (size {size}) has written frames past its end: file frames {}",
                    list_ranges(&past)
                ),
                "punch them (only unwritten fallocate KEEP_SIZE frames may lie past EOF)",
            ));
            for (s, e) in past {
                map.punch(s, e - s);
            }
        }
    }
    progress("checking inodes", total, total);
    extents
}

/// POSIX ACL attributes: well-formed, a default ACL only on directories, none on symlinks,
/// and an access ACL whose owner, mask (or group) and other entries agree with the mode (the
/// mode wins: it is what every record since the ACL was set agreed on).
fn check_acls(inode: &mut Inode, findings: &mut Vec<Finding>) {
    let ino = inode.ino;
    let kind = inode.attr.kind();
    for name in [acl::ACCESS_XATTR, acl::DEFAULT_XATTR] {
        let Some(value) = inode.xattrs.get(name) else {
            continue;
        };
        let what = name_str(name);
        let misplaced = match kind {
            Kind::Symlink => Some("a symlink"),
            Kind::Dir => None,
            _ if name == acl::DEFAULT_XATTR => Some("a non-directory"),
            _ => None,
        };
        if let Some(on) = misplaced {
            findings.push(
                Finding::new(
                    "acl-misplaced",
                    format!("inode {ino}: {what} on {on}, which cannot have one"),
                    "remove it",
                )
                .safe(),
            );
            inode.xattrs.remove(name);
            continue;
        }
        let mut acl = match acl::Acl::decode(value) {
            Ok(a) => a,
            Err(e) => {
                findings.push(Finding::new(
                    "acl-invalid",
                    format!("inode {ino}: {what} is invalid: {e}"),
                    "remove it (the mode's permission bits stay)",
                ));
                inode.xattrs.remove(name);
                continue;
            }
        };
        if name != acl::ACCESS_XATTR {
            continue;
        }
        let (implied, _) = acl.equiv_mode(inode.attr.mode);
        if implied != inode.attr.mode {
            findings.push(Finding::new(
                "acl-mode",
                format!(
                    "inode {ino}: its access ACL gives permissions {:o}, its mode {:o}",
                    implied & 0o777,
                    inode.attr.mode & 0o777
                ),
                "set the ACL's owner, mask and other entries from the mode (as chmod does)",
            ));
            acl.chmod(inode.attr.mode);
            inode.xattrs.insert(name.to_vec(), acl.encode());
        }
    }
}

/// Who references a range of frames, ordered so that the first owner sorts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Checkpoint,
    File { ino: u64, file_frame: u64 },
}

impl Owner {
    fn describe(&self) -> String {
        match self {
            Owner::Checkpoint => "the checkpoint".into(),
            Owner::File { ino, file_frame } => format!("inode {ino} at file frame {file_frame}"),
        }
    }
}

/// No frame referenced twice.
fn check_frames(m: &mut Model, findings: &mut Vec<Finding>, progress: Progress<'_>) {
    let mut refs: Vec<(u64, u64, Owner)> = m
        .ckpt
        .iter()
        .map(|&(s, e)| (s, e, Owner::Checkpoint))
        .collect();
    for inode in m.inodes.values() {
        if let Body::File(map) = &inode.body {
            refs.extend(map.iter().map(|e| {
                (
                    e.pfns.start.0,
                    e.pfns.end().0,
                    Owner::File {
                        ino: inode.ino,
                        file_frame: e.file_frame,
                    },
                )
            }));
        }
    }
    refs.sort_unstable();
    let total = refs.len() as u64;
    progress("checking frame ownership", 0, total);
    let mut active: Vec<(u64, u64, Owner)> = Vec::new();
    let mut relocations: Vec<(u64, u64, u64)> = Vec::new();
    for (n, &(start, end, owner)) in refs.iter().enumerate() {
        if (n as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
            progress("checking frame ownership", n as u64 + 1, total);
        }
        active.retain(|a| a.1 > start);
        for &(a_start, a_end, a_owner) in &active {
            let s = start.max(a_start);
            let e = end.min(a_end);
            if s >= e {
                continue;
            }
            let (winner, (loser_start, loser_owner)) = if a_owner < owner {
                (a_owner, (start, owner))
            } else {
                (owner, (a_start, a_owner))
            };
            let Owner::File { ino, file_frame } = loser_owner else {
                continue; // two checkpoint ranges: merged at load, cannot happen
            };
            let lf = file_frame + (s - loser_start);
            relocations.push((ino, lf, e - s));
            findings.push(Finding::new(
                "double-reference",
                format!(
                    "pool frames {s}..{e} ({} frames) are used by {} and by inode {ino} at file \
                     frame {lf}",
                    e - s,
                    winner.describe()
                ),
                format!(
                    "leave them to {}; give inode {ino} fresh frames with a copy of the data \
                     (punch the range if the pool is full)",
                    winner.describe()
                ),
            ));
        }
        active.push((start, end, owner));
    }
    progress("checking frame ownership", total, total);
    // Merge relocations per inode.
    relocations.sort_unstable();
    let mut merged: Vec<(u64, u64, u64)> = Vec::new();
    for (ino, f, n) in relocations {
        match merged.last_mut() {
            Some(last) if last.0 == ino && f <= last.1 + last.2 => {
                let end = (last.1 + last.2).max(f + n);
                last.2 = end - last.1;
            }
            _ => merged.push((ino, f, n)),
        }
    }
    m.relocations = merged;
}

/// Files whose data lies on frames recorded as bad (their memory failed): reported, and
/// detached in the model (the file reads zeros there; the frames stay on the bad list and
/// are never freed).
fn check_bad_frames(m: &mut Model, findings: &mut Vec<Finding>) {
    if m.bad.is_empty() {
        return;
    }
    for inode in m.inodes.values_mut() {
        let Body::File(map) = &mut inode.body else {
            continue;
        };
        let mut hits: Vec<(u64, u64, u64)> = Vec::new();
        for e in map.iter() {
            let ext = [(e.pfns.start.0, e.pfns.end().0)];
            for (s, end) in intersect(&ext, &m.bad) {
                hits.push((e.file_frame + (s - e.pfns.start.0), s, end));
            }
        }
        for (file_frame, s, e) in hits {
            // What punch returns is not freed: those frames stay on the bad list.
            map.punch(file_frame, e - s);
            findings.push(Finding::new(
                "bad-frames",
                format!(
                    "inode {} has file frames {file_frame}..{} (bytes {}..{}) on pool frames \
                     {s}..{e}, whose memory failed",
                    inode.ino,
                    file_frame + (e - s),
                    file_frame * FRAME_SIZE,
                    (file_frame + (e - s)) * FRAME_SIZE
                ),
                "detach them from the file, which then reads zeros there (a hole); the frames \
                 stay on the bad list and are never used again",
            ));
        }
    }
}

/// Free set vs references, and the allocator's own invariants.
fn check_allocator(m: &Model, loaded_refs: &[(u64, u64)], findings: &mut Vec<Finding>) {
    let refs = clip(loaded_refs, m.data);
    let both = intersect(&m.free, &refs);
    if !both.is_empty() {
        findings.push(
            Finding::new(
                "free-and-used",
                format!(
                    "{} frame(s) are in the free set but used by a file or the checkpoint: {}",
                    frames_of(&both),
                    list_ranges(&both)
                ),
                "take them out of the free set",
            )
            .safe(),
        );
    }
    let bad_free = intersect(&m.free, &m.bad);
    if !bad_free.is_empty() {
        findings.push(
            Finding::new(
                "bad-and-free",
                format!(
                    "{} frame(s) recorded as bad are in the free set: {}",
                    frames_of(&bad_free),
                    list_ranges(&bad_free)
                ),
                "take them out of the free set",
            )
            .safe(),
        );
    }
    let mut covered = m.free.clone();
    covered.extend(refs.iter().copied());
    covered.extend(m.bad.iter().copied());
    let leaked = complement(m.data, &union(covered));
    if !leaked.is_empty() {
        findings.push(
            Finding::new(
                "leaked-frames",
                format!(
                    "{} frame(s) are neither free nor used by any file or the checkpoint: {}",
                    frames_of(&leaked),
                    list_ranges(&leaked)
                ),
                "return them to the free set",
            )
            .safe(),
        );
    }
    if let Err(why) = &m.alloc_consistency {
        findings.push(
            Finding::new(
                "allocator",
                format!("the allocator is inconsistent: {why}"),
                "rebuild it from the references",
            )
            .safe(),
        );
    }
}

/// Entries, reachability, lost+found, `..`, link counts.
fn check_namespace(
    m: &mut Model,
    findings: &mut Vec<Finding>,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) {
    let Some(root) = m.inodes.get(&ROOT_INO) else {
        return; // the loader always provides one
    };
    if root.dir().is_none() {
        findings.push(
            Finding::new(
                "root-not-directory",
                "the root inode is not a directory".into(),
                "none",
            )
            .unfixable(),
        );
        return;
    }
    progress("checking directories", 0, 1);
    check_entries(m, findings);

    // Reachability, reattaching lost inodes until everything but orphans is reached.
    let mut lost_found: Option<u64> = None;
    let mut rounds = 0usize;
    let (claimed, reached) = loop {
        let (claimed, reached) = walk(m, findings);
        rounds += 1;
        let named_in: HashMap<u64, Vec<u64>> = names_by_target(m);
        let orphan = |ino: &u64, inode: &Inode| -> bool {
            inode.attr.nlink == 0 && !named_in.contains_key(ino)
        };
        let lost: BTreeSet<u64> = m
            .inodes
            .iter()
            .filter(|(ino, inode)| !reached.contains(*ino) && !orphan(ino, inode))
            .map(|(ino, _)| *ino)
            .collect();
        // Every round reattaches at least one inode; the bound only guards against a bug.
        if lost.is_empty() || rounds > m.inodes.len() + 2 {
            break (claimed, reached);
        }
        let mut tops: Vec<u64> = lost
            .iter()
            .copied()
            .filter(|ino| {
                named_in
                    .get(ino)
                    .is_none_or(|dirs| dirs.iter().all(|d| !lost.contains(d)))
            })
            .collect();
        if tops.is_empty() {
            // Only a cycle of lost directories is left: break it at its lowest inode.
            tops = lost
                .iter()
                .copied()
                .filter(|ino| m.inodes.get(ino).is_some_and(|i| i.dir().is_some()))
                .take(1)
                .collect();
            if tops.is_empty() {
                tops = lost.iter().copied().take(1).collect();
            }
        }
        for top in tops {
            let lf = match lost_found {
                Some(lf) => lf,
                None => {
                    let lf = get_lost_found(m, findings);
                    lost_found = Some(lf);
                    lf
                }
            };
            attach(m, lf, top, named_in.get(&top), findings);
        }
    };
    progress("checking directories", 1, 1);

    // Orphans: not reached, no names, nlink 0.
    let orphans: Vec<u64> = m
        .inodes
        .keys()
        .copied()
        .filter(|ino| !reached.contains(ino))
        .collect();
    if !orphans.is_empty() {
        notes.push(format!(
            "{} unlinked inode(s) still held open when the pool was last written ({}): a \
             read-write mount (or -y) reclaims them",
            orphans.len(),
            orphans
                .iter()
                .take(LIST_MAX)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    // `..` pointers.
    for (&dir_ino, &(parent, _)) in &claimed {
        let Some(d) = m.inodes.get_mut(&dir_ino).and_then(|i| i.dir_mut()) else {
            continue;
        };
        if d.parent != parent {
            findings.push(
                Finding::new(
                    "dotdot",
                    format!(
                        "directory {dir_ino}: its parent pointer (..) is {}, but it is named \
                         in directory {parent}",
                        d.parent
                    ),
                    format!("set .. to {parent}"),
                )
                .safe(),
            );
            d.parent = parent;
        }
    }
    if let Some(d) = m.inodes.get_mut(&ROOT_INO).and_then(|i| i.dir_mut())
        && d.parent != ROOT_INO
    {
        findings.push(
            Finding::new(
                "dotdot",
                format!("the root's parent pointer (..) is {}, not itself", d.parent),
                "set it to the root",
            )
            .safe(),
        );
        d.parent = ROOT_INO;
    }

    // Link counts.
    let mut names: HashMap<u64, u64> = HashMap::new();
    let mut subdirs: HashMap<u64, u64> = HashMap::new();
    for ino in &reached {
        let Some(d) = m.inodes.get(ino).and_then(|i| i.dir()) else {
            continue;
        };
        for (_, e) in d.iter() {
            *names.entry(e.ino).or_default() += 1;
            if e.kind == Kind::Dir {
                *subdirs.entry(*ino).or_default() += 1;
            }
        }
    }
    for ino in &reached {
        let Some(inode) = m.inodes.get_mut(ino) else {
            continue;
        };
        let want = if inode.dir().is_some() {
            2 + subdirs.get(ino).copied().unwrap_or(0)
        } else {
            names.get(ino).copied().unwrap_or(0)
        };
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        if inode.attr.nlink != want {
            let what = if inode.dir().is_some() {
                format!("2 + {} subdirectories", want.saturating_sub(2))
            } else {
                format!("{want} name(s)")
            };
            findings.push(
                Finding::new(
                    "link-count",
                    format!("inode {ino} has nlink {}, but {what}", inode.attr.nlink),
                    format!("set nlink to {want}"),
                )
                .safe(),
            );
            inode.attr.nlink = want;
        }
    }
    for ino in &orphans {
        m.inodes.remove(ino);
    }
    m.orphans = orphans;
}

/// Entry-level checks: names, the root named, missing targets, kinds.
fn check_entries(m: &mut Model, findings: &mut Vec<Finding>) {
    let kinds: HashMap<u64, Kind> = m
        .inodes
        .iter()
        .map(|(ino, inode)| (*ino, body_kind(inode).unwrap_or(Kind::Fifo)))
        .collect();
    let dir_inos: Vec<u64> = m
        .inodes
        .iter()
        .filter(|(_, i)| i.dir().is_some())
        .map(|(ino, _)| *ino)
        .collect();
    for dir_ino in dir_inos {
        let Some(dir) = m.inodes.get_mut(&dir_ino).and_then(|i| i.dir_mut()) else {
            continue;
        };
        let entries: Vec<DirEntry> = dir.iter().map(|(_, e)| e.clone()).collect();
        for e in entries {
            let shown = name_str(&e.name);
            if e.ino == ROOT_INO {
                findings.push(Finding::new(
                    "root-entry",
                    format!("directory {dir_ino}: entry {shown} names the root directory"),
                    "remove the entry",
                ));
                // fsck's directories are whole in RAM: nothing to read, nothing to fail.
                dir.remove(&e.name).ok();
                continue;
            }
            let Some(&kind) = kinds.get(&e.ino) else {
                findings.push(Finding::new(
                    "dangling-entry",
                    format!(
                        "directory {dir_ino}: entry {shown} names inode {}, which does not exist",
                        e.ino
                    ),
                    "remove the entry",
                ));
                // fsck's directories are whole in RAM: nothing to read, nothing to fail.
                dir.remove(&e.name).ok();
                continue;
            };
            let mut name = e.name.clone();
            if !valid_name(&e.name) {
                name = free_name(dir, &format!("#{}", e.ino));
                findings.push(Finding::new(
                    "bad-name",
                    format!(
                        "directory {dir_ino}: entry {shown} (inode {}) has an invalid name",
                        e.ino
                    ),
                    format!("rename it to {}", name_str(&name)),
                ));
                // fsck's directories are whole in RAM: nothing to read, nothing to fail.
                dir.remove(&e.name).ok();
                dir_insert(
                    dir,
                    DirEntry {
                        name: name.clone(),
                        ino: e.ino,
                        kind: e.kind,
                    },
                );
            }
            if e.kind != kind {
                findings.push(
                    Finding::new(
                        "entry-type",
                        format!(
                            "directory {dir_ino}: entry {} says inode {} is a {}, it is a {}",
                            name_str(&name),
                            e.ino,
                            kind_name(e.kind),
                            kind_name(kind)
                        ),
                        format!("record it as a {}", kind_name(kind)),
                    )
                    .safe(),
                );
                dir.replace(&name, e.ino, kind).ok();
            }
        }
    }
}

/// Breadth-first walk from the root through directories. A directory's first name (in walk
/// order) claims it; any further name of it is removed. Returns the claims (directory ->
/// (parent, name)) and every inode reached.
#[allow(clippy::type_complexity)]
fn walk(
    m: &mut Model,
    findings: &mut Vec<Finding>,
) -> (BTreeMap<u64, (u64, Vec<u8>)>, HashSet<u64>) {
    let mut claimed: BTreeMap<u64, (u64, Vec<u8>)> = BTreeMap::new();
    let mut reached: HashSet<u64> = HashSet::from([ROOT_INO]);
    let mut queue = VecDeque::from([ROOT_INO]);
    let mut extra: Vec<(u64, Vec<u8>, u64)> = Vec::new();
    while let Some(dir_ino) = queue.pop_front() {
        let Some(dir) = m.inodes.get(&dir_ino).and_then(|i| i.dir()) else {
            continue;
        };
        for (_, e) in dir.iter() {
            let is_dir = m.inodes.get(&e.ino).is_some_and(|i| i.dir().is_some());
            if !is_dir {
                reached.insert(e.ino);
                continue;
            }
            if reached.contains(&e.ino) {
                extra.push((dir_ino, e.name.clone(), e.ino));
                continue;
            }
            reached.insert(e.ino);
            claimed.insert(e.ino, (dir_ino, e.name.clone()));
            queue.push_back(e.ino);
        }
    }
    for (dir_ino, name, target) in extra {
        let first = match claimed.get(&target) {
            Some((p, n)) => format!("its name is {} in directory {p}", name_str(n)),
            None => "it is the root".into(),
        };
        findings.push(Finding::new(
            "directory-link",
            format!(
                "directory {target} has a second name {} in directory {dir_ino} ({first})",
                name_str(&name)
            ),
            "remove the second name",
        ));
        if let Some(d) = m.inodes.get_mut(&dir_ino).and_then(|i| i.dir_mut()) {
            // fsck's directories are whole in RAM: nothing to read, nothing to fail.
            d.remove(&name).ok();
        }
    }
    (claimed, reached)
}

/// For every inode named in some directory, the directories naming it.
fn names_by_target(m: &Model) -> HashMap<u64, Vec<u64>> {
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    for (dir_ino, inode) in &m.inodes {
        if let Some(d) = inode.dir() {
            for (_, e) in d.iter() {
                out.entry(e.ino).or_default().push(*dir_ino);
            }
        }
    }
    out
}
