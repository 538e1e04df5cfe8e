//! The pool end to end: create/open round trips on files, RAM and a loop device; superblock
//! commits (both slots, crashes at each persist point); format 1 pools refused and upgraded;
//! every kind of bad pool and its specific error; open never writing to a pool it refuses;
//! sparse creation of a huge pool; golden bytes; docs/DESIGN.md agreeing with the code.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pfnfs_alloc::layout::{
    LOG_FRAMES_MAX, LOG_FRAMES_MIN, LOG_SHARE_DIVISOR, LOG_START_PFN, POOL_BYTES_MIN,
    SUPERBLOCK_BYTES, log_frames_for,
};
use pfnfs_alloc::superblock::{
    FIELDS, FIELDS_V1, FORMAT_VERSION, MAGIC, Slot, SuperblockV1, field,
};
use pfnfs_alloc::{
    CheckpointRefV1, CrashMode, CrashSimBackend, CreateOptions, Durability, FRAME_SIZE, MemBackend,
    MetaRoot, OpenOptions, Pfn, PfnRange, Pool, PoolBackend, PoolError, Superblock,
};

const MIB: u64 = 1 << 20;

fn rw() -> OpenOptions {
    OpenOptions::default()
}

fn ro() -> OpenOptions {
    OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    }
}

fn create(path: &Path, size_bytes: u64) -> Pool {
    match Pool::create(path, size_bytes, &CreateOptions::default()) {
        Ok(pool) => pool,
        Err(e) => panic!("create {}: {e}", path.display()),
    }
}

/// A fresh 16 MiB file pool in `dir`, closed again.
fn small_pool(dir: &Path) -> PathBuf {
    let path = dir.join("pool");
    drop(create(&path, POOL_BYTES_MIN));
    path
}

fn read_slot(path: &Path, slot: Slot) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; SUPERBLOCK_BYTES];
    file.read_exact_at(&mut buf, slot.offset()).unwrap();
    buf
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
    file.sync_all().unwrap();
}

/// Decodes a slot, lets `f` change it, and writes it back with a valid checksum.
fn rewrite_slot(path: &Path, slot: Slot, f: impl FnOnce(&mut Superblock)) {
    let mut sb = Superblock::decode(&read_slot(path, slot)).unwrap();
    f(&mut sb);
    write_at(path, slot.offset(), &sb.encode());
}

/// Flips one byte of a slot's seq field: the checksum no longer matches.
fn damage_slot(path: &Path, slot: Slot) {
    let mut b = read_slot(path, slot);
    b[field::SEQ.offset] ^= 0x40;
    write_at(path, slot.offset(), &b);
}

