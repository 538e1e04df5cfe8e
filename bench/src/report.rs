//! What a run recorded, the medians and ratios computed from it, and the JSON and Markdown
//! reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::fio::FioResult;
use crate::jobs::{Case, JobId, Metric};
use crate::meta::MetaJob;
use crate::meta_report::{MetaRecord, MetaSummaryRow};
use crate::system::{Machine, MemStat, Tools};
use crate::targets::TargetKind;

/// One fio run.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// Round, from 1.
    pub round: u32,
    /// The target.
    pub target: TargetKind,
    /// Job, numjobs, direct.
    #[serde(flatten)]
    pub case: Case,
    /// What `value` measures.
    pub metric: Metric,
    /// The headline figure: IOPS or bytes/s (read + write). None if the run failed.
    pub value: Option<f64>,
    /// All figures fio reported.
    pub result: Option<FioResult>,
    /// Why the run failed.
    pub error: Option<String>,
    /// The daemon's memory after this run (FUSE targets).
    pub daemon_mem_after: Option<MemStat>,
    /// fio's JSON output, relative to the results folder.
    pub raw_output: String,
}

/// One mount of one target (a target's turn in a round).
#[derive(Clone, Debug, Serialize)]
pub struct MountRecord {
    /// Round, from 1.
    pub round: u32,
    /// The target.
    pub target: TargetKind,
    /// True for the mount of the metadata jobs, false for the fio jobs'.
    pub metadata: bool,
    /// The FUSE daemon's PID (found through the mount: the process holding its source).
    pub daemon_pid: Option<u32>,
    /// Its memory right after mounting (and creating the mmap buffer file).
    pub mem_before: Option<MemStat>,
    /// Its memory after the last fio run, before unmounting.
    pub mem_after: Option<MemStat>,
    /// Bytes fio moved on this mount (all runs, read + written; not counting layout).
    pub bytes_moved: u64,
    /// Why mounting failed.
    pub mount_error: Option<String>,
    /// What went wrong unmounting.
    pub unmount_error: Option<String>,
}

/// How the run was set up.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// `--quick`.
    pub quick: bool,
    /// Rounds.
    pub rounds: u32,
    /// Seconds per fio run.
    pub runtime_s: f64,
    /// The test file's size.
    pub size_bytes: u64,
    /// Pool and tmpfs size.
    pub store_bytes: u64,
    /// fio numjobs values.
    pub numjobs: Vec<u32>,
    /// Targets, in the order of each round.
    pub targets: Vec<TargetKind>,
    /// fio jobs, in the order they run on a mount.
    pub jobs: Vec<JobId>,
    /// Metadata jobs, in the order they run on a mount.
    pub meta_jobs: Vec<MetaJob>,
    /// Files the metadata jobs make.
    pub files: u64,
    /// Pool and tmpfs size for the metadata jobs (the pool file is sparse).
    pub meta_store_bytes: u64,
    /// Where the pools and backing stores of the metadata jobs are.
    pub meta_store_dir: String,
    /// Whether the direct=0 reference runs were made.
    pub buffered_reference: bool,
    /// pfnfs `--threads` (None: one per CPU).
    pub pfnfs_threads: Option<u16>,
    /// `--huge-pages`: stores and the tmpfs target in 2 MiB pages.
    pub huge_pages: bool,
    /// How bindfs was started.
    pub bindfs_command: String,
}

/// Statistics of one target on one case.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// Median of the successful runs (IOPS or bytes/s).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Every successful run's figure, in round order.
    pub values: Vec<f64>,
    /// Runs that failed.
    pub failed: u32,
    /// median / tmpfs's median.
    pub ratio_to_tmpfs: Option<f64>,
    /// median / bindfs's median.
    pub ratio_to_bindfs: Option<f64>,
}

/// One row of the summary: a case and each target's statistics on it.
#[derive(Clone, Debug, Serialize)]
pub struct SummaryRow {
    /// Job, numjobs, direct.
    #[serde(flatten)]
    pub case: Case,
    /// What the figures measure.
    pub metric: Metric,
    /// Keyed by target name.
    pub targets: BTreeMap<String, Cell>,
    /// pfnfs-direct's median / pfnfs-buffered's median.
    pub pfnfs_direct_over_buffered: Option<f64>,
}

