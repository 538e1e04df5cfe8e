//! fsck: checks a pool's metadata against itself and the allocator, and repairs it.
//!
//! # How a pool is read
//!
//! [`fsck_pool`] opens the pool (read-only for [`FsckMode::Check`]; `Pool::open` checks the
//! superblock slots and refuses a pool that is mounted read-write elsewhere), then decodes the
//! checkpoint and the log *itself* rather than with `Volume::load`, because a damaged pool is
//! exactly what `load` refuses:
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use pfnfs_alloc::{
    ExtentAllocator, FRAME_SIZE, OpenOptions, Pfn, PfnRange, Pool, PoolError, Superblock,
};
use pfnfs_extent::{Extent, ExtentMap, Mapping};

use crate::acl;
use crate::inode::{Body, DirEntry, Directory, Inode, Kind, ROOT_INO, Time};
use crate::journal::{
    BodyImage, CheckpointHeader, CheckpointImage, Journal, Op, intact_record, max_log_generation,
    newer_generation_in_log, record_after,
};
use crate::volume::{MAX_FILE_BYTES, NAME_MAX, Volume};

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
// Loading a damaged pool

struct Loaded {
    vol: Volume,
    findings: Vec<Finding>,
    notes: Vec<String>,
    replayed: u64,
    /// A mount would write something even on a clean pool (replayed records, mounted flag,
    /// a damaged superblock slot).
    recovery_needed: bool,
}

enum LoadFailure {
    /// Not a problem of the pool's contents: I/O, ...
    Operational(String),
    /// The metadata cannot be decoded at all.
    Fatal(Finding, Vec<String>),
}

fn op_err(e: impl std::fmt::Display) -> LoadFailure {
    LoadFailure::Operational(e.to_string())
}

fn load_tolerant(pool: Arc<Pool>, progress: Progress<'_>) -> Result<Loaded, LoadFailure> {
    let sb = pool.superblock();
    let data = pool.data_region();
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    let slot_damaged = check_slots(&pool, &sb, &mut notes);
    if sb.mounted {
        notes.push(
            "the pool is marked mounted: it is mounted now or was not cleanly unmounted; its \
             log is replayed as a mount would"
                .into(),
        );
    }
    let generation = sb.checkpoint.log_generation;
    let (inodes, alloc, next_ino, ranges) = if sb.checkpoint.len_bytes == 0 {
        (
            vec![Inode::new_root(Time::now())],
            ExtentAllocator::new_empty(data),
            ROOT_INO + 1,
            Vec::new(),
        )
    } else {
        match decode_checkpoint(&pool, &sb, &mut findings) {
            Ok(parts) => parts,
            Err(LoadFailure::Fatal(f, mut n)) => {
                notes.append(&mut n);
                return Err(LoadFailure::Fatal(f, notes));
            }
            Err(e) => return Err(e),
        }
    };
    let (ops, log_end, next_seq) = read_log_tolerant(&pool, generation, &mut findings)?;
    let journal = Journal::new(&pool, generation, log_end, next_seq);
    let vol = Volume::fsck_assemble(pool, alloc, inodes, next_ino, ranges, journal);
    let total = ops.len() as u64;
    progress("replaying the log", 0, total);
    for (i, op) in ops.iter().enumerate() {
        if (i as u64 + 1).is_multiple_of(PROGRESS_EVERY) {
            progress("replaying the log", i as u64 + 1, total);
        }
        if let Err(why) = validate_op(&vol, op) {
            findings.push(Finding::new(
                "log-record",
                format!("log record {i} ({}) is invalid: {why}", describe_op(op)),
                "skip the record (its change is lost)",
            ));
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| vol.fsck_replay(op)));
        let why = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.context,
            Err(_) => "replaying it panicked (a bug in pfnfs)".to_string(),
        };
        findings.push(Finding::new(
            "log-replay",
            format!(
                "log record {i} ({}) cannot be replayed: {why}",
                describe_op(op)
            ),
            "skip the record (its change is lost)",
        ));
    }
    progress("replaying the log", total, total);
    if total > 0 {
        notes.push(format!(
            "replayed {total} log record(s) written since the last checkpoint"
        ));
    }
    Ok(Loaded {
        vol,
        findings,
        notes,
        replayed: total,
        recovery_needed: total > 0 || sb.mounted || slot_damaged,
    })
}

