//! Mounting: [`Volume::load`] reads the checkpoint the superblock names and replays the
//! log written since; a read-write mount then finishes recovery once (zeroes bytes past EOF
//! after a crash, reclaims orphaned inodes, writes a fresh checkpoint) and marks the pool
//! mounted.
//!
//! Also the one checkpoint decoder, [`decode_checkpoint`]: mount refuses any damage it finds,
//! fsck asks it to tolerate (repair and list) what can be tolerated.

use pfnfs_extent::io as extent_io;

use super::*;

impl Volume {
    /// Loads the filesystem from `pool`: newest checkpoint, then the log. Read-write pools
    /// then reclaim orphaned inodes and write a fresh checkpoint so recovery is done once.
    pub fn load(pool: Arc<Pool>) -> FsResult<Volume> {
        let read_only = pool.is_read_only();
        let sb = pool.superblock();
        let data = pool.data_region();
        let generation = sb.checkpoint.log_generation;
        let (alloc, inodes, next_ino, ranges, fresh) = if sb.checkpoint.len_bytes == 0 {
            let alloc = ExtentAllocator::new_empty(data);
            let root = Inode::new_root(Time::now());
            let inodes = DashMap::new();
            inodes.insert(ROOT_INO, new_cell(root));
            (alloc, inodes, ROOT_INO + 1, Vec::new(), true)
        } else {
            Self::load_checkpoint(&pool)?
        };
        let (ops, log_end, next_seq) = read_log(&pool, generation)?;
        let journal = Journal::new(&pool, generation, log_end, next_seq);
        // The reserve as `checkpoint` sets it, from the checkpoint just loaded.
        let ckpt_frames: u64 = ranges.iter().map(|r| r.len).sum();
        let vol = Volume {
            pool,
            alloc,
            inodes,
            journal,
            next_ino: AtomicU64::new(next_ino),
            gate: RwLock::new(()),
            ns: Mutex::new(()),
            reserve_frames: AtomicU64::new(RESERVE_FRAMES_MIN.saturating_add(ckpt_frames)),
            kernel_file_times: std::sync::atomic::AtomicBool::new(false),
            atime: std::sync::atomic::AtomicU8::new(AtimePolicy::Relative as u8),
            stats: IoStats::default(),
            checkpoint_ranges: Mutex::new(ranges),
            in_doubt: Mutex::new(Vec::new()),
            unlinked: Default::default(),
            read_only,
        };
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
            if sb.mounted {
                // Not cleanly unmounted: an extending write whose record was lost may have
                // left bytes past EOF in a file's last frame. Zero them, so that a later
                // extension reads zeros there (idempotent; nothing references those bytes).
                vol.zero_tails_past_eof()?;
            }
            let orphans: Vec<u64> = vol
                .inodes
                .iter()
                .filter(|c| c.value().inode.read().attr.nlink == 0)
                .map(|c| *c.key())
                .collect();
            for ino in &orphans {
                vol.reclaim_now(*ino)?;
            }
            if fresh || replayed > 0 || !orphans.is_empty() {
                match vol.checkpoint() {
                    // Free space too fragmented for a checkpoint (see ensure_log_room): the
                    // state is the old checkpoint plus the replayed log, which keeps being
                    // appended to, so the pool can be mounted and files deleted. Not with
                    // orphans, whose frames were freed above without a record.
                    Err(e) if e.kind == ErrorKind::NoSpace && orphans.is_empty() && !fresh => {
                        tracing::warn!(
                            "{}: mounted without a new checkpoint: {e}",
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

    #[allow(clippy::type_complexity)]
    fn load_checkpoint(
        pool: &Pool,
    ) -> FsResult<(
        ExtentAllocator,
        DashMap<u64, Arc<InodeCell>>,
        u64,
        Vec<PfnRange>,
        bool,
    )> {
        let name = pool.name().display().to_string();
        let ckpt = decode_checkpoint(pool, None).map_err(|fault| match fault {
            CheckpointFault::Io(e) | CheckpointFault::Refused(e) => e,
            CheckpointFault::HeadOutside { .. } => corrupt(format!(
                "{name}: checkpoint pointer lies outside the data region"
            )),
            CheckpointFault::Header(e) => corrupt(format!("{name}: {e}")),
            CheckpointFault::Mismatch => corrupt(format!(
                "{name}: checkpoint header does not match the superblock"
            )),
            CheckpointFault::Checksum => corrupt(format!("{name}: checkpoint checksum mismatch")),
            CheckpointFault::Body(e) => corrupt(format!("{name}: checkpoint does not decode: {e}")),
        })?;
        // Refused damage leaves no checkpoint without an allocator; this only guards that.
        let alloc = ckpt
            .alloc
            .ok_or_else(|| corrupt(format!("{name}: checkpoint free set missing")))?;
        let inodes = DashMap::new();
        // Every frame the checkpoint or a file uses, to check against the free set below.
        let mut used: Vec<PfnRange> = ckpt.header.ranges.clone();
        for (ino, inode) in ckpt.inodes {
            if let Body::File(map) = &inode.body {
                used.extend(map.iter().map(|e| e.pfns));
            }
            inodes.insert(ino, new_cell(inode));
        }
        // A used frame in the free set would be handed out again (and freeing the checkpoint's
        // frames after the next one would fail once that checkpoint is already committed).
        used.sort_unstable_by_key(|r| r.start);
        let free = alloc.free_extents();
        let (mut u, mut f) = (0, 0);
        while u < used.len() && f < free.len() {
            if used[u].overlaps(&free[f]) {
                return Err(corrupt(format!(
                    "{name}: frames {} are in use but in the checkpoint's free set too",
                    used[u]
                )));
            }
            if used[u].end() <= free[f].start {
                u += 1;
            } else {
                f += 1;
            }
        }
        Ok((alloc, inodes, ckpt.next_ino, ckpt.header.ranges, false))
    }

    /// Zeroes, in every file's last frame, the bytes past the file's size (recovery): stores
    /// into a file's frames, so through the extent code, with the file's map held exclusively.
    fn zero_tails_past_eof(&self) -> FsResult<()> {
        for cell in self.cells() {
            let mut inode = cell.inode.write();
            let size = inode.attr.size;
            let tail = size % FRAME_SIZE;
            let Body::File(map) = &mut inode.body else {
                continue;
            };
            if tail == 0 {
                continue;
            }
            // Only written bytes are stored to (and fenced); a hole or unwritten frame reads
            // as zeros already.
            extent_io::zero_mapped(&self.pool, map, size, FRAME_SIZE - tail)?;
        }
        Ok(())
    }

    fn reclaim_now(&self, ino: u64) -> FsResult<()> {
        let mut locked = self.lock(&[ino])?;
        let i = locked.get(ino)?;
        self.reclaim_locked(i)
    }
}

// ---------------------------------------------------------------------------------------
// The checkpoint decoder, shared with fsck

/// Why a checkpoint cannot be read at all (its header or its bytes, not what they say).
#[derive(Debug)]
pub(crate) enum CheckpointFault {
    /// Reading the pool failed: not damage.
    Io(FsError),
    /// The superblock's pointer to the header frame lies outside the data region.
    HeadOutside { head_pfn: u64, data: PfnRange },
    /// The header frame does not decode (why).
    Header(String),
    /// The header does not match the superblock.
    Mismatch,
    /// The body's checksum does not match the header's.
    Checksum,
    /// The body does not decode (why).
    Body(String),
    /// Damage in what the checkpoint says, refused because the caller does not tolerate it
    /// (mount): the error names the pool and the damage.
    Refused(FsError),
}

impl From<FsError> for CheckpointFault {
    fn from(e: FsError) -> CheckpointFault {
        CheckpointFault::Io(e)
    }
}

/// Damage inside a checkpoint whose bytes are intact, which fsck tolerates (the decoder
/// repairs it in what it returns and lists it) and mount refuses.
#[derive(Debug)]
pub(crate) enum CheckpointDamage {
    /// The inode appears more than once: its first copy is kept.
    DuplicateInode(u64),
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

/// A decoded checkpoint.
#[derive(Debug)]
pub(crate) struct DecodedCheckpoint {
    pub(crate) header: CheckpointHeader,
    /// Every inode, by inode number.
    pub(crate) inodes: BTreeMap<u64, Inode>,
    /// The allocator the free set describes; None only when damage is tolerated and the free
    /// set does not decode ([`CheckpointDamage::FreeSet`]).
    pub(crate) alloc: Option<ExtentAllocator>,
    /// Next inode number to hand out.
    pub(crate) next_ino: u64,
}

/// Reads the checkpoint the superblock names and decodes it: header (checked against the
/// superblock), body (checksum), image, inodes and free set. The one checkpoint decoder, used
/// by mount and by fsck.
///
/// With `damage` None (mount) damage in what the checkpoint says is refused
/// ([`CheckpointFault::Refused`]): a duplicate inode, an extent map that is not valid or maps
/// frames outside the data region, a malformed directory, no root, a free set that does not
/// decode. With `Some(list)` (fsck) each of those but the extent checks is repaired in what is
/// returned and added to `list` (see [`CheckpointDamage`]); extent maps are only freed of the
/// extents that do not fit, the rest being fsck's own checks on its model.
pub(crate) fn decode_checkpoint(
    pool: &Pool,
    mut damage: Option<&mut Vec<CheckpointDamage>>,
) -> Result<DecodedCheckpoint, CheckpointFault> {
    let name = pool.name().display().to_string();
    let sb = pool.superblock();
    let data = pool.data_region();
    let head = PfnRange::new(Pfn(sb.checkpoint.head_pfn), 1)
        .filter(|r| data.covers(r))
        .ok_or(CheckpointFault::HeadOutside {
            head_pfn: sb.checkpoint.head_pfn,
            data,
        })?;
    let header = CheckpointHeader::decode(&pool.read_frames(head).map_err(FsError::from)?, data)
        .map_err(CheckpointFault::Header)?;
    if header.generation != sb.checkpoint.log_generation
        || header.body_len != sb.checkpoint.len_bytes
        || header.body_crc != sb.checkpoint.crc
        || header.ranges[0].start != head.start
    {
        return Err(CheckpointFault::Mismatch);
    }
    let mut body = Vec::with_capacity(header.body_len.min(1 << 30) as usize);
    for (offset, len) in header.body_spans() {
        let at = body.len();
        body.resize(at + len as usize, 0);
        pool.read_into(offset, &mut body[at..])
            .map_err(FsError::from)?;
    }
    if crc32c::crc32c(&body) != header.body_crc {
        return Err(CheckpointFault::Checksum);
    }
    let image: CheckpointImage =
        postcard::from_bytes(&body).map_err(|e| CheckpointFault::Body(e.to_string()))?;
    drop(body);
    let refused = |what: String| CheckpointFault::Refused(corrupt(format!("{name}: {what}")));
    let (alloc, free_set_damage) = match ExtentAllocator::decode_free_set(data, &image.free_set) {
        Ok(a) => (Some(a), None),
        Err(e) if damage.is_some() => (None, Some(e.to_string())),
        Err(e) => return Err(refused(format!("checkpoint free set: {e}"))),
    };
    let mut inodes: BTreeMap<u64, Inode> = BTreeMap::new();
    for img in image.inodes {
        let ino = img.ino;
        let duplicate = inodes.contains_key(&ino);
        if duplicate && let Some(list) = damage.as_deref_mut() {
            list.push(CheckpointDamage::DuplicateInode(ino));
            continue;
        }
        let body = match img.body {
            BodyImage::File(extents) => Body::File(match damage.as_deref_mut() {
                None => {
                    strict_map(extents, data).map_err(|e| refused(format!("inode {ino}: {e}")))?
                }
                Some(list) => tolerant_map(ino, extents, list),
            }),
            BodyImage::Dir {
                parent,
                next_cookie,
                entries,
            } => Body::Dir(match damage.as_deref_mut() {
                None => Directory::from_parts(parent, next_cookie, entries)
                    .map_err(|e| refused(format!("inode {ino}: {e}")))?,
                Some(list) => tolerant_dir(ino, parent, next_cookie, entries, list),
            }),
            BodyImage::Symlink(t) => Body::Symlink(t),
            BodyImage::Special => Body::Special,
        };
        if duplicate {
            return Err(refused(format!(
                "inode {ino} appears twice in the checkpoint"
            )));
        }
        let inode = Inode {
            ino,
            attr: img.attr,
            xattrs: img.xattrs.into_iter().collect(),
            body,
        };
        inodes.insert(ino, inode);
    }
    if let std::collections::btree_map::Entry::Vacant(slot) = inodes.entry(ROOT_INO) {
        let Some(list) = damage.as_deref_mut() else {
            return Err(refused("checkpoint has no root directory".into()));
        };
        list.push(CheckpointDamage::RootMissing);
        slot.insert(Inode::new_root(Time::now()));
    }
    if let (Some(why), Some(list)) = (free_set_damage, damage) {
        list.push(CheckpointDamage::FreeSet(why));
    }
    Ok(DecodedCheckpoint {
        header,
        inodes,
        alloc,
        next_ino: image.next_ino,
    })
}

/// A file's extent map as mount accepts it: from_extents refuses overlaps in the file; a pool
/// frame mapped twice (which writes through one offset would show at the other) and frames
/// outside the data region (which recovery would write to) are caught here.
fn strict_map(extents: Vec<Extent>, data: PfnRange) -> Result<ExtentMap, String> {
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
fn tolerant_map(ino: u64, extents: Vec<Extent>, damage: &mut Vec<CheckpointDamage>) -> ExtentMap {
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
    damage.push(CheckpointDamage::ExtentMap { ino, dropped });
    map
}

/// A directory from checkpointed parts; duplicate names or bad cookies are rebuilt.
fn tolerant_dir(
    ino: u64,
    parent: u64,
    next_cookie: u64,
    entries: Vec<(u64, DirEntry)>,
    damage: &mut Vec<CheckpointDamage>,
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
                    dropped.push(e.name);
                } else {
                    d.insert(e);
                }
            }
            damage.push(CheckpointDamage::Directory { ino, why, dropped });
            d
        }
    }
}
