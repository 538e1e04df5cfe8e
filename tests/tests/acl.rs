//! POSIX ACLs through a mount (`allow_other`, default permissions), both modes: the kernel
//! enforces what the daemon stores, chmod and setting an ACL keep mode and ACL in step (the
//! kernel's cached ACL included), new files inherit a directory's default ACL and ignore the
//! umask, the umask applies without one, and all of it survives a remount. Other users are
//! plain uid/gid numbers (no accounts needed): the test runs `sh` with `Command::uid/gid`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use pfnfs_tests::sys::{self, errno};
use pfnfs_tests::{Mode, MountGuard, skip_without_fuse};

const ACCESS: &str = "system.posix_acl_access";
const DEFAULT: &str = "system.posix_acl_default";

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// A user and a group no file here belongs to.
const UID: u32 = 4242;
const GID: u32 = 4343;

/// The kernel's `posix_acl_xattr` format: version 2, then (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// (tag, perm) of each entry of a stored ACL.
fn entries(path: &Path, name: &str) -> Vec<(u16, u16)> {
    let v = sys::getxattr(path, name).unwrap();
    assert_eq!(&v[..4], &2u32.to_le_bytes());
    v[4..]
        .chunks_exact(8)
        .map(|e| {
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
            )
        })
        .collect()
}

/// Runs `script` with `sh -c` as `uid`:`gid` (no supplementary groups); true if it succeeded.
fn as_user(uid: u32, gid: u32, script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .uid(uid)
        .gid(gid)
        .stderr(Stdio::null())
        .status()
        .expect("run sh")
        .success()
}

/// Runs `script` with `sh -c` as root.
fn as_root(script: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", script])
            .status()
            .unwrap()
            .success(),
        "{script}"
    );
}

fn perm(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn run(mode: Mode, body: fn(&mut MountGuard)) {
    if skip_without_fuse() {
        return;
    }
    let mut guard = MountGuard::with_options(mode, &["allow_other"]);
    body(&mut guard);
    if let Err(e) = guard.unmount() {
        panic!("after the test: {e}");
    }
}

macro_rules! both_modes_allow_other {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn direct() {
                    super::run(super::Mode::Direct, super::$name)
                }

                #[test]
                fn buffered() {
                    super::run(super::Mode::Buffered, super::$name)
                }
            }
        )*
    };
}

both_modes_allow_other!(
    access_acl_is_enforced_and_follows_chmod,
    default_acl_is_inherited_and_replaces_the_umask,
    invalid_acls_are_refused,
);

