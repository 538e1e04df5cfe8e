//! Concurrent namespace stress through real mounts, in both modes: `pfnfs-fsx stress` starts
//! worker processes that create, write, truncate, hard-link, rename (plain, RENAME_NOREPLACE,
//! RENAME_EXCHANGE, across the shared directories, directories too) and unlink in the same
//! shared directories, and list them while the others change them. Each worker keeps the
//! model of its own files (names `w<ID>-<N>`); afterwards the tree must hold exactly what the
//! workers report as surviving (names, which names share an inode, link counts, sizes,
//! content hashes, and the totals). Then unmount, `pfnfs fsck -n` must exit 0, and after a
//! remount the tree must still match.
//!
//! `PFNFS_STRESS_SECS` (default 15) and `PFNFS_STRESS_PROCS` (default 4) scale it; the long
//! run is `PFNFS_STRESS_SECS=300 cargo test --release -p pfnfs-tests --test stress --
//! --nocapture`.

use std::process::Command;

use pfnfs_tests::{MountGuard, both_modes, fsx_bin, pfnfs_bin};
use serde_json::Value;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn run_fsx(args: &[&std::ffi::OsStr]) -> Value {
    let out = Command::new(fsx_bin())
        .args(args)
        .output()
        .expect("run pfnfs-fsx");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pfnfs-fsx {args:?} failed ({}):\n{}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}"))
}

fn stress(m: &mut MountGuard) {
    let secs = env_or("PFNFS_STRESS_SECS", "15");
    let procs = env_or("PFNFS_STRESS_PROCS", "4");
    let seed = match m.mode() {
        pfnfs_tests::Mode::Direct => "101",
        pfnfs_tests::Mode::Buffered => "202",
    };
    let dir = m.join("stress");
    std::fs::create_dir(&dir).unwrap();
    let saved = m.scratch().join("expected.json");
    let s = run_fsx(&[
        "stress".as_ref(),
        dir.as_os_str(),
        "--procs".as_ref(),
        procs.as_ref(),
        "--seconds".as_ref(),
        secs.as_ref(),
        "--seed".as_ref(),
        seed.as_ref(),
        "--save".as_ref(),
        saved.as_os_str(),
    ]);
    eprintln!("stress {:?}: {s}", m.mode());
    assert_eq!(s["found"], s["reported"], "{s}");
    assert!(s["reported"]["files"].as_u64().unwrap() > 0, "{s}");
    assert!(s["readdir_checks"].as_u64().unwrap() > 0, "{s}");
    assert!(s["expected_errors"].as_u64().unwrap() > 0, "{s}");
    for kind in [
        "create",
        "write",
        "truncate",
        "link",
        "rename",
        "rename_noreplace",
        "rename_noreplace_eexist",
        "rename_replace",
        "rename_exchange",
        "rename_dir",
        "mkdir",
        "unlink",
        "check",
        "readdir",
    ] {
        assert!(s["ops"][kind].as_u64().unwrap_or(0) > 0, "no {kind}: {s}");
    }

    m.unmount().unwrap_or_else(|e| panic!("unmount: {e}"));
    let out = Command::new(pfnfs_bin())
        .args(["fsck", "-n"])
        .arg(m.pool())
        .output()
        .expect("run pfnfs fsck");
    assert!(
        out.status.success(),
        "pfnfs fsck -n after the stress run: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    m.remount();
    let after = run_fsx(&["stress-check".as_ref(), dir.as_os_str(), saved.as_os_str()]);
    assert_eq!(after, s["reported"], "after the remount");
}

both_modes!(stress);

/// The check catches a lost name and a stray one: a short run in a host temp dir, then one
/// reported file removed and one unreported file added.
#[test]
fn stress_check_catches_changes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("stress");
    std::fs::create_dir(&dir).unwrap();
    let saved = tmp.path().join("expected.json");
    let s = run_fsx(&[
        "stress".as_ref(),
        dir.as_os_str(),
        "--procs".as_ref(),
        "2".as_ref(),
        "--seconds".as_ref(),
        "1".as_ref(),
        "--save".as_ref(),
        saved.as_os_str(),
    ]);
    assert_eq!(s["found"], s["reported"], "{s}");
    let expected: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    let victim = expected["names"][0]["path"]
        .as_str()
        .expect("a surviving name");
    std::fs::remove_file(dir.join(victim)).unwrap();
    std::fs::write(dir.join("s0/stray"), b"x").unwrap();
    let out = Command::new(fsx_bin())
        .arg("stress-check")
        .arg(&dir)
        .arg(&saved)
        .output()
        .expect("run pfnfs-fsx stress-check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{victim} reported, missing from the tree")),
        "{stderr}"
    );
    assert!(
        stderr.contains("s0/stray in the tree, no worker reports it"),
        "{stderr}"
    );
}
