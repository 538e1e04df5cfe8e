//! [`CrashSimBackend`]: a RAM pool that knows which stores are durable, for crash tests.
//!
//! The backend keeps two images of the pool:
//!
//! - the **live** image, what the running code reads and writes (a [`MemBackend`]);
//! - the **durable** image, what would survive a power cut at this instant.
//!
//! A store reaches the durable image only through the medium's rule (docs/DESIGN.md, section
//! 2): a cache-line flush covering it, then a fence. Everything else is bookkeeping of 8-byte
//! words (the unit of atomicity the design assumes):
//!
//! ```text
//!  write/zero ──► dirty ──flush(range)──► pending ──fence()──► durable (live words copied)
//!                   ▲  (whole 64-byte lines        │
//!                   └── re-written ◄───────────────┘
//! ```
//!
//! - `write`/`zero` update the live image and mark the words they touch *dirty*.
//! - `flush(range)` moves the dirty words of every 64-byte line overlapping the range to
//!   *pending* (a real flush writes back whole lines, so neighbours in a line go too).
//! - `fence()` is one **persist point**: it copies the pending words from the live image into
//!   the durable image (their value at fence time) and counts. `persist` = `flush` + `fence`.
//! - `sync` (msync, the fsync path) does nothing: the durable image is the persistence domain.
//!
//! **Crashes.** [`CrashSimBackend::arm_crash`]`(n, mode)` crashes the pool *before the n-th
//! fence takes effect* (fences are numbered from 1 since the backend was created; the n-th
//! fence's pending words do not become durable). [`CrashSimBackend::crash_now`] crashes at
//! once. At a crash the durable image is frozen: the code keeps running on the live image, but
//! nothing it stores later becomes durable. What a crash does with the words that were stored
//! but not yet durable (dirty or pending) depends on the [`CrashMode`]:
//!
//! - [`CrashMode::Clean`]: all are dropped; the image is exactly the state after fence n-1.
//! - [`CrashMode::Torn`]: each such word is independently kept (its live value at the crash)
//!   or dropped (its durable value), drawn from a PRNG seeded with `seed`, in word order: the
//!   same run, point and seed always give the same image. This models cache lines evicted
//!   early and flushes in flight, torn at 8-byte granularity (a word is never torn inside).
//!
//! [`CrashSimBackend::crash_image`] returns the durable image (as frozen by the crash, or as of
//! now if there was none); recover by opening it on a [`MemBackend::from_bytes`].
//!
//! **Simplifications** (all on the lenient side, so they hide no bug the real medium shows,
//! except the last): a word stored twice between two fences offers only its latest value and
//! its durable value at a torn crash, never the intermediate one; a fence makes durable the
//! value a pending word has at fence time (a store after the flush may thus ride along, which a
//! cache eviction can also do on real hardware).
//!
//! **Memory.** Two full images plus two bitmaps of one bit per 8-byte word (1/32 of the pool
//! each): meant for test pools of tens of MiB, not for real ones.
//!
//! **Concurrency.** The live image is read without locking (`read_into`, and `borrow` under the
//! [`PoolBackend`] contract); every store, flush and fence takes the one state mutex, and
//! stores happen under it, so a fence never copies a word while another thread stores it (which
//! is what lets it copy from the live image in place).

use std::fmt::Debug;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backend::{MediaError, MemBackend, PoolBackend};

/// Bytes per word: the unit of atomicity of the medium.
const WORD_BYTES: u64 = 8;
/// Bytes per cache line: the unit of a flush.
const LINE_BYTES: u64 = 64;
/// Words per bitmap chunk.
const CHUNK_WORDS: u64 = 64;

/// What a crash does with stores that were not yet durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every store not yet made durable by a completed fence is lost.
    Clean,
    /// Every such 8-byte word is kept or lost independently, drawn from `seed`.
    Torn {
        /// Seed of the keep/drop draws.
        seed: u64,
    },
}

impl std::fmt::Display for CrashMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrashMode::Clean => write!(f, "clean"),
            CrashMode::Torn { seed } => write!(f, "torn(seed={seed:#x})"),
        }
    }
}

