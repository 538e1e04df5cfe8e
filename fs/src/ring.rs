//! FUSE over io_uring for a mount: one queue per CPU, each served by a thread pinned to
//! that CPU, answering with the same operations as fuser's dispatch ([`PfnFuse`]).
//!
//! Why: over `/dev/fuse` a small request costs two cross-CPU wake-ups, which bound a 4 KiB
//! read at about 70k per second on this kind of machine, whatever the daemon does. The
//! kernel's FUSE-over-io_uring queues a request on the CPU that made it, so the reply is
//! computed on that CPU (`pfnfs_extent::fuse_ring` has the mechanism). fuser 0.18 has no
//! io_uring transport and keeps its request parser private, so requests arriving on the
//! rings are decoded here ([`crate::wire`]); everything else (FUSE_INIT, FORGET, INTERRUPT,
//! and every request until each queue has registered) still goes through fuser.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use pfnfs_extent::fuse_ring::{FuseQueue, RingReply, RingRequest};

use crate::error::FsError;
use crate::fuse::{PfnFuse, log_error, ttl};
use crate::inode::Time;
use crate::volume::{Caller, Entry, SetAttr};
use crate::wire::{self, fattr, op};

/// Slots per queue: requests one CPU can have in flight before the kernel queues them.
const QUEUE_DEPTH: usize = 8;
/// Payload bytes per slot: the largest request (max_write and max_pages at 1 MiB) plus
/// headroom for the names and arguments around it.
const PAYLOAD_BYTES: usize = (1 << 20) + 4096;

/// The FUSE-over-io_uring queues of one mount.
#[derive(Debug, Default)]
pub struct Rings {
    dev: OnceLock<OwnedFd>,
    /// With `SessionACL::Owner` (no allow_other), the one user whose requests are served.
    owner_only: Option<u32>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    requests: AtomicU64,
}

impl Rings {
    /// Queues that will serve only `owner` (None: everyone, as with allow_other).
    pub(crate) fn new(owner_only: Option<u32>) -> Rings {
        Rings {
            owner_only,
            ..Default::default()
        }
    }

    /// The connection's `/dev/fuse` descriptor (a duplicate of the session's).
    pub(crate) fn set_device(&self, dev: OwnedFd) {
        let _ = self.dev.set(dev);
    }

