//! `pfnfs stat POOL|MOUNTPOINT [--json]`: a pool's figures, mounted or not.

use std::path::{Path, PathBuf};

use clap::Args;
use pfnfs_fs::PoolReport;
use pfnfs_fs::mountinfo;

use crate::Failure;
use crate::size::format_size;

/// Show a pool's size, usage, inode and extent counts. Reads the pool without writing to it.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// A pool file or device, or the mount point of a pfnfs mount.
    pub target: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints the report.
pub fn run(args: StatArgs) -> Result<(), Failure> {
    let pool = resolve_pool(&args.target)?;
    let report = pfnfs_fs::report(&pool).map_err(|e| Failure::about(&pool, e.to_string()))?;
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::new(format!("{}: cannot encode JSON: {e}", pool.display())))?;
        println!("{text}");
    } else {
        print!("{}", render(&report));
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

/// The text form of a report.
fn render(r: &PoolReport) -> String {
    let rows: Vec<(&str, String)> = vec![
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
                "{} in RAM, {} on the pool ({:.0} B and {:.0} B per GiB of data; \
                 struct page for this pool would be {})",
                format_size(r.metadata_ram_bytes),
                format_size(r.metadata_pool_bytes),
                r.metadata_ram_bytes_per_gib,
                r.metadata_pool_bytes_per_gib,
                format_size(r.struct_page_bytes)
            ),
        ),
    ];
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
            pool: "/var/tmp/p.pool".into(),
            uuid: "ab".into(),
            size_bytes: 1 << 30,
            data_bytes: 1000 << 20,
            used_bytes: 250 << 20,
            free_bytes: 750 << 20,
            inodes: 3,
            files: 1,
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
        let text = render(&report);
        assert!(
            text.contains("size:         1.00 GiB (1073741824 bytes)"),
            "{text}"
        );
        assert!(
            text.contains("used:         250 MiB (262144000 bytes) (25.0% of data)"),
            "{text}"
        );
        assert!(text.contains("3 (1 files, 2 directories)"), "{text}");
        assert!(text.contains("50.0% of file data"), "{text}");
        assert_eq!(text.lines().count(), 12);
    }
}
