//! Full pools and limits, both modes where the mode matters: data ENOSPC and metadata ENOSPC
//! on small pools (statfs, recovery after deletes, fsck, every fully written file intact after
//! a remount), frames of deleted files never visible in new files, offsets at the format's
//! maximum (EFBIG), name and path lengths, xattr size limits, deep trees and big directories.
//!
//! `PFNFS_BIG_DIR_ENTRIES=N` changes the entry count of `big_directory` (CI: 20,000).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pfnfs_tests::sys::{self, errno, expect_errno};
use pfnfs_tests::{Mode, MountGuard, pattern, pfnfs_bin, read_all, skip_without_fuse};

const MIB: u64 = 1 << 20;
const FRAME: u64 = 4096;

/// Runs `body` on a fresh `pool_bytes` pool in `mode`; the daemon must exit cleanly after.
fn run(mode: Mode, pool_bytes: u64, body: fn(&mut MountGuard)) {
    if skip_without_fuse() {
        return;
    }
    let mut guard = MountGuard::with_pool_size(mode, pool_bytes, &[]);
    body(&mut guard);
    if let Err(e) = guard.unmount() {
        panic!("after the test: {e}");
    }
}

/// `NAME::direct` and `NAME::buffered` on a pool of the given size.
macro_rules! on_pool {
    ($($name:ident: $bytes:expr),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn direct() {
                    super::run(pfnfs_tests::Mode::Direct, { use super::*; $bytes }, super::$name)
                }

                #[test]
                fn buffered() {
                    super::run(pfnfs_tests::Mode::Buffered, { use super::*; $bytes }, super::$name)
                }
            }
        )*
    };
}

on_pool!(
    data_enospc: 64 * MIB,
    metadata_enospc: 16 * MIB,
    deleted_frames_read_as_zeros: 64 * MIB,
);

/// Mode-independent limits run once, in direct mode.
#[test]
fn path_xattr_offset_and_time_limits() {
    run(
        Mode::Direct,
        64 * MIB,
        path_xattr_offset_and_time_limits_body,
    );
}

#[test]
fn big_directory() {
    run(Mode::Direct, 256 * MIB, big_directory_body);
}

fn statfs(guard: &MountGuard) -> libc::statvfs {
    sys::statvfs(guard.path()).expect("statvfs")
}

