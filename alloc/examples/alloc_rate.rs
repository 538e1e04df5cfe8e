//! Allocation rate and RAM per free extent of the extent allocator.
//!
//! `cargo run --release -p pfnfs-alloc --example alloc_rate`
//!
//! Each workload keeps a window of live allocations per thread: once the window is full, every
//! allocation is preceded by a free of the oldest one, so the pool never fills and every
//! figure counts one allocate plus one free. RAM per free extent is measured as the growth of
//! the resident set while an allocator holding a million one-frame free extents is built.

use std::collections::VecDeque;
use std::time::Instant;

use pfnfs_alloc::{ExtentAllocator, Pfn, PfnRange};

/// A 4 GiB data region starting where a 16 GiB pool's data region would (2 MiB-aligned).
const REGION: PfnRange = PfnRange {
    start: Pfn(16_896),
    len: 1 << 20,
};
/// Live allocations kept per thread.
const WINDOW: usize = 4096;

/// CPU time this thread has run, in nanoseconds (first field of /proc/thread-self/schedstat;
/// 0 where that file does not exist).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Runs `ops` allocations of `frames` frames (with `goal`s continuing the previous one when
/// `appending`) on one thread; returns how many succeeded and the CPU time spent.
fn churn(a: &ExtentAllocator, frames: u64, ops: usize, appending: bool) -> (usize, u64) {
    let cpu0 = thread_cpu_ns();
    // At most 1/8 of the region live per thread.
    let window = WINDOW.min((REGION.len / 8 / frames) as usize).max(1);
    let mut live: VecDeque<PfnRange> = VecDeque::with_capacity(window + 64);
    let mut done = 0;
    for _ in 0..ops {
        while live.len() >= window {
            let x = live.pop_front().expect("window not empty");
            a.free(x).expect("free of a live range");
        }
        let goal = if appending {
            live.back().map(|x| x.end())
        } else {
            None
        };
        let got = a
            .allocate(frames, goal)
            .map(pfnfs_alloc::Frames::into_ranges)
            .expect("the window never fills the pool");
        done += 1;
        live.extend(got);
    }
    for x in live {
        a.free(x).expect("free of a live range");
    }
    (done, thread_cpu_ns().saturating_sub(cpu0))
}

/// Allocations per wall-clock second and per CPU-second, both summed over the threads.
#[derive(Clone, Copy, Default)]
struct Rate {
    wall: f64,
    cpu: f64,
}

/// How the threads share allocators.
#[derive(Clone, Copy)]
enum Setup {
    /// One allocator, default groups: each thread has its own home group.
    Groups,
    /// One allocator with a single group: every thread contends for one lock.
    OneGroup,
    /// One allocator per thread, nothing shared: the machine's ceiling for the workload.
    Private,
}

/// Best of [`RUNS`] runs: the machine may be shared, and the best run is the least disturbed.
fn rate(threads: usize, frames: u64, ops: usize, appending: bool, setup: Setup) -> Rate {
    (0..RUNS)
        .map(|_| rate_once(threads, frames, ops, appending, setup))
        .fold(Rate::default(), |a, b| Rate {
            wall: a.wall.max(b.wall),
            cpu: a.cpu.max(b.cpu),
        })
}

/// Runs per figure.
const RUNS: usize = 3;

fn rate_once(threads: usize, frames: u64, ops: usize, appending: bool, setup: Setup) -> Rate {
    let make = || match setup {
        Setup::OneGroup => ExtentAllocator::new_empty_with_group_frames(REGION, REGION.len),
        Setup::Groups | Setup::Private => ExtentAllocator::new_empty(REGION),
    };
    let count = if matches!(setup, Setup::Private) {
        threads
    } else {
        1
    };
    let allocators: Vec<ExtentAllocator> = (0..count).map(|_| make()).collect();
    let t0 = Instant::now();
    let (total, cpu_ns) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let a = &allocators[t % count];
                s.spawn(move || churn(a, frames, ops, appending))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .fold((0usize, 0u64), |(n, c), (dn, dc)| (n + dn, c + dc))
    });
    let secs = t0.elapsed().as_secs_f64();
    for a in &allocators {
        a.check_consistency().expect("consistent after the run");
        assert_eq!(a.free_frames(), REGION.len);
    }
    Rate {
        wall: total as f64 / secs,
        cpu: if cpu_ns == 0 {
            0.0
        } else {
            total as f64 / (cpu_ns as f64 / 1e9)
        },
    }
}

/// How much faster two threads run a lock-free CPU loop than one: about 2.0 on an idle
/// machine with two free cores, about 1.0 when the machine is busy. Read the two-thread
/// allocation figures against it.
fn cpu_parallelism() -> f64 {
    fn spin(iters: u64) -> u64 {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..iters {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x
    }
    let iters = 200_000_000;
    let best = |threads: u64| -> f64 {
        (0..RUNS)
            .map(|_| {
                let t0 = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| std::hint::black_box(spin(std::hint::black_box(iters))));
                    }
                });
                (threads * iters) as f64 / t0.elapsed().as_secs_f64()
            })
            .fold(0.0, f64::max)
    };
    best(2) / best(1)
}

