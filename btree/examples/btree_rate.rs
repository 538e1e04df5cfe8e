//! Performance sanity of the tree (figures, not assertions). For 1M sequential and 1M random
//! 24-byte keys with 64-byte values, one transaction per 10k puts:
//! - building: puts/s, what `Txn::write` costs;
//! - reads of the built tree: random `get`s, `floor`s, `range`s of 1 and of 100 entries from
//!   random starts, a full scan;
//! - a transaction on the built tree: `Txn::get`s, `Txn::range`s of 100 entries, then
//!   10 x 10k `Txn::put`s of new keys and 10 x 10k `Txn::delete`s of present keys (each
//!   transaction written and committed; the rates count only the calls), and `delete`s of
//!   absent keys (the presence check alone).
//!
//! Runs on a RAM pool (`MemBackend`), so flushes are the CPU's and no medium latency is
//! included.
//!
//! ```sh
//! cargo run --release -p pfnfs-btree --example btree_rate [-- ENTRIES]
//! ```
//!
//! Figures at 1M entries, thousands per second, median of 3 alternating runs of each binary
//! on a shared 2-core VM (load 2.7-3.7 from other users: expect +-20%). "before" is the tree
//! that built whole nodes for ranges, floors and transaction reads; "after" reads them in
//! place (commit "btree: range, floor and txn reads read nodes in place").
//!
//! | operation                        | seq before | seq after | rnd before | rnd after |
//! |----------------------------------|-----------:|----------:|-----------:|----------:|
//! | `Tree::get`                      |        149 |       124 |        112 |       124 |
//! | `Tree::floor`                    |         45 |       137 |         57 |       149 |
//! | `Tree::range`, 1 entry           |         44 |       143 |         54 |       121 |
//! | `Tree::range`, 100 entries       |         21 |        68 |         25 |        43 |
//! | full scan, entries               |       4552 |      9866 |       4407 |      7368 |
//! | `Txn::get`                       |        194 |       370 |        177 |       303 |
//! | `Txn::range`, 100 entries        |         31 |        89 |         27 |        59 |
//! | `Txn::put`, new keys             |        496 |       559 |        138 |       155 |
//! | `Txn::delete`, present keys      |         84 |       121 |         87 |       134 |
//! | `Txn::delete`, absent keys       |        176 |       340 |        185 |       330 |
//! | building: puts in `put`          |       1588 |      1409 |        207 |       183 |
//!
//! `Tree::get` already read nodes in place before; the building rows only touch dirty nodes,
//! whose code did not change (their difference is within this machine's noise).

use std::time::{Duration, Instant};

use pfnfs_alloc::{ExtentAllocator, MemBackend, Pool};
use pfnfs_btree::{Tree, Txn};
use rand::{Rng, SeedableRng, rngs::StdRng};

const PER_TXN: usize = 10_000;

fn key(seq: bool, i: u64, rng: &mut StdRng) -> [u8; 24] {
    let mut k = [0u8; 24];
    if seq {
        k[16..].copy_from_slice(&i.to_be_bytes());
    } else {
        rng.fill(&mut k[..]);
    }
    k
}

/// Operations per second of `n` operations taking `t`.
fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

/// Writes `txn`, commits its frames and frees what it replaced; the new tree.
fn commit(txn: Txn<'_>, alloc: &ExtentAllocator) -> Tree {
    let w = txn.write().expect("write");
    w.frames.commit();
    for r in w.freed {
        alloc.free(r).expect("free");
    }
    w.tree
}

/// Random reads of the committed tree holding `keys`.
fn reads(name: &str, tree: &Tree, pool: &Pool, keys: &[[u8; 24]], rng: &mut StdRng) {
    let pick = |rng: &mut StdRng| keys[rng.random_range(0..keys.len())];
    let gets = 200_000usize;
    let t = Instant::now();
    for _ in 0..gets {
        assert!(tree.get(pool, &pick(rng)).expect("get").is_some());
    }
    let t_get = t.elapsed();
    let t = Instant::now();
    for _ in 0..gets {
        let mut k = pick(rng);
        k[23] ^= 1;
        tree.floor(pool, &k).expect("floor");
    }
    let t_floor = t.elapsed();
    let range_rate = |len: usize, n: usize, rng: &mut StdRng| {
        let t = Instant::now();
        let mut got = 0usize;
        for _ in 0..n {
            let start = pick(rng);
            for kv in tree.range(pool, &start, None).take(len) {
                kv.expect("range");
                got += 1;
            }
        }
        assert!(got >= n);
        rate(n, t.elapsed())
    };
    let range1 = range_rate(1, 200_000, rng);
    let range100 = range_rate(100, 20_000, rng);
    let t = Instant::now();
    let scanned = tree.range(pool, &[], None).count();
    let t_scan = t.elapsed();
    println!(
        "{name}: reads: {:.0} gets/s, {:.0} floors/s, {:.0} ranges of 1/s, {:.0} ranges of 100/s, \
         full scan {:.0} entries/s",
        rate(gets, t_get),
        rate(gets, t_floor),
        range1,
        range100,
        rate(scanned, t_scan),
    );
}

