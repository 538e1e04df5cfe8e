//! `pfnfs-fsx` (the exerciser in `exerciser/`) through real mounts, in both modes: seeded
//! random read/write/truncate/fallocate (every mode)/mmap/copy_file_range/reopen (half of
//! them O_DIRECT)/fsync/SEEK_DATA-SEEK_HOLE sequences, every read compared with the
//! exerciser's model; a remount in the middle after which the files must equal the model;
//! `pfnfs fsck -n` clean after the unmount. The same exerciser also runs on the host's own
//! filesystem (tmpfs when `/dev/shm` is one), which checks the model itself.
//!
//! `PFNFS_FSX_OPS=N` sets the operations per seed (CI: a few thousand); the long run is
//! `PFNFS_FSX_OPS=1000000 PFNFS_FSX_SEEDS=1 cargo test --release -p pfnfs-tests --test fsx
//! -- --nocapture fsx_seeds` (one seed, 1,000,000 operations per mode); each run prints its
//! summary (operations, seconds, operations per second, mismatches).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pfnfs_tests::{MountGuard, all_transports, fsx_bin, pfnfs_bin};
use serde_json::Value;

/// Seeds of the CI run (`PFNFS_FSX_SEEDS=N` takes the first N).
const SEEDS: [u64; 2] = [1, 0x5eed_0002];
/// Operations per seed in CI.
const CI_OPS: u64 = 2000;

fn ops() -> u64 {
    std::env::var("PFNFS_FSX_OPS")
        .ok()
        .map(|v| v.parse().expect("PFNFS_FSX_OPS must be a number"))
        .unwrap_or(CI_OPS)
}

fn seeds() -> Vec<u64> {
    let n = std::env::var("PFNFS_FSX_SEEDS")
        .ok()
        .map(|v| v.parse().expect("PFNFS_FSX_SEEDS must be a number"))
        .unwrap_or(SEEDS.len());
    SEEDS
        .iter()
        .copied()
        .take(n.clamp(1, SEEDS.len()))
        .collect()
}

/// Runs `pfnfs-fsx DIR ARGS`; panics with its report unless it succeeds; returns the summary.
/// Long runs (`PFNFS_FSX_OPS` set) print progress every 50,000 operations to stderr.
fn fsx(dir: &Path, args: &[&str]) -> Value {
    let mut command = Command::new(fsx_bin());
    command.arg(dir).args(args);
    if std::env::var_os("PFNFS_FSX_OPS").is_some() {
        command
            .args(["--progress", "50000"])
            .stderr(Stdio::inherit());
    }
    let out = command.output().expect("run pfnfs-fsx");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pfnfs-fsx {} {args:?} failed ({}):\n{}{stdout}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("pfnfs-fsx summary {stdout:?}: {e}"));
    assert_eq!(summary["mismatches"], 0, "{summary}");
    summary
}

/// The fallocate modes pfnfs supports, as the exerciser probed them: COLLAPSE_RANGE and
/// INSERT_RANGE are not (the exerciser then expects EOPNOTSUPP from every such call).
fn assert_pfnfs_falloc(summary: &Value) {
    let f = &summary["falloc"];
    for (mode, supported) in [
        ("alloc", true),
        ("keep_size", true),
        ("punch_hole", true),
        ("zero_range", true),
        ("collapse_range", false),
        ("insert_range", false),
    ] {
        assert_eq!(f[mode], supported, "fallocate {mode}: {summary}");
    }
}

fn print_summary(what: &str, s: &Value) {
    eprintln!(
        "{what}: seed {} ops {} in {:.1} s ({:.0} ops/s), mismatches {}, expected errors {}, \
         {} MB written, {} MB compared",
        s["seed"],
        s["ops"],
        s["seconds"].as_f64().unwrap_or(0.0),
        s["ops_per_sec"].as_f64().unwrap_or(0.0),
        s["mismatches"],
        s["expected_errors"],
        s["bytes_written"].as_u64().unwrap_or(0) >> 20,
        s["bytes_checked"].as_u64().unwrap_or(0) >> 20,
    );
}