/// Decodes both superblock slots; a damaged slot that is not the current one is a note.
/// Returns true if one is damaged.
fn check_slots(pool: &Pool, current: &Superblock, notes: &mut Vec<String>) -> bool {
    let other = current.slot().other();
    let decoded = pool
        .read(other.offset(), pfnfs_alloc::layout::SUPERBLOCK_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|b| Superblock::decode(b).map_err(|e| e.to_string()))
        .and_then(|sb| {
            if sb.slot() != other {
                Err(format!("seq {} does not belong in slot {other}", sb.seq))
            } else if sb.uuid != current.uuid || sb.pool_bytes != current.pool_bytes {
                Err("it describes another pool".to_string())
            } else {
                Ok(())
            }
        });
    match decoded {
        Ok(()) => false,
        Err(why) => {
            notes.push(format!(
                "superblock slot {other} (not the current one, {}) is damaged: {why}; the next \
                 commit rewrites it",
                current.slot()
            ));
            true
        }
    }
}

type CheckpointParts = (Vec<Inode>, ExtentAllocator, u64, Vec<PfnRange>);

fn decode_checkpoint(
    pool: &Pool,
    sb: &Superblock,
    findings: &mut Vec<Finding>,
) -> Result<CheckpointParts, LoadFailure> {
    let data = pool.data_region();
    let fatal = |what: String| {
        LoadFailure::Fatal(
            Finding::new(
                "checkpoint",
                format!("the checkpoint cannot be read: {what}"),
                "none: without its checkpoint the pool's metadata is lost",
            )
            .unfixable(),
            Vec::new(),
        )
    };
    let head = PfnRange::new(Pfn(sb.checkpoint.head_pfn), 1)
        .filter(|r| data.covers(r))
        .ok_or_else(|| {
            fatal(format!(
                "its first frame {} lies outside the data region {data}",
                sb.checkpoint.head_pfn
            ))
        })?;
    let header =
        CheckpointHeader::decode(pool.frames(head).map_err(op_err)?, data).map_err(fatal)?;
    if header.generation != sb.checkpoint.log_generation
        || header.body_len != sb.checkpoint.len_bytes
        || header.body_crc != sb.checkpoint.crc
        || header.ranges.first().map(|r| r.start) != Some(head.start)
    {
        return Err(fatal("its header does not match the superblock".into()));
    }
    let mut body = Vec::new();
    for (offset, len) in header.body_spans() {
        let len = usize::try_from(len).map_err(|_| fatal("body span too large".into()))?;
        body.extend_from_slice(pool.read(offset, len).map_err(op_err)?);
    }
    if crc32c::crc32c(&body) != header.body_crc {
        return Err(fatal("checksum mismatch".into()));
    }
    let image: CheckpointImage =
        postcard::from_bytes(&body).map_err(|e| fatal(format!("it does not decode: {e}")))?;
    drop(body);

    // Checkpoint ranges: disjoint, sorted.
    let raw: Vec<(u64, u64)> = header
        .ranges
        .iter()
        .map(|r| (r.start.0, r.end().0))
        .collect();
    let merged = union(raw.clone());
    let raw_frames: u64 = raw.iter().map(|(s, e)| e - s).sum();
    let merged_frames: u64 = merged.iter().map(|(s, e)| e - s).sum();
    if raw_frames != merged_frames {
        findings.push(
            Finding::new(
                "checkpoint-ranges",
                "the current checkpoint's ranges overlap each other".into(),
                "write a new checkpoint",
            )
            .safe(),
        );
    }
    let ranges = to_pfn_ranges(&merged);

    let mut inodes: BTreeMap<u64, Inode> = BTreeMap::new();
    for img in image.inodes {
        let ino = img.ino;
        if inodes.contains_key(&ino) {
            findings.push(Finding::new(
                "duplicate-inode",
                format!("inode {ino} appears more than once in the checkpoint"),
                "keep its first copy, drop the others",
            ));
            continue;
        }
        let body = match img.body {
            BodyImage::File(extents) => Body::File(build_map(ino, extents, findings)),
            BodyImage::Dir {
                parent,
                next_cookie,
                entries,
            } => Body::Dir(build_dir(ino, parent, next_cookie, entries, findings)),
            BodyImage::Symlink(t) => Body::Symlink(t),
            BodyImage::Special => Body::Special,
        };
        inodes.insert(
            ino,
            Inode {
                ino,
                attr: img.attr,
                xattrs: img.xattrs.into_iter().collect(),
                body,
            },
        );
    }
    if let std::collections::btree_map::Entry::Vacant(slot) = inodes.entry(ROOT_INO) {
        findings.push(Finding::new(
            "root-missing",
            "the checkpoint has no root directory".into(),
            "create an empty root (every other inode goes to /lost+found)",
        ));
        slot.insert(Inode::new_root(Time::now()));
    }
    let alloc = match ExtentAllocator::decode_free_set(data, &image.free_set) {
        Ok(a) => a,
        Err(e) => {
            findings.push(
                Finding::new(
                    "free-set",
                    format!("the checkpoint's free set does not decode: {e}"),
                    "rebuild the free set from the frames files and the checkpoint use",
                )
                .safe(),
            );
            let mut refs: Vec<(u64, u64)> = merged.clone();
            for inode in inodes.values() {
                if let Body::File(map) = &inode.body {
                    refs.extend(map.iter().map(|e| (e.pfns.start.0, e.pfns.end().0)));
                }
            }
            let free = complement(data, &clip(&union(refs), data));
            ExtentAllocator::from_free_extents(data, to_pfn_ranges(&free)).map_err(op_err)?
        }
    };
    Ok((
        inodes.into_values().collect(),
        alloc,
        image.next_ino,
        ranges,
    ))
}

