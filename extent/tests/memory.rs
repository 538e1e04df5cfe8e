//! RAM cost of extent maps, measured with a counting allocator: it grows with the number of
//! extents, never with the file size.
//!
//! The counter is per thread so that the test harness's own allocations on other threads do
//! not disturb the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pfnfs_alloc::{ExtentAllocator, MemBackend, Pool};
use pfnfs_extent::io::{read_into, read_segments, write, zero_mapped};
use pfnfs_extent::map::HEAP_BYTES_PER_EXTENT;
use pfnfs_extent::{Extent, ExtentMap, Pfn, PfnRange};

thread_local! {
    /// Live heap bytes allocated by this thread (may go negative when freeing memory that
    /// another thread allocated; only differences are used).
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
    /// Number of allocation calls (alloc, alloc_zeroed, realloc) made by this thread.
    static ALLOC_CALLS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

fn count(delta: i64) {
    // `try_with` so that allocations during thread teardown do not panic.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + delta));
}

fn count_call() {
    let _ = ALLOC_CALLS.try_with(|calls| calls.set(calls.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so the
// `GlobalAlloc` contract is exactly `System`'s; the counter is a const-initialised
// thread-local `Cell` with no destructor and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        count_call();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through us) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        count_call();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        count_call();
        // SAFETY: forwarded unchanged; `ptr`/`layout` come from `System` as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> i64 {
    LIVE_BYTES.with(Cell::get)
}

/// Heap bytes retained by the value `make` builds.
fn heap_of<T>(make: impl FnOnce() -> T) -> (T, i64) {
    let before = live();
    let value = make();
    (value, live() - before)
}

fn ext(file_frame: u64, pfn: u64, len: u64) -> Extent {
    Extent {
        file_frame,
        pfns: PfnRange::new(Pfn(pfn), len).unwrap(),
        unwritten: false,
    }
}

#[test]
fn ram_grows_with_extents_not_file_size() {
    // One frame vs. 100 GiB in one extent: the same bytes.
    let (small, small_bytes) = heap_of(|| ExtentMap::from_extents([ext(0, 4096, 1)]).unwrap());
    let (big, big_bytes) = heap_of(|| ExtentMap::from_extents([ext(0, 4096, 100 << 18)]).unwrap());
    assert_eq!(small.len(), 1);
    assert_eq!(big.len(), 1);
    assert_eq!(big.mapped_frames(), 100 << 18);
    assert_eq!(
        small_bytes, big_bytes,
        "a 100 GiB extent costs what a 4 KiB one does"
    );
    assert!(
        small_bytes > 0 && small_bytes <= 512,
        "one extent costs one B-tree leaf: {small_bytes}"
    );

    // 10^5 extents that cannot merge (a one-frame gap in the pool between each), inserted in
    // file order (appending writes) and in a scattered order (random writes).
    const N: u64 = 100_000;
    let (ordered, ordered_bytes) = heap_of(|| {
        let mut map = ExtentMap::new();
        for i in 0..N {
            map.insert(ext(i * 4, i * 8, 4)).unwrap();
        }
        map
    });
    let (scattered, scattered_bytes) = heap_of(|| {
        let mut map = ExtentMap::new();
        // 7919 is prime and coprime with N: a permutation of 0..N.
        for j in 0..N {
            let i = (j * 7919) % N;
            map.insert(ext(i * 4, i * 8, 4)).unwrap();
        }
        map
    });
    assert_eq!(ordered.len() as u64, N);
    assert_eq!(scattered.len() as u64, N);
    let per_ordered = ordered_bytes as f64 / N as f64;
    let per_scattered = scattered_bytes as f64 / N as f64;
    println!(
        "extent map RAM: 1 extent = {small_bytes} B (4 KiB or 100 GiB); {N} extents: \
         {per_ordered:.1} B/extent in file order, {per_scattered:.1} B/extent scattered; \
         estimate HEAP_BYTES_PER_EXTENT = {HEAP_BYTES_PER_EXTENT}"
    );
    // The documented estimate stays within 25% of what was measured.
    for per in [per_ordered, per_scattered] {
        let ratio = per / HEAP_BYTES_PER_EXTENT as f64;
        assert!(
            (0.75..=1.25).contains(&ratio),
            "measured {per:.1} B/extent vs estimate {HEAP_BYTES_PER_EXTENT}"
        );
    }
    assert_eq!(ordered.heap_bytes(), N * HEAP_BYTES_PER_EXTENT);
    // Mapped size does not enter the cost at all.
    assert_eq!(small.heap_bytes(), big.heap_bytes());
}

fn alloc_calls() -> u64 {
    ALLOC_CALLS.with(Cell::get)
}

#[test]
fn hot_paths_do_not_allocate() {
    let pool = Pool::format_backend("mem", Box::new(MemBackend::new(16 << 20))).unwrap();
    let alloc = ExtentAllocator::new_empty(pool.data_region());
    let mut map = ExtentMap::new();
    // A fragmented file: written, hole, written elsewhere, unwritten.
    write(&pool, &alloc, &mut map, 0, &[1; 3 * 4096]).unwrap();
    let mut other = ExtentMap::new();
    write(&pool, &alloc, &mut other, 0, &[2; 4096]).unwrap();
    write(&pool, &alloc, &mut map, 5 * 4096, &[3; 3 * 4096]).unwrap();
    pfnfs_extent::io::allocate_unwritten(&alloc, &mut map, 8, 2).unwrap();
    assert!(map.len() >= 3);

    let mut segments = Vec::with_capacity(16);
    let mut buf = vec![0u8; 10 * 4096];
    let data = vec![9u8; 10 * 4096 - 300];
    let before = alloc_calls();
    read_segments(&pool, &map, 100, 10 * 4096 - 200, &mut segments).unwrap();
    assert!(segments.len() >= 4);
    read_into(&pool, &map, 0, &mut buf).unwrap();
    // Pure overwrite of mapped, written frames (possibly across extents).
    let outcome = write(&pool, &alloc, &mut map, 200, &data[..2 * 4096]).unwrap();
    zero_mapped(&pool, &mut map, 10, 4096).unwrap();
    let calls = alloc_calls() - before;
    assert!(outcome.is_empty());
    assert_eq!(calls, 0, "reads, overwrites and zeroing allocate nothing");
}

#[test]
fn design_doc_quotes_the_estimate() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/DESIGN.md")).unwrap();
    let marker = "<!-- section: extent ";
    let start = doc.find(marker).expect("DESIGN.md has an extent section");
    let rest = &doc[start + marker.len()..];
    let section = &rest[..rest.find("<!-- section: ").unwrap_or(rest.len())];
    let quoted = format!("`map::HEAP_BYTES_PER_EXTENT` ({HEAP_BYTES_PER_EXTENT})");
    assert!(
        section.contains(&quoted),
        "DESIGN.md extent section must quote {quoted}"
    );
}
