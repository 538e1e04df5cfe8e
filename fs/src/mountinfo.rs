//! `/proc/self/mountinfo`: which pool is mounted where.
//!
//! A line reads `36 35 0:39 / /mnt/pfnfs rw,nosuid,nodev - fuse.pfnfs /var/tmp/pfnfs.pool rw,...`:
//! mount id, parent id, device, root, mount point, per-mount options, optional fields, `-`,
//! filesystem type, source, superblock options. Paths escape space, tab, newline and `\` as
//! octal (`\040`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// The filesystem type of a pfnfs mount.
pub const PFNFS_FSTYPE: &str = "fuse.pfnfs";

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique id of the mount.
    pub mount_id: u64,
    /// `major:minor` of the mounted filesystem.
    pub device: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev,relatime`).
    pub mount_options: String,
    /// Filesystem type (`fuse.pfnfs`).
    pub fstype: String,
    /// Mount source: for pfnfs, the pool path as given to `mount`.
    pub source: String,
    /// Superblock options.
    pub super_options: String,
}

impl MountEntry {
    /// True for a pfnfs mount: type `fuse.pfnfs` (what pfnfs mounts as), or type `fuse` with a
    /// source that names an existing file or device: a daemon of a pfnfs build before the
    /// subtype mounted as plain `fuse`, and `pfnfs umount` and `remount` still find it.
    pub fn is_pfnfs(&self) -> bool {
        self.fstype == PFNFS_FSTYPE
            || (self.fstype == "fuse"
                && Path::new(&self.source).is_absolute()
                && Path::new(&self.source).exists())
    }

    /// True if the mount is read-only (per mount or per superblock).
    pub fn is_read_only(&self) -> bool {
        has_option(&self.mount_options, "ro") || has_option(&self.super_options, "ro")
    }
}

fn has_option(options: &str, name: &str) -> bool {
    options.split(',').any(|o| o == name)
}

/// Reads this process's mount table.
pub fn read() -> Result<Vec<MountEntry>, String> {
    let text =
        std::fs::read("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    Ok(parse(&String::from_utf8_lossy(&text)))
}

/// Parses mountinfo text, skipping malformed lines.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let mount_id = fields.next()?.parse().ok()?;
    let _parent = fields.next()?;
    let device = fields.next()?.to_string();
    let _root = fields.next()?;
    let mount_point = PathBuf::from(unescape(fields.next()?));
    let mount_options = fields.next()?.to_string();
    // Optional fields up to the "-" separator.
    for field in fields.by_ref() {
        if field == "-" {
            break;
        }
    }
    let fstype = unescape_str(fields.next()?);
    let source = unescape_str(fields.next()?);
    let super_options = fields.next().unwrap_or("").to_string();
    Some(MountEntry {
        mount_id,
        device,
        mount_point,
        mount_options,
        fstype,
        source,
        super_options,
    })
}

fn unescape_str(field: &str) -> String {
    String::from_utf8_lossy(unescape(field).as_encoded_bytes()).into_owned()
}

/// Undoes the kernel's octal escapes (`\040` for a space).
fn unescape(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let octal = &bytes[i + 1..i + 4];
            if octal.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = (octal[0] - b'0') as u32 * 64
                    + (octal[1] - b'0') as u32 * 8
                    + (octal[2] - b'0') as u32;
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// Makes `path` absolute against the current directory and removes `.` and `..` without
/// touching the filesystem (so it works on a mount point whose daemon hangs or died).
pub fn absolute_lexical(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Finds the topmost mount whose mount point is `path`: first by the lexical absolute path,
/// then (only if that finds nothing) by the canonical path, which resolves symlinks.
pub fn find_by_mount_point<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let lexical = absolute_lexical(path);
    if let Some(entry) = entries.iter().rev().find(|e| e.mount_point == lexical) {
        return Some(entry);
    }
    let canonical = std::fs::canonicalize(path).ok()?;
    entries.iter().rev().find(|e| e.mount_point == canonical)
}

/// Finds pfnfs mounts whose source is `pool` (the same string, or the same file).
pub fn find_by_pool<'a>(entries: &'a [MountEntry], pool: &Path) -> Vec<&'a MountEntry> {
    let canonical = std::fs::canonicalize(pool).ok();
    entries
        .iter()
        .filter(|e| e.is_pfnfs())
        .filter(|e| {
            Path::new(&e.source) == pool
                || (canonical.is_some() && std::fs::canonicalize(&e.source).ok() == canonical)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
42 22 0:39 / /tmp/my\\040mnt rw,nosuid,nodev,relatime shared:7 - fuse.pfnfs /var/tmp/a\\040b.pool rw,user_id=0,group_id=0,default_permissions
43 22 0:40 / /mnt/x ro,relatime - fuse /tmp/src ro,user_id=0
";

    #[test]
    fn parses_lines_and_escapes() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 3);
        let e = &entries[1];
        assert_eq!(e.mount_id, 42);
        assert_eq!(e.device, "0:39");
        assert_eq!(e.mount_point, PathBuf::from("/tmp/my mnt"));
        assert_eq!(e.fstype, "fuse.pfnfs");
        assert_eq!(e.source, "/var/tmp/a b.pool");
        assert!(e.is_pfnfs());
        assert!(!e.is_read_only());
        assert!(entries[2].is_read_only());
        assert_eq!(
            find_by_mount_point(&entries, Path::new("/tmp/my mnt/")).map(|e| e.mount_id),
            Some(42)
        );
        assert_eq!(
            find_by_pool(&entries, Path::new("/var/tmp/a b.pool")).len(),
            1
        );
    }

    #[test]
    fn skips_malformed_lines() {
        assert!(parse("garbage\n1 2 3\n").is_empty());
        assert_eq!(unescape("a\\134b\\04"), OsString::from("a\\b\\04"));
    }

    #[test]
    fn lexical_absolute_paths() {
        assert_eq!(
            absolute_lexical(Path::new("/a/./b/../c/")),
            PathBuf::from("/a/c")
        );
        assert_eq!(absolute_lexical(Path::new("/../..")), PathBuf::from("/"));
    }
}
