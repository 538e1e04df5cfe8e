//! Crash safety of the format 1 -> 2 upgrade ([`Volume::upgrade`], docs/DESIGN.md 3.2.1), on
//! the pools the last format 1 build made (`tests/fixtures/README.md`).
//!
//! Each fixture's bytes are loaded into a [`CrashSimBackend`] and upgraded once to count the
//! upgrade's persist points; then the upgrade is re-run crashing before each of them (and
//! after the last), clean and torn with several seeds. The durable image must be one of:
//!
//! - the untouched format 1 pool: `Pool::open` refuses it with `OldFormat`, the format 1
//!   superblock still names the same checkpoint, and an upgrade of it now succeeds and gives
//!   the full content;
//! - a complete format 2 pool: `Volume::load` succeeds, `fsck::check_volume` is clean, the
//!   data region is covered exactly once (free set, tree, file extents) and the content equals
//!   the fixture's manifest.
//!
//! Clean crashes must go from the first to the second exactly once, at the first superblock
//! write. Every point is crashed clean; torn crashes (three seeds) hit the two superblock
//! writes and the return, and about ten of the tree's persist points with one seed each;
//! `PFNFS_CRASH_POINTS=all` tears every point with every seed (about 3 minutes in a debug
//! build: the crashed fixture's upgrade has 34 persist points, one per run of tree frames).
//!
//! A failed persist ([`FaultyBackend`]) during the upgrade returns an error and leaves a pool
//! (durable or as the process sees it) that is one of the two, and upgrades on retry.

#[path = "../../tests/fixtures/manifest.rs"]
mod manifest;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use manifest::{Entry, inode_count, sha256_hex, show};
use pfnfs_alloc::{
    CrashMode, CrashSimBackend, Fault, FaultyBackend, MemBackend, OpenOptions, PfnRange, Pool,
    PoolBackend, PoolError,
};
use pfnfs_fs::inode::{Kind, ROOT_INO};
use pfnfs_fs::volume::{SeekWhence, Volume};

const FIXTURES: [&str; 2] = ["format1-clean", "format1-crashed"];
/// Seeds of the torn crashes at each point.
const TORN_SEEDS: [u64; 3] = [1, 0x5eed, 0xdead_beef];

struct Fixture {
    name: &'static str,
    image: Vec<u8>,
    entries: BTreeMap<Vec<u8>, Entry>,
    /// File contents already found to match the manifest's SHA-256, by path: later checks
    /// compare bytes (SHA-256 of every file in a debug build would dominate the suite).
    verified: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

fn fixture(name: &'static str) -> Fixture {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    Fixture {
        name,
        image: manifest::gunzip(&dir.join(format!("{name}.pool.gz"))),
        entries: manifest::parse(
            &std::fs::read_to_string(dir.join(format!("{name}.manifest"))).unwrap(),
        ),
        verified: Mutex::new(BTreeMap::new()),
    }
}

fn format1_options() -> OpenOptions {
    OpenOptions {
        format1: true,
        ..OpenOptions::default()
    }
}

/// What a durable image turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Format1,
    Format2,
}

/// Checks `image` (see the module docs) and says which it was. `what` names the case.
fn check_image(fx: &Fixture, image: &[u8], what: &str) -> Found {
    let mem = Arc::new(MemBackend::from_bytes(image));
    match Pool::open_backend(what, Box::new(mem.clone()), false) {
        Err(PoolError::OldFormat { version: 1, .. }) => {
            let pool = Pool::open_backend_with(what, Box::new(mem.clone()), &format1_options())
                .unwrap_or_else(|e| panic!("{what}: format 1 open: {e}"));
            let original = Pool::open_backend_with(
                "original",
                Box::new(MemBackend::from_bytes(&fx.image)),
                &format1_options(),
            )
            .unwrap();
            assert_eq!(
                pool.format1_checkpoint(),
                original.format1_checkpoint(),
                "{what}: the format 1 superblock changed"
            );
            let done = Volume::upgrade(Arc::new(pool))
                .unwrap_or_else(|e| panic!("{what}: upgrade of the format 1 pool left: {e}"));
            assert_eq!(done.inodes, inode_count(&fx.entries), "{what}: {done:?}");
            let pool = Pool::open_backend(what, Box::new(mem), false)
                .unwrap_or_else(|e| panic!("{what}: open after the retried upgrade: {e}"));
            check_format2(fx, pool, &format!("{what}, upgraded again"));
            Found::Format1
        }
        Ok(pool) => {
            check_format2(fx, pool, what);
            Found::Format2
        }
        Err(e) => panic!("{what}: neither format 1 nor format 2: {e}"),
    }
}

