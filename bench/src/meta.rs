//! The metadata jobs: `create`, `stat`, `readdir` and `unlink` of N small files, run in this
//! process (one thread) on a mounted target, with every operation timed.
//!
//! The tree: `N / 1000` directories `d000000`, `d000001`, ... under `<mount>/meta/`, each with
//! up to [`FILES_PER_DIR`] files `f000000`, ... (file `i` is `d{i / 1000}/f{i % 1000}`).
//!
//! - `create`: `open(O_WRONLY|O_CREAT|O_TRUNC, 0644)`, a 100-byte `write`, `close`: one
//!   operation. Each directory is made (mkdir) when its first file is due; the mkdir counts in
//!   the phase's wall time, not in the per-operation latencies.
//! - `stat`: `lstat` of every file, in creation order, after `sync` and
//!   `echo 3 > /proc/sys/vm/drop_caches`, so the kernel asks the filesystem again.
//! - `readdir`: `opendir` + `readdir` to the end + `closedir` of every directory, after
//!   dropping the caches again: one operation per directory.
//! - `unlink`: every file, in creation order.
//!
//! The jobs always run in this order on a mount. A job left out of `--jobs` that a later one
//! needs (the files for `stat`) runs untimed as setup.
//!
//! Invariants: a [`PhaseStats`] counts every operation in its histogram exactly once and in
//! one tenth by index (operation `i` of `n >= 10` is in tenth `i * 10 / n`); latencies are
//! whole nanoseconds, at least 1.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Files per directory.
pub const FILES_PER_DIR: u64 = 1000;
/// Bytes written into each file by `create`.
pub const FILE_BYTES: usize = 100;
/// Pool or tmpfs bytes one file takes: one 4 KiB frame (or page) of data.
pub const BYTES_PER_FILE: u64 = 4096;
/// The largest latency the histograms hold: one hour, in ns. Longer calls are clamped to it.
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// A metadata job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaJob {
    /// open(O_CREAT) + 100-byte write + close of every file.
    Create,
    /// lstat of every file, after the kernel's caches are dropped.
    Stat,
    /// readdir of every directory, after the kernel's caches are dropped.
    Readdir,
    /// unlink of every file.
    Unlink,
}

/// All metadata jobs, in the order they run on a mount.
pub const ALL_META_JOBS: [MetaJob; 4] = [
    MetaJob::Create,
    MetaJob::Stat,
    MetaJob::Readdir,
    MetaJob::Unlink,
];

impl MetaJob {
    /// The job's name, as on the command line and in the reports.
    pub fn name(self) -> &'static str {
        match self {
            MetaJob::Create => "create",
            MetaJob::Stat => "stat",
            MetaJob::Readdir => "readdir",
            MetaJob::Unlink => "unlink",
        }
    }

    /// What one operation of the job is, for the report.
    pub fn operation(self) -> &'static str {
        match self {
            MetaJob::Create => "open(O_CREAT) + 100-byte write + close of one file",
            MetaJob::Stat => "lstat of one file, caches dropped before the phase",
            MetaJob::Readdir => "opendir + readdir of all its entries + closedir of one directory",
            MetaJob::Unlink => "unlink of one file",
        }
    }

    /// True if the kernel's caches are dropped before the job.
    pub fn drops_caches(self) -> bool {
        matches!(self, MetaJob::Stat | MetaJob::Readdir)
    }
}

/// The tree of `files` files.
#[derive(Clone, Debug)]
pub struct Tree {
    root: PathBuf,
    files: u64,
}

impl Tree {
    /// The tree under `<mount>/meta`.
    pub fn new(mount: &Path, files: u64) -> Tree {
        Tree {
            root: mount.join("meta"),
            files,
        }
    }

    /// Files in the tree.
    pub fn files(&self) -> u64 {
        self.files
    }

    /// Directories in the tree: `files / 1000`, rounded up.
    pub fn dirs(&self) -> u64 {
        self.files.div_ceil(FILES_PER_DIR)
    }

    /// Directory `d`.
    pub fn dir(&self, d: u64) -> PathBuf {
        self.root.join(format!("d{d:06}"))
    }

    /// File `i`.
    pub fn file(&self, i: u64) -> PathBuf {
        self.dir(i / FILES_PER_DIR)
            .join(format!("f{:06}", i % FILES_PER_DIR))
    }
}

/// Latencies of a phase: a whole-run histogram, one per tenth of the run, and when each tenth
/// ended. Fixed size whatever the operation count.
pub struct PhaseStats {
    ops: u64,
    done: u64,
    all: Histogram<u64>,
    tenths: Vec<Histogram<u64>>,
    tenth_ends: Vec<Duration>,
    started: Instant,
}

