//! Deterministic tests of the extent allocator: policy, errors, group geometry, concurrency.
//! The randomised model test is in `allocator_model.rs`, the free-set image in
//! `allocator_image.rs`.

use std::sync::Arc;

use pfnfs_alloc::allocator::{MIN_GROUP_FRAMES, default_group_frames};
use pfnfs_alloc::{AllocError, ExtentAllocator, Frames, HUGE_FRAMES, Pfn, PfnRange};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn r(start: u64, len: u64) -> PfnRange {
    PfnRange::new(Pfn(start), len).expect("valid range")
}

fn sum(ranges: &[PfnRange]) -> u64 {
    ranges.iter().map(|x| x.len).sum()
}

fn consistent(a: &ExtentAllocator) {
    if let Err(e) = a.check_consistency() {
        panic!("inconsistent allocator: {e}");
    }
}

#[test]
fn new_empty_has_the_whole_region_free() {
    let region = r(1024, 100_000);
    let a = ExtentAllocator::new_empty(region);
    consistent(&a);
    assert_eq!(a.region(), region);
    assert_eq!(a.free_extents(), vec![region]);
    let s = a.stats();
    assert_eq!(s.total_frames, 100_000);
    assert_eq!(s.free_frames, 100_000);
    assert_eq!(s.free_extents, a.group_count() as u64);
    assert_eq!(a.free_frames(), 100_000);
}

#[test]
fn default_group_rule() {
    assert_eq!(default_group_frames(1), MIN_GROUP_FRAMES);
    assert_eq!(
        default_group_frames(16 * MIN_GROUP_FRAMES),
        MIN_GROUP_FRAMES
    );
    assert_eq!(
        default_group_frames(16 * MIN_GROUP_FRAMES + 1),
        MIN_GROUP_FRAMES + 512
    );
    assert_eq!(default_group_frames(1 << 30), 1 << 26);
    assert_eq!(default_group_frames(u64::MAX) % HUGE_FRAMES, 0);

    // A 4 GiB region from PFN 1536 (2 MiB-aligned): 16 groups of 65536 frames.
    let a = ExtentAllocator::new_empty(r(1536, 1 << 20));
    assert_eq!(a.group_frames(), MIN_GROUP_FRAMES);
    assert_eq!(a.group_count(), 16);
    // An unaligned start: boundaries stay 2 MiB-aligned, the first group is short.
    let a = ExtentAllocator::new_empty(r(1000, 200_000));
    assert_eq!(a.group_range(0), Some(r(1000, 65536 - 488)));
    assert_eq!(a.group_range(1), Some(r(65536 + 512, 65536)));
    let last = a.group_range(a.group_count() - 1).unwrap();
    assert_eq!(last.end(), Pfn(201_000));
    for i in 1..a.group_count() {
        assert!(a.group_range(i).unwrap().start.is_huge_aligned());
    }
    consistent(&a);
    // Chosen sizes round up to 512, and the group count is capped.
    let a = ExtentAllocator::new_empty_with_group_frames(r(0, 10_000), 1000);
    assert_eq!(a.group_frames(), 1024);
    let a = ExtentAllocator::new_empty_with_group_frames(r(0, u64::MAX), 0);
    assert!(a.group_count() as u64 <= pfnfs_alloc::allocator::MAX_GROUP_COUNT);
    consistent(&a);
}

#[test]
fn zero_frames_is_an_empty_success() {
    let a = ExtentAllocator::new_empty(r(0, 100));
    assert_eq!(a.allocate(0, None).map(Frames::into_ranges), Ok(vec![]));
    assert_eq!(
        a.allocate(0, Some(Pfn(5))).map(Frames::into_ranges),
        Ok(vec![])
    );
    assert_eq!(a.free_frames(), 100);
}

