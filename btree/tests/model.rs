//! The tree against a `BTreeMap` model: random puts, deletes, gets, ranges and floors with
//! keys of 1..300 bytes and values of 0..5000 bytes (so overflow runs, splits and merges all
//! happen), in several transactions, each written and its root reopened with `Tree::open`.
//! After each: `check`, equality with the model, and exact ownership of the data region.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use proptest::prelude::*;

use pfnfs_alloc::{MemBackend, PfnRange};
use pfnfs_btree::{NodeCache, Tree, Txn};

use common::{assert_tiles, bytes, pool_on};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Clone, Debug)]
enum Op {
    Put(u16, usize, u64),
    Delete(u16),
    Get(u16),
    Range(u16, Option<u16>),
    Floor(u16),
}

/// Key number `id`: 1..300 bytes, fixed per id (short ones may coincide: fine).
fn key(id: u16) -> Vec<u8> {
    let len = 1 + (usize::from(id) * 7919) % 299;
    let mut k = bytes(u64::from(id) + 1, len);
    k[0] = (id % 251) as u8; // spread first bytes so order is mixed
    k
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u16..300;
    let vlen = prop_oneof![0usize..64, 64usize..1100, 1100usize..5000];
    prop_oneof![
        6 => (id.clone(), vlen, any::<u64>()).prop_map(|(k, l, s)| Op::Put(k, l, s)),
        4 => id.clone().prop_map(Op::Delete),
        1 => id.clone().prop_map(Op::Get),
        1 => (id.clone(), proptest::option::of(id.clone())).prop_map(|(a, b)| Op::Range(a, b)),
        1 => id.prop_map(Op::Floor),
    ]
}

