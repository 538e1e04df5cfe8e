//! pfnfs-alloc: the persistent-memory pool and the extent allocator.
//!
//! Modules:
//! - [`pfn`]: [`Pfn`] and [`PfnRange`], how pool memory is named.
//! - [`layout`]: the on-pool layout constants (mirrored in docs/DESIGN.md).
//! - [`backend`]: [`PoolBackend`], the only door to pool memory (mmap, RAM, crash simulator):
//!   [`MmapBackend`] for files and devices, [`MemBackend`] for RAM. Its safe accesses are
//!   guarded copies ([`guarded`]); the zero-copy borrow and the non-temporal
//!   store are `unsafe`, with their contracts (docs/DESIGN.md, section 2).
//! - [`crash_sim`]: [`CrashSimBackend`], a RAM pool with a live and a durable image that
//!   crashes at a chosen persist point (clean or torn per 8-byte word), for crash tests.
//! - [`faulty`]: [`FaultyBackend`], a backend that fails chosen persist points with a chosen
//!   errno, for tests of what a failed persist does.
//! - [`guarded`]: the instructions that touch pool memory, in one block of assembly whose
//!   faults (SIGBUS: storage taken away, media errors) a signal handler turns into error
//!   returns, as the kernel's exception fixups do.
//! - [`cpu_flush`]: cache-line write-back (CLWB/CLFLUSHOPT/CLFLUSH) and SFENCE, detected at
//!   run time.
//! - [`superblock`]: the two-slot superblock (format 2, naming the metadata tree's root in a
//!   [`MetaRoot`]; format 1 still decoded for the upgrade).
//! - [`pool`]: [`Pool`], open/create with every check, range-checked access.
//! - [`bad_frames`]: [`BadFrames`], the frames whose memory failed, refused by the pool and
//!   kept out of the allocator.
//! - [`allocator`]: [`ExtentAllocator`], free space as extents in allocation groups, and
//!   [`Frames`], the guard that gives allocated frames back unless committed.
//! - [`error`]: [`PoolError`] and [`AllocError`]; a failed system call keeps its
//!   `std::io::Error` (and so its errno).
//!
//! Ownership and locking, in short (each type says more): a [`Pool`] is shared by all threads
//! of a mount behind an `Arc` and serialises only superblock commits (one mutex); the bytes of
//! the pool belong to their owners (header: the pool; log: the journal; data frames: an
//! extent map, a checkpoint or a [`Frames`] guard), which serialise their own stores. The
//! [`ExtentAllocator`] is shared the same way, with one mutex per allocation group, never two
//! held at once except in ascending order.

pub mod allocator;
pub mod backend;
pub mod bad_frames;
pub mod cpu_flush;
pub mod crash_sim;
pub mod error;
pub mod faulty;
pub mod guarded;
pub mod layout;
pub mod pfn;
pub mod pool;
pub mod superblock;

pub use allocator::{AllocStats, Backing, ExtentAllocator, Frames};
pub use backend::{
    BackingKind, Durability, FaultCause, MediaError, MemBackend, MmapBackend, PoolBackend,
};
pub use bad_frames::BadFrames;
pub use crash_sim::{CrashMode, CrashReport, CrashSimBackend};
pub use error::{AllocError, PoolError};
pub use faulty::{Fault, FaultyBackend};
pub use pfn::{FRAME_SHIFT, FRAME_SIZE, HUGE_FRAMES, Pfn, PfnRange};
pub use pool::{CreateOptions, OpenOptions, Pool};
pub use superblock::{CheckpointRefV1, MetaRoot, Superblock, SuperblockError};
