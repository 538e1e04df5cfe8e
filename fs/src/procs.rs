//! Which processes hold a pool: open as a file descriptor or mapped into memory; and what
//! such a process's memory measures ([`mem_stat`]).
//!
//! Only `/proc` is read (links and `maps`), never the files themselves, so a hung FUSE mount
//! cannot block the scan.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A process that has the pool open or mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: i32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
}

struct Identity {
    canonical: PathBuf,
    major: u64,
    minor: u64,
    inode: u64,
}

/// Which processes [`holders`] looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Every process. Reading another process's `maps` waits for its memory-map lock, which
    /// can take long while that process maps or unmaps a lot.
    All,
    /// Only processes whose command name contains `pfnfs` (the daemons).
    Daemons,
}

/// Processes other than this one that hold `pool`. Empty if the pool does not exist.
pub fn holders(pool: &Path, scan: Scan) -> Vec<Holder> {
    let Ok(canonical) = std::fs::canonicalize(pool) else {
        return Vec::new();
    };
    let Ok(meta) = std::fs::metadata(&canonical) else {
        return Vec::new();
    };
    let id = Identity {
        canonical,
        major: libc::major(meta.dev()) as u64,
        minor: libc::minor(meta.dev()) as u64,
        inode: meta.ino(),
    };
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let proc_dir = entry.path();
        let comm = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
        if scan == Scan::Daemons && !comm.contains("pfnfs") {
            continue;
        }
        if maps_hold(&proc_dir, &id) || fds_hold(&proc_dir, &id) {
            found.push(Holder {
                pid,
                comm: comm.trim().to_string(),
            });
        }
    }
    found.sort_by_key(|h| h.pid);
    found
}

fn maps_hold(proc_dir: &Path, id: &Identity) -> bool {
    let Ok(maps) = std::fs::read_to_string(proc_dir.join("maps")) else {
        return false;
    };
    maps.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(_range), Some(_perms), Some(_offset), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return false;
        };
        let path = fields.collect::<Vec<_>>().join(" ");
        if !path.is_empty() && Path::new(&path) == id.canonical {
            return true;
        }
        let Some((major, minor)) = dev.split_once(':') else {
            return false;
        };
        u64::from_str_radix(major, 16) == Ok(id.major)
            && u64::from_str_radix(minor, 16) == Ok(id.minor)
            && inode.parse::<u64>() == Ok(id.inode)
    })
}

fn fds_hold(proc_dir: &Path, id: &Identity) -> bool {
    let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == id.canonical))
}

/// A `Name:   1234 kB` field of a `/proc` status-like file (`/proc/PID/status`,
/// `/proc/meminfo`), in KiB.
pub fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        if key != name {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Memory of a process, measured: from `/proc/PID/status`, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemStat {
    /// Resident set size (anonymous + file + shared memory).
    pub vm_rss_kib: u64,
    /// Its peak.
    pub vm_hwm_kib: u64,
    /// Anonymous resident memory (heap, stacks): the daemon's own memory, what grows with
    /// what it keeps in RAM.
    pub rss_anon_kib: u64,
    /// Resident file-backed pages.
    pub rss_file_kib: u64,
    /// Resident shared memory: for pfnfs, the pages of a pool in /dev/shm it has touched.
    pub rss_shmem_kib: u64,
}

/// Reads `/proc/PID/status`; None if the process is gone.
pub fn mem_stat(pid: u32) -> Option<MemStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(MemStat {
        vm_rss_kib: status_field(&text, "VmRSS")?,
        vm_hwm_kib: status_field(&text, "VmHWM").unwrap_or(0),
        rss_anon_kib: status_field(&text, "RssAnon").unwrap_or(0),
        rss_file_kib: status_field(&text, "RssFile").unwrap_or(0),
        rss_shmem_kib: status_field(&text, "RssShmem").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory() {
        let m = mem_stat(std::process::id()).expect("own status");
        assert!(m.vm_rss_kib > 0 && m.vm_hwm_kib >= m.vm_rss_kib && m.rss_anon_kib > 0);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tx\nVmRSS:\t  1234 kB\nRssAnon:\t 12 kB\n";
        assert_eq!(status_field(text, "VmRSS"), Some(1234));
        assert_eq!(status_field(text, "RssAnon"), Some(12));
        assert_eq!(status_field(text, "VmHWM"), None);
    }

    #[test]
    fn finds_a_child_that_holds_a_file() {
        let file = std::env::temp_dir().join(format!("pfnfs-procs-test-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        assert!(holders(&file, Scan::All).is_empty());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open(&file).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut seen = false;
        for _ in 0..100 {
            if holders(&file, Scan::All).iter().any(|h| h.pid == pid) {
                seen = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(seen, "child {pid} not found among holders");
    }
}