/// An extent map from checkpointed extents; extents that overlap earlier ones or overflow
/// are dropped and reported.
fn build_map(ino: u64, extents: Vec<Extent>, findings: &mut Vec<Finding>) -> ExtentMap {
    if let Ok(map) = ExtentMap::from_extents(extents.iter().copied()) {
        return map;
    }
    let mut map = ExtentMap::new();
    let mut dropped = Vec::new();
    for e in extents {
        if map.insert(e).is_err() {
            dropped.push(format!(
                "file frame {} -> {} ({} frames)",
                e.file_frame, e.pfns.start.0, e.pfns.len
            ));
        }
    }
    findings.push(Finding::new(
        "extent-map",
        format!(
            "inode {ino}: extents overlap or overflow: {}",
            dropped.join(", ")
        ),
        "drop the extents that do not fit (those file ranges become holes)",
    ));
    map
}

/// A directory from checkpointed parts; duplicate names or bad cookies are rebuilt.
fn build_dir(
    ino: u64,
    parent: u64,
    next_cookie: u64,
    entries: Vec<(u64, DirEntry)>,
    findings: &mut Vec<Finding>,
) -> Directory {
    match Directory::from_parts(parent, next_cookie, entries.clone()) {
        Ok(d) => d,
        Err(why) => {
            let mut d = Directory::new(parent);
            let mut dropped = Vec::new();
            let mut sorted = entries;
            sorted.sort_by_key(|(c, _)| *c);
            for (_, e) in sorted {
                if d.get(&e.name).is_some() {
                    dropped.push(name_str(&e.name));
                } else {
                    d.insert(e);
                }
            }
            let extra = if dropped.is_empty() {
                String::new()
            } else {
                format!("; duplicate names dropped: {}", dropped.join(", "))
            };
            findings.push(Finding::new(
                "directory",
                format!("directory {ino} is malformed: {why}"),
                format!("rebuild it with new readdir cookies{extra}"),
            ));
            d
        }
    }
}

