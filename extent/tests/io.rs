//! Deterministic tests of PFN-range I/O: contiguity, alignment, segments, ENOSPC rollback,
//! zero-reading rules and persist points.

mod common;

use common::*;
use pfnfs_alloc::{AllocError, ExtentAllocator, HUGE_FRAMES};
use pfnfs_extent::io::{allocate_unwritten, read_into, read_segments, write, zero_mapped};
use pfnfs_extent::{Extent, ExtentIoError, ExtentMap, FRAME_SIZE, PfnRange, ReadSegment};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn ext(file_frame: u64, pfns: PfnRange, unwritten: bool) -> Extent {
    Extent {
        file_frame,
        pfns,
        unwritten,
    }
}

#[test]
fn sequential_write_stays_contiguous() {
    let pool = mem_pool(32 * MIB);
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    let mut map = ExtentMap::new();
    let chunk = 64 * KIB;
    for i in 0..(8 * MIB / chunk) {
        let offset = i * chunk;
        let outcome = write(
            &pool,
            &alloc,
            &mut map,
            offset,
            &pattern(7, offset, chunk as usize),
        )
        .unwrap();
        assert_eq!(
            outcome.allocated.iter().map(|e| e.pfns.len).sum::<u64>(),
            chunk / FRAME_SIZE
        );
        assert!(outcome.converted.is_empty());
    }
    assert_eq!(map.mapped_frames(), 8 * MIB / FRAME_SIZE);
    assert_eq!(
        map.len(),
        1,
        "8 MiB in 64 KiB chunks: {:?}",
        map.iter().collect::<Vec<_>>()
    );
    assert_eq!(
        read_via_segments(&pool, &map, 0, 8 * MIB),
        pattern(7, 0, (8 * MIB) as usize)
    );
    map.check_invariants().unwrap();
    alloc.check_consistency().unwrap();
}

#[test]
fn large_write_is_huge_aligned() {
    let pool = mem_pool(32 * MIB);
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    // Leave the free space misaligned first.
    let mut other = ExtentMap::new();
    write(&pool, &alloc, &mut other, 0, &[1; 3 * 4096]).unwrap();
    let mut map = ExtentMap::new();
    let outcome = write(
        &pool,
        &alloc,
        &mut map,
        0,
        &pattern(3, 0, (4 * MIB) as usize),
    )
    .unwrap();
    for extent in &outcome.allocated {
        assert!(extent.pfns.start.is_huge_aligned(), "{extent:?}");
    }
    assert_eq!(map.huge_frames(), 4 * MIB / FRAME_SIZE);
    assert_eq!(map.len(), 1);
    assert_eq!(
        read_via_segments(&pool, &map, 0, 4 * MIB),
        pattern(3, 0, (4 * MIB) as usize)
    );
    assert_eq!(HUGE_FRAMES * FRAME_SIZE, 2 * MIB);
}

#[test]
fn read_inside_one_extent_is_one_borrowed_segment() {
    let pool = mem_pool(POOL_BYTES);
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    let mut map = ExtentMap::new();
    write(&pool, &alloc, &mut map, 0, &pattern(9, 0, MIB as usize)).unwrap();
    assert_eq!(map.len(), 1);
    let extent = map.iter().next().unwrap();
    let mut segments = Vec::new();
    // Unaligned at both ends.
    read_segments(&pool, &map, 1000, 500_000, &mut segments).unwrap();
    assert_eq!(segments.len(), 1);
    let ReadSegment::Pool(bytes) = segments[0] else {
        panic!("{segments:?}")
    };
    assert_eq!(bytes, &pattern(9, 0, MIB as usize)[1000..501_000]);
    // Borrowed from pool memory, not copied.
    // SAFETY: nothing stores to the pool while `frames` lives.
    let frames = unsafe { pool.borrow_frames(extent.pfns) }.unwrap();
    assert_eq!(bytes.as_ptr(), frames[1000..].as_ptr());
    // Within a single frame.
    read_segments(&pool, &map, 5000, 10, &mut segments).unwrap();
    assert_eq!(segments, vec![ReadSegment::Pool(&frames[5000..5010])]);
    // Empty read.
    read_segments(&pool, &map, 5000, 0, &mut segments).unwrap();
    assert!(segments.is_empty());
}

