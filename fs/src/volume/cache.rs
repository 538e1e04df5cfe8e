//! The inode cache: inodes are read from the metadata tree when first needed and dropped
//! again when clean, so that RAM holds what is in use, not what exists.
//!
//! A cell stays in the table while it is *pinned*: changed since the last commit (its
//! number is in `store::Dirty`: the tree does not have it yet), open (per-open-file state),
//! or borrowed (someone holds its `Arc` or its lock). Everything else may be evicted once the
//! table holds more than `Cache::capacity` cells, oldest loaded first; a later `cell()`
//! reads it back from the tree. Kernel lookup references do not pin a cell: the kernel
//! names inodes by number, and a number can always be read back from the tree, so the daemon
//! keeps no per-reference state and an inode that loses its last name is reclaimed once no
//! file handle holds it (DESIGN.md, section 3.5).
//!
//! The tree's nodes are read under `TreeView`'s read lock; a commit swaps the root and
//! frees the nodes it replaced under the write lock, so a reader never follows a pointer into
//! a node that was freed (and possibly reused) under it.

use std::collections::VecDeque;

use parking_lot::RwLock as PlRwLock;
use pfnfs_btree::Tree;

use super::*;
use crate::schema::{self, CookieEntry, InodeRecord, InodeTail, NameEntry};

/// Bytes of RAM one cached inode is counted as, for the capacity: the cell, its lock, its
/// attributes and a small extent map or directory (measured: about 700 bytes for a file of
/// one extent).
pub const CELL_BYTES: u64 = 1024;

/// Default size of the metadata cache (`-o metadata_cache=SIZE`).
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// The share of the metadata cache given to checked tree nodes (the rest holds inodes): one
/// quarter, 16 MiB (4,096 nodes) by default, which holds every branch node of a tree of
/// about 20 million inodes, so that a lookup reads only its leaf from the pool.
pub const fn node_cache_bytes(cache_bytes: u64) -> u64 {
    cache_bytes / 4
}

/// The share of the metadata cache given to inodes.
pub const fn inode_cache_bytes(cache_bytes: u64) -> u64 {
    cache_bytes - node_cache_bytes(cache_bytes)
}

/// A node cache for a metadata cache of `cache_bytes`.
pub(super) fn node_cache(cache_bytes: u64) -> Arc<pfnfs_btree::NodeCache> {
    Arc::new(pfnfs_btree::NodeCache::with_bytes(node_cache_bytes(
        cache_bytes,
    )))
}

/// Inodes changed since the last commit after which the next operation commits: bounds the
/// RAM pinned by changes, and the work (and pause) of one commit.
pub const DIRTY_COMMIT_INODES: usize = 1024;

/// The metadata tree as of the last commit, shared by the volume and by every directory
/// (which reads its committed entries through it).
#[derive(Debug)]
pub(crate) struct TreeView {
    pub(super) pool: Arc<Pool>,
    pub(super) tree: PlRwLock<Tree>,
}

fn tree_text(e: pfnfs_btree::TreeError) -> String {
    e.to_string()
}

impl DirStore for TreeView {
    fn lookup(&self, dir: u64, name: &[u8]) -> Result<Option<(u64, DirEntry)>, String> {
        let tree = self.tree.read();
        let Some(v) = tree
            .get(&self.pool, &schema::name_key(dir, name))
            .map_err(tree_text)?
        else {
            return Ok(None);
        };
        let n = NameEntry::decode(&v).map_err(|e| e.to_string())?;
        Ok(Some((
            n.cookie,
            DirEntry {
                name: name.to_vec(),
                ino: n.ino,
                kind: n.kind,
            },
        )))
    }

