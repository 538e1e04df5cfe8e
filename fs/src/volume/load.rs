//! Mounting: [`Volume::load`] opens the metadata tree the superblock names and replays the
//! log written since its commit; a read-write mount then finishes recovery once (zeroes
//! bytes past EOF after a crash, reclaims orphaned inodes, commits) and marks the pool
//! mounted.
//!
//! Also the one metadata decoder, [`decode_metadata`]: every entry read from the tree is
//! validated here (keys, records, extents inside the data region, frames used twice, free
//! extents against used frames, the next inode number against every inode); mount refuses
//! any damage it finds, fsck asks it to tolerate (repair and list) what can be tolerated.

use pfnfs_btree::Tree;

use super::*;
use crate::schema::{self, CookieEntry, InodeRecord, InodeTail, KeyRange, NameEntry};
use pfnfs_btree::KeyValue;

/// `free` without the frames the pool lists as bad.
fn without_bad(pool: &Pool, free: Vec<PfnRange>) -> Vec<PfnRange> {
    if pool.bad_frames().is_empty() {
        return free;
    }
    free.into_iter()
        .flat_map(|r| pool.bad_frames().good_parts(r))
        .collect()
}

/// The tree the superblock names, its root checked, and the allocator its free set
/// describes (read whole: RAM proportional to free extents, not to files). Nothing else is
/// read: inodes come from the tree when first needed.
/// Also the highest inode number the tree holds, and its orphan list.
fn load_tree(pool: &Pool) -> FsResult<(ExtentAllocator, Tree, u64, Vec<u64>)> {
    let name = pool.name().display().to_string();
    let sb = pool.superblock();
    let data = pool.data_region();
    let height = u8::try_from(sb.meta.height).map_err(|_| {
        corrupt(format!(
            "{name}: tree height {} out of range",
            sb.meta.height
        ))
    })?;
    let tree = Tree::open(pool, Pfn(sb.meta.root_pfn), height)
        .map_err(|e| corrupt(format!("{name}: the metadata tree's root: {e}")))?;
    let mut free = Vec::new();
    let (start, end) = schema::table_range(schema::TAG_FREE);
    for item in tree.range(pool, &start, end.as_deref()) {
        let (k, v) = item.map_err(|e| corrupt(format!("{name}: metadata tree: {e}")))?;
        let r = schema::decode_free(&k, &v)
            .ok()
            .filter(|r| data.covers(r))
            .ok_or_else(|| corrupt(format!("{name}: malformed free extent {k:02x?}")))?;
        free.push(r);
    }
    // Bad frames: the pool refuses them from now on, and they never count as free.
    let mut bad = Vec::new();
    let (start, end) = schema::table_range(schema::TAG_BAD);
    for item in tree.range(pool, &start, end.as_deref()) {
        let (k, v) = item.map_err(|e| corrupt(format!("{name}: metadata tree: {e}")))?;
        bad.push(
            schema::decode_bad(&k, &v)
                .ok()
                .filter(|r| data.covers(r))
                .ok_or_else(|| corrupt(format!("{name}: malformed bad-frame range {k:02x?}")))?,
        );
    }
    pool.bad_frames().set(bad);
    let free = without_bad(pool, free);
    let alloc = ExtentAllocator::from_free_extents(data, free)
        .map_err(|e| corrupt(format!("{name}: free set: {e}")))?;
    let highest = tree
        .floor(pool, &schema::inode_key(u64::MAX))
        .map_err(|e| corrupt(format!("{name}: metadata tree: {e}")))?
        .filter(|(k, _)| k.first() == Some(&schema::TAG_INODE))
        .and_then(|(k, _)| schema::key_id(&k).ok())
        .unwrap_or(ROOT_INO);
    let mut orphans = Vec::new();
    let (start, end) = schema::table_range(schema::TAG_ORPHAN);
    for item in tree.range(pool, &start, end.as_deref()) {
        let (k, _) = item.map_err(|e| corrupt(format!("{name}: metadata tree: {e}")))?;
        orphans.push(schema::key_id(&k).map_err(|e| corrupt(format!("{name}: {e}")))?);
    }
    Ok((alloc, tree, highest, orphans))
}

