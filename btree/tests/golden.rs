//! Golden bytes: small fixed trees written on a fresh pool, their frames compared with
//! constants, so that a change of the node or overflow layout cannot pass silently. If the
//! format changes on purpose, update docs/DESIGN.md 3.4 and these constants together.

mod common;

use pfnfs_alloc::{FRAME_SIZE, PfnRange, Pool};
use pfnfs_btree::Tree;

use common::{bytes, commit, mem_pool};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn frame_at(pool: &Pool, pfn: u64) -> Vec<u8> {
    pool.read_vec(pfn * FRAME_SIZE, FRAME_SIZE as usize)
        .unwrap()
}

#[test]
fn small_leaf_and_overflow_run() {
    let (pool, alloc) = mem_pool();
    let start = pool.data_region().start.0;
    let kvs = vec![
        (b"alpha".to_vec(), b"1".to_vec()),
        (b"beta".to_vec(), Vec::new()),
        (b"delta".to_vec(), bytes(4, 2000)),
        (b"gamma".to_vec(), b"three".to_vec()),
    ];
    let tree = commit(&pool, &alloc, &Tree::empty(), 7, &kvs);
    assert_eq!(tree.height(), 1);
    assert_eq!(tree.root().unwrap().0, start);
    let frames = tree.frames(&pool).unwrap();
    assert_eq!(
        frames,
        vec![
            PfnRange::new(pfnfs_alloc::Pfn(start), 1).unwrap(),
            PfnRange::new(pfnfs_alloc::Pfn(start + 1), 1).unwrap()
        ]
    );
    let leaf = frame_at(&pool, start);
    let run = frame_at(&pool, start + 1);
    // Header: magic, level 0, flags 0, count 4, heap, generation 7, crc, reserved.
    assert_eq!(&hex(&leaf[..32]), LEAF_HEADER);
    // Slots, then zeros up to the heap.
    assert_eq!(&hex(&leaf[32..40]), LEAF_SLOTS);
    // The entries, from the heap to the end of the frame.
    let heap = u32::from_le_bytes(leaf[12..16].try_into().unwrap()) as usize;
    assert_eq!(&hex(&leaf[heap..]), LEAF_ENTRIES);
    assert!(leaf[40..heap].iter().all(|&b| b == 0));
    // Overflow run: header, then the value, then zeros.
    assert_eq!(&hex(&run[..32]), RUN_HEADER);
    assert_eq!(&run[32..2032], bytes(4, 2000).as_slice());
    assert!(run[2032..].iter().all(|&b| b == 0));
}

/// A two-level tree from keys in ascending order: pins the layout of branch nodes and the split
/// policy (appends fill the left node) as well.
#[test]
fn two_level_tree_frames() {
    let (pool, alloc) = mem_pool();
    let kvs: Vec<(Vec<u8>, Vec<u8>)> = (0..60u64)
        .map(|i| {
            (
                format!("key-{i:04}-")
                    .into_bytes()
                    .into_iter()
                    .chain(bytes(i, 150))
                    .collect(),
                bytes(i + 1000, 40 + (i as usize % 7) * 300),
            )
        })
        .collect();
    let tree = commit(&pool, &alloc, &Tree::empty(), 3, &kvs);
    assert_eq!(tree.height(), 2);
    let mut crc = 0u32;
    let mut pfns = Vec::new();
    for r in tree.frames(&pool).unwrap() {
        for p in r.start.0..r.end().0 {
            pfns.push(p - pool.data_region().start.0);
            crc = crc32c::crc32c_append(crc, &frame_at(&pool, p));
        }
    }
    assert_eq!(
        (
            tree.root().unwrap().0 - pool.data_region().start.0,
            pfns.len(),
            crc
        ),
        TWO_LEVEL,
        "frames {pfns:?}"
    );
}

const LEAF_HEADER: &str = "5042544e4f44453200000400bf0f0000070000000000000025dccc4900000000";
const LEAF_SLOTS: &str = "f60fee0fcd0fbf0f";
const LEAF_ENTRIES: &str = "0500050067616d6d6174687265650500188064656c7461d0070000cb95315a01060000000000000100000000000000040000006265746105000100616c70686131";
const RUN_HEADER: &str = "50425456414c3032d007000000000000cb95315a000000000700000000000000";
const TWO_LEVEL: (u64, usize, u32) = (5, 34, 75344385);
