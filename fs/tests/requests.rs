//! Requests with nonsense arguments, straight at the `Volume` (what a buggy or hostile kernel
//! client could send through FUSE): offsets near `u64::MAX` and `i64::MAX`, lengths that
//! overflow, zero and huge sizes, unknown inode numbers, operations on the wrong kind of
//! inode, every fallocate mode combination. Each must give the errno Linux gives (or a short
//! answer where POSIX allows one), never panic, and leave the volume consistent (fsck clean,
//! free space unchanged by failed calls).

use pfnfs_fs::session::errno;
use std::path::Path;
use std::sync::Arc;

use pfnfs_alloc::{CreateOptions, OpenOptions, Pool};
use pfnfs_fs::error::FsResult;
use pfnfs_fs::inode::{ROOT_INO, Time};
use pfnfs_fs::volume::{Caller, MAX_FILE_BYTES, SeekWhence, SetAttr, Volume};

const ROOT: Caller = Caller { uid: 0, gid: 0 };
const USER: Caller = Caller {
    uid: 1000,
    gid: 1000,
};
/// Inode numbers nothing has: 0, far past the last, the top of the range.
const BAD_INOS: [u64; 4] = [0, 999_999, u64::MAX - 1, u64::MAX];

struct Fixture {
    _dir: tempfile::TempDir,
    vol: Volume,
    dir: u64,
    file: u64,
    link: u64,
    fifo: u64,
}

/// A 32 MiB volume with a directory, a 10,000-byte file, a symlink and a FIFO.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pool");
    Pool::create(&p, 32 << 20, &CreateOptions::default()).unwrap();
    let pool = Pool::open(&p, &OpenOptions::default()).unwrap();
    let vol = Volume::load(Arc::new(pool)).unwrap();
    let d = vol.mkdir(ROOT, ROOT_INO, b"dir", 0o755).unwrap().ino;
    let f = vol
        .create(ROOT, ROOT_INO, b"file", 0o644, true)
        .unwrap()
        .ino;
    vol.write(ROOT, f, 0, &[7u8; 10_000]).unwrap();
    let l = vol.symlink(ROOT, ROOT_INO, b"link", b"file").unwrap().ino;
    let q = vol
        .mknod(ROOT, ROOT_INO, b"fifo", libc::S_IFIFO | 0o644, 0)
        .unwrap()
        .ino;
    Fixture {
        _dir: dir,
        vol,
        dir: d,
        file: f,
        link: l,
        fifo: q,
    }
}

fn err<T: std::fmt::Debug>(r: FsResult<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => errno(&e),
    }
}

fn read(v: &Volume, ino: u64, off: u64, len: u32) -> FsResult<Vec<u8>> {
    v.read(ino, off, len, |b| b.to_vec())
}

fn truncate(v: &Volume, ino: u64, size: u64) -> FsResult<()> {
    let req = SetAttr {
        size: Some(size),
        ..Default::default()
    };
    v.setattr(ROOT, ino, req).map(drop)
}

/// Frames not held by files: free, or holding the current checkpoint (which moves).
fn unused_frames(v: &Volume) -> u64 {
    let ckpt: u64 = v.tree_frames().unwrap().iter().map(|r| r.len).sum();
    v.allocator().free_frames() + ckpt
}

