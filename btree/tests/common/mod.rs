//! Helpers shared by the tree's integration tests.
#![allow(dead_code)]

use pfnfs_alloc::layout::POOL_BYTES_MIN;
use pfnfs_alloc::{ExtentAllocator, MemBackend, PfnRange, Pool, PoolBackend};
use pfnfs_btree::{Tree, Txn};

/// A fresh 16 MiB RAM pool and an allocator with its whole data region free.
pub fn mem_pool() -> (Pool, ExtentAllocator) {
    pool_on(Box::new(MemBackend::new(POOL_BYTES_MIN)))
}

/// A fresh pool on `backend` and an allocator with its whole data region free.
pub fn pool_on(backend: Box<dyn PoolBackend>) -> (Pool, ExtentAllocator) {
    let pool = Pool::format_backend("btree-test", backend).expect("format");
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    (pool, alloc)
}

/// Sorted, coalesced copy of `ranges`; panics on overlap (a frame with two owners).
pub fn coalesce(mut ranges: Vec<PfnRange>, what: &str) -> Vec<PfnRange> {
    ranges.sort_unstable();
    let mut out: Vec<PfnRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.end() > r.start => panic!("{what}: {last} and {r} overlap"),
            Some(last) if last.end() == r.start => last.len += r.len,
            _ => out.push(r),
        }
    }
    out
}

/// Asserts that the given sets of ranges tile `region` exactly: no frame twice, none missing.
pub fn assert_tiles(region: PfnRange, sets: &[(&str, &[PfnRange])]) {
    let all: Vec<PfnRange> = sets.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    let names: Vec<&str> = sets.iter().map(|(n, _)| *n).collect();
    let tiled = coalesce(all, &names.join(" + "));
    assert_eq!(
        tiled,
        vec![region],
        "{} do not tile the data region",
        names.join(" + ")
    );
}

/// Writes `kvs` into `base` in one transaction and commits it (frames kept, freed released).
pub fn commit(
    pool: &Pool,
    alloc: &ExtentAllocator,
    base: &Tree,
    generation: u64,
    kvs: &[(Vec<u8>, Vec<u8>)],
) -> Tree {
    let mut txn = Txn::new(base, pool, alloc, generation);
    for (k, v) in kvs {
        txn.put(k, v).expect("put");
    }
    let w = txn.write().expect("write");
    w.frames.commit();
    for r in w.freed {
        alloc.free(r).expect("free");
    }
    w.tree
}

/// `n` bytes derived from `seed`.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
