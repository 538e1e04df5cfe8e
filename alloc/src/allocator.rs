//! The extent allocator: free space as extents, never as per-frame state.
//!
//! # Structure
//!
//! The data region is cut into *allocation groups* of [`ExtentAllocator::group_frames`] frames
//! (the first and the last group may be shorter). Each group keeps its free extents in a
//! `FreeExtents` (module `extents`): a `BTreeMap<start, len>` and a `BTreeSet<(len, start)>`,
//! behind its own `parking_lot::Mutex`, and publishes its free count in an `AtomicU64`. Memory
//! is proportional to the number of free extents; there is no bitmap and no per-frame entry
//! anywhere. The total free count is the sum of the group atomics: one shared counter would be
//! a cache line that every allocation in every group writes.
//!
//! # Group rule
//!
//! Group boundaries sit at `base + i * group_frames`, where `base` is the region start rounded
//! down to a 2 MiB boundary (512 frames) and `group_frames` is a multiple of 512, so every
//! boundary is 2 MiB-aligned. By default (see [`default_group_frames`])
//! `group_frames = round_up_512(max(ceil(span / 16), 65536))` with `span = region end - base`:
//! at most 16 groups, each at least 256 MiB. A free extent never crosses a group boundary, so
//! the largest extent the allocator stores, and the largest single range an allocation
//! without a goal can return, is one group.
//!
//! # Policy of [`ExtentAllocator::allocate`]
//!
//! 1. Goal: if `[goal, goal + frames)` is entirely free, take exactly that (one range, even
//!    across a group boundary). This keeps an appended file contiguous.
//! 2. One contiguous range, starting from the *home group* (the goal's group, else a group
//!    fixed per thread, the first threads' homes spread far apart) and spilling to the next
//!    groups in turn. Requests of at least 512 frames first look in every group for a
//!    2 MiB-aligned start (extents of at least `frames + 511` frames via the length index,
//!    then those of `[frames, frames + 511)` frames checking alignment); then best fit.
//!    Smaller requests take best fit (smallest extent that fits, ties lowest start) in the
//!    first group that has one.
//! 3. Several ranges: groups visited in order of their largest extent, each giving its largest
//!    extents until the rest fits one extent, which is then taken best fit. The result is
//!    sorted by start, with physically adjacent pieces merged.
//!
//! All or nothing: a request larger than the free count fails with `NoSpace` before step 3
//! takes anything; if concurrent allocations make step 3 come up short anyway, everything it
//! took is given back.
//!
//! # Change tracking
//!
//! The free set is stored on the pool as one record per free extent, rewritten per *changed
//! group* at each commit. Each group carries a dirty mark (an `AtomicBool` beside its
//! counter), set under the group lock by every change to its free set (allocate, free,
//! reserve, a [`Frames`] guard giving frames back, a rolled-back allocation) and taken by
//! [`ExtentAllocator::take_dirty_groups`]; [`ExtentAllocator::group_free_extents`] snapshots
//! one group. A new allocator (`new_empty*`, `from_free_extents*`, `decode_free_set`) starts
//! clean; callers mark groups themselves ([`ExtentAllocator::mark_dirty`],
//! [`ExtentAllocator::mark_all_dirty`]) when the stored set must be rewritten.
//!
//! # Invariants (checked by [`ExtentAllocator::check_consistency`])
//!
//! - The groups tile the region in order; every free extent lies inside its group.
//! - In each group: both indexes hold the same extents; extents are non-empty, disjoint and
//!   never adjacent (coalescing is complete); the group's counter and its published atomic
//!   are the sum of the lengths.
//!
//! # Locking
//!
//! Each group's mutex guards its extents and its counters. `allocate` holds at most one group
//! lock at a time, except in the goal step. Any operation that needs several groups (goal
//! step, `free`/`reserve` of a range crossing a boundary, `free_extents`, `stats`,
//! `check_consistency`) locks them in ascending group order, so there is no lock-order cycle.
//! A group's atomic is only stored while that group's lock is held; readers without the lock
//! (`free_frames`, the skip test in step 2) get a value it had recently. The dirty marks are
//! set under the lock too and cleared without it (`take_dirty_groups`).
//! No lock is held across a call out of this module.

mod extents;
mod frames;
pub mod image;

pub use self::frames::Frames;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, MutexGuard};

use self::extents::FreeExtents;
use crate::bad_frames::BadFrames;
use crate::error::AllocError;
use crate::pfn::{HUGE_FRAMES, Pfn, PfnRange};

/// Smallest default allocation group: 65536 frames (256 MiB).
pub const MIN_GROUP_FRAMES: u64 = 65_536;
/// The default rule aims at this many groups.
pub const TARGET_GROUP_COUNT: u64 = 16;
/// Never more groups than this, whatever group size is asked for.
pub const MAX_GROUP_COUNT: u64 = 4096;

