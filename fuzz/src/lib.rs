//! Shared code of the fuzz targets: the compact pool format the `pool` and `upgrade` targets
//! read, the small pools their seeds come from, the targets' bodies (so that `cargo test` can
//! run them without libFuzzer) and the seed corpus (written by the `write_seed_corpus` test).
//!
//! # Targets
//!
//! | target | input | covers |
//! |---|---|---|
//! | `pool` | flags byte + compact format 2 pool | superblock slots, log, metadata tree, through open, load, use, `check_volume`, `fsck -n`, `fsck -y` |
//! | `upgrade` | compact format 1 pool | `Volume::upgrade` (format 1 superblock, checkpoint, log), then the format 2 result |
//! | `log_record` | kind byte, nonce, log bytes | `Op` decoding, `read_log` and the damaged-log evidence, both formats |
//! | `schema` | key length byte, key, value | every decoder of `pfnfs_fs::schema` |
//! | `btree` | height, root index, frames | node decoding, tree reads and a transaction |
//! | `checkpoint` | kind byte + bytes | format 1 checkpoint header and body (the upgrade reads them) |
//! | `free_set` | bytes | the format 1 free-set image |
//!
//! # The compact pool format (input of `pool`, after its flags byte, and of `upgrade`)
//!
//! A 16 MiB pool (the smallest there is: 4 MiB of log, 10 MiB of data) is all zeros except
//! what the input puts in four places:
//!
//! ```text
//! input bytes [0, 256)               superblock slot A (pool byte 0)
//! input bytes [256, 512)             superblock slot B (pool byte 4096)
//! input bytes [512, 512 + 16 KiB)    the start of the log region
//! input bytes [512 + 16 KiB, ...)    the start of the data region (metadata tree nodes and
//!                                    overflow runs, file frames; in format 1 checkpoints), at
//!                                    most DATA_MAX bytes
//! ```
//!
//! A small pool's metadata lives there: a few log records, and the tree's frames and the
//! first file frames, which the allocator takes from the start of the data region. So a seed
//! is a real pool, and every mutation of it is a pool with damaged (or forged) metadata. The
//! `pool` target's flags byte, bit 0, reseals the checksums after expanding ([`reseal`]), so
//! that forged fields reach the checks behind the CRCs.
//!
//! The `btree` target (the metadata tree alone) reads a compact form of its own: a height, a
//! root index and the first frames of the data region; see [`btree`].

pub mod format1;
pub mod reseal;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use pfnfs_alloc::layout::{LOG_START_PFN, POOL_BYTES_MIN};
use pfnfs_alloc::superblock::AnySuperblock;
use pfnfs_alloc::{
    ExtentAllocator, FRAME_SIZE, MemBackend, OpenOptions, Pfn, PfnRange, Pool, PoolBackend,
};
use pfnfs_btree::format::Node;
use pfnfs_btree::{Tree, Txn};
use pfnfs_extent::ExtentMap;
use pfnfs_fs::fsck::{FsckMode, check_volume, fsck_pool};
use pfnfs_fs::inode::{Directory, Kind, ROOT_INO};
use pfnfs_fs::journal::{
    BodyImage, CheckpointHeader, CheckpointImage, LogId, Op, log_generation, max_log_generation,
    read_log,
};
use pfnfs_fs::schema::{self, CookieEntry, InodeRecord, NameEntry};
use pfnfs_fs::volume::{Caller, Volume};

/// Size of every pool the `pool` target builds.
pub const POOL_BYTES: u64 = POOL_BYTES_MIN;
/// Input bytes that go to the log region.
pub const LOG_PART: usize = 16 << 10;
/// Most input bytes that go to the data region.
pub const DATA_MAX: usize = 256 << 10;
const SLOT_BYTES: usize = 256;

/// Where each part of a compact image goes in the pool: (input range start, pool offset, len).
fn parts(input_len: usize, data_offset: u64) -> [(usize, u64, usize); 4] {
    let part = |start: usize, max: usize| input_len.saturating_sub(start).min(max);
    [
        (0, 0, part(0, SLOT_BYTES)),
        (SLOT_BYTES, FRAME_SIZE, part(SLOT_BYTES, SLOT_BYTES)),
        (
            2 * SLOT_BYTES,
            LOG_START_PFN * FRAME_SIZE,
            part(2 * SLOT_BYTES, LOG_PART),
        ),
        (
            2 * SLOT_BYTES + LOG_PART,
            data_offset,
            part(2 * SLOT_BYTES + LOG_PART, DATA_MAX),
        ),
    ]
}

/// Byte offset of the data region of a [`POOL_BYTES`] pool.
pub fn data_offset() -> u64 {
    static OFFSET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let mem = Arc::new(MemBackend::new(POOL_BYTES));
        let pool = Pool::format_backend("layout", Box::new(mem)).expect("format");
        pool.data_region().start.0 * FRAME_SIZE
    })
}

/// A RAM pool holding the compact image `input`.
pub fn expand(input: &[u8]) -> Arc<MemBackend> {
    let mem = Arc::new(MemBackend::new(POOL_BYTES));
    for (from, to, len) in parts(input.len(), data_offset()) {
        if len > 0 {
            mem.write(to, &input[from..from + len])
                .expect("RAM does not fault");
        }
    }
    mem
}

/// Writes the compact image `input` as a sparse pool file at `path` (replacing it).
pub fn expand_to_file(input: &[u8], path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    f.set_len(POOL_BYTES)?;
    for (from, to, len) in parts(input.len(), data_offset()) {
        if len > 0 {
            f.write_all_at(&input[from..from + len], to)?;
        }
    }
    Ok(())
}

/// The compact image of a pool (trailing zeros trimmed).
pub fn compact(mem: &MemBackend) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, from, len) in parts(usize::MAX, data_offset()) {
        out.extend_from_slice(&mem.read_vec(from, len).expect("RAM does not fault"));
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    out
}

const ROOT: Caller = Caller { uid: 0, gid: 0 };

pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn open_volume(mem: &Arc<MemBackend>) -> Volume {
    let pool = Pool::open_backend("seed", Box::new(mem.clone()), false).expect("open");
    Volume::load(Arc::new(pool)).expect("load")
}

