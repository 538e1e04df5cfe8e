//! POSIX behaviour of a pfnfs mount, every test in both modes (`NAME::direct`,
//! `NAME::buffered`). Each test gets a fresh pool and mount; the guard unmounts even when the
//! test fails, and a test passes only if the daemon then exits cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{
    FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pfnfs_tests::sys::{self, errno, expect_errno, ts};
use pfnfs_tests::{
    MountGuard, SnapshotOptions, all_transports, diff_snapshots, pattern, read_all, sh, snapshot,
};

const MIB: usize = 1 << 20;

all_transports!(
    create_read_write,
    append,
    open_flags,
    truncate,
    unlink,
    mkdir_rmdir,
    rename,
    hard_links,
    symlinks,
    mknod_special,
    chmod_chown_utimens,
    xattrs,
    readdir_all_once,
    readdir_stable_during_changes,
    statfs_changes,
    fallocate_modes,
    seek_data_hole,
    copy_file_range,
    name_lengths,
    large_sparse_offsets,
    shell_tools,
    mmap_shared,
    persistence_after_remount,
    times_never_run_backwards,
);

fn nlink(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
        .nlink()
}

fn size(path: &Path) -> u64 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()))
        .len()
}

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn set_perm(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn assert_zero(data: &[u8], what: &str) {
    if let Some(i) = data.iter().position(|b| *b != 0) {
        panic!("{what}: byte {i} is {:#x}, expected 0", data[i]);
    }
}

fn create_read_write(m: &mut MountGuard) {
    let sizes = [0usize, 1, 4095, 4096, 4097, 65536 + 7, MIB + 3, 3 * MIB];
    for (i, len) in sizes.into_iter().enumerate() {
        let p = m.join(format!("f{i}"));
        let data = pattern(i as u64, len);
        fs::write(&p, &data).unwrap();
        assert_eq!(size(&p), len as u64, "size of a {len}-byte file");
        assert_eq!(read_all(&p), data, "contents of a {len}-byte file");
    }
    let p = m.join("f6");
    let mut expect = pattern(6, MIB + 3);
    let f = rw(&p);
    let patch = pattern(100, 10_000);
    f.write_all_at(&patch, 4000).unwrap();
    expect[4000..14_000].copy_from_slice(&patch);
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    let mut got = vec![0u8; expect.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == expect, "overwrite across a frame boundary");
    let mut buf = [0u8; 100];
    assert_eq!(
        f.read_at(&mut buf, expect.len() as u64 - 10).unwrap(),
        10,
        "short read at EOF"
    );
    assert_eq!(
        f.read_at(&mut buf, expect.len() as u64).unwrap(),
        0,
        "read at EOF"
    );
    assert_eq!(
        f.read_at(&mut buf, expect.len() as u64 + 12345).unwrap(),
        0,
        "read past EOF"
    );
    f.write_all_at(b"tail", expect.len() as u64 + 5000).unwrap();
    expect.resize(expect.len() + 5000, 0);
    expect.extend_from_slice(b"tail");
    drop(f);
    assert!(
        read_all(&p) == expect,
        "write past EOF leaves zeros in between"
    );
    let f = File::open(&p).unwrap();
    for off in [0u64, 1, 4095, 4096, 8191, MIB as u64] {
        let mut b = [0u8; 7];
        f.read_exact_at(&mut b, off).unwrap();
        assert_eq!(
            &b[..],
            &expect[off as usize..off as usize + 7],
            "7 bytes at {off}"
        );
    }
    // Sequential writes in odd-sized pieces.
    let p = m.join("pieces");
    let data = pattern(7, 2 * MIB + 123);
    let mut f = File::create(&p).unwrap();
    for chunk in data.chunks(12_345) {
        f.write_all(chunk).unwrap();
    }
    drop(f);
    assert!(read_all(&p) == data, "file written in 12345-byte pieces");
}

fn append(m: &mut MountGuard) {
    let p = m.join("log");
    fs::write(&p, b"start\n").unwrap();
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"a1\n").unwrap();
    b.write_all(b"b1\n").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"a2\n").unwrap();
    b.write_all(b"b2\n").unwrap();
    // On Linux pwrite on an O_APPEND descriptor appends too.
    a.write_all_at(b"a3\n", 0).unwrap();
    assert_eq!(
        String::from_utf8(read_all(&p)).unwrap(),
        "start\na1\nb1\na2\nb2\na3\n"
    );
    let big = pattern(3, MIB + 1);
    b.write_all(&big).unwrap();
    drop((a, b));
    let all = read_all(&p);
    let small = "start\na1\nb1\na2\nb2\na3\n".len();
    assert_eq!(all.len(), small + big.len());
    assert!(
        all[small..] == big[..],
        "1 MiB appended after small appends"
    );
    let f = OpenOptions::new().read(true).append(true).open(&p).unwrap();
    assert_eq!(f.metadata().unwrap().len(), all.len() as u64);
}

fn open_flags(m: &mut MountGuard) {
    let p = m.join("x");
    File::create(&p).unwrap();
    let e = expect_errno(
        OpenOptions::new().write(true).create_new(true).open(&p),
        "O_CREAT|O_EXCL on an existing file",
    );
    assert_eq!(e, libc::EEXIST);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.join("fresh"))
        .expect("O_EXCL on a new name");
    fs::write(&p, pattern(1, 100_000)).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0, "O_TRUNC empties the file");
    drop(f);
    assert!(read_all(&p).is_empty());
    fs::write(&p, b"after").unwrap();
    assert_eq!(read_all(&p), b"after");
    assert_eq!(
        expect_errno(File::open(m.join("nope")), "open a missing file"),
        libc::ENOENT
    );
    let e = expect_errno(
        sys::open(&p, libc::O_RDONLY | libc::O_DIRECTORY, 0),
        "O_DIRECTORY on a file",
    );
    assert_eq!(e, libc::ENOTDIR);
    assert_eq!(
        expect_errno(
            OpenOptions::new().write(true).open(m.path()),
            "open a dir for writing"
        ),
        libc::EISDIR
    );
    assert_eq!(
        expect_errno(File::open(m.join("x/y")), "a path through a file"),
        libc::ENOTDIR
    );
    symlink("dangling-target", m.join("dangle")).unwrap();
    let e = expect_errno(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m.join("dangle")),
        "O_EXCL on a dangling symlink",
    );
    assert_eq!(e, libc::EEXIST);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .open(m.join("moded"))
        .unwrap();
    let mode = f.metadata().unwrap().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "mode {mode:o} has bits beyond 0640");
    assert_eq!(mode & 0o600, 0o600, "owner rw of mode {mode:o}");
}

fn truncate(m: &mut MountGuard) {
    let p = m.join("t");
    let data = pattern(1, 10_000);
    fs::write(&p, &data).unwrap();
    let f = rw(&p);
    f.set_len(20_000).unwrap();
    let got = read_all(&p);
    assert_eq!(got.len(), 20_000);
    assert!(got[..10_000] == data[..], "data kept when growing");
    assert_zero(&got[10_000..], "grown tail");
    f.set_len(5000).unwrap();
    assert!(read_all(&p) == data[..5000], "data after shrinking to 5000");
    f.set_len(12_000).unwrap();
    let got = read_all(&p);
    assert!(got[..5000] == data[..5000]);
    assert_zero(&got[5000..], "re-grown range must not show the old bytes");
    // Partial frame: bytes past the new size inside the last frame must be zero later.
    f.write_all_at(&[0xffu8; 8192], 0).unwrap();
    f.set_len(4097).unwrap();
    f.set_len(8192).unwrap();
    let got = read_all(&p);
    assert!(got[..4097].iter().all(|b| *b == 0xff));
    assert_zero(
        &got[4097..],
        "bytes 4097..8192 after truncate to 4097 and back",
    );
    // Truncate through a path, to zero, then large.
    let c = sys::cpath(&p);
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::truncate(c.as_ptr(), 0) };
    assert_eq!(rc, 0, "truncate(path, 0)");
    assert_eq!(size(&p), 0);
    // SAFETY: as above.
    let rc = unsafe { libc::truncate(c.as_ptr(), 3 << 20) };
    assert_eq!(rc, 0, "truncate(path, 3 MiB)");
    let got = read_all(&p);
    assert_eq!(got.len(), 3 << 20);
    assert_zero(&got, "file truncated to 0 then to 3 MiB");
    let blocks = fs::metadata(&p).unwrap().blocks();
    assert!(
        blocks < 64,
        "growing by truncate should allocate (almost) nothing; st_blocks = {blocks}"
    );
    drop(f);
    // O_TRUNC after data, then short write.
    fs::write(&p, b"xy").unwrap();
    assert_eq!(read_all(&p), b"xy");
}