fn histogram() -> Histogram<u64> {
    // 3 significant digits from 1 ns to an hour: about 250 KiB, fixed.
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

impl PhaseStats {
    /// Stats for a phase of `ops` operations, starting its clock now.
    pub fn new(ops: u64) -> PhaseStats {
        PhaseStats {
            ops,
            done: 0,
            all: histogram(),
            tenths: (0..10).map(|_| histogram()).collect(),
            tenth_ends: Vec::with_capacity(10),
            started: Instant::now(),
        }
    }

    /// The tenth operation `i` of the phase belongs to: `i * 10 / ops`; with fewer than 10
    /// operations, spread so that the first is in the first tenth and the last in the last.
    fn tenth_of(&self, i: u64) -> usize {
        let (i, n) = (u128::from(i), u128::from(self.ops));
        let t = match n {
            0 | 1 => 0,
            2..=9 => i * 9 / (n - 1),
            _ => i * 10 / n,
        };
        (t as usize).min(9)
    }

    /// Records the next operation's latency; `now` is when it ended.
    pub fn record_at(&mut self, latency: Duration, now: Instant) {
        assert!(self.done < self.ops, "more operations than planned");
        let ns = (latency.as_nanos().min(u128::from(LATENCY_NS_MAX)) as u64).max(1);
        let t = self.tenth_of(self.done);
        self.all.saturating_record(ns);
        self.tenths[t].saturating_record(ns);
        self.done += 1;
        // The last operation of a tenth closes it (a tenth may be empty when ops < 10).
        while self.tenth_ends.len() < 10
            && (self.done == self.ops || self.tenth_of(self.done) > self.tenth_ends.len())
        {
            self.tenth_ends.push(now.duration_since(self.started));
        }
    }

    /// Records the next operation's latency, ending now.
    pub fn record(&mut self, latency: Duration) {
        self.record_at(latency, Instant::now());
    }

    /// The figures so far: of the whole phase once every operation is recorded.
    pub fn finish(&self) -> MetaFigures {
        let elapsed = self.tenth_ends.last().copied().unwrap_or_default();
        let mut per_tenth = Vec::new();
        let mut previous = Duration::ZERO;
        for (t, end) in self.tenth_ends.iter().enumerate() {
            let n = self.tenths[t].len();
            let secs = end.saturating_sub(previous).as_secs_f64();
            per_tenth.push(if n == 0 || secs <= 0.0 {
                None
            } else {
                Some(n as f64 / secs)
            });
            previous = *end;
        }
        let rate = |n: u64, secs: f64| (secs > 0.0).then(|| n as f64 / secs);
        MetaFigures {
            ops: self.done,
            elapsed_s: elapsed.as_secs_f64(),
            ops_per_s: rate(self.done, elapsed.as_secs_f64()),
            latency: Latency::of(&self.all),
            first_tenth_ops_per_s: per_tenth.first().copied().flatten(),
            last_tenth_ops_per_s: if per_tenth.len() == 10 {
                per_tenth[9]
            } else {
                None
            },
            first_tenth_latency: Latency::of(&self.tenths[0]),
            last_tenth_latency: Latency::of(&self.tenths[9]),
            tenths_ops_per_s: per_tenth,
        }
    }
}

/// Latency percentiles of some operations, in µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Operations counted.
    pub count: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Slowest single operation, µs.
    pub max_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Some(Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            max_us: us(h.max()),
        })
    }
}

/// What one metadata job measured on one mount.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MetaFigures {
    /// Operations done (files; directories for `readdir`).
    pub ops: u64,
    /// Wall time of the timed phase, s.
    pub elapsed_s: f64,
    /// `ops / elapsed_s`.
    pub ops_per_s: Option<f64>,
    /// Latencies over the whole phase.
    pub latency: Option<Latency>,
    /// Operations per second in the first tenth of the operations.
    pub first_tenth_ops_per_s: Option<f64>,
    /// Operations per second in the last tenth.
    pub last_tenth_ops_per_s: Option<f64>,
    /// Latencies in the first tenth.
    pub first_tenth_latency: Option<Latency>,
    /// Latencies in the last tenth.
    pub last_tenth_latency: Option<Latency>,
    /// Operations per second in each tenth, in order (None: an empty tenth).
    pub tenths_ops_per_s: Vec<Option<f64>>,
}

impl MetaFigures {
    /// Last tenth's rate / first tenth's.
    pub fn last_over_first(&self) -> Option<f64> {
        match (self.last_tenth_ops_per_s, self.first_tenth_ops_per_s) {
            (Some(l), Some(f)) if f > 0.0 => Some(l / f),
            _ => None,
        }
    }
}