/// Small format 2 pools for the seeds: (name, backend). `fresh`: just formatted. `clean`:
/// files (small ones inline), directories (one with enough names for a tree of two levels),
/// symlinks, xattrs (one long enough for an overflow run), a hard link, a FIFO, cleanly
/// unmounted (a committed tree, an empty log). `crashed`: `clean` plus a checkpoint and a few
/// logged operations (inline writes and a spill among them) and no unmount (records to
/// replay, an orphan list entry for the file still open).
pub fn seed_pools() -> Vec<(&'static str, Arc<MemBackend>)> {
    let fresh = Arc::new(MemBackend::new(POOL_BYTES));
    Pool::format_backend("fresh", Box::new(fresh.clone())).expect("format");
    let clean = Arc::new(MemBackend::new(POOL_BYTES));
    Pool::format_backend("clean", Box::new(clean.clone())).expect("format");
    {
        let v = open_volume(&clean);
        let d = v.mkdir(ROOT, ROOT_INO, b"dir", 0o755).expect("mkdir").ino;
        let f = v.create(ROOT, d, b"file", 0o644, true).expect("create").ino;
        v.write(ROOT, f, 0, &pattern(1, 9000)).expect("write");
        let g = v
            .create(ROOT, ROOT_INO, b"g", 0o600, true)
            .expect("create")
            .ino;
        v.write(ROOT, g, 0, b"small").expect("write");
        v.symlink(ROOT, ROOT_INO, b"sym", b"dir/file")
            .expect("symlink");
        v.setxattr(g, b"user.x", b"y", 0).expect("setxattr");
        v.setxattr(f, b"user.long", &pattern(5, 1500), 0)
            .expect("setxattr");
        v.link(f, ROOT_INO, b"hard").expect("link");
        v.mknod(ROOT, ROOT_INO, b"fifo", libc::S_IFIFO | 0o644, 0)
            .expect("mknod");
        v.fallocate(g, 8192, 8192, 0).expect("fallocate");
        let many = v.mkdir(ROOT, ROOT_INO, b"many", 0o700).expect("mkdir").ino;
        for i in 0..40 {
            let name = format!("entry-with-a-longer-name-{i:03}");
            let e = v
                .create(ROOT, many, name.as_bytes(), 0o644, true)
                .expect("create");
            if i % 10 == 0 {
                v.setxattr(e.ino, b"user.n", name.as_bytes(), 0)
                    .expect("setxattr");
            }
        }
        v.symlink(ROOT, many, b"long-link", &pattern(b'a', 300))
            .expect("symlink");
        // Inline data: 300 bytes, then 4 more past a gap of zeros (a record with its bytes).
        let s = v
            .create(ROOT, ROOT_INO, b"inline", 0o644, true)
            .expect("create")
            .ino;
        v.write(ROOT, s, 0, &pattern(3, 300)).expect("write");
        v.write(ROOT, s, 400, b"tail").expect("write");
        // A frame whose memory failed (free, inside the compact image): the bad-frame table.
        let last = (data_offset() + DATA_MAX as u64) / FRAME_SIZE - 1;
        v.pool().bad_frames().add(pfnfs_alloc::PfnRange {
            start: pfnfs_alloc::Pfn(last),
            len: 1,
        });
        v.checkpoint().expect("checkpoint");
        v.shutdown().expect("shutdown");
    }
    let crashed = Arc::new(MemBackend::new(POOL_BYTES));
    crashed
        .write(0, &clean.to_vec())
        .expect("RAM does not fault");
    {
        let v = open_volume(&crashed);
        // Open, then unlinked and committed: the orphan list holds it.
        let o = v
            .create(ROOT, ROOT_INO, b"orphan", 0o644, true)
            .expect("create")
            .ino;
        v.open(o, false).expect("open");
        v.write(ROOT, o, 0, b"still open").expect("write");
        v.remove(ROOT_INO, b"orphan", false).expect("unlink");
        v.checkpoint().expect("checkpoint");
        let h = v
            .create(ROOT, ROOT_INO, b"h", 0o644, true)
            .expect("create")
            .ino;
        v.write(ROOT, h, 0, &pattern(2, 5000)).expect("write");
        v.fallocate(h, 0, 20_000, 0).expect("fallocate");
        let d = v.lookup(ROOT_INO, b"dir").expect("lookup").ino;
        v.rename(ROOT_INO, b"g", d, b"g2", 0).expect("rename");
        v.remove(ROOT_INO, b"hard", false).expect("unlink");
        v.setxattr(h, b"user.z", b"1", 0).expect("setxattr");
        v.mkdir(ROOT, d, b"sub", 0o755).expect("mkdir");
        // Inline writes and a spill in the log.
        let s = v.lookup(ROOT_INO, b"inline").expect("lookup").ino;
        v.write(ROOT, s, 100, b"overwritten").expect("write");
        let k = v
            .create(ROOT, ROOT_INO, b"spilled", 0o644, true)
            .expect("create")
            .ino;
        v.write(ROOT, k, 0, b"x").expect("write");
        v.write(ROOT, k, 0, &pattern(4, 2000)).expect("write");
        // Crash: dropped without shutdown.
    }
    vec![("fresh", fresh), ("clean", clean), ("crashed", crashed)]
}

/// The format 1 pools of the `upgrade` seeds: (name, pool and parts).
pub fn format1_pools() -> Vec<(&'static str, format1::Format1)> {
    vec![
        ("v1-unchecked", format1::build(false, true)),
        ("v1-clean", format1::build(true, false)),
        ("v1-crashed", format1::build(true, true)),
    ]
}

/// Every (key, value) of a seed pool's metadata tree, as `schema` inputs: the key's length
/// byte, the key, the value.
fn schema_inputs(mem: &Arc<MemBackend>) -> Vec<Vec<u8>> {
    let pool = Pool::open_backend("schema", Box::new(mem.clone()), true).expect("open");
    let sb = pool.superblock();
    let Ok(height) = u8::try_from(sb.meta.height) else {
        return Vec::new();
    };
    if sb.meta.root_pfn == 0 {
        return Vec::new();
    }
    let tree = Tree::open(&pool, Pfn(sb.meta.root_pfn), height).expect("tree");
    tree.range(&pool, &[], None)
        .map(|kv| kv.expect("entry"))
        .filter(|(k, _)| k.len() < 256)
        .map(|(k, v)| [&[k.len() as u8][..], &k, &v].concat())
        .collect()
}

