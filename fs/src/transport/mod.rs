//! How requests reach the [`Session`](crate::session::Session): the transports.
//!
//! - [`dev_fuse`]: fuser's `/dev/fuse` loop (every mount; FUSE_INIT always comes this way).
//! - `ring`: FUSE over io_uring, per-CPU queues (`-o io_uring`), over the
//!   `pfnfs_fuse_ring` crate's queues, ABI and decoder.
//! - `placement`: where the threads that serve requests run (pinned, SCHED_IDLE, under a
//!   watchdog), so a request and its reply stay on one CPU.
//!
//! A transport only translates between its wire and the session's typed methods; no
//! operation's logic lives here.

pub mod dev_fuse;
pub(crate) mod placement;
pub(crate) mod ring;

pub use dev_fuse::DevFuse;
