//! The run itself: each round mounts every target in turn, runs its cases with fio and
//! unmounts it, while a progress bar (or, off a terminal, log lines) tells how far it is; then
//! the report is assembled and written as `results.json`, `chart.png` and `results.md`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::BenchError;
use crate::chart::Chart;
use crate::jobs::{self, Case, MMAP_FILE_BYTES};
use crate::meta::{self, MetaJob, Tree};
use crate::meta_report::{self, MetaRecord};
use crate::plan::Plan;
use crate::report::{self, MountRecord, Report, RunRecord};
use crate::system::{self, Tools};
use crate::targets::{Mount, MountSpec, TargetKind, WorkDirs};
use crate::{chart, fio};

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

/// Runs every round of `plan`, then writes the outputs. Err if the run was interrupted or
/// anything failed (the outputs are written all the same).
pub fn execute(mut plan: Plan, tools: Tools) -> Result<Report, BenchError> {
    let started = system::iso_timestamp();
    let started_at = Instant::now();
    let machine = system::Machine::describe();
    let total = plan.total_runs();
    let dirs = WorkDirs::create(
        plan.settings
            .huge_pages
            .then_some(plan.settings.store_bytes * 2),
        &plan.pfnfs,
    )?;
    plan.settings.meta_store_dir = dirs.meta_store.display().to_string();
    let s = &plan.settings;
    // fio takes about half a second to start and finish, on top of its runtime. A metadata
    // job takes about 1/5,000 s per file on a FUSE target (bindfs's create), much less on
    // tmpfs.
    let fio_min = plan.fio_runs() as f64 * (s.runtime_s + 0.55) / 60.0;
    let meta_min = f64::from(s.rounds)
        * plan.meta_targets.iter().filter(|t| t.is_fuse()).count() as f64
        * s.meta_jobs.len() as f64
        * s.files as f64
        / 5000.0
        / 60.0;
    eprintln!(
        "pfnfs bench: {} round{} × {} targets, {} fio runs of {} s{} (about {:.0} min); results in {}",
        s.rounds,
        if s.rounds == 1 { "" } else { "s" },
        s.targets.len(),
        plan.fio_runs(),
        s.runtime_s,
        if s.meta_jobs.is_empty() {
            String::new()
        } else {
            format!(
                ", metadata jobs {} on {} files",
                s.meta_jobs
                    .iter()
                    .map(|j| j.name())
                    .collect::<Vec<_>>()
                    .join(","),
                s.files
            )
        },
        (fio_min + meta_min).max(1.0),
        plan.out.display()
    );
    let progress = Progress::new(total);
    let mut runs: Vec<RunRecord> = Vec::new();
    let mut mounts: Vec<MountRecord> = Vec::new();
    let mut meta_runs: Vec<MetaRecord> = Vec::new();
    let mut done = 0u64;

    'rounds: for round in 1..=s.rounds {
        for &target in &s.targets {
            if system::interrupted() {
                break 'rounds;
            }
            let turn = Turn {
                plan: &plan,
                dirs: &dirs,
                progress: &progress,
                round,
                target,
            };
            if let Some((_, cases)) = plan.cases.iter().find(|(t, _)| *t == target) {
                fio_turn(&turn, cases, &mut runs, &mut mounts, &mut done);
            }
            if system::interrupted() {
                break 'rounds;
            }
            if plan.meta_targets.contains(&target) {
                meta_turn(&turn, &mut meta_runs, &mut mounts, &mut done);
            }
        }
    }
    progress.bar.finish_and_clear();
    drop(dirs);

    let interrupted = system::interrupted();
    let summary = report::summarize(&runs, &s.jobs, &s.numjobs);
    let meta_summary = meta_report::summarize(&meta_runs, &s.meta_jobs);
    let report = Report {
        tool: "pfnfs bench".to_string(),
        pfnfs_version: plan.pfnfs_version.clone(),
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
        meta_summary,
        meta_runs,
    };
    let written = write_outputs(&report, &plan.out)?;
    eprintln!(
        "pfnfs bench: {} in {:.1} min: {}",
        if interrupted { "interrupted" } else { "done" },
        started_at.elapsed().as_secs_f64() / 60.0,
        written.join(", ")
    );
    if interrupted {
        return Err(BenchError::Interrupted);
    }
    let failed = report.runs.iter().filter(|r| r.error.is_some()).count()
        + report
            .meta_runs
            .iter()
            .filter(|r| r.error.is_some())
            .count();
    let mount_failures = report
        .mounts
        .iter()
        .filter(|m| m.mount_error.is_some() || m.unmount_error.is_some())
        .count();
    if failed + mount_failures > 0 {
        return Err(BenchError::Failed(format!(
            "{failed} run(s) and {mount_failures} mount(s) failed; see \"Failures\" in {}",
            plan.out.join("results.md").display()
        )));
    }
    Ok(report)
}

