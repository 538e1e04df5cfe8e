//! `pfnfs upgrade` on pools made by the last format 1 build (commit a9ec3d5; how, in
//! `tests/fixtures/README.md`): a cleanly unmounted pool and one whose daemon was killed with
//! SIGKILL (log records to replay, an open-unlinked file to reclaim, the mounted flag set).
//!
//! For each: `pfnfs mount`, `stat` and `fsck -n` refuse the format 1 pool, name its version
//! and the command that converts it, and leave every byte as it was; `pfnfs upgrade` converts
//! it and says what it converted; a second upgrade says the pool is format 2 already;
//! `fsck -n` is clean; a mount shows every path of the fixture's manifest as format 1 showed
//! it (kind, mode, owner, link count, inode number, times, size, blocks, contents, data
//! segments, symlink target, device number, xattrs and ACLs), nothing more; new changes
//! survive a remount, and `fsck -n` is clean at the end.

#[path = "../fixtures/manifest.rs"]
mod manifest;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use manifest::{Entry, inode_count, sha256_hex, show};
use pfnfs_tests::{
    Mode, MountGuard, SnapshotOptions, diff_snapshots, pfnfs_bin, read_all, skip_without_fuse,
    snapshot, sys,
};

/// The fixtures directory.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Unpacks fixture `name` (`NAME.pool.gz`) into `dir` as a sparse file; returns its path.
fn unpack(name: &str, dir: &Path) -> PathBuf {
    let bytes = manifest::gunzip(&fixtures().join(format!("{name}.pool.gz")));
    let path = dir.join(format!("{name}.pool"));
    write_sparse(&path, &bytes);
    path
}

/// Writes `bytes` to `path`, skipping all-zero 4 KiB blocks (the pool stays sparse).
fn write_sparse(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    for (i, block) in bytes.chunks(4096).enumerate() {
        if block.iter().any(|b| *b != 0) {
            file.write_all_at(block, (i * 4096) as u64).unwrap();
        }
    }
    file.set_len(bytes.len() as u64).unwrap();
    file.sync_all().unwrap();
}

/// Runs `pfnfs ARGS`.
fn pfnfs(args: &[&OsStr]) -> Output {
    Command::new(pfnfs_bin())
        .args(args)
        .output()
        .expect("run pfnfs")
}

/// stdout and stderr of `out`, for messages and matching.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `out` failed and that its message names format 1 and `pfnfs upgrade POOL`.
fn assert_refuses_format1(what: &str, out: &Output, pool: &Path) {
    let msg = text(out);
    assert!(
        !out.status.success(),
        "{what} accepted a format 1 pool: {msg}"
    );
    assert!(
        msg.contains("format 1"),
        "{what}: the message does not name format 1: {msg}"
    );
    assert!(
        msg.contains(&format!("pfnfs upgrade {}", pool.display())),
        "{what}: the message does not name `pfnfs upgrade POOL`: {msg}"
    );
}

/// The number right before `suffix` in `msg` (`"12 inode(s)"`).
fn number_before(msg: &str, suffix: &str) -> u64 {
    let at = msg
        .find(suffix)
        .unwrap_or_else(|| panic!("no {suffix:?} in {msg:?}"));
    let digits: String = msg[..at]
        .trim_end()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .chars()
        .rev()
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number before {suffix:?} in {msg:?}"))
}

/// Linux's `major()` and `minor()` of a `dev_t`.
fn major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn path_in(root: &Path, rel: &[u8]) -> PathBuf {
    if rel == b"." {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

/// The data segments SEEK_DATA/SEEK_HOLE report for a file of `size` bytes.
fn data_segments(path: &Path, size: u64) -> Vec<(u64, u64)> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut segs = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let Ok(start) = sys::lseek(&file, offset as i64, libc::SEEK_DATA) else {
            break;
        };
        let end = sys::lseek(&file, start, libc::SEEK_HOLE).expect("SEEK_HOLE");
        segs.push((start as u64, end as u64));
        offset = end as u64;
    }
    segs
}

/// What to compare.
#[derive(Clone, Copy)]
struct Compare {
    /// Also atimes (only before anything was read since the mount).
    atime: bool,
    /// The tree must hold exactly the manifest's paths.
    exact: bool,
}