/// What happened at a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashReport {
    /// Fences that had taken effect: the durable image is the state after this many persist
    /// points (plus the kept words of a torn crash).
    pub fences_completed: u64,
    /// How stores that were not durable were treated.
    pub mode: CrashMode,
    /// Words stored but not durable at the crash that a torn crash kept.
    pub words_kept: u64,
    /// Words stored but not durable at the crash that were lost.
    pub words_dropped: u64,
}

/// Bytes per page of the durable image's "may be non-zero" map.
const PAGE_BYTES: u64 = 4096;

/// Zeroed buffers of dropped durable images, reused by new ones: a crash suite creates
/// thousands of pools, and fresh memory costs a page fault per page stored to.
static SPARE_IMAGES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Spare buffers kept at most.
const SPARE_IMAGES_MAX: usize = 8;

/// The durable image, and which pages of it were ever stored to (so that copying or
/// clearing it costs what it holds, not the pool size).
struct Durable {
    mem: Vec<u8>,
    /// One bit per 4 KiB page: may hold a non-zero byte.
    pages: Vec<u64>,
}

impl Durable {
    fn new(len_bytes: u64) -> Durable {
        let len = usize::try_from(len_bytes).expect("pool size fits in memory");
        let mem = {
            let mut spares = SPARE_IMAGES.lock();
            match spares.iter().position(|v| v.len() == len) {
                Some(i) => spares.swap_remove(i),
                None => vec![0; len],
            }
        };
        Durable {
            mem,
            pages: vec![0; len_bytes.div_ceil(PAGE_BYTES).div_ceil(64) as usize],
        }
    }

    fn len_bytes(&self) -> u64 {
        self.mem.len() as u64
    }

    fn read(&self, offset: u64, len: usize) -> &[u8] {
        &self.mem[offset as usize..offset as usize + len]
    }

    fn store(&mut self, offset: u64, data: &[u8]) {
        self.mem[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        let end = offset + data.len() as u64;
        for page in offset / PAGE_BYTES..end.div_ceil(PAGE_BYTES) {
            self.pages[(page / 64) as usize] |= 1 << (page % 64);
        }
    }

    /// Calls `f(offset, bytes)` for each run of pages that may be non-zero, in order.
    fn for_each_page(&self, mut f: impl FnMut(u64, &[u8])) {
        let len = self.len_bytes();
        for (i, &bits) in self.pages.iter().enumerate() {
            for_runs(i, bits, |first, n| {
                let start = first * PAGE_BYTES;
                let end = ((first + n) * PAGE_BYTES).min(len);
                f(start, self.read(start, (end - start) as usize));
            });
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        let mut mem = std::mem::take(&mut self.mem);
        let len = mem.len() as u64;
        for (i, &bits) in self.pages.iter().enumerate() {
            for_runs(i, bits, |first, n| {
                let start = first * PAGE_BYTES;
                let end = ((first + n) * PAGE_BYTES).min(len);
                mem[start as usize..end as usize].fill(0);
            });
        }
        let mut spares = SPARE_IMAGES.lock();
        if spares.len() < SPARE_IMAGES_MAX {
            spares.push(mem);
        }
    }
}

/// Bookkeeping behind the mutex.
struct SimState {
    /// The durable image (frozen once `crash` is set).
    durable: Durable,
    /// One bit per word: stored since it was last made durable, not flushed since.
    dirty: Vec<u64>,
    /// One bit per word: flushed, waiting for the next fence.
    pending: Vec<u64>,
    /// Chunk ranges of `pending` that may hold bits, so a fence visits only those.
    pending_chunks: Vec<(usize, usize)>,
    /// Fences called so far (persist points), crashed or not.
    fences: u64,
    /// Crash before this fence (1-based) takes effect.
    armed: Option<(u64, CrashMode)>,
    /// Set once crashed.
    crash: Option<CrashReport>,
}

/// A RAM pool with a live and a durable image, crashing on demand. See the module docs.
pub struct CrashSimBackend {
    live: MemBackend,
    len_bytes: u64,
    state: Mutex<SimState>,
}

impl Debug for CrashSimBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("CrashSimBackend")
            .field("len_bytes", &self.len_bytes)
            .field("fences", &s.fences)
            .field("armed", &s.armed)
            .field("crash", &s.crash)
            .finish()
    }
}

