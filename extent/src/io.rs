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
//! - [`stage_write`] allocates frames for holes (with the map's goal so that sequential writes
//!   stay contiguous), zeroes the partial head and tail frames that are new or unwritten,
//!   copies the data in place, flushes each written range and fences once, and returns the
//!   mapping change *staged* ([`Staged`]): the map is unchanged and the new frames are held by
//!   a [`Frames`] guard. The filesystem journals the [`WriteOutcome`], and only once that
//!   record is durable commits the frames and applies the change ([`apply_outcome`], which
//!   replay uses too); if the record does not land, dropping the staged change gives the
//!   frames back. [`write()`] stages and applies at once, for callers without a journal.
//! - [`stage_unwritten`] / [`allocate_unwritten`] (fallocate) map holes with unwritten extents
//!   without touching data, staged or at once.
//! - [`zero_mapped`] stores zeros over written bytes in place (the filesystem's recovery zeroes
//!   each file's last frame past its size with it; punch, zero-range and truncate copy the
//!   partial frame instead).
//!
//! Zero-reading rule: a hole or an unwritten extent reads as zeros whatever the pool frames
//! hold; a written frame holds zeros wherever the file has never stored data (new frames are
//! zeroed where a write does not cover them), so freed frames never leak another file's data.
//!
//! Soundness and locking: the slices a read hands out are pool memory borrowed in place, and
//! writes store in place with non-temporal stores; both are `unsafe` at the pool
//! ([`Pool::borrow`], [`Pool::write_flushed`]), and this module is where their contracts are
//! kept. The argument is ownership: a frame belongs to one extent map (or to the free set, a
//! checkpoint, or a [`Frames`] guard), never to two. Reads borrow the map shared and their
//! slices borrow it too (`ReadSegment<'a>` lives no longer than `&'a ExtentMap`); every store
//! into a map's frames is a function here that takes the map exclusively (`stage_write`,
//! `write`, `zero_mapped`). So a borrowed slice and a store to the same frame cannot overlap
//! in time. The filesystem keeps the rest of the rule: it stores only to frames no map holds
//! (the log, checkpoints, new frames before their record maps them), and it holds the file's
//! lock shared for reads and exclusive for the rest, which is how it gets the borrows these
//! functions take.

use pfnfs_alloc::{AllocError, ExtentAllocator, FRAME_SIZE, Frames, Pool, PoolError};

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
///
/// The pool slices borrow `map` as well as the pool: they are frames `map` maps, and stay
/// valid only while nothing can store to them, i.e. while `map` is borrowed shared.
#[allow(unsafe_code)]
fn walk_segments<'a>(
    pool: &'a Pool,
    map: &'a ExtentMap,
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
                // SAFETY: `[at, at + n)` are bytes of written frames `map` maps (only mapped,
                // written pieces become pool segments). Frames belong to one map: the only
                // stores to a map's frames are this module's (`stage_write`, `write`,
                // `zero_mapped`), which need that map exclusively, and the filesystem stores
                // only to frames no map holds (the log, checkpoints, freshly allocated frames
                // before their record maps them). The slice lives for 'a, for which `map` is
                // borrowed shared, so no store can reach it while it lives.
                emit(ReadSegment::Pool(unsafe { pool.borrow(at, n) }?))
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
    map: &'a ExtentMap,
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
    map: &'a ExtentMap,
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
            ReadSegment::Pool(src) => pool.copy_borrowed(dst, src)?,
            ReadSegment::Zeros(_) => dst.fill(0),
        }
        at = end;
        Ok(())
    })
}

/// A mapping change whose data is durable but which is not applied to the map yet: what
/// [`stage_write`] and [`stage_unwritten`] return.
///
/// It owns the frames it allocated ([`Frames`]): dropping it (the journal append failed, an
/// error came first) gives them back, and the map never saw them. The filesystem journals
/// [`outcome`](Staged::outcome), and only once that record is durable commits the frames and
/// applies the change ([`apply_outcome`], the same function replay uses); code without a
/// journal calls [`apply`](Staged::apply).
#[derive(Debug)]
#[must_use = "dropping a staged change gives its new frames back"]
pub struct Staged<'a> {
    outcome: WriteOutcome,
    frames: Frames<'a>,
}