/// Differences between the tree at `root` and `entries`, listed. Attributes are taken (lstat
/// by path, which changes no atime) before anything is read.
fn compare(root: &Path, entries: &BTreeMap<Vec<u8>, Entry>, how: Compare) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut field = |path: &[u8], name: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!(
                "{}: {name}: format 1 had {want}, now {got}",
                show(path)
            ));
        }
    };
    let mut present = Vec::new();
    for (rel, e) in entries {
        let path = path_in(root, rel);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            field(rel, "presence", "the entry".into(), "nothing".into());
            continue;
        };
        present.push(rel);
        let time = |s: i64, ns: i64| format!("{s},{ns}");
        field(
            rel,
            "kind",
            e.kind.clone(),
            pfnfs_tests::kind_name(meta.file_type()).into(),
        );
        field(
            rel,
            "mode",
            format!("{:o}", e.mode),
            format!("{:o}", meta.mode()),
        );
        field(
            rel,
            "owner",
            format!("{}:{}", e.uid, e.gid),
            format!("{}:{}", meta.uid(), meta.gid()),
        );
        field(rel, "nlink", e.nlink.to_string(), meta.nlink().to_string());
        field(rel, "ino", e.ino.to_string(), meta.ino().to_string());
        field(
            rel,
            "mtime",
            time(e.mtime.0, e.mtime.1.into()),
            time(meta.mtime(), meta.mtime_nsec()),
        );
        field(
            rel,
            "ctime",
            time(e.ctime.0, e.ctime.1.into()),
            time(meta.ctime(), meta.ctime_nsec()),
        );
        if how.atime {
            field(
                rel,
                "atime",
                time(e.atime.0, e.atime.1.into()),
                time(meta.atime(), meta.atime_nsec()),
            );
        }
        if let Some(size) = e.size {
            field(rel, "size", size.to_string(), meta.size().to_string());
        }
        if let Some(blocks) = e.blocks {
            field(rel, "blocks", blocks.to_string(), meta.blocks().to_string());
        }
        if let Some(rdev) = e.rdev {
            field(
                rel,
                "rdev",
                format!("{rdev:?}"),
                format!("{:?}", major_minor(meta.rdev())),
            );
        }
    }
    if how.exact {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for item in std::fs::read_dir(&dir).unwrap() {
                let item = item.unwrap();
                let rel = item
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                if item.file_type().unwrap().is_dir() {
                    stack.push(item.path());
                }
                if !entries.contains_key(&rel) {
                    field(&rel, "presence", "nothing".into(), "an entry".into());
                }
            }
        }
    }
    for rel in present {
        let e = &entries[rel];
        let path = path_in(root, rel);
        if let Some(target) = &e.target {
            let got = std::fs::read_link(&path).map(|t| t.as_os_str().as_bytes().to_vec());
            field(
                rel,
                "target",
                show(target),
                got.map_or_else(|err| err.to_string(), |t| show(&t)),
            );
        }
        let names = sys::listxattr(&path).unwrap_or_else(|err| panic!("listxattr: {err}"));
        let got: BTreeMap<Vec<u8>, (usize, String)> = names
            .iter()
            .map(|n| {
                let v = sys::getxattr(&path, n).unwrap_or_else(|err| panic!("getxattr {n}: {err}"));
                (n.as_bytes().to_vec(), (v.len(), sha256_hex(&v)))
            })
            .collect();
        field(rel, "xattrs", format!("{:?}", e.xattrs), format!("{got:?}"));
        if let Some(sha) = &e.sha256 {
            field(
                rel,
                "contents (sha256)",
                sha.clone(),
                sha256_hex(&read_all(&path)),
            );
        }
        if let (Some(data), Some(size)) = (&e.data, e.size) {
            field(
                rel,
                "data segments",
                format!("{data:?}"),
                format!("{:?}", data_segments(&path, size)),
            );
        }
    }
    diffs
}

/// More changes after the upgrade, of every kind of metadata, including on converted inodes.
fn change_after_upgrade(root: &Path) {
    let p = |rel: &str| root.join(rel);
    std::fs::create_dir_all(p("after/deep/er")).unwrap();
    for i in 0..50u64 {
        std::fs::write(
            p(&format!("after/deep/f{i:02}")),
            pfnfs_tests::pattern(i, (i * 997) as usize),
        )
        .unwrap();
    }
    std::fs::write(p("after/big"), pfnfs_tests::pattern(99, (3 << 20) + 17)).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p("sizes/s1"))
        .unwrap();
    f.write_all(b"appended after the upgrade").unwrap();
    drop(f);
    sys::truncate(&p("sizes/sparse"), 5 << 20).unwrap();
    sys::setxattr(&p("d1/xattrs"), "user.after", b"upgrade", 0).unwrap();
    sys::setxattr(&p("d1/xattrs"), "user.big", &[7u8; 30000], 0).unwrap();
    std::fs::hard_link(p("links/hl_src"), p("after/hl_third")).unwrap();
    std::fs::rename(p("many/f010"), p("after/f010")).unwrap();
    std::fs::remove_file(p("many/f011")).unwrap();
    std::os::unix::fs::symlink("after/big", p("after/sym")).unwrap();
    std::fs::rename(p("d1/d2/d3"), p("after/d3_moved")).unwrap();
    let mut perms = std::fs::metadata(p("modes/owned")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o4711);
    std::fs::set_permissions(p("modes/owned"), perms).unwrap();
}