#[test]
fn a_frames_guard_gives_back_what_it_holds_unless_committed() {
    let a = ExtentAllocator::new_empty_with_group_frames(r(0, 4096), 512);
    {
        let mut held = a.allocate(100, None).unwrap();
        held.absorb(a.allocate(700, None).unwrap());
        held.absorb(Frames::none(&a));
        assert_eq!(held.frames(), 800);
        assert_eq!(a.free_frames(), 4096 - 800);
    }
    assert_eq!(a.free_frames(), 4096, "dropped: every frame back");
    assert_eq!(a.free_extents(), vec![r(0, 4096)]);
    consistent(&a);
    let kept = a.allocate(300, Some(Pfn(1000))).unwrap();
    assert_eq!(kept.ranges(), &[r(1000, 300)][..]);
    kept.commit();
    assert_eq!(a.free_frames(), 4096 - 300, "committed: kept");
    let mut empty = Frames::none(&a);
    assert!(empty.is_empty());
    empty.absorb(a.allocate(5, Some(Pfn(0))).unwrap());
    assert_eq!(empty.into_ranges(), vec![r(0, 5)]);
    assert_eq!(a.free_frames(), 4096 - 305);
    a.free(r(1000, 300)).unwrap();
    a.free(r(0, 5)).unwrap();
    consistent(&a);
}

/// A guard whose frames were freed behind its back is a broken invariant: debug builds panic
/// when it drops (release builds log it).
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "Frames guard")]
fn a_guard_whose_frames_were_freed_elsewhere_panics_in_debug_builds() {
    let a = ExtentAllocator::new_empty(r(0, 100));
    let held = a.allocate(10, Some(Pfn(0))).unwrap();
    a.free(r(0, 10)).unwrap();
    drop(held);
}

#[test]
fn goal_directed_allocation_continues_a_file() {
    let a = ExtentAllocator::new_empty(r(512, 50_000));
    let first = a.allocate(10, None).map(Frames::into_ranges).unwrap();
    assert_eq!(first.len(), 1);
    let mut file_end = first[0].end();
    // A second file growing elsewhere, also by goal, in between this file's appends.
    let mut other_end = Pfn(30_000);
    for round in 0..40 {
        let other = a
            .allocate(3 + round % 5, Some(other_end))
            .map(Frames::into_ranges)
            .unwrap();
        assert_eq!(other, vec![r(other_end.0, 3 + round % 5)]);
        other_end = other[0].end();
        let next = a
            .allocate(7, Some(file_end))
            .map(Frames::into_ranges)
            .unwrap();
        assert_eq!(next, vec![r(file_end.0, 7)], "round {round}");
        file_end = next[0].end();
        consistent(&a);
    }
    // The first file starts at the region start: two free runs remain, after each file.
    assert_eq!(a.free_extents().len(), 2);
}

#[test]
fn busy_or_outside_goal_falls_back() {
    let a = ExtentAllocator::new_empty(r(0, 1000));
    a.reserve(r(100, 10)).unwrap();
    let got = a
        .allocate(5, Some(Pfn(105)))
        .map(Frames::into_ranges)
        .unwrap();
    assert_eq!(sum(&got), 5);
    assert!(!got[0].overlaps(&r(100, 10)));
    // The goal is free but too short a run is free from it: no partial goal allocation.
    let got = a
        .allocate(10, Some(Pfn(95)))
        .map(Frames::into_ranges)
        .unwrap();
    assert_ne!(got[0].start, Pfn(95));
    // Goals outside the region are ignored.
    assert_eq!(
        sum(&a
            .allocate(4, Some(Pfn(5000)))
            .map(Frames::into_ranges)
            .unwrap()),
        4
    );
    assert_eq!(
        sum(&a
            .allocate(4, Some(Pfn(u64::MAX)))
            .map(Frames::into_ranges)
            .unwrap()),
        4
    );
    consistent(&a);
}

#[test]
fn goal_may_continue_across_a_group_boundary() {
    let a = ExtentAllocator::new_empty_with_group_frames(r(0, 2048), 512);
    assert_eq!(a.group_count(), 4);
    let got = a
        .allocate(100, Some(Pfn(462)))
        .map(Frames::into_ranges)
        .unwrap();
    assert_eq!(got, vec![r(462, 100)]);
    consistent(&a);
    a.free(got[0]).unwrap();
    consistent(&a);
    assert_eq!(a.free_extents(), vec![r(0, 2048)]);
}

