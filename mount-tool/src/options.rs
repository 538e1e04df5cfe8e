//! `-o` mount options: the ones pfnfs understands, the kernel flags it passes through, and the
//! generic ones mount(8) and mount.fuse3 hand to every helper, which are accepted and ignored.
//!
//! For `mount -o remount,... MOUNTPOINT` mount(8) adds the options the kernel shows for the
//! mount in /proc/self/mountinfo (`user_id=0,group_id=0,default_permissions,max_read=1048576`,
//! ...), so every option FUSE reports must be known here: [`KERNEL_REPORTED`].

use pfnfs_fs::{Durability, Mode};

use crate::size::parse_size;

/// Kernel mount flags passed to the FUSE mount as they are (`MountConfig::extra_options`).
/// `serve` maps each to the mount flag of the same name; `noatime` and `strictatime` also set
/// how the daemon moves atime on reads (relatime otherwise).
pub const PASSED_THROUGH: &[&str] = &[
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "strictatime",
    "dirsync",
    "sync",
    "async",
    "nosymfollow",
    "symfollow",
];

/// Options accepted and ignored at mount time: userspace options of mount(8), fstab-only
/// options, atime variants the FUSE mount has no flag for, and names the daemon sets itself.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "relatime",
    "norelatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "iversion",
    "noiversion",
    "mand",
    "nomand",
    "silent",
    "loud",
    "default_permissions",
    "allow_root",
    "auto_unmount",
    "remount",
    "bind",
    "rbind",
];

/// Options the kernel's FUSE shows for a mount (`fuse_show_options` in fs/fuse/inode.c) that
/// pfnfs sets itself when it mounts; mount(8) hands them back on a remount. Accepted and
/// ignored: they describe the mount being changed, and none can change on a remount.
pub const KERNEL_REPORTED: &[&str] = &[
    "user_id=",
    "group_id=",
    "rootmode=",
    "max_read=",
    "blksize=",
    "fd=",
];

/// Prefixes of ignored `key=value` options.
const IGNORED_PREFIXES: &[&str] = &[
    "x-",
    "comment=",
    "fsname=",
    "subtype=",
    "context=",
    "fscontext=",
    "defcontext=",
    "rootcontext=",
    "uhelper=",
    "helper=",
    "setuid=",
];

/// What `-o` asked for. `None` means "not given": flags and defaults decide.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MountOptions {
    /// `mode=direct|buffered`.
    pub mode: Option<Mode>,
    /// `ro` / `rw` (the last one wins).
    pub read_only: Option<bool>,
    /// `allow_other`.
    pub allow_other: bool,
    /// `threads=N`.
    pub threads: Option<usize>,
    /// `durability=msync|cachelines`.
    pub durability: Option<Durability>,
    /// `size=SIZE`: the size of a pool created by this mount.
    pub size_bytes: Option<u64>,
    /// `metadata_cache=SIZE`: RAM for inodes beyond those in use (three quarters) and for
    /// checked tree nodes (one quarter).
    pub metadata_cache_bytes: Option<u64>,
    /// `backing=sparse` (true) / `backing=reserved` (false, the default): whether storage
    /// behind a pool file's frames is left to chance instead of reserved as they are used.
    pub sparse_backing: Option<bool>,
    /// `io_uring` / `no_io_uring`: whether to serve over FUSE over io_uring when the kernel
    /// offers it (the default).
    pub io_uring: Option<bool>,
    /// `remount`: change the flags of an existing mount instead of mounting.
    pub remount: bool,
    /// Kernel flags from [`PASSED_THROUGH`], in order.
    pub extra: Vec<String>,
    /// Every flag-like option, in order, for a remount (`ro`, `nosuid`, `relatime`, ...).
    pub flags: Vec<String>,
    /// Options nobody knows; warned about and ignored.
    pub unknown: Vec<String>,
}