/// fsck finds nothing.
fn fsck_clean(v: &Volume) {
    let report = pfnfs_fs::fsck::check_volume(v);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// fsck finds nothing, and the frames held by files are as before (failed calls must not
/// leak frames).
fn consistent(v: &Volume, unused: u64, what: &str) {
    let report = pfnfs_fs::fsck::check_volume(v);
    assert!(
        report.problems.is_empty(),
        "{what}: fsck: {:?}",
        report.problems
    );
    assert_eq!(unused_frames(v), unused, "{what}: frames leaked or lost");
}

#[test]
fn unknown_inodes() {
    let fx = fixture();
    let v = &fx.vol;
    let free = unused_frames(v);
    for ino in BAD_INOS {
        let e = libc::ENOENT;
        assert_eq!(err(v.getattr(ino), "getattr"), e);
        assert_eq!(err(v.stat(ino), "stat"), e);
        assert_eq!(err(v.lookup(ino, b"x"), "lookup"), e);
        assert_eq!(err(v.setattr(ROOT, ino, SetAttr::default()), "setattr"), e);
        assert_eq!(err(truncate(v, ino, 0), "truncate"), e);
        assert_eq!(err(v.readlink(ino), "readlink"), e);
        assert_eq!(err(v.create(ROOT, ino, b"n", 0o644, true), "create"), e);
        assert_eq!(err(v.mkdir(ROOT, ino, b"n", 0o755), "mkdir"), e);
        assert_eq!(err(v.symlink(ROOT, ino, b"n", b"t"), "symlink"), e);
        assert_eq!(err(v.mknod(ROOT, ino, b"n", libc::S_IFIFO, 0), "mknod"), e);
        assert_eq!(err(v.link(ino, ROOT_INO, b"n"), "link from"), e);
        assert_eq!(err(v.link(fx.file, ino, b"n"), "link into"), e);
        assert_eq!(err(v.remove(ino, b"file", false), "unlink"), e);
        assert_eq!(err(v.remove(ino, b"dir", true), "rmdir"), e);
        assert_eq!(err(v.rename(ino, b"file", ROOT_INO, b"n", 0), "rename"), e);
        assert_eq!(err(v.rename(ROOT_INO, b"file", ino, b"n", 0), "rename"), e);
        assert_eq!(err(v.readdir(ino, 0, |_, _, _, _| false), "readdir"), e);
        assert_eq!(err(v.readdir_batch(ino, 0, 10), "readdir_batch"), e);
        assert_eq!(err(v.open(ino, false), "open"), e);
        assert_eq!(err(v.open(ino, true), "open rw"), e);
        assert_eq!(err(read(v, ino, 0, 4096), "read"), e);
        assert_eq!(err(v.write(ROOT, ino, 0, b"x"), "write"), e);
        assert_eq!(err(v.fallocate(ino, 0, 4096, 0), "fallocate"), e);
        assert_eq!(err(v.seek(ino, 0, SeekWhence::Data), "seek"), e);
        assert_eq!(
            err(v.copy_range(ROOT, ino, 0, fx.file, 0, 10), "copy from"),
            e
        );
        assert_eq!(
            err(v.copy_range(ROOT, fx.file, 0, ino, 0, 10), "copy to"),
            e
        );
        assert_eq!(err(v.setxattr(ino, b"user.a", b"v", 0), "setxattr"), e);
        assert_eq!(err(v.getxattr(ino, b"user.a"), "getxattr"), e);
        assert_eq!(err(v.listxattr(ino), "listxattr"), e);
        assert_eq!(err(v.removexattr(ino, b"user.a"), "removexattr"), e);
        // No answer to give: these must simply not panic.
        v.forget(ino, 1);
        v.forget(ino, u64::MAX);
        v.release(ino);
        v.add_lookup(ino);
    }
    consistent(v, free, "unknown inodes");
}

#[test]
fn wrong_kinds() {
    let fx = fixture();
    let v = &fx.vol;
    let free = unused_frames(v);
    // A file or symlink as a directory.
    for ino in [fx.file, fx.link, fx.fifo] {
        assert_eq!(err(v.lookup(ino, b"x"), "lookup"), libc::ENOTDIR);
        assert_eq!(
            err(v.create(ROOT, ino, b"x", 0o644, true), "create"),
            libc::ENOTDIR
        );
        assert_eq!(err(v.mkdir(ROOT, ino, b"x", 0o755), "mkdir"), libc::ENOTDIR);
        assert_eq!(
            err(v.readdir(ino, 0, |_, _, _, _| false), "readdir"),
            libc::ENOTDIR
        );
        assert_eq!(
            err(v.rename(ROOT_INO, b"file", ino, b"x", 0), "rename into"),
            libc::ENOTDIR
        );
        assert_eq!(err(v.link(fx.file, ino, b"x"), "link into"), libc::ENOTDIR);
    }
    // A directory as a file.
    assert_eq!(err(read(v, fx.dir, 0, 10), "read dir"), libc::EISDIR);
    assert_eq!(err(truncate(v, fx.dir, 0), "truncate dir"), libc::EISDIR);
    assert_eq!(
        err(v.fallocate(fx.dir, 0, 4096, 0), "fallocate dir"),
        libc::EISDIR
    );
    assert_eq!(err(v.readlink(fx.dir), "readlink dir"), libc::EINVAL);
    assert_eq!(err(v.readlink(fx.file), "readlink file"), libc::EINVAL);
    assert_eq!(err(v.link(fx.dir, ROOT_INO, b"x"), "link dir"), libc::EPERM);
    // Writes and copies into a directory change nothing (write(2): EINVAL for an object
    // unsuitable for writing; copy_file_range(2): EISDIR).
    let before = v.getattr(fx.dir).unwrap();
    assert_eq!(
        err(v.write(ROOT, fx.dir, 0, b"x"), "write dir"),
        libc::EINVAL
    );
    let sparse = v
        .create(ROOT, ROOT_INO, b"sparse", 0o644, true)
        .unwrap()
        .ino;
    truncate(v, sparse, 1 << 20).unwrap();
    for src in [sparse, fx.file] {
        assert_eq!(
            err(v.copy_range(ROOT, src, 0, fx.dir, 0, 8192), "copy into dir"),
            libc::EISDIR
        );
    }
    assert_eq!(
        err(
            v.copy_range(ROOT, fx.dir, 0, fx.file, 0, 10),
            "copy from dir"
        ),
        libc::EISDIR
    );
    let after = v.getattr(fx.dir).unwrap();
    assert_eq!(after.size, before.size, "directory size changed");
    // Special files and symlinks hold no data.
    assert_eq!(
        err(v.fallocate(fx.fifo, 0, 4096, 0), "fallocate fifo"),
        libc::ENODEV
    );
    assert_eq!(
        err(truncate(v, fx.link, 0), "truncate symlink"),
        libc::EINVAL
    );
    assert_eq!(err(read(v, fx.fifo, 0, 10), "read fifo"), libc::EINVAL);
    assert_eq!(
        err(v.write(ROOT, fx.link, 0, b"x"), "write symlink"),
        libc::EINVAL
    );
    assert_eq!(
        err(v.seek(fx.dir, 0, SeekWhence::Data), "seek dir"),
        libc::EINVAL
    );
    assert_eq!(
        err(
            v.mknod(ROOT, ROOT_INO, b"bad", 0o170000 | 0o644, 0),
            "mknod"
        ),
        libc::EINVAL
    );
    // Truncating the sparse file back frees nothing it did not have.
    truncate(v, sparse, 0).unwrap();
    consistent(v, free, "wrong kinds");
}

#[test]
fn offsets_and_lengths_at_the_limits() {
    let fx = fixture();
    let v = &fx.vol;
    let f = fx.file;
    let free = unused_frames(v);
    let huge = [
        MAX_FILE_BYTES,
        MAX_FILE_BYTES + 1,
        1 << 63,
        u64::MAX - 1,
        u64::MAX,
    ];
    // Reads: at or past EOF an empty answer, whatever the offset or size.
    for off in [10_000, 10_001, 1 << 40, MAX_FILE_BYTES, u64::MAX] {
        for len in [0, 1, 4096, u32::MAX] {
            assert!(read(v, f, off, len).unwrap().is_empty(), "read {off}+{len}");
        }
    }
    assert!(read(v, f, 0, 0).unwrap().is_empty(), "read of 0 bytes");
    // A read of u32::MAX bytes is cut at EOF.
    assert_eq!(read(v, f, 9_000, u32::MAX).unwrap(), vec![7u8; 1000]);
    // Writes: empty writes do nothing anywhere; past the largest size EFBIG.
    for off in [0, 10_000, MAX_FILE_BYTES, u64::MAX] {
        assert_eq!(
            v.write(ROOT, f, off, b"").unwrap(),
            0,
            "empty write at {off}"
        );
    }
    for off in huge {
        assert_eq!(
            err(v.write(ROOT, f, off, b"x"), "write"),
            libc::EFBIG,
            "write at {off}"
        );
    }
    assert_eq!(
        err(v.write(ROOT, f, MAX_FILE_BYTES - 1, b"xy"), "write across"),
        libc::EFBIG
    );
    // Truncate past the largest size.
    for size in huge.iter().skip(1) {
        assert_eq!(
            err(truncate(v, f, *size), "truncate"),
            libc::EFBIG,
            "{size}"
        );
    }
    assert_eq!(v.getattr(f).unwrap().size, 10_000);
    // fallocate: zero length EINVAL, ranges past the largest size EFBIG, in every mode.
    for mode in [0, 1, 3, 0x10, 0x11] {
        assert_eq!(
            err(v.fallocate(f, 0, 0, mode), "fallocate len 0"),
            libc::EINVAL,
            "mode {mode:#x}"
        );
        for (off, len) in [
            (MAX_FILE_BYTES, 1),
            (0, MAX_FILE_BYTES + 1),
            (1, MAX_FILE_BYTES),
            (u64::MAX, 1),
            (1, u64::MAX),
            (u64::MAX, u64::MAX),
            (1 << 62, 1 << 62),
        ] {
            assert_eq!(
                err(v.fallocate(f, off, len, mode), "fallocate"),
                libc::EFBIG,
                "mode {mode:#x} at {off} len {len}"
            );
        }
    }
    // A reservation far larger than the pool: ENOSPC and nothing taken, size unchanged.
    for mode in [0, 1, 0x10, 0x11] {
        assert_eq!(
            err(v.fallocate(f, 0, 1 << 40, mode), "fallocate 1 TiB"),
            libc::ENOSPC,
            "mode {mode:#x}"
        );
        assert_eq!(
            err(
                v.fallocate(f, MAX_FILE_BYTES - (1 << 40), 1 << 40, mode),
                "at top"
            ),
            libc::ENOSPC,
            "mode {mode:#x}"
        );
    }
    assert_eq!(v.getattr(f).unwrap().size, 10_000);
    // Punching everything there could be is fine and quick.
    v.fallocate(f, 8192, MAX_FILE_BYTES - 8192, 0x03).unwrap();
    assert_eq!(read(v, f, 0, 20_000).unwrap(), {
        let mut d = vec![7u8; 8192];
        d.resize(10_000, 0);
        d
    });
    // SEEK_DATA / SEEK_HOLE past EOF: ENXIO.
    for off in [10_000, MAX_FILE_BYTES, u64::MAX] {
        for w in [SeekWhence::Data, SeekWhence::Hole] {
            assert_eq!(err(v.seek(f, off, w), "seek"), libc::ENXIO, "{off} {w:?}");
        }
    }
    // copy_file_range: from past EOF copies nothing; lengths are cut at the source's EOF;
    // destinations past the largest size EFBIG; overlapping ranges of one file EINVAL.
    let g = v.create(ROOT, ROOT_INO, b"g", 0o644, true).unwrap().ino;
    assert_eq!(v.copy_range(ROOT, f, u64::MAX, g, 0, 10).unwrap(), 0);
    assert_eq!(v.copy_range(ROOT, f, 0, g, 0, 0).unwrap(), 0);
    assert_eq!(v.copy_range(ROOT, f, 9_990, g, 0, u64::MAX).unwrap(), 10);
    for off_out in huge {
        assert_eq!(
            err(v.copy_range(ROOT, f, 0, g, off_out, 10), "copy"),
            libc::EFBIG,
            "to {off_out}"
        );
    }
    assert_eq!(
        err(v.copy_range(ROOT, f, 0, g, MAX_FILE_BYTES - 5, 10), "copy"),
        libc::EFBIG
    );
    assert_eq!(
        err(v.copy_range(ROOT, f, 0, f, 100, 1000), "overlap"),
        libc::EINVAL
    );
    assert_eq!(
        err(v.copy_range(ROOT, f, 100, f, 0, 1000), "overlap"),
        libc::EINVAL
    );
    assert_eq!(v.getattr(g).unwrap().size, 10);
    // readdir at nonsense cookies: nothing, no panic.
    let mut n = 0;
    for cookie in [3, 1 << 40, u64::MAX - 1, u64::MAX] {
        v.readdir(ROOT_INO, cookie, |_, _, _, _| {
            n += 1;
            false
        })
        .unwrap();
        assert!(v.readdir_batch(ROOT_INO, cookie, usize::MAX).unwrap().len() <= 8);
        assert!(v.readdir_batch(ROOT_INO, cookie, 0).unwrap().len() <= 1);
    }
    assert!(n <= 20);
    v.remove(ROOT_INO, b"g", false).unwrap();
    v.forget(g, 1);
    let f_frames = v.stat(f).unwrap().blocks / 8;
    consistent(v, free + 3 - f_frames, "limits");
}

#[test]
fn fallocate_every_mode_combination() {
    let fx = fixture();
    let v = &fx.vol;
    let f = fx.file;
    // Linux: KEEP_SIZE 0x01, PUNCH_HOLE 0x02, NO_HIDE_STALE 0x04, COLLAPSE_RANGE 0x08,
    // ZERO_RANGE 0x10, INSERT_RANGE 0x20, UNSHARE_RANGE 0x40, WRITE_ZEROES 0x80. pfnfs
    // supports 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE and ZERO_RANGE|KEEP_SIZE;
    // everything else is EOPNOTSUPP, as FUSE's own check answers before asking the daemon.
    let supported = [0x00, 0x01, 0x03, 0x10, 0x11];
    for mode in (0..=0xff).chain([0x100, 0x4000_0000, i32::MAX, -1, i32::MIN]) {
        let r = v.fallocate(f, 4096, 8192, mode);
        if supported.contains(&mode) {
            r.unwrap_or_else(|e| panic!("mode {mode:#x}: {e}"));
        } else {
            assert_eq!(err(r, "fallocate"), libc::EOPNOTSUPP, "mode {mode:#x}");
        }
    }
    // Bytes outside the zeroed/punched range are untouched; inside they read as zeros.
    let data = read(v, f, 0, 20_000).unwrap();
    assert_eq!(
        data.len(),
        12_288,
        "mode 0 extended the file to 4096 + 8192"
    );
    assert!(data[..4096].iter().all(|b| *b == 7));
    assert!(data[4096..].iter().all(|b| *b == 0));
    fsck_clean(v);
}

#[test]
fn names_and_values_out_of_range() {
    let fx = fixture();
    let v = &fx.vol;
    let free = unused_frames(v);
    let long = vec![b'n'; 256];
    let max = vec![b'm'; 255];
    assert_eq!(err(v.lookup(ROOT_INO, &long), "lookup"), libc::ENAMETOOLONG);
    assert_eq!(
        err(v.create(ROOT, ROOT_INO, &long, 0o644, true), "create"),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        err(v.mkdir(ROOT, ROOT_INO, &long, 0o755), "mkdir"),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        err(v.symlink(ROOT, ROOT_INO, &long, b"t"), "symlink"),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        err(v.link(fx.file, ROOT_INO, &long), "link"),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        err(v.rename(ROOT_INO, b"file", ROOT_INO, &long, 0), "rename to"),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        err(v.rename(ROOT_INO, &long, ROOT_INO, b"x", 0), "rename from"),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        err(v.remove(ROOT_INO, &long, false), "unlink"),
        libc::ENAMETOOLONG
    );
    // 255 bytes is fine everywhere.
    v.create(ROOT, ROOT_INO, &max, 0o644, true).unwrap();
    v.rename(ROOT_INO, &max, fx.dir, &max, 0).unwrap();
    v.remove(fx.dir, &max, false).unwrap();
    // Names the kernel never sends.
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
        assert_eq!(
            err(v.create(ROOT, ROOT_INO, bad, 0o644, true), "create"),
            libc::EINVAL,
            "{bad:?}"
        );
        assert_eq!(
            err(v.rename(ROOT_INO, b"file", ROOT_INO, bad, 0), "rename"),
            libc::EINVAL,
            "{bad:?}"
        );
    }
    assert_eq!(err(v.remove(ROOT_INO, b".", true), "rmdir ."), libc::EINVAL);
    assert_eq!(
        err(v.remove(ROOT_INO, b"..", true), "rmdir .."),
        libc::ENOTEMPTY
    );
    // Symlink targets: empty ENOENT, 4096 bytes ENAMETOOLONG (PATH_MAX with its NUL).
    assert_eq!(
        err(v.symlink(ROOT, ROOT_INO, b"s", b""), "symlink"),
        libc::ENOENT
    );
    assert_eq!(
        err(v.symlink(ROOT, ROOT_INO, b"s", &[b'a'; 4096]), "symlink"),
        libc::ENAMETOOLONG
    );
    let s = v.symlink(ROOT, ROOT_INO, b"s", &[b'a'; 4095]).unwrap();
    assert_eq!(v.readlink(s.ino).unwrap().len(), 4095);
    v.remove(ROOT_INO, b"s", false).unwrap();
    // Rename flags.
    for flags in [4, 8, 0x100, u32::MAX, 1 | 2] {
        assert_eq!(
            err(v.rename(ROOT_INO, b"file", ROOT_INO, b"x", flags), "rename"),
            libc::EINVAL,
            "flags {flags:#x}"
        );
    }
    assert_eq!(
        err(v.rename(ROOT_INO, b"dir", fx.dir, b"x", 0), "into itself"),
        libc::EINVAL
    );
    // xattr names: empty or over 255 bytes ERANGE, unknown namespace EOPNOTSUPP; values
    // over 64 KiB E2BIG; over 1 MiB on one inode ENOSPC.
    let f = fx.file;
    let mut long_name = b"user.".to_vec();
    long_name.resize(256, b'x');
    assert_eq!(err(v.setxattr(f, b"", b"v", 0), "empty"), libc::ERANGE);
    assert_eq!(
        err(v.setxattr(f, &long_name, b"v", 0), "long"),
        libc::ERANGE
    );
    assert_eq!(err(v.getxattr(f, &long_name), "long"), libc::ERANGE);
    assert_eq!(
        err(v.setxattr(f, b"nonsense.a", b"v", 0), "namespace"),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        err(v.setxattr(f, b"user.big", &vec![1u8; 65537], 0), "value"),
        libc::E2BIG
    );
    long_name.truncate(255);
    v.setxattr(f, &long_name, &vec![1u8; 65536], 0).unwrap();
    assert_eq!(v.getxattr(f, &long_name).unwrap().len(), 65536);
    let mut total_err = None;
    for i in 0..20 {
        let name = format!("user.fill{i}");
        if let Err(e) = v.setxattr(f, name.as_bytes(), &vec![2u8; 65536], 0) {
            total_err = Some((i, errno(&e)));
            break;
        }
    }
    assert_eq!(
        total_err.map(|(_, e)| e),
        Some(libc::ENOSPC),
        "1 MiB of xattrs on one inode"
    );
    assert_eq!(
        err(
            v.setxattr(f, b"user.x", b"v", libc::XATTR_REPLACE),
            "replace"
        ),
        libc::ENODATA
    );
    assert_eq!(
        err(
            v.setxattr(f, &long_name, b"v", libc::XATTR_CREATE),
            "create"
        ),
        libc::EEXIST
    );
    assert_eq!(err(v.getxattr(f, b"user.none"), "get"), libc::ENODATA);
    assert_eq!(err(v.removexattr(f, b"user.none"), "remove"), libc::ENODATA);
    for i in 0..20 {
        let _ = v.removexattr(f, format!("user.fill{i}").as_bytes());
    }
    v.removexattr(f, &long_name).unwrap();
    assert!(v.listxattr(f).unwrap().is_empty());
    consistent(v, free, "names");
}

