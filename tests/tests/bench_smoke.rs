//! `pfnfs bench`: the one-minute smoke run (`--quick`, with the metadata jobs at 2,000 files)
//! finishes, unmounts everything and writes its outputs (JSON that parses, a Markdown table
//! with every row, a metadata table with figures for every target, two PNGs), and missing
//! tools are named with the package to install. No figure is checked: on a shared
//! CI machine timings mean nothing.
//!
//! The smoke run needs FUSE, fio and bindfs (.ci/run installs them); without them it prints
//! `SKIP:` and passes.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pfnfs_tests::{pfnfs_bin, skip_without_fuse};
use serde_json::Value;

/// The quick run takes about a minute; a loaded machine and a debug build may need more.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Waits for `child`; past the deadline sends it SIGINT (so it unmounts), then SIGKILL.
fn wait_with_deadline(child: &mut std::process::Child, deadline: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for pfnfs bench") {
            return status;
        }
        if start.elapsed() > deadline {
            // SAFETY: kill on the PID of our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(120) {
                if let Some(status) = child.try_wait().expect("wait for pfnfs bench") {
                    panic!("pfnfs bench did not finish within {deadline:?}; interrupted: {status}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("pfnfs bench did not finish within {deadline:?} nor stop on SIGINT; killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo")
}

fn unit(job: &str) -> &'static str {
    if job.starts_with("seq") {
        "GiB/s"
    } else {
        "kIOPS"
    }
}

fn check_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} lacks the PNG signature",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR", "first PNG chunk is not IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(
        width >= 800 && height >= 400,
        "chart is {width}×{height} pixels"
    );
    assert!(bytes.ends_with(b"IEND\xae\x42\x60\x82"), "PNG is truncated");
}

