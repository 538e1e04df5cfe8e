//! pfnfs-fs: the filesystem.
//!
//! TODO: map of modules.

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
            other => Err(format!("unknown mode {other:?} (expected direct or buffered)")),
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
}

/// Mounts the pool and serves it until unmounted (or SIGTERM/SIGINT). Calls `ready` once the
/// mount is live. Persists everything before returning.
pub fn serve(config: MountConfig, ready: impl FnOnce()) -> Result<(), String> {
    let _ = (config, ready);
    todo!()
}
