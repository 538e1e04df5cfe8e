//! The one door to pool memory: the [`PoolBackend`] trait and its implementations.
//!
//! Everything pfnfs stores goes through `read_into` / `borrow` / `write` / `flush` + `fence`
//! (or `persist`), so the same filesystem code runs on an mmapped file or device
//! ([`MmapBackend`]), on plain RAM for tests ([`MemBackend`]) and on the crash simulator of the
//! crash-consistency suite.
//!
//! Durability model (the one real PMEM gives): a store is durable only once a flush covering
//! it and a later fence have completed. `persist(range)` is `flush(range)` + `fence()`.
//!
//! Failures: a persist point can fail (an msync with [`Durability::Msync`], or a test backend
//! told to), so `fence` and `persist` return `std::io::Result<()>` with the error the OS gave
//! (its raw errno). After a failed persist the bytes may or may not have reached the medium:
//! the caller must not report the operation done, and must not build on what it stored (see
//! docs/DESIGN.md, section 6).
//!
//! Concurrency and soundness: every method takes `&self`, and pool memory is shared by all
//! threads. The safe accesses (`read_into`, `write`, `zero`, `flush`) go through the assembly
//! routines of [`crate::guarded`]: opaque to the language, so whatever safe callers do at the
//! same time they never race in the language's sense (racing copies give unspecified bytes,
//! not undefined behaviour), and fault-safe (a lost page is a [`MediaError`], not a SIGBUS).
//! The two plain fast paths are
//! `unsafe` and carry their contract to the caller: [`PoolBackend::borrow`] hands out a
//! reference into pool memory (no store to the range while it lives), and
//! [`PoolBackend::write_flushed`] stores with non-temporal instructions (no other access to the
//! range during the call). In pfnfs only the extent crate calls them, for the frames of the
//! map it holds (shared for a borrow, exclusive for a store; docs/DESIGN.md, section 2).

//!
//! Implementations here:
//! - [`MemBackend`]: zero-filled RAM, for tests and as the base of crash simulators.
//! - [`MmapBackend`]: a regular file, a block device or a `/dev/dax` character device mapped
//!   shared with memmap2; flushes with the CPU's cache-line write-back ([`crate::cpu_flush`]).
//! - `Arc<T>` of any backend, so that a test can keep a handle on a backend it gave to a pool.

use std::fmt::Debug;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::cpu_flush::{self, FlushInstr};
use crate::error::PoolError;
use crate::guarded;

/// How hard `persist` works for a file-backed pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Flush cache lines and fence (CLWB/CLFLUSHOPT + SFENCE, or CLFLUSH): durable in the
    /// persistence domain of real PMEM. For an emulated file pool the data reaches the page
    /// cache and so survives the daemon's death, not a power cut.
    #[default]
    CacheLines,
    /// Also `msync(MS_SYNC)` the range: durable in the backing file across a power cut.
    Msync,
}

/// Byte-addressed access to the whole pool. Offsets and lengths are in bytes from the start
/// of the pool; callers (the [`crate::Pool`]) check every range against `len_bytes` first,
/// so implementations may assume `offset + len <= len_bytes()` (and panic otherwise).
///
/// The safe methods are sound whatever other threads do meanwhile: `read_into`, `write` and
/// `zero` never race with each other (implementations use [`crate::guarded`], or serialise
/// them). The plain fast paths, `borrow` and `write_flushed`, are `unsafe`: their callers
/// promise the exclusion the language needs (see each).
pub trait PoolBackend: Send + Sync + Debug {
    /// Total size of the pool in bytes.
    fn len_bytes(&self) -> u64;

    /// Copies `buf.len()` bytes at `offset` into `buf`. A store racing with it leaves
    /// unspecified bytes in `buf`, nothing worse. [`MediaError`] if the memory faulted.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError>;

