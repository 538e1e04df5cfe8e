//! Limits and failure paths: key and value sizes, the largest entries, running out of space
//! (the transaction is poisoned and gives every frame back), dropping a transaction.

mod common;

use pfnfs_alloc::MemBackend;
use pfnfs_btree::{INLINE_VALUE_MAX, MAX_KEY, MAX_VALUE, Tree, TreeError, Txn};

use common::{bytes, commit, mem_pool, pool_on};

#[test]
fn key_and_value_sizes() {
    let (pool, alloc) = mem_pool();
    let mut txn = Txn::new(&Tree::empty(), &pool, &alloc, 1);
    assert!(matches!(txn.put(b"", b"v"), Err(TreeError::KeyEmpty)));
    assert!(matches!(
        txn.put(&[1; MAX_KEY + 1], b"v"),
        Err(TreeError::KeyTooLong { len }) if len == MAX_KEY + 1
    ));
    assert!(matches!(
        txn.put(b"k", &vec![0; MAX_VALUE + 1]),
        Err(TreeError::ValueTooLong { .. })
    ));
    // Refused arguments do not poison the transaction.
    assert_eq!(txn.get(b"k").unwrap(), None);
    // The largest entries: keys of MAX_KEY bytes with the longest inline value, and a
    // value of MAX_VALUE bytes.
    let mut kvs = Vec::new();
    for i in 0..20u64 {
        let mut k = bytes(i, MAX_KEY);
        k[0] = i as u8;
        kvs.push((k, bytes(i + 50, INLINE_VALUE_MAX)));
    }
    kvs.push((b"huge".to_vec(), bytes(3, MAX_VALUE)));
    kvs.push((b"just-out".to_vec(), bytes(4, INLINE_VALUE_MAX + 1)));
    kvs.push((b"empty".to_vec(), Vec::new()));
    for (k, v) in &kvs {
        txn.put(k, v).unwrap();
    }
    let w = txn.write().unwrap();
    w.frames.commit();
    let tree = Tree::open(&pool, w.tree.root().unwrap(), w.tree.height()).unwrap();
    let stats = tree.check(&pool).unwrap();
    assert_eq!(stats.entries, kvs.len() as u64);
    assert_eq!(stats.overflow_frames, 513 + 1);
    for (k, v) in &kvs {
        assert_eq!(tree.get(&pool, k).unwrap().as_ref(), Some(v));
    }
}

#[test]
fn no_space_poisons_and_gives_everything_back() {
    let (pool, alloc) = pool_on(Box::new(MemBackend::new(16 << 20)));
    let base = commit(
        &pool,
        &alloc,
        &Tree::empty(),
        1,
        &[(b"a".to_vec(), b"1".to_vec())],
    );
    let free_before = alloc.free_frames();
    let mut txn = Txn::new(&base, &pool, &alloc, 2);
    let mut err = None;
    for i in 0..10_000u64 {
        if let Err(e) = txn.put(&bytes(i, 40), &bytes(i, 100_000)) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(TreeError::NoSpace(_))), "{err:?}");
    assert!(matches!(txn.put(b"b", b"2"), Err(TreeError::Poisoned)));
    assert!(matches!(txn.get(b"a"), Err(TreeError::Poisoned)));
    assert!(matches!(
        txn.range(b"", None).next(),
        Some(Err(TreeError::Poisoned))
    ));
    assert!(matches!(txn.write(), Err(TreeError::Poisoned)));
    assert_eq!(alloc.free_frames(), free_before);
    alloc.check_consistency().unwrap();
    // The base tree is untouched.
    assert_eq!(base.get(&pool, b"a").unwrap(), Some(b"1".to_vec()));
    base.check(&pool).unwrap();
}

#[test]
fn dropping_a_txn_or_its_frames_gives_them_back() {
    let (pool, alloc) = mem_pool();
    let free = alloc.free_frames();
    {
        let mut txn = Txn::new(&Tree::empty(), &pool, &alloc, 1);
        for i in 0..300u64 {
            txn.put(&bytes(i, 30), &bytes(i, 3000)).unwrap();
        }
        assert!(!txn.allocated().is_empty());
    }
    assert_eq!(alloc.free_frames(), free);
    let mut txn = Txn::new(&Tree::empty(), &pool, &alloc, 1);
    txn.put(b"k", &bytes(1, 5000)).unwrap();
    let w = txn.write().unwrap();
    assert_eq!(w.frames.frames(), 3);
    drop(w);
    assert_eq!(alloc.free_frames(), free);
}
