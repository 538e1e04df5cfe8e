//! Inline data (docs/DESIGN.md 5.11): a regular file of at most `INLINE_DATA_MAX` (512)
//! bytes keeps them in its inode record instead of a data frame. Every test checks the bytes
//! against a model, where they live (`Body::Inline` or mapped frames, and `st_blocks`), the
//! `spills` counter, and that all of it survives a clean unmount (the commit path) and a drop
//! without unmount (log replay).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pfnfs_alloc::layout::SUPERBLOCK_BYTES;
use pfnfs_alloc::superblock::Slot;
use pfnfs_alloc::{CreateOptions, OpenOptions, Pool, PoolError, Superblock};
use pfnfs_fs::error::ErrorKind;
use pfnfs_fs::fsck::{FsckMode, check_volume, fsck_pool};
use pfnfs_fs::inode::{Body, ROOT_INO};
use pfnfs_fs::schema::INLINE_DATA_MAX;
use pfnfs_fs::session::errno;
use pfnfs_fs::volume::{
    CAPABILITY_XATTR, Caller, SeekWhence, SetAttr, Upgrade, Volume, upgrade_pool,
};

const ROOT: Caller = Caller { uid: 0, gid: 0 };
const MAX: usize = INLINE_DATA_MAX;
const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;

/// A pool in a temporary directory.
struct Fx {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool");
        Pool::create(&path, 64 << 20, &CreateOptions::default()).unwrap();
        Fx { _dir: dir, path }
    }

    fn load(&self) -> Volume {
        load(&self.path)
    }

    /// Unmounts `v` (cleanly or not) and mounts the pool again.
    fn reload(&self, v: Volume, how: Reload) -> Volume {
        match how {
            Reload::Never => v,
            Reload::Clean => {
                v.shutdown().unwrap();
                drop(v);
                self.load()
            }
            Reload::Crash => {
                // Dropped without shutdown: only the log holds what changed since the last
                // checkpoint.
                drop(v);
                self.load()
            }
        }
    }

    /// fsck -n of the unmounted pool finds nothing.
    fn fsck_clean(&self, what: &str) {
        let r = fsck_pool(&self.path, FsckMode::Check).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(r.problems.is_empty(), "{what}: fsck found {:?}", r.problems);
        assert!(!r.wrote, "{what}: fsck -n wrote");
    }
}

fn load(p: &Path) -> Volume {
    let pool = Pool::open(p, &OpenOptions::default()).unwrap();
    Volume::load(Arc::new(pool)).unwrap()
}

/// How a test unmounts between steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reload {
    /// Not at all.
    Never,
    /// `shutdown`, then load: the tree holds everything.
    Clean,
    /// Drop without shutdown, then load: the log is replayed.
    Crash,
}

const RELOADS: [Reload; 3] = [Reload::Never, Reload::Clean, Reload::Crash];

/// Where a file's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// In its inode record.
    Inline,
    /// In this many mapped frames.
    Frames(u64),
    /// Nowhere: a regular file without extents (empty, or all hole).
    NoExtents,
}

/// Deterministic bytes, never all zero.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

fn read_all(v: &Volume, ino: u64) -> Vec<u8> {
    let size = v.getattr(ino).unwrap().size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let before = out.len();
        v.read(ino, before as u64, 1 << 20, |b| out.extend_from_slice(b))
            .unwrap();
        assert!(
            out.len() > before,
            "read at {before} of {size} returned nothing"
        );
    }
    out
}

fn read_at(v: &Volume, ino: u64, offset: u64, len: u32) -> Vec<u8> {
    v.read(ino, offset, len, |b| b.to_vec()).unwrap()
}

fn layout_of(v: &Volume, ino: u64) -> Layout {
    let cell = v.cell(ino).unwrap();
    let inode = cell.inode.read();
    match &inode.body {
        Body::Inline(_) => Layout::Inline,
        Body::File(map) if map.is_empty() => Layout::NoExtents,
        Body::File(map) => Layout::Frames(map.mapped_frames()),
        other => panic!("inode {ino} is not a regular file: {other:?}"),
    }
}

fn is_inline(v: &Volume, ino: u64) -> bool {
    layout_of(v, ino) == Layout::Inline
}

/// `ino` holds exactly `model`, laid out as `layout`, with the matching `st_blocks`.
fn check(v: &Volume, ino: u64, model: &[u8], layout: Layout, what: &str) {
    let size = model.len() as u64;
    assert_eq!(v.getattr(ino).unwrap().size, size, "{what}: size");
    let got = read_all(v, ino);
    assert!(
        got == model,
        "{what}: content differs (first difference at {:?}; {} bytes read, {} expected)",
        got.iter().zip(model).position(|(a, b)| a != b),
        got.len(),
        model.len()
    );
    // Reads of pieces, across and past the end.
    for (offset, len) in [
        (0, 1),
        (7, 13),
        (size.saturating_sub(1), 10),
        (size, 10),
        (size + 100, 5),
    ] {
        let want = &model[(offset.min(size) as usize)..((offset + len).min(size) as usize)];
        assert_eq!(
            read_at(v, ino, offset, len as u32),
            want,
            "{what}: read of {len} at {offset}"
        );
    }
    assert_eq!(layout_of(v, ino), layout, "{what}: layout");
    let blocks = v.stat(ino).unwrap().blocks;
    match layout {
        Layout::Inline => {
            let cell = v.cell(ino).unwrap();
            let inode = cell.inode.read();
            let Body::Inline(bytes) = &inode.body else {
                unreachable!()
            };
            assert_eq!(bytes.as_slice(), model, "{what}: inline bytes");
            assert!(
                !model.is_empty() && model.len() <= MAX,
                "{what}: inline size"
            );
            assert_eq!(
                blocks,
                size.div_ceil(512),
                "{what}: st_blocks of an inline file"
            );
        }
        Layout::Frames(n) => assert_eq!(blocks, n * 8, "{what}: st_blocks"),
        Layout::NoExtents => assert_eq!(blocks, 0, "{what}: st_blocks"),
    }
}

fn spills(v: &Volume) -> u64 {
    v.stats.spills.load(Ordering::Relaxed)
}

fn inline_writes(v: &Volume) -> u64 {
    v.stats.inline_writes.load(Ordering::Relaxed)
}

fn free_frames(v: &Volume) -> u64 {
    v.allocator().stats().free_frames
}

fn assert_clean(v: &Volume, what: &str) {
    let r = check_volume(v);
    assert!(r.problems.is_empty(), "{what}: {:?}", r.problems);
    v.allocator().check_consistency().unwrap();
}

// The operations, each applied to the volume and to the model.

fn w(v: &Volume, ino: u64, m: &mut Vec<u8>, offset: u64, data: &[u8]) {
    assert_eq!(
        v.write(ROOT, ino, offset, data).unwrap() as usize,
        data.len()
    );
    let end = offset as usize + data.len();
    if m.len() < end {
        m.resize(end, 0);
    }
    m[offset as usize..end].copy_from_slice(data);
}

