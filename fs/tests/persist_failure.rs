//! What a failed persist does (docs/DESIGN.md, section 6, "A failed persist").
//!
//! The pool runs on a [`FaultyBackend`] over a [`CrashSimBackend`], which fails chosen persist
//! points with a chosen errno, the bytes either reaching the medium or not. For a record whose
//! persist fails, the operation must return that errno, RAM must not show it, the log must
//! refuse further records until a checkpoint (which the next operation writes), and a reload
//! of what is durable must not show it either (once the checkpoint superseded the log; before
//! that a reload may find the record whole, as after a crash with the operation in flight).
//! Memory that fails under the log or under a checkpoint's new nodes (`FaultyBackend::lose`)
//! fails the commit the same way, with EIO, and leaves the last commit durable.
//! Everything is checked with fsck, the allocator's consistency check and an exact cover of
//! the data region.

use std::ops::Range;
use std::sync::Arc;

use pfnfs_alloc::{CrashSimBackend, Fault, FaultyBackend, MemBackend, PfnRange, Pool};
use pfnfs_fs::error::{ErrorKind, FsResult};
use pfnfs_fs::inode::ROOT_INO;
use pfnfs_fs::volume::{Caller, SetAttr, Volume};

const ROOT: Caller = Caller { uid: 0, gid: 0 };

struct Rig {
    sim: Arc<CrashSimBackend>,
    faulty: Arc<FaultyBackend<Arc<CrashSimBackend>>>,
    vol: Volume,
    /// A file holding 10,000 bytes of 7s.
    file: u64,
}

impl Rig {
    fn new() -> Rig {
        let sim = Arc::new(CrashSimBackend::new(32 << 20));
        let faulty = Arc::new(FaultyBackend::new(sim.clone()));
        let pool = Pool::format_backend("faulty", Box::new(faulty.clone())).unwrap();
        let vol = Volume::load(Arc::new(pool)).unwrap();
        let file = vol.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
        vol.write(ROOT, file, 0, &[7u8; 10_000]).unwrap();
        Rig {
            sim,
            faulty,
            vol,
            file,
        }
    }

    /// The byte range of the metadata log: a fault there hits record persists only.
    fn log(&self) -> Range<u64> {
        let (offset, len) = self.vol.pool().log_region();
        offset..offset + len
    }

    /// The next `count` record persists fail with `errno`.
    fn fail_records(&self, errno: i32, count: u64, reached: bool) {
        self.faulty.arm(Fault {
            errno,
            range: Some(self.log()),
            count,
            reached,
        });
    }

    /// The volume a mount of the durable image finds (checked).
    fn reload(&self) -> Volume {
        let vol = self.reload_unchecked();
        check(&vol);
        vol
    }

    /// The volume a mount of the durable image finds.
    fn reload_unchecked(&self) -> Volume {
        let pool = Pool::open_backend(
            "reloaded",
            Box::new(MemBackend::from_bytes(&self.sim.crash_image())),
            false,
        )
        .unwrap();
        Volume::load(Arc::new(pool)).unwrap()
    }
}

fn read(vol: &Volume, ino: u64) -> Vec<u8> {
    vol.read(ino, 0, 1 << 20, |b| b.to_vec()).unwrap()
}

fn errno_of<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
    match r {
        Err(e) => match e.kind {
            ErrorKind::Os(errno) => errno,
            other => panic!("expected an OS error, got {other:?}: {e}"),
        },
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
    }
}

/// fsck clean, allocator consistent, every data frame free, in the checkpoint, in doubt or
/// mapped by exactly one extent.
fn check(vol: &Volume) {
    let report = pfnfs_fs::fsck::check_volume(vol);
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
    vol.allocator().check_consistency().unwrap();
    let mut all: Vec<PfnRange> = vol.allocator().free_extents();
    all.extend(vol.tree_frames().unwrap());
    all.extend(vol.frames_in_doubt());
    // Frames whose memory failed are neither free nor used: the bad list covers them.
    let data = vol.pool().data_region();
    all.extend(
        vol.pool()
            .bad_frames()
            .list()
            .into_iter()
            .filter(|r| data.covers(r)),
    );
    for cell in vol.all_cells().unwrap() {
        if let Some(map) = cell.inode.read().file_map() {
            all.extend(map.iter().map(|e| e.pfns));
        }
    }
    all.sort_by_key(|r| r.start);
    let mut cursor = data.start;
    for r in all {
        assert_eq!(
            r.start, cursor,
            "data frames not covered exactly at {cursor}"
        );
        cursor = r.end();
    }
    assert_eq!(cursor, data.end(), "data frames leaked at the end");
}

