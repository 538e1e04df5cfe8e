//! `ExtentMap` against a per-frame model: after every operation the map must describe exactly
//! the model's frames, keep its invariants and answer lookups like the model.

use std::collections::BTreeSet;

use pfnfs_extent::{Extent, ExtentMap, Mapping, Pfn, PfnRange};
use proptest::prelude::*;

/// Logical frames the model covers.
const FILE_FRAMES: u64 = 96;

#[derive(Clone, Debug)]
enum Op {
    /// Insert at `file_frame` (clipped to the first hole there) `len` frames; `contiguous`
    /// places them right after the previous extent in the pool to exercise merging.
    Insert {
        file_frame: u64,
        len: u64,
        unwritten: bool,
        contiguous: bool,
    },
    Punch {
        file_frame: u64,
        frames: u64,
    },
    Truncate {
        keep: u64,
    },
    MarkWritten {
        file_frame: u64,
        frames: u64,
    },
    MarkUnwritten {
        file_frame: u64,
        frames: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..FILE_FRAMES, 1..20u64, any::<bool>(), any::<bool>())
            .prop_map(|(file_frame, len, unwritten, contiguous)| Op::Insert { file_frame, len, unwritten, contiguous }),
        2 => (0..FILE_FRAMES, 0..30u64).prop_map(|(file_frame, frames)| Op::Punch { file_frame, frames }),
        1 => (0..FILE_FRAMES + 8).prop_map(|keep| Op::Truncate { keep }),
        2 => (0..FILE_FRAMES, 0..30u64).prop_map(|(file_frame, frames)| Op::MarkWritten { file_frame, frames }),
        1 => (0..FILE_FRAMES, 0..30u64).prop_map(|(file_frame, frames)| Op::MarkUnwritten { file_frame, frames }),
    ]
}

/// Per logical frame: the pool frame and the unwritten flag.
type Model = Vec<Option<(u64, bool)>>;

fn frames_of(ranges: &[PfnRange]) -> BTreeSet<u64> {
    ranges.iter().flat_map(|r| r.start.0..r.end().0).collect()
}

