//! Reading a tree: lookups, the range cursor, floor, and the full walks of `frames`/`check`.
//!
//! Everything here goes through a `Store`: the committed tree on the pool (`PoolStore`) or
//! a transaction, which answers from its dirty nodes first. Every node read from the pool is
//! checked with all checks of [`NodeView::parse`] (those of [`Node::decode`]), then against
//! what its parent says of it: its level (exactly one below the parent's, so any path is at
//! most `height` nodes long and a child pointing back at an ancestor is caught) and the key
//! bounds the parent's separators give it (`lo <= key < hi`).
//!
//! Lookups, floor and the range cursor read nodes in place (`NodeRef` over a frame
//! buffer): nothing is allocated while descending or skipping entries, only the keys and
//! values returned are copied out. `get` and `floor` read into frame buffers on the stack
//! (one per level of a floor's descent); a [`Range`] holds one frame buffer per level and
//! refills it. The separators bounding a node are copied into fixed buffers (`Bound`).
//! Only the walks and a transaction's copy-on-write build whole [`Node`]s.

use std::borrow::Cow;

use pfnfs_alloc::{FRAME_SIZE, Pfn, PfnRange, Pool};

use crate::cache::NodeCache;
use crate::error::TreeError;
use crate::format::{MAX_KEY, NODE_BYTES, Node, NodeView, OverflowRef, Value, decode_overflow};

/// A key and its value, as reads return them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Where nodes and overflow values come from.
pub(crate) trait Store {
    /// The pool the committed nodes are read from.
    fn pool(&self) -> &Pool;
    /// The pool's data region: every node and overflow frame lies in it.
    fn data(&self) -> PfnRange;
    /// The node at `pfn` if the store holds it in RAM (a transaction's dirty node); it is
    /// taken as it is, unchecked (it was built, not read).
    fn dirty_node(&self, pfn: Pfn) -> Option<&Node>;
    /// The bytes of a leaf value.
    fn value(&self, v: &Value) -> Result<Vec<u8>, TreeError>;
    /// Checked node frames kept across reads, if the tree has a cache.
    fn cache(&self) -> Option<&NodeCache>;

    /// Where committed nodes are read from: the pool, its data region and the cache.
    fn pool_store(&self) -> PoolStore<'_> {
        PoolStore {
            pool: self.pool(),
            data: self.data(),
            cache: self.cache(),
        }
    }

    /// The node at `pfn`, built, checked to be at `level` with keys in `[lo, hi)`.
    fn load(
        &self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
    ) -> Result<Cow<'_, Node>, TreeError> {
        match self.dirty_node(pfn) {
            Some(n) => Ok(Cow::Borrowed(n)),
            None => load_from_pool(self.pool_store(), pfn, level, lo, hi).map(Cow::Owned),
        }
    }

    /// The node at `pfn` read in place, read into `frame` ([`NODE_BYTES`]) if it comes from
    /// the pool, with every check of [`Store::load`].
    fn node<'n>(
        &'n self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        frame: &'n mut [u8],
    ) -> Result<NodeRef<'n>, TreeError> {
        match self.dirty_node(pfn) {
            Some(n) => NodeRef::dirty(pfn, n),
            None => read_node(self.pool_store(), pfn, level, lo, hi, frame).map(NodeRef::Frame),
        }
    }

    /// The bytes of the value of entry `i` of leaf `node`.
    fn value_at(&self, node: NodeRef<'_>, i: usize) -> Result<Vec<u8>, TreeError> {
        match node {
            NodeRef::Frame(view) => match view.inline_value(i) {
                Some(bytes) => Ok(bytes.to_vec()),
                None => self.value(&view.value(i, self.data())?),
            },
            NodeRef::Dirty(n) => self.value(&n.entries[i].value),
        }
    }
}