#[test]
fn an_append_whose_record_does_not_persist_is_not_done_and_the_log_refuses_until_a_checkpoint() {
    for reached in [false, true] {
        let rig = Rig::new();
        let vol = &rig.vol;
        let free = vol.allocator().free_frames();
        let generation = vol.journal().generation();
        rig.fail_records(libc::ENOSPC, 1, reached);
        // Extends the file into a new frame: data persisted, then the record, which fails.
        let r = vol.write(ROOT, rig.file, 10_000, &[9u8; 5000]);
        assert_eq!(errno_of(r), libc::ENOSPC, "reached {reached}");
        assert_eq!(rig.faulty.injected(), 1);
        // Not done in RAM: old size and bytes; the new frame is held in doubt, not free.
        assert_eq!(vol.getattr(rig.file).unwrap().size, 10_000);
        assert_eq!(read(vol, rig.file), vec![7u8; 10_000]);
        assert_eq!(vol.frames_in_doubt().len(), 1);
        assert_eq!(vol.allocator().free_frames(), free - 1);
        assert!(vol.journal().is_refusing());
        check(vol);
        if !reached {
            // What is durable does not have it either.
            let reloaded = rig.reload();
            let f = reloaded.lookup(ROOT_INO, b"f").unwrap().ino;
            assert_eq!(read(&reloaded, f), vec![7u8; 10_000]);
        }
        // The next operation checkpoints first (superseding the log), then goes through.
        let d = vol.mkdir(ROOT, ROOT_INO, b"d", 0o755).unwrap();
        assert!(!vol.journal().is_refusing());
        assert!(vol.journal().generation() > generation);
        assert!(vol.frames_in_doubt().is_empty());
        assert_eq!(vol.allocator().free_frames(), free);
        check(vol);
        let reloaded = rig.reload();
        let f = reloaded.lookup(ROOT_INO, b"f").unwrap().ino;
        assert_eq!(read(&reloaded, f), vec![7u8; 10_000], "reached {reached}");
        assert_eq!(reloaded.lookup(ROOT_INO, b"d").unwrap().ino, d.ino);
        // And the write goes through now.
        vol.write(ROOT, rig.file, 10_000, &[9u8; 5000]).unwrap();
        assert_eq!(read(&rig.reload(), f).len(), 15_000);
    }
}

#[test]
fn a_record_that_reached_the_pool_may_replay_after_a_crash_before_the_checkpoint() {
    // The op failed, so the caller cannot count on it either way; what a crash leaves must
    // still be consistent, and with a whole record it is the op done.
    let rig = Rig::new();
    rig.fail_records(libc::EIO, 1, true);
    let r = rig.vol.create(ROOT, ROOT_INO, b"new", 0o644, true);
    assert_eq!(errno_of(r), libc::EIO);
    assert!(rig.vol.lookup(ROOT_INO, b"new").is_err());
    let reloaded = rig.reload();
    assert!(reloaded.lookup(ROOT_INO, b"new").is_ok());
}

