//! The `pfnfs` command: make, mount, unmount and inspect pfnfs pools.
//!
//! - [`commands`]: one module per subcommand, each with its own clap struct.
//! - [`size`]: sizes on the command line (`1G`) and in messages (`1.00 GiB`).
//! - [`options`]: `-o` mount options.
//! - [`daemon`]: re-executes this binary as the detached daemon, which reports "mount is
//!   live" to the parent through a pipe.
//!
//! Exit codes: 0 success, 1 error, 2 usage error; `fsck` uses fsck(8) codes.
//!
//! Mount-helper form: for type `fuse.pfnfs` mount(8) runs `/sbin/mount.fuse.pfnfs POOL
//! MOUNTPOINT -o OPTS` (this binary under that name) or, without it, `mount.fuse3`, which runs
//! `pfnfs POOL MOUNTPOINT -o OPTS`; neither names a subcommand. [`helper_args`] turns both
//! into `pfnfs mount POOL MOUNTPOINT -o OPTS`.

#![forbid(unsafe_code)]

mod commands;
mod daemon;
mod options;
mod room;
mod size;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// pfnfs: a FUSE filesystem that keeps file data in a persistent-memory pool.
#[derive(Debug, Parser)]
#[command(name = "pfnfs", version, about, long_about = None)]
#[command(
    after_help = "Mount-helper form: `pfnfs POOL MOUNTPOINT -o OPTS` means `pfnfs mount POOL MOUNTPOINT -o OPTS`."
)]
struct Cli {
    /// Log level when RUST_LOG is not set: error, warn, info, debug or trace.
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        default_value = "warn",
        value_parser = ["off", "error", "warn", "info", "debug", "trace"]
    )]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (format) a pool file or device.
    Mkfs(commands::mkfs::MkfsArgs),
    /// Mount a pool (creating it first if it does not exist).
    Mount(commands::mount::MountArgs),
    /// Unmount a pfnfs mount and wait for its daemon to finish.
    Umount(commands::umount::UmountArgs),
    /// Show a pool's figures (size, usage, inodes, extents).
    Stat(commands::stat::StatArgs),
    /// Check a pool and repair it with -y (fsck(8) exit codes: 0, 1, 4, 8).
    Fsck(commands::fsck::FsckArgs),
    /// Convert a format 1 pool to format 2 in place (crash-safe; rerun it if interrupted).
    Upgrade(commands::upgrade::UpgradeArgs),
    /// Benchmark pfnfs against tmpfs and bindfs with fio (JSON, Markdown and PNG results).
    Bench(commands::bench::BenchArgs),
}

/// An error for the user: a message naming the path and the problem, and an exit code.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// Process exit code.
    pub code: u8,
}

impl Failure {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }

    /// A failure about `path` (exit code 1): `message` prefixed with `path: ` unless it
    /// already starts so (errors from opening a pool name it themselves).
    pub fn about(path: &std::path::Path, message: impl Into<String>) -> Failure {
        Failure::new(about(path, &message.into()))
    }

    /// A usage error (exit code 2), such as a bad `-o` value.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
}

/// `message` prefixed with `path: ` unless it already starts so.
pub fn about(path: &std::path::Path, message: &str) -> String {
    let prefix = format!("{}: ", path.display());
    if message.starts_with(&prefix) {
        message.to_string()
    } else {
        format!("{prefix}{message}")
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(message)
    }
}

/// Whether `name` is a subcommand (or `help`): taken from the clap definition, so that a new
/// subcommand can never be mistaken for the helper form's POOL operand.
fn is_subcommand(name: &str) -> bool {
    use clap::CommandFactory;
    name == "help" || Cli::command().find_subcommand(name).is_some()
}

/// Rewrites the mount-helper form into the `mount` subcommand: if the first argument is
/// neither a subcommand nor a flag, or the program is called as `mount.*` (`mount.fuse.pfnfs`),
/// insert `mount`.
pub(crate) fn helper_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let called_as_helper = args
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().starts_with("mount."))
        })
        .unwrap_or(false);
    let first_is_operand = args.get(1).is_some_and(|a| {
        let a = a.to_string_lossy();
        !a.starts_with('-') && !is_subcommand(&a)
    });
    if args.len() >= 2 && (first_is_operand || called_as_helper) && args[1] != "mount" {
        args.insert(1, OsString::from("mount"));
    }
    args
}

