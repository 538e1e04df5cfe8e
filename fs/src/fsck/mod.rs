//! fsck: checks a pool's metadata against itself and the allocator, and repairs it.
//!
//! # How a pool is read
//!
//! [`fsck_pool`] opens the pool (read-only for [`FsckMode::Check`]; `Pool::open` checks the
//! superblock slots and refuses a pool that is mounted read-write elsewhere), then reads the
//! checkpoint and the log rather than with `Volume::load`, because a damaged pool is exactly
//! what `load` refuses. The checkpoint goes through the volume's own decoder
//! (`volume::decode_checkpoint`, the one mount uses) told to tolerate damage; the log is read
//! here, record by record:
//!
//! - A checkpoint that cannot be read at all (pointer outside the data region, header not
//!   matching the superblock, checksum, body that does not decode) is fatal: it is reported as
//!   an uncorrectable problem and nothing else is checked.
//! - Inside a checkpoint that decodes, damage is tolerated and reported: a duplicate inode
//!   (the first copy is kept), an extent map with overlapping extents (the extents that do not
//!   fit are dropped), a directory with duplicate names or bad cookies (rebuilt), a free-set
//!   image that does not decode (the allocator is rebuilt from the references), overlapping
//!   checkpoint ranges, a missing root (an empty one is created).
//! - The log is read up to its first record that is not intact, like a mount does; a record
//!   whose checksum holds but which does not decode ends it too, and is reported. A record that
//!   is not intact but is followed by an intact later record of the generation was damaged, not
//!   torn by a crash (which a mount refuses): it is reported (`log-damaged`) and skipped, and
//!   the later records are replayed (or, when the later record was found by scanning and could
//!   be bytes inside the damaged one, dropped with it). Each record is checked for values no operation produces
//!   (a new inode number already in use, sizes past the largest file) and replayed on its own;
//!   a record that cannot be replayed (for example a write mapping frames another file owns,
//!   which `load` refuses) is reported and skipped, with the inodes it touched put back as they
//!   were.
//!
//! Replay on a read-only pool does not store the zeroing a truncate or punch does in place:
//! fsck checks metadata, not file contents.
//!
//! # What is checked (`check_volume` and the second half of `fsck_pool`)
//!
//! The checks run on a copy of the metadata (a model), and every problem found is fixed *in
//! the model* right away, so that later checks see the consequences of earlier repairs (a
//! dangling entry dropped changes its directory's link count). `-n` reports what `-y` would
//! do; `-y` installs the model into the volume and writes a checkpoint.
//!
//! 1. *Inodes*: the type bits of the mode agree with the body; directories have size 0 and
//!    symlinks the length of their target; extent maps keep their invariants
//!    (`ExtentMap::check_invariants`); every extent lies inside the data region; `next_ino`
//!    lies above every inode number.
//! 2. *Sizes vs extents*: frames mapped wholly past the end of file (frame index
//!    `>= ceil(size / 4096)`) are allowed only as *unwritten* extents (fallocate with
//!    KEEP_SIZE). A written frame past EOF is an error (`mapped-past-eof`): no operation
//!    leaves one, since writes log the new size with the frames they map and truncation
//!    releases the frames past the new end. The repair punches those frames (the bytes were
//!    not visible anyway). Bytes past EOF inside the last frame are not checked: a crash
//!    between a write's data and its record may legitimately leave them non-zero.
//! 3. *Frames*: no pool frame is referenced twice, across files, within one file, or by a
//!    file and the current checkpoint. The *first owner* keeps the frames: the checkpoint,
//!    then the file with the lower inode number (created first), then the lower file offset.
//!    The repair gives the other owner fresh frames holding a copy of the data (unwritten
//!    pieces stay unwritten), or punches the range if the pool has no free frame left.
//! 4. *Allocator*: against the references as loaded, the free set must not contain a
//!    referenced frame (`free-and-used`), free and referenced frames together must cover the
//!    data region (`leaked-frames`), and `ExtentAllocator::check_consistency` must pass. The
//!    repair rebuilds the allocator from the references of the repaired state.
//! 5. *Namespace*: every entry names an existing inode (not the root) with a valid name and
//!    the inode's kind; every directory but the root has exactly one name, and its `..`
//!    pointer (`Directory::parent`) names the directory holding that name; every inode is
//!    reachable from the root. An inode with no name and nlink 0 is an *orphan*: an unlinked
//!    file that was still open, which every read-write mount reclaims. That is not an error
//!    (a note); `-y` reclaims it as a mount would. An unreachable inode that is not an orphan
//!    is reattached as `/lost+found/#<ino>` (lost+found is created if needed); only the top of
//!    a lost subtree is reattached, and a lost cycle of directories is broken at its lowest
//!    inode number. A second name of a directory (including one that closes a cycle) is
//!    removed.
//! 6. *Link counts*: a directory's nlink is 2 plus its subdirectories, anything else's is
//!    the number of its names.
//!
//! Not errors, reported as notes: a pool marked mounted (crash recovery: the log is replayed
//! as a mount would, and `-y` then writes a checkpoint and clears the flag), orphans, and a
//! damaged superblock slot that is not the current one (an interrupted commit; the next
//! commit rewrites it, and `-y` commits twice so both slots are intact).
//!
//! # Repairs (`-y`) and preening (`-p`)
//!
//! With [`FsckMode::Repair`] every fixable problem is fixed; then the allocator is rebuilt
//! from the references, relocated frames are copied and persisted, the repaired state
//! becomes durable with a checkpoint (the commit point: a crash before it leaves the old
//! state, the copies going to frames the old state considers free), the mounted flag is
//! cleared and the pool synced. [`FsckMode::Preen`] repairs only if every problem is one that
//! loses nothing (`Finding::safe`: link counts, `..`, entry kinds, sizes of directories and
//! symlinks, leaked frames and the free set, reattaching lost inodes, `next_ino`); otherwise
//! it writes nothing and leaves all of them for `-y`. A pool with no problem is written only
//! if it needs recovery (log records, orphans, mounted flag, a damaged slot).