fn truncate(v: &Volume, ino: u64, m: &mut Vec<u8>, size: u64) {
    let e = v
        .setattr(
            ROOT,
            ino,
            SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(e.attr.size, size);
    m.resize(size as usize, 0);
}

fn fallocate(v: &Volume, ino: u64, m: &mut Vec<u8>, offset: u64, len: u64, mode: i32) {
    v.fallocate(ino, offset, len, mode).unwrap();
    let end = (offset + len) as usize;
    if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 {
        let to = end.min(m.len());
        if (offset as usize) < to {
            m[offset as usize..to].fill(0);
        }
        return;
    }
    if mode & KEEP == 0 && m.len() < end {
        m.resize(end, 0);
    }
    if mode & ZERO != 0 {
        let to = end.min(m.len());
        m[offset as usize..to].fill(0);
    }
}

/// One step of a script: what it does, where the bytes must be after it, and whether it
/// spills the file.
struct Step {
    what: &'static str,
    act: fn(&Volume, u64, &mut Vec<u8>),
    layout: Layout,
    spills: bool,
}

fn step(
    what: &'static str,
    act: fn(&Volume, u64, &mut Vec<u8>),
    layout: Layout,
    spills: bool,
) -> Step {
    Step {
        what,
        act,
        layout,
        spills,
    }
}

/// Runs `steps` on one new file three times: without unmounting in between, unmounting
/// cleanly after every step, and dropping the volume after every step. After each step the
/// file must hold the model, laid out as the step says, before and after the reload; at the
/// end, after a drop (which replays whatever the log holds) and a clean unmount, fsck finds
/// nothing.
fn run_script(name: &str, steps: &[Step]) {
    for between in RELOADS {
        let fx = Fx::new();
        let mut v = fx.load();
        let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
        let mut model = Vec::new();
        for s in steps {
            let ctx = format!("{name} ({between:?} between steps): {}", s.what);
            let before = spills(&v);
            (s.act)(&v, f, &mut model);
            assert_eq!(spills(&v) - before, s.spills as u64, "{ctx}: spills");
            check(&v, f, &model, s.layout, &ctx);
            if between != Reload::Never {
                v = fx.reload(v, between);
                check(&v, f, &model, s.layout, &format!("{ctx}, reloaded"));
            }
        }
        let last = steps.last().map_or(Layout::NoExtents, |s| s.layout);
        // fsck of the crashed pool replays its log (the records of every step when nothing
        // was unmounted in between).
        drop(v);
        fx.fsck_clean(&format!("{name} ({between:?} between steps): crashed"));
        v = fx.load();
        for end in [Reload::Crash, Reload::Clean] {
            v = fx.reload(v, end);
            let ctx = format!("{name} ({between:?} between steps): at the end, {end:?}");
            check(&v, f, &model, last, &ctx);
            assert_clean(&v, &ctx);
        }
        drop(v);
        fx.fsck_clean(name);
    }
}

/// (1) A file of 100 bytes takes no frame: its bytes are in its record (one `WriteInline`, no
/// journaled write), `st_blocks` is 1, and it reads back after a clean unmount and after a
/// crash, with the times the write gave it.
#[test]
fn a_small_file_takes_no_frame_and_survives_both_reloads() {
    for how in [Reload::Clean, Reload::Crash] {
        let fx = Fx::new();
        let v = fx.load();
        let f = v.create(ROOT, ROOT_INO, b"small", 0o644, true).unwrap().ino;
        let data = pattern(1, 100);
        let (free, inl, journaled) = (
            free_frames(&v),
            inline_writes(&v),
            v.stats.journaled_writes.load(Ordering::Relaxed),
        );
        v.write(ROOT, f, 0, &data).unwrap();
        assert_eq!(free_frames(&v), free, "an inline write allocates no frame");
        assert_eq!(inline_writes(&v), inl + 1);
        assert_eq!(
            v.stats.journaled_writes.load(Ordering::Relaxed),
            journaled,
            "an inline write is not a journaled frame write"
        );
        assert_eq!(spills(&v), 0);
        let json = v.stats.to_json();
        assert!(
            json.contains(&format!("\"inline_writes\":{}", inl + 1)),
            "{json}"
        );
        assert!(json.contains("\"spills\":0"), "{json}");
        assert_eq!(v.stat(f).unwrap().blocks, 1);
        check(&v, f, &data, Layout::Inline, "after the write");
        assert_clean(&v, "after the write");
        let attr = v.getattr(f).unwrap();
        let v = fx.reload(v, how);
        check(
            &v,
            f,
            &data,
            Layout::Inline,
            &format!("after {how:?} reload"),
        );
        let again = v.getattr(f).unwrap();
        assert_eq!(
            (again.mtime, again.ctime, again.mode),
            (attr.mtime, attr.ctime, attr.mode),
            "{how:?}: times and mode of the write"
        );
        assert_eq!(v.lookup(ROOT_INO, b"small").unwrap().ino, f);
        assert_clean(&v, &format!("after {how:?} reload"));
        // And once more each way.
        let v = fx.reload(v, Reload::Crash);
        check(
            &v,
            f,
            &data,
            Layout::Inline,
            "after a second reload (crash)",
        );
        let v = fx.reload(v, Reload::Clean);
        check(
            &v,
            f,
            &data,
            Layout::Inline,
            "after a second reload (clean)",
        );
        drop(v);
        fx.fsck_clean(&format!("{how:?}"));
    }
}

/// The edges of the limit: 1 byte and exactly 512 are inline (one block), 513 written at once
/// into a new file takes a frame without a spill (the file was never inline), and a write
/// into a file that has frames stays in frames even when it is small.
#[test]
fn sizes_at_the_limit() {
    let fx = Fx::new();
    let v = fx.load();
    let one = v.create(ROOT, ROOT_INO, b"one", 0o644, true).unwrap().ino;
    let full = v.create(ROOT, ROOT_INO, b"full", 0o644, true).unwrap().ino;
    let over = v.create(ROOT, ROOT_INO, b"over", 0o644, true).unwrap().ino;
    let (mut m1, mut m2, mut m3) = (Vec::new(), Vec::new(), Vec::new());
    let free = free_frames(&v);
    w(&v, one, &mut m1, 0, b"x");
    w(&v, full, &mut m2, 0, &pattern(2, MAX));
    assert_eq!(free_frames(&v), free, "inline files allocate no frame");
    w(&v, over, &mut m3, 0, &pattern(3, MAX + 1));
    assert_eq!(
        spills(&v),
        0,
        "a new file written past the limit is not a spill"
    );
    assert_eq!(free_frames(&v), free - 1, "513 bytes take one frame");
    // A small overwrite of a file in frames stays in frames.
    w(&v, over, &mut m3, 0, b"abc");
    let files = [
        (one, &m1, Layout::Inline),
        (full, &m2, Layout::Inline),
        (over, &m3, Layout::Frames(1)),
    ];
    for (ino, m, layout) in files {
        check(&v, ino, m, layout, "limits");
    }
    assert_eq!(v.stat(one).unwrap().blocks, 1);
    assert_eq!(v.stat(full).unwrap().blocks, 1);
    assert_eq!(v.stat(over).unwrap().blocks, 8);
    let mut v = v;
    for how in [Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        for (ino, m, layout) in files {
            check(&v, ino, m, layout, &format!("limits after {how:?}"));
        }
    }
    drop(v);
    fx.fsck_clean("limits");
}

/// (2) Writes within the limit keep the file inline (an overwrite in the middle, an extension,
/// a write past the end leaving a gap of zeros, up to exactly 512 bytes); the write ending at
/// 513 spills it into one frame with every byte in place; after that it stays in frames.
#[test]
fn writes_within_the_limit_stay_inline_and_one_past_it_spills() {
    run_script(
        "writes",
        &[
            step(
                "100 bytes at 0",
                |v, f, m| w(v, f, m, 0, &pattern(10, 100)),
                Layout::Inline,
                false,
            ),
            step(
                "overwrite in the middle",
                |v, f, m| w(v, f, m, 40, &pattern(11, 10)),
                Layout::Inline,
                false,
            ),
            step(
                "10 bytes at 300: a gap of zeros",
                |v, f, m| w(v, f, m, 300, &pattern(12, 10)),
                Layout::Inline,
                false,
            ),
            step(
                "extend to exactly 512",
                |v, f, m| w(v, f, m, 310, &pattern(13, MAX - 310)),
                Layout::Inline,
                false,
            ),
            step(
                "overwrite of the full file",
                |v, f, m| w(v, f, m, 0, &pattern(14, MAX)),
                Layout::Inline,
                false,
            ),
            step(
                "one byte at 512 spills",
                |v, f, m| w(v, f, m, MAX as u64, b"!"),
                Layout::Frames(1),
                true,
            ),
            step(
                "a small overwrite after the spill stays in frames",
                |v, f, m| w(v, f, m, 10, &pattern(15, 20)),
                Layout::Frames(1),
                false,
            ),
            step(
                "a write in the third frame",
                |v, f, m| w(v, f, m, 10_000, &pattern(16, 100)),
                Layout::Frames(2),
                false,
            ),
        ],
    );
}

/// A write that starts inside the inline limit and ends past it spills, then lands: the
/// inline bytes, zeros up to the write, the write.
#[test]
fn a_write_crossing_the_limit_spills_then_lands() {
    run_script(
        "crossing write",
        &[
            step(
                "100 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(20, 100)),
                Layout::Inline,
                false,
            ),
            step(
                "300 bytes at 400",
                |v, f, m| w(v, f, m, 400, &pattern(21, 300)),
                Layout::Frames(1),
                true,
            ),
        ],
    );
    run_script(
        "far write",
        &[
            step(
                "200 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(22, 200)),
                Layout::Inline,
                false,
            ),
            step(
                "10 bytes at 8000",
                |v, f, m| w(v, f, m, 8000, &pattern(23, 10)),
                Layout::Frames(2),
                true,
            ),
        ],
    );
    run_script(
        "large write over the inline bytes",
        &[
            step(
                "511 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(24, 511)),
                Layout::Inline,
                false,
            ),
            step(
                "10000 bytes at 5",
                |v, f, m| w(v, f, m, 5, &pattern(25, 10_000)),
                Layout::Frames(3),
                true,
            ),
        ],
    );
}

/// (3) Truncate: down and up within the limit stay inline (zeros after the old end), to 0 the
/// file has no bytes anywhere and the next write makes it inline again, past 512 it spills
/// (zeros after the old end); a file in frames truncated back under the limit stays in
/// frames, and only truncating it to 0 lets it become inline again.
#[test]
fn truncate_within_the_limit_stays_inline_and_past_it_spills() {
    run_script(
        "truncate",
        &[
            step(
                "300 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(30, 300)),
                Layout::Inline,
                false,
            ),
            step(
                "down to 200",
                |v, f, m| truncate(v, f, m, 200),
                Layout::Inline,
                false,
            ),
            step(
                "up to 450: zeros",
                |v, f, m| truncate(v, f, m, 450),
                Layout::Inline,
                false,
            ),
            step(
                "up to exactly 512",
                |v, f, m| truncate(v, f, m, MAX as u64),
                Layout::Inline,
                false,
            ),
            step(
                "to the same size",
                |v, f, m| truncate(v, f, m, MAX as u64),
                Layout::Inline,
                false,
            ),
            step(
                "to 0",
                |v, f, m| truncate(v, f, m, 0),
                Layout::NoExtents,
                false,
            ),
            step(
                "write after truncate to 0",
                |v, f, m| w(v, f, m, 0, &pattern(31, 50)),
                Layout::Inline,
                false,
            ),
            step(
                "up to 5000 spills",
                |v, f, m| truncate(v, f, m, 5000),
                Layout::Frames(1),
                true,
            ),
            step(
                "back down to 100 stays in frames",
                |v, f, m| truncate(v, f, m, 100),
                Layout::Frames(1),
                false,
            ),
            step(
                "a small write stays in frames",
                |v, f, m| w(v, f, m, 20, &pattern(32, 10)),
                Layout::Frames(1),
                false,
            ),
            step(
                "to 0 frees the frame",
                |v, f, m| truncate(v, f, m, 0),
                Layout::NoExtents,
                false,
            ),
            step(
                "inline again",
                |v, f, m| w(v, f, m, 0, &pattern(33, 10)),
                Layout::Inline,
                false,
            ),
            step(
                "to exactly 513 spills",
                |v, f, m| truncate(v, f, m, MAX as u64 + 1),
                Layout::Frames(1),
                true,
            ),
        ],
    );
}

/// (4) Every fallocate mode spills an inline file first; the result holds the right bytes.
#[test]
fn fallocate_punch_and_zero_range_spill_an_inline_file() {
    run_script(
        "fallocate mode 0",
        &[
            step(
                "100 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(40, 100)),
                Layout::Inline,
                false,
            ),
            step(
                "allocate 0..200",
                |v, f, m| fallocate(v, f, m, 0, 200, 0),
                Layout::Frames(1),
                true,
            ),
            step(
                "a write into it stays in frames",
                |v, f, m| w(v, f, m, 150, &pattern(41, 10)),
                Layout::Frames(1),
                false,
            ),
        ],
    );
    run_script(
        "fallocate keep size",
        &[
            step(
                "100 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(42, 100)),
                Layout::Inline,
                false,
            ),
            step(
                "allocate 1000..9192, keep size",
                |v, f, m| fallocate(v, f, m, 1000, 8192, KEEP),
                Layout::Frames(3),
                true,
            ),
            step(
                "append",
                |v, f, m| w(v, f, m, 100, &pattern(43, 20)),
                Layout::Frames(3),
                false,
            ),
        ],
    );
    run_script(
        "fallocate inside the inline bytes",
        &[
            step(
                "100 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(44, 100)),
                Layout::Inline,
                false,
            ),
            step(
                "allocate 0..50, keep size",
                |v, f, m| fallocate(v, f, m, 0, 50, KEEP),
                Layout::Frames(1),
                true,
            ),
        ],
    );
    run_script(
        "punch",
        &[
            step(
                "100 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(45, 100)),
                Layout::Inline,
                false,
            ),
            step(
                "punch 10..30",
                |v, f, m| fallocate(v, f, m, 10, 20, PUNCH),
                Layout::Frames(1),
                true,
            ),
            step(
                "punch 0..4096",
                |v, f, m| fallocate(v, f, m, 0, 4096, PUNCH),
                Layout::Frames(1),
                false,
            ),
        ],
    );
    run_script(
        "punch past the end",
        &[
            step(
                "300 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(46, 300)),
                Layout::Inline,
                false,
            ),
            step(
                "punch 250..1250",
                |v, f, m| fallocate(v, f, m, 250, 1000, PUNCH),
                Layout::Frames(1),
                true,
            ),
        ],
    );
    run_script(
        "zero range",
        &[
            step(
                "100 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(47, 100)),
                Layout::Inline,
                false,
            ),
            step(
                "zero 50..60",
                |v, f, m| fallocate(v, f, m, 50, 10, ZERO),
                Layout::Frames(1),
                true,
            ),
            step(
                "zero 80..380, growing",
                |v, f, m| fallocate(v, f, m, 80, 300, ZERO),
                Layout::Frames(1),
                false,
            ),
        ],
    );
    run_script(
        "zero range keep size",
        &[
            step(
                "400 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(48, 400)),
                Layout::Inline,
                false,
            ),
            step(
                "zero 0..100, keep size",
                |v, f, m| fallocate(v, f, m, 0, 100, ZERO | KEEP),
                Layout::Frames(1),
                true,
            ),
        ],
    );
}

/// A file without extents (empty) is not spilled by fallocate: there is nothing to spill.
#[test]
fn fallocate_of_an_empty_file_is_no_spill() {
    run_script(
        "fallocate empty",
        &[
            step(
                "allocate 0..100",
                |v, f, m| fallocate(v, f, m, 0, 100, 0),
                Layout::Frames(1),
                false,
            ),
            step(
                "write stays in the allocated frame",
                |v, f, m| w(v, f, m, 0, &pattern(49, 10)),
                Layout::Frames(1),
                false,
            ),
        ],
    );
}

/// (5) SEEK_DATA / SEEK_HOLE on an inline file: all data (zeros of a gap or a truncate too),
/// the only hole at the end, ENXIO at and past the end.
#[test]
fn seek_data_and_hole_on_an_inline_file() {
    let fx = Fx::new();
    let mut v = fx.load();
    let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
    let mut m = Vec::new();
    w(&v, f, &mut m, 0, &pattern(50, 50));
    w(&v, f, &mut m, 150, &pattern(51, 50));
    truncate(&v, f, &mut m, 400);
    check(&v, f, &m, Layout::Inline, "seek file");
    for how in [Reload::Never, Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        assert!(is_inline(&v, f));
        for off in [0u64, 1, 49, 50, 100, 199, 250, 399] {
            assert_eq!(
                v.seek(f, off, SeekWhence::Data).unwrap(),
                off,
                "{how:?}: SEEK_DATA at {off}"
            );
            assert_eq!(
                v.seek(f, off, SeekWhence::Hole).unwrap(),
                400,
                "{how:?}: SEEK_HOLE at {off}"
            );
        }
        for off in [400u64, 401, 512, 4096, u64::MAX] {
            for whence in [SeekWhence::Data, SeekWhence::Hole] {
                let e = v.seek(f, off, whence).unwrap_err();
                assert_eq!(errno(&e), libc::ENXIO, "{how:?}: {whence:?} at {off}");
            }
        }
    }
}

/// (6) copy_file_range from, into and within inline files.
#[test]
fn copy_range_with_inline_files() {
    let fx = Fx::new();
    let v = fx.load();
    let create = |name: &[u8]| v.create(ROOT, ROOT_INO, name, 0o644, true).unwrap().ino;
    let mut files: Vec<(u64, Vec<u8>, Layout, &str)> = Vec::new();

    // From an inline file into a new file: the result is inline; the length is cut at the
    // source's end; past the source's end nothing is copied.
    let src = create(b"src");
    let mut src_m = Vec::new();
    w(&v, src, &mut src_m, 0, &pattern(60, 200));
    let copy = create(b"copy");
    let free = free_frames(&v);
    assert_eq!(v.copy_range(ROOT, src, 0, copy, 0, 1000).unwrap(), 200);
    assert_eq!(free_frames(&v), free, "an inline copy takes no frame");
    assert_eq!(v.copy_range(ROOT, src, 200, copy, 0, 10).unwrap(), 0);
    assert_eq!(v.copy_range(ROOT, src, 500, copy, 0, 10).unwrap(), 0);
    check(&v, copy, &src_m, Layout::Inline, "inline to new");
    files.push((copy, src_m.clone(), Layout::Inline, "inline to new"));

    // Part of it to an offset of a new file: zeros before.
    let part = create(b"part");
    assert_eq!(v.copy_range(ROOT, src, 50, part, 30, 100).unwrap(), 100);
    let mut part_m = vec![0u8; 30];
    part_m.extend_from_slice(&src_m[50..150]);
    check(&v, part, &part_m, Layout::Inline, "inline part to new");
    files.push((part, part_m, Layout::Inline, "inline part to new"));

    // From an inline file into the middle of a big file: the big file stays in frames.
    let big = create(b"big");
    let mut big_m = Vec::new();
    w(&v, big, &mut big_m, 0, &pattern(61, 20_000));
    assert_eq!(v.copy_range(ROOT, src, 0, big, 5000, 200).unwrap(), 200);
    big_m[5000..5200].copy_from_slice(&src_m);
    check(&v, big, &big_m, Layout::Frames(5), "inline into big");
    files.push((big, big_m.clone(), Layout::Frames(5), "inline into big"));

    // From a big file into a small inline file, past the limit: it spills.
    let small = create(b"small");
    let mut small_m = Vec::new();
    w(&v, small, &mut small_m, 0, &pattern(62, 100));
    let before = spills(&v);
    assert_eq!(
        v.copy_range(ROOT, big, 1000, small, 50, 1000).unwrap(),
        1000
    );
    assert_eq!(spills(&v), before + 1);
    let mut want = small_m[..50].to_vec();
    want.extend_from_slice(&big_m[1000..2000]);
    small_m = want;
    check(&v, small, &small_m, Layout::Frames(1), "big into inline");
    files.push((small, small_m, Layout::Frames(1), "big into inline"));

    // From a file in frames, across a hole, into an inline file within the limit: it stays
    // inline, the hole copied as zeros over its bytes.
    let holey = create(b"holey");
    let mut holey_m = Vec::new();
    w(&v, holey, &mut holey_m, 0, &pattern(63, 4096));
    w(&v, holey, &mut holey_m, 8192, &pattern(64, 100));
    let tiny = create(b"tiny");
    let mut tiny_m = Vec::new();
    w(&v, tiny, &mut tiny_m, 0, &pattern(65, 400));
    assert_eq!(v.copy_range(ROOT, holey, 4000, tiny, 10, 300).unwrap(), 300);
    tiny_m[10..310].copy_from_slice(&holey_m[4000..4300]);
    assert!(tiny_m[106..310].iter().all(|&b| b == 0));
    check(
        &v,
        tiny,
        &tiny_m,
        Layout::Inline,
        "data and hole into inline",
    );
    files.push((tiny, tiny_m, Layout::Inline, "data and hole into inline"));

    // Within one inline file: disjoint ranges, within the limit (a gap of zeros), then past
    // it (a spill); overlapping ranges are refused.
    let same = create(b"same");
    let mut same_m = Vec::new();
    w(&v, same, &mut same_m, 0, &pattern(66, 200));
    assert_eq!(v.copy_range(ROOT, same, 0, same, 300, 100).unwrap(), 100);
    same_m.resize(400, 0);
    same_m.copy_within(0..100, 300);
    check(&v, same, &same_m, Layout::Inline, "within one inline file");
    let e = v.copy_range(ROOT, same, 0, same, 50, 100).unwrap_err();
    assert_eq!(errno(&e), libc::EINVAL, "overlapping copy");
    check(&v, same, &same_m, Layout::Inline, "after a refused copy");
    let same2 = create(b"same2");
    let mut same2_m = same_m.clone();
    w(&v, same2, &mut Vec::new(), 0, &same_m);
    files.push((same, same_m, Layout::Inline, "within one inline file"));
    let before = spills(&v);
    assert_eq!(
        v.copy_range(ROOT, same2, 100, same2, 450, 100).unwrap(),
        100
    );
    assert_eq!(spills(&v), before + 1);
    same2_m.resize(550, 0);
    same2_m.copy_within(100..200, 450);
    check(
        &v,
        same2,
        &same2_m,
        Layout::Frames(1),
        "within one file, past the limit",
    );
    files.push((
        same2,
        same2_m,
        Layout::Frames(1),
        "within one file, past the limit",
    ));

    assert_clean(&v, "copies");
    drop(v);
    for how in [Reload::Crash, Reload::Clean] {
        let v = fx.reload(fx.load(), how);
        for (ino, m, layout, what) in &files {
            check(&v, *ino, m, *layout, &format!("{what}, after {how:?}"));
        }
    }
    fx.fsck_clean("copies");
}

/// (7) Hard links share the inline bytes; an unlinked inline file stays readable (and
/// writable) while open and is reclaimed at its last release, or at the next mount after a
/// crash.
#[test]
fn links_unlink_and_reclaim_of_inline_files() {
    let fx = Fx::new();
    let mut v = fx.load();
    let f = v.create(ROOT, ROOT_INO, b"a", 0o644, true).unwrap().ino;
    let mut m = Vec::new();
    w(&v, f, &mut m, 0, &pattern(70, 100));
    v.link(f, ROOT_INO, b"b").unwrap();
    assert_eq!(v.getattr(f).unwrap().nlink, 2);
    v.remove(ROOT_INO, b"a", false).unwrap();
    // A write through the other name.
    let b = v.lookup(ROOT_INO, b"b").unwrap().ino;
    assert_eq!(b, f);
    w(&v, b, &mut m, 100, &pattern(71, 50));
    for how in [Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        assert!(v.lookup(ROOT_INO, b"a").is_err());
        assert_eq!(v.lookup(ROOT_INO, b"b").unwrap().ino, f);
        assert_eq!(v.getattr(f).unwrap().nlink, 1);
        check(&v, f, &m, Layout::Inline, &format!("link after {how:?}"));
    }

    // Open, unlink the last name: still readable and writable; reclaimed at release.
    let inodes = v.statfs().inodes;
    let free = free_frames(&v);
    v.open(f, true).unwrap();
    v.remove(ROOT_INO, b"b", false).unwrap();
    assert_eq!(v.getattr(f).unwrap().nlink, 0);
    check(&v, f, &m, Layout::Inline, "unlinked, open");
    w(&v, f, &mut m, 0, &pattern(72, 10));
    check(&v, f, &m, Layout::Inline, "unlinked, open, written");
    v.release(f);
    assert_eq!(
        v.getattr(f).map_err(|e| e.kind).unwrap_err(),
        ErrorKind::NotFound,
        "reclaimed at release"
    );
    assert_eq!(v.statfs().inodes, inodes - 1);
    assert_eq!(free_frames(&v), free, "an inline file frees no frame");
    assert_clean(&v, "after reclaim");
    for how in [Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        assert!(v.getattr(f).is_err(), "{how:?}: the reclaimed file is gone");
        assert_eq!(v.statfs().inodes, inodes - 1, "{how:?}");
    }

    // Open, unlink, crash: the mount reclaims the orphan.
    let g = v.create(ROOT, ROOT_INO, b"g", 0o644, true).unwrap().ino;
    let mut gm = Vec::new();
    w(&v, g, &mut gm, 0, &pattern(73, 300));
    let inodes = v.statfs().inodes;
    v.open(g, false).unwrap();
    v.remove(ROOT_INO, b"g", false).unwrap();
    check(&v, g, &gm, Layout::Inline, "orphan before the crash");
    v = fx.reload(v, Reload::Crash);
    assert!(v.getattr(g).is_err(), "the orphan is reclaimed at mount");
    assert_eq!(v.statfs().inodes, inodes - 1);
    assert_clean(&v, "after the orphan");
    drop(v);
    fx.fsck_clean("links");
}

/// (8) A sparse file within the limit (no extents, a size) becomes inline with its first write,
/// the hole reading as zeros; past the limit it does not.
#[test]
fn a_hole_within_the_limit_becomes_inline_on_write() {
    run_script(
        "sparse",
        &[
            step(
                "truncate an empty file to 300",
                |v, f, m| truncate(v, f, m, 300),
                Layout::NoExtents,
                false,
            ),
            step(
                "5 bytes at 0",
                |v, f, m| w(v, f, m, 0, b"hello"),
                Layout::Inline,
                false,
            ),
        ],
    );
    run_script(
        "sparse, written past its size",
        &[
            step(
                "truncate an empty file to 300",
                |v, f, m| truncate(v, f, m, 300),
                Layout::NoExtents,
                false,
            ),
            step(
                "10 bytes at 400",
                |v, f, m| w(v, f, m, 400, &pattern(80, 10)),
                Layout::Inline,
                false,
            ),
        ],
    );
    run_script(
        "sparse, exactly 512",
        &[
            step(
                "truncate an empty file to 512",
                |v, f, m| truncate(v, f, m, MAX as u64),
                Layout::NoExtents,
                false,
            ),
            step(
                "the last byte",
                |v, f, m| w(v, f, m, MAX as u64 - 1, b"z"),
                Layout::Inline,
                false,
            ),
        ],
    );
    run_script(
        "one byte at 511 of an empty file",
        &[step(
            "1 byte at 511",
            |v, f, m| w(v, f, m, MAX as u64 - 1, b"z"),
            Layout::Inline,
            false,
        )],
    );
    run_script(
        "a file whose frames were all punched away",
        &[
            step(
                "4096 bytes",
                |v, f, m| w(v, f, m, 0, &pattern(81, 4096)),
                Layout::Frames(1),
                false,
            ),
            step(
                "punch the whole frame",
                |v, f, m| fallocate(v, f, m, 0, 4096, PUNCH),
                Layout::NoExtents,
                false,
            ),
            step(
                "a write into a hole larger than the limit takes a frame",
                |v, f, m| w(v, f, m, 0, b"abc"),
                Layout::Frames(1),
                false,
            ),
            step(
                "punch it again",
                |v, f, m| fallocate(v, f, m, 0, 4096, PUNCH),
                Layout::NoExtents,
                false,
            ),
            step(
                "truncate the hole to 100",
                |v, f, m| truncate(v, f, m, 100),
                Layout::NoExtents,
                false,
            ),
            step(
                "a write makes it inline",
                |v, f, m| w(v, f, m, 0, b"abc"),
                Layout::Inline,
                false,
            ),
        ],
    );
    run_script(
        "sparse past the limit",
        &[
            step(
                "truncate an empty file to 600",
                |v, f, m| truncate(v, f, m, 600),
                Layout::NoExtents,
                false,
            ),
            step(
                "5 bytes at 0 take a frame",
                |v, f, m| w(v, f, m, 0, b"hello"),
                Layout::Frames(1),
                false,
            ),
        ],
    );
}

/// Clears the inline-data flag in every superblock slot of the unmounted pool at `p`: the
/// pool as a build from before inline data made it.
fn clear_inline_flag(p: &Path) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut cleared = 0;
    for slot in [Slot::A, Slot::B] {
        let mut buf = [0u8; SUPERBLOCK_BYTES];
        file.read_exact_at(&mut buf, slot.offset()).unwrap();
        let Ok(mut sb) = Superblock::decode(&buf) else {
            continue;
        };
        assert!(sb.inline_data, "mkfs sets the inline data flag");
        sb.inline_data = false;
        file.write_all_at(&sb.encode(), slot.offset()).unwrap();
        cleared += 1;
    }
    assert!(cleared > 0, "no superblock slot decodes");
    file.sync_all().unwrap();
}