    fn after(&self, dir: u64, after: u64, limit: usize) -> Result<Vec<(u64, DirEntry)>, String> {
        let tree = self.tree.read();
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let (_, end) = schema::prefix_range(schema::TAG_COOKIE, dir);
        let mut out = Vec::new();
        for item in tree.range(&self.pool, &schema::cookie_key(dir, start), end.as_deref()) {
            let (k, v) = item.map_err(tree_text)?;
            let cookie = schema::key_second(&k).map_err(|e| e.to_string())?;
            let e = CookieEntry::decode(&v).map_err(|e| e.to_string())?;
            out.push((
                cookie,
                DirEntry {
                    name: e.name,
                    ino: e.ino,
                    kind: e.kind,
                },
            ));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

impl TreeView {
    /// Inode `ino` as the tree has it, directories reading their entries through `view`: its
    /// record, extents and xattrs share one key prefix, so this is one range scan.
    pub(super) fn read_inode(view: &Arc<TreeView>, ino: u64) -> FsResult<Option<Inode>> {
        let mut found = None;
        TreeView::read_inodes(view, ino, ino, |inode| found = Some(inode))?;
        Ok(found)
    }

    /// Every inode numbered `first..=last` that the tree has, in order, handed to `each`:
    /// one range scan over the inode table (inodes created one after another are neighbours
    /// in it, as are the children of a directory filled in one go).
    pub(super) fn read_inodes(
        view: &Arc<TreeView>,
        first: u64,
        last: u64,
        mut each: impl FnMut(Inode),
    ) -> FsResult<()> {
        let pool = &*view.pool;
        let tree = view.tree.read();
        let start = schema::inode_key(first);
        let (_, end) = schema::prefix_range(schema::TAG_INODE, last);
        let mut group: Option<InodeEntries> = None;
        for item in tree.range(pool, &start, end.as_deref()) {
            let (k, v) = item?;
            let ino = schema::key_id(&k).map_err(|e| corrupt(format!("inode table: {e}")))?;
            let bad = |e: schema::SchemaError| corrupt(format!("inode {ino}: {e}"));
            let key = schema::inode_table_key(&k).map_err(bad)?;
            if let schema::InodeKey::Record(_) = key {
                if let Some(g) = group.take() {
                    each(g.finish(view)?);
                }
                group = Some(InodeEntries {
                    ino,
                    record: InodeRecord::decode(&v).map_err(bad)?,
                    extents: Vec::new(),
                    xattrs: BTreeMap::new(),
                });
                continue;
            }
            let Some(g) = group.as_mut().filter(|g| g.ino == ino) else {
                return Err(corrupt(format!("inode {ino}: entries without a record")));
            };
            match key {
                schema::InodeKey::Extent(_, frame) => {
                    g.extents
                        .push(schema::decode_extent(frame, &v).map_err(bad)?);
                }
                schema::InodeKey::Xattr(_, name) => {
                    g.xattrs.insert(name.to_vec(), v);
                }
                schema::InodeKey::Record(_) => unreachable!("handled above"),
            }
        }
        if let Some(g) = group {
            each(g.finish(view)?);
        }
        Ok(())
    }
}

/// One inode's entries of the inode table, as a scan collects them.
struct InodeEntries {
    ino: u64,
    record: InodeRecord,
    extents: Vec<Extent>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl InodeEntries {
    /// The inode, directories reading their entries through `view`.
    fn finish(self, view: &Arc<TreeView>) -> FsResult<Inode> {
        let InodeEntries {
            ino,
            record,
            extents,
            xattrs,
        } = self;
        let has_extents = !extents.is_empty();
        let body = match record.tail {
            InodeTail::Dir {
                parent,
                next_cookie,
                entries,
            } => {
                let store: Arc<dyn DirStore> = view.clone();
                Body::Dir(Directory::committed(
                    ino,
                    parent,
                    next_cookie,
                    entries,
                    store,
                ))
            }
            InodeTail::Symlink(t) => Body::Symlink(t),
            InodeTail::Inline(b) => Body::Inline(b),
            InodeTail::None if record.attr.kind() == Kind::File => Body::File(
                load::strict_map(extents, view.pool.data_region())
                    .map_err(|e| corrupt(format!("inode {ino}: {e}")))?,
            ),
            InodeTail::None => Body::Special,
        };
        if !extents_allowed(&body) && has_extents {
            return Err(corrupt(format!(
                "inode {ino}: extents on a file that is not regular or keeps its bytes inline"
            )));
        }
        Ok(Inode {
            ino,
            attr: record.attr,
            xattrs,
            body,
        })
    }
}

/// True for the inodes that may have extents (regular files not kept inline).
fn extents_allowed(body: &Body) -> bool {
    matches!(body, Body::File(_))
}

/// The order cells were loaded in (oldest first) and how many may stay.
#[derive(Debug)]
pub(crate) struct Cache {
    /// Cells kept before clean ones are evicted; `usize::MAX` keeps every inode (fsck).
    capacity: std::sync::atomic::AtomicUsize,
    /// Inode numbers in load order; may hold numbers no longer cached (pruned lazily).
    order: Mutex<VecDeque<u64>>,
}

impl Cache {
    /// A cache of `capacity` cells.
    pub(crate) fn new(capacity: usize) -> Cache {
        Cache {
            capacity: std::sync::atomic::AtomicUsize::new(capacity.max(64)),
            order: Mutex::new(VecDeque::new()),
        }
    }

    /// A cache that never evicts.
    pub(crate) fn unbounded() -> Cache {
        Cache {
            capacity: std::sync::atomic::AtomicUsize::new(usize::MAX),
            order: Mutex::new(VecDeque::new()),
        }
    }

    /// Cells kept before clean ones are evicted.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    fn loaded(&self, ino: u64) {
        if self.capacity() != usize::MAX {
            self.order.lock().push_back(ino);
        }
    }
}

impl Volume {
    /// The cell of `ino`: from the table, or read from the tree into it.
    pub fn cell(&self, ino: u64) -> FsResult<Arc<InodeCell>> {
        if let Some(c) = self.inodes.get(&ino) {
            return Ok(c.value().clone());
        }
        // Not cached and changed since the last commit: it was reclaimed (a changed inode is
        // never evicted), and the tree's copy is out of date.
        if self.dirty.lock().inodes.contains(&ino) {
            return Err(not_found(format!("no inode {ino}")));
        }
        let inode = TreeView::read_inode(&self.view, ino)?
            .ok_or_else(|| not_found(format!("no inode {ino}")))?;
        let cell = self.admit(inode)?;
        self.evict();
        Ok(cell)
    }

    /// Puts `inode`, just read from the tree, into the table (unless a cell got there
    /// first) and returns its cell.
    fn admit(&self, inode: Inode) -> FsResult<Arc<InodeCell>> {
        let ino = inode.ino;
        // A frame a file maps and the free set holds would be handed out again: refuse the
        // inode (fsck repairs it) rather than let that happen.
        if let Body::File(map) = &inode.body
            && let Some(e) = map.iter().find(|e| self.alloc.overlaps_free(e.pfns))
        {
            return Err(corrupt(format!(
                "{}: inode {ino} maps frames {} that the free set holds too; run pfnfs fsck",
                self.pool.name().display(),
                e.pfns
            )));
        }
        Ok(match self.inodes.entry(ino) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(v) => {
                let c = new_cell(inode);
                v.insert(c.clone());
                self.cache.loaded(ino);
                c
            }
        })
    }

    /// Reads the inodes of `inos` that are not cached into the cache, neighbours with one
    /// range scan (readdirplus: a directory's children were often created one after
    /// another). Best effort: an inode that fails to read is left out, and the caller's own
    /// read of it reports the error. At most the cache's capacity is read.
    pub fn preload(&self, inos: &[u64]) {
        /// Inode numbers between two wanted ones that a scan may read past rather than
        /// start a new one.
        const GAP: u64 = 16;
        let mut want: Vec<u64> = {
            let dirty = self.dirty.lock();
            inos.iter()
                .copied()
                .filter(|i| !self.inodes.contains_key(i) && !dirty.inodes.contains(i))
                .collect()
        };
        want.sort_unstable();
        want.dedup();
        want.truncate(self.cache.capacity() / 2);
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &ino in &want {
            match runs.last_mut() {
                Some((_, last)) if ino - *last <= GAP => *last = ino,
                _ => runs.push((ino, ino)),
            }
        }
        for (first, last) in runs {
            // Admitted once the scan is done: it holds the tree's lock.
            let mut read = Vec::new();
            let scan = TreeView::read_inodes(&self.view, first, last, |inode| {
                if want.binary_search(&inode.ino).is_ok() {
                    read.push(inode);
                }
            });
            if let Err(e) = scan {
                tracing::debug!("preloading inodes {first}..={last}: {e}");
            }
            for inode in read {
                let _ = self.admit(inode);
            }
        }
        self.evict();
    }

    /// Puts a new inode into the table (created, or recovered).
    pub(super) fn insert_cell(&self, inode: Inode) {
        let ino = inode.ino;
        self.inodes.insert(ino, new_cell(inode));
        self.cache.loaded(ino);
        self.evict();
    }

    /// Every inode's cell: the cached ones and, read from the tree, the others (reads the
    /// whole inode table: for tests, reports and checks, not for the operations). Cells
    /// returned stay valid while held, whatever the cache evicts meanwhile.
    pub fn all_cells(&self) -> FsResult<Vec<Arc<InodeCell>>> {
        let mut inos: Vec<u64> = self.inodes.iter().map(|c| *c.key()).collect();
        {
            let tree = self.view.tree.read();
            let (start, end) = schema::table_range(schema::TAG_INODE);
            for item in tree.range(&self.pool, &start, end.as_deref()) {
                let (k, _) = item?;
                if let schema::InodeKey::Record(ino) =
                    schema::inode_table_key(&k).map_err(|e| corrupt(e.to_string()))?
                {
                    inos.push(ino);
                }
            }
        }
        inos.sort_unstable();
        inos.dedup();
        let mut out = Vec::with_capacity(inos.len());
        for ino in inos {
            match self.cell(ino) {
                Ok(c) => out.push(c),
                // Reclaimed since the last commit.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Marks every cached inode as changed, so that the next commit writes it (for tools and
    /// tests that change inodes through their cells, around the operations).
    pub fn mark_cached_changed(&self) {
        let inos: Vec<u64> = self.inodes.iter().map(|c| *c.key()).collect();
        self.dirty.lock().inodes.extend(inos);
    }

    /// True if `ino` changed since the last commit (created, changed or reclaimed): the tree
    /// does not have it as it is.
    pub fn changed_since_commit(&self, ino: u64) -> bool {
        self.dirty.lock().inodes.contains(&ino)
    }

    /// Cells in the table now.
    pub fn cached_inodes(&self) -> usize {
        self.inodes.len()
    }

    /// Sets the cache's size in bytes (`-o metadata_cache`): a quarter for tree nodes, the
    /// rest for inodes.
    pub fn set_cache_bytes(&self, bytes: u64) {
        {
            let mut tree = self.view.tree.write();
            *tree = tree.clone().with_cache(node_cache(bytes));
        }
        let cells =
            (inode_cache_bytes(bytes) / CELL_BYTES).clamp(64, usize::MAX as u64 / 2) as usize;
        if self.cache.capacity() != usize::MAX {
            self.cache.capacity.store(cells, Ordering::Relaxed);
        }
        self.evict();
    }

    /// Evicts clean, unused cells, oldest first, while the table is over capacity. Skipped
    /// while a commit runs (it is writing the cells it took out of the dirty set).
    pub(super) fn evict(&self) {
        let capacity = self.cache.capacity();
        if self.inodes.len() <= capacity {
            return;
        }
        let Some(_gate) = self.gate.try_read() else {
            return;
        };
        let dirty = self.dirty.lock();
        // The capacity is for clean cells: changed ones are pinned until the next commit
        // (which comes after DIRTY_COMMIT_INODES of them), and are not looked at.
        let clean = |len: usize| len.saturating_sub(dirty.inodes.len());
        if clean(self.inodes.len()) <= capacity {
            return;
        }
        let mut order = self.cache.order.lock();
        // Each pass looks at a bounded number of candidates; pinned ones go to the back.
        let mut budget = 2 * (clean(self.inodes.len()) - capacity) + 64;
        while clean(self.inodes.len()) > capacity && budget > 0 {
            budget -= 1;
            let Some(ino) = order.pop_front() else {
                break;
            };
            if dirty.inodes.contains(&ino) {
                order.push_back(ino);
                continue;
            }
            let removed = self.inodes.remove_if(&ino, |_, c| {
                Arc::strong_count(c) == 1
                    && Arc::strong_count(&c.inode) == 1
                    && c.opens.load(Ordering::Acquire) == 0
            });
            if removed.is_none() && self.inodes.contains_key(&ino) {
                order.push_back(ino);
            }
        }
        // Numbers of reclaimed inodes linger in the order; drop them when they outnumber
        // the cells.
        if order.len() > 2 * self.inodes.len() + 1024 {
            order.retain(|ino| self.inodes.contains_key(ino));
        }
    }

    /// After a commit: the committed directories' changes are in the tree now.
    pub(super) fn mark_committed(&self, inos: &[u64]) {
        let store: Arc<dyn DirStore> = self.view.clone();
        for ino in inos {
            if let Some(cell) = self.inodes.get(ino).map(|c| c.value().clone()) {
                let mut inode = cell.inode.write();
                if let Body::Dir(d) = &mut inode.body {
                    d.committed_to(*ino, store.clone());
                }
            }
        }
    }
}
