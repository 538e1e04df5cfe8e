//! Users and permissions on a mount with `-o allow_other` (default_permissions is always on),
//! both modes: two unprivileged users (created here with useradd; names fixed, existing ones
//! reused) try to read, write, truncate, chmod, chown, unlink, rename into and set xattrs on
//! what they have no rights to; setuid/setgid bits must be cleared as Linux clears them;
//! sticky directories protect other users' files; `trusted.*` is root-only.
//!
//! Every script runs twice, on the pfnfs mount and on a tmpfs directory (/dev/shm) built the
//! same way, and the errno of each step (and every mode and owner afterwards) must be what
//! tmpfs gives; the main expectations are also asserted explicitly.
//!
//! The unprivileged steps run in a copy of this test binary (test `helper`, which runs a
//! script of steps and prints one result per step), started with the user's uid and gid and
//! no supplementary groups (`pfnfs_tests::users`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pfnfs_tests::sys::{self, errno};
use pfnfs_tests::users::{self, Helper, Ids};
use pfnfs_tests::{Mode, MountGuard, is_root, skip_without_fuse};

// ---- the helper: runs steps as whoever started it ------------------------------------------

/// One step's outcome: `ok` (with what it read) or the errno.
fn run_step(line: &str) -> String {
    let w: Vec<&str> = line.split(' ').collect();
    let p = |i: usize| PathBuf::from(w[i]);
    let num = |i: usize| u32::from_str_radix(w[i], 8).unwrap();
    let id = |i: usize| -> u32 {
        if w[i] == "-" {
            u32::MAX
        } else {
            w[i].parse().unwrap()
        }
    };
    let r: std::io::Result<String> = match w[0] {
        "read" => fs::read(p(1)).map(|d| String::from_utf8_lossy(&d).into_owned()),
        "write" => OpenOptions::new()
            .write(true)
            .open(p(1))
            .and_then(|mut f| f.write_all(b"w").and_then(|()| f.sync_all()))
            .map(|()| String::new()),
        "truncate" => OpenOptions::new()
            .write(true)
            .open(p(1))
            .and_then(|f| f.set_len(w[2].parse().unwrap()))
            .map(|()| String::new()),
        "chmod" => {
            fs::set_permissions(p(1), fs::Permissions::from_mode(num(2))).map(|()| "".into())
        }
        "chown" => sys::lchown(&p(1), id(2), id(3)).map(|()| String::new()),
        "unlink" => fs::remove_file(p(1)).map(|()| String::new()),
        "rmdir" => fs::remove_dir(p(1)).map(|()| String::new()),
        "mkdir" => fs::DirBuilder::new()
            .mode(num(2))
            .create(p(1))
            .map(|()| String::new()),
        "create" => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(num(2))
            .open(p(1))
            .map(|_| String::new()),
        "rename" => fs::rename(p(1), p(2)).map(|()| String::new()),
        "setx" => sys::setxattr(&p(1), w[2], w[3].as_bytes(), 0).map(|()| String::new()),
        "getx" => sys::getxattr(&p(1), w[2]).map(|v| String::from_utf8_lossy(&v).into_owned()),
        "listx" => sys::listxattr(&p(1)).map(|n| n.join(",")),
        "rmx" => sys::removexattr(&p(1), w[2]).map(|()| String::new()),
        "stat" => fs::symlink_metadata(p(1))
            .map(|m| format!("{:o} {} {}", m.mode() & 0o7777, m.uid(), m.gid())),
        other => panic!("unknown step {other}"),
    };
    match r {
        Ok(s) => format!("ok {s}"),
        Err(e) => format!("errno {}", errno(&e)),
    }
}

/// Under a parent test: runs its script and prints the outcome of each step. Alone: checks
/// the step runner on a scratch directory as this user.
#[test]
fn helper() {
    if users::serve_script(run_step) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = format!(
        "create {d}/f 640\nwrite {d}/f\nread {d}/f\nstat {d}/f\ncreate {d}/f 600\n\
         unlink {d}/none\nmkdir {d}/sub 750\nrename {d}/f {d}/sub/g\nrmdir {d}/sub"
    );
    let got: Vec<String> = script.lines().map(run_step).collect();
    let uid = fs::metadata(dir.path()).unwrap().uid();
    let gid = fs::metadata(dir.path()).unwrap().gid();
    assert_eq!(
        got,
        [
            "ok ".to_string(),
            "ok ".into(),
            "ok w".into(),
            format!("ok 640 {uid} {gid}"),
            format!("errno {}", libc::EEXIST),
            format!("errno {}", libc::ENOENT),
            "ok ".into(),
            "ok ".into(),
            format!("errno {}", libc::ENOTEMPTY),
        ]
    );
}

