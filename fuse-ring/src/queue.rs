//! One FUSE-over-io_uring queue: the request slots it shares with the kernel.
//!
//! Why: over `/dev/fuse` every request is two wake-ups of whichever daemon thread the kernel
//! picks, usually on the other CPU; on this kind of VM a cross-CPU wake-up costs several
//! microseconds (a 4 KiB read takes 13-17 us that way and 5.5 us when requester and daemon
//! share a CPU). With FUSE over io_uring (Linux 6.14+, `enable_uring`) the kernel keeps one
//! queue per CPU: a request is put in a slot of the queue of the CPU it was made on, and the
//! thread serving that queue, pinned to that CPU, is woken there. Requests and replies are
//! copied between the caller and the slot's buffers, so a reply is written into the slot
//! (a read gathers its PFN ranges there) and a write's data is read from it.
//!
//! A slot is two buffers registered with `FUSE_IO_URING_CMD_REGISTER`: a header (the
//! `fuse_in_header`/`fuse_out_header`, the opcode's fixed argument, and the slot's commit
//! id and payload length) and a payload as large as the biggest request. The kernel owns
//! the slot from registration or commit until the command completes; [`FuseQueue::serve`] only
//! reads and writes a slot between the completion and the next commit.
//!
//! This is the one module of this crate with `unsafe`: pushing a command makes the kernel
//! use the slot's buffers after the call returns, which the compiler cannot check.
//!
//! Ownership: a [`FuseQueue`] is moved into the thread that serves it and never shared;
//! its slots' buffers belong to the kernel from the moment a command naming them is pushed
//! until that command completes, and to [`FuseQueue::serve`]'s handler only between a
//! completion and the next commit. Buffers are freed only once every slot is dead (the
//! kernel completed its last command on it); otherwise they are leaked.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use memmap2::MmapMut;

/// Bytes of `struct fuse_uring_req_header`: in/out header, opcode header, entry info.
pub const RING_HEADER_BYTES: usize = 128 + 128 + 32;
const OP_IN_OFFSET: usize = 128;
const ENT_OFFSET: usize = 256;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// How long registration waits for the kernel to finish FUSE_INIT.
const INIT_WAIT: Duration = Duration::from_secs(10);

/// One request as the kernel put it in a slot.
#[derive(Debug)]
pub struct RingRequest<'a> {
    /// `struct fuse_in_header` (40 bytes used of 128).
    pub in_header: &'a [u8],
    /// The opcode's fixed argument (`fuse_read_in`, ...), zeros when it has none.
    pub op_in: &'a [u8],
    /// Bytes of the payload the kernel wrote (names, write data).
    pub payload_len: usize,
}

/// The answer to one request: an errno (0 or negative) and the payload bytes written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingReply {
    /// 0, or a negative errno.
    pub error: i32,
    /// Bytes of reply written at the start of the payload buffer (0 with an error).
    pub len: usize,
}

impl RingReply {
    /// An error reply.
    pub fn err(errno: i32) -> RingReply {
        RingReply {
            error: -errno.abs(),
            len: 0,
        }
    }

    /// A reply of `len` payload bytes.
    pub fn ok(len: usize) -> RingReply {
        RingReply { error: 0, len }
    }
}

/// How a queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEnd {
    /// Requests served.
    pub requests: u64,
    /// The kernel ended the connection (unmount): the normal end.
    pub disconnected: bool,
}

/// Where a slot stands with the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Registering,
    Fetching,
    Dead,
}

struct Slot {
    header: MmapMut,
    payload: MmapMut,
    state: SlotState,
}

