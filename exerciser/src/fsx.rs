//! The file exerciser: seeded random operations on a few files, every result checked against
//! an in-memory model of each file (its bytes; its length is the file size).
//!
//! Every choice (operation, file, offset, length, the bytes written) comes from one
//! `ChaCha8Rng` seeded with `--seed`, and the parameters are drawn the same way whatever the
//! filesystem answers, so a seed (with the same `--file-size-max`, `--files` and `--mix`)
//! replays the same operation log anywhere.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, OFlag, copy_file_range, fallocate};
use nix::unistd::{Whence, lseek};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// How many operations a failure report lists.
const LOG_KEEP: usize = 50;
/// Page size assumed for mapping offsets (mmap offsets must be multiples of it).
const PAGE: u64 = 4096;

/// The kinds of operation, in the order of [`DEFAULT_MIX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// pread, compared with the model (short only at EOF).
    Read,
    /// pwrite (past EOF makes a hole).
    Write,
    /// MAP_SHARED read of a range inside the file.
    MapRead,
    /// MAP_SHARED write of a range inside the file, then msync.
    MapWrite,
    /// ftruncate up or down.
    Truncate,
    /// fallocate mode 0.
    Falloc,
    /// fallocate KEEP_SIZE.
    FallocKeep,
    /// fallocate PUNCH_HOLE|KEEP_SIZE.
    Punch,
    /// fallocate ZERO_RANGE.
    Zero,
    /// fallocate ZERO_RANGE|KEEP_SIZE.
    ZeroKeep,
    /// fallocate COLLAPSE_RANGE (EOPNOTSUPP expected where unsupported).
    Collapse,
    /// fallocate INSERT_RANGE (EOPNOTSUPP expected where unsupported).
    Insert,
    /// copy_file_range within a file or between files.
    Copy,
    /// close and open again.
    Reopen,
    /// fsync.
    Fsync,
    /// SEEK_DATA/SEEK_HOLE checked against the model.
    Seek,
    /// read the whole file and compare.
    Verify,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 17] = [
        Kind::Read,
        Kind::Write,
        Kind::MapRead,
        Kind::MapWrite,
        Kind::Truncate,
        Kind::Falloc,
        Kind::FallocKeep,
        Kind::Punch,
        Kind::Zero,
        Kind::ZeroKeep,
        Kind::Collapse,
        Kind::Insert,
        Kind::Copy,
        Kind::Reopen,
        Kind::Fsync,
        Kind::Seek,
        Kind::Verify,
    ];

    /// The name used by `--mix` and in the log.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::MapRead => "mapread",
            Kind::MapWrite => "mapwrite",
            Kind::Truncate => "truncate",
            Kind::Falloc => "falloc",
            Kind::FallocKeep => "falloc_keep",
            Kind::Punch => "punch",
            Kind::Zero => "zero",
            Kind::ZeroKeep => "zero_keep",
            Kind::Collapse => "collapse",
            Kind::Insert => "insert",
            Kind::Copy => "copy",
            Kind::Reopen => "reopen",
            Kind::Fsync => "fsync",
            Kind::Seek => "seek",
            Kind::Verify => "verify",
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap()
    }

    fn falloc_flags(self) -> Option<FallocateFlags> {
        Some(match self {
            Kind::Falloc => FallocateFlags::empty(),
            Kind::FallocKeep => FallocateFlags::FALLOC_FL_KEEP_SIZE,
            Kind::Punch => {
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
            }
            Kind::Zero => FallocateFlags::FALLOC_FL_ZERO_RANGE,
            Kind::ZeroKeep => {
                FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE
            }
            Kind::Collapse => FallocateFlags::FALLOC_FL_COLLAPSE_RANGE,
            Kind::Insert => FallocateFlags::FALLOC_FL_INSERT_RANGE,
            _ => return None,
        })
    }
}

/// Default weights, indexed like [`Kind::ALL`].
pub const DEFAULT_MIX: [u32; 17] = [14, 16, 5, 5, 5, 3, 2, 5, 3, 2, 1, 1, 7, 2, 2, 5, 1];

