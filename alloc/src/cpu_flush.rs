//! CPU cache-line write-back and store fences: how a store becomes durable on real PMEM.
//!
//! The instruction is chosen once, at run time, from CPUID (leaf 7, EBX bits 23/24):
//! CLWB (write back, line stays cached) if the CPU has it, else CLFLUSHOPT (write back and
//! evict, weakly ordered), else CLFLUSH (every x86-64 CPU has it; strongly ordered, slow).
//! `std::arch::is_x86_feature_detected!` does not know `clwb`/`clflushopt`, hence CPUID.
//!
//! On other architectures there is no user-level cache-line flush we rely on: [`FlushInstr`]
//! is [`FlushInstr::None`], flushing does nothing and the fence is a `SeqCst` fence; durability
//! of a file-backed pool then comes from msync alone.
//!
//! The flush loops themselves are in [`crate::guarded`] (with every other instruction that
//! touches pool memory), so that a fault on a lost page is an error, not a SIGBUS.
//!
//! Invariants:
//! - A flush ([`crate::guarded::flush`]) touches only the 64-byte lines overlapping the range
//!   it is given and never writes memory (the flush instructions only write back what is
//!   already there).
//! - A flush is complete only after a later [`fence`].

use std::sync::OnceLock;

use crate::guarded::MediaFault;

/// Bytes in one CPU cache line: the unit of write-back.
pub const CACHE_LINE_BYTES: usize = 64;

/// The instruction used to write back a cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushInstr {
    /// `CLWB`: writes the line back and may keep it cached. Weakly ordered: needs SFENCE.
    Clwb,
    /// `CLFLUSHOPT`: writes back and invalidates. Weakly ordered: needs SFENCE.
    Clflushopt,
    /// `CLFLUSH`: writes back and invalidates, ordered with other CLFLUSHes and stores.
    Clflush,
    /// No cache-line flush (not x86-64): flushing is a no-op.
    None,
}

impl FlushInstr {
    /// The instruction's assembler name.
    pub fn name(self) -> &'static str {
        match self {
            FlushInstr::Clwb => "clwb",
            FlushInstr::Clflushopt => "clflushopt",
            FlushInstr::Clflush => "clflush",
            FlushInstr::None => "none",
        }
    }

    /// True if this CPU can execute the instruction (`None` always can).
    pub fn is_supported(self) -> bool {
        match self {
            FlushInstr::None => true,
            FlushInstr::Clflush => cfg!(target_arch = "x86_64"),
            FlushInstr::Clflushopt | FlushInstr::Clwb => {
                let (clflushopt, clwb) = cpuid_flush_bits();
                if self == FlushInstr::Clwb {
                    clwb
                } else {
                    clflushopt
                }
            }
        }
    }
}

/// The best flush instruction of this CPU, detected once.
pub fn detected() -> FlushInstr {
    static DETECTED: OnceLock<FlushInstr> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        if !cfg!(target_arch = "x86_64") {
            return FlushInstr::None;
        }
        let (clflushopt, clwb) = cpuid_flush_bits();
        if clwb {
            FlushInstr::Clwb
        } else if clflushopt {
            FlushInstr::Clflushopt
        } else {
            FlushInstr::Clflush
        }
    })
}

