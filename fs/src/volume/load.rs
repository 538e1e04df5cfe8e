//! Mounting: [`Volume::load`] reads the checkpoint the superblock names and replays the
//! log written since; a read-write mount then finishes recovery once (zeroes bytes past EOF
//! after a crash, reclaims orphaned inodes, writes a fresh checkpoint) and marks the pool
//! mounted.

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
        let sb = pool.superblock();
        let data = pool.data_region();
        let head = PfnRange::new(Pfn(sb.checkpoint.head_pfn), 1)
            .filter(|r| data.covers(r))
            .ok_or_else(|| {
                corrupt(format!(
                    "{name}: checkpoint pointer lies outside the data region"
                ))
            })?;
        let header = CheckpointHeader::decode(pool.frames(head)?, data)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        if header.generation != sb.checkpoint.log_generation
            || header.body_len != sb.checkpoint.len_bytes
            || header.body_crc != sb.checkpoint.crc
            || header.ranges[0].start != head.start
        {
            return Err(corrupt(format!(
                "{name}: checkpoint header does not match the superblock"
            )));
        }
        let mut body = Vec::with_capacity(header.body_len.min(1 << 30) as usize);
        for (offset, len) in header.body_spans() {
            body.extend_from_slice(pool.read(offset, len as usize)?);
        }
        if crc32c::crc32c(&body) != header.body_crc {
            return Err(corrupt(format!("{name}: checkpoint checksum mismatch")));
        }
        let image: CheckpointImage = postcard::from_bytes(&body)
            .map_err(|e| corrupt(format!("{name}: checkpoint does not decode: {e}")))?;
        let alloc = ExtentAllocator::decode_free_set(data, &image.free_set)
            .map_err(|e| corrupt(format!("{name}: checkpoint free set: {e}")))?;
        let inodes = DashMap::new();
        // Every frame the checkpoint or a file uses, to check against the free set below.
        let mut used: Vec<PfnRange> = header.ranges.clone();
        for img in image.inodes {
            let body = match img.body {
                BodyImage::File(extents) => {
                    // from_extents refuses overlaps in the file; a pool frame mapped twice
                    // (which writes through one offset would show at the other) and frames
                    // outside the data region (which recovery would write to) are caught here.
                    let map = ExtentMap::from_extents(extents)
                        .map_err(|e| e.to_string())
                        .and_then(|m| m.check_invariants().map(|()| m))
                        .and_then(|m| {
                            let outside = m.iter().find(|e| !data.covers(&e.pfns));
                            match outside {
                                Some(e) => Err(format!(
                                    "extent at file frame {} maps frames {} outside the data \
                                     region {data}",
                                    e.file_frame, e.pfns
                                )),
                                None => Ok(m),
                            }
                        })
                        .map_err(|e| corrupt(format!("{name}: inode {}: {e}", img.ino)))?;
                    used.extend(map.iter().map(|e| e.pfns));
                    Body::File(map)
                }
                BodyImage::Dir {
                    parent,
                    next_cookie,
                    entries,
                } => Body::Dir(
                    Directory::from_parts(parent, next_cookie, entries)
                        .map_err(|e| corrupt(format!("{name}: inode {}: {e}", img.ino)))?,
                ),
                BodyImage::Symlink(t) => Body::Symlink(t),
                BodyImage::Special => Body::Special,
            };
            let inode = Inode {
                ino: img.ino,
                attr: img.attr,
                xattrs: img.xattrs.into_iter().collect(),
                body,
            };
            if inodes.insert(img.ino, new_cell(inode)).is_some() {
                return Err(corrupt(format!(
                    "{name}: inode {} appears twice in the checkpoint",
                    img.ino
                )));
            }
        }
        if !inodes.contains_key(&ROOT_INO) {
            return Err(corrupt(format!("{name}: checkpoint has no root directory")));
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
        Ok((alloc, inodes, image.next_ino, header.ranges, false))
    }

    /// Zeroes, in every file's last frame, the bytes past the file's size (recovery).
    fn zero_tails_past_eof(&self) -> FsResult<()> {
        for cell in self.cells() {
            let inode = cell.inode.read();
            let Body::File(map) = &inode.body else {
                continue;
            };
            let size = inode.attr.size;
            let tail = size % FRAME_SIZE;
            if tail == 0 {
                continue;
            }
            let Some(e) = map.lookup(size / FRAME_SIZE) else {
                continue;
            };
            if e.unwritten {
                continue;
            }
            let pfn = e.pfns.start.0 + (size / FRAME_SIZE - e.file_frame);
            let at = pfn * FRAME_SIZE + tail;
            self.pool.zero(at, FRAME_SIZE - tail)?;
            self.pool.flush(at, FRAME_SIZE - tail)?;
        }
        self.pool.fence();
        Ok(())
    }

    fn reclaim_now(&self, ino: u64) -> FsResult<()> {
        let mut locked = self.lock(&[ino])?;
        let i = locked.get(ino)?;
        self.reclaim_locked(i)
    }
}
