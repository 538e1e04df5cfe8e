//! Mounting a pool (`serve`) and reading its figures (`report`).

use std::path::Path;
use std::sync::Arc;

use fuser::{Config, MountOption, SessionACL};
use pfnfs_alloc::{FRAME_SIZE, OpenOptions, Pool};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::inode::Body;
use crate::session::Session;
use crate::transport::DevFuse;
use crate::transport::ring::Rings;
use crate::volume::{AtimePolicy, Volume};
use crate::{MountConfig, PoolReport, ServeError};

fn mount_option(opt: &str) -> Option<MountOption> {
    Some(match opt {
        "dev" => MountOption::Dev,
        "nodev" => MountOption::NoDev,
        "suid" => MountOption::Suid,
        "nosuid" => MountOption::NoSuid,
        "exec" => MountOption::Exec,
        "noexec" => MountOption::NoExec,
        "atime" => MountOption::Atime,
        "noatime" => MountOption::NoAtime,
        "dirsync" => MountOption::DirSync,
        "sync" => MountOption::Sync,
        "async" => MountOption::Async,
        _ => return None,
    })
}

pub(crate) fn serve(config: MountConfig, ready: impl FnOnce()) -> Result<(), ServeError> {
    let pool = Pool::open(
        &config.pool,
        &OpenOptions {
            format1: false,
            read_only: config.read_only,
            durability: config.durability,
        },
    )?;
    if config.sparse_backing {
        pool.set_sparse_backing();
    }
    if !pool.superblock().inline_data {
        tracing::info!(
            "{}: small files take a frame each on this pool (made before inline data); \
             `pfnfs upgrade {}` turns inline data on",
            config.pool.display(),
            config.pool.display()
        );
    }
    let vol = Arc::new(Volume::load(Arc::new(pool)).map_err(ServeError::Load)?);
    vol.set_cache_bytes(config.metadata_cache_bytes);
    let has = |o: &str| config.extra_options.iter().any(|x| x == o);
    vol.set_atime_policy(if has("noatime") {
        AtimePolicy::Never
    } else if has("strictatime") {
        AtimePolicy::Always
    } else {
        AtimePolicy::Relative
    });
    let mut options = vec![
        MountOption::FSName(config.pool.display().to_string()),
        MountOption::Subtype("pfnfs".into()),
        if config.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    if config.default_permissions {
        options.push(MountOption::DefaultPermissions);
    }
    for o in &config.extra_options {
        match mount_option(o) {
            Some(m) => options.push(m),
            None => tracing::debug!("ignoring mount option {o:?}"),
        }
    }
    let mut fuse_config = Config::default();
    fuse_config.mount_options = options;
    // The session decides who may make which request (allow_other), for both transports.
    fuse_config.acl = SessionACL::All;
    fuse_config.n_threads = Some(config.threads.max(1));
    fuse_config.clone_fd = true;
    let owner_only = (!config.allow_other).then(|| nix::unistd::getuid().as_raw());
    let session = Arc::new(
        Session::new(vol.clone(), config.mode, owner_only).posix_acl(config.default_permissions),
    );
    let rings = Arc::new(Rings::new());
    let mut fs = DevFuse::new(session);
    if config.io_uring && !config.read_only {
        fs = fs.with_rings(rings.clone());
    }
    let (session, mounted_here) = match mount_fuse_pfnfs(&config) {
        Ok(fd) => {
            // fuser answers FUSE_INIT inside `from_fd`; the queues need the device then.
            match fd.try_clone() {
                Ok(dev) => rings.set_device(dev),
                Err(e) => tracing::warn!("no FUSE over io_uring: cannot duplicate /dev/fuse: {e}"),
            }
            (
                fuser::Session::from_fd(fs, fd, fuse_config.acl, fuse_config.clone()),
                true,
            )
        }
        // Not allowed to mount(2) directly (not root): let fusermount3 do it.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => (
            fuser::Session::new(fs, &config.mountpoint, &fuse_config),
            false,
        ),
        Err(source) => {
            return Err(ServeError::Mount {
                pool: config.pool.clone(),
                mountpoint: config.mountpoint.clone(),
                source,
            });
        }
    };
    let mut session = session.map_err(|source| ServeError::Fuse {
        mountpoint: config.mountpoint.clone(),
        source,
    })?;
    let mut unmounter = session.unmount_callable();
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(ServeError::Signals)?;
    let signal_handle = signals.handle();
    let mountpoint = config.mountpoint.clone();
    std::thread::Builder::new()
        .name("pfnfs-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                tracing::info!("signal received: unmounting");
                let r = if mounted_here {
                    nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH)
                        .map_err(std::io::Error::from)
                } else {
                    unmounter.unmount()
                };
                if let Err(e) = r {
                    tracing::error!("unmount on signal failed: {e}");
                }
            }
        })
        .map_err(ServeError::Signals)?;
    tracing::info!(pool = %config.pool.display(), mountpoint = %config.mountpoint.display(), mode = ?config.mode, "mounted");
    ready();
    let run = session.run();
    // The queues end when the kernel ends the connection; none may still be writing when
    // the final checkpoint is taken.
    rings.join();
    signal_handle.close();
    let shut = vol.shutdown();
    run.map_err(ServeError::Session)?;
    shut.map_err(|source| ServeError::FinalCheckpoint {
        pool: config.pool.clone(),
        source,
    })?;
    tracing::info!("unmounted cleanly");
    Ok(())
}