/// Words needed to cover `len_bytes`.
fn word_count(len_bytes: u64) -> u64 {
    len_bytes.div_ceil(WORD_BYTES)
}

/// Calls `f(offset, page)` for every 4 KiB page of `image` (the last one may be shorter) that
/// holds a non-zero byte. The comparison is a `memcmp` against a zero page, fast in debug
/// builds too.
pub fn for_nonzero_pages(image: &[u8], mut f: impl FnMut(usize, &[u8])) {
    const PAGE: usize = 4096;
    static ZERO: [u8; PAGE] = [0; PAGE];
    for (i, page) in image.chunks(PAGE).enumerate() {
        if page != &ZERO[..page.len()] {
            f(i * PAGE, page);
        }
    }
}

/// Calls `f(chunk_index, mask)` for every bitmap chunk overlapping words `[w0, w1)`, with the
/// mask of the words of the range inside that chunk.
fn for_chunks(w0: u64, w1: u64, mut f: impl FnMut(usize, u64)) {
    if w0 >= w1 {
        return;
    }
    let c0 = w0 / CHUNK_WORDS;
    let c1 = (w1 - 1) / CHUNK_WORDS;
    for c in c0..=c1 {
        let lo = if c == c0 { w0 % CHUNK_WORDS } else { 0 };
        let hi = if c == c1 {
            (w1 - 1) % CHUNK_WORDS + 1
        } else {
            CHUNK_WORDS
        };
        let mask = if hi - lo == CHUNK_WORDS {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        };
        f(c as usize, mask);
    }
}

/// Calls `f(first_word, words)` for each run of set bits of `bits` (chunk `chunk`).
fn for_runs(chunk: usize, mut bits: u64, mut f: impl FnMut(u64, u64)) {
    let base = chunk as u64 * CHUNK_WORDS;
    while bits != 0 {
        let start = bits.trailing_zeros() as u64;
        let run = (bits >> start).trailing_ones() as u64;
        f(base + start, run);
        bits = if start + run >= 64 {
            0
        } else {
            bits & !(((1u64 << run) - 1) << start)
        };
    }
}

impl CrashSimBackend {
    /// A zero-filled pool of `len_bytes`; both images zero, nothing pending.
    pub fn new(len_bytes: u64) -> CrashSimBackend {
        CrashSimBackend::with_images(MemBackend::new(len_bytes), Durable::new(len_bytes))
    }

    /// A pool whose live and durable images are both `image` (e.g. a formatted template, or
    /// a crash image to recover from under further crashes).
    ///
    /// Only the non-zero 4 KiB pages of `image` are copied (both images start as lazily
    /// zeroed memory), so a mostly empty test pool costs little to set up.
    pub fn from_image(image: &[u8]) -> CrashSimBackend {
        let mut live = MemBackend::new(image.len() as u64);
        let mut durable = Durable::new(image.len() as u64);
        for_nonzero_pages(image, |offset, page| {
            live.write_mut(offset as u64, page);
            durable.store(offset as u64, page);
        });
        CrashSimBackend::with_images(live, durable)
    }

    /// A new pool whose live and durable images are both this one's durable image (as
    /// [`crash_image`](Self::crash_image) describes it): the pool as found after the crash,
    /// ready to run recovery under further crashes. Copies only the pages stored to.
    pub fn fork(&self) -> CrashSimBackend {
        let mut live = MemBackend::new(self.len_bytes);
        let mut durable = Durable::new(self.len_bytes);
        self.for_each_durable_page(|offset, page| {
            live.write_mut(offset, page);
            durable.store(offset, page);
        });
        CrashSimBackend::with_images(live, durable)
    }

    fn with_images(live: MemBackend, durable: Durable) -> CrashSimBackend {
        let len_bytes = live.len_bytes();
        assert_eq!(durable.len_bytes(), len_bytes, "images of different sizes");
        let chunks = word_count(len_bytes).div_ceil(CHUNK_WORDS) as usize;
        CrashSimBackend {
            live,
            len_bytes,
            state: Mutex::new(SimState {
                durable,
                dirty: vec![0; chunks],
                pending: vec![0; chunks],
                pending_chunks: Vec::new(),
                fences: 0,
                armed: None,
                crash: None,
            }),
        }
    }