/// Parses every `-o` argument (each a comma-separated list).
pub fn parse(lists: &[String]) -> Result<MountOptions, String> {
    let mut opts = MountOptions::default();
    for option in lists
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option, None),
        };
        match (key, value) {
            ("mode", Some(v)) => opts.mode = Some(v.parse().map_err(|e| format!("-o mode: {e}"))?),
            ("threads", Some(v)) => {
                let n: usize = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("-o threads={v}: expected a whole number of at least 1")
                })?;
                opts.threads = Some(n);
            }
            ("durability", Some(v)) => opts.durability = Some(parse_durability(v)?),
            ("backing", Some("reserved")) => opts.sparse_backing = Some(false),
            ("backing", Some("sparse")) => opts.sparse_backing = Some(true),
            ("backing", Some(v)) => {
                return Err(format!("-o backing={v}: expected reserved or sparse"));
            }
            ("size", Some(v)) => {
                opts.size_bytes = Some(parse_size(v).map_err(|e| format!("-o size: {e}"))?)
            }
            ("metadata_cache", Some(v)) => {
                opts.metadata_cache_bytes =
                    Some(parse_size(v).map_err(|e| format!("-o metadata_cache: {e}"))?)
            }
            ("ro", None) => {
                opts.read_only = Some(true);
                opts.flags.push(option.to_string());
            }
            ("rw", None) => {
                opts.read_only = Some(false);
                opts.flags.push(option.to_string());
            }
            ("allow_other", None) => opts.allow_other = true,
            ("remount", None) => opts.remount = true,
            ("io_uring", None) => opts.io_uring = Some(true),
            ("no_io_uring", None) => opts.io_uring = Some(false),
            (k, None) if PASSED_THROUGH.contains(&k) => {
                opts.extra.push(k.to_string());
                opts.flags.push(k.to_string());
            }
            (k, None) if IGNORED.contains(&k) => {
                if remount_flag(k).is_some() {
                    opts.flags.push(k.to_string());
                }
            }
            _ if IGNORED_PREFIXES
                .iter()
                .chain(KERNEL_REPORTED)
                .any(|p| option.starts_with(p)) => {}
            ("mode" | "threads" | "durability" | "size" | "metadata_cache" | "backing", None) => {
                return Err(format!("-o {key}: needs a value ({key}=...)"));
            }
            _ => opts.unknown.push(option.to_string()),
        }
    }
    Ok(opts)
}

/// Parses `msync` / `cachelines`.
pub fn parse_durability(text: &str) -> Result<Durability, String> {
    match text {
        "msync" => Ok(Durability::Msync),
        "cachelines" | "cache-lines" => Ok(Durability::CacheLines),
        other => Err(format!(
            "unknown durability {other:?} (expected msync or cachelines)"
        )),
    }
}

/// A flag of mount(2): its `MS_*` bit and whether the option sets (true) or clears it.
pub fn remount_flag(option: &str) -> Option<(libc::c_ulong, bool)> {
    Some(match option {
        "ro" => (libc::MS_RDONLY, true),
        "rw" => (libc::MS_RDONLY, false),
        "nosuid" => (libc::MS_NOSUID, true),
        "suid" => (libc::MS_NOSUID, false),
        "nodev" => (libc::MS_NODEV, true),
        "dev" => (libc::MS_NODEV, false),
        "noexec" => (libc::MS_NOEXEC, true),
        "exec" => (libc::MS_NOEXEC, false),
        "sync" => (libc::MS_SYNCHRONOUS, true),
        "async" => (libc::MS_SYNCHRONOUS, false),
        "dirsync" => (libc::MS_DIRSYNC, true),
        "noatime" => (libc::MS_NOATIME, true),
        "atime" => (libc::MS_NOATIME, false),
        "nodiratime" => (libc::MS_NODIRATIME, true),
        "diratime" => (libc::MS_NODIRATIME, false),
        "relatime" => (libc::MS_RELATIME, true),
        "norelatime" => (libc::MS_RELATIME, false),
        "strictatime" => (libc::MS_STRICTATIME, true),
        "nostrictatime" => (libc::MS_STRICTATIME, false),
        "lazytime" => (libc::MS_LAZYTIME, true),
        "nolazytime" => (libc::MS_LAZYTIME, false),
        "nosymfollow" => (libc::MS_NOSYMFOLLOW, true),
        "symfollow" => (libc::MS_NOSYMFOLLOW, false),
        _ => return None,
    })
}

