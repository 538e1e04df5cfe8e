//! `pfnfs stat POOL|MOUNTPOINT [--json]`: a pool's figures, mounted or not; for a mounted
//! pool also the serving daemon's memory, measured from `/proc/PID/status`.
//!
//! The JSON output is the [`PoolReport`]'s fields, then `daemon` (null when no daemon holds
//! the pool) and `metadata_pool_bytes_per_file` (null until the pool format reports it).

use std::path::{Path, PathBuf};

use clap::Args;
use pfnfs_fs::PoolReport;
use pfnfs_fs::mountinfo;
use pfnfs_fs::procs::{self, MemStat};
use serde::Serialize;

use crate::Failure;
use crate::room::Room;
use crate::size::format_size;

/// Show a pool's size, usage, inode and extent counts, and for a mounted pool its daemon's
/// measured memory. Reads the pool without writing to it.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// A pool file or device, or the mount point of a pfnfs mount.
    pub target: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The daemon that holds a pool, and its memory as the kernel counts it.
#[derive(Clone, Debug, Serialize)]
struct Daemon {
    /// Its PID.
    pid: u32,
    /// Its command name.
    comm: String,
    /// `/proc/PID/status`, in KiB: `rss_anon_kib` is the daemon's own memory (heap, stacks,
    /// buffers); `vm_hwm_kib` its peak resident set.
    #[serde(flatten)]
    memory: MemStat,
}

/// What `pfnfs stat` prints.
#[derive(Clone, Debug, Serialize)]
struct StatOutput {
    #[serde(flatten)]
    pool: PoolReport,
    /// The daemon holding the pool, measured; None if no pfnfs process holds it.
    daemon: Option<Daemon>,
    /// Metadata bytes on the pool per inode (the metadata tree and the log over the inode
    /// count); None for a pool without inodes but the root.
    metadata_pool_bytes_per_file: Option<f64>,
    /// For a pool file: the storage its filesystem has given it and what it has free; None
    /// for a device.
    backing: Option<Room>,
}

/// The pfnfs daemon holding `pool`, if one does, with its memory.
fn daemon_of(pool: &Path) -> Option<Daemon> {
    procs::holders(pool, procs::Scan::Daemons)
        .into_iter()
        .find_map(|h| {
            let pid = u32::try_from(h.pid).ok()?;
            Some(Daemon {
                pid,
                comm: h.comm,
                memory: procs::mem_stat(pid)?,
            })
        })
}

/// Prints the report.
pub fn run(args: StatArgs) -> Result<(), Failure> {
    let pool = resolve_pool(&args.target)?;
    let report = pfnfs_fs::report(&pool).map_err(|e| Failure::about(&pool, e.to_string()))?;
    let out = StatOutput {
        backing: Room::of(&pool),
        daemon: daemon_of(&pool),
        metadata_pool_bytes_per_file: (report.inodes > 1)
            .then(|| report.metadata_pool_bytes as f64 / report.inodes as f64),
        pool: report,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| Failure::new(format!("{}: cannot encode JSON: {e}", pool.display())))?;
        println!("{text}");
    } else {
        print!("{}", render(&out));
    }
    Ok(())
}

