//! `pfnfs bench`: fio on pfnfs (direct and buffered mode), tmpfs and bindfs over tmpfs, with
//! medians, ratios and the FUSE daemons' memory, as JSON, Markdown and a PNG chart.
//!
//! Each round visits every target in turn (A B C D, A B C D, ...), mounting it afresh on a new
//! pool or backing store in /dev/shm, and runs every job on it (see [`jobs::cases_for`]).
//! Everything mounted is unmounted by guards ([`targets::Mount`]), also on errors and Ctrl-C.
//!
//! - [`jobs`]: the fio job files in `bench/` and the plan.
//! - [`targets`]: mounting and unmounting each target.
//! - [`fio`]: one fio run and its JSON.
//! - [`report`]: records, medians, ratios, JSON and Markdown.
//! - [`chart`]: the PNG.
//! - [`system`]: tool checks, machine description, /proc/PID/status, signals.

mod chart;
mod fio;
mod jobs;
mod report;
mod system;
mod targets;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Failure;
use crate::size::parse_size;

use jobs::{ALL_JOBS, Case, JobId, MMAP_FILE_BYTES};
use report::{MountRecord, Report, RunRecord, Settings};
use targets::{ALL_TARGETS, Mount, MountSpec, TargetKind, WorkDirs};

/// Benchmark pfnfs against tmpfs and bindfs with fio (needs fio; bindfs for the bindfs target).
///
/// Runs fio (direct=1, psync with numjobs 1 and 2, and libaio at queue depth 16) on pfnfs in
/// direct and in buffered mode, on tmpfs and on bindfs over tmpfs, each mounted afresh per
/// round on a pool or backing store in /dev/shm; the targets with a page cache also run the
/// psync jobs with direct=0 for reference. Writes results.json, results.md and chart.png to
/// the results folder. Takes about 15 minutes; --quick about one.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Results folder (created if needed) [default: results/YYYYMMDD-HHMMSS (UTC)]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Smoke run of about a minute: 1 round, 1 s per fio run, numjobs 2 only, 64 MiB files.
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

    /// Jobs to run, comma-separated [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub jobs: Vec<JobId>,

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

/// The resolved configuration.
struct Plan {
    out: PathBuf,
    settings: Settings,
    runtime: Duration,
    job_files: Vec<(JobId, PathBuf)>,
    /// Per target, the cases in order.
    cases: Vec<(TargetKind, Vec<Case>)>,
}

impl Plan {
    fn total_runs(&self) -> u64 {
        u64::from(self.settings.rounds)
            * self.cases.iter().map(|(_, c)| c.len() as u64).sum::<u64>()
    }
}