/// The records of `generation` up to the first one that is not intact (like `read_log`),
/// except that a record with a valid checksum that does not decode ends the log with a
/// finding instead of failing, and a damaged record followed by an intact later one (which
/// `read_log` refuses) is a finding and skipped.
fn read_log_tolerant(
    pool: &Pool,
    generation: u64,
    findings: &mut Vec<Finding>,
) -> Result<(Vec<Op>, u64, u64), LoadFailure> {
    let mut ops = Vec::new();
    let mut offset = 0u64;
    let mut seq = 0u64;
    if let Some(newer) = newer_generation_in_log(pool, generation).map_err(op_err)? {
        findings.push(Finding::new(
            "stale-superblock",
            format!(
                "the log holds records of generation {newer}, newer than the superblock's \
                 {generation}: the superblock naming them was lost (a damaged slot)"
            ),
            format!(
                "go back to the state the superblock names (the changes since are lost) and \
                 start generation {} past the stale records",
                newer + 1
            ),
        ));
    }
    loop {
        let Some((payload, total)) =
            intact_record(pool, offset, generation, seq).map_err(op_err)?
        else {
            // The end of the log, unless a later record follows: then it is damaged.
            let Some(later) = record_after(pool, generation, offset, seq).map_err(op_err)? else {
                break;
            };
            let what = format!(
                "log record {seq} (log byte {offset}) is damaged, but record {} was written \
                 after it (log byte {})",
                later.seq, later.offset
            );
            if !later.exact {
                // Found by scanning: it might be bytes inside the damaged record's payload.
                findings.push(Finding::new(
                    "log-damaged",
                    what,
                    "drop it and every later record (where the damaged record ends is unknown, \
                     so what follows it cannot be trusted)",
                ));
                break;
            }
            findings.push(Finding::new(
                "log-damaged",
                what,
                "skip the damaged record(s) (their changes are lost) and replay the later ones",
            ));
            offset = later.offset;
            seq = later.seq;
            continue;
        };
        match postcard::from_bytes::<Op>(payload) {
            Ok(op) => ops.push(op),
            Err(e) => {
                findings.push(Finding::new(
                    "log-record",
                    format!(
                        "log record {seq} has a valid checksum but does not decode ({e}); the \
                         log is read only up to it"
                    ),
                    "drop it and every later record (a new checkpoint starts an empty log)",
                ));
                break;
            }
        }
        offset += total;
        seq += 1;
    }
    Ok((ops, offset, seq))
}

fn valid_name(name: &[u8]) -> bool {
    !(name.is_empty()
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0)
        || name.len() > NAME_MAX)
}

