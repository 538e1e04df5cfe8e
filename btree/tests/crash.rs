//! Crashes with alloc's `CrashSimBackend`: a transaction written but whose root was never
//! committed leaves the old tree whole (copy-on-write never stores to a committed frame), and
//! torn node writes are caught by the nodes' crc when the new root is opened or walked.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use pfnfs_alloc::layout::POOL_BYTES_MIN;
use pfnfs_alloc::{CrashMode, CrashSimBackend, FRAME_SIZE, MemBackend, Pool};
use pfnfs_btree::{Tree, TreeError, Txn};

use common::{bytes, commit, pool_on};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn base_entries() -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..300u64)
        .map(|i| {
            (
                bytes(i, 10 + (i % 50) as usize),
                bytes(i + 7, if i % 10 == 0 { 3000 } else { 100 }),
            )
        })
        .collect()
}

fn read_all(pool: &Pool, tree: &Tree) -> Result<Model, TreeError> {
    tree.check(pool)?;
    tree.range(pool, &[], None).collect()
}

/// Builds the base tree, then writes a second transaction with a crash armed at its fence.
/// Returns the crash image, the base tree and model, the new tree, and the live bytes of the
/// frames the second transaction wrote.
/// (crash image, base tree, its model, new tree, live bytes of each new frame by PFN).
type Crashed = (Vec<u8>, Tree, Model, Tree, Vec<(u64, Vec<u8>)>);

fn crash_during_write(mode: CrashMode) -> Crashed {
    let sim = Arc::new(CrashSimBackend::new(POOL_BYTES_MIN));
    let (pool, alloc) = pool_on(Box::new(sim.clone()));
    let entries = base_entries();
    let base = commit(&pool, &alloc, &Tree::empty(), 1, &entries);
    let model: Model = entries.into_iter().collect();
    let old_frames = base.frames(&pool).unwrap();
    let old_bytes: Vec<Vec<u8>> = old_frames
        .iter()
        .map(|r| pool.read_frames(*r).unwrap())
        .collect();

    let mut txn = Txn::new(&base, &pool, &alloc, 2);
    for i in (0..300u64).step_by(3) {
        txn.put(&bytes(i, 10 + (i % 50) as usize), &bytes(i + 99, 1500))
            .unwrap();
    }
    for i in (1..300u64).step_by(7) {
        txn.delete(&bytes(i, 10 + (i % 50) as usize)).unwrap();
    }
    sim.arm_crash(sim.persist_points() + 1, mode);
    let w = txn.write().unwrap();
    assert_eq!(
        sim.crashed().map(|c| c.fences_completed),
        Some(sim.persist_points() - 1),
        "the crash hit the write's one fence"
    );
    // Copy-on-write: not one byte of the base tree's frames changed, even in the live image.
    for (r, before) in old_frames.iter().zip(&old_bytes) {
        assert_eq!(
            &pool.read_frames(*r).unwrap(),
            before,
            "committed frames {r} written"
        );
    }
    let written: Vec<(u64, Vec<u8>)> = w
        .frames
        .ranges()
        .iter()
        .flat_map(|r| r.start.0..r.end().0)
        .map(|p| {
            (
                p,
                pool.read_vec(p * FRAME_SIZE, FRAME_SIZE as usize).unwrap(),
            )
        })
        .collect();
    let new = w.tree.clone();
    drop(w);
    (sim.crash_image(), base, model, new, written)
}

fn reopen(image: &[u8]) -> Pool {
    Pool::open_backend("crashed", Box::new(MemBackend::from_bytes(image)), true).unwrap()
}

#[test]
fn clean_crash_keeps_old_tree_and_new_root_fails_to_open() {
    let (image, base, model, new, _) = crash_during_write(CrashMode::Clean);
    let pool = reopen(&image);
    let old = Tree::open(&pool, base.root().unwrap(), base.height()).unwrap();
    assert_eq!(read_all(&pool, &old).unwrap(), model);
    match Tree::open(&pool, new.root().unwrap(), new.height()) {
        Err(TreeError::Corrupt { pfn, .. }) => assert_eq!(pfn, new.root().unwrap().0),
        other => panic!("unwritten new root opened: {other:?}"),
    }
}

#[test]
fn torn_write_is_caught_by_crc_and_old_tree_survives() {
    let mut caught_at_open = 0;
    for seed in 0..12 {
        let (image, base, model, new, written) = crash_during_write(CrashMode::Torn { seed });
        let pool = reopen(&image);
        let old = Tree::open(&pool, base.root().unwrap(), base.height()).unwrap();
        assert_eq!(read_all(&pool, &old).unwrap(), model, "seed {seed}");
        // Every new frame is either whole or fails its check.
        let mut torn = 0;
        for (pfn, live) in &written {
            let durable = &image[(pfn * FRAME_SIZE) as usize..((pfn + 1) * FRAME_SIZE) as usize];
            if durable != live.as_slice() {
                torn += 1;
            }
        }
        assert!(torn > 0, "seed {seed}: nothing torn");
        match Tree::open(&pool, new.root().unwrap(), new.height()) {
            Err(TreeError::Corrupt { .. }) => caught_at_open += 1,
            Err(e) => panic!("seed {seed}: {e}"),
            // The root survived whole: the torn nodes below must be caught by the walk.
            Ok(t) => assert!(
                read_all(&pool, &t).is_err(),
                "seed {seed}: torn tree passed"
            ),
        }
    }
    assert!(caught_at_open > 0);
}