//!
//! # Where things are
//! This file holds the public API, the report types and the helpers every part uses
//! (findings, PFN range sets). `load` reads a possibly damaged pool (superblock slots,
//! checkpoint, log) into a volume; `checks` copies it into a model and runs the checks,
//! fixing each problem in the model; `repair` holds the repairs that add to the namespace
//! (lost+found) and `install`, which makes the repaired model durable.

use std::path::Path;
use std::sync::Arc;

use pfnfs_alloc::{OpenOptions, Pfn, PfnRange, Pool, PoolError};

use crate::volume::Volume;

mod checks;
mod load;
mod repair;

use checks::{Model, analyze};
use load::{LoadFailure, Loaded, load_tolerant};
use repair::install;

/// How fsck treats what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsckMode {
    /// Report only; never write (`-n`).
    Check,
    /// Repair what can be repaired (`-y`).
    Repair,
    /// Repair only if every problem can be repaired without losing anything (`-p`);
    /// otherwise write nothing.
    Preen,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Short machine-readable kind, e.g. "leaked-frames", "double-reference", "link-count".
    pub kind: String,
    /// What exactly, naming inodes/ranges.
    pub detail: String,
    /// What `-y` does about it (or did, if `repaired`); "none" if it cannot be repaired.
    pub action: String,
    /// True if fsck -y repaired it.
    pub repaired: bool,
}

/// What fsck found and did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FsckReport {
    pub problems: Vec<Problem>,
    pub inodes_checked: u64,
    pub extents_checked: u64,
    /// Log records replayed (0 for a cleanly unmounted pool).
    pub records_replayed: u64,
    /// Things worth knowing that are not errors (crash recovery, orphans, what was written).
    pub notes: Vec<String>,
    /// True if fsck wrote to the pool.
    pub wrote: bool,
}

