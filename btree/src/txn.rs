//! [`Txn`]: a copy-on-write write transaction against a committed [`Tree`].
//!
//! # How a change is made
//!
//! Every node on the path of a change is made *dirty*: a committed node at `P` is decoded,
//! given a new frame (allocated with goal `P + 1`) and kept in RAM under that new PFN, and `P`
//! is listed in [`Txn::freed`]; a node already dirty is changed in place. Since a dirty node
//! knows its final PFN from the start, parents always point at PFNs, and nothing but
//! [`Txn::write`] ever stores to the pool. Committed frames are never written: the base tree
//! stays readable whatever happens to the transaction.
//!
//! Inserts split a node that no longer fits in two (a balanced cut; one frame always
//! suffices for two entries of maximal size, so two halves always fit; an entry appended to
//! the rightmost node of its level cuts as far right as fits instead, so that ascending keys
//! fill their nodes). Deletes merge a node
//! whose entries take less than [`MIN_FILL`] bytes with a sibling when the two fit in one
//! frame, and otherwise redistribute their entries evenly; an empty node is dropped, a root
//! branch with one child is replaced by it, an empty root leaf leaves the empty tree.
//!
//! # Frames
//!
//! Each node or overflow run created here is held by its own [`Frames`] guard until `write`,
//! which merges them into the one guard it returns. A frame created in this transaction and
//! then dropped (a node merged away, a value replaced twice) is given back at once: it was
//! never committed. A committed frame that is replaced goes to `freed` and is *not* given
//! back: the caller frees it once the superblock naming the new root is durable.
//!
//! # Errors
//!
//! A failure in the middle of `put` or `delete` (no space, a damaged committed node) leaves
//! the transaction half changed: it is *poisoned*, every later call returns
//! [`TreeError::Poisoned`], and dropping it gives every allocated frame back.

use std::collections::HashMap;
use std::sync::Arc;

use pfnfs_alloc::{ExtentAllocator, FRAME_SIZE, Frames, Pfn, PfnRange, Pool};

use crate::Tree;
use crate::cache::NodeCache;
use crate::error::TreeError;
use crate::format::{
    Entry, INLINE_VALUE_MAX, MAX_HEIGHT, MAX_KEY, MAX_OVERFLOW_RANGES, MAX_VALUE, MIN_FILL,
    NODE_CAPACITY, Node, OverflowRef, Value, encode_overflow, overflow_frames,
};
use crate::read::{
    self, KeyValue, Range, Store, child_bounds, child_index, load_from_pool, read_overflow,
};

/// A write transaction (module docs). Not shared between threads; it borrows the pool and the
/// allocator for its whole life.
pub struct Txn<'a> {
    pool: &'a Pool,
    alloc: &'a ExtentAllocator,
    data: PfnRange,
    generation: u64,
    root: Option<Pfn>,
    height: u8,
    /// Nodes created in this transaction, by PFN.
    dirty: HashMap<u64, Node>,
    /// Overflow values created in this transaction, by the run's first PFN.
    runs: HashMap<u64, Vec<u8>>,
    /// The guard of every node and run created in this transaction, by first PFN.
    owned: HashMap<u64, Frames<'a>>,
    allocated: Vec<PfnRange>,
    freed: Vec<PfnRange>,
    /// Where the last allocation ended: the goal of the next overflow run.
    last_end: Option<Pfn>,
    poisoned: bool,
    /// The base tree's node cache: committed nodes are read through it, and the new tree
    /// gets it.
    cache: Option<Arc<NodeCache>>,
}

/// What [`Txn::write`] returns.
#[derive(Debug)]
pub struct Written<'a> {
    /// The new tree (its nodes are written, flushed and fenced).
    pub tree: Tree,
    /// Every frame the transaction allocated and the new tree uses: given back if dropped;
    /// commit it once the superblock naming `tree` is durable.
    pub frames: Frames<'a>,
    /// Committed frames of the base tree that the new tree no longer uses: free them once
    /// the superblock naming `tree` is durable.
    pub freed: Vec<PfnRange>,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("generation", &self.generation)
            .field("root", &self.root)
            .field("height", &self.height)
            .field("dirty", &self.dirty.len())
            .field("allocated", &self.allocated.len())
            .field("freed", &self.freed.len())
            .finish()
    }
}

