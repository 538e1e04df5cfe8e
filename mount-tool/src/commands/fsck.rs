//! `pfnfs fsck POOL`: check a pool. Not implemented yet; exits 8 (fsck(8): operational error).

use std::path::PathBuf;

use clap::Args;

use crate::Failure;

/// Check a pool's metadata and free space. Not implemented yet: exits 8.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// The pool file or device.
    pub pool: PathBuf,
}

/// Says that fsck does not exist yet, with fsck(8)'s "operational error" code.
pub fn run(args: FsckArgs) -> Result<(), Failure> {
    Err(Failure {
        message: format!("fsck {}: not implemented yet", args.pool.display()),
        code: 8,
    })
}