/// The seed corpus of every target: (target, file name, bytes).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, mem) in seed_pools() {
        let image = compact(&mem);
        // The crashed pool resealed (flags bit 0), the others not: libFuzzer flips the bit.
        let flags = u8::from(name == "crashed");
        out.push((
            "pool",
            format!("seed-{name}"),
            [&[flags][..], &image].concat(),
        ));
        let pool = Pool::open_backend(name, Box::new(mem.clone()), true).expect("open");
        let sb = pool.superblock();
        let (log_at, _) = pool.log_region();
        let log = LogId::new(sb.meta.log_generation, sb.meta.log_nonce);
        let (_, end, _) = read_log(&pool, log).expect("log");
        if end > 0 {
            let mut input = vec![0u8];
            input.extend_from_slice(&sb.meta.log_nonce.to_le_bytes());
            input.extend(
                mem.read_vec(log_at, end as usize)
                    .expect("RAM does not fault"),
            );
            out.push(("log_record", format!("seed-{name}-log"), input.clone()));
            input[0] = 2;
            out.push(("log_record", format!("seed-{name}-log-resealed"), input));
        }
        // The entries of each table (the crashed tree has all), a few of each (an input's
        // byte 1 is the key's tag).
        let mut per_tag: std::collections::BTreeMap<u8, usize> = Default::default();
        let tree = if name == "crashed" {
            schema_inputs(&mem)
        } else {
            Vec::new()
        };
        for input in tree {
            let n = per_tag.entry(input[1]).or_default();
            *n += 1;
            if *n <= 3 {
                out.push(("schema", format!("seed-{name}-{:02x}-{n}", input[1]), input));
            }
        }
    }
    for (name, f) in format1_pools() {
        out.push(("upgrade", format!("seed-{name}"), compact(&f.mem)));
        if !f.log.is_empty() {
            let mut input = vec![1u8];
            input.extend_from_slice(&[0; 8]);
            input.extend_from_slice(&f.log);
            out.push(("log_record", format!("seed-{name}-log"), input));
        }
        if f.header.is_empty() {
            continue;
        }
        let ranges = u32::from_le_bytes(f.header[28..32].try_into().expect("4 bytes")) as usize;
        let mut h = vec![0u8];
        h.extend_from_slice(&f.header[..32 + 16 * ranges]);
        out.push(("checkpoint", format!("seed-{name}-header"), h));
        out.push((
            "checkpoint",
            format!("seed-{name}-body"),
            [&[1u8][..], &f.body].concat(),
        ));
        out.push(("free_set", format!("seed-{name}"), f.free_set));
    }
    for (name, bytes) in btree_seeds() {
        out.push(("btree", name.to_string(), bytes));
    }
    out
}

/// Frames of the data region a `btree` input may fill.
pub const BTREE_FRAMES: usize = 15;

/// Seeds of the `btree` target: small real trees in the compact form `btree` reads.
pub fn btree_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let build = |kvs: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<u8> {
        let pool =
            Pool::format_backend("btree", Box::new(MemBackend::new(POOL_BYTES))).expect("format");
        let alloc = ExtentAllocator::new_empty(pool.data_region());
        let mut txn = Txn::new(&Tree::empty(), &pool, &alloc, 1);
        for (k, v) in &kvs {
            txn.put(k, v).expect("put");
        }
        let w = txn.write().expect("write");
        let tree = w.tree.clone();
        w.frames.commit();
        let start = pool.data_region().start.0;
        let end = tree
            .frames(&pool)
            .expect("frames")
            .iter()
            .map(|r| r.end().0)
            .max()
            .expect("a tree");
        assert!(end - start <= BTREE_FRAMES as u64, "seed tree too large");
        let root = tree.root().expect("root").0 - start;
        let mut out = vec![tree.height(), root as u8];
        out.extend(
            pool.read_vec(start * FRAME_SIZE, ((end - start) * FRAME_SIZE) as usize)
                .expect("read"),
        );
        while out.last() == Some(&0) {
            out.pop();
        }
        out
    };
    let leaf = build(vec![
        (b"alpha".to_vec(), b"1".to_vec()),
        (b"beta".to_vec(), Vec::new()),
        (b"delta".to_vec(), pattern(4, 2000)),
    ]);
    let two_level = build(
        (0..40u8)
            .map(|i| {
                let key = [
                    b"key-".as_slice(),
                    &[i; 1],
                    &pattern(i, usize::from(i % 30)),
                ]
                .concat();
                let value = pattern(i, if i % 13 == 0 { 1500 } else { 90 });
                (key, value)
            })
            .collect(),
    );
    vec![("seed-leaf", leaf), ("seed-two-level", two_level)]
}

// ---------------------------------------------------------------------------------------------
// The targets' bodies (here, so that `cargo test` can replay a corpus without libFuzzer)

/// The data region of a [`POOL_BYTES`] pool.
pub fn data_region() -> PfnRange {
    let start = data_offset() / FRAME_SIZE;
    PfnRange::new(Pfn(start), POOL_BYTES / FRAME_SIZE - start).expect("region")
}

/// A pool file for this thread (tests run targets on several threads), on tmpfs when there is
/// one.
fn scratch_pool() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    ID.with(|id| dir.join(format!("pfnfs-fuzz-{}-{id}.pool", std::process::id())))
}

/// Most inodes [`exercise`] visits.
const VISIT_MAX: usize = 200;

/// Uses a loaded volume as a client would, everywhere: every directory read and every name
/// looked up (breadth first from the root, at most [`VISIT_MAX`] inodes), every inode's
/// attributes, a file's first bytes, a symlink's target, every xattr. Returns whether every
/// call succeeded. Inodes are read from the tree lazily, so this reaches what `load` did not.
fn exercise(vol: &Volume) -> bool {
    let mut ok = true;
    let mut note = |r: bool| ok &= r;
    let mut seen = BTreeSet::from([ROOT_INO]);
    let mut queue = VecDeque::from([ROOT_INO]);
    let _ = vol.statfs();
    while let Some(dir) = queue.pop_front() {
        let Ok(entries) = vol.readdir_batch(dir, 0, 1000).inspect_err(|_| note(false)) else {
            continue;
        };
        for (ino, _, kind, name) in entries {
            if name == b"." || name == b".." {
                continue;
            }
            note(vol.lookup(dir, &name).is_ok_and(|e| e.ino == ino));
            if seen.len() >= VISIT_MAX || !seen.insert(ino) {
                continue;
            }
            note(vol.getattr(ino).is_ok());
            match kind {
                Kind::Dir => queue.push_back(ino),
                Kind::File => note(vol.read(ino, 0, 64 << 10, |b| b.len()).is_ok()),
                Kind::Symlink => note(vol.readlink(ino).is_ok()),
                _ => {}
            }
            match vol.listxattr(ino) {
                Ok(names) => {
                    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                        note(vol.getxattr(ino, name).is_ok());
                    }
                }
                Err(_) => note(false),
            }
        }
    }
    ok
}

