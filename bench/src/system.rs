//! The machine and its tools: preflight checks with install hints, the machine description,
//! process memory from `/proc/PID/status`, Ctrl-C, and a UTC timestamp.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use pfnfs_fs::procs::status_field;
pub use pfnfs_fs::procs::{MemStat, mem_stat};

/// Output of `PROGRAM ARGS`, or a message saying the program is missing and how to get it.
fn tool_output(program: &str, args: &[&str], hint: &str) -> Result<String, String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{program} not found in PATH: {hint}"))
        }
        Err(e) => Err(format!("cannot run {program}: {e} ({hint})")),
    }
}

/// Versions of the external tools a run needs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tools {
    /// `fio --version`.
    pub fio: String,
    /// `bindfs --version`, if the bindfs target runs.
    pub bindfs: Option<String>,
}

/// Checks that fio (with psync and libaio) if fio jobs run, and for FUSE targets
/// `/dev/fuse` and `fusermount3`, and for bindfs `bindfs`, are there. Every missing piece is
/// listed.
pub fn preflight(
    need_fio: bool,
    need_fuse: bool,
    need_bindfs: bool,
    need_libaio: bool,
) -> Result<Tools, String> {
    let mut missing = Vec::new();
    let mut tools = Tools::default();
    let fio = if need_fio {
        tool_output(
            "fio",
            &["--version"],
            "install it with `apt-get install fio`",
        )
    } else {
        Ok("fio (not used)".to_string())
    };
    match fio {
        Ok(v) => {
            tools.fio = v.trim().to_string();
            let major = tools
                .fio
                .strip_prefix("fio-")
                .and_then(|v| v.split('.').next())
                .and_then(|m| m.parse::<u32>().ok());
            if major.is_some_and(|m| m < 3) {
                missing.push(format!(
                    "{} is too old: fio 3.x is needed (apt-get install fio)",
                    tools.fio
                ));
            } else if need_libaio {
                let engines = tool_output("fio", &["--enghelp"], "").unwrap_or_default();
                if !engines.split_whitespace().any(|e| e == "libaio") {
                    missing.push(format!(
                        "{} has no libaio engine (needed by randread-4k-qd16): install Debian's \
                         fio package (apt-get install fio libaio1), or leave the job out with --jobs",
                        tools.fio
                    ));
                }
            }
        }
        Err(e) => missing.push(e),
    }
    if need_fuse {
        if !Path::new("/dev/fuse").exists() {
            missing.push(
                "/dev/fuse is missing: load the module (modprobe fuse), or in a container run \
                 with --device /dev/fuse"
                    .to_string(),
            );
        }
        if let Err(e) = tool_output(
            "fusermount3",
            &["--version"],
            "install it with `apt-get install fuse3`",
        ) {
            missing.push(e);
        }
    }
    if need_bindfs {
        match tool_output(
            "bindfs",
            &["--version"],
            "install it with `apt-get install bindfs`, or leave it out with \
             --targets pfnfs-direct,pfnfs-buffered,tmpfs",
        ) {
            Ok(v) => tools.bindfs = v.lines().next().map(|l| l.trim().to_string()),
            Err(e) => missing.push(e),
        }
    }
    if !Path::new("/dev/shm").is_dir() {
        missing.push("/dev/shm is missing: pools and backing stores live there".to_string());
    }
    if missing.is_empty() {
        Ok(tools)
    } else {
        Err(format!(
            "cannot run the benchmark:\n  - {}",
            missing.join("\n  - ")
        ))
    }
}

/// The machine the figures were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Online CPUs (`nproc`).
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// `MemTotal` from `/proc/meminfo`, in KiB.
    pub mem_total_kib: u64,
    /// `/proc/sys/fs/fuse/max_pages_limit`, if present.
    pub fuse_max_pages_limit: Option<u64>,
    /// 1-minute load average when the run started: other work on the machine.
    pub load_avg_start: Option<f64>,
}

impl Machine {
    /// Reads `/proc`.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let mem_total_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| status_field(&m, "MemTotal"))
            .unwrap_or(0);
        let fuse_max_pages_limit = std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            mem_total_kib,
            fuse_max_pages_limit,
            load_avg_start: load_avg(),
        }
    }

    /// One line: `2 CPUs (Intel Xeon), Linux 6.18.44, 23.5 GiB RAM`.
    pub fn summary(&self) -> String {
        format!(
            "{} CPU{} ({}), Linux {}, {:.1} GiB RAM",
            self.nproc,
            if self.nproc == 1 { "" } else { "s" },
            self.cpu_model,
            self.kernel,
            self.mem_total_kib as f64 / (1u64 << 20) as f64
        )
    }
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Free bytes of the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// True if this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process, so that the
/// benchmark stops between steps and its guards unmount everything. The signals are blocked
/// in this thread (and so in every thread started later) and taken by a thread that waits for
/// them with `sigwait`; children get an empty signal mask from `Command`. The children run in
/// their own process groups, so a Ctrl-C at the terminal reaches only this process, which then
/// stops its fio run itself. Call it before starting other threads.
pub fn catch_interrupts() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        while set.wait().is_ok() {
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
    });
}

/// True once SIGINT, SIGTERM or SIGHUP arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Seconds since the epoch as UTC `(year, month, day, hour, minute, second)`.
fn utc(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2025-11-27T17:22:05Z`.
pub fn iso_timestamp() -> String {
    let (y, mo, d, h, mi, s) = utc(now_secs());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `20251127-172205` (for folder names).
pub fn folder_timestamp() -> String {
    let (y, mo, d, h, mi, s) = utc(now_secs());
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(utc(1_764_264_125), (2025, 11, 27, 17, 22, 5));
    }
}
