//! `pfnfs fsck POOL [-n | -y | -p] [--json]`: check a pool, and repair it with `-y`.
//!
//! e2fsck-style modes: `-n` (the default) opens the pool read-only and changes nothing; `-y`
//! repairs everything that can be repaired and says what it did; `-p` (preen) repairs only
//! what loses nothing and otherwise writes nothing. What is checked and how each problem is
//! repaired is documented in `pfnfs_fs::fsck`.
//!
//! Exit codes are fsck(8)'s: 0 no errors, 1 errors corrected, 4 errors left uncorrected,
//! 8 operational error (the pool cannot be opened, is mounted and -y/-p was asked, I/O).
//! Usage errors exit 2, like every pfnfs subcommand.
//!
//! A mounted pool is refused unless `-n`: it is found in `/proc/self/mountinfo`, and a pool
//! held by a daemon that is not (or no longer) mounted is refused by the pool's own lock.
//! On a terminal, a progress bar is drawn on stderr once a phase has many items to go
//! through (a large pool).

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pfnfs_fs::fsck::{FsckMode, FsckReport, fsck_pool_with_progress};
use pfnfs_fs::mountinfo;

use crate::Failure;

/// A phase with at least this many items (inodes, extents, log records) gets a progress bar.
const PROGRESS_MIN_ITEMS: u64 = 50_000;

/// Check a pool's superblock, log, inodes, directories, extent maps and free space against
/// each other; repair with -y.
///
/// Exit codes (fsck(8)): 0 no errors, 1 errors corrected, 4 errors left uncorrected,
/// 8 operational error.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("fsck_mode").args(["check", "yes", "preen"])))]
pub struct FsckArgs {
    /// The pool file or device.
    pub pool: PathBuf,

    /// Check only (the default): open the pool read-only and change nothing. Also allowed on
    /// a mounted pool.
    #[arg(short = 'n')]
    pub check: bool,

    /// Repair everything that can be repaired, and say what was done.
    #[arg(short = 'y')]
    pub yes: bool,

    /// Preen: repair only what loses nothing (link counts, free space, lost inodes to
    /// /lost+found, ...); if anything else is wrong, write nothing and exit 4.
    #[arg(short = 'p', short_alias = 'a')]
    pub preen: bool,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl FsckArgs {
    fn mode(&self) -> FsckMode {
        if self.yes {
            FsckMode::Repair
        } else if self.preen {
            FsckMode::Preen
        } else {
            FsckMode::Check
        }
    }
}

fn operational(message: String) -> Failure {
    Failure { message, code: 8 }
}

/// Checks (and repairs), prints the report, exits with fsck(8)'s code.
pub fn run(args: FsckArgs) -> Result<(), Failure> {
    let mode = args.mode();
    let pool = &args.pool;
    let entries = mountinfo::read().map_err(operational)?;
    if let Some(entry) = mountinfo::find_by_pool(&entries, pool).first() {
        if mode != FsckMode::Check {
            return Err(operational(format!(
                "{}: mounted on {}: unmount it first (or check it read-only with -n)",
                pool.display(),
                entry.mount_point.display()
            )));
        }
        eprintln!(
            "pfnfs fsck: warning: {} is mounted on {}; a pool in use may show passing \
             inconsistencies",
            pool.display(),
            entry.mount_point.display()
        );
    }
    let bar = Bar::new(std::io::stderr().is_terminal());
    let result = fsck_pool_with_progress(pool, mode, &|phase, done, total| {
        bar.update(phase, done, total)
    });
    bar.finish();
    let report = result.map_err(|e| operational(format!("fsck {}", crate::about(pool, &e))))?;
    if args.json {
        let text = serde_json::to_string_pretty(&JsonReport {
            pool: pool.display().to_string(),
            mode: mode_name(mode),
            exit_code: report.exit_code(),
            report: &report,
        })
        .map_err(|e| operational(format!("{}: cannot encode JSON: {e}", pool.display())))?;
        println!("{text}");
    } else {
        print!("{}", render(pool, mode, &report));
    }
    match report.exit_code() {
        0 => Ok(()),
        code => Err(Failure {
            message: summary(pool, &report),
            code: u8::try_from(code).unwrap_or(4),
        }),
    }
}

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    pool: String,
    mode: &'static str,
    exit_code: i32,
    #[serde(flatten)]
    report: &'a FsckReport,
}

fn mode_name(mode: FsckMode) -> &'static str {
    match mode {
        FsckMode::Check => "check",
        FsckMode::Repair => "repair",
        FsckMode::Preen => "preen",
    }
}