/// `pool` (format 2): byte 0 is flags (bit 0: reseal the checksums, see [`reseal`]), the rest
/// a compact pool image. Its superblock slots are decoded (what decodes re-encodes to the same
/// bytes); a pool file holding it is checked with `fsck -n`; on a RAM pool it is opened,
/// loaded, checked with `check_volume`, used everywhere ([`exercise`]), changed and unmounted;
/// the pool file is then repaired with `fsck -y`. Nothing may panic, and what loads must pass
/// fsck's checks or be reported by fsck: a pool `fsck -n` finds clean must load, check clean,
/// read everywhere, and after the changes and the unmount load again, check clean and read
/// everywhere; a pool `fsck -y` repaired must then check clean with `fsck -n`, load, pass
/// `check_volume`, read everywhere and unmount.
///
/// (`check_volume` alone is not the reference: it checks the loaded volume, which reads the
/// tree lazily through the readdir index, so a name index that disagrees with it is left to
/// `fsck -n`, which decodes the whole tree.)
pub fn pool(data: &[u8]) {
    let Some((&flags, image)) = data.split_first() else {
        return;
    };
    let mem = expand(image);
    if flags & 1 != 0 {
        reseal::reseal_pool(&mem);
    }
    for slot in [0, FRAME_SIZE] {
        let bytes = mem.read_vec(slot, 256).expect("RAM does not fault");
        let encoded = match AnySuperblock::decode(&bytes) {
            Ok(AnySuperblock::V2(sb)) => sb.encode(),
            Ok(AnySuperblock::V1(sb)) => sb.encode(),
            Err(_) => continue,
        };
        assert!(
            encoded[..] == bytes[..],
            "a superblock re-encodes differently"
        );
    }
    let path = &scratch_pool();
    expand_to_file(&compact(&mem), path).expect("write the scratch pool");
    let check = fsck_pool(path, FsckMode::Check);
    let clean = matches!(&check, Ok(r) if r.exit_code() == 0);
    let loaded = Pool::open_backend("fuzz", Box::new(mem.clone()), false)
        .map_err(|e| e.to_string())
        .and_then(|pool| Volume::load(Arc::new(pool)).map_err(|e| e.to_string()));
    match loaded {
        Ok(vol) => {
            let report = check_volume(&vol);
            let used = exercise(&vol);
            if let Ok(f) = vol.create(ROOT, ROOT_INO, b"fuzz-new", 0o644, true) {
                let _ = vol.write(ROOT, f.ino, 0, &pattern(3, 10_000));
                let _ = vol.setxattr(f.ino, b"user.fuzz", b"v", 0);
            }
            let _ = vol.mkdir(ROOT, ROOT_INO, b"fuzz-dir", 0o755);
            let shut = vol.shutdown();
            drop(vol);
            if clean {
                assert_eq!(
                    report.exit_code(),
                    0,
                    "fsck -n finds nothing wrong but the loaded volume checks dirty: \
                     {report:#?}"
                );
                assert!(used, "fsck -n finds nothing wrong but a read fails");
                shut.expect("a clean pool unmounts after use");
                let pool = Pool::open_backend("fuzz-again", Box::new(mem), false)
                    .expect("a clean pool reopens after use");
                let vol = Volume::load(Arc::new(pool)).expect("a clean pool loads after use");
                let again = check_volume(&vol);
                assert_eq!(
                    again.exit_code(),
                    0,
                    "a clean pool checks dirty after use: {again:#?}"
                );
                assert!(exercise(&vol), "a clean pool fails a read after use");
            }
        }
        Err(e) => assert!(
            !clean,
            "fsck -n finds nothing wrong but the pool does not load: {e}\n{check:#?}"
        ),
    }
    if let Ok(r) = fsck_pool(path, FsckMode::Repair)
        && r.exit_code() <= 1
    {
        let again = fsck_pool(path, FsckMode::Check).expect("a repaired pool opens");
        assert_eq!(
            again.exit_code(),
            0,
            "fsck -n after fsck -y: {again:#?}\nfsck -y: {r:#?}"
        );
        let pool = Pool::open(path, &OpenOptions::default()).expect("a repaired pool opens");
        let vol = Volume::load(Arc::new(pool)).expect("a repaired pool loads");
        let checked = check_volume(&vol);
        assert_eq!(checked.exit_code(), 0, "a repaired pool: {checked:#?}");
        assert!(exercise(&vol), "a repaired pool fails a read");
        vol.shutdown().expect("a repaired pool unmounts");
    }
    let _ = std::fs::remove_file(path);
}

/// `upgrade` (format 1): `data` is a compact image of a format 1 pool (superblock slots, the
/// format 1 log, checkpoints in the data region), opened with `OpenOptions { format1: true }`
/// and converted with `Volume::upgrade`. Nothing may panic; a pool the upgrade converted must
/// open as format 2, load, and pass `check_volume` unless the format 1 state was already
/// inconsistent (fsck's business), be usable everywhere, and unmount.
pub fn upgrade(data: &[u8]) {
    let mem = expand(data);
    let opts = OpenOptions {
        format1: true,
        ..OpenOptions::default()
    };
    let Ok(pool) = Pool::open_backend_with("fuzz-v1", Box::new(mem.clone()), &opts) else {
        return;
    };
    let Ok(done) = Volume::upgrade(Arc::new(pool)) else {
        return;
    };
    let pool = Pool::open_backend("fuzz-v2", Box::new(mem), false)
        .unwrap_or_else(|e| panic!("an upgraded pool opens ({done:?}): {e}"));
    assert_eq!(pool.version(), 2);
    let vol = Volume::load(Arc::new(pool))
        .unwrap_or_else(|e| panic!("an upgraded pool loads ({done:?}): {e}"));
    let report = check_volume(&vol);
    let used = exercise(&vol);
    if report.exit_code() == 0 {
        assert!(used, "an upgraded pool that checks clean fails a read");
    }
    vol.shutdown().expect("an upgraded pool unmounts");
}

