//! Property tests of the superblock and of open: arbitrary bytes never panic, damage to one
//! slot never loses the pool, and a torn superblock commit (either of its two writes) leaves
//! the old or the new state.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use pfnfs_alloc::layout::{POOL_BYTES_MIN, SUPERBLOCK_BYTES};
use pfnfs_alloc::superblock::Slot;
use pfnfs_alloc::{FRAME_SIZE, MemBackend, Pool, PoolBackend, PoolError, Superblock};

/// The first two frames of a freshly formatted 16 MiB pool after one commit: its current
/// superblock has `seq` 4 (in A), its copy `seq` 3 (in B).
fn header() -> &'static (Vec<u8>, Superblock) {
    static HEADER: OnceLock<(Vec<u8>, Superblock)> = OnceLock::new();
    HEADER.get_or_init(|| {
        let mem = Arc::new(MemBackend::new(POOL_BYTES_MIN));
        let pool = Pool::format_backend("fuzz", Box::new(mem.clone())).unwrap();
        let mut sb = pool.superblock();
        sb.mounted = true;
        pool.commit_superblock(sb).unwrap();
        let sb = pool.superblock();
        assert_eq!(sb.seq, 4);
        (mem.read_vec(0, 2 * FRAME_SIZE as usize).unwrap(), sb)
    })
}

/// A pool image with `head` as its first two frames (the rest zero, as after mkfs).
fn backend_with(head: &[u8]) -> Box<dyn PoolBackend> {
    let mem = MemBackend::new(POOL_BYTES_MIN);
    mem.write(0, head).unwrap();
    Box::new(mem)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(sb) = Superblock::decode(&bytes) {
            prop_assert!(sb.validate().is_ok());
            prop_assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
        }
    }

    /// Any damage confined to one slot: the pool still opens (from the other slot), unless the
    /// damage makes that slot claim a newer format, which is refused as such.
    #[test]
    fn one_damaged_slot_never_loses_the_pool(
        damaged_a in any::<bool>(),
        edits in proptest::collection::vec((0..SUPERBLOCK_BYTES, any::<u8>()), 1..8),
    ) {
        let (head, current) = header();
        let mut head = head.clone();
        let slot = if damaged_a { Slot::A } else { Slot::B };
        let base = slot.offset() as usize;
        for (pos, byte) in edits {
            head[base + pos] = byte;
        }
        match Pool::open_backend("fuzz", backend_with(&head), true) {
            Ok(pool) => {
                let sb = pool.superblock();
                prop_assert!(sb.seq == current.seq || sb.seq == current.seq - 1, "seq {}", sb.seq);
                prop_assert_eq!(sb.uuid, current.uuid);
                prop_assert_eq!(pool.data_region().end().0 * FRAME_SIZE, pool.len_bytes());
            }
            Err(PoolError::UnsupportedVersion { found, .. }) => prop_assert!(found > 2),
            Err(e) => prop_assert!(false, "damage to slot {} alone lost the pool: {}", slot, e),
        }
    }

    /// Arbitrary damage anywhere in the header: open answers, it never panics, and what it
    /// opens is self-consistent.
    #[test]
    fn open_never_panics_on_damaged_headers(
        edits in proptest::collection::vec((0..2 * FRAME_SIZE as usize, any::<u8>()), 0..32),
    ) {
        let (head, _) = header();
        let mut head = head.clone();
        for (pos, byte) in edits {
            head[pos] = byte;
        }
        if let Ok(pool) = Pool::open_backend("fuzz", backend_with(&head), false) {
            let sb = pool.superblock();
            prop_assert!(sb.validate().is_ok());
            let data = pool.data_region();
            prop_assert!(pool.read_vec(data.start.byte_offset(), 1).is_ok());
            prop_assert!(pool.read_vec(data.end().byte_offset() - 1, 1).is_ok());
        }
    }

    /// A crash while a commit writes one of its two slots: each 8-byte word of that slot is
    /// either the old or the new contents (8-byte atomicity, any order). During the first
    /// write open yields the old state or, only if every word made it, the new one; during
    /// the second (the first durable) always the new one.
    #[test]
    fn torn_commit_leaves_old_or_new(
        second in any::<bool>(),
        new_words in proptest::collection::vec(any::<bool>(), SUPERBLOCK_BYTES / 8),
    ) {
        let (head, current) = header();
        let mut first = current.clone();
        first.seq += 1;
        first.mounted = false;
        first.meta.log_generation = 77;
        let mut base = head.clone();
        let target = if second {
            let at = first.slot().offset() as usize;
            base[at..at + SUPERBLOCK_BYTES].copy_from_slice(&first.encode());
            Superblock { seq: first.seq + 1, ..first.clone() }
        } else {
            first.clone()
        };
        let new_bytes = target.encode();
        let slot = target.slot().offset() as usize;
        let mut torn = base;
        for (word, take_new) in new_words.iter().enumerate() {
            if *take_new {
                let at = word * 8;
                torn[slot + at..slot + at + 8].copy_from_slice(&new_bytes[at..at + 8]);
            }
        }
        let pool = Pool::open_backend("torn", backend_with(&torn), true).unwrap();
        let got = pool.superblock();
        if torn[slot..slot + SUPERBLOCK_BYTES] == new_bytes[..] {
            prop_assert_eq!(got, target);
        } else if second {
            prop_assert_eq!(got, first);
        } else {
            prop_assert_eq!(&got, current);
        }
    }
}