#[test]
fn reference_counts_out_of_step() {
    let fx = fixture();
    let v = &fx.vol;
    let free = unused_frames(v);
    // More releases than opens, more forgets than lookups: no panic, no wrap-around that
    // would keep an unlinked file's frames forever.
    let f = v.create(ROOT, ROOT_INO, b"r", 0o644, true).unwrap().ino;
    v.write(ROOT, f, 0, &[1u8; 40_000]).unwrap();
    v.release(f);
    v.release(f);
    v.forget(f, u64::MAX);
    v.forget(f, 5);
    v.open(f, true).unwrap();
    v.release(f);
    v.add_lookup(f);
    v.forget(f, 1);
    v.remove(ROOT_INO, b"r", false).unwrap();
    v.release(f);
    v.forget(f, 1);
    assert_eq!(err(v.getattr(f), "getattr"), libc::ENOENT, "not reclaimed");
    consistent(v, free, "reference counts");
}

#[test]
fn times_at_the_extremes() {
    let fx = fixture();
    let v = &fx.vol;
    for (secs, nsecs) in [
        (i64::MAX, 999_999_999),
        (i64::MIN, 0),
        (i64::MIN + 1, 999_999_999),
        (-1, 999_999_999),
        (0, 0),
    ] {
        let t = Time { secs, nsecs };
        let req = SetAttr {
            atime: Some(t),
            mtime: Some(t),
            ..Default::default()
        };
        let e = v.setattr(ROOT, fx.file, req).unwrap();
        assert_eq!((e.attr.mtime.secs, e.attr.mtime.nsecs), (secs, nsecs));
    }
}