impl Volume {
    /// Loads the filesystem from `pool`: the metadata tree, then the log. Read-write pools
    /// then reclaim orphaned inodes and commit so recovery is done once.
    pub fn load(pool: Arc<Pool>) -> FsResult<Volume> {
        let read_only = pool.is_read_only();
        let sb = pool.superblock();
        let data = pool.data_region();
        let log = LogId::new(sb.meta.log_generation, sb.meta.log_nonce);
        let fresh = sb.meta.root_pfn == 0;
        let inodes = DashMap::new();
        let (alloc, tree, highest, orphans) = if fresh {
            inodes.insert(ROOT_INO, new_cell(Inode::new_root(Time::now())));
            let alloc = ExtentAllocator::new_empty(data);
            (alloc, Tree::empty(), ROOT_INO, Vec::new())
        } else {
            load_tree(&pool)?
        };
        let (ops, log_end, next_seq) = read_log(&pool, log)?;
        let journal = Journal::new(&pool, log, log_end, next_seq);
        let vol = Volume::assemble(Parts {
            reserve_frames: RESERVE_FRAMES_MIN.saturating_add(sb.meta.tree_frames),
            pool,
            alloc,
            inodes,
            // Never below a live inode, whatever the superblock says.
            next_ino: sb.meta.next_ino.max(highest + 1),
            inode_count: sb.meta.inodes.max(1),
            orphans: orphans.iter().copied().collect(),
            tree: tree.with_cache(cache::node_cache(cache::DEFAULT_CACHE_BYTES)),
            journal,
            dirty: store::Dirty {
                rebuild: fresh,
                ..Default::default()
            },
            cache: cache::Cache::new(
                (cache::inode_cache_bytes(cache::DEFAULT_CACHE_BYTES) / cache::CELL_BYTES) as usize,
            ),
            read_only,
        });
        // The free set as loaded is what the tree holds: only later changes are to be written.
        let _ = vol.alloc.take_dirty_groups();
        let replayed = ops.len();
        for (i, op) in ops.iter().enumerate() {
            vol.replay(op).map_err(|e| {
                corrupt(format!(
                    "{}: log record {i} cannot be replayed: {}",
                    vol.pool_name(),
                    e.context
                ))
            })?;
        }
        if replayed > 0 {
            tracing::info!(records = replayed, "replayed metadata log");
        }
        if !read_only {
            // Bytes an extending write whose record was lost left past a file's end are
            // zeroed when the file next grows over them (`zero_past_eof`), not here: mount
            // visits only what the log names.
            // Inodes without names: those on the tree's orphan list (still open at the last
            // commit) and those the replayed records left so.
            let mut orphans = orphans;
            orphans.extend(
                vol.inodes
                    .iter()
                    .filter(|c| c.value().inode.read().attr.nlink == 0)
                    .map(|c| *c.key()),
            );
            orphans.sort_unstable();
            orphans.dedup();
            orphans.retain(|ino| vol.cell(*ino).is_ok_and(|c| c.inode.read().attr.nlink == 0));
            for ino in &orphans {
                vol.reclaim_now(*ino)?;
            }
            if fresh || replayed > 0 || !orphans.is_empty() {
                match vol.checkpoint() {
                    // Free space too fragmented for a commit (see ensure_log_room): the state
                    // is the old tree plus the replayed log, which keeps being appended to, so
                    // the pool can be mounted and files deleted. Not with orphans, whose
                    // frames were freed above without a record.
                    Err(e) if e.kind == ErrorKind::NoSpace && orphans.is_empty() && !fresh => {
                        tracing::warn!(
                            "{}: mounted without a new metadata commit: {e}",
                            vol.pool_name()
                        );
                    }
                    other => other?,
                }
            }
            let mut sb = vol.pool.superblock();
            sb.mounted = true;
            vol.pool.commit_superblock(sb)?;
        }
        Ok(vol)
    }

