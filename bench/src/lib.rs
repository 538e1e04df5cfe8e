//! pfnfs-bench: fio and metadata jobs on pfnfs (direct and buffered mode), tmpfs and bindfs
//! over tmpfs, with medians, ratios and the FUSE daemons' memory, as JSON, Markdown and PNG
//! charts. The
//! `pfnfs bench` command is a thin front end to [`run`].
//!
//! Each round visits every target in turn (A B C D, A B C D, ...), mounting it afresh on a new
//! pool or backing store in /dev/shm, and runs every job on it. Everything mounted is
//! unmounted by guards, also on errors and Ctrl-C.
//!
//! - `plan`: [`Options`] resolved into what runs: defaults, the cases per target, the tool
//!   checks, the results folder.
//! - `runner`: the rounds (mount, run every case, unmount), the progress bar, the outputs.
//! - `jobs`: the fio job files in `bench/jobs/` (built in), the cases of each target, and the
//!   `--jobs` names of fio and metadata jobs.
//! - `meta`: the metadata jobs (create, stat, readdir, unlink of N small files), run in this
//!   process with every operation timed into a fixed-size histogram.
//! - `meta_report`: their records, medians, Markdown section.
//! - `targets`: mounting and unmounting each target.
//! - `fio`: one fio run and its JSON.
//! - `report`: records, medians, ratios, JSON and Markdown.
//! - `chart`: the PNGs (fio jobs; metadata jobs).
//! - `system`: tool checks, machine description, /proc/PID/status, signals, timestamps.

#![forbid(unsafe_code)]

mod chart;
mod fio;
mod jobs;
mod meta;
mod meta_report;
mod plan;
mod report;
mod runner;
mod system;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

pub use fio::FioResult;
pub use jobs::{Case, JobId, JobName, Metric};
pub use meta::{ALL_META_JOBS, Latency, MetaFigures, MetaJob};
pub use meta_report::{MetaCell, MetaRecord, MetaSummaryRow};
pub use report::{Cell, MountRecord, Report, RunRecord, Settings, SummaryRow};
pub use system::{Machine, MemStat, Tools};
pub use targets::TargetKind;

/// What to run. Every `None` or empty field takes its default, which may depend on `quick`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The pfnfs binary that mounts (`mount --foreground`) and unmounts (`umount`) the pfnfs
    /// targets. The run copies it into its work directory first, so that every pfnfs mount of
    /// the run uses the same build even if `cargo build` replaces the file while it runs.
    /// `pfnfs bench` passes `/proc/self/exe`: itself.
    pub pfnfs: PathBuf,
    /// The version of that pfnfs, for the report.
    pub pfnfs_version: String,
    /// Results folder, created if needed [default: `results/YYYYMMDD-HHMMSS` (UTC)].
    pub out: Option<PathBuf>,
    /// Smoke run of about a minute: 1 round, 1 s per fio run, numjobs 2 only, 64 MiB files,
    /// 20,000 files for the metadata jobs.
    pub quick: bool,
    /// Rounds; each mounts and runs every target once [default: 3; quick: 1].
    pub rounds: Option<u32>,
    /// Time per fio run [default: 5 s; quick: 1 s].
    pub runtime: Option<Duration>,
    /// Size of the file every job works on, at least 4 MiB [default: 1 GiB; quick: 64 MiB].
    pub size: Option<u64>,
    /// Targets, in round order [default: all].
    pub targets: Vec<TargetKind>,
    /// fio jobs; they run in the canonical order whatever the list's. With `meta_jobs`
    /// also empty: every fio and every metadata job. Else exactly the jobs the two name.
    pub jobs: Vec<JobId>,
    /// Metadata jobs (`create`, `stat`, `readdir`, `unlink`), in process, each target
    /// mounted afresh for them after its fio jobs; see `jobs` for the default.
    pub meta_jobs: Vec<MetaJob>,
    /// Files the metadata jobs make, 1,000 per directory [default: 1,000,000; quick: 20,000].
    pub files: Option<u64>,
    /// fio numjobs values [default: 1 and 2; quick: 2].
    pub numjobs: Vec<u32>,
    /// Run the psync jobs with direct=0 too, on the targets with a page cache.
    pub buffered_reference: bool,
    /// Read the fio job files from this directory instead of the built-in copies.
    pub job_dir: Option<PathBuf>,
    /// pfnfs FUSE worker threads [default: pfnfs's, one per CPU].
    pub threads: Option<u16>,
    /// Keep every store, and the tmpfs target, in 2 MiB pages (`huge=always`). Needs root.
    pub huge_pages: bool,
}

/// Why a run did not complete. The results are written whenever the rounds were reached
/// ([`BenchError::Failed`] after some runs failed, [`BenchError::Interrupted`]).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options ask for nothing that can run (a usage error).
    #[error("{0}")]
    Usage(String),
    /// A tool, room or file is missing, or a fio run, mount or output failed.
    #[error("{0}")]
    Failed(String),
    /// SIGINT, SIGTERM or SIGHUP stopped the run between steps.
    #[error("interrupted; everything was unmounted, partial results written")]
    Interrupted,
}

impl From<String> for BenchError {
    fn from(message: String) -> BenchError {
        BenchError::Failed(message)
    }
}

/// Runs the benchmark: checks the tools, mounts each target per round, runs fio and the
/// metadata jobs, and writes `results.json`, `results.md`, `chart.png` and (with metadata
/// jobs) `chart-meta.png` (with `raw/`, `logs/` and `jobs/`) to the results folder. Progress goes to stderr.
///
/// Once the options, tools and room check out, SIGINT, SIGTERM and SIGHUP are blocked in the
/// calling thread (and so in threads it starts later) and taken by a thread of the run's own:
/// they only make the run stop between steps and unmount everything, and they stay so after
/// `run` returns. Call it before starting other threads.
pub fn run(options: &Options) -> Result<Report, BenchError> {
    let (plan, tools) = plan::prepare(options)?;
    system::catch_interrupts();
    runner::execute(plan, tools)
}
