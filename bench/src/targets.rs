//! The filesystems under test and the guards that mount and always unmount them.
//!
//! Every target is mounted fresh for each round on a new pool or backing store in
//! `/dev/shm/pfnfs-bench.PID/` (with `--huge-pages`, a tmpfs mounted there with
//! `huge=always`, so that stores sit in 2 MiB pages as persistent memory is mapped), on a
//! mount point in `/tmp/pfnfs-bench.PID/`; for the metadata jobs once more, on a store sized
//! for their files in `/dev/shm/pfnfs-bench-meta.PID/` (always 4 KiB pages):
//! - pfnfs-direct, pfnfs-buffered: the pfnfs binary's `mount --foreground --mode M` as a
//!   child; unmounted with its `umount` (both run from a copy of the binary that
//!   [`crate::Options::pfnfs`] names, see [`WorkDirs::pfnfs`]).
//! - tmpfs: `mount(2)` of a new tmpfs (as root), else a fresh directory in /dev/shm.
//! - bindfs: `bindfs -f --multithreaded STORE MNT` as a child (multithreaded: its fastest
//!   setting; bindfs defaults to one thread); unmounted with `fusermount3 -u`.
//!
//! Children run in their own process group, so a Ctrl-C at the terminal does not kill a
//! daemon under a live mount; [`Mount`]'s `Drop` unmounts and reaps them (SIGTERM, then
//! SIGKILL, by PID, only if they do not exit after the unmount).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::Serialize;

use pfnfs_fs::{mountinfo, procs};

use crate::system;

/// How long a mount may take to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after its unmount.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A filesystem under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
pub enum TargetKind {
    /// pfnfs, `--mode direct`.
    #[value(name = "pfnfs-direct")]
    #[serde(rename = "pfnfs-direct")]
    PfnfsDirect,
    /// pfnfs, `--mode buffered`.
    #[value(name = "pfnfs-buffered")]
    #[serde(rename = "pfnfs-buffered")]
    PfnfsBuffered,
    /// tmpfs: the in-kernel upper bound.
    #[value(name = "tmpfs")]
    #[serde(rename = "tmpfs")]
    Tmpfs,
    /// bindfs over tmpfs: a libfuse filesystem.
    #[value(name = "bindfs")]
    #[serde(rename = "bindfs")]
    Bindfs,
}

/// All targets, in the order a round visits them.
pub const ALL_TARGETS: [TargetKind; 4] = [
    TargetKind::PfnfsDirect,
    TargetKind::PfnfsBuffered,
    TargetKind::Tmpfs,
    TargetKind::Bindfs,
];

impl TargetKind {
    /// The name used on the command line and in the reports.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::PfnfsDirect => "pfnfs-direct",
            TargetKind::PfnfsBuffered => "pfnfs-buffered",
            TargetKind::Tmpfs => "tmpfs",
            TargetKind::Bindfs => "bindfs",
        }
    }

    /// pfnfs in either mode.
    pub fn is_pfnfs(self) -> bool {
        matches!(self, TargetKind::PfnfsDirect | TargetKind::PfnfsBuffered)
    }

    /// Served by a FUSE daemon.
    pub fn is_fuse(self) -> bool {
        self != TargetKind::Tmpfs
    }

    /// Has a page cache, so `direct=0` means something different from `direct=1`.
    pub fn has_page_cache(self) -> bool {
        self != TargetKind::PfnfsDirect
    }
}

/// Where a benchmark keeps its stores and mount points; removed by `Drop` (unless something
/// is still mounted below it).
pub struct WorkDirs {
    /// In /dev/shm: pools and backing stores of the fio jobs.
    pub store: PathBuf,
    /// In /dev/shm, always in 4 KiB pages: pools and backing stores of the metadata jobs
    /// (`/dev/shm/pfnfs-bench-meta.PID`; with `--huge-pages` a 100-byte file in `store` would
    /// take a 2 MiB page).
    pub meta_store: PathBuf,
    /// In /tmp: mount points, and the copy of the pfnfs binary that mounts pfnfs.
    pub mounts: PathBuf,
    /// A copy of the pfnfs binary (for `pfnfs bench`, `/proc/self/exe`: the running binary),
    /// so that every pfnfs mount of the run uses the same build as the benchmark even if
    /// `cargo build` replaces the file the benchmark was started from while it runs.
    pub pfnfs: PathBuf,
    /// Whether `store` is a tmpfs this run mounted (`--huge-pages`), unmounted by `Drop`.
    store_mounted: bool,
}