/// Figures the allocator reports (statfs, `pfnfs stat`).
///
/// Extents are counted as the allocator stores them: a free run that crosses a group boundary
/// counts once per group, and `largest_free_frames` is the largest run one allocation without a
/// goal can get.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct AllocStats {
    /// Frames in the data region.
    pub total_frames: u64,
    /// Free frames.
    pub free_frames: u64,
    /// Number of free extents.
    pub free_extents: u64,
    /// Frames in the largest free extent.
    pub largest_free_frames: u64,
    /// 1 - largest_free / free (0 when all free space is one extent, or none is free).
    pub fragmentation: f64,
}

/// The default group size for a span of `span_frames` frames (counted from the 2 MiB boundary
/// at or below the region start): `max(ceil(span / 16), 65536)` rounded up to a multiple of 512.
pub fn default_group_frames(span_frames: u64) -> u64 {
    round_up_huge(
        span_frames
            .div_ceil(TARGET_GROUP_COUNT)
            .max(MIN_GROUP_FRAMES),
    )
}

/// `frames` rounded up to a multiple of 512 (the largest such `u64` if that overflows).
fn round_up_huge(frames: u64) -> u64 {
    frames
        .checked_next_multiple_of(HUGE_FRAMES)
        .unwrap_or(u64::MAX - u64::MAX % HUGE_FRAMES)
}

/// Hands every thread a distinct number, the first time it allocates.
static NEXT_THREAD_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SLOT: usize = NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed);
}

/// The home group of thread number `slot` among `groups` groups: `floor(vdc(slot) * groups)`,
/// where `vdc` is the base-2 van der Corput sequence (the bits of `slot` mirrored behind the
/// binary point). Threads 0, 1, 2, 3, ... get groups 0, n/2, n/4, 3n/4, ...: the homes of the
/// first threads are as far apart as possible, so a thread that spills into the groups after
/// its home runs through many of them before reaching another thread's home.
fn spread(slot: usize, groups: usize) -> usize {
    let fraction = (slot as u64).reverse_bits();
    let home = (u128::from(fraction) * groups as u128) >> 64;
    // fraction < 2^64, so home < groups.
    home as usize
}

/// One allocation group: a fixed slice of the region and the free extents inside it.
///
/// Aligned to 128 bytes (two cache lines, the unit adjacent-line prefetchers pull) so that the
/// locks and counters of neighbouring groups never share a line: threads working in different
/// groups then touch no common cache line at all.
#[repr(align(128))]
struct Group {
    /// The frames this group owns.
    range: PfnRange,
    /// Mirror of `free.free_frames()`, stored while the lock is held after every change, so
    /// that counting free space needs no lock.
    free_frames: AtomicU64,
    /// The free set changed since the last [`ExtentAllocator::take_dirty_groups`]: set (with
    /// `Release`) while the lock is held, by every change; cleared by `take_dirty_groups`.
    dirty: AtomicBool,
    /// Its free extents; see the module header for the locking rules.
    free: Mutex<FreeExtents>,
}

impl Group {
    /// Publishes the group's free count; called with `free` (this group's guard) held.
    fn publish(&self, free: &FreeExtents) {
        self.free_frames
            .store(free.free_frames(), Ordering::Relaxed);
    }

    /// After a change to the free set: publishes the count and marks the group dirty; called
    /// with `free` (this group's guard) held, so that a snapshot taken under the lock after
    /// `take_dirty_groups` saw the flag includes the change.
    fn changed(&self, free: &FreeExtents) {
        self.publish(free);
        self.dirty.store(true, Ordering::Release);
    }
}

/// Free space of the data region as extents, split into allocation groups so that threads
/// allocating in different groups never contend.
///
/// Ownership: it owns the *free* frames of the data region and nothing else. An allocated
/// frame belongs to the [`Frames`] guard [`allocate`](Self::allocate) returns, and then to
/// what its holder made durable (an extent map, a checkpoint), which gives it back with
/// [`free`](Self::free) once nothing durable references it; the allocator cannot tell who
/// holds what, only that a freed range was not free ([`AllocError::DoubleFree`]).
///
/// Shared by reference between threads (`&self` everywhere); see the module header for the
/// locking rules (one mutex per allocation group, several only in ascending order, none held
/// across a call out of this module). Dropping it drops only RAM state: the free set lives on
/// the pool only as an image written by the owner
/// ([`encode_free_set`](Self::encode_free_set)).
pub struct ExtentAllocator {
    /// The data region.
    region: PfnRange,
    /// `region.start` rounded down to a multiple of 512: where group 0 would start.
    base: u64,
    /// Frames per group (a multiple of 512); the first and last group may be shorter.
    group_frames: u64,
    /// The groups, in PFN order, tiling `region`.
    groups: Box<[Group]>,
    /// What stands behind the frames, if storage must be made to exist before a frame is
    /// handed out (a sparse pool file): see [`Backing`].
    backing: std::sync::OnceLock<Arc<dyn Backing>>,
    /// Frames never to be freed into the free set ([`ExtentAllocator::set_bad_frames`]).
    bad: std::sync::OnceLock<Arc<BadFrames>>,
    /// Something was freed since free extents last gave their storage back.
    freed_since_release: AtomicBool,
}

