//! Bad pools through the `pfnfs` command: `mount`, `stat`, `fsck -n` and `fsck -y` on files
//! that are not pools, a directory, a pool of a newer format version, a truncated pool, and
//! pools with bytes flipped at seeded random positions in each metadata region.
//!
//! Every command runs under a timeout (a hang fails the test) and an address-space limit
//! (`ulimit -v`, so a runaway allocation fails fast instead of eating the machine); a panic
//! message in any output fails the test. A command that refuses a pool must name the pool, and
//! the pool file must be byte-for-byte and mtime-for-mtime what it was (never a write to a
//! refused pool; `stat` and `fsck -n` never write at all).
//!
//! # Regions and what the format guarantees
//!
//! The pool (docs/DESIGN.md section 3) is built once with the `Volume` API: a metadata tree holding
//! directories, files, a symlink and an xattr, then a crash after a few more operations, so the
//! log holds records of the current generation; the last record creates `/last`. Its regions:
//!
//! | region | where | protected by |
//! |---|---|---|
//! | `superblock` | the 256 bytes of slot A and of slot B | a CRC per slot, two slots holding the same root |
//! | `log` | the records of the current generation | a CRC per record, seeded with the generation's nonce |
//! | `tree-root` | the root node of the metadata tree (format 2, DESIGN 3.4) | the node's CRC |
//! | `tree-nodes` | every other frame of the tree (nodes, overflow runs) | each node's CRC |
//!
//! The golden pool's tree has more than one level (enough names in one directory), so that
//! `tree-nodes` holds leaves read only when an inode or name in them is needed.
//!
//! *Raw* damage (bytes flipped, as a medium would) must be refused by `mount` and `stat` with a
//! message naming the pool, and found by `fsck -n` (exit 4, or 8 when no superblock slot is
//! usable), unless it hit bytes nothing reads or a copy that has a twin (one superblock slot:
//! the other names the same root): then the pool mounts and every file reads back exactly.
//! Since inodes are read from the tree when first needed, "refused" includes a mount whose
//! reads of the damaged metadata fail with EIO (never a wrong answer). In the log, the
//! damage is confined to one record: damage to the last record is indistinguishable from a
//! crash during its append (DESIGN 3.3), so that record's operation (`/last`) may be missing
//! and nothing else; damage to an earlier record is refused.
//!
//! *Forged* damage flips the same bytes and then recomputes every checksum over them, as a bug
//! writing wrong metadata would: the decoders behind the checksums must cope. Such a pool may
//! mount (the format cannot tell forged metadata from real), but no command may panic, hang or
//! run out of memory, and `fsck -y` must either repair it (exit 1, then `fsck -n` exits 0 and
//! the pool mounts) or report what it cannot repair (exit 4).
//!
//! `PFNFS_BAD_POOL_TRIALS` sets the trials per region and damage kind (default 25 raw and 25
//! forged per region);
//! `PFNFS_BAD_POOL_SEED` the first seed. Each test prints a tally (`--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pfnfs_alloc::superblock::Slot;
use pfnfs_alloc::{CreateOptions, FRAME_SIZE, OpenOptions, Pool};
use pfnfs_fs::inode::ROOT_INO;
use pfnfs_fs::journal::{LogId, RECORD_HEADER_BYTES};
use pfnfs_fs::volume::{Caller, Volume};
use pfnfs_tests::{Mode, MountGuard, pattern, pfnfs_bin, skip_without_fuse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROOT: Caller = Caller { uid: 0, gid: 0 };
/// The smallest pool mkfs accepts: 4 MiB of log, 10 MiB of data.
const POOL_BYTES: u64 = 16 << 20;
/// Address-space limit of every command (and daemon) run on a bad pool.
const LIMIT_BYTES: u64 = 1 << 30;
/// A command that takes longer than this on a 16 MiB pool is taken for hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Running the command

struct Run {
    code: Option<i32>,
    out: String,
}

/// Runs `pfnfs ARGS` limited to [`LIMIT_BYTES`] of address space; panics if it runs longer
/// than [`COMMAND_TIMEOUT`] (after killing it) or prints a panic.
fn pfnfs(dir: &Path, args: &[&str]) -> Run {
    let out_path = dir.join("command.out");
    let out = fs::File::create(&out_path).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -v \"$1\" && shift && exec \"$@\"", "sh"])
        .arg((LIMIT_BYTES / 1024).to_string())
        .arg(pfnfs_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run pfnfs");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > COMMAND_TIMEOUT {
            // Our own child, not yet reaped: the PID is still its.
            let _ = child.kill();
            let _ = child.wait();
            panic!("pfnfs {args:?} hung (killed after {COMMAND_TIMEOUT:?})");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        !out.contains("panicked") && status.code().is_some(),
        "pfnfs {args:?} crashed ({status}): {out}"
    );
    Run {
        code: status.code(),
        out,
    }
}