/// Parses `name=weight,name=weight,...` over the defaults.
pub fn parse_mix(spec: &str) -> Result<[u32; 17], String> {
    let mut mix = DEFAULT_MIX;
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        let (name, w) = item
            .split_once('=')
            .ok_or_else(|| format!("mix item {item:?} is not NAME=WEIGHT"))?;
        let kind = Kind::ALL.iter().find(|k| k.name() == name).ok_or_else(|| {
            let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown operation {name:?} (known: {})", names.join(", "))
        })?;
        mix[kind.index()] = w
            .parse()
            .map_err(|_| format!("weight {w:?} of {name} is not a number"))?;
    }
    if mix.iter().all(|w| *w == 0) {
        return Err("every weight is 0".into());
    }
    Ok(mix)
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory the files live in (any filesystem).
    pub dir: PathBuf,
    /// Seed of every choice.
    pub seed: u64,
    /// Number of operations.
    pub ops: u64,
    /// Largest size a file reaches.
    pub file_size_max: u64,
    /// Largest single read/write/copy.
    pub io_max: u64,
    /// Number of files (`fsx.0`, `fsx.1`, ...).
    pub files: usize,
    /// Weights, indexed like [`Kind::ALL`].
    pub mix: [u32; 17],
    /// Half the reopens use O_DIRECT (the filesystem must accept unaligned O_DIRECT I/O,
    /// as FUSE and tmpfs do).
    pub odirect: bool,
    /// Print a progress line to stderr every this many operations (0: never).
    pub progress: u64,
    /// Print every operation as it runs.
    pub verbose: bool,
    /// Start from models saved by `model_out` (the files must hold exactly them).
    pub resume_from: Option<PathBuf>,
    /// Save each file's final model here (`fsx.N`).
    pub model_out: Option<PathBuf>,
}

impl Config {
    /// Defaults for `dir` and `seed`.
    pub fn new(dir: PathBuf, seed: u64) -> Config {
        Config {
            dir,
            seed,
            ops: 10_000,
            file_size_max: 8 << 20,
            io_max: (1 << 20) + (64 << 10),
            files: 2,
            mix: DEFAULT_MIX,
            odirect: false,
            progress: 0,
            verbose: false,
            resume_from: None,
            model_out: None,
        }
    }

    fn replay_args(&self) -> String {
        let mut mix = String::new();
        for (k, w) in Kind::ALL.iter().zip(self.mix.iter()) {
            if *w != DEFAULT_MIX[k.index()] {
                let _ = write!(
                    mix,
                    "{}{}={}",
                    if mix.is_empty() { "" } else { "," },
                    k.name(),
                    w
                );
            }
        }
        format!(
            "pfnfs-fsx DIR --seed {} --ops {} --file-size-max {} --io-max {} --files {}{}{}",
            self.seed,
            self.ops,
            self.file_size_max,
            self.io_max,
            self.files,
            if self.odirect { " --odirect" } else { "" },
            if mix.is_empty() {
                String::new()
            } else {
                format!(" --mix {mix}")
            }
        )
    }
}

/// Which fallocate modes the filesystem supports (probed once on a scratch file).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FallocSupport {
    /// Mode 0.
    pub alloc: bool,
    /// KEEP_SIZE.
    pub keep_size: bool,
    /// PUNCH_HOLE|KEEP_SIZE.
    pub punch_hole: bool,
    /// ZERO_RANGE.
    pub zero_range: bool,
    /// COLLAPSE_RANGE.
    pub collapse_range: bool,
    /// INSERT_RANGE.
    pub insert_range: bool,
}

