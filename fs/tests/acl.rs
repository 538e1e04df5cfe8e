//! POSIX ACLs at the Volume level: the xattr format is validated, the access ACL and the mode
//! stay in step (setxattr, chmod), new inodes inherit a directory's default ACL (and the
//! umask applies only without one), everything survives log replay and a checkpoint, a crash
//! at any persist point leaves each ACL operation done or not done (never a mode without its
//! ACL), and fsck finds and repairs damaged ACL attributes.

use pfnfs_fs::session::errno;
use std::path::Path;
use std::sync::Arc;

use pfnfs_alloc::{CrashMode, CrashSimBackend, CreateOptions, MemBackend, OpenOptions, Pool};
use pfnfs_fs::acl::{
    ACCESS_XATTR, Acl, AclEntry, DEFAULT_XATTR, GROUP, GROUP_OBJ, MASK, OTHER, UNDEFINED_ID, USER,
    USER_OBJ,
};
use pfnfs_fs::fsck::{FsckMode, check_volume, fsck_pool};
use pfnfs_fs::inode::ROOT_INO;
use pfnfs_fs::volume::{Caller, SetAttr, Volume};

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn make_pool(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("pool");
    Pool::create(&p, 64 << 20, &CreateOptions::default()).unwrap();
    p
}

fn load(p: &Path) -> Volume {
    let pool = Pool::open(p, &OpenOptions::default()).unwrap();
    Volume::load(Arc::new(pool)).unwrap()
}

fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
    AclEntry { tag, perm, id }
}

/// u::rwx, u:1000:rw-, g::r-x, g:2000:r--, m::rw-, o::---
fn named_acl() -> Acl {
    Acl::from_entries(vec![
        e(USER_OBJ, 7, UNDEFINED_ID),
        e(USER, 6, 1000),
        e(GROUP_OBJ, 5, UNDEFINED_ID),
        e(GROUP, 4, 2000),
        e(MASK, 6, UNDEFINED_ID),
        e(OTHER, 0, UNDEFINED_ID),
    ])
    .unwrap()
}

fn perms(v: &Volume, ino: u64, name: &[u8]) -> Vec<(u16, u16)> {
    let acl = Acl::decode(&v.getxattr(ino, name).unwrap()).unwrap();
    acl.entries().iter().map(|e| (e.tag, e.perm)).collect()
}

fn chmod(v: &Volume, ino: u64, mode: u32) {
    let req = SetAttr {
        mode: Some(mode),
        ..Default::default()
    };
    v.setattr(ROOT, ino, req).unwrap();
}

fn mode(v: &Volume, ino: u64) -> u32 {
    v.getattr(ino).unwrap().mode & 0o7777
}

#[test]
fn access_acl_sets_the_mode_and_chmod_sets_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let v = load(&p);
    let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
    let acl = named_acl();
    v.setxattr(f, ACCESS_XATTR, &acl.encode(), 0).unwrap();
    // Group bits come from the mask.
    assert_eq!(mode(&v, f), 0o760);
    assert_eq!(v.getxattr(f, ACCESS_XATTR).unwrap(), acl.encode());
    let names = v.listxattr(f).unwrap();
    assert_eq!(names, b"system.posix_acl_access\0");
    // chmod rewrites owner, mask and other; named entries and the group entry stay.
    chmod(&v, f, 0o604);
    assert_eq!(
        perms(&v, f, ACCESS_XATTR),
        vec![
            (USER_OBJ, 6),
            (USER, 6),
            (GROUP_OBJ, 5),
            (GROUP, 4),
            (MASK, 0),
            (OTHER, 4)
        ]
    );
    drop(v);
    // Log replay gives the same ACL and mode; so does a checkpoint.
    let v = load(&p);
    assert_eq!(mode(&v, f), 0o604);
    assert_eq!(perms(&v, f, ACCESS_XATTR)[4], (MASK, 0));
    v.checkpoint().unwrap();
    drop(v);
    let v = load(&p);
    assert_eq!(mode(&v, f), 0o604);
    assert_eq!(perms(&v, f, ACCESS_XATTR)[0], (USER_OBJ, 6));
    // An ACL the mode expresses is not stored: it sets the mode and drops the old one.
    v.setxattr(f, ACCESS_XATTR, &Acl::from_mode(0o751).encode(), 0)
        .unwrap();
    assert_eq!(mode(&v, f), 0o751);
    assert_eq!(
        v.getxattr(f, ACCESS_XATTR)
            .map_err(|e| errno(&e))
            .unwrap_err(),
        libc::ENODATA
    );
    assert!(v.listxattr(f).unwrap().is_empty());
    // Removing an ACL the file does not have is not an error.
    v.removexattr(f, ACCESS_XATTR).unwrap();
    assert!(check_volume(&v).problems.is_empty());
}