/// What a command could have changed: contents and modification time.
fn fingerprint(path: &Path) -> (Vec<u8>, i64, i64) {
    let m = fs::metadata(path).unwrap();
    let mut bytes = Vec::with_capacity(m.len() as usize);
    fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    (bytes, m.mtime(), m.mtime_nsec())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The golden pool

/// A file tree: relative path -> contents (`None` for a directory, the target for a symlink
/// is stored as `Some` with a `->` prefix).
type Tree = BTreeMap<String, Option<Vec<u8>>>;

struct Golden {
    image: Vec<u8>,
    tree: Tree,
    /// Name of the file the last log record creates.
    last_name: &'static str,
    regions: Vec<Region>,
    /// Log records of the current generation: (pool offset, payload length).
    records: Vec<(u64, u64)>,
    /// The current log generation and its nonce (record checksums are seeded with it).
    log: LogId,
    /// The slot holding the current superblock.
    current_slot: Slot,
}

struct Region {
    name: &'static str,
    /// Pool byte offsets that belong to it.
    spans: Vec<(u64, u64)>,
}

impl Region {
    fn len(&self) -> u64 {
        self.spans.iter().map(|(_, l)| l).sum()
    }

    /// The `i`-th byte of the region as a pool offset.
    fn at(&self, mut i: u64) -> u64 {
        for (start, len) in &self.spans {
            if i < *len {
                return start + i;
            }
            i -= len;
        }
        unreachable!("index past the region")
    }
}

fn golden() -> &'static Golden {
    static GOLDEN: OnceLock<Golden> = OnceLock::new();
    GOLDEN.get_or_init(build_golden)
}