fn pool_inline_flag(p: &Path) -> bool {
    Pool::open(
        p,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap()
    .superblock()
    .inline_data
}

/// (9) mkfs turns inline data on, so there is nothing to upgrade, and the flag cannot be
/// turned off.
#[test]
fn a_new_pool_has_inline_data_and_it_cannot_be_turned_off() {
    let fx = Fx::new();
    assert!(pool_inline_flag(&fx.path), "mkfs sets the flag");
    let e = upgrade_pool(&fx.path).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid, "{e:?}");
    assert!(e.context.contains("nothing to upgrade"), "{}", e.context);
    let pool = Pool::open(&fx.path, &OpenOptions::default()).unwrap();
    let mut sb = pool.superblock();
    sb.inline_data = false;
    match pool.commit_superblock(sb) {
        Err(PoolError::BadSuperblock { what, .. }) => {
            assert!(what.contains("cannot be turned off"), "{what}")
        }
        other => panic!("turning inline data off: {other:?}"),
    }
    assert!(pool.superblock().inline_data);
    drop(pool);
    assert!(pool_inline_flag(&fx.path), "still on after the refusal");
    // A mount and a clean unmount keep it on.
    let v = fx.load();
    v.shutdown().unwrap();
    drop(v);
    assert!(pool_inline_flag(&fx.path));
}