    /// A copy of `len` bytes at `offset` ([`read_into`](PoolBackend::read_into) a new vector).
    fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, MediaError> {
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// Borrows `len` bytes at `offset` for reading: no copy. Call
    /// [`probe`](PoolBackend::probe) first: a borrowed slice is read by plain loads, which
    /// nothing guards.
    ///
    /// # Safety
    /// No store may be made to `[offset, offset + len)` (by any thread, through any method of
    /// this backend) while the returned slice is alive.
    unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8];

    /// Says more about a fault this backend reported, where it can (a pool file tells a page
    /// its filesystem had no room for from one past its end). Default: as reported.
    fn refine_fault(&self, e: MediaError) -> MediaError {
        e
    }

    /// Where the pool's memory starts in this process, for turning the address of a fault in
    /// a borrowed slice back into a pool offset. Default: not memory-mapped.
    fn base_addr(&self) -> Option<usize> {
        None
    }

    /// Loads one byte of every page of the range: `Ok` if all of them are there (see
    /// [`crate::guarded`]). Default: nothing to check.
    fn probe(&self, _offset: u64, _len: u64) -> Result<(), MediaError> {
        Ok(())
    }

    /// Stores `data` at `offset`. Not durable until flushed and fenced.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError>;

    /// Stores zeros over `len` bytes at `offset`. Not durable until flushed and fenced.
    fn zero(&self, offset: u64, len: u64) -> Result<(), MediaError>;

    /// Stores `data` at `offset` such that it is durable after the next
    /// [`fence`](PoolBackend::fence), with no separate flush: the hardware backends use
    /// non-temporal stores for whole cache lines. Default: `write` then `flush`.
    ///
    /// # Safety
    /// No other access to `[offset, offset + data.len())` may happen during the call: no load
    /// or store by another thread, and no live slice from [`borrow`](PoolBackend::borrow).
    unsafe fn write_flushed(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        self.write(offset, data)?;
        self.flush(offset, data.len() as u64)
    }

    /// Starts write-back of every cache line overlapping the range (CLWB/CLFLUSHOPT), without
    /// waiting; a later [`fence`](PoolBackend::fence) makes it durable.
    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError>;

    /// Orders and completes all earlier flushes (SFENCE): a persist point. An error means the
    /// flushed stores may or may not be durable; what was stored must not be acknowledged.
    fn fence(&self) -> std::io::Result<()>;

    /// `flush(range)` then `fence()`: the range is durable when this returns `Ok`. An error
    /// (with the OS's errno) means it may or may not be.
    fn persist(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.flush(offset, len)?;
        self.fence()
    }

    /// Makes everything persisted so far durable on the backing store as well (msync of the
    /// range for a file mapping). A no-op where the memory itself is the persistence domain.
    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()>;

    /// Makes storage exist behind the range (blocks or pages of a sparse pool file), so that
    /// no later store into it can fault for want of room; ENOSPC when the backing store is
    /// full. A no-op where the storage always exists (devices, RAM).
    fn ensure_backed(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }

    /// Gives the storage behind the range back to the backing store (a hole punched in a
    /// pool file); the range then reads as zeros. A no-op where storage always exists.
    fn release_backing(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
}

impl<T: PoolBackend + ?Sized> PoolBackend for Arc<T> {
    fn len_bytes(&self) -> u64 {
        (**self).len_bytes()
    }
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        (**self).read_into(offset, buf)
    }
    unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
        // SAFETY: the same contract, passed on.
        unsafe { (**self).borrow(offset, len) }
    }
    fn probe(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        (**self).probe(offset, len)
    }
    fn base_addr(&self) -> Option<usize> {
        (**self).base_addr()
    }
    fn refine_fault(&self, e: MediaError) -> MediaError {
        (**self).refine_fault(e)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        (**self).write(offset, data)
    }
    fn zero(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        (**self).zero(offset, len)
    }
    unsafe fn write_flushed(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        // SAFETY: the same contract, passed on.
        unsafe { (**self).write_flushed(offset, data) }
    }
    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        (**self).flush(offset, len)
    }
    fn fence(&self) -> std::io::Result<()> {
        (**self).fence()
    }
    fn persist(&self, offset: u64, len: u64) -> std::io::Result<()> {
        (**self).persist(offset, len)
    }
    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
        (**self).sync(offset, len)
    }
    fn ensure_backed(&self, offset: u64, len: u64) -> std::io::Result<()> {
        (**self).ensure_backed(offset, len)
    }
    fn release_backing(&self, offset: u64, len: u64) -> std::io::Result<()> {
        (**self).release_backing(offset, len)
    }
}