/// Unmounts, then `pfnfs fsck -n` must find the pool clean (exit 0).
fn unmount_and_fsck(m: &mut MountGuard) {
    m.unmount().unwrap_or_else(|e| panic!("unmount: {e}"));
    let out = Command::new(pfnfs_bin())
        .args(["fsck", "-n"])
        .arg(m.pool())
        .output()
        .expect("run pfnfs fsck");
    assert!(
        out.status.success(),
        "pfnfs fsck -n after fsx: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each seed on its own two files in its own directory, then fsck.
fn fsx_seeds(m: &mut MountGuard) {
    let ops = ops().to_string();
    for seed in seeds() {
        let dir = m.join(format!("seed-{seed}"));
        std::fs::create_dir(&dir).unwrap();
        let seed = seed.to_string();
        let s = fsx(&dir, &["--seed", &seed, "--ops", &ops, "--odirect"]);
        print_summary(&format!("fsx {:?}", m.mode()), &s);
        assert_pfnfs_falloc(&s);
        assert_eq!(s["ops"].as_u64(), Some(ops.parse().unwrap()));
        if ops.parse::<u64>().unwrap() >= 2000 {
            // Every kind of operation ran (the unsupported ones answered EOPNOTSUPP).
            for (kind, n) in s["counts"].as_object().unwrap() {
                assert!(n.as_u64().unwrap() > 0, "no {kind} in {s}");
            }
            assert!(s["expected_errors"].as_u64().unwrap() > 0, "{s}");
        }
    }
    unmount_and_fsck(m);
}

/// Remount in the middle: the files after the remount must be exactly the model, and the
/// run goes on from there; then again after a second remount; fsck clean.
fn fsx_remount(m: &mut MountGuard) {
    let scratch = m.scratch();
    let models = [scratch.join("model-1"), scratch.join("model-2")];
    for d in &models {
        std::fs::create_dir_all(d).unwrap();
    }
    let dir = m.join("remount");
    std::fs::create_dir(&dir).unwrap();
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let half = (ops() / 2).max(1).to_string();
    fsx(
        &dir,
        &[
            "--seed",
            "77",
            "--ops",
            &half,
            "--files",
            "3",
            "--odirect",
            "--model-out",
            &s(&models[0]),
        ],
    );
    m.remount();
    // --resume-from first compares every file with the saved model.
    fsx(
        &dir,
        &[
            "--seed",
            "78",
            "--ops",
            &half,
            "--files",
            "3",
            "--odirect",
            "--resume-from",
            &s(&models[0]),
            "--model-out",
            &s(&models[1]),
        ],
    );
    unmount_and_fsck(m);
    m.remount();
    fsx(
        &dir,
        &[
            "--ops",
            "0",
            "--files",
            "3",
            "--resume-from",
            &s(&models[1]),
        ],
    );
    unmount_and_fsck(m);
}

all_transports!(fsx_seeds, fsx_remount);

/// The model itself: the first seed on the filesystem of the temp dir (tmpfs under
/// `/dev/shm` when there is one). Any filesystem must pass; the fallocate modes it lacks are
/// probed and then expected to fail with EOPNOTSUPP.
#[test]
fn fsx_model_on_host_filesystem() {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("pfnfs-fsx-")
        .tempdir_in(&base)
        .expect("tempdir");
    let ops = ops().min(20_000).to_string();
    let s = fsx(
        dir.path(),
        &["--seed", &SEEDS[0].to_string(), "--ops", &ops],
    );
    print_summary(&format!("fsx on {}", base.display()), &s);
    // The same seed replays the same operations.
    let again = tempfile::Builder::new()
        .prefix("pfnfs-fsx-")
        .tempdir_in(&base)
        .expect("tempdir");
    let t = fsx(
        again.path(),
        &["--seed", &SEEDS[0].to_string(), "--ops", &ops],
    );
    assert_eq!(
        s["counts"], t["counts"],
        "the same seed replays the same operations"
    );
    assert_eq!(s["bytes_written"], t["bytes_written"]);
}

/// A mismatch is caught and reported: a byte changed behind the exerciser's back makes the
/// resumed run fail with the seed, the offset and both values.
#[test]
fn fsx_reports_a_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let m = models.to_str().unwrap();
    fsx(
        &work,
        &[
            "--seed",
            "5",
            "--ops",
            "300",
            "--files",
            "1",
            "--model-out",
            m,
        ],
    );
    let file = work.join("fsx.0");
    let mut data = std::fs::read(&file).unwrap();
    if data.is_empty() {
        data.push(0);
        std::fs::write(models.join("fsx.0"), &data).unwrap();
    }
    let at = data.len() / 2;
    data[at] ^= 0x5a;
    std::fs::write(&file, &data).unwrap();
    let out = Command::new(fsx_bin())
        .arg(&work)
        .args([
            "--seed",
            "6",
            "--ops",
            "10",
            "--files",
            "1",
            "--resume-from",
            m,
        ])
        .output()
        .expect("run pfnfs-fsx");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("FAILED, seed 6"), "{stderr}");
    assert!(
        stderr.contains(&format!("differs at file offset {at} ")),
        "{stderr}"
    );
}