    fn pool_name(&self) -> String {
        self.pool.name().display().to_string()
    }

    pub(super) fn reclaim_now(&self, ino: u64) -> FsResult<()> {
        let mut locked = self.lock(&[ino])?;
        let i = locked.get(ino)?;
        self.reclaim_locked(i)
    }
}

// ---------------------------------------------------------------------------------------
// The metadata decoder, shared with fsck

/// Why a pool's metadata cannot be read at all (its structure, not what it says).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetadataFault {
    /// Reading the pool failed: not damage.
    #[error("{0}")]
    Io(FsError),
    /// The metadata tree cannot be walked (why): a node is damaged.
    #[error("the metadata tree is damaged: {0}")]
    Tree(String),
    /// Format 1: the superblock's pointer to the checkpoint lies outside the data region.
    #[error("checkpoint pointer {head_pfn} lies outside the data region {data}")]
    HeadOutside { head_pfn: u64, data: PfnRange },
    /// Format 1: the checkpoint header frame does not decode (why).
    #[error("{0}")]
    Header(String),
    /// Format 1: the checkpoint header does not match the superblock.
    #[error("checkpoint header does not match the superblock")]
    Mismatch,
    /// Format 1: the checkpoint body's checksum does not match the header's.
    #[error("checkpoint checksum mismatch")]
    Checksum,
    /// Format 1: the checkpoint body does not decode (why).
    #[error("checkpoint does not decode: {0}")]
    Body(String),
    /// Damage in what the metadata says, refused because the caller does not tolerate it
    /// (mount): the error names the pool and the damage.
    #[error("{0}")]
    Refused(FsError),
}

impl From<FsError> for MetadataFault {
    fn from(e: FsError) -> MetadataFault {
        MetadataFault::Io(e)
    }
}

/// Damage inside metadata whose structure is intact, which fsck tolerates (the decoder
/// repairs it in what it returns and lists it) and mount refuses.
#[derive(Debug)]
pub(crate) enum MetadataDamage {
    /// An entry of the tree does not decode, or belongs to no inode (`what`, `why`): dropped.
    Entry { what: String, why: String },
    /// The inode's extents overlap or overflow: those that do not fit (listed) are dropped.
    ExtentMap { ino: u64, dropped: Vec<Extent> },
    /// The directory is malformed (`why`): rebuilt with new readdir cookies, the listed
    /// duplicate names dropped.
    Directory {
        ino: u64,
        why: String,
        dropped: Vec<Vec<u8>>,
    },
    /// There is no root directory: an empty one is made.
    RootMissing,
    /// The free set does not decode (why): no allocator is returned.
    FreeSet(String),
}

/// A pool's decoded metadata.
#[derive(Debug)]
pub(crate) struct DecodedMetadata {
    /// The tree it was read from (empty for format 1).
    pub(crate) tree: Tree,
    /// Frames the metadata occupies (the tree's nodes; format 1: the checkpoint's frames).
    pub(crate) frames: Vec<PfnRange>,
    /// Every inode, by inode number.
    pub(crate) inodes: BTreeMap<u64, Inode>,
    /// The allocator the free set describes; None only when damage is tolerated and the free
    /// set does not decode ([`MetadataDamage::FreeSet`]).
    pub(crate) alloc: Option<ExtentAllocator>,
    /// Next inode number to hand out: above every inode, whatever the superblock says.
    pub(crate) next_ino: u64,
    /// The bad-frame table, sorted and coalesced (frames whose memory failed).
    pub(crate) bad: Vec<PfnRange>,
}

