//! PFN-range I/O and extent maps against a `Vec<u8>` model per file.
//!
//! Two files share a pool whose allocator has only a small window of free frames (so ENOSPC
//! is common and allocations interleave between files, reusing each other's frames). Every
//! step is followed by: the invariants of both maps, the allocator's consistency check, the
//! global ownership check (every data frame owned exactly once by an extent, the free set or
//! the reserved filler) and a full read of both files compared byte for byte with the model.

mod common;

use common::*;
use pfnfs_alloc::{AllocError, PfnRange};
use pfnfs_extent::io::{allocate_unwritten, read_into, write, zero_mapped};
use pfnfs_extent::{ExtentIoError, ExtentMap, FRAME_SIZE};
use proptest::prelude::*;

/// Largest file size the model generates: 40 frames.
const MAX_BYTES: u64 = 40 * FRAME_SIZE;
/// Free frames in the pool: less than two full files.
const WINDOW_FRAMES: u64 = 64;

#[derive(Clone, Debug)]
enum Op {
    Write {
        file: usize,
        offset: u64,
        len: u64,
        seed: u8,
    },
    /// FALLOC_FL_PUNCH_HOLE | KEEP_SIZE.
    Punch {
        file: usize,
        offset: u64,
        len: u64,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    /// fallocate mode 0 (extends the size) or KEEP_SIZE.
    Fallocate {
        file: usize,
        offset: u64,
        len: u64,
        keep_size: bool,
    },
    Read {
        file: usize,
        offset: u64,
        len: u64,
    },
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..MAX_BYTES,
        (0..MAX_BYTES / FRAME_SIZE).prop_map(|f| f * FRAME_SIZE),
    ]
}

fn len() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..3 * FRAME_SIZE,
        (1..8u64).prop_map(|f| f * FRAME_SIZE),
        0..MAX_BYTES
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..2usize;
    prop_oneof![
        6 => (file.clone(), offset(), len(), any::<u8>())
            .prop_map(|(file, offset, len, seed)| Op::Write { file, offset, len, seed }),
        2 => (file.clone(), offset(), len()).prop_map(|(file, offset, len)| Op::Punch { file, offset, len }),
        2 => (file.clone(), 0..MAX_BYTES).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => (file.clone(), offset(), len(), any::<bool>())
            .prop_map(|(file, offset, len, keep_size)| Op::Fallocate { file, offset, len, keep_size }),
        3 => (file, offset(), len()).prop_map(|(file, offset, len)| Op::Read { file, offset, len }),
    ]
}

struct File {
    map: ExtentMap,
    model: Vec<u8>,
}

