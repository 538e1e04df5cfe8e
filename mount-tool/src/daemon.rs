//! Running the daemon in the background.
//!
//! [`spawn_daemon`] re-executes this binary (`std::env::current_exe()`) with the same
//! arguments plus the hidden `--daemon-child` flag. The child gets stdin from `/dev/null`,
//! stderr on the log file (or `/dev/null`) and stdout on a pipe to the parent. The child
//! calls `setsid` and serves the mount in the foreground; through a [`Notifier`] on its
//! stdout it reports `OK` (the mount is live; stdout then points at `/dev/null`) or
//! `ERR message`. The parent reads the pipe until one of those arrives, or until the pipe
//! closes without a word (the child died), and returns that outcome; on success it exits and
//! leaves the child running.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::Failure;

/// The hidden flag that marks the re-executed daemon.
pub const DAEMON_CHILD_FLAG: &str = "--daemon-child";

/// How long the parent waits for the daemon to report the mount live.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The daemon's end of the report: its stdout. Dropping it without a word (or exiting) makes
/// the parent report that the daemon exited before the mount was live.
#[derive(Debug)]
pub struct Notifier {
    pending: bool,
}

impl Notifier {
    /// For the re-executed daemon: detaches from the terminal's session and returns the
    /// notifier that reports through stdout.
    pub fn for_daemon_child() -> Notifier {
        let _ = nix::unistd::setsid();
        Notifier { pending: true }
    }

    /// Tells the parent that the mount is live, then points stdout at `/dev/null`. Later
    /// calls do nothing.
    pub fn ready(&mut self) {
        if std::mem::take(&mut self.pending) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"OK\n");
            let _ = out.flush();
            if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(&null);
            }
        }
    }

    /// Tells the parent that mounting failed. Returns false if the parent was told `OK`
    /// already (then the caller should log the error instead).
    pub fn fail(&mut self, message: &str) -> bool {
        if !std::mem::take(&mut self.pending) {
            return false;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(format!("ERR {message}\n").as_bytes());
        let _ = out.flush();
        true
    }
}

/// Starts the daemon as a re-executed child with `args` (this process's arguments, without
/// the program name) plus [`DAEMON_CHILD_FLAG`], and waits for its report. See the module
/// documentation.
pub fn spawn_daemon(args: &[OsString], log_file: Option<&Path>) -> Result<(), Failure> {
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
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(format!("cannot find the pfnfs executable: {e}")))?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let mut child = Command::new(&exe)
        .args(args)
        .arg(DAEMON_CHILD_FLAG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| Failure::new(format!("{}: cannot start the daemon: {e}", exe.display())))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    wait_for_child(stdout, &mut child)
}

/// Reads the first line of the child's report on another thread, so that the wait can time
/// out. `None` means the pipe closed without a full line.
fn read_report(mut pipe: ChildStdout) -> mpsc::Receiver<Option<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut report = Vec::new();
        let mut buf = [0u8; 4096];
        let line = loop {
            match pipe.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    report.extend_from_slice(&buf[..n]);
                    if let Some(end) = report.iter().position(|b| *b == b'\n') {
                        break Some(String::from_utf8_lossy(&report[..end]).into_owned());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break None,
            }
        };
        let _ = tx.send(line);
    });
    rx
}

/// Waits for the child's report: `OK`, `ERR message`, or the pipe closing.
fn wait_for_child(pipe: ChildStdout, child: &mut Child) -> Result<(), Failure> {
    let pid = child.id();
    let line = match read_report(pipe).recv_timeout(READY_TIMEOUT) {
        Ok(line) => line,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(Failure::new(format!(
                "daemon {pid} has not reported the mount live after {} s; giving up waiting \
                 (it may still be running)",
                READY_TIMEOUT.as_secs()
            )));
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
    };
    match line.as_deref() {
        Some("OK") => Ok(()),
        Some(l) if l.starts_with("ERR ") => {
            reap(child);
            Err(Failure::new(l["ERR ".len()..].to_string()))
        }
        _ => Err(Failure::new(format!(
            "daemon {pid} {} before the mount was live",
            reap(child)
        ))),
    }
}

/// Waits for a child that has closed its pipe and describes how it ended.
fn reap(child: &mut Child) -> String {
    use std::os::unix::process::ExitStatusExt;
    for _ in 0..100 {
        match child.try_wait() {
            Ok(Some(status)) => {
                if let Some(code) = status.code() {
                    return format!("exited with status {code}");
                }
                if let Some(signal) = status.signal() {
                    return format!("was killed by signal {signal}");
                }
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    "closed its pipe".to_string()
}
