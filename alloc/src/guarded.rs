//! Accesses to pool memory that survive the memory failing: a fault becomes an error return.
//!
//! Why: pool memory can stop existing under a mapping. A pool file's storage can be taken
//! away (the file truncated, a hole punched on a filesystem that cannot refill it) and real
//! persistent memory has uncorrectable media errors (poison). Either way a load, a store or a
//! cache-line flush of the page raises SIGBUS, whose default action kills the daemon (and
//! `fsck`, and `stat`) with every mount user's request in flight.
//!
//! How: the kernel's own answer, exception fixups, done in user space. Every instruction that
//! touches pool memory for pfnfs is in one block of assembly (this module's `global_asm!`):
//! copies (`rep movsb`), zeroing (`rep stosb`), a probe that loads one byte of every page of a
//! range, the cache-line flush loops, and the non-temporal line copies. Each routine is a
//! leaf function that uses no stack and no callee-saved register, returns 0 in RAX when it
//! completes, and ends with a `ret`. A SIGBUS handler, installed once per process by
//! [`install`], looks at the interrupted instruction pointer: if it lies inside that block,
//! it writes the faulting address into RAX and the signal's `si_code` into RDX and moves the
//! instruction pointer to a `ret` (the *fixup*), so the routine returns both (a 16-byte return
//! value) to its caller as if it had finished, and the access fails with [`MediaFault`]. A SIGBUS anywhere else goes to the handler that was
//! installed before (Rust's, which tells a stack overflow apart) or to the default action.
//!
//! Limits, and where they are handled:
//! - Only x86-64 Linux has the routines and the handler. Elsewhere the same functions are
//!   plain copies (a fault still kills the process), and [`is_guarded`] says so.
//! - Slices borrowed from the pool and handed to the kernel (a direct-mode read reply written
//!   straight from pool memory) are copied by the kernel: a fault there is no signal, the
//!   write to `/dev/fuse` fails with EFAULT and the kernel answers the reader EIO. The pool
//!   probes a borrowed range with [`probe`] before lending it, so the daemon learns of a bad
//!   page before the kernel meets it; a page lost between probe and copy gives the reader EIO.
//! - The routines move bytes; what they race with is the caller's business, as for any copy.
//!   To the language they are an opaque foreign function: each access is a machine load or
//!   store, like a relaxed atomic access of some width, so racing accesses through them give
//!   unspecified bytes, never undefined behaviour. That is why the pool's safe accesses all go
//!   through here and never mix with plain Rust accesses to the same bytes (docs/DESIGN.md,
//!   section 2).
//! - A fault inside the routines interrupts them: what was stored before the faulting byte
//!   stays stored. Callers treat the whole access as failed.

use std::fmt;

/// An access to pool memory ran into memory that is not there (SIGBUS): the address of the
/// first byte that faulted and the signal's `si_code`, as the kernel reported them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaFault {
    /// The faulting address in this process (inside the range that was accessed).
    pub addr: usize,
    /// `si_code` of the SIGBUS: `BUS_MCEERR_AR`/`BUS_MCEERR_AO` for a media error (poison),
    /// `BUS_ADRERR` for a page its file cannot provide (past its end, or no room for it).
    pub code: i32,
}

impl MediaFault {
    /// True if the kernel reported a hardware memory error (machine check: poison), not a
    /// page its backing file could not provide.
    pub fn is_poison(&self) -> bool {
        self.code == libc::BUS_MCEERR_AR || self.code == libc::BUS_MCEERR_AO
    }
}

impl fmt::Display for MediaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.is_poison() {
            "media error"
        } else {
            "no page"
        };
        write!(
            f,
            "memory error (SIGBUS, {what}) at address {:#x}",
            self.addr
        )
    }
}

impl std::error::Error for MediaFault {}

/// True where faults on pool memory are caught (x86-64 Linux); elsewhere they kill the
/// process as they always did.
pub const fn is_guarded() -> bool {
    cfg!(all(target_arch = "x86_64", target_os = "linux"))
}

