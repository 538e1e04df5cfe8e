//! pfnfs-fs: the filesystem.
//!
//! - [`error`]: errors: what kind of failure, plus the context that explains it.
//! - [`acl`]: POSIX ACLs: the xattr wire format and the mode <-> ACL rules.
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
//! - [`session`]: one typed method per FUSE operation between a transport and the volume,
//!   and the one place an error becomes an errno.
//! - [`fuse`]: the fuser adapter: translates fuser requests into volume calls; no filesystem
//!   logic.
//! - `ring` / [`wire`]: FUSE over io_uring: per-CPU queues answering the same operations,
//!   with the kernel ABI they need (fuser has no io_uring transport).
//! - `placement`: where the daemon's threads run, so a request and its reply stay on one CPU.
//! - [`serve`] / [`report`] (in `serve_impl`): mounting a pool, and reading its figures.

pub mod acl;
pub mod error;
pub mod fsck;
pub mod fuse;
pub mod inode;
pub mod journal;
mod placement;
mod ring;
mod serve_impl;
pub mod session;
pub mod volume;
pub mod wire;

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
}

/// Mounts the pool and serves it until unmounted (or SIGTERM/SIGINT). Calls `ready` once the
/// mount is live. Persists everything before returning.
pub fn serve(config: MountConfig, ready: impl FnOnce()) -> Result<(), String> {
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
}

/// Reads a pool read-only (replaying its log in memory) and reports its figures.
pub fn report(pool: &std::path::Path) -> Result<PoolReport, String> {
    serve_impl::report(pool)
}
