//! Volume-level tests without FUSE: operations, persistence across reload (checkpoint and
//! log replay), and orphan handling.

use pfnfs_fs::session::errno;
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
    let ckpt: u64 = v.tree_frames().unwrap().iter().map(|r| r.len).sum();
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
        v.rename(ROOT_INO, b"a", b.ino, b"x", 0)
            .map_err(|e| errno(&e))
            .unwrap_err(),
        libc::EINVAL
    );
    let c = v.mkdir(ROOT, ROOT_INO, b"c", 0o755).unwrap();
    v.create(ROOT, c.ino, b"f", 0o644, true).unwrap();
    assert_eq!(
        v.rename(ROOT_INO, b"a", ROOT_INO, b"c", 0)
            .map_err(|e| errno(&e))
            .unwrap_err(),
        libc::ENOTEMPTY
    );
    v.rename(ROOT_INO, b"a", ROOT_INO, b"c", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(v.lookup(ROOT_INO, b"c").unwrap().ino, a.ino);
    assert_eq!(
        v.rename(ROOT_INO, b"a", ROOT_INO, b"c", libc::RENAME_NOREPLACE)
            .map_err(|e| errno(&e))
            .unwrap_err(),
        libc::EEXIST
    );
    let e = v.mkdir(ROOT, ROOT_INO, b"e", 0o755).unwrap();
    v.rename(ROOT_INO, b"e", a.ino, b"b", 0).unwrap();
    assert_eq!(v.lookup(a.ino, b"b").unwrap().ino, e.ino);
    assert_eq!(v.lookup(e.ino, b"..").unwrap().ino, a.ino);
    assert_eq!(v.getattr(a.ino).unwrap().nlink, 3);
    assert_eq!(v.getattr(ROOT_INO).unwrap().nlink, 4);
}

/// Replay must not zero data written after a truncate or punch into the same frame (the
/// partial frame is copied on write at run time; replay only remaps).
#[test]
fn replay_keeps_data_written_after_truncate_and_punch_in_the_same_frame() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    let (f, g) = {
        let v = load(&p);
        let f = v.create(ROOT, ROOT_INO, b"t", 0o644, true).unwrap().ino;
        v.write(ROOT, f, 0, &[7u8; 8192]).unwrap();
        v.setattr(
            ROOT,
            f,
            SetAttr {
                size: Some(1000),
                ..Default::default()
            },
        )
        .unwrap();
        v.write(ROOT, f, 1000, &[9u8; 5000]).unwrap();
        let g = v.create(ROOT, ROOT_INO, b"p", 0o644, true).unwrap().ino;
        v.write(ROOT, g, 0, &[1u8; 8192]).unwrap();
        v.fallocate(
            g,
            100,
            200,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        )
        .unwrap();
        v.write(ROOT, g, 0, &[2u8; 8192]).unwrap();
        v.fsync(f).unwrap();
        (f, g)
        // dropped without shutdown: replay from the log
    };
    let v = load(&p);
    let mut want = vec![7u8; 1000];
    want.extend_from_slice(&[9u8; 5000]);
    assert_eq!(read_all(&v, f), want);
    assert_eq!(read_all(&v, g), vec![2u8; 8192]);
    v.allocator().check_consistency().unwrap();
    // And a read-only load of such a pool works (replay stores nothing).
    drop(v);
    let pool = Pool::open(
        &p,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let ro = Volume::load(Arc::new(pool)).unwrap();
    assert_eq!(read_all(&ro, g), vec![2u8; 8192]);
}