impl SummaryRow {
    /// The cell of `target`.
    pub fn cell(&self, target: TargetKind) -> Option<&Cell> {
        self.targets.get(target.name())
    }
}

/// Everything: written as `results.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `pfnfs bench`.
    pub tool: String,
    /// pfnfs's version.
    pub pfnfs_version: String,
    /// UTC start time.
    pub started: String,
    /// UTC end time.
    pub finished: String,
    /// True if Ctrl-C (or SIGTERM) stopped the run early.
    pub interrupted: bool,
    /// 1-minute load average at the end (with `machine.load_avg_start`: how busy the machine
    /// was with other work).
    pub load_avg_end: Option<f64>,
    /// The machine.
    pub machine: Machine,
    /// Tool versions.
    pub tools: Tools,
    /// The setup.
    pub settings: Settings,
    /// Medians and ratios.
    pub summary: Vec<SummaryRow>,
    /// Every fio run.
    pub runs: Vec<RunRecord>,
    /// Every mount, with the daemon's memory before and after.
    pub mounts: Vec<MountRecord>,
    /// Medians of the metadata jobs, per job.
    pub meta_summary: Vec<MetaSummaryRow>,
    /// Every metadata job on every mount.
    pub meta_runs: Vec<MetaRecord>,
}

#[cfg(test)]
impl Report {
    /// A report on this machine with made-up figures, for tests of what is drawn and written.
    pub(super) fn sample(
        summary: Vec<SummaryRow>,
        runs: Vec<RunRecord>,
        targets: Vec<TargetKind>,
        jobs: Vec<JobId>,
        numjobs: Vec<u32>,
    ) -> Report {
        Report {
            tool: "pfnfs bench".into(),
            pfnfs_version: "0".into(),
            started: "start".into(),
            finished: "end".into(),
            interrupted: false,
            load_avg_end: None,
            machine: Machine::describe(),
            tools: Tools::default(),
            settings: Settings {
                quick: false,
                rounds: 3,
                runtime_s: 5.0,
                size_bytes: 1 << 30,
                store_bytes: 2 << 30,
                numjobs,
                targets,
                jobs,
                meta_jobs: Vec::new(),
                files: 0,
                meta_store_bytes: 0,
                meta_store_dir: String::new(),
                buffered_reference: true,
                pfnfs_threads: None,
                huge_pages: false,
                bindfs_command: String::new(),
            },
            summary,
            runs,
            mounts: Vec::new(),
            meta_summary: Vec::new(),
            meta_runs: Vec::new(),
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count). None if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Medians and ratios per case, in plan order: direct=1 cases (job order, then numjobs),
/// then direct=0 cases.
pub fn summarize(runs: &[RunRecord], jobs: &[JobId], numjobs: &[u32]) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for direct in [true, false] {
        for &job in jobs {
            for &n in numjobs {
                let case = Case {
                    job,
                    numjobs: n,
                    direct,
                };
                let matching: Vec<&RunRecord> = runs.iter().filter(|r| r.case == case).collect();
                if matching.is_empty() {
                    continue;
                }
                let mut targets = BTreeMap::new();
                let mut medians = BTreeMap::new();
                for r in &matching {
                    targets.entry(r.target).or_insert_with(Vec::new).push(*r);
                }
                let mut cells = BTreeMap::new();
                for (target, recs) in &targets {
                    let values: Vec<f64> = recs.iter().filter_map(|r| r.value).collect();
                    let failed = recs.iter().filter(|r| r.value.is_none()).count() as u32;
                    let Some(m) = median(&values) else {
                        cells.insert(*target, None);
                        continue;
                    };
                    medians.insert(*target, m);
                    cells.insert(
                        *target,
                        Some(Cell {
                            median: m,
                            min: values.iter().copied().fold(f64::INFINITY, f64::min),
                            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            values,
                            failed,
                            ratio_to_tmpfs: None,
                            ratio_to_bindfs: None,
                        }),
                    );
                }
                let tmpfs = medians.get(&TargetKind::Tmpfs).copied();
                let bindfs = medians.get(&TargetKind::Bindfs).copied();
                let mut named = BTreeMap::new();
                for (target, cell) in cells {
                    let cell = cell.unwrap_or(Cell {
                        median: f64::NAN,
                        min: f64::NAN,
                        max: f64::NAN,
                        values: Vec::new(),
                        failed: targets[&target].len() as u32,
                        ratio_to_tmpfs: None,
                        ratio_to_bindfs: None,
                    });
                    let m = medians.get(&target).copied();
                    let cell = Cell {
                        ratio_to_tmpfs: ratio(m, tmpfs),
                        ratio_to_bindfs: ratio(m, bindfs),
                        ..cell
                    };
                    named.insert(target.name().to_string(), cell);
                }
                rows.push(SummaryRow {
                    case,
                    metric: job.metric(),
                    pfnfs_direct_over_buffered: ratio(
                        medians.get(&TargetKind::PfnfsDirect).copied(),
                        medians.get(&TargetKind::PfnfsBuffered).copied(),
                    ),
                    targets: named,
                });
            }
        }
    }
    rows
}

/// Three significant digits: `569`, `96.2`, `4.61`, `0.173`.
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Picks a ratio out of a summary row.
type RatioColumn = Box<dyn Fn(&SummaryRow) -> Option<f64>>;

fn ratio_text(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{}×", sig3(r)))
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

pub(crate) fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// The Markdown report: setup, medians, ratios, daemon memory, failures.
pub fn markdown(
    report: &Report,
    chart_file: Option<&str>,
    meta_chart_file: Option<&str>,
) -> String {
    let s = &report.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# pfnfs bench\n");
    let _ = writeln!(
        md,
        "Measured {} on {}; {}{}; pfnfs {}.\n",
        report.finished,
        report.machine.summary(),
        report.tools.fio,
        report
            .tools
            .bindfs
            .as_ref()
            .map(|b| format!(", {b} (`{}`)", s.bindfs_command))
            .unwrap_or_default(),
        report.pfnfs_version
    );
    let fio_part = if s.jobs.is_empty() {
        String::new()
    } else {
        format!(
            " × {} s per fio run, a {} file per mount",
            s.runtime_s,
            size_text(s.size_bytes)
        )
    };
    let _ = writeln!(
        md,
        "{}{} round{}{fio_part}; each round mounts every target afresh, in the order {} \
         (interleaved), and runs every job on it. Figures are medians over rounds; IOPS and \
         bandwidth count reads and writes together.{}\n",
        if s.quick { "Quick (smoke) run: " } else { "" },
        s.rounds,
        if s.rounds == 1 { "" } else { "s" },
        s.targets
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", "),
        if report.interrupted {
            " **Interrupted: incomplete.**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "{}\n",
        if s.huge_pages {
            "Pools, backing stores and the tmpfs target in 2 MiB pages (`--huge-pages`: tmpfs \
             mounted with `huge=always`), as persistent memory is mapped with device DAX."
        } else {
            "Pools and backing stores in /dev/shm (4 KiB pages); the tmpfs target is a new \
             tmpfs with 4 KiB pages."
        }
    );
    if let (Some(a), Some(b)) = (report.machine.load_avg_start, report.load_avg_end) {
        let _ = writeln!(
            md,
            "Load average (1 min) at the start and the end: {a:.1} and {b:.1}, on {} CPUs.\n",
            report.machine.nproc
        );
    }
    if let Some(chart) = chart_file {
        let _ = writeln!(md, "![chart]({chart})\n");
    }

    if !report.summary.is_empty() {
        fio_tables(report, &mut md);
    }

    if let Some(section) = buffered_faster(report) {
        md.push_str(&section);
    }

    if !report.settings.meta_jobs.is_empty() {
        md.push_str(&crate::meta_report::markdown(report, meta_chart_file));
    }

    let daemons: Vec<&MountRecord> = report
        .mounts
        .iter()
        .filter(|m| m.target.is_fuse() && !m.metadata)
        .collect();
    if !daemons.is_empty() {
        let _ = writeln!(
            md,
            "\n## Daemon memory\n\nFrom `/proc/PID/status` of the FUSE daemon, right after \
             mounting and after its last fio run, in MiB. RssAnon is the daemon's own memory \
             (heap, stacks, request buffers); RssShmem counts the pages of the pool file in \
             /dev/shm that the daemon has mapped and touched, which is file data, not growth.\n"
        );
        let _ = writeln!(
            md,
            "| round | target | pid | moved | VmRSS before | VmRSS after | RssAnon before | RssAnon after | RssShmem after | VmHWM |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for m in daemons {
            let b = m.mem_before.unwrap_or_default();
            let a = m.mem_after.unwrap_or_default();
            let known = |x: Option<MemStat>, f: fn(&MemStat) -> u64| {
                x.map_or_else(|| "–".to_string(), |x| mib(f(&x)))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                m.round,
                m.target.name(),
                m.daemon_pid
                    .map_or_else(|| "–".to_string(), |p| p.to_string()),
                size_text(m.bytes_moved),
                known(m.mem_before, |x| x.vm_rss_kib),
                known(m.mem_after, |x| x.vm_rss_kib),
                known(m.mem_before, |x| x.rss_anon_kib),
                known(m.mem_after, |x| x.rss_anon_kib),
                known(m.mem_after, |x| x.rss_shmem_kib),
                mib(a.vm_hwm_kib.max(b.vm_hwm_kib)),
            );
        }
    }

    let failures: Vec<String> = report
        .runs
        .iter()
        .filter_map(|r| {
            r.error.as_ref().map(|e| {
                format!(
                    "- round {} {} {}: {}",
                    r.round,
                    r.target.name(),
                    r.case.label(),
                    e.replace('\n', " ")
                )
            })
        })
        .chain(report.meta_runs.iter().filter_map(|r| {
            r.error.as_ref().map(|e| {
                format!(
                    "- round {} {} {}: {}",
                    r.round,
                    r.target.name(),
                    r.job.name(),
                    e.replace('\n', " ")
                )
            })
        }))
        .chain(report.mounts.iter().flat_map(|m| {
            [&m.mount_error, &m.unmount_error]
                .into_iter()
                .flatten()
                .map(move |e| {
                    format!(
                        "- round {} {}: {}",
                        m.round,
                        m.target.name(),
                        e.replace('\n', " ")
                    )
                })
        }))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "\n## Failures\n\n{}", failures.join("\n"));
    }
    md
}