    /// Requests answered over the rings so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sets up one queue per possible CPU (the kernel's queue count) and starts its
    /// thread. Called from FUSE_INIT before FUSE_OVER_IO_URING is accepted: once it is,
    /// the kernel holds every request until each queue has registered, so nothing that
    /// can fail may come after. The threads register only when all of them are running;
    /// on an error none does and the mount stays on /dev/fuse.
    pub(crate) fn start(self: &Arc<Self>, fs: &PfnFuse) -> std::io::Result<()> {
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
            let rings = self.clone();
            let fs = fs.clone();
            let t = std::thread::Builder::new()
                .name(format!("pfnfs-ring-{cpu}"))
                .spawn(move || {
                    if wait.recv().is_ok() {
                        rings.serve(cpu, queue, fs);
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

    fn serve(&self, cpu: usize, queue: FuseQueue, fs: PfnFuse) {
        crate::placement::become_worker(Some(cpu));
        let r = queue.serve(|req, buf| {
            self.requests.fetch_add(1, Ordering::Relaxed);
            answer(&fs, self.owner_only, req, buf)
        });
        match r {
            Ok(end) => tracing::debug!(cpu, requests = end.requests, "io_uring queue ended"),
            Err(e) => tracing::warn!("FUSE over io_uring queue {cpu}: {e}"),
        }
    }

    /// Waits for the queue threads, which end when the kernel ends the connection.
    pub(crate) fn join(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The kernel's queue count: one per possible CPU (`/sys/devices/system/cpu/possible`,
/// e.g. "0-1" or "0,2-3").
fn possible_cpus() -> usize {
    let parse = |s: &str| -> Option<usize> {
        let mut last = None;
        for part in s.trim().split(',') {
            let hi = match part.split_once('-') {
                Some((_, hi)) => hi.parse::<usize>().ok()?,
                None => part.parse::<usize>().ok()?,
            };
            last = Some(last.map_or(hi, |l: usize| l.max(hi)));
        }
        last.map(|l| l + 1)
    };
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse(&s))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn time(secs: u64, nsecs: u32) -> Time {
    Time {
        secs: secs as i64,
        nsecs: nsecs.min(999_999_999),
    }
}

fn attr(e: &Entry) -> wire::Attr {
    let a = &e.attr;
    wire::Attr {
        ino: e.ino,
        size: a.size,
        blocks: e.blocks,
        atime: a.atime.secs as u64,
        mtime: a.mtime.secs as u64,
        ctime: a.ctime.secs as u64,
        atimensec: a.atime.nsecs,
        mtimensec: a.mtime.nsecs,
        ctimensec: a.ctime.nsecs,
        mode: a.kind().mode_bits() | (a.mode & 0o7777),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn entry_out(e: &Entry) -> wire::EntryOut {
    let t = ttl(e);
    wire::EntryOut {
        nodeid: e.ino,
        generation: e.attr.generation,
        entry_valid: t.as_secs(),
        attr_valid: t.as_secs(),
        entry_valid_nsec: t.subsec_nanos(),
        attr_valid_nsec: t.subsec_nanos(),
        attr: attr(e),
    }
}

fn attr_out(e: &Entry) -> wire::AttrOut {
    let t = ttl(e);
    wire::AttrOut {
        attr_valid: t.as_secs(),
        attr_valid_nsec: t.subsec_nanos(),
        dummy: 0,
        attr: attr(e),
    }
}

fn fail(e: FsError) -> RingReply {
    RingReply::err(log_error(e))
}

fn einval() -> RingReply {
    RingReply::err(libc::EINVAL)
}

fn done(r: Result<(), FsError>) -> RingReply {
    r.map_or_else(fail, |()| RingReply::ok(0))
}

fn put<T: zerocopy::IntoBytes + zerocopy::Immutable>(buf: &mut [u8], v: &T) -> RingReply {
    RingReply::ok(wire::write(buf, v))
}

fn reply_entry(buf: &mut [u8], r: Result<Entry, FsError>) -> RingReply {
    match r {
        Ok(e) => put(buf, &entry_out(&e)),
        Err(e) => fail(e),
    }
}

/// An xattr value or list: its size when the caller asked with size 0, ERANGE when it
/// does not fit, else the bytes.
fn reply_xattr(buf: &mut [u8], r: Result<Vec<u8>, FsError>, size: u32) -> RingReply {
    match r {
        Ok(v) if size == 0 => put(
            buf,
            &wire::GetxattrOut {
                size: v.len() as u32,
                padding: 0,
            },
        ),
        Ok(v) if v.len() > size as usize || v.len() > buf.len() => RingReply::err(libc::ERANGE),
        Ok(v) => {
            buf[..v.len()].copy_from_slice(&v);
            RingReply::ok(v.len())
        }
        Err(e) => fail(e),
    }
}

/// Operations the kernel may send for any user even without allow_other (fuser's list).
fn allowed_for_anyone(opcode: u32) -> bool {
    matches!(
        opcode,
        op::DESTROY
            | op::READ
            | op::READDIR
            | op::READDIRPLUS
            | op::WRITE
            | op::FSYNC
            | op::FSYNCDIR
            | op::RELEASE
            | op::RELEASEDIR
            | op::FORGET
            | op::BATCH_FORGET
    )
}

/// Answers one request from a ring slot; `buf` holds the request's payload and receives
/// the reply.
fn answer(
    fs: &PfnFuse,
    owner_only: Option<u32>,
    req: &RingRequest<'_>,
    buf: &mut [u8],
) -> RingReply {
    let h: wire::InHeader = wire::read(req.in_header);
    if let Some(owner) = owner_only
        && h.uid != owner
        && !allowed_for_anyone(h.opcode)
    {
        return RingReply::err(libc::EACCES);
    }
    let c = Caller {
        uid: h.uid,
        gid: h.gid,
    };
    let ino = h.nodeid;
    let vol = fs.vol();
    let oi = req.op_in;
    let len = req.payload_len.min(buf.len());
    match h.opcode {
        op::LOOKUP => {
            let Some((name, _)) = wire::name(&buf[..len]) else {
                return einval();
            };
            let r = vol.lookup(ino, name);
            reply_entry(buf, r)
        }
        op::GETATTR => match vol.stat(ino) {
            Ok(e) => put(buf, &attr_out(&e)),
            Err(e) => fail(e),
        },
        op::SETATTR => {
            let a: wire::SetattrIn = wire::read(oi);
            let v = a.valid;
            let when = |set: u32, now: u32, secs: u64, nsecs: u32| {
                if v & now != 0 {
                    Some(Time::now())
                } else if v & set != 0 {
                    Some(time(secs, nsecs))
                } else {
                    None
                }
            };
            let r = SetAttr {
                mode: (v & fattr::MODE != 0).then_some(a.mode),
                uid: (v & fattr::UID != 0).then_some(a.uid),
                gid: (v & fattr::GID != 0).then_some(a.gid),
                size: (v & fattr::SIZE != 0).then_some(a.size),
                atime: when(fattr::ATIME, fattr::ATIME_NOW, a.atime, a.atimensec),
                mtime: when(fattr::MTIME, fattr::MTIME_NOW, a.mtime, a.mtimensec),
                ctime: (v & fattr::CTIME != 0).then(|| time(a.ctime, a.ctimensec)),
            };
            match vol.setattr(c, ino, r) {
                Ok(e) => put(buf, &attr_out(&e)),
                Err(e) => fail(e),
            }
        }
        op::READLINK => match vol.readlink(ino) {
            Ok(t) if t.len() <= buf.len() => {
                buf[..t.len()].copy_from_slice(&t);
                RingReply::ok(t.len())
            }
            Ok(_) => RingReply::err(libc::ENAMETOOLONG),
            Err(e) => fail(e),
        },
        op::SYMLINK => {
            let Some((name, rest)) = wire::name(&buf[..len]) else {
                return einval();
            };
            let Some((target, _)) = wire::name(rest) else {
                return einval();
            };
            let r = vol.symlink(c, ino, name, target);
            reply_entry(buf, r)
        }
        op::MKNOD => {
            let a: wire::MknodIn = wire::read(oi);
            let Some((name, _)) = wire::name(&buf[..len]) else {
                return einval();
            };
            let r = vol.mknod_with_umask(c, ino, name, a.mode, a.umask, a.rdev);
            reply_entry(buf, r)
        }
        op::MKDIR => {
            let a: wire::MkdirIn = wire::read(oi);
            let Some((name, _)) = wire::name(&buf[..len]) else {
                return einval();
            };
            let r = vol.mkdir_with_umask(c, ino, name, a.mode, a.umask);
            reply_entry(buf, r)
        }
        op::UNLINK | op::RMDIR => {
            let Some((name, _)) = wire::name(&buf[..len]) else {
                return einval();
            };
            done(vol.remove(ino, name, h.opcode == op::RMDIR))
        }
        op::RENAME | op::RENAME2 => {
            let (newdir, flags) = if h.opcode == op::RENAME {
                (wire::read::<wire::RenameIn>(oi).newdir, 0)
            } else {
                let a: wire::Rename2In = wire::read(oi);
                (a.newdir, a.flags)
            };
            let Some((old, rest)) = wire::name(&buf[..len]) else {
                return einval();
            };
            let Some((new, _)) = wire::name(rest) else {
                return einval();
            };
            done(vol.rename(ino, old, newdir, new, flags))
        }
        op::LINK => {
            let a: wire::LinkIn = wire::read(oi);
            let Some((name, _)) = wire::name(&buf[..len]) else {
                return einval();
            };
            let r = vol.link(a.oldnodeid, ino, name);
            reply_entry(buf, r)
        }
        op::OPEN => {
            let a: wire::OpenIn = wire::read(oi);
            match fs.open_file(c, ino, a.flags as i32) {
                Ok(()) => put(
                    buf,
                    &wire::OpenOut {
                        fh: 0,
                        open_flags: fs.open_flags().bits(),
                        backing_id: 0,
                    },
                ),
                Err(e) => fail(e),
            }
        }
        op::OPENDIR => match fs.open_dir(ino) {
            Ok(()) => put(buf, &wire::OpenOut::default()),
            Err(e) => fail(e),
        },
        op::READ => {
            let a: wire::ReadIn = wire::read(oi);
            let size = (a.size as usize).min(buf.len()) as u32;
            let r = vol.read(ino, a.offset, size, |bytes| {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                n
            });
            r.map_or_else(fail, RingReply::ok)
        }
        op::WRITE => {
            let a: wire::WriteIn = wire::read(oi);
            let n = (a.size as usize).min(len);
            match vol.write(fs.writer(c, a.write_flags), ino, a.offset, &buf[..n]) {
                Ok(written) => put(
                    buf,
                    &wire::WriteOut {
                        size: written,
                        padding: 0,
                    },
                ),
                Err(e) => fail(e),
            }
        }
        op::STATFS => {
            let s = vol.statfs();
            put(
                buf,
                &wire::StatfsOut {
                    blocks: s.total_frames,
                    bfree: s.free_frames,
                    bavail: s.free_frames,
                    files: s.inodes + s.free_inodes,
                    ffree: s.free_inodes,
                    bsize: 4096,
                    namelen: crate::volume::NAME_MAX as u32,
                    frsize: 4096,
                    ..Default::default()
                },
            )
        }
        op::RELEASE => {
            vol.release(ino);
            RingReply::ok(0)
        }
        op::FLUSH | op::RELEASEDIR | op::DESTROY => RingReply::ok(0),
        op::FSYNC | op::FSYNCDIR => done(vol.fsync(ino)),
        op::SETXATTR => {
            let a: wire::SetxattrIn = wire::read(oi);
            let Some((name, rest)) = wire::name(&buf[..len]) else {
                return einval();
            };
            let Some(value) = rest.get(..a.size as usize) else {
                return einval();
            };
            done(vol.setxattr_as(c, ino, name, value, a.flags as i32))
        }
        op::GETXATTR => {
            let a: wire::GetxattrIn = wire::read(oi);
            let Some((name, _)) = wire::name(&buf[..len]) else {
                return einval();
            };
            let r = fs.get_xattr(ino, name);
            reply_xattr(buf, r, a.size)
        }
        op::LISTXATTR => {
            let a: wire::GetxattrIn = wire::read(oi);
            reply_xattr(buf, vol.listxattr_as(c, ino), a.size)
        }
        op::REMOVEXATTR => {
            let Some((name, _)) = wire::name(&buf[..len]) else {
                return einval();
            };
            done(vol.removexattr(ino, name))
        }
        op::READDIR => {
            let a: wire::ReadIn = wire::read(oi);
            let size = (a.size as usize).min(buf.len());
            let mut out = wire::DirBuf::new(&mut buf[..size]);
            let r = vol.readdir(ino, a.offset, |child, next, kind, name| {
                !out.add(None, child, next, kind.mode_bits() >> 12, name)
            });
            r.map_or_else(fail, |()| RingReply::ok(out.len()))
        }
        op::READDIRPLUS => {
            let a: wire::ReadIn = wire::read(oi);
            let size = (a.size as usize).min(buf.len());
            let mut out = wire::DirBuf::new(&mut buf[..size]);
            let r = fs.readdir_plus(ino, a.offset, |child, next, name, e| {
                !out.add(
                    Some(&entry_out(e)),
                    child,
                    next,
                    e.attr.kind().mode_bits() >> 12,
                    name,
                )
            });
            r.map_or_else(fail, |()| RingReply::ok(out.len()))
        }
        op::ACCESS => {
            let a: wire::AccessIn = wire::read(oi);
            done(fs.check_access(c, ino, a.mask as i32))
        }
        op::CREATE => {
            let a: wire::CreateIn = wire::read(oi);
            let Some((name, _)) = wire::name(&buf[..len]) else {
                return einval();
            };
            match fs.create_file(c, ino, name, a.mode, a.umask, a.flags as i32) {
                Ok(e) => {
                    let n = wire::write(buf, &entry_out(&e));
                    let open = wire::OpenOut {
                        fh: 0,
                        open_flags: fs.open_flags().bits(),
                        backing_id: 0,
                    };
                    RingReply::ok(n + wire::write(&mut buf[n..], &open))
                }
                Err(e) => fail(e),
            }
        }
        op::FALLOCATE => {
            let a: wire::FallocateIn = wire::read(oi);
            done(vol.fallocate_as(c, ino, a.offset, a.length, a.mode as i32))
        }
        op::LSEEK => {
            let a: wire::LseekIn = wire::read(oi);
            match fs.seek(ino, a.offset as i64, a.whence as i32) {
                Ok(o) => put(buf, &wire::LseekOut { offset: o }),
                Err(e) => fail(e),
            }
        }
        op::COPY_FILE_RANGE => {
            let a: wire::CopyFileRangeIn = wire::read(oi);
            match fs.copy_range(c, ino, a.off_in, a.nodeid_out, a.off_out, a.len) {
                Ok(n) => put(
                    buf,
                    &wire::WriteOut {
                        size: n,
                        padding: 0,
                    },
                ),
                Err(e) => fail(e),
            }
        }
        op::FORGET | op::BATCH_FORGET | op::INTERRUPT | op::INIT => {
            // The kernel sends these over /dev/fuse only.
            tracing::warn!(opcode = h.opcode, "unexpected request on an io_uring queue");
            RingReply::err(libc::EINVAL)
        }
        _ => RingReply::err(libc::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuser_and_the_rings_let_the_same_operations_through_for_other_users() {
        for opcode in [op::READ, op::WRITE, op::RELEASE, op::FSYNC, op::READDIRPLUS] {
            assert!(allowed_for_anyone(opcode));
        }
        for opcode in [op::LOOKUP, op::OPEN, op::CREATE, op::SETATTR, op::GETXATTR] {
            assert!(!allowed_for_anyone(opcode));
        }
    }

    #[test]
    fn possible_cpus_is_at_least_one() {
        assert!(possible_cpus() >= 1);
    }
}
