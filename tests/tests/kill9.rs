//! kill -9 of the daemon at random moments, in both modes.
//!
//! Each round: writer threads run a workload in the mount (create, append, overwrite,
//! truncate, rename, unlink; every operation followed by fsync of the file and, for
//! namespace changes, of the directory), the daemon is SIGKILLed by PID after a seeded random
//! delay, the dead mount is cleaned up, `pfnfs fsck -n` must find the crashed pool consistent,
//! the pool is mounted again and every file is compared with the model of what was fsync'd:
//! files untouched by the operation in flight at the kill must be exactly as fsync'd; the
//! one in flight may show its old state, its new state or (for data) a mix of the two. The
//! next round continues from what is on the pool. After the last round the pool is unmounted
//! cleanly and checked again.
//!
//! Also here: the `pfnfs fsck` command itself on real pools (exit codes 0, 1, 4 and 8 for
//! clean, repaired, left uncorrected and operational errors; a mounted pool refused for
//! repair but checked with -n), since the kill tests are what run it on crashed pools.
//!
//! `PFNFS_KILL9_SEED` and `PFNFS_KILL9_ROUNDS` override the seed and the number of rounds.
//! The daemon killed is the `pfnfs mount --foreground` child the [`MountGuard`] started: the
//! process holding the test's own pool whose parent is this process.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pfnfs_tests::{
    Mode, MountGuard, holders, is_mounted, pattern, pfnfs_bin, skip_without_fuse, sys,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_ROUNDS: u64 = 12;
const WRITERS: usize = 2;
/// Size range of the xattr values the churn thread sets: large values fill the metadata log
/// fast, so that checkpoints run all the time and some kills land inside one.
const CHURN_VALUE_BYTES: std::ops::Range<usize> = 48 << 10..64 << 10;
/// Files a writer keeps at most, and their largest size: the pool is 256 MiB.
const FILES_MAX: usize = 8;
const FILE_BYTES_MAX: usize = 2 << 20;

#[test]
fn kill9_direct() {
    kill9_rounds(Mode::Direct, 0x6b69_6c6c_0001, false);
}

#[test]
fn kill9_buffered() {
    kill9_rounds(Mode::Buffered, 0x6b69_6c6c_0002, false);
}

/// The same with shrinking truncates in the workload.
#[test]
fn kill9_truncate_direct() {
    kill9_rounds(Mode::Direct, 0x6b69_6c6c_0003, true);
}

/// See [`kill9_truncate_direct`].
#[test]
fn kill9_truncate_buffered() {
    kill9_rounds(Mode::Buffered, 0x6b69_6c6c_0004, true);
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    })
}