fn unlink(m: &mut MountGuard) {
    let p = m.join("u");
    fs::write(&p, b"bye").unwrap();
    fs::remove_file(&p).unwrap();
    assert_eq!(
        expect_errno(fs::metadata(&p), "stat after unlink"),
        libc::ENOENT
    );
    assert!(
        !fs::read_dir(m.path())
            .unwrap()
            .any(|e| e.unwrap().file_name() == "u")
    );
    // An open file outlives its name.
    let data = pattern(2, 300_000);
    fs::write(&p, &data).unwrap();
    let f = rw(&p);
    fs::remove_file(&p).unwrap();
    let mut got = vec![0u8; data.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == data, "read through an fd after unlink");
    f.write_all_at(b"still", 0).unwrap();
    assert_eq!(
        f.metadata().unwrap().nlink(),
        0,
        "fstat nlink of an unlinked open file"
    );
    fs::write(&p, b"new").unwrap();
    assert_eq!(
        read_all(&p),
        b"new",
        "a new file under the old name is independent"
    );
    let mut head = [0u8; 5];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"still");
    // An open directory outlives its last name too: renamed over, and removed (xfstests
    // generic/035).
    let (a, b) = (m.join("dir-a"), m.join("dir-b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let open_b = File::open(&b).unwrap();
    fs::rename(&a, &b).unwrap();
    let st = open_b
        .metadata()
        .unwrap_or_else(|e| panic!("fstat of a directory renamed over: {e}"));
    assert!(st.is_dir());
    assert_eq!(st.nlink(), 0, "fstat nlink of a directory renamed over");
    let open_a = File::open(&b).unwrap();
    fs::remove_dir(&b).unwrap();
    assert!(
        open_a.metadata().unwrap().is_dir(),
        "fstat of a removed open directory"
    );
    drop((open_a, open_b));
    drop(f);
    fs::create_dir(m.join("d")).unwrap();
    assert_eq!(
        expect_errno(fs::remove_file(m.join("d")), "unlink a dir"),
        libc::EISDIR
    );
    assert_eq!(
        expect_errno(fs::remove_file(m.join("missing")), "unlink a missing name"),
        libc::ENOENT
    );
}

fn mkdir_rmdir(m: &mut MountGuard) {
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    assert!(fs::metadata(&d).unwrap().is_dir());
    assert_eq!(nlink(&d), 2, "nlink of an empty dir");
    assert_eq!(
        expect_errno(fs::create_dir(&d), "mkdir an existing dir"),
        libc::EEXIST
    );
    fs::create_dir(d.join("e")).unwrap();
    assert_eq!(nlink(&d), 3, "nlink of a dir with one subdir");
    fs::write(d.join("f"), b"x").unwrap();
    assert_eq!(nlink(&d), 3, "a file does not add to the parent's nlink");
    assert_eq!(
        expect_errno(fs::remove_dir(&d), "rmdir a non-empty dir"),
        libc::ENOTEMPTY
    );
    assert_eq!(
        expect_errno(fs::remove_dir(d.join("f")), "rmdir a file"),
        libc::ENOTDIR
    );
    fs::remove_dir(d.join("e")).unwrap();
    assert_eq!(nlink(&d), 2, "nlink after rmdir of the subdir");
    fs::remove_file(d.join("f")).unwrap();
    fs::remove_dir(&d).unwrap();
    assert_eq!(
        expect_errno(fs::metadata(&d), "stat after rmdir"),
        libc::ENOENT
    );
    assert_eq!(
        expect_errno(fs::remove_dir(&d), "rmdir a missing dir"),
        libc::ENOENT
    );
    let deep: PathBuf = (0..20).map(|i| format!("level{i}")).collect();
    fs::create_dir_all(m.join(&deep)).unwrap();
    fs::write(m.join(&deep).join("leaf"), b"leaf").unwrap();
    assert_eq!(read_all(&m.join(&deep).join("leaf")), b"leaf");
    fs::remove_dir_all(m.join("level0")).unwrap();
    assert!(
        fs::read_dir(m.path()).unwrap().next().is_none(),
        "root empty again"
    );
    let mode = {
        fs::create_dir(&d).unwrap();
        set_perm(&d, 0o1777);
        fs::metadata(&d).unwrap().mode()
    };
    assert_eq!(mode & 0o7777, 0o1777, "sticky world-writable dir");
}

fn rename(m: &mut MountGuard) {
    let (a, b, c) = (m.join("a"), m.join("b"), m.join("c"));
    fs::write(&a, b"A").unwrap();
    let ino = fs::metadata(&a).unwrap().ino();
    fs::rename(&a, &b).unwrap();
    assert_eq!(
        expect_errno(fs::metadata(&a), "old name after rename"),
        libc::ENOENT
    );
    assert_eq!(read_all(&b), b"A");
    assert_eq!(
        fs::metadata(&b).unwrap().ino(),
        ino,
        "rename keeps the inode"
    );
    // Over an existing file; an fd on the replaced file still reads it.
    fs::write(&c, b"C").unwrap();
    let old_c = File::open(&c).unwrap();
    fs::rename(&b, &c).unwrap();
    assert_eq!(read_all(&c), b"A");
    assert_eq!(
        expect_errno(fs::metadata(&b), "source after rename over a file"),
        libc::ENOENT
    );
    let mut one = [0u8; 1];
    old_c.read_exact_at(&mut one, 0).unwrap();
    assert_eq!(&one, b"C", "replaced file readable through an open fd");
    assert_eq!(old_c.metadata().unwrap().nlink(), 0);
    drop(old_c);
    // Across directories.
    fs::create_dir(m.join("d1")).unwrap();
    fs::create_dir(m.join("d9")).unwrap();
    fs::rename(&c, m.join("d1/c")).unwrap();
    assert_eq!(read_all(&m.join("d1/c")), b"A");
    // Directory over an empty directory.
    fs::create_dir(m.join("d2")).unwrap();
    fs::rename(m.join("d1"), m.join("d2")).unwrap();
    assert_eq!(read_all(&m.join("d2/c")), b"A");
    assert_eq!(
        expect_errno(fs::metadata(m.join("d1")), "old dir after rename"),
        libc::ENOENT
    );
    // Directory onto a non-empty directory.
    fs::create_dir(m.join("d3")).unwrap();
    fs::write(m.join("d3/x"), b"x").unwrap();
    let e = expect_errno(
        fs::rename(m.join("d2"), m.join("d3")),
        "rename onto a non-empty dir",
    );
    assert!(
        e == libc::ENOTEMPTY || e == libc::EEXIST,
        "errno {e}, expected ENOTEMPTY"
    );
    assert_eq!(
        read_all(&m.join("d2/c")),
        b"A",
        "failed rename leaves the source alone"
    );
    // Type mismatches.
    fs::write(m.join("f"), b"f").unwrap();
    assert_eq!(
        expect_errno(fs::rename(m.join("f"), m.join("d3")), "file over a dir"),
        libc::EISDIR
    );
    assert_eq!(
        expect_errno(fs::rename(m.join("d3"), m.join("f")), "dir over a file"),
        libc::ENOTDIR
    );
    // A directory into its own subdirectory.
    fs::create_dir(m.join("d3/sub")).unwrap();
    assert_eq!(
        expect_errno(
            fs::rename(m.join("d3"), m.join("d3/sub/in")),
            "dir into itself"
        ),
        libc::EINVAL
    );
    // Moving a directory changes both parents' nlink.
    let (p1, p2) = (nlink(&m.join("d3")), nlink(&m.join("d9")));
    fs::rename(m.join("d3/sub"), m.join("d9/sub")).unwrap();
    assert_eq!(
        nlink(&m.join("d3")),
        p1 - 1,
        "old parent nlink after moving a dir out"
    );
    assert_eq!(
        nlink(&m.join("d9")),
        p2 + 1,
        "new parent nlink after moving a dir in"
    );
    // RENAME_NOREPLACE.
    fs::write(m.join("g"), b"g").unwrap();
    let e = expect_errno(
        sys::renameat2(&m.join("g"), &m.join("f"), libc::RENAME_NOREPLACE),
        "NOREPLACE onto a file",
    );
    assert_eq!(e, libc::EEXIST);
    assert_eq!(read_all(&m.join("f")), b"f");
    sys::renameat2(&m.join("g"), &m.join("g2"), libc::RENAME_NOREPLACE)
        .expect("NOREPLACE onto a new name");
    assert_eq!(read_all(&m.join("g2")), b"g");
    // RENAME_EXCHANGE: two files, then a file and a directory.
    sys::renameat2(&m.join("f"), &m.join("g2"), libc::RENAME_EXCHANGE).expect("EXCHANGE two files");
    assert_eq!(read_all(&m.join("f")), b"g");
    assert_eq!(read_all(&m.join("g2")), b"f");
    sys::renameat2(&m.join("f"), &m.join("d2"), libc::RENAME_EXCHANGE)
        .expect("EXCHANGE a file and a dir");
    assert!(fs::metadata(m.join("f")).unwrap().is_dir());
    assert_eq!(read_all(&m.join("f/c")), b"A");
    assert_eq!(read_all(&m.join("d2")), b"g");
    let e = expect_errno(
        sys::renameat2(&m.join("g2"), &m.join("none"), libc::RENAME_EXCHANGE),
        "EXCHANGE with a missing name",
    );
    assert_eq!(e, libc::ENOENT);
    // Renaming onto itself, and between two links of one file, changes nothing.
    fs::rename(m.join("g2"), m.join("g2")).unwrap();
    fs::hard_link(m.join("g2"), m.join("g3")).unwrap();
    fs::rename(m.join("g2"), m.join("g3")).unwrap();
    assert!(
        m.join("g2").exists() && m.join("g3").exists(),
        "rename between links of one inode is a no-op"
    );
    assert_eq!(nlink(&m.join("g2")), 2);
}

fn hard_links(m: &mut MountGuard) {
    let a = m.join("a");
    fs::write(&a, b"data").unwrap();
    fs::hard_link(&a, m.join("b")).unwrap();
    assert_eq!(
        (nlink(&a), nlink(&m.join("b"))),
        (2, 2),
        "nlink through both names after link"
    );
    assert_eq!(
        fs::metadata(&a).unwrap().ino(),
        fs::metadata(m.join("b")).unwrap().ino()
    );
    fs::create_dir(m.join("sub")).unwrap();
    fs::hard_link(m.join("b"), m.join("sub/c")).unwrap();
    for name in ["a", "b", "sub/c"] {
        assert_eq!(
            nlink(&m.join(name)),
            3,
            "nlink via {name} after the second link"
        );
    }
    rw(&m.join("b")).write_all_at(b"DATA", 0).unwrap();
    assert_eq!(
        read_all(&a),
        b"DATA",
        "write via one name, read via another"
    );
    fs::remove_file(m.join("b")).unwrap();
    for name in ["a", "sub/c"] {
        assert_eq!(
            nlink(&m.join(name)),
            2,
            "nlink via {name} after unlink of b"
        );
    }
    fs::rename(m.join("sub/c"), m.join("d")).unwrap();
    for name in ["a", "d"] {
        assert_eq!(
            nlink(&m.join(name)),
            2,
            "nlink via {name} after renaming a link"
        );
    }
    let held = File::open(&a).unwrap();
    fs::write(m.join("x"), b"x").unwrap();
    fs::rename(m.join("x"), m.join("d")).unwrap();
    assert_eq!(
        nlink(&a),
        1,
        "nlink after a rename replaced one of the names"
    );
    assert_eq!(
        held.metadata().unwrap().nlink(),
        1,
        "fstat nlink after the replace"
    );
    assert_eq!(nlink(&m.join("d")), 1);
    assert_eq!(read_all(&m.join("d")), b"x");
    fs::remove_file(&a).unwrap();
    assert_eq!(
        held.metadata().unwrap().nlink(),
        0,
        "fstat nlink after the last name is gone"
    );
    drop(held);
    fs::write(&a, b"again").unwrap();
    assert_eq!(
        expect_errno(fs::hard_link(&a, m.join("d")), "link onto an existing name"),
        libc::EEXIST
    );
    assert_eq!(
        expect_errno(fs::hard_link(m.join("sub"), m.join("s2")), "link a dir"),
        libc::EPERM
    );
    assert_eq!(
        expect_errno(
            fs::hard_link(m.join("none"), m.join("n2")),
            "link a missing file"
        ),
        libc::ENOENT
    );
    let ctime =
        fs::metadata(&a).unwrap().ctime_nsec() + fs::metadata(&a).unwrap().ctime() * 1_000_000_000;
    std::thread::sleep(Duration::from_millis(20));
    fs::hard_link(&a, m.join("a2")).unwrap();
    let meta = fs::metadata(&a).unwrap();
    assert!(
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec() > ctime,
        "link updates ctime"
    );
}

fn symlinks(m: &mut MountGuard) {
    let l = m.join("l1");
    symlink("target-file", &l).unwrap();
    assert_eq!(fs::read_link(&l).unwrap(), PathBuf::from("target-file"));
    let meta = fs::symlink_metadata(&l).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(
        meta.len(),
        "target-file".len() as u64,
        "symlink size is the target length"
    );
    assert_eq!(
        expect_errno(fs::metadata(&l), "stat a dangling symlink"),
        libc::ENOENT
    );
    fs::write(m.join("target-file"), b"through").unwrap();
    assert_eq!(read_all(&l), b"through");
    fs::create_dir(m.join("dir")).unwrap();
    fs::write(m.join("dir/child"), b"child").unwrap();
    symlink(m.join("dir"), m.join("abs")).unwrap();
    assert_eq!(
        read_all(&m.join("abs/child")),
        b"child",
        "traverse an absolute link to a dir"
    );
    symlink("../dir", m.join("dir/up")).unwrap();
    assert_eq!(
        read_all(&m.join("dir/up/child")),
        b"child",
        "traverse a relative link"
    );
    let long: String = (0..4000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    symlink(&long, m.join("long")).unwrap();
    assert_eq!(
        fs::read_link(m.join("long")).unwrap(),
        PathBuf::from(&long),
        "4000-byte target"
    );
    assert_eq!(
        expect_errno(symlink("x", &l), "symlink onto an existing name"),
        libc::EEXIST
    );
    assert_eq!(
        expect_errno(fs::read_link(m.join("target-file")), "readlink a file"),
        libc::EINVAL
    );
    sys::lchown(&l, 321, 654).unwrap();
    let meta = fs::symlink_metadata(&l).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (321, 654), "lchown on a symlink");
    assert_eq!(
        fs::metadata(m.join("target-file")).unwrap().uid(),
        0,
        "lchown leaves the target alone"
    );
    sys::utimensat(&l, ts(1_000_000_000, 5), ts(1_100_000_000, 7), true).unwrap();
    let meta = fs::symlink_metadata(&l).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_100_000_000, 7),
        "utimensat NOFOLLOW on a symlink"
    );
}