/// A pool made before inline data (flag clear) keeps small files in frames, through mounts
/// and unmounts; `upgrade_pool` turns the flag on and nothing else: the old files stay in
/// frames, new small files are inline, and an old file truncated to 0 becomes inline with its
/// next write. A second upgrade has nothing to do.
#[test]
fn a_pool_without_the_flag_uses_frames_until_upgraded() {
    let fx = Fx::new();
    clear_inline_flag(&fx.path);
    assert!(!pool_inline_flag(&fx.path));
    let v = fx.load();
    let old = v.create(ROOT, ROOT_INO, b"old", 0o644, true).unwrap().ino;
    let mut old_m = Vec::new();
    let free = free_frames(&v);
    w(&v, old, &mut old_m, 0, &pattern(90, 100));
    assert_eq!(free_frames(&v), free - 1, "a small file takes a frame");
    assert_eq!(inline_writes(&v), 0);
    check(&v, old, &old_m, Layout::Frames(1), "old pool");
    // A hole within the limit is not made inline either.
    let hole = v.create(ROOT, ROOT_INO, b"hole", 0o644, true).unwrap().ino;
    let mut hole_m = Vec::new();
    truncate(&v, hole, &mut hole_m, 300);
    w(&v, hole, &mut hole_m, 0, b"abc");
    check(&v, hole, &hole_m, Layout::Frames(1), "old pool, hole");
    assert_eq!(inline_writes(&v), 0);
    let v = fx.reload(v, Reload::Crash);
    check(&v, old, &old_m, Layout::Frames(1), "old pool after a crash");
    let v = fx.reload(v, Reload::Clean);
    check(
        &v,
        old,
        &old_m,
        Layout::Frames(1),
        "old pool after an unmount",
    );
    // The upgrade of a pool that crashed: the next mount replays its log as before.
    let late = v.create(ROOT, ROOT_INO, b"late", 0o644, true).unwrap().ino;
    let mut late_m = Vec::new();
    w(&v, late, &mut late_m, 0, &pattern(93, 200));
    check(&v, late, &late_m, Layout::Frames(1), "old pool, late file");
    drop(v);
    assert!(!pool_inline_flag(&fx.path), "a mount does not set the flag");
    fx.fsck_clean("old pool");

    assert_eq!(upgrade_pool(&fx.path).unwrap(), Upgrade::InlineData);
    assert!(pool_inline_flag(&fx.path));
    let e = upgrade_pool(&fx.path).unwrap_err();
    assert!(e.context.contains("nothing to upgrade"), "{}", e.context);
    fx.fsck_clean("upgraded pool");

    let v = fx.load();
    check(
        &v,
        old,
        &old_m,
        Layout::Frames(1),
        "old file after the upgrade",
    );
    check(
        &v,
        late,
        &late_m,
        Layout::Frames(1),
        "file of the log after the upgrade",
    );
    check(
        &v,
        hole,
        &hole_m,
        Layout::Frames(1),
        "old hole after the upgrade",
    );
    w(&v, old, &mut old_m, 10, b"xyz");
    check(
        &v,
        old,
        &old_m,
        Layout::Frames(1),
        "old file written after the upgrade",
    );
    let new = v.create(ROOT, ROOT_INO, b"new", 0o644, true).unwrap().ino;
    let mut new_m = Vec::new();
    let free = free_frames(&v);
    w(&v, new, &mut new_m, 0, &pattern(91, 100));
    assert_eq!(free_frames(&v), free);
    check(
        &v,
        new,
        &new_m,
        Layout::Inline,
        "new file after the upgrade",
    );
    truncate(&v, old, &mut old_m, 0);
    w(&v, old, &mut old_m, 0, &pattern(92, 60));
    check(
        &v,
        old,
        &old_m,
        Layout::Inline,
        "old file rewritten after the upgrade",
    );
    let mut v = v;
    for how in [Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        let files = [
            (old, &old_m, Layout::Inline),
            (hole, &hole_m, Layout::Frames(1)),
            (new, &new_m, Layout::Inline),
            (late, &late_m, Layout::Frames(1)),
        ];
        for (ino, m, layout) in files {
            check(&v, ino, m, layout, &format!("upgraded pool after {how:?}"));
        }
        assert_clean(&v, &format!("upgraded pool after {how:?}"));
    }
    drop(v);
    assert!(pool_inline_flag(&fx.path));
    fx.fsck_clean("upgraded pool, used");
}