/// Loads a format 2 pool and checks it: fsck, allocator, exact cover, content.
fn check_format2(fx: &Fixture, pool: Pool, what: &str) {
    assert_eq!(pool.version(), 2, "{what}");
    let meta = pool.superblock().meta;
    let vol = Volume::load(Arc::new(pool)).unwrap_or_else(|e| panic!("{what}: load: {e}"));
    let report = pfnfs_fs::fsck::check_volume(&vol);
    assert!(
        report.problems.is_empty(),
        "{what}: fsck: {:?}",
        report.problems
    );
    vol.allocator()
        .check_consistency()
        .unwrap_or_else(|e| panic!("{what}: allocator: {e}"));
    let tree: Vec<PfnRange> = vol.tree_frames().unwrap();
    assert_eq!(
        meta.tree_frames,
        tree.iter().map(|r| r.len).sum::<u64>(),
        "{what}: the superblock's tree_frames against the tree's frames"
    );
    let mut all: Vec<PfnRange> = vol.allocator().free_extents();
    all.extend(tree);
    all.extend(vol.frames_in_doubt());
    for cell in vol.all_cells().unwrap() {
        if let Some(map) = cell.inode.read().file_map() {
            all.extend(map.iter().map(|e| e.pfns));
        }
    }
    all.sort_by_key(|r| r.start);
    let data = vol.pool().data_region();
    let mut cursor = data.start;
    for r in all {
        assert_eq!(
            r.start, cursor,
            "{what}: data frames not covered exactly at {cursor}"
        );
        cursor = r.end();
    }
    assert_eq!(cursor, data.end(), "{what}: data frames leaked at the end");
    let diffs = compare(&vol, fx);
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

/// Every path of the volume, with its inode number.
fn walk(vol: &Volume) -> BTreeMap<Vec<u8>, u64> {
    let mut out = BTreeMap::new();
    out.insert(b".".to_vec(), ROOT_INO);
    let mut stack = vec![(Vec::new(), ROOT_INO)];
    while let Some((prefix, dir)) = stack.pop() {
        let mut children = Vec::new();
        vol.readdir(dir, 0, |ino, _, kind, name| {
            if name != b"." && name != b".." {
                children.push((name.to_vec(), ino, kind));
            }
            false
        })
        .unwrap();
        for (name, ino, kind) in children {
            let mut path = prefix.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            if kind == Kind::Dir {
                stack.push((path.clone(), ino));
            }
            out.insert(path, ino);
        }
    }
    out
}

fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "char",
        libc::S_IFBLK => "block",
        _ => "socket",
    }
}

/// Differences between the volume and the manifest. Attributes (atime included) are taken
/// before anything is read.
fn compare(vol: &Volume, fx: &Fixture) -> Vec<String> {
    let entries = &fx.entries;
    let mut verified = fx.verified.lock().unwrap();
    let mut diffs = Vec::new();
    let mut field = |path: &[u8], name: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!(
                "{}: {name}: format 1 had {want}, now {got}",
                show(path)
            ));
        }
    };
    let paths = walk(vol);
    for path in paths.keys() {
        if !entries.contains_key(path) {
            field(path, "presence", "nothing".into(), "an entry".into());
        }
    }
    let mut present = Vec::new();
    for (path, e) in entries {
        let Some(&ino) = paths.get(path) else {
            field(path, "presence", "the entry".into(), "nothing".into());
            continue;
        };
        present.push((path, e, ino));
        let a = vol.getattr(ino).unwrap();
        let time = |t: pfnfs_fs::inode::Time| (t.secs, t.nsecs);
        field(path, "ino", e.ino.to_string(), ino.to_string());
        field(path, "kind", e.kind.clone(), kind_name(a.mode).into());
        field(
            path,
            "mode",
            format!("{:o}", e.mode),
            format!("{:o}", a.mode),
        );
        field(
            path,
            "owner",
            format!("{}:{}", e.uid, e.gid),
            format!("{}:{}", a.uid, a.gid),
        );
        field(path, "nlink", e.nlink.to_string(), a.nlink.to_string());
        field(
            path,
            "atime",
            format!("{:?}", e.atime),
            format!("{:?}", time(a.atime)),
        );
        field(
            path,
            "mtime",
            format!("{:?}", e.mtime),
            format!("{:?}", time(a.mtime)),
        );
        field(
            path,
            "ctime",
            format!("{:?}", e.ctime),
            format!("{:?}", time(a.ctime)),
        );
        if let Some(size) = e.size {
            field(path, "size", size.to_string(), a.size.to_string());
        }
        if let Some((major, minor)) = e.rdev {
            // The kernel's new_encode_dev, which FUSE hands the daemon.
            let dev = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
            field(path, "rdev", dev.to_string(), a.rdev.to_string());
        }
    }
    for (path, e, ino) in present {
        if let Some(target) = &e.target {
            field(
                path,
                "target",
                show(target),
                show(&vol.readlink(ino).unwrap()),
            );
        }
        let names = vol.listxattr(ino).unwrap();
        let got: BTreeMap<Vec<u8>, (usize, String)> = names
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| {
                let v = vol.getxattr(ino, n).unwrap();
                (n.to_vec(), (v.len(), sha256_hex(&v)))
            })
            .collect();
        field(
            path,
            "xattrs",
            format!("{:?}", e.xattrs),
            format!("{got:?}"),
        );
        if let (Some(sha), Some(size)) = (&e.sha256, e.size) {
            let mut data = Vec::with_capacity(size as usize);
            while (data.len() as u64) < size {
                let chunk = vol
                    .read(ino, data.len() as u64, 1 << 20, |b| b.to_vec())
                    .unwrap();
                assert!(!chunk.is_empty(), "{}: short read", show(path));
                data.extend_from_slice(&chunk);
            }
            match verified.get(path.as_slice()) {
                Some(known) if *known == data => {}
                Some(_) => field(path, "contents", sha.clone(), "other bytes".into()),
                None => {
                    let got = sha256_hex(&data);
                    if got == *sha {
                        verified.insert(path.clone(), data);
                    }
                    field(path, "contents (sha256)", sha.clone(), got);
                }
            }
        }
        if let (Some(want), Some(size)) = (&e.data, e.size) {
            let mut segs = Vec::new();
            let mut offset = 0;
            while offset < size {
                let Ok(start) = vol.seek(ino, offset, SeekWhence::Data) else {
                    break;
                };
                let end = vol.seek(ino, start, SeekWhence::Hole).unwrap();
                segs.push((start, end));
                offset = end;
            }
            field(
                path,
                "data segments",
                format!("{want:?}"),
                format!("{segs:?}"),
            );
        }
    }
    diffs
}