fn build_golden() -> Golden {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("golden.pool");
    Pool::create(&path, POOL_BYTES, &CreateOptions::default()).unwrap();
    let mut tree = Tree::new();
    let open = || {
        Volume::load(Arc::new(
            Pool::open(&path, &OpenOptions::default()).unwrap(),
        ))
    };
    {
        let v = open().unwrap();
        let d = v.mkdir(ROOT, ROOT_INO, b"dir", 0o755).unwrap();
        tree.insert("dir".into(), None);
        let sub = v.mkdir(ROOT, d.ino, b"sub", 0o700).unwrap();
        tree.insert("dir/sub".into(), None);
        for (i, (parent, pname, name, len)) in [
            (ROOT_INO, "", "small", 100usize),
            (d.ino, "dir/", "three-frames", 3 * FRAME_SIZE as usize + 17),
            (sub.ino, "dir/sub/", "big", 600_000),
            (ROOT_INO, "", "empty", 0),
        ]
        .into_iter()
        .enumerate()
        {
            let f = v
                .create(ROOT, parent, name.as_bytes(), 0o644, true)
                .unwrap();
            let data = pattern(i as u64 + 1, len);
            if len > 0 {
                v.write(ROOT, f.ino, 0, &data).unwrap();
            }
            tree.insert(format!("{pname}{name}"), Some(data));
        }
        v.symlink(ROOT, ROOT_INO, b"link", b"dir/three-frames")
            .unwrap();
        tree.insert("link".into(), Some(b"->dir/three-frames".to_vec()));
        let small = v.lookup(ROOT_INO, b"small").unwrap();
        v.setxattr(small.ino, b"user.note", b"golden", 0).unwrap();
        // Enough names for a tree of two levels.
        let many = v.mkdir(ROOT, ROOT_INO, b"many", 0o755).unwrap();
        tree.insert("many".into(), None);
        for i in 0..200 {
            let name = format!("name-with-some-length-{i:04}");
            v.create(ROOT, many.ino, name.as_bytes(), 0o644, true)
                .unwrap();
            tree.insert(format!("many/{name}"), Some(Vec::new()));
        }
        v.shutdown().unwrap();
    }
    // Second life: a few records in the log, then a crash (the volume is dropped unshut).
    {
        let v = open().unwrap();
        let f = v.create(ROOT, ROOT_INO, b"logged", 0o600, true).unwrap();
        let data = pattern(7, 50_000);
        v.write(ROOT, f.ino, 0, &data).unwrap();
        tree.insert("logged".into(), Some(data.clone()));
        let d = v.lookup(ROOT_INO, b"dir").unwrap();
        v.rename(ROOT_INO, b"small", d.ino, b"moved", 0).unwrap();
        let small = tree.remove("small").unwrap();
        tree.insert("dir/moved".into(), small);
        v.create(ROOT, ROOT_INO, b"last", 0o644, true).unwrap();
        tree.insert("last".into(), Some(Vec::new()));
    }
    let image = fs::read(&path).unwrap();

    // Where everything is.
    let pool = Pool::open(
        &path,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let sb = pool.superblock();
    assert!(sb.mounted, "the golden pool is a crashed one");
    let (log_at, _) = pool.log_region();
    let log = LogId::new(sb.meta.log_generation, sb.meta.log_nonce);
    let (ops, end, _) = pfnfs_fs::journal::read_log(&pool, log).unwrap();
    assert_eq!(ops.len(), 4, "create + write + rename + create");
    let mut records = Vec::new();
    let mut off = 0u64;
    while off < end {
        let head = &image[(log_at + off) as usize..][..RECORD_HEADER_BYTES as usize];
        let len = u64::from(u32::from_le_bytes(head[4..8].try_into().unwrap()));
        records.push((log_at + off, len));
        off += (RECORD_HEADER_BYTES + len).next_multiple_of(8);
    }
    assert_eq!((records.len(), off), (4, end));

    let root = sb.meta.root_pfn;
    let btree =
        pfnfs_btree::Tree::open(&pool, pfnfs_alloc::Pfn(root), sb.meta.height as u8).unwrap();
    assert!(btree.height() >= 2, "the golden tree has two levels");
    let others: Vec<(u64, u64)> = btree
        .frames(&pool)
        .unwrap()
        .iter()
        .flat_map(|r| r.start.0..r.end().0)
        .filter(|pfn| *pfn != root)
        .map(|pfn| (pfn * FRAME_SIZE, FRAME_SIZE))
        .collect();
    let regions = vec![
        Region {
            name: "superblock",
            spans: vec![(0, 256), (FRAME_SIZE, 256)],
        },
        Region {
            name: "log",
            spans: vec![(log_at, end)],
        },
        Region {
            name: "tree-root",
            spans: vec![(root * FRAME_SIZE, FRAME_SIZE)],
        },
        Region {
            name: "tree-nodes",
            spans: others,
        },
    ];
    for r in &regions {
        assert!(r.len() > 0, "region {} is empty", r.name);
    }
    Golden {
        image,
        tree,
        last_name: "last",
        regions,
        records,
        log,
        current_slot: sb.slot(),
    }
}

// ---------------------------------------------------------------------------------------------
// Damage

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Bytes flipped, nothing else.
    Raw,
    /// Bytes flipped, then every checksum over them recomputed.
    Forged,
}

