//! PFN-range I/O: byte ranges of a file resolved to pool memory.
//!
//! Every function here takes a byte range of one file, turns it into the logical frames it
//! touches (`[offset / 4096, ceil((offset + len) / 4096))`), walks the file's [`ExtentMap`]
//! over those frames and acts on the pool frames directly:
//!
//! - [`read_segments`] answers a read with slices borrowed from the pool (one per run that is
//!   contiguous in the pool, even across extents) and zero runs for holes and unwritten
//!   extents. Nothing is copied; the only allocation is the growth of the caller's `Vec`.
//! - [`read_into`] gathers the same segments into a caller buffer.
//! - [`write()`] allocates frames for holes (with the map's goal so that sequential writes stay
//!   contiguous), zeroes the partial head and tail frames that are new or unwritten, copies the
//!   data in place, flushes each written range and fences once. The returned [`WriteOutcome`]
//!   lists every mapping change; the filesystem journals exactly that after the data is
//!   durable.
//! - [`allocate_unwritten`] (fallocate) maps holes with unwritten extents without touching data.
//! - [`zero_mapped`] stores zeros over written bytes in place (punch/zero-range edges,
//!   truncation inside a frame).
//!
//! Zero-reading rule: a hole or an unwritten extent reads as zeros whatever the pool frames
//! hold; a written frame holds zeros wherever the file has never stored data (new frames are
//! zeroed where a write does not cover them), so freed frames never leak another file's data.
//!
//! Locking: the caller holds the file's lock (shared for reads, exclusive for the rest), which
//! is what makes it sound that borrowed read slices and in-place writes never meet.

use pfnfs_alloc::{AllocError, ExtentAllocator, FRAME_SIZE, Pool, PoolError};

use crate::map::{Extent, ExtentError, ExtentMap, Mapping};

/// A piece of a read: borrowed pool bytes or a run of zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSegment<'a> {
    /// Bytes straight from pool memory.
    Pool(&'a [u8]),
    /// A hole or unwritten run of this many bytes.
    Zeros(usize),
}

impl ReadSegment<'_> {
    /// Length of the segment in bytes.
    pub fn len(&self) -> usize {
        match self {
            ReadSegment::Pool(bytes) => bytes.len(),
            ReadSegment::Zeros(n) => *n,
        }
    }

    /// True if the segment holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a write changed in the extent map: the fs journals exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Extents newly allocated and inserted (written).
    pub allocated: Vec<Extent>,
    /// Previously unwritten pieces now written.
    pub converted: Vec<Extent>,
}

impl WriteOutcome {
    /// True if the write changed no mapping (pure overwrite).
    pub fn is_empty(&self) -> bool {
        self.allocated.is_empty() && self.converted.is_empty()
    }
}

/// Why PFN-range I/O failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtentIoError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error(transparent)]
    Map(#[from] ExtentError),
    /// offset + len overflows the largest file offset (or the last frame it touches ends
    /// past `u64::MAX`).
    #[error("byte range overflows")]
    Overflow,
    /// The allocator answered a request with a different number of frames (an allocator bug;
    /// what it returned has been given back).
    #[error("allocator returned {got} frames for a request of {requested}")]
    ShortAllocation { requested: u64, got: u64 },
    /// A frame that must be mapped at this point is not (an internal inconsistency).
    #[error("file frame {file_frame} is not mapped")]
    Unmapped { file_frame: u64 },
}

/// Byte range `[start, end)` of a file and the logical frames it touches.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u64,
    end: u64,
    first_frame: u64,
    end_frame: u64,
}

impl Span {
    fn new(offset: u64, len: u64) -> Result<Span, ExtentIoError> {
        let end = offset.checked_add(len).ok_or(ExtentIoError::Overflow)?;
        // The byte end of the last touched frame must be representable too.
        end.div_ceil(FRAME_SIZE)
            .checked_mul(FRAME_SIZE)
            .ok_or(ExtentIoError::Overflow)?;
        Ok(Span {
            start: offset,
            end,
            first_frame: offset / FRAME_SIZE,
            end_frame: end.div_ceil(FRAME_SIZE),
        })
    }

    fn frames(&self) -> u64 {
        self.end_frame - self.first_frame
    }