/// A node as reads see it: a checked frame read in place, or a transaction's dirty node.
#[derive(Clone, Copy)]
pub(crate) enum NodeRef<'n> {
    Frame(NodeView<'n>),
    Dirty(&'n Node),
}

impl<'n> NodeRef<'n> {
    /// A dirty node; `Corrupt` for a branch without entries (never left by a finished
    /// change), so that no read indexes an empty branch.
    fn dirty(pfn: Pfn, node: &'n Node) -> Result<NodeRef<'n>, TreeError> {
        if node.level > 0 && node.entries.is_empty() {
            return Err(TreeError::corrupt(pfn.0, "branch without entries"));
        }
        Ok(NodeRef::Dirty(node))
    }

    fn level(self) -> u8 {
        match self {
            NodeRef::Frame(v) => v.level(),
            NodeRef::Dirty(n) => n.level,
        }
    }

    fn count(self) -> usize {
        match self {
            NodeRef::Frame(v) => v.count(),
            NodeRef::Dirty(n) => n.entries.len(),
        }
    }

    /// The key of entry `i` (`i < count`).
    fn key(self, i: usize) -> &'n [u8] {
        match self {
            NodeRef::Frame(v) => v.key(i),
            NodeRef::Dirty(n) => &n.entries[i].key,
        }
    }

    /// The child of branch entry `i` (`i < count`).
    fn child(self, i: usize) -> Pfn {
        match self {
            NodeRef::Frame(v) => v.child(i),
            NodeRef::Dirty(n) => n.entries[i].value.child(),
        }
    }

    /// Index of the leaf entry with key `key`.
    fn find(self, key: &[u8]) -> Option<usize> {
        match self {
            NodeRef::Frame(v) => v.search(key).ok(),
            NodeRef::Dirty(n) => n
                .entries
                .binary_search_by(|e| e.key.as_slice().cmp(key))
                .ok(),
        }
    }

    /// Leaf entries with a key `< key` (`strict`) or `<= key`.
    fn count_below(self, key: &[u8], strict: bool) -> usize {
        match self {
            NodeRef::Frame(v) => match v.search(key) {
                Ok(i) => i + usize::from(!strict),
                Err(i) => i,
            },
            NodeRef::Dirty(n) => n.entries.partition_point(|e| {
                let k = e.key.as_slice();
                if strict { k < key } else { k <= key }
            }),
        }
    }

    /// Index of the child of a branch whose key range holds `key`.
    fn child_index(self, key: &[u8]) -> usize {
        match self {
            NodeRef::Frame(v) => v.child_index(key),
            NodeRef::Dirty(n) => child_index(n, key),
        }
    }

    /// The bounds of child `i` of this branch, whose own bounds are `lo`, `hi`.
    fn child_bounds<'k>(
        self,
        i: usize,
        lo: Option<&'k [u8]>,
        hi: Option<&'k [u8]>,
    ) -> (Option<&'k [u8]>, Option<&'k [u8]>)
    where
        'n: 'k,
    {
        let clo = if i == 0 { lo } else { Some(self.key(i)) };
        let chi = if i + 1 < self.count() {
            Some(self.key(i + 1))
        } else {
            hi
        };
        (clo, chi)
    }
}

/// A key bound (a separator copied out of a node), kept without allocating.
struct Bound {
    len: Option<usize>,
    bytes: [u8; MAX_KEY],
}

impl Bound {
    fn none() -> Bound {
        Bound {
            len: None,
            bytes: [0; MAX_KEY],
        }
    }

    fn get(&self) -> Option<&[u8]> {
        self.len.map(|n| &self.bytes[..n])
    }

    /// Sets the bound to `key`, a separator of the node at `pfn` (at most [`MAX_KEY`] bytes:
    /// `parse` checks it of a frame, `Txn::put` of a dirty node).
    fn set(&mut self, pfn: Pfn, key: Option<&[u8]>) -> Result<(), TreeError> {
        self.len = match key {
            None => None,
            Some(k) => {
                let Some(to) = self.bytes.get_mut(..k.len()) else {
                    return Err(TreeError::corrupt(
                        pfn.0,
                        format!("separator of {} bytes", k.len()),
                    ));
                };
                to.copy_from_slice(k);
                Some(k.len())
            }
        };
        Ok(())
    }
}

