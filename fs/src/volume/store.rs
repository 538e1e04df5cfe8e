//! The metadata tree (format 2): what changed since the last commit, and writing it.
//!
//! The tree on the pool is the state as of the last commit; the log holds every operation
//! since. RAM records *what* those operations changed ([`Dirty`]: inode numbers; a
//! directory holds its own changed entries), so a commit writes exactly that into a copy-on-write transaction of the tree: its
//! cost is what changed, never what exists. The free set is stored in the same tree, one key
//! per free extent, and rewritten per allocation group that changed; since writing the tree
//! itself allocates and frees nodes, the free set is written to a fixpoint (each round only
//! touches nodes the transaction already owns, so it converges in a few rounds).

use std::collections::BTreeSet;

use pfnfs_btree::{KeyValue, Tree, Txn};

use super::*;
use crate::schema::{self, CookieEntry, InodeRecord, InodeTail, NameEntry};

/// What changed since the last commit.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    /// Inodes whose record, extents, xattrs or existence changed.
    pub(crate) inodes: BTreeSet<u64>,
    /// Those of them created since the last commit (the tree has nothing of them).
    pub(crate) fresh: BTreeSet<u64>,
    /// Write every inode and name into an empty tree (the first commit of a pool, an upgrade,
    /// fsck's repaired state).
    pub(crate) rebuild: bool,
}

impl Dirty {
    /// A copy, for a commit to write.
    pub(crate) fn snapshot(&self) -> Dirty {
        Dirty {
            inodes: self.inodes.clone(),
            fresh: self.fresh.clone(),
            rebuild: self.rebuild,
        }
    }

    /// The changes in `committed` are durable: forget them.
    pub(crate) fn forget(&mut self, committed: &Dirty) {
        self.inodes.retain(|ino| !committed.inodes.contains(ino));
        self.fresh.retain(|ino| !committed.fresh.contains(ino));
        if committed.rebuild {
            self.rebuild = false;
        }
    }
}

fn tree_err(e: pfnfs_btree::TreeError) -> FsError {
    match e {
        // A failed read, store or persist keeps the OS's errno.
        pfnfs_btree::TreeError::Pool(p) => p.into(),
        // The allocator's own error: ENOSPC for no free frames, the backing store's errno
        // for no storage behind them.
        pfnfs_btree::TreeError::NoSpace(a) => a.into(),
        pfnfs_btree::TreeError::Fragmented { .. } => no_space(e.to_string()),
        other => corrupt(format!("metadata tree: {other}")),
    }
}

impl From<pfnfs_btree::TreeError> for FsError {
    fn from(e: pfnfs_btree::TreeError) -> FsError {
        tree_err(e)
    }
}

/// The entries of `base` in `[start, end)`.
fn scan(
    base: &Tree,
    pool: &Pool,
    (start, end): (Vec<u8>, Option<Vec<u8>>),
) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
    base.range(pool, &start, end.as_deref())
        .map(|r| r.map_err(FsError::from))
        .collect()
}

/// Makes the keys of `[range)` in the transaction exactly `want` (sorted by key): deletes the
/// keys `base` has there that `want` lacks, puts the keys whose value differs or is new.
fn sync_range(
    txn: &mut Txn<'_>,
    base: &Tree,
    pool: &Pool,
    range: (Vec<u8>, Option<Vec<u8>>),
    want: Vec<(Vec<u8>, Vec<u8>)>,
) -> FsResult<()> {
    let have = if base.root().is_none() {
        Vec::new()
    } else {
        scan(base, pool, range)?
    };
    let mut have = have.into_iter().peekable();
    let mut want = want.into_iter().peekable();
    loop {
        match (have.peek(), want.peek()) {
            (None, None) => return Ok(()),
            (Some(_), None) => {
                let (k, _) = have.next().expect("peeked");
                txn.delete(&k)?;
            }
            (None, Some(_)) => {
                let (k, v) = want.next().expect("peeked");
                txn.put(&k, &v)?;
            }
            (Some((hk, hv)), Some((wk, wv))) => match hk.cmp(wk) {
                std::cmp::Ordering::Less => {
                    let (k, _) = have.next().expect("peeked");
                    txn.delete(&k)?;
                }
                std::cmp::Ordering::Greater => {
                    let (k, v) = want.next().expect("peeked");
                    txn.put(&k, &v)?;
                }
                std::cmp::Ordering::Equal => {
                    if hv != wv {
                        txn.put(wk, wv)?;
                    }
                    have.next();
                    want.next();
                }
            },
        }
    }
}

/// The inode record of an inode in RAM.
pub(crate) fn record_of(inode: &Inode) -> InodeRecord {
    let tail = match &inode.body {
        Body::Dir(d) => InodeTail::Dir {
            parent: d.parent,
            next_cookie: d.next_cookie(),
            entries: d.len() as u64,
        },
        Body::Symlink(t) => InodeTail::Symlink(t.clone()),
        Body::Inline(b) => InodeTail::Inline(b.clone()),
        Body::File(_) | Body::Special => InodeTail::None,
    };
    InodeRecord {
        attr: inode.attr.clone(),
        tail,
    }
}

