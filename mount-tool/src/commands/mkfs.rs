//! `pfnfs mkfs POOL --size SIZE [--force] [--prealloc]`: format a pool file or device.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use clap::Args;
use pfnfs_alloc::{CreateOptions, Pool};

use crate::Failure;
use crate::room::Room;
use crate::size::{format_size, parse_size};

/// Create (format) a pool in a file or on a block/DAX device.
#[derive(Debug, Args)]
pub struct MkfsArgs {
    /// The pool file (created if missing) or block device.
    pub pool: PathBuf,

    /// Pool size: bytes, or with a binary suffix (512M, 1G, 400G). Required for a file; a
    /// device's whole size is used when it is left out.
    #[arg(long, short = 's', value_parser = parse_size, value_name = "SIZE")]
    pub size: Option<u64>,

    /// Overwrite an existing pool or a non-empty file.
    #[arg(long, short = 'f')]
    pub force: bool,

    /// Reserve storage for the whole pool file now (fallocate), instead of as frames are
    /// first used: a full filesystem can then never cut a write short.
    #[arg(long)]
    pub prealloc: bool,
}

/// Formats the pool.
pub fn run(args: MkfsArgs) -> Result<(), Failure> {
    let size_bytes = match args.size {
        Some(size) => size,
        None if is_block_device(&args.pool) => 0,
        None => {
            return Err(Failure::usage(format!(
                "{}: --size is required for a pool file (e.g. --size 1G)",
                args.pool.display()
            )));
        }
    };
    check_not_mounted(&args.pool)?;
    let pool = create_pool(&args.pool, size_bytes, args.force)?;
    if args.prealloc {
        pool.preallocate()
            .map_err(|e| Failure::new(format!("--prealloc: {e}")))?;
    }
    println!(
        "{}: created a pfnfs pool of {}",
        args.pool.display(),
        format_size(pool.len_bytes())
    );
    if let Some(room) = Room::of(&args.pool) {
        println!(
            "{}: storage reserved for {} of it{}",
            args.pool.display(),
            format_size(room.allocated_bytes),
            if args.prealloc {
                ""
            } else {
                " (the rest as frames are first used)"
            }
        );
        if let Some(w) = room.warning(&args.pool) {
            eprintln!("{w}");
        }
    }
    Ok(())
}

/// Creates a pool, turning the pool's error into a message that names the path.
pub fn create_pool(path: &Path, size_bytes: u64, force: bool) -> Result<Pool, Failure> {
    Pool::create(path, size_bytes, &CreateOptions { force })
        .map_err(|e| Failure::new(e.to_string()))
}

/// True if `path` is a block device.
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Refuses to touch a pool that is mounted or held by a running process.
fn check_not_mounted(pool: &Path) -> Result<(), Failure> {
    let entries = pfnfs_fs::mountinfo::read()?;
    if let Some(entry) = pfnfs_fs::mountinfo::find_by_pool(&entries, pool).first() {
        return Err(Failure::new(format!(
            "{}: pool is mounted on {}; unmount it first",
            pool.display(),
            entry.mount_point.display()
        )));
    }
    if let Some(holder) = pfnfs_fs::procs::holders(pool, pfnfs_fs::procs::Scan::All).first() {
        return Err(Failure::new(format!(
            "{}: pool is in use by process {} ({})",
            pool.display(),
            holder.pid,
            holder.comm
        )));
    }
    Ok(())
}