/// One line: clean, all repaired, or how many are left.
fn summary(pool: &Path, r: &FsckReport) -> String {
    let total = r.problems.len();
    let left = r.problems.iter().filter(|p| !p.repaired).count();
    match (total, left) {
        (0, _) => format!("{}: clean", pool.display()),
        (n, 0) => format!("{}: {n} problem(s) found, all repaired", pool.display()),
        (n, left) if left == n => format!(
            "{}: {n} problem(s) found, none repaired{}",
            pool.display(),
            if r.problems.iter().any(|p| !p.action.starts_with("none")) {
                " (pfnfs fsck -y repairs them)"
            } else {
                ""
            }
        ),
        (n, left) => format!(
            "{}: {n} problem(s) found, {left} left uncorrected",
            pool.display()
        ),
    }
}

/// The text report.
fn render(pool: &Path, mode: FsckMode, r: &FsckReport) -> String {
    let mut out = format!(
        "{}: checked {} inode(s), {} extent(s)",
        pool.display(),
        r.inodes_checked,
        r.extents_checked
    );
    if r.records_replayed > 0 {
        out += &format!(", replayed {} log record(s)", r.records_replayed);
    }
    out.push('\n');
    for note in &r.notes {
        out += &format!("note: {note}\n");
    }
    for p in &r.problems {
        out += &format!("PROBLEM [{}] {}\n", p.kind, p.detail);
        let what = if p.repaired {
            "repaired"
        } else if p.action.starts_with("none") {
            "cannot repair"
        } else {
            match mode {
                FsckMode::Check => "-y would",
                FsckMode::Preen => "left for -y",
                FsckMode::Repair => "not repaired",
            }
        };
        out += &format!("    {what}: {}\n", p.action);
    }
    out += &summary(pool, r);
    out.push('\n');
    out
}

/// A progress bar on stderr, drawn only on a terminal and only for phases with many items.
struct Bar {
    terminal: bool,
    bar: RefCell<Option<ProgressBar>>,
}

impl Bar {
    fn new(terminal: bool) -> Bar {
        Bar {
            terminal,
            bar: RefCell::new(None),
        }
    }

    fn update(&self, phase: &str, done: u64, total: u64) {
        if !self.terminal {
            return;
        }
        let mut slot = self.bar.borrow_mut();
        if slot.is_none() && total >= PROGRESS_MIN_ITEMS {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{msg:28} [{bar:40}] {pos}/{len} ({eta})")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            *slot = Some(bar);
        }
        if let Some(bar) = slot.as_ref() {
            if bar.message() != phase {
                bar.set_position(0);
                bar.set_length(total);
                bar.reset_eta();
                bar.set_message(phase.to_string());
            }
            bar.set_position(done.min(total));
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pfnfs_fs::fsck::Problem;

    fn problem(kind: &str, action: &str, repaired: bool) -> Problem {
        Problem {
            kind: kind.into(),
            detail: format!("{kind} detail"),
            action: action.into(),
            repaired,
        }
    }

    #[test]
    fn renders_problems_by_mode() {
        let pool = Path::new("/p.pool");
        let mut r = FsckReport {
            inodes_checked: 3,
            extents_checked: 2,
            records_replayed: 1,
            notes: vec!["a note".into()],
            ..Default::default()
        };
        let text = render(pool, FsckMode::Check, &r);
        assert_eq!(
            text,
            "/p.pool: checked 3 inode(s), 2 extent(s), replayed 1 log record(s)\n\
             note: a note\n/p.pool: clean\n"
        );
        r.problems = vec![
            problem("link-count", "set nlink to 1", false),
            problem("checkpoint", "none: lost", false),
        ];
        let text = render(pool, FsckMode::Check, &r);
        assert!(
            text.contains("PROBLEM [link-count] link-count detail\n    -y would: set nlink to 1\n")
        );
        assert!(text.contains("    cannot repair: none: lost\n"));
        assert!(text.ends_with("2 problem(s) found, none repaired (pfnfs fsck -y repairs them)\n"));
        r.problems[0].repaired = true;
        let text = render(pool, FsckMode::Repair, &r);
        assert!(text.contains("    repaired: set nlink to 1\n"), "{text}");
        assert!(
            text.ends_with("2 problem(s) found, 1 left uncorrected\n"),
            "{text}"
        );
        r.problems.pop();
        assert_eq!(
            summary(pool, &r),
            "/p.pool: 1 problem(s) found, all repaired"
        );
    }

    #[test]
    fn modes_from_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: FsckArgs,
        }
        let mode = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.args.mode());
        assert_eq!(mode(&["x", "p"]).unwrap(), FsckMode::Check);
        assert_eq!(mode(&["x", "-n", "p"]).unwrap(), FsckMode::Check);
        assert_eq!(mode(&["x", "-y", "p"]).unwrap(), FsckMode::Repair);
        assert_eq!(mode(&["x", "-p", "p"]).unwrap(), FsckMode::Preen);
        assert_eq!(mode(&["x", "-a", "p"]).unwrap(), FsckMode::Preen);
        assert!(mode(&["x", "-n", "-y", "p"]).is_err());
    }
}