/// Truncating inside a frame and punching partial frames leave zeros exactly where asked.
#[test]
fn truncate_and_punch_zero_exactly() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    let v = load(&p);
    let f = v.create(ROOT, ROOT_INO, b"t", 0o644, true).unwrap().ino;
    v.write(ROOT, f, 0, &[5u8; 20000]).unwrap();
    v.setattr(
        ROOT,
        f,
        SetAttr {
            size: Some(6000),
            ..Default::default()
        },
    )
    .unwrap();
    v.setattr(
        ROOT,
        f,
        SetAttr {
            size: Some(12000),
            ..Default::default()
        },
    )
    .unwrap();
    let mut want = vec![5u8; 6000];
    want.resize(12000, 0);
    assert_eq!(read_all(&v, f), want);
    v.fallocate(
        f,
        100,
        5000,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    want[100..5100].fill(0);
    v.fallocate(
        f,
        4200,
        10,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    assert_eq!(read_all(&v, f), want);
    v.fallocate(f, 5500, 300, libc::FALLOC_FL_ZERO_RANGE)
        .unwrap();
    want[5500..5800].fill(0);
    assert_eq!(read_all(&v, f), want);
    drop(v);
    let v = load(&p);
    assert_eq!(read_all(&v, f), want);
}

/// A reader renaming every entry it sees (to a temporary name and back) within the same
/// directory is not shown it again: renames keep the entry's readdir position (xfstests
/// generic/736).
#[test]
fn readdir_while_renaming_in_place_terminates() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    let v = load(&p);
    let n = 500u32;
    for i in 0..n {
        v.create(ROOT, ROOT_INO, i.to_string().as_bytes(), 0o644, true)
            .unwrap();
    }
    let mut offset = 0;
    let mut seen = 0u32;
    loop {
        let batch = v.readdir_batch(ROOT_INO, offset, 32).unwrap();
        if batch.is_empty() {
            break;
        }
        for (_, cookie, _, name) in batch {
            offset = cookie;
            if name == b"." || name == b".." {
                continue;
            }
            seen += 1;
            assert!(
                seen <= n,
                "entry {} shown again",
                String::from_utf8_lossy(&name)
            );
            v.rename(ROOT_INO, &name, ROOT_INO, b"TEMPFILE", 0).unwrap();
            v.rename(ROOT_INO, b"TEMPFILE", ROOT_INO, &name, 0).unwrap();
        }
    }
    assert_eq!(seen, n);
}