/// `log_record`: byte 0 the kind (bit 0: a format 1 log, without nonce; bit 1: reseal the
/// records first; bit 2: also scan the whole log with `max_log_generation`), bytes 1..9 the
/// nonce, the rest the start of a log region, read by `read_log` with the generation the
/// first record header names (and by `log_generation`; `read_log` looks for a later record
/// behind the end with `record_after`). What `read_log` returns is consistent (one op per
/// sequence number, its end inside the log). The bytes after the kind are also decoded as one record payload (an `Op`; what
/// decodes re-encodes to the same op).
pub fn log_record(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if let Ok(op) = postcard::from_bytes::<Op>(rest) {
        let again = postcard::to_allocvec(&op).expect("encode");
        assert_eq!(postcard::from_bytes::<Op>(&again).expect("decode"), op);
    }
    let nonce = rest
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let mut bytes = rest.get(8..).unwrap_or_default().to_vec();
    static POOL: OnceLock<Mutex<(Pool, usize)>> = OnceLock::new();
    let cell = POOL.get_or_init(|| {
        let mem = MemBackend::new(POOL_BYTES);
        Mutex::new((
            Pool::format_backend("log", Box::new(mem)).expect("format"),
            0,
        ))
    });
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    let (pool, dirty) = &mut *guard;
    let (log_at, log_bytes) = pool.log_region();
    bytes.truncate(log_bytes as usize);
    let format1 = kind & 1 != 0;
    let generation = bytes
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    if kind & 2 != 0 {
        reseal::reseal_log(&mut bytes, generation, (!format1).then_some(nonce));
    }
    pool.write(log_at, &vec![0; *dirty]).expect("zero");
    pool.write(log_at, &bytes).expect("write");
    *dirty = bytes.len();
    let log = LogId {
        generation,
        nonce: (!format1).then_some(nonce),
    };
    if kind & 4 != 0 {
        // Reads the whole 4 MiB log region (fsck's): slow, so not every time.
        let _ = max_log_generation(pool);
    }
    let _ = log_generation(pool, u32::from_le_bytes(*b"PLG2"));
    if let Ok((ops, end, seq)) = read_log(pool, log) {
        assert_eq!(ops.len() as u64, seq);
        assert!(end <= log_bytes);
    }
}

