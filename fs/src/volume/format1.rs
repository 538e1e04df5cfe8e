//! Reading a format 1 pool, for `pfnfs upgrade` only: the checkpoint image (one postcard
//! blob in data frames, named by the format 1 superblock) and its decoder. The log of a
//! format 1 pool is read by `journal::read_log` with a format 1 [`crate::journal::LogId`].

use super::commit::Commit;
use super::load::{DecodedMetadata, MetadataFault, strict_map};
use super::*;
use crate::journal::{BodyImage, CheckpointHeader, CheckpointImage};

/// Reads the format 1 checkpoint the superblock names and decodes it: header (checked
/// against the superblock), body (checksum), image, inodes and free set, refusing any damage
/// (a duplicate inode, an extent map that is not valid or maps frames outside the data
/// region, a malformed directory, no root, a free set that does not decode): an upgrade
/// converts only a pool that a format 1 mount would have accepted.
pub(crate) fn decode_checkpoint(pool: &Pool) -> Result<DecodedMetadata, MetadataFault> {
    let name = pool.name().display().to_string();
    let ckpt = pool
        .format1_checkpoint()
        .ok_or_else(|| MetadataFault::Header("not a format 1 pool".into()))?;
    let data = pool.data_region();
    let head = PfnRange::new(Pfn(ckpt.head_pfn), 1)
        .filter(|r| data.covers(r))
        .ok_or(MetadataFault::HeadOutside {
            head_pfn: ckpt.head_pfn,
            data,
        })?;
    let header = CheckpointHeader::decode(&pool.read_frames(head).map_err(FsError::from)?, data)
        .map_err(MetadataFault::Header)?;
    if header.generation != ckpt.log_generation
        || header.body_len != ckpt.len_bytes
        || header.body_crc != ckpt.crc
        || header.ranges[0].start != head.start
    {
        return Err(MetadataFault::Mismatch);
    }
    let mut body = Vec::with_capacity(header.body_len.min(1 << 30) as usize);
    for (offset, len) in header.body_spans() {
        let at = body.len();
        body.resize(at + len as usize, 0);
        pool.read_into(offset, &mut body[at..])
            .map_err(FsError::from)?;
    }
    if crc32c::crc32c(&body) != header.body_crc {
        return Err(MetadataFault::Checksum);
    }
    let image: CheckpointImage =
        postcard::from_bytes(&body).map_err(|e| MetadataFault::Body(e.to_string()))?;
    drop(body);
    let refused = |what: String| MetadataFault::Refused(corrupt(format!("{name}: {what}")));
    let alloc = ExtentAllocator::decode_free_set(data, &image.free_set)
        .map_err(|e| refused(format!("checkpoint free set: {e}")))?;
    let mut inodes: BTreeMap<u64, Inode> = BTreeMap::new();
    for img in image.inodes {
        let ino = img.ino;
        let body = match img.body {
            BodyImage::File(extents) => Body::File(
                strict_map(extents, data).map_err(|e| refused(format!("inode {ino}: {e}")))?,
            ),
            BodyImage::Dir {
                parent,
                next_cookie,
                entries,
            } => Body::Dir(
                Directory::from_parts(parent, next_cookie, entries)
                    .map_err(|e| refused(format!("inode {ino}: {e}")))?,
            ),
            BodyImage::Symlink(t) => Body::Symlink(t),
            BodyImage::Special => Body::Special,
        };
        let inode = Inode {
            ino,
            attr: img.attr,
            xattrs: img.xattrs.into_iter().collect(),
            body,
        };
        if inodes.insert(ino, inode).is_some() {
            return Err(refused(format!(
                "inode {ino} appears twice in the checkpoint"
            )));
        }
    }
    if !inodes.contains_key(&ROOT_INO) {
        return Err(refused("checkpoint has no root directory".into()));
    }
    let highest = inodes.keys().next_back().copied().unwrap_or(ROOT_INO);
    Ok(DecodedMetadata {
        tree: pfnfs_btree::Tree::empty(),
        frames: header.ranges,
        inodes,
        alloc: Some(alloc),
        next_ino: image.next_ino.max(highest + 1),
        bad: Vec::new(),
    })
}

/// What an upgrade did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgraded {
    /// Inodes converted.
    pub inodes: u64,
    /// Format 1 log records replayed into them.
    pub records: usize,
    /// Frames the format 2 metadata tree takes.
    pub tree_frames: u64,
    /// Frames the format 1 checkpoint held, free now.
    pub freed_frames: u64,
}

