//! A pool file larger than the room its filesystem has (a 1 GiB pool on a 64 MiB tmpfs), both
//! modes: `mkfs` and `mount` warn; writes, fallocate, copy_file_range and stores through a
//! shared mapping that need more room fail with ENOSPC (EIO where the kernel reports a failed
//! write-back so) while the mount stays up; deleting files makes room again; the daemon exits
//! cleanly at unmount, `fsck -n` finds the pool clean, and every fully written file is intact
//! after a remount. Before storage was reserved as frames are handed out, the first write
//! past the room killed the daemon with SIGBUS.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pfnfs_tests::sys::{self, errno};
use pfnfs_tests::{Mode, MountGuard, Tmpfs, pattern, pfnfs_on, read_all, skip_without_fuse};

const MIB: usize = 1 << 20;

/// A 1 GiB pool made by `pfnfs mkfs` on a 64 MiB tmpfs; with mkfs's output.
fn pool_on_small_tmpfs() -> (Tmpfs, PathBuf, std::process::Output) {
    let tmpfs = Tmpfs::new(64 * MIB as u64);
    let pool: PathBuf = tmpfs.path().join("test.pool");
    let out = pfnfs_on(&["mkfs", "--size", "1G"], &pool);
    assert!(out.status.success(), "{out:?}");
    (tmpfs, pool, out)
}

/// True for the errors a write that found no room may give: ENOSPC, or EIO where the kernel
/// reports a failed page-cache write-back that way.
fn no_room(e: &io::Error) -> bool {
    matches!(errno(e), libc::ENOSPC | libc::EIO)
}

/// Writes 1 MiB chunks of `seed`'s pattern to a new file until a write (or the fsync after
/// the last one) fails; returns that error and the bytes written before it.
fn fill(path: &Path, seed: u64) -> (io::Error, usize) {
    let mut f = File::create(path).expect("create a file to fill");
    let data = pattern(seed, 200 * MIB);
    let mut written = 0;
    for chunk in data.chunks(MIB) {
        match f.write_all(chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) => return (e, written),
        }
        if written % (16 * MIB) == 0
            && let Err(e) = f.sync_all()
        {
            return (e, written);
        }
    }
    match f.sync_all() {
        Err(e) => (e, written),
        Ok(()) => panic!("{} MiB fit on a 64 MiB tmpfs", written / MIB),
    }
}