/// Resident set size in bytes, from /proc/self/status (0 where that file does not exist).
fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    if let Some(mode) = std::env::args().nth(1) {
        measure_rss(&mode);
        return;
    }
    let ops = 1_000_000;
    println!(
        "extent allocator, data region {} frames ({} GiB), window {} live allocations per \
         thread (at most 1/8 of the region)",
        REGION.len,
        REGION.len_bytes() >> 30,
        WINDOW
    );
    let probe = ExtentAllocator::new_empty(REGION);
    println!(
        "default groups: {} x {} frames\n",
        probe.group_count(),
        probe.group_frames()
    );
    drop(probe);

    println!(
        "parallelism available to this run (2-thread / 1-thread rate of a pure CPU loop): {:.2}",
        cpu_parallelism()
    );
    println!(
        "best of {RUNS} runs; /s = allocations per wall-clock second, /CPU-s = per second of CPU \
         time the threads ran (unaffected by waiting for a core on a busy machine; drops when \
         threads contend), both summed over the threads"
    );
    println!(
        "{:<46} {:>11} {:>11} {:>11} {:>11}",
        "workload (allocate + free)", "1 thr /s", "2 thr /s", "1 thr /CPU-s", "2 thr /CPU-s"
    );
    let cases: [(&str, u64, bool, Setup); 8] = [
        ("1 frame, no goal", 1, false, Setup::Groups),
        ("16 frames, no goal", 16, false, Setup::Groups),
        ("16 frames, goal = end of previous", 16, true, Setup::Groups),
        (
            "512 frames (2 MiB, aligned), no goal",
            512,
            false,
            Setup::Groups,
        ),
        (
            "1 frame, ONE group (shared lock)",
            1,
            false,
            Setup::OneGroup,
        ),
        (
            "16 frames, ONE group (shared lock)",
            16,
            false,
            Setup::OneGroup,
        ),
        (
            "1 frame, one allocator per thread (ceiling)",
            1,
            false,
            Setup::Private,
        ),
        (
            "16 frames, one allocator per thread (ceiling)",
            16,
            false,
            Setup::Private,
        ),
    ];
    for (name, frames, appending, setup) in cases {
        let n = if frames >= 512 { ops / 20 } else { ops };
        let one = rate(1, frames, n, appending, setup);
        let two = rate(2, frames, n, appending, setup);
        println!(
            "{name:<46} {:>11.0} {:>11.0} {:>11.0} {:>11.0}",
            one.wall, two.wall, one.cpu, two.cpu
        );
    }

    // RAM per free extent, each way of building measured in a fresh process so that memory
    // freed by one measurement cannot hide the next one's growth.
    let payload = 2 * std::mem::size_of::<(u64, u64)>();
    println!(
        "\nRAM per free extent ({RAM_EXTENTS} one-frame free extents; payload {payload} B = \
         BTreeMap<u64,u64> entry + BTreeSet<(u64,u64)> entry):"
    );
    for (mode, what) in [
        (
            "rss-load",
            "loaded (from_free_extents / decode_free_set, bulk-built)",
        ),
        ("rss-churn", "fragmented by reserve() one extent at a time"),
    ] {
        let exe = std::env::current_exe().expect("own path");
        let out = std::process::Command::new(exe)
            .arg(mode)
            .output()
            .expect("run self");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("  {what:<60} {} B measured", text.trim());
    }
    let region = ram_region();
    let built = build_loaded(region);
    let t0 = Instant::now();
    let image = built.encode_free_set();
    let enc = t0.elapsed();
    drop(built);
    let t0 = Instant::now();
    let back = ExtentAllocator::decode_free_set(region, &image).expect("own image decodes");
    let dec = t0.elapsed();
    assert_eq!(back.stats().free_extents, RAM_EXTENTS);
    println!(
        "free-set image of {RAM_EXTENTS} extents: {} bytes, encode {:.1} ms, \
         decode + rebuild {:.1} ms",
        image.len(),
        enc.as_secs_f64() * 1e3,
        dec.as_secs_f64() * 1e3
    );
}

/// Free extents in the RAM measurement: every other frame of a 2^21-frame region.
const RAM_EXTENTS: u64 = 1 << 20;

fn ram_region() -> PfnRange {
    PfnRange {
        start: Pfn(16_896),
        len: 2 * RAM_EXTENTS,
    }
}

fn build_loaded(region: PfnRange) -> ExtentAllocator {
    ExtentAllocator::from_free_extents(
        region,
        (0..RAM_EXTENTS).map(|i| PfnRange {
            start: Pfn(region.start.0 + 2 * i),
            len: 1,
        }),
    )
    .expect("disjoint extents")
}

/// Child process: prints the resident-set growth per free extent for one way of building.
fn measure_rss(mode: &str) {
    let region = ram_region();
    let before = rss_bytes();
    let a = match mode {
        "rss-load" => build_loaded(region),
        _ => {
            let a = ExtentAllocator::new_empty(region);
            for i in 0..RAM_EXTENTS {
                let busy = PfnRange {
                    start: Pfn(region.start.0 + 2 * i + 1),
                    len: 1,
                };
                a.reserve(busy).expect("free frame");
            }
            a
        }
    };
    let after = rss_bytes();
    assert_eq!(a.stats().free_extents, RAM_EXTENTS);
    println!(
        "{:.1}",
        after.saturating_sub(before) as f64 / RAM_EXTENTS as f64
    );
}