    /// Crash before fence number `point` (1-based, counted since creation) takes effect.
    /// Replaces an earlier arming. A point already passed never fires.
    pub fn arm_crash(&self, point: u64, mode: CrashMode) {
        self.state.lock().armed = Some((point, mode));
    }

    /// Cancels an armed crash (a crash that happened stays).
    pub fn disarm(&self) {
        self.state.lock().armed = None;
    }

    /// Crashes now (if not crashed already): the durable image is frozen as it is, with the
    /// words not yet durable treated per `mode`.
    pub fn crash_now(&self, mode: CrashMode) {
        let mut s = self.state.lock();
        if s.crash.is_none() {
            let completed = s.fences;
            self.crash(&mut s, mode, completed);
        }
    }

    /// The crash, once it happened.
    pub fn crashed(&self) -> Option<CrashReport> {
        self.state.lock().crash
    }

    /// Fences (persist points) called so far, including any after a crash.
    pub fn persist_points(&self) -> u64 {
        self.state.lock().fences
    }

    /// Words stored but not yet durable (dirty or pending), for tests and diagnostics.
    pub fn unpersisted_words(&self) -> u64 {
        let s = self.state.lock();
        s.dirty
            .iter()
            .zip(&s.pending)
            .map(|(d, p)| (d | p).count_ones() as u64)
            .sum()
    }

    /// A copy of the durable image: as frozen by the crash, or as of now if there was none
    /// (then stores not yet fenced are simply absent, as in a clean crash now).
    pub fn crash_image(&self) -> Vec<u8> {
        self.state.lock().durable.mem.clone()
    }

    /// Calls `f` with the durable image (as [`crash_image`](Self::crash_image) describes it)
    /// without copying it.
    pub fn with_crash_image<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let s = self.state.lock();
        f(&s.durable.mem)
    }

    /// Calls `f(offset, bytes)` for the pages of the durable image that may hold non-zero
    /// bytes (every other byte is zero), in order: a cheap way to copy a crash image.
    pub fn for_each_durable_page(&self, f: impl FnMut(u64, &[u8])) {
        self.state.lock().durable.for_each_page(f)
    }

    /// A copy of the live image (what the running code sees).
    pub fn live_image(&self) -> Vec<u8> {
        self.live.to_vec()
    }

    /// Words `[w0, w1)` covering bytes `[offset, offset + len)`, clipped to the pool.
    fn words(&self, offset: u64, len: u64) -> (u64, u64) {
        let end = offset.saturating_add(len).min(self.len_bytes);
        (offset / WORD_BYTES, end.div_ceil(WORD_BYTES))
    }

    /// Copies words `[w, w + n)` from the live image into `durable`. Called with the state
    /// mutex held (`durable` is behind it).
    fn copy_words(&self, durable: &mut Durable, w: u64, n: u64) {
        let start = w * WORD_BYTES;
        let end = ((w + n) * WORD_BYTES).min(self.len_bytes);
        // SAFETY: every store to the live image is made by this backend's `write`/`zero` with
        // the state mutex held, and our caller holds it until the slice is gone: nothing can
        // store to the range while it lives.
        let live = unsafe { self.live.borrow(start, (end - start) as usize) };
        durable.store(start, live);
    }

    fn mark_dirty(&self, s: &mut SimState, offset: u64, len: u64) {
        let (w0, w1) = self.words(offset, len);
        for_chunks(w0, w1, |c, mask| s.dirty[c] |= mask);
    }

    /// Freezes the durable image, applying `mode` to the words not yet durable.
    fn crash(&self, s: &mut SimState, mode: CrashMode, fences_completed: u64) {
        let mut rng = match mode {
            CrashMode::Clean => None,
            CrashMode::Torn { seed } => Some(StdRng::seed_from_u64(seed)),
        };
        let (mut kept, mut dropped) = (0u64, 0u64);
        let SimState {
            durable,
            dirty,
            pending,
            ..
        } = s;
        for c in 0..dirty.len() {
            let bits = dirty[c] | pending[c];
            if bits == 0 {
                continue;
            }
            match rng.as_mut() {
                None => dropped += bits.count_ones() as u64,
                Some(rng) => {
                    let mut keep = 0u64;
                    for i in 0..CHUNK_WORDS {
                        if bits & (1 << i) != 0 && rng.random::<bool>() {
                            keep |= 1 << i;
                        }
                    }
                    kept += keep.count_ones() as u64;
                    dropped += (bits & !keep).count_ones() as u64;
                    for_runs(c, keep, |w, n| self.copy_words(durable, w, n));
                }
            }
            dirty[c] = 0;
            pending[c] = 0;
        }
        s.pending_chunks.clear();
        s.armed = None;
        s.crash = Some(CrashReport {
            fences_completed,
            mode,
            words_kept: kept,
            words_dropped: dropped,
        });
    }
}