#[test]
fn unprivileged_caller_cannot_pass_bad_sizes_either() {
    let fx = fixture();
    let v = &fx.vol;
    let free = unused_frames(v);
    assert_eq!(
        err(v.write(USER, fx.file, u64::MAX, b"x"), "write"),
        libc::EFBIG
    );
    assert_eq!(
        err(v.fallocate_as(USER, fx.file, u64::MAX, 1, 0), "fallocate"),
        libc::EFBIG
    );
    assert_eq!(
        err(
            v.copy_range(USER, fx.file, 0, fx.file, u64::MAX - 3, 10),
            "copy"
        ),
        libc::EFBIG
    );
    consistent(v, free, "unprivileged");
}

#[test]
fn volume_survives_and_reloads() {
    // After all of the above kinds of nonsense, the pool still checkpoints and loads.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pool");
    Pool::create(&p, 32 << 20, &CreateOptions::default()).unwrap();
    {
        let v = load(&p);
        let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
        let _ = v.write(ROOT, f, u64::MAX, b"x");
        let _ = v.fallocate(f, 0, 1 << 40, 0);
        let _ = v.fallocate(f, 0, 0, -1);
        let _ = v.copy_range(ROOT, f, 0, ROOT_INO, 0, 100);
        v.write(ROOT, f, 5, b"kept").unwrap();
        v.shutdown().unwrap();
    }
    let v = load(&p);
    let f = v.lookup(ROOT_INO, b"f").unwrap().ino;
    assert_eq!(read(&v, f, 0, 100).unwrap(), b"\0\0\0\0\0kept");
    fsck_clean(&v);
}

