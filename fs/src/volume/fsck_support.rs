//! fsck support. Used only by `crate::fsck`, which reads a damaged pool tolerating what
//! `load` refuses (the metadata tree with [`super::decode_metadata`], the log itself), replays
//! its log record by record, checks the result and installs a repaired state.
//!
//! Nothing here runs on a mounted volume, so it is kept out of the root, where a reader of the
//! mount path would have to step over it; it is in `volume` rather than in `fsck` because it
//! builds and changes a `Volume`'s private fields.

use super::*;

impl Volume {
    /// A volume from parts fsck decoded. Read-only iff the pool is; writes nothing.
    pub(crate) fn fsck_assemble(
        pool: Arc<Pool>,
        alloc: ExtentAllocator,
        inodes: Vec<Inode>,
        next_ino: u64,
        tree: pfnfs_btree::Tree,
        journal: Journal,
    ) -> Volume {
        let table = DashMap::new();
        for inode in inodes {
            table.insert(inode.ino, new_cell(inode));
        }
        let count = table.len() as u64;
        Volume::assemble(Parts {
            read_only: pool.is_read_only(),
            reserve_frames: RESERVE_FRAMES_MIN,
            pool,
            alloc,
            inodes: table,
            next_ino,
            inode_count: count,
            orphans: Default::default(),
            tree,
            journal,
            dirty: store::Dirty::default(),
            // fsck holds every inode: nothing is evicted.
            cache: cache::Cache::unbounded(),
        })
    }

    /// Replays one log record as `load` does. If that fails, the inodes the record touches
    /// are put back as they were (the allocator may keep a partial change; fsck compares it
    /// with the references and rebuilds it on repair).
    pub(crate) fn fsck_replay(&self, op: &Op) -> FsResult<()> {
        let saved: Vec<Inode> = self
            .touched(op)
            .unwrap_or_default()
            .iter()
            .filter_map(|ino| self.cell(*ino).ok())
            .map(|cell| cell.inode.read().clone())
            .collect();
        // Replay never stores to the pool (partial frames are copied on write at run time),
        // so it runs the same on a read-only pool.
        let result = self.replay(op);
        if result.is_err() {
            for inode in saved {
                match self.cell(inode.ino) {
                    Ok(cell) => *cell.inode.write() = inode,
                    Err(_) => {
                        self.inodes.insert(inode.ino, new_cell(inode));
                    }
                }
            }
        }
        result
    }

    /// The next inode number `create` would hand out.
    pub(crate) fn fsck_next_ino(&self) -> u64 {
        self.next_ino.load(Ordering::Relaxed)
    }

    /// Replaces the inode table, the allocator and the next inode number with fsck's
    /// repaired state (fsck then writes a checkpoint).
    pub(crate) fn fsck_install(
        &mut self,
        inodes: Vec<Inode>,
        alloc: ExtentAllocator,
        next_ino: u64,
    ) {
        self.inodes.clear();
        for inode in inodes {
            self.inodes.insert(inode.ino, new_cell(inode));
        }
        self.alloc = alloc;
        *self.next_ino.get_mut() = next_ino;
        *self.inode_count.get_mut() = self.inodes.len() as u64;
        // fsck's checkpoint writes the repaired state as a new tree.
        self.dirty.get_mut().rebuild = true;
    }
}
