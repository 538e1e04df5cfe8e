//! Where the daemon's threads run, so that a request and its reply stay on one CPU.
//!
//! Why: on a VM whose idle vCPUs halt, waking a thread on another vCPU costs several
//! microseconds, more than pfnfs spends on a 4 KiB request. Two things send a small
//! request across CPUs. (1) The kernel wakes whichever worker waits on `/dev/fuse`, which
//! may sit on the other CPU: each worker is pinned to its own CPU. (2) When a worker writes
//! a reply it is still running, so the scheduler moves the woken requester to an idle CPU
//! and the next request starts over there. Workers therefore run as SCHED_IDLE: a CPU
//! running only SCHED_IDLE threads counts as idle, so the requester is woken where it slept
//! and preempts the worker at once.
//!
//! The price of SCHED_IDLE is that a worker sharing its CPU with a busy normal thread would
//! get almost no time (weight 3 against 1024): a request could wait a second. A watchdog
//! (a normal thread) reads each worker's `schedstat` every 10 ms; a worker that was runnable
//! but did not run for a whole period, or waited more than 2 ms in it at over 0.5 ms a
//! turn, is put back to SCHED_OTHER until its CPU has been quiet for 100 ms. Lowering the
//! worker only around each reply, which needs no watchdog, was measured and rejected: the
//! two extra system calls per request and the preemptions they cause cost more than they
//! save.
//!
//! The figures (fio, 4 KiB random reads, `direct=1`: 60-70k requests per second with
//! unpinned normal workers, 139-146k pinned and SCHED_IDLE at one job) and the rejected
//! variant's are in `docs/DESIGN.md` section 5.10, the one place they are kept.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use thread_priority::{
    NormalThreadSchedulePolicy, ThreadId, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};

/// How often the watchdog looks.
const PERIOD: Duration = Duration::from_millis(10);
/// Run-queue wait per period above which a worker may count as starved.
const STARVED: Duration = Duration::from_millis(2);
/// How long a starved worker keeps normal priority after its CPU was last contended.
const CALM: Duration = Duration::from_millis(100);

static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);
static WORKERS: Mutex<Vec<Worker>> = Mutex::new(Vec::new());
static WATCHDOG: Once = Once::new();

/// A registered worker thread, as the watchdog sees it.
#[derive(Debug)]
struct Worker {
    tid: i32,
    thread: ThreadId,
    /// `schedstat` at the last look.
    last: SchedStat,
    /// Put back to SCHED_OTHER; when the CPU was last seen contended.
    boosted: Option<Instant>,
}

/// Unregisters the thread when it exits (its thread-local is dropped before the thread
/// ends, so the watchdog never touches a thread that is gone: it holds the same lock).
#[derive(Debug)]
struct Registration {
    tid: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut workers = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
        workers.retain(|w| w.tid != self.tid);
    }
}

thread_local! {
    static REGISTERED: RefCell<Option<Registration>> = const { RefCell::new(None) };
}

/// Makes the calling thread a request worker, once per thread: pinned to `cpu` (or the
/// next CPU of this process, round robin) and SCHED_IDLE under the watchdog. Failures are
/// logged and leave the thread as it was.
pub(crate) fn become_worker(cpu: Option<usize>) {
    if REGISTERED.with(|r| r.borrow().is_some()) {
        return;
    }
    let tid = nix::unistd::gettid().as_raw();
    REGISTERED.with(|r| *r.borrow_mut() = Some(Registration { tid }));
    if let Some(cpu) = cpu.or_else(next_cpu) {
        let mut set = nix::sched::CpuSet::new();
        if set.set(cpu).is_ok()
            && let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        {
            tracing::debug!("cannot pin a FUSE worker to CPU {cpu}: {e}");
        }
    }
    let thread = thread_native_id();
    if !set_policy(thread, NormalThreadSchedulePolicy::Idle) {
        tracing::debug!("cannot make a FUSE worker SCHED_IDLE");
        return;
    }
    WORKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Worker {
            tid,
            thread,
            last: sched_stat(tid).unwrap_or_default(),
            boosted: None,
        });
    WATCHDOG.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("pfnfs-watchdog".into())
            .spawn(watchdog);
        if let Err(e) = spawned {
            tracing::warn!("cannot start the worker watchdog: {e}");
        }
    });
}

/// The next CPU this process may use, round robin; None with fewer than two.
fn next_cpu() -> Option<usize> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    (cpus.len() >= 2).then(|| cpus[NEXT_CPU.fetch_add(1, Ordering::Relaxed) % cpus.len()])
}

fn set_policy(thread: ThreadId, policy: NormalThreadSchedulePolicy) -> bool {
    set_thread_priority_and_policy(
        thread,
        // For the normal policies "Min" is static priority 0 and nice 0.
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(policy),
    )
    .is_ok()
}

/// A thread's `/proc/.../schedstat`: time on a CPU, time waiting for one (both ns), and
/// how many times it got one; plus whether it is runnable now.
#[derive(Debug, Default, Clone, Copy)]
struct SchedStat {
    run_ns: u64,
    wait_ns: u64,
    slices: u64,
    runnable: bool,
}

fn sched_stat(tid: i32) -> Option<SchedStat> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (run_ns, wait_ns, slices) = (f.next()??, f.next()??, f.next()??);
    // "TID (comm) S ...": the state follows the last ')'.
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    Some(SchedStat {
        run_ns,
        wait_ns,
        slices,
        runnable: state == 'R',
    })
}