fn check_key(key: &[u8]) -> Result<(), TreeError> {
    if key.is_empty() {
        return Err(TreeError::KeyEmpty);
    }
    if key.len() > MAX_KEY {
        return Err(TreeError::KeyTooLong { len: key.len() });
    }
    Ok(())
}

/// A split: the new right sibling's separator and PFN.
type Split = Option<(Vec<u8>, Pfn)>;

impl<'a> Txn<'a> {
    /// A transaction changing `base`, allocating from `alloc`; nodes and runs it writes carry
    /// `generation`.
    pub fn new(
        base: &Tree,
        pool: &'a Pool,
        alloc: &'a ExtentAllocator,
        generation: u64,
    ) -> Txn<'a> {
        Txn {
            pool,
            alloc,
            data: pool.data_region(),
            generation,
            root: base.root(),
            height: base.height(),
            dirty: HashMap::new(),
            runs: HashMap::new(),
            owned: HashMap::new(),
            allocated: Vec::new(),
            freed: Vec::new(),
            last_end: None,
            poisoned: false,
            cache: base.cache().cloned(),
        }
    }

    /// The tree as this transaction has it now (not yet written: for inspection only).
    pub fn tree(&self) -> Tree {
        Tree::from_parts(self.root, self.height, self.cache.clone())
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), TreeError> {
        check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(TreeError::ValueTooLong { len: value.len() });
        }
        self.guard(|t| t.put_inner(key, value))
    }

    /// Removes `key`; true if it was there.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, TreeError> {
        check_key(key)?;
        if self.poisoned {
            return Err(TreeError::Poisoned);
        }
        // Whether it is there, read in place, without reading an overflow value.
        if !read::contains(self, self.root, self.height, key)? {
            return Ok(false);
        }
        self.guard(|t| t.delete_inner(key))?;
        Ok(true)
    }

    /// The value of `key`, seeing this transaction's changes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TreeError> {
        if self.poisoned {
            return Err(TreeError::Poisoned);
        }
        read::get(self, self.root, self.height, key)
    }

    /// As [`Tree::range`], seeing this transaction's changes.
    pub fn range<'b>(&'b self, start: &[u8], end: Option<&[u8]>) -> Range<'b> {
        Range::on_txn(self, self.root, self.height, start, end).poisoned(self.poisoned)
    }

    /// As [`Tree::floor`], seeing this transaction's changes.
    pub fn floor(&self, key: &[u8]) -> Result<Option<KeyValue>, TreeError> {
        if self.poisoned {
            return Err(TreeError::Poisoned);
        }
        read::floor(self, self.root, self.height, key)
    }

    /// Committed frames replaced so far (nodes and overflow runs of the base tree).
    pub fn freed(&self) -> &[PfnRange] {
        &self.freed
    }

    /// Frames allocated so far and still used by the transaction's tree.
    pub fn allocated(&self) -> &[PfnRange] {
        &self.allocated
    }

    /// Writes every dirty node and overflow run into its frames, flushes them, fences once,
    /// and returns the new tree with its frames (see [`Written`]). On error everything
    /// allocated is given back.
    pub fn write(self) -> Result<Written<'a>, TreeError> {
        if self.poisoned {
            return Err(TreeError::Poisoned);
        }
        let frames: Vec<PfnRange> = self
            .owned
            .values()
            .flat_map(|g| g.ranges().iter().copied())
            .collect();
        self.alloc
            .ensure_backed(&frames)
            .map_err(TreeError::NoSpace)?;
        let mut nodes: Vec<(&u64, &Node)> = self.dirty.iter().collect();
        nodes.sort_unstable_by_key(|(p, _)| **p);
        for (&pfn, node) in nodes {
            let frame = node.encode(self.generation);
            if cfg!(debug_assertions) {
                // Pair assertion: what we write decodes to what we meant.
                let again = Node::decode(&frame, pfn, self.data)?;
                assert_eq!(&again, node, "btree: node {pfn:#x} does not round-trip");
            }
            let at = Pfn(pfn).byte_offset();
            self.pool.write(at, &frame)?;
            self.pool.flush(at, FRAME_SIZE)?;
        }
        for (first, value) in &self.runs {
            let bytes = encode_overflow(value, self.generation);
            let guard = self
                .owned
                .get(first)
                .ok_or_else(|| TreeError::corrupt(*first, "overflow run without frames"))?;
            let mut done = 0usize;
            for r in guard.ranges() {
                let len = r.len_bytes() as usize;
                let at = r.start.byte_offset();
                self.pool.write(at, &bytes[done..done + len])?;
                self.pool.flush(at, r.len_bytes())?;
                done += len;
            }
        }
        self.pool.fence()?;
        let mut frames = Frames::none(self.alloc);
        let Txn {
            owned,
            freed,
            root,
            height,
            cache,
            ..
        } = self;
        for (_, g) in owned {
            frames.absorb(g);
        }
        Ok(Written {
            tree: Tree::from_parts(root, height, cache),
            frames,
            freed,
        })
    }

    // ----- internals ----------------------------------------------------------------------

    fn guard<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, TreeError>,
    ) -> Result<R, TreeError> {
        if self.poisoned {
            return Err(TreeError::Poisoned);
        }
        let r = f(self);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// Allocates `n` frames near `goal`, held by a guard kept under the first PFN.
    fn alloc_frames(&mut self, n: u64, goal: Option<Pfn>) -> Result<Vec<PfnRange>, TreeError> {
        // Storage behind the frames is made to exist in `write`, before anything is stored:
        // a transaction that fails before (a damaged node read on the way) touches nothing.
        let guard = self
            .alloc
            .allocate_unbacked(n, goal)
            .map_err(TreeError::NoSpace)?;
        let ranges = guard.ranges().to_vec();
        let first = ranges
            .first()
            .ok_or_else(|| TreeError::corrupt(0, "allocator returned no frame"))?;
        self.owned.insert(first.start.0, guard);
        self.allocated.extend_from_slice(&ranges);
        self.last_end = ranges.last().map(PfnRange::end);
        Ok(ranges)
    }

    fn alloc_node(&mut self, goal: Pfn) -> Result<Pfn, TreeError> {
        let ranges = self.alloc_frames(1, goal.checked_add(1))?;
        Ok(ranges[0].start)
    }

    /// Drops a node or run whose first frame is `first`: given back if this transaction
    /// created it, else listed as freed.
    fn release(&mut self, first: u64, ranges: &[PfnRange]) {
        if let Some(guard) = self.owned.remove(&first) {
            let mine = guard.ranges().to_vec();
            drop(guard);
            self.allocated.retain(|r| !mine.contains(r));
        } else {
            self.freed.extend_from_slice(ranges);
        }
    }

    fn release_node(&mut self, pfn: Pfn) {
        self.dirty.remove(&pfn.0);
        self.release(pfn.0, &[PfnRange { start: pfn, len: 1 }]);
    }

    fn release_value(&mut self, v: &Value) {
        if let Value::Overflow(r) = v {
            let first = r.first().0;
            self.runs.remove(&first);
            self.release(first, &r.ranges);
        }
    }

    /// Takes the node at `pfn` out for changing: a dirty one as it is, a committed one
    /// decoded (and checked) into a new frame. The caller puts it back under the returned PFN.
    fn cow(
        &mut self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
    ) -> Result<(Pfn, Node), TreeError> {
        if let Some(node) = self.dirty.remove(&pfn.0) {
            return Ok((pfn, node));
        }
        let node = load_from_pool(self.pool_store(), pfn, level, lo, hi)?;
        let new = self.alloc_node(pfn)?;
        self.freed.push(PfnRange { start: pfn, len: 1 });
        Ok((new, node))
    }

    /// Splits `node` (at `me`) in two if it does not fit; the right half gets a new frame.
    /// `append`: the entry that made it overflow went to the end of the rightmost node of its
    /// level (keys arriving in ascending order): the left half then keeps all it can hold, so
    /// that sequential inserts fill nodes instead of leaving them half full.
    fn split_if_needed(
        &mut self,
        me: Pfn,
        node: &mut Node,
        append: bool,
    ) -> Result<Split, TreeError> {
        if node.fits() {
            return Ok(None);
        }
        let k = split_point(&node.entries, append)
            .ok_or_else(|| TreeError::corrupt(me.0, "node cannot be split in two (entry sizes)"))?;
        let mut right = node.entries.split_off(k);
        let sep = right[0].key.clone();
        if node.level > 0 {
            right[0].key.clear();
        }
        let rp = self.alloc_node(me)?;
        self.dirty.insert(
            rp.0,
            Node {
                level: node.level,
                entries: right,
            },
        );
        Ok(Some((sep, rp)))
    }

    /// Makes a new root over `left` and the split-off `right`.
    fn grow(&mut self, left: Pfn, split: (Vec<u8>, Pfn)) -> Result<(), TreeError> {
        if self.height >= MAX_HEIGHT {
            return Err(TreeError::TooTall);
        }
        let root = self.alloc_node(left)?;
        self.dirty.insert(
            root.0,
            Node {
                level: self.height,
                entries: vec![
                    Entry {
                        key: Vec::new(),
                        value: Value::Child(left),
                    },
                    Entry {
                        key: split.0,
                        value: Value::Child(split.1),
                    },
                ],
            },
        );
        self.root = Some(root);
        self.height += 1;
        Ok(())
    }

    fn put_inner(&mut self, key: &[u8], value: &[u8]) -> Result<(), TreeError> {
        let value = if value.len() > INLINE_VALUE_MAX {
            let n = overflow_frames(value.len());
            let ranges = self.alloc_frames(n, self.last_end)?;
            if ranges.len() > MAX_OVERFLOW_RANGES {
                self.release(ranges[0].start.0, &ranges);
                return Err(TreeError::Fragmented {
                    len_bytes: value.len(),
                    ranges: ranges.len(),
                });
            }
            self.runs.insert(ranges[0].start.0, value.to_vec());
            Value::Overflow(OverflowRef {
                len: value.len() as u32,
                crc: crc32c::crc32c(value),
                ranges,
            })
        } else {
            Value::Inline(value.to_vec())
        };
        let Some(root) = self.root else {
            let pfn = self.alloc_frames(1, None)?[0].start;
            self.dirty.insert(
                pfn.0,
                Node {
                    level: 0,
                    entries: vec![Entry {
                        key: key.to_vec(),
                        value,
                    }],
                },
            );
            self.root = Some(pfn);
            self.height = 1;
            return Ok(());
        };
        let (new_root, split) = self.put_rec(root, self.height - 1, None, None, key, value)?;
        self.root = Some(new_root);
        if let Some(split) = split {
            self.grow(new_root, split)?;
        }
        Ok(())
    }

    fn put_rec(
        &mut self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        key: &[u8],
        value: Value,
    ) -> Result<(Pfn, Split), TreeError> {
        let (me, mut node) = self.cow(pfn, level, lo, hi)?;
        let r = self.put_in(&mut node, lo, hi, key, value);
        // Put the node back even on error, so that its frame stays accounted for.
        let split = match r {
            Ok(at) => {
                let append = hi.is_none() && at + 1 == node.entries.len();
                self.split_if_needed(me, &mut node, append)
            }
            Err(e) => Err(e),
        };
        self.dirty.insert(me.0, node);
        Ok((me, split?))
    }

    /// Puts `key` below `node`; returns the index of the entry that changed or was added.
    fn put_in(
        &mut self,
        node: &mut Node,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        key: &[u8],
        value: Value,
    ) -> Result<usize, TreeError> {
        if node.level == 0 {
            return Ok(
                match node.entries.binary_search_by(|e| e.key.as_slice().cmp(key)) {
                    Ok(i) => {
                        let old = std::mem::replace(&mut node.entries[i].value, value);
                        self.release_value(&old);
                        i
                    }
                    Err(i) => {
                        node.entries.insert(
                            i,
                            Entry {
                                key: key.to_vec(),
                                value,
                            },
                        );
                        i
                    }
                },
            );
        }
        let i = child_index(node, key);
        let (clo, chi) = child_bounds(node, i, lo, hi);
        let child = node.entries[i].value.child();
        let (new_child, split) = self.put_rec(child, node.level - 1, clo, chi, key, value)?;
        node.entries[i].value = Value::Child(new_child);
        if let Some((sep, right)) = split {
            node.entries.insert(
                i + 1,
                Entry {
                    key: sep,
                    value: Value::Child(right),
                },
            );
            return Ok(i + 1);
        }
        Ok(i)
    }

    fn delete_inner(&mut self, key: &[u8]) -> Result<(), TreeError> {
        let Some(root) = self.root else {
            return Ok(());
        };
        let (new_root, split) = self.delete_rec(root, self.height - 1, None, None, key)?;
        self.root = Some(new_root);
        if let Some(split) = split {
            return self.grow(new_root, split);
        }
        // Collapse: an empty root leaf leaves the empty tree, a root branch with one child
        // hands over to it.
        while let Some(root) = self.root {
            let (level, count, only) = match self.dirty.get(&root.0) {
                Some(n) => (
                    n.level,
                    n.entries.len(),
                    n.entries.first().map(|e| e.value.child()),
                ),
                None => break,
            };
            if count == 0 {
                self.release_node(root);
                self.root = None;
                self.height = 0;
            } else if level > 0 && count == 1 {
                self.release_node(root);
                self.root = only;
                self.height -= 1;
            } else {
                break;
            }
        }
        Ok(())
    }

    fn delete_rec(
        &mut self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        key: &[u8],
    ) -> Result<(Pfn, Split), TreeError> {
        let (me, mut node) = self.cow(pfn, level, lo, hi)?;
        let r = self.delete_in(me, &mut node, lo, hi, key);
        let split = match r {
            Ok(()) => self.split_if_needed(me, &mut node, false),
            Err(e) => Err(e),
        };
        self.dirty.insert(me.0, node);
        Ok((me, split?))
    }

    fn delete_in(
        &mut self,
        me: Pfn,
        node: &mut Node,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        key: &[u8],
    ) -> Result<(), TreeError> {
        if node.level == 0 {
            let i = node
                .entries
                .binary_search_by(|e| e.key.as_slice().cmp(key))
                .map_err(|_| TreeError::corrupt(me.0, "key to delete vanished"))?;
            let e = node.entries.remove(i);
            self.release_value(&e.value);
            return Ok(());
        }
        let i = child_index(node, key);
        let (clo, chi) = child_bounds(node, i, lo, hi);
        let child = node.entries[i].value.child();
        let (new_child, split) = self.delete_rec(child, node.level - 1, clo, chi, key)?;
        node.entries[i].value = Value::Child(new_child);
        if let Some((sep, right)) = split {
            node.entries.insert(
                i + 1,
                Entry {
                    key: sep,
                    value: Value::Child(right),
                },
            );
            return Ok(());
        }
        self.rebalance(node, i, lo, hi)
    }

    /// After a delete below child `i` of branch `node`: drops the child if empty, merges it
    /// with a sibling or evens out their entries if it is underfull.
    fn rebalance(
        &mut self,
        node: &mut Node,
        i: usize,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
    ) -> Result<(), TreeError> {
        let child = node.entries[i].value.child();
        let (count, size) = match self.dirty.get(&child.0) {
            Some(c) => (c.entries.len(), c.payload_len()),
            None => return Ok(()),
        };
        if count == 0 {
            node.entries.remove(i);
            self.release_node(child);
            if let Some(first) = node.entries.first_mut() {
                first.key.clear();
            }
            return Ok(());
        }
        if size >= MIN_FILL || node.entries.len() < 2 {
            return Ok(());
        }
        let (l, r) = if i + 1 < node.entries.len() {
            (i, i + 1)
        } else {
            (i - 1, i)
        };
        let child_level = node.level - 1;
        let (lp, mut left) = {
            let (clo, chi) = child_bounds(node, l, lo, hi);
            self.cow(node.entries[l].value.child(), child_level, clo, chi)?
        };
        let taken = {
            let (clo, chi) = child_bounds(node, r, lo, hi);
            self.cow(node.entries[r].value.child(), child_level, clo, chi)
        };
        let (rp, right) = match taken {
            Ok(x) => x,
            Err(e) => {
                self.dirty.insert(lp.0, left);
                node.entries[l].value = Value::Child(lp);
                return Err(e);
            }
        };
        let sep = node.entries[r].key.clone();
        let mut all = std::mem::take(&mut left.entries);
        let mut right_entries = right.entries;
        if child_level > 0 {
            right_entries[0].key = sep;
        }
        all.extend(right_entries);
        let total: usize = all.iter().map(Entry::encoded_len).sum();
        node.entries[l].value = Value::Child(lp);
        if total <= NODE_CAPACITY {
            left.entries = all;
            self.dirty.insert(lp.0, left);
            node.entries.remove(r);
            self.release_node(rp);
            return Ok(());
        }
        let k = split_point(&all, false);
        let Some(k) = k else {
            // Cannot happen (both came from fitting nodes); keep the accounting intact.
            left.entries = all;
            self.dirty.insert(lp.0, left);
            self.dirty.insert(
                rp.0,
                Node {
                    level: child_level,
                    entries: Vec::new(),
                },
            );
            return Err(TreeError::corrupt(lp.0, "siblings cannot be rebalanced"));
        };
        let mut new_right = all.split_off(k);
        let new_sep = new_right[0].key.clone();
        if child_level > 0 {
            new_right[0].key.clear();
        }
        left.entries = all;
        self.dirty.insert(lp.0, left);
        self.dirty.insert(
            rp.0,
            Node {
                level: child_level,
                entries: new_right,
            },
        );
        node.entries[r] = Entry {
            key: new_sep,
            value: Value::Child(rp),
        };
        Ok(())
    }
}