/// The fio jobs' medians and ratios tables.
fn fio_tables(report: &Report, md: &mut String) {
    let s = &report.settings;
    let targets = &s.targets;
    let _ = writeln!(md, "## Medians\n");
    let _ = write!(md, "| job | numjobs | direct | unit |");
    for t in targets {
        let _ = write!(md, " {} |", t.name());
    }
    let _ = write!(md, "\n|---|---|---|---|");
    for _ in targets {
        let _ = write!(md, "---:|");
    }
    md.push('\n');
    for row in &report.summary {
        let _ = write!(
            md,
            "| {} | {} | {} | {} |",
            row.case.job.name(),
            row.case.numjobs,
            u8::from(row.case.direct),
            row.metric.unit()
        );
        for &t in targets {
            let text = match row.cell(t) {
                Some(c) if c.median.is_finite() => sig3(row.metric.scaled(c.median)),
                Some(_) => "failed".to_string(),
                None => "–".to_string(),
            };
            let _ = write!(md, " {text} |");
        }
        md.push('\n');
    }

    let has = |t: TargetKind| targets.contains(&t);
    let mut columns: Vec<(String, RatioColumn)> = Vec::new();
    for t in [TargetKind::PfnfsDirect, TargetKind::PfnfsBuffered] {
        if !has(t) {
            continue;
        }
        if has(TargetKind::Tmpfs) {
            columns.push((
                format!("{} ÷ tmpfs", t.name()),
                Box::new(move |r| r.cell(t).and_then(|c| c.ratio_to_tmpfs)),
            ));
        }
        if has(TargetKind::Bindfs) {
            columns.push((
                format!("{} ÷ bindfs", t.name()),
                Box::new(move |r| r.cell(t).and_then(|c| c.ratio_to_bindfs)),
            ));
        }
    }
    if has(TargetKind::Bindfs) && has(TargetKind::Tmpfs) {
        columns.push((
            "bindfs ÷ tmpfs".to_string(),
            Box::new(|r| r.cell(TargetKind::Bindfs).and_then(|c| c.ratio_to_tmpfs)),
        ));
    }
    if has(TargetKind::PfnfsDirect) && has(TargetKind::PfnfsBuffered) {
        columns.push((
            "pfnfs-direct ÷ pfnfs-buffered".to_string(),
            Box::new(|r| r.pfnfs_direct_over_buffered),
        ));
    }
    if !columns.is_empty() {
        let _ = writeln!(
            md,
            "\n## Ratios\n\nRatios of medians on the same job; above 1 means faster.\n"
        );
        let _ = write!(md, "| job | numjobs | direct |");
        for (name, _) in &columns {
            let _ = write!(md, " {name} |");
        }
        let _ = write!(md, "\n|---|---|---|");
        for _ in &columns {
            let _ = write!(md, "---:|");
        }
        md.push('\n');
        for row in &report.summary {
            let _ = write!(
                md,
                "| {} | {} | {} |",
                row.case.job.name(),
                row.case.numjobs,
                u8::from(row.case.direct)
            );
            for (_, f) in &columns {
                let _ = write!(md, " {} |", ratio_text(f(row)));
            }
            md.push('\n');
        }
    }
}

