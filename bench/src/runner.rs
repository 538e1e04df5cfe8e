//! The run itself: each round mounts every target in turn, runs its cases with fio and
//! unmounts it, while a progress bar (or, off a terminal, log lines) tells how far it is; then
//! the report is assembled and written as `results.json`, `chart.png` and `results.md`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::BenchError;
use crate::jobs::{self, Case, MMAP_FILE_BYTES};
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
pub fn execute(plan: Plan, tools: Tools) -> Result<Report, BenchError> {
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
    let dirs = WorkDirs::create(s.huge_pages.then_some(s.store_bytes * 2), &plan.pfnfs)?;
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
    let failed = report.runs.iter().filter(|r| r.error.is_some()).count();
    let mount_failures = report
        .mounts
        .iter()
        .filter(|m| m.mount_error.is_some() || m.unmount_error.is_some())
        .count();
    if failed + mount_failures > 0 {
        return Err(BenchError::Failed(format!(
            "{failed} fio run(s) and {mount_failures} mount(s) failed; see \"Failures\" in {}",
            plan.out.join("results.md").display()
        )));
    }
    Ok(report)
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
fn write_outputs(report: &Report, out: &Path) -> Result<Vec<String>, BenchError> {
    let json_path = out.join("results.json");
    let json =
        serde_json::to_string_pretty(report).map_err(|e| format!("encoding the results: {e}"))?;
    std::fs::write(&json_path, json + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
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
        .map_err(|e| format!("{}: {e}", md_path.display()))?;
    let written = vec![
        json_path.display().to_string(),
        md_path.display().to_string(),
        png_path.display().to_string(),
    ];
    if chart.is_none() {
        return Err(BenchError::Failed(format!(
            "the chart could not be drawn; {} and {} are written",
            written[0], written[1]
        )));
    }
    Ok(written)
}
