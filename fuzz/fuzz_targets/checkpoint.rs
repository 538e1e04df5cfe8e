//! Fuzz target `checkpoint`: see `pfnfs_fuzz::checkpoint`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pfnfs_fuzz::checkpoint(data));
