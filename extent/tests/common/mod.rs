//! Helpers shared by the I/O test files: pools on RAM, allocators with a small free window,
//! the global frame-ownership check and a backend that records persistence events.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use pfnfs_alloc::backend::MemBackend;
use pfnfs_alloc::{ExtentAllocator, Pool, PoolBackend};
use pfnfs_extent::io::read_segments;
use pfnfs_extent::{ExtentMap, FRAME_SIZE, Pfn, PfnRange, ReadSegment};

/// Smallest pool the pool code accepts.
pub const POOL_BYTES: u64 = 16 << 20;

/// A formatted pool on RAM.
pub fn mem_pool(bytes: u64) -> Pool {
    Pool::format_backend("test", Box::new(MemBackend::new(bytes))).expect("format pool")
}

/// An allocator over the pool's data region where only the first `window` frames are free:
/// the rest is reserved as `filler` (returned) so that tests reach ENOSPC quickly. The
/// window is filled with garbage so that stale data would show.
pub fn windowed_alloc(pool: &Pool, window: u64) -> (ExtentAllocator, Option<PfnRange>) {
    let data = pool.data_region();
    let alloc = ExtentAllocator::new_empty(data);
    let window = window.min(data.len);
    let filler = data.sub(window, data.len - window);
    if let Some(filler) = filler {
        alloc.reserve(filler).expect("reserve filler");
    }
    if let Some(win) = data.sub(0, window) {
        let garbage: Vec<u8> = (0..win.len_bytes())
            .map(|i| (i % 251) as u8 | 0x80)
            .collect();
        pool.write(win.start.byte_offset(), &garbage)
            .expect("garbage");
    }
    (alloc, filler)
}

/// Every data frame is owned exactly once: by one extent of one map, by the allocator's free
/// set, or by a reserved range.
pub fn check_ownership(
    pool: &Pool,
    alloc: &ExtentAllocator,
    maps: &[&ExtentMap],
    reserved: &[PfnRange],
) -> Result<(), String> {
    let data = pool.data_region();
    let mut all: Vec<(PfnRange, &'static str)> = Vec::new();
    for map in maps {
        all.extend(map.iter().map(|e| (e.pfns, "extent")));
    }
    all.extend(alloc.free_extents().into_iter().map(|r| (r, "free")));
    all.extend(reserved.iter().map(|r| (*r, "reserved")));
    all.sort_by_key(|(r, _)| r.start);
    let mut cursor = data.start;
    for (range, what) in &all {
        if range.start != cursor {
            return Err(if range.start < cursor {
                format!("{what} {range} overlaps frames owned before {cursor}")
            } else {
                format!(
                    "frames {cursor}..{} are owned by nobody (leaked)",
                    range.start
                )
            });
        }
        cursor = range.end();
    }
    if cursor != data.end() {
        return Err(format!(
            "frames {cursor}..{} are owned by nobody (leaked)",
            data.end()
        ));
    }
    Ok(())
}

/// Reads through `read_segments` and checks the segments are maximal (no two zero runs in a
/// row, no two pool slices that continue each other in memory).
pub fn read_via_segments(pool: &Pool, map: &ExtentMap, offset: u64, len: u64) -> Vec<u8> {
    let mut segments = Vec::new();
    read_segments(pool, map, offset, len, &mut segments).expect("read_segments");
    let mut out = Vec::with_capacity(len as usize);
    for pair in segments.windows(2) {
        match pair {
            [ReadSegment::Zeros(_), ReadSegment::Zeros(_)] => panic!("two zero runs in a row"),
            [ReadSegment::Pool(a), ReadSegment::Pool(b)] => {
                assert_ne!(
                    a.as_ptr_range().end,
                    b.as_ptr(),
                    "contiguous pool slices not merged"
                )
            }
            _ => {}
        }
    }
    for segment in &segments {
        assert!(!segment.is_empty(), "empty segment");
        match segment {
            ReadSegment::Pool(bytes) => out.extend_from_slice(bytes),
            ReadSegment::Zeros(n) => out.resize(out.len() + n, 0),
        }
    }
    assert_eq!(out.len() as u64, len);
    out
}

/// Deterministic, mostly non-zero data for a write.
pub fn pattern(seed: u8, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Frame `i` of the data region.
pub fn data_pfn(pool: &Pool, i: u64) -> Pfn {
    Pfn(pool.data_region().start.0 + i)
}

/// Byte offset of the first byte of a data-region frame.
pub fn frame_bytes(pfn: Pfn) -> u64 {
    pfn.0 * FRAME_SIZE
}

/// What the pool was asked to do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Store { offset: u64, len: u64 },
    Flush { offset: u64, len: u64 },
    Fence,
}

/// A RAM backend that records stores, flushes and fences.
#[derive(Debug)]
pub struct Recording {
    inner: MemBackend,
    pub events: Mutex<Vec<Event>>,
}

impl Recording {
    pub fn pool(bytes: u64) -> (Pool, Arc<Recording>) {
        let rec = Arc::new(Recording {
            inner: MemBackend::new(bytes),
            events: Mutex::new(Vec::new()),
        });
        let pool = Pool::format_backend("recording", Box::new(rec.clone())).expect("format");
        rec.take();
        (pool, rec)
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

impl PoolBackend for Recording {
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), pfnfs_alloc::MediaError> {
        self.inner.read_into(offset, buf)
    }
    unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
        // SAFETY: the same contract, passed on.
        unsafe { self.inner.borrow(offset, len) }
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), pfnfs_alloc::MediaError> {
        self.events.lock().unwrap().push(Event::Store {
            offset,
            len: data.len() as u64,
        });
        self.inner.write(offset, data)
    }
    fn zero(&self, offset: u64, len: u64) -> Result<(), pfnfs_alloc::MediaError> {
        self.events
            .lock()
            .unwrap()
            .push(Event::Store { offset, len });
        self.inner.zero(offset, len)
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), pfnfs_alloc::MediaError> {
        self.events
            .lock()
            .unwrap()
            .push(Event::Flush { offset, len });
        self.inner.flush(offset, len)
    }
    fn fence(&self) -> std::io::Result<()> {
        self.events.lock().unwrap().push(Event::Fence);
        self.inner.fence()
    }
    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.sync(offset, len)
    }
}