#[test]
fn huge_requests_come_back_2mib_aligned() {
    // Unaligned region start: the first free frame is not aligned.
    let a = ExtentAllocator::new_empty(r(37, 20_000));
    for frames in [512, 1000, 1536, 2048] {
        let got = a.allocate(frames, None).map(Frames::into_ranges).unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            got[0].start.is_huge_aligned(),
            "{frames} frames at {}",
            got[0]
        );
        assert_eq!(got[0].len, frames);
    }
    consistent(&a);

    // Only band-sized extents (len in [512, 1023)): the one with an aligned fit is chosen.
    let free = [
        r(100, 600),
        r(1500, 530),
        r(3000, 520),
        r(4090, 514),
        r(5117, 515),
    ];
    let a = ExtentAllocator::from_free_extents(r(0, 8192), free).unwrap();
    assert_eq!(
        a.allocate(512, None).map(Frames::into_ranges).unwrap(),
        vec![r(5120, 512)]
    );
    consistent(&a);
    // No aligned run anywhere: unaligned best fit (smallest extent, lowest start).
    assert_eq!(
        a.allocate(512, None).map(Frames::into_ranges).unwrap(),
        vec![r(4090, 512)]
    );
    consistent(&a);

    // A roomy extent is preferred to the band and carved at its first aligned frame.
    let a = ExtentAllocator::from_free_extents(r(0, 8192), [r(1536, 512), r(2100, 2000)]).unwrap();
    assert_eq!(
        a.allocate(512, None).map(Frames::into_ranges).unwrap(),
        vec![r(2560, 512)]
    );
    consistent(&a);
    assert_eq!(
        a.free_extents(),
        vec![r(1536, 512), r(2100, 460), r(3072, 1028)]
    );
}

#[test]
fn aligned_run_is_found_in_another_group() {
    // Group 0 has only an unaligned 600-frame run; group 1 has an aligned one.
    let a = ExtentAllocator::from_free_extents_with_group_frames(
        r(0, 4096),
        1024,
        [r(100, 600), r(1024 + 200, 900)],
    )
    .unwrap();
    assert_eq!(
        a.allocate(512, Some(Pfn(50)))
            .map(Frames::into_ranges)
            .unwrap(),
        vec![r(1536, 512)]
    );
    consistent(&a);
}

#[test]
fn small_requests_take_best_fit() {
    let free = [r(0, 10), r(100, 3), r(200, 5), r(300, 4), r(400, 4)];
    let a = ExtentAllocator::from_free_extents(r(0, 1000), free).unwrap();
    assert_eq!(
        a.allocate(4, None).map(Frames::into_ranges).unwrap(),
        vec![r(300, 4)]
    );
    assert_eq!(
        a.allocate(4, None).map(Frames::into_ranges).unwrap(),
        vec![r(400, 4)]
    );
    assert_eq!(
        a.allocate(4, None).map(Frames::into_ranges).unwrap(),
        vec![r(200, 4)]
    );
    assert_eq!(
        a.allocate(1, None).map(Frames::into_ranges).unwrap(),
        vec![r(204, 1)]
    );
    assert_eq!(a.free_extents(), vec![r(0, 10), r(100, 3)]);
    consistent(&a);
}

#[test]
fn fragmented_request_gathers_largest_first() {
    let a = ExtentAllocator::from_free_extents(r(0, 100), [r(0, 5), r(10, 7), r(20, 3)]).unwrap();
    // No extent holds 12: take the largest (7), then the best fit for the last 5.
    assert_eq!(
        a.allocate(12, None).map(Frames::into_ranges).unwrap(),
        vec![r(0, 5), r(10, 7)]
    );
    assert_eq!(a.free_extents(), vec![r(20, 3)]);
    consistent(&a);
}