/// The `mount` arguments of a command line, if it is one (used to learn how a running
/// daemon was started, from its `/proc/PID/cmdline`).
pub(crate) fn parse_mount_command(args: Vec<OsString>) -> Option<commands::mount::MountArgs> {
    match Cli::try_parse_from(helper_args(args)).ok()?.command {
        Command::Mount(m) => Some(m),
        _ => None,
    }
}

fn init_logging(level: &str, daemonizing: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let ansi = !daemonizing && std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(helper_args(std::env::args_os().collect()));
    let daemonizing = matches!(&cli.command, Command::Mount(m) if !m.foreground);
    init_logging(&cli.log_level, daemonizing);

    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Mkfs(args) => commands::mkfs::run(args),
        Command::Mount(args) => commands::mount::run(args),
        Command::Umount(args) => commands::umount::run(args),
        Command::Stat(args) => commands::stat::run(args),
        Command::Fsck(args) => commands::fsck::run(args),
        Command::Upgrade(args) => commands::upgrade::run(args),
        Command::Bench(args) => commands::bench::run(args),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            eprintln!("pfnfs: {}", failure.message);
            ExitCode::from(failure.code)
        }
        // The panic hook has printed the message already.
        Err(_) => {
            eprintln!("pfnfs: internal error (a bug): see the panic message above");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    /// Errors that already name the pool are not prefixed with it again (`pfnfs stat` said
    /// "POOL: POOL: not a pfnfs pool").
    #[test]
    fn about_names_the_path_once() {
        let p = std::path::Path::new("/x/p.pool");
        assert_eq!(about(p, "/x/p.pool: truncated"), "/x/p.pool: truncated");
        assert_eq!(about(p, "truncated"), "/x/p.pool: truncated");
        assert_eq!(about(p, "/x/p.pool2: no"), "/x/p.pool: /x/p.pool2: no");
    }

    #[test]
    fn helper_form_becomes_mount() {
        assert_eq!(
            helper_args(args(&["pfnfs", "/p.pool", "/mnt", "-o", "rw"])),
            args(&["pfnfs", "mount", "/p.pool", "/mnt", "-o", "rw"])
        );
        assert_eq!(
            helper_args(args(&["/sbin/mount.pfnfs", "/p", "/mnt"])),
            args(&["/sbin/mount.pfnfs", "mount", "/p", "/mnt"])
        );
        for unchanged in [
            &["pfnfs", "stat", "/p"][..],
            &["pfnfs", "--help"],
            &["pfnfs"],
            &["pfnfs", "mount", "/p", "/m"],
            &["pfnfs", "upgrade", "/p"],
            &["pfnfs", "help", "upgrade"],
        ] {
            assert_eq!(helper_args(args(unchanged)), args(unchanged));
        }
        use clap::CommandFactory;
        for sub in Cli::command().get_subcommands() {
            let line = args(&["pfnfs", sub.get_name(), "/p"]);
            assert_eq!(helper_args(line.clone()), line, "{}", sub.get_name());
        }
    }

    /// mount(8) runs `/sbin/mount.fuse.pfnfs POOL MOUNTPOINT [-sfnv] [-N NS] [-o OPTS]
    /// [-t TYPE]`; every flag of that convention parses.
    #[test]
    fn helper_takes_mount8s_flags() {
        let m = parse_mount_command(args(&[
            "/sbin/mount.fuse.pfnfs",
            "/p.pool",
            "/mnt",
            "-s",
            "-f",
            "-n",
            "-v",
            "-o",
            "ro,remount",
            "-t",
            "fuse.pfnfs",
        ]))
        .expect("parses as mount");
        assert!(m.fake && m.no_mtab && m.sloppy && m.verbose);
        assert_eq!(m.fstype.as_deref(), Some("fuse.pfnfs"));
        assert_eq!(m.options, ["ro,remount"]);
        let m = parse_mount_command(args(&[
            "mount.fuse.pfnfs",
            "/p",
            "/m",
            "-N",
            "/proc/1/ns/mnt",
        ]))
        .expect("parses as mount");
        assert_eq!(m.namespace.as_deref(), Some("/proc/1/ns/mnt"));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