fn kill9_rounds(mode: Mode, default_seed: u64, truncate: bool) {
    if skip_without_fuse() {
        return;
    }
    let seed = env_u64("PFNFS_KILL9_SEED").unwrap_or(default_seed);
    let rounds = env_u64("PFNFS_KILL9_ROUNDS").unwrap_or(DEFAULT_ROUNDS);
    eprintln!("kill9 {mode:?}: seed {seed:#x}, {rounds} rounds");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut guard = MountGuard::new(mode);
    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|k| {
            let dir = guard.join(format!("w{k}"));
            fs::create_dir(&dir).unwrap();
            Writer::new(dir, 0, truncate)
        })
        .collect();
    let mut churn = Churn::new(guard.join("churn"));
    File::open(guard.path()).unwrap().sync_all().unwrap();
    let mut total_ops = 0u64;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let churn_thread = {
            let stop = stop.clone();
            let mut c = churn;
            c.reseed(seed ^ (round << 32));
            std::thread::spawn(move || c.run(&stop))
        };
        let handles: Vec<_> = writers
            .drain(..)
            .enumerate()
            .map(|(k, mut w)| {
                w.reseed(seed ^ (round << 32) ^ (k as u64 + 1));
                let stop = stop.clone();
                std::thread::spawn(move || w.run(&stop))
            })
            .collect();
        let delay = Duration::from_millis(rng.random_range(50..900));
        std::thread::sleep(delay);
        let pid = daemon_pid(guard.pool());
        // SAFETY: kill(2) on the PID of the daemon this test started (checked by daemon_pid).
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        stop.store(true, Ordering::Relaxed);
        let mut in_flight = Vec::new();
        for h in handles {
            let (w, op) = h.join().expect("writer thread panicked");
            total_ops += w.ops_done;
            writers.push(w);
            in_flight.push(op);
        }
        let (c, churn_in_flight) = churn_thread.join().expect("churn thread panicked");
        churn = c;
        // The daemon is dead: the harness reports that (expected), detaches the mount and
        // reaps the child.
        let _ = guard.unmount();
        assert!(!is_mounted(guard.path()), "dead mount still there");
        let report = run_fsck(guard.pool(), "-n");
        eprintln!(
            "round {round}: killed after {delay:?}; {total_ops} file ops and {} xattr ops so \
             far; log generation {}; fsck -n of the crashed pool: {}",
            churn.ops_done,
            log_generation(guard.pool()),
            report.lines().last().unwrap_or("")
        );
        guard.remount();
        if let Err(e) = churn.verify(churn_in_flight.as_ref()) {
            panic!(
                "seed {seed:#x} round {round}: {e}\ndaemon log:\n{}",
                guard.log()
            );
        }
        for (w, op) in writers.iter_mut().zip(in_flight) {
            if let Err(e) = w.verify(op.as_ref()) {
                panic!(
                    "seed {seed:#x} round {round}: {e}\ndaemon log:\n{}",
                    guard.log()
                );
            }
        }
    }
    guard.unmount().expect("clean unmount after the last round");
    run_fsck(guard.pool(), "-n");
    let out = run_fsck(guard.pool(), "-y");
    assert!(out.contains("clean"), "{out}");
    assert!(total_ops > 0, "the writers did nothing");
}

