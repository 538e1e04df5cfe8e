//! What a change of a file's data or size takes away: the file capability
//! (`security.capability`) and the setuid/setgid bits, as Linux's `file_remove_privs` does.
//!
//! One table: every path that changes a regular file's data or size (write, append, pwrite,
//! pwritev, O_DIRECT, copy_file_range, each fallocate mode, truncate, ftruncate, O_TRUNC,
//! O_CREAT|O_TRUNC of an existing file), and two that change neither privileges nor size
//! (a store through a shared mapping, a write of no bytes), applied to files with a
//! capability, with setuid+setgid, with setgid but no group-execute bit, and with a
//! capability and setuid+setgid together; each by root and by a user outside the file's
//! group. The table runs on pfnfs in direct mode, buffered mode and direct mode over FUSE
//! over io_uring, and on tmpfs (/dev/shm) as the reference: every row's outcome, mode,
//! capability and size must be what tmpfs gives, and what Linux's rules say (asserted
//! explicitly, so a kernel that changed its rules cannot make both sides wrong alike). Only
//! FALLOC_FL_ZERO_RANGE, which tmpfs lacks, is checked against the rules alone (ext4 and
//! xfs remove privileges for it like for every other mode). After a remount every file must
//! be as it was.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use pfnfs_tests::sys::{self, errno};
use pfnfs_tests::users::{self, Helper, Ids};
use pfnfs_tests::{Mode, MountGuard, ring_requests, skip_without_fuse};

/// `cap_chown+ep` as the kernel stores it (VFS_CAP_REVISION_2, effective; permitted bit 0).
const CAPABILITY: [u8; 20] = [1, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// What every file holds before the step.
const CONTENT: &[u8] = b"hello\n";

/// The paths into a file's data or size, each a step of the helper.
const PATHS: &[&str] = &[
    "write",
    "append",
    "pwrite",
    "pwritev",
    "odirect",
    "copy_file_range",
    "fallocate",
    "fallocate_keep_size",
    "fallocate_inside",
    "punch_hole",
    "zero_range",
    "truncate",
    "truncate_same",
    "ftruncate",
    "open_trunc",
    "create_trunc",
    "mmap_store",
    "write_empty",
];

/// Paths that change neither the file's privileges nor its size on Linux.
const KEEPS_PRIVILEGES: &[&str] = &["mmap_store", "write_empty"];

/// Paths tmpfs does not offer (EOPNOTSUPP there): checked against the rules only.
const NOT_ON_TMPFS: &[&str] = &["zero_range"];

/// The files each path is tried on: (name, mode, with a capability).
const KINDS: &[(&str, u32, bool)] = &[
    ("cap", 0o777, true),
    ("suid", 0o6777, false),
    ("sgid_nogx", 0o2767, false),
    ("cap_suid", 0o6777, true),
];

fn fallocate(p: &Path, mode: libc::c_int, offset: i64, len: i64) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(p)?;
    sys::fallocate(&f, mode, offset, len)
}

/// Runs one step (`PATH FILE SOURCE`) as whoever runs this process: `ok` or the errno.
fn run_step(line: &str) -> String {
    let w: Vec<&str> = line.split(' ').collect();
    let (p, src) = (Path::new(w[1]), Path::new(w[2]));
    let wr = || OpenOptions::new().write(true).open(p);
    let r: std::io::Result<()> = match w[0] {
        "write" => wr().and_then(|mut f| f.write_all(b"w")),
        "append" => OpenOptions::new()
            .append(true)
            .open(p)
            .and_then(|mut f| f.write_all(b"data")),
        "pwrite" => wr().and_then(|f| f.write_all_at(b"X", 1)),
        "pwritev" => wr().and_then(|f| sys::pwritev(&f, &[b"a", b"b"], 1).map(drop)),
        "odirect" => OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(p)
            .and_then(|f| {
                // 4 KiB-aligned, as tmpfs's O_DIRECT wants.
                #[repr(align(4096))]
                struct Block([u8; 4096]);
                let b = Block([b'D'; 4096]);
                f.write_all_at(&b.0, 0)
            }),
        "copy_file_range" => File::open(src).and_then(|s| {
            let d = OpenOptions::new().write(true).open(p)?;
            sys::copy_file_range(&s, 0, &d, 0, 3).map(|_| ())
        }),
        "fallocate" => fallocate(p, 0, 0, 8192),
        "fallocate_keep_size" => fallocate(p, libc::FALLOC_FL_KEEP_SIZE, 0, 8192),
        "fallocate_inside" => fallocate(p, libc::FALLOC_FL_KEEP_SIZE, 0, 2),
        "punch_hole" => fallocate(
            p,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            2,
        ),
        "zero_range" => fallocate(p, libc::FALLOC_FL_ZERO_RANGE, 0, 2),
        "truncate" => OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|f| f.set_len(2)),
        "truncate_same" => sys::truncate(p, CONTENT.len() as i64),
        "ftruncate" => wr().and_then(|f| f.set_len(100)),
        "open_trunc" => OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p)
            .map(drop),
        "create_trunc" => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .map(drop),
        "mmap_store" => OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .and_then(|f| sys::store_through_mapping(&f, 0, b'M')),
        "write_empty" => wr().and_then(|mut f| f.write(b"").map(drop)),
        other => panic!("unknown step {other}"),
    };
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("errno {}", errno(&e)),
    }
}

/// Under a parent test: runs its script as the user it was started as.
#[test]
fn helper() {
    if !users::serve_script(run_step) {
        // Alone: the step runner on a scratch file.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, CONTENT).unwrap();
        let line = format!("pwrite {} {}", f.display(), f.display());
        assert_eq!(run_step(&line), "ok");
        assert_eq!(fs::read(&f).unwrap(), b"hXllo\n");
    }
}

