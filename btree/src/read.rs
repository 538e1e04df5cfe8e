//! Reading a tree: lookups, the range cursor, floor, and the full walks of `frames`/`check`.
//!
//! Everything here goes through a `Store`: the committed tree on the pool (`PoolStore`) or
//! a transaction, which answers from its dirty nodes first. Every node read from the pool is
//! decoded with all checks of [`Node::decode`], then checked against what its parent says of
//! it: its level (exactly one below the parent's, so any path is at most `height` nodes long
//! and a child pointing back at an ancestor is caught) and the key bounds the parent's
//! separators give it (`lo <= key < hi`).

use std::borrow::Cow;

use pfnfs_alloc::{FRAME_SIZE, Pfn, PfnRange, Pool};

use crate::error::TreeError;
use crate::format::{Node, NodeView, OverflowRef, Value, decode_overflow};

/// A key and its value, as reads return them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Where nodes and overflow values come from.
pub(crate) trait Store {
    /// The node at `pfn`, checked to be at `level` with keys in `[lo, hi)`.
    fn load(
        &self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
    ) -> Result<Cow<'_, Node>, TreeError>;
    /// The bytes of a leaf value.
    fn value(&self, v: &Value) -> Result<Vec<u8>, TreeError>;
    /// One step of a lookup of `key` in the node at `pfn` (checked as `load` does).
    fn step(
        &self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        key: &[u8],
    ) -> Result<Step, TreeError> {
        let node = self.load(pfn, level, lo, hi)?;
        if level == 0 {
            return Ok(Step::Leaf(
                node.entries
                    .binary_search_by(|e| e.key.as_slice().cmp(key))
                    .ok()
                    .map(|i| node.entries[i].value.clone()),
            ));
        }
        let i = child_index(&node, key);
        Ok(Step::Child {
            child: node.entries[i].value.child(),
            lo: (i > 0).then(|| node.entries[i].key.clone()),
            hi: node.entries.get(i + 1).map(|e| e.key.clone()),
        })
    }
}

/// One step of a lookup.
pub(crate) enum Step {
    /// At the leaf: the key's value, if it is there.
    Leaf(Option<Value>),
    /// Go on to `child`; `lo`/`hi` are its bounds where they differ from the parent's.
    Child {
        child: Pfn,
        lo: Option<Vec<u8>>,
        hi: Option<Vec<u8>>,
    },
}

/// The committed tree on the pool.
pub(crate) struct PoolStore<'a> {
    pub pool: &'a Pool,
    pub data: PfnRange,
}

impl Store for PoolStore<'_> {
    /// Reads the node in place ([`NodeView`]): all checks, no node built.
    fn step(
        &self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        key: &[u8],
    ) -> Result<Step, TreeError> {
        if !self.data.contains(pfn) {
            return Err(TreeError::corrupt(
                pfn.0,
                format!("node outside the data region {}", self.data),
            ));
        }
        let mut frame = [0u8; FRAME_SIZE as usize];
        self.pool.read_into(pfn.byte_offset(), &mut frame)?;
        let view = NodeView::parse(&frame, pfn.0, self.data)?;
        if view.level() != level {
            return Err(TreeError::corrupt(
                pfn.0,
                format!("node of level {}, expected {level}", view.level()),
            ));
        }
        let skip = usize::from(level > 0);
        if view.count() > skip {
            let (first, last) = (view.key(skip), view.key(view.count() - 1));
            check_bounds(pfn, level, first, last, lo, hi)?;
        }
        if level == 0 {
            return match view.search(key) {
                Ok(i) => Ok(Step::Leaf(Some(view.value(i, self.data)?))),
                Err(_) => Ok(Step::Leaf(None)),
            };
        }
        let i = view.child_index(key);
        Ok(Step::Child {
            child: view.child(i),
            lo: (i > 0).then(|| view.key(i).to_vec()),
            hi: (i + 1 < view.count()).then(|| view.key(i + 1).to_vec()),
        })
    }

    fn load(
        &self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
    ) -> Result<Cow<'_, Node>, TreeError> {
        load_from_pool(self.pool, self.data, pfn, level, lo, hi).map(Cow::Owned)
    }

    fn value(&self, v: &Value) -> Result<Vec<u8>, TreeError> {
        match v {
            Value::Inline(b) => Ok(b.clone()),
            Value::Overflow(r) => read_overflow(self.pool, r),
            Value::Child(p) => Err(TreeError::corrupt(p.0, "a child where a value should be")),
        }
    }
}