fn dedup<T: PartialEq + Copy>(list: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for &x in list {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let targets = if args.targets.is_empty() {
        ALL_TARGETS.to_vec()
    } else {
        dedup(&args.targets)
    };
    let jobs: Vec<JobId> = if args.jobs.is_empty() {
        ALL_JOBS.to_vec()
    } else {
        // Keep the canonical order (reads before writes, as laid out), whatever the list's.
        ALL_JOBS
            .iter()
            .copied()
            .filter(|j| args.jobs.contains(j))
            .collect()
    };
    let quick = args.quick;
    let mut numjobs = match (args.numjobs.is_empty(), quick) {
        (false, _) => dedup(&args.numjobs),
        (true, false) => vec![1, 2],
        // fio needs about half a second per run on top of its runtime, so a one-minute
        // smoke run has room for one numjobs value: 2 covers concurrent access too.
        (true, true) => vec![2],
    };
    numjobs.sort_unstable();
    let rounds = args.rounds.unwrap_or(if quick { 1 } else { 3 });
    let runtime = args
        .runtime
        .unwrap_or(Duration::from_secs(if quick { 1 } else { 5 }));
    let size = args.size.unwrap_or(if quick { 64 << 20 } else { 1 << 30 });
    if size < 4 << 20 {
        return Err(Failure::usage("--size: at least 4M"));
    }
    let buffered_reference = !args.no_buffered_reference;

    let cases: Vec<(TargetKind, Vec<Case>)> = targets
        .iter()
        .map(|&t| (t, jobs::cases_for(t, &jobs, &numjobs, buffered_reference)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if cases.is_empty() {
        return Err(Failure::usage(
            "nothing to run: the jobs chosen do not run on the targets chosen \
             (randrw-4k-mmapbuf runs on pfnfs only)",
        ));
    }

    let planned: Vec<TargetKind> = cases.iter().map(|(t, _)| *t).collect();
    let tools = system::preflight(
        planned.iter().any(|t| t.is_fuse()),
        planned.contains(&TargetKind::Bindfs),
        jobs.contains(&JobId::Randread4kQd16),
    )?;

    // Pool / tmpfs: the test file, the mmap buffer file, and room for metadata.
    let store_bytes =
        (size + (size / 4).max(64 << 20) + MMAP_FILE_BYTES as u64).next_multiple_of(2 << 20);
    if let Some(free) = system::free_bytes(Path::new("/dev/shm")) {
        // One target is mounted at a time.
        if free < store_bytes + size {
            return Err(Failure::new(format!(
                "/dev/shm has {} MiB free; this run needs about {} MiB (use a smaller --size)",
                free >> 20,
                (store_bytes + size) >> 20
            )));
        }
    }

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(system::folder_timestamp()));
    for sub in ["", "raw", "logs"] {
        let d = out.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Failure::new(format!("{}: {e}", d.display())))?;
    }
    let out =
        std::fs::canonicalize(&out).map_err(|e| Failure::new(format!("{}: {e}", out.display())))?;
    let job_files = jobs::materialize(&jobs, args.job_dir.as_deref(), &out.join("jobs"))?;

    let plan = Plan {
        settings: Settings {
            quick,
            rounds,
            runtime_s: runtime.as_secs_f64(),
            size_bytes: size,
            store_bytes,
            numjobs,
            targets: planned,
            jobs,
            buffered_reference,
            pfnfs_threads: args.threads,
            huge_pages: args.huge_pages,
            bindfs_command: "bindfs -f --multithreaded STORE MNT".to_string(),
        },
        out,
        runtime,
        job_files,
        cases,
    };
    system::catch_interrupts();
    execute(plan, tools)
}

/// How a line of progress is shown: above the bar on a terminal, else as a log line.
struct Progress {
    bar: ProgressBar,
    terminal: bool,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if terminal {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:32.cyan/blue}] {pos}/{len} runs, ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        if terminal {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Progress { bar, terminal }
    }

    fn line(&self, text: String) {
        if self.terminal {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
    }
}

fn figure(case: &Case, value: f64) -> String {
    let m = case.job.metric();
    format!("{} {}", report::sig3(m.scaled(value)), m.unit())
}

fn execute(plan: Plan, tools: system::Tools) -> Result<(), Failure> {
    let started = system::iso_timestamp();
    let started_at = Instant::now();
    let machine = system::Machine::describe();
    let total = plan.total_runs();
    let s = &plan.settings;
    // fio takes about half a second to start and finish, on top of its runtime.
    let estimate = total as f64 * (s.runtime_s + 0.55) / 60.0;
    eprintln!(
        "pfnfs bench: {} round{} × {} targets, {total} fio runs of {} s (about {:.0} min); results in {}",
        s.rounds,
        if s.rounds == 1 { "" } else { "s" },
        plan.cases.len(),
        s.runtime_s,
        estimate.max(1.0),
        plan.out.display()
    );
    let dirs = WorkDirs::create(s.huge_pages.then_some(s.store_bytes * 2))?;
    let progress = Progress::new(total);
    let mut runs: Vec<RunRecord> = Vec::new();
    let mut mounts: Vec<MountRecord> = Vec::new();
    let mut done = 0u64;

    'rounds: for round in 1..=s.rounds {
        for (target, cases) in &plan.cases {
            if system::interrupted() {
                break 'rounds;
            }
            let tag = format!("{}.r{round}", target.name());
            progress
                .bar
                .set_message(format!("round {round}: mounting {}", target.name()));
            let spec = MountSpec {
                kind: *target,
                dirs: &dirs,
                tag: tag.clone(),
                store_bytes: s.store_bytes,
                threads: s.pfnfs_threads,
                huge_pages: s.huge_pages,
                log: plan.out.join("logs").join(format!("{tag}.log")),
            };
            let mut record = MountRecord {
                round,
                target: *target,
                daemon_pid: None,
                mem_before: None,
                mem_after: None,
                bytes_moved: 0,
                mount_error: None,
                unmount_error: None,
            };
            let mut mount = match Mount::new(&spec) {
                Ok(m) => m,
                Err(e) => {
                    progress.line(format!(
                        "round {round} {}: cannot mount: {e}",
                        target.name()
                    ));
                    record.mount_error = Some(e.clone());
                    mounts.push(record);
                    for case in cases {
                        runs.push(failed_run(
                            round,
                            *target,
                            *case,
                            format!("not mounted: {e}"),
                        ));
                        done += 1;
                        progress.bar.set_position(done);
                    }
                    continue;
                }
            };
            let mmap_file = mount.dir.join("mmapbuf");
            if cases.iter().any(|c| c.job.needs_mmap_file())
                && let Err(e) = std::fs::write(&mmap_file, vec![0u8; MMAP_FILE_BYTES])
            {
                progress.line(format!(
                    "round {round} {}: {}: {e}",
                    target.name(),
                    mmap_file.display()
                ));
            }
            let pid = mount.daemon_pid();
            record.daemon_pid = pid;
            record.mem_before = pid.and_then(system::mem_stat);
            let data_file = mount.dir.join("fio.dat");
            for case in cases {
                if system::interrupted() {
                    break;
                }
                progress.bar.set_message(format!(
                    "round {round}: {} {}",
                    target.name(),
                    case.label()
                ));
                let stem = format!("{tag}.{}", case.slug());
                let raw = plan.out.join("raw").join(format!("{stem}.json"));
                let job_file = plan
                    .job_files
                    .iter()
                    .find(|(j, _)| *j == case.job)
                    .map(|(_, p)| p.as_path())
                    .unwrap_or(Path::new("/nonexistent"));
                let input = fio::FioInput {
                    job_file,
                    filename: &data_file,
                    mmap_file: case.job.needs_mmap_file().then_some(mmap_file.as_path()),
                    size: s.size_bytes,
                    runtime: plan.runtime,
                    numjobs: case.numjobs,
                    direct: case.direct,
                    output: &raw,
                    stderr: &plan.out.join("raw").join(format!("{stem}.stderr")),
                };
                let outcome = fio::run(&input);
                if system::interrupted() {
                    break;
                }
                let mut rec = failed_run(round, *target, *case, String::new());
                rec.raw_output = format!("raw/{stem}.json");
                rec.daemon_mem_after = pid.and_then(system::mem_stat);
                match outcome {
                    Ok(result) => {
                        let value = match case.job.metric() {
                            jobs::Metric::Iops => result.iops(),
                            jobs::Metric::Bandwidth => result.bandwidth(),
                        };
                        record.bytes_moved += result.io_bytes;
                        progress.line(format!(
                            "round {round} {:<14} {:<40} {:>12}",
                            target.name(),
                            case.label(),
                            figure(case, value)
                        ));
                        rec.value = Some(value);
                        rec.result = Some(result);
                        rec.error = None;
                    }
                    Err(e) => {
                        progress.line(format!(
                            "round {round} {} {}: FAILED: {e}",
                            target.name(),
                            case.label()
                        ));
                        rec.error = Some(e);
                    }
                }
                runs.push(rec);
                done += 1;
                progress.bar.set_position(done);
            }
            record.mem_after = pid.and_then(system::mem_stat);
            progress
                .bar
                .set_message(format!("round {round}: unmounting {}", target.name()));
            if let Err(e) = mount.unmount() {
                progress.line(format!("round {round} {}: {e}", target.name()));
                record.unmount_error = Some(e);
            }
            mounts.push(record);
        }
    }
    progress.bar.finish_and_clear();
    drop(dirs);

    let interrupted = system::interrupted();
    let summary = report::summarize(&runs, &s.jobs, &s.numjobs);
    let report = Report {
        tool: "pfnfs bench".to_string(),
        pfnfs_version: env!("CARGO_PKG_VERSION").to_string(),
        started,
        finished: system::iso_timestamp(),
        interrupted,
        load_avg_end: system::load_avg(),
        machine,
        tools,
        settings: plan.settings.clone(),
        summary,
        runs,
        mounts,
    };
    let written = write_outputs(&report, &plan.out)?;
    eprintln!(
        "pfnfs bench: {} in {:.1} min: {}",
        if interrupted { "interrupted" } else { "done" },
        started_at.elapsed().as_secs_f64() / 60.0,
        written.join(", ")
    );
    if interrupted {
        return Err(Failure {
            message: "interrupted; everything was unmounted, partial results written".to_string(),
            code: 130,
        });
    }
    let failed = report.runs.iter().filter(|r| r.error.is_some()).count();
    let mount_failures = report
        .mounts
        .iter()
        .filter(|m| m.mount_error.is_some() || m.unmount_error.is_some())
        .count();
    if failed + mount_failures > 0 {
        return Err(Failure::new(format!(
            "{failed} fio run(s) and {mount_failures} mount(s) failed; see \"Failures\" in {}",
            plan.out.join("results.md").display()
        )));
    }
    Ok(())
}

