//! The namespace stress run: several worker processes create, write, truncate, hard-link,
//! rename (plain, RENAME_NOREPLACE, RENAME_EXCHANGE, across shared directories, directories
//! too) and unlink in the same shared directories. Names are per worker (`w<ID>-<N>`), so each
//! worker knows exactly which of its files survive, with which names, sizes and contents,
//! while all of them contend for the same directories. Each worker also lists the shared
//! directories while the others change them and checks that its own entries appear exactly
//! once.
//!
//! The coordinator starts the workers, collects their reports and checks the tree against
//! them: every name, which names share an inode, link counts, sizes and content hashes, and
//! the totals (files, names, bytes, directories).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Most objects (inodes) a worker keeps alive at once.
const MAX_OBJECTS: usize = 120;
/// Most directories of its own a worker makes.
const MAX_OWN_DIRS: usize = 3;
/// Largest file a worker makes.
const MAX_FILE: u64 = 96 << 10;

/// How long the kernel caches pfnfs's attributes (its attribute TTL), plus a margin.
const ATTR_TTL: Duration = Duration::from_millis(1100);

/// FNV-1a, 64 bits: the content hash in reports.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One surviving name of a worker's file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameReport {
    /// Path relative to the stress directory.
    pub path: String,
    /// The worker's id for the inode (names with the same `object` are hard links).
    pub object: String,
    /// Size in bytes.
    pub size: u64,
    /// FNV-1a of the contents.
    pub hash: u64,
}

/// What one worker did and what it says survives.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Worker id.
    pub id: usize,
    /// Operations done, by name.
    pub ops: BTreeMap<String, u64>,
    /// Errors the worker expected (EEXIST of RENAME_NOREPLACE onto its own name).
    pub expected_errors: u64,
    /// Readdir checks of a shared directory done while others changed it.
    pub readdir_checks: u64,
    /// Link counts the kernel had one too low after an unlink or rename-over (a FUSE race,
    /// see `check_stat`), right once its attribute cache expired.
    #[serde(default)]
    pub kernel_stale_nlink: u64,
    /// Surviving names of files.
    pub names: Vec<NameReport>,
    /// Surviving directories of this worker, relative paths.
    pub dirs: Vec<String>,
}

/// The expected tree: every worker's report, merged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Expected {
    /// Shared directories (relative paths).
    pub shared: Vec<String>,
    /// Every surviving name.
    pub names: Vec<NameReport>,
    /// Every worker directory.
    pub dirs: Vec<String>,
}

/// Totals of a checked tree.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Distinct file inodes.
    pub files: u64,
    /// Names of files (hard links count once each).
    pub names: u64,
    /// Bytes in distinct files.
    pub bytes: u64,
    /// Directories below the stress directory.
    pub dirs: u64,
}

/// Result of a whole stress run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StressSummary {
    /// Worker processes.
    pub procs: usize,
    /// Wall time of the workers, seconds.
    pub seconds: f64,
    /// Operations of all workers, by name.
    pub ops: BTreeMap<String, u64>,
    /// Total operations.
    pub total_ops: u64,
    /// Expected errors seen (and checked).
    pub expected_errors: u64,
    /// Readdir checks done.
    pub readdir_checks: u64,
    /// Link counts the kernel had too low (a FUSE race), right after the cache expired.
    pub kernel_stale_nlink: u64,
    /// What the workers report as surviving.
    pub reported: Counts,
    /// What the tree holds (equal to `reported`, or the run fails).
    pub found: Counts,
}

/// Stress parameters.
#[derive(Clone, Debug)]
pub struct StressConfig {
    /// Directory to work in (its `s0..` subdirectories are shared).
    pub dir: PathBuf,
    /// Worker processes.
    pub procs: usize,
    /// How long the workers run.
    pub seconds: f64,
    /// Seed (worker `i` uses `seed + i`).
    pub seed: u64,
    /// Shared directories.
    pub shared_dirs: usize,
}

fn shared_name(i: usize) -> String {
    format!("s{i}")
}

/// Where a name lives: a shared directory or one of the worker's own directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirRef {
    Shared(usize),
    Own(usize),
}

#[derive(Clone, Debug)]
struct Name {
    dir: DirRef,
    leaf: String,
}

struct Obj {
    id: u64,
    /// Its inode number (from fstat at creation), for failure reports.
    ino: u64,
    names: Vec<Name>,
    data: Vec<u8>,
}

