//! A pfnfs mount exported over NFS by nfs-ganesha (FSAL_VFS) on the loopback, driven by a
//! real NFS client (nfs-rs, a userspace client: this kernel has no NFS client) over NFSv3,
//! NFSv4.0 and NFSv4.1: files from 3 bytes to 64 MiB byte-identical both ways, mkdir,
//! rename, link, unlink, setattr, a 10,000-entry directory, permissions for a non-root
//! uid, file handles that survive a restart of ganesha and of the pfnfs daemon (with the
//! kernel's caches dropped) and are stale, never another file, once their file is gone or
//! its inode number was handed out again (the pool rolled back to a copy); fsck clean at
//! the end. docs/NFS.md is the deployment this checks.
//!
//! Needs `nfs-ganesha`, `nfs-ganesha-vfs` and `rpcbind` (the README's test command and CI
//! install them). Ganesha runs as this test's child on ports of its own; rpcbind, which
//! ganesha needs to register NFSv3, is used if one runs and otherwise started (and stopped)
//! by the test. Only processes the test started are ended, by PID.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use futures::TryStreamExt;
use pfnfs_tests::nfs::{
    Export, Ganesha, Mount, NfsError, Rpcbind, get, get_path, is_status, mount,
    skip_without_ganesha,
};
use pfnfs_tests::{Mode, MountGuard, Tmpfs, pattern, pfnfs_on, skip_without_fuse};

/// A non-root user and group for the permission checks.
const USER: u32 = 4321;

fn is_stale(e: &NfsError) -> bool {
    is_status(e, "STALE")
}

fn is_denied(e: &NfsError) -> bool {
    is_status(e, "ACCES") || is_status(e, "PERM")
}

/// Writes `data` to a new file `path` through the export; its file handle.
async fn put(m: &dyn Mount, path: &str, data: &[u8]) -> Bytes {
    pfnfs_tests::nfs::put(m, path, Bytes::copy_from_slice(data)).await
}

/// Sizes moved through the export: a few bytes to 64 MiB, crossing page and RPC sizes.
const SIZES: [usize; 6] = [3, 4096, 65_536 + 17, 1 << 20, (3 << 20) + 5, 64 << 20];

/// Files of every size written and read back over one NFS version, checked against the
/// bytes the pfnfs mount itself has.
async fn data_both_ways(m: &dyn Mount, local: &Path, tag: &str) {
    m.mkdir_path(tag, 0o755).await.expect("mkdir");
    for (i, &size) in SIZES.iter().enumerate() {
        let name = format!("{tag}/f{size}");
        let data = pattern(i as u64 + 1, size);
        let fh = put(m, &name, &data).await;
        assert!(
            std::fs::read(local.join(&name)).expect("local read") == data,
            "{name}: the pfnfs mount has other bytes than the client wrote"
        );
        assert!(get(m, &fh).await == data, "{name}: read back differs");
        // And a file written on the pfnfs mount, read through the export.
        let local_name = format!("{tag}/l{size}");
        let data = pattern(100 + i as u64, size);
        std::fs::write(local.join(&local_name), &data).expect("local write");
        assert!(
            get_path(m, &local_name).await == data,
            "{local_name}: the export serves other bytes than the pfnfs mount has"
        );
    }
    // The room goes back when the client deletes.
    let before = pfnfs_free_bytes(local);
    for name in [
        format!("{tag}/f{}", 64 << 20),
        format!("{tag}/l{}", 64 << 20),
    ] {
        m.remove_path(&name).await.expect("unlink");
        assert!(!local.join(&name).exists());
    }
    assert!(
        pfnfs_free_bytes(local) >= before + (128 << 20),
        "unlinked space is free again"
    );
}

