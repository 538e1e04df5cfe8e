//! `pfnfs-fsx`: see the crate documentation and `pfnfs-fsx --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pfnfs_exerciser::{fsx, stress};

/// Seeded random file operations checked against an in-memory model (`pfnfs-fsx DIR`), or a
/// multi-process namespace stress run (`pfnfs-fsx stress DIR`).
#[derive(Parser, Debug)]
#[command(name = "pfnfs-fsx", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    fsx: Option<FsxArgs>,
}

#[derive(Args, Debug)]
struct FsxArgs {
    /// Directory to create the files `fsx.0`, `fsx.1`, ... in.
    dir: PathBuf,
    /// Seed of every choice; the same seed and options replay the same operations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of operations.
    #[arg(long, default_value_t = 10_000)]
    ops: u64,
    /// Largest size a file reaches, bytes.
    #[arg(long, default_value_t = 8 << 20)]
    file_size_max: u64,
    /// Largest single read, write or copy, bytes.
    #[arg(long, default_value_t = (1 << 20) + (64 << 10))]
    io_max: u64,
    /// Number of files (copy_file_range also copies between them).
    #[arg(long, default_value_t = 2)]
    files: usize,
    /// Operation weights over the defaults, e.g. `mapread=0,mapwrite=0,copy=20`. Names:
    /// read write mapread mapwrite truncate falloc falloc_keep punch zero zero_keep collapse
    /// insert copy reopen fsync seek verify.
    #[arg(long, default_value = "")]
    mix: String,
    /// Half the reopens use O_DIRECT (unaligned I/O then goes through it: FUSE and tmpfs
    /// accept that, most disk filesystems do not).
    #[arg(long)]
    odirect: bool,
    /// Print a progress line to stderr every N operations.
    #[arg(long, default_value_t = 0)]
    progress: u64,
    /// Print every operation.
    #[arg(long, short)]
    verbose: bool,
    /// Start from the models saved by `--model-out` (the files must hold exactly them).
    #[arg(long)]
    resume_from: Option<PathBuf>,
    /// Save each file's final model in this directory.
    #[arg(long)]
    model_out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Worker processes creating, writing, truncating, linking, renaming and unlinking in
    /// shared directories; then the tree is checked against their reports. Prints a JSON
    /// summary.
    Stress {
        /// Directory to work in (must be empty).
        dir: PathBuf,
        /// Worker processes.
        #[arg(long, default_value_t = 4)]
        procs: usize,
        /// How long the workers run, seconds.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Seed (worker i uses seed + i).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Shared directories.
        #[arg(long, default_value_t = 3)]
        shared_dirs: usize,
        /// Save the expected tree (JSON) for `stress-check`.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Checks a stress directory against a tree saved by `stress --save` (e.g. after a
    /// remount).
    StressCheck {
        /// The stress directory.
        dir: PathBuf,
        /// The saved expected tree.
        saved: PathBuf,
    },
    /// One worker of `stress` (started by it).
    #[command(hide = true)]
    StressWorker {
        dir: PathBuf,
        #[arg(long)]
        id: usize,
        #[arg(long)]
        shared_dirs: usize,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        seconds: f64,
    },
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.fsx) {
        (
            Some(Cmd::Stress {
                dir,
                procs,
                seconds,
                seed,
                shared_dirs,
                save,
            }),
            _,
        ) => {
            let cfg = stress::StressConfig {
                dir,
                procs,
                seconds,
                seed,
                shared_dirs,
            };
            match stress::run(&cfg, save.as_deref()) {
                Ok(s) => {
                    println!("{}", json(&s));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pfnfs-fsx stress: FAILED (seed {seed}): {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(Cmd::StressCheck { dir, saved }), _) => match stress::check_saved(&dir, &saved) {
            Ok(c) => {
                println!("{}", json(&c));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pfnfs-fsx stress-check: FAILED: {e}");
                ExitCode::FAILURE
            }
        },
        (
            Some(Cmd::StressWorker {
                dir,
                id,
                shared_dirs,
                seed,
                seconds,
            }),
            _,
        ) => match stress::worker(&dir, id, shared_dirs, seed, seconds) {
            Ok(r) => {
                println!("{}", json(&r));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        (None, Some(a)) => {
            let mix = match fsx::parse_mix(&a.mix) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("pfnfs-fsx: --mix: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut cfg = fsx::Config::new(a.dir, a.seed);
            cfg.ops = a.ops;
            cfg.file_size_max = a.file_size_max;
            cfg.io_max = a.io_max;
            cfg.files = a.files;
            cfg.mix = mix;
            cfg.odirect = a.odirect;
            cfg.progress = a.progress;
            cfg.verbose = a.verbose;
            cfg.resume_from = a.resume_from;
            cfg.model_out = a.model_out;
            match fsx::Fsx::new(cfg).and_then(fsx::Fsx::run) {
                Ok(summary) => {
                    println!("{}", json(&summary));
                    ExitCode::SUCCESS
                }
                Err(failure) => {
                    eprint!("{failure}");
                    ExitCode::FAILURE
                }
            }
        }
        (None, None) => {
            eprintln!("pfnfs-fsx: give a directory (pfnfs-fsx --help)");
            ExitCode::from(2)
        }
    }
}