/// A backend access met memory that is not there (SIGBUS, caught by [`crate::guarded`]):
/// where, and why as far as the backend can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("memory error (SIGBUS) at pool byte {offset:#x}: {cause}")]
pub struct MediaError {
    /// Byte offset in the pool of the faulting byte.
    pub offset: u64,
    /// Why the page was not there.
    pub cause: FaultCause,
}

/// Why a page of pool memory faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultCause {
    /// The hardware reported a memory error (poison): the frame is bad for good.
    #[error("the medium failed")]
    Poison,
    /// The page's storage is gone (past the end of a truncated pool file, or a frame a test
    /// declared lost): bad for good.
    #[error("the storage behind it is gone")]
    Gone,
    /// The page lies inside the pool file, whose filesystem could not provide it (no room:
    /// a sparse pool on a full filesystem). Not the frame's fault: it works once there is
    /// room.
    #[error("the pool file's filesystem has no room for it")]
    NoRoom,
}

impl From<MediaError> for std::io::Error {
    /// An EIO-kind error carrying the [`MediaError`] (the pool finds it again by downcast).
    fn from(e: MediaError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// Pool memory at `base`, `len_bytes` long: the accesses of the two memory backends, every one
/// through [`crate::guarded`]. Callers check ranges with [`span`] first.
#[derive(Clone, Copy, Debug)]
struct Memory {
    base: *mut u8,
    len_bytes: u64,
    flush: FlushInstr,
}

impl Memory {
    fn fault(&self, f: guarded::MediaFault) -> MediaError {
        MediaError {
            offset: (f.addr as u64).wrapping_sub(self.base as u64),
            cause: if f.is_poison() {
                FaultCause::Poison
            } else {
                FaultCause::Gone
            },
        }
    }

    /// # Safety
    /// `base` points to `len_bytes` bytes of memory mapped for as long as `self` is used.
    unsafe fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let (offset, len) = span(self.len_bytes, offset, buf.len() as u64);
        // SAFETY: the range lies inside the memory (checked by `span`; the caller's contract
        // keeps it mapped); `buf` is caller memory, not pool memory (a `&mut` cannot alias a
        // live borrow of the pool). Racing stores are guarded copies too (module docs).
        unsafe { guarded::copy_raw(buf.as_mut_ptr(), self.base.add(offset), len) }
            .map_err(|f| self.fault(f))
    }

    /// # Safety
    /// As [`Memory::read_into`].
    unsafe fn probe(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        let (offset, len) = span(self.len_bytes, offset, len);
        // SAFETY: the range lies inside the mapped memory (checked by `span`).
        unsafe { guarded::probe(self.base.add(offset), len) }.map_err(|f| self.fault(f))
    }

    /// # Safety
    /// As [`Memory::read_into`], and the memory is writable.
    unsafe fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let (offset, len) = span(self.len_bytes, offset, data.len() as u64);
        // SAFETY: the destination lies inside the writable memory (checked by `span`); `data`
        // is not a borrow of this range (that borrow would forbid this store).
        unsafe { guarded::copy_raw(self.base.add(offset), data.as_ptr(), len) }
            .map_err(|f| self.fault(f))
    }

    /// # Safety
    /// As [`Memory::write`].
    unsafe fn zero(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        let (offset, len) = span(self.len_bytes, offset, len);
        // SAFETY: as for `write`.
        unsafe { guarded::zero_raw(self.base.add(offset), len) }.map_err(|f| self.fault(f))
    }