/// Free bytes of the filesystem at `path` (statvfs, through `df`, so that the test needs no
/// `unsafe`).
fn pfnfs_free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// mkdir, rename, link, setattr, unlink and rmdir, each checked on the pfnfs mount.
async fn namespace_ops(m: &dyn Mount, local: &Path, tag: &str) {
    let d = format!("{tag}-ns");
    m.mkdir_path(&d, 0o750).await.expect("mkdir");
    assert!(local.join(&d).is_dir());
    assert_eq!(
        std::fs::metadata(local.join(&d)).unwrap().mode() & 0o7777,
        0o750
    );
    put(m, &format!("{d}/a"), b"contents of a").await;
    m.mkdir_path(&format!("{d}/sub"), 0o755)
        .await
        .expect("mkdir sub");
    m.rename_path(&format!("{d}/a"), &format!("{d}/sub/b"))
        .await
        .expect("rename");
    assert!(!local.join(&d).join("a").exists());
    assert_eq!(
        std::fs::read(local.join(&d).join("sub/b")).unwrap(),
        b"contents of a"
    );
    m.link_path(&format!("{d}/sub/b"), &format!("{d}/c"))
        .await
        .expect("link");
    let meta = std::fs::metadata(local.join(&d).join("c")).unwrap();
    assert_eq!(meta.nlink(), 2);
    assert_eq!(
        meta.ino(),
        std::fs::metadata(local.join(&d).join("sub/b"))
            .unwrap()
            .ino()
    );
    m.setattr_path(
        &format!("{d}/c"),
        false,
        Some(0o600),
        None,
        None,
        Some(8),
        None,
        None,
    )
    .await
    .expect("setattr");
    let meta = std::fs::metadata(local.join(&d).join("sub/b")).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.len()), (0o600, 8));
    assert_eq!(
        std::fs::read(local.join(&d).join("sub/b")).unwrap(),
        b"contents"
    );
    let a = m
        .getattr_path(&format!("{d}/sub/b"))
        .await
        .expect("getattr");
    assert_eq!((a.file_mode & 0o7777, a.filesize, a.nlink), (0o600, 8, 2));
    m.setattr_path(
        &format!("{d}/c"),
        false,
        None,
        Some(USER),
        Some(USER),
        None,
        None,
        None,
    )
    .await
    .expect("chown");
    let meta = std::fs::metadata(local.join(&d).join("c")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (USER, USER));
    let err = m.rmdir_path(&format!("{d}/sub")).await.unwrap_err();
    assert!(
        is_status(&err, "NOTEMPTY"),
        "rmdir of a full directory: {err:?}"
    );
    m.remove_path(&format!("{d}/sub/b")).await.expect("unlink");
    assert_eq!(
        std::fs::metadata(local.join(&d).join("c")).unwrap().nlink(),
        1
    );
    m.remove_path(&format!("{d}/c")).await.expect("unlink");
    m.rmdir_path(&format!("{d}/sub")).await.expect("rmdir");
    m.rmdir_path(&d).await.expect("rmdir");
    assert!(!local.join(&d).exists());
}

/// Every name of a directory, read over the export with READDIRPLUS (or READDIR).
async fn list(m: &dyn Mount, dir: &str, plus: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    if plus {
        let mut s = m.readdirplus_path(dir).await.expect("readdirplus");
        while let Some(e) = s.try_next().await.expect("readdirplus entry") {
            names.insert(e.file_name);
        }
    } else {
        let mut s = m.readdir_path(dir).await.expect("readdir");
        while let Some(e) = s.try_next().await.expect("readdir entry") {
            names.insert(e.file_name);
        }
    }
    names.remove(".");
    names.remove("..");
    names
}

/// What a non-root client may and may not do: the daemon sees the client's uid.
async fn as_user(m: &dyn Mount, local: &Path) {
    let err = m.create_path("root-owned", Some(0o644)).await.unwrap_err();
    assert!(
        is_denied(&err),
        "create in a root-owned 0755 directory: {err:?}"
    );
    assert!(!local.join("root-owned").exists());
    put(m, "shared/mine", b"user data").await;
    let meta = std::fs::metadata(local.join("shared/mine")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (USER, USER),
        "owner of a file the user made"
    );
    let err = m
        .open_path("private/secret", nfs_rs::OPEN_READ)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(is_denied(&err), "lookup in a root-only directory: {err:?}");
    let err = m
        .setattr_path(
            "shared/roots",
            false,
            Some(0o666),
            None,
            None,
            None,
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(is_denied(&err), "chmod of root's file: {err:?}");
    assert_eq!(
        std::fs::metadata(local.join("shared/roots"))
            .unwrap()
            .mode()
            & 0o7777,
        0o644
    );
    let err = m.remove_path("sticky/roots").await.unwrap_err();
    assert!(
        is_denied(&err),
        "unlink of root's file in a sticky directory: {err:?}"
    );
    assert!(local.join("sticky/roots").exists());
}

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
}