impl<'a> Staged<'a> {
    /// The mapping change: new extents and converted pieces.
    pub fn outcome(&self) -> &WriteOutcome {
        &self.outcome
    }

    /// The change and the guard of its new frames, for a caller that journals the change
    /// (the record takes the outcome's vectors) and then commits the frames.
    pub fn into_parts(self) -> (WriteOutcome, Frames<'a>) {
        (self.outcome, self.frames)
    }

    /// Applies the change to `map` (the map it was staged against, unchanged since) and keeps
    /// the new frames: for callers with nothing to journal. On error the map is as before and
    /// the frames go back.
    pub fn apply(self, map: &mut ExtentMap) -> Result<WriteOutcome, ExtentIoError> {
        apply_outcome(map, &self.outcome.allocated, &self.outcome.converted)?;
        self.frames.commit();
        Ok(self.outcome)
    }
}

/// Applies a mapping change to `map`: inserts the `allocated` extents, then marks the
/// `converted` pieces written. What the owner of a [`Staged`] change does once its record is
/// durable, and what replay does with the record. The inserts are all or nothing: if one
/// fails (an extent overlapping the map: an inconsistent record), those made are undone and
/// nothing is converted. Allocates nothing beyond the map's own nodes.
pub fn apply_outcome(
    map: &mut ExtentMap,
    allocated: &[Extent],
    converted: &[Extent],
) -> Result<(), ExtentIoError> {
    for (i, extent) in allocated.iter().enumerate() {
        if let Err(e) = map.insert(*extent) {
            for done in &allocated[..i] {
                // Frames this loop inserted: punching them gives back exactly their ranges,
                // which the caller still owns.
                map.punch(done.file_frame, done.pfns.len);
            }
            return Err(e.into());
        }
    }
    for piece in converted {
        map.set_written(piece.file_frame, piece.pfns.len);
    }
    Ok(())
}

/// New extents (`unwritten` as given) for every hole among logical frames `[first, end)` of
/// `map`, appended to `added` in file order, and the guard of their frames. Changes nothing in
/// the map; on error the frames taken so far go back (the guard drops).
fn fill_holes<'a>(
    alloc: &'a ExtentAllocator,
    map: &ExtentMap,
    first: u64,
    end: u64,
    unwritten: bool,
    added: &mut Vec<Extent>,
) -> Result<Frames<'a>, ExtentIoError> {
    let mut frames = Frames::none(alloc);
    let mut cursor = first;
    while cursor < end {
        let hole_start = map.next_hole(cursor);
        if hole_start >= end {
            break;
        }
        let hole_end = map.next_data(hole_start).map_or(end, |d| d.min(end));
        let want = hole_end - hole_start;
        // Holes are separated by mapped extents, so the goal (extrapolated from the extent
        // before the hole) is the same as if the earlier holes were mapped already.
        let got = alloc.allocate(want, map.goal_for(hole_start))?;
        if got.frames() != want {
            return Err(ExtentIoError::ShortAllocation {
                requested: want,
                got: got.frames(),
            });
        }
        let mut file_frame = hole_start;
        for &pfns in got.ranges() {
            added.push(Extent {
                file_frame,
                pfns,
                unwritten,
            });
            file_frame += pfns.len;
        }
        frames.absorb(got);
        cursor = hole_end;
    }
    Ok(frames)
}