/// The "Where pfnfs-buffered is faster" section: every direct=1 case in which buffered mode's
/// median beats direct mode's, with both modes' spread and the rounds each won (the targets
/// run interleaved, so round k of both was measured minutes apart at most). None if there is
/// no such case.
fn buffered_faster(report: &Report) -> Option<String> {
    let mut lines = Vec::new();
    for row in report.summary.iter().filter(|r| r.case.direct) {
        let (Some(d), Some(b)) = (
            row.cell(TargetKind::PfnfsDirect),
            row.cell(TargetKind::PfnfsBuffered),
        ) else {
            continue;
        };
        if !(d.median.is_finite() && b.median.is_finite() && b.median > d.median) {
            continue;
        }
        let m = row.metric;
        let rounds = d.values.len().min(b.values.len());
        let won = d
            .values
            .iter()
            .zip(&b.values)
            .filter(|(d, b)| b > d)
            .count();
        let verdict = if b.min <= d.max {
            "the two ranges overlap: within this run's round-to-round spread"
        } else {
            "buffered was faster in every round: outside this run's spread, worth a profile of \
             both modes"
        };
        lines.push(format!(
            "- {}, {} job{}: pfnfs-direct {} {unit} ({}–{}) against pfnfs-buffered {} ({}–{}), \
             {:.3}×; buffered ahead in {won} of {rounds} rounds; {verdict}.",
            row.case.job.name(),
            row.case.numjobs,
            if row.case.numjobs == 1 { "" } else { "s" },
            sig3(m.scaled(d.median)),
            sig3(m.scaled(d.min)),
            sig3(m.scaled(d.max)),
            sig3(m.scaled(b.median)),
            sig3(m.scaled(b.min)),
            sig3(m.scaled(b.max)),
            d.median / b.median,
            unit = m.unit(),
        ));
    }
    if lines.is_empty() {
        return None;
    }
    Some(format!(
        "\n## Where pfnfs-buffered is faster\n\nWith `direct=1` both modes send every read and \
         write to the daemon as the same FUSE request, which pfnfs answers alike from the pool; \
         what differs is the kernel's side: buffered mode serialises O_DIRECT writes on the \
         inode lock and offers no async direct I/O, both in direct mode's favour. A direct=1 \
         case where buffered mode is ahead therefore comes from where the scheduler put the \
         daemon's workers and fio's jobs in that run, unless it held in every round:\n\n{}\n",
        lines.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u32, target: TargetKind, job: JobId, value: Option<f64>) -> RunRecord {
        RunRecord {
            round,
            target,
            case: Case {
                job,
                numjobs: 1,
                direct: true,
            },
            metric: job.metric(),
            value,
            result: None,
            error: value.is_none().then(|| "boom".to_string()),
            daemon_mem_after: None,
            raw_output: String::new(),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn ratios_of_medians() {
        let j = JobId::Randread4k;
        let runs = vec![
            run(1, TargetKind::PfnfsDirect, j, Some(100.0)),
            run(2, TargetKind::PfnfsDirect, j, Some(120.0)),
            run(3, TargetKind::PfnfsDirect, j, Some(80.0)),
            run(1, TargetKind::Tmpfs, j, Some(400.0)),
            run(1, TargetKind::Bindfs, j, Some(50.0)),
            run(1, TargetKind::PfnfsBuffered, j, None),
        ];
        let rows = summarize(&runs, &[j], &[1]);
        assert_eq!(rows.len(), 1);
        let cell = rows[0].cell(TargetKind::PfnfsDirect).unwrap();
        assert_eq!(cell.median, 100.0);
        assert_eq!((cell.min, cell.max), (80.0, 120.0));
        assert_eq!(cell.ratio_to_tmpfs, Some(0.25));
        assert_eq!(cell.ratio_to_bindfs, Some(2.0));
        let failed = rows[0].cell(TargetKind::PfnfsBuffered).unwrap();
        assert_eq!(failed.failed, 1);
        assert!(failed.median.is_nan());
        assert_eq!(rows[0].pfnfs_direct_over_buffered, None);
    }

    #[test]
    fn explains_where_buffered_is_faster() {
        let j = JobId::Seqread1m;
        let gib = 1024.0 * 1024.0 * 1024.0;
        let mut runs = Vec::new();
        for (round, d, b) in [(1, 7.5, 8.2), (2, 8.3, 8.5), (3, 7.8, 10.4)] {
            runs.push(run(round, TargetKind::PfnfsDirect, j, Some(d * gib)));
            runs.push(run(round, TargetKind::PfnfsBuffered, j, Some(b * gib)));
        }
        let k = JobId::Randwrite4k;
        for (round, d, b) in [(1, 170e3, 50e3), (2, 172e3, 53e3), (3, 180e3, 60e3)] {
            runs.push(run(round, TargetKind::PfnfsDirect, k, Some(d)));
            runs.push(run(round, TargetKind::PfnfsBuffered, k, Some(b)));
        }
        let mut report = Report::sample(
            summarize(&runs, &[j, k], &[1]),
            Vec::new(),
            vec![TargetKind::PfnfsDirect, TargetKind::PfnfsBuffered],
            vec![j, k],
            vec![1],
        );
        let text = buffered_faster(&report).expect("a case where buffered is faster");
        assert!(
            text.contains("seqread-1m, 1 job: pfnfs-direct 7.80"),
            "{text}"
        );
        assert!(
            text.contains("(7.50–8.30) against pfnfs-buffered 8.50 (8.20–10.4)"),
            "{text}"
        );
        assert!(text.contains("buffered ahead in 3 of 3 rounds"), "{text}");
        assert!(text.contains("ranges overlap"), "{text}");
        assert!(!text.contains("randwrite"), "{text}");
        assert!(markdown(&report, None, None).contains("## Where pfnfs-buffered is faster"));
        // Ahead in every round with no overlap: said so, not put down to noise.
        for r in &mut runs {
            if r.case.job == j && r.target == TargetKind::PfnfsBuffered {
                r.value = r.value.map(|v| v + 3.0 * gib);
            }
        }
        report.summary = summarize(&runs, &[j, k], &[1]);
        let text = buffered_faster(&report).unwrap();
        assert!(text.contains("outside this run's spread"), "{text}");
        // Direct ahead everywhere: no section.
        report.summary = summarize(&runs, &[k], &[1]);
        assert_eq!(buffered_faster(&report), None);
        assert!(!markdown(&report, None, None).contains("buffered is faster"));
    }

    #[test]
    fn significant_digits() {
        assert_eq!(sig3(569_123.0), "569123");
        assert_eq!(sig3(96.24), "96.2");
        assert_eq!(sig3(4.612), "4.61");
        assert_eq!(sig3(0.1734), "0.173");
        assert_eq!(sig3(f64::NAN), "–");
    }
}