impl FsckReport {
    /// fsck(8) exit code: 0 clean, 1 errors corrected, 4 errors left uncorrected.
    pub fn exit_code(&self) -> i32 {
        if self.problems.is_empty() {
            0
        } else if self.problems.iter().all(|p| p.repaired) {
            1
        } else {
            4
        }
    }
}

/// Progress callback: `(phase, done, total)`. Called with `done == 0` when a phase starts and
/// then every few thousand items.
pub type Progress<'a> = &'a dyn Fn(&str, u64, u64);

/// How often (in items) progress is reported.
const PROGRESS_EVERY: u64 = 4096;

/// Most ranges listed in one problem's detail.
const LIST_MAX: usize = 8;

/// Checks a loaded volume in RAM (no writes). Used by tests after recovery.
pub fn check_volume(vol: &Volume) -> FsckReport {
    let mut model = Model::of(vol);
    let mut findings = Vec::new();
    // A directory is listed from its readdir index (the model) but looked up through its name
    // index: every listed entry must be found by name, with the same cookie and inode.
    for cell in vol.all_cells().unwrap_or_else(|_| vol.cells()) {
        let inode = cell.inode.read();
        let Some(dir) = inode.dir() else { continue };
        let listed = match dir.all_entries() {
            Ok(l) => l,
            Err(e) => {
                findings.push(Finding::new(
                    "directory",
                    format!("directory {}: its entries cannot be read: {e}", inode.ino),
                    "none on a mounted volume: run pfnfs fsck on the pool",
                ));
                continue;
            }
        };
        for (cookie, e) in listed {
            let found = dir.get(&e.name).ok().flatten();
            if found.as_ref().map(|(c, f)| (*c, f.ino)) != Some((cookie, e.ino)) {
                findings.push(Finding::new(
                    "directory",
                    format!(
                        "directory {}: {} is listed (cookie {cookie}, inode {}) but its name \
                         finds {:?}",
                        inode.ino,
                        name_str(&e.name),
                        e.ino,
                        found.map(|(c, f)| (c, f.ino))
                    ),
                    "rebuild the directory's indexes (pfnfs fsck -y on the pool)",
                ));
            }
        }
    }
    let mut notes = Vec::new();
    let counts = analyze(&mut model, &mut findings, &mut notes, &|_, _, _| {});
    FsckReport {
        problems: findings
            .into_iter()
            .map(|f| f.into_problem(false))
            .collect(),
        inodes_checked: counts.0,
        extents_checked: counts.1,
        records_replayed: 0,
        notes,
        wrote: false,
    }
}

/// Opens the pool at `path` and checks (and with `Repair`, repairs) it. Errors are
/// operational (exit code 8).
pub fn fsck_pool(path: &Path, mode: FsckMode) -> Result<FsckReport, String> {
    fsck_pool_with_progress(path, mode, &|_, _, _| {})
}