/// `(clflushopt, clwb)` from CPUID leaf 7 sub-leaf 0, EBX bits 23 and 24.
#[cfg(target_arch = "x86_64")]
fn cpuid_flush_bits() -> (bool, bool) {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // SAFETY: CPUID exists on every x86-64 CPU and only reads identification registers. (The
    // intrinsics are safe functions on newer toolchains, hence the allow.)
    #[allow(unused_unsafe)]
    let max_leaf = unsafe { __cpuid(0) }.eax;
    if max_leaf < 7 {
        return (false, false);
    }
    // SAFETY: as above; leaf 7 exists since max_leaf >= 7.
    #[allow(unused_unsafe)]
    let ebx = unsafe { __cpuid_count(7, 0) }.ebx;
    (ebx & (1 << 23) != 0, ebx & (1 << 24) != 0)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_flush_bits() -> (bool, bool) {
    (false, false)
}

/// Orders and completes all earlier flushes of this thread (SFENCE on x86-64).
pub fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SFENCE has no memory operands and SSE is part of the x86-64 baseline. (Safe
    // function on newer toolchains, hence the allow.)
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_instruction_flushes_unaligned_ranges() {
        let buf = vec![7u8; 3 * 4096];
        for instr in [
            FlushInstr::Clwb,
            FlushInstr::Clflushopt,
            FlushInstr::Clflush,
            FlushInstr::None,
        ] {
            if !instr.is_supported() {
                continue;
            }
            for (off, len) in [
                (0, 1),
                (1, 63),
                (63, 2),
                (100, 4000),
                (0, buf.len()),
                (5, 0),
            ] {
                // SAFETY: the range lies inside `buf`; `instr` is supported.
                unsafe { crate::guarded::flush(instr, buf.as_ptr().wrapping_add(off), len) }
                    .unwrap();
            }
            fence();
        }
        assert!(
            buf.iter().all(|&b| b == 7),
            "flushing must not change memory"
        );
        assert!(detected().is_supported());
    }
}

/// Below this many bytes a copy is stored normally and flushed; from here on whole cache
/// lines go out with non-temporal stores (as PMDK's `pmem_memcpy` does).
pub const NT_COPY_MIN_BYTES: usize = 256;

/// Copies `len` bytes from `src` to `dst` so that they are durable after the next [`fence`],
/// without a separate flush pass: whole 64-byte lines of `dst` are written with non-temporal
/// stores (MOVNTDQ, or one 64-byte VMOVNTDQ per line where the CPU has AVX-512; they bypass
/// the cache and need only the fence), the partial lines at either end with ordinary stores
/// followed by a flush of those lines with `instr`. Every access goes through
/// [`crate::guarded`]: a fault stops the copy and is returned.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes inside one live mapping or allocation,
/// `src` valid for reads of `len` bytes, the two must not overlap, no other thread may
/// access `[dst, dst + len)` during the call, and `instr` must be supported by this CPU.
pub unsafe fn copy_flushed(
    instr: FlushInstr,
    dst: *mut u8,
    src: *const u8,
    len: usize,
) -> Result<(), MediaFault> {
    use crate::guarded::{copy_raw, flush, stream_lines};
    if cfg!(target_arch = "x86_64") && len >= NT_COPY_MIN_BYTES {
        let head =
            (CACHE_LINE_BYTES - (dst as usize & (CACHE_LINE_BYTES - 1))) & (CACHE_LINE_BYTES - 1);
        let body = (len - head) & !(CACHE_LINE_BYTES - 1);
        let tail = len - head - body;
        // SAFETY: head, body and tail partition `[0, len)`; every pointer below stays inside
        // the caller's ranges. Body stores are line-aligned because `dst + head` is 64-byte
        // aligned, and `body` is a multiple of 64.
        unsafe {
            copy_raw(dst, src, head)?;
            flush(instr, dst, head)?;
            stream_lines(dst.add(head), src.add(head), body)?;
            copy_raw(dst.add(head + body), src.add(head + body), tail)?;
            flush(instr, dst.add(head + body), tail)?;
        }
        return Ok(());
    }
    // SAFETY: the caller's contract covers both ranges.
    unsafe {
        copy_raw(dst, src, len)?;
        flush(instr, dst, len)
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    #[test]
    fn copy_flushed_moves_exact_bytes_at_every_alignment() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 253) as u8).collect();
        for dst_off in 0..CACHE_LINE_BYTES + 3 {
            for len in [0, 1, 63, 64, 65, 255, 256, 257, 1000, 4096, 4500] {
                let mut dst = vec![0xAAu8; 5200];
                // SAFETY: both ranges lie inside their vectors and do not overlap.
                unsafe {
                    copy_flushed(
                        detected(),
                        dst.as_mut_ptr().add(dst_off),
                        src.as_ptr().add(7),
                        len,
                    )
                }
                .unwrap();
                fence();
                assert!(
                    dst[..dst_off].iter().all(|b| *b == 0xAA),
                    "head clobbered at {dst_off}/{len}"
                );
                assert_eq!(
                    &dst[dst_off..dst_off + len],
                    &src[7..7 + len],
                    "{dst_off}/{len}"
                );
                assert!(
                    dst[dst_off + len..].iter().all(|b| *b == 0xAA),
                    "tail clobbered at {dst_off}/{len}"
                );
            }
        }
    }
}