fn mknod_special(m: &mut MountGuard) {
    let fifo = m.join("fifo");
    sys::mknod(&fifo, libc::S_IFIFO | 0o644, 0).unwrap();
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    let pipe = sys::open(&fifo, libc::O_RDWR | libc::O_NONBLOCK, 0).unwrap();
    (&pipe).write_all(b"through the fifo").unwrap();
    let mut buf = [0u8; 16];
    std::io::Read::read_exact(&mut &pipe, &mut buf).unwrap();
    assert_eq!(&buf, b"through the fifo");
    drop(pipe);
    let chr = m.join("null");
    sys::mknod(&chr, libc::S_IFCHR | 0o600, sys::makedev(1, 3)).unwrap();
    let meta = fs::symlink_metadata(&chr).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), sys::makedev(1, 3), "rdev of a char device");
    assert_eq!(meta.mode() & 0o7777, 0o600);
    let blk = m.join("blk");
    sys::mknod(&blk, libc::S_IFBLK | 0o600, sys::makedev(7, 1)).unwrap();
    let meta = fs::symlink_metadata(&blk).unwrap();
    assert!(meta.file_type().is_block_device());
    assert_eq!(meta.rdev(), sys::makedev(7, 1), "rdev of a block device");
    let sock = m.join("sock");
    sys::mknod(&sock, libc::S_IFSOCK | 0o755, 0).unwrap();
    assert!(fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    let bound = m.join("bound.sock");
    let listener = std::os::unix::net::UnixListener::bind(&bound).unwrap();
    assert!(
        fs::symlink_metadata(&bound)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let mut client = std::os::unix::net::UnixStream::connect(&bound).unwrap();
    client.write_all(b"hi").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let mut two = [0u8; 2];
    std::io::Read::read_exact(&mut server, &mut two).unwrap();
    assert_eq!(&two, b"hi", "unix socket bound inside the mount");
    assert_eq!(
        expect_errno(
            sys::mknod(&chr, libc::S_IFCHR | 0o600, 0),
            "mknod onto an existing name"
        ),
        libc::EEXIST
    );
}

fn chmod_chown_utimens(m: &mut MountGuard) {
    let f = m.join("f");
    fs::write(&f, b"x").unwrap();
    for mode in [0o600, 0o4755, 0o2750, 0o644, 0o000, 0o7777] {
        set_perm(&f, mode);
        assert_eq!(
            fs::metadata(&f).unwrap().mode() & 0o7777,
            mode,
            "chmod {mode:o}"
        );
    }
    assert!(
        fs::metadata(&f).unwrap().is_file(),
        "chmod keeps the file type"
    );
    set_perm(&f, 0o644);
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    std::os::unix::fs::chown(&f, None, Some(99)).unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1234, 99),
        "chown -1 keeps the owner"
    );
    // chown of a setuid file clears setuid and setgid.
    set_perm(&f, 0o6755);
    std::os::unix::fs::chown(&f, Some(1), Some(1)).unwrap();
    assert_eq!(
        fs::metadata(&f).unwrap().mode() & 0o6000,
        0,
        "chown clears setuid/setgid"
    );
    // ctime moves on chmod.
    let before = fs::metadata(&f).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    set_perm(&f, 0o640);
    let after = fs::metadata(&f).unwrap();
    assert!(
        (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "chmod updates ctime"
    );
    // Nanosecond times, UTIME_OMIT, UTIME_NOW, before 1970.
    sys::utimensat(
        &f,
        ts(1_000_000_000, 123_456_789),
        ts(1_500_000_000, 987_654_321),
        false,
    )
    .unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.atime(), meta.atime_nsec()),
        (1_000_000_000, 123_456_789),
        "atime with ns"
    );
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_500_000_000, 987_654_321),
        "mtime with ns"
    );
    sys::utimensat(&f, ts(0, libc::UTIME_OMIT), ts(1_600_000_000, 1), false).unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.atime(), meta.atime_nsec()),
        (1_000_000_000, 123_456_789),
        "UTIME_OMIT keeps atime"
    );
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_600_000_000, 1));
    let t0 = now_secs();
    sys::utimensat(&f, ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW), false).unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert!(
        meta.mtime() >= t0 - 1 && meta.mtime() <= now_secs() + 1,
        "UTIME_NOW mtime {} vs now {t0}",
        meta.mtime()
    );
    assert_eq!(
        meta.atime(),
        1_000_000_000,
        "UTIME_OMIT atime beside UTIME_NOW"
    );
    sys::utimensat(&f, ts(-86_400, 5), ts(-1, 999_999_999), false).unwrap();
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.atime(), meta.atime_nsec()),
        (-86_400, 5),
        "atime before 1970"
    );
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (-1, 999_999_999),
        "mtime before 1970"
    );
    // Writing moves mtime.
    sys::utimensat(&f, ts(1_000_000_000, 0), ts(1_000_000_000, 0), false).unwrap();
    let mut w = OpenOptions::new().write(true).open(&f).unwrap();
    w.write_all(b"more").unwrap();
    w.sync_all().unwrap();
    drop(w);
    assert!(
        fs::metadata(&f).unwrap().mtime() >= t0 - 1,
        "write updates mtime"
    );
    // Directories too.
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(42), Some(43)).unwrap();
    set_perm(&d, 0o2775);
    sys::utimensat(&d, ts(1_234_567_890, 1), ts(1_234_567_891, 2), false).unwrap();
    let meta = fs::metadata(&d).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (42, 43, 0o2775)
    );
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_234_567_891, 2));
}