/// Reads the metadata tree the superblock names and decodes all of it: inode records,
/// extents, xattrs, both directory indexes, the free set. The one decoder, used by mount and
/// by fsck.
///
/// With `damage` None (mount) damage is refused ([`MetadataFault::Refused`]). With
/// `Some(list)` (fsck) each kind of damage is repaired in what is returned and added to
/// `list` (see [`MetadataDamage`]); extent maps are only freed of the extents that do not
/// fit, the rest being fsck's own checks on its model.
pub(crate) fn decode_metadata(
    pool: &Pool,
    mut damage: Option<&mut Vec<MetadataDamage>>,
) -> Result<DecodedMetadata, MetadataFault> {
    let name = pool.name().display().to_string();
    let sb = pool.superblock();
    let data = pool.data_region();
    let tree_fault = |e: pfnfs_btree::TreeError| match e {
        pfnfs_btree::TreeError::Pool(p) => MetadataFault::Io(p.into()),
        other => MetadataFault::Tree(other.to_string()),
    };
    let height = u8::try_from(sb.meta.height)
        .map_err(|_| MetadataFault::Tree(format!("tree height {} out of range", sb.meta.height)))?;
    let tree = Tree::open(pool, Pfn(sb.meta.root_pfn), height).map_err(tree_fault)?;
    let frames = tree.frames(pool).map_err(tree_fault)?;
    let scan = |range: KeyRange| -> Result<Vec<KeyValue>, MetadataFault> {
        tree.range(pool, &range.0, range.1.as_deref())
            .map(|r| r.map_err(tree_fault))
            .collect()
    };
    let refused = |what: String| MetadataFault::Refused(corrupt(format!("{name}: {what}")));
    // Inodes.
    let mut inodes: BTreeMap<u64, Inode> = BTreeMap::new();
    let mut dirs: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    // Extents, grouped by inode; the table is in inode order, and each inode's record comes
    // before its extents and xattrs (they share its key prefix).
    let mut extents: BTreeMap<u64, Vec<Extent>> = BTreeMap::new();
    for (key, value) in scan(schema::table_range(schema::TAG_INODE))? {
        let parsed = match schema::inode_table_key(&key) {
            Ok(k) => k,
            Err(e) => {
                tolerate(
                    &mut damage,
                    &name,
                    format!("inode key {key:02x?}"),
                    e.to_string(),
                )?;
                continue;
            }
        };
        let ino = match parsed {
            schema::InodeKey::Record(ino) => ino,
            schema::InodeKey::Extent(ino, frame) => {
                let body = inodes.get(&ino).map(|i| &i.body);
                let is_file = matches!(body, Some(Body::File(_)));
                let why = if matches!(body, Some(Body::Inline(_))) {
                    "the file keeps its bytes inline"
                } else {
                    "no regular file has that number"
                };
                match schema::decode_extent(frame, &value) {
                    Ok(e) if is_file => extents.entry(ino).or_default().push(e),
                    Ok(_) => tolerate(
                        &mut damage,
                        &name,
                        format!("extent of inode {ino}"),
                        why.into(),
                    )?,
                    Err(e) => tolerate(
                        &mut damage,
                        &name,
                        format!("extent of inode {ino} at frame {frame}"),
                        e.to_string(),
                    )?,
                }
                continue;
            }
            schema::InodeKey::Xattr(ino, xname) => {
                match inodes.get_mut(&ino) {
                    Some(inode) => {
                        inode.xattrs.insert(xname.to_vec(), value);
                    }
                    None => tolerate(
                        &mut damage,
                        &name,
                        format!("xattr of inode {ino}"),
                        "no inode has that number".into(),
                    )?,
                }
                continue;
            }
        };
        if ino < ROOT_INO {
            tolerate(
                &mut damage,
                &name,
                format!("inode {ino}"),
                "invalid number".into(),
            )?;
            continue;
        }
        let record = match InodeRecord::decode(&value) {
            Ok(r) => r,
            Err(e) => {
                tolerate(&mut damage, &name, format!("inode {ino}"), e.to_string())?;
                continue;
            }
        };
        let body = match record.tail {
            InodeTail::Dir {
                parent,
                next_cookie,
                entries,
            } => {
                dirs.insert(ino, (parent, next_cookie, entries));
                Body::Dir(Directory::new(parent))
            }
            InodeTail::Symlink(t) => Body::Symlink(t),
            InodeTail::Inline(b) => Body::Inline(b),
            InodeTail::None if record.attr.kind() == Kind::File => Body::File(ExtentMap::new()),
            InodeTail::None => Body::Special,
        };
        inodes.insert(
            ino,
            Inode {
                ino,
                attr: record.attr,
                xattrs: BTreeMap::new(),
                body,
            },
        );
    }
    for (ino, list) in extents {
        let map = match damage.as_deref_mut() {
            None => strict_map(list, data).map_err(|e| refused(format!("inode {ino}: {e}")))?,
            Some(d) => tolerant_map(ino, list, d),
        };
        if let Some(inode) = inodes.get_mut(&ino) {
            inode.body = Body::File(map);
        }
    }

    // Directories: the readdir index, checked against the name index.
    let mut listed: BTreeMap<u64, Vec<(u64, DirEntry)>> = BTreeMap::new();
    for (key, value) in scan(schema::table_range(schema::TAG_COOKIE))? {
        let parsed = schema::key_id(&key)
            .and_then(|dir| Ok((dir, schema::key_second(&key)?)))
            .and_then(|(dir, cookie)| Ok((dir, cookie, CookieEntry::decode(&value)?)));
        match parsed {
            Ok((dir, cookie, e)) if dirs.contains_key(&dir) => {
                listed.entry(dir).or_default().push((
                    cookie,
                    DirEntry {
                        name: e.name,
                        ino: e.ino,
                        kind: e.kind,
                    },
                ))
            }
            Ok((dir, _, _)) => tolerate(
                &mut damage,
                &name,
                format!("directory entry of {dir}"),
                "no directory has that number".into(),
            )?,
            Err(e) => tolerate(
                &mut damage,
                &name,
                format!("directory key {key:02x?}"),
                e.to_string(),
            )?,
        }
    }
    let mut by_name: BTreeMap<(u64, Vec<u8>), NameEntry> = BTreeMap::new();
    for (key, value) in scan(schema::table_range(schema::TAG_NAME))? {
        let parsed = schema::key_id(&key)
            .and_then(|dir| Ok((dir, schema::key_tail(&key)?.to_vec())))
            .and_then(|(dir, n)| Ok((dir, n, NameEntry::decode(&value)?)));
        match parsed {
            Ok((dir, n, e)) => {
                by_name.insert((dir, n), e);
            }
            Err(e) => tolerate(
                &mut damage,
                &name,
                format!("name key {key:02x?}"),
                e.to_string(),
            )?,
        }
    }
    for (&dir, &(parent, next_cookie, count)) in &dirs {
        let entries = listed.remove(&dir).unwrap_or_default();
        let mut why = None;
        if entries.len() as u64 != count {
            why = Some(format!(
                "{} entries listed, its record says {count}",
                entries.len()
            ));
        }
        for (cookie, e) in &entries {
            let indexed = by_name.remove(&(dir, e.name.clone()));
            if indexed
                != Some(NameEntry {
                    cookie: *cookie,
                    ino: e.ino,
                    kind: e.kind,
                })
            {
                why.get_or_insert_with(|| {
                    format!(
                        "the name index disagrees with readdir cookie {cookie} ({})",
                        String::from_utf8_lossy(&e.name)
                    )
                });
            }
        }
        let built = match (why, damage.as_deref_mut()) {
            (None, _) => Directory::from_parts(parent, next_cookie, entries.clone()),
            (Some(w), None) => Err(w),
            (Some(w), Some(list)) => {
                list.push(MetadataDamage::Directory {
                    ino: dir,
                    why: w,
                    dropped: Vec::new(),
                });
                Directory::from_parts(parent, next_cookie, entries.clone())
            }
        };
        let d = match (built, damage.as_deref_mut()) {
            (Ok(d), _) => d,
            (Err(e), None) => return Err(refused(format!("directory {dir}: {e}"))),
            (Err(_), Some(list)) => tolerant_dir(dir, parent, next_cookie, entries, list),
        };
        if let Some(inode) = inodes.get_mut(&dir) {
            inode.body = Body::Dir(d);
        }
    }
    for (dir, _) in listed {
        tolerate(
            &mut damage,
            &name,
            format!("directory {dir}"),
            "entries of no directory".into(),
        )?;
    }
    for ((dir, n), _) in by_name {
        tolerate(
            &mut damage,
            &name,
            format!("name {} in directory {dir}", String::from_utf8_lossy(&n)),
            "in the name index but not in the readdir index".into(),
        )?;
    }

    // The orphan list names inodes without names.
    for (key, _) in scan(schema::table_range(schema::TAG_ORPHAN))? {
        let ino = schema::key_id(&key).unwrap_or(0);
        if inodes.get(&ino).is_none_or(|i| i.attr.nlink != 0) {
            tolerate(
                &mut damage,
                &name,
                format!("orphan entry {ino}"),
                "names no inode without names".into(),
            )?;
        }
    }

    if let std::collections::btree_map::Entry::Vacant(slot) = inodes.entry(ROOT_INO) {
        let Some(list) = damage.as_deref_mut() else {
            return Err(refused("the metadata has no root directory".into()));
        };
        list.push(MetadataDamage::RootMissing);
        slot.insert(Inode::new_root(Time::now()));
    }

    // The free set, checked against every frame in use.
    let mut free = Vec::new();
    let mut free_damage = None;
    for (key, value) in scan(schema::table_range(schema::TAG_FREE))? {
        match schema::decode_free(&key, &value) {
            Ok(r) if data.covers(&r) => free.push(r),
            Ok(r) => {
                free_damage.get_or_insert(format!("free extent {r} outside the data region"));
            }
            Err(e) => {
                free_damage.get_or_insert(e.to_string());
            }
        }
    }
    let mut bad = Vec::new();
    for (key, value) in scan(schema::table_range(schema::TAG_BAD))? {
        match schema::decode_bad(&key, &value) {
            Ok(r) if data.covers(&r) => bad.push(r),
            Ok(r) => tolerate(
                &mut damage,
                &name,
                format!("bad-frame entry {r}"),
                "outside the data region".into(),
            )?,
            Err(e) => tolerate(
                &mut damage,
                &name,
                format!("bad-frame entry {key:02x?}"),
                e.to_string(),
            )?,
        }
    }
    let listed = pfnfs_alloc::BadFrames::new();
    listed.set(bad.iter().copied());
    let bad = listed.list();
    let free: Vec<PfnRange> = free
        .into_iter()
        .flat_map(|r| listed.good_parts(r))
        .collect();
    let alloc = match free_damage {
        None => ExtentAllocator::from_free_extents(data, free).map_err(|e| e.to_string()),
        Some(w) => Err(w),
    };
    let alloc = match (alloc, damage.as_deref_mut()) {
        (Ok(a), _) => {
            let mut used: Vec<PfnRange> = frames.clone();
            for inode in inodes.values() {
                if let Body::File(map) = &inode.body {
                    used.extend(map.iter().map(|e| e.pfns));
                }
            }
            match (used_and_free(&used, &a), &damage) {
                (None, _) => Some(a),
                (Some(r), None) => {
                    return Err(refused(format!(
                        "frames {r} are in use but in the free set too"
                    )));
                }
                // fsck's own checks find it (`free-and-used`) and say what to do.
                (Some(_), Some(_)) => Some(a),
            }
        }
        (Err(e), None) => return Err(refused(format!("free set: {e}"))),
        (Err(e), Some(list)) => {
            list.push(MetadataDamage::FreeSet(e));
            None
        }
    };
    // Never trust a counter a forged pool could set below a live inode.
    let highest = inodes.keys().next_back().copied().unwrap_or(ROOT_INO);
    let next_ino = sb.meta.next_ino.max(highest + 1);
    Ok(DecodedMetadata {
        tree,
        frames,
        inodes,
        alloc,
        next_ino,
        bad,
    })
}

