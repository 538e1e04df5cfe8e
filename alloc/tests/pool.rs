//! The pool end to end: create/open round trips on files, RAM and a loop device; superblock
//! commits; every kind of bad pool and its specific error; open never writing to a pool it
//! refuses; sparse creation of a huge pool; docs/DESIGN.md agreeing with the code.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pfnfs_alloc::layout::{
    LOG_FRAMES_MAX, LOG_FRAMES_MIN, LOG_SHARE_DIVISOR, LOG_START_PFN, POOL_BYTES_MIN,
    SUPERBLOCK_BYTES, log_frames_for,
};
use pfnfs_alloc::superblock::{FIELDS, FORMAT_VERSION, MAGIC, Slot, field};
use pfnfs_alloc::{
    CheckpointRef, CreateOptions, Durability, FRAME_SIZE, MemBackend, OpenOptions, Pfn, PfnRange,
    Pool, PoolBackend, PoolError, Superblock,
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

#[test]
fn commit_superblock_alternates_slots_and_survives_reopen() {
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
        sb.checkpoint = CheckpointRef {
            head_pfn: pool.data_region().start.0 + round,
            len_bytes: 5000 + round,
            crc: 0xabc0 + round as u32,
            log_generation: round + 1,
        };
        sb.seq = 999; // ignored: the pool sets it
        pool.commit_superblock(sb.clone()).unwrap();
        let now = pool.superblock();
        assert_eq!(now.seq, before.seq + 1);
        assert_eq!(now.checkpoint, sb.checkpoint);
        assert_eq!(now.mounted, sb.mounted);
        drop(pool);
        // The new superblock is in the slot the old one was not in; the old one is untouched.
        let new_slot = Slot::for_seq(now.seq);
        assert_ne!(new_slot, Slot::for_seq(before.seq));
        assert_eq!(
            Superblock::decode(&read_slot(&path, new_slot)).unwrap(),
            now
        );
        assert_eq!(
            Superblock::decode(&read_slot(&path, new_slot.other())).unwrap(),
            before
        );
        last = Some(now);
    }
}

#[test]
fn commit_refuses_geometry_changes_and_bad_checkpoints() {
    let (_, pool) = mem_pool(32 * MIB);
    let cur = pool.superblock();
    let cases: [fn(&mut Superblock); 5] = [
        |s| s.pool_bytes += 2 * MIB,
        |s| s.uuid[0] ^= 1,
        |s| s.log_frames += 512,
        |s| s.created_secs += 1,
        |s| {
            s.checkpoint = CheckpointRef {
                head_pfn: 1,
                len_bytes: 10,
                crc: 0,
                log_generation: 1,
            }
        },
    ];
    for change in cases {
        let mut sb = cur.clone();
        change(&mut sb);
        let err = pool.commit_superblock(sb).unwrap_err();
        assert!(matches!(err, PoolError::BadSuperblock { .. }), "{err:?}");
        assert_eq!(pool.superblock(), cur, "a refused commit changes nothing");
    }
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
        damage_slot(&path, damaged);
        let before = fingerprint(&path);
        let pool = Pool::open(&path, &rw()).unwrap();
        let sb = pool.superblock();
        assert_eq!(Slot::for_seq(sb.seq), damaged.other());
        assert_eq!(sb.seq, if damaged == Slot::A { 1 } else { 2 });
        drop(pool);
        assert!(
            before == fingerprint(&path),
            "open does not repair on its own"
        );
        // A commit goes to the damaged slot (the one not holding the current superblock) and
        // heals it.
        let pool = Pool::open(&path, &rw()).unwrap();
        let mut next = pool.superblock();
        next.mounted = true;
        pool.commit_superblock(next).unwrap();
        let seq = pool.superblock().seq;
        drop(pool);
        assert_eq!(
            Superblock::decode(&read_slot(&path, damaged)).unwrap().seq,
            seq
        );
        assert_eq!(Pool::open(&path, &ro()).unwrap().superblock().seq, seq);
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
                    mem.write(base + i * 4096, &[t + 1; 4096]);
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
    mem.zero(10, 100);
    assert!(mem.read_vec(10, 100).iter().all(|&b| b == 0));
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
