//! The metadata jobs in the report: one record per job and mount, the medians over rounds per
//! job and target, and the "Metadata" section of `results.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::meta::{MetaFigures, MetaJob};
use crate::report::{Report, median, mib, sig3, size_text};
use crate::system::MemStat;
use crate::targets::TargetKind;

/// One metadata job on one mount.
#[derive(Clone, Debug, Serialize)]
pub struct MetaRecord {
    /// Round, from 1.
    pub round: u32,
    /// The target.
    pub target: TargetKind,
    /// The job.
    pub job: MetaJob,
    /// Files in the tree.
    pub files: u64,
    /// What it measured; None if it failed.
    pub figures: Option<MetaFigures>,
    /// For `stat` and `readdir`: whether the kernel's caches were dropped before it.
    pub caches_dropped: Option<bool>,
    /// The FUSE daemon's PID (pfnfs's or bindfs's; None for tmpfs).
    pub daemon_pid: Option<u32>,
    /// The daemon's memory at the job's end.
    pub daemon_mem_after: Option<MemStat>,
    /// Why the job failed.
    pub error: Option<String>,
}

/// One target's figures on one metadata job, over rounds. NaN where no round succeeded.
#[derive(Clone, Debug, Serialize)]
pub struct MetaCell {
    /// Rounds that succeeded.
    pub rounds: u32,
    /// Rounds that failed.
    pub failed: u32,
    /// Median operations per second.
    pub ops_per_s: f64,
    /// Smallest.
    pub ops_per_s_min: f64,
    /// Largest.
    pub ops_per_s_max: f64,
    /// Median of the rounds' median latencies, µs.
    pub p50_us: f64,
    /// Median of the rounds' 99th percentiles, µs.
    pub p99_us: f64,
    /// The slowest single operation of all rounds, µs.
    pub max_us: f64,
    /// Median rate of the first tenth of the operations.
    pub first_tenth_ops_per_s: Option<f64>,
    /// Median rate of the last tenth.
    pub last_tenth_ops_per_s: Option<f64>,
    /// Median over rounds of last tenth ÷ first tenth.
    pub last_over_first: Option<f64>,
    /// The daemon's RssAnon at the job's end, largest over rounds, KiB (None: no daemon).
    pub daemon_rss_anon_kib: Option<u64>,
    /// The daemon's VmHWM at the job's end, largest over rounds, KiB.
    pub daemon_vm_hwm_kib: Option<u64>,
    /// ops_per_s / tmpfs's.
    pub ratio_to_tmpfs: Option<f64>,
    /// ops_per_s / bindfs's.
    pub ratio_to_bindfs: Option<f64>,
}

/// One metadata job and each target's figures on it.
#[derive(Clone, Debug, Serialize)]
pub struct MetaSummaryRow {
    /// The job.
    pub job: MetaJob,
    /// Keyed by target name.
    pub targets: BTreeMap<String, MetaCell>,
}

impl MetaSummaryRow {
    /// The cell of `target`.
    pub fn cell(&self, target: TargetKind) -> Option<&MetaCell> {
        self.targets.get(target.name())
    }
}

