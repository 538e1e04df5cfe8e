//! The FUSE-over-io_uring transport of a mount: one queue per CPU, each served by a thread
//! pinned to that CPU, translating decoded requests to and from the [`Session`].
//!
//! Why: over `/dev/fuse` a small request costs two cross-CPU wake-ups, which bound a 4 KiB
//! read at about 70k per second on this kind of machine, whatever the daemon does. The
//! kernel's FUSE-over-io_uring queues a request on the CPU that made it, so the reply is
//! computed on that CPU. The queues, the kernel ABI and the request decoder are the
//! `pfnfs_fuse_ring` crate; this module only starts the queues, hands each decoded request
//! to the session and encodes its typed answer with the ABI structs. Everything else
//! (FUSE_INIT, FORGET, INTERRUPT, and every request until each queue has registered) still
//! goes through fuser ([`super::dev_fuse`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use pfnfs_fuse_ring::abi;
use pfnfs_fuse_ring::{FuseQueue, Request, RingReply, RingRequest};

use crate::inode::Time;
use crate::session::{
    Answer, AttrReply, Attributes, EntryReply, Errno, Operation, Session, XattrReply,
};
use crate::volume::{Caller, SetAttr};

/// Slots per queue: requests one CPU can have in flight before the kernel queues them.
const QUEUE_DEPTH: usize = 8;
/// Payload bytes per slot: the largest request (max_write and max_pages at 1 MiB) plus
/// headroom for the names and arguments around it.
const PAYLOAD_BYTES: usize = (1 << 20) + 4096;

