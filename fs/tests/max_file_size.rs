//! The largest file: `i64::MAX` bytes, as the kernel's `s_maxbytes` for FUSE (and ext4, xfs,
//! tmpfs) allows. Mirrors xfstests generic/525: truncate to `2^63 - 1`, write the last byte,
//! read it back after a reload (log replay) and after a checkpoint; one byte more is EFBIG.

use pfnfs_fs::session::errno;
use std::path::Path;
use std::sync::Arc;

use pfnfs_alloc::{CreateOptions, OpenOptions, Pool};
use pfnfs_fs::inode::ROOT_INO;
use pfnfs_fs::volume::{Caller, MAX_FILE_BYTES, SetAttr, Volume};

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn make_pool(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("pool");
    Pool::create(&p, 64 << 20, &CreateOptions::default()).unwrap();
    p
}

fn load(p: &Path) -> Volume {
    let pool = Pool::open(p, &OpenOptions::default()).unwrap();
    Volume::load(Arc::new(pool)).unwrap()
}

fn read_at(v: &Volume, ino: u64, off: u64, len: u32) -> Vec<u8> {
    v.read(ino, off, len, |b| b.to_vec()).unwrap()
}

fn truncate(v: &Volume, ino: u64, size: u64) -> Result<(), i32> {
    let req = SetAttr {
        size: Some(size),
        ..Default::default()
    };
    v.setattr(ROOT, ino, req).map(|_| ()).map_err(|e| errno(&e))
}

#[test]
fn largest_file_is_i64_max() {
    assert_eq!(MAX_FILE_BYTES, i64::MAX as u64);
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let last = MAX_FILE_BYTES - 1;
    let (a, b) = {
        let v = load(&p);
        let a = v.create(ROOT, ROOT_INO, b"file0", 0o644, true).unwrap().ino;
        truncate(&v, a, MAX_FILE_BYTES).unwrap();
        assert_eq!(v.getattr(a).unwrap().size, MAX_FILE_BYTES);
        // One byte more is refused, by truncate and by write.
        assert_eq!(truncate(&v, a, MAX_FILE_BYTES + 1), Err(libc::EFBIG));
        let b = v.create(ROOT, ROOT_INO, b"file1", 0o644, true).unwrap().ino;
        v.write(ROOT, b, last, b"a").unwrap();
        assert_eq!(v.getattr(b).unwrap().size, MAX_FILE_BYTES);
        let e = v.write(ROOT, b, MAX_FILE_BYTES, b"a").unwrap_err();
        assert_eq!(errno(&e), libc::EFBIG);
        let e = v.write(ROOT, b, last, b"ab").unwrap_err();
        assert_eq!(errno(&e), libc::EFBIG);
        let e = v.fallocate(b, last, 2, 0).unwrap_err();
        assert_eq!(errno(&e), libc::EFBIG);
        // The file costs one frame.
        assert_eq!(v.stat(b).unwrap().blocks, 8);
        assert_eq!(read_at(&v, b, last, 10), b"a");
        assert_eq!(read_at(&v, b, last - 3, 4), b"\0\0\0a");
        assert_eq!(read_at(&v, a, last, 1), b"\0");
        // SEEK_DATA finds the last frame.
        let data = v.seek(b, 0, pfnfs_fs::volume::SeekWhence::Data).unwrap();
        assert_eq!(data, (last / 4096) * 4096);
        (a, b)
    };
    // Replay of the log (the daemon did not checkpoint on the way out).
    let v = load(&p);
    assert_eq!(v.getattr(a).unwrap().size, MAX_FILE_BYTES);
    assert_eq!(read_at(&v, b, last, 1), b"a");
    v.checkpoint().unwrap();
    drop(v);
    // And from the checkpoint; then shrink back and punch the last frame.
    let v = load(&p);
    assert_eq!(read_at(&v, b, last, 1), b"a");
    v.fallocate(b, last, 1, 0x01 | 0x02).unwrap();
    assert_eq!(read_at(&v, b, last, 1), b"\0");
    truncate(&v, b, 0).unwrap();
    assert_eq!(v.stat(b).unwrap().blocks, 0);
    let report = pfnfs_fs::fsck::check_volume(&v);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