/// The storage behind a pool's frames, where it may be missing: a sparse pool file has no
/// blocks (or tmpfs pages) behind frames never written, and a store into such a frame when
/// the file's filesystem is full is a SIGBUS, not an error. The allocator makes storage
/// exist behind every range before it hands the range out ([`ExtentAllocator::set_backing`]),
/// so that a full backing store is an allocation error (ENOSPC for the writer).
///
/// Freed frames keep their storage (and their bytes: an older superblock's tree stays
/// readable for fsck's roll-back) until an allocation finds the backing store full; then every
/// free extent gives its storage back (a hole punched in the pool file) and the allocation is
/// tried once more. Without that, the room held by deleted files would stay with frames the
/// allocator might never pick again, and a full backing store would stay full after deletes.
pub trait Backing: Send + Sync + std::fmt::Debug {
    /// Makes storage exist behind `range` (for a pool file: `fallocate` of its bytes).
    fn ensure_backed(&self, range: PfnRange) -> std::io::Result<()>;
    /// Gives the storage behind `range`, which nothing references any more, back (for a
    /// pool file: a hole punched, the file's size kept). Its bytes then read as zeros.
    fn release(&self, range: PfnRange) -> std::io::Result<()>;
}

impl std::fmt::Debug for ExtentAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtentAllocator")
            .field("region", &self.region)
            .field("group_frames", &self.group_frames)
            .field("groups", &self.groups.len())
            .field("free_frames", &self.free_frames())
            .finish()
    }
}

impl ExtentAllocator {
    // ----- construction -------------------------------------------------------------------