fn crc_at(image: &mut [u8], data: &[(u64, u64)], at: u64) {
    let mut crc = 0u32;
    for (o, l) in data {
        crc = crc32c::crc32c_append(crc, &image[*o as usize..(o + l) as usize]);
    }
    image[at as usize..at as usize + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes the checksums of everything `positions` touched.
fn forge(g: &Golden, image: &mut [u8], region: &str, positions: &[u64]) {
    match region {
        "superblock" => {
            for slot in [0u64, FRAME_SIZE] {
                if positions.iter().any(|p| (slot..slot + 256).contains(p)) {
                    crc_at(image, &[(slot, 252)], slot + 252);
                }
            }
        }
        "log" => {
            let seed = crc32c::crc32c(&g.log.nonce.unwrap().to_le_bytes());
            for &(at, len) in &g.records {
                if positions
                    .iter()
                    .any(|p| (at..at + RECORD_HEADER_BYTES + len).contains(p))
                {
                    let mut crc =
                        crc32c::crc32c_append(seed, &image[at as usize..at as usize + 24]);
                    let payload = (at + RECORD_HEADER_BYTES) as usize;
                    crc = crc32c::crc32c_append(crc, &image[payload..payload + len as usize]);
                    image[at as usize + 24..at as usize + 28].copy_from_slice(&crc.to_le_bytes());
                }
            }
        }
        _ => {
            // A tree node's checksum: CRC32C of the frame with its crc field (bytes 24..28)
            // zero. (An overflow run has no checksum of its own: its reference holds it.)
            let frames: BTreeSet<u64> = positions.iter().map(|p| p / FRAME_SIZE).collect();
            for pfn in frames {
                let at = (pfn * FRAME_SIZE) as usize;
                let frame = &mut image[at..at + FRAME_SIZE as usize];
                frame[24..28].fill(0);
                let crc = crc32c::crc32c(frame);
                frame[24..28].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
}

/// The golden image with 1 to 3 bytes of `region` changed (seeded), and the positions.
fn damaged(g: &Golden, region: &Region, kind: Kind, seed: u64) -> (Vec<u8>, Vec<u64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut image = g.image.clone();
    let mut positions = Vec::new();
    // In the log, damage one record: what the format promises to tell from a torn append.
    let record = g.records[rng.random_range(0..g.records.len())];
    for _ in 0..rng.random_range(1..=3) {
        let at = if region.name == "log" {
            record.0 + rng.random_range(0..RECORD_HEADER_BYTES + record.1)
        } else {
            region.at(rng.random_range(0..region.len()))
        };
        image[at as usize] ^= rng.random_range(1..=255u8);
        positions.push(at);
    }
    if kind == Kind::Forged {
        forge(g, &mut image, region.name, &positions);
    }
    (image, positions)
}

/// Writes `image` as a sparse file (only non-zero frames are written).
fn write_sparse(path: &Path, image: &[u8]) {
    let _ = fs::remove_file(path);
    let f = fs::File::create(path).unwrap();
    f.set_len(image.len() as u64).unwrap();
    for (i, frame) in image.chunks(FRAME_SIZE as usize).enumerate() {
        if frame.iter().any(|b| *b != 0) {
            f.write_all_at(frame, i as u64 * FRAME_SIZE).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a mounted tree back

/// The name under which [`read_tree`] records a directory whose listing failed part way.
const READDIR_FAILED: &str = "<readdir failed>";

/// The tree under `root`: every file's contents (`Err(errno)` if a read failed).
fn read_tree(root: &Path) -> BTreeMap<String, Result<Option<Vec<u8>>, i32>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = match fs::read_dir(root.join(&rel)) {
            Ok(e) => e,
            Err(e) => {
                out.insert(
                    rel.display().to_string(),
                    Err(e.raw_os_error().unwrap_or(0)),
                );
                continue;
            }
        };
        for e in entries {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    // A listing that failed part way: recorded, never skipped silently.
                    out.insert(
                        rel.join(READDIR_FAILED).display().to_string(),
                        Err(err.raw_os_error().unwrap_or(0)),
                    );
                    continue;
                }
            };
            let rel = rel.join(e.file_name());
            let key = rel.display().to_string();
            let meta = match fs::symlink_metadata(root.join(&rel)) {
                Ok(m) => m,
                Err(err) => {
                    out.insert(key, Err(err.raw_os_error().unwrap_or(0)));
                    continue;
                }
            };
            let value = if meta.is_dir() {
                stack.push(rel.clone());
                Ok(None)
            } else if meta.file_type().is_symlink() {
                fs::read_link(root.join(&rel))
                    .map(|t| {
                        let mut v = b"->".to_vec();
                        v.extend_from_slice(t.as_os_str().as_encoded_bytes());
                        Some(v)
                    })
                    .map_err(|e| e.raw_os_error().unwrap_or(0))
            } else if meta.is_file() {
                fs::read(root.join(&rel))
                    .map(Some)
                    .map_err(|e| e.raw_os_error().unwrap_or(0))
            } else {
                Ok(None)
            };
            out.insert(key, value);
        }
    }
    out
}

/// [`read_tree`] on another thread: a read that hangs in the daemon fails the test (the mount
/// guard then unmounts, which ends the daemon and so the stuck read).
fn read_tree_timed(root: &Path, what: &str) -> BTreeMap<String, Result<Option<Vec<u8>>, i32>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(read_tree(&root));
    });
    rx.recv_timeout(COMMAND_TIMEOUT)
        .unwrap_or_else(|_| panic!("{what}: reading the mounted tree hung"))
}

/// A tree read from a pool with raw damage: exactly the golden one (files may give EIO),
/// except that `/last` may be missing when the last log record was hit.
fn check_intact(
    g: &Golden,
    got: &BTreeMap<String, Result<Option<Vec<u8>>, i32>>,
    last_hit: bool,
    what: &str,
) {
    let mut want = g.tree.clone();
    if last_hit && !got.contains_key(g.last_name) {
        want.remove(g.last_name);
    }
    // A directory whose listing failed with EIO part way may miss names (those in the damaged
    // node), and nothing else.
    for (name, value) in got {
        if let Some(dir) = name.strip_suffix(READDIR_FAILED) {
            assert_eq!(*value, Err(libc::EIO), "{what}: {name}");
            want.retain(|n, _| !n.starts_with(dir) || n.len() == dir.len() || got.contains_key(n));
            want.insert(name.clone(), None);
        }
    }
    let names: Vec<&String> = got.keys().collect();
    assert_eq!(
        names,
        want.keys().collect::<Vec<_>>(),
        "{what}: raw damage changed the tree silently"
    );
    for (name, value) in got {
        if name.ends_with(READDIR_FAILED) {
            continue;
        }
        match value {
            Ok(v) => assert!(
                *v == want[name],
                "{what}: raw damage changed {name} silently (read {} bytes)",
                v.as_ref().map_or(0, |v| v.len())
            ),
            Err(e) => assert_eq!(*e, libc::EIO, "{what}: {name}: errno {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One trial

#[derive(Debug, Default)]
struct Tally {
    trials: u64,
    /// mount refused the damaged pool.
    refused: u64,
    /// mount took it, and (raw damage) every file read back exactly.
    mounted: u64,
    /// fsck -y repaired it (exit 1), after which fsck -n was clean and it mounted.
    repaired: u64,
    /// fsck -y reported problems it cannot repair (exit 4).
    uncorrectable: u64,
    /// fsck -n found nothing (exit 0).
    clean: u64,
}

/// Runs every command on one damaged pool and checks each answer.
fn trial(dir: &Path, g: &Golden, region: &Region, kind: Kind, seed: u64, tally: &mut Tally) {
    let (image, positions) = damaged(g, region, kind, seed);
    let what = format!("{} {kind:?} seed {seed} at {positions:?}", region.name);
    let pool = dir.join("bad.pool");
    write_sparse(&pool, &image);
    let p = s(&pool);
    tally.trials += 1;
    let last = g.records.last().unwrap();
    let last_hit = positions
        .iter()
        .any(|x| (last.0..last.0 + RECORD_HEADER_BYTES + last.1).contains(x));

    // Read-only commands: never a write.
    let before = fingerprint(&pool);
    let stat = pfnfs(dir, &["stat", p]);
    assert!(
        stat.code == Some(0) || stat.code == Some(1),
        "{what}: stat: {:?} {}",
        stat.code,
        stat.out
    );
    if stat.code == Some(1) {
        assert!(
            stat.out.contains(p),
            "{what}: stat names the pool: {}",
            stat.out
        );
    }
    let check = pfnfs(dir, &["fsck", "-n", p]);
    assert!(
        matches!(check.code, Some(0 | 4 | 8)),
        "{what}: fsck -n: {:?} {}",
        check.code,
        check.out
    );
    assert!(check.out.contains(p), "{what}: fsck -n names the pool");
    assert!(
        fingerprint(&pool) == before,
        "{what}: stat or fsck -n wrote to the pool"
    );
    if check.code == Some(0) {
        tally.clean += 1;
    }

    // mount: refuses without writing, or mounts.
    match MountGuard::try_existing(&pool, Mode::Direct, Some(LIMIT_BYTES)) {
        Err(f) => {
            assert!(!f.timed_out && f.code == Some(1), "{what}: mount: {f:?}");
            assert!(
                f.output.contains(p) && !f.output.contains("panicked"),
                "{what}: mount's message names the pool: {}",
                f.output
            );
            assert!(
                fingerprint(&pool) == before,
                "{what}: a refused mount wrote to the pool: {}",
                f.output
            );
            assert!(
                check.code != Some(0),
                "{what}: fsck -n finds nothing but mount refuses: {}",
                f.output
            );
            tally.refused += 1;
        }
        Ok(mut m) => {
            let got = read_tree_timed(m.path(), &what);
            if kind == Kind::Raw {
                // Only bytes nothing reads (the slot that is not current, a record header's
                // zero word and padding, the header frame past its ranges) or the last log
                // record (a torn append) were hit: nothing else may differ.
                check_intact(g, &got, last_hit, &what);
            }
            if let Err(e) = m.unmount() {
                panic!("{what}: unmount after a mount: {e}");
            }
            // Metadata is read when first needed: damage found then is refused with EIO.
            let refused_on_read = got.values().any(|v| v.is_err());
            if refused_on_read {
                assert!(
                    check.code != Some(0),
                    "{what}: fsck -n finds nothing but reads fail: {got:?}"
                );
                tally.refused += 1;
            } else {
                tally.mounted += 1;
            }
            if kind == Kind::Raw && !refused_on_read {
                if region.name.starts_with("tree") {
                    // Every byte of the tree is under a node's crc: damage in a node this
                    // walk did not read (an xattr's, say) is still found by fsck.
                    assert_eq!(check.code, Some(4), "{what}: fsck -n: {}", check.out);
                } else {
                    // The damage was in bytes nothing reads: the pool is sound.
                    let again = pfnfs(dir, &["fsck", "-n", p]);
                    assert_eq!(again.code, Some(0), "{what}: after mount: {}", again.out);
                    return;
                }
            }
        }
    }
    if kind == Kind::Raw {
        assert!(
            check.code != Some(0),
            "{what}: fsck -n found nothing in raw damage mount refused"
        );
    }

    // fsck -y: repairs, or says what it cannot repair.
    let repair = pfnfs(dir, &["fsck", "-y", p]);
    match repair.code {
        Some(0 | 1) => {
            let again = pfnfs(dir, &["fsck", "-n", p]);
            assert_eq!(
                again.code,
                Some(0),
                "{what}: fsck -n after fsck -y: {}\nfsck -y said: {}",
                again.out,
                repair.out
            );
            let mut m = MountGuard::try_existing(&pool, Mode::Direct, Some(LIMIT_BYTES))
                .unwrap_or_else(|f| panic!("{what}: mount after fsck -y: {f:?}"));
            let got = read_tree_timed(m.path(), &what);
            assert!(
                got.values().all(|v| v.is_ok()),
                "{what}: reads fail after repair: {got:?}"
            );
            m.unmount()
                .unwrap_or_else(|e| panic!("{what}: unmount after repair: {e}"));
            if repair.code == Some(1) {
                tally.repaired += 1;
            }
        }
        Some(4 | 8) => {
            assert!(repair.out.contains(p), "{what}: fsck -y names the pool");
            tally.uncorrectable += 1;
        }
        other => panic!("{what}: fsck -y exit {other:?}: {}", repair.out),
    }
}

fn trials() -> u64 {
    std::env::var("PFNFS_BAD_POOL_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25)
}

fn first_seed() -> u64 {
    std::env::var("PFNFS_BAD_POOL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn damage_region(name: &str, kinds: &[Kind]) {
    if skip_without_fuse() {
        return;
    }
    let g = golden();
    let region = g.regions.iter().find(|r| r.name == name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for &kind in kinds {
        let mut tally = Tally::default();
        let start = Instant::now();
        // The same number of trials per region: a region with one kind runs it twice as often.
        for i in 0..trials() * 2 / kinds.len() as u64 {
            let seed = first_seed() + i;
            trial(dir.path(), g, region, kind, seed, &mut tally);
        }
        eprintln!(
            "bad pools: {name} {kind:?}: {tally:?} in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        assert_eq!(
            tally.trials,
            tally.refused + tally.mounted,
            "every damaged pool was refused or mounted"
        );
    }
}

#[test]
fn damaged_superblock() {
    damage_region("superblock", &[Kind::Raw, Kind::Forged]);
}

#[test]
fn damaged_log() {
    damage_region("log", &[Kind::Raw, Kind::Forged]);
}

#[test]
fn damaged_tree_root() {
    damage_region("tree-root", &[Kind::Raw, Kind::Forged]);
}

#[test]
fn damaged_tree_nodes() {
    damage_region("tree-nodes", &[Kind::Raw, Kind::Forged]);
}

// ---------------------------------------------------------------------------------------------
// Things that are not (usable) pools

/// Every command refuses `path` with a message naming it and containing `why`, and nothing
/// writes to it.
fn refused_by_all(dir: &Path, path: &Path, why: &str) {
    let p = s(path);
    let before = fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| fingerprint(path));
    for (args, code) in [
        (vec!["stat", p], 1),
        (vec!["fsck", "-n", p], 8),
        (vec!["fsck", "-y", p], 8),
    ] {
        let r = pfnfs(dir, &args);
        assert_eq!(r.code, Some(code), "pfnfs {args:?}: {}", r.out);
        assert!(
            r.out.contains(p) && r.out.contains(why),
            "pfnfs {args:?}: message names {p} and says {why:?}: {}",
            r.out
        );
    }
    match MountGuard::try_existing(path, Mode::Direct, Some(LIMIT_BYTES)) {
        Ok(_) => panic!("{p} mounted"),
        Err(f) => {
            assert!(!f.timed_out && f.code == Some(1), "mount {p}: {f:?}");
            assert!(
                f.output.contains(p) && f.output.contains(why),
                "mount {p}: message names it and says {why:?}: {}",
                f.output
            );
        }
    }
    if let Some(before) = before {
        assert!(fingerprint(path) == before, "{p} was written to");
    }
}

#[test]
fn not_a_pool() {
    if skip_without_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Random bytes, the size of a pool.
    let random = d.join("random");
    fs::write(&random, pattern(3, POOL_BYTES as usize)).unwrap();
    refused_by_all(d, &random, "not a pfnfs pool");
    // A text file.
    let text = d.join("notes.txt");
    fs::write(&text, "these are not the frames you are looking for\n").unwrap();
    refused_by_all(d, &text, "not a pfnfs pool");
    // A directory.
    let sub = d.join("a-directory");
    fs::create_dir(&sub).unwrap();
    refused_by_all(d, &sub, "directory");
}

#[test]
fn newer_format_version() {
    if skip_without_fuse() {
        return;
    }
    let g = golden();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("newer.pool");
    let mut image = g.image.clone();
    // Both slots claim version 3, with valid checksums (as a newer pfnfs would write them).
    for slot in [0u64, FRAME_SIZE] {
        image[slot as usize + 8..slot as usize + 12].copy_from_slice(&3u32.to_le_bytes());
        crc_at(&mut image, &[(slot, 252)], slot + 252);
    }
    write_sparse(&pool, &image);
    refused_by_all(dir.path(), &pool, "format version 3");
    // One slot is enough to refuse: the other may describe a stale state.
    let mut image = g.image.clone();
    let slot = g.current_slot.other().offset();
    image[slot as usize + 8..slot as usize + 12].copy_from_slice(&7u32.to_le_bytes());
    write_sparse(&pool, &image);
    refused_by_all(dir.path(), &pool, "format version 7");
}

/// A format 1 pool (its superblock in both slots): `mount` and `stat` refuse it naming its
/// version and the command that converts it, and write nothing.
#[test]
fn format1_pool_names_the_upgrade() {
    if skip_without_fuse() {
        return;
    }
    let g = golden();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("old.pool");
    let p = s(&pool);
    let mut image = g.image.clone();
    let current = {
        write_sparse(&pool, &image);
        let opened = Pool::open(
            &pool,
            &OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        opened.superblock()
    };
    let mut common = current.clone();
    common.version = 1;
    common.meta = pfnfs_alloc::MetaRoot::EMPTY;
    common.mounted = false;
    for (slot, seq) in [(0u64, 2u64), (FRAME_SIZE, 1)] {
        let v1 = pfnfs_alloc::superblock::SuperblockV1 {
            common: pfnfs_alloc::Superblock {
                seq,
                ..common.clone()
            },
            checkpoint: pfnfs_alloc::CheckpointRefV1 {
                head_pfn: 0,
                len_bytes: 0,
                crc: 0,
                log_generation: 0,
            },
        };
        image[slot as usize..slot as usize + 256].copy_from_slice(&v1.encode());
    }
    write_sparse(&pool, &image);
    let before = fingerprint(&pool);
    let stat = pfnfs(dir.path(), &["stat", p]);
    assert_eq!(stat.code, Some(1), "stat: {}", stat.out);
    let upgrade = format!("pfnfs upgrade {p}");
    assert!(
        stat.out.contains("format 1") && stat.out.contains(&upgrade),
        "stat names version 1 and the upgrade: {}",
        stat.out
    );
    match MountGuard::try_existing(&pool, Mode::Direct, Some(LIMIT_BYTES)) {
        Ok(_) => panic!("a format 1 pool mounted"),
        Err(f) => {
            assert!(!f.timed_out && f.code == Some(1), "mount: {f:?}");
            assert!(
                f.output.contains("format 1") && f.output.contains(&upgrade),
                "mount names version 1 and the upgrade: {}",
                f.output
            );
        }
    }
    assert!(
        fingerprint(&pool) == before,
        "a format 1 pool was written to"
    );
}

#[test]
fn truncated_pool() {
    if skip_without_fuse() {
        return;
    }
    let g = golden();
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("short.pool");
    for keep in [POOL_BYTES / 2, POOL_BYTES - FRAME_SIZE, 2 * FRAME_SIZE, 100] {
        write_sparse(&pool, &g.image[..keep as usize]);
        refused_by_all(dir.path(), &pool, "truncated");
    }
    // The golden pool itself is fine: every command accepts it.
    write_sparse(&pool, &g.image);
    let out = pfnfs(dir.path(), &["fsck", "-n", s(&pool)]);
    assert_eq!(out.code, Some(0), "{}", out.out);
    let out = pfnfs(dir.path(), &["stat", s(&pool)]);
    assert_eq!(out.code, Some(0), "{}", out.out);
    let mut m = MountGuard::try_existing(&pool, Mode::Direct, Some(LIMIT_BYTES)).unwrap();
    check_intact(
        g,
        &read_tree_timed(m.path(), "the golden pool"),
        false,
        "the golden pool",
    );
    m.unmount().unwrap();
}