struct Worker {
    root: PathBuf,
    id: usize,
    shared: usize,
    rng: ChaCha8Rng,
    next: u64,
    objs: Vec<Obj>,
    /// Own directories: (leaf name, shared directory it is in).
    own_dirs: Vec<(String, usize)>,
    report: WorkerReport,
    /// The last operations, for failure reports.
    history: std::collections::VecDeque<String>,
}

type WResult<T> = Result<T, String>;

fn ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> WResult<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

impl Worker {
    fn dir_rel(&self, d: DirRef) -> String {
        match d {
            DirRef::Shared(i) => shared_name(i),
            DirRef::Own(k) => {
                let (leaf, parent) = &self.own_dirs[k];
                format!("{}/{leaf}", shared_name(*parent))
            }
        }
    }

    fn rel(&self, n: &Name) -> String {
        format!("{}/{}", self.dir_rel(n.dir), n.leaf)
    }

    fn path(&self, n: &Name) -> PathBuf {
        self.root.join(self.rel(n))
    }

    fn rel_of(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("w{}-{}", self.id, self.next)
    }

    fn random_dir(&mut self) -> DirRef {
        let own = self.own_dirs.len();
        let r = self.rng.random_range(0..self.shared + own);
        if r < self.shared {
            DirRef::Shared(r)
        } else {
            DirRef::Own(r - self.shared)
        }
    }

    fn count(&mut self, op: &str) {
        *self.report.ops.entry(op.to_string()).or_default() += 1;
    }

    fn note(&mut self, line: String) {
        if self.history.len() == 30 {
            self.history.pop_front();
        }
        self.history.push_back(line);
    }

    /// lstat of `path`, which must be object `o` with as many links as the model has names.
    ///
    /// A link count lower than the model's, on the right inode, is looked at again once the
    /// kernel's attribute cache has expired (after [`ATTR_TTL`]): FUSE lowers a file's cached
    /// link count itself when one of its names is unlinked or renamed over, and if another
    /// process fetched the file's attributes (READDIRPLUS, GETATTR) after the filesystem
    /// applied the unlink but before the kernel saw the unlink's reply, the count is lowered
    /// twice (a kernel race; the filesystem's count is right). What the filesystem answers
    /// after the expiry must match; such cases are counted in `kernel_stale_nlink`.
    fn check_stat(&mut self, o: usize, path: &Path) -> WResult<std::fs::Metadata> {
        let lstat = |p: &Path| {
            ctx(std::fs::symlink_metadata(p), || {
                format!("lstat {}", p.display())
            })
        };
        let meta = lstat(path)?;
        let (ino, names) = (self.objs[o].ino, self.objs[o].names.len() as u64);
        if meta.ino() == ino && meta.nlink() == names {
            return Ok(meta);
        }
        if meta.ino() == ino && meta.nlink() < names {
            std::thread::sleep(ATTR_TTL);
            let again = lstat(path)?;
            if again.ino() == ino && again.nlink() == names {
                self.report.kernel_stale_nlink += 1;
                return Ok(again);
            }
        }
        Err(format!(
            "{}: ino {} nlink {}, the model has ino {ino} with {names} names",
            path.display(),
            meta.ino(),
            meta.nlink(),
        ))
    }

    /// After a change of an object's names: lstat of one of them must show its inode and
    /// link count.
    fn check_links(&mut self, o: usize) -> WResult<()> {
        let path = self.path(&self.objs[o].names[0]);
        self.check_stat(o, &path).map(drop)
    }

    /// (object index, name index) of a random name, if any.
    fn random_name(&mut self) -> Option<(usize, usize)> {
        if self.objs.is_empty() {
            return None;
        }
        let o = self.rng.random_range(0..self.objs.len());
        let n = self.rng.random_range(0..self.objs[o].names.len());
        Some((o, n))
    }

    fn random_data(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.rng.fill_bytes(&mut v);
        v
    }

    fn step(&mut self) -> WResult<()> {
        let r = self.rng.random_range(0..100u32);
        match r {
            0..18 => self.create(),
            18..30 => self.write(),
            30..36 => self.truncate(),
            36..46 => self.link(),
            46..58 => self.rename_move(),
            58..63 => self.rename_replace(),
            63..66 => self.rename_noreplace_existing(),
            66..71 => self.exchange(),
            71..86 => self.unlink(),
            86..90 => self.dir_op(),
            90..95 => self.check_one(),
            _ => self.readdir_check(),
        }
    }