/// What a metadata phase needs from its caller besides the tree.
pub struct Hooks<'a> {
    /// Called every [`PROGRESS_EVERY`] operations with the count done.
    pub progress: &'a mut dyn FnMut(u64),
    /// True once the run should stop.
    pub interrupted: &'a dyn Fn() -> bool,
}

/// How often [`Hooks::progress`] is called and the interrupt flag checked.
pub const PROGRESS_EVERY: u64 = 1000;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// `create`: makes the tree, timing every file (or none, with `timed` false).
pub fn create(tree: &Tree, timed: bool, hooks: &mut Hooks<'_>) -> Result<MetaFigures, String> {
    std::fs::create_dir_all(&tree.root).map_err(|e| io_error("mkdir", &tree.root, e))?;
    let payload = [b'x'; FILE_BYTES];
    let mut stats = PhaseStats::new(tree.files);
    for i in 0..tree.files {
        if i.is_multiple_of(FILES_PER_DIR) {
            let dir = tree.dir(i / FILES_PER_DIR);
            std::fs::create_dir(&dir).map_err(|e| io_error("mkdir", &dir, e))?;
        }
        if i.is_multiple_of(PROGRESS_EVERY) {
            (hooks.progress)(i);
            if (hooks.interrupted)() {
                return Err("interrupted".to_string());
            }
        }
        let path = tree.file(i);
        let start = Instant::now();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| io_error("open(O_CREAT)", &path, e))?;
        file.write_all(&payload)
            .map_err(|e| io_error("write", &path, e))?;
        drop(file);
        if timed {
            stats.record(start.elapsed());
        }
    }
    Ok(if timed {
        stats.finish()
    } else {
        MetaFigures::default()
    })
}

/// `stat`: lstat of every file, each checked to be 100 bytes.
pub fn stat(tree: &Tree, hooks: &mut Hooks<'_>) -> Result<MetaFigures, String> {
    let mut stats = PhaseStats::new(tree.files);
    for i in 0..tree.files {
        if i.is_multiple_of(PROGRESS_EVERY) {
            (hooks.progress)(i);
            if (hooks.interrupted)() {
                return Err("interrupted".to_string());
            }
        }
        let path = tree.file(i);
        let start = Instant::now();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error("lstat", &path, e))?;
        stats.record(start.elapsed());
        if meta.len() != FILE_BYTES as u64 {
            return Err(format!(
                "{}: {} bytes, not {FILE_BYTES}",
                path.display(),
                meta.len()
            ));
        }
    }
    Ok(stats.finish())
}

/// `readdir`: every directory read to the end, each checked to hold its files.
pub fn readdir(tree: &Tree, hooks: &mut Hooks<'_>) -> Result<MetaFigures, String> {
    let dirs = tree.dirs();
    let mut stats = PhaseStats::new(dirs);
    for d in 0..dirs {
        (hooks.progress)(d);
        if (hooks.interrupted)() {
            return Err("interrupted".to_string());
        }
        let path = tree.dir(d);
        let start = Instant::now();
        let mut entries = 0u64;
        for entry in std::fs::read_dir(&path).map_err(|e| io_error("opendir", &path, e))? {
            entry.map_err(|e| io_error("readdir", &path, e))?;
            entries += 1;
        }
        stats.record(start.elapsed());
        let expected = (tree.files - d * FILES_PER_DIR).min(FILES_PER_DIR);
        if entries != expected {
            return Err(format!(
                "{}: {entries} entries, not {expected}",
                path.display()
            ));
        }
    }
    Ok(stats.finish())
}

/// `unlink`: every file.
pub fn unlink(tree: &Tree, hooks: &mut Hooks<'_>) -> Result<MetaFigures, String> {
    let mut stats = PhaseStats::new(tree.files);
    for i in 0..tree.files {
        if i.is_multiple_of(PROGRESS_EVERY) {
            (hooks.progress)(i);
            if (hooks.interrupted)() {
                return Err("interrupted".to_string());
            }
        }
        let path = tree.file(i);
        let start = Instant::now();
        std::fs::remove_file(&path).map_err(|e| io_error("unlink", &path, e))?;
        stats.record(start.elapsed());
    }
    Ok(stats.finish())
}