impl PoolBackend for CrashSimBackend {
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        self.live.read_into(offset, buf)
    }

    fn base_addr(&self) -> Option<usize> {
        self.live.base_addr()
    }

    fn refine_fault(&self, e: MediaError) -> MediaError {
        self.live.refine_fault(e)
    }

    unsafe fn borrow(&self, offset: u64, len: usize) -> &[u8] {
        // SAFETY: the same contract, passed on: every store to the live image goes through
        // this backend's `write`/`zero`.
        unsafe { self.live.borrow(offset, len) }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let mut s = self.state.lock();
        let stored = self.live.write(offset, data);
        if s.crash.is_none() {
            self.mark_dirty(&mut s, offset, data.len() as u64);
        }
        stored
    }

    fn zero(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        let mut s = self.state.lock();
        let stored = self.live.zero(offset, len);
        if s.crash.is_none() {
            self.mark_dirty(&mut s, offset, len);
        }
        stored
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), MediaError> {
        let mut s = self.state.lock();
        if s.crash.is_some() || len == 0 {
            return Ok(());
        }
        let first_line = offset / LINE_BYTES * LINE_BYTES;
        let end = offset.saturating_add(len).min(self.len_bytes);
        let end_line = end.div_ceil(LINE_BYTES) * LINE_BYTES;
        let (w0, w1) = self.words(first_line, end_line - first_line);
        let SimState {
            dirty,
            pending,
            pending_chunks,
            ..
        } = &mut *s;
        let mut touched: Option<(usize, usize)> = None;
        for_chunks(w0, w1, |c, mask| {
            let moved = dirty[c] & mask;
            if moved != 0 {
                pending[c] |= moved;
                dirty[c] &= !moved;
                touched = Some(match touched {
                    None => (c, c + 1),
                    Some((a, _)) => (a, c + 1),
                });
            }
        });
        if let Some(range) = touched {
            pending_chunks.push(range);
        }
        Ok(())
    }

    fn fence(&self) -> std::io::Result<()> {
        let mut s = self.state.lock();
        s.fences += 1;
        if s.crash.is_some() {
            return Ok(());
        }
        if let Some((point, mode)) = s.armed
            && s.fences >= point
        {
            let completed = s.fences - 1;
            self.crash(&mut s, mode, completed);
            return Ok(());
        }
        let SimState {
            durable,
            pending,
            pending_chunks,
            ..
        } = &mut *s;
        for (a, b) in pending_chunks.drain(..) {
            for (i, chunk) in pending[a..b].iter_mut().enumerate() {
                let bits = std::mem::take(chunk);
                for_runs(a + i, bits, |w, n| self.copy_words(durable, w, n));
            }
        }
        Ok(())
    }

    fn sync(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LEN: u64 = 1 << 16;

    fn at(img: &[u8], offset: u64, len: usize) -> &[u8] {
        &img[offset as usize..offset as usize + len]
    }

    #[test]
    fn store_is_durable_only_after_flush_and_fence() {
        let b = CrashSimBackend::new(LEN);
        b.write(128, &[7u8; 16]).unwrap();
        assert_eq!(at(&b.crash_image(), 128, 16), &[0u8; 16]);
        assert_eq!(b.read_vec(128, 16).unwrap(), &[7u8; 16]);
        b.flush(128, 16).unwrap();
        assert_eq!(at(&b.crash_image(), 128, 16), &[0u8; 16], "flush alone");
        b.fence().unwrap();
        assert_eq!(at(&b.crash_image(), 128, 16), &[7u8; 16]);
        assert_eq!(b.persist_points(), 1);
        assert_eq!(b.unpersisted_words(), 0);
    }

    #[test]
    fn from_image_starts_with_both_images_equal() {
        let mut image = vec![0u8; LEN as usize + 100];
        image[5000..5010].fill(3);
        image[LEN as usize + 99] = 9;
        let b = CrashSimBackend::from_image(&image);
        assert_eq!(b.crash_image(), image);
        assert_eq!(b.live_image(), image);
        assert_eq!(b.unpersisted_words(), 0);
        let mut pages = Vec::new();
        for_nonzero_pages(&image, |offset, page| pages.push((offset, page.len())));
        assert_eq!(pages, [(4096, 4096), (LEN as usize, 100)]);
    }

    #[test]
    fn fork_starts_from_the_crash_image() {
        let b = CrashSimBackend::new(LEN);
        b.write(5000, &[1u8; 8]).unwrap();
        b.persist(5000, 8).unwrap();
        b.write(9000, &[2u8; 8]).unwrap();
        b.crash_now(CrashMode::Clean);
        let mut pages = Vec::new();
        b.for_each_durable_page(|offset, page| pages.push((offset, page.len())));
        assert_eq!(pages, [(4096, 4096)]);
        let f = b.fork();
        assert_eq!(f.crash_image(), b.crash_image());
        assert_eq!(f.live_image(), b.crash_image());
        assert_eq!(f.crashed(), None);
        assert_eq!(f.persist_points(), 0);
        assert_eq!(f.read_vec(9000, 8).unwrap(), &[0u8; 8]);
    }

    #[test]
    fn fence_without_flush_persists_nothing() {
        let b = CrashSimBackend::new(LEN);
        b.write(0, &[1u8; 64]).unwrap();
        b.fence().unwrap();
        assert_eq!(at(&b.crash_image(), 0, 64), &[0u8; 64]);
        assert_eq!(b.unpersisted_words(), 8);
    }

    #[test]
    fn flush_covers_whole_lines_only() {
        let b = CrashSimBackend::new(LEN);
        b.write(0, &[1u8; 200]).unwrap();
        // Bytes 70..71 lie in line 64..128: that whole line goes, not lines 0..64 or 128..192.
        b.persist(70, 1).unwrap();
        let img = b.crash_image();
        assert_eq!(at(&img, 0, 64), &[0u8; 64]);
        assert_eq!(at(&img, 64, 64), &[1u8; 64]);
        assert_eq!(at(&img, 128, 72), &[0u8; 72]);
    }

    #[test]
    fn zero_is_a_store() {
        let b = CrashSimBackend::from_image(&vec![0xAAu8; LEN as usize]);
        b.zero(8, 8).unwrap();
        assert_eq!(at(&b.crash_image(), 8, 8), &[0xAA; 8]);
        b.persist(8, 8).unwrap();
        assert_eq!(at(&b.crash_image(), 0, 24), {
            let mut v = [0xAAu8; 24];
            v[8..16].fill(0);
            v
        });
    }

    #[test]
    fn clean_crash_drops_the_armed_fence_and_everything_after() {
        let b = CrashSimBackend::new(LEN);
        b.arm_crash(2, CrashMode::Clean);
        b.write(0, &[1u8; 8]).unwrap();
        b.persist(0, 8).unwrap(); // fence 1: durable
        b.write(8, &[2u8; 8]).unwrap();
        b.persist(8, 8).unwrap(); // fence 2: the crash, not durable
        b.write(16, &[3u8; 8]).unwrap();
        b.persist(16, 8).unwrap(); // after the crash: never durable
        let r = b.crashed().expect("crashed");
        assert_eq!(r.fences_completed, 1);
        assert_eq!(r.words_dropped, 1);
        let img = b.crash_image();
        assert_eq!(at(&img, 0, 24), [[1u8; 8], [0; 8], [0; 8]].concat());
        assert_eq!(
            b.read_vec(0, 24).unwrap(),
            [[1u8; 8], [2; 8], [3; 8]].concat()
        );
        assert_eq!(b.persist_points(), 3);
    }

    #[test]
    fn torn_crash_keeps_or_drops_each_word_reproducibly() {
        let run = |seed: u64| {
            let b = CrashSimBackend::new(LEN);
            b.arm_crash(1, CrashMode::Torn { seed });
            let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 | 1).collect();
            b.write(4096, &data).unwrap();
            b.persist(4096, 4096).unwrap();
            let r = b.crashed().unwrap();
            assert_eq!(r.words_kept + r.words_dropped, 512);
            (b.crash_image(), r, data)
        };
        let (a, ra, data) = run(42);
        let (a2, _, _) = run(42);
        let (c, _, _) = run(43);
        assert_eq!(a, a2, "same seed, same image");
        assert_ne!(a, c, "different seed, different image");
        assert!(ra.words_kept > 100 && ra.words_dropped > 100, "{ra:?}");
        for w in 0..512usize {
            let got = at(&a, 4096 + 8 * w as u64, 8);
            assert!(
                got == [0u8; 8] || got == &data[8 * w..8 * w + 8],
                "word {w} torn inside"
            );
        }
    }

    #[test]
    fn crash_now_and_unarmed_image() {
        let b = CrashSimBackend::new(LEN);
        b.write(0, &[9u8; 8]).unwrap();
        b.persist(0, 8).unwrap();
        b.write(8, &[9u8; 8]).unwrap();
        assert_eq!(at(&b.crash_image(), 0, 16), [[9u8; 8], [0; 8]].concat());
        b.crash_now(CrashMode::Clean);
        b.write(0, &[5u8; 8]).unwrap();
        b.persist(0, 8).unwrap();
        assert_eq!(at(&b.crash_image(), 0, 16), [[9u8; 8], [0; 8]].concat());
        assert_eq!(b.crashed().unwrap().fences_completed, 1);
    }

    #[test]
    fn store_after_flush_rides_with_the_fence_but_stays_unpersisted() {
        let b = CrashSimBackend::new(LEN);
        b.write(0, &[1u8; 8]).unwrap();
        b.flush(0, 8).unwrap();
        b.write(0, &[2u8; 8]).unwrap();
        b.fence().unwrap();
        assert_eq!(at(&b.crash_image(), 0, 8), &[2u8; 8]);
        assert_eq!(
            b.unpersisted_words(),
            1,
            "the second store was never flushed"
        );
    }

    #[test]
    fn superblock_commit_survives_a_crash_at_every_point() {
        use crate::pool::Pool;
        // Count the fences of a commit, then crash at each one (clean and torn): the pool
        // always opens, on the old or the new superblock (the new one with seq + 1 once its
        // first write is durable, seq + 2 once both are).
        let template = {
            let b = Arc::new(CrashSimBackend::new(16 << 20));
            let pool = Pool::format_backend("sim", Box::new(b.clone())).unwrap();
            drop(pool);
            b.crash_image()
        };
        let commit = |b: &Arc<CrashSimBackend>| {
            let pool = Pool::open_backend("sim", Box::new(b.clone()), false).unwrap();
            let mut sb = pool.superblock();
            sb.mounted = true;
            pool.commit_superblock(sb).unwrap();
            pool.superblock().seq
        };
        let b = Arc::new(CrashSimBackend::from_image(&template));
        let new_seq = commit(&b);
        let points = b.persist_points();
        assert!(points >= 1);
        for point in 1..=points + 1 {
            for mode in [CrashMode::Clean, CrashMode::Torn { seed: point }] {
                let b = Arc::new(CrashSimBackend::from_image(&template));
                b.arm_crash(point, mode);
                commit(&b);
                b.crash_now(mode);
                let img = b.crash_image();
                let pool =
                    Pool::open_backend("recovered", Box::new(MemBackend::from_bytes(&img)), true)
                        .unwrap_or_else(|e| panic!("point {point} {mode}: {e}"));
                let sb = pool.superblock();
                assert!(sb.seq + 2 >= new_seq, "point {point}");
                assert_eq!(sb.mounted, sb.seq > new_seq - 2, "point {point}");
                if point > points {
                    assert_eq!(sb.seq, new_seq);
                    assert!(sb.mounted);
                }
            }
        }
    }
}