    /// The part of a mapping piece inside the span, as `(file byte offset, bytes)`.
    fn clip(&self, piece: &Mapping) -> (u64, u64) {
        // Pieces lie within [first_frame, end_frame), whose byte bounds are representable
        // (checked in `new`); saturating keeps a bug from becoming a panic.
        let piece_start = piece.file_frame().saturating_mul(FRAME_SIZE);
        let piece_end = piece
            .file_frame()
            .saturating_add(piece.frames())
            .saturating_mul(FRAME_SIZE);
        let start = piece_start.max(self.start);
        let end = piece_end.min(self.end);
        (start, end.saturating_sub(start))
    }
}

/// Pool byte offset of file byte `file_byte` inside a mapped piece.
fn pool_offset(extent: &Extent, file_byte: u64) -> Result<u64, ExtentIoError> {
    // `file_byte` lies inside the piece, so this neither overflows nor underflows.
    let into = file_byte.saturating_sub(extent.file_frame.saturating_mul(FRAME_SIZE));
    extent
        .pfns
        .start
        .0
        .checked_mul(FRAME_SIZE)
        .and_then(|b| b.checked_add(into))
        .ok_or(ExtentIoError::Overflow)
}

fn to_usize(n: u64) -> Result<usize, ExtentIoError> {
    usize::try_from(n).map_err(|_| ExtentIoError::Overflow)
}

/// Walks `[offset, offset + len)` and calls `emit` with maximal segments: consecutive pool
/// bytes are one segment even across extents, consecutive zero runs are one segment.
fn walk_segments<'a>(
    pool: &'a Pool,
    map: &ExtentMap,
    offset: u64,
    len: u64,
    mut emit: impl FnMut(ReadSegment<'a>) -> Result<(), ExtentIoError>,
) -> Result<(), ExtentIoError> {
    if len == 0 {
        return Ok(());
    }
    let span = Span::new(offset, len)?;
    // Pending segment: Some((true, pool_offset, len)) for pool bytes, Some((false, 0, len)) for
    // zeros.
    let mut pending: Option<(bool, u64, u64)> = None;
    let flush =
        |pending: (bool, u64, u64),
         emit: &mut dyn FnMut(ReadSegment<'a>) -> Result<(), ExtentIoError>| {
            let (is_pool, at, n) = pending;
            let n = to_usize(n)?;
            if is_pool {
                emit(ReadSegment::Pool(pool.read(at, n)?))
            } else {
                emit(ReadSegment::Zeros(n))
            }
        };
    for piece in map.mappings_iter(span.first_frame, span.frames()) {
        let (file_byte, n) = span.clip(&piece);
        if n == 0 {
            continue;
        }
        let next = match piece {
            Mapping::Mapped(extent) if !extent.unwritten => {
                (true, pool_offset(&extent, file_byte)?, n)
            }
            _ => (false, 0, n),
        };
        pending = match pending {
            Some((true, at, m)) if next.0 && at.checked_add(m) == Some(next.1) => {
                Some((true, at, m + n))
            }
            Some((false, _, m)) if !next.0 => Some((false, 0, m + n)),
            Some(done) => {
                flush(done, &mut emit)?;
                Some(next)
            }
            None => Some(next),
        };
    }
    if let Some(done) = pending {
        flush(done, &mut emit)?;
    }
    Ok(())
}

/// Resolves `[offset, offset + len)` of a file to segments (appended to `out`, cleared first).
/// The caller clips `len` to the file size. No copy, no allocation beyond `out`'s growth.
pub fn read_segments<'a>(
    pool: &'a Pool,
    map: &ExtentMap,
    offset: u64,
    len: u64,
    out: &mut Vec<ReadSegment<'a>>,
) -> Result<(), ExtentIoError> {
    out.clear();
    let result = walk_segments(pool, map, offset, len, |segment| {
        out.push(segment);
        Ok(())
    });
    if result.is_err() {
        out.clear();
    }
    result
}

/// Calls `f` with each segment of `[offset, offset + len)` in order, without allocating:
/// the read path's way to see whether a range is one pool slice before gathering it.
pub fn for_each_segment<'a>(
    pool: &'a Pool,
    map: &ExtentMap,
    offset: u64,
    len: u64,
    f: impl FnMut(ReadSegment<'a>) -> Result<(), ExtentIoError>,
) -> Result<(), ExtentIoError> {
    walk_segments(pool, map, offset, len, f)
}

