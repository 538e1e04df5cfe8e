//! The allocator fuzzed against a bitmap model, after TigerBeetle's `free_set_fuzz`.
//!
//! The model keeps one `bool` per frame (fine in a test, never in the allocator) and the list
//! of ranges the test holds. Every step runs the same operation on both, predicts the result
//! from the model alone, and then compares everything: the free set, the stats, the internal
//! invariants (`check_consistency`) and the policy (goal honoured, one range when one fits,
//! 2 MiB alignment when possible, best fit in a single group), and the change tracking: a
//! group that `take_dirty_groups` does not report has the same free extents as at the previous
//! call, and the per-group extents are the model's free runs cut at group boundaries. The end
//! of each case reloads the allocator from its free-set image, and from its per-group
//! extents, and demands the identical free set.

use pfnfs_alloc::{AllocError, ExtentAllocator, Frames, HUGE_FRAMES, Pfn, PfnRange};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Goal {
    None,
    /// Just after a held range: a file being appended to.
    AfterHeld(usize),
    /// The k-th free frame (mod the free count).
    FreeFrame(usize),
    /// The k-th busy frame.
    BusyFrame(usize),
    /// Anywhere near the region, possibly outside it.
    Near(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        frames: u64,
        goal: Goal,
    },
    /// Frees a piece (or all) of a held range.
    FreeHeld {
        idx: usize,
        skip_pm: u64,
        len_pm: u64,
    },
    /// Frees an arbitrary range near the region: busy, free, half and half, or outside.
    FreeAny {
        off: u64,
        len: u64,
    },
    /// Frees a range starting at the k-th free frame: always a double free.
    DoubleFree {
        k: usize,
        len: u64,
    },
    /// Reserves an arbitrary range near the region.
    Reserve {
        off: u64,
        len: u64,
    },
}

/// Frames below/after the region that arbitrary ranges may reach into.
const SLACK: u64 = 64;

fn goal_strategy() -> impl Strategy<Value = Goal> {
    prop_oneof![
        3 => Just(Goal::None),
        3 => any::<usize>().prop_map(Goal::AfterHeld),
        2 => any::<usize>().prop_map(Goal::FreeFrame),
        1 => any::<usize>().prop_map(Goal::BusyFrame),
        1 => (0u64..6000).prop_map(Goal::Near),
    ]
}

fn op_strategy(region_len: u64) -> impl Strategy<Value = Op> {
    let frames = prop_oneof![
        6 => 1u64..=16,
        2 => 17u64..=300,
        3 => 512u64..=1100,
        1 => 1u64..=region_len + 10,
    ];
    prop_oneof![
        6 => (frames, goal_strategy()).prop_map(|(frames, goal)| Op::Alloc { frames, goal }),
        4 => (any::<usize>(), 0u64..1000, 0u64..=1000)
            .prop_map(|(idx, skip_pm, len_pm)| Op::FreeHeld { idx, skip_pm, len_pm }),
        1 => (0u64..region_len + 2 * SLACK, 1u64..200).prop_map(|(off, len)| Op::FreeAny { off, len }),
        1 => (any::<usize>(), 1u64..50).prop_map(|(k, len)| Op::DoubleFree { k, len }),
        2 => (0u64..region_len + 2 * SLACK, 1u64..600).prop_map(|(off, len)| Op::Reserve { off, len }),
    ]
}

/// Region start (aligned or not), length, and group size (None: the default, one group here).
fn config_strategy() -> impl Strategy<Value = (u64, u64, Option<u64>)> {
    (
        prop_oneof![Just(0u64), Just(37), Just(512), Just(1000), Just(SLACK)],
        1500u64..5000,
        prop_oneof![
            Just(None),
            Just(Some(512u64)),
            Just(Some(1024)),
            Just(Some(1536))
        ],
    )
}

struct Model {
    region: PfnRange,
    /// free[i] is frame region.start + i.
    free: Vec<bool>,
    /// Ranges the test holds: disjoint, exactly the busy frames.
    held: Vec<PfnRange>,
    /// Group ranges (from the allocator; their tiling is checked by check_consistency and by
    /// the geometry test in allocator.rs).
    groups: Vec<PfnRange>,
}

fn r(start: u64, len: u64) -> PfnRange {
    PfnRange::new(Pfn(start), len).expect("valid range")
}

impl Model {
    fn idx(&self, pfn: u64) -> usize {
        (pfn - self.region.start.0) as usize
    }