/// The committed tree on the pool.
#[derive(Clone, Copy)]
pub(crate) struct PoolStore<'a> {
    pub pool: &'a Pool,
    pub data: PfnRange,
    pub cache: Option<&'a NodeCache>,
}

impl Store for PoolStore<'_> {
    fn pool(&self) -> &Pool {
        self.pool
    }

    fn data(&self) -> PfnRange {
        self.data
    }

    fn dirty_node(&self, _: Pfn) -> Option<&Node> {
        None
    }

    fn cache(&self) -> Option<&NodeCache> {
        self.cache
    }

    fn value(&self, v: &Value) -> Result<Vec<u8>, TreeError> {
        match v {
            Value::Inline(b) => Ok(b.clone()),
            Value::Overflow(r) => read_overflow(self.pool, r),
            Value::Child(p) => Err(TreeError::corrupt(p.0, "a child where a value should be")),
        }
    }
}

/// Reads the node at `pfn` into `frame` ([`NODE_BYTES`]) and checks it in place: every check
/// of [`NodeView::parse`] (or none, when `cache` holds the frame, checked when it was kept),
/// then its level and its keys against `[lo, hi)`.
pub(crate) fn read_node<'f>(
    src: PoolStore<'_>,
    pfn: Pfn,
    level: u8,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
    frame: &'f mut [u8],
) -> Result<NodeView<'f>, TreeError> {
    let PoolStore { pool, data, cache } = src;
    if !data.contains(pfn) {
        return Err(TreeError::corrupt(
            pfn.0,
            format!("node outside the data region {data}"),
        ));
    }
    let cached = match cache {
        Some(c) => c.fetch(pool, pfn, frame)?,
        None => false,
    };
    let view = if cached {
        NodeView::parsed(frame, pfn.0)
    } else {
        pool.read_into(pfn.byte_offset(), frame)?;
        NodeView::parse(frame, pfn.0, data)?;
        if let Some(c) = cache {
            c.keep(pfn, frame);
        }
        NodeView::parsed(frame, pfn.0)
    };
    if view.level() != level {
        return Err(TreeError::corrupt(
            pfn.0,
            format!("node of level {}, expected {level}", view.level()),
        ));
    }
    // Keys are in order (parse checked it): the first and last real key bound them all.
    let skip = usize::from(level > 0);
    if view.count() > skip {
        check_bounds(
            pfn,
            level,
            view.key(skip),
            view.key(view.count() - 1),
            lo,
            hi,
        )?;
    }
    Ok(view)
}

/// Reads, decodes and checks the node at `pfn` (see the module header).
pub(crate) fn load_from_pool(
    src: PoolStore<'_>,
    pfn: Pfn,
    level: u8,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
) -> Result<Node, TreeError> {
    let mut frame = [0u8; NODE_BYTES];
    read_node(src, pfn, level, lo, hi, &mut frame)?.to_node(src.data)
}

/// Checks that a node's first and last real keys (entry 1 on in a branch) lie in `[lo, hi)`
/// (a branch's separators strictly above `lo`).
fn check_bounds(
    pfn: Pfn,
    level: u8,
    first: &[u8],
    last: &[u8],
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
) -> Result<(), TreeError> {
    if let Some(lo) = lo {
        let below = if level > 0 { first <= lo } else { first < lo };
        if below {
            return Err(TreeError::corrupt(
                pfn.0,
                "key below the parent's separator",
            ));
        }
    }
    if let Some(hi) = hi
        && last >= hi
    {
        return Err(TreeError::corrupt(
            pfn.0,
            "key at or above the next separator",
        ));
    }
    Ok(())
}

