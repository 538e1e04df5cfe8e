//! Format 1 pools, built here because this pfnfs no longer writes format 1: the seeds of the
//! `upgrade` target (and, taken apart, of `checkpoint`, `free_set` and the format 1 half of
//! `log_record`). A pool is left as a format 1 mkfs, mounts and a crash would have left it:
//! both superblock slots in format 1 (`SuperblockV1`), a checkpoint at the start of the data
//! region (header frame, then the postcard `CheckpointImage` body), file data in its frames,
//! and format 1 log records (magic `PLOG`, no nonce) of the checkpoint's generation.
//!
//! The committed `seed-format1-*` files of `corpus/upgrade/` are real pools the format 1
//! pfnfs wrote; these built ones add a fallocated extent, a special file and a log holding
//! every kind of namespace record.

use std::sync::Arc;

use pfnfs_alloc::superblock::SuperblockV1;
use pfnfs_alloc::{
    CheckpointRefV1, ExtentAllocator, FRAME_SIZE, MemBackend, MetaRoot, Pfn, PfnRange, Pool,
    PoolBackend,
};
use pfnfs_extent::Extent;
use pfnfs_fs::inode::{Attr, DirEntry, FIRST_COOKIE, Kind, ROOT_INO, Time};
use pfnfs_fs::journal::{
    BodyImage, CheckpointHeader, CheckpointImage, DataTimes, InodeImage, NewBody, Op,
    RECORD_HEADER_BYTES, RECORD_MAGIC_V1,
};

use crate::{POOL_BYTES, pattern};

/// Log generation of the built pools' checkpoint and log.
pub const GENERATION: u64 = 3;

/// A built format 1 pool and its parts.
pub struct Format1 {
    /// The pool.
    pub mem: Arc<MemBackend>,
    /// The checkpoint's header frame (empty without a checkpoint).
    pub header: Vec<u8>,
    /// The checkpoint's body (postcard `CheckpointImage`; empty without a checkpoint).
    pub body: Vec<u8>,
    /// The free-set image in the body.
    pub free_set: Vec<u8>,
    /// The log region's records (empty without a log).
    pub log: Vec<u8>,
}

const T: Time = Time {
    secs: 1_700_000_000,
    nsecs: 123_456_789,
};

fn attr(mode: u32, nlink: u32, size: u64) -> Attr {
    Attr {
        mode,
        uid: 1000,
        gid: 1000,
        nlink,
        size,
        atime: T,
        mtime: T,
        ctime: T,
        crtime: T,
        rdev: 0,
        generation: 1,
    }
}

fn entry(name: &[u8], ino: u64, kind: Kind) -> DirEntry {
    DirEntry {
        name: name.to_vec(),
        ino,
        kind,
    }
}

/// The records of `ops` as a format 1 log from its start: magic `PLOG`, payload length,
/// generation, sequence number, CRC32C of header bytes 0..24 and the payload, a zero word.
pub fn encode_log(generation: u64, ops: &[Op]) -> Vec<u8> {
    let mut log = Vec::new();
    for (seq, op) in ops.iter().enumerate() {
        let payload = postcard::to_allocvec(op).expect("encode an op");
        let mut header = [0u8; RECORD_HEADER_BYTES as usize];
        header[0..4].copy_from_slice(&RECORD_MAGIC_V1.to_le_bytes());
        header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[8..16].copy_from_slice(&generation.to_le_bytes());
        header[16..24].copy_from_slice(&(seq as u64).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..24]), &payload);
        header[24..28].copy_from_slice(&crc.to_le_bytes());
        log.extend_from_slice(&header);
        log.extend_from_slice(&payload);
        log.resize(log.len().next_multiple_of(8), 0);
    }
    log
}