/// How many faults the handler has turned into errors in this process (for tests and stat).
pub fn faults_caught() -> u64 {
    imp::FAULTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the SIGBUS handler once per process. Every pool backend calls it when it is made,
/// so nothing else needs to; calling it again does nothing.
pub fn install() {
    imp::install();
}

/// What a guarded routine returns: RAX (0, or the faulting address) and RDX (the fault's
/// `si_code`, meaningful only with an address), the two registers of a 16-byte return.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Ret {
    addr: usize,
    code: usize,
}

fn result(ret: Ret) -> Result<(), MediaFault> {
    if ret.addr == 0 {
        Ok(())
    } else {
        Err(MediaFault {
            addr: ret.addr,
            code: ret.code as i32,
        })
    }
}

/// Copies `src` into `dst` (equal lengths), stopping at the first fault.
///
/// Safe for any two slices: they are valid memory, and the exclusive `dst` cannot overlap
/// `src`. Used for copies out of slices borrowed from the pool.
pub fn copy(dst: &mut [u8], src: &[u8]) -> Result<(), MediaFault> {
    assert_eq!(dst.len(), src.len(), "guarded::copy of unequal lengths");
    // SAFETY: both ranges are valid for their lengths (they are slices), and a `&mut` slice
    // cannot overlap a live `&` slice.
    unsafe { copy_raw(dst.as_mut_ptr(), src.as_ptr(), src.len()) }
}

/// Copies `len` bytes from `src` to `dst`, stopping at the first fault.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes (mapped memory of this
/// process; a mapping whose storage is gone counts: that is the fault this catches), and the
/// ranges must not overlap.
pub unsafe fn copy_raw(dst: *mut u8, src: *const u8, len: usize) -> Result<(), MediaFault> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract.
    result(unsafe { imp::copy(dst, src, len) })
}

/// Stores `len` zero bytes at `dst`, stopping at the first fault.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes (as for [`copy_raw`]).
pub unsafe fn zero_raw(dst: *mut u8, len: usize) -> Result<(), MediaFault> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract.
    result(unsafe { imp::zero(dst, len) })
}

/// Loads one byte of every page that `[ptr, ptr + len)` touches: `Ok` means every page was
/// there a moment ago.
///
/// # Safety
/// `[ptr, ptr + len)` must lie in mapped memory of this process.
pub unsafe fn probe(ptr: *const u8, len: usize) -> Result<(), MediaFault> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract.
    result(unsafe { imp::probe(ptr, len) })
}

/// Writes back the 64-byte lines of `[ptr, ptr + len)` with `instr` (no fence), stopping at
/// the first fault.
///
/// # Safety
/// `[ptr, ptr + len)` must lie in mapped memory of this process and `instr` must be supported
/// by this CPU.
pub unsafe fn flush(
    instr: crate::cpu_flush::FlushInstr,
    ptr: *const u8,
    len: usize,
) -> Result<(), MediaFault> {
    use crate::cpu_flush::{CACHE_LINE_BYTES, FlushInstr};
    if len == 0 || instr == FlushInstr::None {
        return Ok(());
    }
    let start = (ptr as usize) & !(CACHE_LINE_BYTES - 1);
    let end = ptr as usize + len;
    // SAFETY: the lines from `start` to `end` overlap the caller's range, so they lie in the
    // same mapped pages; the caller guarantees the instruction is supported.
    result(unsafe { imp::flush(instr, start, end) })
}