fn xattrs(m: &mut MountGuard) {
    let f = m.join("f");
    fs::write(&f, b"x").unwrap();
    assert_eq!(
        sys::listxattr(&f).unwrap(),
        Vec::<String>::new(),
        "no xattrs on a new file"
    );
    sys::setxattr(&f, "user.a", b"1", 0).unwrap();
    assert_eq!(sys::getxattr(&f, "user.a").unwrap(), b"1");
    assert_eq!(sys::listxattr(&f).unwrap(), ["user.a"]);
    let e = expect_errno(
        sys::setxattr(&f, "user.a", b"2", libc::XATTR_CREATE),
        "XATTR_CREATE on an existing name",
    );
    assert_eq!(e, libc::EEXIST);
    let e = expect_errno(
        sys::setxattr(&f, "user.b", b"2", libc::XATTR_REPLACE),
        "XATTR_REPLACE on a missing name",
    );
    assert_eq!(e, libc::ENODATA);
    sys::setxattr(&f, "user.a", b"replaced", libc::XATTR_REPLACE).unwrap();
    assert_eq!(sys::getxattr(&f, "user.a").unwrap(), b"replaced");
    sys::setxattr(&f, "user.b", b"new", libc::XATTR_CREATE).unwrap();
    assert_eq!(
        expect_errno(sys::getxattr(&f, "user.missing"), "get a missing xattr"),
        libc::ENODATA
    );
    assert_eq!(
        expect_errno(
            sys::removexattr(&f, "user.missing"),
            "remove a missing xattr"
        ),
        libc::ENODATA
    );
    let big = pattern(9, 4000);
    sys::setxattr(&f, "user.big", &big, 0).unwrap();
    assert_eq!(
        sys::getxattr_len(&f, "user.big", 0).unwrap(),
        4000,
        "size query"
    );
    assert_eq!(
        expect_errno(
            sys::getxattr_len(&f, "user.big", 10),
            "get into a small buffer"
        ),
        libc::ERANGE
    );
    assert_eq!(sys::getxattr(&f, "user.big").unwrap(), big);
    let list_len = sys::listxattr_len(&f, 0).unwrap();
    assert_eq!(
        list_len,
        "user.a\0user.b\0user.big\0".len(),
        "list size query"
    );
    assert_eq!(
        expect_errno(sys::listxattr_len(&f, 3), "list into a small buffer"),
        libc::ERANGE
    );
    sys::setxattr(&f, "user.empty", b"", 0).unwrap();
    assert_eq!(sys::getxattr(&f, "user.empty").unwrap(), b"", "empty value");
    sys::setxattr(&f, "user.bin", b"\0\x01\xff\0", 0).unwrap();
    assert_eq!(
        sys::getxattr(&f, "user.bin").unwrap(),
        b"\0\x01\xff\0",
        "binary value"
    );
    sys::removexattr(&f, "user.a").unwrap();
    assert_eq!(
        sys::listxattr(&f).unwrap(),
        ["user.b", "user.big", "user.bin", "user.empty"]
    );
    sys::setxattr(&f, "trusted.t", b"root only", 0).unwrap();
    assert_eq!(sys::getxattr(&f, "trusted.t").unwrap(), b"root only");
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    for i in 0..50 {
        sys::setxattr(&d, &format!("user.n{i:02}"), format!("v{i}").as_bytes(), 0).unwrap();
    }
    let names = sys::listxattr(&d).unwrap();
    assert_eq!(names.len(), 50, "50 xattrs on a dir");
    assert_eq!(sys::getxattr(&d, "user.n42").unwrap(), b"v42");
    let l = m.join("l");
    symlink("f", &l).unwrap();
    sys::setxattr(&l, "trusted.link", b"on the link", 0).unwrap();
    assert_eq!(sys::getxattr(&l, "trusted.link").unwrap(), b"on the link");
    assert_eq!(
        expect_errno(
            sys::getxattr(&f, "trusted.link"),
            "link xattr is not on the target"
        ),
        libc::ENODATA
    );
}

fn make_names(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("file-{i:04}-{}", "x".repeat(i % 200)))
        .collect()
}

