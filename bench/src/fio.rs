//! Running one fio job and reading its JSON output.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::system;
use crate::targets::reap;

/// The parameters of one fio run (the job file's `${VARIABLES}`).
pub struct FioInput<'a> {
    /// The job file.
    pub job_file: &'a Path,
    /// `FILENAME`: the test file.
    pub filename: &'a Path,
    /// `MMAPFILE`: the buffer file of the mmapbuf job.
    pub mmap_file: Option<&'a Path>,
    /// `SIZE`, in bytes.
    pub size: u64,
    /// `RUNTIME`.
    pub runtime: Duration,
    /// `NUMJOBS`.
    pub numjobs: u32,
    /// `DIRECT`.
    pub direct: bool,
    /// Where fio writes its JSON.
    pub output: &'a Path,
    /// Where fio's stderr goes.
    pub stderr: &'a Path,
}

/// The figures of one fio run (all jobs of the group added up).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FioResult {
    /// Reads per second.
    pub read_iops: f64,
    /// Writes per second.
    pub write_iops: f64,
    /// Bytes read per second.
    pub read_bw_bytes: f64,
    /// Bytes written per second.
    pub write_bw_bytes: f64,
    /// Bytes moved (read + written).
    pub io_bytes: u64,
    /// Measured time, ms (the longest job).
    pub runtime_ms: u64,
    /// Mean completion latency over reads and writes, µs.
    pub clat_mean_us: f64,
    /// 99th percentile completion latency (the worse of read and write), µs.
    pub clat_p99_us: f64,
}

impl FioResult {
    /// Read + write IOPS.
    pub fn iops(&self) -> f64 {
        self.read_iops + self.write_iops
    }

    /// Read + write bytes per second.
    pub fn bandwidth(&self) -> f64 {
        self.read_bw_bytes + self.write_bw_bytes
    }
}

/// fio's `runtime=` value for a duration: whole milliseconds.
pub fn fio_time(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Runs fio and parses its output. Err on a fio error, a timeout or an interruption.
pub fn run(input: &FioInput<'_>) -> Result<FioResult, String> {
    let stderr =
        File::create(input.stderr).map_err(|e| format!("{}: {e}", input.stderr.display()))?;
    let mut command = Command::new("fio");
    command
        .arg("--output-format=json")
        .arg(format!("--output={}", input.output.display()))
        .arg(input.job_file)
        .env("FILENAME", input.filename)
        .env("SIZE", input.size.to_string())
        .env("RUNTIME", fio_time(input.runtime))
        .env("NUMJOBS", input.numjobs.to_string())
        .env("DIRECT", if input.direct { "1" } else { "0" })
        .env(
            "MMAPFILE",
            input.mmap_file.unwrap_or(Path::new("/nonexistent")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run fio: {e}"))?;
    // Laying out the file comes on top of the runtime.
    let timeout = input.runtime * 3 + Duration::from_secs(300);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for fio: {e}")),
        }
        if system::interrupted() {
            // Our own child, not reaped yet, so the PID is still its.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = reap(&mut child, Duration::from_secs(15));
            return Err("interrupted".to_string());
        }
        if start.elapsed() > timeout {
            let outcome = reap(&mut child, Duration::ZERO).err().unwrap_or_default();
            return Err(format!(
                "fio did not finish within {} s ({outcome}){}",
                timeout.as_secs(),
                stderr_tail(input.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(input.output).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "fio exited with {status}{}",
            stderr_tail(input.stderr)
        ));
    }
    parse(&text).map_err(|e| format!("{e}{}", stderr_tail(input.stderr)))
}

fn stderr_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(": {}", lines[lines.len().saturating_sub(3)..].join(" | "))
}

/// Parses fio's `--output-format=json` (text before the first `{`, such as warnings, is
/// skipped).
pub fn parse(text: &str) -> Result<FioResult, String> {
    let start = text
        .find('{')
        .ok_or_else(|| "fio wrote no JSON output".to_string())?;
    let root: Value =
        serde_json::from_str(&text[start..]).map_err(|e| format!("fio's JSON output: {e}"))?;
    let jobs = root
        .get("jobs")
        .and_then(Value::as_array)
        .filter(|j| !j.is_empty())
        .ok_or_else(|| "fio's JSON output has no jobs".to_string())?;
    let mut result = FioResult::default();
    let mut lat_sum = 0.0;
    let mut ios = 0u64;
    for job in jobs {
        let error = job.get("error").and_then(Value::as_i64).unwrap_or(0);
        if error != 0 {
            let msg = std::io::Error::from_raw_os_error(error as i32);
            return Err(format!("fio reported error {error} ({msg})"));
        }
        for dir in ["read", "write"] {
            let Some(d) = job.get(dir) else { continue };
            let f = |key: &str| d.get(key).and_then(Value::as_f64).unwrap_or(0.0);
            let u = |key: &str| d.get(key).and_then(Value::as_u64).unwrap_or(0);
            let total = u("total_ios");
            if dir == "read" {
                result.read_iops += f("iops");
                result.read_bw_bytes += f("bw_bytes");
            } else {
                result.write_iops += f("iops");
                result.write_bw_bytes += f("bw_bytes");
            }
            result.io_bytes += u("io_bytes");
            result.runtime_ms = result.runtime_ms.max(u("runtime"));
            if total > 0 {
                let clat = d.get("clat_ns");
                let mean = clat
                    .and_then(|c| c.get("mean"))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                lat_sum += mean * total as f64;
                ios += total;
                let p99 = clat
                    .and_then(|c| c.get("percentile"))
                    .and_then(|p| p.get("99.000000"))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                result.clat_p99_us = result.clat_p99_us.max(p99 / 1e3);
            }
        }
    }
    if ios > 0 {
        result.clat_mean_us = lat_sum / ios as f64 / 1e3;
    }
    if result.io_bytes == 0 {
        return Err("fio moved no data".to_string());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "randrw-4k-mmapbuf",
      "error" : 0,
      "read" : { "io_bytes" : 4096000, "bw_bytes" : 2048000, "iops" : 500.0, "runtime" : 2000,
                 "total_ios" : 1000,
                 "clat_ns" : { "mean" : 2000.0, "percentile" : { "99.000000" : 8000 } } },
      "write" : { "io_bytes" : 8192000, "bw_bytes" : 4096000, "iops" : 1000.0, "runtime" : 2001,
                  "total_ios" : 3000,
                  "clat_ns" : { "mean" : 4000.0, "percentile" : { "99.000000" : 12000 } } }
    }
  ]
}"#;

    #[test]
    fn parses_read_and_write() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.iops(), 1500.0);
        assert_eq!(r.bandwidth(), 6_144_000.0);
        assert_eq!(r.io_bytes, 12_288_000);
        assert_eq!(r.runtime_ms, 2001);
        assert!((r.clat_mean_us - 3.5).abs() < 1e-9);
        assert_eq!(r.clat_p99_us, 12.0);
    }

    #[test]
    fn reports_errors() {
        let failed = SAMPLE.replace("\"error\" : 0", "\"error\" : 14");
        assert!(parse(&failed).unwrap_err().contains("error 14"));
        assert!(parse("fio: no such file").is_err());
        assert!(parse("{\"jobs\": []}").is_err());
    }

    #[test]
    fn runtime_in_ms() {
        assert_eq!(fio_time(Duration::from_secs(5)), "5000ms");
        assert_eq!(fio_time(Duration::from_millis(1500)), "1500ms");
    }
}