#[test]
fn create_and_setattr_whose_records_fail_are_not_done() {
    let rig = Rig::new();
    let vol = &rig.vol;
    rig.fail_records(libc::EIO, 1, false);
    let r = vol.create(ROOT, ROOT_INO, b"new", 0o644, true);
    assert_eq!(errno_of(r), libc::EIO);
    assert!(vol.lookup(ROOT_INO, b"new").is_err());
    check(vol);
    assert!(rig.reload().lookup(ROOT_INO, b"new").is_err());
    // The log refuses; the next operation's checkpoint clears that. This time the checkpoint
    // fails too (its body's persist, outside the log), so the chmod fails with the log's
    // error and changes nothing.
    let data = vol.pool().data_region();
    rig.faulty.arm(Fault {
        errno: libc::ENOSPC,
        range: Some(data.start.byte_offset()..data.end().byte_offset()),
        count: 1,
        reached: false,
    });
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    let r = vol.setattr(ROOT, rig.file, chmod);
    assert_eq!(errno_of(r), libc::EIO, "the log's error, as first reported");
    assert_eq!(vol.getattr(rig.file).unwrap().mode & 0o7777, 0o644);
    assert!(vol.journal().is_refusing());
    // fsync writes that checkpoint first (it succeeds now).
    assert!(vol.fsync(rig.file).is_ok());
    assert!(!vol.journal().is_refusing());
    check(vol);
    // A setattr whose own record fails.
    rig.fail_records(libc::ENOSPC, 1, false);
    let r = vol.setattr(ROOT, rig.file, chmod);
    assert_eq!(errno_of(r), libc::ENOSPC);
    assert_eq!(vol.getattr(rig.file).unwrap().mode & 0o7777, 0o644);
    let reloaded = rig.reload();
    let f = reloaded.lookup(ROOT_INO, b"f").unwrap().ino;
    assert_eq!(reloaded.getattr(f).unwrap().mode & 0o7777, 0o644);
    vol.setattr(ROOT, rig.file, chmod).unwrap();
    assert_eq!(vol.getattr(rig.file).unwrap().mode & 0o7777, 0o600);
    let reloaded = rig.reload();
    assert_eq!(reloaded.getattr(f).unwrap().mode & 0o7777, 0o600);
}

#[test]
fn fsync_fails_while_the_log_refuses_and_no_checkpoint_can_be_written() {
    let rig = Rig::new();
    let vol = &rig.vol;
    rig.fail_records(libc::EIO, 1, false);
    assert_eq!(
        errno_of(vol.create(ROOT, ROOT_INO, b"x", 0o644, true)),
        libc::EIO
    );
    // Every persist point fails now: the checkpoint fsync tries cannot be written.
    rig.faulty.arm(Fault {
        errno: libc::EIO,
        range: None,
        count: u64::MAX,
        reached: false,
    });
    assert_eq!(errno_of(vol.fsync(rig.file)), libc::EIO);
    rig.faulty.disarm();
    vol.fsync(rig.file).unwrap();
    check(vol);
}

#[test]
fn a_write_whose_data_persist_fails_allocates_nothing() {
    let rig = Rig::new();
    let vol = &rig.vol;
    let free = vol.allocator().free_frames();
    // A persist point with no range: the data path's fence.
    rig.faulty.arm(Fault {
        errno: libc::EIO,
        range: None,
        count: 1,
        reached: false,
    });
    let r = vol.write(ROOT, rig.file, 1 << 20, &[5u8; 8192]);
    assert_eq!(errno_of(r), libc::EIO);
    assert_eq!(vol.getattr(rig.file).unwrap().size, 10_000);
    assert_eq!(
        vol.allocator().free_frames(),
        free,
        "the new frames went back"
    );
    assert!(vol.frames_in_doubt().is_empty());
    assert!(!vol.journal().is_refusing(), "no record was stored");
    check(vol);
    vol.write(ROOT, rig.file, 1 << 20, &[5u8; 8192]).unwrap();
    check(vol);
}