impl FallocSupport {
    fn supports(&self, kind: Kind) -> bool {
        match kind {
            Kind::Falloc => self.alloc,
            Kind::FallocKeep => self.keep_size,
            Kind::Punch => self.punch_hole,
            Kind::Zero | Kind::ZeroKeep => self.zero_range,
            Kind::Collapse => self.collapse_range,
            Kind::Insert => self.insert_range,
            _ => true,
        }
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// Operations run.
    pub ops: u64,
    /// Files exercised.
    pub files: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Mismatches (always 0 in a summary: a mismatch ends the run with a report).
    pub mismatches: u64,
    /// Operations of each kind that ran (`name -> count`).
    pub counts: std::collections::BTreeMap<&'static str, u64>,
    /// Operations that the model expected to fail and that failed with the expected errno.
    pub expected_errors: u64,
    /// Bytes written through write, mmap and copy_file_range.
    pub bytes_written: u64,
    /// Bytes compared with the model.
    pub bytes_checked: u64,
    /// fallocate modes the filesystem supports.
    pub falloc: FallocSupport,
    /// SEEK_DATA/SEEK_HOLE answered by the filesystem (false: ENOSYS/EINVAL fallbacks seen).
    pub seek_checks: u64,
}

/// A mismatch or an unexpected result: everything needed to replay and debug it.
#[derive(Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Index of the failing operation (0-based), if an operation failed.
    pub op: Option<u64>,
    /// What went wrong.
    pub what: String,
    /// The last operations, oldest first.
    pub log: Vec<String>,
    /// How to replay.
    pub replay: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pfnfs-fsx: FAILED, seed {}", self.seed)?;
        match self.op {
            Some(op) => writeln!(f, "at operation #{op}")?,
            None => writeln!(f, "outside the operations")?,
        }
        writeln!(f, "{}", self.what)?;
        writeln!(f, "replay: {}", self.replay)?;
        writeln!(f, "last {} operations (oldest first):", self.log.len())?;
        for line in &self.log {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// The bytes written by operation `op` at file position `pos`: they depend on both, so data
/// landing at the wrong place, or an old write showing through, is told apart.
fn fill(buf: &mut [u8], op: u64, pos: u64) {
    let k = op.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (pos + i as u64).wrapping_add(1).wrapping_mul(k);
        *b = (x >> 56) as u8 ^ (x >> 29) as u8;
    }
}

/// Describes where `got` differs from `want` (first runs of differing bytes).
pub fn describe_diff(want: &[u8], got: &[u8], base: u64) -> String {
    let mut out = String::new();
    if want.len() != got.len() {
        let _ = writeln!(
            out,
            "length: expected {} bytes, got {}",
            want.len(),
            got.len()
        );
    }
    let n = want.len().min(got.len());
    let mut runs = 0;
    let mut i = 0;
    while i < n && runs < 8 {
        if want[i] == got[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && want[i] != got[i] {
            i += 1;
        }
        let show = (i - start).min(16);
        let _ = writeln!(
            out,
            "differs at file offset {} (0x{:x}), {} bytes: expected {:02x?}, got {:02x?}{}",
            base + start as u64,
            base + start as u64,
            i - start,
            &want[start..start + show],
            &got[start..start + show],
            if show < i - start { " ..." } else { "" }
        );
        runs += 1;
    }
    if runs == 8 {
        let more = (i..n).filter(|j| want[*j] != got[*j]).count();
        let _ = writeln!(out, "... and {more} more differing bytes");
    }
    out
}

struct FsxFile {
    path: PathBuf,
    file: File,
    model: Vec<u8>,
}

/// One run.
pub struct Fsx {
    cfg: Config,
    rng: ChaCha8Rng,
    files: Vec<FsxFile>,
    log: VecDeque<String>,
    op: u64,
    support: FallocSupport,
    counts: [u64; 17],
    expected_errors: u64,
    bytes_written: u64,
    bytes_checked: u64,
    seek_checks: u64,
    buf: Vec<u8>,
}

fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .open(path)
}

fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_DIRECT.bits())
        .open(path)
}

/// Probes which fallocate modes `dir`'s filesystem supports, on a scratch file.
pub fn probe_fallocate(dir: &Path) -> io::Result<FallocSupport> {
    let path = dir.join(format!(".pfnfs-fsx-probe-{}", std::process::id()));
    let file = open_rw(&path, true)?;
    let result = (|| {
        file.write_all_at(&[1u8; 4 * PAGE as usize], 0)?;
        let mut s = FallocSupport::default();
        for kind in [
            Kind::Falloc,
            Kind::FallocKeep,
            Kind::Punch,
            Kind::Zero,
            Kind::Collapse,
            Kind::Insert,
        ] {
            let flags = kind.falloc_flags().unwrap();
            let ok = match fallocate(&file, flags, PAGE as i64, PAGE as i64) {
                Ok(()) => true,
                Err(Errno::EOPNOTSUPP) => false,
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "probing fallocate {}: unexpected {e}",
                        kind.name()
                    )));
                }
            };
            match kind {
                Kind::Falloc => s.alloc = ok,
                Kind::FallocKeep => s.keep_size = ok,
                Kind::Punch => s.punch_hole = ok,
                Kind::Zero => s.zero_range = ok,
                Kind::Collapse => s.collapse_range = ok,
                _ => s.insert_range = ok,
            }
        }
        Ok(s)
    })();
    drop(file);
    std::fs::remove_file(&path)?;
    result
}

/// Outcome of a checked operation.
type Step = Result<(), String>;

