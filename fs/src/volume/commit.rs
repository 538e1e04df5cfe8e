//! Making changes durable: [`Volume::commit`] (journal a record, then apply it), checkpoints
//! (when the log passes half full, when an operation finds no room, at shutdown), and the
//! space accounting that keeps room for the next checkpoint: the metadata and data reserves
//! and the ENOSPC checks an operation makes before it journals anything.

use pfnfs_alloc::{Frames, MetaRoot};
use pfnfs_btree::{Tree, Txn};

use super::store::{self, Dirty};

/// What kind of commit [`Volume::commit_tree`] makes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Commit<'a> {
    /// A checkpoint of a format 2 pool.
    Normal,
    /// The first commit of a format 1 pool being upgraded, whose checkpoint held
    /// `old_frames`: writes a format 2 superblock.
    Upgrade { old_frames: &'a [PfnRange] },
}

use super::*;

impl Volume {
    /// Commits what changed since the last commit into the metadata tree and starts a new
    /// log generation (a *checkpoint*). Costs what changed: the inodes and names the log's
    /// records touched, the allocation groups whose free space changed, and the tree nodes on
    /// their paths.
    ///
    /// Order (docs/DESIGN.md section 6): the copy-on-write transaction writes new nodes only
    /// into frames no durable structure references, persists them (one fence) and msyncs
    /// them; then the superblock commit names the new root, generation and nonce (the commit
    /// point); only then are the nodes the new tree replaced, and frames in doubt, given back.
    pub fn checkpoint(&self) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let _gate = self.gate.write();
        let waited = started.elapsed();
        // The set stays in place until the commit is durable: a number in it that is not
        // cached is a reclaimed inode, which `cell` must not read back from the old tree.
        // Nothing adds to it meanwhile (every change holds the gate).
        let dirty = self.dirty.lock().snapshot();
        let result = self.commit_tree(&dirty, Commit::Normal).map(|_| ());
        let took = started.elapsed();
        if took > std::time::Duration::from_millis(20) {
            tracing::info!(
                inodes = dirty.inodes.len(),
                waited_ms = waited.as_secs_f64() * 1e3,
                took_ms = took.as_secs_f64() * 1e3,
                "slow metadata commit"
            );
        } else {
            tracing::debug!(
                inodes = dirty.inodes.len(),
                waited_ms = waited.as_secs_f64() * 1e3,
                took_ms = took.as_secs_f64() * 1e3,
                "metadata commit"
            );
        }
        match &result {
            Ok(()) => self.dirty.lock().forget(&dirty),
            // Nothing of it is durable (or it is in doubt, and the next commit writes it
            // again): the changes stay to be committed.
            Err(_) => self.alloc.mark_all_dirty(),
        }
        drop(_gate);
        // What the commit wrote is clean now: the cache may shrink back to its size.
        self.evict();
        result
    }

    /// Writes `dirty` into a transaction of the tree and commits it (see
    /// [`Self::checkpoint`]); returns what the superblock now says of the metadata.
    pub(super) fn commit_tree(&self, dirty: &Dirty, how: Commit<'_>) -> FsResult<MetaRoot> {
        let current = self.view.tree.read().clone();
        // A rebuild writes a new tree from nothing; the old one's frames (an upgrade's: the
        // format 1 checkpoint's) are free once it is committed, and count as free in the free
        // set it stores.
        let (base, old_frames, rebuild) = match how {
            Commit::Upgrade { old_frames } => (Tree::empty(), old_frames.to_vec(), true),
            Commit::Normal if dirty.rebuild => (Tree::empty(), current.frames(&self.pool)?, true),
            Commit::Normal => (current.clone(), Vec::new(), false),
        };
        let previous_frames = match how {
            Commit::Upgrade { .. } => 0,
            Commit::Normal => self.pool.superblock().meta.tree_frames,
        };
        // Frames in doubt are free in the new free set (once it is committed nothing can
        // reference them) and given back after the commit. No operation runs meanwhile (the
        // gate is held), so the list cannot grow under us.
        let in_doubt = self.in_doubt.lock().clone();
        // Never reuse a generation whose records may still be in the log (after a stale
        // superblock was accepted by fsck -y): replay would take them for this one's.
        let generation = self
            .journal
            .generation()
            .max(crate::journal::log_generation(&self.pool, RECORD_MAGIC)?.unwrap_or(0))
            + 1;
        let mut txn = Txn::new(&base, &self.pool, &self.alloc, generation);
        if rebuild {
            self.store_everything(&mut txn, &base)?;
        } else {
            let orphans = self.orphans.lock().clone();
            for ino in &dirty.inodes {
                let fresh = dirty.fresh.contains(ino);
                self.store_inode(&mut txn, &base, *ino, fresh, &orphans)?;
            }
        }
        let mut extra_free = in_doubt.clone();
        extra_free.extend(old_frames.iter().copied());
        self.store_free_set(&mut txn, &base, &extra_free, rebuild)?;
        self.store_bad_set(&mut txn, &base)?;
        // Persist point 4: every new node, flushed and fenced; a failure here leaves nothing
        // durable naming them, and dropping the transaction's guard gives them back.
        let written = txn.write()?;
        // Each run of new nodes is persisted as a range too (what a failing medium reports
        // per range), and msynced for file-backed pools, before anything names them.
        for r in store::coalesce(written.frames.ranges().to_vec()) {
            self.pool.persist(r.start.byte_offset(), r.len_bytes())?;
            self.pool.sync(r.start.byte_offset(), r.len_bytes())?;
        }
        // A rebuild's old frames were the old tree's (counted in `previous_frames`); an
        // upgrade's were the format 1 checkpoint's, never part of a tree.
        let replaced_frames = match how {
            Commit::Upgrade { .. } => 0,
            Commit::Normal => old_frames.iter().map(|r| r.len).sum::<u64>(),
        };
        let tree_frames = previous_frames
            .saturating_add(written.frames.frames())
            .saturating_sub(written.freed.iter().map(|r| r.len).sum::<u64>())
            .saturating_sub(replaced_frames);
        let log = LogId::new(generation, crate::journal::new_nonce());
        let meta = MetaRoot {
            root_pfn: written.tree.root().map_or(0, |p| p.0),
            height: u32::from(written.tree.height()),
            tree_frames,
            log_generation: log.generation,
            log_nonce: log.nonce.unwrap_or(0),
            next_ino: self.next_ino.load(Ordering::Relaxed),
            inodes: self.inode_count.load(Ordering::Relaxed),
        };
        // Persist point 5, the commit point.
        let committed = match how {
            Commit::Normal => {
                let mut sb = self.pool.superblock();
                sb.meta = meta;
                sb.bad_frames = self.bad_table_entries() > 0;
                self.pool.commit_superblock(sb)
            }
            Commit::Upgrade { .. } => self.pool.upgrade_superblock(meta),
        };
        if let Err(e) = committed {
            let e = FsError::from(e);
            // Either root may be the one a mount finds: keep both (the new nodes in doubt,
            // the old tree current), and take no record in a generation that may no longer
            // be the pool's until a later commit succeeds.
            self.in_doubt.lock().extend(written.frames.into_ranges());
            self.journal.raise_generation(generation);
            self.journal.refuse(&e);
            tracing::error!(
                "metadata commit failed; the log takes no record until a commit succeeds: {e}"
            );
            return Err(e);
        }
        // The superblock names the new tree: its frames belong to it; the nodes it replaced,
        // the old tree of a rebuild and the frames in doubt are free.
        written.frames.commit();
        self.journal.reset(log);
        self.reserve_frames
            .store(RESERVE_FRAMES_MIN + tree_frames, Ordering::Relaxed);
        {
            // Readers of the tree hold this lock for reading: none is inside a node that is
            // freed here.
            let mut tree = self.view.tree.write();
            // A rebuilt tree starts from the empty one: it keeps the node cache all the same.
            *tree = match current.cache() {
                Some(c) if written.tree.cache().is_none() => written.tree.with_cache(c.clone()),
                _ => written.tree,
            };
            self.in_doubt.lock().retain(|r| !in_doubt.contains(r));
            for r in written.freed.into_iter().chain(old_frames).chain(in_doubt) {
                self.alloc.free(r)?;
            }
        }
        // The directories' changes are in the tree now, and so is the orphan list.
        let committed: Vec<u64> = if rebuild {
            self.inodes.iter().map(|c| *c.key()).collect()
        } else {
            dirty.inodes.iter().copied().collect()
        };
        self.mark_committed(&committed);
        {
            let mut orphans = self.orphans.lock();
            if rebuild {
                orphans.clear();
            }
            for ino in committed {
                let orphan = self
                    .inodes
                    .get(&ino)
                    .is_some_and(|c| c.value().inode.read().attr.nlink == 0);
                if orphan {
                    orphans.insert(ino);
                } else {
                    orphans.remove(&ino);
                }
            }
        }
        tracing::debug!(generation, tree_frames, "metadata committed");
        Ok(meta)
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

    /// Commits if changes have piled up (reads that move atime: they pin inodes too).
    pub(super) fn commit_if_many_changes(&self) {
        if self.dirty.lock().inodes.len() >= cache::DIRTY_COMMIT_INODES
            && let Err(e) = self.checkpoint()
        {
            tracing::error!("checkpoint failed: {e}");
        }
    }

    pub(super) fn maybe_checkpoint(&self) {
        let dirty = self.dirty.lock().inodes.len();
        if (self.journal.wants_checkpoint() || dirty >= cache::DIRTY_COMMIT_INODES)
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