/// (10) Many small files take tree space, not a frame each: 2,000 files of 100 bytes cost far
/// fewer than 2,000 frames (2,000 files of 600 bytes cost at least that), and every one reads
/// back after a crash and after an unmount, also through a cache of 64 inodes (cells evicted
/// and read back from the tree).
#[test]
fn many_small_files_take_no_frame_each() {
    const FILES: usize = 2000;
    let fx = Fx::new();
    let mut v = fx.load();
    let small_dir = v.mkdir(ROOT, ROOT_INO, b"small", 0o755).unwrap().ino;
    let big_dir = v.mkdir(ROOT, ROOT_INO, b"big", 0o755).unwrap().ino;
    v.checkpoint().unwrap();
    let content = |i: usize, len: usize| pattern(1000 + i as u64, len);
    let make = |v: &Volume, dir: u64, len: usize| -> u64 {
        let free = free_frames(v);
        for i in 0..FILES {
            let e = v
                .create(ROOT, dir, format!("f{i}").as_bytes(), 0o644, true)
                .unwrap();
            v.write(ROOT, e.ino, 0, &content(i, len)).unwrap();
        }
        v.checkpoint().unwrap();
        free - free_frames(v)
    };
    let inline_cost = make(&v, small_dir, 100);
    let frame_cost = make(&v, big_dir, MAX + 88);
    assert!(
        inline_cost < FILES as u64 / 4,
        "{FILES} inline files took {inline_cost} frames"
    );
    assert!(
        frame_cost >= FILES as u64,
        "{FILES} files of {} bytes took {frame_cost} frames",
        MAX + 88
    );
    assert_eq!(spills(&v), 0);
    assert_clean(&v, "many files");
    let verify = |v: &Volume, what: &str| {
        for (dir, len) in [(small_dir, 100), (big_dir, MAX + 88)] {
            for i in 0..FILES {
                let ino = v.lookup(dir, format!("f{i}").as_bytes()).unwrap().ino;
                let layout = if len <= MAX {
                    Layout::Inline
                } else {
                    Layout::Frames(1)
                };
                assert_eq!(read_all(v, ino), content(i, len), "{what}: f{i} of {len}");
                assert_eq!(layout_of(v, ino), layout, "{what}: f{i} of {len}");
            }
        }
    };
    v.set_cache_bytes(0);
    verify(&v, "small cache");
    // Readdirplus reads runs of neighbours into the cache in one scan.
    let inos: Vec<u64> = (0..FILES)
        .map(|i| v.lookup(small_dir, format!("f{i}").as_bytes()).unwrap().ino)
        .collect();
    v.set_cache_bytes(0);
    v.preload(&inos[..32]);
    for (i, &ino) in inos[..32].iter().enumerate() {
        check(
            &v,
            ino,
            &content(i, 100),
            Layout::Inline,
            &format!("preloaded f{i}"),
        );
    }
    for how in [Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        v.set_cache_bytes(0);
        verify(&v, &format!("after {how:?}"));
    }
    drop(v);
    fx.fsck_clean("many files");
}

