//! Making changes durable: [`Volume::commit`] (journal a record, then apply it), checkpoints
//! (when the log passes half full, when an operation finds no room, at shutdown), and the
//! space accounting that keeps room for the next checkpoint: the metadata and data reserves
//! and the ENOSPC checks an operation makes before it journals anything.

use pfnfs_alloc::Frames;

use super::*;

impl Volume {
    /// Writes the whole metadata state as a new checkpoint and starts a new log generation.
    pub fn checkpoint(&self) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        let _gate = self.gate.write();
        let mut images = Vec::with_capacity(self.inodes.len());
        for cell in self.inodes.iter() {
            let inode = cell.value().inode.read();
            let body = match &inode.body {
                Body::File(m) => BodyImage::File(m.iter().collect()),
                Body::Dir(d) => BodyImage::Dir {
                    parent: d.parent,
                    next_cookie: d.next_cookie(),
                    entries: d.iter().map(|(c, e)| (c, e.clone())).collect(),
                },
                Body::Symlink(t) => BodyImage::Symlink(t.clone()),
                Body::Special => BodyImage::Special,
            };
            images.push(InodeImage {
                ino: inode.ino,
                attr: inode.attr.clone(),
                xattrs: inode
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body,
            });
        }
        images.sort_by_key(|i| i.ino);
        let mut image = CheckpointImage {
            next_ino: self.next_ino.load(Ordering::Relaxed),
            inodes: images,
            free_set: Vec::new(),
        };
        let base = postcard::to_stdvec(&image)
            .map_err(|e| corrupt(format!("checkpoint encode: {e}")))?
            .len() as u64;
        let mut ckpt = self.checkpoint_ranges.lock();
        let old = ckpt.clone();
        // Frames in doubt are free in the new image (once it is committed nothing can
        // reference them) and given back after the commit. No operation runs meanwhile (the
        // gate is held), so the list cannot grow under us.
        let in_doubt = self.in_doubt.lock().clone();
        let mut slack = 0u64;
        for _attempt in 0..4 {
            let free_est = 64
                + 16 * (self.alloc.stats().free_extents
                    + old.len() as u64
                    + in_doubt.len() as u64
                    + 2 * CHECKPOINT_RANGES_MAX as u64);
            let want = 1 + (base + free_est + 64 + slack).div_ceil(FRAME_SIZE);
            // Every way out of this attempt before the superblock names the new checkpoint
            // drops `frames`, which gives them back.
            let frames = self.alloc.allocate(want, None)?;
            if frames.ranges().len() > CHECKPOINT_RANGES_MAX {
                return Err(no_space("pool too fragmented for a checkpoint"));
            }
            let mut free: Vec<PfnRange> = self.alloc.free_extents();
            free.extend(old.iter().copied());
            free.extend(in_doubt.iter().copied());
            image.free_set =
                pfnfs_alloc::allocator::image::encode(self.pool.data_region(), &coalesce(free));
            let body = postcard::to_stdvec(&image)
                .map_err(|e| corrupt(format!("checkpoint encode: {e}")))?;
            let capacity = frames.ranges().iter().map(|r| r.len_bytes()).sum::<u64>() - FRAME_SIZE;
            if body.len() as u64 > capacity {
                slack += body.len() as u64 - capacity + FRAME_SIZE;
                continue;
            }
            // Never reuse a generation whose records may still be in the log (after a stale
            // superblock was accepted by fsck -y): replay would take them for this one's.
            let generation = self
                .journal
                .generation()
                .max(crate::journal::log_generation(&self.pool)?.unwrap_or(0))
                + 1;
            let header = CheckpointHeader {
                generation,
                body_len: body.len() as u64,
                body_crc: crc32c::crc32c(&body),
                ranges: frames.ranges().to_vec(),
            };
            // A failure here leaves nothing durable naming the new frames: they go back.
            self.write_checkpoint_body(&header, &body)?;
            if let Err(e) = self.commit_checkpoint(&header) {
                // The slot may or may not have reached the pool, so either checkpoint may be
                // the one a mount finds: keep both (the new one's frames in doubt, the old one
                // current), and take no record in a generation that may no longer be the
                // pool's until a later checkpoint commits.
                self.in_doubt.lock().extend(frames.into_ranges());
                self.journal.raise_generation(generation);
                self.journal.refuse(&e);
                tracing::error!(
                    "checkpoint superblock commit failed; the log takes no record until a checkpoint succeeds: {e}"
                );
                return Err(e);
            }
            // The superblock names the new checkpoint: its frames belong to it; the old one's
            // and those in doubt are free.
            let ranges = frames.into_ranges();
            self.journal.reset(generation);
            let count: u64 = ranges.iter().map(|r| r.len).sum();
            self.reserve_frames
                .store(RESERVE_FRAMES_MIN + count, Ordering::Relaxed);
            *ckpt = ranges;
            self.in_doubt.lock().retain(|r| !in_doubt.contains(r));
            for r in old.into_iter().chain(in_doubt) {
                self.alloc.free(r)?;
            }
            tracing::debug!(bytes = body.len(), generation, "checkpoint written");
            return Ok(());
        }
        Err(corrupt("checkpoint did not fit after several attempts"))
    }

    /// Persist point 4: the checkpoint's header and body, into frames nothing durable names.
    fn write_checkpoint_body(&self, header: &CheckpointHeader, body: &[u8]) -> FsResult<()> {
        let head = header.ranges[0].start.byte_offset();
        let hdr = header.encode();
        self.pool.write(head, &hdr)?;
        self.pool.flush(head, hdr.len() as u64)?;
        let mut done = 0usize;
        for (offset, len) in header.body_spans() {
            let piece = &body[done..done + len as usize];
            self.pool.write(offset, piece)?;
            self.pool.flush(offset, len)?;
            done += len as usize;
        }
        self.pool.fence()?;
        for (offset, len) in std::iter::once((head, hdr.len() as u64)).chain(header.body_spans()) {
            self.pool.persist(offset, len)?;
        }
        Ok(())
    }

    /// Persist point 5, the commit point of a checkpoint: the superblock names it.
    fn commit_checkpoint(&self, header: &CheckpointHeader) -> FsResult<()> {
        let mut sb = self.pool.superblock();
        sb.checkpoint = pfnfs_alloc::CheckpointRef {
            head_pfn: header.ranges[0].start.0,
            len_bytes: header.body_len,
            crc: header.body_crc,
            log_generation: header.generation,
        };
        self.pool.commit_superblock(sb)?;
        Ok(())
    }

    /// Clean unmount: checkpoint, clear the mounted flag, sync the pool.
    pub fn shutdown(&self) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.checkpoint()?;
        let mut sb = self.pool.superblock();
        sb.mounted = false;
        self.pool.commit_superblock(sb)?;
        self.pool.sync(0, self.pool.len_bytes())?;
        Ok(())
    }

    pub(super) fn maybe_checkpoint(&self) {
        if self.journal.wants_checkpoint()
            && let Err(e) = self.checkpoint()
        {
            tracing::error!("checkpoint failed: {e}");
        }
    }

    /// Before an operation adding about `meta_bytes` of metadata or up to `data_frames` of
    /// file data (outside the gate, like [`Self::maybe_checkpoint`]): if the reserves leave
    /// no room for it but the log holds records, checkpoint now. The reserve counts every
    /// log record as growth until a checkpoint measures the real image, so this is what
    /// makes the room freed by unlinks and removexattrs usable at once on a full pool.
    ///
    /// Before that it waits (briefly, see [`unlinked`]) for inodes unlinked a moment ago whose
    /// FORGET is still on its way: without it, `rm big; touch new` on a full pool could fail.
    pub(super) fn make_room(&self, meta_bytes: u64, data_frames: u64) {
        if self.read_only {
            return;
        }
        let short = || {
            let free = self.alloc.free_frames();
            let short_of_meta =
                meta_bytes > 0 && free < self.metadata_reserve() + meta_bytes.div_ceil(FRAME_SIZE);
            let short_of_data = data_frames > 0 && free < self.data_reserve() + data_frames;
            short_of_meta || short_of_data
        };
        if !short() {
            return;
        }
        let awaits_forget = |ino: u64| {
            self.inodes
                .get(&ino)
                .is_some_and(|c| c.opens.load(Ordering::Acquire) == 0)
        };
        if self.unlinked.await_reclaims(awaits_forget) && !short() {
            return;
        }
        if self.journal.used_bytes() > 0
            && let Err(e) = self.checkpoint()
        {
            tracing::warn!("checkpoint to make room failed: {e}");
        }
    }

    /// Free frames new metadata may not take. The next checkpoint is at most the current one
    /// (c frames) plus what the log records since it add to the image (no record adds more
    /// than its own size: L frames), and is written before the current one (still held, not
    /// free) is released. So it fits while free >= 64 + c + L; for the one after it to fit
    /// too (at unmount, say) with no growth in between, free >= 64 + c' must hold once it is
    /// written (c' <= c + L), which free >= 64 + c + 2L before it guarantees. 64 frames of
    /// margin cover the checkpoint's header and estimate. `reserve_frames` is 64 + c.
    pub(crate) fn metadata_reserve(&self) -> u64 {
        let log_frames = self.journal.used_bytes().div_ceil(FRAME_SIZE);
        self.reserve_frames
            .load(Ordering::Relaxed)
            .saturating_add(2 * log_frames)
    }

    /// Free frames file data may not take: the metadata reserve plus headroom, so that names
    /// and attributes can still be added to a pool full of data.
    pub(crate) fn data_reserve(&self) -> u64 {
        self.metadata_reserve()
            .saturating_add(METADATA_HEADROOM_FRAMES)
    }

    /// ENOSPC unless an operation adding about `bytes` of metadata (a name, an xattr) leaves
    /// room for the next checkpoint. Without this check a pool whose metadata outgrew its
    /// free space could not checkpoint, filled its log and then refused even unlink.
    pub(crate) fn ensure_metadata_room(&self, bytes: u64) -> FsResult<()> {
        self.ensure_log_room()?;
        let need = self
            .metadata_reserve()
            .saturating_add(bytes.div_ceil(FRAME_SIZE));
        let free = self.alloc.free_frames();
        if free < need {
            return Err(no_space(format!(
                "no room for more metadata: the next checkpoint needs up to {need} frames, \
                 {free} free"
            )));
        }
        Ok(())
    }

    /// ENOSPC once the log is three quarters full. Checkpoints start at half; the log only
    /// gets here when they fail (a pool whose free space is too fragmented for one), and
    /// then the last quarter is kept for what frees space (unlink, truncate, punch), so
    /// that deleting files lets the next checkpoint succeed instead of the log filling up
    /// and every operation, unlink included, failing.
    fn ensure_log_room(&self) -> FsResult<()> {
        if self.journal.used_bytes() > self.journal.capacity_bytes() / 4 * 3 {
            return Err(no_space(
                "no checkpoint could be written and the metadata log is nearly full: \
                 delete files to make room",
            ));
        }
        Ok(())
    }

    /// ENOSPC unless the holes of `frames` logical frames from `first` can be filled without
    /// eating into the metadata reserve.
    pub(super) fn ensure_space(&self, map: &ExtentMap, first: u64, frames: u64) -> FsResult<()> {
        let holes: u64 = map
            .mappings_iter(first, frames)
            .map(|m| match m {
                pfnfs_extent::Mapping::Hole { frames, .. } => frames,
                _ => 0,
            })
            .sum();
        if holes == 0 {
            return Ok(());
        }
        self.ensure_log_room()?;
        let free = self.alloc.free_frames();
        let reserve = self.data_reserve();
        if free < holes.saturating_add(reserve) {
            return Err(no_space(format!(
                "pool full: {holes} frames needed, {} available",
                free.saturating_sub(reserve)
            )));
        }
        Ok(())
    }

    /// Logs and applies `op` on already-locked inodes.
    pub(super) fn commit(&self, op: Op, locked: &mut Locked) -> FsResult<()> {
        self.journal.append(&self.pool, &op)?;
        self.apply(&op, locked, false)
    }

    /// Logs `op`, which maps the new frames `frames` holds (a write's, fallocate's, the
    /// copy-on-write frames of a truncate or punch). Once the record is durable the frames
    /// belong to it; if the append fails before storing anything, dropping the guard gives
    /// them back; if its persist failed (the record may reach a replay), they stay in doubt
    /// until the next checkpoint. The caller applies `op` after this returns `Ok`.
    pub(super) fn journal_owning(&self, op: &Op, frames: Frames<'_>) -> FsResult<()> {
        match self.journal.append(&self.pool, op) {
            Ok(()) => {
                frames.commit();
                Ok(())
            }
            Err(AppendError {
                error,
                in_doubt: true,
            }) => {
                self.in_doubt.lock().extend(frames.into_ranges());
                Err(error)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Sorts ranges and merges touching ones (they must not overlap).
fn coalesce(mut ranges: Vec<PfnRange>) -> Vec<PfnRange> {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut out: Vec<PfnRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.end() == r.start => last.len += r.len,
            _ => out.push(r),
        }
    }
    out
}