#[test]
fn request_larger_than_a_group_spans_groups() {
    let a = ExtentAllocator::new_empty_with_group_frames(r(0, 4096), 512);
    let got = a.allocate(1500, None).map(Frames::into_ranges).unwrap();
    assert_eq!(sum(&got), 1500);
    for w in got.windows(2) {
        assert!(
            w[0].end() < w[1].start,
            "pieces sorted, disjoint and merged: {got:?}"
        );
    }
    consistent(&a);
    for x in got {
        a.free(x).unwrap();
    }
    assert_eq!(a.free_extents(), vec![r(0, 4096)]);
    consistent(&a);
}

#[test]
fn no_space_leaves_state_unchanged() {
    let a = ExtentAllocator::new_empty_with_group_frames(r(0, 2048), 512);
    for i in 0..64 {
        a.reserve(r(i * 32, 16)).unwrap();
    }
    let before = a.free_extents();
    let stats = a.stats();
    let free = a.free_frames();
    assert_eq!(free, 1024);
    assert_eq!(
        a.allocate(free + 1, None).map(Frames::into_ranges),
        Err(AllocError::NoSpace {
            requested: free + 1,
            free
        })
    );
    assert_eq!(
        a.allocate(u64::MAX, Some(Pfn(16))).map(Frames::into_ranges),
        Err(AllocError::NoSpace {
            requested: u64::MAX,
            free
        })
    );
    assert_eq!(a.free_extents(), before);
    assert_eq!(a.stats(), stats);
    consistent(&a);
    // Exactly all of it still works, as 64 pieces.
    let got = a.allocate(free, None).map(Frames::into_ranges).unwrap();
    assert_eq!(sum(&got), free);
    assert_eq!(got.len(), 64);
    assert_eq!(a.free_extents(), vec![]);
    consistent(&a);
}

#[test]
fn free_coalesces_with_both_neighbours() {
    let a = ExtentAllocator::new_empty(r(0, 300));
    let x = a.allocate(300, None).map(Frames::into_ranges).unwrap()[0];
    let (head, rest) = x.split_at(100);
    let (mid, tail) = rest.unwrap().split_at(100);
    let (head, mid, tail) = (head.unwrap(), mid.unwrap(), tail.unwrap());
    a.free(head).unwrap();
    a.free(tail).unwrap();
    assert_eq!(a.stats().free_extents, 2);
    a.free(mid).unwrap();
    assert_eq!(a.free_extents(), vec![r(0, 300)]);
    assert_eq!(a.stats().free_extents, 1);
    consistent(&a);
}

#[test]
fn double_free_and_out_of_region_change_nothing() {
    let a = ExtentAllocator::new_empty(r(100, 1000));
    a.reserve(r(200, 100)).unwrap();
    let before = a.free_extents();
    assert!(matches!(
        a.free(r(150, 10)),
        Err(AllocError::DoubleFree { .. })
    ));
    assert!(matches!(
        a.free(r(190, 20)),
        Err(AllocError::DoubleFree { .. })
    ));
    assert!(matches!(
        a.free(r(290, 20)),
        Err(AllocError::DoubleFree { .. })
    ));
    assert!(matches!(
        a.free(r(50, 10)),
        Err(AllocError::OutOfRegion { .. })
    ));
    assert!(matches!(
        a.free(r(1050, 100)),
        Err(AllocError::OutOfRegion { .. })
    ));
    assert!(matches!(
        a.free(r(u64::MAX - 1, 1)),
        Err(AllocError::OutOfRegion { .. })
    ));
    assert_eq!(a.free_extents(), before);
    consistent(&a);
    a.free(r(200, 100)).unwrap();
    assert!(matches!(
        a.free(r(200, 100)),
        Err(AllocError::DoubleFree { .. })
    ));
    assert_eq!(a.free_extents(), vec![r(100, 1000)]);
}