    /// # Safety
    /// As [`Memory::write`], and no other access to the range during the call.
    unsafe fn write_flushed(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let (offset, len) = span(self.len_bytes, offset, data.len() as u64);
        // SAFETY: the destination lies inside the writable memory (checked by `span`); the
        // caller guarantees no other access to it, so it is not `data` either; the flush
        // instruction was detected on this CPU.
        unsafe { cpu_flush::copy_flushed(self.flush, self.base.add(offset), data.as_ptr(), len) }
            .map_err(|f| self.fault(f))
    }

    /// # Safety
    /// As [`Memory::read_into`].
    unsafe fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        let (offset, len) = span(self.len_bytes, offset, len);
        // SAFETY: the range lies inside the memory; `self.flush` was detected on this CPU.
        unsafe { guarded::flush(self.flush, self.base.add(offset), len) }.map_err(|f| self.fault(f))
    }
}

/// Converts a checked-in-range `(offset, len)` to `usize`s; the caller ([`crate::Pool`]) has
/// checked `offset + len <= len_bytes`, and `len_bytes` fits the address space since the whole
/// pool is mapped or allocated, so failure here is a broken contract.
fn span(len_bytes: u64, offset: u64, len: u64) -> (usize, usize) {
    let end = offset.checked_add(len);
    assert!(
        end.is_some_and(|end| end <= len_bytes),
        "pool backend: range {offset:#x}+{len:#x} outside {len_bytes:#x} bytes (caller bug)"
    );
    // Both fit in usize: they are <= len_bytes, which is the size of a live allocation.
    (offset as usize, len as usize)
}

// ---------------------------------------------------------------------------------------------
// MemBackend

/// A pool in plain RAM, zero-filled at creation. For tests and crash simulators.
///
/// The memory is a private anonymous mapping: page-aligned like a real pool, and zeroed lazily
/// by the kernel, so a large `MemBackend` costs only the pages actually touched.
/// `flush` executes the same cache-line write-back instructions as [`MmapBackend`] (so the
/// cost model is the same); `sync` is a no-op.
///
/// # Soundness
/// The bytes live in one mapping owned by the backend (page-aligned, whole pages), reached only
/// through a raw pointer; no `&mut` to them is ever formed. Through `&self`, from any thread,
/// the safe methods access them only through [`crate::guarded`]'s routines, which never race in
/// the language's sense; the
/// plain accesses are the `unsafe` methods `borrow` (a shared slice, no store while it lives)
/// and `write_flushed` (no other access during the call), whose callers guarantee that
/// exclusion. That is what makes sharing the backend between threads (`Send + Sync`) sound.
pub struct MemBackend {
    /// Start of the memory (dangling when `len_bytes` is 0).
    ptr: NonNull<u8>,
    len_bytes: u64,
    /// The anonymous mapping `ptr` points into; unmapped on drop. `None` when empty.
    _map: Option<memmap2::MmapRaw>,
    flush: FlushInstr,
}

// SAFETY: the backend owns its mapping (unmapped only on drop, by whichever thread drops it)
// and holds no thread-bound state; the raw pointer is what keeps it from being `Send` by
// default, and it points into that owned mapping.
unsafe impl Send for MemBackend {}
// SAFETY: shared use from several threads: the safe `&self` methods access the memory only
// through the guarded routines (no data race whatever the callers do), and the plain accesses are behind
// `unsafe` methods whose callers guarantee exclusion (see the type's documentation).
unsafe impl Sync for MemBackend {}

impl MemBackend {
    /// A zero-filled RAM pool of `len_bytes` bytes.
    ///
    /// # Panics
    /// If the memory cannot be mapped (larger than the address space or than overcommit
    /// allows). Use [`MemBackend::try_new`] to get an error instead.
    pub fn new(len_bytes: u64) -> MemBackend {
        match MemBackend::try_new(len_bytes) {
            Ok(backend) => backend,
            Err(e) => panic!("MemBackend::new({len_bytes}): {e}"),
        }
    }

