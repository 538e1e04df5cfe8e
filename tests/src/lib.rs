//! Test support: the `pfnfs` binary, a mount guard that always unmounts, thin wrappers over
//! the system calls std lacks, and tree snapshots for before/after comparisons.
//!
//! - [`pfnfs_bin`]: where the binary is (see its doc for how it is found or built).
//! - [`MountGuard`]: a pool in a temp dir mounted by a `pfnfs mount --foreground` child this
//!   process owns by PID; `Drop` unmounts, waits for that child, and removes the temp dir.
//! - [`both_modes!`]: one test body, run as `NAME::direct` and `NAME::buffered`.
//! - [`users`]: test users, and steps run as them in a copy of the test binary.
//! - [`sys`]: `renameat2`, `fallocate`, `lseek`, xattrs, `mknod`, `utimensat`, ... returning
//!   `io::Result` so tests can compare raw errno values.
//! - [`snapshot`]: every entry of a tree with its metadata, xattrs, link targets and
//!   contents; [`diff_snapshots`] lists the differences.
//!
//! A test that needs FUSE fails when `/dev/fuse` or `fusermount3` is missing, unless
//! `PFNFS_SKIP_WITHOUT_FUSE=1` is set (for machines without FUSE): then it prints `SKIP:` and
//! passes. CI never sets it, so a CI machine without FUSE fails the run.
//!
//! A mount with `-o io_uring` (from a test or `PFNFS_TEST_OPTIONS`) must really be served over
//! the rings: [`MountGuard::unmount`] fails if the daemon answered no request over io_uring.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use pfnfs_fs::Mode;

pub mod nfs;
pub mod sys;
pub mod users;

/// Size of the pool each [`MountGuard`] creates.
pub const POOL_BYTES: u64 = 256 << 20;

/// How long a mount or an unmount may take before the harness gives up.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `pfnfs` binary.
///
/// Found in this order:
/// 1. `$PFNFS_BIN`, if set (must exist).
/// 2. Otherwise `cargo build -p pfnfs --bin pfnfs` is run once per test process (a no-op when
///    up to date; cargo releases its build lock before running tests, so this does not
///    deadlock), with the profile the tests were built with, and the binary is taken from the
///    same target directory as the running test executable (`target/<profile>/pfnfs`, the
///    parent of the test's `deps/`). This honours `CARGO_TARGET_DIR` and `--release` and can
///    never pick up a stale binary.
pub fn pfnfs_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("PFNFS_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "PFNFS_BIN={} does not exist",
                path.display()
            );
            path
        }
        None => build_binary("pfnfs", "pfnfs"),
    })
}

/// The `pfnfs-fsx` exerciser binary (package `pfnfs-exerciser`): `$PFNFS_FSX_BIN` if set,
/// otherwise built and found like [`pfnfs_bin`].
pub fn fsx_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("PFNFS_FSX_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "PFNFS_FSX_BIN={} does not exist",
                path.display()
            );
            path
        }
        None => build_binary("pfnfs-exerciser", "pfnfs-fsx"),
    })
}

/// Builds `bin` of `package` with the tests' profile; returns its path beside the running test
/// executable (see [`pfnfs_bin`]).
fn build_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test executable has a parent directory");
    // Tests run from target/<profile>/deps, examples from target/<profile>/examples.
    let profile_dir = if deps
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        deps.parent().unwrap()
    } else {
        deps
    };
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--profile",
            &profile,
        ])
        .current_dir(workspace)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} build -p {package}: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} failed: {status}"
    );
    let path = profile_dir.join(bin);
    assert!(
        path.is_file(),
        "{} missing after cargo build -p {package}",
        path.display()
    );
    path
}