/// A row's file, named after its path, kind and writer.
fn file_name(path: &str, kind: &str, writer: &str) -> String {
    format!("{path}.{kind}.{writer}")
}

/// The state a row leaves: the step's outcome, then mode, capability and size.
fn state(outcome: &str, p: &Path) -> String {
    let m = fs::metadata(p).unwrap();
    let cap = match sys::getxattr(p, "security.capability") {
        Ok(v) if v == CAPABILITY => "cap",
        Ok(_) => "other-cap",
        Err(_) => "-",
    };
    format!("{outcome} {:o} {cap} {}", m.mode() & 0o7777, m.len())
}

/// Sets up every row's file under `dir` as root, runs the steps (root's in this process,
/// the user's in the helper), and returns `(row, state)` for each.
fn table(dir: &Path, helper: &Helper, user: Ids) -> Vec<(String, String)> {
    let src = dir.join("source");
    fs::write(&src, b"src-data").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let mut rows = Vec::new();
    for writer in ["root", "user"] {
        let mut steps = Vec::new();
        for path in PATHS {
            for (kind, mode, cap) in KINDS {
                let name = file_name(path, kind, writer);
                let p = dir.join(&name);
                fs::write(&p, CONTENT).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
                if *cap {
                    sys::setxattr(&p, "security.capability", &CAPABILITY, 0).unwrap();
                }
                steps.push(format!("{path} {} {}", p.display(), src.display()));
                rows.push(name);
            }
        }
        let outcomes: Vec<String> = if writer == "root" {
            steps.iter().map(|s| run_step(s)).collect()
        } else {
            helper.run_as(user, &steps)
        };
        let first = rows.len() - outcomes.len();
        for (name, outcome) in rows[first..].iter_mut().zip(outcomes) {
            *name = format!("{name} {outcome}");
        }
    }
    rows.into_iter()
        .map(|r| {
            let (name, outcome) = r.split_once(' ').unwrap();
            (name.to_string(), state(outcome, &dir.join(name)))
        })
        .collect()
}

/// What Linux's rules leave for `row` (`path.kind.writer`), or None where only tmpfs's
/// outcome counts (the size, which each path sets its own way).
fn expected_privileges(row: &str) -> (u32, &'static str) {
    let mut parts = row.split('.');
    let (path, kind, writer) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let &(_, mode, cap) = KINDS.iter().find(|k| k.0 == kind).unwrap();
    if KEEPS_PRIVILEGES.contains(&path) {
        return (mode, if cap { "cap" } else { "-" });
    }
    // A writer without CAP_FSETID loses setuid, and setgid (group-executable or not, as it
    // is not in the file's group); root keeps both. The capability goes whoever writes.
    let mode = if writer == "user" {
        mode & !0o6000
    } else {
        mode
    };
    (mode, "-")
}

fn privileges(mode: Mode, options: &[&str]) {
    if skip_without_fuse() {
        return;
    }
    assert!(
        pfnfs_tests::is_root(),
        "the privilege tests must run as root"
    );
    let (user, _) = users::test_users();
    let mut guard = MountGuard::with_options(mode, options);
    // The guard's temp dir is 0700; the user must be able to walk to the mount.
    let top = guard.path().parent().unwrap().to_path_buf();
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(guard.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let reference = tempfile::Builder::new()
        .prefix("pfnfs-priv-ref-")
        .tempdir_in("/dev/shm")
        .expect("a tmpfs directory in /dev/shm for the reference run");
    fs::set_permissions(reference.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let helper = Helper::new();
    let ring_before = ring_requests(guard.path());

    let ours = table(guard.path(), &helper, user);
    let theirs = table(reference.path(), &helper, user);
    let mut problems = Vec::new();
    for ((row, got), (_, tmpfs)) in ours.iter().zip(&theirs) {
        let path = row.split('.').next().unwrap();
        if !NOT_ON_TMPFS.contains(&path) && got != tmpfs {
            problems.push(format!("{row}: pfnfs {got}, tmpfs {tmpfs}"));
        }
        let (want_mode, want_cap) = expected_privileges(row);
        let fields: Vec<&str> = got.split(' ').collect();
        let (outcome, got_mode, got_cap) = (
            fields[..fields.len() - 3].join(" "),
            fields[fields.len() - 3],
            fields[fields.len() - 2],
        );
        if outcome != "ok" || got_mode != format!("{want_mode:o}") || got_cap != want_cap {
            problems.push(format!(
                "{row}: pfnfs {got}, Linux's rules give ok {want_mode:o} {want_cap}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{mode:?} {options:?}: {} of {} rows differ:\n{}\ndaemon log:\n{}",
        problems.len(),
        ours.len(),
        problems.join("\n"),
        guard.log()
    );
    if options.contains(&"io_uring") {
        let served = ring_requests(guard.path()) - ring_before;
        assert!(
            served > ours.len() as u64,
            "only {served} requests came over io_uring for {} rows",
            ours.len()
        );
    }

    // Durable: the same privileges after a remount.
    guard.remount();
    for (row, got) in &ours {
        let outcome = got.split(' ').next().unwrap();
        assert_eq!(
            &state(outcome, &guard.join(row)),
            got,
            "{row} after a remount"
        );
    }
    guard.unmount().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn privileges_direct() {
    privileges(Mode::Direct, &["allow_other"])
}

#[test]
fn privileges_buffered() {
    privileges(Mode::Buffered, &["allow_other"])
}

#[test]
fn privileges_io_uring() {
    privileges(Mode::Direct, &["allow_other", "io_uring"])
}