#[test]
fn truncate_and_fallocate_whose_records_fail_keep_their_frames_out_of_use() {
    let rig = Rig::new();
    let vol = &rig.vol;
    let free = vol.allocator().free_frames();
    // A truncate inside a frame copies that frame first; the record fails.
    rig.fail_records(libc::EIO, 1, true);
    let r = vol.setattr(
        ROOT,
        rig.file,
        SetAttr {
            size: Some(5000),
            ..Default::default()
        },
    );
    assert_eq!(errno_of(r), libc::EIO);
    assert_eq!(vol.getattr(rig.file).unwrap().size, 10_000);
    assert_eq!(read(vol, rig.file), vec![7u8; 10_000]);
    assert_eq!(vol.frames_in_doubt().len(), 1, "the copied frame");
    check(vol);
    // fallocate, while the checkpoint it tries first fails (its body's persist): the log
    // refuses the record, nothing was stored, and the new frames go back.
    let data = vol.pool().data_region();
    rig.faulty.arm(Fault {
        errno: libc::ENOSPC,
        range: Some(data.start.byte_offset()..data.end().byte_offset()),
        count: 1,
        reached: false,
    });
    let r = vol.fallocate(rig.file, 0, 1 << 20, 0);
    assert_eq!(errno_of(r), libc::EIO);
    assert_eq!(vol.frames_in_doubt().len(), 1);
    assert_eq!(vol.allocator().free_frames(), free - 1);
    check(vol);
    vol.fallocate(rig.file, 0, 1 << 20, 0).unwrap();
    assert!(vol.frames_in_doubt().is_empty());
    check(vol);
    let reloaded = rig.reload();
    let f = reloaded.lookup(ROOT_INO, b"f").unwrap().ino;
    assert_eq!(reloaded.getattr(f).unwrap().size, 1 << 20);
    assert_eq!(read(&reloaded, f)[..10_000], [7u8; 10_000]);
}

#[test]
fn a_failed_checkpoint_commit_keeps_both_checkpoints_and_the_log_refuses() {
    for reached in [false, true] {
        let rig = Rig::new();
        let vol = &rig.vol;
        let old = vol.tree_frames().unwrap();
        // The superblock slots: the checkpoint's commit point.
        rig.faulty.arm(Fault {
            errno: libc::EIO,
            range: Some(0..8192),
            count: 1,
            reached,
        });
        assert_eq!(errno_of(vol.checkpoint()), libc::EIO);
        assert_eq!(
            vol.tree_frames().unwrap(),
            old,
            "the old checkpoint stays current"
        );
        assert!(!vol.frames_in_doubt().is_empty(), "the new one is in doubt");
        assert!(vol.journal().is_refusing());
        check(vol);
        // Whichever superblock a mount finds, it is consistent and has the file.
        let reloaded = rig.reload();
        let f = reloaded.lookup(ROOT_INO, b"f").unwrap().ino;
        assert_eq!(read(&reloaded, f), vec![7u8; 10_000]);
        drop(reloaded);
        // The next operation's checkpoint commits: both old ones are given back.
        vol.create(ROOT, ROOT_INO, b"n", 0o644, true).unwrap();
        assert!(!vol.journal().is_refusing());
        assert!(vol.frames_in_doubt().is_empty());
        assert_ne!(vol.tree_frames().unwrap(), old);
        check(vol);
        assert!(rig.reload().lookup(ROOT_INO, b"n").is_ok());
    }
}

/// The memory of the log past its last record fails (a media error, storage gone): the
/// append that meets it fails with EIO and is not done, the frame is refused from then on,
/// what is durable is the last commit, and a checkpoint (which starts the log over at its
/// start) lets operations go through again.
#[test]
fn a_memory_error_in_the_log_fails_the_append_and_leaves_the_last_commit() {
    let rig = Rig::new();
    let vol = &rig.vol;
    let log = rig.log();
    // Lost from the log's next frame on; records go in until one meets it.
    let tail = log.start + vol.journal().used_bytes();
    rig.faulty.lose(tail.next_multiple_of(4096)..log.end);
    let mut made = 0;
    let failed = loop {
        let name = format!("new-{made}");
        match vol.create(ROOT, ROOT_INO, name.as_bytes(), 0o644, true) {
            Ok(_) => made += 1,
            Err(e) => {
                assert_eq!(errno_of::<()>(Err(e)), libc::EIO);
                break name;
            }
        }
        assert!(made < 1000, "no append met the lost frame");
    };
    assert!(made > 0);
    assert!(
        vol.lookup(ROOT_INO, failed.as_bytes()).is_err(),
        "not done in RAM"
    );
    assert_eq!(vol.pool().bad_frames().frames(), 1, "the frame is recorded");
    // Refused at once now, without touching the frame.
    let r = vol.mkdir(ROOT, ROOT_INO, b"d", 0o755);
    assert_eq!(errno_of(r), libc::EIO);
    assert_eq!(vol.pool().bad_frames().frames(), 1);
    let reloaded = rig.reload();
    assert!(reloaded.lookup(ROOT_INO, failed.as_bytes()).is_err());
    let last = format!("new-{}", made - 1);
    assert!(
        reloaded.lookup(ROOT_INO, last.as_bytes()).is_ok(),
        "the last commit"
    );
    let f = reloaded.lookup(ROOT_INO, b"f").unwrap().ino;
    assert_eq!(read(&reloaded, f), vec![7u8; 10_000]);
    // A checkpoint writes the tree elsewhere and starts the log at its (intact) start.
    vol.checkpoint().unwrap();
    vol.create(ROOT, ROOT_INO, b"after", 0o644, true).unwrap();
    check(vol);
    let reloaded = rig.reload();
    assert!(reloaded.lookup(ROOT_INO, b"after").is_ok());
    assert!(
        reloaded.pool().bad_frames().is_empty(),
        "a log frame is not kept on the pool's bad list (only data frames are)"
    );
}