    fn all_free(&self, x: PfnRange) -> bool {
        (x.start.0..x.end().0).all(|p| self.free[self.idx(p)])
    }

    fn any_free(&self, x: PfnRange) -> bool {
        (x.start.0..x.end().0).any(|p| self.free[self.idx(p)])
    }

    fn set(&mut self, x: PfnRange, free: bool) {
        for p in x.start.0..x.end().0 {
            let i = self.idx(p);
            self.free[i] = free;
        }
    }

    fn free_count(&self) -> u64 {
        self.free.iter().filter(|&&f| f).count() as u64
    }

    /// Free runs, each cut at group boundaries (as the allocator stores them).
    fn stored_extents(&self) -> Vec<PfnRange> {
        let mut out = Vec::new();
        for g in &self.groups {
            let mut run: Option<u64> = None;
            for p in g.start.0..=g.end().0 {
                let f = p < g.end().0 && self.free[self.idx(p)];
                match (f, run) {
                    (true, None) => run = Some(p),
                    (false, Some(s)) => {
                        out.push(r(s, p - s));
                        run = None;
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Free runs across the whole region (the coalesced view `free_extents` returns).
    fn extents(&self) -> Vec<PfnRange> {
        let mut out: Vec<PfnRange> = Vec::new();
        for x in self.stored_extents() {
            match out.last_mut() {
                Some(last) if last.end() == x.start => last.len += x.len,
                _ => out.push(x),
            }
        }
        out
    }

    fn nth_frame(&self, k: usize, free: bool) -> Option<u64> {
        let n = self.free.iter().filter(|&&f| f == free).count();
        if n == 0 {
            return None;
        }
        let i = self
            .free
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f == free)
            .nth(k % n)?
            .0;
        Some(self.region.start.0 + i as u64)
    }

    /// Removes `x` (all busy) from the held list, keeping what is left of each held range.
    fn unhold(&mut self, x: PfnRange) {
        let mut next = Vec::with_capacity(self.held.len() + 1);
        for h in self.held.drain(..) {
            if !h.overlaps(&x) {
                next.push(h);
                continue;
            }
            if let Some(head) = PfnRange::from_bounds(h.start, x.start) {
                next.push(head);
            }
            if let Some(tail) = PfnRange::from_bounds(x.end(), h.end()) {
                next.push(tail);
            }
        }
        self.held = next;
    }

    /// A range near the region from an offset into `[start - SLACK, end + SLACK)`.
    fn near(&self, off: u64, len: u64) -> Option<PfnRange> {
        let start = (self.region.start.0 + off).checked_sub(SLACK)?;
        PfnRange::new(Pfn(start), len)
    }
}

fn check_same(a: &ExtentAllocator, m: &Model, step: usize, op: &Op) -> Result<(), TestCaseError> {
    let ctx = || format!("after step {step}: {op:?}");
    if let Err(e) = a.check_consistency() {
        return Err(TestCaseError::fail(format!("{}: {e}", ctx())));
    }
    prop_assert_eq!(a.free_extents(), m.extents(), "{}", ctx());
    let stored = m.stored_extents();
    let s = a.stats();
    prop_assert_eq!(s.total_frames, m.region.len);
    prop_assert_eq!(s.free_frames, m.free_count(), "{}", ctx());
    prop_assert_eq!(a.free_frames(), m.free_count(), "{}", ctx());
    prop_assert_eq!(s.free_extents, stored.len() as u64, "{}", ctx());
    prop_assert_eq!(
        s.largest_free_frames,
        stored.iter().map(|x| x.len).max().unwrap_or(0)
    );
    // The held ranges are disjoint and cover exactly the busy frames: no frame is held twice.
    let mut busy = vec![false; m.free.len()];
    for h in &m.held {
        for p in h.start.0..h.end().0 {
            let i = m.idx(p);
            prop_assert!(!busy[i], "frame {:#x} held twice ({})", p, ctx());
            busy[i] = true;
        }
    }
    for (i, (&b, &f)) in busy.iter().zip(&m.free).enumerate() {
        prop_assert!(
            b != f,
            "frame {:#x}: held {} but free {} ({})",
            i,
            b,
            f,
            ctx()
        );
    }
    Ok(())
}

/// Checks an allocation's result against the model before the model is updated.
fn check_allocation(
    a_is_single_group: bool,
    m: &Model,
    frames: u64,
    goal: Option<Pfn>,
    got: &[PfnRange],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.iter().map(|x| x.len).sum::<u64>(), frames);
    for x in got {
        prop_assert!(m.region.covers(x), "{} outside the region", x);
        prop_assert!(m.all_free(*x), "{} was not free: handed out twice", x);
    }
    for w in got.windows(2) {
        prop_assert!(
            w[0].end() < w[1].start,
            "pieces not sorted/merged: {:?}",
            got
        );
    }
    // 1. The goal is taken exactly when the whole run from it is free.
    if let Some(g) = goal
        && let Some(want) = PfnRange::new(g, frames)
        && m.region.covers(&want)
        && m.all_free(want)
    {
        prop_assert_eq!(got, &[want][..], "goal {} ignored", g);
        return Ok(());
    }
    let stored = m.stored_extents();
    // 2. One range whenever one group has a run that holds it.
    let fits: Vec<PfnRange> = stored.iter().copied().filter(|x| x.len >= frames).collect();
    // (Without such a run the pieces may still merge into one range across a boundary.)
    if fits.is_empty() {
        return Ok(());
    }
    prop_assert_eq!(
        got.len(),
        1,
        "{} frames fit one extent but came in pieces",
        frames
    );
    let aligned_fit = |x: &PfnRange| x.start.0.next_multiple_of(HUGE_FRAMES) + frames <= x.end().0;
    let x = got[0];
    if frames >= HUGE_FRAMES {
        if fits.iter().any(aligned_fit) {
            prop_assert!(
                x.start.is_huge_aligned(),
                "{} frames at {} could be aligned",
                frames,
                x
            );
        } else if a_is_single_group {
            // Unaligned best fit.
            let best = fits.iter().min_by_key(|e| (e.len, e.start)).unwrap();
            prop_assert_eq!(x.start, best.start, "not the best fit among {:?}", fits);
        }
    } else if a_is_single_group {
        let best = fits.iter().min_by_key(|e| (e.len, e.start)).unwrap();
        prop_assert_eq!(x.start, best.start, "not the best fit among {:?}", fits);
    }
    Ok(())
}

fn run(config: (u64, u64, Option<u64>), ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (start, len, group) = config;
    let region = r(start, len);
    let a = match group {
        Some(g) => ExtentAllocator::new_empty_with_group_frames(region, g),
        None => ExtentAllocator::new_empty(region),
    };
    let groups: Vec<PfnRange> = (0..a.group_count())
        .filter_map(|i| a.group_range(i))
        .collect();
    let single = groups.len() == 1;
    prop_assert!(
        a.take_dirty_groups().is_empty(),
        "a new allocator starts clean"
    );
    // Each group's free extents as of the last `take_dirty_groups`.
    let mut stored: Vec<Vec<PfnRange>> = (0..a.group_count())
        .map(|i| a.group_free_extents(i))
        .collect();
    let mut m = Model {
        region,
        free: vec![true; len as usize],
        held: Vec::new(),
        groups,
    };

    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Alloc { frames, goal } => {
                let goal = match goal {
                    Goal::None => None,
                    Goal::AfterHeld(i) if !m.held.is_empty() => {
                        Some(m.held[i % m.held.len()].end())
                    }
                    Goal::AfterHeld(_) => None,
                    Goal::FreeFrame(k) => m.nth_frame(*k, true).map(Pfn),
                    Goal::BusyFrame(k) => m.nth_frame(*k, false).map(Pfn),
                    Goal::Near(off) => (start + off).checked_sub(SLACK).map(Pfn),
                };
                match a.allocate(*frames, goal).map(Frames::into_ranges) {
                    Ok(got) => {
                        prop_assert!(*frames <= m.free_count());
                        check_allocation(single, &m, *frames, goal, &got)?;
                        for x in got {
                            m.set(x, false);
                            m.held.push(x);
                        }
                    }
                    Err(AllocError::NoSpace { requested, free }) => {
                        prop_assert_eq!(requested, *frames);
                        prop_assert_eq!(free, m.free_count());
                        prop_assert!(*frames > m.free_count(), "NoSpace with enough free frames");
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("allocate: {e}"))),
                }
            }
            Op::FreeHeld {
                idx,
                skip_pm,
                len_pm,
            } => {
                if m.held.is_empty() {
                    continue;
                }
                let h = m.held[idx % m.held.len()];
                let skip = h.len * skip_pm / 1000;
                let plen = ((h.len - skip) * len_pm / 1000).max(1);
                let piece = h.sub(skip, plen).expect("piece inside the held range");
                prop_assert_eq!(a.free(piece), Ok(()));
                m.unhold(piece);
                m.set(piece, true);
            }
            Op::FreeAny { off, len } => {
                let Some(x) = m.near(*off, *len) else {
                    continue;
                };
                let res = a.free(x);
                if !m.region.covers(&x) {
                    prop_assert!(
                        matches!(res, Err(AllocError::OutOfRegion { .. })),
                        "{:?}",
                        res
                    );
                } else if m.any_free(x) {
                    prop_assert!(
                        matches!(res, Err(AllocError::DoubleFree { .. })),
                        "{:?}",
                        res
                    );
                } else {
                    prop_assert_eq!(res, Ok(()));
                    m.unhold(x);
                    m.set(x, true);
                }
            }
            Op::DoubleFree { k, len } => {
                let Some(p) = m.nth_frame(*k, true) else {
                    continue;
                };
                let x = r(p, (*len).min(m.region.end().0 - p));
                let res = a.free(x);
                prop_assert!(
                    matches!(res, Err(AllocError::DoubleFree { .. })),
                    "{:?}",
                    res
                );
            }
            Op::Reserve { off, len } => {
                let Some(x) = m.near(*off, *len) else {
                    continue;
                };
                let res = a.reserve(x);
                if !m.region.covers(&x) {
                    prop_assert!(
                        matches!(res, Err(AllocError::OutOfRegion { .. })),
                        "{:?}",
                        res
                    );
                } else if !m.all_free(x) {
                    prop_assert!(matches!(res, Err(AllocError::NotFree { .. })), "{:?}", res);
                } else {
                    prop_assert_eq!(res, Ok(()));
                    m.set(x, false);
                    m.held.push(x);
                }
            }
        }
        check_same(&a, &m, step, op)?;
        // Change tracking: only reported groups may differ; rewrite those.
        let dirty = a.take_dirty_groups();
        prop_assert!(dirty.windows(2).all(|w| w[0] < w[1]), "{:?}", dirty);
        for (i, before) in stored.iter_mut().enumerate() {
            let now = a.group_free_extents(i);
            if dirty.contains(&i) {
                *before = now;
            } else {
                prop_assert_eq!(
                    &now,
                    before,
                    "step {}: group {} changed but was not reported dirty ({:?})",
                    step,
                    i,
                    op
                );
            }
        }
        let flat: Vec<PfnRange> = stored.iter().flatten().copied().collect();
        prop_assert_eq!(flat, m.stored_extents(), "step {}: per-group extents", step);
    }