fn load(p: &Path) -> Volume {
    let pool = Pool::open(p, &OpenOptions::default()).unwrap();
    Volume::load(Arc::new(pool)).unwrap()
}

/// Writes the file "data" in the root until the pool refuses with ENOSPC.
fn fill_with_data(v: &Volume) {
    let d = v.create(ROOT, ROOT_INO, b"data", 0o644, true).unwrap().ino;
    let mut off = 0u64;
    loop {
        match v.write(ROOT, d, off, &[1u8; 65536]) {
            Ok(_) => off += 65536,
            Err(e) => {
                assert_eq!(errno(&e), libc::ENOSPC);
                break;
            }
        }
    }
}

/// Creates files `PREFIX0`, `PREFIX1`, ... in the root, each with `value` as xattr
/// `user.v`, until one of them fails; returns how many succeeded.
fn fill_with_xattr_inodes(v: &Volume, prefix: &str, value: &[u8]) -> usize {
    let mut made = 0;
    while v
        .create(
            ROOT,
            ROOT_INO,
            format!("{prefix}{made}").as_bytes(),
            0o644,
            true,
        )
        .and_then(|e| v.setxattr(e.ino, b"user.v", value, 0))
        .is_ok()
    {
        made += 1;
        assert!(made < 10_000);
    }
    made
}