impl Fsx {
    /// Opens (creates, or resumes) the files and probes the filesystem.
    pub fn new(cfg: Config) -> Result<Fsx, Failure> {
        let fail = |what: String| Failure {
            seed: cfg.seed,
            op: None,
            what,
            log: Vec::new(),
            replay: cfg.replay_args(),
        };
        if cfg.files == 0 {
            return Err(fail("--files must be at least 1".into()));
        }
        if cfg.file_size_max < 2 * PAGE || cfg.io_max == 0 {
            return Err(fail(format!(
                "--file-size-max must be at least {} and --io-max at least 1",
                2 * PAGE
            )));
        }
        let support = probe_fallocate(&cfg.dir)
            .map_err(|e| fail(format!("probing fallocate in {}: {e}", cfg.dir.display())))?;
        let mut files = Vec::new();
        for i in 0..cfg.files {
            let path = cfg.dir.join(format!("fsx.{i}"));
            let (file, model) = match &cfg.resume_from {
                None => {
                    let f = open_rw(&path, true)
                        .map_err(|e| fail(format!("create {}: {e}", path.display())))?;
                    (f, Vec::new())
                }
                Some(dir) => {
                    let saved = dir.join(format!("fsx.{i}"));
                    let model = std::fs::read(&saved)
                        .map_err(|e| fail(format!("read model {}: {e}", saved.display())))?;
                    let f = open_rw(&path, false)
                        .map_err(|e| fail(format!("open {}: {e}", path.display())))?;
                    (f, model)
                }
            };
            files.push(FsxFile { path, file, model });
        }
        let mut fsx = Fsx {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            files,
            log: VecDeque::new(),
            op: 0,
            support,
            counts: [0; 17],
            expected_errors: 0,
            bytes_written: 0,
            bytes_checked: 0,
            seek_checks: 0,
            buf: Vec::new(),
        };
        if fsx.cfg.resume_from.is_some() {
            for f in 0..fsx.files.len() {
                if let Err(what) = fsx.check_size(f).and_then(|_| fsx.verify(f)) {
                    return Err(fsx.failure(None, format!("resumed file fsx.{f}: {what}")));
                }
            }
        }
        Ok(fsx)
    }

    fn failure(&self, op: Option<u64>, what: String) -> Failure {
        Failure {
            seed: self.cfg.seed,
            op,
            what,
            log: self.log.iter().cloned().collect(),
            replay: self.cfg.replay_args(),
        }
    }