/// Reads, decodes and checks the node at `pfn` (see the module header).
pub(crate) fn load_from_pool(
    pool: &Pool,
    data: PfnRange,
    pfn: Pfn,
    level: u8,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
) -> Result<Node, TreeError> {
    if !data.contains(pfn) {
        return Err(TreeError::corrupt(
            pfn.0,
            format!("node outside the data region {data}"),
        ));
    }
    let mut frame = vec![0u8; FRAME_SIZE as usize];
    pool.read_into(pfn.byte_offset(), &mut frame)?;
    let node = Node::decode(&frame, pfn.0, data)?;
    check_place(&node, pfn, level, lo, hi)?;
    Ok(node)
}

/// Checks that `node` (at `pfn`) is at `level` with its keys in `[lo, hi)`.
pub(crate) fn check_place(
    node: &Node,
    pfn: Pfn,
    level: u8,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
) -> Result<(), TreeError> {
    if node.level != level {
        return Err(TreeError::corrupt(
            pfn.0,
            format!("node of level {}, expected {level}", node.level),
        ));
    }
    // Keys are in order (decode checked it): the first and last real key bound them all.
    let skip = usize::from(level > 0);
    match (node.entries.get(skip), node.entries.last()) {
        (Some(first), Some(last)) => check_bounds(pfn, level, &first.key, &last.key, lo, hi),
        _ => Ok(()),
    }
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
    match lookup(store, root, height, key)? {
        Some(v) => store.value(&v).map(Some),
        None => Ok(None),
    }
}