/// Mounts /dev/fuse at the mountpoint as type `fuse.pfnfs` (FUSE with the subtype `pfnfs`:
/// the kernel's `fuse` filesystem, named `fuse.pfnfs` in /proc/self/mountinfo, `findmnt` and
/// `df -T`) with the pool as its source (what `umount POOL` and `pfnfs umount POOL` need);
/// returns the FUSE device. The subtype is what makes mount(8) hand a later `mount -o
/// remount MOUNTPOINT` to pfnfs (`mount.fuse.pfnfs`, or `mount.fuse3` running `pfnfs`):
/// under plain `fuse`, mount.fuse3 would take the source, the pool path, for the program to
/// run.
fn mount_fuse_pfnfs(config: &MountConfig) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::mount::MsFlags;
    use std::os::unix::fs::PermissionsExt;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd: std::os::fd::OwnedFd = dev.into();
    let root_mode = std::fs::metadata(&config.mountpoint)?.permissions().mode();
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        root_mode & libc::S_IFMT,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if config.default_permissions {
        data.push_str(",default_permissions");
    }
    if config.allow_other {
        data.push_str(",allow_other");
    }
    data.push_str(&format!(",max_read={}", 1 << 20));
    let mut flags = MsFlags::empty();
    let has = |o: &str| config.extra_options.iter().any(|x| x == o);
    if config.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    if has("nodev") {
        flags |= MsFlags::MS_NODEV;
    }
    if has("nosuid") {
        flags |= MsFlags::MS_NOSUID;
    }
    if has("noexec") {
        flags |= MsFlags::MS_NOEXEC;
    }
    if has("noatime") {
        flags |= MsFlags::MS_NOATIME;
    }
    if has("dirsync") {
        flags |= MsFlags::MS_DIRSYNC;
    }
    if has("sync") {
        flags |= MsFlags::MS_SYNCHRONOUS;
    }
    if has("nosymfollow") {
        flags |= MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);
    }
    nix::mount::mount(
        Some(config.pool.as_os_str()),
        &config.mountpoint,
        Some(crate::mountinfo::PFNFS_FSTYPE),
        flags,
        Some(data.as_str()),
    )
    .map_err(std::io::Error::from)?;
    Ok(fd)
}

