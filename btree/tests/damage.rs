//! Damage: flipped bytes in any node or overflow run, child pointers out of the data region,
//! cycles and shared subtrees. Every read answers `Err` (`Corrupt` naming the frame), never
//! panics, never loops.

mod common;

use proptest::prelude::*;

use pfnfs_alloc::{FRAME_SIZE, Pfn, PfnRange, Pool};
use pfnfs_btree::format::{Node, Value};
use pfnfs_btree::{Tree, TreeError};

use common::{bytes, commit, mem_pool};

fn entries() -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..200u64)
        .map(|i| {
            let vlen = if i % 25 == 0 { 2500 } else { 60 };
            (bytes(i, 20 + (i % 90) as usize), bytes(i + 1, vlen))
        })
        .collect()
}

fn frame(pool: &Pool, pfn: u64) -> Vec<u8> {
    pool.read_vec(pfn * FRAME_SIZE, FRAME_SIZE as usize)
        .unwrap()
}

fn put_frame(pool: &Pool, pfn: u64, bytes: &[u8]) {
    pool.write(pfn * FRAME_SIZE, bytes).unwrap();
}

fn corrupt_pfn(e: TreeError) -> u64 {
    match e {
        TreeError::Corrupt { pfn, .. } => pfn,
        other => panic!("expected Corrupt, got {other}"),
    }
}

/// Every read of the whole tree.
fn read_everything(
    pool: &Pool,
    tree: &Tree,
    keys: &[(Vec<u8>, Vec<u8>)],
) -> Vec<Result<(), TreeError>> {
    let mut out = vec![
        tree.check(pool).map(drop),
        tree.frames(pool).map(drop),
        tree.range(pool, &[], None)
            .collect::<Result<Vec<_>, _>>()
            .map(drop),
    ];
    for (k, v) in keys {
        out.push(tree.get(pool, k).map(|got| {
            assert!(
                got.is_none() || got.as_ref() == Some(v),
                "wrong value without an error"
            );
        }));
        out.push(tree.floor(pool, k).map(drop));
    }
    out
}

#[test]
fn flipped_bytes_are_corrupt_naming_the_frame() {
    let (pool, alloc) = mem_pool();
    let kvs = entries();
    let tree = commit(&pool, &alloc, &Tree::empty(), 1, &kvs);
    assert!(tree.height() >= 2);
    let root = tree.root().unwrap().0;
    let data = pool.data_region();
    let frames = tree.frames(&pool).unwrap();
    for r in &frames {
        let first = r.start.0;
        let is_node = Node::decode(&frame(&pool, first), first, data).is_ok();
        for at in [0usize, 9, 13, 40, 2000, 4095] {
            let before = frame(&pool, first);
            let mut bad = before.clone();
            bad[at] ^= 0x41;
            put_frame(&pool, first, &bad);
            let err = tree.check(&pool).expect_err("check passed a flipped byte");
            assert_eq!(corrupt_pfn(err), first, "flip at {at} of {r}");
            let results = read_everything(&pool, &tree, &kvs);
            assert!(results.iter().any(Result::is_err));
            if is_node {
                assert!(tree.frames(&pool).is_err());
            }
            if first == root {
                assert_eq!(
                    corrupt_pfn(Tree::open(&pool, Pfn(root), tree.height()).unwrap_err()),
                    root
                );
            }
            put_frame(&pool, first, &before);
        }
    }
    tree.check(&pool).unwrap();
}

/// Rewrites the root with `edit` applied to its decoded form (a valid crc: only the
/// structural checks can catch it).
fn with_root_edited(pool: &Pool, tree: &Tree, edit: impl FnOnce(&mut Node)) -> Vec<u8> {
    let root = tree.root().unwrap().0;
    let before = frame(pool, root);
    let mut node = Node::decode(&before, root, pool.data_region()).unwrap();
    edit(&mut node);
    put_frame(pool, root, &node.encode(1));
    before
}

#[test]
fn bad_child_pointers_cycles_and_shared_subtrees_are_errors() {
    let (pool, alloc) = mem_pool();
    let kvs = entries();
    let tree = commit(&pool, &alloc, &Tree::empty(), 1, &kvs);
    let root = tree.root().unwrap();
    let data = pool.data_region();
    type Edit = Box<dyn Fn(&mut Node)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "past the region",
            Box::new(move |n| n.entries[0].value = Value::Child(data.end())),
        ),
        (
            "in the header",
            Box::new(|n| n.entries[0].value = Value::Child(Pfn(1))),
        ),
        (
            "in the log",
            Box::new(move |n| n.entries[1].value = Value::Child(Pfn(data.start.0 - 1))),
        ),
        (
            "itself (cycle)",
            Box::new(move |n| n.entries[1].value = Value::Child(root)),
        ),
        (
            "a shared child",
            Box::new(|n| {
                let c = n.entries[0].value.clone();
                n.entries[1].value = c;
            }),
        ),
        (
            "separators swapped",
            Box::new(|n| {
                let last = n.entries.len() - 1;
                n.entries.swap(1, last);
            }),
        ),
    ];
    for (what, edit) in cases {
        let before = with_root_edited(&pool, &tree, |n| edit(n));
        let results = read_everything(&pool, &tree, &kvs);
        assert!(results.iter().any(Result::is_err), "{what}");
        assert!(tree.check(&pool).is_err(), "{what}: check passed");
        put_frame(&pool, root.0, &before);
    }
    // A root of the wrong height, a root outside the region.
    assert!(Tree::open(&pool, root, tree.height() + 1).is_err());
    assert!(Tree::open(&pool, root, 0).is_err());
    assert!(Tree::open(&pool, Pfn(3), 1).is_err());
    assert!(Tree::open(&pool, data.end(), 1).is_err());
    tree.check(&pool).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary byte edits anywhere in the tree's frames: every read answers, nothing panics,
    /// and a value returned without error is the right one.
    #[test]
    fn random_damage_never_panics(edits in proptest::collection::vec((any::<usize>(), 0usize..4096, any::<u8>()), 1..12)) {
        let (pool, alloc) = mem_pool();
        let kvs = entries();
        let tree = commit(&pool, &alloc, &Tree::empty(), 1, &kvs);
        let frames: Vec<u64> = tree
            .frames(&pool)
            .unwrap()
            .iter()
            .flat_map(|r: &PfnRange| r.start.0..r.end().0)
            .collect();
        for (which, at, byte) in edits {
            let pfn = frames[which % frames.len()];
            pool.write(pfn * FRAME_SIZE + at as u64, &[byte]).unwrap();
        }
        let _ = read_everything(&pool, &tree, &kvs);
        let _ = Tree::open(&pool, tree.root().unwrap(), tree.height());
    }
}