fn readdir_all_once(m: &mut MountGuard) {
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    let names = make_names(1000);
    for n in &names {
        File::create(d.join(n)).unwrap();
    }
    for i in 0..10 {
        fs::create_dir(d.join(format!("sub{i}"))).unwrap();
    }
    symlink("file-0000-", d.join("link")).unwrap();
    let entries = sys::DirStream::open(&d).unwrap().collect_all().unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (name, kind) in &entries {
        let name = String::from_utf8(name.clone()).unwrap();
        let expect_kind = if name == "." || name == ".." || name.starts_with("sub") {
            libc::DT_DIR
        } else if name == "link" {
            libc::DT_LNK
        } else {
            libc::DT_REG
        };
        assert!(
            *kind == expect_kind || *kind == libc::DT_UNKNOWN,
            "d_type {kind} of {name}"
        );
        *counts.entry(name).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dupes.is_empty(),
        "entries returned more than once: {dupes:?}"
    );
    assert!(
        counts.contains_key(".") && counts.contains_key(".."),
        "missing . or .."
    );
    for n in &names {
        assert!(counts.contains_key(n), "missing {n}");
    }
    assert_eq!(entries.len(), 1000 + 10 + 1 + 2);
    assert_eq!(
        fs::read_dir(&d).unwrap().count(),
        1011,
        "std read_dir count"
    );
    let empty = sys::DirStream::open(&d.join("sub0"))
        .unwrap()
        .collect_all()
        .unwrap();
    let mut names_only: Vec<Vec<u8>> = empty.into_iter().map(|(n, _)| n).collect();
    names_only.sort();
    assert_eq!(
        names_only,
        [b".".to_vec(), b"..".to_vec()],
        "an empty dir lists . and .."
    );
}

fn readdir_stable_during_changes(m: &mut MountGuard) {
    let d = m.join("d");
    fs::create_dir(&d).unwrap();
    let originals: BTreeSet<String> = (0..400)
        .map(|i| format!("orig-{i:03}-{}", "y".repeat(i % 150)))
        .collect();
    for n in &originals {
        File::create(d.join(n)).unwrap();
    }
    let mut stream = sys::DirStream::open(&d).unwrap();
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 60 {
        let (name, _) = stream.next_entry().unwrap().expect("directory ended early");
        seen.push(String::from_utf8(name).unwrap());
    }
    let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
    let removed: BTreeSet<String> = originals
        .iter()
        .filter(|n| !seen_set.contains(*n))
        .take(120)
        .cloned()
        .collect();
    for n in &removed {
        fs::remove_file(d.join(n)).unwrap();
    }
    let added: BTreeSet<String> = (0..120).map(|i| format!("new-{i:03}")).collect();
    for n in &added {
        File::create(d.join(n)).unwrap();
    }
    while let Some((name, _)) = stream.next_entry().unwrap() {
        seen.push(String::from_utf8(name).unwrap());
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &seen {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dupes.is_empty(),
        "entries returned twice while the dir changed: {dupes:?}"
    );
    for n in originals.difference(&removed) {
        assert!(
            counts.contains_key(n.as_str()),
            "{n} (never touched) missing from the listing"
        );
    }
    for n in counts.keys() {
        let known = *n == "." || *n == ".." || originals.contains(*n) || added.contains(*n);
        assert!(known, "unknown name {n:?} in the listing");
    }
    drop(stream);
    let now: BTreeSet<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let expect: BTreeSet<String> = originals
        .difference(&removed)
        .cloned()
        .chain(added.iter().cloned())
        .collect();
    assert_eq!(now, expect, "a fresh listing after the changes");
}

fn free_bytes(path: &Path) -> u64 {
    let st = sys::statvfs(path).unwrap();
    st.f_bfree * st.f_frsize
}

fn statfs_changes(m: &mut MountGuard) {
    let st = sys::statvfs(m.path()).unwrap();
    assert!(
        st.f_bsize > 0 && st.f_frsize > 0 && st.f_blocks > 0,
        "statvfs sizes: {} {} {}",
        st.f_bsize,
        st.f_frsize,
        st.f_blocks
    );
    assert!(st.f_bfree <= st.f_blocks && st.f_bavail <= st.f_blocks);
    assert_eq!(st.f_namemax, 255, "f_namemax");
    let total = st.f_blocks * st.f_frsize;
    assert!(
        total > 200 << 20 && total <= pfnfs_tests::POOL_BYTES,
        "total {total} for a 256 MiB pool"
    );
    let before = free_bytes(m.path());
    let p = m.join("big");
    let mut f = File::create(&p).unwrap();
    f.write_all(&pattern(5, 16 * MIB)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let after = free_bytes(m.path());
    assert!(
        before >= after + (15 * MIB) as u64,
        "free space {before} -> {after} after writing 16 MiB"
    );
    fs::remove_file(&p).unwrap();
    let mut back = free_bytes(m.path());
    for _ in 0..100 {
        if back + (MIB as u64) >= before {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        back = free_bytes(m.path());
    }
    assert!(
        back + (MIB as u64) >= before,
        "free space {back} after unlink, {before} before writing"
    );
}

fn fallocate_modes(m: &mut MountGuard) {
    let p = m.join("fa");
    let f = rw(&File::create(&p).map(|_| p.clone()).unwrap());
    sys::fallocate(&f, 0, 0, MIB as i64).expect("fallocate mode 0");
    let meta = f.metadata().unwrap();
    assert_eq!(meta.len(), MIB as u64, "mode 0 extends the size");
    assert!(
        meta.blocks() * 512 >= MIB as u64,
        "mode 0 allocates: {} blocks",
        meta.blocks()
    );
    assert_zero(&read_all(&p), "fallocated range");
    sys::fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, MIB as i64, MIB as i64)
        .expect("fallocate KEEP_SIZE");
    let meta = f.metadata().unwrap();
    assert_eq!(meta.len(), MIB as u64, "KEEP_SIZE keeps the size");
    assert!(
        meta.blocks() * 512 >= 2 * MIB as u64,
        "KEEP_SIZE allocates past EOF: {} blocks",
        meta.blocks()
    );
    let mut expect = pattern(4, 2 * MIB);
    f.write_all_at(&expect, 0).unwrap();
    f.sync_all().unwrap();
    let blocks = f.metadata().unwrap().blocks();
    sys::fallocate(
        &f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        4096,
        8192,
    )
    .expect("PUNCH_HOLE");
    expect[4096..12_288].fill(0);
    assert_eq!(
        f.metadata().unwrap().len(),
        2 * MIB as u64,
        "punch keeps the size"
    );
    assert!(
        read_all(&p) == expect,
        "punched range reads as zeros, the rest intact"
    );
    assert!(
        f.metadata().unwrap().blocks() <= blocks - 16,
        "punching 8 KiB frees blocks"
    );
    sys::fallocate(
        &f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        100,
        50,
    )
    .expect("unaligned PUNCH_HOLE");
    expect[100..150].fill(0);
    assert!(
        read_all(&p) == expect,
        "unaligned punch zeroes exactly 100..150"
    );
    let e = expect_errno(
        sys::fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096),
        "PUNCH_HOLE without KEEP_SIZE",
    );
    assert_eq!(e, libc::EOPNOTSUPP);
    sys::fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 10_000, 20_000).expect("ZERO_RANGE");
    expect[10_000..30_000].fill(0);
    assert_eq!(f.metadata().unwrap().len(), 2 * MIB as u64);
    assert!(read_all(&p) == expect, "ZERO_RANGE zeroes 10000..30000");
    sys::fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 2 * MIB as i64, 4096)
        .expect("ZERO_RANGE past EOF");
    expect.resize(2 * MIB + 4096, 0);
    assert_eq!(
        f.metadata().unwrap().len(),
        expect.len() as u64,
        "ZERO_RANGE without KEEP_SIZE extends"
    );
    sys::fallocate(&f, 0, 1000, 5000).expect("fallocate over data");
    assert!(
        read_all(&p) == expect,
        "fallocate over written data keeps it"
    );
}