    fn note(&mut self, line: String) {
        if self.cfg.verbose {
            println!("{line}");
        }
        if self.log.len() == LOG_KEEP {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    /// A length for one I/O: mostly small, sometimes up to `io_max`, a quarter page-aligned.
    fn io_len(&mut self) -> u64 {
        let max = self.cfg.io_max.min(self.cfg.file_size_max);
        let r = self.rng.random_range(0..100u32);
        let cap = match r {
            0..50 => 512,
            50..80 => 64 << 10,
            80..95 => 256 << 10,
            _ => max,
        }
        .min(max);
        let len = self.rng.random_range(1..=cap);
        if self.rng.random_bool(0.25) && len >= PAGE {
            len & !(PAGE - 1)
        } else {
            len
        }
    }

    /// An offset in `0..=limit`, a quarter page-aligned.
    fn offset(&mut self, limit: u64) -> u64 {
        let off = self.rng.random_range(0..=limit);
        if self.rng.random_bool(0.25) {
            off & !(PAGE - 1)
        } else {
            off
        }
    }

    fn pick_kind(&mut self) -> Kind {
        let total: u32 = self.cfg.mix.iter().sum();
        let mut r = self.rng.random_range(0..total);
        for (k, w) in Kind::ALL.iter().zip(self.cfg.mix.iter()) {
            if r < *w {
                return *k;
            }
            r -= w;
        }
        unreachable!("weights sum to total")
    }

    /// Runs every operation, then verifies every file and saves the models if asked.
    pub fn run(mut self) -> Result<Summary, Failure> {
        let start = Instant::now();
        for op in 0..self.cfg.ops {
            self.op = op;
            if let Err(what) = self.step() {
                return Err(self.failure(Some(op), what));
            }
            if self.cfg.progress != 0 && (op + 1) % self.cfg.progress == 0 {
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "pfnfs-fsx: seed {}: {} operations in {secs:.0} s ({:.0}/s), 0 mismatches",
                    self.cfg.seed,
                    op + 1,
                    (op + 1) as f64 / secs.max(1e-9)
                );
            }
        }
        for f in 0..self.files.len() {
            let r = self.check_size(f).and_then(|_| self.verify(f));
            if let Err(what) = r {
                return Err(self.failure(None, format!("final check of fsx.{f}: {what}")));
            }
        }
        if let Some(dir) = &self.cfg.model_out {
            for (i, f) in self.files.iter().enumerate() {
                let to = dir.join(format!("fsx.{i}"));
                if let Err(e) = std::fs::write(&to, &f.model) {
                    return Err(self.failure(None, format!("save model {}: {e}", to.display())));
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let counts = Kind::ALL
            .iter()
            .map(|k| (k.name(), self.counts[k.index()]))
            .collect();
        Ok(Summary {
            seed: self.cfg.seed,
            ops: self.cfg.ops,
            files: self.files.len(),
            seconds,
            ops_per_sec: self.cfg.ops as f64 / seconds.max(1e-9),
            mismatches: 0,
            counts,
            expected_errors: self.expected_errors,
            bytes_written: self.bytes_written,
            bytes_checked: self.bytes_checked,
            falloc: self.support,
            seek_checks: self.seek_checks,
        })
    }

    fn step(&mut self) -> Step {
        let kind = self.pick_kind();
        self.counts[kind.index()] += 1;
        let f = self.rng.random_range(0..self.files.len());
        let max = self.cfg.file_size_max;
        match kind {
            Kind::Read => {
                let size = self.files[f].model.len() as u64;
                let len = self.io_len();
                let off = self.offset(size + PAGE);
                self.note(format!("#{} read f{f} {off}+{len} (size {size})", self.op));
                self.read(f, off, len)?;
            }
            Kind::Write => {
                let len = self.io_len();
                let off = self.offset(max - len);
                let size = self.files[f].model.len() as u64;
                self.note(format!("#{} write f{f} {off}+{len} (size {size})", self.op));
                self.write(f, off, len)?;
            }
            Kind::MapRead | Kind::MapWrite => {
                let size = self.files[f].model.len() as u64;
                let a = self.rng.random_range(0..size.max(1));
                let len = self.io_len();
                let len = len.min(size.saturating_sub(a));
                let write = kind == Kind::MapWrite;
                self.note(format!(
                    "#{} {} f{f} {a}+{len} (size {size})",
                    self.op,
                    kind.name()
                ));
                if len > 0 {
                    self.mapped(f, a, len, write)?;
                }
            }
            Kind::Truncate => {
                let size = self.files[f].model.len() as u64;
                let to = if self.rng.random_bool(0.5) {
                    self.offset(size)
                } else {
                    self.offset(max)
                };
                self.note(format!("#{} truncate f{f} {size} -> {to}", self.op));
                self.files[f]
                    .file
                    .set_len(to)
                    .map_err(|e| format!("ftruncate to {to}: {e}"))?;
                self.files[f].model.resize(to as usize, 0);
            }
            Kind::Falloc
            | Kind::FallocKeep
            | Kind::Punch
            | Kind::Zero
            | Kind::ZeroKeep
            | Kind::Collapse
            | Kind::Insert => {
                let size = self.files[f].model.len() as u64;
                let mut len = if self.rng.random_bool(0.2) {
                    self.rng.random_range(1..=max / 2)
                } else {
                    self.io_len()
                };
                let mut off = self.offset(max - len);
                if matches!(kind, Kind::Collapse | Kind::Insert) {
                    // These need block-aligned ranges where they are supported.
                    off &= !(PAGE - 1);
                    len = (len & !(PAGE - 1)).max(PAGE);
                    if off + len > max {
                        off = max.saturating_sub(len) & !(PAGE - 1);
                    }
                }
                self.note(format!(
                    "#{} fallocate {} f{f} {off}+{len} (size {size})",
                    self.op,
                    kind.name()
                ));
                self.fallocate(f, kind, off, len)?;
            }
            Kind::Copy => {
                let g = self.rng.random_range(0..self.files.len());
                let size_in = self.files[f].model.len() as u64;
                let len = self.io_len();
                let off_in = self.offset(size_in + PAGE / 2);
                let off_out = self.offset(max - len);
                self.note(format!(
                    "#{} copy_file_range f{f} {off_in}+{len} -> f{g} {off_out} (sizes {size_in}, {})",
                    self.op,
                    self.files[g].model.len()
                ));
                self.copy(f, off_in, g, off_out, len)?;
            }
            Kind::Reopen => {
                let direct = self.rng.random_bool(0.5) && self.cfg.odirect;
                let how = if direct { " O_DIRECT" } else { "" };
                self.note(format!("#{} reopen f{f}{how}", self.op));
                let path = self.files[f].path.clone();
                // Close first (drop), then open again.
                let placeholder = File::open("/dev/null").map_err(|e| e.to_string())?;
                drop(std::mem::replace(&mut self.files[f].file, placeholder));
                let file = if direct {
                    open_direct(&path)
                } else {
                    open_rw(&path, false)
                };
                self.files[f].file = file.map_err(|e| format!("reopen{how}: {e}"))?;
            }
            Kind::Fsync => {
                self.note(format!("#{} fsync f{f}", self.op));
                self.files[f]
                    .file
                    .sync_all()
                    .map_err(|e| format!("fsync: {e}"))?;
            }
            Kind::Seek => {
                let size = self.files[f].model.len() as u64;
                let off = self.offset(size + PAGE);
                self.note(format!("#{} seek f{f} {off} (size {size})", self.op));
                self.seek(f, off)?;
            }
            Kind::Verify => {
                let size = self.files[f].model.len();
                self.note(format!("#{} verify f{f} (size {size})", self.op));
                self.verify(f)?;
            }
        }
        self.check_size(f)
    }

    fn check_size(&self, f: usize) -> Step {
        let meta = self.files[f]
            .file
            .metadata()
            .map_err(|e| format!("fstat: {e}"))?;
        let want = self.files[f].model.len() as u64;
        if meta.len() != want {
            return Err(format!(
                "fsx.{f}: stat size {} but the model has {want}",
                meta.len()
            ));
        }
        Ok(())
    }

    /// pread of `len` at `off` (looping over short reads), compared with the model.
    fn read(&mut self, f: usize, off: u64, len: u64) -> Step {
        let size = self.files[f].model.len() as u64;
        let want_len = if off >= size { 0 } else { len.min(size - off) } as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(len as usize, 0);
        let mut got = 0usize;
        let r = loop {
            if got == buf.len() {
                break Ok(());
            }
            match self.files[f]
                .file
                .read_at(&mut buf[got..], off + got as u64)
            {
                Ok(0) => break Ok(()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(format!("pread {off}+{len}: {e}")),
            }
        };
        let result = r.and_then(|()| {
            let want = &self.files[f].model[off.min(size) as usize..][..want_len];
            self.bytes_checked += want_len as u64;
            if &buf[..got] != want {
                Err(format!(
                    "fsx.{f}: pread {off}+{len} (file size {size}) does not match the model:\n{}",
                    describe_diff(want, &buf[..got], off)
                ))
            } else {
                Ok(())
            }
        });
        self.buf = buf;
        result
    }

    fn write(&mut self, f: usize, off: u64, len: u64) -> Step {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(len as usize, 0);
        fill(&mut buf, self.op, off);
        let r = self.files[f].file.write_all_at(&buf, off);
        if r.is_ok() {
            let model = &mut self.files[f].model;
            let end = (off + len) as usize;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&buf);
            self.bytes_written += len;
        }
        self.buf = buf;
        r.map_err(|e| format!("pwrite {off}+{len}: {e}"))
    }

    fn mapped(&mut self, f: usize, off: u64, len: u64, write: bool) -> Step {
        let start = off & !(PAGE - 1);
        let map_len = (off + len - start) as usize;
        let inner = (off - start) as usize;
        let file = &self.files[f].file;
        let mut opts = memmap2::MmapOptions::new();
        opts.offset(start).len(map_len);
        if write {
            // SAFETY: the mapping covers bytes inside the file's current size (the model says
            // so, and the size is checked after every operation), this process is the only
            // one using the file, and the mapping is dropped before any other operation can
            // shrink it, so no access can fault on a truncated page.
            let mut map = unsafe { opts.map_mut(file) }
                .map_err(|e| format!("mmap MAP_SHARED rw {start}+{map_len}: {e}"))?;
            fill(&mut map[inner..], self.op, off);
            map.flush_range(inner, len as usize)
                .map_err(|e| format!("msync {off}+{len}: {e}"))?;
            self.files[f].model[off as usize..(off + len) as usize].copy_from_slice(&map[inner..]);
            self.bytes_written += len;
        } else {
            // SAFETY: as above: inside the current size, single user, dropped at once.
            let map = unsafe { opts.map(file) }
                .map_err(|e| format!("mmap MAP_SHARED ro {start}+{map_len}: {e}"))?;
            let want = &self.files[f].model[off as usize..(off + len) as usize];
            self.bytes_checked += len;
            if &map[inner..] != want {
                return Err(format!(
                    "fsx.{f}: mapped read {off}+{len} does not match the model:\n{}",
                    describe_diff(want, &map[inner..], off)
                ));
            }
        }
        Ok(())
    }

    fn expect_errno(&mut self, what: &str, got: Result<(), Errno>, want: Option<Errno>) -> Step {
        match (got, want) {
            (Ok(()), None) => Ok(()),
            (Err(e), Some(w)) if e == w => {
                self.expected_errors += 1;
                Ok(())
            }
            (Ok(()), Some(w)) => Err(format!("{what} succeeded; the model expected {w}")),
            (Err(e), Some(w)) => Err(format!("{what} failed with {e}; the model expected {w}")),
            (Err(e), None) => Err(format!(
                "{what} failed with {e}; the model expected success"
            )),
        }
    }

    fn fallocate(&mut self, f: usize, kind: Kind, off: u64, len: u64) -> Step {
        let flags = kind.falloc_flags().unwrap();
        let size = self.files[f].model.len() as u64;
        let end = off + len;
        let expect = if !self.support.supports(kind) {
            Some(Errno::EOPNOTSUPP)
        } else {
            match kind {
                Kind::Collapse if end >= size => Some(Errno::EINVAL),
                Kind::Insert if off >= size => Some(Errno::EINVAL),
                _ => None,
            }
        };
        let got = fallocate(&self.files[f].file, flags, off as i64, len as i64);
        let what = format!("fallocate {} {off}+{len}", kind.name());
        self.expect_errno(&what, got, expect)?;
        if expect.is_some() {
            return Ok(());
        }
        let model = &mut self.files[f].model;
        let (off, end) = (off as usize, end as usize);
        match kind {
            Kind::Falloc => {
                if model.len() < end {
                    model.resize(end, 0);
                }
            }
            Kind::FallocKeep => {}
            Kind::Punch | Kind::ZeroKeep => {
                let e = end.min(model.len());
                if off < e {
                    model[off..e].fill(0);
                }
            }
            Kind::Zero => {
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off..end].fill(0);
            }
            Kind::Collapse => {
                model.drain(off..end);
            }
            Kind::Insert => {
                model.splice(off..off, std::iter::repeat_n(0u8, end - off));
            }
            _ => unreachable!(),
        }
        Ok(())
    }

    fn copy(&mut self, src: usize, off_in: u64, dst: usize, off_out: u64, len: u64) -> Step {
        let size_in = self.files[src].model.len() as u64;
        // The kernel shortens the copy to the source's EOF, then refuses overlapping ranges
        // of one file (generic_copy_file_checks).
        let count = if off_in >= size_in {
            0
        } else {
            len.min(size_in - off_in)
        };
        if src == dst && count > 0 && off_out + count > off_in && off_out < off_in + count {
            let got = copy_file_range(
                &self.files[src].file,
                Some(&mut (off_in as i64)),
                &self.files[dst].file,
                Some(&mut (off_out as i64)),
                len as usize,
            )
            .map(drop);
            return self.expect_errno("copy_file_range (overlapping)", got, Some(Errno::EINVAL));
        }
        let mut done = 0u64;
        loop {
            let mut i = (off_in + done) as i64;
            let mut o = (off_out + done) as i64;
            let n = copy_file_range(
                &self.files[src].file,
                Some(&mut i),
                &self.files[dst].file,
                Some(&mut o),
                (len - done) as usize,
            )
            .map_err(|e| format!("copy_file_range after {done} bytes: {e}"))?
                as u64;
            if n == 0 {
                break;
            }
            if done + n > count {
                return Err(format!(
                    "copy_file_range copied {} bytes; the source has only {count} past {off_in}",
                    done + n
                ));
            }
            let a = (off_in + done) as usize;
            let b = (off_out + done) as usize;
            let piece = self.files[src].model[a..a + n as usize].to_vec();
            let model = &mut self.files[dst].model;
            if model.len() < b + n as usize {
                model.resize(b + n as usize, 0);
            }
            model[b..b + n as usize].copy_from_slice(&piece);
            done += n;
            self.bytes_written += n;
            if done == count {
                break;
            }
        }
        if done != count {
            return Err(format!(
                "copy_file_range copied {done} of the {count} bytes the source has"
            ));
        }
        Ok(())
    }

    /// SEEK_DATA/SEEK_HOLE from `off`: a filesystem may report data where the model has
    /// zeros, never a hole where the model has data.
    fn seek(&mut self, f: usize, off: u64) -> Step {
        let model = &self.files[f].model;
        let size = model.len() as u64;
        let file = &self.files[f].file;
        let zeros = |a: u64, b: u64| model[a as usize..b as usize].iter().all(|x| *x == 0);
        let data = lseek(file, off as i64, Whence::SeekData);
        let hole = lseek(file, off as i64, Whence::SeekHole);
        if off >= size {
            for (name, r) in [("SEEK_DATA", data), ("SEEK_HOLE", hole)] {
                if r != Err(Errno::ENXIO) {
                    return Err(format!(
                        "{name} from {off} at/after EOF {size}: {r:?}, expected ENXIO"
                    ));
                }
            }
            self.seek_checks += 1;
            return Ok(());
        }
        match data {
            Err(Errno::ENXIO) => {
                if !zeros(off, size) {
                    return Err(format!(
                        "SEEK_DATA from {off}: ENXIO, but the model has data before EOF {size}"
                    ));
                }
            }
            Ok(d) if (d as u64) >= off && (d as u64) <= size => {
                if !zeros(off, d as u64) {
                    return Err(format!(
                        "SEEK_DATA from {off}: {d}, but the model has data in between"
                    ));
                }
            }
            other => return Err(format!("SEEK_DATA from {off} (size {size}): {other:?}")),
        }
        let h = match hole {
            Ok(h) if (h as u64) >= off && (h as u64) <= size => h as u64,
            other => return Err(format!("SEEK_HOLE from {off} (size {size}): {other:?}")),
        };
        if h < size {
            // A hole at h: it reaches up to the next data (or EOF), and must be zeros.
            let next = match lseek(file, h as i64, Whence::SeekData) {
                Ok(d) if (d as u64) > h && (d as u64) <= size => d as u64,
                Err(Errno::ENXIO) => size,
                other => {
                    return Err(format!(
                        "SEEK_DATA from the hole at {h} (size {size}): {other:?}"
                    ));
                }
            };
            if !zeros(h, next) {
                return Err(format!(
                    "hole reported at {h}..{next} (SEEK_HOLE from {off}), but the model has data there"
                ));
            }
        }
        self.seek_checks += 1;
        Ok(())
    }

    /// Reads the whole file in 1 MiB pieces and compares it with the model.
    fn verify(&mut self, f: usize) -> Step {
        let size = self.files[f].model.len() as u64;
        let mut off = 0;
        while off < size {
            let len = (size - off).min(1 << 20);
            self.read(f, off, len)?;
            off += len;
        }
        // And nothing past EOF.
        self.read(f, size, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_over_the_defaults() {
        let mix = parse_mix("mapread=0,copy=20").unwrap();
        assert_eq!(mix[Kind::MapRead.index()], 0);
        assert_eq!(mix[Kind::Copy.index()], 20);
        assert_eq!(mix[Kind::Read.index()], DEFAULT_MIX[Kind::Read.index()]);
        assert!(
            parse_mix("nosuch=1")
                .unwrap_err()
                .contains("unknown operation")
        );
        assert!(parse_mix("read").is_err());
        assert!(parse_mix("read=x").is_err());
        let all_zero: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{}=0", k.name()))
            .collect();
        assert!(parse_mix(&all_zero.join(",")).is_err());
    }

    #[test]
    fn diff_names_offsets_and_lengths() {
        let want = [1u8, 2, 3, 4, 5, 6];
        let got = [1u8, 9, 9, 4, 5];
        let d = describe_diff(&want, &got, 100);
        assert!(d.contains("length: expected 6 bytes, got 5"), "{d}");
        assert!(
            d.contains("differs at file offset 101 (0x65), 2 bytes"),
            "{d}"
        );
        assert!(describe_diff(&want, &want, 0).is_empty());
    }

    #[test]
    fn written_bytes_depend_on_operation_and_position() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        fill(&mut a, 7, 4096);
        fill(&mut b, 7, 4096);
        assert_eq!(a, b);
        fill(&mut b, 8, 4096);
        assert_ne!(a, b);
        let mut c = [0u8; 32];
        fill(&mut c, 7, 4096 + 32);
        assert_eq!(
            &a[32..],
            &c[..],
            "a write's bytes are a function of the position"
        );
    }
}
