//! File data: open and release, read, write, fsync, fallocate, SEEK_DATA / SEEK_HOLE and
//! copy_file_range; what a change of a file's data or size takes away ([`privilege_drop`],
//! journaled before the change); and the copy-on-write of partial frames that truncate,
//! punch and zero-range journal instead of rewriting a frame in place.

use std::sync::atomic::Ordering;

use pfnfs_alloc::{FRAME_SIZE, Frames};
use pfnfs_extent::{Extent, ExtentMap, ReadSegment, io as extent_io};

use super::apply::{apply_set_attr_xattrs, apply_write_inline};
use super::*;

/// SEEK_DATA or SEEK_HOLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekWhence {
    Data,
    Hole,
}

/// Zeros for copying holes over mapped destination bytes.
static ZEROS: [u8; 65536] = [0; 65536];

/// copy_file_range within one file copies its source out this many bytes at a time.
const COPY_CHUNK_BYTES: u64 = 1 << 20;

thread_local! {
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Above this many extents, `fsync` of a file msyncs the whole pool in one call instead of
/// one call per extent.
pub const FSYNC_EXTENTS_MAX: usize = 64;

const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

impl Volume {
    /// Counts an open handle.
    pub fn open(&self, ino: u64, write: bool) -> FsResult<()> {
        if write {
            self.check_writable()?;
        }
        let cell = self.cell(ino)?;
        cell.opens.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Drops an open handle; reclaims an unlinked inode on its last close.
    pub fn release(&self, ino: u64) {
        if let Ok(cell) = self.cell(ino) {
            // Never below zero: a release without an open must not wrap the count and keep
            // an unlinked file's frames forever.
            let prev = cell
                .opens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if prev == Ok(1) {
                self.reclaim_if_orphan(ino);
                // Still here and nameless: the kernel's FORGET will free it.
                if self.cell(ino).is_ok_and(|c| c.inode.read().attr.nlink == 0) {
                    self.unlinked.touch(ino);
                }
            }
        }
    }

    /// Reads up to `size` bytes at `offset` and hands them to `reply` as one slice: straight
    /// from pool memory when the range lies in one extent, else gathered once.
    pub fn read<R>(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let cell = self.cell(ino)?;
        // relatime: atime moves when it is older than mtime/ctime or a day old, before the
        // data goes out (the kernel refetches attributes after a read). It is kept in RAM
        // and reaches the pool with the inode's next record or checkpoint.
        let stale = match self.atime_policy() {
            AtimePolicy::Never => false,
            AtimePolicy::Relative => relatime_stale(&cell.inode.read().attr),
            AtimePolicy::Always => true,
        };
        if !self.read_only && stale {
            // An atime update is a change like any other: it pins the inode until the next
            // commit, which must come before the changes pile up.
            self.commit_if_many_changes();
            // Under the gate, like every change, so that no commit is running.
            let _gate = self.gate.read_recursive();
            cell.inode.write().attr.atime = Time::now();
            self.touch_inode(ino);
        }
        let inode = cell.inode.read();
        self.read_locked(&inode, offset, size, reply)
    }

    fn read_locked<R>(
        &self,
        inode: &Inode,
        offset: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> FsResult<R> {
        let map = match &inode.body {
            Body::File(m) => m,
            Body::Inline(bytes) => {
                // The bytes are the file (their length is its size).
                let from = (offset.min(bytes.len() as u64)) as usize;
                let to = from.saturating_add(size as usize).min(bytes.len());
                return Ok(reply(&bytes[from..to]));
            }
            Body::Dir(_) => return Err(is_directory("is a directory")),
            _ => return Err(invalid("not a regular file")),
        };
        let file_size = inode.attr.size;
        if offset >= file_size || size == 0 {
            return Ok(reply(&[]));
        }
        let len = (size as u64).min(file_size - offset);
        // One walk to see whether the range is a single pool slice (the common case for
        // files kept contiguous): then the reply is written straight from pool memory.
        let mut first: Option<&[u8]> = None;
        let mut pieces = 0usize;
        extent_io::for_each_segment(&self.pool, map, offset, len, |s| {
            pieces += 1;
            if let ReadSegment::Pool(b) = s {
                first.get_or_insert(b);
            }
            Ok(())
        })?;
        if pieces == 1
            && let Some(bytes) = first
        {
            self.stats
                .single_extent_reads
                .fetch_add(1, Ordering::Relaxed);
            return Ok(reply(bytes));
        }
        self.stats.gathered_reads.fetch_add(1, Ordering::Relaxed);
        GATHER.with(|g| {
            let mut buf = g.borrow_mut();
            buf.clear();
            extent_io::for_each_segment(&self.pool, map, offset, len, |s| {
                match s {
                    ReadSegment::Pool(b) => self.pool.extend_from_borrowed(&mut buf, b)?,
                    ReadSegment::Zeros(n) => {
                        let at = buf.len();
                        buf.resize(at + n, 0)
                    }
                }
                Ok(())
            })?;
            Ok(reply(&buf))
        })
    }

    /// Writes `data` at `offset` for `writer`; returns bytes written.
    pub fn write(
        &self,
        writer: impl Into<Writer>,
        ino: u64,
        offset: u64,
        data: &[u8],
    ) -> FsResult<u32> {
        let writer = writer.into();
        self.check_writable()?;
        if data.is_empty() {
            return Ok(0);
        }
        self.maybe_checkpoint();
        self.make_room(0, (data.len() as u64).div_ceil(FRAME_SIZE) + 1);
        let _gate = self.gate.read();
        let cell = self.cell(ino)?;
        let mut inode = cell.inode.write();
        self.touch_inode(ino);
        self.write_locked(writer, &mut inode, offset, data)?;
        Ok(data.len() as u32)
    }

    /// A write into an inode the caller holds exclusively (and under the gate): copies
    /// `data` into the pool once, then journals the mapping/size change if there is one.
    fn write_locked(
        &self,
        writer: Writer,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
    ) -> FsResult<()> {
        let ino = inode.ino;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_BYTES)
            .ok_or_else(|| file_too_large("write past the largest file size"))?;
        if end <= INLINE_DATA_MAX as u64 && self.may_be_inline(inode) {
            return self.write_inline(writer, inode, offset, data, end);
        }
        self.spill(inode)?;
        let Body::File(map) = &mut inode.body else {
            return Err(invalid("not a regular file"));
        };
        let first = offset / FRAME_SIZE;
        self.ensure_space(map, first, end.div_ceil(FRAME_SIZE) - first)?;
        self.drop_privileges(inode, writer)?;
        if offset > inode.attr.size {
            self.zero_past_eof(inode, offset)?;
        }
        let Body::File(map) = &mut inode.body else {
            return Err(invalid("not a regular file"));
        };
        // The data lands (durable) before the record; the mapping changes only after it.
        let staged = extent_io::stage_write(&self.pool, &self.alloc, map, offset, data)?;
        let mode = inode.attr.mode;
        let size = inode.attr.size.max(end);
        let times = self.data_times(&inode.attr);
        if staged.outcome().is_empty() && size == inode.attr.size {
            // A pure overwrite is not journaled; its times become durable with the next
            // record or checkpoint of this inode.
            inode.attr.mtime = times.mtime;
            inode.attr.ctime = times.ctime;
            self.stats.overwrites.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let (outcome, frames) = staged.into_parts();
        let op = Op::Write {
            ino,
            allocated: outcome.allocated,
            converted: outcome.converted,
            size,
            times,
            mode,
        };
        // If the record does not land, `frames` goes back and nothing changed in RAM.
        self.journal_owning(&op, frames)?;
        if let Op::Write {
            allocated,
            converted,
            ..
        } = &op
        {
            self.apply_write(inode, allocated, converted, size, times, mode, false)?;
        }
        self.stats.journaled_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// True if a write that ends within the inline limit keeps `inode`'s bytes inline: the
    /// pool allows inline data, and the file is inline already or has no extents and a size
    /// within the limit (it is empty, or a hole that reads as zeros).
    fn may_be_inline(&self, inode: &Inode) -> bool {
        match &inode.body {
            Body::Inline(_) => true,
            Body::File(map) => {
                map.is_empty()
                    && inode.attr.size <= INLINE_DATA_MAX as u64
                    && self.pool.inline_data()
            }
            _ => false,
        }
    }

    /// A write that leaves the file within the inline limit: one record carrying the bytes;
    /// no frame is touched.
    fn write_inline(
        &self,
        writer: Writer,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
        end: u64,
    ) -> FsResult<()> {
        // The record and the inode record grow the metadata by about the bytes written.
        self.ensure_metadata_room(data.len() as u64)?;
        self.drop_privileges(inode, writer)?;
        let op = Op::WriteInline {
            ino: inode.ino,
            offset,
            data: data.to_vec(),
            size: inode.attr.size.max(end),
            times: self.data_times(&inode.attr),
            mode: inode.attr.mode,
        };
        self.journal.append(&self.pool, &op)?;
        if let Op::WriteInline {
            offset,
            data,
            size,
            times,
            mode,
            ..
        } = &op
        {
            apply_write_inline(inode, *offset, data, *size, *times, *mode)?;
        }
        self.stats.inline_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves an inline file's bytes into a frame of their own, before a change that takes
    /// the file past the inline limit or needs frames (fallocate, punch): the frame is
    /// written and persisted, then a `Spill` record maps it. Nothing to do for other inodes.
    pub(super) fn spill(&self, inode: &mut Inode) -> FsResult<()> {
        let Body::Inline(bytes) = &inode.body else {
            return Ok(());
        };
        self.ensure_space(&ExtentMap::new(), 0, 1)?;
        let frames = self.alloc.allocate(1, None)?;
        let range = match frames.ranges() {
            [range] if range.len == 1 => *range,
            _ => return Err(corrupt("allocator returned a split single frame")),
        };
        let mut frame = [0u8; FRAME_SIZE as usize];
        frame[..bytes.len()].copy_from_slice(bytes);
        let at = range.start.byte_offset();
        self.pool.write(at, &frame)?;
        self.pool.flush(at, FRAME_SIZE)?;
        self.pool.fence()?;
        let extent = Extent {
            file_frame: 0,
            pfns: range,
            unwritten: false,
        };
        self.journal_owning(
            &Op::Spill {
                ino: inode.ino,
                extent,
            },
            frames,
        )?;
        self.apply_spill(inode, &extent, false)?;
        self.stats.spills.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// fsync / fdatasync / fsyncdir: everything is persisted (flushed and fenced) as it
    /// happens; this makes the inode durable on the pool's backing store as well, for a pool
    /// kept in a file on a disk (a no-op on device DAX). It msyncs what the inode's state
    /// depends on: the superblocks and the log, the current checkpoint, and a file's own
    /// extents, so one file's fsync does not write back every dirty page of the pool. A file
    /// of more than `FSYNC_EXTENTS_MAX` extents, or an unknown inode, syncs the whole pool.
    ///
    /// While the journal refuses records (a persist failed and no checkpoint has succeeded
    /// since), what the pool holds is in doubt: fsync tries that checkpoint first and fails
    /// with the journal's error if it cannot write it.
    pub fn fsync(&self, ino: u64) -> FsResult<()> {
        if self.journal.is_refusing() {
            self.maybe_checkpoint();
            if let Some(e) = self.journal.refusal() {
                return Err(e);
            }
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let whole = match self.cell(ino) {
            Ok(cell) => match &cell.inode.read().body {
                Body::File(map) if map.len() > FSYNC_EXTENTS_MAX => true,
                Body::File(map) => {
                    ranges.extend(
                        map.iter()
                            .map(|e| (e.pfns.start.byte_offset(), e.pfns.len_bytes())),
                    );
                    false
                }
                _ => false,
            },
            Err(_) => true,
        };
        if whole {
            self.pool.sync(0, self.pool.len_bytes())?;
            return Ok(());
        }
        // The log ends where the data region starts: one range from the superblocks on.
        let (log_offset, log_len) = self.pool.log_region();
        ranges.push((0, log_offset + log_len));
        // The metadata tree's nodes were msynced when they were committed.
        for (offset, len) in ranges {
            self.pool.sync(offset, len)?;
        }
        Ok(())
    }

    /// fallocate with modes 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE[|KEEP_SIZE].
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        self.fallocate_as(Caller::default(), ino, offset, len, mode)
    }

    /// fallocate on behalf of `caller`. Every mode takes privileges away, as on Linux, before
    /// the file changes.
    pub fn fallocate_as(
        &self,
        caller: Caller,
        ino: u64,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> FsResult<()> {
        self.check_writable()?;
        if len == 0 {
            return Err(invalid("fallocate of zero length"));
        }
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= MAX_FILE_BYTES)
            .ok_or_else(|| file_too_large("range past the largest file size"))?;
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & FALLOC_FL_PUNCH_HOLE != 0;
        let zero = mode & FALLOC_FL_ZERO_RANGE != 0;
        if mode & !(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0
            || (punch && (zero || !keep))
        {
            return Err(unsupported("unsupported fallocate mode"));
        }
        self.maybe_checkpoint();
        self.make_room(0, len.div_ceil(FRAME_SIZE).saturating_add(1));
        let _gate = self.gate.read();
        let mut locked = self.lock(&[ino])?;
        let inode = locked.get(ino)?;
        match inode.body {
            Body::File(_) | Body::Inline(_) => {}
            Body::Dir(_) => return Err(is_directory("is a directory")),
            _ => return Err(enodev_like()),
        }
        self.drop_privileges(inode, Writer::process(caller))?;
        // Every mode works on frames.
        self.spill(inode)?;
        let times = self.data_times(&inode.attr);
        let mode = inode.attr.mode;
        let size = inode.attr.size;
        if punch {
            let punch_end = end.min(size);
            if punch_end > offset {
                let (cow, frames) = match &locked.get(ino)?.body {
                    Body::File(map) => self.punch_edges_cow(map, offset, punch_end)?,
                    _ => (Vec::new(), Frames::none(&self.alloc)),
                };
                let op = Op::Punch {
                    ino,
                    offset,
                    len: punch_end - offset,
                    times,
                    mode,
                    cow,
                };
                self.commit_cow(op, frames, &mut locked)?;
            }
            return Ok(());
        }
        // Mode 0 / KEEP_SIZE / ZERO_RANGE: make sure every frame of the range is mapped;
        // ZERO_RANGE also turns it unwritten (and copies partial edge frames), all in one
        // record.
        let first = offset / FRAME_SIZE;
        let frames_in_range = end.div_ceil(FRAME_SIZE) - first;
        let inode = locked.get(ino)?;
        let Body::File(map) = &mut inode.body else {
            return Err(corrupt("not a file"));
        };
        self.ensure_space(map, first, frames_in_range)?;
        // The copied edge frames and the new unwritten extents are held by one guard until
        // the record lands; the map changes only in `apply`.
        let (cow, mut frames) = if zero {
            self.punch_edges_cow(map, offset, end)?
        } else {
            (Vec::new(), Frames::none(&self.alloc))
        };
        let (outcome, new_frames) =
            extent_io::stage_unwritten(&self.alloc, map, first, frames_in_range)?.into_parts();
        frames.absorb(new_frames);
        let extents = outcome.allocated;
        let new_size = if keep { size } else { size.max(end) };
        if new_size > size {
            self.zero_past_eof(locked.get(ino)?, new_size)?;
        }
        let op = if zero {
            Op::ZeroRange {
                ino,
                offset,
                len,
                size: new_size,
                times,
                mode,
                cow,
                extents,
            }
        } else if extents.is_empty() && new_size == size {
            return Ok(());
        } else {
            Op::Allocate {
                ino,
                extents,
                size: new_size,
                times,
                mode,
            }
        };
        self.journal_owning(&op, frames)?;
        self.apply(&op, &mut locked, false)
    }

    /// Copy-on-write frames for the partial frames at the edges of `[offset, end)`, and the
    /// guard holding them until their record is durable.
    fn punch_edges_cow(
        &self,
        map: &ExtentMap,
        offset: u64,
        end: u64,
    ) -> FsResult<(Vec<Extent>, Frames<'_>)> {
        let frame = FRAME_SIZE;
        let (first, first_off) = (offset / frame, (offset % frame) as usize);
        let (last, last_off) = (end / frame, (end % frame) as usize);
        let edges = if first == last {
            // Inside one frame.
            [Some((first, first_off, last_off)), None]
        } else {
            [
                (first_off != 0).then_some((first, first_off, frame as usize)),
                (last_off != 0).then_some((last, 0, last_off)),
            ]
        };
        let mut cow = Vec::new();
        let mut frames = Frames::none(&self.alloc);
        for (file_frame, from, to) in edges.into_iter().flatten() {
            // An error drops `frames`: the copies made so far go back.
            if let Some((extent, copy)) = self.cow_frame(map, file_frame, from, to)? {
                cow.push(extent);
                frames.absorb(copy);
            }
        }
        Ok((cow, frames))
    }

    /// Copy-on-write of one logical frame whose bytes `[from, to)` (offsets within the
    /// frame) must read as zeros: a new frame gets the old contents with that range zeroed
    /// and is persisted. None if the frame is a hole or unwritten (it reads as zeros
    /// already). The caller journals the returned extent and commits the guard holding its
    /// frame; until then nothing references it, and dropping the guard gives it back.
    pub(crate) fn cow_frame(
        &self,
        map: &ExtentMap,
        file_frame: u64,
        from: usize,
        to: usize,
    ) -> FsResult<Option<(Extent, Frames<'_>)>> {
        let Some(old) = map.lookup(file_frame) else {
            return Ok(None);
        };
        if old.unwritten {
            return Ok(None);
        }
        let old_pfn = Pfn(old.pfns.start.0 + (file_frame - old.file_frame));
        let new = self.alloc.allocate(1, old_pfn.checked_add(1))?;
        let range = match new.ranges() {
            [range] if range.len == 1 => *range,
            _ => return Err(corrupt("allocator returned a split single frame")),
        };
        let mut frame = [0u8; FRAME_SIZE as usize];
        self.pool.read_into(old_pfn.byte_offset(), &mut frame)?;
        let n = frame.len();
        frame[from.min(n)..to.min(n).max(from.min(n))].fill(0);
        let at = range.start.byte_offset();
        self.pool.write(at, &frame)?;
        self.pool.flush(at, FRAME_SIZE)?;
        self.pool.fence()?;
        Ok(Some((
            Extent {
                file_frame,
                pfns: range,
                unwritten: false,
            },
            new,
        )))
    }

    /// Journals and applies a Truncate or Punch whose copied frames `frames` holds: if the
    /// record does not land, they go back to the allocator.
    pub(super) fn commit_cow(
        &self,
        op: Op,
        frames: Frames<'_>,
        locked: &mut Locked,
    ) -> FsResult<()> {
        self.journal_owning(&op, frames)?;
        self.apply(&op, locked, false)
    }

    /// Takes away what a change of `inode`'s data or size by `writer` removes (see
    /// [`privilege_drop`]), journaled before the change: a crash leaves either the old data
    /// with the old privileges, the old data without them, or the new data without them,
    /// never new data with the old privileges (a pure overwrite lands in place before any
    /// record, so no record after the data could give that). Costs nothing when there is
    /// nothing to take.
    pub(super) fn drop_privileges(&self, inode: &mut Inode, writer: Writer) -> FsResult<()> {
        if let Some(op) = privilege_drop(inode, writer, Time::now()) {
            self.journal.append(&self.pool, &op)?;
            apply_set_attr_xattrs(inode, &op);
        }
        Ok(())
    }

    /// Before a change that makes a file longer than its size: zeroes the written bytes of
    /// its last frame past the size, up to `to`. They are zero unless a crash lost the record
    /// of an extending write whose data had landed there; the file never showed them, and
    /// must not once it grows over them. (So mount needs no pass over every file.) A write
    /// starting at the end of the file, the common case, has nothing to zero.
    pub(super) fn zero_past_eof(&self, inode: &mut Inode, to: u64) -> FsResult<()> {
        let size = inode.attr.size;
        let end = to.min(size.next_multiple_of(FRAME_SIZE));
        if end <= size || size.is_multiple_of(FRAME_SIZE) {
            return Ok(());
        }
        if let Body::File(map) = &mut inode.body {
            extent_io::zero_mapped(&self.pool, map, size, end - size)?;
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE.
    pub fn seek(&self, ino: u64, offset: u64, whence: SeekWhence) -> FsResult<u64> {
        let cell = self.cell(ino)?;
        let inode = cell.inode.read();
        let size = inode.attr.size;
        if matches!(inode.body, Body::Inline(_)) {
            // All data, no hole before the end.
            return match whence {
                _ if offset >= size => Err(no_such_offset("offset at or past end of file")),
                SeekWhence::Data => Ok(offset),
                SeekWhence::Hole => Ok(size),
            };
        }
        let map = inode
            .file_map()
            .ok_or_else(|| invalid("not a regular file"))?;
        if offset >= size {
            return Err(no_such_offset("offset at or past end of file"));
        }
        let frame = offset / FRAME_SIZE;
        match whence {
            SeekWhence::Data => match map.next_data(frame) {
                Some(f) => {
                    let at = (f * FRAME_SIZE).max(offset);
                    if at >= size {
                        Err(no_such_offset("no data past offset"))
                    } else {
                        Ok(at)
                    }
                }
                None => Err(no_such_offset("no data past offset")),
            },
            SeekWhence::Hole => {
                let f = map.next_hole(frame);
                Ok(f.saturating_mul(FRAME_SIZE).max(offset).min(size))
            }
        }
    }

    /// copy_file_range: one bulk copy per run of the source, straight from its frames into the
    /// destination (within one file, through a buffer, 1 MiB at a time).
    pub fn copy_range(
        &self,
        caller: Caller,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        self.check_writable()?;
        if len == 0 {
            return Ok(0);
        }
        self.maybe_checkpoint();
        self.make_room(0, len.div_ceil(FRAME_SIZE).saturating_add(1));
        let _gate = self.gate.read();
        let mut locked = self.lock(&[ino_in, ino_out])?;
        for ino in [ino_in, ino_out] {
            match locked.get(ino)?.attr.kind() {
                Kind::File => {}
                Kind::Dir => return Err(is_directory("copy_file_range on a directory")),
                _ => return Err(invalid("copy_file_range on a non-regular file")),
            }
        }
        let size_in = locked.get(ino_in)?.attr.size;
        if off_in >= size_in {
            return Ok(0);
        }
        let len = len.min(size_in - off_in);
        if ino_in == ino_out && off_in < off_out.saturating_add(len) && off_out < off_in + len {
            return Err(invalid("overlapping copy within one file"));
        }
        off_out
            .checked_add(len)
            .filter(|e| *e <= MAX_FILE_BYTES)
            .ok_or_else(|| file_too_large("copy past the largest file size"))?;
        let writer = Writer::process(caller);
        self.drop_privileges(locked.get(ino_out)?, writer)?;
        if let Body::Inline(bytes) = &locked.get(ino_in)?.body {
            // At most the inline limit: one write of the source's bytes.
            let piece = bytes[off_in as usize..(off_in + len) as usize].to_vec();
            self.write_locked(writer, locked.get(ino_out)?, off_out, &piece)?;
            return Ok(len);
        }
        if ino_in != ino_out {
            // Take the source's guard out of `locked`: its segments borrow its extent map
            // (shared) while the destination is written through `locked`. One bulk copy per
            // run of the source, straight from its frames into the destination.
            let src = locked.take(ino_in)?;
            let Body::File(src_map) = &src.body else {
                return Err(invalid("copy from a non-regular file"));
            };
            let mut segments = Vec::new();
            extent_io::read_segments(&self.pool, src_map, off_in, len, &mut segments)?;
            let mut at = off_out;
            for segment in segments {
                self.copy_segment(writer, &mut locked, ino_out, at, segment)?;
                at += segment.len() as u64;
            }
            return Ok(len);
        }
        // Within one file (ranges checked disjoint above): a write takes the one extent map
        // exclusively, so the source is copied out first, a chunk at a time.
        let mut buf: Vec<u8> = Vec::new();
        // The chunk's runs, in order: (holds data, length); data runs are in `buf`.
        let mut runs: Vec<(bool, usize)> = Vec::new();
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(COPY_CHUNK_BYTES);
            buf.clear();
            runs.clear();
            let Body::File(map) = &locked.get(ino_in)?.body else {
                return Err(invalid("copy from a non-regular file"));
            };
            extent_io::for_each_segment(&self.pool, map, off_in + done, n, |segment| {
                if let ReadSegment::Pool(bytes) = segment {
                    self.pool.extend_from_borrowed(&mut buf, bytes)?;
                }
                runs.push((matches!(segment, ReadSegment::Pool(_)), segment.len()));
                Ok(())
            })?;
            let (mut at, mut in_buf) = (off_out + done, 0usize);
            for &(data, k) in &runs {
                let segment = if data {
                    in_buf += k;
                    ReadSegment::Pool(&buf[in_buf - k..in_buf])
                } else {
                    ReadSegment::Zeros(k)
                };
                self.copy_segment(writer, &mut locked, ino_out, at, segment)?;
                at += k as u64;
            }
            done += n;
        }
        Ok(len)
    }

    /// One run of copy_file_range's source, written at `at` of `ino_out`: data is written as
    /// is; a run of zeros (a hole or unwritten extent) stays a hole where the destination has
    /// none, overwrites mapped destination bytes with zeros, and extends the size as a write
    /// of zeros would.
    fn copy_segment(
        &self,
        writer: Writer,
        locked: &mut Locked,
        ino_out: u64,
        at: u64,
        segment: ReadSegment<'_>,
    ) -> FsResult<()> {
        let n = match segment {
            ReadSegment::Pool(data) => {
                return self.write_locked(writer, locked.get(ino_out)?, at, data);
            }
            ReadSegment::Zeros(n) => n as u64,
        };
        let dst = locked.get(ino_out)?;
        if matches!(dst.body, Body::Inline(_)) && at + n > INLINE_DATA_MAX as u64 {
            // Past the inline limit the run stays a hole where it can: in frames.
            self.spill(dst)?;
        }
        let mapped = match &dst.body {
            Body::File(m) => m
                .mappings_iter(
                    at / FRAME_SIZE,
                    (at + n).div_ceil(FRAME_SIZE) - at / FRAME_SIZE,
                )
                .any(|m| matches!(m, pfnfs_extent::Mapping::Mapped(_))),
            // Within the limit: inline bytes are overwritten (or the file extended) by a
            // write of zeros.
            Body::Inline(_) => true,
            _ => false,
        };
        let (size, mode) = (dst.attr.size, dst.attr.mode);
        let mut pos = at;
        while mapped && pos < at + n {
            let k = (at + n - pos).min(ZEROS.len() as u64);
            self.write_locked(writer, locked.get(ino_out)?, pos, &ZEROS[..k as usize])?;
            pos += k;
        }
        if !mapped && at + n > size {
            self.zero_past_eof(locked.get(ino_out)?, at + n)?;
            // Extend the size over the hole, as a write of zeros would.
            let op = Op::Truncate {
                ino: ino_out,
                size: at + n,
                time: Time::now(),
                mode,
                cow: Vec::new(),
            };
            self.commit(op, locked)?;
        }
        Ok(())
    }
}

/// True if a read should move atime under relatime rules.
fn relatime_stale(a: &Attr) -> bool {
    if a.atime <= a.mtime || a.atime <= a.ctime {
        return true;
    }
    Time::now().secs.saturating_sub(a.atime.secs) >= 24 * 3600
}

fn enodev_like() -> FsError {
    no_device("fallocate on a special file")
}

/// The record that takes away what a change of `inode`'s data or size by `writer` removes
/// (Linux's `file_remove_privs`), or None when there is nothing to take: the file capability
/// whoever writes, and unless the writer keeps them (CAP_FSETID) setuid, and setgid when the
/// file is group-executable or the writer is not in the file's group (the daemon sees only
/// the writer's primary group). Regular files only; page-cache write-back takes nothing.
pub(crate) fn privilege_drop(inode: &Inode, writer: Writer, now: Time) -> Option<Op> {
    let Writer::Process {
        caller,
        keeps_suidgid,
    } = writer
    else {
        return None;
    };
    let a = &inode.attr;
    if a.kind() != Kind::File {
        return None;
    }
    let mode = if keeps_suidgid {
        a.mode
    } else {
        mode_without_suidgid(a.mode, a.gid, caller)
    };
    let capability = inode.xattrs.contains_key(CAPABILITY_XATTR);
    if mode == a.mode && !capability {
        return None;
    }
    let xattrs = if capability {
        vec![(CAPABILITY_XATTR.to_vec(), None)]
    } else {
        Vec::new()
    };
    Some(Op::SetAttrXattrs {
        ino: inode.ino,
        mode,
        uid: a.uid,
        gid: a.gid,
        atime: a.atime,
        mtime: a.mtime,
        ctime: now,
        xattrs,
    })
}

/// `mode` of a file in group `gid` once a writer without CAP_FSETID changed it: setuid
/// cleared, and setgid when the file is group-executable or `caller` is not in its group.
pub(super) fn mode_without_suidgid(mode: u32, gid: u32, caller: Caller) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_ISGID != 0 && (m & libc::S_IXGRP != 0 || caller.gid != gid) {
        m &= !libc::S_ISGID;
    }
    m
}
