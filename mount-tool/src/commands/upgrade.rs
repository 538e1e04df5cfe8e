//! `pfnfs upgrade POOL`: convert a format 1 pool to format 2, in place; on a format 2 pool
//! made before inline data existed, turn it on (a superblock flag: older builds then refuse
//! the pool, so it is never set behind the user's back).
//!
//! Format 2 keeps metadata in an on-pool tree instead of a full image in each checkpoint
//! (docs/DESIGN.md, section 3). The conversion is crash-safe: it reads the format 1
//! checkpoint and log, writes the new tree into frames the format 1 state leaves free, and
//! only then writes the format 2 superblock (the commit point); interrupted before that, the
//! pool is the format 1 pool it was, and the command can simply be run again.

use std::path::PathBuf;

use clap::Args;
use pfnfs_fs::mountinfo;
use pfnfs_fs::volume::Upgrade;

use crate::Failure;

/// Convert a format 1 pool to format 2 in place (crash-safe: rerun it if interrupted), or
/// turn inline data on for a format 2 pool made without it.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The pool file or device.
    pub pool: PathBuf,
}

/// Converts the pool and says what was converted.
pub fn run(args: UpgradeArgs) -> Result<(), Failure> {
    let pool = &args.pool;
    let entries = mountinfo::read().map_err(|message| Failure { message, code: 1 })?;
    if let Some(entry) = mountinfo::find_by_pool(&entries, pool).first() {
        return Err(Failure {
            message: format!(
                "{}: mounted on {}: unmount it first",
                pool.display(),
                entry.mount_point.display()
            ),
            code: 1,
        });
    }
    let done = pfnfs_fs::volume::upgrade_pool(pool).map_err(|e| Failure {
        message: format!("upgrade {}", crate::about(pool, &e.to_string())),
        code: 1,
    })?;
    let done = match done {
        Upgrade::Format1(done) => done,
        Upgrade::InlineData => {
            println!(
                "{}: inline data turned on: files of up to {} bytes keep their bytes in their \
                 inode record from now on (pfnfs builds older than this one no longer open \
                 the pool)",
                pool.display(),
                pfnfs_fs::schema::INLINE_DATA_MAX
            );
            return Ok(());
        }
    };
    println!(
        "{}: converted to format 2: {} inode(s), {} log record(s) replayed; the metadata tree \
         takes {} frame(s), {} frame(s) of the format 1 checkpoint are free again",
        pool.display(),
        done.inodes,
        done.records,
        done.tree_frames,
        done.freed_frames
    );
    Ok(())
}