/// Regression: metadata (xattrs) growing on a pool full of data used to outgrow the free
/// space the next checkpoint needs; checkpoints then failed, the log filled, unlink itself
/// got ENOSPC and the final checkpoint at unmount failed. Now growth stops with ENOSPC while
/// the next checkpoint still fits, deletes make room at once, and the pool always unmounts.
#[test]
fn full_metadata_never_blocks_unlink_or_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pool");
    Pool::create(&p, 16 << 20, &CreateOptions::default()).unwrap();
    let value = vec![5u8; 30_000];
    let mut names = Vec::new();
    {
        let v = load(&p);
        fill_with_data(&v);
        // Then metadata until ENOSPC (never EIO).
        for i in 0..10_000 {
            let name = format!("x{i}").into_bytes();
            // (forget: the kernel drops its lookup reference, so unlink can reclaim)
            let r = v.create(ROOT, ROOT_INO, &name, 0o644, true).and_then(|e| {
                v.forget(e.ino, 1);
                v.setxattr(e.ino, b"user.v", &value, 0)
            });
            match r {
                Ok(()) => names.push(name),
                Err(e) => {
                    assert_eq!(errno(&e), libc::ENOSPC, "inode {i}: {e}");
                    break;
                }
            }
        }
        assert!(names.len() >= 4, "only {} inodes", names.len());
        // statfs says so: no blocks for data, no room for an inode of that size.
        let st = v.statfs();
        assert_eq!(st.free_frames, 0, "{st:?}");
        assert!(st.free_inodes * 256 < 30_000 + 4096, "{st:?}");
        // Unlinks work, and what they free is usable at once.
        let deleted: Vec<Vec<u8>> = names.drain(..names.len() / 2).collect();
        for name in &deleted {
            v.remove(ROOT_INO, name, false).unwrap();
        }
        for i in 0..deleted.len() / 2 {
            let name = format!("again{i}").into_bytes();
            let e = v.create(ROOT, ROOT_INO, &name, 0o644, true).unwrap();
            v.setxattr(e.ino, b"user.v", &value, 0).unwrap();
            names.push(name);
        }
        v.checkpoint().unwrap();
        v.shutdown().unwrap();
    }
    // After a clean reload the reserve is the loaded checkpoint's: still no overcommit.
    let v = load(&p);
    for name in &names {
        let ino = v.lookup(ROOT_INO, name).unwrap().ino;
        assert_eq!(v.getxattr(ino, b"user.v").unwrap(), value);
    }
    let d = v.lookup(ROOT_INO, b"data").unwrap().ino;
    let size = v.getattr(d).unwrap().size;
    assert_eq!(
        err(v.write(ROOT, d, size, &[1u8; 65536]), "write"),
        libc::ENOSPC
    );
    fill_with_xattr_inodes(&v, "m", &value);
    v.shutdown().unwrap();
    drop(v);
    let v = load(&p);
    fsck_clean(&v);
}