fn failed_run(round: u32, target: TargetKind, case: Case, error: String) -> RunRecord {
    RunRecord {
        round,
        target,
        case,
        metric: case.job.metric(),
        value: None,
        result: None,
        error: Some(error),
        daemon_mem_after: None,
        raw_output: String::new(),
    }
}

/// Writes results.json, chart.png and results.md; returns their paths.
fn write_outputs(report: &Report, out: &Path) -> Result<Vec<String>, Failure> {
    let json_path = out.join("results.json");
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| Failure::new(format!("encoding the results: {e}")))?;
    std::fs::write(&json_path, json + "\n")
        .map_err(|e| Failure::new(format!("{}: {e}", json_path.display())))?;
    let png_path = out.join("chart.png");
    let chart = match chart::draw(report, &png_path) {
        Ok(warning) => {
            if let Some(w) = warning {
                eprintln!("pfnfs bench: {w}");
            }
            Some("chart.png")
        }
        Err(e) => {
            eprintln!("pfnfs bench: {}: {e}", png_path.display());
            None
        }
    };
    let md_path = out.join("results.md");
    std::fs::write(&md_path, report::markdown(report, chart))
        .map_err(|e| Failure::new(format!("{}: {e}", md_path.display())))?;
    let written = vec![
        json_path.display().to_string(),
        md_path.display().to_string(),
        png_path.display().to_string(),
    ];
    if chart.is_none() {
        return Err(Failure::new(format!(
            "the chart could not be drawn; {} and {} are written",
            written[0], written[1]
        )));
    }
    Ok(written)
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