#[test]
fn read_across_extents_holes_and_unwritten() {
    let pool = mem_pool(POOL_BYTES);
    let a = PfnRange::new(data_pfn(&pool, 10), 2).unwrap();
    let b = PfnRange::new(data_pfn(&pool, 100), 2).unwrap();
    let c = PfnRange::new(data_pfn(&pool, 200), 1).unwrap();
    let d = PfnRange::new(data_pfn(&pool, 102), 1).unwrap(); // continues b in the pool only
    let e = PfnRange::new(data_pfn(&pool, 300), 1).unwrap();
    for (i, r) in [a, b, c, d, e].iter().enumerate() {
        pool.write(
            r.start.byte_offset(),
            &vec![0x10 + i as u8; r.len_bytes() as usize],
        )
        .unwrap();
    }
    // frames: 0-1 a | 2 hole | 3-4 b | 5 c (unwritten) | 6 hole | 7 d | 8 e
    let map = ExtentMap::from_extents([
        ext(0, a, false),
        ext(3, b, false),
        ext(5, c, true),
        ext(7, d, false),
        ext(8, e, false),
    ])
    .unwrap();
    let mut segments = Vec::new();
    read_segments(&pool, &map, 100, 9 * FRAME_SIZE - 200, &mut segments).unwrap();
    let f = FRAME_SIZE as usize;
    let (head, mid) = (
        pool.read_vec(a.start.byte_offset() + 100, 2 * f - 100)
            .unwrap(),
        pool.read_frames(b).unwrap(),
    );
    let (after, last) = (
        pool.read_frames(d).unwrap(),
        pool.read_vec(e.start.byte_offset(), f - 100).unwrap(),
    );
    let expect = vec![
        ReadSegment::Pool(&head),
        ReadSegment::Zeros(f),
        ReadSegment::Pool(&mid),
        ReadSegment::Zeros(2 * f), // unwritten c and the hole after it: one run
        ReadSegment::Pool(&after),
        ReadSegment::Pool(&last),
    ];
    assert_eq!(segments, expect);
    let mut buf = vec![0xEE; 9 * f - 200];
    read_into(&pool, &map, 100, &mut buf).unwrap();
    assert_eq!(
        buf,
        read_via_segments(&pool, &map, 100, 9 * FRAME_SIZE - 200)
    );
    assert_eq!(buf[0], 0x10);
    assert_eq!(buf[2 * f - 100], 0);
    assert_eq!(buf[6 * f - 100], 0, "unwritten frame reads as zeros");
}

#[test]
fn read_merges_extents_contiguous_in_pool() {
    // Two written extents that continue each other in the pool and the file are one extent;
    // a written and an unwritten one are not, and the unwritten one reads as zeros.
    let pool = mem_pool(POOL_BYTES);
    let r = PfnRange::new(data_pfn(&pool, 0), 4).unwrap();
    let (head, tail) = r.split_at(2);
    let map = ExtentMap::from_extents([ext(0, head.unwrap(), false), ext(2, tail.unwrap(), false)])
        .unwrap();
    assert_eq!(map.len(), 1);
    let mut segments = Vec::new();
    read_segments(&pool, &map, 1, 4 * FRAME_SIZE - 2, &mut segments).unwrap();
    assert_eq!(segments.len(), 1);
}