    /// An allocator over `data` with no free frame, groups of about `group_frames` frames.
    fn with_layout(data: PfnRange, group_frames: Option<u64>) -> ExtentAllocator {
        let base = data.start.0 - data.start.0 % HUGE_FRAMES;
        // > 0: the region is non-empty and base <= start.
        let span = data.end().0 - base;
        let asked = match group_frames {
            Some(g) => round_up_huge(g.max(HUGE_FRAMES)),
            None => default_group_frames(span),
        };
        let group_frames = asked.max(round_up_huge(span.div_ceil(MAX_GROUP_COUNT)));
        let count = span.div_ceil(group_frames);
        let groups = (0..count)
            .filter_map(|i| {
                // i * group_frames < span, so this does not overflow; the upper bound may.
                let lo = (base + i * group_frames).max(data.start.0);
                let hi = base
                    .saturating_add((i + 1).saturating_mul(group_frames))
                    .min(data.end().0);
                PfnRange::from_bounds(Pfn(lo), Pfn(hi))
            })
            .map(|range| Group {
                range,
                free_frames: AtomicU64::new(0),
                dirty: AtomicBool::new(false),
                free: Mutex::new(FreeExtents::default()),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        ExtentAllocator {
            region: data,
            base,
            group_frames,
            groups,
            backing: std::sync::OnceLock::new(),
            bad: std::sync::OnceLock::new(),
            freed_since_release: AtomicBool::new(true),
        }
    }

    /// Gives the storage behind every free extent back to the backing store, if anything was
    /// freed since the last time; true if it did. Each group's extents are released under
    /// its lock, so no range being handed out meanwhile is touched: a range leaves the free
    /// set (under the same lock) before anyone stores into it. Best effort: a range whose
    /// storage cannot be given back keeps it, which costs only room.
    fn release_free_backing(&self) -> bool {
        let Some(backing) = self.backing.get() else {
            return false;
        };
        if !self.freed_since_release.swap(false, Ordering::AcqRel) {
            return false;
        }
        for group in self.groups.iter() {
            let free = group.free.lock();
            for (start, len) in free.iter() {
                let r = PfnRange {
                    start: Pfn(start),
                    len,
                };
                if let Err(e) = backing.release(r) {
                    tracing::debug!("cannot give the storage behind {r} back: {e}");
                }
            }
        }
        true
    }

    /// From now on, makes storage exist behind every range before handing it out, and gives
    /// free extents' storage back when the backing store runs full (see [`Backing`]). Set
    /// once; a second call is ignored.
    pub fn set_backing(&self, backing: Arc<dyn Backing>) {
        let _ = self.backing.set(backing);
    }

    /// From now on, frees only the frames of a range that `bad` does not list: a bad frame
    /// given back by its owner leaves the pool's use for good instead of joining the free set
    /// (the pool's list, [`crate::Pool::bad_frames`]). Set once; a second call is ignored.
    pub fn set_bad_frames(&self, bad: Arc<BadFrames>) {
        let _ = self.bad.set(bad);
    }

    /// An allocator over `data` with every frame free.
    pub fn new_empty(data: PfnRange) -> ExtentAllocator {
        Self::fill(Self::with_layout(data, None))
    }

    /// Like [`new_empty`](Self::new_empty) with groups of `group_frames` frames instead of the
    /// default rule. The size is rounded up to a multiple of 512 (at least 512) and raised so
    /// that there are at most [`MAX_GROUP_COUNT`] groups. Meant for tests and tuning.
    pub fn new_empty_with_group_frames(data: PfnRange, group_frames: u64) -> ExtentAllocator {
        Self::fill(Self::with_layout(data, Some(group_frames)))
    }

    fn fill(alloc: ExtentAllocator) -> ExtentAllocator {
        for g in alloc.groups.iter() {
            let mut free = g.free.lock();
            free.insert_coalesce(g.range.start.0, g.range.len);
            g.publish(&free);
        }
        alloc
    }

    /// An allocator over `data` whose free set is exactly `free` (any order; adjacent ranges
    /// are coalesced). Fails on overlap or on a range outside `data`.
    pub fn from_free_extents(
        data: PfnRange,
        free: impl IntoIterator<Item = PfnRange>,
    ) -> Result<ExtentAllocator, AllocError> {
        Self::load(Self::with_layout(data, None), free)
    }

    /// The same as [`from_free_extents`](Self::from_free_extents), named for loading the free
    /// set from per-group records ([`group_free_extents`](Self::group_free_extents) of every
    /// group): extents come in any order and are coalesced across group boundaries. Starts
    /// clean ([`take_dirty_groups`](Self::take_dirty_groups) is empty).
    pub fn from_group_extents(
        data: PfnRange,
        extents: impl IntoIterator<Item = PfnRange>,
    ) -> Result<ExtentAllocator, AllocError> {
        Self::from_free_extents(data, extents)
    }

    /// Like [`from_free_extents`](Self::from_free_extents) with a chosen group size (see
    /// [`new_empty_with_group_frames`](Self::new_empty_with_group_frames)).
    pub fn from_free_extents_with_group_frames(
        data: PfnRange,
        group_frames: u64,
        free: impl IntoIterator<Item = PfnRange>,
    ) -> Result<ExtentAllocator, AllocError> {
        Self::load(Self::with_layout(data, Some(group_frames)), free)
    }

    fn load(
        alloc: ExtentAllocator,
        free: impl IntoIterator<Item = PfnRange>,
    ) -> Result<ExtentAllocator, AllocError> {
        let mut ranges: Vec<PfnRange> = free.into_iter().collect();
        for r in &ranges {
            alloc.check_in_region(*r)?;
        }
        ranges.sort_unstable();
        // Coalesce and cut at group boundaries into per-group sorted lists, then build each
        // group's indexes in bulk (sorted input gives full B-tree nodes).
        let mut per_group: Vec<Vec<(u64, u64)>> = vec![Vec::new(); alloc.groups.len()];
        let mut coalesced: Vec<PfnRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match coalesced.last_mut() {
                Some(p) if r.start.0 < p.end().0 => {
                    return Err(AllocError::NotFree {
                        range: r.to_string(),
                    });
                }
                // Disjoint ranges inside the region: the sum cannot overflow.
                Some(p) if r.start == p.end() => p.len += r.len,
                _ => coalesced.push(r),
            }
        }
        for r in coalesced {
            for (gi, piece) in alloc.pieces(r) {
                per_group[gi].push((piece.start.0, piece.len));
            }
        }
        for (g, extents) in alloc.groups.iter().zip(per_group) {
            let mut free = g.free.lock();
            *free = FreeExtents::from_sorted(extents);
            g.publish(&free);
        }
        Ok(alloc)
    }

    /// Rebuilds an allocator from an image made by [`encode_free_set`](Self::encode_free_set).
    /// The image must be for exactly the region `data`; every field is validated and the
    /// result has exactly the free set that was encoded.
    pub fn decode_free_set(data: PfnRange, image: &[u8]) -> Result<ExtentAllocator, AllocError> {
        let extents = image::decode(data, image)?;
        Self::from_free_extents(data, extents)
    }

    /// Encodes the free set as a self-checking image (for the checkpoint). The layout is
    /// documented in [`image`] and in docs/DESIGN.md.
    pub fn encode_free_set(&self) -> Vec<u8> {
        image::encode(self.region, &self.free_extents())
    }

    // ----- geometry -----------------------------------------------------------------------

    /// The data region this allocator manages.
    pub fn region(&self) -> PfnRange {
        self.region
    }

    /// Frames per allocation group (a multiple of 512; the first and last group may be
    /// shorter). Also the largest range one allocation without a goal can return.
    pub fn group_frames(&self) -> u64 {
        self.group_frames
    }

    /// Number of allocation groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The frames owned by group `index`, if it exists.
    pub fn group_range(&self, index: usize) -> Option<PfnRange> {
        self.groups.get(index).map(|g| g.range)
    }

    /// Index of the group owning `pfn`; `None` outside the data region.
    pub fn group_of(&self, pfn: Pfn) -> Option<usize> {
        self.region.contains(pfn).then(|| self.group_index(pfn.0))
    }

    /// True if any frame of `range` is free (or lies outside the data region): a frame some
    /// durable structure says it uses must never be, or it would be handed out again. One
    /// lookup per group the range touches.
    pub fn overlaps_free(&self, range: PfnRange) -> bool {
        if !self.region.covers(&range) {
            return true;
        }
        let (first, last) = (
            self.group_index(range.start.0),
            self.group_index(range.end().0 - 1),
        );
        (first..=last).any(|gi| {
            let g = &self.groups[gi];
            let start = range.start.0.max(g.range.start.0);
            let end = range.end().0.min(g.range.end().0);
            start < end && g.free.lock().overlaps(start, end)
        })
    }

    /// The free extents of group `index`, sorted by start, as the allocator stores them (never
    /// crossing the group's bounds, fully coalesced inside it): a consistent snapshot taken
    /// under the group's lock. Empty for an index that is not a group.
    pub fn group_free_extents(&self, index: usize) -> Vec<PfnRange> {
        let Some(group) = self.groups.get(index) else {
            return Vec::new();
        };
        let free = group.free.lock();
        free.iter()
            .filter_map(|(s, l)| PfnRange::new(Pfn(s), l))
            .collect()
    }

    // ----- change tracking ------------------------------------------------------------------

    /// Indexes (ascending) of the groups whose free set changed since the last call, or since
    /// construction (a new allocator starts clean), and clears their marks. Every change
    /// marks its group: allocate, free, reserve, a [`Frames`] guard giving frames back, the
    /// rollback of a failed allocation; so do [`mark_dirty`](Self::mark_dirty) and
    /// [`mark_all_dirty`](Self::mark_all_dirty). A group may be reported although its free
    /// set ended up as it was (e.g. allocated and freed again); a group not reported has not
    /// changed.
    ///
    /// The commit's way to rewrite only changed groups: take the list, then
    /// [`group_free_extents`](Self::group_free_extents) of each. A change racing with that
    /// either is in the snapshot or marks the group again for the next call (the mark is set
    /// under the group lock; the snapshot takes it). O(number of groups), no lock.
    pub fn take_dirty_groups(&self) -> Vec<usize> {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.dirty.swap(false, Ordering::AcqRel))
            .map(|(i, _)| i)
            .collect()
    }

