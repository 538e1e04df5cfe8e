//! pfnfs-fuse-ring: FUSE over io_uring, the transport fuser does not have.
//!
//! Over `/dev/fuse` a small request costs two cross-CPU wake-ups; with FUSE over io_uring
//! (Linux 6.14+, `/sys/module/fuse/parameters/enable_uring`) the kernel queues each request
//! on the CPU that made it, in a slot shared with a daemon thread pinned there. This crate
//! is that transport's wire side, kept apart from the filesystem so that the one piece of
//! it that needs `unsafe` (handing buffers to the kernel) lives in a small crate of its own:
//!
//! - [`abi`]: the kernel's FUSE structs (`include/uapi/linux/fuse.h`, 7.31+) read and
//!   written with zerocopy, opcodes, and directory-entry packing.
//! - [`request`]: a slot's bytes decoded into a typed [`Request`].
//! - [`queue`]: one per-CPU queue: registering its slots, waiting for requests, committing
//!   replies. The only `unsafe` here (each block with its SAFETY argument).
//!
//! What a request means is not decided here: the daemon (`pfnfs-fs`, `transport::ring`)
//! hands each decoded request to its session and encodes the typed answer with [`abi`].

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;
#[allow(unsafe_code)]
pub mod queue;
pub mod request;

pub use queue::{FuseQueue, QueueEnd, RING_HEADER_BYTES, RingReply, RingRequest};
pub use request::{DecodeError, Header, Request, Setattr, TimeArg, decode, header};