/// Why FUSE tests cannot run here, if they cannot.
pub fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some(
            "/dev/fuse is missing (load the fuse module or run with --device /dev/fuse)".into(),
        );
    }
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
        .unwrap_or(false);
    if !found {
        return Some("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    None
}

/// The switch that lets FUSE tests pass as skipped where FUSE is missing.
pub const SKIP_SWITCH: &str = "PFNFS_SKIP_WITHOUT_FUSE";

/// Whether a FUSE test must be skipped: false where FUSE works; where it does not, true
/// (after printing why) if `PFNFS_SKIP_WITHOUT_FUSE=1`, else a panic saying why.
pub fn skip_without_fuse() -> bool {
    skip_if_missing(fuse_missing(), SKIP_SWITCH, "the tests that mount")
}

/// Whether tests needing something `missing` says is absent must be skipped: false if
/// nothing is missing; else true (after printing why) if the environment variable `switch`
/// is `1`, and otherwise a panic saying why and how to skip `what`.
pub fn skip_if_missing(missing: Option<String>, switch: &str, what: &str) -> bool {
    let Some(why) = missing else {
        return false;
    };
    if std::env::var(switch).is_ok_and(|v| v == "1") {
        eprintln!("SKIP: {why}");
        return true;
    }
    panic!("{why}; set {switch}=1 to skip {what} instead");
}

/// Runs `body` on a fresh mount in `mode`, then unmounts and checks that the daemon exited
/// cleanly. Used by [`both_modes!`].
pub fn run_in_mode(mode: Mode, body: fn(&mut MountGuard)) {
    if skip_without_fuse() {
        return;
    }
    let mut guard = MountGuard::new(mode);
    body(&mut guard);
    if let Err(e) = guard.unmount() {
        panic!("after the test: {e}");
    }
}

/// Like [`run_in_mode`], on a mount with extra `-o` options.
pub fn run_with_options(mode: Mode, options: &[&str], body: fn(&mut MountGuard)) {
    if skip_without_fuse() {
        return;
    }
    let mut guard = MountGuard::with_options(mode, options);
    body(&mut guard);
    if let Err(e) = guard.unmount() {
        panic!("after the test: {e}");
    }
}

/// For each test function `NAME(&mut MountGuard)`, defines `mod NAME` with the tests
/// `NAME::direct` and `NAME::buffered`, which run it on a fresh [`MountGuard`] in that mode.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::mode_tests!($name);
            }
        )*
    };
}

/// Like [`both_modes!`], plus `NAME::io_uring`: direct mode served over FUSE over io_uring
/// (`-o io_uring`), which decodes requests itself instead of through fuser.
#[macro_export]
macro_rules! all_transports {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                $crate::mode_tests!($name);

                #[test]
                fn io_uring() {
                    $crate::run_with_options($crate::Mode::Direct, &["io_uring"], super::$name)
                }
            }
        )*
    };
}

/// The `direct` and `buffered` tests of [`both_modes!`] and [`all_transports!`].
#[doc(hidden)]
#[macro_export]
macro_rules! mode_tests {
    ($name:ident) => {
        #[test]
        fn direct() {
            $crate::run_in_mode($crate::Mode::Direct, super::$name)
        }

        #[test]
        fn buffered() {
            $crate::run_in_mode($crate::Mode::Buffered, super::$name)
        }
    };
}

/// Mount options every [`MountGuard`] adds: `PFNFS_TEST_OPTIONS` (comma-separated), so a
/// whole suite can run again over another transport (`PFNFS_TEST_OPTIONS=io_uring`).
pub fn extra_mount_options() -> Vec<String> {
    std::env::var("PFNFS_TEST_OPTIONS")
        .unwrap_or_default()
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect()
}

/// The kernel's switch for FUSE over io_uring (Linux 6.14+).
pub const FUSE_URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Turns FUSE over io_uring on in the kernel (root only; it is off by default). Panics if
/// the kernel has no such switch or refuses: a test that asked for io_uring must not pass
/// on /dev/fuse without saying so.
pub fn enable_fuse_io_uring() {
    let on = |s: &str| matches!(s.trim(), "Y" | "1");
    let now = std::fs::read_to_string(FUSE_URING_PARAM)
        .unwrap_or_else(|e| panic!("{FUSE_URING_PARAM}: {e} (kernel without FUSE over io_uring)"));
    if !on(&now) {
        std::fs::write(FUSE_URING_PARAM, "Y").unwrap_or_else(|e| {
            panic!("cannot turn on FUSE over io_uring ({FUSE_URING_PARAM}): {e}")
        });
    }
}

/// A pool in a temp dir, mounted by a `pfnfs mount --foreground` child.
///
/// Ownership: the guard owns the temp dir and the child process. `Drop` always unmounts
/// (`fusermount3 -u`, retried while busy; `-uz` as the last resort), waits for the child
/// (SIGTERM, then SIGKILL, to that PID only, if it hangs), and removes the temp dir.
pub struct MountGuard {
    dir: Option<tempfile::TempDir>,
    pool: PathBuf,
    mountpoint: PathBuf,
    mode: Mode,
    options: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    /// Address-space limit of the daemon (`ulimit -v`, KiB), if any.
    limit_kib: Option<u64>,
}