fn seek_data_hole(m: &mut MountGuard) {
    let p = m.join("sparse");
    let f = rw(&File::create(&p).map(|_| p.clone()).unwrap());
    f.write_all_at(&[1u8; 4096], 0).unwrap();
    f.write_all_at(&[2u8; 4096], MIB as u64).unwrap();
    f.set_len(2 * MIB as u64).unwrap();
    f.sync_all().unwrap();
    assert_eq!(
        sys::lseek(&f, 0, libc::SEEK_DATA).unwrap(),
        0,
        "SEEK_DATA at 0"
    );
    let hole = sys::lseek(&f, 0, libc::SEEK_HOLE).unwrap();
    if m.mode() == pfnfs_tests::Mode::Buffered {
        // Buffered mode leaves SEEK_DATA/SEEK_HOLE to the kernel (the daemon cannot see dirty
        // pages): the whole file is data, the only hole is at EOF, as POSIX allows.
        assert_eq!(hole, 2 * MIB as i64, "buffered SEEK_HOLE from 0");
        assert_eq!(
            expect_errno(
                sys::lseek(&f, 2 * MIB as i64, libc::SEEK_DATA),
                "SEEK_DATA at EOF"
            ),
            libc::ENXIO
        );
        return;
    }
    assert!(
        (4096..=MIB as i64).contains(&hole),
        "SEEK_HOLE from 0 = {hole}, expected the hole after 4 KiB"
    );
    let data = sys::lseek(&f, hole, libc::SEEK_DATA).unwrap();
    assert!(
        data >= hole && data <= MIB as i64,
        "SEEK_DATA from {hole} = {data}, expected <= 1 MiB"
    );
    let hole2 = sys::lseek(&f, MIB as i64, libc::SEEK_HOLE).unwrap();
    assert!(
        hole2 >= MIB as i64 + 4096 && hole2 <= 2 * MIB as i64,
        "SEEK_HOLE from 1 MiB = {hole2}"
    );
    if hole2 < 2 * MIB as i64 {
        let e = expect_errno(
            sys::lseek(&f, hole2, libc::SEEK_DATA),
            "SEEK_DATA in the trailing hole",
        );
        assert_eq!(e, libc::ENXIO);
    }
    assert_eq!(
        expect_errno(
            sys::lseek(&f, 2 * MIB as i64, libc::SEEK_DATA),
            "SEEK_DATA at EOF"
        ),
        libc::ENXIO
    );
    assert_eq!(
        expect_errno(
            sys::lseek(&f, 2 * MIB as i64, libc::SEEK_HOLE),
            "SEEK_HOLE at EOF"
        ),
        libc::ENXIO
    );
    let q = m.join("empty-sparse");
    let g = rw(&File::create(&q).map(|_| q.clone()).unwrap());
    g.set_len(MIB as u64).unwrap();
    assert_eq!(
        expect_errno(
            sys::lseek(&g, 0, libc::SEEK_DATA),
            "SEEK_DATA in an all-hole file"
        ),
        libc::ENXIO
    );
    assert_eq!(
        sys::lseek(&g, 0, libc::SEEK_HOLE).unwrap(),
        0,
        "SEEK_HOLE in an all-hole file"
    );
}

fn copy_file_range(m: &mut MountGuard) {
    let src = m.join("src");
    let data = pattern(8, 3 * MIB + 17);
    fs::write(&src, &data).unwrap();
    let s = File::open(&src).unwrap();
    let dst = m.join("dst");
    let d = rw(&File::create(&dst).map(|_| dst.clone()).unwrap());
    let mut done = 0;
    while done < data.len() {
        let n = sys::copy_file_range(&s, done as i64, &d, done as i64, data.len() - done).unwrap();
        assert!(n > 0, "copy_file_range returned 0 at {done}");
        done += n;
    }
    assert!(read_all(&dst) == data, "whole-file copy");
    let dst2 = m.join("dst2");
    let d2 = rw(&File::create(&dst2).map(|_| dst2.clone()).unwrap());
    let n = sys::copy_file_range(&s, 4097, &d2, 10, 100_000).unwrap();
    assert_eq!(n, 100_000);
    let got = read_all(&dst2);
    assert_zero(&got[..10], "bytes before the copied range");
    assert!(got[10..] == data[4097..104_097], "unaligned range copy");
    assert_eq!(
        sys::copy_file_range(&s, data.len() as i64, &d2, 0, 100).unwrap(),
        0,
        "copy from EOF"
    );
    let n = sys::copy_file_range(&s, data.len() as i64 - 5, &d2, 0, 100).unwrap();
    assert_eq!(n, 5, "copy crossing EOF is short");
    let same = rw(&src);
    let n = sys::copy_file_range(&same, 0, &same, data.len() as i64, 4096).unwrap();
    assert_eq!(n, 4096);
    let got = read_all(&src);
    assert!(got[data.len()..] == data[..4096], "copy within one file");
}

fn name_lengths(m: &mut MountGuard) {
    let n255 = "a".repeat(255);
    let n256 = "a".repeat(256);
    File::create(m.join(&n255)).expect("create a 255-byte name");
    assert!(fs::metadata(m.join(&n255)).unwrap().is_file());
    assert!(
        fs::read_dir(m.path())
            .unwrap()
            .any(|e| e.unwrap().file_name() == n255.as_str())
    );
    fs::rename(m.join(&n255), m.join("b".repeat(255))).expect("rename to a 255-byte name");
    fs::create_dir(m.join("c".repeat(255))).expect("mkdir a 255-byte name");
    symlink("x", m.join("d".repeat(255))).expect("symlink a 255-byte name");
    fs::hard_link(m.join("b".repeat(255)), m.join("e".repeat(255))).expect("link a 255-byte name");
    let utf8_254 = "é".repeat(127);
    File::create(m.join(&utf8_254)).expect("create a 254-byte UTF-8 name");
    let long = libc::ENAMETOOLONG;
    assert_eq!(
        expect_errno(File::create(m.join(&n256)), "create 256"),
        long
    );
    assert_eq!(
        expect_errno(fs::create_dir(m.join(&n256)), "mkdir 256"),
        long
    );
    assert_eq!(
        expect_errno(symlink("x", m.join(&n256)), "symlink 256"),
        long
    );
    assert_eq!(
        expect_errno(
            fs::hard_link(m.join("b".repeat(255)), m.join(&n256)),
            "link 256"
        ),
        long
    );
    assert_eq!(
        expect_errno(
            fs::rename(m.join("b".repeat(255)), m.join(&n256)),
            "rename to 256"
        ),
        long
    );
    assert_eq!(
        expect_errno(
            sys::mknod(&m.join(&n256), libc::S_IFIFO | 0o644, 0),
            "mknod 256"
        ),
        long
    );
    assert_eq!(
        expect_errno(
            File::create(m.join("é".repeat(128))),
            "create a 256-byte UTF-8 name"
        ),
        long
    );
    assert_eq!(expect_errno(fs::metadata(m.join(&n256)), "stat 256"), long);
}

fn large_sparse_offsets(m: &mut MountGuard) {
    let p = m.join("sparse");
    let f = rw(&File::create(&p).map(|_| p.clone()).unwrap());
    let tib: u64 = 1 << 40;
    f.write_all_at(b"end", tib).unwrap();
    assert_eq!(f.metadata().unwrap().len(), tib + 3);
    let mut b = [0u8; 3];
    f.read_exact_at(&mut b, tib).unwrap();
    assert_eq!(&b, b"end");
    let mut zeros = vec![0xaau8; 8192];
    f.read_exact_at(&mut zeros, tib / 2).unwrap();
    assert_zero(&zeros, "hole at 512 GiB");
    f.read_exact_at(&mut zeros[..4096], tib - 4093).unwrap();
    assert_zero(&zeros[..4093], "hole just before the data");
    let blocks = f.metadata().unwrap().blocks();
    assert!(
        blocks * 512 <= MIB as u64,
        "3 bytes at 1 TiB should allocate little; st_blocks = {blocks}"
    );
    let far: u64 = 1 << 46;
    f.write_all_at(b"far", far).unwrap();
    f.read_exact_at(&mut b, far).unwrap();
    assert_eq!(&b, b"far");
    f.set_len(1 << 50).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 50);
    f.read_exact_at(&mut b, far).unwrap();
    assert_eq!(&b, b"far", "data kept after growing to 1 PiB");
    // Near the largest offset: an error is fine, a dead daemon is not.
    match f.write_all_at(b"max", i64::MAX as u64 - 10) {
        Ok(()) => {
            f.read_exact_at(&mut b, i64::MAX as u64 - 10).unwrap();
            assert_eq!(&b, b"max");
        }
        Err(e) => assert!(
            [libc::EFBIG, libc::EINVAL, libc::ENOSPC, libc::EOVERFLOW].contains(&errno(&e)),
            "write near i64::MAX: {e}"
        ),
    }
    f.set_len(10).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 10);
    assert_zero(&read_all(&p), "first 10 bytes");
    assert!(
        fs::metadata(m.path()).unwrap().is_dir(),
        "daemon still answers"
    );
}