    /// A zero-filled RAM pool of `len_bytes` bytes, or an error if it cannot be mapped.
    pub fn try_new(len_bytes: u64) -> std::io::Result<MemBackend> {
        guarded::install();
        let flush = cpu_flush::detected();
        let size = usize::try_from(len_bytes)
            .ok()
            .filter(|&size| size <= isize::MAX as usize)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    "size exceeds the address space",
                )
            })?;
        if size == 0 {
            return Ok(MemBackend {
                ptr: NonNull::dangling(),
                len_bytes: 0,
                _map: None,
                flush,
            });
        }
        let map = memmap2::MmapRaw::from(memmap2::MmapOptions::new().len(size).map_anon()?);
        let ptr = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| std::io::Error::other("anonymous mapping at address 0"))?;
        Ok(MemBackend {
            ptr,
            len_bytes,
            _map: Some(map),
            flush,
        })
    }

    fn memory(&self) -> Memory {
        Memory {
            base: self.ptr.as_ptr(),
            len_bytes: self.len_bytes,
            flush: self.flush,
        }
    }

    /// A RAM pool holding a copy of `image`.
    pub fn from_bytes(image: &[u8]) -> MemBackend {
        let mut backend = MemBackend::new(image.len() as u64);
        backend.write_mut(0, image);
        backend
    }

    /// Stores `data` at `offset` with a plain copy: holding the backend exclusively (`&mut`),
    /// nothing else can access its memory meanwhile. For filling a pool image before it is
    /// shared (tests, the crash simulator).
    ///
    /// # Panics
    /// If the range lies outside the pool.
    pub fn write_mut(&mut self, offset: u64, data: &[u8]) {
        let (offset, len) = span(self.len_bytes, offset, data.len() as u64);
        // SAFETY: the destination lies inside the mapping (checked by `span`); `&mut self`
        // excludes every other access to it, and `data` cannot be a borrow of it (a borrow
        // would hold `&self`).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), len) };
    }

    /// A copy of the whole pool.
    ///
    /// # Panics
    /// If the memory faults (RAM does not).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut image = vec![0u8; self.len_bytes as usize];
        self.read_into(0, &mut image)
            .expect("a RAM pool's memory faulted");
        image
    }
}

impl Debug for MemBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemBackend")
            .field("len_bytes", &self.len_bytes)
            .field("flush", &self.flush)
            .finish()
    }
}

impl PoolBackend for MemBackend {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        // SAFETY: (and for each method below) `memory()` describes the backend's own mapping, which lives
        // as long as `self`, is writable, and is accessed only through `Memory`'s guarded
        // routines, `borrow` and `write_flushed` (their callers keep the exclusion).
        unsafe { self.memory().read_into(offset, buf) }
    }

    unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
        let (offset, len) = span(self.len_bytes, offset, len as u64);
        // SAFETY: the range lies inside the mapping (checked by `span`), which is initialised
        // (zero-filled) and lives as long as `self`; the caller guarantees no store to it
        // while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }

    fn probe(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        // SAFETY: as for `read_into`.
        unsafe { self.memory().probe(offset, len) }
    }

    fn base_addr(&self) -> Option<usize> {
        Some(self.memory().base as usize)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        // SAFETY: as for `read_into`.
        unsafe { self.memory().write(offset, data) }
    }

    fn zero(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        // SAFETY: as for `read_into`.
        unsafe { self.memory().zero(offset, len) }
    }

    unsafe fn write_flushed(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        // SAFETY: as for `read_into`; the caller guarantees no other access to the range.
        unsafe { self.memory().write_flushed(offset, data) }
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        // SAFETY: as for `read_into`.
        unsafe { self.memory().flush(offset, len) }
    }

    fn fence(&self) -> std::io::Result<()> {
        cpu_flush::fence();
        Ok(())
    }

    fn sync(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// MmapBackend

/// What an [`MmapBackend`] maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackingKind {
    /// A regular file (emulated PMEM).
    File,
    /// A block device, e.g. `/dev/pmem0` or a loop device.
    BlockDevice,
    /// A device-DAX character device (`/dev/daxX.Y`), always mapped whole.
    DaxDevice,
}