impl Volume {
    /// Writes inode `ino` as RAM has it (or its absence) into the transaction: its record,
    /// extents, xattrs and orphan entry.
    ///
    /// `fresh`: the inode is not in `base` (created since the last commit), so there is
    /// nothing of it to read back or delete. `orphans`: the orphan list as committed.
    pub(super) fn store_inode(
        &self,
        txn: &mut Txn<'_>,
        base: &Tree,
        ino: u64,
        fresh: bool,
        orphans: &BTreeSet<u64>,
    ) -> FsResult<()> {
        let pool = &*self.pool;
        // The base's entries of this inode, for a diff (none for a fresh one).
        let base = if fresh { &Tree::empty() } else { base };
        let cell = self.inodes.get(&ino).map(|c| c.value().clone());
        let Some(cell) = cell else {
            if fresh {
                return Ok(());
            }
            if orphans.contains(&ino) {
                txn.delete(&schema::orphan_key(ino))?;
            }
            // The record, extents and xattrs: one prefix, one scan.
            let had = scan(base, pool, schema::prefix_range(schema::TAG_INODE, ino))?;
            let was_dir = had
                .first()
                .filter(|(k, _)| k.len() == 9)
                .and_then(|(_, v)| InodeRecord::decode(v).ok())
                .is_some_and(|r| matches!(r.tail, InodeTail::Dir { .. }));
            for (k, _) in had {
                txn.delete(&k)?;
            }
            // A directory reclaimed after rmdir had no entries, but those it lost since the
            // last commit went with its cell: delete what the tree still lists.
            if was_dir {
                for tag in [schema::TAG_NAME, schema::TAG_COOKIE] {
                    sync_range(txn, base, pool, schema::prefix_range(tag, ino), Vec::new())?;
                }
            }
            return Ok(());
        };
        let inode = cell.inode.read();
        txn.put(&schema::inode_key(ino), &record_of(&inode).encode())?;
        match (inode.attr.nlink == 0, orphans.contains(&ino)) {
            (true, false) => txn.put(&schema::orphan_key(ino), &[])?,
            (false, true) => {
                txn.delete(&schema::orphan_key(ino))?;
            }
            _ => {}
        }
        let extents: Vec<(Vec<u8>, Vec<u8>)> = match &inode.body {
            Body::File(map) => map
                .iter()
                .map(|e| {
                    (
                        schema::extent_key(ino, e.file_frame),
                        schema::encode_extent(&e),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        sync_range(
            txn,
            base,
            pool,
            schema::inode_sub_range(ino, schema::SUB_EXTENT),
            extents,
        )?;
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = inode
            .xattrs
            .iter()
            .map(|(k, v)| (schema::xattr_key(ino, k), v.clone()))
            .collect();
        sync_range(
            txn,
            base,
            pool,
            schema::inode_sub_range(ino, schema::SUB_XATTR),
            xattrs,
        )?;
        if let Body::Dir(d) = &inode.body {
            self.store_dir_changes(txn, ino, d)?;
        }
        Ok(())
    }

    /// Writes what changed in directory `dir` since the last commit into both directory
    /// indexes (every entry, for a directory held whole in RAM).
    fn store_dir_changes(&self, txn: &mut Txn<'_>, dir: u64, d: &Directory) -> FsResult<()> {
        let (names, cookies) = d.changes();
        for (name, cookie) in names {
            let key = schema::name_key(dir, name);
            let entry = cookie.and_then(|c| cookies.get(&c).cloned().flatten().map(|e| (c, e)));
            match entry {
                Some((cookie, e)) => {
                    let n = NameEntry {
                        cookie,
                        ino: e.ino,
                        kind: e.kind,
                    };
                    txn.put(&key, &n.encode())?;
                }
                None => {
                    txn.delete(&key)?;
                }
            }
        }
        for (cookie, e) in cookies {
            let key = schema::cookie_key(dir, *cookie);
            match e {
                Some(e) => {
                    let c = CookieEntry {
                        ino: e.ino,
                        kind: e.kind,
                        name: e.name.clone(),
                    };
                    txn.put(&key, &c.encode())?;
                }
                None => {
                    txn.delete(&key)?;
                }
            }
        }
        Ok(())
    }

    /// Writes every inode in RAM into an empty tree (a fresh pool, fsck's repaired state, an
    /// upgrade: volumes that hold every inode, and every directory whole).
    pub(super) fn store_everything(&self, txn: &mut Txn<'_>, base: &Tree) -> FsResult<()> {
        let mut inos: Vec<u64> = self.inodes.iter().map(|c| *c.key()).collect();
        inos.sort_unstable();
        for ino in inos {
            self.store_inode(txn, base, ino, true, &BTreeSet::new())?;
        }
        Ok(())
    }

    /// Writes the free set of every allocation group that changed, to a fixpoint: frames
    /// `pending` (the old tree's nodes this commit replaces, frames in doubt) count as free,
    /// as they will be once the commit is durable.
    pub(super) fn store_free_set(
        &self,
        txn: &mut Txn<'_>,
        base: &Tree,
        extra_free: &[PfnRange],
        all_groups: bool,
    ) -> FsResult<()> {
        let alloc = &self.alloc;
        let mut groups: BTreeSet<usize> = if all_groups {
            (0..alloc.group_count()).collect()
        } else {
            alloc.take_dirty_groups().into_iter().collect()
        };
        let groups_of = |ranges: &[PfnRange], groups: &mut BTreeSet<usize>| {
            for r in ranges {
                let (Some(a), Some(b)) = (
                    alloc.group_of(r.start),
                    alloc.group_of(Pfn(r.end().0.saturating_sub(1))),
                ) else {
                    continue;
                };
                groups.extend(a..=b);
            }
        };
        groups_of(extra_free, &mut groups);
        let mut freed_seen = 0usize;
        // What this commit wrote for each group so far (the base tree's keys until then).
        let mut written: BTreeMap<usize, Vec<KeyValue>> = BTreeMap::new();
        for _round in 0..64 {
            let freed_now = txn.freed().len();
            groups_of(&txn.freed()[freed_seen..freed_now], &mut groups);
            freed_seen = freed_now;
            groups.extend(alloc.take_dirty_groups());
            if groups.is_empty() {
                return Ok(());
            }
            for g in std::mem::take(&mut groups) {
                let Some(span) = alloc.group_range(g) else {
                    continue;
                };
                let mut free = alloc.group_free_extents(g);
                for r in txn.freed().iter().chain(extra_free) {
                    if let Some(piece) = intersect(r, &span) {
                        free.push(piece);
                    }
                }
                let bad = self.pool.bad_frames();
                let want: Vec<(Vec<u8>, Vec<u8>)> = coalesce(free)
                    .into_iter()
                    .flat_map(|r| bad.good_parts(r))
                    .map(|r| (schema::free_key(r.start), schema::encode_free(r.len)))
                    .collect();
                let range = (
                    schema::free_key(span.start),
                    Some(schema::free_key(span.end())),
                );
                // Against what this commit wrote already, if an earlier round wrote the group.
                let have = match written.remove(&g) {
                    Some(h) => h,
                    None => scan(base, &self.pool, range)?,
                };
                sync_lists(txn, have, &want)?;
                written.insert(g, want);
            }
        }
        Err(corrupt(
            "the free set did not settle while committing metadata",
        ))
    }
}

impl Volume {
    /// What the bad-frame table holds: the pool's bad frames inside the data region.
    fn bad_table(&self) -> Vec<PfnRange> {
        let data = self.pool.data_region();
        self.pool
            .bad_frames()
            .list()
            .into_iter()
            .filter_map(|r| intersect(&r, &data))
            .collect()
    }

    /// Entries of the bad-frame table (what the superblock's bad-frames flag says).
    pub(super) fn bad_table_entries(&self) -> usize {
        self.bad_table().len()
    }

    /// Writes the pool's bad-frame list into the bad-frame table where it differs (one
    /// descent when it does not: the list is short and rarely changes). Only data frames are
    /// kept: a bad frame of the header or the log cannot be avoided by allocating elsewhere,
    /// and if its memory still fails at the next mount, that mount meets it again.
    pub(super) fn store_bad_set(&self, txn: &mut Txn<'_>, base: &Tree) -> FsResult<()> {
        let want: Vec<(Vec<u8>, Vec<u8>)> = self
            .bad_table()
            .into_iter()
            .map(|r| (schema::bad_key(r.start), schema::encode_bad(r.len)))
            .collect();
        let have = scan(base, &self.pool, schema::table_range(schema::TAG_BAD))?;
        sync_lists(txn, have, &want)
    }
}

/// Turns the keys `have` into `want` in the transaction (both sorted by key).
fn sync_lists(
    txn: &mut Txn<'_>,
    have: Vec<(Vec<u8>, Vec<u8>)>,
    want: &[(Vec<u8>, Vec<u8>)],
) -> FsResult<()> {
    let want_map: BTreeMap<&[u8], &[u8]> = want
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let have_map: BTreeMap<Vec<u8>, Vec<u8>> = have.into_iter().collect();
    for k in have_map.keys() {
        if !want_map.contains_key(k.as_slice()) {
            txn.delete(k)?;
        }
    }
    for (k, v) in want {
        if have_map.get(k) != Some(v) {
            txn.put(k, v)?;
        }
    }
    Ok(())
}

/// The frames `a` and `b` share.
fn intersect(a: &PfnRange, b: &PfnRange) -> Option<PfnRange> {
    let start = a.start.max(b.start);
    let end = a.end().min(b.end());
    (start < end)
        .then(|| PfnRange::from_bounds(start, end))
        .flatten()
}

/// Sorts ranges and merges touching ones (they must not overlap).
pub(super) fn coalesce(mut ranges: Vec<PfnRange>) -> Vec<PfnRange> {
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