/// copy_file_range copies run by run: data, holes (zeros over mapped destination bytes) and
/// unwritten ranges come out exactly; the same file works for disjoint ranges, through its
/// buffer a chunk at a time.
#[test]
fn copy_range_copies_data_holes_and_unwritten_exactly() {
    let t = tempfile::tempdir().unwrap();
    let p = make_pool(t.path());
    let v = load(&p);
    let src = v.create(ROOT, ROOT_INO, b"src", 0o644, true).unwrap().ino;
    let dst = v.create(ROOT, ROOT_INO, b"dst", 0o644, true).unwrap().ino;
    let mut want: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    v.write(ROOT, src, 0, &want).unwrap();
    v.fallocate(
        src,
        50_000,
        70_000,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    v.fallocate(src, 200_000, 30_000, libc::FALLOC_FL_ZERO_RANGE)
        .unwrap();
    want[50_000..120_000].fill(0);
    want[200_000..230_000].fill(0);
    v.write(ROOT, dst, 0, &[0xEEu8; 400_000]).unwrap();
    assert_eq!(
        v.copy_range(ROOT, src, 0, dst, 1000, 300_000).unwrap(),
        300_000
    );
    let got = read_all(&v, dst);
    assert_eq!(&got[..1000], &[0xEEu8; 1000][..]);
    assert_eq!(&got[1000..301_000], &want[..]);
    assert_eq!(&got[301_000..], &[0xEEu8; 99_000][..]);
    // Within one file, disjoint ranges.
    assert_eq!(
        v.copy_range(ROOT, src, 0, src, 400_000, 10_000).unwrap(),
        10_000
    );
    let again = read_all(&v, src);
    assert_eq!(&again[400_000..410_000], &want[..10_000]);
    assert_eq!(
        v.copy_range(ROOT, src, 0, src, 5_000, 10_000)
            .map_err(|e| errno(&e))
            .unwrap_err(),
        libc::EINVAL
    );
    // Within one file, more than the 1 MiB it copies at a time, holes and unwritten ranges
    // across a chunk boundary, a hole at the end extending the size.
    let big = v.create(ROOT, ROOT_INO, b"big", 0o644, true).unwrap().ino;
    let len = 2_600_000u64;
    let mut model: Vec<u8> = (0..len as u32).map(|i| (i % 253) as u8 | 1).collect();
    v.write(ROOT, big, 0, &model).unwrap();
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    v.fallocate(big, 1_000_000, 100_000, libc::FALLOC_FL_PUNCH_HOLE | keep)
        .unwrap();
    v.fallocate(big, 2_000_000, 90_000, libc::FALLOC_FL_ZERO_RANGE)
        .unwrap();
    v.setattr(
        ROOT,
        big,
        SetAttr {
            size: Some(len + 50_000),
            ..Default::default()
        },
    )
    .unwrap();
    model[1_000_000..1_100_000].fill(0);
    model[2_000_000..2_090_000].fill(0);
    model.resize(len as usize + 50_000, 0);
    let n = model.len() as u64;
    assert_eq!(v.copy_range(ROOT, big, 0, big, 3 << 20, n).unwrap(), n);
    model.resize(3 << 20, 0);
    model.extend_from_within(..n as usize);
    assert_eq!(read_all(&v, big), model);
    drop(v);
    let v = load(&p);
    assert_eq!(&read_all(&v, dst)[1000..301_000], &want[..]);
    let big = v.lookup(ROOT_INO, b"big").unwrap().ino;
    assert_eq!(read_all(&v, big), model);
    v.allocator().check_consistency().unwrap();
}

/// fsync of a file msyncs the header and log, the checkpoint and the file's own extents, not
/// the whole pool; fsync of a directory skips file data; a file of many extents syncs the
/// pool in one call.
#[test]
fn fsync_syncs_what_the_inode_depends_on() {
    use pfnfs_alloc::{MemBackend, PoolBackend};
    use std::sync::Mutex;

    /// A memory pool that records its sync calls.
    #[derive(Debug)]
    struct Recorder {
        mem: MemBackend,
        syncs: Mutex<Vec<(u64, u64)>>,
    }
    impl PoolBackend for Recorder {
        fn len_bytes(&self) -> u64 {
            self.mem.len_bytes()
        }
        fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), pfnfs_alloc::MediaError> {
            self.mem.read_into(offset, buf)
        }
        unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
            // SAFETY: the same contract, passed on.
            unsafe { self.mem.borrow(offset, len) }
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), pfnfs_alloc::MediaError> {
            self.mem.write(offset, data)
        }
        fn zero(&self, offset: u64, len: u64) -> Result<(), pfnfs_alloc::MediaError> {
            self.mem.zero(offset, len)
        }
        unsafe fn write_flushed(
            &self,
            offset: u64,
            data: &[u8],
        ) -> Result<(), pfnfs_alloc::MediaError> {
            // SAFETY: the same contract, passed on.
            unsafe { self.mem.write_flushed(offset, data) }
        }
        fn flush(&self, offset: u64, len: u64) -> Result<(), pfnfs_alloc::MediaError> {
            self.mem.flush(offset, len)
        }
        fn fence(&self) -> std::io::Result<()> {
            self.mem.fence()
        }
        fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
            self.syncs.lock().unwrap().push((offset, len));
            Ok(())
        }
    }

    const POOL_BYTES: u64 = 64 << 20;
    let rec = Arc::new(Recorder {
        mem: MemBackend::new(POOL_BYTES),
        syncs: Mutex::new(Vec::new()),
    });
    let pool = Pool::format_backend("rec", Box::new(rec.clone())).unwrap();
    let (log_offset, log_len) = pool.log_region();
    let v = Volume::load(Arc::new(pool)).unwrap();
    let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap();
    v.write(ROOT, f.ino, 0, &[7u8; 3 << 20]).unwrap();
    let take = || std::mem::take(&mut *rec.syncs.lock().unwrap());
    take();

    v.fsync(f.ino).unwrap();
    let syncs = take();
    let total: u64 = syncs.iter().map(|s| s.1).sum();
    assert!(syncs.contains(&(0, log_offset + log_len)), "{syncs:?}");
    assert!(total < POOL_BYTES / 2, "{syncs:?}");
    let data_bytes: u64 = syncs
        .iter()
        .filter(|s| s.0 >= log_offset + log_len)
        .map(|s| s.1)
        .sum();
    assert!(data_bytes >= 3 << 20, "file data not synced: {syncs:?}");

    v.fsync(ROOT_INO).unwrap();
    let dir_syncs = take();
    let dir_data: u64 = dir_syncs
        .iter()
        .filter(|s| s.0 >= log_offset + log_len)
        .map(|s| s.1)
        .sum();
    assert!(
        dir_data < 3 << 20,
        "directory fsync synced file data: {dir_syncs:?}"
    );

    // Every other frame: more extents than fsync walks one by one.
    let g = v.create(ROOT, ROOT_INO, b"g", 0o644, true).unwrap();
    for i in 0..200u64 {
        v.write(ROOT, g.ino, i * 8192, &[1u8; 4096]).unwrap();
        v.write(ROOT, f.ino, (3 << 20) + i * 4096, &[2u8; 4096])
            .unwrap();
    }
    take();
    v.fsync(g.ino).unwrap();
    assert_eq!(take(), vec![(0, POOL_BYTES)]);
}