fn upgrade_fixture(name: &str, crashed: bool) {
    if skip_without_fuse() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("pfnfs-upgrade-")
        .tempdir()
        .unwrap();
    let pool = unpack(name, dir.path());
    let entries = manifest::parse(
        &std::fs::read_to_string(fixtures().join(format!("{name}.manifest"))).unwrap(),
    );
    let original = std::fs::read(&pool).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();

    // Refused, with the version and the command named, and nothing written.
    let out = pfnfs(&[
        "mount".as_ref(),
        pool.as_os_str(),
        mnt.as_os_str(),
        "--mode".as_ref(),
        "direct".as_ref(),
    ]);
    if out.status.success() {
        let _ = pfnfs(&["umount".as_ref(), mnt.as_os_str()]);
        panic!("pfnfs mount accepted a format 1 pool: {}", text(&out));
    }
    assert_refuses_format1("pfnfs mount", &out, &pool);
    assert!(!pfnfs_tests::is_mounted(&mnt));
    assert_refuses_format1(
        "pfnfs stat",
        &pfnfs(&["stat".as_ref(), pool.as_os_str()]),
        &pool,
    );
    let out = pfnfs(&["fsck".as_ref(), "-n".as_ref(), pool.as_os_str()]);
    assert_refuses_format1("pfnfs fsck -n", &out, &pool);
    assert_eq!(
        out.status.code(),
        Some(8),
        "fsck -n of a format 1 pool: an operational error (8): {}",
        text(&out)
    );
    let out = pfnfs(&["fsck".as_ref(), "-y".as_ref(), pool.as_os_str()]);
    assert_refuses_format1("pfnfs fsck -y", &out, &pool);
    assert!(
        std::fs::read(&pool).unwrap() == original,
        "a refusing command wrote to the pool"
    );

    // The upgrade, and says what it did.
    let out = pfnfs(&["upgrade".as_ref(), pool.as_os_str()]);
    let msg = text(&out);
    assert!(out.status.success(), "pfnfs upgrade failed: {msg}");
    assert!(msg.contains("converted to format 2"), "{msg}");
    assert_eq!(
        number_before(&msg, "inode(s)"),
        inode_count(&entries),
        "inodes converted: {msg}"
    );
    let records = number_before(&msg, "log record(s)");
    if crashed {
        assert!(
            records > 0,
            "nothing of the crashed pool's log replayed: {msg}"
        );
    } else {
        assert_eq!(records, 0, "a clean pool has no records to replay: {msg}");
    }

    // Once is enough.
    let out = pfnfs(&["upgrade".as_ref(), pool.as_os_str()]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(1), "second upgrade: {msg}");
    assert!(
        msg.contains("already") && msg.contains("format 2"),
        "second upgrade: {msg}"
    );

    let fsck = |when: &str| {
        let out = pfnfs(&["fsck".as_ref(), "-n".as_ref(), pool.as_os_str()]);
        assert_eq!(out.status.code(), Some(0), "fsck -n {when}: {}", text(&out));
    };
    fsck("after the upgrade");
    let out = pfnfs(&["stat".as_ref(), pool.as_os_str()]);
    assert!(out.status.success(), "stat: {}", text(&out));
    assert!(text(&out).contains("mounted:      no"), "{}", text(&out));

    // Everything as format 1 showed it.
    let mut guard = MountGuard::try_existing(&pool, Mode::Direct, None)
        .unwrap_or_else(|f| panic!("mount after the upgrade: {f:?}"));
    let diffs = compare(
        guard.path(),
        &entries,
        Compare {
            atime: true,
            exact: true,
        },
    );
    assert!(diffs.is_empty(), "after the upgrade:\n{}", diffs.join("\n"));

    // More changes; a remount keeps them and everything else.
    change_after_upgrade(guard.path());
    let opts = SnapshotOptions {
        contents: true,
        atime: false,
        ctime: true,
    };
    let before = snapshot(guard.path(), opts);
    guard.remount();
    let after = snapshot(guard.path(), opts);
    let diffs = diff_snapshots(&before, &after);
    assert!(diffs.is_empty(), "after a remount:\n{}", diffs.join("\n"));
    let touched = |rel: &[u8]| {
        [
            &b"sizes/s1"[..],
            b"b/s1_link",
            b"sizes/sparse",
            b"d1/xattrs",
            b"links/hl_src",
            b"d1/hl_dst",
            b"many/f010",
            b"many/f011",
            b"d1/d2",
            b"modes/owned",
            b".",
        ]
        .iter()
        .any(|t| rel == *t || (rel.starts_with(t) && rel.get(t.len()) == Some(&b'/')))
            || rel == b"many"
    };
    let untouched: BTreeMap<Vec<u8>, Entry> = entries
        .iter()
        .filter(|(rel, _)| !touched(rel))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(untouched.len() > 100);
    let diffs = compare(
        guard.path(),
        &untouched,
        Compare {
            atime: false,
            exact: false,
        },
    );
    assert!(
        diffs.is_empty(),
        "after more changes and a remount:\n{}",
        diffs.join("\n")
    );
    guard.unmount().unwrap();
    fsck("after more changes");
}

#[test]
fn a_cleanly_unmounted_format1_pool_is_refused_then_upgraded_whole() {
    upgrade_fixture("format1-clean", false);
}

#[test]
fn a_format1_pool_whose_daemon_was_killed_is_refused_then_upgraded_with_its_log() {
    upgrade_fixture("format1-crashed", true);
}