/// Reads and checks an overflow value.
pub(crate) fn read_overflow(pool: &Pool, r: &OverflowRef) -> Result<Vec<u8>, TreeError> {
    let frames: u64 = r.ranges.iter().map(|x| x.len).sum();
    let mut run = Vec::with_capacity((frames * FRAME_SIZE) as usize);
    for range in &r.ranges {
        run.extend_from_slice(&pool.read_frames(*range)?);
    }
    decode_overflow(&run, r)
}

/// Index of the child of branch `node` whose key range holds `key`.
pub(crate) fn child_index(node: &Node, key: &[u8]) -> usize {
    node.entries
        .get(1..)
        .map_or(0, |rest| rest.partition_point(|e| e.key.as_slice() <= key))
}

/// The bounds of child `i` of branch `node`, whose own bounds are `lo`, `hi`.
pub(crate) fn child_bounds<'n>(
    node: &'n Node,
    i: usize,
    lo: Option<&'n [u8]>,
    hi: Option<&'n [u8]>,
) -> (Option<&'n [u8]>, Option<&'n [u8]>) {
    let clo = if i == 0 {
        lo
    } else {
        Some(node.entries[i].key.as_slice())
    };
    let chi = node.entries.get(i + 1).map(|e| e.key.as_slice()).or(hi);
    (clo, chi)
}

/// The value of `key` in the tree rooted at `root` (`height` levels).
pub(crate) fn get(
    store: &impl Store,
    root: Option<Pfn>,
    height: u8,
    key: &[u8],
) -> Result<Option<Vec<u8>>, TreeError> {
    lookup(store, root, height, key, |node, i| store.value_at(node, i))
}

/// Whether `key` is in the tree (no value read).
pub(crate) fn contains(
    store: &impl Store,
    root: Option<Pfn>,
    height: u8,
    key: &[u8],
) -> Result<bool, TreeError> {
    lookup(store, root, height, key, |_, _| Ok(())).map(|found| found.is_some())
}