#[test]
fn malformed_and_misplaced_acls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let v = load(&p);
    let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
    let s = v.symlink(ROOT, ROOT_INO, b"s", b"f").unwrap().ino;
    let good = named_acl().encode();
    let errno = |ino, name: &[u8], value: &[u8]| {
        v.setxattr(ino, name, value, 0)
            .map_err(|e| errno(&e))
            .unwrap_err()
    };
    assert_eq!(
        errno(f, ACCESS_XATTR, &good[..good.len() - 1]),
        libc::EINVAL
    );
    assert_eq!(errno(f, ACCESS_XATTR, &good[..4]), libc::EINVAL);
    let mut v1 = good.clone();
    v1[0] = 1;
    assert_eq!(errno(f, ACCESS_XATTR, &v1), libc::EINVAL);
    // A named entry without a mask: drop the mask entry (the fifth).
    let mut no_mask = good.clone();
    no_mask.drain(4 + 4 * 8..4 + 5 * 8);
    assert_eq!(errno(f, ACCESS_XATTR, &no_mask), libc::EINVAL);
    assert_eq!(errno(f, DEFAULT_XATTR, &good), libc::EACCES);
    assert_eq!(errno(s, ACCESS_XATTR, &good), libc::EOPNOTSUPP);
    assert_eq!(errno(f, b"system.other", b"x"), libc::EOPNOTSUPP);
    // Nothing changed.
    assert_eq!(mode(&v, f), 0o644);
    assert!(v.listxattr(f).unwrap().is_empty());
}

#[test]
fn setting_an_access_acl_drops_setgid_for_a_caller_outside_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let v = load(&p);
    let owner = Caller {
        uid: 1000,
        gid: 1000,
    };
    let f = v.create(owner, ROOT_INO, b"f", 0o2775, true).unwrap().ino;
    let req = SetAttr {
        gid: Some(3000),
        ..Default::default()
    };
    v.setattr(ROOT, f, req).unwrap();
    chmod(&v, f, 0o2775);
    v.setxattr_as(owner, f, ACCESS_XATTR, &named_acl().encode(), 0)
        .unwrap();
    assert_eq!(mode(&v, f), 0o760);
    // In the group (or root): setgid stays.
    chmod(&v, f, 0o2775);
    let member = Caller {
        uid: 1000,
        gid: 3000,
    };
    v.setxattr_as(member, f, ACCESS_XATTR, &named_acl().encode(), 0)
        .unwrap();
    assert_eq!(mode(&v, f), 0o2760);
}