/// `schema`: byte 0 is a key's length, then the key and a value, as the metadata tree holds
/// them. The value goes through every value decoder of `pfnfs_fs::schema` (inode record,
/// extent, name entry, readdir entry, free extent with the key) and the key through the key
/// decoders. Nothing may panic, and what decodes re-encodes to the same bytes: every encoding
/// is canonical, except that `key_id` and `decode_free` do not look at the tag byte (the table
/// a key came from is the range it was read from), so the tag is left out of those checks.
pub fn schema(data: &[u8]) {
    let Some((&klen, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(klen).min(rest.len()));
    if let Ok(r) = InodeRecord::decode(value) {
        assert!(
            r.encode() == value,
            "an inode record re-encodes differently"
        );
        assert_eq!(InodeRecord::decode(&r.encode()), Ok(r));
    }
    let file_frame = match schema::inode_table_key(key) {
        Ok(schema::InodeKey::Extent(_, frame)) => frame,
        _ => 0,
    };
    if let Ok(e) = schema::decode_extent(file_frame, value) {
        assert!(
            schema::encode_extent(&e) == value,
            "an extent re-encodes differently"
        );
    }
    if let Ok(n) = NameEntry::decode(value) {
        assert!(n.encode() == value, "a name entry re-encodes differently");
    }
    if let Ok(c) = CookieEntry::decode(value) {
        assert!(
            c.encode() == value,
            "a readdir entry re-encodes differently"
        );
    }
    if let Ok(r) = schema::decode_free(key, value) {
        assert!(schema::free_key(r.start)[1..] == key[1..], "free key");
        assert!(schema::encode_free(r.len) == value, "free extent");
    }
    if let Some(&code) = value.first()
        && let Ok(kind) = schema::kind_of(code)
    {
        assert_eq!(schema::kind_code(kind), code);
    }
    if let Ok(id) = schema::key_id(key) {
        assert!(schema::inode_key(id)[1..] == key[1..9], "key_id");
        let tag = key[0];
        if let Some(t) = schema::TABLES.iter().find(|t| t.tag == tag) {
            // The key lies in its inode's (directory's) part of its table, and in the table.
            let (start, end) = schema::prefix_range(t.tag, id);
            assert!(start.as_slice() <= key && end.as_deref().is_none_or(|e| key < e));
            let (start, end) = schema::table_range(t.tag);
            assert!(start.as_slice() <= key && end.as_deref().is_none_or(|e| key < e));
        }
        let tail = schema::key_tail(key).expect("a key with an id has a tail");
        assert!(schema::name_key(id, tail)[1..] == key[1..], "key_tail");
    } else {
        assert!(schema::key_tail(key).is_err());
    }
    if let Ok(second) = schema::key_second(key) {
        let id = schema::key_id(key).expect("a 17-byte key has an id");
        assert!(
            schema::cookie_key(id, second)[1..] == key[1..],
            "key_second"
        );
    }
    match schema::inode_table_key(key) {
        Ok(schema::InodeKey::Record(ino)) => assert!(schema::inode_key(ino) == key),
        Ok(schema::InodeKey::Extent(ino, frame)) => {
            assert!(schema::extent_key(ino, frame) == key)
        }
        Ok(schema::InodeKey::Xattr(ino, name)) => assert!(schema::xattr_key(ino, name) == key),
        Err(_) => {}
    }
}

/// `checkpoint` (format 1, read by the upgrade): first byte even: the rest is a checkpoint
/// header frame (decoded against the data region; what decodes re-encodes to the same header
/// and its body spans add up); odd: a checkpoint body, decoded, and its extent maps (checked),
/// directories and free set built as the upgrade does.
pub fn checkpoint(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let region = data_region();
    if kind & 1 == 0 {
        let mut frame = vec![0u8; FRAME_SIZE as usize];
        let n = rest.len().min(frame.len());
        frame[..n].copy_from_slice(&rest[..n]);
        if let Ok(h) = CheckpointHeader::decode(&frame, region) {
            assert_eq!(CheckpointHeader::decode(&h.encode(), region), Ok(h.clone()));
            let spans: u64 = h.body_spans().iter().map(|(_, l)| l).sum();
            assert_eq!(spans, h.body_len);
        }
    } else if let Ok(image) = postcard::from_bytes::<CheckpointImage>(rest) {
        for img in image.inodes {
            match img.body {
                BodyImage::File(extents) => {
                    // As a mount builds it: from_extents refuses overlaps in the file, the
                    // invariants check a pool frame mapped twice.
                    if let Ok(map) = ExtentMap::from_extents(extents) {
                        let _ = map.check_invariants();
                    }
                }
                BodyImage::Dir {
                    parent,
                    next_cookie,
                    entries,
                } => {
                    let _ = Directory::from_parts(parent, next_cookie, entries);
                }
                BodyImage::Symlink(_) | BodyImage::Special => {}
            }
        }
        free_set(&image.free_set);
    }
}

/// `free_set` (the format 1 checkpoint's free-set image, read by the upgrade): `data` decoded
/// as a free-set image of the data region; what decodes passes the allocator's consistency
/// check and re-encodes byte for byte.
pub fn free_set(data: &[u8]) {
    if let Ok(alloc) = ExtentAllocator::decode_free_set(data_region(), data) {
        alloc
            .check_consistency()
            .expect("a decoded free set is consistent");
        assert!(alloc.encode_free_set() == data, "re-encoding differs");
    }
}

/// `btree`: `data` is a compact tree image: byte 0 the height, byte 1 the root's frame index,
/// the rest the first frames of the data region (at most [`BTREE_FRAMES`]) of a 16 MiB pool.
/// The first of those frames is decoded as a node (what decodes re-encodes to the same
/// frame); the tree is opened and read with every operation (nothing may panic); a tree that
/// `check`s clean must read back in full, and a transaction on it must write a tree that
/// checks clean and holds the change.
pub fn btree(data: &[u8]) {
    let (height, root, image) = match data {
        [h, r, rest @ ..] => (*h, u64::from(*r), rest),
        _ => return,
    };
    let image = &image[..image.len().min(BTREE_FRAMES * FRAME_SIZE as usize)];
    let region = data_region();
    let mut first = vec![0u8; FRAME_SIZE as usize];
    let n = image.len().min(first.len());
    first[..n].copy_from_slice(&image[..n]);
    if let Ok(node) = Node::decode(&first, region.start.0, region) {
        let generation = u64::from_le_bytes(first[16..24].try_into().expect("8 bytes"));
        assert!(
            node.encode(generation) == first,
            "a decoded node re-encodes differently"
        );
    }
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    let cell = POOL.get_or_init(|| {
        Mutex::new(
            Pool::format_backend("btree", Box::new(MemBackend::new(POOL_BYTES))).expect("format"),
        )
    });
    let pool = cell.lock().unwrap_or_else(|e| e.into_inner());
    let at = region.start.0 * FRAME_SIZE;
    // Earlier inputs and transactions wrote at most this much of the region: zero it.
    pool.zero(at, 64 * FRAME_SIZE).expect("zero");
    pool.write(at, image).expect("write");
    let Ok(tree) = Tree::open(&pool, Pfn(region.start.0 + root), height) else {
        return;
    };
    let checked = tree.check(&pool);
    let frames = tree.frames(&pool);
    let scan: Vec<_> = tree.range(&pool, &[], None).take(5000).collect();
    for (k, v) in scan.iter().filter_map(|r| r.as_ref().ok()).take(16) {
        let got = tree.get(&pool, k);
        if checked.is_ok() {
            assert_eq!(got.expect("get in a clean tree").as_ref(), Some(v));
        }
        let _ = tree.floor(&pool, k);
        let _ = tree.range(&pool, k, Some(&[0xff; 4][..])).take(100).count();
    }
    let _ = tree.get(&pool, b"x");
    let _ = tree.floor(&pool, &[0xff; 8]);
    let Ok(stats) = checked else {
        return;
    };
    assert!(scan.iter().all(Result::is_ok), "a clean tree fails a scan");
    assert_eq!(scan.len() as u64, stats.entries.min(5000));
    let frames = frames.expect("frames of a clean tree");
    assert_eq!(
        frames.iter().map(|r| r.len).sum::<u64>(),
        stats.nodes + stats.overflow_frames
    );
    // A transaction on the (forged but valid) tree.
    let free: Vec<PfnRange> = {
        let mut free = Vec::new();
        let mut next = region.start;
        for r in &frames {
            free.extend(PfnRange::from_bounds(next, r.start));
            next = r.end();
        }
        free.extend(PfnRange::from_bounds(next, region.end()));
        free
    };
    let alloc = ExtentAllocator::from_free_extents(region, free).expect("free set");
    let mut txn = Txn::new(&tree, &pool, &alloc, 2);
    txn.put(b"fuzz-new-key", &pattern(9, 1200)).expect("put");
    if let Some(Ok((k, _))) = scan.first() {
        assert!(txn.delete(k).expect("delete"));
    }
    let w = txn.write().expect("write");
    let again = Tree::open(&pool, w.tree.root().expect("root"), w.tree.height()).expect("open");
    again.check(&pool).expect("the new tree checks clean");
    assert_eq!(
        again.get(&pool, b"fuzz-new-key").expect("get"),
        Some(pattern(9, 1200))
    );
    assert!(
        w.frames
            .ranges()
            .iter()
            .all(|r| r.end().0 <= region.start.0 + 64),
        "the transaction wrote beyond what the next run zeroes"
    );
}

/// Every target, as `run` names it.
pub const TARGETS: [&str; 7] = [
    "pool",
    "upgrade",
    "log_record",
    "schema",
    "btree",
    "checkpoint",
    "free_set",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "pool" => pool(data),
        "upgrade" => upgrade(data),
        "log_record" => log_record(data),
        "schema" => schema(data),
        "btree" => btree(data),
        "checkpoint" => checkpoint(data),
        "free_set" => free_set(data),
        other => panic!("no fuzz target {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded mutation (the quick form CI runs without libFuzzer)

/// xorshift64*: a tiny seeded generator, so the smoke run needs no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `seed` with 1 to 4 random edits in the manner of libFuzzer's mutators: flipped bits,
/// random or "interesting" bytes and integers (0, 1, -1, powers of two, lengths), inserted,
/// erased or duplicated chunks, and bytes spliced in from `other`.
pub fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    const INTERESTING: [u64; 10] = [
        0,
        1,
        0x7f,
        0xff,
        0x1000,
        0xffff_ffff,
        1 << 20,
        1 << 32,
        u64::MAX,
        u64::MAX / 2,
    ];
    for _ in 0..1 + rng.below(4) {
        if data.is_empty() {
            data.push(rng.next_u64() as u8);
            continue;
        }
        let at = rng.below(data.len());
        match rng.below(8) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = rng.next_u64() as u8,
            2 => {
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let end = (at + width).min(data.len());
                data[at..end].copy_from_slice(&v[..end - at]);
            }
            3 => {
                let n = 1 + rng.below(16);
                for _ in 0..n {
                    data.insert(at, rng.next_u64() as u8);
                }
            }
            4 => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                data.drain(at..end);
            }
            5 => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                let chunk = data[at..end].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, chunk);
            }
            6 if !other.is_empty() => {
                let from = rng.below(other.len());
                let n = (1 + rng.below(256)).min(other.len() - from);
                let end = (at + n).min(data.len());
                data[at..end].copy_from_slice(&other[from..from + (end - at)]);
            }
            _ => {
                // A varint-sized field: flip a byte near the start (postcard headers, counts).
                let near = rng.below(data.len().min(64));
                data[near] = data[near].wrapping_add(1 + rng.below(3) as u8);
            }
        }
    }
    data
}