/// The FUSE-over-io_uring queues of one mount.
///
/// Ownership: created before the mount and shared (`Arc`) by the mounting thread and the
/// `/dev/fuse` filesystem; `start` (from FUSE_INIT, on a fuser thread) moves one
/// [`FuseQueue`] into each queue thread and keeps the threads' handles under `threads`,
/// which `join` takes once the connection has ended. The device descriptor is set once,
/// before INIT.
#[derive(Debug, Default)]
pub struct Rings {
    dev: OnceLock<OwnedFd>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Rings {
    /// Queues not yet started.
    pub(crate) fn new() -> Rings {
        Rings::default()
    }

    /// The connection's `/dev/fuse` descriptor (a duplicate of the session's).
    pub(crate) fn set_device(&self, dev: OwnedFd) {
        let _ = self.dev.set(dev);
    }

    /// Sets up one queue per possible CPU (the kernel's queue count) and starts its
    /// thread. Called from FUSE_INIT before FUSE_OVER_IO_URING is accepted: once it is,
    /// the kernel holds every request until each queue has registered, so nothing that
    /// can fail may come after. The threads register only when all of them are running;
    /// on an error none does and the mount stays on /dev/fuse.
    pub(crate) fn start(self: &Arc<Self>, session: &Arc<Session>) -> std::io::Result<()> {
        let dev = self
            .dev
            .get()
            .ok_or_else(|| std::io::Error::other("no /dev/fuse descriptor to register on"))?
            .as_raw_fd();
        let queues = (0..possible_cpus())
            .map(|cpu| FuseQueue::new(dev, cpu as u16, QUEUE_DEPTH, PAYLOAD_BYTES))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut gates = Vec::with_capacity(queues.len());
        let mut started = Vec::with_capacity(queues.len());
        for (cpu, queue) in queues.into_iter().enumerate() {
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let session = session.clone();
            let t = std::thread::Builder::new()
                .name(format!("pfnfs-ring-{cpu}"))
                .spawn(move || {
                    if wait.recv().is_ok() {
                        serve(cpu, queue, &session);
                    }
                })?;
            gates.push(go);
            started.push(t);
        }
        for go in gates {
            let _ = go.send(());
        }
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(started);
        Ok(())
    }

    /// Waits for the queue threads, which end when the kernel ends the connection.
    pub(crate) fn join(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Serves one queue on its pinned thread until the connection ends.
fn serve(cpu: usize, queue: FuseQueue, session: &Session) {
    super::placement::become_worker(Some(cpu));
    let r = queue.serve(|req, buf| {
        session.count_ring_request();
        answer(session, req, buf)
    });
    match r {
        Ok(end) if end.disconnected => {
            tracing::debug!(cpu, requests = end.requests, "io_uring queue ended")
        }
        Ok(end) => tracing::warn!(cpu, requests = end.requests, "io_uring queue ended early"),
        Err(e) => tracing::warn!("FUSE over io_uring queue {cpu}: {e}"),
    }
}

/// The kernel's queue count: one per possible CPU (`/sys/devices/system/cpu/possible`).
fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| cpu_list_len(&s))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The number of CPUs up to the highest one a kernel CPU list names ("0-1", "0,2-3": the
/// queues are indexed by CPU number); None if it does not parse.
fn cpu_list_len(s: &str) -> Option<usize> {
    let mut last = None;
    for part in s.trim().split(',') {
        let hi = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (lo.parse::<usize>().ok()?, hi.parse::<usize>().ok()?);
                (lo <= hi).then_some(hi)?
            }
            None => part.parse::<usize>().ok()?,
        };
        last = Some(last.map_or(hi, |l: usize| l.max(hi)));
    }
    last.map(|l| l + 1)
}

fn attr(a: &Attributes) -> abi::Attr {
    abi::Attr {
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.secs as u64,
        mtime: a.mtime.secs as u64,
        ctime: a.ctime.secs as u64,
        atimensec: a.atime.nsecs,
        mtimensec: a.mtime.nsecs,
        ctimensec: a.ctime.nsecs,
        mode: a.mode(),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn entry_out(e: &EntryReply) -> abi::EntryOut {
    abi::EntryOut {
        nodeid: e.attr.ino,
        generation: e.generation,
        entry_valid: e.ttl.as_secs(),
        attr_valid: e.ttl.as_secs(),
        entry_valid_nsec: e.ttl.subsec_nanos(),
        attr_valid_nsec: e.ttl.subsec_nanos(),
        attr: attr(&e.attr),
    }
}

fn attr_out(r: &AttrReply) -> abi::AttrOut {
    abi::AttrOut {
        attr_valid: r.ttl.as_secs(),
        attr_valid_nsec: r.ttl.subsec_nanos(),
        dummy: 0,
        attr: attr(&r.attr),
    }
}

fn time(t: pfnfs_fuse_ring::TimeArg) -> Time {
    match t {
        pfnfs_fuse_ring::TimeArg::Now => Time::now(),
        pfnfs_fuse_ring::TimeArg::At { secs, nsecs } => Time { secs, nsecs },
    }
}

fn err(e: Errno) -> RingReply {
    RingReply::err(e.0)
}

/// Writes `v` as the reply, or the error.
fn put<T, W: zerocopy::IntoBytes + zerocopy::Immutable>(
    buf: &mut [u8],
    a: Answer<T>,
    wire: impl FnOnce(T) -> W,
) -> RingReply {
    match a {
        Ok(v) => RingReply::ok(abi::write(buf, &wire(v))),
        Err(e) => err(e),
    }
}

fn done(a: Answer<()>) -> RingReply {
    a.map_or_else(err, |()| RingReply::ok(0))
}

/// Copies `bytes` into the reply (ERANGE when the reply buffer is too small).
fn bytes(buf: &mut [u8], a: Answer<Vec<u8>>) -> RingReply {
    match a {
        Ok(v) if v.len() <= buf.len() => {
            buf[..v.len()].copy_from_slice(&v);
            RingReply::ok(v.len())
        }
        Ok(_) => RingReply::err(libc::ERANGE),
        Err(e) => err(e),
    }
}

fn xattr(buf: &mut [u8], a: Answer<XattrReply>) -> RingReply {
    match a {
        Ok(XattrReply::Size(size)) => put(buf, Ok(()), |()| abi::GetxattrOut { size, padding: 0 }),
        Ok(XattrReply::Data(v)) => bytes(buf, Ok(v)),
        Err(e) => err(e),
    }
}

/// The operation a decoded request is (None for requests that never come over a ring).
fn operation(r: &Request<'_>) -> Option<Operation> {
    Some(match r {
        Request::Lookup { .. } => Operation::Lookup,
        Request::Getattr => Operation::Getattr,
        Request::Setattr(_) => Operation::Setattr,
        Request::Readlink => Operation::Readlink,
        Request::Symlink { .. } => Operation::Symlink,
        Request::Mknod { .. } => Operation::Mknod,
        Request::Mkdir { .. } => Operation::Mkdir,
        Request::Unlink { .. } => Operation::Unlink,
        Request::Rmdir { .. } => Operation::Rmdir,
        Request::Rename { .. } => Operation::Rename,
        Request::Link { .. } => Operation::Link,
        Request::Open { .. } => Operation::Open,
        Request::Read { .. } => Operation::Read,
        Request::Write { .. } => Operation::Write,
        Request::Statfs => Operation::Statfs,
        Request::Release => Operation::Release,
        Request::Flush => Operation::Flush,
        Request::Fsync => Operation::Fsync,
        Request::Opendir => Operation::Opendir,
        Request::Readdir { .. } => Operation::Readdir,
        Request::Readdirplus { .. } => Operation::Readdirplus,
        Request::Releasedir => Operation::Releasedir,
        Request::Fsyncdir => Operation::Fsyncdir,
        Request::Setxattr { .. } => Operation::Setxattr,
        Request::Getxattr { .. } => Operation::Getxattr,
        Request::Listxattr { .. } => Operation::Listxattr,
        Request::Removexattr { .. } => Operation::Removexattr,
        Request::Access { .. } => Operation::Access,
        Request::Create { .. } => Operation::Create,
        Request::Fallocate { .. } => Operation::Fallocate,
        Request::Lseek { .. } => Operation::Lseek,
        Request::CopyFileRange { .. } => Operation::CopyFileRange,
        Request::Destroy => Operation::Destroy,
        Request::DeviceOnly | Request::Unsupported => return None,
    })
}

/// Answers one request from a ring slot; `buf` holds the request's payload and receives
/// the reply.
fn answer(s: &Session, req: &RingRequest<'_>, buf: &mut [u8]) -> RingReply {
    let h = pfnfs_fuse_ring::header(req.in_header);
    let len = req.payload_len.min(buf.len());
    let request = match pfnfs_fuse_ring::decode(h.opcode, req.op_in, &buf[..len]) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("{e}");
            return RingReply::err(libc::EINVAL);
        }
    };
    if let Some(op) = operation(&request)
        && !s.admits(h.uid, op)
    {
        return err(s.refused());
    }
    let c = Caller {
        uid: h.uid,
        gid: h.gid,
    };
    let ino = h.nodeid;
    match request {
        Request::Lookup { name } => {
            let a = s.lookup(ino, name);
            put(buf, a, |e| entry_out(&e))
        }
        Request::Getattr => put(buf, s.getattr(ino), |r| attr_out(&r)),
        Request::Setattr(a) => {
            let args = SetAttr {
                mode: a.mode,
                uid: a.uid,
                gid: a.gid,
                size: a.size,
                atime: a.atime.map(time),
                mtime: a.mtime.map(time),
                ctime: a.ctime.map(time),
            };
            put(buf, s.setattr(c, ino, args), |r| attr_out(&r))
        }
        Request::Readlink => bytes(buf, s.readlink(ino)),
        Request::Symlink { name, target } => {
            let a = s.symlink(c, ino, name, target);
            put(buf, a, |e| entry_out(&e))
        }
        Request::Mknod {
            name,
            mode,
            umask,
            rdev,
        } => {
            let a = s.mknod(c, ino, name, mode, umask, rdev);
            put(buf, a, |e| entry_out(&e))
        }
        Request::Mkdir { name, mode, umask } => {
            let a = s.mkdir(c, ino, name, mode, umask);
            put(buf, a, |e| entry_out(&e))
        }
        Request::Unlink { name } => done(s.unlink(ino, name)),
        Request::Rmdir { name } => done(s.rmdir(ino, name)),
        Request::Rename {
            name,
            new_parent,
            new_name,
            flags,
        } => done(s.rename(ino, name, new_parent, new_name, flags)),
        Request::Link { ino: target, name } => {
            let a = s.link(target, ino, name);
            put(buf, a, |e| entry_out(&e))
        }
        Request::Open { flags } => put(buf, s.open(c, ino, flags), |o| abi::OpenOut {
            fh: o.fh,
            open_flags: o.flags,
            backing_id: 0,
        }),
        Request::Read { offset, size } => {
            let size = (size as usize).min(buf.len()) as u32;
            // The bytes may be pool memory borrowed in place: copied with the guarded copy,
            // so a page lost under the pool is EIO for this read, not a SIGBUS.
            let r = s.read(ino, offset, size, |bytes| {
                let n = bytes.len().min(buf.len());
                pfnfs_alloc::guarded::copy(&mut buf[..n], &bytes[..n])
                    .map(|()| n)
                    .map_err(|_| Errno(libc::EIO))
            });
            r.and_then(|copied| copied).map_or_else(err, RingReply::ok)
        }
        Request::Write {
            offset,
            data,
            write_flags,
        } => {
            let a = s.write(c, ino, offset, data, write_flags);
            put(buf, a, |size| abi::WriteOut { size, padding: 0 })
        }
        Request::Statfs => {
            let st = s.statfs();
            put(buf, Ok(()), |()| abi::StatfsOut {
                blocks: st.blocks,
                bfree: st.bfree,
                bavail: st.bavail,
                files: st.files,
                ffree: st.ffree,
                bsize: st.bsize,
                namelen: st.namelen,
                frsize: st.frsize,
                ..Default::default()
            })
        }
        Request::Release => done(s.release(ino)),
        Request::Flush => done(s.flush()),
        Request::Fsync | Request::Fsyncdir => done(s.fsync(ino)),
        Request::Opendir => put(buf, s.opendir(ino), |o| abi::OpenOut {
            fh: o.fh,
            open_flags: o.flags,
            backing_id: 0,
        }),
        Request::Releasedir => done(s.releasedir(ino)),
        Request::Destroy => RingReply::ok(0),
        Request::Setxattr { name, value, flags } => done(s.setxattr(c, ino, name, value, flags)),
        Request::Getxattr { name, size } => {
            let a = s.getxattr(ino, name, size);
            xattr(buf, a)
        }
        Request::Listxattr { size } => xattr(buf, s.listxattr(c, ino, size)),
        Request::Removexattr { name } => done(s.removexattr(ino, name)),
        Request::Readdir { offset, size } => {
            let size = (size as usize).min(buf.len());
            let mut out = abi::DirBuf::new(&mut buf[..size]);
            let r = s.readdir(ino, offset, |child, next, kind, name| {
                !out.add(None, child, next, kind.mode_bits() >> 12, name)
            });
            r.map_or_else(err, |()| RingReply::ok(out.len()))
        }
        Request::Readdirplus { offset, size } => {
            let size = (size as usize).min(buf.len());
            let mut out = abi::DirBuf::new(&mut buf[..size]);
            let r = s.readdirplus(ino, offset, |next, name, e| {
                !out.add(
                    Some(&entry_out(e)),
                    e.attr.ino,
                    next,
                    e.attr.kind.mode_bits() >> 12,
                    name,
                )
            });
            r.map_or_else(err, |()| RingReply::ok(out.len()))
        }
        Request::Access { mask } => done(s.access(c, ino, mask)),
        Request::Create {
            name,
            mode,
            umask,
            flags,
        } => match s.create(c, ino, name, mode, umask, flags) {
            Ok((e, o)) => {
                let n = abi::write(buf, &entry_out(&e));
                let open = abi::OpenOut {
                    fh: o.fh,
                    open_flags: o.flags,
                    backing_id: 0,
                };
                RingReply::ok(n + abi::write(&mut buf[n..], &open))
            }
            Err(e) => err(e),
        },
        Request::Fallocate {
            offset,
            length,
            mode,
        } => done(s.fallocate(c, ino, offset, length, mode)),
        Request::Lseek { offset, whence } => put(buf, s.lseek(ino, offset, whence), |o| {
            abi::LseekOut { offset: o as u64 }
        }),
        Request::CopyFileRange {
            offset_in,
            ino_out,
            offset_out,
            len,
        } => {
            let a = s.copy_file_range(c, ino, offset_in, ino_out, offset_out, len);
            put(buf, a, |size| abi::WriteOut { size, padding: 0 })
        }
        Request::DeviceOnly => {
            // The kernel sends these over /dev/fuse only.
            tracing::warn!(opcode = h.opcode, "unexpected request on an io_uring queue");
            RingReply::err(libc::EINVAL)
        }
        Request::Unsupported => RingReply::err(libc::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count_up_to_the_highest_cpu() {
        assert_eq!(cpu_list_len("0\n"), Some(1));
        assert_eq!(cpu_list_len("0-1\n"), Some(2));
        assert_eq!(cpu_list_len("0,2-3"), Some(4));
        assert_eq!(cpu_list_len("0-3,8"), Some(9));
        assert_eq!(cpu_list_len(""), None);
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len("x"), None);
    }
}
