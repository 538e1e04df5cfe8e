//! `pfnfs umount MOUNTPOINT`: unmount, then wait until the daemon has persisted everything
//! and exited.
//!
//! The daemon is found before unmounting as the processes that hold the pool (the mount's
//! source) open or mapped. As root the mount is detached with `umount2`; otherwise with
//! `fusermount3 -u`. Then this waits until the mount is gone from `/proc/self/mountinfo` and
//! until none of those processes holds the pool any more, unless another mount of the pool
//! (a bind mount made by a second `pfnfs mount`) remains: then the daemon keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use pfnfs_fs::mountinfo::{self, MountEntry};
use pfnfs_fs::procs;

use crate::Failure;

/// Unmount a pfnfs mount and wait for its daemon to exit.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mount point (or the pool it mounts).
    pub target: PathBuf,

    /// Detach now even if busy (MNT_DETACH); the daemon exits when the last user is gone.
    #[arg(long, short = 'l')]
    pub lazy: bool,

    /// Seconds to wait for the daemon to finish after unmounting.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
}

/// Unmounts and waits.
pub fn run(args: UmountArgs) -> Result<(), Failure> {
    let entries = mountinfo::read()?;
    let entry = find_target(&entries, &args.target)?.clone();
    let pool = PathBuf::from(&entry.source);
    let daemons: Vec<i32> = procs::holders(&pool, procs::Scan::Daemons)
        .iter()
        .map(|h| h.pid)
        .collect();
    tracing::debug!(
        "unmounting {}; daemon pids {daemons:?}",
        entry.mount_point.display()
    );

    unmount(&entry.mount_point, args.lazy)?;

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while mountinfo::read()?
        .iter()
        .any(|e| e.mount_id == entry.mount_id)
    {
        if Instant::now() > deadline {
            return Err(Failure::new(format!(
                "{}: still mounted {} s after unmounting",
                entry.mount_point.display(),
                args.timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another mount of the pool (a bind made by a second `pfnfs mount`) keeps the daemon
    // serving; wait for it only once no mount of the pool remains.
    if !mountinfo::find_by_pool(&mountinfo::read()?, &pool).is_empty() {
        return Ok(());
    }
    loop {
        let left: Vec<procs::Holder> = procs::holders(&pool, procs::Scan::Daemons)
            .into_iter()
            .filter(|h| daemons.contains(&h.pid))
            .collect();
        let Some(first) = left.first() else { break };
        if Instant::now() > deadline {
            return Err(Failure::new(format!(
                "{}: unmounted, but daemon {} ({}) still holds {} after {} s",
                entry.mount_point.display(),
                first.pid,
                first.comm,
                pool.display(),
                args.timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The pfnfs mount named by `target`: its mount point, or its pool.
fn find_target<'a>(entries: &'a [MountEntry], target: &Path) -> Result<&'a MountEntry, Failure> {
    if let Some(entry) = mountinfo::find_by_mount_point(entries, target) {
        if entry.is_pfnfs() {
            return Ok(entry);
        }
        return Err(Failure::new(format!(
            "{}: is a {} mount of {}, not pfnfs",
            target.display(),
            entry.fstype,
            entry.source
        )));
    }
    if let Some(entry) = mountinfo::find_by_pool(entries, target).last() {
        return Ok(entry);
    }
    Err(Failure::new(format!(
        "{}: not a pfnfs mount point (nor a mounted pool)",
        target.display()
    )))
}

/// How long an unmount that fails with EBUSY is retried.
const BUSY_RETRY: Duration = Duration::from_secs(5);

fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), Failure> {
    if nix::unistd::geteuid().is_root() {
        let flags = if lazy {
            nix::mount::MntFlags::MNT_DETACH
        } else {
            nix::mount::MntFlags::empty()
        };
        let start = Instant::now();
        let err = loop {
            let Err(errno) = nix::mount::umount2(mountpoint, flags) else {
                return Ok(());
            };
            let err = std::io::Error::from(errno);
            // A file closed just now can keep the mount busy for a moment (its release
            // is still on the way to the daemon, or a forked child still holds it).
            if err.raw_os_error() != Some(libc::EBUSY) || start.elapsed() > BUSY_RETRY {
                break err;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let hint = match err.raw_os_error() {
            Some(libc::EBUSY) => {
                " (a process has a file, directory or working directory there; close it, or use --lazy)"
            }
            _ => "",
        };
        return Err(Failure::new(format!(
            "{}: cannot unmount: {err}{hint}",
            mountpoint.display()
        )));
    }
    let start = Instant::now();
    let output = loop {
        let output = std::process::Command::new("fusermount3")
            .arg(if lazy { "-uz" } else { "-u" })
            .arg(mountpoint)
            .output()
            .map_err(|e| {
                Failure::new(format!(
                    "{}: cannot run fusermount3: {e}",
                    mountpoint.display()
                ))
            })?;
        let busy = String::from_utf8_lossy(&output.stderr).contains("busy");
        if output.status.success() || !busy || start.elapsed() > BUSY_RETRY {
            break output;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Failure::new(format!(
            "{}: fusermount3 -u failed: {}",
            mountpoint.display(),
            stderr.trim()
        )));
    }
    Ok(())
}