fn is_enospc(e: &ExtentIoError) -> bool {
    matches!(e, ExtentIoError::Alloc(AllocError::NoSpace { .. }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn io_matches_byte_model(ops in proptest::collection::vec(op(), 1..40)) {
        let pool = mem_pool(POOL_BYTES);
        let (alloc, filler) = windowed_alloc(&pool, WINDOW_FRAMES);
        let reserved: Vec<PfnRange> = filler.into_iter().collect();
        let mut files = [File { map: ExtentMap::new(), model: Vec::new() }, File { map: ExtentMap::new(), model: Vec::new() }];
        for op in ops {
            match op {
                Op::Write { file, offset, len, seed } => {
                    let f = &mut files[file];
                    let data = pattern(seed, offset, len as usize);
                    let (map_before, free_before) = (f.map.clone(), alloc.free_extents());
                    match write(&pool, &alloc, &mut f.map, offset, &data) {
                        Ok(outcome) => {
                            let end = (offset + len) as usize;
                            if len > 0 {
                                if f.model.len() < end {
                                    f.model.resize(end, 0);
                                }
                                f.model[offset as usize..end].copy_from_slice(&data);
                            }
                            // Replaying the outcome on the old map gives the new map: it lists
                            // every mapping change (what the filesystem journals).
                            let mut replay = map_before;
                            for extent in &outcome.allocated {
                                prop_assert!(!extent.unwritten);
                                replay.insert(*extent).unwrap();
                            }
                            for extent in &outcome.converted {
                                replay.mark_written(extent.file_frame, extent.pfns.len);
                            }
                            prop_assert_eq!(&replay, &f.map);
                        }
                        Err(e) if is_enospc(&e) => {
                            prop_assert_eq!(&f.map, &map_before);
                            prop_assert_eq!(alloc.free_extents(), free_before);
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("write: {e}"))),
                    }
                }
                Op::Punch { file, offset, len } => {
                    // What the filesystem does: unmap the whole frames inside the range,
                    // return them to the allocator, zero the partial edges in place.
                    let f = &mut files[file];
                    let end = offset + len;
                    let first_full = offset.div_ceil(FRAME_SIZE);
                    let end_full = end / FRAME_SIZE;
                    if first_full < end_full {
                        for range in f.map.punch(first_full, end_full - first_full) {
                            alloc.free(range).map_err(|e| TestCaseError::fail(e.to_string()))?;
                        }
                    }
                    zero_mapped(&pool, &mut f.map, offset, len).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let size = f.model.len() as u64;
                    if offset < size {
                        f.model[offset as usize..end.min(size) as usize].fill(0);
                    }
                }
                Op::Truncate { file, size } => {
                    let f = &mut files[file];
                    if size < f.model.len() as u64 {
                        let keep = size.div_ceil(FRAME_SIZE);
                        for range in f.map.truncate(keep) {
                            alloc.free(range).map_err(|e| TestCaseError::fail(e.to_string()))?;
                        }
                        zero_mapped(&pool, &mut f.map, size, keep * FRAME_SIZE - size)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                    f.model.resize(size as usize, 0);
                }
                Op::Fallocate { file, offset, len, keep_size } => {
                    let f = &mut files[file];
                    let first = offset / FRAME_SIZE;
                    let end_frame = (offset + len).div_ceil(FRAME_SIZE);
                    let (map_before, free_before) = (f.map.clone(), alloc.free_extents());
                    match allocate_unwritten(&alloc, &mut f.map, first, end_frame - first) {
                        Ok(added) => {
                            let mut replay = map_before;
                            for extent in &added {
                                prop_assert!(extent.unwritten);
                                replay.insert(*extent).unwrap();
                            }
                            prop_assert_eq!(&replay, &f.map);
                            let end = (offset + len) as usize;
                            if !keep_size && len > 0 && f.model.len() < end {
                                f.model.resize(end, 0);
                            }
                        }
                        Err(e) if is_enospc(&e) => {
                            prop_assert_eq!(&f.map, &map_before);
                            prop_assert_eq!(alloc.free_extents(), free_before);
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("fallocate: {e}"))),
                    }
                }
                Op::Read { file, offset, len } => {
                    let f = &files[file];
                    let size = f.model.len() as u64;
                    let offset = offset.min(size);
                    let len = len.min(size - offset);
                    let want = &f.model[offset as usize..(offset + len) as usize];
                    prop_assert_eq!(&read_via_segments(&pool, &f.map, offset, len)[..], want);
                    let mut buf = vec![0xEE; len as usize];
                    read_into(&pool, &f.map, offset, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(&buf[..], want);
                }
            }

            for f in &files {
                f.map.check_invariants().map_err(TestCaseError::fail)?;
                let size = f.model.len() as u64;
                prop_assert_eq!(&read_via_segments(&pool, &f.map, 0, size)[..], &f.model[..]);
                // Grown later, the file must read zeros past today's end: the mapped bytes
                // there hold zeros (or are unwritten/holes).
                let tail_end = (size.div_ceil(FRAME_SIZE) + 2) * FRAME_SIZE;
                let tail = read_via_segments(&pool, &f.map, size, tail_end - size);
                prop_assert!(tail.iter().all(|&b| b == 0), "stale bytes past EOF");
            }
            alloc.check_consistency().map_err(TestCaseError::fail)?;
            check_ownership(&pool, &alloc, &[&files[0].map, &files[1].map], &reserved).map_err(TestCaseError::fail)?;
        }
    }
}