/// `pfnfs fsck -n POOL` must exit 0.
fn fsck_clean(pool: &Path) {
    let out = Command::new(pfnfs_bin())
        .args(["fsck", "-n"])
        .arg(pool)
        .output()
        .expect("run pfnfs fsck");
    assert_eq!(
        out.status.code(),
        Some(0),
        "pfnfs fsck -n {}: {}\n{}{}",
        pool.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `data` to a new file and fsyncs it. Err carries the first failure (with the
/// writeback cache ENOSPC may surface at write or at fsync; fsync comes before close, so the
/// close that drop does cannot be the first to see it).
fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Waits (up to 2 s) until statfs shows `bytes` available; returns how long that took.
fn wait_for_space(guard: &MountGuard, bytes: u64) -> Duration {
    let start = Instant::now();
    loop {
        let st = statfs(guard);
        if st.f_bavail * st.f_frsize >= bytes {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{bytes} bytes deleted, still only {} blocks available after 2 s",
            st.f_bavail
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The data-ENOSPC scenario (see the module doc).
fn data_enospc(guard: &mut MountGuard) {
    let before = statfs(guard);
    assert!(before.f_bavail > 0);
    // 1. Whole files of 4 MiB, each written, fsync'd and closed, until one fails.
    let mut complete: Vec<(PathBuf, u64)> = Vec::new();
    let mut failed_at = None;
    for i in 0..100u64 {
        let path = guard.join(format!("big{i:03}"));
        match write_file(&path, &pattern(i, (4 * MIB) as usize)) {
            Ok(()) => complete.push((path, i)),
            Err(e) => {
                assert_eq!(
                    errno(&e),
                    libc::ENOSPC,
                    "file {i}: expected ENOSPC, got {e}"
                );
                failed_at = Some(i);
                break;
            }
        }
    }
    let failed_at = failed_at.expect("a 64 MiB pool took 400 MiB without ENOSPC");
    assert!(complete.len() >= 10, "only {} files fit", complete.len());
    // 2. Fill the rest frame by frame (pwrite + fsync), until that fails too.
    let filler = guard.join("filler");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&filler)
        .unwrap();
    let mut filled = 0u64;
    loop {
        let r = f
            .write_all_at(&pattern(7, FRAME as usize), filled)
            .and_then(|()| f.sync_all());
        match r {
            Ok(()) => filled += FRAME,
            Err(e) => {
                assert_eq!(errno(&e), libc::ENOSPC, "filler: {e}");
                break;
            }
        }
        assert!(filled < 8 * MIB, "filler wrote 8 MiB past a full pool");
    }
    drop(f);
    let full = statfs(guard);
    assert_eq!(
        full.f_bavail, 0,
        "statfs after ENOSPC: {} blocks available",
        full.f_bavail
    );
    eprintln!(
        "{:?}: {} whole 4 MiB files, file {failed_at} hit ENOSPC, filler {} KiB; \
         statfs blocks {} free {} avail {}",
        guard.mode(),
        complete.len(),
        filled / 1024,
        full.f_blocks,
        full.f_bfree,
        full.f_bavail
    );
    // 3. Metadata still works on a data-full pool: names, attributes, xattrs, renames.
    fs::create_dir(guard.join("dir-when-full")).expect("mkdir on a full pool");
    File::create(guard.join("dir-when-full/empty")).expect("create on a full pool");
    sys::setxattr(&guard.join("dir-when-full/empty"), "user.k", b"v", 0)
        .expect("setxattr on a full pool");
    fs::rename(
        guard.join("dir-when-full/empty"),
        guard.join("dir-when-full/renamed"),
    )
    .expect("rename on a full pool");
    // A new write still fails cleanly, also through a second path (fallocate).
    let e = write_file(&guard.join("more"), &[1u8; 8192]).expect_err("write on a full pool");
    assert_eq!(errno(&e), libc::ENOSPC, "{e}");
    let g = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(guard.join("more-falloc"))
        .unwrap();
    assert_eq!(
        expect_errno(sys::fallocate(&g, 0, 0, 4 * MIB as i64), "fallocate"),
        libc::ENOSPC
    );
    assert_eq!(
        g.metadata().unwrap().len(),
        0,
        "failed fallocate changed the size"
    );
    // copy_file_range into new space, and stores through a shared mapping of a sparse
    // file (written back at msync): ENOSPC too.
    let src = File::open(&complete[0].0).unwrap();
    assert_eq!(
        expect_errno(
            sys::copy_file_range(&src, 0, &g, 0, MIB as usize),
            "copy_file_range"
        ),
        libc::ENOSPC
    );
    drop(src);
    g.set_len(MIB).unwrap();
    let e = map_store_msync(&g, MIB as usize).expect_err("msync of new pages on a full pool");
    assert_eq!(errno(&e), libc::ENOSPC, "msync: {e}");
    drop(g);
    // 4. Deleting makes the space usable again.
    for (victim, _) in complete.drain(..2) {
        fs::remove_file(&victim).unwrap();
    }
    fs::remove_file(guard.join("more")).unwrap();
    fs::remove_file(guard.join("more-falloc")).unwrap();
    // An unlinked file's frames are released when the kernel forgets the inode: FUSE queues
    // that FORGET before unlink(2) returns, but another worker may answer the next request
    // first, so the space comes back within milliseconds rather than at once. (Until the
    // next checkpoint measures the metadata, the reserve counts each log record as growth,
    // so a few frames fewer than were freed show.)
    let waited = wait_for_space(guard, 4 * MIB);
    eprintln!(
        "{:?}: 4 MiB usable again {waited:?} after unlinking 8 MiB",
        guard.mode()
    );
    let again = guard.join("again");
    write_file(&again, &pattern(1000, (4 * MIB) as usize)).expect("write after delete");
    complete.push((again, 1000));
    // 5. Unmount, fsck, remount: every complete file byte for byte.
    guard.unmount().expect("clean unmount of a full pool");
    fsck_clean(guard.pool());
    guard.remount();
    for (path, seed) in &complete {
        let got = read_all(path);
        assert!(
            got == pattern(*seed, (4 * MIB) as usize),
            "{} differs after remount",
            path.display()
        );
    }
    assert_eq!(
        fs::metadata(&filler).unwrap().len(),
        filled,
        "filler size after remount"
    );
    let data = read_all(&filler);
    for (k, chunk) in data.chunks(FRAME as usize).enumerate() {
        assert!(
            chunk == &pattern(7, FRAME as usize)[..],
            "filler frame {k} differs"
        );
    }
}

/// Metadata exhaustion: inodes carrying large xattrs live in the log and the checkpoint, not
/// in file frames. Creating them must end in ENOSPC (never EIO, never a hang), deleting must
/// still work on the exhausted pool, and the pool must unmount, check and mount clean.
fn metadata_enospc(guard: &mut MountGuard) {
    let value = pattern(3, 30_000);
    let dir = guard.join("meta");
    fs::create_dir(&dir).unwrap();
    // Data first, so that only the metadata reserve is left.
    let mut data_files = Vec::new();
    for i in 0..100u64 {
        let path = guard.join(format!("data{i}"));
        match write_file(&path, &pattern(i, MIB as usize)) {
            Ok(()) => data_files.push((path, i)),
            Err(e) => {
                assert_eq!(errno(&e), libc::ENOSPC, "data file {i}: {e}");
                break;
            }
        }
    }
    let mut complete: Vec<PathBuf> = Vec::new();
    let start = Instant::now();
    let mut failure = None;
    for i in 0..5000u32 {
        let path = dir.join(format!("x{i:05}"));
        let r = File::create(&path)
            .and_then(|_| sys::setxattr(&path, "user.big", &value, 0))
            .and_then(|()| sys::setxattr(&path, "user.big2", &value, 0));
        match r {
            Ok(()) => complete.push(path),
            Err(e) => {
                failure = Some((i, e));
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no ENOSPC after {i} inodes and 60 s"
        );
    }
    let (at, e) = failure.expect("5000 inodes of 120 kB xattrs fit a 32 MiB pool");
    assert_eq!(
        errno(&e),
        libc::ENOSPC,
        "inode {at}: expected ENOSPC, got {e}"
    );
    let st = statfs(guard);
    eprintln!(
        "{:?}: metadata full after {} inodes with 60 kB of xattrs ({:?}); statfs avail {} \
         blocks, {} free inodes",
        guard.mode(),
        complete.len(),
        start.elapsed(),
        st.f_bavail,
        st.f_ffree
    );
    assert!(
        st.f_bavail * st.f_frsize < 4 * MIB,
        "metadata ENOSPC with {} blocks available",
        st.f_bavail
    );
    assert!(
        st.f_ffree < 1024,
        "metadata ENOSPC with {} free inodes in statfs",
        st.f_ffree
    );
    assert!(complete.len() >= 4, "only {} inodes fit", complete.len());
    // Deleting works on the exhausted pool and makes room again: for as much metadata as
    // was deleted, and after deleting file data, for more.
    let removed: Vec<PathBuf> = complete.drain(..complete.len() * 3 / 4).collect();
    for path in &removed {
        fs::remove_file(path).unwrap_or_else(|e| panic!("unlink {}: {e}", path.display()));
    }
    let make = |name: String| -> io::Result<PathBuf> {
        let path = dir.join(name);
        File::create(&path)?;
        sys::setxattr(&path, "user.big", &value, 0)?;
        sys::setxattr(&path, "user.big2", &value, 0)?;
        Ok(path)
    };
    for i in 0..removed.len() / 2 {
        let path = make(format!("after-delete{i}"))
            .unwrap_or_else(|e| panic!("inode {i} after deleting {}: {e}", removed.len()));
        complete.push(path);
    }
    let (data0, _) = data_files.remove(0);
    fs::remove_file(&data0).unwrap();
    for i in 0..4 {
        let path = make(format!("after-data-delete{i}"))
            .unwrap_or_else(|e| panic!("inode {i} after deleting 1 MiB of data: {e}"));
        complete.push(path);
    }
    // Clean unmount, fsck, remount: every complete inode with its xattrs.
    guard
        .unmount()
        .expect("clean unmount of a metadata-full pool");
    fsck_clean(guard.pool());
    guard.remount();
    for path in &complete {
        assert_eq!(
            sys::getxattr(path, "user.big").unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            value,
            "{}",
            path.display()
        );
    }
    for path in &removed {
        assert!(!path.exists(), "{} came back", path.display());
    }
    for (path, seed) in &data_files {
        assert!(
            read_all(path) == pattern(*seed, MIB as usize),
            "{} differs after remount",
            path.display()
        );
    }
}

/// Frames of deleted files never show in new files: the pool is filled with a pattern,
/// everything deleted, and new files are then made only of those frames (nothing else is
/// free) by every way of growing a file: ftruncate, fallocate (0 and KEEP_SIZE + ftruncate),
/// writes leaving holes and partial frames, and a shared mapping of a truncated-up file.
/// Every byte not written reads as zero, before and after a remount.
fn deleted_frames_read_as_zeros(guard: &mut MountGuard) {
    let junk = vec![0xA5u8; MIB as usize];
    let mut olds = Vec::new();
    'fill: for i in 0.. {
        let path = guard.join(format!("old{i}"));
        let mut f = File::create(&path).unwrap();
        for _ in 0..4 {
            if f.write_all(&junk).and_then(|()| f.sync_all()).is_err() {
                olds.push(path);
                break 'fill;
            }
        }
        olds.push(path);
    }
    let used_before = statfs(guard);
    assert!(used_before.f_bavail * FRAME < 2 * MIB, "pool not full");
    for p in &olds {
        fs::remove_file(p).unwrap();
    }
    wait_for_space(guard, 40 * MIB);
    let expect_zero = |path: &Path, written: &[(u64, &[u8])]| {
        let data = read_all(path);
        let mut want = vec![0u8; data.len()];
        for (off, bytes) in written {
            want[*off as usize..*off as usize + bytes.len()].copy_from_slice(bytes);
        }
        if let Some(i) = (0..data.len()).find(|&i| data[i] != want[i]) {
            panic!(
                "{}: byte {i} is {:#x}, expected {:#x} (stale data of a deleted file?)",
                path.display(),
                data[i],
                want[i]
            );
        }
    };
    let open = |name: &str| {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(guard.join(name))
            .unwrap()
    };
    // ftruncate up.
    let a = open("a");
    a.set_len(8 * MIB).unwrap();
    // fallocate mode 0, and KEEP_SIZE followed by ftruncate up.
    let b = open("b");
    sys::fallocate(&b, 0, 0, 8 * MIB as i64).unwrap();
    let c = open("c");
    sys::fallocate(&c, libc::FALLOC_FL_KEEP_SIZE, 0, 8 * MIB as i64).unwrap();
    c.set_len(8 * MIB).unwrap();
    // Writes leaving holes and partial frames on both sides.
    let d = open("d");
    let writes: Vec<(u64, &[u8])> = vec![
        (100, b"first"),
        (FRAME * 3 + 4000, b"across a frame edge"),
        (3 * MIB + 7, b"middle"),
        (8 * MIB - 3, b"end"),
    ];
    for (off, bytes) in &writes {
        d.write_all_at(bytes, *off).unwrap();
    }
    // Shrink inside a frame, then grow again: the cut bytes read as zeros.
    let e = open("e");
    e.write_all_at(&vec![0x5Au8; 3 * FRAME as usize], 0)
        .unwrap();
    e.set_len(FRAME + 10).unwrap();
    e.set_len(3 * FRAME).unwrap();
    // A shared mapping of a truncated-up file.
    let m = open("m");
    m.set_len(4 * MIB).unwrap();
    let mapped = map_check_and_store(&m, 4 * MIB as usize);
    assert!(
        mapped.iter().all(|b| *b == 0),
        "mmap of a truncated-up file shows non-zero bytes"
    );
    for f in [&a, &b, &c, &d, &e, &m] {
        f.sync_all().unwrap();
    }
    let check = |guard: &MountGuard| {
        for name in ["a", "b", "c"] {
            expect_zero(&guard.join(name), &[]);
        }
        expect_zero(&guard.join("m"), &[(MIB + 5, b"MAPPED")]);
        expect_zero(&guard.join("d"), &writes);
        expect_zero(&guard.join("e"), &[(0, &[0x5Au8; FRAME as usize + 10][..])]);
    };
    check(guard);
    let st = statfs(guard);
    assert!(
        (st.f_blocks - st.f_bfree) * FRAME >= 16 * MIB,
        "the new files do not hold the old frames"
    );
    drop((a, b, c, d, e, m));
    guard.remount();
    check(guard);
}

/// Fills `len` bytes of `file` through a shared writable mapping; returns msync's result.
fn map_store_msync(file: &File, len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: mapping an open file of at least `len` bytes; the mapping is only used in
    // this block and unmapped at its end.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        std::slice::from_raw_parts_mut(addr as *mut u8, len).fill(0x77);
        let rc = libc::msync(addr, len, libc::MS_SYNC);
        let result = if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        assert_eq!(libc::munmap(addr, len), 0, "munmap");
        result
    }
}

/// Maps `len` bytes of `file` shared and writable, returns what the mapping shows, then
/// stores `MAPPED` at byte 1 MiB + 5 through it and msyncs.
fn map_check_and_store(file: &File, len: usize) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: mapping an open file of at least `len` bytes; the mapping is only used in
    // this block and unmapped at its end.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        let slice = std::slice::from_raw_parts_mut(addr as *mut u8, len);
        let seen = slice.to_vec();
        slice[MIB as usize + 5..MIB as usize + 11].copy_from_slice(b"MAPPED");
        assert_eq!(libc::msync(addr, len, libc::MS_SYNC), 0, "msync");
        assert_eq!(libc::munmap(addr, len), 0, "munmap");
        seen
    }
}

fn path_xattr_offset_and_time_limits_body(guard: &mut MountGuard) {
    // PATH_MAX: a path of 4095 bytes (4096 with its NUL) works, one byte more does not.
    let mut dir = guard.path().to_path_buf();
    fs::create_dir(guard.join("long")).unwrap();
    dir.push("long");
    let mut k = 0;
    while 4095 - dir.as_os_str().len() - 1 > 254 {
        dir.push(format!("{k}{}", "p".repeat(199)));
        fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("mkdir of a {}-byte path: {e}", dir.as_os_str().len()));
        k += 1;
    }
    let last = 4095 - dir.as_os_str().len() - 1;
    let file = dir.join("f".repeat(last));
    assert_eq!(file.as_os_str().len(), 4095);
    fs::write(&file, b"at PATH_MAX").expect("create a 4095-byte path");
    assert_eq!(fs::read(&file).unwrap(), b"at PATH_MAX");
    let over = dir.join("f".repeat(last + 1));
    assert_eq!(
        expect_errno(fs::write(&over, b"x"), "4096-byte path"),
        libc::ENAMETOOLONG
    );
    fs::remove_dir_all(guard.join("long")).expect("remove a PATH_MAX tree");
    // A deep tree: 1500 levels.
    let mut deep = guard.join("deep");
    fs::create_dir(&deep).unwrap();
    for _ in 0..1500 {
        deep.push("d");
        fs::create_dir(&deep).unwrap();
    }
    fs::write(deep.join("bottom"), b"deep").unwrap();
    assert_eq!(fs::read(deep.join("bottom")).unwrap(), b"deep");
    assert_eq!(
        expect_errno(
            fs::rename(guard.join("deep"), deep.join("loop")),
            "rename into itself"
        ),
        libc::EINVAL
    );
    let count = walk_count(&guard.join("deep"));
    assert_eq!(count, 1501, "entries under deep/");
    fs::remove_dir_all(guard.join("deep")).expect("remove a 1500-level tree");
    // xattrs at and past the limits: values of 64 KiB, names of 255 bytes, 1 MiB per inode.
    let x = guard.join("x");
    File::create(&x).unwrap();
    let big = pattern(9, 65536);
    sys::setxattr(&x, "user.v", &big, 0).expect("65536-byte value");
    assert_eq!(sys::getxattr(&x, "user.v").unwrap(), big);
    assert_eq!(
        expect_errno(sys::setxattr(&x, "user.w", &vec![1u8; 65537], 0), "65537"),
        libc::E2BIG
    );
    let name255 = format!("user.{}", "n".repeat(250));
    let name256 = format!("user.{}", "n".repeat(251));
    sys::setxattr(&x, &name255, b"v", 0).expect("255-byte name");
    assert_eq!(
        expect_errno(sys::setxattr(&x, &name256, b"v", 0), "256-byte name"),
        libc::ERANGE
    );
    assert_eq!(
        expect_errno(sys::getxattr(&x, &name256), "get 256-byte name"),
        libc::ERANGE
    );
    let mut total = None;
    for i in 0..32 {
        if let Err(e) = sys::setxattr(&x, &format!("user.fill{i}"), &big, 0) {
            total = Some(errno(&e));
            break;
        }
    }
    assert_eq!(
        total,
        Some(libc::ENOSPC),
        "more than 1 MiB of xattrs on one inode"
    );
    assert_eq!(sys::getxattr(&x, "user.v").unwrap(), big);
    // Offsets at the format's maximum (i64::MAX, the kernel's s_maxbytes).
    let top = i64::MAX as u64;
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(guard.join("top"))
        .unwrap();
    f.write_all_at(b"z", top - 1).expect("write the last byte");
    assert_eq!(f.metadata().unwrap().len(), top);
    // (A longer read there is EINVAL from the kernel: offset + count overflows.)
    let mut b = [0u8; 1];
    assert_eq!(f.read_at(&mut b, top - 1).unwrap(), 1);
    assert_eq!(b[0], b'z');
    // With s_maxbytes at i64::MAX the kernel's overflow check (EINVAL) comes first.
    assert_eq!(
        expect_errno(f.write_all_at(b"z", top), "write at i64::MAX"),
        libc::EINVAL
    );
    assert_eq!(
        expect_errno(
            sys::fallocate(&f, 0, (top - 4096) as i64, 8192),
            "fallocate past i64::MAX"
        ),
        libc::EFBIG
    );
    assert_eq!(
        f.metadata().unwrap().blocks(),
        8,
        "a file of i64::MAX bytes holds one frame"
    );
    f.set_len(0).unwrap();
    drop(f);
    // Timestamps at the ends of the range survive a remount and crash nothing. (At the
    // superblock's extremes the kernel zeroes the nanoseconds, as for any filesystem.)
    let t = guard.join("times");
    File::create(&t).unwrap();
    for (secs, nsecs, want_ns) in [
        (i64::MAX, 999_999_999, 0),
        (i64::MAX - 1, 999_999_999, 999_999_999),
        (i64::MIN + 1, 5, 5),
        (-(1i64 << 40), 5, 5),
        (0, 0, 0),
    ] {
        sys::utimensat(&t, sys::ts(secs, nsecs), sys::ts(secs, nsecs), false)
            .unwrap_or_else(|e| panic!("utimensat {secs}.{nsecs}: {e}"));
        let m = fs::metadata(&t).unwrap();
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (secs, want_ns),
            "{secs}.{nsecs}"
        );
    }
    let late = sys::ts(i64::MAX - 1, 999_999_999);
    sys::utimensat(&t, late, sys::ts(-(1 << 40), 5), false).unwrap();
    guard.remount();
    let m = fs::metadata(guard.join("times")).unwrap();
    assert_eq!((m.atime(), m.atime_nsec()), (i64::MAX - 1, 999_999_999));
    assert_eq!((m.mtime(), m.mtime_nsec()), (-(1 << 40), 5));
    assert_eq!(sys::getxattr(&guard.join("x"), &name255).unwrap(), b"v");
}