/// The inputs mutations of `target` start from: its seeds, and the seeds and regressions
/// committed in `corpus/<target>/` (for `upgrade`, pools the format 1 pfnfs wrote).
pub fn corpus_of(target: &str) -> Vec<Vec<u8>> {
    let mut corpus: BTreeSet<Vec<u8>> = seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, b)| b)
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if (name.starts_with("seed-") || name.starts_with("regression-"))
            && let Ok(data) = std::fs::read(e.path())
        {
            corpus.insert(data);
        }
    }
    corpus.into_iter().collect()
}

/// Runs `iterations` seeded mutations of `target`'s seed corpus through the target; returns
/// how many ran. A failure panics naming the target, seed and iteration (rerun with the same
/// `first_seed` to reproduce; the input is written to `fuzz/artifacts/<target>/smoke-<seed>`).
pub fn smoke(target: &str, iterations: u64, first_seed: u64) -> u64 {
    let corpus = corpus_of(target);
    assert!(!corpus.is_empty(), "no seeds for {target}");
    for i in 0..iterations {
        let seed = first_seed + i;
        let mut rng = Rng::new(seed);
        let base = &corpus[rng.below(corpus.len())];
        let other = &corpus[rng.below(corpus.len())];
        let input = mutate(base, other, &mut rng);
        let outcome = std::panic::catch_unwind(|| run(target, &input));
        if let Err(e) = outcome {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("artifacts")
                .join(target);
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("smoke-{seed}"));
            let _ = std::fs::write(&file, &input);
            std::panic::resume_unwind(Box::new(format!(
                "fuzz target {target} failed on seed {seed} (input saved as {}): {}",
                file.display(),
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )));
        }
    }
    iterations
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are what the corpus directories hold (`PFNFS_FUZZ_WRITE_CORPUS=1` rewrites
    /// them), and every seed pool round-trips through the compact format.
    #[test]
    fn write_seed_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let write = std::env::var_os("PFNFS_FUZZ_WRITE_CORPUS").is_some();
        for (target, name, bytes) in seeds() {
            let path = dir.join(target).join(&name);
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            assert!(
                bytes.len() < 128 << 10,
                "{target}/{name}: {} bytes",
                bytes.len()
            );
            if target == "pool" {
                assert_eq!(compact(&expand(&bytes[1..])), bytes[1..], "{name}");
            }
            if target == "upgrade" {
                assert_eq!(compact(&expand(&bytes)), bytes, "{name}");
            }
        }
        let pools = seed_pools()
            .into_iter()
            .chain(format1_pools().into_iter().map(|(n, f)| (n, f.mem)));
        for (name, mem) in pools {
            let image = expand(&compact(&mem));
            assert!(
                image.to_vec() == mem.to_vec(),
                "{name}: the compact image holds the whole pool"
            );
        }
    }

    /// The `pool` harness: the seed pools load, check clean and are read everywhere, their
    /// trees have a branch, overflow values and entries of every table, resealing an intact
    /// pool changes nothing, and seeded mutations pass.
    #[test]
    fn pool_target_quick() {
        let mut tags = BTreeSet::new();
        for (name, mem) in seed_pools() {
            let image = compact(&mem);
            let resealed = expand(&image);
            reseal::reseal_pool(&resealed);
            assert!(compact(&resealed) == image, "{name}: resealing changed it");
            let pool = Pool::open_backend(name, Box::new(mem.clone()), true).expect("open");
            let sb = pool.superblock();
            let vol = Volume::load(Arc::new(pool)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let report = check_volume(&vol);
            assert_eq!(report.exit_code(), 0, "{name}: {report:#?}");
            assert!(exercise(&vol), "{name}: a read fails");
            if name != "fresh" {
                assert!(sb.meta.height >= 2, "{name}: height {}", sb.meta.height);
                let frames = vol.tree_frames().expect("tree frames");
                assert!(
                    frames
                        .iter()
                        .all(|r| r.end().0 * FRAME_SIZE <= data_offset() + DATA_MAX as u64),
                    "{name}: tree frames {frames:?} beyond the compact image"
                );
                let stats = vol.tree().check(vol.pool()).expect("tree");
                assert!(stats.overflow_frames > 0, "{name}: {stats:?}");
            }
            for input in schema_inputs(&mem) {
                tags.insert(input[1]);
            }
        }
        let all: BTreeSet<u8> = schema::TABLES.iter().map(|t| t.tag).collect();
        assert_eq!(tags, all, "the seed trees hold every table");
        for (_, _, bytes) in seeds().into_iter().filter(|(t, ..)| *t == "pool") {
            pool(&bytes);
        }
        smoke("pool", 40, 1);
    }

    /// The `upgrade` harness: every built and committed format 1 seed upgrades to a pool that
    /// loads and checks clean (so mutations start from pools the whole upgrade runs on), and
    /// seeded mutations pass.
    #[test]
    fn upgrade_target_quick() {
        let mut count = 0;
        for image in corpus_of("upgrade") {
            let mem = expand(&image);
            let opts = OpenOptions {
                format1: true,
                ..OpenOptions::default()
            };
            let pool = Pool::open_backend_with("v1", Box::new(mem.clone()), &opts).expect("open");
            if pool.version() != 1 {
                continue;
            }
            let Ok(done) = Volume::upgrade(Arc::new(pool)) else {
                // The committed regressions are damaged pools the upgrade refuses.
                continue;
            };
            count += 1;
            let pool = Pool::open_backend("v2", Box::new(mem), false).expect("open");
            let vol = Volume::load(Arc::new(pool)).expect("load");
            let report = check_volume(&vol);
            assert_eq!(report.exit_code(), 0, "{done:?}: {report:#?}");
            assert!(exercise(&vol));
        }
        assert!(count >= 6, "only {count} format 1 seeds upgrade");
        smoke("upgrade", 100, 1);
    }

    /// The `log_record` harness: the seed logs read back in full (every record, both formats,
    /// resealing an intact log changes nothing), and seeded mutations pass.
    #[test]
    fn log_record_target_quick() {
        let inputs: Vec<_> = seeds()
            .into_iter()
            .filter(|(t, ..)| *t == "log_record")
            .collect();
        assert!(
            inputs.iter().any(|(_, _, b)| b[0] & 1 == 1),
            "no format 1 log"
        );
        for (_, name, bytes) in &inputs {
            let nonce = u64::from_le_bytes(bytes[1..9].try_into().unwrap());
            let mut log = bytes[9..].to_vec();
            let generation = u64::from_le_bytes(log[8..16].try_into().unwrap());
            reseal::reseal_log(&mut log, generation, (bytes[0] & 1 == 0).then_some(nonce));
            assert!(log == bytes[9..], "{name}: resealing changed it");
            log_record(bytes);
        }
        smoke("log_record", 1000, 1);
    }

    /// The `schema` harness: every seed entry decodes with the decoder its table names, and
    /// seeded mutations pass.
    #[test]
    fn schema_target_quick() {
        for (_, name, input) in seeds().into_iter().filter(|(t, ..)| *t == "schema") {
            let key = &input[1..1 + usize::from(input[0])];
            let value = &input[1 + key.len()..];
            let decoded = match key[0] {
                schema::TAG_INODE if key.len() == 9 => InodeRecord::decode(value).map(drop),
                schema::TAG_INODE if key.get(9) == Some(&schema::SUB_EXTENT) => {
                    schema::decode_extent(0, value).map(drop)
                }
                schema::TAG_NAME => NameEntry::decode(value).map(drop),
                schema::TAG_COOKIE => CookieEntry::decode(value).map(drop),
                schema::TAG_FREE => schema::decode_free(key, value).map(drop),
                _ => Ok(()),
            };
            decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
            schema(&input);
        }
        smoke("schema", 3000, 1);
    }

    /// Every file in the corpus directories (the committed seeds, and whatever a local fuzz
    /// run added) passes its target.
    #[test]
    fn corpus_passes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let mut count = 0;
        for target in TARGETS {
            let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
                continue;
            };
            for e in entries {
                // (A fuzzer running on the same directory may remove a file meanwhile.)
                let Ok(data) = std::fs::read(e.unwrap().path()) else {
                    continue;
                };
                run(target, &data);
                count += 1;
            }
        }
        assert!(count >= 4, "the seed corpus is missing");
    }

    /// The `btree` harness: its seeds are real trees that open and check clean (so mutations
    /// start from a tree the walk reads in full, and the transaction step runs), and seeded
    /// mutations of them pass it.
    #[test]
    fn btree_target_quick() {
        let region = data_region();
        for (name, bytes) in btree_seeds() {
            let pool = Pool::format_backend("seed", Box::new(MemBackend::new(POOL_BYTES)))
                .expect("format");
            pool.write(region.start.0 * FRAME_SIZE, &bytes[2..])
                .expect("write");
            let tree = Tree::open(&pool, Pfn(region.start.0 + u64::from(bytes[1])), bytes[0])
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let stats = tree.check(&pool).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                stats.entries >= 3 && stats.overflow_frames >= 1,
                "{name}: {stats:?}"
            );
            btree(&bytes);
        }
        assert!(
            btree_seeds().iter().any(|(_, b)| b[0] >= 2),
            "no seed with a branch"
        );
        smoke("btree", 1500, 1);
    }

    /// `PFNFS_FUZZ_REPLAY=TARGET:FILE` runs one input (a crash libFuzzer saved, say) through a
    /// target, and with `PFNFS_FUZZ_EXPAND=POOL` also writes a `pool` input as a pool file to
    /// inspect with `pfnfs fsck`.
    #[test]
    fn replay_one_input() {
        let Ok(spec) = std::env::var("PFNFS_FUZZ_REPLAY") else {
            return;
        };
        let (target, file) = spec.split_once(':').expect("TARGET:FILE");
        let data = std::fs::read(file).expect("read the input");
        if let Ok(out) = std::env::var("PFNFS_FUZZ_EXPAND") {
            expand_to_file(&data, Path::new(&out)).expect("write the pool");
        }
        run(target, &data);
    }

    fn env_u64(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    /// The quick form of each fuzz target CI runs: seeded mutations of the seed corpus
    /// (`PFNFS_FUZZ_ITERATIONS` per target, `pool` an eighth of it as each of its runs opens,
    /// loads and fscks a 16 MiB pool several times; `PFNFS_FUZZ_SEED` the first seed).
    #[test]
    fn seeded_smoke_run() {
        let n = env_u64("PFNFS_FUZZ_ITERATIONS", 2000);
        let seed = env_u64("PFNFS_FUZZ_SEED", 1);
        let mut total = 0;
        for (target, iterations) in [
            ("log_record", n),
            ("schema", n),
            ("checkpoint", n),
            ("free_set", n),
            ("btree", n),
            ("pool", (n / 8).max(1)),
            ("upgrade", (n / 8).max(1)),
        ] {
            let start = std::time::Instant::now();
            let ran = smoke(target, iterations, seed);
            eprintln!(
                "fuzz smoke: {target}: {ran} iterations from seed {seed} in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            total += ran;
        }
        eprintln!("fuzz smoke: {total} iterations in all");
    }
}
