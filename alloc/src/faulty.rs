//! [`FaultyBackend`]: a backend that fails chosen persist points, for tests of what a failed
//! persist does.
//!
//! It passes every call to the backend it wraps (usually a [`crate::CrashSimBackend`], so that
//! a test can also look at what is durable) until a [`Fault`] is armed. Then the next
//! `count` persist points that match the fault return the fault's errno, exactly as an
//! `msync` or a flush the OS reports failed would (`std::io::Error::from_raw_os_error`):
//!
//! - `persist(range)` matches if the fault has no range or its range overlaps;
//! - `fence()` (a persist point with no range: the data path's) matches only a fault with no
//!   range.
//!
//! [`FaultyBackend::lose`] simulates memory that is gone (a media error, a pool file's storage
//! taken away): accesses to the range return [`MediaError`] as the memory backends do when
//! [`crate::guarded`] catches a SIGBUS.
//!
//! Whether the failed point's stores still reach the medium is the fault's `reached`: `true`
//! passes the call on and then reports the failure (the write-back happened, its report
//! failed), `false` reports the failure without passing it on (the stores stay where the
//! wrapped backend has them: in a crash simulator, not durable). Both are what a real failed
//! persist may have done, and the filesystem must be right in either case.

use std::fmt::Debug;
use std::ops::Range;

use parking_lot::Mutex;

use crate::backend::{MediaError, PoolBackend};

/// Which persist points fail, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The errno the failures report (e.g. `libc::EIO`, `libc::ENOSPC`).
    pub errno: i32,
    /// Only persists of byte ranges overlapping this one fail (`fence` never matches). `None`:
    /// every persist and every fence.
    pub range: Option<Range<u64>>,
    /// How many matching persist points fail; then the fault is spent.
    pub count: u64,
    /// The failed point's stores still reach the wrapped backend's medium.
    pub reached: bool,
}

/// A backend wrapping `B` that fails the persist points an armed [`Fault`] selects. See the
/// module docs.
pub struct FaultyBackend<B> {
    inner: B,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    fault: Option<Fault>,
    injected: u64,
    /// Byte ranges whose memory is gone ([`FaultyBackend::lose`]).
    lost: Vec<Range<u64>>,
}

impl<B: PoolBackend> FaultyBackend<B> {
    /// Wraps `inner`; nothing fails until [`arm`](Self::arm).
    pub fn new(inner: B) -> FaultyBackend<B> {
        FaultyBackend {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Fails the persist points `fault` selects (replacing an earlier fault).
    pub fn arm(&self, fault: Fault) {
        self.state.lock().fault = Some(fault);
    }

    /// Lets every persist point succeed again.
    pub fn disarm(&self) {
        self.state.lock().fault = None;
    }

    /// Makes the memory of `range` fault from now on, as a pool file's storage taken away or
    /// a media error would: every access overlapping it (load, store, flush, probe) returns
    /// [`MediaError`] at the first lost byte, and a store stops there (bytes before it are
    /// stored). Persist points of other ranges are unaffected.
    pub fn lose(&self, range: Range<u64>) {
        self.state.lock().lost.push(range);
    }

    /// The first lost byte of `[offset, offset + len)`, as the error an access there gets.
    fn lost(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        let end = offset.saturating_add(len);
        let s = self.state.lock();
        match s
            .lost
            .iter()
            .filter(|l| l.start < end && offset < l.end)
            .map(|l| l.start.max(offset))
            .min()
        {
            Some(first) => Err(MediaError {
                offset: first,
                cause: crate::backend::FaultCause::Gone,
            }),
            None => Ok(()),
        }
    }

    /// A store of `len` bytes at `offset` through `store`, stopped at the first lost byte.
    fn store_until_lost(
        &self,
        offset: u64,
        len: u64,
        store: impl FnOnce(u64) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        match self.lost(offset, len) {
            Ok(()) => store(len),
            Err(e) => {
                store(e.offset - offset)?;
                Err(e)
            }
        }
    }

    /// Persist points failed so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// Whether a persist point of `range` (`None`: a fence) fails now; counts it if so.
    fn strike(&self, range: Option<Range<u64>>) -> Option<(i32, bool)> {
        let mut s = self.state.lock();
        let fault = s.fault.as_mut()?;
        let matches = match (&fault.range, &range) {
            (None, _) => true,
            (Some(f), Some(r)) => f.start < r.end && r.start < f.end,
            (Some(_), None) => false,
        };
        if !matches || fault.count == 0 {
            return None;
        }
        fault.count -= 1;
        let hit = (fault.errno, fault.reached);
        if fault.count == 0 {
            s.fault = None;
        }
        s.injected += 1;
        Some(hit)
    }
}

impl<B: PoolBackend> Debug for FaultyBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner)
            .field("state", &*self.state.lock())
            .finish()
    }
}