/// The undecoded value of `key` (an overflow run not read).
pub(crate) fn lookup(
    store: &impl Store,
    root: Option<Pfn>,
    height: u8,
    key: &[u8],
) -> Result<Option<Value>, TreeError> {
    let Some(mut pfn) = root else {
        return Ok(None);
    };
    let mut level = height.saturating_sub(1);
    let mut lo: Option<Vec<u8>> = None;
    let mut hi: Option<Vec<u8>> = None;
    loop {
        match store.step(pfn, level, lo.as_deref(), hi.as_deref(), key)? {
            Step::Leaf(v) => return Ok(v),
            Step::Child {
                child,
                lo: clo,
                hi: chi,
            } => {
                if level == 0 {
                    return Err(TreeError::corrupt(pfn.0, "a leaf with children"));
                }
                lo = clo.or(lo);
                hi = chi.or(hi);
                pfn = child;
                level -= 1;
            }
        }
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
    match floor_rec(store, root, height.saturating_sub(1), None, None, Some(key))? {
        Some((k, v)) => Ok(Some((k, store.value(&v)?))),
        None => Ok(None),
    }
}

/// The last entry `<= key` (`None`: the last entry) of the subtree at `pfn`.
fn floor_rec(
    store: &impl Store,
    pfn: Pfn,
    level: u8,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
    key: Option<&[u8]>,
) -> Result<Option<(Vec<u8>, Value)>, TreeError> {
    let node = store.load(pfn, level, lo, hi)?;
    if level == 0 {
        let n = match key {
            Some(key) => node.entries.partition_point(|e| e.key.as_slice() <= key),
            None => node.entries.len(),
        };
        return Ok(n
            .checked_sub(1)
            .map(|i| (node.entries[i].key.clone(), node.entries[i].value.clone())));
    }
    let top = match key {
        Some(key) => child_index(&node, key),
        None => node.entries.len() - 1,
    };
    for j in (0..=top).rev() {
        let (clo, chi) = child_bounds(&node, j, lo, hi);
        let k = if j == top { key } else { None };
        if let Some(found) =
            floor_rec(store, node.entries[j].value.child(), level - 1, clo, chi, k)?
        {
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

impl Store for Src<'_> {
    fn load(
        &self,
        pfn: Pfn,
        level: u8,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
    ) -> Result<Cow<'_, Node>, TreeError> {
        match self {
            Src::Pool(s) => s.load(pfn, level, lo, hi),
            Src::Txn(t) => t.load(pfn, level, lo, hi),
        }
    }

    fn value(&self, v: &Value) -> Result<Vec<u8>, TreeError> {
        match self {
            Src::Pool(s) => s.value(v),
            Src::Txn(t) => t.value(v),
        }
    }
}

/// One node on the cursor's path.
struct Level {
    node: Node,
    /// Leaf: the next entry to return. Branch: the child being visited.
    idx: usize,
    lo: Option<Vec<u8>>,
    hi: Option<Vec<u8>>,
}

/// A cursor over the entries `start <= key < end` in key order: it holds one root-to-leaf
/// path of decoded nodes, never the range. The first item that is an `Err` is also the last.
pub struct Range<'a> {
    src: Src<'a>,
    root: Option<Pfn>,
    height: u8,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    stack: Vec<Level>,
    started: bool,
    /// Set for a poisoned transaction: the first item is `Err(Poisoned)`.
    poisoned: bool,
    done: bool,
}

impl<'a> Range<'a> {
    pub(crate) fn on_pool(
        pool: &'a Pool,
        root: Option<Pfn>,
        height: u8,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Range<'a> {
        let data = pool.data_region();
        Range::new(
            Src::Pool(PoolStore { pool, data }),
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
            stack: Vec::new(),
            started: false,
            poisoned: false,
            done: false,
        }
    }

    /// Pushes the path from the root to the leaf where `start` belongs.
    fn seek(&mut self) -> Result<(), TreeError> {
        let Some(mut pfn) = self.root else {
            return Ok(());
        };
        let mut level = self.height.saturating_sub(1);
        let mut lo: Option<Vec<u8>> = None;
        let mut hi: Option<Vec<u8>> = None;
        loop {
            let node = self
                .src
                .load(pfn, level, lo.as_deref(), hi.as_deref())?
                .into_owned();
            if level == 0 {
                let idx = node
                    .entries
                    .partition_point(|e| e.key.as_slice() < self.start.as_slice());
                self.stack.push(Level { node, idx, lo, hi });
                return Ok(());
            }
            let idx = child_index(&node, &self.start);
            let (clo, chi) = child_bounds(&node, idx, lo.as_deref(), hi.as_deref());
            let (clo, chi) = (clo.map(<[u8]>::to_vec), chi.map(<[u8]>::to_vec));
            pfn = node.entries[idx].value.child();
            self.stack.push(Level { node, idx, lo, hi });
            (lo, hi) = (clo, chi);
            level -= 1;
        }
    }

    /// The next entry (key and undecoded value), loading nodes as needed.
    fn advance(&mut self) -> Result<Option<(Vec<u8>, Value)>, TreeError> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            if top.node.level == 0 && top.idx < top.node.entries.len() {
                let e = &top.node.entries[top.idx];
                top.idx += 1;
                if self.end.as_ref().is_some_and(|end| e.key >= *end) {
                    return Ok(None);
                }
                return Ok(Some((e.key.clone(), e.value.clone())));
            }
            if top.node.level == 0 || top.idx >= top.node.entries.len() {
                self.stack.pop();
                if let Some(parent) = self.stack.last_mut() {
                    parent.idx += 1;
                    // Visit the parent's next child (below), unless it is exhausted.
                    if parent.idx < parent.node.entries.len() {
                        let (p, level, lo, hi) = {
                            let (clo, chi) = child_bounds(
                                &parent.node,
                                parent.idx,
                                parent.lo.as_deref(),
                                parent.hi.as_deref(),
                            );
                            if let (Some(end), Some(clo)) = (&self.end, clo)
                                && clo >= end.as_slice()
                            {
                                return Ok(None);
                            }
                            (
                                parent.node.entries[parent.idx].value.child(),
                                parent.node.level - 1,
                                clo.map(<[u8]>::to_vec),
                                chi.map(<[u8]>::to_vec),
                            )
                        };
                        let node = self
                            .src
                            .load(p, level, lo.as_deref(), hi.as_deref())?
                            .into_owned();
                        // A branch pushed here is visited from its child 0.
                        self.stack.push(Level {
                            node,
                            idx: 0,
                            lo,
                            hi,
                        });
                        self.descend_first()?;
                    }
                }
                continue;
            }
            // Unreachable in practice: a branch on top always has its child above it.
            return Err(TreeError::corrupt(0, "range cursor lost its path"));
        }
    }

    /// Extends the path from the branch on top down its child 0s to a leaf.
    fn descend_first(&mut self) -> Result<(), TreeError> {
        loop {
            let Some(top) = self.stack.last() else {
                return Ok(());
            };
            if top.node.level == 0 {
                return Ok(());
            }
            let (clo, chi) = child_bounds(&top.node, 0, top.lo.as_deref(), top.hi.as_deref());
            let (lo, hi) = (clo.map(<[u8]>::to_vec), chi.map(<[u8]>::to_vec));
            let pfn = top.node.entries[0].value.child();
            let level = top.node.level - 1;
            let node = self
                .src
                .load(pfn, level, lo.as_deref(), hi.as_deref())?
                .into_owned();
            self.stack.push(Level {
                node,
                idx: 0,
                lo,
                hi,
            });
        }
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
            match self.advance()? {
                Some((k, v)) => Ok(Some((k, self.src.value(&v)?))),
                None => Ok(None),
            }
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