    /// Marks every group dirty (e.g. after loading an allocator whose groups must all be
    /// written, or when the stored free set is not known to match).
    pub fn mark_all_dirty(&self) {
        for g in self.groups.iter() {
            g.dirty.store(true, Ordering::Release);
        }
    }

    /// Marks dirty every group that `range` overlaps (the part of `range` outside the data
    /// region is ignored).
    pub fn mark_dirty(&self, range: PfnRange) {
        let lo = range.start.0.max(self.region.start.0);
        let hi = range.end().0.min(self.region.end().0);
        if let Some(clipped) = PfnRange::from_bounds(Pfn(lo), Pfn(hi)) {
            for (gi, _) in self.pieces(clipped) {
                self.groups[gi].dirty.store(true, Ordering::Release);
            }
        }
    }

    /// Free frames: the sum of the groups' atomic counters (no lock). Exact when no operation
    /// is in flight; otherwise a value the free count had or is about to have per group.
    pub fn free_frames(&self) -> u64 {
        self.groups
            .iter()
            .map(|g| g.free_frames.load(Ordering::Relaxed))
            .sum()
    }

    /// Index of the group owning `pfn`, which must lie in the region.
    fn group_index(&self, pfn: u64) -> usize {
        debug_assert!(self.region.contains(Pfn(pfn)));
        let i = (pfn - self.base) / self.group_frames;
        // i < groups.len() <= MAX_GROUP_COUNT for every pfn of the region.
        (i as usize).min(self.groups.len() - 1)
    }