/// The mount(2) flags for a remount: the mount's current per-mount options with `changes`
/// applied in order. The three atime modes exclude each other.
pub fn remount_flags(current_options: &str, changes: &[String]) -> libc::c_ulong {
    let atime_modes = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;
    let mut flags: libc::c_ulong = 0;
    for option in current_options
        .split(',')
        .chain(changes.iter().map(String::as_str))
    {
        if let Some((bit, set)) = remount_flag(option) {
            if set {
                if bit & atime_modes != 0 {
                    flags &= !atime_modes;
                }
                flags |= bit;
            } else {
                flags &= !bit;
            }
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(s: &str) -> Result<MountOptions, String> {
        parse(&[s.to_string()])
    }

    #[test]
    fn pfnfs_options() {
        let o =
            parse_one("mode=buffered,allow_other,ro,threads=4,durability=msync,size=2G").unwrap();
        assert_eq!(o.mode, Some(Mode::Buffered));
        assert!(o.allow_other);
        assert_eq!(o.read_only, Some(true));
        assert_eq!(o.threads, Some(4));
        assert_eq!(o.durability, Some(Durability::Msync));
        assert_eq!(
            parse_one("metadata_cache=16M")
                .unwrap()
                .metadata_cache_bytes,
            Some(16 << 20)
        );
        assert_eq!(o.size_bytes, Some(2 << 30));
        assert!(!o.remount);
    }

    #[test]
    fn io_uring_is_asked_for_by_name_and_the_last_word_wins() {
        assert_eq!(parse_one("rw").unwrap().io_uring, None);
        assert_eq!(parse_one("io_uring").unwrap().io_uring, Some(true));
        assert_eq!(
            parse_one("io_uring,no_io_uring").unwrap().io_uring,
            Some(false)
        );
    }

    #[test]
    fn generic_options_never_fail() {
        let all = "defaults,rw,dev,nodev,suid,nosuid,exec,noexec,atime,noatime,relatime,async,sync,\
                   auto,noauto,user,nouser,_netdev,nofail,x-systemd.automount,x-foo=bar,users,\
                   default_permissions,subtype=pfnfs,fsname=/p,comment=hi,dirsync,lazytime";
        let o = parse_one(all).unwrap();
        assert!(o.unknown.is_empty(), "{:?}", o.unknown);
        assert_eq!(
            o.extra,
            [
                "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "async",
                "sync", "dirsync"
            ]
        );
        let o = parse_one("frobnicate,,").unwrap();
        assert_eq!(o.unknown, ["frobnicate"]);
    }

    /// What mount(8) passed to the helper for `mount -o remount,ro MOUNTPOINT` (util-linux
    /// 2.38, through mount.fuse3, which appends `dev,suid`): the kernel's own options for the
    /// mount come back and must be understood, not warned about.
    #[test]
    fn options_the_kernel_reports_are_understood() {
        let o = parse_one(
            "ro,relatime,remount,user_id=0,group_id=0,default_permissions,allow_other,\
             max_read=1048576,blksize=4096,rootmode=40000,dev,suid",
        )
        .unwrap();
        assert!(o.unknown.is_empty(), "{:?}", o.unknown);
        assert!(o.remount);
        assert_eq!(o.flags, ["ro", "relatime", "dev", "suid"]);
        let f = remount_flags("rw,nosuid,nodev,nosymfollow,relatime", &o.flags);
        assert_eq!(
            f,
            libc::MS_RDONLY | libc::MS_NOSYMFOLLOW | libc::MS_RELATIME,
            "the mount's nosymfollow is kept; dev and suid as asked"
        );
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            "mode=fast",
            "threads=0",
            "threads=x",
            "durability=never",
            "size=lots",
            "mode",
        ] {
            assert!(parse_one(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn remount_flags_apply_in_order() {
        let o = parse_one("ro,nosuid,nodev,relatime,remount").unwrap();
        assert!(o.remount);
        let f = remount_flags("rw,nosuid,nodev,relatime", &o.flags);
        assert_eq!(
            f,
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RELATIME
        );
        let f = remount_flags(
            "ro,nosuid,nodev,relatime",
            &["rw".into(), "noatime".into(), "suid".into()],
        );
        assert_eq!(f, libc::MS_NODEV | libc::MS_NOATIME);
    }
}