fn access_acl_is_enforced_and_follows_chmod(m: &mut MountGuard) {
    fs::set_permissions(m.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let f = m.join("f");
    fs::write(&f, b"secret").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let cat = format!("cat {} >/dev/null", f.display());
    let write = format!("echo x >> {}", f.display());
    assert!(
        !as_user(UID, UID, &cat),
        "0600 file readable by another user"
    );
    // u:UID:r--, g:GID:rw-, mask rw-: the mode's group bits become the mask.
    let entries_set = acl(&[
        (USER_OBJ, 6, u32::MAX),
        (USER, 4, UID),
        (GROUP_OBJ, 0, u32::MAX),
        (GROUP, 6, GID),
        (MASK, 6, u32::MAX),
        (OTHER, 0, u32::MAX),
    ]);
    sys::setxattr(&f, ACCESS, &entries_set, 0).unwrap();
    assert_eq!(perm(&f), 0o660);
    assert_eq!(sys::getxattr(&f, ACCESS).unwrap(), entries_set);
    assert!(as_user(UID, UID, &cat), "named user entry not honoured");
    assert!(!as_user(UID, UID, &write), "named user may only read");
    assert!(
        as_user(UID + 1, GID, &write),
        "named group entry not honoured"
    );
    assert!(
        !as_user(UID + 1, UID + 1, &cat),
        "other users have no access"
    );
    // chmod 0600 sets the mask to ---: the kernel's cached ACL must follow.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let e = entries(&f, ACCESS);
    assert_eq!(e[4], (MASK, 0));
    assert_eq!(e[1], (USER, 4), "named entries stay");
    assert!(
        !as_user(UID, UID, &cat),
        "the mask no longer allows reading"
    );
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(as_user(UID, UID, &cat));
    // Remount: the ACL and the mode come back from the pool.
    m.remount();
    assert_eq!(perm(&f), 0o640);
    assert_eq!(entries(&f, ACCESS)[4], (MASK, 4));
    assert!(as_user(UID, UID, &cat));
    assert!(!as_user(UID, UID, &write));
    // An ACL the mode expresses replaces the mode's bits and is not stored.
    let minimal = acl(&[
        (USER_OBJ, 6, u32::MAX),
        (GROUP_OBJ, 4, u32::MAX),
        (OTHER, 4, u32::MAX),
    ]);
    sys::setxattr(&f, ACCESS, &minimal, 0).unwrap();
    assert_eq!(perm(&f), 0o644);
    assert_eq!(
        errno(&sys::getxattr(&f, ACCESS).unwrap_err()),
        libc::ENODATA
    );
    assert!(sys::listxattr(&f).unwrap().is_empty());
}

fn default_acl_is_inherited_and_replaces_the_umask(m: &mut MountGuard) {
    fs::set_permissions(m.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let plain = m.join("plain");
    let d = m.join("d");
    fs::create_dir(&plain).unwrap();
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    // default: u::rwx, u:UID:rwx, g::r-x, m::rwx, o::r-x
    let default = acl(&[
        (USER_OBJ, 7, u32::MAX),
        (USER, 7, UID),
        (GROUP_OBJ, 5, u32::MAX),
        (MASK, 7, u32::MAX),
        (OTHER, 5, u32::MAX),
    ]);
    sys::setxattr(&d, DEFAULT, &default, 0).unwrap();
    assert_eq!(perm(&d), 0o755);
    // The same umask in both directories: it applies only where there is no default ACL.
    for dir in [&plain, &d] {
        as_root(&format!(
            "cd {} && umask 077 && echo data > f && mkdir sub && mkfifo p",
            dir.display()
        ));
    }
    assert_eq!(perm(&plain.join("f")), 0o600);
    assert_eq!(perm(&plain.join("sub")), 0o700);
    assert_eq!(perm(&plain.join("p")), 0o600);
    assert!(sys::listxattr(&plain.join("f")).unwrap().is_empty());
    // Under the default ACL: mode = requested & ACL, and an access ACL with the named user.
    assert_eq!(perm(&d.join("f")), 0o664);
    assert_eq!(perm(&d.join("sub")), 0o775);
    assert_eq!(perm(&d.join("p")), 0o664);
    assert_eq!(
        entries(&d.join("f"), ACCESS),
        vec![
            (USER_OBJ, 6),
            (USER, 7),
            (GROUP_OBJ, 5),
            (MASK, 6),
            (OTHER, 4)
        ]
    );
    assert_eq!(sys::getxattr(&d.join("sub"), DEFAULT).unwrap(), default);
    assert_eq!(
        errno(&sys::getxattr(&d.join("f"), DEFAULT).unwrap_err()),
        libc::ENODATA
    );
    // The named user may write the new file (mask rw-) and create in the subdirectory.
    let f = d.join("f");
    assert!(as_user(UID, UID, &format!("echo more >> {}", f.display())));
    let g = d.join("sub/g");
    assert!(as_user(
        UID,
        UID,
        &format!("umask 022; echo x > {}", g.display())
    ));
    assert_eq!(fs::metadata(&g).unwrap().uid(), UID);
    assert_eq!(perm(&g), 0o664);
    assert!(!as_user(
        UID + 1,
        UID + 1,
        &format!("echo x >> {}", f.display())
    ));
    m.remount();
    assert_eq!(perm(&d.join("f")), 0o664);
    assert_eq!(entries(&d.join("f"), ACCESS)[1], (USER, 7));
    assert_eq!(sys::getxattr(&d.join("sub"), DEFAULT).unwrap(), default);
    assert_eq!(fs::read(&f).unwrap(), b"data\nmore\n");
}

fn invalid_acls_are_refused(m: &mut MountGuard) {
    let f = m.join("f");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    let good = acl(&[
        (USER_OBJ, 6, u32::MAX),
        (USER, 4, UID),
        (GROUP_OBJ, 4, u32::MAX),
        (MASK, 4, u32::MAX),
        (OTHER, 4, u32::MAX),
    ]);
    let set = |name: &str, v: &[u8]| errno(&sys::setxattr(&f, name, v, 0).unwrap_err());
    // A torn entry, another version (the kernel says EOPNOTSUPP), a named entry without a
    // mask, a default ACL on a file: nothing changes.
    assert_eq!(set(ACCESS, &good[..good.len() - 2]), libc::EINVAL);
    let mut v1 = good.clone();
    v1[0] = 1;
    assert_eq!(set(ACCESS, &v1), libc::EOPNOTSUPP);
    let no_mask = acl(&[
        (USER_OBJ, 6, u32::MAX),
        (USER, 4, UID),
        (GROUP_OBJ, 4, u32::MAX),
        (OTHER, 4, u32::MAX),
    ]);
    assert_eq!(set(ACCESS, &no_mask), libc::EINVAL);
    assert_eq!(set(DEFAULT, &good), libc::EACCES);
    fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(perm(&f), 0o666);
    assert!(sys::listxattr(&f).unwrap().is_empty());
}