/// A file or device opened for a pool, its kind and size, before it is mapped.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) file: File,
    pub(crate) kind: BackingKind,
    pub(crate) len_bytes: u64,
}

/// What `path` is: a regular file, a block device or a DAX character device. Anything else
/// (a directory, a pipe, `/dev/null`) is [`PoolError::NotAFileOrDevice`].
pub(crate) fn classify(path: &Path, meta: &std::fs::Metadata) -> Result<BackingKind, PoolError> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_file() {
        Ok(BackingKind::File)
    } else if ft.is_block_device() {
        Ok(BackingKind::BlockDevice)
    } else if ft.is_char_device() && dax_size_path(meta).exists() {
        Ok(BackingKind::DaxDevice)
    } else {
        Err(PoolError::NotAFileOrDevice {
            path: path.to_path_buf(),
        })
    }
}

/// `/sys/dev/char/MAJOR:MINOR/size` of a character device.
fn dax_size_path(meta: &std::fs::Metadata) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    PathBuf::from(format!(
        "/sys/dev/char/{}:{}/size",
        libc::major(rdev),
        libc::minor(rdev)
    ))
}

/// Wraps an I/O error with the path and the operation that failed.
pub(crate) fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> PoolError + 'a {
    move |source| PoolError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Opens `path` (read-only or read-write) and finds its kind and size. Block devices are
/// opened `O_EXCL` when writable, so a device mounted or held by another pool is refused.
pub(crate) fn open_target(path: &Path, read_only: bool) -> Result<Target, PoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path).map_err(io_err(path, "stat"))?;
    let kind = classify(path, &meta)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(!read_only);
    if kind == BackingKind::BlockDevice && !read_only {
        opts.custom_flags(libc::O_EXCL);
    }
    let file = opts.open(path).map_err(io_err(path, "open"))?;
    if kind == BackingKind::File && !read_only {
        // One writer per pool file: a second mount of a mounted pool is refused, not
        // allowed to corrupt it. The lock goes with the file descriptor.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(PoolError::Busy {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(path, "lock")(e)),
        }
    }
    // The path may have been replaced between stat and open: classify the open handle.
    let meta = file.metadata().map_err(io_err(path, "fstat"))?;
    let kind2 = classify(path, &meta)?;
    if kind2 != kind {
        return Err(PoolError::NotAFileOrDevice {
            path: path.to_path_buf(),
        });
    }
    let len_bytes = match kind {
        BackingKind::File => meta.len(),
        BackingKind::BlockDevice => {
            use std::io::Seek;
            let mut f = &file;
            f.seek(std::io::SeekFrom::End(0))
                .map_err(io_err(path, "seek to the end of the device"))?
        }
        BackingKind::DaxDevice => {
            let size_path = dax_size_path(&meta);
            let text = std::fs::read_to_string(&size_path)
                .map_err(io_err(path, "read the DAX device size from sysfs"))?;
            text.trim().parse::<u64>().map_err(|e| PoolError::Io {
                path: path.to_path_buf(),
                op: "parse the DAX device size from sysfs",
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?
        }
    };
    Ok(Target {
        file,
        kind,
        len_bytes,
    })
}

/// A pool in a shared memory mapping of a file, a block device or a device-DAX device.
///
/// `flush` writes back cache lines with CLWB / CLFLUSHOPT / CLFLUSH (the best this CPU has,
/// see [`crate::cpu_flush`]) and `fence` is SFENCE. With [`Durability::Msync`], `persist`
/// also msyncs the page-aligned range and returns msync's error; `sync` always msyncs (it is
/// the fsync path).
///
/// A read-only backend maps the pool `PROT_READ`: `write` and `zero` must never be called on
/// it ([`crate::Pool`] refuses writes to read-only pools before they reach the backend); they
/// panic if they are, rather than fault.
///
/// # Soundness
/// The mapping is `MAP_SHARED` (page-aligned, whole pages) and reached only through a raw
/// pointer; as for [`MemBackend`], the safe methods are guarded copies and the plain ones
/// (`borrow`, `write_flushed`) are `unsafe` with the caller guaranteeing exclusion, so `&self`
/// access from any thread is sound. `MmapRaw` is `Send + Sync` itself. pfnfs assumes it owns
/// the pool: another process that writes or truncates the file while it is mapped breaks that
/// assumption (a truncation shows up as SIGBUS), as with any mmap-based store.
pub struct MmapBackend {
    map: memmap2::MmapRaw,
    len_bytes: u64,
    kind: BackingKind,
    durability: Durability,
    read_only: bool,
    flush: FlushInstr,
    path: PathBuf,
    /// Kept open for the mapping's lifetime (and to hold the O_EXCL claim on a device).
    file: File,
}

impl MmapBackend {
    /// fallocate(2) of a range of a writable pool file with `flags`; nothing for devices,
    /// read-only pools or an empty range.
    fn fallocate(
        &self,
        flags: nix::fcntl::FallocateFlags,
        offset: u64,
        len: u64,
    ) -> std::io::Result<()> {
        if self.read_only || self.kind != BackingKind::File || len == 0 {
            return Ok(());
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
        };
        nix::fcntl::fallocate(&self.file, flags, offset, len).map_err(std::io::Error::from)
    }
}

impl Debug for MmapBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmapBackend")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("len_bytes", &self.len_bytes)
            .field("durability", &self.durability)
            .field("read_only", &self.read_only)
            .field("flush", &self.flush)
            .finish()
    }
}

