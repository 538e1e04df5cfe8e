//! `pfnfs mount POOL MOUNTPOINT`: mount a pool, creating it first if needed.
//!
//! By default the daemon detaches: `pfnfs mount` returns once the mount is live (see
//! [`crate::daemon`]). `-o remount,...` (what mount(8) sends for `mount -o remount`) does not
//! start a daemon: it changes the flags of the existing mount with `mount(2)` and
//! `MS_REMOUNT`. FUSE accepts ro/rw and the per-mount flags (nosuid, nodev, noexec, atime
//! modes) that way; the kernel then enforces read-only itself. Options the running daemon
//! cannot change (mode, threads, durability, size) are ignored on remount.
//!
//! The kernel lists a pfnfs mount as type `fuse.pfnfs`, so mount(8) hands a remount, or any
//! mount naming that type, to the helper `mount.fuse.pfnfs` (this binary under that name) if
//! it is installed, and otherwise to `mount.fuse3`, which runs `pfnfs POOL MOUNTPOINT -o
//! OPTS`. The helper calling convention adds `-t TYPE`, `-n`, `-s`, `-v`, `-f` and `-N NS`
//! (mount.fuse(8), "external helpers" in mount(8)); [`MountArgs`] takes them.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use pfnfs_fs::mountinfo::{self, MountEntry};
use pfnfs_fs::{Mode, MountConfig, procs};

use crate::Failure;
use crate::commands::mkfs::{create_pool, is_block_device};
use crate::daemon::{Notifier, spawn_daemon};
use crate::options::{self, MountOptions};
use crate::size::{format_size, parse_size};

/// Size of a pool that `mount` creates when neither `--size` nor `-o size=` is given.
pub const DEFAULT_POOL_BYTES: u64 = 1 << 30;

/// How file data reaches the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Direct I/O: no kernel page cache; reads are served from pool memory.
    Direct,
    /// Through the kernel page cache.
    Buffered,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Direct => Mode::Direct,
            ModeArg::Buffered => Mode::Buffered,
        }
    }
}

/// Mount a pool. A missing pool (or an empty file) is created first.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// The pool file or device. Shown as the mount source in /proc/mounts exactly as given.
    pub pool: PathBuf,

    /// An existing directory to mount on.
    pub mountpoint: PathBuf,

    /// direct (default) or buffered; overrides -o mode=.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,

    /// Mount options, comma-separated; may be repeated.
    ///
    /// pfnfs options: mode=direct|buffered, ro, rw, allow_other, default_permissions (always
    /// on), threads=N, durability=msync|cachelines, size=SIZE (of a pool created by this
    /// mount), io_uring|no_io_uring (FUSE over io_uring when the kernel offers it; off by
    /// default), remount (change ro/rw and the kernel flags of a live mount). Kernel flags passed
    /// to the mount: dev, nodev, suid, nosuid, exec, noexec, atime, noatime, sync, async,
    /// dirsync. Generic mount(8) options (defaults, auto, noauto, user, nouser, nofail,
    /// _netdev, relatime, x-*, comment=, ...) are accepted and ignored; unknown options are
    /// ignored with a warning.
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,

    /// Stay in the foreground instead of detaching once the mount is live.
    #[arg(long)]
    pub foreground: bool,

    /// Size of the pool if this mount creates it (default 1G); overrides -o size=.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size: Option<u64>,

    /// FUSE worker threads (default: one per CPU); overrides -o threads=.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub threads: Option<u16>,

    /// Where the detached daemon writes its log (default: nowhere).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// The filesystem type, as mount(8) gives it to a helper: `fuse.pfnfs` (or `pfnfs`).
    #[arg(short = 't', value_name = "TYPE")]
    pub fstype: Option<String>,

    /// mount(8) helper convention: do everything but the mount itself (`mount -f`).
    #[arg(short = 'f', long = "fake", hide = true)]
    pub fake: bool,

    /// mount(8) helper convention: do not write /etc/mtab. Ignored (there is none).
    #[arg(short = 'n', hide = true)]
    pub no_mtab: bool,

    /// mount(8) helper convention: sloppy options. Ignored: pfnfs never fails on an unknown
    /// option.
    #[arg(short = 's', hide = true)]
    pub sloppy: bool,

    /// mount(8) helper convention: verbose. Ignored (see --log-level).
    #[arg(short = 'v', hide = true)]
    pub verbose: bool,

    /// mount(8) helper convention: the mount namespace to mount in. Not supported.
    #[arg(short = 'N', hide = true, value_name = "NS")]
    pub namespace: Option<String>,

    /// Internal: this process is the detached daemon, re-executed by `pfnfs mount`; it
    /// reports on stdout when the mount is live (see `crate::daemon`).
    #[arg(long = "daemon-child", hide = true)]
    pub daemon_child: bool,
}