/// Finds `key` and answers `found(leaf, index)` for it. Reads every node on the path into
/// one frame buffer on the stack, the bounds the path gives into two [`Bound`]s.
fn lookup<R>(
    store: &impl Store,
    root: Option<Pfn>,
    height: u8,
    key: &[u8],
    found: impl FnOnce(NodeRef<'_>, usize) -> Result<R, TreeError>,
) -> Result<Option<R>, TreeError> {
    let Some(mut pfn) = root else {
        return Ok(None);
    };
    let mut level = height.saturating_sub(1);
    let mut frame = [0u8; NODE_BYTES];
    let (mut lo, mut hi) = (Bound::none(), Bound::none());
    loop {
        let node = store.node(pfn, level, lo.get(), hi.get(), &mut frame)?;
        if level == 0 {
            return match node.find(key) {
                Some(i) => found(node, i).map(Some),
                None => Ok(None),
            };
        }
        let i = node.child_index(key);
        if i > 0 {
            lo.set(pfn, Some(node.key(i)))?;
        }
        if i + 1 < node.count() {
            hi.set(pfn, Some(node.key(i + 1)))?;
        }
        pfn = node.child(i);
        level -= 1;
    }
}

/// The last entry with a key `<= key`.
pub(crate) fn floor(
    store: &impl Store,
    root: Option<Pfn>,
    height: u8,
    key: &[u8],
) -> Result<Option<KeyValue>, TreeError> {
    let Some(root) = root else {
        return Ok(None);
    };
    floor_rec(store, root, height.saturating_sub(1), None, None, Some(key))
}

/// The last entry `<= key` (`None`: the last entry) of the subtree at `pfn`. Each level
/// reads its node into a frame buffer on its own stack frame, so the bounds of a child are
/// slices of its parent.
fn floor_rec(
    store: &impl Store,
    pfn: Pfn,
    level: u8,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
    key: Option<&[u8]>,
) -> Result<Option<KeyValue>, TreeError> {
    let mut frame = [0u8; NODE_BYTES];
    let node = store.node(pfn, level, lo, hi, &mut frame)?;
    if level == 0 {
        let n = match key {
            Some(key) => node.count_below(key, false),
            None => node.count(),
        };
        return match n.checked_sub(1) {
            Some(i) => Ok(Some((node.key(i).to_vec(), store.value_at(node, i)?))),
            None => Ok(None),
        };
    }
    let top = match key {
        Some(key) => node.child_index(key),
        None => node.count() - 1,
    };
    for j in (0..=top).rev() {
        let (clo, chi) = node.child_bounds(j, lo, hi);
        let k = if j == top { key } else { None };
        if let Some(found) = floor_rec(store, node.child(j), level - 1, clo, chi, k)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// What a full walk found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Key-value entries.
    pub entries: u64,
    /// Node frames.
    pub nodes: u64,
    /// Frames of overflow runs.
    pub overflow_frames: u64,
    /// Levels (0 for the empty tree).
    pub height: u8,
    /// Bytes of keys and values of all entries (values at their full length).
    pub bytes: u64,
}

/// Walks the whole tree: every node checked, every frame collected (sorted; `Corrupt` if two
/// users share a frame), and with `values` every overflow run read and its crc checked.
pub(crate) fn walk(
    store: &impl Store,
    root: Option<Pfn>,
    height: u8,
    values: bool,
) -> Result<(TreeStats, Vec<PfnRange>), TreeError> {
    let mut stats = TreeStats {
        height,
        ..TreeStats::default()
    };
    let mut frames = Vec::new();
    if let Some(root) = root {
        walk_rec(
            store,
            root,
            height.saturating_sub(1),
            None,
            None,
            values,
            &mut stats,
            &mut frames,
        )?;
    }
    frames.sort_unstable();
    for pair in frames.windows(2) {
        if pair[0].overlaps(&pair[1]) {
            return Err(TreeError::corrupt(
                pair[1].start.0,
                format!("frames {} and {} used twice in the tree", pair[0], pair[1]),
            ));
        }
    }
    Ok((stats, frames))
}

#[allow(clippy::too_many_arguments)]
fn walk_rec(
    store: &impl Store,
    pfn: Pfn,
    level: u8,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
    values: bool,
    stats: &mut TreeStats,
    frames: &mut Vec<PfnRange>,
) -> Result<(), TreeError> {
    let node = store.load(pfn, level, lo, hi)?;
    stats.nodes += 1;
    frames.extend(PfnRange::new(pfn, 1));
    for (i, e) in node.entries.iter().enumerate() {
        match &e.value {
            Value::Child(child) => {
                let (clo, chi) = child_bounds(&node, i, lo, hi);
                walk_rec(store, *child, level - 1, clo, chi, values, stats, frames)?;
            }
            v => {
                stats.entries += 1;
                let len = match v {
                    Value::Overflow(r) => {
                        stats.overflow_frames += r.ranges.iter().map(|x| x.len).sum::<u64>();
                        frames.extend_from_slice(&r.ranges);
                        if values {
                            store.value(v)?;
                        }
                        u64::from(r.len)
                    }
                    _ => v.encoded_len() as u64,
                };
                stats.bytes += e.key.len() as u64 + len;
            }
        }
    }
    Ok(())
}

/// The source of a [`Range`].
enum Src<'a> {
    Pool(PoolStore<'a>),
    Txn(&'a crate::txn::Txn<'a>),
}

impl<'a> Src<'a> {
    /// As [`Store::dirty_node`], for as long as the source lives.
    fn dirty_for(&self, pfn: Pfn) -> Option<&'a Node> {
        match *self {
            Src::Pool(_) => None,
            Src::Txn(t) => t.dirty_node(pfn),
        }
    }
}

impl Store for Src<'_> {
    fn pool(&self) -> &Pool {
        match self {
            Src::Pool(s) => s.pool,
            Src::Txn(t) => t.pool(),
        }
    }

    fn data(&self) -> PfnRange {
        match self {
            Src::Pool(s) => s.data,
            Src::Txn(t) => t.data(),
        }
    }

    fn dirty_node(&self, pfn: Pfn) -> Option<&Node> {
        self.dirty_for(pfn)
    }

    fn cache(&self) -> Option<&NodeCache> {
        match self {
            Src::Pool(s) => s.cache,
            Src::Txn(t) => t.cache(),
        }
    }

    fn value(&self, v: &Value) -> Result<Vec<u8>, TreeError> {
        match self {
            Src::Pool(s) => s.value(v),
            Src::Txn(t) => t.value(v),
        }
    }
}

