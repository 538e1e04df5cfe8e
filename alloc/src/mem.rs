//! Word-atomic copies to and from mapped pool memory: how a backend's *safe* accesses
//! (`read_into`, `write`, `zero`) touch the pool.
//!
//! Pool memory is shared by every thread through `&self`. Two plain (non-atomic) accesses to
//! the same byte at the same time, one of them a store, are a data race, which Rust leaves
//! undefined even when neither forms a reference. So the safe accesses never use plain
//! loads and stores: every access is a relaxed atomic operation on an aligned machine word
//! (`AtomicUsize`) overlapping the range. A word only partly inside the range is loaded whole
//! (a read keeps the bytes it wants) or updated with one compare-and-swap that rewrites only
//! the range's bytes. All of them are word-sized, so concurrent safe accesses never mix access
//! sizes either. Racing safe accesses give unspecified bytes (each word is old or new), never
//! undefined behaviour.
//!
//! The fast paths stay plain and are `unsafe` at the backend's interface: borrowing a slice
//! (`PoolBackend::borrow`, whose caller promises no store to it while it lives) and
//! non-temporal stores (`PoolBackend::write_flushed`, whose caller promises no other access to
//! the range during the call). Mixing atomic and plain accesses to the same bytes is fine as
//! long as they do not overlap in time, which those promises guarantee.
//!
//! The memory must be writable (`AtomicUsize::from_ptr` requires it even for loads): a pool
//! mapped `PROT_READ` is never stored to at all, so its backend copies out of it plainly.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes in a machine word, the unit of every safe access.
const WORD: usize = size_of::<usize>();

/// The word-aligned address at or below `addr`, and the byte offset of `addr` in that word.
fn word_of(addr: usize) -> (usize, usize) {
    (addr & !(WORD - 1), addr & (WORD - 1))
}

/// The atomic word at the aligned address `addr`.
///
/// # Safety
/// `addr` is word-aligned and the word lies in memory that stays mapped (or allocated) for
/// `'a` and is only ever accessed atomically while this reference is used, or not concurrently.
unsafe fn atomic<'a>(addr: usize) -> &'a AtomicUsize {
    // SAFETY: the caller guarantees alignment, validity and the absence of racing plain
    // accesses; `AtomicUsize` has the size and alignment of `usize`.
    unsafe { AtomicUsize::from_ptr(addr as *mut usize) }
}