/// Builds a tree outside the mount for the shell-tool tests.
fn build_source_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/sub/deeper")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("small.txt"), b"hello pfnfs\n").unwrap();
    fs::write(root.join("dir/big.bin"), pattern(11, 3 * MIB + 5)).unwrap();
    fs::write(root.join("dir/sub/deeper/leaf"), pattern(12, 70_000)).unwrap();
    fs::hard_link(root.join("small.txt"), root.join("dir/small-link")).unwrap();
    symlink("../small.txt", root.join("dir/rel-link")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    set_perm(&root.join("dir/big.bin"), 0o640);
    set_perm(&root.join("dir/sub"), 0o750);
    std::os::unix::fs::chown(root.join("dir/sub/deeper/leaf"), Some(1234), Some(5678)).unwrap();
    sys::setxattr(&root.join("small.txt"), "user.origin", b"shell-tools", 0).unwrap();
    let files = ["empty", "small.txt", "dir/big.bin", "dir/sub/deeper/leaf"];
    for (i, f) in files.iter().enumerate() {
        sys::utimensat(
            &root.join(f),
            ts(1_400_000_000 + i as i64, 111_111_111 * i as i64),
            ts(1_500_000_000 + i as i64, 123_456_789),
            false,
        )
        .unwrap();
    }
    sys::utimensat(
        &root.join("dir/rel-link"),
        ts(1_300_000_000, 0),
        ts(1_300_000_001, 0),
        true,
    )
    .unwrap();
    for d in ["dir/sub/deeper", "dir/sub", "dir"] {
        sys::utimensat(
            &root.join(d),
            ts(1_200_000_000, 0),
            ts(1_200_000_001, 42),
            false,
        )
        .unwrap();
    }
}

fn content_snapshot(root: &Path) -> BTreeMap<PathBuf, pfnfs_tests::EntryInfo> {
    snapshot(
        root,
        SnapshotOptions {
            contents: true,
            atime: false,
            ctime: false,
        },
    )
}

fn assert_same_tree(a: &Path, b: &Path, what: &str) {
    let diffs = diff_snapshots(&content_snapshot(a), &content_snapshot(b));
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

fn shell_tools(m: &mut MountGuard) {
    let scratch = m.scratch();
    let src = scratch.join("src");
    build_source_tree(&src);
    let mnt = m.path().display().to_string();
    let s = src.display().to_string();
    let sc = scratch.display().to_string();
    sh(&format!("cp -a '{s}' '{mnt}/copy'"));
    assert_same_tree(&src, &m.join("copy"), "cp -a into the mount");
    sh(&format!("mv '{mnt}/copy' '{mnt}/moved'"));
    assert_same_tree(&src, &m.join("moved"), "after mv");
    sh(&format!(
        "ln '{mnt}/moved/dir/big.bin' '{mnt}/hard' && ln -s moved/small.txt '{mnt}/soft'"
    ));
    assert_eq!(read_all(&m.join("soft")), b"hello pfnfs\n");
    assert_eq!(nlink(&m.join("hard")), 2);
    assert_eq!(sh(&format!("cat '{mnt}/soft'")), "hello pfnfs\n");
    sh(&format!("rm '{mnt}/hard' '{mnt}/soft'"));
    sh(&format!(
        "tar --format=posix --xattrs --xattrs-include='*' -C '{mnt}' -cf '{sc}/t.tar' moved && \
         mkdir '{mnt}/untar' && tar --xattrs --xattrs-include='*' -C '{mnt}/untar' -xpf '{sc}/t.tar'"
    ));
    assert_same_tree(
        &src,
        &m.join("untar/moved"),
        "tar c/x round trip inside the mount",
    );
    sh(&format!(
        "mkdir '{sc}/back' && tar --format=posix --xattrs --xattrs-include='*' -C '{mnt}/untar' -cf - moved | \
         tar --xattrs --xattrs-include='*' -C '{sc}/back' -xpf -"
    ));
    assert_same_tree(&src, &scratch.join("back/moved"), "tar out of the mount");
    sh(&format!(
        "dd if=/dev/urandom of='{sc}/rand' bs=1M count=4 status=none && \
         dd if='{sc}/rand' of='{mnt}/dd.bin' bs=1M oflag=direct status=none && \
         cmp '{sc}/rand' '{mnt}/dd.bin' && \
         dd if='{mnt}/dd.bin' of='{sc}/rand.back' bs=64k iflag=direct status=none && \
         cmp '{sc}/rand' '{sc}/rand.back' && \
         dd if=/dev/zero of='{mnt}/dd.bin' bs=4k seek=3 count=1 conv=notrunc oflag=direct status=none && \
         dd if=/dev/zero of='{sc}/rand' bs=4k seek=3 count=1 conv=notrunc status=none && \
         cmp '{sc}/rand' '{mnt}/dd.bin'"
    ));
    assert_eq!(
        sh(&format!("du -sb '{mnt}/moved/small.txt' | cut -f1")).trim(),
        "12"
    );
    sh(&format!(
        "rm -rf '{mnt}/moved' '{mnt}/untar' '{mnt}/dd.bin'"
    ));
    assert!(
        fs::read_dir(m.path()).unwrap().next().is_none(),
        "rm -rf leaves the root empty"
    );
}

fn mmap_shared(m: &mut MountGuard) {
    let p = m.join("mapped");
    let data = pattern(13, 3 * 4096);
    fs::write(&p, &data).unwrap();
    let f = rw(&p);
    let len = data.len();
    // SAFETY: mapping an open file; the mapping is only used within this block.
    unsafe {
        use std::os::fd::AsRawFd;
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "mmap MAP_SHARED: {}",
            std::io::Error::last_os_error()
        );
        let slice = std::slice::from_raw_parts_mut(addr as *mut u8, len);
        assert!(slice[..] == data[..], "mapped contents");
        slice[5000..5005].copy_from_slice(b"MMAP!");
        assert_eq!(libc::msync(addr, len, libc::MS_SYNC), 0, "msync");
        assert_eq!(libc::munmap(addr, len), 0);
    }
    let mut expect = data.clone();
    expect[5000..5005].copy_from_slice(b"MMAP!");
    assert!(
        read_all(&p) == expect,
        "stores through a shared mapping reach the file"
    );
    f.write_all_at(b"WRITE", 100).unwrap();
    // SAFETY: as above, read-only.
    unsafe {
        use std::os::fd::AsRawFd;
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        let slice = std::slice::from_raw_parts(addr as *const u8, len);
        assert_eq!(
            &slice[100..105],
            b"WRITE",
            "a write is visible in a new mapping"
        );
        libc::munmap(addr, len);
    }
}