/// Why [`MountGuard::try_existing`] did not mount.
#[derive(Debug)]
pub struct MountFailure {
    /// The daemon's exit code (None: killed by a signal, or still running at the timeout).
    pub code: Option<i32>,
    /// The daemon did not mount, nor exit, in time (it was killed).
    pub timed_out: bool,
    /// Everything the daemon printed.
    pub output: String,
}

impl MountGuard {
    /// Creates a [`POOL_BYTES`] pool with `pfnfs mkfs` and mounts it. Panics (with the
    /// daemon's log) if that fails.
    pub fn new(mode: Mode) -> MountGuard {
        MountGuard::with_options(mode, &[])
    }

    /// Like [`MountGuard::new`] with extra `-o` options.
    pub fn with_options(mode: Mode, options: &[&str]) -> MountGuard {
        MountGuard::with_pool_size(mode, POOL_BYTES, options)
    }

    /// Like [`MountGuard::with_options`] with a pool of `pool_bytes` (at least 16 MiB).
    pub fn with_pool_size(mode: Mode, pool_bytes: u64, options: &[&str]) -> MountGuard {
        let dir = tempfile::Builder::new()
            .prefix("pfnfs-test-")
            .tempdir()
            .expect("tempdir");
        let pool = dir.path().join("test.pool");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("create mount point");
        let mut guard = MountGuard {
            log: dir.path().join("daemon.log"),
            dir: Some(dir),
            pool,
            mountpoint,
            mode,
            options: options.iter().map(|s| s.to_string()).collect(),
            child: None,
            limit_kib: None,
        };
        let out = Command::new(pfnfs_bin())
            .arg("mkfs")
            .arg(&guard.pool)
            .args(["--size", &pool_bytes.to_string()])
            .output()
            .expect("run pfnfs mkfs");
        assert!(
            out.status.success(),
            "pfnfs mkfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard.mount();
        guard
    }

    /// Mounts an existing pool (which the guard does not own) on a mount point in a new temp
    /// dir, the daemon limited to `limit_bytes` of address space if given. A daemon that exits
    /// before mounting, or neither mounts nor exits within the mount timeout (it is killed), is
    /// an `Err` with its exit code and output.
    pub fn try_existing(
        pool: &Path,
        mode: Mode,
        limit_bytes: Option<u64>,
    ) -> Result<MountGuard, MountFailure> {
        MountGuard::try_existing_with_options(pool, mode, limit_bytes, &[])
    }

    /// [`MountGuard::try_existing`] with extra `-o` options.
    pub fn try_existing_with_options(
        pool: &Path,
        mode: Mode,
        limit_bytes: Option<u64>,
        options: &[&str],
    ) -> Result<MountGuard, MountFailure> {
        let dir = tempfile::Builder::new()
            .prefix("pfnfs-test-")
            .tempdir()
            .expect("tempdir");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("create mount point");
        let mut guard = MountGuard {
            log: dir.path().join("daemon.log"),
            dir: Some(dir),
            pool: pool.to_path_buf(),
            mountpoint,
            mode,
            options: options.iter().map(|s| s.to_string()).collect(),
            child: None,
            limit_kib: limit_bytes.map(|b| b / 1024),
        };
        guard.try_mount()?;
        Ok(guard)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// A path inside the mount.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// The pool file.
    pub fn pool(&self) -> &Path {
        &self.pool
    }

    /// The mode this guard mounts with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A scratch directory outside the mount (in the guard's temp dir).
    pub fn scratch(&self) -> PathBuf {
        let dir = self.dir.as_ref().expect("temp dir").path().join("scratch");
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether this mount asked to be served over FUSE over io_uring.
    pub fn uses_io_uring(&self) -> bool {
        self.options
            .iter()
            .chain(&extra_mount_options())
            .any(|o| o == "io_uring")
    }

    /// Unmounts and mounts the same pool again with `options` instead of the ones it had.
    pub fn remount_with(&mut self, options: &[&str]) {
        if let Err(e) = self.unmount() {
            panic!("remount: {e}");
        }
        self.options = options.iter().map(|s| s.to_string()).collect();
        self.mount();
    }

    /// Unmounts (waiting for the daemon to exit cleanly) and mounts the same pool again.
    pub fn remount(&mut self) {
        if let Err(e) = self.unmount() {
            panic!("remount: {e}");
        }
        self.mount();
    }

    fn mount(&mut self) {
        if let Err(f) = self.try_mount() {
            panic!(
                "pfnfs mount failed (exit code {:?}, timed out: {}); log:\n{}",
                f.code, f.timed_out, f.output
            );
        }
    }

    fn try_mount(&mut self) -> Result<(), MountFailure> {
        assert!(self.child.is_none(), "already mounted");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let mode = match self.mode {
            Mode::Direct => "direct",
            Mode::Buffered => "buffered",
        };
        let level = std::env::var("PFNFS_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let mut command = match self.limit_kib {
            // sh execs pfnfs, so the child's PID is the daemon's.
            Some(kib) => {
                let mut c = Command::new("sh");
                c.args(["-c", "ulimit -v \"$1\" && shift && exec \"$@\"", "sh"])
                    .arg(kib.to_string())
                    .arg(pfnfs_bin());
                c
            }
            None => Command::new(pfnfs_bin()),
        };
        command
            .arg("mount")
            .arg(&self.pool)
            .arg(&self.mountpoint)
            .args([
                "--foreground",
                "--mode",
                mode,
                "--threads",
                "2",
                "--log-level",
                &level,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        for o in self.options.iter().chain(&extra_mount_options()) {
            command.args(["-o", o]);
        }
        if self.uses_io_uring() {
            enable_fuse_io_uring();
        }
        let mut child = command.spawn().expect("spawn pfnfs mount --foreground");
        let start = Instant::now();
        loop {
            if is_mounted(&self.mountpoint) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(MountFailure {
                    code: status.code(),
                    timed_out: false,
                    output: self.log(),
                });
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(MountFailure {
                    code: None,
                    timed_out: true,
                    output: format!(
                        "{} not mounted after {MOUNT_TIMEOUT:?}; log:\n{}",
                        self.mountpoint.display(),
                        self.log()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Unmounts and waits for the daemon. Err describes anything abnormal (busy mount,
    /// daemon killed, non-zero exit), with the daemon's log. Idempotent.
    pub fn unmount(&mut self) -> Result<(), String> {
        if self.child.is_none() {
            return Ok(());
        }
        let mut problems = Vec::new();
        if self.uses_io_uring() && is_mounted(&self.mountpoint) {
            // Not `ring_requests`, which panics: this also runs from Drop.
            if try_ring_requests(&self.mountpoint) == Some(0) {
                problems.push(
                    "mounted with -o io_uring, but no request came over io_uring (the \
                     daemon fell back to /dev/fuse)"
                        .to_string(),
                );
            }
        }
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let start = Instant::now();
        let mut unmounted = false;
        while start.elapsed() < Duration::from_secs(10) {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mountpoint)
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    unmounted = true;
                    break;
                }
                Ok(o) => {
                    if !is_mounted(&self.mountpoint) {
                        unmounted = true;
                        break;
                    }
                    let msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
                    if start.elapsed() > Duration::from_secs(9) {
                        problems.push(format!("fusermount3 -u: {msg}"));
                    }
                }
                Err(e) => {
                    problems.push(format!("cannot run fusermount3: {e}"));
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = wait_timeout(&mut child, MOUNT_TIMEOUT);
        let status = match status {
            Some(s) => Some(s),
            None => {
                problems.push(format!(
                    "daemon {} did not exit after unmount; sending SIGTERM",
                    child.id()
                ));
                // Our own child, not reaped yet, so the PID is still its.
                send_signal(child.id() as i32, "TERM");
                match wait_timeout(&mut child, Duration::from_secs(5)) {
                    Some(s) => Some(s),
                    None => {
                        problems.push("daemon ignored SIGTERM; killed".into());
                        let _ = child.kill();
                        child.wait().ok()
                    }
                }
            }
        };
        if !unmounted || is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mountpoint)
                .output();
            problems.push("mount was still there; detached it with fusermount3 -uz".into());
        }
        match status {
            Some(s) if s.success() => {}
            Some(s) => problems.push(format!("daemon exited with {s}")),
            None => problems.push("daemon status unknown".into()),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}; daemon log:\n{}",
                problems.join("; "),
                self.log()
            ))
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("MountGuard({}): {e}", self.mountpoint.display());
        }
        if let Some(dir) = self.dir.take()
            && is_mounted(dir.path().join("mnt").as_path())
        {
            eprintln!(
                "MountGuard: {} still mounted; leaving the temp dir",
                self.mountpoint.display()
            );
            std::mem::forget(dir);
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// One line of /proc/self/mountinfo (the daemon's own parser).
pub use pfnfs_fs::mountinfo::MountEntry as MountLine;

/// The current mount table.
pub fn mounts() -> Vec<MountLine> {
    pfnfs_fs::mountinfo::read().unwrap_or_default()
}

/// The topmost mount at `path`, if any.
pub fn mount_at(path: &Path) -> Option<MountLine> {
    mounts().into_iter().rev().find(|m| m.mount_point == path)
}

/// True if a FUSE filesystem is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    mount_at(path).is_some_and(|m| m.fstype == "fuse" || m.fstype.starts_with("fuse."))
}

/// PIDs of pfnfs processes (other than this one) that have `file` mapped or open. Only
/// processes whose command name contains `pfnfs` are looked at: reading the `maps` of an
/// unrelated busy process can stall.
pub fn holders(file: &Path) -> Vec<i32> {
    use pfnfs_fs::procs::{Scan, holders};
    holders(file, Scan::Daemons)
        .into_iter()
        .map(|h| h.pid)
        .collect()
}

/// Runs `pfnfs ARGS POOL` (the pool path last) to completion.
pub fn pfnfs_on(args: &[&str], pool: &Path) -> std::process::Output {
    Command::new(pfnfs_bin())
        .args(args)
        .arg(pool)
        .output()
        .expect("run pfnfs")
}

/// Deterministic test data: `len` bytes seeded by `seed` (xorshift).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The data-path counters of the daemon serving the mount at `root` (the root's virtual
/// `trusted.pfnfs.io_stats` attribute, JSON).
pub fn io_stats(root: &Path) -> String {
    let raw = sys::getxattr(root, "trusted.pfnfs.io_stats")
        .unwrap_or_else(|e| panic!("{}: trusted.pfnfs.io_stats: {e}", root.display()));
    String::from_utf8(raw).expect("io_stats is UTF-8")
}

/// How many requests the daemon serving `root` answered over FUSE over io_uring (0 when it
/// serves /dev/fuse only). Panics if the counters cannot be read.
pub fn ring_requests(root: &Path) -> u64 {
    try_ring_requests(root)
        .unwrap_or_else(|| panic!("{}: no ring_requests in {}", root.display(), io_stats(root)))
}

/// [`ring_requests`], or None when the counters cannot be read (the mount is gone).
pub fn try_ring_requests(root: &Path) -> Option<u64> {
    let raw = sys::getxattr(root, "trusted.pfnfs.io_stats").ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (_, rest) = s.split_once("\"ring_requests\":")?;
    rest.trim_end_matches('}').parse().ok()
}

/// Reads a whole file.
pub fn read_all(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    data
}

/// Runs a shell command line (bash -c), panicking with its output if it fails.
pub fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a tree entry looks like, for before/after comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// `file`, `dir`, `symlink`, `fifo`, `char`, `block` or `socket`.
    pub kind: &'static str,
    /// Full st_mode.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files and symlinks).
    pub size: u64,
    /// Link count.
    pub nlink: u64,
    /// Device number of device nodes.
    pub rdev: u64,
    /// mtime, seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// ctime, when compared.
    pub ctime: Option<(i64, i64)>,
    /// atime, when compared.
    pub atime: Option<(i64, i64)>,
    /// Extended attributes (all namespaces listed).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Symlink target.
    pub target: Option<PathBuf>,
    /// File contents, when read.
    pub contents: Option<Vec<u8>>,
    /// Paths (relative) of the other names of this inode, sorted (hard links).
    pub links: Vec<PathBuf>,
}

/// What [`snapshot`] records.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotOptions {
    /// Read file contents (may update atimes).
    pub contents: bool,
    /// Record atime.
    pub atime: bool,
    /// Record ctime.
    pub ctime: bool,
}

/// The name snapshots and manifests give a file type: file, dir, symlink, fifo, char, block
/// or socket.
pub fn kind_name(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "socket"
    }
}

/// Every entry under `root` (not `root` itself), keyed by relative path.
pub fn snapshot(root: &Path, opts: SnapshotOptions) -> BTreeMap<PathBuf, EntryInfo> {
    let mut out = BTreeMap::new();
    let mut by_inode: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
            let ft = meta.file_type();
            let kind = kind_name(ft);
            if ft.is_dir() {
                stack.push(path.clone());
            } else {
                by_inode.entry(meta.ino()).or_default().push(rel.clone());
            }
            let xattrs = sys::list_xattrs(&path)
                .unwrap_or_else(|e| panic!("listxattr {}: {e}", path.display()));
            out.insert(
                rel,
                EntryInfo {
                    kind,
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: if ft.is_dir() { 0 } else { meta.size() },
                    nlink: meta.nlink(),
                    rdev: meta.rdev(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    ctime: opts.ctime.then(|| (meta.ctime(), meta.ctime_nsec())),
                    atime: opts.atime.then(|| (meta.atime(), meta.atime_nsec())),
                    xattrs,
                    target: ft
                        .is_symlink()
                        .then(|| std::fs::read_link(&path).expect("readlink")),
                    contents: (opts.contents && ft.is_file()).then(|| read_all(&path)),
                    links: Vec::new(),
                },
            );
        }
    }
    for names in by_inode.values() {
        for name in names {
            let mut others: Vec<PathBuf> = names.iter().filter(|n| *n != name).cloned().collect();
            others.sort();
            out.get_mut(name).unwrap().links = others;
        }
    }
    out
}

/// Human-readable differences between two snapshots (empty if equal).
pub fn diff_snapshots(
    before: &BTreeMap<PathBuf, EntryInfo>,
    after: &BTreeMap<PathBuf, EntryInfo>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, a) in before {
        let Some(b) = after.get(path) else {
            diffs.push(format!("{}: missing after", path.display()));
            continue;
        };
        let mut field = |name: &str, x: String, y: String| {
            if x != y {
                diffs.push(format!("{}: {name}: before {x}, after {y}", path.display()));
            }
        };
        field("kind", a.kind.into(), b.kind.into());
        field("mode", format!("{:o}", a.mode), format!("{:o}", b.mode));
        field(
            "owner",
            format!("{}:{}", a.uid, a.gid),
            format!("{}:{}", b.uid, b.gid),
        );
        field("size", a.size.to_string(), b.size.to_string());
        field("nlink", a.nlink.to_string(), b.nlink.to_string());
        field("rdev", a.rdev.to_string(), b.rdev.to_string());
        field("mtime", format!("{:?}", a.mtime), format!("{:?}", b.mtime));
        field("ctime", format!("{:?}", a.ctime), format!("{:?}", b.ctime));
        field("atime", format!("{:?}", a.atime), format!("{:?}", b.atime));
        field(
            "xattrs",
            format!("{:?}", a.xattrs),
            format!("{:?}", b.xattrs),
        );
        field(
            "symlink target",
            format!("{:?}", a.target),
            format!("{:?}", b.target),
        );
        field(
            "hard links",
            format!("{:?}", a.links),
            format!("{:?}", b.links),
        );
        if a.contents != b.contents {
            let first = match (&a.contents, &b.contents) {
                (Some(x), Some(y)) => x
                    .iter()
                    .zip(y.iter())
                    .position(|(p, q)| p != q)
                    .unwrap_or(x.len().min(y.len())),
                _ => 0,
            };
            diffs.push(format!(
                "{}: contents differ (lengths {:?} / {:?}, first difference at byte {first})",
                path.display(),
                a.contents.as_ref().map(Vec::len),
                b.contents.as_ref().map(Vec::len)
            ));
        }
    }
    for path in after.keys() {
        if !before.contains_key(path) {
            diffs.push(format!("{}: new after", path.display()));
        }
    }
    diffs
}

/// Sends signal `name` (`TERM`, `KILL`, ...) to process `pid` with kill(1), so that the
/// tests need no `unsafe`. Returns whether kill(1) succeeded.
pub fn send_signal(pid: i32, name: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True if this process runs as root (its effective uid owns `/proc/self`).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A tmpfs of `bytes` mounted on a fresh temp dir, unmounted (lazily if busy) on drop: a
/// small filesystem to fill, another export, or a mount that takes a device number.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts it; panics with mount(8)'s message if that fails.
    pub fn new(bytes: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("pfnfs-tmpfs-")
            .tempdir()
            .expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    /// Its mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