#[test]
fn free_across_groups_checks_every_piece_first() {
    let a = ExtentAllocator::new_empty_with_group_frames(r(0, 2048), 512);
    a.reserve(r(400, 300)).unwrap();
    assert_eq!(a.free_extents(), vec![r(0, 400), r(700, 1348)]);
    // Overlaps free space in group 0 only: the group 1 piece must not be inserted either.
    assert!(matches!(
        a.free(r(300, 300)),
        Err(AllocError::DoubleFree { .. })
    ));
    assert_eq!(a.free_extents(), vec![r(0, 400), r(700, 1348)]);
    consistent(&a);
    a.free(r(400, 300)).unwrap();
    assert_eq!(a.free_extents(), vec![r(0, 2048)]);
    // Stored per group: four extents, the largest one group.
    assert_eq!(a.stats().free_extents, 4);
    assert_eq!(a.stats().largest_free_frames, 512);
    consistent(&a);
}

#[test]
fn reserve_takes_exactly_the_range_or_nothing() {
    let a = ExtentAllocator::new_empty_with_group_frames(r(0, 2048), 512);
    a.reserve(r(10, 5)).unwrap();
    assert!(matches!(
        a.reserve(r(10, 5)),
        Err(AllocError::NotFree { .. })
    ));
    assert!(matches!(
        a.reserve(r(5, 6)),
        Err(AllocError::NotFree { .. })
    ));
    assert!(matches!(
        a.reserve(r(2040, 9)),
        Err(AllocError::OutOfRegion { .. })
    ));
    // Across a boundary, with the far piece busy: nothing changes.
    a.reserve(r(600, 1)).unwrap();
    let before = a.free_extents();
    assert!(matches!(
        a.reserve(r(500, 101)),
        Err(AllocError::NotFree { .. })
    ));
    assert_eq!(a.free_extents(), before);
    a.reserve(r(500, 100)).unwrap();
    assert_eq!(a.free_extents(), vec![r(0, 10), r(15, 485), r(601, 1447)]);
    assert_eq!(a.free_frames(), 2048 - 106);
    consistent(&a);
}

#[test]
fn from_free_extents_validates_and_coalesces() {
    let region = r(0, 1000);
    let a = ExtentAllocator::from_free_extents(region, [r(20, 10), r(0, 10), r(10, 10)]).unwrap();
    assert_eq!(a.free_extents(), vec![r(0, 30)]);
    assert_eq!(a.stats().free_extents, 1);
    consistent(&a);
    assert!(matches!(
        ExtentAllocator::from_free_extents(region, [r(0, 10), r(5, 10)]),
        Err(AllocError::NotFree { .. })
    ));
    assert!(matches!(
        ExtentAllocator::from_free_extents(region, [r(0, 10), r(995, 10)]),
        Err(AllocError::OutOfRegion { .. })
    ));
    let a = ExtentAllocator::from_free_extents(region, []).unwrap();
    assert_eq!(a.free_frames(), 0);
    assert!(matches!(
        a.allocate(1, None).map(Frames::into_ranges),
        Err(AllocError::NoSpace {
            requested: 1,
            free: 0
        })
    ));
    consistent(&a);
}

#[test]
fn stats_report_fragmentation() {
    let a = ExtentAllocator::from_free_extents(r(0, 1000), [r(0, 300), r(500, 100)]).unwrap();
    let s = a.stats();
    assert_eq!(s.free_frames, 400);
    assert_eq!(s.free_extents, 2);
    assert_eq!(s.largest_free_frames, 300);
    assert!((s.fragmentation - 0.25).abs() < 1e-12);
    let full = ExtentAllocator::from_free_extents(r(0, 1000), []).unwrap();
    assert_eq!(full.stats().fragmentation, 0.0);
}