/// Regression (seen in CI): the kernel sends FORGET for an unlinked inode after the
/// unlink's reply, and another worker may answer the next request first. On a full pool,
/// `rm; create` then failed with ENOSPC although the deleted inodes were about to be freed.
/// An operation short of room now waits briefly for such reclaims.
#[test]
fn deletes_make_room_even_when_forget_comes_late() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pool");
    Pool::create(&p, 16 << 20, &CreateOptions::default()).unwrap();
    let value = vec![5u8; 30_000];
    let v = load(&p);
    fill_with_data(&v);
    // Metadata until ENOSPC; the kernel keeps its lookup reference on each inode.
    let mut inos = Vec::new();
    for i in 0..10_000 {
        let name = format!("x{i}").into_bytes();
        let r = v
            .create(ROOT, ROOT_INO, &name, 0o644, true)
            .and_then(|e| v.setxattr(e.ino, b"user.v", &value, 0).map(|()| e.ino));
        match r {
            Ok(ino) => inos.push((name, ino)),
            Err(e) => {
                assert_eq!(errno(&e), libc::ENOSPC, "inode {i}: {e}");
                break;
            }
        }
    }
    assert!(inos.len() >= 4, "only {} inodes", inos.len());
    let deleted: Vec<(Vec<u8>, u64)> = inos.drain(..inos.len() / 2).collect();
    for (name, _) in &deleted {
        v.remove(ROOT_INO, name, false).unwrap();
    }
    std::thread::scope(|s| {
        // The FORGETs arrive 50 ms later, from another worker.
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            for (_, ino) in &deleted {
                v.forget(*ino, 1);
            }
        });
        let e = v.create(ROOT, ROOT_INO, b"again", 0o644, true).unwrap();
        v.setxattr(e.ino, b"user.v", &value, 0)
            .unwrap_or_else(|e| panic!("setxattr after deleting {}: {e}", deleted.len()));
    });
    // An inode still open is freed by its last release, not by FORGET: no one waits for it.
    let (name, ino) = inos.pop().unwrap();
    v.open(ino, false).unwrap();
    v.remove(ROOT_INO, &name, false).unwrap();
    v.forget(ino, 1);
    let start = std::time::Instant::now();
    fill_with_xattr_inodes(&v, "m", &value);
    assert!(
        start.elapsed() < std::time::Duration::from_millis(200),
        "ENOSPC waited {:?} for an open inode",
        start.elapsed()
    );
    v.release(ino);
    v.create(ROOT, ROOT_INO, b"after-release", 0o644, true)
        .and_then(|e| v.setxattr(e.ino, b"user.v", &value, 0))
        .expect("room after the last release");
    v.shutdown().unwrap();
    drop(v);
    let v = load(&p);
    fsck_clean(&v);
}