/// A format 1 pool of the fixture on a fresh crash simulator.
fn sim_pool(fx: &Fixture) -> (Arc<CrashSimBackend>, Pool) {
    let sim = Arc::new(CrashSimBackend::from_image(&fx.image));
    let pool = Pool::open_backend_with(fx.name, Box::new(sim.clone()), &format1_options())
        .unwrap_or_else(|e| panic!("{}: format 1 open: {e}", fx.name));
    (sim, pool)
}

#[test]
fn the_fixtures_are_format1_pools_that_upgrade_to_their_manifests() {
    for name in FIXTURES {
        let fx = fixture(name);
        let mem = Box::new(MemBackend::from_bytes(&fx.image));
        match Pool::open_backend(name, mem, true) {
            Err(PoolError::OldFormat { version: 1, .. }) => {}
            other => panic!("{name}: expected OldFormat, got {other:?}"),
        }
        let (sim, pool) = sim_pool(&fx);
        assert_eq!(pool.version(), 1);
        let done = Volume::upgrade(Arc::new(pool)).unwrap();
        assert_eq!(done.inodes, inode_count(&fx.entries), "{name}: {done:?}");
        assert_eq!(
            done.records > 0,
            name == "format1-crashed",
            "{name}: records replayed: {done:?}"
        );
        assert!(done.freed_frames > 0, "{name}: {done:?}");
        assert_eq!(
            check_image(&fx, &sim.crash_image(), name),
            Found::Format2,
            "{name}: the upgrade is not durable when it returns"
        );
        // A format 2 pool is not upgraded again.
        let again = Pool::open_backend_with(
            name,
            Box::new(MemBackend::from_bytes(&sim.crash_image())),
            &format1_options(),
        )
        .unwrap();
        assert_eq!(again.format1_checkpoint(), None);
        assert!(Volume::upgrade(Arc::new(again)).is_err());
    }
}