/// One node on the cursor's path, read in place.
struct Level<'a> {
    /// The frame of the node when it was read from the pool: allocated at the level's first
    /// read, refilled by every later one, and valid ([`NodeView::parse`] accepted it) while
    /// `dirty` is `None` and the level is on the path.
    frame: Vec<u8>,
    /// The node when it is a transaction's dirty node.
    dirty: Option<&'a Node>,
    pfn: Pfn,
    /// Leaf: the next entry to return. Branch: the child being visited.
    idx: usize,
    lo: Bound,
    hi: Bound,
}

impl<'a> Level<'a> {
    fn new() -> Level<'a> {
        Level {
            frame: Vec::new(),
            dirty: None,
            pfn: Pfn(0),
            idx: 0,
            lo: Bound::none(),
            hi: Bound::none(),
        }
    }

    /// The node on this level (read by a successful `fill`).
    fn node(&self) -> NodeRef<'_> {
        match self.dirty {
            Some(n) => NodeRef::Dirty(n),
            None => NodeRef::Frame(NodeView::parsed(&self.frame, self.pfn.0)),
        }
    }

    /// Makes the node at `pfn`, checked to be at `level` with keys in this level's bounds
    /// (set by the caller), this level's node, visited from entry 0.
    fn fill(&mut self, src: &Src<'a>, pfn: Pfn, level: u8) -> Result<(), TreeError> {
        self.pfn = pfn;
        self.idx = 0;
        if let Some(n) = src.dirty_for(pfn) {
            NodeRef::dirty(pfn, n)?;
            self.dirty = Some(n);
            return Ok(());
        }
        self.dirty = None;
        if self.frame.len() != NODE_BYTES {
            self.frame = vec![0; NODE_BYTES];
        }
        let (lo, hi) = (self.lo.get(), self.hi.get());
        read_node(src.pool_store(), pfn, level, lo, hi, &mut self.frame)?;
        Ok(())
    }
}

/// A cursor over the entries `start <= key < end` in key order: it holds one root-to-leaf
/// path of nodes read in place (a frame buffer per level, refilled as it moves), never the
/// range. The first item that is an `Err` is also the last.
pub struct Range<'a> {
    src: Src<'a>,
    root: Option<Pfn>,
    height: u8,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    /// One per level of the tree, the root first (made by the first `next`); the path is
    /// `levels[..depth]`.
    levels: Vec<Level<'a>>,
    depth: usize,
    started: bool,
    /// Set for a poisoned transaction: the first item is `Err(Poisoned)`.
    poisoned: bool,
    done: bool,
}

impl<'a> Range<'a> {
    pub(crate) fn on_pool(
        pool: &'a Pool,
        cache: Option<&'a NodeCache>,
        root: Option<Pfn>,
        height: u8,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Range<'a> {
        let data = pool.data_region();
        Range::new(
            Src::Pool(PoolStore { pool, data, cache }),
            root,
            height,
            start,
            end,
        )
    }