/// Transactions on the committed tree holding `keys`.
fn txns(
    name: &str,
    mut tree: Tree,
    pool: &Pool,
    alloc: &ExtentAllocator,
    keys: &mut Vec<[u8; 24]>,
    rng: &mut StdRng,
) {
    let value = [0xa5u8; 64];
    let rounds = 10usize;
    let mut generation = 1_000_000u64;
    // Reads through a transaction that has changed 10k random entries.
    let mut txn = Txn::new(&tree, pool, alloc, generation);
    for _ in 0..PER_TXN {
        txn.put(&keys[rng.random_range(0..keys.len())], &value)
            .expect("put");
    }
    let gets = 200_000usize;
    let t = Instant::now();
    for _ in 0..gets {
        let k = &keys[rng.random_range(0..keys.len())];
        assert!(txn.get(k).expect("txn get").is_some());
    }
    let t_get = t.elapsed();
    let ranges = 20_000usize;
    let t = Instant::now();
    for _ in 0..ranges {
        let k = &keys[rng.random_range(0..keys.len())];
        for kv in txn.range(k, None).take(100) {
            kv.expect("txn range");
        }
    }
    let t_range = t.elapsed();
    tree = commit(txn, alloc);
    let (mut t_put, mut t_del, mut t_absent) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        generation += 1;
        let mut txn = Txn::new(&tree, pool, alloc, generation);
        let t = Instant::now();
        for _ in 0..PER_TXN {
            let k = key(false, 0, rng);
            txn.put(&k, &value).expect("put");
            keys.push(k);
        }
        t_put += t.elapsed();
        tree = commit(txn, alloc);
    }
    for _ in 0..rounds {
        generation += 1;
        let mut txn = Txn::new(&tree, pool, alloc, generation);
        let t = Instant::now();
        for _ in 0..PER_TXN {
            let k = keys.swap_remove(rng.random_range(0..keys.len()));
            assert!(txn.delete(&k).expect("delete"));
        }
        t_del += t.elapsed();
        let t = Instant::now();
        for _ in 0..PER_TXN {
            // No key is 25 bytes long.
            let mut k = keys[rng.random_range(0..keys.len())].to_vec();
            k.push(0);
            assert!(!txn.delete(&k).expect("delete absent"));
        }
        t_absent += t.elapsed();
        tree = commit(txn, alloc);
    }
    let ops = rounds * PER_TXN;
    println!(
        "{name}: txn: {:.0} txn gets/s, {:.0} txn ranges of 100/s; {:.0} puts/s, {:.0} deletes/s, \
         {:.0} deletes of absent keys/s (at {} entries)",
        rate(gets, t_get),
        rate(ranges, t_range),
        rate(ops, t_put),
        rate(ops, t_del),
        rate(ops, t_absent),
        keys.len(),
    );
}

fn run(seq: bool, entries: u64) {
    let name = if seq { "sequential" } else { "random" };
    let pool =
        Pool::format_backend("rate", Box::new(MemBackend::new(4 << 30))).expect("format a pool");
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    let mut rng = StdRng::seed_from_u64(1);
    let value = [0x5au8; 64];
    let mut tree = Tree::empty();
    let mut keys: Vec<[u8; 24]> = Vec::with_capacity(entries as usize);
    let (mut t_put, mut t_write, mut t_free) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut written_frames, mut txns_done) = (0u64, 0u64);
    let mut i = 0u64;
    let total = Instant::now();
    while i < entries {
        let mut txn = Txn::new(&tree, &pool, &alloc, txns_done + 1);
        let t = Instant::now();
        for _ in 0..PER_TXN.min((entries - i) as usize) {
            let k = key(seq, i, &mut rng);
            txn.put(&k, &value).expect("put");
            keys.push(k);
            i += 1;
        }
        t_put += t.elapsed();
        let t = Instant::now();
        let w = txn.write().expect("write");
        t_write += t.elapsed();
        written_frames += w.frames.frames();
        txns_done += 1;
        let t = Instant::now();
        w.frames.commit();
        for r in w.freed {
            alloc.free(r).expect("free");
        }
        t_free += t.elapsed();
        tree = w.tree;
    }
    let total = total.elapsed();
    let stats = tree.check(&pool).expect("check");
    println!(
        "{name}: {entries} puts in {txns_done} txns: {:.0} puts/s overall ({:.0} puts/s in put, \
         {:.1} s), write() {:.1} ms per txn ({:.0} frames, {:.0} MB/s), commit+free {:.2} ms per \
         txn",
        rate(entries as usize, total),
        rate(entries as usize, t_put),
        t_put.as_secs_f64(),
        t_write.as_secs_f64() * 1e3 / txns_done as f64,
        written_frames as f64 / txns_done as f64,
        written_frames as f64 * 4096.0 / t_write.as_secs_f64() / 1e6,
        t_free.as_secs_f64() * 1e3 / txns_done as f64,
    );
    println!(
        "{name}: tree: height {}, {} nodes ({:.0}% full), {} entries",
        stats.height,
        stats.nodes,
        stats.entries as f64 * 94.0 / (stats.nodes as f64 * 4064.0) * 100.0,
        stats.entries,
    );
    reads(name, &tree, &pool, &keys, &mut rng);
    txns(name, tree, &pool, &alloc, &mut keys, &mut rng);
}

fn main() {
    let entries = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000u64);
    run(true, entries);
    run(false, entries);
}