#[test]
fn quick_run_writes_json_markdown_and_png() {
    if skip_without_fuse() {
        return;
    }
    for tool in ["fio", "bindfs"] {
        if on_path(tool).is_none() {
            eprintln!("SKIP: {tool} is not installed (apt-get install {tool})");
            return;
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("pfnfs-bench-smoke-")
        .tempdir()
        .expect("tempdir");
    let out = dir.path().join("results");
    let log_path = dir.path().join("bench.log");
    let log = std::fs::File::create(&log_path).expect("create log");
    let mut child = Command::new(pfnfs_bin())
        .args(["bench", "--quick", "--files", "2000", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("spawn pfnfs bench");
    let pid = child.id();
    let status = wait_with_deadline(&mut child, SMOKE_TIMEOUT);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "pfnfs bench --quick: {status}; output:\n{log}"
    );

    // Nothing left mounted, no work directories left.
    let work = format!("pfnfs-bench.{pid}");
    assert!(
        !mountinfo().contains(&work),
        "pfnfs bench left a mount behind:\n{}",
        mountinfo()
    );
    assert!(!Path::new("/dev/shm").join(&work).exists());
    assert!(
        !Path::new("/dev/shm")
            .join(format!("pfnfs-bench-meta.{pid}"))
            .exists()
    );
    assert!(!std::env::temp_dir().join(&work).exists());

    // JSON: parses, every planned run succeeded, daemons' memory recorded.
    let json_path = out.join("results.json");
    let text = std::fs::read_to_string(&json_path).expect("results.json");
    let report: Value = serde_json::from_str(&text).expect("results.json is valid JSON");
    let targets: Vec<&str> = report["settings"]["targets"]
        .as_array()
        .expect("settings.targets")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        targets,
        ["pfnfs-direct", "pfnfs-buffered", "tmpfs", "bindfs"]
    );
    assert_eq!(report["settings"]["quick"], Value::Bool(true));
    assert_eq!(report["interrupted"], Value::Bool(false));
    let runs = report["runs"].as_array().expect("runs");
    // 6 + 10 + 9 + 9 with numjobs 2 only: see the plan in bench/README.md. The metadata
    // jobs are in `meta_runs`.
    assert_eq!(runs.len(), 34, "runs: {runs:#?}");
    for run in runs {
        assert!(
            run["value"].as_f64().is_some_and(|v| v > 0.0) && run["error"].is_null(),
            "failed run: {run}"
        );
        let raw = out.join(run["raw_output"].as_str().expect("raw_output"));
        let raw_text = std::fs::read_to_string(&raw).expect("fio's raw output");
        assert!(raw_text.contains("\"jobs\""), "{}", raw.display());
    }
    let summary = report["summary"].as_array().expect("summary");
    assert!(!summary.is_empty());
    let mounts = report["mounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 8, "a fio and a metadata mount per target");
    for mount in mounts {
        assert!(
            mount["mount_error"].is_null() && mount["unmount_error"].is_null(),
            "{mount}"
        );
        if mount["target"] != "tmpfs" {
            assert!(mount["daemon_pid"].as_u64().is_some(), "{mount}");
            for key in ["mem_before", "mem_after"] {
                assert!(
                    mount[key]["vm_rss_kib"].as_u64().is_some_and(|k| k > 0),
                    "{key} of {mount}"
                );
            }
        }
    }

    // Markdown: every summary row in the medians and the ratios table, every daemon's memory.
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    for row in summary {
        let job = row["job"].as_str().expect("job");
        let numjobs = row["numjobs"].as_u64().expect("numjobs");
        let direct = u8::from(row["direct"].as_bool().expect("direct"));
        let medians = format!("| {job} | {numjobs} | {direct} | {} |", unit(job));
        assert!(
            md.contains(&medians),
            "no medians row {medians:?} in:\n{md}"
        );
        let prefix = format!("| {job} | {numjobs} | {direct} |");
        assert_eq!(
            md.lines().filter(|l| l.starts_with(&prefix)).count(),
            2,
            "rows {prefix:?} in:\n{md}"
        );
    }
    for target in ["pfnfs-direct", "pfnfs-buffered", "bindfs"] {
        let row = format!("| 1 | {target} |");
        assert!(md.contains(&row), "no memory row {row:?} in:\n{md}");
    }
    assert!(md.contains("![chart](chart.png)"));

    check_png(&out.join("chart.png"));
    check_metadata(&report, &md, &out);
}

/// The metadata jobs: every job ran on every target with figures, the daemons' memory is
/// recorded, and results.md has a table per job with a row of numbers per target.
fn check_metadata(report: &Value, md: &str, out: &Path) {
    let jobs = ["create", "stat", "readdir", "unlink"];
    let targets = ["pfnfs-direct", "pfnfs-buffered", "tmpfs", "bindfs"];
    assert_eq!(report["settings"]["files"], 2000);
    let meta_runs = report["meta_runs"].as_array().expect("meta_runs");
    assert_eq!(
        meta_runs.len(),
        jobs.len() * targets.len(),
        "{meta_runs:#?}"
    );
    for run in meta_runs {
        assert!(run["error"].is_null(), "failed metadata job: {run}");
        let f = &run["figures"];
        let ops = if run["job"] == "readdir" { 2 } else { 2000 };
        assert_eq!(f["ops"], ops, "{run}");
        assert!(f["ops_per_s"].as_f64().is_some_and(|v| v > 0.0), "{run}");
        assert!(
            f["latency"]["p99_us"].as_f64().is_some_and(|v| v > 0.0),
            "{run}"
        );
        if run["target"] != "tmpfs" {
            assert!(
                run["daemon_mem_after"]["rss_anon_kib"]
                    .as_u64()
                    .is_some_and(|k| k > 0),
                "{run}"
            );
        }
        if run["job"] == "stat" || run["job"] == "readdir" {
            // Root drops the caches; anyone else gets a warning in the report.
            assert!(run["caches_dropped"].is_boolean(), "{run}");
        }
    }
    assert!(md.contains("## Metadata"), "{md}");
    assert!(md.contains("![metadata chart](chart-meta.png)"), "{md}");
    for job in jobs {
        assert!(
            md.contains(&format!("### {job}\n")),
            "no {job} table in:\n{md}"
        );
    }
    for target in targets {
        // One row per job: a rate, three latencies, two tenths, their ratio, RssAnon.
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with(&format!("| {target} | ")))
            .filter(|l| l.split('|').count() == 11)
            .collect();
        assert_eq!(rows.len(), jobs.len(), "{target} rows in:\n{md}");
        for row in rows {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert!(
                cells[2].parse::<f64>().is_ok_and(|v| v > 0.0),
                "ops/s in {row:?}"
            );
            for latency in &cells[3..6] {
                assert!(
                    latency.ends_with(" µs") || latency.ends_with(" ms") || latency.ends_with(" s"),
                    "latency in {row:?}"
                );
            }
            assert!(cells[6].parse::<f64>().is_ok(), "first tenth in {row:?}");
            assert!(cells[7].parse::<f64>().is_ok(), "last tenth in {row:?}");
            if target == "tmpfs" {
                assert_eq!(cells[9], "–", "{row:?}");
            } else {
                assert!(
                    cells[9].parse::<f64>().is_ok_and(|v| v > 0.0),
                    "RssAnon in {row:?}"
                );
            }
        }
    }
    assert!(md.contains("| create | "), "create ratios in:\n{md}");
    check_png(&out.join("chart-meta.png"));
}

fn bench_without(path: &Path, out: &Path) -> (i32, String) {
    let result = Command::new(pfnfs_bin())
        .args(["bench", "--quick", "--out"])
        .arg(out)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("run pfnfs bench");
    (
        result.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

#[test]
fn missing_tools_are_named_with_the_package() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("out");
    let (code, stderr) = bench_without(&empty, &out);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("fio not found"), "{stderr}");
    assert!(stderr.contains("apt-get install fio"), "{stderr}");
    assert!(stderr.contains("bindfs not found"), "{stderr}");
    assert!(stderr.contains("apt-get install bindfs"), "{stderr}");
    assert!(!out.exists(), "results folder created although nothing ran");

    // fio and fusermount3 there, bindfs not.
    let (Some(fio), Some(fusermount)) = (on_path("fio"), on_path("fusermount3")) else {
        eprintln!("SKIP (second half): fio or fusermount3 not installed");
        return;
    };
    let some = dir.path().join("some-path");
    std::fs::create_dir(&some).unwrap();
    symlink(fio, some.join("fio")).unwrap();
    symlink(fusermount, some.join("fusermount3")).unwrap();
    let (code, stderr) = bench_without(&some, &out);
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("fio not found"), "{stderr}");
    assert!(stderr.contains("bindfs not found"), "{stderr}");
    assert!(
        stderr.contains("--targets pfnfs-direct,pfnfs-buffered,tmpfs"),
        "{stderr}"
    );
}

#[test]
fn usage_errors() {
    let run = |args: &[&str]| {
        let out = Command::new(pfnfs_bin())
            .arg("bench")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run pfnfs bench");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--targets", "tmpfs,bindfs", "--jobs", "randrw-4k-mmapbuf"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nothing to run"), "{stderr}");
    for bad in [
        &["--targets", "ext4"][..],
        &["--jobs", "randread-8k"],
        &["--runtime", "0"],
        &["--runtime", "fast"],
        &["--rounds", "0"],
        &["--numjobs", "0"],
        &["--size", "1k"],
        &["--files", "0"],
        &["--jobs", "create,mkdir"],
    ] {
        let (code, stderr) = run(bad);
        assert_eq!(code, 2, "pfnfs bench {bad:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
