//! Volume-level tests without FUSE: operations, persistence across reload (checkpoint and
//! log replay), and orphan handling.

use std::path::Path;
use std::sync::Arc;

use pfnfs_alloc::{CreateOptions, OpenOptions, Pool};
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

fn read_all(v: &Volume, ino: u64) -> Vec<u8> {
    let size = v.getattr(ino).unwrap().size;
    let mut out = Vec::new();
    let mut off = 0;
    while off < size {
        let n = v
            .read(ino, off, 1 << 20, |b| out.extend_from_slice(b))
            .map(|_| 0)
            .unwrap();
        let _ = n;
        off = out.len() as u64;
    }
    out
}

fn exercise(v: &Volume) -> (u64, u64, Vec<u8>) {
    let d = v.mkdir(ROOT, ROOT_INO, b"dir", 0o755).unwrap();
    let f = v.create(ROOT, d.ino, b"file", 0o644, true).unwrap();
    let mut data = vec![0u8; 300_000];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    v.write(ROOT, f.ino, 0, &data).unwrap();
    v.write(ROOT, f.ino, 1_000_000, b"tail").unwrap();
    data.resize(1_000_000, 0);
    data.extend_from_slice(b"tail");
    v.link(f.ino, ROOT_INO, b"hardlink").unwrap();
    v.symlink(ROOT, ROOT_INO, b"sym", b"dir/file").unwrap();
    v.setxattr(f.ino, b"user.colour", b"blue", 0).unwrap();
    let g = v.create(ROOT, ROOT_INO, b"gone", 0o600, true).unwrap();
    v.write(ROOT, g.ino, 0, &[1u8; 10000]).unwrap();
    v.remove(ROOT_INO, b"gone", false).unwrap();
    v.rename(ROOT_INO, b"sym", d.ino, b"sym2", 0).unwrap();
    v.setattr(
        ROOT,
        f.ino,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    (d.ino, f.ino, data)
}

fn verify(v: &Volume, d: u64, f: u64, data: &[u8]) {
    assert_eq!(v.lookup(ROOT_INO, b"dir").unwrap().ino, d);
    assert_eq!(v.lookup(d, b"file").unwrap().ino, f);
    assert_eq!(v.lookup(ROOT_INO, b"hardlink").unwrap().ino, f);
    let a = v.getattr(f).unwrap();
    assert_eq!(a.nlink, 2);
    assert_eq!(a.mode & 0o7777, 0o600);
    assert_eq!(a.size, data.len() as u64);
    assert_eq!(read_all(v, f), data);
    assert_eq!(v.getxattr(f, b"user.colour").unwrap(), b"blue");
    let s = v.lookup(d, b"sym2").unwrap();
    assert_eq!(v.readlink(s.ino).unwrap(), b"dir/file");
    assert!(v.lookup(ROOT_INO, b"gone").is_err());
    assert!(v.lookup(ROOT_INO, b"sym").is_err());
    assert_eq!(v.getattr(ROOT_INO).unwrap().nlink, 3);
    v.allocator().check_consistency().unwrap();
}

#[test]
fn state_survives_clean_shutdown() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    let (d, f, data) = {
        let v = load(&p);
        let r = exercise(&v);
        v.shutdown().unwrap();
        r
    };
    let v = load(&p);
    verify(&v, d, f, &data);
}

#[test]
fn state_survives_without_shutdown_by_log_replay() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    let (d, f, data) = {
        let v = load(&p);
        exercise(&v)
        // dropped without shutdown: only the log holds the changes
    };
    let v = load(&p);
    verify(&v, d, f, &data);
    let free_after_replay = v.allocator().free_extents();
    drop(v);
    let v = load(&p);
    assert_eq!(v.allocator().free_extents(), free_after_replay);
}

#[test]
fn many_checkpoints_keep_everything() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    let v = load(&p);
    let mut inos = Vec::new();
    for i in 0..3000u32 {
        let name = format!("f{i}");
        let e = v
            .create(ROOT, ROOT_INO, name.as_bytes(), 0o644, true)
            .unwrap();
        v.write(ROOT, e.ino, 0, &i.to_le_bytes()).unwrap();
        inos.push(e.ino);
        if i % 3 == 0 {
            v.remove(ROOT_INO, name.as_bytes(), false).unwrap();
        }
    }
    v.checkpoint().unwrap();
    drop(v);
    let v = load(&p);
    for (i, ino) in inos.iter().enumerate() {
        let name = format!("f{i}");
        let r = v.lookup(ROOT_INO, name.as_bytes());
        if i % 3 == 0 {
            assert!(r.is_err());
        } else {
            assert_eq!(r.unwrap().ino, *ino);
            assert_eq!(read_all(&v, *ino), (i as u32).to_le_bytes());
        }
    }
    v.allocator().check_consistency().unwrap();
}

#[test]
fn open_unlinked_file_is_reclaimed_at_last_close_and_after_crash() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    {
        let v = load(&p);
        let f = v.create(ROOT, ROOT_INO, b"tmp", 0o644, true).unwrap();
        v.open(f.ino, true).unwrap();
        v.write(ROOT, f.ino, 0, &[9u8; 1 << 20]).unwrap();
        v.remove(ROOT_INO, b"tmp", false).unwrap();
        // still open and looked up: data stays readable
        assert_eq!(read_all(&v, f.ino).len(), 1 << 20);
    }
    // crash with the orphan open: recovery reclaims it
    let v = load(&p);
    let ckpt: u64 = v.checkpoint_ranges().iter().map(|r| r.len).sum();
    let s = v.allocator().stats();
    assert_eq!(
        s.free_frames + ckpt,
        s.total_frames,
        "only the checkpoint holds frames"
    );
}

#[test]
fn rename_rules() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    let v = load(&p);
    let a = v.mkdir(ROOT, ROOT_INO, b"a", 0o755).unwrap();
    let b = v.mkdir(ROOT, a.ino, b"b", 0o755).unwrap();
    assert_eq!(
        v.rename(ROOT_INO, b"a", b.ino, b"x", 0).unwrap_err().errno,
        libc::EINVAL
    );
    let c = v.mkdir(ROOT, ROOT_INO, b"c", 0o755).unwrap();
    v.create(ROOT, c.ino, b"f", 0o644, true).unwrap();
    assert_eq!(
        v.rename(ROOT_INO, b"a", ROOT_INO, b"c", 0)
            .unwrap_err()
            .errno,
        libc::ENOTEMPTY
    );
    v.rename(ROOT_INO, b"a", ROOT_INO, b"c", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(v.lookup(ROOT_INO, b"c").unwrap().ino, a.ino);
    assert_eq!(
        v.rename(ROOT_INO, b"a", ROOT_INO, b"c", libc::RENAME_NOREPLACE)
            .unwrap_err()
            .errno,
        libc::EEXIST
    );
    let e = v.mkdir(ROOT, ROOT_INO, b"e", 0o755).unwrap();
    v.rename(ROOT_INO, b"e", a.ino, b"b", 0).unwrap();
    assert_eq!(v.lookup(a.ino, b"b").unwrap().ino, e.ino);
    assert_eq!(v.lookup(e.ino, b"..").unwrap().ino, a.ino);
    assert_eq!(v.getattr(a.ino).unwrap().nlink, 3);
    assert_eq!(v.getattr(ROOT_INO).unwrap().nlink, 4);
}
