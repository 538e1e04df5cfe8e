//! The `pfnfs` command itself: usage errors, mkfs, the detached daemon, the mount-helper
//! form, remount, stat, umount, signals, and mount(8) with `-t fuse.pfnfs` and an fstab line.
//!
//! Tests that mount use a fresh temp dir; a [`Cleanup`] guard unmounts and ends the daemons
//! of that temp dir's pool (processes this test started) even when the test fails.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use pfnfs_tests::sys::{self, expect_errno};
use pfnfs_tests::{
    holders, is_mounted, is_root, mount_at, pfnfs_bin, send_signal, skip_without_fuse,
};

/// Mounting tests share the lock; the mount(8) test takes it alone. `unshare --mount` copies
/// every mount, including the FUSE mounts of tests running beside it, into its namespace (as
/// peers until it makes them private), which can make their unmounts fail with EBUSY.
static MOUNT_NAMESPACE: RwLock<()> = RwLock::new(());

fn shared_mounts() -> RwLockReadGuard<'static, ()> {
    MOUNT_NAMESPACE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive_mounts() -> RwLockWriteGuard<'static, ()> {
    MOUNT_NAMESPACE.write().unwrap_or_else(|e| e.into_inner())
}

fn pfnfs(args: &[&str]) -> Output {
    Command::new(pfnfs_bin())
        .args(args)
        .output()
        .expect("run pfnfs")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = pfnfs(args);
    assert_eq!(code(&out), 0, "pfnfs {args:?} failed: {}", stderr(&out));
    stdout(&out)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts the listed mount points and ends the daemons holding the pool on drop.
struct Cleanup {
    dir: tempfile::TempDir,
    pool: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Cleanup {
    fn new() -> Cleanup {
        let dir = tempfile::Builder::new()
            .prefix("pfnfs-cli-")
            .tempdir()
            .expect("tempdir");
        let pool = dir.path().join("cli.pool");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        Cleanup {
            dir,
            pool,
            mounts: vec![mnt],
        }
    }

    fn mnt(&self) -> &Path {
        &self.mounts[0]
    }

    fn extra_mount_point(&mut self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir(&p).unwrap();
        self.mounts.push(p.clone());
        p
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for mnt in &self.mounts {
            if is_mounted(mnt) {
                let _ = Command::new("fusermount3").arg("-u").arg(mnt).output();
                if is_mounted(mnt) {
                    let _ = Command::new("fusermount3").arg("-uz").arg(mnt).output();
                }
            }
        }
        let start = Instant::now();
        while !holders(&self.pool).is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in holders(&self.pool) {
            eprintln!(
                "Cleanup: daemon {pid} of {} still running; SIGKILL",
                self.pool.display()
            );
            // A daemon this test started (it holds the test's own pool).
            send_signal(pid, "KILL");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(code(&pfnfs(&[])), 2, "no arguments");
    assert_eq!(code(&pfnfs(&["mkfs"])), 2, "mkfs without a pool");
    let out = pfnfs(&["mkfs", "/tmp/x.pool", "--size", "1Q"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("1Q"),
        "message names the bad size: {}",
        stderr(&out)
    );
    let out = pfnfs(&["mount", "/tmp/p", "/tmp", "-o", "mode=fast"]);
    assert_eq!(code(&out), 2, "bad -o mode: {}", stderr(&out));
    assert!(stderr(&out).contains("fast"));
    assert_eq!(
        code(&pfnfs(&["mount", "/tmp/p", "/tmp", "--threads", "0"])),
        2,
        "--threads 0"
    );
    assert_eq!(
        code(&pfnfs(&["/tmp/only-a-pool"])),
        2,
        "helper form without a mount point"
    );
    assert_eq!(code(&pfnfs(&["stat"])), 2, "stat without a target");
    assert_eq!(
        code(&pfnfs(&["--log-level", "loud", "stat", "/x"])),
        2,
        "bad --log-level"
    );
}

/// The flags mount(8) gives a helper: a type other than pfnfs's and another mount namespace
/// are usage errors that name the flag; `-f` (fake) succeeds and touches nothing.
#[test]
fn mount8_helper_flags() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("never.pool");
    let mnt = dir.path();
    let out = pfnfs(&[s(&pool), s(mnt), "-t", "ext4", "-o", "rw"]);
    assert_eq!(code(&out), 2, "-t ext4: {}", stderr(&out));
    assert!(
        stderr(&out).contains("-t ext4") && stderr(&out).contains("fuse.pfnfs"),
        "{}",
        stderr(&out)
    );
    let out = pfnfs(&[s(&pool), s(mnt), "-N", "/proc/1/ns/mnt"]);
    assert_eq!(code(&out), 2, "-N: {}", stderr(&out));
    assert!(stderr(&out).contains("namespace"), "{}", stderr(&out));
    let out = pfnfs(&[s(&pool), s(mnt), "-f", "-n", "-s", "-v", "-t", "fuse.pfnfs"]);
    assert_eq!(code(&out), 0, "-f: {}", stderr(&out));
    assert!(!pool.exists(), "a fake mount creates no pool");
    assert!(!is_mounted(mnt), "a fake mount mounts nothing");
}

#[test]
fn help_on_every_subcommand() {
    let top = ok(&["--help"]);
    for sub in ["mkfs", "mount", "umount", "stat", "fsck", "bench"] {
        assert!(top.contains(sub), "top-level help lists {sub}");
        let help = ok(&[sub, "--help"]);
        assert!(
            help.contains(&format!("Usage: pfnfs {sub}")),
            "{sub} --help:\n{help}"
        );
    }
    assert!(
        ok(&["mount", "--help"]).contains("mode=direct|buffered"),
        "mount --help lists -o options"
    );
}

#[test]
fn mkfs_creates_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("p.pool");
    let out = ok(&["mkfs", s(&pool), "--size", "64M"]);
    assert!(out.contains("64.0 MiB"), "{out}");
    assert_eq!(fs::metadata(&pool).unwrap().len(), 64 << 20);
    let out = pfnfs(&["mkfs", s(&pool), "--size", "64M"]);
    assert_eq!(code(&out), 1, "second mkfs without --force");
    assert!(
        stderr(&out).contains(s(&pool)) && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    ok(&["mkfs", s(&pool), "--size", "32M", "--force"]);
    assert_eq!(fs::metadata(&pool).unwrap().len(), 32 << 20);
    let stat = ok(&["stat", s(&pool), "--json"]);
    assert!(stat.contains("\"size_bytes\": 33554432"), "{stat}");
    assert!(ok(&["stat", s(&pool)]).contains("32.0 MiB"));
    let other = dir.path().join("notes.txt");
    fs::write(&other, b"precious").unwrap();
    let out = pfnfs(&["mkfs", s(&other), "--size", "64M"]);
    assert_eq!(code(&out), 1, "mkfs over a non-empty file");
    assert!(stderr(&out).contains(s(&other)), "{}", stderr(&out));
    assert_eq!(
        fs::read(&other).unwrap(),
        b"precious",
        "the file is left alone"
    );
    let out = pfnfs(&["mkfs", s(&dir.path().join("new.pool"))]);
    assert_eq!(code(&out), 2, "mkfs of a file without --size");
    let out = pfnfs(&["mkfs", s(&dir.path().join("tiny.pool")), "--size", "4096"]);
    assert_eq!(code(&out), 1, "a 4 KiB pool is too small");
    assert!(stderr(&out).contains("tiny.pool"), "{}", stderr(&out));
    let out = pfnfs(&["mkfs", "/nonexistent-dir/p.pool", "--size", "64M"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("/nonexistent-dir/p.pool"),
        "{}",
        stderr(&out)
    );
    let out = pfnfs(&["stat", s(&other)]);
    assert_eq!(code(&out), 1, "stat of a file that is not a pool");
    assert!(stderr(&out).contains(s(&other)), "{}", stderr(&out));
}

#[test]
fn daemon_mount_stat_umount() {
    if skip_without_fuse() {
        return;
    }
    let _lock = shared_mounts();
    let c = Cleanup::new();
    let (pool, mnt) = (c.pool.clone(), c.mnt().to_path_buf());
    pfnfs_bin(); // may wait for `cargo build`; not part of the mount's time
    let start = Instant::now();
    let out = pfnfs(&[
        "mount",
        s(&pool),
        s(&mnt),
        "--size",
        "64M",
        "--log-level",
        "debug",
    ]);
    assert_eq!(code(&out), 0, "mount: {}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "mount took {:?}; its log:\n{}",
        start.elapsed(),
        stderr(&out)
    );
    let line = mount_at(&mnt).expect("mounted once `pfnfs mount` returns");
    assert_eq!(
        line.source,
        s(&pool),
        "mount source is the pool path as given"
    );
    assert_eq!(
        line.fstype, "fuse.pfnfs",
        "filesystem type: FUSE with the subtype pfnfs"
    );
    assert_eq!(
        fs::metadata(&pool).unwrap().len(),
        64 << 20,
        "pool created with --size"
    );
    assert_eq!(holders(&pool).len(), 1, "one daemon holds the pool");
    fs::write(mnt.join("hello"), b"hello").unwrap();
    let text = ok(&["stat", s(&mnt)]);
    assert!(
        text.contains(s(&pool)) && text.contains("64.0 MiB"),
        "stat MOUNTPOINT:\n{text}"
    );
    // The daemon's memory, measured: the process holding the pool, its /proc/PID/status.
    let daemon_pid = holders(&pool)[0];
    assert!(
        text.contains(&format!(
            "daemon:       PID {daemon_pid} (pfnfs), measured: RssAnon "
        )),
        "stat MOUNTPOINT names the daemon and its measured RssAnon:\n{text}"
    );
    assert!(text.contains("VmHWM"), "{text}");
    assert!(
        text.contains("metadata RAM: ") && text.contains("estimated"),
        "{text}"
    );
    let json = ok(&["stat", s(&mnt), "--json"]);
    assert!(json.contains("\"mounted\": true"), "{json}");
    let value: serde_json::Value = serde_json::from_str(&json).expect("stat --json is JSON");
    assert_eq!(value["daemon"]["pid"], daemon_pid, "{json}");
    let rss_anon_kib = value["daemon"]["rss_anon_kib"].as_u64().unwrap_or(0);
    let status = fs::read_to_string(format!("/proc/{daemon_pid}/status")).unwrap();
    let now_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("RssAnon in /proc/PID/status");
    assert!(
        rss_anon_kib > 0 && rss_anon_kib.abs_diff(now_kib) < 8 * 1024,
        "stat's RssAnon {rss_anon_kib} KiB against {now_kib} KiB in /proc/{daemon_pid}/status"
    );
    assert!(
        value["daemon"]["vm_hwm_kib"].as_u64().unwrap_or(0) >= rss_anon_kib,
        "{json}"
    );
    // Two inodes (the root and "hello"): the metadata tree and the log over them.
    let per_file = value["metadata_pool_bytes_per_file"]
        .as_f64()
        .unwrap_or_else(|| panic!("{json}"));
    let pool_bytes = value["metadata_pool_bytes"].as_u64().unwrap() as f64;
    let inodes = value["inodes"].as_u64().unwrap() as f64;
    assert!(
        inodes >= 2.0 && (per_file - pool_bytes / inodes).abs() < 1.0,
        "{json}"
    );
    ok(&["stat", s(&pool)]);
    let out = pfnfs(&["mount", s(&pool), s(&mnt)]);
    assert_eq!(code(&out), 1, "mounting a mounted pool again");
    assert!(stderr(&out).contains("already mounted"), "{}", stderr(&out));
    let out = pfnfs(&["mkfs", s(&pool), "--size", "64M", "--force"]);
    assert_eq!(code(&out), 1, "mkfs --force of a mounted pool");
    ok(&["umount", s(&mnt)]);
    assert!(!is_mounted(&mnt), "unmounted when `pfnfs umount` returns");
    assert!(
        holders(&pool).is_empty(),
        "the daemon has exited when `pfnfs umount` returns"
    );
    let json = ok(&["stat", s(&pool), "--json"]);
    assert!(
        json.contains("\"mounted\": false") && json.contains("\"files\": 1"),
        "{json}"
    );
    assert!(
        json.contains("\"daemon\": null"),
        "no daemon once unmounted: {json}"
    );
    ok(&["mount", s(&pool), s(&mnt), "--mode", "buffered"]);
    assert_eq!(
        fs::read(mnt.join("hello")).unwrap(),
        b"hello",
        "data kept across mounts"
    );
    ok(&["umount", s(&pool)]);
    assert!(!is_mounted(&mnt), "umount POOL unmounts too");
    let out = pfnfs(&["umount", s(&mnt)]);
    assert_eq!(code(&out), 1, "umount of a directory that is not mounted");
    assert!(stderr(&out).contains(s(&mnt)), "{}", stderr(&out));
}

#[test]
fn mount_creates_a_pool_in_an_empty_file() {
    if skip_without_fuse() {
        return;
    }
    let _lock = shared_mounts();
    let c = Cleanup::new();
    fs::write(&c.pool, b"").unwrap();
    ok(&["mount", s(&c.pool), s(c.mnt()), "-o", "size=32M"]);
    assert_eq!(
        fs::metadata(&c.pool).unwrap().len(),
        32 << 20,
        "-o size= used for the new pool"
    );
    ok(&["umount", s(c.mnt())]);
}

#[test]
fn helper_form_and_remount() {
    if skip_without_fuse() {
        return;
    }
    let _lock = shared_mounts();
    let c = Cleanup::new();
    let (pool, mnt) = (c.pool.clone(), c.mnt().to_path_buf());
    ok(&["mkfs", s(&pool), "--size", "64M"]);
    let generic =
        "rw,dev,suid,nofail,_netdev,x-systemd.automount,defaults,relatime,auto,user,mode=buffered";
    ok(&[s(&pool), s(&mnt), "-o", generic]);
    assert!(is_mounted(&mnt), "helper form mounts and detaches");
    fs::write(mnt.join("f"), b"rw").unwrap();
    let daemons = holders(&pool);
    assert_eq!(daemons.len(), 1);
    ok(&[s(&pool), s(&mnt), "-o", "remount,ro"]);
    let line = mount_at(&mnt).expect("still mounted after remount");
    assert!(
        line.mount_options.split(',').any(|o| o == "ro"),
        "options after remount,ro: {}",
        line.mount_options
    );
    let e = expect_errno(fs::write(mnt.join("g"), b"x"), "write after remount,ro");
    assert_eq!(e, libc::EROFS);
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"rw", "reads still work");
    assert_eq!(holders(&pool), daemons, "remount starts no second daemon");
    ok(&[s(&pool), s(&mnt), "-o", "remount,rw,noatime"]);
    let line = mount_at(&mnt).unwrap();
    assert!(
        line.mount_options.split(',').any(|o| o == "rw"),
        "{}",
        line.mount_options
    );
    assert!(
        line.mount_options.split(',').any(|o| o == "noatime"),
        "{}",
        line.mount_options
    );
    fs::write(mnt.join("g"), b"writable again").unwrap();
    let other = c.dir.path().join("other.pool");
    let out = pfnfs(&[s(&other), s(&mnt), "-o", "remount,ro"]);
    assert_eq!(code(&out), 1, "remount naming another pool");
    let empty = c.dir.path().join("empty-dir");
    fs::create_dir(&empty).unwrap();
    let out = pfnfs(&[s(&pool), s(&empty), "-o", "remount,ro"]);
    assert_eq!(code(&out), 1, "remount of a directory that is not mounted");
    assert!(stderr(&out).contains("not mounted"), "{}", stderr(&out));
    ok(&["umount", s(&mnt)]);
}

#[test]
fn mount_reports_daemon_errors() {
    if skip_without_fuse() {
        return;
    }
    let _lock = shared_mounts();
    let c = Cleanup::new();
    let mut f = fs::File::create(&c.pool).unwrap();
    f.write_all(&vec![0x5a; 1 << 20]).unwrap();
    drop(f);
    pfnfs_bin();
    for extra in [&[][..], &["--foreground"][..]] {
        let mut args = vec!["mount", s(&c.pool), s(c.mnt())];
        args.extend_from_slice(extra);
        let start = Instant::now();
        let out = pfnfs(&args);
        assert_eq!(
            code(&out),
            1,
            "mount {extra:?} of a file that is not a pool"
        );
        assert!(start.elapsed() < Duration::from_secs(20));
        let err = stderr(&out);
        assert!(
            err.contains(s(&c.pool)) && err.contains("not a pfnfs pool"),
            "message: {err}"
        );
        assert!(!is_mounted(c.mnt()), "nothing mounted after a failed mount");
        assert!(
            holders(&c.pool).is_empty(),
            "no daemon left after a failed mount"
        );
    }
    let out = pfnfs(&["mount", s(&c.pool), s(&c.dir.path().join("missing-dir"))]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("missing-dir"), "{}", stderr(&out));
}

#[test]
fn sigterm_unmounts_cleanly() {
    if skip_without_fuse() {
        return;
    }
    let _lock = shared_mounts();
    let c = Cleanup::new();
    let (pool, mnt) = (c.pool.clone(), c.mnt().to_path_buf());
    ok(&["mount", s(&pool), s(&mnt), "--size", "64M"]);
    fs::write(mnt.join("kept"), b"before SIGTERM").unwrap();
    let daemons = holders(&pool);
    assert_eq!(daemons.len(), 1);
    // The daemon this test started.
    assert!(send_signal(daemons[0], "TERM"));
    wait_until("unmount after SIGTERM", Duration::from_secs(30), || {
        !is_mounted(&mnt)
    });
    wait_until("daemon exit after SIGTERM", Duration::from_secs(30), || {
        holders(&pool).is_empty()
    });
    let json = ok(&["stat", s(&pool), "--json"]);
    assert!(
        json.contains("\"mounted\": false"),
        "clean unmount after SIGTERM: {json}"
    );
    ok(&["mount", s(&pool), s(&mnt)]);
    assert_eq!(fs::read(mnt.join("kept")).unwrap(), b"before SIGTERM");
    ok(&["umount", s(&mnt)]);
}

#[test]
fn two_pools_two_mounts() {
    if skip_without_fuse() {
        return;
    }
    let _lock = shared_mounts();
    let mut c = Cleanup::new();
    let second = c.extra_mount_point("mnt2");
    let pool2 = c.dir.path().join("second.pool");
    ok(&["mount", s(&c.pool), s(c.mnt()), "--size", "64M"]);
    ok(&["mount", s(&pool2), s(&second), "--size", "64M"]);
    fs::write(c.mnt().join("one"), b"1").unwrap();
    fs::write(second.join("two"), b"2").unwrap();
    assert!(
        !second.join("one").exists() && !c.mnt().join("two").exists(),
        "pools are separate"
    );
    ok(&["umount", s(&second)]);
    assert!(holders(&pool2).is_empty());
    ok(&["umount", s(c.mnt())]);
}

/// A second mount of a mounted pool (xfstests generic/732) binds the first mount: both mount
/// points show the same filesystem, one daemon serves both, and it exits only after the last
/// of them is unmounted.
#[test]
fn one_pool_on_two_mount_points() {
    if skip_without_fuse() {
        return;
    }
    if !is_root() {
        eprintln!("SKIP: a second mount of a pool is a bind mount, which needs root");
        return;
    }
    let _lock = shared_mounts();
    let mut c = Cleanup::new();
    let second = c.extra_mount_point("mnt2");
    let (pool, first) = (c.pool.clone(), c.mnt().to_path_buf());
    ok(&["mount", s(&pool), s(&first), "--size", "64M"]);
    let daemons = holders(&pool);
    assert_eq!(daemons.len(), 1, "one daemon");
    ok(&["mount", s(&pool), s(&second)]);
    assert!(is_mounted(&second), "second mount point is mounted");
    assert_eq!(holders(&pool), daemons, "no second daemon");
    assert_eq!(
        mount_at(&second).expect("second mount").source,
        s(&pool),
        "second mount shows the pool as its source"
    );
    fs::write(first.join("via-first"), b"one").unwrap();
    assert_eq!(fs::read(second.join("via-first")).unwrap(), b"one");
    fs::write(second.join("via-second"), b"two").unwrap();
    assert_eq!(fs::read(first.join("via-second")).unwrap(), b"two");
    let out = pfnfs(&["mount", s(&pool), s(&second)]);
    assert_eq!(code(&out), 1, "mounting again on the same mount point");
    assert!(stderr(&out).contains("already mounted"), "{}", stderr(&out));

    ok(&["umount", s(&first)]);
    assert!(!is_mounted(&first), "first mount point unmounted");
    assert!(is_mounted(&second), "second mount point still mounted");
    assert_eq!(
        holders(&pool),
        daemons,
        "the daemon still serves the second mount"
    );
    assert_eq!(fs::read(second.join("via-first")).unwrap(), b"one");
    fs::write(second.join("after"), b"three").unwrap();
    assert_eq!(fs::read(second.join("after")).unwrap(), b"three");

    ok(&["umount", s(&second)]);
    assert!(!is_mounted(&second), "second mount point unmounted");
    assert!(
        holders(&pool).is_empty(),
        "the daemon has exited once the last mount is gone"
    );
    ok(&["mount", s(&pool), s(&first)]);
    assert_eq!(
        fs::read(first.join("after")).unwrap(),
        b"three",
        "data kept"
    );
    ok(&["umount", s(&first)]);
}

/// mount(8) as a user would drive it. The kernel lists a pfnfs mount as type `fuse.pfnfs`, so
/// mount(8) hands `mount -o remount,ro MOUNTPOINT` (no `-t`) to `mount.fuse.pfnfs` when that
/// helper is installed and otherwise to `mount.fuse3`, which runs `pfnfs` from a minimal
/// PATH (so the binary must be in /usr/local/bin). Both routes are run, each for a mount made
/// by `pfnfs mount`, by `mount -t fuse.pfnfs` and from an fstab line: remount read-only and
/// back without `-t` (with the pool's mode 0755, so a helper that took the pool for a program
/// would run it and fail), no warning about the options mount(8) hands back, `findmnt -t
/// fuse.pfnfs`, `df -T`, `umount -a -t fuse.pfnfs` (with `--fake`: it would end every pfnfs
/// mount on the machine) and `umount -t fuse.pfnfs`.
///
/// Nothing is installed: the script runs in a private mount namespace, with a directory
/// holding the fresh binary bound over /usr/local/bin and an overlay on /usr/sbin in which
/// `mount.fuse.pfnfs` is first removed and then added (a script that logs its arguments and
/// execs the binary under that name).
#[test]
fn mount8_with_type_fuse_pfnfs_and_fstab() {
    if skip_without_fuse() {
        return;
    }
    let _lock = exclusive_mounts();
    if Command::new("unshare").arg("--version").output().is_err()
        || !Path::new("/sbin/mount.fuse3").exists()
    {
        eprintln!("SKIP: unshare or /sbin/mount.fuse3 missing");
        return;
    }
    if !is_root() {
        eprintln!("SKIP: mount(8) test needs root");
        return;
    }
    let c = Cleanup::new();
    let dir = c.dir.path();
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    fs::copy(pfnfs_bin(), bin.join("pfnfs")).unwrap();
    fs::set_permissions(bin.join("pfnfs"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(dir.join("sbin-upper")).unwrap();
    let fstab = dir.join("fstab");
    let (pool, mnt) = (s(&c.pool), s(c.mnt()));
    fs::write(
        &fstab,
        format!("{pool} {mnt} fuse.pfnfs defaults,mode=buffered,nofail,size=64M 0 0\n"),
    )
    .unwrap();
    let script = format!(
        r#"
set -euo pipefail
trap 'umount -l {mnt} 2>/dev/null || true; umount -l /usr/sbin 2>/dev/null || true' EXIT
mount --bind {bin} /usr/local/bin
mount -t tmpfs tmpfs {dir}/sbin-upper
mkdir {dir}/sbin-upper/u {dir}/sbin-upper/w
mount -t overlay overlay -o lowerdir=/usr/sbin,upperdir={dir}/sbin-upper/u,workdir={dir}/sbin-upper/w /usr/sbin

fail() {{ echo "FAIL ($route, $how): $*"; exit 1; }}
mounted_as_pfnfs() {{
    test "$(findmnt -n -t fuse.pfnfs -o SOURCE,FSTYPE {mnt})" = "{pool} fuse.pfnfs" \
        || fail "findmnt -t fuse.pfnfs: $(findmnt -n {mnt} || true)"
    test "$(df -T -P {mnt} | awk 'NR == 2 {{ print $2 }}')" = fuse.pfnfs \
        || fail "df -T: $(df -T {mnt})"
}}
# mount -o remount,ro|rw MOUNTPOINT: no -t, no warning, the kernel's ro flag follows.
remount_ro_and_back() {{
    local extra=("$@")
    mount "${{extra[@]}}" -o remount,ro {mnt} 2>{dir}/err || fail "remount,ro: $(cat {dir}/err)"
    test ! -s {dir}/err || fail "remount,ro said: $(cat {dir}/err)"
    grep " {mnt} " /proc/self/mountinfo | grep -q " ro," || fail "not read-only after remount,ro"
    if echo x > {mnt}/ro-write 2>/dev/null; then fail "write succeeded after remount,ro"; fi
    mount "${{extra[@]}}" -o remount,rw {mnt} 2>{dir}/err || fail "remount,rw: $(cat {dir}/err)"
    test ! -s {dir}/err || fail "remount,rw said: $(cat {dir}/err)"
    grep " {mnt} " /proc/self/mountinfo | grep -q " rw," || fail "not read-write after remount,rw"
    echo "$how" > {mnt}/"$how-$route"
}}
rounds() {{
    how="pfnfs mount"
    /usr/local/bin/pfnfs mount {pool} {mnt} --size 64M
    chmod 0755 {pool}
    mounted_as_pfnfs
    remount_ro_and_back
    umount -t fuse.pfnfs {mnt}
    if grep -q " {mnt} " /proc/self/mountinfo; then fail "still mounted after umount -t fuse.pfnfs"; fi

    how="mount -t fuse.pfnfs"
    mount -t fuse.pfnfs -o mode=direct,nosuid {pool} {mnt}
    mounted_as_pfnfs
    remount_ro_and_back
    remount_ro_and_back -t fuse.pfnfs
    grep " {mnt} " /proc/self/mountinfo | grep -q "nosuid" || fail "remount lost nosuid"
    umount {pool}
    if grep -q " {mnt} " /proc/self/mountinfo; then fail "still mounted after umount POOL"; fi

    how="fstab"
    mount --fstab {fstab} {mnt}
    mounted_as_pfnfs
    remount_ro_and_back
    remount_ro_and_back --fstab {fstab}
    umount --fake -v -a -t fuse.pfnfs > {dir}/fake
    grep -q "^{mnt} *: successfully unmounted" {dir}/fake || fail "umount -a -t fuse.pfnfs does not find it: $(cat {dir}/fake)"
    grep -q " {mnt} " /proc/self/mountinfo || fail "umount --fake unmounted it"
    umount -t fuse.pfnfs {mnt}
}}

route=mount.fuse3
rm -f /usr/sbin/mount.fuse.pfnfs
rounds
test ! -e {dir}/helper.log || fail "mount.fuse.pfnfs ran although it was removed"

route=mount.fuse.pfnfs
printf '#!/bin/bash\necho "$*" >> {dir}/helper.log\nexec -a "$0" /usr/local/bin/pfnfs "$@"\n' > /usr/sbin/mount.fuse.pfnfs
chmod 0755 /usr/sbin/mount.fuse.pfnfs
rounds
test "$(grep -c remount {dir}/helper.log)" = 10 || fail "mount.fuse.pfnfs did not do every remount: $(cat {dir}/helper.log)"

/usr/local/bin/pfnfs mount {pool} {mnt}
for f in "pfnfs mount" "mount -t fuse.pfnfs" fstab; do
    for r in mount.fuse3 mount.fuse.pfnfs; do
        test "$(cat "{mnt}/$f-$r")" = "$f" || fail "{mnt}/$f-$r"
    done
done
umount {mnt}
"#,
        bin = s(&bin),
        dir = s(dir),
        fstab = s(&fstab),
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &script])
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "mount(8) script failed ({}):\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    wait_until("daemon exit", Duration::from_secs(30), || {
        holders(&c.pool).is_empty()
    });
}

#[test]
fn read_only_mount_refuses_writes() {
    if skip_without_fuse() {
        return;
    }
    let _lock = shared_mounts();
    let c = Cleanup::new();
    ok(&["mkfs", s(&c.pool), "--size", "64M"]);
    ok(&["mount", s(&c.pool), s(c.mnt())]);
    fs::write(c.mnt().join("f"), b"x").unwrap();
    ok(&["umount", s(c.mnt())]);
    ok(&["mount", s(&c.pool), s(c.mnt()), "-o", "ro"]);
    assert_eq!(fs::read(c.mnt().join("f")).unwrap(), b"x");
    assert_eq!(
        expect_errno(fs::write(c.mnt().join("g"), b"y"), "write on a ro mount"),
        libc::EROFS
    );
    let out = pfnfs(&[s(&c.pool), s(c.mnt()), "-o", "remount,rw"]);
    assert_eq!(
        code(&out),
        1,
        "remount,rw of a pool whose daemon opened it read-only"
    );
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    assert_eq!(
        expect_errno(
            sys::mknod(&c.mnt().join("n"), libc::S_IFIFO | 0o644, 0),
            "mknod on ro"
        ),
        libc::EROFS
    );
    ok(&["umount", s(c.mnt())]);
    let missing = c.dir.path().join("missing.pool");
    let out = pfnfs(&["mount", s(&missing), s(c.mnt()), "-o", "ro"]);
    assert_eq!(code(&out), 1, "a read-only mount does not create a pool");
    assert!(!missing.exists());
}

/// `umount` (the kernel's) returns before the daemon has written its last checkpoint; a
/// `pfnfs mount` right after it must wait for that daemon instead of failing or racing it.
#[test]
fn mount_right_after_a_plain_umount() {
    if skip_without_fuse() {
        return;
    }
    let _lock = shared_mounts();
    let c = Cleanup::new();
    let (pool, mnt) = (c.pool.clone(), c.mnt().to_path_buf());
    for round in 0..3u8 {
        ok(&["mount", s(&pool), s(&mnt), "--size", "64M"]);
        fs::write(mnt.join(format!("round{round}")), vec![round; 4 << 20]).unwrap();
        // The kernel's unmount, not `pfnfs umount`: it does not wait for the daemon. A file
        // closed just now can keep the mount busy for a moment, so retry that.
        let start = Instant::now();
        loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&mnt)
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                stderr(&out).contains("busy") && start.elapsed() < Duration::from_secs(5),
                "fusermount3 -u: {}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    ok(&["mount", s(&pool), s(&mnt)]);
    for round in 0..3u8 {
        assert_eq!(
            fs::read(mnt.join(format!("round{round}"))).unwrap(),
            vec![round; 4 << 20]
        );
    }
    ok(&["umount", s(&mnt)]);
}