/// Calls `f` with every mapped piece of logical frames `[first, first + frames)` in order,
/// the holes resolved through `pending` (new extents tiling exactly the holes of the range, in
/// file order). A hole `pending` does not cover is [`ExtentIoError::Unmapped`].
fn for_each_piece(
    map: &ExtentMap,
    pending: &[Extent],
    first: u64,
    frames: u64,
    mut f: impl FnMut(Extent) -> Result<(), ExtentIoError>,
) -> Result<(), ExtentIoError> {
    let mut next = 0usize;
    for piece in map.mappings_iter(first, frames) {
        match piece {
            Mapping::Mapped(extent) => f(extent)?,
            Mapping::Hole { file_frame, frames } => {
                let hole_end = file_frame.saturating_add(frames);
                let mut at = file_frame;
                while at < hole_end {
                    match pending.get(next) {
                        Some(e) if e.file_frame == at && e.file_end() <= hole_end => {
                            f(*e)?;
                            at = e.file_end();
                            next += 1;
                        }
                        _ => return Err(ExtentIoError::Unmapped { file_frame: at }),
                    }
                }
            }
        }
    }
    Ok(())
}

/// The extent holding logical frame `frame`: from the map, else from `pending`.
fn locate(map: &ExtentMap, pending: &[Extent], frame: u64) -> Option<Extent> {
    map.lookup(frame).or_else(|| {
        pending
            .iter()
            .find(|e| e.file_frame <= frame && frame < e.file_end())
            .copied()
    })
}

/// Writes `data` at byte `offset` and applies the mapping change at once: [`stage_write`]
/// followed by [`Staged::apply`], for callers that journal nothing. On error nothing is
/// allocated and the map is unchanged.
pub fn write(
    pool: &Pool,
    alloc: &ExtentAllocator,
    map: &mut ExtentMap,
    offset: u64,
    data: &[u8],
) -> Result<WriteOutcome, ExtentIoError> {
    stage_write(pool, alloc, map, offset, data)?.apply(map)
}

/// Writes `data` at byte `offset` without changing the map: allocates frames for holes
/// (goal-directed, 2 MiB-aligned for large runs), zeroes the parts of new or unwritten frames
/// that `data` does not cover, copies `data` into the pool, then flushes every written line
/// and fences once. On return the data is durable and the change is staged: the caller
/// journals [`Staged::outcome`] and then applies it. On error nothing is allocated (the
/// guard gives the frames back) and the map is unchanged.
///
/// Order: (1) allocate for every hole (nothing stored yet); (2) zero the uncovered parts of a
/// partial head/tail frame that is new or unwritten; (3) copy `data`, flushing each stored
/// run; (4) one fence. The conversions of unwritten pieces are computed, not applied.
///
/// The map is taken exclusively although it is not changed: the frames it maps are stored to,
/// and frames belong to one map, whose shared borrows are what in-place readers hold.
pub fn stage_write<'a>(
    pool: &Pool,
    alloc: &'a ExtentAllocator,
    map: &mut ExtentMap,
    offset: u64,
    data: &[u8],
) -> Result<Staged<'a>, ExtentIoError> {
    let mut outcome = WriteOutcome::default();
    if data.is_empty() {
        return Ok(Staged {
            outcome,
            frames: Frames::none(alloc),
        });
    }
    let len = u64::try_from(data.len()).map_err(|_| ExtentIoError::Overflow)?;
    let span = Span::new(offset, len)?;
    let last_frame = span.end_frame - 1;

    // Partial edge frames that will need zeroing: those not holding written data now.
    let written = |frame: u64| map.lookup(frame).is_some_and(|e| !e.unwritten);
    let zero_head = span.start % FRAME_SIZE != 0 && !written(span.first_frame);
    let zero_tail = span.end % FRAME_SIZE != 0 && !written(last_frame);

    let frames = fill_holes(
        alloc,
        map,
        span.first_frame,
        span.end_frame,
        false,
        &mut outcome.allocated,
    )?;
    let WriteOutcome {
        allocated,
        converted,
    } = &mut outcome;
    store(
        pool, map, allocated, converted, &span, data, zero_head, zero_tail,
    )?;
    Ok(Staged { outcome, frames })
}

