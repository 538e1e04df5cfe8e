//! The room behind a pool file: how much of it the filesystem holding it has given storage
//! already, and how much more that filesystem can give. A pool file is sparse; pfnfs makes
//! storage exist behind frames as it hands them out (ENOSPC when it cannot), so a pool larger
//! than its filesystem's free room mounts and works until the room runs out. `mkfs` and
//! `mount` say so up front.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::size::format_size;

/// A pool file's size, the bytes its filesystem has given it, and what that filesystem has
/// free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Room {
    pub pool_bytes: u64,
    pub allocated_bytes: u64,
    pub available_bytes: u64,
}

impl Room {
    /// The room behind the pool file at `path`; `None` for a device (or when it cannot be
    /// read: nothing to warn about then).
    pub fn of(path: &Path) -> Option<Room> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let fs = nix::sys::statvfs::statvfs(path).ok()?;
        Some(Room {
            pool_bytes: meta.len(),
            allocated_bytes: meta.blocks().saturating_mul(512).min(meta.len()),
            available_bytes: fs.blocks_available().saturating_mul(fs.fragment_size()),
        })
    }

    /// Bytes of the pool its filesystem may still have to provide.
    pub fn missing_bytes(&self) -> u64 {
        self.pool_bytes.saturating_sub(self.allocated_bytes)
    }

    /// A warning when the filesystem cannot provide the rest of the pool.
    pub fn warning(&self, path: &Path) -> Option<String> {
        if self.available_bytes >= self.missing_bytes() {
            return None;
        }
        Some(format!(
            "warning: {}: the pool is {} but its filesystem has storage for {} of it \
             ({} reserved, {} free): writes beyond that get ENOSPC (\"No space left on \
             device\"); `pfnfs mkfs --prealloc` reserves a whole pool up front",
            path.display(),
            format_size(self.pool_bytes),
            format_size(self.allocated_bytes.saturating_add(self.available_bytes)),
            format_size(self.allocated_bytes),
            format_size(self.available_bytes),
        ))
    }
}