impl<B: PoolBackend> PoolBackend for FaultyBackend<B> {
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.lost(offset, buf.len() as u64)?;
        self.inner.read_into(offset, buf)
    }

    fn base_addr(&self) -> Option<usize> {
        self.inner.base_addr()
    }

    fn refine_fault(&self, e: MediaError) -> MediaError {
        self.inner.refine_fault(e)
    }

    unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
        // SAFETY: the same contract, passed on.
        unsafe { self.inner.borrow(offset, len) }
    }

    fn probe(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        self.lost(offset, len)?;
        self.inner.probe(offset, len)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        self.store_until_lost(offset, data.len() as u64, |n| {
            self.inner.write(offset, &data[..n as usize])
        })
    }

    fn zero(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        self.store_until_lost(offset, len, |n| self.inner.zero(offset, n))
    }

    unsafe fn write_flushed(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        self.store_until_lost(offset, data.len() as u64, |n| {
            // SAFETY: the same contract, passed on, for a prefix of the range.
            unsafe { self.inner.write_flushed(offset, &data[..n as usize]) }
        })
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        self.lost(offset, len)?;
        self.inner.flush(offset, len)
    }

    fn fence(&self) -> std::io::Result<()> {
        match self.strike(None) {
            None => self.inner.fence(),
            Some((errno, reached)) => {
                if reached {
                    self.inner.fence()?;
                }
                Err(std::io::Error::from_raw_os_error(errno))
            }
        }
    }

    fn persist(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.lost(offset, len)?;
        match self.strike(Some(offset..offset.saturating_add(len))) {
            None => self.inner.persist(offset, len),
            Some((errno, reached)) => {
                if reached {
                    self.inner.persist(offset, len)?;
                }
                Err(std::io::Error::from_raw_os_error(errno))
            }
        }
    }

    fn sync(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.sync(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{CrashSimBackend, Pool, PoolError};

    #[test]
    fn an_armed_fault_fails_the_matching_persist_points_with_its_errno() {
        let sim = Arc::new(CrashSimBackend::new(1 << 16));
        let b = FaultyBackend::new(sim.clone());
        b.write(0, &[1u8; 8]).unwrap();
        b.persist(0, 8).unwrap();
        b.arm(Fault {
            errno: libc::ENOSPC,
            range: Some(4096..8192),
            count: 1,
            reached: false,
        });
        b.write(64, &[2u8; 8]).unwrap();
        b.persist(64, 8).unwrap();
        b.fence().unwrap();
        b.write(5000, &[3u8; 8]).unwrap();
        let e = b.persist(5000, 8).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(
            &sim.crash_image()[5000..5008],
            &[0u8; 8],
            "not reached: not durable"
        );
        b.persist(5000, 8).unwrap();
        assert_eq!(&sim.crash_image()[5000..5008], &[3u8; 8], "spent");
        b.arm(Fault {
            errno: libc::EIO,
            range: None,
            count: 2,
            reached: true,
        });
        b.write(6000, &[4u8; 8]).unwrap();
        assert_eq!(
            b.persist(6000, 8).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        assert_eq!(
            &sim.crash_image()[6000..6008],
            &[4u8; 8],
            "reached: durable"
        );
        assert_eq!(b.fence().unwrap_err().raw_os_error(), Some(libc::EIO));
        b.fence().unwrap();
        assert_eq!(b.injected(), 3);
    }

    #[test]
    fn mkfs_and_superblock_commits_report_the_errno() {
        let b = Arc::new(FaultyBackend::new(CrashSimBackend::new(16 << 20)));
        b.arm(Fault {
            errno: libc::EIO,
            range: Some(0..8192),
            count: 1,
            reached: false,
        });
        match Pool::format_backend("faulty", Box::new(b.clone())) {
            Err(PoolError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
            other => panic!("{other:?}"),
        }
        let pool = Pool::format_backend("faulty", Box::new(b.clone())).unwrap();
        let before = pool.superblock();
        b.arm(Fault {
            errno: libc::ENOSPC,
            range: Some(0..8192),
            count: 1,
            reached: true,
        });
        let mut sb = before.clone();
        sb.mounted = true;
        match pool.commit_superblock(sb.clone()) {
            Err(PoolError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(pool.superblock(), before, "a failed commit is not current");
        pool.commit_superblock(sb).unwrap();
        assert_eq!(pool.superblock().seq, before.seq + 2);
        let off = pool.data_region().start.byte_offset();
        pool.write(off, b"x").unwrap();
        b.arm(Fault {
            errno: libc::EIO,
            range: None,
            count: 2,
            reached: false,
        });
        match pool.persist(off, 1) {
            Err(PoolError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
            other => panic!("{other:?}"),
        }
        match pool.fence() {
            Err(PoolError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
            other => panic!("{other:?}"),
        }
        pool.persist(off, 1).unwrap();
    }
}