/// One ganesha (and rpcbind) at a time: the tests of this file run one after the other.
static ONE_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn export_in_mode(mode: Mode) {
    if skip_without_fuse() || skip_without_ganesha() {
        return;
    }
    let _one = ONE_SERVER.lock().unwrap_or_else(|e| e.into_inner());
    // allow_other: ganesha serves a non-root client with that uid as its own, and FUSE
    // refuses every process but the mounting user's without it (docs/NFS.md).
    let mut fs = MountGuard::with_pool_size(mode, 1 << 30, &["allow_other"]);
    let local = fs.path().to_path_buf();
    for (dir, perm) in [("shared", 0o777), ("private", 0o700), ("sticky", 0o1777)] {
        std::fs::create_dir(local.join(dir)).unwrap();
        std::fs::set_permissions(
            local.join(dir),
            std::os::unix::fs::PermissionsExt::from_mode(perm),
        )
        .unwrap();
    }
    for f in ["shared/roots", "private/secret", "sticky/roots"] {
        std::fs::write(local.join(f), b"root's").unwrap();
    }
    let many = local.join("many");
    std::fs::create_dir(&many).unwrap();
    let expected: BTreeSet<String> = (0..10_000).map(|i| format!("entry-{i:05}")).collect();
    for name in &expected {
        std::fs::File::create(many.join(name)).unwrap();
    }
    let _rpcbind = Rpcbind::ensure();
    let mut ganesha = Ganesha::start(&[Export {
        path: local.clone(),
        pseudo: "/pfnfs".into(),
        stable_handles: true,
    }]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Data, names and listing over each protocol version.
    let (kept, gone) = rt.block_on(async {
        for version in ["3", "4.0", "4.1"] {
            let m = mount(&ganesha.url(0, version, 0)).await;
            let tag = format!("v{}", version.replace('.', ""));
            data_both_ways(&*m, &local, &tag).await;
            namespace_ops(&*m, &local, &tag).await;
            assert_eq!(
                list(&*m, "many", true).await,
                expected,
                "NFSv{version} READDIRPLUS"
            );
            assert_eq!(
                list(&*m, "many", false).await,
                expected,
                "NFSv{version} READDIR"
            );
            m.umount().await.ok();
        }
        let m = mount(&ganesha.url(0, "3", USER)).await;
        as_user(&*m, &local).await;
        m.umount().await.ok();
        // Handles to keep across the restarts: one of a file that stays, one of a file
        // deleted meanwhile.
        let m = mount(&ganesha.url(0, "3", 0)).await;
        let kept = put(&*m, "kept", &pattern(7, 300_000)).await;
        let gone = put(&*m, "gone", b"soon deleted").await;
        let dir = m.lookup_path("many").await.expect("lookup many").fh;
        m.umount().await.ok();
        (kept, (gone, dir))
    });
    let (gone, many_fh) = gone;

    // Restart ganesha with the kernel's caches dropped: its handles now resolve through
    // LOOKUP(".") by inode number.
    ganesha.stop();
    std::fs::remove_file(local.join("gone")).unwrap();
    drop_caches();
    ganesha.run();
    rt.block_on(async {
        let m = mount(&ganesha.url(0, "3", 0)).await;
        match m.getattr(kept.clone()).await {
            Ok(_) => {}
            Err(e) => panic!("kept {kept:02x?}: {e:?}; ganesha log:\n{}", ganesha.log()),
        }
        assert!(
            get(&*m, &kept).await == pattern(7, 300_000),
            "kept, after a ganesha restart"
        );
        let err = m.getattr(gone.clone()).await.unwrap_err();
        assert!(is_stale(&err), "handle of a deleted file: {err:?}");
        m.umount().await.ok();
    });

    // Restart the pfnfs daemon (ganesha stopped: it holds files open on the mount), then
    // ganesha. The new mount gets another device number (a tmpfs takes the freed one for
    // the moment), as a mount after a reboot or beside other mounts may: a handle that
    // named the device would go stale (DESIGN 10).
    ganesha.stop();
    let dev_before = std::fs::metadata(&local).unwrap().dev();
    fs.unmount().unwrap_or_else(|e| panic!("unmount: {e}"));
    let holder = Tmpfs::new(1 << 20);
    fs.remount();
    drop(holder);
    assert_ne!(
        std::fs::metadata(&local).unwrap().dev(),
        dev_before,
        "the remount kept its device number; this check needs another one"
    );
    drop_caches();
    ganesha.run();
    rt.block_on(async {
        let m = mount(&ganesha.url(0, "3", 0)).await;
        assert!(
            get(&*m, &kept).await == pattern(7, 300_000),
            "kept, after the pfnfs daemon and ganesha restarted"
        );
        let err = m.getattr(gone.clone()).await.unwrap_err();
        assert!(
            is_stale(&err),
            "handle of a deleted file after a remount: {err:?}"
        );
        let a = m.getattr(many_fh.clone()).await.expect("directory handle");
        assert_eq!(a.type_, 2, "the handle of 'many' is a directory");
        // A file made after the restarts, read and removed over NFSv4.1 too.
        m.umount().await.ok();
        let m = mount(&ganesha.url(0, "4.1", 0)).await;
        put(&*m, "after", b"after the restarts").await;
        assert_eq!(get_path(&*m, "after").await, b"after the restarts");
        m.remove_path("after").await.expect("unlink");
        m.umount().await.ok();
    });

    // An inode number handed out again: the pool goes back to a copy taken before a file
    // was made (a restored backup), and the next file made gets the same number. The old
    // handle must be stale, not the new file.
    ganesha.stop();
    fs.unmount().unwrap_or_else(|e| panic!("unmount: {e}"));
    let backup = fs.pool().with_extension("copy");
    std::fs::copy(fs.pool(), &backup).expect("copy the pool");
    fs.remount();
    ganesha.run();
    let old = rt.block_on(async {
        let m = mount(&ganesha.url(0, "3", 0)).await;
        let fh = put(&*m, "before-rollback", b"the old file").await;
        m.umount().await.ok();
        fh
    });
    let old_ino = std::fs::metadata(local.join("before-rollback"))
        .unwrap()
        .ino();
    ganesha.stop();
    fs.unmount().unwrap_or_else(|e| panic!("unmount: {e}"));
    std::fs::rename(&backup, fs.pool()).expect("restore the pool copy");
    fs.remount();
    ganesha.run();
    rt.block_on(async {
        let m = mount(&ganesha.url(0, "3", 0)).await;
        put(&*m, "after-rollback", b"the new file").await;
        let new_ino = std::fs::metadata(local.join("after-rollback"))
            .unwrap()
            .ino();
        assert_eq!(
            new_ino, old_ino,
            "the rollback should hand the number out again"
        );
        match m.getattr(old.clone()).await {
            Err(e) => assert!(is_stale(&e), "handle of the rolled-back file: {e:?}"),
            Ok(a) => panic!(
                "the old handle reached inode {} after the rollback",
                a.fileid
            ),
        }
        let err = m.read(old.clone(), 0, 100).await.unwrap_err();
        assert!(is_stale(&err), "read through the old handle: {err:?}");
        m.umount().await.ok();
    });
    ganesha.stop();
    let log = ganesha.log();
    drop(ganesha);
    if let Err(e) = fs.unmount() {
        panic!("unmount: {e}");
    }
    let out = pfnfs_on(&["fsck", "-n"], fs.pool());
    assert!(
        out.status.success(),
        "fsck -n after the NFS run: {}{}\nganesha log:\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nfs_export_direct() {
    export_in_mode(Mode::Direct);
}

#[test]
fn nfs_export_buffered() {
    export_in_mode(Mode::Buffered);
}