/// Whether `file` lives on a tmpfs (shared memory), where 2 MiB mappings cost no extra
/// space. `false` when that cannot be told.
fn is_tmpfs(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `file` is an open descriptor for the whole call and `stat` is a writable
    // `statfs` buffer that fstatfs fills completely when it returns 0.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstatfs returned 0, so it initialised the buffer.
    let stat = unsafe { stat.assume_init() };
    stat.f_type == libc::TMPFS_MAGIC
}

impl MmapBackend {
    /// Opens and maps the file or device at `path` whole. Fails with
    /// [`PoolError::NotAFileOrDevice`] for anything else, and with [`PoolError::BadSize`] for
    /// an empty one (nothing to map).
    pub fn open(
        path: &Path,
        read_only: bool,
        durability: Durability,
    ) -> Result<MmapBackend, PoolError> {
        let target = open_target(path, read_only)?;
        MmapBackend::map(path, target, read_only, durability)
    }

    /// Maps an opened target whole.
    pub(crate) fn map(
        path: &Path,
        target: Target,
        read_only: bool,
        durability: Durability,
    ) -> Result<MmapBackend, PoolError> {
        guarded::install();
        let Target {
            file,
            kind,
            len_bytes,
        } = target;
        if len_bytes == 0 {
            return Err(PoolError::BadSize {
                path: path.to_path_buf(),
                size_bytes: 0,
                why: "nothing to map".into(),
            });
        }
        let len = usize::try_from(len_bytes).map_err(|_| PoolError::BadSize {
            path: path.to_path_buf(),
            size_bytes: len_bytes,
            why: "larger than the address space".into(),
        })?;
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len);
        let map = if read_only {
            opts.map_raw_read_only(&file)
        } else {
            opts.map_raw(&file)
        };
        let map = map.map_err(io_err(path, "mmap"))?;
        // On tmpfs, ask for 2 MiB mappings, as device DAX gives: a pool on a tmpfs mounted
        // with `huge=advise` then maps extents with one PMD each instead of 512 PTEs, which
        // cuts TLB misses and the kernel's page pinning on every 1 MiB request. Not on a disk
        // filesystem: there the advice makes page faults allocate 2 MiB folios, so every
        // 4 KiB the pool touches would take 2 MiB of disk and of write-back. Only advice: its
        // failure is not an error.
        if kind == BackingKind::File
            && is_tmpfs(&file)
            && let Err(e) = map.advise(memmap2::Advice::HugePage)
        {
            tracing::debug!(pool = %path.display(), "MADV_HUGEPAGE not taken: {e}");
        }
        Ok(MmapBackend {
            map,
            len_bytes,
            kind,
            durability,
            read_only,
            flush: cpu_flush::detected(),
            path: path.to_path_buf(),
            file,
        })
    }

    /// What is mapped.
    pub fn kind(&self) -> BackingKind {
        self.kind
    }

    /// The durability mode `persist` honours.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The path this backend maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cache-line flush instruction in use.
    pub fn flush_instr(&self) -> FlushInstr {
        self.flush
    }

    fn memory(&self) -> Memory {
        Memory {
            base: self.map.as_mut_ptr(),
            len_bytes: self.len_bytes,
            flush: self.flush,
        }
    }

    fn msync(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let (offset, len) = span(self.len_bytes, offset, len);
        if len == 0 {
            return Ok(());
        }
        // memmap2 widens the range to page boundaries and calls msync(MS_SYNC).
        self.map.flush_range(offset, len)
    }

    fn assert_writable(&self) {
        assert!(
            !self.read_only,
            "{}: write to a read-only mapping (caller bug)",
            self.path.display()
        );
    }
}

