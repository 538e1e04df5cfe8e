//! How requests reach the daemon: FUSE over io_uring (`-o io_uring`) answering every
//! operation like the /dev/fuse path does (one table of results and errnos through both
//! transports on the same pool), and the /dev/fuse workers pinned and SCHED_IDLE
//! (fs/src/transport/placement.rs). The POSIX, concurrency and fsx suites also have
//! io_uring variants (`all_transports!`); every mount with `-o io_uring` fails its unmount
//! check unless requests really came over the rings (`MountGuard::unmount`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use pfnfs_tests::sys::{self, errno, expect_errno};
use pfnfs_tests::{Mode, MountGuard, holders, pattern, read_all, ring_requests, skip_without_fuse};

/// Every operation pfnfs answers, through the ring, with the results checked.
fn every_operation(m: &mut MountGuard) {
    let root = m.path().to_path_buf();
    let before = ring_requests(&root);
    let dir = m.join("d");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o750);

    // create, write (small and a full 1 MiB request), read back, sizes
    let f = dir.join("f");
    let data = pattern(1, 3 << 20);
    {
        let mut w = File::create(&f).unwrap();
        w.write_all(&data[..5]).unwrap();
        w.write_all(&data[5..]).unwrap();
        w.sync_all().unwrap();
    }
    assert_eq!(read_all(&f), data);
    let r = File::open(&f).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    r.read_exact_at(&mut buf, 12345).unwrap();
    assert_eq!(buf, data[12345..12345 + (1 << 20)]);
    let mut past = [0u8; 16];
    assert_eq!(r.read_at(&mut past, 1 << 30).unwrap(), 0);

    // setattr: truncate, chmod, chown, times
    let w = OpenOptions::new().write(true).open(&f).unwrap();
    w.set_len(1 << 20).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 1 << 20);
    sys::lchown(&f, 1234, 5678).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    sys::utimensat(&f, sys::ts(1_000_000_000, 5), sys::ts(-86_400, 7), false).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 5));
    assert_eq!((md.mtime(), md.mtime_nsec()), (-86_400, 7));

    // fallocate, SEEK_DATA/SEEK_HOLE (direct mode answers these), copy_file_range
    let g = dir.join("g");
    let gf = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&g)
        .unwrap();
    sys::fallocate(&gf, 0, 1 << 20, 4096).unwrap();
    assert_eq!(gf.metadata().unwrap().len(), (1 << 20) + 4096);
    gf.write_all_at(b"tail", 2 << 20).unwrap();
    if m.mode() == Mode::Direct {
        assert_eq!(sys::lseek(&gf, 0, libc::SEEK_DATA).unwrap(), 1 << 20);
        assert_eq!(
            sys::lseek(&gf, 1 << 20, libc::SEEK_HOLE).unwrap(),
            (1 << 20) + 4096
        );
    }
    let copied = sys::copy_file_range(&r, 0, &gf, 100, 8192).unwrap();
    assert_eq!(copied, 8192);
    let mut back = vec![0u8; 8192];
    gf.read_exact_at(&mut back, 100).unwrap();
    assert_eq!(back, data[..8192]);

    // names: link, symlink, readlink, mknod, rename (plain and exchange), unlink, rmdir
    fs::hard_link(&f, dir.join("f2")).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().nlink(), 2);
    symlink("f", dir.join("s")).unwrap();
    assert_eq!(fs::read_link(dir.join("s")).unwrap(), Path::new("f"));
    sys::mknod(&dir.join("p"), libc::S_IFIFO | 0o600, 0).unwrap();
    assert!(fs::metadata(dir.join("p")).unwrap().file_type().is_fifo());
    fs::rename(dir.join("f2"), dir.join("f3")).unwrap();
    sys::renameat2(&dir.join("f3"), &g, libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::metadata(dir.join("f3")).unwrap().len(), (2 << 20) + 4);
    assert_eq!(
        fs::metadata(&g).unwrap().ino(),
        fs::metadata(&f).unwrap().ino()
    );
    expect_errno(
        sys::renameat2(&dir.join("f3"), &g, libc::RENAME_NOREPLACE),
        "rename noreplace",
    );
    fs::remove_file(dir.join("f3")).unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    fs::remove_dir(dir.join("sub")).unwrap();
    assert_eq!(
        expect_errno(fs::remove_dir(&dir), "rmdir non-empty"),
        libc::ENOTEMPTY
    );

    // readdir(plus): every name once
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["f", "g", "p", "s"]);
    for i in 0..300 {
        File::create(dir.join(format!("n{i:03}-{}", "x".repeat(i % 200)))).unwrap();
    }
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 304);

    // xattrs: set, get (size probe, too small, exact), list, remove
    sys::setxattr(&f, "user.k", b"value", 0).unwrap();
    assert_eq!(sys::getxattr(&f, "user.k").unwrap(), b"value");
    assert_eq!(sys::getxattr_len(&f, "user.k", 0).unwrap(), 5);
    assert_eq!(
        expect_errno(sys::getxattr_len(&f, "user.k", 2), "small buffer"),
        libc::ERANGE
    );
    assert!(sys::listxattr(&f).unwrap().contains(&"user.k".to_string()));
    sys::removexattr(&f, "user.k").unwrap();
    assert_eq!(
        expect_errno(sys::getxattr(&f, "user.k"), "removed xattr"),
        libc::ENODATA
    );

    // errors keep their errno over the ring
    assert_eq!(
        expect_errno(File::open(dir.join("missing")), "open missing"),
        libc::ENOENT
    );
    assert_eq!(
        expect_errno(fs::create_dir(&dir), "mkdir existing"),
        libc::EEXIST
    );
    let long = dir.join("y".repeat(256));
    assert_eq!(
        expect_errno(File::create(long), "name too long"),
        libc::ENAMETOOLONG
    );

    let st = sys::statvfs(&root).unwrap();
    assert!(st.f_blocks > 0 && st.f_bfree <= st.f_blocks);

    let served = ring_requests(&root) - before;
    assert!(
        served > 500,
        "only {served} requests came over io_uring; log:\n{}",
        m.log()
    );

    // Everything is on the pool: the same after a remount.
    drop(r);
    drop(w);
    drop(gf);
    m.remount();
    assert_eq!(read_all(&f)[..], data[..1 << 20]);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 304);
    assert_eq!(fs::read_link(dir.join("s")).unwrap(), Path::new("f"));
}