fn check(map: &ExtentMap, model: &Model) -> Result<(), TestCaseError> {
    map.check_invariants().map_err(TestCaseError::fail)?;
    let mut seen: Model = vec![None; model.len()];
    for extent in map.iter() {
        for i in 0..extent.pfns.len {
            let f = (extent.file_frame + i) as usize;
            prop_assert!(f < seen.len(), "extent beyond the model: {:?}", extent);
            seen[f] = Some((extent.pfns.start.0 + i, extent.unwritten));
        }
    }
    prop_assert_eq!(&seen, model);
    prop_assert_eq!(map.mapped_frames(), model.iter().flatten().count() as u64);

    // Exact cover of a few windows.
    let mut out = Vec::new();
    for (start, len) in [(0, FILE_FRAMES), (3, 17), (40, 50), (FILE_FRAMES - 1, 10)] {
        map.mappings(start, len, &mut out);
        let mut cursor = start;
        for m in &out {
            prop_assert_eq!(m.file_frame(), cursor);
            prop_assert!(m.frames() > 0);
            for i in 0..m.frames() {
                let f = (cursor + i) as usize;
                let want = model.get(f).copied().flatten();
                match m {
                    Mapping::Mapped(e) => {
                        prop_assert_eq!(want, Some((e.pfns.start.0 + i, e.unwritten)))
                    }
                    Mapping::Hole { .. } => prop_assert_eq!(want, None),
                }
            }
            cursor += m.frames();
        }
        prop_assert_eq!(cursor, start + len);
    }

    for f in 0..FILE_FRAMES + 2 {
        let mapped = |g: u64| model.get(g as usize).copied().flatten().is_some();
        let data = (f..FILE_FRAMES).find(|&g| mapped(g));
        prop_assert_eq!(map.next_data(f), data);
        let hole = (f..).find(|&g| !mapped(g)).unwrap();
        prop_assert_eq!(map.next_hole(f), hole);
        let prev = (0..f).rev().find(|&g| mapped(g));
        let goal = prev.map(|g| {
            // Start of the extent containing g, then extrapolate from it.
            let extent = map.lookup(g).unwrap();
            Pfn(extent.pfns.start.0 + (f - extent.file_frame))
        });
        // goal_for uses the nearest extent *starting* before f.
        let expect = map
            .iter()
            .filter(|e| e.file_frame < f)
            .last()
            .map(|e| Pfn(e.pfns.start.0 + (f - e.file_frame)));
        prop_assert_eq!(map.goal_for(f), expect);
        if let (Some(g), Some(e)) = (goal, expect) {
            prop_assert_eq!(g, e);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn extent_map_matches_frame_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut map = ExtentMap::new();
        let mut model: Model = vec![None; FILE_FRAMES as usize];
        let mut next_pfn = 1000u64;
        let mut last_end = 1000u64;
        for op in ops {
            match op {
                Op::Insert { file_frame, len, unwritten, contiguous } => {
                    // Clip to the hole at file_frame (the map refuses overlap; check that too).
                    let len = len.min(FILE_FRAMES - file_frame);
                    let free = (file_frame..file_frame + len)
                        .take_while(|&f| model[f as usize].is_none())
                        .count() as u64;
                    let start = if contiguous { last_end } else { next_pfn + 7 };
                    if free < len {
                        let bad = Extent { file_frame, pfns: PfnRange::new(Pfn(start), len).unwrap(), unwritten };
                        prop_assert!(map.insert(bad).is_err());
                    }
                    if free == 0 {
                        continue;
                    }
                    let pfns = PfnRange::new(Pfn(start), free).unwrap();
                    map.insert(Extent { file_frame, pfns, unwritten }).unwrap();
                    for i in 0..free {
                        model[(file_frame + i) as usize] = Some((start + i, unwritten));
                    }
                    last_end = pfns.end().0;
                    next_pfn = next_pfn.max(last_end);
                }
                Op::Punch { file_frame, frames } => {
                    let mut expect = BTreeSet::new();
                    for f in file_frame..(file_frame + frames).min(FILE_FRAMES) {
                        if let Some((p, _)) = model[f as usize].take() {
                            expect.insert(p);
                        }
                    }
                    let freed = map.punch(file_frame, frames);
                    prop_assert_eq!(frames_of(&freed), expect);
                    prop_assert_eq!(freed.iter().map(|r| r.len).sum::<u64>(), frames_of(&freed).len() as u64);
                }
                Op::Truncate { keep } => {
                    let mut expect = BTreeSet::new();
                    for f in keep..FILE_FRAMES {
                        if let Some((p, _)) = model[f as usize].take() {
                            expect.insert(p);
                        }
                    }
                    prop_assert_eq!(frames_of(&map.truncate(keep)), expect);
                }
                Op::MarkWritten { file_frame, frames } => {
                    let mut expect = 0;
                    for f in file_frame..(file_frame + frames).min(FILE_FRAMES) {
                        if let Some((_, unwritten)) = model[f as usize].as_mut() {
                            if *unwritten {
                                expect += 1;
                            }
                            *unwritten = false;
                        }
                    }
                    let changed = map.mark_written(file_frame, frames);
                    prop_assert!(changed.iter().all(|e| !e.unwritten));
                    prop_assert_eq!(changed.iter().map(|e| e.pfns.len).sum::<u64>(), expect);
                }
                Op::MarkUnwritten { file_frame, frames } => {
                    let mut expect = 0;
                    for f in file_frame..(file_frame + frames).min(FILE_FRAMES) {
                        if let Some((_, unwritten)) = model[f as usize].as_mut() {
                            if !*unwritten {
                                expect += 1;
                            }
                            *unwritten = true;
                        }
                    }
                    let changed = map.mark_unwritten(file_frame, frames);
                    prop_assert!(changed.iter().all(|e| e.unwritten));
                    prop_assert_eq!(changed.iter().map(|e| e.pfns.len).sum::<u64>(), expect);
                }
            }
            check(&map, &model)?;
            // Rebuilding from the extents gives the same map (merging is canonical).
            prop_assert_eq!(&ExtentMap::from_extents(map.iter()).unwrap(), &map);
        }
    }
}