/// One target's turn in a round: what every turn needs.
struct Turn<'a> {
    plan: &'a Plan,
    dirs: &'a WorkDirs,
    progress: &'a Progress,
    round: u32,
    target: TargetKind,
}

/// Mounts the target afresh and runs its fio cases on it.
fn fio_turn(
    turn: &Turn<'_>,
    cases: &[Case],
    runs: &mut Vec<RunRecord>,
    mounts: &mut Vec<MountRecord>,
    done: &mut u64,
) {
    let Turn {
        plan,
        dirs,
        progress,
        round,
        target,
    } = *turn;
    let s = &plan.settings;
    let tag = format!("{}.r{round}", target.name());
    progress
        .bar
        .set_message(format!("round {round}: mounting {}", target.name()));
    let spec = MountSpec {
        kind: target,
        dirs,
        store_dir: &dirs.store,
        tmpfs_inodes: None,
        tag: tag.clone(),
        store_bytes: s.store_bytes,
        threads: s.pfnfs_threads,
        huge_pages: s.huge_pages,
        log: plan.out.join("logs").join(format!("{tag}.log")),
    };
    let mut record = MountRecord {
        round,
        target,
        metadata: false,
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
                    target,
                    *case,
                    format!("not mounted: {e}"),
                ));
                *done += 1;
                progress.bar.set_position(*done);
            }
            return;
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
        progress
            .bar
            .set_message(format!("round {round}: {} {}", target.name(), case.label()));
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
        let mut rec = failed_run(round, target, *case, String::new());
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
        *done += 1;
        progress.bar.set_position(*done);
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