#[test]
fn new_inodes_inherit_the_default_acl_and_ignore_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let v = load(&p);
    // Without a default ACL the umask applies.
    let plain = v
        .create_with_umask(ROOT, ROOT_INO, b"plain", 0o666, 0o022, true)
        .unwrap();
    assert_eq!(plain.attr.mode & 0o777, 0o644);
    let pd = v
        .mkdir_with_umask(ROOT, ROOT_INO, b"pd", 0o777, 0o027)
        .unwrap();
    assert_eq!(pd.attr.mode & 0o777, 0o750);
    let d = v.mkdir(ROOT, ROOT_INO, b"d", 0o755).unwrap().ino;
    // u::rwx, u:1000:rwx, g::r-x, m::rwx, o::r-x
    let default = Acl::from_entries(vec![
        e(USER_OBJ, 7, UNDEFINED_ID),
        e(USER, 7, 1000),
        e(GROUP_OBJ, 5, UNDEFINED_ID),
        e(MASK, 7, UNDEFINED_ID),
        e(OTHER, 5, UNDEFINED_ID),
    ])
    .unwrap();
    v.setxattr(d, DEFAULT_XATTR, &default.encode(), 0).unwrap();
    // A default ACL leaves the directory's own mode alone.
    assert_eq!(mode(&v, d), 0o755);
    let f = v
        .create_with_umask(ROOT, d, b"f", 0o640, 0o077, true)
        .unwrap();
    assert_eq!(f.attr.mode & 0o777, 0o640);
    assert_eq!(
        perms(&v, f.ino, ACCESS_XATTR),
        vec![
            (USER_OBJ, 6),
            (USER, 7),
            (GROUP_OBJ, 5),
            (MASK, 4),
            (OTHER, 0)
        ]
    );
    assert_eq!(
        v.getxattr(f.ino, DEFAULT_XATTR)
            .map_err(|e| errno(&e))
            .unwrap_err(),
        libc::ENODATA
    );
    let sub = v.mkdir_with_umask(ROOT, d, b"sub", 0o777, 0o077).unwrap();
    assert_eq!(sub.attr.mode & 0o777, 0o775);
    assert_eq!(
        v.getxattr(sub.ino, DEFAULT_XATTR).unwrap(),
        default.encode()
    );
    assert_eq!(perms(&v, sub.ino, ACCESS_XATTR)[3], (MASK, 7));
    // Grandchildren inherit through the copied default ACL; a fifo too.
    let fifo = v
        .mknod_with_umask(ROOT, sub.ino, b"fifo", libc::S_IFIFO | 0o666, 0o077, 0)
        .unwrap();
    assert_eq!(fifo.attr.mode & 0o777, 0o664);
    assert_eq!(perms(&v, fifo.ino, ACCESS_XATTR)[3], (MASK, 6));
    // Symlinks get nothing.
    let s = v.symlink(ROOT, d, b"s", b"f").unwrap().ino;
    assert!(v.listxattr(s).unwrap().is_empty());
    // A minimal default ACL gives no access ACL, only the intersected mode.
    let m = v.mkdir(ROOT, ROOT_INO, b"m", 0o755).unwrap().ino;
    v.setxattr(m, DEFAULT_XATTR, &Acl::from_mode(0o750).encode(), 0)
        .unwrap();
    let g = v
        .create_with_umask(ROOT, m, b"g", 0o666, 0o022, true)
        .unwrap();
    assert_eq!(g.attr.mode & 0o777, 0o640);
    assert!(v.listxattr(g.ino).unwrap().is_empty());
    drop(v);
    // The inherited ACLs are in the create records.
    let v = load(&p);
    assert_eq!(perms(&v, f.ino, ACCESS_XATTR)[3], (MASK, 4));
    assert_eq!(
        v.getxattr(sub.ino, DEFAULT_XATTR).unwrap(),
        default.encode()
    );
    assert_eq!(mode(&v, fifo.ino), 0o664);
    assert!(check_volume(&v).problems.is_empty());
}

#[test]
fn fsck_repairs_damaged_acls() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let (f, d, g) = {
        let v = load(&p);
        let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
        let d = v.mkdir(ROOT, ROOT_INO, b"d", 0o755).unwrap().ino;
        let g = v.create(ROOT, ROOT_INO, b"g", 0o644, true).unwrap().ino;
        v.setxattr(f, ACCESS_XATTR, &named_acl().encode(), 0)
            .unwrap();
        v.setxattr(d, DEFAULT_XATTR, &named_acl().encode(), 0)
            .unwrap();
        // Damage behind the volume's back: a mode that disagrees with the access ACL, an
        // undecodable default ACL, a default ACL on a file.
        let cell = v.cell(f).unwrap();
        cell.inode.write().attr.mode = libc::S_IFREG | 0o700;
        let cell = v.cell(d).unwrap();
        cell.inode
            .write()
            .xattrs
            .insert(DEFAULT_XATTR.to_vec(), vec![2, 0, 0, 0, 1]);
        let cell = v.cell(g).unwrap();
        cell.inode
            .write()
            .xattrs
            .insert(DEFAULT_XATTR.to_vec(), named_acl().encode());
        v.shutdown().unwrap();
        (f, d, g)
    };
    let n = fsck_pool(&p, FsckMode::Check).unwrap();
    let mut kinds: Vec<&str> = n.problems.iter().map(|p| p.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["acl-invalid", "acl-misplaced", "acl-mode"],
        "{n:#?}"
    );
    let y = fsck_pool(&p, FsckMode::Repair).unwrap();
    assert_eq!(y.problems.len(), 3, "{y:#?}");
    let again = fsck_pool(&p, FsckMode::Check).unwrap();
    assert!(again.problems.is_empty(), "{again:#?}");
    let v = load(&p);
    // The mode wins: the ACL's owner, mask and other follow it.
    assert_eq!(mode(&v, f), 0o700);
    assert_eq!(
        perms(&v, f, ACCESS_XATTR),
        vec![
            (USER_OBJ, 7),
            (USER, 6),
            (GROUP_OBJ, 5),
            (GROUP, 4),
            (MASK, 0),
            (OTHER, 0)
        ]
    );
    assert!(v.listxattr(d).unwrap().is_empty());
    assert!(v.listxattr(g).unwrap().is_empty());
}