impl PoolBackend for MmapBackend {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        // SAFETY: (and for each method below) `memory()` describes this backend's mapping, which lives as
        // long as `self` and is accessed only through `Memory`'s guarded routines, `borrow`
        // and `write_flushed` (their callers keep the exclusion). Stores are made only to a
        // writable mapping (`assert_writable` first).
        unsafe { self.memory().read_into(offset, buf) }
    }

    unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
        let (offset, len) = span(self.len_bytes, offset, len as u64);
        // SAFETY: the range lies inside the mapping (checked by `span`), which lives as long
        // as `self`; mapped memory is always initialised; the caller guarantees no store to
        // the range while the slice lives.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) }
    }

    fn probe(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        // SAFETY: as for `read_into`.
        unsafe { self.memory().probe(offset, len) }
    }

    fn base_addr(&self) -> Option<usize> {
        Some(self.memory().base as usize)
    }

    /// A page inside the pool file that faulted without a hardware error is one its
    /// filesystem had no room for; one past the file's end is gone.
    fn refine_fault(&self, mut e: MediaError) -> MediaError {
        if e.cause == FaultCause::Gone
            && self.kind == BackingKind::File
            && self.file.metadata().is_ok_and(|m| m.len() > e.offset)
        {
            e.cause = FaultCause::NoRoom;
        }
        e
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        self.assert_writable();
        // SAFETY: as for `read_into`; the mapping is writable.
        unsafe { self.memory().write(offset, data) }
    }

    fn zero(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        self.assert_writable();
        // SAFETY: as for `write`.
        unsafe { self.memory().zero(offset, len) }
    }

    unsafe fn write_flushed(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        self.assert_writable();
        // SAFETY: as for `write`; the caller guarantees no other access to the range.
        unsafe { self.memory().write_flushed(offset, data) }
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        // SAFETY: as for `read_into`.
        unsafe { self.memory().flush(offset, len) }
    }

    fn fence(&self) -> std::io::Result<()> {
        cpu_flush::fence();
        Ok(())
    }

    fn persist(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.flush(offset, len)?;
        self.fence()?;
        if self.durability == Durability::Msync && !self.read_only {
            // The error msync returned, errno included: the caller fails the operation.
            self.msync(offset, len)?;
        }
        Ok(())
    }

    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.msync(offset, len)
    }

    /// fallocate (mode 0: allocate, keep the size) of the range of a pool file.
    fn ensure_backed(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.fallocate(nix::fcntl::FallocateFlags::empty(), offset, len)
    }

    /// fallocate(PUNCH_HOLE | KEEP_SIZE) of the range of a pool file.
    fn release_backing(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let punch = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
        self.fallocate(punch, offset, len)
    }
}