/// A mount point maps to its mount's source; anything else is taken as the pool itself.
fn resolve_pool(target: &Path) -> Result<PathBuf, Failure> {
    let entries = mountinfo::read()?;
    if let Some(entry) = mountinfo::find_by_mount_point(&entries, target) {
        if entry.is_pfnfs() {
            return Ok(PathBuf::from(&entry.source));
        }
        return Err(Failure::new(format!(
            "{}: is a {} mount of {}, not pfnfs",
            target.display(),
            entry.fstype,
            entry.source
        )));
    }
    match std::fs::metadata(target) {
        Ok(m) if m.is_dir() => Err(Failure::new(format!(
            "{}: is a directory, not a pool or a pfnfs mount point",
            target.display()
        ))),
        Ok(_) => Ok(target.to_path_buf()),
        Err(e) => Err(Failure::new(format!("{}: {e}", target.display()))),
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

fn sized(bytes: u64) -> String {
    format!("{} ({bytes} bytes)", format_size(bytes))
}

fn kib(kib: u64) -> String {
    format_size(kib.saturating_mul(1024))
}

/// The text form of a report.
fn render(out: &StatOutput) -> String {
    let r = &out.pool;
    // A pool whose files are all inline (or empty) has no data in frames to divide by.
    let per_gib = |bytes: f64| {
        if r.extents == 0 {
            "no file data in frames".to_string()
        } else {
            format!("{bytes:.0} B per GiB of data")
        }
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("pool", r.pool.clone()),
        ("uuid", r.uuid.clone()),
        (
            "mounted",
            if r.mounted {
                "yes (or not cleanly unmounted)".into()
            } else {
                "no".into()
            },
        ),
        ("size", sized(r.size_bytes)),
        ("data region", sized(r.data_bytes)),
        (
            "used",
            format!(
                "{} ({} of data)",
                sized(r.used_bytes),
                percent(r.used_bytes, r.data_bytes)
            ),
        ),
        ("free", sized(r.free_bytes)),
        (
            "inodes",
            format!(
                "{} ({} files, {} directories)",
                r.inodes, r.files, r.directories
            ),
        ),
        (
            "inline data",
            if r.inline_data {
                format!("on ({} files keep their bytes inline)", r.inline_files)
            } else {
                format!("off (`pfnfs upgrade {}` turns it on)", r.pool)
            },
        ),
        ("extents", r.extents.to_string()),
        (
            "free extents",
            format!(
                "{} (largest {})",
                r.free_extents,
                format_size(r.largest_free_bytes)
            ),
        ),
        (
            "huge extents",
            format!(
                "{:.1}% of file data in 2 MiB extents",
                r.huge_extent_share * 100.0
            ),
        ),
        (
            "metadata",
            format!(
                "{} on the pool ({}; per file: {}{})",
                format_size(r.metadata_pool_bytes),
                per_gib(r.metadata_pool_bytes_per_gib),
                out.metadata_pool_bytes_per_file.map_or_else(
                    || "not reported by this pool format".to_string(),
                    |b| { format!("{b:.0} B") }
                ),
                if r.inline_files > 0 {
                    ", inline file bytes included"
                } else {
                    ""
                },
            ),
        ),
        (
            "bad frames",
            if r.bad_frames.is_empty() {
                "none".to_string()
            } else {
                let frames: u64 = r.bad_frames.iter().map(|[_, n]| n).sum();
                let listed: Vec<String> = r
                    .bad_frames
                    .iter()
                    .map(|[s, n]| format!("{s}..{}", s + n))
                    .collect();
                format!(
                    "{frames} (memory failed there; never used again): PFNs {}",
                    listed.join(", ")
                )
            },
        ),
        (
            "backing",
            match &out.backing {
                None => "a device: all of it exists".to_string(),
                Some(b) => format!(
                    "{} reserved, {} free on its filesystem{}",
                    format_size(b.allocated_bytes),
                    format_size(b.available_bytes),
                    if b.available_bytes < b.missing_bytes() {
                        " (less than the rest of the pool: writes beyond it get ENOSPC)"
                    } else {
                        ""
                    }
                ),
            },
        ),
        (
            "metadata RAM",
            format!(
                "{}, estimated for a mount of this pool (free-set index plus a full inode \
                 cache), not measured ({}; struct page for this pool would be {})",
                format_size(r.metadata_ram_bytes),
                per_gib(r.metadata_ram_bytes_per_gib),
                format_size(r.struct_page_bytes)
            ),
        ),
    ];
    rows.push((
        "daemon",
        match &out.daemon {
            Some(d) => format!(
                "PID {} ({}), measured: RssAnon {}, VmHWM {}, VmRSS {} (/proc/{}/status)",
                d.pid,
                d.comm,
                kib(d.memory.rss_anon_kib),
                kib(d.memory.vm_hwm_kib),
                kib(d.memory.vm_rss_kib),
                d.pid
            ),
            None => "none holds the pool".to_string(),
        },
    ));
    rows.iter()
        .map(|(k, v)| format!("{:<14}{v}\n", format!("{k}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_field() {
        let report = PoolReport {
            bad_frames: vec![[4096, 2]],
            pool: "/var/tmp/p.pool".into(),
            uuid: "ab".into(),
            size_bytes: 1 << 30,
            data_bytes: 1000 << 20,
            used_bytes: 250 << 20,
            free_bytes: 750 << 20,
            inodes: 3,
            files: 1,
            inline_files: 1,
            inline_data: true,
            directories: 2,
            extents: 4,
            free_extents: 5,
            largest_free_bytes: 700 << 20,
            huge_extent_share: 0.5,
            metadata_ram_bytes: 4096,
            metadata_pool_bytes: 8192,
            metadata_ram_bytes_per_gib: 16384.0,
            metadata_pool_bytes_per_gib: 32768.0,
            struct_page_bytes: 16 << 20,
            mounted: false,
        };
        let mut out = StatOutput {
            pool: report,
            daemon: None,
            metadata_pool_bytes_per_file: None,
            backing: None,
        };
        let text = render(&out);
        assert!(
            text.contains("size:         1.00 GiB (1073741824 bytes)"),
            "{text}"
        );
        assert!(
            text.contains("used:         250 MiB (262144000 bytes) (25.0% of data)"),
            "{text}"
        );
        assert!(text.contains("3 (1 files, 2 directories)"), "{text}");
        assert!(text.contains("inline data:  on (1 files keep"), "{text}");
        assert!(text.contains("50.0% of file data"), "{text}");
        assert!(
            text.contains("metadata RAM: 4.00 KiB, estimated"),
            "the estimate is labelled: {text}"
        );
        assert!(text.contains("per file: not reported"), "{text}");
        assert!(text.contains("daemon:       none holds the pool"), "{text}");
        assert!(text.contains("backing:      a device"), "{text}");
        assert!(
            text.contains(
                "bad frames:   2 (memory failed there; never used again): PFNs 4096..4098"
            ),
            "{text}"
        );
        assert_eq!(text.lines().count(), 17);
        out.daemon = Some(Daemon {
            pid: 77,
            comm: "pfnfs".into(),
            memory: MemStat {
                rss_anon_kib: 3 * 1024,
                vm_hwm_kib: 40 * 1024,
                vm_rss_kib: 30 * 1024,
                ..MemStat::default()
            },
        });
        out.metadata_pool_bytes_per_file = Some(120.0);
        out.backing = Some(Room {
            pool_bytes: 1 << 30,
            allocated_bytes: 300 << 20,
            available_bytes: 100 << 20,
        });
        let text = render(&out);
        assert!(
            text.contains("300 MiB reserved, 100 MiB free on its filesystem (less than the rest"),
            "{text}"
        );
        assert!(
            text.contains("PID 77 (pfnfs), measured: RssAnon 3.00 MiB, VmHWM 40.0 MiB"),
            "{text}"
        );
        assert!(text.contains("per file: 120 B"), "{text}");
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json["daemon"]["rss_anon_kib"], 3072);
        assert_eq!(json["backing"]["allocated_bytes"], 300u64 << 20);
        assert_eq!(
            json["size_bytes"],
            1u64 << 30,
            "the report's fields stay at the top"
        );
    }
}