/// Damage the caller tolerates becomes a finding; otherwise it is refused.
fn tolerate(
    damage: &mut Option<&mut Vec<MetadataDamage>>,
    name: &str,
    what: String,
    why: String,
) -> Result<(), MetadataFault> {
    match damage.as_deref_mut() {
        Some(list) => {
            list.push(MetadataDamage::Entry { what, why });
            Ok(())
        }
        None => Err(MetadataFault::Refused(corrupt(format!(
            "{name}: {what}: {why}"
        )))),
    }
}

/// A used range that lies in the free set, if any: such a frame would be handed out again.
fn used_and_free(used: &[PfnRange], alloc: &ExtentAllocator) -> Option<PfnRange> {
    let mut used = used.to_vec();
    used.sort_unstable_by_key(|r| r.start);
    let free = alloc.free_extents();
    let (mut u, mut f) = (0, 0);
    while u < used.len() && f < free.len() {
        if used[u].overlaps(&free[f]) {
            return Some(used[u]);
        }
        if used[u].end() <= free[f].start {
            u += 1;
        } else {
            f += 1;
        }
    }
    None
}

/// A file's extent map as mount accepts it: from_extents refuses overlaps in the file; a pool
/// frame mapped twice (which writes through one offset would show at the other) and frames
/// outside the data region (which recovery would write to) are caught here.
pub(super) fn strict_map(extents: Vec<Extent>, data: PfnRange) -> Result<ExtentMap, String> {
    ExtentMap::from_extents(extents)
        .map_err(|e| e.to_string())
        .and_then(|m| m.check_invariants().map(|()| m))
        .and_then(|m| {
            let outside = m.iter().find(|e| !data.covers(&e.pfns));
            match outside {
                Some(e) => Err(format!(
                    "extent at file frame {} maps frames {} outside the data region {data}",
                    e.file_frame, e.pfns
                )),
                None => Ok(m),
            }
        })
}