/// Everything `open` could change: contents, length, modification time.
fn fingerprint(path: &Path) -> (Vec<u8>, i64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (
        std::fs::read(path).unwrap(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// Opens read-write (the mode that could do harm), expects a refusal, and checks that the
/// file is bit-for-bit and mtime-for-mtime what it was.
fn refused(path: &Path) -> PoolError {
    let before = fingerprint(path);
    let err = match Pool::open(path, &rw()) {
        Ok(pool) => panic!("{} opened: {:?}", path.display(), pool.superblock()),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error names the path: {msg}"
    );
    assert!(
        before == fingerprint(path),
        "open modified a pool it refused ({msg})"
    );
    // Read-only open refuses it the same way.
    let ro_err = Pool::open(path, &ro()).expect_err("read-only open refuses too");
    assert_eq!(
        std::mem::discriminant(&ro_err),
        std::mem::discriminant(&err)
    );
    err
}

fn mem_pool(len_bytes: u64) -> (Arc<MemBackend>, Pool) {
    let mem = Arc::new(MemBackend::new(len_bytes));
    let pool = Pool::format_backend("mem", Box::new(mem.clone())).unwrap();
    (mem, pool)
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn mem_format_open_round_trip() {
    let (_, pool) = mem_pool(64 * MIB + 12345);
    let sb = pool.superblock();
    assert_eq!(pool.len_bytes(), 64 * MIB, "rounded down to 2 MiB");
    assert_eq!(sb.pool_bytes, 64 * MIB);
    assert_eq!(
        (sb.version, sb.frame_size, sb.seq),
        (FORMAT_VERSION, 4096, 2)
    );
    assert_eq!(sb.log_start_pfn, LOG_START_PFN);
    assert_eq!(sb.log_frames, log_frames_for(64 * MIB / FRAME_SIZE));
    assert_eq!(sb.uuid[6] >> 4, 4, "v4 uuid");
    assert!(!sb.mounted);
    assert_eq!(
        pool.log_region(),
        (LOG_START_PFN * FRAME_SIZE, sb.log_frames * FRAME_SIZE)
    );
    let data = pool.data_region();
    assert_eq!(data.start, Pfn(LOG_START_PFN + sb.log_frames));
    assert_eq!(data.end().0 * FRAME_SIZE, 64 * MIB);

    let range = PfnRange::new(data.start, 3).unwrap();
    let off = pool.frame_offset(range.start).unwrap();
    pool.write(off + 100, b"hello pmem").unwrap();
    pool.persist(off, 3 * FRAME_SIZE).unwrap();
    assert_eq!(&pool.read_frames(range).unwrap()[100..110], b"hello pmem");

    let backend = pool.into_backend();
    let pool = Pool::open_backend("mem", backend, false).unwrap();
    assert_eq!(pool.superblock(), sb);
    assert_eq!(pool.read_vec(off + 100, 10).unwrap(), b"hello pmem");
}

#[test]
fn format_backend_rejects_small_backends() {
    let err = Pool::format_backend("tiny", Box::new(MemBackend::new(POOL_BYTES_MIN - 1)));
    assert!(matches!(err, Err(PoolError::BadSize { .. })), "{err:?}");
    let err = Pool::open_backend("empty", Box::new(MemBackend::new(0)), true);
    assert!(matches!(err, Err(PoolError::NotAPool { .. })), "{err:?}");
    let err = Pool::open_backend("zeros", Box::new(MemBackend::new(POOL_BYTES_MIN)), true);
    assert!(matches!(err, Err(PoolError::NotAPool { .. })), "{err:?}");
}

#[test]
fn file_create_open_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool");
    let pool = create(&path, 64 * MIB + 1);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * MIB);
    let sb = pool.superblock();
    let data = pool.data_region();
    let off = pool.frame_offset(data.start).unwrap();
    let payload: Vec<u8> = (0..3 * FRAME_SIZE).map(|i| (i % 251) as u8).collect();
    pool.write(off, &payload).unwrap();
    pool.persist(off, payload.len() as u64).unwrap();
    pool.sync(off, payload.len() as u64).unwrap();
    drop(pool);

    for opts in [
        rw(),
        ro(),
        OpenOptions {
            durability: Durability::Msync,
            ..rw()
        },
    ] {
        let pool = Pool::open(&path, &opts).unwrap();
        assert_eq!(pool.superblock(), sb);
        assert_eq!(pool.is_read_only(), opts.read_only);
        assert_eq!(pool.name(), path.as_path());
        assert_eq!(
            pool.read_frames(PfnRange::new(data.start, 3).unwrap())
                .unwrap(),
            &payload[..]
        );
    }
}

/// A metadata root inside `pool`'s data region, different for each `round`.
fn meta_for(pool: &Pool, round: u64) -> MetaRoot {
    MetaRoot {
        root_pfn: pool.data_region().start.0 + round,
        tree_frames: 1 + round,
        height: 1 + (round % 3) as u32,
        log_generation: round + 1,
        log_nonce: 0xabc0 + round,
        next_ino: 2 + round,
        inodes: 1 + round,
    }
}

#[test]
fn commit_superblock_writes_both_slots_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pool(dir.path());
    let mut last = None;
    for round in 0..5u64 {
        let opts = if round % 2 == 0 {
            rw()
        } else {
            OpenOptions {
                durability: Durability::Msync,
                ..rw()
            }
        };
        let pool = Pool::open(&path, &opts).unwrap();
        let before = pool.superblock();
        if let Some(last) = &last {
            assert_eq!(&before, last, "reopen sees the last commit");
        }
        let mut sb = before.clone();
        sb.mounted = round % 2 == 0;
        sb.meta = meta_for(&pool, round);
        sb.seq = 999; // ignored: the pool sets it
        pool.commit_superblock(sb.clone()).unwrap();
        let now = pool.superblock();
        assert_eq!(now.seq, before.seq + 2);
        assert_eq!(now.meta, sb.meta);
        assert_eq!(now.mounted, sb.mounted);
        assert_eq!(pool.damaged_slot(), None);
        drop(pool);
        // Both slots hold the new superblock: seq + 2 in the current slot (whose parity does
        // not change), seq + 1 in the other.
        let slot = Slot::for_seq(now.seq);
        assert_eq!(slot, Slot::for_seq(before.seq));
        assert_eq!(Superblock::decode(&read_slot(&path, slot)).unwrap(), now);
        let first = Superblock {
            seq: now.seq - 1,
            ..now.clone()
        };
        assert_eq!(
            Superblock::decode(&read_slot(&path, slot.other())).unwrap(),
            first
        );
        last = Some(now);
    }
}

#[test]
fn commit_refuses_geometry_changes_and_bad_roots() {
    let (mem, pool) = mem_pool(32 * MIB);
    let cur = pool.superblock();
    let image = mem.to_vec();
    let cases: [fn(&mut Superblock); 8] = [
        |s| s.pool_bytes += 2 * MIB,
        |s| s.uuid[0] ^= 1,
        |s| s.log_frames += 512,
        |s| s.created_secs += 1,
        |s| s.version = 1,
        |s| {
            s.meta.root_pfn = 1;
            s.meta.height = 1;
            s.meta.inodes = 1;
        },
        |s| s.meta.height = 1,
        |s| s.meta.next_ino = 1,
    ];
    for change in cases {
        let mut sb = cur.clone();
        change(&mut sb);
        let err = pool.commit_superblock(sb).unwrap_err();
        assert!(matches!(err, PoolError::BadSuperblock { .. }), "{err:?}");
        assert_eq!(pool.superblock(), cur, "a refused commit changes nothing");
    }
    assert!(mem.to_vec() == image, "a refused commit writes nothing");
}

#[test]
fn accessors_are_range_checked() {
    let (_, pool) = mem_pool(16 * MIB);
    let end = pool.len_bytes();
    let is_oor = |r: Result<(), PoolError>| matches!(r, Err(PoolError::OutOfRange { .. }));
    assert!(matches!(
        pool.read_vec(end - 1, 2),
        Err(PoolError::OutOfRange { .. })
    ));
    assert!(matches!(
        pool.read_vec(u64::MAX, 1),
        Err(PoolError::OutOfRange { .. })
    ));
    assert_eq!(pool.read_vec(end, 0).unwrap(), &[] as &[u8]);
    assert_eq!(pool.read_vec(end - 4, 4).unwrap(), &[0; 4]);
    assert!(is_oor(pool.write(end - 1, b"xy")));
    assert!(is_oor(pool.write(u64::MAX, b"x")));
    assert!(is_oor(pool.zero(end, 1)));
    assert!(is_oor(pool.zero(1 << 40, u64::MAX)));
    assert!(is_oor(pool.flush(end, 1)));
    assert!(is_oor(pool.persist(u64::MAX - 1, 4)));
    assert!(is_oor(pool.sync(0, end + 1)));
    assert!(pool.persist(0, end).is_ok());
    assert!(pool.sync(0, end).is_ok());
    let frames = end / FRAME_SIZE;
    assert!(pool.frame_offset(Pfn(frames - 1)).is_ok());
    assert!(matches!(
        pool.frame_offset(Pfn(frames)),
        Err(PoolError::OutOfRange { .. })
    ));
    assert!(matches!(
        pool.frame_offset(Pfn(u64::MAX)),
        Err(PoolError::OutOfRange { .. })
    ));
    assert!(
        pool.read_frames(PfnRange::new(Pfn(frames - 2), 2).unwrap())
            .is_ok()
    );
    for range in [
        PfnRange::new(Pfn(frames - 1), 2).unwrap(),
        PfnRange::new(Pfn(u64::MAX - 1), 1).unwrap(),
        PfnRange::new(Pfn(0), u64::MAX).unwrap(),
        PfnRange::new(Pfn(1 << 60), 1 << 3).unwrap(),
    ] {
        assert!(
            matches!(pool.read_frames(range), Err(PoolError::OutOfRange { .. })),
            "{range}"
        );
    }
    // The header belongs to superblock commits.
    for (off, len) in [(0, 1), (FRAME_SIZE, 8), (LOG_START_PFN * FRAME_SIZE - 1, 2)] {
        let err = pool.write(off, &vec![1; len]).unwrap_err();
        assert!(matches!(err, PoolError::HeaderRange { .. }), "{err:?}");
        let err = pool.zero(off, len as u64).unwrap_err();
        assert!(matches!(err, PoolError::HeaderRange { .. }), "{err:?}");
    }
    pool.write(LOG_START_PFN * FRAME_SIZE, b"log").unwrap();
    assert!(
        pool.read_vec(0, SUPERBLOCK_BYTES)
            .unwrap()
            .starts_with(&MAGIC)
    );
}

#[test]
fn read_only_pools_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pool(dir.path());
    let before = fingerprint(&path);
    let pool = Pool::open(&path, &ro()).unwrap();
    let off = pool.frame_offset(pool.data_region().start).unwrap();
    assert!(matches!(
        pool.write(off, b"x"),
        Err(PoolError::ReadOnly { .. })
    ));
    assert!(matches!(pool.zero(off, 1), Err(PoolError::ReadOnly { .. })));
    assert!(matches!(
        pool.commit_superblock(pool.superblock()),
        Err(PoolError::ReadOnly { .. })
    ));
    assert!(
        pool.persist(off, 1).is_ok() && pool.sync(off, 1).is_ok() && pool.flush(off, 1).is_ok()
    );
    assert_eq!(pool.read_vec(off, 1).unwrap(), &[0]);
    drop(pool);
    assert!(before == fingerprint(&path));

    let (mem, pool) = mem_pool(16 * MIB);
    drop(pool);
    let image = mem.to_vec();
    let pool = Pool::open_backend("mem-ro", Box::new(mem.clone()), true).unwrap();
    assert!(matches!(
        pool.write(off, b"x"),
        Err(PoolError::ReadOnly { .. })
    ));
    assert!(mem.to_vec() == image);
}

