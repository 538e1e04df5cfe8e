//! The fast path under concurrency: several threads reading and writing overlapping and
//! disjoint ranges of the same and of different files through the mount, checked against a
//! model, in both modes; then a remount must give back exactly the model.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Barrier};

use pfnfs_tests::{Mode, MountGuard, all_transports, read_all};
use rand::{Rng, SeedableRng, rngs::StdRng};

const THREADS: usize = 4;
const FILES: usize = 3;
/// Each thread owns the blocks `b` of every file with `b % THREADS == thread`.
const BLOCK: usize = 8192;
const BLOCKS: usize = 64;
const FILE_BYTES: usize = BLOCK * BLOCKS;
const OPS: usize = 400;

/// The byte a thread writes at `pos` in write number `version`.
fn byte(thread: usize, version: usize, pos: usize) -> u8 {
    (thread as u8).wrapping_mul(61)
        ^ (version as u8).wrapping_mul(17)
        ^ (pos as u8).wrapping_mul(7)
        ^ 0x5a
}

fn worker(
    dir: std::path::PathBuf,
    thread: usize,
    barrier: Arc<Barrier>,
    direct: bool,
) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0xC0FFEE + thread as u64);
    let files: Vec<_> = (0..FILES)
        .map(|i| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(format!("f{i}")))
                .unwrap()
        })
        .collect();
    // What this thread's blocks must hold (other threads' bytes are left unmodelled).
    let mut model = vec![vec![0u8; FILE_BYTES]; FILES];
    barrier.wait();
    for version in 1..=OPS {
        let f = rng.random_range(0..FILES);
        // Our blocks, never the last one (shared by everybody, see below).
        let block = rng.random_range(0..(BLOCKS - 1 - thread).div_ceil(THREADS)) * THREADS + thread;
        match rng.random_range(0..10) {
            0..=5 => {
                // An unaligned write inside one of our blocks.
                let start = rng.random_range(0..BLOCK - 1);
                let len = rng.random_range(1..=BLOCK - start);
                let at = block * BLOCK + start;
                let data: Vec<u8> = (at..at + len).map(|p| byte(thread, version, p)).collect();
                files[f].write_all_at(&data, at as u64).unwrap();
                model[f][at..at + len].copy_from_slice(&data);
                let mut back = vec![0u8; len];
                files[f].read_exact_at(&mut back, at as u64).unwrap();
                assert_eq!(
                    back, data,
                    "thread {thread}: read-back after write, file f{f} at {at}"
                );
            }
            6..=8 => {
                // A large read across everybody's blocks: ours must match the model.
                let start = rng.random_range(0..FILE_BYTES / 2);
                let len = rng.random_range(1..FILE_BYTES - start);
                let mut buf = vec![0u8; len];
                files[f].read_exact_at(&mut buf, start as u64).unwrap();
                for (i, b) in buf.iter().enumerate() {
                    let p = start + i;
                    if (p / BLOCK) % THREADS == thread && p < (BLOCKS - 1) * BLOCK {
                        assert_eq!(
                            *b, model[f][p],
                            "thread {thread}: file f{f} byte {p} in a wide read"
                        );
                    }
                }
            }
            _ => {
                // Overlapping whole-block writes to a shared block (the last block of the
                // file): each request is atomic in direct mode, so a reader sees one pattern.
                let at = (BLOCKS - 1) * BLOCK;
                let data = vec![(thread * 16 + version % 16) as u8; BLOCK];
                files[f].write_all_at(&data, at as u64).unwrap();
                if direct {
                    let mut buf = vec![0u8; BLOCK];
                    files[f].read_exact_at(&mut buf, at as u64).unwrap();
                    assert!(
                        buf.iter().all(|b| *b == buf[0]),
                        "thread {thread}: torn block in f{f}"
                    );
                }
            }
        }
    }
    model
}

// `f` indexes the file in every thread's model at once.
#[allow(clippy::needless_range_loop)]
fn parallel_io_matches_model(m: &mut MountGuard) {
    for i in 0..FILES {
        std::fs::write(m.join(format!("f{i}")), vec![0u8; FILE_BYTES]).unwrap();
    }
    let barrier = Arc::new(Barrier::new(THREADS));
    let direct = m.mode() == Mode::Direct;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let dir = m.path().to_path_buf();
            let barrier = barrier.clone();
            std::thread::spawn(move || worker(dir, t, barrier, direct))
        })
        .collect();
    let models: Vec<Vec<Vec<u8>>> = handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .collect();
    let check = |m: &MountGuard, when: &str| {
        for f in 0..FILES {
            let got = read_all(&m.join(format!("f{f}")));
            assert_eq!(got.len(), FILE_BYTES, "{when}: size of f{f}");
            for (p, b) in got.iter().enumerate().take((BLOCKS - 1) * BLOCK) {
                let owner = (p / BLOCK) % THREADS;
                assert_eq!(
                    *b, models[owner][f][p],
                    "{when}: f{f} byte {p} (thread {owner}'s)"
                );
            }
        }
    };
    check(m, "after the run");
    m.remount();
    check(m, "after remount");
}

/// Different files, each written by its own thread with appends and truncates, while other
/// threads create and delete files next to them.
fn parallel_files_with_namespace_churn(m: &mut MountGuard) {
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let dir = m.path().to_path_buf();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(7 + t as u64);
                let path = dir.join(format!("own{t}"));
                let mut model: Vec<u8> = Vec::new();
                for i in 0..300usize {
                    match rng.random_range(0..8) {
                        0..=4 => {
                            let len = rng.random_range(1..20_000);
                            let chunk: Vec<u8> = (0..len).map(|k| (k * 3 + i + t) as u8).collect();
                            let f = OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(&path)
                                .unwrap();
                            f.write_all_at(&chunk, 0).ok(); // O_APPEND: offset ignored
                            model.extend_from_slice(&chunk);
                        }
                        5 => {
                            let keep = rng.random_range(0..=model.len());
                            OpenOptions::new()
                                .create(true)
                                .write(true)
                                .truncate(false)
                                .open(&path)
                                .unwrap()
                                .set_len(keep as u64)
                                .unwrap();
                            model.truncate(keep);
                        }
                        _ => {
                            let tmp = dir.join(format!("tmp{t}-{i}"));
                            std::fs::write(&tmp, vec![t as u8; 5000]).unwrap();
                            std::fs::rename(&tmp, dir.join(format!("moved{t}"))).unwrap();
                            if i % 3 == 0 {
                                std::fs::remove_file(dir.join(format!("moved{t}"))).unwrap();
                            }
                        }
                    }
                }
                (path, model)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .collect();
    for (path, model) in &results {
        assert_eq!(&read_all(path), model, "{}", path.display());
    }
    m.remount();
    for (path, model) in &results {
        assert_eq!(&read_all(path), model, "{} after remount", path.display());
    }
}

all_transports!(
    parallel_io_matches_model,
    parallel_files_with_namespace_churn
);