/// `struct fuse_uring_cmd_req` in the SQE's 80-byte command area.
fn cmd_area(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// Whether `res` (a negative errno) says the FUSE connection is gone (unmounted, aborted).
fn gone(res: i32) -> bool {
    res == -libc::ENOTCONN || res == -libc::ECONNABORTED || res == -libc::ENODEV
}

/// Sets `sqe->len`, which io-uring's `UringCmd80` has no setter for (FUSE reads the
/// number of iovecs there on registration).
fn with_sqe_len(entry: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);
    // SAFETY: `Entry128` is `#[repr(C)]` over `(io_uring_sqe, [u8; 64])`: 128 bytes made
    // only of integers and unions of integers, so it may be viewed as bytes and every byte
    // pattern is a valid value. `len` is the `u32` at byte 24 of `io_uring_sqe` in the
    // kernel ABI (opcode, flags, ioprio, fd, off, addr, len).
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above; the bytes came from a valid `Entry128`.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

fn anon(len: usize) -> io::Result<MmapMut> {
    MmapMut::map_anon(len)
}

/// One queue of a FUSE connection's io_uring: its ring and its slots, set up but not yet
/// registered with the kernel.
pub struct FuseQueue {
    dev: RawFd,
    qid: u16,
    payload_bytes: usize,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    slots: Vec<Slot>,
}

impl std::fmt::Debug for FuseQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseQueue")
            .field("qid", &self.qid)
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl FuseQueue {
    /// Sets up queue `qid` of the FUSE connection on `dev` (a `/dev/fuse` descriptor): an
    /// io_uring and `depth` slots of `payload_bytes` each. Nothing is sent to the kernel,
    /// so a failure here leaves the connection as it was.
    pub fn new(dev: RawFd, qid: u16, depth: usize, payload_bytes: usize) -> io::Result<FuseQueue> {
        let depth = depth.max(1);
        let ring = IoUring::builder()
            .setup_cqsize((depth * 2) as u32)
            .build((depth + 1) as u32)?;
        let mut slots = Vec::with_capacity(depth);
        for _ in 0..depth {
            slots.push(Slot {
                header: anon(4096)?,
                payload: anon(payload_bytes)?,
                state: SlotState::Registering,
            });
        }
        Ok(FuseQueue {
            dev,
            qid,
            payload_bytes,
            ring,
            slots,
        })
    }

    /// Registers the slots and serves requests until the kernel ends the connection. Call
    /// it on a thread pinned to CPU `qid`; `handle` answers each request by writing its
    /// reply into the payload buffer (which holds the request's payload on entry).
    ///
    /// Registration is retried while the kernel has not finished FUSE_INIT (EAGAIN), for
    /// up to 10 s. An error is returned when registration fails; the kernel then turns
    /// io_uring off for the connection and requests go on over `/dev/fuse`.
    pub fn serve(
        self,
        handle: impl FnMut(&RingRequest<'_>, &mut [u8]) -> RingReply,
    ) -> io::Result<QueueEnd> {
        serve_queue(self, handle)
    }
}

fn serve_queue(
    queue: FuseQueue,
    mut handle: impl FnMut(&RingRequest<'_>, &mut [u8]) -> RingReply,
) -> io::Result<QueueEnd> {
    let FuseQueue {
        dev,
        qid,
        payload_bytes,
        mut ring,
        mut slots,
    } = queue;
    // The two buffers of each slot as the kernel reads them at registration, boxed so
    // the addresses given to the kernel stay put.
    let iovs: Vec<Box<[libc::iovec; 2]>> = slots
        .iter_mut()
        .map(|s| {
            Box::new([
                libc::iovec {
                    iov_base: s.header.as_mut_ptr().cast(),
                    iov_len: RING_HEADER_BYTES,
                },
                libc::iovec {
                    iov_base: s.payload.as_mut_ptr().cast(),
                    iov_len: payload_bytes,
                },
            ])
        })
        .collect();
    let register = |idx: usize| {
        let e = opcode::UringCmd80::new(types::Fd(dev), CMD_REGISTER)
            .cmd(cmd_area(0, qid))
            .addr(Some(iovs[idx].as_ptr() as u64))
            .build()
            .user_data(idx as u64);
        with_sqe_len(e, 2)
    };
    let commit = |commit_id: u64, idx: usize| {
        opcode::UringCmd80::new(types::Fd(dev), CMD_COMMIT_AND_FETCH)
            .cmd(cmd_area(commit_id, qid))
            .build()
            .user_data(idx as u64)
    };
    let push = |ring: &mut IoUring<squeue::Entry128, cqueue::Entry>, e: &squeue::Entry128| {
        // SAFETY: the command refers to a slot's iovec array and buffers, which live in
        // `iovs` and `slots` until every slot is dead (the kernel completed its last
        // command on it) and are leaked otherwise (below). The queue has room: at most
        // one command per slot is outstanding.
        unsafe { ring.submission().push(e) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))
    };
    let mut run = || -> io::Result<QueueEnd> {
        for idx in 0..slots.len() {
            push(&mut ring, &register(idx))?;
        }
        let started = Instant::now();
        let mut requests = 0u64;
        let mut disconnected = false;
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if gone(-e.raw_os_error().unwrap_or(0)) => {
                    // The connection was torn down: the kernel has released every slot.
                    for slot in slots.iter_mut() {
                        slot.state = SlotState::Dead;
                    }
                    return Ok(QueueEnd {
                        requests,
                        disconnected: true,
                    });
                }
                Err(e) => return Err(e),
            }
            // One completion at a time (no allocation): answering pushes to the ring.
            loop {
                let next = ring.completion().next();
                let Some((idx, res)) = next.map(|c| (c.user_data(), c.result())) else {
                    break;
                };
                let idx = idx as usize;
                let slot = &mut slots[idx];
                if slot.state == SlotState::Registering && res == -libc::EAGAIN {
                    // The kernel has not processed the FUSE_INIT reply yet: ask again.
                    if started.elapsed() > INIT_WAIT {
                        return Err(io::Error::other(
                            "FUSE over io_uring: the kernel did not finish FUSE_INIT",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    push(&mut ring, &register(idx))?;
                    continue;
                }
                if res < 0 {
                    let err = io::Error::from_raw_os_error(-res);
                    if slot.state == SlotState::Registering {
                        return Err(err);
                    }
                    if gone(res) {
                        disconnected = true;
                    } else {
                        tracing::warn!(qid, "FUSE ring slot ended: {err}");
                    }
                    slot.state = SlotState::Dead;
                    if slots.iter().all(|s| s.state == SlotState::Dead) {
                        return Ok(QueueEnd {
                            requests,
                            disconnected,
                        });
                    }
                    continue;
                }
                slot.state = SlotState::Fetching;
                let ent = &slot.header[ENT_OFFSET..ENT_OFFSET + 32];
                let commit_id = u64::from_ne_bytes(ent[8..16].try_into().unwrap());
                let payload_len = u32::from_ne_bytes(ent[16..20].try_into().unwrap()) as usize;
                let unique = u64::from_ne_bytes(slot.header[8..16].try_into().unwrap());
                if commit_id == 0 || unique == 0 {
                    // Not a FUSE request (a descriptor that is not /dev/fuse answered).
                    return Err(io::Error::other(
                        "FUSE over io_uring: a completion without a request",
                    ));
                }
                let reply = {
                    let req = RingRequest {
                        in_header: &slot.header[..OP_IN_OFFSET],
                        op_in: &slot.header[OP_IN_OFFSET..ENT_OFFSET],
                        payload_len: payload_len.min(payload_bytes),
                    };
                    handle(&req, &mut slot.payload[..])
                };
                let len = if reply.error == 0 {
                    reply.len.min(payload_bytes)
                } else {
                    0
                };
                let h = &mut slot.header[..];
                h[0..4].copy_from_slice(&((16 + len) as u32).to_ne_bytes());
                h[4..8].copy_from_slice(&reply.error.to_ne_bytes());
                h[8..16].copy_from_slice(&unique.to_ne_bytes());
                h[ENT_OFFSET + 16..ENT_OFFSET + 20].copy_from_slice(&(len as u32).to_ne_bytes());
                requests += 1;
                push(&mut ring, &commit(commit_id, idx))?;
            }
        }
    };
    let result = run();
    if slots.iter().any(|s| s.state != SlotState::Dead) {
        // Ended early (an error) while the kernel may still hold slots: close the ring,
        // which cancels its commands, and never give the buffers back to the allocator,
        // since a copy the kernel had already queued could still land in them.
        drop(ring);
        std::mem::forget(slots);
        std::mem::forget(iovs);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_len_lands_in_the_len_field() {
        let e = opcode::UringCmd80::new(types::Fd(3), CMD_REGISTER)
            .cmd(cmd_area(7, 1))
            .addr(Some(0x1000))
            .build();
        let e = with_sqe_len(e, 2);
        // SAFETY: the same byte view of an `Entry128` as in `with_sqe_len`.
        let raw: [u8; 128] = unsafe { std::mem::transmute(e) };
        assert_eq!(raw[0], io_uring::opcode::UringCmd80::CODE);
        assert_eq!(i32::from_ne_bytes(raw[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_ne_bytes(raw[16..24].try_into().unwrap()), 0x1000);
        assert_eq!(u32::from_ne_bytes(raw[24..28].try_into().unwrap()), 2);
        // cmd_op (u32 at 8) and the command area (from byte 48)
        assert_eq!(
            u32::from_ne_bytes(raw[8..12].try_into().unwrap()),
            CMD_REGISTER
        );
        assert_eq!(u64::from_ne_bytes(raw[56..64].try_into().unwrap()), 7);
        assert_eq!(u16::from_ne_bytes(raw[64..66].try_into().unwrap()), 1);
    }

    #[test]
    fn a_descriptor_that_is_not_fuse_is_refused() {
        // /dev/zero has no io_uring commands; /dev/null completes every one with 0.
        for dev in ["/dev/zero", "/dev/null"] {
            let f = std::fs::File::open(dev).unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            let q = FuseQueue::new(fd, 0, 1, 1 << 16).unwrap();
            let r = q.serve(|_, _| RingReply::ok(0));
            assert!(r.is_err(), "{dev}: {r:?}");
        }
    }
}