/// Threads allocate and free concurrently in a pool small enough to run out, so that both the
/// spill to other groups and the all-or-nothing rollback of a short gather run.
fn hammer(a: Arc<ExtentAllocator>, threads: u64, ops: usize) {
    let region = a.region();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let a = Arc::clone(&a);
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(0x5eed + t);
                let mut held: Vec<PfnRange> = Vec::new();
                let mut no_space = 0u64;
                for _ in 0..ops {
                    if held.is_empty() || rng.random_bool(0.55) {
                        let frames = match rng.random_range(0..10) {
                            0 => rng.random_range(512..1200),
                            1 => rng.random_range(100..400),
                            _ => rng.random_range(1..32),
                        };
                        let goal = held
                            .last()
                            .map(|x| x.end())
                            .filter(|_| rng.random_bool(0.5));
                        match a.allocate(frames, goal).map(Frames::into_ranges) {
                            Ok(got) => {
                                assert_eq!(got.iter().map(|x| x.len).sum::<u64>(), frames);
                                held.extend(got);
                            }
                            Err(AllocError::NoSpace { .. }) => no_space += 1,
                            Err(e) => panic!("allocate: {e}"),
                        }
                    } else {
                        let i = rng.random_range(0..held.len());
                        let x = held.swap_remove(i);
                        // Free a piece now and then, keeping the rest.
                        if x.len > 1 && rng.random_bool(0.3) {
                            let (h, t) = x.split_at(rng.random_range(1..x.len));
                            a.free(h.unwrap()).unwrap();
                            held.push(t.unwrap());
                        } else {
                            a.free(x).unwrap();
                        }
                    }
                }
                (held, no_space)
            })
        })
        .collect();
    let mut all: Vec<PfnRange> = Vec::new();
    for h in handles {
        let (held, _no_space) = h.join().expect("thread panicked");
        all.extend(held);
    }
    consistent(&a);
    all.sort();
    for w in all.windows(2) {
        assert!(
            w[0].end() <= w[1].start,
            "{} handed out twice: {} and {}",
            w[1].start,
            w[0],
            w[1]
        );
    }
    let held_frames = sum(&all);
    assert_eq!(held_frames + a.free_frames(), region.len);
    for x in &all {
        assert!(region.covers(x));
        // Every held frame is busy: reserving it must fail.
        assert!(matches!(a.reserve(*x), Err(AllocError::NotFree { .. })));
    }
    for x in all {
        a.free(x).unwrap();
    }
    consistent(&a);
    assert_eq!(a.free_extents(), vec![region]);
}

#[test]
fn concurrent_allocate_and_free_in_several_groups() {
    let a = Arc::new(ExtentAllocator::new_empty_with_group_frames(
        r(37, 16_000),
        1024,
    ));
    hammer(a, 4, 3000);
}

#[test]
fn concurrent_allocate_and_free_in_one_group() {
    let a = Arc::new(ExtentAllocator::new_empty(r(512, 6000)));
    assert_eq!(a.group_count(), 1);
    hammer(a, 3, 3000);
}

// ---------------------------------------------------------------------------------------------
// Change tracking

/// Groups of 512 frames over [512, 512 + 4 * 512): groups 0..4, each one 2 MiB.
fn four_groups() -> ExtentAllocator {
    let a = ExtentAllocator::new_empty_with_group_frames(r(512, 4 * 512), 512);
    assert_eq!(a.group_count(), 4);
    a
}

#[test]
fn new_allocators_start_clean() {
    let a = four_groups();
    assert_eq!(a.take_dirty_groups(), Vec::<usize>::new());
    let b = ExtentAllocator::from_free_extents(r(512, 4096), [r(600, 10), r(3000, 5)]).unwrap();
    assert!(b.take_dirty_groups().is_empty());
    let c = ExtentAllocator::from_group_extents(r(512, 4096), [r(3000, 5), r(600, 10)]).unwrap();
    assert!(c.take_dirty_groups().is_empty());
    assert_eq!(c.free_extents(), b.free_extents());
    let d = ExtentAllocator::decode_free_set(r(512, 4096), &b.encode_free_set()).unwrap();
    assert!(d.take_dirty_groups().is_empty());
}

