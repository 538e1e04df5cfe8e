//! Reading a possibly damaged pool: the superblock slots, the checkpoint (with the volume's
//! decoder, tolerating damage) and the log, where what `Volume::load` refuses becomes a
//! finding; then the log replayed record by record into a volume the checks can read.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use pfnfs_alloc::{ExtentAllocator, Pool, Superblock};

use super::{Finding, PROGRESS_EVERY, Progress, clip, complement, name_str, to_pfn_ranges, union};
use crate::inode::{Body, Inode, ROOT_INO, Time};
use crate::journal::{Journal, LogId, Op, intact_record, newer_generation_in_log, record_after};
use crate::volume::{self, MAX_FILE_BYTES, MetadataDamage, MetadataFault, NAME_MAX, Volume};

pub(super) struct Loaded {
    pub(super) vol: Volume,
    pub(super) findings: Vec<Finding>,
    pub(super) notes: Vec<String>,
    pub(super) replayed: u64,
    /// A mount would write something even on a clean pool (replayed records, mounted flag,
    /// a damaged superblock slot).
    pub(super) recovery_needed: bool,
}

pub(super) enum LoadFailure {
    /// Not a problem of the pool's contents: I/O, ...
    Operational(String),
    /// The metadata cannot be decoded at all.
    Fatal(Finding, Vec<String>),
}

fn op_err(e: impl std::fmt::Display) -> LoadFailure {
    LoadFailure::Operational(e.to_string())
}

pub(super) fn load_tolerant(
    pool: Arc<Pool>,
    progress: Progress<'_>,
) -> Result<Loaded, LoadFailure> {
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
    let log = LogId::new(sb.meta.log_generation, sb.meta.log_nonce);
    let (inodes, alloc, next_ino, tree) = if sb.meta.root_pfn == 0 {
        (
            vec![Inode::new_root(Time::now())],
            ExtentAllocator::new_empty(data),
            ROOT_INO + 1,
            pfnfs_btree::Tree::empty(),
        )
    } else {
        match decode_metadata(&pool, &mut findings) {
            Ok(parts) => parts,
            Err(LoadFailure::Fatal(f, mut n)) => {
                notes.append(&mut n);
                return Err(LoadFailure::Fatal(f, notes));
            }
            Err(e) => return Err(e),
        }
    };
    // The decoder never trusts a next inode number below a live inode; a superblock saying
    // so is still wrong (forged, or a bug), and the repair writes the right one.
    if sb.meta.root_pfn != 0 && sb.meta.next_ino < next_ino {
        findings.push(
            Finding::new(
                "next-inode",
                format!(
                    "the superblock's next inode number is {}, but inode {} exists",
                    sb.meta.next_ino,
                    next_ino - 1
                ),
                format!("set it to {next_ino}"),
            )
            .safe(),
        );
    }
    let (ops, log_end, next_seq) = read_log_tolerant(&pool, log, &mut findings)?;
    let journal = Journal::new(&pool, log, log_end, next_seq);
    let vol = Volume::fsck_assemble(pool, alloc, inodes, next_ino, tree, journal);
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
        .read_vec(other.offset(), pfnfs_alloc::layout::SUPERBLOCK_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|b| Superblock::decode(&b).map_err(|e| e.to_string()))
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

type MetadataParts = (Vec<Inode>, ExtentAllocator, u64, pfnfs_btree::Tree);

/// The metadata, read with the volume's own decoder told to tolerate damage: what mount
/// would refuse inside a tree that can be walked becomes a finding; a tree that cannot be
/// walked at all is fatal.
fn decode_metadata(pool: &Pool, findings: &mut Vec<Finding>) -> Result<MetadataParts, LoadFailure> {
    let data = pool.data_region();
    let fatal = |what: String| {
        LoadFailure::Fatal(
            Finding::new(
                "metadata-tree",
                format!("the metadata tree cannot be read: {what}"),
                "none: without its metadata tree the pool's metadata is lost",
            )
            .unfixable(),
            Vec::new(),
        )
    };
    let mut damage = Vec::new();
    let m = volume::decode_metadata(pool, Some(&mut damage)).map_err(|fault| match fault {
        MetadataFault::Io(e) | MetadataFault::Refused(e) => op_err(e),
        other => fatal(other.to_string()),
    })?;
    for d in damage {
        findings.push(damage_finding(d));
    }
    // The pool refuses the bad frames from here on, and the checks read the list from it.
    pool.bad_frames().set(m.bad.iter().copied());
    let inodes = m.inodes;
    let alloc = match m.alloc {
        Some(a) => a,
        None => {
            // The free set did not decode (a `free-set` finding): rebuild it.
            let mut refs: Vec<(u64, u64)> =
                m.frames.iter().map(|r| (r.start.0, r.end().0)).collect();
            for inode in inodes.values() {
                if let Body::File(map) = &inode.body {
                    refs.extend(map.iter().map(|e| (e.pfns.start.0, e.pfns.end().0)));
                }
            }
            let free = complement(data, &clip(&union(refs), data));
            ExtentAllocator::from_free_extents(data, to_pfn_ranges(&free)).map_err(op_err)?
        }
    };
    Ok((inodes.into_values().collect(), alloc, m.next_ino, m.tree))
}

/// The finding for damage the checkpoint decoder tolerated (and repaired in what it returned).
fn damage_finding(damage: MetadataDamage) -> Finding {
    match damage {
        MetadataDamage::Entry { what, why } => {
            Finding::new("metadata-entry", format!("{what}: {why}"), "drop the entry")
        }
        MetadataDamage::ExtentMap { ino, dropped } => {
            let dropped: Vec<String> = dropped
                .iter()
                .map(|e| {
                    format!(
                        "file frame {} -> {} ({} frames)",
                        e.file_frame, e.pfns.start.0, e.pfns.len
                    )
                })
                .collect();
            Finding::new(
                "extent-map",
                format!(
                    "inode {ino}: extents overlap or overflow: {}",
                    dropped.join(", ")
                ),
                "drop the extents that do not fit (those file ranges become holes)",
            )
        }
        MetadataDamage::Directory { ino, why, dropped } => {
            let extra = if dropped.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = dropped.iter().map(|n| name_str(n)).collect();
                format!("; duplicate names dropped: {}", names.join(", "))
            };
            Finding::new(
                "directory",
                format!("directory {ino} is malformed: {why}"),
                format!("rebuild it with new readdir cookies{extra}"),
            )
        }
        MetadataDamage::RootMissing => Finding::new(
            "root-missing",
            "the checkpoint has no root directory".into(),
            "create an empty root (every other inode goes to /lost+found)",
        ),
        MetadataDamage::FreeSet(e) => Finding::new(
            "free-set",
            format!("the checkpoint's free set does not decode: {e}"),
            "rebuild the free set from the frames files and the checkpoint use",
        )
        .safe(),
    }
}