/// Where to cut `entries` so that both halves fit in a node: as even as possible, or with
/// `append` as much as possible on the left.
fn split_point(entries: &[Entry], append: bool) -> Option<usize> {
    let total: usize = entries.iter().map(Entry::encoded_len).sum();
    let mut left = 0usize;
    let mut best: Option<(usize, usize)> = None;
    for (k, e) in entries
        .iter()
        .enumerate()
        .take(entries.len().saturating_sub(1))
    {
        left += e.encoded_len();
        let right = total - left;
        if left <= NODE_CAPACITY && right <= NODE_CAPACITY {
            let skew = if append { right } else { left.abs_diff(right) };
            if best.is_none_or(|(_, s)| skew < s) {
                best = Some((k + 1, skew));
            }
        }
    }
    best.map(|(k, _)| k)
}

impl Store for Txn<'_> {
    fn pool(&self) -> &Pool {
        self.pool
    }

    fn data(&self) -> PfnRange {
        self.data
    }

    fn cache(&self) -> Option<&NodeCache> {
        self.cache.as_deref()
    }

    fn dirty_node(&self, pfn: Pfn) -> Option<&Node> {
        self.dirty.get(&pfn.0)
    }

    fn value(&self, v: &Value) -> Result<Vec<u8>, TreeError> {
        match v {
            Value::Inline(b) => Ok(b.clone()),
            Value::Overflow(r) => match self.runs.get(&r.first().0) {
                Some(bytes) => Ok(bytes.clone()),
                None => read_overflow(self.pool, r),
            },
            Value::Child(p) => Err(TreeError::corrupt(p.0, "a child where a value should be")),
        }
    }
}
