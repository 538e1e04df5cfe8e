//! Running test steps as other users.
//!
//! Tests that compare what an unprivileged user may do create two users once per process
//! ([`test_users`]) and run their steps in a copy of the test binary itself ([`Helper`]):
//! the binary's test named `helper` reads a script of steps from `PFNFS_HELPER_SCRIPT`, runs
//! each with the uid and gid it was started with (no supplementary groups), and prints one
//! `R <outcome>` line per step. Each test file defines its own `helper` test and step
//! language; this module only starts it and reads its answers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The environment variable that carries a helper's script, one step a line.
pub const SCRIPT_VAR: &str = "PFNFS_HELPER_SCRIPT";

/// A user's ids.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// The first test user's name.
pub const USER: &str = "pfnfs-test-user";
/// The second test user's name.
pub const USER2: &str = "pfnfs-test-user2";

fn id_of(name: &str, flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, name])
        .output()
        .expect("run id");
    assert!(out.status.success(), "id {flag} {name} failed");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The two test users, each in a group of its own (created once per process with useradd;
/// existing ones are reused). Needs root.
pub fn test_users() -> (Ids, Ids) {
    static USERS: OnceLock<(Ids, Ids)> = OnceLock::new();
    *USERS.get_or_init(|| {
        for name in [USER, USER2] {
            let out = Command::new("useradd")
                .args(["-M", "-U", "-s", "/usr/sbin/nologin", name])
                .output()
                .expect("run useradd");
            // 9: the user exists already.
            assert!(
                out.status.success() || out.status.code() == Some(9),
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let ids = |n| Ids {
            uid: id_of(n, "-u"),
            gid: id_of(n, "-g"),
        };
        (ids(USER), ids(USER2))
    })
}

/// The running test binary, copied where the test users can run it (the build tree may be
/// private). The copy lives as long as the helper.
pub struct Helper {
    _dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Helper {
    /// Copies the running test binary.
    pub fn new() -> Helper {
        let dir = tempfile::Builder::new()
            .prefix("pfnfs-helper-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("helper");
        fs::copy(std::env::current_exe().unwrap(), &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        Helper { _dir: dir, bin }
    }

    /// Runs `steps` as `who` in the binary's `helper` test; one outcome per step.
    pub fn run_as(&self, who: Ids, steps: &[String]) -> Vec<String> {
        let out = Command::new(&self.bin)
            .args(["--exact", "helper", "--nocapture", "--test-threads=1", "-q"])
            .env(SCRIPT_VAR, steps.join("\n"))
            .uid(who.uid)
            .gid(who.gid)
            .current_dir("/")
            .output()
            .expect("run helper");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "helper as {who:?} failed: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let results: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("R "))
            .map(str::to_string)
            .collect();
        assert_eq!(results.len(), steps.len(), "helper output:\n{stdout}");
        results
    }
}

impl Default for Helper {
    fn default() -> Helper {
        Helper::new()
    }
}

/// In a test binary's `helper` test: if a parent test started it with a script, runs each
/// step with `run` and prints the outcomes, then returns true; false when run on its own.
pub fn serve_script(run: impl Fn(&str) -> String) -> bool {
    let Ok(script) = std::env::var(SCRIPT_VAR) else {
        return false;
    };
    let mut out = String::new();
    for line in script.lines().filter(|l| !l.is_empty()) {
        out.push_str(&format!("R {}\n", run(line)));
    }
    use std::io::Write;
    std::io::stdout().write_all(out.as_bytes()).unwrap();
    true
}