/// Builds a tree with every kind of object inside the mount; returns the expected contents.
fn build_rich_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut put = |rel: &str, data: Vec<u8>| {
        fs::write(root.join(rel), &data).unwrap();
        files.insert(PathBuf::from(rel), data);
    };
    fs::create_dir_all(root.join("a/b/c/d")).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::create_dir(root.join("private")).unwrap();
    fs::create_dir(root.join("many")).unwrap();
    put("empty", Vec::new());
    put("small", b"small file\n".to_vec());
    put("a/b/big", pattern(21, 3 * MIB + 333));
    put("a/b/c/d/deep", pattern(22, 5000));
    for i in 0..300 {
        put(
            &format!("many/entry-{i:03}"),
            format!("entry {i}").into_bytes(),
        );
    }
    let mut sparse = vec![0u8; 8 * MIB];
    sparse[..4096].copy_from_slice(&pattern(23, 4096));
    sparse[5 * MIB..5 * MIB + 10_000].copy_from_slice(&pattern(24, 10_000));
    {
        let f = File::create(root.join("sparse")).unwrap();
        f.write_all_at(&sparse[..4096], 0).unwrap();
        f.write_all_at(&sparse[5 * MIB..5 * MIB + 10_000], 5 * MIB as u64)
            .unwrap();
        f.set_len(8 * MIB as u64).unwrap();
    }
    files.insert(PathBuf::from("sparse"), sparse);
    let mut truncated = pattern(25, 100_000);
    fs::write(root.join("truncated"), &truncated).unwrap();
    rw(&root.join("truncated")).set_len(30_001).unwrap();
    truncated.truncate(30_001);
    files.insert(PathBuf::from("truncated"), truncated);
    let mut punched = pattern(26, 64 * 1024);
    fs::write(root.join("punched"), &punched).unwrap();
    sys::fallocate(
        &rw(&root.join("punched")),
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        8192,
        16_384,
    )
    .unwrap();
    punched[8192..24_576].fill(0);
    files.insert(PathBuf::from("punched"), punched);
    let mut appended = b"line 1\n".to_vec();
    fs::write(root.join("appended"), &appended).unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(root.join("appended"))
        .unwrap();
    f.write_all(b"line 2\n").unwrap();
    appended.extend_from_slice(b"line 2\n");
    drop(f);
    files.insert(PathBuf::from("appended"), appended);
    // Hard links across directories.
    fs::hard_link(root.join("small"), root.join("a/small-2")).unwrap();
    fs::hard_link(root.join("small"), root.join("a/b/c/small-3")).unwrap();
    files.insert(PathBuf::from("a/small-2"), b"small file\n".to_vec());
    files.insert(PathBuf::from("a/b/c/small-3"), b"small file\n".to_vec());
    // Symlinks.
    symlink("a/b/big", root.join("rel-link")).unwrap();
    symlink(root.join("a/b"), root.join("abs-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    symlink("x".repeat(2000), root.join("long-link")).unwrap();
    // Special files.
    sys::mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
    sys::mknod(&root.join("chr"), libc::S_IFCHR | 0o600, sys::makedev(1, 3)).unwrap();
    sys::mknod(&root.join("blk"), libc::S_IFBLK | 0o660, sys::makedev(7, 1)).unwrap();
    sys::mknod(&root.join("sock"), libc::S_IFSOCK | 0o755, 0).unwrap();
    // Renames, a replaced file, an exchange, an unlinked file.
    fs::write(root.join("before-rename"), b"renamed").unwrap();
    fs::rename(root.join("before-rename"), root.join("a/after-rename")).unwrap();
    files.insert(PathBuf::from("a/after-rename"), b"renamed".to_vec());
    fs::write(root.join("victim"), b"old").unwrap();
    fs::write(root.join("replacer"), b"new").unwrap();
    fs::rename(root.join("replacer"), root.join("victim")).unwrap();
    files.insert(PathBuf::from("victim"), b"new".to_vec());
    fs::write(root.join("x1"), b"one").unwrap();
    fs::write(root.join("x2"), b"two").unwrap();
    sys::renameat2(&root.join("x1"), &root.join("x2"), libc::RENAME_EXCHANGE).unwrap();
    files.insert(PathBuf::from("x1"), b"two".to_vec());
    files.insert(PathBuf::from("x2"), b"one".to_vec());
    fs::write(root.join("gone"), b"gone").unwrap();
    fs::remove_file(root.join("gone")).unwrap();
    fs::create_dir(root.join("gone-dir")).unwrap();
    fs::remove_dir(root.join("gone-dir")).unwrap();
    // Owners and modes (chown before chmod: chown clears setuid).
    std::os::unix::fs::chown(root.join("a/b/big"), Some(1234), Some(5678)).unwrap();
    sys::lchown(&root.join("rel-link"), 4321, 8765).unwrap();
    std::os::unix::fs::chown(root.join("a/b"), Some(42), Some(43)).unwrap();
    set_perm(&root.join("small"), 0o4755);
    set_perm(&root.join("a/b/big"), 0o640);
    set_perm(&root.join("sticky"), 0o1777);
    set_perm(&root.join("private"), 0o700);
    // Extended attributes.
    sys::setxattr(&root.join("small"), "user.note", b"persist me", 0).unwrap();
    sys::setxattr(&root.join("small"), "user.empty", b"", 0).unwrap();
    sys::setxattr(&root.join("a/b/big"), "user.bin", &pattern(27, 3000), 0).unwrap();
    sys::setxattr(&root.join("a"), "user.dir", b"on a dir", 0).unwrap();
    sys::setxattr(&root.join("rel-link"), "trusted.link", b"on a link", 0).unwrap();
    // Times last (directory times change while entries are added), deepest first.
    let stamped = ["small", "a/b/big", "sparse", "empty", "fifo", "chr"];
    for (i, f) in stamped.iter().enumerate() {
        let i = i as i64;
        sys::utimensat(
            &root.join(f),
            ts(1_000_000_000 + i, 100 + i),
            ts(1_100_000_000 + i, 999_999_000 + i),
            false,
        )
        .unwrap();
    }
    sys::utimensat(
        &root.join("dangling"),
        ts(900_000_000, 1),
        ts(900_000_001, 2),
        true,
    )
    .unwrap();
    for d in ["a/b/c/d", "a/b/c", "a/b", "a", "private"] {
        sys::utimensat(
            &root.join(d),
            ts(1_200_000_000, 3),
            ts(1_200_000_001, 4),
            false,
        )
        .unwrap();
    }
    files
}

fn check_contents(root: &Path, files: &BTreeMap<PathBuf, Vec<u8>>, when: &str) {
    for (rel, data) in files {
        let got = read_all(&root.join(rel));
        if got != *data {
            let at = got
                .iter()
                .zip(data.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(data.len()));
            panic!(
                "{when}: {} differs: {} bytes vs {} expected, first difference at {at}",
                rel.display(),
                got.len(),
                data.len()
            );
        }
    }
}

fn persistence_after_remount(m: &mut MountGuard) {
    let files = build_rich_tree(m.path());
    let meta_opts = SnapshotOptions {
        contents: false,
        atime: true,
        ctime: true,
    };
    // Nothing reads file data between the two snapshots: a read may move an atime in the
    // daemon (relatime) while the kernel's cached attributes still show the old one.
    let before = snapshot(m.path(), meta_opts);
    m.remount();
    let after = snapshot(m.path(), meta_opts);
    let diffs = diff_snapshots(&before, &after);
    assert!(
        diffs.is_empty(),
        "metadata changed across remount:\n{}",
        diffs.join("\n")
    );
    check_contents(m.path(), &files, "after remount");
    // The filesystem keeps working after a remount, and survives a second one.
    let mut more = files.clone();
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.join("appended"))
        .unwrap();
    f.write_all(b"line 3\n").unwrap();
    drop(f);
    more.get_mut(Path::new("appended"))
        .unwrap()
        .extend_from_slice(b"line 3\n");
    fs::write(m.join("a/new-after-remount"), pattern(30, 12_345)).unwrap();
    more.insert(PathBuf::from("a/new-after-remount"), pattern(30, 12_345));
    fs::create_dir(m.join("new-dir")).unwrap();
    fs::remove_file(m.join("a/b/c/small-3")).unwrap();
    more.remove(Path::new("a/b/c/small-3"));
    // Files were read above, so atimes are left out this time (they were compared once).
    let meta_opts = SnapshotOptions {
        atime: false,
        ..meta_opts
    };
    let before = snapshot(m.path(), meta_opts);
    m.remount();
    let after = snapshot(m.path(), meta_opts);
    let diffs = diff_snapshots(&before, &after);
    assert!(
        diffs.is_empty(),
        "metadata changed across the second remount:\n{}",
        diffs.join("\n")
    );
    check_contents(m.path(), &more, "after the second remount");
    assert_eq!(
        nlink(&m.join("small")),
        2,
        "nlink after removing one link and remounting"
    );
}

/// Times stamped by the daemon (a new directory) and by the kernel (a file's data written
/// through the page cache, in buffered mode) come from one clock: a file written after a
/// directory was made is never older than it (xfstests generic/423). With the daemon on the
/// fine clock and the kernel on its tick, this failed within a few rounds.
fn times_never_run_backwards(m: &mut MountGuard) {
    let key = |md: &fs::Metadata| (md.mtime(), md.mtime_nsec());
    for i in 0..300 {
        let d = m.join(format!("d{i}"));
        fs::create_dir(&d).unwrap();
        let f = m.join(format!("f{i}"));
        fs::write(&f, b"data").unwrap();
        let (dm, fm) = (fs::metadata(&d).unwrap(), fs::metadata(&f).unwrap());
        assert!(
            key(&fm) >= key(&dm),
            "round {i}: file mtime {:?} before the directory's {:?}",
            key(&fm),
            key(&dm)
        );
        let l = m.join(format!("l{i}"));
        fs::hard_link(&f, &l).unwrap();
        let ctime = |md: &fs::Metadata| (md.ctime(), md.ctime_nsec());
        assert!(
            ctime(&fs::metadata(&l).unwrap()) >= ctime(&dm),
            "round {i}: link ctime before the directory's"
        );
    }
}