fn ratio(a: f64, b: Option<f64>) -> Option<f64> {
    match b {
        Some(b) if a.is_finite() && b.is_finite() && b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn cell_of(records: &[&MetaRecord]) -> MetaCell {
    let figures: Vec<&MetaFigures> = records
        .iter()
        .filter(|r| r.error.is_none())
        .filter_map(|r| r.figures.as_ref())
        .filter(|f| f.ops_per_s.is_some() && f.latency.is_some())
        .collect();
    let values = |f: &dyn Fn(&MetaFigures) -> Option<f64>| -> Vec<f64> {
        figures.iter().filter_map(|x| f(x)).collect()
    };
    let nan_if_none = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let rates = values(&|f| f.ops_per_s);
    let mems: Vec<MemStat> = records.iter().filter_map(|r| r.daemon_mem_after).collect();
    MetaCell {
        rounds: figures.len() as u32,
        failed: (records.len() - figures.len()) as u32,
        ops_per_s: nan_if_none(median(&rates)),
        ops_per_s_min: nan_if_none(rates.iter().copied().reduce(f64::min)),
        ops_per_s_max: nan_if_none(rates.iter().copied().reduce(f64::max)),
        p50_us: nan_if_none(median(&values(&|f| f.latency.map(|l| l.p50_us)))),
        p99_us: nan_if_none(median(&values(&|f| f.latency.map(|l| l.p99_us)))),
        max_us: nan_if_none(
            values(&|f| f.latency.map(|l| l.max_us))
                .into_iter()
                .reduce(f64::max),
        ),
        first_tenth_ops_per_s: median(&values(&|f| f.first_tenth_ops_per_s)),
        last_tenth_ops_per_s: median(&values(&|f| f.last_tenth_ops_per_s)),
        last_over_first: median(&values(&|f| f.last_over_first())),
        daemon_rss_anon_kib: mems.iter().map(|m| m.rss_anon_kib).max(),
        daemon_vm_hwm_kib: mems.iter().map(|m| m.vm_hwm_kib).max(),
        ratio_to_tmpfs: None,
        ratio_to_bindfs: None,
    }
}

/// Medians per job (in `jobs` order) and target, with the ratios to tmpfs and bindfs.
pub fn summarize(runs: &[MetaRecord], jobs: &[MetaJob]) -> Vec<MetaSummaryRow> {
    let mut rows = Vec::new();
    for &job in jobs {
        let mut per_target: BTreeMap<TargetKind, Vec<&MetaRecord>> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.job == job) {
            per_target.entry(r.target).or_default().push(r);
        }
        if per_target.is_empty() {
            continue;
        }
        let cells: BTreeMap<TargetKind, MetaCell> = per_target
            .iter()
            .map(|(t, recs)| (*t, cell_of(recs)))
            .collect();
        let of = |t: TargetKind| cells.get(&t).map(|c| c.ops_per_s).filter(|v| v.is_finite());
        let (tmpfs, bindfs) = (of(TargetKind::Tmpfs), of(TargetKind::Bindfs));
        let targets = cells
            .into_iter()
            .map(|(t, c)| {
                let cell = MetaCell {
                    ratio_to_tmpfs: ratio(c.ops_per_s, tmpfs),
                    ratio_to_bindfs: ratio(c.ops_per_s, bindfs),
                    ..c
                };
                (t.name().to_string(), cell)
            })
            .collect();
        rows.push(MetaSummaryRow { job, targets });
    }
    rows
}

/// A latency in µs as `12.3 µs`, `1.23 ms` or `3.58 s`.
pub fn latency_text(us: f64) -> String {
    if !us.is_finite() {
        "–".to_string()
    } else if us >= 1e6 {
        format!("{} s", sig3(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", sig3(us / 1e3))
    } else {
        format!("{} µs", sig3(us))
    }
}

fn rate_text(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.0}"),
        _ => "–".to_string(),
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{}×", sig3(r)))
}

/// The "Metadata" section of `results.md`.
pub fn markdown(report: &Report, chart_file: Option<&str>) -> String {
    let s = &report.settings;
    let mut md = String::new();
    let dirs = s.files.div_ceil(crate::meta::FILES_PER_DIR);
    let _ = writeln!(
        md,
        "\n## Metadata\n\n{} files of 100 bytes, 1,000 per directory ({dirs} director{}), made, \
         read and removed by this process (one thread; every operation timed with a monotonic \
         clock into a fixed-size HDR histogram). Each target is mounted afresh for these jobs \
         (after its fio jobs, if any), every round, in the order of the run; the pfnfs pools are sparse \
         files of {} in {} (/dev/shm, 4 KiB pages), the tmpfs target a new tmpfs of that size, \
         bindfs's backing directory in the same folder. `stat` and `readdir` run after `sync` \
         and `echo 3 > /proc/sys/vm/drop_caches`. ops/s is operations over the phase's wall \
         time; p50 and p99 are the medians over rounds, max the slowest single operation of \
         all rounds; the first and last tenth are those of the operations, in order. RssAnon \
         is the FUSE daemon's own memory (pfnfs's, bindfs's) from `/proc/PID/status` at the \
         job's end, the largest over rounds; tmpfs has no daemon.\n",
        s.files,
        if dirs == 1 { "y" } else { "ies" },
        size_text(s.meta_store_bytes),
        s.meta_store_dir,
    );
    let not_dropped = report
        .meta_runs
        .iter()
        .any(|r| r.caches_dropped == Some(false));
    if not_dropped {
        let _ = writeln!(
            md,
            "**The caches could not be dropped (not root?): `stat` and `readdir` figures \
             include the kernel's caches.**\n"
        );
    }
    if let Some(chart) = chart_file {
        let _ = writeln!(md, "![metadata chart]({chart})\n");
    }
    for row in &report.meta_summary {
        let _ = writeln!(
            md,
            "### {}\n\nOne operation: {}.\n",
            row.job.name(),
            row.job.operation()
        );
        let _ = writeln!(
            md,
            "| target | ops/s | p50 | p99 | max | first tenth ops/s | last tenth ops/s | last ÷ first | daemon RssAnon MiB |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &t in &s.targets {
            let Some(c) = row.cell(t) else { continue };
            if c.rounds == 0 {
                let _ = writeln!(md, "| {} | failed | – | – | – | – | – | – | – |", t.name());
                continue;
            }
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name(),
                rate_text(Some(c.ops_per_s)),
                latency_text(c.p50_us),
                latency_text(c.p99_us),
                latency_text(c.max_us),
                rate_text(c.first_tenth_ops_per_s),
                rate_text(c.last_tenth_ops_per_s),
                c.last_over_first
                    .map_or_else(|| "–".to_string(), |r| format!("{r:.2}")),
                c.daemon_rss_anon_kib.map_or_else(|| "–".to_string(), mib),
            );
        }
        md.push('\n');
    }

    let has = |t: TargetKind| s.targets.contains(&t);
    let mut columns: Vec<(String, TargetKind, bool)> = Vec::new();
    for t in [TargetKind::PfnfsDirect, TargetKind::PfnfsBuffered] {
        if !has(t) {
            continue;
        }
        if has(TargetKind::Bindfs) {
            columns.push((format!("{} ÷ bindfs", t.name()), t, true));
        }
        if has(TargetKind::Tmpfs) {
            columns.push((format!("{} ÷ tmpfs", t.name()), t, false));
        }
    }
    if !columns.is_empty() && !report.meta_summary.is_empty() {
        let _ = writeln!(
            md,
            "### Metadata ratios\n\nops/s ÷ ops/s of medians on the same job; above 1 means \
             faster.\n"
        );
        let _ = write!(md, "| job |");
        for (name, _, _) in &columns {
            let _ = write!(md, " {name} |");
        }
        let _ = write!(md, "\n|---|");
        for _ in &columns {
            let _ = write!(md, "---:|");
        }
        md.push('\n');
        for row in &report.meta_summary {
            let _ = write!(md, "| {} |", row.job.name());
            for &(_, t, to_bindfs) in &columns {
                let r = row.cell(t).and_then(|c| {
                    if to_bindfs {
                        c.ratio_to_bindfs
                    } else {
                        c.ratio_to_tmpfs
                    }
                });
                let _ = write!(md, " {} |", ratio_text(r));
            }
            md.push('\n');
        }
    }
    md
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::meta::Latency;

    fn record(
        round: u32,
        target: TargetKind,
        job: MetaJob,
        rate: Option<f64>,
        max_us: f64,
    ) -> MetaRecord {
        MetaRecord {
            round,
            target,
            job,
            files: 1000,
            figures: rate.map(|r| MetaFigures {
                ops: 1000,
                elapsed_s: 1000.0 / r,
                ops_per_s: Some(r),
                latency: Some(Latency {
                    count: 1000,
                    p50_us: 1e6 / r,
                    p99_us: 2e6 / r,
                    max_us,
                }),
                first_tenth_ops_per_s: Some(r * 1.1),
                last_tenth_ops_per_s: Some(r * 0.88),
                first_tenth_latency: None,
                last_tenth_latency: None,
                tenths_ops_per_s: Vec::new(),
            }),
            caches_dropped: job.drops_caches().then_some(true),
            daemon_pid: target.is_fuse().then_some(42),
            daemon_mem_after: target.is_fuse().then(|| MemStat {
                rss_anon_kib: 1024 * u64::from(round),
                ..MemStat::default()
            }),
            error: rate.is_none().then(|| "boom".to_string()),
        }
    }

    /// Three rounds of create on every target (pfnfs-buffered failing in round 2) and a
    /// failing stat on pfnfs-direct.
    pub(crate) fn sample_runs() -> Vec<MetaRecord> {
        let mut runs = Vec::new();
        for round in 1..=3 {
            let r = f64::from(round);
            runs.push(record(
                round,
                TargetKind::PfnfsDirect,
                MetaJob::Create,
                Some(7000.0 + 100.0 * r),
                800.0 * r,
            ));
            runs.push(record(
                round,
                TargetKind::Bindfs,
                MetaJob::Create,
                Some(4500.0),
                100.0,
            ));
            runs.push(record(
                round,
                TargetKind::Tmpfs,
                MetaJob::Create,
                Some(84000.0),
                10.0,
            ));
            runs.push(record(
                round,
                TargetKind::PfnfsBuffered,
                MetaJob::Create,
                (round != 2).then_some(6000.0),
                2e6,
            ));
            runs.push(record(
                round,
                TargetKind::PfnfsDirect,
                MetaJob::Stat,
                None,
                0.0,
            ));
        }
        runs
    }

    #[test]
    fn medians_worst_case_and_ratios() {
        let rows = summarize(&sample_runs(), &[MetaJob::Create, MetaJob::Stat]);
        assert_eq!(rows.len(), 2);
        let c = rows[0].cell(TargetKind::PfnfsDirect).unwrap();
        assert_eq!((c.rounds, c.failed), (3, 0));
        assert_eq!(c.ops_per_s, 7200.0);
        assert_eq!((c.ops_per_s_min, c.ops_per_s_max), (7100.0, 7300.0));
        assert_eq!(c.max_us, 2400.0, "worst over rounds");
        assert_eq!(c.daemon_rss_anon_kib, Some(3072), "largest over rounds");
        assert!((c.last_over_first.unwrap() - 0.8).abs() < 1e-9);
        assert!((c.ratio_to_bindfs.unwrap() - 1.6).abs() < 1e-9);
        assert!((c.ratio_to_tmpfs.unwrap() - 7200.0 / 84000.0).abs() < 1e-9);
        let b = rows[0].cell(TargetKind::PfnfsBuffered).unwrap();
        assert_eq!((b.rounds, b.failed), (2, 1));
        assert_eq!(
            rows[0].cell(TargetKind::Tmpfs).unwrap().daemon_rss_anon_kib,
            None
        );
        let failed = rows[1].cell(TargetKind::PfnfsDirect).unwrap();
        assert_eq!((failed.rounds, failed.failed), (0, 3));
        assert!(failed.ops_per_s.is_nan() && failed.ratio_to_bindfs.is_none());
    }

    #[test]
    fn latency_units() {
        assert_eq!(latency_text(269.4), "269 µs");
        assert_eq!(latency_text(787_000.0), "787 ms");
        assert_eq!(latency_text(3_580_000.0), "3.58 s");
        assert_eq!(latency_text(4.2), "4.20 µs");
        assert_eq!(latency_text(f64::NAN), "–");
    }

    #[test]
    fn section_has_a_table_per_job_and_the_ratios() {
        let runs = sample_runs();
        let mut report = Report::sample(
            Vec::new(),
            Vec::new(),
            crate::targets::ALL_TARGETS.to_vec(),
            Vec::new(),
            Vec::new(),
        );
        report.settings.meta_jobs = vec![MetaJob::Create, MetaJob::Stat];
        report.settings.files = 200_000;
        report.settings.meta_store_dir = "/dev/shm/pfnfs-bench-meta.1".into();
        report.meta_summary = summarize(&runs, &report.settings.meta_jobs);
        report.meta_runs = runs;
        let md = crate::report::markdown(&report, None, Some("chart-meta.png"));
        assert!(md.contains("## Metadata"), "{md}");
        assert!(
            !md.contains("## Medians"),
            "no fio table without fio jobs:\n{md}"
        );
        assert!(md.contains("200000 files of 100 bytes"), "{md}");
        assert!(md.contains("(200 directories)"), "{md}");
        assert!(md.contains("/dev/shm/pfnfs-bench-meta.1"), "{md}");
        assert!(md.contains("![metadata chart](chart-meta.png)"), "{md}");
        assert!(md.contains("### create") && md.contains("### stat"), "{md}");
        assert!(
            md.contains(
                "| pfnfs-direct | 7200 | 139 µs | 278 µs | 2.40 ms | 7920 | 6336 | 0.80 | 3.0 |"
            ),
            "{md}"
        );
        assert!(md.contains("| tmpfs | 84000 |"), "{md}");
        assert!(md.contains("| 4500 |") && md.contains(" – |\n"), "{md}");
        assert!(md.contains("| pfnfs-direct | failed |"), "{md}");
        assert!(
            md.contains("| create | 1.60× | 0.086× | 1.33× | 0.071× |"),
            "{md}"
        );
        assert!(!md.contains("could not be dropped"), "{md}");
        report.meta_runs[0].caches_dropped = Some(false);
        let md = crate::report::markdown(&report, None, None);
        assert!(md.contains("could not be dropped"), "{md}");
        assert!(md.contains("- round 1 pfnfs-direct stat: boom"), "{md}");
    }
}