/// A pool whose free space is all single frames cannot hold a checkpoint (at most 254
/// ranges): found here by deleting every other one-frame file and then filling the pool with
/// one big file (its allocation takes the large free extents first). Checkpoints then fail.
/// Regression: new data and metadata now stop with ENOSPC at three quarters of the log, so
/// unlink still works, deleting the big file lets the next checkpoint succeed, and the pool
/// unmounts and loads again; a pool shut down while stuck loads read-write (before, the log
/// filled, every op failed and the pool could not be unmounted or mounted read-write).
#[test]
fn fragmented_pool_recovers_after_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pool");
    Pool::create(&p, 128 << 20, &CreateOptions::default()).unwrap();
    let v = load(&p);
    let d = v.mkdir(ROOT, ROOT_INO, b"d", 0o755).unwrap().ino;
    let mut names = Vec::new();
    for i in 0..100_000u32 {
        let name = format!("{i}").into_bytes();
        let e = v.create(ROOT, d, &name, 0o644, true).unwrap();
        v.forget(e.ino, 1);
        match v.write(ROOT, e.ino, 0, &[1u8; 4096]) {
            Ok(_) => names.push(name),
            Err(e) => {
                assert_eq!(errno(&e), libc::ENOSPC);
                break;
            }
        }
    }
    for name in names.iter().step_by(2) {
        v.remove(d, name, false).unwrap();
    }
    v.checkpoint().unwrap();
    let big = v.create(ROOT, ROOT_INO, b"big", 0o644, true).unwrap().ino;
    v.forget(big, 1);
    let mut off = 0u64;
    for chunk in [8 << 20, 4096] {
        while v.write(ROOT, big, off, &vec![2u8; chunk]).is_ok() {
            off += chunk as u64;
        }
    }
    let frag = v.checkpoint();
    // Whether or not this allocator order left room for a checkpoint, nothing may get stuck:
    // keep creating until ENOSPC, then delete the big file and carry on.
    let mut made = 0u32;
    loop {
        let name = format!("n{made}").into_bytes();
        match v.create(ROOT, ROOT_INO, &name, 0o644, true) {
            Ok(e) => {
                v.forget(e.ino, 1);
                made += 1;
            }
            Err(e) => {
                assert_eq!(errno(&e), libc::ENOSPC, "{e}");
                break;
            }
        }
        assert!(made < 200_000, "no ENOSPC");
    }
    // Unmounting in that state cannot write the final checkpoint; the pool must still load
    // read-write (replaying its log) so that files can be deleted.
    let _ = v.shutdown();
    drop(v);
    let v = load(&p);
    v.remove(ROOT_INO, b"big", false)
        .expect("unlink on a stuck pool");
    let e = v
        .create(ROOT, ROOT_INO, b"after", 0o644, true)
        .expect("create after delete");
    v.forget(e.ino, 1);
    v.shutdown().expect("clean shutdown");
    drop(v);
    let v = load(&p);
    assert!(v.lookup(ROOT_INO, b"after").is_ok());
    fsck_clean(&v);
    eprintln!("fragmented pool: first checkpoint {frag:?}; {made} inodes before ENOSPC");
}