/// What each kind of writer takes away from a file with setuid, setgid (group-executable) and
/// a file capability: page-cache write-back nothing, a process with CAP_FSETID the capability
/// only, one without it everything; and the drop survives a reload.
#[test]
fn writers_take_privileges_away() {
    use pfnfs_fs::volume::{CAPABILITY_XATTR, Writer};
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let v = load(&p);
    let user = Caller {
        uid: 1000,
        gid: 1000,
    };
    let cap = [1u8, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let cases = [
        ("cache", Writer::PageCache, 0o6775, true),
        (
            "fsetid",
            Writer::Process {
                caller: user,
                keeps_suidgid: true,
            },
            0o6775,
            false,
        ),
        (
            "user",
            Writer::Process {
                caller: user,
                keeps_suidgid: false,
            },
            0o775,
            false,
        ),
        ("root", Writer::process(ROOT), 0o6775, false),
    ];
    let mut inos = Vec::new();
    for (name, writer, mode, keeps_cap) in cases {
        let f = v
            .create(ROOT, ROOT_INO, name.as_bytes(), 0o6775, false)
            .unwrap();
        v.setxattr(f.ino, CAPABILITY_XATTR, &cap, 0).unwrap();
        // An overwrite in place (no new frames, same size) and an extending write.
        v.write(ROOT, f.ino, 0, b"0123456789").unwrap();
        v.setxattr(f.ino, CAPABILITY_XATTR, &cap, 0).unwrap();
        v.write(writer, f.ino, 2, b"ab").unwrap();
        v.write(writer, f.ino, 9, b"xyz").unwrap();
        let a = v.getattr(f.ino).unwrap();
        assert_eq!(a.mode & 0o7777, mode, "{name}");
        assert_eq!(
            v.getxattr(f.ino, CAPABILITY_XATTR).is_ok(),
            keeps_cap,
            "{name}"
        );
        inos.push((f.ino, name, mode, keeps_cap));
    }
    drop(v);
    let v = load(&p);
    for (ino, name, mode, keeps_cap) in inos {
        assert_eq!(
            v.getattr(ino).unwrap().mode & 0o7777,
            mode,
            "{name} after reload"
        );
        assert_eq!(
            v.getxattr(ino, CAPABILITY_XATTR).is_ok(),
            keeps_cap,
            "{name} after reload"
        );
        assert_eq!(read_all(&v, ino), b"01ab45678xyz", "{name}");
    }
}

/// RAM holds what is in use, not what exists: with a cache of 64 inodes, 3,000 files in 5
/// directories are created, read back, renamed and deleted through the tree; the cache stays
/// near its size, every name, attribute and byte is right, readdir lists every entry once
/// (also across commits in the middle of a listing), an open unlinked file survives eviction
/// pressure and commits, and the pool reloads clean.
#[test]
fn metadata_lives_in_the_tree_and_ram_holds_only_a_bounded_cache() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let v = load(&p);
    v.set_cache_bytes(0); // the smallest cache: 64 inodes
    let mut dirs = Vec::new();
    for d in 0..5u64 {
        dirs.push(
            v.mkdir(ROOT, ROOT_INO, format!("d{d}").as_bytes(), 0o755)
                .unwrap()
                .ino,
        );
    }
    let mut files = Vec::new();
    for i in 0..3000u64 {
        let parent = dirs[(i % 5) as usize];
        let e = v
            .create(ROOT, parent, format!("f{i}").as_bytes(), 0o644, true)
            .unwrap();
        v.write(ROOT, e.ino, 0, format!("file {i}").as_bytes())
            .unwrap();
        files.push((parent, e.ino));
        if i % 997 == 0 {
            v.checkpoint().unwrap();
        }
        // Changed inodes are pinned until the next commit (at most 1024), nothing else.
        assert!(
            v.cached_inodes() <= 64 + 1024 + 64,
            "{} cached",
            v.cached_inodes()
        );
    }
    v.checkpoint().unwrap();
    // Open one file, then delete it: it must survive until released.
    let (kept_parent, kept) = files[1234];
    v.open(kept, false).unwrap();
    v.remove(kept_parent, b"f1234", false).unwrap();
    for (i, &(parent, ino)) in files.iter().enumerate() {
        if i == 1234 {
            continue;
        }
        let e = v.lookup(parent, format!("f{i}").as_bytes()).unwrap();
        assert_eq!(e.ino, ino);
        assert_eq!(read_all(&v, ino), format!("file {i}").into_bytes());
    }
    // Reads moved atimes (relatime): those inodes are pinned until the next commit.
    assert!(
        v.cached_inodes() <= 64 + 1024 + 64,
        "{} cached after reads",
        v.cached_inodes()
    );
    v.checkpoint().unwrap();
    assert!(
        v.cached_inodes() <= 64 + 8,
        "{} cached after a commit",
        v.cached_inodes()
    );
    // Readdir with a commit between batches lists every entry exactly once.
    let mut seen = std::collections::BTreeSet::new();
    let mut offset = 0;
    loop {
        let batch = v.readdir_batch(dirs[0], offset, 97).unwrap();
        let Some(last) = batch.last() else { break };
        offset = last.1;
        for (_, _, _, name) in &batch {
            assert!(seen.insert(name.clone()), "{name:?} listed twice");
        }
        v.create(
            ROOT,
            dirs[1],
            format!("late{offset}").as_bytes(),
            0o644,
            true,
        )
        .unwrap();
        v.checkpoint().unwrap();
    }
    assert_eq!(seen.len(), 600 + 2);
    // Rename within and across directories, delete half.
    for i in (0..3000u64).step_by(2) {
        if i == 1234 {
            continue;
        }
        let parent = dirs[(i % 5) as usize];
        if i % 4 == 0 {
            v.rename(
                parent,
                format!("f{i}").as_bytes(),
                dirs[0],
                format!("r{i}").as_bytes(),
                0,
            )
            .unwrap();
        } else {
            v.remove(parent, format!("f{i}").as_bytes(), false).unwrap();
        }
    }
    assert_eq!(read_all(&v, kept), b"file 1234".to_vec());
    v.release(kept);
    assert!(v.getattr(kept).is_err(), "reclaimed at its last release");
    v.shutdown().unwrap();
    drop(v);
    let v = load(&p);
    for i in 0..3000u64 {
        let parent = dirs[(i % 5) as usize];
        let found = v.lookup(parent, format!("f{i}").as_bytes()).is_ok();
        let renamed = v.lookup(dirs[0], format!("r{i}").as_bytes()).is_ok();
        match (i % 2, i % 4, i) {
            (_, _, 1234) => assert!(!found && !renamed),
            (1, _, _) => assert!(found && !renamed, "f{i}"),
            (0, 0, _) => assert!(!found && renamed, "r{i}"),
            _ => assert!(!found && !renamed, "f{i} deleted"),
        }
    }
    let report = pfnfs_fs::fsck::check_volume(&v);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A committed directory emptied and removed takes its entries out of the tree with it
/// (they lived only in its cell's changes once it was emptied).
#[test]
fn removing_a_committed_directory_leaves_nothing_of_it_in_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let v = load(&p);
    let a = v.mkdir(ROOT, ROOT_INO, b"a", 0o755).unwrap().ino;
    let b = v.mkdir(ROOT, a, b"b", 0o755).unwrap().ino;
    for i in 0..20 {
        v.create(ROOT, b, format!("f{i}").as_bytes(), 0o644, true)
            .unwrap();
    }
    v.checkpoint().unwrap();
    for i in 0..20 {
        v.remove(b, format!("f{i}").as_bytes(), false).unwrap();
    }
    v.remove(a, b"b", true).unwrap();
    v.shutdown().unwrap();
    drop(v);
    let v = load(&p);
    let report = pfnfs_fs::fsck::check_volume(&v);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(v.lookup(a, b"b").is_err());
    v.shutdown().unwrap();
    let report = pfnfs_fs::fsck::fsck_pool(&p, pfnfs_fs::fsck::FsckMode::Check).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// `preload` (READDIRPLUS's batched read) decodes runs of neighbouring inodes exactly as one
/// inode at a time does: files with several extents and xattrs, a symlink, a subdirectory
/// and removed inodes (gaps) inside a run, and numbers that never existed.
#[test]
fn preload_reads_runs_of_inodes_as_single_reads_do() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let v = load(&p);
    let d = v.mkdir(ROOT, ROOT_INO, b"d", 0o755).unwrap().ino;
    let mut inos = Vec::new();
    for i in 0..120u64 {
        let name = format!("f{i}");
        let ino = match i % 10 {
            7 => {
                v.symlink(ROOT, d, name.as_bytes(), b"some/target")
                    .unwrap()
                    .ino
            }
            8 => v.mkdir(ROOT, d, name.as_bytes(), 0o700).unwrap().ino,
            _ => {
                let ino = v.create(ROOT, d, name.as_bytes(), 0o644, true).unwrap().ino;
                v.write(ROOT, ino, 0, format!("file {i}").as_bytes())
                    .unwrap();
                if i % 5 == 0 {
                    v.write(ROOT, ino, 1 << 20, b"second extent").unwrap();
                }
                if i % 3 == 0 {
                    v.setxattr(ino, b"user.n", name.as_bytes(), 0).unwrap();
                }
                ino
            }
        };
        inos.push(ino);
    }
    for i in (0..120u64).filter(|i| i % 10 == 4) {
        v.remove(d, format!("f{i}").as_bytes(), false).unwrap();
    }
    v.shutdown().unwrap();
    drop(v);
    let describe = |v: &Volume, ino: u64| -> String {
        let Ok(mut e) = v.stat(ino) else {
            return "gone".into();
        };
        // Reads may move atime (relatime); everything else must be equal.
        e.attr.atime = e.attr.mtime;
        let body = match e.attr.mode & libc::S_IFMT {
            libc::S_IFREG => format!("{:?}", read_all(v, ino)),
            libc::S_IFLNK => format!("{:?}", v.readlink(ino).unwrap()),
            _ => String::new(),
        };
        format!("{e:?} {body} {:?}", v.getxattr(ino, b"user.n").ok())
    };
    let one_by_one = load(&p);
    let expected: Vec<String> = inos.iter().map(|&i| describe(&one_by_one, i)).collect();
    drop(one_by_one);
    let v = load(&p);
    v.set_cache_bytes(1 << 20);
    let mut asked = inos.clone();
    asked.extend([inos[119] + 1000, inos[0] + 5000, u64::MAX - 1]);
    v.preload(&asked);
    let cached = v.cached_inodes();
    assert!(cached >= inos.len() - 12, "{cached} cached after preload");
    let got: Vec<String> = inos.iter().map(|&i| describe(&v, i)).collect();
    assert_eq!(got, expected);
    assert_eq!(got.iter().filter(|s| *s == "gone").count(), 12);
}

