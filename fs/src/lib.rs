//! pfnfs-fs: the filesystem.
//!
//! - [`acl`]: POSIX ACLs: the xattr wire format and the mode <-> ACL rules.
//! - [`error`]: what kind of failure an operation met ([`error::ErrorKind`]) and its context.
//! - [`inode`]: inodes, attributes and directories in RAM (stable readdir cookies).
//! - [`journal`]: the metadata redo log and the checkpoint format: how RAM state becomes
//!   durable and comes back at mount.
//! - [`volume`]: [`volume::Volume`], the mounted filesystem: every operation, validated,
//!   journaled, then applied by the same code replay uses. Locking rules live there. Its
//!   parts, under `volume/`:
//!   - `load.rs`: mounting (checkpoint, log replay, recovery and orphans at mount) and the
//!     one checkpoint decoder, which fsck shares;
//!   - `commit.rs`: `commit`, checkpoints, shutdown, and the space accounting (reserves,
//!     ENOSPC before anything is journaled);
//!   - `apply.rs`: `Volume::apply`, one function per record kind, and replay;
//!   - `namespace.rs`, `attr.rs`, `data.rs`, `xattr.rs`: the operations (names; attributes
//!     and statfs; file data, privilege drops and copy-on-write; extended attributes and
//!     ACLs);
//!   - `unlinked.rs`: unlinked inodes the kernel still holds;
//!   - `fsck_support.rs`: what fsck needs of a volume (never used on a mounted one).
//! - [`fsck`]: checking and repairing an unmounted pool: the API and report types in
//!   `fsck/mod.rs`, reading a damaged pool in `fsck/load.rs`, the checks in `fsck/checks.rs`,
//!   the repairs in `fsck/repair.rs`.
//! - [`session`]: [`session::Session`], one typed method per FUSE operation: every rule
//!   that is not wire format, and the one place an error becomes an errno.
//! - [`transport`]: `/dev/fuse` (fuser) and FUSE over io_uring, each only translating
//!   between its wire and the session; where the threads serving them run.
//! - `serve_impl`: mounting a pool ([`serve`]) and reading its figures ([`report`]).
//! - [`mountinfo`] / [`procs`]: where pools are mounted (the mount's source is the pool, as
//!   [`serve`] mounts it) and which processes hold one: for the `pfnfs` command and the bench.

#![forbid(unsafe_code)]

pub mod acl;
pub mod error;
pub mod fsck;
pub mod inode;
pub mod journal;
pub mod mountinfo;
pub mod procs;
pub mod schema;
mod serve_impl;
pub mod session;
pub mod transport;
pub mod volume;

use std::path::PathBuf;

pub use pfnfs_alloc::Durability;

/// How file data reaches the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// FOPEN_DIRECT_IO on every open: no kernel page cache; reads answered from pool memory.
    #[default]
    Direct,
    /// Kernel page cache (keep_cache, writeback cache): the baseline.
    Buffered,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "direct" => Ok(Mode::Direct),
            "buffered" => Ok(Mode::Buffered),
            other => Err(format!(
                "unknown mode {other:?} (expected direct or buffered)"
            )),
        }
    }
}

/// Everything `serve` needs to mount a pool.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// The pool file or device.
    pub pool: PathBuf,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// direct or buffered.
    pub mode: Mode,
    /// Mount read-only.
    pub read_only: bool,
    /// Let other users in (allow_other).
    pub allow_other: bool,
    /// Let the kernel check permissions (default_permissions). On by default.
    pub default_permissions: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// What persist guarantees for a file pool.
    pub durability: Durability,
    /// Other -o options passed through to the kernel mount (dev, suid, ...).
    pub extra_options: Vec<String>,
    /// Serve over FUSE over io_uring (per-CPU queues) when the kernel offers it.
    pub io_uring: bool,
    /// RAM for inodes beyond those in use and for checked tree nodes (`-o metadata_cache`).
    pub metadata_cache_bytes: u64,
    /// Leave storage behind a pool file's frames to chance (`-o backing=sparse`): a store
    /// into a frame its filesystem has no room for then faults. Off by default: storage is
    /// reserved as frames are used (docs/DESIGN.md 4, "Room behind the pool").
    pub sparse_backing: bool,
}