#[test]
fn a_crash_at_any_persist_point_of_the_upgrade_leaves_format1_or_a_complete_format2() {
    for name in FIXTURES {
        let fx = fixture(name);
        let (sim, pool) = sim_pool(&fx);
        let before = sim.persist_points();
        Volume::upgrade(Arc::new(pool)).unwrap();
        let points = sim.persist_points() - before;
        assert!(points >= 3, "{name}: only {points} persist points");
        let all = std::env::var("PFNFS_CRASH_POINTS").is_ok_and(|v| v == "all");
        // Torn crashes: with PFNFS_CRASH_POINTS=all every point with every seed; otherwise
        // the two superblock writes and the return with every seed, and about ten points of
        // the tree's writes, evenly spread, with one seed each.
        let step = (points / 10).max(1);
        let torn_seeds = |k: u64| -> Vec<u64> {
            if all || k + 1 >= points {
                TORN_SEEDS.to_vec()
            } else if k.is_multiple_of(step) {
                vec![TORN_SEEDS[(k / step) as usize % TORN_SEEDS.len()]]
            } else {
                Vec::new()
            }
        };
        let mut clean = Vec::new();
        let mut checked = 0;
        for k in 1..=points + 1 {
            let modes =
                std::iter::once(CrashMode::Clean).chain(torn_seeds(k).into_iter().map(|s| {
                    CrashMode::Torn {
                        seed: s ^ (k << 32),
                    }
                }));
            for mode in modes {
                checked += 1;
                let (sim, pool) = sim_pool(&fx);
                sim.arm_crash(before + k, mode);
                // Past the crash the live image goes on; whatever the call says, only the
                // durable image counts.
                let _ = Volume::upgrade(Arc::new(pool));
                let what = format!("{name}: crash before persist point {k} of {points}, {mode}");
                let found = check_image(&fx, &sim.crash_image(), &what);
                if mode == CrashMode::Clean {
                    clean.push(found);
                }
            }
        }
        // Format 1 up to the commit point, format 2 from it on, and the last point is it.
        let first2 = clean
            .iter()
            .position(|f| *f == Found::Format2)
            .unwrap_or_else(|| panic!("{name}: no crash left format 2: {clean:?}"));
        assert!(first2 > 0, "{name}: format 2 before any persist point");
        assert!(
            clean[first2..].iter().all(|f| *f == Found::Format2),
            "{name}: {clean:?}"
        );
        assert_eq!(
            first2,
            clean.len() - 2,
            "{name}: the commit point is not the last-but-one persist point: {clean:?}"
        );
        eprintln!("{name}: {points} persist points, {checked} crashes checked, clean: {clean:?}");
    }
}

#[test]
fn a_failed_persist_during_the_upgrade_is_an_error_and_the_pool_upgrades_on_retry() {
    for name in FIXTURES {
        let fx = fixture(name);
        // Which slot holds the format 1 superblock: the upgrade writes the other first.
        let current_slot = {
            let (_, pool) = sim_pool(&fx);
            let seq = pool.superblock().seq;
            if seq % 2 == 0 { 0..4096 } else { 4096..8192 }
        };
        let other_slot = if current_slot.start == 0 {
            4096..8192
        } else {
            0..4096
        };
        let data = {
            let (_, pool) = sim_pool(&fx);
            let d = pool.data_region();
            d.start.byte_offset()..d.end().byte_offset()
        };
        let faults = [
            ("the tree's fence", None, Some(Found::Format1)),
            ("a persist of tree frames", Some(data), Some(Found::Format1)),
            ("the first superblock write", Some(other_slot), None),
            (
                "the second superblock write",
                Some(current_slot),
                Some(Found::Format2),
            ),
        ];
        for (which, range, expect) in faults {
            for reached in [false, true] {
                let sim = Arc::new(CrashSimBackend::from_image(&fx.image));
                let faulty = Arc::new(FaultyBackend::new(sim.clone()));
                let pool =
                    Pool::open_backend_with(name, Box::new(faulty.clone()), &format1_options())
                        .unwrap();
                faulty.arm(Fault {
                    errno: libc::EIO,
                    range: range.clone(),
                    count: 1,
                    reached,
                });
                let what = format!("{name}: {which} fails (reached: {reached})");
                let result = Volume::upgrade(Arc::new(pool));
                assert_eq!(faulty.injected(), 1, "{what}: the fault did not fire");
                let err = result.expect_err(&what);
                // A failed fence inside the tree's write comes back as `Corrupt` naming the
                // I/O error (the btree's error conversion), the superblock's as the errno.
                assert!(
                    err.kind == pfnfs_fs::error::ErrorKind::Os(libc::EIO)
                        || err.to_string().contains("Input/output error"),
                    "{what}: {err}"
                );
                faulty.disarm();
                let durable = check_image(&fx, &sim.crash_image(), &format!("{what}, durable"));
                let live = check_image(&fx, &sim.live_image(), &format!("{what}, live"));
                if let Some(expect) = expect {
                    assert_eq!(durable, expect, "{what}");
                    assert_eq!(live, expect, "{what}");
                } else {
                    let want = if reached {
                        Found::Format2
                    } else {
                        Found::Format1
                    };
                    assert_eq!(durable, want, "{what}");
                }
            }
        }
    }
}

/// The fixtures' images must fit the crash simulator's word model: a sanity check that the
/// backend sees every byte of the image.
#[test]
fn the_crash_simulator_holds_the_fixture_as_given() {
    let fx = fixture("format1-clean");
    let sim = CrashSimBackend::from_image(&fx.image);
    assert_eq!(sim.len_bytes(), fx.image.len() as u64);
    assert!(sim.crash_image() == fx.image);
}