    /// Makes the first item `Err(Poisoned)` (and the last).
    pub(crate) fn poisoned(mut self, poisoned: bool) -> Range<'a> {
        self.poisoned = poisoned;
        self
    }

    pub(crate) fn on_txn(
        txn: &'a crate::txn::Txn<'a>,
        root: Option<Pfn>,
        height: u8,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Range<'a> {
        Range::new(Src::Txn(txn), root, height, start, end)
    }

    fn new(
        src: Src<'a>,
        root: Option<Pfn>,
        height: u8,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Range<'a> {
        Range {
            src,
            root,
            height,
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            levels: Vec::new(),
            depth: 0,
            started: false,
            poisoned: false,
            done: false,
        }
    }

    /// Makes `levels[d + 1]` child `idx` of the branch `levels[d]`.
    fn load_child(&mut self, d: usize, idx: usize) -> Result<(), TreeError> {
        let (upper, lower) = self.levels.split_at_mut(d + 1);
        let parent = &upper[d];
        let node = parent.node();
        let (Some(child), Some(level)) = (lower.first_mut(), node.level().checked_sub(1)) else {
            return Err(TreeError::corrupt(
                parent.pfn.0,
                "path longer than the tree's height",
            ));
        };
        let (lo, hi) = node.child_bounds(idx, parent.lo.get(), parent.hi.get());
        child.lo.set(parent.pfn, lo)?;
        child.hi.set(parent.pfn, hi)?;
        child.fill(&self.src, node.child(idx), level)
    }

    /// Makes the path from the root to the leaf where `start` belongs.
    fn seek(&mut self) -> Result<(), TreeError> {
        let Some(root) = self.root else {
            return Ok(());
        };
        self.levels = (0..self.height.max(1)).map(|_| Level::new()).collect();
        self.levels[0].fill(&self.src, root, self.height.saturating_sub(1))?;
        let mut d = 0;
        loop {
            self.depth = d + 1;
            let node = self.levels[d].node();
            if node.level() == 0 {
                self.levels[d].idx = node.count_below(&self.start, true);
                return Ok(());
            }
            let idx = node.child_index(&self.start);
            self.levels[d].idx = idx;
            self.load_child(d, idx)?;
            d += 1;
        }
    }

    /// The next entry, reading nodes as needed.
    fn advance(&mut self) -> Result<Option<KeyValue>, TreeError> {
        while let Some(d) = self.depth.checked_sub(1) {
            let top = &self.levels[d];
            let (node, idx) = (top.node(), top.idx);
            if idx < node.count() {
                if node.level() > 0 {
                    // Unreachable in practice: a branch on top always has its child above it.
                    return Err(TreeError::corrupt(top.pfn.0, "range cursor lost its path"));
                }
                let key = node.key(idx);
                if self.end.as_deref().is_some_and(|end| key >= end) {
                    return Ok(None);
                }
                let kv = (key.to_vec(), self.src.value_at(node, idx)?);
                self.levels[d].idx += 1;
                return Ok(Some(kv));
            }
            // This node is done: visit the parent's next child, unless it is done too.
            self.depth = d;
            let Some(p) = d.checked_sub(1) else {
                continue;
            };
            self.levels[p].idx += 1;
            let next = self.levels[p].idx;
            let parent = self.levels[p].node();
            if next < parent.count() {
                if self
                    .end
                    .as_deref()
                    .is_some_and(|end| parent.key(next) >= end)
                {
                    return Ok(None);
                }
                self.load_child(p, next)?;
                self.depth = p + 2;
                self.descend_first()?;
            }
        }
        Ok(None)
    }

    /// Extends the path from the node on top down its child 0s to a leaf.
    fn descend_first(&mut self) -> Result<(), TreeError> {
        while let Some(d) = self.depth.checked_sub(1) {
            if self.levels[d].node().level() == 0 {
                break;
            }
            self.levels[d].idx = 0;
            self.load_child(d, 0)?;
            self.depth = d + 2;
        }
        Ok(())
    }
}

impl Iterator for Range<'_> {
    type Item = Result<KeyValue, TreeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.poisoned {
            self.done = true;
            return Some(Err(TreeError::Poisoned));
        }
        let step = (|| {
            if !self.started {
                self.started = true;
                self.seek()?;
            }
            self.advance()
        })();
        match step {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