#[test]
fn enospc_leaves_map_and_allocator_unchanged() {
    let pool = mem_pool(POOL_BYTES);
    let (alloc, filler) = windowed_alloc(&pool, 10);
    let mut map = ExtentMap::new();
    // Frames 4..6 mapped; the write below needs hole 0..4 (fits) and hole 6..14 (does not).
    write(&pool, &alloc, &mut map, 4 * FRAME_SIZE, &[0xAB; 2 * 4096]).unwrap();
    let map_before = map.clone();
    let free_before = alloc.free_extents();
    let data_before = read_via_segments(&pool, &map, 0, 14 * FRAME_SIZE);
    let err = write(&pool, &alloc, &mut map, 100, &vec![0x55; 14 * 4096 - 200]).unwrap_err();
    assert!(
        matches!(err, ExtentIoError::Alloc(AllocError::NoSpace { .. })),
        "{err:?}"
    );
    assert_eq!(map, map_before);
    assert_eq!(alloc.free_extents(), free_before);
    assert_eq!(
        read_via_segments(&pool, &map, 0, 14 * FRAME_SIZE),
        data_before,
        "no byte stored"
    );
    alloc.check_consistency().unwrap();
    check_ownership(&pool, &alloc, &[&map], filler.as_slice()).unwrap();

    // Same for fallocate.
    let err = allocate_unwritten(&alloc, &mut map, 0, 14).unwrap_err();
    assert!(
        matches!(err, ExtentIoError::Alloc(AllocError::NoSpace { .. })),
        "{err:?}"
    );
    assert_eq!(map, map_before);
    assert_eq!(alloc.free_extents(), free_before);
}

#[test]
fn unwritten_reads_zero_over_garbage_and_converts_on_write() {
    let pool = mem_pool(POOL_BYTES);
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    let mut map = ExtentMap::new();
    let added = allocate_unwritten(&alloc, &mut map, 0, 4).unwrap();
    assert!(added.iter().all(|e| e.unwritten));
    assert_eq!(added.iter().map(|e| e.pfns.len).sum::<u64>(), 4);
    for extent in map.iter() {
        pool.write(
            extent.pfns.start.byte_offset(),
            &vec![0xFF; extent.pfns.len_bytes() as usize],
        )
        .unwrap();
    }
    assert_eq!(
        read_via_segments(&pool, &map, 0, 4 * FRAME_SIZE),
        vec![0; 4 * 4096]
    );
    // fallocate over a mapped range adds nothing.
    assert!(
        allocate_unwritten(&alloc, &mut map, 0, 4)
            .unwrap()
            .is_empty()
    );

    // A write into the middle of frames 1..3: head of frame 1 and tail of frame 2 are zeroed.
    let outcome = write(&pool, &alloc, &mut map, FRAME_SIZE + 100, &[7; 5000]).unwrap();
    assert!(outcome.allocated.is_empty());
    let converted: u64 = outcome.converted.iter().map(|e| e.pfns.len).sum();
    assert_eq!(converted, 2);
    assert!(outcome.converted.iter().all(|e| !e.unwritten));
    let mut expect = vec![0u8; 4 * 4096];
    expect[4096 + 100..4096 + 5100].fill(7);
    assert_eq!(read_via_segments(&pool, &map, 0, 4 * FRAME_SIZE), expect);
    // The written frames hold zeros outside the data, whatever they held before.
    let mid = map.lookup(1).unwrap();
    assert!(!mid.unwritten);
    let raw = pool
        .read_vec(
            mid.pfns.start.byte_offset() + (1 - mid.file_frame) * FRAME_SIZE,
            8192,
        )
        .unwrap();
    assert_eq!(raw, &expect[4096..3 * 4096]);
    map.check_invariants().unwrap();
}