#[test]
fn each_kind_of_change_marks_its_groups() {
    let a = four_groups();
    // allocate with a goal in group 2
    let held = a
        .allocate(10, Some(Pfn(512 + 2 * 512 + 5)))
        .unwrap()
        .into_ranges();
    assert_eq!(held, vec![r(512 + 2 * 512 + 5, 10)]);
    assert_eq!(a.take_dirty_groups(), vec![2]);
    assert!(a.take_dirty_groups().is_empty(), "taking clears the marks");
    // free
    a.free(held[0]).unwrap();
    assert_eq!(a.take_dirty_groups(), vec![2]);
    // reserve across a group boundary: both groups
    a.reserve(r(512 + 512 - 3, 6)).unwrap();
    assert_eq!(a.take_dirty_groups(), vec![0, 1]);
    // a free across the boundary too
    a.free(r(512 + 512 - 3, 6)).unwrap();
    assert_eq!(a.take_dirty_groups(), vec![0, 1]);
    // a guard dropped gives frames back: allocated and returned, both marked
    {
        let g = a.allocate(4, Some(Pfn(512 + 3 * 512))).unwrap();
        assert_eq!(a.take_dirty_groups(), vec![3]);
        drop(g);
    }
    assert_eq!(a.take_dirty_groups(), vec![3]);
    // a committed guard keeps its frames: one mark for the allocation only
    let g = a.allocate(4, Some(Pfn(512 + 3 * 512))).unwrap();
    g.commit();
    assert_eq!(a.take_dirty_groups(), vec![3]);
    // a gathered allocation touching every group
    let big = a.allocate(a.free_frames(), None).unwrap();
    assert_eq!(a.take_dirty_groups(), vec![0, 1, 2, 3]);
    drop(big);
    assert_eq!(a.take_dirty_groups(), vec![0, 1, 2, 3]);
    consistent(&a);
}

#[test]
fn failed_changes_mark_nothing() {
    let a = four_groups();
    let held = a.allocate(8, Some(Pfn(512 + 700))).unwrap().into_ranges();
    a.take_dirty_groups();
    assert!(a.free(r(512 + 10, 5)).is_err(), "double free");
    assert!(a.free(r(0, 5)).is_err(), "outside");
    assert!(a.reserve(held[0]).is_err(), "not free");
    assert!(a.allocate(a.free_frames() + 1, None).is_err(), "no space");
    assert!(a.take_dirty_groups().is_empty());
}

#[test]
fn marks_set_by_callers() {
    let a = four_groups();
    a.mark_dirty(r(512 + 512 + 100, 1));
    assert_eq!(a.take_dirty_groups(), vec![1]);
    // A range reaching past the region is clipped; one wholly outside marks nothing.
    a.mark_dirty(r(0, 512 + 600));
    assert_eq!(a.take_dirty_groups(), vec![0, 1]);
    a.mark_dirty(r(512 + 4 * 512, 100));
    a.mark_dirty(r(0, 100));
    assert!(a.take_dirty_groups().is_empty());
    a.mark_all_dirty();
    assert_eq!(a.take_dirty_groups(), vec![0, 1, 2, 3]);
}

#[test]
fn group_views() {
    let a = four_groups();
    assert_eq!(a.group_of(Pfn(511)), None);
    assert_eq!(a.group_of(Pfn(512)), Some(0));
    assert_eq!(a.group_of(Pfn(1023)), Some(0));
    assert_eq!(a.group_of(Pfn(1024)), Some(1));
    assert_eq!(a.group_of(Pfn(512 + 4 * 512 - 1)), Some(3));
    assert_eq!(a.group_of(Pfn(512 + 4 * 512)), None);
    // A free run across groups 1 and 2 is stored (and shown) as one extent per group.
    a.reserve(r(512, 512 + 500)).unwrap();
    a.reserve(r(512 + 2 * 512 + 20, 30)).unwrap();
    assert_eq!(a.group_free_extents(0), vec![]);
    assert_eq!(a.group_free_extents(1), vec![r(512 + 512 + 500, 12)]);
    assert_eq!(
        a.group_free_extents(2),
        vec![r(512 + 2 * 512, 20), r(512 + 2 * 512 + 50, 512 - 50)]
    );
    assert_eq!(a.group_free_extents(3), vec![r(512 + 3 * 512, 512)]);
    assert_eq!(a.group_free_extents(4), vec![]);
    // Reloading from every group's extents gives the same free set.
    let all: Vec<PfnRange> = (0..a.group_count())
        .flat_map(|i| a.group_free_extents(i))
        .collect();
    let b = ExtentAllocator::from_group_extents(a.region(), all).unwrap();
    assert_eq!(b.free_extents(), a.free_extents());
}