/// What the crash test compares: mode and ACL attributes of the inodes its operations touch
/// (`None` for a name that does not exist).
type Observed = Vec<Option<(u32, Option<Vec<u8>>, Option<Vec<u8>>)>>;

fn observe(v: &Volume) -> Observed {
    let d = v.lookup(ROOT_INO, b"d").unwrap().ino;
    let names: [(u64, &[u8]); 4] = [(ROOT_INO, b"f"), (ROOT_INO, b"g"), (d, b"new"), (d, b"sub")];
    names
        .iter()
        .map(|(parent, name)| {
            let ino = v.lookup(*parent, name).ok()?.ino;
            Some((
                v.getattr(ino).unwrap().mode,
                v.getxattr(ino, ACCESS_XATTR).ok(),
                v.getxattr(ino, DEFAULT_XATTR).ok(),
            ))
        })
        .collect()
}

#[test]
fn acl_operations_are_atomic_across_crashes() {
    // The template: d with a default ACL, f plain, g with a named-user ACL; cleanly unmounted.
    let backend = Arc::new(CrashSimBackend::new(64 << 20));
    let pool = Pool::format_backend("acl-template", Box::new(backend.clone())).unwrap();
    let v = Volume::load(Arc::new(pool)).unwrap();
    let d = v.mkdir(ROOT, ROOT_INO, b"d", 0o755).unwrap().ino;
    v.setxattr(d, DEFAULT_XATTR, &named_acl().encode(), 0)
        .unwrap();
    let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
    let g = v.create(ROOT, ROOT_INO, b"g", 0o644, true).unwrap().ino;
    v.setxattr(g, ACCESS_XATTR, &named_acl().encode(), 0)
        .unwrap();
    v.shutdown().unwrap();
    drop(v);
    let template = backend.fork();
    type Step = fn(&Volume, u64, u64, u64);
    let steps: [(&str, Step); 4] = [
        ("set access ACL", |v, _, f, _| {
            v.setxattr(f, ACCESS_XATTR, &named_acl().encode(), 0)
                .unwrap();
        }),
        ("chmod with ACL", |v, _, _, g| chmod(v, g, 0o604)),
        ("create inheriting", |v, d, _, _| {
            v.create_with_umask(ROOT, d, b"new", 0o666, 0o022, true)
                .unwrap();
        }),
        ("mkdir inheriting", |v, d, _, _| {
            v.mkdir_with_umask(ROOT, d, b"sub", 0o777, 0o022).unwrap();
        }),
    ];
    let recover = |image: &[u8]| {
        let pool = Pool::open_backend("acl", Box::new(MemBackend::from_bytes(image)), false);
        let v = Volume::load(Arc::new(pool.unwrap())).unwrap();
        let report = check_volume(&v);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        observe(&v)
    };
    let mut checked = 0;
    for (what, step) in steps {
        // One run without a crash: the state before and after, and the persist points.
        let sim = Arc::new(template.fork());
        let pool = Pool::open_backend("acl", Box::new(sim.clone()), false).unwrap();
        let v = Volume::load(Arc::new(pool)).unwrap();
        let before = observe(&v);
        let base = sim.persist_points();
        step(&v, d, f, g);
        let points = sim.persist_points() - base;
        let after = observe(&v);
        assert_ne!(before, after, "{what} changed nothing");
        assert!(points > 0, "{what} persisted nothing");
        assert_eq!(recover(&sim.live_image()), after, "{what}: replay");
        drop(v);
        for k in 1..=points {
            for mode in [CrashMode::Clean, CrashMode::Torn { seed: k }] {
                let sim = Arc::new(template.fork());
                let pool = Pool::open_backend("acl", Box::new(sim.clone()), false).unwrap();
                let v = Volume::load(Arc::new(pool)).unwrap();
                let base = sim.persist_points();
                sim.arm_crash(base + k, mode);
                step(&v, d, f, g);
                assert!(sim.crashed().is_some());
                let state = recover(&sim.crash_image());
                assert!(
                    state == before || state == after,
                    "{what}, crash at point {k} ({mode}): {state:?}\nbefore {before:?}\nafter {after:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8);
}