/// What FUSE export support (NFS file handles) asks of the volume: LOOKUP of "." by inode
/// number for any kind of inode, ".." of a directory, ENOENT (ESTALE to the handle) for an
/// inode without names even while it is open, and a generation that an inode keeps across
/// remounts while inodes made by another mount get another one.
#[test]
fn file_handle_lookups_and_generations() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_pool(dir.path());
    let (d, f, g1) = {
        let v = load(&p);
        let d = v.mkdir(ROOT, ROOT_INO, b"dir", 0o755).unwrap();
        let f = v.create(ROOT, d.ino, b"file", 0o644, true).unwrap();
        assert_ne!(f.attr.generation, 0);
        assert!(
            f.attr.generation <= u64::from(u32::MAX),
            "the kernel keeps 32 bits"
        );
        assert_eq!(
            d.attr.generation, f.attr.generation,
            "one generation per mount"
        );
        v.shutdown().unwrap();
        (d.ino, f.ino, f.attr.generation)
    };
    let v = load(&p);
    let dot = v.lookup(f, b".").unwrap();
    assert_eq!(
        (dot.ino, dot.attr.generation),
        (f, g1),
        "kept across a remount"
    );
    assert_eq!(v.lookup(d, b".").unwrap().ino, d);
    assert_eq!(v.lookup(d, b"..").unwrap().ino, ROOT_INO);
    assert_eq!(
        v.lookup(f, b"..").unwrap_err().kind,
        pfnfs_fs::error::ErrorKind::NotDirectory
    );
    let h = v.create(ROOT, d, b"new", 0o644, true).unwrap();
    assert_ne!(h.attr.generation, g1, "another mount, another generation");
    // Gone from the namespace but still open: a handle to it is stale.
    v.open(h.ino, false).unwrap();
    v.remove(d, b"new", false).unwrap();
    assert_eq!(
        v.lookup(h.ino, b".").unwrap_err().kind,
        pfnfs_fs::error::ErrorKind::NotFound
    );
    v.release(h.ino);
    assert_eq!(
        v.lookup(h.ino, b".").unwrap_err().kind,
        pfnfs_fs::error::ErrorKind::NotFound
    );
    // A number never handed out.
    assert_eq!(
        v.lookup(h.ino + 1000, b".").unwrap_err().kind,
        pfnfs_fs::error::ErrorKind::NotFound
    );
}