#[test]
fn reused_frames_expose_no_stale_data() {
    let pool = mem_pool(POOL_BYTES);
    let (alloc, filler) = windowed_alloc(&pool, 16);
    let mut a = ExtentMap::new();
    write(&pool, &alloc, &mut a, 0, &[0xFF; 16 * 4096]).unwrap();
    let old: Vec<PfnRange> = a.iter().map(|e| e.pfns).collect();
    for range in a.truncate(0) {
        alloc.free(range).unwrap();
    }
    // Only a's old frames are free: b must reuse them.
    let mut b = ExtentMap::new();
    write(&pool, &alloc, &mut b, 5000, &[0x42; 10]).unwrap();
    let pfn = b.lookup(1).unwrap().pfns.start;
    assert!(old.iter().any(|r| r.contains(pfn)));
    let mut expect = vec![0u8; 8192];
    expect[5000..5010].fill(0x42);
    assert_eq!(read_via_segments(&pool, &b, 0, 8192), expect);
    // A write spanning several new frames with unaligned ends.
    write(&pool, &alloc, &mut b, 3 * 4096 + 1, &[0x43; 3 * 4096]).unwrap();
    let mut expect = vec![0u8; 7 * 4096];
    expect[5000..5010].fill(0x42);
    expect[3 * 4096 + 1..6 * 4096 + 1].fill(0x43);
    assert_eq!(read_via_segments(&pool, &b, 0, 7 * 4096), expect);
    // The tail frame's bytes past the write are zero in the pool itself (past EOF too).
    let last = b.lookup(6).unwrap();
    let raw = pool
        .read_frames(last.pfns.sub(6 - last.file_frame, 1).unwrap())
        .unwrap();
    assert_eq!(raw[0], 0x43);
    assert!(raw[1..].iter().all(|&x| x == 0));
    check_ownership(&pool, &alloc, &[&a, &b], filler.as_slice()).unwrap();
}

#[test]
fn write_flushes_every_store_and_fences_once() {
    let (pool, rec) = Recording::pool(POOL_BYTES);
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    let mut map = ExtentMap::new();
    // Build a fragmented file: frames 0-1 written, 2-3 hole, 4-5 unwritten, 6-9 written
    // elsewhere in the pool.
    write(&pool, &alloc, &mut map, 0, &[1; 2 * 4096]).unwrap();
    let mut spacer = ExtentMap::new();
    write(&pool, &alloc, &mut spacer, 0, &[2; 4096]).unwrap();
    allocate_unwritten(&alloc, &mut map, 4, 2).unwrap();
    write(&pool, &alloc, &mut map, 6 * FRAME_SIZE, &[3; 4 * 4096]).unwrap();
    assert!(map.len() >= 3);
    rec.take();

    let outcome = write(
        &pool,
        &alloc,
        &mut map,
        1000,
        &pattern(5, 1000, 9 * 4096 - 2000),
    )
    .unwrap();
    let events = rec.take();
    assert_eq!(
        events.iter().filter(|e| **e == Event::Fence).count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&Event::Fence),
        "the fence comes after every store and flush"
    );
    // Every stored byte is covered by a flush issued after the store.
    for (i, event) in events.iter().enumerate() {
        if let Event::Store { offset, len } = *event {
            let covered = events[i..].iter().any(|f| match *f {
                Event::Flush {
                    offset: fo,
                    len: fl,
                } => fo <= offset && offset + len <= fo + fl,
                _ => false,
            });
            assert!(covered, "store {offset:#x}+{len} never flushed: {events:?}");
        }
    }
    // The outcome describes every mapping change: hole 2-3 allocated, 4-5 converted.
    assert_eq!(
        outcome
            .allocated
            .iter()
            .map(|e| (e.file_frame, e.pfns.len))
            .collect::<Vec<_>>(),
        vec![(2, 2)]
    );
    assert_eq!(
        outcome
            .converted
            .iter()
            .map(|e| (e.file_frame, e.pfns.len))
            .collect::<Vec<_>>(),
        vec![(4, 2)]
    );
    let mut expect = vec![1u8; 10 * 4096];
    expect[1000..9 * 4096 - 1000].copy_from_slice(&pattern(5, 1000, 9 * 4096 - 2000));
    expect[9 * 4096 - 1000..].fill(3);
    assert_eq!(read_via_segments(&pool, &map, 0, 10 * FRAME_SIZE), expect);

    // A pure overwrite changes no mapping and still fences once.
    let outcome = write(&pool, &alloc, &mut map, 10, &[9; 100]).unwrap();
    assert!(outcome.is_empty());
    let events = rec.take();
    assert_eq!(
        events,
        vec![
            Event::Store {
                offset: map.lookup(0).unwrap().pfns.start.byte_offset() + 10,
                len: 100
            },
            Event::Flush {
                offset: map.lookup(0).unwrap().pfns.start.byte_offset() + 10,
                len: 100
            },
            Event::Fence,
        ]
    );
}