    /// `range` (inside the region) cut at group boundaries: `(group index, piece)`.
    fn pieces(&self, range: PfnRange) -> impl Iterator<Item = (usize, PfnRange)> + '_ {
        let first = self.group_index(range.start.0);
        let last = self.group_index(range.end().0 - 1);
        (first..=last).filter_map(move |gi| {
            let g = self.groups[gi].range;
            let lo = range.start.0.max(g.start.0);
            let hi = range.end().0.min(g.end().0);
            PfnRange::from_bounds(Pfn(lo), Pfn(hi)).map(|p| (gi, p))
        })
    }

    fn check_in_region(&self, range: PfnRange) -> Result<(), AllocError> {
        if self.region.covers(&range) {
            Ok(())
        } else {
            Err(AllocError::OutOfRegion {
                range: range.to_string(),
                data: self.region.to_string(),
            })
        }
    }

    /// The group a request starts in: the goal's group, else one fixed per thread.
    fn home_group(&self, goal: Option<Pfn>) -> usize {
        match goal {
            Some(g) if self.region.contains(g) => self.group_index(g.0),
            _ => spread(THREAD_SLOT.with(|slot| *slot), self.groups.len()),
        }
    }

    fn lock_all(&self) -> Vec<MutexGuard<'_, FreeExtents>> {
        self.groups.iter().map(|g| g.free.lock()).collect()
    }

    // ----- allocation -----------------------------------------------------------------------

    /// Allocates `frames` frames, preferring one contiguous range starting at `goal` (e.g. just
    /// after a file's last extent), then one contiguous range anywhere (2 MiB-aligned when
    /// `frames >= 512`), then several ranges. All or nothing: on `NoSpace` nothing is taken.
    ///
    /// The returned ranges are disjoint, sorted by start and sum to exactly `frames`;
    /// `frames == 0` returns an empty guard. A goal outside the region is ignored.
    ///
    /// They come in a [`Frames`] guard: dropped, it gives them back; the caller commits it
    /// once what references the frames is durable.
    ///
    /// With a [`Backing`], storage is made to exist behind every range first
    /// ([`ensure_backed`](Self::ensure_backed)); if it cannot be (`NoBacking`: the backing
    /// store is full), the frames go back and nothing is taken.
    pub fn allocate(&self, frames: u64, goal: Option<Pfn>) -> Result<Frames<'_>, AllocError> {
        let guard = self.allocate_unbacked(frames, goal)?;
        self.ensure_backed(guard.ranges())?;
        Ok(guard)
    }

    /// [`allocate`](Self::allocate) without making storage exist behind the frames: for a
    /// caller that stores into them later and calls [`ensure_backed`](Self::ensure_backed)
    /// first (a tree transaction, which may still fail before it writes anything).
    pub fn allocate_unbacked(
        &self,
        frames: u64,
        goal: Option<Pfn>,
    ) -> Result<Frames<'_>, AllocError> {
        Ok(Frames::new(self, self.allocate_ranges(frames, goal)?))
    }

    /// Makes storage exist behind `ranges` (allocated, not free) before anything is stored
    /// into them (see [`Backing`]). When the backing store is full, every free extent first
    /// gives its storage back (if anything was freed since the last time) and it is tried
    /// once more; then `NoBacking` with the OS's errno.
    pub fn ensure_backed(&self, ranges: &[PfnRange]) -> Result<(), AllocError> {
        let Some(backing) = self.backing.get() else {
            return Ok(());
        };
        let mut released = false;
        loop {
            let Some((r, e)) = ranges
                .iter()
                .find_map(|r| backing.ensure_backed(*r).err().map(|e| (*r, e)))
            else {
                return Ok(());
            };
            if !released && e.raw_os_error() == Some(libc::ENOSPC) && self.release_free_backing() {
                released = true;
                continue;
            }
            return Err(AllocError::NoBacking {
                range: r.to_string(),
                errno: e.raw_os_error().unwrap_or(libc::EIO),
                message: e.to_string(),
            });
        }
    }

    /// [`allocate`](Self::allocate) without the guard.
    fn allocate_ranges(&self, frames: u64, goal: Option<Pfn>) -> Result<Vec<PfnRange>, AllocError> {
        if frames == 0 {
            return Ok(Vec::new());
        }
        if frames > self.region.len {
            return Err(AllocError::NoSpace {
                requested: frames,
                free: self.free_frames(),
            });
        }
        if let Some(goal) = goal
            && let Some(want) = PfnRange::new(goal, frames)
            && self.region.covers(&want)
            && self.take_exact(want)
        {
            return Ok(vec![want]);
        }
        let home = self.home_group(goal);
        if let Some(r) = self.allocate_contiguous(frames, home) {
            return Ok(vec![r]);
        }
        let free = self.free_frames();
        if frames > free {
            return Err(AllocError::NoSpace {
                requested: frames,
                free,
            });
        }
        self.allocate_gather(frames, home)
    }

    /// Groups in spill order from `home`.
    fn spill_order(&self, home: usize) -> impl Iterator<Item = usize> + '_ {
        let n = self.groups.len();
        (0..n).map(move |i| (home + i) % n)
    }

    /// Step 2 of the policy: one contiguous range, or `None`.
    fn allocate_contiguous(&self, frames: u64, home: usize) -> Option<PfnRange> {
        if frames >= HUGE_FRAMES {
            for gi in self.spill_order(home) {
                let group = &self.groups[gi];
                // The unlocked count only skips groups that cannot have a fit.
                if group.free_frames.load(Ordering::Relaxed) < frames {
                    continue;
                }
                let mut free = group.free.lock();
                if let Some((extent, at)) = free.aligned_fit(frames) {
                    free.take(extent, at, frames);
                    group.changed(&free);
                    return PfnRange::new(Pfn(at), frames);
                }
            }
        }
        for gi in self.spill_order(home) {
            let group = &self.groups[gi];
            if group.free_frames.load(Ordering::Relaxed) < frames {
                continue;
            }
            let mut free = group.free.lock();
            if let Some(extent) = free.best_fit(frames) {
                free.take(extent, extent.0, frames);
                group.changed(&free);
                return PfnRange::new(Pfn(extent.0), frames);
            }
        }
        None
    }

    /// Step 3 of the policy: several ranges, or `NoSpace` with everything given back.
    fn allocate_gather(&self, frames: u64, home: usize) -> Result<Vec<PfnRange>, AllocError> {
        // Visit groups by their largest extent, largest first; the stable sort keeps the spill
        // order among equals. The figures may be stale by the time a group is locked again:
        // they only order the visit.
        let mut order: Vec<(u64, usize)> = self
            .spill_order(home)
            .map(|gi| (self.groups[gi].free.lock().largest_len(), gi))
            .collect();
        order.sort_by_key(|&(largest, _)| std::cmp::Reverse(largest));

        let mut taken: Vec<PfnRange> = Vec::new();
        let mut remaining = frames;
        for (_, gi) in order {
            if remaining == 0 {
                break;
            }
            let group = &self.groups[gi];
            let mut free = group.free.lock();
            let before = remaining;
            while remaining > 0 {
                if let Some(extent) = free.best_fit(remaining) {
                    free.take(extent, extent.0, remaining);
                    taken.extend(PfnRange::new(Pfn(extent.0), remaining));
                    remaining = 0;
                } else if let Some(extent) = free.largest() {
                    free.take(extent, extent.0, extent.1);
                    taken.extend(PfnRange::new(Pfn(extent.0), extent.1));
                    remaining -= extent.1;
                } else {
                    break;
                }
            }
            if remaining < before {
                group.changed(&free);
            }
        }
        if remaining > 0 {
            // Concurrent allocations took what the counter promised: give everything back.
            for r in taken {
                self.give_back(r);
            }
            return Err(AllocError::NoSpace {
                requested: frames,
                free: self.free_frames(),
            });
        }
        taken.sort_unstable();
        let mut merged: Vec<PfnRange> = Vec::with_capacity(taken.len());
        for r in taken {
            match merged.last_mut() {
                Some(last) if last.end() == r.start => last.len += r.len,
                _ => merged.push(r),
            }
        }
        Ok(merged)
    }

    /// Returns a range this module itself took (rollback): it cannot overlap free space.
    fn give_back(&self, range: PfnRange) {
        for (gi, piece) in self.pieces(range) {
            let group = &self.groups[gi];
            let mut free = group.free.lock();
            debug_assert!(!free.overlaps(piece.start.0, piece.end().0));
            free.insert_coalesce(piece.start.0, piece.len);
            group.changed(&free);
        }
    }

    // ----- free and reserve -------------------------------------------------------------------

    /// Returns `range` to the free set, coalescing with neighbours (within each group).
    ///
    /// `OutOfRegion` if any frame lies outside the data region, `DoubleFree` if any frame is
    /// free already; either way nothing changes. A range crossing group boundaries is split
    /// per group and checked whole before anything is inserted.
    ///
    /// Frames listed bad ([`ExtentAllocator::set_bad_frames`]) are left out: they are dropped
    /// from the allocator's use, not freed.
    pub fn free(&self, range: PfnRange) -> Result<(), AllocError> {
        self.check_in_region(range)?;
        if let Some(bad) = self.bad.get()
            && bad.first_in(range).is_some()
        {
            let good = bad.good_parts(range);
            tracing::info!("frames of {range} are bad: not returned to the free set");
            for part in &good {
                self.check_not_free(*part)?;
            }
            for part in good {
                self.free_checked(part)?;
            }
            return Ok(());
        }
        self.free_checked(range)
    }

    /// `DoubleFree` unless no frame of `range` (in the region) is free.
    fn check_not_free(&self, range: PfnRange) -> Result<(), AllocError> {
        if self.overlaps_free(range) {
            return Err(AllocError::DoubleFree {
                range: range.to_string(),
            });
        }
        Ok(())
    }

    /// [`ExtentAllocator::free`] of a range in the region, bad frames not considered.
    fn free_checked(&self, range: PfnRange) -> Result<(), AllocError> {
        let first = self.group_index(range.start.0);
        let last = self.group_index(range.end().0 - 1);
        if first == last {
            let group = &self.groups[first];
            let mut free = group.free.lock();
            if free.overlaps(range.start.0, range.end().0) {
                return Err(AllocError::DoubleFree {
                    range: range.to_string(),
                });
            }
            free.insert_coalesce(range.start.0, range.len);
            group.changed(&free);
            self.freed_since_release.store(true, Ordering::Release);
            return Ok(());
        }
        let pieces: Vec<(usize, PfnRange)> = self.pieces(range).collect();
        let mut guards: Vec<MutexGuard<'_, FreeExtents>> = pieces
            .iter()
            .map(|&(gi, _)| self.groups[gi].free.lock())
            .collect();
        for (guard, (_, p)) in guards.iter().zip(&pieces) {
            if guard.overlaps(p.start.0, p.end().0) {
                return Err(AllocError::DoubleFree {
                    range: range.to_string(),
                });
            }
        }
        self.freed_since_release.store(true, Ordering::Release);
        for (guard, &(gi, p)) in guards.iter_mut().zip(&pieces) {
            guard.insert_coalesce(p.start.0, p.len);
            self.groups[gi].changed(guard);
        }
        Ok(())
    }

    /// Takes a specific range out of the free set (log replay, checkpoint frames).
    ///
    /// `OutOfRegion` if any frame lies outside the data region, `NotFree` if any frame is not
    /// free; either way nothing changes.
    pub fn reserve(&self, range: PfnRange) -> Result<(), AllocError> {
        self.check_in_region(range)?;
        if self.take_exact(range) {
            Ok(())
        } else {
            Err(AllocError::NotFree {
                range: range.to_string(),
            })
        }
    }

    /// Takes `range` (inside the region) out of the free set if every frame of it is free;
    /// otherwise changes nothing and returns false.
    fn take_exact(&self, range: PfnRange) -> bool {
        let first = self.group_index(range.start.0);
        let last = self.group_index(range.end().0 - 1);
        if first == last {
            let group = &self.groups[first];
            let mut free = group.free.lock();
            let Some(extent) = free.covering(range.start.0, range.len) else {
                return false;
            };
            free.take(extent, range.start.0, range.len);
            group.changed(&free);
            return true;
        }
        let pieces: Vec<(usize, PfnRange)> = self.pieces(range).collect();
        let mut guards: Vec<MutexGuard<'_, FreeExtents>> = pieces
            .iter()
            .map(|&(gi, _)| self.groups[gi].free.lock())
            .collect();
        let mut extents = Vec::with_capacity(pieces.len());
        for (guard, (_, p)) in guards.iter().zip(&pieces) {
            match guard.covering(p.start.0, p.len) {
                Some(extent) => extents.push(extent),
                None => return false,
            }
        }
        for ((guard, &(gi, p)), extent) in guards.iter_mut().zip(&pieces).zip(extents) {
            guard.take(extent, p.start.0, p.len);
            self.groups[gi].changed(guard);
        }
        true
    }

    // ----- inspection -------------------------------------------------------------------------

    /// The free set, sorted by start, fully coalesced (runs that cross a group boundary come
    /// back as one range). A consistent snapshot: all groups are locked while it is taken.
    pub fn free_extents(&self) -> Vec<PfnRange> {
        let guards = self.lock_all();
        let count: usize = guards.iter().map(|g| g.extent_count()).sum();
        let mut out: Vec<PfnRange> = Vec::with_capacity(count);
        for guard in &guards {
            for (s, l) in guard.iter() {
                match out.last_mut() {
                    Some(last) if last.end().0 == s => last.len += l,
                    _ => out.extend(PfnRange::new(Pfn(s), l)),
                }
            }
        }
        out
    }

    /// Current figures (a consistent snapshot; O(number of groups)).
    pub fn stats(&self) -> AllocStats {
        let guards = self.lock_all();
        let mut free_frames: u64 = 0;
        let mut free_extents: u64 = 0;
        let mut largest: u64 = 0;
        for g in &guards {
            free_frames += g.free_frames();
            free_extents += g.extent_count() as u64;
            largest = largest.max(g.largest_len());
        }
        let fragmentation = if free_frames == 0 {
            0.0
        } else {
            1.0 - largest as f64 / free_frames as f64
        };
        AllocStats {
            total_frames: self.region.len,
            free_frames,
            free_extents,
            largest_free_frames: largest,
            fragmentation,
        }
    }

    /// Checks every invariant (indexes agree, no overlap, coalescing complete, counters right,
    /// everything inside the region and inside its group). O(n log n) in the number of free
    /// extents; cheap enough to call after every step of a test.
    pub fn check_consistency(&self) -> Result<(), String> {
        let guards = self.lock_all();
        let mut expect_start = self.region.start.0;
        let mut sum: u64 = 0;
        for (i, (group, free)) in self.groups.iter().zip(&guards).enumerate() {
            let r = group.range;
            if r.start.0 != expect_start {
                return Err(format!(
                    "group {i} {r} does not start where the previous one ended ({expect_start:#x})"
                ));
            }
            if r.len > self.group_frames {
                return Err(format!(
                    "group {i} {r} is longer than {} frames",
                    self.group_frames
                ));
            }
            if i > 0 && !(r.start.0 - self.base).is_multiple_of(self.group_frames) {
                return Err(format!("group {i} {r} does not start on a group boundary"));
            }
            expect_start = r.end().0;
            free.check(r.start.0, r.end().0)
                .map_err(|e| format!("group {i} {r}: {e}"))?;
            let counter = group.free_frames.load(Ordering::Relaxed);
            if counter != free.free_frames() {
                return Err(format!(
                    "group {i} {r}: atomic counter says {counter} free frames, the group holds {}",
                    free.free_frames()
                ));
            }
            sum = sum
                .checked_add(free.free_frames())
                .ok_or_else(|| "free frame total overflows".to_string())?;
        }
        if expect_start != self.region.end().0 {
            return Err(format!(
                "groups end at {expect_start:#x}, the region at {:#x}",
                self.region.end().0
            ));
        }
        if sum > self.region.len {
            return Err(format!(
                "{sum} frames free in a region of {}",
                self.region.len
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn home_groups_of_the_first_threads_are_far_apart() {
        let homes: Vec<usize> = (0..8).map(|slot| spread(slot, 16)).collect();
        assert_eq!(homes, vec![0, 8, 4, 12, 2, 10, 6, 14]);
        for groups in [1usize, 2, 3, 5, 16, 17, 4096] {
            for slot in (0..200).chain([usize::MAX - 1, usize::MAX]) {
                assert!(spread(slot, groups) < groups);
            }
        }
        assert_eq!(spread(7, 1), 0);
    }
}