    // Reload from the image: exactly the same free set, stats and image.
    let image = a.encode_free_set();
    let b = ExtentAllocator::decode_free_set(region, &image)
        .map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(b.free_extents(), a.free_extents());
    prop_assert_eq!(b.encode_free_set(), image.clone());
    if let Some(g) = group {
        let c = ExtentAllocator::from_free_extents_with_group_frames(region, g, b.free_extents())
            .map_err(|e| TestCaseError::fail(format!("reload: {e}")))?;
        prop_assert_eq!(c.stats(), a.stats());
        prop_assert!(c.check_consistency().is_ok());
    } else {
        prop_assert_eq!(b.stats(), a.stats());
    }
    prop_assert!(b.check_consistency().is_ok());
    // Reload from the per-group extents (as stored one record per extent): same free set.
    let c = ExtentAllocator::from_group_extents(region, stored.into_iter().flatten())
        .map_err(|e| TestCaseError::fail(format!("reload from groups: {e}")))?;
    prop_assert_eq!(c.free_extents(), a.free_extents());
    // Giving everything back leaves the whole region free.
    for h in std::mem::take(&mut m.held) {
        prop_assert_eq!(a.free(h), Ok(()));
    }
    prop_assert_eq!(a.free_extents(), vec![region]);
    prop_assert!(a.check_consistency().is_ok());
    Ok(())
}

fn case_strategy() -> impl Strategy<Value = ((u64, u64, Option<u64>), Vec<Op>)> {
    config_strategy().prop_flat_map(|config| {
        (
            Just(config),
            prop::collection::vec(op_strategy(config.1), 1..120),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn allocator_matches_bitmap_model((config, ops) in case_strategy()) {
        run(config, ops)?;
    }
}