fn walk_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            n += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    n
}

/// A directory of `PFNFS_BIG_DIR_ENTRIES` (default 20,000) entries: created, listed
/// (complete, each name once), looked up at random after the kernel's entry cache expired
/// (timed: each must reach the daemon), unlinked.
fn big_directory_body(guard: &mut MountGuard) {
    let n: usize = std::env::var("PFNFS_BIG_DIR_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = guard.join("big");
    fs::create_dir(&dir).unwrap();
    let name = |i: usize| format!("entry-{i:07}");
    let start = Instant::now();
    for i in 0..n {
        File::create(dir.join(name(i))).unwrap_or_else(|e| panic!("create {i}: {e}"));
    }
    let created = start.elapsed();
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        count += 1;
        let fname = e.file_name();
        assert!(
            seen.insert(fname.as_bytes().to_vec()),
            "{fname:?} listed twice"
        );
    }
    let listed = start.elapsed();
    assert_eq!(count, n, "readdir count");
    for i in 0..n {
        assert!(seen.contains(name(i).as_bytes()), "{} not listed", name(i));
    }
    // The kernel caches names for the entry TTL (1 s); after it, each stat is a LOOKUP.
    std::thread::sleep(Duration::from_millis(1100));
    let picks = pattern(77, 2000);
    let mut times: Vec<Duration> = picks
        .chunks(2)
        .map(|c| {
            let i = (usize::from(c[0]) << 8 | usize::from(c[1])) * n / 65536;
            let t = Instant::now();
            let m = fs::symlink_metadata(dir.join(name(i))).unwrap();
            let d = t.elapsed();
            assert!(m.is_file());
            d
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    let missing = expect_errno(
        fs::symlink_metadata(dir.join("entry-missing")),
        "lookup of a missing name",
    );
    assert_eq!(missing, libc::ENOENT);
    let start = Instant::now();
    for i in 0..n {
        fs::remove_file(dir.join(name(i))).unwrap();
    }
    let removed = start.elapsed();
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::remove_dir(&dir).unwrap();
    eprintln!(
        "big directory, {n} entries: create {created:?}, readdir {listed:?}, 1000 random \
         lookups median {median:?} p99 {p99:?}, unlink all {removed:?}"
    );
    assert!(
        median < Duration::from_millis(5),
        "median lookup {median:?} in a {n}-entry directory"
    );
}