/// A format 1 pool: with `checkpoint`, one holding a root directory with a subdirectory, a
/// file with two names, an xattr, a written and a fallocated extent, a symlink and a FIFO;
/// without, a pool no mount has checkpointed yet. With `log`, records of the checkpoint's
/// generation follow (a crash before the next checkpoint): a created, written file with an
/// xattr and a second name, and with a checkpoint also a rename and an unlink.
pub fn build(checkpoint: bool, log: bool) -> Format1 {
    let mem = Arc::new(MemBackend::new(POOL_BYTES));
    let pool = Pool::format_backend("format1", Box::new(mem.clone())).expect("format");
    let sb = pool.superblock();
    let data = pool.data_region();
    drop(pool);
    let at = |frame: u64| Pfn(data.start.0 + frame);
    let range = |frame: u64, len: u64| PfnRange::new(at(frame), len).expect("range");
    let mut out = Format1 {
        mem: mem.clone(),
        header: Vec::new(),
        body: Vec::new(),
        free_set: Vec::new(),
        log: Vec::new(),
    };
    let generation = if checkpoint { GENERATION } else { 0 };
    let mut reference = CheckpointRefV1::default();
    if checkpoint {
        // Frames 0..4 the checkpoint, 4..7 the file (two written, one fallocated).
        let file = vec![
            Extent {
                file_frame: 0,
                pfns: range(4, 2),
                unwritten: false,
            },
            Extent {
                file_frame: 2,
                pfns: range(6, 1),
                unwritten: true,
            },
        ];
        mem.write(at(4).0 * FRAME_SIZE, &pattern(7, 2 * FRAME_SIZE as usize))
            .expect("RAM does not fault");
        let free = vec![PfnRange::from_bounds(at(7), data.end()).expect("rest")];
        let alloc = ExtentAllocator::from_free_extents(data, free).expect("free set");
        let dir = |mode_perm: u32, nlink: u32| attr(libc::S_IFDIR | mode_perm, nlink, 0);
        let image = CheckpointImage {
            next_ino: 6,
            inodes: vec![
                InodeImage {
                    ino: ROOT_INO,
                    attr: dir(0o755, 3),
                    xattrs: Vec::new(),
                    body: BodyImage::Dir {
                        parent: ROOT_INO,
                        next_cookie: FIRST_COOKIE + 4,
                        entries: vec![
                            (FIRST_COOKIE, entry(b"dir", 2, Kind::Dir)),
                            (FIRST_COOKIE + 1, entry(b"file", 3, Kind::File)),
                            (FIRST_COOKIE + 2, entry(b"sym", 4, Kind::Symlink)),
                            (FIRST_COOKIE + 3, entry(b"fifo", 5, Kind::Fifo)),
                        ],
                    },
                },
                InodeImage {
                    ino: 2,
                    attr: dir(0o700, 2),
                    xattrs: Vec::new(),
                    body: BodyImage::Dir {
                        parent: ROOT_INO,
                        next_cookie: FIRST_COOKIE + 1,
                        entries: vec![(FIRST_COOKIE, entry(b"hard", 3, Kind::File))],
                    },
                },
                InodeImage {
                    ino: 3,
                    attr: attr(libc::S_IFREG | 0o644, 2, 3 * FRAME_SIZE - 100),
                    xattrs: vec![(b"user.x".to_vec(), b"y".to_vec())],
                    body: BodyImage::File(file),
                },
                InodeImage {
                    ino: 4,
                    attr: attr(libc::S_IFLNK | 0o777, 1, 4),
                    xattrs: Vec::new(),
                    body: BodyImage::Symlink(b"file".to_vec()),
                },
                InodeImage {
                    ino: 5,
                    attr: attr(libc::S_IFIFO | 0o600, 1, 0),
                    xattrs: Vec::new(),
                    body: BodyImage::Special,
                },
            ],
            free_set: alloc.encode_free_set(),
        };
        let body = postcard::to_allocvec(&image).expect("encode the image");
        assert!(body.len() as u64 <= 3 * FRAME_SIZE, "checkpoint too large");
        let header = CheckpointHeader {
            generation,
            body_len: body.len() as u64,
            body_crc: crc32c::crc32c(&body),
            ranges: vec![range(0, 4)],
        };
        out.header = header.encode();
        mem.write(at(0).0 * FRAME_SIZE, &out.header)
            .expect("RAM does not fault");
        mem.write(at(1).0 * FRAME_SIZE, &body)
            .expect("RAM does not fault");
        reference = CheckpointRefV1 {
            head_pfn: at(0).0,
            len_bytes: header.body_len,
            crc: header.body_crc,
            log_generation: generation,
        };
        out.body = body;
        out.free_set = image.free_set;
    }
    if log {
        let file = libc::S_IFREG | 0o640;
        let mut ops = vec![
            Op::Create {
                parent: ROOT_INO,
                name: b"new".to_vec(),
                ino: 6,
                attr: attr(file, 1, 0),
                body: NewBody::File,
            },
            Op::Write {
                ino: 6,
                allocated: vec![Extent {
                    file_frame: 0,
                    pfns: range(7, 2),
                    unwritten: false,
                }],
                converted: Vec::new(),
                size: 5000,
                times: DataTimes { mtime: T, ctime: T },
                mode: file,
            },
            Op::SetXattr {
                ino: 6,
                name: b"user.z".to_vec(),
                value: b"1".to_vec(),
                time: T,
            },
            Op::Link {
                parent: ROOT_INO,
                name: b"new2".to_vec(),
                ino: 6,
                time: T,
            },
        ];
        if checkpoint {
            ops.extend([
                Op::Rename {
                    parent: ROOT_INO,
                    name: b"fifo".to_vec(),
                    new_parent: 2,
                    new_name: b"fifo2".to_vec(),
                    exchange: false,
                    time: T,
                },
                Op::Unlink {
                    parent: 2,
                    name: b"hard".to_vec(),
                    time: T,
                },
            ]);
        }
        mem.write(at(7).0 * FRAME_SIZE, &pattern(8, 5000))
            .expect("RAM does not fault");
        out.log = encode_log(generation, &ops);
        let pool = Pool::open_backend("format1", Box::new(mem.clone()), false).expect("open");
        let (log_at, _) = pool.log_region();
        mem.write(log_at, &out.log).expect("RAM does not fault");
    }
    // Slot B (seq 3) and slot A (seq 4, current) in format 1, naming the same checkpoint.
    for seq in [3, 4] {
        let v1 = SuperblockV1 {
            common: pfnfs_alloc::Superblock {
                version: 1,
                seq,
                meta: MetaRoot::EMPTY,
                ..sb.clone()
            },
            checkpoint: reference,
        };
        mem.write(v1.common.slot().offset(), &v1.encode())
            .expect("RAM does not fault");
    }
    out
}