/// Whether a worker went from `a` to `b` starved: runnable and not run at all since the
/// last look, or waiting long for each turn on its CPU. A worker preempted by the very
/// thread it just answered waits often but briefly (microseconds); that is the point of
/// SCHED_IDLE, not starvation.
fn starved(a: SchedStat, b: SchedStat) -> bool {
    let waited = b.wait_ns.saturating_sub(a.wait_ns);
    let turns = b.slices.saturating_sub(a.slices).max(1);
    (b.runnable && b.run_ns == a.run_ns && b.slices == a.slices)
        || (waited > STARVED.as_nanos() as u64 && waited / turns > 500_000)
}

fn watchdog() {
    // Threads inherit their creator's policy, and a worker (SCHED_IDLE) starts this one.
    if !set_policy(thread_native_id(), NormalThreadSchedulePolicy::Other) {
        tracing::warn!("the worker watchdog cannot run at normal priority");
    }
    loop {
        std::thread::sleep(PERIOD);
        let now = Instant::now();
        let mut workers = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
        for w in workers.iter_mut() {
            let Some(now_stat) = sched_stat(w.tid) else {
                continue;
            };
            let starved = starved(w.last, now_stat);
            w.last = now_stat;
            match w.boosted {
                _ if starved => {
                    if w.boosted.is_none() {
                        if !set_policy(w.thread, NormalThreadSchedulePolicy::Other) {
                            continue;
                        }
                        tracing::debug!(tid = w.tid, "FUSE worker starved: normal priority");
                    }
                    w.boosted = Some(now);
                }
                Some(since)
                    if now.duration_since(since) > CALM
                        && set_policy(w.thread, NormalThreadSchedulePolicy::Idle) =>
                {
                    w.boosted = None;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThreadSchedulePolicy {
        thread_priority::thread_schedule_policy().unwrap()
    }

    #[test]
    fn a_worker_is_pinned_idle_and_registered_once_and_unregistered_on_exit() {
        // Away from CPU 0, where the other test keeps a thread busy.
        let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        let tid = std::thread::spawn(move || {
            become_worker(Some(cpu));
            let first = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
            become_worker(Some(0));
            let second = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
            assert_eq!(first, second, "the second call changes nothing");
            assert!(first.is_set(cpu).unwrap());
            let tid = nix::unistd::gettid().as_raw();
            if WORKERS.lock().unwrap().iter().any(|w| w.tid == tid) {
                assert_eq!(
                    policy(),
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
                );
            }
            tid
        })
        .join()
        .unwrap();
        assert!(!WORKERS.lock().unwrap().iter().any(|w| w.tid == tid));
        // The watchdog, started by a worker, runs at normal priority. It names itself and
        // sets its policy once it runs, so look for a while.
        let policy = || -> Option<String> {
            let dog = std::fs::read_dir("/proc/self/task")
                .ok()?
                .map(|t| t.unwrap().path())
                .find(|t| {
                    std::fs::read_to_string(t.join("comm")).unwrap_or_default()
                        == "pfnfs-watchdog\n"
                })?;
            let sched = std::fs::read_to_string(dog.join("sched")).ok()?;
            Some(sched.lines().find(|l| l.starts_with("policy"))?.to_string())
        };
        let t0 = Instant::now();
        let mut seen = policy();
        while !seen
            .as_deref()
            .is_some_and(|p| p.trim_end().ends_with(" 0"))
            && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
            seen = policy();
        }
        let seen = seen.expect("the watchdog thread");
        assert!(seen.trim_end().ends_with(" 0"), "{seen}");
    }

    #[test]
    fn short_frequent_waits_are_not_starvation() {
        let a = SchedStat::default();
        // preempted 5,000 times in 10 ms by the thread it answers, 1 us each
        let busy = SchedStat {
            run_ns: 5_000_000,
            wait_ns: 5_000_000,
            slices: 5_000,
            runnable: true,
        };
        assert!(!starved(a, busy));
        // waited 8 ms for 2 turns
        let starving = SchedStat {
            run_ns: 100_000,
            wait_ns: 8_000_000,
            slices: 2,
            runnable: true,
        };
        assert!(starved(a, starving));
        // runnable and never ran
        let stuck = SchedStat {
            runnable: true,
            ..a
        };
        assert!(starved(a, stuck));
        // asleep and never ran: idle, not starved
        assert!(!starved(a, a));
    }

    #[test]
    fn a_starved_worker_gets_normal_priority_back() {
        // A SCHED_IDLE worker and a normal busy thread pinned to one CPU: the watchdog must
        // lift the worker within a few periods, or it would barely run.
        // The busy thread starts only once the worker is SCHED_IDLE (else the watchdog could
        // lift the worker before it is checked).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (idle_tx, idle_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            become_worker(Some(0));
            assert_eq!(
                policy(),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
                "the worker must start SCHED_IDLE"
            );
            idle_tx.send(()).unwrap();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if policy() == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other) {
                    return Some(t0.elapsed());
                }
                // Yield the CPU often, as a worker waiting for requests does.
                std::thread::sleep(Duration::from_micros(200));
            }
            None
        });
        idle_rx.recv().unwrap();
        let hog = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(0).unwrap();
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let lifted = worker.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        hog.join().unwrap();
        let lifted = lifted.expect("the watchdog never lifted a starved worker");
        assert!(lifted < Duration::from_secs(2), "{lifted:?}");
    }
}