fn over_io_uring(mode: Mode) {
    if skip_without_fuse() {
        return;
    }
    let mut m = MountGuard::with_options(mode, &["io_uring"]);
    every_operation(&mut m);
    m.unmount().expect("clean unmount");
}

#[test]
fn io_uring_answers_every_operation_direct() {
    over_io_uring(Mode::Direct);
}

#[test]
fn io_uring_answers_every_operation_buffered() {
    over_io_uring(Mode::Buffered);
}

/// `/proc/PID/task/TID/sched` says "policy : N"; SCHED_IDLE is 5.
fn policy(task: &Path) -> Option<u32> {
    let s = fs::read_to_string(task.join("sched")).ok()?;
    let line = s.lines().find(|l| l.starts_with("policy"))?;
    line.split(':').nth(1)?.trim().parse().ok()
}

#[test]
fn dev_fuse_workers_are_pinned_and_sched_idle() {
    if skip_without_fuse() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut m = MountGuard::new(Mode::Direct);
    let f = m.join("f");
    fs::write(&f, pattern(2, 1 << 20)).unwrap();
    // Enough requests that both workers serve some.
    let r = File::open(&f).unwrap();
    let mut buf = [0u8; 4096];
    for i in 0..20_000u64 {
        r.read_exact_at(&mut buf, (i * 4096) % (1 << 20)).unwrap();
    }
    let pids = holders(m.pool());
    assert_eq!(pids.len(), 1, "daemon pids: {pids:?}");
    // A worker that had to wait for its CPU (other tests run beside this one) is at normal
    // priority until its CPU has been quiet for 100 ms: look until they are idle again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let workers = loop {
        let w = workers(pids[0]);
        let idle = w.iter().filter(|w| w.2 == Some(5)).count();
        if idle >= w.len().min(cpus) || std::time::Instant::now() > deadline {
            break w;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(r);
    m.unmount().expect("clean unmount");
    let served: Vec<_> = workers.iter().filter(|w| w.2 == Some(5)).collect();
    assert!(!served.is_empty(), "no SCHED_IDLE worker: {workers:?}");
    if cpus >= 2 {
        for w in &served {
            assert!(
                w.1.parse::<usize>().is_ok(),
                "a serving worker is not pinned to one CPU: {workers:?}"
            );
        }
        if served.len() >= 2 {
            assert_ne!(
                served[0].1, served[1].1,
                "two workers on one CPU: {workers:?}"
            );
        }
    }
}

/// The daemon's fuser workers: (name, CPUs allowed, scheduling policy).
fn workers(pid: i32) -> Vec<(String, String, Option<u32>)> {
    let mut workers = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = fs::read_to_string(task.join("comm")).unwrap();
        if !comm.starts_with("fuser-") {
            continue;
        }
        let status = fs::read_to_string(task.join("status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        workers.push((comm.trim().to_string(), allowed, policy(&task)));
    }
    workers
}

/// One step of the parity table: a name and what it gives in directory `d`.
type Step = (&'static str, fn(&Path) -> std::io::Result<String>);

fn ok(_: ()) -> String {
    "ok".into()
}

fn meta(p: &Path) -> std::io::Result<String> {
    let m = fs::symlink_metadata(p)?;
    Ok(format!(
        "{:o} {} {}:{} n{} m{}",
        m.mode(),
        m.len(),
        m.uid(),
        m.gid(),
        m.nlink(),
        m.mtime()
    ))
}

/// Every operation pfnfs answers, with results and errnos, as one table.
fn parity_table() -> Vec<Step> {
    vec![
        ("mkdir", |d| fs::create_dir(d.join("sub")).map(ok)),
        ("mkdir existing", |d| fs::create_dir(d.join("sub")).map(ok)),
        ("create", |d| {
            sys::open(
                &d.join("f"),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            )
            .and_then(|mut f| f.write_all(b"hello, world"))
            .map(ok)
        }),
        ("create exclusive existing", |d| {
            sys::open(
                &d.join("f"),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            )
            .map(drop)
            .map(ok)
        }),
        ("read", |d| {
            fs::read(d.join("f")).map(|b| String::from_utf8_lossy(&b).into())
        }),
        ("stat", |d| {
            meta(&d.join("f")).map(|s| s.split(" m").next().unwrap().to_string())
        }),
        ("lookup missing", |d| {
            fs::metadata(d.join("none")).map(drop).map(ok)
        }),
        ("name too long", |d| {
            File::create(d.join("x".repeat(256))).map(drop).map(ok)
        }),
        ("write past the end", |d| {
            OpenOptions::new()
                .write(true)
                .open(d.join("f"))
                .and_then(|f| f.write_all_at(b"tail", 100_000))
                .map(ok)
        }),
        ("read a hole", |d| {
            let mut b = [1u8; 8];
            File::open(d.join("f"))?.read_exact_at(&mut b, 50_000)?;
            Ok(format!("{b:?}"))
        }),
        ("seek data past the end", |d| {
            sys::lseek(&File::open(d.join("f"))?, 200_000, libc::SEEK_DATA).map(|o| o.to_string())
        }),
        ("seek hole", |d| {
            sys::lseek(&File::open(d.join("f"))?, 0, libc::SEEK_HOLE).map(|o| o.to_string())
        }),
        ("truncate", |d| {
            OpenOptions::new()
                .write(true)
                .open(d.join("f"))?
                .set_len(5)?;
            meta(&d.join("f")).map(|s| s.split(" m").next().unwrap().to_string())
        }),
        ("fallocate", |d| {
            let f = OpenOptions::new().write(true).open(d.join("f"))?;
            sys::fallocate(&f, 0, 0, 10_000)?;
            Ok(f.metadata()?.len().to_string())
        }),
        ("fallocate collapse", |d| {
            let f = OpenOptions::new().write(true).open(d.join("f"))?;
            sys::fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096).map(ok)
        }),
        ("copy_file_range", |d| {
            let src = File::open(d.join("f"))?;
            let dst = File::create(d.join("copy"))?;
            let n = sys::copy_file_range(&src, 0, &dst, 0, 5)?;
            Ok(format!("{n} {:?}", fs::read(d.join("copy"))?))
        }),
        ("chmod", |d| {
            fs::set_permissions(d.join("f"), fs::Permissions::from_mode(0o4750))?;
            meta(&d.join("f")).map(|s| s.split(' ').next().unwrap().to_string())
        }),
        ("chown", |d| {
            sys::lchown(&d.join("f"), 1000, 1000)?;
            meta(&d.join("f")).map(|s| s.split(" n").next().unwrap().to_string())
        }),
        ("utimes", |d| {
            sys::utimensat(&d.join("f"), sys::ts(-2, 5), sys::ts(1_000_000, 7), false)?;
            let m = fs::metadata(d.join("f"))?;
            Ok(format!(
                "{} {} {} {}",
                m.atime(),
                m.atime_nsec(),
                m.mtime(),
                m.mtime_nsec()
            ))
        }),
        ("symlink", |d| {
            symlink("f", d.join("s"))?;
            fs::read_link(d.join("s")).map(|t| t.display().to_string())
        }),
        ("readlink of a file", |d| {
            fs::read_link(d.join("f")).map(|_| "ok".into())
        }),
        ("link", |d| {
            fs::hard_link(d.join("f"), d.join("g"))?;
            Ok(fs::metadata(d.join("f"))?.nlink().to_string())
        }),
        ("rename", |d| fs::rename(d.join("g"), d.join("h")).map(ok)),
        ("rename noreplace", |d| {
            sys::renameat2(&d.join("h"), &d.join("copy"), libc::RENAME_NOREPLACE).map(ok)
        }),
        ("rename exchange", |d| {
            sys::renameat2(&d.join("h"), &d.join("sub"), libc::RENAME_EXCHANGE)?;
            Ok(format!("{}", d.join("h").is_dir()))
        }),
        ("rmdir not empty", |d| {
            File::create(d.join("h/inner"))?;
            fs::remove_dir(d.join("h")).map(ok)
        }),
        ("rmdir a file", |d| fs::remove_dir(d.join("f")).map(ok)),
        ("unlink a directory", |d| {
            fs::remove_file(d.join("h")).map(ok)
        }),
        ("unlink", |d| fs::remove_file(d.join("sub")).map(ok)),
        ("mknod fifo", |d| {
            sys::mknod(&d.join("p"), libc::S_IFIFO | 0o640, 0)?;
            meta(&d.join("p")).map(|s| s.split(' ').next().unwrap().to_string())
        }),
        ("open a directory for writing", |d| {
            OpenOptions::new()
                .write(true)
                .open(d.join("h"))
                .map(drop)
                .map(ok)
        }),
        ("O_TRUNC", |d| {
            OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(d.join("copy"))?;
            Ok(fs::metadata(d.join("copy"))?.len().to_string())
        }),
        ("setxattr", |d| {
            sys::setxattr(&d.join("f"), "user.k", b"value", 0).map(ok)
        }),
        ("setxattr create existing", |d| {
            sys::setxattr(&d.join("f"), "user.k", b"v", libc::XATTR_CREATE).map(ok)
        }),
        ("setxattr unknown namespace", |d| {
            sys::setxattr(&d.join("f"), "other.k", b"v", 0).map(ok)
        }),
        ("getxattr", |d| {
            sys::getxattr(&d.join("f"), "user.k").map(|v| String::from_utf8_lossy(&v).into())
        }),
        ("getxattr size", |d| {
            sys::getxattr_len(&d.join("f"), "user.k", 0).map(|n| n.to_string())
        }),
        ("getxattr small buffer", |d| {
            sys::getxattr_len(&d.join("f"), "user.k", 2).map(|n| n.to_string())
        }),
        ("getxattr missing", |d| {
            sys::getxattr(&d.join("f"), "user.none").map(|_| "ok".into())
        }),
        ("listxattr", |d| {
            sys::listxattr(&d.join("f")).map(|n| n.join(","))
        }),
        ("listxattr small buffer", |d| {
            sys::listxattr_len(&d.join("f"), 1).map(|n| n.to_string())
        }),
        ("removexattr", |d| {
            sys::removexattr(&d.join("f"), "user.k").map(ok)
        }),
        ("removexattr missing", |d| {
            sys::removexattr(&d.join("f"), "user.k").map(ok)
        }),
        ("fsync", |d| File::open(d.join("f"))?.sync_all().map(ok)),
        ("readdir", |d| {
            let mut names: Vec<String> = fs::read_dir(d)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()?;
            names.sort();
            Ok(names.join(","))
        }),
        ("statfs", |d| {
            sys::statvfs(d).map(|s| format!("{} {}", s.f_namemax, s.f_bsize))
        }),
    ]
}

fn run_table(d: &Path) -> Vec<String> {
    fs::create_dir(d).unwrap();
    parity_table()
        .iter()
        .map(|(name, step)| match step(d) {
            Ok(v) => format!("{name}: {v}"),
            Err(e) => format!("{name}: errno {}", errno(&e)),
        })
        .collect()
}

/// The same table of operations through /dev/fuse and then, on the same pool, through FUSE
/// over io_uring: every result and errno must be the same, and the second run must really
/// have come over the rings.
#[test]
fn both_transports_answer_alike() {
    if skip_without_fuse() {
        return;
    }
    let mut m = MountGuard::new(Mode::Direct);
    assert_eq!(ring_requests(m.path()), 0);
    let dev_fuse = run_table(&m.join("dev_fuse"));
    m.remount_with(&["io_uring"]);
    let before = ring_requests(m.path());
    let ring = run_table(&m.join("ring"));
    let served = ring_requests(m.path()) - before;
    let steps = parity_table().len() as u64;
    assert!(
        served >= steps,
        "only {served} requests came over io_uring for {steps} steps; log:\n{}",
        m.log()
    );
    let differ: Vec<String> = dev_fuse
        .iter()
        .zip(&ring)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("/dev/fuse {a:?}, io_uring {b:?}"))
        .collect();
    assert!(
        differ.is_empty(),
        "the transports differ:\n{}",
        differ.join("\n")
    );
    // The table means something: spot-check a few answers.
    for want in [
        format!("mkdir existing: errno {}", libc::EEXIST),
        format!("name too long: errno {}", libc::ENAMETOOLONG),
        format!("getxattr small buffer: errno {}", libc::ERANGE),
        format!("seek data past the end: errno {}", libc::ENXIO),
        format!("fallocate collapse: errno {}", libc::EOPNOTSUPP),
        format!("readlink of a file: errno {}", libc::EINVAL),
        "read: hello, world".to_string(),
    ] {
        assert!(dev_fuse.contains(&want), "{want:?} not in {dev_fuse:#?}");
    }
    m.unmount().expect("clean unmount");
}

/// The harness catches a mount asked to use io_uring that fell back to /dev/fuse: a read-only
/// mount, which pfnfs never serves over the rings, must fail its unmount check.
#[test]
fn a_silent_fall_back_to_dev_fuse_fails_the_test() {
    if skip_without_fuse() {
        return;
    }
    let mut m = MountGuard::with_options(Mode::Direct, &["io_uring", "ro"]);
    assert!(fs::read_dir(m.path()).unwrap().count() == 0);
    assert_eq!(ring_requests(m.path()), 0);
    let err = m.unmount().expect_err("the fall-back went unnoticed");
    assert!(err.contains("no request came over io_uring"), "{err}");
}