/// What [`prepare`] found to do.
enum Prepared {
    /// Start a daemon with this config.
    Serve(MountConfig),
    /// The pool was mounted elsewhere already; the mount point is now a bind of that mount.
    Bound,
}

/// Mounts, or remounts with `-o remount`.
pub fn run(args: MountArgs) -> Result<(), Failure> {
    check_helper_args(&args)?;
    let opts = options::parse(&args.options).map_err(Failure::usage)?;
    for unknown in &opts.unknown {
        tracing::warn!("ignoring unknown mount option {unknown:?}");
    }
    if args.fake {
        // `mount -f`: mount(8) only records the mount; pfnfs has nothing to record.
        return Ok(());
    }
    if opts.remount {
        return remount(&args, &opts);
    }
    if args.daemon_child {
        let mut notifier = Notifier::for_daemon_child();
        match prepare(&args, &opts) {
            Ok(Prepared::Serve(config)) => run_daemon(config, notifier),
            Ok(Prepared::Bound) => {
                notifier.ready();
                return Ok(());
            }
            Err(failure) => {
                notifier.fail(&failure.message);
                return Err(failure);
            }
        }
    }
    let config = match prepare(&args, &opts)? {
        Prepared::Serve(config) => config,
        Prepared::Bound => return Ok(()),
    };
    if args.foreground {
        return serve(config, || tracing::info!("mount is live"));
    }
    let argv: Vec<std::ffi::OsString> = crate::helper_args(std::env::args_os().collect())
        .into_iter()
        .skip(1)
        .collect();
    spawn_daemon(&argv, args.log_file.as_deref())
}

/// Refuses a type other than pfnfs's own and a mount namespace (`-N`), which pfnfs does not
/// enter.
fn check_helper_args(args: &MountArgs) -> Result<(), Failure> {
    if let Some(t) = &args.fstype
        && t != mountinfo::PFNFS_FSTYPE
        && t != "pfnfs"
    {
        return Err(Failure::usage(format!(
            "-t {t}: pfnfs mounts only type {} (mount -t {} POOL MOUNTPOINT)",
            mountinfo::PFNFS_FSTYPE,
            mountinfo::PFNFS_FSTYPE
        )));
    }
    if let Some(ns) = &args.namespace {
        return Err(Failure::usage(format!(
            "-N {ns}: mounting in another mount namespace is not supported; run the mount \
             inside it instead (nsenter --mount=... mount ...)"
        )));
    }
    Ok(())
}

/// Bind-mounts `existing` (a live mount of the pool) onto `mountpoint`, read-only if asked.
fn bind_existing(
    pool: &Path,
    existing: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<(), Failure> {
    use nix::mount::{MsFlags, mount};
    let fail = |what: &str, err: nix::errno::Errno| {
        let hint = if err == nix::errno::Errno::EPERM {
            " (a second mount of a mounted pool is a bind mount, which needs root)"
        } else {
            ""
        };
        Failure::new(format!(
            "{}: {what} of {} (where {} is mounted) failed: {err}{hint}",
            mountpoint.display(),
            existing.display(),
            pool.display()
        ))
    };
    mount(
        Some(existing),
        mountpoint,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| fail("bind mount", e))?;
    if opts.read_only == Some(true) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, mountpoint, None::<&str>, flags, None::<&str>) {
            let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
            return Err(fail("read-only bind mount", e));
        }
    }
    tracing::info!(
        "{}: already mounted on {}; bound there onto {}",
        pool.display(),
        existing.display(),
        mountpoint.display()
    );
    Ok(())
}

