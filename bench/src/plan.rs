//! From [`Options`] to what runs: the defaults (which depend on `quick`), the cases of each
//! target, the tool checks, the room in /dev/shm, and the results folder with its job files.
//! Everything that can be refused is refused here, before anything is mounted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::jobs::{self, ALL_JOBS, Case, JobId, MMAP_FILE_BYTES};
use crate::report::Settings;
use crate::system::{self, Tools};
use crate::targets::{ALL_TARGETS, TargetKind};
use crate::{BenchError, Options};

/// The resolved configuration.
pub struct Plan {
    /// The results folder (absolute).
    pub out: PathBuf,
    /// The setup, as reported.
    pub settings: Settings,
    /// Time per fio run.
    pub runtime: Duration,
    /// Each job's file, as copied into `out/jobs/`.
    pub job_files: Vec<(JobId, PathBuf)>,
    /// Per target, the cases in order.
    pub cases: Vec<(TargetKind, Vec<Case>)>,
    /// The pfnfs binary that mounts the pfnfs targets ([`Options::pfnfs`]).
    pub pfnfs: PathBuf,
    /// Its version.
    pub pfnfs_version: String,
}

impl Plan {
    /// fio runs in all rounds.
    pub fn total_runs(&self) -> u64 {
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

/// Resolves `options`, checks the tools and the room in /dev/shm, and creates the results
/// folder with the job files in it.
pub fn prepare(options: &Options) -> Result<(Plan, Tools), BenchError> {
    let targets = if options.targets.is_empty() {
        ALL_TARGETS.to_vec()
    } else {
        dedup(&options.targets)
    };
    let jobs: Vec<JobId> = if options.jobs.is_empty() {
        ALL_JOBS.to_vec()
    } else {
        // Keep the canonical order (reads before writes, as laid out), whatever the list's.
        ALL_JOBS
            .iter()
            .copied()
            .filter(|j| options.jobs.contains(j))
            .collect()
    };
    let quick = options.quick;
    let mut numjobs = match (options.numjobs.is_empty(), quick) {
        (false, _) => dedup(&options.numjobs),
        (true, false) => vec![1, 2],
        // fio needs about half a second per run on top of its runtime, so a one-minute
        // smoke run has room for one numjobs value: 2 covers concurrent access too.
        (true, true) => vec![2],
    };
    numjobs.sort_unstable();
    let rounds = options.rounds.unwrap_or(if quick { 1 } else { 3 });
    let runtime = options
        .runtime
        .unwrap_or(Duration::from_secs(if quick { 1 } else { 5 }));
    let size = options
        .size
        .unwrap_or(if quick { 64 << 20 } else { 1 << 30 });
    if size < 4 << 20 {
        return Err(BenchError::Usage("--size: at least 4M".to_string()));
    }
    let buffered_reference = options.buffered_reference;

    let cases: Vec<(TargetKind, Vec<Case>)> = targets
        .iter()
        .map(|&t| (t, jobs::cases_for(t, &jobs, &numjobs, buffered_reference)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    if cases.is_empty() {
        return Err(BenchError::Usage(
            "nothing to run: the jobs chosen do not run on the targets chosen \
             (randrw-4k-mmapbuf runs on pfnfs only)"
                .to_string(),
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
            return Err(BenchError::Failed(format!(
                "/dev/shm has {} MiB free; this run needs about {} MiB (use a smaller --size)",
                free >> 20,
                (store_bytes + size) >> 20
            )));
        }
    }

    let out = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(system::folder_timestamp()));
    for sub in ["", "raw", "logs"] {
        let d = out.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let out = std::fs::canonicalize(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let job_files = jobs::materialize(&jobs, options.job_dir.as_deref(), &out.join("jobs"))?;

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
            pfnfs_threads: options.threads,
            huge_pages: options.huge_pages,
            bindfs_command: "bindfs -f --multithreaded STORE MNT".to_string(),
        },
        out,
        runtime,
        job_files,
        cases,
        pfnfs: options.pfnfs.clone(),
        pfnfs_version: options.pfnfs_version.clone(),
    };
    Ok((plan, tools))
}