/// Why a pool could not be mounted, served or reported on.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The pool could not be opened (the message names the pool).
    #[error(transparent)]
    Pool(#[from] pfnfs_alloc::PoolError),
    /// The pool's metadata could not be loaded.
    #[error("{0}")]
    Load(error::FsError),
    /// mount(2) failed.
    #[error("cannot mount {} on {}: {source}", pool.display(), mountpoint.display())]
    Mount {
        pool: PathBuf,
        mountpoint: PathBuf,
        source: std::io::Error,
    },
    /// The FUSE session could not start.
    #[error("cannot start FUSE on {}: {source}", mountpoint.display())]
    Fuse {
        mountpoint: PathBuf,
        source: std::io::Error,
    },
    /// The signal handlers or their thread could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The FUSE session ended with an error.
    #[error("FUSE session ended with an error: {0}")]
    Session(std::io::Error),
    /// The final checkpoint at unmount failed: the log still holds everything.
    #[error("{}: could not write the final checkpoint: {source}", pool.display())]
    FinalCheckpoint {
        pool: PathBuf,
        source: error::FsError,
    },
}

/// Mounts the pool and serves it until unmounted (or SIGTERM/SIGINT). Calls `ready` once the
/// mount is live. Persists everything before returning.
pub fn serve(config: MountConfig, ready: impl FnOnce()) -> Result<(), ServeError> {
    serve_impl::serve(config, ready)
}

/// Figures `pfnfs stat` prints, read from a pool (mounted or not) without writing to it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PoolReport {
    /// The pool's path.
    pub pool: String,
    /// Pool UUID, hex.
    pub uuid: String,
    /// Total pool bytes.
    pub size_bytes: u64,
    /// Bytes in the data region.
    pub data_bytes: u64,
    /// Data-region bytes in use (file frames and checkpoint frames).
    pub used_bytes: u64,
    /// Free data-region bytes.
    pub free_bytes: u64,
    /// Number of inodes (files, directories, links, ...).
    pub inodes: u64,
    /// Regular files.
    pub files: u64,
    /// Regular files whose bytes live in their inode record (inline data).
    pub inline_files: u64,
    /// The pool lets small files keep their bytes inline (superblock flag; `pfnfs upgrade`
    /// turns it on for a pool made before it existed).
    pub inline_data: bool,
    /// Directories.
    pub directories: u64,
    /// Extents over all files.
    pub extents: u64,
    /// Free extents.
    pub free_extents: u64,
    /// Largest free extent in bytes.
    pub largest_free_bytes: u64,
    /// Share of file data (mapped frames) held in 2 MiB-aligned huge extents, 0..=1.
    pub huge_extent_share: f64,
    /// Bytes of metadata in RAM (inode table, extent maps, directories, free set), estimated.
    pub metadata_ram_bytes: u64,
    /// Bytes of metadata on the pool (log in use + checkpoint).
    pub metadata_pool_bytes: u64,
    /// Metadata bytes in RAM per GiB of file data (mapped frames).
    pub metadata_ram_bytes_per_gib: f64,
    /// Metadata bytes on the pool per GiB of file data.
    pub metadata_pool_bytes_per_gib: f64,
    /// What one `struct page` per 4 KiB frame (64 bytes) would cost for this pool, in bytes:
    /// the figure pfnfs's extent-only design avoids.
    pub struct_page_bytes: u64,
    /// True if the pool is marked mounted (in use, or not cleanly unmounted).
    pub mounted: bool,
    /// Frames recorded as bad (their memory failed), as `[start PFN, frames]` ranges: never
    /// used again (docs/DESIGN.md section 2, "When pool memory fails").
    pub bad_frames: Vec<[u64; 2]>,
}

/// Reads a pool read-only (replaying its log in memory) and reports its figures.
pub fn report(pool: &std::path::Path) -> Result<PoolReport, ServeError> {
    serve_impl::report(pool)
}
