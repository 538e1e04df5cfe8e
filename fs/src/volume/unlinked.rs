//! Inodes whose last name is gone but whose room is not yet free, because the kernel still
//! holds them.
//!
//! Why this exists: an inode unlinked while the kernel holds a lookup reference (it always
//! does right after a path operation) is reclaimed only when FORGET arrives, and the kernel
//! sends FORGET asynchronously, after the unlink's reply. On a full pool, `rm big; touch new`
//! then races: the create can be answered by another worker before the FORGET that frees
//! `big` has been processed, and fails with ENOSPC although, for the user, the room was
//! freed. A worker that is descheduled at the wrong moment widens the window to tens of
//! milliseconds. An operation about to fail for lack of room therefore waits, briefly, for
//! the reclaims of inodes that lost their last name or handle a moment ago
//! ([`UnlinkedInodes::await_reclaims`]); one the kernel keeps for long (a deleted directory
//! still someone's cwd) stops counting after [`RECENT`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long after losing its last name or open handle an inode is expected to be forgotten
/// by the kernel soon.
pub(super) const RECENT: Duration = Duration::from_secs(1);

/// Longest an operation short of room waits for pending reclaims.
pub(super) const WAIT: Duration = Duration::from_millis(250);

/// Entries kept before old ones are first dropped.
const PRUNE_AT: usize = 4096;

/// Unlinked inodes still referenced by the kernel, each with the time it last lost a name or
/// an open handle.
#[derive(Debug, Default)]
pub(super) struct UnlinkedInodes {
    state: Mutex<State>,
    reclaimed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    since: HashMap<u64, Instant>,
    /// Counts reclaims, so a waiter sees one that happened while it was not holding the lock.
    reclaims: u64,
    /// Size of `since` at which `touch` next drops old entries.
    prune_at: usize,
}

impl UnlinkedInodes {
    /// `ino` lost its last name (or its last open handle) now and waits for the kernel.
    pub(super) fn touch(&self, ino: u64) {
        let mut state = self.state.lock();
        let now = Instant::now();
        // Entries past RECENT no longer make anyone wait: drop them now and then (also
        // those of inodes reclaimed between a release and its touch). The next pass comes
        // only once the table has doubled, so a burst of recent entries costs O(1) each.
        if state.since.len() >= state.prune_at.max(PRUNE_AT) {
            state.since.retain(|_, t| now.duration_since(*t) < RECENT);
            state.prune_at = 2 * state.since.len();
        }
        state.since.insert(ino, now);
    }

    /// `ino` was reclaimed.
    pub(super) fn reclaimed(&self, ino: u64) {
        let mut state = self.state.lock();
        if state.since.remove(&ino).is_some() {
            state.reclaims += 1;
            self.reclaimed.notify_all();
        }
    }

    /// Waits, for at most [`WAIT`], until no inode that lost its last name or handle within
    /// [`RECENT`] and satisfies `awaits_forget` (no open handle: only a FORGET can free it) is
    /// left. Returns true if at least one reclaim happened meanwhile. `awaits_forget` is
    /// called without the lock held (it looks at the inode table).
    pub(super) fn await_reclaims(&self, awaits_forget: impl Fn(u64) -> bool) -> bool {
        let deadline = Instant::now() + WAIT;
        let start = self.state.lock().reclaims;
        loop {
            let (candidates, seen) = {
                let state = self.state.lock();
                let now = Instant::now();
                let recent: Vec<u64> = state
                    .since
                    .iter()
                    .filter(|(_, t)| now.duration_since(**t) < RECENT)
                    .map(|(ino, _)| *ino)
                    .collect();
                (recent, state.reclaims)
            };
            if !candidates.into_iter().any(&awaits_forget) || Instant::now() >= deadline {
                return self.state.lock().reclaims != start;
            }
            let mut state = self.state.lock();
            if state.reclaims == seen {
                self.reclaimed.wait_until(&mut state, deadline);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn waits_for_a_reclaim_that_comes_late() {
        let u = Arc::new(UnlinkedInodes::default());
        u.touch(7);
        let other = Arc::clone(&u);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(40));
            other.reclaimed(7);
        });
        let start = Instant::now();
        assert!(u.await_reclaims(|_| true));
        let waited = start.elapsed();
        t.join().unwrap();
        assert!(waited >= Duration::from_millis(35), "{waited:?}");
        assert!(waited < WAIT, "{waited:?}");
    }

    #[test]
    fn gives_up_after_the_wait_and_ignores_open_or_old_inodes() {
        let u = UnlinkedInodes::default();
        u.touch(1);
        let start = Instant::now();
        assert!(!u.await_reclaims(|_| true));
        assert!(start.elapsed() >= WAIT);
        // An inode still open is freed by its release, not a FORGET: no wait.
        let start = Instant::now();
        assert!(!u.await_reclaims(|_| false));
        assert!(start.elapsed() < WAIT / 2);
        // One the kernel has kept for longer than RECENT: no wait either.
        u.state.lock().since.insert(2, Instant::now() - RECENT);
        u.state.lock().since.remove(&1);
        let start = Instant::now();
        assert!(!u.await_reclaims(|_| true));
        assert!(start.elapsed() < WAIT / 2);
        // Old entries go once there are many.
        for ino in 100..100 + PRUNE_AT as u64 {
            u.state.lock().since.insert(ino, Instant::now() - RECENT);
        }
        u.touch(5);
        assert_eq!(u.state.lock().since.len(), 1);
        // Recent entries survive a pass, and the next pass waits for the table to double.
        for ino in 0..PRUNE_AT as u64 + 1 {
            u.touch(10_000 + ino);
        }
        assert_eq!(u.state.lock().since.len(), PRUNE_AT + 2);
        assert_eq!(u.state.lock().prune_at, 2 * PRUNE_AT);
        // Nothing pending: no wait.
        let empty = UnlinkedInodes::default();
        assert!(!empty.await_reclaims(|_| true));
    }
}