/// `sync`, then `echo 3 > /proc/sys/vm/drop_caches`: the kernel forgets clean pages, dentries
/// and inodes (FUSE inodes too, so the daemon is asked again). Err if not allowed (not root).
pub fn drop_caches() -> Result<(), String> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .map_err(|e| format!("echo 3 > /proc/sys/vm/drop_caches: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn tree_paths() {
        let t = Tree::new(Path::new("/m"), 2500);
        assert_eq!(t.dirs(), 3);
        assert_eq!(t.file(0), Path::new("/m/meta/d000000/f000000"));
        assert_eq!(t.file(1999), Path::new("/m/meta/d000001/f000999"));
        assert_eq!(t.file(2000), Path::new("/m/meta/d000002/f000000"));
        assert_eq!(Tree::new(Path::new("/m"), 2000).dirs(), 2);
    }

    #[test]
    fn percentiles_and_max() {
        let mut s = PhaseStats::new(1000);
        let t0 = s.started;
        for i in 1..=1000u64 {
            // 1..=1000 µs; one second per operation of wall time.
            s.record_at(Duration::from_micros(i), t0 + Duration::from_secs(i));
        }
        let f = s.finish();
        assert_eq!(f.ops, 1000);
        let l = f.latency.unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() <= 1.0, "{l:?}");
        assert_eq!(f.elapsed_s, 1000.0);
        assert_eq!(f.ops_per_s, Some(1.0));
        assert_eq!(f.tenths_ops_per_s.len(), 10);
        assert_eq!(f.first_tenth_latency.unwrap().count, 100);
        assert!((f.last_tenth_latency.unwrap().p50_us - 950.0).abs() <= 1.0);
    }

    #[test]
    fn tenths_show_a_slowdown() {
        // 100 operations; the first 10 take 1 ms of wall time each, the last 10 take 4 ms.
        let mut s = PhaseStats::new(100);
        let mut now = s.started;
        for i in 0..100 {
            let step = if i < 10 {
                1
            } else if i >= 90 {
                4
            } else {
                2
            };
            now += ms(step);
            s.record_at(ms(step), now);
        }
        let f = s.finish();
        let first = f.first_tenth_ops_per_s.unwrap();
        let last = f.last_tenth_ops_per_s.unwrap();
        assert!((first - 1000.0).abs() < 1e-6, "{first}");
        assert!((last - 250.0).abs() < 1e-6, "{last}");
        assert!((f.last_over_first().unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(f.tenths_ops_per_s.len(), 10);
        assert!(
            f.tenths_ops_per_s[1..9]
                .iter()
                .all(|r| (r.unwrap() - 500.0).abs() < 1e-6)
        );
        assert!((f.elapsed_s - 0.21).abs() < 1e-9);
    }

    #[test]
    fn fewer_operations_than_tenths() {
        let mut s = PhaseStats::new(3);
        let t0 = s.started;
        for i in 1..=3 {
            s.record_at(ms(1), t0 + ms(i));
        }
        let f = s.finish();
        assert_eq!(f.ops, 3);
        assert_eq!(f.tenths_ops_per_s.len(), 10);
        assert_eq!(f.tenths_ops_per_s.iter().filter(|r| r.is_some()).count(), 3);
        assert_eq!(f.first_tenth_ops_per_s, Some(1000.0));
        assert_eq!(f.last_tenth_ops_per_s, Some(1000.0));
    }

    #[test]
    fn an_unfinished_phase_has_no_last_tenth() {
        let mut s = PhaseStats::new(100);
        let t0 = s.started;
        for i in 1..=50 {
            s.record_at(ms(1), t0 + ms(i));
        }
        let f = s.finish();
        assert_eq!(f.ops, 50);
        assert_eq!(f.tenths_ops_per_s.len(), 5);
        assert_eq!(f.last_tenth_ops_per_s, None);
        assert_eq!(f.last_over_first(), None);
    }

    #[test]
    fn the_histogram_is_compact_and_clamps() {
        let mut s = PhaseStats::new(2);
        s.record(Duration::from_secs(7200));
        s.record(Duration::ZERO);
        let l = s.finish().latency.unwrap();
        assert!(l.max_us >= 3.5e9 && l.max_us <= 3.7e9, "{l:?}");
        assert!(l.p50_us <= 0.01, "{l:?}");
    }

    #[test]
    fn jobs_on_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new(dir.path(), 2100);
        let calls = std::cell::Cell::new(0);
        let mut progress = |_| calls.set(calls.get() + 1);
        let mut hooks = Hooks {
            progress: &mut progress,
            interrupted: &|| false,
        };
        let c = create(&tree, true, &mut hooks).unwrap();
        assert_eq!(c.ops, 2100);
        assert!(c.ops_per_s.unwrap() > 0.0);
        assert_eq!(std::fs::read(tree.file(2099)).unwrap().len(), FILE_BYTES);
        assert_eq!(stat(&tree, &mut hooks).unwrap().ops, 2100);
        assert_eq!(readdir(&tree, &mut hooks).unwrap().ops, 3);
        assert_eq!(unlink(&tree, &mut hooks).unwrap().ops, 2100);
        assert!(!tree.file(0).exists());
        assert!(create(&tree, false, &mut hooks).is_err(), "the dirs exist");
        assert!(calls.get() >= 3 * 3 + 3);
    }
}