/// A new empty file at `path`, open for reading and writing.
fn create_rw(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

fn run(mode: Mode) {
    if skip_without_fuse() {
        return;
    }
    let (_tmpfs, pool, out) = pool_on_small_tmpfs();
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("warning") && warning.contains("ENOSPC"),
        "mkfs must warn that the pool is larger than its filesystem's room: {warning:?}"
    );

    let mut g = MountGuard::try_existing(&pool, mode, None).expect("mount");
    // A file that fits, written whole.
    let kept = pattern(1, 20 * MIB);
    fs::write(g.join("kept"), &kept).unwrap();
    File::open(g.join("kept")).unwrap().sync_all().unwrap();

    // Writes until the backing store is full: ENOSPC, and the mount stays up.
    let (e, written) = fill(&g.join("filler"), 2);
    assert!(no_room(&e), "filling: {e} after {} MiB", written / MIB);
    assert!(written >= 16 * MIB, "only {} MiB fit", written / MIB);
    assert_eq!(
        read_all(&g.join("kept")),
        kept,
        "a fully written file changed"
    );

    // fallocate, copy_file_range and stores through a shared mapping find no room either.
    let f = File::create(g.join("reserved")).unwrap();
    let e = sys::fallocate(&f, 0, 0, 32 * MIB as i64).expect_err("fallocate on a full store");
    assert_eq!(errno(&e), libc::ENOSPC, "fallocate: {e}");
    let src = File::open(g.join("kept")).unwrap();
    let dst = create_rw(&g.join("copy"));
    let copied = (0..20)
        .map(|i| sys::copy_file_range(&src, i * MIB as i64, &dst, i * MIB as i64, MIB))
        .find_map(|r| r.err());
    let copied = copied.or_else(|| dst.sync_all().err());
    assert!(
        copied.as_ref().is_some_and(no_room),
        "copy_file_range onto a full store: {copied:?}"
    );
    let mapped = create_rw(&g.join("mapped"));
    mapped.set_len(8 * MIB as u64).unwrap();
    let mut map = sys::SharedMapping::new(&mapped, 8 * MIB).unwrap();
    map.as_mut_slice().fill(0x5a);
    let synced = map.msync();
    assert!(
        synced.as_ref().is_err_and(no_room),
        "stores through a mapping onto a full store: {synced:?}"
    );
    drop(map);
    drop((f, src, dst, mapped));

    // Deleting makes room again.
    for name in ["filler", "reserved", "copy", "mapped"] {
        fs::remove_file(g.join(name)).unwrap();
    }
    let after = pattern(3, 24 * MIB);
    let f = File::create(g.join("after")).unwrap();
    f.write_all_at(&after, 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    g.unmount().expect("the daemon exits cleanly");
    drop(g);

    let out = pfnfs_on(&["fsck", "-n"], &pool);
    assert!(out.status.success(), "fsck -n: {out:?}");
    let mut g = MountGuard::try_existing(&pool, mode, None).expect("remount");
    assert_eq!(read_all(&g.join("kept")), kept);
    assert_eq!(read_all(&g.join("after")), after);
    g.unmount().expect("clean unmount after the remount");
}

#[test]
fn full_backing_store_is_enospc_direct() {
    run(Mode::Direct);
}

#[test]
fn full_backing_store_is_enospc_buffered() {
    run(Mode::Buffered);
}

/// `-o backing=sparse` reserves nothing: a store that the full filesystem under the pool
/// cannot take faults in the daemon. That is ENOSPC for the writer and no fault of the
/// frame's: nothing is recorded as bad, the mount stays up, and once there is room again
/// (here: a file beside the pool, which filled its filesystem, deleted) writes go through,
/// the unmount is clean and everything written is intact after a remount.
#[test]
fn sparse_backing_out_of_room_is_enospc_and_marks_nothing_bad() {
    if skip_without_fuse() {
        return;
    }
    let (tmpfs, pool, _) = pool_on_small_tmpfs();
    let mut g =
        MountGuard::try_existing_with_options(&pool, Mode::Direct, None, &["backing=sparse"])
            .expect("mount");
    let kept = pattern(1, 8 * MIB);
    fs::write(g.join("kept"), &kept).unwrap();
    // Fill the filesystem under the pool from beside it.
    let ballast = tmpfs.path().join("ballast");
    let mut b = File::create(&ballast).unwrap();
    let chunk = vec![1u8; MIB];
    while b.write_all(&chunk).is_ok() {}
    drop(b);
    let e = fs::write(g.join("filler"), pattern(2, 8 * MIB)).expect_err("a write with no room");
    assert_eq!(errno(&e), libc::ENOSPC, "{e}");
    assert_eq!(
        read_all(&g.join("kept")),
        kept,
        "the mount is up, the file intact"
    );
    // Room again: the frames that faulted are not bad, and writes go through.
    fs::remove_file(&ballast).unwrap();
    let after = pattern(3, 8 * MIB);
    fs::write(g.join("after"), &after).unwrap();
    g.unmount().expect("the daemon exits cleanly");
    drop(g);
    let out = pfnfs_on(&["stat", "--json"], &pool);
    assert!(out.status.success(), "pfnfs stat: {out:?}");
    let stat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        stat["bad_frames"].as_array().map(Vec::len),
        Some(0),
        "no room is not a bad frame: {stat}"
    );
    // With the filesystem full again, the checkers still read the pool (holes read zeros)
    // and a repair that finds no room says so: never a signal death.
    let mut b = File::create(&ballast).unwrap();
    while b.write_all(&chunk).is_ok() {}
    drop(b);
    let out = pfnfs_on(&["fsck", "-n"], &pool);
    assert!(
        out.status.success(),
        "fsck -n on a full filesystem: {out:?}"
    );
    let out = pfnfs_on(&["stat"], &pool);
    assert!(out.status.success(), "stat on a full filesystem: {out:?}");
    let out = pfnfs_on(&["fsck", "-y"], &pool);
    assert!(
        out.status.code().is_some(),
        "fsck -y on a full filesystem: {out:?}"
    );
    fs::remove_file(&ballast).unwrap();
    let out = pfnfs_on(&["fsck", "-n"], &pool);
    assert!(out.status.success(), "fsck -n: {out:?}");
    let mut g = MountGuard::try_existing(&pool, Mode::Direct, None).expect("remount");
    assert_eq!(read_all(&g.join("kept")), kept);
    assert_eq!(read_all(&g.join("after")), after);
    g.unmount().expect("clean unmount after the remount");
}