/// Runs `pfnfs fsck FLAG POOL`; it must exit 0. Returns its stdout.
fn run_fsck(pool: &Path, flag: &str) -> String {
    let out = Command::new(pfnfs_bin())
        .args(["fsck", flag])
        .arg(pool)
        .output()
        .expect("run pfnfs fsck");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "pfnfs fsck {flag} {}: {}\n{stdout}{}",
        pool.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The pool's log generation: it grows by one with every checkpoint.
fn log_generation(pool: &Path) -> u64 {
    let opts = pfnfs_alloc::OpenOptions {
        read_only: true,
        ..Default::default()
    };
    pfnfs_alloc::Pool::open(pool, &opts)
        .map(|p| p.superblock().meta.log_generation)
        .unwrap_or(0)
}

/// The daemon serving `pool`: the process holding it whose parent is this test process.
fn daemon_pid(pool: &Path) -> i32 {
    let me = std::process::id() as i32;
    let start = Instant::now();
    loop {
        let ours: Vec<i32> = holders(pool)
            .into_iter()
            .filter(|pid| parent_of(*pid) == Some(me))
            .collect();
        if let [pid] = ours[..] {
            return pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no single daemon of ours holds {}: {ours:?}",
            pool.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The workload

/// A file's contents, `None` if it does not exist.
type State = Option<Vec<u8>>;

/// An operation that was started; `paths` holds each path's state before and after it.
#[derive(Clone, Debug)]
struct Op {
    what: &'static str,
    /// Namespace operations are atomic: all paths before, or all after. Data operations may
    /// leave any mix of old and new bytes (and zeros past the old length).
    atomic: bool,
    paths: Vec<(String, State, State)>,
}

impl Op {
    fn summary(&self) -> String {
        let paths: Vec<&str> = self.paths.iter().map(|(n, _, _)| n.as_str()).collect();
        format!("{} {}", self.what, paths.join(" -> "))
    }
}

/// One writer thread's files (the fsync'd state) and its random source.
struct Writer {
    dir: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
    rng: StdRng,
    next_name: u64,
    ops_done: u64,
    /// Shrinking truncates are part of the workload.
    truncate: bool,
}

impl Writer {
    fn new(dir: PathBuf, seed: u64, truncate: bool) -> Writer {
        Writer {
            dir,
            files: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
            next_name: 0,
            ops_done: 0,
            truncate,
        }
    }

    fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
        self.ops_done = 0;
    }

    /// Runs operations until one fails (the daemon is gone) or `stop` is set. Returns the
    /// operation in flight when it stopped, if any.
    fn run(mut self, stop: &AtomicBool) -> (Writer, Option<Op>) {
        while !stop.load(Ordering::Relaxed) {
            let op = self.plan();
            if self.execute(&op).is_err() {
                return (self, Some(op));
            }
            for (name, _, after) in &op.paths {
                match after {
                    Some(data) => self.files.insert(name.clone(), data.clone()),
                    None => self.files.remove(name),
                };
            }
            self.ops_done += 1;
        }
        (self, None)
    }

    fn data(&mut self, len: usize) -> Vec<u8> {
        pattern(self.rng.random(), len)
    }

    fn pick(&mut self) -> (String, Vec<u8>) {
        let i = self.rng.random_range(0..self.files.len());
        let (name, data) = self.files.iter().nth(i).unwrap();
        (name.clone(), data.clone())
    }

    fn plan(&mut self) -> Op {
        let n = self.files.len();
        let roll = self.rng.random_range(0..100);
        if n < 3 || (roll < 12 && n < FILES_MAX) {
            let name = format!("f{}", self.next_name);
            self.next_name += 1;
            let len = self.rng.random_range(0..256 << 10);
            let data = self.data(len);
            return Op {
                what: "create",
                atomic: false,
                paths: vec![(name, None, Some(data))],
            };
        }
        let (name, old) = self.pick();
        match roll {
            12..=44 if old.len() < FILE_BYTES_MAX => {
                let len = self.rng.random_range(1..200 << 10);
                let mut new = old.clone();
                new.extend_from_slice(&self.data(len));
                Op {
                    what: "append",
                    atomic: false,
                    paths: vec![(name, Some(old), Some(new))],
                }
            }
            12..=69 => {
                let at = self.rng.random_range(0..=old.len());
                let len = self.rng.random_range(1..64 << 10);
                let patch = self.data(len);
                let mut new = old.clone();
                if new.len() < at + len {
                    new.resize(at + len, 0);
                }
                new[at..at + len].copy_from_slice(&patch);
                Op {
                    what: "overwrite",
                    atomic: false,
                    paths: vec![(name, Some(old), Some(new))],
                }
            }
            70..=81 if self.truncate => {
                let keep = self.rng.random_range(0..=old.len());
                let new = old[..keep].to_vec();
                Op {
                    what: "truncate",
                    atomic: false,
                    paths: vec![(name, Some(old), Some(new))],
                }
            }
            70..=93 => {
                let to = format!("f{}", self.next_name);
                self.next_name += 1;
                Op {
                    what: "rename",
                    atomic: true,
                    paths: vec![(name, Some(old.clone()), None), (to, None, Some(old))],
                }
            }
            _ => Op {
                what: "unlink",
                atomic: true,
                paths: vec![(name, Some(old), None)],
            },
        }
    }

    fn execute(&self, op: &Op) -> std::io::Result<()> {
        let path = |name: &str| self.dir.join(name);
        let (name, before, after) = &op.paths[0];
        match op.what {
            "create" => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path(name))?;
                f.write_all(after.as_deref().unwrap_or_default())?;
                f.sync_all()?;
                self.sync_dir()
            }
            "append" | "overwrite" => {
                let (before, after) = (before.as_deref().unwrap(), after.as_deref().unwrap());
                let at = if op.what == "append" {
                    before.len()
                } else {
                    // The first byte that differs, or where the file grows.
                    before
                        .iter()
                        .zip(after)
                        .position(|(a, b)| a != b)
                        .unwrap_or(before.len().min(after.len()))
                };
                let f = OpenOptions::new().write(true).open(path(name))?;
                let end = after.len().min(patch_end(before, after, at));
                f.write_all_at(&after[at..end], at as u64)?;
                f.sync_all()
            }
            "truncate" => {
                let f = OpenOptions::new().write(true).open(path(name))?;
                f.set_len(after.as_ref().map_or(0, |d| d.len() as u64))?;
                f.sync_all()
            }
            "rename" => {
                fs::rename(path(name), path(&op.paths[1].0))?;
                self.sync_dir()
            }
            "unlink" => {
                fs::remove_file(path(name))?;
                self.sync_dir()
            }
            other => unreachable!("unknown op {other}"),
        }
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Compares the directory with the model and the operation in flight, then adopts what
    /// is there as the new model.
    fn verify(&mut self, op: Option<&Op>) -> Result<(), String> {
        let mut actual: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let entries =
            fs::read_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let data = fs::read(entry.path()).map_err(|e| format!("read {name}: {e}"))?;
            actual.insert(name, data);
        }
        let touched: BTreeSet<&str> = op
            .map(|o| o.paths.iter().map(|(n, _, _)| n.as_str()).collect())
            .unwrap_or_default();
        let names: BTreeSet<&String> = actual.keys().chain(self.files.keys()).collect();
        for name in names {
            if touched.contains(name.as_str()) {
                continue;
            }
            let (want, got) = (self.files.get(name), actual.get(name));
            if want != got {
                return Err(format!(
                    "{}/{name}: fsync'd {} but found {}{} (in flight: {})",
                    self.dir.display(),
                    describe(want),
                    describe(got),
                    first_difference(want, got),
                    op.map_or("nothing".to_string(), Op::summary)
                ));
            }
        }
        if let Some(op) = op {
            let state = |n: &str| actual.get(n).cloned();
            let ok = if op.atomic {
                op.paths.iter().all(|(n, before, _)| state(n) == *before)
                    || op.paths.iter().all(|(n, _, after)| state(n) == *after)
            } else {
                op.paths.iter().all(|(n, before, after)| match state(n) {
                    None => before.is_none(),
                    Some(got) => mixed_ok(
                        &got,
                        before.as_deref().unwrap_or_default(),
                        after.as_deref().unwrap_or_default(),
                    ),
                })
            };
            if !ok {
                let found: Vec<String> = op
                    .paths
                    .iter()
                    .map(|(n, before, after)| {
                        format!(
                            "{n}: before {}, after {}, found {} (vs before{}; vs after{})",
                            describe(before.as_ref()),
                            describe(after.as_ref()),
                            describe(actual.get(n)),
                            first_difference(before.as_ref(), actual.get(n)),
                            first_difference(after.as_ref(), actual.get(n))
                        )
                    })
                    .collect();
                return Err(format!(
                    "{}: {} in flight at the kill left an impossible state: {}",
                    self.dir.display(),
                    op.what,
                    found.join("; ")
                ));
            }
        }
        self.files = actual;
        Ok(())
    }
}

/// Where the bytes an overwrite stores end: `after` differs from `before` only in
/// `[at, end)` (and past the old length).
fn patch_end(before: &[u8], after: &[u8], at: usize) -> usize {
    if after.len() > before.len() {
        return after.len();
    }
    before
        .iter()
        .zip(after)
        .rposition(|(a, b)| a != b)
        .map_or(at, |i| i + 1)
}

/// A data operation interrupted anywhere: the length lies between the old and the new one,
/// and every byte is the old one, the new one, or (past the shorter length) zero.
fn mixed_ok(got: &[u8], before: &[u8], after: &[u8]) -> bool {
    let lo = before.len().min(after.len());
    let hi = before.len().max(after.len());
    (lo..=hi).contains(&got.len())
        && got.iter().enumerate().all(|(i, &b)| {
            before.get(i) == Some(&b) || after.get(i) == Some(&b) || (i >= lo && b == 0)
        })
}

/// Sets a large xattr on one file over and over, with an fsync every [`CHURN_FSYNC_EVERY`]
/// values: metadata records big enough to fill the log, so that checkpoints run every few
/// dozen operations and kills land inside them.
struct Churn {
    file: PathBuf,
    /// The value last fsync'd.
    value: Vec<u8>,
    /// Values set (and returned) since, any of which may be what survives.
    pending: Vec<Vec<u8>>,
    rng: StdRng,
    ops_done: u64,
}

const CHURN_XATTR: &str = "user.churn";
const CHURN_FSYNC_EVERY: u64 = 8;

impl Churn {
    fn new(file: PathBuf) -> Churn {
        let f = File::create(&file).unwrap();
        let value = pattern(7, CHURN_VALUE_BYTES.start);
        sys::setxattr(&file, CHURN_XATTR, &value, 0).unwrap();
        f.sync_all().unwrap();
        Churn {
            file,
            value,
            pending: Vec::new(),
            rng: StdRng::seed_from_u64(0),
            ops_done: 0,
        }
    }

    fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// Runs until an operation fails or `stop` is set; returns the value in flight.
    fn run(mut self, stop: &AtomicBool) -> (Churn, Option<Vec<u8>>) {
        while !stop.load(Ordering::Relaxed) {
            let len = self.rng.random_range(CHURN_VALUE_BYTES);
            let value = pattern(self.rng.random(), len);
            if sys::setxattr(&self.file, CHURN_XATTR, &value, 0).is_err() {
                return (self, Some(value));
            }
            self.pending.push(value);
            self.ops_done += 1;
            if self.ops_done.is_multiple_of(CHURN_FSYNC_EVERY) {
                if File::open(&self.file).and_then(|f| f.sync_all()).is_err() {
                    return (self, None);
                }
                self.value = self.pending.pop().unwrap_or_default();
                self.pending.clear();
            }
        }
        (self, None)
    }

    fn verify(&mut self, in_flight: Option<&Vec<u8>>) -> Result<(), String> {
        let got = sys::getxattr(&self.file, CHURN_XATTR)
            .map_err(|e| format!("getxattr {}: {e}", self.file.display()))?;
        if got != self.value && !self.pending.contains(&got) && Some(&got) != in_flight {
            return Err(format!(
                "{} {CHURN_XATTR}: fsync'd {} (then set {} more) but found {}",
                self.file.display(),
                describe(Some(&self.value)),
                self.pending.len(),
                describe(Some(&got))
            ));
        }
        self.value = got;
        self.pending.clear();
        Ok(())
    }
}

/// Where two contents first differ, and what was found there.
fn first_difference(want: Option<&Vec<u8>>, got: Option<&Vec<u8>>) -> String {
    let (Some(want), Some(got)) = (want, got) else {
        return String::new();
    };
    let Some(at) = want.iter().zip(got.iter()).position(|(a, b)| a != b) else {
        return String::new();
    };
    let end = want
        .iter()
        .zip(got.iter())
        .rposition(|(a, b)| a != b)
        .map_or(at, |i| i + 1);
    let zeros = got[at..end].iter().all(|b| *b == 0);
    format!(
        "; bytes {at}..{end} differ{}",
        if zeros { " (found zeros)" } else { "" }
    )
}

fn describe(state: Option<&Vec<u8>>) -> String {
    match state {
        None => "absent".into(),
        Some(d) => format!(
            "{} bytes (crc {:08x})",
            d.len(),
            d.iter().fold(0u32, |h, b| h.rotate_left(5) ^ u32::from(*b))
        ),
    }
}

// ---------------------------------------------------------------------------------------
// The fsck command

/// Runs `pfnfs fsck ARGS...`: (exit code, stdout, stderr).
fn fsck_cmd(args: &[&str], pool: &Path) -> (i32, String, String) {
    let out = Command::new(pfnfs_bin())
        .arg("fsck")
        .args(args)
        .arg(pool)
        .output()
        .expect("run pfnfs fsck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Loads the pool with the Volume API, lets `f` damage it in RAM, writes it back.
fn damage(pool: &Path, f: impl FnOnce(&pfnfs_fs::volume::Volume)) {
    let p = pfnfs_alloc::Pool::open(pool, &pfnfs_alloc::OpenOptions::default()).unwrap();
    let v = pfnfs_fs::volume::Volume::load(Arc::new(p)).unwrap();
    f(&v);
    // The damage was done through the cells, around the operations: have it committed.
    v.mark_cached_changed();
    v.shutdown().unwrap();
}

#[test]
fn fsck_command_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("p.pool");
    let out = Command::new(pfnfs_bin())
        .args(["mkfs", "--size", "64M"])
        .arg(&pool)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, stdout, _) = fsck_cmd(&[], &pool);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("clean"), "{stdout}");

    // A wrong link count: -n reports (4), -p repairs it (1), then clean.
    damage(&pool, |v| {
        let root = v.cell(pfnfs_fs::inode::ROOT_INO).unwrap();
        root.inode.write().attr.nlink = 9;
    });
    let (code, stdout, stderr) = fsck_cmd(&["-n"], &pool);
    assert_eq!(code, 4, "{stdout}{stderr}");
    assert!(stdout.contains("PROBLEM [link-count]"), "{stdout}");
    assert!(stdout.contains("-y would: set nlink to 2"), "{stdout}");
    assert!(stderr.contains("none repaired"), "{stderr}");
    let (code, stdout, _) = fsck_cmd(&["-n", "--json"], &pool);
    assert_eq!(code, 4);
    assert!(stdout.contains("\"kind\": \"link-count\""), "{stdout}");
    assert!(stdout.contains("\"exit_code\": 4"), "{stdout}");
    let (code, stdout, _) = fsck_cmd(&["-p"], &pool);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("repaired: set nlink to 2"), "{stdout}");
    assert_eq!(fsck_cmd(&["-n"], &pool).0, 0);

    // An entry naming no inode: preen refuses (4, writes nothing), -y repairs (1).
    damage(&pool, |v| {
        let root = v.cell(pfnfs_fs::inode::ROOT_INO).unwrap();
        let mut inode = root.inode.write();
        inode.dir_mut().unwrap().insert(pfnfs_fs::inode::DirEntry {
            name: b"ghost".to_vec(),
            ino: 777,
            kind: pfnfs_fs::inode::Kind::File,
        });
    });
    let (code, stdout, _) = fsck_cmd(&["-p"], &pool);
    assert_eq!(code, 4, "{stdout}");
    assert!(stdout.contains("UNEXPECTED INCONSISTENCY"), "{stdout}");
    let (code, stdout, _) = fsck_cmd(&["-y"], &pool);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("PROBLEM [dangling-entry]"), "{stdout}");
    assert_eq!(fsck_cmd(&["-y"], &pool).0, 0);

    // Operational errors: 8.
    let (code, _, stderr) = fsck_cmd(&["-n"], &dir.path().join("missing.pool"));
    assert_eq!(code, 8, "{stderr}");
    let junk = dir.path().join("junk");
    fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    assert_eq!(fsck_cmd(&["-n"], &junk).0, 8);
}

#[test]
fn fsck_command_refuses_to_repair_a_mounted_pool() {
    if skip_without_fuse() {
        return;
    }
    let mut guard = MountGuard::new(Mode::Direct);
    fs::write(guard.join("f"), b"data").unwrap();
    for flag in ["-y", "-p"] {
        let (code, stdout, stderr) = fsck_cmd(&[flag], guard.pool());
        assert_eq!(code, 8, "fsck {flag} of a mounted pool: {stdout}{stderr}");
        assert!(stderr.contains("mounted on"), "{stderr}");
    }
    let (code, stdout, stderr) = fsck_cmd(&["-n"], guard.pool());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains("warning"), "{stderr}");
    guard.unmount().unwrap();
    assert_eq!(fsck_cmd(&["-y"], guard.pool()).0, 0);
}
