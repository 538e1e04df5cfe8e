//! Repairs beyond setting a field in the model: creating `/lost+found` and reattaching
//! unreachable inodes to it, and [`install`], which makes the repaired model the volume's
//! durable state (allocator rebuilt, doubly used frames copied, a new checkpoint).

use pfnfs_alloc::{ExtentAllocator, Pfn, PfnRange, Pool};
use pfnfs_extent::{Extent, Mapping};

use super::checks::{Model, body_kind, kind_name};
use super::{Finding, Progress, clip, complement, to_pfn_ranges, union};
use crate::inode::{Body, DirEntry, Directory, Inode, Kind, ROOT_INO};
use crate::journal::max_log_generation;
use crate::volume::Volume;

/// Inserts an entry, renumbering the directory's cookies first if they ran out.
pub(super) fn dir_insert(dir: &mut Directory, entry: DirEntry) {
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
pub(super) fn free_name(dir: &Directory, base: &str) -> Vec<u8> {
    let mut name = base.as_bytes().to_vec();
    let mut n = 0u64;
    // fsck's directories are held whole in RAM: a lookup cannot fail.
    while dir.get(&name).is_ok_and(|e| e.is_some()) {
        n += 1;
        name = format!("{base}.{n}").into_bytes();
    }
    name
}

/// The `/lost+found` directory, created if needed. Returns its inode number.
pub(super) fn get_lost_found(m: &mut Model, findings: &mut Vec<Finding>) -> u64 {
    let Some(root) = m.inodes.get(&ROOT_INO).and_then(|i| i.dir()) else {
        return ROOT_INO;
    };
    if let Ok(Some((_, e))) = root.get(b"lost+found")
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
pub(super) fn attach(
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

/// Makes the model the volume's state and writes it: rebuilds the allocator from the
/// references, relocates doubly referenced frames (copy, persist), installs, checkpoints,
/// clears the mounted flag and syncs.
pub(super) fn install(
    vol: &mut Volume,
    mut m: Model,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> Result<(), String> {
    let pool = vol.pool().clone();
    let mut refs = clip(&m.referenced(), m.data);
    // Bad frames are never free (they stay on the bad list the new checkpoint writes).
    refs.extend(clip(&m.bad, m.data));
    let free = complement(m.data, &union(refs));
    let alloc = ExtentAllocator::from_free_extents(m.data, to_pfn_ranges(&free))
        .map_err(|e| format!("cannot rebuild the allocator: {e}"))?;
    let total = m.relocations.len() as u64;
    progress("copying doubly used frames", 0, total);
    let mut copied_any = false;
    // Bounce buffer of the frame copies (pool memory is read by copy outside the extent code).
    let mut buf = Vec::new();
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
            let frames = match alloc.allocate(piece.pfns.len, None) {
                Ok(frames) => frames,
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
            for &r in frames.ranges() {
                if !piece.unwritten {
                    let src = PfnRange {
                        start: Pfn(piece.pfns.start.0 + done),
                        len: r.len,
                    };
                    copy_frames(&pool, src, r.start.byte_offset(), &mut buf)?;
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
            // Mapped: they belong to the map now (an error above gives them back and fails
            // the repair).
            frames.commit();
        }
    }
    if copied_any {
        pool.fence().map_err(|e| e.to_string())?;
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

/// Bytes copied at a time when fsck copies doubly used frames.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Copies the bytes of the frames `src` to pool byte `to` (stored and flushed, not fenced),
/// through `buf` a chunk at a time.
fn copy_frames(pool: &Pool, src: PfnRange, to: u64, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.resize(COPY_CHUNK_BYTES, 0);
    let from = src.start.byte_offset();
    let total = src.len_bytes();
    let mut done = 0u64;
    while done < total {
        let n = (total - done).min(buf.len() as u64);
        let chunk = &mut buf[..n as usize];
        pool.read_into(from + done, chunk)
            .map_err(|e| e.to_string())?;
        pool.write(to + done, chunk).map_err(|e| e.to_string())?;
        pool.flush(to + done, n).map_err(|e| e.to_string())?;
        done += n;
    }
    Ok(())
}