/// [`fsck_pool`] reporting its progress.
pub fn fsck_pool_with_progress(
    path: &Path,
    mode: FsckMode,
    progress: Progress<'_>,
) -> Result<FsckReport, String> {
    let read_only = mode == FsckMode::Check;
    let pool = Pool::open(
        path,
        &OpenOptions {
            read_only,
            ..Default::default()
        },
    )
    .map_err(|e| match e {
        PoolError::Busy { .. } => format!(
            "{e}: unmount it first (only a read-only check, -n, may look at a mounted pool)"
        ),
        other => other.to_string(),
    })?;
    let pool = Arc::new(pool);
    let loaded = match load_tolerant(pool.clone(), progress) {
        Ok(l) => l,
        Err(LoadFailure::Operational(msg)) => return Err(msg),
        Err(LoadFailure::Fatal(finding, notes)) => {
            return Ok(FsckReport {
                problems: vec![finding.into_problem(false)],
                notes,
                ..Default::default()
            });
        }
    };
    let Loaded {
        mut vol,
        mut findings,
        mut notes,
        replayed,
        recovery_needed,
    } = loaded;
    let mut model = Model::of(&vol);
    let (inodes_checked, extents_checked) =
        analyze(&mut model, &mut findings, &mut notes, progress);
    let repair = match mode {
        FsckMode::Check => false,
        FsckMode::Repair => true,
        FsckMode::Preen => {
            let unsafe_count = findings.iter().filter(|f| !f.safe).count();
            if unsafe_count > 0 {
                notes.push(format!(
                    "UNEXPECTED INCONSISTENCY: {unsafe_count} problem(s) cannot be repaired \
                     without losing something; nothing was written: run pfnfs fsck -y"
                ));
            }
            unsafe_count == 0
        }
    };
    let needs_write =
        findings.iter().any(|f| f.fixable) || recovery_needed || !model.orphans.is_empty();
    let mut wrote = false;
    if repair && needs_write {
        install(&mut vol, model, &mut notes, progress)?;
        wrote = true;
        notes.push("wrote a new checkpoint with the repaired state".into());
    }
    Ok(FsckReport {
        problems: findings
            .into_iter()
            .map(|f| {
                let repaired = wrote && f.fixable;
                f.into_problem(repaired)
            })
            .collect(),
        inodes_checked,
        extents_checked,
        records_replayed: replayed,
        notes,
        wrote,
    })
}

// ---------------------------------------------------------------------------------------
// Findings

/// A problem before it is known whether it was repaired.
#[derive(Clone, Debug)]
struct Finding {
    kind: &'static str,
    detail: String,
    action: String,
    /// `-y` can repair it.
    fixable: bool,
    /// Its repair loses nothing (preen may do it).
    safe: bool,
}

impl Finding {
    fn new(kind: &'static str, detail: String, action: impl Into<String>) -> Finding {
        Finding {
            kind,
            detail,
            action: action.into(),
            fixable: true,
            safe: false,
        }
    }

    fn safe(mut self) -> Finding {
        self.safe = true;
        self
    }

    fn unfixable(mut self) -> Finding {
        self.fixable = false;
        self
    }

    fn into_problem(self, repaired: bool) -> Problem {
        Problem {
            kind: self.kind.to_string(),
            detail: self.detail,
            action: self.action,
            repaired,
        }
    }
}

fn name_str(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name))
}

/// Up to [`LIST_MAX`] ranges `[start, end)` as text.
fn list_ranges(ranges: &[(u64, u64)]) -> String {
    let mut parts: Vec<String> = ranges
        .iter()
        .take(LIST_MAX)
        .map(|(s, e)| format!("{s}..{e}"))
        .collect();
    if ranges.len() > LIST_MAX {
        parts.push(format!("and {} more", ranges.len() - LIST_MAX));
    }
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------
// Range helpers: sorted, disjoint `[start, end)` pairs of PFNs.

/// Sorted, disjoint union of `ranges` (empty ones dropped).
fn union(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|(s, e)| s < e);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Intersection of two sorted, disjoint lists.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// `region` minus a sorted, disjoint list inside it.
fn complement(region: PfnRange, set: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut cursor = region.start.0;
    for &(s, e) in set {
        if s > cursor {
            out.push((cursor, s));
        }
        cursor = cursor.max(e);
    }
    if cursor < region.end().0 {
        out.push((cursor, region.end().0));
    }
    out
}

/// A sorted, disjoint list clipped to `region`.
fn clip(set: &[(u64, u64)], region: PfnRange) -> Vec<(u64, u64)> {
    set.iter()
        .map(|&(s, e)| (s.max(region.start.0), e.min(region.end().0)))
        .filter(|(s, e)| s < e)
        .collect()
}

fn to_pfn_ranges(set: &[(u64, u64)]) -> Vec<PfnRange> {
    set.iter()
        .filter_map(|&(s, e)| PfnRange::from_bounds(Pfn(s), Pfn(e)))
        .collect()
}

fn frames_of(set: &[(u64, u64)]) -> u64 {
    set.iter().map(|(s, e)| e - s).sum()
}