/// Streams `len` bytes (a multiple of 64) from `src` to the 64-byte aligned `dst` with
/// non-temporal stores (one 64-byte store per line with AVX-512, else 16-byte stores),
/// stopping at the first fault.
///
/// # Safety
/// As [`copy_raw`], plus: `dst` is 64-byte aligned and `len` a multiple of 64.
pub unsafe fn stream_lines(dst: *mut u8, src: *const u8, len: usize) -> Result<(), MediaFault> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract.
    result(unsafe { imp::stream(dst, src, len) })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::Ret;
    use crate::cpu_flush::FlushInstr;

    pub(super) static FAULTS: AtomicU64 = AtomicU64::new(0);

    // The block of guarded instructions. Every routine follows the System V calling
    // convention (arguments in RDI, RSI, RDX; result in RAX, and RDX, which only a fault's
    // fixup makes meaningful), is a leaf, touches neither the stack nor a callee-saved
    // register, and sets RAX to 0 before its first access: so the handler can end any of them
    // at any access by setting RAX and RDX and jumping to a `ret`.
    // Labels made only of 0s and 1s are avoided (Intel syntax reads `1b` as binary).
    std::arch::global_asm!(
        ".pushsection .text.pfnfs_guarded,\"ax\",@progbits",
        ".p2align 6",
        ".globl pfnfs_guarded_start",
        ".hidden pfnfs_guarded_start",
        "pfnfs_guarded_start:",
        // copy(dst, src, len)
        ".globl pfnfs_guarded_copy",
        ".hidden pfnfs_guarded_copy",
        "pfnfs_guarded_copy:",
        "xor eax, eax",
        "mov rcx, rdx",
        "rep movsb",
        "ret",
        // zero(dst, len)
        ".globl pfnfs_guarded_zero",
        ".hidden pfnfs_guarded_zero",
        "pfnfs_guarded_zero:",
        "xor eax, eax",
        "mov rcx, rsi",
        "rep stosb",
        "ret",
        // probe(ptr, len > 0): one load in every page from ptr to ptr + len - 1.
        ".globl pfnfs_guarded_probe",
        ".hidden pfnfs_guarded_probe",
        "pfnfs_guarded_probe:",
        "xor eax, eax",
        "lea rdx, [rdi + rsi - 1]",
        "2:",
        "mov cl, byte ptr [rdi]",
        "and rdi, -4096",
        "add rdi, 4096",
        "cmp rdi, rdx",
        "jbe 2b",
        "ret",
        // clwb(start, end), clflushopt(start, end), clflush(start, end): start line-aligned.
        ".globl pfnfs_guarded_clwb",
        ".hidden pfnfs_guarded_clwb",
        "pfnfs_guarded_clwb:",
        "xor eax, eax",
        "cmp rdi, rsi",
        "jae 3f",
        "2:",
        "clwb byte ptr [rdi]",
        "add rdi, 64",
        "cmp rdi, rsi",
        "jb 2b",
        "3:",
        "ret",
        ".globl pfnfs_guarded_clflushopt",
        ".hidden pfnfs_guarded_clflushopt",
        "pfnfs_guarded_clflushopt:",
        "xor eax, eax",
        "cmp rdi, rsi",
        "jae 3f",
        "2:",
        "clflushopt byte ptr [rdi]",
        "add rdi, 64",
        "cmp rdi, rsi",
        "jb 2b",
        "3:",
        "ret",
        ".globl pfnfs_guarded_clflush",
        ".hidden pfnfs_guarded_clflush",
        "pfnfs_guarded_clflush:",
        "xor eax, eax",
        "cmp rdi, rsi",
        "jae 3f",
        "2:",
        "clflush byte ptr [rdi]",
        "add rdi, 64",
        "cmp rdi, rsi",
        "jb 2b",
        "3:",
        "ret",
        // stream_sse2(dst 16-aligned, src, len multiple of 16 > 0): MOVNTDQ.
        ".globl pfnfs_guarded_stream_sse2",
        ".hidden pfnfs_guarded_stream_sse2",
        "pfnfs_guarded_stream_sse2:",
        "xor eax, eax",
        "2:",
        "movdqu xmm0, xmmword ptr [rsi]",
        "movntdq xmmword ptr [rdi], xmm0",
        "add rsi, 16",
        "add rdi, 16",
        "sub rdx, 16",
        "jnz 2b",
        "ret",
        // The fixup of everything above: RAX and RDX already hold the fault.
        ".globl pfnfs_guarded_fixup",
        ".hidden pfnfs_guarded_fixup",
        "pfnfs_guarded_fixup:",
        "ret",
        // stream_avx512(dst 64-aligned, src, len multiple of 64 > 0): VMOVNTDQ zmm. Its own
        // fixup leaves the upper vector state clean, as its normal return does.
        ".globl pfnfs_guarded_avx_start",
        ".hidden pfnfs_guarded_avx_start",
        "pfnfs_guarded_avx_start:",
        ".globl pfnfs_guarded_stream_avx512",
        ".hidden pfnfs_guarded_stream_avx512",
        "pfnfs_guarded_stream_avx512:",
        "xor eax, eax",
        "2:",
        "vmovdqu64 zmm0, zmmword ptr [rsi]",
        "vmovntdq zmmword ptr [rdi], zmm0",
        "add rsi, 64",
        "add rdi, 64",
        "sub rdx, 64",
        "jnz 2b",
        "vzeroupper",
        "ret",
        ".globl pfnfs_guarded_avx_fixup",
        ".hidden pfnfs_guarded_avx_fixup",
        "pfnfs_guarded_avx_fixup:",
        "vzeroupper",
        "ret",
        ".globl pfnfs_guarded_end",
        ".hidden pfnfs_guarded_end",
        "pfnfs_guarded_end:",
        ".popsection",
    );

    unsafe extern "C" {
        fn pfnfs_guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> Ret;
        fn pfnfs_guarded_zero(dst: *mut u8, len: usize) -> Ret;
        fn pfnfs_guarded_probe(ptr: *const u8, len: usize) -> Ret;
        fn pfnfs_guarded_clwb(start: usize, end: usize) -> Ret;
        fn pfnfs_guarded_clflushopt(start: usize, end: usize) -> Ret;
        fn pfnfs_guarded_clflush(start: usize, end: usize) -> Ret;
        fn pfnfs_guarded_stream_sse2(dst: *mut u8, src: *const u8, len: usize) -> Ret;
        fn pfnfs_guarded_stream_avx512(dst: *mut u8, src: *const u8, len: usize) -> Ret;
        static pfnfs_guarded_start: u8;
        static pfnfs_guarded_fixup: u8;
        static pfnfs_guarded_avx_start: u8;
        static pfnfs_guarded_avx_fixup: u8;
        static pfnfs_guarded_end: u8;
    }

    /// # Safety
    /// As `super::copy_raw`, with `len > 0`.
    pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> Ret {
        // SAFETY: the routine moves `len` bytes between ranges the caller vouches for, uses
        // no stack and preserves the callee-saved registers (see the block's comment).
        unsafe { pfnfs_guarded_copy(dst, src, len) }
    }

    /// # Safety
    /// As `super::zero_raw`, with `len > 0`.
    pub(super) unsafe fn zero(dst: *mut u8, len: usize) -> Ret {
        // SAFETY: as for `copy`, for a store of `len` zeros.
        unsafe { pfnfs_guarded_zero(dst, len) }
    }

    /// # Safety
    /// As `super::probe`, with `len > 0`.
    pub(super) unsafe fn probe(ptr: *const u8, len: usize) -> Ret {
        // SAFETY: loads one byte per page of a range the caller vouches for.
        unsafe { pfnfs_guarded_probe(ptr, len) }
    }

    /// # Safety
    /// `[start, end)` lies in mapped memory, `start` is line-aligned, `instr` is supported.
    pub(super) unsafe fn flush(instr: FlushInstr, start: usize, end: usize) -> Ret {
        // The flush instructions write nothing visible and touch only lines of the caller's
        // range; the caller guarantees the CPU has the instruction.
        match instr {
            // SAFETY: as above, for CLWB.
            FlushInstr::Clwb => unsafe { pfnfs_guarded_clwb(start, end) },
            // SAFETY: as above, for CLFLUSHOPT.
            FlushInstr::Clflushopt => unsafe { pfnfs_guarded_clflushopt(start, end) },
            // SAFETY: as above, for CLFLUSH.
            FlushInstr::Clflush => unsafe { pfnfs_guarded_clflush(start, end) },
            FlushInstr::None => Ret { addr: 0, code: 0 },
        }
    }

    /// # Safety
    /// As `super::stream_lines`, with `len > 0`.
    pub(super) unsafe fn stream(dst: *mut u8, src: *const u8, len: usize) -> Ret {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; the caller's contract covers the ranges,
            // alignment and length.
            unsafe { pfnfs_guarded_stream_avx512(dst, src, len) }
        } else {
            // SAFETY: SSE2 is part of the x86-64 baseline; as above.
            unsafe { pfnfs_guarded_stream_sse2(dst, src, len) }
        }
    }

    /// The handler that was installed before ours, to pass foreign faults on to.
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

    pub(super) fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags) that is
            // filled in below before use.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: zeroed as above; sigaction fills it with the handler it replaces.
            let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: `action.sa_mask` is a valid set to empty; `sigaction` reads `action` and
            // writes `previous`, both live locals. The handler is async-signal-safe (it only
            // reads the machine context, atomics and `PREVIOUS`, and calls `sigaction`).
            let rc = unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGBUS, &action, &mut previous)
            };
            if rc != 0 {
                tracing::warn!(
                    "cannot install the SIGBUS handler ({}): a memory error on the pool will \
                     end this process",
                    std::io::Error::last_os_error()
                );
                return;
            }
            let _ = PREVIOUS.set(previous);
        });
    }

    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        let start = &raw const pfnfs_guarded_start as usize;
        let avx = &raw const pfnfs_guarded_avx_start as usize;
        let end = &raw const pfnfs_guarded_end as usize;
        // SAFETY: the kernel passes a valid `ucontext_t` as the third argument of an
        // SA_SIGINFO handler, and a valid `siginfo_t` as the second; both live until return.
        unsafe {
            let uc = ctx as *mut libc::ucontext_t;
            let gregs = &mut (*uc).uc_mcontext.gregs;
            let ip = gregs[libc::REG_RIP as usize] as usize;
            if (start..end).contains(&ip) {
                let fixup = if ip >= avx {
                    &raw const pfnfs_guarded_avx_fixup as usize
                } else {
                    &raw const pfnfs_guarded_fixup as usize
                };
                // A zero address would read as success: report at least 1.
                let addr = ((*info).si_addr() as usize).max(1);
                gregs[libc::REG_RAX as usize] = addr as i64;
                gregs[libc::REG_RDX as usize] = i64::from((*info).si_code);
                gregs[libc::REG_RIP as usize] = fixup as i64;
                FAULTS.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Not ours: whoever handled SIGBUS before us, or the default action (returning
            // re-executes the access, which faults again with the default in place).
            match PREVIOUS.get() {
                Some(prev)
                    if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN =>
                {
                    if prev.sa_flags & libc::SA_SIGINFO != 0 {
                        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                            std::mem::transmute(prev.sa_sigaction);
                        f(sig, info, ctx);
                    } else {
                        let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev.sa_sigaction);
                        f(sig);
                    }
                }
                _ => {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
                }
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    //! Plain accesses: no fault is caught on this platform.
    use std::sync::atomic::AtomicU64;

    use super::Ret;
    use crate::cpu_flush::FlushInstr;

    pub(super) static FAULTS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn install() {}

    pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> Ret {
        // SAFETY: the caller's contract (`super::copy_raw`).
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        Ret { addr: 0, code: 0 }
    }

    pub(super) unsafe fn zero(dst: *mut u8, len: usize) -> Ret {
        // SAFETY: the caller's contract (`super::zero_raw`).
        unsafe { std::ptr::write_bytes(dst, 0, len) };
        Ret { addr: 0, code: 0 }
    }

    pub(super) unsafe fn probe(_ptr: *const u8, _len: usize) -> Ret {
        Ret { addr: 0, code: 0 }
    }

    pub(super) unsafe fn flush(_instr: FlushInstr, _start: usize, _end: usize) -> Ret {
        Ret { addr: 0, code: 0 }
    }

    pub(super) unsafe fn stream(dst: *mut u8, src: *const u8, len: usize) -> Ret {
        // SAFETY: the caller's contract (`super::stream_lines`).
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        Ret { addr: 0, code: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_flush::FlushInstr;

    #[test]
    fn routines_move_exact_bytes() {
        install();
        let src: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 251) as u8).collect();
        for (at, len) in [(0, 0), (0, 1), (3, 61), (5, 4096), (1, 8999 - 1)] {
            let mut dst = vec![0xAAu8; 9000];
            copy(&mut dst[at..at + len], &src[..len]).unwrap();
            assert_eq!(&dst[at..at + len], &src[..len]);
            assert!(dst[..at].iter().all(|&b| b == 0xAA));
            assert!(dst[at + len..].iter().all(|&b| b == 0xAA));
            // SAFETY: the range lies inside `dst`.
            unsafe { zero_raw(dst.as_mut_ptr().add(at), len) }.unwrap();
            assert!(dst[at..at + len].iter().all(|&b| b == 0));
            // SAFETY: as above.
            unsafe { probe(dst.as_ptr().add(at), len) }.unwrap();
            for instr in [
                FlushInstr::Clwb,
                FlushInstr::Clflushopt,
                FlushInstr::Clflush,
            ] {
                if instr.is_supported() {
                    // SAFETY: as above; the instruction is supported.
                    unsafe { flush(instr, dst.as_ptr().add(at), len) }.unwrap();
                }
            }
        }
        // The streamers: 64-byte aligned destination, whole lines.
        let mut lines = vec![0u64; 9000 / 8 + 8];
        let base = lines.as_mut_ptr() as *mut u8;
        let off = base.align_offset(64);
        for len in [64, 128, 4096, 8192] {
            // SAFETY: `[base + off, base + off + len)` lies inside `lines` (9064 bytes, at
            // most 63 of them before the aligned start) and is 64-byte aligned; `src` has 9000.
            unsafe { stream_lines(base.add(off), src.as_ptr(), len) }.unwrap();
            crate::cpu_flush::fence();
            // SAFETY: as above.
            let got = unsafe { std::slice::from_raw_parts(base.add(off), len) };
            assert_eq!(got, &src[..len]);
        }
    }

    /// Storage taken away under a shared mapping (the file truncated): every routine that
    /// touches the lost page returns its address instead of killing the process.
    #[test]
    fn a_lost_page_is_an_error_for_every_routine() {
        install();
        let file = tempfile::tempfile().unwrap();
        file.set_len(3 * 4096).unwrap();
        // SAFETY: the file is private to this test; nothing else maps or resizes it.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
        map[..4096].fill(1);
        map[4096..].fill(2);
        file.set_len(4096).unwrap();
        let base = map.as_mut_ptr();
        let lost = base as usize + 4096;
        let before = faults_caught();
        let mut buf = vec![0u8; 8192];
        // SAFETY: the range lies inside the live 3-page mapping; `buf` has 8192 bytes.
        let e = unsafe { copy_raw(buf.as_mut_ptr(), base, 8192) }.unwrap_err();
        assert_eq!(e.addr & !4095, lost, "{e}");
        assert_eq!(e.code, libc::BUS_ADRERR, "a page past the file's end: {e}");
        assert!(!e.is_poison());
        assert!(
            buf[..4096].iter().all(|&b| b == 1),
            "bytes before the fault are copied"
        );
        // SAFETY: the range lies inside the live 3-page mapping.
        let e = unsafe { copy_raw(base.add(4096 + 100), buf.as_ptr(), 10) }.unwrap_err();
        assert_eq!(e.addr, lost + 100);
        // SAFETY: the range lies inside the live 3-page mapping.
        let e = unsafe { zero_raw(base.add(2 * 4096), 4096) }.unwrap_err();
        assert_eq!(e.addr, lost + 4096);
        // SAFETY: the range lies inside the live 3-page mapping.
        let e = unsafe { probe(base.add(4000), 200) }.unwrap_err();
        assert_eq!(e.addr, lost);
        // SAFETY: the range lies inside the live 3-page mapping.
        let e = unsafe { stream_lines(base.add(4096), buf.as_ptr(), 4096) }.unwrap_err();
        assert_eq!(e.addr, lost);
        for instr in [
            FlushInstr::Clwb,
            FlushInstr::Clflushopt,
            FlushInstr::Clflush,
        ] {
            if instr.is_supported() {
                // SAFETY: the range lies inside the live 3-page mapping.
                let e = unsafe { flush(instr, base.add(4000), 200) }.unwrap_err();
                assert_eq!(e.addr & !4095, lost, "{}", instr.name());
            }
        }
        // The page still there works as before.
        // SAFETY: the range lies inside the live 3-page mapping.
        unsafe { probe(base, 4096) }.unwrap();
        assert!(faults_caught() >= before + 6);
    }
}