// ---------------------------------------------------------------------------------------------
// Bad pools: each gives its own error, and open leaves it untouched.

#[test]
fn random_bytes_are_not_a_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random");
    let mut bytes = vec![0u8; 2 * MIB as usize];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(refused(&path), PoolError::NotAPool { .. }));
    let path = dir.path().join("zeros");
    std::fs::write(&path, vec![0u8; 3 * FRAME_SIZE as usize]).unwrap();
    assert!(matches!(refused(&path), PoolError::NotAPool { .. }));
}

#[test]
fn empty_and_tiny_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty");
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(refused(&path), PoolError::NotAPool { .. }));
    let path = dir.path().join("short");
    std::fs::write(&path, b"hello").unwrap();
    assert!(matches!(refused(&path), PoolError::NotAPool { .. }));
    // The first 5000 bytes of a real pool: the magic is there, the rest is missing.
    let pool = small_pool(dir.path());
    let head = std::fs::read(&pool).unwrap()[..5000].to_vec();
    let path = dir.path().join("head");
    std::fs::write(&path, head).unwrap();
    match refused(&path) {
        PoolError::Truncated {
            expected_bytes,
            actual_bytes,
            ..
        } => {
            assert_eq!((expected_bytes, actual_bytes), (POOL_BYTES_MIN, 5000));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn directories_and_special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Pool::open(dir.path(), &rw()).unwrap_err();
    assert!(matches!(err, PoolError::NotAFileOrDevice { .. }), "{err:?}");
    let err = Pool::open(dir.path(), &ro()).unwrap_err();
    assert!(matches!(err, PoolError::NotAFileOrDevice { .. }), "{err:?}");
    let err = Pool::open(Path::new("/dev/null"), &ro()).unwrap_err();
    assert!(matches!(err, PoolError::NotAFileOrDevice { .. }), "{err:?}");
    let err = Pool::create(dir.path(), 32 * MIB, &CreateOptions { force: true }).unwrap_err();
    assert!(matches!(err, PoolError::NotAFileOrDevice { .. }), "{err:?}");
    let missing = dir.path().join("missing");
    let err = Pool::open(&missing, &rw()).unwrap_err();
    assert!(
        matches!(&err, PoolError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing"));
    assert!(!missing.exists(), "open does not create");
}

#[test]
fn newer_version_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pool(dir.path());
    // A newer pfnfs rewrote slot B only (checksum and all, as far as we can tell): refuse.
    let mut b = read_slot(&path, Slot::B);
    b[field::VERSION.offset..field::VERSION.offset + 4].copy_from_slice(&7u32.to_le_bytes());
    write_at(&path, Slot::B.offset(), &b);
    match refused(&path) {
        PoolError::UnsupportedVersion {
            found, supported, ..
        } => assert_eq!((found, supported), (7, FORMAT_VERSION)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_damaged_slot_opens_from_the_other() {
    let dir = tempfile::tempdir().unwrap();
    // After mkfs slot A holds seq 2 (current) and B seq 1.
    for damaged in [Slot::A, Slot::B] {
        let path = dir.path().join(format!("pool-{damaged}"));
        drop(create(&path, POOL_BYTES_MIN));
        let fresh = Pool::open(&path, &ro()).unwrap().superblock();
        damage_slot(&path, damaged);
        let before = fingerprint(&path);
        let pool = Pool::open(&path, &rw()).unwrap();
        let sb = pool.superblock();
        assert_eq!(Slot::for_seq(sb.seq), damaged.other());
        assert_eq!(sb.seq, if damaged == Slot::A { 1 } else { 2 });
        // mkfs wrote the same content to both slots: nothing is lost.
        assert_eq!(
            Superblock {
                seq: fresh.seq,
                ..sb
            },
            fresh
        );
        let (letter, why) = pool.damaged_slot().expect("the damaged slot is reported");
        assert_eq!(letter, damaged.letter());
        assert!(why.contains("checksum"), "{why}");
        drop(pool);
        assert!(
            before == fingerprint(&path),
            "open does not repair on its own"
        );
        // A commit rewrites both slots and so heals the damaged one.
        let pool = Pool::open(&path, &rw()).unwrap();
        let mut next = pool.superblock();
        next.mounted = true;
        pool.commit_superblock(next).unwrap();
        assert_eq!(pool.damaged_slot(), None);
        let now = pool.superblock();
        drop(pool);
        for slot in [Slot::A, Slot::B] {
            let got = Superblock::decode(&read_slot(&path, slot)).unwrap();
            assert_eq!(
                Superblock {
                    seq: now.seq,
                    ..got
                },
                now,
                "slot {slot}"
            );
        }
        let pool = Pool::open(&path, &ro()).unwrap();
        assert_eq!(pool.superblock(), now);
        assert_eq!(pool.damaged_slot(), None);
    }
}

#[test]
fn both_slots_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pool(dir.path());
    damage_slot(&path, Slot::A);
    let mut b = read_slot(&path, Slot::B);
    b[field::CRC32C.offset] ^= 1;
    write_at(&path, Slot::B.offset(), &b);
    match refused(&path) {
        PoolError::SuperblockDamaged { slot_a, slot_b, .. } => {
            assert!(slot_a.contains("checksum"), "{slot_a}");
            assert!(slot_b.contains("checksum"), "{slot_b}");
        }
        other => panic!("{other:?}"),
    }
    // One slot wiped (no magic), the other damaged: still "damaged", not "not a pool".
    write_at(&path, Slot::A.offset(), &[0u8; SUPERBLOCK_BYTES]);
    match refused(&path) {
        PoolError::SuperblockDamaged { slot_a, .. } => {
            assert!(slot_a.contains("magic"), "{slot_a}")
        }
        other => panic!("{other:?}"),
    }
    // Both wiped: not a pool.
    write_at(&path, Slot::B.offset(), &[0u8; SUPERBLOCK_BYTES]);
    assert!(matches!(refused(&path), PoolError::NotAPool { .. }));
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pool(dir.path());
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(POOL_BYTES_MIN - FRAME_SIZE).unwrap();
    drop(file);
    match refused(&path) {
        PoolError::Truncated {
            expected_bytes,
            actual_bytes,
            ..
        } => {
            assert_eq!(
                (expected_bytes, actual_bytes),
                (POOL_BYTES_MIN, POOL_BYTES_MIN - FRAME_SIZE)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn size_field_larger_than_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pool(dir.path());
    for slot in [Slot::A, Slot::B] {
        rewrite_slot(&path, slot, |sb| {
            sb.pool_bytes += 2 * MIB;
            sb.data_frames += 2 * MIB / FRAME_SIZE;
        });
    }
    match refused(&path) {
        PoolError::Truncated {
            expected_bytes,
            actual_bytes,
            ..
        } => {
            assert_eq!(
                (expected_bytes, actual_bytes),
                (POOL_BYTES_MIN + 2 * MIB, POOL_BYTES_MIN)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inconsistent_layout_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pool(dir.path());
    for slot in [Slot::A, Slot::B] {
        rewrite_slot(&path, slot, |sb| sb.data_start_pfn += 512);
    }
    match refused(&path) {
        PoolError::BadSuperblock { what, .. } => assert!(what.contains("data_start_pfn"), "{what}"),
        other => panic!("{other:?}"),
    }
    // A superblock in the wrong slot (seq parity) counts as inconsistent too.
    let path = dir.path().join("swapped");
    drop(create(&path, POOL_BYTES_MIN));
    let (a, b) = (read_slot(&path, Slot::A), read_slot(&path, Slot::B));
    write_at(&path, Slot::A.offset(), &b);
    write_at(&path, Slot::B.offset(), &a);
    match refused(&path) {
        PoolError::BadSuperblock { what, .. } => assert!(what.contains("seq"), "{what}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// create

#[test]
fn create_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, b"precious").unwrap();
    match Pool::create(&path, 32 * MIB, &CreateOptions::default()) {
        Err(PoolError::WouldOverwrite { why, .. }) => assert!(why.contains("not empty"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    let path = small_pool(dir.path());
    let old = Pool::open(&path, &ro()).unwrap().superblock();
    match Pool::create(&path, 32 * MIB, &CreateOptions::default()) {
        Err(PoolError::WouldOverwrite { why, .. }) => assert!(why.contains("pfnfs pool"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(Pool::open(&path, &ro()).unwrap().superblock(), old);

    // With force: a new pool (new uuid, new size), old data gone.
    let pool = Pool::create(&path, 32 * MIB, &CreateOptions { force: true }).unwrap();
    let new = pool.superblock();
    assert_ne!(new.uuid, old.uuid);
    assert_eq!(new.pool_bytes, 32 * MIB);
    drop(pool);
    assert_eq!(Pool::open(&path, &ro()).unwrap().superblock(), new);

    // An existing empty file is fine without force.
    let path = dir.path().join("empty");
    std::fs::write(&path, b"").unwrap();
    assert_eq!(create(&path, 16 * MIB).len_bytes(), 16 * MIB);
}

#[test]
fn create_checks_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 1, 2 * MIB, POOL_BYTES_MIN - 1] {
        let path = dir.path().join(format!("p{size}"));
        let err = Pool::create(&path, size, &CreateOptions::default()).unwrap_err();
        assert!(matches!(err, PoolError::BadSize { .. }), "{size}: {err:?}");
        assert!(!path.exists(), "a refused create leaves no file behind");
    }
    let path = dir.path().join("rounded");
    let pool = create(&path, POOL_BYTES_MIN + 2 * MIB - 1);
    assert_eq!(pool.len_bytes(), POOL_BYTES_MIN);
}

#[test]
fn sparse_400_gib_pool_is_quick_and_small() {
    const SIZE: u64 = 400 << 30;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge");
    let t0 = Instant::now();
    let pool = match Pool::create(&path, SIZE, &CreateOptions::default()) {
        Ok(pool) => pool,
        Err(e) => {
            println!(
                "SKIPPED sparse_400_gib_pool_is_quick_and_small: {} refuses a 400 GiB sparse file: {e}",
                dir.path().display()
            );
            return;
        }
    };
    let took = t0.elapsed();
    assert_eq!(pool.len_bytes(), SIZE);
    assert_eq!(pool.superblock().log_frames, LOG_FRAMES_MAX);
    drop(pool);
    let pool = Pool::open(&path, &ro()).unwrap();
    assert_eq!(pool.len_bytes(), SIZE);
    drop(pool);
    let meta = std::fs::metadata(&path).unwrap();
    let used_bytes = meta.blocks() * 512;
    println!("400 GiB pool: created in {took:?}, {used_bytes} bytes allocated");
    assert!(
        took < Duration::from_secs(1),
        "mkfs of a sparse pool took {took:?}"
    );
    assert!(
        used_bytes < 4 * MIB,
        "a new sparse pool uses {used_bytes} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Backends

#[test]
fn mem_backend_allows_parallel_disjoint_writes() {
    let mem = Arc::new(MemBackend::new(8 * MIB));
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let mem = mem.clone();
            s.spawn(move || {
                let base = u64::from(t) * MIB;
                for i in 0..256u64 {
                    mem.write(base + i * 4096, &[t + 1; 4096]).unwrap();
                    mem.persist(base + i * 4096, 4096).unwrap();
                }
            });
        }
    });
    let image = mem.to_vec();
    for t in 0..8usize {
        assert!(
            image[t << 20..(t + 1) << 20]
                .iter()
                .all(|&b| b == t as u8 + 1)
        );
    }
    mem.zero(10, 100).unwrap();
    assert!(mem.read_vec(10, 100).unwrap().iter().all(|&b| b == 0));
    assert_eq!(
        MemBackend::from_bytes(&image[..4096]).to_vec(),
        &image[..4096]
    );
    assert!(mem.sync(0, 8 * MIB).is_ok());
}

/// A loop device attached for a test; detached on drop, whatever happens.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(file: &Path) -> Result<LoopDevice, String> {
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(LoopDevice(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim(),
        )))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let status = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.0)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not detach {}: {status:?}", self.0.display());
        }
    }
}

#[test]
fn block_device_pool_on_a_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk");
    let file = std::fs::File::create(&backing).unwrap();
    file.set_len(40 * MIB + 4096).unwrap();
    drop(file);
    let dev = match LoopDevice::attach(&backing) {
        Ok(dev) => dev,
        Err(why) => {
            println!("SKIPPED block_device_pool_on_a_loop_device: {why}");
            return;
        }
    };
    let path = dev.0.clone();
    let err = Pool::create(&path, 64 * MIB, &CreateOptions::default()).unwrap_err();
    assert!(matches!(err, PoolError::BadSize { .. }), "{err:?}");

    let pool = Pool::create(&path, 0, &CreateOptions::default()).unwrap();
    assert_eq!(
        pool.len_bytes(),
        40 * MIB,
        "whole device, rounded down to 2 MiB"
    );
    // The device is held O_EXCL while the pool is open read-write.
    let err = Pool::open(&path, &rw()).unwrap_err();
    assert!(
        matches!(&err, PoolError::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY)),
        "{err:?}"
    );
    let off = pool.frame_offset(pool.data_region().start).unwrap();
    pool.write(off, b"on a block device").unwrap();
    pool.persist(off, 17).unwrap();
    pool.sync(off, 17).unwrap();
    let mut sb = pool.superblock();
    sb.mounted = true;
    pool.commit_superblock(sb).unwrap();
    let sb = pool.superblock();
    drop(pool);

    let pool = Pool::open(&path, &ro()).unwrap();
    assert_eq!(pool.superblock(), sb);
    assert_eq!(pool.read_vec(off, 17).unwrap(), b"on a block device");
    drop(pool);
    let err = Pool::create(&path, 0, &CreateOptions::default()).unwrap_err();
    assert!(matches!(err, PoolError::WouldOverwrite { .. }), "{err:?}");
    let pool = Pool::create(&path, 32 * MIB, &CreateOptions { force: true }).unwrap();
    assert_eq!(pool.len_bytes(), 32 * MIB);
    assert_ne!(pool.superblock().uuid, sb.uuid);
    drop(pool);
    drop(dev);
}

// ---------------------------------------------------------------------------------------------
// Code and design document agree

fn design_section(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/DESIGN.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- section: {name} ");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("DESIGN.md has no section {name}"));
    let rest = &text[start + marker.len()..];
    let end = rest.find("<!-- section: ").unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Rows of markdown tables whose first cell is a number: the cells, trimmed, backticks removed.
fn table_rows(section: &str) -> Vec<Vec<String>> {
    section
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn design_doc_superblock_table_matches_code() {
    let rows: Vec<(usize, usize, String)> = table_rows(&design_section("superblock"))
        .into_iter()
        .filter_map(|cells| {
            let offset = cells.first()?.parse().ok()?;
            let size = cells.get(1)?.parse().ok()?;
            Some((offset, size, cells.get(2)?.clone()))
        })
        .collect();
    let code: Vec<(usize, usize, String)> = FIELDS
        .iter()
        .map(|f| (f.offset, f.size, f.name.to_string()))
        .collect();
    assert_eq!(
        rows, code,
        "docs/DESIGN.md superblock table vs superblock::FIELDS"
    );
}

#[test]
fn design_doc_layout_constants_match_code() {
    let rows = table_rows(&design_section("layout"));
    let value_of = |name: &str| -> u64 {
        let row = rows
            .iter()
            .find(|r| r.first().map(String::as_str) == Some(name));
        let cell = row
            .and_then(|r| r.get(1))
            .unwrap_or_else(|| panic!("DESIGN.md layout table lacks {name}"));
        cell.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {cell}"))
    };
    assert_eq!(value_of("LOG_START_PFN"), LOG_START_PFN);
    assert_eq!(value_of("LOG_FRAMES_MIN"), LOG_FRAMES_MIN);
    assert_eq!(value_of("LOG_FRAMES_MAX"), LOG_FRAMES_MAX);
    assert_eq!(value_of("LOG_SHARE_DIVISOR"), LOG_SHARE_DIVISOR);
    assert_eq!(value_of("POOL_BYTES_MIN"), POOL_BYTES_MIN);
    assert_eq!(
        value_of("SUPERBLOCK_A_OFFSET"),
        pfnfs_alloc::layout::SUPERBLOCK_A_OFFSET
    );
    assert_eq!(
        value_of("SUPERBLOCK_B_OFFSET"),
        pfnfs_alloc::layout::SUPERBLOCK_B_OFFSET
    );
    assert_eq!(value_of("SUPERBLOCK_BYTES"), SUPERBLOCK_BYTES as u64);
}

#[test]
fn design_doc_format1_superblock_table_matches_code() {
    let rows: Vec<(usize, usize, String)> = table_rows(&design_section("superblock-v1"))
        .into_iter()
        .filter_map(|cells| {
            let offset = cells.first()?.parse().ok()?;
            let size = cells.get(1)?.parse().ok()?;
            Some((offset, size, cells.get(2)?.clone()))
        })
        .collect();
    let code: Vec<(usize, usize, String)> = FIELDS_V1
        .iter()
        .map(|f| (f.offset, f.size, f.name.to_string()))
        .collect();
    assert_eq!(
        rows, code,
        "docs/DESIGN.md format 1 superblock table vs superblock::FIELDS_V1"
    );
}

// ---------------------------------------------------------------------------------------------
// Golden bytes: a reordered field or a changed width cannot slip through.

/// A fixed format 2 superblock: 64 MiB pool, every field distinct.
fn golden_superblock() -> Superblock {
    Superblock {
        version: 2,
        uuid: *b"0123456789abcdef",
        frame_size: 4096,
        pool_bytes: 64 * MIB,
        seq: 0x0102_0304_0506_0708,
        log_start_pfn: 512,
        log_frames: 1024,
        data_start_pfn: 1536,
        data_frames: 16384 - 1536,
        meta: MetaRoot {
            root_pfn: 0x1234,
            tree_frames: 0x55,
            height: 3,
            log_generation: 0x1122_3344,
            log_nonce: 0xfedc_ba98_7654_3210,
            next_ino: 0x10_0000,
            inodes: 0xabcd,
        },
        mounted: true,
        bad_frames: false,
        inline_data: false,
        created_secs: 1_700_000_000,
    }
}

/// Its encoding, written out by hand from the table in docs/DESIGN.md 3.2 (16 bytes a row).
const GOLDEN_V2: &str = "\
    5046 4e46 5350 4f4c 0200 0000 0010 0000 \
    3031 3233 3435 3637 3839 6162 6364 6566 \
    0000 0004 0000 0000 0807 0605 0403 0201 \
    0002 0000 0000 0000 0004 0000 0000 0000 \
    0006 0000 0000 0000 003a 0000 0000 0000 \
    3412 0000 0000 0000 5500 0000 0000 0000 \
    0300 0000 0100 0000 4433 2211 0000 0000 \
    00f1 5365 0000 0000 1032 5476 98ba dcfe \
    0000 1000 0000 0000 cdab 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 CRC_V2__";

/// The same pool's format 1 superblock (checkpoint at 0x1234, 10000 bytes).
const GOLDEN_V1: &str = "\
    5046 4e46 5350 4f4c 0100 0000 0010 0000 \
    3031 3233 3435 3637 3839 6162 6364 6566 \
    0000 0004 0000 0000 0807 0605 0403 0201 \
    0002 0000 0000 0000 0004 0000 0000 0000 \
    0006 0000 0000 0000 003a 0000 0000 0000 \
    3412 0000 0000 0000 1027 0000 0000 0000 \
    efbe adde 0100 0000 4433 2211 0000 0000 \
    00f1 5365 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 0000 0000 \
    0000 0000 0000 0000 0000 0000 CRC_V1__";

/// CRC32C of the golden bodies (bytes 0..252), computed with an independent implementation.
const GOLDEN_V2_CRC: u32 = 0x2681_69df;
const GOLDEN_V1_CRC: u32 = 0xd7c4_6805;

fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// `golden` with its last 4 bytes (a placeholder in the constant) replaced by the CRC32C of
/// the first 252, checked separately against a known value.
fn with_crc(golden: &str, crc: u32) -> Vec<u8> {
    let body = &golden[..golden.len() - 8];
    let mut bytes = unhex(body);
    assert_eq!(bytes.len(), 252);
    assert_eq!(crc32c::crc32c(&bytes), crc, "CRC32C of the golden body");
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn golden_bytes_format2() {
    let sb = golden_superblock();
    let expected = with_crc(GOLDEN_V2, GOLDEN_V2_CRC);
    assert_eq!(sb.encode().to_vec(), expected);
    assert_eq!(Superblock::decode(&expected), Ok(sb));
}

/// The bad-frames flag is bit 1 and the inline-data flag bit 2 of the flags word (byte 100);
/// nothing else moves.
#[test]
fn golden_bytes_flags() {
    let golden = with_crc(GOLDEN_V2, GOLDEN_V2_CRC);
    type SetFlag = fn(&mut Superblock);
    let flags: [(SetFlag, u8, &str); 2] = [
        (|sb| sb.bad_frames = true, 3, "flags: mounted | bad frames"),
        (
            |sb| sb.inline_data = true,
            5,
            "flags: mounted | inline data",
        ),
    ];
    for (set, byte, what) in flags {
        let mut sb = golden_superblock();
        set(&mut sb);
        let bytes = sb.encode();
        assert_eq!(&bytes[100..104], &[byte, 0, 0, 0], "{what}");
        assert_eq!(&bytes[..100], &golden[..100]);
        assert_eq!(&bytes[104..252], &golden[104..252]);
        assert_eq!(Superblock::decode(&bytes), Ok(sb));
    }
}

#[test]
fn golden_bytes_format1() {
    let mut common = golden_superblock();
    common.version = 1;
    common.meta = MetaRoot::EMPTY;
    let v1 = SuperblockV1 {
        common,
        checkpoint: CheckpointRefV1 {
            head_pfn: 0x1234,
            len_bytes: 10_000,
            crc: 0xdead_beef,
            log_generation: 0x1122_3344,
        },
    };
    let expected = with_crc(GOLDEN_V1, GOLDEN_V1_CRC);
    assert_eq!(v1.encode().to_vec(), expected);
    assert_eq!(SuperblockV1::decode(&expected), Ok(v1));
}

// ---------------------------------------------------------------------------------------------
// Format 1 pools: refused, opened for the upgrade, upgraded.

/// The checkpoint reference of the format 1 pools made here.
fn v1_checkpoint(sb: &Superblock) -> CheckpointRefV1 {
    CheckpointRefV1 {
        head_pfn: sb.data_start_pfn + 7,
        len_bytes: 3 * FRAME_SIZE + 5,
        crc: 0x1234_5678,
        log_generation: 4,
    }
}

/// Rewrites a fresh pool's slots (given as a write function) in format 1, as a format 1 mkfs
/// plus commits up to `seq` would have left them: `seq` in its slot, `seq - 1` in the other.
fn make_v1(sb: &Superblock, seq: u64, mut write: impl FnMut(u64, &[u8])) -> SuperblockV1 {
    let mut common = sb.clone();
    common.version = 1;
    common.meta = MetaRoot::EMPTY;
    let mut v1 = SuperblockV1 {
        checkpoint: v1_checkpoint(sb),
        common,
    };
    v1.common.seq = seq - 1;
    let older = v1.checkpoint;
    v1.checkpoint.log_generation -= 1;
    write(v1.common.slot().offset(), &v1.encode());
    v1.common.seq = seq;
    v1.checkpoint = older;
    write(v1.common.slot().offset(), &v1.encode());
    v1
}

fn v1_mem_pool() -> (Arc<MemBackend>, SuperblockV1) {
    let (mem, pool) = mem_pool(32 * MIB);
    let sb = pool.superblock();
    drop(pool);
    let v1 = make_v1(&sb, 5, |off, bytes| mem.write(off, bytes).unwrap());
    (mem, v1)
}

fn format1_opts() -> OpenOptions {
    OpenOptions {
        format1: true,
        ..OpenOptions::default()
    }
}

#[test]
fn format1_pool_is_refused_with_the_upgrade_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_pool(dir.path());
    let sb = Pool::open(&path, &ro()).unwrap().superblock();
    make_v1(&sb, 3, |off, bytes| write_at(&path, off, bytes));
    let err = refused(&path);
    assert!(
        matches!(err, PoolError::OldFormat { version: 1, .. }),
        "{err:?}"
    );
    let p = path.display();
    assert_eq!(
        err.to_string(),
        format!(
            "{p} is a pfnfs format 1 pool; this pfnfs reads format 2: convert it with `pfnfs upgrade {p}`"
        )
    );
    // The upgrade can open it, read-only or read-write.
    for opts in [
        format1_opts(),
        OpenOptions {
            read_only: true,
            ..format1_opts()
        },
    ] {
        let pool = Pool::open(&path, &opts).unwrap();
        assert_eq!(pool.version(), 1);
        assert_eq!(pool.format1_checkpoint(), Some(v1_checkpoint(&sb)));
        assert_eq!(pool.superblock().seq, 3);
        assert_eq!(
            pool.data_region(),
            PfnRange::new(Pfn(sb.data_start_pfn), sb.data_frames).unwrap()
        );
    }
}

#[test]
fn format1_pool_can_only_be_upgraded() {
    let (mem, v1) = v1_mem_pool();
    let pool = Pool::open_backend_with("v1", Box::new(mem.clone()), &format1_opts()).unwrap();
    assert_eq!(pool.superblock(), v1.common);
    assert_eq!(pool.format1_checkpoint(), Some(v1.checkpoint));
    assert_eq!(pool.damaged_slot(), None);
    let image = mem.to_vec();
    let err = pool.commit_superblock(pool.superblock()).unwrap_err();
    assert!(matches!(err, PoolError::OldFormat { .. }), "{err:?}");
    // A meta breaking the rules is refused before anything is written.
    let bad = MetaRoot {
        height: 1,
        ..MetaRoot::EMPTY
    };
    let err = pool.upgrade_superblock(bad).unwrap_err();
    assert!(matches!(err, PoolError::BadSuperblock { .. }), "{err:?}");
    assert!(mem.to_vec() == image, "refusals write nothing");

    let meta = meta_for(&pool, 9);
    pool.upgrade_superblock(meta).unwrap();
    assert_eq!(pool.version(), FORMAT_VERSION);
    assert_eq!(pool.format1_checkpoint(), None);
    let up = pool.superblock();
    assert_eq!(
        up,
        Superblock {
            version: FORMAT_VERSION,
            seq: 7,
            meta,
            mounted: false,
            ..v1.common.clone()
        }
    );
    // Both slots hold it (seq 6 in the other slot).
    assert_eq!(
        Superblock::decode(&mem.read_vec(Slot::B.offset(), SUPERBLOCK_BYTES).unwrap()),
        Ok(up.clone())
    );
    assert_eq!(
        Superblock::decode(&mem.read_vec(Slot::A.offset(), SUPERBLOCK_BYTES).unwrap()),
        Ok(Superblock {
            seq: 6,
            ..up.clone()
        })
    );
    // Once upgraded: commits work, a second upgrade is refused, a plain open works.
    let err = pool.upgrade_superblock(meta).unwrap_err();
    assert!(matches!(err, PoolError::BadSuperblock { .. }), "{err:?}");
    let mut next = up.clone();
    next.mounted = true;
    pool.commit_superblock(next).unwrap();
    assert_eq!(pool.superblock().seq, 9);
    drop(pool);
    let pool = Pool::open_backend("v2", Box::new(mem.clone()), false).unwrap();
    assert_eq!(pool.superblock().meta, meta);
    assert!(pool.superblock().mounted);
    // `format1` on a format 2 pool opens it as usual.
    drop(pool);
    let pool = Pool::open_backend_with("v2", Box::new(mem), &format1_opts()).unwrap();
    assert_eq!(
        (pool.version(), pool.format1_checkpoint()),
        (FORMAT_VERSION, None)
    );
    let err = pool.upgrade_superblock(meta).unwrap_err();
    assert!(matches!(err, PoolError::BadSuperblock { .. }), "{err:?}");
}

#[test]
fn upgrade_of_a_read_only_pool_is_refused() {
    let (mem, _) = v1_mem_pool();
    let opts = OpenOptions {
        read_only: true,
        ..format1_opts()
    };
    let pool = Pool::open_backend_with("v1", Box::new(mem), &opts).unwrap();
    let err = pool.upgrade_superblock(MetaRoot::EMPTY).unwrap_err();
    assert!(matches!(err, PoolError::ReadOnly { .. }), "{err:?}");
}

#[test]
fn mixed_format_slots_open_by_seq() {
    // An upgrade interrupted after its first write: format 2 at seq n + 1, format 1 at n.
    let (mem, v1) = v1_mem_pool();
    let mut v2 = v1.common.clone();
    v2.version = FORMAT_VERSION;
    v2.seq = v1.common.seq + 1;
    v2.mounted = false;
    mem.write(v2.slot().offset(), &v2.encode()).unwrap();
    let pool = Pool::open_backend("mixed", Box::new(mem.clone()), true).unwrap();
    assert_eq!(pool.superblock(), v2);
    assert_eq!(
        pool.damaged_slot(),
        None,
        "an interrupted upgrade is not damage"
    );
    drop(pool);
    // The other way round (format 1 newer) is a format 1 pool.
    let v1_newer = SuperblockV1 {
        common: Superblock {
            seq: v2.seq + 1,
            ..v1.common.clone()
        },
        ..v1
    };
    mem.write(v1_newer.common.slot().offset(), &v1_newer.encode())
        .unwrap();
    let err = Pool::open_backend("mixed", Box::new(mem), true).unwrap_err();
    assert!(
        matches!(err, PoolError::OldFormat { version: 1, .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Crashes and failures during the two-write commit.

/// A 16 MiB crash-simulated pool after mkfs and one commit (`C0`, both slots), as an image.
fn committed_image() -> (Vec<u8>, Superblock) {
    let sim = Arc::new(CrashSimBackend::new(POOL_BYTES_MIN));
    let pool = Pool::format_backend("sim", Box::new(sim.clone())).unwrap();
    let mut sb = pool.superblock();
    sb.meta = meta_for(&pool, 1);
    sb.mounted = true;
    pool.commit_superblock(sb).unwrap();
    let c0 = pool.superblock();
    drop(pool);
    (sim.crash_image(), c0)
}

/// What each crash point of a commit from `C0` to `C1` leaves, for a crash of `mode` before
/// persist point `point` of the commit (1-based; past the last: no crash).
fn crash_commit(image: &[u8], c0: &Superblock, point: u64, mode: CrashMode) -> (Pool, bool) {
    let sim = Arc::new(CrashSimBackend::from_image(image));
    let pool = Pool::open_backend("sim", Box::new(sim.clone()), false).unwrap();
    let base = sim.persist_points();
    sim.arm_crash(base + point, mode);
    let mut c1 = c0.clone();
    c1.meta = meta_for(&pool, 2);
    c1.mounted = false;
    pool.commit_superblock(c1).unwrap();
    let crashed = sim.crashed().is_some();
    drop(pool);
    let after = MemBackend::from_bytes(&sim.crash_image());
    (
        Pool::open_backend("after", Box::new(after), false).unwrap(),
        crashed,
    )
}

#[test]
fn commit_crash_at_each_persist_point() {
    let (image, c0) = committed_image();
    // Count the commit's persist points.
    let sim = Arc::new(CrashSimBackend::from_image(&image));
    let pool = Pool::open_backend("sim", Box::new(sim.clone()), false).unwrap();
    let before = sim.persist_points();
    pool.commit_superblock(c0.clone()).unwrap();
    let points = sim.persist_points() - before;
    assert_eq!(points, 2, "one persist point per slot write");
    drop(pool);

    let is_c0 = |sb: &Superblock| sb.meta == c0.meta && sb.mounted;
    let is_c1 = |sb: &Superblock| sb.meta.log_generation == 3 && !sb.mounted;
    let mut torn_new = 0;
    let mut torn_damaged = 0;
    for point in 1..=points + 1 {
        let mut modes = vec![CrashMode::Clean];
        modes.extend((0..24).map(|seed| CrashMode::Torn { seed }));
        for mode in modes {
            let (pool, crashed) = crash_commit(&image, &c0, point, mode);
            let sb = pool.superblock();
            assert_eq!(crashed, point <= points, "point {point} {mode}");
            match point {
                // Before the first write is durable: C0, or C1 if a torn crash kept every word
                // of the first slot (then the first slot is intact, and the commit happened).
                1 => {
                    assert!(is_c0(&sb) || is_c1(&sb), "point 1 {mode}: {sb:?}");
                    if mode == CrashMode::Clean {
                        assert_eq!(sb, c0);
                        assert_eq!(pool.damaged_slot(), None);
                    }
                    if is_c1(&sb) {
                        torn_new += 1;
                        assert_eq!(sb.seq, c0.seq + 1);
                    }
                }
                // The first write is durable: C1 whatever the second slot holds.
                2 => {
                    assert!(is_c1(&sb), "point 2 {mode}: {sb:?}");
                    assert!(sb.seq == c0.seq + 1 || sb.seq == c0.seq + 2);
                    if mode == CrashMode::Clean {
                        assert_eq!(sb.seq, c0.seq + 1);
                    }
                }
                // No crash: both slots hold C1.
                _ => {
                    assert!(is_c1(&sb));
                    assert_eq!(sb.seq, c0.seq + 2);
                    assert_eq!(pool.damaged_slot(), None);
                }
            }
            if pool.damaged_slot().is_some() {
                torn_damaged += 1;
            }
            // Whatever the crash left, the next commit leaves both slots intact and equal.
            let mut next = sb.clone();
            next.mounted = true;
            pool.commit_superblock(next.clone()).unwrap();
            assert_eq!(pool.damaged_slot(), None);
            let now = pool.superblock();
            assert_eq!((now.meta, now.mounted), (next.meta, true));
            let be = pool.into_backend();
            for slot in [Slot::A, Slot::B] {
                let got =
                    Superblock::decode(&be.read_vec(slot.offset(), SUPERBLOCK_BYTES).unwrap())
                        .unwrap_or_else(|e| panic!("point {point} {mode}: slot {slot}: {e}"));
                assert_eq!(
                    Superblock {
                        seq: now.seq,
                        ..got
                    },
                    now
                );
            }
        }
    }
    // The torn crashes did exercise both outcomes.
    assert!(torn_damaged > 0, "no torn crash damaged a slot");
    println!(
        "torn crashes: {torn_new} kept a whole first slot, {torn_damaged} left a damaged slot"
    );
}

#[test]
fn failed_persists_during_a_commit_leave_it_in_doubt_then_recover() {
    use pfnfs_alloc::{Fault, FaultyBackend};
    for (failing, reached) in [(0, false), (0, true), (1, false), (1, true)] {
        let (image, c0) = committed_image();
        let sim = Arc::new(CrashSimBackend::from_image(&image));
        let faulty = Arc::new(FaultyBackend::new(sim.clone()));
        let pool = Pool::open_backend("faulty", Box::new(faulty.clone()), false).unwrap();
        // The first write goes to the slot not holding C0, the second to C0's slot.
        let slot = if failing == 0 {
            c0.slot().other()
        } else {
            c0.slot()
        };
        faulty.arm(Fault {
            errno: libc::EIO,
            range: Some(slot.offset()..slot.offset() + SUPERBLOCK_BYTES as u64),
            count: 1,
            reached,
        });
        let mut c1 = c0.clone();
        c1.meta = meta_for(&pool, 2);
        let err = pool.commit_superblock(c1.clone()).unwrap_err();
        assert!(
            matches!(&err, PoolError::Io { source, .. } if source.raw_os_error() == Some(libc::EIO)),
            "{err:?}"
        );
        let current = pool.superblock();
        if failing == 0 {
            assert_eq!(current, c0, "a failed first write leaves C0 current");
        } else {
            assert_eq!(
                current,
                Superblock {
                    seq: c0.seq + 1,
                    ..c1.clone()
                },
                "after the first write, C1 is the newest intact copy"
            );
        }
        // What a crash now leaves is C0 or C1, and never both slots damaged.
        let after = Pool::open_backend(
            "after",
            Box::new(MemBackend::from_bytes(&sim.crash_image())),
            true,
        )
        .unwrap();
        let sb = after.superblock();
        assert!(sb.meta == c0.meta || sb.meta == c1.meta, "{sb:?}");
        if failing == 1 {
            assert_eq!(sb.meta, c1.meta, "the first write was durable");
        }
        // The next commit succeeds, and a crash at any of its persist points keeps C1 or C2.
        let mut c2 = current.clone();
        c2.meta = meta_for(&pool, 3);
        let base = sim.persist_points();
        sim.arm_crash(base + 1, CrashMode::Torn { seed: 7 });
        pool.commit_superblock(c2.clone()).unwrap();
        let after = Pool::open_backend(
            "after",
            Box::new(MemBackend::from_bytes(&sim.crash_image())),
            true,
        )
        .unwrap();
        let sb = after.superblock();
        if failing == 1 {
            assert!(sb.meta == c1.meta || sb.meta == c2.meta, "{sb:?}");
        } else {
            assert!(
                sb.meta == c0.meta || sb.meta == c1.meta || sb.meta == c2.meta,
                "{sb:?}"
            );
        }
        assert_eq!(pool.superblock().meta, c2.meta);
    }
}

#[test]
fn mkfs_writes_the_same_content_to_both_slots() {
    let (mem, pool) = mem_pool(32 * MIB);
    let sb = pool.superblock();
    assert_eq!(sb.seq, 2);
    assert_eq!(sb.meta.root_pfn, 0);
    assert_eq!(sb.meta.next_ino, 2);
    assert_ne!(
        sb.meta.log_nonce, 0,
        "mkfs draws the first generation's nonce"
    );
    let b = Superblock::decode(&mem.read_vec(Slot::B.offset(), SUPERBLOCK_BYTES).unwrap()).unwrap();
    assert_eq!(Superblock { seq: 2, ..b }, sb);
    assert_eq!(pool.damaged_slot(), None);
}
