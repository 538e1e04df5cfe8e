//! The fio jobs and the plan: which (job, numjobs, direct) cases run on which target; and
//! [`JobName`], the `--jobs` list that names fio and metadata jobs alike.
//!
//! The job files live in `bench/jobs/` (this crate's `jobs/`) and are built into the binary,
//! so `pfnfs bench` works from any directory; `--job-dir` reads them from disk instead. Every
//! run copies the files it used into `<out>/jobs/`.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde::Serialize;

use crate::meta::MetaJob;
use crate::targets::TargetKind;

/// One fio job file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
pub enum JobId {
    /// 4 KiB random reads, psync.
    #[value(name = "randread-4k")]
    #[serde(rename = "randread-4k")]
    Randread4k,
    /// 4 KiB random writes, psync.
    #[value(name = "randwrite-4k")]
    #[serde(rename = "randwrite-4k")]
    Randwrite4k,
    /// 1 MiB sequential reads, psync.
    #[value(name = "seqread-1m")]
    #[serde(rename = "seqread-1m")]
    Seqread1m,
    /// 1 MiB sequential writes, psync.
    #[value(name = "seqwrite-1m")]
    #[serde(rename = "seqwrite-1m")]
    Seqwrite1m,
    /// 4 KiB random reads, libaio, 16 in flight.
    #[value(name = "randread-4k-qd16")]
    #[serde(rename = "randread-4k-qd16")]
    Randread4kQd16,
    /// 4 KiB random reads and writes into an mmap of a file on the mount (pfnfs targets only).
    #[value(name = "randrw-4k-mmapbuf")]
    #[serde(rename = "randrw-4k-mmapbuf")]
    Randrw4kMmapbuf,
}

/// What a job's headline figure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Read + write I/O operations per second.
    Iops,
    /// Read + write bytes per second.
    Bandwidth,
}

impl Metric {
    /// The unit of [`Metric::scaled`].
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Iops => "kIOPS",
            Metric::Bandwidth => "GiB/s",
        }
    }

    /// A raw figure (IOPS or bytes/s) in [`Metric::unit`].
    pub fn scaled(self, value: f64) -> f64 {
        match self {
            Metric::Iops => value / 1e3,
            Metric::Bandwidth => value / (1u64 << 30) as f64,
        }
    }
}

/// All jobs, in the order they run on a mount.
pub const ALL_JOBS: [JobId; 6] = [
    JobId::Randread4k,
    JobId::Randwrite4k,
    JobId::Seqread1m,
    JobId::Seqwrite1m,
    JobId::Randread4kQd16,
    JobId::Randrw4kMmapbuf,
];

/// Size of the buffer file the mmapbuf job maps (fio does not size it itself).
pub const MMAP_FILE_BYTES: usize = 16 << 20;

impl JobId {
    /// The job's name, as on the command line and in the reports.
    pub fn name(self) -> &'static str {
        match self {
            JobId::Randread4k => "randread-4k",
            JobId::Randwrite4k => "randwrite-4k",
            JobId::Seqread1m => "seqread-1m",
            JobId::Seqwrite1m => "seqwrite-1m",
            JobId::Randread4kQd16 => "randread-4k-qd16",
            JobId::Randrw4kMmapbuf => "randrw-4k-mmapbuf",
        }
    }

    /// The job file's name in `bench/jobs/`.
    pub fn file_name(self) -> String {
        format!("{}.fio", self.name())
    }

    /// The job file as built into the binary.
    pub fn builtin_text(self) -> &'static str {
        match self {
            JobId::Randread4k => include_str!("../jobs/randread-4k.fio"),
            JobId::Randwrite4k => include_str!("../jobs/randwrite-4k.fio"),
            JobId::Seqread1m => include_str!("../jobs/seqread-1m.fio"),
            JobId::Seqwrite1m => include_str!("../jobs/seqwrite-1m.fio"),
            JobId::Randread4kQd16 => include_str!("../jobs/randread-4k-qd16.fio"),
            JobId::Randrw4kMmapbuf => include_str!("../jobs/randrw-4k-mmapbuf.fio"),
        }
    }

    /// The headline figure.
    pub fn metric(self) -> Metric {
        match self {
            JobId::Seqread1m | JobId::Seqwrite1m => Metric::Bandwidth,
            _ => Metric::Iops,
        }
    }

    /// True if the job also runs with `direct=0` on targets that have a page cache.
    /// (libaio is synchronous without O_DIRECT, and the mmapbuf job is about O_DIRECT.)
    pub fn has_buffered_reference(self) -> bool {
        !matches!(self, JobId::Randread4kQd16 | JobId::Randrw4kMmapbuf)
    }

    /// True if the job needs `MMAPFILE`.
    pub fn needs_mmap_file(self) -> bool {
        self == JobId::Randrw4kMmapbuf
    }

    /// True if the job runs on `target`.
    pub fn runs_on(self, target: TargetKind) -> bool {
        self != JobId::Randrw4kMmapbuf || target.is_pfnfs()
    }
}

/// A job as `--jobs` names it: a fio job or a metadata job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobName {
    /// A fio job file.
    Fio(JobId),
    /// A metadata job, run in process.
    Meta(MetaJob),
}

/// Every job name, fio jobs first.
const ALL_JOB_NAMES: [JobName; 10] = [
    JobName::Fio(JobId::Randread4k),
    JobName::Fio(JobId::Randwrite4k),
    JobName::Fio(JobId::Seqread1m),
    JobName::Fio(JobId::Seqwrite1m),
    JobName::Fio(JobId::Randread4kQd16),
    JobName::Fio(JobId::Randrw4kMmapbuf),
    JobName::Meta(MetaJob::Create),
    JobName::Meta(MetaJob::Stat),
    JobName::Meta(MetaJob::Readdir),
    JobName::Meta(MetaJob::Unlink),
];