#[test]
fn overlaps_free_sees_any_free_frame_in_any_group() {
    let data = PfnRange::new(Pfn(1024), 4096).unwrap();
    let a = ExtentAllocator::new_empty_with_group_frames(data, 1024);
    let taken = a.allocate(4096, None).unwrap().into_ranges();
    assert_eq!(taken.iter().map(|r| r.len).sum::<u64>(), 4096);
    let r = |s: u64, l: u64| PfnRange::new(Pfn(s), l).unwrap();
    assert!(!a.overlaps_free(data));
    a.free(r(2047, 2)).unwrap(); // straddles the boundary between groups 0 and 1
    assert!(a.overlaps_free(r(2047, 1)));
    assert!(a.overlaps_free(r(2048, 1)));
    assert!(a.overlaps_free(r(1500, 1000)));
    assert!(!a.overlaps_free(r(1024, 1023)));
    assert!(!a.overlaps_free(r(2049, 100)));
    // Outside the data region counts as "not in use by a file", so it is refused too.
    assert!(a.overlaps_free(r(0, 1)));
    assert!(a.overlaps_free(r(5119, 2)));
}

/// A backing store with room for `room` frames: storage is counted per frame it made exist
/// (a set, as a real file's block map would), and frames given back return their room.
#[derive(Debug)]
struct SmallStore {
    room: u64,
    backed: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    releases: std::sync::atomic::AtomicU64,
}

impl pfnfs_alloc::Backing for SmallStore {
    fn ensure_backed(&self, range: PfnRange) -> std::io::Result<()> {
        let mut backed = self.backed.lock().unwrap();
        let new = (range.start.0..range.end().0)
            .filter(|f| !backed.contains(f))
            .count() as u64;
        if backed.len() as u64 + new > self.room {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        backed.extend(range.start.0..range.end().0);
        Ok(())
    }

    fn release(&self, range: PfnRange) -> std::io::Result<()> {
        self.releases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut backed = self.backed.lock().unwrap();
        for f in range.start.0..range.end().0 {
            backed.remove(&f);
        }
        Ok(())
    }
}

/// An allocation the backing store cannot hold fails with `NoBacking` (ENOSPC) and takes
/// nothing; freed frames give their storage back when it is needed (not before), so that the
/// same allocation then succeeds even where the allocator picks frames never used; and an
/// allocation that cannot fit even then fails once, without looping.
#[test]
fn backing_store_room_is_reserved_and_given_back_when_needed() {
    let data = PfnRange {
        start: Pfn(512),
        len: 64 * 1024,
    };
    let a = ExtentAllocator::new_empty(data);
    let store = Arc::new(SmallStore {
        room: 1000,
        backed: Default::default(),
        releases: Default::default(),
    });
    a.set_backing(store.clone());
    let first = a.allocate(600, None).expect("600 frames fit");
    let first_ranges = first.ranges().to_vec();
    first.commit();
    let free_before = a.free_frames();
    match a.allocate(600, None) {
        Err(AllocError::NoBacking { errno, .. }) => assert_eq!(errno, libc::ENOSPC),
        other => panic!("expected NoBacking, got {other:?}"),
    }
    assert_eq!(
        a.free_frames(),
        free_before,
        "a failed allocation takes nothing"
    );
    assert_eq!(store.backed.lock().unwrap().len(), 600);
    // Free the first 600 (their storage stays until needed), then ask for 900 elsewhere.
    for r in first_ranges {
        a.free(r).unwrap();
    }
    assert_eq!(
        store.backed.lock().unwrap().len(),
        600,
        "freeing gives nothing back"
    );
    let goal = Pfn(512 + 32 * 1024);
    let second = a
        .allocate(900, Some(goal))
        .expect("fits once freed frames give room back");
    assert!(store.releases.load(std::sync::atomic::Ordering::Relaxed) > 0);
    second.commit();
    // More than the store can ever hold: one failure, no loop.
    assert!(matches!(
        a.allocate(200, None),
        Err(AllocError::NoBacking { .. })
    ));
    a.check_consistency().unwrap();
}