/// Copies `dst.len()` bytes starting at `src` into `dst` with relaxed atomic word loads.
///
/// # Safety
/// Every word-aligned machine word overlapping `[src, src + dst.len())` must lie in one live
/// mapping or allocation readable by this process (true of any range inside a mapping of whole
/// pages, as pools are), and no plain store may be made to those words during the call.
pub(crate) unsafe fn load(src: *const u8, dst: &mut [u8]) {
    let addr = src as usize;
    let (head, body, tail) = split(addr, dst.len());
    let (dst_head, rest) = dst.split_at_mut(head);
    let (dst_body, dst_tail) = rest.split_at_mut(body * WORD);
    if head > 0 {
        let (word_addr, skip) = word_of(addr);
        // SAFETY: the word holds the range's first byte, so the caller's contract covers it;
        // it is aligned by construction.
        let word = unsafe { atomic(word_addr) }.load(Ordering::Relaxed);
        dst_head.copy_from_slice(&word.to_ne_bytes()[skip..skip + head]);
    }
    let first = addr + head;
    for (i, chunk) in dst_body.chunks_exact_mut(WORD).enumerate() {
        // SAFETY: `first` is aligned and the word lies inside the range.
        let word = unsafe { atomic(first + i * WORD) }.load(Ordering::Relaxed);
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    if tail > 0 {
        // SAFETY: the word holds the range's last bytes; aligned by construction.
        let word = unsafe { atomic(first + body * WORD) }.load(Ordering::Relaxed);
        dst_tail.copy_from_slice(&word.to_ne_bytes()[..tail]);
    }
}

/// Stores `src` at `dst` with relaxed atomic word stores (a compare-and-swap for a word only
/// partly inside the range, which leaves its other bytes as they are).
///
/// # Safety
/// Every word-aligned machine word overlapping `[dst, dst + src.len())` must lie in one live,
/// writable mapping or allocation (true of any range inside a writable mapping of whole pages),
/// no plain access may be made to those words during the call, and no live shared reference
/// may cover the range.
pub(crate) unsafe fn store(dst: *mut u8, src: &[u8]) {
    let addr = dst as usize;
    let (head, body, tail) = split(addr, src.len());
    let (src_head, rest) = src.split_at(head);
    let (src_body, src_tail) = rest.split_at(body * WORD);
    if head > 0 {
        // SAFETY: the word holds the range's first byte: the caller's contract covers it.
        unsafe { store_part(addr, src_head) };
    }
    let first = addr + head;
    for (i, chunk) in src_body.chunks_exact(WORD).enumerate() {
        let mut bytes = [0u8; WORD];
        bytes.copy_from_slice(chunk);
        // SAFETY: `first` is aligned and the word lies inside the range.
        unsafe { atomic(first + i * WORD) }.store(usize::from_ne_bytes(bytes), Ordering::Relaxed);
    }
    if tail > 0 {
        // SAFETY: the word holds the range's last bytes: the caller's contract covers it.
        unsafe { store_part(first + body * WORD, src_tail) };
    }
}

/// Stores `len` zero bytes at `dst`, as [`store`] does.
///
/// # Safety
/// As [`store`], for `[dst, dst + len)`.
pub(crate) unsafe fn store_zeros(dst: *mut u8, len: usize) {
    const ZEROS: [u8; WORD] = [0; WORD];
    let addr = dst as usize;
    let (head, body, tail) = split(addr, len);
    if head > 0 {
        // SAFETY: the word holds the range's first byte: the caller's contract covers it.
        unsafe { store_part(addr, &ZEROS[..head]) };
    }
    let first = addr + head;
    for i in 0..body {
        // SAFETY: `first` is aligned and the word lies inside the range.
        unsafe { atomic(first + i * WORD) }.store(0, Ordering::Relaxed);
    }
    if tail > 0 {
        // SAFETY: the word holds the range's last bytes: the caller's contract covers it.
        unsafe { store_part(first + body * WORD, &ZEROS[..tail]) };
    }
}

/// `(head, body, tail)` of `len` bytes at `addr`: the bytes before the first word boundary
/// (at most `len`), the whole words after them, the bytes left in a last partial word.
fn split(addr: usize, len: usize) -> (usize, usize, usize) {
    let head = ((WORD - addr % WORD) % WORD).min(len);
    let body = (len - head) / WORD;
    (head, body, len - head - body * WORD)
}

/// Stores `bytes` at `addr`, all inside the word holding `addr`, with one compare-and-swap
/// of that word that leaves its other bytes as they are.
///
/// # Safety
/// The word holding `addr` lies in live, writable memory that no plain access touches during
/// the call and no shared reference covers; `bytes` ends inside that word.
unsafe fn store_part(addr: usize, bytes: &[u8]) {
    let (word_addr, skip) = word_of(addr);
    debug_assert!(skip + bytes.len() <= WORD);
    let mut mask = [0u8; WORD];
    mask[skip..skip + bytes.len()].fill(0xFF);
    let mut bits = [0u8; WORD];
    bits[skip..skip + bytes.len()].copy_from_slice(bytes);
    let (mask, bits) = (usize::from_ne_bytes(mask), usize::from_ne_bytes(bits));
    // SAFETY: the caller's contract; aligned by construction.
    let word = unsafe { atomic(word_addr) };
    // One atomic update of the whole word that changes only the range's bytes.
    let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some((old & !mask) | bits)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_exact_bytes_at_every_alignment() {
        let pattern: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8 | 1).collect();
        // Word-aligned backing memory, as a mapping is.
        let mut words = vec![0usize; 40];
        for at in 0..2 * WORD {
            for len in [0, 1, 3, WORD - 1, WORD, WORD + 1, 2 * WORD + 3, 100] {
                words.fill(usize::MAX);
                let base = words.as_mut_ptr() as *mut u8;
                // SAFETY: `[base + at, base + at + len)` and every word overlapping it lie
                // inside `words`, which nothing else touches meanwhile.
                unsafe { store(base.add(at), &pattern[..len]) };
                // SAFETY: as above.
                let image: Vec<u8> =
                    unsafe { std::slice::from_raw_parts(base, 40 * WORD) }.to_vec();
                assert!(image[..at].iter().all(|&b| b == 0xFF), "{at}/{len} head");
                assert_eq!(&image[at..at + len], &pattern[..len], "{at}/{len}");
                assert!(
                    image[at + len..].iter().all(|&b| b == 0xFF),
                    "{at}/{len} tail"
                );
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { load(base.add(at), &mut back) };
                assert_eq!(back, &pattern[..len]);
                // SAFETY: as above.
                unsafe { store_zeros(base.add(at), len) };
                // SAFETY: as above.
                let image: Vec<u8> =
                    unsafe { std::slice::from_raw_parts(base, 40 * WORD) }.to_vec();
                assert!(
                    image[at..at + len].iter().all(|&b| b == 0),
                    "{at}/{len} zeros"
                );
                assert!(
                    image[at + len..].iter().all(|&b| b == 0xFF),
                    "{at}/{len} zero tail"
                );
            }
        }
    }
}