// ---- the scenario --------------------------------------------------------------------------

/// Builds the tree under `b` as root.
fn setup(b: &Path, u: Ids, u2: Ids) {
    let file = |name: &str, mode: u32, owner: Option<(u32, u32)>| {
        let p = b.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(name.as_bytes()).unwrap();
        if let Some((uid, gid)) = owner {
            sys::lchown(&p, uid, gid).unwrap();
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    let dir = |name: &str, mode: u32, owner: Option<(u32, u32)>| {
        let p = b.join(name);
        fs::create_dir(&p).unwrap();
        if let Some((uid, gid)) = owner {
            sys::lchown(&p, uid, gid).unwrap();
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    fs::set_permissions(b, fs::Permissions::from_mode(0o755)).unwrap();
    file("secret", 0o600, None);
    file("ro", 0o644, None);
    dir("locked", 0o755, None);
    file("locked/inside", 0o666, None);
    dir("pub", 0o777, None);
    file("pub/mine", 0o644, Some((u.uid, u.gid)));
    sys::setxattr(&b.join("pub/mine"), "trusted.t", b"root-only", 0).unwrap();
    sys::setxattr(&b.join("pub/mine"), "user.u", b"visible", 0).unwrap();
    sys::setxattr(&b.join("secret"), "user.s", b"hidden", 0).unwrap();
    file("s_write", 0o6777, None);
    file("s_write_nogx", 0o6766, None);
    file("s_trunc", 0o6777, None);
    file("s_chown", 0o6755, Some((u.uid, u.gid)));
    file("s_chown_same", 0o6755, Some((u.uid, u.gid)));
    file("s_chmod", 0o644, Some((u.uid, 0)));
    dir("sgid", 0o2777, Some((0, u2.gid)));
    dir("sticky", 0o1777, None);
}

/// What user2 does first: a file of its own in the sticky directory.
fn user2_steps(b: &Path) -> Vec<String> {
    let b = b.display();
    vec![
        format!("create {b}/sticky/theirs 666"),
        format!("chmod {b}/sticky/theirs 666"),
        format!("create {b}/pub/theirs 644"),
    ]
}

/// What the test user tries: (step, expected outcome on Linux; None = compare with tmpfs
/// only).
fn user_steps(b: &Path, u: Ids, u2: Ids) -> Vec<(String, Option<String>)> {
    let b = b.display();
    let eacces = Some(format!("errno {}", libc::EACCES));
    let eperm = Some(format!("errno {}", libc::EPERM));
    let enodata = Some(format!("errno {}", libc::ENODATA));
    let ok = Some("ok ".to_string());
    vec![
        // No rights on root's 0600 file.
        (format!("read {b}/secret"), eacces.clone()),
        (format!("write {b}/secret"), eacces.clone()),
        (format!("truncate {b}/secret 0"), eacces.clone()),
        (format!("chmod {b}/secret 666"), eperm.clone()),
        (format!("chown {b}/secret {} -", u.uid), eperm.clone()),
        (format!("chown {b}/secret - {}", u.gid), eperm.clone()),
        (format!("setx {b}/secret user.x v"), eacces.clone()),
        (format!("getx {b}/secret user.s"), eacces.clone()),
        (format!("rmx {b}/secret user.s"), eacces.clone()),
        (format!("unlink {b}/secret"), eacces.clone()),
        (format!("rename {b}/secret {b}/pub/stolen"), eacces.clone()),
        // Read-only for others: reading works, nothing else.
        (format!("read {b}/ro"), Some("ok ro".into())),
        (format!("write {b}/ro"), eacces.clone()),
        (format!("truncate {b}/ro 1"), eacces.clone()),
        (format!("chmod {b}/ro 777"), eperm.clone()),
        // A directory of root's: no create, unlink, rename into or out of it.
        (format!("create {b}/locked/new 644"), eacces.clone()),
        (format!("mkdir {b}/locked/newdir 755"), eacces.clone()),
        (format!("unlink {b}/locked/inside"), eacces.clone()),
        (format!("write {b}/locked/inside"), ok.clone()),
        (
            format!("rename {b}/pub/mine {b}/locked/mine"),
            eacces.clone(),
        ),
        (
            format!("rename {b}/locked/inside {b}/pub/inside"),
            eacces.clone(),
        ),
        (format!("rmdir {b}/locked"), eacces.clone()),
        // Its own file: no giving it away, no group it is not in.
        (format!("chown {b}/pub/mine {} -", u2.uid), eperm.clone()),
        (format!("chown {b}/pub/mine - 0"), eperm.clone()),
        (format!("chown {b}/pub/mine - {}", u.gid), ok.clone()),
        // trusted.* is root's: invisible and untouchable for others.
        (format!("getx {b}/pub/mine trusted.t"), enodata.clone()),
        (format!("setx {b}/pub/mine trusted.x v"), eperm.clone()),
        (format!("rmx {b}/pub/mine trusted.t"), eperm.clone()),
        (format!("listx {b}/pub/mine"), Some("ok user.u".into())),
        (
            format!("getx {b}/pub/mine user.u"),
            Some("ok visible".into()),
        ),
        (format!("setx {b}/pub/mine user.mine v"), ok.clone()),
        // Another user's file in a world-writable directory: no rename over it.
        (format!("rename {b}/pub/mine {b}/pub/theirs"), ok.clone()),
        (format!("create {b}/pub/mine 644"), ok.clone()),
        // Sticky directory: the other user's file cannot be removed or renamed, not even
        // by renaming over it; its contents are still writable (0666); own files go.
        (format!("create {b}/sticky/own 644"), ok.clone()),
        (format!("unlink {b}/sticky/theirs"), eperm.clone()),
        (
            format!("rename {b}/sticky/theirs {b}/sticky/moved"),
            eperm.clone(),
        ),
        (
            format!("rename {b}/sticky/own {b}/sticky/theirs"),
            eperm.clone(),
        ),
        (format!("write {b}/sticky/theirs"), ok.clone()),
        (format!("rename {b}/sticky/own {b}/sticky/own2"), ok.clone()),
        (format!("unlink {b}/sticky/own2"), ok.clone()),
        // setuid/setgid dropped by a write or truncate of someone else's file.
        (format!("write {b}/s_write"), ok.clone()),
        (format!("stat {b}/s_write"), Some("ok 777 0 0".into())),
        (format!("write {b}/s_write_nogx"), ok.clone()),
        (format!("stat {b}/s_write_nogx"), Some("ok 766 0 0".into())),
        (format!("truncate {b}/s_trunc 1"), ok.clone()),
        (format!("stat {b}/s_trunc"), Some("ok 777 0 0".into())),
        // chmod by an owner outside the file's group: setgid silently dropped; setuid kept.
        (format!("chmod {b}/s_chmod 2755"), ok.clone()),
        (
            format!("stat {b}/s_chmod"),
            Some(format!("ok 755 {} 0", u.uid)),
        ),
        (format!("chmod {b}/s_chmod 4755"), ok.clone()),
        (
            format!("stat {b}/s_chmod"),
            Some(format!("ok 4755 {} 0", u.uid)),
        ),
        // In a setgid directory: new entries take its group, directories its setgid bit;
        // a file asking for setgid in a group it is not in does not get it.
        (format!("mkdir {b}/sgid/sub 755"), ok.clone()),
        (
            format!("stat {b}/sgid/sub"),
            Some(format!("ok 2755 {} {}", u.uid, u2.gid)),
        ),
        (format!("create {b}/sgid/f 644"), ok.clone()),
        (
            format!("stat {b}/sgid/f"),
            Some(format!("ok 644 {} {}", u.uid, u2.gid)),
        ),
        (format!("create {b}/sgid/g 2755"), ok.clone()),
        (
            format!("stat {b}/sgid/g"),
            Some(format!("ok 755 {} {}", u.uid, u2.gid)),
        ),
    ]
}

/// Runs the whole scenario under `b` (already empty); returns every outcome and, at the
/// end, the mode and owner of every entry, for the comparison with tmpfs.
fn scenario(
    helper: &Helper,
    b: &Path,
    u: Ids,
    u2: Ids,
) -> (Vec<(String, Option<String>, String)>, String) {
    setup(b, u, u2);
    helper.run_as(u2, &user2_steps(b));
    let steps = user_steps(b, u, u2);
    let lines: Vec<String> = steps.iter().map(|(s, _)| s.clone()).collect();
    let got = helper.run_as(u, &lines);
    // chown by root clears setuid and (group-executable) setgid.
    sys::lchown(&b.join("s_chown"), u2.uid, u2.gid).unwrap();
    let mut outcome: Vec<(String, Option<String>, String)> = steps
        .into_iter()
        .zip(got)
        .map(|((s, want), got)| (s.replace(&b.display().to_string(), "B"), want, got))
        .collect();
    outcome.push((
        "root chown s_chown".into(),
        Some(format!("ok 755 {} {}", u2.uid, u2.gid)),
        run_step(&format!("stat {}/s_chown", b.display())),
    ));
    // Even a chown to the owner it has (xfstests generic/193).
    sys::lchown(&b.join("s_chown_same"), u.uid, u.gid).unwrap();
    outcome.push((
        "root chown s_chown_same to its owner".into(),
        Some(format!("ok 755 {} {}", u.uid, u.gid)),
        run_step(&format!("stat {}/s_chown_same", b.display())),
    ));
    // Root reads trusted.* as before.
    outcome.push((
        "root getx trusted.t".into(),
        Some("ok root-only".into()),
        run_step(&format!("getx {}/pub/theirs trusted.t", b.display())),
    ));
    let mut tree = BTreeMap::new();
    for e in walk(b) {
        let m = fs::symlink_metadata(&e).unwrap();
        tree.insert(
            e.strip_prefix(b).unwrap().display().to_string(),
            format!("{:o} {} {}", m.mode(), m.uid(), m.gid()),
        );
    }
    (outcome, format!("{tree:#?}"))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn permissions(mode: Mode) {
    if skip_without_fuse() {
        return;
    }
    assert!(
        is_root(),
        "the permission tests create users and must run as root"
    );
    let (u, u2) = users::test_users();
    let mut guard = MountGuard::with_options(mode, &["allow_other"]);
    // The guard's temp dir is 0700; the users must be able to walk to the mount.
    let top = guard.path().parent().unwrap().to_path_buf();
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
    let reference = tempfile::Builder::new()
        .prefix("pfnfs-perm-ref-")
        .tempdir_in("/dev/shm")
        .expect("a tmpfs directory in /dev/shm for the reference run");
    let helper = Helper::new();
    let (ours, our_tree) = scenario(&helper, guard.path(), u, u2);
    let (theirs, their_tree) = scenario(&helper, reference.path(), u, u2);
    let mut problems = Vec::new();
    for ((step, want, got), (_, _, tmpfs)) in ours.iter().zip(&theirs) {
        if got != tmpfs {
            problems.push(format!("{step}: pfnfs {got}, tmpfs {tmpfs}"));
        }
        if let Some(w) = want
            && got != w
        {
            problems.push(format!("{step}: pfnfs {got}, expected {w}"));
        }
    }
    if our_tree != their_tree {
        problems.push(format!(
            "modes and owners differ:\npfnfs {our_tree}\ntmpfs {their_tree}"
        ));
    }
    assert!(
        problems.is_empty(),
        "{mode:?}:\n{}\ndaemon log:\n{}",
        problems.join("\n"),
        guard.log()
    );
    // The same after a remount: modes, owners and xattrs are durable.
    guard.remount();
    let mut tree = BTreeMap::new();
    for e in walk(guard.path()) {
        let m = fs::symlink_metadata(&e).unwrap();
        tree.insert(
            e.strip_prefix(guard.path()).unwrap().display().to_string(),
            format!("{:o} {} {}", m.mode(), m.uid(), m.gid()),
        );
    }
    assert_eq!(format!("{tree:#?}"), our_tree, "after remount");
    assert_eq!(
        sys::getxattr(&guard.join("pub/theirs"), "trusted.t").unwrap(),
        b"root-only"
    );
    guard.unmount().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn unprivileged_users_direct() {
    permissions(Mode::Direct)
}

#[test]
fn unprivileged_users_buffered() {
    permissions(Mode::Buffered)
}