/// Copies `[offset, offset + buf.len())` of a file into `buf` (holes as zeros).
pub fn read_into(
    pool: &Pool,
    map: &ExtentMap,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ExtentIoError> {
    let len = u64::try_from(buf.len()).map_err(|_| ExtentIoError::Overflow)?;
    let mut at = 0usize;
    walk_segments(pool, map, offset, len, |segment| {
        // Segments add up to exactly buf.len(); `get_mut` keeps a bug from panicking.
        let end = at
            .checked_add(segment.len())
            .ok_or(ExtentIoError::Overflow)?;
        let dst = buf.get_mut(at..end).ok_or(ExtentIoError::Overflow)?;
        match segment {
            ReadSegment::Pool(src) => dst.copy_from_slice(src),
            ReadSegment::Zeros(_) => dst.fill(0),
        }
        at = end;
        Ok(())
    })
}

/// Maps every hole among logical frames `[first, end)` with new extents (`unwritten` as
/// given), appending what it inserted to `inserted`. On error everything inserted by this call
/// is removed again and its frames freed, so map and allocator are as before.
fn fill_holes(
    alloc: &ExtentAllocator,
    map: &mut ExtentMap,
    first: u64,
    end: u64,
    unwritten: bool,
    inserted: &mut Vec<Extent>,
) -> Result<(), ExtentIoError> {
    let mark = inserted.len();
    let result = fill_holes_inner(alloc, map, first, end, unwritten, inserted);
    if result.is_err() {
        for extent in inserted.drain(mark..).rev() {
            map.punch(extent.file_frame, extent.pfns.len);
            // Frames we just took cannot be free already; a failure here is an allocator bug
            // we can only report.
            if let Err(e) = alloc.free(extent.pfns) {
                tracing::error!(range = %extent.pfns, error = %e, "rollback of a failed allocation");
            }
        }
    }
    result
}

fn fill_holes_inner(
    alloc: &ExtentAllocator,
    map: &mut ExtentMap,
    first: u64,
    end: u64,
    unwritten: bool,
    inserted: &mut Vec<Extent>,
) -> Result<(), ExtentIoError> {
    let mut cursor = first;
    while cursor < end {
        let hole_start = map.next_hole(cursor);
        if hole_start >= end {
            break;
        }
        let hole_end = map.next_data(hole_start).map_or(end, |d| d.min(end));
        let frames = hole_end - hole_start;
        let ranges = alloc.allocate(frames, map.goal_for(hole_start))?;
        let got = ranges.iter().fold(0u64, |sum, r| sum.saturating_add(r.len));
        if got != frames {
            for range in ranges {
                if let Err(e) = alloc.free(range) {
                    tracing::error!(%range, error = %e, "returning a short allocation");
                }
            }
            return Err(ExtentIoError::ShortAllocation {
                requested: frames,
                got,
            });
        }
        let mut file_frame = hole_start;
        let mut ranges = ranges.into_iter();
        while let Some(pfns) = ranges.next() {
            let extent = Extent {
                file_frame,
                pfns,
                unwritten,
            };
            if let Err(e) = map.insert(extent) {
                // Not reachable with a correct map: the hole was just measured. Give back this
                // range and the ones not yet inserted; the caller rolls back the rest.
                for range in std::iter::once(pfns).chain(ranges) {
                    if let Err(e) = alloc.free(range) {
                        tracing::error!(%range, error = %e, "returning an allocation");
                    }
                }
                return Err(e.into());
            }
            inserted.push(extent);
            file_frame += pfns.len;
        }
        cursor = hole_end;
    }
    Ok(())
}

/// Writes `data` at byte `offset`: allocates frames for holes (goal-directed, 2 MiB-aligned
/// for large runs), zeroes the parts of new or unwritten frames that `data` does not cover,
/// copies `data` into the pool, then flushes every written line and fences once. On return the
/// data is durable; the caller journals the returned outcome. On error nothing is allocated.
///
/// Order: (1) allocate and insert every hole (rolled back on failure, before any byte is
/// stored); (2) zero the uncovered parts of a partial head/tail frame that is new or unwritten;
/// (3) copy `data`, flushing each stored run; (4) one fence; (5) mark unwritten pieces written.
/// A pool error in (2)-(4) undoes (1); unwritten pieces stay unwritten.
pub fn write(
    pool: &Pool,
    alloc: &ExtentAllocator,
    map: &mut ExtentMap,
    offset: u64,
    data: &[u8],
) -> Result<WriteOutcome, ExtentIoError> {
    let mut outcome = WriteOutcome::default();
    if data.is_empty() {
        return Ok(outcome);
    }
    let len = u64::try_from(data.len()).map_err(|_| ExtentIoError::Overflow)?;
    let span = Span::new(offset, len)?;
    let last_frame = span.end_frame - 1;

    // Partial edge frames that will need zeroing: those not holding written data now.
    let written = |frame: u64| map.lookup(frame).is_some_and(|e| !e.unwritten);
    let zero_head = span.start % FRAME_SIZE != 0 && !written(span.first_frame);
    let zero_tail = span.end % FRAME_SIZE != 0 && !written(last_frame);

    fill_holes(
        alloc,
        map,
        span.first_frame,
        span.end_frame,
        false,
        &mut outcome.allocated,
    )?;

    if let Err(e) = store(pool, map, &span, data, zero_head, zero_tail) {
        for extent in outcome.allocated.drain(..).rev() {
            map.punch(extent.file_frame, extent.pfns.len);
            if let Err(e) = alloc.free(extent.pfns) {
                tracing::error!(range = %extent.pfns, error = %e, "rollback of a failed write");
            }
        }
        return Err(e);
    }
    outcome.converted = map.mark_written(span.first_frame, span.frames());
    Ok(outcome)
}

/// Steps (2)-(4) of [`write()`]: every frame of the span is mapped.
fn store(
    pool: &Pool,
    map: &ExtentMap,
    span: &Span,
    data: &[u8],
    zero_head: bool,
    zero_tail: bool,
) -> Result<(), ExtentIoError> {
    let zero_edge = |frame: u64, from: u64, to: u64| -> Result<(), ExtentIoError> {
        // [from, to) are file bytes within `frame`.
        if to <= from {
            return Ok(());
        }
        let extent = match map.lookup(frame) {
            Some(e) => e,
            None => return Err(ExtentIoError::Unmapped { file_frame: frame }),
        };
        let at = pool_offset(&extent, from)?;
        pool.zero(at, to - from)?;
        pool.flush(at, to - from)?;
        Ok(())
    };
    if zero_head {
        zero_edge(span.first_frame, span.first_frame * FRAME_SIZE, span.start)?;
    }
    if zero_tail {
        let last = span.end_frame - 1;
        zero_edge(last, span.end, span.end_frame * FRAME_SIZE)?;
    }
    let mut copied = 0usize;
    for piece in map.mappings_iter(span.first_frame, span.frames()) {
        let (file_byte, n) = span.clip(&piece);
        let Mapping::Mapped(extent) = piece else {
            return Err(ExtentIoError::Unmapped {
                file_frame: piece.file_frame(),
            });
        };
        let n = to_usize(n)?;
        let at = pool_offset(&extent, file_byte)?;
        let end = copied.checked_add(n).ok_or(ExtentIoError::Overflow)?;
        let src = data.get(copied..end).ok_or(ExtentIoError::Overflow)?;
        pool.write_flushed(at, src)?;
        copied = end;
    }
    pool.fence();
    Ok(())
}

/// Maps every hole in `[file_frame, file_frame + frames)` with unwritten extents (fallocate)
/// and returns them. Touches no data frame. All or nothing.
pub fn allocate_unwritten(
    alloc: &ExtentAllocator,
    map: &mut ExtentMap,
    file_frame: u64,
    frames: u64,
) -> Result<Vec<Extent>, ExtentIoError> {
    let end = file_frame
        .checked_add(frames)
        .ok_or(ExtentIoError::Overflow)?;
    let mut inserted = Vec::new();
    fill_holes(alloc, map, file_frame, end, true, &mut inserted)?;
    Ok(inserted)
}

/// Stores zeros over the written, mapped bytes of `[offset, offset + len)` (holes and
/// unwritten pieces already read as zeros) and persists them. Used for the partial frames at
/// the edges of PUNCH_HOLE and ZERO_RANGE and for truncation inside a frame.
pub fn zero_mapped(
    pool: &Pool,
    map: &ExtentMap,
    offset: u64,
    len: u64,
) -> Result<(), ExtentIoError> {
    if len == 0 {
        return Ok(());
    }
    let span = Span::new(offset, len)?;
    let mut stored = false;
    for piece in map.mappings_iter(span.first_frame, span.frames()) {
        let Mapping::Mapped(extent) = piece else {
            continue;
        };
        if extent.unwritten {
            continue;
        }
        let (file_byte, n) = span.clip(&piece);
        if n == 0 {
            continue;
        }
        let at = pool_offset(&extent, file_byte)?;
        pool.zero(at, n)?;
        pool.flush(at, n)?;
        stored = true;
    }
    if stored {
        pool.fence();
    }
    Ok(())
}
