//! `pfnfs bench`: benchmark a mount. Not implemented yet; exits 1.

use std::path::PathBuf;

use clap::Args;

use crate::Failure;

/// Benchmark a pfnfs mount. Not implemented yet: exits 1.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The mount point to benchmark.
    pub mountpoint: PathBuf,
}

/// Says that bench does not exist yet.
pub fn run(args: BenchArgs) -> Result<(), Failure> {
    Err(Failure::new(format!(
        "bench {}: not implemented yet",
        args.mountpoint.display()
    )))
}
