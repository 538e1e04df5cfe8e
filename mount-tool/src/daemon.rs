//! Running the daemon in the background.
//!
//! [`daemonize`] forks. The child calls `setsid`, points stdin and stdout at `/dev/null` and
//! stderr at the log file (or `/dev/null`), and gets a [`Notifier`]: the write end of a pipe.
//! The parent reads the pipe until the child reports `OK` (the mount is live) or `ERR message`,
//! or until the pipe closes without a word (the child died), and returns that outcome.
//!
//! Invariant: `daemonize` must run while the process has exactly one thread (fork copies only
//! the calling thread, so locks held by other threads would stay locked in the child). It
//! checks `/proc/self/task` and refuses otherwise.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Failure;

/// How long the parent waits for the daemon to report the mount live.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Which side of the fork this is.
pub enum Forked {
    /// The parent: the mount is live (Ok) or the daemon failed (the daemon's message).
    Parent(Result<(), Failure>),
    /// The daemon.
    Child(Notifier),
}

/// The daemon's end of the pipe. Dropping it without a word makes the parent report that the
/// daemon exited before the mount was live.
#[derive(Debug)]
pub struct Notifier {
    pipe: Option<File>,
}

impl Notifier {
    /// Tells the parent that the mount is live and closes the pipe. Later calls do nothing.
    pub fn ready(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"OK\n");
        }
    }

    /// Tells the parent that mounting failed. Returns false if the parent was told `OK`
    /// already (then the caller should log the error instead).
    pub fn fail(&mut self, message: &str) -> bool {
        match self.pipe.take() {
            Some(mut pipe) => {
                let _ = pipe.write_all(format!("ERR {message}\n").as_bytes());
                true
            }
            None => false,
        }
    }
}

fn os_error(what: &str) -> Failure {
    Failure::new(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Forks the daemon. See the module documentation.
pub fn daemonize(log_file: Option<&Path>) -> Result<Forked, Failure> {
    let threads = thread_count();
    if threads != 1 {
        return Err(Failure::new(format!(
            "internal error: {threads} threads exist before fork; use --foreground"
        )));
    }
    let log = match log_file {
        Some(path) => OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| Failure::new(format!("{}: cannot open log file: {e}", path.display())))?,
        None => OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|e| Failure::new(format!("/dev/null: {e}")))?,
    };
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| Failure::new(format!("/dev/null: {e}")))?;

    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe"));
    }
    // SAFETY: the descriptors are fresh and owned by nobody else.
    let (read_end, write_end) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };

    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the process has one thread (checked above), so the child inherits no lock held
    // by another thread.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(os_error("fork")),
        0 => {
            drop(read_end);
            // SAFETY: plain system calls on descriptors this process owns.
            unsafe {
                libc::setsid();
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(null.as_raw_fd(), 1);
                libc::dup2(log.as_raw_fd(), 2);
            }
            Ok(Forked::Child(Notifier {
                pipe: Some(write_end),
            }))
        }
        child => {
            drop(write_end);
            Ok(Forked::Parent(wait_for_child(read_end, child)))
        }
    }
}

/// Reads the child's report. The pipe closes when the child reports or dies.
fn wait_for_child(mut pipe: File, child: libc::pid_t) -> Result<(), Failure> {
    let start = Instant::now();
    let mut report = Vec::new();
    loop {
        let mut pollfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pollfd, 1, 1000) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Failure::new(format!("waiting for daemon {child}: {err}")));
        }
        if ready == 0 {
            if start.elapsed() > READY_TIMEOUT {
                return Err(Failure::new(format!(
                    "daemon {child} has not reported the mount live after {} s; giving up waiting \
                     (it may still be running)",
                    READY_TIMEOUT.as_secs()
                )));
            }
            continue;
        }
        let mut buf = [0u8; 4096];
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => report.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::new(format!("waiting for daemon {child}: {e}"))),
        }
    }
    let text = String::from_utf8_lossy(&report);
    let line = text.lines().next().unwrap_or("");
    if line == "OK" {
        return Ok(());
    }
    if let Some(message) = line.strip_prefix("ERR ") {
        reap(child);
        return Err(Failure::new(message.to_string()));
    }
    Err(Failure::new(format!(
        "daemon {child} {} before the mount was live",
        reap(child)
    )))
}

/// Waits for a child that has closed its pipe and describes how it ended.
fn reap(child: libc::pid_t) -> String {
    let mut status = 0;
    for _ in 0..100 {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            if libc::WIFEXITED(status) {
                return format!("exited with status {}", libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return format!("was killed by signal {}", libc::WTERMSIG(status));
            }
        }
        if r < 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "closed its pipe".to_string()
}
