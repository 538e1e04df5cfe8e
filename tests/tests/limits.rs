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
);

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
    let g = File::create(guard.join("more-falloc")).unwrap();
    assert_eq!(
        expect_errno(sys::fallocate(&g, 0, 0, 4 * MIB as i64), "fallocate"),
        libc::ENOSPC
    );
    assert_eq!(g.metadata().unwrap().len(), 0, "failed fallocate changed the size");
    drop(g);
    // 4. Deleting makes the space usable again.
    let (victim, _) = complete.remove(0);
    fs::remove_file(&victim).unwrap();
    fs::remove_file(guard.join("more")).unwrap();
    fs::remove_file(guard.join("more-falloc")).unwrap();
    // An unlinked file's frames are released when the kernel forgets the inode: FUSE queues
    // that FORGET before unlink(2) returns, but another worker may answer the next request
    // first, so the space comes back within milliseconds rather than at once.
    // Until the next checkpoint measures the metadata, the reserve counts the unlink
    // records as growth: a few frames less than 4 MiB show; the 4 MiB write below makes
    // the daemon checkpoint and gets them.
    let waited = wait_for_space(guard, 4 * MIB - 64 * 1024);
    eprintln!("{:?}: 4 MiB usable again {waited:?} after unlink", guard.mode());
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
    assert_eq!(errno(&e), libc::ENOSPC, "inode {at}: expected ENOSPC, got {e}");
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
    guard.unmount().expect("clean unmount of a metadata-full pool");
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