fn model_range(m: &Model, start: &[u8], end: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let hi = match end {
        Some(e) => Bound::Excluded(e.to_vec()),
        None => Bound::Unbounded,
    };
    if end.is_some_and(|e| e < start) {
        return Vec::new();
    }
    m.range((Bound::Included(start.to_vec()), hi))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn model_floor(m: &Model, k: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    m.range(..=k.to_vec())
        .next_back()
        .map(|(k, v)| (k.clone(), v.clone()))
}

/// Writes `txn`, reopens the root, checks it against `model` and the ownership of every
/// frame, then commits (keeps the new frames, frees the replaced ones).
fn write_and_check(
    txn: Txn<'_>,
    pool: &pfnfs_alloc::Pool,
    alloc: &pfnfs_alloc::ExtentAllocator,
    model: &Model,
    cache: Option<&Arc<NodeCache>>,
) -> Tree {
    let w = txn.write().expect("write");
    let tree = match w.tree.root() {
        Some(root) => Tree::open(pool, root, w.tree.height()).expect("open the new root"),
        None => Tree::empty(),
    };
    let tree = match cache {
        Some(c) => tree.with_cache(c.clone()),
        None => tree,
    };
    assert_eq!(tree, w.tree);
    let stats = tree.check(pool).expect("check");
    assert_eq!(stats.entries, model.len() as u64);
    let all: Vec<_> = tree
        .range(pool, &[], None)
        .collect::<Result<_, _>>()
        .expect("range");
    assert_eq!(all, model_range(model, &[], None));
    for (k, v) in model.iter().take(40) {
        assert_eq!(tree.get(pool, k).expect("get").as_ref(), Some(v));
    }
    let frames = tree.frames(pool).expect("frames");
    assert_eq!(
        frames.iter().map(|r| r.len).sum::<u64>(),
        stats.nodes + stats.overflow_frames
    );
    let free = alloc.free_extents();
    assert_tiles(
        pool.data_region(),
        &[
            ("new tree", &frames),
            ("free", &free),
            ("freed by the txn", &w.freed),
        ],
    );
    // What the guard holds is exactly the new tree's frames that the old tree did not use.
    let held: u64 = w.frames.frames();
    assert!(held <= frames.iter().map(|r| r.len).sum::<u64>());
    w.frames.commit();
    for r in w.freed {
        alloc.free(r).expect("free a replaced frame");
    }
    alloc.check_consistency().expect("allocator");
    tree
}

/// Runs `txns` against the model, reading through `cache` if given (each new tree gets it).
fn run(txns: Vec<Vec<Op>>, cache: Option<Arc<NodeCache>>) {
    let (pool, alloc) = pool_on(Box::new(MemBackend::new(32 << 20)));
    let mut tree = Tree::empty();
    let mut model = Model::new();
    for (g, ops) in txns.into_iter().enumerate() {
        let mut txn = Txn::new(&tree, &pool, &alloc, g as u64 + 1);
        for op in ops {
            match op {
                Op::Put(k, len, seed) => {
                    let (k, v) = (key(k), bytes(seed, len));
                    txn.put(&k, &v).expect("put");
                    model.insert(k, v);
                }
                Op::Delete(k) => {
                    let k = key(k);
                    assert_eq!(txn.delete(&k).expect("delete"), model.remove(&k).is_some());
                }
                Op::Get(k) => {
                    let k = key(k);
                    assert_eq!(txn.get(&k).expect("get"), model.get(&k).cloned());
                    // The base tree is untouched by the transaction.
                    let _ = tree.get(&pool, &k).expect("base get");
                }
                Op::Range(a, b) => {
                    let (a, b) = (key(a), b.map(key));
                    let got: Vec<_> = txn
                        .range(&a, b.as_deref())
                        .collect::<Result<_, _>>()
                        .expect("range");
                    assert_eq!(got, model_range(&model, &a, b.as_deref()));
                }
                Op::Floor(k) => {
                    let k = key(k);
                    assert_eq!(txn.floor(&k).expect("floor"), model_floor(&model, &k));
                }
            }
        }
        // allocated() and freed() are disjoint from each other and from the free set.
        let mut during: Vec<PfnRange> = txn.allocated().to_vec();
        during.extend_from_slice(txn.freed());
        during.extend(alloc.free_extents());
        common::coalesce(during, "allocated + freed + free during the txn");
        tree = write_and_check(txn, &pool, &alloc, &model, cache.as_ref());
        for id in (0..300).step_by(37) {
            let k = key(id);
            assert_eq!(
                tree.floor(&pool, &k).expect("floor"),
                model_floor(&model, &k)
            );
        }
    }
    // Deleting everything shrinks the tree back to nothing.
    let mut txn = Txn::new(&tree, &pool, &alloc, 1000);
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for k in keys {
        assert!(txn.delete(&k).expect("delete"));
        model.remove(&k);
    }
    let tree = write_and_check(txn, &pool, &alloc, &model, cache.as_ref());
    assert_eq!(tree, Tree::empty());
    assert_eq!(alloc.free_extents(), vec![pool.data_region()]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tree_matches_model(txns in proptest::collection::vec(proptest::collection::vec(op(), 1..150), 1..5)) {
        run(txns, None);
    }

    /// The same through a node cache, small enough to evict (4 frames) or holding everything:
    /// a frame freed by one transaction and reused by the next must never be answered from
    /// the cache.
    #[test]
    fn tree_matches_model_through_a_node_cache(
        txns in proptest::collection::vec(proptest::collection::vec(op(), 1..150), 1..5),
        small in any::<bool>(),
    ) {
        let frames: u64 = if small { 4 } else { 4096 };
        run(txns, Some(Arc::new(NodeCache::with_bytes(frames * 4096))));
    }
}

/// Enough entries for a tree of height 3 or more, then everything deleted in random order
/// over several transactions.
#[test]
fn grows_tall_and_shrinks_to_nothing() {
    use rand::seq::SliceRandom;
    use rand::{SeedableRng, rngs::StdRng};
    let (pool, alloc) = pool_on(Box::new(MemBackend::new(64 << 20)));
    let mut model = Model::new();
    let mut tree = Tree::empty();
    let mut rng = StdRng::seed_from_u64(7);
    let mut keys: Vec<Vec<u8>> = (0..3000u64)
        .map(|i| bytes(i, 40 + (i % 200) as usize))
        .collect();
    for (g, chunk) in keys.chunks(500).enumerate() {
        let mut txn = Txn::new(&tree, &pool, &alloc, g as u64 + 1);
        for k in chunk {
            let v = bytes(k[0] as u64, (k[1] as usize) * 8);
            txn.put(k, &v).unwrap();
            model.insert(k.clone(), v);
        }
        tree = write_and_check(txn, &pool, &alloc, &model, None);
    }
    assert!(tree.height() >= 3, "height {}", tree.height());
    keys.shuffle(&mut rng);
    let mut heights = vec![tree.height()];
    let full = tree.check(&pool).unwrap();
    for (g, chunk) in keys.chunks(300).enumerate() {
        let mut txn = Txn::new(&tree, &pool, &alloc, 100 + g as u64);
        for k in chunk {
            assert_eq!(txn.delete(k).unwrap(), model.remove(k).is_some());
        }
        tree = write_and_check(txn, &pool, &alloc, &model, None);
        heights.push(tree.height());
        // Underfull nodes are merged: with a tenth of the entries left, at most a third of
        // the nodes are (leaves kept at a tenth full would keep them all).
        let now = tree.check(&pool).unwrap();
        if now.entries * 10 <= full.entries && now.entries > 0 {
            assert!(now.nodes * 3 <= full.nodes, "{now:?} from {full:?}");
        }
    }
    assert_eq!(tree, Tree::empty());
    assert!(heights.windows(2).all(|w| w[1] <= w[0]), "{heights:?}");
    assert_eq!(alloc.free_extents(), vec![pool.data_region()]);
}

/// Keys in ascending order fill nodes (the left half of an append split keeps all it can),
/// and the tree still matches the model after random deletes.
#[test]
fn sequential_inserts_fill_nodes() {
    let (pool, alloc) = pool_on(Box::new(MemBackend::new(32 << 20)));
    let mut model = Model::new();
    let mut tree = Tree::empty();
    let key = |i: u64| [[0u8; 16].as_slice(), &i.to_be_bytes()].concat();
    for g in 0..5u64 {
        let mut txn = Txn::new(&tree, &pool, &alloc, g + 1);
        for i in g * 2000..(g + 1) * 2000 {
            txn.put(&key(i), &[7u8; 64]).unwrap();
            model.insert(key(i), vec![7u8; 64]);
        }
        tree = write_and_check(txn, &pool, &alloc, &model, None);
    }
    let stats = tree.check(&pool).unwrap();
    // 94 bytes per entry with its slot, 4064 per node: at least 90% full.
    let full_nodes = (stats.entries * 94).div_ceil(4064);
    assert!(
        stats.nodes * 9 <= full_nodes * 10 + 10 * u64::from(stats.height),
        "{stats:?}"
    );
    let mut txn = Txn::new(&tree, &pool, &alloc, 10);
    for i in (0..10_000u64).filter(|i| i % 3 != 0) {
        assert!(txn.delete(&key(i)).unwrap());
        model.remove(&key(i));
    }
    write_and_check(txn, &pool, &alloc, &model, None);
}

/// Reads through a node cache are answered from it (hits), and a tree rewritten into the
/// frames the old one freed is read as it is now: entries of 120 bytes so that every commit
/// rewrites several nodes, each transaction changing every value.
#[test]
fn node_cache_answers_and_never_serves_a_reused_frame() {
    let (pool, alloc) = pool_on(Box::new(MemBackend::new(32 << 20)));
    let cache = Arc::new(NodeCache::with_bytes(1 << 20));
    let mut tree = Tree::empty().with_cache(cache.clone());
    let mut model = Model::new();
    for g in 1..=6u64 {
        let mut txn = Txn::new(&tree, &pool, &alloc, g);
        for id in 0..400u16 {
            let (k, v) = (key(id), bytes(g * 1000 + u64::from(id), 120));
            txn.put(&k, &v).expect("put");
            model.insert(k, v);
        }
        tree = write_and_check(txn, &pool, &alloc, &model, Some(&cache));
        for (k, v) in &model {
            assert_eq!(tree.get(&pool, k).expect("get").as_ref(), Some(v));
        }
    }
    let stats = cache.stats();
    assert!(stats.hits > 1000, "{stats:?}");
    assert!(stats.cached <= stats.capacity);
}