impl WorkDirs {
    /// Creates `/dev/shm/pfnfs-bench.PID` and `/tmp/pfnfs-bench.PID` (with a copy of the
    /// binary `pfnfs` as `pfnfs` in it). With `huge_store_bytes`, mounts a tmpfs of that size
    /// with `huge=always` on the first.
    pub fn create(huge_store_bytes: Option<u64>, pfnfs: &Path) -> Result<WorkDirs, String> {
        use std::os::unix::fs::PermissionsExt;
        let pid = std::process::id();
        let mounts = std::env::temp_dir().join(format!("pfnfs-bench.{pid}"));
        let mut dirs = WorkDirs {
            store: PathBuf::from(format!("/dev/shm/pfnfs-bench.{pid}")),
            meta_store: PathBuf::from(format!("/dev/shm/pfnfs-bench-meta.{pid}")),
            pfnfs: mounts.join("pfnfs"),
            mounts,
            store_mounted: false,
        };
        for d in [&dirs.store, &dirs.meta_store, &dirs.mounts] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        if let Some(bytes) = huge_store_bytes {
            mount_tmpfs(&dirs.store, bytes, true, None)?;
            dirs.store_mounted = true;
        }
        std::fs::copy(pfnfs, &dirs.pfnfs)
            .and_then(|_| {
                std::fs::set_permissions(&dirs.pfnfs, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| {
                format!(
                    "copying {} to {}: {e}",
                    pfnfs.display(),
                    dirs.pfnfs.display()
                )
            })?;
        Ok(dirs)
    }
}

impl Drop for WorkDirs {
    fn drop(&mut self) {
        if self.store_mounted
            && let Err(e) = unmount_syscall(&self.store)
        {
            eprintln!("pfnfs bench: unmounting {}: {e}", self.store.display());
        }
        let entries = mountinfo::read().unwrap_or_default();
        for dir in [&self.mounts, &self.store, &self.meta_store] {
            if let Some(e) = entries.iter().find(|e| e.mount_point.starts_with(dir)) {
                eprintln!(
                    "pfnfs bench: {} is still mounted; leaving {}",
                    e.mount_point.display(),
                    dir.display()
                );
                continue;
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A live mount of one target. `Drop` unmounts it (errors go to stderr); call
/// [`Mount::unmount`] to get them.
pub struct Mount {
    kind: TargetKind,
    /// The mount point (or, for tmpfs without root, the plain directory).
    pub dir: PathBuf,
    /// The pool file (pfnfs) or backing directory (bindfs, tmpfs without root).
    store: Option<PathBuf>,
    child: Option<Child>,
    /// True while something is mounted on `dir`.
    mounted: bool,
    log: Option<PathBuf>,
    /// The pfnfs binary that mounted (and so unmounts) a pfnfs target.
    pfnfs: Option<PathBuf>,
}

/// How to mount.
pub struct MountSpec<'a> {
    /// The target.
    pub kind: TargetKind,
    /// The work directories.
    pub dirs: &'a WorkDirs,
    /// Where the pool or backing store goes: `dirs.store` or `dirs.meta_store`.
    pub store_dir: &'a Path,
    /// The tmpfs target's `nr_inodes` (None: tmpfs's default).
    pub tmpfs_inodes: Option<u64>,
    /// A name unique within the run (`pfnfs-direct.r1`).
    pub tag: String,
    /// Size of the pool or tmpfs.
    pub store_bytes: u64,
    /// pfnfs worker threads (None: pfnfs's default).
    pub threads: Option<u16>,
    /// Where the daemon writes its stderr.
    pub log: PathBuf,
    /// Mount the tmpfs target with `huge=always`.
    pub huge_pages: bool,
}

impl Mount {
    /// Mounts `spec.kind` freshly.
    pub fn new(spec: &MountSpec<'_>) -> Result<Mount, String> {
        let dir = spec.dirs.mounts.join(&spec.tag);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut mount = Mount {
            kind: spec.kind,
            dir,
            store: None,
            child: None,
            mounted: false,
            log: None,
            pfnfs: None,
        };
        match spec.kind {
            TargetKind::PfnfsDirect | TargetKind::PfnfsBuffered => mount.mount_pfnfs(spec)?,
            TargetKind::Tmpfs => mount.mount_tmpfs(spec)?,
            TargetKind::Bindfs => mount.mount_bindfs(spec)?,
        }
        Ok(mount)
    }

    fn mount_pfnfs(&mut self, spec: &MountSpec<'_>) -> Result<(), String> {
        let pool = spec.store_dir.join(format!("{}.pool", spec.tag));
        let _ = std::fs::remove_file(&pool);
        self.store = Some(pool.clone());
        self.pfnfs = Some(spec.dirs.pfnfs.clone());
        let mode = if spec.kind == TargetKind::PfnfsDirect {
            "direct"
        } else {
            "buffered"
        };
        let mut command = Command::new(&spec.dirs.pfnfs);
        command
            .arg("mount")
            .arg(&pool)
            .arg(&self.dir)
            .args(["--foreground", "--mode", mode, "--log-level", "warn"])
            .arg("--size")
            .arg(spec.store_bytes.to_string());
        if let Some(t) = spec.threads {
            command.arg("--threads").arg(t.to_string());
        }
        self.spawn(command, &spec.log)?;
        self.wait_mounted(|e| e.is_pfnfs())
    }

    fn mount_bindfs(&mut self, spec: &MountSpec<'_>) -> Result<(), String> {
        let store = spec.store_dir.join(format!("{}.backing", spec.tag));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
        self.store = Some(store.clone());
        let mut command = Command::new("bindfs");
        command
            .args(["-f", "--multithreaded"])
            .arg(&store)
            .arg(&self.dir);
        self.spawn(command, &spec.log)?;
        self.wait_mounted(|e| e.fstype.starts_with("fuse"))
    }

    fn mount_tmpfs(&mut self, spec: &MountSpec<'_>) -> Result<(), String> {
        if !system::is_root() {
            // Not root: a fresh directory on the /dev/shm tmpfs.
            let store = spec.store_dir.join(format!("{}.dir", spec.tag));
            let _ = std::fs::remove_dir_all(&store);
            std::fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
            self.dir = store.clone();
            self.store = Some(store);
            return Ok(());
        }
        mount_tmpfs(
            &self.dir,
            spec.store_bytes,
            spec.huge_pages,
            spec.tmpfs_inodes,
        )?;
        self.mounted = true;
        Ok(())
    }

    fn spawn(&mut self, mut command: Command, log: &Path) -> Result<(), String> {
        let file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        self.child = Some(child);
        self.log = Some(log.to_path_buf());
        Ok(())
    }

    /// Waits until a mount on `self.dir` that passes `check` appears, or the child exits.
    fn wait_mounted(
        &mut self,
        check: impl Fn(&mountinfo::MountEntry) -> bool,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let entries = mountinfo::read()?;
            if mountinfo::find_by_mount_point(&entries, &self.dir).is_some_and(&check) {
                self.mounted = true;
                return Ok(());
            }
            let Some(child) = self.child.as_mut() else {
                return Err(format!("{}: no daemon was started", self.kind.name()));
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "{} exited ({status}) before {} was mounted{}",
                    self.kind.name(),
                    self.dir.display(),
                    self.log_tail()
                ));
            }
            if start.elapsed() > MOUNT_TIMEOUT || system::interrupted() {
                let why = if system::interrupted() {
                    "interrupted".to_string()
                } else {
                    format!("not mounted after {} s", MOUNT_TIMEOUT.as_secs())
                };
                return Err(format!(
                    "{} on {}: {why}{}",
                    self.kind.name(),
                    self.dir.display(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n    ");
        if tail.trim().is_empty() {
            String::new()
        } else {
            format!("; its log ({}):\n    {tail}", log.display())
        }
    }

    /// The PID of the process serving this mount: for pfnfs, the process holding the pool
    /// that /proc/self/mountinfo names as the mount's source (which should be our child);
    /// for bindfs, our child; None for tmpfs.
    pub fn daemon_pid(&self) -> Option<u32> {
        let child = self.child.as_ref().map(|c| c.id());
        if self.kind.is_pfnfs() {
            let entries = mountinfo::read().ok()?;
            let entry = mountinfo::find_by_mount_point(&entries, &self.dir)?;
            let holders = procs::holders(Path::new(&entry.source), procs::Scan::Daemons);
            return holders
                .iter()
                .map(|h| h.pid as u32)
                .find(|&p| Some(p) == child)
                .or_else(|| holders.first().map(|h| h.pid as u32))
                .or(child);
        }
        child
    }

    /// Unmounts, waits for the daemon, removes the store. Idempotent.
    pub fn unmount(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.mounted {
            let result = match self.kind {
                TargetKind::PfnfsDirect | TargetKind::PfnfsBuffered => self.unmount_pfnfs(),
                TargetKind::Bindfs => unmount_fusermount(&self.dir),
                TargetKind::Tmpfs => unmount_syscall(&self.dir),
            };
            if let Err(e) = result {
                problems.push(e);
                if let Err(e) = detach(&self.dir) {
                    problems.push(e);
                }
            }
            self.mounted = false;
        }
        if let Some(mut child) = self.child.take() {
            match reap(&mut child, EXIT_TIMEOUT) {
                Ok(status) if status.success() => {}
                Ok(status) => problems.push(format!(
                    "{} daemon {} exited with {status}{}",
                    self.kind.name(),
                    child.id(),
                    self.log_tail()
                )),
                Err(e) => problems.push(e),
            }
        }
        if let Some(store) = self.store.take() {
            let _ = if store.is_dir() {
                std::fs::remove_dir_all(&store)
            } else {
                std::fs::remove_file(&store)
            };
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unmounting {} ({}): {}",
                self.dir.display(),
                self.kind.name(),
                problems.join("; ")
            ))
        }
    }

    /// The mounting pfnfs binary's `umount` (which waits for the daemon to finish), retried
    /// for 10 s while the mount is busy; the error names the processes that use the mount.
    fn unmount_pfnfs(&mut self) -> Result<(), String> {
        let Some(exe) = self.pfnfs.clone() else {
            return Err(format!(
                "{}: no pfnfs binary mounted it",
                self.dir.display()
            ));
        };
        let start = Instant::now();
        loop {
            let mut child = Command::new(&exe)
                .arg("umount")
                .arg(&self.dir)
                .args(["--timeout", "60"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot run pfnfs umount: {e}"))?;
            let status = reap(&mut child, Duration::from_secs(90))?;
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            let busy = stderr.contains("busy") && is_mounted(&self.dir);
            if !busy || start.elapsed() > Duration::from_secs(10) {
                let users = users_of(&self.dir);
                let users = if users.is_empty() {
                    String::new()
                } else {
                    format!(" (in use by {})", users.join(", "))
                };
                return Err(format!("pfnfs umount: {}{users}", stderr.trim()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Processes whose working directory, root, open files or mappings are below `dir`, as
/// `PID (comm)`. Reads only /proc links and maps, never the mount.
fn users_of(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let proc_dir = entry.path();
        let link_below = |p: PathBuf| std::fs::read_link(p).is_ok_and(|t| t.starts_with(dir));
        let uses = link_below(proc_dir.join("cwd"))
            || link_below(proc_dir.join("root"))
            || std::fs::read_dir(proc_dir.join("fd"))
                .map(|fds| fds.flatten().any(|fd| link_below(fd.path())))
                .unwrap_or(false)
            || std::fs::read_to_string(proc_dir.join("maps"))
                .map(|m| m.lines().any(|l| l.contains(&*dir.to_string_lossy())))
                .unwrap_or(false);
        if uses {
            let comm = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
            found.push(format!("{pid} ({})", comm.trim()));
        }
    }
    found
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("pfnfs bench: {e}");
        }
    }
}

/// Mounts a new tmpfs of `bytes` on `dir` (as root), in 2 MiB pages if `huge`, with room for
/// `inodes` inodes if given.
fn mount_tmpfs(dir: &Path, bytes: u64, huge: bool, inodes: Option<u64>) -> Result<(), String> {
    let data = format!(
        "size={bytes},mode=0755{}{}",
        if huge { ",huge=always" } else { "" },
        inodes.map_or_else(String::new, |n| format!(",nr_inodes={n}"))
    );
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|errno| {
        format!(
            "mount -t tmpfs -o {data} on {}: {}",
            dir.display(),
            std::io::Error::from(errno)
        )
    })
}

fn is_mounted(dir: &Path) -> bool {
    mountinfo::read()
        .map(|e| mountinfo::find_by_mount_point(&e, dir).is_some())
        .unwrap_or(false)
}

/// `fusermount3 -u DIR`, retried for 10 s while the mount is busy.
fn unmount_fusermount(dir: &Path) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run fusermount3: {e}"))?;
        if out.status.success() || !is_mounted(dir) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "fusermount3 -u: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `umount2(DIR)`, retried for 10 s while busy.
fn unmount_syscall(dir: &Path) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let Err(errno) = nix::mount::umount2(dir, nix::mount::MntFlags::empty()) else {
            return Ok(());
        };
        let err = std::io::Error::from(errno);
        if err.raw_os_error() != Some(libc::EBUSY) || start.elapsed() > Duration::from_secs(10) {
            return Err(format!("umount {}: {err}", dir.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Last resort: a lazy unmount, so nothing stays attached to the mount point.
fn detach(dir: &Path) -> Result<(), String> {
    if !is_mounted(dir) {
        return Ok(());
    }
    if system::is_root() {
        if nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).is_ok() {
            return Ok(());
        }
    } else if Command::new("fusermount3")
        .arg("-uz")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    Err(format!("{}: could not even detach it", dir.display()))
}

/// Waits for `child` up to `timeout`; then SIGTERM, 5 s, SIGKILL (to that PID only).
pub fn reap(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => break,
            Err(e) => return Err(format!("waiting for process {}: {e}", child.id())),
        }
    }
    // Our own child, not reaped yet, so the PID is still its.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "process {} did not exit within {} s; stopped it with SIGTERM ({status})",
                child.id(),
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "process {} did not exit within {} s nor after SIGTERM; killed it",
        child.id(),
        timeout.as_secs()
    ))
}