/// Many small files written after the last checkpoint come back from the log alone.
#[test]
fn many_small_files_come_back_from_the_log() {
    let fx = Fx::new();
    let v = fx.load();
    v.checkpoint().unwrap();
    let mut files = Vec::new();
    for i in 0..300u64 {
        let e = v
            .create(ROOT, ROOT_INO, format!("f{i}").as_bytes(), 0o644, true)
            .unwrap();
        let mut m = Vec::new();
        let len = 1 + (i as usize * 37) % MAX;
        w(&v, e.ino, &mut m, 0, &pattern(2000 + i, len));
        if i % 3 == 0 {
            // A second write of each third file, past its end.
            w(&v, e.ino, &mut m, len as u64 + 7, b"tail");
        }
        files.push((e.ino, m));
    }
    drop(v);
    let v = fx.load();
    for (ino, m) in &files {
        let layout = if m.len() <= MAX {
            Layout::Inline
        } else {
            Layout::Frames(1)
        };
        check(&v, *ino, m, layout, &format!("inode {ino} after replay"));
    }
    assert_clean(&v, "replayed small files");
    drop(v);
    fx.fsck_clean("replayed small files");
}

/// A write into an inline file takes the privileges away, as any write does, and the mode
/// its record carries comes back after a crash.
#[test]
fn an_inline_write_takes_privileges_away() {
    let fx = Fx::new();
    let mut v = fx.load();
    let user = Caller {
        uid: 1000,
        gid: 1000,
    };
    let cap = [1u8, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let f = v
        .create(ROOT, ROOT_INO, b"suid", 0o6775, false)
        .unwrap()
        .ino;
    let mut m = Vec::new();
    w(&v, f, &mut m, 0, b"0123456789");
    v.setattr(
        ROOT,
        f,
        SetAttr {
            mode: Some(0o6775),
            ..Default::default()
        },
    )
    .unwrap();
    v.setxattr(f, CAPABILITY_XATTR, &cap, 0).unwrap();
    assert_eq!(v.getattr(f).unwrap().mode & 0o7777, 0o6775);
    v.write(user, f, 2, b"ab").unwrap();
    m[2..4].copy_from_slice(b"ab");
    for how in [Reload::Never, Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        assert_eq!(v.getattr(f).unwrap().mode & 0o7777, 0o0775, "{how:?}");
        assert!(v.getxattr(f, CAPABILITY_XATTR).is_err(), "{how:?}");
        check(&v, f, &m, Layout::Inline, &format!("privileges, {how:?}"));
    }
}

/// After a checkpoint holds an inline file, writes and truncates replayed from the log apply
/// to the bytes as the tree holds them.
#[test]
fn log_records_apply_to_the_committed_inline_bytes() {
    let fx = Fx::new();
    let v = fx.load();
    let f = v.create(ROOT, ROOT_INO, b"f", 0o644, true).unwrap().ino;
    let mut m = Vec::new();
    w(&v, f, &mut m, 0, &pattern(95, 300));
    v.checkpoint().unwrap();
    w(&v, f, &mut m, 100, &pattern(96, 50));
    truncate(&v, f, &mut m, 250);
    w(&v, f, &mut m, 400, &pattern(97, 20));
    check(&v, f, &m, Layout::Inline, "before the crash");
    drop(v);
    // A read-only mount replays the records in RAM and serves the bytes.
    let ro = Volume::load(Arc::new(
        Pool::open(
            &fx.path,
            &OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap(),
    ))
    .unwrap();
    check(&ro, f, &m, Layout::Inline, "read-only after the crash");
    let e = ro.write(ROOT, f, 0, b"no").unwrap_err();
    assert_eq!(errno(&e), libc::EROFS);
    drop(ro);
    let v = fx.load();
    check(&v, f, &m, Layout::Inline, "after the crash");
    // Once more after a checkpoint in the middle of a spill sequence.
    v.checkpoint().unwrap();
    w(&v, f, &mut m, 500, &pattern(98, 100));
    check(&v, f, &m, Layout::Frames(1), "spilled before the crash");
    let v = fx.reload(v, Reload::Crash);
    check(&v, f, &m, Layout::Frames(1), "spilled after the crash");
    assert_clean(&v, "replay over the tree");
    drop(v);
    fx.fsck_clean("replay over the tree");
}

/// Rename over an inline file reclaims it; extended attributes (a large one too) live beside
/// a full inline record; both survive the reloads.
#[test]
fn rename_over_and_xattrs_on_inline_files() {
    let fx = Fx::new();
    let mut v = fx.load();
    let a = v.create(ROOT, ROOT_INO, b"a", 0o644, true).unwrap().ino;
    let b = v.create(ROOT, ROOT_INO, b"b", 0o644, true).unwrap().ino;
    let (mut am, mut bm) = (Vec::new(), Vec::new());
    w(&v, a, &mut am, 0, &pattern(100, MAX));
    w(&v, b, &mut bm, 0, &pattern(101, 50));
    let big = pattern(102, 4000);
    v.setxattr(a, b"user.big", &big, 0).unwrap();
    v.setxattr(a, b"user.small", b"v", 0).unwrap();
    let inodes = v.statfs().inodes;
    let free = free_frames(&v);
    v.rename(ROOT_INO, b"a", ROOT_INO, b"b", 0).unwrap();
    assert_eq!(v.statfs().inodes, inodes - 1, "the target is reclaimed");
    assert_eq!(free_frames(&v), free, "no frame moves");
    assert!(v.getattr(b).is_err());
    for how in RELOADS {
        v = fx.reload(v, how);
        let ctx = format!("rename over, {how:?}");
        assert_eq!(v.lookup(ROOT_INO, b"b").unwrap().ino, a, "{ctx}");
        assert!(v.lookup(ROOT_INO, b"a").is_err(), "{ctx}");
        assert!(v.getattr(b).is_err(), "{ctx}");
        check(&v, a, &am, Layout::Inline, &ctx);
        assert_eq!(v.getxattr(a, b"user.big").unwrap(), big, "{ctx}");
        assert_eq!(v.getxattr(a, b"user.small").unwrap(), b"v", "{ctx}");
        assert_clean(&v, &ctx);
    }
    drop(v);
    fx.fsck_clean("rename over");
}

/// Every inline write is a log record carrying its bytes, so rewriting small files fills the
/// log much faster than overwriting frames in place: checkpoints must keep up, and the last
/// bytes of every file survive a crash.
#[test]
fn repeated_inline_writes_keep_checkpointing() {
    let fx = Fx::new();
    let mut v = fx.load();
    let files: Vec<u64> = (0..8)
        .map(|i| {
            v.create(ROOT, ROOT_INO, format!("f{i}").as_bytes(), 0o644, true)
                .unwrap()
                .ino
        })
        .collect();
    let mut models = vec![Vec::new(); files.len()];
    let log_bytes = v.journal().capacity_bytes();
    // Several times the log's size in records.
    let rounds = (3 * log_bytes / (MAX as u64 * files.len() as u64)) as usize + 1;
    for r in 0..rounds {
        for (k, &f) in files.iter().enumerate() {
            let data = pattern((r * files.len() + k) as u64, MAX - k);
            w(&v, f, &mut models[k], 0, &data);
        }
    }
    assert_eq!(spills(&v), 0);
    for how in [Reload::Never, Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        for (k, &f) in files.iter().enumerate() {
            check(&v, f, &models[k], Layout::Inline, &format!("f{k}, {how:?}"));
        }
    }
    drop(v);
    fx.fsck_clean("rewritten small files");
}

/// On a full pool an inline file still takes writes within the limit (they need no frame),
/// and a spill that finds no frame fails with ENOSPC leaving the file inline and unchanged.
#[test]
fn a_spill_on_a_full_pool_fails_cleanly() {
    let fx = Fx::new();
    let mut v = fx.load();
    let f = v.create(ROOT, ROOT_INO, b"small", 0o644, true).unwrap().ino;
    let mut m = Vec::new();
    w(&v, f, &mut m, 0, &pattern(110, 100));
    let filler = v
        .create(ROOT, ROOT_INO, b"filler", 0o644, true)
        .unwrap()
        .ino;
    let chunk = vec![0x5Au8; 1 << 20];
    let mut at = 0u64;
    loop {
        match v.write(ROOT, filler, at, &chunk) {
            Ok(n) => at += n as u64,
            Err(e) => {
                assert_eq!(errno(&e), libc::ENOSPC, "filling: {e:?}");
                break;
            }
        }
    }
    // Fill what is left frame by frame.
    while v.write(ROOT, filler, at, &chunk[..4096]).is_ok() {
        at += 4096;
    }
    w(&v, f, &mut m, 100, &pattern(111, 50));
    check(&v, f, &m, Layout::Inline, "an inline write on a full pool");
    let before = spills(&v);
    let e = v.write(ROOT, f, 0, &pattern(112, MAX + 1)).unwrap_err();
    assert_eq!(errno(&e), libc::ENOSPC, "{e:?}");
    let e = v
        .setattr(
            ROOT,
            f,
            SetAttr {
                size: Some(MAX as u64 + 1),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(errno(&e), libc::ENOSPC, "{e:?}");
    let e = v.fallocate(f, 0, 10, 0).unwrap_err();
    assert_eq!(errno(&e), libc::ENOSPC, "{e:?}");
    assert_eq!(spills(&v), before);
    check(&v, f, &m, Layout::Inline, "after the failed spills");
    assert_clean(&v, "full pool");
    // Deleting the filler makes room: the spill works.
    v.remove(ROOT_INO, b"filler", false).unwrap();
    w(&v, f, &mut m, 0, &pattern(113, MAX + 1));
    check(&v, f, &m, Layout::Frames(1), "spilled once there is room");
    for how in [Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        check(&v, f, &m, Layout::Frames(1), &format!("full pool, {how:?}"));
    }
    drop(v);
    fx.fsck_clean("full pool");
}

/// A format 1 pool upgraded to format 2 gets inline data too: its small files stay in the
/// frames they had, new ones are inline.
#[test]
fn a_format1_pool_upgrades_with_inline_data() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/format1-clean.pool.gz");
    let mut image = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&fixture).unwrap())
        .read_to_end(&mut image)
        .unwrap();
    std::fs::write(&path, &image).unwrap();
    match upgrade_pool(&path).unwrap() {
        Upgrade::Format1(done) => assert!(done.inodes > 0, "{done:?}"),
        other => panic!("expected a format 1 upgrade, got {other:?}"),
    }
    assert!(pool_inline_flag(&path), "the upgrade turns inline data on");
    let e = upgrade_pool(&path).unwrap_err();
    assert!(e.context.contains("nothing to upgrade"), "{}", e.context);
    let mut v = load(&path);
    let d1 = v.lookup(ROOT_INO, b"d1").unwrap().ino;
    let leaf = v.lookup(d1, b"leaf0").unwrap().ino;
    let mut leaf_m = read_all(&v, leaf);
    assert_eq!(leaf_m.len(), 100);
    check(&v, leaf, &leaf_m, Layout::Frames(1), "format 1 file");
    w(&v, leaf, &mut leaf_m, 5, b"abc");
    check(
        &v,
        leaf,
        &leaf_m,
        Layout::Frames(1),
        "format 1 file, written",
    );
    let new = v.create(ROOT, d1, b"new", 0o644, true).unwrap().ino;
    let mut new_m = Vec::new();
    w(&v, new, &mut new_m, 0, &pattern(120, 300));
    check(&v, new, &new_m, Layout::Inline, "new file");
    let reused = v.lookup(d1, b"leaf1").unwrap().ino;
    let mut reused_m = read_all(&v, reused);
    truncate(&v, reused, &mut reused_m, 0);
    w(&v, reused, &mut reused_m, 0, &pattern(121, 30));
    check(
        &v,
        reused,
        &reused_m,
        Layout::Inline,
        "format 1 file rewritten",
    );
    let fx = Fx { _dir: dir, path };
    for how in [Reload::Crash, Reload::Clean] {
        v = fx.reload(v, how);
        let files = [
            (leaf, &leaf_m, Layout::Frames(1)),
            (new, &new_m, Layout::Inline),
            (reused, &reused_m, Layout::Inline),
        ];
        for (ino, m, layout) in files {
            check(
                &v,
                ino,
                m,
                layout,
                &format!("upgraded format 1 pool, {how:?}"),
            );
        }
        assert_clean(&v, &format!("upgraded format 1 pool, {how:?}"));
    }
    drop(v);
    fx.fsck_clean("upgraded format 1 pool");
}