    fn create(&mut self) -> WResult<()> {
        if self.objs.len() >= MAX_OBJECTS {
            return self.unlink();
        }
        self.count("create");
        let dir = self.random_dir();
        let leaf = self.fresh();
        let name = Name { dir, leaf };
        let path = self.path(&name);
        let len = self.rng.random_range(0..=32 << 10);
        let data = self.random_data(len);
        let file = ctx(
            OpenOptions::new().write(true).create_new(true).open(&path),
            || format!("create {}", path.display()),
        )?;
        ctx(file.write_all_at(&data, 0), || {
            format!("write {}", path.display())
        })?;
        let ino = ctx(file.metadata(), || format!("fstat {}", path.display()))?.ino();
        self.note(format!("create {} (ino {ino})", self.rel_of(&path)));
        self.next += 1;
        let id = self.next;
        self.objs.push(Obj {
            id,
            ino,
            names: vec![name],
            data,
        });
        Ok(())
    }

    fn write(&mut self) -> WResult<()> {
        let Some((o, n)) = self.random_name() else {
            return self.create();
        };
        self.count("write");
        let path = self.path(&self.objs[o].names[n]);
        let len = self.rng.random_range(1..=16 << 10) as u64;
        let off = self.rng.random_range(0..=MAX_FILE - len);
        let data = self.random_data(len as usize);
        let file = ctx(OpenOptions::new().write(true).open(&path), || {
            format!("open {}", path.display())
        })?;
        ctx(file.write_all_at(&data, off), || {
            format!("pwrite {} {off}+{len}", path.display())
        })?;
        let model = &mut self.objs[o].data;
        let end = (off + len) as usize;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&data);
        Ok(())
    }

    fn truncate(&mut self) -> WResult<()> {
        let Some((o, n)) = self.random_name() else {
            return self.create();
        };
        self.count("truncate");
        let path = self.path(&self.objs[o].names[n]);
        let to = self.rng.random_range(0..=MAX_FILE);
        let file = ctx(OpenOptions::new().write(true).open(&path), || {
            format!("open {}", path.display())
        })?;
        ctx(file.set_len(to), || {
            format!("ftruncate {} to {to}", path.display())
        })?;
        self.objs[o].data.resize(to as usize, 0);
        Ok(())
    }

    fn link(&mut self) -> WResult<()> {
        let Some((o, n)) = self.random_name() else {
            return self.create();
        };
        self.count("link");
        let from = self.path(&self.objs[o].names[n]);
        let dir = self.random_dir();
        let leaf = self.fresh();
        let name = Name { dir, leaf };
        let to = self.path(&name);
        self.note(format!("link {} {}", self.rel_of(&from), self.rel_of(&to)));
        let mut r = std::fs::hard_link(&from, &to);
        if r.as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(Errno::ENOENT as i32))
        {
            // The kernel refuses to link a file whose cached link count is 0; that count can
            // be low after the race described at `check_stat`. Once the cached attributes
            // have expired, lstat fetches the filesystem's count and link must work.
            self.check_stat(o, &from)?;
            r = std::fs::hard_link(&from, &to);
        }
        ctx(r, || format!("link {} {}", from.display(), to.display()))?;
        self.objs[o].names.push(name);
        self.check_links(o)
    }

    fn rename_flags(&self, from: &Path, to: &Path, flags: RenameFlags) -> Result<(), Errno> {
        renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)
    }

    /// A name moved to a fresh name in a random directory, with RENAME_NOREPLACE half the
    /// time (it must succeed: the target name is new).
    fn rename_move(&mut self) -> WResult<()> {
        let Some((o, n)) = self.random_name() else {
            return self.create();
        };
        let noreplace = self.rng.random_bool(0.5);
        self.count(if noreplace {
            "rename_noreplace"
        } else {
            "rename"
        });
        let from = self.path(&self.objs[o].names[n]);
        let dir = self.random_dir();
        let leaf = self.fresh();
        let name = Name { dir, leaf };
        let to = self.path(&name);
        let flags = if noreplace {
            RenameFlags::RENAME_NOREPLACE
        } else {
            RenameFlags::empty()
        };
        self.note(format!(
            "rename {} {}",
            self.rel_of(&from),
            self.rel_of(&to)
        ));
        self.rename_flags(&from, &to, flags)
            .map_err(|e| format!("rename {} {}: {e}", from.display(), to.display()))?;
        self.objs[o].names[n] = name;
        Ok(())
    }

    /// Two random names; a rename of one onto the other.
    fn two_names(&mut self) -> Option<((usize, usize), (usize, usize))> {
        let a = self.random_name()?;
        let b = self.random_name()?;
        (a != b).then_some((a, b))
    }

    fn rename_replace(&mut self) -> WResult<()> {
        let Some(((ao, an), (bo, bn))) = self.two_names() else {
            return self.rename_move();
        };
        self.count("rename_replace");
        let from = self.path(&self.objs[ao].names[an]);
        let to = self.path(&self.objs[bo].names[bn]);
        self.note(format!(
            "rename over {} {} (ino {} onto ino {})",
            self.rel_of(&from),
            self.rel_of(&to),
            self.objs[ao].ino,
            self.objs[bo].ino
        ));
        self.rename_flags(&from, &to, RenameFlags::empty())
            .map_err(|e| format!("rename over {} {}: {e}", from.display(), to.display()))?;
        if ao == bo {
            // Two links of one inode: rename does nothing (POSIX), both names remain.
            return Ok(());
        }
        // ao != bo: the source name takes the target's place; the target's inode loses it.
        let target = self.objs[bo].names[bn].clone();
        self.objs[ao].names[an] = target;
        self.objs[bo].names.remove(bn);
        self.check_links(ao)?;
        if self.objs[bo].names.is_empty() {
            self.objs.remove(bo);
        } else {
            self.check_links(bo)?;
        }
        Ok(())
    }

    fn rename_noreplace_existing(&mut self) -> WResult<()> {
        let Some(((ao, an), (bo, bn))) = self.two_names() else {
            return self.rename_move();
        };
        self.count("rename_noreplace_eexist");
        let from = self.path(&self.objs[ao].names[an]);
        let to = self.path(&self.objs[bo].names[bn]);
        match self.rename_flags(&from, &to, RenameFlags::RENAME_NOREPLACE) {
            Err(Errno::EEXIST) => {
                self.report.expected_errors += 1;
                Ok(())
            }
            other => Err(format!(
                "rename NOREPLACE {} onto existing {}: {other:?}, expected EEXIST",
                from.display(),
                to.display()
            )),
        }
    }

    fn exchange(&mut self) -> WResult<()> {
        let Some(((ao, an), (bo, bn))) = self.two_names() else {
            return self.rename_move();
        };
        self.count("rename_exchange");
        let a = self.path(&self.objs[ao].names[an]);
        let b = self.path(&self.objs[bo].names[bn]);
        self.note(format!("exchange {} {}", self.rel_of(&a), self.rel_of(&b)));
        self.rename_flags(&a, &b, RenameFlags::RENAME_EXCHANGE)
            .map_err(|e| format!("RENAME_EXCHANGE {} {}: {e}", a.display(), b.display()))?;
        if ao != bo {
            let na = self.objs[ao].names[an].clone();
            let nb = self.objs[bo].names[bn].clone();
            self.objs[ao].names[an] = nb;
            self.objs[bo].names[bn] = na;
        }
        Ok(())
    }

    fn unlink(&mut self) -> WResult<()> {
        let Some((o, n)) = self.random_name() else {
            return self.create();
        };
        self.count("unlink");
        let path = self.path(&self.objs[o].names[n]);
        self.note(format!(
            "unlink {} (ino {}, {} names)",
            self.rel_of(&path),
            self.objs[o].ino,
            self.objs[o].names.len()
        ));
        ctx(std::fs::remove_file(&path), || {
            format!("unlink {}", path.display())
        })?;
        self.objs[o].names.remove(n);
        if self.objs[o].names.is_empty() {
            self.objs.remove(o);
            Ok(())
        } else {
            self.check_links(o)
        }
    }

    /// mkdir of an own directory in a shared one, or a move of one to another shared
    /// directory (with everything in it).
    fn dir_op(&mut self) -> WResult<()> {
        let parent = self.rng.random_range(0..self.shared);
        if self.own_dirs.len() < MAX_OWN_DIRS {
            self.count("mkdir");
            let leaf = format!("{}.d", self.fresh());
            let path = self.root.join(shared_name(parent)).join(&leaf);
            ctx(std::fs::create_dir(&path), || {
                format!("mkdir {}", path.display())
            })?;
            self.own_dirs.push((leaf, parent));
            return Ok(());
        }
        self.count("rename_dir");
        let k = self.rng.random_range(0..self.own_dirs.len());
        let from = self.root.join(self.dir_rel(DirRef::Own(k)));
        let to = self
            .root
            .join(shared_name(parent))
            .join(&self.own_dirs[k].0);
        if from == to {
            return Ok(());
        }
        self.note(format!(
            "rename dir {} {}",
            self.rel_of(&from),
            self.rel_of(&to)
        ));
        self.rename_flags(&from, &to, RenameFlags::RENAME_NOREPLACE)
            .map_err(|e| format!("rename dir {} {}: {e}", from.display(), to.display()))?;
        self.own_dirs[k].1 = parent;
        Ok(())
    }

    fn check_one(&mut self) -> WResult<()> {
        let Some((o, n)) = self.random_name() else {
            return self.create();
        };
        self.count("check");
        let path = self.path(&self.objs[o].names[n]);
        let meta = self.check_stat(o, &path)?;
        let obj = &self.objs[o];
        if meta.len() != obj.data.len() as u64 {
            return Err(format!(
                "{}: size {}, the model has {}",
                path.display(),
                meta.len(),
                obj.data.len(),
            ));
        }
        let mut got = Vec::new();
        ctx(
            File::open(&path).and_then(|mut f| f.read_to_end(&mut got)),
            || format!("read {}", path.display()),
        )?;
        if got != obj.data {
            return Err(format!(
                "{}: contents differ from the model:\n{}",
                path.display(),
                crate::fsx::describe_diff(&obj.data, &got, 0)
            ));
        }
        Ok(())
    }

    /// Lists a directory while other workers change it: this worker's entries there must
    /// appear exactly once each, and no other of its names.
    fn readdir_check(&mut self) -> WResult<()> {
        let d = self.random_dir();
        self.count("readdir");
        let rel = self.dir_rel(d);
        let path = self.root.join(&rel);
        let prefix = format!("w{}-", self.id);
        let mut seen = Vec::new();
        for entry in ctx(std::fs::read_dir(&path), || {
            format!("readdir {}", path.display())
        })? {
            let entry = ctx(entry, || format!("readdir {}", path.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && !name.ends_with(".d") {
                seen.push(name);
            }
        }
        seen.sort();
        let mut want: Vec<String> = self
            .objs
            .iter()
            .flat_map(|o| o.names.iter())
            .filter(|n| n.dir == d)
            .map(|n| n.leaf.clone())
            .collect();
        want.sort();
        if seen != want {
            return Err(format!(
                "readdir {rel}: this worker's entries {seen:?}, the model has {want:?}"
            ));
        }
        self.report.readdir_checks += 1;
        Ok(())
    }

    /// For a failure report: every name of each object named in `error`, as the model has it
    /// and as lstat sees it now.
    fn diagnose(&self, error: &str) -> String {
        let mut out = String::new();
        for o in &self.objs {
            let named = o
                .names
                .iter()
                .any(|n| error.contains(&format!("/{}", self.rel(n))));
            if !named {
                continue;
            }
            for n in &o.names {
                let rel = self.rel(n);
                let now = match std::fs::symlink_metadata(self.root.join(&rel)) {
                    Ok(m) => format!("ino {} nlink {} size {}", m.ino(), m.nlink(), m.len()),
                    Err(e) => e.to_string(),
                };
                out.push_str(&format!(
                    "\n  {rel}: model ino {} with {} names, size {}; lstat now: {now}",
                    o.ino,
                    o.names.len(),
                    o.data.len()
                ));
            }
        }
        out.push_str("\n  this worker's last operations (oldest first):");
        for h in &self.history {
            out.push_str(&format!("\n    {h}"));
        }
        out
    }

    fn finish(mut self) -> WorkerReport {
        let mut names = Vec::new();
        for o in &self.objs {
            for n in &o.names {
                names.push(NameReport {
                    path: self.rel(n),
                    object: format!("w{}-o{}", self.id, o.id),
                    size: o.data.len() as u64,
                    hash: fnv1a(&o.data),
                });
            }
        }
        names.sort_by(|a, b| a.path.cmp(&b.path));
        self.report.names = names;
        self.report.dirs = (0..self.own_dirs.len())
            .map(|k| self.dir_rel(DirRef::Own(k)))
            .collect();
        self.report.id = self.id;
        self.report
    }
}

/// Runs one worker until `seconds` have passed; the report goes to stdout as JSON.
pub fn worker(
    dir: &Path,
    id: usize,
    shared: usize,
    seed: u64,
    seconds: f64,
) -> WResult<WorkerReport> {
    let mut w = Worker {
        root: dir.to_path_buf(),
        id,
        shared,
        rng: ChaCha8Rng::seed_from_u64(seed.wrapping_add(id as u64)),
        next: 0,
        objs: Vec::new(),
        own_dirs: Vec::new(),
        report: WorkerReport::default(),
        history: Default::default(),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut ops = 0u64;
    while Instant::now() < deadline {
        if let Err(e) = w.step() {
            return Err(format!(
                "worker {id} (seed {seed}) at operation {ops}: {e}{}",
                w.diagnose(&e)
            ));
        }
        ops += 1;
    }
    Ok(w.finish())
}

/// Walks `root` (the stress directory) and checks it against `want`.
pub fn check_tree(root: &Path, want: &Expected) -> WResult<Counts> {
    let mut errors = Vec::new();
    // What the tree holds: relative file path -> (ino, nlink, size, hash); directories.
    let mut files: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    for s in &want.shared {
        dirs.insert(s.clone());
        stack.push(s.clone());
    }
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        for entry in ctx(std::fs::read_dir(&path), || {
            format!("readdir {}", path.display())
        })? {
            let entry = ctx(entry, || format!("readdir {}", path.display()))?;
            let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
            let meta = ctx(entry.metadata(), || format!("stat {child}"))?;
            if meta.is_dir() {
                dirs.insert(child.clone());
                stack.push(child);
            } else if meta.is_file() {
                let mut data = Vec::new();
                ctx(
                    File::open(root.join(&child)).and_then(|mut f| f.read_to_end(&mut data)),
                    || format!("read {child}"),
                )?;
                if data.len() as u64 != meta.len() {
                    errors.push(format!(
                        "{child}: stat size {} but {} bytes read",
                        meta.len(),
                        data.len()
                    ));
                }
                files.insert(child, (meta.ino(), meta.nlink(), meta.len(), fnv1a(&data)));
            } else {
                errors.push(format!("{child}: unexpected file type"));
            }
        }
    }
    let want_dirs: BTreeSet<String> = want
        .shared
        .iter()
        .chain(want.dirs.iter())
        .cloned()
        .collect();
    for d in dirs.symmetric_difference(&want_dirs) {
        if dirs.contains(d) {
            errors.push(format!("directory {d} in the tree, no worker reports it"));
        } else {
            errors.push(format!("directory {d} reported, missing from the tree"));
        }
    }
    let mut by_object: BTreeMap<&str, Vec<&NameReport>> = BTreeMap::new();
    for n in &want.names {
        by_object.entry(&n.object).or_default().push(n);
    }
    let mut inode_of_object: BTreeMap<&str, u64> = BTreeMap::new();
    let mut object_of_inode: BTreeMap<u64, &str> = BTreeMap::new();
    for n in &want.names {
        let Some(&(ino, nlink, size, hash)) = files.get(&n.path) else {
            errors.push(format!("{} reported, missing from the tree", n.path));
            continue;
        };
        let links = by_object[n.object.as_str()].len() as u64;
        if nlink != links || size != n.size || hash != n.hash {
            errors.push(format!(
                "{}: nlink {nlink} size {size} hash {hash:x}; reported {links} names, size {}, hash {:x}",
                n.path, n.size, n.hash
            ));
        }
        match inode_of_object.insert(&n.object, ino) {
            Some(other) if other != ino => errors.push(format!(
                "{}: names of object {} are on different inodes ({other}, {ino})",
                n.path, n.object
            )),
            _ => {}
        }
        match object_of_inode.insert(ino, &n.object) {
            Some(other) if other != n.object => errors.push(format!(
                "{}: inode {ino} holds objects {other} and {}",
                n.path, n.object
            )),
            _ => {}
        }
    }
    let reported: BTreeSet<&str> = want.names.iter().map(|n| n.path.as_str()).collect();
    for path in files.keys() {
        if !reported.contains(path.as_str()) {
            errors.push(format!("{path} in the tree, no worker reports it"));
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(40);
        return Err(format!(
            "the tree does not match the reports ({n} problems):\n  {}",
            errors.join("\n  ")
        ));
    }
    let mut inodes = BTreeMap::new();
    for (ino, _, size, _) in files.values() {
        inodes.insert(*ino, *size);
    }
    Ok(Counts {
        files: inodes.len() as u64,
        names: files.len() as u64,
        bytes: inodes.values().sum(),
        dirs: (dirs.len() - want.shared.len()) as u64,
    })
}

/// What the reports say survives.
pub fn expected_counts(want: &Expected) -> Counts {
    let mut objects: BTreeMap<&str, u64> = BTreeMap::new();
    for n in &want.names {
        objects.insert(&n.object, n.size);
    }
    Counts {
        files: objects.len() as u64,
        names: want.names.len() as u64,
        bytes: objects.values().sum(),
        dirs: want.dirs.len() as u64,
    }
}

/// Starts `procs` workers (this executable, `stress-worker`), waits for them, merges their
/// reports and checks the tree. `save` receives the expected tree (for `stress-check` after
/// a remount).
pub fn run(cfg: &StressConfig, save: Option<&Path>) -> WResult<StressSummary> {
    if cfg.procs == 0 || cfg.shared_dirs == 0 {
        return Err("--procs and --shared-dirs must be at least 1".into());
    }
    let shared: Vec<String> = (0..cfg.shared_dirs).map(shared_name).collect();
    for s in &shared {
        let p = cfg.dir.join(s);
        ctx(std::fs::create_dir(&p), || format!("mkdir {}", p.display()))?;
    }
    let exe = ctx(std::env::current_exe(), || "current_exe".into())?;
    let start = Instant::now();
    let mut children = Vec::new();
    for id in 0..cfg.procs {
        let child = Command::new(&exe)
            .arg("stress-worker")
            .arg(&cfg.dir)
            .args([
                "--id",
                &id.to_string(),
                "--shared-dirs",
                &cfg.shared_dirs.to_string(),
                "--seed",
                &cfg.seed.to_string(),
                "--seconds",
                &cfg.seconds.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        children.push(ctx(child, || format!("spawn worker {id}"))?);
    }
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (id, child) in children.into_iter().enumerate() {
        let out = ctx(child.wait_with_output(), || format!("wait for worker {id}"))?;
        if !out.status.success() {
            failures.push(format!(
                "worker {id} exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        match serde_json::from_slice::<WorkerReport>(&out.stdout) {
            Ok(r) => reports.push(r),
            Err(e) => failures.push(format!("worker {id}: unreadable report: {e}")),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if !failures.is_empty() {
        return Err(failures.join("\n"));
    }
    let mut want = Expected {
        shared,
        ..Default::default()
    };
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected_errors = 0;
    let mut readdir_checks = 0;
    let mut kernel_stale_nlink = 0;
    for r in reports {
        kernel_stale_nlink += r.kernel_stale_nlink;
        for (k, v) in r.ops {
            *ops.entry(k).or_default() += v;
        }
        expected_errors += r.expected_errors;
        readdir_checks += r.readdir_checks;
        want.names.extend(r.names);
        want.dirs.extend(r.dirs);
    }
    if let Some(path) = save {
        let json = serde_json::to_vec(&want).map_err(|e| e.to_string())?;
        ctx(std::fs::write(path, json), || {
            format!("write {}", path.display())
        })?;
    }
    // Link counts cached by the kernel during the run expire first (see `check_stat`).
    std::thread::sleep(ATTR_TTL);
    let found = check_tree(&cfg.dir, &want)?;
    let reported = expected_counts(&want);
    if found != reported {
        return Err(format!(
            "counts differ: reported {reported:?}, found {found:?}"
        ));
    }
    Ok(StressSummary {
        procs: cfg.procs,
        seconds,
        total_ops: ops.values().sum(),
        ops,
        expected_errors,
        readdir_checks,
        kernel_stale_nlink,
        reported,
        found,
    })
}

/// Checks a tree against an expected tree saved by [`run`].
pub fn check_saved(dir: &Path, saved: &Path) -> WResult<Counts> {
    let json = ctx(std::fs::read(saved), || format!("read {}", saved.display()))?;
    let want: Expected = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    let found = check_tree(dir, &want)?;
    let reported = expected_counts(&want);
    if found != reported {
        return Err(format!(
            "counts differ: saved {reported:?}, found {found:?}"
        ));
    }
    Ok(found)
}
