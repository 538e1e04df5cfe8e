//! `pfnfs bench`: the command line of the benchmark, which lives in the `pfnfs-bench` crate
//! (`bench/`). The arguments become [`pfnfs_bench::Options`]; pools are mounted with this
//! binary (`/proc/self/exe`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pfnfs_bench::{BenchError, JobName, TargetKind};

use crate::Failure;
use crate::size::parse_size;

/// Benchmark pfnfs against tmpfs and bindfs with fio and metadata jobs (needs fio for the fio
/// jobs; bindfs for the bindfs target).
///
/// Runs fio (direct=1, psync with numjobs 1 and 2, and libaio at queue depth 16) on pfnfs in
/// direct and in buffered mode, on tmpfs and on bindfs over tmpfs, each mounted afresh per
/// round on a pool or backing store in /dev/shm; the targets with a page cache also run the
/// psync jobs with direct=0 for reference. Then, on each target mounted afresh again, the
/// metadata jobs: create, stat, readdir and unlink of --files files of 100 bytes, 1,000 per
/// directory, every operation timed. Writes results.json, results.md, chart.png and
/// chart-meta.png to the results folder. The fio jobs take about 15 minutes, the metadata
/// jobs at 1,000,000 files about as long per round; --quick about a minute.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Results folder (created if needed) [default: results/YYYYMMDD-HHMMSS (UTC)]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Smoke run of about a minute: 1 round, 1 s per fio run, numjobs 2 only, 64 MiB files,
    /// 20,000 files for the metadata jobs.
    /// Not for figures.
    #[arg(long)]
    pub quick: bool,

    /// Rounds; each mounts and runs every target once [default: 3; --quick: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100), value_name = "N")]
    pub rounds: Option<u32>,

    /// Seconds per fio run, e.g. 5 or 0.5 [default: 5; --quick: 1]
    #[arg(long, value_parser = parse_seconds, value_name = "SECS")]
    pub runtime: Option<Duration>,

    /// Size of the file every job works on [default: 1G; --quick: 64M]
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size: Option<u64>,

    /// Targets to run, comma-separated, in round order [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub targets: Vec<TargetKind>,

    /// Jobs to run, comma-separated: fio jobs and metadata jobs (create, stat, readdir,
    /// unlink) [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub jobs: Vec<JobName>,

    /// Files the metadata jobs make, 1,000 per directory [default: 1000000; --quick: 20000]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000), value_name = "N")]
    pub files: Option<u64>,

    /// fio numjobs values, comma-separated [default: 1,2; --quick: 2]
    #[arg(long, value_delimiter = ',', value_name = "LIST",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub numjobs: Vec<u32>,

    /// Skip the direct=0 reference runs on the targets with a page cache.
    #[arg(long)]
    pub no_buffered_reference: bool,

    /// Read the fio job files from DIR instead of the copies built into pfnfs.
    #[arg(long, value_name = "DIR")]
    pub job_dir: Option<PathBuf>,

    /// pfnfs FUSE worker threads [default: pfnfs's, one per CPU]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub threads: Option<u16>,

    /// Keep every target's pool or backing store in 2 MiB pages, as persistent memory is
    /// mapped (device DAX): the store directory in /dev/shm becomes a tmpfs mounted with
    /// `huge=always`, and the tmpfs target is mounted with `huge=always` too. Needs root.
    #[arg(long)]
    pub huge_pages: bool,
}

/// `5`, `0.5`, `1.5s` or `500ms`.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = t.strip_suffix('s') {
        (s, 1.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds (like 5, 0.5 or 500ms)"))?;
    let secs = value * scale;
    if !secs.is_finite() || !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{text:?}: a runtime from 0.1 to 3600 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let (jobs, meta_jobs) = JobName::split(&args.jobs);
    let options = pfnfs_bench::Options {
        pfnfs: PathBuf::from("/proc/self/exe"),
        pfnfs_version: env!("CARGO_PKG_VERSION").to_string(),
        out: args.out,
        quick: args.quick,
        rounds: args.rounds,
        runtime: args.runtime,
        size: args.size,
        targets: args.targets,
        jobs,
        meta_jobs,
        files: args.files,
        numjobs: args.numjobs,
        buffered_reference: !args.no_buffered_reference,
        job_dir: args.job_dir,
        threads: args.threads,
        huge_pages: args.huge_pages,
    };
    match pfnfs_bench::run(&options) {
        Ok(_) => Ok(()),
        Err(e @ BenchError::Usage(_)) => Err(Failure::usage(e.to_string())),
        Err(e @ BenchError::Interrupted) => Err(Failure {
            message: e.to_string(),
            code: 130,
        }),
        Err(e @ BenchError::Failed(_)) => Err(Failure::new(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_seconds("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_seconds("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_seconds("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("abc").is_err());
        assert!(parse_seconds("nan").is_err());
    }
}