/// The memory of every free data frame fails: a checkpoint's new tree nodes meet it, the
/// checkpoint fails with EIO before its commit point, and the pool still holds the last
/// commit plus its log, which a reload replays. The frame met is never handed out again.
#[test]
fn a_memory_error_under_a_checkpoint_fails_it_before_the_commit_point() {
    let rig = Rig::new();
    let vol = &rig.vol;
    let d = vol.mkdir(ROOT, ROOT_INO, b"d", 0o755).unwrap().ino;
    let seq = vol.pool().superblock().seq;
    for r in vol.allocator().free_extents() {
        rig.faulty
            .lose(r.start.byte_offset()..r.end().byte_offset());
    }
    let e = vol.checkpoint().expect_err("a checkpoint onto lost memory");
    assert_eq!(errno_of::<()>(Err(e)), libc::EIO);
    assert_eq!(vol.pool().superblock().seq, seq, "no superblock commit");
    let bad = vol.pool().bad_frames().list();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        !vol.allocator().overlaps_free(bad[0]),
        "a bad frame went back to the free set"
    );
    let reloaded = rig.reload();
    assert_eq!(
        reloaded.lookup(ROOT_INO, b"d").unwrap().ino,
        d,
        "the log replays"
    );
    let f = reloaded.lookup(ROOT_INO, b"f").unwrap().ino;
    assert_eq!(read(&reloaded, f), vec![7u8; 10_000]);
}

/// A data frame whose memory fails under a read: EIO, the frame on the pool's bad list; the
/// next checkpoint writes the bad-frame table and sets the superblock's bad-frames flag (older
/// builds refuse such a pool), and a reload refuses the frame from the start.
#[test]
fn a_bad_data_frame_is_kept_on_the_pool_and_flagged_in_the_superblock() {
    let rig = Rig::new();
    let vol = &rig.vol;
    vol.checkpoint().unwrap();
    assert!(!vol.pool().superblock().bad_frames);
    let frame = vol
        .cell(rig.file)
        .unwrap()
        .inode
        .read()
        .file_map()
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .pfns;
    rig.faulty
        .lose(frame.start.byte_offset()..frame.start.byte_offset() + 4096);
    let r = vol.read(rig.file, 0, 4096, |b| b.to_vec());
    assert_eq!(errno_of(r), libc::EIO);
    vol.checkpoint().unwrap();
    assert!(
        vol.pool().superblock().bad_frames,
        "the flag follows the table"
    );
    let report = pfnfs_fs::fsck::check_volume(vol);
    let kinds: Vec<&str> = report.problems.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["bad-frames"],
        "fsck names the file on the bad frame"
    );
    let reloaded = rig.reload_unchecked();
    assert!(reloaded.pool().superblock().bad_frames);
    assert_eq!(
        reloaded.pool().bad_frames().list(),
        vec![PfnRange::new(frame.start, 1).unwrap()]
    );
    let r = reloaded.read(rig.file, 0, 4096, |b| b.to_vec());
    assert_eq!(errno_of(r), libc::EIO, "refused from the start");
}