/// An extent map from checkpointed extents; extents that overlap earlier ones or overflow
/// are dropped and reported.
pub(super) fn tolerant_map(
    ino: u64,
    extents: Vec<Extent>,
    damage: &mut Vec<MetadataDamage>,
) -> ExtentMap {
    if let Ok(map) = ExtentMap::from_extents(extents.iter().copied()) {
        return map;
    }
    let mut map = ExtentMap::new();
    let mut dropped = Vec::new();
    for e in extents {
        if map.insert(e).is_err() {
            dropped.push(e);
        }
    }
    damage.push(MetadataDamage::ExtentMap { ino, dropped });
    map
}

/// A directory from checkpointed parts; duplicate names or bad cookies are rebuilt.
pub(super) fn tolerant_dir(
    ino: u64,
    parent: u64,
    next_cookie: u64,
    entries: Vec<(u64, DirEntry)>,
    damage: &mut Vec<MetadataDamage>,
) -> Directory {
    match Directory::from_parts(parent, next_cookie, entries.clone()) {
        Ok(d) => d,
        Err(why) => {
            let mut d = Directory::new(parent);
            let mut dropped = Vec::new();
            let mut sorted = entries;
            sorted.sort_by_key(|(c, _)| *c);
            for (_, e) in sorted {
                if d.get(&e.name).is_ok_and(|e| e.is_some()) {
                    dropped.push(e.name);
                } else {
                    d.insert(e);
                }
            }
            damage.push(MetadataDamage::Directory { ino, why, dropped });
            d
        }
    }
}