/// Values no operation produces, which `apply` does not expect.
fn validate_op(vol: &Volume, op: &Op) -> Result<(), String> {
    let size_ok = |what: &str, v: u64| {
        if v > MAX_FILE_BYTES {
            Err(format!("{what} {v} exceeds the largest file size"))
        } else {
            Ok(())
        }
    };
    match op {
        Op::Create { ino, name, .. } | Op::CreateWithXattrs { ino, name, .. } => {
            if *ino == 0 || vol.cell(*ino).is_ok() {
                return Err(format!("inode number {ino} is in use or invalid"));
            }
            if !valid_name(name) {
                return Err(format!("invalid name {}", name_str(name)));
            }
            Ok(())
        }
        Op::Link { name, .. } => {
            if valid_name(name) {
                Ok(())
            } else {
                Err(format!("invalid name {}", name_str(name)))
            }
        }
        Op::Rename { new_name, .. } => {
            if valid_name(new_name) {
                Ok(())
            } else {
                Err(format!("invalid name {}", name_str(new_name)))
            }
        }
        Op::Truncate { size, .. } | Op::Write { size, .. } | Op::Allocate { size, .. } => {
            size_ok("size", *size)
        }
        Op::Punch { offset, len, .. } => {
            size_ok("offset", *offset)?;
            size_ok("length", *len)
        }
        Op::ZeroRange {
            offset, len, size, ..
        } => {
            size_ok("offset", *offset)?;
            size_ok("length", *len)?;
            size_ok("size", *size)
        }
        _ => Ok(()),
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Create {
            parent, name, ino, ..
        } => format!("create inode {ino} as {} in {parent}", name_str(name)),
        Op::Link {
            parent, name, ino, ..
        } => format!("link inode {ino} as {} in {parent}", name_str(name)),
        Op::Unlink { parent, name, .. } => format!("unlink {} in {parent}", name_str(name)),
        Op::Rename {
            parent,
            name,
            new_parent,
            new_name,
            ..
        } => format!(
            "rename {} in {parent} to {} in {new_parent}",
            name_str(name),
            name_str(new_name)
        ),
        Op::SetAttr { ino, .. } => format!("setattr of inode {ino}"),
        Op::Truncate { ino, size, .. } => format!("truncate inode {ino} to {size}"),
        Op::Write { ino, allocated, .. } => {
            let frames: Vec<String> = allocated
                .iter()
                .map(|e| format!("{}..{}", e.pfns.start.0, e.pfns.end().0))
                .collect();
            format!(
                "write to inode {ino} mapping frames [{}]",
                frames.join(", ")
            )
        }
        Op::Allocate { ino, .. } => format!("fallocate of inode {ino}"),
        Op::Punch { ino, .. } => format!("punch in inode {ino}"),
        Op::ZeroRange { ino, .. } => format!("zero range in inode {ino}"),
        Op::SetXattr { ino, .. } => format!("setxattr on inode {ino}"),
        Op::RemoveXattr { ino, .. } => format!("removexattr on inode {ino}"),
        Op::Reclaim { ino } => format!("reclaim of inode {ino}"),
        Op::CreateWithXattrs {
            parent, name, ino, ..
        } => format!(
            "create inode {ino} as {} in {parent} with attributes",
            name_str(name)
        ),
        Op::SetAttrXattrs { ino, .. } => format!("setattr with attributes of inode {ino}"),
    }
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

// ---------------------------------------------------------------------------------------
// The model and its analysis

/// A copy of a volume's metadata that the checks read and repair.
struct Model {
    data: PfnRange,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// Frames of the current checkpoint (sorted, disjoint).
    ckpt: Vec<(u64, u64)>,
    /// The allocator's free set as loaded (sorted, disjoint).
    free: Vec<(u64, u64)>,
    alloc_consistency: Result<(), String>,
    /// File ranges `(ino, file_frame, frames)` that must get fresh frames.
    relocations: Vec<(u64, u64, u64)>,
    /// Orphans to reclaim on repair.
    orphans: Vec<u64>,
    now: Time,
}

impl Model {
    fn of(vol: &Volume) -> Model {
        let inodes: BTreeMap<u64, Inode> = vol
            .cells()
            .into_iter()
            .map(|cell| {
                let inode = cell.inode.read().clone();
                (inode.ino, inode)
            })
            .collect();
        let alloc = vol.allocator();
        Model {
            data: alloc.region(),
            inodes,
            next_ino: vol.fsck_next_ino(),
            ckpt: union(
                vol.checkpoint_ranges()
                    .iter()
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
            now: Time::now(),
        }
    }

    /// Every frame referenced by a file or the checkpoint (sorted, disjoint; may reach
    /// outside the data region).
    fn referenced(&self) -> Vec<(u64, u64)> {
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
fn body_kind(inode: &Inode) -> Option<Kind> {
    match &inode.body {
        Body::File(_) => Some(Kind::File),
        Body::Dir(_) => Some(Kind::Dir),
        Body::Symlink(_) => Some(Kind::Symlink),
        Body::Special => match Kind::from_mode(inode.attr.mode) {
            Some(k @ (Kind::Fifo | Kind::CharDev | Kind::BlockDev | Kind::Socket)) => Some(k),
            _ => None,
        },
    }
}

fn kind_name(k: Kind) -> &'static str {
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

/// Inserts an entry, renumbering the directory's cookies first if they ran out.
fn dir_insert(dir: &mut Directory, entry: DirEntry) {
    if dir.next_cookie() == u64::MAX {
        let mut fresh = Directory::new(dir.parent);
        for (_, e) in dir.iter() {
            fresh.insert(e.clone());
        }
        *dir = fresh;
    }
    dir.insert(entry);
}

/// A name for `base` not used in `dir`: `base`, then `base.1`, `base.2`, ...
fn free_name(dir: &Directory, base: &str) -> Vec<u8> {
    let mut name = base.as_bytes().to_vec();
    let mut n = 0u64;
    while dir.get(&name).is_some() {
        n += 1;
        name = format!("{base}.{n}").into_bytes();
    }
    name
}

/// Runs every check on `m`, fixing each problem in the model. Returns (inodes, extents)
/// checked.
fn analyze(
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
            Body::Symlink(t) => Some(t.len() as u64),
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
                        if want == 0 { "directory" } else { "symlink" },
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
    let mut covered = m.free.clone();
    covered.extend(refs.iter().copied());
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
                dir.remove(&e.name);
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
                dir.remove(&e.name);
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
                dir.remove(&e.name);
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
                dir.replace(&name, e.ino, kind);
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
            d.remove(&name);
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

/// The `/lost+found` directory, created if needed. Returns its inode number.
fn get_lost_found(m: &mut Model, findings: &mut Vec<Finding>) -> u64 {
    let Some(root) = m.inodes.get(&ROOT_INO).and_then(|i| i.dir()) else {
        return ROOT_INO;
    };
    if let Some(e) = root.get(b"lost+found")
        && m.inodes.get(&e.ino).is_some_and(|i| i.dir().is_some())
    {
        return e.ino;
    }
    let name = free_name(root, "lost+found");
    let max = m.inodes.keys().next_back().copied().unwrap_or(ROOT_INO);
    let ino = m.next_ino.max(max + 1);
    m.next_ino = ino + 1;
    let now = m.now;
    let inode = Inode::new_dir(ino, ROOT_INO, 0o700, now);
    m.inodes.insert(ino, inode);
    if let Some(root) = m.inodes.get_mut(&ROOT_INO) {
        if let Some(d) = root.dir_mut() {
            dir_insert(
                d,
                DirEntry {
                    name: name.clone(),
                    ino,
                    kind: Kind::Dir,
                },
            );
        }
        root.attr.nlink = root.attr.nlink.saturating_add(1);
        root.attr.mtime = now;
        root.attr.ctime = now;
    }
    findings.push(
        Finding::new(
            "lost+found",
            "there is no /lost+found directory for unreachable inodes".into(),
            format!("create /{} (inode {ino})", String::from_utf8_lossy(&name)),
        )
        .safe(),
    );
    ino
}

/// Names `ino` as `#<ino>` in lost+found.
fn attach(
    m: &mut Model,
    lf: u64,
    ino: u64,
    named_in: Option<&Vec<u64>>,
    findings: &mut Vec<Finding>,
) {
    let Some(kind) = m
        .inodes
        .get(&ino)
        .map(|i| body_kind(i).unwrap_or(Kind::Fifo))
    else {
        return;
    };
    let nlink = m.inodes.get(&ino).map(|i| i.attr.nlink).unwrap_or(0);
    let Some(lf_dir) = m.inodes.get_mut(&lf).and_then(|i| i.dir_mut()) else {
        return;
    };
    let name = free_name(lf_dir, &format!("#{ino}"));
    dir_insert(
        lf_dir,
        DirEntry {
            name: name.clone(),
            ino,
            kind,
        },
    );
    if let Some(d) = m.inodes.get_mut(&ino).and_then(|i| i.dir_mut()) {
        d.parent = lf;
        // lost+found gains a subdirectory: count it, so that only damage shows as a wrong
        // link count.
        if let Some(lf_inode) = m.inodes.get_mut(&lf) {
            lf_inode.attr.nlink = lf_inode.attr.nlink.saturating_add(1);
        }
    }
    let names = match named_in {
        Some(dirs) => format!(
            "named only in unreachable directories ({})",
            dirs.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "no directory names it".into(),
    };
    findings.push(
        Finding::new(
            "unreachable",
            format!(
                "inode {ino} ({}, nlink {nlink}) is not reachable from the root: {names}",
                kind_name(kind)
            ),
            format!(
                "reattach it as /lost+found/{}",
                String::from_utf8_lossy(&name)
            ),
        )
        .safe(),
    );
}

// ---------------------------------------------------------------------------------------
// Repair

/// Makes the model the volume's state and writes it: rebuilds the allocator from the
/// references, relocates doubly referenced frames (copy, persist), installs, checkpoints,
/// clears the mounted flag and syncs.
fn install(
    vol: &mut Volume,
    mut m: Model,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> Result<(), String> {
    let pool = vol.pool().clone();
    let refs = clip(&m.referenced(), m.data);
    let free = complement(m.data, &refs);
    let alloc = ExtentAllocator::from_free_extents(m.data, to_pfn_ranges(&free))
        .map_err(|e| format!("cannot rebuild the allocator: {e}"))?;
    let total = m.relocations.len() as u64;
    progress("copying doubly used frames", 0, total);
    let mut copied_any = false;
    for (n, &(ino, first, frames)) in m.relocations.iter().enumerate() {
        progress("copying doubly used frames", n as u64, total);
        let Some(Body::File(map)) = m.inodes.get_mut(&ino).map(|i| &mut i.body) else {
            continue; // reclaimed as an orphan meanwhile
        };
        let pieces: Vec<Extent> = map
            .mappings_iter(first, frames)
            .filter_map(|p| match p {
                Mapping::Mapped(e) => Some(e),
                Mapping::Hole { .. } => None,
            })
            .collect();
        for piece in pieces {
            // The old frames stay with their first owner: what punch returns is not freed.
            map.punch(piece.file_frame, piece.pfns.len);
            let ranges = match alloc.allocate(piece.pfns.len, None) {
                Ok(r) => r,
                Err(e) => {
                    notes.push(format!(
                        "inode {ino}: no room to copy file frames {}..{} ({e}): punched instead, \
                         that range now reads as zeros",
                        piece.file_frame,
                        piece.file_end()
                    ));
                    continue;
                }
            };
            let mut done = 0u64;
            for r in ranges {
                if !piece.unwritten {
                    let src = PfnRange {
                        start: Pfn(piece.pfns.start.0 + done),
                        len: r.len,
                    };
                    let bytes = pool.frames(src).map_err(|e| e.to_string())?;
                    pool.write(r.start.byte_offset(), bytes)
                        .map_err(|e| e.to_string())?;
                    pool.flush(r.start.byte_offset(), r.len_bytes())
                        .map_err(|e| e.to_string())?;
                    copied_any = true;
                }
                map.insert(Extent {
                    file_frame: piece.file_frame + done,
                    pfns: r,
                    unwritten: piece.unwritten,
                })
                .map_err(|e| format!("inode {ino}: cannot map copied frames: {e}"))?;
                done += r.len;
            }
        }
    }
    if copied_any {
        pool.fence();
    }
    progress("copying doubly used frames", total, total);
    progress("writing a checkpoint", 0, 1);
    let next_ino = m.next_ino;
    let inodes: Vec<Inode> = std::mem::take(&mut m.inodes).into_values().collect();
    vol.fsck_install(inodes, alloc, next_ino);
    // The new checkpoint's generation must be above every generation with records left in the
    // log (a stale superblock may name an older one): replay would take them for its own.
    let newest = max_log_generation(&pool).map_err(|e| e.context)?;
    vol.journal().raise_generation(newest);
    vol.checkpoint()
        .map_err(|e| format!("cannot write the repaired state: {}", e.context))?;
    let mut sb = pool.superblock();
    sb.mounted = false;
    pool.commit_superblock(sb).map_err(|e| e.to_string())?;
    pool.sync(0, pool.len_bytes()).map_err(|e| e.to_string())?;
    progress("writing a checkpoint", 1, 1);
    Ok(())
}