pub(crate) fn report(path: &Path) -> Result<PoolReport, ServeError> {
    let pool = Pool::open(
        path,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )?;
    let sb = pool.superblock();
    let vol = Volume::load(Arc::new(pool)).map_err(ServeError::Load)?;
    let stats = vol.allocator().stats();
    let mut r = PoolReport {
        pool: path.display().to_string(),
        uuid: sb.uuid.iter().map(|b| format!("{b:02x}")).collect(),
        size_bytes: sb.pool_bytes,
        data_bytes: stats.total_frames * FRAME_SIZE,
        used_bytes: (stats.total_frames - stats.free_frames) * FRAME_SIZE,
        free_bytes: stats.free_frames * FRAME_SIZE,
        free_extents: stats.free_extents,
        largest_free_bytes: stats.largest_free_frames * FRAME_SIZE,
        mounted: sb.mounted,
        inline_data: sb.inline_data,
        bad_frames: vol
            .pool()
            .bad_frames()
            .list()
            .iter()
            .map(|r| [r.start.0, r.len])
            .collect(),
        ..Default::default()
    };
    let mut mapped = 0u64;
    let mut huge = 0u64;
    // Streams the tree's inode table (a report of a large pool costs time, not memory); the
    // inodes the log changed since the last commit (replayed into this volume) are counted
    // from RAM instead.
    let load = |e: crate::error::FsError| ServeError::Load(e);
    let tree = vol.tree();
    let (start, end) = crate::schema::table_range(crate::schema::TAG_INODE);
    for item in tree.range(vol.pool(), &start, end.as_deref()) {
        let (k, v) = item.map_err(|e| load(e.into()))?;
        let key = crate::schema::inode_table_key(&k)
            .map_err(|e| load(crate::error::corrupt(e.to_string())))?;
        let ino = match key {
            crate::schema::InodeKey::Record(ino)
            | crate::schema::InodeKey::Extent(ino, _)
            | crate::schema::InodeKey::Xattr(ino, _) => ino,
        };
        if vol.changed_since_commit(ino) {
            continue;
        }
        match key {
            crate::schema::InodeKey::Record(_) => {
                let rec = crate::schema::InodeRecord::decode(&v)
                    .map_err(|e| load(crate::error::corrupt(format!("inode {ino}: {e}"))))?;
                r.inodes += 1;
                if matches!(rec.tail, crate::schema::InodeTail::Inline(_)) {
                    r.inline_files += 1;
                }
                match rec.attr.kind() {
                    crate::inode::Kind::File => r.files += 1,
                    crate::inode::Kind::Dir => r.directories += 1,
                    _ => {}
                }
            }
            crate::schema::InodeKey::Extent(_, frame) => {
                let e = crate::schema::decode_extent(frame, &v)
                    .map_err(|e| load(crate::error::corrupt(format!("inode {ino}: {e}"))))?;
                r.extents += 1;
                mapped += e.pfns.len;
                // Whole 2 MiB-aligned runs inside the extent, as `ExtentMap::huge_frames`.
                let huge_frames = pfnfs_alloc::HUGE_FRAMES;
                if let Some(first) = e.pfns.start.0.checked_next_multiple_of(huge_frames) {
                    let last = e.pfns.end().0 / huge_frames * huge_frames;
                    huge += last.saturating_sub(first);
                }
            }
            crate::schema::InodeKey::Xattr(..) => {}
        }
    }
    for cell in vol.cells() {
        let inode = cell.inode.read();
        if !vol.changed_since_commit(inode.ino) {
            continue;
        }
        r.inodes += 1;
        match &inode.body {
            Body::File(m) => {
                r.files += 1;
                r.extents += m.len() as u64;
                mapped += m.mapped_frames();
                huge += m.huge_frames();
            }
            Body::Inline(_) => {
                r.files += 1;
                r.inline_files += 1;
            }
            Body::Dir(_) => r.directories += 1,
            Body::Symlink(_) | Body::Special => {}
        }
    }
    // What a mount of this pool keeps in RAM: the free-set index and, at most, a full inode
    // cache (`-o metadata_cache`, default size); nothing per file beyond that.
    use crate::volume::cache::{CELL_BYTES, DEFAULT_CACHE_BYTES, inode_cache_bytes};
    let cached = r
        .inodes
        .min(inode_cache_bytes(DEFAULT_CACHE_BYTES) / CELL_BYTES);
    let ram = stats.free_extents * 48
        + cached * CELL_BYTES
        + (DEFAULT_CACHE_BYTES - inode_cache_bytes(DEFAULT_CACHE_BYTES));
    r.huge_extent_share = if mapped == 0 {
        0.0
    } else {
        huge as f64 / mapped as f64
    };
    r.metadata_ram_bytes = ram;
    r.metadata_pool_bytes = vol.journal().used_bytes() + (sb.meta.tree_frames + 2) * FRAME_SIZE;
    let data_gib = (mapped * FRAME_SIZE) as f64 / (1u64 << 30) as f64;
    if data_gib > 0.0 {
        r.metadata_ram_bytes_per_gib = r.metadata_ram_bytes as f64 / data_gib;
        r.metadata_pool_bytes_per_gib = r.metadata_pool_bytes as f64 / data_gib;
    }
    r.struct_page_bytes = sb.pool_bytes / FRAME_SIZE * 64;
    Ok(r)
}
