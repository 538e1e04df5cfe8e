//! From [`Options`] to what runs: the defaults (which depend on `quick`), the cases of each
//! target, the tool checks, the room in /dev/shm, and the results folder with its job files.
//! Everything that can be refused is refused here, before anything is mounted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::jobs::{self, ALL_JOBS, Case, JobId, MMAP_FILE_BYTES};
use crate::meta::{self, ALL_META_JOBS, MetaJob};
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
    /// Per target, the fio cases in order (targets with none left out).
    pub cases: Vec<(TargetKind, Vec<Case>)>,
    /// The targets the metadata jobs run on, in round order (none without metadata jobs).
    pub meta_targets: Vec<TargetKind>,
    /// The pfnfs binary that mounts the pfnfs targets ([`Options::pfnfs`]).
    pub pfnfs: PathBuf,
    /// Its version.
    pub pfnfs_version: String,
}

impl Plan {
    /// fio runs and metadata jobs in all rounds.
    pub fn total_runs(&self) -> u64 {
        u64::from(self.settings.rounds)
            * (self.cases.iter().map(|(_, c)| c.len() as u64).sum::<u64>()
                + self.meta_targets.len() as u64 * self.settings.meta_jobs.len() as u64)
    }

    /// fio runs in all rounds.
    pub fn fio_runs(&self) -> u64 {
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
    let everything = options.jobs.is_empty() && options.meta_jobs.is_empty();
    let jobs: Vec<JobId> = if everything {
        ALL_JOBS.to_vec()
    } else {
        // Keep the canonical order (reads before writes, as laid out), whatever the list's.
        ALL_JOBS
            .iter()
            .copied()
            .filter(|j| options.jobs.contains(j))
            .collect()
    };
    // Metadata jobs always run in the order create, stat, readdir, unlink.
    let meta_jobs: Vec<MetaJob> = ALL_META_JOBS
        .iter()
        .copied()
        .filter(|j| everything || options.meta_jobs.contains(j))
        .collect();
    let quick = options.quick;
    let files = options
        .files
        .unwrap_or(if quick { 20_000 } else { 1_000_000 });
    if !(1..=100_000_000).contains(&files) {
        return Err(BenchError::Usage(
            "--files: from 1 to 100000000".to_string(),
        ));
    }
    let meta_store_bytes = meta_store_bytes(files);
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
    let meta_targets: Vec<TargetKind> = if meta_jobs.is_empty() {
        Vec::new()
    } else {
        targets.clone()
    };
    if cases.is_empty() && meta_targets.is_empty() {
        return Err(BenchError::Usage(
            "nothing to run: the jobs chosen do not run on the targets chosen \
             (randrw-4k-mmapbuf runs on pfnfs only)"
                .to_string(),
        ));
    }

    let planned: Vec<TargetKind> = targets
        .iter()
        .copied()
        .filter(|t| meta_targets.contains(t) || cases.iter().any(|(c, _)| c == t))
        .collect();
    let tools = system::preflight(
        !cases.is_empty(),
        planned.iter().any(|t| t.is_fuse()),
        planned.contains(&TargetKind::Bindfs),
        jobs.contains(&JobId::Randread4kQd16),
    )?;

    // Pool / tmpfs: the test file, the mmap buffer file, and room for metadata.
    let store_bytes =
        (size + (size / 4).max(64 << 20) + MMAP_FILE_BYTES as u64).next_multiple_of(2 << 20);
    if let Some(free) = system::free_bytes(Path::new("/dev/shm")) {
        // One target is mounted at a time.
        let fio_need = if cases.is_empty() {
            0
        } else {
            store_bytes + size
        };
        let meta_need = if meta_targets.is_empty() {
            0
        } else {
            meta::BYTES_PER_FILE * files + (64 << 20)
        };
        if free < fio_need.max(meta_need) {
            if meta_need > fio_need {
                return Err(BenchError::Failed(format!(
                    "/dev/shm has {} MiB free; {files} files need about {} MiB (use a smaller \
                     --files)",
                    free >> 20,
                    meta_need >> 20
                )));
            }
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
            meta_jobs,
            files,
            meta_store_bytes,
            meta_store_dir: String::new(),
            buffered_reference,
            pfnfs_threads: options.threads,
            huge_pages: options.huge_pages,
            bindfs_command: "bindfs -f --multithreaded STORE MNT".to_string(),
        },
        out,
        runtime,
        job_files,
        cases,
        meta_targets,
        pfnfs: options.pfnfs.clone(),
        pfnfs_version: options.pfnfs_version.clone(),
    };
    Ok((plan, tools))
}

/// The pool (and tmpfs) size for the metadata jobs: one 4 KiB frame per file, 1 KiB per file
/// more for the metadata log and checkpoints, and 256 MiB; in 2 MiB steps. The pool file is
/// sparse, so only what the files and metadata touch takes memory.
pub fn meta_store_bytes(files: u64) -> u64 {
    (files * (meta::BYTES_PER_FILE + 1024) + (256 << 20)).next_multiple_of(2 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_pool_size() {
        assert_eq!(meta_store_bytes(0), 256 << 20);
        let m = meta_store_bytes(1_000_000);
        assert!(m >= 1_000_000 * 4096 + (256 << 20) && m.is_multiple_of(2 << 20));
    }
}