impl JobName {
    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            JobName::Fio(j) => j.name(),
            JobName::Meta(j) => j.name(),
        }
    }

    /// Splits a list into its fio jobs and its metadata jobs, each in the list's order.
    pub fn split(names: &[JobName]) -> (Vec<JobId>, Vec<MetaJob>) {
        let fio = names
            .iter()
            .filter_map(|n| match n {
                JobName::Fio(j) => Some(*j),
                JobName::Meta(_) => None,
            })
            .collect();
        let meta = names
            .iter()
            .filter_map(|n| match n {
                JobName::Meta(j) => Some(*j),
                JobName::Fio(_) => None,
            })
            .collect();
        (fio, meta)
    }
}

impl ValueEnum for JobName {
    fn value_variants<'a>() -> &'a [Self] {
        &ALL_JOB_NAMES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// One fio run on a mount: a job with a `numjobs` and a `direct` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Case {
    /// The job file.
    pub job: JobId,
    /// fio `numjobs`.
    pub numjobs: u32,
    /// fio `direct` (true = O_DIRECT).
    pub direct: bool,
}

impl Case {
    /// `randread-4k nj=2 direct=1`.
    pub fn label(&self) -> String {
        format!(
            "{} numjobs={} direct={}",
            self.job.name(),
            self.numjobs,
            u8::from(self.direct)
        )
    }

    /// A file-name-safe form: `randread-4k.nj2.d1`.
    pub fn slug(&self) -> String {
        format!(
            "{}.nj{}.d{}",
            self.job.name(),
            self.numjobs,
            u8::from(self.direct)
        )
    }
}

/// The cases that run on `target`, in order: every job with `direct=1` and each numjobs,
/// then (on targets with a page cache, unless `buffered_reference` is false) the psync jobs
/// with `direct=0` and the smallest numjobs.
pub fn cases_for(
    target: TargetKind,
    jobs: &[JobId],
    numjobs: &[u32],
    buffered_reference: bool,
) -> Vec<Case> {
    let mut cases = Vec::new();
    for &job in jobs.iter().filter(|j| j.runs_on(target)) {
        for &n in numjobs {
            cases.push(Case {
                job,
                numjobs: n,
                direct: true,
            });
        }
    }
    if buffered_reference
        && target.has_page_cache()
        && let Some(&n) = numjobs.iter().min()
    {
        for &job in jobs
            .iter()
            .filter(|j| j.runs_on(target) && j.has_buffered_reference())
        {
            cases.push(Case {
                job,
                numjobs: n,
                direct: false,
            });
        }
    }
    cases
}

/// Where each job file is: written into `dir` from the built-in copy, or (with `job_dir`)
/// copied there from that directory. Returns the paths in `dir`, in the order of `jobs`.
pub fn materialize(
    jobs: &[JobId],
    job_dir: Option<&Path>,
    dir: &Path,
) -> Result<Vec<(JobId, PathBuf)>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for &job in jobs {
        let text = match job_dir {
            None => job.builtin_text().to_string(),
            Some(src) => {
                let path = src.join(job.file_name());
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("job file {}: {e}", path.display()))?
            }
        };
        let path = dir.join(job.file_name());
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        out.push((job, path));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_files_use_the_documented_variables() {
        for job in ALL_JOBS {
            let text = job.builtin_text();
            for var in ["FILENAME", "SIZE", "RUNTIME", "NUMJOBS", "DIRECT"] {
                assert!(
                    text.contains(&format!("${{{var}}}")),
                    "{} lacks ${{{var}}}",
                    job.file_name()
                );
            }
            assert_eq!(
                text.contains("${MMAPFILE}"),
                job.needs_mmap_file(),
                "{}",
                job.file_name()
            );
            assert!(text.contains(&format!("[{}]", job.name())));
        }
    }

    #[test]
    fn plan_per_target() {
        let direct = cases_for(TargetKind::PfnfsDirect, &ALL_JOBS, &[1, 2], true);
        assert_eq!(direct.len(), 12);
        assert!(direct.iter().all(|c| c.direct));
        let buffered = cases_for(TargetKind::PfnfsBuffered, &ALL_JOBS, &[1, 2], true);
        assert_eq!(buffered.len(), 16);
        assert_eq!(buffered.iter().filter(|c| !c.direct).count(), 4);
        let tmpfs = cases_for(TargetKind::Tmpfs, &ALL_JOBS, &[1, 2], true);
        assert_eq!(tmpfs.len(), 14);
        assert!(tmpfs.iter().all(|c| c.job != JobId::Randrw4kMmapbuf));
        let no_ref = cases_for(TargetKind::Bindfs, &ALL_JOBS, &[1, 2], false);
        assert_eq!(no_ref.len(), 10);
    }

    #[test]
    fn job_names_cover_both_kinds() {
        let parse = |s: &str| JobName::from_str(s, false).unwrap();
        assert_eq!(parse("create"), JobName::Meta(MetaJob::Create));
        assert_eq!(parse("randread-4k"), JobName::Fio(JobId::Randread4k));
        assert!(JobName::from_str("mkdir", false).is_err());
        let names: Vec<JobName> = ["unlink", "seqread-1m", "create"]
            .iter()
            .map(|s| parse(s))
            .collect();
        assert_eq!(
            JobName::split(&names),
            (
                vec![JobId::Seqread1m],
                vec![MetaJob::Unlink, MetaJob::Create]
            )
        );
        for job in ALL_JOBS {
            assert_eq!(parse(job.name()), JobName::Fio(job));
        }
        for job in crate::meta::ALL_META_JOBS {
            assert_eq!(parse(job.name()), JobName::Meta(job));
        }
    }
}