impl Volume {
    /// Converts a format 1 pool (opened with [`pfnfs_alloc::OpenOptions::format1`]) to format
    /// 2 in place: reads its checkpoint and replays its log as a format 1 mount would, writes
    /// all of it as a new metadata tree into frames the format 1 state leaves free, then
    /// writes a format 2 superblock naming it to both slots. That first superblock write is
    /// the commit point: a crash before it leaves the format 1 pool exactly as it was (nothing
    /// it references was written), a crash after it a format 2 pool. The format 1
    /// checkpoint's frames are free in the new free set.
    pub fn upgrade(pool: Arc<Pool>) -> FsResult<Upgraded> {
        let name = pool.name().display().to_string();
        if pool.is_read_only() {
            return Err(read_only(format!(
                "{name}: an upgrade needs a writable pool"
            )));
        }
        let ckpt = pool
            .format1_checkpoint()
            .ok_or_else(|| invalid(format!("{name} is not a format 1 pool")))?;
        let format1_log = LogId {
            generation: ckpt.log_generation,
            nonce: None,
        };
        let (alloc, inodes, next_ino, old_frames) = if ckpt.len_bytes == 0 {
            let inodes = DashMap::new();
            inodes.insert(ROOT_INO, new_cell(Inode::new_root(Time::now())));
            (
                ExtentAllocator::new_empty(pool.data_region()),
                inodes,
                ROOT_INO + 1,
                Vec::new(),
            )
        } else {
            let m = decode_checkpoint(&pool).map_err(|fault| match fault {
                MetadataFault::Io(e) | MetadataFault::Refused(e) => e,
                other => corrupt(format!("{name}: {other}")),
            })?;
            let inodes = DashMap::new();
            for (ino, inode) in m.inodes {
                inodes.insert(ino, new_cell(inode));
            }
            let alloc = m
                .alloc
                .ok_or_else(|| corrupt(format!("{name}: free set missing")))?;
            (alloc, inodes, m.next_ino, m.frames)
        };
        let (ops, _, _) = read_log(&pool, format1_log)?;
        let count = inodes.len() as u64;
        let vol = Volume::assemble(Parts {
            reserve_frames: RESERVE_FRAMES_MIN,
            journal: Journal::new(&pool, LogId::new(ckpt.log_generation, 0), 0, 0),
            pool,
            alloc,
            inodes,
            next_ino,
            inode_count: count,
            orphans: Default::default(),
            tree: pfnfs_btree::Tree::empty(),
            dirty: store::Dirty {
                rebuild: true,
                ..Default::default()
            },
            // An upgrade holds every inode: nothing is evicted.
            cache: cache::Cache::unbounded(),
            read_only: false,
        });
        for (i, op) in ops.iter().enumerate() {
            vol.replay(op).map_err(|e| {
                corrupt(format!(
                    "{name}: format 1 log record {i} cannot be replayed: {}",
                    e.context
                ))
            })?;
        }
        let orphans: Vec<u64> = vol
            .inodes
            .iter()
            .filter(|c| c.value().inode.read().attr.nlink == 0)
            .map(|c| *c.key())
            .collect();
        for ino in orphans {
            vol.reclaim_now(ino)?;
        }
        let dirty = std::mem::take(&mut *vol.dirty.lock());
        let meta = vol.commit_tree(
            &dirty,
            Commit::Upgrade {
                old_frames: &old_frames,
            },
        )?;
        Ok(Upgraded {
            inodes: vol.inodes.len() as u64,
            records: ops.len(),
            tree_frames: meta.tree_frames,
            freed_frames: old_frames.iter().map(|r| r.len).sum(),
        })
    }
}

/// Opens the format 1 pool at `path` read-write (refused while a daemon holds it) and
/// converts it to format 2 ([`Volume::upgrade`]). A pool already in format 2 is an error
/// naming its version.
pub fn upgrade_pool(path: &std::path::Path) -> FsResult<Upgrade> {
    let pool = Pool::open(
        path,
        &pfnfs_alloc::OpenOptions {
            format1: true,
            ..Default::default()
        },
    )?;
    if pool.format1_checkpoint().is_some() {
        return Volume::upgrade(Arc::new(pool)).map(Upgrade::Format1);
    }
    if pool.superblock().inline_data {
        return Err(invalid(format!(
            "{} is already a pfnfs format {} pool with inline data: nothing to upgrade",
            path.display(),
            pool.version()
        )));
    }
    // The same root and log generation with the flag set: a superblock commit, crash-safe as
    // every commit is (both slots, one after the other).
    let mut sb = pool.superblock();
    sb.inline_data = true;
    pool.commit_superblock(sb)?;
    Ok(Upgrade::InlineData)
}

/// What `pfnfs upgrade` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// Converted a format 1 pool to format 2 (with inline data on).
    Format1(Upgraded),
    /// Turned inline data on for a format 2 pool made before it existed (superblock flag
    /// bit 2; nothing else changes).
    InlineData,
}
