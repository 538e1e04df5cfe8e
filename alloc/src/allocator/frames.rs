//! [`Frames`]: frames taken from an [`ExtentAllocator`] that go back to it on every early
//! exit, unless what references them was made durable.

use crate::allocator::ExtentAllocator;
use crate::pfn::PfnRange;

/// Frames taken from an [`ExtentAllocator`] that nothing durable references yet: what
/// [`ExtentAllocator::allocate`] returns.
///
/// An allocation is a reservation until the record (or checkpoint) that references its frames
/// is durable. Until then every way out of the operation — a later allocation that fails, a
/// pool error, a failed persist, a refused journal append, an early `?` — drops the guard,
/// and dropping it gives every frame back to the allocator. Once the record is durable the
/// owner calls [`commit`](Frames::commit) (the frames now belong to what the record
/// describes); [`into_ranges`](Frames::into_ranges) hands them to an owner that keeps track
/// of them another way.
///
/// Ownership: a guard owns its frames exclusively; no other structure (a map, the free set, a
/// checkpoint) holds them while it does. So a free in `drop` can only fail if that invariant
/// was broken elsewhere (someone freed or reserved the guard's frames behind its back). Such a
/// failure cannot be handled in `drop`: it is logged as an error, and debug builds panic
/// (unless the thread is already panicking).
///
/// Locking: none of its own; giving frames back takes the allocator's group locks, like
/// [`ExtentAllocator::free`].
#[must_use = "dropping the guard gives the frames back at once"]
pub struct Frames<'a> {
    alloc: &'a ExtentAllocator,
    ranges: Vec<PfnRange>,
}

impl<'a> Frames<'a> {
    /// A guard holding `ranges`, which the caller took from `alloc` and owns exclusively.
    pub(crate) fn new(alloc: &'a ExtentAllocator, ranges: Vec<PfnRange>) -> Frames<'a> {
        Frames { alloc, ranges }
    }

    /// A guard holding no frame (to [`absorb`](Frames::absorb) others into). Allocates
    /// nothing.
    pub fn none(alloc: &'a ExtentAllocator) -> Frames<'a> {
        Frames::new(alloc, Vec::new())
    }

    /// The ranges held, in the order they were taken (each allocation's ranges are sorted by
    /// start).
    pub fn ranges(&self) -> &[PfnRange] {
        &self.ranges
    }

    /// Frames held.
    pub fn frames(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }

    /// True if the guard holds no frame.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Takes over the frames of `other` (taken from the same allocator): one guard for all the
    /// allocations of an operation.
    pub fn absorb(&mut self, mut other: Frames<'a>) {
        debug_assert!(
            std::ptr::eq(self.alloc, other.alloc),
            "frames of two allocators in one guard"
        );
        if self.ranges.is_empty() {
            std::mem::swap(&mut self.ranges, &mut other.ranges);
        } else {
            self.ranges.append(&mut other.ranges);
        }
    }

    /// The record (or checkpoint) referencing the frames is durable: they belong to it now and
    /// are not given back.
    pub fn commit(self) {
        drop(self.into_ranges());
    }

    /// Hands the frames to the caller, who takes over the duty to give them back or keep
    /// track of them (the filesystem's frames in doubt; a test).
    pub fn into_ranges(mut self) -> Vec<PfnRange> {
        std::mem::take(&mut self.ranges)
    }
}

impl Drop for Frames<'_> {
    fn drop(&mut self) {
        for range in self.ranges.drain(..) {
            if let Err(e) = self.alloc.free(range) {
                tracing::error!(%range, error = %e, "frames given back by their guard were not its own: allocator invariant broken");
                if !std::thread::panicking() {
                    debug_assert!(false, "Frames guard: giving back {range} failed: {e}");
                }
            }
        }
    }
}

impl std::fmt::Debug for Frames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("ranges", &self.ranges)
            .finish()
    }
}