/// Checks the mount point and the pool, creates the pool if needed, and builds the config.
/// If the pool is mounted elsewhere already, bind-mounts that mount here instead.
fn prepare(args: &MountArgs, opts: &MountOptions) -> Result<Prepared, Failure> {
    let pool = &args.pool;
    let mountpoint = &args.mountpoint;
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Failure::new(format!(
                "{}: mount point is not a directory",
                mountpoint.display()
            )));
        }
        Err(e) => {
            let hint = if e.raw_os_error() == Some(libc::ENOTCONN) {
                " (the daemon of the mount there is gone; `pfnfs umount` it first)"
            } else {
                ""
            };
            return Err(Failure::new(format!(
                "{}: mount point: {e}{hint}",
                mountpoint.display()
            )));
        }
    }
    let mountpoint = std::fs::canonicalize(mountpoint)
        .map_err(|e| Failure::new(format!("{}: mount point: {e}", mountpoint.display())))?;

    let entries = mountinfo::read()?;
    let mounted = mountinfo::find_by_pool(&entries, pool);
    if let Some(entry) = mounted.iter().find(|e| e.mount_point == mountpoint) {
        return Err(Failure::new(format!(
            "{}: pool is already mounted on {}",
            pool.display(),
            entry.mount_point.display()
        )));
    }
    if let Some(entry) = mounted.first() {
        bind_existing(pool, &entry.mount_point, &mountpoint, opts)?;
        return Ok(Prepared::Bound);
    }
    wait_for_old_daemons(pool)?;

    let read_only = opts.read_only.unwrap_or(false);
    let needs_create = match std::fs::metadata(pool) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Failure::new(format!("{}: {e}", pool.display()))),
        Ok(m) => m.is_file() && m.len() == 0 && !is_block_device(pool),
    };
    if needs_create {
        if read_only {
            return Err(Failure::new(format!(
                "{}: pool does not exist; a read-only mount cannot create it",
                pool.display()
            )));
        }
        let size_bytes = args.size.or(opts.size_bytes).unwrap_or(DEFAULT_POOL_BYTES);
        let created = create_pool(pool, size_bytes, false)?;
        tracing::info!(
            "{}: created a pool of {}",
            pool.display(),
            format_size(created.len_bytes())
        );
    }

    if !read_only && let Some(w) = crate::room::Room::of(pool).and_then(|r| r.warning(pool)) {
        eprintln!("{w}");
    }

    let threads = args
        .threads
        .map(usize::from)
        .or(opts.threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(Prepared::Serve(MountConfig {
        pool: pool.clone(),
        mountpoint,
        mode: args.mode.map(Mode::from).or(opts.mode).unwrap_or_default(),
        read_only,
        allow_other: opts.allow_other,
        default_permissions: true,
        threads,
        durability: opts.durability.unwrap_or_default(),
        sparse_backing: opts.sparse_backing.unwrap_or(false),
        extra_options: opts.extra.clone(),
        io_uring: opts.io_uring.unwrap_or(false),
        metadata_cache_bytes: opts
            .metadata_cache_bytes
            .unwrap_or(pfnfs_fs::volume::cache::DEFAULT_CACHE_BYTES),
    }))
}

/// How long `mount` waits for the daemon of an earlier, already unmounted mount of the same
/// pool to write its last checkpoint and exit (`umount` returns before that happens).
const OLD_DAEMON_WAIT: Duration = Duration::from_secs(60);

/// Waits until no pfnfs daemon holds the (unmounted) pool, so that `umount; mount` in a row
/// works; fails after [`OLD_DAEMON_WAIT`].
fn wait_for_old_daemons(pool: &Path) -> Result<(), Failure> {
    let start = Instant::now();
    let mut told = false;
    loop {
        let Some(holder) = procs::holders(pool, procs::Scan::Daemons)
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        if start.elapsed() > OLD_DAEMON_WAIT {
            return Err(Failure::new(format!(
                "{}: pool is still in use by process {} ({}) after {} s",
                pool.display(),
                holder.pid,
                holder.comm,
                OLD_DAEMON_WAIT.as_secs()
            )));
        }
        if !told {
            tracing::info!(
                "{}: waiting for daemon {} to finish",
                pool.display(),
                holder.pid
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `serve` in this process, turning its error (or panic) into a message.
fn serve(config: MountConfig, ready: impl FnOnce()) -> Result<(), Failure> {
    let what = format!(
        "{} on {}",
        config.pool.display(),
        config.mountpoint.display()
    );
    // Errors from opening the pool start with its path; do not say it twice.
    let prefix = format!("{}: ", config.pool.display());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pfnfs_fs::serve(config, ready)
    })) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let message = e.to_string();
            let message = message.strip_prefix(&prefix).unwrap_or(&message);
            Err(Failure::new(format!("mount {what}: {message}")))
        }
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Failure::new(format!(
                "mount {what}: the daemon panicked: {text}"
            )))
        }
    }
}