/// Mounts the target afresh on a store sized for the files and runs the metadata jobs on
/// it, in order; a job that a later one needs but that was not asked for (the files) runs
/// untimed as setup.
fn meta_turn(
    turn: &Turn<'_>,
    meta_runs: &mut Vec<MetaRecord>,
    mounts: &mut Vec<MountRecord>,
    done: &mut u64,
) {
    let Turn {
        plan,
        dirs,
        progress,
        round,
        target,
    } = *turn;
    let s = &plan.settings;
    let jobs = &s.meta_jobs;
    let tag = format!("{}.r{round}.meta", target.name());
    progress.bar.set_message(format!(
        "round {round}: mounting {} for the metadata jobs",
        target.name()
    ));
    let tree_dirs = s.files.div_ceil(meta::FILES_PER_DIR);
    let spec = MountSpec {
        kind: target,
        dirs,
        store_dir: &dirs.meta_store,
        tmpfs_inodes: Some(s.files + tree_dirs + 1024),
        tag: tag.clone(),
        store_bytes: s.meta_store_bytes,
        threads: s.pfnfs_threads,
        huge_pages: false,
        log: plan.out.join("logs").join(format!("{tag}.log")),
    };
    let mut record = MountRecord {
        round,
        target,
        metadata: true,
        daemon_pid: None,
        mem_before: None,
        mem_after: None,
        bytes_moved: 0,
        mount_error: None,
        unmount_error: None,
    };
    let failed = |job: MetaJob, error: String| MetaRecord {
        round,
        target,
        job,
        files: s.files,
        figures: None,
        caches_dropped: None,
        daemon_pid: None,
        daemon_mem_after: None,
        error: Some(error),
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
            for &job in jobs {
                meta_runs.push(failed(job, format!("not mounted: {e}")));
                *done += 1;
                progress.bar.set_position(*done);
            }
            return;
        }
    };
    let pid = mount.daemon_pid();
    record.daemon_pid = pid;
    record.mem_before = pid.and_then(system::mem_stat);
    let tree = Tree::new(&mount.dir, s.files);
    // Set when a job fails: the later ones are not run (their tree is not what they expect).
    let mut broken: Option<String> = None;
    if !jobs.contains(&MetaJob::Create) && jobs.iter().any(|&j| j != MetaJob::Create) {
        progress.bar.set_message(format!(
            "round {round}: {} making {} files (untimed)",
            target.name(),
            s.files
        ));
        let mut hooks = meta::Hooks {
            progress: &mut |_| {},
            interrupted: &system::interrupted,
        };
        if let Err(e) = meta::create(&tree, false, &mut hooks) {
            broken = Some(format!("making the files: {e}"));
        }
    }
    for &job in jobs {
        if system::interrupted() {
            break;
        }
        if let Some(why) = &broken {
            meta_runs.push(failed(job, format!("not run: {why}")));
            *done += 1;
            progress.bar.set_position(*done);
            continue;
        }
        let caches_dropped = job.drops_caches().then(|| match meta::drop_caches() {
            Ok(()) => true,
            Err(e) => {
                progress.line(format!(
                    "round {round} {} {}: {e}",
                    target.name(),
                    job.name()
                ));
                false
            }
        });
        let total = if job == MetaJob::Readdir {
            tree.dirs()
        } else {
            tree.files()
        };
        let name = target.name();
        let mut show = |n: u64| {
            if n.is_multiple_of(10_000) || job == MetaJob::Readdir {
                progress
                    .bar
                    .set_message(format!("round {round}: {name} {} {n}/{total}", job.name()));
            }
        };
        let mut hooks = meta::Hooks {
            progress: &mut show,
            interrupted: &system::interrupted,
        };
        let outcome = match job {
            MetaJob::Create => meta::create(&tree, true, &mut hooks),
            MetaJob::Stat => meta::stat(&tree, &mut hooks),
            MetaJob::Readdir => meta::readdir(&tree, &mut hooks),
            MetaJob::Unlink => meta::unlink(&tree, &mut hooks),
        };
        if system::interrupted() {
            break;
        }
        let mut rec = MetaRecord {
            round,
            target,
            job,
            files: s.files,
            figures: None,
            caches_dropped,
            daemon_pid: pid,
            daemon_mem_after: pid.and_then(system::mem_stat),
            error: None,
        };
        match outcome {
            Ok(figures) => {
                let l = figures.latency.unwrap_or_default();
                progress.line(format!(
                    "round {round} {:<14} {:<40} {:>9.0} ops/s, p99 {}, max {}{}",
                    target.name(),
                    format!("{} ({} ops)", job.name(), figures.ops),
                    figures.ops_per_s.unwrap_or(f64::NAN),
                    meta_report::latency_text(l.p99_us),
                    meta_report::latency_text(l.max_us),
                    rec.daemon_mem_after
                        .map(|m| format!(", daemon RssAnon {} MiB", report::mib(m.rss_anon_kib)))
                        .unwrap_or_default()
                ));
                rec.figures = Some(figures);
            }
            Err(e) => {
                progress.line(format!(
                    "round {round} {} {}: FAILED: {e}",
                    target.name(),
                    job.name()
                ));
                broken = Some(format!("{} failed", job.name()));
                rec.error = Some(e);
            }
        }
        meta_runs.push(rec);
        *done += 1;
        progress.bar.set_position(*done);
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

/// Writes results.json, chart.png (with fio jobs), chart-meta.png (with metadata jobs) and
/// results.md; returns their paths.
fn write_outputs(report: &Report, out: &Path) -> Result<Vec<String>, BenchError> {
    let json_path = out.join("results.json");
    let json =
        serde_json::to_string_pretty(report).map_err(|e| format!("encoding the results: {e}"))?;
    std::fs::write(&json_path, json + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
    let draw = |file: &'static str, kind: Chart| {
        let path = out.join(file);
        match chart::draw(report, &path, kind) {
            Ok(warning) => {
                if let Some(w) = warning {
                    eprintln!("pfnfs bench: {w}");
                }
                Ok(file)
            }
            Err(e) => {
                eprintln!("pfnfs bench: {}: {e}", path.display());
                Err(file)
            }
        }
    };
    let chart = (!report.settings.jobs.is_empty()).then(|| draw("chart.png", Chart::Fio));
    let meta_chart =
        (!report.settings.meta_jobs.is_empty()).then(|| draw("chart-meta.png", Chart::Meta));
    let md_path = out.join("results.md");
    std::fs::write(
        &md_path,
        report::markdown(
            report,
            chart.and_then(Result::ok),
            meta_chart.and_then(Result::ok),
        ),
    )
    .map_err(|e| format!("{}: {e}", md_path.display()))?;
    let mut written = vec![
        json_path.display().to_string(),
        md_path.display().to_string(),
    ];
    let mut not_drawn = Vec::new();
    for c in [chart, meta_chart].into_iter().flatten() {
        match c {
            Ok(file) => written.push(out.join(file).display().to_string()),
            Err(file) => not_drawn.push(file),
        }
    }
    if !not_drawn.is_empty() {
        return Err(BenchError::Failed(format!(
            "{} could not be drawn; {} are written",
            not_drawn.join(" and "),
            written.join(", ")
        )));
    }
    Ok(written)
}