/// The records of `generation` up to the first one that is not intact (like `read_log`),
/// except that a record with a valid checksum that does not decode ends the log with a
/// finding instead of failing, and a damaged record followed by an intact later one (which
/// `read_log` refuses) is a finding and skipped.
fn read_log_tolerant(
    pool: &Pool,
    log: LogId,
    findings: &mut Vec<Finding>,
) -> Result<(Vec<Op>, u64, u64), LoadFailure> {
    let generation = log.generation;
    let mut ops = Vec::new();
    let mut offset = 0u64;
    let mut seq = 0u64;
    if let Some(newer) = newer_generation_in_log(pool, log).map_err(op_err)? {
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
        let Some((payload, total)) = intact_record(pool, offset, log, seq).map_err(op_err)? else {
            // The end of the log, unless a later record follows: then it is damaged.
            let Some(later) = record_after(pool, log, offset, seq).map_err(op_err)? else {
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
        match postcard::from_bytes::<Op>(&payload) {
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

pub(super) fn valid_name(name: &[u8]) -> bool {
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
    if let Some(why) = op.invalid() {
        return Err(format!("it holds {why}"));
    }
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
        Op::WriteInline {
            ino, offset, data, ..
        } => format!(
            "inline write of {} bytes at {offset} to inode {ino}",
            data.len()
        ),
        Op::Spill { ino, extent } => format!(
            "spill of inode {ino} to frames {}..{}",
            extent.pfns.start.0,
            extent.pfns.end().0
        ),
    }
}