#[test]
fn zero_mapped_zeroes_written_bytes_only() {
    let (pool, rec) = Recording::pool(POOL_BYTES);
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    let mut map = ExtentMap::new();
    write(&pool, &alloc, &mut map, 0, &[5; 3 * 4096]).unwrap();
    allocate_unwritten(&alloc, &mut map, 3, 1).unwrap();
    rec.take();
    zero_mapped(&pool, &mut map, 100, 10 * FRAME_SIZE).unwrap();
    let events = rec.take();
    // One store + flush for the written run (frames 0-2), nothing for unwritten or holes.
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2], Event::Fence);
    let mut expect = vec![0u8; 5 * 4096];
    expect[..100].fill(5);
    assert_eq!(read_via_segments(&pool, &map, 0, 5 * FRAME_SIZE), expect);
    // Nothing mapped: no store, no fence.
    zero_mapped(&pool, &mut ExtentMap::new(), 0, 4096).unwrap();
    assert!(rec.take().is_empty());
}

#[test]
fn overflowing_ranges_are_refused_not_panicking() {
    let pool = mem_pool(POOL_BYTES);
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    let mut map = ExtentMap::new();
    assert!(matches!(
        read_segments(&pool, &map, u64::MAX, 2, &mut Vec::new()),
        Err(ExtentIoError::Overflow)
    ));
    assert!(matches!(
        write(&pool, &alloc, &mut map, u64::MAX - 1, &[1; 4]),
        Err(ExtentIoError::Overflow)
    ));
    assert!(matches!(
        allocate_unwritten(&alloc, &mut map, u64::MAX, 2),
        Err(ExtentIoError::Overflow)
    ));
    assert!(matches!(
        zero_mapped(&pool, &mut map, u64::MAX, 2),
        Err(ExtentIoError::Overflow)
    ));
    let mut buf = [0u8; 8];
    assert!(matches!(
        read_into(&pool, &map, u64::MAX - 3, &mut buf),
        Err(ExtentIoError::Overflow)
    ));
    // The last frame whose end a byte offset can name: a hole, reads as zeros.
    assert!(matches!(
        read_segments(&pool, &map, u64::MAX - 10, 10, &mut Vec::new()),
        Err(ExtentIoError::Overflow)
    ));
    assert!(matches!(
        write(&pool, &alloc, &mut map, u64::MAX - 100, &[1; 50]),
        Err(ExtentIoError::Overflow)
    ));
    let last = u64::MAX - (FRAME_SIZE - 1);
    let mut segments = Vec::new();
    read_segments(&pool, &map, last - 10, 10, &mut segments).unwrap();
    assert_eq!(segments, vec![ReadSegment::Zeros(10)]);
    // A mapping that points outside the pool is an error, not a panic.
    let bad = ExtentMap::from_extents([ext(
        0,
        PfnRange::new(pfnfs_extent::Pfn(1 << 40), 1).unwrap(),
        false,
    )])
    .unwrap();
    assert!(matches!(
        read_segments(&pool, &bad, 0, 10, &mut segments),
        Err(ExtentIoError::Pool(_))
    ));
    assert!(segments.is_empty());
    assert!(alloc.free_extents() == vec![pool.data_region()]);
}