/// Steps (2)-(4) of [`stage_write`]: every frame of the span is mapped by `map` or `pending`.
/// The unwritten pieces of `map` it stores into are listed in `converted` (written state), in
/// the same walk.
///
/// `map` is borrowed shared here, but [`stage_write`] holds it exclusively for the call, so no
/// slice of its frames is alive: that, and `pending` frames being the caller's guard's alone,
/// is what makes the in-place stores sound.
#[allow(unsafe_code)]
#[allow(clippy::too_many_arguments)]
fn store(
    pool: &Pool,
    map: &ExtentMap,
    pending: &[Extent],
    converted: &mut Vec<Extent>,
    span: &Span,
    data: &[u8],
    zero_head: bool,
    zero_tail: bool,
) -> Result<(), ExtentIoError> {
    static ZERO_FRAME: [u8; FRAME_SIZE as usize] = [0; FRAME_SIZE as usize];
    let zero_edge = |frame: u64, from: u64, to: u64| -> Result<(), ExtentIoError> {
        // [from, to) are file bytes within `frame`, so fewer than a frame's.
        if to <= from {
            return Ok(());
        }
        let extent =
            locate(map, pending, frame).ok_or(ExtentIoError::Unmapped { file_frame: frame })?;
        let at = pool_offset(&extent, from)?;
        let zeros = ZERO_FRAME
            .get(..to_usize(to - from)?)
            .ok_or(ExtentIoError::Overflow)?;
        // SAFETY: as for the data below: a frame of `map` (held exclusively by our caller) or
        // of `pending` (our caller's alone); the source is a static, not pool memory.
        unsafe { pool.write_flushed(at, zeros) }?;
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
    for_each_piece(map, pending, span.first_frame, span.frames(), |extent| {
        if extent.unwritten {
            converted.push(Extent {
                unwritten: false,
                ..extent
            });
        }
        let (file_byte, n) = span.clip(&Mapping::Mapped(extent));
        let n = to_usize(n)?;
        let at = pool_offset(&extent, file_byte)?;
        let end = copied.checked_add(n).ok_or(ExtentIoError::Overflow)?;
        let src = data.get(copied..end).ok_or(ExtentIoError::Overflow)?;
        // SAFETY: `[at, at + n)` lies in a frame of `extent`, which `map` maps (borrowed
        // exclusively by our caller, so no borrowed slice of it is alive and no other thread
        // reads or writes it: frames belong to one map) or which was just allocated into
        // `pending` (held by our caller's guard, referenced by nothing else). `data` is the
        // request's buffer, not pool memory of this range.
        unsafe { pool.write_flushed(at, src) }?;
        copied = end;
        Ok(())
    })?;
    pool.fence()?;
    Ok(())
}

/// Maps every hole in `[file_frame, file_frame + frames)` with unwritten extents (fallocate)
/// and returns them: [`stage_unwritten`] followed by [`Staged::apply`]. Touches no data frame.
/// All or nothing.
pub fn allocate_unwritten(
    alloc: &ExtentAllocator,
    map: &mut ExtentMap,
    file_frame: u64,
    frames: u64,
) -> Result<Vec<Extent>, ExtentIoError> {
    Ok(stage_unwritten(alloc, map, file_frame, frames)?
        .apply(map)?
        .allocated)
}

/// Allocates unwritten extents for every hole in `[file_frame, file_frame + frames)` without
/// changing the map: the staged change lists them as `allocated`. Touches no data frame.
pub fn stage_unwritten<'a>(
    alloc: &'a ExtentAllocator,
    map: &ExtentMap,
    file_frame: u64,
    frames: u64,
) -> Result<Staged<'a>, ExtentIoError> {
    let end = file_frame
        .checked_add(frames)
        .ok_or(ExtentIoError::Overflow)?;
    let mut outcome = WriteOutcome::default();
    let frames = fill_holes(alloc, map, file_frame, end, true, &mut outcome.allocated)?;
    Ok(Staged { outcome, frames })
}

/// Stores zeros over the written, mapped bytes of `[offset, offset + len)` (holes and
/// unwritten pieces already read as zeros) and persists them: zeroing in place, for a caller
/// that does not need the frame's old bytes to survive a crash (the filesystem's recovery of
/// the bytes past a file's size). The map is taken exclusively: it is not changed, but the
/// frames it owns are stored to.
pub fn zero_mapped(
    pool: &Pool,
    map: &mut ExtentMap,
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
        pool.fence()?;
    }
    Ok(())
}
