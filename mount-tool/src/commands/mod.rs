//! One module per subcommand; each has an `Args` clap struct and a `run` function.

pub mod bench;
pub mod fsck;
pub mod mkfs;
pub mod mount;
pub mod stat;
pub mod umount;
pub mod upgrade;
