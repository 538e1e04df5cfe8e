//! Performance sanity of the tree (figures, not assertions): puts/s for 1M sequential and 1M
//! random 24-byte keys with 64-byte values, one transaction per 10k puts; gets/s; and what
//! `Txn::write` costs. Runs on a RAM pool (`MemBackend`), so flushes are the CPU's and no
//! medium latency is included.
//!
//! ```sh
//! cargo run --release -p pfnfs-btree --example btree_rate [-- ENTRIES]
//! ```

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
    let (mut written_frames, mut txns) = (0u64, 0u64);
    let mut i = 0u64;
    let total = Instant::now();
    while i < entries {
        let mut txn = Txn::new(&tree, &pool, &alloc, txns + 1);
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
        txns += 1;
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
    let t = Instant::now();
    let gets = 200_000usize;
    for _ in 0..gets {
        let k = &keys[rng.random_range(0..keys.len())];
        assert!(tree.get(&pool, k).expect("get").is_some());
    }
    let t_get = t.elapsed();
    let t = Instant::now();
    let scanned = tree.range(&pool, &[], None).count();
    let t_scan = t.elapsed();
    println!(
        "{name}: {entries} puts in {txns} txns: {:.0} puts/s overall ({:.0} puts/s in put, {:.1} s), \
         write() {:.1} ms per txn ({:.0} frames, {:.0} MB/s), commit+free {:.2} ms per txn",
        entries as f64 / total.as_secs_f64(),
        entries as f64 / t_put.as_secs_f64(),
        t_put.as_secs_f64(),
        t_write.as_secs_f64() * 1e3 / txns as f64,
        written_frames as f64 / txns as f64,
        written_frames as f64 * 4096.0 / t_write.as_secs_f64() / 1e6,
        t_free.as_secs_f64() * 1e3 / txns as f64,
    );
    println!(
        "{name}: tree: height {}, {} nodes ({:.0}% full), {} entries; {:.0} gets/s (random keys); \
         full scan {:.0} entries/s",
        stats.height,
        stats.nodes,
        stats.entries as f64 * 94.0 / (stats.nodes as f64 * 4064.0) * 100.0,
        stats.entries,
        gets as f64 / t_get.as_secs_f64(),
        scanned as f64 / t_scan.as_secs_f64(),
    );
}

fn main() {
    let entries = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000u64);
    run(true, entries);
    run(false, entries);
}