/// The detached daemon: serves until unmounted, then exits the process.
fn run_daemon(config: MountConfig, notifier: Notifier) -> ! {
    // Keep the working directory only if the pool path is relative (it is opened as given);
    // otherwise do not pin whatever filesystem we were started from.
    if config.pool.is_absolute() {
        let _ = std::env::set_current_dir("/");
    }
    let notifier = std::sync::Mutex::new(notifier);
    let result = serve(config, || {
        notifier.lock().unwrap_or_else(|e| e.into_inner()).ready()
    });
    let code = match result {
        Ok(()) => 0,
        Err(failure) => {
            if !notifier
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fail(&failure.message)
            {
                tracing::error!("{}", failure.message);
            }
            1
        }
    };
    std::process::exit(code)
}

/// `-o remount,...`: change the flags of the existing mount; start no daemon.
fn remount(args: &MountArgs, opts: &MountOptions) -> Result<(), Failure> {
    let mnt = &args.mountpoint;
    let entries = mountinfo::read()?;
    let entry = mountinfo::find_by_mount_point(&entries, mnt).ok_or_else(|| {
        Failure::new(format!(
            "{}: not mounted; nothing to remount",
            mnt.display()
        ))
    })?;
    if !entry.is_pfnfs() {
        return Err(Failure::new(format!(
            "{}: is a {} mount of {}, not pfnfs",
            mnt.display(),
            entry.fstype,
            entry.source
        )));
    }
    if !same_pool(entry, &args.pool) {
        return Err(Failure::new(format!(
            "{}: is a mount of {}, not of {}",
            mnt.display(),
            entry.source,
            args.pool.display()
        )));
    }
    if opts.read_only == Some(false) && started_read_only(&entry.source) {
        return Err(Failure::new(format!(
            "{}: {} was mounted read-only and its daemon cannot write; unmount it and mount it \
             read-write instead",
            mnt.display(),
            entry.source
        )));
    }
    let fixed = [
        ("mode", args.mode.is_some() || opts.mode.is_some()),
        ("threads", args.threads.is_some() || opts.threads.is_some()),
        ("durability", opts.durability.is_some()),
        ("size", args.size.is_some() || opts.size_bytes.is_some()),
    ];
    for (name, given) in fixed {
        if given {
            tracing::info!(
                "{}: {name} cannot change on remount; ignored",
                mnt.display()
            );
        }
    }
    let flags = options::remount_flags(&entry.mount_options, &opts.flags);
    let rc = nix::mount::mount(
        None::<&str>,
        &entry.mount_point,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::from_bits_retain(flags),
        None::<&str>,
    );
    if let Err(errno) = rc {
        let err = std::io::Error::from(errno);
        let hint = if err.raw_os_error() == Some(libc::EPERM) {
            " (remount needs root)"
        } else {
            ""
        };
        return Err(Failure::new(format!(
            "{}: remount failed: {err}{hint}",
            mnt.display()
        )));
    }
    if let Some(ro) = opts.read_only {
        let after = mountinfo::read()?;
        let now_ro = mountinfo::find_by_mount_point(&after, &entry.mount_point)
            .map(MountEntry::is_read_only);
        if now_ro != Some(ro) {
            return Err(Failure::new(format!(
                "{}: remount did not make the mount {}",
                mnt.display(),
                if ro { "read-only" } else { "read-write" }
            )));
        }
    }
    Ok(())
}

/// True if a daemon holding `pool` was started with `-o ro` (read from its command line).
fn started_read_only(pool: &str) -> bool {
    procs::holders(Path::new(pool), procs::Scan::Daemons)
        .iter()
        .any(|holder| {
            let Ok(raw) = std::fs::read(format!("/proc/{}/cmdline", holder.pid)) else {
                return false;
            };
            let args: Vec<std::ffi::OsString> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| std::ffi::OsStr::from_bytes(a).to_os_string())
                .collect();
            crate::parse_mount_command(args)
                .and_then(|m| options::parse(&m.options).ok())
                .is_some_and(|o| o.read_only == Some(true))
        })
}

fn same_pool(entry: &MountEntry, pool: &Path) -> bool {
    Path::new(&entry.source) == pool
        || matches!(
            (std::fs::canonicalize(&entry.source), std::fs::canonicalize(pool)),
            (Ok(a), Ok(b)) if a == b
        )
}
